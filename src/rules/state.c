/*-------------------------------------------------------------------------
 *
 * state.c
 *		The payment state machine (a trigger on "Payments"), the columns
 *		that never change, the paid states that a payment's refunds give,
 *		and the trigger that keeps financial records from being deleted.
 *
 * The status codes and their names are base/status.c's.
 *
 * IDENTIFICATION
 *		src/rules/state.c
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
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/jsonb.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "audit/audit.h"
#include "base/spi.h"
#include "base/status.h"
#include "base/trigger.h"
#include "base/xact.h"
#include "guard/guard.h"
#include "rules/rules.h"

/* ---------------------------------------------------------------------------
 * The payment state machine: BEFORE INSERT OR UPDATE trigger on "Payments"
 * ---------------------------------------------------------------------------
 */

/* Column numbers of "Payments", looked up once per backend and relation. */
typedef struct PaymentCols
{
	PeColumnCache cache;		/* the relation the numbers are for */
	int			id;
	int			registration;
	int			user_id;
	int			amount;
	int			currency;
	int			discount;
	int			status;
	int			processed_at;
	int			created_at;
	int			updated_at;
	int			refund_amount;
	int			refund_currency;
	int			refunded_at;
	int			metadata;
} PaymentCols;

static PaymentCols pcols;

/*
 * payment_cols_init
 *		The columns of "Payments" the state trigger reads and writes, with
 *		their types checked (a trigger attached to another table is an
 *		error, not a misread value).
 */
static void
payment_cols_init(Relation rel)
{
	const PeTriggerColumn cols[] = {
		{&pcols.id, "Id", UUIDOID, true},
		{&pcols.registration, "EventRegistrationId", UUIDOID, true},
		{&pcols.user_id, "UserId", UUIDOID, true},
		{&pcols.amount, "AmountValue", NUMERICOID, true},
		{&pcols.currency, "Currency", TEXTOID, true},
		{&pcols.discount, "SlidingScalePercentage", NUMERICOID, true},
		{&pcols.status, "Status", INT4OID, true},
		{&pcols.processed_at, "ProcessedAt", TIMESTAMPTZOID, true},
		{&pcols.created_at, "CreatedAt", TIMESTAMPTZOID, true},
		{&pcols.updated_at, "UpdatedAt", TIMESTAMPTZOID, true},
		{&pcols.refund_amount, "RefundAmountValue", NUMERICOID, true},
		{&pcols.refund_currency, "RefundCurrency", TEXTOID, true},
		{&pcols.refunded_at, "RefundedAt", TIMESTAMPTZOID, true},
		{&pcols.metadata, "Metadata", JSONBOID, true}
	};

	pe_trigger_columns_cached(rel, "payment.payments_state_trigger()", &pcols.cache,
							  cols, lengthof(cols));
}

/*
 * pe_check_fixed_columns
 *		Raise (and log the refusal) if any of the n columns of fixed differs
 *		between oldtuple and newtuple; what names the row ("payment") and
 *		detail says which columns are fixed.
 */
void
pe_check_fixed_columns(HeapTuple oldtuple, HeapTuple newtuple, TupleDesc td,
					   const PeFixedColumn *fixed, int n, const char *what,
					   const char *detail)
{
	int			i;

	for (i = 0; i < n; i++)
		if (!pe_column_unchanged(oldtuple, newtuple, td, *fixed[i].attnum))
		{
			pe_audit_log_refusal(psprintf("update of a %s", what), "an immutable column was changed");
			ereport(ERROR,
					(errcode(ERRCODE_CHECK_VIOLATION),
					 errmsg("\"%s\" of a %s never changes", fixed[i].name, what),
					 errdetail("%s", detail)));
		}
}

/* Is from -> to one of DESIGN.md's payment transitions (or no change)? */
static bool
payment_transition_allowed(int from, int to)
{
	if (from == to)
		return from != PE_PAYMENT_NOT_REQUIRED || to == PE_PAYMENT_NOT_REQUIRED;
	switch (from)
	{
		case PE_PAYMENT_PENDING:
			return to == PE_PAYMENT_COMPLETED || to == PE_PAYMENT_FAILED;
		case PE_PAYMENT_FAILED:
			return to == PE_PAYMENT_PENDING;
		case PE_PAYMENT_COMPLETED:
			return to == PE_PAYMENT_PARTIALLY_REFUNDED || to == PE_PAYMENT_REFUNDED;
		case PE_PAYMENT_PARTIALLY_REFUNDED:
			return to == PE_PAYMENT_REFUNDED;
		default:
			return false;
	}
}

/*
 * Is this the UPDATE that payment.resolve() is making (api/resolve.c)?  Only
 * for the payment it names, between the statuses it allows, and never out
 * of or into NotRequired.
 */
static bool
payment_resolving(HeapTuple newtuple, TupleDesc td, int from, int to)
{
	bool		isnull;
	Datum		id;

	if (!pe_resolve_active || from == PE_PAYMENT_NOT_REQUIRED ||
		to == PE_PAYMENT_NOT_REQUIRED)
		return false;
	id = heap_getattr(newtuple, pcols.id, td, &isnull);
	return !isnull && memcmp(DatumGetUUIDP(id), &pe_resolve_payment, UUID_LEN) == 0;
}

static PePlan refund_totals_plan = {
	"SELECT pg_catalog.sum(\"RefundAmountValue\") FILTER (WHERE \"RefundStatus\" <> 2),"
	" pg_catalog.sum(\"RefundAmountValue\") FILTER (WHERE \"RefundStatus\" = 1),"
	" pg_catalog.max(\"ProcessedAt\") FILTER (WHERE \"RefundStatus\" <> 2)"
	" FROM @S@.\"PaymentRefunds\" WHERE \"OriginalPaymentId\" = $1",
	1, {UUIDOID}, NULL, 0
};

/*
 * pe_refund_totals
 *		The refunds of a payment: the sum of those not Failed (*live, NULL
 *		when none), the sum of the Completed ones (*completed, NULL when
 *		none) and the latest "ProcessedAt" of those not Failed.  Values are
 *		copied into CurrentMemoryContext; connects to SPI itself.
 */
void
pe_refund_totals(Datum payment_id, Datum *live, bool *live_null,
				 Datum *completed, bool *completed_null,
				 Datum *latest, bool *latest_null)
{
	MemoryContext cxt = CurrentMemoryContext;
	int			rc;

	SPI_connect();
	rc = SPI_execute_plan(pe_plan(&refund_totals_plan), &payment_id, NULL, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "refund totals query failed: %s", SPI_result_code_string(rc));
	*live = pe_spi_getdatum(0, 1, live_null);
	*completed = pe_spi_getdatum(0, 2, completed_null);
	*latest = pe_spi_getdatum(0, 3, latest_null);
	{
		MemoryContext spicxt = MemoryContextSwitchTo(cxt);

		if (!*live_null)
			*live = datumCopy(*live, false, -1);
		if (!*completed_null)
			*completed = datumCopy(*completed, false, -1);
		MemoryContextSwitchTo(spicxt);
	}
	SPI_finish();
}

/*
 * pe_status_for_refunds
 *		The status a Completed, PartiallyRefunded or Refunded payment of
 *		amount has when completed_sum of it has been refunded.
 */
int
pe_status_for_refunds(Numeric amount, Datum completed, bool completed_null)
{
	Numeric		sum;

	if (completed_null)
		return PE_PAYMENT_COMPLETED;
	sum = DatumGetNumeric(completed);
	if (pe_numeric_cmp(sum, amount) >= 0)
		return PE_PAYMENT_REFUNDED;
	if (pe_numeric_cmp(sum, int64_to_numeric(0)) > 0)
		return PE_PAYMENT_PARTIALLY_REFUNDED;
	return PE_PAYMENT_COMPLETED;
}

/*
 * pe_paid_rank
 *		Order of the paid states along their only way: Completed (0),
 *		PartiallyRefunded (1), Refunded (2).
 */
int
pe_paid_rank(int status)
{
	switch (status)
	{
		case PE_PAYMENT_PARTIALLY_REFUNDED:
			return 1;
		case PE_PAYMENT_REFUNDED:
			return 2;
		default:
			return 0;
	}
}

/*
 * pe_refund_status_from_stripe
 *		"PaymentRefunds"."RefundStatus" for a Stripe Refund's status: only
 *		succeeded is Completed; failed and canceled are Failed; pending and
 *		requires_action are Processing.  -1 for anything else (NULL too).
 *		One mapping for the worker's answers and the webhook events.
 */
int
pe_refund_status_from_stripe(const char *stripe_status)
{
	if (stripe_status == NULL)
		return -1;
	if (strcmp(stripe_status, "succeeded") == 0)
		return PE_REFUND_COMPLETED;
	if (strcmp(stripe_status, "failed") == 0 || strcmp(stripe_status, "canceled") == 0)
		return PE_REFUND_FAILED;
	if (strcmp(stripe_status, "pending") == 0 || strcmp(stripe_status, "requires_action") == 0)
		return PE_REFUND_PROCESSING;
	return -1;
}

static bool
status_is_paid(int status)
{
	return status == PE_PAYMENT_COMPLETED || status == PE_PAYMENT_REFUNDED ||
		status == PE_PAYMENT_PARTIALLY_REFUNDED;
}

/* Raise unless the jsonb datum is a JSON object. */
void
pe_check_metadata_object(Datum metadata, const char *what)
{
	Jsonb	   *jb = DatumGetJsonbP(metadata);

	if (JB_ROOT_IS_SCALAR(jb) || !JB_ROOT_IS_OBJECT(jb))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON object", what)));
}

/*
 * pe_refuse_transition
 *		Log the refusal and raise 55000: a what ("payment", "refund") cannot
 *		go from status from to status to (names; NULL: not a status code).
 */
void
pe_refuse_transition(const char *what, const char *from, const char *to, const char *hint)
{
	pe_audit_log_refusal(psprintf("%s status change", what), "transition not allowed");
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("a %s cannot go from %s to %s", what,
					from ? from : "?", to ? to : "an unknown status"),
			 errhint("%s", hint)));
	pg_unreachable();
}

/*
 * pe_check_row_metadata
 *		The "Metadata" column (attnum of td) of a row of what ("payment"),
 *		when the row is new (oldtuple NULL) or the column changed: NULL, or
 *		a JSON object that holds no card number.
 */
void
pe_check_row_metadata(HeapTuple oldtuple, HeapTuple newtuple, TupleDesc td, int attnum,
					  const char *what)
{
	bool		isnull;
	Datum		md;

	if (oldtuple != NULL && pe_column_unchanged(oldtuple, newtuple, td, attnum))
		return;
	md = heap_getattr(newtuple, attnum, td, &isnull);
	if (isnull)
		return;
	pe_check_metadata_object(md, psprintf("\"Metadata\" of a %s", what));
	pe_guard_jsonb(DatumGetJsonbP(md), "\"Metadata\"");
}

/*
 * Trigger function: BEFORE INSERT OR UPDATE ON "Payments" FOR EACH ROW
 *
 * Holds DESIGN.md's rules whoever writes: the allowed status transitions,
 * the columns that never change, and the derived columns "UpdatedAt",
 * "ProcessedAt", "RefundAmountValue", "RefundCurrency" and "RefundedAt".
 */
PG_FUNCTION_INFO_V1(pe_payments_state_trigger);
Datum
pe_payments_state_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	td;
	HeapTuple	newtuple;
	HeapTuple	oldtuple = NULL;
	Datum		values[6];
	bool		nulls[6];
	int			attnums[6];
	int			n = 0;
	bool		isnull;
	int			new_status;
	int			old_status = -1;
	bool		recompute = false;
	Datum		now = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	static const PeTriggerUse use =
		PE_TRIGGER_USE("pe_payments_state_trigger", true, PE_TRIG_ANY, 0,
					   "BEFORE ... FOR EACH ROW");

	pe_trigger_check(fcinfo, &use);
	/* a restore (pe_restoring_insert): the row as it was dumped */
	if (pe_restoring_insert(trigdata->tg_event))
		return PointerGetDatum(trigdata->tg_trigtuple);
	td = RelationGetDescr(trigdata->tg_relation);
	payment_cols_init(trigdata->tg_relation);

	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		static const PeFixedColumn fixed[] = {
			{&pcols.id, "Id"},
			{&pcols.registration, "EventRegistrationId"},
			{&pcols.user_id, "UserId"},
			{&pcols.amount, "AmountValue"},
			{&pcols.currency, "Currency"},
			{&pcols.discount, "SlidingScalePercentage"},
			{&pcols.created_at, "CreatedAt"},
		};

		oldtuple = trigdata->tg_trigtuple;
		newtuple = trigdata->tg_newtuple;
		pe_check_fixed_columns(oldtuple, newtuple, td, fixed, lengthof(fixed), "payment",
							   "Amount, currency, discount, user, registration, id and creation time are fixed when a payment is created.");
		old_status = DatumGetInt32(heap_getattr(oldtuple, pcols.status, td, &isnull));
	}
	else
		newtuple = trigdata->tg_trigtuple;

	new_status = DatumGetInt32(heap_getattr(newtuple, pcols.status, td, &isnull));
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("\"Status\" of a payment must not be null")));

	if (oldtuple != NULL && !payment_transition_allowed(old_status, new_status) &&
		!payment_resolving(newtuple, td, old_status, new_status))
		pe_refuse_transition("payment", pe_payment_status_name(old_status),
							 pe_payment_status_name(new_status),
							 "Allowed: Pending to Completed or Failed, Failed to Pending (retry), Completed to PartiallyRefunded or Refunded, PartiallyRefunded to Refunded; NotRequired is final. payment.resolve() repairs a payment past these rules.");

	/* "Metadata" is a JSON object */
	pe_check_row_metadata(oldtuple, newtuple, td, pcols.metadata, "payment");

	/* "ProcessedAt": set when the payment reaches an outcome */
	if (oldtuple == NULL)
	{
		heap_getattr(newtuple, pcols.processed_at, td, &isnull);
		if (isnull && new_status != PE_PAYMENT_PENDING)
		{
			attnums[n] = pcols.processed_at;
			values[n] = now;
			nulls[n++] = false;
		}
	}
	else if (old_status != new_status)
	{
		if (old_status == PE_PAYMENT_PENDING &&
			pe_column_unchanged(oldtuple, newtuple, td, pcols.processed_at))
		{
			attnums[n] = pcols.processed_at;
			values[n] = now;
			nulls[n++] = false;
		}
		else if (new_status == PE_PAYMENT_PENDING)
		{
			/* a retry: the next outcome sets it again */
			attnums[n] = pcols.processed_at;
			values[n] = (Datum) 0;
			nulls[n++] = true;
		}
	}

	/*
	 * "UpdatedAt": now, when anything else changed and the writer did not set
	 * it; an UPDATE that changes nothing leaves the row as it was.
	 */
	if (oldtuple != NULL &&
		pe_column_unchanged(oldtuple, newtuple, td, pcols.updated_at))
	{
		int			att;

		for (att = 1; att <= td->natts; att++)
		{
			if (TupleDescAttr(td, att - 1)->attisdropped || att == pcols.updated_at)
				continue;
			if (!pe_column_unchanged(oldtuple, newtuple, td, att))
			{
				attnums[n] = pcols.updated_at;
				values[n] = now;
				nulls[n++] = false;
				break;
			}
		}
	}

	/*
	 * The refund columns are derived from "PaymentRefunds".  Recompute them
	 * when a writer touched them, or when the status moves among the paid
	 * states (which the completed refunds decide).  A new payment has no
	 * refunds yet.
	 */
	if (oldtuple == NULL)
	{
		attnums[n] = pcols.refund_amount;
		values[n] = (Datum) 0;
		nulls[n++] = true;
		attnums[n] = pcols.refund_currency;
		values[n] = (Datum) 0;
		nulls[n++] = true;
		attnums[n] = pcols.refunded_at;
		values[n] = (Datum) 0;
		nulls[n++] = true;
	}
	else
		recompute = !pe_column_unchanged(oldtuple, newtuple, td, pcols.refund_amount) ||
			!pe_column_unchanged(oldtuple, newtuple, td, pcols.refund_currency) ||
			!pe_column_unchanged(oldtuple, newtuple, td, pcols.refunded_at) ||
			(old_status != new_status && status_is_paid(old_status) && status_is_paid(new_status));

	if (recompute)
	{
		Datum		id = heap_getattr(newtuple, pcols.id, td, &isnull);
		Numeric		amount = DatumGetNumeric(heap_getattr(newtuple, pcols.amount, td, &isnull));
		Datum		live,
					completed,
					latest;
		bool		live_null,
					completed_null,
					latest_null;

		pe_refund_totals(id, &live, &live_null, &completed, &completed_null,
						 &latest, &latest_null);
		attnums[n] = pcols.refund_amount;
		values[n] = live;
		nulls[n++] = live_null;
		attnums[n] = pcols.refund_currency;
		values[n] = heap_getattr(newtuple, pcols.currency, td, &isnull);
		nulls[n++] = live_null;
		attnums[n] = pcols.refunded_at;
		values[n] = latest;
		nulls[n++] = live_null;

		/*
		 * A status the writer changed among the paid states must be the one
		 * the completed refunds give.  An unchanged status is left alone: rows
		 * restored from a dump get their refunds after them.
		 */
		if (old_status != new_status && status_is_paid(new_status))
		{
			int			derived = pe_status_for_refunds(amount, completed, completed_null);

			if (derived != new_status)
			{
				const char *want = pe_payment_status_name(derived);
				const char *got = pe_payment_status_name(new_status);

				pe_audit_log_refusal("payment status change", "status does not match the completed refunds");
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("a payment whose completed refunds make it %s cannot be %s", want, got),
						 errdetail("Completed and PartiallyRefunded and Refunded follow from the sum of the payment's completed refunds.")));
			}
		}
	}

	if (n > 0)
		newtuple = heap_modify_tuple_by_cols(newtuple, td, n, attnums, values, nulls);
	return PointerGetDatum(newtuple);
}

/*
 * Trigger function: BEFORE DELETE FOR EACH ROW and BEFORE TRUNCATE FOR EACH
 * STATEMENT on "Payments", "PaymentRefunds" and "PaymentFailures"
 *
 * Payments, refunds and failures are financial records: nobody but a
 * superuser deletes them, whatever privileges were granted by mistake.
 */
PG_FUNCTION_INFO_V1(pe_financial_no_delete_trigger);
Datum
pe_financial_no_delete_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	const char *table;
	static const PeTriggerUse use = {
		true, PE_TRIG_DELETE | PE_TRIG_TRUNCATE, PE_TRIG_DELETE | PE_TRIG_TRUNCATE,
		"pe_financial_no_delete_trigger: must be fired BEFORE DELETE or TRUNCATE",
		"pe_financial_no_delete_trigger: must be fired BEFORE DELETE or TRUNCATE"
	};

	pe_trigger_check(fcinfo, &use);

	if (superuser())
		return TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ?
			PointerGetDatum(trigdata->tg_trigtuple) : PointerGetDatum(NULL);

	table = RelationGetRelationName(trigdata->tg_relation);
	pe_audit_log_refusal(TRIGGER_FIRED_BY_DELETE(trigdata->tg_event) ?
						 "DELETE of a financial record" : "TRUNCATE of a financial table",
						 "only a superuser deletes payments, refunds and failures");
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("rows of \"%s\" are financial records and are never deleted", table),
			 errhint("A payment is failed, refunded or repaired with payment.resolve(), not deleted.")));
	pg_unreachable();
}
