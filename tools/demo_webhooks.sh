#!/usr/bin/env bash
#
# tools/demo_webhooks.sh — the second part of `tools/run demo`: a 3-D Secure
# payment completed by a signed webhook, and a refund made in Stripe's
# Dashboard appearing in the database.  Runs after tools/demo.sql in the
# "main" demo cluster (PE_WORK, PE_BIN, PE_STANDIN_URL from tools/run): points
# the outbox worker at database "demo", gives the cluster and the stand-in
# one webhook signing secret, and delivers the stand-in's signed events with
# payment.handle_webhook as the application's endpoint would.
#
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

sql() { "$PE_BIN/psql" -h "$PE_WORK/main.sock" -p 5432 -U postgres -d demo -X -v ON_ERROR_STOP=1 "$@"; }
val() { sql -qAt -c "$1"; }
http() {
	python3 - "$PE_STANDIN_URL" "$@" <<'EOF'
import sys, urllib.request
url, method, path = sys.argv[1], sys.argv[2], sys.argv[3]
data = sys.argv[4].encode() if len(sys.argv) > 4 else None
req = urllib.request.Request(url + path, data=data, method=method, headers={"Content-Type": "application/json"})
sys.stdout.write(urllib.request.urlopen(req, timeout=30).read().decode())
EOF
}
# wait_for SQL EXPECTED: poll with a 30 s deadline
wait_for() {
	local deadline=$((SECONDS + 30))
	until [ "$(val "$1")" = "$2" ]; do
		[ $SECONDS -lt $deadline ] || { echo "timed out waiting for: $1" >&2; exit 1; }
		sleep 0.1
	done
}
# deliver TYPE KEY VALUE: the stand-in's latest signed event of TYPE whose
# data.object.KEY is VALUE, delivered to payment.handle_webhook
deliver() {
	local f="$PE_WORK/demo-event.json" sig
	sig=$(http GET "/_test/events?type=$1" | python3 -c "
import json, sys
j = json.load(sys.stdin)
e = [e for e in j['events'] if json.loads(e['payload'])['data']['object'].get('$2') == '$3'][-1]
open('$f', 'w').write(e['payload'])
print(e['signature'])")
	sql -qAt -v sig="$sig" <<EOF
SELECT 'delivered ' || payment.handle_webhook(pg_read_file('$f'), :'sig') || ' ($1)';
EOF
}

echo '== webhooks: one signing secret for the stand-in and the cluster; the worker drains "demo"'
SECRET=whsec_$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
(umask 077; printf '%s\n' "$SECRET" >"$PE_WORK/demo.whsec")
http POST /_test/config "{\"webhook_secret\": \"$SECRET\"}" >/dev/null
sql -q <<EOF
ALTER SYSTEM SET payment_ext.webhook_secret_file = '$PE_WORK/demo.whsec';
ALTER SYSTEM SET payment_ext.database = 'demo';
SELECT pg_reload_conf();
EOF
wait_for "SELECT running AND state = 'idle' FROM payment.worker_status WHERE pid = (SELECT pid FROM pg_stat_activity WHERE backend_type = 'payment_ext outbox worker' AND datname = 'demo')" t
sql -qc "INSERT INTO \"Users\" (\"Id\", \"SceneName\", \"Email\") VALUES ('a0000000-0000-0000-0000-0000000000d5', 'Rowan', 'rowan@example.org');
         INSERT INTO \"EventRegistrations\" (\"Id\", \"EventId\", \"UserId\", \"Tier\")
         VALUES ('b0000000-0000-0000-0000-0000000000d5', 'e0000000-0000-0000-0000-000000000001', 'a0000000-0000-0000-0000-0000000000d5', 'standard')"

echo "== a card payment: quoted from the event's tier at a 25 % sliding-scale discount, charged by the worker"
sql -c "SELECT payment.quote('e0000000-0000-0000-0000-000000000001', 'standard', 25) AS quoted"
P0=$(val "SELECT payment.create('b0000000-0000-0000-0000-000000000001', 'a0000000-0000-0000-0000-000000000001', 40.00, discount_pct => 25, stripe_payment_method => 'pm_card_visa', idempotency_key => 'demo-checkout-1')")
wait_for "SELECT payment.status_name(\"Status\") FROM \"Payments\" WHERE \"Id\" = '$P0'" Completed
sql -c "SELECT payment.status_name(\"Status\") AS status, \"AmountValue\", \"SlidingScalePercentage\", \"EncryptedStripePaymentIntentId\" LIKE 'pe1:%' AS intent_sealed FROM \"Payments\" WHERE \"Id\" = '$P0'"
echo '== a double click: the same idempotency key returns the same payment'
sql -c "SELECT payment.create('b0000000-0000-0000-0000-000000000001', 'a0000000-0000-0000-0000-000000000001', 40.00, discount_pct => 25, stripe_payment_method => 'pm_card_visa', idempotency_key => 'demo-checkout-1') = '$P0' AS same_payment"
echo '== an administrator refunds 5.00; the worker sends it to Stripe'
R0=$(val "SELECT payment.refund('$P0', 5.00, 'Arrived late, partial refund agreed', 'a0000000-0000-0000-0000-000000000001', 'demo-refund-1')")
wait_for "SELECT payment.refund_status_name(\"RefundStatus\") FROM \"PaymentRefunds\" WHERE \"Id\" = '$R0'" Completed
sql -c "SELECT payment.status_name(\"Status\") AS status, \"AmountValue\", \"RefundAmountValue\" FROM \"Payments\" WHERE \"Id\" = '$P0'"
sql -c "SELECT kind, state, attempts, last_http_status FROM payment.outbox WHERE payment_id = '$P0' ORDER BY id"
echo "== the Stripe stand-in's ledger for it: charged once, refunded once"
python3 - "$PE_STANDIN_URL" "$P0" <<'PY'
import json, sys, urllib.request
ledger = json.load(urllib.request.urlopen(sys.argv[1] + "/_test/ledger"))
p = ledger["by_payment_id"].get(sys.argv[2], {})
print(" charges: %s (%s cents), refunds: %s (%s cents)" % (p.get("charges"), p.get("charged_amount"),
                                                           p.get("refunds"), p.get("refunded_amount")))
PY

echo '== a card that needs 3-D Secure: the worker confirms it, Stripe answers requires_action'
P=$(val "SELECT payment.create('b0000000-0000-0000-0000-0000000000d5', 'a0000000-0000-0000-0000-0000000000d5', 40.00, discount_pct => 10, stripe_payment_method => 'pm_card_threeDSecure2Required')")
wait_for "SELECT stripe_status FROM payment.intents WHERE payment_id = '$P'" requires_action
sql -c "SELECT payment.status_name(p.\"Status\") AS status, p.\"AmountValue\", i.stripe_status, i.next_action, i.source
          FROM \"Payments\" p JOIN payment.intents i ON i.payment_id = p.\"Id\" WHERE p.\"Id\" = '$P'"
PI=$(val "SELECT payment.decrypt(\"EncryptedStripePaymentIntentId\", 'Payments.EncryptedStripePaymentIntentId:' || \"Id\") FROM \"Payments\" WHERE \"Id\" = '$P'")

echo '== the customer completes 3-D Secure in Stripe.js; Stripe sends payment_intent.succeeded'
http POST "/_test/payment_intents/$PI/succeed" '{}' >/dev/null
deliver payment_intent.succeeded id "$PI"
sql -c "SELECT payment.status_name(\"Status\") AS status, \"ProcessedAt\" IS NOT NULL AS processed FROM \"Payments\" WHERE \"Id\" = '$P'"
sql -c "SELECT type, outcome, applied_at IS NOT NULL AS applied FROM payment.webhook_events WHERE payment_id = '$P' ORDER BY received_at"
echo '== Stripe delivers it again: same answer, nothing changes'
deliver payment_intent.succeeded id "$PI"
sql -c "SELECT count(*) AS events_recorded FROM payment.webhook_events WHERE payment_id = '$P'"

echo '== an organiser refunds 10.00 in the Stripe Dashboard; Stripe sends refund.created and charge.refunded'
http POST /_test/dashboard_refund "{\"payment_intent\": \"$PI\", \"amount\": 1000, \"reason\": \"requested_by_customer\"}" >/dev/null
deliver refund.created payment_intent "$PI"
deliver charge.refunded payment_intent "$PI"
sql -c "SELECT \"RefundAmountValue\", payment.refund_status_name(\"RefundStatus\") AS status, \"RefundReason\", u.\"SceneName\" AS processed_by
          FROM \"PaymentRefunds\" r JOIN \"Users\" u ON u.\"Id\" = r.\"ProcessedByUserId\" WHERE \"OriginalPaymentId\" = '$P'"
sql -c "SELECT payment.status_name(\"Status\") AS status, \"AmountValue\", \"RefundAmountValue\" FROM \"Payments\" WHERE \"Id\" = '$P'"
sql -c "SELECT \"ActionType\", \"ActionDescription\" FROM \"PaymentAuditLog\" WHERE \"PaymentId\" = '$P' ORDER BY \"ChainSeq\""
echo '== the database and Stripe agree (payment.reconcile is empty for it)'
sql -c "SELECT count(*) AS disagreements FROM payment.reconcile WHERE payment_id = '$P'"
echo '== a forged delivery is refused (PE010) and changes nothing'
sql -q -v VERBOSITY=sqlstate -c "SELECT payment.handle_webhook('{\"id\": \"evt_forged\", \"type\": \"payment_intent.succeeded\"}', 't=$(date +%s),v1=$(printf '0%.0s' $(seq 64))')" || true
