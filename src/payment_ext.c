/*-------------------------------------------------------------------------
 *
 * payment_ext.c
 *		Module entry point of payment_ext: PG_MODULE_MAGIC, _PG_init and the
 *		payment_ext.* configuration parameters.
 *
 * Invariants:
 *	- _PG_init never raises an ERROR: it only defines parameters, so loading
 *	  the library with or without shared_preload_libraries is always safe.
 *	- Parameters that name secrets hold file paths only, never the secrets.
 *
 * IDENTIFICATION
 *		src/payment_ext.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "commands/trigger.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "payment_ext.h"
#include "vault.h"
#include "pg_compat.h"

PG_MODULE_MAGIC;

/* ---------------------------------------------------------------------------
 * Configuration parameters
 * ---------------------------------------------------------------------------
 */
char	   *pe_stripe_api_base = NULL;
char	   *pe_database = NULL;
char	   *pe_keyring_file = NULL;
char	   *pe_keyring_passphrase_command = NULL;
char	   *pe_stripe_api_key_file = NULL;
char	   *pe_webhook_secret_file = NULL;

int			pe_max_in_flight = 64;
int			pe_max_attempts = 8;
int			pe_max_requests_per_second = 0;
int			pe_request_timeout_ms = 30000;
int			pe_connect_timeout_ms = 5000;
int			pe_retry_base_ms = 500;
int			pe_retry_max_ms = 60000;
char	   *pe_worker_role = NULL;

bool		pe_suppress_row_audit = false;
bool		pe_restoring = false;
bool		pe_allow_drop = false;
bool		pe_adopt_existing_roles = false;

int			pe_webhook_tolerance = 300;
int			pe_pending_ttl = 3600;
int			pe_idempotency_window = 82800;
int			pe_search_lag = 3600;
char	   *pe_system_user_id = NULL;

void		_PG_init(void);

/* ---------------------------------------------------------------------------
 * The schema of the spec's tables, and SPI plans kept per backend
 * ---------------------------------------------------------------------------
 */
static char *tables_schema = NULL;		/* quoted, in TopMemoryContext */
static LocalTransactionId tables_schema_lxid = InvalidLocalTransactionId;
static uint64 schema_generation = 0;

/*
 * pe_extension_namespace
 *		OID of the schema payment_ext's tables live in (CREATE EXTENSION's
 *		target); raises if the extension is not installed.  PostgreSQL 15
 *		does not export get_extension_schema, and has no syscache on
 *		pg_extension: this scans its name index, so callers on a hot path
 *		use pe_tables_schema (once per transaction) instead.
 */
Oid
pe_extension_namespace(void)
{
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tuple;
	Oid			nspid = InvalidOid;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum("payment_ext"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
		nspid = ((Form_pg_extension) GETSTRUCT(tuple))->extnamespace;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	if (!OidIsValid(nspid))
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
 * pe_hex_decode
 *		Decode exactly 2 * nbytes hex digits at s into out.  False, with
 *		nothing said, on any other character: used on keys and MACs, which
 *		an error message must never echo (PostgreSQL 15's hex_decode does).
 */
bool
pe_hex_decode(const char *s, size_t nbytes, unsigned char *out)
{
	size_t		i;

	for (i = 0; i < 2 * nbytes; i++)
	{
		char		c = s[i];
		int			v;

		if (c >= '0' && c <= '9')
			v = c - '0';
		else if (c >= 'a' && c <= 'f')
			v = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v = c - 'A' + 10;
		else
			return false;
		if (i % 2 == 0)
			out[i / 2] = (unsigned char) (v << 4);
		else
			out[i / 2] |= (unsigned char) v;
	}
	return true;
}

/* Column col (1-based) of row of the last SPI result. */
Datum
pe_spi_getdatum(int row, int col, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull);
}

/* ---------------------------------------------------------------------------
 * Helpers shared by the trigger functions
 * ---------------------------------------------------------------------------
 */

/*
 * pe_check_trigger
 *		Raise unless fcinfo is a trigger call fired BEFORE (or AFTER) and FOR
 *		EACH ROW (or statement) as the function's CREATE TRIGGER says.
 */
void
pe_check_trigger(FunctionCallInfo fcinfo, const char *name, bool before, bool row)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s: not called by trigger manager", name)));
	if ((before && !TRIGGER_FIRED_BEFORE(trigdata->tg_event)) ||
		(!before && !TRIGGER_FIRED_AFTER(trigdata->tg_event)) ||
		(row && !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event)) ||
		(!row && !TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event)))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s: must be fired %s ... FOR EACH %s", name,
						before ? "BEFORE" : "AFTER", row ? "ROW" : "STATEMENT")));
}

/*
 * pe_attnum_has_type
 *		Is attnum a live column of td of type typid (TEXTOID: text or
 *		varchar)?  No catalog access: cheap enough for every trigger call.
 */
bool
pe_attnum_has_type(TupleDesc td, int attnum, Oid typid)
{
	Form_pg_attribute att;

	if (attnum <= 0 || attnum > td->natts)
		return false;
	att = TupleDescAttr(td, attnum - 1);
	if (att->attisdropped)
		return false;
	if (typid == TEXTOID)
		return att->atttypid == TEXTOID || att->atttypid == VARCHAROID;
	return att->atttypid == typid;
}

/*
 * pe_trigger_columns
 *		Resolve and check the columns cols[0..n-1] of rel that the trigger
 *		function trigger reads or writes (see payment_ext.h).  With cached,
 *		the caller's attnums are from an earlier call for the same relation
 *		and number of columns: they are only re-checked (ALTER COLUMN ...
 *		TYPE keeps both), and looked up again if that fails.
 */
void
pe_trigger_columns(Relation rel, const char *trigger,
				   const PeTriggerColumn *cols, int n, bool cached)
{
	TupleDesc	td = RelationGetDescr(rel);
	int			i;

	if (cached)
	{
		for (i = 0; i < n; i++)
		{
			int			attnum = *cols[i].attnum;

			if (attnum == 0 ? cols[i].required :
				!pe_attnum_has_type(td, attnum, cols[i].typid))
				break;
		}
		if (i == n)
			return;
	}

	for (i = 0; i < n; i++)
	{
		int			attnum = SPI_fnumber(td, cols[i].name);

		if (attnum <= 0)
		{
			if (cols[i].required)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_COLUMN),
						 errmsg("trigger function %s needs column \"%s\" in table \"%s\"",
								trigger, cols[i].name, RelationGetRelationName(rel)),
						 errdetail("Table \"%s\" has no such column.",
								   RelationGetRelationName(rel)),
						 errhint("Attach the trigger only to the table payment_ext attached it to.")));
			*cols[i].attnum = 0;
			continue;
		}
		if (!pe_attnum_has_type(td, attnum, cols[i].typid))
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("trigger function %s needs column \"%s\" of table \"%s\" to be of type %s",
							trigger, cols[i].name, RelationGetRelationName(rel),
							format_type_be(cols[i].typid)),
					 errdetail("The column is of type %s.",
							   format_type_be(TupleDescAttr(td, attnum - 1)->atttypid)),
					 errhint("Attach the trigger only to the table payment_ext attached it to."),
					 errtablecol(rel, attnum)));
		*cols[i].attnum = attnum;
	}
}

/*
 * pe_clip_chars
 *		A palloc'd copy of s with at most maxchars characters (a varchar(n)
 *		counts characters), never cut inside one.
 */
char *
pe_clip_chars(const char *s, int maxchars)
{
	return pnstrdup(s, pg_mbcharcliplen(s, strlen(s), maxchars));
}

/*
 * pe_strlcpy_mb
 *		strlcpy into dst (size bytes, size > 0) that cuts src on a character
 *		boundary of the database encoding.  Never raises: usable under a
 *		spinlock's caller and in the worker's status paths.
 */
void
pe_strlcpy_mb(char *dst, const char *src, size_t size)
{
	size_t		len = strlen(src);
	size_t		n = len;

	if (len >= size)
		n = pg_mbcliplen(src, (int) len, (int) size - 1);
	memcpy(dst, src, n);
	dst[n] = '\0';
}

/*
 * pe_call_redacted
 *		Call body(fcinfo), the body of a SECURITY DEFINER function that writes
 *		the payment tables.  An integrity constraint violation raised by
 *		PostgreSQL inside it (CHECK, NOT NULL, unique, exclusion, foreign key:
 *		the errors that name a table or constraint) is re-raised with its
 *		DETAIL replaced, because that DETAIL shows the failing row ("Failing
 *		row contains (...)") or key, and in these tables that can be a sealed
 *		value, a Stripe id or another user's row.  Every other error passes
 *		unchanged.
 *
 * Why a PG_CATCH: the executor builds that DETAIL from the row, and shows
 * every column to a role that bypasses row-level security, as the
 * extension's owner does; checking the arguments first (the functions do)
 * cannot cover a constraint a DBA adds.  The handler only edits the error
 * and throws it again at once: nothing resumes after the error, and the
 * transaction (or the caller's subtransaction) aborts as it would have.
 * The server log gets the edited error too: it is emitted by whoever
 * finally catches it.
 */
Datum
pe_call_redacted(PGFunction body, FunctionCallInfo fcinfo)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile Datum result = (Datum) 0;

	PG_TRY();
	{
		result = body(fcinfo);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (ERRCODE_TO_CATEGORY(edata->sqlerrcode) !=
			ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION ||
			(edata->table_name == NULL && edata->constraint_name == NULL) ||
			(edata->detail == NULL && edata->detail_log == NULL))
		{
			FreeErrorData(edata);
			PG_RE_THROW();
		}
		FlushErrorState();
		edata->detail = pstrdup("The row's values are not shown: they may hold sealed values or another user's data.");
		edata->detail_log = NULL;
		ReThrowError(edata);
	}
	PG_END_TRY();
	return result;
}

/* Raise 22004 if argument argno (named name) of the call is NULL. */
void
pe_check_arg_not_null(FunctionCallInfo fcinfo, int argno, const char *name)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", name)));
}

/*
 * Transaction end: transaction-local flags go back to their defaults, and a
 * committed transaction that added outbox rows wakes the outbox worker.
 */
static void
pe_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			pe_suppress_row_audit = false;
			pe_resolve_active = false;
			pe_outbox_at_xact_end(true);
			break;
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			pe_suppress_row_audit = false;
			pe_resolve_active = false;
			pe_outbox_at_xact_end(false);
			break;
		default:
			break;
	}
}

/*
 * _PG_init
 *		Define the payment_ext.* parameters and reserve the prefix.
 */
void
_PG_init(void)
{
	DefineCustomStringVariable("payment_ext.stripe_api_base",
							   gettext_noop("Base URL of the Stripe API the outbox worker sends requests to."),
							   gettext_noop("Tests point it at a Stripe stand-in on loopback."),
							   &pe_stripe_api_base,
							   "https://api.stripe.com",
							   PGC_SIGHUP,
							   0,
							   NULL,
							   NULL,
							   NULL);

	/*
	 * Reloadable, not PGC_POSTMASTER: a PGC_POSTMASTER parameter may only be
	 * defined while preloading, and this one must also exist in sessions of
	 * servers that do not preload payment_ext.  The worker restarts itself
	 * to follow a change.
	 */
	DefineCustomStringVariable("payment_ext.database",
							   gettext_noop("Database whose payment.outbox the outbox worker drains."),
							   gettext_noop("On a change the worker restarts and connects to the new database."),
							   &pe_database,
							   "postgres",
							   PGC_SIGHUP,
							   0,
							   NULL,
							   NULL,
							   NULL);

	/*
	 * Token vault.  Paths and a command only: superuser-only (hidden from
	 * other roles' SHOW and pg_settings), reloadable, never per session.
	 */
	DefineCustomStringVariable("payment_ext.keyring_file",
							   gettext_noop("Absolute path of the keyring file: one \"<key-id> <64 hex digits>\" per line, newest last."),
							   gettext_noop("Must be outside the data directory and not accessible by group or others."),
							   &pe_keyring_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   pe_check_secret_path,
							   pe_assign_keyring,
							   NULL);

	DefineCustomStringVariable("payment_ext.keyring_passphrase_command",
							   gettext_noop("Command that prints the passphrase of an encrypted keyring file."),
							   gettext_noop("Like ssl_passphrase_command: %p is replaced by a prompt; empty means the keyring file is not encrypted."),
							   &pe_keyring_passphrase_command,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL,
							   pe_assign_keyring,
							   NULL);

	DefineCustomStringVariable("payment_ext.stripe_api_key_file",
							   gettext_noop("Absolute path of the file holding the Stripe secret API key."),
							   NULL,
							   &pe_stripe_api_key_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   pe_check_secret_path,
							   NULL,
							   NULL);

	DefineCustomStringVariable("payment_ext.webhook_secret_file",
							   gettext_noop("Absolute path of the file holding the Stripe webhook signing secret."),
							   NULL,
							   &pe_webhook_secret_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   pe_check_secret_path,
							   pe_assign_webhook_secret,
							   NULL);

	/*
	 * Webhooks and settling.  Reloadable only: a session must not widen the
	 * tolerance of its own signature checks.
	 */
	DefineCustomIntVariable("payment_ext.webhook_tolerance",
							gettext_noop("Largest difference between a webhook signature's timestamp and now, either way."),
							gettext_noop("Stripe's libraries use 300 seconds."),
							&pe_webhook_tolerance,
							300,
							1,
							86400,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL,
							NULL,
							NULL);

	DefineCustomIntVariable("payment_ext.pending_ttl",
							gettext_noop("Age after which the outbox worker settles a Pending payment with Stripe."),
							gettext_noop("It looks the PaymentIntent up and records its real state, or cancels it and marks the payment Failed (code expired)."),
							&pe_pending_ttl,
							3600,
							1,
							INT_MAX / 2,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL,
							NULL,
							NULL);

	DefineCustomIntVariable("payment_ext.idempotency_window",
							gettext_noop("How long after it may first have reached Stripe an outbox request is still sent again with its idempotency key."),
							gettext_noop("Stripe keeps idempotency keys for at least 24 hours; after this window the request is never resent, its payment or refund is looked up instead.  Lower it only for tests."),
							&pe_idempotency_window,
							82800,
							1,
							82800,
							PGC_SIGHUP,
							GUC_UNIT_S | GUC_SUPERUSER_ONLY,
							NULL,
							NULL,
							NULL);

	DefineCustomIntVariable("payment_ext.search_lag",
							gettext_noop("How long Stripe's search index may lag behind a request that reached Stripe."),
							gettext_noop("A payment whose create request may have reached Stripe is failed on an empty search only this long after that request was given up."),
							&pe_search_lag,
							3600,
							0,
							86400,
							PGC_SIGHUP,
							GUC_UNIT_S | GUC_SUPERUSER_ONLY,
							NULL,
							NULL,
							NULL);

	DefineCustomStringVariable("payment_ext.system_user_id",
							   gettext_noop("The \"Users\" row that refunds made in Stripe's Dashboard are recorded as processed by."),
							   gettext_noop("Empty: the payment_ext system user, created when the extension creates \"Users\"."),
							   &pe_system_user_id,
							   "",
							   PGC_SIGHUP,
							   0,
							   NULL,
							   NULL,
							   NULL);

	/*
	 * Outbox worker.  All reloadable: the worker reads them at each turn of
	 * its loop.  Ranges: README, "Outbox worker".
	 */
	DefineCustomIntVariable("payment_ext.max_in_flight",
							gettext_noop("Most Stripe requests the outbox worker keeps in flight at once."),
							NULL,
							&pe_max_in_flight,
							64,
							1,
							1000,
							PGC_SIGHUP,
							0,
							NULL,
							NULL,
							NULL);

	/*
	 * issue 20: the retry budget of a request is time (idempotency_window),
	 * not a count; max_attempts keeps its name but bounds only answers the
	 * worker cannot use (README, "Retry policy").
	 */
	DefineCustomIntVariable("payment_ext.max_attempts",
							gettext_noop("Answers the outbox worker cannot use (malformed, or whose recording fails) before an outbox request is dead."),
							gettext_noop("Network errors, timeouts, 5xx, 409 and 429 do not count: they are retried with the same idempotency key until payment_ext.idempotency_window closes."),
							&pe_max_attempts,
							8,
							1,
							100,
							PGC_SIGHUP,
							0,
							NULL,
							NULL,
							NULL);

	DefineCustomIntVariable("payment_ext.max_requests_per_second",
							gettext_noop("Client-side rate limit of the outbox worker, in requests per second."),
							gettext_noop("0 picks it from the API key: 20 for sk_test_ keys (Stripe allows 25 in test mode), 80 for live keys (Stripe allows 100)."),
							&pe_max_requests_per_second,
							0,
							0,
							100000,
							PGC_SIGHUP,
							0,
							NULL,
							NULL,
							NULL);

	DefineCustomIntVariable("payment_ext.request_timeout_ms",
							gettext_noop("Time limit of one Stripe request, connection included."),
							NULL,
							&pe_request_timeout_ms,
							30000,
							100,
							600000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL,
							NULL,
							NULL);

	DefineCustomIntVariable("payment_ext.connect_timeout_ms",
							gettext_noop("Time limit of connecting to Stripe."),
							NULL,
							&pe_connect_timeout_ms,
							5000,
							100,
							60000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL,
							NULL,
							NULL);

	DefineCustomIntVariable("payment_ext.retry_base_ms",
							gettext_noop("Backoff of the first retry of an outbox request; it doubles with each attempt."),
							gettext_noop("The delay is drawn uniformly below min(retry_max_ms, retry_base_ms * 2^(attempts-1)) (full jitter); Retry-After is a floor."),
							&pe_retry_base_ms,
							500,
							1,
							3600000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL,
							NULL,
							NULL);

	DefineCustomIntVariable("payment_ext.retry_max_ms",
							gettext_noop("Longest backoff between two attempts of an outbox request."),
							NULL,
							&pe_retry_max_ms,
							60000,
							1,
							86400000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL,
							NULL,
							NULL);

	DefineCustomStringVariable("payment_ext.worker_role",
							   gettext_noop("Role whose privileges the outbox worker's SQL runs with."),
							   gettext_noop("The worker connects as the bootstrap superuser and switches to this role for every transaction."),
							   &pe_worker_role,
							   "payment_worker",
							   PGC_SIGHUP,
							   0,
							   NULL,
							   NULL,
							   NULL);

	/*
	 * Operations (operations.c).  Superuser-only to set; restoring is also
	 * honoured only in a superuser's session.
	 */
	DefineCustomBoolVariable("payment_ext.restoring",
							 gettext_noop("Load rows into the extension's tables exactly as given (pg_restore)."),
							 gettext_noop("While on, in a superuser's session, INSERTs into the payment tables skip the rules, the audit and the hash-chain triggers; set it only for pg_restore."),
							 &pe_restoring,
							 false,
							 PGC_SUSET,
							 0,
							 NULL,
							 NULL,
							 NULL);

	DefineCustomBoolVariable("payment_ext.allow_drop",
							 gettext_noop("Allow DROP EXTENSION payment_ext while its tables hold payments."),
							 NULL,
							 &pe_allow_drop,
							 false,
							 PGC_SUSET,
							 0,
							 NULL,
							 NULL,
							 NULL);

	DefineCustomBoolVariable("payment_ext.adopt_existing_roles",
							 gettext_noop("Let CREATE EXTENSION payment_ext grant rights to existing roles named payment_app, payment_admin, payment_reporting or payment_worker that it did not create."),
							 NULL,
							 &pe_adopt_existing_roles,
							 false,
							 PGC_SUSET,
							 0,
							 NULL,
							 NULL,
							 NULL);

	MarkGUCPrefixReserved("payment_ext");

	RegisterXactCallback(pe_xact_callback, NULL);

	/* shared memory and the worker: only under shared_preload_libraries */
	pe_outbox_init();
}
