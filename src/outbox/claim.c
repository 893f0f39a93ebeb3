/*-------------------------------------------------------------------------
 *
 * claim.c
 *		The outbox worker's first phase: in one short transaction, claim the
 *		due rows (FOR UPDATE SKIP LOCKED) as 'sending', attempts + 1, with
 *		the Idempotency-Key each row keeps for life, and build their HTTP
 *		requests (request.c: sealed values opened in this process's memory
 *		only); and the sweep that makes rows left 'sending' by an error or a
 *		crash due again.
 *
 * Invariants:
 *	- A row is 'sending' only while this process holds its request (in
 *	  curl or in the done list).  After an error the worker drops every
 *	  request it holds and sweeps 'sending' rows back to 'pending' (same
 *	  idempotency key), as it does at start after a crash.
 *	- Requests no longer wanted are withdrawn in the same claiming
 *	  transaction (stripe/queue.c), before the claim.
 *
 * IDENTIFICATION
 *		src/outbox/claim.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/uuid.h"

#include "base/guc.h"
#include "base/spi.h"
#include "base/text.h"
#include "outbox/outbox_int.h"
#include "stripe/stripe.h"
#include "vault/vault.h"

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
 * ... and still wanted (issue 17, items 1 and 2; stripe/stripe.h): a create only
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
static PePlan sweep_plan = {
	"UPDATE payment.outbox SET state = 'pending', updated_at = pg_catalog.now()"
	" WHERE state = 'sending'",
	0, {InvalidOid}, NULL, 0
};

/* A claimed row and its item, for claim_build */
typedef struct ClaimBuild
{
	ClaimedRow *row;
	OutboxItem *item;
} ClaimBuild;

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
claim_error_is_final(int sqlerrcode)
{
	return sqlerrcode == ERRCODE_PE_SEALED_INVALID ||
		sqlerrcode == ERRCODE_PE_KEY_NOT_FOUND ||
		sqlerrcode == ERRCODE_INVALID_PARAMETER_VALUE ||
		sqlerrcode == ERRCODE_NO_DATA_FOUND;
}

/* Build the request of a claimed row (in pe_outbox_subxact). */
static void
claim_build(void *arg)
{
	ClaimBuild *b = (ClaimBuild *) arg;

	pe_outbox_build(b->row, b->item, pe_worker.api_key);
}

/*
 * pe_outbox_claim_batch
 *		One short transaction: claim up to limit due rows and build their
 *		requests into *items (a List of OutboxItem, in pe_worker.loop_cxt).  A row
 *		whose request cannot be built is dead at once.  Sets *next_due to
 *		the earliest next_attempt_at still pending (0 if none).  Rows are
 *		taken in the order of creation, starting after row after_id (0:
 *		from the first) and wrapping around: the circuit breaker's probes
 *		pass the row probed last, so that rows Stripe keeps failing do not
 *		take every probe while the others wait.
 */
int
pe_outbox_claim_batch(int limit, int64 after_id, List **items, TimestampTz *next_due)
{
	ClaimedRow *rows;
	uint64		n;
	uint64		i;
	Datum		args[3];
	int			rc;
	bool		isnull;
	bool		warned = false;
	ClaimBuild	build;

	*items = NIL;
	pe_outbox_xact_begin("claiming");
	pe_outbox_withdraw((Datum) 0, true);
	args[0] = Int32GetDatum(limit);
	args[1] = Int32GetDatum(pe_idempotency_window);
	args[2] = Int64GetDatum(after_id);
	rc = SPI_execute_plan(pe_plan(&claim_plan), args, NULL, false, 0);
	if (rc != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "claiming outbox rows failed: %s", SPI_result_code_string(rc));
	n = SPI_processed;
	rows = MemoryContextAllocZero(pe_worker.loop_cxt, sizeof(ClaimedRow) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		ClaimedRow *r = &rows[i];
		MemoryContext old = MemoryContextSwitchTo(pe_worker.loop_cxt);
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
		MemoryContext itemcxt = AllocSetContextCreate(pe_worker.inflight_cxt, "outbox item",
													  ALLOCSET_SMALL_SIZES);
		ErrorData  *edata;
		char	   *why;
		bool		final;

		item = MemoryContextAllocZero(itemcxt, sizeof(OutboxItem));
		item->cxt = itemcxt;
		dlist_push_tail(&pe_worker.all_items, &item->all_node);
		item->id = r->id;
		item->payment_id = r->payment_id;
		item->refund_id = r->refund_id;
		item->has_refund = r->has_refund;
		item->attempts = r->attempts;
		item->unusable_answers = r->unusable_answers;
		item->key_first = r->key_first;

		/*
		 * In an internal subtransaction: one row whose request cannot be
		 * built (a sealed value that does not open, a missing saved method)
		 * goes dead without failing the others.
		 */
		build.row = r;
		build.item = item;
		edata = pe_outbox_subxact(claim_build, &build);
		if (edata == NULL)
		{
			MemoryContext old = MemoryContextSwitchTo(pe_worker.loop_cxt);

			*items = lappend(*items, item);
			MemoryContextSwitchTo(old);
			continue;
		}
		pe_outbox_item_free(item);

		/*
		 * Nothing was sent.  Only an error that can never pass makes the row
		 * dead; any other sends it back to pending with a backoff, the key's
		 * window not started (issue 17 item 5).
		 */
		if (r->key_first)
			pe_outbox_unsent(r->id);
		final = claim_error_is_final(edata->sqlerrcode);
		if (final)
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
			pe_outbox_mark(r->id, "pending", pe_outbox_backoff_ms(r->attempts, -1), 0, why);
			if (!warned)
				ereport(WARNING,
						(errcode(edata->sqlerrcode),
						 errmsg("payment_ext outbox worker: outbox row " INT64_FORMAT ": %s",
								r->id, why)));
			warned = true;
		}
		pe_outbox_status_error(why);
		pe_outbox_status_unbuilt(final);
		FreeErrorData(edata);
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
	pe_outbox_xact_end();
	return (int) n;
}

/* At start and after an error: rows left 'sending' are due again, same key. */
void
pe_outbox_sweep(void)
{
	int			rc;

	pe_outbox_xact_begin("sweeping");
	rc = SPI_execute_plan(pe_plan(&sweep_plan), NULL, NULL, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "sweeping outbox rows failed: %s", SPI_result_code_string(rc));
	if (SPI_processed > 0)
		ereport(LOG,
				(errmsg("payment_ext outbox worker: " UINT64_FORMAT " outbox rows left in flight are due again with their idempotency keys",
						SPI_processed)));
	pe_outbox_xact_end();
}
