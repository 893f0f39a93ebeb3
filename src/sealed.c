/*-------------------------------------------------------------------------
 *
 * sealed.c
 *		Sealed columns: the trigger that admits only values sealed for their
 *		column and row, and payment.rotate_keys().
 *
 * Every column named "Encrypted..." of "Payments", "PaymentMethods",
 * "PaymentRefunds" and "PaymentFailures" holds NULL or a value sealed with
 * the context "<Table>.<Column>:<row Id>"; a sealed string value of the
 * top level of payment.outbox.request uses "outbox.request.<param>:
 * <idempotency_key>".
 *
 * Invariants:
 *	- rotate_keys locks every row it re-seals (FOR NO KEY UPDATE) before it
 *	  reads the value it re-seals, so a concurrent writer's value is never
 *	  overwritten: the writer either committed first (and is re-sealed) or
 *	  waits for this transaction.
 *	- pe_suppress_row_audit is true only while rotate_keys runs: a
 *	  PG_FINALLY restores it, even when the error is caught by a
 *	  subtransaction and the transaction goes on.
 *	- Per-batch memory lives in a context reset after each batch.
 *
 * IDENTIFICATION
 *		src/sealed.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/crypto.h>

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "payment_ext.h"
#include "vault.h"

/* rows per rotation batch, and per "PaymentAuditLog" summary row */
#define ROTATE_BATCH_ROWS		500

#define SEALED_COLUMN_PREFIX	"Encrypted"

static const char *const sealed_tables[] = {
	"Payments", "PaymentMethods", "PaymentRefunds", "PaymentFailures"
};

/* ---------------------------------------------------------------------------
 * The trigger
 * ---------------------------------------------------------------------------
 */

static bool
sealed_column(Form_pg_attribute att)
{
	return !att->attisdropped &&
		strncmp(NameStr(att->attname), SEALED_COLUMN_PREFIX,
				strlen(SEALED_COLUMN_PREFIX)) == 0 &&
		(att->atttypid == TEXTOID || att->atttypid == VARCHAROID);
}

/*
 * Trigger function: BEFORE INSERT OR UPDATE FOR EACH ROW on the four payment
 * tables.  Refuses a non-NULL "Encrypted..." value that does not open under
 * "<Table>.<Column>:<Id>"; on UPDATE checks only changed values (all of them
 * when "Id" changed).  The plaintext is wiped at once.
 */
PG_FUNCTION_INFO_V1(pe_sealed_columns_trigger);
Datum
pe_sealed_columns_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	rel;
	TupleDesc	tupdesc;
	HeapTuple	newtuple;
	HeapTuple	oldtuple = NULL;
	int			idattnum;
	char	   *id;
	bool		id_changed = false;
	int			i;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("pe_sealed_columns_trigger: not called by trigger manager")));
	if (!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("pe_sealed_columns_trigger: must be fired BEFORE INSERT OR UPDATE FOR EACH ROW")));
	/*
	 * pg_restore in restore mode: values are loaded as they were dumped,
	 * even if this server's keyring cannot open them (payment.key_usage
	 * shows such keys afterwards); refusing them would lose the rows.
	 */
	if (pe_restoring_insert(trigdata->tg_event))
		return PointerGetDatum(trigdata->tg_trigtuple);

	rel = trigdata->tg_relation;
	tupdesc = RelationGetDescr(rel);
	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		oldtuple = trigdata->tg_trigtuple;
		newtuple = trigdata->tg_newtuple;
	}
	else
		newtuple = trigdata->tg_trigtuple;

	{
		PeTriggerColumn idcol = {&idattnum, "Id", UUIDOID, true};

		pe_trigger_columns(rel, "payment.sealed_columns_trigger()", &idcol, 1, false);
	}
	id = SPI_getvalue(newtuple, tupdesc, idattnum);
	if (id == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("\"Id\" of \"%s\" must not be null", RelationGetRelationName(rel))));
	if (oldtuple != NULL)
	{
		char	   *oldid = SPI_getvalue(oldtuple, tupdesc, idattnum);

		id_changed = oldid == NULL || strcmp(oldid, id) != 0;
	}

	for (i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);
		bool		isnull;
		Datum		value;
		char	   *sealed;
		char	   *context;
		char	   *plaintext;

		if (!sealed_column(att))
		{
			/* a sealed column of another type is never skipped silently */
			if (!att->attisdropped &&
				strncmp(NameStr(att->attname), SEALED_COLUMN_PREFIX,
						strlen(SEALED_COLUMN_PREFIX)) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_DATATYPE_MISMATCH),
						 errmsg("trigger function payment.sealed_columns_trigger() needs column \"%s\" of table \"%s\" to be of type text",
								NameStr(att->attname), RelationGetRelationName(rel)),
						 errdetail("The column is of type %s.", format_type_be(att->atttypid)),
						 errtablecol(rel, i + 1)));
			continue;
		}
		value = heap_getattr(newtuple, i + 1, tupdesc, &isnull);
		if (isnull)
			continue;
		if (oldtuple != NULL && !id_changed)
		{
			bool		oldnull;
			Datum		oldvalue = heap_getattr(oldtuple, i + 1, tupdesc, &oldnull);

			if (!oldnull && datum_image_eq(value, oldvalue, false, -1))
				continue;
		}

		sealed = TextDatumGetCString(value);
		context = pe_vault_context(RelationGetRelationName(rel),
								   NameStr(att->attname), id);
		if (!pe_try_open(sealed, context, &plaintext))
			ereport(ERROR,
					(errcode(ERRCODE_CHECK_VIOLATION),
					 errmsg("column \"%s\" of \"%s\" accepts only values sealed for its row",
							NameStr(att->attname), RelationGetRelationName(rel)),
					 errdetail("Seal the value with payment.encrypt(value, '%s.%s:' || \"Id\").",
							   RelationGetRelationName(rel), NameStr(att->attname)),
					 errtablecol(rel, i + 1)));
		OPENSSL_cleanse(plaintext, strlen(plaintext));
		pfree(plaintext);
		pfree(sealed);
		pfree(context);
	}
	return PointerGetDatum(newtuple);
}

/* ---------------------------------------------------------------------------
 * Rotation
 * ---------------------------------------------------------------------------
 */

/* Per-key counts of one batch, for its audit summary. */
typedef struct RotateCounts
{
	int			nkeys;
	char	   *ids[16];
	int64		counts[16];
	int64		values;
} RotateCounts;

static void
rotate_count(RotateCounts *rc, const char *key_id)
{
	int			k;

	rc->values++;
	for (k = 0; k < rc->nkeys; k++)
	{
		if (strcmp(rc->ids[k], key_id) == 0)
		{
			rc->counts[k]++;
			return;
		}
	}
	if (rc->nkeys < (int) lengthof(rc->ids))
	{
		rc->ids[rc->nkeys] = pstrdup(key_id);
		rc->counts[rc->nkeys++] = 1;
	}
}

/*
 * rotate_reseal
 *		If sealed is under a key other than newest, open it under context and
 *		seal it again under newest; returns the new value, or NULL when it is
 *		already under newest.  Raises, naming table and row but no value, if
 *		it does not open.
 */
static char *
rotate_reseal(const char *sealed, const char *newest, const char *context,
			  const char *table, const char *row, RotateCounts *rc)
{
	char	   *key_id = pe_vault_key_id_of(sealed);
	char	   *plaintext;
	char	   *result;

	if (key_id != NULL && strcmp(key_id, newest) == 0)
		return NULL;
	if (key_id == NULL || !pe_try_open(sealed, context, &plaintext))
		ereport(ERROR,
				(errcode(ERRCODE_PE_SEALED_INVALID),
				 errmsg("a sealed value in \"%s\" does not open, key rotation stopped", table),
				 errdetail("Row %s; the value was changed, or its key is no longer in the keyring.", row)));
	result = pe_seal(plaintext, context);
	OPENSSL_cleanse(plaintext, strlen(plaintext));
	pfree(plaintext);
	rotate_count(rc, key_id);
	return result;
}

/*
 * rotate_audit
 *		Write the summary row of one batch into "PaymentAuditLog": one
 *		'SystemAction' with the key ids and counts.  Caller is connected to
 *		SPI.
 */
static void
rotate_audit(const char *auditlog, const char *table, const char *newest,
			 int64 rows, RotateCounts *rc)
{
	StringInfoData desc;
	StringInfoData json;
	StringInfoData t;
	Oid			argtypes[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		values[3];
	int			k;
	int			ret;

	initStringInfo(&desc);
	initStringInfo(&json);
	initStringInfo(&t);
	appendStringInfo(&desc, "key rotation: re-sealed " INT64_FORMAT " values in "
					 INT64_FORMAT " rows of %s under key %s (from",
					 rc->values, rows, table, newest);
	escape_json(&t, table);
	appendStringInfo(&json, "{\"operation\": \"rotate_keys\", \"table\": %s, ", t.data);
	resetStringInfo(&t);
	escape_json(&t, newest);
	appendStringInfo(&json, "\"new_key\": %s, \"rows\": " INT64_FORMAT
					 ", \"values\": " INT64_FORMAT ", \"from\": {",
					 t.data, rows, rc->values);
	for (k = 0; k < rc->nkeys; k++)
	{
		resetStringInfo(&t);
		escape_json(&t, rc->ids[k]);
		appendStringInfo(&json, "%s%s: " INT64_FORMAT, k ? ", " : "",
						 t.data, rc->counts[k]);
		appendStringInfo(&desc, "%s %s: " INT64_FORMAT, k ? "," : "",
						 rc->ids[k], rc->counts[k]);
	}
	appendStringInfoString(&json, "}}");
	appendStringInfoChar(&desc, ')');

	values[0] = CStringGetTextDatum(desc.data);
	values[1] = CStringGetTextDatum(table);
	values[2] = CStringGetTextDatum(json.data);
	ret = SPI_execute_with_args(psprintf("INSERT INTO %s (\"PaymentId\", \"ActionType\", "
										 "\"ActionDescription\", \"TableName\", \"NewValues\") "
										 "VALUES (NULL, 'SystemAction', $1, $2, $3::pg_catalog.jsonb)",
										 auditlog),
								3, argtypes, values, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(ret));
}

/*
 * rotate_candidates_sql
 *		The query for the next batch of a table's rows that hold a value
 *		under a key other than $2 (the prefix "pe1:<newest>:"): after $1 when
 *		bounded, else from the start ($1 is then NULL and unused), which
 *		keeps the bounded plan an index range scan.
 */
static char *
rotate_candidates_sql(const char *qtable, List *cols, bool bounded)
{
	StringInfoData q;
	ListCell   *lc;

	initStringInfo(&q);
	appendStringInfo(&q, "SELECT \"Id\" FROM %s WHERE %s AND (false", qtable,
					 bounded ? "\"Id\" OPERATOR(pg_catalog.>) $1" : "$1 IS NULL");
	foreach(lc, cols)
		appendStringInfo(&q, " OR NOT pg_catalog.starts_with(%s, $2)",
						 quote_identifier(lfirst(lc)));
	appendStringInfo(&q, ") ORDER BY \"Id\" LIMIT %d", ROTATE_BATCH_ROWS);
	return q.data;
}

/*
 * rotate_table
 *		Re-seal the sealed columns of one payment table in batches.  Returns
 *		the number of rows changed.  Caller is connected to SPI and has set
 *		pe_suppress_row_audit.
 */
static int64
rotate_table(const char *schema, const char *table, const char *newest,
			 const char *auditlog, MemoryContext batchcxt)
{
	char	   *qtable = quote_qualified_identifier(schema, table);
	Oid			relid;
	TupleDesc	tupdesc;
	List	   *cols = NIL;
	char	   *cand;
	StringInfoData lock;
	StringInfoData upd;
	char	   *cand_first;
	SPIPlanPtr	cand_plan;
	SPIPlanPtr	cand_first_plan;
	SPIPlanPtr	lock_plan;
	SPIPlanPtr	upd_plan;
	Oid		   *upd_types;
	char	   *prefix = psprintf(PE_SEALED_PREFIX "%s:", newest);
	Datum		last = (Datum) 0;
	bool		have_last = false;
	int64		total = 0;
	ListCell   *lc;
	int			ncols;
	int			i;
	Relation	rel;

	relid = get_relname_relid(table, get_namespace_oid(schema, false));
	if (!OidIsValid(relid))
		elog(ERROR, "table \"%s\" not found", table);
	rel = RelationIdGetRelation(relid);
	tupdesc = RelationGetDescr(rel);
	for (i = 0; i < tupdesc->natts; i++)
		if (sealed_column(TupleDescAttr(tupdesc, i)))
			cols = lappend(cols, pstrdup(NameStr(TupleDescAttr(tupdesc, i)->attname)));
	RelationClose(rel);
	ncols = list_length(cols);
	if (ncols == 0)
		return 0;

	/* candidates: rows after the last seen with a value under another key */
	cand = rotate_candidates_sql(qtable, cols, true);
	cand_first = rotate_candidates_sql(qtable, cols, false);

	initStringInfo(&lock);
	appendStringInfoString(&lock, "SELECT \"Id\"::text");
	foreach(lc, cols)
		appendStringInfo(&lock, ", %s::text", quote_identifier(lfirst(lc)));
	appendStringInfo(&lock, " FROM %s WHERE \"Id\" OPERATOR(pg_catalog.=) ANY ($1) ORDER BY \"Id\" FOR NO KEY UPDATE",
					 qtable);

	initStringInfo(&upd);
	appendStringInfo(&upd, "UPDATE %s SET ", qtable);
	upd_types = palloc(sizeof(Oid) * (ncols + 1));
	upd_types[0] = UUIDOID;
	i = 0;
	foreach(lc, cols)
	{
		appendStringInfo(&upd, "%s%s = COALESCE($%d, %s)", i ? ", " : "",
						 quote_identifier(lfirst(lc)), i + 2, quote_identifier(lfirst(lc)));
		upd_types[i + 1] = TEXTOID;
		i++;
	}
	appendStringInfoString(&upd, " WHERE \"Id\" OPERATOR(pg_catalog.=) $1");

	{
		Oid			cand_types[2] = {UUIDOID, TEXTOID};
		Oid			lock_types[1] = {UUIDARRAYOID};

		cand_plan = SPI_prepare(cand, 2, cand_types);
		cand_first_plan = SPI_prepare(cand_first, 2, cand_types);
		lock_plan = SPI_prepare(lock.data, 1, lock_types);
		upd_plan = SPI_prepare(upd.data, ncols + 1, upd_types);
		if (cand_plan == NULL || cand_first_plan == NULL || lock_plan == NULL ||
			upd_plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	}

	for (;;)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(batchcxt);
		Datum		cand_args[2];
		char		cand_nulls[2] = {have_last ? ' ' : 'n', ' '};
		Datum	   *ids;
		int			nids;
		ArrayType  *idarr;
		Datum		lock_args[1];
		RotateCounts rc;
		int64		rows = 0;
		uint64		r;
		SPITupleTable *locked;
		uint64		nlocked;
		int			ret;

		memset(&rc, 0, sizeof(rc));
		cand_args[0] = last;
		cand_args[1] = CStringGetTextDatum(prefix);
		ret = SPI_execute_plan(have_last ? cand_plan : cand_first_plan,
							   cand_args, cand_nulls, true, 0);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(ret));
		nids = (int) SPI_processed;
		if (nids == 0)
		{
			MemoryContextSwitchTo(oldcxt);
			break;
		}
		ids = palloc(sizeof(Datum) * nids);
		for (i = 0; i < nids; i++)
		{
			bool		isnull;

			ids[i] = datumCopy(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull),
							   false, 16);
		}
		SPI_freetuptable(SPI_tuptable);

		/* remember the last candidate across the batch context's reset */
		MemoryContextSwitchTo(oldcxt);
		if (have_last)
			pfree(DatumGetPointer(last));
		last = datumCopy(ids[nids - 1], false, 16);
		have_last = true;
		MemoryContextSwitchTo(batchcxt);

		/* lock them, then read their current values */
		idarr = construct_array(ids, nids, UUIDOID, 16, false, TYPALIGN_CHAR);
		lock_args[0] = PointerGetDatum(idarr);
		ret = SPI_execute_plan(lock_plan, lock_args, NULL, false, 0);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(ret));
		locked = SPI_tuptable;
		nlocked = SPI_processed;

		for (r = 0; r < nlocked; r++)
		{
			HeapTuple	tup = locked->vals[r];
			char	   *row = SPI_getvalue(tup, locked->tupdesc, 1);
			Datum	   *upd_args = palloc(sizeof(Datum) * (ncols + 1));
			char	   *upd_nulls = palloc(ncols + 2);
			bool		changed = false;

			upd_args[0] = DirectFunctionCall1(uuid_in, CStringGetDatum(row));
			upd_nulls[0] = ' ';
			i = 0;
			foreach(lc, cols)
			{
				char	   *sealed = SPI_getvalue(tup, locked->tupdesc, i + 2);
				char	   *resealed = NULL;

				if (sealed != NULL)
					resealed = rotate_reseal(sealed, newest,
											 pe_vault_context(table, lfirst(lc), row),
											 table, row, &rc);
				upd_nulls[i + 1] = resealed ? ' ' : 'n';
				upd_args[i + 1] = resealed ? CStringGetTextDatum(resealed) : (Datum) 0;
				changed |= resealed != NULL;
				i++;
			}
			upd_nulls[ncols + 1] = '\0';
			if (!changed)
				continue;
			ret = SPI_execute_plan(upd_plan, upd_args, upd_nulls, false, 0);
			if (ret != SPI_OK_UPDATE)
				elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(ret));
			rows++;
		}
		SPI_freetuptable(locked);

		if (rows > 0)
			rotate_audit(auditlog, table, newest, rows, &rc);
		total += rows;

		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(batchcxt);
		CHECK_FOR_INTERRUPTS();
	}
	SPI_freeplan(cand_plan);
	SPI_freeplan(cand_first_plan);
	SPI_freeplan(lock_plan);
	SPI_freeplan(upd_plan);
	return total;
}

/*
 * rotate_outbox_request
 *		The request document with every top-level sealed string under another
 *		key re-sealed under newest, or NULL when nothing changed.
 */
static Jsonb *
rotate_outbox_request(Jsonb *request, const char *idempotency_key,
					  const char *newest, const char *row, RotateCounts *rc)
{
	JsonbIterator *it = JsonbIteratorInit(&request->root);
	JsonbParseState *state = NULL;
	JsonbValue	v;
	JsonbValue *res = NULL;
	JsonbIteratorToken tok;
	int			depth = 0;
	char	   *key = NULL;
	bool		changed = false;

	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		if (tok == WJB_BEGIN_OBJECT || tok == WJB_BEGIN_ARRAY)
			depth++;
		else if (tok == WJB_END_OBJECT || tok == WJB_END_ARRAY)
			depth--;
		else if (tok == WJB_KEY && depth == 1)
			key = pnstrdup(v.val.string.val, v.val.string.len);
		else if (tok == WJB_VALUE && depth == 1 && key != NULL &&
				 v.type == jbvString &&
				 v.val.string.len > (int) strlen(PE_SEALED_PREFIX) &&
				 strncmp(v.val.string.val, PE_SEALED_PREFIX, strlen(PE_SEALED_PREFIX)) == 0)
		{
			char	   *sealed = pnstrdup(v.val.string.val, v.val.string.len);
			char	   *column = psprintf("request.%s", key);
			char	   *resealed;

			resealed = rotate_reseal(sealed, newest,
									 pe_vault_context("outbox", column, idempotency_key),
									 "payment.outbox", row, rc);
			if (resealed != NULL)
			{
				v.val.string.val = resealed;
				v.val.string.len = strlen(resealed);
				changed = true;
			}
		}
		res = pushJsonbValue(&state, tok, tok < WJB_BEGIN_ARRAY ? &v : NULL);
	}
	return changed ? JsonbValueToJsonb(res) : NULL;
}

/*
 * rotate_outbox
 *		Re-seal the sealed values of payment.outbox.request in batches.
 *		Returns the number of rows changed.  Caller as rotate_table.
 */
static int64
rotate_outbox(const char *newest, const char *auditlog, MemoryContext batchcxt)
{
	const char *cand =
		"SELECT o.id FROM payment.outbox o "
		"WHERE o.id OPERATOR(pg_catalog.>) $1 AND EXISTS ("
		"  SELECT 1 FROM pg_catalog.jsonb_each_text(o.request) e "
		"  WHERE pg_catalog.starts_with(e.value, '" PE_SEALED_PREFIX "') "
		"    AND NOT pg_catalog.starts_with(e.value, $2)) "
		"ORDER BY o.id LIMIT " CppAsString2(ROTATE_BATCH_ROWS);
	const char *lock =
		"SELECT id, request, idempotency_key FROM payment.outbox "
		"WHERE id OPERATOR(pg_catalog.=) ANY ($1) ORDER BY id FOR NO KEY UPDATE";
	const char *upd =
		"UPDATE payment.outbox SET request = $2 WHERE id OPERATOR(pg_catalog.=) $1";
	Oid			cand_types[2] = {INT8OID, TEXTOID};
	Oid			lock_types[1] = {INT8ARRAYOID};
	Oid			upd_types[2] = {INT8OID, JSONBOID};
	SPIPlanPtr	cand_plan = SPI_prepare(cand, 2, cand_types);
	SPIPlanPtr	lock_plan = SPI_prepare(lock, 1, lock_types);
	SPIPlanPtr	upd_plan = SPI_prepare(upd, 2, upd_types);
	char	   *prefix = psprintf(PE_SEALED_PREFIX "%s:", newest);
	int64		last = 0;
	int64		total = 0;

	if (cand_plan == NULL || lock_plan == NULL || upd_plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));

	for (;;)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(batchcxt);
		Datum		cand_args[2];
		Datum	   *ids;
		int			nids;
		Datum		lock_args[1];
		SPITupleTable *locked;
		uint64		nlocked;
		uint64		r;
		RotateCounts rc;
		int64		rows = 0;
		int			ret;
		int			i;

		memset(&rc, 0, sizeof(rc));
		cand_args[0] = Int64GetDatum(last);
		cand_args[1] = CStringGetTextDatum(prefix);
		ret = SPI_execute_plan(cand_plan, cand_args, NULL, true, 0);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(ret));
		nids = (int) SPI_processed;
		if (nids == 0)
		{
			MemoryContextSwitchTo(oldcxt);
			break;
		}
		ids = palloc(sizeof(Datum) * nids);
		for (i = 0; i < nids; i++)
		{
			bool		isnull;

			ids[i] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
		}
		last = DatumGetInt64(ids[nids - 1]);
		SPI_freetuptable(SPI_tuptable);

		lock_args[0] = PointerGetDatum(construct_array(ids, nids, INT8OID, 8,
													   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		ret = SPI_execute_plan(lock_plan, lock_args, NULL, false, 0);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(ret));
		locked = SPI_tuptable;
		nlocked = SPI_processed;
		for (r = 0; r < nlocked; r++)
		{
			HeapTuple	tup = locked->vals[r];
			bool		isnull;
			Datum		id = SPI_getbinval(tup, locked->tupdesc, 1, &isnull);
			Jsonb	   *request = DatumGetJsonbP(SPI_getbinval(tup, locked->tupdesc, 2, &isnull));
			char	   *idem = SPI_getvalue(tup, locked->tupdesc, 3);
			char	   *row = SPI_getvalue(tup, locked->tupdesc, 1);
			Jsonb	   *newreq = rotate_outbox_request(request, idem, newest, row, &rc);
			Datum		upd_args[2];

			if (newreq == NULL)
				continue;
			upd_args[0] = id;
			upd_args[1] = JsonbPGetDatum(newreq);
			ret = SPI_execute_plan(upd_plan, upd_args, NULL, false, 0);
			if (ret != SPI_OK_UPDATE)
				elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(ret));
			rows++;
		}
		SPI_freetuptable(locked);
		if (rows > 0)
			rotate_audit(auditlog, "payment.outbox", newest, rows, &rc);
		total += rows;

		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(batchcxt);
		CHECK_FOR_INTERRUPTS();
	}
	SPI_freeplan(cand_plan);
	SPI_freeplan(lock_plan);
	SPI_freeplan(upd_plan);
	return total;
}

/*
 * SQL function: payment.rotate_keys() returns bigint
 *
 * Re-seals every sealed value under the newest key, in batches of
 * ROTATE_BATCH_ROWS rows, one "PaymentAuditLog" 'SystemAction' row per
 * batch, and returns the number of rows re-sealed.  Values sealed under old
 * keys keep opening throughout.
 */
static Datum rotate_keys_body(PG_FUNCTION_ARGS);

PG_FUNCTION_INFO_V1(pe_rotate_keys);
Datum
pe_rotate_keys(PG_FUNCTION_ARGS)
{
	/* no constraint violation shows a row (see pe_call_redacted) */
	return pe_call_redacted(rotate_keys_body, fcinfo);
}

/* The body of pe_rotate_keys. */
static Datum
rotate_keys_body(PG_FUNCTION_ARGS)
{
	char	   *newest = pstrdup(pe_newest_key_id());
	char	   *schema = pe_extension_schema();
	char	   *auditlog = quote_qualified_identifier(schema, "PaymentAuditLog");
	bool		save_suppress = pe_suppress_row_audit;
	MemoryContext batchcxt;
	int64		total = 0;
	int			t;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	batchcxt = AllocSetContextCreate(CurrentMemoryContext, "payment_ext rotate batch",
									 ALLOCSET_DEFAULT_SIZES);

	/*
	 * The row audit trigger skips ciphertext-only rewrites while this runs;
	 * the summary rows stand for them.  PG_FINALLY puts the flag back even
	 * when a caller's subtransaction catches an error and goes on.
	 */
	pe_suppress_row_audit = true;
	PG_TRY();
	{
		for (t = 0; t < (int) lengthof(sealed_tables); t++)
			total += rotate_table(schema, sealed_tables[t], newest, auditlog, batchcxt);
		total += rotate_outbox(newest, auditlog, batchcxt);
	}
	PG_FINALLY();
	{
		pe_suppress_row_audit = save_suppress;
	}
	PG_END_TRY();

	MemoryContextDelete(batchcxt);
	SPI_finish();
	PG_RETURN_INT64(total);
}
