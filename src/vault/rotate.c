/*-------------------------------------------------------------------------
 *
 * rotate.c
 *		payment.rotate_keys(): every sealed value re-sealed under the newest
 *		key of the keyring, and the rotation lock.
 *
 * Every sealed value the extension stores is listed above RotateTable.
 *
 * Invariants:
 *	- rotate_keys locks every row it re-seals (FOR NO KEY UPDATE) before it
 *	  reads the value it re-seals, so a concurrent writer's value is never
 *	  overwritten: the writer either committed first (and is re-sealed) or
 *	  waits for this transaction.
 *	- Lock order (README, "Lock order"): rotate_keys first takes the
 *	  rotation lock (pe_rotation_lock), then payments a batch at a time in
 *	  ascending id, each batch's payment rows before any row of theirs
 *	  (refunds, failures, intents, disputes, outbox rows); then saved
 *	  methods and webhook events, which belong to no payment's state.
 *	- pe_suppress_row_audit is true only while rotate_keys runs: a
 *	  PG_FINALLY restores it, even when the error is caught by a
 *	  subtransaction and the transaction goes on.
 *	- Per-batch memory lives in a context reset after each batch.
 *	- The statements that do not depend on the tables' columns are plans
 *	  kept per backend; those that list a table's sealed columns (found in
 *	  the catalog) are prepared once per call and freed at its end.
 *
 * IDENTIFICATION
 *		src/vault/rotate.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/crypto.h>

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/uuid.h"

#include "base/call.h"
#include "base/spi.h"
#include "base/xact.h"
#include "vault/vault.h"

/* rows per rotation batch, and per "PaymentAuditLog" summary row */
#define ROTATE_BATCH_ROWS		500

/* ---------------------------------------------------------------------------
 * SPI plans kept per backend (@S@: the schema of the spec's tables)
 * ---------------------------------------------------------------------------
 */
/* the summary row of one batch */
static PePlan audit_summary_plan = {
	"INSERT INTO @S@.\"PaymentAuditLog\" (\"PaymentId\", \"ActionType\","
	" \"ActionDescription\", \"TableName\", \"NewValues\")"
	" VALUES (NULL, 'SystemAction', $1, $2, $3::pg_catalog.jsonb)",
	3, {TEXTOID, TEXTOID, TEXTOID}, NULL, 0
};
/* a batch of payments, locked in id order */
static PePlan payments_lock_plan = {
	"SELECT 1 FROM @S@.\"Payments\" WHERE \"Id\" OPERATOR(pg_catalog.=) ANY ($1)"
	" ORDER BY \"Id\" FOR NO KEY UPDATE",
	1, {UUIDARRAYOID}, NULL, 0
};
/* their outbox rows holding a value under another key ($2: "pe1:<newest>:") */
static PePlan outbox_lock_plan = {
	"SELECT o.id, o.request, o.idempotency_key FROM payment.outbox o"
	" WHERE o.payment_id OPERATOR(pg_catalog.=) ANY ($1)"
	"   AND EXISTS (SELECT 1 FROM pg_catalog.jsonb_each_text(o.request) e"
	"   WHERE pg_catalog.starts_with(e.value, '" PE_SEALED_PREFIX "')"
	"     AND NOT pg_catalog.starts_with(e.value, $2))"
	" ORDER BY o.id FOR NO KEY UPDATE",
	2, {UUIDARRAYOID, TEXTOID}, NULL, 0
};
static PePlan outbox_update_plan = {
	"UPDATE payment.outbox SET request = $2 WHERE id OPERATOR(pg_catalog.=) $1",
	2, {INT8OID, JSONBOID}, NULL, 0
};

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
rotate_audit(const char *table, const char *newest,
			 int64 rows, RotateCounts *rc)
{
	StringInfoData desc;
	StringInfoData json;
	StringInfoData t;
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
	ret = SPI_execute_plan(pe_plan(&audit_summary_plan), values, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "writing the rotation's audit summary failed: %s", SPI_result_code_string(ret));
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
 * Every sealed value the extension stores, by table (README, "Key
 * rotation"):
 *	- "Payments", "PaymentRefunds", "PaymentFailures", "PaymentMethods":
 *	  every "Encrypted..." column, context "<Table>.<Column>:<Id>";
 *	- payment.intents.client_secret, context
 *	  "payment.intents.client_secret:<payment_id>";
 *	- payment.disputes.stripe_dispute_id, context
 *	  "payment.disputes.stripe_dispute_id:<id>";
 *	- payment.webhook_events.payload, context
 *	  "payment.webhook_events.payload:<event_id>";
 *	- the top-level sealed strings of payment.outbox.request, context
 *	  "outbox.request.<param>:<idempotency_key>" (rotate_outbox_request).
 * payment.key_usage counts the same values.
 */
typedef struct RotateTable
{
	const char *table;			/* relation name */
	bool		own_schema;		/* in schema payment, else the extension's */
	const char *context;		/* the table part of the values' context */
	const char *id;				/* the row id column (unique, immutable) */
	Oid			idtype;			/* UUIDOID or TEXTOID */
	const char *owner;			/* the payment id column, or NULL */
	const char *column;			/* the sealed column, or NULL: "Encrypted..." */
	int			batch;			/* rows per batch (standalone tables) */
} RotateTable;

/* a payment's own rows, re-sealed under its row lock, payment first */
static const RotateTable rotate_family[] = {
	{"Payments", false, "Payments", "Id", UUIDOID, "Id", NULL, 0},
	{"PaymentRefunds", false, "PaymentRefunds", "Id", UUIDOID, "OriginalPaymentId", NULL, 0},
	{"PaymentFailures", false, "PaymentFailures", "Id", UUIDOID, "PaymentId", NULL, 0},
	{"intents", true, "payment.intents", "payment_id", UUIDOID, "payment_id", "client_secret", 0},
	{"disputes", true, "payment.disputes", "id", UUIDOID, "payment_id", "stripe_dispute_id", 0},
};

/* tables whose rows belong to no payment's state */
static const RotateTable rotate_standalone[] = {
	{"PaymentMethods", false, "PaymentMethods", "Id", UUIDOID, NULL, NULL, ROTATE_BATCH_ROWS},
	/* payloads are up to 1 MiB each: smaller batches */
	{"webhook_events", true, "payment.webhook_events", "event_id", TEXTOID, NULL, "payload", 100},
};

/* A prepared statement of the rotation, or an error. */
static SPIPlanPtr
rotate_prepare(const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, types);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	return plan;
}

/* t's sealed columns: its one named column, or every "Encrypted..." one. */
static List *
rotate_columns(const RotateTable *t, const char *schema)
{
	Oid			relid;
	Relation	rel;
	TupleDesc	tupdesc;
	List	   *cols = NIL;
	int			i;

	if (t->column != NULL)
		return list_make1(pstrdup(t->column));
	relid = get_relname_relid(t->table, get_namespace_oid(schema, false));
	if (!OidIsValid(relid))
		elog(ERROR, "table \"%s\" not found", t->table);
	rel = RelationIdGetRelation(relid);
	tupdesc = RelationGetDescr(rel);
	for (i = 0; i < tupdesc->natts; i++)
		if (pe_sealed_column(TupleDescAttr(tupdesc, i)))
			cols = lappend(cols, pstrdup(NameStr(TupleDescAttr(tupdesc, i)->attname)));
	RelationClose(rel);
	return cols;
}

/* "(false OR NOT starts_with(c1, $n) OR ...)": a value under another key */
static char *
rotate_old_sql(List *cols, const char *alias, int param)
{
	StringInfoData q;
	ListCell   *lc;

	initStringInfo(&q);
	appendStringInfoString(&q, "(false");
	foreach(lc, cols)
		appendStringInfo(&q, " OR NOT pg_catalog.starts_with(%s%s, $%d)",
						 alias, quote_identifier(lfirst(lc)), param);
	appendStringInfoChar(&q, ')');
	return q.data;
}

/* The prepared statements of one table's rotation */
typedef struct RotatePlans
{
	const RotateTable *t;
	List	   *cols;
	char	   *qtable;
	SPIPlanPtr	select_plan;	/* lock and read the next rows ($1, $2) */
	SPIPlanPtr	select_first;	/* standalone: the first batch */
	SPIPlanPtr	update_plan;	/* $1 id (text), $2.. new values or NULL */
} RotatePlans;

/*
 * rotate_plans
 *		Prepare t's statements.  A payment's rows are selected by $1, an
 *		array of payment ids whose rows the caller locked; a standalone
 *		table's by "id > $1" (text) in id order, a batch at a time.  Both
 *		lock the rows they return (FOR NO KEY UPDATE) and return the
 *		latest version, so a concurrent writer's value is never overwritten.
 */
static void
rotate_plans(RotatePlans *p, const RotateTable *t, const char *schema)
{
	const char *cast = t->idtype == UUIDOID ? "::pg_catalog.uuid" : "";
	StringInfoData sel;
	StringInfoData upd;
	ListCell   *lc;
	Oid		   *types;
	Oid			sel_types[2] = {t->owner ? UUIDARRAYOID : TEXTOID, TEXTOID};
	int			i;

	memset(p, 0, sizeof(*p));
	p->t = t;
	p->cols = rotate_columns(t, schema);
	p->qtable = quote_qualified_identifier(t->own_schema ? "payment" : schema, t->table);
	if (p->cols == NIL)
		return;

	initStringInfo(&sel);
	appendStringInfo(&sel, "SELECT %s::text", quote_identifier(t->id));
	foreach(lc, p->cols)
		appendStringInfo(&sel, ", %s::text", quote_identifier(lfirst(lc)));
	appendStringInfo(&sel, " FROM %s WHERE ", p->qtable);
	if (t->owner)
	{
		appendStringInfo(&sel, "%s OPERATOR(pg_catalog.=) ANY ($1) AND %s"
						 " ORDER BY %s FOR NO KEY UPDATE",
						 quote_identifier(t->owner), rotate_old_sql(p->cols, "", 2),
						 quote_identifier(t->id));
		p->select_plan = rotate_prepare(sel.data, 2, sel_types);
	}
	else
	{
		char	   *tail = psprintf(" AND %s ORDER BY %s LIMIT %d FOR NO KEY UPDATE",
									rotate_old_sql(p->cols, "", 2),
									quote_identifier(t->id), t->batch);
		char	   *first = psprintf("%s$1 IS NULL%s", sel.data, tail);

		appendStringInfo(&sel, "%s OPERATOR(pg_catalog.>) $1%s%s",
						 quote_identifier(t->id), cast, tail);
		p->select_plan = rotate_prepare(sel.data, 2, sel_types);
		p->select_first = rotate_prepare(first, 2, sel_types);
	}

	initStringInfo(&upd);
	appendStringInfo(&upd, "UPDATE %s SET ", p->qtable);
	types = palloc(sizeof(Oid) * (list_length(p->cols) + 1));
	types[0] = TEXTOID;
	i = 0;
	foreach(lc, p->cols)
	{
		appendStringInfo(&upd, "%s%s = COALESCE($%d, %s)", i ? ", " : "",
						 quote_identifier(lfirst(lc)), i + 2, quote_identifier(lfirst(lc)));
		types[i + 1] = TEXTOID;
		i++;
	}
	appendStringInfo(&upd, " WHERE %s OPERATOR(pg_catalog.=) $1%s",
					 quote_identifier(t->id), cast);
	p->update_plan = rotate_prepare(upd.data, list_length(p->cols) + 1, types);
}

static void
rotate_plans_free(RotatePlans *p)
{
	if (p->select_plan)
		SPI_freeplan(p->select_plan);
	if (p->select_first)
		SPI_freeplan(p->select_first);
	if (p->update_plan)
		SPI_freeplan(p->update_plan);
}

/*
 * rotate_rows
 *		Run p's select with args (locking the rows), re-seal every value
 *		of them under another key, write them back and the batch's audit
 *		summary.  Returns the rows changed; *last gets the last row id
 *		(text, in the caller's batch context), NULL when none came back.
 */
static int64
rotate_rows(RotatePlans *p, SPIPlanPtr plan, Datum *args, const char *nulls,
			const char *newest, char **last)
{
	int			ncols = list_length(p->cols);
	SPITupleTable *tt;
	uint64		n;
	uint64		r;
	RotateCounts rc;
	int64		rows = 0;
	int			ret;

	memset(&rc, 0, sizeof(rc));
	*last = NULL;
	ret = SPI_execute_plan(plan, args, nulls, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(ret));
	tt = SPI_tuptable;
	n = SPI_processed;
	for (r = 0; r < n; r++)
	{
		HeapTuple	tup = tt->vals[r];
		char	   *row = SPI_getvalue(tup, tt->tupdesc, 1);
		Datum	   *upd_args = palloc(sizeof(Datum) * (ncols + 1));
		char	   *upd_nulls = palloc(ncols + 2);
		bool		changed = false;
		ListCell   *lc;
		int			i = 0;

		*last = row;
		upd_args[0] = CStringGetTextDatum(row);
		upd_nulls[0] = ' ';
		foreach(lc, p->cols)
		{
			char	   *sealed = SPI_getvalue(tup, tt->tupdesc, i + 2);
			char	   *resealed = NULL;

			if (sealed != NULL)
				resealed = rotate_reseal(sealed, newest,
										 pe_vault_context(p->t->context, lfirst(lc), row),
										 p->t->context, row, &rc);
			upd_nulls[i + 1] = resealed ? ' ' : 'n';
			upd_args[i + 1] = resealed ? CStringGetTextDatum(resealed) : (Datum) 0;
			changed |= resealed != NULL;
			i++;
		}
		upd_nulls[ncols + 1] = '\0';
		if (!changed)
			continue;
		ret = SPI_execute_plan(p->update_plan, upd_args, upd_nulls, false, 0);
		if (ret != SPI_OK_UPDATE)
			elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(ret));
		rows++;
	}
	if (rows > 0)
		rotate_audit(p->t->context, newest, rows, &rc);
	return rows;
}

/*
 * rotate_outbox_rows
 *		Re-seal the request values of the outbox rows of the payments in
 *		pids (locked by the caller), locking the rows in id order.
 */
static int64
rotate_outbox_rows(Datum pids, const char *prefix, const char *newest)
{
	Datum		args[2];
	SPITupleTable *locked;
	uint64		nlocked;
	uint64		r;
	RotateCounts rc;
	int64		rows = 0;
	int			ret;

	memset(&rc, 0, sizeof(rc));
	args[0] = pids;
	args[1] = CStringGetTextDatum(prefix);
	ret = SPI_execute_plan(pe_plan(&outbox_lock_plan), args, NULL, false, 0);
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
		ret = SPI_execute_plan(pe_plan(&outbox_update_plan), upd_args, NULL, false, 0);
		if (ret != SPI_OK_UPDATE)
			elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(ret));
		rows++;
	}
	if (rows > 0)
		rotate_audit("payment.outbox", newest, rows, &rc);
	return rows;
}

/*
 * rotate_payments_sql
 *		The next batch of payment ids (after $1 when bounded) that hold a
 *		value under another key ($2 is the prefix "pe1:<newest>:") in their
 *		own row or in a row of theirs, ascending.  Each branch is bounded
 *		and ordered on its own, so it can walk an index on the payment id.
 */
static char *
rotate_payments_sql(RotatePlans *fam, int nfam, bool bounded)
{
	StringInfoData q;
	int			f;

	initStringInfo(&q);
	appendStringInfoString(&q, "SELECT u.pid FROM (");
	for (f = 0; f < nfam; f++)
	{
		const char *owner;

		if (fam[f].cols == NIL)
			continue;
		owner = quote_identifier(fam[f].t->owner);
		appendStringInfo(&q, "(SELECT DISTINCT %s AS pid FROM %s WHERE %s%s AND %s"
						 " ORDER BY 1 LIMIT %d) UNION ",
						 owner, fam[f].qtable, bounded ? owner : "$1 IS NULL",
						 bounded ? " OPERATOR(pg_catalog.>) $1" : "",
						 rotate_old_sql(fam[f].cols, "", 2), ROTATE_BATCH_ROWS);
	}
	appendStringInfo(&q, "(SELECT DISTINCT o.payment_id FROM payment.outbox o WHERE %s"
					 " AND EXISTS (SELECT 1 FROM pg_catalog.jsonb_each_text(o.request) e"
					 "  WHERE pg_catalog.starts_with(e.value, '" PE_SEALED_PREFIX "')"
					 "    AND NOT pg_catalog.starts_with(e.value, $2))"
					 " ORDER BY 1 LIMIT %d)) u ORDER BY u.pid LIMIT %d",
					 bounded ? "o.payment_id OPERATOR(pg_catalog.>) $1" : "$1 IS NULL",
					 ROTATE_BATCH_ROWS, ROTATE_BATCH_ROWS);
	return q.data;
}

/*
 * rotate_payments
 *		Re-seal every value of every payment's state, a batch of payments
 *		at a time in ascending id: lock the batch's payment rows (FOR NO
 *		KEY UPDATE, in id order), then the rows of theirs that hold a value
 *		under another key (refunds, failures, intents, disputes, outbox
 *		rows), each table in id order: the lock order of every writer of a
 *		payment (README, "Lock order").  Returns the rows changed.  Caller
 *		is connected to SPI and has set pe_suppress_row_audit.
 */
static int64
rotate_payments(const char *schema, const char *newest, MemoryContext batchcxt)
{
	int			nfam = (int) lengthof(rotate_family);
	RotatePlans fam[lengthof(rotate_family)];
	char	   *prefix = psprintf(PE_SEALED_PREFIX "%s:", newest);
	Oid			cand_types[2] = {UUIDOID, TEXTOID};
	SPIPlanPtr	cand_plan;
	SPIPlanPtr	cand_first;
	Datum		last = (Datum) 0;
	bool		have_last = false;
	int64		total = 0;
	int			f;

	for (f = 0; f < nfam; f++)
		rotate_plans(&fam[f], &rotate_family[f], schema);
	cand_plan = rotate_prepare(rotate_payments_sql(fam, nfam, true), 2, cand_types);
	cand_first = rotate_prepare(rotate_payments_sql(fam, nfam, false), 2, cand_types);

	for (;;)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(batchcxt);
		Datum		args[2];
		char		nulls[2] = {have_last ? ' ' : 'n', ' '};
		Datum	   *ids;
		Datum		pids;
		char	   *row_last;
		int			nids;
		int			i;
		int			ret;

		args[0] = last;
		args[1] = CStringGetTextDatum(prefix);
		ret = SPI_execute_plan(have_last ? cand_plan : cand_first, args, nulls, true, 0);
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
							   false, UUID_LEN);
		}
		SPI_freetuptable(SPI_tuptable);

		/* remember the last payment across the batch context's reset */
		MemoryContextSwitchTo(oldcxt);
		if (have_last)
			pfree(DatumGetPointer(last));
		last = datumCopy(ids[nids - 1], false, UUID_LEN);
		have_last = true;
		MemoryContextSwitchTo(batchcxt);

		/* the payments first, in id order; then their rows */
		pids = PointerGetDatum(construct_array(ids, nids, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
		ret = SPI_execute_plan(pe_plan(&payments_lock_plan), &pids, NULL, false, 0);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(ret));
		args[0] = pids;
		for (f = 0; f < nfam; f++)
			if (fam[f].cols != NIL)
				total += rotate_rows(&fam[f], fam[f].select_plan, args, NULL,
									 newest, &row_last);
		total += rotate_outbox_rows(pids, prefix, newest);

		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(batchcxt);
		CHECK_FOR_INTERRUPTS();
	}
	for (f = 0; f < nfam; f++)
		rotate_plans_free(&fam[f]);
	SPI_freeplan(cand_plan);
	SPI_freeplan(cand_first);
	return total;
}

/*
 * rotate_standalone_table
 *		Re-seal the values of a table whose rows belong to no payment's
 *		state, in batches in id order.  Returns the rows changed.  Caller
 *		as rotate_payments.
 */
static int64
rotate_standalone_table(const RotateTable *t, const char *schema, const char *newest,
						MemoryContext batchcxt)
{
	RotatePlans p;
	char	   *prefix = psprintf(PE_SEALED_PREFIX "%s:", newest);
	char	   *last = NULL;
	int64		total = 0;

	rotate_plans(&p, t, schema);
	if (p.cols == NIL)
		return 0;
	for (;;)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(batchcxt);
		Datum		args[2];
		char		nulls[2] = {last ? ' ' : 'n', ' '};
		char	   *row_last;

		args[0] = last ? CStringGetTextDatum(last) : (Datum) 0;
		args[1] = CStringGetTextDatum(prefix);
		total += rotate_rows(&p, last ? p.select_plan : p.select_first, args, nulls,
							 newest, &row_last);
		MemoryContextSwitchTo(oldcxt);
		if (last)
			pfree(last);
		last = row_last ? pstrdup(row_last) : NULL;
		MemoryContextReset(batchcxt);
		if (last == NULL)
			break;
		CHECK_FOR_INTERRUPTS();
	}
	rotate_plans_free(&p);
	return total;
}

/*
 * pe_rotation_lock
 *		Take the transaction-level lock that one key rotation holds while it
 *		runs (an advisory lock in a lock space of its own, pg_locks.objsubid
 *		= PE_ROTATE_LOCK_SPACE): with wait, block until it is free; without,
 *		return false at once when a rotation holds it.  Two rotations run
 *		one after the other, and the settler skips its turn during one, so
 *		that no two writers of many payments at once ever run together
 *		(README, "Lock order").
 */
bool
pe_rotation_lock(bool wait)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, 0, 0, PE_ROTATE_LOCK_SPACE);
	return LockAcquire(&tag, ExclusiveLock, false, !wait) != LOCKACQUIRE_NOT_AVAIL;
}

/*
 * SQL function: payment.rotate_keys() returns bigint
 *
 * Re-seals every sealed value under the newest key (the list above the
 * RotateTable type), in batches of at most ROTATE_BATCH_ROWS rows, one
 * "PaymentAuditLog" 'SystemAction' row per batch and table, and returns the
 * number of rows re-sealed.  Values sealed under old keys keep opening
 * throughout.  The payments' rows go first, payment by payment in id
 * order under each payment's row lock; then saved methods and stored
 * webhook payloads.
 */
PE_REDACTED_FUNCTION(pe_rotate_keys, rotate_keys_body);

/* The body of pe_rotate_keys. */
static Datum
rotate_keys_body(PG_FUNCTION_ARGS)
{
	char	   *newest = pstrdup(pe_newest_key_id());
	char	   *schema = pe_extension_schema();
	bool		save_suppress = pe_suppress_row_audit;
	MemoryContext batchcxt;
	int64		total = 0;
	int			t;

	/* before any row lock: waiting here holds nothing */
	(void) pe_rotation_lock(true);

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
		total += rotate_payments(schema, newest, batchcxt);
		for (t = 0; t < (int) lengthof(rotate_standalone); t++)
			total += rotate_standalone_table(&rotate_standalone[t], schema, newest,
											 batchcxt);
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
