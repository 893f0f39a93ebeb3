#!/usr/bin/env bash
#
# test/t/webhook_settle_refund.sh — the settler's refund lookups: a refund
# whose refund.create may first have reached Stripe over 23 hours ago
# (payment_ext.idempotency_window) is never resent blind; once the
# row is dead the worker lists the PaymentIntent's refunds at Stripe
# (refund.list) and finds ours by metadata[refund_id]:
#   - the request reached Stripe but every answer was lost: found, recorded
#     Completed, never sent again (one refund in the stand-in's ledger);
#   - the request never reached Stripe: not found, sent again once under a
#     new idempotency key (pe-<refund id>-re-2), Completed, one refund;
#   - Stripe has it failed: the refund becomes Failed, nothing sent again;
#   - ours is older than the newest 100 refunds: found on the next page;
#   - a refund.create that could never be built (no PaymentIntent anywhere)
#     fails its refund without any request to Stripe;
#   - an ERROR in the settler's turn is recovered from by the worker itself
#     (no crash, no server restart);
#   - a refund Stripe answered "pending", settled later at Stripe with its
#     webhook lost: looked up pending_ttl after the answer, Completed, never
#     sent again.
# Prints TAP.
#
set -uo pipefail
source "$PE_WORK/repo/test/worker_lib.sh"
trap w_cleanup EXIT

echo "1..44"

C=w_settle_re
w_standin_start $C
# retries slow enough (and many enough) that a row whose answers are lost
# is still pending when the test ages it
w_cluster $C "payment_ext.pending_ttl = '3s'" "payment_ext.max_attempts = 100" \
	"payment_ext.retry_base_ms = 300" "payment_ext.retry_max_ms = 600"
w_seed $C 10
ADMIN=$(w_user 10)

# w_wait_http PATH EXPR EXPECTED SECONDS: poll a stand-in control GET until
# the Python expression over its JSON (j) prints EXPECTED; prints the last value
w_wait_http() {
	local path=$1 expr=$2 want=$3 secs=$4 got deadline
	deadline=$(($(date +%s%N) + secs * 1000000000))
	while :; do
		got=$(w_http GET "$path" | w_json "$expr" 2>/dev/null)
		if [ "$got" = "$want" ] || [ "$(date +%s%N)" -gt "$deadline" ]; then
			echo "$got"
			[ "$got" = "$want" ]
			return
		fi
		sleep 0.1
	done
}
# paid I AMOUNT: a payment of registration I charged at the stand-in, Completed
paid() {
	local p
	p=$(w_sql $C "SELECT payment.create('$(w_reg "$1")', '$(w_user "$1")', $2, stripe_payment_method => 'pm_card_visa')")
	w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$p'" 1 60 >/dev/null
	echo "$p"
}
# pi PAYMENT: the payment's PaymentIntent id, opened
pi() {
	w_sql $C "SELECT payment.decrypt(\"EncryptedStripePaymentIntentId\", 'Payments.EncryptedStripePaymentIntentId:' || \"Id\") FROM \"Payments\" WHERE \"Id\" = '$1'"
}
# kinds REFUND: the refund's outbox rows, kind:state in order
kinds() {
	w_sql $C "SELECT string_agg(kind || ':' || state, ',' ORDER BY id) FROM payment.outbox WHERE refund_id = '$1'"
}
# age REFUND: the refund.create's first attempt that may have reached Stripe
# 24 hours ago (Stripe may have forgotten its idempotency key)
age() {
	w_sql $C "UPDATE payment.outbox SET first_attempt_at = now() - interval '24 hours',
	                                   key_sent_at = now() - interval '24 hours'
	           WHERE refund_id = '$1' AND kind = 'refund.create'" >/dev/null
}
# lost KIND PAYMENT: every refund.create of the payment meets fault KIND
lost() {
	w_http POST /_test/faults "{\"kind\": \"$1\", \"method\": \"POST\", \"path\": \"/v1/refunds\", \"payment_id\": \"$2\", \"count\": 1000}" >/dev/null
}
refund_status() {
	w_sql $C "SELECT \"RefundStatus\" FROM \"PaymentRefunds\" WHERE \"Id\" = '$1'"
}
REASON="attendee could not come after all"

# --- 1. the refund reached Stripe, every answer was lost ------------------------------
P1=$(paid 1 28.00)
PI1=$(pi "$P1")
lost drop_after "$P1"
R1=$(w_sql $C "SELECT payment.refund('$P1', 10.00, '$REASON', '$ADMIN')")
is "$(w_wait_http /_test/ledger "j['by_refund_id'].get('$R1', {}).get('refunds')" 1 60)" 1 \
	"a refund whose answers are all lost: Stripe made it once"
is "$(w_sql $C "SELECT state IN ('pending', 'sending'), attempts >= 1 FROM payment.outbox WHERE idempotency_key = 'pe-$R1-re'")|$(refund_status "$R1")" \
	"t|t|0" "  its refund.create is still retrying with its key, the refund Processing"
age "$R1"
is "$(w_wait $C "SELECT \"RefundStatus\" FROM \"PaymentRefunds\" WHERE \"Id\" = '$R1'" 1 60)" 1 \
	"its first attempt aged 24 hours: the settler looks it up and the refund is Completed"
is "$(kinds "$R1")" "refund.create:dead,refund.list:done" \
	"  by a refund.list lookup after the create died, never by resending the create"
is "$(w_sql $C "SELECT last_error LIKE 'not resent: it may first have reached Stripe longer ago than payment_ext.idempotency_window%' FROM payment.outbox WHERE idempotency_key = 'pe-$R1-re'")" t \
	"  the create row says why it died"
is "$(w_http GET "/_test/requests?path=/v1/refunds" | w_json "sorted(set(r['idempotency_key'] for r in j['requests'] if r['method'] == 'POST' and r['params']['metadata']['refund_id'] == '$R1'))")" \
	"['pe-$R1-re']" "  every POST /v1/refunds of it carried the one key"
is "$(w_http GET "/_test/requests?path=/v1/refunds" | w_json "[(r['params'], r['status'], r['idempotency_key']) for r in j['requests'] if r['method'] == 'GET']")" \
	"[({'limit': '100', 'payment_intent': '$PI1'}, 200, None)]" \
	"  the lookup: GET /v1/refunds?payment_intent=<the PaymentIntent>&limit=100, no Idempotency-Key"
is "$(w_http GET /_test/ledger | w_json "(j['by_refund_id']['$R1']['refunds'], j['by_refund_id']['$R1']['refunded_amount'], j['by_payment_id']['$P1']['refunds'])")" \
	"(1, 1000, 1)" "  the ledger: one refund of 10.00 for the refund, one for the payment"
RE1=$(w_http GET /_test/ledger | w_json "j['by_refund_id']['$R1']['ids'][0]")
is "$(w_sql $C "SELECT payment.decrypt(\"EncryptedStripeRefundId\", 'PaymentRefunds.EncryptedStripeRefundId:' || \"Id\") FROM \"PaymentRefunds\" WHERE \"Id\" = '$R1'")" \
	"$RE1" "  the Refund id found is stored sealed, as the create's answer would have"
is "$(w_sql $C "SELECT stripe_status, source FROM payment.refund_states WHERE refund_id = '$R1'")" "succeeded|lookup" \
	"  Stripe's state is recorded as a lookup"
is "$(w_sql $C "SELECT count(*) FILTER (WHERE \"ActionType\" = 'RefundCompleted') || ' ' || count(*) FROM \"PaymentAuditLog\" WHERE \"RowId\" = '$R1'")|$(w_sql $C "SELECT \"Status\", \"RefundAmountValue\" FROM \"Payments\" WHERE \"Id\" = '$P1'")" \
	"1 2|4|10.00" "  completed once (one audit row for it), the payment PartiallyRefunded by 10.00"

# --- 2. the refund never reached Stripe ------------------------------------------------
P2=$(paid 2 30.00)
PI2=$(pi "$P2")
lost drop_before "$P2"
R2=$(w_sql $C "SELECT payment.refund('$P2', 30.00, '$REASON', '$ADMIN')")
is "$(w_wait $C "SELECT attempts >= 2 FROM payment.outbox WHERE idempotency_key = 'pe-$R2-re'" t 60)" t \
	"a refund whose requests never reach Stripe keeps retrying"
is "$(w_http GET /_test/ledger | w_json "'$R2' in j['by_refund_id']")" False \
	"  Stripe has no refund for it"
age "$R2"
is "$(w_wait $C "SELECT state FROM payment.outbox WHERE idempotency_key = 'pe-$R2-re'" dead 60)" dead \
	"  aged 24 hours: its create is dead"
w_http DELETE /_test/faults >/dev/null
is "$(w_wait $C "SELECT \"RefundStatus\" FROM \"PaymentRefunds\" WHERE \"Id\" = '$R2'" 1 60)" 1 \
	"  the lookup finds nothing, the refund is sent again and Completed"
is "$(kinds "$R2")" "refund.create:dead,refund.list:done,refund.create:done" \
	"  a lookup, then one new refund.create"
is "$(w_sql $C "SELECT string_agg(idempotency_key, ',' ORDER BY id) FROM payment.outbox WHERE refund_id = '$R2' AND kind = 'refund.create'")" \
	"pe-$R2-re,pe-$R2-re-2" "  under a new idempotency key"
is "$(w_sql $C "SELECT last_error FROM payment.outbox WHERE refund_id = '$R2' AND kind = 'refund.list'")" \
	"no refund at Stripe: the refund is sent again with a new idempotency key (pe-$R2-re-2)" \
	"  the lookup row says what it did"
is "$(w_http GET "/_test/requests?path=/v1/refunds" | w_json "[(r['params']['payment_intent'] == '$PI2', r['params']['amount'], r['params']['reason'], sorted(r['params']['metadata'].items())) for r in j['requests'] if r['method'] == 'POST' and r['status'] == 200 and r['idempotency_key'] == 'pe-$R2-re-2']")" \
	"[(True, '3000', 'requested_by_customer', [('payment_id', '$P2'), ('reason', '$REASON'), ('refund_id', '$R2')])]" \
	"  the same request (its sealed PaymentIntent resealed for the new key)"
is "$(w_http GET /_test/ledger | w_json "(j['by_refund_id']['$R2']['refunds'], j['by_refund_id']['$R2']['refunded_amount'], [r['idempotency_key'] for r in j['refunds'] if r['refund_id'] == '$R2'])")" \
	"(1, 3000, ['pe-$R2-re-2'])" "  the ledger: refunded exactly once, 30.00"
is "$(w_sql $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P2'")" 3 "  the payment is Refunded"

# --- 3. Stripe has the refund failed -----------------------------------------------------
P3=$(paid 3 25.00)
lost drop_after "$P3"
R3=$(w_sql $C "SELECT payment.refund('$P3', 5.00, '$REASON', '$ADMIN')")
w_wait_http /_test/ledger "j['by_refund_id'].get('$R3', {}).get('refunds')" 1 60 >/dev/null
RE3=$(w_http GET /_test/ledger | w_json "j['by_refund_id']['$R3']['ids'][0]")
w_http POST "/_test/refunds/$RE3/fail" '{"failure_reason": "expired_or_canceled_card"}' >/dev/null
age "$R3"
is "$(w_wait $C "SELECT \"RefundStatus\" FROM \"PaymentRefunds\" WHERE \"Id\" = '$R3'" 2 60)" 2 \
	"a refund that failed at Stripe: the lookup records it Failed"
is "$(kinds "$R3")|$(w_sql $C "SELECT last_error FROM payment.outbox WHERE refund_id = '$R3' AND kind = 'refund.list'")" \
	"refund.create:dead,refund.list:done|refund failed (expired_or_canceled_card)" \
	"  nothing sent again; the lookup row says why"
is "$(w_sql $C "SELECT stripe_status, source FROM payment.refund_states WHERE refund_id = '$R3'")|$(w_sql $C "SELECT \"Status\", coalesce(\"RefundAmountValue\"::text, 'none') FROM \"Payments\" WHERE \"Id\" = '$P3'")" \
	"failed|lookup|1|none" "  Stripe's state recorded; the payment stays Completed, its amount free again"
is "$(w_http GET /_test/ledger | w_json "j['by_refund_id']['$R3']['refunds']")" 1 "  still one refund at Stripe"
is "$(w_sql $C "SELECT count(*) FROM payment.reconcile WHERE refund_id IN ('$R1', '$R2', '$R3')")" 0 \
	"payment.reconcile: the database and Stripe agree on the three refunds"

# --- 4. ours is older than the newest 100 refunds of the PaymentIntent -----------------
P4=$(paid 4 50.00)
lost drop_after "$P4"
R4=$(w_sql $C "SELECT payment.refund('$P4', 1.00, '$REASON', '$ADMIN')")
w_wait_http /_test/ledger "j['by_refund_id'].get('$R4', {}).get('refunds')" 1 60 >/dev/null
python3 - "$W_URL" "$P4" <<'EOF'
import json, sys, urllib.request
for _ in range(105):
    req = urllib.request.Request(sys.argv[1] + "/_test/dashboard_refund", method="POST",
                                 data=json.dumps({"payment_id": sys.argv[2], "amount": 1}).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=30).read()
EOF
is "$(w_http GET /_test/ledger | w_json "j['by_payment_id']['$P4']['refunds']")" 106 \
	"a refund followed by 105 refunds made in the Dashboard"
age "$R4"
is "$(w_wait $C "SELECT \"RefundStatus\" FROM \"PaymentRefunds\" WHERE \"Id\" = '$R4'" 1 60)" 1 \
	"  the lookup finds it and the refund is Completed"
is "$(kinds "$R4")" "refund.create:dead,refund.list:done,refund.list:done" \
	"  on the second page of the PaymentIntent's refunds"
is "$(w_http GET "/_test/requests?path=/v1/refunds" | w_json "[(sorted(r['params']), r['status']) for r in j['requests'] if r['method'] == 'GET' and r['params'].get('payment_intent') == '$(pi "$P4")']")" \
	"[(['limit', 'payment_intent'], 200), (['limit', 'payment_intent', 'starting_after'], 200)]" \
	"  which it asked for with starting_after (sealed in the outbox row, sent opened)"
is "$(w_sql $C "SELECT count(*) FROM payment.outbox WHERE refund_id = '$R4' AND kind = 'refund.list' AND request ? 'starting_after' AND request->>'starting_after' LIKE 'pe1:%'")" 1 \
	"  the Refund id it starts after is stored sealed"
is "$(w_http GET /_test/ledger | w_json "j['by_refund_id']['$R4']['refunds']")|$(w_sql $C "SELECT count(*) FROM payment.outbox WHERE refund_id = '$R4' AND kind = 'refund.create'")" \
	"1|1" "  refunded once, never sent again"

# --- 5. a refund.create that could never be built ----------------------------------------
P5=22222222-0000-0000-0000-000000000005
w_sql $C "INSERT INTO \"Payments\" (\"Id\", \"EventRegistrationId\", \"UserId\", \"AmountValue\", \"Status\", \"PaymentMethodType\")
          VALUES ('$P5', '$(w_reg 5)', '$(w_user 5)', 20.00, 1, 1)" >/dev/null
R5=$(w_sql $C "SELECT payment.refund('$P5', 5.00, '$REASON', '$ADMIN')")
is "$(kinds "$R5")" "" "a refund of a payment with no PaymentIntent has no request (doc/sql-reference.md, payment.refund())"
w_sql $C "INSERT INTO payment.outbox (kind, payment_id, refund_id, request, idempotency_key)
          VALUES ('refund.create', '$P5', '$R5',
                  jsonb_build_object('amount', '500', 'metadata[payment_id]', '$P5', 'metadata[refund_id]', '$R5'),
                  'pe-$R5-re')" >/dev/null
is "$(w_wait $C "SELECT \"RefundStatus\" FROM \"PaymentRefunds\" WHERE \"Id\" = '$R5'" 2 60)" 2 \
	"one queued by hand, naming no PaymentIntent, cannot be built: the settler fails the refund"
is "$(kinds "$R5")|$(w_sql $C "SELECT last_error LIKE '%the payment has no PaymentIntent, so the refund never reached Stripe: it is Failed' FROM payment.outbox WHERE refund_id = '$R5'")" \
	"refund.create:dead|t" "  without a lookup; the dead row says why"
is "$(w_http GET "/_test/requests?path=/v1/refunds" | w_json "len([r for r in j['requests'] if (r['params'] or {}).get('metadata', {}).get('refund_id') == '$R5'])")" 0 \
	"  nothing was ever sent to Stripe for it"

# --- 6. an ERROR in the settler's turn --------------------------------------------------
WPID=$(w_worker_pid $C)
w_sql $C "REVOKE INSERT ON payment.outbox FROM payment_worker" >/dev/null
is "$(w_wait $C "SELECT last_error FROM payment.worker_status" "permission denied for table outbox" 60)" \
	"permission denied for table outbox" \
	"an ERROR in the settler's turn (the worker role lost INSERT on the outbox) shows in worker_status"
is "$(w_worker_pid $C)|$(grep -c 'terminated by signal' "$PE_WORK/$C.log")" "$WPID|0" \
	"  the worker recovers by itself: same process, no crash, no server restart"
w_sql $C "GRANT INSERT ON payment.outbox TO payment_worker" >/dev/null
P6=$(paid 6 12.00)
R6=$(w_sql $C "SELECT payment.refund('$P6', 12.00, '$REASON', '$ADMIN')")
is "$(w_wait $C "SELECT \"RefundStatus\" FROM \"PaymentRefunds\" WHERE \"Id\" = '$R6'" 1 60)" 1 \
	"  once the grant is back it drains again"

# --- 7. Stripe answered "pending", and the webhook that settles it never came ---------------
P7=$(paid 7 15.00)
w_http POST /_test/faults "{\"kind\": \"refund_pending\", \"method\": \"POST\", \"path\": \"/v1/refunds\", \"payment_id\": \"$P7\", \"count\": 1}" >/dev/null
R7=$(w_sql $C "SELECT payment.refund('$P7', 15.00, '$REASON', '$ADMIN')")
is "$(w_wait $C "SELECT state FROM payment.outbox WHERE refund_id = '$R7' AND kind = 'refund.create'" done 60)|$(refund_status "$R7")" \
	"done|0" "a refund Stripe answered pending stays Processing"
RE7=$(w_http GET /_test/ledger | w_json "j['by_refund_id']['$R7']['ids'][0]")
w_http POST "/_test/refunds/$RE7/succeed" '{}' >/dev/null
is "$(w_wait $C "SELECT \"RefundStatus\" FROM \"PaymentRefunds\" WHERE \"Id\" = '$R7'" 1 60)" 1 \
	"  Stripe settles it and no webhook arrives: the settler looks it up (pending_ttl after the answer) and completes it"
is "$(kinds "$R7" | sed -E 's/(,refund.list:done)+$/,refund.list:done/')|$(w_sql $C "SELECT stripe_status, source FROM payment.refund_states WHERE refund_id = '$R7'")" \
	"refund.create:done,refund.list:done|succeeded|lookup" "  by refund.list, recorded as a lookup"
is "$(w_http GET /_test/ledger | w_json "(j['by_refund_id']['$R7']['refunds'], j['by_refund_id']['$R7']['refunded_amount'])")" "(1, 1500)" \
	"  never sent again: one refund of 15.00 at Stripe"

# --- no Stripe id in the log --------------------------------------------------------------
is "$(grep -cE '(^|[^A-Za-z0-9_])(pi|re|ch|txn)_[A-Za-z0-9]{8,}' "$PE_WORK/$C.log")|$(grep -c "$RE1" "$PE_WORK/$C.log")" "0|0" \
	"the server log holds no PaymentIntent, Refund, charge or transaction id (the lookups' URLs hold one)"

w_done
