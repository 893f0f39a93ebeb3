#!/usr/bin/env python3
"""test/cardguard_property.py -- property test of the card-number guard
(payment.contains_card_number, src/guard/cardguard.c), driven by
test/t/cardguard_property.sh.  Prints TAP.

A reference implementation of the rule (doc/vault-and-keys.md, "Card-number guard";
DESIGN.md), written here straightforwardly from its definition, judges
random inputs; the server's answers must agree with it, and planted card
numbers must be found whatever surrounds them (random prefixes and suffixes
up to 1 MB: single-digit groups, digit chains, letters, Unicode), while the
rule's non-card cases (a longer digit run, letters glued, a wrong grouping,
a failed Luhn check, a '.' joining it to a word) never match.  jsonb
documents: card numbers as keys, strings and numbers in any spelling
(4242424242424242.0, 4.242424242424242e15, -4242424242424242), at any depth.

The seed is fixed (CARDGUARD_SEED overrides it) and printed.  Failures name
the case's index, kind and length, never its text: card numbers are not
printed, even test ones.

Usage: cardguard_property.py DBNAME   (psql from PATH, PGHOST/PGPORT set)
"""
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import unicodedata
from decimal import Decimal

DB = sys.argv[1]
SEED = int(os.environ.get("CARDGUARD_SEED", "16006"))
rng = random.Random(SEED)

# ---------------------------------------------------------------------------
# The reference: the rule, as doc/vault-and-keys.md and DESIGN.md state it
# ---------------------------------------------------------------------------
MB = 1 << 20


def iin_ok(d):
    n = len(d)
    p = lambda k: int(d[:k])
    if d[0] == "4" and n in (13, 16, 19):
        return True                                   # Visa
    if n == 16 and (51 <= p(2) <= 55 or 2221 <= p(4) <= 2720):
        return True                                   # Mastercard
    if n == 15 and p(2) in (34, 37):
        return True                                   # American Express
    if 16 <= n <= 19 and (p(4) == 6011 or 644 <= p(3) <= 649 or p(2) == 65
                          or 622126 <= p(6) <= 622925):
        return True                                   # Discover
    if 16 <= n <= 19 and 3528 <= p(4) <= 3589:
        return True                                   # JCB
    if n >= 14 and (300 <= p(3) <= 305 or p(2) in (36, 38, 39)):
        return True                                   # Diners Club
    if 16 <= n <= 19 and p(2) == 62:
        return True                                   # UnionPay
    if p(2) == 50 or 56 <= p(2) <= 69:
        return True                                   # Maestro
    return False


def luhn_ok(d):
    total = 0
    for i, ch in enumerate(reversed(d)):
        v = int(ch)
        if i % 2 == 1:
            v = v * 2 - 9 if v * 2 > 9 else v * 2
        total += v
    return total % 10 == 0


def is_card_digits(d):
    return 13 <= len(d) <= 19 and iin_ok(d) and luhn_ok(d)


def grouping_ok(lens):
    k = len(lens)
    if k == 1:
        return True
    if k == 3 and lens[0] == 4 and lens[1] == 6 and lens[2] in (4, 5):
        return True
    return k in (4, 5) and all(x == 4 for x in lens[:-1]) and 1 <= lens[-1] <= 4


IGNORED = ("Mn", "Me", "Cf")


def char_class(x):
    """What one character of an NFKC form stands for."""
    if ord(x) < 0x80:
        return x
    cat = unicodedata.category(x)
    if cat in IGNORED:
        return ""
    if cat == "Nd":
        return str(unicodedata.digit(x))
    if cat == "Zs":
        return " "
    if cat == "Pd" or x == "\u2212":
        return "-"
    return "~"


_norm_cache = {}


def normalize(s):
    """Each character through its own NFKC form, then classed."""
    out = []
    for ch in s:
        if ord(ch) < 0x80:
            out.append(ch)
            continue
        r = _norm_cache.get(ch)
        if r is None:
            r = "".join(char_class(x) for x in unicodedata.normalize("NFKC", ch))
            _norm_cache[ch] = r
        out.append(r)
    return "".join(out)


def is_word(c):
    return c.isascii() and (c.isalnum() or c == "_")


def flanked_before(t, i):
    if i == 0:
        return False
    return is_word(t[i - 1]) or (t[i - 1] == "." and i >= 2 and is_word(t[i - 2]))


def flanked_after(t, j):
    if j >= len(t):
        return False
    return is_word(t[j]) or (t[j] == "." and j + 1 < len(t) and is_word(t[j + 1]))


CHAIN = re.compile(r"[0-9]+(?:[ \-][0-9]+)*")
GROUP = re.compile(r"[0-9]+")


def ref_text(s, identifier=False):
    t = normalize(s)
    for m in CHAIN.finditer(t):
        groups = [g.group() for g in GROUP.finditer(m.group())]
        if identifier and any(is_card_digits(g) for g in groups):
            return True
        for a in range(len(groups)):
            for b in range(a, min(a + 5, len(groups))):
                lens = [len(g) for g in groups[a:b + 1]]
                if sum(lens) > 19:
                    break
                if sum(lens) < 13:
                    continue
                if a == 0 and flanked_before(t, m.start()):
                    continue
                if b == len(groups) - 1 and flanked_after(t, m.end()):
                    continue
                if grouping_ok(lens) and is_card_digits("".join(groups[a:b + 1])):
                    return True
    return False


CVC_NAMES = {"cvv", "cvc", "cvv2", "cvc2", "cvn", "cvn2", "csc", "cid", "securitycode",
             "cardsecuritycode", "cardcvv", "cardcvc", "cardverificationvalue",
             "cardverificationcode", "cardcode"}


def ref_number(d):
    """A JSON number: its integer digits as a lone run; its fraction digits
    as printed, and without any number of its trailing zeros."""
    text = format(abs(d), "f")
    intpart, _, frac = text.partition(".")
    if ref_text(intpart):
        return True
    stripped = frac.rstrip("0")
    return any(ref_text(frac[:n]) for n in range(len(stripped), len(frac) + 1))


def ref_jsonb(doc):
    if isinstance(doc, dict):
        for k, v in doc.items():
            key = "".join(c for c in normalize(k).lower() if c.isascii() and c.isalnum())
            if key in CVC_NAMES or ref_text(k) or ref_jsonb(v):
                return True
        return False
    if isinstance(doc, list):
        return any(ref_jsonb(v) for v in doc)
    if isinstance(doc, str):
        return ref_text(doc)
    if isinstance(doc, Decimal):
        return ref_number(doc)
    return False


# ---------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------
BRANDS = [  # (prefix chooser, lengths)
    (lambda: "4", (13, 16, 19)),
    (lambda: str(rng.randint(51, 55)), (16,)),
    (lambda: str(rng.randint(2221, 2720)), (16,)),
    (lambda: rng.choice(("34", "37")), (15,)),
    (lambda: rng.choice(("6011", str(rng.randint(644, 649)), "65", str(rng.randint(622126, 622925)))), (16, 17, 18, 19)),
    (lambda: str(rng.randint(3528, 3589)), (16, 17, 18, 19)),
    (lambda: rng.choice((str(rng.randint(300, 305)), "36", "38", "39")), (14, 15, 16, 17, 18, 19)),
    (lambda: "62", (16, 17, 18, 19)),
    (lambda: rng.choice(("50", str(rng.randint(56, 69)))), tuple(range(13, 20))),
]
STRIPE_TEST_CARDS = ["4242424242424242", "4000056655665556", "5555555555554444", "2223003122003222",
                     "5200828282828210", "378282246310005", "371449635398431", "6011111111111117",
                     "6011000990139424", "3056930009020004", "36227206271667", "3566002020360505",
                     "6200000000000005"]


def luhn_complete(body):
    for c in "0123456789":
        if luhn_ok(body + c):
            return body + c
    raise AssertionError


def random_card():
    if rng.random() < 0.15:
        return rng.choice(STRIPE_TEST_CARDS)
    pick, lengths = rng.choice(BRANDS)
    prefix = pick()
    n = rng.choice(lengths)
    body = prefix + "".join(rng.choice("0123456789") for _ in range(n - 1 - len(prefix)))
    d = luhn_complete(body)
    assert is_card_digits(d)
    return d


def groupings(n):
    out = [[n]]
    if 13 <= n <= 16:
        out.append([4, 4, 4, n - 12])
    if 17 <= n <= 19:
        out.append([4, 4, 4, 4, n - 16])
    if n == 15:
        out.append([4, 6, 5])
    if n == 14:
        out.append([4, 6, 4])
    return out


SEPS_SPACE = [" ", "\u00a0", "\u2007", "\u202f", "\u2002", "\u3000", "\u205f"]
SEPS_DASH = ["-", "\u2010", "\u2011", "\u2013", "\u2014", "\u2212", "\ufe63", "\uff0d"]
ZEROS = [0x30, 0xFF10, 0x0660, 0x06F0, 0x0966, 0x09E6, 0x0E50, 0x1D7CE, 0x1D7F6, 0x1040]
IGNORABLE = ["\u00ad", "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u0301", "\u0332", "\u20dd"]


def render_digit(c, fancy):
    if not fancy or rng.random() < 0.5:
        return c
    return chr(rng.choice(ZEROS) + int(c))


def format_digits(d, lens, fancy):
    """d split by lens, joined by single separators; with fancy, Unicode
    digits and separators and ignorable characters inside."""
    parts, i = [], 0
    for n in lens:
        g = ""
        for c in d[i:i + n]:
            g += render_digit(c, fancy)
            if fancy and rng.random() < 0.08:
                g += rng.choice(IGNORABLE)
        parts.append(g)
        i += n
    out = parts[0]
    for p in parts[1:]:
        if fancy:
            sep = rng.choice(SEPS_SPACE + SEPS_DASH)
        else:
            sep = rng.choice(" -")
        out += sep + p
    return out


def format_card(d, fancy=None):
    if fancy is None:
        fancy = rng.random() < 0.4
    return format_digits(d, rng.choice(groupings(len(d))), fancy)


WORDS = ["the", "refund", "reason", "customer", "paid", "twice", "v1", "x", "_", "ORDER", "Grüße", "東京",
         "Жанна", "café", "ｆｕｌｌ", "ﬁne", "①", "⑳", "¹²", "¼", "ǅ", "😀", "\u0301", "\u200b", "e\u0301"]
PUNCT = [".", ",", ";", ":", "!", "?", "(", ")", "/", "#", "+", "'", '"', "\n", "\t", "  ", " - ", "...", "$", "€"]


def digits(n):
    return "".join(rng.choice("0123456789") for _ in range(n))


def rand_token():
    r = rng.random()
    if r < 0.35:
        return rng.choice(WORDS)
    if r < 0.55:
        return rng.choice(PUNCT)
    if r < 0.80:
        return digits(rng.randint(1, 22))
    if r < 0.90:
        return rng.choice(SEPS_SPACE + SEPS_DASH + IGNORABLE)
    return "".join(render_digit(c, True) for c in digits(rng.randint(1, 8)))


def rand_text(size):
    out, n = [], 0
    while n < size:
        tok = rand_token()
        if rng.random() < 0.7:
            tok += rng.choice(" -")
        out.append(tok)
        n += len(tok)
    return "".join(out)


def digit_chain(size):
    """Digit groups of random lengths joined by single separators."""
    out, n = [], 0
    while n < size:
        g = digits(rng.randint(1, 6)) + rng.choice(" -")
        out.append(g)
        n += len(g)
    return "".join(out)


def filler(size):
    """A prefix or suffix of about size characters, of one of the shapes a
    bypass would use."""
    r = rng.random()
    if r < 0.25:
        return "1 " * (size // 2)                     # the reported shape
    if r < 0.45:
        return digit_chain(size)
    if r < 0.55:
        return rng.choice(["1-", "9 ", "0\u00a0", "\uff11 "]) * (size // 2)
    if r < 0.65:
        return "\u0301" * size                        # combining marks
    return rand_text(size)


def rand_size(big):
    if big:
        return rng.choice([rng.randint(0, 200), rng.randint(0, 70000), rng.randint(MB // 2, MB)])
    return rng.choice([0, rng.randint(0, 30), rng.randint(0, 400), rng.randint(0, 3000)])


def safe_filler(size):
    """Text that holds no card number under the rule, whatever follows it
    after a ' / ': words, single-digit groups, runs of 20 or more digits."""
    out, n = [], 0
    while n < size:
        r = rng.random()
        if r < 0.3:
            tok = "1 " * rng.randint(1, 40)
        elif r < 0.5:
            tok = digits(rng.randint(20, 40)) + " "
        elif r < 0.6:
            tok = "\u0301" * rng.randint(1, 50)
        else:
            tok = rng.choice(WORDS[:-3]) + rng.choice(PUNCT)
        out.append(tok)
        n += len(tok)
    return "".join(out)


def near_miss():
    """(kind, text): a non-card case of the rule, standing alone."""
    d = random_card()
    kind = rng.choice(["longer run", "letters glued", "wrong grouping", "luhn", "dot-joined",
                       "double separator"])
    if kind == "longer run":
        extra = digits(max(1, 20 - len(d)) + rng.randint(0, 3))
        k = rng.randint(0, len(extra))
        return kind, format_digits(extra[:k] + d + extra[k:], [len(d) + len(extra)], rng.random() < 0.3)
    if kind == "letters glued":
        if len(d) <= 16:
            body = format_card(d, rng.random() < 0.3)
        else:
            body = d
        glue = rng.choice(["x", "Z", "_", "pm_", "A1", "ｘ"])
        return kind, rng.choice([glue + body, body + glue, glue + body + glue])
    if kind == "wrong grouping":
        n = len(d)
        while True:
            lens, left = [], n
            while left > 0:
                g = min(left, rng.randint(1, 8))
                lens.append(g)
                left -= g
            if not grouping_ok(lens) and len(lens) > 1:
                break
        return kind, format_digits(d, lens, rng.random() < 0.3)
    if kind == "luhn":
        bad = d[:-1] + str((int(d[-1]) + rng.randint(1, 9)) % 10)
        if len(bad) > 16:
            return kind, bad
        return kind, format_card(bad)
    if kind == "dot-joined":
        return kind, rng.choice(["v1." + d, "x." + d, d + ".5x", "a_." + d])
    # double separator: the rule joins groups by single separators
    lens = groupings(len(d))[-1] if len(groupings(len(d))) > 1 else [4, 4, 4, len(d) - 12]
    return kind, format_digits(d, lens, False).replace(" ", "  ").replace("-", "--")


# ---------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------
def copy_escape(v):
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def server_answers(values, kind):
    """payment.contains_card_number over values, in one psql session:
    kind 'text' gives (free-text, identifier) pairs, 'jsonb' single answers."""
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".copy", delete=False) as f:
        for i, v in enumerate(values):
            f.write("%d\t%s\n" % (i, copy_escape(v)))
        path = f.name
    os.chmod(path, 0o644)
    if kind == "text":
        sel = ("SELECT id, payment.contains_card_number(v)::int, payment.contains_card_number(v, true)::int"
               " FROM c ORDER BY id")
        typ = "text"
    else:
        sel = "SELECT id, payment.contains_card_number(v)::int, 0 FROM c ORDER BY id"
        typ = "jsonb"
    script = "CREATE TEMP TABLE c (id int, v %s);\n\\copy c FROM '%s'\n%s;\n" % (typ, path, sel)
    try:
        p = subprocess.run(["psql", "-X", "-qAt", "-F", ",", "-v", "ON_ERROR_STOP=1", "-d", DB],
                           input=script, capture_output=True, text=True, encoding="utf-8")
    finally:
        os.unlink(path)
    if p.returncode != 0:
        raise RuntimeError("psql failed: " + p.stderr.strip()[:300])
    rows = [tuple(int(x) for x in line.split(",")) for line in p.stdout.splitlines() if line]
    assert [r[0] for r in rows] == list(range(len(values))), "rows missing"
    return [(bool(r[1]), bool(r[2])) for r in rows]


N = 0
FAILED = 0


LAST = time.monotonic()


def ok(cond, name, diag=()):
    global N, FAILED, LAST
    N += 1
    now = time.monotonic()
    print("%sok %d - %s [%.1f s]" % ("" if cond else "not ", N, name, now - LAST))
    LAST = now
    if not cond:
        FAILED += 1
        for d in list(diag)[:5]:
            print("#   " + d)
    sys.stdout.flush()


def describe(i, kind, v):
    if os.environ.get("CARDGUARD_DEBUG"):
        sys.stderr.write("%d %s %r\n" % (i, kind, v[:300]))
    return "case %d (%s, %d characters, %d digits)" % (i, kind, len(v), sum(c.isdigit() for c in v))


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------
def main():
    t0 = time.monotonic()
    print("1..9")
    print("# seed %d (CARDGUARD_SEED)" % SEED)

    # 1. the reported bypass and its family: k single-digit groups before a
    #    card number, for every k up to 300, and 10^5 of them
    vals = [("1 " * k) + "4242 4242 4242 4242" for k in range(301)]
    vals += [("1 " * 100000) + "4242 4242 4242 4242", "1-" * 70 + "4242-4242-4242-4242",
             "9 " * 63 + "4242424242424242", ("1 " * 62) + "4000 0566 5566 5556 " + "1 " * 62]
    ans = server_answers(vals, "text")
    bad = [describe(i, "k groups", v) for i, (v, a) in enumerate(zip(vals, ans)) if not a[0]]
    ok(not bad, "a card number after any number of single-digit groups is found (%d cases)" % len(vals), bad)

    # 2. planted card numbers, random prefixes and suffixes up to 1 MB
    cases, kinds = [], []
    for i in range(260):
        big = i < 40
        d = random_card()
        pre = filler(rand_size(big))
        suf = filler(rand_size(big and i % 2 == 0))
        cases.append(pre + rng.choice([" ", "\u00a0", "(", ", ", "\n", "~"]) + format_card(d)
                     + rng.choice([" ", ")", ". ", ", ", "\n", "~"]) + suf)
        kinds.append("planted")
    ans = server_answers(cases, "text")
    bad = [describe(i, k, v) for i, (v, k, a) in enumerate(zip(cases, kinds, ans)) if not a[0] or not a[1]]
    ok(not bad, "a planted card number is found whatever surrounds it, up to 1 MB (%d cases, %d over 500 kB)"
       % (len(cases), sum(len(v) > MB // 2 for v in cases)), bad)
    refbad = [describe(i, k, v) for i, (v, k) in enumerate(zip(cases, kinds)) if not ref_text(v)]
    ok(not refbad, "the reference finds every planted card number too", refbad)

    # 3. the rule's non-card cases never match, alone or in large text
    cases, kinds = [], []
    for i in range(1400):
        kind, v = near_miss()
        if i % 100 == 0:
            v = safe_filler(rng.randint(MB // 2, MB)) + " / " + v + " / " + safe_filler(rng.randint(0, 5000))
        elif i % 3 == 0:
            v = safe_filler(rng.randint(0, 3000)) + " / " + v + " / " + safe_filler(rng.randint(0, 300))
        cases.append(v)
        kinds.append(kind)
    ans = server_answers(cases, "text")
    guaranteed = ("longer run", "letters glued", "dot-joined", "double separator")
    bad = []
    for i, (v, k, a) in enumerate(zip(cases, kinds, ans)):
        expect = ref_text(v)
        if k in guaranteed and expect:
            bad.append("reference disagrees with the construction: " + describe(i, k, v))
        if a[0] != expect:
            bad.append("server %s, reference %s: %s" % (a[0], expect, describe(i, k, v)))
    luhn_or_group = sum(1 for v, k in zip(cases, kinds) if k not in guaranteed and not ref_text(v))
    ok(not bad, "non-card cases (longer run, letters glued, wrong grouping, Luhn, '.', double separator) "
       "never match (%d cases, %d of them Luhn-invalid or wrongly grouped and non-matching)"
       % (len(cases), luhn_or_group), bad)

    # 4. random text: the server agrees with the reference, free text and
    #    identifier rule
    cases = []
    for i in range(2500):
        size = rng.choice([rng.randint(0, 40), rng.randint(0, 300), rng.randint(0, 2000)])
        if i % 250 == 0:
            size = rng.randint(100000, MB)
        v = rand_text(size)
        if rng.random() < 0.3:
            v = v[:len(v) // 2] + rng.choice([" ", "x", "."]) + format_card(random_card()) + v[len(v) // 2:]
        cases.append(v)
    ans = server_answers(cases, "text")
    bad, found = [], 0
    for i, (v, a) in enumerate(zip(cases, ans)):
        e = (ref_text(v), ref_text(v, True))
        found += e[0]
        if a != e:
            bad.append("server %s, reference %s: %s" % (a, e, describe(i, "random", v)))
    ok(not bad, "random text: server and reference agree (%d cases, %d hold a card number)" % (len(cases), found),
       bad)

    # 5. identifiers: a card number glued to a prefix is found by the
    #    identifier rule, not by the free-text one
    cases = []
    for _ in range(300):
        d = random_card()
        cases.append(rng.choice(["pm_", "pi_", "cus_", "tok_visa_", "x", "A"]) + d
                     + rng.choice(["", "_x", "Z"]))
    ans = server_answers(cases, "text")
    bad = [describe(i, "glued id", v) for i, (v, a) in enumerate(zip(cases, ans))
           if a != (ref_text(v), True)]
    ok(not bad, "identifier rule: a card number glued into an id is refused (%d cases)" % len(cases), bad)

    # 6. jsonb: numbers in every spelling, strings, keys, any depth
    spellings = ["{d}", "{d}.0", "{d}.000", "-{d}", "{a}.{b}e{e}", "{d}e0", "{d}0e-1", "0.{d}", "-0.{d}00"]
    docs, kinds = [], []
    for i in range(600):
        d = random_card()
        where = rng.choice(["number", "string", "key"])
        if where == "number":
            sp = rng.choice(spellings)
            e = len(d) - 1
            tok = sp.format(d=d, a=d[0], b=d[1:], e=e)
        elif where == "string":
            tok = json.dumps(rng.choice(["", "card ", "note: "]) + format_card(d), ensure_ascii=rng.random() < 0.5)
        else:
            tok = None
        depth = rng.randint(0, 30)
        if tok is None:
            inner = "{%s: true}" % json.dumps(format_card(d))
        else:
            inner = tok
        for _ in range(depth):
            inner = rng.choice(["[%s]", "[1, %s, \"x\"]", "{\"k\": %s}", "{\"a\": 1, \"b\": [%s]}"]) % inner
        docs.append(inner)
        kinds.append(where)
    negatives = ["{\"ts\": 1700000000000}", "{\"amount\": 28.00}", "[4242424242424241]",
                 "{\"x\": 4242424242424241.0}", "{\"x\": 42424242424242420}", "{\"v\": \"v1.4242424242424242\"}",
                 "{\"n\": 1.5e300}", "{\"n\": 12345678901234567890123}", "{\"id\": \"a0000000-0000-0000-0000-000000000001\"}",
                 "{\"phone\": \"+44 7911 123456\"}", "[[[[[[\"1 1 1 1\"]]]]]]", "{\"cv\": 1, \"cvvx\": 2}"]
    docs += negatives
    kinds += ["negative"] * len(negatives)
    ans = server_answers(docs, "jsonb")
    bad = []
    for i, (v, k, a) in enumerate(zip(docs, kinds, ans)):
        e = ref_jsonb(json.loads(v, parse_float=Decimal, parse_int=Decimal))
        want = k != "negative"
        if a[0] != want or e != want:
            bad.append("server %s, reference %s: %s" % (a[0], e, describe(i, "jsonb " + k, v)))
    ok(not bad, "jsonb: card numbers as numbers (any spelling), strings and keys at any depth are found; "
       "non-cards are not (%d documents)" % len(docs), bad)

    # 7. random jsonb documents: server and reference agree
    def rand_json(depth):
        r = rng.random()
        if depth > 4 or r < 0.4:
            s = rng.random()
            if s < 0.3:
                return rand_text(rng.randint(0, 60))
            if s < 0.6:
                return Decimal(rng.choice([digits(rng.randint(1, 20)), digits(rng.randint(1, 18)) + "." + digits(rng.randint(1, 18)),
                                           random_card(), random_card() + ".0", "0." + random_card()]))
            return rng.choice([True, False, None])
        if r < 0.7:
            return [rand_json(depth + 1) for _ in range(rng.randint(0, 4))]
        return {rand_text(rng.randint(0, 20)) if rng.random() < 0.8 else rng.choice(["cvc", "CVV2", "ｃｖｃ", "cvc_x"]):
                rand_json(depth + 1) for _ in range(rng.randint(0, 4))}

    docs = []
    for _ in range(1200):
        docs.append(dumps_decimal(rand_json(0)))
    ans = server_answers(docs, "jsonb")
    bad, found = [], 0
    for i, (v, a) in enumerate(zip(docs, ans)):
        e = ref_jsonb(json.loads(v, parse_float=Decimal, parse_int=Decimal))
        found += e
        if a[0] != e:
            bad.append("server %s, reference %s: %s" % (a[0], e, describe(i, "random jsonb", v)))
    ok(not bad, "random jsonb: server and reference agree (%d documents, %d refused)" % (len(docs), found), bad)

    # 8. linear time: 1 MB of the worst shapes takes about 10 times as long
    #    as 100 kB (a window, a backtracking or a quadratic normalisation
    #    would take about 100 times); the best of three calls of each
    shapes = {"single-digit groups": "1 ", "digits": "4", "combining marks": "\u0301\u0316",
              "Unicode digits and separators": "\u0664\u00a0", "groups of four": "1234 ",
              "letters and digits": "a1"}
    lines = ["CREATE FUNCTION pg_temp.cost(v text) RETURNS float8 LANGUAGE plpgsql AS $f$"
             " DECLARE t0 timestamptz := clock_timestamp(); r boolean;"
             " BEGIN r := payment.contains_card_number(v); RETURN extract(epoch FROM clock_timestamp() - t0); END $f$;"]
    for name, unit in shapes.items():
        for size in (100000, 1000000):
            lines.append("SELECT %s, %d, min(pg_temp.cost(repeat(%s, %d) || g::text)) FROM generate_series(1, 3) g;"
                         % (sql_str(name), size, sql_str(unit), size // len(unit)))
    p = subprocess.run(["psql", "-X", "-qAt", "-F", "|", "-v", "ON_ERROR_STOP=1", "-d", DB],
                       input="\n".join(lines) + "\n", capture_output=True, text=True, encoding="utf-8")
    times = {}
    for line in p.stdout.splitlines():
        name, size, secs = line.split("|")
        times[(name, int(size))] = float(secs)
    diag, worst = [], 0.0
    for name in shapes:
        small, large = times.get((name, 100000)), times.get((name, 1000000))
        if small is None or large is None:
            diag.append("%s: no timing (%s)" % (name, p.stderr.strip()[:200]))
            continue
        ratio = large / max(small, 0.002)
        worst = max(worst, ratio)
        diag.append("%s: 100 kB %.4f s, 1 MB %.4f s, ratio %.1f%s"
                    % (name, small, large, ratio, "  NOT LINEAR" if ratio > 40 else ""))
    for d in diag:
        print("# " + d)
    ok(p.returncode == 0 and len(times) == 2 * len(shapes) and worst <= 40,
       "linear: 1 MB of the worst shapes costs at most 40 times 100 kB (worst ratio %.1f)" % worst,
       [d for d in diag if "NOT LINEAR" in d or "no timing" in d])
    print("# %.0f s, seed %d" % (time.monotonic() - t0, SEED))
    return 0 if FAILED == 0 else 1


def sql_str(s):
    return "'" + s.replace("'", "''") + "'"


def dumps_decimal(o):
    if isinstance(o, Decimal):
        return str(o)
    if isinstance(o, dict):
        return "{" + ", ".join(json.dumps(k, ensure_ascii=False) + ": " + dumps_decimal(v) for k, v in o.items()) + "}"
    if isinstance(o, list):
        return "[" + ", ".join(dumps_decimal(v) for v in o) + "]"
    return json.dumps(o, ensure_ascii=False)


if __name__ == "__main__":
    sys.exit(main())
