#!/usr/bin/env bash
#
# test/t/webhook_intents.sh — issue 19: one rule for payment.intents, whoever
# reports (the worker's answers and lookups, webhooks): a PaymentIntent's
# terminal status (succeeded, canceled) is final, and so is where it came
# from (source) and when (reported_at); a later report only fills in a
# client secret still missing.  A webhook that reports the charge while the
# answers to the create request are lost on the way keeps source 'webhook'
# when the worker later learns the PaymentIntent's state; the other way
# round, a late webhook leaves the worker's report alone.  Prints TAP.
#
set -uo pipefail
source "$PE_WORK/repo/test/worker_lib.sh"
trap w_cleanup EXIT

echo "1..8"

C=w_intents
D="$PE_WORK/$C.files"
mkdir -p "$D"
S1=whsec_$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
SECRETS="$PE_WORK/$C.whsec"
(umask 077; printf '%s\n' "$S1" >"$SECRETS")
w_standin_start $C --webhook-secret "$S1"
w_cluster $C "payment_ext.webhook_secret_file = '$SECRETS'"
w_seed $C 4

# deliver PI: the stand-in's signed payment_intent.succeeded event of
# PaymentIntent PI to payment.handle_webhook; prints the event id
deliver() {
	w_http GET "/_test/events?type=payment_intent.succeeded" | python3 -c "
import json, sys
for e in json.load(sys.stdin)['events']:
    if json.loads(e['payload'])['data']['object']['id'] == '$1':
        open('$D/ev', 'w').write(e['payload'])
        open('$D/sig', 'w').write(e['signature'])"
	echo "SELECT payment.handle_webhook(pg_read_file('$D/ev'), :'sig')" |
		"$PE_BIN/psql" -h "$PE_WORK/$C.sock" -p 5432 -U postgres -d postgres -X -qAt \
			-v sig="$(cat "$D/sig")"
}
# intent P: stripe_status|source|reported_at|client secret stored?
intent() {
	w_sql $C "SELECT stripe_status || '|' || source || '|' || reported_at || '|' || (client_secret IS NOT NULL)
	            FROM payment.intents WHERE payment_id = '$1'"
}
# the PaymentIntent the stand-in made for payment P (waits for it)
pi_of() {
	local i
	for i in $(seq 1 300); do
		w_http GET /_test/ledger | w_json "(j['by_payment_id'].get('$1', {}).get('payment_intents') or [''])[0]" |
			grep -E '^pi_' && return 0
		sleep 0.1
	done
	return 1
}

# --- the webhook first, the worker's answer after it ---------------------------------
# Stripe charges, but every answer to the create request is lost on the way
w_http POST /_test/faults '{"kind": "drop_after", "method": "POST", "path": "/v1/payment_intents", "count": 100000}' >/dev/null
P1=$(w_sql $C "SELECT payment.create('$(w_reg 1)', '$(w_user 1)', 20.00, stripe_payment_method => 'pm_card_visa')")
PI1=$(pi_of "$P1")
EV1=$(deliver "$PI1")
is "$(w_sql $C "SELECT outcome FROM payment.webhook_events WHERE event_id = '$EV1'")|$(intent "$P1" | cut -d'|' -f1,2,4)" \
	"applied: Pending -> Completed|succeeded|webhook|false" \
	"the webhook completes the payment while its create request still waits for an answer"
BEFORE=$(intent "$P1")
w_http POST /_test/faults/clear '{}' >/dev/null
# the create, no longer wanted, goes out again as a probe under its key:
# Stripe refuses it (executed before with other parameters), and the
# worker looks the PaymentIntent up and records what Stripe says of it
is "$(w_wait $C "SELECT count(*) FILTER (WHERE state NOT IN ('done', 'dead')) || '|' ||
                        (SELECT client_secret IS NOT NULL FROM payment.intents WHERE payment_id = '$P1')
                   FROM payment.outbox WHERE payment_id = '$P1'" "0|true" 60)" "0|true" \
	"the worker settles the request and records the PaymentIntent again, with its client secret"
is "$(intent "$P1" | cut -d'|' -f1,2,3)" "$(echo "$BEFORE" | cut -d'|' -f1,2,3)" \
	"that later report changes neither the final status, nor where it came from (webhook), nor when"
is "$(w_sql $C "SELECT count(*) FROM payment.outbox WHERE payment_id = '$P1' AND state = 'dead'")|$(intent "$P1" | cut -d'|' -f4)" \
	"0|true" "the client secret it reported, still missing, is stored"
is "$(w_sql $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P1'")|$(w_http GET /_test/ledger | w_json "j['by_payment_id']['$P1']['charges']")" \
	"1|1" "the payment is Completed, and Stripe charged once"

# --- the worker's answer first, the webhook after it -----------------------------------
P2=$(w_sql $C "SELECT payment.create('$(w_reg 2)', '$(w_user 2)', 30.00, stripe_payment_method => 'pm_card_visa')")
is "$(w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P2'" 1 60)|$(intent "$P2" | cut -d'|' -f1,2,4)" \
	"1|succeeded|response|true" "the worker's answer completes a payment and reports its PaymentIntent"
BEFORE=$(intent "$P2")
EV2=$(deliver "$(pi_of "$P2")")
is "$(w_sql $C "SELECT outcome FROM payment.webhook_events WHERE event_id = '$EV2'")" \
	"no change: the payment is already Completed" "its webhook, arriving after, changes nothing of the payment"
is "$(intent "$P2")" "$BEFORE" "nor of its PaymentIntent's report (status, source, time, client secret)"

w_done
