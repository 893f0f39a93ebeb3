
-- ---------------------------------------------------------------------------
-- audit trail (src/audit.c, src/audit_chain.c)
--
-- One C AFTER ROW trigger on "Payments", "PaymentRefunds", "PaymentFailures"
-- and "PaymentMethods" writes a "PaymentAuditLog" row per change (changed
-- columns only, sealed columns redacted, request context).  A C BEFORE
-- INSERT trigger on "PaymentAuditLog" links every row, whoever inserts it,
-- into a SHA-256 hash chain: one chain per payment, otherwise one per row of
-- the table the entry concerns, otherwise one system chain.  The log is
-- append-only for every role but a superuser.  All of these triggers are
-- ENABLE ALWAYS: session_replication_role = replica does not silence them.
-- ---------------------------------------------------------------------------

-- columns the spec does not have: the position of a row in its chain, and
-- the database roles behind the change (app.current_user_id is only the
-- application's claim)
ALTER TABLE "PaymentAuditLog"
	ADD COLUMN "ChainSeq" bigint NULL,
	ADD COLUMN "SessionUser" text NULL,
	ADD COLUMN "CurrentUser" text NULL;

COMMENT ON COLUMN "PaymentAuditLog"."ChainSeq" IS 'position of the row in its hash chain, from 1 (set by "TR_PaymentAuditLog_Chain")';
COMMENT ON COLUMN "PaymentAuditLog"."PrevHash" IS 'SHA-256 "RowHash" of the previous row of the same chain; NULL for the first row';
COMMENT ON COLUMN "PaymentAuditLog"."RowHash" IS 'SHA-256 over this row''s content and "PrevHash" (payment.verify_audit recomputes it)';
COMMENT ON COLUMN "PaymentAuditLog"."SessionUser" IS 'session_user of the change: the login role';
COMMENT ON COLUMN "PaymentAuditLog"."CurrentUser" IS 'current_user of the change: the role whose privileges made it (a SECURITY DEFINER function''s owner inside one)';
COMMENT ON COLUMN "PaymentAuditLog"."UserId" IS 'application user from app.current_user_id; NULL when absent, not a uuid, or not in "Users" (then the description says so)';

-- verify_audit(payment_id) of a chain that has no payment (a saved method,
-- a deleted row): few rows, so a small partial index
CREATE INDEX "IX_PaymentAuditLog_RowId_NoPayment"
	ON "PaymentAuditLog"("RowId")
	WHERE "PaymentId" IS NULL;

-- the newest row of every chain: read and advanced under a per-chain lock
-- by "TR_PaymentAuditLog_Chain"; payment.verify_audit checks that every
-- chain still ends where its head says (rows removed from the end)
CREATE TABLE payment.audit_chain_heads (
	chain_id   uuid        NOT NULL,
	seq        bigint      NOT NULL,
	row_hash   bytea       NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now(),
	CONSTRAINT audit_chain_heads_pkey PRIMARY KEY (chain_id),
	CONSTRAINT audit_chain_heads_seq_check CHECK (seq >= 1),
	CONSTRAINT audit_chain_heads_hash_check CHECK (octet_length(row_hash) = 32)
);
COMMENT ON TABLE payment.audit_chain_heads IS 'newest "PaymentAuditLog" row (sequence number and hash) of each hash chain; ship it off the server to anchor the chains';
COMMENT ON COLUMN payment.audit_chain_heads.chain_id IS '"PaymentId", else "RowId", else 00000000-0000-0000-0000-000000000000 (the system chain)';
SELECT pg_catalog.pg_extension_config_dump('payment.audit_chain_heads', '');

-- ---------------------------------------------------------------------------
-- functions
-- ---------------------------------------------------------------------------
CREATE FUNCTION payment.audit_row_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'pe_audit_row_trigger'
LANGUAGE C;
COMMENT ON FUNCTION payment.audit_row_trigger() IS
	'AFTER ROW (and AFTER TRUNCATE) audit trigger of the payment tables: writes "PaymentAuditLog" rows';

CREATE FUNCTION payment.audit_chain_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'pe_audit_chain_trigger'
LANGUAGE C;
COMMENT ON FUNCTION payment.audit_chain_trigger() IS
	'BEFORE INSERT trigger of "PaymentAuditLog": sets "ChainSeq", "PrevHash" and "RowHash"';

CREATE FUNCTION payment.audit_append_only_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'pe_audit_append_only_trigger'
LANGUAGE C;
COMMENT ON FUNCTION payment.audit_append_only_trigger() IS
	'refuses UPDATE, DELETE and TRUNCATE of "PaymentAuditLog" to every role but a superuser';

CREATE FUNCTION payment.verify_audit(payment_id uuid DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'pe_verify_audit'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION payment.verify_audit(uuid) IS
	'recomputes the audit hash chain of one payment (or chain id), or of every chain when NULL; false, with a NOTICE naming the first bad row of each broken chain, when a row was changed, removed or reordered';

-- ---------------------------------------------------------------------------
-- triggers
-- ---------------------------------------------------------------------------
CREATE TRIGGER "TR_Payments_Audit"
	AFTER INSERT OR UPDATE OR DELETE ON "Payments"
	FOR EACH ROW EXECUTE FUNCTION payment.audit_row_trigger();
CREATE TRIGGER "TR_Payments_AuditTruncate"
	AFTER TRUNCATE ON "Payments"
	FOR EACH STATEMENT EXECUTE FUNCTION payment.audit_row_trigger();
ALTER TABLE "Payments" ENABLE ALWAYS TRIGGER "TR_Payments_Audit";
ALTER TABLE "Payments" ENABLE ALWAYS TRIGGER "TR_Payments_AuditTruncate";

CREATE TRIGGER "TR_PaymentRefunds_Audit"
	AFTER INSERT OR UPDATE OR DELETE ON "PaymentRefunds"
	FOR EACH ROW EXECUTE FUNCTION payment.audit_row_trigger();
CREATE TRIGGER "TR_PaymentRefunds_AuditTruncate"
	AFTER TRUNCATE ON "PaymentRefunds"
	FOR EACH STATEMENT EXECUTE FUNCTION payment.audit_row_trigger();
ALTER TABLE "PaymentRefunds" ENABLE ALWAYS TRIGGER "TR_PaymentRefunds_Audit";
ALTER TABLE "PaymentRefunds" ENABLE ALWAYS TRIGGER "TR_PaymentRefunds_AuditTruncate";

CREATE TRIGGER "TR_PaymentFailures_Audit"
	AFTER INSERT OR UPDATE OR DELETE ON "PaymentFailures"
	FOR EACH ROW EXECUTE FUNCTION payment.audit_row_trigger();
CREATE TRIGGER "TR_PaymentFailures_AuditTruncate"
	AFTER TRUNCATE ON "PaymentFailures"
	FOR EACH STATEMENT EXECUTE FUNCTION payment.audit_row_trigger();
ALTER TABLE "PaymentFailures" ENABLE ALWAYS TRIGGER "TR_PaymentFailures_Audit";
ALTER TABLE "PaymentFailures" ENABLE ALWAYS TRIGGER "TR_PaymentFailures_AuditTruncate";

CREATE TRIGGER "TR_PaymentMethods_Audit"
	AFTER INSERT OR UPDATE OR DELETE ON "PaymentMethods"
	FOR EACH ROW EXECUTE FUNCTION payment.audit_row_trigger();
CREATE TRIGGER "TR_PaymentMethods_AuditTruncate"
	AFTER TRUNCATE ON "PaymentMethods"
	FOR EACH STATEMENT EXECUTE FUNCTION payment.audit_row_trigger();
ALTER TABLE "PaymentMethods" ENABLE ALWAYS TRIGGER "TR_PaymentMethods_Audit";
ALTER TABLE "PaymentMethods" ENABLE ALWAYS TRIGGER "TR_PaymentMethods_AuditTruncate";

-- the chain trigger must see the row as it will be stored: it is the only
-- BEFORE INSERT trigger of the table
CREATE TRIGGER "TR_PaymentAuditLog_Chain"
	BEFORE INSERT ON "PaymentAuditLog"
	FOR EACH ROW EXECUTE FUNCTION payment.audit_chain_trigger();
CREATE TRIGGER "TR_PaymentAuditLog_AppendOnly"
	BEFORE UPDATE OR DELETE ON "PaymentAuditLog"
	FOR EACH ROW EXECUTE FUNCTION payment.audit_append_only_trigger();
CREATE TRIGGER "TR_PaymentAuditLog_NoTruncate"
	BEFORE TRUNCATE ON "PaymentAuditLog"
	FOR EACH STATEMENT EXECUTE FUNCTION payment.audit_append_only_trigger();
ALTER TABLE "PaymentAuditLog" ENABLE ALWAYS TRIGGER "TR_PaymentAuditLog_Chain";
ALTER TABLE "PaymentAuditLog" ENABLE ALWAYS TRIGGER "TR_PaymentAuditLog_AppendOnly";
ALTER TABLE "PaymentAuditLog" ENABLE ALWAYS TRIGGER "TR_PaymentAuditLog_NoTruncate";

-- ---------------------------------------------------------------------------
-- privileges: nobody but the owner (the superuser who created the
-- extension) writes the log or the chain heads; the triggers write them as
-- that owner.  Reading the log is granted explicitly, never to PUBLIC.
-- ---------------------------------------------------------------------------
REVOKE ALL ON "PaymentAuditLog" FROM PUBLIC;
REVOKE ALL ON payment.audit_chain_heads FROM PUBLIC;
REVOKE ALL ON FUNCTION payment.audit_row_trigger() FROM PUBLIC;
REVOKE ALL ON FUNCTION payment.audit_chain_trigger() FROM PUBLIC;
REVOKE ALL ON FUNCTION payment.audit_append_only_trigger() FROM PUBLIC;
REVOKE ALL ON FUNCTION payment.verify_audit(uuid) FROM PUBLIC;
