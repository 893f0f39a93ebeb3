# tools/cluster.sh — throwaway clusters for the demo, the tests and the
# benchmarks.  Sourced by tools/run (inner part) and by test programs; runs as
# an unprivileged user.  Every cluster listens on a Unix socket in its own
# folder only (listen_addresses = ''), preloads payment_ext and points
# payment_ext.stripe_api_base at the Stripe stand-in on 127.0.0.1, and has
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
#	install the built extension into it.
pe_stage_install() {
	local stage=$1 repo=$2
	local bindir pkglibdir sharedir
	bindir=$(pg_config --bindir)
	pkglibdir=$(pg_config --pkglibdir)
	sharedir=$(pg_config --sharedir)
	mkdir -p "$stage$(dirname "$bindir")" "$stage$(dirname "$sharedir")"
	cp -a "$(dirname "$bindir")/." "$stage$(dirname "$bindir")/"
	[ -d "$stage$pkglibdir" ] || cp -a "$pkglibdir/." "$stage$pkglibdir/"
	cp -a "$sharedir" "$stage$(dirname "$sharedir")/"
	make -s -C "$repo" install DESTDIR="$stage" >/dev/null
	export PE_BIN="$stage$bindir"
	export PE_PGXS_REGRESS="$stage$pkglibdir/pgxs/src/test/regress/pg_regress"
	export PATH="$PE_BIN:$PATH"
	export PE_WORK=${WORK:-$(dirname "$stage")}
}

# pe_free_port: a free TCP port on 127.0.0.1
pe_free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# pe_standin_start: start the Stripe stand-in on 127.0.0.1 (test/stripe_standin.py)
pe_standin_start() {
	PE_STANDIN_PORT=${PE_STANDIN_PORT:-$(pe_free_port)}
	export PE_STANDIN_PORT
	export PE_STANDIN_URL="http://127.0.0.1:$PE_STANDIN_PORT"
	local standin="$PE_WORK/repo/test/stripe_standin.py"
	if [ -f "$standin" ]; then
		python3 "$standin" --port "$PE_STANDIN_PORT" \
			>"$PE_WORK/standin.log" 2>&1 &
		PE_STANDIN_PID=$!
		local i
		for i in $(seq 1 100); do
			python3 - "$PE_STANDIN_PORT" <<'EOF' 2>/dev/null && return 0
import socket, sys
socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.2).close()
EOF
			sleep 0.05
		done
		echo "Stripe stand-in did not start" >&2
		cat "$PE_WORK/standin.log" >&2
		return 1
	fi
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
payment_ext.stripe_api_base = '${PE_STANDIN_URL:-http://127.0.0.1:9}'
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

# pe_cleanup: stop every cluster and the stand-in, whatever happened
pe_cleanup() {
	local name
	for name in "${PE_CLUSTERS[@]}"; do
		pe_cluster_stop "$name" immediate
	done
	if [ -n "$PE_STANDIN_PID" ]; then
		kill "$PE_STANDIN_PID" 2>/dev/null || true
		wait "$PE_STANDIN_PID" 2>/dev/null || true
	fi
}
