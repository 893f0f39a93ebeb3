/*-------------------------------------------------------------------------
 *
 * client_secret.c
 *		payment.client_secret(): the client secret of a payment's
 *		PaymentIntent, for Stripe.js in the paying user's browser.
 *
 * Invariants:
 *	- Only the paying user (app.current_user_id) or an administrator
 *	  (payment_admin, or app.user_role Admin) reads it; anyone else is
 *	  refused, and the refusal is logged.
 *	- The secret is stored sealed (payment.intents.client_secret); the
 *	  opened copy in SPI's memory is wiped before SPI_finish frees it.
 *
 * IDENTIFICATION
 *		src/api/client_secret.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/uuid.h"

#include "audit/audit.h"
#include "base/spi.h"
#include "base/text.h"
#include "vault/vault.h"

static PePlan client_secret_plan = {
	"SELECT p.\"UserId\", i.client_secret FROM @S@.\"Payments\" p"
	" LEFT JOIN payment.intents i ON i.payment_id = p.\"Id\" WHERE p.\"Id\" = $1",
	1, {UUIDOID}, NULL, 0
};

/* May the caller read the client secret of a payment of user owner? */
static bool
client_secret_allowed(Datum owner)
{
	const char *me = GetConfigOption("app.current_user_id", true, false);
	const char *role = GetConfigOption("app.user_role", true, false);
	Oid			admin = get_role_oid("payment_admin", true);

	if (OidIsValid(admin) && is_member_of_role(GetOuterUserId(), admin))
		return true;
	if (role != NULL && strcmp(role, "Admin") == 0)
		return true;
	if (me != NULL && me[0] != '\0')
	{
		return pg_strcasecmp(me, pe_uuid_text(DatumGetUUIDP(owner))) == 0;
	}
	return false;
}

/* SQL function: payment.client_secret(uuid) returns text */
PG_FUNCTION_INFO_V1(pe_client_secret);
Datum
pe_client_secret(PG_FUNCTION_ARGS)
{
	Datum		payment_id = PG_GETARG_DATUM(0);
	char	   *pid = pe_uuid_text(DatumGetUUIDP(payment_id));
	bool		isnull;
	Datum		owner;
	char	   *sealed = NULL;
	char	   *secret;
	text	   *result;
	MemoryContext callercxt = CurrentMemoryContext;

	SPI_connect();
	pe_spi_find_payment(&client_secret_plan, payment_id, true);
	owner = pe_spi_getdatum(0, 1, &isnull);
	if (!client_secret_allowed(owner))
	{
		pe_audit_log_refusal("payment.client_secret", "not the paying user nor an admin");
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for the client secret of payment %s", pid),
				 errdetail("Only the paying user (app.current_user_id) or an admin may read it.")));
	}
	(void) pe_spi_getdatum(0, 2, &isnull);
	if (isnull)
	{
		SPI_finish();
		PG_RETURN_NULL();
	}
	sealed = TextDatumGetCString(pe_spi_getdatum(0, 2, &isnull));
	secret = pe_open(sealed, pe_vault_context("payment.intents", "client_secret", pid));

	/*
	 * The plaintext lives in SPI's memory, which SPI_finish frees: copy it
	 * into the caller's context first, then wipe SPI's copy while it is
	 * still ours.
	 */
	{
		MemoryContext spicxt = MemoryContextSwitchTo(callercxt);

		result = cstring_to_text(secret);
		MemoryContextSwitchTo(spicxt);
	}
	explicit_bzero(secret, strlen(secret));
	SPI_finish();
	PG_RETURN_TEXT_P(result);
}
