#!/usr/bin/env bash
#
# bench/outage.sh — draining the backlog after a Stripe outage (issue 20).
#
# Its own cluster and Stripe stand-in (test/worker_lib.sh), answers after
# 50 ms, payment_ext.max_in_flight = 64, the client rate limit at 100
# requests/s (Stripe's live account limit) and the default backoff and
# probe settings (retry_base_ms 500, retry_max_ms 60000), side by side in
# one run:
#   (a) normal drain: 2,000 payment rows queued not yet due, then made due
#       at once: rows/s;
#   (b) outage: the stand-in refuses every connection for BENCH_OUTAGE_S
#       seconds (default 180) while 2,000 payments are created; then the
#       time from the stand-in listening again to the backlog drained (the
#       breaker's next probe included), and the drain rate from the probe
#       that closed the breaker to the last row: rows/s against (a)
#       (goal: within 10 %);
#   (c) the rate limit during (b): the most requests the stand-in received
#       in any one second (limit: 100/s + a burst of a tenth of a second).
# Prints "RESULT name | what | ours | baseline | ratio" lines.
#
set -uo pipefail
source "$PE_WORK/repo/test/worker_lib.sh"
trap w_cleanup EXIT

C=b_outage
N=${BENCH_OUTAGE_ROWS:-2000}
OUTAGE=${BENCH_OUTAGE_S:-180}
RATE=100
w_standin_start $C --max-log 50000 --latency-ms 50
w_cluster $C "payment_ext.max_in_flight = 64" "payment_ext.request_timeout_ms = 30000" \
	"payment_ext.max_requests_per_second = $RATE" \
	"payment_ext.retry_base_ms = 500" "payment_ext.retry_max_ms = 60000"
w_seed $C $((2 * N))

now_ms() { echo $(($(date +%s%N) / 1000000)); }
# create FROM TO [DEFER]: payments for registrations FROM..TO (DEFER: not yet due)
create() {
	w_sql $C "BEGIN;
CREATE TEMP TABLE t_new AS SELECT payment.create(('30000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
                           ('10000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
                           20.00, stripe_payment_method => 'pm_card_visa') AS id
    FROM generate_series($1, $2) i;
${3:+UPDATE payment.outbox SET next_attempt_at = now() + interval '1 hour' WHERE payment_id IN (SELECT id FROM t_new);}
COMMIT" >/dev/null
}
# rate_of FROM TO: rows/s of the successful creates of registrations FROM..TO
# at the stand-in, from the first to the last; and the most requests in any
# one second of that span
rate_of() {
	w_http GET "/_test/requests?path=/v1/payment_intents&limit=50000" | python3 -c "
import json, sys
reqs = [r for r in json.load(sys.stdin)['requests'] if r['method'] == 'POST']
ok = sorted(r['time'] for r in reqs if r['status'] == 200 and not r['replayed']
            and $1 <= int(r['params']['metadata']['registration_id'][-12:]) <= $2)
span = ok[-1] - ok[0]
allt = sorted(r['time'] for r in reqs if ok[0] <= r['time'] <= ok[-1])
peak, j = 0, 0
for i, t in enumerate(allt):
    while allt[j] < t - 1.0:
        j += 1
    peak = max(peak, i - j + 1)
print('%d %.1f %d' % (len(ok), (len(ok) - 1) / span, peak))"
}

# --- (a) normal drain ------------------------------------------------------------------
create 1 "$N" defer
w_sql $C "VACUUM ANALYZE payment.outbox" >/dev/null
T0=$(now_ms)
w_sql $C "UPDATE payment.outbox SET next_attempt_at = now() WHERE state = 'pending'" >/dev/null
w_sql $C "SELECT pg_reload_conf()" >/dev/null
w_wait $C "SELECT count(*) FROM payment.outbox WHERE state IN ('pending', 'sending')" 0 600 >/dev/null
MS_A=$(($(now_ms) - T0))
read -r OK_A RATE_A PEAK_A <<<"$(rate_of 1 "$N")"
echo "(a) normal: $N rows in $MS_A ms; $OK_A charged at $RATE_A rows/s; at most $PEAK_A requests in one second"

# --- (b) a refused-connection outage with 2,000 rows queued ---------------------------------
w_http POST /_test/outage "{\"seconds\": $OUTAGE, \"mode\": \"refuse\"}" >/dev/null
sleep 1
create $((N + 1)) $((2 * N))
w_wait $C "SELECT state FROM payment.worker_status" stripe_unreachable 60 >/dev/null
# the stand-in listens again
while :; do
	[ "$(w_http GET /_test/health 2>/dev/null | w_json "j['ok']" 2>/dev/null)" = True ] && break
	sleep 0.1
done
T1=$(now_ms)
w_wait $C "SELECT count(*) FROM payment.outbox WHERE state IN ('pending', 'sending')" 0 900 >/dev/null
MS_B=$(($(now_ms) - T1))
read -r OK_B RATE_B PEAK_B <<<"$(rate_of $((N + 1)) $((2 * N)))"
DEAD=$(w_sql $C "SELECT count(*) FROM payment.outbox WHERE state = 'dead'")
DETECT=$(python3 -c "print(round($MS_B / 1000.0 - ($OK_B - 1) / $RATE_B, 1))")
PROBES=$(w_sql $C "SELECT probes FROM payment.worker_status")
echo "(b) outage of $OUTAGE s: $N rows drained $MS_B ms after the stand-in was back ($DETECT s until the breaker's probe); $OK_B charged at $RATE_B rows/s; $PROBES probes; $DEAD dead; at most $PEAK_B requests in one second"

RATIO=$(python3 -c "print(round($RATE_B / $RATE_A, 2))")
echo "RESULT outage-drain | rows/s draining $N rows after a $OUTAGE s outage (from the probe that closed the breaker) vs a normal drain, 100 requests/s limit | $RATE_B rows/s | $RATE_A rows/s | $RATIO"
echo "RESULT outage-back | time from Stripe back to $N rows drained (the next probe included), $PROBES probes during the outage | $(python3 -c "print(round($MS_B / 1000.0, 1))") s | $(python3 -c "print(round($MS_A / 1000.0, 1))") s (normal drain) | $(python3 -c "print(round($MS_A / $MS_B, 2))")"
echo "RESULT outage-ratelimit | most requests in one second while draining after the outage (normal drain) | $PEAK_B ($PEAK_A) | $((RATE + RATE / 10)) (limit + burst) | $(python3 -c "print(round($PEAK_B / $((RATE + RATE / 10)), 2))")"
