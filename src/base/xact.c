/*-------------------------------------------------------------------------
 *
 * xact.c
 *		Transaction-local state set by trusted C code, reset at every
 *		transaction end; and the restore mode (payment_ext.restoring).
 *
 * Invariants:
 *	- pe_suppress_row_audit and pe_resolve_active are false outside the
 *	  code that sets them (which restores them with PG_FINALLY), and at the
 *	  end of every transaction whatever happened.
 *	- Restore mode (rows stored exactly as given) is only ever granted to a
 *	  session whose user is a superuser: for a COPY (how every dump tool
 *	  loads rows), or when payment_ext.restoring is on.  The parameter is
 *	  superuser-only to set (PGC_SUSET), and a value given to another role
 *	  (ALTER ROLE ... SET, GRANT SET) has no effect, so no ordinary role can
 *	  silence the rules or the audit.
 *	- Restore mode concerns INSERT only: an UPDATE or DELETE is held to
 *	  every rule and audited whatever it says.
 *
 * IDENTIFICATION
 *		src/base/xact.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/trigger.h"
#include "miscadmin.h"
#include "tcop/pquery.h"

#include "base/guc.h"
#include "base/xact.h"

bool		pe_suppress_row_audit = false;
bool		pe_resolve_active = false;
pg_uuid_t	pe_resolve_payment;
const char *pe_resolve_reason = NULL;

/*
 * pe_restoring_insert
 *		True when a trigger fired by an INSERT must store the row exactly as
 *		given, as a restore needs it (doc/operations.md, "Dump and
 *		restore"): the session user is a superuser, and either the INSERT is
 *		part of a COPY run by the client (ActivePortal's command is COPY:
 *		pg_restore, a plain dump fed to psql, \copy) or payment_ext.restoring
 *		is on.  The caller passes its trigger event.
 *
 *		A COPY is how every dump tool loads rows, so a superuser's restore
 *		needs no setting; only a superuser can reach this (a role that is
 *		not one stays held to every rule, COPY or not), and a superuser could
 *		disable the triggers anyway.  COPY FROM STDIN cannot run inside a
 *		function, so ActivePortal is the client's own statement.
 */
bool
pe_restoring_insert(uint32 event)
{
	if (!TRIGGER_FIRED_BY_INSERT(event))
		return false;
	if (!superuser_arg(GetSessionUserId()))
		return false;
	if (pe_restoring)
		return true;
	return ActivePortal != NULL && ActivePortal->commandTag == CMDTAG_COPY;
}

/* Transaction end: the transaction-local flags go back to their defaults. */
static void
base_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			pe_suppress_row_audit = false;
			pe_resolve_active = false;
			break;
		default:
			break;
	}
}

/*
 * pe_base_init
 *		Called by _PG_init: register the transaction callback that resets the
 *		transaction-local flags.  Never raises.
 */
void
pe_base_init(void)
{
	RegisterXactCallback(base_xact_callback, NULL);
}
