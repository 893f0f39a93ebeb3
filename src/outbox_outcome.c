/*-------------------------------------------------------------------------
 *
 * outbox_outcome.c
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
 *	  (outbox_worker.c).  Taking payment.intents or stripe_refs first, as
 *	  1.1 did, deadlocked (40P01) with a webhook holding the payment.
 *
 * IDENTIFICATION
 *		src/outbox_outcome.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "common/cryptohash.h"
#include "common/jsonapi.h"
#include "common/sha2.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "outbox.h"
#include "payment_ext.h"
#include "vault.h"
#include "webhook.h"
#include "pg_compat.h"

/* Longest "FailureCode" ("PaymentFailures"."FailureCode" is varchar(50)) */
#define OUTCOME_CODE_MAX		50
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
	int64		amount_minor;
	char	   *currency;
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
/* the first lock of every outcome: its payment's row (see the header) */
static PePlan payment_lock_plan = {
	"SELECT (\"AmountValue\" * 100)::bigint, \"Currency\""
	" FROM @S@.\"Payments\" WHERE \"Id\" = $1 FOR NO KEY UPDATE",
	1, {UUIDOID}, NULL, 0
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
static PePlan payment_complete_plan = {
	"UPDATE @S@.\"Payments\" SET \"Status\" = 1, \"EncryptedStripePaymentIntentId\" = $2"
	" WHERE \"Id\" = $1 AND \"Status\" = 0",
	2, {UUIDOID, TEXTOID}, NULL, 0
};
static PePlan payment_intent_plan = {
	"UPDATE @S@.\"Payments\" SET \"EncryptedStripePaymentIntentId\" = $2"
	" WHERE \"Id\" = $1 AND \"Status\" = 0",
	2, {UUIDOID, TEXTOID}, NULL, 0
};
static PePlan payment_fail_plan = {
	"UPDATE @S@.\"Payments\" SET \"Status\" = 2 WHERE \"Id\" = $1 AND \"Status\" = 0",
	1, {UUIDOID}, NULL, 0
};
static PePlan failure_insert_plan = {
	"INSERT INTO @S@.\"PaymentFailures\" (\"Id\", \"PaymentId\", \"FailureCode\","
	" \"FailureMessage\", \"EncryptedStripeErrorDetails\", \"RetryCount\")"
	" VALUES ($1, $2, $3, $4, $5, $6)",
	6, {UUIDOID, UUIDOID, TEXTOID, TEXTOID, TEXTOID, INT4OID}, NULL, 0
};
/*
 * A terminal PaymentIntent status (succeeded, canceled) is final at
 * Stripe: once reported (by a webhook, say) it is never replaced by an
 * answer that was on its way meanwhile.
 */
static PePlan intent_upsert_plan = {
	"INSERT INTO payment.intents AS i (payment_id, client_secret, stripe_status, next_action,"
	" source, reported_at)"
	" VALUES ($1, $2, $3, $4, $5, pg_catalog.now())"
	" ON CONFLICT (payment_id) DO UPDATE SET"
	" client_secret = COALESCE(EXCLUDED.client_secret, i.client_secret),"
	" stripe_status = CASE WHEN i.stripe_status IN ('succeeded', 'canceled')"
	"   THEN i.stripe_status ELSE EXCLUDED.stripe_status END,"
	" next_action = CASE WHEN i.stripe_status IN ('succeeded', 'canceled')"
	"   THEN i.next_action ELSE EXCLUDED.next_action END,"
	" source = EXCLUDED.source, reported_at = pg_catalog.now(),"
	" updated_at = pg_catalog.now()",
	5, {UUIDOID, TEXTOID, TEXTOID, JSONBOID, TEXTOID}, NULL, 0
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
 * Our refund failed (or was canceled) at Stripe: the charge's
 * amount_refunded that Stripe reported before counted it and is stale now
 * (Stripe sends no charge.refunded when a refund fails), so it is
 * forgotten, and a charge.refunded sent before now is not taken again.
 */
static PePlan amount_reset_plan = {
	"UPDATE payment.intents AS i SET amount_refunded = NULL, amount_refunded_at = pg_catalog.now()"
	" FROM @S@.\"PaymentRefunds\" r"
	" WHERE r.\"Id\" = $1 AND i.payment_id = r.\"OriginalPaymentId\""
	" AND $2 IN ('failed', 'canceled')",
	2, {UUIDOID, TEXTOID}, NULL, 0
};
static PePlan refund_state_plan = {
	"INSERT INTO payment.refund_states AS s (refund_id, stripe_status, source)"
	" VALUES ($1, $2, $3)"
	" ON CONFLICT (refund_id) DO UPDATE SET stripe_status = EXCLUDED.stripe_status,"
	" source = EXCLUDED.source, reported_at = pg_catalog.now()"
	/*
	 * Stripe moves a Refund pending -> succeeded, failed or canceled, and
	 * succeeded -> failed, never back: an older report (a late webhook, the
	 * replayed first answer of a resent request) does not overwrite a later
	 * one.
	 */
	" WHERE s.stripe_status NOT IN ('failed', 'canceled')"
	" AND (s.stripe_status <> 'succeeded' OR EXCLUDED.stripe_status IN ('failed', 'canceled'))",
	3, {UUIDOID, TEXTOID, TEXTOID}, NULL, 0
};
static PePlan refund_set_plan = {
	"UPDATE @S@.\"PaymentRefunds\" SET \"RefundStatus\" = $2, \"EncryptedStripeRefundId\" = $3"
	" WHERE \"Id\" = $1 AND \"RefundStatus\" = 0",
	3, {UUIDOID, INT4OID, TEXTOID}, NULL, 0
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

/*
 * Issue 17, items 1 and 2: withdrawing requests that are no longer wanted
 * (see outbox.h).  A create is no longer wanted when its payment is not
 * Pending, or when a newer create of the payment exists (payment.retry: the
 * newest create is the current attempt).  $1: one payment, or NULL for all.
 */
#define WITHDRAW_CREATE_SQL \
	" FROM @S@.\"Payments\" p" \
	" WHERE p.\"Id\" = o.payment_id AND o.kind = 'payment_intent.create' AND o.state = 'pending'" \
	"  AND ($1::uuid IS NULL OR o.payment_id = $1)" \
	"  AND NOT (o.request ? 'metadata[withdrawn]')" \
	"  AND (p.\"Status\" <> 0 OR EXISTS (SELECT 1 FROM payment.outbox n" \
	"        WHERE n.payment_id = o.payment_id AND n.kind = 'payment_intent.create' AND n.id > o.id))"
static PePlan withdraw_plans[3] = {
	{
		/* never sent: Stripe cannot know it */
		"UPDATE payment.outbox o SET state = 'done', completed_at = pg_catalog.now(),"
		" updated_at = pg_catalog.now(),"
		" last_error = CASE WHEN p.\"Status\" <> 0"
		"  THEN 'withdrawn before it was sent: the payment is no longer Pending'"
		"  ELSE 'withdrawn before it was sent: payment.retry queued a newer attempt' END"
		WITHDRAW_CREATE_SQL " AND o.attempts = 0",
		1, {UUIDOID}, NULL, 0
	},
	{
		/* attempted: a probe that can never charge (outbox.h) */
		"UPDATE payment.outbox o SET updated_at = pg_catalog.now(),"
		" request = (o.request - 'confirm') || pg_catalog.jsonb_build_object('metadata[withdrawn]',"
		"   COALESCE(o.request->>'confirm', 'false')),"
		" last_error = 'withdrawn after an attempt: sent again unconfirmed under its key, to learn"
		" whether Stripe made its PaymentIntent (which is then canceled or refunded)'"
		WITHDRAW_CREATE_SQL " AND o.attempts > 0",
		1, {UUIDOID}, NULL, 0
	},
	{
		/* a refund no longer Processing: resolved by a webhook or by hand */
		"UPDATE payment.outbox o SET state = 'done', completed_at = pg_catalog.now(),"
		" updated_at = pg_catalog.now(),"
		" last_error = 'withdrawn: the refund is no longer Processing'"
		" FROM @S@.\"PaymentRefunds\" r"
		" WHERE r.\"Id\" = o.refund_id AND o.kind = 'refund.create' AND o.state = 'pending'"
		"  AND r.\"RefundStatus\" <> 0 AND ($1::uuid IS NULL OR o.payment_id = $1)",
		1, {UUIDOID}, NULL, 0
	}
};
/* The payment's current PaymentIntent (sealed) and its newest create's key */
static PePlan current_intent_plan = {
	"SELECT p.\"EncryptedStripePaymentIntentId\", p.\"Status\", p.\"EventRegistrationId\","
	" (SELECT c.idempotency_key FROM payment.outbox c WHERE c.payment_id = p.\"Id\""
	"   AND c.kind = 'payment_intent.create' ORDER BY c.id DESC LIMIT 1)"
	" FROM @S@.\"Payments\" p WHERE p.\"Id\" = $1",
	1, {UUIDOID}, NULL, 0
};
/* A request that undoes a PaymentIntent the payment does not keep */
static PePlan undo_enqueue_plan = {
	"INSERT INTO payment.outbox (kind, payment_id, request, idempotency_key)"
	" VALUES ($1, $2, $3::jsonb, $4) ON CONFLICT (idempotency_key) DO NOTHING",
	4, {TEXTOID, UUIDOID, TEXTOID, TEXTOID}, NULL, 0
};
static PePlan undo_failure_plan = {
	"INSERT INTO @S@.\"PaymentFailures\" (\"PaymentId\", \"FailureCode\", \"FailureMessage\")"
	" VALUES ($1, 'unwanted_charge', $2)",
	2, {UUIDOID, TEXTOID}, NULL, 0
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
static PePlan reopen_plan = {
	"UPDATE @S@.\"Payments\" SET \"Status\" = 0 WHERE \"Id\" = $1 AND \"Status\" = 2",
	1, {UUIDOID}, NULL, 0
};
static PePlan other_live_plan = {
	"SELECT 1 FROM @S@.\"Payments\" WHERE \"EventRegistrationId\" = $1"
	" AND \"Status\" IN (0, 1, 4) AND \"Id\" <> $2",
	2, {UUIDOID, UUIDOID}, NULL, 0
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
 * pe_outbox_scrub
 *		A copy of text fit for a log line or a stored message: Stripe object
 *		ids and keys (pm_..., pi_..._secret_..., sk_test_..., ...) become
 *		"[redacted]", control characters become spaces, and at most maxlen
 *		bytes are kept (cut at a character boundary).
 */
char *
pe_outbox_scrub(const char *text, int maxlen)
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

/* Append "s" as a JSON string or null to buf. */
static void
json_append(StringInfo buf, const char *key, const char *s, bool first)
{
	if (!first)
		appendStringInfoString(buf, ", ");
	escape_json(buf, key);
	appendStringInfoString(buf, ": ");
	if (s == NULL)
		appendStringInfoString(buf, "null");
	else
		escape_json(buf, s);
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
	o->last_error = pe_outbox_scrub(buf.data, OUTCOME_MESSAGE_MAX);
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
		o->err_message = pe_outbox_scrub(msg, OUTCOME_MESSAGE_MAX);
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
	char	   *row = DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(id)));

	return pe_seal(value, pe_vault_context(table, column, row));
}

/* A payment that Stripe refused for good: Failed, with a "PaymentFailures" row. */
static void
record_payment_failed(OutboxItem *item, Outcome *o, const char *code, const char *message)
{
	Datum		fid = DirectFunctionCall1(gen_random_uuid, (Datum) 0);
	StringInfoData details;
	Datum		args[6];
	char	   *fcode;

	initStringInfo(&details);
	appendStringInfoChar(&details, '{');
	json_append(&details, "type", o->err_type, true);
	json_append(&details, "code", o->err_code, false);
	json_append(&details, "decline_code", o->err_decline, false);
	json_append(&details, "param", o->err_param, false);
	json_append(&details, "request_id", item->http.request_id[0] ? item->http.request_id : NULL, false);
	appendStringInfo(&details, ", \"http_status\": %d}", o->http_status);

	/* the failure is recorded only for a payment that it fails */
	args[0] = UUIDPGetDatum(&item->payment_id);
	if (outcome_exec(&payment_fail_plan, args, NULL) == 0)
	{
		o->last_error = psprintf("%s (payment was no longer Pending)",
								 o->last_error ? o->last_error : "failed");
		return;
	}

	fcode = pe_clip_chars(code, OUTCOME_CODE_MAX);
	args[0] = fid;
	args[1] = UUIDPGetDatum(&item->payment_id);
	args[2] = CStringGetTextDatum(fcode);
	args[3] = CStringGetTextDatum(message);
	args[4] = CStringGetTextDatum(outcome_seal(details.data, "PaymentFailures",
											   "EncryptedStripeErrorDetails",
											   DatumGetUUIDP(fid)));
	args[5] = Int32GetDatum(Max(item->attempts - 1, 0));
	outcome_exec(&failure_insert_plan, args, NULL);
}

/* ---------------------------------------------------------------------------
 * Attempts, and PaymentIntents a payment does not keep (issue 17, items 1, 2)
 * ---------------------------------------------------------------------------
 */

/* The first 16 hex digits of the SHA-256 of s: names a Stripe id in a key. */
static char *
digest_hex16(const char *s)
{
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);
	uint8		d[PG_SHA256_DIGEST_LENGTH];
	char	   *out = palloc(17);
	int			i;

	if (ctx == NULL || pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) s, strlen(s)) < 0 ||
		pg_cryptohash_final(ctx, d, sizeof(d)) < 0)
		elog(ERROR, "could not compute a SHA-256 digest");
	pg_cryptohash_free(ctx);
	for (i = 0; i < 8; i++)
		snprintf(out + 2 * i, 3, "%02x", d[i]);
	return out;
}

/* A small decimal number, or 0. */
static int
small_number(const char *s)
{
	size_t		n = s ? strlen(s) : 0;

	if (n == 0 || n > 6 || strspn(s, "0123456789") != n)
		return 0;
	return atoi(s);
}

/* The attempt n of a create's key pe-<payment id>-pi-<n>, or 0. */
static int
key_attempt(const char *key)
{
	const char *p = key ? strrchr(key, '-') : NULL;

	if (p == NULL || p - key < 3 || strncmp(p - 3, "-pi", 3) != 0)
		return 0;
	return small_number(p + 1);
}

/*
 * pe_intent_attempt
 *		The attempt a PaymentIntent was created for: its metadata[attempt]
 *		(set since 1.2), or 0 when it has none.
 */
int
pe_intent_attempt(JsonbContainer *pi)
{
	return small_number(pe_jb_text(pe_jb_object(pi, "metadata"), "attempt"));
}

/*
 * pe_outbox_withdraw
 *		Make the pending requests of payment_id (of every payment when all)
 *		that are no longer wanted harmless (outbox.h).  Connected to SPI.
 */
void
pe_outbox_withdraw(Datum payment_id, bool all)
{
	char		nulls[1] = {all ? 'n' : ' '};
	int			i;

	for (i = 0; i < (int) lengthof(withdraw_plans); i++)
	{
		int			rc = SPI_execute_plan(pe_plan(&withdraw_plans[i]), &payment_id, nulls,
										  false, 0);

		if (rc != SPI_OK_UPDATE)
			elog(ERROR, "withdrawing outbox requests failed: %s", SPI_result_code_string(rc));
	}
}

/*
 * intent_current
 *		Is pi_id (of the given attempt, 0 if unknown) the PaymentIntent of
 *		payment_id's current attempt?  The payment's stored PaymentIntent,
 *		when it has one, decides (payment.retry clears it); else the attempt,
 *		when known, must be the newest create's.  Sets *status and
 *		*registration of the payment (-1 when there is no such payment).
 */
static bool
intent_current(const pg_uuid_t *payment_id, const char *pi_id, int attempt,
			   int *status, pg_uuid_t *registration)
{
	Datum		arg = UUIDPGetDatum(payment_id);
	bool		isnull;
	Datum		d;
	int			rc;

	*status = -1;
	rc = SPI_execute_plan(pe_plan(&current_intent_plan), &arg, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "looking up the payment's attempt failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		return true;
	*status = DatumGetInt32(pe_spi_getdatum(0, 2, &isnull));
	if (registration != NULL)
		memcpy(registration, DatumGetUUIDP(pe_spi_getdatum(0, 3, &isnull)), UUID_LEN);
	d = pe_spi_getdatum(0, 1, &isnull);
	if (!isnull)
	{
		char	   *pid = DatumGetCString(DirectFunctionCall1(uuid_out, arg));
		char	   *stored = pe_open(TextDatumGetCString(d),
									 pe_vault_context("Payments", "EncryptedStripePaymentIntentId", pid));
		bool		same = strcmp(stored, pi_id) == 0;

		pe_secret_cleanse(stored);
		return same;
	}
	if (attempt > 0)
	{
		int			current;

		d = pe_spi_getdatum(0, 4, &isnull);
		current = isnull ? 0 : key_attempt(TextDatumGetCString(d));
		if (current > 0)
			return attempt == current;
	}
	return true;
}

/* The payment's current attempt: n of its newest create's key, or 0. */
static int
current_attempt(const pg_uuid_t *payment_id)
{
	Datum		arg = UUIDPGetDatum(payment_id);
	bool		isnull;
	Datum		d;
	int			rc;

	rc = SPI_execute_plan(pe_plan(&current_intent_plan), &arg, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "looking up the payment's attempt failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		return 0;
	d = pe_spi_getdatum(0, 4, &isnull);
	return isnull ? 0 : key_attempt(TextDatumGetCString(d));
}

/* See outbox.h. */
bool
pe_intent_is_current(const pg_uuid_t *payment_id, const char *pi_id, int attempt,
					 char **unused)
{
	int			status;

	(void) unused;
	return intent_current(payment_id, pi_id, attempt, &status, NULL);
}

/*
 * pe_outbox_undo_intent
 *		PaymentIntent pi_id (status as Stripe reported it) belongs to
 *		payment_id, which does not keep it (why: an earlier attempt, the
 *		payment is no longer Pending): queue its cancellation, or, when it
 *		was charged, the refund of the whole charge (kind refund.unwanted)
 *		with a "PaymentFailures" row (code unwanted_charge) saying why.  One
 *		request per PaymentIntent: the key carries a digest of its id.
 *		Returns what was done, for an outcome or last_error.  Connected to
 *		SPI; the caller may write to payment.outbox and "PaymentFailures".
 */
const char *
pe_outbox_undo_intent(const pg_uuid_t *payment_id, const char *pi_id, const char *status,
					  const char *why)
{
	char	   *pid = DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(payment_id)));
	bool		refund = status != NULL && strcmp(status, "succeeded") == 0;
	char	   *key;
	StringInfoData req;
	Datum		args[4];

	if (status != NULL && strcmp(status, "canceled") == 0)
		return "already canceled at Stripe";
	if (status != NULL && strcmp(status, "processing") == 0)
		return "still processing at Stripe: refunded if it succeeds";
	key = psprintf(refund ? "pe-%s-unwanted-refund-%s" : "pe-%s-unwanted-cancel-%s",
				   pid, digest_hex16(pi_id));
	initStringInfo(&req);
	appendStringInfoChar(&req, '{');
	json_append(&req, "payment_intent",
				pe_seal(pi_id, psprintf("outbox.request.payment_intent:%s", key)), true);
	if (refund)
	{
		json_append(&req, "reason", "duplicate", false);
		json_append(&req, "metadata[payment_id]", pid, false);
		json_append(&req, "metadata[unwanted]", "true", false);
	}
	else
		json_append(&req, "cancellation_reason", "duplicate", false);
	appendStringInfoChar(&req, '}');
	args[0] = CStringGetTextDatum(refund ? "refund.unwanted" : "payment_intent.cancel");
	args[1] = UUIDPGetDatum(payment_id);
	args[2] = CStringGetTextDatum(req.data);
	args[3] = CStringGetTextDatum(key);
	if (outcome_exec(&undo_enqueue_plan, args, NULL) > 0 && refund)
	{
		args[0] = UUIDPGetDatum(payment_id);
		args[1] = CStringGetTextDatum(psprintf("Stripe charged a PaymentIntent that this payment does not keep (%s); the whole charge is refunded (refund.unwanted)",
											   why));
		outcome_exec(&undo_failure_plan, args, NULL);
	}
	return refund ? "its charge is refunded in full (refund.unwanted)" :
		"it is canceled at Stripe";
}

/*
 * A refund.unwanted that Stripe first accepted (pending) and later failed
 * leaves the charge the payment does not keep paid.  Nothing does it again
 * by itself (a resend under the same key replays the first answer, and
 * Stripe fails a refund for reasons a retry does not change): the
 * request's row (by its key, which names the PaymentIntent) becomes a dead
 * letter (payment.dead_letters), for an administrator to return the money.
 */
#define UNWANTED_ROW_SQL \
	" payment_id = $1 AND kind = 'refund.unwanted'" \
	" AND ($2::text IS NULL OR idempotency_key = $2" \
	"      OR pg_catalog.starts_with(idempotency_key, $2 || '-re-'))"
static PePlan unwanted_failed_plan = {
	"UPDATE payment.outbox SET state = 'dead', completed_at = pg_catalog.now(),"
	" updated_at = pg_catalog.now(), last_error = $3"
	" WHERE" UNWANTED_ROW_SQL " AND state IN ('done', 'dead')",
	3, {UUIDOID, TEXTOID, TEXTOID}, NULL, 0
};
static PePlan unwanted_on_its_way_plan = {
	"SELECT 1 FROM payment.outbox WHERE" UNWANTED_ROW_SQL
	" AND state IN ('pending', 'sending')",
	2, {UUIDOID, TEXTOID}, NULL, 0
};

/* See outbox.h. */
const char *
pe_outbox_unwanted_refund_failed(const pg_uuid_t *payment_id, const char *pi_id,
								 const char *reason)
{
	char	   *pid = DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(payment_id)));
	char	   *why = psprintf("Stripe failed the refund of a charge the payment does not keep (%s): the customer still paid it; return the money by other means",
							   reason ? pe_outbox_scrub(reason, 60) : "no reason given");
	Datum		args[3];
	char		nulls[3] = {' ', ' ', ' '};
	int			rc;

	args[0] = UUIDPGetDatum(payment_id);
	if (pi_id != NULL)
		args[1] = CStringGetTextDatum(psprintf("pe-%s-unwanted-refund-%s", pid, digest_hex16(pi_id)));
	else
		nulls[1] = 'n';
	args[2] = CStringGetTextDatum(why);
	if (outcome_exec(&unwanted_failed_plan, args, nulls) > 0)
		return "applied: Stripe failed the refund of a charge the payment does not keep; its refund.unwanted is a dead letter (payment.dead_letters)";

	rc = SPI_execute_plan(pe_plan(&unwanted_on_its_way_plan), args, nulls, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "looking up a refund.unwanted failed: %s", SPI_result_code_string(rc));
	if (SPI_processed > 0)
	{
		/* its answer is not recorded yet: take the event after it */
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("a refund event arrived while the refund.unwanted it reports is still on its way"),
				 errdetail("The event is not recorded; Stripe delivers it again.")));
	}
	return "conflict: Stripe failed a refund of a charge the payment does not keep, and no refund.unwanted of ours matches it: nothing recorded";
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
charged_not_pending(OutboxItem *item, Outcome *o, const char *id, Datum *args)
{
	int			pstatus;
	pg_uuid_t	reg;

	intent_current(&item->payment_id, id, 0, &pstatus, &reg);
	if (pstatus == PE_PAYMENT_COMPLETED || pstatus == PE_PAYMENT_PARTIALLY_REFUNDED ||
		pstatus == PE_PAYMENT_REFUNDED)
	{
		o->last_error = psprintf("succeeded; the payment is already %s",
								 pe_payment_status_name(pstatus));
		return;
	}
	if (pstatus == PE_PAYMENT_FAILED)
	{
		Datum		a2[2];
		int			rc;

		a2[0] = UUIDPGetDatum(&reg);
		a2[1] = UUIDPGetDatum(&item->payment_id);
		rc = SPI_execute_plan(pe_plan(&other_live_plan), a2, NULL, false, 1);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "looking up live payments failed: %s", SPI_result_code_string(rc));
		if (SPI_processed == 0 &&
			outcome_exec(&reopen_plan, args, NULL) > 0 &&
			outcome_exec(&payment_complete_plan, args, NULL) > 0)
		{
			o->last_error = pstrdup("succeeded after the payment was Failed: Failed -> Pending -> Completed (its registration had no other live payment)");
			return;
		}
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
	JsonbContainer *next = pe_jb_object(pi, "next_action");
	char	   *sealed_id;
	Datum		args[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	char	   *pid = DatumGetCString(DirectFunctionCall1(uuid_out,
														  UUIDPGetDatum(&item->payment_id)));
	int			pstatus = -1;
	pg_uuid_t	reg;
	bool		keeps = true;

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
		const char *mismatch = pe_pi_mismatch(pi, &item->payment_id, o->amount_minor,
											  o->currency, &why);

		if (mismatch != NULL)
		{
			pe_pi_mismatch_record(&item->payment_id, mismatch, why,
								  item->kind == OUTBOX_PI_RETRIEVE ||
								  item->kind == OUTBOX_PI_SEARCH ? "lookup" : "response");
			o->last_error = psprintf("PaymentIntent %s does not match the payment: %s; not recorded for it (see payment.reconcile)",
									 pe_outbox_scrub(status, 40), why);
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
			attempt = key_attempt(item->idempotency_key);
		if (!intent_current(&item->payment_id, id, attempt, &pstatus, &reg))
		{
			pe_stripe_ref_add(id, "payment_intent", &item->payment_id, NULL);
			o->last_error = psprintf("PaymentIntent %s is not the payment's current one: %s",
									 pe_outbox_scrub(status, 40),
									 pe_outbox_undo_intent(&item->payment_id, id, status,
														   "a PaymentIntent of an earlier attempt"));
			explicit_bzero(id, strlen(id));
			return;
		}
	}
	sealed_id = outcome_seal(id, "Payments", "EncryptedStripePaymentIntentId", &item->payment_id);

	/* what the application and the settler need: status, next action, client secret */
	args[0] = UUIDPGetDatum(&item->payment_id);
	if (secret != NULL)
		args[1] = CStringGetTextDatum(pe_seal(secret, psprintf("payment.intents.client_secret:%s", pid)));
	else
		nulls[1] = 'n';
	args[2] = CStringGetTextDatum(status);
	if (next != NULL)
	{
		StringInfoData na;
		char	   *type = pe_jb_text(next, "type");

		initStringInfo(&na);
		appendStringInfoChar(&na, '{');
		json_append(&na, "type", type, true);
		appendStringInfoChar(&na, '}');
		args[3] = DirectFunctionCall1(jsonb_in, CStringGetDatum(na.data));
	}
	else
		nulls[3] = 'n';
	args[4] = CStringGetTextDatum(item->kind == OUTBOX_PI_RETRIEVE ||
								  item->kind == OUTBOX_PI_SEARCH ? "lookup" : "response");

	/*
	 * A charge of a Failed payment whose registration has another live
	 * payment is refunded (charged_not_pending): the payment does not keep
	 * it, so it is not the payment's state at Stripe either (else
	 * payment.reconcile would list a payment that agrees with Stripe).
	 */
	if (strcmp(status, "succeeded") == 0 && pstatus == PE_PAYMENT_FAILED)
	{
		Datum		a2[2];
		int			rc;

		a2[0] = UUIDPGetDatum(&reg);
		a2[1] = UUIDPGetDatum(&item->payment_id);
		rc = SPI_execute_plan(pe_plan(&other_live_plan), a2, NULL, false, 1);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "looking up live payments failed: %s", SPI_result_code_string(rc));
		keeps = (SPI_processed == 0);
	}
	if (keeps)
		outcome_exec(&intent_upsert_plan, args, nulls);
	if (secret != NULL)
		explicit_bzero(secret, strlen(secret));
	pe_stripe_ref_add(id, "payment_intent", &item->payment_id, NULL);
	{
		char	   *charge = pe_jb_text(pi, "latest_charge");

		pe_stripe_ref_add(charge, "charge", &item->payment_id, NULL);
	}

	args[1] = CStringGetTextDatum(sealed_id);
	if (strcmp(status, "succeeded") == 0)
	{
		if (outcome_exec(&payment_complete_plan, args, NULL) == 0)
			charged_not_pending(item, o, id, args);
	}
	else if (strcmp(status, "canceled") == 0)
	{
		char	   *reason = pe_jb_text(pi, "cancellation_reason");

		outcome_exec(&payment_intent_plan, args, NULL);
		o->last_error = psprintf("PaymentIntent canceled (%s)",
								 reason ? pe_outbox_scrub(reason, 60) : "no reason");
		/* the settler's own cancellation expires the payment */
		record_payment_failed(item, o,
							  item->kind == OUTBOX_PI_CANCEL ||
							  (reason != NULL && (strcmp(reason, "abandoned") == 0 ||
												  strcmp(reason, "expired") == 0 ||
												  strcmp(reason, "automatic") == 0)) ?
							  "expired" : "canceled",
							  o->last_error);
	}
	else
	{
		/* requires_action, requires_payment_method, processing, ...: Pending */
		if (outcome_exec(&payment_intent_plan, args, NULL) == 0 &&
			(item->kind == OUTBOX_PI_CREATE || withdrawn_lookup(item)))
		{
			/* made for a payment that is no longer Pending: never charged */
			o->last_error = psprintf("PaymentIntent %s, but the payment is no longer Pending: %s",
									 pe_outbox_scrub(status, 40),
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
				pg_strcasecmp(md_pid, DatumGetCString(DirectFunctionCall1(uuid_out,
																		  UUIDPGetDatum(&item->payment_id)))) != 0)
				continue;		/* not ours after all */
			st = pe_jb_text(pi, "status");
			{
				char	   *pi_id = pe_jb_text(pi, "id");
				int			pstatus;

				if (pi_id != NULL && st != NULL &&
					!intent_current(&item->payment_id, pi_id, pe_intent_attempt(pi), &pstatus, NULL))
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
	Datum		args[3];

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
								 why ? pe_outbox_scrub(why, 60) : "no reason");
	}
	else if (rstatus != PE_REFUND_COMPLETED)
	{
		/* pending, requires_action, or a status this code does not know */
		rstatus = PE_REFUND_PROCESSING;
		o->last_error = psprintf("refund %s", pe_outbox_scrub(status, 60));
	}
	args[0] = UUIDPGetDatum(&item->refund_id);
	args[1] = CStringGetTextDatum(status);
	args[2] = CStringGetTextDatum(source);
	outcome_exec(&refund_state_plan, args, NULL);
	outcome_exec(&amount_reset_plan, args, NULL);
	pe_stripe_ref_add(id, "refund", &item->payment_id, &item->refund_id);
	args[1] = Int32GetDatum(rstatus);
	args[2] = CStringGetTextDatum(outcome_seal(id, "PaymentRefunds", "EncryptedStripeRefundId",
											   &item->refund_id));
	if (outcome_exec(&refund_set_plan, args, NULL) == 0)
		o->last_error = psprintf("refund %s, but the refund was no longer Processing",
								 pe_outbox_scrub(status, 60));
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
	char	   *rid = DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&item->refund_id)));
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
	char	   *rid = DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&item->refund_id)));
	Datum		uuid = DirectFunctionCall1(gen_random_uuid, (Datum) 0);
	char	   *key = psprintf("pe-%s-lookup-%s", rid,
							   DatumGetCString(DirectFunctionCall1(uuid_out, uuid)));
	Datum		args[4];

	args[0] = UUIDPGetDatum(&item->payment_id);
	args[1] = UUIDPGetDatum(&item->refund_id);
	args[2] = CStringGetTextDatum(pe_seal(last_id, psprintf("outbox.request.starting_after:%s", key)));
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
	char	   *rid = DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&item->refund_id)));
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

/*
 * Stripe saved a 5xx under item's key and replays it (Idempotent-Replayed):
 * the same key gets the same answer for as long as Stripe keeps it, so a
 * resend under it can never succeed.  For a payment_intent.cancel and a
 * refund.unwanted, asking again under a new key is safe: a PaymentIntent is
 * canceled once (a second cancel is refused, payment_intent_unexpected_state)
 * and a refund.unwanted refunds what is left of the charge (a second one is
 * refused, charge_already_refunded).  The row is done and a copy of it,
 * resealed for the key <base>-re-<n>, takes over.  Creates and refund.create
 * keep their key: their window closes and the settler looks them up.
 */
static PePlan rekey_plan = {
	"INSERT INTO payment.outbox (kind, payment_id, refund_id, request, idempotency_key)"
	" SELECT kind, payment_id, refund_id, $2::jsonb, $3 FROM payment.outbox WHERE id = $1"
	" ON CONFLICT (idempotency_key) DO NOTHING",
	3, {INT8OID, TEXTOID, TEXTOID}, NULL, 0
};

static void
outcome_rekey(OutboxItem *item, Outcome *o)
{
	const char *key = item->idempotency_key;
	const char *re = strstr(key, "-re-");
	int			n = 0;
	char	   *new_key;
	char	   *request;
	Datum		args[3];
	bool		isnull;
	int			rc;

	/* pe-...-re-<n>: the n-th new key of the first one */
	while (re != NULL && strstr(re + 4, "-re-") != NULL)
		re = strstr(re + 4, "-re-");
	if (re != NULL && re[4] != '\0' && strspn(re + 4, "0123456789") == strlen(re + 4) &&
		strlen(re + 4) < 9)
		n = atoi(re + 4);
	else
		re = NULL;
	new_key = psprintf("%.*s-re-%d", re ? (int) (re - key) : (int) strlen(key), key, n + 1);

	args[0] = Int64GetDatum(item->id);
	rc = SPI_execute_plan(pe_plan(&cancel_request_plan), args, NULL, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "looking up an outbox request failed: %s", SPI_result_code_string(rc));
	request = TextDatumGetCString(pe_spi_getdatum(0, 1, &isnull));
	args[1] = CStringGetTextDatum(pe_reseal_request(request, key, new_key));
	args[2] = CStringGetTextDatum(new_key);
	outcome_exec(&rekey_plan, args, NULL);
	o->cls = OUTCOME_FINAL;
	o->last_error = psprintf("%s; Stripe replays this saved answer for the key: sent again under a new key (%s)",
							 o->last_error ? o->last_error : "a saved error", new_key);
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
	Datum		arg = UUIDPGetDatum(&item->payment_id);
	bool		isnull;
	int			rc;

	rc = SPI_execute_plan(pe_plan(&payment_lock_plan), &arg, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "locking the payment failed: %s", SPI_result_code_string(rc));
	o->has_payment = SPI_processed > 0;
	if (o->has_payment)
	{
		o->amount_minor = DatumGetInt64(pe_spi_getdatum(0, 1, &isnull));
		o->currency = TextDatumGetCString(pe_spi_getdatum(0, 2, &isnull));
	}
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
									st ? pe_outbox_scrub(st, 40) : "without a status");
			/* the money is still the customer's to get back: keep it visible */
			if (st == NULL || strcmp(st, "failed") == 0 || strcmp(st, "canceled") == 0)
			{
				o.cls = OUTCOME_DEAD;
				o.last_error = psprintf("Stripe did not refund a charge the payment does not keep (refund %s): return the money by hand",
										st ? pe_outbox_scrub(st, 40) : "without a status");
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
					int			attempt = key_attempt(item->idempotency_key);
					int			current = current_attempt(&item->payment_id);

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
				{
					Datum		args[3];
					char		nulls[3] = {' ', ' ', 'n'};

					args[0] = UUIDPGetDatum(&item->refund_id);
					args[1] = Int32GetDatum(PE_REFUND_FAILED);
					args[2] = (Datum) 0;
					outcome_exec(&refund_set_plan, args, nulls);
				}
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

	if (o.cls == OUTCOME_RETRY && item->http.replayed && o.http_status >= 500 &&
		(item->kind == OUTBOX_PI_CANCEL || item->kind == OUTBOX_REFUND_UNWANTED))
		outcome_rekey(item, &o);

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
