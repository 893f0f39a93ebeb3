#!/usr/bin/env bash
#
# bench/reports.sh — latency of the spec's five sample queries and of the
# reporting views at 1,000,000 payments (issue 10).
#
# Loads a fresh database with bench/generate.sql (every trigger on: state
# machine, refund rules, audit trail, foreign keys) and reports the load
# time; then, one client, `pgbench -M prepared`, runs each query N times with
# ids drawn at random from real rows, and reports the median and the 99th
# percentile of the per-transaction latency from pgbench's log.  The goal of
# a query, where issue 10 sets one, is its baseline; the ratio is median /
# goal (below 1 meets it).  Each transaction also looks its ids up by a
# primary key (measured alone as "id lookup": subtract it to compare).
# Queries 1, 2 and 4 write: each runs inside BEGIN ... ROLLBACK, which the
# latency includes.  Ends with each query's EXPLAIN (ANALYZE, BUFFERS) plan
# shape and a check that no plan reads "Payments" sequentially.
#
# Env: PGHOST/PGPORT (tools/run bench sets them), BENCH_PAYMENTS (1000000),
# BENCH_OUTBOX (100000), BENCH_TX (transactions per fast query, 2000),
# BENCH_KEEP_DB=1 keeps the database pe_bench_reports.
#
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DB=pe_bench_reports
PAYMENTS=${BENCH_PAYMENTS:-1000000}
OUTBOX=${BENCH_OUTBOX:-100000}
TX=${BENCH_TX:-2000}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

q() { psql -X -qAt -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
fmt() { printf "%'d" "$1" 2>/dev/null || echo "$1"; }

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null 2>&1
q -c "CREATE EXTENSION payment_ext" >/dev/null

# ---------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------
echo "reports: loading $(fmt "$PAYMENTS") payments, $(fmt "$OUTBOX") outbox rows (bench/generate.sql, triggers on)"
t0=$(date +%s.%N)
psql -X -v ON_ERROR_STOP=1 -v payments="$PAYMENTS" -v outbox="$OUTBOX" -d "$DB" -f "$HERE/generate.sql" | sed 's/^/  /'
t1=$(date +%s.%N)
load_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", b - a}')
echo "  load time: ${load_s} s"

# ids for the benchmark, drawn from real rows; 100 of the registrations
# whose payment Failed get a new Pending payment (query 2 completes it), the
# others take query 1's new payment
q <<'SQL'
CREATE SCHEMA bench;
CREATE TABLE bench.users AS
	SELECT row_number() OVER () AS n, u AS id FROM (SELECT DISTINCT "UserId" AS u FROM "Payments") x;
CREATE TABLE bench.events AS
	SELECT row_number() OVER () AS n, event_id AS id
	  FROM (SELECT DISTINCT g."EventId" AS event_id
	          FROM "EventRegistrations" g JOIN "Payments" p ON p."EventRegistrationId" = g."Id"
	         WHERE p."Status" IN (1, 3, 4)) x;
CREATE TABLE bench.failed AS
	SELECT row_number() OVER (ORDER BY "Id") AS n, "EventRegistrationId" AS reg, "UserId" AS uid
	  FROM "Payments" WHERE "Status" = 2;
INSERT INTO "Payments" ("EventRegistrationId", "UserId", "AmountValue", "SlidingScalePercentage", "Status", "PaymentMethodType")
SELECT reg, uid, 30.00, 25, 0, 1 FROM bench.failed WHERE n <= 100;
CREATE TABLE bench.q1 AS SELECT row_number() OVER (ORDER BY n) AS n, reg, uid FROM bench.failed WHERE n > 100;
CREATE TABLE bench.pending AS
	SELECT row_number() OVER (ORDER BY "Id") AS n, "Id" AS id FROM "Payments" WHERE "Status" = 0;
CREATE TABLE bench.refundable AS
	SELECT row_number() OVER (ORDER BY "Id") AS n, "Id" AS id
	  FROM "Payments" WHERE "Status" = 1 AND "RefundAmountValue" IS NULL AND "Currency" = 'USD' AND "AmountValue" >= 1 LIMIT 10000;
ALTER TABLE bench.users ADD PRIMARY KEY (n);
ALTER TABLE bench.events ADD PRIMARY KEY (n);
ALTER TABLE bench.q1 ADD PRIMARY KEY (n);
ALTER TABLE bench.pending ADD PRIMARY KEY (n);
ALTER TABLE bench.refundable ADD PRIMARY KEY (n);
SQL
# settle the visibility map (as autovacuum would) before measuring
q -c "VACUUM ANALYZE" >/dev/null
q -c "VACUUM" >/dev/null
for t in users events q1 pending refundable; do
	eval "n_$t=$(q -c "SELECT count(*) FROM bench.$t")"
done
echo "  ids: $n_users users with payments, $n_events events with paid payments, $n_q1 registrations for query 1, $n_pending pending payments, $n_refundable refundable"

# ---------------------------------------------------------------------------
# the queries (pgbench scripts)
# ---------------------------------------------------------------------------
cat >"$WORK/lookup.sql" <<EOF
\set i random(1, $n_users)
SELECT id AS uid FROM bench.users WHERE n = :i \gset
EOF
cat >"$WORK/q1.sql" <<EOF
\set i random(1, $n_q1)
SELECT reg, uid FROM bench.q1 WHERE n = :i \gset
BEGIN;
INSERT INTO "Payments" (
    "Id", "EventRegistrationId", "UserId", "AmountValue", "Currency",
    "SlidingScalePercentage", "Status", "PaymentMethodType",
    "CreatedAt", "UpdatedAt", "Metadata"
) VALUES (
    gen_random_uuid(), :reg, :uid, 30.00, 'USD',
    25, 0, 1, -- Status: Pending
    NOW(), NOW(), '{"source": "bench"}'::jsonb
);
ROLLBACK;
EOF
cat >"$WORK/q2.sql" <<EOF
\set i random(1, $n_pending)
SELECT id AS pid,
       payment.encrypt('pi_bench_' || :i, 'Payments.EncryptedStripePaymentIntentId:' || id) AS pi,
       payment.encrypt('cus_bench_' || :i, 'Payments.EncryptedStripeCustomerId:' || id) AS cus
  FROM bench.pending WHERE n = :i \gset
BEGIN;
UPDATE "Payments"
SET "Status" = 1, -- Completed
    "EncryptedStripePaymentIntentId" = :pi,
    "EncryptedStripeCustomerId" = :cus,
    "ProcessedAt" = NOW(),
    "UpdatedAt" = NOW(),
    "Metadata" = "Metadata" || '{"card_brand": "Visa"}'::jsonb
WHERE "Id" = :pid AND "Status" = 0; -- Only update if still pending
ROLLBACK;
EOF
cat >"$WORK/q3.sql" <<EOF
\set i random(1, $n_users)
SELECT id AS uid FROM bench.users WHERE n = :i \gset
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
WHERE p."UserId" = :uid
ORDER BY p."CreatedAt" DESC
LIMIT 50;
EOF
cat >"$WORK/q4.sql" <<EOF
\set i random(1, $n_refundable)
SELECT id AS pid FROM bench.refundable WHERE n = :i \gset
BEGIN;
INSERT INTO "PaymentRefunds" (
    "Id", "OriginalPaymentId", "RefundAmountValue", "RefundCurrency",
    "RefundReason", "RefundStatus", "ProcessedByUserId"
) VALUES (
    gen_random_uuid(), :pid, 1.00, 'USD', 'Benchmark refund, rolled back', 0, md5('user0')::uuid
);
UPDATE "Payments"
SET "RefundAmountValue" = 1.00,
    "RefundCurrency" = 'USD',
    "RefundedAt" = NOW(),
    "RefundReason" = 'Benchmark refund, rolled back',
    "RefundedByUserId" = md5('user0')::uuid,
    "UpdatedAt" = NOW()
WHERE "Id" = :pid;
ROLLBACK;
EOF
cat >"$WORK/q5.sql" <<'EOF'
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
EOF
cat >"$WORK/event_revenue.sql" <<EOF
\set i random(1, $n_events)
SELECT id AS eid FROM bench.events WHERE n = :i \gset
SELECT * FROM payment.event_revenue WHERE event_id = :eid;
EOF
cat >"$WORK/sliding_scale.sql" <<'EOF'
SELECT * FROM payment.sliding_scale_summary(now() - interval '3 months', now());
EOF
cat >"$WORK/outbox_health.sql" <<'EOF'
SELECT * FROM payment.outbox_health;
EOF
cat >"$WORK/payment_metrics.sql" <<'EOF'
SELECT * FROM payment.payment_metrics;
EOF
cat >"$WORK/failure_spikes.sql" <<'EOF'
SELECT * FROM payment.failure_spikes;
EOF
cat >"$WORK/refund_metrics.sql" <<'EOF'
SELECT * FROM payment.refund_metrics;
EOF

# lat NAME SCRIPT TRANSACTIONS: prints "median p99" in ms
lat() {
	local name=$1 script=$2 n=$3
	rm -f "$WORK"/pgbench_log.*
	(cd "$WORK" && pgbench -n -M prepared -c 1 -j 1 -t "$n" -l -f "$script" "$DB" >"$WORK/$name.out" 2>&1) || {
		cat "$WORK/$name.out" >&2
		echo "NaN NaN"
		return
	}
	cat "$WORK"/pgbench_log.* | awk '{print $3}' | sort -n |
		awk '{a[NR] = $1} END {m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2;
		                      p = a[int(NR * 0.99 + 0.999999)];
		                      printf "%.3f %.3f\n", m / 1000, p / 1000}'
}

# report LABEL NAME SCRIPT N GOAL_MS: one RESULT line
report() {
	local label=$1 name=$2 script=$3 n=$4 goal=$5 m p
	read -r m p < <(lat "$name" "$script" "$n")
	echo "  $label: $n runs, median $m ms, p99 $p ms"
	if [ "$goal" = - ]; then
		echo "RESULT reports | $label, median (p99) | $m ms ($p ms) | no goal | -"
	else
		echo "RESULT reports | $label, median (p99) | $m ms ($p ms) | goal $goal ms | $(awk -v a="$m" -v b="$goal" 'BEGIN {printf "%.2f", a / b}')"
	fi
}

echo "reports: latency, 1 client, pgbench -M prepared, at $(fmt "$PAYMENTS") payments"
read -r lm lp < <(lat lookup "$WORK/lookup.sql" "$TX")
echo "  id lookup alone (included in every query that takes an id): median $lm ms, p99 $lp ms"
echo "RESULT reports | load $(fmt "$PAYMENTS") payments with every trigger on | ${load_s} s | goal 600 s (minutes) | $(awk -v a="$load_s" 'BEGIN {printf "%.2f", a / 600}')"
report "q1 new payment (INSERT, rolled back)" q1 "$WORK/q1.sql" "$TX" -
report "q2 complete payment (UPDATE, rolled back)" q2 "$WORK/q2.sql" "$TX" -
report "q3 user payment history" q3 "$WORK/q3.sql" "$TX" 1
report "q4 refund (INSERT + UPDATE, rolled back)" q4 "$WORK/q4.sql" "$TX" -
report "q5 analytics, 3 months" q5 "$WORK/q5.sql" 100 -
report "event_revenue, one event" event_revenue "$WORK/event_revenue.sql" "$TX" 5
report "sliding_scale_summary, 3 months" sliding_scale "$WORK/sliding_scale.sql" 100 500
report "outbox_health, $(fmt "$OUTBOX") outbox rows" outbox_health "$WORK/outbox_health.sql" 500 10
report "payment_metrics" payment_metrics "$WORK/payment_metrics.sql" 200 -
report "failure_spikes" failure_spikes "$WORK/failure_spikes.sql" 500 -
report "refund_metrics" refund_metrics "$WORK/refund_metrics.sql" 200 -

# ---------------------------------------------------------------------------
# plan shapes
# ---------------------------------------------------------------------------
uid=$(q -c "SELECT id FROM bench.users WHERE n = 1")
eid=$(q -c "SELECT id FROM bench.events WHERE n = $(( (n_events + 1) / 2 ))")
reg=$(q -c "SELECT reg FROM bench.q1 WHERE n = 1")
pid=$(q -c "SELECT id FROM bench.pending WHERE n = 1")
rid=$(q -c "SELECT id FROM bench.refundable WHERE n = 1")
sub() { sed -e "s/:uid/'$uid'/g; s/:eid/'$eid'/g; s/:pid/'$2'/g; s/:reg/'$reg'/g" \
	-e '/^\\/d; /^SELECT .* \\gset$/d; /^BEGIN;$/d; /^ROLLBACK;$/d' "$1"; }
echo "reports: plan shapes (EXPLAIN ANALYZE, BUFFERS)"
seq=0
for name in q1 q2 q3 q4 q5 event_revenue sliding_scale outbox_health payment_metrics failure_spikes refund_metrics; do
	if [ "$name" = q4 ]; then sub "$WORK/$name.sql" "$rid"; else sub "$WORK/$name.sql" "$pid"; fi >"$WORK/$name.plain.sql"
	# one EXPLAIN per statement, in a transaction rolled back
	python3 - "$WORK/$name.plain.sql" >"$WORK/$name.explain.sql" <<'EOF'
import sys
import re
text = re.sub(r"--[^\n]*", "", open(sys.argv[1]).read())
print("BEGIN;")
for stmt in [s.strip() for s in text.split(";") if s.strip()]:
    print("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + stmt + ";")
print("ROLLBACK;")
EOF
	plan=$(psql -X -qAt -v ON_ERROR_STOP=1 -d "$DB" -f "$WORK/$name.explain.sql")
	if [ "$name" = sliding_scale ]; then
		# the function's own statement, as it runs inside it
		plan=$(q -c "LOAD 'auto_explain'" -c "SET auto_explain.log_min_duration = 0" \
			-c "SET auto_explain.log_nested_statements = on" -c "SET auto_explain.log_analyze = on" \
			-c "SET client_min_messages = log" -c "SET auto_explain.log_format = text" \
			-c "SELECT * FROM payment.sliding_scale_summary(now() - interval '3 months', now())" 2>&1 >/dev/null)
	fi
	shape=$(printf '%s\n' "$plan" | grep -oE '(Index Only Scan|Index Scan|Bitmap Index Scan|Seq Scan|Parallel Seq Scan)( Backward)?( using "?[A-Za-z_]+"?)? on "?[A-Za-z_]+"?' |
		sed 's/"//g' | sort | uniq -c | sed 's/^ *//' | paste -sd ';' | sed 's/;/; /g' || true)
	exec_ms=$(printf '%s\n' "$plan" | sed -n 's/.*Execution Time: \([0-9.]*\) ms.*/\1/p' | tail -1 || true)
	echo "  $name: ${shape:-no scans}${exec_ms:+ (last statement ${exec_ms} ms)}"
	if printf '%s\n' "$plan" | grep -qE 'Seq Scan on "?Payments"?( |$)'; then
		echo "  WARNING: $name reads \"Payments\" sequentially"
		seq=$((seq + 1))
	fi
done
echo "RESULT reports | plans reading \"Payments\" sequentially | $seq | 0 | -"

if [ "${BENCH_KEEP_DB:-0}" != 1 ]; then
	psql -X -q -d postgres -c "DROP DATABASE $DB" >/dev/null 2>&1 || true
fi
