/*-------------------------------------------------------------------------
 *
 * save_method.c
 *		payment.save_method: save a card the user set up with Stripe, as a
 *		sealed PaymentMethod id and display data.
 *
 * Invariants:
 *	- The Stripe id is sealed before the row exists (its context names the
 *	  new row's Id, made here), so no plaintext ever reaches a heap page or
 *	  the WAL.
 *	- With make_default, the user's default moves in this transaction under
 *	  a transaction-level advisory lock per user, taken before the old
 *	  default is cleared: two concurrent calls for one user queue, so
 *	  "UX_PaymentMethods_UserDefault" never fires on a legitimate call.
 *	- Runs as the extension's owner (SECURITY DEFINER, search_path
 *	  pg_catalog, pg_temp); every name it uses is schema-qualified, in
 *	  plans kept per backend.
 *
 * IDENTIFICATION
 *		src/api/save_method.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/crypto.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/uuid.h"

#include "base/call.h"
#include "base/spi.h"
#include "base/text.h"
#include "guard/guard.h"
#include "rules/rules.h"
#include "vault/vault.h"

/*
 * check_method_display
 *		The display columns of a saved method, checked before the row is
 *		written: the table's own CHECK constraints would refuse them too, but
 *		their message shows the whole row, sealed Stripe id included.  The
 *		errors name the argument and the rule, never the value.
 */
static void
check_method_display(const char *last_four, const char *card_brand, int32 year)
{
	static const char *const brands[] = {
		"Visa", "MasterCard", "American Express", "Discover", "JCB", "Diners Club"
	};
	int			i;
	bool		known = false;

	if (strlen(last_four) != 4 ||
		strspn(last_four, "0123456789") != 4)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("last_four must be exactly four digits")));
	for (i = 0; i < (int) lengthof(brands); i++)
		known = known || strcmp(card_brand, brands[i]) == 0;
	if (!known)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("card_brand is not a known card brand"),
				 errhint("Use Visa, MasterCard, American Express, Discover, JCB or Diners Club.")));
	if (year < 2000 || year > 9999)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("expiry_year must be between 2000 and 9999")));
}

/* ---------------------------------------------------------------------------
 * SPI plans (@S@: the schema of the spec's tables)
 * ---------------------------------------------------------------------------
 */
/* one make_default at a time per user: a transaction-level advisory lock */
static PePlan default_lock_plan = {
	"SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('payment_ext.save_method'),"
	" pg_catalog.hashtext($1::pg_catalog.text))",
	1, {UUIDOID}, NULL, 0
};
static PePlan default_clear_plan = {
	"UPDATE @S@.\"PaymentMethods\" SET \"IsDefault\" = false, \"UpdatedAt\" = pg_catalog.now()"
	" WHERE \"UserId\" OPERATOR(pg_catalog.=) $1 AND \"IsDefault\"",
	1, {UUIDOID}, NULL, 0
};
static PePlan method_insert_plan = {
	"INSERT INTO @S@.\"PaymentMethods\" (\"Id\", \"UserId\", \"EncryptedStripePaymentMethodId\","
	" \"LastFourDigits\", \"CardBrand\", \"ExpiryMonth\", \"ExpiryYear\", \"IsDefault\")"
	" VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
	8, {UUIDOID, UUIDOID, TEXTOID, TEXTOID, TEXTOID, INT4OID, INT4OID, BOOLOID}, NULL, 0
};

/* A random (version 4) uuid. */
static pg_uuid_t *
save_method_new_id(void)
{
	pg_uuid_t  *uuid = palloc(sizeof(pg_uuid_t));

	if (!pg_strong_random(uuid->data, UUID_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random uuid")));
	uuid->data[6] = (uuid->data[6] & 0x0f) | 0x40;
	uuid->data[8] = (uuid->data[8] & 0x3f) | 0x80;
	return uuid;
}

/*
 * SQL function: payment.save_method(uuid, text, text, text, integer, integer,
 *                                   boolean) returns uuid
 */
PE_REDACTED_FUNCTION(pe_save_method, save_method_body);

/* The body of pe_save_method. */
static Datum
save_method_body(PG_FUNCTION_ARGS)
{
	static const char *const argnames[] = {
		"user_id", "stripe_payment_method", "last_four", "card_brand",
		"expiry_month", "expiry_year"
	};
	Datum		user_id;
	char	   *stripe_pm;
	char	   *last_four;
	char	   *card_brand;
	int32		month;
	int32		year;
	bool		make_default;
	pg_uuid_t  *id;
	char	   *idtext;
	char	   *sealed;
	int			ret;

	pe_check_args_not_null(fcinfo, argnames, lengthof(argnames));
	user_id = PG_GETARG_DATUM(0);
	stripe_pm = text_to_cstring(PG_GETARG_TEXT_PP(1));
	last_four = text_to_cstring(PG_GETARG_TEXT_PP(2));
	card_brand = text_to_cstring(PG_GETARG_TEXT_PP(3));
	month = PG_GETARG_INT32(4);
	year = PG_GETARG_INT32(5);
	make_default = PG_ARGISNULL(6) ? false : PG_GETARG_BOOL(6);

	pe_check_stripe_id(stripe_pm, "stripe_payment_method");
	pe_guard_text(last_four, "last_four");
	pe_guard_text(card_brand, "card_brand");
	if (month < 1 || month > 12)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("expiry_month must be between 1 and 12")));
	check_method_display(last_four, card_brand, year);
	pe_check_card_expiry(year, month);

	/* seal under the new row's context before the row exists */
	id = save_method_new_id();
	idtext = pe_uuid_text(id);
	sealed = pe_seal(stripe_pm,
					 pe_vault_context("PaymentMethods", "EncryptedStripePaymentMethodId", idtext));
	OPENSSL_cleanse(stripe_pm, strlen(stripe_pm));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	if (make_default)
	{
		ret = SPI_execute_plan(pe_plan(&default_lock_plan), &user_id, NULL, false, 0);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "locking the user's default payment method failed: %s",
				 SPI_result_code_string(ret));
		ret = SPI_execute_plan(pe_plan(&default_clear_plan), &user_id, NULL, false, 0);
		if (ret != SPI_OK_UPDATE)
			elog(ERROR, "clearing the user's default payment method failed: %s",
				 SPI_result_code_string(ret));
	}

	{
		Datum		values[8];

		values[0] = UUIDPGetDatum(id);
		values[1] = user_id;
		values[2] = CStringGetTextDatum(sealed);
		values[3] = CStringGetTextDatum(last_four);
		values[4] = CStringGetTextDatum(card_brand);
		values[5] = Int32GetDatum(month);
		values[6] = Int32GetDatum(year);
		values[7] = BoolGetDatum(make_default);
		ret = SPI_execute_plan(pe_plan(&method_insert_plan), values, NULL, false, 0);
		if (ret != SPI_OK_INSERT)
			elog(ERROR, "inserting the payment method failed: %s", SPI_result_code_string(ret));
	}

	SPI_finish();
	PG_RETURN_UUID_P(id);
}
