/*-------------------------------------------------------------------------
 *
 * security.c
 *		The request context the application sets (app.current_user_id,
 *		app.user_role), read safely for row-level security.
 *
 * The spec's policy casts current_setting('app.current_user_id') to uuid,
 * which fails when the setting is unset (an error) or '' (a bad uuid: what
 * current_setting returns after any SET LOCAL has ended).  These functions
 * never fail: an unset, empty or malformed setting is NULL, and a policy
 * built on them shows nothing rather than raising or showing everything.
 *
 * Any role can SET app.current_user_id: it is the application's claim, and
 * the application's connection is the trust boundary.  It decides which rows
 * a session sees, nothing more; refunds, retries, key rotation and repair
 * check the caller's role instead.
 *
 * It also holds the check that code running with more rights than its
 * caller (SECURITY DEFINER functions, the audit writer, the webhook
 * appliers) makes before it reads one of the application's tables "Users",
 * "Events" and "EventRegistrations": the table must be an ordinary table
 * owned by a superuser or by the extension's owner (README, "Access
 * control": the trust model).
 *
 * IDENTIFICATION
 *		src/base/security.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_extension.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/uuid.h"

#include "base/pg_compat.h"
#include "base/security.h"
#include "base/spi.h"
#include "base/text.h"

/* SQL function: payment.app_user_id() returns uuid */
PG_FUNCTION_INFO_V1(pe_app_user_id);
Datum
pe_app_user_id(PG_FUNCTION_ARGS)
{
	const char *value = GetConfigOption("app.current_user_id", true, false);
	pg_uuid_t  *result = palloc(sizeof(pg_uuid_t));

	if (!pe_parse_uuid(value, result))
		PG_RETURN_NULL();
	PG_RETURN_UUID_P(result);
}

/* SQL function: payment.app_sees_all() returns boolean */
PG_FUNCTION_INFO_V1(pe_app_sees_all);
Datum
pe_app_sees_all(PG_FUNCTION_ARGS)
{
	const char *role = GetConfigOption("app.user_role", true, false);

	PG_RETURN_BOOL(role != NULL &&
				   (strcmp(role, "Admin") == 0 || strcmp(role, "Teacher") == 0));
}

/* ---------------------------------------------------------------------------
 * The application's tables read with more rights than the caller's
 * ---------------------------------------------------------------------------
 */
static Oid	ext_owner = InvalidOid;
static LocalTransactionId ext_owner_lxid = InvalidLocalTransactionId;

/* The owner of extension payment_ext (looked up once per transaction). */
static Oid
app_extension_owner(void)
{
	if (ext_owner_lxid == PE_MY_LXID && OidIsValid(ext_owner))
		return ext_owner;
	(void) pe_extension_lookup(NULL, &ext_owner);
	ext_owner_lxid = PE_MY_LXID;
	return ext_owner;
}

/*
 * pe_check_app_table
 *		Lock the relation relname of schema nspid (AccessShareLock, until the
 *		transaction ends) and raise unless it is an ordinary table owned by
 *		a superuser or by the extension's owner.  Caller is about to read it
 *		with more rights than its own caller's, by name: while the lock is
 *		held nobody can drop, rename or replace it, so the query reads the
 *		very table checked here, and a trusted owner is the only one who can
 *		hang code on it (rules, policies, defaults, column types, index
 *		expressions).  Does nothing when there is no such relation: the
 *		query then fails as it would have.
 */
void
pe_check_app_table(Oid nspid, const char *relname)
{
	char	   *nspname = get_namespace_name(nspid);
	Oid			relid;
	HeapTuple	tuple;
	char		relkind;
	Oid			owner;

	if (nspname == NULL)
		return;
	relid = RangeVarGetRelidExtended(makeRangeVar(nspname, pstrdup(relname), -1),
									 AccessShareLock, RVR_MISSING_OK, NULL, NULL);
	if (!OidIsValid(relid))
		return;
	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	relkind = ((Form_pg_class) GETSTRUCT(tuple))->relkind;
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);

	if (relkind != RELKIND_RELATION)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("%s is not an ordinary table", quote_qualified_identifier(nspname, relname)),
				 errdetail("payment_ext reads \"%s\" with more rights than its caller, so it must be an ordinary table owned by a superuser or by the extension's owner.",
						   relname),
				 errhint("A superuser must put the application's table back under that name.")));
	if (!superuser_arg(owner) && owner != app_extension_owner())
	{
		char	   *ownername = GetUserNameFromId(owner, true);
		char	   *extowner = GetUserNameFromId(app_extension_owner(), true);

		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("table %s is not owned by a trusted role", quote_qualified_identifier(nspname, relname)),
				 errdetail("payment_ext reads \"%s\" with more rights than its caller, so it must be owned by a superuser or by the extension's owner; it is owned by role \"%s\".",
						   relname, ownername ? ownername : "?"),
				 errhint("As a superuser: ALTER TABLE %s OWNER TO %s; and grant the application the privileges it needs on it.",
						 quote_qualified_identifier(nspname, relname),
						 extowner ? quote_identifier(extowner) : "postgres")));
	}
}
