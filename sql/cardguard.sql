--
-- cardguard: the card-number guard on every path a value takes into the
-- database (issue 16 item 6): the reported bypass (single-digit groups before
-- a card number) and jsonb numbers, through payment.create metadata,
-- payment.refund reasons, identifiers (idempotency keys, Stripe ids),
-- payment.save_method, payment.resolve and payment.encrypt, and direct
-- writes of "Metadata".  A refusal is PE001, names the argument, and never
-- echoes the number (message, detail, hint and context are checked); the
-- refused value reaches no table, no audit row and no outbox request.
--
\set VERBOSITY terse
SET timezone = 'UTC';

INSERT INTO "Users" ("Id", "SceneName", "Email") VALUES
	('1c000000-0000-0000-0000-000000000001', 'Guard Ash', 'guard.ash@example.org'),
	('1c000000-0000-0000-0000-000000000002', 'Guard Birch', 'guard.birch@example.org');
INSERT INTO "Events" ("Id", "Title", "StartDate", "EndDate") VALUES
	('2c000000-0000-0000-0000-000000000001', 'Guard Night', '2026-12-01', '2026-12-02');
INSERT INTO "EventRegistrations" ("Id", "EventId", "UserId") VALUES
	('3c000000-0000-0000-0000-000000000001', '2c000000-0000-0000-0000-000000000001', '1c000000-0000-0000-0000-000000000001'),
	('3c000000-0000-0000-0000-000000000002', '2c000000-0000-0000-0000-000000000001', '1c000000-0000-0000-0000-000000000002');

-- refused(sql): the SQLSTATE, the message and its detail, and whether any
-- of message, detail, hint or context holds 4 or more digits in a row (a
-- card number's group): never.  The context's lines that quote the calling
-- statement (PostgreSQL's, not the guard's) are left out.
CREATE FUNCTION refused(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	st text; msg text; det text; hint text; ctx text;
BEGIN
	EXECUTE sql;
	RETURN 'accepted';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL,
		hint = PG_EXCEPTION_HINT, ctx = PG_EXCEPTION_CONTEXT;
	RETURN st || ': ' || msg || ' / ' || coalesce(det, '') ||
		CASE WHEN concat_ws(' ', msg, det, hint,
		                    regexp_replace(ctx, '^(SQL statement|PL/pgSQL function) .*$', '', 'gn')) ~ '[0-9]{4}'
		     THEN ' / ECHOES DIGITS' ELSE '' END;
END
$$;

-- the reported bypass: 61 to 63 single-digit groups before the number
SELECT k, payment.contains_card_number(repeat('1 ', k) || '4242 4242 4242 4242') AS found
  FROM unnest(ARRAY[0, 1, 60, 61, 62, 63, 64, 65, 200, 100000]) k;
SELECT payment.contains_card_number(repeat('1 ', 61) || '4242424242424242') AS contiguous,
       payment.contains_card_number(repeat('9-', 62) || '5555-5555-5555-4444') AS dashes,
       payment.contains_card_number(repeat('1 ', 61) || '3782 822463 10005') AS amex_4_6_5,
       payment.contains_card_number(repeat('12 ', 500) || '6011 1111 1111 1117 ' || repeat('1 ', 500)) AS in_the_middle;

-- jsonb numbers: the value, whatever its spelling
SELECT d::text AS doc, payment.contains_card_number(d) AS found
  FROM unnest(ARRAY['{"n": 4242424242424242}', '{"n": 4242424242424242.0}', '{"n": 4.242424242424242e15}',
                    '{"n": -4242424242424242}', '{"n": 42424242424242420e-1}', '{"n": 0.4242424242424242}',
                    '[[{"a": [1, 2, {"b": 6011111111111117.00}]}]]', '{"ts": 1700000000000}',
                    '{"n": 4242424242424241.0}', '{"n": 42424242424242420}']::jsonb[]) d;

-- Unicode digits, separators and invisible characters (DESIGN's rule, read
-- after NFKC; doc/vault-and-keys.md, "Card-number guard")
SELECT payment.contains_card_number(E'\uff14\uff12\uff14\uff12 4242 4242 4242') AS fullwidth,
       payment.contains_card_number(E'\u0664\u0662\u0664\u0662 \u0664\u0662\u0664\u0662 4242 4242') AS arabic_indic,
       payment.contains_card_number(E'4242\u20134242\u00a04242\u30004242') AS unicode_separators,
       payment.contains_card_number(E'42\u200b42 4242 42\u00ad42 4242') AS invisible_characters,
       payment.contains_card_number(E'4242 4242 4242 4242\u0301') AS combining_mark,
       payment.contains_card_number(repeat(E'\u0301', 100000) || ' 4242424242424242') AS after_100k_marks;

-- and what stays accepted: the rule's non-card cases
SELECT payment.contains_card_number(repeat('1 ', 61) || '4242 4242 4242 4241') AS luhn_invalid,
       payment.contains_card_number(repeat('1 ', 61) || '42424242424242424242') AS longer_run,
       payment.contains_card_number(repeat('1 ', 61) || 'x4242424242424242') AS letters_glued,
       payment.contains_card_number(repeat('1 ', 61) || '424 24242 4242 4242') AS wrong_grouping;

-- through payment.create metadata: refused, nothing written
SELECT count(*) AS payments_before FROM "Payments" \gset
SELECT count(*) AS audit_before FROM "PaymentAuditLog" \gset
SELECT count(*) AS outbox_before FROM payment.outbox \gset
SELECT refused(format($$SELECT payment.create('3c000000-0000-0000-0000-000000000001', '1c000000-0000-0000-0000-000000000001', 40, metadata => %L)$$, m)) AS create_metadata
  FROM unnest(ARRAY[jsonb_build_object('note', repeat('1 ', 61) || '4242 4242 4242 4242'),
                    jsonb_build_object('note', repeat('1 ', 62) || '4242 4242 4242 4242'),
                    jsonb_build_object('note', repeat('1 ', 63) || '4242 4242 4242 4242'),
                    jsonb_build_object(repeat('1 ', 61) || '4242 4242 4242 4242', true),
                    '{"card": 4242424242424242.0}', '{"card": 4.242424242424242e15}', '{"card": -4242424242424242}',
                    '{"deep": [[[{"x": [0, 6011111111111117.0]}]]]}']::jsonb[]) m;
-- an idempotency key is an identifier: a card number glued into it is refused
SELECT refused($$SELECT payment.create('3c000000-0000-0000-0000-000000000001', '1c000000-0000-0000-0000-000000000001', 40, idempotency_key => 'order_4242424242424242')$$) AS create_key;
SELECT refused($$SELECT payment.create('3c000000-0000-0000-0000-000000000001', '1c000000-0000-0000-0000-000000000001', 40, stripe_payment_method => 'pm_' || repeat('1', 0) || '4242424242424242')$$) AS create_pm;
SELECT count(*) - :payments_before AS new_payments FROM "Payments";
SELECT count(*) - :audit_before AS new_audit_rows FROM "PaymentAuditLog";
SELECT count(*) - :outbox_before AS new_outbox_rows FROM payment.outbox;

-- a Completed payment to refund
SELECT payment.create('3c000000-0000-0000-0000-000000000002', '1c000000-0000-0000-0000-000000000002', 40,
                      metadata => '{"note": "1 2 3 4242 4242 4242", "n": 4242424242424241.0}') AS p \gset
UPDATE "Payments" SET "Status" = 1,
       "EncryptedStripePaymentIntentId" = payment.encrypt('pi_guard_test_1', 'Payments.EncryptedStripePaymentIntentId:' || :'p')
 WHERE "Id" = :'p';

-- through payment.refund reasons: refused, nothing written
SELECT count(*) AS audit_before FROM "PaymentAuditLog" \gset
SELECT count(*) AS outbox_before FROM payment.outbox \gset
SELECT refused(format($$SELECT payment.refund(%L, 5, %L, '1c000000-0000-0000-0000-000000000001')$$, :'p', r)) AS refund_reason
  FROM unnest(ARRAY[repeat('1 ', 61) || '4242 4242 4242 4242', repeat('1 ', 62) || '4242 4242 4242 4242',
                    repeat('1 ', 63) || '4242 4242 4242 4242', 'refund of ' || repeat('7 ', 5000) || '4000-0566-5566-5556 thanks',
                    E'card \uff14\uff12\uff14\uff12 4242 4242 4242 charged twice']) r;
SELECT refused(format($$SELECT payment.refund(%L, 5, 'Duplicate charge refund', '1c000000-0000-0000-0000-000000000001', %L)$$, :'p', 'rf-4242424242424242')) AS refund_key;
SELECT count(*) AS refunds FROM "PaymentRefunds" WHERE "OriginalPaymentId" = :'p';
SELECT count(*) - :audit_before AS new_audit_rows FROM "PaymentAuditLog";
SELECT count(*) - :outbox_before AS new_outbox_rows FROM payment.outbox;

-- the other paths: save_method, resolve, encrypt, direct "Metadata" writes
SELECT refused($$SELECT payment.save_method('1c000000-0000-0000-0000-000000000001', 'pm_ok_1', '4242', 'Visa ' || repeat('1 ', 61) || '4242 4242 4242 4242', 1, 2099)$$) AS save_method_brand;
SELECT refused($$SELECT payment.save_method('1c000000-0000-0000-0000-000000000001', 'pm_' || '6011111111111117', '1117', 'Discover', 1, 2099)$$) AS save_method_id;
SELECT refused(format($$SELECT payment.resolve(%L, 2, %L)$$, :'p', 'settled by hand, ' || repeat('1 ', 62) || '4242 4242 4242 4242')) AS resolve_reason;
SELECT refused($$SELECT payment.encrypt(repeat('1 ', 63) || '4242 4242 4242 4242', 'c')$$) AS encrypt_plaintext;
SELECT refused(format($$UPDATE "Payments" SET "Metadata" = '{"n": 4242424242424242.0}' WHERE "Id" = %L$$, :'p')) AS payments_metadata;
SELECT refused(format($$UPDATE "Payments" SET "Metadata" = jsonb_build_object('x', repeat('1 ', 61) || '4242 4242 4242 4242') WHERE "Id" = %L$$, :'p')) AS payments_metadata_text;
SELECT count(*) AS saved_methods FROM "PaymentMethods" WHERE "UserId" = '1c000000-0000-0000-0000-000000000001';
SELECT payment.status_name("Status"), "Metadata" FROM "Payments" WHERE "Id" = :'p';

-- nothing written anywhere holds the number
SELECT count(*) AS rows_with_the_number
  FROM (SELECT "Metadata"::text AS t FROM "Payments"
        UNION ALL SELECT "RefundReason" FROM "PaymentRefunds"
        UNION ALL SELECT concat_ws(' ', "ActionDescription", "OldValues"::text, "NewValues"::text) FROM "PaymentAuditLog"
        UNION ALL SELECT request::text FROM payment.outbox) x
 WHERE t ~ '4242 4242 4242 4242|4242424242424242|4000-0566';

DROP FUNCTION refused(text);
