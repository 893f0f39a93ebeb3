--
-- audit: the C audit trail.  Every action type, changed columns only,
-- sealed columns redacted, request context present / absent / empty /
-- malformed, the append-only guard per role, replica mode, and tamper
-- detection by payment.verify_audit.
--
\set VERBOSITY terse
SET application_name = 'audit-test';

-- empty tables to start from (superuser); audit row ids made predictable
-- for this test only, so NOTICEs that name a row are stable
TRUNCATE "PaymentAuditLog", payment.audit_chain_heads, "PaymentMethods", "PaymentRefunds",
	"PaymentFailures", payment.outbox, payment.intents, payment.stripe_refs, payment.refund_states,
	payment.disputes, payment.webhook_events, "Payments", "EventRegistrations", "Events", "Users";
TRUNCATE "PaymentAuditLog", payment.audit_chain_heads;
CREATE SEQUENCE audit_test_ids;
ALTER TABLE "PaymentAuditLog" ALTER COLUMN "Id"
	SET DEFAULT ('a0000000-0000-0000-0000-' || lpad(nextval('audit_test_ids')::text, 12, '0'))::uuid;

-- the log as the tests read it: volatile timestamps left out of the values
CREATE TEMP VIEW log AS
SELECT right("Id"::text, 2) AS id, "ChainSeq" AS seq, "TableName" AS tbl,
       right(coalesce("PaymentId", "RowId")::text, 2) AS chain,
       "ActionType" AS action, "ActionDescription" AS description,
       "OldValues" - '{CreatedAt,UpdatedAt,ProcessedAt,FailedAt,RefundedAt}'::text[] AS old,
       "NewValues" - '{CreatedAt,UpdatedAt,ProcessedAt,FailedAt,RefundedAt}'::text[] AS new
  FROM "PaymentAuditLog";
CREATE TEMP TABLE seen (n bigint);
INSERT INTO seen VALUES (0);
-- rows added since the last call
CREATE FUNCTION new_rows() RETURNS SETOF log LANGUAGE sql AS $$
	SELECT * FROM log WHERE seq IS NULL OR id::int > (SELECT n FROM seen) ORDER BY id
$$;
CREATE FUNCTION mark() RETURNS void LANGUAGE sql AS $$
	UPDATE seen SET n = (SELECT coalesce(max(right("Id"::text, 2)::int), 0) FROM "PaymentAuditLog")
$$;

INSERT INTO "Users" ("Id", "SceneName", "Email") VALUES
	('10000000-0000-0000-0000-000000000001', 'Rowan', 'rowan@example.org'),
	('10000000-0000-0000-0000-000000000002', 'Sage', 'sage@example.org');
INSERT INTO "Events" ("Id", "Title", "StartDate", "EndDate") VALUES
	('20000000-0000-0000-0000-000000000001', 'Rope Basics', '2026-12-01 18:00+00', '2026-12-01 21:00+00');
INSERT INTO "EventRegistrations" ("Id", "EventId", "UserId") VALUES
	('30000000-0000-0000-0000-000000000001', '20000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000001'),
	('30000000-0000-0000-0000-000000000002', '20000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000002');

-- ---------------------------------------------------------------------------
-- Payments: every action, request context present
-- ---------------------------------------------------------------------------
BEGIN;
SET LOCAL app.current_user_id = '10000000-0000-0000-0000-000000000001';
SET LOCAL app.client_ip = '203.0.113.9';
SET LOCAL app.user_agent = 'Mozilla/5.0 (X11; Linux x86_64)';
INSERT INTO "Payments" ("Id", "EventRegistrationId", "UserId", "AmountValue", "SlidingScalePercentage",
                        "PaymentMethodType", "EncryptedStripePaymentIntentId", "CreatedAt", "UpdatedAt")
	VALUES ('40000000-0000-0000-0000-000000000001', '30000000-0000-0000-0000-000000000001',
	        '10000000-0000-0000-0000-000000000001', 28.00, 30, 1, payment.encrypt('pi_audit_test', 'Payments.EncryptedStripePaymentIntentId:40000000-0000-0000-0000-000000000001'),
	        '2026-01-01 10:00+00', '2026-01-01 10:00+00');
COMMIT;
-- PaymentInitiated: every column in "NewValues", the sealed one redacted
SELECT action, description, jsonb_pretty(new) AS new, old FROM new_rows();
SELECT "UserId", "IpAddress", "UserAgent", "SessionUser", "CurrentUser",
       octet_length("RowHash") AS hash_bytes, "PrevHash" IS NULL AS first_in_chain
  FROM "PaymentAuditLog" WHERE "ChainSeq" = 1 AND "PaymentId" = '40000000-0000-0000-0000-000000000001';
-- the sealed text appears nowhere in the log
SELECT count(*) AS leaks FROM "PaymentAuditLog" WHERE "NewValues"::text LIKE '%not-really%';
SELECT mark();

-- MetadataUpdated: only the changed columns, before and after
UPDATE "Payments" SET "Metadata" = '{"source": "web"}', "UpdatedAt" = '2026-01-01 10:01+00'
 WHERE "Id" = '40000000-0000-0000-0000-000000000001';
SELECT "ActionType", "ActionDescription", "OldValues" - 'UpdatedAt' AS "OldValues", "NewValues" - 'UpdatedAt' AS "NewValues"
  FROM "PaymentAuditLog" WHERE right("Id"::text, 2)::int > (SELECT n FROM seen);
SELECT mark();

-- nothing changed: no row
UPDATE "Payments" SET "Status" = 0 WHERE "Id" = '40000000-0000-0000-0000-000000000001';
SELECT count(*) AS rows_for_a_no_op FROM new_rows();

-- PaymentCompleted
UPDATE "Payments" SET "Status" = 1, "ProcessedAt" = '2026-01-01 10:02+00'
 WHERE "Id" = '40000000-0000-0000-0000-000000000001';
-- (a timestamp is written in the writer's TimeZone: shown as the instant it is)
SELECT "ActionType", "ActionDescription", "OldValues" - 'UpdatedAt' AS "OldValues",
       "NewValues" - '{UpdatedAt,ProcessedAt}'::text[] AS "NewValues",
       ("NewValues"->>'ProcessedAt')::timestamptz = '2026-01-01 10:02+00' AS processed_at_kept
  FROM "PaymentAuditLog" WHERE right("Id"::text, 2)::int > (SELECT n FROM seen);
SELECT mark();

-- a change of a sealed column only: SystemAction, redacted on both sides
UPDATE "Payments" SET "EncryptedStripeCustomerId" = payment.encrypt('cus_audit', 'Payments.EncryptedStripeCustomerId:40000000-0000-0000-0000-000000000001')
 WHERE "Id" = '40000000-0000-0000-0000-000000000001';
SELECT action, description, old, new FROM new_rows();
SELECT mark();

-- PaymentFailed, PaymentRetried (a second payment), and a PaymentFailures row
INSERT INTO "Payments" ("Id", "EventRegistrationId", "UserId", "AmountValue", "PaymentMethodType")
	VALUES ('40000000-0000-0000-0000-000000000002', '30000000-0000-0000-0000-000000000002',
	        '10000000-0000-0000-0000-000000000002', 40.00, 1);
UPDATE "Payments" SET "Status" = 2 WHERE "Id" = '40000000-0000-0000-0000-000000000002';
INSERT INTO "PaymentFailures" ("Id", "PaymentId", "FailureCode", "FailureMessage", "EncryptedStripeErrorDetails")
	VALUES ('60000000-0000-0000-0000-000000000001', '40000000-0000-0000-0000-000000000002',
	        'card_declined', 'Your card was declined.',
	        payment.encrypt('{"type": "card_error"}', 'PaymentFailures.EncryptedStripeErrorDetails:60000000-0000-0000-0000-000000000001'));
UPDATE "Payments" SET "Status" = 0 WHERE "Id" = '40000000-0000-0000-0000-000000000002';
SELECT seq, tbl, chain, action, description, old, new FROM new_rows();
SELECT mark();

-- PaymentProcessed: a zero amount is NotRequired
INSERT INTO "Payments" ("Id", "EventRegistrationId", "UserId", "AmountValue", "Status", "PaymentMethodType")
	VALUES ('40000000-0000-0000-0000-000000000003', '30000000-0000-0000-0000-000000000002',
	        '10000000-0000-0000-0000-000000000002', 0, 5, 1);
SELECT seq, chain, action, description FROM new_rows();
SELECT mark();

-- ---------------------------------------------------------------------------
-- PaymentRefunds: initiated, completed (and the payment's StatusChanged),
-- failed, metadata, deleted
-- ---------------------------------------------------------------------------
INSERT INTO "PaymentRefunds" ("Id", "OriginalPaymentId", "RefundAmountValue", "RefundReason", "ProcessedByUserId")
	VALUES ('50000000-0000-0000-0000-000000000001', '40000000-0000-0000-0000-000000000001', 10.00,
	        'customer asked for it', '10000000-0000-0000-0000-000000000001');
UPDATE "PaymentRefunds" SET "RefundStatus" = 1 WHERE "Id" = '50000000-0000-0000-0000-000000000001';
UPDATE "Payments" SET "Status" = 4, "RefundAmountValue" = 10.00, "RefundCurrency" = 'USD', "RefundedAt" = '2026-01-02 09:00+00'
 WHERE "Id" = '40000000-0000-0000-0000-000000000001';
INSERT INTO "PaymentRefunds" ("Id", "OriginalPaymentId", "RefundAmountValue", "RefundReason", "ProcessedByUserId")
	VALUES ('50000000-0000-0000-0000-000000000002', '40000000-0000-0000-0000-000000000001', 5.00,
	        'second partial refund', '10000000-0000-0000-0000-000000000001');
UPDATE "PaymentRefunds" SET "RefundStatus" = 2 WHERE "Id" = '50000000-0000-0000-0000-000000000002';
UPDATE "PaymentRefunds" SET "Metadata" = '{"ticket": "T-1"}' WHERE "Id" = '50000000-0000-0000-0000-000000000002';
DELETE FROM "PaymentRefunds" WHERE "Id" = '50000000-0000-0000-0000-000000000002';
SELECT seq, tbl, chain, action, description, old, new FROM new_rows();
SELECT mark();

-- ---------------------------------------------------------------------------
-- PaymentMethods: no payment, a chain per method row
-- ---------------------------------------------------------------------------
INSERT INTO "PaymentMethods" ("Id", "UserId", "EncryptedStripePaymentMethodId", "LastFourDigits", "CardBrand", "ExpiryMonth", "ExpiryYear")
	VALUES ('70000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000001',
	        payment.encrypt('pm_audit', 'PaymentMethods.EncryptedStripePaymentMethodId:70000000-0000-0000-0000-000000000001'), '4242', 'Visa', 12, 2099);
UPDATE "PaymentMethods" SET "IsDefault" = true WHERE "Id" = '70000000-0000-0000-0000-000000000001';
DELETE FROM "PaymentMethods" WHERE "Id" = '70000000-0000-0000-0000-000000000001';
SELECT seq, tbl, chain, action, description, old, new FROM new_rows();
SELECT DISTINCT "PaymentId", "RowId" FROM "PaymentAuditLog" WHERE "TableName" = 'PaymentMethods';
SELECT mark();

-- a payment with an audit trail is never deleted
SELECT try($q$DELETE FROM "Payments" WHERE "Id" = '40000000-0000-0000-0000-000000000003'$q$);
-- TRUNCATE of an audited table: one SystemAction row in the system chain
TRUNCATE "PaymentMethods";
SELECT seq, tbl, "PaymentId", "RowId", action, description
  FROM new_rows() JOIN "PaymentAuditLog" ON right("Id"::text, 2) = id;
SELECT mark();

-- ---------------------------------------------------------------------------
-- request context: absent, empty, malformed
-- ---------------------------------------------------------------------------
-- absent: no user, no IP over a Unix socket, application_name as agent
UPDATE "Payments" SET "Metadata" = '{"n": 1}' WHERE "Id" = '40000000-0000-0000-0000-000000000003';
-- empty (what current_setting gives after an earlier SET LOCAL): absent
SET app.current_user_id = '';
SET app.client_ip = '';
SET app.user_agent = '';
UPDATE "Payments" SET "Metadata" = '{"n": 2}' WHERE "Id" = '40000000-0000-0000-0000-000000000003';
-- malformed: recorded as NULL, quoted (masked, clipped) in the description;
-- the change goes through
SET app.current_user_id = 'user 4111 1111 1111 1111';
SET app.client_ip = '300.1.2.3';
SET app.user_agent = 'curl/8.0';
UPDATE "Payments" SET "Metadata" = '{"n": 3}' WHERE "Id" = '40000000-0000-0000-0000-000000000003';
SET app.current_user_id = 'x''; DROP TABLE "Payments"; --  and a very long text after it, far longer than sixty-four bytes';
SET app.client_ip = '2001:db8::1';
UPDATE "Payments" SET "Metadata" = '{"n": 4}' WHERE "Id" = '40000000-0000-0000-0000-000000000003';
-- a well-formed user id that is not in "Users": NULL, and said so
SET app.current_user_id = '{10000000-0000-0000-0000-0000000000ff}';
UPDATE "Payments" SET "Metadata" = '{"n": 5}' WHERE "Id" = '40000000-0000-0000-0000-000000000003';
-- braces and no hyphens are uuids too
SET app.current_user_id = '{10000000000000000000000000000002}';
UPDATE "Payments" SET "Metadata" = '{"n": 6}' WHERE "Id" = '40000000-0000-0000-0000-000000000003';
RESET app.current_user_id;
RESET app.client_ip;
RESET app.user_agent;
SELECT l.seq, l.description, a."UserId", a."IpAddress", a."UserAgent"
  FROM new_rows() l JOIN "PaymentAuditLog" a ON right(a."Id"::text, 2) = l.id ORDER BY l.id;
SELECT mark();

-- ---------------------------------------------------------------------------
-- roles: an application role writes payments and no audit row by hand
-- ---------------------------------------------------------------------------
CREATE ROLE regress_audit_app;
CREATE ROLE regress_audit_clerk;
GRANT USAGE ON SCHEMA payment TO regress_audit_app, regress_audit_clerk;
GRANT SELECT, UPDATE ON "Payments" TO regress_audit_app;
-- a mistaken grant: the trigger still refuses
GRANT SELECT, UPDATE, DELETE, TRUNCATE ON "PaymentAuditLog" TO regress_audit_clerk;

SET ROLE regress_audit_app;
SET app.user_role = 'Admin';  -- row-level security: an Admin sees every payment
UPDATE "Payments" SET "Metadata" = '{"n": 7}' WHERE "Id" = '40000000-0000-0000-0000-000000000003';
RESET app.user_role;
SELECT try($q$SELECT count(*) FROM "PaymentAuditLog"$q$);  -- no privilege to read
SELECT try($q$INSERT INTO "PaymentAuditLog" ("ActionType", "ActionDescription") VALUES ('SystemAction', 'forged')$q$);  -- nor to write
SELECT try($q$UPDATE "PaymentAuditLog" SET "ActionDescription" = 'x'$q$);  -- privilege
SELECT try($q$DELETE FROM "PaymentAuditLog"$q$);  -- privilege
SELECT try($q$TRUNCATE "PaymentAuditLog"$q$);  -- privilege
RESET ROLE;
SELECT seq, action, "SessionUser", "CurrentUser"
  FROM new_rows() JOIN "PaymentAuditLog" ON right("Id"::text, 2) = id;
SELECT mark();

-- the append-only trigger, with the refusal's LOG line
SET ROLE regress_audit_clerk;
SET client_min_messages = log;
SET app.current_user_id = '10000000-0000-0000-0000-000000000002';
SELECT try($q$UPDATE "PaymentAuditLog" SET "ActionDescription" = 'x' WHERE "ChainSeq" = 1$q$);  -- trigger
SELECT try($q$DELETE FROM "PaymentAuditLog" WHERE "ChainSeq" = 1$q$);  -- trigger
SELECT try($q$TRUNCATE "PaymentAuditLog"$q$);  -- trigger
RESET app.current_user_id;
RESET client_min_messages;
RESET ROLE;
SELECT count(*) AS untouched FROM "PaymentAuditLog" WHERE "ActionDescription" = 'x';
-- a superuser may (and the chain shows it, below)
BEGIN;
UPDATE "PaymentAuditLog" SET "UserAgent" = 'edited' WHERE "ChainSeq" = 1 AND "TableName" = 'Payments'
	AND "PaymentId" = '40000000-0000-0000-0000-000000000001';
ROLLBACK;

-- ---------------------------------------------------------------------------
-- replica mode does not silence the audit triggers
-- ---------------------------------------------------------------------------
SET session_replication_role = replica;
UPDATE "Payments" SET "Metadata" = '{"n": 8}' WHERE "Id" = '40000000-0000-0000-0000-000000000003';
RESET session_replication_role;
SELECT seq, action, description FROM new_rows();
SELECT mark();
SELECT tgrelid::regclass AS tbl, tgname, tgenabled FROM pg_trigger
 WHERE tgname LIKE 'TR\_%Audit%' OR tgname LIKE 'TR\_PaymentAuditLog\_%' ORDER BY 1, 2;

-- ---------------------------------------------------------------------------
-- tamper evidence: every chain verifies; a superuser's changes (triggers
-- disabled) are each caught, and named
-- ---------------------------------------------------------------------------
\set VERBOSITY default
SELECT payment.verify_audit() AS all_chains;
SELECT payment.verify_audit('40000000-0000-0000-0000-000000000001') AS payment_1;
SELECT payment.verify_audit('70000000-0000-0000-0000-000000000001') AS saved_method;
SELECT payment.verify_audit('00000000-0000-0000-0000-000000000000') AS system_chain;
SELECT payment.verify_audit('40000000-0000-0000-0000-0000000000ff') AS no_such_chain;
SELECT chain, count(*) AS rows, max(seq) AS newest FROM log GROUP BY 1 ORDER BY 1;

BEGIN;  -- a row changed
ALTER TABLE "PaymentAuditLog" DISABLE TRIGGER ALL;
UPDATE "PaymentAuditLog" SET "NewValues" = '{"Status": 2}' WHERE "PaymentId" = '40000000-0000-0000-0000-000000000001' AND "ChainSeq" = 3;
SELECT payment.verify_audit() AS all_chains, payment.verify_audit('40000000-0000-0000-0000-000000000001') AS payment_1,
       payment.verify_audit('40000000-0000-0000-0000-000000000002') AS payment_2;
ROLLBACK;
BEGIN;  -- a row removed from the middle
ALTER TABLE "PaymentAuditLog" DISABLE TRIGGER ALL;
DELETE FROM "PaymentAuditLog" WHERE "PaymentId" = '40000000-0000-0000-0000-000000000001' AND "ChainSeq" = 2;
SELECT payment.verify_audit('40000000-0000-0000-0000-000000000001') AS payment_1;
ROLLBACK;
BEGIN;  -- the newest row removed
ALTER TABLE "PaymentAuditLog" DISABLE TRIGGER ALL;
DELETE FROM "PaymentAuditLog" WHERE "PaymentId" = '40000000-0000-0000-0000-000000000002' AND "ChainSeq" = 4;
SELECT payment.verify_audit('40000000-0000-0000-0000-000000000002') AS payment_2;
ROLLBACK;
BEGIN;  -- two rows swapped
ALTER TABLE "PaymentAuditLog" DISABLE TRIGGER ALL;
UPDATE "PaymentAuditLog" SET "ChainSeq" = CASE "ChainSeq" WHEN 2 THEN 3 ELSE 2 END
 WHERE "PaymentId" = '40000000-0000-0000-0000-000000000001' AND "ChainSeq" IN (2, 3);
SELECT payment.verify_audit('40000000-0000-0000-0000-000000000001') AS payment_1;
ROLLBACK;
BEGIN;  -- two rows' contents swapped, positions and hashes kept
ALTER TABLE "PaymentAuditLog" DISABLE TRIGGER ALL;
UPDATE "PaymentAuditLog" a SET "ActionType" = b."ActionType", "ActionDescription" = b."ActionDescription",
       "OldValues" = b."OldValues", "NewValues" = b."NewValues"
  FROM "PaymentAuditLog" b
 WHERE a."PaymentId" = '40000000-0000-0000-0000-000000000001' AND b."PaymentId" = a."PaymentId"
   AND a."ChainSeq" IN (2, 3) AND b."ChainSeq" = 5 - a."ChainSeq";
SELECT payment.verify_audit('40000000-0000-0000-0000-000000000001') AS payment_1;
ROLLBACK;
BEGIN;  -- a row forged with the chain trigger disabled
ALTER TABLE "PaymentAuditLog" DISABLE TRIGGER "TR_PaymentAuditLog_Chain";
INSERT INTO "PaymentAuditLog" ("Id", "PaymentId", "ActionType", "ActionDescription")
	VALUES ('a0000000-0000-0000-0000-0000000000ff', '40000000-0000-0000-0000-000000000002', 'SystemAction', 'forged');
SELECT payment.verify_audit() AS all_chains;
ROLLBACK;
BEGIN;  -- a whole chain removed (its head remains)
ALTER TABLE "PaymentAuditLog" DISABLE TRIGGER ALL;
DELETE FROM "PaymentAuditLog" WHERE "RowId" = '70000000-0000-0000-0000-000000000001';
SELECT payment.verify_audit() AS all_chains;
ROLLBACK;
-- the limit of what the database alone can show: a superuser who removes
-- the newest row and also moves the chain's head back is not caught here
-- (doc/sql-reference.md, payment.verify_audit(): ship payment.audit_chain_heads off the server to catch it)
BEGIN;
ALTER TABLE "PaymentAuditLog" DISABLE TRIGGER ALL;
DELETE FROM "PaymentAuditLog" WHERE "PaymentId" = '40000000-0000-0000-0000-000000000003'
   AND "ChainSeq" = (SELECT seq FROM payment.audit_chain_heads WHERE chain_id = '40000000-0000-0000-0000-000000000003');
UPDATE payment.audit_chain_heads h SET seq = h.seq - 1,
       row_hash = (SELECT "RowHash" FROM "PaymentAuditLog" WHERE "PaymentId" = h.chain_id AND "ChainSeq" = h.seq - 1)
 WHERE chain_id = '40000000-0000-0000-0000-000000000003';
SELECT payment.verify_audit('40000000-0000-0000-0000-000000000003') AS payment_3;
ROLLBACK;
-- and after all that, everything verifies again
SELECT payment.verify_audit() AS all_chains;

\set VERBOSITY terse
-- an audit row inserted directly (as key rotation does) joins its chain,
-- whatever position and hash it claims
INSERT INTO "PaymentAuditLog" ("PaymentId", "ActionType", "ActionDescription", "ChainSeq", "RowHash")
	VALUES ('40000000-0000-0000-0000-000000000003', 'SystemAction', 'direct insert', 1, '\x00');
SELECT seq, action, description FROM new_rows();
SELECT payment.verify_audit('40000000-0000-0000-0000-000000000003') AS payment_3;

-- ---------------------------------------------------------------------------
-- the audit trigger writes its rows without an INSERT statement
-- (src/audit/store.c): what the log's definition asks for still holds, and
-- a trigger on the log, which that write could not fire, sends the rows
-- back through an ordinary INSERT
-- ---------------------------------------------------------------------------
SELECT mark();
-- a CHECK constraint added by a DBA holds for the audit rows: the change
-- fails and nothing of it stays
ALTER TABLE "PaymentAuditLog" ADD CONSTRAINT audit_test_short
	CHECK (length("ActionDescription") < 10) NOT VALID;
UPDATE "Payments" SET "Metadata" = '{"try": "check"}' WHERE "Id" = '40000000-0000-0000-0000-000000000001';
SELECT "Metadata" FROM "Payments" WHERE "Id" = '40000000-0000-0000-0000-000000000001';
ALTER TABLE "PaymentAuditLog" DROP CONSTRAINT audit_test_short;
-- a CHECK that calls a function holds as the function is now, not as it
-- was when this backend prepared the check
CREATE FUNCTION audit_test_ok(text) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true';
ALTER TABLE "PaymentAuditLog" ADD CONSTRAINT audit_test_fn
	CHECK (audit_test_ok("ActionDescription")) NOT VALID;
UPDATE "Payments" SET "Metadata" = '{"try": "function says yes"}' WHERE "Id" = '40000000-0000-0000-0000-000000000001';
CREATE OR REPLACE FUNCTION audit_test_ok(text) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT false';
UPDATE "Payments" SET "Metadata" = '{"try": "function says no"}' WHERE "Id" = '40000000-0000-0000-0000-000000000001';
ALTER TABLE "PaymentAuditLog" DROP CONSTRAINT audit_test_fn;
DROP FUNCTION audit_test_ok(text);
-- a column added with a default gets its default
ALTER TABLE "PaymentAuditLog" ADD COLUMN audit_test_note text DEFAULT 'from the default';
UPDATE "Payments" SET "Metadata" = '{"try": "default"}' WHERE "Id" = '40000000-0000-0000-0000-000000000001';
SELECT "ActionType", audit_test_note FROM "PaymentAuditLog" ORDER BY "Id" DESC LIMIT 1;
ALTER TABLE "PaymentAuditLog" DROP COLUMN audit_test_note;
-- a trigger on the log fires for the audit trigger's rows
CREATE FUNCTION audit_test_seen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RAISE NOTICE 'log trigger saw % of %', NEW."ActionType", NEW."TableName";
	RETURN NEW;
END
$$;
CREATE TRIGGER audit_test_seen AFTER INSERT ON "PaymentAuditLog"
	FOR EACH ROW EXECUTE FUNCTION audit_test_seen();
UPDATE "Payments" SET "Metadata" = '{"try": "trigger"}' WHERE "Id" = '40000000-0000-0000-0000-000000000001';
DROP TRIGGER audit_test_seen ON "PaymentAuditLog";
DROP FUNCTION audit_test_seen();
UPDATE "Payments" SET "Metadata" = '{"try": "direct again"}' WHERE "Id" = '40000000-0000-0000-0000-000000000001';
-- a default of the log that itself changes a payment: the audit row of
-- that nested change is written too (through an INSERT), and both verify
-- (it names the table with its schema: the trigger that runs the default
-- pins search_path)
CREATE FUNCTION audit_test_nested_write() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	IF current_setting('audit_test.inner', true) = 'on' THEN
		RETURN 'inner';
	END IF;
	PERFORM set_config('audit_test.inner', 'on', true);
	UPDATE public."Payments" SET "Metadata" = '{"try": "nested"}'
	 WHERE "Id" = '40000000-0000-0000-0000-000000000002';
	PERFORM set_config('audit_test.inner', 'off', true);
	RETURN 'outer';
END
$$;
ALTER TABLE "PaymentAuditLog" ADD COLUMN audit_test_note text;
ALTER TABLE "PaymentAuditLog" ALTER COLUMN audit_test_note SET DEFAULT audit_test_nested_write();
UPDATE "Payments" SET "Metadata" = '{"try": "outer"}' WHERE "Id" = '40000000-0000-0000-0000-000000000001';
SELECT right("PaymentId"::text, 2) AS payment, "NewValues"->'Metadata' AS metadata, audit_test_note
  FROM "PaymentAuditLog" WHERE audit_test_note IS NOT NULL ORDER BY "Id";
ALTER TABLE "PaymentAuditLog" DROP COLUMN audit_test_note;
DROP FUNCTION audit_test_nested_write();
SELECT payment.verify_audit('40000000-0000-0000-0000-000000000002') AS payment_2;
-- the chain trigger refuses to be attached anywhere but BEFORE INSERT
-- FOR EACH ROW (it could not chain the row as stored), and the audit
-- trigger anywhere but AFTER; each refusal changes nothing
CREATE TABLE audit_test_misuse (x int);
CREATE TRIGGER misattached AFTER INSERT ON audit_test_misuse
	FOR EACH ROW EXECUTE FUNCTION payment.audit_chain_trigger();
INSERT INTO audit_test_misuse VALUES (1);
DROP TRIGGER misattached ON audit_test_misuse;
CREATE TRIGGER misattached BEFORE UPDATE ON audit_test_misuse
	FOR EACH ROW EXECUTE FUNCTION payment.audit_chain_trigger();
INSERT INTO audit_test_misuse VALUES (1);
UPDATE audit_test_misuse SET x = 2;
DROP TRIGGER misattached ON audit_test_misuse;
CREATE TRIGGER misattached BEFORE INSERT ON audit_test_misuse
	FOR EACH ROW EXECUTE FUNCTION payment.audit_row_trigger();
INSERT INTO audit_test_misuse VALUES (3);
SELECT x FROM audit_test_misuse ORDER BY x;
DROP TABLE audit_test_misuse;
-- rows of both ways share one chain, which verifies
SELECT seq, action, new FROM new_rows();
SELECT payment.verify_audit('40000000-0000-0000-0000-000000000001') AS payment_1;
-- a user that the log names is never deleted (the user of a new audit row
-- is locked FOR KEY SHARE until its transaction ends, as the foreign key's
-- own check would lock it)
INSERT INTO "Users" ("Id", "SceneName", "Email") VALUES
	('10000000-0000-0000-0000-000000000003', 'Quinn', 'quinn@example.org');
BEGIN;
SET LOCAL app.current_user_id = '10000000-0000-0000-0000-000000000003';
UPDATE "Payments" SET "Metadata" = '{"try": "user"}' WHERE "Id" = '40000000-0000-0000-0000-000000000001';
COMMIT;
SELECT "UserId", "ActionType" FROM "PaymentAuditLog" ORDER BY "Id" DESC LIMIT 1;
DELETE FROM "Users" WHERE "Id" = '10000000-0000-0000-0000-000000000003';
-- that user is now known to this backend: the next audit row naming it is
-- written without looking "Users" up (the foreign key's check would scan
-- its primary key once per row)
SELECT indexrelid::regclass AS users_pkey FROM pg_index
 WHERE indrelid = '"Users"'::regclass AND indisprimary \gset
BEGIN;
SET LOCAL app.current_user_id = '10000000-0000-0000-0000-000000000003';
SELECT pg_stat_get_xact_numscans(:'users_pkey'::regclass) AS users_scans \gset
UPDATE "Payments" SET "Metadata" = '{"try": "known user"}' WHERE "Id" = '40000000-0000-0000-0000-000000000001';
SELECT pg_stat_get_xact_numscans(:'users_pkey'::regclass) - :users_scans AS users_scans_for_the_audit_row;
COMMIT;
SELECT payment.verify_audit('40000000-0000-0000-0000-000000000001') AS payment_1;

-- ---------------------------------------------------------------------------
-- clean up
-- ---------------------------------------------------------------------------
REVOKE ALL ON "PaymentAuditLog" FROM regress_audit_clerk;
REVOKE ALL ON "Payments" FROM regress_audit_app;
REVOKE ALL ON SCHEMA payment FROM regress_audit_app, regress_audit_clerk;
DROP ROLE regress_audit_app;
DROP ROLE regress_audit_clerk;
ALTER TABLE "PaymentAuditLog" ALTER COLUMN "Id" SET DEFAULT gen_random_uuid();
DROP FUNCTION new_rows();
DROP FUNCTION mark();
DROP SEQUENCE audit_test_ids;
