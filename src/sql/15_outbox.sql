
-- ---------------------------------------------------------------------------
-- payment.outbox: the transactional outbox of Stripe requests
--
-- A row is inserted in the same transaction as the change that needs the
-- request (payment.create, payment.retry, payment.refund), so a request
-- exists if and only if that change committed.  The outbox worker claims due
-- rows with FOR UPDATE SKIP LOCKED, sends them outside any transaction and
-- records each outcome in its own transaction.  A LOGGED table: a crash or a
-- failover loses nothing.
-- ---------------------------------------------------------------------------
CREATE TABLE payment.outbox (
	id               bigint      GENERATED ALWAYS AS IDENTITY,
	kind             text        NOT NULL,
	payment_id       uuid        NOT NULL,
	refund_id        uuid        NULL,
	request          jsonb       NOT NULL,
	idempotency_key  text        NOT NULL,
	state            text        NOT NULL DEFAULT 'pending',
	attempts         integer     NOT NULL DEFAULT 0,
	next_attempt_at  timestamptz NOT NULL DEFAULT now(),
	first_attempt_at timestamptz NULL,
	claimed_at       timestamptz NULL,
	last_error       text        NULL,
	last_http_status integer     NULL,
	created_at       timestamptz NOT NULL DEFAULT now(),
	updated_at       timestamptz NOT NULL DEFAULT now(),
	completed_at     timestamptz NULL,
	CONSTRAINT outbox_pkey PRIMARY KEY (id),
	CONSTRAINT outbox_idempotency_key_key UNIQUE (idempotency_key),
	CONSTRAINT outbox_payment_fkey
		FOREIGN KEY (payment_id) REFERENCES "Payments"("Id") ON DELETE RESTRICT,
	CONSTRAINT outbox_refund_fkey
		FOREIGN KEY (refund_id) REFERENCES "PaymentRefunds"("Id") ON DELETE RESTRICT,
	CONSTRAINT outbox_kind_check
		CHECK (kind IN ('payment_intent.create', 'refund.create',
		                'payment_intent.retrieve', 'payment_intent.cancel')),
	CONSTRAINT outbox_state_check
		CHECK (state IN ('pending', 'sending', 'done', 'dead')),
	CONSTRAINT outbox_refund_kind_check
		CHECK ((kind = 'refund.create') = (refund_id IS NOT NULL)),
	CONSTRAINT outbox_attempts_check CHECK (attempts >= 0)
);
CREATE INDEX outbox_due_idx ON payment.outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_payment_idx ON payment.outbox (payment_id);
CREATE INDEX outbox_state_idx ON payment.outbox (state) WHERE state IN ('sending', 'dead');

COMMENT ON TABLE payment.outbox IS 'Stripe requests to send, inserted in the transaction that needs them; drained by the outbox worker';
COMMENT ON COLUMN payment.outbox.kind IS 'payment_intent.create, refund.create, payment_intent.retrieve or payment_intent.cancel';
COMMENT ON COLUMN payment.outbox.request IS 'the form parameters, frozen at insert: {"amount": "2800", "currency": "usd", "metadata[payment_id]": ...}; Stripe ids in it are sealed';
COMMENT ON COLUMN payment.outbox.idempotency_key IS 'the Idempotency-Key sent on every attempt of this row, for its whole life';
COMMENT ON COLUMN payment.outbox.state IS 'pending (due at next_attempt_at), sending (claimed by the worker), done, dead (gave up after payment_ext.max_attempts)';

SELECT pg_catalog.pg_extension_config_dump('payment.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('payment.outbox_id_seq', '');

-- ---------------------------------------------------------------------------
-- payment.idempotency_keys: the application's keys for payment.create and
-- payment.refund, so that a double click never pays or refunds twice
-- ---------------------------------------------------------------------------
CREATE TABLE payment.idempotency_keys (
	operation    text        NOT NULL,
	key          text        NOT NULL,
	request_hash bytea       NOT NULL,
	result_id    uuid        NOT NULL,
	created_at   timestamptz NOT NULL DEFAULT now(),
	CONSTRAINT idempotency_keys_pkey PRIMARY KEY (operation, key),
	CONSTRAINT idempotency_keys_operation_check CHECK (operation IN ('create', 'refund')),
	CONSTRAINT idempotency_keys_key_check CHECK (length(key) BETWEEN 1 AND 255)
);
COMMENT ON TABLE payment.idempotency_keys IS 'idempotency keys given to payment.create and payment.refund, with a SHA-256 of the arguments and the row they made';
SELECT pg_catalog.pg_extension_config_dump('payment.idempotency_keys', '');
