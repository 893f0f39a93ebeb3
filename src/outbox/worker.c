/*-------------------------------------------------------------------------
 *
 * worker.c
 *		The outbox background worker: drains payment.outbox to Stripe with
 *		libcurl's multi interface; its shared-memory status, the wake-up of
 *		the worker at commit, payment.worker_state().
 *
 * The worker loop has three phases, never overlapping a transaction with a
 * request in flight:
 *	outbox_claim_batch		short transaction: due rows FOR UPDATE SKIP
 *							LOCKED -> 'sending', attempts + 1; builds each
 *							request (outbox/request.c: sealed values opened
 *							in this process's memory only)
 *	outbox_send_batch		no transaction: requests into curl; the loop
 *							waits on the latch and every curl socket
 *	outbox_record_outcomes	short transaction, one internal subtransaction
 *							per outcome (outbox/record.c)
 * and, every quarter of pending_ttl, a turn of the settler (outbox/settle.c).
 *
 * Invariants:
 *	- Every transaction runs as payment_ext.worker_role
 *	  (SetUserIdAndSecContext), never as the superuser it connects as.
 *	- A row is 'sending' only while this process holds its request (in
 *	  curl or in the done list).  After an error the worker drops every
 *	  request it holds and sweeps 'sending' rows back to 'pending' (same
 *	  idempotency key), as it does at start after a crash.
 *	- Memory: loop_cxt is reset at each turn of the loop; each claimed row
 *	  has its own context under inflight_cxt, deleted (after wiping the
 *	  request) once its outcome is recorded; both are reset after an error.
 *	- Shared status (PeWorkerShared) is protected by its spinlock, held
 *	  only to copy a few fields.
 *
 * IDENTIFICATION
 *		src/outbox/worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "audit/audit.h"
#include "base/guc.h"
#include "base/pg_compat.h"
#include "base/spi.h"
#include "base/text.h"
#include "base/trigger.h"
#include "outbox/http.h"
#include "outbox/outbox.h"
#include "outbox/outbox_int.h"
#include "stripe/stripe.h"
#include "vault/vault.h"

/* ---------------------------------------------------------------------------
 * Constants
 * ---------------------------------------------------------------------------
 */
/* Look for due rows at least this often, wake-ups aside */
#define OUTBOX_IDLE_POLL_MS		5000
/* How often a worker that cannot work yet (no extension, role, key) looks again */
#define OUTBOX_NOT_READY_MS		10000
/* Pause after an error before the loop goes on */
#define OUTBOX_ERROR_PAUSE_MS	1000
/* Default rate limits by the key's mode (Stripe: 25/s test, 100/s live) */
#define OUTBOX_RATE_TEST		20
#define OUTBOX_RATE_LIVE		80
/*
 * The circuit breaker (issue 20): this many transport failures or 5xx
 * answers in a row, with no other answer between them, and the worker stops
 * sending the queue; it then probes with one request at a time, the interval
 * doubling from retry_base_ms to retry_max_ms, until one gets an answer.
 */
#define OUTBOX_BREAKER_FAILURES	5

/* ---------------------------------------------------------------------------
 * Shared memory
 * ---------------------------------------------------------------------------
 */
typedef struct PeWorkerShared
{
	slock_t		mutex;
	pid_t		pid;			/* 0 when not running */
	Latch	   *latch;			/* the worker's procLatch, NULL when not running */
	Oid			dboid;			/* the database it drains, InvalidOid when not running */
	TimestampTz started_at;
	TimestampTz last_wake;
	TimestampTz last_success_at;
	int			in_flight;
	uint64		requests_sent;
	uint64		successes;
	uint64		failures;
	uint64		retries;
	uint64		dead;
	char		state[48];
	char		last_error[256];
	/* the circuit breaker (issue 20) */
	TimestampTz unreachable_since;	/* 0 while Stripe is reachable */
	uint64		probes;
	char		unreachable_error[256];
} PeWorkerShared;

static PeWorkerShared *worker_shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Set by the outbox's statement trigger; read at commit */
static bool outbox_wake_pending = false;

pg_noreturn PGDLLEXPORT void pe_outbox_worker_main(Datum main_arg);

/* ---------------------------------------------------------------------------
 * Worker-local state
 * ---------------------------------------------------------------------------
 */
static PeHttp *http = NULL;
static MemoryContext loop_cxt = NULL;
static MemoryContext inflight_cxt = NULL;
static dlist_head done_list = DLIST_STATIC_INIT(done_list);
static dlist_head all_items = DLIST_STATIC_INIT(all_items);
static char *api_key = NULL;	/* TopMemoryContext; wiped when replaced */
static int	key_rate = OUTBOX_RATE_TEST;
static Oid	worker_role_oid = InvalidOid;
static double tokens = 1.0;
static TimestampTz tokens_at = 0;
static int	last_problem = 0;	/* the not-ready reason last warned about */
static char connected_db[NAMEDATALEN];	/* the database connected to */
static Oid	saved_userid;
static int	saved_sec_context;

/*
 * The circuit breaker (issue 20); static, so it survives error recovery.
 * Open: no row is claimed but one probe at a time, at next_probe_at.
 */
static int	breaker_failures = 0;	/* transport failures and 5xx in a row */
static bool breaker_open = false;
static TimestampTz breaker_since = 0;
static TimestampTz next_probe_at = 0;
static int64 last_probe_id = 0;	/* probes take the due rows in turn */
static long probe_interval_ms = 0;
static uint64 breaker_probes = 0;	/* probes sent while open */


/* ---------------------------------------------------------------------------
 * SPI plans
 * ---------------------------------------------------------------------------
 */
/*
 * An outbox row that may still be sent: not a create request that may first
 * have reached Stripe (key_sent_at) more than payment_ext.idempotency_window
 * (parameter w, seconds; default 23 hours) ago.  Stripe keeps idempotency
 * keys for at least 24 hours and may execute a reused key again after that,
 * so such a row is never claimed; the settler marks it dead and looks its
 * payment or refund up instead (settle_stale_plan).  Attempts that provably
 * never reached Stripe leave key_sent_at NULL (issue 20).
 */
#define OUTBOX_SENDABLE_SQL(w) \
	"(key_sent_at IS NULL OR key_sent_at >= pg_catalog.now() - " w " * interval '1 second'" \
	" OR kind NOT IN ('payment_intent.create', 'refund.create'))"

/*
 * ... and still wanted (issue 17, items 1 and 2; outbox.h): a create only
 * for a Pending payment whose newest create it is (or a withdrawn create's
 * probe), a refund.create only for a Processing refund.  Rows that are not
 * are withdrawn (pe_outbox_withdraw) in the same claiming transaction.
 */
#define OUTBOX_WANTED_SQL \
	" AND (kind <> 'payment_intent.create' OR request ? 'metadata[withdrawn]'" \
	"      OR (EXISTS (SELECT 1 FROM @S@.\"Payments\" p WHERE p.\"Id\" = w.payment_id AND p.\"Status\" = 0)" \
	"          AND NOT EXISTS (SELECT 1 FROM payment.outbox n WHERE n.payment_id = w.payment_id" \
	"                           AND n.kind = 'payment_intent.create' AND n.id > w.id)))" \
	" AND (kind <> 'refund.create' OR EXISTS (SELECT 1 FROM @S@.\"PaymentRefunds\" r" \
	"      WHERE r.\"Id\" = w.refund_id AND r.\"RefundStatus\" = 0))"

static PePlan claim_plan = {
	"WITH due AS ("
	" SELECT id, key_sent_at IS NULL AS key_first FROM payment.outbox w"
	"  WHERE state = 'pending' AND next_attempt_at <= pg_catalog.clock_timestamp()"
	"  AND " OUTBOX_SENDABLE_SQL("$2") OUTBOX_WANTED_SQL
	"  ORDER BY id <= $3, id LIMIT $1 FOR UPDATE SKIP LOCKED)"
	" UPDATE payment.outbox o SET state = 'sending', attempts = o.attempts + 1,"
	"  claimed_at = pg_catalog.now(), first_attempt_at = COALESCE(o.first_attempt_at, pg_catalog.now()),"
	"  key_sent_at = COALESCE(o.key_sent_at, pg_catalog.now()),"
	"  updated_at = pg_catalog.now()"
	" FROM due WHERE o.id = due.id"
	" RETURNING o.id, o.kind, o.payment_id, o.refund_id, o.request, o.idempotency_key, o.attempts,"
	"  o.unusable_answers, due.key_first",
	3, {INT4OID, INT4OID, INT8OID}, NULL, 0
};
static PePlan next_due_plan = {
	"SELECT pg_catalog.min(next_attempt_at) FROM payment.outbox WHERE state = 'pending'"
	" AND " OUTBOX_SENDABLE_SQL("$1"),
	1, {INT4OID}, NULL, 0
};
/*
 * A probe that failed waits at least two probe intervals, so that the next
 * probe takes another due row: a row Stripe keeps answering 5xx (a saved
 * 500 replayed) must not be the only probe while the others wait.
 */
static PePlan probe_defer_plan = {
	"UPDATE payment.outbox SET next_attempt_at = GREATEST(next_attempt_at,"
	"  pg_catalog.clock_timestamp() + $2 * interval '1 millisecond')"
	" WHERE id = $1 AND state = 'pending'",
	2, {INT8OID, FLOAT8OID}, NULL, 0
};
/*
 * When a probe gets an answer after an outage: the rows that failed on
 * their way (no answer, 5xx) are due at once, so that the backlog drains in
 * the order of creation rather than by each row's backoff.
 */
static PePlan breaker_release_plan = {
	"UPDATE payment.outbox SET next_attempt_at = pg_catalog.clock_timestamp()"
	" WHERE state = 'pending' AND attempts > 0"
	"  AND next_attempt_at > pg_catalog.clock_timestamp()"
	"  AND (last_http_status IS NULL OR last_http_status >= 500)",
	0, {InvalidOid}, NULL, 0
};
static PePlan sweep_plan = {
	"UPDATE payment.outbox SET state = 'pending', updated_at = pg_catalog.now()"
	" WHERE state = 'sending'",
	0, {InvalidOid}, NULL, 0
};
/* ===========================================================================
 * Shared memory, registration, wake-up at commit
 * ===========================================================================
 */

static void
outbox_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(PeWorkerShared)));
}

static void
outbox_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	worker_shared = ShmemInitStruct("payment_ext outbox worker",
									sizeof(PeWorkerShared), &found);
	if (!found)
	{
		memset(worker_shared, 0, sizeof(PeWorkerShared));
		SpinLockInit(&worker_shared->mutex);
		strlcpy(worker_shared->state, "not started", sizeof(worker_shared->state));
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * outbox_at_xact_end
 *		At the end of a transaction: if it committed and added outbox rows,
 *		set the worker's latch.  A no-op without the shared status (library
 *		not preloaded), when the worker is not running, or when it drains
 *		another database.
 */
static void
outbox_at_xact_end(bool committed)
{
	if (committed && outbox_wake_pending && worker_shared != NULL)
	{
		Latch	   *latch;

		/* only the worker of this database has anything to do with the rows */
		SpinLockAcquire(&worker_shared->mutex);
		latch = worker_shared->dboid == MyDatabaseId ? worker_shared->latch : NULL;
		SpinLockRelease(&worker_shared->mutex);
		if (latch != NULL)
			SetLatch(latch);
	}
	outbox_wake_pending = false;
}

/* Transaction end: a committed transaction that added outbox rows wakes the worker. */
static void
outbox_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			outbox_at_xact_end(true);
			break;
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			outbox_at_xact_end(false);
			break;
		default:
			break;
	}
}

/*
 * pe_outbox_init
 *		Called by _PG_init: register the wake-up at commit (a no-op without
 *		the shared status); under shared_preload_libraries, request the
 *		shared status and register the worker.  Without it the outbox
 *		simply fills.  Never raises.
 */
void
pe_outbox_init(void)
{
	BackgroundWorker worker;

	RegisterXactCallback(outbox_xact_callback, NULL);
	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = outbox_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = outbox_shmem_startup;

	/*
	 * Under pg_upgrade (postmaster -b, both the old and the new cluster) no
	 * worker: it would send requests from a cluster being copied, and its
	 * connection to its database makes pg_upgrade's DROP DATABASE of
	 * "postgres" fail ("being accessed by other users").
	 */
	if (IsBinaryUpgrade)
		return;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	strlcpy(worker.bgw_library_name, "payment_ext", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "pe_outbox_worker_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "payment_ext outbox worker", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "payment_ext outbox worker", BGW_MAXLEN);
	worker.bgw_main_arg = (Datum) 0;
	worker.bgw_notify_pid = 0;
	RegisterBackgroundWorker(&worker);
}

/* SQL function: payment.outbox_wake_trigger() returns trigger */
PG_FUNCTION_INFO_V1(pe_outbox_wake_trigger);
Datum
pe_outbox_wake_trigger(PG_FUNCTION_ARGS)
{
	static const PeTriggerUse use =
		PE_TRIGGER_USE("payment.outbox_wake_trigger", false, 0, PE_TRIG_ANY,
					   "AFTER ... FOR EACH STATEMENT");

	pe_trigger_check(fcinfo, &use);
	outbox_wake_pending = true;
	return PointerGetDatum(NULL);
}

/*
 * The phase a state belongs to: "idle" and "sending" alternate with every
 * batch and are both "running"; every other state is its own phase.
 */
static const char *
status_phase(const char *state)
{
	if (strcmp(state, "idle") == 0 || strcmp(state, "sending") == 0)
		return "running";
	return state;
}

/*
 * Set the worker's state name (shared status and pg_stat_activity).  A
 * change of phase (starting, waiting: ..., running, error recovery) is one
 * LOG line; idle <-> sending only DEBUG2.
 */
static void
status_set(const char *state)
{
	static char last[48] = "";

	if (strcmp(last, state) == 0)
		return;
	if (strcmp(status_phase(last), status_phase(state)) != 0)
		ereport(LOG,
				(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
				 errmsg("payment_ext outbox worker: %s", status_phase(state))));
	else
		ereport(DEBUG2,
				(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
				 errmsg_internal("payment_ext outbox worker: %s", state)));
	pe_strlcpy_mb(last, state, sizeof(last));
	if (worker_shared != NULL)
	{
		SpinLockAcquire(&worker_shared->mutex);
		pe_strlcpy_mb(worker_shared->state, state, sizeof(worker_shared->state));
		SpinLockRelease(&worker_shared->mutex);
	}
	pgstat_report_activity(STATE_IDLE, state);
}

/* Store a secret-free error text in the shared status. */
static void
status_error(const char *text)
{
	if (worker_shared == NULL)
		return;
	SpinLockAcquire(&worker_shared->mutex);
	pe_strlcpy_mb(worker_shared->last_error, text, sizeof(worker_shared->last_error));
	SpinLockRelease(&worker_shared->mutex);
}

/* SQL function: payment.worker_state() returns record */
PG_FUNCTION_INFO_V1(pe_worker_state);
Datum
pe_worker_state(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[16];
	bool		nulls[16];
	PeWorkerShared s;
	bool		running;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	memset(nulls, 0, sizeof(nulls));
	memset(&s, 0, sizeof(s));
	if (worker_shared != NULL)
	{
		SpinLockAcquire(&worker_shared->mutex);
		memcpy(&s, worker_shared, sizeof(s));
		SpinLockRelease(&worker_shared->mutex);
	}
	running = (worker_shared != NULL && s.pid != 0);

	values[0] = BoolGetDatum(running);
	values[1] = Int32GetDatum((int32) s.pid);
	nulls[1] = !running;
	values[2] = CStringGetTextDatum(worker_shared == NULL ?
									"not running: payment_ext is not in shared_preload_libraries" :
									running ? s.state :
									RecoveryInProgress() ? "not running: this server is a standby" :
									"not running");
	values[3] = TimestampTzGetDatum(s.started_at);
	nulls[3] = (s.started_at == 0);
	values[4] = TimestampTzGetDatum(s.last_wake);
	nulls[4] = (s.last_wake == 0);
	values[5] = Int32GetDatum(s.in_flight);
	values[6] = Int64GetDatum((int64) s.requests_sent);
	values[7] = Int64GetDatum((int64) s.successes);
	values[8] = Int64GetDatum((int64) s.failures);
	values[9] = Int64GetDatum((int64) s.retries);
	values[10] = Int64GetDatum((int64) s.dead);
	values[11] = TimestampTzGetDatum(s.last_success_at);
	nulls[11] = (s.last_success_at == 0);
	values[12] = CStringGetTextDatum(s.last_error);
	nulls[12] = (s.last_error[0] == '\0');
	/* 1.2 (issue 20): the circuit breaker; 1.0 and 1.1 declare 13 columns */
	values[13] = TimestampTzGetDatum(s.unreachable_since);
	nulls[13] = (!running || s.unreachable_since == 0);
	values[14] = CStringGetTextDatum(s.unreachable_error);
	nulls[14] = (!running || s.unreachable_since == 0);
	values[15] = Int64GetDatum((int64) s.probes);
	if (tupdesc->natts != 13 && tupdesc->natts != 16)
		elog(ERROR, "return type must have 13 or 16 columns");
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/* ===========================================================================
 * The worker: transactions, readiness, API key
 * ===========================================================================
 */

/* Start a transaction as the worker role, with SPI and a snapshot. */
static void
xact_begin(const char *what)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	GetUserIdAndSecContext(&saved_userid, &saved_sec_context);
	SetUserIdAndSecContext(worker_role_oid, saved_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, what);
}

/* Commit the transaction of xact_begin. */
static void
xact_end(void)
{
	SPI_finish();
	PopActiveSnapshot();
	SetUserIdAndSecContext(saved_userid, saved_sec_context);
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* Log a WARNING about why the worker cannot work, once per reason. */
static void
warn_not_ready(int problem, const char *state, int sqlstate, const char *msg, const char *hint)
{
	status_set(state);
	if (last_problem == problem)
		return;
	last_problem = problem;
	ereport(WARNING,
			(errcode(sqlstate),
			 errmsg("payment_ext outbox worker: %s", msg),
			 hint ? errhint("%s", hint) : 0));
}

/*
 * (Re)read the Stripe API key from payment_ext.stripe_api_key_file.  A
 * missing or unsafe file leaves no key: the worker waits (and warns once)
 * rather than crash-looping.  Runs outside any transaction.
 */
static void
outbox_load_api_key(void)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	char	   *key = NULL;

	if (api_key != NULL)
	{
		explicit_bzero(api_key, strlen(api_key));
		pfree(api_key);
		api_key = NULL;
	}

	StartTransactionCommand();
	/*
	 * PG_TRY: an unreadable key file is a state to wait in, not an error
	 * that restarts the worker; the file handle is released by the abort.
	 */
	PG_TRY();
	{
		MemoryContextSwitchTo(TopMemoryContext);
		key = pe_read_secret_file(pe_stripe_api_key_file, "payment_ext.stripe_api_key_file");
		MemoryContextSwitchTo(oldcxt);
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		warn_not_ready(1, "waiting: no Stripe API key", edata->sqlerrcode,
					   psprintf("cannot read the Stripe API key: %s", edata->message),
					   "Set payment_ext.stripe_api_key_file and reload.");
		FreeErrorData(edata);
		key = NULL;
	}
	PG_END_TRY();

	api_key = key;
	if (key != NULL)
		key_rate = (strncmp(key, "sk_live_", 8) == 0 || strncmp(key, "rk_live_", 8) == 0) ?
			OUTBOX_RATE_LIVE : OUTBOX_RATE_TEST;
}

/*
 * Can the worker work: an API key, the extension in this database, the
 * worker role?  Warns once per missing piece.
 */
static bool
outbox_ready(void)
{
	Oid			ext;
	Oid			role;

	if (api_key == NULL)
		outbox_load_api_key();
	if (api_key == NULL)
		return false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	ext = get_extension_oid("payment_ext", true);
	role = get_role_oid(pe_worker_role, true);
	CommitTransactionCommand();

	if (!OidIsValid(ext))
	{
		warn_not_ready(2, "waiting: extension not installed",
					   ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
					   psprintf("extension \"payment_ext\" is not installed in database \"%s\"", pe_database),
					   "Run CREATE EXTENSION payment_ext there, or set payment_ext.database; the worker looks again every 10 s.");
		return false;
	}
	if (!OidIsValid(role))
	{
		warn_not_ready(3, "waiting: worker role missing",
					   ERRCODE_UNDEFINED_OBJECT,
					   psprintf("role \"%s\" (payment_ext.worker_role) does not exist", pe_worker_role),
					   NULL);
		return false;
	}
	if (last_problem != 0)
		ereport(LOG,
				(errmsg("payment_ext outbox worker: ready to drain payment.outbox in database \"%s\"",
						pe_database)));
	last_problem = 0;
	worker_role_oid = role;
	return true;
}

/* ===========================================================================
 * Phase 1: claim
 * ===========================================================================
 */

/* qsort comparator: claimed rows in the order of creation (id). */
static int
claimed_row_cmp(const void *a, const void *b)
{
	int64		x = ((const ClaimedRow *) a)->id;
	int64		y = ((const ClaimedRow *) b)->id;

	return (x > y) - (x < y);
}

/*
 * Can a request that failed to build with sqlerrcode never be built?  A
 * sealed value that no key opens (the keyring loaded, the value or its key
 * is wrong), a request Stripe would refuse (not an object, a nested value,
 * an unknown kind), a saved method or PaymentIntent that does not exist.
 * Anything else (the keyring file briefly unreadable, a cancel, out of
 * memory) may pass next time (issue 17 item 5).
 */
static bool
outbox_build_error_is_final(int sqlerrcode)
{
	return sqlerrcode == ERRCODE_PE_SEALED_INVALID ||
		sqlerrcode == ERRCODE_PE_KEY_NOT_FOUND ||
		sqlerrcode == ERRCODE_INVALID_PARAMETER_VALUE ||
		sqlerrcode == ERRCODE_NO_DATA_FOUND;
}

/* Full-jitter backoff after attempt n, as for a transient answer. */
static double
outbox_backoff_ms(int attempts)
{
	double		cap = Min((double) pe_retry_max_ms,
						  (double) pe_retry_base_ms * pow(2.0, Min(attempts - 1, 30)));

	return pg_prng_double(&pg_global_prng_state) * cap;
}

/* Wipe an item's request and free it with everything it holds. */
static void
outbox_item_free(OutboxItem *item)
{
	pe_http_release(&item->http);
	if (item->http.body != NULL)
		explicit_bzero(item->http.body, item->body_cap);
	if (item->http.url != NULL)
		explicit_bzero(item->http.url, strlen(item->http.url));
	dlist_delete(&item->all_node);
	MemoryContextDelete(item->cxt);
}

/*
 * outbox_claim_batch
 *		One short transaction: claim up to limit due rows and build their
 *		requests into *items (a List of OutboxItem, in loop_cxt).  A row
 *		whose request cannot be built is dead at once.  Sets *next_due to
 *		the earliest next_attempt_at still pending (0 if none).  Rows are
 *		taken in the order of creation, starting after row after_id (0:
 *		from the first) and wrapping around: the circuit breaker's probes
 *		pass the row probed last, so that rows Stripe keeps failing do not
 *		take every probe while the others wait.
 */
static int
outbox_claim_batch(int limit, int64 after_id, List **items, TimestampTz *next_due)
{
	ClaimedRow *rows;
	uint64		n;
	uint64		i;
	Datum		args[3];
	int			rc;
	bool		isnull;
	volatile bool warned = false;
	MemoryContext spicxt;
	ResourceOwner oldowner;

	*items = NIL;
	xact_begin("claiming");
	spicxt = CurrentMemoryContext;
	pe_outbox_withdraw((Datum) 0, true);
	args[0] = Int32GetDatum(limit);
	args[1] = Int32GetDatum(pe_idempotency_window);
	args[2] = Int64GetDatum(after_id);
	rc = SPI_execute_plan(pe_plan(&claim_plan), args, NULL, false, 0);
	if (rc != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "claiming outbox rows failed: %s", SPI_result_code_string(rc));
	n = SPI_processed;
	rows = MemoryContextAllocZero(loop_cxt, sizeof(ClaimedRow) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		ClaimedRow *r = &rows[i];
		MemoryContext old = MemoryContextSwitchTo(loop_cxt);
		Datum		d;

		r->id = DatumGetInt64(pe_spi_getdatum(i, 1, &isnull));
		r->kind = TextDatumGetCString(pe_spi_getdatum(i, 2, &isnull));
		memcpy(&r->payment_id, DatumGetUUIDP(pe_spi_getdatum(i, 3, &isnull)), UUID_LEN);
		d = pe_spi_getdatum(i, 4, &isnull);
		r->has_refund = !isnull;
		if (!isnull)
			memcpy(&r->refund_id, DatumGetUUIDP(d), UUID_LEN);
		r->request = DatumGetJsonbPCopy(pe_spi_getdatum(i, 5, &isnull));
		r->idempotency_key = TextDatumGetCString(pe_spi_getdatum(i, 6, &isnull));
		r->attempts = DatumGetInt32(pe_spi_getdatum(i, 7, &isnull));
		r->unusable_answers = DatumGetInt32(pe_spi_getdatum(i, 8, &isnull));
		r->key_first = DatumGetBool(pe_spi_getdatum(i, 9, &isnull));
		MemoryContextSwitchTo(old);
	}
	/* send in the order of creation: RETURNING promises no order */
	if (n > 1)
		qsort(rows, n, sizeof(ClaimedRow), claimed_row_cmp);

	for (i = 0; i < n; i++)
	{
		ClaimedRow *r = &rows[i];
		OutboxItem *item;
		MemoryContext itemcxt = AllocSetContextCreate(inflight_cxt, "outbox item",
													  ALLOCSET_SMALL_SIZES);

		item = MemoryContextAllocZero(itemcxt, sizeof(OutboxItem));
		item->cxt = itemcxt;
		dlist_push_tail(&all_items, &item->all_node);
		item->id = r->id;
		item->payment_id = r->payment_id;
		item->refund_id = r->refund_id;
		item->has_refund = r->has_refund;
		item->attempts = r->attempts;
		item->unusable_answers = r->unusable_answers;
		item->key_first = r->key_first;

		/*
		 * PG_TRY in an internal subtransaction: one row whose request cannot
		 * be built (a sealed value that does not open, a missing saved
		 * method) goes dead without failing the others.
		 */
		oldowner = CurrentResourceOwner;
		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(spicxt);
		PG_TRY();
		{
			pe_outbox_build(r, item, api_key);
			ReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(spicxt);
			CurrentResourceOwner = oldowner;
			{
				MemoryContext old = MemoryContextSwitchTo(loop_cxt);

				*items = lappend(*items, item);
				MemoryContextSwitchTo(old);
			}
		}
		PG_CATCH();
		{
			ErrorData  *edata;
			char	   *why;

			MemoryContextSwitchTo(spicxt);
			edata = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(spicxt);
			CurrentResourceOwner = oldowner;

			outbox_item_free(item);

			/*
			 * Nothing was sent.  Only an error that can never pass makes
			 * the row dead; any other sends it back to pending with a
			 * backoff, the key's window not started (issue 17 item 5).
			 */
			if (r->key_first)
				pe_outbox_unsent(r->id);
			if (outbox_build_error_is_final(edata->sqlerrcode))
			{
				why = psprintf("the request could not be built: %s",
							   pe_scrub(edata->message, 400));
				pe_outbox_mark(r->id, "dead", 0, 0, why);
				ereport(WARNING,
						(errcode(edata->sqlerrcode),
						 errmsg("payment_ext outbox worker: outbox row " INT64_FORMAT " is dead: %s",
								r->id, why)));
			}
			else
			{
				why = psprintf("the request could not be built, tried again later: %s",
							   pe_scrub(edata->message, 400));
				pe_outbox_mark(r->id, "pending", outbox_backoff_ms(r->attempts), 0, why);
				if (!warned)
					ereport(WARNING,
							(errcode(edata->sqlerrcode),
							 errmsg("payment_ext outbox worker: outbox row " INT64_FORMAT ": %s",
									r->id, why)));
				warned = true;
			}
			status_error(why);
			if (worker_shared != NULL)
			{
				SpinLockAcquire(&worker_shared->mutex);
				if (outbox_build_error_is_final(edata->sqlerrcode))
					worker_shared->dead++;
				else
					worker_shared->retries++;
				SpinLockRelease(&worker_shared->mutex);
			}
			FreeErrorData(edata);
		}
		PG_END_TRY();
	}

	*next_due = 0;
	if (n < (uint64) limit)
	{
		rc = SPI_execute_plan(pe_plan(&next_due_plan), &args[1], NULL, true, 1);
		if (rc == SPI_OK_SELECT && SPI_processed == 1)
		{
			Datum		d = pe_spi_getdatum(0, 1, &isnull);

			if (!isnull)
				*next_due = DatumGetTimestampTz(d);
		}
	}
	xact_end();
	return (int) n;
}

/* At start and after an error: rows left 'sending' are due again, same key. */
static void
outbox_sweep(void)
{
	int			rc;

	xact_begin("sweeping");
	rc = SPI_execute_plan(pe_plan(&sweep_plan), NULL, NULL, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "sweeping outbox rows failed: %s", SPI_result_code_string(rc));
	if (SPI_processed > 0)
		ereport(LOG,
				(errmsg("payment_ext outbox worker: " UINT64_FORMAT " outbox rows left in flight are due again with their idempotency keys",
						SPI_processed)));
	xact_end();
}

/* ===========================================================================
 * Phase 2: send
 * ===========================================================================
 */

/* Put every built request in flight (no transaction open). */
static void
outbox_send_batch(List *items)
{
	ListCell   *lc;
	int			sent = 0;

	foreach(lc, items)
	{
		OutboxItem *item = (OutboxItem *) lfirst(lc);

		item->http.timeout_ms = pe_request_timeout_ms;
		item->http.connect_timeout_ms = pe_connect_timeout_ms;
		item->http.owner = item;
		ereport(DEBUG1,
				(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
				 errmsg_internal("payment_ext outbox worker: sending outbox row " INT64_FORMAT " (%s, attempt %d)",
								 item->id, pe_outbox_kind_name(item->kind), item->attempts)));
		if (pe_http_start(http, &item->http))
			sent++;
		else
		{
			/* recorded as a failed attempt (no answer) at the next turn */
			item->http.result = CURLE_FAILED_INIT;
			dlist_push_tail(&done_list, &item->node);
		}
	}
	if (worker_shared != NULL)
	{
		SpinLockAcquire(&worker_shared->mutex);
		worker_shared->requests_sent += sent;
		worker_shared->in_flight = pe_http_in_flight(http);
		SpinLockRelease(&worker_shared->mutex);
	}
}

/* Move finished requests from curl to the done list. */
static void
outbox_collect_done(void)
{
	PeHttpRequest *req;

	while ((req = pe_http_next_done(http)) != NULL)
	{
		OutboxItem *item = (OutboxItem *) req->owner;

		dlist_push_tail(&done_list, &item->node);
	}
}

/* ===========================================================================
 * Phase 3: record
 * ===========================================================================
 */

/* qsort comparator of OutboxItem pointers: payment id (as uuid sorts), then row id */
static int
outbox_item_cmp(const void *a, const void *b)
{
	const OutboxItem *x = *(OutboxItem *const *) a;
	const OutboxItem *y = *(OutboxItem *const *) b;
	int			c = memcmp(x->payment_id.data, y->payment_id.data, UUID_LEN);

	if (c != 0)
		return c;
	return x->id < y->id ? -1 : x->id > y->id ? 1 : 0;
}

/*
 * outbox_sort_done
 *		Put the done list in ascending payment id: the recording
 *		transaction keeps the lock of every payment it recorded until it
 *		commits, so it takes them in the order every writer of several
 *		payments takes them (README, "Lock order").
 */
static void
outbox_sort_done(void)
{
	OutboxItem **items;
	dlist_iter	it;
	int			n = 0;
	int			i;

	dlist_foreach(it, &done_list)
		n++;
	if (n < 2)
		return;
	items = palloc(sizeof(OutboxItem *) * n);
	i = 0;
	dlist_foreach(it, &done_list)
		items[i++] = dlist_container(OutboxItem, node, it.cur);
	qsort(items, n, sizeof(OutboxItem *), outbox_item_cmp);
	dlist_init(&done_list);
	for (i = 0; i < n; i++)
		dlist_push_tail(&done_list, &items[i]->node);
	pfree(items);
}

/*
 * breaker_observe
 *		The circuit breaker (issue 20) learns the outcome of item's request:
 *		an HTTP answer below 500 closes it (one LOG line) and resets the
 *		count; a transport failure or a 5xx counts, and the
 *		OUTBOX_BREAKER_FAILURES-th in a row opens it (one LOG line); a probe
 *		that fails doubles the probe interval up to retry_max_ms
 *		(Retry-After as a floor) and its row waits two intervals.  Returns
 *		true when it closed.  Caller: in the recording transaction, with SPI.
 */
static bool
breaker_observe(OutboxItem *item)
{
	PeHttpRequest *req = &item->http;
	bool		down = req->result != CURLE_OK || req->status == 0 || req->status >= 500;
	TimestampTz now = GetCurrentTimestamp();
	long		wait_ms;
	char	   *what;

	if (!down)
	{
		breaker_failures = 0;
		if (!breaker_open)
			return false;
		breaker_open = false;
		ereport(LOG,
				(errmsg("payment_ext outbox worker: Stripe answers again after %ld s unreachable and " UINT64_FORMAT " probes: sending the queue at full speed",
						(long) ((now - breaker_since) / USECS_PER_SEC), breaker_probes)));
		if (worker_shared != NULL)
		{
			SpinLockAcquire(&worker_shared->mutex);
			worker_shared->unreachable_since = 0;
			SpinLockRelease(&worker_shared->mutex);
		}
		return true;
	}

	what = req->result != CURLE_OK || req->status == 0 ?
		psprintf("no answer: %s", pe_http_error_text(req)) :
		psprintf("HTTP %ld", req->status);
	breaker_failures++;
	if (!breaker_open && breaker_failures >= OUTBOX_BREAKER_FAILURES)
	{
		breaker_open = true;
		breaker_since = now;
		breaker_probes = 0;
		probe_interval_ms = Max(Min(pe_retry_base_ms, pe_retry_max_ms), 1);
		ereport(LOG,
				(errmsg("payment_ext outbox worker: Stripe unreachable after %d transport failures or 5xx answers in a row (last: %s): the queue waits, probing with one request at most every %d ms",
						breaker_failures, what, pe_retry_max_ms)));
	}
	else if (breaker_open && item->probe)
	{
		Datum		args[2];

		probe_interval_ms = Min(probe_interval_ms * 2, (long) Max(pe_retry_max_ms, 1));
		args[0] = Int64GetDatum(item->id);
		args[1] = Float8GetDatum(2.0 * probe_interval_ms);
		if (SPI_execute_plan(pe_plan(&probe_defer_plan), args, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "deferring a failed probe failed");
	}
	else
		return false;
	wait_ms = probe_interval_ms;
	if (req->retry_after_s >= 0)
		wait_ms = Max(wait_ms, req->retry_after_s * 1000L);
	next_probe_at = now + wait_ms * (TimestampTz) 1000;
	if (worker_shared != NULL)
	{
		SpinLockAcquire(&worker_shared->mutex);
		worker_shared->unreachable_since = breaker_since;
		strlcpy(worker_shared->unreachable_error, what, sizeof(worker_shared->unreachable_error));
		SpinLockRelease(&worker_shared->mutex);
	}
	return false;
}

/*
 * outbox_record_outcomes
 *		One short transaction for every finished request: each outcome in
 *		an internal subtransaction of its own, in ascending payment id
 *		(each outcome locks its payment first: outbox/record.c).
 */
static bool
outbox_record_outcomes(void)
{
	OutboxTally tally;
	MemoryContext spicxt;
	ResourceOwner oldowner;
	volatile bool closed = false;

	memset(&tally, 0, sizeof(tally));
	outbox_sort_done();
	xact_begin("recording");
	spicxt = CurrentMemoryContext;
	while (!dlist_is_empty(&done_list))
	{
		OutboxItem *item = dlist_container(OutboxItem, node, dlist_pop_head_node(&done_list));

		/*
		 * PG_TRY in an internal subtransaction: an outcome that cannot be
		 * recorded (a trigger refusing it, say) is rolled back alone and the
		 * row is retried later with the same key; the others commit.
		 */
		oldowner = CurrentResourceOwner;
		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(spicxt);
		PG_TRY();
		{
			pe_outbox_record_one(item, &tally);
			ReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(spicxt);
			CurrentResourceOwner = oldowner;
		}
		PG_CATCH();
		{
			ErrorData  *edata;
			char	   *why;
			bool		dead;

			MemoryContextSwitchTo(spicxt);
			edata = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(spicxt);
			CurrentResourceOwner = oldowner;

			/* an answer that cannot be recorded counts against max_attempts */
			dead = item->unusable_answers + 1 >= pe_max_attempts;
			why = psprintf("%srecording the outcome failed: %s",
						   dead ? "gave up: " : "",
						   pe_scrub(edata->message, 400));
			pe_outbox_mark(item->id, dead ? "dead" : "pending",
						   dead ? 0 : (double) pe_retry_base_ms * item->attempts,
						   (int) item->http.status, why);
			pe_outbox_unusable(item->id);
			ereport(WARNING,
					(errcode(edata->sqlerrcode),
					 errmsg("payment_ext outbox worker: outbox row " INT64_FORMAT ": %s",
							item->id, why)));
			pe_strlcpy_mb(tally.last_error, why, sizeof(tally.last_error));
			if (dead)
				tally.dead++;
			else
				tally.retries++;
			FreeErrorData(edata);
		}
		PG_END_TRY();
		if (breaker_observe(item))
			closed = true;
		outbox_item_free(item);
	}
	if (closed)
	{
		int			rc = SPI_execute_plan(pe_plan(&breaker_release_plan), NULL, NULL, false, 0);

		if (rc != SPI_OK_UPDATE)
			elog(ERROR, "releasing the outbox after an outage failed: %s", SPI_result_code_string(rc));
	}
	xact_end();

	if (worker_shared != NULL)
	{
		SpinLockAcquire(&worker_shared->mutex);
		worker_shared->successes += tally.successes;
		worker_shared->failures += tally.failures;
		worker_shared->retries += tally.retries;
		worker_shared->dead += tally.dead;
		if (tally.successes > 0)
			worker_shared->last_success_at = GetCurrentTimestamp();
		if (tally.last_error[0] != '\0')
			pe_strlcpy_mb(worker_shared->last_error, tally.last_error, sizeof(worker_shared->last_error));
		worker_shared->in_flight = pe_http_in_flight(http);
		SpinLockRelease(&worker_shared->mutex);
	}
	return closed;
}

/* ===========================================================================
 * The worker's life
 * ===========================================================================
 */

/* Drop every request held: in curl and finished but not recorded. */
static void
outbox_abandon_all(void)
{
	dlist_init(&done_list);
	pe_http_destroy(http);		/* frees the curl handles, wipes headers */
	http = NULL;
	while (!dlist_is_empty(&all_items))
	{
		OutboxItem *item = dlist_container(OutboxItem, all_node,
										   dlist_pop_head_node(&all_items));

		pe_http_release(&item->http);
		if (item->http.body != NULL)
			explicit_bzero(item->http.body, item->body_cap);
		if (item->http.url != NULL)
			explicit_bzero(item->http.url, strlen(item->http.url));
	}
	MemoryContextReset(inflight_cxt);
}

/* Process exit: free curl handles, clear the shared status. */
static void
outbox_at_exit(int code, Datum arg)
{
	if (http != NULL)
	{
		pe_http_destroy(http);
		http = NULL;
	}
	if (api_key != NULL)
		explicit_bzero(api_key, strlen(api_key));
	if (worker_shared != NULL)
	{
		SpinLockAcquire(&worker_shared->mutex);
		worker_shared->pid = 0;
		worker_shared->latch = NULL;
		worker_shared->dboid = InvalidOid;
		worker_shared->in_flight = 0;
		strlcpy(worker_shared->state, "stopped", sizeof(worker_shared->state));
		SpinLockRelease(&worker_shared->mutex);
	}
}

/* The rate limit in force, requests per second. */
static double
outbox_rate(void)
{
	return pe_max_requests_per_second > 0 ? pe_max_requests_per_second : key_rate;
}

/* Refill the token bucket (capacity: a tenth of a second's worth, at least 1). */
static void
tokens_refill(TimestampTz now)
{
	double		rate = outbox_rate();
	double		cap = Max(1.0, rate / 10.0);

	if (tokens_at != 0 && now > tokens_at)
		tokens += rate * (double) (now - tokens_at) / 1000000.0;
	tokens = Min(tokens, cap);
	tokens_at = now;
}

/* Milliseconds from now until ts (0 if past). */
static long
ms_until(TimestampTz now, TimestampTz ts)
{
	if (ts <= now)
		return 0;
	return (long) ((ts - now + 999) / 1000);
}

/*
 * pe_outbox_worker_main
 *		Entry point of the outbox worker (registered by pe_outbox_init).
 */
void
pe_outbox_worker_main(Datum main_arg)
{
	sigjmp_buf	local_sigjmp_buf;

	/* static: they must survive the longjmp of error recovery */
	static bool ready = false;
	static bool sweep_needed = true;
	static bool poll_now = true;
	static TimestampTz next_due_at = 0;
	static TimestampTz next_settle_at = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(pe_database, NULL, 0);
	pgstat_report_appname("payment_ext outbox worker");
	strlcpy(connected_db, pe_database, sizeof(connected_db));

	/*
	 * The worker's commits are always synchronous: when a claim commits, the
	 * WAL of every row it claimed (and of the transactions that inserted
	 * them) is on disk before any request goes out, so a crash can never
	 * forget a payment that Stripe was asked to charge, whatever
	 * synchronous_commit the application uses.
	 */
	SetConfigOption("synchronous_commit", "on", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * Nothing the worker runs resolves through a search_path that someone
	 * else chose (ALTER DATABASE/ROLE ... SET search_path): only pg_catalog,
	 * then pg_temp, so an operator or function created in public can never
	 * take the place of a built-in one (the CVE-2018-1058 pattern).
	 */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);

	before_shmem_exit(outbox_at_exit, (Datum) 0);
	if (worker_shared != NULL)
	{
		SpinLockAcquire(&worker_shared->mutex);
		worker_shared->pid = MyProcPid;
		worker_shared->latch = MyLatch;
		worker_shared->dboid = MyDatabaseId;
		worker_shared->started_at = GetCurrentTimestamp();
		worker_shared->in_flight = 0;
		SpinLockRelease(&worker_shared->mutex);
	}
	status_set("starting");

	loop_cxt = AllocSetContextCreate(TopMemoryContext, "outbox worker loop",
									 ALLOCSET_DEFAULT_SIZES);
	inflight_cxt = AllocSetContextCreate(TopMemoryContext, "outbox worker in flight",
										 ALLOCSET_DEFAULT_SIZES);

	/*
	 * Our own error recovery, like the autovacuum launcher's: an ERROR
	 * outside a per-row subtransaction (a claim or commit that fails, the
	 * extension dropped under us) aborts the transaction, drops every
	 * request in flight, and the loop goes on after a pause, sweeping the
	 * rows it held back to 'pending'.  A crash-restart loop would be worse.
	 */
	if (sigsetjmp(local_sigjmp_buf, 1) != 0)
	{
		/*
		 * Not PG_TRY: reset the error context stack by hand, as the
		 * autovacuum launcher does.  An ERROR raised inside SPI leaves it
		 * pointing at the stack frame of the query that failed, and the next
		 * ereport here (the LOG of the phase change, a WARNING of the abort)
		 * would call that dead callback and crash the worker, which restarts
		 * the whole server.
		 */
		error_context_stack = NULL;
		HOLD_INTERRUPTS();
		EmitErrorReport();
		AbortCurrentTransaction();
		MemoryContextSwitchTo(TopMemoryContext);
		{
			ErrorData  *edata = CopyErrorData();

			status_error(pe_scrub(edata->message, 200));
			FreeErrorData(edata);
		}
		FlushErrorState();
		if (http != NULL)
			outbox_abandon_all();
		MemoryContextReset(loop_cxt);
		sweep_needed = true;
		ready = false;
		poll_now = true;
		status_set("error recovery");
		RESUME_INTERRUPTS();
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 OUTBOX_ERROR_PAUSE_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	PG_exception_stack = &local_sigjmp_buf;

	if (http == NULL)
		http = pe_http_create();

	for (;;)
	{
		TimestampTz now;
		int			slots;
		long		timeout;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			if (strcmp(pe_database, connected_db) != 0)
			{
				ereport(LOG,
						(errmsg("payment_ext outbox worker: payment_ext.database changed to \"%s\", restarting",
								pe_database)));
				proc_exit(1);	/* restarted after bgw_restart_time */
			}
			outbox_load_api_key();
			ready = false;
			next_settle_at = 0;	/* pending_ttl may have changed */
		}
		MemoryContextReset(loop_cxt);
		MemoryContextSwitchTo(loop_cxt);

		if (RecoveryInProgress())
		{
			status_set("waiting: in recovery");
			(void) pe_http_wait(http, 1000, PG_WAIT_EXTENSION);
			continue;
		}
		if (!ready)
		{
			ready = outbox_ready();
			if (!ready)
			{
				(void) pe_http_wait(http, OUTBOX_NOT_READY_MS, PG_WAIT_EXTENSION);
				continue;
			}
		}
		if (sweep_needed)
		{
			outbox_sweep();
			sweep_needed = false;
			poll_now = true;
		}

		/* the settler, every quarter of pending_ttl (1 s to 60 s) */
		now = GetCurrentTimestamp();
		if (now >= next_settle_at)
		{
			int			queued;
			long		every_ms = Min(Max((long) pe_pending_ttl * 250L, 1000L), 60000L);

			xact_begin("settling");
			queued = pe_outbox_settle();
			xact_end();
			next_settle_at = now + every_ms * (TimestampTz) 1000;
			if (queued > 0)
				poll_now = true;
		}

		/* phase 3 for what finished */
		outbox_collect_done();
		if (!dlist_is_empty(&done_list) && outbox_record_outcomes())
			poll_now = true;	/* the breaker closed: drain at once */

		/* phase 1 and 2 while there is room, tokens and due rows */
		now = GetCurrentTimestamp();
		tokens_refill(now);
		slots = pe_max_in_flight - pe_http_in_flight(http);

		/*
		 * Under load, claim in batches of an eighth of max_in_flight rather
		 * than a transaction per freed slot; when nothing is in flight, claim
		 * at once (the commit-to-request latency at idle).
		 */
		if (pe_http_in_flight(http) > 0 && slots < Max(1, pe_max_in_flight / 8))
			slots = 0;
		if (breaker_open)
		{
			/*
			 * Stripe unreachable: nothing goes out but one probe, the due
			 * rows in turn in the order of creation, once nothing else is
			 * in flight.
			 */
			slots = 0;
			if (pe_http_in_flight(http) == 0 && dlist_is_empty(&done_list) &&
				now >= next_probe_at && tokens >= 1.0)
			{
				List	   *items;
				TimestampTz due;
				int			got = outbox_claim_batch(1, last_probe_id, &items, &due);

				tokens -= got;
				if (items != NIL)
				{
					((OutboxItem *) linitial(items))->probe = true;
					last_probe_id = ((OutboxItem *) linitial(items))->id;
					breaker_probes++;
					if (worker_shared != NULL)
					{
						SpinLockAcquire(&worker_shared->mutex);
						worker_shared->probes++;
						SpinLockRelease(&worker_shared->mutex);
					}
					outbox_send_batch(items);
				}
				else if (got == 0)
					next_probe_at = now + probe_interval_ms * (TimestampTz) 1000;
			}
		}
		else if (slots > 0 && (poll_now || (next_due_at != 0 && now >= next_due_at)))
		{
			int			want = Min(slots, (int) floor(tokens));

			if (want >= 1)
			{
				List	   *items;
				TimestampTz due;
				int			got = outbox_claim_batch(want, 0, &items, &due);

				tokens -= got;
				slots -= got;
				poll_now = (got == want);
				/*
				 * Fewer than asked: nothing else is due before the earliest
				 * pending next_attempt_at; one already past is locked by
				 * another transaction, so look again a little later.
				 */
				if (!poll_now)
					next_due_at = due != 0 ? Max(due, now + 50 * (TimestampTz) 1000) :
						now + OUTBOX_IDLE_POLL_MS * (TimestampTz) 1000;
				if (items != NIL)
					outbox_send_batch(items);
			}
			else
				poll_now = true;
		}

		/* how long to sleep */
		now = GetCurrentTimestamp();
		if (breaker_open)
			timeout = pe_http_in_flight(http) > 0 ? OUTBOX_IDLE_POLL_MS :
				Min(ms_until(now, next_probe_at), OUTBOX_IDLE_POLL_MS);
		else if (slots <= 0)
			timeout = OUTBOX_IDLE_POLL_MS;	/* curl's timer and sockets wake us */
		else if (poll_now || now >= next_due_at)
			timeout = tokens >= 1.0 ? 0 :
				(long) ceil((1.0 - tokens) * 1000.0 / outbox_rate());
		else
			timeout = Min(ms_until(now, next_due_at), OUTBOX_IDLE_POLL_MS);
		timeout = Min(timeout, ms_until(now, next_settle_at));

		status_set(breaker_open ? "stripe_unreachable" :
				   pe_http_in_flight(http) > 0 ? "sending" : "idle");
		if (worker_shared != NULL)
		{
			SpinLockAcquire(&worker_shared->mutex);
			worker_shared->in_flight = pe_http_in_flight(http);
			SpinLockRelease(&worker_shared->mutex);
		}

		if (pe_http_wait(http, timeout, PG_WAIT_EXTENSION) & WL_LATCH_SET)
		{
			poll_now = true;
			if (worker_shared != NULL)
			{
				SpinLockAcquire(&worker_shared->mutex);
				worker_shared->last_wake = GetCurrentTimestamp();
				SpinLockRelease(&worker_shared->mutex);
			}
		}
		else if (next_due_at != 0 && GetCurrentTimestamp() >= next_due_at)
			poll_now = true;
	}
}
