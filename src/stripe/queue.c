/*-------------------------------------------------------------------------
 *
 * queue.c
 *		The outbox, where every request to Stripe starts (the transactional
 *		outbox): requests queued, sealed for their idempotency key,
 *		withdrawn when their payment no longer wants them, and the undoing
 *		of a PaymentIntent a payment does not keep; and the attempts of a
 *		payment (payment.retry makes a new one, with a new PaymentIntent).
 *
 * Invariants:
 *	- A request is queued in the transaction of the change that needs it:
 *	  it exists if and only if that change commits.
 *	- A Stripe id in a request is stored only sealed, under the context of
 *	  its parameter and the row's idempotency key (pe_outbox_context).
 *	- Callers are in a transaction, connected to SPI, and hold the row
 *	  lock of the payment they queue for (README, "Lock order").
 *
 * IDENTIFICATION
 *		src/stripe/queue.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "base/spi.h"
#include "base/text.h"
#include "stripe/stripe.h"
#include "vault/vault.h"

/* ---------------------------------------------------------------------------
 * SPI plans (@S@: the schema of the spec's tables)
 * ---------------------------------------------------------------------------
 */
static PePlan outbox_insert_plan = {
	"INSERT INTO payment.outbox (kind, payment_id, refund_id, request, idempotency_key)"
	" VALUES ($1, $2, $3, $4, $5)",
	5, {TEXTOID, UUIDOID, UUIDOID, JSONBOID, TEXTOID}, NULL, 0
};

/*
 * Issue 17, items 1 and 2: withdrawing requests that are no longer wanted
 * (see stripe.h).  A create is no longer wanted when its payment is not
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
		/* attempted: a probe that can never charge (stripe.h) */
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
/* ---------------------------------------------------------------------------
 * Queueing
 * ---------------------------------------------------------------------------
 */

/* See stripe.h. */
void
pe_outbox_enqueue(const char *kind, const pg_uuid_t *payment_id, const pg_uuid_t *refund_id,
				  const char *request, const char *idempotency_key)
{
	Datum		args[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	int			rc;

	args[0] = CStringGetTextDatum(kind);
	args[1] = UUIDPGetDatum(payment_id);
	if (refund_id != NULL)
		args[2] = UUIDPGetDatum(refund_id);
	else
	{
		args[2] = (Datum) 0;
		nulls[2] = 'n';
	}
	args[3] = DirectFunctionCall1(jsonb_in, CStringGetDatum(request));
	args[4] = CStringGetTextDatum(idempotency_key);
	rc = SPI_execute_plan(pe_plan(&outbox_insert_plan), args, nulls, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "inserting the outbox row failed: %s", SPI_result_code_string(rc));
}

/* See stripe.h. */
char *
pe_outbox_context(const char *param, const char *idempotency_key)
{
	return pe_vault_context("outbox", psprintf("request.%s", param), idempotency_key);
}

/*
 * pe_reseal_request
 *		A copy of an outbox request (JSON text) whose sealed values, bound to
 *		old_key, are sealed again for new_key; the opened values are wiped.
 *		Used by payment.retry, by the settler when it sends a refund that
 *		never reached Stripe again under a new key, and when a cancellation
 *		comes too late and its PaymentIntent is looked up instead.
 */
char *
pe_reseal_request(const char *request, const char *old_key, const char *new_key)
{
	Jsonb	   *jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(request)));
	JsonbIterator *it = JsonbIteratorInit(&jb->root);
	JsonbValue	v;
	JsonbIteratorToken tok;
	StringInfoData out;
	char	   *key = NULL;

	initStringInfo(&out);
	appendStringInfoChar(&out, '{');
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
			key = pnstrdup(v.val.string.val, v.val.string.len);
		else if (tok == WJB_VALUE && key != NULL)
		{
			char	   *value;

			if (v.type != jbvString)
				elog(ERROR, "outbox request parameter \"%s\" is not a string", key);
			value = pnstrdup(v.val.string.val, v.val.string.len);
			if (strncmp(value, PE_SEALED_PREFIX, strlen(PE_SEALED_PREFIX)) == 0)
			{
				char	   *plain = pe_open(value, pe_outbox_context(key, old_key));

				value = pe_seal(plain, pe_outbox_context(key, new_key));
				pe_secret_cleanse(plain);
			}
			pe_json_field(&out, key, value);
			key = NULL;
		}
	}
	appendStringInfoChar(&out, '}');
	return out.data;
}

/*
 * pe_outbox_withdraw
 *		Make the pending requests of payment_id (of every payment when all)
 *		that are no longer wanted harmless (stripe.h).  Connected to SPI.
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
int
pe_intent_key_attempt(const char *key)
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
 * Look payment_id up with current_intent_plan (its stored PaymentIntent,
 * status, registration and newest create's key); false when there is no
 * such payment.
 */
static bool
current_intent_lookup(const pg_uuid_t *payment_id)
{
	Datum		arg = UUIDPGetDatum(payment_id);
	int			rc;

	rc = SPI_execute_plan(pe_plan(&current_intent_plan), &arg, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "looking up the payment's attempt failed: %s", SPI_result_code_string(rc));
	return SPI_processed > 0;
}

/* The attempt of the newest create's key of the payment just looked up, or 0. */
static int
current_key_attempt(void)
{
	bool		isnull;
	Datum		d = pe_spi_getdatum(0, 4, &isnull);

	return isnull ? 0 : pe_intent_key_attempt(TextDatumGetCString(d));
}

/*
 * pe_intent_current
 *		Is pi_id (of the given attempt, 0 if unknown) the PaymentIntent of
 *		payment_id's current attempt?  The payment's stored PaymentIntent,
 *		when it has one, decides (payment.retry clears it); else the attempt,
 *		when known, must be the newest create's.  Sets *status and
 *		*registration of the payment (-1 when there is no such payment).
 */
bool
pe_intent_current(const pg_uuid_t *payment_id, const char *pi_id, int attempt,
				  int *status, pg_uuid_t *registration)
{
	bool		isnull;
	Datum		d;

	*status = -1;
	if (!current_intent_lookup(payment_id))
		return true;
	*status = DatumGetInt32(pe_spi_getdatum(0, 2, &isnull));
	if (registration != NULL)
		memcpy(registration, DatumGetUUIDP(pe_spi_getdatum(0, 3, &isnull)), UUID_LEN);
	d = pe_spi_getdatum(0, 1, &isnull);
	if (!isnull)
	{
		char	   *stored = pe_open(TextDatumGetCString(d),
									 pe_vault_context("Payments", "EncryptedStripePaymentIntentId",
													  pe_uuid_text(payment_id)));
		bool		same = strcmp(stored, pi_id) == 0;

		pe_secret_cleanse(stored);
		return same;
	}
	if (attempt > 0)
	{
		int			current = current_key_attempt();

		if (current > 0)
			return attempt == current;
	}
	return true;
}

/* The payment's current attempt: n of its newest create's key, or 0. */
int
pe_intent_current_attempt(const pg_uuid_t *payment_id)
{
	return current_intent_lookup(payment_id) ? current_key_attempt() : 0;
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
	char	   *pid = pe_uuid_text(payment_id);
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
	pe_json_field(&req, "payment_intent", pe_seal(pi_id, pe_outbox_context("payment_intent", key)));
	if (refund)
	{
		pe_json_field(&req, "reason", "duplicate");
		pe_json_field(&req, "metadata[payment_id]", pid);
		pe_json_field(&req, "metadata[unwanted]", "true");
	}
	else
		pe_json_field(&req, "cancellation_reason", "duplicate");
	appendStringInfoChar(&req, '}');
	args[0] = CStringGetTextDatum(refund ? "refund.unwanted" : "payment_intent.cancel");
	args[1] = UUIDPGetDatum(payment_id);
	args[2] = CStringGetTextDatum(req.data);
	args[3] = CStringGetTextDatum(key);
	if (pe_spi_run(&undo_enqueue_plan, args, NULL, false, 0, "queueing an undo") > 0 && refund)
		pe_failure_insert(payment_id, "unwanted_charge",
						  psprintf("Stripe charged a PaymentIntent that this payment does not keep (%s); the whole charge is refunded (refund.unwanted)",
								   why),
						  NULL, 0);
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

/*
 * pe_outbox_unwanted_refund_failed
 *		Stripe failed (reason: its failure_reason, or NULL) a refund of a
 *		charge that payment_id does not keep, of PaymentIntent pi_id (NULL
 *		when unknown): its refund.unwanted row becomes a dead letter; an
 *		event that overtakes the request's answer (the row is still pending
 *		or sending) is refused with 55000, so that Stripe delivers it again.
 *		Returns the webhook's outcome.  Connected to SPI.
 */
const char *
pe_outbox_unwanted_refund_failed(const pg_uuid_t *payment_id, const char *pi_id,
								 const char *reason)
{
	char	   *pid = pe_uuid_text(payment_id);
	char	   *why = psprintf("Stripe failed the refund of a charge the payment does not keep (%s): the customer still paid it; return the money by other means",
							   reason ? pe_scrub(reason, 60) : "no reason given");
	Datum		args[3];
	char		nulls[3] = {' ', ' ', ' '};

	args[0] = UUIDPGetDatum(payment_id);
	if (pi_id != NULL)
		args[1] = CStringGetTextDatum(psprintf("pe-%s-unwanted-refund-%s", pid, digest_hex16(pi_id)));
	else
		nulls[1] = 'n';
	args[2] = CStringGetTextDatum(why);
	if (pe_spi_run(&unwanted_failed_plan, args, nulls, false, 0, "marking a refund.unwanted dead") > 0)
		return "applied: Stripe failed the refund of a charge the payment does not keep; its refund.unwanted is a dead letter (payment.dead_letters)";

	if (pe_spi_run(&unwanted_on_its_way_plan, args, nulls, true, 1,
				   "looking up a refund.unwanted") > 0)
	{
		/* its answer is not recorded yet: take the event after it */
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("a refund event arrived while the refund.unwanted it reports is still on its way"),
				 errdetail("The event is not recorded; Stripe delivers it again.")));
	}
	return "conflict: Stripe failed a refund of a charge the payment does not keep, and no refund.unwanted of ours matches it: nothing recorded";
}
