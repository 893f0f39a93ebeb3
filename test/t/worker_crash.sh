#!/usr/bin/env bash
#
# test/t/worker_crash.sh — crashes while 1,000 requests are in flight: kill -9
# of the outbox worker, then an immediate shutdown of the whole server.  The
# stand-in answers after 400 ms (64 in flight: about 160 rows/s at best),
# and the blow falls as soon as a poll sees 100 to 500 rows done and some in
# flight: at least 500 rows, several seconds of work, are left then, so a
# loaded machine that is slow between the poll and the blow still strikes
# mid-drain.
# After the restart every row ends done or dead, every payment is Completed,
# and the stand-in's ledger shows each payment charged exactly once.
# Prints TAP.
#
set -uo pipefail
source "$PE_WORK/repo/test/worker_lib.sh"
trap w_cleanup EXIT

echo "1..13"

C=w_crash
w_standin_start $C --latency-ms 400
w_cluster $C
w_seed $C 2000

# create BATCH FROM TO: payments for registrations FROM..TO in one transaction
create() {
	w_sql $C "INSERT INTO t_batch SELECT $1, payment.create(('30000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
	                           ('10000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
	                           20.00, stripe_payment_method => 'pm_card_visa')
	    FROM generate_series($2, $3) i" >/dev/null
}
# progress BATCH: "<done> <sending>" of the batch's outbox rows
progress() {
	w_sql $C "SELECT count(*) FILTER (WHERE o.state = 'done') || ' ' || count(*) FILTER (WHERE o.state = 'sending')
	            FROM payment.outbox o JOIN t_batch b ON b.id = o.payment_id WHERE b.batch = $1"
}
# wait_midway BATCH: poll until 100 to 500 rows are done and some in
# flight; fails if the drain got past that before a poll saw it
wait_midway() {
	local deadline=$(($(date +%s) + 120)) d s
	while [ "$(date +%s)" -lt "$deadline" ]; do
		read -r d s <<<"$(progress "$1")"
		if [ "${d:-0}" -ge 100 ] && [ "${s:-0}" -gt 0 ]; then
			echo "$d $s"
			[ "$d" -le 500 ]
			return
		fi
		sleep 0.05
	done
	return 1
}
# check BATCH WHAT: the batch drained, all Completed, each charged once
check() {
	is "$(w_wait $C "SELECT count(*) FROM payment.outbox o JOIN t_batch b ON b.id = o.payment_id WHERE b.batch = $1 AND o.state IN ('done', 'dead')" 1000 120)" 1000 \
		"$2: after the restart all 1,000 rows end done or dead"
	is "$(w_sql $C "SELECT count(*) FROM \"Payments\" p JOIN t_batch b ON b.id = p.\"Id\" WHERE b.batch = $1 AND p.\"Status\" = 1")" 1000 \
		"$2: all 1,000 payments are Completed"
	w_sql $C "SELECT id FROM t_batch WHERE batch = $1" >"$PE_WORK/$C.ids"
	is "$(w_http GET /_test/ledger | python3 -c "
import json, sys
j = json.load(sys.stdin)
ids = open('$PE_WORK/$C.ids').read().split()
print(sorted(set(j['by_payment_id'].get(i, {}).get('charges', 0) for i in ids)))")" "[1]" \
		"$2: the ledger shows each payment charged exactly once"
	local again
	again=$(w_sql $C "SELECT count(*) FROM payment.outbox o JOIN t_batch b ON b.id = o.payment_id WHERE b.batch = $1 AND o.attempts > 1")
	ok $((again > 0 ? 0 : 1)) "$2: $again rows in flight at the crash were sent again with their keys"
}

w_sql $C "CREATE TABLE t_batch (batch int, id uuid)" >/dev/null

# --- kill -9 of the worker ------------------------------------------------------------
WPID=$(w_worker_pid $C)
create 1 1 1000
MID=$(wait_midway 1)
RC=$?
kill -9 "$WPID"
ok $RC "kill -9: the worker is midway ($MID done/in flight) when killed"
is "$(w_wait $C "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'payment_ext outbox worker' AND pid <> $WPID" 1 60)" 1 \
	"kill -9: the server restarts and so does the worker"
check 1 "kill -9"
ok $(grep -q "outbox rows left in flight are due again" "$PE_WORK/$C.log"; echo $?) "kill -9: the worker swept the rows left in flight"

# --- immediate shutdown of the server -------------------------------------------------------
create 2 1001 2000
MID=$(wait_midway 2)
RC=$?
pe_cluster_stop $C immediate
ok $RC "immediate shutdown: the worker is midway ($MID done/in flight) when the server stops"
"$PE_BIN/pg_ctl" -D "$PE_WORK/$C" -l "$PE_WORK/$C.log" -w -t 60 start >/dev/null
ok $? "immediate shutdown: the server starts again"
check 2 "immediate shutdown"

w_done
