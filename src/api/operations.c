/*-------------------------------------------------------------------------
 *
 * operations.c
 *		What a DBA needs to live with payment_ext for years: the version,
 *		and the guard against dropping an extension that holds payments.
 *		(The restore mode that lets a restore load the extension's tables
 *		as they were dumped is base/xact.c's pe_restoring_insert.)
 *
 * Invariants:
 *	- The drop guard runs at ddl_command_start, before anything is dropped;
 *	  it counts rows as the caller, who must own the extension to drop it.
 *
 * IDENTIFICATION
 *		src/api/operations.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "commands/event_trigger.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "nodes/value.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "base/guc.h"
#include "base/spi.h"

#ifndef PE_VERSION
#error "PE_VERSION must be defined by the Makefile (default_version of payment_ext.control)"
#endif

/* ---------------------------------------------------------------------------
 * payment.version()
 * ---------------------------------------------------------------------------
 */

/* SQL function: payment.version() returns text */
PG_FUNCTION_INFO_V1(pe_version);
Datum
pe_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(PE_VERSION));
}

/* ---------------------------------------------------------------------------
 * The drop guard
 * ---------------------------------------------------------------------------
 */

/* Is name among the String nodes of names? */
static bool
drop_names_include(List *names, const char *name)
{
	ListCell   *lc;

	foreach(lc, names)
	{
		Node	   *n = (Node *) lfirst(lc);

		if (IsA(n, String) && strcmp(strVal(n), name) == 0)
			return true;
	}
	return false;
}

/*
 * drop_would_remove
 *		Would the command parsetree drop extension ext (its schema and owner
 *		given)?  DROP EXTENSION naming it, DROP SCHEMA of its schema with
 *		CASCADE, DROP OWNED BY its owner.
 */
static bool
drop_would_remove(Node *parsetree, const char *extschema, Oid extowner)
{
	if (IsA(parsetree, DropStmt))
	{
		DropStmt   *stmt = (DropStmt *) parsetree;

		if (stmt->removeType == OBJECT_EXTENSION)
			return drop_names_include(stmt->objects, "payment_ext");
		if (stmt->removeType == OBJECT_SCHEMA && stmt->behavior == DROP_CASCADE)
			return drop_names_include(stmt->objects, extschema);
		return false;
	}
	if (IsA(parsetree, DropOwnedStmt))
	{
		DropOwnedStmt *stmt = (DropOwnedStmt *) parsetree;
		ListCell   *lc;

		foreach(lc, stmt->roles)
		{
			RoleSpec   *spec = (RoleSpec *) lfirst(lc);

			if (get_rolespec_oid(spec, true) == extowner)
				return true;
		}
	}
	return false;
}

/*
 * SQL function: payment.drop_guard() returns event_trigger
 *
 * ddl_command_start of DROP EXTENSION, DROP SCHEMA and DROP OWNED: refuses
 * a command that would drop payment_ext while its tables hold payments,
 * refunds or audit rows, unless payment_ext.allow_drop is on (then it warns
 * with the same counts).  An empty install drops as usual.
 */
PG_FUNCTION_INFO_V1(pe_drop_guard);
Datum
pe_drop_guard(PG_FUNCTION_ARGS)
{
	EventTriggerData *trigdata;
	Oid			owner;
	char	   *schema;
	StringInfoData sql;
	int64		payments;
	int64		refunds;
	int64		audit;
	bool		isnull;
	int			rc;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("payment.drop_guard() must be called as an event trigger")));
	trigdata = (EventTriggerData *) fcinfo->context;

	if (!pe_extension_lookup(NULL, &owner) || trigdata->parsetree == NULL)
		PG_RETURN_VOID();
	schema = pe_extension_schema();
	if (!drop_would_remove(trigdata->parsetree, schema, owner))
		PG_RETURN_VOID();

	/* PostgreSQL refuses the drop itself to anyone else; let it say so */
	if (!has_privs_of_role(GetUserId(), owner))
		PG_RETURN_VOID();

	initStringInfo(&sql);
	appendStringInfo(&sql,
					 "SELECT (SELECT pg_catalog.count(*) FROM %s.\"Payments\"),"
					 " (SELECT pg_catalog.count(*) FROM %s.\"PaymentRefunds\"),"
					 " (SELECT pg_catalog.count(*) FROM %s.\"PaymentAuditLog\")",
					 quote_identifier(schema), quote_identifier(schema),
					 quote_identifier(schema));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute(sql.data, true, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "counting payment_ext rows failed: %s", SPI_result_code_string(rc));
	payments = DatumGetInt64(pe_spi_getdatum(0, 1, &isnull));
	refunds = DatumGetInt64(pe_spi_getdatum(0, 2, &isnull));
	audit = DatumGetInt64(pe_spi_getdatum(0, 3, &isnull));
	SPI_finish();

	if (payments == 0 && refunds == 0 && audit == 0)
		PG_RETURN_VOID();

	if (!pe_allow_drop)
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("cannot drop extension \"payment_ext\" while it holds payments"),
				 errdetail("This would delete " INT64_FORMAT " payments, " INT64_FORMAT
						   " refunds and " INT64_FORMAT " audit log rows, with the saved payment methods, the failures and the outbox.",
						   payments, refunds, audit),
				 errhint("Dump the database first (pg_dump -Fc); then a superuser can SET payment_ext.allow_drop = on and drop it.")));

	ereport(WARNING,
			(errcode(ERRCODE_WARNING),
			 errmsg("dropping extension \"payment_ext\" with its payments (payment_ext.allow_drop is on)"),
			 errdetail("This deletes " INT64_FORMAT " payments, " INT64_FORMAT
					   " refunds and " INT64_FORMAT " audit log rows.",
					   payments, refunds, audit)));
	PG_RETURN_VOID();
}
