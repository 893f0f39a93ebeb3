/*-------------------------------------------------------------------------
 *
 * outcome.c
 *		The answers of the outbox worker's requests: their classification
 *		(Outcome), and the writes every kind of answer needs (the outbox row,
 *		a failed payment), for the recording phase (record*.c).
 *
 * Classification (README, "Outbox worker", failure mapping):
 *	- an object (2xx, valid JSON): success, mapped by the object's status;
 *	- no answer (network error, timeout, dropped connection), a 2xx with
 *	  broken JSON, 5xx, 409, 429, or Stripe-Should-Retry: true: transient,
 *	  retried with the same Idempotency-Key after an exponential backoff
 *	  with full jitter (Retry-After as a floor) until the key's
 *	  payment_ext.idempotency_window closes (the settler takes over then);
 *	  only 2xx answers that cannot be used count against
 *	  payment_ext.max_attempts (issue 20);
 *	- a transient status with Stripe-Should-Retry: false: dead (the outcome
 *	  is unknown: never a Failed payment);
 *	- 400 idempotency_error, 401, 403: dead at once, with a LOG line;
 *	- any other 4xx (402 card_error above all): final.
 *
 *
 * IDENTIFICATION
 *		src/outbox/outcome.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "base/guc.h"
#include "base/pg_compat.h"
#include "base/spi.h"
#include "base/text.h"
#include "outbox/outbox_int.h"
#include "stripe/stripe.h"
#include "vault/vault.h"

/* Longest stored message or last_error */
#define OUTCOME_MESSAGE_MAX		500

/* ---------------------------------------------------------------------------
 * SPI plans
 * ---------------------------------------------------------------------------
 */
static PePlan outbox_mark_plan = {
	"UPDATE payment.outbox SET state = $2,"
	" next_attempt_at = CASE WHEN $2 = 'pending'"
	"   THEN pg_catalog.clock_timestamp() + $3 * interval '1 millisecond' ELSE next_attempt_at END,"
	" completed_at = CASE WHEN $2 = 'pending' THEN NULL ELSE pg_catalog.now() END,"
	" last_http_status = $4, last_error = $5, updated_at = pg_catalog.now()"
	" WHERE id = $1",
	5, {INT8OID, TEXTOID, FLOAT8OID, INT4OID, TEXTOID}, NULL, 0
};
/*
 * issue 20: an attempt that provably never reached Stripe does not start the
 * idempotency key's window (payment.outbox.key_sent_at), and an answer that
 * could not be used is counted against payment_ext.max_attempts.
 */
static PePlan outbox_unsent_plan = {
	"UPDATE payment.outbox SET key_sent_at = NULL WHERE id = $1",
	1, {INT8OID}, NULL, 0
};
/* the request of an outbox row, as JSON text */
static PePlan request_text_plan = {
	"SELECT request::text FROM payment.outbox WHERE id = $1",
	1, {INT8OID}, NULL, 0
};
static PePlan outbox_unusable_plan = {
	"UPDATE payment.outbox SET unusable_answers = unusable_answers + 1 WHERE id = $1",
	1, {INT8OID}, NULL, 0
};

/* ---------------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------------
 */

/* payment.outbox.kind of kind. */
const char *
pe_outbox_kind_name(OutboxKind kind)
{
	switch (kind)
	{
		case OUTBOX_PI_CREATE:
			return "payment_intent.create";
		case OUTBOX_REFUND_CREATE:
			return "refund.create";
		case OUTBOX_PI_RETRIEVE:
			return "payment_intent.retrieve";
		case OUTBOX_PI_CANCEL:
			return "payment_intent.cancel";
		case OUTBOX_PI_SEARCH:
			return "payment_intent.search";
		case OUTBOX_REFUND_LIST:
			return "refund.list";
		case OUTBOX_REFUND_UNWANTED:
			return "refund.unwanted";
	}
	return "?";
}

/* The response as a JSON object, or NULL when it is not one. */
static Jsonb *
outcome_parse(PeHttpRequest *req)
{
	JsonLexContext *lex;
	Jsonb	   *jb;

	if (req->response == NULL || req->response_len == 0 ||
		memchr(req->response, '\0', req->response_len) != NULL ||
		!pg_verifymbstr(req->response, req->response_len, true))
		return NULL;
	lex = pe_makeJsonLexContextCstringLen(req->response, req->response_len,
									   GetDatabaseEncoding(), true);
	if (pg_parse_json(lex, &nullSemAction) != JSON_SUCCESS)
		return NULL;
	jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(req->response)));
	if (!JB_ROOT_IS_OBJECT(jb) || JB_ROOT_IS_SCALAR(jb))
		return NULL;
	return jb;
}

/*
 * pe_outbox_backoff_ms
 *		The delay before the next attempt of a request after attempt
 *		attempts, in milliseconds: full jitter, uniformly below
 *		min(retry_max_ms, retry_base_ms * 2^(attempts-1)), with Stripe's
 *		Retry-After (retry_after_s, -1 when none) as a floor.
 */
double
pe_outbox_backoff_ms(int attempts, int retry_after_s)
{
	double		cap = Min((double) pe_retry_max_ms,
						  (double) pe_retry_base_ms * pow(2.0, Min(attempts - 1, 30)));
	double		delay = pg_prng_double(&pg_global_prng_state) * cap;

	if (retry_after_s >= 0)
		delay = Max(delay, retry_after_s * 1000.0);
	return delay;
}

/* ---------------------------------------------------------------------------
 * Classification
 * ---------------------------------------------------------------------------
 */

/* Describe an HTTP error answer in o->last_error. */
static void
outcome_describe(Outcome *o, const char *prefix)
{
	StringInfoData buf;

	initStringInfo(&buf);
	if (prefix)
		appendStringInfo(&buf, "%s: ", prefix);
	appendStringInfo(&buf, "HTTP %d", o->http_status);
	if (o->err_type)
		appendStringInfo(&buf, " %s", o->err_type);
	if (o->err_code)
		appendStringInfo(&buf, "/%s", o->err_code);
	if (o->err_decline)
		appendStringInfo(&buf, "/%s", o->err_decline);
	if (o->err_message && o->err_message[0])
		appendStringInfo(&buf, ": %s", o->err_message);
	o->last_error = pe_scrub(buf.data, OUTCOME_MESSAGE_MAX);
}

/* Sort the answer to item into one of the four classes (outbox_int.h). */
void
pe_outcome_classify(OutboxItem *item, Outcome *o)
{
	PeHttpRequest *req = &item->http;
	JsonbContainer *err;
	int			st;

	memset(o, 0, sizeof(*o));
	if (req->result != CURLE_OK || req->status == 0)
	{
		o->cls = OUTCOME_RETRY;
		o->last_error = psprintf("no answer: %s", pe_http_error_text(req));
		return;
	}
	st = o->http_status = (int) req->status;
	o->object = outcome_parse(req);
	err = o->object ? pe_jb_object(&o->object->root, "error") : NULL;
	if (err)
	{
		char	   *msg = pe_jb_text(err, "message");

		o->err_type = pe_jb_text(err, "type");
		o->err_code = pe_jb_text(err, "code");
		o->err_decline = pe_jb_text(err, "decline_code");
		o->err_param = pe_jb_text(err, "param");
		o->err_message = pe_scrub(msg, OUTCOME_MESSAGE_MAX);
	}

	if (st >= 200 && st < 300)
	{
		if (o->object == NULL || err != NULL)
		{
			/* a retry replays the saved, whole answer */
			o->cls = OUTCOME_RETRY;
			o->last_error = psprintf("HTTP %d with a body that is not a JSON object", st);
		}
		else
			o->cls = OUTCOME_SUCCESS;
		return;
	}
	if (st == 409 || st == 429 || st >= 500 || st < 200 || (st >= 300 && st < 400))
	{
		if (req->should_retry == 0)
		{
			o->cls = OUTCOME_DEAD;
			outcome_describe(o, "Stripe-Should-Retry: false, outcome unknown");
		}
		else
		{
			o->cls = OUTCOME_RETRY;
			outcome_describe(o, NULL);
		}
		return;
	}
	/* 4xx but 409 and 429 */
	if (req->should_retry == 1)
	{
		o->cls = OUTCOME_RETRY;
		outcome_describe(o, "Stripe-Should-Retry: true");
		return;
	}
	if (item->withdrawn && st == 400 && o->err_type &&
		strcmp(o->err_type, "idempotency_error") == 0)
	{
		/* the probe differs from the request Stripe executed under the key */
		o->cls = OUTCOME_FINAL;
		outcome_describe(o, "withdrawn create, executed at Stripe before");
		return;
	}
	if (st == 401 || st == 403 ||
		(o->err_type && strcmp(o->err_type, "idempotency_error") == 0))
	{
		o->cls = OUTCOME_DEAD;
		outcome_describe(o, NULL);
		ereport(LOG,
				(errcode(st == 400 ? ERRCODE_UNIQUE_VIOLATION : ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("payment_ext outbox worker: outbox row " INT64_FORMAT " (%s) is dead: %s",
						item->id, pe_outbox_kind_name(item->kind), o->last_error),
				 errhint(st == 400 ? "The same idempotency key was used with other parameters: compare the request with the first one in Stripe's request log." :
						 "Check the Stripe API key in payment_ext.stripe_api_key_file.")));
		return;
	}
	o->cls = OUTCOME_FINAL;
	outcome_describe(o, NULL);
}

/* ---------------------------------------------------------------------------
 * Writes of every kind of answer
 * ---------------------------------------------------------------------------
 */

/*
 * pe_outbox_mark
 *		Set outbox row id's state ('done', 'pending' due in delay_ms, or
 *		'dead') with its last HTTP status (0: none) and error.
 */
void
pe_outbox_mark(int64 id, const char *state, double delay_ms, int http_status,
			   const char *last_error)
{
	Datum		args[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	int			rc;

	args[0] = Int64GetDatum(id);
	args[1] = CStringGetTextDatum(state);
	args[2] = Float8GetDatum(delay_ms);
	args[3] = Int32GetDatum(http_status);
	if (http_status == 0)
		nulls[3] = 'n';
	if (last_error != NULL)
		args[4] = CStringGetTextDatum(last_error);
	else
		nulls[4] = 'n';
	rc = SPI_execute_plan(pe_plan(&outbox_mark_plan), args, nulls, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "updating outbox row " INT64_FORMAT " failed: %s", id,
			 SPI_result_code_string(rc));
}

/* Run plan p with args; the number of rows it changed. */
uint64
pe_outcome_exec(PePlan *p, Datum *args, const char *nulls)
{
	int			rc = SPI_execute_plan(pe_plan(p), args, nulls, false, 0);

	if (rc != SPI_OK_UPDATE && rc != SPI_OK_INSERT)
		elog(ERROR, "recording an outbox outcome failed: %s", SPI_result_code_string(rc));
	return SPI_processed;
}

/*
 * pe_outbox_unsent
 *		Outbox row id's last attempt provably never reached Stripe, and it was
 *		the first that might have: the key's window has not started.
 */
void
pe_outbox_unsent(int64 id)
{
	Datum		arg = Int64GetDatum(id);

	pe_outcome_exec(&outbox_unsent_plan, &arg, NULL);
}

/* Count an answer to outbox row id that could not be used (max_attempts). */
void
pe_outbox_unusable(int64 id)
{
	Datum		arg = Int64GetDatum(id);

	pe_outcome_exec(&outbox_unusable_plan, &arg, NULL);
}

/* The sealed form of a Stripe id for column table.column of row id. */
char *
pe_outcome_seal(const char *value, const char *table, const char *column, pg_uuid_t *id)
{
	return pe_seal(value, pe_vault_context(table, column, pe_uuid_text(id)));
}

/* A payment that Stripe refused for good: Failed, with a "PaymentFailures" row. */
void
pe_outcome_payment_failed(OutboxItem *item, Outcome *o, const char *code, const char *message)
{
	StringInfoData details;

	initStringInfo(&details);
	appendStringInfoChar(&details, '{');
	pe_json_field(&details, "type", o->err_type);
	pe_json_field(&details, "code", o->err_code);
	pe_json_field(&details, "decline_code", o->err_decline);
	pe_json_field(&details, "param", o->err_param);
	pe_json_field(&details, "request_id", item->http.request_id[0] ? item->http.request_id : NULL);
	appendStringInfo(&details, ", \"http_status\": %d}", o->http_status);

	/* the failure is recorded only for a payment that it fails */
	if (!pe_payment_fail(&item->payment_id, code, message, details.data,
						 Max(item->attempts - 1, 0)))
		o->last_error = psprintf("%s (payment was no longer Pending)",
								 o->last_error ? o->last_error : "failed");
}

/* The request (JSON text) of outbox row id, which exists. */
char *
pe_outcome_request_text(int64 id)
{
	Datum		arg = Int64GetDatum(id);
	bool		isnull;
	int			rc;

	rc = SPI_execute_plan(pe_plan(&request_text_plan), &arg, NULL, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "looking up an outbox request failed: %s", SPI_result_code_string(rc));
	return TextDatumGetCString(pe_spi_getdatum(0, 1, &isnull));
}
