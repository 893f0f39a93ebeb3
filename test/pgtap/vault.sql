--
-- test/pgtap/vault.sql — the vault's rules and privileges, with SQLSTATEs:
-- round trip, tampering, wrong context, unknown key, card-number refusals
-- that never echo the value, sealed columns, save_method, and who may call
-- what.
--
BEGIN;
CREATE EXTENSION payment_ext;
SELECT plan(30);

-- round trips and refusals
SELECT is(payment.decrypt(payment.encrypt('pi_tap', 'T.C:1'), 'T.C:1'), 'pi_tap', 'round trip');
SELECT matches(payment.encrypt('pi_tap', 'T.C:1'), '^pe1:k1:[A-Za-z0-9+/]+={0,2}$', 'sealed text form');
SELECT throws_ok($$SELECT payment.decrypt(payment.encrypt('pi_tap', 'T.C:1'), 'T.C:2')$$, 'PE002', 'sealed value does not open', 'wrong context: PE002');
SELECT throws_ok($$SELECT payment.decrypt('pe1:nokey:' || split_part(payment.encrypt('pi_tap', 'c'), ':', 3), 'c')$$, 'PE003', NULL, 'unknown key id: PE003');
-- (the byte really changes: a fresh nonce puts an 'A' there one time in 64)
SELECT throws_ok($$SELECT payment.decrypt(overlay(s PLACING CASE WHEN substr(s, 20, 1) = 'A' THEN 'B' ELSE 'A' END FROM 20 FOR 1), 'c') FROM (SELECT payment.encrypt('pi_tap', 'c') AS s) AS x$$, 'PE002', NULL, 'changed byte: PE002');
SELECT throws_ok($$SELECT payment.decrypt(left(payment.encrypt('pi_tap', 'c'), -4), 'c')$$, 'PE002', NULL, 'truncated: PE002');
SELECT is((SELECT count(*) FROM generate_series(1, 200) i
            WHERE payment.contains_card_number(payment.encrypt('pm_' || i, 'c'), true)), 0::bigint,
          'sealed values never look like card numbers');

-- card-number guard
SELECT throws_ok($$SELECT payment.encrypt('4242 4242 4242 4242', 'c')$$, 'PE001',
                 'value looks like a card number; card numbers are never accepted', 'a card number is refused: PE001');
CREATE FUNCTION pg_temp.refusal_text(q text) RETURNS text LANGUAGE plpgsql AS $f$
DECLARE m text; d text; h text;
BEGIN
	EXECUTE q;
	RETURN NULL;
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
	RETURN m || ' | ' || coalesce(d, '') || ' | ' || coalesce(h, '');
END $f$;
SELECT unalike(pg_temp.refusal_text($$SELECT payment.encrypt('card 4000056655665556', 'c')$$), '%4000056655665556%', 'the refusal does not echo the card number');
SELECT unalike(pg_temp.refusal_text($$SELECT payment.encrypt('card 4000 0566 5566 5556', 'c')$$), '%5566%', 'the refusal does not echo a formatted card number');
SELECT alike(pg_temp.refusal_text($$SELECT payment.encrypt('ok', '4242424242424242')$$), '%Argument "context"%', 'the refusal names the argument');
SELECT unalike(pg_temp.refusal_text($$SELECT payment.decrypt('pe1:k1:cGlfc2VjcmV0X3ZhbHVlX3RoYXRfbXVzdF9ub3RfbGVhaw==', 'c')$$),
               '%cGlfc2VjcmV0%', 'a sealed value is not echoed');
SELECT ok(payment.contains_card_number('{"deep": [{"x": {"y": "6011 1111 1111 1117"}}]}'::jsonb), 'jsonb at any depth');
SELECT ok(payment.contains_card_number('{"CVC": "123"}'::jsonb), 'a cvc key');
SELECT ok(NOT payment.contains_card_number('{"payment_id": "a0000000-0000-0000-0000-000000000001", "phone": "+44 7911 123456", "ts": 1700000000000, "amount": "28.00"}'::jsonb),
          'ordinary metadata passes');
SELECT ok(payment.contains_card_number('pm_4111111111111111', true) AND NOT payment.contains_card_number('pm_1NxWb2LkdIwHu7ixpm', true),
          'identifiers: glued card refused, Stripe id accepted');

-- sealed columns and save_method
INSERT INTO "Users" ("Id", "SceneName", "Email") VALUES ('10000000-0000-0000-0000-0000000000a1', 'Tap', 'tap@example.org');
SELECT throws_ok($$INSERT INTO "PaymentMethods" ("Id", "UserId", "EncryptedStripePaymentMethodId", "LastFourDigits", "CardBrand", "ExpiryMonth", "ExpiryYear")
                   VALUES ('50000000-0000-0000-0000-0000000000a1', '10000000-0000-0000-0000-0000000000a1', 'pm_plain', '4242', 'Visa', 1, 2099)$$,
                 '23514', NULL, 'an unsealed value in an Encrypted column is refused');
SELECT lives_ok($$SELECT payment.save_method('10000000-0000-0000-0000-0000000000a1', 'pm_tap_1', '4242', 'Visa', 1, 2099, true)$$, 'save_method');
SELECT lives_ok($$SELECT payment.save_method('10000000-0000-0000-0000-0000000000a1', 'pm_tap_2', '4444', 'MasterCard', 2, 2099, true)$$, 'save_method moves the default');
SELECT is((SELECT count(*) FROM "PaymentMethods" WHERE "UserId" = '10000000-0000-0000-0000-0000000000a1' AND "IsDefault"), 1::bigint, 'one default');
SELECT throws_ok($$SELECT payment.save_method('10000000-0000-0000-0000-0000000000a1', 'pm_tap_3', '4444', 'MasterCard', 1, 2001)$$, '23514', NULL, 'expired card refused');
SELECT throws_ok($$SELECT payment.save_method('10000000-0000-0000-0000-0000000000a1', 'pm_4242424242424242', '4242', 'Visa', 1, 2099)$$, 'PE001', NULL, 'pm_ + card number refused');

-- privileges
SELECT function_privs_are('payment', 'decrypt', ARRAY['text', 'text'], 'payment_app', ARRAY[]::text[], 'payment_app cannot decrypt');
SELECT function_privs_are('payment', 'decrypt', ARRAY['text', 'text'], 'payment_reporting', ARRAY[]::text[], 'payment_reporting cannot decrypt');
SELECT function_privs_are('payment', 'decrypt', ARRAY['text', 'text'], 'payment_worker', ARRAY['EXECUTE'], 'payment_worker may decrypt');
SELECT function_privs_are('payment', 'decrypt', ARRAY['text', 'text'], 'payment_admin', ARRAY['EXECUTE'], 'payment_admin may decrypt');
SELECT function_privs_are('payment', 'rotate_keys', ARRAY[]::text[], 'payment_app', ARRAY[]::text[], 'payment_app cannot rotate keys');
SELECT is((SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
            WHERE c.relname IN ('Payments', 'PaymentMethods', 'PaymentRefunds', 'PaymentFailures')
              AND a.attname LIKE 'Encrypted%' AND has_column_privilege('payment_reporting', c.oid, a.attname, 'SELECT')),
          0::bigint, 'payment_reporting cannot select any Encrypted column');
SET LOCAL ROLE payment_app;
SELECT throws_ok($$SELECT payment.decrypt('x', 'c')$$, '42501', NULL, 'as payment_app, decrypt is refused');
RESET ROLE;
SELECT is((SELECT setting FROM pg_settings WHERE name = 'payment_ext.keyring_file') ~ '^/', true, 'the keyring setting holds a path');

SELECT * FROM finish();
ROLLBACK;
