#!/usr/bin/env bash
#
# test/t/worker_nopreload.sh — without shared_preload_libraries everything
# but draining works: payments go into the outbox and stay there, and
# worker_status says the worker is not running; after a restart with
# payment_ext preloaded, the backlog drains, each payment charged once.
# Also: a worker whose database lacks the extension warns once and waits.
# Prints TAP.
#
set -uo pipefail
source "$PE_WORK/repo/test/worker_lib.sh"
trap w_cleanup EXIT

echo "1..9"

C=w_nopre
w_standin_start $C
w_cluster $C "shared_preload_libraries = ''"
w_seed $C 50

w_sql $C "CREATE TABLE t_pay AS SELECT payment.create(('30000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
                           ('10000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
                           20.00, stripe_payment_method => 'pm_card_visa') AS id
    FROM generate_series(1, 50) i" >/dev/null
is "$(w_sql $C "SELECT running, state FROM payment.worker_status")" \
	"f|not running: payment_ext is not in shared_preload_libraries" \
	"worker_status: not running, and why"
is "$(w_sql $C "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'payment_ext outbox worker'")" 0 \
	"no worker process"
# Absence can only be shown over some time: one second.
sleep 1
is "$(w_sql $C "SELECT count(*) FROM payment.outbox WHERE state = 'pending' AND attempts = 0")" 50 \
	"the outbox fills: 50 rows pending, never tried"
is "$(w_http GET /_test/ledger | w_json "j['counts']['requests']")" 0 "nothing reached the stand-in"

pe_cluster_stop $C fast
echo "shared_preload_libraries = 'payment_ext'" >>"$PE_WORK/$C/postgresql.conf"
"$PE_BIN/pg_ctl" -D "$PE_WORK/$C" -l "$PE_WORK/$C.log" -w -t 60 start >/dev/null
is "$(w_wait $C "SELECT count(*) FROM \"Payments\" WHERE \"Status\" = 1" 50 60)" 50 \
	"after a restart with payment_ext preloaded the backlog drains: 50 Completed"
is "$(w_http GET /_test/ledger | w_json "sorted(set(v['charges'] for v in j['by_payment_id'].values())), len(j['by_payment_id'])")" "[1] 50" \
	"each payment charged exactly once"
# the counters are bumped just after the outcomes commit: poll them too
is "$(w_wait $C "SELECT running, successes FROM payment.worker_status" "t|50" 60)" "t|50" "worker_status counts them"

# --- the extension missing from payment_ext.database -------------------------------------
w_sql $C "CREATE DATABASE other" >/dev/null
w_sql $C "ALTER SYSTEM SET payment_ext.database = 'other'" >/dev/null
pe_cluster_stop $C fast
"$PE_BIN/pg_ctl" -D "$PE_WORK/$C" -l "$PE_WORK/$C.log" -w -t 60 start >/dev/null
is "$(w_wait $C "SELECT state FROM payment.worker_status" "waiting: extension not installed" 60)" \
	"waiting: extension not installed" "a database without the extension: the worker waits"
w_wait_log "$PE_WORK/$C.log" 'extension "payment_ext" is not installed in database "other"' 60
is "$(grep -c 'extension "payment_ext" is not installed in database "other"' "$PE_WORK/$C.log")" 1 \
	"  after one WARNING"

w_done
