
-- ---------------------------------------------------------------------------
-- the outbox worker (src/outbox_worker.c, src/outbox_outcome.c, src/http.c)
--
-- The background worker drains payment.outbox to Stripe.  It connects as
-- the bootstrap superuser (PostgreSQL 15 background workers cannot log in
-- as a NOLOGIN role) and runs every transaction as payment_ext.worker_role
-- (default payment_worker), which has only the rights granted below.
-- ---------------------------------------------------------------------------

-- ---------------------------------------------------------------------------
-- payment.intents: what the application needs of a PaymentIntent that did
-- not complete at once (requires_action, requires_payment_method, ...)
-- ---------------------------------------------------------------------------
CREATE TABLE payment.intents (
	payment_id    uuid        NOT NULL,
	client_secret text        NULL,
	stripe_status text        NOT NULL,
	next_action   jsonb       NULL,
	created_at    timestamptz NOT NULL DEFAULT now(),
	updated_at    timestamptz NOT NULL DEFAULT now(),
	CONSTRAINT intents_pkey PRIMARY KEY (payment_id),
	CONSTRAINT intents_payment_fkey
		FOREIGN KEY (payment_id) REFERENCES "Payments"("Id") ON DELETE RESTRICT,
	CONSTRAINT intents_client_secret_sealed
		CHECK (client_secret IS NULL OR pg_catalog.starts_with(client_secret, 'pe1:'))
);
COMMENT ON TABLE payment.intents IS 'the latest PaymentIntent state the outbox worker saw per payment: Stripe status, next action type and the sealed client secret (payment.client_secret)';
COMMENT ON COLUMN payment.intents.client_secret IS 'sealed (pe1:...) with the context ''payment.intents.client_secret:'' || payment_id';
COMMENT ON COLUMN payment.intents.next_action IS '{"type": ...} of the PaymentIntent''s next_action (use_stripe_sdk, redirect_to_url, ...), or NULL';
SELECT pg_catalog.pg_extension_config_dump('payment.intents', '');

-- ---------------------------------------------------------------------------
-- wake the worker when a transaction that added outbox rows commits
-- ---------------------------------------------------------------------------
CREATE FUNCTION payment.outbox_wake_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'pe_outbox_wake_trigger'
LANGUAGE C;
COMMENT ON FUNCTION payment.outbox_wake_trigger() IS
	'marks the transaction: at commit it sets the outbox worker''s latch (a no-op without shared_preload_libraries)';

CREATE TRIGGER outbox_wake
	AFTER INSERT ON payment.outbox
	FOR EACH STATEMENT EXECUTE FUNCTION payment.outbox_wake_trigger();

-- ---------------------------------------------------------------------------
-- status
-- ---------------------------------------------------------------------------
CREATE FUNCTION payment.worker_state(
	OUT running boolean, OUT pid integer, OUT state text,
	OUT started_at timestamptz, OUT last_wake timestamptz, OUT in_flight integer,
	OUT requests_sent bigint, OUT successes bigint, OUT failures bigint,
	OUT retries bigint, OUT dead bigint, OUT last_success_at timestamptz,
	OUT last_error text)
RETURNS record
AS 'MODULE_PATHNAME', 'pe_worker_state'
LANGUAGE C VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION payment.worker_state() IS
	'the outbox worker''s shared-memory status: running, pid, state, counters since start, last error (never a secret)';

CREATE VIEW payment.worker_status AS
	SELECT * FROM payment.worker_state();
COMMENT ON VIEW payment.worker_status IS
	'one row: is the outbox worker running, what it is doing, its counters since start and its last error';

CREATE VIEW payment.dead_letters AS
	SELECT o.id AS outbox_id, o.kind, o.payment_id, o.refund_id, o.idempotency_key,
	       o.attempts, o.last_http_status, o.last_error,
	       o.created_at, o.first_attempt_at, o.completed_at AS died_at
	  FROM payment.outbox o
	 WHERE o.state OPERATOR(pg_catalog.=) 'dead';
COMMENT ON VIEW payment.dead_letters IS
	'outbox rows the worker gave up on, with the last error: look the request up in Stripe before any repair';
COMMENT ON COLUMN payment.worker_status.running IS 'true while the outbox worker process runs (false without shared_preload_libraries, or on a standby)';
COMMENT ON COLUMN payment.worker_status.pid IS 'the worker''s process id';
COMMENT ON COLUMN payment.worker_status.state IS 'what the worker is doing: starting, running, waiting: ..., error recovery, stopped, or why it does not run';
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
COMMENT ON COLUMN payment.dead_letters.outbox_id IS 'payment.outbox row';
COMMENT ON COLUMN payment.dead_letters.kind IS 'the Stripe request: payment_intent.create, refund.create, ...';
COMMENT ON COLUMN payment.dead_letters.payment_id IS 'the payment the request is for';
COMMENT ON COLUMN payment.dead_letters.refund_id IS 'the refund, for refund.create and refund.list';
COMMENT ON COLUMN payment.dead_letters.idempotency_key IS 'the key every attempt sent: look it up in Stripe''s Dashboard';
COMMENT ON COLUMN payment.dead_letters.attempts IS 'attempts made';
COMMENT ON COLUMN payment.dead_letters.last_http_status IS 'HTTP status of the last attempt, NULL without a response';
COMMENT ON COLUMN payment.dead_letters.last_error IS 'the last attempt''s error (never a secret)';
COMMENT ON COLUMN payment.dead_letters.created_at IS 'when the request was queued';
COMMENT ON COLUMN payment.dead_letters.first_attempt_at IS 'when it was first sent';
COMMENT ON COLUMN payment.dead_letters.died_at IS 'when the worker gave up';

-- ---------------------------------------------------------------------------
-- payment.client_secret
-- ---------------------------------------------------------------------------
CREATE FUNCTION payment.client_secret(payment_id uuid)
RETURNS text
AS 'MODULE_PATHNAME', 'pe_client_secret'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION payment.client_secret(uuid) IS
	'the PaymentIntent client secret for Stripe.js; NULL until the intent exists; only for the paying user (app.current_user_id) or an admin, else 42501';

-- ---------------------------------------------------------------------------
-- grants
-- ---------------------------------------------------------------------------
REVOKE ALL ON payment.intents FROM PUBLIC;
REVOKE ALL ON FUNCTION payment.worker_state() FROM PUBLIC;
REVOKE ALL ON payment.worker_status FROM PUBLIC;
REVOKE ALL ON payment.dead_letters FROM PUBLIC;
REVOKE ALL ON FUNCTION payment.client_secret(uuid) FROM PUBLIC;

GRANT EXECUTE ON FUNCTION payment.worker_state() TO payment_admin, payment_reporting;
GRANT SELECT ON payment.worker_status TO payment_admin, payment_reporting;
GRANT SELECT ON payment.dead_letters TO payment_admin, payment_reporting;
GRANT EXECUTE ON FUNCTION payment.client_secret(uuid) TO payment_app, payment_admin;

-- The worker role: exactly what claiming, sending and recording need,
-- including what the payment and refund triggers do on its behalf.
GRANT USAGE ON SCHEMA @extschema@ TO payment_worker;
GRANT SELECT, UPDATE ON payment.outbox TO payment_worker;
GRANT SELECT, INSERT, UPDATE ON payment.intents TO payment_worker;
GRANT SELECT, UPDATE ON "Payments" TO payment_worker;
GRANT SELECT, UPDATE ON "PaymentRefunds" TO payment_worker;
GRANT INSERT ON "PaymentFailures" TO payment_worker;
GRANT SELECT ("Id", "EncryptedStripePaymentMethodId") ON "PaymentMethods" TO payment_worker;
GRANT INSERT ON "PaymentAuditLog" TO payment_worker;
