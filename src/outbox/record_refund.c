/*-------------------------------------------------------------------------
 *
 * record_refund.c
 *		The outbox worker's recording of the answers about Refunds:
 *		refund.create, refund.list (a refund lookup) and refund.unwanted, in
 *		the payment tables (through stripe/ledger.c) and the outbox.
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
 *	  (record.c).  Taking payment.intents or stripe_refs first, as
 *	  1.1 did, deadlocked (40P01) with a webhook holding the payment.
 *
 *
 * IDENTIFICATION
 *		src/outbox/record_refund.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "base/spi.h"
#include "base/status.h"
#include "base/text.h"
#include "outbox/outbox_int.h"
#include "rules/rules.h"
#include "stripe/stripe.h"
#include "vault/vault.h"

/* ---------------------------------------------------------------------------
 * SPI plans (@S@: the schema of the spec's tables)
 * ---------------------------------------------------------------------------
 */
/*
 * A refund lookup (refund.list) that did not find the refund at Stripe:
 * the newest refund.create row of the refund, its request and how many
 * there are, so that the same request goes out again under a new key.
 */
static PePlan refund_create_row_plan = {
	"SELECT request::text, idempotency_key,"
	" (SELECT pg_catalog.count(*) FROM payment.outbox c WHERE c.payment_id = $1"
	"   AND c.refund_id = $2 AND c.kind = 'refund.create')"
	" FROM payment.outbox WHERE payment_id = $1 AND refund_id = $2 AND kind = 'refund.create'"
	" ORDER BY id DESC LIMIT 1",
	2, {UUIDOID, UUIDOID}, NULL, 0
};
/*
 * ... queued only while the refund is still Processing and every earlier
 * refund.create of it is dead (never resent again), so that Stripe is asked
 * for the money once.
 */
static PePlan refund_recreate_plan = {
	"INSERT INTO payment.outbox (kind, payment_id, refund_id, request, idempotency_key)"
	" SELECT 'refund.create', $1, $2, $3::jsonb, $4"
	"  WHERE EXISTS (SELECT 1 FROM @S@.\"PaymentRefunds\" r WHERE r.\"Id\" = $2"
	"                 AND r.\"RefundStatus\" = 0)"
	"    AND NOT EXISTS (SELECT 1 FROM payment.outbox c WHERE c.payment_id = $1"
	"                     AND c.refund_id = $2 AND c.kind = 'refund.create' AND c.state <> 'dead')"
	" ON CONFLICT (idempotency_key) DO NOTHING",
	4, {UUIDOID, UUIDOID, TEXTOID, TEXTOID}, NULL, 0
};
/* The next page of a refund lookup: starting after the last refund seen */
static PePlan refund_list_next_plan = {
	"INSERT INTO payment.outbox (kind, payment_id, refund_id, request, idempotency_key)"
	" VALUES ('refund.list', $1, $2, pg_catalog.jsonb_build_object('limit', '100',"
	"  'starting_after', $3::text), $4)",
	4, {UUIDOID, UUIDOID, TEXTOID, TEXTOID}, NULL, 0
};

/* ---------------------------------------------------------------------------
 * Answers with Refunds
 * ---------------------------------------------------------------------------
 */

/*
 * A Refund came back, re, as the answer to its refund.create (source
 * "response") or found by a refund lookup (source "lookup"): record it by
 * its status.  The one mapping of a Refund's status to "RefundStatus" for
 * the worker: succeeded is Completed, failed and canceled are Failed,
 * anything else (pending, requires_action) stays Processing; the Refund id
 * is stored sealed either way.
 */
void
pe_outbox_record_refund(OutboxItem *item, Outcome *o, JsonbContainer *re, const char *source)
{
	char	   *id = pe_jb_text(re, "id");
	char	   *status = pe_jb_text(re, "status");
	int			rstatus;

	if (id == NULL || status == NULL)
	{
		o->cls = OUTCOME_RETRY;
		o->last_error = pstrdup("answer without a Refund id and status");
		return;
	}
	rstatus = pe_refund_status_from_stripe(status);
	if (rstatus == PE_REFUND_FAILED)
	{
		char	   *why = pe_jb_text(re, "failure_reason");

		o->last_error = psprintf("refund %s (%s)", status,
								 why ? pe_scrub(why, 60) : "no reason");
	}
	else if (rstatus != PE_REFUND_COMPLETED)
	{
		/* pending, requires_action, or a status this code does not know */
		rstatus = PE_REFUND_PROCESSING;
		o->last_error = psprintf("refund %s", pe_scrub(status, 60));
	}
	pe_refund_state_report(&item->refund_id, status, source);
	pe_stripe_ref_add(id, "refund", &item->payment_id, &item->refund_id);
	if (!pe_refund_set(&item->refund_id, rstatus,
					   pe_outcome_seal(id, "PaymentRefunds", "EncryptedStripeRefundId", &item->refund_id),
					   true))
		o->last_error = psprintf("refund %s, but the refund was no longer Processing",
								 pe_scrub(status, 60));
	explicit_bzero(id, strlen(id));
}

/*
 * A refund lookup found no refund of ours among all of the PaymentIntent's
 * refunds: Stripe never executed the refund.create (it never reached
 * Stripe, or Stripe refused it before executing).  Send the same request
 * again, resealed for a new idempotency key pe-<refund id>-re-<n> (Stripe
 * may have forgotten the old key, and reusing it after that would be a
 * blind resend): the money is asked for once, since every earlier
 * refund.create of the refund is dead and never sent again.
 */
static void
refund_recreate(OutboxItem *item, Outcome *o)
{
	char	   *rid = pe_uuid_text(&item->refund_id);
	Datum		args[4];
	bool		isnull;
	char	   *request;
	char	   *old_key;
	char	   *new_key;
	int64		n;
	int			rc;

	args[0] = UUIDPGetDatum(&item->payment_id);
	args[1] = UUIDPGetDatum(&item->refund_id);
	rc = SPI_execute_plan(pe_plan(&refund_create_row_plan), args, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "looking up the refund's request failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
	{
		/* the settler looks up only refunds that had a refund.create */
		o->last_error = pstrdup("no refund at Stripe, and no refund.create request to send again");
		return;
	}
	request = TextDatumGetCString(pe_spi_getdatum(0, 1, &isnull));
	old_key = TextDatumGetCString(pe_spi_getdatum(0, 2, &isnull));
	n = DatumGetInt64(pe_spi_getdatum(0, 3, &isnull));
	new_key = psprintf("pe-%s-re-" INT64_FORMAT, rid, n + 1);

	args[2] = CStringGetTextDatum(pe_reseal_request(request, old_key, new_key));
	args[3] = CStringGetTextDatum(new_key);
	if (pe_outcome_exec(&refund_recreate_plan, args, NULL) == 0)
		o->last_error = pstrdup("no refund at Stripe, but the refund is no longer Processing or has a request on its way: nothing sent again");
	else
		o->last_error = psprintf("no refund at Stripe: the refund is sent again with a new idempotency key (%s)",
								 new_key);
}

/*
 * Ours is not on this page of the PaymentIntent's refunds: queue the
 * lookup of the next page, after last_id (sealed for the new row's key).
 */
static void
refund_list_next_page(OutboxItem *item, Outcome *o, const char *last_id)
{
	char	   *rid = pe_uuid_text(&item->refund_id);
	Datum		uuid = DirectFunctionCall1(gen_random_uuid, (Datum) 0);
	char	   *key = psprintf("pe-%s-lookup-%s", rid, pe_uuid_text(DatumGetUUIDP(uuid)));
	Datum		args[4];

	args[0] = UUIDPGetDatum(&item->payment_id);
	args[1] = UUIDPGetDatum(&item->refund_id);
	args[2] = CStringGetTextDatum(pe_seal(last_id, pe_outbox_context("starting_after", key)));
	args[3] = CStringGetTextDatum(key);
	pe_outcome_exec(&refund_list_next_plan, args, NULL);
	o->last_error = pstrdup("the refund is not on this page of the PaymentIntent's refunds: looking at the next page");
}

/*
 * A refund lookup came back with a page of the PaymentIntent's refunds,
 * newest first: record ours (the one whose metadata.refund_id is our
 * refund's id; a succeeded one first, else a pending one, else the newest),
 * or look at the next page, or, when Stripe has none, send the refund again
 * (refund_recreate).
 */
void
pe_outbox_record_refund_list(OutboxItem *item, Outcome *o)
{
	JsonbContainer *data = pe_jb_array(&o->object->root, "data");
	char	   *rid = pe_uuid_text(&item->refund_id);
	char	   *has_more = pe_jb_text(&o->object->root, "has_more");
	JsonbContainer *best = NULL;
	int			best_rank = -1;
	long		best_created = -1;
	int			matches = 0;
	char	   *last_id = NULL;

	if (data == NULL)
	{
		o->cls = OUTCOME_RETRY;
		o->last_error = pstrdup("refund list answer without a data list");
		return;
	}
	{
		JsonbIterator *it = JsonbIteratorInit(data);
		JsonbContainer *re;

		while ((re = pe_jb_next_object(&it)) != NULL)
		{
			char	   *md_rid;
			char	   *st;
			char	   *cr;
			int			rank;
			long		created;

			if (last_id != NULL)
				explicit_bzero(last_id, strlen(last_id));
			last_id = pe_jb_text(re, "id");
			md_rid = pe_jb_text(pe_jb_object(re, "metadata"), "refund_id");
			if (md_rid == NULL || pg_strcasecmp(md_rid, rid) != 0)
				continue;		/* another refund of the same payment */
			matches++;
			st = pe_jb_text(re, "status");
			cr = pe_jb_text(re, "created");
			created = cr ? strtol(cr, NULL, 10) : 0;
			rank = st == NULL ? 0 :
				strcmp(st, "succeeded") == 0 ? 3 :
				(strcmp(st, "failed") == 0 || strcmp(st, "canceled") == 0) ? 1 : 2;
			if (rank > best_rank || (rank == best_rank && created > best_created))
			{
				best = re;
				best_rank = rank;
				best_created = created;
			}
		}
	}

	if (best != NULL)
	{
		pe_outbox_record_refund(item, o, best, "lookup");
		if (matches > 1)
		{
			/* a refund made twice at Stripe: money to get back by hand */
			o->last_error = psprintf("%s; %d refunds at Stripe carry this refund_id",
									 o->last_error ? o->last_error : "found", matches);
			ereport(WARNING,
					(errcode(ERRCODE_WARNING),
					 errmsg("payment_ext outbox worker: %d refunds at Stripe carry refund_id %s",
							matches, rid),
					 errhint("Compare the refunds of the payment in Stripe's Dashboard with \"PaymentRefunds\".")));
		}
	}
	else if (has_more != NULL && strcmp(has_more, "true") == 0 && last_id != NULL)
		refund_list_next_page(item, o, last_id);
	else if (has_more == NULL || strcmp(has_more, "false") != 0)
	{
		/* only a whole list, to its end, says "not at Stripe" */
		o->cls = OUTCOME_RETRY;
		o->last_error = pstrdup("refund list answer without has_more, or with more after no refund");
	}
	else
		refund_recreate(item, o);
	if (last_id != NULL)
		explicit_bzero(last_id, strlen(last_id));
}

/*
 * pe_outbox_record_unwanted
 *		A refund.unwanted came back with a Refund: the charge a payment does
 *		not keep is refunded, unless Stripe failed or canceled it; then the
 *		money is still the customer's to get back, and the row is dead, so
 *		that it stays visible.
 */
void
pe_outbox_record_unwanted(OutboxItem *item, Outcome *o)
{
	char	   *st = pe_jb_text(&o->object->root, "status");

	o->last_error = psprintf("refunded a charge the payment does not keep: refund %s",
							 st ? pe_scrub(st, 40) : "without a status");
	if (st == NULL || strcmp(st, "failed") == 0 || strcmp(st, "canceled") == 0)
	{
		o->cls = OUTCOME_DEAD;
		o->last_error = psprintf("Stripe did not refund a charge the payment does not keep (refund %s): return the money by hand",
								 st ? pe_scrub(st, 40) : "without a status");
	}
}
