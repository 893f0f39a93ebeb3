/*-------------------------------------------------------------------------
 *
 * methods.c
 *		Rules on saved payment methods ("PaymentMethods") that a CHECK
 *		constraint cannot hold.
 *
 * The spec's CHECK ("ExpiryYear" >= EXTRACT(YEAR FROM NOW())) compares with
 * the clock, so a dump taken last year would fail to restore.  The rule
 * belongs to new data only: this BEFORE trigger refuses an expired card when
 * a row is inserted or its expiry changes, and leaves stored rows alone.
 *
 * IDENTIFICATION
 *		src/rules/methods.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

#include "base/trigger.h"
#include "base/xact.h"
#include "rules/rules.h"

/*
 * methods_get_int4
 *		Value of the int4 column "name" of the trigger's table, raising if it
 *		is missing or of another type.
 */
static int32
methods_get_int4(HeapTuple tuple, Relation rel, const char *name)
{
	TupleDesc	tupdesc = RelationGetDescr(rel);
	int			attnum;
	bool		isnull;
	Datum		value;
	PeTriggerColumn col = {&attnum, name, INT4OID, true};

	pe_trigger_columns(rel, "payment.payment_methods_expiry_trigger()", &col, 1, false);
	value = heap_getattr(tuple, attnum, tupdesc, &isnull);
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("\"%s\" of a saved payment method must not be null", name)));
	return DatumGetInt32(value);
}

/*
 * pe_check_card_expiry
 *		Raise if (year, month) is before the current month in the session's
 *		time zone.  A card is valid through the last day of its expiry month.
 */
void
pe_check_card_expiry(int32 year, int32 month)
{
	struct pg_tm tm;
	fsec_t		fsec;
	int			tz;

	if (timestamp2tm(GetCurrentTransactionStartTimestamp(), &tz, &tm, &fsec,
					 NULL, NULL) != 0)
		elog(ERROR, "current timestamp out of range");

	if (year < tm.tm_year || (year == tm.tm_year && month < tm.tm_mon))
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("card expired %02d/%04d", month, year),
				 errdetail("A saved card must expire in the current month (%02d/%04d) or later.",
						   tm.tm_mon, tm.tm_year)));
}

/* Trigger function: BEFORE INSERT OR UPDATE OF "ExpiryMonth", "ExpiryYear" */
PG_FUNCTION_INFO_V1(pe_payment_methods_expiry_trigger);
Datum
pe_payment_methods_expiry_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	HeapTuple	newtuple;
	int32		year;
	int32		month;
	static const PeTriggerUse use =
		PE_TRIGGER_USE("pe_payment_methods_expiry_trigger", true, PE_TRIG_INSERT | PE_TRIG_UPDATE, 0,
					   "BEFORE INSERT OR UPDATE FOR EACH ROW");

	pe_trigger_check(fcinfo, &use);
	/*
	 * a restore (pe_restoring_insert): a card saved then may have expired since
	 */
	if (pe_restoring_insert(trigdata->tg_event))
		return PointerGetDatum(trigdata->tg_trigtuple);

	newtuple = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ?
		trigdata->tg_newtuple : trigdata->tg_trigtuple;

	year = methods_get_int4(newtuple, trigdata->tg_relation, "ExpiryYear");
	month = methods_get_int4(newtuple, trigdata->tg_relation, "ExpiryMonth");

	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		HeapTuple	oldtuple = trigdata->tg_trigtuple;

		/* an unchanged expiry is stored data, not new data */
		if (year == methods_get_int4(oldtuple, trigdata->tg_relation, "ExpiryYear") &&
			month == methods_get_int4(oldtuple, trigdata->tg_relation, "ExpiryMonth"))
			return PointerGetDatum(newtuple);
	}

	pe_check_card_expiry(year, month);
	return PointerGetDatum(newtuple);
}
