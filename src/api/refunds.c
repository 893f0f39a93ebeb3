/*-------------------------------------------------------------------------
 *
 * refunds.c
 *		payment.refund: the application's (or an administrator's) refund,
 *		with its idempotency key and the outbox request that asks Stripe
 *		for the money back.
 *
 * Invariants:
 *	- Every argument is checked before a table is touched.
 *	- The refund and its refund.create request are inserted in the
 *	  caller's transaction: the request exists if and only if the refund
 *	  commits.  The refund rules trigger (rules/refund.c) locks the payment
 *	  and holds what is left to refund, whoever inserts.
 *
 * IDENTIFICATION
 *		src/api/refunds.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/numeric.h"
#include "utils/uuid.h"

#include "api/api.h"
#include "base/call.h"
#include "base/spi.h"
#include "base/text.h"
#include "guard/guard.h"
#include "rules/rules.h"
#include "stripe/stripe.h"
#include "vault/vault.h"

/* The longest free text Stripe keeps in a metadata value */
#define PE_STRIPE_METADATA_MAX	500

/* ---------------------------------------------------------------------------
 * payment.refund
 * ---------------------------------------------------------------------------
 */
static PePlan refund_payment_plan = {
	"SELECT \"Currency\", \"EncryptedStripePaymentIntentId\" FROM @S@.\"Payments\" WHERE \"Id\" = $1",
	1, {UUIDOID}, NULL, 0
};

static PePlan refund_insert_plan = {
	"INSERT INTO @S@.\"PaymentRefunds\" (\"Id\", \"OriginalPaymentId\", \"RefundAmountValue\","
	" \"RefundCurrency\", \"RefundReason\", \"RefundStatus\", \"ProcessedByUserId\")"
	" VALUES ($1, $2, $3, $4, $5, 0, $6)",
	6, {UUIDOID, UUIDOID, NUMERICOID, TEXTOID, TEXTOID, UUIDOID}, NULL, 0
};

/* SQL function: payment.refund(uuid, numeric, text, uuid, text) returns uuid */
PE_REDACTED_FUNCTION(pe_refund, refund_body);

/* The body of pe_refund. */
static Datum
refund_body(PG_FUNCTION_ARGS)
{
	static const char *const argnames[] = {"payment_id", "amount", "reason", "processed_by"};
	Datum		payment_id;
	Numeric		amount;
	char	   *reason;
	Datum		processed_by;
	char	   *idem_key;
	PeArgHash	h;
	bytea	   *hash = NULL;
	Datum		refund_id;
	Datum		existing;
	char	   *currency;
	char	   *intent;
	bool		isnull;
	int			rc;

	pe_check_args_not_null(fcinfo, argnames, lengthof(argnames));
	payment_id = PG_GETARG_DATUM(0);
	amount = PG_GETARG_NUMERIC(1);
	reason = text_to_cstring(PG_GETARG_TEXT_PP(2));
	processed_by = PG_GETARG_DATUM(3);
	pe_check_money(amount, "amount", false);
	pe_check_refund_reason(reason);
	pe_guard_text(reason, "reason");
	idem_key = pe_idem_key_arg(fcinfo, 4, &h);
	if (idem_key != NULL)
	{
		pe_arghash_add(&h, pe_uuid_text(DatumGetUUIDP(payment_id)));
		pe_arghash_add_numeric(&h, amount);
		pe_arghash_add(&h, reason);
		pe_arghash_add(&h, pe_uuid_text(DatumGetUUIDP(processed_by)));
		hash = pe_arghash_final(&h);
	}

	refund_id = DirectFunctionCall1(gen_random_uuid, (Datum) 0);

	SPI_connect();
	if (pe_idem_replay("refund", idem_key, hash, refund_id, &existing))
		PG_RETURN_DATUM(existing);

	pe_spi_find_payment(&refund_payment_plan, payment_id, false);
	currency = TextDatumGetCString(pe_spi_getdatum(0, 1, &isnull));
	{
		Datum		sealed = pe_spi_getdatum(0, 2, &isnull);

		intent = isnull ? NULL : TextDatumGetCString(sealed);
	}

	{
		Datum		args[6];

		args[0] = refund_id;
		args[1] = payment_id;
		args[2] = NumericGetDatum(amount);
		args[3] = CStringGetTextDatum(currency);
		args[4] = CStringGetTextDatum(reason);
		args[5] = processed_by;
		/* the rules trigger locks the payment and checks what is left */
		rc = SPI_execute_plan(pe_plan(&refund_insert_plan), args, NULL, false, 0);
		if (rc != SPI_OK_INSERT)
			elog(ERROR, "inserting the refund failed: %s", SPI_result_code_string(rc));
	}

	/*
	 * A payment that never went through Stripe (settled offline, or written
	 * by hand) has no PaymentIntent to refund: its refund stays Processing
	 * until an administrator records the outcome.
	 */
	if (intent != NULL)
	{
		StringInfoData req;
		char	   *rid = pe_uuid_text(DatumGetUUIDP(refund_id));
		char	   *outbox_key = psprintf("pe-%s-re", rid);
		char	   *intent_id;

		intent_id = pe_open(intent, psprintf("Payments.EncryptedStripePaymentIntentId:%s",
											 pe_uuid_text(DatumGetUUIDP(payment_id))));
		initStringInfo(&req);
		appendStringInfoChar(&req, '{');
		pe_json_field(&req, "payment_intent", pe_seal(intent_id, pe_outbox_context("payment_intent", outbox_key)));
		pe_secret_cleanse(intent_id);
		pe_json_field(&req, "amount", psprintf(INT64_FORMAT, pe_minor_units(amount)));
		pe_json_field(&req, "reason", "requested_by_customer");
		pe_json_field(&req, "metadata[payment_id]", pe_uuid_text(DatumGetUUIDP(payment_id)));
		pe_json_field(&req, "metadata[refund_id]", rid);
		pe_json_field(&req, "metadata[reason]", pe_clip_chars(reason, PE_STRIPE_METADATA_MAX));
		appendStringInfoChar(&req, '}');
		pe_outbox_enqueue("refund.create", DatumGetUUIDP(payment_id), DatumGetUUIDP(refund_id), req.data,
						  outbox_key);
	}
	SPI_finish();
	PG_RETURN_DATUM(refund_id);
}
