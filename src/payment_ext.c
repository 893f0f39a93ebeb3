/*-------------------------------------------------------------------------
 *
 * payment_ext.c
 *		Module entry point of payment_ext: PG_MODULE_MAGIC, _PG_init and the
 *		payment_ext.* configuration parameters.
 *
 * Invariants:
 *	- _PG_init never raises an ERROR: it only defines parameters, so loading
 *	  the library with or without shared_preload_libraries is always safe.
 *	- Parameters that name secrets hold file paths only, never the secrets.
 *
 * IDENTIFICATION
 *		src/payment_ext.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "utils/guc.h"

#include "payment_ext.h"

PG_MODULE_MAGIC;

/* ---------------------------------------------------------------------------
 * Configuration parameters
 * ---------------------------------------------------------------------------
 */
char	   *pe_stripe_api_base = NULL;
char	   *pe_database = NULL;

bool		pe_suppress_row_audit = false;

void		_PG_init(void);

/* Transaction end: transaction-local flags go back to their defaults. */
static void
pe_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			pe_suppress_row_audit = false;
			break;
		default:
			break;
	}
}

/*
 * _PG_init
 *		Define the payment_ext.* parameters and reserve the prefix.
 */
void
_PG_init(void)
{
	DefineCustomStringVariable("payment_ext.stripe_api_base",
							   gettext_noop("Base URL of the Stripe API the outbox worker sends requests to."),
							   gettext_noop("Tests point it at a Stripe stand-in on loopback."),
							   &pe_stripe_api_base,
							   "https://api.stripe.com",
							   PGC_SIGHUP,
							   0,
							   NULL,
							   NULL,
							   NULL);

	DefineCustomStringVariable("payment_ext.database",
							   gettext_noop("Database whose payment.outbox the outbox worker drains."),
							   NULL,
							   &pe_database,
							   "postgres",
							   PGC_POSTMASTER,
							   0,
							   NULL,
							   NULL,
							   NULL);

	MarkGUCPrefixReserved("payment_ext");

	RegisterXactCallback(pe_xact_callback, NULL);
}
