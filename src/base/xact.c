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
 *	- payment_ext.restoring is honoured only while the session user is a
 *	  superuser: the parameter is superuser-only to set (PGC_SUSET), and a
 *	  value given to another role (ALTER ROLE ... SET, GRANT SET) has no
 *	  effect, so no ordinary role can silence the rules or the audit.
 *	- Restore mode concerns INSERT only (pg_restore loads with COPY): an
 *	  UPDATE or DELETE is held to every rule and audited whatever it says.
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

#include "base/guc.h"
#include "base/xact.h"

bool		pe_suppress_row_audit = false;
bool		pe_resolve_active = false;
pg_uuid_t	pe_resolve_payment;
const char *pe_resolve_reason = NULL;

/*
 * pe_restoring_insert
 *		True when a trigger fired by an INSERT must store the row exactly as
 *		given: payment_ext.restoring is on and the session user is a
 *		superuser (README "Operations", dump and restore).  The caller
 *		passes its trigger event.
 */
bool
pe_restoring_insert(uint32 event)
{
	if (!pe_restoring || !TRIGGER_FIRED_BY_INSERT(event))
		return false;
	return superuser_arg(GetSessionUserId());
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
