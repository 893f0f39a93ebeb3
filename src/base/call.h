/*-------------------------------------------------------------------------
 *
 * call.h
 *		Helpers of the SQL-callable functions: argument checks, and the
 *		wrapper that keeps a constraint violation from showing a row.
 *
 * IDENTIFICATION
 *		src/base/call.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PE_BASE_CALL_H
#define PE_BASE_CALL_H

#include "fmgr.h"

/*
 * Raise 22004 naming the first argument of the call that is NULL and must
 * not be: argument i is names[i] (NULL: it may be NULL), for i < n.
 */
extern void pe_check_args_not_null(FunctionCallInfo fcinfo, const char *const *names, int n);

/* Call body; constraint violations re-raised without the row. */
extern Datum pe_call_redacted(PGFunction body, FunctionCallInfo fcinfo);

/*
 * The SQL-callable function name of a SECURITY DEFINER function that
 * writes the payment tables: it calls body(fcinfo) through
 * pe_call_redacted, so that no constraint violation shows a row.
 */
#define PE_REDACTED_FUNCTION(name, body) \
	static Datum body(PG_FUNCTION_ARGS); \
	PG_FUNCTION_INFO_V1(name); \
	Datum \
	name(PG_FUNCTION_ARGS) \
	{ \
		return pe_call_redacted(body, fcinfo); \
	} \
	extern int no_such_variable

#endif							/* PE_BASE_CALL_H */
