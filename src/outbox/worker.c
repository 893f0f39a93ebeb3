/*-------------------------------------------------------------------------
 *
 * worker.c
 *		The outbox background worker's life: its main loop, readiness (API
 *		key, extension, role), error recovery, rate limit and exit.  The
 *		loop runs three phases, never overlapping a transaction with a
 *		request in flight:
 *	claim.c		short transaction: due rows FOR UPDATE SKIP LOCKED ->
 *				'sending', attempts + 1; builds each request (request.c:
 *				sealed values opened in this process's memory only)
 *	send.c		no transaction: requests into curl; the loop waits on the
 *				latch and every curl socket (and the circuit breaker)
 *	record.c	short transaction, one internal subtransaction per outcome
 *				(outcome.c, record_intent.c, record_refund.c)
 * and, every quarter of pending_ttl, a turn of the settler (settle.c).  Its
 * process-local state is state.c's, its shared status status.c's.
 *
 * Invariants:
 *	- Every transaction runs as payment_ext.worker_role (state.c), never as
 *	  the superuser it connects as.
 *	- After an error the worker drops every request it holds and sweeps
 *	  'sending' rows back to 'pending' (same idempotency key), as it does
 *	  at start after a crash.
 *	- Memory: pe_worker.loop_cxt is reset at each turn of the loop; each
 *	  claimed row has its own context under pe_worker.inflight_cxt; both
 *	  are reset after an error.
 *
 * IDENTIFICATION
 *		src/outbox/worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "base/guc.h"
#include "base/pg_compat.h"
#include "base/text.h"
#include "outbox/http.h"
#include "outbox/outbox_int.h"
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

pg_noreturn PGDLLEXPORT void pe_outbox_worker_main(Datum main_arg);

/* ---------------------------------------------------------------------------
 * Worker-local state
 * ---------------------------------------------------------------------------
 */
static int	key_rate = OUTBOX_RATE_TEST;
static double tokens = 1.0;
static TimestampTz tokens_at = 0;
static int	last_problem = 0;	/* the not-ready reason last warned about */
static char connected_db[NAMEDATALEN];	/* the database connected to */

/* ===========================================================================
 * Readiness, API key
 * ===========================================================================
 */

/* Log a WARNING about why the worker cannot work, once per reason. */
static void
warn_not_ready(int problem, const char *state, int sqlstate, const char *msg, const char *hint)
{
	pe_outbox_status_set(state);
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

	if (pe_worker.api_key != NULL)
	{
		explicit_bzero(pe_worker.api_key, strlen(pe_worker.api_key));
		pfree(pe_worker.api_key);
		pe_worker.api_key = NULL;
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

	pe_worker.api_key = key;
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

	if (pe_worker.api_key == NULL)
		outbox_load_api_key();
	if (pe_worker.api_key == NULL)
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
	pe_worker.role_oid = role;
	return true;
}

/* ===========================================================================
 * The worker's life
 * ===========================================================================
 */

/* Drop every request held: in curl and finished but not recorded. */
static void
outbox_abandon_all(void)
{
	dlist_init(&pe_worker.done_list);
	pe_http_destroy(pe_worker.http);		/* frees the curl handles, wipes headers */
	pe_worker.http = NULL;
	while (!dlist_is_empty(&pe_worker.all_items))
	{
		OutboxItem *item = dlist_container(OutboxItem, all_node,
										   dlist_pop_head_node(&pe_worker.all_items));

		pe_outbox_item_wipe(item);
	}
	MemoryContextReset(pe_worker.inflight_cxt);
}

/* Process exit: free curl handles, clear the shared status. */
static void
outbox_at_exit(int code, Datum arg)
{
	if (pe_worker.http != NULL)
	{
		pe_http_destroy(pe_worker.http);
		pe_worker.http = NULL;
	}
	if (pe_worker.api_key != NULL)
		explicit_bzero(pe_worker.api_key, strlen(pe_worker.api_key));
	pe_outbox_status_stopped();
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
	pe_outbox_status_started();
	pe_outbox_status_set("starting");

	pe_worker.loop_cxt = AllocSetContextCreate(TopMemoryContext, "outbox worker loop",
									 ALLOCSET_DEFAULT_SIZES);
	pe_worker.inflight_cxt = AllocSetContextCreate(TopMemoryContext, "outbox worker in flight",
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

			pe_outbox_status_error(pe_scrub(edata->message, 200));
			FreeErrorData(edata);
		}
		FlushErrorState();
		if (pe_worker.http != NULL)
			outbox_abandon_all();
		MemoryContextReset(pe_worker.loop_cxt);
		sweep_needed = true;
		ready = false;
		poll_now = true;
		pe_outbox_status_set("error recovery");
		RESUME_INTERRUPTS();
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 OUTBOX_ERROR_PAUSE_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	PG_exception_stack = &local_sigjmp_buf;

	if (pe_worker.http == NULL)
		pe_worker.http = pe_http_create();

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
		MemoryContextReset(pe_worker.loop_cxt);
		MemoryContextSwitchTo(pe_worker.loop_cxt);

		if (RecoveryInProgress())
		{
			pe_outbox_status_set("waiting: in recovery");
			(void) pe_http_wait(pe_worker.http, 1000, PG_WAIT_EXTENSION);
			continue;
		}
		if (!ready)
		{
			ready = outbox_ready();
			if (!ready)
			{
				(void) pe_http_wait(pe_worker.http, OUTBOX_NOT_READY_MS, PG_WAIT_EXTENSION);
				continue;
			}
		}
		if (sweep_needed)
		{
			pe_outbox_sweep();
			sweep_needed = false;
			poll_now = true;
		}

		/* the settler, every quarter of pending_ttl (1 s to 60 s) */
		now = GetCurrentTimestamp();
		if (now >= next_settle_at)
		{
			int			queued;
			long		every_ms = Min(Max((long) pe_pending_ttl * 250L, 1000L), 60000L);

			pe_outbox_xact_begin("settling");
			queued = pe_outbox_settle();
			pe_outbox_xact_end();
			next_settle_at = now + every_ms * (TimestampTz) 1000;
			if (queued > 0)
				poll_now = true;
		}

		/* phase 3 for what finished */
		pe_outbox_collect_done();
		if (!dlist_is_empty(&pe_worker.done_list) && pe_outbox_record_outcomes())
			poll_now = true;	/* the breaker closed: drain at once */

		/* phase 1 and 2 while there is room, tokens and due rows */
		now = GetCurrentTimestamp();
		tokens_refill(now);
		slots = pe_max_in_flight - pe_http_in_flight(pe_worker.http);

		/*
		 * Under load, claim in batches of an eighth of max_in_flight rather
		 * than a transaction per freed slot; when nothing is in flight, claim
		 * at once (the commit-to-request latency at idle).
		 */
		if (pe_http_in_flight(pe_worker.http) > 0 && slots < Max(1, pe_max_in_flight / 8))
			slots = 0;
		if (pe_breaker.open)
		{
			/*
			 * Stripe unreachable: nothing goes out but one probe, the due
			 * rows in turn in the order of creation, once nothing else is
			 * in flight.
			 */
			slots = 0;
			if (pe_http_in_flight(pe_worker.http) == 0 && dlist_is_empty(&pe_worker.done_list) &&
				now >= pe_breaker.next_probe_at && tokens >= 1.0)
			{
				List	   *items;
				TimestampTz due;
				int			got = pe_outbox_claim_batch(1, pe_breaker.last_probe_id, &items, &due);

				tokens -= got;
				if (items != NIL)
				{
					((OutboxItem *) linitial(items))->probe = true;
					pe_breaker.last_probe_id = ((OutboxItem *) linitial(items))->id;
					pe_breaker.probes++;
					pe_outbox_status_probe();
					pe_outbox_send_batch(items);
				}
				else if (got == 0)
					pe_breaker.next_probe_at = now + pe_breaker.probe_interval_ms * (TimestampTz) 1000;
			}
		}
		else if (slots > 0 && (poll_now || (next_due_at != 0 && now >= next_due_at)))
		{
			int			want = Min(slots, (int) floor(tokens));

			if (want >= 1)
			{
				List	   *items;
				TimestampTz due;
				int			got = pe_outbox_claim_batch(want, 0, &items, &due);

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
					pe_outbox_send_batch(items);
			}
			else
				poll_now = true;
		}

		/* how long to sleep */
		now = GetCurrentTimestamp();
		if (pe_breaker.open)
			timeout = pe_http_in_flight(pe_worker.http) > 0 ? OUTBOX_IDLE_POLL_MS :
				Min(ms_until(now, pe_breaker.next_probe_at), OUTBOX_IDLE_POLL_MS);
		else if (slots <= 0)
			timeout = OUTBOX_IDLE_POLL_MS;	/* curl's timer and sockets wake us */
		else if (poll_now || now >= next_due_at)
			timeout = tokens >= 1.0 ? 0 :
				(long) ceil((1.0 - tokens) * 1000.0 / outbox_rate());
		else
			timeout = Min(ms_until(now, next_due_at), OUTBOX_IDLE_POLL_MS);
		timeout = Min(timeout, ms_until(now, next_settle_at));

		pe_outbox_status_set(pe_breaker.open ? "stripe_unreachable" :
				   pe_http_in_flight(pe_worker.http) > 0 ? "sending" : "idle");
		pe_outbox_status_in_flight(pe_http_in_flight(pe_worker.http), 0);

		if (pe_http_wait(pe_worker.http, timeout, PG_WAIT_EXTENSION) & WL_LATCH_SET)
		{
			poll_now = true;
			pe_outbox_status_woken();
		}
		else if (next_due_at != 0 && GetCurrentTimestamp() >= next_due_at)
			poll_now = true;
	}
}
