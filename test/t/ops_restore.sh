#!/usr/bin/env bash
#
# test/t/ops_restore.sh — pg_dump -Fc of a database using payment_ext, and
# pg_restore into a fresh cluster (same keyring, its own worker and Stripe
# stand-in), as doc/operations.md, "Dump and restore", tells a DBA to do it:
#
#   pg_restore --single-transaction -d DB dump      (as a superuser; no setting)
#
# Every row of every table the extension keeps comes back unchanged (the
# spec's tables, the outbox and its sequence, intents, idempotency keys,
# audit chain heads), no audit row is added, the chains verify: custom
# format in one transaction, directory format without one, a plain dump fed
# to psql, and with the explicit override PGOPTIONS='-c
# payment_ext.restoring=on'.  An edited audit row in a dump restores and is
# caught by payment.verify_audit(); a role that is not a superuser gets no
# restore semantics from COPY.  Then the worker
# is pointed at the restored database: the pending outbox drains, each
# payment charged once, and the chains (continued by the worker) verify.
# Prints TAP.
#
set -uo pipefail
source "$PE_WORK/repo/test/worker_lib.sh"
trap w_cleanup EXIT

echo "1..25"

S=ops_src
D=ops_dst
N=40
w_standin_start ops_rs

# --- the source: no worker, so the outbox stays pending ------------------------------------
w_cluster $S "shared_preload_libraries = ''"
"$PE_BIN/psql" -h "$PE_WORK/$S.sock" -p 5432 -U postgres -d postgres -X -q -o /dev/null \
	-f "$PE_WORK/repo/test/ops_seed.sql" >"$PE_WORK/$S.seed.log" 2>&1
ok $? "source: the seed data (test/ops_seed.sql)"
w_sql $S "
INSERT INTO \"Users\" (\"Id\", \"SceneName\", \"Email\")
SELECT ('41000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, 'bulk' || i, 'bulk' || i || '@example.org'
  FROM generate_series(1, $N) i;
INSERT INTO \"EventRegistrations\" (\"Id\", \"EventId\", \"UserId\")
SELECT ('61000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, '50000000-0000-0000-0000-000000000001',
       ('41000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid
  FROM generate_series(1, $N) i;
SELECT count(payment.create(('61000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
                            ('41000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
                            25.00, stripe_payment_method => 'pm_card_visa'))
  FROM generate_series(1, $N) i;" >/dev/null
PENDING=$(w_sql $S "SELECT count(*) FROM payment.outbox WHERE state = 'pending'")
is "$PENDING" "$((N + 2))" "source: $((N + 2)) outbox rows pending (the worker is not running there)"

"$PE_BIN/pg_dump" -h "$PE_WORK/$S.sock" -p 5432 -U postgres -d postgres -Fc -f "$PE_WORK/ops.dump" 2>"$PE_WORK/ops.dump.log"
ok $? "pg_dump -Fc"

# content DB CLUSTER: a digest per table the extension keeps
TABLES='"Users" "Events" "EventRegistrations" "Payments" "PaymentMethods" "PaymentRefunds" "PaymentAuditLog" "PaymentFailures" payment.outbox payment.intents payment.idempotency_keys payment.audit_chain_heads'
content() {
	local t sql="SELECT concat_ws(' '"
	for t in $TABLES; do
		# the extension's system user is made anew by CREATE EXTENSION
		sql="$sql, (SELECT count(*) || ':' || md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '')) FROM $t x"
		[ "$t" = '"Users"' ] && sql="$sql WHERE x.\"Id\" <> '00000000-0000-0000-0000-00000000057e'"
		sql="$sql)"
	done
	sql="$sql, (SELECT last_value FROM payment.outbox_id_seq))"
	"$PE_BIN/psql" -h "$PE_WORK/$2.sock" -p 5432 -U postgres -d "$1" -X -qAt -v ON_ERROR_STOP=1 -c "$sql"
}
SRC=$(content postgres $S)
pe_cluster_stop $S

# --- the target: a fresh cluster with the same keyring, a worker and the stand-in ----------
cp "$PE_WORK/$S.keyring" "$PE_WORK/$D.keyring"
chmod 600 "$PE_WORK/$D.keyring"
w_cluster $D "log_min_messages = debug1"
w_sql $D "CREATE DATABASE restored" >/dev/null
w_sql $D "CREATE DATABASE plain" >/dev/null

# a superuser's pg_restore needs no setting: its COPY stores the rows as
# dumped (custom format, one transaction) ...
"$PE_BIN/pg_restore" -h "$PE_WORK/$D.sock" -p 5432 -U postgres -d plain --single-transaction \
	"$PE_WORK/ops.dump" >"$PE_WORK/ops.plain.log" 2>&1
ok $? "a plain pg_restore --single-transaction (no PGOPTIONS, no setting) succeeds"
[ -s "$PE_WORK/ops.plain.log" ] && sed 's/^/# /' "$PE_WORK/ops.plain.log" | head -20
is "$(content plain $D)" "$SRC" "  every row of every table as dumped"
is "$("$PE_BIN/psql" -h "$PE_WORK/$D.sock" -p 5432 -U postgres -d plain -X -qAt -c "SELECT payment.verify_audit()")" t \
	"  the audit chains verify"
# ... directory format, without a single transaction
"$PE_BIN/pg_dump" -h "$PE_WORK/$D.sock" -p 5432 -U postgres -d plain -Fd -f "$PE_WORK/ops.dir" 2>>"$PE_WORK/ops.dump.log"
w_sql $D "CREATE DATABASE par" >/dev/null
"$PE_BIN/pg_restore" -h "$PE_WORK/$D.sock" -p 5432 -U postgres -d par \
	"$PE_WORK/ops.dir" >"$PE_WORK/ops.par.log" 2>&1
ok $? "pg_dump -Fd, then pg_restore without --single-transaction (no setting) succeeds"
[ -s "$PE_WORK/ops.par.log" ] && sed 's/^/# /' "$PE_WORK/ops.par.log" | head -20
is "$(content par $D)|$("$PE_BIN/psql" -h "$PE_WORK/$D.sock" -p 5432 -U postgres -d par -X -qAt -c "SELECT payment.verify_audit()")" "$SRC|t" \
	"  every row as dumped, the chains verify"
# ... in parallel (-j 2): pg_dump orders the data of the extension's tables
# by their foreign keys but does not record that order in the archive, so
# the parallel jobs need the foreign keys off while they load
# (session_replication_role = replica; the extension's triggers are ENABLE
# ALWAYS and still fire)
w_sql $D "CREATE DATABASE par2" >/dev/null
PGOPTIONS='-c session_replication_role=replica' "$PE_BIN/pg_restore" -h "$PE_WORK/$D.sock" -p 5432 -U postgres -d par2 -j 2 \
	"$PE_WORK/ops.dir" >"$PE_WORK/ops.par2.log" 2>&1
ok $? "pg_restore -j 2 with session_replication_role = replica succeeds"
[ -s "$PE_WORK/ops.par2.log" ] && sed 's/^/# /' "$PE_WORK/ops.par2.log" | head -20
is "$(content par2 $D)|$("$PE_BIN/psql" -h "$PE_WORK/$D.sock" -p 5432 -U postgres -d par2 -X -qAt -c "SELECT payment.verify_audit()")" "$SRC|t" \
	"  every row as dumped, the chains verify"
# ... a plain-format dump fed to psql
"$PE_BIN/pg_dump" -h "$PE_WORK/$D.sock" -p 5432 -U postgres -d plain -Fp -f "$PE_WORK/ops.sql" 2>>"$PE_WORK/ops.dump.log"
w_sql $D "CREATE DATABASE fromsql" >/dev/null
"$PE_BIN/psql" -h "$PE_WORK/$D.sock" -p 5432 -U postgres -d fromsql -X -q -v ON_ERROR_STOP=1 \
	-f "$PE_WORK/ops.sql" >"$PE_WORK/ops.fromsql.log" 2>&1
ok $? "pg_dump -Fp fed to psql -v ON_ERROR_STOP=1 (no setting) succeeds"
is "$(content fromsql $D)|$("$PE_BIN/psql" -h "$PE_WORK/$D.sock" -p 5432 -U postgres -d fromsql -X -qAt -c "SELECT payment.verify_audit()")" "$SRC|t" \
	"  every row as dumped, the chains verify"
# a dump whose audit trail was edited: restored as given, caught by verify_audit
python3 - "$PE_WORK/ops.sql" "$PE_WORK/ops.edited.sql" <<'PY'
import re, sys
src, dst = sys.argv[1], sys.argv[2]
out, col, done = [], None, False
for line in open(src):
    m = re.match(r'COPY public\."PaymentAuditLog" \((.*)\) FROM stdin;', line)
    if m:
        col = [c.strip().strip('"') for c in m.group(1).split(',')].index('ActionDescription')
    elif col is not None and line.startswith('\\.'):
        col = None
    elif col is not None and not done:
        f = line.rstrip('\n').split('\t')
        f[col] = f[col] + ' (edited)'
        line = '\t'.join(f) + '\n'
        done = True
    out.append(line)
if not done:
    sys.exit('no audit row to edit')
open(dst, 'w').writelines(out)
PY
w_sql $D "CREATE DATABASE edited" >/dev/null
"$PE_BIN/psql" -h "$PE_WORK/$D.sock" -p 5432 -U postgres -d edited -X -q -v ON_ERROR_STOP=1 \
	-f "$PE_WORK/ops.edited.sql" >"$PE_WORK/ops.edited.log" 2>&1
is "$?|$("$PE_BIN/psql" -h "$PE_WORK/$D.sock" -p 5432 -U postgres -d edited -X -qAt -c "SELECT payment.verify_audit()")" "0|f" \
	"a dump whose audit row was edited restores, and payment.verify_audit() catches the edit"
# a role that is not a superuser is held to every rule, COPY or not
"$PE_BIN/psql" -h "$PE_WORK/$D.sock" -p 5432 -U postgres -d plain -X -q -v ON_ERROR_STOP=1 \
	-c "CREATE ROLE pe_loader LOGIN" -c "GRANT INSERT ON \"PaymentAuditLog\" TO pe_loader" >/dev/null
ROW=$("$PE_BIN/psql" -h "$PE_WORK/$D.sock" -p 5432 -U postgres -d plain -X -qAt -c "COPY (SELECT * FROM \"PaymentAuditLog\" ORDER BY \"ChainSeq\" DESC LIMIT 1) TO STDOUT")
GOT=$(printf '%s\n' "$ROW" | sed 's/^[0-9a-f-]*\t/00000000-0000-0000-0000-0000000000ab\t/' |
	"$PE_BIN/psql" -h "$PE_WORK/$D.sock" -p 5432 -U pe_loader -d plain -X -q -v VERBOSITY=sqlstate -c "COPY \"PaymentAuditLog\" FROM STDIN" 2>&1)
is "$(echo "$GOT" | grep -o 'ERROR: *[0-9A-Z]\{5\}' | head -1 | tr -s ' ')|$("$PE_BIN/psql" -h "$PE_WORK/$D.sock" -p 5432 -U postgres -d plain -X -qAt -c "SELECT count(*) FROM \"PaymentAuditLog\" WHERE \"Id\" = '00000000-0000-0000-0000-0000000000ab'")|$("$PE_BIN/psql" -h "$PE_WORK/$D.sock" -p 5432 -U postgres -d plain -X -qAt -c "SELECT payment.verify_audit()")" \
	"ERROR: 55000|0|t" \
	"a COPY of a dumped audit row by a role that is not a superuser is refused (the chain trigger), nothing changes"

# the explicit override stays: restore mode
PGOPTIONS='-c payment_ext.restoring=on' "$PE_BIN/pg_restore" -h "$PE_WORK/$D.sock" -p 5432 -U postgres \
	-d restored --single-transaction "$PE_WORK/ops.dump" >"$PE_WORK/ops.restore.log" 2>&1
ok $? "PGOPTIONS='-c payment_ext.restoring=on' pg_restore --single-transaction succeeds"
[ -s "$PE_WORK/ops.restore.log" ] && sed 's/^/# /' "$PE_WORK/ops.restore.log" | head -20

DST=$(content restored $D)
is "$DST" "$SRC" "every row of every table (payments, refunds, audit log, saved cards, failures, outbox and its sequence, intents, idempotency keys, chain heads) as dumped"
rq() {
	"$PE_BIN/psql" -h "$PE_WORK/$D.sock" -p 5432 -U postgres -d restored -X -qAt -v ON_ERROR_STOP=1 -c "$1"
}
is "$(rq "SELECT payment.verify_audit()")" "t" "the audit chains verify after the restore"
is "$(rq "SELECT payment.decrypt(\"EncryptedStripePaymentMethodId\", 'PaymentMethods.EncryptedStripePaymentMethodId:' || \"Id\") FROM \"PaymentMethods\"")" \
	"pm_card_mastercard" "sealed values open with the keyring copied along"

# --- the worker resumes the restored outbox ------------------------------------------------------
w_sql $D "ALTER SYSTEM SET payment_ext.database = 'restored'" >/dev/null
w_sql $D "SELECT pg_reload_conf()" >/dev/null
W=$(w_wait $D "SELECT 1 FROM pg_stat_activity WHERE backend_type = 'payment_ext outbox worker' AND datname = 'restored'" 1 60)
is "$W" "1" "the worker follows payment_ext.database to the restored database"
GOT=""
deadline=$(($(date +%s) + 120))
while [ "$(date +%s)" -lt "$deadline" ]; do
	GOT=$(rq "SELECT count(*) FROM payment.outbox WHERE state IN ('pending', 'sending')")
	[ "$GOT" = 0 ] && break
	sleep 0.2
done
is "$GOT" "0" "the restored backlog drains ($PENDING rows)"
is "$(rq "SELECT count(*) FROM \"Payments\" WHERE \"Status\" = 1")" "$((N + 1))" \
	"  $((N + 1)) payments Completed (the card payments), the rest as they were"
rq "SELECT \"Id\" FROM \"Payments\" WHERE \"Status\" = 1" >"$PE_WORK/ops.completed"
is "$(w_http GET /_test/ledger | python3 -c "
import json, sys
j = json.load(sys.stdin)
ids = open('$PE_WORK/ops.completed').read().split()
print(sorted(set(j['by_payment_id'].get(i, {}).get('charges', 0) for i in ids)), j['counts']['charges'])")" "[1] $((N + 1))" \
	"  the ledger: each charged exactly once, nothing else charged"
is "$(rq "SELECT payment.verify_audit()")" "t" "  the chains, continued by the worker from the restored heads, verify"
SENT=$(grep -c "DEBUG:  payment_ext outbox worker: sending outbox row [0-9]* (payment_intent.create, attempt 1)" "$PE_WORK/$D.log")
DONE=$(grep -c "DEBUG:  payment_ext outbox worker: outbox row [0-9]* (payment_intent.create, attempt 1): HTTP 200, done" "$PE_WORK/$D.log")
is "$SENT $DONE" "$PENDING $PENDING" "the worker logged one DEBUG1 line per request sent and per outcome"
ok $(grep -q "LOG:  payment_ext outbox worker: running" "$PE_WORK/$D.log" &&
	! grep -qF -e "$(cat "$PE_WORK/$D.stripe_key")" -e pm_card_visa -e "pe1:" "$PE_WORK/$D.log"; echo $?) \
	"  and its phase changes at LOG, with no API key, Stripe id or sealed value in the log"

w_done
