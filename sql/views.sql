--
-- views: the reporting views of issue 10 on small seeded data, every figure
-- exact to the cent (worked out by hand in the comments), and what the
-- reporting role may and may not read.
--
-- Times are seeded relative to now() (the windows are), and the hourly
-- buckets relative to H = date_trunc('hour', now()), so the output does not
-- move with the clock.
--
\set VERBOSITY terse

-- empty tables to start from (superuser)
TRUNCATE "PaymentAuditLog", payment.audit_chain_heads, "PaymentMethods", "PaymentRefunds",
	"PaymentFailures", payment.outbox, payment.intents, payment.stripe_refs, payment.refund_states,
	payment.disputes, "Payments", "EventRegistrations", "Events", "Users";

-- H: the start of the current hour, for the hourly buckets
CREATE TEMP TABLE h AS SELECT date_trunc('hour', now()) AS h;

-- 14 users; u1 is the organiser who processes refunds
INSERT INTO "Users" ("Id", "SceneName", "Email")
SELECT ('10000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, 'user' || i, 'user' || i || '@example.org'
  FROM generate_series(1, 14) i;
-- E1 USD 40.00; E2 paid in CAD and USD; E3 an old one; E4 nobody paid for
INSERT INTO "Events" ("Id", "Title", "StartDate", "EndDate", "PricingTiers") VALUES
	('20000000-0000-0000-0000-000000000001', 'Rope Basics', '2026-12-01 18:00+00', '2026-12-01 21:00+00',
	 '[{"name": "standard", "price": 40.00, "currency": "USD"}]'),
	('20000000-0000-0000-0000-000000000002', 'Suspension Lab', '2026-12-08 18:00+00', '2026-12-08 22:00+00',
	 '[{"name": "standard", "price": 33.33, "currency": "CAD"}, {"name": "student", "price": 10.01, "currency": "CAD"}]'),
	('20000000-0000-0000-0000-000000000003', 'Old Jam', '2026-01-10 18:00+00', '2026-01-10 21:00+00',
	 '[{"name": "standard", "price": 25.00, "currency": "USD"}]'),
	('20000000-0000-0000-0000-000000000004', 'Empty Night', '2026-12-20 18:00+00', '2026-12-20 21:00+00',
	 '[{"name": "standard", "price": 15.00, "currency": "USD"}]');
-- registration i is user i's; E1: 1-10, E2: 11-13, E3: 14
INSERT INTO "EventRegistrations" ("Id", "EventId", "UserId")
SELECT ('30000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
       ('20000000-0000-0000-0000-00000000000' || CASE WHEN i <= 10 THEN 1 WHEN i <= 13 THEN 2 ELSE 3 END)::uuid,
       ('10000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid
  FROM generate_series(1, 14) i;

-- payment i for registration i: amount, discount, status, created, seconds to process
--   1  E1  40.00   0 %  Completed          now - 10 min        1.5 s
--   2  E1  30.00  25 %  Completed          now - 30 min        2.5 s
--   3  E1  20.00  50 %  Completed->Refunded H - 5 h + 20 min   1 s
--   4  E1  26.80  33 %  Completed->Partly   now - 3 days        4.5 s
--   5  E1  40.00   0 %  Failed             H - 3 h + 10 min    3 s
--   6  E1  40.00   0 %  Pending            now - 5 min
--   7  E1  10.00  75 %  Completed (a failed refund) now - 20 days 4 s
--   8  E1   0.00   0 %  NotRequired        now - 2 h
--   9  E1  36.00  10 %  Failed             H - 3 h + 20 min    3 s
--  10  E1  28.00  30 %  Failed             H - 3 h + 30 min    3 s
--  11  E2  27.66  17 %  Completed CAD      now - 40 days       2 s   (33.33 at 17 %)
--  12  E2   2.50  75 %  Completed CAD      now - 50 days       2 s   (10.01 at 75 %)
--  13  E2  80.00   0 %  Completed USD      now - 60 days       2 s
--  14  E3  25.00   0 %  Completed          now - 4 months      2 s
INSERT INTO "Payments" ("Id", "EventRegistrationId", "UserId", "AmountValue", "Currency", "SlidingScalePercentage",
                        "Status", "PaymentMethodType", "CreatedAt", "ProcessedAt", "UpdatedAt")
SELECT ('40000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
       ('30000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
       ('10000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
       amount, currency, pct, status, 1, created,
       CASE WHEN status = 0 THEN NULL ELSE created + secs * interval '1 second' END,
       created + coalesce(secs, 0) * interval '1 second'
  FROM h, LATERAL (VALUES
	(1, 40.00, 'USD', 0, 1, now() - interval '10 minutes', 1.5),
	(2, 30.00, 'USD', 25, 1, now() - interval '30 minutes', 2.5),
	(3, 20.00, 'USD', 50, 1, h.h - interval '5 hours' + interval '20 minutes', 1),
	(4, 26.80, 'USD', 33, 1, now() - interval '3 days', 4.5),
	(5, 40.00, 'USD', 0, 2, h.h - interval '3 hours' + interval '10 minutes', 3),
	(6, 40.00, 'USD', 0, 0, now() - interval '5 minutes', NULL),
	(7, 10.00, 'USD', 75, 1, now() - interval '20 days', 4),
	(8, 0.00, 'USD', 0, 5, now() - interval '2 hours', 0),
	(9, 36.00, 'USD', 10, 2, h.h - interval '3 hours' + interval '20 minutes', 3),
	(10, 28.00, 'USD', 30, 2, h.h - interval '3 hours' + interval '30 minutes', 3),
	(11, 27.66, 'CAD', 17, 1, now() - interval '40 days', 2),
	(12, 2.50, 'CAD', 75, 1, now() - interval '50 days', 2),
	(13, 80.00, 'USD', 0, 1, now() - interval '60 days', 2),
	(14, 25.00, 'USD', 0, 1, now() - interval '4 months', 2)) v(i, amount, currency, pct, status, created, secs);
-- the amounts are payment.price's
SELECT count(*) AS priced_by_the_rule FROM (VALUES (27.66, 33.33, 17), (2.50, 10.01, 75), (26.80, 40.00, 33)) v(a, f, p)
 WHERE payment.price(f, p) = a;

-- refunds, each asked for and completed in one transaction, so the audit
-- trail's RefundCompleted entry is exactly "CreatedAt" + the asked-for age
BEGIN;  -- payment 3: whole, asked 3 hours ago
INSERT INTO "PaymentRefunds" ("Id", "OriginalPaymentId", "RefundAmountValue", "RefundCurrency", "RefundReason",
                              "ProcessedByUserId", "CreatedAt", "ProcessedAt")
VALUES ('50000000-0000-0000-0000-000000000001', '40000000-0000-0000-0000-000000000003', 20.00, 'USD',
        'Attendee could not come', '10000000-0000-0000-0000-000000000001', now() - interval '3 hours', now());
UPDATE "PaymentRefunds" SET "RefundStatus" = 1 WHERE "Id" = '50000000-0000-0000-0000-000000000001';
COMMIT;
BEGIN;  -- payment 4: 10.00 of 26.80, asked 2 days ago
INSERT INTO "PaymentRefunds" ("Id", "OriginalPaymentId", "RefundAmountValue", "RefundCurrency", "RefundReason",
                              "ProcessedByUserId", "CreatedAt", "ProcessedAt")
VALUES ('50000000-0000-0000-0000-000000000002', '40000000-0000-0000-0000-000000000004', 10.00, 'USD',
        'Left the event early, partial refund', '10000000-0000-0000-0000-000000000001', now() - interval '2 days', now());
UPDATE "PaymentRefunds" SET "RefundStatus" = 1 WHERE "Id" = '50000000-0000-0000-0000-000000000002';
COMMIT;
-- payment 4: 5.00 more, Processing for 30 hours
INSERT INTO "PaymentRefunds" ("Id", "OriginalPaymentId", "RefundAmountValue", "RefundCurrency", "RefundReason",
                              "ProcessedByUserId", "CreatedAt", "ProcessedAt")
VALUES ('50000000-0000-0000-0000-000000000003', '40000000-0000-0000-0000-000000000004', 5.00, 'USD',
        'Goodwill for the late start', '10000000-0000-0000-0000-000000000001',
        now() - interval '30 hours', now() - interval '30 hours');
-- payment 7: a refund that failed, ten days ago
INSERT INTO "PaymentRefunds" ("Id", "OriginalPaymentId", "RefundAmountValue", "RefundCurrency", "RefundReason",
                              "RefundStatus", "ProcessedByUserId", "CreatedAt", "ProcessedAt")
VALUES ('50000000-0000-0000-0000-000000000004', '40000000-0000-0000-0000-000000000007', 10.00, 'USD',
        'Attendee asked for a refund', 2, '10000000-0000-0000-0000-000000000001',
        now() - interval '10 days', now() - interval '10 days');
SELECT right("Id"::text, 2) AS payment, payment.status_name("Status") AS status, "RefundAmountValue"
  FROM "Payments" WHERE "RefundAmountValue" IS NOT NULL OR "Id" = '40000000-0000-0000-0000-000000000007'
 ORDER BY 1;

-- failed attempts: payment 3 twice in hour H-5; payments 5, 9 and 10 four
-- times each in hour H-3 (a spike: 12 > 10; 8 card_declined, 4
-- insufficient_funds); payment 7 once, ten days ago
INSERT INTO "PaymentFailures" ("PaymentId", "FailureCode", "FailureMessage", "RetryCount", "FailedAt")
SELECT ('40000000-0000-0000-0000-' || lpad(p::text, 12, '0'))::uuid, code, 'declined', k - 1, at + k * interval '1 second'
  FROM h, LATERAL (VALUES
	(3, 'card_declined', 2, h.h - interval '5 hours' + interval '20 minutes'),
	(5, 'card_declined', 4, h.h - interval '3 hours' + interval '10 minutes'),
	(9, 'card_declined', 4, h.h - interval '3 hours' + interval '20 minutes'),
	(10, 'insufficient_funds', 4, h.h - interval '3 hours' + interval '30 minutes'),
	(7, 'expired_card', 1, now() - interval '10 days')) v(p, code, n, at),
	LATERAL generate_series(1, n) k;

-- ---------------------------------------------------------------------------
-- payment.event_revenue
-- ---------------------------------------------------------------------------
-- E1 USD: paid 1, 2, 3, 4, 7 (5, 9, 10 Failed, 6 Pending, 8 NotRequired)
--   gross 40 + 30 + 20 + 26.80 + 10 = 126.80; full price 5 x 40 = 200.00;
--   discounts 73.20; refunds completed 20 + 10 = 30.00; processing 5.00;
--   net 96.80
-- E2 CAD: 27.66 + 2.50 = 30.16; full price 33.33 + 10.00 = 43.33 (10.01 at
--   75 % is 2.5025, charged 2.50, which derives 10.00: the documented cent);
--   discounts 13.17
-- E2 USD: 80.00; E3: 25.00; E4: no row
SELECT event_title, currency, payments, gross, full_price, discounts, refunds, refunds_processing, net
  FROM payment.event_revenue
 ORDER BY event_title, currency;
-- one event, as the application asks
SELECT payments, gross, net FROM payment.event_revenue
 WHERE event_id = '20000000-0000-0000-0000-000000000001'
 ORDER BY currency;

-- ---------------------------------------------------------------------------
-- payment.sliding_scale_summary
-- ---------------------------------------------------------------------------
-- all time, USD paid: 1 (40, 0 %), 13 (80, 0 %), 14 (25, 0 %), 2 (30, 25 %),
--   3 (20, 50 %), 4 (26.80, 33 %), 7 (10, 75 %): 7 payments
--   Full Price: 3, 145.00, average 48.33, nothing forgone
--   Light: 1, 30.00 of 40.00, 10.00 forgone = 25.00 %
--   Moderate: 2, 46.80 of 80.00, 33.20 forgone = 41.50 %, average 23.40
--   High: 1, 10.00 of 40.00, 75.00 %
-- CAD: 11 (27.66 of 33.33, light), 12 (2.50 of 10.00, high): 50 % each
SELECT currency, discount_band, payments, payments_share, revenue, average_amount, full_price, discounts, share_forgone
  FROM payment.sliding_scale_summary
 ORDER BY currency, band_order;
-- the last three months leave out payment 14 (four months old): USD Full
-- Price 2, 120.00; a window with nothing in it has no rows
SELECT currency, discount_band, payments, revenue, average_amount
  FROM payment.sliding_scale_summary(now() - interval '3 months', now())
 WHERE band_order = 1
 ORDER BY currency;
SELECT count(*) AS rows_in_an_empty_window
  FROM payment.sliding_scale_summary('2000-01-01', '2001-01-01');
-- the window is half-open: [since, until)
SELECT sum(payments) AS paid_in_the_last_hour
  FROM payment.sliding_scale_summary(now() - interval '1 hour', now() + interval '1 second');
SELECT sum(payments) AS until_excludes_its_bound
  FROM payment.sliding_scale_summary(now() - interval '1 hour',
                                     (SELECT "CreatedAt" FROM "Payments" WHERE "Id" = '40000000-0000-0000-0000-000000000001'));

-- ---------------------------------------------------------------------------
-- payment.payment_metrics
-- ---------------------------------------------------------------------------
-- 1 hour: 1, 2, 6: 2 paid, 1 pending; 100.00 %; (1.5 + 2.5) / 2 = 2.000 s
-- 24 hours: + 3, 5, 8, 9, 10: 3 paid, 3 failed, 1 pending, 1 not required;
--   50.00 %; (1.5 + 2.5 + 1 + 3 + 3 + 3) / 6 = 2.333 s; 14 failed attempts
-- 7 days: + 4: 57.14 %; 18.5 / 7 = 2.643 s
-- 30 days: + 7: 62.50 %; 22.5 / 8 = 2.8125 -> 2.813 s; 15 failed attempts
SELECT period, payments, succeeded, failed, pending, not_required, failed_attempts,
       success_rate, avg_processing_seconds, max_processing_seconds,
       now() - since AS length
  FROM payment.payment_metrics
 ORDER BY since DESC;

-- ---------------------------------------------------------------------------
-- payment.failure_spikes
-- ---------------------------------------------------------------------------
SELECT count(*) AS hours, min(hour) = (SELECT h - interval '23 hours' FROM h) AS first_hour,
       max(hour) = (SELECT h FROM h) AS last_hour
  FROM payment.failure_spikes;
-- H-5: payment 3's two attempts (it completed: no failed payment);
-- H-3: the spike, payments 5, 9, 10 Failed
SELECT (SELECT h FROM h) - hour AS hours_ago, failed_attempts, payments_affected, top_failure_code,
       failed_payments, is_spike
  FROM payment.failure_spikes
 WHERE failed_attempts > 0 OR failed_payments > 0
 ORDER BY hour;

-- ---------------------------------------------------------------------------
-- payment.refund_metrics
-- ---------------------------------------------------------------------------
-- 24 hours: refund 1 (3.00 h)
-- 7 days: + refund 2 (48.00 h) and refund 3 (Processing for 30 h): two
--   over 24 hours; average (3 + 48) / 2 = 25.50 h
-- 30 days: + refund 4 (Failed)
SELECT period, refunds, completed, failed, processing, avg_completion_hours, max_completion_hours, over_24_hours
  FROM payment.refund_metrics
 ORDER BY since DESC;

-- ---------------------------------------------------------------------------
-- payment.outbox_health
-- ---------------------------------------------------------------------------
SELECT * FROM payment.outbox_health;  -- an empty outbox
INSERT INTO payment.outbox (kind, payment_id, request, idempotency_key, state, attempts, next_attempt_at, claimed_at)
SELECT 'payment_intent.create', ('40000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, '{}',
       'views-test-' || i, state, attempts, next_at, claimed
  FROM (VALUES (1, 'done', 1, now() - interval '1 day', NULL::timestamptz),
               (2, 'done', 1, now() - interval '1 day', NULL),
               (3, 'done', 3, now() - interval '1 day', NULL),
               (4, 'pending', 0, now() - interval '5 minutes', NULL),    -- due
               (5, 'pending', 2, now() + interval '10 minutes', NULL),   -- backing off
               (6, 'sending', 1, now() - interval '1 minute', now() - interval '30 seconds'),
               (7, 'dead', 8, now() - interval '2 hours', NULL)) v(i, state, attempts, next_at, claimed);
-- done 3 (one after 3 attempts); histogram of the four rows not done
SELECT pending, due, sending, done, done_after_retries, dead,
       oldest_due_age >= interval '5 minutes' AND oldest_due_age < interval '6 minutes' AS due_for_5_minutes,
       oldest_sending_age >= interval '30 seconds' AND oldest_sending_age < interval '90 seconds' AS sending_for_30_seconds,
       attempts_histogram
  FROM payment.outbox_health;

-- ---------------------------------------------------------------------------
-- the reporting role reads the views, never the tables
-- ---------------------------------------------------------------------------
SET ROLE payment_reporting;
SELECT count(*) AS event_revenue_rows FROM payment.event_revenue;
SELECT count(*) AS summary_rows FROM payment.sliding_scale_summary;
SELECT sum(payments) AS windowed FROM payment.sliding_scale_summary(now() - interval '3 months', now());
SELECT count(*) AS metrics_rows FROM payment.payment_metrics;
SELECT count(*) AS spike_rows FROM payment.failure_spikes;
SELECT count(*) AS refund_metric_rows FROM payment.refund_metrics;
SELECT dead FROM payment.outbox_health;
SELECT try($q$SELECT "EncryptedStripePaymentIntentId" FROM "Payments"$q$);  -- a sealed column
SELECT try($q$SELECT 1 FROM "PaymentAuditLog"$q$);                          -- the audit log: allowed
SELECT try($q$SELECT 1 FROM payment.outbox$q$);                             -- the outbox itself: refused
RESET ROLE;
-- and PUBLIC reads nothing
CREATE ROLE regress_views_nobody;
SET ROLE regress_views_nobody;
SELECT try($q$SELECT 1 FROM payment.event_revenue$q$);  -- not granted
SELECT try($q$SELECT 1 FROM payment.sliding_scale_summary(now(), now())$q$);  -- not granted
RESET ROLE;
DROP ROLE regress_views_nobody;
