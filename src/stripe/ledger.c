/*-------------------------------------------------------------------------
 *
 * ledger.c
 *		Stripe's answers written into the payment tables, one way each,
 *		whether an answer came back to the outbox worker (outbox/record*.c)
 *		or arrived in a webhook (webhook/apply*.c): a payment completed,
 *		failed or reopened, the failure recorded, the PaymentIntent's state
 *		(payment.intents), a refund's state at Stripe (payment.refund_states)
 *		and its "RefundStatus".
 *
 * Every write goes through the same triggers (state machine, refund rules,
 * audit) as any other writer: these functions only choose the UPDATE or
 * INSERT, and never move a payment or a refund backwards (their WHERE
 * clauses hold the state they move from).
 *
 * Invariants:
 *	- Callers are in a transaction, connected to SPI, and locked the
 *	  payment's row first (pe_payment_lock; README, "Lock order").
 *	- A Stripe id, a client secret or an error object is stored only
 *	  sealed, under the context the sealed-column trigger checks.
 *
 * IDENTIFICATION
 *		src/stripe/ledger.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "base/spi.h"
#include "base/text.h"
#include "stripe/stripe.h"
#include "vault/vault.h"

/* Longest "FailureCode" ("PaymentFailures"."FailureCode" is varchar(50)) */
#define LEDGER_CODE_MAX			50

/* ---------------------------------------------------------------------------
 * SPI plans (@S@: the schema of the spec's tables)
 * ---------------------------------------------------------------------------
 */
/* the first lock of every recording: its payment's row */
static PePlan payment_lock_plan = {
	"SELECT \"Status\", (\"AmountValue\" * 100)::bigint, \"Currency\","
	" \"EncryptedStripePaymentIntentId\" IS NOT NULL, \"EventRegistrationId\""
	" FROM @S@.\"Payments\" WHERE \"Id\" = $1 FOR NO KEY UPDATE",
	1, {UUIDOID}, NULL, 0
};
/* live: Pending, Completed or PartiallyRefunded (issue 17, item 9) */
static PePlan other_live_plan = {
	"SELECT 1 FROM @S@.\"Payments\" WHERE \"EventRegistrationId\" = $1"
	" AND \"Status\" IN (0, 1, 4) AND \"Id\" <> $2",
	2, {UUIDOID, UUIDOID}, NULL, 0
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
/*
 * The PaymentIntent of a payment still Pending: the worker's answers
 * replace it (they come from the current attempt's request), a webhook only
 * fills it in when the payment has none ($3).
 */
static PePlan store_intent_plan = {
	"UPDATE @S@.\"Payments\" SET \"EncryptedStripePaymentIntentId\" = $2"
	" WHERE \"Id\" = $1 AND \"Status\" = 0 AND ($3 OR \"EncryptedStripePaymentIntentId\" IS NULL)",
	3, {UUIDOID, TEXTOID, BOOLOID}, NULL, 0
};
static PePlan fail_plan = {
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
 * The one rule of payment.intents (issue 19): the latest state Stripe
 * reported of the payment's PaymentIntent, from the worker's answers
 * (response, lookup) and from webhooks alike.  A terminal status
 * (succeeded, canceled) is final at Stripe: once recorded, no later report
 * (an answer that was on its way meanwhile, a late webhook) replaces it,
 * nor where it came from (source) or when (reported_at); only a client
 * secret still missing is filled in.  payment.retry deletes the row of an
 * earlier attempt, so the rule holds per PaymentIntent.
 */
#define INTENT_FINAL_SQL	"i.stripe_status IN ('succeeded', 'canceled')"
static PePlan intent_report_plan = {
	"INSERT INTO payment.intents AS i (payment_id, client_secret, stripe_status, next_action,"
	" source, reported_at)"
	" VALUES ($1, $2, $3, $4, $5, pg_catalog.now())"
	" ON CONFLICT (payment_id) DO UPDATE SET"
	" client_secret = COALESCE(EXCLUDED.client_secret, i.client_secret),"
	" stripe_status = CASE WHEN " INTENT_FINAL_SQL " THEN i.stripe_status ELSE EXCLUDED.stripe_status END,"
	" next_action = CASE WHEN " INTENT_FINAL_SQL " THEN i.next_action ELSE EXCLUDED.next_action END,"
	" source = CASE WHEN " INTENT_FINAL_SQL " THEN i.source ELSE EXCLUDED.source END,"
	" reported_at = CASE WHEN " INTENT_FINAL_SQL " THEN i.reported_at ELSE pg_catalog.now() END,"
	" updated_at = pg_catalog.now()"
	" WHERE NOT " INTENT_FINAL_SQL
	"    OR (i.client_secret IS NULL AND EXCLUDED.client_secret IS NOT NULL)",
	5, {UUIDOID, TEXTOID, TEXTOID, JSONBOID, TEXTOID}, NULL, 0
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
/*
 * A Processing refund's outcome.  The worker's answers replace the stored
 * Refund id (the refund the recorded status comes from); a webhook keeps
 * the one stored first ($4).
 */
static PePlan refund_set_plan = {
	"UPDATE @S@.\"PaymentRefunds\" SET \"RefundStatus\" = $2,"
	" \"EncryptedStripeRefundId\" = CASE WHEN $4 THEN $3"
	"   ELSE COALESCE(\"EncryptedStripeRefundId\", $3) END"
	" WHERE \"Id\" = $1 AND \"RefundStatus\" = 0",
	4, {UUIDOID, INT4OID, TEXTOID, BOOLOID}, NULL, 0
};

/* Run p; the number of rows it returned or changed. */
static uint64
ledger_exec(PePlan *p, Datum *args, const char *nulls)
{
	return pe_spi_run(p, args, nulls, false, 0, "recording Stripe's answer");
}

/* ---------------------------------------------------------------------------
 * Payments
 * ---------------------------------------------------------------------------
 */

/*
 * pe_payment_lock
 *		Lock payment id (FOR NO KEY UPDATE) and read it into *row; false when
 *		there is none (a payment cannot be deleted, but a superuser can).
 */
bool
pe_payment_lock(const pg_uuid_t *id, PePaymentRow *row)
{
	Datum		arg = UUIDPGetDatum(id);
	bool		isnull;
	int			rc;

	rc = SPI_execute_plan(pe_plan(&payment_lock_plan), &arg, NULL, false, 1);
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

/* Has registration a live payment (Pending, Completed, PartiallyRefunded) other than payment_id? */
bool
pe_registration_other_live(const pg_uuid_t *registration, const pg_uuid_t *payment_id)
{
	Datum		args[2];
	int			rc;

	args[0] = UUIDPGetDatum(registration);
	args[1] = UUIDPGetDatum(payment_id);
	rc = SPI_execute_plan(pe_plan(&other_live_plan), args, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "looking up live payments failed: %s", SPI_result_code_string(rc));
	return SPI_processed > 0;
}

/* Pending -> Completed with its PaymentIntent (sealed); false if not Pending. */
bool
pe_payment_complete(const pg_uuid_t *id, const char *sealed_pi)
{
	Datum		args[2];

	args[0] = UUIDPGetDatum(id);
	args[1] = CStringGetTextDatum(sealed_pi);
	return ledger_exec(&complete_plan, args, NULL) > 0;
}

/* Failed -> Pending (a charge after a failed attempt); false if not Failed. */
bool
pe_payment_reopen(const pg_uuid_t *id)
{
	Datum		arg = UUIDPGetDatum(id);

	return ledger_exec(&reopen_plan, &arg, NULL) > 0;
}

/*
 * pe_payment_store_intent
 *		Store the PaymentIntent (sealed) of payment id while it is Pending:
 *		replacing the one stored, or (replace false) only when it has none.
 *		False when nothing was stored.
 */
bool
pe_payment_store_intent(const pg_uuid_t *id, const char *sealed_pi, bool replace)
{
	Datum		args[3];

	args[0] = UUIDPGetDatum(id);
	args[1] = CStringGetTextDatum(sealed_pi);
	args[2] = BoolGetDatum(replace);
	return ledger_exec(&store_intent_plan, args, NULL) > 0;
}

/* ---------------------------------------------------------------------------
 * Failures
 * ---------------------------------------------------------------------------
 */

/*
 * pe_failure_insert
 *		A "PaymentFailures" row of payment_id: code (cut to the column's 50
 *		characters), message, details (JSON text, stored sealed; NULL for
 *		none) and the retries before it.  Neither message nor details may
 *		hold a Stripe id: scrub what comes from Stripe (pe_scrub).
 */
void
pe_failure_insert(const pg_uuid_t *payment_id, const char *code, const char *message,
				  const char *details, int retry_count)
{
	Datum		fid = DirectFunctionCall1(gen_random_uuid, (Datum) 0);
	Datum		args[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

	args[0] = fid;
	args[1] = UUIDPGetDatum(payment_id);
	args[2] = CStringGetTextDatum(pe_clip_chars(code, LEDGER_CODE_MAX));
	args[3] = CStringGetTextDatum(message);
	if (details != NULL)
		args[4] = CStringGetTextDatum(pe_seal(details,
											  pe_vault_context("PaymentFailures",
															   "EncryptedStripeErrorDetails",
															   pe_uuid_text(DatumGetUUIDP(fid)))));
	else
	{
		args[4] = (Datum) 0;
		nulls[4] = 'n';
	}
	args[5] = Int32GetDatum(retry_count);
	ledger_exec(&failure_insert_plan, args, nulls);
}

/*
 * pe_payment_fail
 *		A payment that Stripe refused or canceled for good: Pending ->
 *		Failed, with a "PaymentFailures" row (pe_failure_insert).  False,
 *		recording nothing, when the payment is no longer Pending: the
 *		failure is recorded only for a payment that it fails.
 */
bool
pe_payment_fail(const pg_uuid_t *id, const char *code, const char *message,
				const char *details, int retry_count)
{
	Datum		arg = UUIDPGetDatum(id);

	if (ledger_exec(&fail_plan, &arg, NULL) == 0)
		return false;
	pe_failure_insert(id, code, message, details, retry_count);
	return true;
}

/*
 * pe_cancel_failure_code
 *		The "FailureCode" of a payment whose PaymentIntent Stripe canceled
 *		with cancellation_reason (NULL: none): "expired" when it was
 *		abandoned, expired or canceled automatically, else "canceled".
 */
const char *
pe_cancel_failure_code(const char *reason)
{
	return reason != NULL && (strcmp(reason, "abandoned") == 0 ||
							  strcmp(reason, "expired") == 0 ||
							  strcmp(reason, "automatic") == 0) ? "expired" : "canceled";
}

/* The "FailureMessage" of such a payment (no Stripe id in it). */
char *
pe_cancel_message(const char *reason)
{
	return psprintf("PaymentIntent canceled (%s)",
					reason ? pe_scrub(reason, 60) : "no reason");
}

/* ---------------------------------------------------------------------------
 * payment.intents
 * ---------------------------------------------------------------------------
 */

/*
 * pe_intent_report
 *		Record status, the type of the next action and the client secret
 *		(sealed, or NULL) of PaymentIntent pi as the state of payment_id's
 *		PaymentIntent, reported by source (response, lookup, webhook), by
 *		the one rule of intent_report_plan.
 */
void
pe_intent_report(const pg_uuid_t *payment_id, JsonbContainer *pi, const char *status,
				 const char *sealed_secret, const char *source)
{
	JsonbContainer *next = pe_jb_object(pi, "next_action");
	Datum		args[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

	args[0] = UUIDPGetDatum(payment_id);
	if (sealed_secret != NULL)
		args[1] = CStringGetTextDatum(sealed_secret);
	else
		nulls[1] = 'n';
	args[2] = CStringGetTextDatum(status);
	if (next != NULL)
	{
		StringInfoData na;

		initStringInfo(&na);
		appendStringInfoChar(&na, '{');
		pe_json_field(&na, "type", pe_jb_text(next, "type"));
		appendStringInfoChar(&na, '}');
		args[3] = DirectFunctionCall1(jsonb_in, CStringGetDatum(na.data));
	}
	else
		nulls[3] = 'n';
	args[4] = CStringGetTextDatum(source);
	ledger_exec(&intent_report_plan, args, nulls);
}

/*
 * pe_intent_refunded
 *		Stripe's amount refunded (minor units) of the charge of payment_id,
 *		from a charge.refunded event created at created (Unix seconds; < 0:
 *		unknown).
 */
void
pe_intent_refunded(const pg_uuid_t *payment_id, int64 amount_refunded, double created)
{
	Datum		args[3];
	char		nulls[3] = {' ', ' ', created < 0 ? 'n' : ' '};

	args[0] = UUIDPGetDatum(payment_id);
	args[1] = Int64GetDatum(amount_refunded);
	args[2] = Float8GetDatum(created);
	ledger_exec(&intent_refunded_plan, args, nulls);
}

/* ---------------------------------------------------------------------------
 * Refunds
 * ---------------------------------------------------------------------------
 */

/*
 * pe_refund_state_report
 *		Record stripe_status, reported by source, as the state at Stripe of
 *		refund_id (never going back, see refund_state_plan); a failed or
 *		canceled refund makes the charge's amount refunded unknown.
 */
void
pe_refund_state_report(const pg_uuid_t *refund_id, const char *stripe_status, const char *source)
{
	Datum		args[3];

	args[0] = UUIDPGetDatum(refund_id);
	args[1] = CStringGetTextDatum(stripe_status);
	args[2] = CStringGetTextDatum(source);
	ledger_exec(&refund_state_plan, args, NULL);
	ledger_exec(&amount_reset_plan, args, NULL);
}

/*
 * pe_refund_set
 *		A Processing refund's "RefundStatus" (status) and its Refund id
 *		(sealed, or NULL): replacing the one stored (replace_id), or only
 *		filling it in.  False when the refund was no longer Processing.
 */
bool
pe_refund_set(const pg_uuid_t *refund_id, int status, const char *sealed_id, bool replace_id)
{
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	args[0] = UUIDPGetDatum(refund_id);
	args[1] = Int32GetDatum(status);
	if (sealed_id != NULL)
		args[2] = CStringGetTextDatum(sealed_id);
	else
	{
		args[2] = (Datum) 0;
		nulls[2] = 'n';
	}
	args[3] = BoolGetDatum(replace_id);
	return ledger_exec(&refund_set_plan, args, nulls) > 0;
}
