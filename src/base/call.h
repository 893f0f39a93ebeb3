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

/* Raise 22004 if argument argno (named name) of the call is NULL. */
extern void pe_check_arg_not_null(FunctionCallInfo fcinfo, int argno, const char *name);

/* Call body; constraint violations re-raised without the row. */
extern Datum pe_call_redacted(PGFunction body, FunctionCallInfo fcinfo);

#endif							/* PE_BASE_CALL_H */
