/*-------------------------------------------------------------------------
 *
 * cardguard.c
 *		The card-number guard: card numbers (PANs) are never accepted, in
 *		any text argument, identifier argument or metadata document.
 *
 * The rule (README "Card-number guard"; notes/audit-and-vault.md, the bold
 * row, measured at 0 false positives per million on UUIDs, +44 phone
 * numbers, 13-digit millisecond timestamps and refund texts, 100 % recall on
 * formatted PANs):
 *	- NFKC first (fullwidth digits, no-break spaces), Unicode dashes read as
 *	  '-';
 *	- 13 to 19 digits, contiguous, or split by single spaces or dashes at a
 *	  card brand's groupings only: 4-4-4-... ending in a group of 1 to 4,
 *	  4-6-5, 4-6-4;
 *	- not flanked by [A-Za-z0-9_], nor by a '.' that joins it to such a
 *	  character (so "v1.4242..." is not a card but "... 4242 4242 4242 4242."
 *	  at the end of a sentence is);
 *	- a card brand's IIN prefix for that length, and the Luhn check.
 * Identifier arguments additionally refuse any maximal run of 13 to 19
 * digits that passes IIN and Luhn wherever it stands ("pm_4111111111111111").
 *
 * Invariants: a refusal never carries the value, only the argument's name.
 * Pure functions of their input; no state.
 *
 * IDENTIFICATION
 *		src/guard/cardguard.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/unicode_norm.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "base/text.h"
#include "guard/guard.h"

#define CARD_MIN_DIGITS		13
#define CARD_MAX_DIGITS		19
#define CARD_MAX_GROUPS		5
/* Longest Stripe object id accepted in an argument */
#define STRIPE_ID_MAX_LEN	255

/* ---------------------------------------------------------------------------
 * Digits: IIN table and Luhn
 * ---------------------------------------------------------------------------
 */

/* The first k digits of d as a number. */
static int
card_prefix(const char *d, int k)
{
	int			v = 0;
	int			i;

	for (i = 0; i < k; i++)
		v = v * 10 + (d[i] - '0');
	return v;
}

/*
 * card_iin_ok
 *		Is d (n digits) in a card brand's IIN range for that length?  Visa,
 *		Mastercard (both series), American Express, Discover, JCB, Diners
 *		Club, UnionPay and Maestro, per notes/audit-and-vault.md.
 */
static bool
card_iin_ok(const char *d, int n)
{
	int			p1 = card_prefix(d, 1);
	int			p2 = card_prefix(d, 2);
	int			p3 = card_prefix(d, 3);
	int			p4 = card_prefix(d, 4);
	int			p6 = card_prefix(d, 6);
	bool		len16_19 = (n >= 16 && n <= 19);

	/* Visa */
	if (p1 == 4 && (n == 13 || n == 16 || n == 19))
		return true;
	/* Mastercard */
	if (n == 16 && ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720)))
		return true;
	/* American Express */
	if (n == 15 && (p2 == 34 || p2 == 37))
		return true;
	/* Discover */
	if (len16_19 && (p4 == 6011 || (p3 >= 644 && p3 <= 649) || p2 == 65 ||
					 (p6 >= 622126 && p6 <= 622925)))
		return true;
	/* JCB */
	if (len16_19 && p4 >= 3528 && p4 <= 3589)
		return true;
	/* Diners Club */
	if (n >= 14 && ((p3 >= 300 && p3 <= 305) || p2 == 36 || p2 == 38 || p2 == 39))
		return true;
	/* UnionPay */
	if (len16_19 && p2 == 62)
		return true;
	/* Maestro */
	if (p2 == 50 || (p2 >= 56 && p2 <= 69))
		return true;
	return false;
}

/* The Luhn check of n digits. */
static bool
card_luhn_ok(const char *d, int n)
{
	int			sum = 0;
	int			i;

	for (i = 0; i < n; i++)
	{
		int			v = d[n - 1 - i] - '0';

		if (i % 2 == 1)
		{
			v *= 2;
			if (v > 9)
				v -= 9;
		}
		sum += v;
	}
	return sum % 10 == 0;
}

static bool
card_digits_ok(const char *d, int n)
{
	return n >= CARD_MIN_DIGITS && n <= CARD_MAX_DIGITS &&
		card_iin_ok(d, n) && card_luhn_ok(d, n);
}

/* ---------------------------------------------------------------------------
 * Scanning
 *
 * One pass over the normalised text, in time linear in its length and with
 * no bound on it: a chain of digit groups joined by single separators may
 * be of any length, and every stretch of 1 to CARD_MAX_GROUPS consecutive
 * groups in it is a candidate.  Only the last CARD_MAX_GROUPS groups of the
 * chain are remembered (a ring), so no prefix can push a card number out of
 * view.
 * ---------------------------------------------------------------------------
 */
#define IS_DIGIT(c)		((c) >= '0' && (c) <= '9')
#define IS_WORD(c)		(IS_DIGIT(c) || ((c) >= 'a' && (c) <= 'z') || \
						 ((c) >= 'A' && (c) <= 'Z') || (c) == '_')
#define IS_SEP(c)		((c) == ' ' || (c) == '-')

/* Is the text before position start a flank (the run is part of a word)? */
static bool
card_flanked_before(const char *s, int start)
{
	if (start == 0)
		return false;
	if (IS_WORD(s[start - 1]))
		return true;
	return s[start - 1] == '.' && start >= 2 && IS_WORD(s[start - 2]);
}

/* Is the text from position end (exclusive end of the run) a flank? */
static bool
card_flanked_after(const char *s, int n, int end)
{
	if (end >= n)
		return false;
	if (IS_WORD(s[end]))
		return true;
	return s[end] == '.' && end + 1 < n && IS_WORD(s[end + 1]);
}

/* Are the group lengths len[0..k-1] a card brand's grouping? */
static bool
card_grouping_ok(const int *len, int k)
{
	int			i;

	if (k == 1)
		return true;			/* contiguous; the digit count is checked later */
	if (k == 3 && len[0] == 4 && len[1] == 6 && (len[2] == 5 || len[2] == 4))
		return true;
	if (k < 4 || k > 5)
		return false;
	for (i = 0; i < k - 1; i++)
		if (len[i] != 4)
			return false;
	return len[k - 1] >= 1 && len[k - 1] <= 4;
}

/*
 * card_scan_ascii
 *		Does s (n bytes, ASCII after normalisation) hold a card number under
 *		the free-text rule, or, if identifier, also under the identifier
 *		rule?
 */
static bool
card_scan_ascii(const char *s, int n, bool identifier)
{
	int			i = 0;

	while (i < n)
	{
		int			rstart[CARD_MAX_GROUPS];	/* ring of the chain's last groups */
		int			rlen[CARD_MAX_GROUPS];
		int64		ngroups = 0;	/* groups of this chain so far */
		bool		flanked_before;

		if (!IS_DIGIT(s[i]))
		{
			i++;
			continue;
		}

		/* a chain of digit groups joined by single separators */
		flanked_before = card_flanked_before(s, i);
		for (;;)
		{
			int			st = i;
			int			len;
			bool		last;
			int			k;

			while (i < n && IS_DIGIT(s[i]))
				i++;
			len = i - st;
			rstart[ngroups % CARD_MAX_GROUPS] = st;
			rlen[ngroups % CARD_MAX_GROUPS] = len;
			ngroups++;

			/* identifier rule: a lone maximal run, wherever it stands */
			if (identifier && len >= CARD_MIN_DIGITS && len <= CARD_MAX_DIGITS &&
				card_digits_ok(s + st, len))
				return true;

			last = !(i + 1 < n && IS_SEP(s[i]) && IS_DIGIT(s[i + 1]));

			/* free-text rule: the stretches of k groups that end here */
			if (!(last && card_flanked_after(s, n, i)))
			{
				for (k = 1; k <= CARD_MAX_GROUPS && k <= ngroups; k++)
				{
					int			glen[CARD_MAX_GROUPS];
					char		digits[CARD_MAX_DIGITS];
					int64		first = ngroups - k;
					int			nd = 0;
					int			g;

					for (g = 0; g < k; g++)
					{
						glen[g] = rlen[(first + g) % CARD_MAX_GROUPS];
						nd += glen[g];
					}
					if (nd > CARD_MAX_DIGITS)
						break;	/* longer stretches only grow */
					if (nd < CARD_MIN_DIGITS)
						continue;
					if (first == 0 && flanked_before)
						continue;
					if (!card_grouping_ok(glen, k))
						continue;
					nd = 0;
					for (g = 0; g < k; g++)
					{
						memcpy(digits + nd, s + rstart[(first + g) % CARD_MAX_GROUPS], glen[g]);
						nd += glen[g];
					}
					if (card_digits_ok(digits, nd))
						return true;
				}
			}
			if (last)
				break;
			i++;				/* the separator */
		}
	}
	return false;
}

/* ---------------------------------------------------------------------------
 * Normalisation
 *
 * Each character is read through its own NFKC form (fullwidth, circled,
 * superscript and mathematical digits are digits; the compatibility spaces
 * are spaces), then:
 *	- decimal digits of any script (Unicode Nd) are the ASCII digits;
 *	- space separators (Zs) are ' ', dash punctuation (Pd) and U+2212 '-';
 *	- combining marks (Mn, Me) and invisible format characters (Cf: soft
 *	  hyphen, zero-width spaces and joiners, word joiner, BOM, bidi
 *	  controls) are dropped, so they neither split nor hide a number;
 *	- any other non-ASCII character is '~' (neither a word character nor a
 *	  separator).
 * Character by character, not NFKC of the whole string: the result is the
 * same for everything the scan looks at, and it is linear (the canonical
 * reordering of a whole string's combining marks is quadratic in the length
 * of a run of them).  The tables are generated from Unicode 14.0.0, the
 * version of PostgreSQL 15's own normalisation tables
 * (tools/gen-cardguard-unicode.py).
 * ---------------------------------------------------------------------------
 */
#include "guard/cardguard_unicode.h"

/* Is c in one of the n sorted, disjoint ranges r? */
static bool
card_in_ranges(pg_wchar c, const CardRange *r, int n)
{
	int			lo = 0;
	int			hi = n - 1;

	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;

		if (c < r[mid].first)
			hi = mid - 1;
		else if (c > r[mid].last)
			lo = mid + 1;
		else
			return true;
	}
	return false;
}

/* The value of c if it is a decimal digit (Nd) beyond ASCII, else -1. */
static int
card_unicode_digit(pg_wchar c)
{
	int			lo = 0;
	int			hi = lengthof(card_digit_zeros) - 1;
	int			best = -1;

	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;

		if (card_digit_zeros[mid] <= c)
		{
			best = mid;
			lo = mid + 1;
		}
		else
			hi = mid - 1;
	}
	if (best >= 0 && c - card_digit_zeros[best] <= 9)
		return (int) (c - card_digit_zeros[best]);
	return -1;
}

/*
 * card_class: the ASCII character that stands for one character of an NFKC
 * form (c >= 0x80), or '\0' when it is dropped.
 */
static char
card_class(pg_wchar c)
{
	int			d;

	if (card_in_ranges(c, card_ignorable, lengthof(card_ignorable)))
		return '\0';
	d = card_unicode_digit(c);
	if (d >= 0)
		return (char) ('0' + d);
	if (card_in_ranges(c, card_spaces, lengthof(card_spaces)))
		return ' ';
	if (card_in_ranges(c, card_dashes, lengthof(card_dashes)))
		return '-';
	return '~';
}

/*
 * A small cache of characters already mapped: NFKC of one character costs
 * two pallocs and a table search.
 */
#define CARD_CACHE_SIZE		256
#define CARD_CACHE_MAXOUT	7
typedef struct CardCacheEntry
{
	pg_wchar	c;				/* 0: empty */
	uint8		len;
	char		out[CARD_CACHE_MAXOUT];
} CardCacheEntry;

/* card_map_char: append what the character c (>= 0x80) stands for to buf */
static void
card_map_char(pg_wchar c, StringInfo buf, CardCacheEntry *cache)
{
	CardCacheEntry *e = &cache[c % CARD_CACHE_SIZE];
	pg_wchar	one[2];
	pg_wchar   *norm;
	int			start = buf->len;
	int			i;

	if (e->c == c)
	{
		appendBinaryStringInfo(buf, e->out, e->len);
		return;
	}
	one[0] = c;
	one[1] = 0;
	norm = unicode_normalize(UNICODE_NFKC, one);
	for (i = 0; norm[i] != 0; i++)
	{
		char		a = norm[i] < 0x80 ? (char) norm[i] : card_class(norm[i]);

		if (a != '\0')
			appendStringInfoChar(buf, a);
	}
	pfree(norm);
	if (buf->len - start <= CARD_CACHE_MAXOUT)
	{
		e->c = c;
		e->len = buf->len - start;
		memcpy(e->out, buf->data + start, e->len);
	}
}

/*
 * card_normalize
 *		An ASCII rendering of value (len bytes, server encoding) for scanning,
 *		as above.  Returns value itself when it is ASCII; otherwise a
 *		palloc'd string.  Linear in len.
 */
static const char *
card_normalize(const char *value, int len, int *outlen)
{
	int			i;
	bool		ascii = true;
	int			enc = GetDatabaseEncoding();
	const unsigned char *u;
	int			ulen;
	StringInfoData buf;
	CardCacheEntry *cache;

	for (i = 0; i < len; i++)
	{
		if ((unsigned char) value[i] >= 0x80)
		{
			ascii = false;
			break;
		}
	}
	*outlen = len;
	if (ascii)
		return value;

	/* as UTF-8 (SQL_ASCII has no meaning beyond ASCII: '~' each byte) */
	if (enc == PG_UTF8 || enc == PG_SQL_ASCII)
		u = (const unsigned char *) value;
	else
		u = (const unsigned char *) pg_server_to_any(value, len, PG_UTF8);
	ulen = (u == (const unsigned char *) value) ? len : (int) strlen((const char *) u);

	initStringInfo(&buf);
	cache = palloc0(sizeof(CardCacheEntry) * CARD_CACHE_SIZE);
	i = 0;
	while (i < ulen)
	{
		int			l;

		if (u[i] < 0x80)
		{
			appendStringInfoChar(&buf, (char) u[i]);
			i++;
			continue;
		}
		l = pg_utf_mblen(u + i);
		if (enc == PG_SQL_ASCII || l < 2 || i + l > ulen || !pg_utf8_islegal(u + i, l))
		{
			appendStringInfoChar(&buf, '~');
			i++;
			continue;
		}
		card_map_char(utf8_to_unicode(u + i), &buf, cache);
		i += l;
	}
	pfree(cache);
	if (u != (const unsigned char *) value)
		pfree((void *) u);
	*outlen = buf.len;
	return buf.data;
}

/*
 * pe_contains_card_number
 *		Does value hold a card number (free-text rule; with identifier, also
 *		the identifier rule)?
 */
bool
pe_contains_card_number(const char *value, bool identifier)
{
	int			len = strlen(value);
	int			nlen;
	const char *norm;
	bool		found;

	/*
	 * No character stands for more digits than it has bytes (ASCII digits:
	 * one each; "¼" is two bytes for two digits; "⑳" three for two), so a
	 * value shorter than the shortest card number in bytes holds none.
	 */
	if (len < CARD_MIN_DIGITS)
		return false;
	norm = card_normalize(value, len, &nlen);
	found = card_scan_ascii(norm, nlen, identifier);
	if (norm != value)
		pfree((char *) norm);
	return found;
}

/* ---------------------------------------------------------------------------
 * Guards
 * ---------------------------------------------------------------------------
 */
static void
card_refuse(const char *argname)
{
	ereport(ERROR,
			(errcode(ERRCODE_PE_CARD_NUMBER),
			 errmsg("value looks like a card number; card numbers are never accepted"),
			 errdetail("Argument \"%s\" was refused.", argname),
			 errhint("Send card details to Stripe from the browser (Stripe.js) and pass the resulting pm_... id.")));
}

/* pe_guard_text: refuse a free-text value that holds a card number. */
void
pe_guard_text(const char *value, const char *argname)
{
	if (value != NULL && pe_contains_card_number(value, false))
		card_refuse(argname);
}

/*
 * pe_guard_identifier: refuse an identifier (a Stripe id, an idempotency
 * key) that holds a card number, glued to a prefix or not.
 */
void
pe_guard_identifier(const char *value, const char *argname)
{
	if (value != NULL && pe_contains_card_number(value, true))
		card_refuse(argname);
}

/*
 * card_key_is_cvc
 *		Does a JSON key name a card security code (cvv, cvc, cvv2, ...)?
 *		Compared lower-case, on letters and digits only.
 */
static bool
card_key_is_cvc(const char *key, int len)
{
	static const char *const names[] = {
		"cvv", "cvc", "cvv2", "cvc2", "cvn", "cvn2", "csc", "cid",
		"securitycode", "cardsecuritycode", "cardcvv", "cardcvc",
		"cardverificationvalue", "cardverificationcode", "cardcode"
	};
	char		buf[32];
	int			n = 0;
	int			i;

	for (i = 0; i < len; i++)
	{
		char		c = key[i];

		if (c >= 'A' && c <= 'Z')
			c += 'a' - 'A';
		if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
		{
			if (n >= (int) sizeof(buf) - 1)
				return false;
			buf[n++] = c;
		}
	}
	buf[n] = '\0';
	for (i = 0; i < (int) lengthof(names); i++)
		if (strcmp(buf, names[i]) == 0)
			return true;
	return false;
}

/* What card_jsonb_scan found. */
typedef enum CardFind
{
	CARD_FIND_NONE,
	CARD_FIND_NUMBER,
	CARD_FIND_CVC_KEY
} CardFind;

/*
 * card_numeric_has_card
 *		Does a JSON number carry a card number?  A number is not free text:
 *		its digits, not its spelling, count.  4242424242424242,
 *		4242424242424242.0, 4.242424242424242e15 and -4242424242424242 are
 *		one value, printed by numeric_out as its integer digits, a '.' and
 *		its fraction digits to its display scale (never an exponent).  The
 *		integer digits are checked as a lone run of digits, and so are the
 *		fraction digits, as printed and without any number of their trailing
 *		zeros (0.4242424242424242 carries the card number as much as
 *		4242424242424242 does, and 0.60111111111111170 too).
 */
static bool
card_numeric_has_card(Numeric num)
{
	char	   *text = pe_numeric_text(num);
	char	   *p = text;
	char	   *dot;
	bool		found = false;

	if (*p == '-')
		p++;
	dot = strchr(p, '.');
	if (dot != NULL)
	{
		const char *frac = dot + 1;
		int			flen = strlen(frac);
		int			stripped = flen;
		int			len;

		while (stripped > 0 && frac[stripped - 1] == '0')
			stripped--;
		for (len = Max(stripped, CARD_MIN_DIGITS);
			 len <= Min(flen, CARD_MAX_DIGITS) && !found; len++)
			found = card_scan_ascii(frac, len, false);
		*dot = '\0';
	}
	if (!found && strlen(p) >= CARD_MIN_DIGITS)
		found = card_scan_ascii(p, strlen(p), false);
	pfree(text);
	return found;
}

/*
 * card_jsonb_scan
 *		Walk every key and scalar of a jsonb document, at any depth: a card
 *		number in a key, a string or a number, or a key naming a card
 *		security code.
 */
static CardFind
card_jsonb_scan(Jsonb *jb)
{
	JsonbIterator *it = JsonbIteratorInit(&jb->root);
	JsonbValue	v;
	JsonbIteratorToken r;

	while ((r = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		char	   *s = NULL;

		if (r != WJB_KEY && r != WJB_VALUE && r != WJB_ELEM)
			continue;
		if (v.type == jbvString)
		{
			if (r == WJB_KEY)
			{
				char	   *key = pnstrdup(v.val.string.val, v.val.string.len);
				int			klen;
				const char *norm = card_normalize(key, v.val.string.len, &klen);
				bool		cvc = card_key_is_cvc(norm, klen);

				if (norm != key)
					pfree((char *) norm);
				pfree(key);
				if (cvc)
					return CARD_FIND_CVC_KEY;
			}
			if (v.val.string.len < CARD_MIN_DIGITS)
				continue;
			s = pnstrdup(v.val.string.val, v.val.string.len);
		}
		else if (v.type == jbvNumeric)
		{
			if (card_numeric_has_card(v.val.numeric))
				return CARD_FIND_NUMBER;
			continue;
		}
		if (s != NULL)
		{
			bool		found = pe_contains_card_number(s, false);

			pfree(s);
			if (found)
				return CARD_FIND_NUMBER;
		}
	}
	return CARD_FIND_NONE;
}

/*
 * pe_guard_jsonb: refuse a document with a card number anywhere (keys,
 * strings, numbers, any depth) or a key naming a card security code.
 */
void
pe_guard_jsonb(Jsonb *value, const char *argname)
{
	if (value == NULL)
		return;
	switch (card_jsonb_scan(value))
	{
		case CARD_FIND_NONE:
			break;
		case CARD_FIND_NUMBER:
			card_refuse(argname);
			break;
		case CARD_FIND_CVC_KEY:
			ereport(ERROR,
					(errcode(ERRCODE_PE_CARD_NUMBER),
					 errmsg("card security codes are never accepted"),
					 errdetail("Argument \"%s\" has a key that names a card security code.", argname)));
			break;
	}
}

/* ---------------------------------------------------------------------------
 * Stripe ids
 * ---------------------------------------------------------------------------
 */

/*
 * pe_check_stripe_id
 *		A Stripe object id: 1 to 255 of [A-Za-z0-9_-], holding no card number.
 *		The prefix ("pm_") is not required: Stripe may change its formats.
 */
void
pe_check_stripe_id(const char *value, const char *argname)
{
	const char *p;

	pe_guard_identifier(value, argname);
	if (value[0] == '\0' || strlen(value) > STRIPE_ID_MAX_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"%s\" is not a Stripe id", argname),
				 errdetail("A Stripe id has 1 to %d characters.", STRIPE_ID_MAX_LEN)));
	for (p = value; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			  (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("argument \"%s\" is not a Stripe id", argname),
					 errdetail("A Stripe id has only letters, digits, '_' and '-'.")));
}

/* ---------------------------------------------------------------------------
 * SQL functions
 * ---------------------------------------------------------------------------
 */

/* SQL function: payment.contains_card_number(text, boolean) returns boolean */
PG_FUNCTION_INFO_V1(pe_contains_card_number_text);
Datum
pe_contains_card_number_text(PG_FUNCTION_ARGS)
{
	char	   *value = text_to_cstring(PG_GETARG_TEXT_PP(0));
	bool		identifier = PG_GETARG_BOOL(1);

	PG_RETURN_BOOL(pe_contains_card_number(value, identifier));
}

/* SQL function: payment.contains_card_number(jsonb) returns boolean */
PG_FUNCTION_INFO_V1(pe_contains_card_number_jsonb);
Datum
pe_contains_card_number_jsonb(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(card_jsonb_scan(PG_GETARG_JSONB_P(0)) != CARD_FIND_NONE);
}
