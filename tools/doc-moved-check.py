#!/usr/bin/env python3
"""tools/doc-moved-check.py — which lines of a README.md from before the
manual moved into doc/ (issue 19) are in none of README.md and doc/*.md?

    python3 tools/doc-moved-check.py OLD_README [REPO] [-v]

OLD_README is the old single-page manual, e.g. `git show BRANCH:README.md`
of a branch that still edits it: after its change is ported to the page of
doc/ that now holds the section (README.md's map lists the old section
names), every line of it should be found.  A line counts as found when it
appears whole, or when every fragment of it (split at punctuation, table
cells and ' / ') does, after white space, case, Markdown links, bold and
quotes are normalised; quoted cross-references to the old sections
("Token vault", (below), README "...") and bold lead-ins that became
headings are taken out first.  Prints the lines not found and a count;
exits 1 when there are any.  Headings and table header rows are not
checked.  Against main's README.md of the move (ad6e22e) 17 lines are not
found, on purpose: the old page's reading-order paragraph (35-44) and
"function is described in its section below"; lead-ins that became
headings or entries ("Saved cards", "Verification, before anything is
parsed", "Disputes in the reports", "Both are SECURITY DEFINER");
SQLSTATE rows merged or split into one row per code (23xxx is 23000,
42804/42703, "one of those names"); and facts corrected: 42P17 is 42P16
(lines 61, 935), the roles table's payment_admin and payment_reporting
rows (131, 132).
"""
import glob, os, re, sys

args = [a for a in sys.argv[1:] if a != '-v']
if not 1 <= len(args) <= 2:
    sys.exit(__doc__)
old = open(args[0], encoding='utf-8').read().split('\n')
repo = args[1] if len(args) == 2 else os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
verbose = '-v' in sys.argv

def norm(s):
    s = re.sub(r'\[([^\[\]]*)\]\([^)\s]*\)', r'\1', s)   # [text](url) -> text
    s = re.sub(r'^\s*(- |\d+\. )', '', s)
    s = s.replace('**', '').replace('"', '').replace('(', ' ').replace(')', ' ')
    s = re.sub(r'\s+', ' ', s)
    return s.strip().lower()

files = [os.path.join(repo, 'README.md')] + sorted(glob.glob(os.path.join(repo, 'doc', '*.md')))
texts = [open(f, encoding='utf-8').read() for f in files]
corpus = ' '.join(norm(t) for t in texts)
corpus_nopipe = norm(corpus.replace('|', ' '))
headings = set()
for t in texts:
    for h in re.findall(r'^#+ (.*)$', t, re.M):
        headings.add(norm(h).strip('`'))
old_sections = set(norm(h) for h in re.findall(r'^#+ (.*)$', '\n'.join(old), re.M))
old_sections |= {'token vault', 'audit trail', 'access control', 'operations', 'payments', 'refunds',
                 'retry policy', 'settling and reconciliation', 'lock order', 'upgrades',
                 'dump and restore', 'the transactional outbox', 'states and outcomes',
                 'when a row dies', 'settling', 'outbox worker'}

def found(s):
    s = norm(s)
    return s in corpus or norm(s.replace('|', ' ')) in corpus_nopipe

XREF = re.compile(r'(README )?(?<!`)"([A-Z][^"]*)"(?!`)|\((Token vault|Audit trail|Access control|below)\)|Deviations,? \d+|in Token vault|README')

def strip_refs(t):
    n = 0
    def rep(m):
        nonlocal n
        name = m.group(2)
        if name is not None and norm(name) not in old_sections:
            return m.group(0)
        n += 1
        return ' '
    t = XREF.sub(rep, t)
    # bold lead-ins that are now headings
    def bold(m):
        nonlocal n
        if norm(m.group(1)).rstrip('.,') in headings:
            n += 1
            return ' '
        return m.group(0)
    t = re.sub(r'\*\*([^*]+)\*\*', bold, t)
    return t, n

stats = dict(total=0, headings=0, table_headers=0, whole=0, fragments=0, xref_or_lead=0, lost=0)
lost = []
for n, line in enumerate(old, 1):
    t = line.strip()
    if not t or re.fullmatch(r'\|?[-| :]+\|?', t):
        continue
    if t.startswith('#') and not line.startswith('    '):
        stats['headings'] += 1
        continue
    if t.startswith('|') and n < len(old) and re.fullmatch(r'\|?[-| :]+\|?', old[n].strip()):
        stats['table_headers'] += 1
        continue
    stats['total'] += 1
    if found(t):
        stats['whole'] += 1
        continue
    t2, nrefs = strip_refs(t)
    if t2.startswith('|'):
        parts = [c.strip() for c in t2.strip('|').split('|')]
    else:
        parts = [t2]
    frags = []
    for p in parts:
        for q in re.split(r' / ', p):
            frags += re.split(r'(?<=[.;:,)])\s+|\s+(?=\()', q)
    frags = [p for p in frags if len(norm(p).strip(' .,;:')) >= 4]
    missing = [p for p in frags if not found(norm(p).strip(' .,;:'))]
    if not missing:
        stats['xref_or_lead' if nrefs else 'fragments'] += 1
        if verbose:
            print('%s %4d: %s' % ('xref' if nrefs else 'frag', n, t))
        continue
    stats['lost'] += 1
    lost.append((n, t, missing))

for n, t, m in lost:
    print('LOST %4d: %s' % (n, t))
    for p in m:
        print('        missing: %s' % p)
print(' '.join('%s=%d' % kv for kv in stats.items()))
sys.exit(1 if lost else 0)
