/*-------------------------------------------------------------------------
 *
 * pricing.c
 *		Money checks and sliding-scale pricing, in numeric arithmetic.
 *
 * Invariants:
 *	- Money is numeric(10,2) in USD, EUR, GBP or CAD (two minor digits each);
 *	  never a float anywhere.
 *	- The sliding-scale amount is full price x (1 - discount/100), rounded
 *	  half-up to the cent (numeric round() rounds half away from zero, which
 *	  is half-up for the non-negative amounts allowed here).
 *	- The payer's discount is 0 to 75 percent inclusive, at most two
 *	  decimals.
 *
 * IDENTIFICATION
 *		src/rules/pricing.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "base/security.h"
#include "base/spi.h"
#include "base/text.h"
#include "rules/rules.h"

/* The currencies DESIGN.md allows, each with two minor digits. */
static const char *const pe_currencies[] = {"USD", "EUR", "GBP", "CAD"};

/* numeric(10,2) holds values below 10^8 */
#define PE_MONEY_LIMIT		INT64CONST(100000000)
#define PE_MAX_DISCOUNT		75

/* Three-way comparison of two numerics. */
int
pe_numeric_cmp(Numeric a, Numeric b)
{
	return DatumGetInt32(DirectFunctionCall2(numeric_cmp,
											 NumericGetDatum(a),
											 NumericGetDatum(b)));
}

/* round(value, 2) */
static Numeric
round_cents(Numeric value)
{
	return DatumGetNumeric(DirectFunctionCall2(numeric_round,
											   NumericGetDatum(value),
											   Int32GetDatum(2)));
}


/*
 * pe_check_currency
 *		Raise unless currency is one of USD, EUR, GBP, CAD, exactly (upper
 *		case).  what names the argument or column in the message.
 */
void
pe_check_currency(const char *currency, const char *what)
{
	int			i;

	if (currency == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what),
				 errhint("Currencies are USD, EUR, GBP and CAD.")));
	for (i = 0; i < (int) lengthof(pe_currencies); i++)
		if (strcmp(currency, pe_currencies[i]) == 0)
			return;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s is not a supported currency", what),
			 errdetail("Currencies are USD, EUR, GBP and CAD, in upper case.")));
}

/*
 * pe_check_money
 *		Raise unless value is a finite amount of money that fits numeric(10,2)
 *		exactly: not negative (not zero either, unless allow_zero), at most
 *		two decimals, below 100,000,000.
 */
void
pe_check_money(Numeric value, const char *what, bool allow_zero)
{
	int			sign;

	if (numeric_is_nan(value) || numeric_is_inf(value))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a finite amount", what),
				 errdetail("NaN and Infinity are not amounts of money.")));
	sign = pe_numeric_cmp(value, int64_to_numeric(0));
	if (sign < 0 || (sign == 0 && !allow_zero))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be %s", what, allow_zero ? "zero or more" : "more than zero"),
				 errdetail("The value given was %s.", pe_numeric_text(value))));
	if (pe_numeric_cmp(value, round_cents(value)) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must have at most two decimals", what),
				 errdetail("The value given was %s; amounts are in cents.", pe_numeric_text(value))));
	if (pe_numeric_cmp(value, int64_to_numeric(PE_MONEY_LIMIT)) >= 0)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("%s does not fit numeric(10,2)", what),
				 errdetail("Amounts must be below 100000000.00.")));
}

/*
 * pe_check_discount
 *		Raise unless pct is a sliding-scale discount: 0 to 75 inclusive, at
 *		most two decimals, finite.
 */
void
pe_check_discount(Numeric pct)
{
	if (numeric_is_nan(pct) || numeric_is_inf(pct))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("discount_pct must be a finite number"),
				 errhint("The sliding-scale discount is 0 to 75 percent.")));
	if (pe_numeric_cmp(pct, int64_to_numeric(0)) < 0 ||
		pe_numeric_cmp(pct, int64_to_numeric(PE_MAX_DISCOUNT)) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("discount_pct must be between 0 and 75"),
				 errdetail("The value given was %s.", pe_numeric_text(pct)),
				 errhint("The sliding-scale discount is 0 to 75 percent.")));
	if (pe_numeric_cmp(pct, round_cents(pct)) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("discount_pct must have at most two decimals"),
				 errdetail("The value given was %s.", pe_numeric_text(pct))));
}

/*
 * pe_compute_price
 *		full_price x (1 - discount_pct/100), rounded half-up to the cent.
 *		Checks both arguments first.  The product is exact (numeric
 *		multiplication keeps every digit), the division by 100 is exact at the
 *		scale numeric_div chooses (at least six decimals here), and the one
 *		rounding is the final one.
 */
Numeric
pe_compute_price(Numeric full_price, Numeric discount_pct)
{
	Numeric		hundred = int64_to_numeric(100);
	Numeric		share;
	Numeric		product;
	Numeric		quotient;

	pe_check_money(full_price, "full_price", true);
	pe_check_discount(discount_pct);

	share = numeric_sub_opt_error(hundred, discount_pct, NULL);
	product = numeric_mul_opt_error(full_price, share, NULL);
	quotient = numeric_div_opt_error(product, hundred, NULL);
	return round_cents(quotient);
}

/*
 * pe_minor_units
 *		An amount checked by pe_check_money as integer minor units (cents),
 *		as Stripe takes it.
 */
int64
pe_minor_units(Numeric amount)
{
	Numeric		cents = numeric_mul_opt_error(amount, int64_to_numeric(100), NULL);

	return DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(cents)));
}

/* SQL function: payment.price(numeric, numeric) returns numeric */
PG_FUNCTION_INFO_V1(pe_price);
Datum
pe_price(PG_FUNCTION_ARGS)
{
	PG_RETURN_NUMERIC(pe_compute_price(PG_GETARG_NUMERIC(0), PG_GETARG_NUMERIC(1)));
}

/* ---------------------------------------------------------------------------
 * payment.quote: the price of an event's pricing tier
 * ---------------------------------------------------------------------------
 */
static PePlan quote_plan = {
	"SELECT \"PricingTiers\"::pg_catalog.jsonb FROM ONLY @S@.\"Events\" WHERE \"Id\" OPERATOR(pg_catalog.=) $1",
	1, {UUIDOID}, NULL, 0
};

/* Raise: the tiers of an event are not the documented shape. */
static void
quote_malformed(const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_DATA_EXCEPTION),
			 errmsg("pricing tiers of the event are malformed"),
			 errdetail("%s", why),
			 errhint("\"Events\".\"PricingTiers\" is a JSON array of objects like {\"name\": \"standard\", \"price\": 40.00, \"currency\": \"USD\"}.")));
}

/*
 * quote_tier_price
 *		The price of the tier named tier in the array tiers, checked as money;
 *		raises if tiers is malformed or has no such tier.
 */
static Numeric
quote_tier_price(Jsonb *tiers, const char *tier)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			depth = 0;
	bool		in_object = false;
	char	   *key = NULL;
	char	   *name = NULL;
	Numeric		price = NULL;
	char	   *currency = NULL;
	Numeric		found = NULL;
	StringInfoData names;

	if (!JB_ROOT_IS_ARRAY(tiers) || JB_ROOT_IS_SCALAR(tiers))
		quote_malformed("The value is not a JSON array.");

	initStringInfo(&names);
	it = JsonbIteratorInit(&tiers->root);
	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		switch (tok)
		{
			case WJB_BEGIN_ARRAY:
				if (++depth > 1)
					quote_malformed("A tier is an array, not an object.");
				break;
			case WJB_END_ARRAY:
				depth--;
				break;
			case WJB_BEGIN_OBJECT:
				if (depth != 1 || in_object)
					quote_malformed("Tiers must be flat objects.");
				in_object = true;
				name = NULL;
				price = NULL;
				currency = NULL;
				break;
			case WJB_KEY:
				key = pnstrdup(v.val.string.val, v.val.string.len);
				break;
			case WJB_VALUE:
				if (key == NULL)
					break;
				if (strcmp(key, "name") == 0)
				{
					if (v.type != jbvString)
						quote_malformed("A tier's \"name\" is not a string.");
					name = pnstrdup(v.val.string.val, v.val.string.len);
				}
				else if (strcmp(key, "price") == 0)
				{
					if (v.type != jbvNumeric)
						quote_malformed("A tier's \"price\" is not a JSON number.");
					price = v.val.numeric;
				}
				else if (strcmp(key, "currency") == 0)
				{
					if (v.type != jbvString)
						quote_malformed("A tier's \"currency\" is not a string.");
					currency = pnstrdup(v.val.string.val, v.val.string.len);
				}
				else if (v.type == jbvBinary)
					quote_malformed("Tiers must be flat objects.");
				key = NULL;
				break;
			case WJB_END_OBJECT:
				in_object = false;
				if (name == NULL || price == NULL)
					quote_malformed("Every tier has a \"name\" and a \"price\".");
				pe_check_money(price, "tier price", true);
				if (currency != NULL)
					pe_check_currency(currency, "tier currency");
				if (names.len > 0)
					appendStringInfoString(&names, ", ");
				appendStringInfoString(&names, name);
				if (strcmp(name, tier) == 0)
				{
					if (found != NULL)
						quote_malformed("Two tiers have the same name.");
					found = price;
				}
				break;
			case WJB_ELEM:
				quote_malformed("A tier is not an object.");
				break;
			default:
				break;
		}
	}

	if (found == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("the event has no pricing tier \"%s\"", tier),
				 names.len > 0 ? errdetail("Its tiers are: %s.", names.data)
				 : errdetail("It has no pricing tiers.")));
	return found;
}

/* SQL function: payment.quote(uuid, text, numeric) returns numeric */
PG_FUNCTION_INFO_V1(pe_quote);
Datum
pe_quote(PG_FUNCTION_ARGS)
{
	Datum		event_id = PG_GETARG_DATUM(0);
	char	   *tier = text_to_cstring(PG_GETARG_TEXT_PP(1));
	Numeric		discount = PG_GETARG_NUMERIC(2);
	MemoryContext callercxt = CurrentMemoryContext;
	Numeric		full_price;
	Numeric		result;
	bool		isnull;
	int			rc;

	/* check the discount before any lookup: bad input changes nothing */
	pe_check_discount(discount);

	SPI_connect();
	pe_check_app_table(pe_extension_namespace(), "Events");
	rc = SPI_execute_plan(pe_plan(&quote_plan), &event_id, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("event %s does not exist",
						pe_uuid_text(DatumGetUUIDP(event_id)))));
	{
		Datum		tiers = pe_spi_getdatum(0, 1, &isnull);

		if (isnull)
			quote_malformed("The event has no pricing tiers (NULL).");
		full_price = quote_tier_price(DatumGetJsonbP(tiers), tier);
	}

	/* the result outlives SPI: compute it in the caller's context */
	{
		MemoryContext spicxt = MemoryContextSwitchTo(callercxt);

		full_price = DatumGetNumeric(datumCopy(NumericGetDatum(full_price), false, -1));
		result = pe_compute_price(full_price, discount);
		MemoryContextSwitchTo(spicxt);
	}
	SPI_finish();
	PG_RETURN_NUMERIC(result);
}
