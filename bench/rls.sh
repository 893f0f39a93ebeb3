#!/usr/bin/env bash
#
# bench/rls.sh — the cost of row-level security on the user-history query
# (the spec's sample query 3) at BENCH_RLS_PAYMENTS payments (default
# 1,000,000): pgbench as a payment_app login, each transaction setting
# app.current_user_id to a random user and reading that user's history,
# with the policies on and with row-level security switched off on the same
# tables, alternating runs in the same session of the benchmark.  Also
# checks that the plan uses "IX_Payments_UserId" under the policy.
#
# Env: PGHOST/PGPORT (tools/run bench), BENCH_CLIENTS (2), BENCH_SECONDS (10),
# BENCH_ROUNDS (3), BENCH_RLS_PAYMENTS (1000000).
#
set -euo pipefail
DB=pe_bench_rls
CLIENTS=${BENCH_CLIENTS:-2}
SECS=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
PAYMENTS=${BENCH_RLS_PAYMENTS:-1000000}
USERS=$((PAYMENTS / 20))
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

q() { psql -X -qAt -v ON_ERROR_STOP=1 -d "$DB" "$@"; }

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null 2>&1
q -c "CREATE EXTENSION payment_ext" >/dev/null
start=$(date +%s)
# A bulk load of history: the rule and audit triggers are off for the load
# only (a benchmark database, superuser), the rows are those the triggers
# would accept (Completed, consistent).
q <<SQL >/dev/null
ALTER TABLE "Payments" DISABLE TRIGGER ALL;
INSERT INTO "Users" ("Id", "SceneName", "Email")
SELECT md5('u' || i)::uuid, 'u' || i, 'u' || i || '@example.org' FROM generate_series(1, $USERS) i;
INSERT INTO "Events" ("Id", "Title", "StartDate", "EndDate")
SELECT md5('e' || i)::uuid, 'event ' || i, now(), now() FROM generate_series(1, 1000) i;
ALTER TABLE "EventRegistrations" DISABLE TRIGGER ALL;
INSERT INTO "EventRegistrations" ("Id", "EventId", "UserId")
SELECT md5('r' || i)::uuid, md5('e' || (1 + i / $USERS))::uuid, md5('u' || (1 + i % $USERS))::uuid
  FROM generate_series(1, $PAYMENTS) i;
INSERT INTO "Payments" ("Id", "EventRegistrationId", "UserId", "AmountValue", "SlidingScalePercentage",
                        "Status", "PaymentMethodType", "CreatedAt", "ProcessedAt", "UpdatedAt")
SELECT md5('p' || i)::uuid, md5('r' || i)::uuid, md5('u' || (1 + i % $USERS))::uuid,
       40.00, 0, 1, 1, t, t, t
  FROM generate_series(1, $PAYMENTS) i, LATERAL (SELECT now() - (i % 730) * interval '1 day' AS t) x;
ALTER TABLE "Payments" ENABLE TRIGGER ALL;
ALTER TABLE "EventRegistrations" ENABLE TRIGGER ALL;
VACUUM ANALYZE;
SQL
echo "rls: loaded $PAYMENTS payments for $USERS users in $(( $(date +%s) - start )) s"
psql -X -q -d postgres -c "DROP ROLE IF EXISTS pe_bench_app" -c "CREATE ROLE pe_bench_app LOGIN IN ROLE payment_app" >/dev/null

cat >"$WORK/history.sql" <<EOF2
\set u random(1, $USERS)
SELECT set_config('app.current_user_id', md5('u' || :u)::uuid::text, false);
SELECT p."Id", p."AmountValue", p."Currency", p."SlidingScalePercentage", p."Status",
       p."ProcessedAt", p."RefundedAt", p."RefundAmountValue", e."Title" AS event_title
  FROM "Payments" p LEFT JOIN "Events" e ON p."EventRegistrationId" = e."Id"
 WHERE p."UserId" = md5('u' || :u)::uuid
 ORDER BY p."CreatedAt" DESC LIMIT 50;
EOF2

plan=$(psql -X -qAt -d "$DB" -U pe_bench_app -c "SET app.current_user_id = '$(q -c "SELECT md5('u1')::uuid")'" \
	-c "EXPLAIN SELECT p.\"Id\" FROM \"Payments\" p WHERE p.\"UserId\" = md5('u1')::uuid ORDER BY p.\"CreatedAt\" DESC LIMIT 50")
echo "rls: plan under the policy: $(echo "$plan" | grep -o 'Index[^(]*' | head -2 | tr '\n' ';')"

tps() {
	pgbench -n -M prepared -c "$CLIENTS" -j "$CLIENTS" -T "$SECS" -U pe_bench_app -f "$WORK/history.sql" "$DB" 2>&1 |
		sed -n 's/^tps = \([0-9.]*\) .*/\1/p'
}
on=()
off=()
for r in $(seq 1 "$ROUNDS"); do
	q -c 'ALTER TABLE "Payments" DISABLE ROW LEVEL SECURITY' >/dev/null
	off+=("$(tps)")
	q -c 'ALTER TABLE "Payments" ENABLE ROW LEVEL SECURITY' >/dev/null
	on+=("$(tps)")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
mon=$(median "${on[@]}")
moff=$(median "${off[@]}")
ratio=$(awk -v a="$mon" -v b="$moff" 'BEGIN {printf "%.2f", a / b}')
echo "rls: user history (spec query 3) tps without RLS: ${off[*]} (median $moff)"
echo "rls: user history (spec query 3) tps with RLS:    ${on[*]} (median $mon)"
echo "RESULT rls | user history at $PAYMENTS payments, with vs without RLS (goal >= 0.90) | $mon tps | $moff tps | $ratio"
psql -X -q -d postgres -c "DROP DATABASE $DB" -c "DROP ROLE pe_bench_app" >/dev/null 2>&1 || true
