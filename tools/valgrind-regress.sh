#!/usr/bin/env bash
#
# tools/valgrind-regress.sh — the pg_regress suite (the C functions'
# regression tests) with the postmaster and every backend and worker under
# valgrind's memcheck, against the assert-enabled, USE_VALGRIND build of
# tools/build-pg.sh.  Prints the number of tests run and of valgrind errors
# (with the first reports), and exits non-zero on any failed test or error.
#
#   bash tools/valgrind-regress.sh        # as root or the postgres user; PE_KEEP=1 keeps the folder
#
# Environment: PE_PG_CONFIG (default /work/cache/pg15-cassert/bin/pg_config),
# PE_VALGRIND_TIMEOUT (seconds for the whole suite, default 5400).
#
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
PGC=${PE_PG_CONFIG:-/work/cache/pg15-cassert/bin/pg_config}
RUN_AS=postgres
log() { printf '%s\n' "tools/valgrind-regress.sh: $*" >&2; }

if [ "${1:-}" != --inner ]; then
	[ -x "$PGC" ] || { log "no $PGC: run tools/build-pg.sh first"; exit 1; }
	command -v valgrind >/dev/null || { log "valgrind is not installed (apt-get install valgrind)"; exit 1; }
	work=$(mktemp -d /tmp/payment_ext_vg.XXXXXX)
	chmod 755 "$work"
	mkdir -p "$work/repo"
	tar -C "$REPO" --exclude=./.git --exclude='*.o' --exclude='*.bc' --exclude='*.so' \
		--exclude=./results -cf - . | tar -C "$work/repo" -xf -
	as=()
	if [ "$(id -u)" -eq 0 ]; then
		chown -R "$RUN_AS:" "$work"
		as=(runuser -u "$RUN_AS" --)
	fi
	rc=0
	"${as[@]}" env PE_PG_CONFIG="$PGC" PE_VALGRIND_TIMEOUT="${PE_VALGRIND_TIMEOUT:-5400}" \
		bash "$work/repo/tools/valgrind-regress.sh" --inner "$work" || rc=$?
	if [ "${PE_KEEP:-0}" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
	exit $rc
fi

# --- inner part, unprivileged ----------------------------------------------
WORK=$2
cd "$WORK/repo"
export PG_CONFIG=$PGC
make -s >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; exit 1; }
# shellcheck source=tools/cluster.sh
source "$WORK/repo/tools/cluster.sh"
pe_stage_install "$WORK/stage" "$WORK/repo"
SUPP="$(dirname "$(dirname "$PGC")")/valgrind.supp"
[ -f "$SUPP" ] || { log "no $SUPP"; exit 1; }

name=main
data="$WORK/$name"
mkdir -p "$WORK/$name.sock" "$WORK/vg"
export PE_WORK="$WORK"
pe_closed_port || { log "could not hold a closed port"; exit 1; }
"$PE_BIN/initdb" -D "$data" -A trust -U postgres -E UTF8 --locale=C >"$WORK/initdb.log" 2>&1 ||
	{ cat "$WORK/initdb.log"; exit 1; }
{
	pe_cluster_conf "$name"
	# smaller, for valgrind's sake
	echo "shared_buffers = 32MB"
	echo "max_connections = 20"
	echo "max_worker_processes = 8"
	echo "autovacuum = off"
} >>"$data/postgresql.conf"
pe_keyring_create "$WORK/$name.keyring"
pe_stripe_key_create "$WORK/$name.stripe_key"

valgrind --quiet --trace-children=yes --track-origins=yes --read-var-info=no \
	--leak-check=no --num-callers=30 --suppressions="$SUPP" \
	--error-markers=VALGRINDERROR-BEGIN,VALGRINDERROR-END \
	--log-file="$WORK/vg/%p.log" \
	"$PE_BIN/postgres" -D "$data" >"$WORK/$name.log" 2>&1 &
PM=$!
stop() {
	"$PE_BIN/pg_ctl" -D "$data" -m fast -w -t 600 stop >/dev/null 2>&1 || kill "$PM" 2>/dev/null || true
	wait "$PM" 2>/dev/null || true
	[ -z "$PE_CLOSED_PID" ] || kill "$PE_CLOSED_PID" 2>/dev/null || true
}
trap stop EXIT
export PGHOST="$WORK/$name.sock" PGPORT=5432 PGUSER=postgres PE_WORK="$WORK"
for _ in $(seq 1 600); do
	"$PE_BIN/pg_isready" -q -h "$PGHOST" -p 5432 && break
	kill -0 "$PM" 2>/dev/null || { cat "$WORK/$name.log"; exit 1; }
	sleep 1
done
"$PE_BIN/pg_isready" -q -h "$PGHOST" -p 5432 || { log "server did not start"; cat "$WORK/$name.log"; exit 1; }

start=$(date +%s)
rc=0
PE_TESTS=regress timeout "${PE_VALGRIND_TIMEOUT}" bash "$WORK/repo/test/run-tests" | tee "$WORK/regress.out" || rc=$?
log "pg_regress under valgrind took $(($(date +%s) - start)) s"
stop
trap - EXIT

errors=$(cat "$WORK"/vg/*.log 2>/dev/null | grep -c '^==[0-9]*== VALGRINDERROR-BEGIN' || true)
procs=$(find "$WORK/vg" -name '*.log' | wc -l)
tests=$(grep -cE '\.\.\. (ok|FAILED|failed)' "$WORK/test-output/regress.log" 2>/dev/null || echo 0)
echo "valgrind: $procs processes traced, $errors errors, $tests pg_regress tests"
if [ "$errors" -gt 0 ]; then
	for f in $(grep -l 'VALGRINDERROR-BEGIN' "$WORK"/vg/*.log | head -5); do
		echo "== $f"
		sed -n '/VALGRINDERROR-BEGIN/,/VALGRINDERROR-END/p' "$f" | head -60
	done
	rc=1
fi
exit $rc
