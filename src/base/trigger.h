/*-------------------------------------------------------------------------
 *
 * trigger.h
 *		Checks every trigger function of payment_ext makes before it reads a
 *		row: how it was fired, and the columns it reads or writes.
 *
 * IDENTIFICATION
 *		src/base/trigger.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PE_BASE_TRIGGER_H
#define PE_BASE_TRIGGER_H

#include "access/htup.h"
#include "fmgr.h"
#include "utils/relcache.h"

#include "base/pg_compat.h"

/* The operations a trigger function accepts (PeTriggerUse) */
#define PE_TRIG_INSERT			0x01
#define PE_TRIG_UPDATE			0x02
#define PE_TRIG_DELETE			0x04
#define PE_TRIG_TRUNCATE		0x08
#define PE_TRIG_ANY				0x0F

/*
 * How a trigger function must be fired: BEFORE (else AFTER), and the
 * operations it accepts FOR EACH ROW and FOR EACH STATEMENT (PE_TRIG_*
 * bits, 0 for none).  not_trigger and misfired are the messages of a call
 * that is not a trigger call and of one fired otherwise.
 */
typedef struct PeTriggerUse
{
	bool		before;
	int			row_ops;
	int			statement_ops;
	const char *not_trigger;
	const char *misfired;
} PeTriggerUse;

/*
 * The usual PeTriggerUse of the trigger function name, whose messages are
 * "<name>: not called by trigger manager" and "<name>: must be fired
 * <fired>" (fired: "BEFORE ... FOR EACH ROW", say).
 */
#define PE_TRIGGER_USE(name, before, row_ops, statement_ops, fired) \
	{(before), (row_ops), (statement_ops), \
	 name ": not called by trigger manager", name ": must be fired " fired}

/* Raise 39P01 unless fcinfo is a trigger call as use says. */
extern void pe_trigger_check(FunctionCallInfo fcinfo, const PeTriggerUse *use);

/*
 * A column that a trigger function reads or writes, and the type it needs
 * (TEXTOID accepts varchar too).  pe_trigger_columns sets *attnum (0 when
 * an optional column is absent) and raises 42703 for a missing required
 * column and 42804 for a column of another type, naming the trigger
 * function, the table and the column: a trigger attached to a table of
 * another shape is an error, never a misread Datum.
 */
typedef struct PeTriggerColumn
{
	int		   *attnum;
	const char *name;
	Oid			typid;
	bool		required;
} PeTriggerColumn;

/* The relation a column map was checked for (pe_trigger_columns_cached) */
typedef struct PeColumnCache
{
	Oid			relid;
	int			natts;
} PeColumnCache;

extern void pe_trigger_columns(Relation rel, const char *trigger,
							   const PeTriggerColumn *cols, int n, bool cached);
extern void pe_trigger_columns_cached(Relation rel, const char *trigger,
									  PeColumnCache *cache,
									  const PeTriggerColumn *cols, int n);
extern bool pe_attnum_has_type(TupleDesc td, int attnum, Oid typid);
pg_noreturn extern void pe_trigger_column_missing(Relation rel, const char *trigger,
												  const char *column);
pg_noreturn extern void pe_trigger_column_mistyped(Relation rel, const char *trigger,
												   int attnum, Oid typid);

/* Does column attnum hold the same value (or NULL) in both tuples? */
extern bool pe_column_unchanged(HeapTuple a, HeapTuple b, TupleDesc td, int attnum);

#endif							/* PE_BASE_TRIGGER_H */
