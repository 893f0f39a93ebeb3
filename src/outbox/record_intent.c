/*-------------------------------------------------------------------------
 *
 * record_intent.c
 *		The outbox worker's recording of the answers about PaymentIntents:
 *		payment_intent.create, .retrieve, .search and .cancel, in the
 *		payment tables (through stripe/ledger.c) and the outbox.
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
 *		src/outbox/record_intent.c
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
#include "base/spi.h"
#include "base/status.h"
#include "base/text.h"
#include "outbox/outbox_int.h"
#include "stripe/stripe.h"
#include "vault/vault.h"

/* ---------------------------------------------------------------------------
 * SPI plans (@S@: the schema of the spec's tables)
 * ---------------------------------------------------------------------------
 */
/*
 * issue 17 item 3: an empty search says "nothing was charged" only when no
 * create request of the payment is on its way, and each one that may have
 * reached Stripe was given up (or answered) more than payment_ext.search_lag
 * ago: Stripe's search index lags, most of all during its incidents.
 */
static PePlan search_too_early_plan = {
	"SELECT EXISTS (SELECT 1 FROM payment.outbox c WHERE c.payment_id = $1"
	" AND c.kind = 'payment_intent.create'"
	" AND (c.state IN ('pending', 'sending')"
	"      OR (c.key_sent_at IS NOT NULL AND (c.completed_at IS NULL"
	"          OR c.completed_at > pg_catalog.now() - $2 * interval '1 second'))))",
	2, {UUIDOID, INT4OID}, NULL, 0
};
static PePlan expired_plan = {
	"SELECT \"CreatedAt\" < pg_catalog.now() - $2 * interval '1 second'"
	" FROM @S@.\"Payments\" WHERE \"Id\" = $1 AND \"Status\" = 0",
	2, {UUIDOID, INT4OID}, NULL, 0
};
static PePlan cancel_enqueue_plan = {
	"INSERT INTO payment.outbox (kind, payment_id, request, idempotency_key)"
	" VALUES ('payment_intent.cancel', $1,"
	" '{\"cancellation_reason\": \"abandoned\"}', 'pe-' || $1 || '-cancel-' || $2)"
	" ON CONFLICT (idempotency_key) DO NOTHING",
	2, {UUIDOID, INT8OID}, NULL, 0
};

/* A withdrawn create that Stripe had executed: search for its PaymentIntent */
static PePlan withdrawn_search_plan = {
	"INSERT INTO payment.outbox (kind, payment_id, request, idempotency_key)"
	" VALUES ('payment_intent.search', $1, pg_catalog.jsonb_build_object('query',"
	"  pg_catalog.format('metadata[''payment_id'']:''%s''', $1)),"
	"  'pe-' || $1 || '-withdrawn-lookup-' || $2)"
	" ON CONFLICT (idempotency_key) DO NOTHING",
	2, {UUIDOID, INT8OID}, NULL, 0
};
/* A cancel refused because the PaymentIntent finished: look it up instead */
static PePlan cancel_retrieve_plan = {
	"INSERT INTO payment.outbox (kind, payment_id, request, idempotency_key)"
	" VALUES ('payment_intent.retrieve', $1, $2::jsonb - 'cancellation_reason', $3)"
	" ON CONFLICT (idempotency_key) DO NOTHING",
	3, {UUIDOID, TEXTOID, TEXTOID}, NULL, 0
};

/* ---------------------------------------------------------------------------
 * Answers with a PaymentIntent
 * ---------------------------------------------------------------------------
 */

/* Is item the search that looks for a withdrawn create's PaymentIntent? */
static bool
withdrawn_lookup(OutboxItem *item)
{
	return item->kind == OUTBOX_PI_SEARCH && item->idempotency_key != NULL &&
		strstr(item->idempotency_key, "-withdrawn-lookup-") != NULL;
}

/*
 * A current PaymentIntent succeeded, but its payment was no longer Pending:
 * a paid payment keeps it (it is its charge); a Failed one whose
 * registration has no other live payment takes it (Failed -> Pending ->
 * Completed, as the webhook does); any other is refunded.
 */
static void
charged_not_pending(OutboxItem *item, Outcome *o, const char *id, const char *sealed_id)
{
	int			pstatus;
	pg_uuid_t	reg;

	pe_intent_current(&item->payment_id, id, 0, &pstatus, &reg);
	if (pstatus == PE_PAYMENT_COMPLETED || pstatus == PE_PAYMENT_PARTIALLY_REFUNDED ||
		pstatus == PE_PAYMENT_REFUNDED)
	{
		o->last_error = psprintf("succeeded; the payment is already %s",
								 pe_payment_status_name(pstatus));
		return;
	}
	if (pstatus == PE_PAYMENT_FAILED &&
		!pe_registration_other_live(&reg, &item->payment_id) &&
		pe_payment_reopen(&item->payment_id) &&
		pe_payment_complete(&item->payment_id, sealed_id))
	{
		o->last_error = pstrdup("succeeded after the payment was Failed: Failed -> Pending -> Completed (its registration had no other live payment)");
		return;
	}
	o->last_error = psprintf("succeeded, but the payment is %s: %s",
							 pstatus >= 0 ? pe_payment_status_name(pstatus) : "gone",
							 pe_outbox_undo_intent(&item->payment_id, id, "succeeded",
												   "the payment was no longer Pending"));
}

/*
 * A lookup (retrieve, search) found the PaymentIntent of a payment that is
 * still Pending, not finished at Stripe either: when the payment is older
 * than payment_ext.pending_ttl, queue the cancellation that expires it.
 */
static void
settle_expire_if_old(OutboxItem *item, Outcome *o, const char *status)
{
	Datum		args[2];
	bool		isnull;
	int			rc;

	if (strcmp(status, "processing") == 0)
		return;					/* Stripe is still at it: look again later */
	args[0] = UUIDPGetDatum(&item->payment_id);
	args[1] = Int32GetDatum(pe_pending_ttl);
	rc = SPI_execute_plan(pe_plan(&expired_plan), args, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "checking a payment's age failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0 || !DatumGetBool(pe_spi_getdatum(0, 1, &isnull)))
		return;
	args[1] = Int64GetDatum(item->id);
	pe_outcome_exec(&cancel_enqueue_plan, args, NULL);
	o->last_error = psprintf("PaymentIntent %s past payment_ext.pending_ttl: canceling it", status);
}

/*
 * pe_outbox_record_intent
 *		A PaymentIntent came back, pi (the answer to item, or found by a
 *		search): record it by its status.
 */
void
pe_outbox_record_intent(OutboxItem *item, Outcome *o, JsonbContainer *pi)
{
	char	   *id = pe_jb_text(pi, "id");
	char	   *status = pe_jb_text(pi, "status");
	char	   *secret = pe_jb_text(pi, "client_secret");
	char	   *sealed_id;
	int			pstatus = -1;
	pg_uuid_t	reg;

	if (id == NULL || status == NULL)
	{
		o->cls = OUTCOME_RETRY;
		o->last_error = pstrdup("answer without a PaymentIntent id and status");
		return;
	}

	/*
	 * The same check as the webhook's (pe_pi_mismatch): a PaymentIntent for
	 * another payment, amount or currency is never stored for this payment
	 * (its client secret would let the customer pay it) nor completes it;
	 * the difference is recorded and shown by payment.reconcile.
	 */
	if (o->has_payment)
	{
		char	   *why;
		const char *mismatch = pe_pi_mismatch(pi, &item->payment_id, o->payment.amount_minor,
											  o->payment.currency, &why);

		if (mismatch != NULL)
		{
			pe_pi_mismatch_record(&item->payment_id, mismatch, why,
								  item->kind == OUTBOX_PI_RETRIEVE ||
								  item->kind == OUTBOX_PI_SEARCH ? "lookup" : "response");
			o->last_error = psprintf("PaymentIntent %s does not match the payment: %s; not recorded for it (see payment.reconcile)",
									 pe_scrub(status, 40), why);
			if (secret != NULL)
				explicit_bzero(secret, strlen(secret));
			explicit_bzero(id, strlen(id));
			return;
		}
	}

	/*
	 * A PaymentIntent of an earlier attempt (payment.retry made a newer one),
	 * or other than the one the payment keeps: it changes nothing of the
	 * payment; it is canceled, or refunded when it was charged.
	 */
	{
		int			attempt = pe_intent_attempt(pi);

		if (attempt == 0 && item->kind == OUTBOX_PI_CREATE)
			attempt = pe_intent_key_attempt(item->idempotency_key);
		if (!pe_intent_current(&item->payment_id, id, attempt, &pstatus, &reg))
		{
			pe_stripe_ref_add(id, "payment_intent", &item->payment_id, NULL);
			o->last_error = psprintf("PaymentIntent %s is not the payment's current one: %s",
									 pe_scrub(status, 40),
									 pe_outbox_undo_intent(&item->payment_id, id, status,
														   "a PaymentIntent of an earlier attempt"));
			explicit_bzero(id, strlen(id));
			return;
		}
	}
	sealed_id = pe_outcome_seal(id, "Payments", "EncryptedStripePaymentIntentId", &item->payment_id);

	/*
	 * What the application and the settler need: status, next action,
	 * client secret.  A charge of a Failed payment whose registration has
	 * another live payment is refunded (charged_not_pending): the payment
	 * does not keep it, so it is not the payment's state at Stripe either
	 * (else payment.reconcile would list a payment that agrees with Stripe).
	 */
	if (!(strcmp(status, "succeeded") == 0 && pstatus == PE_PAYMENT_FAILED &&
		  pe_registration_other_live(&reg, &item->payment_id)))
		pe_intent_report(&item->payment_id, pi, status,
						 secret != NULL ?
						 pe_outcome_seal(secret, "payment.intents", "client_secret", &item->payment_id) :
						 NULL,
						 item->kind == OUTBOX_PI_RETRIEVE ||
						 item->kind == OUTBOX_PI_SEARCH ? "lookup" : "response");
	if (secret != NULL)
		explicit_bzero(secret, strlen(secret));
	pe_stripe_ref_add(id, "payment_intent", &item->payment_id, NULL);
	pe_stripe_ref_add(pe_jb_text(pi, "latest_charge"), "charge", &item->payment_id, NULL);

	if (strcmp(status, "succeeded") == 0)
	{
		if (!pe_payment_complete(&item->payment_id, sealed_id))
			charged_not_pending(item, o, id, sealed_id);
	}
	else if (strcmp(status, "canceled") == 0)
	{
		char	   *reason = pe_jb_text(pi, "cancellation_reason");

		pe_payment_store_intent(&item->payment_id, sealed_id, true);
		o->last_error = pe_cancel_message(reason);
		/* the settler's own cancellation expires the payment */
		pe_outcome_payment_failed(item, o,
							  item->kind == OUTBOX_PI_CANCEL ? "expired" :
							  pe_cancel_failure_code(reason),
							  o->last_error);
	}
	else
	{
		/* requires_action, requires_payment_method, processing, ...: Pending */
		if (!pe_payment_store_intent(&item->payment_id, sealed_id, true) &&
			(item->kind == OUTBOX_PI_CREATE || withdrawn_lookup(item)))
		{
			/* made for a payment that is no longer Pending: never charged */
			o->last_error = psprintf("PaymentIntent %s, but the payment is no longer Pending: %s",
									 pe_scrub(status, 40),
									 pe_outbox_undo_intent(&item->payment_id, id, status,
														   "the payment was no longer Pending"));
			explicit_bzero(id, strlen(id));
			return;
		}
		o->last_error = psprintf("PaymentIntent %s", status);
		if (item->kind == OUTBOX_PI_RETRIEVE || item->kind == OUTBOX_PI_SEARCH)
			settle_expire_if_old(item, o, status);
	}
	explicit_bzero(id, strlen(id));
}

/*
 * A search by metadata[payment_id] came back: record the PaymentIntent it
 * found (a succeeded one first, else the newest), or, when Stripe has none,
 * expire the payment: nothing was ever charged for it.
 */
void
pe_outbox_record_search(OutboxItem *item, Outcome *o)
{
	JsonbValue *v = getKeyJsonValueFromContainer(&o->object->root, "data", 4, NULL);
	JsonbContainer *best = NULL;
	long		best_created = -1;
	bool		best_succeeded = false;
	int			undone = 0;

	if (v == NULL || v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data))
	{
		o->cls = OUTCOME_RETRY;
		o->last_error = pstrdup("search answer without a data list");
		return;
	}
	{
		JsonbIterator *it = JsonbIteratorInit(v->val.binary.data);
		JsonbContainer *pi;

		while ((pi = pe_jb_next_object(&it)) != NULL)
		{
			char	   *st;
			char	   *cr;
			char	   *md_pid;
			long		created;
			bool		succeeded;

			md_pid = pe_jb_text(pe_jb_object(pi, "metadata"), "payment_id");
			if (md_pid == NULL ||
				pg_strcasecmp(md_pid, pe_uuid_text(&item->payment_id)) != 0)
				continue;		/* not ours after all */
			st = pe_jb_text(pi, "status");
			{
				char	   *pi_id = pe_jb_text(pi, "id");
				int			pstatus;

				if (pi_id != NULL && st != NULL &&
					!pe_intent_current(&item->payment_id, pi_id, pe_intent_attempt(pi), &pstatus, NULL))
				{
					/* an earlier attempt's: undone, never recorded as the payment's */
					pe_stripe_ref_add(pi_id, "payment_intent", &item->payment_id, NULL);
					pe_outbox_undo_intent(&item->payment_id, pi_id, st,
										  "a PaymentIntent of an earlier attempt");
					explicit_bzero(pi_id, strlen(pi_id));
					undone++;
					continue;
				}
			}
			cr = pe_jb_text(pi, "created");
			created = cr ? strtol(cr, NULL, 10) : 0;
			succeeded = st != NULL && strcmp(st, "succeeded") == 0;
			if (best == NULL || (succeeded && !best_succeeded) ||
				(succeeded == best_succeeded && created > best_created))
			{
				best = pi;
				best_created = created;
				best_succeeded = succeeded;
			}
		}
	}
	if (best != NULL)
	{
		pe_outbox_record_intent(item, o, best);
		return;
	}
	if (withdrawn_lookup(item))
	{
		/* Stripe executed the withdrawn create: its PaymentIntent exists */
		if (undone == 0)
		{
			o->cls = OUTCOME_RETRY;
			o->last_error = pstrdup("the withdrawn create's PaymentIntent is not in Stripe's search yet (its index lags): searching again");
		}
		else
			o->last_error = psprintf("%d PaymentIntent(s) of earlier attempts found and undone", undone);
		return;
	}
	{
		Datum		args[2];
		bool		isnull;
		int			rc;

		args[0] = UUIDPGetDatum(&item->payment_id);
		args[1] = Int32GetDatum(pe_search_lag);
		rc = SPI_execute_plan(pe_plan(&search_too_early_plan), args, NULL, true, 1);
		if (rc != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "checking the payment's create requests failed: %s",
				 SPI_result_code_string(rc));
		if (DatumGetBool(pe_spi_getdatum(0, 1, &isnull)))
		{
			o->last_error = pstrdup("no PaymentIntent found yet, but a create request may have reached Stripe within payment_ext.search_lag (or is on its way): the payment stays Pending and is looked up again later");
			return;
		}
	}
	o->last_error = pstrdup("no PaymentIntent at Stripe: the payment expires");
	pe_outcome_payment_failed(item, o, "expired",
						  "No PaymentIntent was found at Stripe for this payment; nothing was charged.");
}

/* ---------------------------------------------------------------------------
 * Refusals
 * ---------------------------------------------------------------------------
 */

/*
 * pe_outbox_create_refused
 *		Stripe refused a payment_intent.create for good (o, a 4xx): the
 *		payment fails with Stripe's decline code, unless the request was of
 *		an earlier attempt (payment.retry made a newer one) or was withdrawn
 *		(the payment no longer wanted it: its refusal with idempotency_error
 *		says Stripe executed the original, whose PaymentIntent is then
 *		searched for and undone).
 */
void
pe_outbox_create_refused(OutboxItem *item, Outcome *o)
{
	int			attempt;
	int			current;

	if (item->withdrawn)
	{
		if (o->err_type && strcmp(o->err_type, "idempotency_error") == 0)
		{
			Datum		args[2];

			/* Stripe made its PaymentIntent: find it and undo it */
			args[0] = UUIDPGetDatum(&item->payment_id);
			args[1] = Int64GetDatum(item->id);
			pe_outcome_exec(&withdrawn_search_plan, args, NULL);
			o->last_error = pstrdup("withdrawn create: Stripe had executed it, so its PaymentIntent is searched for and canceled or refunded");
		}
		return;					/* never fails the payment */
	}
	attempt = pe_intent_key_attempt(item->idempotency_key);
	current = pe_intent_current_attempt(&item->payment_id);
	if (attempt > 0 && current > 0 && attempt != current)
	{
		/* an earlier attempt's refusal: the payment is not changed */
		o->last_error = psprintf("%s (an earlier attempt: the payment is not changed)",
								 o->last_error ? o->last_error : "refused");
		return;
	}
	pe_outcome_payment_failed(item, o,
							  o->err_decline ? o->err_decline :
							  o->err_code ? o->err_code :
							  o->err_type ? o->err_type : psprintf("http_%d", o->http_status),
							  o->err_message && o->err_message[0] ? o->err_message :
							  psprintf("Stripe answered HTTP %d", o->http_status));
}

/*
 * A cancellation of a PaymentIntent the payment does not keep (or of a
 * payment resolved to Failed) came too late: Stripe finished the
 * PaymentIntent (canceled, or charged: then it must be refunded).  Look it
 * up; the answer is recorded like any other (pe_outbox_record_intent).
 */
static void
cancel_then_retrieve(OutboxItem *item, Outcome *o)
{
	Datum		args[3];
	char	   *key = psprintf("%s-retrieve", item->idempotency_key);
	char	   *request = pe_outcome_request_text(item->id);

	args[0] = UUIDPGetDatum(&item->payment_id);
	args[1] = CStringGetTextDatum(pe_reseal_request(request, item->idempotency_key, key));
	args[2] = CStringGetTextDatum(key);
	pe_outcome_exec(&cancel_retrieve_plan, args, NULL);
	o->last_error = psprintf("%s: the PaymentIntent is looked up instead",
							 o->last_error ? o->last_error : "too late to cancel");
}

/*
 * pe_outbox_cancel_refused
 *		Stripe refused a payment_intent.cancel for good: one of a
 *		PaymentIntent the payment does not keep, or of a payment resolved to
 *		Failed, that came too late (payment_intent_unexpected_state) is
 *		looked up instead (cancel_then_retrieve); any other is dead, for a
 *		human to look at.
 */
void
pe_outbox_cancel_refused(OutboxItem *item, Outcome *o)
{
	if (o->err_code != NULL && strcmp(o->err_code, "payment_intent_unexpected_state") == 0 &&
		(strstr(item->idempotency_key, "-unwanted-cancel-") != NULL ||
		 strstr(item->idempotency_key, "-cancel-resolve-") != NULL))
		cancel_then_retrieve(item, o);
	else
		o->cls = OUTCOME_DEAD;
}
