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
 *		src/cardguard.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/unicode_norm.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "payment_ext.h"
#include "vault.h"

#define CARD_MIN_DIGITS		13
#define CARD_MAX_DIGITS		19
#define CARD_MAX_GROUPS		5

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
		int			gstart[64];
		int			glen[64];
		int			m = 0;
		int			j;
		int			a;

		if (!IS_DIGIT(s[i]))
		{
			i++;
			continue;
		}

		/* a chain of digit groups joined by single separators */
		j = i;
		for (;;)
		{
			int			st = j;

			while (j < n && IS_DIGIT(s[j]))
				j++;
			if (m < (int) lengthof(gstart))
			{
				gstart[m] = st;
				glen[m] = j - st;
				m++;
			}
			if (j + 1 < n && IS_SEP(s[j]) && IS_DIGIT(s[j + 1]) && m < (int) lengthof(gstart))
				j++;
			else
				break;
		}

		for (a = 0; a < m; a++)
		{
			int			b;

			/* identifier rule: a lone run, wherever it stands */
			if (identifier && glen[a] >= CARD_MIN_DIGITS && glen[a] <= CARD_MAX_DIGITS &&
				card_digits_ok(s + gstart[a], glen[a]))
				return true;

			if (a == 0 && card_flanked_before(s, gstart[0]))
				continue;
			for (b = a; b < m && b - a < CARD_MAX_GROUPS; b++)
			{
				char		digits[CARD_MAX_DIGITS];
				int			nd = 0;
				int			g;

				for (g = a; g <= b; g++)
					nd += glen[g];
				if (nd > CARD_MAX_DIGITS)
					break;
				if (nd < CARD_MIN_DIGITS)
					continue;
				if (b == m - 1 && card_flanked_after(s, n, gstart[b] + glen[b]))
					continue;
				if (!card_grouping_ok(glen + a, b - a + 1))
					continue;
				nd = 0;
				for (g = a; g <= b; g++)
				{
					memcpy(digits + nd, s + gstart[g], glen[g]);
					nd += glen[g];
				}
				if (card_digits_ok(digits, nd))
					return true;
			}
		}
		i = j;
	}
	return false;
}

/*
 * card_normalize
 *		An ASCII rendering of value for scanning: NFKC (UTF-8 databases), then
 *		Unicode dashes as '-', other non-ASCII characters as '~' (neither a
 *		word character nor a separator).  Returns value itself when it is
 *		ASCII; otherwise a palloc'd string.
 */
static const char *
card_normalize(const char *value, int len, int *outlen)
{
	int			i;
	bool		ascii = true;
	pg_wchar   *wide;
	pg_wchar   *norm;
	char	   *out;
	int			nw;
	int			k;

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

	wide = palloc((len + 1) * sizeof(pg_wchar));
	nw = pg_mb2wchar_with_len(value, wide, len);
	wide[nw] = 0;
	norm = (GetDatabaseEncoding() == PG_UTF8) ?
		unicode_normalize(UNICODE_NFKC, wide) : wide;
	if (norm == NULL)
		norm = wide;
	for (k = 0; norm[k] != 0; k++)
		;
	out = palloc(k + 1);
	for (i = 0; i < k; i++)
	{
		pg_wchar	c = norm[i];

		if (c < 0x80)
			out[i] = (char) c;
		else if ((c >= 0x2010 && c <= 0x2015) || c == 0x2212 || c == 0xFE63)
			out[i] = '-';
		else if (c == 0x00A0 || c == 0x202F || c == 0x2007)
			out[i] = ' ';
		else
			out[i] = '~';
	}
	out[k] = '\0';
	if (norm != wide)
		pfree(norm);
	pfree(wide);
	*outlen = k;
	return out;
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
			if (r == WJB_KEY && card_key_is_cvc(v.val.string.val, v.val.string.len))
				return CARD_FIND_CVC_KEY;
			if (v.val.string.len < CARD_MIN_DIGITS)
				continue;
			s = pnstrdup(v.val.string.val, v.val.string.len);
		}
		else if (v.type == jbvNumeric)
			s = DatumGetCString(DirectFunctionCall1(numeric_out,
													NumericGetDatum(v.val.numeric)));
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
