/*-------------------------------------------------------------------------
 *
 * refund.c
 *		Refund rules, as triggers on "PaymentRefunds" (payment.refund() is
 *		api/refunds.c).
 *
 * Invariants:
 *	- The sum of a payment's refunds that are not Failed never exceeds its
 *	  amount, whatever the concurrency: every refund insert and status change
 *	  first takes the payment row's lock (FOR NO KEY UPDATE), so the check
 *	  and the write are serialised per payment, and in READ COMMITTED each
 *	  later query sees what the previous holder committed.
 *	- A refund's currency is its payment's; its reason has at least 10
 *	  non-blank characters; only Completed or PartiallyRefunded payments get
 *	  new refunds.
 *	- Refund status moves Processing -> Completed | Failed only.  When a
 *	  refund is inserted or changes status, the AFTER trigger brings the
 *	  payment's derived columns and status up to date (the "Payments" state
 *	  trigger recomputes and checks them from the same rows).
 *
 * IDENTIFICATION
 *		src/rules/refund.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/uuid.h"

#include "audit/audit.h"
#include "base/spi.h"
#include "base/status.h"
#include "base/text.h"
#include "base/trigger.h"
#include "base/xact.h"
#include "guard/guard.h"
#include "rules/rules.h"

#define PE_MIN_REASON_CHARS		10

/* Column numbers of "PaymentRefunds", per backend and relation. */
typedef struct RefundCols
{
	PeColumnCache cache;		/* the relation the numbers are for */
	int			id;
	int			payment;
	int			amount;
	int			currency;
	int			reason;
	int			status;
	int			processed_by;
	int			created_at;
	int			metadata;
} RefundCols;

static RefundCols rcols;

/*
 * refund_cols_init
 *		The columns of "PaymentRefunds" the refund triggers read, with their
 *		types checked (a trigger attached to another table is an error, not
 *		a misread value).
 */
static void
refund_cols_init(Relation rel, const char *trigger)
{
	const PeTriggerColumn cols[] = {
		{&rcols.id, "Id", UUIDOID, true},
		{&rcols.payment, "OriginalPaymentId", UUIDOID, true},
		{&rcols.amount, "RefundAmountValue", NUMERICOID, true},
		{&rcols.currency, "RefundCurrency", TEXTOID, true},
		{&rcols.reason, "RefundReason", TEXTOID, true},
		{&rcols.status, "RefundStatus", INT4OID, true},
		{&rcols.processed_by, "ProcessedByUserId", UUIDOID, true},
		{&rcols.created_at, "CreatedAt", TIMESTAMPTZOID, true},
		{&rcols.metadata, "Metadata", JSONBOID, true}
	};

	pe_trigger_columns_cached(rel, trigger, &rcols.cache, cols, lengthof(cols));
}

/*
 * refund_trigger_start
 *		The start of both refund triggers: check how trigger (named for
 *		messages) was fired and the columns of its table; false when the
 *		row is being restored (pe_restoring_insert) and the trigger has
 *		nothing to do.
 */
static bool
refund_trigger_start(FunctionCallInfo fcinfo, const PeTriggerUse *use, const char *trigger)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	pe_trigger_check(fcinfo, use);
	if (pe_restoring_insert(trigdata->tg_event))
		return false;
	refund_cols_init(trigdata->tg_relation, trigger);
	return true;
}

/*
 * pe_check_refund_reason
 *		Raise unless reason has at least 10 characters that are not white
 *		space.
 */
void
pe_check_refund_reason(const char *reason)
{
	int			count = 0;
	const char *p;

	if (reason == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("a refund needs a reason")));
	for (p = reason; *p; p += pg_mblen(p))
		if (!(IS_HIGHBIT_SET(*p) ? false : isspace((unsigned char) *p)))
			count++;
	if (count < PE_MIN_REASON_CHARS)
	{
		pe_audit_log_refusal("refund", "reason too short");
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("a refund reason needs at least %d non-blank characters", PE_MIN_REASON_CHARS),
				 errdetail("The reason given has %d.", count)));
	}
}

static PePlan lock_payment_plan = {
	"SELECT \"Status\", \"AmountValue\", \"Currency\" FROM @S@.\"Payments\""
	" WHERE \"Id\" = $1 FOR NO KEY UPDATE",
	1, {UUIDOID}, NULL, 0
};

/* What refund rules need of a payment. */
typedef struct LockedPayment
{
	int			status;
	Numeric		amount;
	char	   *currency;
} LockedPayment;

/*
 * lock_payment
 *		Lock the payment row (FOR NO KEY UPDATE) and return what the refund
 *		rules need, in CurrentMemoryContext; raises if there is no such
 *		payment.
 */
static LockedPayment
lock_payment(Datum payment_id)
{
	MemoryContext cxt = CurrentMemoryContext;
	LockedPayment lp;
	bool		isnull;

	SPI_connect();
	pe_spi_find_payment(&lock_payment_plan, payment_id, false);
	{
		Datum		status = pe_spi_getdatum(0, 1, &isnull);
		Datum		amount = pe_spi_getdatum(0, 2, &isnull);
		Datum		currency = pe_spi_getdatum(0, 3, &isnull);
		MemoryContext spicxt = MemoryContextSwitchTo(cxt);

		lp.status = DatumGetInt32(status);
		lp.amount = DatumGetNumeric(datumCopy(amount, false, -1));
		lp.currency = TextDatumGetCString(currency);
		MemoryContextSwitchTo(spicxt);
	}
	SPI_finish();
	return lp;
}

/*
 * Trigger function: BEFORE INSERT OR UPDATE ON "PaymentRefunds" FOR EACH ROW
 *
 * The refund rules, held for every writer under the payment row's lock.
 */
PG_FUNCTION_INFO_V1(pe_refunds_rules_trigger);
Datum
pe_refunds_rules_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	td;
	HeapTuple	newtuple;
	bool		isnull;
	Datum		payment_id;
	int			status;
	LockedPayment lp;
	static const PeTriggerUse use =
		PE_TRIGGER_USE("pe_refunds_rules_trigger", true, PE_TRIG_ANY, 0,
					   "BEFORE ... FOR EACH ROW");

	/* a restore (pe_restoring_insert): the row as it was dumped */
	if (!refund_trigger_start(fcinfo, &use, "payment.refunds_rules_trigger()"))
		return PointerGetDatum(trigdata->tg_trigtuple);
	td = RelationGetDescr(trigdata->tg_relation);

	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		HeapTuple	oldtuple = trigdata->tg_trigtuple;
		int			old_status;
		static const PeFixedColumn fixed[] = {
			{&rcols.id, "Id"},
			{&rcols.payment, "OriginalPaymentId"},
			{&rcols.amount, "RefundAmountValue"},
			{&rcols.currency, "RefundCurrency"},
			{&rcols.reason, "RefundReason"},
			{&rcols.processed_by, "ProcessedByUserId"},
			{&rcols.created_at, "CreatedAt"},
		};

		newtuple = trigdata->tg_newtuple;
		pe_check_fixed_columns(oldtuple, newtuple, td, fixed, lengthof(fixed), "refund",
							   "A refund's payment, amount, currency, reason, processor, id and creation time are fixed when it is created.");
		old_status = DatumGetInt32(heap_getattr(oldtuple, rcols.status, td, &isnull));
		status = DatumGetInt32(heap_getattr(newtuple, rcols.status, td, &isnull));
		if (old_status != status &&
			!(old_status == PE_REFUND_PROCESSING &&
			  (status == PE_REFUND_COMPLETED || status == PE_REFUND_FAILED)))
			pe_refuse_transition("refund", pe_refund_status_name(old_status),
								 pe_refund_status_name(status),
								 "A refund goes from Processing to Completed or Failed, once.");
		pe_check_row_metadata(oldtuple, newtuple, td, rcols.metadata, "refund");
		if (old_status != status)
			(void) lock_payment(heap_getattr(newtuple, rcols.payment, td, &isnull));
		return PointerGetDatum(newtuple);
	}

	/* INSERT */
	newtuple = trigdata->tg_trigtuple;
	payment_id = heap_getattr(newtuple, rcols.payment, td, &isnull);
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("a refund needs the payment it refunds")));
	status = DatumGetInt32(heap_getattr(newtuple, rcols.status, td, &isnull));
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("\"RefundStatus\" of a refund must not be null")));
	{
		Datum		reason = heap_getattr(newtuple, rcols.reason, td, &isnull);

		pe_check_refund_reason(isnull ? NULL : TextDatumGetCString(reason));
		pe_guard_text(TextDatumGetCString(reason), "\"RefundReason\"");
	}
	{
		Datum		amount = heap_getattr(newtuple, rcols.amount, td, &isnull);

		if (isnull)
			ereport(ERROR,
					(errcode(ERRCODE_NOT_NULL_VIOLATION),
					 errmsg("a refund needs an amount")));
		pe_check_money(DatumGetNumeric(amount), "refund amount", false);
	}
	pe_check_row_metadata(NULL, newtuple, td, rcols.metadata, "refund");

	lp = lock_payment(payment_id);

	/* which payments may get a refund of this status */
	if (!(lp.status == PE_PAYMENT_COMPLETED ||
		  lp.status == PE_PAYMENT_PARTIALLY_REFUNDED ||
		  (status != PE_REFUND_PROCESSING && lp.status == PE_PAYMENT_REFUNDED)))
	{
		pe_audit_log_refusal("refund", "payment not refundable");
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("payment %s is %s and cannot be refunded",
						pe_uuid_text(DatumGetUUIDP(payment_id)), pe_payment_status_name(lp.status)),
				 errhint("Only Completed or PartiallyRefunded payments can be refunded.")));
	}

	{
		char	   *currency = TextDatumGetCString(heap_getattr(newtuple, rcols.currency, td, &isnull));

		if (strcmp(currency, lp.currency) != 0)
		{
			pe_audit_log_refusal("refund", "currency differs from the payment's");
			ereport(ERROR,
					(errcode(ERRCODE_CHECK_VIOLATION),
					 errmsg("a refund of a %s payment must be in %s", lp.currency, lp.currency),
					 errdetail("The refund's currency is %s.", currency)));
		}
	}

	if (status != PE_REFUND_FAILED)
	{
		Numeric		amount = DatumGetNumeric(heap_getattr(newtuple, rcols.amount, td, &isnull));
		Datum		live,
					completed,
					latest;
		bool		live_null,
					completed_null,
					latest_null;
		Numeric		refunded;
		Numeric		left;

		pe_refund_totals(payment_id, &live, &live_null, &completed, &completed_null,
						 &latest, &latest_null);
		refunded = live_null ? int64_to_numeric(0) : DatumGetNumeric(live);
		left = numeric_sub_opt_error(lp.amount, refunded, NULL);
		if (pe_numeric_cmp(amount, left) > 0)
		{
			pe_audit_log_refusal("refund", "amount exceeds what is left to refund");
			ereport(ERROR,
					(errcode(ERRCODE_CHECK_VIOLATION),
					 errmsg("refund of %s %s exceeds the %s %s left to refund",
							pe_numeric_text(amount), lp.currency,
							pe_numeric_text(left), lp.currency),
					 errdetail("Payment %s is %s %s, of which %s is already refunded or being refunded.",
							   pe_uuid_text(DatumGetUUIDP(payment_id)),
							   pe_numeric_text(lp.amount), lp.currency,
							   pe_numeric_text(refunded))));
		}
	}
	return PointerGetDatum(newtuple);
}

static PePlan sync_payment_plan = {
	"UPDATE @S@.\"Payments\" SET \"RefundAmountValue\" = $2, \"RefundCurrency\" = $3,"
	" \"RefundedAt\" = $4, \"Status\" = $5,"
	" \"RefundReason\" = COALESCE($6, \"RefundReason\"),"
	" \"RefundedByUserId\" = COALESCE($7, \"RefundedByUserId\")"
	" WHERE \"Id\" = $1",
	7, {UUIDOID, NUMERICOID, TEXTOID, TIMESTAMPTZOID, INT4OID, TEXTOID, UUIDOID}, NULL, 0
};

static PePlan payment_status_plan = {
	"SELECT \"Status\", \"AmountValue\", \"Currency\" FROM @S@.\"Payments\" WHERE \"Id\" = $1",
	1, {UUIDOID}, NULL, 0
};

/*
 * refunds_sync_payment
 *		The work of pe_refunds_sync_trigger for the refund tuple of
 *		relation td (payment_id, refund_status already read from it).
 *		Caller runs it as the refunds table's owner.
 */
static void
refunds_sync_payment(HeapTuple tuple, TupleDesc td, Datum payment_id, int refund_status)
{
	bool		isnull;
	Datum		live,
				completed,
				latest;
	bool		live_null,
				completed_null,
				latest_null;
	int			status;
	Numeric		amount;
	Datum		currency;
	Datum		args[7];
	char		argnulls[7];
	int			rc;

	pe_refund_totals(payment_id, &live, &live_null, &completed, &completed_null,
					 &latest, &latest_null);

	SPI_connect();
	rc = SPI_execute_plan(pe_plan(&payment_status_plan), &payment_id, NULL, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "payment of refund not found");
	status = DatumGetInt32(pe_spi_getdatum(0, 1, &isnull));
	amount = DatumGetNumeric(pe_spi_getdatum(0, 2, &isnull));
	currency = pe_spi_getdatum(0, 3, &isnull);
	if (status == PE_PAYMENT_COMPLETED || status == PE_PAYMENT_PARTIALLY_REFUNDED ||
		status == PE_PAYMENT_REFUNDED)
	{
		int			derived = pe_status_for_refunds(amount, completed, completed_null);

		/* a payment only moves forward: Completed, PartiallyRefunded, Refunded */
		if (pe_paid_rank(derived) > pe_paid_rank(status))
			status = derived;
	}

	args[0] = payment_id;
	argnulls[0] = ' ';
	args[1] = live;
	argnulls[1] = live_null ? 'n' : ' ';
	args[2] = currency;
	argnulls[2] = live_null ? 'n' : ' ';
	args[3] = latest;
	argnulls[3] = latest_null ? 'n' : ' ';
	args[4] = Int32GetDatum(status);
	argnulls[4] = ' ';
	if (refund_status != PE_REFUND_FAILED)
	{
		args[5] = heap_getattr(tuple, rcols.reason, td, &isnull);
		argnulls[5] = isnull ? 'n' : ' ';
		args[6] = heap_getattr(tuple, rcols.processed_by, td, &isnull);
		argnulls[6] = isnull ? 'n' : ' ';
	}
	else
	{
		args[5] = args[6] = (Datum) 0;
		argnulls[5] = argnulls[6] = 'n';
	}
	rc = SPI_execute_plan(pe_plan(&sync_payment_plan), args, argnulls, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "updating the refunded payment failed: %s", SPI_result_code_string(rc));
	SPI_finish();
}

/*
 * Trigger function: AFTER INSERT OR UPDATE OF "RefundStatus" ON
 * "PaymentRefunds" FOR EACH ROW
 *
 * Brings the payment's refund columns and status up to date: the sum of
 * refunds not Failed, the latest one's time, reason and processor, and
 * Completed / PartiallyRefunded / Refunded by the completed sum.
 */
PG_FUNCTION_INFO_V1(pe_refunds_sync_trigger);
Datum
pe_refunds_sync_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	td;
	HeapTuple	tuple;
	bool		isnull;
	Datum		payment_id;
	int			refund_status;
	Oid			save_userid;
	int			save_sec;
	static const PeTriggerUse use =
		PE_TRIGGER_USE("pe_refunds_sync_trigger", false, PE_TRIG_ANY, 0,
					   "AFTER ... FOR EACH ROW");

	/* a restore (pe_restoring_insert): the payment was dumped up to date */
	if (!refund_trigger_start(fcinfo, &use, "payment.refunds_sync_trigger()"))
		return PointerGetDatum(NULL);
	td = RelationGetDescr(trigdata->tg_relation);
	tuple = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ?
		trigdata->tg_newtuple : trigdata->tg_trigtuple;
	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) &&
		pe_column_unchanged(trigdata->tg_trigtuple, tuple, td, rcols.status))
		return PointerGetDatum(NULL);

	payment_id = heap_getattr(tuple, rcols.payment, td, &isnull);
	refund_status = DatumGetInt32(heap_getattr(tuple, rcols.status, td, &isnull));

	/*
	 * The payment's derived columns are written as the owner of the refunds
	 * table (the extension's owner): an administrator who records the
	 * outcome of an offline refund holds UPDATE of "RefundStatus" but none
	 * on "Payments", whose refund columns only this trigger keeps.  The
	 * function runs with search_path pinned (SET in its declaration), and
	 * the tables its queries touch are the extension's own.
	 */
	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(trigdata->tg_relation->rd_rel->relowner,
						   save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_NOFORCE_RLS);
	PG_TRY();
	{
		refunds_sync_payment(tuple, td, payment_id, refund_status);
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(save_userid, save_sec);
	}
	PG_END_TRY();
	return PointerGetDatum(NULL);
}
