--
-- refunds: payment.refund and the refund triggers, through the function and
-- by plain INSERT/UPDATE
--
\set VERBOSITY terse

-- a Completed 36.00 USD payment (p1) and a Pending one (p2), from payments.sql's data
SELECT "Id" AS p1 FROM "Payments" WHERE "EventRegistrationId" = '31000000-0000-0000-0000-000000000004' \gset
UPDATE "Payments" SET "Status" = 1,
       "EncryptedStripePaymentIntentId" = payment.encrypt('pi_refund_test_1', 'Payments.EncryptedStripePaymentIntentId:' || :'p1')
 WHERE "Id" = :'p1';
SELECT "AmountValue", payment.status_name("Status") FROM "Payments" WHERE "Id" = :'p1';
SELECT payment.create('31000000-0000-0000-0000-000000000007', '11000000-0000-0000-0000-000000000007', 50) AS p2 \gset

-- a partial refund: Processing, with its outbox row; the payment shows the sum
SELECT payment.refund(:'p1', 10.00, 'Attendee could not come', '11000000-0000-0000-0000-000000000009') AS r1 \gset
SELECT "RefundAmountValue", "RefundCurrency", payment.refund_status_name("RefundStatus"), "RefundReason"
  FROM "PaymentRefunds" WHERE "Id" = :'r1';
SELECT payment.status_name("Status"), "RefundAmountValue", "RefundCurrency", "RefundedAt" IS NOT NULL AS refunded_at,
       "RefundReason", "RefundedByUserId"
  FROM "Payments" WHERE "Id" = :'p1';
SELECT kind, refund_id = :'r1' AS for_r1, request - 'metadata[payment_id]' - 'metadata[refund_id]' - 'payment_intent' AS request,
       payment.decrypt(request->>'payment_intent', 'outbox.request.payment_intent:' || idempotency_key) AS sealed_intent,
       idempotency_key = 'pe-' || refund_id || '-re' AS key_format
  FROM payment.outbox WHERE refund_id IS NOT NULL ORDER BY id;

-- completing it makes the payment PartiallyRefunded
UPDATE "PaymentRefunds" SET "RefundStatus" = 1 WHERE "Id" = :'r1';
SELECT payment.status_name("Status"), "RefundAmountValue" FROM "Payments" WHERE "Id" = :'p1';

-- never more than was paid: 26.00 of 36.00 is left
SELECT try($$SELECT payment.refund('$$ || :'p1' || $$', 26.01, 'Refund over the remaining amount', '11000000-0000-0000-0000-000000000009')$$);
-- a second refund; while it is Processing, the amount is reserved
SELECT payment.refund(:'p1', 20.00, 'Second partial refund ok', '11000000-0000-0000-0000-000000000009') AS r2 \gset
SELECT try($$SELECT payment.refund('$$ || :'p1' || $$', 6.01, 'Over the remaining amount', '11000000-0000-0000-0000-000000000009')$$);
-- a failed refund frees its amount again
UPDATE "PaymentRefunds" SET "RefundStatus" = 2 WHERE "Id" = :'r2';
SELECT payment.status_name("Status"), "RefundAmountValue" FROM "Payments" WHERE "Id" = :'p1';
SELECT payment.refund(:'p1', 26.00, 'Refund the rest of it', '11000000-0000-0000-0000-000000000009') AS r3 \gset
UPDATE "PaymentRefunds" SET "RefundStatus" = 1 WHERE "Id" = :'r3';
SELECT payment.status_name("Status"), "RefundAmountValue", "AmountValue" FROM "Payments" WHERE "Id" = :'p1';
-- a Refunded payment takes no new refund
SELECT try($$SELECT payment.refund('$$ || :'p1' || $$', 0.01, 'Nothing left to refund', '11000000-0000-0000-0000-000000000009')$$);

-- refund status moves Processing -> Completed | Failed, once
SELECT try($$UPDATE "PaymentRefunds" SET "RefundStatus" = 0 WHERE "Id" = '$$ || :'r3' || $$'$$);   -- Completed -> Processing
SELECT try($$UPDATE "PaymentRefunds" SET "RefundStatus" = 1 WHERE "Id" = '$$ || :'r2' || $$'$$);   -- Failed -> Completed
SELECT try($$UPDATE "PaymentRefunds" SET "RefundAmountValue" = 1 WHERE "Id" = '$$ || :'r3' || $$'$$); -- amount
SELECT try($$UPDATE "PaymentRefunds" SET "RefundReason" = 'A different reason' WHERE "Id" = '$$ || :'r3' || $$'$$); -- reason
SELECT try($$UPDATE "PaymentRefunds" SET "OriginalPaymentId" = '$$ || :'p2' || $$' WHERE "Id" = '$$ || :'r3' || $$'$$); -- payment
UPDATE "PaymentRefunds" SET "Metadata" = '{"ticket": "T-1"}' WHERE "Id" = :'r3';   -- metadata may change
SELECT "Metadata" FROM "PaymentRefunds" WHERE "Id" = :'r3';

-- idempotent refunds: a double click refunds once
SELECT "Id" AS p5 FROM "Payments" WHERE "EventRegistrationId" = '31000000-0000-0000-0000-000000000001' \gset
SELECT payment.refund(:'p5', 5, 'Double-clicked refund', '11000000-0000-0000-0000-000000000009', 'refund-click-1') AS r5 \gset
SELECT payment.refund(:'p5', 5.00, 'Double-clicked refund', '11000000-0000-0000-0000-000000000009', 'refund-click-1') = :'r5' AS same_refund;
SELECT try($$SELECT payment.refund('$$ || :'p5' || $$', 6, 'Double-clicked refund', '11000000-0000-0000-0000-000000000009', 'refund-click-1')$$);
SELECT count(*) AS refunds_of_p5 FROM "PaymentRefunds" WHERE "OriginalPaymentId" = :'p5';

-- refused calls, one class per line; none changes anything
SELECT count(*) AS refunds_before, (SELECT count(*) FROM payment.outbox) AS outbox_before FROM "PaymentRefunds" \gset
SELECT try($$SELECT payment.refund('$$ || :'p2' || $$', 1, 'Refund of a pending payment', '11000000-0000-0000-0000-000000000009')$$);  -- Pending payment
SELECT try($$SELECT payment.refund('$$ || :'p5' || $$', 1, 'too short', '11000000-0000-0000-0000-000000000009')$$);                   -- 9 characters
SELECT try($$SELECT payment.refund('$$ || :'p5' || $$', 1, E'   \t\n        ', '11000000-0000-0000-0000-000000000009')$$);           -- blank
SELECT try($$SELECT payment.refund('$$ || :'p5' || $$', 1, 'a b c d e f g h i', '11000000-0000-0000-0000-000000000009')$$);           -- 9 non-blank
SELECT try($$SELECT payment.refund('$$ || :'p5' || $$', 1, NULL, '11000000-0000-0000-0000-000000000009')$$);                          -- NULL reason
SELECT try($$SELECT payment.refund('$$ || :'p5' || $$', 0, 'Zero refund is nothing', '11000000-0000-0000-0000-000000000009')$$);     -- zero
SELECT try($$SELECT payment.refund('$$ || :'p5' || $$', -1, 'Negative refund amount', '11000000-0000-0000-0000-000000000009')$$);    -- negative
SELECT try($$SELECT payment.refund('$$ || :'p5' || $$', 1.001, 'Three decimals refund', '11000000-0000-0000-0000-000000000009')$$);  -- three decimals
SELECT try($$SELECT payment.refund('$$ || :'p5' || $$', 'NaN', 'Not a number refund', '11000000-0000-0000-0000-000000000009')$$);    -- NaN
SELECT try($$SELECT payment.refund('$$ || :'p5' || $$', 1e9, 'Overflowing refund', '11000000-0000-0000-0000-000000000009')$$);       -- overflow
SELECT try($$SELECT payment.refund('41000000-0000-0000-0000-0000000000ff', 1, 'Unknown payment refund', '11000000-0000-0000-0000-000000000009')$$); -- unknown payment
SELECT try($$SELECT payment.refund('$$ || :'p5' || $$', 1, 'Unknown processor here', '11000000-0000-0000-0000-0000000000ff')$$);     -- unknown user
SELECT try($$SELECT payment.refund('$$ || :'p5' || $$', 1, 'No processor given here', NULL)$$);                                      -- NULL user
SELECT try($$SELECT payment.refund('$$ || :'p5' || $$', 1, 'Card 4000 0566 5566 5556 was lost', '11000000-0000-0000-0000-000000000009')$$); -- card number in the reason
SELECT count(*) = :refunds_before AS no_refund_added, (SELECT count(*) FROM payment.outbox) = :outbox_before AS no_request_added
  FROM "PaymentRefunds";

-- a payment that never went through Stripe (p5 was completed by hand): its
-- refund is recorded with no request, for an administrator to settle
SELECT count(*) AS requests_for_p5 FROM payment.outbox WHERE payment_id = :'p5' AND kind = 'refund.create';

-- plain INSERTs are held to the same rules
SELECT try($$INSERT INTO "PaymentRefunds" ("OriginalPaymentId", "RefundAmountValue", "RefundCurrency", "RefundReason", "ProcessedByUserId")
             VALUES ('$$ || :'p5' || $$', 30.01, 'USD', 'Plain insert over the cap', '11000000-0000-0000-0000-000000000009')$$);  -- over the cap
SELECT try($$INSERT INTO "PaymentRefunds" ("OriginalPaymentId", "RefundAmountValue", "RefundCurrency", "RefundReason", "ProcessedByUserId")
             VALUES ('$$ || :'p5' || $$', 1, 'EUR', 'Plain insert other currency', '11000000-0000-0000-0000-000000000009')$$); -- currency
SELECT try($$INSERT INTO "PaymentRefunds" ("OriginalPaymentId", "RefundAmountValue", "RefundCurrency", "RefundReason", "ProcessedByUserId")
             VALUES ('$$ || :'p2' || $$', 1, 'USD', 'Plain insert pending payment', '11000000-0000-0000-0000-000000000009')$$); -- Pending payment
INSERT INTO "PaymentRefunds" ("OriginalPaymentId", "RefundAmountValue", "RefundCurrency", "RefundReason", "ProcessedByUserId")
VALUES (:'p5', 25.00, 'USD', 'Plain insert of the rest', '11000000-0000-0000-0000-000000000009');
SELECT payment.status_name("Status"), "AmountValue", "RefundAmountValue" FROM "Payments" WHERE "Id" = :'p5';
-- sample query 4 writes the refund columns by hand: they stay the true sum
UPDATE "Payments" SET "RefundAmountValue" = 1.00, "RefundCurrency" = 'USD', "RefundedAt" = now() WHERE "Id" = :'p5';
SELECT "RefundAmountValue" FROM "Payments" WHERE "Id" = :'p5';
-- completing both makes it Refunded
UPDATE "PaymentRefunds" SET "RefundStatus" = 1 WHERE "OriginalPaymentId" = :'p5';
SELECT payment.status_name("Status"), "RefundAmountValue" FROM "Payments" WHERE "Id" = :'p5';

-- the refund sums of every payment match their rows, to the cent
SELECT count(*) AS mismatches
  FROM "Payments" p
 WHERE p."RefundAmountValue" IS DISTINCT FROM
       (SELECT sum(r."RefundAmountValue") FROM "PaymentRefunds" r
         WHERE r."OriginalPaymentId" = p."Id" AND r."RefundStatus" <> 2);
