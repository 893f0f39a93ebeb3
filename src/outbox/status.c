/*-------------------------------------------------------------------------
 *
 * status.c
 *		The outbox worker's shared-memory status, payment.worker_state(),
 *		the worker's registration, and the wake-up of the worker when a
 *		transaction that added outbox rows commits.
 *
 * Invariants:
 *	- The shared status exists only under shared_preload_libraries; every
 *	  function here is a no-op without it (the outbox then simply fills).
 *	- Its spinlock is held only to copy a few fields, never across a call
 *	  that can raise.
 *
 * IDENTIFICATION
 *		src/outbox/status.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "base/text.h"
#include "base/trigger.h"
#include "outbox/outbox.h"
#include "outbox/outbox_int.h"

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
void
pe_outbox_status_set(const char *state)
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
void
pe_outbox_status_error(const char *text)
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
 * What the worker tells the shared status
 * ===========================================================================
 */

/* The worker (this process) starts: it drains this database. */
void
pe_outbox_status_started(void)
{
	if (worker_shared == NULL)
		return;
	SpinLockAcquire(&worker_shared->mutex);
	worker_shared->pid = MyProcPid;
	worker_shared->latch = MyLatch;
	worker_shared->dboid = MyDatabaseId;
	worker_shared->started_at = GetCurrentTimestamp();
	worker_shared->in_flight = 0;
	SpinLockRelease(&worker_shared->mutex);
}

/* The worker exits. */
void
pe_outbox_status_stopped(void)
{
	if (worker_shared == NULL)
		return;
	SpinLockAcquire(&worker_shared->mutex);
	worker_shared->pid = 0;
	worker_shared->latch = NULL;
	worker_shared->dboid = InvalidOid;
	worker_shared->in_flight = 0;
	strlcpy(worker_shared->state, "stopped", sizeof(worker_shared->state));
	SpinLockRelease(&worker_shared->mutex);
}

/* requests are in flight now; sent of them just went out (0: none). */
void
pe_outbox_status_in_flight(int in_flight, int sent)
{
	if (worker_shared == NULL)
		return;
	SpinLockAcquire(&worker_shared->mutex);
	worker_shared->requests_sent += sent;
	worker_shared->in_flight = in_flight;
	SpinLockRelease(&worker_shared->mutex);
}

/* A request that could not be built: dead (final) or tried again later. */
void
pe_outbox_status_unbuilt(bool final)
{
	if (worker_shared == NULL)
		return;
	SpinLockAcquire(&worker_shared->mutex);
	if (final)
		worker_shared->dead++;
	else
		worker_shared->retries++;
	SpinLockRelease(&worker_shared->mutex);
}

/* A round of recording did tally; in_flight requests are still out. */
void
pe_outbox_status_recorded(const OutboxTally *tally, int in_flight)
{
	if (worker_shared == NULL)
		return;
	SpinLockAcquire(&worker_shared->mutex);
	worker_shared->successes += tally->successes;
	worker_shared->failures += tally->failures;
	worker_shared->retries += tally->retries;
	worker_shared->dead += tally->dead;
	if (tally->successes > 0)
		worker_shared->last_success_at = GetCurrentTimestamp();
	if (tally->last_error[0] != '\0')
		pe_strlcpy_mb(worker_shared->last_error, tally->last_error, sizeof(worker_shared->last_error));
	worker_shared->in_flight = in_flight;
	SpinLockRelease(&worker_shared->mutex);
}

/*
 * The circuit breaker: Stripe unreachable since since (0: reachable
 * again), the last failure what (ignored when reachable).
 */
void
pe_outbox_status_unreachable(TimestampTz since, const char *what)
{
	if (worker_shared == NULL)
		return;
	SpinLockAcquire(&worker_shared->mutex);
	worker_shared->unreachable_since = since;
	if (since != 0)
		strlcpy(worker_shared->unreachable_error, what, sizeof(worker_shared->unreachable_error));
	SpinLockRelease(&worker_shared->mutex);
}

/* A probe went out while Stripe is unreachable. */
void
pe_outbox_status_probe(void)
{
	if (worker_shared == NULL)
		return;
	SpinLockAcquire(&worker_shared->mutex);
	worker_shared->probes++;
	SpinLockRelease(&worker_shared->mutex);
}

/* The worker's latch was set (a commit, or a signal). */
void
pe_outbox_status_woken(void)
{
	if (worker_shared == NULL)
		return;
	SpinLockAcquire(&worker_shared->mutex);
	worker_shared->last_wake = GetCurrentTimestamp();
	SpinLockRelease(&worker_shared->mutex);
}
