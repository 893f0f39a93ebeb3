--
-- payments: payment.create, payment.retry and the state machine trigger,
-- through the functions and by plain INSERT/UPDATE
--
\set VERBOSITY terse

INSERT INTO "Users" ("Id", "SceneName", "Email")
SELECT ('11000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, 'u' || i, 'u' || i || '@example.org'
  FROM generate_series(1, 9) i;
INSERT INTO "Events" ("Id", "Title", "StartDate", "EndDate") VALUES
	('21000000-0000-0000-0000-000000000001', 'Rope Basics', '2026-12-01', '2026-12-02');
INSERT INTO "EventRegistrations" ("Id", "EventId", "UserId")
SELECT ('31000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, '21000000-0000-0000-0000-000000000001',
       ('11000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid
  FROM generate_series(1, 9) i;

-- a Pending payment and its outbox row, in one call
SELECT payment.create('31000000-0000-0000-0000-000000000001', '11000000-0000-0000-0000-000000000001',
                      40.00, 25, stripe_payment_method => 'pm_card_visa',
                      metadata => '{"source": "web"}') AS p1 \gset
SELECT "AmountValue", "Currency", "SlidingScalePercentage", payment.status_name("Status"),
       "PaymentMethodType", "Metadata", "ProcessedAt" IS NULL AS unprocessed, "RefundAmountValue"
  FROM "Payments" WHERE "Id" = :'p1';
SELECT kind, request - 'metadata[payment_id]' - 'metadata[registration_id]' - 'payment_method' AS request,
       request->>'metadata[payment_id]' = payment_id::text AS names_payment,
       payment.decrypt(request->>'payment_method', 'outbox.request.payment_method:' || idempotency_key) AS sealed_method,
       idempotency_key = 'pe-' || payment_id || '-pi-1' AS key_format, state, attempts
  FROM payment.outbox WHERE payment_id = :'p1';

-- no payment method: an unconfirmed PaymentIntent for Stripe.js; EUR
SELECT payment.create(registration_id => '31000000-0000-0000-0000-000000000002',
                      user_id => '11000000-0000-0000-0000-000000000002',
                      full_price => 80, currency => 'EUR', method_type => 3) AS p2 \gset
SELECT "AmountValue", "Currency", "PaymentMethodType" FROM "Payments" WHERE "Id" = :'p2';
SELECT request - 'metadata[payment_id]' - 'metadata[registration_id]' AS request
  FROM payment.outbox WHERE payment_id = :'p2';

-- a zero amount is NotRequired, and asks nothing of Stripe
SELECT payment.create('31000000-0000-0000-0000-000000000003', '11000000-0000-0000-0000-000000000003', 0) AS p3 \gset
SELECT "AmountValue", payment.status_name("Status"), "ProcessedAt" IS NOT NULL AS processed
  FROM "Payments" WHERE "Id" = :'p3';
SELECT count(*) AS outbox_rows FROM payment.outbox WHERE payment_id = :'p3';

-- a second live payment for a registration is refused
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-000000000001', '11000000-0000-0000-0000-000000000001', 40)$$);
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-000000000003', '11000000-0000-0000-0000-000000000003', 10)$$) AS "NotRequired is not live";

-- idempotency: same key and arguments, the same payment; other arguments, an error
SELECT payment.create('31000000-0000-0000-0000-000000000004', '11000000-0000-0000-0000-000000000004',
                      40.00, 10, idempotency_key => 'checkout-4') AS p4 \gset
SELECT payment.create('31000000-0000-0000-0000-000000000004', '11000000-0000-0000-0000-000000000004',
                      40, 10.0, idempotency_key => 'checkout-4') = :'p4' AS same_payment;
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-000000000004', '11000000-0000-0000-0000-000000000004',
                      40, 20, idempotency_key => 'checkout-4')$$);   -- other discount
SELECT count(*) AS payments_for_4 FROM "Payments" WHERE "EventRegistrationId" = '31000000-0000-0000-0000-000000000004';

-- refused calls, one class per line; none changes anything
SELECT count(*) AS payments_before, (SELECT count(*) FROM payment.outbox) AS outbox_before FROM "Payments" \gset
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-000000000005', '11000000-0000-0000-0000-000000000005', 40, 75.01)$$);  -- discount above 75
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-000000000005', '11000000-0000-0000-0000-000000000005', 40, -1)$$);     -- negative discount
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-000000000005', '11000000-0000-0000-0000-000000000005', 40, 'NaN')$$);  -- NaN discount
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-000000000005', '11000000-0000-0000-0000-000000000005', 40, 'Infinity')$$); -- infinite discount
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-000000000005', '11000000-0000-0000-0000-000000000005', 40, 10, 'JPY')$$);  -- unsupported currency
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-000000000005', '11000000-0000-0000-0000-000000000005', 40, 10, 'usd')$$);  -- lower-case currency
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-000000000005', '11000000-0000-0000-0000-000000000005', 40, 10, NULL)$$);   -- NULL currency
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-000000000005', '11000000-0000-0000-0000-000000000005', 123456789.00)$$);   -- overflows numeric(10,2)
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-000000000005', '11000000-0000-0000-0000-000000000005', 40.005)$$);        -- three decimals
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-000000000005', '11000000-0000-0000-0000-000000000005', -40)$$);           -- negative price
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-000000000005', '11000000-0000-0000-0000-000000000005', NULL)$$);          -- NULL price
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-000000000005', '11000000-0000-0000-0000-000000000005', 40, method_type => 7)$$); -- method type
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-0000000000ff', '11000000-0000-0000-0000-000000000005', 40)$$);            -- unknown registration
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-000000000005', '11000000-0000-0000-0000-0000000000ff', 40)$$);            -- unknown user: not the registration's
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-000000000005', '11000000-0000-0000-0000-000000000006', 40)$$);            -- another user's registration
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-000000000005', '11000000-0000-0000-0000-000000000005', 0.49)$$);          -- below Stripe's minimum
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-000000000005', '11000000-0000-0000-0000-000000000005', 0.29, currency => 'GBP')$$); -- below 0.30 GBP
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-000000000005', '11000000-0000-0000-0000-000000000005', 0.60, 25)$$);      -- 0.60 less 25% is 0.45
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-000000000005', '11000000-0000-0000-0000-000000000005', 40, metadata => '[1]')$$); -- metadata not an object
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-000000000005', '11000000-0000-0000-0000-000000000005', 40, stripe_payment_method => '')$$); -- empty method
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-000000000005', '11000000-0000-0000-0000-000000000005', 40,
                      stripe_payment_method => 'pm_x', saved_method_id => '51000000-0000-0000-0000-000000000001')$$);  -- both methods
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-000000000005', '11000000-0000-0000-0000-000000000005', 40,
                      saved_method_id => '51000000-0000-0000-0000-0000000000ff')$$);  -- unknown saved method
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-000000000005', '11000000-0000-0000-0000-000000000005', 40, idempotency_key => '')$$); -- empty key
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-000000000005', '11000000-0000-0000-0000-000000000005', 40,
                      stripe_payment_method => 'pm_4111111111111111')$$);                                                  -- card number glued to a prefix
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-000000000005', '11000000-0000-0000-0000-000000000005', 40,
                      stripe_payment_method => 'pm_card visa')$$);                                                         -- not a Stripe id
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-000000000005', '11000000-0000-0000-0000-000000000005', 40,
                      metadata => '{"note": {"card": "4242 4242 4242 4242"}}')$$);                                        -- card number in metadata
SELECT try($$SELECT payment.create('31000000-0000-0000-0000-000000000005', '11000000-0000-0000-0000-000000000005', 40,
                      idempotency_key => 'order-5555555555554444')$$);                                                     -- card number in the key
SELECT count(*) = :payments_before AS no_payment_added, (SELECT count(*) FROM payment.outbox) = :outbox_before AS no_request_added
  FROM "Payments";

-- the state machine, by plain UPDATE
BEGIN;
UPDATE "Payments" SET "Status" = 1 WHERE "Id" = :'p1';                       -- Pending -> Completed
SELECT payment.status_name("Status"), "ProcessedAt" = now() AS processed_now, "UpdatedAt" = now() AS updated_now
  FROM "Payments" WHERE "Id" = :'p1';
COMMIT;
SELECT try($$UPDATE "Payments" SET "Status" = 0 WHERE "Id" = '$$ || :'p1' || $$'$$);   -- Completed -> Pending
SELECT try($$UPDATE "Payments" SET "Status" = 2 WHERE "Id" = '$$ || :'p1' || $$'$$);   -- Completed -> Failed
SELECT try($$UPDATE "Payments" SET "Status" = 3 WHERE "Id" = '$$ || :'p1' || $$'$$);   -- Refunded without refunds
SELECT try($$UPDATE "Payments" SET "Status" = 1 WHERE "Id" = '$$ || :'p3' || $$'$$);   -- NotRequired is final
SELECT try($$UPDATE "Payments" SET "Status" = 9 WHERE "Id" = '$$ || :'p2' || $$'$$);   -- not a status
SELECT try($$UPDATE "Payments" SET "AmountValue" = 1 WHERE "Id" = '$$ || :'p2' || $$'$$);           -- amount
SELECT try($$UPDATE "Payments" SET "Currency" = 'USD' WHERE "Id" = '$$ || :'p2' || $$'$$);          -- currency
SELECT try($$UPDATE "Payments" SET "SlidingScalePercentage" = 5 WHERE "Id" = '$$ || :'p2' || $$'$$); -- discount
SELECT try($$UPDATE "Payments" SET "UserId" = '11000000-0000-0000-0000-000000000009' WHERE "Id" = '$$ || :'p2' || $$'$$); -- user
SELECT try($$UPDATE "Payments" SET "EventRegistrationId" = '31000000-0000-0000-0000-000000000009' WHERE "Id" = '$$ || :'p2' || $$'$$); -- registration
SELECT try($$UPDATE "Payments" SET "Metadata" = '"x"' WHERE "Id" = '$$ || :'p2' || $$'$$);          -- metadata not an object
SELECT try($$UPDATE "Payments" SET "Metadata" = '{"pan": "378282246310005"}' WHERE "Id" = '$$ || :'p2' || $$'$$); -- card number, by plain UPDATE
-- a metadata change is allowed, and maintains "UpdatedAt"
BEGIN;
UPDATE "Payments" SET "Metadata" = "Metadata" || '{"note": "vip"}' WHERE "Id" = :'p2';
SELECT "Metadata", "UpdatedAt" = now() AS updated_now FROM "Payments" WHERE "Id" = :'p2';
COMMIT;

-- Pending -> Failed, then payment.retry: Pending again, with a new request
UPDATE "Payments" SET "Status" = 2 WHERE "Id" = :'p2';
SELECT payment.status_name("Status"), "ProcessedAt" IS NOT NULL AS processed FROM "Payments" WHERE "Id" = :'p2';
SELECT payment.retry(:'p2');
SELECT payment.status_name("Status"), "ProcessedAt" IS NULL AS unprocessed FROM "Payments" WHERE "Id" = :'p2';
SELECT kind, right(idempotency_key, 5) AS key_suffix, request->>'metadata[attempt]' AS attempt,
       request - 'metadata[attempt]' = first_value(request - 'metadata[attempt]') OVER (ORDER BY id) AS same_request
  FROM payment.outbox WHERE payment_id = :'p2' ORDER BY id;
-- a retried request's sealed method is sealed again for its new key
SELECT payment.create('31000000-0000-0000-0000-000000000008', '11000000-0000-0000-0000-000000000008', 12,
                      stripe_payment_method => 'pm_card_chargeDeclined') AS p8 \gset
UPDATE "Payments" SET "Status" = 2 WHERE "Id" = :'p8';
SELECT payment.retry(:'p8');
SELECT right(idempotency_key, 5) AS key_suffix,
       payment.decrypt(request->>'payment_method', 'outbox.request.payment_method:' || idempotency_key) AS method,
       request - 'payment_method' - 'metadata[attempt]' = first_value(request - 'payment_method' - 'metadata[attempt]') OVER (ORDER BY id) AS same_otherwise
  FROM payment.outbox WHERE payment_id = :'p8' ORDER BY id;
SELECT try($$SELECT payment.retry('$$ || :'p2' || $$')$$);                               -- not Failed
SELECT try($$SELECT payment.retry('41000000-0000-0000-0000-0000000000ff')$$);             -- unknown payment
SELECT try($$SELECT payment.retry(NULL)$$);                                               -- NULL
-- a Failed payment whose registration has since got another live one stays Failed
UPDATE "Payments" SET "Status" = 2 WHERE "Id" = :'p2';
SELECT payment.create('31000000-0000-0000-0000-000000000002', '11000000-0000-0000-0000-000000000002', 80, currency => 'EUR') AS p2b \gset
SELECT try($$SELECT payment.retry('$$ || :'p2' || $$')$$);
SELECT try($$UPDATE "Payments" SET "Status" = 0 WHERE "Id" = '$$ || :'p2' || $$'$$);     -- the unique index holds too

-- the trigger is ALWAYS: replica mode does not switch it off
SET session_replication_role = replica;
SELECT try($$UPDATE "Payments" SET "Status" = 0 WHERE "Id" = '$$ || :'p1' || $$'$$);
RESET session_replication_role;

-- a plain INSERT (sample query 1) is held to the same rules; refund columns start empty
INSERT INTO "Payments" ("EventRegistrationId", "UserId", "AmountValue", "PaymentMethodType", "RefundAmountValue", "RefundedAt")
VALUES ('31000000-0000-0000-0000-000000000006', '11000000-0000-0000-0000-000000000006', 10, 1, 5, now());
SELECT payment.status_name("Status"), "RefundAmountValue", "RefundedAt" FROM "Payments"
 WHERE "EventRegistrationId" = '31000000-0000-0000-0000-000000000006';
