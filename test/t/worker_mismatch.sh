#!/usr/bin/env bash
#
# test/t/worker_mismatch.sh — issue 17, item 6: a PaymentIntent that does not
# match its payment never completes it.  The Stripe stand-in's "tamper"
# fault makes Stripe create (and charge) a PaymentIntent with another amount,
# currency or metadata[payment_id] than the request asked for.  The worker
# checks every answer with the webhook's check (pe_pi_mismatch): the payment
# stays Pending with nothing of the PaymentIntent stored for it (no id, no
# client secret), a "PaymentFailures" row names the difference, and
# payment.reconcile lists it until an administrator resolves the payment.
# The same PaymentIntent's signed payment_intent.succeeded webhook is a
# conflict too; the settler's repeated lookups record it once.  Prints TAP.
#
set -uo pipefail
source "$PE_WORK/repo/test/worker_lib.sh"
trap w_cleanup EXIT

echo "1..15"

C=w_mismatch
D="$PE_WORK/$C.files"
mkdir -p "$D"
S1=whsec_$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
SECRETS="$PE_WORK/$C.whsec"
(umask 077; printf '%s\n' "$S1" >"$SECRETS")
w_standin_start $C --webhook-secret "$S1"
# search_lag 0: the settler may search right after the create was answered
w_cluster $C "payment_ext.webhook_secret_file = '$SECRETS'" "payment_ext.pending_ttl = '3s'" "payment_ext.search_lag = 0"
w_seed $C 10

# tamper N FIELDS-JSON: a payment of 12.34 USD for registration N, confirmed
# on the server, whose PaymentIntent Stripe makes with FIELDS instead; prints
# the payment id once its request is done
tamper() {
	local p
	p=$(w_sql $C "SELECT gen_random_uuid()")
	w_http POST /_test/faults "{\"kind\": \"tamper\", \"payment_id\": \"$p\", $2}" >/dev/null
	w_sql $C "INSERT INTO \"Payments\" (\"Id\", \"EventRegistrationId\", \"UserId\", \"AmountValue\", \"PaymentMethodType\")
	          VALUES ('$p', '$(w_reg "$1")', '$(w_user "$1")', 12.34, 1);
	          INSERT INTO payment.outbox (kind, payment_id, request, idempotency_key)
	          VALUES ('payment_intent.create', '$p',
	                  jsonb_build_object('amount', '1234', 'currency', 'usd', 'metadata[payment_id]', '$p',
	                                     'automatic_payment_methods[enabled]', 'true'
	                                     $3),
	                  'pe-$p-pi-1')" >/dev/null
	w_wait $C "SELECT state FROM payment.outbox WHERE idempotency_key = 'pe-$p-pi-1'" done 60 >/dev/null
	echo "$p"
}
CONFIRM=", 'confirm', 'true', 'payment_method', 'pm_card_visa', 'automatic_payment_methods[allow_redirects]', 'never'"
# state P: status, PaymentIntent id stored?, intents row?, failure codes
state() {
	w_sql $C "SELECT p.\"Status\", p.\"EncryptedStripePaymentIntentId\" IS NOT NULL,
	                 (SELECT count(*) FROM payment.intents i WHERE i.payment_id = p.\"Id\"),
	                 (SELECT string_agg(\"FailureCode\", ',' ORDER BY \"CreatedAt\") FROM \"PaymentFailures\" f WHERE f.\"PaymentId\" = p.\"Id\")
	            FROM \"Payments\" p WHERE p.\"Id\" = '$1'"
}

# --- the worker ----------------------------------------------------------------------
PA=$(tamper 1 '"amount": 50' "$CONFIRM")
is "$(w_http GET /_test/ledger | w_json "(j['by_payment_id']['$PA']['charges'], j['by_payment_id']['$PA']['charged_amount'])")" "(1, 50)" \
	"the stand-in charged 0.50 for the 12.34 payment (tamper fault)"
is "$(state "$PA")" "0|f|0|amount_mismatch" \
	"a 0.50 charge for 12.34: the payment stays Pending, nothing of the PaymentIntent stored, amount_mismatch recorded"
is "$(w_sql $C "SELECT \"FailureMessage\" FROM \"PaymentFailures\" WHERE \"PaymentId\" = '$PA'")" \
	"Stripe's PaymentIntent does not match the payment (response): the PaymentIntent is for 0.50, the payment for 12.34 USD; the payment was not completed from it" \
	"the failure row says what differs, and no Stripe id"
is "$(w_sql $C "SELECT database_state, stripe_state, source FROM payment.reconcile WHERE payment_id = '$PA'")" "Pending|amount_mismatch|check" \
	"payment.reconcile lists it"
is "$(w_sql $C "SELECT last_error LIKE 'PaymentIntent succeeded does not match the payment: the PaymentIntent is for 0.50, %' FROM payment.outbox WHERE payment_id = '$PA' AND kind = 'payment_intent.create'")" t \
	"the outbox row is done, its last_error says why nothing was recorded"

PC=$(tamper 2 '"currency": "eur"' "$CONFIRM")
is "$(state "$PC")|$(w_sql $C "SELECT stripe_state FROM payment.reconcile WHERE payment_id = '$PC'")" "0|f|0|currency_mismatch|currency_mismatch" \
	"a charge in EUR for a USD payment: Pending, currency_mismatch, in payment.reconcile"

OTHER=$(w_sql $C "SELECT gen_random_uuid()")
PM=$(tamper 3 "\"metadata_payment_id\": \"$OTHER\"" "$CONFIRM")
is "$(state "$PM")|$(w_sql $C "SELECT stripe_state FROM payment.reconcile WHERE payment_id = '$PM'")" "0|f|0|metadata_mismatch|metadata_mismatch" \
	"a PaymentIntent whose metadata[payment_id] names another payment: Pending, metadata_mismatch"

# the unconfirmed flow: its client secret would let the customer pay the wrong amount
PU=$(tamper 4 '"amount": 50' "")
is "$(state "$PU")|$(w_sql $C "SET app.user_role = 'Admin'; SELECT payment.client_secret('$PU') IS NULL")" "0|f|0|amount_mismatch|t" \
	"an unconfirmed PaymentIntent for 0.50: its client secret is never handed out (payment.client_secret is NULL)"

# a payment that matches completes as before
PO=$(w_sql $C "SELECT payment.create('$(w_reg 5)', '$(w_user 5)', 12.34, stripe_payment_method => 'pm_card_visa')")
is "$(w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$PO'" 1 30)|$(w_sql $C "SELECT count(*) FROM \"PaymentFailures\" WHERE \"PaymentId\" = '$PO'")|$(w_sql $C "SELECT count(*) FROM payment.reconcile WHERE payment_id = '$PO'")" \
	"1|0|0" "a PaymentIntent that matches still completes its payment, with no failure row"

# --- the webhook: the same check ------------------------------------------------------
PI=$(w_http GET /_test/ledger | w_json "j['by_payment_id']['$PA']['payment_intents'][0]")
w_http GET "/_test/events?type=payment_intent.succeeded" | python3 -c "
import json, sys
for e in json.load(sys.stdin)['events']:
    if json.loads(e['payload'])['data']['object']['id'] == '$PI':
        open('$D/ev', 'w').write(e['payload'])
        open('$D/sig', 'w').write(e['signature'])"
EV=$(echo "SELECT payment.handle_webhook(pg_read_file('$D/ev'), :'sig')" | \
	"$PE_BIN/psql" -h "$PE_WORK/$C.sock" -p 5432 -U postgres -d postgres -X -qAt -v sig="$(cat "$D/sig")")
is "$(w_sql $C "SELECT outcome FROM payment.webhook_events WHERE event_id = '$EV'")" \
	"conflict: the PaymentIntent is for 0.50, the payment for 12.34 USD; the payment stays Pending (see payment.reconcile)" \
	"its signed payment_intent.succeeded webhook: a conflict by the same check"
is "$(state "$PA" | cut -d'|' -f1,2,4)" "0|f|amount_mismatch" \
	"the payment stays Pending, and the mismatch already recorded is not recorded again"

# a webhook whose PaymentIntent names another payment in its metadata, found by its id
P6=$(w_sql $C "SELECT payment.create('$(w_reg 6)', '$(w_user 6)', 20.00)")
w_wait $C "SELECT state FROM payment.outbox WHERE payment_id = '$P6' AND kind = 'payment_intent.create'" done 60 >/dev/null
PI6=$(w_sql $C "SELECT payment.decrypt(\"EncryptedStripePaymentIntentId\", 'Payments.EncryptedStripePaymentIntentId:' || \"Id\") FROM \"Payments\" WHERE \"Id\" = '$P6'")
python3 "$PE_WORK/repo/test/webhook_tool.py" event evt_mm_6 payment_intent.succeeded \
	"{\"id\": \"$PI6\", \"object\": \"payment_intent\", \"status\": \"succeeded\", \"amount\": 2000, \"amount_received\": 2000, \"currency\": \"usd\", \"metadata\": {}}" >"$D/e6"
echo "SELECT payment.handle_webhook(pg_read_file('$D/e6'), :'sig')" | \
	"$PE_BIN/psql" -h "$PE_WORK/$C.sock" -p 5432 -U postgres -d postgres -X -qAt \
	-v sig="$(python3 "$PE_WORK/repo/test/webhook_tool.py" sign "$D/e6" now "$S1")" >/dev/null
is "$(w_sql $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P6'")|$(w_sql $C "SELECT stripe_state FROM payment.reconcile WHERE payment_id = '$P6' AND source = 'check'")" \
	"0|metadata_mismatch" "a succeeded webhook without metadata[payment_id] (found by its PaymentIntent id) completes nothing: metadata_mismatch"

# --- the settler's lookups find the same PaymentIntent: recorded once ------------------
is "$(w_wait $C "SELECT count(*) > 0 FROM payment.outbox WHERE payment_id = '$PA' AND kind = 'payment_intent.search' AND state = 'done'" t 60)" t \
	"the settler looks the Pending payment up at Stripe (pending_ttl 3 s)"
is "$(state "$PA" | cut -d'|' -f1,4)" "0|amount_mismatch" \
	"the lookup finds the 0.50 PaymentIntent: still Pending, still one amount_mismatch row"

# --- an administrator settles it -------------------------------------------------------
w_sql $C "SET app.current_user_id = '$(w_user 10)'; SELECT payment.resolve('$PA', 2, 'Stripe charged 0.50 instead of 12.34; refunded in the Dashboard')" >/dev/null
is "$(w_sql $C "SELECT count(*) FROM payment.reconcile WHERE payment_id = '$PA' AND source = 'check'")|$(state "$PA" | cut -d'|' -f1)" "0|2" \
	"after payment.resolve the payment has changed and payment.reconcile no longer lists the mismatch"

w_done
