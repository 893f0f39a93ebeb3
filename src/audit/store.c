/*-------------------------------------------------------------------------
 *
 * store.c
 *		The audit trigger's direct write of a "PaymentAuditLog" row: heap
 *		insert and index entries without an executor run per row.
 *
 * An audit row written through SPI costs a plan execution: executor start
 * and end, the table's CHECK constraint re-read from its catalog text
 * (PostgreSQL prepares CHECK expressions per statement), the hash chain's
 * BEFORE trigger call, and one referential-integrity query per foreign key.
 * For the rows the audit trigger writes, all of that is known in advance,
 * so this file writes them the way PostgreSQL's own catalog code writes
 * catalog rows: form the tuple, heap insert, index entries.  Nothing that
 * the table's definition asks for is skipped:
 *	- column defaults ("Id", "CreatedAt", any a DBA adds) and every CHECK
 *	  constraint are evaluated from expression states prepared once per
 *	  relcache entry (rebuilt after any ALTER TABLE, and after any change of
 *	  a function or type, which the prepared expressions may have inlined);
 *	  NOT NULL and the varchar length of "ActionType" are checked;
 *	- the hash chain is linked by the same code as the chain trigger
 *	  (pe_audit_chain_link), so both paths produce identical rows; that
 *	  code also sets the provenance columns ("SessionUser", "CurrentUser",
 *	  "UserId", "IpAddress", "UserAgent", "CreatedAt") from what the audit
 *	  writer registered, never from the values passed in;
 *	- every index gets its entry (ExecInsertIndexTuples: partial-index
 *	  predicates, unique checks);
 *	- the foreign keys hold by construction: the caller (audit.c) writes a
 *	  row this way only once its payment is locked (by the audited change,
 *	  or here, FOR NO KEY UPDATE) and then its user is NULL, locked FOR KEY
 *	  SHARE by this transaction, or referenced by an audit row this backend
 *	  committed (which ON DELETE RESTRICT keeps alive): the cases where the
 *	  RI check query cannot fail, with its lock order (payment, then user).
 *	  Any other row goes through SPI and the RI triggers.
 * The direct path is used only while the table has the shape the
 * extension created: a plain table, no rules, no stored generated columns,
 * no deferrable index, the expected column types and no domain-typed
 * column, and no INSERT trigger but
 * the chain trigger (enabled ALWAYS) and the RI checks of
 * "FK_PaymentAuditLog_Payments" and "FK_PaymentAuditLog_Users".  Add a
 * trigger or a foreign key to the log and every audit row takes the SPI
 * path again, with its triggers.
 *
 * Across PostgreSQL major versions (15-18): the row goes in through the
 * table access method (table_tuple_insert) and its index entries through
 * the executor's ExecInsertIndexTuples on a ResultRelInfo, the calls
 * logical replication's apply worker makes inside ExecSimpleRelationInsert
 * (which itself is not used: it would run the chain BEFORE trigger and
 * queue the RI AFTER triggers, the per-row costs this path exists to
 * avoid).  The one signature change among them (16: onlySummarizing) is
 * in pg_compat.h; the suite runs on each version (README "Supported
 * versions").
 *
 * Invariants:
 *	- The shape (expression states, a standalone ExprContext) lives in its
 *	  own memory context under CacheMemoryContext; a relcache invalidation
 *	  only marks it invalid, and it is rebuilt on next use, never while a
 *	  direct write is in progress (a nested write takes the SPI path).
 *	- Per-row memory: the caller's context (audit_write's SPI procedure
 *	  context) and the ExprContext's per-tuple memory, reset on each use.  The EState, the opened indexes and the slot are released
 *	  before returning; on error, transaction abort releases them.
 *
 * IDENTIFICATION
 *		src/audit/store.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_constraint.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "optimizer/optimizer.h"
#include "rewrite/rewriteHandler.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"

#include "audit/audit.h"
#include "audit/audit_int.h"
#include "base/pg_compat.h"

/*
 * The columns the caller provides, in AuditStoreColumn order: their places
 * among the log's hashed columns (hash.c), which name them and their types
 */
static const int store_columns[AS_NCOLUMNS] = {
	CHAIN_COL_PAYMENT, CHAIN_COL_USER, CHAIN_COL_ACTION, CHAIN_COL_DESCRIPTION,
	CHAIN_COL_OLD, CHAIN_COL_NEW, CHAIN_COL_IP, CHAIN_COL_AGENT, CHAIN_COL_TABLE,
	CHAIN_COL_ROW, CHAIN_COL_SESSION, CHAIN_COL_CURRENT
};

/* a column filled from its default expression */
typedef struct StoreDefault
{
	AttrNumber	attnum;
	ExprState  *expr;
} StoreDefault;

/* what the direct write needs to know about one "PaymentAuditLog" */
typedef struct StoreShape
{
	bool		valid;
	Oid			relid;
	MemoryContext cxt;			/* owns everything below */
	bool		usable;			/* false: always take the SPI path */
	AttrNumber	att[AS_NCOLUMNS];
	int32		action_maxlen;	/* of "ActionType", -1 if unbounded */
	int			ndefaults;
	StoreDefault *defaults;
	int			nchecks;
	ExprState **checks;
	char	  **check_names;
	ExprContext *econtext;		/* per-query memory: cxt */
} StoreShape;

static StoreShape store_shape;

/*
 * A direct write in progress, and the subtransaction it began in.  A write
 * nested in another (a default or CHECK expression of the log that writes
 * audited rows itself, however unlikely) takes the SPI path, so that it
 * never resets or rebuilds what the outer one is using.  An error inside a
 * write ends it: the abort of the (sub)transaction it began in resets this.
 */
static bool store_active = false;
static SubTransactionId store_active_subid = InvalidSubTransactionId;

/* ---------------------------------------------------------------------------
 * The shape of the log
 * ---------------------------------------------------------------------------
 */

/* Relcache invalidation of relid (InvalidOid: all): rebuild on next use. */
void
pe_audit_store_inval(Oid relid)
{
	if (relid == InvalidOid || relid == store_shape.relid)
		store_shape.valid = false;
}

/* Transaction end, or abort of subtransaction subid: no write is active. */
void
pe_audit_store_at_xact_end(SubTransactionId subid)
{
	if (subid == InvalidSubTransactionId || store_active_subid >= subid)
	{
		store_active = false;
		store_active_subid = InvalidSubTransactionId;
	}
}

/* Is this oid the function payment.audit_chain_trigger? */
static bool
store_is_chain_function(Oid funcoid)
{
	char	   *name = get_func_name(funcoid);
	Oid			nsp = get_func_namespace(funcoid);
	char	   *nspname = OidIsValid(nsp) ? get_namespace_name(nsp) : NULL;

	return name != NULL && nspname != NULL &&
		strcmp(name, "audit_chain_trigger") == 0 &&
		strcmp(nspname, "payment") == 0;
}

/*
 * store_fk_expected
 *		Is the constraint conoid one of the two foreign keys the caller
 *		guarantees: "FK_PaymentAuditLog_Payments" ("PaymentId" to
 *		"Payments"."Id") or "FK_PaymentAuditLog_Users" ("UserId" to
 *		"Users"."Id"), both in the log's schema?
 */
static bool
store_fk_expected(Relation rel, Oid conoid, const AttrNumber *att)
{
	List	   *fkeys = RelationGetFKeyList(rel);
	ListCell   *lc;

	foreach(lc, fkeys)
	{
		ForeignKeyCacheInfo *fk = lfirst_node(ForeignKeyCacheInfo, lc);
		char	   *conname;
		const char *refname;
		AttrNumber	refatt;
		AttrNumber	column;

		if (fk->conoid != conoid)
			continue;
		conname = get_constraint_name(conoid);
		if (conname == NULL || fk->nkeys != 1)
			return false;
		if (strcmp(conname, "FK_PaymentAuditLog_Payments") == 0)
		{
			refname = "Payments";
			column = att[AS_PAYMENT_ID];
		}
		else if (strcmp(conname, "FK_PaymentAuditLog_Users") == 0)
		{
			refname = "Users";
			column = att[AS_USER_ID];
		}
		else
			return false;
		if (fk->conkey[0] != column ||
			get_rel_namespace(fk->confrelid) != RelationGetNamespace(rel) ||
			strcmp(get_rel_name(fk->confrelid), refname) != 0)
			return false;
		refatt = get_attnum(fk->confrelid, "Id");
		return fk->confkey[0] == refatt;
	}
	return false;
}

/*
 * store_triggers_expected
 *		Are the INSERT triggers of rel exactly the chain trigger (enabled
 *		ALWAYS, BEFORE ROW) and the RI checks of the two expected foreign
 *		keys?  Anything else must fire: take the SPI path.
 */
static bool
store_triggers_expected(Relation rel, const AttrNumber *att)
{
	TriggerDesc *trigdesc = rel->trigdesc;
	bool		have_chain = false;
	int			i;

	if (trigdesc == NULL)
		return false;
	for (i = 0; i < trigdesc->numtriggers; i++)
	{
		Trigger    *trig = &trigdesc->triggers[i];

		if (!TRIGGER_FOR_INSERT(trig->tgtype))
			continue;
		if (trig->tgfoid == F_RI_FKEY_CHECK_INS && trig->tgisinternal &&
			OidIsValid(trig->tgconstraint) &&
			store_fk_expected(rel, trig->tgconstraint, att))
			continue;
		if (!have_chain && !trig->tgisinternal &&
			trig->tgenabled == TRIGGER_FIRES_ALWAYS &&
			TRIGGER_FOR_ROW(trig->tgtype) && TRIGGER_FOR_BEFORE(trig->tgtype) &&
			trig->tgnargs == 0 && trig->tgqual == NULL &&
			store_is_chain_function(trig->tgfoid))
		{
			have_chain = true;
			continue;
		}
		return false;
	}
	return have_chain;
}

/* Are all of rel's indexes immediate (no deferred uniqueness check)? */
static bool
store_indexes_immediate(Relation rel)
{
	List	   *indexes = RelationGetIndexList(rel);
	ListCell   *lc;
	bool		ok = true;

	foreach(lc, indexes)
	{
		Relation	index = index_open(lfirst_oid(lc), AccessShareLock);

		if (!index->rd_index->indimmediate)
			ok = false;
		index_close(index, AccessShareLock);
	}
	list_free(indexes);
	return ok;
}

/* Prepare expr for evaluation outside any executor run; in shape cxt. */
static ExprState *
store_prepare(Node *expr)
{
	return ExecInitExpr(expression_planner((Expr *) expr), NULL);
}

/*
 * store_build
 *		Build the shape of rel (its column map, defaults and CHECK
 *		constraints) in a new memory context, and decide whether the direct
 *		write may be used.  Catalog access happens only here.
 */
static void
store_build(Relation rel)
{
	TupleDesc	tupdesc = RelationGetDescr(rel);
	MemoryContext oldcxt;
	int			i;

	if (store_shape.cxt != NULL)
		MemoryContextDelete(store_shape.cxt);	/* frees the ExprContext too */
	memset(&store_shape, 0, sizeof(store_shape));
	store_shape.cxt = AllocSetContextCreate(CacheMemoryContext,
											"payment_ext audit store",
											ALLOCSET_SMALL_SIZES);
	store_shape.relid = RelationGetRelid(rel);
	store_shape.valid = true;
	store_shape.action_maxlen = -1;

	/*
	 * The table as the extension created it, or no direct write.  A column
	 * of a domain type would need its NULL (when not given) checked against
	 * the domain, as an INSERT does: none of the log's columns is one.
	 */
	if (rel->rd_rel->relkind != RELKIND_RELATION || rel->rd_rel->relhasrules ||
		(tupdesc->constr != NULL && tupdesc->constr->has_generated_stored))
		return;
	for (i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);

		if (!att->attisdropped && get_typtype(att->atttypid) == TYPTYPE_DOMAIN)
			return;
	}
	for (i = 0; i < AS_NCOLUMNS; i++)
	{
		const ChainColumn *col = &pe_audit_chain_columns[store_columns[i]];
		AttrNumber	attnum = get_attnum(RelationGetRelid(rel), col->name);

		if (attnum <= 0 || TupleDescAttr(tupdesc, attnum - 1)->atttypid != col->typid)
			return;
		store_shape.att[i] = attnum;
	}
	{
		int32		typmod = TupleDescAttr(tupdesc, store_shape.att[AS_ACTION_TYPE] - 1)->atttypmod;

		if (typmod >= (int32) VARHDRSZ)
			store_shape.action_maxlen = typmod - VARHDRSZ;
	}
	if (!store_triggers_expected(rel, store_shape.att) ||
		!store_indexes_immediate(rel))
		return;

	oldcxt = MemoryContextSwitchTo(store_shape.cxt);

	/* defaults of the columns the caller does not provide */
	store_shape.defaults = palloc0(sizeof(StoreDefault) * tupdesc->natts);
	for (i = 0; i < tupdesc->natts; i++)
	{
		AttrNumber	attnum = i + 1;
		Node	   *expr;
		int			j;
		bool		provided = false;

		if (TupleDescAttr(tupdesc, i)->attisdropped)
			continue;
		for (j = 0; j < AS_NCOLUMNS; j++)
			provided = provided || store_shape.att[j] == attnum;
		if (provided)
			continue;
		expr = build_column_default(rel, attnum);
		if (expr == NULL)
			continue;
		store_shape.defaults[store_shape.ndefaults].attnum = attnum;
		store_shape.defaults[store_shape.ndefaults].expr = store_prepare(expr);
		store_shape.ndefaults++;
	}

	/* every CHECK constraint (PostgreSQL enforces NOT VALID ones too) */
	if (tupdesc->constr != NULL && tupdesc->constr->num_check > 0)
	{
		ConstrCheck *check = tupdesc->constr->check;

		store_shape.nchecks = tupdesc->constr->num_check;
		store_shape.checks = palloc(sizeof(ExprState *) * store_shape.nchecks);
		store_shape.check_names = palloc(sizeof(char *) * store_shape.nchecks);
		for (i = 0; i < store_shape.nchecks; i++)
		{
			store_shape.checks[i] = store_prepare(stringToNode(check[i].ccbin));
			store_shape.check_names[i] = pstrdup(check[i].ccname);
		}
	}

	/*
	 * Per-query memory of this ExprContext is the shape's context: a hashed
	 * IN list builds its table there once, and it lives as long as the
	 * expression state that points to it.
	 */
	store_shape.econtext = CreateStandaloneExprContext();
	MemoryContextSwitchTo(oldcxt);
	store_shape.usable = true;
}

/* ---------------------------------------------------------------------------
 * The direct write
 * ---------------------------------------------------------------------------
 */

/* NOT NULL, "ActionType"'s length and the CHECK constraints of the row. */
static void
store_check_row(Relation rel, TupleTableSlot *slot)
{
	TupleDesc	tupdesc = RelationGetDescr(rel);
	ExprContext *econtext = store_shape.econtext;
	int			i;

	for (i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);

		if (att->attnotnull && slot->tts_isnull[i])
			ereport(ERROR,
					(errcode(ERRCODE_NOT_NULL_VIOLATION),
					 errmsg("null value in column \"%s\" of relation \"%s\" violates not-null constraint",
							NameStr(att->attname), RelationGetRelationName(rel)),
					 errtablecol(rel, i + 1)));
	}

	if (store_shape.action_maxlen >= 0)
	{
		int			idx = store_shape.att[AS_ACTION_TYPE] - 1;

		if (!slot->tts_isnull[idx])
		{
			text	   *t = DatumGetTextPP(slot->tts_values[idx]);
			int			len = pg_mbstrlen_with_len(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));

			if (len > store_shape.action_maxlen)
				ereport(ERROR,
						(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
						 errmsg("value too long for type character varying(%d)",
								store_shape.action_maxlen)));
		}
	}

	econtext->ecxt_scantuple = slot;
	for (i = 0; i < store_shape.nchecks; i++)
	{
		/* as ExecRelCheck: a NULL result is not a failure */
		if (!ExecCheck(store_shape.checks[i], econtext))
			ereport(ERROR,
					(errcode(ERRCODE_CHECK_VIOLATION),
					 errmsg("new row for relation \"%s\" violates check constraint \"%s\"",
							RelationGetRelationName(rel), store_shape.check_names[i]),
					 errtableconstraint(rel, store_shape.check_names[i])));
	}
	econtext->ecxt_scantuple = NULL;
}

/*
 * pe_audit_store_open
 *		The log logrelid, opened (RowExclusiveLock) for a direct write; then
 *		pe_audit_store_write or pe_audit_store_close.  NULL, with nothing
 *		done, when the log's shape does not allow a direct write, when this
 *		write would be nested in another, or when lock_payment is set and
 *		payment cannot be locked: the caller then inserts the row through
 *		SPI.  Caller runs as the log's owner.
 */
Relation
pe_audit_store_open(Oid logrelid, bool lock_payment, const pg_uuid_t *payment)
{
	Relation	rel;

	if (store_active)
		return NULL;			/* nested in another write: SPI */

	/* lock first: a pending invalidation is processed here */
	rel = table_open(logrelid, RowExclusiveLock);
	if (!store_shape.valid || store_shape.relid != logrelid)
		store_build(rel);
	if (!store_shape.usable ||
		(lock_payment && !pe_audit_chain_lock_payment(rel, payment)))
	{
		table_close(rel, RowExclusiveLock);
		return NULL;
	}
	store_active = true;
	store_active_subid = GetCurrentSubTransactionId();
	return rel;
}

/* A log opened by pe_audit_store_open that is not written to after all. */
void
pe_audit_store_close(Relation rel)
{
	table_close(rel, RowExclusiveLock);
	store_active = false;
}

/*
 * pe_audit_store_write
 *		Write one "PaymentAuditLog" row (values/nulls in AuditStoreColumn
 *		order) into rel, opened by pe_audit_store_open, and close it.  The
 *		caller has made sure that the row's foreign keys cannot fail (see
 *		the file header).
 */
void
pe_audit_store_write(Relation rel, const Datum *values, const bool *nulls)
{
	TupleDesc	tupdesc = RelationGetDescr(rel);
	ExprContext *econtext = store_shape.econtext;
	EState	   *estate;
	ResultRelInfo *rri;
	TupleTableSlot *slot;
	List	   *recheck;
	int			i;

	Assert(store_active && store_shape.usable &&
		   store_shape.relid == RelationGetRelid(rel));
	ResetExprContext(econtext);

	/*
	 * As SPI does before each statement of a function: the row is written
	 * under a new command id, so that the statement that fired the trigger
	 * does not see it and later statements do.
	 */
	CommandCounterIncrement();

	estate = CreateExecutorState();
	slot = ExecInitExtraTupleSlot(estate, tupdesc, &TTSOpsVirtual);
	ExecClearTuple(slot);
	for (i = 0; i < tupdesc->natts; i++)
	{
		slot->tts_values[i] = (Datum) 0;
		slot->tts_isnull[i] = true;
	}
	for (i = 0; i < AS_NCOLUMNS; i++)
	{
		slot->tts_values[store_shape.att[i] - 1] = values[i];
		slot->tts_isnull[store_shape.att[i] - 1] = nulls[i];
	}
	for (i = 0; i < store_shape.ndefaults; i++)
	{
		StoreDefault *d = &store_shape.defaults[i];
		bool		isnull;
		Datum		v;

		v = ExecEvalExprSwitchContext(d->expr, econtext, &isnull);
		slot->tts_values[d->attnum - 1] = v;
		slot->tts_isnull[d->attnum - 1] = isnull;
	}

	/* "ChainSeq", "PrevHash", "RowHash": as the chain trigger sets them */
	pe_audit_chain_link(rel, slot->tts_values, slot->tts_isnull);
	ExecStoreVirtualTuple(slot);
	store_check_row(rel, slot);

	rri = makeNode(ResultRelInfo);
	InitResultRelInfo(rri, rel, 1, NULL, 0);
	ExecOpenIndices(rri, false);
	table_tuple_insert(rel, slot, GetCurrentCommandId(true), 0, NULL);
	recheck = pe_ExecInsertIndexTuples(rri, slot, estate, false, false, NULL, NIL, false);
	if (recheck != NIL)
		elog(ERROR, "unexpected deferred index check on \"PaymentAuditLog\"");
	ExecCloseIndices(rri);

	ExecResetTupleTable(estate->es_tupleTable, false);
	FreeExecutorState(estate);
	ResetExprContext(econtext);
	table_close(rel, NoLock);
	store_active = false;
}
