#!/usr/bin/env bash
#
# test/t/vault_rotate_all.sh — issue 17, item 7: key rotation covers every
# sealed value the extension stores.  With the outbox worker and the Stripe
# stand-in, values are sealed under k1 everywhere: client secrets
# (payment.intents), PaymentIntent, refund and saved-method ids, failure
# details, stored webhook payloads, a dispute, and outbox rows still queued.
# The test finds them by scanning every text and jsonb column of every table
# of the extension for "pe1:k1:" (so a table the rotation forgot fails it),
# checks that payment.key_usage counts them all, adds k2, rotates, removes
# k1 from the keyring and reloads; then every function still works:
# payment.client_secret, the worker sending the queued rows (a refund and a
# saved-card payment), a new refund, webhook processing (stored events
# redelivered, a new one applied), and every sealed value decrypts.
# Prints TAP.
#
set -uo pipefail
source "$PE_WORK/repo/test/worker_lib.sh"
trap w_cleanup EXIT

echo "1..16"

C=w_rotall
D="$PE_WORK/$C.files"
mkdir -p "$D"
S1=whsec_$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
SECRETS="$PE_WORK/$C.whsec"
(umask 077; printf '%s\n' "$S1" >"$SECRETS")
KEYRING="$PE_WORK/$C.keyring"
pe_keyring_create "$KEYRING" k1
w_standin_start $C --webhook-secret "$S1"
w_cluster $C "payment_ext.webhook_secret_file = '$SECRETS'"
w_seed $C 10
TOOL="$PE_WORK/repo/test/webhook_tool.py"
psql_c() { "$PE_BIN/psql" -h "$PE_WORK/$C.sock" -p 5432 -U postgres -d postgres -X -qAt "$@"; }

# sealed_under KEY: "table.column:count" of every value of a base table of
# the extension (schemas public and payment) whose text holds a value sealed
# under KEY, anywhere in it (jsonb too)
sealed_under() {
	w_sql $C "SELECT COALESCE(string_agg(t || ':' || n, ',' ORDER BY t), '')
	            FROM (SELECT c.table_schema || '.' || c.table_name || '.' || c.column_name AS t,
	                         (xpath('/row/n/text()', query_to_xml(format(
	                            'SELECT count(*) AS n FROM %I.%I WHERE %I::text LIKE %L',
	                            c.table_schema, c.table_name, c.column_name, '%pe1:$1:%'),
	                            false, true, '')))[1]::text::int AS n
	                    FROM information_schema.columns c
	                    JOIN information_schema.tables b USING (table_schema, table_name)
	                   WHERE b.table_type = 'BASE TABLE' AND c.table_schema IN ('public', 'payment')
	                     AND c.data_type IN ('text', 'jsonb', 'character varying')) s
	           WHERE n > 0"
}
# deliver FILE HEADER: payment.handle_webhook's answer
deliver() { echo "SELECT payment.handle_webhook(pg_read_file('$1'), :'hdr')" | psql_c -v hdr="$2" 2>&1; }
# stand_event TYPE PI FILE: the stand-in's latest event of TYPE for PI into FILE; prints its signature
stand_event() {
	w_http GET "/_test/events?type=$1" | python3 -c "
import json, sys
e = [e for e in json.load(sys.stdin)['events'] if json.loads(e['payload'])['data']['object'].get('id') == '$2'][-1]
open('$3', 'w').write(e['payload'])
print(e['signature'])"
}
pi_of() { w_sql $C "SELECT payment.decrypt(\"EncryptedStripePaymentIntentId\", 'Payments.EncryptedStripePaymentIntentId:' || \"Id\") FROM \"Payments\" WHERE \"Id\" = '$1'"; }

# --- sealed values everywhere, under k1 ---------------------------------------------
# 1. an unconfirmed payment: its client secret for Stripe.js
P1=$(w_sql $C "SELECT payment.create('$(w_reg 1)', '$(w_user 1)', 25.00)")
w_wait $C "SELECT count(*) FROM payment.intents WHERE payment_id = '$P1' AND client_secret IS NOT NULL" 1 30 >/dev/null
# 2. a paid payment, refunded once; its events stored
P2=$(w_sql $C "SELECT payment.create('$(w_reg 2)', '$(w_user 2)', 40.00, stripe_payment_method => 'pm_card_visa')")
w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P2'" 1 30 >/dev/null
R1=$(w_sql $C "SELECT payment.refund('$P2', 10.00, 'Attendee could not come', '$(w_user 10)')")
w_wait $C "SELECT \"RefundStatus\" FROM \"PaymentRefunds\" WHERE \"Id\" = '$R1'" 1 30 >/dev/null
PI2=$(pi_of "$P2")
H=$(stand_event payment_intent.succeeded "$PI2" "$D/p2_succeeded")
E2=$(deliver "$D/p2_succeeded" "$H")
PI1=$(pi_of "$P1")
H=$(stand_event payment_intent.created "$PI1" "$D/p1_created")
E1=$(deliver "$D/p1_created" "$H")
# 3. a dispute of P2
python3 "$TOOL" event evt_rot_dispute charge.dispute.created \
	"{\"id\": \"dp_rot1\", \"object\": \"dispute\", \"amount\": 3000, \"currency\": \"usd\", \"payment_intent\": \"$PI2\", \"reason\": \"fraudulent\", \"status\": \"needs_response\", \"created\": $(date +%s)}" >"$D/dispute"
EDP=$(deliver "$D/dispute" "$(python3 "$TOOL" sign "$D/dispute" now "$S1")")
# 4. a declined payment: its failure details
P3=$(w_sql $C "SELECT payment.create('$(w_reg 3)', '$(w_user 3)', 15.00, stripe_payment_method => 'pm_card_chargeDeclined')")
w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P3'" 2 30 >/dev/null
# 5. a saved card, and a payment with it still queued (due tomorrow)
M4=$(w_sql $C "SELECT payment.save_method('$(w_user 4)', 'pm_card_visa', '4242', 'Visa', 12, 2099)")
P4=$(w_sql $C "SELECT set_config('pe.p4', payment.create('$(w_reg 4)', '$(w_user 4)', 30.00, saved_method_id => '$M4')::text, true);
               UPDATE payment.outbox SET next_attempt_at = now() + interval '1 day' WHERE payment_id = current_setting('pe.p4')::uuid;
               SELECT current_setting('pe.p4')" | tail -1)
# 6. a second refund of P2, queued (its request holds the sealed PaymentIntent id)
R2=$(w_sql $C "SELECT set_config('pe.r2', payment.refund('$P2', 5.00, 'Second partial refund, queued', '$(w_user 10)')::text, true);
               UPDATE payment.outbox SET next_attempt_at = now() + interval '1 day' WHERE refund_id = current_setting('pe.r2')::uuid;
               SELECT current_setting('pe.r2')" | tail -1)

K1_BEFORE=$(sealed_under k1)
echo "# sealed under k1: $K1_BEFORE"
is "$(echo "$K1_BEFORE" | tr ',' '\n' | sed 's/:.*//' | sort | tr '\n' ' ')" \
	"payment.disputes.stripe_dispute_id payment.intents.client_secret payment.outbox.request payment.webhook_events.payload public.PaymentFailures.EncryptedStripeErrorDetails public.PaymentMethods.EncryptedStripePaymentMethodId public.PaymentRefunds.EncryptedStripeRefundId public.Payments.EncryptedStripePaymentIntentId " \
	"values are sealed under k1 in every table that holds sealed values"
is "$(w_sql $C "SELECT sealed_values FROM payment.key_usage WHERE key_id = 'k1'")" \
	"$(w_sql $C "SELECT (SELECT count(*) FROM \"Payments\" WHERE \"EncryptedStripePaymentIntentId\" IS NOT NULL)
	                  + (SELECT count(*) FROM \"PaymentRefunds\" WHERE \"EncryptedStripeRefundId\" IS NOT NULL)
	                  + (SELECT count(*) FROM \"PaymentFailures\" WHERE \"EncryptedStripeErrorDetails\" IS NOT NULL)
	                  + (SELECT count(*) FROM \"PaymentMethods\")
	                  + (SELECT count(*) FROM payment.intents WHERE client_secret IS NOT NULL)
	                  + (SELECT count(*) FROM payment.disputes)
	                  + (SELECT count(*) FROM payment.webhook_events)
	                  + (SELECT count(*) FROM payment.outbox o, jsonb_each_text(o.request) e WHERE e.value LIKE 'pe1:%')")" \
	"payment.key_usage counts every sealed value: client secrets, disputes and webhook payloads too"

# --- k2, rotate, k1 out ------------------------------------------------------------------
printf 'k2 %s\n' "$(pe_keyring_key)" >>"$KEYRING"
w_sql $C "SELECT pg_reload_conf()" >/dev/null
is "$(w_wait $C "SELECT key_id FROM payment.keyring_keys() WHERE newest" k2 30)" k2 "k2 is the newest key after a reload"
N=$(w_sql $C "SELECT payment.rotate_keys()")
is "$(sealed_under k1)|$(w_sql $C "SELECT sealed_values FROM payment.key_usage WHERE key_id = 'k1'")" "|0" \
	"after payment.rotate_keys() ($N rows) no value anywhere is sealed under k1, and payment.key_usage says so"
is "$(w_sql $C "SELECT string_agg(DISTINCT \"TableName\", ',' ORDER BY \"TableName\") FROM \"PaymentAuditLog\" WHERE \"ActionDescription\" LIKE 'key rotation:%'")" \
	"PaymentFailures,PaymentMethods,PaymentRefunds,Payments,payment.disputes,payment.intents,payment.outbox,payment.webhook_events" \
	"the audit log has a rotation summary for each table"
grep -v '^k1 ' "$KEYRING" >"$KEYRING.new" && chmod 600 "$KEYRING.new" && mv "$KEYRING.new" "$KEYRING"
w_sql $C "SELECT pg_reload_conf()" >/dev/null
is "$(w_wait $C "SELECT string_agg(key_id, ',') FROM payment.keyring_keys()" k2 30)" k2 "k1 left the keyring; the configuration is reloaded"

# --- every function still works -----------------------------------------------------------
is "$(w_sql $C "SET app.current_user_id = '$(w_user 1)'; SELECT payment.client_secret('$P1') LIKE '${PI1}_secret_%'")" t \
	"payment.client_secret opens the re-sealed client secret"
is "$(w_sql $C "SELECT count(*) = (SELECT count(*) FROM payment.webhook_events)
                  FROM payment.webhook_events WHERE payment.decrypt(payload, 'payment.webhook_events.payload:' || event_id) LIKE '{%'")|$(w_sql $C "SELECT payment.decrypt(payload, 'payment.webhook_events.payload:' || event_id) = pg_read_file('$D/p2_succeeded') FROM payment.webhook_events WHERE event_id = '$E2'")" \
	"t|t" "every stored webhook payload opens, byte for byte"
is "$(w_sql $C "SELECT payment.decrypt(stripe_dispute_id, 'payment.disputes.stripe_dispute_id:' || id) FROM payment.disputes")|$(w_sql $C "SELECT count(*) FROM \"PaymentFailures\" WHERE payment.decrypt(\"EncryptedStripeErrorDetails\", 'PaymentFailures.EncryptedStripeErrorDetails:' || \"Id\") LIKE '{%'")" \
	"dp_rot1|1" "the dispute id and the failure details open"
is "$(w_sql $C "SELECT count(*) FROM \"Payments\" WHERE payment.decrypt(\"EncryptedStripePaymentIntentId\", 'Payments.EncryptedStripePaymentIntentId:' || \"Id\") LIKE 'pi\_%'")|$(w_sql $C "SELECT count(*) FROM \"PaymentRefunds\" WHERE payment.decrypt(\"EncryptedStripeRefundId\", 'PaymentRefunds.EncryptedStripeRefundId:' || \"Id\") LIKE 're\_%'")|$(w_sql $C "SELECT payment.decrypt(\"EncryptedStripePaymentMethodId\", 'PaymentMethods.EncryptedStripePaymentMethodId:' || \"Id\") FROM \"PaymentMethods\" WHERE \"Id\" = '$M4'")" \
	"2|1|pm_card_visa" "every PaymentIntent, refund and saved-method id opens"
# the queued rows go out now: the worker opens their k2 values
# (an UPDATE does not wake the worker: a lookup queued with them does)
w_sql $C "UPDATE payment.outbox SET next_attempt_at = now() WHERE state = 'pending';
          SELECT payment.reconcile_lookup('$P2')" >/dev/null
P4S=$(w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P4'" 1 30)
[ "$P4S" = 1 ] || w_sql $C "SELECT '# ' || kind || ' ' || state || ' ' || attempts || ' ' || COALESCE(last_error, '') || ' ' || next_attempt_at || ' ' || clock_timestamp() || ' ' || request::text FROM payment.outbox WHERE payment_id = '$P4'; SELECT '# ' || w::text FROM payment.worker_status w"
is "$P4S|$(w_wait $C "SELECT \"RefundStatus\" FROM \"PaymentRefunds\" WHERE \"Id\" = '$R2'" 1 30)" "1|1" \
	"the worker sends the queued rows: the saved-card payment completes, the queued refund completes"
is "$(w_http GET /_test/ledger | w_json "(j['by_payment_id']['$P4']['charged_amount'], j['by_payment_id']['$P2']['refunded_amount'])")" "(3000, 1500)" \
	"at Stripe: 30.00 charged with the saved card, 15.00 refunded of P2"
R3=$(w_sql $C "SELECT payment.refund('$P2', 2.50, 'A refund after the rotation', '$(w_user 10)')")
is "$(w_wait $C "SELECT \"RefundStatus\" FROM \"PaymentRefunds\" WHERE \"Id\" = '$R3'" 1 30)" 1 \
	"a new refund (the PaymentIntent id opened and sealed again for its request) completes"
is "$(deliver "$D/p2_succeeded" "$(stand_event payment_intent.succeeded "$PI2" "$D/p2_succeeded")")|$(deliver "$D/p1_created" "$(stand_event payment_intent.created "$PI1" "$D/p1_created")")" \
	"$E2|$E1" "stored events redelivered: recognised, nothing applied twice"
w_http POST "/_test/payment_intents/$PI1/succeed" '{}' >/dev/null
E5=$(deliver "$D/p1_succ" "$(stand_event payment_intent.succeeded "$PI1" "$D/p1_succ")")
is "$(w_sql $C "SELECT outcome FROM payment.webhook_events WHERE event_id = '$E5'")|$(w_sql $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P1'")" \
	"applied: Pending -> Completed|1" "a new webhook completes the Stripe.js payment (its payload sealed under k2)"
is "$(sealed_under k1)|$(w_sql $C "SELECT key_id || ':' || sealed_values || ':' || in_keyring FROM payment.key_usage ORDER BY key_id")" \
	"|k2:$(w_sql $C "SELECT sealed_values FROM payment.key_usage WHERE key_id = 'k2'"):true" \
	"payment.key_usage: only k2 seals anything, and it is in the keyring"

w_done
