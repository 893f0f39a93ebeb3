#!/usr/bin/env bash
#
# test/t/multibyte_fields.sh — text from Stripe that is longer than its
# column is cut on a character boundary, never inside a multi-byte
# character (issue 16, item 8): a decline code of 60 characters ('a' then
# 59 'é', or 60 emoji) reaches the 50-character "FailureCode" through
# payment.handle_webhook and through the outbox worker, long messages and
# an overlong api_version and dispute text through the webhook, and a long
# error through the worker's status.  Every stored value is valid UTF-8
# (convert_to() checks it) with the length its column allows, and the
# deliveries succeed.  Prints TAP.
#
set -uo pipefail
source "$PE_WORK/repo/test/worker_lib.sh"
trap w_cleanup EXIT

echo "1..14"

C=w_mb
S1=whsec_$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
SECRETS="$PE_WORK/$C.whsec"
(umask 077; printf '%s\n' "$S1" >"$SECRETS")
TOOL="$PE_WORK/repo/test/webhook_tool.py"
D="$PE_WORK/$C.events"
mkdir -p "$D"

w_standin_start $C --webhook-secret "$S1"
w_cluster $C "payment_ext.webhook_secret_file = '$SECRETS'" "payment_ext.max_attempts = 3"
w_seed $C 10

q() {
	"$PE_BIN/psql" -h "$PE_WORK/$C.sock" -p 5432 -U postgres -d postgres \
		-X -qAt -v ON_ERROR_STOP=1 -v VERBOSITY=sqlstate "$@" 2>&1 | sed -E 's/^(psql:[^E]*)?ERROR:  /ERROR: /'
}
deliver() {
	echo "SELECT payment.handle_webhook(pg_read_file('$1'), :'hdr')" | q -v hdr="$2"
}
sign() { python3 "$TOOL" sign "$@"; }
# valid SQL-EXPR: "t" when the text value is valid UTF-8 (convert_to raises otherwise)
valid() { echo "SELECT bool_and(convert_from(convert_to(v, 'UTF8'), 'UTF8') = v) FROM ($1) s(v)" | q; }

E59=$(python3 -c "print('é' * 59)")
CODE_E="a$E59"                                       # 1 + 118 bytes: a byte cut at 50 splits an 'é'
CODE_EMOJI=$(python3 -c "print('\U0001F600' * 60)")  # 4 bytes each
MSG_EMOJI=$(python3 -c "print('\U0001F4B3' * 300)")

# a payment whose PaymentIntent exists (unconfirmed), and its intent id
pay() {
	local p
	p=$(w_sql $C "SELECT payment.create('$(w_reg "$1")', '$(w_user "$1")', 25.00)")
	w_wait $C "SELECT stripe_status FROM payment.intents WHERE payment_id = '$p'" requires_payment_method 30 >/dev/null
	echo "$p"
}
pi_of() {
	w_sql $C "SELECT payment.decrypt(\"EncryptedStripePaymentIntentId\", 'Payments.EncryptedStripePaymentIntentId:' || \"Id\") FROM \"Payments\" WHERE \"Id\" = '$1'"
}
# failed_event FILE EVENT-ID PI PAYMENT CODE MESSAGE [API-VERSION]
failed_event() {
	python3 - "$@" <<'EOF'
import json, sys, time
path, ev_id, pi, payment, code, message = sys.argv[1:7]
api = sys.argv[7] if len(sys.argv) > 7 else "2023-08-16"
obj = {"id": pi, "object": "payment_intent", "amount": 2500, "currency": "usd",
       "status": "requires_payment_method", "metadata": {"payment_id": payment},
       "last_payment_error": {"type": "card_error", "code": "card_declined",
                              "decline_code": code, "message": message}}
ev = {"id": ev_id, "object": "event", "api_version": api, "created": int(time.time()),
      "data": {"object": obj}, "livemode": False, "pending_webhooks": 1,
      "request": {"id": None, "idempotency_key": None}, "type": "payment_intent.payment_failed"}
open(path, "w", encoding="utf-8").write(json.dumps(ev, ensure_ascii=False, indent=2))
EOF
}

# --- through payment.handle_webhook ----------------------------------------------
P1=$(pay 1)
failed_event "$D/f1" evt_mb_1 "$(pi_of "$P1")" "$P1" "$CODE_E" "$MSG_EMOJI" "v-$(python3 -c "print('é' * 80)")"
is "$(deliver "$D/f1" "$(sign "$D/f1" now "$S1")")" evt_mb_1 \
	"a 60-character decline code of 'é's: the delivery succeeds"
is "$(w_sql $C "SELECT \"Status\", char_length(\"FailureCode\"), \"FailureCode\" = left('$CODE_E', 50) FROM \"Payments\" p JOIN \"PaymentFailures\" f ON f.\"PaymentId\" = p.\"Id\" WHERE p.\"Id\" = '$P1'")" \
	"2|50|t" "the payment failed; \"FailureCode\" holds its first 50 characters"
is "$(valid "SELECT \"FailureCode\" FROM \"PaymentFailures\" UNION ALL SELECT \"FailureMessage\" FROM \"PaymentFailures\"")" t \
	"\"FailureCode\" and \"FailureMessage\" are valid UTF-8"
is "$(w_sql $C "SELECT octet_length(\"FailureMessage\") <= 500 AND \"FailureMessage\" LIKE '💳%' FROM \"PaymentFailures\" WHERE \"PaymentId\" = '$P1'")" t \
	"the 1200-byte message is cut to at most 500 bytes, on a character boundary"
is "$(valid "SELECT api_version FROM payment.webhook_events UNION ALL SELECT outcome FROM payment.webhook_events")|$(w_sql $C "SELECT char_length(api_version) FROM payment.webhook_events WHERE event_id = 'evt_mb_1'")" \
	"t|64" "the event's api_version is cut to 64 characters, and it and the outcome are valid UTF-8"

P2=$(pay 2)
failed_event "$D/f2" evt_mb_2 "$(pi_of "$P2")" "$P2" "$CODE_EMOJI" "declined"
is "$(deliver "$D/f2" "$(sign "$D/f2" now "$S1")")" evt_mb_2 \
	"a decline code of 60 emoji: the delivery succeeds"
is "$(w_sql $C "SELECT char_length(\"FailureCode\"), octet_length(\"FailureCode\") FROM \"PaymentFailures\" WHERE \"PaymentId\" = '$P2'")|$(valid "SELECT \"FailureCode\" FROM \"PaymentFailures\" WHERE \"PaymentId\" = '$P2'")" \
	"50|200|t" "\"FailureCode\" holds 50 whole emoji (200 bytes), valid UTF-8"

# --- through the outbox worker -------------------------------------------------------
P3=$(w_sql $C "BEGIN;
SELECT set_config('t.p', payment.create('$(w_reg 3)', '$(w_user 3)', 25.00, stripe_payment_method => 'pm_card_visa')::text, true);
UPDATE payment.outbox SET next_attempt_at = now() + interval '1 hour' WHERE payment_id = current_setting('t.p')::uuid;
COMMIT")
w_http POST /_test/faults "$(python3 -c "import json,sys; print(json.dumps({'kind': 'decline', 'code': 'card_declined', 'decline_code': sys.argv[1], 'message': 'é' * 400, 'payment_id': sys.argv[2]}))" "$CODE_E" "$P3")" >/dev/null
w_sql $C "UPDATE payment.outbox SET next_attempt_at = now() WHERE payment_id = '$P3'" >/dev/null
w_sql $C "SELECT pg_reload_conf()" >/dev/null
is "$(w_wait $C "SELECT \"Status\" FROM \"Payments\" WHERE \"Id\" = '$P3'" 2 60)" 2 \
	"the worker records the decline: the payment is Failed"
is "$(w_sql $C "SELECT char_length(\"FailureCode\"), \"FailureCode\" = left('$CODE_E', 50) FROM \"PaymentFailures\" WHERE \"PaymentId\" = '$P3'")|$(valid "SELECT \"FailureCode\" FROM \"PaymentFailures\" WHERE \"PaymentId\" = '$P3' UNION ALL SELECT \"FailureMessage\" FROM \"PaymentFailures\" WHERE \"PaymentId\" = '$P3'")" \
	"50|t|t" "its \"FailureCode\" holds the first 50 characters, valid UTF-8, and so is its message"
is "$(w_sql $C "SELECT state FROM payment.outbox WHERE payment_id = '$P3' AND kind = 'payment_intent.create'")" done \
	"the outbox row is done, not retried or dead"
is "$(valid "SELECT last_error FROM payment.outbox WHERE last_error IS NOT NULL UNION ALL SELECT last_error FROM payment.worker_status WHERE last_error IS NOT NULL")" t \
	"the worker's error texts (outbox rows, shared status) are valid UTF-8"

# --- everything stored is valid text, and the trail verifies ------------------------------
is "$(valid "SELECT \"ActionDescription\" FROM \"PaymentAuditLog\" UNION ALL SELECT \"NewValues\"::text FROM \"PaymentAuditLog\" WHERE \"NewValues\" IS NOT NULL")" t \
	"every audit description and value is valid UTF-8"
is "$(w_sql $C "SELECT payment.verify_audit()")" t "the audit chains verify"
# a dump of the failures loads back: COPY out and in, as pg_dump and
# pg_restore do (COPY FROM checks the encoding)
w_sql $C "CREATE TABLE pe_copy_check (LIKE \"PaymentFailures\")" >/dev/null
q -c "\\copy (SELECT * FROM \"PaymentFailures\") TO '$PE_WORK/$C.failures.copy'" >/dev/null
is "$(q -c "\\copy pe_copy_check FROM '$PE_WORK/$C.failures.copy'")$(w_sql $C "SELECT count(*) FROM pe_copy_check")" 3 \
	"the failures copy out and load back"

w_done
