#!/usr/bin/env bash
#
# test/t/vault_rotate.sh — payment.rotate_keys() while pgbench writes, on a
# cluster of its own: 20,000 saved methods, 200 payments and 200 outbox rows
# sealed under k1; k2 is added and the configuration reloaded; pgbench then
# updates and inserts sealed values while rotate_keys() runs.  Afterwards
# every value opens under its context, every committed update is there (no
# rotation wrote an old value back), nothing is under k1, and the audit log
# holds one summary row per batch.  TAP output.
#
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=tools/cluster.sh
source "$REPO/tools/cluster.sh"

N=0
FAILS=0
ok() {
	N=$((N + 1))
	if [ "$1" = 0 ]; then echo "ok $N - $2"; else echo "not ok $N - $2"; FAILS=$((FAILS + 1)); fi
}
# poll CMD...: run CMD until it succeeds or 60 s pass
poll() {
	local deadline=$(($(date +%s) + 60))
	until "$@"; do
		[ "$(date +%s)" -lt "$deadline" ] || return 1
		sleep 0.05
	done
}
is() {
	local r=1
	[ "$1" = "$2" ] && r=0
	ok $r "$3"
	[ $r = 0 ] || echo "#   got: '$1', want: '$2'"
}

echo "1..14"
C=vr
ROWS=20000
trap 'pe_cleanup' EXIT
pe_cluster_start $C >/dev/null
sql() { pe_psql $C vr -XAtq -v ON_ERROR_STOP=1 -c "$1" 2>&1; }
pe_psql $C postgres -XAtq -c 'CREATE DATABASE vr' >/dev/null

pe_psql $C vr -Xq -v ON_ERROR_STOP=1 -v rows=$ROWS >/dev/null 2>"$PE_WORK/vr.seed.err" <<'SQL' || { cat "$PE_WORK/vr.seed.err"; }
CREATE EXTENSION payment_ext;
INSERT INTO "Users" ("Id", "SceneName", "Email") VALUES ('10000000-0000-0000-0000-000000000001', 'u', 'u@example.org');
INSERT INTO "Events" ("Id", "Title", "StartDate", "EndDate") VALUES ('20000000-0000-0000-0000-000000000001', 'e', now(), now());
CREATE TABLE ids (n int PRIMARY KEY, id uuid NOT NULL);
INSERT INTO ids SELECT n, gen_random_uuid() FROM generate_series(1, :rows) n;
INSERT INTO "PaymentMethods" ("Id", "UserId", "EncryptedStripePaymentMethodId", "LastFourDigits", "CardBrand", "ExpiryMonth", "ExpiryYear")
SELECT id, '10000000-0000-0000-0000-000000000001',
       payment.encrypt('pm_v1_' || id, 'PaymentMethods.EncryptedStripePaymentMethodId:' || id), '4242', 'Visa', 12, 2099
  FROM ids;
-- 200 payments, each with two sealed ids and an outbox row whose request holds a sealed pm_
INSERT INTO "Users" ("Id", "SceneName", "Email")
SELECT ('11000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, 'u' || i, 'u' || i || '@example.org' FROM generate_series(1, 200) i;
INSERT INTO "EventRegistrations" ("Id", "EventId", "UserId")
SELECT ('30000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, '20000000-0000-0000-0000-000000000001',
       ('11000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid FROM generate_series(1, 200) i;
INSERT INTO "Payments" ("Id", "EventRegistrationId", "UserId", "AmountValue", "PaymentMethodType",
                        "EncryptedStripePaymentIntentId", "EncryptedStripeCustomerId")
SELECT p, r, u, 28.00, 1,
       payment.encrypt('pi_' || i, 'Payments.EncryptedStripePaymentIntentId:' || p),
       payment.encrypt('cus_' || i, 'Payments.EncryptedStripeCustomerId:' || p)
  FROM (SELECT i, ('40000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid p,
               ('30000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid r,
               ('11000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid u
          FROM generate_series(1, 200) i) s;
INSERT INTO payment.outbox (kind, payment_id, request, idempotency_key)
SELECT 'payment_intent.create', ('40000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
       jsonb_build_object('amount', '2800', 'currency', 'usd',
                          'payment_method', payment.encrypt('pm_out_' || i, 'outbox.request.payment_method:idem-' || i)),
       'idem-' || i
  FROM generate_series(1, 200) i;
CREATE TABLE upd (id uuid NOT NULL);
CREATE TABLE ins (id uuid NOT NULL);
SQL
is "$(sql "SELECT sealed_values FROM payment.key_usage WHERE key_id = 'k1'")" "$((ROWS + 600))" 'seeded: every value sealed under k1'

# k2 becomes the newest key; wait until new sessions see it
printf 'k2 %s\n' "$(pe_keyring_key)" >>"$PE_WORK/$C.keyring"
sql 'SELECT pg_reload_conf()' >/dev/null
poll eval '[ "$(sql "SELECT key_id FROM payment.keyring_keys() WHERE newest")" = k2 ]'
is "$(sql 'SELECT key_id FROM payment.keyring_keys() WHERE newest')" k2 'k2 is the newest key after the reload'

cat >"$PE_WORK/vr.update.sql" <<'SQL'
\set r random(1, 20000)
BEGIN;
UPDATE "PaymentMethods" m
   SET "EncryptedStripePaymentMethodId" = payment.encrypt('pm_v2_' || m."Id", 'PaymentMethods.EncryptedStripePaymentMethodId:' || m."Id")
  FROM ids WHERE ids.n = :r AND m."Id" = ids.id;
INSERT INTO upd SELECT id FROM ids WHERE n = :r;
COMMIT;
SQL
cat >"$PE_WORK/vr.insert.sql" <<'SQL'
BEGIN;
WITH n AS (SELECT gen_random_uuid() AS id), i AS (INSERT INTO ins SELECT id FROM n)
INSERT INTO "PaymentMethods" ("Id", "UserId", "EncryptedStripePaymentMethodId", "LastFourDigits", "CardBrand", "ExpiryMonth", "ExpiryYear")
SELECT id, '10000000-0000-0000-0000-000000000001',
       payment.encrypt('pm_ins_' || id, 'PaymentMethods.EncryptedStripePaymentMethodId:' || id), '1111', 'Visa', 1, 2099
  FROM n;
COMMIT;
SQL
# pgbench writes until rotate_keys() has returned, however long a loaded
# machine takes (not for a fixed time that the rotation might outlast or
# not even reach): -T is only a backstop, then it is stopped (SIGTERM).  An
# interrupted transaction never committed, so it is in neither upd nor ins.
"$PE_BIN/pgbench" -h "$PE_WORK/$C.sock" -p 5432 -U postgres -n -c 2 -T 600 \
	-f "$PE_WORK/vr.update.sql@3" -f "$PE_WORK/vr.insert.sql@1" vr >"$PE_WORK/vr.pgbench.log" 2>&1 &
BENCH=$!
poll eval '[ "$(sql "SELECT count(*) > 20 FROM upd")" = t ]'
before=$(sql 'SELECT count(*) FROM upd')
resealed=$(sql 'SELECT payment.rotate_keys()')
after=$(sql 'SELECT count(*) FROM upd')
# still writing after the rotation: it ran beside the writers throughout
alive=$(kill -0 $BENCH 2>/dev/null && echo yes)
# SIGTERM: a background job of a non-interactive shell ignores SIGINT
kill -TERM $BENCH 2>/dev/null
wait $BENCH
# and its sessions are gone (a COMMIT it sent just before may still land)
poll eval '[ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE application_name = '"'pgbench'"'")" = 0 ]'

ok "$([ "$alive" = yes ] && ! grep -qiE 'error|abort' "$PE_WORK/vr.pgbench.log"; echo $?)" 'pgbench wrote throughout without an error'
[ "$alive" = yes ] || sed 's/^/# /' "$PE_WORK/vr.pgbench.log"
ok "$([ "$after" -gt "$before" ]; echo $?)" "writes committed while rotate_keys() ran ($before -> $after updates)"
ok "$([ "$resealed" -gt 0 ] && [ "$resealed" -le $((ROWS + 400)) ]; echo $?)" "rotate_keys() returned a plausible count ($resealed rows)"

# every value opens under its own context
is "$(sql "SELECT count(*) FROM \"PaymentMethods\" WHERE payment.decrypt(\"EncryptedStripePaymentMethodId\", 'PaymentMethods.EncryptedStripePaymentMethodId:' || \"Id\") IS NOT NULL") " \
	"$(sql 'SELECT count(*) FROM "PaymentMethods"') " 'every saved method opens under its context'
# nothing lost: a row updated by pgbench holds v2, any other row v1 or its insert
is "$(sql "SELECT count(*) FROM \"PaymentMethods\" m
            WHERE payment.decrypt(m.\"EncryptedStripePaymentMethodId\", 'PaymentMethods.EncryptedStripePaymentMethodId:' || m.\"Id\")
                  IS DISTINCT FROM CASE WHEN m.\"Id\" IN (SELECT id FROM upd) THEN 'pm_v2_' || m.\"Id\"
                                        WHEN m.\"Id\" IN (SELECT id FROM ins) THEN 'pm_ins_' || m.\"Id\"
                                        ELSE 'pm_v1_' || m.\"Id\" END")" 0 'no committed update was lost and no value changed its meaning'
is "$(sql 'SELECT count(*) FROM "PaymentMethods"')" "$(sql "SELECT $ROWS + count(*) FROM ins")" 'every inserted row is there'
is "$(sql "SELECT count(*) FROM \"Payments\" WHERE payment.decrypt(\"EncryptedStripePaymentIntentId\", 'Payments.EncryptedStripePaymentIntentId:' || \"Id\") = 'pi_' || ltrim(right(\"Id\"::text, 12), '0')
            AND payment.decrypt(\"EncryptedStripeCustomerId\", 'Payments.EncryptedStripeCustomerId:' || \"Id\") = 'cus_' || ltrim(right(\"Id\"::text, 12), '0')")" 200 'payments re-sealed and still open'
is "$(sql "SELECT count(*) FROM payment.outbox WHERE request->>'payment_method' LIKE 'pe1:k2:%'
            AND payment.decrypt(request->>'payment_method', 'outbox.request.payment_method:' || idempotency_key) = 'pm_out_' || substr(idempotency_key, 6)")" 200 'outbox requests re-sealed under k2 and still open'
is "$(sql "SELECT COALESCE(sum(sealed_values), 0) FROM payment.key_usage WHERE key_id = 'k1'")" 0 'nothing is sealed under k1 any more: it can leave the keyring'
is "$(sql "SELECT count(*) >= ceil($resealed / 500.0) AND bool_and(\"ActionDescription\" LIKE 'key rotation: re-sealed % under key k2 (from k1: %)' AND \"PaymentId\" IS NULL)
            FROM \"PaymentAuditLog\" WHERE \"ActionType\" = 'SystemAction' AND \"ActionDescription\" LIKE 'key rotation:%'")" t 'one SystemAction summary row per batch, naming the keys'
is "$(sql "SELECT count(*) FROM \"PaymentAuditLog\" WHERE \"ActionDescription\" LIKE '%(changed: Encrypted%' AND \"CreatedAt\" >= (SELECT min(\"CreatedAt\") FROM \"PaymentAuditLog\" WHERE \"ActionDescription\" LIKE 'key rotation:%')
            AND \"SessionUser\" IS NOT NULL AND \"ActionDescription\" NOT LIKE '%Metadata%' AND \"TableName\" = 'Payments'")" 0 'no per-row audit entries for the re-sealed payments'
is "$(sql 'SELECT payment.rotate_keys()')" 0 'a second rotation finds nothing to re-seal'

exit $((FAILS > 0))
