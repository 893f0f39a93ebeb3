/*-------------------------------------------------------------------------
 *
 * webhook_apply.c
 *		Apply one verified Stripe event to the payment tables, through the
 *		same triggers (state machine, refund rules, audit) as every other
 *		writer; and the digests that map Stripe ids to our rows.
 *
 * Which payment an event concerns: metadata.payment_id of the object (every
 * PaymentIntent and refund this extension creates carries it), else the
 * digest of the PaymentIntent, charge or refund id (payment.stripe_refs).
 *
 * Invariants:
 *	- Runs inside pe_handle_webhook's transaction, connected to SPI, as the
 *	  function's owner (SECURITY DEFINER).  Every write happens there, so an
 *	  event applies whole or not at all.
 *	- Nothing moves a payment backwards: an event that the state machine
 *	  would refuse is recorded as "ignored: ..." (or "conflict: ...", shown
 *	  by payment.reconcile) instead of raising, so Stripe is not made to
 *	  redeliver what can never apply.
 *	- Stripe ids are stored only sealed (or as a SHA-256 digest), and never
 *	  appear in an outcome, a message or a log line.
 *
 * IDENTIFICATION
 *		src/webhook_apply.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/evp.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/uuid.h"

#include "outbox.h"
#include "payment_ext.h"
#include "vault.h"
#include "webhook.h"

/* Longest "FailureCode" ("PaymentFailures"."FailureCode" is varchar(50)) */
#define APPLY_CODE_MAX			50

/* A payment row, locked */
typedef struct PaymentRow
{
	int			status;
	int64		amount_minor;
	char	   *currency;		/* upper case */
	bool		has_pi;
	pg_uuid_t	registration;
} PaymentRow;

/* ---------------------------------------------------------------------------
 * SPI plans (@S@: the schema of the spec's tables)
 * ---------------------------------------------------------------------------
 */
static PePlan lock_payment_plan = {
	"SELECT \"Status\", (\"AmountValue\" * 100)::bigint, \"Currency\","
	" \"EncryptedStripePaymentIntentId\" IS NOT NULL, \"EventRegistrationId\""
	" FROM @S@.\"Payments\" WHERE \"Id\" = $1 FOR NO KEY UPDATE",
	1, {UUIDOID}, NULL, 0
};
static PePlan ref_add_plan = {
	"INSERT INTO payment.stripe_refs (digest, object, payment_id, refund_id)"
	" VALUES ($1, $2, $3, $4) ON CONFLICT (digest) DO NOTHING",
	4, {BYTEAOID, TEXTOID, UUIDOID, UUIDOID}, NULL, 0
};
static PePlan ref_find_plan = {
	"SELECT payment_id, refund_id FROM payment.stripe_refs WHERE digest = $1",
	1, {BYTEAOID}, NULL, 0
};
static PePlan intent_report_plan = {
	"INSERT INTO payment.intents AS i (payment_id, stripe_status, next_action, source, reported_at)"
	" VALUES ($1, $2, $3, 'webhook', pg_catalog.now())"
	" ON CONFLICT (payment_id) DO UPDATE SET"
	" stripe_status = EXCLUDED.stripe_status, next_action = EXCLUDED.next_action,"
	" source = 'webhook', reported_at = pg_catalog.now(), updated_at = pg_catalog.now()"
	" WHERE i.stripe_status NOT IN ('succeeded', 'canceled')",
	3, {UUIDOID, TEXTOID, JSONBOID}, NULL, 0
};
/*
 * Stripe's amount refunded of the charge, from the newest charge.refunded
 * (by the event's created): one sent before a newer one, or before our
 * refund's failure was recorded (amount_reset_plan), changes nothing; two
 * of the same second keep the larger.
 */
static PePlan intent_refunded_plan = {
	"INSERT INTO payment.intents AS i (payment_id, stripe_status, source, reported_at, amount_refunded,"
	" amount_refunded_at)"
	" VALUES ($1, 'succeeded', 'webhook', pg_catalog.now(), $2, pg_catalog.to_timestamp($3))"
	" ON CONFLICT (payment_id) DO UPDATE SET amount_refunded = CASE"
	"   WHEN i.amount_refunded_at IS NULL OR EXCLUDED.amount_refunded_at > i.amount_refunded_at THEN $2"
	"   WHEN EXCLUDED.amount_refunded_at = i.amount_refunded_at THEN GREATEST(i.amount_refunded, $2)"
	"   ELSE i.amount_refunded END,"
	" amount_refunded_at = GREATEST(i.amount_refunded_at, EXCLUDED.amount_refunded_at),"
	" reported_at = pg_catalog.now(), updated_at = pg_catalog.now()",
	3, {UUIDOID, INT8OID, FLOAT8OID}, NULL, 0
};
/* the PaymentIntent that charged: the current attempt's (issue 17, item 2) */
static PePlan complete_plan = {
	"UPDATE @S@.\"Payments\" SET \"Status\" = 1, \"EncryptedStripePaymentIntentId\" = $2"
	" WHERE \"Id\" = $1 AND \"Status\" = 0",
	2, {UUIDOID, TEXTOID}, NULL, 0
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
static PePlan store_pi_plan = {
	"UPDATE @S@.\"Payments\" SET \"EncryptedStripePaymentIntentId\" = $2"
	" WHERE \"Id\" = $1 AND \"Status\" = 0 AND \"EncryptedStripePaymentIntentId\" IS NULL",
	2, {UUIDOID, TEXTOID}, NULL, 0
};
static PePlan fail_plan = {
	"UPDATE @S@.\"Payments\" SET \"Status\" = 2 WHERE \"Id\" = $1 AND \"Status\" = 0",
	1, {UUIDOID}, NULL, 0
};
static PePlan failure_insert_plan = {
	"INSERT INTO @S@.\"PaymentFailures\" (\"Id\", \"PaymentId\", \"FailureCode\","
	" \"FailureMessage\", \"EncryptedStripeErrorDetails\", \"RetryCount\")"
	" VALUES ($1, $2, $3, $4, $5, 0)",
	5, {UUIDOID, UUIDOID, TEXTOID, TEXTOID, TEXTOID}, NULL, 0
};
/* a mismatch already recorded since the payment last changed */
static PePlan mismatch_seen_plan = {
	"SELECT 1 FROM @S@.\"PaymentFailures\" f JOIN @S@.\"Payments\" p ON p.\"Id\" = f.\"PaymentId\""
	" WHERE f.\"PaymentId\" = $1 AND f.\"FailureCode\" = $2 AND f.\"CreatedAt\" >= p.\"UpdatedAt\"",
	2, {UUIDOID, TEXTOID}, NULL, 0
};
static PePlan refund_get_plan = {
	"SELECT \"RefundStatus\", \"OriginalPaymentId\" FROM @S@.\"PaymentRefunds\" WHERE \"Id\" = $1",
	1, {UUIDOID}, NULL, 0
};
static PePlan refund_set_plan = {
	"UPDATE @S@.\"PaymentRefunds\" SET \"RefundStatus\" = $2,"
	" \"EncryptedStripeRefundId\" = COALESCE(\"EncryptedStripeRefundId\", $3)"
	" WHERE \"Id\" = $1 AND \"RefundStatus\" = 0",
	3, {UUIDOID, INT4OID, TEXTOID}, NULL, 0
};
static PePlan refund_insert_plan = {
	"INSERT INTO @S@.\"PaymentRefunds\" (\"Id\", \"OriginalPaymentId\", \"RefundAmountValue\","
	" \"RefundCurrency\", \"RefundReason\", \"RefundStatus\", \"EncryptedStripeRefundId\","
	" \"ProcessedByUserId\", \"Metadata\")"
	" VALUES ($1, $2, ($3::numeric / 100)::numeric(10,2), pg_catalog.upper($4), $5, 0, $6, $7,"
	" pg_catalog.jsonb_build_object('source', 'stripe_dashboard', 'stripe_event', $8::text))",
	8, {UUIDOID, UUIDOID, INT8OID, TEXTOID, TEXTOID, TEXTOID, UUIDOID, TEXTOID}, NULL, 0
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
static PePlan user_exists_plan = {
	"SELECT 1 FROM ONLY @S@.\"Users\" WHERE \"Id\" OPERATOR(pg_catalog.=) $1",
	1, {UUIDOID}, NULL, 0
};
static PePlan dispute_upsert_plan = {
	"INSERT INTO payment.disputes AS d (id, digest, stripe_dispute_id, payment_id, amount,"
	" currency, reason, status, opened_at, closed_at)"
	" VALUES ($1, $2, $3, $4, ($5::numeric / 100)::numeric(10,2), pg_catalog.upper($6), $7, $8,"
	" pg_catalog.to_timestamp($9), CASE WHEN $10 THEN pg_catalog.now() END)"
	" ON CONFLICT (digest) DO UPDATE SET"
	" amount = EXCLUDED.amount, reason = EXCLUDED.reason,"
	" status = EXCLUDED.status, closed_at = COALESCE(d.closed_at, EXCLUDED.closed_at),"
	" updated_at = pg_catalog.now()"
	" WHERE d.status NOT IN ('won', 'lost', 'warning_closed')"
	"    OR EXCLUDED.status IN ('won', 'lost', 'warning_closed')",
	10, {UUIDOID, BYTEAOID, TEXTOID, UUIDOID, INT8OID, TEXTOID, TEXTOID, TEXTOID, FLOAT8OID, BOOLOID},
	NULL, 0
};

/* ---------------------------------------------------------------------------
 * JSON helpers
 * ---------------------------------------------------------------------------
 */

/* The text of key in object c (strings, numbers, booleans), or NULL. */
char *
pe_jb_text(JsonbContainer *c, const char *key)
{
	JsonbValue *v;

	if (c == NULL)
		return NULL;
	v = getKeyJsonValueFromContainer(c, key, strlen(key), NULL);
	if (v == NULL)
		return NULL;
	switch (v->type)
	{
		case jbvString:
			return pnstrdup(v->val.string.val, v->val.string.len);
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out,
													   NumericGetDatum(v->val.numeric)));
		case jbvBool:
			return pstrdup(v->val.boolean ? "true" : "false");
		default:
			return NULL;
	}
}

/* The container under key in c if it is of the wanted kind, or NULL. */
static JsonbContainer *
jb_container(JsonbContainer *c, const char *key, bool object)
{
	JsonbValue *v;

	if (c == NULL)
		return NULL;
	v = getKeyJsonValueFromContainer(c, key, strlen(key), NULL);
	if (v == NULL || v->type != jbvBinary)
		return NULL;
	if (object ? !JsonContainerIsObject(v->val.binary.data) :
		!JsonContainerIsArray(v->val.binary.data))
		return NULL;
	return v->val.binary.data;
}

/* The object under key in object c, or NULL. */
JsonbContainer *
pe_jb_object(JsonbContainer *c, const char *key)
{
	return jb_container(c, key, true);
}

/* The array under key in object c, or NULL. */
JsonbContainer *
pe_jb_array(JsonbContainer *c, const char *key)
{
	return jb_container(c, key, false);
}

/* An integer amount (minor units) under key, or -1. */
static int64
jb_amount(JsonbContainer *c, const char *key)
{
	char	   *s = pe_jb_text(c, key);

	if (s == NULL || s[0] == '\0' || strlen(s) > 15 || strspn(s, "0123456789") != strlen(s))
		return -1;
	return strtoll(s, NULL, 10);
}

/* Is s a Stripe object id (letters, digits, underscores, at most 255)? */
static bool
stripe_id_ok(const char *s)
{
	size_t		n;

	if (s == NULL)
		return false;
	n = strlen(s);
	return n > 3 && n <= 255 &&
		strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") == n;
}

bool
pe_pi_status_terminal(const char *status)
{
	return status != NULL &&
		(strcmp(status, "succeeded") == 0 || strcmp(status, "canceled") == 0);
}

static uint64 apply_exec(PePlan *p, Datum *args, const char *nulls);
static char *seal_for(const char *value, const char *table, const char *column,
					  const pg_uuid_t *id);

/* Minor units as "12.34" (two minor digits: the currencies of DESIGN). */
static char *
minor_text(int64 v)
{
	return psprintf("%s" INT64_FORMAT ".%02d", v < 0 ? "-" : "",
					(v < 0 ? -v : v) / 100, (int) ((v < 0 ? -v : v) % 100));
}

/*
 * pe_pi_mismatch
 *		Check that the PaymentIntent pi belongs to the payment and asks for
 *		its money: metadata.payment_id names payment_id, the currency is
 *		the payment's (any case), the amount is the payment's amount in
 *		minor units, and so is amount_received when it is succeeded.
 *		Returns NULL when it agrees, else the "FailureCode" of the first
 *		difference (metadata_mismatch, currency_mismatch, amount_mismatch)
 *		with *why saying what differs (amounts and currencies, never a
 *		Stripe id).  Used by the webhook appliers and the worker's outcomes
 *		alike, before a PaymentIntent completes a payment or is stored for
 *		it.
 */
const char *
pe_pi_mismatch(JsonbContainer *pi, const pg_uuid_t *payment_id,
			   int64 amount_minor, const char *currency, char **why)
{
	char	   *md_pid = pe_jb_text(pe_jb_object(pi, "metadata"), "payment_id");
	char	   *cur = pe_jb_text(pi, "currency");
	char	   *status = pe_jb_text(pi, "status");
	int64		amount = jb_amount(pi, "amount");
	int64		received = jb_amount(pi, "amount_received");
	pg_uuid_t	u;

	if (md_pid == NULL || !pe_parse_uuid(md_pid, &u) ||
		memcmp(u.data, payment_id->data, UUID_LEN) != 0)
	{
		*why = pstrdup(md_pid == NULL ?
					   "the PaymentIntent has no metadata[payment_id]" :
					   "the PaymentIntent's metadata[payment_id] names another payment");
		return "metadata_mismatch";
	}
	if (cur == NULL || pg_strcasecmp(cur, currency) != 0)
	{
		*why = psprintf("the PaymentIntent is in %s, the payment in %s",
						cur ? pe_outbox_scrub(cur, 8) : "no currency", currency);
		return "currency_mismatch";
	}
	if (amount != amount_minor)
	{
		*why = psprintf("the PaymentIntent is for %s, the payment for %s %s",
						amount < 0 ? "no amount" : minor_text(amount),
						minor_text(amount_minor), currency);
		return "amount_mismatch";
	}
	if (status != NULL && strcmp(status, "succeeded") == 0 && received >= 0 &&
		received != amount_minor)
	{
		*why = psprintf("Stripe received %s, the payment is for %s %s",
						minor_text(received), minor_text(amount_minor), currency);
		return "amount_mismatch";
	}
	return NULL;
}

/*
 * pe_pi_mismatch_record
 *		Record that a PaymentIntent disagreed with payment_id (code and why
 *		from pe_pi_mismatch; source: webhook, response or lookup): a
 *		"PaymentFailures" row, which payment.reconcile shows until the
 *		payment changes; once only while the payment does not change (the
 *		settler's repeated lookups find the same PaymentIntent).  The
 *		payment itself is left as it is.  Caller: in a transaction,
 *		connected to SPI, holding the payment's row lock.
 */
void
pe_pi_mismatch_record(const pg_uuid_t *payment_id, const char *code,
					  const char *why, const char *source)
{
	Datum		fid;
	StringInfoData details;
	Datum		args[5];

	args[0] = UUIDPGetDatum(payment_id);
	args[1] = CStringGetTextDatum(code);
	if (SPI_execute_plan(pe_plan(&mismatch_seen_plan), args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "looking up recorded mismatches failed");
	if (SPI_processed > 0)
		return;
	fid = DirectFunctionCall1(gen_random_uuid, (Datum) 0);

	initStringInfo(&details);
	appendStringInfoString(&details, "{\"source\": ");
	escape_json(&details, source);
	appendStringInfoString(&details, ", \"code\": ");
	escape_json(&details, code);
	appendStringInfoChar(&details, '}');

	args[0] = fid;
	args[1] = UUIDPGetDatum(payment_id);
	args[2] = CStringGetTextDatum(code);
	args[3] = CStringGetTextDatum(psprintf("Stripe's PaymentIntent does not match the payment (%s): %s; the payment was not completed from it",
										   source, why));
	args[4] = CStringGetTextDatum(seal_for(details.data, "PaymentFailures",
										   "EncryptedStripeErrorDetails", DatumGetUUIDP(fid)));
	apply_exec(&failure_insert_plan, args, NULL);
}

/* ---------------------------------------------------------------------------
 * Stripe ids by digest
 * ---------------------------------------------------------------------------
 */

/* SHA-256 of a Stripe id, as a bytea. */
static Datum
stripe_digest(const char *id)
{
	bytea	   *b = palloc(VARHDRSZ + 32);
	unsigned int len = 0;

	if (EVP_Digest(id, strlen(id), (unsigned char *) VARDATA(b), &len, EVP_sha256(), NULL) != 1 ||
		len != 32)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not compute a SHA-256 digest")));
	SET_VARSIZE(b, VARHDRSZ + 32);
	return PointerGetDatum(b);
}

/* See webhook.h. */
void
pe_stripe_ref_add(const char *stripe_id, const char *object,
				  const pg_uuid_t *payment_id, const pg_uuid_t *refund_id)
{
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	int			rc;

	if (!stripe_id_ok(stripe_id))
		return;
	args[0] = stripe_digest(stripe_id);
	args[1] = CStringGetTextDatum(object);
	args[2] = UUIDPGetDatum(payment_id);
	if (refund_id != NULL)
		args[3] = UUIDPGetDatum(refund_id);
	else
		nulls[3] = 'n';
	rc = SPI_execute_plan(pe_plan(&ref_add_plan), args, nulls, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "recording a Stripe reference failed: %s", SPI_result_code_string(rc));
}

/* See webhook.h. */
bool
pe_stripe_ref_find(const char *stripe_id, pg_uuid_t *payment_id,
				   pg_uuid_t *refund_id, bool *has_refund)
{
	Datum		arg;
	bool		isnull;
	Datum		d;
	int			rc;

	if (!stripe_id_ok(stripe_id))
		return false;
	arg = stripe_digest(stripe_id);
	rc = SPI_execute_plan(pe_plan(&ref_find_plan), &arg, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "looking up a Stripe reference failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		return false;
	memcpy(payment_id, DatumGetUUIDP(pe_spi_getdatum(0, 1, &isnull)), UUID_LEN);
	d = pe_spi_getdatum(0, 2, &isnull);
	if (has_refund)
		*has_refund = !isnull;
	if (!isnull && refund_id != NULL)
		memcpy(refund_id, DatumGetUUIDP(d), UUID_LEN);
	return true;
}

/* ---------------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------------
 */

static uint64
apply_exec(PePlan *p, Datum *args, const char *nulls)
{
	int			rc = SPI_execute_plan(pe_plan(p), args, nulls, false, 0);

	if (rc < 0)
		elog(ERROR, "applying a webhook event failed: %s", SPI_result_code_string(rc));
	return SPI_processed;
}

static char *
uuid_str(const pg_uuid_t *u)
{
	return DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(u)));
}

/* The sealed form of a Stripe id for column table.column of row id. */
static char *
seal_for(const char *value, const char *table, const char *column, const pg_uuid_t *id)
{
	return pe_seal(value, pe_vault_context(table, column, uuid_str(id)));
}

/* Lock payment id and read it into *row; false when there is none. */
static bool
payment_lock(const pg_uuid_t *id, PaymentRow *row)
{
	Datum		arg = UUIDPGetDatum(id);
	bool		isnull;
	int			rc;

	rc = SPI_execute_plan(pe_plan(&lock_payment_plan), &arg, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "locking a payment failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		return false;
	row->status = DatumGetInt32(pe_spi_getdatum(0, 1, &isnull));
	row->amount_minor = DatumGetInt64(pe_spi_getdatum(0, 2, &isnull));
	row->currency = TextDatumGetCString(pe_spi_getdatum(0, 3, &isnull));
	row->has_pi = DatumGetBool(pe_spi_getdatum(0, 4, &isnull));
	memcpy(&row->registration, DatumGetUUIDP(pe_spi_getdatum(0, 5, &isnull)), UUID_LEN);
	return true;
}

/*
 * Find and lock the payment an object concerns: its metadata.payment_id,
 * else the digest of one of the given Stripe ids.  Sets ev->payment_id.
 */
static bool
payment_find(WebhookEvent *ev, JsonbContainer *obj, const char *id1,
			 const char *id2, PaymentRow *row)
{
	JsonbContainer *md = pe_jb_object(obj, "metadata");
	char	   *pid = pe_jb_text(md, "payment_id");
	pg_uuid_t	u;

	if (pid != NULL && pe_parse_uuid(pid, &u) && payment_lock(&u, row))
	{
		ev->payment_id = u;
		ev->has_payment = true;
		return true;
	}
	if ((pe_stripe_ref_find(id1, &u, NULL, NULL) || pe_stripe_ref_find(id2, &u, NULL, NULL)) &&
		payment_lock(&u, row))
	{
		ev->payment_id = u;
		ev->has_payment = true;
		return true;
	}
	return false;
}

/* Record the latest PaymentIntent status Stripe reported. */
static void
intent_report(const pg_uuid_t *payment_id, const char *status, JsonbContainer *pi)
{
	Datum		args[3];
	char		nulls[3] = {' ', ' ', ' '};
	JsonbContainer *next = pe_jb_object(pi, "next_action");

	args[0] = UUIDPGetDatum(payment_id);
	args[1] = CStringGetTextDatum(status);
	if (next != NULL)
	{
		StringInfoData na;
		char	   *type = pe_jb_text(next, "type");

		initStringInfo(&na);
		appendStringInfoString(&na, "{\"type\": ");
		if (type)
			escape_json(&na, type);
		else
			appendStringInfoString(&na, "null");
		appendStringInfoChar(&na, '}');
		args[2] = DirectFunctionCall1(jsonb_in, CStringGetDatum(na.data));
	}
	else
		nulls[2] = 'n';
	apply_exec(&intent_report_plan, args, nulls);
}

/* A "PaymentFailures" row for payment id, then Failed.  False if not Pending. */
static bool
payment_fail(const pg_uuid_t *id, const char *code, const char *message,
			 const char *type, const char *decline, const char *event_id)
{
	Datum		fid;
	Datum		args[5];
	StringInfoData details;

	args[0] = UUIDPGetDatum(id);
	if (apply_exec(&fail_plan, args, NULL) == 0)
		return false;

	fid = DirectFunctionCall1(gen_random_uuid, (Datum) 0);
	initStringInfo(&details);
	appendStringInfoString(&details, "{\"source\": \"webhook\", \"event\": ");
	escape_json(&details, event_id);
	appendStringInfoString(&details, ", \"type\": ");
	if (type)
		escape_json(&details, type);
	else
		appendStringInfoString(&details, "null");
	appendStringInfoString(&details, ", \"code\": ");
	escape_json(&details, code);
	appendStringInfoString(&details, ", \"decline_code\": ");
	if (decline)
		escape_json(&details, decline);
	else
		appendStringInfoString(&details, "null");
	appendStringInfoChar(&details, '}');

	args[0] = fid;
	args[1] = UUIDPGetDatum(id);
	args[2] = CStringGetTextDatum(pe_clip_chars(code, APPLY_CODE_MAX));
	args[3] = CStringGetTextDatum(message);
	args[4] = CStringGetTextDatum(seal_for(details.data, "PaymentFailures",
										   "EncryptedStripeErrorDetails", DatumGetUUIDP(fid)));
	apply_exec(&failure_insert_plan, args, NULL);
	return true;
}

/* ---------------------------------------------------------------------------
 * payment_intent.*
 * ---------------------------------------------------------------------------
 */
static void
apply_payment_intent(WebhookEvent *ev)
{
	JsonbContainer *pi = ev->object;
	char	   *pi_id = pe_jb_text(pi, "id");
	char	   *status = pe_jb_text(pi, "status");
	char	   *charge = pe_jb_text(pi, "latest_charge");
	const char *what = ev->type + strlen("payment_intent.");
	PaymentRow	row;
	const char *from;
	Datum		args[2];

	ev->object_status = status;
	if (!stripe_id_ok(pi_id) || status == NULL)
	{
		ev->outcome = "ignored: the event holds no PaymentIntent";
		return;
	}
	if (!payment_find(ev, pi, pi_id, NULL, &row))
	{
		ev->outcome = "ignored: no payment for this PaymentIntent";
		return;
	}
	from = pe_payment_status_name(row.status);
	pe_stripe_ref_add(pi_id, "payment_intent", &ev->payment_id, NULL);
	pe_stripe_ref_add(charge, "charge", &ev->payment_id, NULL);
	if (row.status == PE_PAYMENT_NOT_REQUIRED)
	{
		ev->outcome = "ignored: the payment is NotRequired";
		return;
	}
	if (!pe_intent_is_current(&ev->payment_id, pi_id, pe_intent_attempt(pi), NULL))
	{
		/* an earlier attempt's: never the payment's state (issue 17, item 2) */
		const char *done = pe_outbox_undo_intent(&ev->payment_id, pi_id, status,
												 "a PaymentIntent of an earlier attempt");

		ev->applied = strcmp(status, "succeeded") == 0;
		ev->outcome = psprintf("ignored: a PaymentIntent of an earlier attempt of the payment (%s); %s",
							   pe_outbox_scrub(status, 40), done);
		return;
	}
	/*
	 * A success for a Failed payment is reported below, once it is known
	 * that the payment keeps the charge: one it does not keep (refunded as
	 * refund.unwanted) is not the payment's state at Stripe.
	 */
	if (strcmp(what, "succeeded") != 0 || row.status != PE_PAYMENT_FAILED)
		intent_report(&ev->payment_id, status, pi);
	args[0] = UUIDPGetDatum(&ev->payment_id);
	args[1] = CStringGetTextDatum(seal_for(pi_id, "Payments", "EncryptedStripePaymentIntentId",
										   &ev->payment_id));

	if (strcmp(what, "succeeded") == 0)
	{
		char	   *why;
		const char *mismatch = pe_pi_mismatch(pi, &ev->payment_id, row.amount_minor,
											  row.currency, &why);

		if (mismatch != NULL)
		{
			if (row.status == PE_PAYMENT_FAILED)
				intent_report(&ev->payment_id, status, pi);
			pe_pi_mismatch_record(&ev->payment_id, mismatch, why, "webhook");
			ev->outcome = psprintf("conflict: %s; the payment stays %s (see payment.reconcile)",
								   why, from);
			return;
		}
		switch (row.status)
		{
			case PE_PAYMENT_PENDING:
				apply_exec(&complete_plan, args, NULL);
				ev->applied = true;
				ev->outcome = "applied: Pending -> Completed";
				break;
			case PE_PAYMENT_FAILED:
				{
					Datum		a2[2];

					/*
					 * The customer paid after a failed attempt (Stripe.js can
					 * confirm the same PaymentIntent again): Failed -> Pending
					 * -> Completed, both allowed moves, unless the
					 * registration has another live payment by now.
					 */
					a2[0] = UUIDPGetDatum(&row.registration);
					a2[1] = UUIDPGetDatum(&ev->payment_id);
					if (SPI_execute_plan(pe_plan(&other_live_plan), a2, NULL, true, 1) != SPI_OK_SELECT)
						elog(ERROR, "looking up live payments failed");
					if (SPI_processed > 0)
					{
						/* never two charges for one registration (issue 17, item 1) */
						ev->outcome = psprintf("conflict: Stripe charged a Failed payment whose registration has another live payment; %s",
											   pe_outbox_undo_intent(&ev->payment_id, pi_id, status,
																	 "its registration has another live payment"));
						ev->applied = true;
						return;
					}
					intent_report(&ev->payment_id, status, pi);
					apply_exec(&reopen_plan, args, NULL);
					apply_exec(&complete_plan, args, NULL);
					ev->applied = true;
					ev->outcome = "applied: Failed -> Pending -> Completed (charged after a failed attempt)";
				}
				break;
			default:
				ev->outcome = psprintf("no change: the payment is already %s", from);
				break;
		}
	}
	else if (strcmp(what, "payment_failed") == 0 || strcmp(what, "canceled") == 0)
	{
		bool		canceled = (strcmp(what, "canceled") == 0);
		JsonbContainer *err = pe_jb_object(pi, "last_payment_error");
		char	   *code;
		char	   *message;
		char	   *decline = pe_jb_text(err, "decline_code");
		char	   *ecode = pe_jb_text(err, "code");

		if (row.status != PE_PAYMENT_PENDING)
		{
			ev->outcome = psprintf("ignored: the payment is %s; a %s never moves it backwards",
								   from, canceled ? "cancellation" : "failure");
			return;
		}
		if (canceled)
		{
			char	   *reason = pe_jb_text(pi, "cancellation_reason");

			code = (reason != NULL && (strcmp(reason, "abandoned") == 0 ||
									   strcmp(reason, "expired") == 0 ||
									   strcmp(reason, "automatic") == 0)) ? "expired" : "canceled";
			message = psprintf("PaymentIntent canceled (%s)",
							   reason ? pe_outbox_scrub(reason, 60) : "no reason");
		}
		else
		{
			char	   *msg = pe_jb_text(err, "message");

			code = decline ? decline : ecode ? ecode : "payment_failed";
			message = msg && msg[0] ? pe_outbox_scrub(msg, 500) : pstrdup("payment failed");
		}
		payment_fail(&ev->payment_id, code, message, pe_jb_text(err, "type"), decline, ev->id);
		if (!row.has_pi)
			apply_exec(&store_pi_plan, args, NULL);
		ev->applied = true;
		ev->outcome = psprintf("applied: Pending -> Failed (%s)", pe_clip_chars(code, APPLY_CODE_MAX));
	}
	else
	{
		/* requires_action, processing, created, ...: the payment stays Pending */
		if (row.status == PE_PAYMENT_PENDING && !row.has_pi &&
			apply_exec(&store_pi_plan, args, NULL) > 0)
			ev->applied = true;
		ev->outcome = psprintf("recorded: PaymentIntent %s; the payment stays %s",
							   pe_outbox_scrub(status, 40), from);
	}
}

/* ---------------------------------------------------------------------------
 * refunds
 * ---------------------------------------------------------------------------
 */

/* The user that Dashboard refunds are processed by. */
static Datum
webhook_system_user(void)
{
	pg_uuid_t  *u = palloc(sizeof(pg_uuid_t));
	const char *id = (pe_system_user_id && pe_system_user_id[0]) ? pe_system_user_id : PE_SYSTEM_USER_ID;
	Datum		arg;

	if (!pe_parse_uuid(id, u))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("payment_ext.system_user_id is not a uuid")));
	arg = UUIDPGetDatum(u);
	pe_check_app_table(pe_extension_namespace(), "Users");
	if (SPI_execute_plan(pe_plan(&user_exists_plan), &arg, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "looking up the system user failed");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the user that records refunds made in Stripe's Dashboard does not exist"),
				 errhint("Set payment_ext.system_user_id to a user of \"Users\"; Stripe delivers the event again.")));
	return arg;
}

/* Apply one Stripe refund object; returns what it did. */
static char *
apply_refund_object(WebhookEvent *ev, JsonbContainer *re)
{
	char	   *re_id = pe_jb_text(re, "id");
	char	   *status = pe_jb_text(re, "status");
	char	   *pi_id = pe_jb_text(re, "payment_intent");
	char	   *charge = pe_jb_text(re, "charge");
	JsonbContainer *md = pe_jb_object(re, "metadata");
	char	   *rid_text = pe_jb_text(md, "refund_id");
	int			target = pe_refund_status_from_stripe(status);
	pg_uuid_t	rid;
	bool		have = false;
	Datum		args[8];
	bool		isnull;
	int			cur = -1;
	PaymentRow	row;

	ev->object_status = status;
	if (!stripe_id_ok(re_id) || target < 0)
		return "ignored: the event holds no refund with a known status";

	if (rid_text != NULL && pe_parse_uuid(rid_text, &rid))
	{
		args[0] = UUIDPGetDatum(&rid);
		if (SPI_execute_plan(pe_plan(&refund_get_plan), args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "looking up a refund failed");
		have = SPI_processed > 0;
	}
	if (!have)
	{
		pg_uuid_t	pay;
		bool		has_refund = false;

		if (pe_stripe_ref_find(re_id, &pay, &rid, &has_refund) && has_refund)
		{
			args[0] = UUIDPGetDatum(&rid);
			if (SPI_execute_plan(pe_plan(&refund_get_plan), args, NULL, false, 1) != SPI_OK_SELECT)
				elog(ERROR, "looking up a refund failed");
			have = SPI_processed > 0;
		}
	}

	if (have)
	{
		const char *from;
		const char *to = pe_refund_status_name(target);

		cur = DatumGetInt32(pe_spi_getdatum(0, 1, &isnull));
		memcpy(&ev->payment_id, DatumGetUUIDP(pe_spi_getdatum(0, 2, &isnull)), UUID_LEN);
		ev->has_payment = true;
		ev->refund_id = rid;
		ev->has_refund = true;
		from = pe_refund_status_name(cur);
		payment_lock(&ev->payment_id, &row);
		pe_stripe_ref_add(re_id, "refund", &ev->payment_id, &rid);

		args[0] = UUIDPGetDatum(&rid);
		args[1] = CStringGetTextDatum(status);
		args[2] = CStringGetTextDatum("webhook");
		apply_exec(&refund_state_plan, args, NULL);
		apply_exec(&amount_reset_plan, args, NULL);

		args[1] = Int32GetDatum(target);
		args[2] = CStringGetTextDatum(seal_for(re_id, "PaymentRefunds", "EncryptedStripeRefundId", &rid));
		if (cur == PE_REFUND_PROCESSING)
		{
			if (apply_exec(&refund_set_plan, args, NULL) > 0)
				ev->applied = true;
			if (target == PE_REFUND_PROCESSING)
				return "no change: the refund stays Processing";
			return psprintf("applied: refund Processing -> %s", to);
		}
		if (cur == target)
			return psprintf("no change: the refund is already %s", from);
		return psprintf("ignored: the refund is %s and Stripe now says %s; a refund moves only once (see payment.reconcile)",
						from, pe_outbox_scrub(status, 40));
	}

	/* a refund we never asked for: made in Stripe's Dashboard */
	if (!payment_find(ev, re, pi_id, charge, &row))
		return "ignored: no payment for this refund";

	/*
	 * ... unless it refunds a charge the payment does not keep: the worker's
	 * refund.unwanted (metadata[unwanted]), or any refund of a PaymentIntent
	 * that is not the payment's current one.  Recording it as a refund of
	 * the payment would free the payment's amount while the charge it keeps
	 * stays paid (then a second payment for the registration is let in).
	 * One that Stripe failed leaves that charge paid: the refund.unwanted
	 * request becomes a dead letter, for an administrator.
	 */
	{
		char	   *unwanted = pe_jb_text(md, "unwanted");

		if ((unwanted != NULL && strcmp(unwanted, "true") == 0) ||
			(pi_id != NULL && !pe_intent_is_current(&ev->payment_id, pi_id, 0, NULL)))
		{
			pe_stripe_ref_add(re_id, "refund", &ev->payment_id, NULL);
			if (target == PE_REFUND_FAILED)
				return pstrdup(pe_outbox_unwanted_refund_failed(&ev->payment_id, pi_id,
																pe_jb_text(re, "failure_reason")));
			return psprintf("ignored: a refund (%s) of a charge the payment does not keep (refund.unwanted, or an earlier attempt's); it is no refund of the payment",
							pe_outbox_scrub(status, 40));
		}
	}
	if (row.status == PE_PAYMENT_PENDING)
	{
		/*
		 * The refund overtook the payment's own success: raise, so that
		 * Stripe delivers it again after the payment has completed.
		 */
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("a refund event arrived for a payment that is still Pending"),
				 errdetail("The event is not recorded; Stripe delivers it again.")));
	}
	if (row.status != PE_PAYMENT_COMPLETED && row.status != PE_PAYMENT_PARTIALLY_REFUNDED &&
		row.status != PE_PAYMENT_REFUNDED)
		return psprintf("conflict: a refund made at Stripe for a %s payment (see payment.reconcile)",
						pe_payment_status_name(row.status));
	if (row.status == PE_PAYMENT_REFUNDED && target != PE_REFUND_FAILED)
		return "conflict: a refund made at Stripe for a payment the database has fully refunded";

	{
		int64		amount = jb_amount(re, "amount");
		char	   *currency = pe_jb_text(re, "currency");
		char	   *reason = pe_jb_text(re, "reason");
		Datum		id = DirectFunctionCall1(gen_random_uuid, (Datum) 0);

		if (amount <= 0 || currency == NULL || pg_strcasecmp(currency, row.currency) != 0)
			return "conflict: a refund made at Stripe in another currency or without an amount";
		memcpy(&rid, DatumGetUUIDP(id), UUID_LEN);
		args[0] = id;
		args[1] = UUIDPGetDatum(&ev->payment_id);
		args[2] = Int64GetDatum(amount);
		args[3] = CStringGetTextDatum(currency);
		args[4] = CStringGetTextDatum(reason && (strcmp(reason, "duplicate") == 0 ||
												 strcmp(reason, "fraudulent") == 0 ||
												 strcmp(reason, "requested_by_customer") == 0) ?
									  psprintf("Refund made in the Stripe Dashboard (%s)", reason) :
									  "Refund made in the Stripe Dashboard");
		args[5] = CStringGetTextDatum(seal_for(re_id, "PaymentRefunds", "EncryptedStripeRefundId", &rid));
		args[6] = webhook_system_user();
		args[7] = CStringGetTextDatum(ev->id);
		apply_exec(&refund_insert_plan, args, NULL);
		ev->refund_id = rid;
		ev->has_refund = true;
		ev->applied = true;
		pe_stripe_ref_add(re_id, "refund", &ev->payment_id, &rid);

		args[0] = UUIDPGetDatum(&rid);
		args[1] = CStringGetTextDatum(status);
		args[2] = CStringGetTextDatum("webhook");
		apply_exec(&refund_state_plan, args, NULL);
		apply_exec(&amount_reset_plan, args, NULL);
		if (target != PE_REFUND_PROCESSING)
		{
			args[1] = Int32GetDatum(target);
			args[2] = CStringGetTextDatum(seal_for(re_id, "PaymentRefunds", "EncryptedStripeRefundId", &rid));
			apply_exec(&refund_set_plan, args, NULL);
		}
		return psprintf("applied: a refund made at Stripe recorded as %s",
						pe_refund_status_name(target));
	}
}

static void
apply_refund(WebhookEvent *ev)
{
	ev->outcome = apply_refund_object(ev, ev->object);
}

/* charge.refunded: the amount refunded, and any refunds listed with it */
static void
apply_charge_refunded(WebhookEvent *ev)
{
	JsonbContainer *ch = ev->object;
	char	   *ch_id = pe_jb_text(ch, "id");
	char	   *pi_id = pe_jb_text(ch, "payment_intent");
	int64		refunded = jb_amount(ch, "amount_refunded");
	JsonbContainer *refunds = pe_jb_object(ch, "refunds");
	JsonbContainer *list = pe_jb_array(refunds, "data");
	PaymentRow	row;
	StringInfoData out;

	ev->object_status = pe_jb_text(ch, "status");
	if (!payment_find(ev, ch, pi_id, ch_id, &row))
	{
		ev->outcome = "ignored: no payment for this charge";
		return;
	}
	pe_stripe_ref_add(ch_id, "charge", &ev->payment_id, NULL);
	pe_stripe_ref_add(pi_id, "payment_intent", &ev->payment_id, NULL);
	initStringInfo(&out);

	/*
	 * Stripe's amount refunded is compared with the payment's refunds
	 * (payment.reconcile): only for the charge the payment keeps.  One it
	 * does not keep (a Failed payment's, an earlier attempt's) is refunded
	 * whole as refund.unwanted, which is no "PaymentRefunds" row.
	 */
	if (refunded >= 0 &&
		!((row.status == PE_PAYMENT_COMPLETED || row.status == PE_PAYMENT_PARTIALLY_REFUNDED ||
		   row.status == PE_PAYMENT_REFUNDED) &&
		  pe_intent_is_current(&ev->payment_id, pi_id, 0, NULL)))
		appendStringInfo(&out, "ignored: Stripe reports " INT64_FORMAT ".%02d refunded of a charge the payment does not keep (it is %s)",
						 refunded / 100, (int) (refunded % 100), pe_payment_status_name(row.status));
	else if (refunded >= 0)
	{
		Datum		a3[3];
		char		n3[3] = {' ', ' ', ev->created < 0 ? 'n' : ' '};

		a3[0] = UUIDPGetDatum(&ev->payment_id);
		a3[1] = Int64GetDatum(refunded);
		a3[2] = Float8GetDatum(ev->created);
		apply_exec(&intent_refunded_plan, a3, n3);
		appendStringInfo(&out, "recorded: Stripe reports " INT64_FORMAT ".%02d refunded",
						 refunded / 100, (int) (refunded % 100));
	}
	else
		appendStringInfoString(&out, "recorded: no amount refunded in the event");

	/* API versions before 2022-11-15 list the refunds on the charge */
	if (list != NULL)
	{
		JsonbIterator *it = JsonbIteratorInit(list);
		JsonbValue	v;
		JsonbIteratorToken tok;
		pg_uuid_t	pay = ev->payment_id;

		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			if (tok == WJB_ELEM && v.type == jbvBinary && JsonContainerIsObject(v.val.binary.data))
				appendStringInfo(&out, "; %s", apply_refund_object(ev, v.val.binary.data));
		}
		ev->payment_id = pay;
		ev->has_payment = true;
		ev->has_refund = false;
	}
	ev->outcome = out.data;
}

/* ---------------------------------------------------------------------------
 * disputes
 * ---------------------------------------------------------------------------
 */
static void
apply_dispute(WebhookEvent *ev)
{
	JsonbContainer *dp = ev->object;
	char	   *dp_id = pe_jb_text(dp, "id");
	char	   *status = pe_jb_text(dp, "status");
	char	   *pi_id = pe_jb_text(dp, "payment_intent");
	char	   *charge = pe_jb_text(dp, "charge");
	char	   *currency = pe_jb_text(dp, "currency");
	char	   *reason = pe_jb_text(dp, "reason");
	char	   *created = pe_jb_text(dp, "created");
	int64		amount = jb_amount(dp, "amount");
	PaymentRow	row;
	Datum		id = DirectFunctionCall1(gen_random_uuid, (Datum) 0);
	Datum		args[10];
	char		nulls[10] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool		closed = (strcmp(ev->type, "charge.dispute.closed") == 0);

	ev->object_status = status;
	if (!stripe_id_ok(dp_id) || status == NULL || amount < 0 || currency == NULL ||
		strlen(currency) != 3)
	{
		ev->outcome = "ignored: the event holds no dispute";
		return;
	}
	/* a dispute object has no metadata: find its payment by its ids */
	if (!payment_find(ev, NULL, pi_id, charge, &row))
	{
		ev->outcome = "ignored: no payment for this dispute";
		return;
	}
	args[0] = id;
	args[1] = stripe_digest(dp_id);
	args[2] = CStringGetTextDatum(pe_seal(dp_id, psprintf("payment.disputes.stripe_dispute_id:%s",
														  uuid_str(DatumGetUUIDP(id)))));
	args[3] = UUIDPGetDatum(&ev->payment_id);
	args[4] = Int64GetDatum(amount);
	args[5] = CStringGetTextDatum(currency);
	if (reason)
		args[6] = CStringGetTextDatum(pe_clip_chars(reason, 100));
	else
		nulls[6] = 'n';
	args[7] = CStringGetTextDatum(pe_clip_chars(status, 100));
	if (created && strspn(created, "0123456789") == strlen(created) && strlen(created) < 12 && created[0])
		args[8] = Float8GetDatum(strtod(created, NULL));
	else
		nulls[8] = 'n';
	args[9] = BoolGetDatum(closed || strcmp(status, "won") == 0 || strcmp(status, "lost") == 0);
	if (apply_exec(&dispute_upsert_plan, args, nulls) > 0)
	{
		ev->applied = true;
		ev->outcome = psprintf("applied: dispute %s", pe_outbox_scrub(status, 40));
	}
	else
		ev->outcome = "ignored: the dispute is already closed; an older state never replaces it";
	pe_stripe_ref_add(dp_id, "dispute", &ev->payment_id, NULL);
}

/* ---------------------------------------------------------------------------
 * Dispatch
 * ---------------------------------------------------------------------------
 */

/* See webhook.h. */
void
pe_webhook_apply(WebhookEvent *ev)
{
	const char *t = ev->type;

	if (ev->object == NULL)
	{
		ev->outcome = "ignored: the event has no data.object";
		return;
	}
	if (strncmp(t, "payment_intent.", 15) == 0)
		apply_payment_intent(ev);
	else if (strcmp(t, "refund.created") == 0 || strcmp(t, "refund.updated") == 0 ||
			 strcmp(t, "refund.failed") == 0 || strcmp(t, "charge.refund.updated") == 0)
		apply_refund(ev);
	else if (strcmp(t, "charge.refunded") == 0)
		apply_charge_refunded(ev);
	else if (strncmp(t, "charge.dispute.", 15) == 0)
		apply_dispute(ev);
	else
		ev->outcome = "ignored: event type not handled";
}
