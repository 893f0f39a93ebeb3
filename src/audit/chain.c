/*-------------------------------------------------------------------------
 *
 * chain.c
 *		Tamper evidence for "PaymentAuditLog": the BEFORE INSERT trigger that
 *		links every new row into a SHA-256 hash chain (the row's hash is
 *		hash.c's; payment.verify_audit(), which recomputes the chains, is
 *		verify.c).
 *
 * A chain is identified by "PaymentId", else "RowId" (a saved payment
 * method, a deleted payment), else the nil uuid (the system chain: TRUNCATE,
 * key rotation summaries).  Each row gets "ChainSeq" (1, 2, ...),
 * "PrevHash" (the previous row's "RowHash", NULL for the first) and
 * "RowHash", the SHA-256 of its canonical encoding (hash.c).
 * payment.audit_chain_heads holds each chain's newest sequence number and
 * hash, so rows removed from the end are noticed too.
 *
 * Who wrote a row and when ("SessionUser", "CurrentUser", "UserId",
 * "IpAddress", "UserAgent", "CreatedAt") is set here from the server's own
 * state, on both paths (the trigger and the audit writer's direct write),
 * whatever the INSERT said: see chain_set_provenance.
 *
 * Invariants:
 *	- Appends to one chain are serialised for the rest of the appending
 *	  transaction: a payment's chain by that payment's row lock (FOR NO KEY
 *	  UPDATE; the writers of a payment take it anyway, so this adds no lock
 *	  order), a row's own chain (a saved method, say) by the lock the
 *	  audited write holds on that row, and the system chain by a
 *	  transaction-level advisory lock in a lock space of its own (field4 =
 *	  PE_AUDIT_LOCK_SPACE).  The head is read after the lock is held, from
 *	  the latest snapshot (after a command counter increment, so that this
 *	  transaction's own appends count), and advanced by a heap update of
 *	  exactly the version that was read: a concurrent append that slipped
 *	  through fails with a serialization failure instead of forking the
 *	  chain.
 *	- payment.audit_chain_heads is read and written directly (index probe,
 *	  heap update or insert, index entries when the update is not HOT), as
 *	  a catalog is: no privilege check, no trigger on it fires.  The
 *	  payment lock goes through SPI, as the owner of "PaymentAuditLog";
 *	  errors abort the transaction, which restores the user id.
 *	- This must be the last BEFORE INSERT trigger of the table: it hashes the
 *	  row as it will be stored.
 *
 * IDENTIFICATION
 *		src/audit/chain.c
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

/* ---------------------------------------------------------------------------
 * Constants
 * ---------------------------------------------------------------------------
 */
/* advisory lock space of the chain locks (locktag field4, "PE") */
#define PE_AUDIT_LOCK_SPACE		0x5045

/* ---------------------------------------------------------------------------
 * Backend state
 * ---------------------------------------------------------------------------
 */

/* attnums of the hashed columns in "PaymentAuditLog" */
static struct
{
	bool		valid;
	Oid			relid;
	AttrNumber	att[CHAIN_NCOLUMNS];
	AttrNumber	att_rowhash;
}			chain_attrs;

/* the payment lock of the chain, for one "PaymentAuditLog" */
static struct
{
	Oid			logrelid;
	SPIPlanPtr	lock_plan;
}			chain_plans;

/* payment.audit_chain_heads, looked up once (reset by invalidation) */
static Oid	chain_heads_relid = InvalidOid;

/* the payment whose row lock the row trigger holds (see audit.h) */
static bool chain_prelocked_valid = false;
static pg_uuid_t chain_prelocked;

/* the audit writer's provenance while it inserts (see audit.h) */
static const AuditWriter *chain_writer = NULL;

/* ---------------------------------------------------------------------------
 * State helpers
 * ---------------------------------------------------------------------------
 */

void
pe_audit_chain_set_prelocked(const pg_uuid_t *payment_id)
{
	memcpy(&chain_prelocked, payment_id, sizeof(pg_uuid_t));
	chain_prelocked_valid = true;
}

void
pe_audit_chain_clear_prelocked(void)
{
	chain_prelocked_valid = false;
}

const AuditWriter *
pe_audit_chain_swap_writer(const AuditWriter *writer)
{
	const AuditWriter *prev = chain_writer;

	chain_writer = writer;
	return prev;
}

/* Abort of subtransaction subid (InvalidSubTransactionId: the transaction). */
void
pe_audit_chain_writer_at_abort(SubTransactionId subid)
{
	if (subid == InvalidSubTransactionId ||
		(chain_writer != NULL && chain_writer->subid >= subid))
		chain_writer = NULL;
}

void
pe_audit_chain_relcache_inval(Oid relid)
{
	if (relid == InvalidOid || relid == chain_attrs.relid)
		chain_attrs.valid = false;
	if (relid == InvalidOid || relid == chain_heads_relid)
		chain_heads_relid = InvalidOid;
}

/* ---------------------------------------------------------------------------
 * The chain trigger
 * ---------------------------------------------------------------------------
 */

/*
 * The attnum of column name of rel, of type typid exactly (its hash reads
 * it as that type), or the trigger checks' error (base/trigger.c).
 */
static AttrNumber
chain_column(Relation rel, const char *name, Oid typid)
{
	int			attnum = SPI_fnumber(RelationGetDescr(rel), name);

	if (attnum <= 0)
		pe_trigger_column_missing(rel, "payment.audit_chain_trigger()", name);
	if (TupleDescAttr(RelationGetDescr(rel), attnum - 1)->atttypid != typid)
		pe_trigger_column_mistyped(rel, "payment.audit_chain_trigger()", attnum, typid);
	return (AttrNumber) attnum;
}

/* attnums of the hashed columns in rel, looked up once per relcache entry */
static void
chain_load_attrs(Relation rel)
{
	int			i;

	if (chain_attrs.valid && chain_attrs.relid == RelationGetRelid(rel))
		return;
	for (i = 0; i < (int) CHAIN_NCOLUMNS; i++)
		chain_attrs.att[i] = chain_column(rel, pe_audit_chain_columns[i].name, pe_audit_chain_columns[i].typid);
	chain_attrs.att_rowhash = chain_column(rel, "RowHash", BYTEAOID);
	chain_attrs.relid = RelationGetRelid(rel);
	chain_attrs.valid = true;
}

/* The lock plan for the log rel; caller is connected to SPI. */
static void
chain_load_plans(Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	char	   *payments;
	Oid			uuidarg[1] = {UUIDOID};

	if (chain_plans.logrelid == relid && chain_plans.lock_plan != NULL)
		return;
	if (chain_plans.lock_plan != NULL)
		SPI_freeplan(chain_plans.lock_plan);
	chain_plans.lock_plan = NULL;

	payments = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
										  "Payments");
	chain_plans.lock_plan =
		pe_prepare_kept(psprintf("SELECT 1 FROM %s WHERE \"Id\" OPERATOR(pg_catalog.=) $1 "
							   "FOR NO KEY UPDATE", payments),
					  1, uuidarg);
	chain_plans.logrelid = relid;
}

/* ---------------------------------------------------------------------------
 * The chain heads
 *
 * payment.audit_chain_heads is bookkeeping of this file alone, like a
 * catalog: it is read and advanced directly (an index probe, a heap update
 * that is normally HOT), not through SPI, which would cost two executor
 * runs per audit row.  Its CHECK constraints (seq >= 1, a 32-byte hash)
 * hold by construction; triggers on it would not fire.
 * ---------------------------------------------------------------------------
 */

#define HEADS_NATTS				4
#define HEADS_ATT_CHAIN			1
#define HEADS_ATT_SEQ			2
#define HEADS_ATT_HASH			3
#define HEADS_ATT_UPDATED		4

/* payment.audit_chain_heads, opened with RowExclusiveLock and checked */
static Relation
chain_heads_open(void)
{
	Relation	heads;
	TupleDesc	td;

	if (!OidIsValid(chain_heads_relid))
	{
		Oid			nsp = get_namespace_oid("payment", false);

		chain_heads_relid = get_relname_relid("audit_chain_heads", nsp);
		if (!OidIsValid(chain_heads_relid))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("table payment.audit_chain_heads does not exist")));
	}
	heads = table_open(chain_heads_relid, RowExclusiveLock);
	td = RelationGetDescr(heads);
	if (td->natts != HEADS_NATTS ||
		TupleDescAttr(td, HEADS_ATT_CHAIN - 1)->atttypid != UUIDOID ||
		TupleDescAttr(td, HEADS_ATT_SEQ - 1)->atttypid != INT8OID ||
		TupleDescAttr(td, HEADS_ATT_HASH - 1)->atttypid != BYTEAOID ||
		TupleDescAttr(td, HEADS_ATT_UPDATED - 1)->atttypid != TIMESTAMPTZOID ||
		!OidIsValid(pe_RelationGetPrimaryKeyIndex(heads)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
				 errmsg("table payment.audit_chain_heads is not as payment_ext created it")));
	return heads;
}

/*
 * chain_head_fetch
 *		The head of chain, from the latest snapshot: the appends to a chain
 *		are serialised (see the file header), so every earlier append has
 *		committed or is this transaction's own (the caller has incremented
 *		the command counter).  Sets *tid when found.
 */
static bool
chain_head_fetch(Relation heads, const pg_uuid_t *chain, int64 *seq,
				 unsigned char *hash, ItemPointer tid)
{
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	Snapshot	snapshot;
	bool		found = false;

	snapshot = RegisterSnapshot(GetLatestSnapshot());
	ScanKeyInit(&key, HEADS_ATT_CHAIN, BTEqualStrategyNumber, F_UUID_EQ,
				UUIDPGetDatum(chain));
	scan = systable_beginscan(heads, pe_RelationGetPrimaryKeyIndex(heads), true,
							  snapshot, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		bool		isnull;
		Datum		d;
		bytea	   *h;

		d = heap_getattr(tuple, HEADS_ATT_SEQ, RelationGetDescr(heads), &isnull);
		if (isnull)
			elog(ERROR, "audit chain head has no sequence number");
		*seq = DatumGetInt64(d);
		d = heap_getattr(tuple, HEADS_ATT_HASH, RelationGetDescr(heads), &isnull);
		h = isnull ? NULL : DatumGetByteaPP(d);
		if (h == NULL || VARSIZE_ANY_EXHDR(h) != CHAIN_HASH_LEN)
			elog(ERROR, "audit chain head hash has %d bytes",
				 h == NULL ? 0 : (int) VARSIZE_ANY_EXHDR(h));
		memcpy(hash, VARDATA_ANY(h), CHAIN_HASH_LEN);
		*tid = tuple->t_self;
		found = true;
	}
	systable_endscan(scan);
	UnregisterSnapshot(snapshot);
	return found;
}

/*
 * chain_head_store
 *		Advance chain's head to (seq, hash): update the head found at tid,
 *		or insert the first one.  A head updated by another transaction
 *		since it was read means a concurrent append: serialization failure,
 *		never a fork.
 *
 *		heap_update is called directly, not simple_table_tuple_update (what
 *		ExecSimpleRelationUpdate uses): that one turns a concurrent update
 *		into a plain "tuple concurrently updated" error, where this must
 *		raise 40001 with its hint, and its signature changed in 16 just the
 *		same.  The version differences (16: heap_update says which index
 *		entries the new version needs, TU_UpdateIndexes, instead of
 *		HeapTupleIsHeapOnly) are in pe_heap_update, pg_compat.h; index
 *		entries go through ExecInsertIndexTuples.  Covered on every
 *		supported version by the audit tests (README "Supported versions").
 */
static void
chain_head_store(Relation heads, const pg_uuid_t *chain, bool found,
				 ItemPointer tid, int64 seq, const unsigned char *hash)
{
	Datum		values[HEADS_NATTS];
	bool		nulls[HEADS_NATTS] = {false, false, false, false};
	HeapTuple	tuple;
	CommandId	cid = GetCurrentCommandId(true);
	bool		index_entries;
	bool		only_summarizing = false;

	values[HEADS_ATT_CHAIN - 1] = UUIDPGetDatum(chain);
	values[HEADS_ATT_SEQ - 1] = Int64GetDatum(seq);
	values[HEADS_ATT_HASH - 1] = PointerGetDatum(pe_audit_chain_bytea(hash, CHAIN_HASH_LEN));
	values[HEADS_ATT_UPDATED - 1] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	tuple = heap_form_tuple(RelationGetDescr(heads), values, nulls);

	if (found)
	{
		TM_FailureData tmfd;
		LockTupleMode lockmode;
		TM_Result	result;

		result = pe_heap_update(heads, tid, tuple, cid, &tmfd, &lockmode,
								&index_entries, &only_summarizing);
		switch (result)
		{
			case TM_Ok:
				break;
			case TM_Updated:
			case TM_Deleted:
				ereport(ERROR,
						(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
						 errmsg("could not append to audit chain %s: it was appended to concurrently",
								pe_uuid_text(chain)),
						 errhint("Retry the transaction.")));
				break;
			default:
				elog(ERROR, "unexpected heap_update status %u for an audit chain head",
					 (unsigned int) result);
		}
	}
	else
	{
		heap_insert(heads, tuple, cid, 0, NULL);
		index_entries = true;
	}

	if (index_entries)
	{
		EState	   *estate = CreateExecutorState();
		ResultRelInfo *rri = makeNode(ResultRelInfo);
		TupleTableSlot *slot;

		InitResultRelInfo(rri, heads, 1, NULL, 0);
		ExecOpenIndices(rri, false);
		slot = ExecInitExtraTupleSlot(estate, RelationGetDescr(heads), &TTSOpsHeapTuple);
		ExecStoreHeapTuple(tuple, slot, false);
		(void) pe_ExecInsertIndexTuples(rri, slot, estate, false, false, NULL, NIL,
										 only_summarizing);
		ExecCloseIndices(rri);
		ExecResetTupleTable(estate->es_tupleTable, false);
		FreeExecutorState(estate);
	}
}

/*
 * chain_lock
 *		Serialise appends to chain for the rest of the transaction (see the
 *		file header).  True when chain is a payment and its row is now
 *		locked (or the caller holds the lock); a payment this transaction
 *		cannot see, and any other chain, get the advisory lock.  The row
 *		lock is taken through SPI, as the owner of the log rel.
 */
static bool
chain_lock(Relation rel, const pg_uuid_t *chain, bool is_payment)
{
	LOCKTAG		tag;
	uint32		k1;
	uint32		k2;
	uint32		k3;
	uint32		k4;

	if (is_payment)
	{
		Datum		arg = UUIDPGetDatum(chain);
		Oid			save_userid;
		int			save_sec;
		int			ret;
		bool		found;

		if (chain_prelocked_valid &&
			memcmp(chain_prelocked.data, chain->data, UUID_LEN) == 0)
			return true;

		GetUserIdAndSecContext(&save_userid, &save_sec);
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		SetUserIdAndSecContext(rel->rd_rel->relowner,
							   save_sec | SECURITY_LOCAL_USERID_CHANGE |
							   SECURITY_NOFORCE_RLS);
		chain_load_plans(rel);
		ret = SPI_execute_plan(chain_plans.lock_plan, &arg, NULL, false, 1);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(ret));
		found = (SPI_processed == 1);
		SetUserIdAndSecContext(save_userid, save_sec);
		if (SPI_finish() != SPI_OK_FINISH)
			elog(ERROR, "SPI_finish failed");
		if (found)
			return true;
		/* a payment we cannot see: fall back to the advisory lock */
	}

	memcpy(&k1, chain->data, 4);
	memcpy(&k2, chain->data + 4, 4);
	memcpy(&k3, chain->data + 8, 4);
	memcpy(&k4, chain->data + 12, 4);
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, k1 ^ k3, k2 ^ k4,
						 PE_AUDIT_LOCK_SPACE);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
	return false;
}

/*
 * pe_audit_chain_lock_payment
 *		Take the row lock of payment in rel's schema (FOR NO KEY UPDATE),
 *		unless the caller said it holds it (pe_audit_chain_set_prelocked).
 *		True when the payment is visible and locked, which then also holds
 *		for the rest of the transaction (see audit.h).
 */
bool
pe_audit_chain_lock_payment(Relation rel, const pg_uuid_t *payment)
{
	if (!chain_lock(rel, payment, true))
		return false;
	pe_audit_chain_set_prelocked(payment);
	return true;
}

/*
 * chain_set_provenance
 *		Overwrite who wrote the row and when (hashed columns, pe_audit_chain_columns[]
 *		order) with the server's own state: the audit writer's registration
 *		(what it computed before it switched to the log's owner), else this
 *		session's roles and request context, with no application user (an
 *		insert that does not come from the audit trigger attests none).
 *		"CreatedAt" is the transaction's start, as the column default.
 *		Whatever the INSERT put in these columns is discarded.
 */
static void
chain_set_provenance(Datum *hvalues, bool *hnulls)
{
	static const struct
	{
		int			chain_col;
		AuditStoreColumn store_col;
	}			map[] = {
		{CHAIN_COL_USER, AS_USER_ID},
		{CHAIN_COL_IP, AS_IP_ADDRESS},
		{CHAIN_COL_AGENT, AS_USER_AGENT},
		{CHAIN_COL_SESSION, AS_SESSION_USER},
		{CHAIN_COL_CURRENT, AS_CURRENT_USER}
	};
	int			i;

	if (chain_writer != NULL)
	{
		for (i = 0; i < (int) lengthof(map); i++)
		{
			hvalues[map[i].chain_col] = chain_writer->values[map[i].store_col];
			hnulls[map[i].chain_col] = chain_writer->nulls[map[i].store_col];
		}
	}
	else
	{
		AuditRequest req;

		pe_audit_read_request(&req);
		hvalues[CHAIN_COL_USER] = (Datum) 0;
		hnulls[CHAIN_COL_USER] = true;
		hvalues[CHAIN_COL_IP] = req.ip;
		hnulls[CHAIN_COL_IP] = req.ip_isnull;
		hnulls[CHAIN_COL_AGENT] = (req.user_agent == NULL);
		hvalues[CHAIN_COL_AGENT] = req.user_agent != NULL ?
			CStringGetTextDatum(req.user_agent) : (Datum) 0;
		hvalues[CHAIN_COL_SESSION] =
			CStringGetTextDatum(pe_audit_role_name(GetSessionUserId()));
		hnulls[CHAIN_COL_SESSION] = false;
		hvalues[CHAIN_COL_CURRENT] =
			CStringGetTextDatum(pe_audit_role_name(GetUserId()));
		hnulls[CHAIN_COL_CURRENT] = false;
	}
	hvalues[CHAIN_COL_CREATED] =
		TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	hnulls[CHAIN_COL_CREATED] = false;
}

/*
 * pe_audit_chain_link
 *		Link the "PaymentAuditLog" row values/nulls (rel's attribute order)
 *		into its chain: set "ChainSeq", "PrevHash" and "RowHash" in place
 *		(allocated in the caller's memory context) and advance the chain's
 *		head.  Used by the chain trigger and by the audit trigger's direct
 *		write (audit/store.c), so that every row is chained the same way.
 */
void
pe_audit_chain_link(Relation rel, Datum *values, bool *nulls)
{
	Datum		hvalues[CHAIN_NCOLUMNS];
	bool		hnulls[CHAIN_NCOLUMNS];
	pg_uuid_t	chain;
	bool		is_payment;
	bool		is_row;
	bool		have_prev = false;
	unsigned char prev[CHAIN_HASH_LEN];
	unsigned char hash[CHAIN_HASH_LEN];
	int64		seq = 0;
	int			i;
	Relation	heads;
	bool		found;
	ItemPointerData tid;

	chain_load_attrs(rel);

	/* the chain: the payment, else the row, else the system chain */
	is_payment = !nulls[chain_attrs.att[CHAIN_COL_PAYMENT] - 1];
	is_row = false;
	if (is_payment)
		memcpy(&chain, DatumGetUUIDP(values[chain_attrs.att[CHAIN_COL_PAYMENT] - 1]),
			   sizeof(chain));
	else if (!nulls[chain_attrs.att[CHAIN_COL_ROW] - 1])
	{
		memcpy(&chain, DatumGetUUIDP(values[chain_attrs.att[CHAIN_COL_ROW] - 1]),
			   sizeof(chain));
		is_row = true;
	}
	else
		pe_audit_system_chain_id(&chain);

	/*
	 * A row's own chain needs no lock of its own: the audited write holds
	 * that row's lock (or inserted it), and a concurrent append by another
	 * writer is caught when the head is advanced (40001).  Not taking one
	 * per row also keeps a bulk insert of many rows (each its own chain)
	 * from filling the lock table.
	 */
	if (!is_row)
		(void) chain_lock(rel, &chain, is_payment);

	/* the head, read after the lock is held, and seeing our own appends */
	CommandCounterIncrement();
	heads = chain_heads_open();
	found = chain_head_fetch(heads, &chain, &seq, prev, &tid);
	have_prev = found;
	seq = found ? seq + 1 : 1;

	/* who wrote it, this row's position and predecessor, then its hash */
	for (i = 0; i < (int) CHAIN_NCOLUMNS; i++)
	{
		hvalues[i] = values[chain_attrs.att[i] - 1];
		hnulls[i] = nulls[chain_attrs.att[i] - 1];
	}
	chain_set_provenance(hvalues, hnulls);
	hvalues[CHAIN_COL_SEQ] = Int64GetDatum(seq);
	hnulls[CHAIN_COL_SEQ] = false;
	hvalues[CHAIN_COL_PREV] =
		have_prev ? PointerGetDatum(pe_audit_chain_bytea(prev, CHAIN_HASH_LEN)) : (Datum) 0;
	hnulls[CHAIN_COL_PREV] = !have_prev;
	pe_audit_chain_hash(hvalues, hnulls, hash);

	/* advance the head, only from the position read above */
	chain_head_store(heads, &chain, found, &tid, seq, hash);
	table_close(heads, NoLock);

	for (i = 0; i < (int) CHAIN_NCOLUMNS; i++)
	{
		if (i == CHAIN_COL_USER || i == CHAIN_COL_IP || i == CHAIN_COL_AGENT ||
			i == CHAIN_COL_CREATED || i == CHAIN_COL_SESSION ||
			i == CHAIN_COL_CURRENT)
		{
			values[chain_attrs.att[i] - 1] = hvalues[i];
			nulls[chain_attrs.att[i] - 1] = hnulls[i];
		}
	}
	values[chain_attrs.att[CHAIN_COL_SEQ] - 1] = hvalues[CHAIN_COL_SEQ];
	nulls[chain_attrs.att[CHAIN_COL_SEQ] - 1] = false;
	values[chain_attrs.att[CHAIN_COL_PREV] - 1] = hvalues[CHAIN_COL_PREV];
	nulls[chain_attrs.att[CHAIN_COL_PREV] - 1] = !have_prev;
	values[chain_attrs.att_rowhash - 1] = PointerGetDatum(pe_audit_chain_bytea(hash, CHAIN_HASH_LEN));
	nulls[chain_attrs.att_rowhash - 1] = false;
}

/*
 * Trigger function: BEFORE INSERT FOR EACH ROW on "PaymentAuditLog".  Sets
 * "ChainSeq", "PrevHash" and "RowHash" and the provenance columns
 * (whatever the inserter put there) and advances the chain's head.
 */
PG_FUNCTION_INFO_V1(pe_audit_chain_trigger);
Datum
pe_audit_chain_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	rel;
	TupleDesc	tupdesc;
	HeapTuple	tuple;
	Datum	   *values;
	bool	   *nulls;
	static const PeTriggerUse any_row =
		PE_TRIGGER_USE("payment.audit_chain_trigger()", true, PE_TRIG_ANY, 0,
					   "BEFORE ... FOR EACH ROW");
	static const PeTriggerUse insert_row = {
		true, PE_TRIG_INSERT, 0,
		"payment.audit_chain_trigger(): not called by trigger manager",
		"payment.audit_chain_trigger() must be fired BEFORE INSERT FOR EACH ROW"
	};

	pe_trigger_check(fcinfo, &any_row);
	pe_trigger_check(fcinfo, &insert_row);

	/*
	 * A restore (a superuser's COPY, or restore mode): the row keeps the sequence number and
	 * hashes it was dumped with, and payment.audit_chain_heads is restored
	 * from the same dump, so the chains verify as they did.
	 */
	if (pe_restoring_insert(trigdata->tg_event))
		return PointerGetDatum(trigdata->tg_trigtuple);

	rel = trigdata->tg_relation;
	tupdesc = RelationGetDescr(rel);
	tuple = trigdata->tg_trigtuple;
	chain_load_attrs(rel);

	values = palloc(sizeof(Datum) * tupdesc->natts);
	nulls = palloc(sizeof(bool) * tupdesc->natts);
	heap_deform_tuple(tuple, tupdesc, values, nulls);

	/*
	 * A row that already carries a full chain hash comes from a dump (or a
	 * copy of another log): chaining it again would silently rewrite the
	 * trail it belongs to, so it is refused outside restore mode.  Other
	 * values in the chain columns are overwritten, as always.
	 */
	if (!nulls[chain_attrs.att_rowhash - 1] &&
		VARSIZE_ANY_EXHDR(DatumGetByteaPP(values[chain_attrs.att_rowhash - 1])) == CHAIN_HASH_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot insert an audit row that already carries a chain hash"),
				 errdetail("A \"PaymentAuditLog\" row with a 32-byte \"RowHash\" comes from a dump; chaining it again would rewrite the audit trail."),
				 errhint("A dump is restored by a superuser's pg_restore or psql (their COPY stores the rows as dumped); see doc/operations.md, \"Dump and restore\".")));

	pe_audit_chain_link(rel, values, nulls);
	return PointerGetDatum(heap_form_tuple(tupdesc, values, nulls));
}

