#!/usr/bin/env bash
#
# test/t/concurrency.sh — refund and payment rules under real concurrency.
#
# Many psql clients are started together and held at a barrier (a table
# locked by a controlling session) until every one of them is waiting; then
# the barrier goes and they race:
#   - 60 payment.refund() of 1.00 at a 20.00 payment: exactly 20 succeed;
#   - 50 plain INSERTs of a 1.00 refund at another 20.00 payment: exactly 20;
#   - 20 payment.create() for one registration: exactly one live payment;
#   - 20 payment.refund() with one idempotency key: one refund;
#   - 30 metadata changes of one payment, in READ COMMITTED and then in
#     REPEATABLE READ, and 20 refunds of another: one audit row per change
#     that committed, each payment's hash chain contiguous and verified,
#     never forked;
#   - no new lock order: an audited change of a refund takes its payment's
#     row lock before its user's (as the foreign key's check would), so a
#     transaction holding the payment that then locks the user does not
#     deadlock with it.
# Prints TAP.  Needs PGHOST/PGPORT of a running cluster with payment_ext.
#
set -uo pipefail

DB=pe_concurrency
N=0
FAILS=0
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

ok() {
	N=$((N + 1))
	if [ "$1" = "$2" ]; then
		echo "ok $N - $3"
	else
		echo "not ok $N - $3"
		echo "#   got: '$1'"
		echo "#   expected: '$2'"
		FAILS=$((FAILS + 1))
	fi
}

q() { psql -X -qAt -v ON_ERROR_STOP=1 -d "$DB" -c "$1"; }

echo "1..26"

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null 2>&1
q "CREATE EXTENSION payment_ext" >/dev/null
q "CREATE TABLE barrier (x int)"
q "
INSERT INTO \"Users\" (\"Id\", \"SceneName\", \"Email\")
SELECT ('10000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, 'u' || i, 'u' || i || '@example.org'
  FROM generate_series(1, 5) i;
INSERT INTO \"Events\" (\"Id\", \"Title\", \"StartDate\", \"EndDate\")
VALUES ('20000000-0000-0000-0000-000000000001', 'Race', now(), now());
INSERT INTO \"EventRegistrations\" (\"Id\", \"EventId\", \"UserId\")
SELECT ('30000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, '20000000-0000-0000-0000-000000000001',
       ('10000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid
  FROM generate_series(1, 5) i;"
P1=$(q "SELECT payment.create('30000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000001', 20.00)")
P2=$(q "SELECT payment.create('30000000-0000-0000-0000-000000000002', '10000000-0000-0000-0000-000000000002', 20.00)")
P4=$(q "SELECT payment.create('30000000-0000-0000-0000-000000000004', '10000000-0000-0000-0000-000000000004', 20.00)")
q "UPDATE \"Payments\" SET \"Status\" = 1, \"EncryptedStripePaymentIntentId\" = payment.encrypt('pi_' || left(\"Id\"::text, 8), 'Payments.EncryptedStripePaymentIntentId:' || \"Id\") WHERE \"Id\" IN ('$P1', '$P2', '$P4')"
ADMIN=10000000-0000-0000-0000-000000000005

# until SECONDS CMD...: run CMD until it succeeds or SECONDS pass
until_ok() {
	local deadline=$(($(date +%s) + $1))
	shift
	until "$@"; do
		[ "$(date +%s)" -lt "$deadline" ] || return 1
		sleep 0.1
	done
}
barrier_held() {
	[ "$(q "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'barrier' AND l.granted AND l.mode = 'AccessExclusiveLock'")" = 1 ]
}
all_waiting() {
	[ "$(q "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'barrier' AND NOT l.granted")" -ge "$1" ]
}

# race COUNT SQL: run SQL in COUNT clients released together; prints the
# number of clients whose statement succeeded.  Each wait polls with a
# deadline long enough for a loaded machine to start 60 psql clients (the
# barrier holder sleeps longer than all of them together; it is ended).
race() {
	local count=$1 sql=$2 i ctl
	rm -f "$OUT"/c*
	psql -X -qAt -d "$DB" -c "BEGIN; LOCK TABLE barrier; SELECT pg_sleep(900)" >/dev/null 2>&1 &
	ctl=$!
	until_ok 120 barrier_held || echo "# race: the barrier was not taken in 120 s" >&2
	for i in $(seq 1 "$count"); do
		psql -X -qAt -v ON_ERROR_STOP=1 -d "$DB" \
			-c "SELECT count(*) FROM barrier" -c "$sql" >"$OUT/c$i.out" 2>"$OUT/c$i.err" &
		echo $! >"$OUT/c$i.pid"
	done
	until_ok 300 all_waiting "$count" || echo "# race: not all $count clients reached the barrier in 300 s" >&2
	q "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'BEGIN; LOCK TABLE barrier%' AND pid <> pg_backend_pid()" >/dev/null
	wait "$ctl" 2>/dev/null
	local succeeded=0
	for i in $(seq 1 "$count"); do
		if wait "$(cat "$OUT/c$i.pid")"; then
			succeeded=$((succeeded + 1))
		fi
	done
	echo "$succeeded"
}

# errors other than the expected refusal, counted over the last race
other_errors() {
	cat "$OUT"/c*.err 2>/dev/null | grep ERROR | grep -vc "$1" || true
}

# 1. 60 concurrent payment.refund() of 1.00 at 20.00
s=$(race 60 "SELECT payment.refund('$P1', 1.00, 'concurrent refund test', '$ADMIN')")
ok "$s" 20 "60 concurrent refunds of 1.00 at a 20.00 payment: 20 succeed"
ok "$(other_errors 'exceeds the 0.00 USD left to refund')" 0 "the other 40 are refused for exceeding what is left"
ok "$(q "SELECT count(*), sum(\"RefundAmountValue\") FROM \"PaymentRefunds\" WHERE \"OriginalPaymentId\" = '$P1'")" "20|20.00" "20 refund rows summing to 20.00"
ok "$(q "SELECT \"RefundAmountValue\" FROM \"Payments\" WHERE \"Id\" = '$P1'")" "20.00" "the payment's RefundAmountValue is 20.00"
ok "$(q "SELECT count(*) FROM payment.outbox WHERE payment_id = '$P1' AND kind = 'refund.create'")" "20" "20 refund requests in the outbox"

# completing them all, concurrently, makes the payment Refunded
s=$(race 20 "UPDATE \"PaymentRefunds\" SET \"RefundStatus\" = 1 WHERE \"Id\" = (SELECT \"Id\" FROM \"PaymentRefunds\" WHERE \"OriginalPaymentId\" = '$P1' AND \"RefundStatus\" = 0 ORDER BY \"Id\" LIMIT 1 FOR UPDATE SKIP LOCKED)")
ok "$(q "SELECT count(*) FROM \"PaymentRefunds\" WHERE \"OriginalPaymentId\" = '$P1' AND \"RefundStatus\" = 1")" "20" "20 concurrent completions complete all 20 refunds"
ok "$(q "SELECT payment.status_name(\"Status\") || ' ' || \"RefundAmountValue\" FROM \"Payments\" WHERE \"Id\" = '$P1'")" "Refunded 20.00" "the payment is Refunded, 20.00"

# 2. 50 concurrent plain INSERTs of a 1.00 refund at 20.00
s=$(race 50 "INSERT INTO \"PaymentRefunds\" (\"OriginalPaymentId\", \"RefundAmountValue\", \"RefundCurrency\", \"RefundReason\", \"ProcessedByUserId\") VALUES ('$P2', 1.00, 'USD', 'concurrent plain insert', '$ADMIN')")
ok "$s" 20 "50 concurrent plain INSERTs of 1.00 at a 20.00 payment: 20 succeed"
ok "$(other_errors 'exceeds the 0.00 USD left to refund')" 0 "the other 30 are refused by the trigger"
ok "$(q "SELECT sum(\"RefundAmountValue\") || ' ' || (SELECT \"RefundAmountValue\" FROM \"Payments\" WHERE \"Id\" = '$P2') FROM \"PaymentRefunds\" WHERE \"OriginalPaymentId\" = '$P2'")" "20.00 20.00" "refund rows and the payment agree: 20.00"

# 3. 20 concurrent payment.create() for one registration
s=$(race 20 "SELECT payment.create('30000000-0000-0000-0000-000000000003', '10000000-0000-0000-0000-000000000003', 40.00, 25)")
ok "$s" 1 "20 concurrent payment.create for one registration: one succeeds"
ok "$(other_errors 'already has a Pending payment')" 0 "the other 19 are refused: the registration has a live payment"
ok "$(q "SELECT count(*) || ' ' || sum(\"AmountValue\") FROM \"Payments\" WHERE \"EventRegistrationId\" = '30000000-0000-0000-0000-000000000003' AND \"Status\" IN (0, 1)")" "1 30.00" "exactly one live payment of 30.00"
ok "$(q "SELECT count(*) FROM payment.outbox o JOIN \"Payments\" p ON p.\"Id\" = o.payment_id WHERE p.\"EventRegistrationId\" = '30000000-0000-0000-0000-000000000003'")" "1" "and exactly one request in the outbox"

# 4. 20 concurrent payment.refund() with one idempotency key: one refund
s=$(race 20 "SELECT payment.refund('$P4', 5.00, 'double clicked refund', '$ADMIN', 'click-42')")
ok "$s" 20 "20 concurrent calls with one idempotency key all return"
ok "$(q "SELECT count(*) || ' ' || sum(\"RefundAmountValue\") FROM \"PaymentRefunds\" WHERE \"OriginalPaymentId\" = '$P4'")" "1 5.00" "one refund of 5.00 was made"

# 5. audit hash chains under concurrent writers of one payment
# chain_ok PAYMENT: "rows|contiguous|head" of the payment's chain
chain_ok() {
	q "SELECT count(*) || '|' || (count(*) = max(\"ChainSeq\") AND count(DISTINCT \"ChainSeq\") = count(*))
	          || '|' || (SELECT h.seq = max(a.\"ChainSeq\") AND h.row_hash = (SELECT \"RowHash\" FROM \"PaymentAuditLog\" x
	                      WHERE x.\"PaymentId\" = '$1' AND x.\"ChainSeq\" = h.seq)
	                     FROM payment.audit_chain_heads h WHERE h.chain_id = '$1')
	     FROM \"PaymentAuditLog\" a WHERE a.\"PaymentId\" = '$1'"
}
before=$(q "SELECT count(*) FROM \"PaymentAuditLog\" WHERE \"PaymentId\" = '$P4'")
s=$(race 30 "UPDATE \"Payments\" SET \"Metadata\" = jsonb_build_object('client', pg_backend_pid()) WHERE \"Id\" = '$P4'")
ok "$s" 30 "30 concurrent metadata changes of one payment (READ COMMITTED) all commit"
ok "$(q "SELECT count(*) - $before FROM \"PaymentAuditLog\" WHERE \"PaymentId\" = '$P4'")" 30 "30 audit rows were added to its chain"
before=$((before + 30))
s=$(race 30 "BEGIN ISOLATION LEVEL REPEATABLE READ; UPDATE \"Payments\" SET \"Metadata\" = jsonb_build_object('rr', pg_backend_pid()) WHERE \"Id\" = '$P4'; COMMIT")
ok "$(q "SELECT count(*) - $before FROM \"PaymentAuditLog\" WHERE \"PaymentId\" = '$P4'")" "$s" "REPEATABLE READ: one audit row per change that committed ($s of 30)"
ok "$(other_errors 'could not serialize access')" 0 "the others fail with a serialization failure only"
ok "$(chain_ok "$P4" | cut -d'|' -f2-)" "true|true" "the chain is contiguous and its head is its newest row"
s=$(race 20 "SELECT payment.refund('$P4', 0.50, 'concurrent audited refund', '$ADMIN')")
ok "$s" 20 "20 concurrent refunds of the same payment succeed"
ok "$(chain_ok "$P4" | cut -d'|' -f2-)" "true|true" "its chain is still contiguous, head included"
ok "$(q "SELECT payment.verify_audit()")" "t" "payment.verify_audit() of every chain: true"

# 6. lock order: payment, then user.  Not paced by sleeps (a loaded machine
# could start B after A has finished, or before A holds the payment, and the
# test would prove nothing): A holds the payment, B starts once it does, and
# A locks the user only once B waits for a lock (or has finished).
U3=10000000-0000-0000-0000-000000000003
R=$(q "SELECT \"Id\" FROM \"PaymentRefunds\" WHERE \"OriginalPaymentId\" = '$P4' ORDER BY \"Id\" LIMIT 1")
psql -X -qAt -v ON_ERROR_STOP=1 -d "$DB" >"$OUT/a.out" 2>"$OUT/a.err" <<SQL &
BEGIN;
UPDATE "Payments" SET "Metadata" = '{"holder": "a"}' WHERE "Id" = '$P4';
SET application_name = 'pe_lock_holder';
DO \$\$ BEGIN
  FOR i IN 1..12000 LOOP
    EXIT WHEN EXISTS (SELECT 1 FROM pg_locks WHERE NOT granted AND pid <> pg_backend_pid())
           OR EXISTS (SELECT 1 FROM "PaymentRefunds" WHERE "Id" = '$R' AND "Metadata" = '{"by": "b"}');
    PERFORM pg_sleep(0.01);
  END LOOP;
END \$\$;
SELECT 1 FROM "Users" WHERE "Id" = '$U3' FOR UPDATE;
COMMIT;
SQL
A=$!
holder_ready() {
	[ "$(q "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pe_lock_holder'")" = 1 ]
}
until_ok 120 holder_ready || echo "# A did not take the payment in 120 s" >&2
PGOPTIONS="-c app.current_user_id=$U3 -c deadlock_timeout=100ms" \
	psql -X -qAt -v ON_ERROR_STOP=1 -d "$DB" -c "UPDATE \"PaymentRefunds\" SET \"Metadata\" = '{\"by\": \"b\"}' WHERE \"Id\" = '$R'" \
	>"$OUT/b.out" 2>"$OUT/b.err"
B=$?
wait $A
A=$?
ok "$A|$B|$(cat "$OUT/a.err" "$OUT/b.err" | grep -c deadlock)" "0|0|0" \
	"a refund's audited change waits for its payment before locking its user: no deadlock with a holder of the payment that locks the user"
ok "$(q "SELECT count(*) FROM \"PaymentAuditLog\" WHERE \"RowId\" = '$R' AND \"UserId\" = '$U3' AND \"ActionType\" = 'MetadataUpdated'")" 1 \
	"  and its audit row names the user"

psql -X -q -d postgres -c "DROP DATABASE $DB" >/dev/null 2>&1
exit $((FAILS > 0))
