/*-------------------------------------------------------------------------
 *
 * record.c
 *		The outbox worker's third phase: classify the answer to one outbox
 *		request and record it in the payment tables and the outbox row.
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
 * Invariants:
 *	- pe_outbox_record_one runs inside a transaction and an SPI connection
 *	  of the caller, as the worker role, in an internal subtransaction of
 *	  its own: everything it writes for one outcome (payment, refund,
 *	  failure, intent, outbox row) commits or rolls back together.
 *	- Stripe ids and client secrets are stored only sealed, under the
 *	  context the sealed-column trigger checks; nothing here logs or stores
 *	  an opened id, and Stripe's messages are scrubbed of ids.
 *	- Lock order (README, "Lock order"): the first thing recorded for an
 *	  outcome is the lock of its payment's row (outcome_lock_payment, FOR
 *	  NO KEY UPDATE), before any row of that payment: its refunds,
 *	  payment.intents, payment.refund_states, payment.stripe_refs,
 *	  "PaymentFailures", its payment.outbox rows (the item's own included),
 *	  then the audit chain and the user, as every other writer of a
 *	  payment does; the worker records a batch in ascending payment id
 *	  (outbox/worker.c).  Taking payment.intents or stripe_refs first, as
 *	  1.1 did, deadlocked (40P01) with a webhook holding the payment.
 *
 * IDENTIFICATION
 *		src/outbox/record.c
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
#include "base/status.h"
#include "base/text.h"
#include "outbox/outbox_int.h"
#include "rules/rules.h"
#include "stripe/stripe.h"
#include "vault/vault.h"
/* Longest stored message or last_error */
#define OUTCOME_MESSAGE_MAX		500

typedef enum OutcomeClass
{
	OUTCOME_SUCCESS,			/* an object came back */
	OUTCOME_FINAL,				/* Stripe refused for good */
	OUTCOME_RETRY,				/* transient: try again with the same key */
	OUTCOME_DEAD				/* give up; a human (or the settler) looks */
} OutcomeClass;

typedef struct Outcome
{
	OutcomeClass cls;
	int			http_status;	/* 0 without an answer */
	Jsonb	   *object;			/* the answer's JSON object, or NULL */
	char	   *err_type;		/* Stripe's error object, when there is one */
	char	   *err_code;
	char	   *err_decline;
	char	   *err_param;
	char	   *err_message;	/* scrubbed */
	char	   *last_error;		/* for the outbox row and the status; no secrets */
	/* the payment, read under its row lock (outcome_lock_payment) */
	bool		has_payment;
	PePaymentRow payment;
} Outcome;

/* ---------------------------------------------------------------------------
 * SPI plans (@S@: the schema of the spec's tables)
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
static PePlan outbox_unusable_plan = {
	"UPDATE payment.outbox SET unusable_answers = unusable_answers + 1 WHERE id = $1",
	1, {INT8OID}, NULL, 0
};
/*
 * issue 17 item 3: an empty search says "nothing was charged" only when no
 * create request of the payment is on its way, and each one that may have
 * reached Stripe was given up (or answered) more than payment_ext.search_lag
 * ago: Stripe's search index lags, most of all during its incidents.
 */
static PePlan search_too_early_plan = {
	"SELECT EXISTS (SELECT 1 FROM payment.outbox c WHERE c.payment_id = $1"
	" AND c.kind = 'payment_intent.create'"
	" AND (c.state IN ('pending', 'sending')"
	"      OR (c.key_sent_at IS NOT NULL AND (c.completed_at IS NULL"
	"          OR c.completed_at > pg_catalog.now() - $2 * interval '1 second'))))",
	2, {UUIDOID, INT4OID}, NULL, 0
};
static PePlan expired_plan = {
	"SELECT \"CreatedAt\" < pg_catalog.now() - $2 * interval '1 second'"
	" FROM @S@.\"Payments\" WHERE \"Id\" = $1 AND \"Status\" = 0",
	2, {UUIDOID, INT4OID}, NULL, 0
};
static PePlan cancel_enqueue_plan = {
	"INSERT INTO payment.outbox (kind, payment_id, request, idempotency_key)"
	" VALUES ('payment_intent.cancel', $1,"
	" '{\"cancellation_reason\": \"abandoned\"}', 'pe-' || $1 || '-cancel-' || $2)"
	" ON CONFLICT (idempotency_key) DO NOTHING",
	2, {UUIDOID, INT8OID}, NULL, 0
};
/*
 * A refund lookup (refund.list) that did not find the refund at Stripe:
 * the newest refund.create row of the refund, its request and how many
 * there are, so that the same request goes out again under a new key.
 */
static PePlan refund_create_row_plan = {
	"SELECT request::text, idempotency_key,"
	" (SELECT pg_catalog.count(*) FROM payment.outbox c WHERE c.payment_id = $1"
	"   AND c.refund_id = $2 AND c.kind = 'refund.create')"
	" FROM payment.outbox WHERE payment_id = $1 AND refund_id = $2 AND kind = 'refund.create'"
	" ORDER BY id DESC LIMIT 1",
	2, {UUIDOID, UUIDOID}, NULL, 0
};
/*
 * ... queued only while the refund is still Processing and every earlier
 * refund.create of it is dead (never resent again), so that Stripe is asked
 * for the money once.
 */
static PePlan refund_recreate_plan = {
	"INSERT INTO payment.outbox (kind, payment_id, refund_id, request, idempotency_key)"
	" SELECT 'refund.create', $1, $2, $3::jsonb, $4"
	"  WHERE EXISTS (SELECT 1 FROM @S@.\"PaymentRefunds\" r WHERE r.\"Id\" = $2"
	"                 AND r.\"RefundStatus\" = 0)"
	"    AND NOT EXISTS (SELECT 1 FROM payment.outbox c WHERE c.payment_id = $1"
	"                     AND c.refund_id = $2 AND c.kind = 'refund.create' AND c.state <> 'dead')"
	" ON CONFLICT (idempotency_key) DO NOTHING",
	4, {UUIDOID, UUIDOID, TEXTOID, TEXTOID}, NULL, 0
};
/* The next page of a refund lookup: starting after the last refund seen */
static PePlan refund_list_next_plan = {
	"INSERT INTO payment.outbox (kind, payment_id, refund_id, request, idempotency_key)"
	" VALUES ('refund.list', $1, $2, pg_catalog.jsonb_build_object('limit', '100',"
	"  'starting_after', $3::text), $4)",
	4, {UUIDOID, UUIDOID, TEXTOID, TEXTOID}, NULL, 0
};

/* A withdrawn create that Stripe had executed: search for its PaymentIntent */
static PePlan withdrawn_search_plan = {
	"INSERT INTO payment.outbox (kind, payment_id, request, idempotency_key)"
	" VALUES ('payment_intent.search', $1, pg_catalog.jsonb_build_object('query',"
	"  pg_catalog.format('metadata[''payment_id'']:''%s''', $1)),"
	"  'pe-' || $1 || '-withdrawn-lookup-' || $2)"
	" ON CONFLICT (idempotency_key) DO NOTHING",
	2, {UUIDOID, INT8OID}, NULL, 0
};
/* A cancel refused because the PaymentIntent finished: look it up instead */
static PePlan cancel_request_plan = {
	"SELECT request::text FROM payment.outbox WHERE id = $1",
	1, {INT8OID}, NULL, 0
};
static PePlan cancel_retrieve_plan = {
	"INSERT INTO payment.outbox (kind, payment_id, request, idempotency_key)"
	" VALUES ('payment_intent.retrieve', $1, $2::jsonb - 'cancellation_reason', $3)"
	" ON CONFLICT (idempotency_key) DO NOTHING",
	3, {UUIDOID, TEXTOID, TEXTOID}, NULL, 0
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

/* Sort the answer to item into one of the four classes. */
static void
outcome_classify(OutboxItem *item, Outcome *o)
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
 * Recording
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
static uint64
outcome_exec(PePlan *p, Datum *args, const char *nulls)
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

	outcome_exec(&outbox_unsent_plan, &arg, NULL);
}

/* Count an answer to outbox row id that could not be used (max_attempts). */
void
pe_outbox_unusable(int64 id)
{
	Datum		arg = Int64GetDatum(id);

	outcome_exec(&outbox_unusable_plan, &arg, NULL);
}

/* The sealed form of a Stripe id for column table.column of row id. */
static char *
outcome_seal(const char *value, const char *table, const char *column, pg_uuid_t *id)
{
	return pe_seal(value, pe_vault_context(table, column, pe_uuid_text(id)));
}

/* A payment that Stripe refused for good: Failed, with a "PaymentFailures" row. */
static void
record_payment_failed(OutboxItem *item, Outcome *o, const char *code, const char *message)
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

/* Is item the search that looks for a withdrawn create's PaymentIntent? */
static bool
withdrawn_lookup(OutboxItem *item)
{
	return item->kind == OUTBOX_PI_SEARCH && item->idempotency_key != NULL &&
		strstr(item->idempotency_key, "-withdrawn-lookup-") != NULL;
}

/*
 * A current PaymentIntent succeeded, but its payment was no longer Pending:
 * a paid payment keeps it (it is its charge); a Failed one whose
 * registration has no other live payment takes it (Failed -> Pending ->
 * Completed, as the webhook does); any other is refunded.
 */
static void
charged_not_pending(OutboxItem *item, Outcome *o, const char *id, const char *sealed_id)
{
	int			pstatus;
	pg_uuid_t	reg;

	pe_intent_current(&item->payment_id, id, 0, &pstatus, &reg);
	if (pstatus == PE_PAYMENT_COMPLETED || pstatus == PE_PAYMENT_PARTIALLY_REFUNDED ||
		pstatus == PE_PAYMENT_REFUNDED)
	{
		o->last_error = psprintf("succeeded; the payment is already %s",
								 pe_payment_status_name(pstatus));
		return;
	}
	if (pstatus == PE_PAYMENT_FAILED &&
		!pe_registration_other_live(&reg, &item->payment_id) &&
		pe_payment_reopen(&item->payment_id) &&
		pe_payment_complete(&item->payment_id, sealed_id))
	{
		o->last_error = pstrdup("succeeded after the payment was Failed: Failed -> Pending -> Completed (its registration had no other live payment)");
		return;
	}
	o->last_error = psprintf("succeeded, but the payment is %s: %s",
							 pstatus >= 0 ? pe_payment_status_name(pstatus) : "gone",
							 pe_outbox_undo_intent(&item->payment_id, id, "succeeded",
												   "the payment was no longer Pending"));
}

/*
 * A lookup (retrieve, search) found the PaymentIntent of a payment that is
 * still Pending, not finished at Stripe either: when the payment is older
 * than payment_ext.pending_ttl, queue the cancellation that expires it.
 */
static void
settle_expire_if_old(OutboxItem *item, Outcome *o, const char *status)
{
	Datum		args[2];
	bool		isnull;
	int			rc;

	if (strcmp(status, "processing") == 0)
		return;					/* Stripe is still at it: look again later */
	args[0] = UUIDPGetDatum(&item->payment_id);
	args[1] = Int32GetDatum(pe_pending_ttl);
	rc = SPI_execute_plan(pe_plan(&expired_plan), args, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "checking a payment's age failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0 || !DatumGetBool(pe_spi_getdatum(0, 1, &isnull)))
		return;
	args[1] = Int64GetDatum(item->id);
	outcome_exec(&cancel_enqueue_plan, args, NULL);
	o->last_error = psprintf("PaymentIntent %s past payment_ext.pending_ttl: canceling it", status);
}

/* A PaymentIntent came back: record it by its status. */
static void
record_payment_intent(OutboxItem *item, Outcome *o, JsonbContainer *pi)
{
	char	   *id = pe_jb_text(pi, "id");
	char	   *status = pe_jb_text(pi, "status");
	char	   *secret = pe_jb_text(pi, "client_secret");
	char	   *sealed_id;
	int			pstatus = -1;
	pg_uuid_t	reg;

	if (id == NULL || status == NULL)
	{
		o->cls = OUTCOME_RETRY;
		o->last_error = pstrdup("answer without a PaymentIntent id and status");
		return;
	}

	/*
	 * The same check as the webhook's (pe_pi_mismatch): a PaymentIntent for
	 * another payment, amount or currency is never stored for this payment
	 * (its client secret would let the customer pay it) nor completes it;
	 * the difference is recorded and shown by payment.reconcile.
	 */
	if (o->has_payment)
	{
		char	   *why;
		const char *mismatch = pe_pi_mismatch(pi, &item->payment_id, o->payment.amount_minor,
											  o->payment.currency, &why);

		if (mismatch != NULL)
		{
			pe_pi_mismatch_record(&item->payment_id, mismatch, why,
								  item->kind == OUTBOX_PI_RETRIEVE ||
								  item->kind == OUTBOX_PI_SEARCH ? "lookup" : "response");
			o->last_error = psprintf("PaymentIntent %s does not match the payment: %s; not recorded for it (see payment.reconcile)",
									 pe_scrub(status, 40), why);
			if (secret != NULL)
				explicit_bzero(secret, strlen(secret));
			explicit_bzero(id, strlen(id));
			return;
		}
	}

	/*
	 * A PaymentIntent of an earlier attempt (payment.retry made a newer one),
	 * or other than the one the payment keeps: it changes nothing of the
	 * payment; it is canceled, or refunded when it was charged.
	 */
	{
		int			attempt = pe_intent_attempt(pi);

		if (attempt == 0 && item->kind == OUTBOX_PI_CREATE)
			attempt = pe_intent_key_attempt(item->idempotency_key);
		if (!pe_intent_current(&item->payment_id, id, attempt, &pstatus, &reg))
		{
			pe_stripe_ref_add(id, "payment_intent", &item->payment_id, NULL);
			o->last_error = psprintf("PaymentIntent %s is not the payment's current one: %s",
									 pe_scrub(status, 40),
									 pe_outbox_undo_intent(&item->payment_id, id, status,
														   "a PaymentIntent of an earlier attempt"));
			explicit_bzero(id, strlen(id));
			return;
		}
	}
	sealed_id = outcome_seal(id, "Payments", "EncryptedStripePaymentIntentId", &item->payment_id);

	/*
	 * What the application and the settler need: status, next action,
	 * client secret.  A charge of a Failed payment whose registration has
	 * another live payment is refunded (charged_not_pending): the payment
	 * does not keep it, so it is not the payment's state at Stripe either
	 * (else payment.reconcile would list a payment that agrees with Stripe).
	 */
	if (!(strcmp(status, "succeeded") == 0 && pstatus == PE_PAYMENT_FAILED &&
		  pe_registration_other_live(&reg, &item->payment_id)))
		pe_intent_report(&item->payment_id, pi, status,
						 secret != NULL ?
						 outcome_seal(secret, "payment.intents", "client_secret", &item->payment_id) :
						 NULL,
						 item->kind == OUTBOX_PI_RETRIEVE ||
						 item->kind == OUTBOX_PI_SEARCH ? "lookup" : "response");
	if (secret != NULL)
		explicit_bzero(secret, strlen(secret));
	pe_stripe_ref_add(id, "payment_intent", &item->payment_id, NULL);
	pe_stripe_ref_add(pe_jb_text(pi, "latest_charge"), "charge", &item->payment_id, NULL);

	if (strcmp(status, "succeeded") == 0)
	{
		if (!pe_payment_complete(&item->payment_id, sealed_id))
			charged_not_pending(item, o, id, sealed_id);
	}
	else if (strcmp(status, "canceled") == 0)
	{
		char	   *reason = pe_jb_text(pi, "cancellation_reason");

		pe_payment_store_intent(&item->payment_id, sealed_id, true);
		o->last_error = pe_cancel_message(reason);
		/* the settler's own cancellation expires the payment */
		record_payment_failed(item, o,
							  item->kind == OUTBOX_PI_CANCEL ? "expired" :
							  pe_cancel_failure_code(reason),
							  o->last_error);
	}
	else
	{
		/* requires_action, requires_payment_method, processing, ...: Pending */
		if (!pe_payment_store_intent(&item->payment_id, sealed_id, true) &&
			(item->kind == OUTBOX_PI_CREATE || withdrawn_lookup(item)))
		{
			/* made for a payment that is no longer Pending: never charged */
			o->last_error = psprintf("PaymentIntent %s, but the payment is no longer Pending: %s",
									 pe_scrub(status, 40),
									 pe_outbox_undo_intent(&item->payment_id, id, status,
														   "the payment was no longer Pending"));
			explicit_bzero(id, strlen(id));
			return;
		}
		o->last_error = psprintf("PaymentIntent %s", status);
		if (item->kind == OUTBOX_PI_RETRIEVE || item->kind == OUTBOX_PI_SEARCH)
			settle_expire_if_old(item, o, status);
	}
	explicit_bzero(id, strlen(id));
}

/*
 * A search by metadata[payment_id] came back: record the PaymentIntent it
 * found (a succeeded one first, else the newest), or, when Stripe has none,
 * expire the payment: nothing was ever charged for it.
 */
static void
record_search(OutboxItem *item, Outcome *o)
{
	JsonbValue *v = getKeyJsonValueFromContainer(&o->object->root, "data", 4, NULL);
	JsonbContainer *best = NULL;
	long		best_created = -1;
	bool		best_succeeded = false;
	int			undone = 0;

	if (v == NULL || v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data))
	{
		o->cls = OUTCOME_RETRY;
		o->last_error = pstrdup("search answer without a data list");
		return;
	}
	{
		JsonbIterator *it = JsonbIteratorInit(v->val.binary.data);
		JsonbValue	e;
		JsonbIteratorToken tok;

		while ((tok = JsonbIteratorNext(&it, &e, true)) != WJB_DONE)
		{
			JsonbContainer *pi;
			char	   *st;
			char	   *cr;
			char	   *md_pid;
			long		created;
			bool		succeeded;

			if (tok != WJB_ELEM || e.type != jbvBinary || !JsonContainerIsObject(e.val.binary.data))
				continue;
			pi = e.val.binary.data;
			md_pid = pe_jb_text(pe_jb_object(pi, "metadata"), "payment_id");
			if (md_pid == NULL ||
				pg_strcasecmp(md_pid, pe_uuid_text(&item->payment_id)) != 0)
				continue;		/* not ours after all */
			st = pe_jb_text(pi, "status");
			{
				char	   *pi_id = pe_jb_text(pi, "id");
				int			pstatus;

				if (pi_id != NULL && st != NULL &&
					!pe_intent_current(&item->payment_id, pi_id, pe_intent_attempt(pi), &pstatus, NULL))
				{
					/* an earlier attempt's: undone, never recorded as the payment's */
					pe_stripe_ref_add(pi_id, "payment_intent", &item->payment_id, NULL);
					pe_outbox_undo_intent(&item->payment_id, pi_id, st,
										  "a PaymentIntent of an earlier attempt");
					explicit_bzero(pi_id, strlen(pi_id));
					undone++;
					continue;
				}
			}
			cr = pe_jb_text(pi, "created");
			created = cr ? strtol(cr, NULL, 10) : 0;
			succeeded = st != NULL && strcmp(st, "succeeded") == 0;
			if (best == NULL || (succeeded && !best_succeeded) ||
				(succeeded == best_succeeded && created > best_created))
			{
				best = pi;
				best_created = created;
				best_succeeded = succeeded;
			}
		}
	}
	if (best != NULL)
	{
		record_payment_intent(item, o, best);
		return;
	}
	if (withdrawn_lookup(item))
	{
		/* Stripe executed the withdrawn create: its PaymentIntent exists */
		if (undone == 0)
		{
			o->cls = OUTCOME_RETRY;
			o->last_error = pstrdup("the withdrawn create's PaymentIntent is not in Stripe's search yet (its index lags): searching again");
		}
		else
			o->last_error = psprintf("%d PaymentIntent(s) of earlier attempts found and undone", undone);
		return;
	}
	{
		Datum		args[2];
		bool		isnull;
		int			rc;

		args[0] = UUIDPGetDatum(&item->payment_id);
		args[1] = Int32GetDatum(pe_search_lag);
		rc = SPI_execute_plan(pe_plan(&search_too_early_plan), args, NULL, true, 1);
		if (rc != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "checking the payment's create requests failed: %s",
				 SPI_result_code_string(rc));
		if (DatumGetBool(pe_spi_getdatum(0, 1, &isnull)))
		{
			o->last_error = pstrdup("no PaymentIntent found yet, but a create request may have reached Stripe within payment_ext.search_lag (or is on its way): the payment stays Pending and is looked up again later");
			return;
		}
	}
	o->last_error = pstrdup("no PaymentIntent at Stripe: the payment expires");
	record_payment_failed(item, o, "expired",
						  "No PaymentIntent was found at Stripe for this payment; nothing was charged.");
}

/*
 * A Refund came back, re, as the answer to its refund.create (source
 * "response") or found by a refund lookup (source "lookup"): record it by
 * its status.  The one mapping of a Refund's status to "RefundStatus" for
 * the worker: succeeded is Completed, failed and canceled are Failed,
 * anything else (pending, requires_action) stays Processing; the Refund id
 * is stored sealed either way.
 */
static void
record_refund(OutboxItem *item, Outcome *o, JsonbContainer *re, const char *source)
{
	char	   *id = pe_jb_text(re, "id");
	char	   *status = pe_jb_text(re, "status");
	int			rstatus;

	if (id == NULL || status == NULL)
	{
		o->cls = OUTCOME_RETRY;
		o->last_error = pstrdup("answer without a Refund id and status");
		return;
	}
	rstatus = pe_refund_status_from_stripe(status);
	if (rstatus == PE_REFUND_FAILED)
	{
		char	   *why = pe_jb_text(re, "failure_reason");

		o->last_error = psprintf("refund %s (%s)", status,
								 why ? pe_scrub(why, 60) : "no reason");
	}
	else if (rstatus != PE_REFUND_COMPLETED)
	{
		/* pending, requires_action, or a status this code does not know */
		rstatus = PE_REFUND_PROCESSING;
		o->last_error = psprintf("refund %s", pe_scrub(status, 60));
	}
	pe_refund_state_report(&item->refund_id, status, source);
	pe_stripe_ref_add(id, "refund", &item->payment_id, &item->refund_id);
	if (!pe_refund_set(&item->refund_id, rstatus,
					   outcome_seal(id, "PaymentRefunds", "EncryptedStripeRefundId", &item->refund_id),
					   true))
		o->last_error = psprintf("refund %s, but the refund was no longer Processing",
								 pe_scrub(status, 60));
	explicit_bzero(id, strlen(id));
}

/*
 * A refund lookup found no refund of ours among all of the PaymentIntent's
 * refunds: Stripe never executed the refund.create (it never reached
 * Stripe, or Stripe refused it before executing).  Send the same request
 * again, resealed for a new idempotency key pe-<refund id>-re-<n> (Stripe
 * may have forgotten the old key, and reusing it after that would be a
 * blind resend): the money is asked for once, since every earlier
 * refund.create of the refund is dead and never sent again.
 */
static void
refund_recreate(OutboxItem *item, Outcome *o)
{
	char	   *rid = pe_uuid_text(&item->refund_id);
	Datum		args[4];
	bool		isnull;
	char	   *request;
	char	   *old_key;
	char	   *new_key;
	int64		n;
	int			rc;

	args[0] = UUIDPGetDatum(&item->payment_id);
	args[1] = UUIDPGetDatum(&item->refund_id);
	rc = SPI_execute_plan(pe_plan(&refund_create_row_plan), args, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "looking up the refund's request failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
	{
		/* the settler looks up only refunds that had a refund.create */
		o->last_error = pstrdup("no refund at Stripe, and no refund.create request to send again");
		return;
	}
	request = TextDatumGetCString(pe_spi_getdatum(0, 1, &isnull));
	old_key = TextDatumGetCString(pe_spi_getdatum(0, 2, &isnull));
	n = DatumGetInt64(pe_spi_getdatum(0, 3, &isnull));
	new_key = psprintf("pe-%s-re-" INT64_FORMAT, rid, n + 1);

	args[2] = CStringGetTextDatum(pe_reseal_request(request, old_key, new_key));
	args[3] = CStringGetTextDatum(new_key);
	if (outcome_exec(&refund_recreate_plan, args, NULL) == 0)
		o->last_error = pstrdup("no refund at Stripe, but the refund is no longer Processing or has a request on its way: nothing sent again");
	else
		o->last_error = psprintf("no refund at Stripe: the refund is sent again with a new idempotency key (%s)",
								 new_key);
}

/*
 * Ours is not on this page of the PaymentIntent's refunds: queue the
 * lookup of the next page, after last_id (sealed for the new row's key).
 */
static void
refund_list_next_page(OutboxItem *item, Outcome *o, const char *last_id)
{
	char	   *rid = pe_uuid_text(&item->refund_id);
	Datum		uuid = DirectFunctionCall1(gen_random_uuid, (Datum) 0);
	char	   *key = psprintf("pe-%s-lookup-%s", rid, pe_uuid_text(DatumGetUUIDP(uuid)));
	Datum		args[4];

	args[0] = UUIDPGetDatum(&item->payment_id);
	args[1] = UUIDPGetDatum(&item->refund_id);
	args[2] = CStringGetTextDatum(pe_seal(last_id, pe_outbox_context("starting_after", key)));
	args[3] = CStringGetTextDatum(key);
	outcome_exec(&refund_list_next_plan, args, NULL);
	o->last_error = pstrdup("the refund is not on this page of the PaymentIntent's refunds: looking at the next page");
}

/*
 * A refund lookup came back with a page of the PaymentIntent's refunds,
 * newest first: record ours (the one whose metadata.refund_id is our
 * refund's id; a succeeded one first, else a pending one, else the newest),
 * or look at the next page, or, when Stripe has none, send the refund again
 * (refund_recreate).
 */
static void
record_refund_list(OutboxItem *item, Outcome *o)
{
	JsonbContainer *data = pe_jb_array(&o->object->root, "data");
	char	   *rid = pe_uuid_text(&item->refund_id);
	char	   *has_more = pe_jb_text(&o->object->root, "has_more");
	JsonbContainer *best = NULL;
	int			best_rank = -1;
	long		best_created = -1;
	int			matches = 0;
	char	   *last_id = NULL;

	if (data == NULL)
	{
		o->cls = OUTCOME_RETRY;
		o->last_error = pstrdup("refund list answer without a data list");
		return;
	}
	{
		JsonbIterator *it = JsonbIteratorInit(data);
		JsonbValue	e;
		JsonbIteratorToken tok;

		while ((tok = JsonbIteratorNext(&it, &e, true)) != WJB_DONE)
		{
			JsonbContainer *re;
			char	   *md_rid;
			char	   *st;
			char	   *cr;
			int			rank;
			long		created;

			if (tok != WJB_ELEM || e.type != jbvBinary || !JsonContainerIsObject(e.val.binary.data))
				continue;
			re = e.val.binary.data;
			if (last_id != NULL)
				explicit_bzero(last_id, strlen(last_id));
			last_id = pe_jb_text(re, "id");
			md_rid = pe_jb_text(pe_jb_object(re, "metadata"), "refund_id");
			if (md_rid == NULL || pg_strcasecmp(md_rid, rid) != 0)
				continue;		/* another refund of the same payment */
			matches++;
			st = pe_jb_text(re, "status");
			cr = pe_jb_text(re, "created");
			created = cr ? strtol(cr, NULL, 10) : 0;
			rank = st == NULL ? 0 :
				strcmp(st, "succeeded") == 0 ? 3 :
				(strcmp(st, "failed") == 0 || strcmp(st, "canceled") == 0) ? 1 : 2;
			if (rank > best_rank || (rank == best_rank && created > best_created))
			{
				best = re;
				best_rank = rank;
				best_created = created;
			}
		}
	}

	if (best != NULL)
	{
		record_refund(item, o, best, "lookup");
		if (matches > 1)
		{
			/* a refund made twice at Stripe: money to get back by hand */
			o->last_error = psprintf("%s; %d refunds at Stripe carry this refund_id",
									 o->last_error ? o->last_error : "found", matches);
			ereport(WARNING,
					(errcode(ERRCODE_WARNING),
					 errmsg("payment_ext outbox worker: %d refunds at Stripe carry refund_id %s",
							matches, rid),
					 errhint("Compare the refunds of the payment in Stripe's Dashboard with \"PaymentRefunds\".")));
		}
	}
	else if (has_more != NULL && strcmp(has_more, "true") == 0 && last_id != NULL)
		refund_list_next_page(item, o, last_id);
	else if (has_more == NULL || strcmp(has_more, "false") != 0)
	{
		/* only a whole list, to its end, says "not at Stripe" */
		o->cls = OUTCOME_RETRY;
		o->last_error = pstrdup("refund list answer without has_more, or with more after no refund");
	}
	else
		refund_recreate(item, o);
	if (last_id != NULL)
		explicit_bzero(last_id, strlen(last_id));
}

/*
 * A cancellation of a PaymentIntent the payment does not keep (or of a
 * payment resolved to Failed) came too late: Stripe finished the
 * PaymentIntent (canceled, or charged: then it must be refunded).  Look it
 * up; the answer is recorded like any other (record_payment_intent).
 */
static void
cancel_then_retrieve(OutboxItem *item, Outcome *o)
{
	Datum		args[3];
	bool		isnull;
	char	   *key = psprintf("%s-retrieve", item->idempotency_key);
	char	   *request;
	int			rc;

	args[0] = Int64GetDatum(item->id);
	rc = SPI_execute_plan(pe_plan(&cancel_request_plan), args, NULL, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "looking up a cancellation's request failed: %s", SPI_result_code_string(rc));
	request = TextDatumGetCString(pe_spi_getdatum(0, 1, &isnull));
	args[0] = UUIDPGetDatum(&item->payment_id);
	args[1] = CStringGetTextDatum(pe_reseal_request(request, item->idempotency_key, key));
	args[2] = CStringGetTextDatum(key);
	outcome_exec(&cancel_retrieve_plan, args, NULL);
	o->last_error = psprintf("%s: the PaymentIntent is looked up instead",
							 o->last_error ? o->last_error : "too late to cancel");
}

/* A full jitter backoff for the attempt just made, in milliseconds. */
static double
outcome_backoff_ms(OutboxItem *item)
{
	double		cap = Min((double) pe_retry_max_ms,
						  (double) pe_retry_base_ms * pow(2.0, Min(item->attempts - 1, 30)));
	double		delay = pg_prng_double(&pg_global_prng_state) * cap;

	if (item->http.retry_after_s >= 0)
		delay = Max(delay, item->http.retry_after_s * 1000.0);
	return delay;
}

/*
 * outcome_lock_payment
 *		Lock the row of item's payment (FOR NO KEY UPDATE) before anything
 *		else of the outcome is written: the lock order every writer of a
 *		payment follows (README, "Lock order"); and read its amount and
 *		currency into o.  A payment that is gone (it cannot be deleted, but
 *		a superuser can) locks nothing; what follows then changes no
 *		payment row.
 */
static void
outcome_lock_payment(OutboxItem *item, Outcome *o)
{
	o->has_payment = pe_payment_lock(&item->payment_id, &o->payment);
}

/*
 * pe_outbox_record_one
 *		Classify and record the answer to item: the payment or refund, and
 *		the outbox row (done, pending again with a backoff, or dead).
 *		Caller: in a transaction (inside an internal subtransaction for
 *		this item), connected to SPI, as the worker role.  The payment's
 *		row is locked first, whatever the outcome (lock order: see the
 *		file header).
 */
void
pe_outbox_record_one(OutboxItem *item, OutboxTally *tally)
{
	Outcome		o;

	outcome_classify(item, &o);
	outcome_lock_payment(item, &o);

	if (o.cls == OUTCOME_SUCCESS)
	{
		if (item->kind == OUTBOX_REFUND_CREATE)
			record_refund(item, &o, &o.object->root, "response");
		else if (item->kind == OUTBOX_REFUND_LIST)
			record_refund_list(item, &o);
		else if (item->kind == OUTBOX_PI_SEARCH)
			record_search(item, &o);
		else if (item->kind == OUTBOX_REFUND_UNWANTED)
		{
			char	   *st = pe_jb_text(&o.object->root, "status");

			o.last_error = psprintf("refunded a charge the payment does not keep: refund %s",
									st ? pe_scrub(st, 40) : "without a status");
			/* the money is still the customer's to get back: keep it visible */
			if (st == NULL || strcmp(st, "failed") == 0 || strcmp(st, "canceled") == 0)
			{
				o.cls = OUTCOME_DEAD;
				o.last_error = psprintf("Stripe did not refund a charge the payment does not keep (refund %s): return the money by hand",
										st ? pe_scrub(st, 40) : "without a status");
			}
		}
		else
			record_payment_intent(item, &o, &o.object->root);
	}
	else if (o.cls == OUTCOME_FINAL)
	{
		switch (item->kind)
		{
			case OUTBOX_PI_CREATE:
				if (item->withdrawn)
				{
					Datum		args[2];

					if (o.err_type && strcmp(o.err_type, "idempotency_error") == 0)
					{
						/* Stripe made its PaymentIntent: find it and undo it */
						args[0] = UUIDPGetDatum(&item->payment_id);
						args[1] = Int64GetDatum(item->id);
						outcome_exec(&withdrawn_search_plan, args, NULL);
						o.last_error = pstrdup("withdrawn create: Stripe had executed it, so its PaymentIntent is searched for and canceled or refunded");
					}
					break;		/* never fails the payment */
				}
				{
					int			attempt = pe_intent_key_attempt(item->idempotency_key);
					int			current = pe_intent_current_attempt(&item->payment_id);

					if (attempt > 0 && current > 0 && attempt != current)
					{
						/* an earlier attempt's refusal: the payment is not changed */
						o.last_error = psprintf("%s (an earlier attempt: the payment is not changed)",
												o.last_error ? o.last_error : "refused");
						break;
					}
				}
				record_payment_failed(item, &o,
									  o.err_decline ? o.err_decline :
									  o.err_code ? o.err_code :
									  o.err_type ? o.err_type : psprintf("http_%d", o.http_status),
									  o.err_message && o.err_message[0] ? o.err_message :
									  psprintf("Stripe answered HTTP %d", o.http_status));
				break;
			case OUTBOX_REFUND_CREATE:
				pe_refund_set(&item->refund_id, PE_REFUND_FAILED, NULL, true);
				break;
			case OUTBOX_REFUND_UNWANTED:
				/* nothing left to refund is done; anything else needs a look */
				if (o.err_code == NULL || strcmp(o.err_code, "charge_already_refunded") != 0)
					o.cls = OUTCOME_DEAD;
				break;
			case OUTBOX_PI_CANCEL:
				if (o.err_code != NULL && strcmp(o.err_code, "payment_intent_unexpected_state") == 0 &&
					(strstr(item->idempotency_key, "-unwanted-cancel-") != NULL ||
					 strstr(item->idempotency_key, "-cancel-resolve-") != NULL))
				{
					cancel_then_retrieve(item, &o);
					break;
				}
				o.cls = OUTCOME_DEAD;
				break;
			case OUTBOX_PI_RETRIEVE:
			case OUTBOX_PI_SEARCH:
			case OUTBOX_REFUND_LIST:
				/* the payment's (refund's) fate is the settler's call: keep it visible */
				o.cls = OUTCOME_DEAD;
				break;
		}
	}

	switch (o.cls)
	{
		case OUTCOME_SUCCESS:
			tally->successes++;
			pe_outbox_mark(item->id, "done", 0, o.http_status, o.last_error);
			break;
		case OUTCOME_FINAL:
			tally->failures++;
			pe_outbox_mark(item->id, "done", 0, o.http_status, o.last_error);
			break;
		case OUTCOME_RETRY:

			/*
			 * issue 20: the retry budget is time.  A transient failure (no
			 * answer, 5xx, 409, 429) is retried with the same key until
			 * payment_ext.idempotency_window closes (then the claim skips
			 * the row and the settler takes over); one that provably never
			 * reached Stripe does not even start that window.  Only answers
			 * that came back and cannot be used (a 2xx that is not the
			 * object asked for) count against max_attempts.
			 */
			if (!item->http.maybe_reached && item->key_first)
				pe_outbox_unsent(item->id);
			if (o.http_status >= 200 && o.http_status < 300 &&
				item->unusable_answers + 1 >= pe_max_attempts)
			{
				char	   *why = psprintf("gave up after %d answers that could not be used: %s",
										   item->unusable_answers + 1, o.last_error);

				tally->dead++;
				pe_outbox_mark(item->id, "dead", 0, o.http_status, why);
				o.last_error = why;
			}
			else
			{
				tally->retries++;
				pe_outbox_mark(item->id, "pending", outcome_backoff_ms(item),
							   o.http_status, o.last_error);
				if (o.http_status >= 200 && o.http_status < 300)
					pe_outbox_unusable(item->id);
			}
			break;
		case OUTCOME_DEAD:
			tally->dead++;
			pe_outbox_mark(item->id, "dead", 0, o.http_status, o.last_error);
			break;
	}
	if (o.cls != OUTCOME_SUCCESS && o.last_error != NULL)
		pe_strlcpy_mb(tally->last_error, o.last_error, sizeof(tally->last_error));

	/* one line per request at DEBUG1: no key, no Stripe id, no body */
	ereport(DEBUG1,
			(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
			 errmsg_internal("payment_ext outbox worker: outbox row " INT64_FORMAT " (%s, attempt %d): HTTP %d, %s",
							 item->id, pe_outbox_kind_name(item->kind), item->attempts,
							 (int) o.http_status,
							 o.cls == OUTCOME_SUCCESS ? "done" :
							 o.cls == OUTCOME_FINAL ? "refused for good" :
							 o.cls == OUTCOME_RETRY ? "to retry" : "dead")));
}
