/*-------------------------------------------------------------------------
 *
 * status.c
 *		Status codes of payments and refunds, and their names.
 *
 * The integer codes are DESIGN.md's (they win over the spec's enum order):
 * PaymentStatus 0 Pending .. 5 NotRequired, RefundStatus 0 Processing ..
 * 2 Failed.
 *
 * IDENTIFICATION
 *		src/base/status.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"

#include "base/status.h"

static const char *const payment_status_names[] = {
	"Pending",
	"Completed",
	"Failed",
	"Refunded",
	"PartiallyRefunded",
	"NotRequired"
};

static const char *const refund_status_names[] = {
	"Processing",
	"Completed",
	"Failed"
};

/* Name of a payment status code, or NULL when the code is not one. */
const char *
pe_payment_status_name(int status)
{
	if (status < 0 || status >= (int) lengthof(payment_status_names))
		return NULL;
	return payment_status_names[status];
}

/* Name of a refund status code, or NULL when the code is not one. */
const char *
pe_refund_status_name(int status)
{
	if (status < 0 || status >= (int) lengthof(refund_status_names))
		return NULL;
	return refund_status_names[status];
}

/* name as text, or 22023 naming code as not a code of kind ("payment"). */
static text *
status_name_text(const char *name, int32 code, const char *kind, const char *hint)
{
	if (name == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%d is not a %s status code", code, kind),
				 errhint("%s", hint)));
	return cstring_to_text(name);
}

/* SQL function: payment.status_name(int) returns text */
PG_FUNCTION_INFO_V1(pe_status_name);
Datum
pe_status_name(PG_FUNCTION_ARGS)
{
	int32		status = PG_GETARG_INT32(0);

	PG_RETURN_TEXT_P(status_name_text(pe_payment_status_name(status), status, "payment",
									  "Payment status codes are 0 Pending, 1 Completed, 2 Failed, 3 Refunded, 4 PartiallyRefunded and 5 NotRequired."));
}

/* SQL function: payment.refund_status_name(int) returns text */
PG_FUNCTION_INFO_V1(pe_refund_status_name_sql);
Datum
pe_refund_status_name_sql(PG_FUNCTION_ARGS)
{
	int32		status = PG_GETARG_INT32(0);

	PG_RETURN_TEXT_P(status_name_text(pe_refund_status_name(status), status, "refund",
									  "Refund status codes are 0 Processing, 1 Completed and 2 Failed."));
}
