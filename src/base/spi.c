/*-------------------------------------------------------------------------
 *
 * spi.c
 *		The extension's own catalog entry, the schema of the spec's tables,
 *		and SPI plans kept per backend (PePlan).
 *
 * Invariants:
 *	- A kept plan is prepared in the caller's SPI connection on first use
 *	  and lives until the backend exits, or until the extension's schema
 *	  changes (then it is prepared again with the new schema's name).
 *	- The schema is looked up at most once per transaction.
 *
 * IDENTIFICATION
 *		src/base/spi.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "lib/stringinfo.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "base/pg_compat.h"
#include "base/spi.h"
#include "base/text.h"

static char *tables_schema = NULL;		/* quoted, in TopMemoryContext */
static LocalTransactionId tables_schema_lxid = InvalidLocalTransactionId;
static uint64 schema_generation = 0;

/* ---------------------------------------------------------------------------
 * The extension's catalog entry
 * ---------------------------------------------------------------------------
 */

/*
 * pe_extension_lookup
 *		The schema (*nspid) and owner (*owner) of extension payment_ext
 *		(either pointer may be NULL); false, setting both InvalidOid, when
 *		it is not installed.  PostgreSQL 15 does not export
 *		get_extension_schema and has no syscache on pg_extension: this
 *		scans its name index, so callers on a hot path cache the answer
 *		(pe_tables_schema: once per transaction).
 */
bool
pe_extension_lookup(Oid *nspid, Oid *owner)
{
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tuple;
	bool		found;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum("payment_ext"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	found = HeapTupleIsValid(tuple);
	if (nspid != NULL)
		*nspid = found ? ((Form_pg_extension) GETSTRUCT(tuple))->extnamespace : InvalidOid;
	if (owner != NULL)
		*owner = found ? ((Form_pg_extension) GETSTRUCT(tuple))->extowner : InvalidOid;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * pe_extension_namespace
 *		OID of the schema payment_ext's tables live in (CREATE EXTENSION's
 *		target); raises if the extension is not installed.
 */
Oid
pe_extension_namespace(void)
{
	Oid			nspid;

	if (!pe_extension_lookup(&nspid, NULL) || !OidIsValid(nspid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"payment_ext\" is not installed in this database"),
				 errhint("Run CREATE EXTENSION payment_ext.")));
	return nspid;
}

/* Name of pe_extension_namespace(), palloc'd. */
char *
pe_extension_schema(void)
{
	char	   *nspname = get_namespace_name(pe_extension_namespace());

	if (nspname == NULL)
		elog(ERROR, "schema of extension payment_ext not found");
	return nspname;
}

/*
 * pe_tables_schema
 *		The quoted name of the schema CREATE EXTENSION payment_ext targeted,
 *		where the spec's tables live.  Looked up at most once per
 *		transaction; raises if the extension is not installed.
 */
const char *
pe_tables_schema(void)
{
	char	   *nspname;

	if (tables_schema != NULL && tables_schema_lxid == PE_MY_LXID)
		return tables_schema;

	nspname = pe_extension_schema();
	if (tables_schema == NULL || strcmp(tables_schema, quote_identifier(nspname)) != 0)
	{
		if (tables_schema != NULL)
			pfree(tables_schema);
		tables_schema = MemoryContextStrdup(TopMemoryContext, quote_identifier(nspname));
		schema_generation++;
	}
	tables_schema_lxid = PE_MY_LXID;
	return tables_schema;
}

/* ---------------------------------------------------------------------------
 * Kept plans
 * ---------------------------------------------------------------------------
 */

/*
 * pe_prepare_kept
 *		SPI_prepare and SPI_keepplan sql (caller is connected to SPI); the
 *		plan lives until SPI_freeplan.
 */
SPIPlanPtr
pe_prepare_kept(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s",
			 sql, SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	return plan;
}

/*
 * pe_plan
 *		The kept SPI plan of p, prepared on first use (caller is connected to
 *		SPI).  "@S@" in the SQL text stands for the tables' schema.
 */
SPIPlanPtr
pe_plan(PePlan *p)
{
	const char *schema = pe_tables_schema();
	StringInfoData sql;
	const char *c;
	SPIPlanPtr	plan;

	if (p->plan != NULL && p->generation == schema_generation)
		return p->plan;
	if (p->plan != NULL)
	{
		SPI_freeplan(p->plan);
		p->plan = NULL;
	}

	initStringInfo(&sql);
	for (c = p->sql; *c; c++)
	{
		if (c[0] == '@' && c[1] == 'S' && c[2] == '@')
		{
			appendStringInfoString(&sql, schema);
			c += 2;
		}
		else
			appendStringInfoChar(&sql, *c);
	}
	plan = pe_prepare_kept(sql.data, p->nargs, p->argtypes);
	pfree(sql.data);
	p->plan = plan;
	p->generation = schema_generation;
	return plan;
}

/*
 * pe_spi_run
 *		Run p's kept plan with args and nulls (as SPI_execute_plan takes
 *		them) and return the number of rows it returned or changed; raises,
 *		naming what, when SPI reports an error.  Caller is connected to SPI.
 */
uint64
pe_spi_run(PePlan *p, Datum *args, const char *nulls, bool read_only, long count,
		   const char *what)
{
	int			rc = SPI_execute_plan(pe_plan(p), args, nulls, read_only, count);

	if (rc < 0)
		elog(ERROR, "%s failed: %s", what, SPI_result_code_string(rc));
	return SPI_processed;
}

/*
 * pe_spi_find_payment
 *		Run p, a query of one payment whose id is its only argument $1 (it
 *		may lock the row), and raise 02000 "payment <id> does not exist"
 *		when it returns no row; its row is then SPI_tuptable's first.
 *		Caller is connected to SPI.
 */
void
pe_spi_find_payment(PePlan *p, Datum payment_id, bool read_only)
{
	if (pe_spi_run(p, &payment_id, NULL, read_only, 1, "looking up the payment") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("payment %s does not exist", pe_uuid_text(DatumGetUUIDP(payment_id)))));
}

/* Column col (1-based) of row of the last SPI result. */
Datum
pe_spi_getdatum(int row, int col, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull);
}
