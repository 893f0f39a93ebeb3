#!/usr/bin/env bash
#
# bench/worker.sh — the outbox worker's throughput and latency (issue 7).
#
# Its own cluster and Stripe stand-in (test/worker_lib.sh), the rate limit
# raised out of the way (payment_ext.max_requests_per_second = 100000),
# payment_ext.max_in_flight = 64:
#   (a) drain 10,000 outbox rows, the stand-in answering after 50 ms:
#       rows/s against the in-flight bound max_in_flight / 0.05 s = 1,280/s
#       (goal >= 80 %);
#   (b) drain 10,000 rows, the stand-in answering at once: rows/s, and CPU
#       time per row of the worker and of the whole server (postmaster and
#       its children, worker included), from /proc;
#   (c) commit-to-request latency at idle: 100 single payments, each
#       committed while the worker sleeps; the time from the end of the
#       creating statement to the stand-in's receipt of the request
#       (median, 99th percentile).
# The rows of (a) and (b) are created with next_attempt_at an hour ahead,
# then made due at once and the worker woken, so only draining is timed.
# Prints "RESULT name | what | ours | baseline | ratio" lines.
#
set -uo pipefail
source "$PE_WORK/repo/test/worker_lib.sh"
trap w_cleanup EXIT

C=b_worker
N=${BENCH_WORKER_ROWS:-10000}
w_standin_start $C --max-log 50000
w_cluster $C "payment_ext.max_in_flight = 64" "payment_ext.request_timeout_ms = 30000"
w_seed $C $((2 * N + 200))
TICK=$(getconf CLK_TCK)

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# prepare FROM TO: payments for registrations FROM..TO, not yet due
prepare() {
	w_sql $C "BEGIN;
CREATE TEMP TABLE t_new AS SELECT payment.create(('30000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
                           ('10000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
                           20.00, stripe_payment_method => 'pm_card_visa') AS id
    FROM generate_series($1, $2) i;
UPDATE payment.outbox SET next_attempt_at = now() + interval '1 hour' WHERE payment_id IN (SELECT id FROM t_new);
COMMIT" >/dev/null
	w_sql $C "VACUUM ANALYZE payment.outbox" >/dev/null
}

# cluster_cpu: CPU ticks of the postmaster and its live children
cluster_cpu() {
	local pm total=0 p
	pm=$(head -1 "$PE_WORK/$C/postmaster.pid")
	for p in $pm $(pgrep -P "$pm"); do
		[ -r "/proc/$p/stat" ] && total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
	done
	echo $total
}
proc_cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# drain: make every pending row due, wake the worker, time until none is left
drain() {
	local t0 t1
	t0=$(now_ms)
	w_sql $C "UPDATE payment.outbox SET next_attempt_at = now() WHERE state = 'pending'" >/dev/null
	w_sql $C "SELECT pg_reload_conf()" >/dev/null
	w_wait $C "SELECT count(*) FROM payment.outbox WHERE state IN ('pending', 'sending')" 0 600 >/dev/null
	t1=$(now_ms)
	echo $((t1 - t0))
}

# --- (a) 50 ms answers ---------------------------------------------------------------
w_http POST /_test/config '{"latency_ms": 50}' >/dev/null
prepare 1 "$N"
MS_A=$(drain)
DONE_A=$(w_sql $C "SELECT count(*) FROM payment.outbox WHERE state = 'done' AND last_http_status = 200")
RATE_A=$(python3 -c "print(round($N / ($MS_A / 1000.0)))")
PCT_A=$(python3 -c "print(round($RATE_A / 1280.0, 2))")
echo "(a) $N rows, stand-in 50 ms: ${MS_A} ms, $RATE_A rows/s, $DONE_A done with HTTP 200"
echo "RESULT worker-50ms | rows/s draining $N rows, answers after 50 ms, 64 in flight | $RATE_A rows/s | 1280 rows/s (in-flight bound) | $PCT_A"

# --- (b) immediate answers -----------------------------------------------------------
w_http POST /_test/config '{"latency_ms": 0}' >/dev/null
prepare $((N + 1)) $((2 * N))
WPID=$(w_worker_pid $C)
W0=$(proc_cpu "$WPID")
S0=$(cluster_cpu)
MS_B=$(drain)
W1=$(proc_cpu "$WPID")
S1=$(cluster_cpu)
RATE_B=$(python3 -c "print(round($N / ($MS_B / 1000.0)))")
WUS=$(python3 -c "print(round(($W1 - $W0) * 1e6 / $TICK / $N))")
SUS=$(python3 -c "print(round(($S1 - $S0) * 1e6 / $TICK / $N))")
echo "(b) $N rows, immediate answers: ${MS_B} ms, $RATE_B rows/s; worker $WUS us CPU/row, server (worker included) $SUS us CPU/row"
echo "RESULT worker-immediate | rows/s draining $N rows, immediate answers | $RATE_B rows/s | 200 rows/s (pg_net's documented ceiling) | $(python3 -c "print(round($RATE_B / 200.0, 1))")"
echo "RESULT worker-cpu | CPU per row, immediate answers (worker; whole server) | $WUS us; $SUS us | - | -"

# --- (c) commit-to-request latency at idle ------------------------------------------------
w_wait $C "SELECT state FROM payment.worker_status" idle 30 >/dev/null
: >"$PE_WORK/$C.lat"
for k in $(seq 1 100); do
	i=$((2 * N + k))
	sleep 0.02
	out=$(w_sql $C "SELECT payment.create('$(w_reg $i)', '$(w_user $i)', 20.00, stripe_payment_method => 'pm_card_visa') || ' ' || extract(epoch FROM clock_timestamp())")
	w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '${out%% *}'" 1 10 >/dev/null
	echo "$out" >>"$PE_WORK/$C.lat"
done
LAT=$(w_http GET "/_test/requests?path=/v1/payment_intents&limit=50000" | python3 -c "
import json, sys
reqs = json.load(sys.stdin)['requests']
first = {}
for r in reqs:
    pid = r['params'].get('metadata', {}).get('payment_id')
    if pid and pid not in first:
        first[pid] = r['time']
lat = []
for line in open('$PE_WORK/$C.lat'):
    pid, t = line.split()
    lat.append((first[pid] - float(t)) * 1000.0)
lat.sort()
med = lat[len(lat) // 2]
p99 = lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))]
print('%.1f %.1f' % (med, p99))")
read -r MED P99 <<<"$LAT"
echo "(c) commit-to-request latency at idle, 100 payments: median $MED ms, p99 $P99 ms"
echo "RESULT worker-latency | commit-to-request at idle, median (p99) | $MED ms ($P99 ms) | 1000 ms (pg_net's 1 s poll, worst case) | $(python3 -c "print(round($MED / 1000.0, 4))")"
