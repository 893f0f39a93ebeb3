/*-------------------------------------------------------------------------
 *
 * resolve.c
 *		payment.resolve(): an administrator's audited repair of a payment's
 *		status past the state machine, when Stripe and the database
 *		disagree (a payment Failed here that Stripe shows charged).
 *
 * Invariants:
 *	- pe_resolve_active, pe_resolve_payment and pe_resolve_reason
 *	  (base/xact.c) are set only here, only around the one UPDATE this function makes; PG_FINALLY
 *	  restores them, and the transaction callback clears them too.  There
 *	  is no GUC or SQL way to set them, so a plain UPDATE making the same
 *	  move is still refused by the state trigger.
 *	- The UPDATE goes through every trigger: the state trigger (which lets
 *	  only this payment past the transition rules, and still holds the
 *	  immutable columns and the refund-derived paid states), the unique
 *	  live-payment index, and the audit trigger, which writes the reason
 *	  into the row's "ActionDescription".
 *
 * IDENTIFICATION
 *		src/api/resolve.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/uuid.h"

#include "audit/audit.h"
#include "base/call.h"
#include "base/spi.h"
#include "base/status.h"
#include "base/text.h"
#include "base/xact.h"
#include "guard/guard.h"
#include "stripe/stripe.h"

/* Fewest non-blank characters of a reason */
#define RESOLVE_MIN_REASON		10
/* Longest reason kept */
#define RESOLVE_MAX_REASON		1000

static PePlan resolve_lock_plan = {
	"SELECT \"Status\" FROM @S@.\"Payments\" WHERE \"Id\" = $1 FOR NO KEY UPDATE",
	1, {UUIDOID}, NULL, 0
};
/*
 * Resolved to Failed: a PaymentIntent the payment has that Stripe has not
 * finished is canceled, so that the customer can no longer pay it.
 */
static PePlan resolve_cancel_plan = {
	"INSERT INTO payment.outbox (kind, payment_id, request, idempotency_key)"
	" SELECT 'payment_intent.cancel', p.\"Id\", '{\"cancellation_reason\": \"abandoned\"}',"
	"  'pe-' || p.\"Id\" || '-cancel-resolve-' || pg_catalog.gen_random_uuid()"
	" FROM @S@.\"Payments\" p LEFT JOIN payment.intents i ON i.payment_id = p.\"Id\""
	" WHERE p.\"Id\" = $1 AND p.\"EncryptedStripePaymentIntentId\" IS NOT NULL"
	"  AND (i.stripe_status IS NULL OR i.stripe_status NOT IN ('succeeded', 'canceled', 'processing'))",
	1, {UUIDOID}, NULL, 0
};
static PePlan resolve_update_plan = {
	"UPDATE @S@.\"Payments\" SET \"Status\" = $2 WHERE \"Id\" = $1",
	2, {UUIDOID, INT4OID}, NULL, 0
};

/* Raise unless reason has enough non-blank characters and no card number. */
static void
check_resolve_reason(const char *reason)
{
	const char *p;
	int			count = 0;

	for (p = reason; *p; p++)
		if (IS_HIGHBIT_SET(*p) || !isspace((unsigned char) *p))
			count++;
	if (count < RESOLVE_MIN_REASON)
	{
		pe_audit_log_refusal("payment.resolve", "reason too short");
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("a resolution needs a reason of at least %d non-blank characters",
						RESOLVE_MIN_REASON),
				 errdetail("The reason given has %d.", count)));
	}
	if (strlen(reason) > RESOLVE_MAX_REASON)
	{
		pe_audit_log_refusal("payment.resolve", "reason too long");
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("a resolution reason has at most %d bytes", RESOLVE_MAX_REASON)));
	}
	pe_guard_text(reason, "reason");
}

/* SQL function: payment.resolve(uuid, int, text) returns void */
PE_REDACTED_FUNCTION(pe_resolve, resolve_body);

/* The body of pe_resolve. */
static Datum
resolve_body(PG_FUNCTION_ARGS)
{
	static const char *const argnames[] = {"payment_id", "new_status", "reason"};
	pg_uuid_t  *id;
	int32		new_status;
	char	   *reason;
	int			old_status;
	Datum		args[2];
	bool		isnull;
	int			rc;

	pe_check_args_not_null(fcinfo, argnames, lengthof(argnames));
	id = PG_GETARG_UUID_P(0);
	new_status = PG_GETARG_INT32(1);
	reason = text_to_cstring(PG_GETARG_TEXT_PP(2));

	if (new_status != PE_PAYMENT_PENDING && new_status != PE_PAYMENT_COMPLETED &&
		new_status != PE_PAYMENT_FAILED)
	{
		pe_audit_log_refusal("payment.resolve", "status not resolvable");
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("payment.resolve sets Pending (0), Completed (1) or Failed (2), not %d",
						new_status),
				 errhint("Refunded and PartiallyRefunded follow from the payment's completed refunds; NotRequired is fixed at creation.")));
	}
	check_resolve_reason(reason);

	SPI_connect();
	args[0] = UUIDPGetDatum(id);
	pe_spi_find_payment(&resolve_lock_plan, args[0], false);
	old_status = DatumGetInt32(pe_spi_getdatum(0, 1, &isnull));
	if (old_status == new_status || old_status == PE_PAYMENT_NOT_REQUIRED)
	{
		pe_audit_log_refusal("payment.resolve", "nothing to resolve");
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("payment is already %s", pe_payment_status_name(old_status)),
				 old_status == PE_PAYMENT_NOT_REQUIRED ?
				 errdetail("A NotRequired payment is final.") : 0));
	}

	args[1] = Int32GetDatum(new_status);
	pe_resolve_payment = *id;
	pe_resolve_reason = reason;
	pe_resolve_active = true;
	PG_TRY();
	{
		rc = SPI_execute_plan(pe_plan(&resolve_update_plan), args, NULL, false, 0);
		if (rc != SPI_OK_UPDATE || SPI_processed != 1)
			elog(ERROR, "updating the payment failed: %s", SPI_result_code_string(rc));
	}
	PG_FINALLY();
	{
		/* the flag must never outlive this UPDATE, error or not */
		pe_resolve_active = false;
		pe_resolve_reason = NULL;
	}
	PG_END_TRY();

	/*
	 * A payment that is no longer Pending is never charged (issue 17, item
	 * 1): its requests still waiting in the outbox are withdrawn (a probe
	 * replaces one that may have reached Stripe, stripe.h), and a Failed
	 * one's unfinished PaymentIntent is canceled.  A request the worker is
	 * sending right now is settled by its answer (outbox/record_intent.c).
	 */
	if (new_status != PE_PAYMENT_PENDING)
	{
		pe_outbox_withdraw(args[0], false);
		if (new_status == PE_PAYMENT_FAILED)
		{
			rc = SPI_execute_plan(pe_plan(&resolve_cancel_plan), args, NULL, false, 0);
			if (rc != SPI_OK_INSERT)
				elog(ERROR, "queueing the cancellation failed: %s", SPI_result_code_string(rc));
		}
	}
	SPI_finish();
	PG_RETURN_VOID();
}
