# test/worker_lib.sh — helpers of the outbox worker tests (test/t/worker_*.sh)
# and of bench/worker.sh.  Sourced, never run; needs PE_WORK and PE_BIN, as
# test/run-tests and bench/run provide.
#
# Each program starts its own Stripe stand-in and its own cluster (Unix
# socket only, payment_ext preloaded, the worker draining database
# "postgres"), prints TAP, and stops everything it started on exit.
#
# Rules for what a test may assume (doc/testing.md, "What a test may
# assume"): no fixed port (the stand-in binds port 0 and reports the port
# it got; "nothing listens there" is a port we hold closed, w_closed_url);
# no fixed pause before an assertion (w_wait, w_wait_log: poll until the
# state is reached, with a deadline generous enough for a loaded machine);
# timeouts of the worker long enough that a slow machine does not add
# attempts.

# shellcheck source=tools/cluster.sh
source "$PE_WORK/repo/tools/cluster.sh"

W_N=0
W_FAILS=0
W_STANDIN_PIDS=()
W_NAMES=()

# ok COND-EXIT-STATUS NAME: pass when the previous command succeeded
ok() {
	local rc=$1
	shift
	W_N=$((W_N + 1))
	if [ "$rc" -eq 0 ]; then
		echo "ok $W_N - $*"
	else
		echo "not ok $W_N - $*"
		W_FAILS=$((W_FAILS + 1))
	fi
}

# is GOT EXPECTED NAME
is() {
	W_N=$((W_N + 1))
	if [ "$1" = "$2" ]; then
		echo "ok $W_N - $3"
	else
		echo "not ok $W_N - $3"
		echo "#   got:      '$1'"
		echo "#   expected: '$2'"
		W_FAILS=$((W_FAILS + 1))
	fi
}

# w_standin_start NAME [stand-in flags...]: start a stand-in; sets W_URL.
# It binds port 0 itself and writes the port it got (never a port picked
# here and handed over: something else could take it in between).
w_standin_start() {
	local name=$1 pid
	shift
	rm -f "$PE_WORK/$name.port"
	python3 "$PE_WORK/repo/test/stripe_standin.py" --port 0 --port-file "$PE_WORK/$name.port" \
		"$@" >"$PE_WORK/$name.standin.log" 2>&1 &
	pid=$!
	W_STANDIN_PIDS+=("$pid")
	if ! pe_wait_port_file "$PE_WORK/$name.port" "$pid"; then
		echo "# the Stripe stand-in $name did not start:"
		sed 's/^/#   /' "$PE_WORK/$name.standin.log"
		return 1
	fi
	W_URL="http://127.0.0.1:$(cat "$PE_WORK/$name.port")"
	export W_URL
}

# w_closed_url: W_URL at a port of 127.0.0.1 that refuses every connection
# (held by a socket of ours that never listens: pe_closed_port), for a
# cluster that must reach no Stripe
w_closed_url() {
	pe_closed_port || return 1
	W_URL="http://127.0.0.1:$PE_CLOSED_PORT"
	export W_URL
}

# w_cluster NAME [conf lines...]: a cluster whose worker drains "postgres"
# through the stand-in at W_URL, fast retries, no rate limit in the way;
# the extension installed with a few users, one event and registrations.
# Request timeouts are 5 s: the stand-in answers in milliseconds, but on a
# loaded machine a 1 s timeout could expire before an answer that is there,
# and add an attempt that tests counting attempts would not expect.
w_cluster() {
	local name=$1
	shift
	W_NAMES+=("$name")
	rm -rf "${PE_WORK:?}/$name" "$PE_WORK/$name.log"
	pe_cluster_start "$name" \
		"payment_ext.stripe_api_base = '$W_URL'" \
		"payment_ext.max_requests_per_second = 100000" \
		"payment_ext.retry_base_ms = 20" \
		"payment_ext.retry_max_ms = 200" \
		"payment_ext.request_timeout_ms = 5000" \
		"payment_ext.connect_timeout_ms = 5000" \
		"$@"
	w_sql "$name" "CREATE EXTENSION payment_ext" >/dev/null
}

# w_seed NAME COUNT: COUNT users, one event, a registration per user;
# registration i is 30000000-0000-0000-0000-<i on 12 digits>, user i
# 10000000-...-<i>
w_seed() {
	w_sql "$1" "
INSERT INTO \"Users\" (\"Id\", \"SceneName\", \"Email\")
SELECT ('10000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, 'u' || i, 'u' || i || '@example.org'
  FROM generate_series(1, $2) i;
INSERT INTO \"Events\" (\"Id\", \"Title\", \"StartDate\", \"EndDate\")
VALUES ('20000000-0000-0000-0000-000000000001', 'Worker test', now(), now());
INSERT INTO \"EventRegistrations\" (\"Id\", \"EventId\", \"UserId\")
SELECT ('30000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, '20000000-0000-0000-0000-000000000001',
       ('10000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid
  FROM generate_series(1, $2) i;" >/dev/null
}

# w_reg I / w_user I: the ids of registration and user I
w_reg() { printf '30000000-0000-0000-0000-%012d' "$1"; }
w_user() { printf '10000000-0000-0000-0000-%012d' "$1"; }

# w_sql NAME SQL: run SQL in database postgres of cluster NAME, unaligned
w_sql() {
	"$PE_BIN/psql" -h "$PE_WORK/$1.sock" -p 5432 -U postgres -d postgres \
		-X -qAt -v ON_ERROR_STOP=1 -c "$2"
}

# w_wait NAME SQL EXPECTED SECONDS: poll SQL until it prints EXPECTED or the
# deadline passes; prints the last value; status 0 when it matched
w_wait() {
	local name=$1 sql=$2 want=$3 secs=$4 got deadline
	deadline=$(($(date +%s%N) + secs * 1000000000))
	while :; do
		got=$(w_sql "$name" "$sql" 2>/dev/null)
		if [ "$got" = "$want" ]; then
			echo "$got"
			return 0
		fi
		if [ "$(date +%s%N)" -gt "$deadline" ]; then
			echo "$got"
			return 1
		fi
		sleep 0.1
	done
}

# w_wait_log FILE REGEX SECONDS: poll until a line of FILE matches the
# extended REGEX or the deadline passes; status 0 when it matched (a server
# writes its log line when it gets to it, not when the test looks)
w_wait_log() {
	local file=$1 re=$2 secs=$3 deadline
	deadline=$(($(date +%s%N) + secs * 1000000000))
	until grep -qE -- "$re" "$file" 2>/dev/null; do
		[ "$(date +%s%N)" -gt "$deadline" ] && return 1
		sleep 0.1
	done
}

# w_http METHOD PATH [JSON]: a control request to the stand-in at W_URL
w_http() {
	python3 - "$W_URL" "$@" <<'EOF'
import json, sys, urllib.request
url, method, path = sys.argv[1], sys.argv[2], sys.argv[3]
data = sys.argv[4].encode() if len(sys.argv) > 4 else None
req = urllib.request.Request(url + path, data=data, method=method,
                             headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=30) as r:
        sys.stdout.write(r.read().decode())
except urllib.error.HTTPError as e:
    sys.stdout.write(e.read().decode())
EOF
}

# w_json EXPR: evaluate a Python expression over the JSON on stdin (as j)
w_json() {
	python3 -c "import json, sys; j = json.load(sys.stdin); print($1)"
}

# w_worker_pid NAME: the outbox worker's pid, from pg_stat_activity
w_worker_pid() {
	w_sql "$1" "SELECT pid FROM pg_stat_activity WHERE backend_type = 'payment_ext outbox worker'"
}

# w_cleanup: stop every cluster and stand-in started here, remove the data
w_cleanup() {
	local p n
	pe_cleanup
	for p in "${W_STANDIN_PIDS[@]}"; do
		kill "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	for n in "${W_NAMES[@]}"; do
		rm -rf "${PE_WORK:?}/$n"
	done
}

# w_done: the exit status of a test program
w_done() {
	[ "$W_FAILS" -eq 0 ]
}
