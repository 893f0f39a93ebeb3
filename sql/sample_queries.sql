--
-- sample_queries: the spec's "Sample Queries for Common Operations" (1 to 5)
-- and the queries under "Monitoring and Alerting", each run with its text
-- unchanged (as a prepared statement where it has parameters), on seeded
-- data that gives every one of them a non-empty result.
--
\set VERBOSITY terse

-- seed: 40 users, two events, one registration per (event, user)
INSERT INTO "Users" ("Id", "SceneName", "Email")
SELECT ('10000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, 'user' || i, 'user' || i || '@example.org'
  FROM generate_series(1, 40) i;
INSERT INTO "Events" ("Id", "Title", "StartDate", "EndDate", "PricingTiers") VALUES
	('20000000-0000-0000-0000-000000000001', 'Rope Basics', '2026-12-01 18:00+00', '2026-12-01 21:00+00',
	 '[{"name": "standard", "price": 40.00, "currency": "USD"}]'),
	('20000000-0000-0000-0000-000000000002', 'Advanced Suspension', '2026-12-08 18:00+00', '2026-12-08 22:00+00',
	 '[{"name": "standard", "price": 80.00, "currency": "USD"}]');
INSERT INTO "EventRegistrations" ("Id", "EventId", "UserId")
SELECT ('30000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
       '20000000-0000-0000-0000-000000000001',
       ('10000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid
  FROM generate_series(1, 40) i;

-- completed payments over the last three months in every discount band,
-- and one four months old that the three-month report leaves out
INSERT INTO "Payments" ("Id", "EventRegistrationId", "UserId", "AmountValue", "SlidingScalePercentage",
                        "Status", "PaymentMethodType", "CreatedAt", "ProcessedAt", "UpdatedAt")
SELECT ('40000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
       ('30000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
       ('10000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
       amount, pct, 1, 1, created, created + interval '2 seconds', created + interval '2 seconds'
  FROM (VALUES (1, 40.00, 0, now() - interval '10 days'),
               (2, 40.00, 0, now() - interval '20 days'),
               (3, 40.00, 0, now() - interval '30 days'),
               (4, 40.00, 0, now() - interval '40 days'),
               (5, 32.00, 20, now() - interval '11 days'),
               (6, 30.00, 25, now() - interval '12 days'),
               (7, 36.00, 10, now() - interval '13 days'),
               (8, 20.00, 50, now() - interval '14 days'),
               (9, 26.00, 35, now() - interval '15 days'),
               (10, 10.00, 75, now() - interval '16 days'),
               (11, 12.00, 70, now() - interval '17 days'),
               (12, 40.00, 0, now() - interval '4 months')) v(i, amount, pct, created);

-- a user's history: fixed times, so the output is stable
INSERT INTO "Payments" ("Id", "EventRegistrationId", "UserId", "AmountValue", "SlidingScalePercentage",
                        "Status", "PaymentMethodType", "CreatedAt", "ProcessedAt", "UpdatedAt")
VALUES ('40000000-0000-0000-0000-000000000013', '30000000-0000-0000-0000-000000000013',
        '10000000-0000-0000-0000-000000000013', 40.00, 0, 2, 1,
        '2026-01-05 10:00:00+00', '2026-01-05 10:00:03+00', '2026-01-05 10:00:03+00'),
       ('40000000-0000-0000-0000-000000000014', '30000000-0000-0000-0000-000000000013',
        '10000000-0000-0000-0000-000000000013', 30.00, 25, 1, 1,
        '2026-01-05 10:05:00+00', '2026-01-05 10:05:02+00', '2026-01-05 10:05:02+00');

-- a failure spike: twelve failed payments within one hour, three hours ago
CREATE TEMP TABLE spike AS SELECT date_trunc('hour', now() - interval '3 hours') AS hour;
INSERT INTO "Payments" ("EventRegistrationId", "UserId", "AmountValue", "Status", "PaymentMethodType",
                        "CreatedAt", "ProcessedAt", "UpdatedAt")
SELECT ('30000000-0000-0000-0000-' || lpad((20 + i)::text, 12, '0'))::uuid,
       ('10000000-0000-0000-0000-' || lpad((20 + i)::text, 12, '0'))::uuid,
       40.00, 2, 1, s.hour + i * interval '4 minutes', s.hour + i * interval '4 minutes' + interval '1 second',
       s.hour + i * interval '4 minutes' + interval '1 second'
  FROM generate_series(1, 12) i, spike s;

-- two payments processed in the last hour, after 1.5 s and 2.5 s
INSERT INTO "Payments" ("EventRegistrationId", "UserId", "AmountValue", "Status", "PaymentMethodType",
                        "CreatedAt", "ProcessedAt", "UpdatedAt")
VALUES ('30000000-0000-0000-0000-000000000035', '10000000-0000-0000-0000-000000000035', 40.00, 1, 1,
        now() - interval '10 minutes', now() - interval '10 minutes' + interval '1.5 seconds', now()),
       ('30000000-0000-0000-0000-000000000036', '10000000-0000-0000-0000-000000000036', 40.00, 1, 1,
        now() - interval '20 minutes', now() - interval '20 minutes' + interval '2.5 seconds', now());

-- ---------------------------------------------------------------------------
-- 1. Process New Payment
-- ---------------------------------------------------------------------------
PREPARE process_new_payment AS
INSERT INTO "Payments" (
    "Id", "EventRegistrationId", "UserId", "AmountValue", "Currency",
    "SlidingScalePercentage", "Status", "PaymentMethodType",
    "CreatedAt", "UpdatedAt", "Metadata"
) VALUES (
    gen_random_uuid(), $1, $2, $3, 'USD',
    $4, 0, $5, -- Status: Pending
    NOW(), NOW(), $6::jsonb
);

-- ---------------------------------------------------------------------------
-- 2. Complete Payment Processing
-- ---------------------------------------------------------------------------
PREPARE complete_payment AS
UPDATE "Payments" 
SET "Status" = 1, -- Completed
    "EncryptedStripePaymentIntentId" = $2,
    "EncryptedStripeCustomerId" = $3,
    "ProcessedAt" = NOW(),
    "UpdatedAt" = NOW(),
    "Metadata" = "Metadata" || $4::jsonb
WHERE "Id" = $1 AND "Status" = 0; -- Only update if still pending

BEGIN;
EXECUTE process_new_payment('30000000-0000-0000-0000-000000000040', '10000000-0000-0000-0000-000000000040',
                            28.00, 30, 1, '{"source": "web"}');
SELECT "Id" AS new_payment FROM "Payments"
 WHERE "EventRegistrationId" = '30000000-0000-0000-0000-000000000040' \gset
SELECT "AmountValue", "Currency", "SlidingScalePercentage", payment.status_name("Status"), "Metadata"
  FROM "Payments" WHERE "Id" = :'new_payment';
EXECUTE complete_payment(:'new_payment',
                         payment.encrypt('pi_3MtwBwLkdIwHu7ix28a3tqPa', 'Payments.EncryptedStripePaymentIntentId:' || :'new_payment'),
                         payment.encrypt('cus_NffrFeUfNV2Hib', 'Payments.EncryptedStripeCustomerId:' || :'new_payment'),
                         '{"card_brand": "Visa"}');
-- a second completion finds nothing pending
EXECUTE complete_payment(:'new_payment',
                         payment.encrypt('pi_3MtwBwLkdIwHu7ix28a3tqPa', 'Payments.EncryptedStripePaymentIntentId:' || :'new_payment'),
                         payment.encrypt('cus_NffrFeUfNV2Hib', 'Payments.EncryptedStripeCustomerId:' || :'new_payment'),
                         '{"card_brand": "Visa"}');
COMMIT;
SELECT payment.status_name("Status"), "ProcessedAt" IS NOT NULL AS processed, "Metadata"
  FROM "Payments" WHERE "Id" = :'new_payment';

-- ---------------------------------------------------------------------------
-- 3. User Payment History
-- ---------------------------------------------------------------------------
PREPARE user_payment_history AS
SELECT 
    p."Id",
    p."AmountValue",
    p."Currency",
    p."SlidingScalePercentage",
    p."Status",
    p."ProcessedAt",
    p."RefundedAt",
    p."RefundAmountValue",
    e."Title" as event_title
FROM "Payments" p
LEFT JOIN "Events" e ON p."EventRegistrationId" = e."Id"
WHERE p."UserId" = $1
ORDER BY p."CreatedAt" DESC
LIMIT 50;
-- the query shows timestamptz values in the session's zone: pinned to UTC
-- for this one display, so the output is the same in every zone
SET TimeZone = 'UTC';
EXECUTE user_payment_history('10000000-0000-0000-0000-000000000013');
RESET TimeZone;

-- ---------------------------------------------------------------------------
-- 4. Refund Processing
-- ---------------------------------------------------------------------------
PREPARE refund_insert AS
INSERT INTO "PaymentRefunds" (
    "Id", "OriginalPaymentId", "RefundAmountValue", "RefundCurrency",
    "RefundReason", "RefundStatus", "ProcessedByUserId"
) VALUES (
    gen_random_uuid(), $1, $2, $3, $4, 0, $5
);
PREPARE refund_update AS
UPDATE "Payments"
SET "RefundAmountValue" = $2,
    "RefundCurrency" = $3,
    "RefundedAt" = NOW(),
    "RefundReason" = $4,
    "RefundedByUserId" = $5,
    "UpdatedAt" = NOW()
WHERE "Id" = $1;

BEGIN;
EXECUTE refund_insert('40000000-0000-0000-0000-000000000014', 10.00, 'USD',
                      'Event cancelled for this attendee', '10000000-0000-0000-0000-000000000001');
EXECUTE refund_update('40000000-0000-0000-0000-000000000014', 10.00, 'USD',
                      'Event cancelled for this attendee', '10000000-0000-0000-0000-000000000001');
COMMIT;
SELECT "RefundAmountValue", "RefundCurrency", "RefundedAt" IS NOT NULL AS refunded, "RefundReason"
  FROM "Payments" WHERE "Id" = '40000000-0000-0000-0000-000000000014';
SELECT "RefundAmountValue", "RefundCurrency", payment.refund_status_name("RefundStatus")
  FROM "PaymentRefunds" WHERE "OriginalPaymentId" = '40000000-0000-0000-0000-000000000014';

-- ---------------------------------------------------------------------------
-- 5. Payment Analytics
-- ---------------------------------------------------------------------------
-- Revenue by sliding scale usage
SELECT 
    CASE 
        WHEN "SlidingScalePercentage" = 0 THEN 'Full Price'
        WHEN "SlidingScalePercentage" <= 25 THEN 'Light Discount (1-25%)'
        WHEN "SlidingScalePercentage" <= 50 THEN 'Moderate Discount (26-50%)'
        ELSE 'High Discount (51-75%)'
    END as discount_range,
    COUNT(*) as payment_count,
    SUM("AmountValue") as total_revenue,
    AVG("AmountValue") as average_amount
FROM "Payments"
WHERE "Status" = 1 -- Completed
  AND "CreatedAt" >= NOW() - INTERVAL '3 months'
GROUP BY 1
ORDER BY total_revenue DESC;

-- ---------------------------------------------------------------------------
-- Monitoring and Alerting
-- ---------------------------------------------------------------------------
-- Failed payment spike detection (one row: captured, then compared with the
-- seeded hour, which moves with the clock)
SELECT 
    DATE_TRUNC('hour', "CreatedAt") as hour,
    COUNT(*) as failed_count
FROM "Payments"
WHERE "Status" = 2 -- Failed
  AND "CreatedAt" >= NOW() - INTERVAL '24 hours'
GROUP BY 1
HAVING COUNT(*) > 10 \gset spike_
SELECT :'spike_hour'::timestamptz = hour AS seeded_hour, :spike_failed_count AS failed_count FROM spike;

-- Processing time monitoring
SELECT AVG(EXTRACT(EPOCH FROM ("ProcessedAt" - "CreatedAt"))) as avg_processing_seconds
FROM "Payments"
WHERE "ProcessedAt" IS NOT NULL
  AND "CreatedAt" >= NOW() - INTERVAL '1 hour';
