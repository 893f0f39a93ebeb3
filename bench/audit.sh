#!/usr/bin/env bash
#
# bench/audit.sh — what the audit trail costs an UPDATE of "Payments".
#
# pgbench, one metadata change of a random payment per transaction
# (prepared statements), in three variants run in the same cluster with the
# same clients, interleaved, PE_BENCH_REPS times each:
#   none     no audit trigger (TR_Payments_Audit disabled)
#   c        the C audit trigger of payment_ext (changed columns only, the
#            request context, the SHA-256 hash chain, the chain head)
#   plpgsql  the usual PL/pgSQL audit trigger: to_jsonb(OLD) and
#            to_jsonb(NEW) whole, current_setting(), inet_client_addr(),
#            an INSERT into a copy of "PaymentAuditLog" with its indexes
#            (both GIN included), primary key and foreign keys
# The request context is set per session (app.current_user_id of a real
# user, app.client_ip, app.user_agent), as an application would.
#
# Prints the median TPS of each variant and the cost ratio, goal at most 0.5:
#   (1/c - 1/none) / (1/plpgsql - 1/none)
# i.e. the time each trigger adds to a transaction, C over PL/pgSQL.  Cost
# is time: what a trigger adds to every UPDATE.  The ratio of throughput
# losses, (none - c) / (none - plpgsql), is printed too; it understates any
# saving, since a throughput loss cannot exceed 100 % however slow a trigger
# is (a trigger costing half as much as one that halves throughput scores
# 0.67 on it).
#
# Environment: PE_BENCH_CLIENTS (2), PE_BENCH_SECONDS (15), PE_BENCH_REPS (3),
# PE_BENCH_ROWS (1000 payments), PE_BENCH_NO_USER=1 (no app.current_user_id:
# "UserId" NULL, so neither variant checks the foreign key to "Users").
#
set -euo pipefail

CLIENTS=${PE_BENCH_CLIENTS:-2}
DURATION=${PE_BENCH_SECONDS:-15}
REPS=${PE_BENCH_REPS:-3}
ROWS=${PE_BENCH_ROWS:-1000}
DB=pe_bench_audit
WORK=$(mktemp -d "${PE_WORK:-/tmp}/bench_audit.XXXXXX")

psql -qX -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
psql -qX -v ON_ERROR_STOP=1 -v rows="$ROWS" -d "$DB" >/dev/null <<'SQL'
CREATE EXTENSION payment_ext;
INSERT INTO "Users" ("Id", "SceneName", "Email")
SELECT ('10000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, 'user' || i, 'user' || i || '@example.org'
  FROM generate_series(1, :rows) i;
INSERT INTO "Events" ("Id", "Title", "StartDate", "EndDate")
	VALUES ('20000000-0000-0000-0000-000000000001', 'Bench', now(), now() + interval '1 hour');
INSERT INTO "EventRegistrations" ("Id", "EventId", "UserId")
SELECT ('30000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, '20000000-0000-0000-0000-000000000001',
       ('10000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid
  FROM generate_series(1, :rows) i;
INSERT INTO "Payments" ("Id", "EventRegistrationId", "UserId", "AmountValue", "SlidingScalePercentage",
                        "Status", "PaymentMethodType", "EncryptedStripePaymentIntentId", "Metadata")
SELECT ('40000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
       ('30000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
       ('10000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
       30.00, 25, 1, 1,
       payment.encrypt('pi_' || md5(i::text), 'Payments.EncryptedStripePaymentIntentId:40000000-0000-0000-0000-' || lpad(i::text, 12, '0')),
       '{"source": "web"}'
  FROM generate_series(1, :rows) i;

-- the usual PL/pgSQL audit trigger, into a table shaped and indexed like
-- "PaymentAuditLog"
CREATE TABLE bench_audit_log (LIKE "PaymentAuditLog" INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
ALTER TABLE bench_audit_log
	ADD FOREIGN KEY ("PaymentId") REFERENCES "Payments"("Id") ON DELETE RESTRICT,
	ADD FOREIGN KEY ("UserId") REFERENCES "Users"("Id") ON DELETE RESTRICT;
CREATE FUNCTION bench_plpgsql_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO bench_audit_log ("PaymentId", "UserId", "ActionType", "ActionDescription",
	                             "OldValues", "NewValues", "IpAddress", "UserAgent", "TableName", "RowId")
	VALUES (NEW."Id",
	        NULLIF(current_setting('app.current_user_id', true), '')::uuid,
	        CASE WHEN OLD."Status" IS DISTINCT FROM NEW."Status" THEN 'StatusChanged'
	             WHEN OLD."Metadata" IS DISTINCT FROM NEW."Metadata" THEN 'MetadataUpdated'
	             ELSE 'SystemAction' END,
	        TG_OP || ' on ' || TG_TABLE_NAME,
	        to_jsonb(OLD), to_jsonb(NEW),
	        COALESCE(NULLIF(current_setting('app.client_ip', true), '')::inet, inet_client_addr()),
	        COALESCE(NULLIF(current_setting('app.user_agent', true), ''), current_setting('application_name')),
	        TG_TABLE_NAME, NEW."Id");
	RETURN NULL;
END
$$;
CREATE TRIGGER bench_plpgsql_audit AFTER UPDATE ON "Payments"
	FOR EACH ROW EXECUTE FUNCTION bench_plpgsql_audit();
SQL

cat >"$WORK/update.sql" <<PGBENCH
\set id random(1, $ROWS)
\set v random(1, 1000000)
UPDATE "Payments" SET "Metadata" = jsonb_build_object('source', 'web', 'v', :v::integer), "UpdatedAt" = now()
 WHERE "Id" = ('40000000-0000-0000-0000-' || lpad(:id::text, 12, '0'))::uuid;
PGBENCH

variant() {
	local c=DISABLE p=DISABLE
	case "$1" in
	c) c="ENABLE ALWAYS" ;;
	plpgsql) p=ENABLE ;;
	esac
	psql -qX -v ON_ERROR_STOP=1 -d "$DB" >/dev/null <<SQL
ALTER TABLE "Payments" $c TRIGGER "TR_Payments_Audit";
ALTER TABLE "Payments" $p TRIGGER bench_plpgsql_audit;
VACUUM ANALYZE "Payments";
CHECKPOINT;
SQL
}

run() {
	local user="-c app.current_user_id=10000000-0000-0000-0000-000000000001"

	[ "${PE_BENCH_NO_USER:-0}" = 1 ] && user=
	PGOPTIONS="$user -c app.client_ip=203.0.113.9 -c app.user_agent=bench/1.0" \
		pgbench -n -M prepared -c "$CLIENTS" -j "$CLIENTS" -T "$DURATION" -f "$WORK/update.sql" "$DB" 2>&1 |
		sed -n 's/^tps = \([0-9.]*\) .*/\1/p'
}

declare -A TPS
for rep in $(seq 1 "$REPS"); do
	for v in none c plpgsql; do
		variant "$v"
		t=$(run)
		TPS[$v]="${TPS[$v]:-} $t"
		printf 'rep %d  %-8s %10.1f tps\n' "$rep" "$v" "$t"
	done
done
variant c	# leave the extension as installed

median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
none=$(echo "${TPS[none]}" | median)
c=$(echo "${TPS[c]}" | median)
pl=$(echo "${TPS[plpgsql]}" | median)
q() { psql -qAtX -d "$DB" -c "$1"; }
rows_c=$(q 'SELECT count(*) FROM "PaymentAuditLog"')
rows_pl=$(q 'SELECT count(*) FROM bench_audit_log')
bytes_c=$(q "SELECT pg_total_relation_size('\"PaymentAuditLog\"') / greatest(count(*), 1) FROM \"PaymentAuditLog\"")
bytes_pl=$(q "SELECT pg_total_relation_size('bench_audit_log') / greatest(count(*), 1) FROM bench_audit_log")
verified=$(q 'SELECT payment.verify_audit()')

echo
echo "UPDATE \"Payments\" (metadata), $CLIENTS clients, ${DURATION}s x $REPS, app.current_user_id $([ "${PE_BENCH_NO_USER:-0}" = 1 ] && echo unset || echo set), median tps:"
awk -v none="$none" -v c="$c" -v pl="$pl" 'BEGIN {
	printf "  no trigger       %10.1f\n", none
	printf "  C audit trigger  %10.1f  (%+.1f %%)\n", c, (c - none) / none * 100
	printf "  PL/pgSQL trigger %10.1f  (%+.1f %%)\n", pl, (pl - none) / none * 100
	printf "  time added per transaction: C %.1f us, PL/pgSQL %.1f us (2 clients: x2 for CPU time)\n", (1 / c - 1 / none) * 1e6, (1 / pl - 1 / none) * 1e6
	printf "  cost ratio, time per txn: (1/C - 1/none) / (1/PL/pgSQL - 1/none) = %.2f  (goal <= 0.50)\n", (1 / c - 1 / none) / (1 / pl - 1 / none)
	printf "  ratio of throughput losses: (none - C) / (none - PL/pgSQL)     = %.2f\n", (none - c) / (none - pl)
}'
echo "  audit rows: C $rows_c, ${bytes_c} bytes each (heap + indexes); PL/pgSQL $rows_pl, ${bytes_pl} bytes each"
echo "  payment.verify_audit() after the run: $verified"
rm -rf "$WORK"
awk -v none="$none" -v c="$c" -v pl="$pl" 'BEGIN {
	printf "RESULT audit | UPDATE of \"Payments\": time the C trigger adds per transaction vs the PL/pgSQL trigger (goal <= 0.50) | %.1f us | %.1f us | %.2f\n",
		(1 / c - 1 / none) * 1e6, (1 / pl - 1 / none) * 1e6, (1 / c - 1 / none) / (1 / pl - 1 / none)
	printf "RESULT audit | UPDATE of \"Payments\": throughput, no trigger / C trigger / PL/pgSQL trigger (losses: ratio) | %.0f / %.0f tps | %.0f tps | %.2f\n",
		none, c, pl, (none - c) / (none - pl)
}'
echo "RESULT audit | bytes per audit row (heap + indexes), C vs PL/pgSQL | $bytes_c | $bytes_pl | $(awk -v a="$bytes_c" -v b="$bytes_pl" 'BEGIN {printf "%.2f", a / b}')"
