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
