#!/usr/bin/env bash
#
# test/t/worker_lock_order.sh — issue 17, item 4: the worker's outcome and
# a webhook for the same payment arrive together; with one lock order (the
# payment's row first, doc/payments-and-refunds.md, "Lock order") they
# never deadlock.
#
# 1. Barrier, LOCK_ROUNDS times (test/worker_lock_race.py drives psql
#    sessions): a session holds the payment's row lock as
#    payment.handle_webhook takes it first thing; the worker's answer
#    (payment_intent.succeeded from the Stripe stand-in) arrives and its
#    recording waits; then, in the same transaction, the session applies
#    the stand-in's signed payment_intent.succeeded event and commits.
#    Before the fix the recording had already written payment.intents and
#    payment.stripe_refs when it waited for the payment, so the webhook
#    then waited for the worker: a deadlock (40P01) every round, and an
#    attempt spent.  Now: no deadlock in the server log, one attempt per
#    request, every payment Completed once, charged once.
# 2. Free race: RACE_PAYMENTS payments created at once while three
#    deliverers hand each payment_intent.succeeded event to
#    payment.handle_webhook as soon as the stand-in emits it: no deadlock,
#    one attempt each, all Completed.
# Prints TAP.
#
set -uo pipefail
source "$PE_WORK/repo/test/worker_lib.sh"
trap w_cleanup EXIT

LOCK_ROUNDS=${LOCK_ROUNDS:-200}
RACE_PAYMENTS=${RACE_PAYMENTS:-200}
echo "1..12"

C=w_lockorder
D="$PE_WORK/$C.files"
mkdir -p "$D"
S1=whsec_$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
SECRETS="$PE_WORK/$C.whsec"
(umask 077; printf '%s\n' "$S1" >"$SECRETS")
w_standin_start $C --webhook-secret "$S1"
# a short deadlock_timeout: a deadlock (before the fix) is found at once
w_cluster $C "payment_ext.webhook_secret_file = '$SECRETS'" "deadlock_timeout = '20ms'" \
	"log_lock_waits = off" "payment_ext.max_attempts = 10"
w_seed $C $((LOCK_ROUNDS + RACE_PAYMENTS))
LOG="$PE_WORK/$C.log"

PSQL_ARGS=$(python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' \
	"$PE_BIN/psql" -h "$PE_WORK/$C.sock" -p 5432 -U postgres -d postgres)
DRIVER="$PE_WORK/repo/test/worker_lock_race.py"

# --- 1. the barrier ----------------------------------------------------------------
R=$(python3 "$DRIVER" barrier "$PSQL_ARGS" "$W_URL" "$LOCK_ROUNDS" 1)
echo "# barrier: $R"
BARRIER_SQL="FROM payment.outbox o JOIN \"Payments\" p ON p.\"Id\" = o.payment_id WHERE o.kind = 'payment_intent.create' AND p.\"AmountValue\" = 12.34"

is "$(echo "$R" | w_json "(j['stuck'], j['no_event'], j['worker_waited'])")" "(0, 0, $LOCK_ROUNDS)" \
	"barrier: in every round the worker's answer waited for the webhook's lock, and the round ran to its end"
is "$(grep -c 'deadlock detected' "$LOG")" 0 \
	"barrier: no deadlock in the server log in $LOCK_ROUNDS rounds of webhook and answer for one payment"
is "$(echo "$R" | w_json "j['delivery_errors']")" "[]" "barrier: no webhook delivery failed (no 40P01)"
is "$(w_sql $C "SELECT count(*), max(o.attempts), count(*) FILTER (WHERE o.state = 'done') $BARRIER_SQL")" \
	"$LOCK_ROUNDS|1|$LOCK_ROUNDS" "barrier: every request done at its first attempt (no attempt spent on a deadlock)"
is "$(w_sql $C "SELECT count(*) FILTER (WHERE p.\"Status\" = 1) $BARRIER_SQL")" "$LOCK_ROUNDS" \
	"barrier: every payment Completed"
is "$(w_sql $C "SELECT count(*) FROM payment.webhook_events WHERE type = 'payment_intent.succeeded' AND outcome = 'applied: Pending -> Completed'")" \
	"$LOCK_ROUNDS" "barrier: the webhook completed each payment (the worker's answer, recorded after it, changed nothing)"
is "$(w_sql $C "SELECT count(*) FROM \"PaymentAuditLog\" a JOIN \"Payments\" p ON p.\"Id\" = a.\"PaymentId\" WHERE a.\"ActionType\" = 'PaymentCompleted' AND p.\"AmountValue\" = 12.34")" \
	"$LOCK_ROUNDS" "barrier: one completion audited per payment"
is "$(w_http GET /_test/ledger | w_json "sorted(set(v['charges'] for v in j['by_payment_id'].values()))")" "[1]" \
	"barrier: the stand-in's ledger: every payment charged exactly once"

# --- 2. the free race ----------------------------------------------------------------
R=$(python3 "$DRIVER" race "$PSQL_ARGS" "$W_URL" "$RACE_PAYMENTS" $((LOCK_ROUNDS + 1)))
echo "# free race: $R; webhook outcomes: $(w_sql $C "SELECT string_agg(o || ' x' || n, ', ') FROM (SELECT outcome o, count(*) n FROM payment.webhook_events w JOIN \"Payments\" p ON p.\"Id\" = w.payment_id WHERE type = 'payment_intent.succeeded' AND p.\"AmountValue\" = 56.78 GROUP BY 1 ORDER BY 1) s")"
RACE_SQL="FROM payment.outbox o JOIN \"Payments\" p ON p.\"Id\" = o.payment_id WHERE o.kind = 'payment_intent.create' AND p.\"AmountValue\" = 56.78"

is "$(grep -c 'deadlock detected' "$LOG")|$(echo "$R" | w_json "(j['delivered'], j['delivery_errors'])")" "0|($RACE_PAYMENTS, [])" \
	"free race: every event delivered, no delivery refused, no deadlock in the server log"
is "$(w_sql $C "SELECT count(*), max(o.attempts), count(*) FILTER (WHERE o.state = 'done' AND p.\"Status\" = 1) $RACE_SQL")" \
	"$RACE_PAYMENTS|1|$RACE_PAYMENTS" "free race: every payment Completed, every request at its first attempt"
is "$(w_sql $C "SELECT count(*) FROM \"PaymentAuditLog\" a JOIN \"Payments\" p ON p.\"Id\" = a.\"PaymentId\" WHERE a.\"ActionType\" = 'PaymentCompleted' AND p.\"AmountValue\" = 56.78")|$(w_sql $C "SELECT bool_and(payment.verify_audit(\"Id\")) FROM \"Payments\"")" \
	"$RACE_PAYMENTS|t" "free race: one completion audited per payment, every chain verifies"
is "$(w_http GET /_test/ledger | w_json "(len(j['by_payment_id']), sorted(set(v['charges'] for v in j['by_payment_id'].values())))")" \
	"($((LOCK_ROUNDS + RACE_PAYMENTS)), [1])" "the ledger: every payment of the test charged exactly once"

w_done
