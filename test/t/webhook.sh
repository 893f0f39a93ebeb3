#!/usr/bin/env bash
#
# test/t/webhook.sh — payment.handle_webhook: signatures (valid, tampered,
# wrong secret, stale and future, several v1, v0 only, malformed headers,
# rotation with a reload seen by a live session), payloads (not JSON, not an
# event, 1 MiB), once per event id (10 replays), unknown types, the events
# of a 3-D Secure payment from the Stripe stand-in, out-of-order sequences,
# a refund made in the Dashboard, refund updates, disputes, payment.resolve
# and payment.reconcile, privileges, and no secret in the log.  Prints TAP.
#
set -uo pipefail
source "$PE_WORK/repo/test/worker_lib.sh"
trap w_cleanup EXIT

echo "1..73"

C=w_hook
S1=whsec_$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
S2=whsec_$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
SECRETS="$PE_WORK/$C.whsec"
(umask 077; printf '%s\n' "$S1" >"$SECRETS")
TOOL="$PE_WORK/repo/test/webhook_tool.py"
D="$PE_WORK/$C.events"
mkdir -p "$D"

w_standin_start $C --webhook-secret "$S1"
w_cluster $C "payment_ext.webhook_secret_file = '$SECRETS'" "payment_ext.max_attempts = 3"
w_seed $C 30

# psql as the superuser, errors as their SQLSTATE only
q() {
	"$PE_BIN/psql" -h "$PE_WORK/$C.sock" -p 5432 -U postgres -d postgres \
		-X -qAt -v ON_ERROR_STOP=1 -v VERBOSITY=sqlstate "$@" 2>&1 | sed -E 's/^(psql:[^E]*)?ERROR:  /ERROR: /'
}
# deliver FILE HEADER: the result of payment.handle_webhook, or ERROR: <SQLSTATE>
deliver() {
	echo "SELECT payment.handle_webhook(pg_read_file('$1'), :'hdr')" | q -v hdr="$2"
}
# event NAME ID TYPE OBJECT [options]: write an event to $D/NAME
event() {
	local name=$1
	shift
	python3 "$TOOL" event "$@" >"$D/$name"
}
sign() { python3 "$TOOL" sign "$@"; }
events_count() { w_sql $C "SELECT count(*) FROM payment.webhook_events"; }
audit_count() { w_sql $C "SELECT count(*) FROM \"PaymentAuditLog\""; }

# --- signatures ---------------------------------------------------------------
event e1 evt_test_unknown1 customer.created '{"id": "cus_T1", "object": "customer"}'
is "$(deliver "$D/e1" "$(sign "$D/e1" now "$S1")")" evt_test_unknown1 \
	"a valid signature: the event id comes back"
is "$(w_sql $C "SELECT type || '|' || outcome || '|' || (applied_at IS NULL) FROM payment.webhook_events WHERE event_id = 'evt_test_unknown1'")" \
	"customer.created|ignored: event type not handled|true" "an unknown type is stored and acknowledged"
is "$(w_sql $C "SELECT left(payload, 4), payload_bytes = $(stat -c %s "$D/e1") FROM payment.webhook_events WHERE event_id = 'evt_test_unknown1'")" \
	"pe1:|t" "the payload is stored sealed"
is "$(w_sql $C "SELECT payment.decrypt(payload, 'payment.webhook_events.payload:evt_test_unknown1') = pg_read_file('$D/e1') FROM payment.webhook_events WHERE event_id = 'evt_test_unknown1'")" \
	t "the sealed payload opens to the bytes delivered"

event e2 evt_test_2 customer.created '{"id": "cus_T2", "object": "customer"}'
H2=$(sign "$D/e2" now "$S1")
sed 's/cus_T2/cus_T3/' "$D/e2" >"$D/e2t"
N0=$(events_count)
is "$(deliver "$D/e2t" "$H2")" "ERROR: PE010" "a tampered payload is refused (PE010)"
is "$(deliver "$D/e2" "$(sign "$D/e2" now whsec_wrong)")" "ERROR: PE010" "a wrong secret is refused (PE010)"
is "$(deliver "$D/e2" "$(sign "$D/e2" now-301 "$S1")")" "ERROR: PE011" "a timestamp 301 s old is refused (PE011)"
# ahead: the server's clock moves on while the delivery travels (a Python
# and a psql process to start: seconds on a loaded machine), so a timestamp
# 301 s ahead at signing may be within the tolerance on arrival; 330 s
# leaves 30 s for that (the 301 s old one above is exact: age only grows)
is "$(deliver "$D/e2" "$(sign "$D/e2" now+330 "$S1")")" "ERROR: PE011" "a timestamp 330 s ahead is refused (PE011)"
is "$(deliver "$D/e2" "$(echo "$H2" | sed 's/v1=/v0=/')")" "ERROR: PE012" "only a v0 signature: malformed (PE012), v0 is never accepted"
is "$(deliver "$D/e2" "v1=$(echo "$H2" | sed 's/.*v1=//')")" "ERROR: PE012" "no timestamp: PE012"
is "$(deliver "$D/e2" "garbage")" "ERROR: PE012" "a header that is not key=value pairs: PE012"
is "$(deliver "$D/e2" "$H2,v1=ab=cd")" "ERROR: PE012" "an element with two '=': PE012"
is "$(deliver "$D/e2" "")" "ERROR: PE012" "an empty header: PE012"
is "$(deliver "$D/e2" "t=$(date +%s),v1=$(printf '0%.0s' $(seq 64))")" "ERROR: PE010" "a well-formed but wrong v1: PE010"
is "$(events_count)" "$N0" "refused deliveries changed nothing"
is "$(grep -c 'payment_ext refusal: what="payment.handle_webhook"' "$PE_WORK/$C.log")" 10 \
	"each refusal left its LOG line"
T=$(date +%s)
GOOD=$(sign "$D/e2" "$T" "$S1" | sed 's/.*v1=//')
BAD=$(sign "$D/e2" "$T" whsec_other | sed 's/.*v1=//')
is "$(deliver "$D/e2" "t=$T,v1=$BAD,v1=nothex,v0=$BAD,v1=$GOOD")" evt_test_2 \
	"several v1 values: one that verifies is enough (non-hex and v0 ignored)"
event e3 evt_test_3 customer.created '{"id": "cus_T3"}'
is "$(deliver "$D/e3" "$(sign "$D/e3" now-250 "$S1")")" evt_test_3 "250 s old is within the 300 s tolerance"
event e4 evt_test_4 customer.created '{"id": "cus_T4"}'
is "$(deliver "$D/e4" "$(sign "$D/e4" now+250 "$S1")")" evt_test_4 "250 s ahead is within the tolerance too"

# --- rotation, reloaded in a live session --------------------------------------
SECRETS2="$PE_WORK/$C.whsec2"
(umask 077; printf '# rotating\n%s\n\n%s\n' "$S2" "$S1" >"$SECRETS2")
event r1 evt_rot_1 customer.created '{"id": "cus_R1"}'
event r2 evt_rot_2 customer.created '{"id": "cus_R2"}'
event r3 evt_rot_3 customer.created '{"id": "cus_R3"}'
event r4 evt_rot_4 customer.created '{"id": "cus_R4"}'
# a session applies a reload between statements, not inside one: poll with
# one short statement after another until it sees the new file (60 s)
WAIT_RELOAD=$(for i in $(seq 1 1200); do
	printf "DO \$\$ BEGIN IF current_setting('payment_ext.webhook_secret_file') <> '%s' THEN PERFORM pg_sleep(0.05); END IF; END \$\$;\n" "$SECRETS2"
done)
OUT=$(q -v h1="$(sign "$D/r1" now "$S2")" -v h2="$(sign "$D/r2" now "$S2")" \
	-v h3="$(sign "$D/r3" now "$S1")" -v h4="$(sign "$D/r4" now "$S2" "$S1")" <<EOF
\set ON_ERROR_STOP 0
SELECT payment.handle_webhook(pg_read_file('$D/r1'), :'h1');
ALTER SYSTEM SET payment_ext.webhook_secret_file = '$SECRETS2';
SELECT pg_reload_conf();
$WAIT_RELOAD
SELECT payment.handle_webhook(pg_read_file('$D/r2'), :'h2');
SELECT payment.handle_webhook(pg_read_file('$D/r3'), :'h3');
SELECT payment.handle_webhook(pg_read_file('$D/r4'), :'h4');
ALTER SYSTEM RESET payment_ext.webhook_secret_file;
SELECT pg_reload_conf();
EOF
)
is "$(echo "$OUT" | tr '\n' ' ')" "ERROR: PE010 t evt_rot_2 evt_rot_3 evt_rot_4 t " \
	"rotation: the new secret is refused, then (after a reload seen by the same session) both secrets verify, one v1 each or both"

# --- payloads -----------------------------------------------------------------
printf 'not json at all' >"$D/p1"
is "$(deliver "$D/p1" "$(sign "$D/p1" now "$S1")")" "ERROR: PE013" "a signed payload that is not JSON: PE013"
printf '[1, 2]' >"$D/p2"
is "$(deliver "$D/p2" "$(sign "$D/p2" now "$S1")")" "ERROR: PE013" "a JSON array: PE013"
printf '{"type": "x.y"}' >"$D/p3"
is "$(deliver "$D/p3" "$(sign "$D/p3" now "$S1")")" "ERROR: PE013" "an object without an id: PE013"
printf '{"id": "evt_1; DROP", "type": "x.y"}' >"$D/p4"
is "$(deliver "$D/p4" "$(sign "$D/p4" now "$S1")")" "ERROR: PE013" "an id that is not a Stripe id: PE013"
event big evt_big_1 customer.updated '{"id": "cus_B"}' --pad 1048576
is "$(deliver "$D/big" "$(sign "$D/big" now "$S1")")" evt_big_1 "a 1 MiB payload verifies and is stored"
is "$(w_sql $C "SELECT payload_bytes > 1048576 AND payment.decrypt(payload, 'payment.webhook_events.payload:evt_big_1') = pg_read_file('$D/big') FROM payment.webhook_events WHERE event_id = 'evt_big_1'")" \
	t "the 1 MiB payload round-trips through the seal"

# --- a 3-D Secure payment completed by a webhook --------------------------------
P1=$(w_sql $C "SELECT payment.create('$(w_reg 1)', '$(w_user 1)', 40.00, stripe_payment_method => 'pm_card_threeDSecure2Required')")
is "$(w_wait $C "SELECT stripe_status FROM payment.intents WHERE payment_id = '$P1'" requires_action 60)" requires_action \
	"3-D Secure: the worker leaves the payment Pending, its intent requires_action"
PI1=$(w_sql $C "SELECT payment.decrypt(\"EncryptedStripePaymentIntentId\", 'Payments.EncryptedStripePaymentIntentId:' || \"Id\") FROM \"Payments\" WHERE \"Id\" = '$P1'")
# stand_event TYPE PI FILE: the stand-in's latest event of TYPE for PI into FILE; prints its signature
stand_event() {
	w_http GET "/_test/events?type=$1" | python3 -c "
import json, sys
j = json.load(sys.stdin)
e = [e for e in j['events'] if json.loads(e['payload'])['data']['object'].get('$4', json.loads(e['payload'])['data']['object'].get('id')) == '$2'][-1]
open('$3', 'w').write(e['payload'])
print(e['signature'])"
}
HRA=$(stand_event payment_intent.requires_action "$PI1" "$D/ra" id)
A0=$(audit_count)
ID=$(deliver "$D/ra" "$HRA")
is "$(w_sql $C "SELECT outcome FROM payment.webhook_events WHERE event_id = '$ID'")|$(w_sql $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P1'")" \
	"recorded: PaymentIntent requires_action; the payment stays Pending|0" "payment_intent.requires_action: recorded, the payment stays Pending"
w_http POST "/_test/payment_intents/$PI1/succeed" '{}' >/dev/null
HS=$(stand_event payment_intent.succeeded "$PI1" "$D/succ" id)
ID=$(deliver "$D/succ" "$HS")
is "$(w_sql $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P1'")" 1 "payment_intent.succeeded (signed by the stand-in) completes it"
is "$(w_sql $C "SELECT outcome, applied_at IS NOT NULL, payment_id = '$P1' FROM payment.webhook_events WHERE event_id = '$ID'")" \
	"applied: Pending -> Completed|t|t" "its outcome is recorded with the payment"
is "$(w_sql $C "SELECT stripe_status, source FROM payment.intents WHERE payment_id = '$P1'")" "succeeded|webhook" \
	"payment.intents holds what Stripe reported, from the webhook"
is "$(w_sql $C "SELECT count(*) FROM \"PaymentAuditLog\" WHERE \"PaymentId\" = '$P1' AND \"ActionType\" = 'PaymentCompleted'")" 1 \
	"the audit trigger recorded the completion"

# --- once per event id -----------------------------------------------------------
A1=$(audit_count)
N1=$(events_count)
R=""
for i in $(seq 1 10); do R="$R$(deliver "$D/succ" "$HS") "; done
is "$R" "$(printf "$ID %.0s" $(seq 1 10))" "10 redeliveries return the same event id"
is "$(events_count)|$(audit_count)|$(w_sql $C "SELECT outcome FROM payment.webhook_events WHERE event_id = '$ID'")" \
	"$N1|$A1|applied: Pending -> Completed" "and change nothing: no event row, no audit row, same outcome"

# --- out of order -------------------------------------------------------------------
PIOBJ=$(w_sql $C "SELECT json_build_object('id', '$PI1', 'object', 'payment_intent', 'amount', 4000, 'currency', 'usd', 'metadata', json_build_object('payment_id', '$P1'))")
obj() { python3 -c "import json,sys; o = json.loads(sys.argv[1]); o.update(json.loads(sys.argv[2])); print(json.dumps(o))" "$1" "$2"; }
event o1 evt_ooo_1 payment_intent.payment_failed "$(obj "$PIOBJ" '{"status": "requires_payment_method", "last_payment_error": {"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds", "message": "Your card has insufficient funds."}}')" --created now-60
deliver "$D/o1" "$(sign "$D/o1" now "$S1")" >/dev/null
is "$(w_sql $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P1'")|$(w_sql $C "SELECT count(*) FROM \"PaymentFailures\" WHERE \"PaymentId\" = '$P1'")" "1|0" \
	"payment_failed after succeeded: still Completed, no failure row"
is "$(w_sql $C "SELECT outcome FROM payment.webhook_events WHERE event_id = 'evt_ooo_1'")" \
	"ignored: the payment is Completed; a failure never moves it backwards" "recorded as ignored, not an error to Stripe"
event o2 evt_ooo_2 payment_intent.canceled "$(obj "$PIOBJ" '{"status": "canceled", "cancellation_reason": "requested_by_customer"}')"
event o3 evt_ooo_3 payment_intent.requires_action "$(obj "$PIOBJ" '{"status": "requires_action", "next_action": {"type": "use_stripe_sdk"}}')"
is "$(deliver "$D/o2" "$(sign "$D/o2" now "$S1")") $(deliver "$D/o3" "$(sign "$D/o3" now "$S1")")" "evt_ooo_2 evt_ooo_3" \
	"canceled and requires_action after succeeded are acknowledged"
is "$(w_sql $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P1'")|$(w_sql $C "SELECT stripe_status FROM payment.intents WHERE payment_id = '$P1'")" \
	"1|succeeded" "the payment stays Completed and the intent's terminal status stays succeeded"

# payment_failed then succeeded (Stripe.js confirmed again with another card)
P2=$(w_sql $C "SELECT payment.create('$(w_reg 2)', '$(w_user 2)', 25.00)")
w_wait $C "SELECT stripe_status FROM payment.intents WHERE payment_id = '$P2'" requires_payment_method 60 >/dev/null
PI2=$(w_sql $C "SELECT payment.decrypt(\"EncryptedStripePaymentIntentId\", 'Payments.EncryptedStripePaymentIntentId:' || \"Id\") FROM \"Payments\" WHERE \"Id\" = '$P2'")
w_http POST "/_test/payment_intents/$PI2/fail" '{"decline_code": "insufficient_funds"}' >/dev/null
HF=$(stand_event payment_intent.payment_failed "$PI2" "$D/f2" id)
deliver "$D/f2" "$HF" >/dev/null
is "$(w_sql $C "SELECT p.\"Status\", f.\"FailureCode\" FROM \"Payments\" p JOIN \"PaymentFailures\" f ON f.\"PaymentId\" = p.\"Id\" WHERE p.\"Id\" = '$P2'")" \
	"2|insufficient_funds" "payment_intent.payment_failed: Pending -> Failed with a failure row (decline code)"
w_http POST "/_test/payment_intents/$PI2/succeed" '{}' >/dev/null
HS2=$(stand_event payment_intent.succeeded "$PI2" "$D/s2" id)
deliver "$D/s2" "$HS2" >/dev/null
is "$(w_sql $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P2'")|$(w_sql $C "SELECT string_agg(\"ActionType\", ',' ORDER BY \"ChainSeq\") FROM \"PaymentAuditLog\" WHERE \"PaymentId\" = '$P2'")" \
	"1|PaymentInitiated,SystemAction,PaymentFailed,PaymentFailed,PaymentRetried,PaymentCompleted" \
	"succeeded after a failed attempt: Failed -> Pending -> Completed, each step audited"

# succeeded for a Failed payment whose registration has another live payment: a conflict
P3=$(w_sql $C "SELECT payment.create('$(w_reg 3)', '$(w_user 3)', 30.00)")
w_wait $C "SELECT stripe_status FROM payment.intents WHERE payment_id = '$P3'" requires_payment_method 60 >/dev/null
PI3=$(w_sql $C "SELECT payment.decrypt(\"EncryptedStripePaymentIntentId\", 'Payments.EncryptedStripePaymentIntentId:' || \"Id\") FROM \"Payments\" WHERE \"Id\" = '$P3'")
w_http POST "/_test/payment_intents/$PI3/fail" '{}' >/dev/null
HF3=$(stand_event payment_intent.payment_failed "$PI3" "$D/f3" id)
deliver "$D/f3" "$HF3" >/dev/null
P3B=$(w_sql $C "INSERT INTO \"Payments\" (\"EventRegistrationId\", \"UserId\", \"AmountValue\", \"PaymentMethodType\", \"Status\") VALUES ('$(w_reg 3)', '$(w_user 3)', 30.00, 2, 1) RETURNING \"Id\"")
w_http POST "/_test/payment_intents/$PI3/succeed" '{}' >/dev/null
HS3=$(stand_event payment_intent.succeeded "$PI3" "$D/s3" id)
deliver "$D/s3" "$HS3" >/dev/null
is "$(w_sql $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P3'")|$(w_sql $C "SELECT left(outcome, 9) FROM payment.webhook_events WHERE payment_id = '$P3' AND type = 'payment_intent.succeeded'")" \
	"2|conflict:" "succeeded for a Failed payment whose registration paid otherwise: a conflict, nothing moves"
is "$(w_sql $C "SELECT count(*) FROM payment.reconcile WHERE payment_id = '$P3'")|$(w_sql $C "SELECT count(*) FROM payment.outbox WHERE payment_id = '$P3' AND kind = 'refund.unwanted'")" "0|1" \
	"the charge it does not keep is refunded in full (refund.unwanted): no disagreement for payment.reconcile"

# --- payment.resolve ------------------------------------------------------------------
w_sql $C "CREATE ROLE wh_admin LOGIN IN ROLE payment_admin; CREATE ROLE wh_app LOGIN IN ROLE payment_app" >/dev/null
qa() { echo "$2" | "$PE_BIN/psql" -h "$PE_WORK/$C.sock" -p 5432 -U "$1" -d postgres -X -qAt -v ON_ERROR_STOP=1 -v VERBOSITY=sqlstate 2>&1 | sed -E 's/^(psql:[^E]*)?ERROR:  /ERROR: /'; }
is "$(q -c "UPDATE \"Payments\" SET \"Status\" = 1 WHERE \"Id\" = '$P3'")" "ERROR: 55000" \
	"a plain UPDATE Failed -> Completed stays refused (55000), even for a superuser"
is "$(qa wh_app "SELECT payment.resolve('$P3', 1, 'Stripe shows the charge succeeded')")" "ERROR: 42501" \
	"payment.resolve is not granted to payment_app (42501)"
is "$(qa wh_admin "SELECT payment.resolve('$P3', 1, 'too short')")" "ERROR: 23514" "a reason under 10 characters: 23514"
is "$(qa wh_admin "SELECT payment.resolve('$P3', 3, 'Stripe shows the charge succeeded')")" "ERROR: 22023" "Refunded is not a resolvable status: 22023"
is "$(qa wh_admin "SELECT payment.resolve('$P3', 2, 'Stripe shows the charge succeeded')")" "ERROR: 55000" "a payment already in that status: 55000"
is "$(qa wh_admin "SELECT payment.resolve('$P3', 1, 'Stripe shows the charge succeeded')")" "ERROR: 23505" \
	"Completed while the registration has another live payment: the unique index refuses (23505)"
P4=$(w_sql $C "INSERT INTO \"Payments\" (\"EventRegistrationId\", \"UserId\", \"AmountValue\", \"PaymentMethodType\", \"Status\") VALUES ('$(w_reg 4)', '$(w_user 4)', 12.00, 1, 2) RETURNING \"Id\"")
is "$(qa wh_admin "SET app.current_user_id = '$(w_user 30)'; SELECT payment.resolve('$P4', 1, 'Stripe dashboard shows ch_ succeeded on 2024-05-01')")" "" \
	"payment.resolve by an admin: Failed -> Completed"
is "$(w_sql $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P4'")|$(w_sql $C "SELECT \"ActionType\" || ': ' || \"ActionDescription\" FROM \"PaymentAuditLog\" WHERE \"PaymentId\" = '$P4' ORDER BY \"ChainSeq\" DESC LIMIT 1")" \
	"1|StatusChanged: payment status changed: Failed -> Completed, resolved by payment.resolve, reason: Stripe dashboard shows ch_ succeeded on 2024-05-01 (changed: Status, UpdatedAt)" \
	"the audit row carries the reason"
is "$(w_sql $C "SELECT \"UserId\" FROM \"PaymentAuditLog\" WHERE \"PaymentId\" = '$P4' ORDER BY \"ChainSeq\" DESC LIMIT 1")" "$(w_user 30)" \
	"and the administrator's app.current_user_id"
is "$(qa wh_admin "SELECT payment.resolve('$P4', 2, '4242 4242 4242 4242 was the card')")" "ERROR: PE001" "a card number in the reason: PE001"
is "$(q -c "UPDATE \"Payments\" SET \"Status\" = 2 WHERE \"Id\" = '$P4'")" "ERROR: 55000" "after a resolve, plain UPDATEs are refused again"

# --- privileges ---------------------------------------------------------------------
is "$(w_sql $C "SELECT has_function_privilege('payment_app', 'payment.handle_webhook(text, text)', 'EXECUTE'),
                     has_function_privilege('payment_reporting', 'payment.handle_webhook(text, text)', 'EXECUTE'),
                     has_function_privilege('payment_admin', 'payment.resolve(uuid, int, text)', 'EXECUTE'),
                     has_function_privilege('payment_app', 'payment.resolve(uuid, int, text)', 'EXECUTE'),
                     has_table_privilege('payment_app', 'payment.webhook_events', 'SELECT')")" "t|f|t|f|f" \
	"handle_webhook for payment_app only, resolve for payment_admin only, events not readable by the application"
event g1 evt_grant_1 customer.created '{"id": "cus_G"}'
is "$(qa wh_app "SELECT payment.handle_webhook(\$pe\$$(cat "$D/g1")\$pe\$, '$(sign "$D/g1" now "$S1")')")" evt_grant_1 \
	"payment_app calls it (SECURITY DEFINER)"
is "$(w_sql $C "SELECT prosecdef, proconfig::text FROM pg_proc WHERE oid = 'payment.handle_webhook(text, text)'::regprocedure")" \
	"t|{\"search_path=pg_catalog, pg_temp\"}" "SECURITY DEFINER with a fixed search_path"

# --- a refund made in Stripe's Dashboard --------------------------------------------
w_http POST /_test/dashboard_refund "{\"payment_intent\": \"$PI1\", \"amount\": 500}" >/dev/null
HRC=$(stand_event refund.created "$PI1" "$D/rc" payment_intent)
HCR=$(stand_event charge.refunded "$PI1" "$D/cr" payment_intent)
deliver "$D/cr" "$HCR" >/dev/null
deliver "$D/rc" "$HRC" >/dev/null
is "$(w_sql $C "SELECT \"RefundAmountValue\", \"RefundStatus\", \"ProcessedByUserId\", \"Metadata\"->>'source' FROM \"PaymentRefunds\" WHERE \"OriginalPaymentId\" = '$P1'")" \
	"5.00|1|00000000-0000-0000-0000-00000000057e|stripe_dashboard" \
	"refund.created for a Dashboard refund: a Completed PaymentRefunds row by the system user"
is "$(w_sql $C "SELECT \"Status\", \"RefundAmountValue\" FROM \"Payments\" WHERE \"Id\" = '$P1'")" "4|5.00" \
	"the payment is PartiallyRefunded through the refund trigger"
is "$(w_sql $C "SELECT amount_refunded FROM payment.intents WHERE payment_id = '$P1'")|$(w_sql $C "SELECT count(*) FROM payment.reconcile WHERE payment_id = '$P1'")" \
	"500|0" "charge.refunded recorded Stripe's refunded amount, which agrees"
is "$(w_sql $C "SELECT payment.decrypt(\"EncryptedStripeRefundId\", 'PaymentRefunds.EncryptedStripeRefundId:' || \"Id\") LIKE 're\_%' FROM \"PaymentRefunds\" WHERE \"OriginalPaymentId\" = '$P1'")" t \
	"the Stripe refund id is stored sealed for its row"
deliver "$D/rc" "$HRC" >/dev/null
RE1=$(w_sql $C "SELECT payment.decrypt(\"EncryptedStripeRefundId\", 'PaymentRefunds.EncryptedStripeRefundId:' || \"Id\") FROM \"PaymentRefunds\" WHERE \"OriginalPaymentId\" = '$P1'")
w_http POST "/_test/refunds/$RE1/fail" '{}' >/dev/null
HRU=$(stand_event refund.updated "$RE1" "$D/ru" id)
deliver "$D/ru" "$HRU" >/dev/null
is "$(w_sql $C "SELECT count(*), min(\"RefundStatus\") FROM \"PaymentRefunds\" WHERE \"OriginalPaymentId\" = '$P1'")" "1|1" \
	"a redelivery adds no refund; a later failure of a Completed refund does not move it"
is "$(w_sql $C "SELECT problem FROM payment.reconcile WHERE payment_id = '$P1' AND refund_id IS NOT NULL")" \
	"Stripe has the refund failed; the database has it Completed" "payment.reconcile lists the refund that Stripe now says failed"

# --- refunds we made: pending, then succeeded -----------------------------------------
w_http POST /_test/faults "{\"kind\": \"refund_pending\", \"payment_id\": \"$P2\"}" >/dev/null
R2=$(w_sql $C "SELECT payment.refund('$P2', 25.00, 'attendee cannot come', '$(w_user 30)')")
is "$(w_wait $C "SELECT stripe_status FROM payment.refund_states WHERE refund_id = '$R2'" pending 60)|$(w_sql $C "SELECT \"RefundStatus\" FROM \"PaymentRefunds\" WHERE \"Id\" = '$R2'")" \
	"pending|0" "a pending refund stays Processing"
RE2=$(w_sql $C "SELECT payment.decrypt(\"EncryptedStripeRefundId\", 'PaymentRefunds.EncryptedStripeRefundId:' || \"Id\") FROM \"PaymentRefunds\" WHERE \"Id\" = '$R2'")
w_http POST "/_test/refunds/$RE2/succeed" '{}' >/dev/null
HRU2=$(stand_event refund.updated "$RE2" "$D/ru2" id)
ID=$(deliver "$D/ru2" "$HRU2")
is "$(w_sql $C "SELECT \"RefundStatus\" FROM \"PaymentRefunds\" WHERE \"Id\" = '$R2'")|$(w_sql $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P2'")|$(w_sql $C "SELECT outcome FROM payment.webhook_events WHERE event_id = '$ID'")" \
	"1|3|applied: refund Processing -> Completed" "refund.updated succeeded: Completed, and the payment Refunded"
event rf evt_rf_1 refund.failed "{\"id\": \"$RE2\", \"object\": \"refund\", \"amount\": 2500, \"currency\": \"usd\", \"status\": \"failed\", \"payment_intent\": \"$PI2\", \"metadata\": {\"refund_id\": \"$R2\"}}"
deliver "$D/rf" "$(sign "$D/rf" now "$S1")" >/dev/null
is "$(w_sql $C "SELECT \"RefundStatus\" FROM \"PaymentRefunds\" WHERE \"Id\" = '$R2'")|$(w_sql $C "SELECT left(outcome, 8) FROM payment.webhook_events WHERE event_id = 'evt_rf_1'")" \
	"1|ignored:" "refund.failed after succeeded: ignored, a refund moves only once"
P5=$(w_sql $C "SELECT payment.create('$(w_reg 5)', '$(w_user 5)', 50.00, stripe_payment_method => 'pm_card_visa')")
w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P5'" 1 60 >/dev/null
w_http POST /_test/faults "{\"kind\": \"refund_pending\", \"payment_id\": \"$P5\"}" >/dev/null
R3=$(w_sql $C "SELECT payment.refund('$P5', 10.00, 'attendee cannot come', '$(w_user 30)')")
w_wait $C "SELECT stripe_status FROM payment.refund_states WHERE refund_id = '$R3'" pending 60 >/dev/null
RE3=$(w_sql $C "SELECT payment.decrypt(\"EncryptedStripeRefundId\", 'PaymentRefunds.EncryptedStripeRefundId:' || \"Id\") FROM \"PaymentRefunds\" WHERE \"Id\" = '$R3'")
w_http POST "/_test/refunds/$RE3/cancel" '{}' >/dev/null
HRU3=$(stand_event refund.updated "$RE3" "$D/ru3" id)
deliver "$D/ru3" "$HRU3" >/dev/null
is "$(w_sql $C "SELECT \"RefundStatus\" FROM \"PaymentRefunds\" WHERE \"Id\" = '$R3'")|$(w_sql $C "SELECT \"Status\", \"RefundAmountValue\" IS NULL FROM \"Payments\" WHERE \"Id\" = '$P5'")" \
	"2|1|t" "a canceled refund is Failed and frees its amount; the payment stays Completed"

# --- disputes -----------------------------------------------------------------------
DP='{"id": "dp_T1", "object": "dispute", "amount": 2500, "currency": "usd", "reason": "fraudulent", "payment_intent": "'$PI2'", "charge": "ch_unknown"}'
event d1 evt_dp_1 charge.dispute.created "$(obj "$DP" '{"status": "needs_response", "created": 1700000000}')"
event d2 evt_dp_2 charge.dispute.closed "$(obj "$DP" '{"status": "lost"}')"
event d3 evt_dp_3 charge.dispute.updated "$(obj "$DP" '{"status": "under_review"}')"
deliver "$D/d1" "$(sign "$D/d1" now "$S1")" >/dev/null
is "$(w_sql $C "SELECT payment_id = '$P2', amount, currency, reason, status, closed_at IS NULL FROM payment.disputes")" \
	"t|25.00|USD|fraudulent|needs_response|t" "charge.dispute.created: a dispute row for the payment"
deliver "$D/d2" "$(sign "$D/d2" now "$S1")" >/dev/null
deliver "$D/d3" "$(sign "$D/d3" now "$S1")" >/dev/null
is "$(w_sql $C "SELECT count(*), max(status), bool_and(closed_at IS NOT NULL) FROM payment.disputes")|$(w_sql $C "SELECT left(outcome, 8) FROM payment.webhook_events WHERE event_id = 'evt_dp_3'")" \
	"1|lost|t|ignored:" "closed as lost; a late update never reopens it"
is "$(w_sql $C "SELECT disputes, open, lost, disputed_amount, lost_amount FROM payment.disputes_summary")" "1|0|1|25.00|25.00" \
	"payment.disputes_summary shows the lost amount for the reports"
is "$(w_sql $C "SELECT left(stripe_dispute_id, 4) FROM payment.disputes")" "pe1:" "the dispute id is stored sealed"

# --- the log ------------------------------------------------------------------------------
is "$(grep -cE "$S1|$S2|whsec_|$PI1|$RE1" "$PE_WORK/$C.log")" 0 "no webhook secret and no Stripe id in the server log"
is "$(w_sql $C "SELECT count(*) FROM payment.webhook_events WHERE outcome ~ '(pi|re|ch|dp)_[A-Za-z0-9]{6}'")" 0 \
	"no Stripe id in a recorded outcome"
is "$(w_sql $C "SELECT payment.verify_audit()")" t "the audit chains verify"

w_done
