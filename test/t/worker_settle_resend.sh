#!/usr/bin/env bash
#
# test/t/worker_settle_resend.sh — issue 17 items 3 and 5: when the worker
# may give up on a request, and what settling concludes.
#   - a transient error while building requests (the keyring file briefly
#     unreadable during a reload) sends every claimed row back to pending
#     with a backoff, none dead; once the keyring reads again they complete;
#   - a request that can never be built (a sealed value that no key opens)
#     is dead;
#   - a dead payment_intent.create whose idempotency key is still inside
#     payment_ext.idempotency_window is settled by sending the same request
#     again with the same key, not by a search: Completed, charged once;
#   - an empty search (payment.reconcile_lookup) while the payment's create
#     is still on its way never fails the payment.
# Prints TAP.
#
set -uo pipefail
source "$PE_WORK/repo/test/worker_lib.sh"
trap w_cleanup EXIT

echo "1..11"

C=w_resend
w_standin_start $C
w_cluster $C "payment_ext.pending_ttl = '3s'" "payment_ext.retry_base_ms = 100" "payment_ext.retry_max_ms = 500"
w_seed $C 21
KEYRING="$PE_WORK/$C.keyring"

status() { w_sql $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$1'"; }
charges() { w_http GET /_test/ledger | w_json "j['by_payment_id'].get('$1', {}).get('charges', 0)"; }
kinds() { w_sql $C "SELECT string_agg(kind || ':' || state, ',' ORDER BY id) FROM payment.outbox WHERE payment_id = '$1'"; }

# --- item 5: the keyring briefly unreadable -------------------------------------------------
w_sql $C "SELECT count(payment.create(('30000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
                                     ('10000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
                                     25.00, stripe_payment_method => 'pm_card_visa'))
            FROM generate_series(1, 10) i" >/dev/null
w_wait $C "SELECT count(*) FROM \"Payments\" WHERE \"Status\" = 1" 10 30 >/dev/null
# ten more, not yet due; then the keyring becomes unreadable (mode 0644 is
# refused) and the configuration is reloaded: the worker's keyring is read
# again at its next use, and fails
w_sql $C "BEGIN;
CREATE TEMP TABLE t_new AS SELECT payment.create(('30000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
                                                 ('10000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
                                                 25.00, stripe_payment_method => 'pm_card_visa') AS id
  FROM generate_series(11, 18) i;
UPDATE payment.outbox SET next_attempt_at = now() + interval '1 hour' WHERE payment_id IN (SELECT id FROM t_new);
COMMIT" >/dev/null
chmod 0644 "$KEYRING"
w_sql $C "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
w_sql $C "UPDATE payment.outbox SET next_attempt_at = now() WHERE state = 'pending'" >/dev/null
w_sql $C "SELECT pg_reload_conf()" >/dev/null
is "$(w_wait $C "SELECT count(*) FROM payment.outbox WHERE state = 'pending' AND attempts >= 2
                   AND last_error LIKE 'the request could not be built, tried again later:%'" 8 30)" 8 \
	"a keyring that cannot be read while building: all 8 claimed rows go back to pending, tried again with a backoff"
is "$(w_sql $C "SELECT count(*) FROM payment.outbox WHERE state = 'dead'")|$(w_sql $C "SELECT count(*) FROM payment.outbox WHERE state = 'pending' AND key_sent_at IS NOT NULL")" "0|0" \
	"  none dead, and none has started its idempotency key's window (nothing was sent)"
chmod 0600 "$KEYRING"
w_sql $C "SELECT pg_reload_conf()" >/dev/null
is "$(w_wait $C "SELECT count(*) FROM \"Payments\" WHERE \"Status\" = 1" 18 30)" 18 \
	"  the keyring reads again: all 8 Completed"
is "$(w_http GET /_test/ledger | w_json "sorted(set(v['charges'] for v in j['by_payment_id'].values()))")" "[1]" \
	"  each charged once"

# --- a request that can never be built -------------------------------------------------------
P=$(w_sql $C "BEGIN;
SELECT set_config('t.p', payment.create('$(w_reg 19)', '$(w_user 19)', 25.00, stripe_payment_method => 'pm_card_visa')::text, true);
UPDATE payment.outbox SET request = jsonb_set(request, '{payment_method}', to_jsonb('pe1:k1:' || repeat('A', 60)))
 WHERE payment_id = current_setting('t.p')::uuid;
COMMIT")
is "$(w_wait $C "SELECT state || ' ' || (last_error LIKE 'the request could not be built: sealed value does not open%') FROM payment.outbox WHERE payment_id = '$P' AND kind = 'payment_intent.create'" "dead true" 30)" "dead true" \
	"a sealed value that no key opens: the row is dead at once"

# --- item 3: a dead create inside the window is sent again with its key ------------------------
P2=$(w_sql $C "SELECT gen_random_uuid()")
w_http POST /_test/faults "{\"kind\": \"503\", \"should_retry\": false, \"path\": \"/v1/payment_intents\", \"payment_id\": \"$P2\"}" >/dev/null
w_sql $C "INSERT INTO \"Payments\" (\"Id\", \"EventRegistrationId\", \"UserId\", \"AmountValue\", \"PaymentMethodType\")
          VALUES ('$P2', '$(w_reg 20)', '$(w_user 20)', 25.00, 1);
          INSERT INTO payment.outbox (kind, payment_id, request, idempotency_key)
          VALUES ('payment_intent.create', '$P2',
                  jsonb_build_object('amount', '2500', 'currency', 'usd', 'confirm', 'true',
                                     'payment_method', 'pm_card_visa',
                                     'automatic_payment_methods[enabled]', 'true',
                                     'automatic_payment_methods[allow_redirects]', 'never',
                                     'metadata[payment_id]', '$P2'),
                  'pe-$P2-pi-1')" >/dev/null
is "$(w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P2'" 1 30)" 1 \
	"a create dead at once (503, Stripe-Should-Retry: false) inside the idempotency window: the settler sends it again, Completed"
is "$(kinds "$P2")|$(charges "$P2")" "payment_intent.create:done|1" \
	"  the same row with the same key, no search; charged once"
is "$(w_sql $C "SELECT attempts FROM payment.outbox WHERE payment_id = '$P2'")" 2 \
	"  two attempts: the one that died and the settler's"
is "$(w_http GET "/_test/requests?path=/v1/payment_intents" | w_json "sorted(set(r['idempotency_key'] for r in j['requests'] if r['method'] == 'POST' and r['params'].get('metadata', {}).get('payment_id') == '$P2'))")" \
	"['pe-$P2-pi-1']" "  every POST carried the one key"

# --- item 3: an empty search while the create is still on its way ---------------------------------
P3=$(w_sql $C "BEGIN;
SELECT set_config('t.p', payment.create('$(w_reg 21)', '$(w_user 21)', 25.00, stripe_payment_method => 'pm_card_visa')::text, true);
UPDATE payment.outbox SET next_attempt_at = now() + interval '1 hour' WHERE payment_id = current_setting('t.p')::uuid;
COMMIT")
w_http POST /_test/faults "{\"kind\": \"503\", \"rate\": 1, \"path\": \"/v1/payment_intents\", \"method\": \"POST\", \"payment_id\": \"$P3\"}" >/dev/null
w_sql $C "UPDATE payment.outbox SET next_attempt_at = now() WHERE payment_id = '$P3'; SELECT pg_reload_conf()" >/dev/null
w_wait $C "SELECT attempts >= 2 FROM payment.outbox WHERE payment_id = '$P3' AND kind = 'payment_intent.create'" t 30 >/dev/null
w_sql $C "SELECT payment.reconcile_lookup('$P3')" >/dev/null
is "$(w_wait $C "SELECT state || ' ' || (last_error LIKE 'no PaymentIntent found yet%') FROM payment.outbox WHERE payment_id = '$P3' AND kind = 'payment_intent.search'" "done true" 30)|$(status "$P3")" \
	"done true|0" \
	"an empty search while the create is still retrying: the payment stays Pending (Stripe's search lags)"
w_http POST /_test/faults/clear >/dev/null
is "$(w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P3'" 1 30)|$(charges "$P3")" "1|1" \
	"  Stripe answers the create again: Completed, charged once"

w_done
