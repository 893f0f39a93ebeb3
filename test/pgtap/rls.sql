--
-- test/pgtap/rls.sql — row-level security as the spec's policy says: with
-- app.current_user_id set, a payment_app session sees that user's rows
-- only; app.user_role Admin or Teacher sees all; an unset, empty or
-- malformed app.current_user_id sees nothing, without an error.
--
\set ON_ERROR_STOP 1
\set QUIET 1
SET client_min_messages = warning;
CREATE EXTENSION payment_ext;
BEGIN;
SELECT plan(24);

INSERT INTO "Users" ("Id", "SceneName", "Email") VALUES
	('10000000-0000-0000-0000-000000000001', 'Ash', 'ash@example.org'),
	('10000000-0000-0000-0000-000000000002', 'Birch', 'birch@example.org');
INSERT INTO "Events" ("Id", "Title", "StartDate", "EndDate") VALUES
	('20000000-0000-0000-0000-000000000001', 'Rope', now(), now());
INSERT INTO "EventRegistrations" ("Id", "EventId", "UserId") VALUES
	('30000000-0000-0000-0000-000000000001', '20000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000001'),
	('30000000-0000-0000-0000-000000000002', '20000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000002');
INSERT INTO "Payments" ("Id", "EventRegistrationId", "UserId", "AmountValue", "Status", "PaymentMethodType") VALUES
	('40000000-0000-0000-0000-000000000001', '30000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000001', 40, 1, 1),
	('40000000-0000-0000-0000-000000000002', '30000000-0000-0000-0000-000000000002', '10000000-0000-0000-0000-000000000002', 30, 1, 1);
INSERT INTO "PaymentRefunds" ("OriginalPaymentId", "RefundAmountValue", "RefundReason", "ProcessedByUserId") VALUES
	('40000000-0000-0000-0000-000000000001', 5, 'refund of the first user', '10000000-0000-0000-0000-000000000002'),
	('40000000-0000-0000-0000-000000000002', 5, 'refund of the second user', '10000000-0000-0000-0000-000000000002');
INSERT INTO "PaymentMethods" ("UserId", "EncryptedStripePaymentMethodId", "LastFourDigits", "CardBrand", "ExpiryMonth", "ExpiryYear", "Id")
SELECT u, payment.encrypt('pm_rls_' || right(u::text, 1), 'PaymentMethods.EncryptedStripePaymentMethodId:' || m), '4242', 'Visa', 12, 2099, m
  FROM (VALUES ('10000000-0000-0000-0000-000000000001'::uuid, '50000000-0000-0000-0000-000000000001'::uuid),
               ('10000000-0000-0000-0000-000000000002', '50000000-0000-0000-0000-000000000002')) v(u, m);

SELECT ok((SELECT relrowsecurity FROM pg_class WHERE oid = '"Payments"'::regclass), 'row-level security is on for "Payments"');
SELECT policies_are('public', 'Payments', ARRAY['payment_access_policy', 'payment_staff_policy'],
                    'the spec''s payment_access_policy, and the staff policy');

SET LOCAL ROLE payment_app;
-- user 1
SET LOCAL app.current_user_id = '10000000-0000-0000-0000-000000000001';
SELECT results_eq($$SELECT "Id"::text FROM "Payments" ORDER BY 1$$, ARRAY['40000000-0000-0000-0000-000000000001'], 'user 1 sees only its payment');
SELECT results_eq($$SELECT "RefundReason" FROM "PaymentRefunds" ORDER BY 1$$, ARRAY['refund of the first user'], 'user 1 sees only its refunds');
SELECT results_eq($$SELECT "Id"::text FROM "PaymentMethods" ORDER BY 1$$, ARRAY['50000000-0000-0000-0000-000000000001'], 'user 1 sees only its saved methods');
SELECT is((SELECT count(*)::int FROM "Payments" WHERE "UserId" = '10000000-0000-0000-0000-000000000002'), 0,
          'user 1 asking for user 2''s payments gets none');
-- spec query 3, user history, for user 2 while user 1 is set: nothing
SELECT is((SELECT count(*)::int FROM "Payments" p LEFT JOIN "Events" e ON p."EventRegistrationId" = e."Id"
            WHERE p."UserId" = '10000000-0000-0000-0000-000000000002'), 0, 'spec query 3 for another user returns nothing');
-- user 2
SET LOCAL app.current_user_id = '10000000-0000-0000-0000-000000000002';
SELECT results_eq($$SELECT "Id"::text FROM "Payments" ORDER BY 1$$, ARRAY['40000000-0000-0000-0000-000000000002'], 'user 2 sees only its payment');
SELECT results_eq($$SELECT "RefundReason" FROM "PaymentRefunds" ORDER BY 1$$, ARRAY['refund of the second user'], 'user 2 sees only its refunds');
-- Admin and Teacher see all
SET LOCAL app.user_role = 'Admin';
SELECT is((SELECT count(*)::int FROM "Payments"), 2, 'Admin sees both payments');
SELECT is((SELECT count(*)::int FROM "PaymentRefunds"), 2, 'Admin sees both refunds');
SET LOCAL app.user_role = 'Teacher';
SELECT is((SELECT count(*)::int FROM "Payments"), 2, 'Teacher sees both payments');
SET LOCAL app.user_role = 'admin';
SELECT is((SELECT count(*)::int FROM "Payments"), 1, 'role names are exact: "admin" is not Admin');
SET LOCAL app.user_role = '';
-- unset, empty and malformed: nothing, and no error
SET LOCAL app.current_user_id = '';
SELECT is((SELECT count(*)::int FROM "Payments"), 0, 'an empty app.current_user_id sees nothing');
SELECT lives_ok($$SELECT "Id", "AmountValue", "Status" FROM "Payments"$$, 'an empty app.current_user_id raises no error');
SET LOCAL app.current_user_id = 'not-a-uuid';
SELECT is((SELECT count(*)::int FROM "Payments"), 0, 'a malformed app.current_user_id sees nothing');
SELECT lives_ok($$SELECT "Id" FROM "PaymentRefunds"$$, 'a malformed app.current_user_id raises no error on refunds');
SET LOCAL app.current_user_id = '10000000-0000-0000-0000-00000000000';
SELECT is((SELECT count(*)::int FROM "Payments"), 0, 'a uuid one digit short sees nothing');
SET LOCAL app.current_user_id = $$10000000-0000-0000-0000-000000000001' OR '1'='1$$;
SELECT is((SELECT count(*)::int FROM "Payments"), 0, 'an injection attempt in the setting sees nothing');
RESET app.current_user_id;
SELECT is((SELECT count(*)::int FROM "Payments"), 0, 'a reset app.current_user_id sees nothing');
-- braces and upper case are uuids too
SET LOCAL app.current_user_id = '{10000000-0000-0000-0000-000000000001}';
SELECT is((SELECT count(*)::int FROM "Payments"), 1, 'a braced uuid is that user');
RESET ROLE;

-- the plan keeps the index: the policy adds a filter, not a sequential scan
CREATE FUNCTION payment_plan_lines() RETURNS SETOF text LANGUAGE plpgsql AS $f$
BEGIN
	RETURN QUERY EXECUTE 'EXPLAIN SELECT "Id" FROM "Payments" WHERE "UserId" = ''10000000-0000-0000-0000-000000000001'' ORDER BY "CreatedAt" DESC LIMIT 50';
END
$f$;
GRANT EXECUTE ON FUNCTION payment_plan_lines() TO payment_app;
SET LOCAL enable_seqscan = off;
SET LOCAL ROLE payment_app;
SET LOCAL app.current_user_id = '10000000-0000-0000-0000-000000000001';
SELECT ok((SELECT string_agg(line, ' ') FROM (SELECT * FROM payment_plan_lines()) x(line)) ~ 'IX_Payments_UserId',
          'the user-history query under RLS uses "IX_Payments_UserId"');
RESET ROLE;

-- the extension's own roles see every row
SET LOCAL ROLE payment_reporting;
SELECT is((SELECT count(*)::int FROM (SELECT "Id" FROM "Payments") p), 2, 'reporting sees every payment');
RESET ROLE;
SET LOCAL ROLE payment_admin;
SELECT is((SELECT count(*)::int FROM "Payments"), 2, 'the administrator sees every payment');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
