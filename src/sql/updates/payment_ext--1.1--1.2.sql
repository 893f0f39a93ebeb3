/*
 * payment_ext upgrade script, version 1.1 to 1.2.
 *
 * The fresh 1.2 install script is the 1.0 parts of src/sql/, then
 * payment_ext--1.0--1.1.sql, then this file (see the Makefile), so an
 * upgraded database and a fresh install have the same objects;
 * test/t/ops_upgrade.sh compares their catalogs.  The C library of 1.2 keeps
 * every entry point of 1.0 and 1.1, so it serves them while the upgrade runs.
 *
 * 1.2 is the hardening release: each section below names what it changes.
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION payment_ext UPDATE TO '1.2'" to load this file. \quit

-- ---------------------------------------------------------------------------
-- issue 16, item 1: the application's tables are owned by a trusted role
--
-- Code that runs with more rights than its caller (the SECURITY DEFINER
-- functions, the audit writer, the webhook appliers, the reporting views)
-- reads "Users", "Events" and "EventRegistrations".  Whoever owns such a
-- table can hang code on it (a rule, a policy, a default, a column type, an
-- index expression) or turn it into a view, and that code would run with
-- those rights.  So an existing table is adopted only when it is an ordinary
-- table owned by a superuser or by the extension's owner (the superuser who
-- runs CREATE EXTENSION), and so are its inheritance children; anything
-- else is refused here, at CREATE EXTENSION and at ALTER EXTENSION UPDATE
-- alike, with the remedy.  The C code checks the same again, under a lock,
-- before each read (src/security.c, pe_check_app_table).  README: "Access
-- control".
-- ---------------------------------------------------------------------------
DO $pe_trusted_tables$
DECLARE
	t text;
	c record;
	ext_owner oid;
BEGIN
	SELECT e.extowner INTO ext_owner
	  FROM pg_catalog.pg_extension e
	 WHERE e.extname OPERATOR(pg_catalog.=) 'payment_ext';
	FOREACH t IN ARRAY ARRAY['Users', 'Events', 'EventRegistrations'] LOOP
		FOR c IN
			SELECT r.oid, r.relname, r.relkind, r.relowner,
			       pg_catalog.pg_get_userbyid(r.relowner) AS owner_name,
			       o.rolsuper
			  FROM pg_catalog.pg_class r
			  JOIN pg_catalog.pg_roles o ON o.oid OPERATOR(pg_catalog.=) r.relowner
			 WHERE r.oid OPERATOR(pg_catalog.=) ANY (
			       SELECT b.oid FROM pg_catalog.pg_class b
			        WHERE b.relnamespace OPERATOR(pg_catalog.=) '@extschema@'::pg_catalog.regnamespace
			          AND b.relname OPERATOR(pg_catalog.=) t
			       UNION ALL
			       SELECT i.inhrelid FROM pg_catalog.pg_inherits i
			         JOIN pg_catalog.pg_class b ON b.oid OPERATOR(pg_catalog.=) i.inhparent
			        WHERE b.relnamespace OPERATOR(pg_catalog.=) '@extschema@'::pg_catalog.regnamespace
			          AND b.relname OPERATOR(pg_catalog.=) t)
			 ORDER BY r.oid
		LOOP
			IF c.relkind OPERATOR(pg_catalog.<>) 'r' THEN
				RAISE EXCEPTION '%.% is not an ordinary table', pg_catalog.quote_ident('@extschema@'), pg_catalog.quote_ident(c.relname)
					USING ERRCODE = 'wrong_object_type',
					      DETAIL = pg_catalog.format('payment_ext reads %I with more rights than its callers, so it must be an ordinary table owned by a superuser or by the extension''s owner.', t),
					      HINT = 'Put an ordinary table under that name, or drop it and let CREATE EXTENSION create its own.';
			END IF;
			IF NOT (c.rolsuper OR c.relowner OPERATOR(pg_catalog.=) ext_owner) THEN
				RAISE EXCEPTION 'table %.% is not owned by a trusted role', pg_catalog.quote_ident('@extschema@'), pg_catalog.quote_ident(c.relname)
					USING ERRCODE = 'insufficient_privilege',
					      DETAIL = pg_catalog.format('payment_ext reads %I with more rights than its callers, so it must be owned by a superuser or by the extension''s owner; it is owned by role %I.', t, c.owner_name),
					      HINT = pg_catalog.format('As a superuser: ALTER TABLE %I.%I OWNER TO %I; grant the application the privileges it needs on it; then run the command again (or drop the table and let CREATE EXTENSION create its own).',
					                               '@extschema@', c.relname, pg_catalog.pg_get_userbyid(ext_owner));
			END IF;
		END LOOP;
	END LOOP;
END
$pe_trusted_tables$;

-- ---------------------------------------------------------------------------
-- issue 16, item 10: the four roles are the extension's own
--
-- 1.0 created payment_app, payment_admin, payment_reporting and
-- payment_worker when absent and granted to whatever role had the name.  A
-- role is now the extension's own when this very CREATE EXTENSION created it
-- (its pg_authid row was written by the transaction that wrote the
-- extension's pg_extension row) or when it carries the marker comment that
-- an install of 1.2 or later puts on the roles it created or adopted (a
-- comment on a role is cluster-wide, so a second database finds it).  A
-- fresh install refuses any other existing role of those names, unless a
-- superuser sets payment_ext.adopt_existing_roles = on.  An upgrade (ALTER
-- EXTENSION UPDATE) marks the roles the installed version already uses.
-- ---------------------------------------------------------------------------
DO $pe_own_roles$
DECLARE
	r record;
	ext_oid oid;
	ext_xmin xid;
	fresh boolean;
	adopt boolean;
	marker CONSTANT text := 'payment_ext role (created by CREATE EXTENSION payment_ext)';
BEGIN
	SELECT e.oid, e.xmin INTO ext_oid, ext_xmin
	  FROM pg_catalog.pg_extension e
	 WHERE e.extname OPERATOR(pg_catalog.=) 'payment_ext';
	-- a fresh install made schema payment its member in this transaction
	-- (pg_depend rows are only ever inserted and deleted, never updated)
	SELECT d.xmin OPERATOR(pg_catalog.=) ext_xmin INTO fresh
	  FROM pg_catalog.pg_depend d
	 WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_namespace'::pg_catalog.regclass
	   AND d.objid OPERATOR(pg_catalog.=) 'payment'::pg_catalog.regnamespace
	   AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
	   AND d.refobjid OPERATOR(pg_catalog.=) ext_oid
	   AND d.deptype OPERATOR(pg_catalog.=) 'e';
	adopt := COALESCE(pg_catalog.current_setting('payment_ext.adopt_existing_roles', true), 'off')
	         OPERATOR(pg_catalog.=) ANY (ARRAY['on', 'true', 'yes', '1']);
	FOR r IN
		SELECT a.oid, a.rolname, a.xmin OPERATOR(pg_catalog.=) ext_xmin AS created_here,
		       pg_catalog.shobj_description(a.oid, 'pg_authid') AS comment
		  FROM pg_catalog.pg_authid a
		 WHERE a.rolname OPERATOR(pg_catalog.=) ANY (ARRAY['payment_app', 'payment_admin', 'payment_reporting', 'payment_worker'])
		 ORDER BY a.rolname
	LOOP
		IF fresh AND NOT r.created_here
		   AND r.comment IS DISTINCT FROM marker AND NOT adopt THEN
			RAISE EXCEPTION 'role "%" already exists and was not created by payment_ext', r.rolname
				USING ERRCODE = 'duplicate_object',
				      DETAIL = 'CREATE EXTENSION payment_ext grants rights on payments to its roles, and does not give them to a role that merely has the name.',
				      HINT = 'Drop or rename that role, or, if it is meant to be payment_ext''s, have a superuser SET payment_ext.adopt_existing_roles = on and run CREATE EXTENSION again.';
		END IF;
		IF r.comment IS DISTINCT FROM marker THEN
			EXECUTE pg_catalog.format('COMMENT ON ROLE %I IS %L', r.rolname, marker);
		END IF;
	END LOOP;
END
$pe_own_roles$;

-- ---------------------------------------------------------------------------
-- issue 16, item 2: trigger functions run with a pinned search_path
--
-- The SECURITY DEFINER functions pin search_path in their declaration and
-- the outbox worker pins it when it starts; a trigger function, though, ran
-- with the search_path of whoever fired it, and its SPI queries (some run
-- as the tables' owner: the audit writer, the refund sync trigger) resolved
-- their operators through it, so an "=" for uuid created in public and put
-- first on the path ran inside them (the CVE-2018-1058 pattern; a cached
-- plan is parsed again when search_path changes).  Every trigger and event
-- trigger function of the extension now pins it too.
-- ---------------------------------------------------------------------------
DO $pe_pin_triggers$
DECLARE
	f regprocedure;
BEGIN
	FOR f IN
		SELECT p.oid
		  FROM pg_catalog.pg_proc p
		 WHERE p.pronamespace OPERATOR(pg_catalog.=) 'payment'::pg_catalog.regnamespace
		   AND p.prorettype OPERATOR(pg_catalog.=) ANY (ARRAY['pg_catalog.trigger'::pg_catalog.regtype,
		                                                       'pg_catalog.event_trigger'::pg_catalog.regtype])
		 ORDER BY p.oid
	LOOP
		EXECUTE pg_catalog.format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', f);
	END LOOP;
END
$pe_pin_triggers$;

-- ---------------------------------------------------------------------------
-- issue 16, item 3: no role that changes payments writes the audit log
--
-- The audit triggers write "PaymentAuditLog" as its owner, and set who
-- wrote each row ("SessionUser", "CurrentUser", "UserId", "IpAddress",
-- "UserAgent", "CreatedAt") from the server's own state; the outbox worker's
-- rows come from those triggers too.  Its INSERT privilege let it insert
-- rows naming any user, address and time, so it is gone.
-- ---------------------------------------------------------------------------
REVOKE INSERT ON "PaymentAuditLog" FROM payment_worker;

-- ---------------------------------------------------------------------------
-- issue 17, item 6: a PaymentIntent that disagrees with its payment
--
-- The worker's outcomes and the webhook appliers share one check
-- (pe_pi_mismatch, src/webhook_apply.c): metadata[payment_id], currency and
-- amount must be the payment's.  A disagreement is a "PaymentFailures" row
-- (code metadata_mismatch, currency_mismatch or amount_mismatch), the
-- payment is not completed, and payment.reconcile lists it until the
-- payment changes (payment.resolve, say).  The worker looks for such a row
-- before it records another, hence its column privilege.
-- ---------------------------------------------------------------------------
GRANT SELECT ("PaymentId", "FailureCode", "CreatedAt") ON "PaymentFailures" TO payment_worker;

CREATE OR REPLACE VIEW payment.reconcile AS
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
	    OR (s.stripe_status IN ('pending', 'requires_action') AND r."RefundStatus" <> 0)
	UNION ALL
	SELECT f."PaymentId", NULL::uuid, payment.status_name(p."Status"),
	       f."FailureCode"::text, 'check', f."CreatedAt", f."FailureMessage"
	  FROM "PaymentFailures" f
	  JOIN "Payments" p ON p."Id" OPERATOR(pg_catalog.=) f."PaymentId"
	 WHERE f."FailureCode" IN ('metadata_mismatch', 'currency_mismatch', 'amount_mismatch')
	   AND f."CreatedAt" >= p."UpdatedAt";

-- ---------------------------------------------------------------------------
-- issue 17, item 7: key rotation covers every sealed value
--
-- payment.rotate_keys() (src/sealed.c) now also re-seals
-- payment.intents.client_secret, payment.disputes.stripe_dispute_id and
-- payment.webhook_events.payload, and payment.key_usage counts them, so a
-- key it reports as sealing nothing can leave the keyring.
-- ---------------------------------------------------------------------------
CREATE OR REPLACE VIEW payment.key_usage AS
WITH sealed(v) AS (
	SELECT "EncryptedStripePaymentIntentId" FROM "Payments"
	UNION ALL SELECT "EncryptedStripeCustomerId" FROM "Payments"
	UNION ALL SELECT "EncryptedStripeRefundId" FROM "Payments"
	UNION ALL SELECT "EncryptedStripePaymentMethodId" FROM "PaymentMethods"
	UNION ALL SELECT "EncryptedStripeRefundId" FROM "PaymentRefunds"
	UNION ALL SELECT "EncryptedStripeErrorDetails" FROM "PaymentFailures"
	UNION ALL SELECT e.value FROM payment.outbox o, pg_catalog.jsonb_each_text(o.request) e
	           WHERE pg_catalog.starts_with(e.value, 'pe1:')
	UNION ALL SELECT client_secret FROM payment.intents
	UNION ALL SELECT stripe_dispute_id FROM payment.disputes
	UNION ALL SELECT payload FROM payment.webhook_events
), used AS (
	SELECT pg_catalog.split_part(v, ':', 2) AS key_id, pg_catalog.count(*) AS sealed_values
	  FROM sealed
	 WHERE v IS NOT NULL
	 GROUP BY 1
)
SELECT COALESCE(k.key_id, u.key_id) AS key_id,
       COALESCE(u.sealed_values, 0) AS sealed_values,
       k.key_id IS NOT NULL AS in_keyring,
       COALESCE(k.newest, false) AS newest
  FROM payment.keyring_keys() k
  FULL JOIN used u ON u.key_id OPERATOR(pg_catalog.=) k.key_id;

-- ---------------------------------------------------------------------------
-- issue 17, item 9: one paid payment per registration until it is fully
-- refunded.  A live payment is Pending, Completed or PartiallyRefunded (it
-- was Pending or Completed), so a PartiallyRefunded registration can no
-- longer take a second Completed payment.  An upgrade of a database that
-- already holds two live payments for one registration stops here, naming
-- the first such registration, and changes nothing: an administrator
-- decides (refund one of them in full, or payment.resolve a Pending one to
-- Failed) and runs ALTER EXTENSION ... UPDATE again.
-- ---------------------------------------------------------------------------
DO $pe_live$
DECLARE
	r record;
BEGIN
	SELECT p."EventRegistrationId" AS registration, pg_catalog.count(*) AS live,
	       pg_catalog.string_agg(payment.status_name(p."Status"), ', ' ORDER BY p."Status", p."Id") AS states
	  INTO r
	  FROM "Payments" p
	 WHERE p."Status" IN (0, 1, 4)
	 GROUP BY p."EventRegistrationId"
	HAVING pg_catalog.count(*) > 1
	 ORDER BY p."EventRegistrationId"
	 LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'registration % has % live payments (%)', r.registration, r.live, r.states
			USING ERRCODE = 'unique_violation',
			      DETAIL = 'Version 1.2 allows one Pending, Completed or PartiallyRefunded payment per registration (one paid payment until it is fully refunded).',
			      HINT = 'Refund one of them in full (payment.refund), or set a Pending one to Failed with payment.resolve, then run ALTER EXTENSION payment_ext UPDATE again.';
	END IF;
END
$pe_live$;
DROP INDEX "UX_Payments_EventRegistration_Live";
CREATE UNIQUE INDEX "UX_Payments_EventRegistration_Live"
    ON "Payments"("EventRegistrationId")
    WHERE "Status" IN (0, 1, 4);
COMMENT ON INDEX "UX_Payments_EventRegistration_Live" IS
	'one live (Pending, Completed or PartiallyRefunded) payment per registration: one paid payment until it is fully refunded';

-- ---------------------------------------------------------------------------
-- issue 17, items 1 and 2: no charge for a payment that no longer wants it,
-- and the current attempt's PaymentIntent.  (The logic is in the C library:
-- src/outbox_outcome.c, resolve.c, payments.c, webhook_apply.c.)  A new
-- outbox kind, refund.unwanted: the refund of the whole charge of a
-- PaymentIntent that its payment does not keep (a PaymentIntent of an
-- earlier attempt, or charged after the payment stopped being Pending).
-- ---------------------------------------------------------------------------
ALTER TABLE payment.outbox DROP CONSTRAINT outbox_kind_check;
ALTER TABLE payment.outbox ADD CONSTRAINT outbox_kind_check
	CHECK (kind IN ('payment_intent.create', 'refund.create',
	                'payment_intent.retrieve', 'payment_intent.cancel',
	                'payment_intent.search', 'refund.list', 'refund.unwanted'));
COMMENT ON COLUMN payment.outbox.kind IS
	'payment_intent.create, refund.create, payment_intent.retrieve, payment_intent.cancel, payment_intent.search, refund.list or refund.unwanted';
COMMENT ON TABLE payment.intents IS
	'the latest state Stripe reported of the PaymentIntent of each payment''s current attempt: Stripe status, next action type and the sealed client secret (payment.client_secret); payment.retry removes the row of the earlier attempt';

-- ---------------------------------------------------------------------------
-- issue 20 (ride out a Stripe or network outage) and issue 17 items 3 and 5
-- (when the worker may give up on a request; what settling concludes)
--
-- payment.outbox.key_sent_at: when an attempt of the row may first have
-- reached Stripe; attempts that provably never did (connection refused, DNS,
-- TLS handshake) leave it NULL.  A create request is sent again with its key
-- until payment_ext.idempotency_window after it, then settled.
-- payment.outbox.unusable_answers: answers that came back and could not be
-- used (what payment_ext.max_attempts now bounds).
-- ---------------------------------------------------------------------------
ALTER TABLE payment.outbox
	ADD COLUMN key_sent_at timestamptz NULL,
	ADD COLUMN unusable_answers integer NOT NULL DEFAULT 0;
ALTER TABLE payment.outbox
	ADD CONSTRAINT outbox_unusable_answers_check CHECK (unusable_answers >= 0);
-- rows of 1.1: their first attempt may have reached Stripe
UPDATE payment.outbox SET key_sent_at = first_attempt_at
 WHERE first_attempt_at IS NOT NULL;
COMMENT ON COLUMN payment.outbox.key_sent_at IS
	'when an attempt may first have reached Stripe (its idempotency key''s age there); NULL while every attempt provably never reached it';
COMMENT ON COLUMN payment.outbox.unusable_answers IS
	'answers that came back but could not be used (malformed, or not recordable); payment_ext.max_attempts of them make the row dead';
-- the claim takes due rows in the order of creation
CREATE INDEX outbox_pending_id_idx ON payment.outbox (id) WHERE state = 'pending';

-- payment.worker_status gains the circuit breaker: the function's row type
-- changes, so the view and the function are made again (with their grants
-- and comments); the C entry point serves both the 13 columns of 1.0/1.1
-- and the 16 of 1.2.
DROP VIEW payment.worker_status;
DROP FUNCTION payment.worker_state();
CREATE FUNCTION payment.worker_state(
	OUT running boolean, OUT pid integer, OUT state text,
	OUT started_at timestamptz, OUT last_wake timestamptz, OUT in_flight integer,
	OUT requests_sent bigint, OUT successes bigint, OUT failures bigint,
	OUT retries bigint, OUT dead bigint, OUT last_success_at timestamptz,
	OUT last_error text, OUT unreachable_since timestamptz,
	OUT unreachable_error text, OUT probes bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'pe_worker_state'
LANGUAGE C VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION payment.worker_state() IS
	'the outbox worker''s shared-memory status: running, pid, state, counters since start, last error (never a secret), the circuit breaker';

CREATE VIEW payment.worker_status AS
	SELECT * FROM payment.worker_state();
COMMENT ON VIEW payment.worker_status IS
	'one row: is the outbox worker running, what it is doing, its counters since start, its last error, and since when Stripe is unreachable';
COMMENT ON COLUMN payment.worker_status.running IS 'true while the outbox worker process runs (false without shared_preload_libraries, or on a standby)';
COMMENT ON COLUMN payment.worker_status.pid IS 'the worker''s process id';
COMMENT ON COLUMN payment.worker_status.state IS 'what the worker is doing: starting, idle, sending, stripe_unreachable, waiting: ..., error recovery, stopped, or why it does not run';
COMMENT ON COLUMN payment.worker_status.started_at IS 'when the worker started';
COMMENT ON COLUMN payment.worker_status.last_wake IS 'when a commit that added outbox rows last woke the worker';
COMMENT ON COLUMN payment.worker_status.in_flight IS 'requests to Stripe in flight now';
COMMENT ON COLUMN payment.worker_status.requests_sent IS 'requests sent since the worker started';
COMMENT ON COLUMN payment.worker_status.successes IS 'requests that reached a final outcome since the worker started';
COMMENT ON COLUMN payment.worker_status.failures IS 'requests that ended in a final failure (card declined, 4xx) since the worker started';
COMMENT ON COLUMN payment.worker_status.retries IS 'requests scheduled again after a transient outcome since the worker started';
COMMENT ON COLUMN payment.worker_status.dead IS 'outbox rows given up on since the worker started';
COMMENT ON COLUMN payment.worker_status.last_success_at IS 'when a request last reached a final outcome';
COMMENT ON COLUMN payment.worker_status.last_error IS 'the last error the worker saw (never a secret)';
COMMENT ON COLUMN payment.worker_status.unreachable_since IS 'while the circuit breaker is open (state stripe_unreachable): since when; NULL while Stripe answers';
COMMENT ON COLUMN payment.worker_status.unreachable_error IS 'while the circuit breaker is open: the last transport failure or 5xx (never a secret)';
COMMENT ON COLUMN payment.worker_status.probes IS 'single requests sent while Stripe was unreachable, since the worker started';

REVOKE ALL ON FUNCTION payment.worker_state() FROM PUBLIC;
REVOKE ALL ON payment.worker_status FROM PUBLIC;
GRANT EXECUTE ON FUNCTION payment.worker_state() TO payment_admin, payment_reporting;
GRANT SELECT ON payment.worker_status TO payment_admin, payment_reporting;

-- ---------------------------------------------------------------------------
-- issue 17, the model-based test (test/t/money_model.sh): what
-- payment.reconcile compares is Stripe's latest report, never an older one
--
-- payment.intents.amount_refunded came from charge.refunded events and only
-- grew (GREATEST), so after a pending refund failed (Stripe sends no
-- charge.refunded then), or when a charge.refunded sent before that failure
-- arrived after it, payment.reconcile listed a payment that agreed with
-- Stripe.  The amount now comes from the newest charge.refunded by its
-- created (amount_refunded_at), and is forgotten when one of the payment's
-- refunds fails or is canceled, and only for the charge the payment keeps
-- (not one refunded as refund.unwanted).  (src/webhook_apply.c, src/outbox_outcome.c
-- also keep payment.refund_states from going back from a final status, and
-- leave payment.intents alone for a charge the payment does not keep.)
-- ---------------------------------------------------------------------------
ALTER TABLE payment.intents ADD COLUMN amount_refunded_at timestamptz NULL;
COMMENT ON COLUMN payment.intents.amount_refunded_at IS
	'the created time of the charge.refunded event amount_refunded comes from, or when a refund''s failure made it unknown';
