#!/usr/bin/env bash
#
# test/t/money_flow.sh — issue 17, items 1, 2, 8 and 9, judged by the Stripe
# stand-in's ledger (charges and refunds per payment and per key):
#  - a payment that is no longer Pending is never charged: payment.resolve
#    withdraws its create (never sent, or sent again as an unconfirmed probe
#    when it may have reached Stripe), the claim skips it, and a charge that
#    Stripe made anyway is refunded (refund.unwanted, "PaymentFailures" row);
#    the same for payment.retry (an earlier attempt's create) and for refunds
#    that are no longer Processing;
#  - payment.retry starts a new attempt with no PaymentIntent: a late event of
#    the earlier PaymentIntent changes nothing, the webhook completes with the
#    PaymentIntent that charged, payment.intents follows the current one, and
#    a refund reaches the charge;
#  - payment.create refuses another user's registration and amounts below
#    Stripe's minimum; a PartiallyRefunded registration takes no second
#    payment.
# Prints TAP.
#
set -uo pipefail
source "$PE_WORK/repo/test/worker_lib.sh"
trap w_cleanup EXIT

echo "1..46"

C=w_money
S=whsec_$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
SECRETS="$PE_WORK/$C.whsec"
(umask 077; printf '%s\n' "$S" >"$SECRETS")
w_standin_start $C --webhook-secret "$S"
w_cluster $C "payment_ext.webhook_secret_file = '$SECRETS'" "payment_ext.max_attempts = 100" \
	"payment_ext.retry_base_ms = 100" "payment_ext.retry_max_ms = 1000" "payment_ext.pending_ttl = '1h'"
w_seed $C 20
ADMIN=$(w_user 20)

# psql as the superuser, errors as their SQLSTATE only
q() {
	"$PE_BIN/psql" -h "$PE_WORK/$C.sock" -p 5432 -U postgres -d postgres \
		-X -qAt -v ON_ERROR_STOP=1 -v VERBOSITY=sqlstate "$@" 2>&1 | sed -E 's/^(psql:[^E]*)?ERROR:  /ERROR: /'
}
ledger() { w_http GET /_test/ledger | w_json "$1"; }
# charges PID / refunded PID: from the ledger (0 when Stripe never saw it)
charges() { ledger "j['by_payment_id'].get('$1', {}).get('charges', 0)"; }
charged() { ledger "j['by_payment_id'].get('$1', {}).get('charged_amount', 0)"; }
refunded() { ledger "j['by_payment_id'].get('$1', {}).get('refunded_amount', 0)"; }
intents_of() { ledger "' '.join(j['by_payment_id'].get('$1', {}).get('payment_intents', []))"; }
status() { w_sql $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$1'"; }
stored_pi() {
	w_sql $C "SELECT coalesce(payment.decrypt(\"EncryptedStripePaymentIntentId\", 'Payments.EncryptedStripePaymentIntentId:' || \"Id\"), 'none') FROM \"Payments\" WHERE \"Id\" = '$1'"
}
# settled PID: wait until nothing of the payment is pending or sending
settled() {
	w_wait $C "SELECT count(*) FROM payment.outbox WHERE payment_id = '$1' AND state IN ('pending', 'sending')" 0 60 >/dev/null
}
fault() { w_http POST /_test/faults "$1" >/dev/null; }
clear_faults() { w_http POST /_test/faults/clear '{}' >/dev/null; }
# deliver TYPE PI [N]: deliver the stand-in's newest (or N-th newest) event
# of TYPE about PaymentIntent PI; prints the stored outcome
deliver() {
	local ev payload sig id
	ev=$(w_http GET "/_test/events?type=$1" | python3 -c "
import json, sys
j = json.load(sys.stdin)
evs = [e for e in j['events'] if json.loads(e['payload'])['data']['object']['id'] == '$2']
e = evs[-${3:-1}]
print(json.dumps([e['id'], e['payload'], e['signature']]))")
	id=$(echo "$ev" | w_json "j[0]")
	payload=$(echo "$ev" | w_json "j[1]")
	sig=$(echo "$ev" | w_json "j[2]")
	echo "SELECT payment.handle_webhook(:'p', :'h')" | q -v p="$payload" -v h="$sig" >/dev/null
	w_sql $C "SELECT outcome FROM payment.webhook_events WHERE event_id = '$id'"
}
# API METHOD PATH [FORM]: a Stripe call with the worker's key (never printed)
api() {
	curl -s -X "$1" -H "Authorization: Bearer $(cat "$PE_WORK/$C.stripe_key")" "$W_URL$2" ${3:+-d "$3"}
}

# ---------------------------------------------------------------------------
# item 8: payment.create checks the registration's user and Stripe's minimum
# ---------------------------------------------------------------------------
is "$(q -c "SELECT payment.create('$(w_reg 1)', '$(w_user 2)', 30.00)")" "ERROR: 22023" \
	"item 8: a registration of another user is refused (22023)"
is "$(q -c "SELECT payment.create('$(w_reg 1)', '$(w_user 1)', 0.49)")|$(q -c "SELECT payment.create('$(w_reg 1)', '$(w_user 1)', 0.29, currency => 'GBP')")|$(q -c "SELECT payment.create('$(w_reg 1)', '$(w_user 1)', 0.60, 25)")" \
	"ERROR: 22023|ERROR: 22023|ERROR: 22023" \
	"item 8: amounts below Stripe's minimum (0.49 USD, 0.29 GBP, 0.60 less 25%) are refused (22023)"
is "$(w_sql $C "SELECT count(*) FROM \"Payments\"")|$(w_sql $C "SELECT count(*) FROM payment.outbox")" "0|0" \
	"item 8: the refused calls wrote nothing"
MIN_GBP=$(w_sql $C "SELECT payment.create('$(w_reg 1)', '$(w_user 1)', 0.30, currency => 'GBP', stripe_payment_method => 'pm_card_visa')")
MIN_ZERO=$(w_sql $C "SELECT payment.create('$(w_reg 2)', '$(w_user 2)', 0)")
is "$(w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$MIN_GBP'" 1 30)|$(status "$MIN_ZERO")" "1|5" \
	"item 8: 0.30 GBP, the minimum, is charged; zero stays NotRequired"
is "$(charged "$MIN_GBP")" 30 "item 8: the ledger has the 30-pence charge"

# ---------------------------------------------------------------------------
# item 9: one paid payment per registration until it is fully refunded
# ---------------------------------------------------------------------------
P9=$(w_sql $C "SELECT payment.create('$(w_reg 3)', '$(w_user 3)', 40.00, stripe_payment_method => 'pm_card_visa')")
w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P9'" 1 30 >/dev/null
R9=$(w_sql $C "SELECT payment.refund('$P9', 10.00, 'partial refund for item 9', '$ADMIN')")
is "$(w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P9'" 4 30)" 4 \
	"item 9: a partial refund makes the payment PartiallyRefunded"
is "$(q -c "SELECT payment.create('$(w_reg 3)', '$(w_user 3)', 40.00, stripe_payment_method => 'pm_card_visa')")" "ERROR: 23505" \
	"item 9: payment.create refuses a second payment for a PartiallyRefunded registration (23505)"
is "$(q -c "INSERT INTO \"Payments\" (\"EventRegistrationId\", \"UserId\", \"AmountValue\", \"Status\", \"PaymentMethodType\") VALUES ('$(w_reg 3)', '$(w_user 3)', 40.00, 1, 1)")" "ERROR: 23505" \
	"item 9: the unique index refuses a second Completed payment beside a PartiallyRefunded one (23505)"
w_sql $C "SELECT payment.refund('$P9', 30.00, 'the rest, for item 9', '$ADMIN')" >/dev/null
w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P9'" 3 30 >/dev/null
P9B=$(w_sql $C "SELECT payment.create('$(w_reg 3)', '$(w_user 3)', 40.00, stripe_payment_method => 'pm_card_visa')")
is "$(w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P9B'" 1 30)|$(charges "$P9")|$(refunded "$P9")" "1|1|4000" \
	"item 9: once fully refunded, the registration takes a new payment"

# the upgrade of a 1.1 database holding two live payments for one registration
qu() {
	"$PE_BIN/psql" -h "$PE_WORK/$C.sock" -p 5432 -U postgres -d upg \
		-X -qAt -v ON_ERROR_STOP=1 "$@" 2>&1 | sed -E 's/^(psql:[^E]*)?ERROR:  /ERROR: /'
}
w_sql $C "CREATE DATABASE upg" >/dev/null
qu -c "CREATE EXTENSION payment_ext VERSION '1.1'" >/dev/null
qu -c "INSERT INTO \"Users\" (\"Id\", \"SceneName\", \"Email\") VALUES ('$(w_user 1)', 'u1', 'u1@example.org');
       INSERT INTO \"Events\" (\"Id\", \"Title\", \"StartDate\", \"EndDate\") VALUES ('20000000-0000-0000-0000-000000000001', 'Upgrade', now(), now());
       INSERT INTO \"EventRegistrations\" (\"Id\", \"EventId\", \"UserId\") VALUES ('$(w_reg 1)', '20000000-0000-0000-0000-000000000001', '$(w_user 1)');
       INSERT INTO \"Payments\" (\"Id\", \"EventRegistrationId\", \"UserId\", \"AmountValue\", \"Status\", \"PaymentMethodType\")
       VALUES ('40000000-0000-0000-0000-000000000001', '$(w_reg 1)', '$(w_user 1)', 40.00, 1, 1);
       INSERT INTO \"PaymentRefunds\" (\"OriginalPaymentId\", \"RefundAmountValue\", \"RefundCurrency\", \"RefundReason\", \"RefundStatus\", \"ProcessedByUserId\")
       VALUES ('40000000-0000-0000-0000-000000000001', 10.00, 'USD', 'partial refund before the upgrade', 1, '$(w_user 1)');
       INSERT INTO \"Payments\" (\"EventRegistrationId\", \"UserId\", \"AmountValue\", \"Status\", \"PaymentMethodType\")
       VALUES ('$(w_reg 1)', '$(w_user 1)', 40.00, 1, 1)" >/dev/null
is "$(qu -v VERBOSITY=sqlstate -c "ALTER EXTENSION payment_ext UPDATE TO '1.2'")|$(qu -c "ALTER EXTENSION payment_ext UPDATE TO '1.2'" | head -1)|$(qu -c "SELECT extversion FROM pg_extension WHERE extname = 'payment_ext'")" \
	"ERROR: 23505|ERROR: registration $(w_reg 1) has 2 live payments (Completed, PartiallyRefunded)|1.1" \
	"item 9: the upgrade of a database with a PartiallyRefunded and a Completed payment for one registration stops, naming it, and changes nothing"

# ---------------------------------------------------------------------------
# item 1: resolve to Failed while Stripe is unreachable, then a new payment
# ---------------------------------------------------------------------------
# (a) the issue's scenario: the create was attempted (Stripe answered 503)
fault '{"kind": "503", "method": "POST", "path": "/v1/payment_intents", "count": 100000}'
A=$(w_sql $C "SELECT payment.create('$(w_reg 4)', '$(w_user 4)', 28.00, stripe_payment_method => 'pm_card_visa')")
w_wait $C "SELECT attempts > 0 FROM payment.outbox WHERE payment_id = '$A'" t 30 >/dev/null
w_sql $C "SET app.current_user_id = '$ADMIN'; SELECT payment.resolve('$A', 2, 'customer abandoned checkout')" >/dev/null
B=$(w_sql $C "SELECT payment.create('$(w_reg 4)', '$(w_user 4)', 28.00, stripe_payment_method => 'pm_card_visa')")
sleep 0.5
clear_faults
is "$(w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$B'" 1 30)" 1 \
	"item 1: Stripe is back: the new payment is charged"
settled "$A"
is "$(charges "$A")|$(charges "$B")|$(status "$A")" "0|1|2" \
	"item 1: the ledger has one charge for the registration: the Failed payment was never charged"
PIA=$(intents_of "$A")
is "$(api GET "/v1/payment_intents/$PIA" | w_json "(j['status'], j['metadata'].get('withdrawn'))")" \
	"('canceled', 'true')" \
	"item 1: its create went again only as an unconfirmed probe, whose PaymentIntent is canceled"

# (b) never sent: withdrawn at resolve, and never claimed
A2=$(w_sql $C "BEGIN; SELECT payment.create('$(w_reg 5)', '$(w_user 5)', 28.00, stripe_payment_method => 'pm_card_visa');
               UPDATE payment.outbox SET next_attempt_at = now() + interval '2 seconds' WHERE state = 'pending' AND attempts = 0 AND kind = 'payment_intent.create'; COMMIT;")
w_sql $C "SET app.current_user_id = '$ADMIN'; SELECT payment.resolve('$A2', 2, 'customer abandoned checkout')" >/dev/null
B2=$(w_sql $C "SELECT payment.create('$(w_reg 5)', '$(w_user 5)', 28.00, stripe_payment_method => 'pm_card_visa')")
w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$B2'" 1 30 >/dev/null
w_wait $C "SELECT now() > created_at + interval '3 seconds' FROM payment.outbox WHERE payment_id = '$A2'" t 30 >/dev/null
settled "$A2"
is "$(w_sql $C "SELECT state || ':' || attempts || ':' || last_error FROM payment.outbox WHERE payment_id = '$A2'")" \
	"done:0:withdrawn before it was sent: the payment is no longer Pending" \
	"item 1: a create never sent is withdrawn by payment.resolve"
is "$(w_http GET "/_test/requests?idempotency_key=pe-$A2-pi-1" | w_json "len(j['requests'])")|$(charges "$A2")|$(charges "$B2")" "0|0|1" \
	"item 1: Stripe never saw it; the registration was charged once"

# (c) a charge Stripe made anyway (the create was on its way) is refunded
A3=$(w_sql $C "SELECT gen_random_uuid()")
fault "{\"kind\": \"slow\", \"delay_ms\": 2500, \"method\": \"POST\", \"path\": \"/v1/payment_intents\", \"payment_id\": \"$A3\"}"
w_sql $C "INSERT INTO \"Payments\" (\"Id\", \"EventRegistrationId\", \"UserId\", \"AmountValue\", \"PaymentMethodType\")
          VALUES ('$A3', '$(w_reg 6)', '$(w_user 6)', 28.00, 1);
          INSERT INTO payment.outbox (kind, payment_id, request, idempotency_key)
          VALUES ('payment_intent.create', '$A3',
                  jsonb_build_object('amount', '2800', 'currency', 'usd', 'confirm', 'true',
                                     'payment_method', 'pm_card_visa',
                                     'automatic_payment_methods[enabled]', 'true',
                                     'automatic_payment_methods[allow_redirects]', 'never',
                                     'metadata[payment_id]', '$A3', 'metadata[attempt]', '1'),
                  'pe-$A3-pi-1')" >/dev/null
w_wait $C "SELECT state FROM payment.outbox WHERE payment_id = '$A3'" sending 30 >/dev/null
w_sql $C "SET app.current_user_id = '$ADMIN'; SELECT payment.resolve('$A3', 2, 'customer abandoned checkout')" >/dev/null
B3=$(w_sql $C "SELECT payment.create('$(w_reg 6)', '$(w_user 6)', 28.00, stripe_payment_method => 'pm_card_visa')")
w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$B3'" 1 30 >/dev/null
w_wait $C "SELECT count(*) FROM payment.outbox WHERE payment_id = '$A3' AND kind = 'refund.unwanted' AND state = 'done'" 1 60 >/dev/null
settled "$A3"
is "$(charges "$A3")|$(refunded "$A3")|$(charges "$B3")|$(refunded "$B3")" "1|2800|1|0" \
	"item 1: Stripe charged the Failed payment anyway: that charge is refunded in full, the new payment's is kept"
is "$(w_sql $C "SELECT \"FailureCode\" FROM \"PaymentFailures\" WHERE \"PaymentId\" = '$A3'")|$(status "$A3")" "unwanted_charge|2" \
	"item 1: a \"PaymentFailures\" row says why; the payment stays Failed"
is "$(w_sql $C "SELECT count(*) FROM \"PaymentAuditLog\" WHERE \"PaymentId\" = '$A3' AND \"ActionDescription\" LIKE '%unwanted_charge%'")" 1 \
	"item 1: and the audit trail has it"

# (d) payment.retry: an earlier attempt's create still waiting is withdrawn
fault '{"kind": "503", "method": "POST", "path": "/v1/payment_intents", "count": 100000}'
A4=$(w_sql $C "SELECT payment.create('$(w_reg 7)', '$(w_user 7)', 28.00, stripe_payment_method => 'pm_card_visa')")
w_wait $C "SELECT attempts > 0 FROM payment.outbox WHERE payment_id = '$A4'" t 30 >/dev/null
w_sql $C "SET app.current_user_id = '$ADMIN'; SELECT payment.resolve('$A4', 2, 'card reported lost by the customer')" >/dev/null
w_sql $C "SELECT payment.retry('$A4')" >/dev/null
sleep 0.5
clear_faults
is "$(w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$A4'" 1 30)" 1 \
	"item 1: the retried payment is charged (its confirm restored from the probe)"
settled "$A4"
is "$(charges "$A4")|$(refunded "$A4")" "1|0" \
	"item 1: once: the earlier attempt's create went only as a probe"
PI4=$(stored_pi "$A4")
is "$(api GET "/v1/payment_intents/$PI4" | w_json "(j['status'], j['metadata'].get('attempt'))")" "('succeeded', '2')" \
	"item 2: the payment keeps the second attempt's PaymentIntent (metadata attempt 2)"

# (e) refunds: a refund.create whose refund is no longer Processing is not sent
P5=$(w_sql $C "SELECT payment.create('$(w_reg 8)', '$(w_user 8)', 50.00, stripe_payment_method => 'pm_card_visa')")
w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P5'" 1 30 >/dev/null
fault "{\"kind\": \"503\", \"method\": \"POST\", \"path\": \"/v1/refunds\", \"count\": 100000}"
R5=$(w_sql $C "SELECT payment.refund('$P5', 20.00, 'refund for the money test', '$ADMIN')")
w_wait $C "SELECT attempts > 0 FROM payment.outbox WHERE refund_id = '$R5'" t 30 >/dev/null
w_sql $C "SET app.current_user_id = '$ADMIN'; UPDATE \"PaymentRefunds\" SET \"RefundStatus\" = 2 WHERE \"Id\" = '$R5'" >/dev/null
sleep 0.5
clear_faults
settled "$P5"
sleep 1
is "$(refunded "$P5")|$(w_sql $C "SELECT state || ':' || last_error FROM payment.outbox WHERE refund_id = '$R5'")" \
	"0|done:withdrawn: the refund is no longer Processing" \
	"item 1: a refund set Failed meanwhile is never sent to Stripe"

# ---------------------------------------------------------------------------
# item 2: payment.retry and the earlier attempt's PaymentIntent
# ---------------------------------------------------------------------------
P=$(w_sql $C "SELECT payment.create('$(w_reg 9)', '$(w_user 9)', 30.00)")
w_wait $C "SELECT stripe_status FROM payment.intents WHERE payment_id = '$P'" requires_payment_method 30 >/dev/null
PI1=$(stored_pi "$P")
w_http POST "/_test/payment_intents/$PI1/fail" '{}' >/dev/null
is "$(deliver payment_intent.payment_failed "$PI1")|$(status "$P")" "applied: Pending -> Failed (generic_decline)|2" \
	"item 2: the first attempt fails (webhook)"
DROP_P="{\"kind\": \"drop_after\", \"method\": \"POST\", \"path\": \"/v1/payment_intents\", \"payment_id\": \"$P\", \"count\": 100000}"
fault "$DROP_P"
fault "{\"kind\": \"503\", \"method\": \"POST\", \"path\": \"/v1/payment_intents/*/cancel\", \"payment_id\": \"$P\", \"count\": 100000}"
w_sql $C "SELECT payment.retry('$P')" >/dev/null
is "$(stored_pi "$P")|$(w_sql $C "SELECT count(*) FROM payment.intents WHERE payment_id = '$P'")" "none|0" \
	"item 2: payment.retry leaves the new attempt without a PaymentIntent (none stored, no intents row)"
w_wait $C "SELECT count(*) FROM payment.outbox WHERE payment_id = '$P' AND kind = 'payment_intent.create' AND attempts > 0" 1 30 >/dev/null
PI2=$(ledger "[p for p in j['by_payment_id']['$P']['payment_intents'] if p != '$PI1'][0]")
is "$(api GET "/v1/payment_intents/$PI2" | w_json "j['metadata'].get('attempt')")" 2 \
	"item 2: the new PaymentIntent carries metadata[attempt] 2"
# a late failure, and the cancellation, of the earlier PaymentIntent
w_http POST "/_test/payment_intents/$PI1/fail" '{"decline_code": "insufficient_funds"}' >/dev/null
OUT=$(deliver payment_intent.payment_failed "$PI1")
is "$(status "$P")|${OUT%%;*}" "0|ignored: a PaymentIntent of an earlier attempt of the payment (requires_payment_method)" \
	"item 2: a late payment_failed of the earlier PaymentIntent does not fail the retried payment"
# the cancellation payment.retry queued goes through now (cancel it by hand if none)
w_http POST /_test/faults "{\"faults\": [$DROP_P], \"replace\": true}" >/dev/null
for _ in $(seq 1 100); do
	[ "$(api GET "/v1/payment_intents/$PI1" | w_json "j['status']")" = canceled ] && break
	sleep 0.1
done
api POST "/v1/payment_intents/$PI1/cancel" >/dev/null
OUT=$(deliver payment_intent.canceled "$PI1")
is "$(status "$P")|${OUT%%;*}" "0|ignored: a PaymentIntent of an earlier attempt of the payment (canceled)" \
	"item 2: nor does its cancellation"
# the new PaymentIntent is paid; the worker's answers are still lost
w_http POST "/_test/payment_intents/$PI2/succeed" '{}' >/dev/null
is "$(deliver payment_intent.succeeded "$PI2")|$(status "$P")" "applied: Pending -> Completed|1" \
	"item 2: the webhook completes the payment"
is "$(stored_pi "$P")" "$PI2" "item 2: with the PaymentIntent that charged (no COALESCE keeping the old one)"
is "$(w_sql $C "SELECT stripe_status FROM payment.intents WHERE payment_id = '$P'")|$(w_sql $C "SELECT count(*) FROM payment.reconcile WHERE payment_id = '$P'")" "succeeded|0" \
	"item 2: payment.intents follows the current PaymentIntent; payment.reconcile sees no conflict"
clear_faults
settled "$P"
R=$(w_sql $C "SELECT payment.refund('$P', 30.00, 'full refund after the retry', '$ADMIN')")
is "$(w_wait $C "SELECT \"RefundStatus\" FROM \"PaymentRefunds\" WHERE \"Id\" = '$R'" 1 30)|$(charges "$P")|$(refunded "$P")|$(status "$P")" "1|1|3000|3" \
	"item 2: the refund reaches the charge: charged once, refunded in full"

# a late succeeded of an earlier attempt's PaymentIntent is refunded, not kept
PX=$(w_sql $C "SELECT payment.create('$(w_reg 10)', '$(w_user 10)', 30.00)")
w_wait $C "SELECT stripe_status FROM payment.intents WHERE payment_id = '$PX'" requires_payment_method 30 >/dev/null
PX1=$(stored_pi "$PX")
w_http POST "/_test/payment_intents/$PX1/fail" '{}' >/dev/null
deliver payment_intent.payment_failed "$PX1" >/dev/null
fault "{\"kind\": \"503\", \"method\": \"POST\", \"path\": \"/v1/payment_intents/*/cancel\", \"payment_id\": \"$PX\", \"count\": 100000}"
w_sql $C "SELECT payment.retry('$PX')" >/dev/null
w_wait $C "SELECT stripe_status FROM payment.intents WHERE payment_id = '$PX'" requires_payment_method 30 >/dev/null
PX2=$(stored_pi "$PX")
w_http POST "/_test/payment_intents/$PX1/succeed" '{}' >/dev/null
OUT=$(deliver payment_intent.succeeded "$PX1")
is "$(status "$PX")|$OUT" "0|ignored: a PaymentIntent of an earlier attempt of the payment (succeeded); its charge is refunded in full (refund.unwanted)" \
	"item 2: the customer paid the earlier PaymentIntent after the retry: the payment is not completed with it"
clear_faults
w_http POST "/_test/payment_intents/$PX2/succeed" '{}' >/dev/null
deliver payment_intent.succeeded "$PX2" >/dev/null
settled "$PX"
is "$(status "$PX")|$(charges "$PX")|$(refunded "$PX")|$(stored_pi "$PX")" "1|2|3000|$PX2" \
	"item 2: the earlier charge is refunded, the current one completes the payment"
# the reports of that refund.unwanted (found by the model: seed 20261206) are
# no refund of the payment: taken for one made in Stripe's Dashboard, it
# made the payment Refunded while its kept charge was never refunded
REX=$(ledger "[r['id'] for r in j['refunds'] if r['payment_id'] == '$PX' and r['refund_id'] is None][0]")
OUT=$(deliver refund.created "$REX")
is "$(status "$PX")|$(w_sql $C "SELECT count(*) FROM \"PaymentRefunds\" WHERE \"OriginalPaymentId\" = '$PX'")|${OUT%% (*}" \
	"1|0|ignored: a refund" \
	"model: the refund.created of an earlier attempt's unwanted charge is not recorded as a Dashboard refund of the payment"

# ---------------------------------------------------------------------------
# found by the model-based test (test/t/money_model.sh): payment.reconcile
# compares the database with Stripe's latest report, never an older one
# ---------------------------------------------------------------------------
# a refund Stripe accepts as pending and then fails: the reports sent before
# the failure (refund.created pending, charge.refunded with the refund
# counted) arrive after it
PA=$(w_sql $C "SELECT payment.create('$(w_reg 11)', '$(w_user 11)', 30.00, stripe_payment_method => 'pm_card_visa')")
w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$PA'" 1 30 >/dev/null
fault "{\"kind\": \"refund_pending\", \"payment_id\": \"$PA\"}"
RA=$(w_sql $C "SELECT payment.refund('$PA', 10.00, 'pending, then failed at Stripe', '$ADMIN')")
w_wait $C "SELECT stripe_status FROM payment.refund_states WHERE refund_id = '$RA'" pending 30 >/dev/null
REA=$(ledger "j['by_refund_id']['$RA']['ids'][0]")
CHA=$(ledger "[c['id'] for c in j['charges'] if c['payment_id'] == '$PA'][0]")
w_http POST "/_test/refunds/$REA/fail" '{}' >/dev/null
deliver refund.updated "$REA" >/dev/null
deliver refund.created "$REA" >/dev/null
deliver charge.refunded "$CHA" >/dev/null
is "$(w_sql $C "SELECT \"RefundStatus\" FROM \"PaymentRefunds\" WHERE \"Id\" = '$RA'")|$(w_sql $C "SELECT stripe_status FROM payment.refund_states WHERE refund_id = '$RA'")|$(w_sql $C "SELECT count(*) FROM payment.reconcile WHERE payment_id = '$PA'")|$(refunded "$PA")" \
	"2|failed|0|0" \
	"model: a refund pending then failed at Stripe: the late refund.created (pending) and charge.refunded (10.00) sent before the failure change nothing; payment.reconcile is empty"

# a Failed payment's PaymentIntent paid by the customer after the
# registration got another payment: refunded as unwanted, which is no
# disagreement
PB1=$(w_sql $C "SELECT payment.create('$(w_reg 12)', '$(w_user 12)', 25.00, stripe_payment_method => 'pm_card_chargeDeclined')")
w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$PB1'" 2 30 >/dev/null
PB2=$(w_sql $C "SELECT payment.create('$(w_reg 12)', '$(w_user 12)', 25.00, stripe_payment_method => 'pm_card_visa')")
w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$PB2'" 1 30 >/dev/null
PIB1=$(intents_of "$PB1")
w_http POST "/_test/payment_intents/$PIB1/succeed" '{}' >/dev/null
OUT=$(deliver payment_intent.succeeded "$PIB1")
settled "$PB1"
w_wait $C "SELECT count(*) FROM payment.outbox WHERE payment_id = '$PB1' AND kind = 'refund.unwanted' AND state = 'done'" 1 30 >/dev/null
CHB=$(ledger "[c['id'] for c in j['charges'] if c['payment_id'] == '$PB1'][0]")
OUTR=$(deliver charge.refunded "$CHB")
is "${OUTR%% (*}" "ignored: Stripe reports 25.00 refunded of a charge the payment does not keep" \
	"model: the charge.refunded of that unwanted charge is not taken for the payment's refunds"
is "$(w_sql $C "SELECT count(*) FROM payment.outbox WHERE payment_id = '$PB1' AND kind = 'refund.unwanted' AND state = 'done'")|$(refunded "$PB1")|$(status "$PB1")|$(w_sql $C "SELECT count(*) FROM payment.reconcile WHERE payment_id IN ('$PB1', '$PB2')")|${OUT%%;*}" \
	"1|2500|2|0|conflict: Stripe charged a Failed payment whose registration has another live payment" \
	"model: a Failed payment's PaymentIntent paid late is refunded in full (refund.unwanted) and payment.reconcile does not list it"
# the same, but Stripe fails that refund: the row is dead (payment.dead_letters)
PC1=$(w_sql $C "SELECT payment.create('$(w_reg 13)', '$(w_user 13)', 25.00, stripe_payment_method => 'pm_card_chargeDeclined')")
w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$PC1'" 2 30 >/dev/null
PC2=$(w_sql $C "SELECT payment.create('$(w_reg 13)', '$(w_user 13)', 25.00, stripe_payment_method => 'pm_card_visa')")
w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$PC2'" 1 30 >/dev/null
fault "{\"kind\": \"refund_failed\", \"payment_id\": \"$PC1\"}"
PIC1=$(intents_of "$PC1")
w_http POST "/_test/payment_intents/$PIC1/succeed" '{}' >/dev/null
deliver payment_intent.succeeded "$PIC1" >/dev/null
is "$(w_wait $C "SELECT state FROM payment.outbox WHERE payment_id = '$PC1' AND kind = 'refund.unwanted'" dead 30)|$(w_sql $C "SELECT left(last_error, 60) FROM payment.dead_letters WHERE payment_id = '$PC1'")" \
	"dead|Stripe did not refund a charge the payment does not keep (re" \
	"model: a refund.unwanted that Stripe fails is dead, shown in payment.dead_letters (the money is to return by hand)"
clear_faults
# the same, but Stripe first accepts that refund (pending) and fails it later
PE1=$(w_sql $C "SELECT payment.create('$(w_reg 14)', '$(w_user 14)', 25.00, stripe_payment_method => 'pm_card_chargeDeclined')")
w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$PE1'" 2 30 >/dev/null
PE2=$(w_sql $C "SELECT payment.create('$(w_reg 14)', '$(w_user 14)', 25.00, stripe_payment_method => 'pm_card_visa')")
w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$PE2'" 1 30 >/dev/null
fault "{\"kind\": \"refund_pending\", \"payment_id\": \"$PE1\"}"
PIE1=$(intents_of "$PE1")
w_http POST "/_test/payment_intents/$PIE1/succeed" '{}' >/dev/null
deliver payment_intent.succeeded "$PIE1" >/dev/null
w_wait $C "SELECT count(*) FROM payment.outbox WHERE payment_id = '$PE1' AND kind = 'refund.unwanted' AND state = 'done'" 1 30 >/dev/null
REE=$(ledger "[r['id'] for r in j['refunds'] if r['payment_id'] == '$PE1'][0]")
w_http POST "/_test/refunds/$REE/fail" '{}' >/dev/null
# the event overtakes the request's answer (its row still sending): refused,
# nothing recorded, so that Stripe delivers it again
w_sql $C "UPDATE payment.outbox SET state = 'sending' WHERE payment_id = '$PE1' AND kind = 'refund.unwanted'" >/dev/null
EVF=$(w_http GET "/_test/events?type=refund.updated" | python3 -c "
import json, sys
j = json.load(sys.stdin)
e = [e for e in j['events'] if json.loads(e['payload'])['data']['object']['id'] == '$REE'][-1]
print(json.dumps([e['id'], e['payload'], e['signature']]))")
GOT=$(echo "SELECT payment.handle_webhook(:'p', :'h')" | q -v p="$(echo "$EVF" | w_json "j[1]")" -v h="$(echo "$EVF" | w_json "j[2]")")
is "$GOT|$(w_sql $C "SELECT count(*) FROM payment.webhook_events WHERE event_id = '$(echo "$EVF" | w_json "j[0]")'")|$(w_sql $C "SELECT state FROM payment.outbox WHERE payment_id = '$PE1' AND kind = 'refund.unwanted'")" \
	"ERROR: 55000|0|sending" \
	"model: a refund.unwanted's failure reported before its answer is recorded is refused (55000), nothing recorded"
w_sql $C "UPDATE payment.outbox SET state = 'done' WHERE payment_id = '$PE1' AND kind = 'refund.unwanted'" >/dev/null
OUT=$(deliver refund.updated "$REE")
is "${OUT%%;*}|$(w_sql $C "SELECT state FROM payment.outbox WHERE payment_id = '$PE1' AND kind = 'refund.unwanted'")|$(w_sql $C "SELECT left(last_error, 66) FROM payment.dead_letters WHERE payment_id = '$PE1'")|$(status "$PE1")|$(status "$PE2")" \
	"applied: Stripe failed the refund of a charge the payment does not keep|dead|Stripe failed the refund of a charge the payment does not keep (de|2|1" \
	"model: a refund.unwanted pending then failed at Stripe: its request becomes a dead letter (shown, the money to return by hand); no payment changes"
clear_faults

# a cancel whose 500 Stripe saved under its key (and replays for every
# resend): asked again under a new key (found by the model: seed 11)
PF=$(w_sql $C "SELECT payment.create('$(w_reg 15)', '$(w_user 15)', 25.00, stripe_payment_method => 'pm_card_threeDSecure2Required')")
w_wait $C "SELECT stripe_status FROM payment.intents WHERE payment_id = '$PF'" requires_action 30 >/dev/null
PIF=$(stored_pi "$PF")
fault "{\"kind\": \"500\", \"method\": \"POST\", \"path\": \"/v1/payment_intents/*/cancel\", \"payment_id\": \"$PF\", \"count\": 1}"
w_sql $C "SET app.current_user_id = '$ADMIN'; SELECT payment.resolve('$PF', 2, 'customer abandoned checkout')" >/dev/null
w_wait $C "SELECT count(*) FROM payment.outbox WHERE payment_id = '$PF' AND kind = 'payment_intent.cancel' AND state = 'done'" 2 60 >/dev/null
is "$(api GET "/v1/payment_intents/$PIF" | w_json "j['status']")|$(w_sql $C "SELECT string_agg(state || ':' || (idempotency_key LIKE '%-re-1'), ',' ORDER BY id) FROM payment.outbox WHERE payment_id = '$PF' AND kind = 'payment_intent.cancel'")|$(w_sql $C "SELECT last_error LIKE '%Stripe replays this saved answer for the key: sent again under a new key%' FROM payment.outbox WHERE payment_id = '$PF' AND kind = 'payment_intent.cancel' ORDER BY id LIMIT 1")" \
	"canceled|done:false,done:true|t" \
	"model: a cancel answered with a saved 500 is sent again under a new key (-re-1), and the PaymentIntent is canceled"
is "$(w_http GET "/_test/requests?idempotency_key=$(w_sql $C "SELECT idempotency_key FROM payment.outbox WHERE payment_id = '$PF' AND kind = 'payment_intent.cancel' ORDER BY id LIMIT 1")" | w_json "len(j['requests']) >= 2 and all(r.get('replayed') for r in j['requests'][1:])")" True \
	"model: the old key was tried again and replayed before the new key was taken"
clear_faults
# the same for a refund.unwanted: its saved 500 is replayed, a new key
# refunds the charge once
PG1=$(w_sql $C "SELECT payment.create('$(w_reg 16)', '$(w_user 16)', 25.00, stripe_payment_method => 'pm_card_chargeDeclined')")
w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$PG1'" 2 30 >/dev/null
PG2=$(w_sql $C "SELECT payment.create('$(w_reg 16)', '$(w_user 16)', 25.00, stripe_payment_method => 'pm_card_visa')")
w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$PG2'" 1 30 >/dev/null
fault "{\"kind\": \"500\", \"method\": \"POST\", \"path\": \"/v1/refunds\", \"payment_id\": \"$PG1\", \"count\": 1}"
PIG1=$(intents_of "$PG1")
w_http POST "/_test/payment_intents/$PIG1/succeed" '{}' >/dev/null
deliver payment_intent.succeeded "$PIG1" >/dev/null
w_wait $C "SELECT count(*) FROM payment.outbox WHERE payment_id = '$PG1' AND kind = 'refund.unwanted' AND state = 'done'" 2 60 >/dev/null
settled "$PG1"
is "$(w_sql $C "SELECT string_agg(state || ':' || (idempotency_key LIKE '%-re-1'), ',' ORDER BY id) FROM payment.outbox WHERE payment_id = '$PG1' AND kind = 'refund.unwanted'")|$(charged "$PG1")|$(refunded "$PG1")|$(status "$PG1")|$(status "$PG2")" \
	"done:false,done:true|2500|2500|2|1" \
	"model: a refund.unwanted answered with a saved 500 is sent again under a new key: the unwanted charge is refunded once, in full"
clear_faults

# ---------------------------------------------------------------------------
# every payment of this test: at most one charge kept per registration
# ---------------------------------------------------------------------------
is "$(w_http GET /_test/ledger | python3 -c "
import json, sys
j = json.load(sys.stdin)
kept = {}
for pid, d in j['by_payment_id'].items():
    kept[pid] = d['charged_amount'] - d['refunded_amount']
print(sorted(v for v in kept.values() if v < 0))")" "[]" "refunds never exceed charges"
REGS=$(w_sql $C "SELECT string_agg(\"Id\" || '=' || \"EventRegistrationId\", ' ') FROM \"Payments\"")
is "$(w_http GET /_test/ledger | python3 -c "
import json, sys
j = json.load(sys.stdin)
reg = dict(x.split('=') for x in '$REGS'.split())
kept = {}
for pid, d in j['by_payment_id'].items():
    if pid in ('$PC1', '$PE1'):
        continue  # Stripe failed their unwanted refunds on purpose (dead letters above)
    if d['charged_amount'] - d['refunded_amount'] > 0:
        kept[reg[pid]] = kept.get(reg[pid], 0) + 1
print(max(kept.values()))")" 1 "per registration at most one charge that is not refunded"
is "$(w_sql $C "SELECT coalesce(string_agg(kind || ': ' || last_error, '; '), 'none') FROM payment.dead_letters WHERE payment_id NOT IN ('$PC1', '$PE1')")" none \
	"no request was given up on (but the refunds Stripe failed above)"

w_done
