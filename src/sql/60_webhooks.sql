
-- ---------------------------------------------------------------------------
-- Stripe webhooks, reconciliation and the administrator's repair path
-- (src/webhook.c, src/webhook_apply.c, src/resolve.c; the settler is in the
-- outbox worker).  README: "Webhooks", "Settling and reconciliation".
-- ---------------------------------------------------------------------------

-- ---------------------------------------------------------------------------
-- the system user that refunds made in Stripe's Dashboard are processed by
-- ("PaymentRefunds"."ProcessedByUserId" is NOT NULL).  Created only in a
-- "Users" table that the extension created itself (and left out of its dump
-- filter, since CREATE EXTENSION makes it again); with the application's own
-- "Users", payment_ext.system_user_id names one of its users.
-- ---------------------------------------------------------------------------
DO $pe_system_user$
BEGIN
	IF EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
	            WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
	              AND d.objid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(pg_catalog.quote_ident('@extschema@') || '."Users"')
	              AND d.deptype OPERATOR(pg_catalog.=) 'e') THEN
		INSERT INTO "Users" ("Id", "SceneName", "Email")
		VALUES ('00000000-0000-0000-0000-00000000057e', 'payment_ext system', 'payment-ext-system@invalid');
		PERFORM pg_catalog.pg_extension_config_dump('"Users"',
			'WHERE "Id" OPERATOR(pg_catalog.<>) ''00000000-0000-0000-0000-00000000057e''::uuid');
	END IF;
END
$pe_system_user$;

-- ---------------------------------------------------------------------------
-- payment.webhook_events: every verified event, applied at most once
-- ---------------------------------------------------------------------------
CREATE TABLE payment.webhook_events (
	event_id      text        NOT NULL,
	type          text        NOT NULL,
	created       timestamptz NULL,
	api_version   text        NULL,
	livemode      boolean     NULL,
	payment_id    uuid        NULL,
	refund_id     uuid        NULL,
	object_status text        NULL,
	payload       text        NOT NULL,
	payload_bytes integer     NOT NULL,
	outcome       text        NOT NULL,
	received_at   timestamptz NOT NULL DEFAULT now(),
	applied_at    timestamptz NULL,
	CONSTRAINT webhook_events_pkey PRIMARY KEY (event_id),
	CONSTRAINT webhook_events_event_id_check CHECK (event_id ~ '^[A-Za-z0-9_]{1,255}$'),
	CONSTRAINT webhook_events_payload_sealed CHECK (pg_catalog.starts_with(payload, 'pe1:'))
);
CREATE INDEX webhook_events_payment_idx ON payment.webhook_events (payment_id) WHERE payment_id IS NOT NULL;
CREATE INDEX webhook_events_received_idx ON payment.webhook_events (received_at);
COMMENT ON TABLE payment.webhook_events IS
	'Stripe webhook events received by payment.handle_webhook, one row per event id, with what applying it did';
COMMENT ON COLUMN payment.webhook_events.payload IS
	'the raw body as delivered, sealed (pe1:...) with the context ''payment.webhook_events.payload:'' || event_id';
COMMENT ON COLUMN payment.webhook_events.outcome IS
	'applied: ... | no change: ... | ignored: ... | conflict: ... (see README, "Webhooks")';
COMMENT ON COLUMN payment.webhook_events.applied_at IS
	'when the event changed the payment tables; NULL when it changed nothing';
SELECT pg_catalog.pg_extension_config_dump('payment.webhook_events', '');

-- ---------------------------------------------------------------------------
-- payment.stripe_refs: Stripe ids mapped to our rows by a digest, so that an
-- event naming only a PaymentIntent, charge or refund id finds its payment
-- while the ids themselves stay sealed
-- ---------------------------------------------------------------------------
CREATE TABLE payment.stripe_refs (
	digest     bytea       NOT NULL,
	object     text        NOT NULL,
	payment_id uuid        NOT NULL,
	refund_id  uuid        NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	CONSTRAINT stripe_refs_pkey PRIMARY KEY (digest),
	CONSTRAINT stripe_refs_object_check
		CHECK (object IN ('payment_intent', 'charge', 'refund', 'dispute')),
	CONSTRAINT stripe_refs_digest_check CHECK (pg_catalog.length(digest) = 32),
	CONSTRAINT stripe_refs_payment_fkey
		FOREIGN KEY (payment_id) REFERENCES "Payments"("Id") ON DELETE RESTRICT,
	CONSTRAINT stripe_refs_refund_fkey
		FOREIGN KEY (refund_id) REFERENCES "PaymentRefunds"("Id") ON DELETE RESTRICT
);
CREATE INDEX stripe_refs_payment_idx ON payment.stripe_refs (payment_id);
COMMENT ON TABLE payment.stripe_refs IS
	'SHA-256 digests of Stripe ids (pi_, ch_, re_, dp_) and the payment (and refund) each belongs to; the ids carry about 140 random bits, so a digest cannot be reversed or guessed';
SELECT pg_catalog.pg_extension_config_dump('payment.stripe_refs', '');

-- the latest state Stripe reported of a PaymentIntent (worker answers, webhooks, lookups)
ALTER TABLE payment.intents
	ADD COLUMN source text NOT NULL DEFAULT 'response',
	ADD COLUMN reported_at timestamptz NOT NULL DEFAULT now(),
	ADD COLUMN amount_refunded bigint NULL,
	ADD CONSTRAINT intents_source_check CHECK (source IN ('response', 'webhook', 'lookup'));
COMMENT ON COLUMN payment.intents.stripe_status IS
	'the latest PaymentIntent status Stripe reported; a terminal one (succeeded, canceled) is never replaced';
COMMENT ON COLUMN payment.intents.source IS
	'where stripe_status came from: response (the worker''s request), webhook, lookup (the settler or payment.reconcile_lookup)';
COMMENT ON COLUMN payment.intents.amount_refunded IS
	'the charge''s amount_refunded in minor units, as the latest charge.refunded event reported it';

-- ---------------------------------------------------------------------------
-- payment.refund_states: the latest Refund status Stripe reported
-- ---------------------------------------------------------------------------
CREATE TABLE payment.refund_states (
	refund_id     uuid        NOT NULL,
	stripe_status text        NOT NULL,
	source        text        NOT NULL,
	reported_at   timestamptz NOT NULL DEFAULT now(),
	CONSTRAINT refund_states_pkey PRIMARY KEY (refund_id),
	CONSTRAINT refund_states_refund_fkey
		FOREIGN KEY (refund_id) REFERENCES "PaymentRefunds"("Id") ON DELETE RESTRICT,
	CONSTRAINT refund_states_source_check CHECK (source IN ('response', 'webhook', 'lookup'))
);
COMMENT ON TABLE payment.refund_states IS
	'the latest status Stripe reported of each refund (pending, requires_action, succeeded, failed, canceled)';
SELECT pg_catalog.pg_extension_config_dump('payment.refund_states', '');

-- ---------------------------------------------------------------------------
-- payment.disputes: chargebacks reported by charge.dispute.* events
-- ---------------------------------------------------------------------------
CREATE TABLE payment.disputes (
	id                uuid          NOT NULL DEFAULT gen_random_uuid(),
	digest            bytea         NOT NULL,
	stripe_dispute_id text          NOT NULL,
	payment_id        uuid          NOT NULL,
	amount            numeric(10,2) NOT NULL,
	currency          varchar(3)    NOT NULL,
	reason            text          NULL,
	status            text          NOT NULL,
	opened_at         timestamptz   NULL,
	closed_at         timestamptz   NULL,
	updated_at        timestamptz   NOT NULL DEFAULT now(),
	CONSTRAINT disputes_pkey PRIMARY KEY (id),
	CONSTRAINT disputes_digest_key UNIQUE (digest),
	CONSTRAINT disputes_payment_fkey
		FOREIGN KEY (payment_id) REFERENCES "Payments"("Id") ON DELETE RESTRICT,
	CONSTRAINT disputes_sealed CHECK (pg_catalog.starts_with(stripe_dispute_id, 'pe1:')),
	CONSTRAINT disputes_amount_check CHECK (amount >= 0)
);
CREATE INDEX disputes_payment_idx ON payment.disputes (payment_id);
COMMENT ON TABLE payment.disputes IS
	'disputes (chargebacks) of payments, as the latest charge.dispute.* event reported them; status lost means the money is gone';
COMMENT ON COLUMN payment.disputes.stripe_dispute_id IS
	'sealed (pe1:...) Stripe dispute id, context ''payment.disputes.stripe_dispute_id:'' || id';
COMMENT ON COLUMN payment.disputes.status IS
	'Stripe''s dispute status: warning_needs_response, warning_under_review, warning_closed, needs_response, under_review, won, lost';
SELECT pg_catalog.pg_extension_config_dump('payment.disputes', '');

CREATE VIEW payment.disputes_summary AS
	SELECT r."EventId" AS event_id, d.currency,
	       pg_catalog.count(*) AS disputes,
	       pg_catalog.count(*) FILTER (WHERE d.status NOT IN ('won', 'lost', 'warning_closed')) AS open,
	       pg_catalog.count(*) FILTER (WHERE d.status OPERATOR(pg_catalog.=) 'won') AS won,
	       pg_catalog.count(*) FILTER (WHERE d.status OPERATOR(pg_catalog.=) 'lost') AS lost,
	       pg_catalog.sum(d.amount) AS disputed_amount,
	       COALESCE(pg_catalog.sum(d.amount) FILTER (WHERE d.status OPERATOR(pg_catalog.=) 'lost'), 0) AS lost_amount
	  FROM payment.disputes d
	  JOIN "Payments" p ON p."Id" OPERATOR(pg_catalog.=) d.payment_id
	  JOIN "EventRegistrations" r ON r."Id" OPERATOR(pg_catalog.=) p."EventRegistrationId"
	 GROUP BY r."EventId", d.currency;
COMMENT ON VIEW payment.disputes_summary IS
	'disputes per event and currency: open, won, lost, the disputed amount and the amount lost (subtract it from revenue)';

-- ---------------------------------------------------------------------------
-- outbox: lookups by search, and the settler's refund lookups (refund.list:
-- GET /v1/refunds?payment_intent=..., one row per refund, so it carries the
-- refund's id like refund.create)
-- ---------------------------------------------------------------------------
ALTER TABLE payment.outbox DROP CONSTRAINT outbox_kind_check;
ALTER TABLE payment.outbox ADD CONSTRAINT outbox_kind_check
	CHECK (kind IN ('payment_intent.create', 'refund.create',
	                'payment_intent.retrieve', 'payment_intent.cancel',
	                'payment_intent.search', 'refund.list'));
ALTER TABLE payment.outbox DROP CONSTRAINT outbox_refund_kind_check;
ALTER TABLE payment.outbox ADD CONSTRAINT outbox_refund_kind_check
	CHECK ((kind IN ('refund.create', 'refund.list')) = (refund_id IS NOT NULL));
COMMENT ON COLUMN payment.outbox.kind IS
	'payment_intent.create, refund.create, payment_intent.retrieve, payment_intent.cancel, payment_intent.search or refund.list';
COMMENT ON COLUMN payment.outbox.refund_id IS
	'the refund, for refund.create and refund.list (NULL for the other kinds)';

-- ---------------------------------------------------------------------------
-- payment.handle_webhook
-- ---------------------------------------------------------------------------
CREATE FUNCTION payment.handle_webhook(payload text, signature_header text)
RETURNS text
AS 'MODULE_PATHNAME', 'pe_handle_webhook'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION payment.handle_webhook(text, text) IS
	'verifies a Stripe webhook delivery (raw body and Stripe-Signature header), applies its event once and returns the event id';

-- ---------------------------------------------------------------------------
-- payment.resolve: the audited way past the state machine
-- ---------------------------------------------------------------------------
CREATE FUNCTION payment.resolve(payment_id uuid, new_status integer, reason text)
RETURNS void
AS 'MODULE_PATHNAME', 'pe_resolve'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION payment.resolve(uuid, integer, text) IS
	'sets a payment to Pending, Completed or Failed past the state machine, with a reason of at least 10 characters that the audit row keeps';

-- ---------------------------------------------------------------------------
-- payment.reconcile: where the database and Stripe disagree
-- ---------------------------------------------------------------------------
CREATE VIEW payment.reconcile AS
	SELECT p."Id" AS payment_id, NULL::uuid AS refund_id,
	       payment.status_name(p."Status") AS database_state,
	       i.stripe_status AS stripe_state, i.source, i.reported_at,
	       CASE
	         WHEN i.stripe_status OPERATOR(pg_catalog.=) 'succeeded'
	           THEN 'Stripe charged it; the database has it ' || payment.status_name(p."Status")
	         WHEN i.stripe_status OPERATOR(pg_catalog.=) 'canceled'
	           THEN 'Stripe canceled it; the database has it ' || payment.status_name(p."Status")
	         ELSE 'the database has it ' || payment.status_name(p."Status") || '; Stripe has not charged it'
	       END AS problem
	  FROM "Payments" p
	  JOIN payment.intents i ON i.payment_id OPERATOR(pg_catalog.=) p."Id"
	 WHERE (i.stripe_status OPERATOR(pg_catalog.=) 'succeeded' AND p."Status" NOT IN (1, 3, 4))
	    OR (i.stripe_status OPERATOR(pg_catalog.=) 'canceled' AND p."Status" <> 2)
	    OR (i.stripe_status NOT IN ('succeeded', 'canceled') AND p."Status" IN (1, 3, 4))
	UNION ALL
	SELECT p."Id", NULL::uuid, payment.status_name(p."Status"),
	       'refunded ' || (i.amount_refunded::numeric OPERATOR(pg_catalog./) 100)::numeric(12,2),
	       i.source, i.reported_at,
	       'Stripe refunded ' || (i.amount_refunded::numeric OPERATOR(pg_catalog./) 100)::numeric(12,2)
	         || '; the database has ' || COALESCE(p."RefundAmountValue", 0) || ' in refunds that are not Failed'
	  FROM "Payments" p
	  JOIN payment.intents i ON i.payment_id OPERATOR(pg_catalog.=) p."Id"
	 WHERE i.amount_refunded IS NOT NULL
	   AND i.amount_refunded <> (COALESCE(p."RefundAmountValue", 0) OPERATOR(pg_catalog.*) 100)::bigint
	UNION ALL
	SELECT r."OriginalPaymentId", r."Id", 'refund ' || payment.refund_status_name(r."RefundStatus"),
	       'refund ' || s.stripe_status, s.source, s.reported_at,
	       'Stripe has the refund ' || s.stripe_status || '; the database has it '
	         || payment.refund_status_name(r."RefundStatus")
	  FROM "PaymentRefunds" r
	  JOIN payment.refund_states s ON s.refund_id OPERATOR(pg_catalog.=) r."Id"
	 WHERE (s.stripe_status OPERATOR(pg_catalog.=) 'succeeded' AND r."RefundStatus" <> 1)
	    OR (s.stripe_status IN ('failed', 'canceled') AND r."RefundStatus" <> 2)
	    OR (s.stripe_status IN ('pending', 'requires_action') AND r."RefundStatus" <> 0);
COMMENT ON VIEW payment.reconcile IS
	'every payment (and refund) whose database state disagrees with the latest state Stripe reported (worker answers, webhooks, lookups)';

CREATE FUNCTION payment.reconcile_lookup(payment_id uuid)
RETURNS bigint
LANGUAGE sql VOLATILE STRICT PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	INSERT INTO payment.outbox (kind, payment_id, request, idempotency_key)
	SELECT CASE WHEN p."EncryptedStripePaymentIntentId" IS NULL
	            THEN 'payment_intent.search' ELSE 'payment_intent.retrieve' END,
	       p."Id",
	       CASE WHEN p."EncryptedStripePaymentIntentId" IS NULL
	            THEN pg_catalog.jsonb_build_object('query',
	                   pg_catalog.format('metadata[''payment_id'']:''%s''', p."Id"))
	            ELSE '{}'::jsonb END,
	       'pe-' || p."Id" || '-lookup-' || pg_catalog.gen_random_uuid()
	  FROM "Payments" p
	 WHERE p."Id" OPERATOR(pg_catalog.=) reconcile_lookup.payment_id
	   AND p."Status" <> 5
	RETURNING id;
END;
COMMENT ON FUNCTION payment.reconcile_lookup(uuid) IS
	'queues a lookup of the payment''s PaymentIntent at Stripe (GET by id, or a search by metadata[payment_id]); the worker records what it finds; returns the outbox id (NULL for an unknown or NotRequired payment)';

CREATE FUNCTION payment.reconcile_all()
RETURNS integer
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT pg_catalog.count(payment.reconcile_lookup(d.payment_id))::integer
	  FROM (SELECT DISTINCT r.payment_id FROM payment.reconcile r) d;
END;
COMMENT ON FUNCTION payment.reconcile_all() IS
	'queues a lookup for every payment in payment.reconcile; returns how many';

-- ---------------------------------------------------------------------------
-- grants
-- ---------------------------------------------------------------------------
REVOKE ALL ON payment.webhook_events FROM PUBLIC;
REVOKE ALL ON payment.stripe_refs FROM PUBLIC;
REVOKE ALL ON payment.refund_states FROM PUBLIC;
REVOKE ALL ON payment.disputes FROM PUBLIC;
REVOKE ALL ON payment.disputes_summary FROM PUBLIC;
REVOKE ALL ON payment.reconcile FROM PUBLIC;
REVOKE ALL ON FUNCTION payment.handle_webhook(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION payment.resolve(uuid, integer, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION payment.reconcile_lookup(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION payment.reconcile_all() FROM PUBLIC;

GRANT EXECUTE ON FUNCTION payment.handle_webhook(text, text) TO payment_app;
GRANT EXECUTE ON FUNCTION payment.resolve(uuid, integer, text) TO payment_admin;
GRANT EXECUTE ON FUNCTION payment.reconcile_lookup(uuid) TO payment_admin;
GRANT EXECUTE ON FUNCTION payment.reconcile_all() TO payment_admin;
GRANT SELECT (event_id, type, created, api_version, livemode, payment_id, refund_id,
              object_status, payload_bytes, outcome, received_at, applied_at)
	ON payment.webhook_events TO payment_admin, payment_reporting;
GRANT SELECT ON payment.reconcile TO payment_admin, payment_reporting;
GRANT SELECT ON payment.disputes_summary TO payment_admin, payment_reporting;
GRANT SELECT (id, payment_id, amount, currency, reason, status, opened_at, closed_at, updated_at)
	ON payment.disputes TO payment_admin, payment_reporting;
GRANT SELECT ON payment.refund_states TO payment_admin, payment_reporting;

-- the worker: lookups it queues and what it learns from Stripe's answers
GRANT INSERT ON payment.outbox TO payment_worker;
GRANT SELECT, INSERT ON payment.stripe_refs TO payment_worker;
GRANT SELECT, INSERT, UPDATE ON payment.refund_states TO payment_worker;
