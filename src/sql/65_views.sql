
-- ---------------------------------------------------------------------------
-- reporting (issue 10): views in schema payment, granted to
-- payment_reporting
--
-- Plain SQL.  Names in a view are resolved once, when CREATE EXTENSION
-- creates it (pg_catalog first), so its text needs no pg_catalog.
-- qualification; the function body, parsed at each call, is pinned by its
-- SET search_path.  A view reads the tables with its owner's privileges (the
-- superuser who created the extension), so payment_reporting needs, and
-- gets, SELECT on the views only: it never reads a table, and no view
-- exposes an Encrypted... column.
--
-- Money is numeric throughout; sums are exact, averages are rounded half-up
-- to the cent.  A "paid" payment is Completed (1), PartiallyRefunded (4) or
-- Refunded (3): one that was charged, whatever was refunded since.
--
-- Full price: a payment stores what was charged and the discount, not the
-- price it was discounted from.  The views derive it as
--     round(AmountValue * 100 / (100 - SlidingScalePercentage), 2)
-- which gives back the tier price exactly whenever the charged amount
-- needed no rounding (price x (100 - discount) / 100 has no fraction of a
-- cent: whole-dollar prices at whole-percent discounts, the usual case),
-- and otherwise within a cent (discounts up to 50 %), two cents at most
-- (up to 75 %): the amount's rounding error of half a cent, divided by
-- (1 - discount/100), then rounded to the cent.  Deriving it
-- needs no join to "EventRegistrations" and "Events", which keeps the
-- sliding-scale report an index range scan of "Payments" alone.
-- ---------------------------------------------------------------------------

-- the roles come from 05_roles.sql, which also grants USAGE on schema payment

-- ---------------------------------------------------------------------------
-- indexes the reports need (beyond the spec's)
-- ---------------------------------------------------------------------------

-- spec query 3, a user's history newest first: one index range, no sort
CREATE INDEX "IX_Payments_UserId_CreatedAt"
	ON "Payments"("UserId", "CreatedAt" DESC);

-- event_revenue: an event's registrations, then their payments, both read
-- from the index alone (index-only scans).  "Status" follows the
-- registration so that the paid ones are one range; "Id" is included for
-- the refund lookup.  "Status" and "RefundAmountValue" were already indexed
-- (by "IX_Payments_Status" and the predicate of "IX_Payments_RefundedStatus"),
-- so their updates were never HOT: this index costs no HOT update.
CREATE INDEX "IX_Payments_EventRegistrationId_Status"
	ON "Payments"("EventRegistrationId", "Status")
	INCLUDE ("Id", "Currency", "AmountValue", "SlidingScalePercentage", "RefundAmountValue");

-- "UX_EventRegistrations_Event_User" finds an event's registrations but not
-- their ids without a heap visit.  Only on the table payment_ext created:
-- an application's own "EventRegistrations" keeps the indexes its owner
-- chose (README.md, Reporting, names the one to add).
DO $pe_report_reg_idx$
BEGIN
	IF EXISTS (SELECT 1
	             FROM pg_catalog.pg_depend d
	             JOIN pg_catalog.pg_extension x ON x.oid OPERATOR(pg_catalog.=) d.refobjid
	            WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
	              AND d.objid OPERATOR(pg_catalog.=) '"EventRegistrations"'::pg_catalog.regclass
	              AND d.deptype OPERATOR(pg_catalog.=) 'e'
	              AND x.extname OPERATOR(pg_catalog.=) 'payment_ext')
	THEN
		CREATE INDEX "IX_EventRegistrations_EventId"
			ON "EventRegistrations"("EventId") INCLUDE ("Id");
	END IF;
END
$pe_report_reg_idx$;

-- sliding_scale_summary over a time window: paid payments by creation time,
-- with what the summary reads, so a three-month window is an index-only
-- range scan
CREATE INDEX "IX_Payments_Paid_CreatedAt"
	ON "Payments"("CreatedAt")
	INCLUDE ("Currency", "SlidingScalePercentage", "AmountValue")
	WHERE "Status" IN (1, 3, 4);

-- refund_metrics: refunds by the time they were asked for
CREATE INDEX "IX_PaymentRefunds_CreatedAt"
	ON "PaymentRefunds"("CreatedAt" DESC);

-- outbox_health: rows by state and attempts, counted from the index alone
CREATE INDEX outbox_state_attempts_idx
	ON payment.outbox (state, attempts);

-- ---------------------------------------------------------------------------
-- payment.event_revenue
-- ---------------------------------------------------------------------------
CREATE VIEW payment.event_revenue AS
SELECT e."Id" AS event_id,
       e."Title" AS event_title,
       e."StartDate" AS event_start,
       p."Currency" AS currency,
       count(*) AS payments,
       sum(p."AmountValue") AS gross,
       sum(f.full_price) AS full_price,
       sum(f.full_price - p."AmountValue") AS discounts,
       sum(r.refunded) AS refunds,
       sum(COALESCE(p."RefundAmountValue", 0) - r.refunded) AS refunds_processing,
       sum(p."AmountValue" - r.refunded) AS net
  FROM "Events" e
  JOIN "EventRegistrations" g ON g."EventId" = e."Id"
  JOIN "Payments" p ON p."EventRegistrationId" = g."Id"
 CROSS JOIN LATERAL (
	SELECT round(p."AmountValue" * 100
	                        / (100 - p."SlidingScalePercentage"), 2) AS full_price
       ) f
 CROSS JOIN LATERAL (
	-- completed refunds; only a payment with refunds has "RefundAmountValue",
	-- so the others skip the lookup (a one-time filter)
	SELECT COALESCE(sum(x."RefundAmountValue"), 0.00) AS refunded
	  FROM "PaymentRefunds" x
	 WHERE x."OriginalPaymentId" = p."Id"
	   AND x."RefundStatus" = 1
	   AND p."RefundAmountValue" IS NOT NULL
       ) r
 WHERE p."Status" IN (1, 3, 4)
 GROUP BY e."Id", p."Currency";

COMMENT ON VIEW payment.event_revenue IS
	'revenue per event and currency from paid payments (Completed, PartiallyRefunded, Refunded) of the event''s registrations; filter on event_id for one event';
COMMENT ON COLUMN payment.event_revenue.event_id IS '"Events"."Id"';
COMMENT ON COLUMN payment.event_revenue.event_title IS '"Events"."Title"';
COMMENT ON COLUMN payment.event_revenue.event_start IS '"Events"."StartDate"';
COMMENT ON COLUMN payment.event_revenue.currency IS 'currency of the payments of this row (an event paid in two currencies has two rows)';
COMMENT ON COLUMN payment.event_revenue.payments IS 'number of paid payments (Completed, PartiallyRefunded, Refunded)';
COMMENT ON COLUMN payment.event_revenue.gross IS 'sum of "AmountValue" charged, before refunds';
COMMENT ON COLUMN payment.event_revenue.full_price IS 'sum of the full prices, each derived as round(AmountValue * 100 / (100 - SlidingScalePercentage), 2)';
COMMENT ON COLUMN payment.event_revenue.discounts IS 'sliding-scale discounts given: full_price - gross';
COMMENT ON COLUMN payment.event_revenue.refunds IS 'sum of Completed refunds (money returned)';
COMMENT ON COLUMN payment.event_revenue.refunds_processing IS 'sum of refunds still Processing (asked for, not yet confirmed by Stripe)';
COMMENT ON COLUMN payment.event_revenue.net IS 'gross - refunds: what the event kept';

-- ---------------------------------------------------------------------------
-- payment.sliding_scale_summary(since, until) and the all-time view
-- ---------------------------------------------------------------------------
CREATE FUNCTION payment.sliding_scale_summary(since timestamptz, until timestamptz)
RETURNS TABLE (
	currency         text,
	discount_band    text,
	band_order       integer,
	payments         bigint,
	payments_share   numeric,
	revenue          numeric,
	average_amount   numeric,
	full_price       numeric,
	discounts        numeric,
	share_forgone    numeric
)
LANGUAGE sql STABLE SECURITY DEFINER PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $pe_sss$
	WITH paid AS (
		SELECT p."Currency" AS currency,
		       CASE WHEN p."SlidingScalePercentage" = 0 THEN 1
		            WHEN p."SlidingScalePercentage" <= 25 THEN 2
		            WHEN p."SlidingScalePercentage" <= 50 THEN 3
		            ELSE 4 END AS band,
		       p."AmountValue" AS amount,
		       round(p."AmountValue" * 100 / (100 - p."SlidingScalePercentage"), 2) AS full_price
		  FROM @extschema@."Payments" p
		 WHERE p."Status" IN (1, 3, 4)
		   AND p."CreatedAt" >= since
		   AND p."CreatedAt" < until
	), stats AS (
		SELECT currency, band, count(*) AS payments, sum(amount) AS revenue,
		       sum(full_price) AS full_price
		  FROM paid
		 GROUP BY currency, band
	)
	SELECT c.currency::text,
	       b.label,
	       b.band,
	       COALESCE(s.payments, 0),
	       round(100.0 * COALESCE(s.payments, 0) / sum(s.payments) OVER (PARTITION BY c.currency), 2),
	       COALESCE(s.revenue, 0.00),
	       round(s.revenue / s.payments, 2),
	       COALESCE(s.full_price, 0.00),
	       COALESCE(s.full_price - s.revenue, 0.00),
	       round(100 * (s.full_price - s.revenue) / nullif(s.full_price, 0), 2)
	  FROM (SELECT DISTINCT currency FROM stats) c
	 CROSS JOIN (VALUES (1, 'Full Price'),
	                    (2, 'Light Discount (1-25%)'),
	                    (3, 'Moderate Discount (26-50%)'),
	                    (4, 'High Discount (51-75%)')) b(band, label)
	  LEFT JOIN stats s ON s.currency = c.currency AND s.band = b.band
	 ORDER BY c.currency, b.band
$pe_sss$;
-- SECURITY DEFINER (with a fixed search_path), like a view: it reads
-- "Payments" as its owner and returns aggregates only, so payment_reporting
-- needs EXECUTE on it and nothing on the table.
COMMENT ON FUNCTION payment.sliding_scale_summary(timestamptz, timestamptz) IS
	'the spec''s four sliding-scale bands over paid payments created in [since, until), per currency: counts, revenue, average, full price and the share of it forgone; four rows per currency that has payments, empty bands included';

CREATE VIEW payment.sliding_scale_summary AS
SELECT s.currency, s.discount_band, s.band_order, s.payments, s.payments_share, s.revenue,
       s.average_amount, s.full_price, s.discounts, s.share_forgone
  FROM payment.sliding_scale_summary('-infinity', 'infinity') s;

COMMENT ON VIEW payment.sliding_scale_summary IS
	'the spec''s four sliding-scale bands over all paid payments (Completed, PartiallyRefunded, Refunded), per currency; for a time window call payment.sliding_scale_summary(since, until)';
COMMENT ON COLUMN payment.sliding_scale_summary.currency IS 'currency of the payments (amounts in different currencies are never added together)';
COMMENT ON COLUMN payment.sliding_scale_summary.discount_band IS 'Full Price (0 %), Light Discount (1-25%), Moderate Discount (26-50%), High Discount (51-75%): the spec''s bands of "SlidingScalePercentage"';
COMMENT ON COLUMN payment.sliding_scale_summary.band_order IS '1 to 4, from no discount to the highest band: ORDER BY it';
COMMENT ON COLUMN payment.sliding_scale_summary.payments IS 'number of paid payments in the band';
COMMENT ON COLUMN payment.sliding_scale_summary.payments_share IS 'percent of the currency''s paid payments that fall in the band, two decimals';
COMMENT ON COLUMN payment.sliding_scale_summary.revenue IS 'sum of "AmountValue" charged in the band, before refunds';
COMMENT ON COLUMN payment.sliding_scale_summary.average_amount IS 'revenue / payments, rounded half-up to the cent; NULL for an empty band';
COMMENT ON COLUMN payment.sliding_scale_summary.full_price IS 'sum of the full prices, each derived as round(AmountValue * 100 / (100 - SlidingScalePercentage), 2)';
COMMENT ON COLUMN payment.sliding_scale_summary.discounts IS 'full_price - revenue: what payers in the band did not pay';
COMMENT ON COLUMN payment.sliding_scale_summary.share_forgone IS 'percent of the full price forgone: 100 * discounts / full_price, two decimals; NULL for an empty band';

-- ---------------------------------------------------------------------------
-- payment.outbox_health
-- ---------------------------------------------------------------------------
-- Every figure is read from an index alone where it can be: the done rows,
-- nearly all of a busy outbox, are only counted (an index-only scan of
-- outbox_state_attempts_idx); the histogram covers the few rows not done.
CREATE VIEW payment.outbox_health AS
SELECT (SELECT count(*) FROM payment.outbox o WHERE o.state = 'pending') AS pending,
       (SELECT count(*) FROM payment.outbox o
         WHERE o.state = 'pending' AND o.next_attempt_at <= now()) AS due,
       (SELECT count(*) FROM payment.outbox o WHERE o.state = 'sending') AS sending,
       (SELECT count(*) FROM payment.outbox o WHERE o.state = 'done') AS done,
       (SELECT count(*) FROM payment.outbox o WHERE o.state = 'done' AND o.attempts > 1) AS done_after_retries,
       (SELECT count(*) FROM payment.outbox o WHERE o.state = 'dead') AS dead,
       now() - (SELECT min(o.next_attempt_at) FROM payment.outbox o
                 WHERE o.state = 'pending' AND o.next_attempt_at <= now()) AS oldest_due_age,
       now() - (SELECT min(o.claimed_at) FROM payment.outbox o
                 WHERE o.state = 'sending') AS oldest_sending_age,
       (SELECT COALESCE(jsonb_object_agg(h.attempts, h.n ORDER BY h.attempts), '{}')
          FROM (SELECT o.attempts, count(*) AS n
                  FROM payment.outbox o
                 WHERE o.state IN ('pending', 'sending', 'dead')
                 GROUP BY o.attempts) h) AS attempts_histogram;

COMMENT ON VIEW payment.outbox_health IS
	'one row: the Stripe outbox at a glance (rows by state, the oldest due row''s age, the attempts histogram of the rows not done)';
COMMENT ON COLUMN payment.outbox_health.pending IS 'rows waiting to be sent (state pending), due or backing off';
COMMENT ON COLUMN payment.outbox_health.due IS 'pending rows whose next_attempt_at has come: the worker''s backlog';
COMMENT ON COLUMN payment.outbox_health.sending IS 'rows claimed by the worker and in flight';
COMMENT ON COLUMN payment.outbox_health.done IS 'rows sent with a final answer recorded';
COMMENT ON COLUMN payment.outbox_health.done_after_retries IS 'of the done rows, those that needed more than one attempt';
COMMENT ON COLUMN payment.outbox_health.dead IS 'rows given up after payment_ext.max_attempts, or create requests over 23 hours old (see payment.dead_letters): the settler looks their payments and refunds up, the others need a person';
COMMENT ON COLUMN payment.outbox_health.oldest_due_age IS 'now() - next_attempt_at of the oldest due row: how long the backlog has waited; NULL when nothing is due';
COMMENT ON COLUMN payment.outbox_health.oldest_sending_age IS 'now() - claimed_at of the longest in-flight row; NULL when none is in flight';
COMMENT ON COLUMN payment.outbox_health.attempts_histogram IS 'JSON object, attempts made -> number of rows, over the rows not done (pending, sending, dead): what is retrying or stuck';

-- ---------------------------------------------------------------------------
-- payment.payment_metrics: the spec's "Key Metrics to Monitor" 1 to 3
-- ---------------------------------------------------------------------------
-- One branch per period, each with its bound written out: the planner sees
-- now() - interval '...' and range-scans "IX_Payments_CreatedAt" (a bound
-- taken from a joined list of periods would be a parameter to it, estimated
-- at a third of the table: a sequential scan).
CREATE VIEW payment.payment_metrics AS
SELECT m.period,
       m.since,
       m.payments,
       m.succeeded,
       m.failed,
       m.pending,
       m.not_required,
       m.failed_attempts,
       round(100.0 * m.succeeded / NULLIF(m.succeeded + m.failed, 0), 2) AS success_rate,
       round(m.avg_seconds, 3) AS avg_processing_seconds,
       round(m.max_seconds, 3) AS max_processing_seconds
  FROM (
SELECT 1 AS ord, '1 hour'::text AS period, now() - interval '1 hour' AS since,
       count(*) AS payments,
       count(*) FILTER (WHERE p."Status" IN (1, 3, 4)) AS succeeded,
       count(*) FILTER (WHERE p."Status" = 2) AS failed,
       count(*) FILTER (WHERE p."Status" = 0) AS pending,
       count(*) FILTER (WHERE p."Status" = 5) AS not_required,
       (SELECT count(*) FROM "PaymentFailures" f WHERE f."FailedAt" >= now() - interval '1 hour') AS failed_attempts,
       avg(EXTRACT(epoch FROM p."ProcessedAt" - p."CreatedAt"))
           FILTER (WHERE p."Status" IN (1, 2, 3, 4) AND p."ProcessedAt" IS NOT NULL) AS avg_seconds,
       max(EXTRACT(epoch FROM p."ProcessedAt" - p."CreatedAt"))
           FILTER (WHERE p."Status" IN (1, 2, 3, 4) AND p."ProcessedAt" IS NOT NULL) AS max_seconds
  FROM "Payments" p
 WHERE p."CreatedAt" >= now() - interval '1 hour'
 UNION ALL
SELECT 2 AS ord, '24 hours'::text AS period, now() - interval '24 hours' AS since,
       count(*) AS payments,
       count(*) FILTER (WHERE p."Status" IN (1, 3, 4)) AS succeeded,
       count(*) FILTER (WHERE p."Status" = 2) AS failed,
       count(*) FILTER (WHERE p."Status" = 0) AS pending,
       count(*) FILTER (WHERE p."Status" = 5) AS not_required,
       (SELECT count(*) FROM "PaymentFailures" f WHERE f."FailedAt" >= now() - interval '24 hours') AS failed_attempts,
       avg(EXTRACT(epoch FROM p."ProcessedAt" - p."CreatedAt"))
           FILTER (WHERE p."Status" IN (1, 2, 3, 4) AND p."ProcessedAt" IS NOT NULL) AS avg_seconds,
       max(EXTRACT(epoch FROM p."ProcessedAt" - p."CreatedAt"))
           FILTER (WHERE p."Status" IN (1, 2, 3, 4) AND p."ProcessedAt" IS NOT NULL) AS max_seconds
  FROM "Payments" p
 WHERE p."CreatedAt" >= now() - interval '24 hours'
 UNION ALL
SELECT 3 AS ord, '7 days'::text AS period, now() - interval '7 days' AS since,
       count(*) AS payments,
       count(*) FILTER (WHERE p."Status" IN (1, 3, 4)) AS succeeded,
       count(*) FILTER (WHERE p."Status" = 2) AS failed,
       count(*) FILTER (WHERE p."Status" = 0) AS pending,
       count(*) FILTER (WHERE p."Status" = 5) AS not_required,
       (SELECT count(*) FROM "PaymentFailures" f WHERE f."FailedAt" >= now() - interval '7 days') AS failed_attempts,
       avg(EXTRACT(epoch FROM p."ProcessedAt" - p."CreatedAt"))
           FILTER (WHERE p."Status" IN (1, 2, 3, 4) AND p."ProcessedAt" IS NOT NULL) AS avg_seconds,
       max(EXTRACT(epoch FROM p."ProcessedAt" - p."CreatedAt"))
           FILTER (WHERE p."Status" IN (1, 2, 3, 4) AND p."ProcessedAt" IS NOT NULL) AS max_seconds
  FROM "Payments" p
 WHERE p."CreatedAt" >= now() - interval '7 days'
 UNION ALL
SELECT 4 AS ord, '30 days'::text AS period, now() - interval '30 days' AS since,
       count(*) AS payments,
       count(*) FILTER (WHERE p."Status" IN (1, 3, 4)) AS succeeded,
       count(*) FILTER (WHERE p."Status" = 2) AS failed,
       count(*) FILTER (WHERE p."Status" = 0) AS pending,
       count(*) FILTER (WHERE p."Status" = 5) AS not_required,
       (SELECT count(*) FROM "PaymentFailures" f WHERE f."FailedAt" >= now() - interval '30 days') AS failed_attempts,
       avg(EXTRACT(epoch FROM p."ProcessedAt" - p."CreatedAt"))
           FILTER (WHERE p."Status" IN (1, 2, 3, 4) AND p."ProcessedAt" IS NOT NULL) AS avg_seconds,
       max(EXTRACT(epoch FROM p."ProcessedAt" - p."CreatedAt"))
           FILTER (WHERE p."Status" IN (1, 2, 3, 4) AND p."ProcessedAt" IS NOT NULL) AS max_seconds
  FROM "Payments" p
 WHERE p."CreatedAt" >= now() - interval '30 days'
       ) m;

COMMENT ON VIEW payment.payment_metrics IS
	'the spec''s key payment metrics over the last hour, 24 hours, 7 days and 30 days (one row each): success rate (target > 99 %) and processing time (target < 2 s)';
COMMENT ON COLUMN payment.payment_metrics.period IS '1 hour, 24 hours, 7 days or 30 days, ending now';
COMMENT ON COLUMN payment.payment_metrics.since IS 'start of the period: payments created since then count';
COMMENT ON COLUMN payment.payment_metrics.payments IS 'payments created in the period';
COMMENT ON COLUMN payment.payment_metrics.succeeded IS 'of them, paid: Completed, PartiallyRefunded or Refunded';
COMMENT ON COLUMN payment.payment_metrics.failed IS 'of them, Failed (and not retried since)';
COMMENT ON COLUMN payment.payment_metrics.pending IS 'of them, still Pending';
COMMENT ON COLUMN payment.payment_metrics.not_required IS 'of them, NotRequired (zero amount, no charge)';
COMMENT ON COLUMN payment.payment_metrics.failed_attempts IS '"PaymentFailures" rows (failed charge attempts, retried ones included) since the start of the period';
COMMENT ON COLUMN payment.payment_metrics.success_rate IS 'percent: 100 * succeeded / (succeeded + failed), two decimals; NULL when neither';
COMMENT ON COLUMN payment.payment_metrics.avg_processing_seconds IS 'average of ProcessedAt - CreatedAt in seconds over payments that reached an outcome (NotRequired excluded), three decimals';
COMMENT ON COLUMN payment.payment_metrics.max_processing_seconds IS 'the longest of those, in seconds';

-- ---------------------------------------------------------------------------
-- payment.failure_spikes: the spec's failed payment spike detection
-- ---------------------------------------------------------------------------
-- Each source is read once over the 24 hours and grouped by hour (a query
-- per hour would have the planner guess at a parameter's range).
CREATE VIEW payment.failure_spikes AS
WITH attempts AS (
	SELECT date_trunc('hour', x."FailedAt") AS hour,
	       count(*) AS failed_attempts,
	       count(DISTINCT x."PaymentId") AS payments_affected,
	       mode() WITHIN GROUP (ORDER BY x."FailureCode") AS top_failure_code
	  FROM "PaymentFailures" x
	 WHERE x."FailedAt" >= date_trunc('hour', now()) - interval '23 hours'
	 GROUP BY 1
), failed AS (
	SELECT date_trunc('hour', p."CreatedAt") AS hour, count(*) AS failed_payments
	  FROM "Payments" p
	 WHERE p."CreatedAt" >= date_trunc('hour', now()) - interval '23 hours'
	   AND p."Status" = 2
	 GROUP BY 1
)
SELECT h.hour,
       COALESCE(a.failed_attempts, 0) AS failed_attempts,
       COALESCE(a.payments_affected, 0) AS payments_affected,
       a.top_failure_code,
       COALESCE(f.failed_payments, 0) AS failed_payments,
       COALESCE(a.failed_attempts, 0) > 10 AS is_spike
  FROM generate_series(date_trunc('hour', now()) - interval '23 hours',
                       date_trunc('hour', now()),
                       interval '1 hour') h(hour)
  LEFT JOIN attempts a ON a.hour = h.hour
  LEFT JOIN failed f ON f.hour = h.hour;

COMMENT ON VIEW payment.failure_spikes IS
	'failed charge attempts per hour over the last 24 hours (24 rows, the current hour last); is_spike is the spec''s alert, more than 10 in an hour';
COMMENT ON COLUMN payment.failure_spikes.hour IS 'start of the hour';
COMMENT ON COLUMN payment.failure_spikes.failed_attempts IS '"PaymentFailures" rows with "FailedAt" in the hour (every failed attempt, retried or not)';
COMMENT ON COLUMN payment.failure_spikes.payments_affected IS 'distinct payments among those attempts';
COMMENT ON COLUMN payment.failure_spikes.top_failure_code IS 'the most frequent "FailureCode" of the hour (the first alphabetically on a tie); NULL when none';
COMMENT ON COLUMN payment.failure_spikes.failed_payments IS 'payments created in the hour that are Failed now: the spec''s own spike count';
COMMENT ON COLUMN payment.failure_spikes.is_spike IS 'failed_attempts > 10, the spec''s alerting threshold';

-- ---------------------------------------------------------------------------
-- payment.refund_metrics: the spec's refund processing time
-- ---------------------------------------------------------------------------
-- one branch per period, each with its bound written out (see payment_metrics)
CREATE VIEW payment.refund_metrics AS
WITH periods AS (
	SELECT 1 AS ord, '24 hours'::text AS period, now() - interval '24 hours' AS since
	UNION ALL SELECT 2, '7 days', now() - interval '7 days'
	UNION ALL SELECT 3, '30 days', now() - interval '30 days'
), refunds AS (
	SELECT 1 AS ord, r."Id", r."OriginalPaymentId", r."RefundStatus", r."CreatedAt"
	  FROM "PaymentRefunds" r WHERE r."CreatedAt" >= now() - interval '24 hours'
	UNION ALL
	SELECT 2 AS ord, r."Id", r."OriginalPaymentId", r."RefundStatus", r."CreatedAt"
	  FROM "PaymentRefunds" r WHERE r."CreatedAt" >= now() - interval '7 days'
	UNION ALL
	SELECT 3 AS ord, r."Id", r."OriginalPaymentId", r."RefundStatus", r."CreatedAt"
	  FROM "PaymentRefunds" r WHERE r."CreatedAt" >= now() - interval '30 days'
)
SELECT w.period,
       w.since,
       count(r."Id") AS refunds,
       count(r."Id") FILTER (WHERE r."RefundStatus" = 1) AS completed,
       count(r."Id") FILTER (WHERE r."RefundStatus" = 2) AS failed,
       count(r."Id") FILTER (WHERE r."RefundStatus" = 0) AS processing,
       round(avg(EXTRACT(epoch FROM c.completed_at - r."CreatedAt")) / 3600, 2) AS avg_completion_hours,
       round(max(EXTRACT(epoch FROM c.completed_at - r."CreatedAt")) / 3600, 2) AS max_completion_hours,
       count(r."Id") FILTER (
           WHERE c.completed_at - r."CreatedAt" > interval '24 hours'
              OR (r."RefundStatus" = 0 AND now() - r."CreatedAt" > interval '24 hours')) AS over_24_hours
  FROM periods w
  LEFT JOIN refunds r ON r.ord = w.ord
  LEFT JOIN LATERAL (
	-- the audit trail's entry of the refund's completion
	SELECT min(a."CreatedAt") AS completed_at
	  FROM "PaymentAuditLog" a
	 WHERE a."PaymentId" = r."OriginalPaymentId"
	   AND a."RowId" = r."Id"
	   AND a."ActionType" = 'RefundCompleted'
	   AND r."RefundStatus" = 1
       ) c ON true
 GROUP BY w.ord, w.period, w.since;

COMMENT ON VIEW payment.refund_metrics IS
	'refunds asked for in the last 24 hours, 7 days and 30 days (one row each): outcomes and the time from request to completion (spec target < 24 hours)';
COMMENT ON COLUMN payment.refund_metrics.period IS '24 hours, 7 days or 30 days, ending now';
COMMENT ON COLUMN payment.refund_metrics.since IS 'start of the period: refunds created since then count';
COMMENT ON COLUMN payment.refund_metrics.refunds IS '"PaymentRefunds" rows created in the period';
COMMENT ON COLUMN payment.refund_metrics.completed IS 'of them, Completed';
COMMENT ON COLUMN payment.refund_metrics.failed IS 'of them, Failed';
COMMENT ON COLUMN payment.refund_metrics.processing IS 'of them, still Processing';
COMMENT ON COLUMN payment.refund_metrics.avg_completion_hours IS 'average hours from "CreatedAt" to the audit log''s RefundCompleted entry, over the Completed ones, two decimals';
COMMENT ON COLUMN payment.refund_metrics.max_completion_hours IS 'the longest of those, in hours';
COMMENT ON COLUMN payment.refund_metrics.over_24_hours IS 'refunds that took more than 24 hours to complete or have been Processing for more than 24 hours: the spec''s target missed';

-- ---------------------------------------------------------------------------
-- grants
-- ---------------------------------------------------------------------------
REVOKE ALL ON payment.event_revenue, payment.sliding_scale_summary, payment.outbox_health,
	payment.payment_metrics, payment.failure_spikes, payment.refund_metrics FROM PUBLIC;
GRANT SELECT ON payment.event_revenue, payment.sliding_scale_summary, payment.outbox_health,
	payment.payment_metrics, payment.failure_spikes, payment.refund_metrics TO payment_reporting;
REVOKE ALL ON FUNCTION payment.sliding_scale_summary(timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION payment.sliding_scale_summary(timestamptz, timestamptz) TO payment_reporting;
