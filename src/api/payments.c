/*-------------------------------------------------------------------------
 *
 * payments.c
 *		payment.create and payment.retry: the application's way in, with
 *		idempotency keys (idempotency.c) and the transactional outbox
 *		(stripe/queue.c).  payment.refund is in refunds.c.
 *
 * Invariants:
 *	- Each function checks all of its arguments before it touches a table:
 *	  a refused call changes nothing (and its transaction rolls back anyway).
 *	- A payment (or refund) and the outbox row that asks Stripe for it are
 *	  inserted in the caller's transaction: the request exists if and only if
 *	  the change commits.
 *	- payment.create locks the registration row (FOR NO KEY UPDATE) before it
 *	  looks for a live payment, so concurrent calls for one registration are
 *	  serialised and the loser gets a clear error; the unique index
 *	  "UX_Payments_EventRegistration_Live" is the backstop.
 *	- An idempotency key is claimed before any other write (idempotency.c).
 *
 * IDENTIFICATION
 *		src/api/payments.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/uuid.h"

#include "api/api.h"
#include "audit/audit.h"
#include "base/call.h"
#include "base/security.h"
#include "base/spi.h"
#include "base/status.h"
#include "base/text.h"
#include "guard/guard.h"
#include "rules/rules.h"
#include "stripe/stripe.h"
#include "vault/vault.h"

/* Lower-case copy of an ASCII currency code, as Stripe takes it. */
static char *
stripe_currency(const char *currency)
{
	char	   *s = pstrdup(currency);
	char	   *p;

	for (p = s; *p; p++)
		*p = pg_ascii_tolower((unsigned char) *p);
	return s;
}

/* ---------------------------------------------------------------------------
 * payment.create
 * ---------------------------------------------------------------------------
 */
static PePlan lock_registration_plan = {
	"SELECT \"UserId\" FROM ONLY @S@.\"EventRegistrations\" WHERE \"Id\" OPERATOR(pg_catalog.=) $1 FOR NO KEY UPDATE",
	1, {UUIDOID}, NULL, 0
};

/* live: Pending, Completed or PartiallyRefunded (issue 17, item 9) */
static PePlan live_payment_plan = {
	"SELECT \"Id\", \"Status\" FROM @S@.\"Payments\""
	" WHERE \"EventRegistrationId\" = $1 AND \"Status\" IN (0, 1, 4) LIMIT 1",
	1, {UUIDOID}, NULL, 0
};

static PePlan saved_method_plan = {
	"SELECT \"UserId\", \"IsActive\" FROM @S@.\"PaymentMethods\" WHERE \"Id\" = $1",
	1, {UUIDOID}, NULL, 0
};

static PePlan payment_insert_plan = {
	"INSERT INTO @S@.\"Payments\" (\"Id\", \"EventRegistrationId\", \"UserId\","
	" \"AmountValue\", \"Currency\", \"SlidingScalePercentage\", \"Status\","
	" \"PaymentMethodType\", \"Metadata\")"
	" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
	9, {UUIDOID, UUIDOID, UUIDOID, NUMERICOID, TEXTOID, NUMERICOID, INT4OID, INT4OID, JSONBOID},
	NULL, 0
};

/*
 * lock_registration_for_payment
 *		Lock the registration and raise if it is unknown, belongs to a user
 *		other than user_id (unless user_id is NULL: payment.retry, whose
 *		payment was checked when it was created), or already has a live
 *		(Pending, Completed or PartiallyRefunded) payment.  Caller is
 *		connected to SPI.
 */
static void
lock_registration_for_payment(Datum registration_id, Datum *user_id)
{
	bool		isnull;
	int			rc;

	pe_check_app_table(pe_extension_namespace(), "EventRegistrations");
	rc = SPI_execute_plan(pe_plan(&lock_registration_plan), &registration_id, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "locking the registration failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("registration %s does not exist", pe_uuid_text(DatumGetUUIDP(registration_id)))));
	if (user_id != NULL)
	{
		Datum		owner = pe_spi_getdatum(0, 1, &isnull);

		if (isnull || !DatumGetBool(DirectFunctionCall2(uuid_eq, owner, *user_id)))
		{
			pe_audit_log_refusal("payment", "registration of another user");
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("registration %s belongs to another user",
							pe_uuid_text(DatumGetUUIDP(registration_id))),
					 errdetail("A payment's \"UserId\" is the user of its registration."),
					 errhint("Pass the registration's own user as user_id.")));
		}
	}

	rc = SPI_execute_plan(pe_plan(&live_payment_plan), &registration_id, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "looking for a live payment failed: %s", SPI_result_code_string(rc));
	if (SPI_processed > 0)
	{
		int			status = DatumGetInt32(pe_spi_getdatum(0, 2, &isnull));

		pe_audit_log_refusal("payment", "registration already has a live payment");
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("registration %s already has a %s payment",
						pe_uuid_text(DatumGetUUIDP(registration_id)), pe_payment_status_name(status)),
				 errdetail("A registration has at most one Pending, Completed or PartiallyRefunded payment (one paid payment until it is fully refunded)."),
				 errhint("A Failed payment is retried with payment.retry().")));
	}
}

/*
 * check_stripe_minimum
 *		Raise unless amount (not zero) is at least Stripe's minimum charge in
 *		currency: 0.50 USD, EUR and CAD, 0.30 GBP.  A smaller charge would
 *		only fail at Stripe (amount_too_small) after the payment was made.
 */
static void
check_stripe_minimum(Numeric amount, const char *currency)
{
	int64		minimum = strcmp(currency, "GBP") == 0 ? 30 : 50;

	if (pe_minor_units(amount) < minimum)
	{
		pe_audit_log_refusal("payment", "amount below Stripe's minimum charge");
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("an amount of %s %s is below Stripe's minimum charge of %s %s",
						pe_numeric_text(amount),
						currency, minimum == 30 ? "0.30" : "0.50", currency),
				 errdetail("The amount is the full price after the sliding-scale discount."),
				 errhint("A zero amount makes a NotRequired payment; Stripe charges at least 0.50 USD, EUR or CAD and 0.30 GBP.")));
	}
}

/* SQL function: payment.create(uuid, uuid, numeric, numeric, text, int, text, uuid, text, jsonb) returns uuid */
PE_REDACTED_FUNCTION(pe_create, create_body);

/* The body of pe_create. */
static Datum
create_body(PG_FUNCTION_ARGS)
{
	static const char *const argnames[] = {
		"registration_id", "user_id", "full_price", "discount_pct", "currency",
		"method_type", NULL, NULL, NULL, "metadata"
	};
	Datum		registration_id;
	Datum		user_id;
	Numeric		full_price;
	Numeric		discount;
	char	   *currency;
	int32		method_type;
	char	   *stripe_pm = NULL;
	bool		has_saved = !PG_ARGISNULL(7);
	char	   *idem_key;
	PeArgHash	h;
	Datum		metadata;
	Numeric		amount;
	bool		zero;
	Datum		payment_id;
	Datum		existing;
	bytea	   *hash = NULL;
	bool		isnull;
	int			rc;

	/* arguments, all checked before anything is written */
	pe_check_args_not_null(fcinfo, argnames, lengthof(argnames));
	registration_id = PG_GETARG_DATUM(0);
	user_id = PG_GETARG_DATUM(1);
	full_price = PG_GETARG_NUMERIC(2);
	discount = PG_GETARG_NUMERIC(3);
	currency = text_to_cstring(PG_GETARG_TEXT_PP(4));
	method_type = PG_GETARG_INT32(5);
	metadata = PG_GETARG_DATUM(9);

	pe_check_currency(currency, "currency");
	amount = pe_compute_price(full_price, discount);
	zero = pe_numeric_cmp(amount, int64_to_numeric(0)) == 0;
	if (!zero)
		check_stripe_minimum(amount, currency);
	if (method_type < 0 || method_type > 4)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("method_type %d is not a payment method type", method_type),
				 errhint("0 SavedCard, 1 NewCard, 2 BankTransfer, 3 PayPal, 4 Venmo.")));
	if (!PG_ARGISNULL(6))
	{
		stripe_pm = text_to_cstring(PG_GETARG_TEXT_PP(6));
		if (stripe_pm[0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("stripe_payment_method must not be empty"),
					 errhint("Pass NULL to let the browser confirm the payment with Stripe.js.")));
		pe_check_stripe_id(stripe_pm, "stripe_payment_method");
	}
	if (stripe_pm != NULL && has_saved)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("give stripe_payment_method or saved_method_id, not both")));
	if (has_saved)
		method_type = 0;		/* a saved method is a SavedCard */
	pe_check_metadata_object(metadata, "metadata");
	pe_guard_jsonb(DatumGetJsonbP(metadata), "metadata");
	idem_key = pe_idem_key_arg(fcinfo, 8, &h);
	if (idem_key != NULL)
	{
		pe_arghash_add(&h, pe_uuid_text(DatumGetUUIDP(registration_id)));
		pe_arghash_add(&h, pe_uuid_text(DatumGetUUIDP(user_id)));
		pe_arghash_add_numeric(&h, full_price);
		pe_arghash_add_numeric(&h, discount);
		pe_arghash_add(&h, currency);
		pe_arghash_add(&h, psprintf("%d", method_type));
		pe_arghash_add(&h, stripe_pm);
		pe_arghash_add(&h, has_saved ? pe_uuid_text(DatumGetUUIDP(PG_GETARG_DATUM(7))) : NULL);
		pe_arghash_add(&h, JsonbToCString(NULL, &DatumGetJsonbP(metadata)->root, VARSIZE(DatumGetJsonbP(metadata))));
		hash = pe_arghash_final(&h);
	}

	payment_id = DirectFunctionCall1(gen_random_uuid, (Datum) 0);

	SPI_connect();
	if (pe_idem_replay("create", idem_key, hash, payment_id, &existing))
		PG_RETURN_DATUM(existing);

	lock_registration_for_payment(registration_id, &user_id);

	if (has_saved)
	{
		Datum		saved = PG_GETARG_DATUM(7);

		rc = SPI_execute_plan(pe_plan(&saved_method_plan), &saved, NULL, false, 1);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "looking up the saved method failed");
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_NO_DATA_FOUND),
					 errmsg("saved payment method %s does not exist", pe_uuid_text(DatumGetUUIDP(saved)))));
		if (!DatumGetBool(DirectFunctionCall2(uuid_eq, pe_spi_getdatum(0, 1, &isnull), user_id)))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("saved payment method %s belongs to another user", pe_uuid_text(DatumGetUUIDP(saved)))));
		if (!DatumGetBool(pe_spi_getdatum(0, 2, &isnull)))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("saved payment method %s is no longer active", pe_uuid_text(DatumGetUUIDP(saved)))));
	}

	{
		Datum		args[9];

		args[0] = payment_id;
		args[1] = registration_id;
		args[2] = user_id;
		args[3] = NumericGetDatum(amount);
		args[4] = CStringGetTextDatum(currency);
		args[5] = NumericGetDatum(discount);
		args[6] = Int32GetDatum(zero ? PE_PAYMENT_NOT_REQUIRED : PE_PAYMENT_PENDING);
		args[7] = Int32GetDatum(method_type);
		args[8] = metadata;
		rc = SPI_execute_plan(pe_plan(&payment_insert_plan), args, NULL, false, 0);
		if (rc != SPI_OK_INSERT)
			elog(ERROR, "inserting the payment failed: %s", SPI_result_code_string(rc));
	}

	if (!zero)
	{
		StringInfoData req;
		char	   *pid = pe_uuid_text(DatumGetUUIDP(payment_id));
		char	   *outbox_key = psprintf("pe-%s-pi-1", pid);

		initStringInfo(&req);
		appendStringInfoChar(&req, '{');
		pe_json_field(&req, "amount", psprintf(INT64_FORMAT, pe_minor_units(amount)));
		pe_json_field(&req, "currency", stripe_currency(currency));
		pe_json_field(&req, "metadata[payment_id]", pid);
		pe_json_field(&req, "metadata[registration_id]", pe_uuid_text(DatumGetUUIDP(registration_id)));
		pe_json_field(&req, "metadata[attempt]", "1");
		pe_json_field(&req, "automatic_payment_methods[enabled]", "true");
		if (stripe_pm != NULL || has_saved)
		{
			/* confirmed on the server: no redirect-based method can finish it */
			pe_json_field(&req, "automatic_payment_methods[allow_redirects]", "never");
			pe_json_field(&req, "confirm", "true");
			if (stripe_pm != NULL)
				pe_json_field(&req, "payment_method",
						   pe_seal(stripe_pm, pe_outbox_context("payment_method", outbox_key)));
			else
				pe_json_field(&req, "saved_method_id", pe_uuid_text(DatumGetUUIDP(PG_GETARG_DATUM(7))));
		}
		appendStringInfoChar(&req, '}');
		pe_outbox_enqueue("payment_intent.create", DatumGetUUIDP(payment_id), NULL, req.data,
						  outbox_key);
	}
	SPI_finish();
	PG_RETURN_DATUM(payment_id);
}

/* ---------------------------------------------------------------------------
 * payment.retry
 * ---------------------------------------------------------------------------
 */
static PePlan retry_lookup_plan = {
	"SELECT \"Status\", \"EventRegistrationId\" FROM @S@.\"Payments\" WHERE \"Id\" = $1 FOR NO KEY UPDATE",
	1, {UUIDOID}, NULL, 0
};

/*
 * A new attempt has no PaymentIntent until Stripe makes it (issue 17, item
 * 2): the earlier attempt's id and state go, so that nothing reads or
 * changes the payment through them again.
 */
static PePlan retry_update_plan = {
	"UPDATE @S@.\"Payments\" SET \"Status\" = 0, \"EncryptedStripePaymentIntentId\" = NULL"
	" WHERE \"Id\" = $1",
	1, {UUIDOID}, NULL, 0
};
static PePlan retry_old_intent_plan = {
	"SELECT p.\"EncryptedStripePaymentIntentId\", i.stripe_status"
	" FROM @S@.\"Payments\" p LEFT JOIN payment.intents i ON i.payment_id = p.\"Id\""
	" WHERE p.\"Id\" = $1 AND p.\"EncryptedStripePaymentIntentId\" IS NOT NULL",
	1, {UUIDOID}, NULL, 0
};
static PePlan retry_forget_intent_plan = {
	"DELETE FROM payment.intents WHERE payment_id = $1",
	1, {UUIDOID}, NULL, 0
};

/*
 * The newest create's request, as payment.create made it: a withdrawn
 * create's probe (stripe/stripe.h) gets its confirm back.
 */
static PePlan retry_request_plan = {
	"SELECT (CASE WHEN request ? 'metadata[withdrawn]'"
	"  THEN (request - 'metadata[withdrawn]') ||"
	"       CASE WHEN request->>'metadata[withdrawn]' = 'false' THEN '{}'::jsonb"
	"            ELSE pg_catalog.jsonb_build_object('confirm', request->>'metadata[withdrawn]') END"
	"  ELSE request END)::text,"
	" (SELECT pg_catalog.count(*) FROM payment.outbox o2"
	"  WHERE o2.payment_id = $1 AND o2.kind = 'payment_intent.create'), idempotency_key"
	" FROM payment.outbox WHERE payment_id = $1 AND kind = 'payment_intent.create'"
	" ORDER BY id DESC LIMIT 1",
	1, {UUIDOID}, NULL, 0
};

/* SQL function: payment.retry(uuid) returns void */
PE_REDACTED_FUNCTION(pe_retry, retry_body);

/* The body of pe_retry. */
static Datum
retry_body(PG_FUNCTION_ARGS)
{
	static const char *const argnames[] = {"payment_id"};
	Datum		payment_id;
	Datum		registration_id;
	bool		isnull;
	int			status;
	int			rc;
	char	   *request;
	char	   *old_key;
	char	   *new_key;
	int64		n;

	pe_check_args_not_null(fcinfo, argnames, lengthof(argnames));
	payment_id = PG_GETARG_DATUM(0);

	SPI_connect();
	pe_spi_find_payment(&retry_lookup_plan, payment_id, false);
	status = DatumGetInt32(pe_spi_getdatum(0, 1, &isnull));
	registration_id = pe_spi_getdatum(0, 2, &isnull);
	if (status != PE_PAYMENT_FAILED)
	{
		pe_audit_log_refusal("payment retry", "payment is not Failed");
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("payment %s is %s and cannot be retried",
						pe_uuid_text(DatumGetUUIDP(payment_id)), pe_payment_status_name(status)),
				 errhint("Only Failed payments are retried.")));
	}
	lock_registration_for_payment(registration_id, NULL);

	rc = SPI_execute_plan(pe_plan(&retry_request_plan), &payment_id, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "looking up the payment's request failed");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("payment %s was never sent to Stripe and cannot be retried",
						pe_uuid_text(DatumGetUUIDP(payment_id)))));
	request = TextDatumGetCString(pe_spi_getdatum(0, 1, &isnull));
	n = DatumGetInt64(pe_spi_getdatum(0, 2, &isnull));
	old_key = TextDatumGetCString(pe_spi_getdatum(0, 3, &isnull));
	new_key = psprintf("pe-%s-pi-" INT64_FORMAT, pe_uuid_text(DatumGetUUIDP(payment_id)), n + 1);

	/* the earlier attempt's PaymentIntent, unless Stripe finished it, is canceled */
	rc = SPI_execute_plan(pe_plan(&retry_old_intent_plan), &payment_id, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "looking up the payment's PaymentIntent failed");
	if (SPI_processed > 0)
	{
		Datum		sealed = pe_spi_getdatum(0, 1, &isnull);
		Datum		st = pe_spi_getdatum(0, 2, &isnull);
		char	   *old_status = isnull ? "requires_payment_method" : TextDatumGetCString(st);

		/* a charged one is the payment's charge: it was Failed by mistake */
		if (strcmp(old_status, "succeeded") == 0)
		{
			pe_audit_log_refusal("payment retry", "Stripe charged the payment");
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("payment %s cannot be retried: Stripe reported its PaymentIntent succeeded",
							pe_uuid_text(DatumGetUUIDP(payment_id))),
					 errhint("The customer was charged: see payment.reconcile, and set the payment Completed with payment.resolve().")));
		}
		else
		{
			char	   *old_pi = pe_open(TextDatumGetCString(sealed),
										 psprintf("Payments.EncryptedStripePaymentIntentId:%s",
												  pe_uuid_text(DatumGetUUIDP(payment_id))));

			pe_outbox_undo_intent(DatumGetUUIDP(payment_id), old_pi, old_status,
								  "payment.retry made a new attempt");
			pe_secret_cleanse(old_pi);
		}
	}

	rc = SPI_execute_plan(pe_plan(&retry_update_plan), &payment_id, NULL, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "updating the payment failed");
	rc = SPI_execute_plan(pe_plan(&retry_forget_intent_plan), &payment_id, NULL, false, 0);
	if (rc != SPI_OK_DELETE)
		elog(ERROR, "forgetting the earlier PaymentIntent failed");
	/* the same request, under a new key and attempt: a new PaymentIntent */
	request = pe_reseal_request(request, old_key, new_key);
	request[strlen(request) - 1] = '\0';	/* reopen the object: a later key wins */
	request = psprintf("%s%s\"metadata[attempt]\": \"" INT64_FORMAT "\"}", request,
					   strlen(request) > 1 ? ", " : "", n + 1);
	pe_outbox_enqueue("payment_intent.create", DatumGetUUIDP(payment_id), NULL, request, new_key);
	/* an earlier attempt's request still waiting is withdrawn (stripe.h) */
	pe_outbox_withdraw(payment_id, false);
	SPI_finish();
	PG_RETURN_VOID();
}

