/*-------------------------------------------------------------------------
 *
 * guc.c
 *		The variables of the payment_ext.* configuration parameters, with
 *		their boot values.  _PG_init (payment_ext.c) defines the parameters
 *		over them; the defaults there are the same.
 *
 * IDENTIFICATION
 *		src/base/guc.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "base/guc.h"

char	   *pe_stripe_api_base = NULL;
char	   *pe_database = NULL;
int			pe_max_in_flight = 64;
int			pe_max_attempts = 8;
int			pe_max_requests_per_second = 0;
int			pe_request_timeout_ms = 30000;
int			pe_connect_timeout_ms = 5000;
int			pe_retry_base_ms = 500;
int			pe_retry_max_ms = 60000;
char	   *pe_worker_role = NULL;

char	   *pe_keyring_file = NULL;
char	   *pe_keyring_passphrase_command = NULL;
char	   *pe_stripe_api_key_file = NULL;
char	   *pe_webhook_secret_file = NULL;

int			pe_webhook_tolerance = 300;
int			pe_pending_ttl = 3600;
int			pe_idempotency_window = 82800;
int			pe_search_lag = 3600;
char	   *pe_system_user_id = NULL;

bool		pe_restoring = false;
bool		pe_allow_drop = false;
bool		pe_adopt_existing_roles = false;
