#!/usr/bin/env bash
#
# test/t/vault_keyring.sh — the keyring file on a cluster of its own: a
# missing, group- or world-readable, malformed or duplicate-id file, one in
# the data directory (also through a symbolic link), reload after the file
# changes (in the same session), a wrong key, a removed key, the encrypted
# keyring and its passphrase command, and that no key reaches the server
# log.  TAP output.
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
is() {	# is GOT WANT NAME
	local r=1
	[ "$1" = "$2" ] && r=0
	ok $r "$3"
	[ $r = 0 ] || echo "#   got: '$1', want: '$2'"
}
like() {	# like GOT REGEX NAME
	local r=1
	[[ "$1" =~ $2 ]] && r=0
	ok $r "$3"
	[ $r = 0 ] || echo "#   got: '$1', want match: '$2'"
}

echo "1..27"
C=vk
KR="$PE_WORK/$C.keyring"
trap 'pe_cleanup' EXIT
pe_cluster_start $C >/dev/null
sql() { pe_psql $C vk -XAtq -c "$1" 2>&1; }
pe_psql $C postgres -XAtq -c 'CREATE DATABASE vk' >/dev/null
sql 'CREATE EXTENSION payment_ext' >/dev/null

# poll CMD...: run CMD until it succeeds or 60 s pass (a reload reaches the
# backends when the postmaster gets to it: later on a loaded machine)
poll() {
	local deadline=$(($(date +%s) + 60))
	until "$@"; do
		[ "$(date +%s)" -lt "$deadline" ] || return 1
		sleep 0.05
	done
}
# wait until a new session sees payment_ext.keyring_file = $1
set_keyring_path() {
	local want=$1
	sql "ALTER SYSTEM SET payment_ext.keyring_file = '$want'" >/dev/null
	sql 'SELECT pg_reload_conf()' >/dev/null
	poll eval '[ "$(sql "SHOW payment_ext.keyring_file")" = "$want" ]'
}
seal_state() { sql "SELECT payment.encrypt('pi_probe', 'c') IS NOT NULL" | head -1; }
errcode_of() {	# SQLSTATE and message of a statement in a new session
	pe_psql $C vk -XAtq -v VERBOSITY=verbose -c "$1" 2>&1 | sed -n 's/^ERROR:  \([0-9A-Z]\{5\}\): \(.*\)/\1 \2/p' | head -1
}

V1=$(sql "SELECT payment.encrypt('pi_keyring_one', 'ctx')")
like "$V1" '^pe1:k1:' 'seals under k1 from the cluster keyring'

# missing file
set_keyring_path "$PE_WORK/no-such.keyring"
like "$(errcode_of "SELECT payment.decrypt('$V1', 'ctx')")" '^F0000 could not open the keyring file' 'a missing keyring file is refused (F0000)'
like "$(errcode_of "SELECT payment.decrypt('$V1', 'ctx')")" '^[^/]*$' 'the error does not show the path to the client'

# group- and world-readable
cp "$KR" "$PE_WORK/open.keyring"
chmod 644 "$PE_WORK/open.keyring"
set_keyring_path "$PE_WORK/open.keyring"
like "$(errcode_of "SELECT payment.decrypt('$V1', 'ctx')")" '^F0000 .*accessible by group or others' 'a world-readable keyring file is refused'
chmod 640 "$PE_WORK/open.keyring"
like "$(errcode_of "SELECT payment.decrypt('$V1', 'ctx')")" '^F0000 .*accessible by group or others' 'a group-readable keyring file is refused'
chmod 600 "$PE_WORK/open.keyring"
is "$(sql "SELECT payment.decrypt('$V1', 'ctx')")" 'pi_keyring_one' 'the same file with mode 0600 opens'

# in the data directory: refused by the setting's check, and through a link
cp "$KR" "$PE_WORK/$C/in-data.keyring"
like "$(sql "ALTER SYSTEM SET payment_ext.keyring_file = '$PE_WORK/$C/in-data.keyring'")" 'invalid value|inside the data directory|must not be inside' 'a path inside the data directory is refused when set'
ln -s "$PE_WORK/$C/in-data.keyring" "$PE_WORK/link.keyring"
set_keyring_path "$PE_WORK/link.keyring"
like "$(errcode_of "SELECT payment.decrypt('$V1', 'ctx')")" '^F0000 the keyring file .* is inside the data directory' 'a link to a file inside the data directory is refused'

# malformed, duplicate, empty: the line number, never the line
T="$PE_WORK/t.keyring"
KEY1=$(sed -n 's/^k1 //p' "$KR")
set_keyring_path "$T"
printf '# comment\n\nk1 %s\nk2 %s\n' "$KEY1" "${KEY1:0:63}" >"$T"; chmod 600 "$T"
G=$(errcode_of "SELECT payment.decrypt('$V1', 'ctx')")
like "$G" '^F0000 malformed line 4 in the keyring file' 'a short key is a malformed line, named by number'
ok "$([[ "$G" != *"${KEY1:0:12}"* ]]; echo $?)" 'the error carries no key material'
printf 'k1 %s\nk1 %s\n' "$KEY1" "$(pe_keyring_key)" >"$T"
like "$(errcode_of "SELECT payment.decrypt('$V1', 'ctx')")" '^F0000 duplicate key id on line 2' 'a duplicate key id is refused, by line number'
printf 'k1 %sZ\n' "${KEY1:0:63}" >"$T"
like "$(errcode_of "SELECT payment.decrypt('$V1', 'ctx')")" '^F0000 malformed line 1' 'a non-hexadecimal key is refused'
printf 'k:1 %s\n' "$KEY1" >"$T"
like "$(errcode_of "SELECT payment.decrypt('$V1', 'ctx')")" '^F0000 malformed line 1' 'a key id with a colon is refused'
printf '# no keys\n' >"$T"
like "$(errcode_of "SELECT payment.decrypt('$V1', 'ctx')")" '^F0000 the keyring file holds no key' 'a keyring without keys is refused'

# reload after the file changes, seen by a session that already loaded it
printf 'k1 %s\n' "$KEY1" >"$T"
coproc PSQL { stdbuf -oL -eL "$PE_BIN/psql" -h "$PE_WORK/$C.sock" -p 5432 -U postgres -d vk -XAtq 2>&1; }
# bash unsets PSQL_PID as soon as the coprocess ends: keep it
PSQL_SESSION=$PSQL_PID
# q SQL: run SQL in the long-lived session; its output in R (no subshell:
# coprocess descriptors are the current shell's)
q() {
	local line
	R=""
	printf '%s;\n' "$1" "SELECT '__END__'" >&"${PSQL[1]}"
	while IFS= read -r -t 60 line <&"${PSQL[0]}"; do
		[ "$line" = "__END__" ] && break
		R+="$line"
	done
}
q "SELECT payment.decrypt('$V1', 'ctx')"
is "$R" 'pi_keyring_one' 'a long-lived session opens under k1'
printf 'k1 %s\nk2 %s\n' "$KEY1" "$(pe_keyring_key)" >"$T"
q 'SELECT pg_reload_conf()'
newest_is() {
	q 'SELECT key_id FROM payment.keyring_keys() WHERE newest'
	[ "$R" = "$1" ]
}
poll newest_is k2
is "$R" 'k2' 'after pg_reload_conf() the same session sees the new newest key'
q "SELECT payment.encrypt('pi_keyring_two', 'ctx')"
like "$R" '^pe1:k2:' 'and seals under it'
q "SELECT payment.decrypt('$V1', 'ctx')"
is "$R" 'pi_keyring_one' 'values under the old key still open'

# a wrong key under the same id, then the key removed
printf 'k1 %s\n' "$(pe_keyring_key)" >"$T"
q 'SELECT pg_reload_conf()'
poll newest_is k1
like "$(errcode_of "SELECT payment.decrypt('$V1', 'ctx')")" '^PE002 sealed value does not open' 'a wrong key under the right id does not open (PE002)'
printf 'k3 %s\n' "$KEY1" >"$T"
like "$(errcode_of "SELECT payment.decrypt('$V1', 'ctx')")" '^PE003 sealed value names a key that is not in the keyring' 'a removed key is PE003'
printf '\\q\n' >&"${PSQL[1]}"
wait "$PSQL_SESSION" 2>/dev/null

# the encrypted keyring
printf 'k1 %s\n' "$KEY1" >"$PE_WORK/plain.keyring"
(umask 077; printf 'correct horse battery staple\n' >"$PE_WORK/pass")
bash "$REPO/tools/keyring-encrypt" "$PE_WORK/plain.keyring" "$PE_WORK/pass" "$PE_WORK/enc.keyring" 10000
rm -f "$PE_WORK/plain.keyring"
like "$(head -c 100 "$PE_WORK/enc.keyring" | head -1)" '^payment_ext-keyring-v1 aes-256-cbc pbkdf2-sha256 10000$' 'tools/keyring-encrypt writes the header line'
set_keyring_path "$PE_WORK/enc.keyring"
like "$(errcode_of "SELECT payment.decrypt('$V1', 'ctx')")" '^F0000 the keyring file is encrypted but payment_ext.keyring_passphrase_command is not set' 'an encrypted keyring needs the passphrase command'
sql "ALTER SYSTEM SET payment_ext.keyring_passphrase_command = 'cat $PE_WORK/pass'" >/dev/null
sql 'SELECT pg_reload_conf()' >/dev/null
opens_v1() { [ "$(sql "SELECT payment.decrypt('$V1', 'ctx')")" = pi_keyring_one ]; }
poll opens_v1
is "$(sql "SELECT payment.decrypt('$V1', 'ctx')")" 'pi_keyring_one' 'the encrypted keyring unlocks with the passphrase the command prints'
printf 'wrong passphrase\n' >"$PE_WORK/pass"
like "$(errcode_of "SELECT payment.decrypt('$V1', 'ctx')")" '^F0000 could not unlock the encrypted keyring' 'a wrong passphrase is refused'
printf 'k1 %s\n' "$KEY1" >"$T"
set_keyring_path "$T"
like "$(errcode_of "SELECT payment.decrypt('$V1', 'ctx')")" '^F0000 payment_ext.keyring_passphrase_command is set but the keyring file is not encrypted' 'a plain keyring with a passphrase command is refused'

# nothing secret in the server log: no key, no passphrase
LOG="$PE_WORK/$C.log"
leaks=$(grep -c -F -e "$KEY1" -e 'correct horse' "$LOG")
is "$leaks" 0 'the server log holds no key and no passphrase'
ok "$(grep -q 'File "' "$LOG"; echo $?)" 'the path went to the server log (errdetail_log)'

exit $((FAILS > 0))
