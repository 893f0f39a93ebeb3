#!/usr/bin/env bash
#
# test/t/worker_outage.sh — issue 20: the outbox worker rides out a Stripe or
# network outage.  One cluster, three outages in turn:
#   1. the stand-in refuses every connection (nothing listens) for
#      PE_OUTAGE_S seconds while 200 payments and 50 refunds are created;
#   2. the stand-in answers 500 (not saved), then 503 with Retry-After, for
#      PE_OUTAGE_S seconds in all, while the same is created again;
#   3. an outage longer than payment_ext.idempotency_window (shortened for
#      the test): the rows go to the settler as "Settling and
#      reconciliation" (doc/webhooks-and-settling.md) says, and nothing is
#      charged twice.
# After 1 and 2: every payment charged exactly once and Completed, every
# refund made once, no row dead, no payment Failed; the requests sent during
# the outage are bounded by the probes of the circuit breaker (not by the
# rows times their backoff); worker_status showed stripe_unreachable; one LOG
# line when the breaker opened, one when it closed; the backlog is sent in
# the order of creation, give or take the in-flight window.
#
# PE_OUTAGE_S (default 180, the issue's 3 minutes) shortens outages 1 and 2
# when iterating; CI runs the default.  Prints TAP.
#
set -uo pipefail
source "$PE_WORK/repo/test/worker_lib.sh"
trap w_cleanup EXIT

echo "1..34"

OUTAGE=${PE_OUTAGE_S:-180}
C=w_outage
INFLIGHT=64
RETRY_BASE=100
RETRY_MAX=5000
w_standin_start $C
# probes of the breaker: from retry_base_ms, doubling, at most every
# retry_max_ms; the token bucket of 100000/s is no limit here
w_cluster $C "payment_ext.retry_base_ms = $RETRY_BASE" "payment_ext.retry_max_ms = $RETRY_MAX" \
	"payment_ext.max_in_flight = $INFLIGHT"
w_seed $C 560

# the most requests an outage of S seconds may cost: the requests in flight
# when the breaker opens (at most max_in_flight), then one probe at a time:
# log2(retry_max_ms / retry_base_ms) + 1 while the interval doubles, then
# one every retry_max_ms (a Retry-After floor only makes them fewer); + 2 for
# the rounding at both ends.  Without the breaker, 250 rows retried with a
# backoff capped at 5 s would send about 250 * S / 5 requests.
bound() {
	echo $((INFLIGHT + 7 + $1 * 1000 / RETRY_MAX + 2))
}
# pay FROM TO: payments of registrations FROM..TO, 25.00 each, one transaction
pay() {
	w_sql $C "SELECT count(payment.create(('30000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
	                                      ('10000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
	                                      25.00, stripe_payment_method => 'pm_card_visa'))
	            FROM generate_series($1, $2) i"
}
# refund_all FROM TO: a full refund of each payment of registrations FROM..TO
refund_all() {
	w_sql $C "SELECT count(payment.refund(p.\"Id\", 25.00, 'attendee cannot come after all', '$(w_user 560)'))
	            FROM \"Payments\" p
	           WHERE p.\"EventRegistrationId\" IN (SELECT ('30000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid
	                                                 FROM generate_series($1, $2) i)"
}
# in FROM TO: the payments of registrations FROM..TO, as an SQL condition
in_regs() {
	echo "\"EventRegistrationId\" IN (SELECT ('30000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid FROM generate_series($1, $2) i)"
}
ledger() { w_http GET /_test/ledger; }
state_seen() {
	w_wait $C "SELECT state || '|' || (unreachable_since IS NOT NULL) || '|' || (unreachable_error LIKE '$1%') FROM payment.worker_status" \
		"stripe_unreachable|true|true" 60
}
# opened/closed: LOG lines of the breaker so far
opened() { grep -c 'Stripe unreachable after' "$PE_WORK/$C.log"; }
closed() { grep -c 'Stripe answers again after' "$PE_WORK/$C.log"; }
# claim_displacement FROM TO: the largest distance between a payment's rank
# in the order the worker claimed its create for the attempt that succeeded
# (payment.outbox.claimed_at, one transaction per batch, ties in id order)
# and its rank in the order of creation (outbox id): the order the worker
# sends the backlog in.  The first claimed is left out of both orders: it is
# the probe that closed the breaker, which the probes' turn
# (doc/worker-and-stripe.md, "Circuit breaker") may have taken from
# anywhere in the backlog.
claim_displacement() {
	w_sql $C "WITH r AS (SELECT o.id, o.claimed_at FROM payment.outbox o
	                       JOIN \"Payments\" p ON p.\"Id\" = o.payment_id
	                      WHERE o.kind = 'payment_intent.create' AND o.state = 'done'
	                        AND p.$(in_regs "$1" "$2")),
	               s AS (SELECT row_number() OVER (ORDER BY claimed_at, id) AS by_claim,
	                            row_number() OVER (ORDER BY id) AS by_id
	                       FROM r WHERE id <> (SELECT id FROM r ORDER BY claimed_at, id LIMIT 1))
	          SELECT coalesce(max(abs(by_claim - by_id)), 0) FROM s"
}
# displacement FROM TO: the same measured where the requests arrive (the
# order the stand-in received the creates that succeeded): that adds the
# network's reordering of up to max_in_flight concurrent requests, so it is
# printed for the reader, not checked.
displacement() {
	local ids
	ids=$(w_sql $C "SELECT string_agg(o.payment_id::text, ',' ORDER BY o.id) FROM payment.outbox o
	                  JOIN \"Payments\" p ON p.\"Id\" = o.payment_id
	                 WHERE o.kind = 'payment_intent.create' AND p.$(in_regs "$1" "$2")")
	w_http GET "/_test/requests?path=/v1/payment_intents&limit=20000" | python3 -c "
import json, sys
j = json.load(sys.stdin)
ids = '$ids'.split(',')
sent = [r for r in sorted(j['requests'], key=lambda r: r['seq'])
        if r['method'] == 'POST' and r['status'] == 200 and not r['replayed']
        and r['params'].get('metadata', {}).get('payment_id') in set(ids)]
pids = [r['params']['metadata']['payment_id'] for r in sent]
order = [o for o in ids if o != pids[0]]
d = [(abs(order.index(p) - i), i, order.index(p), p) for i, p in enumerate(pids[1:])]
print(max([0] + [x[0] for x in d]))
# the most displaced, for the reader (to stderr: ranks, payment, attempts)
for x in sorted(d, reverse=True)[:3]:
    if x[0] > $INFLIGHT:
        print('displaced %d: sent %d-th, created %d-th, payment %s' % x, file=sys.stderr)
" 2>"$PE_WORK/displaced.$1"
}
# why the most displaced payments went late: their outbox rows
displaced_rows() {
	local p
	for p in $(grep -o 'payment [0-9a-f-]*' "$PE_WORK/displaced.$1" | cut -d' ' -f2); do
		grep "$p" "$PE_WORK/displaced.$1" | sed 's/^/#   /'
		w_sql $C "SELECT 'outbox ' || id || ' ' || kind || ' attempts ' || attempts || ' http ' || coalesce(last_http_status::text, '-') || ' created ' || to_char(created_at, 'HH24:MI:SS.MS') || ' key_sent ' || coalesce(to_char(key_sent_at, 'HH24:MI:SS.MS'), '-') || ' done ' || coalesce(to_char(completed_at, 'HH24:MI:SS.MS'), '-') FROM payment.outbox WHERE payment_id = '$p' ORDER BY id" | sed 's/^/#     /'
	done
	grep -E 'answers again after|unreachable after' "$PE_WORK/$C.log" | sed 's/^/#   log: /'
}

# --- payments to refund during the outages: 501..600 Completed ------------------------
pay 501 560 >/dev/null
is "$(w_wait $C "SELECT count(*) FROM \"Payments\" WHERE \"Status\" = 1" 60 60)" 60 \
	"60 payments to refund later are Completed before any outage"

# =========================================================================================
# 1. nothing listens: every connection refused
# =========================================================================================
w_http POST /_test/outage "{\"seconds\": $OUTAGE, \"mode\": \"refuse\"}" >/dev/null
T0=$(date +%s)
sleep 0.5
pay 1 100 >/dev/null
refund_all 501 525 >/dev/null
is "$(state_seen 'no answer')" "stripe_unreachable|true|true" \
	"1. connections refused: worker_status shows stripe_unreachable, since when, and the last error"
pay 101 200 >/dev/null
refund_all 526 550 >/dev/null
is "$(w_sql $C "SELECT count(*) FROM payment.outbox WHERE state = 'dead'")|$(w_sql $C "SELECT count(*) FROM \"Payments\" WHERE \"Status\" = 2")" "0|0" \
	"  during the outage: no row dead, no payment Failed"
is "$(w_sql $C "SELECT count(*) FROM payment.outbox WHERE kind IN ('payment_intent.create', 'refund.create') AND state = 'pending' AND key_sent_at IS NULL AND attempts > 0")" \
	"$(w_sql $C "SELECT count(*) FROM payment.outbox WHERE kind IN ('payment_intent.create', 'refund.create') AND state = 'pending' AND attempts > 0")" \
	"  a refused connection never reached Stripe: no tried row has started its idempotency window"
# wait for the stand-in to listen again
while [ $(($(date +%s) - T0)) -lt $((OUTAGE + 60)) ]; do
	[ "$(w_http GET /_test/health 2>/dev/null | w_json "j['ok']" 2>/dev/null)" = True ] && break
	sleep 0.5
done
is "$(w_wait $C "SELECT count(*) FROM \"Payments\" WHERE $(in_regs 1 200) AND \"Status\" = 1" 200 120)" 200 \
	"  the stand-in is back: all 200 payments Completed"
is "$(w_wait $C "SELECT count(*) FROM \"PaymentRefunds\" WHERE \"RefundStatus\" = 1" 50 60)" 50 \
	"  all 50 refunds Completed"
L=$(ledger)
is "$(echo "$L" | w_json "sorted(set(v['charges'] for p, v in j['by_payment_id'].items()))")" "[1]" \
	"  the ledger: every payment charged exactly once"
is "$(echo "$L" | w_json "(len(j['by_refund_id']), sorted(set(v['refunds'] for v in j['by_refund_id'].values())))")" "(50, [1])" \
	"  the ledger: every refund made exactly once"
is "$(w_sql $C "SELECT count(*) FROM payment.outbox WHERE state = 'dead'")|$(w_sql $C "SELECT count(*) FROM \"Payments\" WHERE \"Status\" = 2")" "0|0" \
	"  no row dead, no payment Failed"
EXTRA=$(w_sql $C "SELECT sum(attempts) - count(*) FROM payment.outbox WHERE created_at > to_timestamp($T0)")
echo "# outage 1: $EXTRA failed attempts for 250 rows in $OUTAGE s (bound $(bound "$OUTAGE"))"
ok $([ "$EXTRA" -le "$(bound "$OUTAGE")" ]; echo $?) \
	"  attempts that failed during the outage ($EXTRA) are bounded by the breaker's probes (at most $(bound "$OUTAGE"))"
PROBES1=$(w_sql $C "SELECT probes FROM payment.worker_status")
ok $([ "$PROBES1" -ge 1 ] && [ "$PROBES1" -le $((7 + OUTAGE * 1000 / RETRY_MAX + 2)) ]; echo $?) \
	"  worker_status counted $PROBES1 probes, one at a time"
is "$(opened)|$(closed)" "1|1" "  one LOG line when the breaker opened, one when it closed"
is "$(w_sql $C "SELECT state, unreachable_since IS NULL FROM payment.worker_status")" "idle|t" \
	"  worker_status is back to idle"
D=$(displacement 1 200)
echo "# outage 1: largest displacement from the order of creation where the requests arrived: $D"
[ "$D" -le "$INFLIGHT" ] || displaced_rows 1
D=$(claim_displacement 1 200)
echo "# outage 1: largest displacement from the order of creation as the worker claimed: $D"
ok $([ "$D" -le "$INFLIGHT" ]; echo $?) "  the backlog went out in the order of creation, give or take max_in_flight ($D, as the worker claimed it)"

# =========================================================================================
# 2. Stripe answers 500 (not saved), then 503 with Retry-After
# =========================================================================================
FAULTS0=$(ledger | w_json "j['counts']['faults']")
w_http POST /_test/faults '{"faults": [{"kind": "500", "stored": false, "rate": 1}], "replace": true}' >/dev/null
T0=$(date +%s)
pay 201 300 >/dev/null
refund_all 551 560 >/dev/null
is "$(state_seen 'HTTP 500')" "stripe_unreachable|true|true" \
	"2. 500s: worker_status shows stripe_unreachable with HTTP 500"
pay 301 400 >/dev/null
sleep $((OUTAGE / 2 - ($(date +%s) - T0) > 0 ? OUTAGE / 2 - ($(date +%s) - T0) : 0))
w_http POST /_test/faults '{"faults": [{"kind": "503", "retry_after": 3, "rate": 1}], "replace": true}' >/dev/null
is "$(w_wait $C "SELECT unreachable_error FROM payment.worker_status" "HTTP 503" 60)" "HTTP 503" \
	"  then 503s with Retry-After: the breaker stays open"
sleep $((OUTAGE - ($(date +%s) - T0) > 0 ? OUTAGE - ($(date +%s) - T0) : 0))
w_http POST /_test/faults/clear >/dev/null
FAULTS=$(( $(ledger | w_json "j['counts']['faults']") - FAULTS0 ))
is "$(w_wait $C "SELECT count(*) FROM \"Payments\" WHERE $(in_regs 201 400) AND \"Status\" = 1" 200 120)" 200 \
	"  Stripe answers again: all 200 payments Completed"
is "$(w_wait $C "SELECT count(*) FROM \"PaymentRefunds\" WHERE \"RefundStatus\" = 1" 60 60)" 60 \
	"  all 10 refunds Completed"
L=$(ledger)
is "$(echo "$L" | w_json "sorted(set(v['charges'] for p, v in j['by_payment_id'].items()))")" "[1]" \
	"  the ledger: every payment charged exactly once"
is "$(echo "$L" | w_json "(len(j['by_refund_id']), sorted(set(v['refunds'] for v in j['by_refund_id'].values())))")" "(60, [1])" \
	"  the ledger: every refund made exactly once"
is "$(w_sql $C "SELECT count(*) FROM payment.outbox WHERE state = 'dead'")|$(w_sql $C "SELECT count(*) FROM \"Payments\" WHERE \"Status\" = 2")" "0|0" \
	"  no row dead, no payment Failed"
echo "# outage 2: the stand-in answered $FAULTS requests with 500 or 503 in $OUTAGE s (bound $(bound "$OUTAGE"))"
ok $([ "$FAULTS" -le "$(bound "$OUTAGE")" ]; echo $?) \
	"  the stand-in counted $FAULTS requests during the outage: bounded by the probes (at most $(bound "$OUTAGE"))"
is "$(opened)|$(closed)" "2|2" "  one more LOG line each when the breaker opened and closed"
D=$(displacement 201 400)
echo "# outage 2: largest displacement from the order of creation where the requests arrived: $D"
[ "$D" -le "$INFLIGHT" ] || displaced_rows 201
D=$(claim_displacement 201 400)
echo "# outage 2: largest displacement from the order of creation as the worker claimed: $D"
ok $([ "$D" -le "$INFLIGHT" ]; echo $?) "  the backlog went out in the order of creation, give or take max_in_flight ($D, as the worker claimed it)"

# =========================================================================================
# 3. an outage longer than the idempotency window
# =========================================================================================
# A 20 s window (superuser-only, for tests) and a 5 s search lag; the
# settler's turns every second (a quarter of pending_ttl).  Half the
# requests reach Stripe and are executed but every answer is lost
# (drop_after); the other half get 503s (never executed).
w_sql $C "ALTER SYSTEM SET payment_ext.idempotency_window = '20s'" >/dev/null
w_sql $C "ALTER SYSTEM SET payment_ext.search_lag = '5s'" >/dev/null
w_sql $C "ALTER SYSTEM SET payment_ext.pending_ttl = '4s'" >/dev/null
w_sql $C "SELECT pg_reload_conf()" >/dev/null
mapfile -t RP < <(w_sql $C "SELECT \"Id\" FROM \"Payments\" WHERE $(in_regs 1 8) ORDER BY \"EventRegistrationId\"")
mapfile -t PIDS < <(w_sql $C "SELECT gen_random_uuid() FROM generate_series(1, 20)")
SPECS=""
for k in "${!PIDS[@]}"; do
	if [ $((k % 2)) -eq 0 ]; then kind=drop_after; else kind=503; fi
	SPECS="$SPECS${SPECS:+,}{\"kind\": \"$kind\", \"rate\": 1, \"path\": \"/v1/payment_intents\", \"payment_id\": \"${PIDS[$k]}\"}"
done
for k in "${!RP[@]}"; do
	if [ $((k % 2)) -eq 0 ]; then kind=drop_after; else kind=503; fi
	SPECS="$SPECS,{\"kind\": \"$kind\", \"rate\": 1, \"path\": \"/v1/refunds*\", \"payment_id\": \"${RP[$k]}\"}"
done
w_http POST /_test/faults "{\"faults\": [$SPECS], \"replace\": true}" >/dev/null
# 20 payments (created as payment.create would, with ids known to the
# faults) and refunds of the payments of registrations 1..8, in one
# transaction, so that every request goes out once before the breaker opens
SQL="BEGIN;"
for k in "${!PIDS[@]}"; do
	SQL="$SQL
INSERT INTO \"Payments\" (\"Id\", \"EventRegistrationId\", \"UserId\", \"AmountValue\", \"PaymentMethodType\")
VALUES ('${PIDS[$k]}', '$(w_reg $((401 + k)))', '$(w_user $((401 + k)))', 25.00, 1);
INSERT INTO payment.outbox (kind, payment_id, request, idempotency_key)
VALUES ('payment_intent.create', '${PIDS[$k]}',
        jsonb_build_object('amount', '2500', 'currency', 'usd', 'confirm', 'true',
                           'payment_method', 'pm_card_visa',
                           'automatic_payment_methods[enabled]', 'true',
                           'automatic_payment_methods[allow_redirects]', 'never',
                           'metadata[payment_id]', '${PIDS[$k]}'),
        'pe-${PIDS[$k]}-pi-1');"
done
SQL="$SQL
SELECT count(payment.refund(p, 25.00, 'attendee cannot come after all', '$(w_user 560)'))
  FROM unnest(ARRAY[$(printf "'%s'::uuid," "${RP[@]}" | sed 's/,$//')]) p;
COMMIT;"
T3=$(date +%s)
w_sql $C "$SQL" >/dev/null
mapfile -t REFS < <(w_sql $C "SELECT \"Id\" FROM \"PaymentRefunds\" WHERE \"OriginalPaymentId\" IN ($(printf "'%s'," "${RP[@]}" | sed 's/,$//'))")
ALLP=$(printf "'%s'," "${PIDS[@]}" | sed 's/,$//')
EVEN=$(for k in 0 2 4 6 8 10 12 14 16 18; do printf "'%s'," "${PIDS[$k]}"; done | sed 's/,$//')
ODD=$(for k in 1 3 5 7 9 11 13 15 17 19; do printf "'%s'," "${PIDS[$k]}"; done | sed 's/,$//')
ALLR=$(printf "'%s'," "${REFS[@]}" | sed 's/,$//')
is "$(w_wait $C "SELECT count(*) FROM payment.outbox WHERE state = 'dead' AND (payment_id IN ($ALLP) OR refund_id IN ($ALLR))
                   AND kind IN ('payment_intent.create', 'refund.create')
                   AND last_error LIKE 'not resent: it may first have reached Stripe longer ago than payment_ext.idempotency_window%'" 28 90)" 28 \
	"3. an outage past the window: the 28 create requests are dead once the window closed, with the reason"
# the outage ends
w_http POST /_test/faults/clear >/dev/null
echo "# outage 3: faults cleared after $(($(date +%s) - T3)) s"
is "$(w_wait $C "SELECT count(*) FROM \"Payments\" WHERE \"Id\" IN ($ALLP) AND \"Status\" <> 0" 20 90)" 20 \
	"  the settler settles every payment"
is "$(w_sql $C "SELECT count(*) FROM \"Payments\" WHERE \"Id\" IN ($EVEN) AND \"Status\" = 1")" 10 \
	"  charged at Stripe with the answers lost: found by the search, Completed"
is "$(w_sql $C "SELECT count(*) FROM \"Payments\" p JOIN \"PaymentFailures\" f ON f.\"PaymentId\" = p.\"Id\" WHERE p.\"Id\" IN ($ODD) AND p.\"Status\" = 2 AND f.\"FailureCode\" = 'expired'")" 10 \
	"  never executed at Stripe: not found by the search, Failed (code expired)"
is "$(w_sql $C "SELECT count(*) FILTER (WHERE s.created_at >= d.completed_at + interval '5 seconds') || '/' || count(*)
                  FROM payment.outbox d JOIN payment.outbox s USING (payment_id)
                 WHERE d.payment_id IN ($ALLP) AND d.kind = 'payment_intent.create' AND s.kind = 'payment_intent.search'")" "20/20" \
	"  each by one search, queued payment_ext.search_lag (5 s) after its create died, never by resending the create"
is "$(w_wait $C "SELECT count(*) FROM \"PaymentRefunds\" WHERE \"Id\" IN ($ALLR) AND \"RefundStatus\" = 1" 8 90)" 8 \
	"  the 8 refunds: looked up (the 4 Stripe never executed sent again under a new key), all Completed"
is "$(w_sql $C "SELECT count(*) FROM payment.outbox WHERE refund_id IN ($ALLR) AND kind = 'refund.create' AND idempotency_key LIKE '%-re-2'")" 4 \
	"  exactly the 4 that Stripe never executed went out again"
L=$(ledger)
is "$(echo "$L" | w_json "max(v['charges'] for v in j['by_payment_id'].values())")|$(echo "$L" | w_json "sum(j['by_payment_id'].get(p, {}).get('charges', 0) for p in \"$(echo "$ALLP" | tr -d "'")\".split(','))")" "1|10" \
	"  the ledger: no payment charged twice; 10 charges for the 20 payments"
is "$(echo "$L" | w_json "sorted(j['by_refund_id'][r]['refunds'] for r in \"$(echo "$ALLR" | tr -d "'")\".split(','))")" "[1, 1, 1, 1, 1, 1, 1, 1]" \
	"  the ledger: each refund made exactly once"
is "$(w_sql $C "SELECT count(*) FROM payment.outbox WHERE state = 'dead' AND payment_id NOT IN ($ALLP) AND (refund_id IS NULL OR refund_id NOT IN ($ALLR))")" 0 \
	"  nothing else is dead"

w_done
