#!/usr/bin/env bash
#
# bench/payments.sh — pgbench throughput of payment.create against the same
# work written by hand in plain SQL (INSERT the payment, INSERT the outbox
# row, one statement, no triggers) on identical tables, indexes and foreign
# keys, same run, same clients.  Runs alternate (baseline, payment_ext, ...)
# so drift on this shared machine hits both alike; the ratio is of medians.
#
# Env: PGHOST/PGPORT (tools/run bench sets them), BENCH_CLIENTS (2),
# BENCH_SECONDS (10 per run), BENCH_ROUNDS (3).
#
set -euo pipefail
DB=pe_bench_payments
CLIENTS=${BENCH_CLIENTS:-2}
SECONDS_PER_RUN=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
REGS=${BENCH_REGISTRATIONS:-600000}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

q() { psql -X -qAt -v ON_ERROR_STOP=1 -d "$DB" "$@"; }

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null 2>&1
q -c "CREATE EXTENSION payment_ext" >/dev/null
q <<SQL >/dev/null
INSERT INTO "Users" ("Id", "SceneName", "Email")
SELECT md5('u' || i)::uuid, 'u' || i, 'u' || i || '@example.org' FROM generate_series(0, 999) i;
INSERT INTO "Events" ("Id", "Title", "StartDate", "EndDate")
SELECT md5('e' || i)::uuid, 'event ' || i, now(), now() FROM generate_series(0, 999) i;
INSERT INTO "EventRegistrations" ("Id", "EventId", "UserId")
SELECT md5('r' || i)::uuid, md5('e' || (i / 1000))::uuid, md5('u' || (i % 1000))::uuid
  FROM generate_series(1, $REGS) i;
-- the baseline: the same tables, indexes and foreign keys, no triggers
CREATE SCHEMA bench;
CREATE TABLE bench."Payments" (LIKE public."Payments" INCLUDING ALL);
ALTER TABLE bench."Payments"
	ADD FOREIGN KEY ("UserId") REFERENCES public."Users"("Id") ON DELETE RESTRICT,
	ADD FOREIGN KEY ("RefundedByUserId") REFERENCES public."Users"("Id") ON DELETE SET NULL,
	ADD FOREIGN KEY ("EventRegistrationId") REFERENCES public."EventRegistrations"("Id") ON DELETE RESTRICT;
CREATE TABLE bench.outbox (LIKE payment.outbox INCLUDING ALL);
ALTER TABLE bench.outbox ADD FOREIGN KEY (payment_id) REFERENCES bench."Payments"("Id");
-- and the same work with the audit INSERT written by hand, into a table
-- shaped and indexed like "PaymentAuditLog" (GIN indexes included)
CREATE TABLE bench."Payments2" (LIKE public."Payments" INCLUDING ALL);
ALTER TABLE bench."Payments2"
	ADD FOREIGN KEY ("UserId") REFERENCES public."Users"("Id") ON DELETE RESTRICT,
	ADD FOREIGN KEY ("EventRegistrationId") REFERENCES public."EventRegistrations"("Id") ON DELETE RESTRICT;
CREATE TABLE bench.outbox2 (LIKE payment.outbox INCLUDING ALL);
ALTER TABLE bench.outbox2 ADD FOREIGN KEY (payment_id) REFERENCES bench."Payments2"("Id");
CREATE TABLE bench.audit_log (LIKE public."PaymentAuditLog" INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
ALTER TABLE bench.audit_log
	ADD FOREIGN KEY ("PaymentId") REFERENCES bench."Payments2"("Id") ON DELETE RESTRICT,
	ADD FOREIGN KEY ("UserId") REFERENCES public."Users"("Id") ON DELETE RESTRICT;
CREATE SEQUENCE bench.reg_ext;
CREATE SEQUENCE bench.reg_sql;
CREATE SEQUENCE bench.reg_sql_audit;
VACUUM ANALYZE;
SQL

cat >"$WORK/ext.sql" <<'EOF2'
SELECT payment.create(md5('r' || v)::uuid, md5('u' || (v % 1000))::uuid, 40.00, 25,
                      stripe_payment_method => 'pm_card_visa')
  FROM nextval('bench.reg_ext') v;
EOF2
cat >"$WORK/sql.sql" <<'EOF2'
WITH n AS (SELECT nextval('bench.reg_sql') AS v),
     p AS (INSERT INTO bench."Payments" ("Id", "EventRegistrationId", "UserId", "AmountValue", "Currency",
                                         "SlidingScalePercentage", "Status", "PaymentMethodType", "Metadata")
           SELECT gen_random_uuid(), md5('r' || v)::uuid, md5('u' || (v % 1000))::uuid,
                  round(40.00 * (100 - 25) / 100, 2), 'USD', 25, 0, 1, '{}'
             FROM n
           RETURNING "Id", "AmountValue", "EventRegistrationId")
INSERT INTO bench.outbox (kind, payment_id, request, idempotency_key)
SELECT 'payment_intent.create', "Id",
       jsonb_build_object('amount', ("AmountValue" * 100)::bigint::text, 'currency', 'usd',
                          'confirm', 'true', 'payment_method', 'pm_card_visa',
                          'metadata[payment_id]', "Id"::text,
                          'metadata[registration_id]', "EventRegistrationId"::text),
       'pe-' || "Id" || '-pi-1'
  FROM p;
EOF2

cat >"$WORK/sql_audit.sql" <<'EOF2'
WITH n AS (SELECT nextval('bench.reg_sql_audit') AS v),
     p AS (INSERT INTO bench."Payments2" ("Id", "EventRegistrationId", "UserId", "AmountValue", "Currency",
                                          "SlidingScalePercentage", "Status", "PaymentMethodType", "Metadata")
           SELECT gen_random_uuid(), md5('r' || v)::uuid, md5('u' || (v % 1000))::uuid,
                  round(40.00 * (100 - 25) / 100, 2), 'USD', 25, 0, 1, '{}'
             FROM n
           RETURNING *),
     o AS (INSERT INTO bench.outbox2 (kind, payment_id, request, idempotency_key)
           SELECT 'payment_intent.create', "Id",
                  jsonb_build_object('amount', ("AmountValue" * 100)::bigint::text, 'currency', 'usd',
                                     'confirm', 'true', 'payment_method', 'pm_card_visa',
                                     'metadata[payment_id]', "Id"::text,
                                     'metadata[registration_id]', "EventRegistrationId"::text),
                  'pe-' || "Id" || '-pi-1'
             FROM p)
INSERT INTO bench.audit_log ("PaymentId", "UserId", "ActionType", "ActionDescription", "NewValues",
                             "IpAddress", "UserAgent", "TableName", "RowId")
SELECT "Id", NULLIF(current_setting('app.current_user_id', true), '')::uuid, 'PaymentInitiated',
       'payment initiated', to_jsonb(p), inet_client_addr(), current_setting('application_name'),
       'Payments', "Id"
  FROM p;
EOF2

tps() {
	pgbench -n -M prepared -c "$CLIENTS" -j "$CLIENTS" -T "$SECONDS_PER_RUN" -f "$1" "$DB" 2>&1 |
		sed -n 's/^tps = \([0-9.]*\) .*/\1/p'
}

ext=()
ext_noaudit=()
base=()
base_audit=()
for r in $(seq 1 "$ROUNDS"); do
	base+=("$(tps "$WORK/sql.sql")")
	base_audit+=("$(tps "$WORK/sql_audit.sql")")
	ext+=("$(tps "$WORK/ext.sql")")
	# the same calls with the audit trigger of "Payments" off (a benchmark
	# database, superuser): issue 4's comparison, the audit's cost aside
	q -c 'ALTER TABLE "Payments" DISABLE TRIGGER "TR_Payments_Audit"' >/dev/null
	ext_noaudit+=("$(tps "$WORK/ext.sql")")
	q -c 'ALTER TABLE "Payments" ENABLE ALWAYS TRIGGER "TR_Payments_Audit"' >/dev/null
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
mb=$(median "${base[@]}")
me=$(median "${ext[@]}")
ratio=$(awk -v a="$me" -v b="$mb" 'BEGIN {printf "%.2f", a / b}')
mba=$(median "${base_audit[@]}")
mena=$(median "${ext_noaudit[@]}")
ratio_noaudit=$(awk -v a="$mena" -v b="$mb" 'BEGIN {printf "%.2f", a / b}')
ratio_audit=$(awk -v a="$me" -v b="$mba" 'BEGIN {printf "%.2f", a / b}')
made=$(q -c "SELECT count(*) FROM \"Payments\"")
echo "payments: payment.create vs hand-written SQL, $CLIENTS clients, $ROUNDS x ${SECONDS_PER_RUN}s alternating"
echo "  hand-written SQL tps: ${base[*]} (median $mb)"
echo "  payment.create   tps: ${ext[*]} (median $me; $made payments made)"
echo "  hand-written SQL + audit INSERT tps: ${base_audit[*]} (median $mba)"
echo "  payment.create, audit trigger off tps: ${ext_noaudit[*]} (median $mena)"
echo "RESULT payments | payment.create with the audit trigger off vs hand-written INSERTs without audit (issue 4's comparison) | $mena tps | $mb tps | $ratio_noaudit"
echo "RESULT payments | payment.create (audited, hash-chained) vs hand-written INSERTs without audit | $me tps | $mb tps | $ratio"
echo "RESULT payments | payment.create (audited, hash-chained) vs hand-written INSERTs + audit INSERT | $me tps | $mba tps | $ratio_audit"
psql -X -q -d postgres -c "DROP DATABASE $DB" >/dev/null 2>&1 || true
