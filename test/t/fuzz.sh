#!/usr/bin/env bash
#
# test/t/fuzz.sh — a fuzzing campaign that must find no crash.
#
#   1. sqlsmith (random SQL over the catalog, calling the extension's
#      functions with random arguments) for FUZZ_SECONDS (default 120), as a
#      role holding the application's, the administrator's and reporting's
#      rights (not a superuser: it must not kill other backends on purpose);
#   2. a generator of random calls of every public function with random and
#      extreme arguments: quotes, backslashes, binary junk, 1 MB strings,
#      invalid UTF-8, JSON 10,000 levels deep, NaN and Infinity, huge and
#      tiny numbers, card numbers, NULLs;
#   3. then: no backend was killed by a signal and no crash restart happened
#      (the server log), the server still answers, and the invariants hold:
#      refund sums never above their payment, one live payment per
#      registration, every audit chain verifies.
# Prints TAP.  Needs PGHOST/PGPORT/PE_WORK of the cluster tools/run started.
#
set -uo pipefail

DB=pe_fuzz
SECONDS_SQLSMITH=${FUZZ_SECONDS:-120}
CALLS=${FUZZ_CALLS:-3000}
LOG="$PE_WORK/main.log"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
N=0
FAILS=0

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

echo "1..8"

log_start=$(wc -c <"$LOG")
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null 2>&1
q "CREATE EXTENSION payment_ext" >/dev/null
# thousands of refused calls with 1 MB arguments: keep them out of the log
q "ALTER DATABASE $DB SET log_min_messages = fatal" >/dev/null
q "ALTER DATABASE $DB SET log_min_error_statement = panic" >/dev/null
psql -X -q -d postgres -c "DROP ROLE IF EXISTS pe_fuzzer" >/dev/null 2>&1
psql -X -q -d postgres -c "CREATE ROLE pe_fuzzer LOGIN IN ROLE payment_app, payment_admin, payment_reporting" >/dev/null
q "
INSERT INTO \"Users\" (\"Id\", \"SceneName\", \"Email\")
SELECT ('10000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, 'u' || i, 'u' || i || '@example.org'
  FROM generate_series(1, 30) i;
INSERT INTO \"Events\" (\"Id\", \"Title\", \"StartDate\", \"EndDate\", \"PricingTiers\")
VALUES ('20000000-0000-0000-0000-000000000001', 'Fuzz', now(), now(),
        '[{\"name\": \"standard\", \"price\": 40.00, \"currency\": \"USD\"}]');
INSERT INTO \"EventRegistrations\" (\"Id\", \"EventId\", \"UserId\")
SELECT ('30000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, '20000000-0000-0000-0000-000000000001',
       ('10000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid
  FROM generate_series(1, 30) i;
SELECT payment.create(('30000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
                      ('10000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, 40.00, i % 76)
  FROM generate_series(1, 20) i;
UPDATE \"Payments\" SET \"Status\" = 1,
       \"EncryptedStripePaymentIntentId\" = payment.encrypt('pi_fuzz_' || left(\"Id\"::text, 8), 'Payments.EncryptedStripePaymentIntentId:' || \"Id\")
 WHERE \"Id\" IN (SELECT \"Id\" FROM \"Payments\" ORDER BY \"Id\" LIMIT 12);
SELECT payment.refund(\"Id\", 1.00, 'seeded refund for fuzzing', '10000000-0000-0000-0000-000000000030')
  FROM \"Payments\" WHERE \"Status\" = 1;" >/dev/null

# 1. sqlsmith, bounded in time
timeout --signal=INT "$SECONDS_SQLSMITH" sqlsmith --target="host=$PGHOST port=$PGPORT dbname=$DB user=pe_fuzzer" \
	--exclude-catalog --seed=4242 --verbose >"$OUT/sqlsmith.out" 2>&1
echo "# sqlsmith: $(tr '\r' '\n' <"$OUT/sqlsmith.out" | grep -E 'queries|error' | tail -2 | tr '\n' ' ' | cut -c1-250)"
ok "$(psql -X -qAt -d "$DB" -c 'SELECT 1' 2>&1)" 1 "the server answers after ${SECONDS_SQLSMITH}s of sqlsmith"

# 2. random calls of every public function with random and extreme arguments
python3 - "$CALLS" >"$OUT/calls.sql" <<'EOF'
import json, random, sys
random.seed(4242)
n = int(sys.argv[1])
def lit(s):
    return "E'" + s.replace("\\", "\\\\").replace("'", "''") + "'"
junk_bytes = ''.join(chr(random.choice(list(range(1, 32)) + list(range(127, 256)))) for _ in range(200))
texts = [
    "''", "'x'", lit("a'b\"c\\d;--"), lit("'); DROP TABLE \"Payments\"; --"), lit(junk_bytes),
    "repeat('x', 1048576)", "repeat('é', 300000)", "NULL", lit("4242 4242 4242 4242"), lit("pm_4111111111111111"),
    lit("pm_card_visa"), lit("pe1:k1:AAAA"), lit("pe1:nokey:" + "A" * 40), lit("\u00a0\u2028\ufeff"),
    "'USD'", "'usd'", "'JPY'", lit("%s%n%x"), lit("\\x00"), "chr(65533)",
]
uuids = ["'30000000-0000-0000-0000-%012d'" % random.randint(1, 35) for _ in range(5)] + [
    "'10000000-0000-0000-0000-%012d'" % random.randint(1, 35) for _ in range(5)] + [
    "gen_random_uuid()", "NULL", "'00000000-0000-0000-0000-000000000000'",
    "(SELECT \"Id\" FROM \"Payments\" ORDER BY random() LIMIT 1)"]
nums = ["0", "0.01", "-0.01", "40", "40.005", "75", "75.01", "-1", "'NaN'", "'Infinity'", "'-Infinity'",
        "1e300", "1e-300", "99999999.99", "100000000", "NULL", "12.5", "33.33", "9223372036854775807", "-9223372036854775808", "0.005"]
ints = ["0", "1", "-1", "4", "5", "2147483647", "-2147483648", "NULL"]
deep = "[" * 10000 + "]" * 10000
jsons = ["'{}'", "'[]'", "'null'", "'\"x\"'", "'{\"a\": \"4242424242424242\"}'", "'{\"cvc\": \"123\"}'",
         "'" + deep + "'", "'{\"a\": " + "{\"b\": " * 5000 + "1" + "}" * 5000 + "}'", "NULL",
         "'{\"note\": \"" + "x" * 100000 + "\"}'"]
def pick(l): return random.choice(l)
calls = [
    lambda: "payment.price(%s, %s)" % (pick(nums), pick(nums)),
    lambda: "payment.quote(%s, %s, %s)" % (pick(uuids), pick(texts), pick(nums)),
    lambda: "payment.create(%s, %s, %s, %s, %s, %s, %s, NULL, %s, %s)" % (
        pick(uuids), pick(uuids), pick(nums), pick(nums), pick(texts), pick(ints), pick(texts), pick(texts), pick(jsons)),
    lambda: "payment.refund(%s, %s, %s, %s, %s)" % (pick(uuids), pick(nums), pick(texts), pick(uuids), pick(texts)),
    lambda: "payment.retry(%s)" % pick(uuids),
    lambda: "payment.status_name(%s)" % pick(ints),
    lambda: "payment.refund_status_name(%s)" % pick(ints),
    lambda: "payment.encrypt(%s, %s)" % (pick(texts), pick(texts)),
    lambda: "payment.decrypt(%s, %s)" % (pick(texts), pick(texts)),
    lambda: "payment.save_method(%s, %s, %s, %s, %s, %s, %s)" % (
        pick(uuids), pick(texts), pick(texts), pick(texts), pick(ints), pick(ints), pick(["true", "false", "NULL"])),
    lambda: "payment.contains_card_number(%s)" % pick(texts),
    lambda: "payment.client_secret(%s)" % pick(uuids),
    lambda: "payment.verify_audit(%s)" % pick(uuids),
]
print("SET client_min_messages = error;")
for i in range(n):
    if random.random() < 0.05:
        print("SET app.current_user_id = %s;" % pick(texts + uuids).replace("NULL", "''"))
    print("SELECT %s;" % pick(calls)())
print("SELECT 'fuzz-calls-done';")
EOF
psql -X -q -d "$DB" -U pe_fuzzer -f "$OUT/calls.sql" >"$OUT/calls.out" 2>"$OUT/calls.err"
ok "$(grep -c 'fuzz-calls-done' "$OUT/calls.out")" 1 "$CALLS random calls of every public function ran to the end"
ok "$(grep -c 'server closed the connection unexpectedly\|connection to server was lost' "$OUT/calls.err")" 0 \
	"no call lost its connection"
echo "# calls: $(grep -c '^psql.*ERROR' "$OUT/calls.err") refused with an error; SQLSTATE classes seen:" \
	"$(grep -o 'ERROR:  [a-z ]*' "$OUT/calls.err" | sort | uniq -c | sort -rn | head -5 | tr '\n' ';')"

# invalid UTF-8 is refused at input, cleanly
printf "SELECT payment.price(40, 10) WHERE 'a\xff\xfeb' IS NOT NULL;\n" >"$OUT/utf8.sql"
ok "$(psql -X -qAt -d "$DB" -f "$OUT/utf8.sql" 2>&1 | grep -c 'invalid byte sequence for encoding "UTF8"')" 1 \
	"invalid UTF-8 is refused with a clear error"

# 3. the server log: no backend killed by a signal, no crash restart
tail -c +"$((log_start + 1))" "$LOG" >"$OUT/server.log"
ok "$(grep -cE 'terminated by signal|was terminated by exception|crash of another server process|all server processes terminated; reinitializing' "$OUT/server.log")" 0 \
	"no backend was killed by a signal and the server never restarted"

# the invariants
ok "$(q "SELECT count(*) FROM \"Payments\" p
          WHERE coalesce((SELECT sum(\"RefundAmountValue\") FROM \"PaymentRefunds\" r
                           WHERE r.\"OriginalPaymentId\" = p.\"Id\" AND r.\"RefundStatus\" <> 2), 0) > p.\"AmountValue\"
             OR p.\"RefundAmountValue\" IS DISTINCT FROM (SELECT sum(\"RefundAmountValue\") FROM \"PaymentRefunds\" r
                           WHERE r.\"OriginalPaymentId\" = p.\"Id\" AND r.\"RefundStatus\" <> 2)")" 0 \
	"refund sums: never above the payment, and the payment's sum is right"
ok "$(q "SELECT count(*) FROM (SELECT \"EventRegistrationId\" FROM \"Payments\" WHERE \"Status\" IN (0, 1)
                                GROUP BY 1 HAVING count(*) > 1) x")" 0 "one live payment per registration"
ok "$(q "SELECT payment.verify_audit()")" t "every audit chain verifies"

psql -X -q -d postgres -c "DROP DATABASE $DB" >/dev/null 2>&1
psql -X -q -d postgres -c "DROP ROLE pe_fuzzer" >/dev/null 2>&1
exit $((FAILS > 0))
