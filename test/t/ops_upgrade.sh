#!/usr/bin/env bash
#
# test/t/ops_upgrade.sh — upgrades and DROP protection, on a cluster of its
# own:
#   - version 1.0 installs from payment_ext--1.0.sql with the current library and
#     works (the library serves both versions);
#   - ALTER EXTENSION payment_ext UPDATE on a 1.0 database with data gives
#     exactly the catalog of a fresh install of the current version (test/ops_catalog.sql:
#     functions with their definitions, tables, columns, constraints,
#     indexes, triggers and their enable state, policies, ACLs, initial
#     privileges, comments, membership, extconfig, the event trigger), keeps
#     every row, and the audit chains still verify;
#   - DROP EXTENSION (and DROP SCHEMA ... CASCADE) of a database holding
#     payments is refused with the counts, unless a superuser sets
#     payment_ext.allow_drop; an empty one drops; ordinary roles can set
#     neither payment_ext.allow_drop nor payment_ext.restoring, and a
#     restoring value given to one by ALTER ROLE silences nothing.
# Prints TAP.
#
set -uo pipefail
source "$PE_WORK/repo/test/worker_lib.sh"
trap w_cleanup EXIT

echo "1..25"

C=ops_up
# the current version, from the control file
V=$(sed -n "s/^default_version[[:space:]]*=[[:space:]]*'\([^']*\)'.*/\1/p" "$PE_WORK/repo/payment_ext.control")
# no Stripe here: the worker's URL is a port we hold closed (not port 9,
# where something might listen)
w_closed_url
w_cluster $C

# q DB SQL: run SQL in database DB, unaligned; stderr too
q() {
	"$PE_BIN/psql" -h "$PE_WORK/$C.sock" -p 5432 -U postgres -d "$1" -X -qAt \
		-v ON_ERROR_STOP=1 -v VERBOSITY=verbose -c "$2" 2>&1
}
# counts DB: rows of every table the extension keeps
counts() {
	q "$1" "SELECT (SELECT count(*) FROM \"Payments\") || ' ' || (SELECT count(*) FROM \"PaymentRefunds\")
	        || ' ' || (SELECT count(*) FROM \"PaymentAuditLog\") || ' ' || (SELECT count(*) FROM \"PaymentMethods\")
	        || ' ' || (SELECT count(*) FROM \"PaymentFailures\") || ' ' || (SELECT count(*) FROM payment.outbox)
	        || ' ' || (SELECT count(*) FROM payment.intents) || ' ' || (SELECT count(*) FROM payment.idempotency_keys)
	        || ' ' || (SELECT count(*) FROM payment.audit_chain_heads)"
}
catalog() {
	"$PE_BIN/psql" -h "$PE_WORK/$C.sock" -p 5432 -U postgres -d "$1" -X -qAt \
		-v ON_ERROR_STOP=1 -f "$PE_WORK/repo/test/ops_catalog.sql"
}

for db in old fresh empty; do q postgres "CREATE DATABASE $db" >/dev/null; done

# --- 1.0 with the current library-----------------------------------------------------------
is "$(q old "CREATE EXTENSION payment_ext VERSION '1.0'; SELECT extversion FROM pg_extension WHERE extname = 'payment_ext'")" \
	"1.0" "CREATE EXTENSION ... VERSION '1.0' installs 1.0"
is "$(q old "SELECT count(*) FROM pg_proc WHERE proname IN ('version', 'drop_guard') AND pronamespace = 'payment'::regnamespace")" \
	"0" "1.0 has neither payment.version() nor the drop guard"
"$PE_BIN/psql" -h "$PE_WORK/$C.sock" -p 5432 -U postgres -d old -X -q -o /dev/null \
	-f "$PE_WORK/repo/test/ops_seed.sql" >"$PE_WORK/$C.seed.log" 2>&1
ok $? "the $V library serves 1.0: payments, refunds, a saved card, outbox rows (test/ops_seed.sql)"
BEFORE=$(counts old)
is "$BEFORE" "5 2 $(q old "SELECT count(*) FROM \"PaymentAuditLog\"") 1 1 4 1 2 $(q old "SELECT count(*) FROM payment.audit_chain_heads")" \
	"  5 payments, 2 refunds, a saved card, a failure, an intent, 2 idempotency keys (4 outbox rows)"
# in the seed's order (its registrations 1-5), not by CreatedAt: clock
# steps aside, ties would fall to random ids
is "$(q old "SELECT payment.status_name(\"Status\") FROM \"Payments\" ORDER BY \"EventRegistrationId\"" | tr '\n' ' ')" \
	"Pending Pending Refunded NotRequired Failed " "  every status, Refunded by two completed refunds"
# 1.0 has no guard: a DROP in a transaction that is rolled back shows it
is "$(q old "BEGIN; DROP EXTENSION payment_ext; ROLLBACK;")" "" "1.0 itself has no DROP protection (dropped, then rolled back)"

# --- the upgrade -----------------------------------------------------------------------------
is "$(q old "ALTER EXTENSION payment_ext UPDATE; SELECT extversion FROM pg_extension WHERE extname = 'payment_ext'")" \
	"$V" "ALTER EXTENSION payment_ext UPDATE goes from 1.0 to $V (every step)"
is "$(counts old)" "$BEFORE" "  every row kept"
is "$(q old "SELECT payment.verify_audit()")" "t" "  the audit chains still verify"
is "$(q old "SELECT payment.version()")" "$V" "  payment.version() is $V"

q fresh "CREATE EXTENSION payment_ext" >/dev/null
catalog old >"$PE_WORK/$C.old.catalog"
catalog fresh >"$PE_WORK/$C.fresh.catalog"
diff -u "$PE_WORK/$C.fresh.catalog" "$PE_WORK/$C.old.catalog" >"$PE_WORK/$C.catalog.diff" &&
	[ "$(wc -l <"$PE_WORK/$C.fresh.catalog")" -gt 500 ]
ok $? "the upgraded catalog is the fresh $V catalog ($(wc -l <"$PE_WORK/$C.fresh.catalog") lines compared)"
[ -s "$PE_WORK/$C.catalog.diff" ] && sed 's/^/# /' "$PE_WORK/$C.catalog.diff" | head -40
ok $(grep -qx "member event trigger payment_ext_drop_guard" "$PE_WORK/$C.fresh.catalog"; echo $?) \
	"  the comparison covers the event trigger, a member of the extension"
ok $(grep -q "^trigger CREATE TRIGGER \"TR_PaymentAuditLog_Chain\".* enabled=A" "$PE_WORK/$C.fresh.catalog"; echo $?) \
	"  and the triggers' enable state (ALWAYS)"
ok $(cmp -s "$PE_WORK/repo/payment_ext--1.0.sql" <(cat "$PE_WORK"/repo/src/sql/[0-9]*.sql); echo $?) \
	"payment_ext--1.0.sql is exactly the 1.0 parts"

# the upgraded database works on
is "$(q old "SELECT payment.create('60000000-0000-0000-0000-000000000006', '40000000-0000-0000-0000-000000000006', 12.00) IS NOT NULL")" \
	"t" "the upgraded database takes a new payment"

# --- DROP protection ----------------------------------------------------------------------
PAY=$(q old "SELECT count(*) FROM \"Payments\"")
AUD=$(q old "SELECT count(*) FROM \"PaymentAuditLog\"")
OUT=$(q old "DROP EXTENSION payment_ext")
ok $(grep -q "ERROR:  2BP01: cannot drop extension \"payment_ext\" while it holds payments" <<<"$OUT"; echo $?) \
	"DROP EXTENSION of a database with payments: 2BP01"
ok $(grep -q "DETAIL:  This would delete $PAY payments, 2 refunds and $AUD audit log rows" <<<"$OUT"; echo $?) \
	"  the message says what would be lost ($PAY payments, 2 refunds, $AUD audit log rows)"
OUT=$(q old "DROP SCHEMA public CASCADE")
ok $(grep -q "ERROR:  2BP01" <<<"$OUT"; echo $?) \
	"DROP SCHEMA public CASCADE (which would drop the extension) is refused too"
is "$(q old "SELECT count(*) FROM \"Payments\"")" "$PAY" "  nothing was dropped"

q postgres "CREATE ROLE ops_dba LOGIN" >/dev/null
qr() {
	"$PE_BIN/psql" -h "$PE_WORK/$C.sock" -p 5432 -U ops_dba -d "$1" -X -qAt \
		-v ON_ERROR_STOP=1 -v VERBOSITY=verbose -c "$2" 2>&1
}
OUT=$(qr old "SET payment_ext.allow_drop = on")
ok $(grep -q "ERROR:  42501" <<<"$OUT"; echo $?) "an ordinary role cannot set payment_ext.allow_drop (42501)"
OUT=$(qr old "SET payment_ext.restoring = on")
ok $(grep -q "ERROR:  42501" <<<"$OUT"; echo $?) "an ordinary role cannot set payment_ext.restoring (42501)"

# insert_refunded WHO ID: a Refunded payment that claims 10.00 refunded,
# with no refund rows; the rules recompute the claim (NULL) and audit it
insert_refunded() {
	$1 old "SET app.current_user_id = '40000000-0000-0000-0000-000000000004';
	        INSERT INTO \"Payments\" (\"Id\", \"EventRegistrationId\", \"UserId\", \"AmountValue\", \"Status\",
	                                 \"PaymentMethodType\", \"RefundAmountValue\", \"RefundCurrency\", \"RefundedAt\")
	        VALUES ('$2', '60000000-0000-0000-0000-000000000004', '40000000-0000-0000-0000-000000000004',
	                10, 3, 1, 10, 'USD', now())"
}
stored_refund() {
	q old "SELECT coalesce(\"RefundAmountValue\"::text, 'NULL') || ' ' || (SELECT count(*) FROM \"PaymentAuditLog\" WHERE \"PaymentId\" = '$1')
	         FROM \"Payments\" WHERE \"Id\" = '$1'"
}
# a superuser gives the role restoring = on by ALTER ROLE: it silences nothing
q old "GRANT INSERT ON \"Payments\" TO ops_dba; GRANT USAGE ON SCHEMA payment TO ops_dba; ALTER ROLE ops_dba SET payment_ext.restoring = on" >/dev/null
OUT=$(insert_refunded qr 70000000-0000-0000-0000-000000000001)
is "$OUT|$(stored_refund 70000000-0000-0000-0000-000000000001)" "|NULL 1" \
	"restoring = on given to an ordinary role (ALTER ROLE): the rules still recompute the refund sum and the audit still writes"
# a superuser's session in restore mode stores the row as given, unaudited
OUT=$("$PE_BIN/psql" -h "$PE_WORK/$C.sock" -p 5432 -U postgres -d old -X -qAt -v ON_ERROR_STOP=1 \
	-c "SET payment_ext.restoring = on" \
	-c "INSERT INTO \"Payments\" (\"Id\", \"EventRegistrationId\", \"UserId\", \"AmountValue\", \"Status\",
	                              \"PaymentMethodType\", \"RefundAmountValue\", \"RefundCurrency\", \"RefundedAt\")
	     VALUES ('70000000-0000-0000-0000-000000000009', '60000000-0000-0000-0000-000000000004',
	             '40000000-0000-0000-0000-000000000004', 10, 3, 1, 10, 'USD', now())" 2>&1)
is "$OUT|$(stored_refund 70000000-0000-0000-0000-000000000009)" "|10.00 0" \
	"a superuser's session with payment_ext.restoring = on stores an INSERT as given, unaudited (what pg_restore needs)"
q old "ALTER ROLE ops_dba RESET payment_ext.restoring" >/dev/null

OUT=$(q old "SET payment_ext.allow_drop = on; DROP EXTENSION payment_ext; SELECT to_regclass('\"Payments\"') IS NULL")
ok $(grep -q "WARNING:  01000: dropping extension \"payment_ext\" with its payments" <<<"$OUT" && grep -qx t <<<"$OUT"; echo $?) \
	"with payment_ext.allow_drop = on a superuser drops it, with a WARNING"
is "$(q empty "CREATE EXTENSION payment_ext; DROP EXTENSION payment_ext; SELECT count(*) FROM pg_extension WHERE extname = 'payment_ext'")" \
	"0" "an empty install drops without payment_ext.allow_drop"

w_done
