/*-------------------------------------------------------------------------
 *
 * guc.h
 *		The payment_ext.* configuration parameters, as C variables.
 *
 * The variables live in base/guc.c, so that every layer may read them;
 * _PG_init (payment_ext.c) defines the parameters over them, with their
 * ranges, units and hooks.  GUC payment_ext.<name> is variable pe_<name>.
 *
 * IDENTIFICATION
 *		src/base/guc.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PE_BASE_GUC_H
#define PE_BASE_GUC_H

/* the outbox worker: where it connects, what it sends, how it retries */
extern char *pe_stripe_api_base;
extern char *pe_database;
extern int	pe_max_in_flight;
extern int	pe_max_attempts;
extern int	pe_max_requests_per_second;
extern int	pe_request_timeout_ms;
extern int	pe_connect_timeout_ms;
extern int	pe_retry_base_ms;
extern int	pe_retry_max_ms;
extern char *pe_worker_role;

/* the token vault and the secret files: paths and a command, never secrets */
extern char *pe_keyring_file;
extern char *pe_keyring_passphrase_command;
extern char *pe_stripe_api_key_file;
extern char *pe_webhook_secret_file;

/* webhooks and settling */
extern int	pe_webhook_tolerance;
extern int	pe_pending_ttl;
extern int	pe_idempotency_window;
extern int	pe_search_lag;
extern char *pe_system_user_id;

/* operations */
extern bool pe_restoring;
extern bool pe_allow_drop;
extern bool pe_adopt_existing_roles;

#endif							/* PE_BASE_GUC_H */
