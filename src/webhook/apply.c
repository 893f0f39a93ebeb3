/*-------------------------------------------------------------------------
 *
 * apply.c
 *		Apply one verified Stripe event to the payment tables, through the
 *		same triggers (state machine, refund rules, audit) as every other
 *		writer, and by the same writes as the outbox worker's outcomes
 *		(stripe/ledger.c).
 *
 * Which payment an event concerns: metadata.payment_id of the object (every
 * PaymentIntent and refund this extension creates carries it), else the
 * digest of the PaymentIntent, charge or refund id (payment.stripe_refs).
 *
 * Invariants:
 *	- Runs inside pe_handle_webhook's transaction, connected to SPI, as the
 *	  function's owner (SECURITY DEFINER).  Every write happens there, so an
 *	  event applies whole or not at all.
 *	- Nothing moves a payment backwards: an event that the state machine
 *	  would refuse is recorded as "ignored: ..." (or "conflict: ...", shown
 *	  by payment.reconcile) instead of raising, so Stripe is not made to
 *	  redeliver what can never apply.
 *	- Stripe ids are stored only sealed (or as a SHA-256 digest), and never
 *	  appear in an outcome, a message or a log line.
 *
 * IDENTIFICATION
 *		src/webhook/apply.c
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
#include "base/security.h"
#include "base/spi.h"
#include "base/status.h"
#include "base/text.h"
#include "rules/rules.h"
#include "stripe/stripe.h"
#include "vault/vault.h"
#include "webhook/webhook_int.h"

/* Longest "FailureCode" ("PaymentFailures"."FailureCode" is varchar(50)) */
#define APPLY_CODE_MAX			50

/* ---------------------------------------------------------------------------
 * SPI plans (@S@: the schema of the spec's tables)
 * ---------------------------------------------------------------------------
 */
static PePlan refund_get_plan = {
	"SELECT \"RefundStatus\", \"OriginalPaymentId\" FROM @S@.\"PaymentRefunds\" WHERE \"Id\" = $1",
	1, {UUIDOID}, NULL, 0
};
static PePlan refund_insert_plan = {
	"INSERT INTO @S@.\"PaymentRefunds\" (\"Id\", \"OriginalPaymentId\", \"RefundAmountValue\","
	" \"RefundCurrency\", \"RefundReason\", \"RefundStatus\", \"EncryptedStripeRefundId\","
	" \"ProcessedByUserId\", \"Metadata\")"
	" VALUES ($1, $2, ($3::numeric / 100)::numeric(10,2), pg_catalog.upper($4), $5, 0, $6, $7,"
	" pg_catalog.jsonb_build_object('source', 'stripe_dashboard', 'stripe_event', $8::text))",
	8, {UUIDOID, UUIDOID, INT8OID, TEXTOID, TEXTOID, TEXTOID, UUIDOID, TEXTOID}, NULL, 0
};
static PePlan user_exists_plan = {
	"SELECT 1 FROM ONLY @S@.\"Users\" WHERE \"Id\" OPERATOR(pg_catalog.=) $1",
	1, {UUIDOID}, NULL, 0
};
static PePlan dispute_upsert_plan = {
	"INSERT INTO payment.disputes AS d (id, digest, stripe_dispute_id, payment_id, amount,"
	" currency, reason, status, opened_at, closed_at)"
	" VALUES ($1, $2, $3, $4, ($5::numeric / 100)::numeric(10,2), pg_catalog.upper($6), $7, $8,"
	" pg_catalog.to_timestamp($9), CASE WHEN $10 THEN pg_catalog.now() END)"
	" ON CONFLICT (digest) DO UPDATE SET"
	" amount = EXCLUDED.amount, reason = EXCLUDED.reason,"
	" status = EXCLUDED.status, closed_at = COALESCE(d.closed_at, EXCLUDED.closed_at),"
	" updated_at = pg_catalog.now()"
	" WHERE d.status NOT IN ('won', 'lost', 'warning_closed')"
	"    OR EXCLUDED.status IN ('won', 'lost', 'warning_closed')",
	10, {UUIDOID, BYTEAOID, TEXTOID, UUIDOID, INT8OID, TEXTOID, TEXTOID, TEXTOID, FLOAT8OID, BOOLOID},
	NULL, 0
};

/* ---------------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------------
 */

static uint64
apply_exec(PePlan *p, Datum *args, const char *nulls)
{
	return pe_spi_run(p, args, nulls, false, 0, "applying a webhook event");
}

/* The sealed form of a Stripe id for column table.column of row id. */
static char *
seal_for(const char *value, const char *table, const char *column, const pg_uuid_t *id)
{
	return pe_seal(value, pe_vault_context(table, column, pe_uuid_text(id)));
}

/*
 * Find and lock the payment an object concerns: its metadata.payment_id,
 * else the digest of one of the given Stripe ids.  Sets ev->payment_id.
 */
static bool
payment_find(WebhookEvent *ev, JsonbContainer *obj, const char *id1,
			 const char *id2, PePaymentRow *row)
{
	JsonbContainer *md = pe_jb_object(obj, "metadata");
	char	   *pid = pe_jb_text(md, "payment_id");
	pg_uuid_t	u;

	if (pid != NULL && pe_parse_uuid(pid, &u) && pe_payment_lock(&u, row))
	{
		ev->payment_id = u;
		ev->has_payment = true;
		return true;
	}
	if ((pe_stripe_ref_find(id1, &u, NULL, NULL) || pe_stripe_ref_find(id2, &u, NULL, NULL)) &&
		pe_payment_lock(&u, row))
	{
		ev->payment_id = u;
		ev->has_payment = true;
		return true;
	}
	return false;
}

/*
 * A "PaymentFailures" row for payment id from webhook event event_id, then
 * Failed.  False if not Pending.
 */
static bool
payment_fail(const pg_uuid_t *id, const char *code, const char *message,
			 const char *type, const char *decline, const char *event_id)
{
	StringInfoData details;

	initStringInfo(&details);
	appendStringInfoChar(&details, '{');
	pe_json_field(&details, "source", "webhook");
	pe_json_field(&details, "event", event_id);
	pe_json_field(&details, "type", type);
	pe_json_field(&details, "code", code);
	pe_json_field(&details, "decline_code", decline);
	appendStringInfoChar(&details, '}');
	return pe_payment_fail(id, code, message, details.data, 0);
}

/* ---------------------------------------------------------------------------
 * payment_intent.*
 * ---------------------------------------------------------------------------
 */
static void
apply_payment_intent(WebhookEvent *ev)
{
	JsonbContainer *pi = ev->object;
	char	   *pi_id = pe_jb_text(pi, "id");
	char	   *status = pe_jb_text(pi, "status");
	char	   *charge = pe_jb_text(pi, "latest_charge");
	const char *what = ev->type + strlen("payment_intent.");
	PePaymentRow row;
	const char *from;
	char	   *sealed_pi;
	int			pstatus;

	ev->object_status = status;
	if (!pe_stripe_id_ok(pi_id) || status == NULL)
	{
		ev->outcome = "ignored: the event holds no PaymentIntent";
		return;
	}
	if (!payment_find(ev, pi, pi_id, NULL, &row))
	{
		ev->outcome = "ignored: no payment for this PaymentIntent";
		return;
	}
	from = pe_payment_status_name(row.status);
	pe_stripe_ref_add(pi_id, "payment_intent", &ev->payment_id, NULL);
	pe_stripe_ref_add(charge, "charge", &ev->payment_id, NULL);
	if (row.status == PE_PAYMENT_NOT_REQUIRED)
	{
		ev->outcome = "ignored: the payment is NotRequired";
		return;
	}
	if (!pe_intent_current(&ev->payment_id, pi_id, pe_intent_attempt(pi), &pstatus, NULL))
	{
		/* an earlier attempt's: never the payment's state (issue 17, item 2) */
		const char *done = pe_outbox_undo_intent(&ev->payment_id, pi_id, status,
												 "a PaymentIntent of an earlier attempt");

		ev->applied = strcmp(status, "succeeded") == 0;
		ev->outcome = psprintf("ignored: a PaymentIntent of an earlier attempt of the payment (%s); %s",
							   pe_scrub(status, 40), done);
		return;
	}
	/*
	 * A success for a Failed payment is reported below, once it is known
	 * that the payment keeps the charge: one it does not keep (refunded as
	 * refund.unwanted) is not the payment's state at Stripe.
	 */
	if (strcmp(what, "succeeded") != 0 || row.status != PE_PAYMENT_FAILED)
		pe_intent_report(&ev->payment_id, pi, status, NULL, "webhook");
	sealed_pi = seal_for(pi_id, "Payments", "EncryptedStripePaymentIntentId", &ev->payment_id);

	if (strcmp(what, "succeeded") == 0)
	{
		char	   *why;
		const char *mismatch = pe_pi_mismatch(pi, &ev->payment_id, row.amount_minor,
											  row.currency, &why);

		if (mismatch != NULL)
		{
			if (row.status == PE_PAYMENT_FAILED)
				pe_intent_report(&ev->payment_id, pi, status, NULL, "webhook");
			pe_pi_mismatch_record(&ev->payment_id, mismatch, why, "webhook");
			ev->outcome = psprintf("conflict: %s; the payment stays %s (see payment.reconcile)",
								   why, from);
			return;
		}
		switch (row.status)
		{
			case PE_PAYMENT_PENDING:
				pe_payment_complete(&ev->payment_id, sealed_pi);
				ev->applied = true;
				ev->outcome = "applied: Pending -> Completed";
				break;
			case PE_PAYMENT_FAILED:
				{
					/*
					 * The customer paid after a failed attempt (Stripe.js can
					 * confirm the same PaymentIntent again): Failed -> Pending
					 * -> Completed, both allowed moves, unless the
					 * registration has another live payment by now.
					 */
					if (pe_registration_other_live(&row.registration, &ev->payment_id))
					{
						/* never two charges for one registration (issue 17, item 1) */
						ev->outcome = psprintf("conflict: Stripe charged a Failed payment whose registration has another live payment; %s",
											   pe_outbox_undo_intent(&ev->payment_id, pi_id, status,
																	 "its registration has another live payment"));
						ev->applied = true;
						return;
					}
					pe_intent_report(&ev->payment_id, pi, status, NULL, "webhook");
					pe_payment_reopen(&ev->payment_id);
					pe_payment_complete(&ev->payment_id, sealed_pi);
					ev->applied = true;
					ev->outcome = "applied: Failed -> Pending -> Completed (charged after a failed attempt)";
				}
				break;
			default:
				ev->outcome = psprintf("no change: the payment is already %s", from);
				break;
		}
	}
	else if (strcmp(what, "payment_failed") == 0 || strcmp(what, "canceled") == 0)
	{
		bool		canceled = (strcmp(what, "canceled") == 0);
		JsonbContainer *err = pe_jb_object(pi, "last_payment_error");
		const char *code;
		char	   *message;
		char	   *decline = pe_jb_text(err, "decline_code");
		char	   *ecode = pe_jb_text(err, "code");

		if (row.status != PE_PAYMENT_PENDING)
		{
			ev->outcome = psprintf("ignored: the payment is %s; a %s never moves it backwards",
								   from, canceled ? "cancellation" : "failure");
			return;
		}
		if (canceled)
		{
			char	   *reason = pe_jb_text(pi, "cancellation_reason");

			code = pe_cancel_failure_code(reason);
			message = pe_cancel_message(reason);
		}
		else
		{
			char	   *msg = pe_jb_text(err, "message");

			code = decline ? decline : ecode ? ecode : "payment_failed";
			message = msg && msg[0] ? pe_scrub(msg, 500) : pstrdup("payment failed");
		}
		payment_fail(&ev->payment_id, code, message, pe_jb_text(err, "type"), decline, ev->id);
		if (!row.has_pi)
			pe_payment_store_intent(&ev->payment_id, sealed_pi, false);
		ev->applied = true;
		ev->outcome = psprintf("applied: Pending -> Failed (%s)", pe_clip_chars(code, APPLY_CODE_MAX));
	}
	else
	{
		/* requires_action, processing, created, ...: the payment stays Pending */
		if (row.status == PE_PAYMENT_PENDING && !row.has_pi &&
			pe_payment_store_intent(&ev->payment_id, sealed_pi, false))
			ev->applied = true;
		ev->outcome = psprintf("recorded: PaymentIntent %s; the payment stays %s",
							   pe_scrub(status, 40), from);
	}
}

/* ---------------------------------------------------------------------------
 * refunds
 * ---------------------------------------------------------------------------
 */

/* The user that Dashboard refunds are processed by. */
static Datum
webhook_system_user(void)
{
	pg_uuid_t  *u = palloc(sizeof(pg_uuid_t));
	const char *id = (pe_system_user_id && pe_system_user_id[0]) ? pe_system_user_id : PE_SYSTEM_USER_ID;
	Datum		arg;

	if (!pe_parse_uuid(id, u))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("payment_ext.system_user_id is not a uuid")));
	arg = UUIDPGetDatum(u);
	pe_check_app_table(pe_extension_namespace(), "Users");
	if (SPI_execute_plan(pe_plan(&user_exists_plan), &arg, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "looking up the system user failed");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the user that records refunds made in Stripe's Dashboard does not exist"),
				 errhint("Set payment_ext.system_user_id to a user of \"Users\"; Stripe delivers the event again.")));
	return arg;
}

/* Apply one Stripe refund object; returns what it did. */
static char *
apply_refund_object(WebhookEvent *ev, JsonbContainer *re)
{
	char	   *re_id = pe_jb_text(re, "id");
	char	   *status = pe_jb_text(re, "status");
	char	   *pi_id = pe_jb_text(re, "payment_intent");
	char	   *charge = pe_jb_text(re, "charge");
	JsonbContainer *md = pe_jb_object(re, "metadata");
	char	   *rid_text = pe_jb_text(md, "refund_id");
	int			target = pe_refund_status_from_stripe(status);
	pg_uuid_t	rid;
	bool		have = false;
	Datum		args[8];
	bool		isnull;
	int			cur = -1;
	PePaymentRow row;

	ev->object_status = status;
	if (!pe_stripe_id_ok(re_id) || target < 0)
		return "ignored: the event holds no refund with a known status";

	if (rid_text != NULL && pe_parse_uuid(rid_text, &rid))
	{
		args[0] = UUIDPGetDatum(&rid);
		if (SPI_execute_plan(pe_plan(&refund_get_plan), args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "looking up a refund failed");
		have = SPI_processed > 0;
	}
	if (!have)
	{
		pg_uuid_t	pay;
		bool		has_refund = false;

		if (pe_stripe_ref_find(re_id, &pay, &rid, &has_refund) && has_refund)
		{
			args[0] = UUIDPGetDatum(&rid);
			if (SPI_execute_plan(pe_plan(&refund_get_plan), args, NULL, false, 1) != SPI_OK_SELECT)
				elog(ERROR, "looking up a refund failed");
			have = SPI_processed > 0;
		}
	}

	if (have)
	{
		const char *from;
		const char *to = pe_refund_status_name(target);

		cur = DatumGetInt32(pe_spi_getdatum(0, 1, &isnull));
		memcpy(&ev->payment_id, DatumGetUUIDP(pe_spi_getdatum(0, 2, &isnull)), UUID_LEN);
		ev->has_payment = true;
		ev->refund_id = rid;
		ev->has_refund = true;
		from = pe_refund_status_name(cur);
		pe_payment_lock(&ev->payment_id, &row);
		pe_stripe_ref_add(re_id, "refund", &ev->payment_id, &rid);

		pe_refund_state_report(&rid, status, "webhook");
		if (cur == PE_REFUND_PROCESSING)
		{
			if (pe_refund_set(&rid, target,
							  seal_for(re_id, "PaymentRefunds", "EncryptedStripeRefundId", &rid),
							  false))
				ev->applied = true;
			if (target == PE_REFUND_PROCESSING)
				return "no change: the refund stays Processing";
			return psprintf("applied: refund Processing -> %s", to);
		}
		if (cur == target)
			return psprintf("no change: the refund is already %s", from);
		return psprintf("ignored: the refund is %s and Stripe now says %s; a refund moves only once (see payment.reconcile)",
						from, pe_scrub(status, 40));
	}

	/* a refund we never asked for: made in Stripe's Dashboard */
	if (!payment_find(ev, re, pi_id, charge, &row))
		return "ignored: no payment for this refund";

	/*
	 * ... unless it refunds a charge the payment does not keep: the worker's
	 * refund.unwanted (metadata[unwanted]), or any refund of a PaymentIntent
	 * that is not the payment's current one.  Recording it as a refund of
	 * the payment would free the payment's amount while the charge it keeps
	 * stays paid (then a second payment for the registration is let in).
	 * One that Stripe failed leaves that charge paid: the refund.unwanted
	 * request becomes a dead letter, for an administrator.
	 */
	{
		char	   *unwanted = pe_jb_text(md, "unwanted");
		int			pstatus;

		if ((unwanted != NULL && strcmp(unwanted, "true") == 0) ||
			(pi_id != NULL && !pe_intent_current(&ev->payment_id, pi_id, 0, &pstatus, NULL)))
		{
			pe_stripe_ref_add(re_id, "refund", &ev->payment_id, NULL);
			if (target == PE_REFUND_FAILED)
				return pstrdup(pe_outbox_unwanted_refund_failed(&ev->payment_id, pi_id,
																pe_jb_text(re, "failure_reason")));
			return psprintf("ignored: a refund (%s) of a charge the payment does not keep (refund.unwanted, or an earlier attempt's); it is no refund of the payment",
							pe_scrub(status, 40));
		}
	}
	if (row.status == PE_PAYMENT_PENDING)
	{
		/*
		 * The refund overtook the payment's own success: raise, so that
		 * Stripe delivers it again after the payment has completed.
		 */
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("a refund event arrived for a payment that is still Pending"),
				 errdetail("The event is not recorded; Stripe delivers it again.")));
	}
	if (row.status != PE_PAYMENT_COMPLETED && row.status != PE_PAYMENT_PARTIALLY_REFUNDED &&
		row.status != PE_PAYMENT_REFUNDED)
		return psprintf("conflict: a refund made at Stripe for a %s payment (see payment.reconcile)",
						pe_payment_status_name(row.status));
	if (row.status == PE_PAYMENT_REFUNDED && target != PE_REFUND_FAILED)
		return "conflict: a refund made at Stripe for a payment the database has fully refunded";

	{
		int64		amount = pe_jb_amount(re, "amount");
		char	   *currency = pe_jb_text(re, "currency");
		char	   *reason = pe_jb_text(re, "reason");
		Datum		id = DirectFunctionCall1(gen_random_uuid, (Datum) 0);

		if (amount <= 0 || currency == NULL || pg_strcasecmp(currency, row.currency) != 0)
			return "conflict: a refund made at Stripe in another currency or without an amount";
		memcpy(&rid, DatumGetUUIDP(id), UUID_LEN);
		args[0] = id;
		args[1] = UUIDPGetDatum(&ev->payment_id);
		args[2] = Int64GetDatum(amount);
		args[3] = CStringGetTextDatum(currency);
		args[4] = CStringGetTextDatum(reason && (strcmp(reason, "duplicate") == 0 ||
												 strcmp(reason, "fraudulent") == 0 ||
												 strcmp(reason, "requested_by_customer") == 0) ?
									  psprintf("Refund made in the Stripe Dashboard (%s)", reason) :
									  "Refund made in the Stripe Dashboard");
		args[5] = CStringGetTextDatum(seal_for(re_id, "PaymentRefunds", "EncryptedStripeRefundId", &rid));
		args[6] = webhook_system_user();
		args[7] = CStringGetTextDatum(ev->id);
		apply_exec(&refund_insert_plan, args, NULL);
		ev->refund_id = rid;
		ev->has_refund = true;
		ev->applied = true;
		pe_stripe_ref_add(re_id, "refund", &ev->payment_id, &rid);

		pe_refund_state_report(&rid, status, "webhook");
		if (target != PE_REFUND_PROCESSING)
			pe_refund_set(&rid, target,
						  seal_for(re_id, "PaymentRefunds", "EncryptedStripeRefundId", &rid),
						  false);
		return psprintf("applied: a refund made at Stripe recorded as %s",
						pe_refund_status_name(target));
	}
}

static void
apply_refund(WebhookEvent *ev)
{
	ev->outcome = apply_refund_object(ev, ev->object);
}

/* charge.refunded: the amount refunded, and any refunds listed with it */
static void
apply_charge_refunded(WebhookEvent *ev)
{
	JsonbContainer *ch = ev->object;
	char	   *ch_id = pe_jb_text(ch, "id");
	char	   *pi_id = pe_jb_text(ch, "payment_intent");
	int64		refunded = pe_jb_amount(ch, "amount_refunded");
	JsonbContainer *refunds = pe_jb_object(ch, "refunds");
	JsonbContainer *list = pe_jb_array(refunds, "data");
	PePaymentRow row;
	StringInfoData out;
	int			pstatus;

	ev->object_status = pe_jb_text(ch, "status");
	if (!payment_find(ev, ch, pi_id, ch_id, &row))
	{
		ev->outcome = "ignored: no payment for this charge";
		return;
	}
	pe_stripe_ref_add(ch_id, "charge", &ev->payment_id, NULL);
	pe_stripe_ref_add(pi_id, "payment_intent", &ev->payment_id, NULL);
	initStringInfo(&out);

	/*
	 * Stripe's amount refunded is compared with the payment's refunds
	 * (payment.reconcile): only for the charge the payment keeps.  One it
	 * does not keep (a Failed payment's, an earlier attempt's) is refunded
	 * whole as refund.unwanted, which is no "PaymentRefunds" row.
	 */
	if (refunded >= 0 &&
		!((row.status == PE_PAYMENT_COMPLETED || row.status == PE_PAYMENT_PARTIALLY_REFUNDED ||
		   row.status == PE_PAYMENT_REFUNDED) &&
		  pe_intent_current(&ev->payment_id, pi_id, 0, &pstatus, NULL)))
		appendStringInfo(&out, "ignored: Stripe reports %s refunded of a charge the payment does not keep (it is %s)",
						 pe_minor_text(refunded), pe_payment_status_name(row.status));
	else if (refunded >= 0)
	{
		pe_intent_refunded(&ev->payment_id, refunded, ev->created);
		appendStringInfo(&out, "recorded: Stripe reports %s refunded", pe_minor_text(refunded));
	}
	else
		appendStringInfoString(&out, "recorded: no amount refunded in the event");

	/* API versions before 2022-11-15 list the refunds on the charge */
	if (list != NULL)
	{
		JsonbIterator *it = JsonbIteratorInit(list);
		JsonbContainer *re;
		pg_uuid_t	pay = ev->payment_id;

		while ((re = pe_jb_next_object(&it)) != NULL)
			appendStringInfo(&out, "; %s", apply_refund_object(ev, re));
		ev->payment_id = pay;
		ev->has_payment = true;
		ev->has_refund = false;
	}
	ev->outcome = out.data;
}

/* ---------------------------------------------------------------------------
 * disputes
 * ---------------------------------------------------------------------------
 */
static void
apply_dispute(WebhookEvent *ev)
{
	JsonbContainer *dp = ev->object;
	char	   *dp_id = pe_jb_text(dp, "id");
	char	   *status = pe_jb_text(dp, "status");
	char	   *pi_id = pe_jb_text(dp, "payment_intent");
	char	   *charge = pe_jb_text(dp, "charge");
	char	   *currency = pe_jb_text(dp, "currency");
	char	   *reason = pe_jb_text(dp, "reason");
	char	   *created = pe_jb_text(dp, "created");
	int64		amount = pe_jb_amount(dp, "amount");
	PePaymentRow row;
	Datum		id = DirectFunctionCall1(gen_random_uuid, (Datum) 0);
	Datum		args[10];
	char		nulls[10] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool		closed = (strcmp(ev->type, "charge.dispute.closed") == 0);

	ev->object_status = status;
	if (!pe_stripe_id_ok(dp_id) || status == NULL || amount < 0 || currency == NULL ||
		strlen(currency) != 3)
	{
		ev->outcome = "ignored: the event holds no dispute";
		return;
	}
	/* a dispute object has no metadata: find its payment by its ids */
	if (!payment_find(ev, NULL, pi_id, charge, &row))
	{
		ev->outcome = "ignored: no payment for this dispute";
		return;
	}
	args[0] = id;
	args[1] = pe_stripe_digest(dp_id);
	args[2] = CStringGetTextDatum(pe_seal(dp_id, psprintf("payment.disputes.stripe_dispute_id:%s",
														  pe_uuid_text(DatumGetUUIDP(id)))));
	args[3] = UUIDPGetDatum(&ev->payment_id);
	args[4] = Int64GetDatum(amount);
	args[5] = CStringGetTextDatum(currency);
	if (reason)
		args[6] = CStringGetTextDatum(pe_clip_chars(reason, 100));
	else
		nulls[6] = 'n';
	args[7] = CStringGetTextDatum(pe_clip_chars(status, 100));
	if (created && strspn(created, "0123456789") == strlen(created) && strlen(created) < 12 && created[0])
		args[8] = Float8GetDatum(strtod(created, NULL));
	else
		nulls[8] = 'n';
	args[9] = BoolGetDatum(closed || strcmp(status, "won") == 0 || strcmp(status, "lost") == 0);
	if (apply_exec(&dispute_upsert_plan, args, nulls) > 0)
	{
		ev->applied = true;
		ev->outcome = psprintf("applied: dispute %s", pe_scrub(status, 40));
	}
	else
		ev->outcome = "ignored: the dispute is already closed; an older state never replaces it";
	pe_stripe_ref_add(dp_id, "dispute", &ev->payment_id, NULL);
}

/* ---------------------------------------------------------------------------
 * Dispatch
 * ---------------------------------------------------------------------------
 */

/* See webhook.h. */
void
pe_webhook_apply(WebhookEvent *ev)
{
	const char *t = ev->type;

	if (ev->object == NULL)
	{
		ev->outcome = "ignored: the event has no data.object";
		return;
	}
	if (strncmp(t, "payment_intent.", 15) == 0)
		apply_payment_intent(ev);
	else if (strcmp(t, "refund.created") == 0 || strcmp(t, "refund.updated") == 0 ||
			 strcmp(t, "refund.failed") == 0 || strcmp(t, "charge.refund.updated") == 0)
		apply_refund(ev);
	else if (strcmp(t, "charge.refunded") == 0)
		apply_charge_refunded(ev);
	else if (strncmp(t, "charge.dispute.", 15) == 0)
		apply_dispute(ev);
	else
		ev->outcome = "ignored: event type not handled";
}
