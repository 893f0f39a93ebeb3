--
-- bench/generate.sql — fill a database that has payment_ext with realistic
-- data for the reports and their benchmark (issue 10).
--
--   psql -v payments=1000000 -f bench/generate.sql DBNAME
--
-- Variables (psql -v): payments (1,000,000), users (payments / 20, at least
-- twice an event's registrations), outbox (100,000 outbox rows), seed (0.2026).
--
-- What it makes, over the two years before now:
--   - users; events every few hours from two years ago to a month ahead,
--     each with pricing tiers standard (20.00-120.00), supporter (1.5 x) and
--     volunteer (0.00), in USD (85 %), CAD, EUR or GBP;
--   - one registration and one payment per registration, created up to 30
--     days before the event: the spec's four discount bands (45 % full
--     price, 25 % 1-25 %, 20 % 26-50 %, 10 % 51-75 %), amounts from
--     payment.price; Completed, Failed (4 %), NotRequired (volunteers, 1 %),
--     Pending (a third of the last hour's);
--   - refunds of 6 % of the completed payments: whole (Refunded), partial
--     (PartiallyRefunded), Failed (the payment stays Completed) and still
--     Processing, so every payment status occurs;
--   - "PaymentFailures": one to three per Failed payment, one for 3 % of the
--     Completed ones (a declined first try);
--   - the audit trail: written by the C audit trigger, row by row, since all
--     of this goes in through the tables with every trigger on;
--   - payment.outbox rows: mostly done, some pending (due or backing off),
--     in flight and dead.
--
-- Everything is set-based INSERT ... SELECT, in chunks of 50,000 rows (each
-- its own transaction), which still fires every row trigger: the state
-- machine, the refund rules and their sync, the audit trail and its hash
-- chains, the foreign keys.  Rows go in in creation order, as they would
-- have.  Ends with VACUUM ANALYZE.
--
\set ON_ERROR_STOP 1
\set QUIET 1
SET client_min_messages = warning;
\if :{?payments}
\else
\set payments 1000000
\endif
\if :{?outbox}
\else
\set outbox 100000
\endif
\if :{?seed}
\else
\set seed 0.2026
\endif
-- about 500 registrations per event
SELECT greatest(10, :payments / 500) AS events \gset
\if :{?users}
\else
SELECT greatest(:payments / 20, 2 * (:payments / :events) + 1) AS users \gset
\endif
SELECT :payments / :events AS per_event \gset
SELECT clock_timestamp() AS gen_t0 \gset

SELECT setseed(:seed) AS seeded \gset

-- ---------------------------------------------------------------------------
-- users and events
-- ---------------------------------------------------------------------------
INSERT INTO "Users" ("Id", "SceneName", "Email", "CreatedAt", "UpdatedAt")
SELECT md5('user' || i)::uuid, 'member' || i, 'member' || i || '@example.org',
       now() - interval '3 years' + i * interval '1 minute', now() - interval '3 years' + i * interval '1 minute'
  FROM generate_series(0, :users - 1) i;

CREATE UNLOGGED TABLE gen_events AS
SELECT e,
       md5('event' || e)::uuid AS id,
       now() - interval '2 years' + e * ((interval '2 years' + interval '30 days') / :events) AS start,
       (ARRAY[20, 25, 30, 35, 40, 45, 50, 60, 75, 80, 100, 120])[1 + e % 12]::numeric(10, 2) AS price,
       CASE WHEN e % 100 < 85 THEN 'USD' WHEN e % 100 < 92 THEN 'CAD'
            WHEN e % 100 < 97 THEN 'EUR' ELSE 'GBP' END AS currency
  FROM generate_series(0, :events - 1) e;

INSERT INTO "Events" ("Id", "Title", "StartDate", "EndDate", "Capacity", "IsPublished", "PricingTiers", "CreatedAt", "UpdatedAt")
SELECT id,
       (ARRAY['Rope Basics', 'Floor Work', 'Suspension Lab', 'Community Jam', 'Safety Workshop', 'Advanced Ties'])[1 + e % 6] || ' #' || e,
       start, start + interval '3 hours', :per_event + 100, true,
       jsonb_build_array(
           jsonb_build_object('name', 'standard', 'price', price, 'currency', currency),
           jsonb_build_object('name', 'supporter', 'price', round(price * 1.5, 2), 'currency', currency),
           jsonb_build_object('name', 'volunteer', 'price', 0.00, 'currency', currency)),
       start - interval '45 days', start - interval '45 days'
  FROM gen_events;

-- ---------------------------------------------------------------------------
-- the plan of every registration and its payment, drawn once
-- ---------------------------------------------------------------------------
-- (the random draws are made in the scan of generate_series: a LATERAL
-- subquery that refers to no outer column would be drawn once for all rows)
CREATE UNLOGGED TABLE gen_plan AS
SELECT r.*, x.*,
       CASE WHEN x.tier = 'volunteer' THEN 0::numeric(10, 2)
            ELSE payment.price(x.full_price, x.pct) END AS amount
  FROM (SELECT j, random() AS r_tier, random() AS r_pct, random() AS r_val, random() AS r_days,
               random() * 86400 AS r_secs, random() AS r_method, random() AS r_status,
               0.4 + random() * 3 AS r_proc
          FROM generate_series(0, :payments - 1) j) r
  JOIN gen_events g ON g.e = least(r.j / :per_event, :events - 1)
 CROSS JOIN LATERAL (
	SELECT md5('reg' || r.j)::uuid AS reg_id,
	       md5('pay' || r.j)::uuid AS pay_id,
	       md5('user' || ((g.e * 7919 + (r.j - g.e * :per_event)) % :users))::uuid AS user_id,
	       g.id AS event_id,
	       g.currency,
	       CASE WHEN r.r_tier < 0.01 THEN 'volunteer' WHEN r.r_tier < 0.11 THEN 'supporter' ELSE 'standard' END AS tier,
	       CASE WHEN r.r_tier < 0.01 THEN 0::numeric
	            WHEN r.r_tier < 0.11 THEN round(g.price * 1.5, 2) ELSE g.price END AS full_price,
	       CASE WHEN r.r_tier < 0.01 OR r.r_pct < 0.45 THEN 0
	            WHEN r.r_pct < 0.70 THEN 1 + floor(r.r_val * 25)
	            WHEN r.r_pct < 0.90 THEN 26 + floor(r.r_val * 25)
	            ELSE 51 + floor(r.r_val * 25) END::numeric(5, 2) AS pct,
	       least(g.start - (1 + r.r_days * 29) * interval '1 day' + r.r_secs * interval '1 second',
	             now() - r.r_secs * interval '1 second') AS created,
	       (ARRAY[0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 3, 3, 4])[1 + floor(r.r_method * 13)::int] AS method
       ) x;
ALTER TABLE gen_plan ADD COLUMN status int;
UPDATE gen_plan SET status = CASE
	WHEN tier = 'volunteer' THEN 5
	WHEN created > now() - interval '1 hour' AND r_status < 0.33 THEN 0
	WHEN r_status > 0.96 THEN 2
	ELSE 1 END;
CREATE INDEX ON gen_plan (j);
ANALYZE gen_plan;
SELECT clock_timestamp() AS gen_t1 \gset

-- ---------------------------------------------------------------------------
-- registrations and payments, 50,000 at a time, in creation order
-- ---------------------------------------------------------------------------
SELECT format($f$
INSERT INTO "EventRegistrations" ("Id", "EventId", "UserId", "Tier", "CreatedAt")
SELECT reg_id, event_id, user_id, tier, created FROM gen_plan WHERE j >= %1$s AND j < %2$s ORDER BY created
$f$, lo, lo + 50000)
  FROM generate_series(0, :payments - 1, 50000) lo
\gexec
SELECT clock_timestamp() AS gen_t2 \gset

SELECT format($f$
INSERT INTO "Payments" ("Id", "EventRegistrationId", "UserId", "AmountValue", "Currency",
                        "SlidingScalePercentage", "Status", "PaymentMethodType",
                        "ProcessedAt", "CreatedAt", "UpdatedAt", "Metadata")
SELECT pay_id, reg_id, user_id, amount, currency, pct, status, method,
       CASE status WHEN 0 THEN NULL WHEN 5 THEN created ELSE created + r_proc * interval '1 second' END,
       created,
       CASE status WHEN 0 THEN created ELSE created + r_proc * interval '1 second' END,
       jsonb_build_object('source', CASE WHEN r_method < 0.7 THEN 'web' ELSE 'app' END, 'tier', tier)
  FROM gen_plan WHERE j >= %1$s AND j < %2$s ORDER BY created
$f$, lo, lo + 50000)
  FROM generate_series(0, :payments - 1, 50000) lo
\gexec
SELECT clock_timestamp() AS gen_t3 \gset

-- ---------------------------------------------------------------------------
-- failures: every Failed payment's attempts, and a declined first try of
-- some Completed ones
-- ---------------------------------------------------------------------------
INSERT INTO "PaymentFailures" ("PaymentId", "FailureCode", "FailureMessage", "RetryCount", "FailedAt", "CreatedAt")
SELECT p.pay_id, c.code, c.message, k - 1,
       p.created + k * interval '1 second', p.created + k * interval '1 second'
  FROM gen_plan p
 CROSS JOIN LATERAL generate_series(1, CASE WHEN p.status = 2 THEN 1 + (p.j % 3) ELSE 1 END) k
 CROSS JOIN LATERAL (
	SELECT (ARRAY['card_declined', 'card_declined', 'card_declined', 'card_declined', 'card_declined',
	              'insufficient_funds', 'insufficient_funds', 'expired_card', 'incorrect_cvc',
	              'processing_error'])[1 + (p.j + k) % 10] AS code) cc
 CROSS JOIN LATERAL (
	SELECT cc.code, CASE cc.code
	           WHEN 'card_declined' THEN 'Your card was declined.'
	           WHEN 'insufficient_funds' THEN 'Your card has insufficient funds.'
	           WHEN 'expired_card' THEN 'Your card has expired.'
	           WHEN 'incorrect_cvc' THEN 'Your card''s security code is incorrect.'
	           ELSE 'An error occurred while processing your card. Try again in a little bit.' END AS message) c
 WHERE p.status = 2 OR (p.status = 1 AND p.r_val < 0.03 AND p.r_pct >= 0.45)
 ORDER BY p.created, k;
SELECT clock_timestamp() AS gen_t4 \gset

-- ---------------------------------------------------------------------------
-- refunds of 6 % of the Completed payments: whole, partial, failed and
-- still processing.  The sync trigger makes their payments Refunded or
-- PartiallyRefunded and fills the refund columns.
-- ---------------------------------------------------------------------------
CREATE UNLOGGED TABLE gen_refunds AS
SELECT p.pay_id, p.amount, p.currency, p.created,
       CASE WHEN p.r_k < 0.55 THEN 'whole' WHEN p.r_k < 0.85 THEN 'partial'
            WHEN p.r_k < 0.95 THEN 'failed' ELSE 'processing' END AS kind,
       CASE WHEN p.r_k >= 0.55 AND p.r_k < 0.85
            THEN greatest(0.01, least(p.amount - 0.01, round(p.amount * (0.25 + p.r_share * 0.5)::numeric, 2)))
            ELSE p.amount END AS refund_amount,
       least(p.created + (1 + p.r_d * 20) * interval '1 day', now() - interval '2 hours') AS asked,
       p.r_h AS hours
  FROM (SELECT pay_id, amount, currency, created, random() AS r_k, random() AS r_share,
               random() AS r_d, 0.5 + random() * 30 AS r_h
          FROM gen_plan
         WHERE status = 1 AND amount > 0.01 AND random() < 0.06) p;

SELECT format($f$
INSERT INTO "PaymentRefunds" ("OriginalPaymentId", "RefundAmountValue", "RefundCurrency", "RefundReason",
                              "RefundStatus", "ProcessedByUserId", "ProcessedAt", "CreatedAt", "Metadata")
SELECT pay_id, refund_amount, currency,
       (ARRAY['Attendee could not come', 'Event rescheduled, attendee unavailable',
              'Duplicate registration by mistake', 'Organiser goodwill refund'])[1 + (abs(hashtext(pay_id::text)) %% 4)],
       CASE kind WHEN 'failed' THEN 2 WHEN 'processing' THEN 0 ELSE 1 END,
       md5('user0')::uuid,
       asked + CASE kind WHEN 'processing' THEN interval '0' ELSE hours * interval '1 hour' END,
       asked, '{}'
  FROM gen_refunds WHERE asked >= %1$L::timestamptz AND asked < %2$L::timestamptz ORDER BY asked
$f$, lo, lo + interval '90 days')
  FROM generate_series(now() - interval '3 years', now(), interval '90 days') lo
\gexec
SELECT clock_timestamp() AS gen_t5 \gset

-- ---------------------------------------------------------------------------
-- the outbox: one Stripe request per recent payment, mostly done
-- ---------------------------------------------------------------------------
INSERT INTO payment.outbox (kind, payment_id, request, idempotency_key, state, attempts,
                            next_attempt_at, first_attempt_at, claimed_at, last_error, last_http_status,
                            created_at, updated_at, completed_at)
SELECT 'payment_intent.create', p.pay_id,
       jsonb_build_object('amount', (p.amount * 100)::bigint::text, 'currency', lower(p.currency),
                          'metadata[payment_id]', p.pay_id::text),
       'gen-' || p.pay_id,
       s.state,
       CASE s.state WHEN 'dead' THEN 8 WHEN 'pending' THEN (i % 4) WHEN 'sending' THEN 1 + (i % 2)
                    ELSE 1 + (CASE WHEN i % 20 = 0 THEN 1 + i % 3 ELSE 0 END) END,
       CASE WHEN s.state = 'pending' AND i % 2 = 0 THEN now() + (i % 300) * interval '1 second'
            WHEN s.state = 'pending' THEN now() - (i % 120) * interval '1 second'
            ELSE p.created END,
       CASE WHEN s.state = 'pending' AND i % 4 = 0 THEN NULL ELSE p.created END,
       CASE WHEN s.state = 'sending' THEN now() - (i % 10) * interval '1 second' END,
       CASE WHEN s.state IN ('dead', 'pending') AND i % 4 <> 0 THEN 'HTTP 500 from Stripe' END,
       CASE WHEN s.state IN ('dead', 'pending') AND i % 4 <> 0 THEN 500 END,
       p.created, p.created,
       CASE WHEN s.state = 'done' THEN p.created + interval '1 second' END
  FROM (SELECT row_number() OVER (ORDER BY created DESC) AS i, pay_id, amount, currency, created
          FROM gen_plan WHERE status <> 5 ORDER BY created DESC LIMIT :outbox) p
 CROSS JOIN LATERAL (
	SELECT CASE WHEN p.i % 100 < 96 THEN 'done' WHEN p.i % 100 < 98 THEN 'pending'
	            WHEN p.i % 100 < 99 THEN 'sending' ELSE 'dead' END AS state) s
 ORDER BY p.created;
SELECT clock_timestamp() AS gen_t6 \gset

DROP TABLE gen_refunds, gen_plan, gen_events;
VACUUM ANALYZE;
SELECT clock_timestamp() AS gen_t7 \gset

\unset QUIET
\pset footer off
SELECT to_char(:payments, 'FM9,999,999,999') AS payments, :users AS users, :events AS events,
       round(extract(epoch FROM :'gen_t1'::timestamptz - :'gen_t0'::timestamptz), 1) AS plan_s,
       round(extract(epoch FROM :'gen_t2'::timestamptz - :'gen_t1'::timestamptz), 1) AS registrations_s,
       round(extract(epoch FROM :'gen_t3'::timestamptz - :'gen_t2'::timestamptz), 1) AS payments_s,
       round(extract(epoch FROM :'gen_t4'::timestamptz - :'gen_t3'::timestamptz), 1) AS failures_s,
       round(extract(epoch FROM :'gen_t5'::timestamptz - :'gen_t4'::timestamptz), 1) AS refunds_s,
       round(extract(epoch FROM :'gen_t6'::timestamptz - :'gen_t5'::timestamptz), 1) AS outbox_s,
       round(extract(epoch FROM :'gen_t7'::timestamptz - :'gen_t6'::timestamptz), 1) AS vacuum_s,
       round(extract(epoch FROM :'gen_t7'::timestamptz - :'gen_t0'::timestamptz), 1) AS total_s;
SELECT payment.status_name("Status") AS status, count(*) AS payments FROM "Payments" GROUP BY "Status" ORDER BY "Status";
SELECT (SELECT count(*) FROM "PaymentRefunds") AS refunds, (SELECT count(*) FROM "PaymentFailures") AS failures,
       (SELECT count(*) FROM "PaymentAuditLog") AS audit_rows, (SELECT count(*) FROM payment.outbox) AS outbox_rows;
