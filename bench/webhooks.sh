#!/usr/bin/env bash
#
# bench/webhooks.sh — webhook intake throughput.
#
# Fresh Pending payments, one signed payment_intent.succeeded event each
# (about 2 kB, shaped like Stripe's), delivered by pgbench (prepared
# statements, PE_BENCH_CLIENTS clients, PE_BENCH_SECONDS each), in three
# runs against the same cluster:
#   ours      payment.handle_webhook(payload, signature): verify (HMAC-SHA256,
#             constant-time compare), parse, seal and record the event, apply
#             it (Pending -> Completed through the state and audit triggers)
#   plain     the same events applied by plain SQL without verification:
#             parse, record the event (payload as jsonb, unsealed) ON
#             CONFLICT DO NOTHING, and the same UPDATE through the same
#             triggers
#   replay    payment.handle_webhook of events already applied: verify,
#             parse and the duplicate lookup only, i.e. the intake's fixed
#             cost with the signature check in it (an upper bound of the
#             signature's share)
# Events are signed just before each run (the 300 s tolerance).
#
# Prints "RESULT name | what | ours | baseline | ratio" lines.
# Environment: PE_BENCH_CLIENTS (2), PE_BENCH_SECONDS (10), PE_BENCH_EVENTS
# (30000 per run: more than a run can use).
#
set -euo pipefail

CLIENTS=${PE_BENCH_CLIENTS:-2}
DURATION=${PE_BENCH_SECONDS:-10}
EVENTS=${PE_BENCH_EVENTS:-30000}
DB=pe_bench_webhooks
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=$(mktemp -d "${PE_WORK:-/tmp}/bench_webhooks.XXXXXX")
SECRET=whsec_$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
(umask 077; printf '%s\n' "$SECRET" >"$WORK/whsec")
trap 'psql -qX -d postgres -c "ALTER SYSTEM RESET payment_ext.webhook_secret_file" -c "SELECT pg_reload_conf()" >/dev/null 2>&1; rm -rf "$WORK"' EXIT

psql -qX -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" \
	-c "ALTER SYSTEM SET payment_ext.webhook_secret_file = '$WORK/whsec'" -c "SELECT pg_reload_conf()" >/dev/null
psql -qX -v ON_ERROR_STOP=1 -d "$DB" >/dev/null <<'SQL'
CREATE EXTENSION payment_ext;
INSERT INTO "Events" ("Id", "Title", "StartDate", "EndDate")
	VALUES ('20000000-0000-0000-0000-000000000001', 'Bench', now(), now() + interval '1 hour');
CREATE TABLE bench_events (run text, n int, payload text, sig text, PRIMARY KEY (run, n));
CREATE SEQUENCE bench_seq;
-- the baseline's events table: what an application would keep without the extension
CREATE TABLE plain_events (event_id text PRIMARY KEY, type text, payload jsonb, received_at timestamptz DEFAULT now());
SQL

# make_run RUN: EVENTS Pending payments (new users and registrations) and a
# signed payment_intent.succeeded for each, stored in bench_events
make_run() {
	local run=$1
	psql -qX -v ON_ERROR_STOP=1 -d "$DB" >/dev/null <<SQL
INSERT INTO "Users" ("Id", "SceneName", "Email")
SELECT md5('$run-u' || i)::uuid, '$run-u' || i, '$run-u' || i || '@example.org' FROM generate_series(1, $EVENTS) i;
INSERT INTO "EventRegistrations" ("Id", "EventId", "UserId")
SELECT md5('$run-r' || i)::uuid, '20000000-0000-0000-0000-000000000001', md5('$run-u' || i)::uuid FROM generate_series(1, $EVENTS) i;
INSERT INTO "Payments" ("Id", "EventRegistrationId", "UserId", "AmountValue", "PaymentMethodType")
SELECT md5('$run-p' || i)::uuid, md5('$run-r' || i)::uuid, md5('$run-u' || i)::uuid, 30.00, 1 FROM generate_series(1, $EVENTS) i;
SQL
	psql -qAtX -d "$DB" -c "SELECT i, md5('$run-p' || i)::uuid FROM generate_series(1, $EVENTS) i" |
		python3 "$WORK/gen.py" "$run" "$SECRET" "$WORK/$run.csv"
	psql -qX -d "$DB" -c "\\copy bench_events FROM '$WORK/$run.csv' WITH (FORMAT csv)"
}

# gen.py RUN SECRET OUT: payment ids ("n|uuid" lines) in, signed events (CSV) out
cat >"$WORK/gen.py" <<'EOF'
import csv, hashlib, hmac, json, secrets, sys, time
run, secret, out = sys.argv[1], sys.argv[2].encode(), sys.argv[3]
t = int(time.time())
with open(out, "w", newline="") as f:
    w = csv.writer(f)
    for line in sys.stdin:
        n, pid = line.strip().split("|")
        pi = "pi_" + secrets.token_hex(12)
        obj = {"id": pi, "object": "payment_intent", "amount": 3000, "amount_capturable": 0,
               "amount_received": 3000, "capture_method": "automatic",
               "client_secret": pi + "_secret_" + secrets.token_hex(12), "confirmation_method": "automatic",
               "created": t, "currency": "usd", "customer": None, "description": None,
               "latest_charge": "ch_" + secrets.token_hex(12), "livemode": False,
               "metadata": {"payment_id": pid, "registration_id": pid},
               "next_action": None, "payment_method": "pm_" + secrets.token_hex(12),
               "payment_method_options": {"card": {"installments": None, "network": None,
                                                   "request_three_d_secure": "automatic"}},
               "payment_method_types": ["card"], "processing": None, "receipt_email": None,
               "shipping": None, "statement_descriptor": None, "status": "succeeded",
               "automatic_payment_methods": {"allow_redirects": "never", "enabled": True}}
        ev = {"id": "evt_" + secrets.token_hex(12), "object": "event", "api_version": "2023-08-16",
              "created": t, "data": {"object": obj}, "livemode": False, "pending_webhooks": 1,
              "request": {"id": "req_" + secrets.token_hex(7), "idempotency_key": "pe-" + pid + "-pi-1"},
              "type": "payment_intent.succeeded"}
        payload = json.dumps(ev, indent=2)
        sig = "t=%d,v1=%s" % (t, hmac.new(secret, b"%d." % t + payload.encode(), hashlib.sha256).hexdigest())
        w.writerow([run, n, payload, sig])
EOF

cat >"$WORK/ours.sql" <<'EOF'
SELECT payment.handle_webhook(payload, sig) FROM bench_events WHERE run = 'ours' AND n = (SELECT nextval('bench_seq'));
EOF
cat >"$WORK/replay.sql" <<'EOF'
\set n random(1, :applied)
SELECT payment.handle_webhook(payload, sig) FROM bench_events WHERE run = 'ours' AND n = :n;
EOF
cat >"$WORK/plain.sql" <<'EOF'
SELECT payload AS body, (payload::jsonb)->'data'->'object'->'metadata'->>'payment_id' AS pid
  FROM bench_events WHERE run = 'plain' AND n = (SELECT nextval('bench_seq')) \gset
BEGIN;
INSERT INTO plain_events (event_id, type, payload)
SELECT j->>'id', j->>'type', j FROM (SELECT (:body)::jsonb AS j) x ON CONFLICT DO NOTHING;
UPDATE "Payments" SET "Status" = 1 WHERE "Id" = (:pid)::uuid AND "Status" = 0;
COMMIT;
EOF

# tps RUN SCRIPT [pgbench args]: the run's transactions per second
tps() {
	local run=$1 script=$2
	shift 2
	psql -qX -d "$DB" -c "SELECT setval('bench_seq', 1, false)" >/dev/null
	# a fixed number of transactions: every one delivers a fresh event
	pgbench -n -M prepared -c "$CLIENTS" -j "$CLIENTS" -t "$((EVENTS / CLIENTS))" -f "$script" "$@" "$DB" \
		>"$WORK/$run.out" 2>&1 || { cat "$WORK/$run.out" >&2; exit 1; }
	grep -E '^tps' "$WORK/$run.out" | sed -E 's/^tps = ([0-9.]+).*/\1/' | head -1
}

make_run ours
OURS=$(tps ours "$WORK/ours.sql")
APPLIED=$(psql -qAtX -d "$DB" -c "SELECT count(*) FROM payment.webhook_events")
CHECK=$(psql -qAtX -d "$DB" -c "SELECT count(*) FROM \"Payments\" p JOIN payment.webhook_events e ON e.payment_id = p.\"Id\" WHERE p.\"Status\" = 1 AND e.outcome = 'applied: Pending -> Completed'")
[ "$APPLIED" = "$CHECK" ] || { echo "not every event was applied: $APPLIED events, $CHECK completed" >&2; exit 1; }
REPLAY=$(tps replay "$WORK/replay.sql" -D applied="$APPLIED")
[ "$(psql -qAtX -d "$DB" -c "SELECT count(*) FROM payment.webhook_events")" = "$APPLIED" ] || { echo "a replay recorded something" >&2; exit 1; }
make_run plain
PLAIN=$(tps plain "$WORK/plain.sql")

SIZE=$(psql -qAtX -d "$DB" -c "SELECT round(avg(length(payload))) FROM bench_events")
echo "events of about $SIZE bytes, $CLIENTS clients, $((EVENTS / CLIENTS)) transactions each per run; $APPLIED events verified and applied"
echo "ours (verify + seal + record + apply): $OURS events/s"
echo "plain SQL (no verification, payload unsealed, same UPDATE and triggers): $PLAIN events/s"
echo "replay (verify + parse + duplicate lookup, nothing applied): $REPLAY events/s"
python3 - "$OURS" "$PLAIN" "$REPLAY" <<'EOF'
import sys
ours, plain, replay = map(float, sys.argv[1:])
print("RESULT webhooks | verified and applied events per second | %.0f | %.0f (plain SQL, unverified) | %.2f" % (ours, plain, ours / plain))
print("RESULT webhooks | share of an event's time in verify+parse+lookup (upper bound of the signature check) | %.1f%% | - | %.2f" % (100.0 * ours / replay, ours / replay))
EOF
psql -qX -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null
