#!/usr/bin/env bash
#
# test/t/layers.sh — issue 19: the C code of src/ calls only downward, in the
# layers src/LAYERS declares, with no cycle.  Runs tools/callgraph.py on the
# objects that the test command's build made (it builds nothing itself),
# checks that the tool catches a call against the table and a cycle when
# there is one, and that every C function the install and upgrade scripts
# name is defined by the objects.  Prints TAP.
#
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TOOL="$REPO/tools/callgraph.py"
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/pe_layers.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT

n=0
check() { # check OK DESCRIPTION [DIAGNOSTICS]
	n=$((n + 1))
	if [ "$1" = 0 ]; then
		echo "ok $n - $2"
	else
		echo "not ok $n - $2"
		[ -n "${3:-}" ] && printf '%s\n' "$3" | sed 's/^/# /'
	fi
}

echo "1..7"

out=$(python3 "$TOOL" --src "$REPO/src" 2>&1)
rc=$?
missing=$(printf '%s\n' "$out" | grep -E '^(no object|unmapped):')
check "$([ -z "$missing" ] && printf '%s\n' "$out" | grep -qE '^[0-9]+ files, ' && echo 0 || echo 1)" \
	"every C file of src/ has an object from the build and a layer in src/LAYERS" "$missing$out"
cycles=$(printf '%s\n' "$out" | grep -E '^cycle:')
check "$([ -z "$cycles" ] && echo 0 || echo 1)" "the file-level call graph of src/ has no cycle" "$cycles"
violations=$(printf '%s\n' "$out" | grep -E '^violation:')
check "$([ -z "$violations" ] && echo 0 || echo 1)" "no file calls up a layer, or across its layer where src/LAYERS does not allow it" "$violations"
check "$rc" "tools/callgraph.py exits 0 on the tree: $(printf '%s\n' "$out" | tail -1)" "$out"

# the tool catches a call against the table: the same objects, the layers upside down
sed 's/^layers .*/layers module flows rules base/' "$REPO/src/LAYERS" >"$SCRATCH/LAYERS.reversed"
out=$(python3 "$TOOL" --src "$REPO/src" --layers "$SCRATCH/LAYERS.reversed" 2>&1)
rc=$?
check "$([ "$rc" = 1 ] && printf '%s\n' "$out" | grep -q '^violation: .*a higher layer' && echo 0 || echo 1)" \
	"with the layers declared upside down, the tool reports the calls as going up and fails" "$out"

# ... and a cycle: two objects that call each other
mkdir -p "$SCRATCH/src/x"
printf 'int pe_b(int);\nint pe_a(int n) { return n > 0 ? pe_b(n - 1) : 0; }\n' >"$SCRATCH/src/x/a.c"
printf 'int pe_a(int);\nint pe_b(int n) { return n > 0 ? pe_a(n - 1) : 1; }\n' >"$SCRATCH/src/x/b.c"
printf 'layers one\nx/ one\n' >"$SCRATCH/src/LAYERS"
if cc -c -o "$SCRATCH/src/x/a.o" "$SCRATCH/src/x/a.c" && cc -c -o "$SCRATCH/src/x/b.o" "$SCRATCH/src/x/b.c"; then
	out=$(python3 "$TOOL" --src "$SCRATCH/src" 2>&1)
	rc=$?
	check "$([ "$rc" = 1 ] && printf '%s\n' "$out" | grep -qx 'cycle: 2 files: x/a.c x/b.c' && echo 0 || echo 1)" \
		"two files that call each other are reported as a cycle, and the tool fails" "$out"
else
	check 1 "two files that call each other are reported as a cycle (no C compiler)"
fi

# every C function named by the SQL scripts is defined by the objects
wanted=$(cat "$REPO"/src/sql/*.sql "$REPO"/src/sql/updates/*.sql |
	grep -oE "'MODULE_PATHNAME'[[:space:]]*,[[:space:]]*'[A-Za-z_0-9]+'" | grep -oE "'[A-Za-z_0-9]+'$" | tr -d "'" | sort -u)
defined=$(find "$REPO/src" -name '*.o' -exec nm -P --defined-only {} + | awk '$2 == "T" { print $1 }' | sort -u)
absent=$(comm -23 <(printf '%s\n' "$wanted") <(printf '%s\n' "$defined"))
check "$([ -n "$wanted" ] && [ -z "$absent" ] && echo 0 || echo 1)" \
	"the $(printf '%s\n' "$wanted" | grep -c .) C functions the SQL scripts name are all defined" "${absent:-no function named}"
