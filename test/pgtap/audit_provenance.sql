--
-- test/pgtap/audit_provenance.sql — who wrote an audit row is the server's
-- word, never the inserter's (issue 16, items 3 and 4): no role that
-- changes payments can write "PaymentAuditLog"; a row inserted directly
-- gets its provenance columns from the session, whatever the INSERT said;
-- the recorded session and current user stay right across SET ROLE, SET
-- SESSION AUTHORIZATION, SECURITY DEFINER calls and direct updates in one
-- session (the role-name cache once handed out a slot the next lookup
-- evicted); and payment.verify_audit notices a chain removed with its head,
-- a head row removed, and rows removed from a chain's start.
--
\set ON_ERROR_STOP 1
\set QUIET 1
SET client_min_messages = warning;
CREATE EXTENSION payment_ext;
BEGIN;
SELECT plan(38);

-- data to act on, as the superuser
INSERT INTO "Users" ("Id", "SceneName", "Email") VALUES
	('10000000-0000-0000-0000-000000000001', 'Ash', 'ash@example.org'),
	('10000000-0000-0000-0000-000000000002', 'Birch', 'birch@example.org');
INSERT INTO "Events" ("Id", "Title", "StartDate", "EndDate", "PricingTiers") VALUES
	('20000000-0000-0000-0000-000000000001', 'Rope', now(), now(), '[{"name": "standard", "price": 40}]');
INSERT INTO "EventRegistrations" ("Id", "EventId", "UserId") VALUES
	('30000000-0000-0000-0000-000000000001', '20000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000001'),
	('30000000-0000-0000-0000-000000000002', '20000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000002');
INSERT INTO "Payments" ("Id", "EventRegistrationId", "UserId", "AmountValue", "Status", "PaymentMethodType")
VALUES ('40000000-0000-0000-0000-000000000001', '30000000-0000-0000-0000-000000000001',
        '10000000-0000-0000-0000-000000000001', 40, 1, 1);
SELECT payment.save_method('10000000-0000-0000-0000-000000000001', 'pm_prov_1', '4242', 'Visa', 12, 2099) AS method_id \gset

CREATE ROLE pe_prov_login LOGIN;
GRANT payment_admin TO pe_prov_login;

-- ---------------------------------------------------------------------------
-- item 3: nobody who changes payments writes the log
-- ---------------------------------------------------------------------------
SELECT ok(NOT has_table_privilege(r, '"PaymentAuditLog"', 'INSERT, UPDATE, DELETE, TRUNCATE'),
          r || ' cannot write "PaymentAuditLog"')
  FROM unnest(ARRAY['payment_app', 'payment_admin', 'payment_worker', 'payment_reporting']) r ORDER BY r;
SELECT ok(NOT has_table_privilege(r, 'payment.audit_chain_heads', 'INSERT, UPDATE, DELETE, TRUNCATE'),
          r || ' cannot write payment.audit_chain_heads')
  FROM unnest(ARRAY['payment_app', 'payment_admin', 'payment_worker', 'payment_reporting']) r ORDER BY r;
SET LOCAL ROLE payment_worker;
SELECT throws_ok($$INSERT INTO "PaymentAuditLog" ("PaymentId", "ActionType", "ActionDescription", "SessionUser",
                                                  "CurrentUser", "IpAddress", "CreatedAt")
                   VALUES ('40000000-0000-0000-0000-000000000001', 'PaymentCompleted', 'forged by the worker',
                           'alice', 'alice', '198.51.100.7', '2001-01-01')$$,
                 '42501', NULL, 'the worker cannot insert a forged audit row');
RESET ROLE;

-- a direct insert (only the owner or a superuser can make one): the
-- provenance columns come from the session, not from the INSERT
SET LOCAL app.client_ip = '203.0.113.5';
SET LOCAL app.user_agent = 'provenance-test';
SET LOCAL app.current_user_id = '10000000-0000-0000-0000-000000000002';
INSERT INTO "PaymentAuditLog" ("Id", "PaymentId", "UserId", "ActionType", "ActionDescription", "SessionUser",
                               "CurrentUser", "IpAddress", "UserAgent", "CreatedAt")
VALUES ('50000000-0000-0000-0000-000000000001', '40000000-0000-0000-0000-000000000001',
        '10000000-0000-0000-0000-000000000001', 'SystemAction', 'a note by the superuser', 'alice', 'bob',
        '198.51.100.7', 'forged-agent', '2001-01-01');
SELECT is((SELECT "SessionUser" FROM "PaymentAuditLog" WHERE "Id" = '50000000-0000-0000-0000-000000000001'),
          session_user::text, 'a direct insert records the real session_user, not the one given');
SELECT is((SELECT "CurrentUser" FROM "PaymentAuditLog" WHERE "Id" = '50000000-0000-0000-0000-000000000001'),
          current_user::text, 'and the real current_user');
SELECT is((SELECT "IpAddress" FROM "PaymentAuditLog" WHERE "Id" = '50000000-0000-0000-0000-000000000001'),
          '203.0.113.5'::inet, 'and the client address of the request context, not the one given');
SELECT is((SELECT "UserAgent" FROM "PaymentAuditLog" WHERE "Id" = '50000000-0000-0000-0000-000000000001'),
          'provenance-test', 'and the user agent of the request context');
SELECT is((SELECT "CreatedAt" FROM "PaymentAuditLog" WHERE "Id" = '50000000-0000-0000-0000-000000000001'),
          now(), 'and the transaction''s time, not the one given');
SELECT is((SELECT "UserId" FROM "PaymentAuditLog" WHERE "Id" = '50000000-0000-0000-0000-000000000001'),
          NULL::uuid, 'and no application user (a direct insert attests none)');
RESET app.client_ip;
RESET app.user_agent;
RESET app.current_user_id;

-- inside a SECURITY DEFINER function of the superuser, the same
CREATE FUNCTION public.pe_prov_definer_insert() RETURNS void LANGUAGE sql SECURITY DEFINER AS $$
	INSERT INTO "PaymentAuditLog" ("Id", "PaymentId", "ActionType", "ActionDescription", "SessionUser", "CurrentUser")
	VALUES ('50000000-0000-0000-0000-000000000002', '40000000-0000-0000-0000-000000000001', 'SystemAction',
	        'through a definer', 'mallory', 'mallory')
$$;
SET LOCAL ROLE pe_prov_login;
SELECT public.pe_prov_definer_insert();
RESET ROLE;
SELECT is((SELECT "SessionUser" || '/' || "CurrentUser" FROM "PaymentAuditLog"
            WHERE "Id" = '50000000-0000-0000-0000-000000000002'),
          session_user::text || '/' || current_user::text,
          'a definer''s insert records the session and the definer, not the names given');
SELECT ok(payment.verify_audit(), 'the chains verify with the direct rows in them');

-- ---------------------------------------------------------------------------
-- item 4: the recorded roles in one session
--
-- Each step changes the payment's "Metadata" (or creates or refunds),
-- tagged with the step number; every row must name the session user and
-- the role whose rights made the change.
-- ---------------------------------------------------------------------------
UPDATE "Payments" SET "Metadata" = '{"step": 1}' WHERE "Id" = '40000000-0000-0000-0000-000000000001';
SET LOCAL ROLE payment_admin;
UPDATE "Payments" SET "Metadata" = '{"step": 2}' WHERE "Id" = '40000000-0000-0000-0000-000000000001';
SET LOCAL ROLE payment_worker;
UPDATE "Payments" SET "Metadata" = '{"step": 3}' WHERE "Id" = '40000000-0000-0000-0000-000000000001';
SET LOCAL ROLE payment_admin;
UPDATE "Payments" SET "Metadata" = '{"step": 4}' WHERE "Id" = '40000000-0000-0000-0000-000000000001';
RESET ROLE;
UPDATE "Payments" SET "Metadata" = '{"step": 5}' WHERE "Id" = '40000000-0000-0000-0000-000000000001';
SET LOCAL SESSION AUTHORIZATION pe_prov_login;
UPDATE "Payments" SET "Metadata" = '{"step": 6}' WHERE "Id" = '40000000-0000-0000-0000-000000000001';
SET LOCAL ROLE payment_admin;
UPDATE "Payments" SET "Metadata" = '{"step": 7}' WHERE "Id" = '40000000-0000-0000-0000-000000000001';
RESET ROLE;
-- a SECURITY DEFINER call: the function's owner makes the change
SELECT payment.refund('40000000-0000-0000-0000-000000000001', 5, 'refund step eight', '10000000-0000-0000-0000-000000000001') AS refund_id \gset
RESET SESSION AUTHORIZATION;
SET LOCAL ROLE payment_app;
SET LOCAL app.current_user_id = '10000000-0000-0000-0000-000000000002';
SELECT payment.create('30000000-0000-0000-0000-000000000002', '10000000-0000-0000-0000-000000000002', 40,
                      metadata => '{"step": 9}') AS created_id \gset
RESET app.current_user_id;
SET LOCAL ROLE payment_worker;
UPDATE "Payments" SET "Metadata" = '{"step": 10}' WHERE "Id" = '40000000-0000-0000-0000-000000000001';
RESET ROLE;

CREATE TEMP TABLE expected_roles (step int, who text);
INSERT INTO expected_roles VALUES
	(1, 'postgres/postgres'), (2, 'postgres/payment_admin'), (3, 'postgres/payment_worker'),
	(4, 'postgres/payment_admin'), (5, 'postgres/postgres'), (6, 'pe_prov_login/pe_prov_login'),
	(7, 'pe_prov_login/payment_admin'), (10, 'postgres/payment_worker');
UPDATE expected_roles SET who = replace(who, 'postgres', session_user::text);
SELECT is((SELECT a."SessionUser" || '/' || a."CurrentUser" FROM "PaymentAuditLog" a
            WHERE a."PaymentId" = '40000000-0000-0000-0000-000000000001'
              AND a."NewValues" -> 'Metadata' ->> 'step' = e.step::text),
          e.who, 'step ' || e.step || ': the row names ' || e.who)
  FROM expected_roles e ORDER BY e.step;
SELECT is((SELECT a."SessionUser" || '/' || a."CurrentUser" FROM "PaymentAuditLog" a
            WHERE a."TableName" = 'PaymentRefunds' AND a."ActionType" = 'RefundInitiated'
              AND a."PaymentId" = '40000000-0000-0000-0000-000000000001'),
          'pe_prov_login/' || (SELECT r.rolname::text FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
                                WHERE p.oid = 'payment.refund(uuid, numeric, text, uuid, text)'::regprocedure),
          'step 8: a refund through the SECURITY DEFINER function names the login and the function''s owner');
SELECT is((SELECT a."SessionUser" || '/' || a."CurrentUser" FROM "PaymentAuditLog" a
            WHERE a."TableName" = 'Payments' AND a."RowId" = :'created_id' AND a."ChainSeq" = 1),
          session_user::text || '/' || (SELECT r.rolname::text FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
                                         WHERE p.oid = 'payment.create(uuid, uuid, numeric, numeric, text, integer, text, uuid, text, jsonb)'::regprocedure),
          'step 9: a payment created through payment.create names the session and the function''s owner');
SELECT is((SELECT count(*)::int FROM "PaymentAuditLog" WHERE "SessionUser" NOT IN (session_user::text, 'pe_prov_login')),
          0, 'no row names a session user the session never had');
SELECT ok(payment.verify_audit(), 'the chains verify');

-- ---------------------------------------------------------------------------
-- item 3: a chain removed, wholly or in part, is noticed
-- (as the superuser, whom the append-only trigger lets through)
-- ---------------------------------------------------------------------------
SAVEPOINT tamper;
DELETE FROM "PaymentAuditLog" WHERE "PaymentId" = :'created_id';
DELETE FROM payment.audit_chain_heads WHERE chain_id = :'created_id';
SELECT ok(NOT payment.verify_audit(), 'a payment''s chain deleted with its head: verify_audit() is false');
SELECT ok(NOT payment.verify_audit(:'created_id'), 'and verify_audit(that payment) is false');
SELECT ok(payment.verify_audit('40000000-0000-0000-0000-000000000001'), 'another payment''s chain still verifies');
ROLLBACK TO SAVEPOINT tamper;

SAVEPOINT tamper;
DELETE FROM "PaymentAuditLog"
 WHERE "PaymentId" = '40000000-0000-0000-0000-000000000001'
   AND "ChainSeq" = (SELECT max("ChainSeq") FROM "PaymentAuditLog" WHERE "PaymentId" = '40000000-0000-0000-0000-000000000001');
SELECT ok(NOT payment.verify_audit('40000000-0000-0000-0000-000000000001'), 'the head row deleted, rows left: false');
ROLLBACK TO SAVEPOINT tamper;

SAVEPOINT tamper;
DELETE FROM "PaymentAuditLog" WHERE "PaymentId" = '40000000-0000-0000-0000-000000000001' AND "ChainSeq" <= 2;
SELECT ok(NOT payment.verify_audit('40000000-0000-0000-0000-000000000001'), 'rows deleted at the start of a chain: false');
ROLLBACK TO SAVEPOINT tamper;

SAVEPOINT tamper;
DELETE FROM "PaymentAuditLog" WHERE "PaymentId" IS NULL AND "RowId" = :'method_id';
DELETE FROM payment.audit_chain_heads WHERE chain_id = :'method_id';
SELECT ok(NOT payment.verify_audit(), 'a saved method''s chain deleted with its head: false');
SELECT ok(NOT payment.verify_audit(:'method_id'), 'and verify_audit(that method) is false');
ROLLBACK TO SAVEPOINT tamper;

SAVEPOINT tamper;
DELETE FROM "PaymentAuditLog" WHERE "PaymentId" = :'created_id';
SELECT ok(NOT payment.verify_audit(:'created_id'), 'a chain whose rows are gone but whose head remains: false');
ROLLBACK TO SAVEPOINT tamper;

SELECT ok(payment.verify_audit(), 'untouched, every chain verifies');

SELECT * FROM finish();
ROLLBACK;
DROP ROLE IF EXISTS pe_prov_login;
