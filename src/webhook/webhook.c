/*-------------------------------------------------------------------------
 *
 * webhook.c
 *		payment.handle_webhook(): verify a Stripe webhook delivery, record
 *		its event once and apply it (apply.c).
 *
 * Verification follows Stripe's rules (README, "Webhooks"): the
 * Stripe-Signature header is "t=<unix seconds>,v1=<hex>[,v1=<hex>...]";
 * each v1 is HMAC-SHA256, keyed with an endpoint secret, over "<t>.<raw
 * body>"; other schemes (v0) are ignored; every v1 is compared with every
 * secret of payment_ext.webhook_secret_file in constant time
 * (CRYPTO_memcmp, no early exit); t must be within
 * payment_ext.webhook_tolerance of now, in both directions.  Nothing is
 * parsed before the signature verifies.
 *
 * Invariants:
 *	- The secrets live in webhook_cxt (a child of TopMemoryContext) from
 *	  their first use until the next configuration reload, which wipes
 *	  them (assign hook), or process exit (wiped too).  They never reach a
 *	  message, a log line or a table.
 *	- A refusal raises before anything is written: the transaction rolls
 *	  back, and pe_audit_log_refusal leaves its LOG line.
 *	- An event id is recorded once (payment.webhook_events, primary key);
 *	  a redelivery finds it and returns without changing anything.  Two
 *	  concurrent deliveries of one event serialise on the primary key.
 *
 * IDENTIFICATION
 *		src/webhook/webhook.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "audit/audit.h"
#include "base/call.h"
#include "base/guc.h"
#include "base/pg_compat.h"
#include "base/spi.h"
#include "base/text.h"
#include "vault/vault.h"
#include "webhook/webhook.h"
#include "webhook/webhook_int.h"

/* Most secrets in the file (a rotation needs two) */
#define WEBHOOK_MAX_SECRETS		8
/* Most v1 signatures looked at in one header */
#define WEBHOOK_MAX_SIGNATURES	16
/* Longest Stripe-Signature header accepted */
#define WEBHOOK_MAX_HEADER		8192
/* HMAC-SHA256 length */
#define WEBHOOK_MAC_LEN			32

/* ---------------------------------------------------------------------------
 * The secrets, per backend
 * ---------------------------------------------------------------------------
 */
static MemoryContext webhook_cxt = NULL;
static char *secrets[WEBHOOK_MAX_SECRETS];
static int	nsecrets = 0;
static bool secrets_stale = true;
static bool exit_registered = false;

/* Wipe and forget the secrets. */
static void
webhook_secrets_free(void)
{
	int			i;

	for (i = 0; i < nsecrets; i++)
	{
		OPENSSL_cleanse(secrets[i], strlen(secrets[i]));
		secrets[i] = NULL;
	}
	nsecrets = 0;
	if (webhook_cxt != NULL)
		MemoryContextReset(webhook_cxt);
}

static void
webhook_at_exit(int code, Datum arg)
{
	webhook_secrets_free();
}

/*
 * pe_assign_webhook_secret
 *		Assign hook of payment_ext.webhook_secret_file, called on every
 *		configuration (re)load: wipe the secrets now, read the file again on
 *		next use.  Raises nothing, as assign hooks must.
 */
void
pe_assign_webhook_secret(const char *newval, void *extra)
{
	webhook_secrets_free();
	secrets_stale = true;
}

/*
 * Load the secrets: one per line, blank lines and lines starting with '#'
 * skipped, surrounding white space trimmed.  Raises (F0000, 55000) when the
 * file cannot be used; the text of the file is never in a message.
 */
static void
webhook_secrets_load(void)
{
	char	   *text;
	char	   *line;
	char	   *next;
	int			lineno = 0;
	MemoryContext old;

	if (!exit_registered)
	{
		on_proc_exit(webhook_at_exit, (Datum) 0);
		exit_registered = true;
	}
	if (webhook_cxt == NULL)
		webhook_cxt = AllocSetContextCreate(TopMemoryContext, "payment_ext webhook secrets",
											ALLOCSET_SMALL_SIZES);
	webhook_secrets_free();

	text = pe_read_secret_file(pe_webhook_secret_file, "the webhook secret file");
	old = MemoryContextSwitchTo(webhook_cxt);
	for (line = text; line != NULL; line = next)
	{
		char	   *end;

		lineno++;
		next = strchr(line, '\n');
		if (next != NULL)
			*next++ = '\0';
		while (*line == ' ' || *line == '\t' || *line == '\r')
			line++;
		end = line + strlen(line);
		while (end > line && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
			*--end = '\0';
		if (*line == '\0' || *line == '#')
			continue;
		if (nsecrets == WEBHOOK_MAX_SECRETS)
		{
			MemoryContextSwitchTo(old);
			pe_secret_cleanse(text);
			webhook_secrets_free();
			ereport(ERROR,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("the webhook secret file holds more than %d secrets (line %d)",
							WEBHOOK_MAX_SECRETS, lineno)));
		}
		if (strpbrk(line, " \t") != NULL)
		{
			MemoryContextSwitchTo(old);
			pe_secret_cleanse(text);
			webhook_secrets_free();
			ereport(ERROR,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("line %d of the webhook secret file holds white space inside the secret", lineno),
					 errhint("Write one secret per line.")));
		}
		secrets[nsecrets++] = pstrdup(line);
	}
	MemoryContextSwitchTo(old);
	pe_secret_cleanse(text);
	if (nsecrets == 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("the webhook secret file holds no secret")));
	secrets_stale = false;
}

/* ---------------------------------------------------------------------------
 * Verification
 * ---------------------------------------------------------------------------
 */

/* Refuse a delivery: the LOG line, then the error. */
static void
webhook_refuse(int sqlstate, const char *why, const char *detail)
{
	pe_audit_log_refusal("payment.handle_webhook", why);
	ereport(ERROR,
			(errcode(sqlstate),
			 errmsg("webhook refused: %s", why),
			 detail ? errdetail("%s", detail) : 0,
			 errhidestmt(true)));
}

/*
 * Parse the Stripe-Signature header: its timestamp and its v1 signatures
 * (non-hex ones skipped, as Stripe's libraries do; other schemes ignored).
 * Returns the number of v1 signatures; raises PE012 on a malformed header.
 */
static int
webhook_parse_header(const char *header, int64 *t,
					 unsigned char sigs[][WEBHOOK_MAC_LEN])
{
	const char *p = header;
	bool		have_t = false;
	int			nsigs = 0;
	size_t		hlen = strlen(header);

	if (hlen == 0 || hlen > WEBHOOK_MAX_HEADER)
		webhook_refuse(ERRCODE_PE_WEBHOOK_HEADER, "malformed Stripe-Signature header",
					   "The header is empty or too long.");
	while (*p)
	{
		const char *end = strchr(p, ',');
		const char *eq;
		size_t		len;
		size_t		klen;
		const char *val;
		size_t		vlen;

		if (end == NULL)
			end = p + strlen(p);
		len = end - p;
		/* surrounding blanks are tolerated */
		while (len > 0 && (*p == ' ' || *p == '\t'))
			p++, len--;
		while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
			len--;
		eq = memchr(p, '=', len);
		if (eq == NULL || memchr(eq + 1, '=', len - (eq + 1 - p)) != NULL || eq == p)
			webhook_refuse(ERRCODE_PE_WEBHOOK_HEADER, "malformed Stripe-Signature header",
						   "Each element must be one key=value pair.");
		klen = eq - p;
		val = eq + 1;
		vlen = len - klen - 1;

		if (klen == 1 && p[0] == 't')
		{
			int64		v = 0;
			size_t		i;

			if (have_t || vlen == 0 || vlen > 12)
				webhook_refuse(ERRCODE_PE_WEBHOOK_HEADER, "malformed Stripe-Signature header",
							   "The timestamp t must appear once, as Unix seconds.");
			for (i = 0; i < vlen; i++)
			{
				if (val[i] < '0' || val[i] > '9')
					webhook_refuse(ERRCODE_PE_WEBHOOK_HEADER, "malformed Stripe-Signature header",
								   "The timestamp t must appear once, as Unix seconds.");
				v = v * 10 + (val[i] - '0');
			}
			*t = v;
			have_t = true;
		}
		else if (klen == 2 && p[0] == 'v' && p[1] == '1')
		{
			if (nsigs < WEBHOOK_MAX_SIGNATURES &&
				vlen == WEBHOOK_MAC_LEN * 2 && pe_hex_decode(val, WEBHOOK_MAC_LEN, sigs[nsigs]))
				nsigs++;
		}
		/* v0 (test-mode fake) and unknown schemes: ignored */
		p = *end ? end + 1 : end;
	}
	if (!have_t)
		webhook_refuse(ERRCODE_PE_WEBHOOK_HEADER, "malformed Stripe-Signature header",
					   "The header has no timestamp t.");
	if (nsigs == 0)
		webhook_refuse(ERRCODE_PE_WEBHOOK_HEADER, "malformed Stripe-Signature header",
					   "The header has no v1 signature.");
	return nsigs;
}

/*
 * Verify payload against header: raises PE010 (no signature matches any
 * secret), PE011 (timestamp outside the tolerance) or PE012 (malformed).
 */
static void
webhook_verify(const char *payload, size_t plen, const char *header)
{
	unsigned char sigs[WEBHOOK_MAX_SIGNATURES][WEBHOOK_MAC_LEN];
	unsigned char mac[WEBHOOK_MAC_LEN];
	unsigned int maclen;
	int64		t = 0;
	int			nsigs;
	int			s;
	int			i;
	int			matched = 0;
	char		prefix[32];
	int			prefix_len;
	unsigned char *data;
	int64		now;

	nsigs = webhook_parse_header(header, &t, sigs);

	if (secrets_stale || nsecrets == 0)
		webhook_secrets_load();

	/* "<t>." + payload: the bytes Stripe signed */
	prefix_len = snprintf(prefix, sizeof(prefix), INT64_FORMAT ".", t);
	data = palloc(prefix_len + plen);
	memcpy(data, prefix, prefix_len);
	memcpy(data + prefix_len, payload, plen);

	for (s = 0; s < nsecrets; s++)
	{
		if (HMAC(EVP_sha256(), secrets[s], (int) strlen(secrets[s]),
				 data, prefix_len + plen, mac, &maclen) == NULL ||
			maclen != WEBHOOK_MAC_LEN)
		{
			OPENSSL_cleanse(mac, sizeof(mac));
			ereport(ERROR,
					(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
					 errmsg("could not compute a webhook signature")));
		}
		/* every signature against every secret: no early exit */
		for (i = 0; i < nsigs; i++)
			matched |= (CRYPTO_memcmp(mac, sigs[i], WEBHOOK_MAC_LEN) == 0);
	}
	OPENSSL_cleanse(mac, sizeof(mac));
	pfree(data);

	if (!matched)
		webhook_refuse(ERRCODE_PE_WEBHOOK_SIGNATURE, "signature does not verify",
					   "No v1 signature of the header matches the payload under a secret of payment_ext.webhook_secret_file.");

	now = (int64) (GetCurrentTimestamp() / USECS_PER_SEC) +
		(POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY;
	if (t < now - pe_webhook_tolerance)
		webhook_refuse(ERRCODE_PE_WEBHOOK_TIMESTAMP, "signature timestamp is too old",
					   psprintf("The timestamp is more than %d seconds in the past (payment_ext.webhook_tolerance).",
								pe_webhook_tolerance));
	if (t > now + pe_webhook_tolerance)
		webhook_refuse(ERRCODE_PE_WEBHOOK_TIMESTAMP, "signature timestamp is in the future",
					   psprintf("The timestamp is more than %d seconds in the future (payment_ext.webhook_tolerance).",
								pe_webhook_tolerance));
}

/* ---------------------------------------------------------------------------
 * Recording
 * ---------------------------------------------------------------------------
 */
static PePlan event_seen_plan = {
	"SELECT 1 FROM payment.webhook_events WHERE event_id = $1",
	1, {TEXTOID}, NULL, 0
};
static PePlan event_insert_plan = {
	"INSERT INTO payment.webhook_events (event_id, type, created, api_version, livemode,"
	" payload, payload_bytes, outcome)"
	" VALUES ($1, $2, pg_catalog.to_timestamp($3), $4, $5, $6, $7, 'received')"
	" ON CONFLICT (event_id) DO NOTHING",
	7, {TEXTOID, TEXTOID, FLOAT8OID, TEXTOID, BOOLOID, TEXTOID, INT4OID}, NULL, 0
};
static PePlan event_outcome_plan = {
	"UPDATE payment.webhook_events SET outcome = $2, payment_id = $3, refund_id = $4,"
	" object_status = $5, applied_at = CASE WHEN $6 THEN pg_catalog.clock_timestamp() END"
	" WHERE event_id = $1",
	6, {TEXTOID, TEXTOID, UUIDOID, UUIDOID, TEXTOID, BOOLOID}, NULL, 0
};

/* Refuse a verified payload that is not a Stripe event. */
static void
webhook_bad_payload(const char *why)
{
	pe_audit_log_refusal("payment.handle_webhook", why);
	ereport(ERROR,
			(errcode(ERRCODE_PE_WEBHOOK_PAYLOAD),
			 errmsg("webhook refused: %s", why),
			 errdetail("The signature verified, but the payload is not a Stripe event object with an id and a type."),
			 errhidestmt(true)));
}

/* Is s a plausible Stripe event id (letters, digits, underscores)? */
static bool
event_id_valid(const char *s)
{
	size_t		n = strlen(s);
	size_t		i;

	if (n == 0 || n > 255)
		return false;
	for (i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
			  (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return false;
	return true;
}

/* SQL function: payment.handle_webhook(text, text) returns text */
PE_REDACTED_FUNCTION(pe_handle_webhook, handle_webhook_body);

/* The body of pe_handle_webhook. */
static Datum
handle_webhook_body(PG_FUNCTION_ARGS)
{
	static const char *const argnames[] = {"payload", "signature_header"};
	text	   *payload_t;
	char	   *payload;
	size_t		plen;
	char	   *header;
	JsonLexContext *lex;
	Jsonb	   *event;
	JsonbContainer *data;
	WebhookEvent ev;
	char	   *created;
	char	   *api_version;
	char	   *livemode;
	Datum		args[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	int			rc;

	pe_check_args_not_null(fcinfo, argnames, lengthof(argnames));
	payload_t = PG_GETARG_TEXT_PP(0);
	payload = VARDATA_ANY(payload_t);
	plen = VARSIZE_ANY_EXHDR(payload_t);
	header = text_to_cstring(PG_GETARG_TEXT_PP(1));

	/* 1. the signature, before anything looks inside the payload */
	webhook_verify(payload, plen, header);

	/* 2. a JSON object with an id and a type */
	lex = pe_makeJsonLexContextCstringLen(payload, plen, GetDatabaseEncoding(), true);
	if (pg_parse_json(lex, &nullSemAction) != JSON_SUCCESS)
		webhook_bad_payload("payload is not JSON");
	event = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
											   CStringGetDatum(text_to_cstring(payload_t))));
	if (JB_ROOT_IS_SCALAR(event) || !JB_ROOT_IS_OBJECT(event))
		webhook_bad_payload("payload is not a JSON object");
	memset(&ev, 0, sizeof(ev));
	ev.id = pe_jb_text(&event->root, "id");
	ev.type = pe_jb_text(&event->root, "type");
	if (ev.id == NULL || ev.type == NULL || !event_id_valid(ev.id) || ev.type[0] == '\0' ||
		strlen(ev.type) > 200)
		webhook_bad_payload("payload is not a Stripe event");
	data = pe_jb_object(&event->root, "data");
	ev.object = data ? pe_jb_object(data, "object") : NULL;
	created = pe_jb_text(&event->root, "created");
	api_version = pe_jb_text(&event->root, "api_version");
	livemode = pe_jb_text(&event->root, "livemode");

	SPI_connect();

	/* 3. once per event id: a redelivery changes nothing */
	args[0] = CStringGetTextDatum(ev.id);
	rc = SPI_execute_plan(pe_plan(&event_seen_plan), args, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "looking up a webhook event failed: %s", SPI_result_code_string(rc));
	if (SPI_processed > 0)
	{
		SPI_finish();
		PG_RETURN_TEXT_P(cstring_to_text(ev.id));
	}
	args[1] = CStringGetTextDatum(ev.type);
	ev.created = -1;
	if (created != NULL && strspn(created, "0123456789") == strlen(created) && strlen(created) < 12)
	{
		ev.created = strtod(created, NULL);
		args[2] = Float8GetDatum(ev.created);
	}
	else
		nulls[2] = 'n';
	if (api_version != NULL)
		args[3] = CStringGetTextDatum(pe_clip_chars(api_version, 64));
	else
		nulls[3] = 'n';
	if (livemode != NULL && (strcmp(livemode, "true") == 0 || strcmp(livemode, "false") == 0))
		args[4] = BoolGetDatum(strcmp(livemode, "true") == 0);
	else
		nulls[4] = 'n';
	args[5] = CStringGetTextDatum(pe_seal(text_to_cstring(payload_t),
										  psprintf("payment.webhook_events.payload:%s", ev.id)));
	args[6] = Int32GetDatum((int32) plen);
	rc = SPI_execute_plan(pe_plan(&event_insert_plan), args, nulls, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "recording a webhook event failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
	{
		/* a concurrent delivery of the same event got there first */
		SPI_finish();
		PG_RETURN_TEXT_P(cstring_to_text(ev.id));
	}

	/* 4. apply it, and record what that did */
	pe_webhook_apply(&ev);

	memset(nulls, ' ', sizeof(nulls));
	args[1] = CStringGetTextDatum(ev.outcome ? ev.outcome : "ignored");
	if (ev.has_payment)
		args[2] = UUIDPGetDatum(&ev.payment_id);
	else
		nulls[2] = 'n';
	if (ev.has_refund)
		args[3] = UUIDPGetDatum(&ev.refund_id);
	else
		nulls[3] = 'n';
	if (ev.object_status != NULL)
		args[4] = CStringGetTextDatum(pe_clip_chars(ev.object_status, 64));
	else
		nulls[4] = 'n';
	args[5] = BoolGetDatum(ev.applied);
	rc = SPI_execute_plan(pe_plan(&event_outcome_plan), args, nulls, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "recording a webhook outcome failed: %s", SPI_result_code_string(rc));
	SPI_finish();
	PG_RETURN_TEXT_P(cstring_to_text(ev.id));
}
