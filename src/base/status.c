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

/*
 * The body of payment.status_name and payment.refund_status_name: the name
 * of the code, or 22023.
 */
static Datum
status_name_sql(FunctionCallInfo fcinfo, bool refund)
{
	int32		status = PG_GETARG_INT32(0);
	const char *name = refund ? pe_refund_status_name(status) : pe_payment_status_name(status);

	if (name == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%d is not a %s status code", status, refund ? "refund" : "payment"),
				 errhint("%s", refund ?
						 "Refund status codes are 0 Processing, 1 Completed and 2 Failed." :
						 "Payment status codes are 0 Pending, 1 Completed, 2 Failed, 3 Refunded, 4 PartiallyRefunded and 5 NotRequired.")));
	PG_RETURN_TEXT_P(cstring_to_text(name));
}

/* SQL function: payment.status_name(int) returns text */
PG_FUNCTION_INFO_V1(pe_status_name);
Datum
pe_status_name(PG_FUNCTION_ARGS)
{
	return status_name_sql(fcinfo, false);
}

/* SQL function: payment.refund_status_name(int) returns text */
PG_FUNCTION_INFO_V1(pe_refund_status_name_sql);
Datum
pe_refund_status_name_sql(PG_FUNCTION_ARGS)
{
	return status_name_sql(fcinfo, true);
}
