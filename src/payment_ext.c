/*-------------------------------------------------------------------------
 *
 * payment_ext.c
 *		Module entry point of payment_ext: PG_MODULE_MAGIC, _PG_init and the
 *		payment_ext.* configuration parameters.
 *
 * The module is the top of the layers (src/LAYERS): it defines every
 * parameter over the variables of base/guc.c, with the hooks of the
 * subsystems that own them, and calls the init function of each subsystem
 * that registers callbacks at load time (base: transaction end; outbox:
 * shared memory, the worker, the wake-up at commit).
 *
 * Invariants:
 *	- _PG_init never raises an ERROR: it only defines parameters and
 *	  registers callbacks, so loading the library with or without
 *	  shared_preload_libraries is always safe.
 *	- Parameters that name secrets hold file paths only, never the secrets.
 *
 * IDENTIFICATION
 *		src/payment_ext.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "utils/guc.h"

#include "base/guc.h"
#include "base/xact.h"
#include "outbox/outbox.h"
#include "vault/vault.h"
#include "webhook/webhook.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/*
 * _PG_init
 *		Define the payment_ext.* parameters (their variables are in
 *		base/guc.c) and reserve the prefix; then let the subsystems that
 *		need it register their callbacks.
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

	/*
	 * Reloadable, not PGC_POSTMASTER: a PGC_POSTMASTER parameter may only be
	 * defined while preloading, and this one must also exist in sessions of
	 * servers that do not preload payment_ext.  The worker restarts itself
	 * to follow a change.
	 */
	DefineCustomStringVariable("payment_ext.database",
							   gettext_noop("Database whose payment.outbox the outbox worker drains."),
							   gettext_noop("On a change the worker restarts and connects to the new database."),
							   &pe_database,
							   "postgres",
							   PGC_SIGHUP,
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
							   pe_assign_webhook_secret,
							   NULL);

	/*
	 * Webhooks and settling.  Reloadable only: a session must not widen the
	 * tolerance of its own signature checks.
	 */
	DefineCustomIntVariable("payment_ext.webhook_tolerance",
							gettext_noop("Largest difference between a webhook signature's timestamp and now, either way."),
							gettext_noop("Stripe's libraries use 300 seconds."),
							&pe_webhook_tolerance,
							300,
							1,
							86400,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL,
							NULL,
							NULL);

	DefineCustomIntVariable("payment_ext.pending_ttl",
							gettext_noop("Age after which the outbox worker settles a Pending payment with Stripe."),
							gettext_noop("It looks the PaymentIntent up and records its real state, or cancels it and marks the payment Failed (code expired)."),
							&pe_pending_ttl,
							3600,
							1,
							INT_MAX / 2,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL,
							NULL,
							NULL);

	DefineCustomIntVariable("payment_ext.idempotency_window",
							gettext_noop("How long after it may first have reached Stripe an outbox request is still sent again with its idempotency key."),
							gettext_noop("Stripe keeps idempotency keys for at least 24 hours; after this window the request is never resent, its payment or refund is looked up instead.  Lower it only for tests."),
							&pe_idempotency_window,
							82800,
							1,
							82800,
							PGC_SIGHUP,
							GUC_UNIT_S | GUC_SUPERUSER_ONLY,
							NULL,
							NULL,
							NULL);

	DefineCustomIntVariable("payment_ext.search_lag",
							gettext_noop("How long Stripe's search index may lag behind a request that reached Stripe."),
							gettext_noop("A payment whose create request may have reached Stripe is failed on an empty search only this long after that request was given up."),
							&pe_search_lag,
							3600,
							0,
							86400,
							PGC_SIGHUP,
							GUC_UNIT_S | GUC_SUPERUSER_ONLY,
							NULL,
							NULL,
							NULL);

	DefineCustomStringVariable("payment_ext.system_user_id",
							   gettext_noop("The \"Users\" row that refunds made in Stripe's Dashboard are recorded as processed by."),
							   gettext_noop("Empty: the payment_ext system user, created when the extension creates \"Users\"."),
							   &pe_system_user_id,
							   "",
							   PGC_SIGHUP,
							   0,
							   NULL,
							   NULL,
							   NULL);

	/*
	 * Outbox worker.  All reloadable: the worker reads them at each turn of
	 * its loop.  Ranges: README, "Outbox worker".
	 */
	DefineCustomIntVariable("payment_ext.max_in_flight",
							gettext_noop("Most Stripe requests the outbox worker keeps in flight at once."),
							NULL,
							&pe_max_in_flight,
							64,
							1,
							1000,
							PGC_SIGHUP,
							0,
							NULL,
							NULL,
							NULL);

	/*
	 * issue 20: the retry budget of a request is time (idempotency_window),
	 * not a count; max_attempts keeps its name but bounds only answers the
	 * worker cannot use (README, "Retry policy").
	 */
	DefineCustomIntVariable("payment_ext.max_attempts",
							gettext_noop("Answers the outbox worker cannot use (malformed, or whose recording fails) before an outbox request is dead."),
							gettext_noop("Network errors, timeouts, 5xx, 409 and 429 do not count: they are retried with the same idempotency key until payment_ext.idempotency_window closes."),
							&pe_max_attempts,
							8,
							1,
							100,
							PGC_SIGHUP,
							0,
							NULL,
							NULL,
							NULL);

	DefineCustomIntVariable("payment_ext.max_requests_per_second",
							gettext_noop("Client-side rate limit of the outbox worker, in requests per second."),
							gettext_noop("0 picks it from the API key: 20 for sk_test_ keys (Stripe allows 25 in test mode), 80 for live keys (Stripe allows 100)."),
							&pe_max_requests_per_second,
							0,
							0,
							100000,
							PGC_SIGHUP,
							0,
							NULL,
							NULL,
							NULL);

	DefineCustomIntVariable("payment_ext.request_timeout_ms",
							gettext_noop("Time limit of one Stripe request, connection included."),
							NULL,
							&pe_request_timeout_ms,
							30000,
							100,
							600000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL,
							NULL,
							NULL);

	DefineCustomIntVariable("payment_ext.connect_timeout_ms",
							gettext_noop("Time limit of connecting to Stripe."),
							NULL,
							&pe_connect_timeout_ms,
							5000,
							100,
							60000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL,
							NULL,
							NULL);

	DefineCustomIntVariable("payment_ext.retry_base_ms",
							gettext_noop("Backoff of the first retry of an outbox request; it doubles with each attempt."),
							gettext_noop("The delay is drawn uniformly below min(retry_max_ms, retry_base_ms * 2^(attempts-1)) (full jitter); Retry-After is a floor."),
							&pe_retry_base_ms,
							500,
							1,
							3600000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL,
							NULL,
							NULL);

	DefineCustomIntVariable("payment_ext.retry_max_ms",
							gettext_noop("Longest backoff between two attempts of an outbox request."),
							NULL,
							&pe_retry_max_ms,
							60000,
							1,
							86400000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL,
							NULL,
							NULL);

	DefineCustomStringVariable("payment_ext.worker_role",
							   gettext_noop("Role whose privileges the outbox worker's SQL runs with."),
							   gettext_noop("The worker connects as the bootstrap superuser and switches to this role for every transaction."),
							   &pe_worker_role,
							   "payment_worker",
							   PGC_SIGHUP,
							   0,
							   NULL,
							   NULL,
							   NULL);

	/*
	 * Operations (api/operations.c, base/xact.c).  Superuser-only to set;
	 * restoring is also honoured only in a superuser's session.
	 */
	DefineCustomBoolVariable("payment_ext.restoring",
							 gettext_noop("Load rows into the extension's tables exactly as given (pg_restore)."),
							 gettext_noop("While on, in a superuser's session, INSERTs into the payment tables skip the rules, the audit and the hash-chain triggers; set it only for pg_restore."),
							 &pe_restoring,
							 false,
							 PGC_SUSET,
							 0,
							 NULL,
							 NULL,
							 NULL);

	DefineCustomBoolVariable("payment_ext.allow_drop",
							 gettext_noop("Allow DROP EXTENSION payment_ext while its tables hold payments."),
							 NULL,
							 &pe_allow_drop,
							 false,
							 PGC_SUSET,
							 0,
							 NULL,
							 NULL,
							 NULL);

	DefineCustomBoolVariable("payment_ext.adopt_existing_roles",
							 gettext_noop("Let CREATE EXTENSION payment_ext grant rights to existing roles named payment_app, payment_admin, payment_reporting or payment_worker that it did not create."),
							 NULL,
							 &pe_adopt_existing_roles,
							 false,
							 PGC_SUSET,
							 0,
							 NULL,
							 NULL,
							 NULL);

	MarkGUCPrefixReserved("payment_ext");

	/* each subsystem registers its own callbacks */
	pe_base_init();
	/* shared memory and the worker: only under shared_preload_libraries */
	pe_outbox_init();
}
