/*-------------------------------------------------------------------------
 *
 * request.c
 *		The HTTP request of a claimed payment.outbox row: Stripe's form
 *		encoding, the URL, the sealed Stripe ids opened at the last moment
 *		(in the item's own memory context, wiped with it), and the headers
 *		(Authorization, Stripe-Version, Idempotency-Key on POSTs).  Called by
 *		the outbox worker (claim.c) in its claim transaction.
 *
 * IDENTIFICATION
 *		src/outbox/request.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/uuid.h"

#include "base/guc.h"
#include "base/spi.h"
#include "base/text.h"
#include "outbox/outbox_int.h"
#include "stripe/stripe.h"
#include "vault/vault.h"

/* The PaymentIntent the newest refund.create of a refund asked to refund */
static PePlan refund_create_intent_plan = {
	"SELECT request->>'payment_intent', idempotency_key FROM payment.outbox"
	" WHERE payment_id = $1 AND refund_id = $2 AND kind = 'refund.create'"
	"  AND request ? 'payment_intent'"
	" ORDER BY id DESC LIMIT 1",
	2, {UUIDOID, UUIDOID}, NULL, 0
};
static PePlan saved_method_plan = {
	"SELECT \"EncryptedStripePaymentMethodId\" FROM @S@.\"PaymentMethods\" WHERE \"Id\" = $1",
	1, {UUIDOID}, NULL, 0
};
static PePlan payment_intent_id_plan = {
	"SELECT \"EncryptedStripePaymentIntentId\" FROM @S@.\"Payments\" WHERE \"Id\" = $1",
	1, {UUIDOID}, NULL, 0
};

/* Append s to buf percent-encoded (encodeURIComponent plus !*()'); keys keep [ ]. */
static void
form_append(StringInfo buf, const char *s, bool key)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *p;

	for (p = (const unsigned char *) s; *p; p++)
	{
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
			(*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.' ||
			*p == '~' || (key && (*p == '[' || *p == ']')))
			appendStringInfoChar(buf, (char) *p);
		else
		{
			appendStringInfoChar(buf, '%');
			appendStringInfoChar(buf, hex[*p >> 4]);
			appendStringInfoChar(buf, hex[*p & 15]);
		}
	}
}

/* The text of a scalar request value; a nested one is an error. */
static char *
request_value_text(JsonbValue *v, const char *key)
{
	char	   *text = pe_jbv_text(v);

	if (text != NULL)
		return text;
	if (v->type == jbvNull)
		return pstrdup("");
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("request parameter \"%s\" is not a scalar", key)));
	return NULL;				/* keep the compiler quiet */
}

/* The opened PaymentMethod id of saved method id (a "PaymentMethods" row). */
static char *
saved_method_open(const char *id)
{
	Datum		arg = DirectFunctionCall1(uuid_in, CStringGetDatum(id));
	bool		isnull;
	int			rc;

	rc = SPI_execute_plan(pe_plan(&saved_method_plan), &arg, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "looking up the saved payment method failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("saved payment method %s does not exist", id)));
	return pe_open(TextDatumGetCString(pe_spi_getdatum(0, 1, &isnull)),
					   pe_vault_context("PaymentMethods", "EncryptedStripePaymentMethodId", id));
}

/* The opened PaymentIntent id stored with payment pid, or an error. */
static char *
payment_intent_open(pg_uuid_t *payment_id, const char *pid)
{
	Datum		arg = UUIDPGetDatum(payment_id);
	bool		isnull;
	Datum		d;
	int			rc;

	rc = SPI_execute_plan(pe_plan(&payment_intent_id_plan), &arg, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "looking up the payment failed: %s", SPI_result_code_string(rc));
	d = SPI_processed > 0 ? pe_spi_getdatum(0, 1, &isnull) : (Datum) 0;
	if (SPI_processed == 0 || isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("payment %s has no PaymentIntent yet", pid)));
	return pe_open(TextDatumGetCString(d),
					   pe_vault_context("Payments", "EncryptedStripePaymentIntentId", pid));
}

/*
 * The opened PaymentIntent id a refund lookup lists the refunds of: the one
 * the refund's newest refund.create named (what Stripe was asked to
 * refund), else the payment's own; an error when there is neither.
 */
static char *
refund_intent_open(ClaimedRow *r, const char *pid)
{
	Datum		args[2];
	bool		isnull;
	int			rc;

	if (!r->has_refund)
		elog(ERROR, "a refund lookup without a refund");
	args[0] = UUIDPGetDatum(&r->payment_id);
	args[1] = UUIDPGetDatum(&r->refund_id);
	rc = SPI_execute_plan(pe_plan(&refund_create_intent_plan), args, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "looking up the refund's request failed: %s", SPI_result_code_string(rc));
	if (SPI_processed > 0)
	{
		char	   *value = TextDatumGetCString(pe_spi_getdatum(0, 1, &isnull));
		char	   *key = TextDatumGetCString(pe_spi_getdatum(0, 2, &isnull));

		if (strncmp(value, PE_SEALED_PREFIX, strlen(PE_SEALED_PREFIX)) == 0)
			return pe_open(value, pe_outbox_context("payment_intent", key));
		return value;
	}
	return payment_intent_open(&r->payment_id, pid);
}

/* Add one header to list, or raise (after wiping what was built). */
static struct curl_slist *
header_add(struct curl_slist *list, char *line)
{
	struct curl_slist *l = curl_slist_append(list, line);

	explicit_bzero(line, strlen(line));
	if (l == NULL)
	{
		struct curl_slist *h;

		for (h = list; h != NULL; h = h->next)
			explicit_bzero(h->data, strlen(h->data));
		curl_slist_free_all(list);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory building an HTTP request")));
	}
	return l;
}

/*
 * Build the HTTP request of claimed row r into item: URL, body and headers
 * in item->cxt, temporaries in the current context.  Opens sealed values;
 * raises on a value that does not open or a bad request (caller: in an
 * internal subtransaction, connected to SPI, as the worker role).
 */
void
pe_outbox_build(ClaimedRow *r, OutboxItem *item, const char *api_key)
{
	MemoryContext oldcxt;
	StringInfoData body;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *pi_id = NULL;
	char	   *pid = pe_uuid_text(&r->payment_id);
	const char *base = pe_stripe_api_base;
	int			baselen = strlen(base);
	char	   *path;
	bool		first = true;
	bool		has_target = false;

	while (baselen > 0 && base[baselen - 1] == '/')
		baselen--;

	if (strcmp(r->kind, "payment_intent.create") == 0)
		item->kind = OUTBOX_PI_CREATE;
	else if (strcmp(r->kind, "refund.create") == 0)
		item->kind = OUTBOX_REFUND_CREATE;
	else if (strcmp(r->kind, "payment_intent.retrieve") == 0)
		item->kind = OUTBOX_PI_RETRIEVE;
	else if (strcmp(r->kind, "payment_intent.cancel") == 0)
		item->kind = OUTBOX_PI_CANCEL;
	else if (strcmp(r->kind, "payment_intent.search") == 0)
		item->kind = OUTBOX_PI_SEARCH;
	else if (strcmp(r->kind, "refund.list") == 0)
		item->kind = OUTBOX_REFUND_LIST;
	else if (strcmp(r->kind, "refund.unwanted") == 0)
		item->kind = OUTBOX_REFUND_UNWANTED;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown outbox kind \"%s\"", r->kind)));

	oldcxt = MemoryContextSwitchTo(item->cxt);
	initStringInfo(&body);
	enlargeStringInfo(&body, OUTBOX_BODY_CAPACITY);
	item->http.body = body.data;
	item->body_cap = body.maxlen;
	item->idempotency_key = pstrdup(r->idempotency_key);
	MemoryContextSwitchTo(oldcxt);

	if (!JB_ROOT_IS_OBJECT(r->request))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the request is not a JSON object")));

	it = JsonbIteratorInit(&r->request->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *key;
		char	   *value;
		char	   *opened = NULL;

		if (tok != WJB_KEY)
			continue;
		key = pnstrdup(v.val.string.val, v.val.string.len);
		tok = JsonbIteratorNext(&it, &v, true);
		value = request_value_text(&v, key);

		if (strcmp(key, "metadata[withdrawn]") == 0)
			item->withdrawn = true;
		if (strcmp(key, "saved_method_id") == 0)
		{
			opened = saved_method_open(value);
			key = "payment_method";
		}
		else if (strncmp(value, PE_SEALED_PREFIX, strlen(PE_SEALED_PREFIX)) == 0)
			opened = pe_open(value, pe_outbox_context(key, r->idempotency_key));

		if ((item->kind == OUTBOX_PI_RETRIEVE || item->kind == OUTBOX_PI_CANCEL) &&
			strcmp(key, "payment_intent") == 0)
		{
			pi_id = opened ? opened : value;
			continue;
		}
		if (strcmp(key, "payment_intent") == 0 || strcmp(key, "charge") == 0)
			has_target = true;
		if (!first)
			appendStringInfoChar(&body, '&');
		first = false;
		form_append(&body, key, true);
		appendStringInfoChar(&body, '=');
		form_append(&body, opened ? opened : value, false);
		if (opened != NULL)
		{
			explicit_bzero(opened, strlen(opened));
			pfree(opened);
		}
	}
	/*
	 * A refund whose request names no PaymentIntent (rows queued before
	 * payment.refund added a sealed one) refunds the payment's own; a
	 * refund lookup lists the refunds of the PaymentIntent its refund.create
	 * asked to refund.
	 */
	if ((item->kind == OUTBOX_REFUND_CREATE || item->kind == OUTBOX_REFUND_LIST) &&
		!has_target)
	{
		char	   *opened = item->kind == OUTBOX_REFUND_LIST ?
			refund_intent_open(r, pid) :
			payment_intent_open(&r->payment_id, pid);

		if (!first)
			appendStringInfoChar(&body, '&');
		form_append(&body, "payment_intent", true);
		appendStringInfoChar(&body, '=');
		form_append(&body, opened, false);
		explicit_bzero(opened, strlen(opened));
		pfree(opened);
	}
	item->http.body = body.data;
	item->http.body_len = body.len;
	item->body_cap = body.maxlen;

	/* method and URL */
	if (item->kind == OUTBOX_PI_CREATE)
		path = "/v1/payment_intents";
	else if (item->kind == OUTBOX_REFUND_CREATE || item->kind == OUTBOX_REFUND_UNWANTED)
		path = "/v1/refunds";
	else if (item->kind == OUTBOX_PI_SEARCH)
	{
		/* the query (metadata['payment_id']:'...') holds no Stripe id */
		path = psprintf("/v1/payment_intents/search?%s", body.data);
		item->http.body_len = 0;
	}
	else if (item->kind == OUTBOX_REFUND_LIST)
	{
		/* the query holds the PaymentIntent id: wiped below */
		path = psprintf("/v1/refunds?%s", body.data);
		explicit_bzero(body.data, body.len);
		item->http.body_len = 0;
	}
	else
	{
		StringInfoData p;

		if (pi_id == NULL)
			pi_id = payment_intent_open(&r->payment_id, pid);
		initStringInfo(&p);
		appendStringInfoString(&p, "/v1/payment_intents/");
		form_append(&p, pi_id, false);
		if (item->kind == OUTBOX_PI_CANCEL)
			appendStringInfoString(&p, "/cancel");
		else if (body.len > 0)
		{
			appendStringInfoChar(&p, '?');
			appendBinaryStringInfo(&p, body.data, body.len);
			explicit_bzero(body.data, body.len);
			item->http.body_len = 0;
		}
		explicit_bzero(pi_id, strlen(pi_id));
		path = p.data;
	}
	item->http.post = (item->kind != OUTBOX_PI_RETRIEVE && item->kind != OUTBOX_PI_SEARCH &&
					   item->kind != OUTBOX_REFUND_LIST);
	item->http.url = MemoryContextAlloc(item->cxt, baselen + strlen(path) + 1);
	memcpy(item->http.url, base, baselen);
	strcpy(item->http.url + baselen, path);
	if (item->kind == OUTBOX_PI_RETRIEVE || item->kind == OUTBOX_PI_CANCEL ||
		item->kind == OUTBOX_REFUND_LIST)
		explicit_bzero(path, strlen(path));	/* holds the PaymentIntent id */

	/* headers: the key goes into curl's copy only, and is wiped with it */
	{
		struct curl_slist *h = NULL;

		h = header_add(h, psprintf("Authorization: Bearer %s", api_key));
		h = header_add(h, psprintf("Stripe-Version: %s", PE_STRIPE_VERSION));
		if (item->http.post)
		{
			h = header_add(h, psprintf("Idempotency-Key: %s", r->idempotency_key));
			h = header_add(h, pstrdup("Content-Type: application/x-www-form-urlencoded"));
			h = header_add(h, pstrdup("Expect:"));
		}
		item->http.headers = h;
	}
}

