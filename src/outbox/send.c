/*-------------------------------------------------------------------------
 *
 * send.c
 *		The outbox worker's second phase: the built requests go into curl,
 *		with no transaction, snapshot or lock held, and come back to the
 *		done list as they finish; and the circuit breaker (issue 20), which
 *		learns from every finished request whether Stripe can be reached.
 *
 * Invariants:
 *	- No transaction is open while a request is in flight: the loop waits
 *	  on the latch and every curl socket at once (pe_http_wait), with
 *	  CHECK_FOR_INTERRUPTS, so a shutdown never waits for Stripe.
 *	- The breaker's state is static, so it survives error recovery.
 *
 * IDENTIFICATION
 *		src/outbox/send.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/timestamp.h"

#include "base/guc.h"
#include "base/spi.h"
#include "outbox/outbox_int.h"

/*
 * The circuit breaker (issue 20): this many transport failures or 5xx
 * answers in a row, with no other answer between them, and the worker stops
 * sending the queue; it then probes with one request at a time, the interval
 * doubling from retry_base_ms to retry_max_ms, until one gets an answer.
 */
#define OUTBOX_BREAKER_FAILURES	5

/* Open: no row is claimed but one probe at a time, at next_probe_at. */
OutboxBreaker pe_breaker = {0, false, 0, 0, 0, 0, 0};

/* ---------------------------------------------------------------------------
 * SPI plans
 * ---------------------------------------------------------------------------
 */
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

/* ---------------------------------------------------------------------------
 * Sending
 * ---------------------------------------------------------------------------
 */

/* Put every built request in flight (no transaction open). */
void
pe_outbox_send_batch(List *items)
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
		if (pe_http_start(pe_worker.http, &item->http))
			sent++;
		else
		{
			/* recorded as a failed attempt (no answer) at the next turn */
			item->http.result = CURLE_FAILED_INIT;
			dlist_push_tail(&pe_worker.done_list, &item->node);
		}
	}
	pe_outbox_status_in_flight(pe_http_in_flight(pe_worker.http), sent);
}

/* Move finished requests from curl to the done list. */
void
pe_outbox_collect_done(void)
{
	PeHttpRequest *req;

	while ((req = pe_http_next_done(pe_worker.http)) != NULL)
	{
		OutboxItem *item = (OutboxItem *) req->owner;

		dlist_push_tail(&pe_worker.done_list, &item->node);
	}
}

/* ---------------------------------------------------------------------------
 * The circuit breaker
 * ---------------------------------------------------------------------------
 */

/*
 * pe_outbox_breaker_observe
 *		The circuit breaker (issue 20) learns the outcome of item's request:
 *		an HTTP answer below 500 closes it (one LOG line) and resets the
 *		count; a transport failure or a 5xx counts, and the
 *		OUTBOX_BREAKER_FAILURES-th in a row opens it (one LOG line); a probe
 *		that fails doubles the probe interval up to retry_max_ms
 *		(Retry-After as a floor) and its row waits two intervals.  Returns
 *		true when it closed.  Caller: in the recording transaction, with SPI.
 */
bool
pe_outbox_breaker_observe(OutboxItem *item)
{
	PeHttpRequest *req = &item->http;
	bool		down = req->result != CURLE_OK || req->status == 0 || req->status >= 500;
	TimestampTz now = GetCurrentTimestamp();
	long		wait_ms;
	char	   *what;

	if (!down)
	{
		pe_breaker.failures = 0;
		if (!pe_breaker.open)
			return false;
		pe_breaker.open = false;
		ereport(LOG,
				(errmsg("payment_ext outbox worker: Stripe answers again after %ld s unreachable and " UINT64_FORMAT " probes: sending the queue at full speed",
						(long) ((now - pe_breaker.since) / USECS_PER_SEC), pe_breaker.probes)));
		pe_outbox_status_unreachable(0, NULL);
		return true;
	}

	what = req->result != CURLE_OK || req->status == 0 ?
		psprintf("no answer: %s", pe_http_error_text(req)) :
		psprintf("HTTP %ld", req->status);
	pe_breaker.failures++;
	if (!pe_breaker.open && pe_breaker.failures >= OUTBOX_BREAKER_FAILURES)
	{
		pe_breaker.open = true;
		pe_breaker.since = now;
		pe_breaker.probes = 0;
		pe_breaker.probe_interval_ms = Max(Min(pe_retry_base_ms, pe_retry_max_ms), 1);
		ereport(LOG,
				(errmsg("payment_ext outbox worker: Stripe unreachable after %d transport failures or 5xx answers in a row (last: %s): the queue waits, probing with one request at most every %d ms",
						pe_breaker.failures, what, pe_retry_max_ms)));
	}
	else if (pe_breaker.open && item->probe)
	{
		Datum		args[2];

		pe_breaker.probe_interval_ms = Min(pe_breaker.probe_interval_ms * 2, (long) Max(pe_retry_max_ms, 1));
		args[0] = Int64GetDatum(item->id);
		args[1] = Float8GetDatum(2.0 * pe_breaker.probe_interval_ms);
		if (SPI_execute_plan(pe_plan(&probe_defer_plan), args, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "deferring a failed probe failed");
	}
	else
		return false;
	wait_ms = pe_breaker.probe_interval_ms;
	if (req->retry_after_s >= 0)
		wait_ms = Max(wait_ms, req->retry_after_s * 1000L);
	pe_breaker.next_probe_at = now + wait_ms * (TimestampTz) 1000;
	pe_outbox_status_unreachable(pe_breaker.since, what);
	return false;
}

/*
 * pe_outbox_breaker_release
 *		The breaker closed: the rows that failed on their way during the
 *		outage are due at once (breaker_release_plan).  Caller: in the
 *		recording transaction, with SPI.
 */
void
pe_outbox_breaker_release(void)
{
	int			rc = SPI_execute_plan(pe_plan(&breaker_release_plan), NULL, NULL, false, 0);

	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "releasing the outbox after an outage failed: %s", SPI_result_code_string(rc));
}
