/*-------------------------------------------------------------------------
 *
 * trigger.c
 *		The checks every trigger function of payment_ext makes: that it was
 *		called as the trigger it was written for, and that the table it was
 *		attached to has the columns it reads or writes, with their types.
 *
 * IDENTIFICATION
 *		src/base/trigger.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/rel.h"

#include "base/trigger.h"

/* The PE_TRIG_* bit of the operation that fired event. */
static int
trigger_op(TriggerEvent event)
{
	if (TRIGGER_FIRED_BY_INSERT(event))
		return PE_TRIG_INSERT;
	if (TRIGGER_FIRED_BY_UPDATE(event))
		return PE_TRIG_UPDATE;
	if (TRIGGER_FIRED_BY_DELETE(event))
		return PE_TRIG_DELETE;
	if (TRIGGER_FIRED_BY_TRUNCATE(event))
		return PE_TRIG_TRUNCATE;
	return 0;
}

/*
 * pe_trigger_check
 *		Raise (39P01) unless fcinfo is a trigger call fired as use says:
 *		BEFORE or AFTER, and an operation use accepts at the level (ROW or
 *		STATEMENT) it was fired at.
 */
void
pe_trigger_check(FunctionCallInfo fcinfo, const PeTriggerUse *use)
{
	TriggerEvent event;
	int			ops;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s", use->not_trigger)));
	event = ((TriggerData *) fcinfo->context)->tg_event;
	ops = TRIGGER_FIRED_FOR_ROW(event) ? use->row_ops : use->statement_ops;
	if ((use->before ? !TRIGGER_FIRED_BEFORE(event) : !TRIGGER_FIRED_AFTER(event)) ||
		(ops & trigger_op(event)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s", use->misfired)));
}

/*
 * pe_attnum_has_type
 *		Is attnum a live column of td of type typid (TEXTOID: text or
 *		varchar)?  No catalog access: cheap enough for every trigger call.
 */
bool
pe_attnum_has_type(TupleDesc td, int attnum, Oid typid)
{
	Form_pg_attribute att;

	if (attnum <= 0 || attnum > td->natts)
		return false;
	att = TupleDescAttr(td, attnum - 1);
	if (att->attisdropped)
		return false;
	if (typid == TEXTOID)
		return att->atttypid == TEXTOID || att->atttypid == VARCHAROID;
	return att->atttypid == typid;
}

/* Raise 42703: the trigger function trigger needs column of rel. */
void
pe_trigger_column_missing(Relation rel, const char *trigger, const char *column)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_COLUMN),
			 errmsg("trigger function %s needs column \"%s\" in table \"%s\"",
					trigger, column, RelationGetRelationName(rel)),
			 errdetail("Table \"%s\" has no such column.",
					   RelationGetRelationName(rel)),
			 errhint("Attach the trigger only to the table payment_ext attached it to.")));
	pg_unreachable();
}

/* Raise 42804: the trigger function trigger needs column attnum of rel to be of typid. */
void
pe_trigger_column_mistyped(Relation rel, const char *trigger, int attnum, Oid typid)
{
	TupleDesc	td = RelationGetDescr(rel);

	ereport(ERROR,
			(errcode(ERRCODE_DATATYPE_MISMATCH),
			 errmsg("trigger function %s needs column \"%s\" of table \"%s\" to be of type %s",
					trigger, NameStr(TupleDescAttr(td, attnum - 1)->attname),
					RelationGetRelationName(rel), format_type_be(typid)),
			 errdetail("The column is of type %s.",
					   format_type_be(TupleDescAttr(td, attnum - 1)->atttypid)),
			 errhint("Attach the trigger only to the table payment_ext attached it to."),
			 errtablecol(rel, attnum)));
	pg_unreachable();
}

/*
 * pe_trigger_columns
 *		Resolve and check the columns cols[0..n-1] of rel that the trigger
 *		function trigger reads or writes (see trigger.h).  With cached,
 *		the caller's attnums are from an earlier call for the same relation
 *		and number of columns: they are only re-checked (ALTER COLUMN ...
 *		TYPE keeps both), and looked up again if that fails.
 */
void
pe_trigger_columns(Relation rel, const char *trigger,
				   const PeTriggerColumn *cols, int n, bool cached)
{
	TupleDesc	td = RelationGetDescr(rel);
	int			i;

	if (cached)
	{
		for (i = 0; i < n; i++)
		{
			int			attnum = *cols[i].attnum;

			if (attnum == 0 ? cols[i].required :
				!pe_attnum_has_type(td, attnum, cols[i].typid))
				break;
		}
		if (i == n)
			return;
	}

	for (i = 0; i < n; i++)
	{
		int			attnum = SPI_fnumber(td, cols[i].name);

		if (attnum <= 0)
		{
			if (cols[i].required)
				pe_trigger_column_missing(rel, trigger, cols[i].name);
			*cols[i].attnum = 0;
			continue;
		}
		if (!pe_attnum_has_type(td, attnum, cols[i].typid))
			pe_trigger_column_mistyped(rel, trigger, attnum, cols[i].typid);
		*cols[i].attnum = attnum;
	}
}

/*
 * pe_trigger_columns_cached
 *		pe_trigger_columns for a column map kept per backend: cache names
 *		the relation (and its number of columns) the attnums were checked
 *		for, and is set again once the check passes.
 */
void
pe_trigger_columns_cached(Relation rel, const char *trigger, PeColumnCache *cache,
						  const PeTriggerColumn *cols, int n)
{
	TupleDesc	td = RelationGetDescr(rel);
	bool		cached = cache->relid == RelationGetRelid(rel) &&
		cache->natts == td->natts;

	cache->relid = InvalidOid;	/* until the check passes */
	pe_trigger_columns(rel, trigger, cols, n, cached);
	cache->relid = RelationGetRelid(rel);
	cache->natts = td->natts;
}

/* True when column attnum has the same value (or NULL) in both tuples. */
bool
pe_column_unchanged(HeapTuple a, HeapTuple b, TupleDesc td, int attnum)
{
	bool		anull;
	bool		bnull;
	Datum		av = heap_getattr(a, attnum, td, &anull);
	Datum		bv = heap_getattr(b, attnum, td, &bnull);
	Form_pg_attribute att = TupleDescAttr(td, attnum - 1);

	if (anull || bnull)
		return anull && bnull;
	return datumIsEqual(av, bv, att->attbyval, att->attlen);
}
