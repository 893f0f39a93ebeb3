#!/usr/bin/env bash
#
# test/t/webhook_settle.sh — the settler in the outbox worker: a charge whose
# answer was lost (every answer dropped after Stripe charged) is found by a
# search on metadata[payment_id] and completes the payment once; an
# abandoned unconfirmed payment is looked up, canceled at Stripe and marked
# Failed (code expired), which frees its registration; payment.reconcile
# and payment.reconcile_lookup.  Prints TAP.
#
set -uo pipefail
source "$PE_WORK/repo/test/worker_lib.sh"
trap w_cleanup EXIT

echo "1..13"

C=w_settle
w_standin_start $C
# a short idempotency window and search lag, so that a create whose every
# answer is lost is settled within the test (doc/webhooks-and-settling.md)
w_cluster $C "payment_ext.pending_ttl = '3s'" "payment_ext.idempotency_window = '5s'" \
	"payment_ext.search_lag = '3s'"
w_seed $C 10

# --- a charge whose answer never arrived ---------------------------------------
PID=$(w_sql $C "SELECT gen_random_uuid()")
w_http POST /_test/faults "{\"kind\": \"drop_after\", \"method\": \"POST\", \"path\": \"/v1/payment_intents\", \"payment_id\": \"$PID\", \"count\": 100}" >/dev/null
w_sql $C "INSERT INTO \"Payments\" (\"Id\", \"EventRegistrationId\", \"UserId\", \"AmountValue\", \"PaymentMethodType\")
          VALUES ('$PID', '$(w_reg 1)', '$(w_user 1)', 28.00, 1);
          INSERT INTO payment.outbox (kind, payment_id, request, idempotency_key)
          VALUES ('payment_intent.create', '$PID',
                  jsonb_build_object('amount', '2800', 'currency', 'usd', 'confirm', 'true',
                                     'payment_method', 'pm_card_visa',
                                     'automatic_payment_methods[enabled]', 'true',
                                     'automatic_payment_methods[allow_redirects]', 'never',
                                     'metadata[payment_id]', '$PID'),
                  'pe-$PID-pi-1')" >/dev/null
is "$(w_wait $C "SELECT state FROM payment.outbox WHERE idempotency_key = 'pe-$PID-pi-1'" dead 60)" dead \
	"every answer of the create request was lost: the row is dead once payment_ext.idempotency_window closes"
is "$(w_http GET /_test/ledger | w_json "j['by_payment_id']['$PID']['charges']")" 1 \
	"while Stripe charged the card once"
is "$(w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$PID'" 1 60)" 1 \
	"the settler looks the payment up and completes it"
is "$(w_sql $C "SELECT string_agg(kind || ':' || state, ',' ORDER BY id) FROM payment.outbox WHERE payment_id = '$PID'")" \
	"payment_intent.create:dead,payment_intent.search:done" "by a search on metadata[payment_id], never by resending the create"
is "$(w_sql $C "SELECT s.created_at >= d.completed_at + interval '3 seconds'
                  FROM payment.outbox d JOIN payment.outbox s USING (payment_id)
                 WHERE d.payment_id = '$PID' AND d.kind = 'payment_intent.create' AND s.kind = 'payment_intent.search'")" t \
	"the search waited payment_ext.search_lag (3 s) after the create went dead: Stripe's search index lags"
is "$(w_http GET /_test/ledger | w_json "(j['by_payment_id']['$PID']['charges'], j['by_payment_id']['$PID']['charged_amount'])")" "(1, 2800)" \
	"the ledger: charged once, 28.00"
is "$(w_sql $C "SELECT payment.decrypt(\"EncryptedStripePaymentIntentId\", 'Payments.EncryptedStripePaymentIntentId:' || \"Id\") LIKE 'pi\_%' FROM \"Payments\" WHERE \"Id\" = '$PID'")|$(w_sql $C "SELECT stripe_status, source FROM payment.intents WHERE payment_id = '$PID'")" \
	"t|succeeded|lookup" "the PaymentIntent id found is stored sealed, its state recorded as a lookup"

# --- an abandoned checkout expires and frees its registration ---------------------
P2=$(w_sql $C "SELECT payment.create('$(w_reg 2)', '$(w_user 2)', 30.00)")
is "$(w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P2'" 2 60)" 2 \
	"an unconfirmed payment left Pending past pending_ttl becomes Failed"
is "$(w_sql $C "SELECT \"FailureCode\" FROM \"PaymentFailures\" WHERE \"PaymentId\" = '$P2'")|$(w_sql $C "SELECT string_agg(kind || ':' || state, ',' ORDER BY id) FROM payment.outbox WHERE payment_id = '$P2'")" \
	"expired|payment_intent.create:done,payment_intent.retrieve:done,payment_intent.cancel:done" \
	"with code expired, after a lookup and a cancellation"
PI2=$(w_sql $C "SELECT payment.decrypt(\"EncryptedStripePaymentIntentId\", 'Payments.EncryptedStripePaymentIntentId:' || \"Id\") FROM \"Payments\" WHERE \"Id\" = '$P2'")
is "$(w_http GET "/_test/requests?path=/v1/payment_intents/$PI2/cancel" | w_json "[(r['status'], r['params'].get('cancellation_reason')) for r in j['requests']]")" \
	"[(200, 'abandoned')]" "the PaymentIntent was canceled at Stripe (abandoned)"
# made and looked at in one transaction: pending_ttl is 3 s, and on a loaded
# machine a separate look could come after the settler expired this one too
is "$(w_sql $C "SELECT set_config('t.p3', payment.create('$(w_reg 2)', '$(w_user 2)', 30.00)::text, false) IS NOT NULL;
                SELECT count(*) FROM \"Payments\" WHERE \"Id\" = current_setting('t.p3')::uuid AND \"Status\" = 0" 2>&1 | tail -1)" 1 \
	"the registration is free: a new payment for it is accepted"

# --- payment.reconcile and reconcile_lookup --------------------------------------------
w_sql $C "UPDATE payment.intents SET stripe_status = 'requires_payment_method' WHERE payment_id = '$PID'" >/dev/null
is "$(w_sql $C "SELECT database_state, stripe_state FROM payment.reconcile WHERE payment_id = '$PID'")" "Completed|requires_payment_method" \
	"payment.reconcile lists a payment whose recorded Stripe state disagrees"
w_sql $C "SELECT payment.reconcile_all()" >/dev/null
is "$(w_wait $C "SELECT count(*) FROM payment.reconcile WHERE payment_id = '$PID'" 0 60)" 0 \
	"payment.reconcile_all looks it up again and the agreement is restored"

w_done
