/*-------------------------------------------------------------------------
 *
 * record.c
 *		The outbox worker's third phase: record the answer to each finished
 *		request (classified by outcome.c) in the payment tables and its
 *		outbox row, one transaction for all of them, one subtransaction
 *		each; the answers about PaymentIntents are record_intent.c's, those
 *		about Refunds record_refund.c's.
 *
 * Invariants:
 *	- pe_outbox_record_one runs inside a transaction and an SPI connection
 *	  of the caller, as the worker role, in an internal subtransaction of
 *	  its own: everything it writes for one outcome (payment, refund,
 *	  failure, intent, outbox row) commits or rolls back together.
 *	- Stripe ids and client secrets are stored only sealed, under the
 *	  context the sealed-column trigger checks; nothing here logs or stores
 *	  an opened id, and Stripe's messages are scrubbed of ids.
 *	- Lock order (README, "Lock order"): the first thing recorded for an
 *	  outcome is the lock of its payment's row (outcome_lock_payment, FOR
 *	  NO KEY UPDATE), before any row of that payment: its refunds,
 *	  payment.intents, payment.refund_states, payment.stripe_refs,
 *	  "PaymentFailures", its payment.outbox rows (the item's own included),
 *	  then the audit chain and the user, as every other writer of a
 *	  payment does; the worker records a batch in ascending payment id
 *	  (below).  Taking payment.intents or stripe_refs first, as
 *	  1.1 did, deadlocked (40P01) with a webhook holding the payment.
 *
 * IDENTIFICATION
 *		src/outbox/record.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "base/guc.h"
#include "base/status.h"
#include "base/text.h"
#include "outbox/outbox_int.h"
#include "stripe/stripe.h"

/*
 * Stripe saved a 5xx under item's key and replays it (Idempotent-Replayed):
 * the same key gets the same answer for as long as Stripe keeps it, so a
 * resend under it can never succeed.  For a payment_intent.cancel and a
 * refund.unwanted, asking again under a new key is safe: a PaymentIntent is
 * canceled once (a second cancel is refused, payment_intent_unexpected_state)
 * and a refund.unwanted refunds what is left of the charge (a second one is
 * refused, charge_already_refunded).  The row is done and a copy of it,
 * resealed for the key <base>-re-<n>, takes over.  Creates and refund.create
 * keep their key: their window closes and the settler looks them up.
 */
static PePlan rekey_plan = {
	"INSERT INTO payment.outbox (kind, payment_id, refund_id, request, idempotency_key)"
	" SELECT kind, payment_id, refund_id, $2::jsonb, $3 FROM payment.outbox WHERE id = $1"
	" ON CONFLICT (idempotency_key) DO NOTHING",
	3, {INT8OID, TEXTOID, TEXTOID}, NULL, 0
};

static void
outcome_rekey(OutboxItem *item, Outcome *o)
{
	const char *key = item->idempotency_key;
	const char *re = strstr(key, "-re-");
	int			n = 0;
	char	   *new_key;
	Datum		args[3];

	/* pe-...-re-<n>: the n-th new key of the first one */
	while (re != NULL && strstr(re + 4, "-re-") != NULL)
		re = strstr(re + 4, "-re-");
	if (re != NULL && re[4] != '\0' && strspn(re + 4, "0123456789") == strlen(re + 4) &&
		strlen(re + 4) < 9)
		n = atoi(re + 4);
	else
		re = NULL;
	new_key = psprintf("%.*s-re-%d", re ? (int) (re - key) : (int) strlen(key), key, n + 1);

	args[0] = Int64GetDatum(item->id);
	args[1] = CStringGetTextDatum(pe_reseal_request(pe_outcome_request_text(item->id),
													 key, new_key));
	args[2] = CStringGetTextDatum(new_key);
	pe_outcome_exec(&rekey_plan, args, NULL);
	o->cls = OUTCOME_FINAL;
	o->last_error = psprintf("%s; Stripe replays this saved answer for the key: sent again under a new key (%s)",
							 o->last_error ? o->last_error : "a saved error", new_key);
}

/*
 * outcome_lock_payment
 *		Lock the row of item's payment (FOR NO KEY UPDATE) before anything
 *		else of the outcome is written: the lock order every writer of a
 *		payment follows (README, "Lock order"); and read its amount and
 *		currency into o.  A payment that is gone (it cannot be deleted, but
 *		a superuser can) locks nothing; what follows then changes no
 *		payment row.
 */
static void
outcome_lock_payment(OutboxItem *item, Outcome *o)
{
	o->has_payment = pe_payment_lock(&item->payment_id, &o->payment);
}

/*
 * pe_outbox_record_one
 *		Classify and record the answer to item: the payment or refund, and
 *		the outbox row (done, pending again with a backoff, or dead).
 *		Caller: in a transaction (inside an internal subtransaction for
 *		this item), connected to SPI, as the worker role.  The payment's
 *		row is locked first, whatever the outcome (lock order: see the
 *		file header).
 */
void
pe_outbox_record_one(OutboxItem *item, OutboxTally *tally)
{
	Outcome		o;

	pe_outcome_classify(item, &o);
	outcome_lock_payment(item, &o);

	if (o.cls == OUTCOME_SUCCESS)
	{
		if (item->kind == OUTBOX_REFUND_CREATE)
			pe_outbox_record_refund(item, &o, &o.object->root, "response");
		else if (item->kind == OUTBOX_REFUND_LIST)
			pe_outbox_record_refund_list(item, &o);
		else if (item->kind == OUTBOX_REFUND_UNWANTED)
			pe_outbox_record_unwanted(item, &o);
		else if (item->kind == OUTBOX_PI_SEARCH)
			pe_outbox_record_search(item, &o);
		else
			pe_outbox_record_intent(item, &o, &o.object->root);
	}
	else if (o.cls == OUTCOME_FINAL)
	{
		switch (item->kind)
		{
			case OUTBOX_PI_CREATE:
				pe_outbox_create_refused(item, &o);
				break;
			case OUTBOX_REFUND_CREATE:
				pe_refund_set(&item->refund_id, PE_REFUND_FAILED, NULL, true);
				break;
			case OUTBOX_REFUND_UNWANTED:
				/* nothing left to refund is done; anything else needs a look */
				if (o.err_code == NULL || strcmp(o.err_code, "charge_already_refunded") != 0)
					o.cls = OUTCOME_DEAD;
				break;
			case OUTBOX_PI_CANCEL:
				pe_outbox_cancel_refused(item, &o);
				break;
			case OUTBOX_PI_RETRIEVE:
			case OUTBOX_PI_SEARCH:
			case OUTBOX_REFUND_LIST:
				/* the payment's (refund's) fate is the settler's call: keep it visible */
				o.cls = OUTCOME_DEAD;
				break;
		}
	}

	if (o.cls == OUTCOME_RETRY && item->http.replayed && o.http_status >= 500 &&
		(item->kind == OUTBOX_PI_CANCEL || item->kind == OUTBOX_REFUND_UNWANTED))
		outcome_rekey(item, &o);

	switch (o.cls)
	{
		case OUTCOME_SUCCESS:
			tally->successes++;
			pe_outbox_mark(item->id, "done", 0, o.http_status, o.last_error);
			break;
		case OUTCOME_FINAL:
			tally->failures++;
			pe_outbox_mark(item->id, "done", 0, o.http_status, o.last_error);
			break;
		case OUTCOME_RETRY:

			/*
			 * issue 20: the retry budget is time.  A transient failure (no
			 * answer, 5xx, 409, 429) is retried with the same key until
			 * payment_ext.idempotency_window closes (then the claim skips
			 * the row and the settler takes over); one that provably never
			 * reached Stripe does not even start that window.  Only answers
			 * that came back and cannot be used (a 2xx that is not the
			 * object asked for) count against max_attempts.
			 */
			if (!item->http.maybe_reached && item->key_first)
				pe_outbox_unsent(item->id);
			if (o.http_status >= 200 && o.http_status < 300 &&
				item->unusable_answers + 1 >= pe_max_attempts)
			{
				char	   *why = psprintf("gave up after %d answers that could not be used: %s",
										   item->unusable_answers + 1, o.last_error);

				tally->dead++;
				pe_outbox_mark(item->id, "dead", 0, o.http_status, why);
				o.last_error = why;
			}
			else
			{
				tally->retries++;
				pe_outbox_mark(item->id, "pending", pe_outbox_backoff_ms(item->attempts, item->http.retry_after_s),
							   o.http_status, o.last_error);
				if (o.http_status >= 200 && o.http_status < 300)
					pe_outbox_unusable(item->id);
			}
			break;
		case OUTCOME_DEAD:
			tally->dead++;
			pe_outbox_mark(item->id, "dead", 0, o.http_status, o.last_error);
			break;
	}
	if (o.cls != OUTCOME_SUCCESS && o.last_error != NULL)
		pe_strlcpy_mb(tally->last_error, o.last_error, sizeof(tally->last_error));

	/* one line per request at DEBUG1: no key, no Stripe id, no body */
	ereport(DEBUG1,
			(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
			 errmsg_internal("payment_ext outbox worker: outbox row " INT64_FORMAT " (%s, attempt %d): HTTP %d, %s",
							 item->id, pe_outbox_kind_name(item->kind), item->attempts,
							 (int) o.http_status,
							 o.cls == OUTCOME_SUCCESS ? "done" :
							 o.cls == OUTCOME_FINAL ? "refused for good" :
							 o.cls == OUTCOME_RETRY ? "to retry" : "dead")));
}

/* ---------------------------------------------------------------------------
 * The recording transaction
 * ---------------------------------------------------------------------------
 */

/* An item and its round's tally, for record_one */
typedef struct RecordOne
{
	OutboxItem *item;
	OutboxTally *tally;
} RecordOne;

/* Record one outcome (in pe_outbox_subxact). */
static void
record_one(void *arg)
{
	RecordOne  *one = (RecordOne *) arg;

	pe_outbox_record_one(one->item, one->tally);
}

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

	dlist_foreach(it, &pe_worker.done_list)
		n++;
	if (n < 2)
		return;
	items = palloc(sizeof(OutboxItem *) * n);
	i = 0;
	dlist_foreach(it, &pe_worker.done_list)
		items[i++] = dlist_container(OutboxItem, node, it.cur);
	qsort(items, n, sizeof(OutboxItem *), outbox_item_cmp);
	dlist_init(&pe_worker.done_list);
	for (i = 0; i < n; i++)
		dlist_push_tail(&pe_worker.done_list, &items[i]->node);
	pfree(items);
}

/*
 * pe_outbox_record_outcomes
 *		One short transaction for every finished request: each outcome in
 *		an internal subtransaction of its own, in ascending payment id
 *		(each outcome locks its payment first: pe_outbox_record_one).
 */
bool
pe_outbox_record_outcomes(void)
{
	OutboxTally tally;
	bool		closed = false;

	memset(&tally, 0, sizeof(tally));
	outbox_sort_done();
	pe_outbox_xact_begin("recording");
	while (!dlist_is_empty(&pe_worker.done_list))
	{
		OutboxItem *item = dlist_container(OutboxItem, node,
										   dlist_pop_head_node(&pe_worker.done_list));
		RecordOne	one;
		ErrorData  *edata;

		/*
		 * In an internal subtransaction: an outcome that cannot be recorded
		 * (a trigger refusing it, say) is rolled back alone and the row is
		 * retried later with the same key; the others commit.
		 */
		one.item = item;
		one.tally = &tally;
		edata = pe_outbox_subxact(record_one, &one);
		if (edata != NULL)
		{
			char	   *why;
			bool		dead;

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
		if (pe_outbox_breaker_observe(item))
			closed = true;
		pe_outbox_item_free(item);
	}
	if (closed)
		pe_outbox_breaker_release();
	pe_outbox_xact_end();

	pe_outbox_status_recorded(&tally, pe_http_in_flight(pe_worker.http));
	return closed;
}
