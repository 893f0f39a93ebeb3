#!/usr/bin/env bash
#
# test/t/docs_coverage.sh — the manual (README.md, doc/*.md) against the
# code, on the suite's running server: every configuration parameter the
# library defines, every function, procedure and view of the extension and
# every SQLSTATE the source raises has exactly one reference entry in doc/,
# and every reference entry names something that exists; every relative
# link of README.md and doc/*.md resolves, to a heading where it names one;
# README.md starts with the two commands .ci/run copies out of it, and stays
# a front door (at most 300 lines).  The conventions (what a reference entry
# is) are in doc/README.md, "Reference entries".  Prints TAP.  Needs
# PGHOST/PGPORT of a running cluster that preloads payment_ext.
#
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DB=pe_docs
OUT=$(mktemp -d)
trap 'psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1; rm -rf "$OUT"' EXIT

echo "1..11"

q() { psql -X -qAt -v ON_ERROR_STOP=1 -d "$DB" -c "$1"; }

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null 2>&1
q "CREATE EXTENSION payment_ext" >/dev/null

# What the server says.  LOAD defines the parameters also where the
# library is not preloaded; the suite's server preloads it, so those that
# could only be defined at postmaster start are there too.
psql -X -qAt -v ON_ERROR_STOP=1 -d "$DB" -c "LOAD 'payment_ext'" \
	-c "SELECT name FROM pg_settings WHERE name LIKE 'payment\_ext.%' ORDER BY 1" >"$OUT/gucs"
# the extension's members: functions and procedures (kind f, p, a, w) and
# relations (kind r, v, m, S ...), by name
q "SELECT CASE WHEN d.classid = 'pg_proc'::regclass THEN 'proc ' || p.prokind::text || ' ' || n1.nspname || '.' || p.proname
               ELSE 'rel ' || c.relkind::text || ' ' || n2.nspname || '.' || c.relname END
     FROM pg_depend d
     JOIN pg_extension e ON e.oid = d.refobjid AND d.refclassid = 'pg_extension'::regclass
     LEFT JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
     LEFT JOIN pg_namespace n1 ON n1.oid = p.pronamespace
     LEFT JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid
     LEFT JOIN pg_namespace n2 ON n2.oid = c.relnamespace
    WHERE e.extname = 'payment_ext' AND d.deptype = 'e'
      AND d.classid IN ('pg_proc'::regclass, 'pg_class'::regclass)
    ORDER BY 1" >"$OUT/members"

# PostgreSQL's SQLSTATE names (utils/errcodes.h of the server's headers)
ERRCODES=
for pgc in "${PE_PG_CONFIG:-}" "$(command -v pg_config)" /usr/bin/pg_config; do
	[ -n "$pgc" ] && [ -x "$pgc" ] || continue
	f="$("$pgc" --includedir-server 2>/dev/null)/utils/errcodes.h"
	if [ -f "$f" ]; then
		ERRCODES=$f
		break
	fi
done

AWK_CI=$(sed -n "s/.*< <(awk '\([^']*\)' README.md).*/\1/p" "$REPO/.ci/run")
awk "$AWK_CI" "$REPO/README.md" >"$OUT/ci_commands"

python3 - "$REPO" "$OUT" "$ERRCODES" "$DB" <<'EOF'
import glob, os, re, subprocess, sys
from collections import Counter

repo, out, errcodes_h, db = sys.argv[1:5]

def pgarray(items):
    return "'{%s}'" % ','.join('"%s"' % x for x in items)
n = 0

def ok(cond, name, diag=()):
    global n
    n += 1
    print('%s %d - %s' % ('ok' if cond else 'not ok', n, name))
    if not cond:
        for d in diag:
            print('#   %s' % d)

def read(path):
    with open(path, encoding='utf-8') as f:
        return f.read()

docs = sorted(glob.glob(os.path.join(repo, 'doc', '*.md')))
texts = {p: read(p) for p in docs}

def code_free(text):
    """text without fenced code blocks (their lines blanked); indented code
    blocks need no care: headings and table rows start in column 0"""
    lines, fence = [], False
    for line in text.split('\n'):
        if line.lstrip().startswith('```'):
            fence = not fence
            lines.append('')
        else:
            lines.append('' if fence else line)
    return '\n'.join(lines)

# --- reference entries (doc/README.md, "Reference entries") ---------------
HEAD = re.compile(r'^#{2,6} +`(payment_ext\.[a-z0-9_]+|payment\.[a-z0-9_]+(\([^`]*\))?)`', re.M)
entries = Counter()          # ('guc' | 'proc' | 'rel', name) -> count
where = {}
for p, t in texts.items():
    for m in HEAD.finditer(code_free(t)):
        name = m.group(1)
        if name.startswith('payment_ext.'):
            key = ('guc', name)
        elif m.group(2) is not None:
            key = ('proc', name[:name.index('(')])
        else:
            key = ('rel', name)
        entries[key] += 1
        where.setdefault(key, []).append(os.path.relpath(p, repo))
ROW = re.compile(r'^\|\s*([0-9A-Z]{5})\s*\|', re.M)
states = Counter()
for p, t in texts.items():
    for m in ROW.finditer(code_free(t)):
        states[m.group(1)] += 1

def once(kind, names):
    bad = []
    for x in sorted(names):
        c = entries[(kind, x)]
        if c != 1:
            bad.append('%s: %d reference entries %s' % (x, c, where.get((kind, x), '')))
    return bad

# --- 1-3: parameters -------------------------------------------------------
server_gucs = set(read(os.path.join(out, 'gucs')).split())
src_text = ''
for path in sorted(glob.glob(os.path.join(repo, 'src', '**', '*.[ch]'), recursive=True)):
    src_text += read(path) + '\n'
src_gucs = set(re.findall(r'DefineCustom(?:Bool|Int|Real|String|Enum)Variable\s*\(\s*"([^"]+)"', src_text))
gucs = server_gucs | src_gucs
ok(server_gucs and server_gucs == src_gucs,
   'the server shows the %d parameters the source defines' % len(src_gucs),
   ['only on the server: %s' % sorted(server_gucs - src_gucs),
    'only in the source: %s' % sorted(src_gucs - server_gucs)])
ok(not once('guc', gucs), 'every parameter has exactly one reference entry', once('guc', gucs))
stale = sorted(x for k, x in entries if k == 'guc' and x not in gucs)
ok(not stale, 'every parameter entry names a parameter the library defines', ['gone: %s' % stale])

# --- 4-6: functions, procedures, views -------------------------------------
procs, views, rels = set(), set(), set()
for line in read(os.path.join(out, 'members')).split('\n'):
    if not line:
        continue
    what, kind, name = line.split(' ', 2)
    if what == 'proc':
        procs.add(name)
    else:
        rels.add(name)
        if kind in ('v', 'm'):
            views.add(name)
ok(procs and not once('proc', procs),
   'every function and procedure of the extension (%d names) has exactly one reference entry' % len(procs),
   once('proc', procs))
ok(views and not once('rel', views),
   'every view of the extension (%d) has exactly one reference entry' % len(views), once('rel', views))
stale = sorted('%s%s' % (x, '()' if k == 'proc' else '') for k, x in entries
               if (k == 'proc' and x not in procs) or (k == 'rel' and x not in rels)
               or (k == 'rel' and entries[(k, x)] > 1))
ok(not stale, 'every function, view or table entry names one member of the extension', ['gone or repeated: %s' % stale])

# --- 7-8: SQLSTATEs --------------------------------------------------------
def sqlstate(chars):
    return ''.join(re.findall(r"'(.)'", chars))
known = {}
if errcodes_h:
    for m in re.finditer(r'#define\s+(ERRCODE_[A-Z0-9_]+)\s+MAKE_SQLSTATE\(([^)]*)\)', read(errcodes_h)):
        known[m.group(1)] = sqlstate(m.group(2))
own = {}
for m in re.finditer(r'#define\s+(ERRCODE_[A-Z0-9_]+)\s+MAKE_SQLSTATE\(([^)]*)\)', src_text):
    own[m.group(1)] = sqlstate(m.group(2))
codes = dict(known, **own)
raised, unknown = set(), set()
for name in set(re.findall(r'\bERRCODE_[A-Z0-9_]+\b', src_text)) - {'ERRCODE_TO_CATEGORY', 'ERRCODE_IS_CATEGORY'}:
    if name in codes:
        raised.add(codes[name])
    else:
        unknown.add(name)
sql_text = ''
for path in sorted(glob.glob(os.path.join(repo, 'src', '**', '*.sql'), recursive=True)):
    sql_text += read(path) + '\n'
sql_conds = set(re.findall(r"ERRCODE\s*=\s*'([A-Za-z0-9_]+)'", sql_text))
# the doc's names of the conditions, first word of the table's second cell
ROWNAME = re.compile(r'^\|\s*([0-9A-Z]{5})\s*\|\s*([a-z_0-9]+)', re.M)
doc_names = []
for t in texts.values():
    doc_names += [m.groups() for m in ROWNAME.finditer(code_free(t)) if not m.group(1).startswith('PE')]
# condition name -> SQLSTATE, as PL/pgSQL (the server) maps it
names = sorted(sql_conds | {nm for _, nm in doc_names})
cond_code = dict(x.split('|') for x in subprocess.run(
    ['psql', '-X', '-qAt', '-v', 'ON_ERROR_STOP=1', '-d', db, '-c',
     """CREATE FUNCTION pg_temp.code_of(n text) RETURNS text LANGUAGE plpgsql AS $f$
        BEGIN
            RAISE EXCEPTION USING ERRCODE = n;
        EXCEPTION WHEN OTHERS THEN
            RETURN CASE WHEN SQLERRM LIKE 'unrecognized exception condition%' THEN '' ELSE SQLSTATE END;
        END $f$;
        SELECT n || '|' || pg_temp.code_of(n) FROM unnest(NAMES::text[]) n""".replace('NAMES', pgarray(names))],
    check=True, capture_output=True, text=True).stdout.split())
for cond in sql_conds:
    if cond_code.get(cond):
        raised.add(cond_code[cond])
    else:
        unknown.add(cond)
raised = {c for c in raised if c[:2] not in ('00', '01')}
bad = ['%s: %d entries' % (c, states[c]) for c in sorted(raised) if states[c] != 1]
bad += ['SQLSTATE name not found in %s: %s' % (errcodes_h or 'errcodes.h (none found)', sorted(unknown))] if unknown else []
ok(known and raised and not bad,
   'every SQLSTATE the source raises (%d) has exactly one entry' % len(raised), bad)
valid = set(codes.values())
bad = ['%s: %d entries' % (c, k) for c, k in sorted(states.items()) if k != 1]
bad += ['%s: not a SQLSTATE of PostgreSQL or of the extension' % c for c in sorted(states) if c not in valid]
bad += ['%s: a code of the extension that the source no longer defines' % c
        for c in sorted(states) if c.startswith('PE') and c not in own.values()]
bad += ['%s: is named %s, which is %s' % (c, nm, cond_code.get(nm) or 'no condition name')
        for c, nm in doc_names if cond_code.get(nm) != c]
ok(states and not bad, 'every SQLSTATE entry (%d) is a real SQLSTATE under its own name, listed once' % len(states), bad)

# --- 9: links --------------------------------------------------------------
def slug(heading):
    h = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', heading)
    h = h.replace('`', '').replace('*', '').strip().lower()
    h = re.sub(r'[\u2000-\u206F\u2E00-\u2E7F\\\'!"#$%&()*+,./:;<=>?@\[\]^`{|}~]', '', h)
    return h.replace(' ', '-')
anchors = {}
def anchors_of(path):
    if path not in anchors:
        seen, res = Counter(), set()
        for h in re.findall(r'^#{1,6} +(.*?) *#*$', code_free(read(path)), re.M):
            s = slug(h)
            res.add(s if not seen[s] else '%s-%d' % (s, seen[s]))
            seen[s] += 1
        anchors[path] = res
    return anchors[path]
broken, nlinks = [], 0
for page in [os.path.join(repo, 'README.md')] + docs:
    text = re.sub(r'`[^`]*`', '', code_free(read(page)))
    for target in re.findall(r'\]\(([^)\s]+)\)', text):
        if re.match(r'[a-z]+:', target):
            continue
        nlinks += 1
        path, _, anchor = target.partition('#')
        dest = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if not os.path.exists(dest):
            broken.append('%s: %s (no such file)' % (os.path.relpath(page, repo), target))
        elif anchor and dest.endswith('.md') and anchor not in anchors_of(dest):
            broken.append('%s: %s (no such heading)' % (os.path.relpath(page, repo), target))
ok(nlinks and not broken, 'every relative link of README.md and doc/*.md (%d) resolves' % nlinks, broken)

# --- 10-11: the front door ---------------------------------------------------
cmds = read(os.path.join(out, 'ci_commands')).split('\n')[:-1]
ok(cmds == ['bash tools/run demo', 'bash tools/run test'],
   "README.md starts with the demo and the test command, as .ci/run copies them out",
   ['found: %s' % cmds])
lines = read(os.path.join(repo, 'README.md')).count('\n')
ok(lines <= 300, 'README.md is a front door of at most 300 lines (%d)' % lines)
EOF
