/*-------------------------------------------------------------------------
 *
 * verify.c
 *		payment.verify_audit(): recompute the hash chains of
 *		"PaymentAuditLog" (hash.c) and compare them with what the rows and
 *		payment.audit_chain_heads say.  It also requires every payment and
 *		saved payment method that exists to have a chain that starts with
 *		the row of its creation, so deleting a whole chain and its head does
 *		not go unnoticed.
 *
 * IDENTIFICATION
 *		src/audit/verify.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/socket.h>

#include <openssl/evp.h>

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/skey.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "port/pg_bswap.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/inet.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "audit/audit.h"
#include "audit/audit_int.h"
#include "base/pg_compat.h"
#include "base/spi.h"
#include "base/text.h"
#include "base/trigger.h"
#include "base/xact.h"

/* rows fetched per batch by payment.verify_audit */
#define VERIFY_BATCH			1000

/* ---------------------------------------------------------------------------
 * payment.verify_audit
 * ---------------------------------------------------------------------------
 */

/* state of the chain being verified */
typedef struct VerifyChain
{
	bool		active;
	pg_uuid_t	id;
	bool		broken;
	int64		expected;		/* next expected "ChainSeq" */
	bool		have_last;
	pg_uuid_t	last_row;
	int64		last_seq;
	unsigned char last_hash[CHAIN_HASH_LEN];
} VerifyChain;

/* NOTICE naming the first bad row of a chain */
static void
verify_report(VerifyChain *vc, const pg_uuid_t *row, const char *detail)
{
	vc->broken = true;
	ereport(NOTICE,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("audit chain %s is broken at row %s",
					pe_uuid_text(&vc->id), pe_uuid_text(row)),
			 errdetail_internal("%s", detail)));
}

/*
 * verify_finish_chain
 *		The chain's newest row must be its head.  Caller is connected to SPI.
 */
static void
verify_finish_chain(VerifyChain *vc, SPIPlanPtr head_plan)
{
	Datum		arg;
	int			ret;

	if (!vc->active || vc->broken)
		return;
	arg = UUIDPGetDatum(&vc->id);
	ret = SPI_execute_plan(head_plan, &arg, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		verify_report(vc, &vc->last_row,
					  "The chain has no head in payment.audit_chain_heads: it was removed, or the rows were inserted without the chain trigger.");
	else
	{
		bool		isnull;
		int64		head_seq;
		bytea	   *head_hash;

		head_seq = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1, &isnull));
		head_hash = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[0],
												  SPI_tuptable->tupdesc, 2, &isnull));
		if (head_seq != vc->last_seq)
			verify_report(vc, &vc->last_row,
						  psprintf("The newest row is at position " INT64_FORMAT " but the chain's head records position " INT64_FORMAT ": rows were removed from the end of the chain.",
								   vc->last_seq, head_seq));
		else if (VARSIZE_ANY_EXHDR(head_hash) != CHAIN_HASH_LEN ||
				 memcmp(VARDATA_ANY(head_hash), vc->last_hash, CHAIN_HASH_LEN) != 0)
			verify_report(vc, &vc->last_row,
						  "The newest row is not the row the chain's head records: it was replaced.");
	}
	SPI_freetuptable(SPI_tuptable);
}

/*
 * verify_row
 *		Check one row (canonical values, its "RowHash") against the chain.
 */
static void
verify_row(VerifyChain *vc, Datum *values, bool *nulls, bool hash_isnull,
		   bytea *rowhash)
{
	pg_uuid_t	row;
	int64		seq;
	unsigned char hash[CHAIN_HASH_LEN];

	memcpy(&row, DatumGetUUIDP(values[CHAIN_COL_ID]), sizeof(row));
	if (hash_isnull || nulls[CHAIN_COL_SEQ])
	{
		verify_report(vc, &row,
					  "The row has no hash: it was inserted while the chain trigger was disabled, or its hash was removed.");
		return;
	}
	seq = DatumGetInt64(values[CHAIN_COL_SEQ]);
	if (seq > vc->expected)
	{
		verify_report(vc, &row,
					  psprintf("The row is at position " INT64_FORMAT " where position " INT64_FORMAT " was expected: rows before it were removed.",
							   seq, vc->expected));
		return;
	}
	if (seq < vc->expected)
	{
		verify_report(vc, &row,
					  psprintf("The row repeats position " INT64_FORMAT " of the chain: rows were duplicated or reordered.",
							   seq));
		return;
	}
	if (vc->expected == 1 ? !nulls[CHAIN_COL_PREV] :
		(nulls[CHAIN_COL_PREV] ||
		 VARSIZE_ANY_EXHDR(DatumGetByteaPP(values[CHAIN_COL_PREV])) != CHAIN_HASH_LEN ||
		 memcmp(VARDATA_ANY(DatumGetByteaPP(values[CHAIN_COL_PREV])),
				vc->last_hash, CHAIN_HASH_LEN) != 0))
	{
		verify_report(vc, &row,
					  "The row does not follow the previous row of its chain (\"PrevHash\" differs): rows were reordered, removed or replaced.");
		return;
	}
	pe_audit_chain_hash(values, nulls, hash);
	if (VARSIZE_ANY_EXHDR(rowhash) != CHAIN_HASH_LEN ||
		memcmp(VARDATA_ANY(rowhash), hash, CHAIN_HASH_LEN) != 0)
	{
		verify_report(vc, &row,
					  "The row's content does not match its \"RowHash\": the row was changed.");
		return;
	}
	vc->expected = seq + 1;
	vc->have_last = true;
	vc->last_row = row;
	vc->last_seq = seq;
	memcpy(vc->last_hash, hash, CHAIN_HASH_LEN);
}

/* NOTICE for a chain whose head remains but whose rows are all gone */
static void
verify_report_lost(const pg_uuid_t *chain, int64 seq)
{
	ereport(NOTICE,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("audit chain %s has lost all its rows", pe_uuid_text(chain)),
			 errdetail("Its head records position " INT64_FORMAT ".", seq)));
}

/*
 * verify_creations
 *		Every row of "Payments" and "PaymentMethods" (or only target, when
 *		not NULL) must have a chain that starts with the row of its creation:
 *		position 1 of its chain, "TableName" the row's table and "RowId" the
 *		row.  A chain deleted with its head leaves nothing else to notice.
 *		False, with a NOTICE per row, when one has none.  Caller is connected
 *		to SPI; log is the quoted, qualified "PaymentAuditLog".
 */
static bool
verify_creations(const char *log, pg_uuid_t *target)
{
	const char *schema = pe_extension_schema();
	StringInfoData sql;
	Oid			uuidarg[1] = {UUIDOID};
	Datum		arg = target != NULL ? UUIDPGetDatum(target) : (Datum) 0;
	bool		ok = true;
	uint64		r;
	int			ret;

	initStringInfo(&sql);
	appendStringInfo(&sql,
					 "SELECT 'payment', p.\"Id\" FROM %s p "
					 "WHERE %s NOT EXISTS (SELECT 1 FROM %s a "
					 "WHERE a.\"PaymentId\" OPERATOR(pg_catalog.=) p.\"Id\" "
					 "AND a.\"ChainSeq\" OPERATOR(pg_catalog.=) 1::pg_catalog.int8 "
					 "AND a.\"TableName\" OPERATOR(pg_catalog.=) 'Payments'::pg_catalog.text "
					 "AND a.\"RowId\" OPERATOR(pg_catalog.=) p.\"Id\") "
					 "UNION ALL "
					 "SELECT 'saved payment method', m.\"Id\" FROM %s m "
					 "WHERE %s NOT EXISTS (SELECT 1 FROM %s a "
					 "WHERE a.\"PaymentId\" IS NULL "
					 "AND a.\"RowId\" OPERATOR(pg_catalog.=) m.\"Id\" "
					 "AND a.\"ChainSeq\" OPERATOR(pg_catalog.=) 1::pg_catalog.int8 "
					 "AND a.\"TableName\" OPERATOR(pg_catalog.=) 'PaymentMethods'::pg_catalog.text) "
					 "ORDER BY 1, 2",
					 quote_qualified_identifier(schema, "Payments"),
					 target != NULL ? "p.\"Id\" OPERATOR(pg_catalog.=) $1 AND" : "",
					 log,
					 quote_qualified_identifier(schema, "PaymentMethods"),
					 target != NULL ? "m.\"Id\" OPERATOR(pg_catalog.=) $1 AND" : "",
					 log);
	ret = SPI_execute_with_args(sql.data, target != NULL ? 1 : 0, uuidarg,
								&arg, NULL, true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(ret));
	for (r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		char	   *what = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1);

		ereport(NOTICE,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("%s %s has no audit chain starting with its creation", what,
						pe_uuid_text(DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[r],
																	 SPI_tuptable->tupdesc, 2,
																	 &isnull)))),
				 errdetail("The rows of its chain were removed (with the chain's head, or from its start).")));
		ok = false;
	}
	SPI_freetuptable(SPI_tuptable);
	pfree(sql.data);
	return ok;
}

/* SQL function: payment.verify_audit(uuid DEFAULT NULL) returns boolean */
PG_FUNCTION_INFO_V1(pe_verify_audit);
Datum
pe_verify_audit(PG_FUNCTION_ARGS)
{
	bool		all = PG_ARGISNULL(0);
	pg_uuid_t  *target = all ? NULL : PG_GETARG_UUID_P(0);
	char	   *log;
	StringInfoData sql;
	Portal		portal;
	SPIPlanPtr	head_plan;
	Oid			uuidarg[1] = {UUIDOID};
	Datum		arg;
	VerifyChain vc;
	bool		ok = true;
	MemoryContext rowcxt;
	MemoryContext oldcxt;
	uint64		r;
	int			i;
	int			ret;

	log = quote_qualified_identifier(pe_extension_schema(),
									 "PaymentAuditLog");

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT ");
	for (i = 0; i < (int) CHAIN_NCOLUMNS; i++)
		appendStringInfo(&sql, "a.%s, ", quote_identifier(pe_audit_chain_columns[i].name));
	appendStringInfo(&sql,
					 "a.\"RowHash\", "
					 "COALESCE(a.\"PaymentId\", a.\"RowId\", '%s'::pg_catalog.uuid) AS chain "
					 "FROM %s a ",
					 PE_AUDIT_SYSTEM_CHAIN_TEXT, log);
	if (!all)
		appendStringInfo(&sql,
						 "WHERE a.\"PaymentId\" OPERATOR(pg_catalog.=) $1 "
						 "OR (a.\"PaymentId\" IS NULL AND a.\"RowId\" OPERATOR(pg_catalog.=) $1) "
						 "OR (a.\"PaymentId\" IS NULL AND a.\"RowId\" IS NULL "
						 "AND $1 OPERATOR(pg_catalog.=) '%s'::pg_catalog.uuid) ",
						 PE_AUDIT_SYSTEM_CHAIN_TEXT);
	appendStringInfoString(&sql,
						   "ORDER BY chain, a.\"ChainSeq\" NULLS FIRST, a.\"Id\"");

	head_plan = SPI_prepare("SELECT seq, row_hash FROM payment.audit_chain_heads "
							"WHERE chain_id OPERATOR(pg_catalog.=) $1",
							1, uuidarg);
	if (head_plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));

	arg = all ? (Datum) 0 : UUIDPGetDatum(target);
	portal = SPI_cursor_open_with_args(NULL, sql.data, all ? 0 : 1, uuidarg,
									   &arg, NULL, true, 0);

	rowcxt = AllocSetContextCreate(CurrentMemoryContext,
								   "payment.verify_audit row",
								   ALLOCSET_DEFAULT_SIZES);
	memset(&vc, 0, sizeof(vc));

	for (;;)
	{
		SPITupleTable *tuptable;
		uint64		n;

		SPI_cursor_fetch(portal, true, VERIFY_BATCH);
		n = SPI_processed;
		tuptable = SPI_tuptable;
		if (n == 0)
			break;
		for (r = 0; r < n; r++)
		{
			HeapTuple	tup = tuptable->vals[r];
			TupleDesc	desc = tuptable->tupdesc;
			Datum		values[CHAIN_NCOLUMNS];
			bool		nulls[CHAIN_NCOLUMNS];
			bool		hash_isnull;
			bool		chain_isnull;
			Datum		rowhash;
			pg_uuid_t  *chain;

			oldcxt = MemoryContextSwitchTo(rowcxt);
			for (i = 0; i < (int) CHAIN_NCOLUMNS; i++)
				values[i] = SPI_getbinval(tup, desc, i + 1, &nulls[i]);
			rowhash = SPI_getbinval(tup, desc, CHAIN_NCOLUMNS + 1, &hash_isnull);
			chain = DatumGetUUIDP(SPI_getbinval(tup, desc, CHAIN_NCOLUMNS + 2,
												&chain_isnull));

			if (!vc.active || memcmp(vc.id.data, chain->data, UUID_LEN) != 0)
			{
				MemoryContextSwitchTo(oldcxt);
				verify_finish_chain(&vc, head_plan);
				ok = ok && !vc.broken;
				MemoryContextSwitchTo(rowcxt);
				memset(&vc, 0, sizeof(vc));
				vc.active = true;
				vc.expected = 1;
				memcpy(&vc.id, chain, sizeof(pg_uuid_t));
			}
			if (!vc.broken)
				verify_row(&vc, values, nulls, hash_isnull,
						   hash_isnull ? NULL : DatumGetByteaPP(rowhash));
			MemoryContextSwitchTo(oldcxt);
			MemoryContextReset(rowcxt);
		}
		SPI_freetuptable(tuptable);
	}
	SPI_cursor_close(portal);
	verify_finish_chain(&vc, head_plan);
	ok = ok && !vc.broken;

	/* heads whose chain has no row left */
	if (all)
	{
		resetStringInfo(&sql);
		appendStringInfo(&sql,
						 "SELECT h.chain_id, h.seq FROM payment.audit_chain_heads h "
						 "WHERE NOT EXISTS (SELECT 1 FROM %s a WHERE a.\"PaymentId\" OPERATOR(pg_catalog.=) h.chain_id) "
						 "AND NOT EXISTS (SELECT 1 FROM %s a WHERE a.\"PaymentId\" IS NULL "
						 "AND COALESCE(a.\"RowId\", '%s'::pg_catalog.uuid) OPERATOR(pg_catalog.=) h.chain_id) "
						 "ORDER BY h.chain_id",
						 log, log, PE_AUDIT_SYSTEM_CHAIN_TEXT);
		ret = SPI_execute(sql.data, true, 0);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(ret));
		for (r = 0; r < SPI_processed; r++)
		{
			bool		isnull;

			verify_report_lost(DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[r],
														   SPI_tuptable->tupdesc, 1, &isnull)),
							   DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r],
														   SPI_tuptable->tupdesc, 2, &isnull)));
			ok = false;
		}
	}
	else if (!vc.active)
	{
		ret = SPI_execute_plan(head_plan, &arg, NULL, true, 1);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(ret));
		if (SPI_processed == 1)
		{
			bool		isnull;

			verify_report_lost(target,
							   DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
														   SPI_tuptable->tupdesc, 1, &isnull)));
			ok = false;
		}
	}

	/* every payment and saved method that exists has its chain */
	if (!verify_creations(log, all ? NULL : target))
		ok = false;

	MemoryContextDelete(rowcxt);
	SPI_freeplan(head_plan);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_BOOL(ok);
}
