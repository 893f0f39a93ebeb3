#!/usr/bin/env bash
#
# test/t/error_secrets.sh — no error shows a sealed value, a Stripe id or
# another user's row (issue 16, item 9).  Every error path below is
# provoked through the SECURITY DEFINER functions that write the payment
# tables: bad display data for a saved method (once CHECK violations whose
# "Failing row contains" showed the sealed Stripe id), constraints a DBA
# added to "PaymentMethods", "Payments" and payment.outbox, a foreign key,
# another user's idempotency key (once answered with that user's payment
# id) and another user's registration.  The message, detail, hint and
# context the client sees, and the whole server log, must hold no 'pe1:',
# no Stripe id and no id of the other user's rows.
#
# The Stripe ids reach the functions from a table, as bind parameters
# would, so that the STATEMENT line the server logs after an error (the
# caller's own SQL text) holds none either.  Prints TAP.
#
set -uo pipefail
source "$PE_WORK/repo/test/worker_lib.sh"
trap w_cleanup EXIT

echo "1..17"

C=w_errsec
w_standin_start $C
w_cluster $C
w_seed $C 5

U1=$(w_user 1)
U2=$(w_user 2)
PM_U1="pm_secretU1$(od -An -tx1 -N6 /dev/urandom | tr -d ' \n')"
PM_U2="pm_secretU2$(od -An -tx1 -N6 /dev/urandom | tr -d ' \n')"
w_sql $C "CREATE TABLE t_secret (name text PRIMARY KEY, value text);
INSERT INTO t_secret VALUES ('pm1', '$PM_U1'), ('pm2', '$PM_U2')" >/dev/null
# user 1's saved method and payment (made with an idempotency key)
M1=$(w_sql $C "SELECT payment.save_method('$U1', (SELECT value FROM t_secret WHERE name = 'pm1'), '4242', 'Visa', 12, 2099)")
P1=$(w_sql $C "SELECT payment.create('$(w_reg 1)', '$U1', 40, stripe_payment_method => (SELECT value FROM t_secret WHERE name = 'pm1'), idempotency_key => 'shared-key-1')")
w_sql $C "UPDATE payment.outbox SET next_attempt_at = now() + interval '1 day'" >/dev/null

# attempt SQL [ROLE]: the error as the client sees it (message, detail,
# hint, context, SQLSTATE), as user 2 of the application
attempt() {
	"$PE_BIN/psql" -h "$PE_WORK/$C.sock" -p 5432 -U postgres -d postgres -X -qAt \
		-v VERBOSITY=verbose -v SHOW_CONTEXT=always \
		-c "SET app.current_user_id = '$U2'" -c "SET ROLE ${2:-payment_app}" -c "$1" 2>&1
}
# clean TEXT: "clean" when TEXT holds no secret and none of user 1's ids,
# else the offending lines
FORBIDDEN="(^|[^A-Za-z0-9])(pe1:|pm_|pi_|re_|seti_|cus_|ch_|whsec_|sk_)|$M1|$P1|$U1|secretU"
clean() {
	local bad
	bad=$(printf '%s\n' "$1" | grep -E "$FORBIDDEN")
	if [ -z "$bad" ]; then echo clean; else printf '%s\n' "$bad"; fi
}
# check NAME SQLSTATE SQL [ROLE]: the error has that SQLSTATE and is clean
check() {
	local out state
	out=$(attempt "$3" "${4:-payment_app}")
	state=$(printf '%s\n' "$out" | sed -n 's/^.*ERROR:  \([0-9A-Z]\{5\}\):.*$/\1/p' | head -1)
	is "$state $(clean "$out")" "$2 clean" "$1: $2, and nothing secret or another user's in the error"
}
PM2="(SELECT value FROM t_secret WHERE name = 'pm2')"
w_sql $C "GRANT SELECT ON t_secret TO payment_app, payment_admin" >/dev/null

# --- saved methods: our own checks come first ------------------------------------------
check "last_four not four digits" 22023 "SELECT payment.save_method('$U2', $PM2, '12a4', 'Visa', 12, 2099)"
check "an unknown card brand" 22023 "SELECT payment.save_method('$U2', $PM2, '4242', 'Maestro', 12, 2099)"
check "an expiry year past 9999" 22023 "SELECT payment.save_method('$U2', $PM2, '4242', 'Visa', 12, 10000)"
check "last_four of five digits" 22023 "SELECT payment.save_method('$U2', $PM2, '42424', 'Visa', 12, 2099)"
check "card_brand too long for its column" 22023 "SELECT payment.save_method('$U2', $PM2, '4242', repeat('Visa', 10), 12, 2099)"
check "a user who does not exist (foreign key)" 23503 \
	"SELECT payment.save_method('10000000-0000-0000-0000-0000000000ff', $PM2, '4242', 'Visa', 12, 2099)"

# --- constraints a DBA added: PostgreSQL's own violations, the row not shown ---------------
w_sql $C "ALTER TABLE \"PaymentMethods\" ADD CONSTRAINT pe_test_no_discover CHECK (\"CardBrand\" <> 'Discover')" >/dev/null
check "a CHECK a DBA added to \"PaymentMethods\" (the row holds the sealed id)" 23514 \
	"SELECT payment.save_method('$U2', $PM2, '4242', 'Discover', 12, 2099)"
w_sql $C "ALTER TABLE payment.outbox ADD CONSTRAINT pe_test_no_create CHECK (kind <> 'payment_intent.create') NOT VALID" >/dev/null
check "a CHECK a DBA added to payment.outbox (the request holds the sealed id)" 23514 \
	"SELECT payment.create('$(w_reg 2)', '$U2', 40, stripe_payment_method => $PM2)"
w_sql $C "ALTER TABLE payment.outbox DROP CONSTRAINT pe_test_no_create;
ALTER TABLE payment.outbox ADD COLUMN pe_test_note text NOT NULL DEFAULT 'x';
ALTER TABLE payment.outbox ALTER COLUMN pe_test_note DROP DEFAULT" >/dev/null
check "a NOT NULL a DBA added to payment.outbox" 23502 \
	"SELECT payment.create('$(w_reg 2)', '$U2', 40, stripe_payment_method => $PM2)"
w_sql $C "ALTER TABLE payment.outbox DROP COLUMN pe_test_note" >/dev/null
# a Failed payment of user 4 with a sealed PaymentIntent id, resolved by an admin
PF=50000000-0000-0000-0000-000000000004
w_sql $C "INSERT INTO \"Payments\" (\"Id\", \"EventRegistrationId\", \"UserId\", \"AmountValue\", \"Status\", \"PaymentMethodType\", \"Metadata\", \"EncryptedStripePaymentIntentId\")
VALUES ('$PF', '$(w_reg 4)', '$(w_user 4)', 40, 2, 1, '{\"noretry\": 1}',
        payment.encrypt((SELECT value FROM t_secret WHERE name = 'pm1') || '_as_pi', 'Payments.EncryptedStripePaymentIntentId:$PF'));
ALTER TABLE \"Payments\" ADD CONSTRAINT pe_test_no_resolve CHECK (NOT (\"Status\" = 1 AND \"Metadata\" ? 'noretry'))" >/dev/null
check "a CHECK a DBA added to \"Payments\", on payment.resolve (the row holds a sealed id)" 23514 \
	"SELECT payment.resolve('$PF', 1, 'Stripe shows it charged after all')" payment_admin

# --- other users' rows ---------------------------------------------------------------------
check "another user's idempotency key, other arguments" 23505 \
	"SELECT payment.create('$(w_reg 2)', '$U2', 30, idempotency_key => 'shared-key-1')"
# refused as another user's (22023) before its live payment is looked at
check "another user's registration, which has a live payment" 22023 \
	"SELECT payment.create('$(w_reg 1)', '$U2', 40)"
PR=50000000-0000-0000-0000-000000000003
w_sql $C "INSERT INTO \"Payments\" (\"Id\", \"EventRegistrationId\", \"UserId\", \"AmountValue\", \"Status\", \"PaymentMethodType\")
VALUES ('$PR', '$(w_reg 3)', '$(w_user 3)', 40, 1, 1)" >/dev/null
w_sql $C "SET ROLE payment_admin; SELECT payment.refund('$PR', 1, 'a refund for the key test', '$U2', idempotency_key => 'refund-key-1')" >/dev/null
check "a refund idempotency key reused with other arguments" 23505 \
	"SELECT payment.refund('$PR', 2, 'another refund, same key', '$U2', idempotency_key => 'refund-key-1')" payment_admin

# --- the messages still say what went wrong ----------------------------------------------
is "$(attempt "SELECT payment.create('$(w_reg 2)', '$U2', 30, idempotency_key => 'shared-key-1')" | grep -c 'idempotency key was already used with different arguments')" 1 \
	"the idempotency error says only that the key was used with different arguments"
is "$(attempt "SELECT payment.save_method('$U2', $PM2, '4242', 'Discover', 12, 2099)" | grep -c 'violates check constraint "pe_test_no_discover"')" 1 \
	"a constraint violation still names the constraint"

# --- and the server log holds none of it ---------------------------------------------------
is "$([ "$(grep -c 'ERROR:' "$PE_WORK/$C.log")" -ge 14 ] && echo yes)" yes "the server log has the errors"
is "$(clean "$(cat "$PE_WORK/$C.log")")" clean "the server log holds no sealed value, Stripe id or user 1's id"

w_done
