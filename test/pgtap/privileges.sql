--
-- test/pgtap/privileges.sql — the privilege matrix: for each of the
-- extension's roles, what it may and may not do, each refusal with its
-- SQLSTATE; and the rules every SECURITY DEFINER function follows.
--
\set ON_ERROR_STOP 1
\set QUIET 1
SET client_min_messages = warning;
CREATE EXTENSION payment_ext;
BEGIN;
SELECT plan(78);

-- data to act on, as the superuser
INSERT INTO "Users" ("Id", "SceneName", "Email") VALUES
	('10000000-0000-0000-0000-000000000001', 'Ash', 'ash@example.org'),
	('10000000-0000-0000-0000-000000000002', 'Birch', 'birch@example.org');
INSERT INTO "Events" ("Id", "Title", "StartDate", "EndDate", "PricingTiers") VALUES
	('20000000-0000-0000-0000-000000000001', 'Rope', now(), now(), '[{"name": "standard", "price": 40}]');
INSERT INTO "EventRegistrations" ("Id", "EventId", "UserId") VALUES
	('30000000-0000-0000-0000-000000000001', '20000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000001'),
	('30000000-0000-0000-0000-000000000002', '20000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000002');
INSERT INTO "Payments" ("Id", "EventRegistrationId", "UserId", "AmountValue", "Status", "PaymentMethodType",
                        "EncryptedStripePaymentIntentId")
VALUES ('40000000-0000-0000-0000-000000000001', '30000000-0000-0000-0000-000000000001',
        '10000000-0000-0000-0000-000000000001', 40, 1, 1,
        payment.encrypt('pi_priv_1', 'Payments.EncryptedStripePaymentIntentId:40000000-0000-0000-0000-000000000001'));

-- ---------------------------------------------------------------------------
-- the catalog: grants per role
-- ---------------------------------------------------------------------------
SELECT is((SELECT count(*)::int FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
            WHERE c.relname IN ('Payments', 'PaymentRefunds', 'PaymentFailures', 'PaymentMethods', 'Users')
              AND c.relnamespace = 'public'::regnamespace AND a.attname LIKE 'Encrypted%'
              AND (has_column_privilege('payment_reporting', c.oid, a.attname, 'SELECT')
                   OR (c.relname <> 'Users' AND has_column_privilege('payment_app', c.oid, a.attname, 'SELECT')))),
          0, 'reporting can select no sealed column, nor can the application in the payment tables');
SELECT is((SELECT count(*)::int FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
            WHERE c.relname IN ('Payments', 'PaymentRefunds', 'PaymentFailures', 'PaymentMethods')
              AND c.relnamespace = 'public'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
              AND a.attname NOT LIKE 'Encrypted%'
              AND NOT has_column_privilege('payment_reporting', c.oid, a.attname, 'SELECT')),
          0, 'reporting can select every column that is not sealed');
SELECT ok(NOT has_table_privilege('payment_app', '"Payments"', 'INSERT, UPDATE, DELETE, TRUNCATE'),
          'the application cannot write "Payments" directly');
SELECT ok(NOT has_table_privilege('payment_admin', '"Payments"', 'INSERT, DELETE, TRUNCATE'),
          'the administrator cannot insert, delete or truncate payments');
SELECT ok(NOT has_table_privilege('payment_reporting', '"PaymentAuditLog"', 'INSERT, UPDATE, DELETE, TRUNCATE'),
          'reporting cannot write the audit log');
SELECT ok(NOT has_table_privilege('payment_worker', 'payment.outbox', 'DELETE, TRUNCATE'),
          'the worker cannot delete or truncate outbox rows (it inserts only the settler''s lookups)');
SELECT ok(has_table_privilege('payment_worker', 'payment.outbox', 'SELECT, UPDATE'),
          'the worker reads and updates the outbox');
SELECT ok(NOT has_table_privilege('public', tbl, 'SELECT'), 'PUBLIC cannot read ' || tbl)
  FROM unnest(ARRAY['"Payments"', '"PaymentRefunds"', '"PaymentFailures"', '"PaymentMethods"',
                    '"PaymentAuditLog"', 'payment.outbox', 'payment.idempotency_keys', 'payment.intents']) tbl;
SELECT function_privs_are('payment', 'create',
                          ARRAY['uuid', 'uuid', 'numeric', 'numeric', 'text', 'integer', 'text', 'uuid', 'text', 'jsonb'],
                          'payment_app', ARRAY['EXECUTE'], 'the application creates payments');
SELECT function_privs_are('payment', 'refund', ARRAY['uuid', 'numeric', 'text', 'uuid', 'text'],
                          'payment_app', ARRAY[]::text[], 'the application does not refund');
SELECT function_privs_are('payment', 'refund', ARRAY['uuid', 'numeric', 'text', 'uuid', 'text'],
                          'payment_admin', ARRAY['EXECUTE'], 'the administrator refunds');
SELECT function_privs_are('payment', 'retry', ARRAY['uuid'], 'payment_app', ARRAY[]::text[], 'the application does not retry');
SELECT function_privs_are('payment', 'retry', ARRAY['uuid'], 'payment_admin', ARRAY['EXECUTE'], 'the administrator retries');
SELECT function_privs_are('payment', 'rotate_keys', ARRAY[]::text[], 'payment_app', ARRAY[]::text[], 'the application does not rotate keys');
SELECT function_privs_are('payment', 'rotate_keys', ARRAY[]::text[], 'payment_admin', ARRAY['EXECUTE'], 'the administrator rotates keys');
SELECT function_privs_are('payment', 'decrypt', ARRAY['text', 'text'], 'payment_reporting', ARRAY[]::text[], 'reporting does not decrypt');
SELECT function_privs_are('payment', 'decrypt', ARRAY['text', 'text'], 'payment_worker', ARRAY['EXECUTE'], 'the worker decrypts');

-- SECURITY DEFINER functions: search_path pinned, never callable by PUBLIC
SELECT is((SELECT array_agg(p.oid::regprocedure::text ORDER BY 1) FROM pg_proc p
            WHERE p.pronamespace = 'payment'::regnamespace AND p.prosecdef
              AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=pg_catalog, pg_temp')),
          NULL, 'every SECURITY DEFINER function pins search_path = pg_catalog, pg_temp');
SELECT is((SELECT array_agg(p.oid::regprocedure::text ORDER BY 1) FROM pg_proc p
            WHERE p.pronamespace = 'payment'::regnamespace AND p.prosecdef
              AND has_function_privilege('public', p.oid, 'EXECUTE')),
          NULL, 'no SECURITY DEFINER function is executable by PUBLIC');
SELECT cmp_ok((SELECT count(*)::int FROM pg_proc p WHERE p.pronamespace = 'payment'::regnamespace AND p.prosecdef),
              '>=', 4, 'create, retry, refund and save_method run as the owner');
SELECT is((SELECT array_agg(p.oid::regprocedure::text ORDER BY 1) FROM pg_proc p
            WHERE p.pronamespace = 'payment'::regnamespace AND p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'plpgsql')),
          NULL, 'no PL/pgSQL function in schema payment');

-- ---------------------------------------------------------------------------
-- the application
-- ---------------------------------------------------------------------------
SET LOCAL ROLE payment_app;
SET LOCAL app.current_user_id = '10000000-0000-0000-0000-000000000001';
SELECT is((SELECT count(*)::int FROM "Payments"), 1, 'app: reads its user''s payment');
SELECT throws_ok($$SELECT "EncryptedStripePaymentIntentId" FROM "Payments"$$, '42501', NULL, 'app: no sealed column');
SELECT throws_ok($$INSERT INTO "Payments" ("EventRegistrationId", "UserId", "AmountValue", "PaymentMethodType")
                   VALUES ('30000000-0000-0000-0000-000000000002', '10000000-0000-0000-0000-000000000002', 1, 1)$$,
                 '42501', NULL, 'app: no plain INSERT into "Payments"');
SELECT throws_ok($$UPDATE "Payments" SET "Metadata" = '{}'$$, '42501', NULL, 'app: no plain UPDATE of "Payments"');
SELECT throws_ok($$DELETE FROM "Payments"$$, '42501', NULL, 'app: no DELETE of payments');
SELECT throws_ok($$TRUNCATE "Payments"$$, '42501', NULL, 'app: no TRUNCATE');
SELECT throws_ok($$ALTER TABLE "Payments" DISABLE TRIGGER ALL$$, '42501', NULL, 'app: cannot disable triggers');
SELECT throws_ok($$ALTER TABLE "PaymentAuditLog" DISABLE TRIGGER USER$$, '42501', NULL, 'app: cannot disable the audit triggers');
SELECT throws_ok($$SET session_replication_role = replica$$, '42501', NULL, 'app: cannot SET session_replication_role');
SELECT throws_ok($$SELECT count(*) FROM "PaymentAuditLog"$$, '42501', NULL, 'app: cannot read the audit log');
SELECT throws_ok($$SELECT count(*) FROM payment.outbox$$, '42501', NULL, 'app: cannot read the outbox');
SELECT throws_ok($$SHOW payment_ext.keyring_file$$, '42501', NULL, 'app: cannot read the keyring path');
SELECT throws_ok($$SELECT payment.decrypt('x', 'y')$$, '42501', NULL, 'app: cannot decrypt');
SELECT throws_ok($$SELECT payment.refund('40000000-0000-0000-0000-000000000001', 1, 'app tries a refund', '10000000-0000-0000-0000-000000000001')$$,
                 '42501', NULL, 'app: cannot refund, whatever app.user_role says');
SELECT throws_ok($$SELECT payment.retry('40000000-0000-0000-0000-000000000001')$$, '42501', NULL, 'app: cannot retry');
SELECT throws_ok($$SELECT payment.rotate_keys()$$, '42501', NULL, 'app: cannot rotate keys');
SET LOCAL app.user_role = 'Admin';
SELECT throws_ok($$SELECT payment.refund('40000000-0000-0000-0000-000000000001', 1, 'app claims to be Admin', '10000000-0000-0000-0000-000000000001')$$,
                 '42501', NULL, 'app: app.user_role = Admin does not make it an administrator');
SELECT is((SELECT count(*)::int FROM "Payments"), 1, 'app: app.user_role = Admin only widens what it sees');
RESET app.user_role;
SELECT lives_ok($$SELECT payment.create('30000000-0000-0000-0000-000000000002', '10000000-0000-0000-0000-000000000002', 40)$$,
                'app: creates a payment through the function');
SELECT is(payment.quote('20000000-0000-0000-0000-000000000001', 'standard', 25), 30.00, 'app: quotes a price');
SELECT lives_ok($$INSERT INTO "Users" ("SceneName", "Email") VALUES ('Cedar', 'cedar@example.org')$$,
                'app: writes its own users table (created by the extension)');
RESET ROLE;

-- ---------------------------------------------------------------------------
-- reporting
-- ---------------------------------------------------------------------------
SET LOCAL ROLE payment_reporting;
SELECT is((SELECT count(*)::int FROM (SELECT "Id", "AmountValue", "Status" FROM "Payments") p), 2,
          'reporting: reads every payment''s plain columns');
SELECT throws_ok($$SELECT "EncryptedStripePaymentIntentId" FROM "Payments"$$, '42501', NULL, 'reporting: no sealed column');
SELECT throws_ok($$SELECT * FROM "PaymentMethods"$$, '42501', NULL, 'reporting: not even through SELECT *');
SELECT throws_ok($$SELECT "EncryptedLegalName" FROM "Users"$$, '42501', NULL, 'reporting: no sealed user column');
SELECT throws_ok($$SELECT payment.decrypt('x', 'y')$$, '42501', NULL, 'reporting: cannot decrypt');
SELECT throws_ok($$SELECT payment.create('30000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000001', 40)$$,
                 '42501', NULL, 'reporting: cannot create payments');
SELECT throws_ok($$UPDATE "Payments" SET "Metadata" = '{}'$$, '42501', NULL, 'reporting: cannot update');
SELECT throws_ok($$DELETE FROM "PaymentAuditLog"$$, '42501', NULL, 'reporting: cannot delete audit rows');
SELECT lives_ok($$SELECT count(*) FROM "PaymentAuditLog"$$, 'reporting: reads the audit log');
SELECT ok(payment.verify_audit(), 'reporting: verifies the audit chains');
RESET ROLE;

-- ---------------------------------------------------------------------------
-- the administrator
-- ---------------------------------------------------------------------------
SET LOCAL ROLE payment_admin;
SELECT lives_ok($$SELECT payment.refund('40000000-0000-0000-0000-000000000001', 5, 'Administrator refunds this', '10000000-0000-0000-0000-000000000001')$$,
                'admin: refunds');
SELECT is(payment.decrypt((SELECT "EncryptedStripePaymentIntentId" FROM "Payments" WHERE "Id" = '40000000-0000-0000-0000-000000000001'),
                          'Payments.EncryptedStripePaymentIntentId:40000000-0000-0000-0000-000000000001'),
          'pi_priv_1', 'admin: opens a sealed id');
SELECT throws_ok($$DELETE FROM "Payments"$$, '42501', NULL, 'admin: cannot delete payments');
SELECT throws_ok($$TRUNCATE "PaymentRefunds"$$, '42501', NULL, 'admin: cannot truncate refunds');
SELECT throws_ok($$ALTER TABLE "Payments" DISABLE TRIGGER "TR_Payments_State"$$, '42501', NULL, 'admin: cannot disable the state trigger');
SELECT throws_ok($$SET session_replication_role = replica$$, '42501', NULL, 'admin: cannot SET session_replication_role');
SELECT throws_ok($$UPDATE "Payments" SET "Status" = 0 WHERE "Id" = '40000000-0000-0000-0000-000000000001'$$,
                 '42501', NULL, 'admin: cannot write the status by hand');
SELECT throws_ok($$UPDATE "PaymentAuditLog" SET "ActionDescription" = 'rewritten'$$, '42501', NULL, 'admin: cannot rewrite the audit log');
RESET ROLE;

-- a mistaken grant does not open deletion: the triggers refuse it too
GRANT DELETE, TRUNCATE ON "Payments", "PaymentRefunds", "PaymentFailures" TO payment_admin;
SET LOCAL ROLE payment_admin;
SELECT throws_ok($$DELETE FROM "Payments" WHERE "Id" = '40000000-0000-0000-0000-000000000001'$$,
                 '42501', 'rows of "Payments" are financial records and are never deleted',
                 'admin with a DELETE grant: the trigger refuses');
SELECT throws_ok($$DELETE FROM "PaymentRefunds"$$, '42501', 'rows of "PaymentRefunds" are financial records and are never deleted',
                 'admin with a DELETE grant on refunds: refused');
SELECT throws_ok($$TRUNCATE "PaymentFailures"$$, '42501', 'rows of "PaymentFailures" are financial records and are never deleted',
                 'admin with a TRUNCATE grant: refused');
RESET ROLE;
REVOKE DELETE, TRUNCATE ON "Payments", "PaymentRefunds", "PaymentFailures" FROM payment_admin;

-- ---------------------------------------------------------------------------
-- the worker
-- ---------------------------------------------------------------------------
SET LOCAL ROLE payment_worker;
SELECT lives_ok($$SELECT count(*) FROM payment.outbox$$, 'worker: reads the outbox');
SELECT throws_ok($$DELETE FROM payment.outbox$$, '42501', NULL, 'worker: cannot delete outbox rows');
SELECT throws_ok($$SELECT payment.refund('40000000-0000-0000-0000-000000000001', 1, 'worker tries a refund', '10000000-0000-0000-0000-000000000001')$$,
                 '42501', NULL, 'worker: cannot refund');
SELECT throws_ok($$SELECT payment.create('30000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000001', 40)$$,
                 '42501', NULL, 'worker: cannot create payments');
SELECT throws_ok($$DELETE FROM "Payments"$$, '42501', NULL, 'worker: cannot delete payments');
RESET ROLE;

-- a role with none of the extension's roles
CREATE ROLE pe_test_nobody;
SET LOCAL ROLE pe_test_nobody;
SELECT throws_ok($$SELECT count(*) FROM "Payments"$$, '42501', NULL, 'nobody: cannot read payments');
SELECT throws_ok($$SELECT payment.create('30000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000001', 40)$$,
                 '42501', NULL, 'nobody: cannot create payments');
SELECT throws_ok($$SELECT payment.price(40, 25)$$, '42501', NULL, 'nobody: no usage of schema payment at all');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
