#!/usr/bin/env bash
#
# test/t/worker_faults.sh — the outbox worker against every misbehaviour of
# the Stripe stand-in: each payment (or refund) gets one fault, filtered by
# its id, and ends in the state doc/worker-and-stripe.md promises; the
# stand-in's ledger shows no key charged or refunded twice.  Prints TAP.
#
# The rows are created with their next_attempt_at an hour ahead, the faults
# registered, then all are made due at once and the worker woken (SIGHUP
# sets its latch).
#
set -uo pipefail
source "$PE_WORK/repo/test/worker_lib.sh"
trap w_cleanup EXIT

echo "1..41"

C=w_faults
w_standin_start $C
# backoffs long enough for the slow answer to finish while retries get 409;
# request timeouts are worker_lib's (5 s), the slow answer comes 0.5 s later
w_cluster $C "payment_ext.retry_base_ms = 100" "payment_ext.retry_max_ms = 1000"
SLOW_MS=$(($(w_sql $C "SELECT setting FROM pg_settings WHERE name = 'payment_ext.request_timeout_ms'") + 500))
w_seed $C 30

# defer_pay I [PM]: a payment for registration I whose request is not yet due
defer_pay() {
	local pm=${2:-pm_card_visa}
	w_sql $C "BEGIN;
SELECT set_config('t.p', payment.create('$(w_reg "$1")', '$(w_user "$1")', 25.00, stripe_payment_method => '$pm')::text, true);
UPDATE payment.outbox SET next_attempt_at = now() + interval '1 hour' WHERE payment_id = current_setting('t.p')::uuid;
COMMIT"
}
# defer_refund PAYMENT AMOUNT: a refund whose request is not yet due
defer_refund() {
	w_sql $C "BEGIN;
SELECT set_config('t.r', payment.refund('$1', $2, 'customer asked for a refund', '$(w_user 30)')::text, true);
UPDATE payment.outbox SET next_attempt_at = now() + interval '1 hour' WHERE refund_id = current_setting('t.r')::uuid;
COMMIT"
}
fault() { w_http POST /_test/faults "$1" >/dev/null; }
status() { w_sql $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$1'"; }
row() { w_sql $C "SELECT state, attempts FROM payment.outbox WHERE payment_id = '$1' AND kind = 'payment_intent.create'"; }
charges() { w_http GET /_test/ledger | w_json "j['by_payment_id'].get('$1', {}).get('charges', 0)"; }

# --- payments that complete in the end ------------------------------------------
declare -A P
P[500u]=$(defer_pay 1)
P[500s]=$(defer_pay 2)
P[502]=$(defer_pay 3)
P[503]=$(defer_pay 4)
P[429]=$(defer_pay 5)
P[decline]=$(defer_pay 6)
P[action]=$(defer_pay 7)
P[retry_true]=$(defer_pay 8)
P[retry_false]=$(defer_pay 9)
P[slow]=$(defer_pay 10)
P[drop_before]=$(defer_pay 11)
P[drop_after]=$(defer_pay 12)
P[drop_mid]=$(defer_pay 13)
P[malformed]=$(defer_pay 14)
P[forever]=$(defer_pay 15)

fault "{\"kind\": \"500\", \"stored\": false, \"count\": 2, \"payment_id\": \"${P[500u]}\"}"
fault "{\"kind\": \"500\", \"payment_id\": \"${P[500s]}\"}"
fault "{\"kind\": \"502\", \"count\": 2, \"payment_id\": \"${P[502]}\"}"
fault "{\"kind\": \"503\", \"payment_id\": \"${P[503]}\"}"
fault "{\"kind\": \"429\", \"retry_after\": 1, \"payment_id\": \"${P[429]}\"}"
fault "{\"kind\": \"decline\", \"payment_id\": \"${P[decline]}\"}"
fault "{\"kind\": \"requires_action\", \"payment_id\": \"${P[action]}\"}"
fault "{\"kind\": \"decline\", \"decline_code\": \"processing_error\", \"code\": \"processing_error\", \"should_retry\": true, \"payment_id\": \"${P[retry_true]}\"}"
fault "{\"kind\": \"503\", \"should_retry\": false, \"payment_id\": \"${P[retry_false]}\"}"
fault "{\"kind\": \"slow\", \"delay_ms\": $SLOW_MS, \"payment_id\": \"${P[slow]}\"}"
fault "{\"kind\": \"drop_before\", \"payment_id\": \"${P[drop_before]}\"}"
fault "{\"kind\": \"drop_after\", \"payment_id\": \"${P[drop_after]}\"}"
fault "{\"kind\": \"drop_mid_body\", \"payment_id\": \"${P[drop_mid]}\"}"
fault "{\"kind\": \"malformed_json\", \"payment_id\": \"${P[malformed]}\"}"
fault "{\"kind\": \"503\", \"rate\": 1, \"payment_id\": \"${P[forever]}\"}"

# --- refunds ---------------------------------------------------------------------------
for i in 16 17 18; do
	w_sql $C "SELECT payment.create('$(w_reg $i)', '$(w_user $i)', 25.00, stripe_payment_method => 'pm_card_visa')" >/dev/null
done
w_wait $C "SELECT count(*) FROM \"Payments\" WHERE \"Status\" = 1" 3 60 >/dev/null
mapfile -t DONE < <(w_sql $C "SELECT \"Id\" FROM \"Payments\" WHERE \"Status\" = 1 ORDER BY \"Id\"")
R_PENDING=$(defer_refund "${DONE[0]}" 10.00)
R_FAILED=$(defer_refund "${DONE[1]}" 10.00)
R_503=$(defer_refund "${DONE[2]}" 25.00)
fault "{\"kind\": \"refund_pending\", \"refund_id\": \"$R_PENDING\"}"
fault "{\"kind\": \"refund_failed\", \"refund_id\": \"$R_FAILED\"}"
fault "{\"kind\": \"503\", \"refund_id\": \"$R_503\"}"

# --- go ---------------------------------------------------------------------------------
T0=$(date +%s%N)
w_sql $C "UPDATE payment.outbox SET next_attempt_at = now() WHERE state = 'pending'" >/dev/null
w_sql $C "SELECT pg_reload_conf()" >/dev/null
is "$(w_wait $C "SELECT count(*) FROM payment.outbox WHERE state IN ('pending', 'sending')
                   AND payment_id NOT IN ('${P[500s]}', '${P[forever]}')" 0 60)" 0 \
	"every row ends done or dead, but the two that Stripe keeps answering 5xx"
echo "# drained in $(( ($(date +%s%N) - T0) / 1000000 )) ms"

is "$(status "${P[500u]}")|$(charges "${P[500u]}")" "1|1" "500 not saved, twice: Completed, charged once"
is "$(row "${P[500u]}")" "done|3" "  after 3 attempts with the same key"
# issue 20: the retry budget is time, not a count
is "$(w_wait $C "SELECT state <> 'dead' AND attempts > 8 FROM payment.outbox WHERE payment_id = '${P[500s]}' AND kind = 'payment_intent.create'" t 90)|$(status "${P[500s]}")" "t|0" \
	"500 saved and replayed: retried with its key past max_attempts (8), never dead inside the idempotency window, payment left Pending"
is "$(status "${P[502]}")|$(row "${P[502]}")|$(charges "${P[502]}")" "1|done|3|1" "502 twice: Completed after 3 attempts, charged once"
is "$(status "${P[503]}")|$(row "${P[503]}")|$(charges "${P[503]}")" "1|done|2|1" "503 once: Completed after 2 attempts, charged once"
is "$(status "${P[429]}")|$(charges "${P[429]}")" "1|1" "429 with Retry-After: Completed, charged once"
is "$(w_http GET "/_test/requests?path=/v1/payment_intents" | w_json "(lambda t: t[1] - t[0] >= 1.0)([r['time'] for r in j['requests'] if r['params'].get('metadata', {}).get('payment_id') == '${P[429]}'][:2])")" True \
	"  the retry waited for Retry-After (1 s)"

is "$(status "${P[decline]}")|$(row "${P[decline]}")|$(charges "${P[decline]}")" "2|done|1|0" "402 insufficient_funds: Failed at once, nothing charged"
is "$(w_sql $C "SELECT \"FailureCode\", \"RetryCount\", \"FailureMessage\" !~ '(pi|ch|pm)_' FROM \"PaymentFailures\" WHERE \"PaymentId\" = '${P[decline]}'")" \
	"insufficient_funds|0|t" "  a PaymentFailures row with the decline code and a message without Stripe ids"
is "$(w_sql $C "SELECT d->>'type', d->>'code', d->>'decline_code', d->>'http_status', d->>'request_id' LIKE 'req_%'
  FROM (SELECT payment.decrypt(\"EncryptedStripeErrorDetails\", 'PaymentFailures.EncryptedStripeErrorDetails:' || \"Id\")::jsonb d
          FROM \"PaymentFailures\" WHERE \"PaymentId\" = '${P[decline]}') s")" \
	"card_error|card_declined|insufficient_funds|402|t" "  the sealed error details open under the failure row's context"
is "$(w_sql $C "SELECT last_http_status, last_error FROM payment.outbox WHERE payment_id = '${P[decline]}' AND kind = 'payment_intent.create'")" \
	"402|HTTP 402 card_error/card_declined/insufficient_funds: Your card has insufficient funds." \
	"  the outbox row keeps the HTTP status and a secret-free error"

is "$(status "${P[action]}")|$(row "${P[action]}")" "0|done|1" "requires_action: Pending, row done"
is "$(w_sql $C "SELECT stripe_status, next_action->>'type' IS NOT NULL FROM payment.intents WHERE payment_id = '${P[action]}'")" \
	"requires_action|t" "  payment.intents holds the status and the next action"
is "$(w_sql $C "SET app.user_role = 'Admin'; SELECT payment.client_secret('${P[action]}') ~ '^pi_.*_secret_'")" t \
	"  and the client secret for Stripe.js"

is "$(status "${P[retry_true]}")|$(row "${P[retry_true]}")|$(charges "${P[retry_true]}")" "2|done|2|0" \
	"Stripe-Should-Retry: true on a 402: retried, the replayed 402 is final"
is "$(w_sql $C "SELECT \"FailureCode\", \"RetryCount\" FROM \"PaymentFailures\" WHERE \"PaymentId\" = '${P[retry_true]}'")" \
	"processing_error|1" "  its failure row counts the retry"
is "$(status "${P[retry_false]}")|$(row "${P[retry_false]}")|$(charges "${P[retry_false]}")" "0|dead|1|0" \
	"Stripe-Should-Retry: false on a 503: dead at once, payment left Pending"

is "$(status "${P[slow]}")|$(charges "${P[slow]}")" "1|1" "slow answer past the timeout: Completed, charged once"
is "$(w_sql $C "SELECT attempts >= 2 FROM payment.outbox WHERE payment_id = '${P[slow]}' AND kind = 'payment_intent.create'")" t "  after retries with the same key"
is "$(status "${P[drop_before]}")|$(row "${P[drop_before]}")|$(charges "${P[drop_before]}")" "1|done|2|1" \
	"connection dropped before the charge: Completed, charged once"
is "$(status "${P[drop_after]}")|$(row "${P[drop_after]}")|$(charges "${P[drop_after]}")" "1|done|2|1" \
	"connection dropped after the charge: the retry replays it, charged once"
is "$(status "${P[drop_mid]}")|$(row "${P[drop_mid]}")|$(charges "${P[drop_mid]}")" "1|done|2|1" \
	"connection dropped mid-body: Completed, charged once"
is "$(status "${P[malformed]}")|$(row "${P[malformed]}")|$(charges "${P[malformed]}")" "1|done|2|1" \
	"malformed JSON: retried, the replay completes it, charged once"
is "$(w_wait $C "SELECT state <> 'dead' AND attempts > 8 FROM payment.outbox WHERE payment_id = '${P[forever]}' AND kind = 'payment_intent.create'" t 90)|$(status "${P[forever]}")|$(charges "${P[forever]}")" "t|0|0" \
	"503 for ever: retried past max_attempts (8), not dead, payment left Pending"

is "$(w_sql $C "SELECT \"RefundStatus\", \"EncryptedStripeRefundId\" IS NOT NULL FROM \"PaymentRefunds\" WHERE \"Id\" = '$R_PENDING'")" "0|t" \
	"refund pending at Stripe: stays Processing with its sealed Refund id"
is "$(w_sql $C "SELECT \"RefundStatus\" FROM \"PaymentRefunds\" WHERE \"Id\" = '$R_FAILED'")" 2 "refund failed at Stripe: Failed"
is "$(w_sql $C "SELECT \"Status\", \"RefundAmountValue\" IS NULL FROM \"Payments\" WHERE \"Id\" = '${DONE[1]}'")" "1|t" \
	"  its payment is Completed again with nothing refunded"
is "$(w_sql $C "SELECT r.\"RefundStatus\", p.\"Status\" FROM \"PaymentRefunds\" r JOIN \"Payments\" p ON p.\"Id\" = r.\"OriginalPaymentId\" WHERE r.\"Id\" = '$R_503'")" "1|3" \
	"refund after a 503: Completed, payment Refunded"

# --- idempotency_error: the same key with other parameters ---------------------------------
# a create of a new Pending payment (only such a create is still sent: issue
# 17) under the key that Stripe already executed for payment 503's create
# (its sealed request fields sealed again for that key: their context)
KEY=$(w_sql $C "SELECT idempotency_key FROM payment.outbox WHERE payment_id = '${P[503]}' AND kind = 'payment_intent.create'")
P[idem]=$(defer_pay 19)
w_sql $C "UPDATE payment.outbox SET idempotency_key = idempotency_key || '-renamed' WHERE idempotency_key = '$KEY';
UPDATE payment.outbox o SET idempotency_key = '$KEY', next_attempt_at = now(),
       request = (SELECT jsonb_object_agg(e.key, CASE WHEN e.value LIKE 'pe1:%'
                    THEN payment.encrypt(payment.decrypt(e.value, 'outbox.request.' || e.key || ':' || o.idempotency_key),
                                         'outbox.request.' || e.key || ':$KEY')
                    ELSE e.value END)
                    FROM jsonb_each_text(o.request) e)
 WHERE payment_id = '${P[idem]}'" >/dev/null
w_sql $C "SELECT pg_reload_conf()" >/dev/null
is "$(w_wait $C "SELECT state, attempts, last_http_status FROM payment.outbox WHERE idempotency_key = '$KEY'" "dead|1|400" 60)" "dead|1|400" \
	"400 idempotency_error: dead at once"
ok $(w_wait_log "$PE_WORK/$C.log" "outbox row .* is dead: HTTP 400 idempotency_error" 60; echo $?) "  with a LOG line"
is "$(status "${P[503]}")|$(charges "${P[idem]}")" "1|0" "  payment 503 is untouched, and nothing is charged for the new one"

# --- the ledger ---------------------------------------------------------------------------------
LEDGER=$(w_http GET /_test/ledger)
is "$(echo "$LEDGER" | w_json "max(v['charges'] for v in j['by_idempotency_key'].values())")" 1 "no key charged twice"
is "$(echo "$LEDGER" | w_json "max(v['refunds'] for v in j['by_idempotency_key'].values())")" 1 "no key refunded twice"
is "$(echo "$LEDGER" | w_json "max(v['charges'] for v in j['by_payment_id'].values())")" 1 "no payment charged twice"
is "$(w_sql $C "SELECT count(*) FROM \"Payments\" WHERE \"Status\" IN (1, 3, 4)")" \
	"$(echo "$LEDGER" | w_json "sum(1 for v in j['by_payment_id'].values() if v['charges'] == 1)")" \
	"every payment the ledger charged is Completed (or refunded) in the database, and only those"
# the counters are bumped just after the outcomes commit: poll them too
is "$(w_wait $C "SELECT payment_ext_dead FROM (SELECT dead AS payment_ext_dead FROM payment.worker_status) s" 2 60)" 2 \
	"worker_status counts the 2 rows the worker gave up on (Should-Retry false, idempotency_error)"

is "$(w_sql $C "SELECT last_error IS NOT NULL AND last_error !~ '\\m(sk|pm|pi)_' FROM payment.worker_status")" t \
	"worker_status shows the last error, without secrets"
KEYTEXT=$(cat "$PE_WORK/$C.stripe_key")
ok $(grep -qF -e "$KEYTEXT" -e "Bearer" -e "_secret_" "$PE_WORK/$C.log"; [ $? -ne 0 ]; echo $?) \
	"no API key, Authorization header or client secret in the server log"

# --- the idempotency window closes: the settler takes the two 5xx rows over --------------
w_sql $C "ALTER SYSTEM SET payment_ext.idempotency_window = '1s'" >/dev/null
w_sql $C "ALTER SYSTEM SET payment_ext.pending_ttl = '4s'" >/dev/null
w_sql $C "SELECT pg_reload_conf()" >/dev/null
is "$(w_wait $C "SELECT count(*) FROM payment.dead_letters WHERE payment_id IN ('${P[500s]}', '${P[forever]}')
                   AND last_error LIKE 'not resent: it may first have reached Stripe longer ago than payment_ext.idempotency_window%'" 2 40)" 2 \
	"once payment_ext.idempotency_window closes, both are dead with the reason, for the settler"
is "$(status "${P[500s]}")|$(status "${P[forever]}")|$(charges "${P[500s]}")|$(charges "${P[forever]}")" "0|0|0|0" \
	"  their payments stay Pending (searched only after payment_ext.search_lag), nothing charged"

w_done
