/*-------------------------------------------------------------------------
 *
 * audit.c
 *		The audit trail: one C AFTER ROW trigger for "Payments",
 *		"PaymentRefunds", "PaymentFailures" and "PaymentMethods" that writes
 *		a "PaymentAuditLog" row per change, and pe_audit_system_action() for
 *		summary rows.  The request context, the refusal LOG line and the
 *		append-only guard are in context.c, the action types and
 *		descriptions in describe.c, the map of each audited relation and
 *		the jsonb of a row in relmap.c, the hash chain in chain.c (with
 *		hash.c and verify.c), the direct write of a row in store.c.
 *
 * Each audit row holds the action ("ActionType" mapped from the table, the
 * event and the status transition), a readable description, the changed
 * columns only (INSERT: every column in "NewValues"; DELETE: every column in
 * "OldValues"), with every "Encrypted..." column shown as "[sealed]", and the
 * request context: "UserId" from app.current_user_id, "IpAddress" from
 * app.client_ip or the connection, "UserAgent" from app.user_agent or
 * application_name, and session_user / current_user.  An empty setting is
 * absent; a malformed one is recorded as NULL and quoted (masked, clipped)
 * in the description, and the change goes through.
 *
 * Invariants:
 *	- The audit row is inserted through one cached SPI plan, as the owner of
 *	  "PaymentAuditLog" (SECURITY_LOCAL_USERID_CHANGE, as the RI triggers
 *	  do): the roles that change payments hold no privilege on the log.  An
 *	  error anywhere aborts the (sub)transaction, which restores the user id;
 *	  nothing here catches errors, so a failed audit write fails the change.
 *	- No per-row catalog access: the attribute map of each audited table
 *	  (relmap.c) is built once per relation and rebuilt after a relcache
 *	  invalidation of that relation.
 *	- Per-row work is allocated in the trigger manager's per-tuple context
 *	  and in SPI's procedure context, both reset by their owners.
 *	- pe_suppress_row_audit (set by C code only, for one transaction) skips
 *	  the row entries; the caller writes a summary with
 *	  pe_audit_system_action().
 *
 * IDENTIFICATION
 *		src/audit/audit.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/socket.h>

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inet.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/uuid.h"

#include "audit/audit.h"
#include "audit/audit_int.h"
#include "base/security.h"
#include "base/spi.h"
#include "base/text.h"
#include "base/trigger.h"
#include "base/xact.h"

/* ---------------------------------------------------------------------------
 * Constants
 * ---------------------------------------------------------------------------
 */

/* columns shown as PE_AUDIT_SEALED_TEXT */

/* number of parameters of the audit INSERT */
#define AUDIT_INSERT_NARGS			12

/* where audit rows go: "PaymentAuditLog" of one schema */
typedef struct AuditTarget
{
	bool		valid;
	Oid			nspid;
	Oid			logrelid;
	Oid			owner;
	Oid			users_relid;	/* "Users" of the same schema */
	SPIPlanPtr	insert_plan;
	SPIPlanPtr	user_plan;
	SPIPlanPtr	user_lock_plan;
} AuditTarget;

/*
 * The last application user found in "Users" (of users_relid).  "pending"
 * while only the current transaction has referenced it, "locked" once this
 * transaction holds its row lock FOR KEY SHARE (what the foreign key's RI
 * check takes).  Once a transaction that referenced it commits (not
 * PREPAREs: a prepared transaction may still roll back),
 * FK_PaymentAuditLog_Users (ON DELETE RESTRICT) keeps the user from being
 * deleted, so the entry stays valid until the log or "Users" is
 * invalidated.  A committed or locked user is one the audit row's
 * reference cannot fail for, which lets the row be written directly
 * (audit/store.c).
 */
typedef struct AuditKnownUser
{
	bool		valid;
	bool		pending;
	bool		locked;
	Oid			users_relid;
	pg_uuid_t	id;
} AuditKnownUser;

/* ---------------------------------------------------------------------------
 * Backend state
 * ---------------------------------------------------------------------------
 */
static AuditTarget audit_target_cache;
static AuditKnownUser audit_known_user;
static bool audit_callbacks_registered = false;

/* ---------------------------------------------------------------------------
 * Invalidation and transaction callbacks
 * ---------------------------------------------------------------------------
 */

/* Relcache invalidation: forget the attribute map and the target's owner. */
static void
audit_relcache_callback(Datum arg, Oid relid)
{
	pe_audit_relmap_inval(relid);
	if (relid == InvalidOid || relid == audit_target_cache.logrelid)
		audit_target_cache.valid = false;
	if (relid == InvalidOid || relid == audit_target_cache.logrelid ||
		relid == audit_known_user.users_relid)
		audit_known_user.valid = false;
	pe_audit_chain_relcache_inval(relid);
	pe_audit_store_inval(relid);
}

/*
 * A function or type changed: the log's CHECK and default expressions,
 * prepared once per backend (audit/store.c), may have inlined or folded
 * the old one.
 */
static void
audit_syscache_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	pe_audit_store_inval(InvalidOid);
}

/* Transaction end: promote or forget the known user. */
static void
audit_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			audit_known_user.pending = false;
			audit_known_user.locked = false;
			pe_audit_store_at_xact_end(InvalidSubTransactionId);
			break;
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			if (audit_known_user.pending)
				audit_known_user.valid = false;
			audit_known_user.pending = false;
			audit_known_user.locked = false;
			pe_audit_chain_clear_prelocked();
			pe_audit_chain_writer_at_abort(InvalidSubTransactionId);
			pe_audit_store_at_xact_end(InvalidSubTransactionId);
			break;
		default:
			break;
	}
}

/* Subtransaction abort: its audit rows are gone, and so are its locks. */
static void
audit_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		pe_audit_store_at_xact_end(mySubid);
		if (audit_known_user.pending)
		{
			audit_known_user.valid = false;
			audit_known_user.pending = false;
		}
		audit_known_user.locked = false;	/* perhaps taken in there */
		pe_audit_chain_clear_prelocked();
		pe_audit_chain_writer_at_abort(mySubid);
	}
}

/* Register the callbacks, once per backend. */
static void
audit_init(void)
{
	if (audit_callbacks_registered)
		return;

	CacheRegisterRelcacheCallback(audit_relcache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(PROCOID, audit_syscache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(TYPEOID, audit_syscache_callback, (Datum) 0);
	RegisterXactCallback(audit_xact_callback, NULL);
	RegisterSubXactCallback(audit_subxact_callback, NULL);
	audit_callbacks_registered = true;
}

/* ---------------------------------------------------------------------------
 * Writing audit rows
 * ---------------------------------------------------------------------------
 */

/*
 * audit_target
 *		"PaymentAuditLog" of schema nspid, its owner and the cached plans.
 *		Catalog lookups only on first use and after an invalidation of the
 *		log's relcache entry.
 */
static AuditTarget *
audit_target(Oid nspid)
{
	AuditTarget *t = &audit_target_cache;
	Oid			logrelid;
	HeapTuple	tuple;

	if (t->valid && t->nspid == nspid)
		return t;

	logrelid = get_relname_relid("PaymentAuditLog", nspid);
	if (!OidIsValid(logrelid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table \"PaymentAuditLog\" does not exist in schema \"%s\"",
						get_namespace_name(nspid))));

	if (t->nspid != nspid || t->logrelid != logrelid)
	{
		/* another schema or a recreated table: new plans */
		if (t->insert_plan != NULL)
			SPI_freeplan(t->insert_plan);
		if (t->user_plan != NULL)
			SPI_freeplan(t->user_plan);
		if (t->user_lock_plan != NULL)
			SPI_freeplan(t->user_lock_plan);
		t->insert_plan = NULL;
		t->user_plan = NULL;
		t->user_lock_plan = NULL;
	}

	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(logrelid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for relation %u", logrelid);
	t->owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);

	t->users_relid = get_relname_relid("Users", nspid);
	t->nspid = nspid;
	t->logrelid = logrelid;
	t->valid = true;
	return t;
}

/* Is user the known user of t's "Users"? */
static bool
audit_user_known(AuditTarget *t, const pg_uuid_t *user)
{
	return audit_known_user.valid &&
		audit_known_user.users_relid == t->users_relid &&
		memcmp(audit_known_user.id.data, user->data, UUID_LEN) == 0;
}

/*
 * audit_user_select
 *		Is uuid a row of "Users"?  With lock, also lock it FOR KEY SHARE
 *		until the transaction ends, as the foreign key's RI check would.
 *		*plan is prepared on first use.  Caller is connected to SPI, as the
 *		log's owner.
 */
static bool
audit_user_select(AuditTarget *t, SPIPlanPtr *plan, bool lock, const pg_uuid_t *user)
{
	Datum		arg = UUIDPGetDatum(user);
	int			ret;

	if (*plan == NULL)
	{
		Oid			argtypes[1] = {UUIDOID};

		*plan = pe_prepare_kept(psprintf("SELECT 1 FROM ONLY %s WHERE \"Id\" OPERATOR(pg_catalog.=) $1%s",
									   quote_qualified_identifier(get_namespace_name(t->nspid),
																  "Users"),
									   lock ? " FOR KEY SHARE" : ""),
							  1, argtypes);
	}
	pe_check_app_table(t->nspid, "Users");
	ret = SPI_execute_plan(*plan, &arg, NULL, false, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(ret));
	return SPI_processed > 0;
}

/* Is uuid a row of "Users"?  Cached: see AuditKnownUser. */
static bool
audit_user_exists(AuditTarget *t, const pg_uuid_t *user)
{
	if (audit_user_known(t, user))
		return true;
	if (!audit_user_select(t, &t->user_plan, false, user))
		return false;

	memcpy(audit_known_user.id.data, user->data, UUID_LEN);
	audit_known_user.users_relid = t->users_relid;
	audit_known_user.valid = true;
	audit_known_user.pending = true;
	audit_known_user.locked = false;
	return true;
}

/*
 * audit_lock_user
 *		Lock the known user's row FOR KEY SHARE; false if it is gone.  Taken
 *		after the payment's row lock (as the RI check, an AFTER trigger of
 *		the audit INSERT, would be), so no new lock order.
 */
static bool
audit_lock_user(AuditTarget *t, const pg_uuid_t *user)
{
	if (!audit_user_select(t, &t->user_lock_plan, true, user))
		return false;
	audit_known_user.locked = true;
	return true;
}

/*
 * audit_write
 *		Insert the entry into "PaymentAuditLog" of schema nspid with the
 *		request context, as the log's owner.  Errors propagate: a failed
 *		audit write fails the change.
 */
static void
audit_write(AuditEntry *e, Oid nspid)
{
	AuditTarget *t;
	AuditRequest req;
	Oid			save_userid;
	int			save_sec;
	const char *session_name;
	const char *current_name;
	Datum		values[AUDIT_INSERT_NARGS];
	char		nulls[AUDIT_INSERT_NARGS];
	pg_uuid_t  *user_id = NULL;
	pg_uuid_t	locked;
	bool		direct = false;
	bool		bnulls[AUDIT_INSERT_NARGS];
	AuditWriter writer;
	const AuditWriter *prev_writer;
	int			i;
	int			ret;

	audit_init();
	t = audit_target(nspid);
	pe_audit_read_request(&req);

	GetUserIdAndSecContext(&save_userid, &save_sec);
	session_name = pe_audit_role_name(GetSessionUserId());
	current_name = pe_audit_role_name(save_userid);

	memset(nulls, ' ', sizeof(nulls));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	SetUserIdAndSecContext(t->owner,
						   save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_NOFORCE_RLS);

	if (req.user_valid)
	{
		if (audit_user_exists(t, &req.user))
			user_id = &req.user;
		else
		{
			char	   *text = pe_uuid_text(&req.user);

			appendStringInfo(&req.notes,
							 "; app.current_user_id %s is not in \"Users\"",
							 text);
		}
	}

	if (t->insert_plan == NULL)
	{
		Oid			argtypes[AUDIT_INSERT_NARGS] = {
			UUIDOID, UUIDOID, TEXTOID, TEXTOID, JSONBOID, JSONBOID,
			INETOID, TEXTOID, TEXTOID, UUIDOID, TEXTOID, TEXTOID
		};
		char	   *sql;

		sql = psprintf("INSERT INTO %s (\"PaymentId\", \"UserId\", \"ActionType\", "
					   "\"ActionDescription\", \"OldValues\", \"NewValues\", "
					   "\"IpAddress\", \"UserAgent\", \"TableName\", \"RowId\", "
					   "\"SessionUser\", \"CurrentUser\") "
					   "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
					   quote_qualified_identifier(get_namespace_name(t->nspid),
												  "PaymentAuditLog"));
		t->insert_plan = pe_prepare_kept(sql, AUDIT_INSERT_NARGS, argtypes);
	}

	appendStringInfoString(&e->description, req.notes.data);

	values[0] = e->payment_id;
	nulls[0] = e->has_payment ? ' ' : 'n';
	values[1] = user_id != NULL ? UUIDPGetDatum(user_id) : (Datum) 0;
	nulls[1] = user_id != NULL ? ' ' : 'n';
	values[2] = CStringGetTextDatum(e->action_type);
	values[3] = CStringGetTextDatum(e->description.data);
	values[4] = e->old_values != NULL ? JsonbPGetDatum(e->old_values) : (Datum) 0;
	nulls[4] = e->old_values != NULL ? ' ' : 'n';
	values[5] = e->new_values != NULL ? JsonbPGetDatum(e->new_values) : (Datum) 0;
	nulls[5] = e->new_values != NULL ? ' ' : 'n';
	values[6] = req.ip;
	nulls[6] = req.ip_isnull ? 'n' : ' ';
	values[7] = req.user_agent != NULL ? CStringGetTextDatum(req.user_agent) : (Datum) 0;
	nulls[7] = req.user_agent != NULL ? ' ' : 'n';
	values[8] = e->table_name != NULL ? CStringGetTextDatum(e->table_name) : (Datum) 0;
	nulls[8] = e->table_name != NULL ? ' ' : 'n';
	values[9] = e->row_id;
	nulls[9] = e->has_row ? ' ' : 'n';
	values[10] = CStringGetTextDatum(session_name);
	values[11] = CStringGetTextDatum(current_name);

	if (e->has_payment && e->payment_locked)
	{
		memcpy(&locked, DatumGetUUIDP(e->payment_id), sizeof(pg_uuid_t));
		pe_audit_chain_set_prelocked(&locked);
	}

	/*
	 * The provenance computed above, before the switch to the log's owner:
	 * the chain link sets the row's provenance columns from it, on either
	 * path (audit.h).
	 */
	for (i = 0; i < AUDIT_INSERT_NARGS; i++)
		bnulls[i] = (nulls[i] == 'n');
	writer.values = values;
	writer.nulls = bnulls;
	writer.subid = GetCurrentSubTransactionId();
	prev_writer = pe_audit_chain_swap_writer(&writer);

	/*
	 * The direct write (audit/store.c): the row's foreign keys cannot fail.
	 * Its payment is locked (the change holds the lock, or it is taken
	 * now), and then its user is NULL, referenced by an audit row this
	 * backend committed, or locked FOR KEY SHARE by this transaction (now,
	 * if need be).  When the log's shape does not allow it, or the payment
	 * or user is gone, the SPI INSERT, with the RI checks.
	 */
	{
		Relation	logrel;

		StaticAssertStmt(AS_NCOLUMNS == AUDIT_INSERT_NARGS,
						 "the direct write and the SPI INSERT take the same columns");
		logrel = pe_audit_store_open(t->logrelid,
									 e->has_payment && !e->payment_locked,
									 e->has_payment ? DatumGetUUIDP(e->payment_id) : NULL);
		if (logrel != NULL && user_id != NULL &&
			!(audit_user_known(t, user_id) &&
			  (!audit_known_user.pending || audit_known_user.locked)) &&
			!audit_lock_user(t, user_id))
		{
			pe_audit_store_close(logrel);
			logrel = NULL;
		}
		if (logrel != NULL)
		{
			pe_audit_store_write(logrel, values, bnulls);
			direct = true;
		}
	}
	if (!direct)
	{
		ret = SPI_execute_plan(t->insert_plan, values, nulls, false, 0);
		if (ret != SPI_OK_INSERT)
			elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(ret));
	}
	pe_audit_chain_clear_prelocked();
	(void) pe_audit_chain_swap_writer(prev_writer);

	SetUserIdAndSecContext(save_userid, save_sec);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
}

/* ---------------------------------------------------------------------------
 * Trigger functions
 * ---------------------------------------------------------------------------
 */

/*
 * Trigger function: AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW, and
 * AFTER TRUNCATE FOR EACH STATEMENT, on the four payment tables.
 */
PG_FUNCTION_INFO_V1(pe_audit_row_trigger);
Datum
pe_audit_row_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TriggerEvent event;
	Relation	rel;
	TupleDesc	tupdesc;
	AuditRelCache *entry;
	AuditEntry	e;
	Datum	   *oldvalues = NULL;
	bool	   *oldnulls = NULL;
	Datum	   *newvalues = NULL;
	bool	   *newnulls = NULL;
	Datum	   *rowvalues;
	bool	   *rownulls;
	int			natts;
	static const PeTriggerUse use = {
		false, PE_TRIG_INSERT | PE_TRIG_UPDATE | PE_TRIG_DELETE, PE_TRIG_TRUNCATE,
		"payment.audit_row_trigger() must be called as a trigger",
		"payment.audit_row_trigger() must be fired AFTER ... FOR EACH ROW, or AFTER TRUNCATE"
	};

	pe_trigger_check(fcinfo, &use);
	event = trigdata->tg_event;
	/* a restore (pe_restoring_insert): the dump holds the audit rows already */
	if (pe_restoring_insert(event))
		return PointerGetDatum(NULL);

	audit_init();
	rel = trigdata->tg_relation;
	memset(&e, 0, sizeof(e));
	initStringInfo(&e.description);
	e.table_name = RelationGetRelationName(rel);

	if (TRIGGER_FIRED_BY_TRUNCATE(event))
	{
		pe_audit_system_action(RelationGetRelationName(rel),
							   psprintf("table \"%s\" truncated",
										RelationGetRelationName(rel)),
							   NULL);
		return PointerGetDatum(NULL);
	}

	if (pe_suppress_row_audit)
		return PointerGetDatum(NULL);

	entry = pe_audit_relmap(rel);
	tupdesc = RelationGetDescr(rel);
	natts = tupdesc->natts;

	if (!TRIGGER_FIRED_BY_INSERT(event))
	{
		oldvalues = palloc(sizeof(Datum) * natts);
		oldnulls = palloc(sizeof(bool) * natts);
		heap_deform_tuple(trigdata->tg_trigtuple, tupdesc, oldvalues, oldnulls);
	}
	if (!TRIGGER_FIRED_BY_DELETE(event))
	{
		HeapTuple	newtuple = TRIGGER_FIRED_BY_UPDATE(event) ?
			trigdata->tg_newtuple : trigdata->tg_trigtuple;

		newvalues = palloc(sizeof(Datum) * natts);
		newnulls = palloc(sizeof(bool) * natts);
		heap_deform_tuple(newtuple, tupdesc, newvalues, newnulls);
	}

	if (TRIGGER_FIRED_BY_INSERT(event))
	{
		e.new_values = pe_audit_row_json(entry, newvalues, newnulls, NULL);
		pe_audit_classify_insert(&e, entry, newvalues, newnulls);
		/* nobody else sees the new payment before we commit */
		e.payment_locked = entry->kind == AUDIT_PAYMENTS;
	}
	else if (TRIGGER_FIRED_BY_UPDATE(event))
	{
		bool	   *changed = palloc0(sizeof(bool) * natts);
		bool		any = false;
		int			i;

		for (i = 0; i < entry->ncolumns; i++)
		{
			AuditColumn *col = &entry->columns[i];
			int			idx = col->attnum - 1;

			if (oldnulls[idx] != newnulls[idx])
				changed[idx] = true;
			else if (!oldnulls[idx])
				changed[idx] = !pe_audit_datum_equal(col, oldvalues[idx], newvalues[idx]);
			any = any || changed[idx];
		}
		if (!any)
			return PointerGetDatum(NULL);	/* nothing changed: no entry */

		e.old_values = pe_audit_row_json(entry, oldvalues, oldnulls, changed);
		e.new_values = pe_audit_row_json(entry, newvalues, newnulls, changed);
		pe_audit_classify_update(&e, entry, oldvalues, oldnulls,
							  newvalues, newnulls, changed);
		/* the UPDATE holds the payment's row lock */
		e.payment_locked = entry->kind == AUDIT_PAYMENTS;
	}
	else
	{
		e.old_values = pe_audit_row_json(entry, oldvalues, oldnulls, NULL);
		pe_audit_classify_delete(&e, entry, oldvalues, oldnulls);
	}

	rowvalues = newvalues != NULL ? newvalues : oldvalues;
	rownulls = newnulls != NULL ? newnulls : oldnulls;

	e.has_row = !rownulls[entry->att_id - 1];
	e.row_id = rowvalues[entry->att_id - 1];

	/*
	 * The payment the entry belongs to.  A deleted payment's entry has none
	 * (it would reference a row that is gone); it joins the chain of its
	 * "RowId" instead.  Deleting a payment that has audit rows is refused by
	 * FK_PaymentAuditLog_Payments anyway.
	 */
	if (entry->att_payment != 0 &&
		!(entry->kind == AUDIT_PAYMENTS && TRIGGER_FIRED_BY_DELETE(event)))
	{
		e.has_payment = !rownulls[entry->att_payment - 1];
		e.payment_id = rowvalues[entry->att_payment - 1];
	}

	audit_write(&e, RelationGetNamespace(rel));
	return PointerGetDatum(NULL);
}

/*
 * pe_audit_system_action
 *		See audit.h.
 */
void
pe_audit_system_action(const char *table_name, const char *description,
					   Jsonb *details)
{
	AuditEntry	e;

	memset(&e, 0, sizeof(e));
	initStringInfo(&e.description);
	appendStringInfoString(&e.description, description);
	e.action_type = "SystemAction";
	e.table_name = table_name;
	e.new_values = details;
	audit_write(&e, pe_extension_namespace());
}
