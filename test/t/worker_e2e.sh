#!/usr/bin/env bash
#
# test/t/worker_e2e.sh — the outbox worker end to end: payments and refunds
# made with payment.create/payment.refund reach a Stripe stand-in and come
# back Completed; the unconfirmed flow and payment.client_secret; saved and
# sealed payment methods; wake-up at commit; SIGHUP and SIGTERM; no secret
# in the log; an idle worker uses no CPU.  Prints TAP.
#
set -uo pipefail
source "$PE_WORK/repo/test/worker_lib.sh"
trap w_cleanup EXIT

echo "1..34"

C=w_e2e
w_standin_start $C
w_cluster $C
w_seed $C 40

# --- the worker is there ------------------------------------------------------
is "$(w_wait $C "SELECT running, state FROM payment.worker_status" "t|idle" 60)" "t|idle" \
	"worker_status: running and idle"
is "$(w_sql $C "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'payment_ext outbox worker' AND backend_type = 'payment_ext outbox worker'")" 1 \
	"the worker shows in pg_stat_activity by name"
is "$(w_sql $C "SELECT usename FROM pg_stat_activity WHERE backend_type = 'payment_ext outbox worker'")" postgres \
	"it connects as the bootstrap superuser (its SQL runs as payment_worker)"

# --- payments -----------------------------------------------------------------
w_sql $C "CREATE TABLE t_pay AS
  SELECT i, payment.create(('30000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
                           ('10000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
                           20.00 + i, stripe_payment_method => 'pm_card_visa') AS id
    FROM generate_series(1, 20) i" >/dev/null
is "$(w_wait $C "SELECT count(*) FROM \"Payments\" p JOIN t_pay t ON t.id = p.\"Id\" WHERE p.\"Status\" = 1" 20 60)" 20 \
	"20 payments reach Completed"
is "$(w_sql $C "SELECT count(*) FROM payment.outbox WHERE state = 'done' AND attempts = 1 AND last_http_status = 200 AND completed_at IS NOT NULL")" 20 \
	"their outbox rows are done after one attempt, HTTP 200"
is "$(w_sql $C "SELECT count(*) FROM \"Payments\" p JOIN t_pay t ON t.id = p.\"Id\"
  WHERE payment.decrypt(p.\"EncryptedStripePaymentIntentId\", 'Payments.EncryptedStripePaymentIntentId:' || p.\"Id\") LIKE 'pi\_%'")" 20 \
	"each stores its PaymentIntent id sealed for its row"
LEDGER=$(w_http GET /_test/ledger)
is "$(echo "$LEDGER" | w_json "sorted(set(v['charges'] for v in j['by_payment_id'].values()))")" "[1]" \
	"the stand-in charged each payment exactly once"
is "$(echo "$LEDGER" | w_json "sum(v['charged_amount'] for v in j['by_payment_id'].values())")" \
	"$(w_sql $C "SELECT (sum(\"AmountValue\") * 100)::int FROM \"Payments\" p JOIN t_pay t ON t.id = p.\"Id\"")" \
	"the amounts charged are the payments' amounts in minor units"
REQ=$(w_http GET "/_test/requests?path=/v1/payment_intents&limit=1000")
P1=$(w_sql $C "SELECT id FROM t_pay WHERE i = 1")
is "$(echo "$REQ" | w_json "sorted(set((r['idempotency_key'] == 'pe-' + r['params']['metadata']['payment_id'] + '-pi-1', r['stripe_version'], r['content_type'].split(';')[0]) for r in j['requests'] if r['method'] == 'POST'))")" \
	"[(True, '2023-08-16', 'application/x-www-form-urlencoded')]" \
	"requests carry the row's Idempotency-Key, the fixed Stripe-Version and a form body"
is "$(echo "$REQ" | w_json "[r['params'].get('payment_method') for r in j['requests'] if r['params'].get('metadata', {}).get('payment_id') == '$P1']")" \
	"['pm_card_visa']" "the form parameters arrive as Stripe reads them"

# --- refunds ------------------------------------------------------------------
ADMIN=$(w_user 40)
w_sql $C "CREATE TABLE t_ref AS
  SELECT i, payment.refund(id, CASE WHEN i % 2 = 0 THEN 5.00 ELSE 20.00 + i END,
                           'customer asked for a refund', '$ADMIN') AS id
    FROM t_pay WHERE i <= 6" >/dev/null
is "$(w_wait $C "SELECT count(*) FROM \"PaymentRefunds\" r JOIN t_ref t ON t.id = r.\"Id\" WHERE r.\"RefundStatus\" = 1" 6 60)" 6 \
	"6 refunds reach Completed"
is "$(w_sql $C "SELECT string_agg(DISTINCT p.\"Status\"::text, ',' ORDER BY p.\"Status\"::text) FROM \"Payments\" p JOIN t_pay t ON t.id = p.\"Id\" WHERE t.i <= 6")" "3,4" \
	"their payments are Refunded (3) or PartiallyRefunded (4) through the refund trigger"
is "$(w_sql $C "SELECT count(*) FROM \"PaymentRefunds\" r JOIN t_ref t ON t.id = r.\"Id\"
  WHERE payment.decrypt(r.\"EncryptedStripeRefundId\", 'PaymentRefunds.EncryptedStripeRefundId:' || r.\"Id\") LIKE 're\_%'")" 6 \
	"each refund stores its Refund id sealed for its row"
is "$(w_http GET /_test/ledger | w_json "sorted(set(v['refunds'] for v in j['by_refund_id'].values()))")" "[1]" \
	"the stand-in refunded each refund exactly once"
if [ "$(w_sql $C "SELECT count(*) FROM pg_trigger WHERE tgrelid = '\"Payments\"'::regclass AND tgname ILIKE '%audit%'")" != 0 ]; then
	is "$(w_sql $C "SELECT count(DISTINCT \"PaymentId\") FROM \"PaymentAuditLog\" a JOIN t_pay t ON t.id = a.\"PaymentId\" WHERE a.\"ActionType\" = 'PaymentCompleted'")" 20 \
		"the audit trigger recorded each completion"
else
	echo "ok $((W_N += 1)) # skip the audit trigger is not in this build"
fi

# --- the unconfirmed flow and payment.client_secret ---------------------------
P2=$(w_sql $C "SELECT payment.create('$(w_reg 21)', '$(w_user 21)', 30.00)")
is "$(w_wait $C "SELECT stripe_status FROM payment.intents WHERE payment_id = '$P2'" requires_payment_method 60)" \
	requires_payment_method "without a payment method the PaymentIntent is created unconfirmed"
is "$(w_sql $C "SELECT \"Status\", \"EncryptedStripePaymentIntentId\" IS NOT NULL FROM \"Payments\" WHERE \"Id\" = '$P2'")" "0|t" \
	"the payment stays Pending with its sealed PaymentIntent id"
is "$(w_sql $C "SET app.current_user_id = '$(w_user 21)'; SELECT payment.client_secret('$P2') ~ '^pi_.*_secret_'")" t \
	"the paying user gets the client secret"
is "$(w_sql $C "SELECT client_secret LIKE 'pe1:%' FROM payment.intents WHERE payment_id = '$P2'")" t \
	"the client secret is stored sealed"
is "$(w_sql $C "CREATE ROLE app_session LOGIN IN ROLE payment_app; SET ROLE app_session; SET app.current_user_id = '$(w_user 22)';
  DO \$\$ BEGIN PERFORM payment.client_secret('$P2'); RAISE 'no error';
  EXCEPTION WHEN insufficient_privilege THEN RAISE NOTICE 'refused'; END \$\$; SELECT 'refused'" 2>/dev/null)" refused \
	"another user gets 42501"
is "$(w_sql $C "SET ROLE app_session; SET app.user_role = 'Admin'; SELECT payment.client_secret('$P2') IS NOT NULL")" t \
	"an Admin (app.user_role) gets it"
P3=$(w_sql $C "SELECT payment.create('$(w_reg 23)', '$(w_user 23)', 30.00, stripe_payment_method => 'pm_card_visa')")
w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P3'" 1 60 >/dev/null
is "$(w_sql $C "SET app.current_user_id = '$(w_user 23)'; SELECT payment.client_secret('$(w_sql $C "SELECT gen_random_uuid()")') IS NULL" 2>&1 | grep -c 'does not exist')" 1 \
	"an unknown payment is an error, not a NULL"

# --- saved and sealed payment methods ------------------------------------------
M=$(w_sql $C "SELECT payment.save_method('$(w_user 24)', 'pm_card_mastercard', '4444', 'MasterCard', 12, 2099)")
P4=$(w_sql $C "SELECT payment.create('$(w_reg 24)', '$(w_user 24)', 31.00, method_type => 0, saved_method_id => '$M')")
is "$(w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P4'" 1 60)" 1 \
	"a payment with a saved method completes"
is "$(w_http GET "/_test/requests?path=/v1/payment_intents" | w_json "[(r['params'].get('payment_method'), 'saved_method_id' in r['params']) for r in j['requests'] if r['params'].get('metadata', {}).get('payment_id') == '$P4']")" \
	"[('pm_card_mastercard', False)]" "the saved method is opened and sent as payment_method"
P5=$(w_sql $C "SELECT gen_random_uuid()")
w_sql $C "BEGIN;
INSERT INTO \"Payments\" (\"Id\", \"EventRegistrationId\", \"UserId\", \"AmountValue\", \"PaymentMethodType\")
  VALUES ('$P5', '$(w_reg 25)', '$(w_user 25)', 33.00, 1);
INSERT INTO payment.outbox (kind, payment_id, request, idempotency_key)
  VALUES ('payment_intent.create', '$P5', jsonb_build_object('amount', '3300', 'currency', 'usd', 'confirm', 'true',
          'automatic_payment_methods[enabled]', 'true', 'automatic_payment_methods[allow_redirects]', 'never',
          'metadata[payment_id]', '$P5',
          'payment_method', payment.encrypt('pm_card_amex', 'outbox.request.payment_method:pe-$P5-pi-1')), 'pe-$P5-pi-1');
COMMIT" >/dev/null
is "$(w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P5'" 1 60)" 1 \
	"a payment with a sealed payment_method in its request completes"
is "$(w_http GET "/_test/requests?path=/v1/payment_intents" | w_json "[r['params'].get('payment_method') for r in j['requests'] if r['params'].get('metadata', {}).get('payment_id') == '$P5']")" \
	"['pm_card_amex']" "the sealed value is opened for the request only"

# --- wake-up at commit ------------------------------------------------------------
# Not "done within 1 s" (a loaded machine can take longer than the 5 s
# fallback poll): the worker records when its latch was set (last_wake), and
# nothing but a commit that added outbox rows sets it here.  For three
# payments, each made while the worker is idle: the worker was woken after
# the commit and before it claimed the row.
WOKEN=0
for i in 26 27 28; do
	w_wait $C "SELECT state, in_flight FROM payment.worker_status" "idle|0" 60 >/dev/null
	P=$(w_sql $C "SELECT payment.create('$(w_reg $i)', '$(w_user $i)', 20.00, stripe_payment_method => 'pm_card_visa')")
	w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P'" 1 60 >/dev/null &&
		[ "$(w_sql $C "SELECT w.last_wake >= o.created_at AND w.last_wake <= o.claimed_at
		                 FROM payment.worker_status w, payment.outbox o WHERE o.payment_id = '$P'")" = t ] &&
		WOKEN=$((WOKEN + 1))
done
is "$WOKEN" 3 "a commit wakes the idle worker: each payment claimed after a wake-up that followed its commit"
is "$(w_sql $C "SELECT last_wake IS NOT NULL FROM payment.worker_status")" t "worker_status shows the last wake-up"

# --- an idle worker uses no CPU -------------------------------------------------------
WPID=$(w_worker_pid $C)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
w_wait $C "SELECT state, in_flight FROM payment.worker_status" "idle|0" 60 >/dev/null
C0=$(cpu "$WPID")
sleep 3
C1=$(cpu "$WPID")
ok $(( (C1 - C0) <= 2 ? 0 : 1 )) "idle for 3 s, the worker used $((C1 - C0)) clock ticks (at most 2)"

# --- SIGHUP, SIGTERM ---------------------------------------------------------------------
w_sql $C "ALTER SYSTEM SET payment_ext.max_in_flight = 8" >/dev/null
w_sql $C "SELECT pg_reload_conf()" >/dev/null
P=$(w_sql $C "SELECT payment.create('$(w_reg 29)', '$(w_user 29)', 20.00, stripe_payment_method => 'pm_card_visa')")
is "$(w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P'" 1 60)" 1 "after SIGHUP the worker still drains"
is "$(w_worker_pid $C)" "$WPID" "SIGHUP did not restart it"
w_sql $C "SELECT pg_terminate_backend($WPID)" >/dev/null
NEWPID=$(w_wait $C "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'payment_ext outbox worker' AND pid <> $WPID" 1 60)
is "$NEWPID" 1 "after SIGTERM the worker comes back by itself (bgw_restart_time)"
P=$(w_sql $C "SELECT payment.create('$(w_reg 30)', '$(w_user 30)', 20.00, stripe_payment_method => 'pm_card_visa')")
is "$(w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P'" 1 60)" 1 "and drains again"

# --- no secrets in the log -------------------------------------------------------------
KEY=$(cat "$PE_WORK/$C.stripe_key")
ok $(grep -qF -e "$KEY" -e "Bearer" -e "pm_card" -e "_secret_" "$PE_WORK/$C.log"; [ $? -ne 0 ]; echo $?) \
	"the server log holds no API key, Authorization header, payment method or client secret"

w_done
