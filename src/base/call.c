/*-------------------------------------------------------------------------
 *
 * call.c
 *		Helpers of the SQL-callable functions of payment_ext.
 *
 * IDENTIFICATION
 *		src/base/call.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"

#include "base/call.h"

/*
 * pe_call_redacted
 *		Call body(fcinfo), the body of a SECURITY DEFINER function that writes
 *		the payment tables.  An integrity constraint violation raised by
 *		PostgreSQL inside it (CHECK, NOT NULL, unique, exclusion, foreign key:
 *		the errors that name a table or constraint) is re-raised with its
 *		DETAIL replaced, because that DETAIL shows the failing row ("Failing
 *		row contains (...)") or key, and in these tables that can be a sealed
 *		value, a Stripe id or another user's row.  Every other error passes
 *		unchanged.
 *
 * Why a PG_CATCH: the executor builds that DETAIL from the row, and shows
 * every column to a role that bypasses row-level security, as the
 * extension's owner does; checking the arguments first (the functions do)
 * cannot cover a constraint a DBA adds.  The handler only edits the error
 * and throws it again at once: nothing resumes after the error, and the
 * transaction (or the caller's subtransaction) aborts as it would have.
 * The server log gets the edited error too: it is emitted by whoever
 * finally catches it.
 */
Datum
pe_call_redacted(PGFunction body, FunctionCallInfo fcinfo)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile Datum result = (Datum) 0;

	PG_TRY();
	{
		result = body(fcinfo);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (ERRCODE_TO_CATEGORY(edata->sqlerrcode) !=
			ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION ||
			(edata->table_name == NULL && edata->constraint_name == NULL) ||
			(edata->detail == NULL && edata->detail_log == NULL))
		{
			FreeErrorData(edata);
			PG_RE_THROW();
		}
		FlushErrorState();
		edata->detail = pstrdup("The row's values are not shown: they may hold sealed values or another user's data.");
		edata->detail_log = NULL;
		ReThrowError(edata);
	}
	PG_END_TRY();
	return result;
}

/*
 * pe_check_args_not_null
 *		Raise 22004 for the first argument i < n of the call that is NULL
 *		while names[i] (its name) is not: the arguments that may be NULL
 *		have a NULL name.
 */
void
pe_check_args_not_null(FunctionCallInfo fcinfo, const char *const *names, int n)
{
	int			i;

	for (i = 0; i < n; i++)
		if (names[i] != NULL && PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not be null", names[i])));
}
