# tools/cluster.sh — throwaway clusters for the demo, the tests and the
# benchmarks.  Sourced by tools/run (inner part) and by test programs; runs as
# an unprivileged user.  Every cluster listens on a Unix socket in its own
# folder only (listen_addresses = ''), preloads payment_ext and points
# payment_ext.stripe_api_base at the Stripe stand-in on 127.0.0.1 (without
# one: at a port of ours that refuses connections, pe_closed_port), and has
# a keyring of its own, $PE_WORK/NAME.keyring (mode 0600, outside the data
# directory: one key "k1"), named by payment_ext.keyring_file, and a Stripe
# test-mode API key of its own, $PE_WORK/NAME.stripe_key (mode 0600), named
# by payment_ext.stripe_api_key_file.
#
# After pe_stage_install, pe_cluster_start NAME and pe_standin_start these
# are exported for test programs:
#   PE_WORK, PE_BIN (staged PostgreSQL bin), PE_PGXS_REGRESS (pg_regress),
#   PE_STANDIN_PORT, PE_STANDIN_URL, PGHOST/PGPORT/PGUSER of the "main" cluster.

PE_CLUSTERS=()
PE_STANDIN_PID=

# pe_stage_install STAGE REPO
#	Copy this machine's PostgreSQL 15 installation into STAGE (relocatable:
#	the server finds its share and lib folders relative to its binary) and
#	install the built extension into it.  PG_CONFIG, when set, names the
#	installation to copy (tools/build-pg.sh's assert-enabled build);
#	otherwise the pg_config on PATH.
pe_stage_install() {
	local stage=$1 repo=$2
	local bindir pkglibdir sharedir pgc=${PG_CONFIG:-pg_config}
	bindir=$("$pgc" --bindir)
	pkglibdir=$("$pgc" --pkglibdir)
	sharedir=$("$pgc" --sharedir)
	mkdir -p "$stage$(dirname "$bindir")" "$stage$(dirname "$sharedir")"
	cp -a "$(dirname "$bindir")/." "$stage$(dirname "$bindir")/"
	[ -d "$stage$pkglibdir" ] || cp -a "$pkglibdir/." "$stage$pkglibdir/"
	cp -a "$sharedir" "$stage$(dirname "$sharedir")/"
	make -s -C "$repo" install DESTDIR="$stage" PG_CONFIG="$pgc" >/dev/null
	export PE_BIN="$stage$bindir"
	export PE_PGXS_REGRESS="$stage$pkglibdir/pgxs/src/test/regress/pg_regress"
	export PATH="$PE_BIN:$PATH"
	export PE_WORK=${WORK:-$(dirname "$stage")}
}

# pe_wait_port_file FILE PID [SECONDS]: wait until the process PID (a
#	server started with port 0 that writes the port it got to FILE, as
#	test/stripe_standin.py --port-file does) has written FILE; fails if PID
#	died first or the deadline (default 60 s: a loaded machine starts
#	Python slowly) passes.  Never pick a free port and hand it to another
#	process: between the two, anything may take it.
pe_wait_port_file() {
	local file=$1 pid=$2 secs=${3:-60} deadline
	deadline=$(($(date +%s) + secs))
	while [ ! -s "$file" ]; do
		kill -0 "$pid" 2>/dev/null || return 1
		[ "$(date +%s)" -lt "$deadline" ] || return 1
		sleep 0.05
	done
}

# pe_closed_port: sets PE_CLOSED_PORT to a port of 127.0.0.1 where every
#	connection is refused, for "no Stripe there": a process of ours holds a
#	socket bound to it that never listens (a fixed port such as 9 may have a
#	listener; this one cannot, nobody else can bind it).  Started once per
#	shell, stopped by pe_cleanup.
PE_CLOSED_PID=
pe_closed_port() {
	[ -n "${PE_CLOSED_PORT:-}" ] && [ -n "$PE_CLOSED_PID" ] && kill -0 "$PE_CLOSED_PID" 2>/dev/null && return 0
	local file="$PE_WORK/closed-port.$$"
	rm -f "$file"
	python3 -c '
import os, signal, socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write("%d\n" % s.getsockname()[1])
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
while True:
    signal.pause()
' "$file" </dev/null >/dev/null 2>&1 &
	PE_CLOSED_PID=$!
	pe_wait_port_file "$file" "$PE_CLOSED_PID" || {
		echo "could not hold a closed port" >&2
		return 1
	}
	PE_CLOSED_PORT=$(cat "$file")
	rm -f "$file"
}

# pe_standin_start: start the Stripe stand-in on 127.0.0.1
#	(test/stripe_standin.py); it binds port 0 itself (or PE_STANDIN_PORT if
#	set) and reports the port it got
pe_standin_start() {
	local standin="$PE_WORK/repo/test/stripe_standin.py" file="$PE_WORK/standin.port"
	[ -f "$standin" ] || return 0
	rm -f "$file"
	python3 "$standin" --port "${PE_STANDIN_PORT:-0}" --port-file "$file" \
		>"$PE_WORK/standin.log" 2>&1 &
	PE_STANDIN_PID=$!
	pe_wait_port_file "$file" "$PE_STANDIN_PID" || {
		echo "Stripe stand-in did not start" >&2
		cat "$PE_WORK/standin.log" >&2
		return 1
	}
	PE_STANDIN_PORT=$(cat "$file")
	export PE_STANDIN_PORT
	export PE_STANDIN_URL="http://127.0.0.1:$PE_STANDIN_PORT"
}

# pe_keyring_key: 64 random hexadecimal digits, a fresh AES-256 key
pe_keyring_key() {
	od -An -tx1 -N32 /dev/urandom | tr -d ' \n'
}

# pe_keyring_create FILE [KEY-ID...]: a keyring file (mode 0600) with a fresh
# key for each id (default: k1), newest last
pe_keyring_create() {
	local file=$1 id
	shift
	[ $# -gt 0 ] || set -- k1
	(
		umask 077
		: >"$file"
		for id in "$@"; do
			printf '%s %s\n' "$id" "$(pe_keyring_key)" >>"$file"
		done
	)
	chmod 600 "$file"
}

# pe_stripe_key_create FILE: a Stripe test-mode secret key file (mode 0600)
pe_stripe_key_create() {
	(
		umask 077
		printf 'sk_test_%s\n' "$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')" >"$1"
	)
	chmod 600 "$1"
}

# pe_cluster_conf NAME: the postgresql.conf lines every cluster gets
pe_cluster_conf() {
	cat <<EOF
listen_addresses = ''
payment_ext.keyring_file = '$PE_WORK/$1.keyring'
payment_ext.stripe_api_key_file = '$PE_WORK/$1.stripe_key'
unix_socket_directories = '$PE_WORK/$1.sock'
shared_preload_libraries = 'payment_ext'
payment_ext.stripe_api_base = '${PE_STANDIN_URL:-http://127.0.0.1:${PE_CLOSED_PORT:?pe_closed_port first}}'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 120
shared_buffers = 256MB
log_line_prefix = '%m [%p] %q%a '
log_min_messages = warning
lc_messages = 'C'
timezone = '${PE_SERVER_TZ:-UTC}'
EOF
}

# pe_cluster_start NAME [conf lines...]: initdb and start a cluster
pe_cluster_start() {
	local name=$1
	shift
	local data="$PE_WORK/$name"
	mkdir -p "$PE_WORK/$name.sock"
	# no stand-in: the worker's requests go to a port that refuses them
	[ -n "${PE_STANDIN_URL:-}" ] || pe_closed_port || return 1
	"$PE_BIN/initdb" -D "$data" -A trust -U postgres -E UTF8 --locale=C \
		>"$PE_WORK/$name.initdb.log" 2>&1 || {
		cat "$PE_WORK/$name.initdb.log" >&2
		return 1
	}
	{
		pe_cluster_conf "$name"
		local line
		for line in "$@"; do echo "$line"; done
	} >>"$data/postgresql.conf"
	[ -f "$PE_WORK/$name.keyring" ] || pe_keyring_create "$PE_WORK/$name.keyring"
	[ -f "$PE_WORK/$name.stripe_key" ] || pe_stripe_key_create "$PE_WORK/$name.stripe_key"
	PE_CLUSTERS+=("$name")
	# PE_FAKETIME=EPOCH: the whole cluster's clock moved (libfaketime, an
	# offset computed now, so the postmaster and every backend it forks
	# share one clock that starts at EPOCH and goes on ticking); monotonic
	# clocks, which time waits and timeouts, stay real.
	local clock=()
	if [ -n "${PE_FAKETIME:-}" ]; then
		clock=(env LD_PRELOAD="$(pe_libfaketime)" FAKETIME="$(printf %+d $((PE_FAKETIME - $(date +%s))))"
			FAKETIME_DONT_FAKE_MONOTONIC=1 FAKETIME_DONT_RESET=1)
	fi
	"${clock[@]}" "$PE_BIN/pg_ctl" -D "$data" -l "$PE_WORK/$name.log" -w -t 60 start >/dev/null || {
		cat "$PE_WORK/$name.log" >&2
		return 1
	}
	if [ "$name" = main ]; then
		export PGHOST="$PE_WORK/main.sock" PGPORT=5432 PGUSER=postgres
	fi
}

# pe_libfaketime: the path of Debian's libfaketime (package libfaketime)
pe_libfaketime() {
	local f
	for f in /usr/lib/*/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1; do
		[ -e "$f" ] && { echo "$f"; return 0; }
	done
	echo "libfaketime not found (apt-get install libfaketime)" >&2
	return 1
}

# pe_cluster_stop NAME [mode]
pe_cluster_stop() {
	"$PE_BIN/pg_ctl" -D "$PE_WORK/$1" -m "${2:-fast}" -w -t 60 stop >/dev/null 2>&1 || true
}

# pe_psql NAME DB [psql args...]
pe_psql() {
	local name=$1 db=$2
	shift 2
	"$PE_BIN/psql" -h "$PE_WORK/$name.sock" -p 5432 -U postgres -d "$db" "$@"
}

# pe_cleanup: stop every cluster, the stand-in and the closed port's
# holder started here, whatever happened
pe_cleanup() {
	local name pid
	for name in "${PE_CLUSTERS[@]}"; do
		pe_cluster_stop "$name" immediate
	done
	for pid in "$PE_STANDIN_PID" "$PE_CLOSED_PID"; do
		[ -n "$pid" ] || continue
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
}
