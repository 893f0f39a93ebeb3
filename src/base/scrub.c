/*-------------------------------------------------------------------------
 *
 * scrub.c
 *		Log scrubbing: text from Stripe or from an error, made fit for a log
 *		line, a stored message or the worker's status, with no Stripe id or
 *		key in it.
 *
 * IDENTIFICATION
 *		src/base/scrub.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"

#include "base/text.h"

/* Is c part of a Stripe-style identifier? */
static bool
scrub_id_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		(c >= '0' && c <= '9') || c == '_';
}

/*
 * Prefixes of Stripe object ids and keys.  "card_" is also the start of
 * error codes (card_declined, card_error): an id has an upper-case letter
 * or a digit after it, a code never has.
 */
static const char *const scrub_prefixes[] = {
	"pm_", "pi_", "ch_", "re_", "cus_", "src_", "seti_", "sk_", "rk_", "pk_",
	"whsec_", "tok_", "ba_", "py_", "acct_", "evt_", "txn_", "card_", NULL
};

/* Length of the Stripe id or key at p (at a word start), or 0. */
static int
scrub_id_length(const char *p)
{
	int			i;

	for (i = 0; scrub_prefixes[i] != NULL; i++)
	{
		size_t		n = strlen(scrub_prefixes[i]);
		const char *e = p + n;
		bool		random_looking = false;

		if (strncmp(p, scrub_prefixes[i], n) != 0)
			continue;
		while (scrub_id_char(*e))
		{
			if ((*e >= 'A' && *e <= 'Z') || (*e >= '0' && *e <= '9'))
				random_looking = true;
			e++;
		}
		if (e - p < (int) n + 3)
			continue;
		if (strcmp(scrub_prefixes[i], "card_") == 0 && !random_looking)
			continue;
		return (int) (e - p);
	}
	return 0;
}

/*
 * pe_scrub
 *		A copy of text fit for a log line or a stored message: Stripe object
 *		ids and keys (pm_..., pi_..._secret_..., sk_test_..., ...) become
 *		"[redacted]", control characters become spaces, and at most maxlen
 *		bytes are kept (cut at a character boundary).
 */
char *
pe_scrub(const char *text, int maxlen)
{
	StringInfoData buf;
	const char *p = text;

	initStringInfo(&buf);
	if (text == NULL)
		return buf.data;
	while (*p && buf.len < maxlen)
	{
		if (p == text || !scrub_id_char(p[-1]))
		{
			int			n = scrub_id_length(p);

			if (n > 0)
			{
				appendStringInfoString(&buf, "[redacted]");
				p += n;
				continue;
			}
		}
		if ((unsigned char) *p < 0x20 || *p == 0x7f)
			appendStringInfoChar(&buf, ' ');
		else
		{
			int			len = pg_mblen(p);

			if (buf.len + len > maxlen)
				break;
			appendBinaryStringInfo(&buf, p, len);
			p += len - 1;
		}
		p++;
	}
	return buf.data;
}

