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
#include "vault.h"

PG_MODULE_MAGIC;

/* ---------------------------------------------------------------------------
 * Configuration parameters
 * ---------------------------------------------------------------------------
 */
char	   *pe_stripe_api_base = NULL;
char	   *pe_database = NULL;
char	   *pe_keyring_file = NULL;
char	   *pe_keyring_passphrase_command = NULL;
char	   *pe_stripe_api_key_file = NULL;
char	   *pe_webhook_secret_file = NULL;

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

	/*
	 * Token vault.  Paths and a command only: superuser-only (hidden from
	 * other roles' SHOW and pg_settings), reloadable, never per session.
	 */
	DefineCustomStringVariable("payment_ext.keyring_file",
							   gettext_noop("Absolute path of the keyring file: one \"<key-id> <64 hex digits>\" per line, newest last."),
							   gettext_noop("Must be outside the data directory and not accessible by group or others."),
							   &pe_keyring_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   pe_check_secret_path,
							   pe_assign_keyring,
							   NULL);

	DefineCustomStringVariable("payment_ext.keyring_passphrase_command",
							   gettext_noop("Command that prints the passphrase of an encrypted keyring file."),
							   gettext_noop("Like ssl_passphrase_command: %p is replaced by a prompt; empty means the keyring file is not encrypted."),
							   &pe_keyring_passphrase_command,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL,
							   pe_assign_keyring,
							   NULL);

	DefineCustomStringVariable("payment_ext.stripe_api_key_file",
							   gettext_noop("Absolute path of the file holding the Stripe secret API key."),
							   NULL,
							   &pe_stripe_api_key_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   pe_check_secret_path,
							   NULL,
							   NULL);

	DefineCustomStringVariable("payment_ext.webhook_secret_file",
							   gettext_noop("Absolute path of the file holding the Stripe webhook signing secret."),
							   NULL,
							   &pe_webhook_secret_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   pe_check_secret_path,
							   NULL,
							   NULL);

	MarkGUCPrefixReserved("payment_ext");

	RegisterXactCallback(pe_xact_callback, NULL);
}
