--
-- vault: sealing (round trips, formats, every tamper case, wrong context,
-- unknown key), the card-number guard (true and false positives), sealed
-- columns, payment.save_method, rotation bookkeeping and privileges.  No
-- ciphertext or nonce is printed: only booleans, counts and SQLSTATEs.
-- Keyring files (missing, readable, in the data directory, reload, wrong
-- key, encrypted) are tested by test/t/vault_keyring.sh, rotation under
-- concurrent writes by test/t/vault_rotate.sh.
--
\set VERBOSITY terse

-- opens(sealed, context): 'opened' or the SQLSTATE of the refusal, with a
-- check that the message and detail never carry the value (a test helper)
CREATE FUNCTION opens(sealed text, context text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	msg text;
	det text;
BEGIN
	PERFORM payment.decrypt(sealed, context);
	RETURN 'opened';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
	-- the text after "pe1:kN:" (random base64) must not appear
	IF length(sealed) >= 13 AND position(substr(sealed, 8) IN msg || coalesce(det, '')) > 0 THEN
		RETURN 'LEAK';
	END IF;
	RETURN SQLSTATE;
END
$$;

-- ---------------------------------------------------------------------------
-- format and round trips
-- ---------------------------------------------------------------------------
SELECT payment.encrypt('pi_3MtwBwLkdIwHu7ix28a3tqPa', 'Payments.EncryptedStripePaymentIntentId:x')
       ~ '^pe1:k1:[A-Za-z0-9+/]+={0,2}$' AS format_ok;
-- base64 of 12-byte nonce + 27 bytes + 16-byte tag = 55 bytes -> 76 characters
SELECT length(split_part(payment.encrypt('pi_3MtwBwLkdIwHu7ix28a3tqPa', 'c'), ':', 3)) AS b64_len;
SELECT length(decode(split_part(payment.encrypt('pi_3MtwBwLkdIwHu7ix28a3tqPa', 'c'), ':', 3), 'base64')) AS raw_len;
SELECT v, payment.decrypt(payment.encrypt(v, 'ctx:' || v), 'ctx:' || v) = v AS round_trip
  FROM unnest(ARRAY['pi_3MtwBwLkdIwHu7ix28a3tqPa', 'pm_1NxWb2LkdIwHu7ixpm', 'cus_NffrFeUfNV2Hib', 're_1Nispe2eZvKYlo2Cd31jOCgZ',
                    '', 'x', 'Grüße, 東京 ✓', '{"error": {"code": "card_declined"}}']) v
 ORDER BY v;
-- default context, long values
SELECT payment.decrypt(payment.encrypt('pi_default')) = 'pi_default' AS default_context;
SELECT payment.decrypt(payment.encrypt(repeat('ab', 50000), 'long'), 'long') = repeat('ab', 50000) AS long_value;
-- NULL in, NULL out
SELECT payment.encrypt(NULL, 'c') IS NULL AND payment.decrypt(NULL, 'c') IS NULL AS strict;
-- a fresh nonce every time: 2000 seals of one value are 2000 different texts
SELECT count(DISTINCT payment.encrypt('pm_same', 'same')) AS distinct_seals FROM generate_series(1, 2000);
SELECT count(DISTINCT substr(decode(split_part(payment.encrypt('pm_same', 'same'), ':', 3), 'base64'), 1, 12)) AS distinct_nonces
  FROM generate_series(1, 2000);

-- ---------------------------------------------------------------------------
-- wrong context, unknown key, malformed
-- ---------------------------------------------------------------------------
SELECT payment.encrypt('pm_1NxWb2LkdIwHu7ixpm', 'PaymentMethods.EncryptedStripePaymentMethodId:a') AS s \gset
SELECT opens(:'s', 'PaymentMethods.EncryptedStripePaymentMethodId:a') AS right_context;
SELECT opens(:'s', 'PaymentMethods.EncryptedStripePaymentMethodId:b') AS other_row;
SELECT opens(:'s', 'Payments.EncryptedStripeCustomerId:a') AS other_column;
SELECT opens(:'s', '') AS empty_context;
SELECT opens('pe1:k9:' || split_part(:'s', ':', 3), 'PaymentMethods.EncryptedStripePaymentMethodId:a') AS unknown_key;
SELECT try($q$SELECT payment.decrypt('pe1:k9:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', 'c')$q$);  -- unknown key, message
SELECT try($q$SELECT payment.decrypt('pe1:k1:AAAA', 'c')$q$);  -- too short
SELECT opens(v, 'c') AS malformed
  FROM unnest(ARRAY['', 'pm_1NxWb2LkdIwHu7ixpm', 'pe1:', 'pe1:k1', 'pe1:k1:', 'pe2:k1:AAAA', 'pe1::AAAA', 'pe1:k 1:AAAA',
                    'pe1:' || repeat('k', 33) || ':AAAA', 'pe1:k1:' || split_part(:'s', ':', 3) || ' ']) v
 ORDER BY 1;

-- ---------------------------------------------------------------------------
-- every tamper case: none of them opens, none of them leaks
-- ---------------------------------------------------------------------------
-- each character replaced in turn ('A' by 'B', anything else by 'A')
SELECT count(*) AS positions, count(*) FILTER (WHERE r = 'opened') AS opened,
       string_agg(DISTINCT r, ',' ORDER BY r) AS sqlstates
  FROM (SELECT opens(overlay(:'s' PLACING CASE WHEN substr(:'s', i, 1) = 'A' THEN 'B' ELSE 'A' END FROM i FOR 1),
                     'PaymentMethods.EncryptedStripePaymentMethodId:a') AS r
          FROM generate_series(1, length(:'s')) i) t;
-- each character's lowest bit flipped in turn
SELECT count(*) AS positions, count(*) FILTER (WHERE r = 'opened') AS opened,
       string_agg(DISTINCT r, ',' ORDER BY r) AS sqlstates
  FROM (SELECT opens(convert_from(set_byte(convert_to(:'s', 'UTF8'), i, get_byte(convert_to(:'s', 'UTF8'), i) # 1), 'UTF8'),
                     'PaymentMethods.EncryptedStripePaymentMethodId:a') AS r
          FROM generate_series(0, length(:'s') - 1) i) t;
-- each bit of nonce, ciphertext and tag flipped in turn (re-encoded canonically)
SELECT count(*) AS bits, count(*) FILTER (WHERE r = 'opened') AS opened,
       string_agg(DISTINCT r, ',' ORDER BY r) AS sqlstates
  FROM (SELECT opens('pe1:k1:' || translate(encode(set_bit(raw, b, 1 - get_bit(raw, b)), 'base64'), E'\n', ''),
                     'PaymentMethods.EncryptedStripePaymentMethodId:a') AS r
          FROM (SELECT decode(split_part(:'s', ':', 3), 'base64') AS raw) d,
               generate_series(0, 8 * length(decode(split_part(:'s', ':', 3), 'base64')) - 1) b) t;
-- truncated to every shorter length, and extended
SELECT count(*) AS lengths, count(*) FILTER (WHERE r = 'opened') AS opened,
       string_agg(DISTINCT r, ',' ORDER BY r) AS sqlstates
  FROM (SELECT opens(left(:'s', n), 'PaymentMethods.EncryptedStripePaymentMethodId:a') AS r
          FROM generate_series(0, length(:'s') - 1) n) t;
SELECT opens(:'s' || x, 'PaymentMethods.EncryptedStripePaymentMethodId:a') AS extended
  FROM unnest(ARRAY['A', 'AAAA', '=', E'\n']) x ORDER BY 1;
-- nonce, ciphertext and tag from two different seals spliced together
SELECT payment.encrypt('pm_1NxWb2LkdIwHu7ixpm', 'PaymentMethods.EncryptedStripePaymentMethodId:a') AS s2 \gset
SELECT opens('pe1:k1:' || translate(encode(substr(decode(split_part(:'s', ':', 3), 'base64'), 1, 12)
                                           || substr(decode(split_part(:'s2', ':', 3), 'base64'), 13), 'base64'), E'\n', ''),
             'PaymentMethods.EncryptedStripePaymentMethodId:a') AS spliced_nonce;
-- the untouched value still opens
SELECT opens(:'s', 'PaymentMethods.EncryptedStripePaymentMethodId:a') AS untouched;

-- ---------------------------------------------------------------------------
-- card-number guard: true positives
-- ---------------------------------------------------------------------------
-- Stripe's test cards (docs.stripe.com/testing), contiguous, in a sentence,
-- and at their brand's grouping with spaces and with dashes
SELECT c, payment.contains_card_number(c) AS bare,
       payment.contains_card_number('card ' || c || ' please') AS in_text,
       payment.contains_card_number(CASE length(c)
           WHEN 15 THEN substr(c, 1, 4) || ' ' || substr(c, 5, 6) || ' ' || substr(c, 11)
           WHEN 14 THEN substr(c, 1, 4) || ' ' || substr(c, 5, 6) || ' ' || substr(c, 11)
           ELSE regexp_replace(c, '(\d{4})(?=\d)', '\1 ', 'g') END) AS spaced,
       payment.contains_card_number(regexp_replace(c, '(\d{4})(?=\d)', '\1-', 'g')) AS dashed_4s,
       payment.contains_card_number('pm_' || c, true) AS glued_identifier
  FROM unnest(ARRAY['4242424242424242', '4000056655665556', '5555555555554444', '2223003122003222', '5200828282828210',
                    '378282246310005', '371449635398431', '6011111111111117', '6011000990139424', '3056930009020004',
                    '36227206271667', '3566002020360505', '6200000000000005']) c
 ORDER BY c;
SELECT v, payment.contains_card_number(v) AS refused
  FROM unnest(ARRAY[
       'my card is 4242 4242 4242 4242.',             -- end of a sentence
       '4242-4242-4242-4242',                         -- dashes
       'amex 3782-822463-10005 thanks',               -- 4-6-5
       'diners 3622 720627 1667',                     -- 4-6-4
       '(4242424242424242)',                          -- brackets
       '４２４２４２４２４２４２４２４２',            -- fullwidth digits (NFKC)
       E'4242\u00a04242\u00a04242\u00a04242',         -- no-break spaces (NFKC)
       E'4242\u20134242\u20134242\u20134242',         -- en dashes
       '12 4242424242424242'                          -- after another number
       ]) v
 ORDER BY v;
-- identifier arguments: glued to any prefix or suffix
SELECT v, payment.contains_card_number(v, true) AS refused_as_identifier, payment.contains_card_number(v) AS refused_as_text
  FROM unnest(ARRAY['pm_4111111111111111', 'pi_4242424242424242', 'x4242424242424242y', 'tok_visa_5555555555554444']) v
 ORDER BY v;
-- jsonb, at any depth, keys too, numbers too; card security codes
SELECT d::text, payment.contains_card_number(d) AS refused
  FROM unnest(ARRAY['{"note": "4242 4242 4242 4242"}', '{"a": {"b": [1, {"c": "pan 4000056655665556"}]}}',
                    '{"4242424242424242": true}', '{"card": 4242424242424242}', '[[["378282246310005"]]]',
                    '{"cvc": "123"}', '{"card": {"CVV2": 1}}', '{"card_security_code": "1"}']::jsonb[]) d
 ORDER BY 1;
-- the refusal names the argument, never the value
SELECT try($q$SELECT payment.encrypt('card 4242 4242 4242 4242', 'c')$q$);
SELECT try($q$SELECT payment.encrypt('ok', 'Payments.x:4000056655665556')$q$);

-- ---------------------------------------------------------------------------
-- card-number guard: false positives (none)
-- ---------------------------------------------------------------------------
SELECT count(*) FILTER (WHERE payment.contains_card_number(gen_random_uuid()::text, true)) AS uuids_refused
  FROM generate_series(1, 5000);
SELECT count(*) FILTER (WHERE payment.contains_card_number(
           (1500000000000 + (random() * 300000000000)::bigint)::text)) AS ms_timestamps_refused
  FROM generate_series(1, 5000);
SELECT count(*) FILTER (WHERE payment.contains_card_number(
           '+44 7' || lpad((random() * 999)::int::text, 3, '0') || ' ' || lpad((random() * 999999)::int::text, 6, '0'))) AS uk_phones_refused
  FROM generate_series(1, 5000);
SELECT v, payment.contains_card_number(v) AS as_text, payment.contains_card_number(v, true) AS as_identifier
  FROM unnest(ARRAY[
       'pi_3MtwBwLkdIwHu7ix28a3tqPa', 'pm_1NxWb2LkdIwHu7ixpm', 'cus_NffrFeUfNV2Hib', 'ch_3MmlLrLkdIwHu7ix0snN0B15',
       'a0000000-0000-0000-0000-000000000001', '123e4567-e89b-12d3-a456-426614174000',
       '28.00', '1234567.89', '4242.42', '2024-01-15 10:30:00+00', '2024-01-15T10:30:00.123456Z', '1700000000000',
       '1705312200123', '+44 7911 123456', '+44 20 7946 0958', '+1 (415) 555-0100', '+1-415-555-0100',
       'refund for order 123456 of 2024-01-15, 2 tickets at 40.00',
       '42424242424242424242', '4242 4242 4242', '4111 1111 1111 1112'
       ]) v
 ORDER BY v;
-- joined to other text by a '.' (a version, a decimal): not a card in free
-- text; the identifier rule refuses any lone 13-19 digit run that is one
SELECT v, payment.contains_card_number(v) AS as_text, payment.contains_card_number(v, true) AS as_identifier
  FROM unnest(ARRAY['v1.4242424242424242', '4242424242424242.5']) v
 ORDER BY v;
SELECT payment.contains_card_number('{"amount": 2800, "payment_id": "a0000000-0000-0000-0000-000000000001", "source": "web", "ts": 1700000000000}'::jsonb) AS metadata_refused;

-- ---------------------------------------------------------------------------
-- sealed columns
-- ---------------------------------------------------------------------------
INSERT INTO "Users" ("Id", "SceneName", "Email") VALUES
	('1a000000-0000-0000-0000-000000000001', 'Vault Rowan', 'vault.rowan@example.org'),
	('1a000000-0000-0000-0000-000000000002', 'Vault Sage', 'vault.sage@example.org');
INSERT INTO "Events" ("Id", "Title", "StartDate", "EndDate") VALUES
	('2a000000-0000-0000-0000-000000000001', 'Rope Basics', '2026-12-01 18:00+00', '2026-12-01 21:00+00');
INSERT INTO "EventRegistrations" ("Id", "EventId", "UserId") VALUES
	('3a000000-0000-0000-0000-000000000001', '2a000000-0000-0000-0000-000000000001', '1a000000-0000-0000-0000-000000000001'),
	('3a000000-0000-0000-0000-000000000002', '2a000000-0000-0000-0000-000000000001', '1a000000-0000-0000-0000-000000000002');
INSERT INTO "Payments" ("Id", "EventRegistrationId", "UserId", "AmountValue", "PaymentMethodType", "EncryptedStripePaymentIntentId")
	VALUES ('4a000000-0000-0000-0000-000000000001', '3a000000-0000-0000-0000-000000000001', '1a000000-0000-0000-0000-000000000001',
	        28.00, 1, payment.encrypt('pi_one', 'Payments.EncryptedStripePaymentIntentId:4a000000-0000-0000-0000-000000000001'));
SELECT try($q$INSERT INTO "Payments" ("Id", "EventRegistrationId", "UserId", "AmountValue", "PaymentMethodType", "EncryptedStripePaymentIntentId")
	VALUES ('4a000000-0000-0000-0000-000000000002', '3a000000-0000-0000-0000-000000000002', '1a000000-0000-0000-0000-000000000002',
	        40.00, 1, 'pi_plain')$q$);  -- not sealed
SELECT try($q$INSERT INTO "Payments" ("Id", "EventRegistrationId", "UserId", "AmountValue", "PaymentMethodType", "EncryptedStripePaymentIntentId")
	VALUES ('4a000000-0000-0000-0000-000000000002', '3a000000-0000-0000-0000-000000000002', '1a000000-0000-0000-0000-000000000002',
	        40.00, 1, payment.encrypt('pi_two', 'Payments.EncryptedStripePaymentIntentId:4a000000-0000-0000-0000-000000000001'))$q$);  -- sealed for another row
SELECT try($q$INSERT INTO "Payments" ("Id", "EventRegistrationId", "UserId", "AmountValue", "PaymentMethodType", "EncryptedStripeCustomerId")
	VALUES ('4a000000-0000-0000-0000-000000000002', '3a000000-0000-0000-0000-000000000002', '1a000000-0000-0000-0000-000000000002',
	        40.00, 1, payment.encrypt('cus_two', 'Payments.EncryptedStripePaymentIntentId:4a000000-0000-0000-0000-000000000002'))$q$);  -- sealed for another column
SELECT try($q$INSERT INTO "Payments" ("Id", "EventRegistrationId", "UserId", "AmountValue", "PaymentMethodType", "EncryptedStripeCustomerId")
	VALUES ('4a000000-0000-0000-0000-000000000002', '3a000000-0000-0000-0000-000000000002', '1a000000-0000-0000-0000-000000000002',
	        40.00, 1, payment.encrypt('cus_two', 'Payments.EncryptedStripeCustomerId:4a000000-0000-0000-0000-000000000002'))$q$);  -- right
-- copying a sealed value into another row is refused; an unchanged value on
-- UPDATE is not checked again; NULL is allowed
SELECT try($q$UPDATE "Payments" SET "EncryptedStripeCustomerId" =
	(SELECT "EncryptedStripeCustomerId" FROM "Payments" WHERE "Id" = '4a000000-0000-0000-0000-000000000002')
	WHERE "Id" = '4a000000-0000-0000-0000-000000000001'$q$);  -- copied from another row
SELECT try($q$UPDATE "Payments" SET "Metadata" = '{"k": "v"}' WHERE "Id" = '4a000000-0000-0000-0000-000000000001'$q$);  -- unchanged sealed value
SELECT try($q$UPDATE "Payments" SET "EncryptedStripePaymentIntentId" = NULL WHERE "Id" = '4a000000-0000-0000-0000-000000000002'$q$);  -- NULL
SELECT try($q$UPDATE "Payments" SET "EncryptedStripeRefundId" = 're_plain' WHERE "Id" = '4a000000-0000-0000-0000-000000000002'$q$);  -- refund id not sealed
SELECT try($q$INSERT INTO "PaymentFailures" ("PaymentId", "FailureCode", "FailureMessage", "EncryptedStripeErrorDetails")
	VALUES ('4a000000-0000-0000-0000-000000000001', 'card_declined', 'declined', '{"code": "card_declined"}')$q$);  -- error details not sealed
UPDATE "Payments" SET "Status" = 1 WHERE "Id" = '4a000000-0000-0000-0000-000000000001';  -- refundable
SELECT try($q$INSERT INTO "PaymentRefunds" ("OriginalPaymentId", "RefundAmountValue", "RefundReason", "ProcessedByUserId", "EncryptedStripeRefundId")
	VALUES ('4a000000-0000-0000-0000-000000000001', 1, 'customer asked for it', '1a000000-0000-0000-0000-000000000001', 're_plain')$q$);  -- refund id not sealed
-- the triggers are ALWAYS: replica mode does not switch them off
SET session_replication_role = replica;
SELECT try($q$UPDATE "Payments" SET "EncryptedStripeRefundId" = 're_plain' WHERE "Id" = '4a000000-0000-0000-0000-000000000002'$q$);  -- in replica mode
RESET session_replication_role;
SELECT tgrelid::regclass AS "table", tgname, tgenabled
  FROM pg_trigger WHERE tgname LIKE 'TR_%_Sealed' ORDER BY 1;
SELECT "Id", payment.decrypt("EncryptedStripePaymentIntentId", 'Payments.EncryptedStripePaymentIntentId:' || "Id") AS intent,
       payment.decrypt("EncryptedStripeCustomerId", 'Payments.EncryptedStripeCustomerId:' || "Id") AS customer
  FROM "Payments" WHERE "Id"::text LIKE '4a%' ORDER BY "Id";

-- ---------------------------------------------------------------------------
-- payment.save_method
-- ---------------------------------------------------------------------------
SELECT payment.save_method('1a000000-0000-0000-0000-000000000001', 'pm_1NxWb2LkdIwHu7ixAAAA', '4242', 'Visa', 12, 2099) AS m1 \gset
SELECT payment.save_method('1a000000-0000-0000-0000-000000000001', 'pm_1NxWb2LkdIwHu7ixBBBB', '4444', 'MasterCard', 1, 2098, make_default => true) AS m2 \gset
SELECT payment.save_method(user_id => '1a000000-0000-0000-0000-000000000001', stripe_payment_method => 'pm_1NxWb2LkdIwHu7ixCCCC',
                           last_four => '0005', card_brand => 'American Express', expiry_month => 6, expiry_year => 2097,
                           make_default => true) AS m3 \gset
-- the default moved; the sealed id opens only under its own row
SELECT "LastFourDigits", "CardBrand", "IsDefault",
       payment.decrypt("EncryptedStripePaymentMethodId", 'PaymentMethods.EncryptedStripePaymentMethodId:' || "Id") AS stripe_id
  FROM "PaymentMethods" WHERE "UserId" = '1a000000-0000-0000-0000-000000000001' ORDER BY "LastFourDigits";
SELECT opens("EncryptedStripePaymentMethodId", 'PaymentMethods.EncryptedStripePaymentMethodId:' || :'m1') AS m3_under_m1_context
  FROM "PaymentMethods" WHERE "Id" = :'m3';
-- the current month is valid, last month is not
SELECT try(format($q$SELECT payment.save_method('1a000000-0000-0000-0000-000000000002', 'pm_now', '1111', 'Visa', %s, %s)$q$,
                  extract(month FROM now())::int, extract(year FROM now())::int));
SELECT split_part(try(format($q$SELECT payment.save_method('1a000000-0000-0000-0000-000000000002', 'pm_last', '1111', 'Visa', %s, %s)$q$,
                  extract(month FROM now() - interval '1 month')::int, extract(year FROM now() - interval '1 month')::int)), ':', 1) AS expired;  -- expired
SELECT try($q$SELECT payment.save_method('1a000000-0000-0000-0000-000000000002', 'pm_4242424242424242', '4242', 'Visa', 1, 2099)$q$);  -- card number glued to pm_
SELECT try($q$SELECT payment.save_method('1a000000-0000-0000-0000-000000000002', '4242 4242 4242 4242', '4242', 'Visa', 1, 2099)$q$);  -- card number
SELECT try($q$SELECT payment.save_method('1a000000-0000-0000-0000-000000000002', 'pm_x y', '4242', 'Visa', 1, 2099)$q$);  -- not an id
SELECT try($q$SELECT payment.save_method('1a000000-0000-0000-0000-000000000002', 'pm_x', '4242', 'Visa', 13, 2099)$q$);  -- month
SELECT try($q$SELECT payment.save_method('1a000000-0000-0000-0000-000000000002', NULL, '4242', 'Visa', 1, 2099)$q$);  -- NULL id
SELECT try($q$SELECT payment.save_method('1a000000-0000-0000-0000-000000000002', 'pm_x', '42a2', 'Visa', 1, 2099)$q$);  -- last four
SELECT try($q$SELECT payment.save_method('1a000000-0000-0000-0000-0000000000ff', 'pm_x', '4242', 'Visa', 1, 2099)$q$);  -- unknown user
SELECT count(*) AS user2_methods FROM "PaymentMethods" WHERE "UserId" = '1a000000-0000-0000-0000-000000000002';
-- make_default on a user with an inactive old default and without one
UPDATE "PaymentMethods" SET "IsActive" = false WHERE "Id" = :'m3';
SELECT payment.save_method('1a000000-0000-0000-0000-000000000001', 'pm_1NxWb2LkdIwHu7ixDDDD', '1881', 'Visa', 2, 2096, true) IS NOT NULL AS saved;
SELECT payment.save_method('1a000000-0000-0000-0000-000000000002', 'pm_1NxWb2LkdIwHu7ixEEEE', '1117', 'Discover', 2, 2096, true) IS NOT NULL AS saved;
SELECT "UserId", "LastFourDigits", "IsDefault", "IsActive" FROM "PaymentMethods" WHERE "UserId"::text LIKE '1a%' ORDER BY "UserId", "LastFourDigits";

-- ---------------------------------------------------------------------------
-- keys: usage, rotation with a single key re-seals nothing
-- ---------------------------------------------------------------------------
SELECT key_id, "position", newest FROM payment.keyring_keys() ORDER BY "position";
SELECT key_id, sealed_values > 0 AS seals_values, in_keyring, newest FROM payment.key_usage ORDER BY key_id;
SELECT payment.rotate_keys() AS resealed;
SELECT count(*) AS rotation_audit_rows FROM "PaymentAuditLog" WHERE "ActionDescription" LIKE 'key rotation:%';
-- every Encrypted... column of the four tables is counted by payment.key_usage
SELECT c.relname, a.attname,
       position(quote_ident(a.attname) IN pg_get_viewdef('payment.key_usage'::regclass)) > 0 AS in_key_usage
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
 WHERE c.relname IN ('Payments', 'PaymentMethods', 'PaymentRefunds', 'PaymentFailures')
   AND a.attname LIKE 'Encrypted%' AND NOT a.attisdropped
 ORDER BY 1, 2;

-- ---------------------------------------------------------------------------
-- privileges
-- ---------------------------------------------------------------------------
SELECT r AS role,
       has_function_privilege(r, 'payment.encrypt(text, text)', 'EXECUTE') AS encrypt,
       has_function_privilege(r, 'payment.decrypt(text, text)', 'EXECUTE') AS decrypt,
       has_function_privilege(r, 'payment.rotate_keys()', 'EXECUTE') AS rotate,
       has_function_privilege(r, 'payment.save_method(uuid, text, text, text, integer, integer, boolean)', 'EXECUTE') AS save_method,
       has_table_privilege(r, 'payment.key_usage', 'SELECT') AS key_usage
  FROM unnest(ARRAY['payment_app', 'payment_admin', 'payment_reporting', 'payment_worker', 'public']) r
 ORDER BY 1;
SELECT count(*) FILTER (WHERE has_column_privilege('payment_reporting', c.oid, a.attname, 'SELECT')) AS reporting_can_read_sealed
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
 WHERE c.relname IN ('Payments', 'PaymentMethods', 'PaymentRefunds', 'PaymentFailures', 'Users')
   AND a.attname LIKE 'Encrypted%';
SELECT payment.encrypt('pi_priv', 'c') AS sp \gset
SET ROLE payment_app;
SELECT try($q$SELECT payment.decrypt('x', 'c')$q$);  -- app may not decrypt
SELECT payment.encrypt('pi_app', 'c') IS NOT NULL AS app_may_encrypt;
SELECT try('SHOW payment_ext.keyring_file');  -- the path is superuser-only
RESET ROLE;
SET ROLE payment_reporting;
SELECT try($q$SELECT payment.decrypt('x', 'c')$q$);  -- reporting may not decrypt
SELECT count(*) > 0 AS reporting_sees_key_usage FROM payment.key_usage;
RESET ROLE;
SET ROLE payment_worker;
SELECT payment.decrypt(:'sp', 'c') AS worker_opens;
RESET ROLE;
SET ROLE payment_admin;
SELECT payment.decrypt(:'sp', 'c') AS admin_opens;
RESET ROLE;
-- the settings cannot be set in a session, and they hold paths, not keys
SELECT try($q$SET payment_ext.keyring_file = '/tmp/k'$q$);
SELECT name, context, setting ~ '^(/|$)' AS is_path_or_empty
  FROM pg_settings WHERE name IN ('payment_ext.keyring_file', 'payment_ext.keyring_passphrase_command',
                                  'payment_ext.stripe_api_key_file', 'payment_ext.webhook_secret_file')
 ORDER BY 1;

DROP FUNCTION opens(text, text);
