/*-------------------------------------------------------------------------
 *
 * settle.c
 *		The settler: one turn of it runs in a transaction of the outbox
 *		worker (worker.c) every quarter of payment_ext.pending_ttl (1 s
 *		to 60 s).  It never resends a request blind; it queues lookups, whose
 *		answers the recording phase (record.c) records like any other.
 *
 * IDENTIFICATION
 *		src/outbox/settle.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"

#include "base/guc.h"
#include "base/spi.h"
#include "outbox/outbox_int.h"
#include "vault/vault.h"

/*
 * The settler.  A request whose key may first have reached Stripe longer
 * ago than payment_ext.idempotency_window (23 hours by default) is never
 * resent (Stripe keeps idempotency keys for at least 24 hours): it is dead,
 * and its payment or refund is looked up instead.  A Pending payment older
 * than payment_ext.pending_ttl, or whose create request is dead, with
 * nothing of its own in the outbox and no lookup within the last
 * pending_ttl, gets a lookup: GET by id when its PaymentIntent id is known,
 * else a search by metadata[payment_id].  A Processing refund whose every
 * refund.create is dead gets the same kind of lookup (refund.list: the
 * PaymentIntent's refunds, matched by metadata[refund_id]).  The answers
 * are recorded by the recording phase (record_intent.c, record_refund.c).
 */
#define SETTLE_STALE_SQL \
	" state = 'pending' AND kind IN ('payment_intent.create', 'refund.create')" \
	" AND key_sent_at < pg_catalog.now() - $1 * interval '1 second'"
static PePlan settle_stale_plan = {
	"UPDATE payment.outbox SET state = 'dead', completed_at = pg_catalog.now(),"
	" updated_at = pg_catalog.now(),"
	" last_error = pg_catalog.left('not resent: it may first have reached Stripe longer ago than payment_ext.idempotency_window, and Stripe may have forgotten its idempotency key; the payment or refund is looked up instead (last error: '"
	"  || COALESCE(last_error, 'none') || ')', 1000)"
	" WHERE" SETTLE_STALE_SQL,
	1, {INT4OID}, NULL, 0
};
/*
 * Lock order (README, "Lock order"): a statement that changes rows of
 * several payments first locks those payments' rows, in ascending id, so
 * that it never holds a payment's outbox row or refund while it waits for
 * a payment that a webhook, payment.resolve or the worker's recording holds.
 */
static PePlan settle_stale_lock_plan = {
	"SELECT 1 FROM @S@.\"Payments\" p WHERE p.\"Id\" IN"
	" (SELECT payment_id FROM payment.outbox WHERE" SETTLE_STALE_SQL ")"
	" ORDER BY p.\"Id\" FOR NO KEY UPDATE OF p",
	1, {INT4OID}, NULL, 0
};
/*
 * issue 17 item 3: a dead payment_intent.create of a Pending payment with no
 * PaymentIntent, whose key may have reached Stripe and is still inside
 * payment_ext.idempotency_window ($2), is settled by sending the same
 * request again with the same key (Stripe answers with the first outcome),
 * not by a search: at most once per pending_ttl ($1), only the payment's
 * newest create, only while nothing of the payment is on its way.
 */
static PePlan settle_resend_plan = {
	"UPDATE payment.outbox w SET state = 'pending', next_attempt_at = pg_catalog.clock_timestamp(),"
	" completed_at = NULL, unusable_answers = 0, updated_at = pg_catalog.now(),"
	" last_error = pg_catalog.left('sent again by the settler with the same idempotency key (last error: '"
	"  || COALESCE(w.last_error, 'none') || ')', 1000)"
	" WHERE w.kind = 'payment_intent.create' AND w.state = 'dead'"
	"  AND w.key_sent_at >= pg_catalog.now() - $2 * interval '1 second'"
	"  AND w.completed_at < pg_catalog.now() - $1 * interval '1 second'"
	"  AND EXISTS (SELECT 1 FROM @S@.\"Payments\" p WHERE p.\"Id\" = w.payment_id"
	"              AND p.\"Status\" = 0 AND p.\"EncryptedStripePaymentIntentId\" IS NULL)"
	"  AND NOT EXISTS (SELECT 1 FROM payment.outbox o WHERE o.payment_id = w.payment_id"
	"                  AND o.state IN ('pending', 'sending'))"
	"  AND NOT EXISTS (SELECT 1 FROM payment.outbox n WHERE n.payment_id = w.payment_id"
	"                  AND n.kind = 'payment_intent.create' AND n.id > w.id)",
	2, {INT4OID, INT4OID}, NULL, 0
};
static PePlan settle_plan = {
	"INSERT INTO payment.outbox (kind, payment_id, request, idempotency_key)"
	" SELECT CASE WHEN c.has_pi THEN 'payment_intent.retrieve' ELSE 'payment_intent.search' END,"
	"  c.id,"
	"  CASE WHEN c.has_pi THEN '{}'::jsonb ELSE pg_catalog.jsonb_build_object('query',"
	"    pg_catalog.format('metadata[''payment_id'']:''%s''', c.id)) END,"
	"  'pe-' || c.id || '-lookup-' || pg_catalog.gen_random_uuid()"
	" FROM (SELECT p.\"Id\" AS id, p.\"EncryptedStripePaymentIntentId\" IS NOT NULL AS has_pi"
	"   FROM @S@.\"Payments\" p"
	"  WHERE p.\"Status\" = 0"
	"    AND (p.\"CreatedAt\" < pg_catalog.now() - $1 * interval '1 second'"
	"         OR EXISTS (SELECT 1 FROM payment.outbox d WHERE d.payment_id = p.\"Id\""
	"                     AND d.kind = 'payment_intent.create' AND d.state = 'dead'))"
	"    AND NOT EXISTS (SELECT 1 FROM payment.outbox o WHERE o.payment_id = p.\"Id\""
	"                     AND o.state IN ('pending', 'sending'))"
	"    AND (p.\"EncryptedStripePaymentIntentId\" IS NOT NULL"
	"         OR NOT EXISTS (SELECT 1 FROM payment.outbox w WHERE w.payment_id = p.\"Id\""
	"                         AND w.kind = 'payment_intent.create'"
	"                         AND w.key_sent_at IS NOT NULL"
	"                         AND (w.completed_at > pg_catalog.now() - $3 * interval '1 second'"
	"                              OR (w.state = 'dead'"
	"                                  AND w.key_sent_at >= pg_catalog.now() - $2 * interval '1 second'))))"
	"    AND NOT EXISTS (SELECT 1 FROM payment.outbox l WHERE l.payment_id = p.\"Id\""
	"                     AND l.kind IN ('payment_intent.retrieve', 'payment_intent.search',"
	"                                    'payment_intent.cancel')"
	"                     AND l.created_at > pg_catalog.now() - $1 * interval '1 second')"
	"  ORDER BY p.\"CreatedAt\" LIMIT 100) c",
	3, {INT4OID, INT4OID, INT4OID}, NULL, 0
};
/*
 * A refund whose refund.create requests are all dead (the settler's own,
 * or after max_attempts): Processing, so its fate at Stripe is unknown.
 * Its lookup lists the PaymentIntent's refunds (GET /v1/refunds, the
 * PaymentIntent opened at send time from the refund.create request, else
 * from the payment) and the answer finds ours by metadata[refund_id].
 * Only when some PaymentIntent or charge is known: see
 * settle_refund_fail_plan.  The list is read no sooner than pending_ttl
 * (at most a minute) after the last refund.create died, so that a request
 * Stripe was still executing when the worker gave up on it shows in the
 * list, rather than being taken for one Stripe never got.  (A
 * refund.create naming only a charge, which payment.refund never queues, is
 * listed by its payment's PaymentIntent; with none the lookup cannot be
 * built and is dead, and the refund waits for an administrator: it may
 * have reached Stripe.)
 */
#define SETTLE_REFUND_DEAD_SQL \
	"    r.\"RefundStatus\" = 0" \
	"    AND EXISTS (SELECT 1 FROM payment.outbox d WHERE d.payment_id = r.\"OriginalPaymentId\"" \
	"                 AND d.refund_id = r.\"Id\" AND d.kind = 'refund.create' AND d.state = 'dead')" \
	"    AND NOT EXISTS (SELECT 1 FROM payment.outbox o WHERE o.payment_id = r.\"OriginalPaymentId\"" \
	"                     AND o.refund_id = r.\"Id\"" \
	"                     AND (o.state IN ('pending', 'sending')" \
	"                          OR (o.kind = 'refund.create' AND o.state <> 'dead')))"
#define SETTLE_REFUND_HAS_PI_SQL \
	"(EXISTS (SELECT 1 FROM @S@.\"Payments\" p WHERE p.\"Id\" = r.\"OriginalPaymentId\"" \
	"          AND p.\"EncryptedStripePaymentIntentId\" IS NOT NULL)" \
	" OR EXISTS (SELECT 1 FROM payment.outbox t WHERE t.payment_id = r.\"OriginalPaymentId\"" \
	"             AND t.refund_id = r.\"Id\" AND t.kind = 'refund.create'" \
	"             AND (t.request ? 'payment_intent' OR t.request ? 'charge')))"

static PePlan settle_refund_plan = {
	"INSERT INTO payment.outbox (kind, payment_id, refund_id, request, idempotency_key)"
	" SELECT 'refund.list', r.\"OriginalPaymentId\", r.\"Id\", '{\"limit\": \"100\"}'::jsonb,"
	"  'pe-' || r.\"Id\" || '-lookup-' || pg_catalog.gen_random_uuid()"
	"   FROM @S@.\"PaymentRefunds\" r"
	"  WHERE" SETTLE_REFUND_DEAD_SQL
	"    AND " SETTLE_REFUND_HAS_PI_SQL
	"    AND NOT EXISTS (SELECT 1 FROM payment.outbox l WHERE l.payment_id = r.\"OriginalPaymentId\""
	"                     AND l.refund_id = r.\"Id\" AND l.kind = 'refund.list'"
	"                     AND l.created_at > pg_catalog.now() - $1 * interval '1 second')"
	"    AND NOT EXISTS (SELECT 1 FROM payment.outbox w WHERE w.payment_id = r.\"OriginalPaymentId\""
	"                     AND w.refund_id = r.\"Id\" AND w.kind = 'refund.create'"
	"                     AND w.completed_at > pg_catalog.now()"
	"                         - LEAST($1, 60) * interval '1 second')"
	"  ORDER BY r.\"CreatedAt\" LIMIT 100",
	1, {INT4OID}, NULL, 0
};

/*
 * A refund Stripe accepted but had not settled when it answered (pending or
 * requires_action: the refund is still Processing after its refund.create
 * is done) is settled by Stripe's refund.updated and refund.failed events.
 * As a backstop for lost webhooks, one still Processing pending_ttl after
 * that answer, with nothing of its own on its way and no lookup within the
 * last pending_ttl, is looked up the same way (refund.list).  Not finding
 * it then sends nothing again: refund_recreate_plan (record_refund.c)
 * queues a new refund.create only when every earlier one is dead.
 */
static PePlan settle_refund_poll_plan = {
	"INSERT INTO payment.outbox (kind, payment_id, refund_id, request, idempotency_key)"
	" SELECT 'refund.list', r.\"OriginalPaymentId\", r.\"Id\", '{\"limit\": \"100\"}'::jsonb,"
	"  'pe-' || r.\"Id\" || '-lookup-' || pg_catalog.gen_random_uuid()"
	"   FROM @S@.\"PaymentRefunds\" r"
	"  WHERE r.\"RefundStatus\" = 0"
	"    AND EXISTS (SELECT 1 FROM payment.outbox d WHERE d.payment_id = r.\"OriginalPaymentId\""
	"                 AND d.refund_id = r.\"Id\" AND d.kind = 'refund.create' AND d.state = 'done'"
	"                 AND d.completed_at < pg_catalog.now() - $1 * interval '1 second')"
	"    AND NOT EXISTS (SELECT 1 FROM payment.outbox o WHERE o.payment_id = r.\"OriginalPaymentId\""
	"                     AND o.refund_id = r.\"Id\" AND o.state IN ('pending', 'sending'))"
	"    AND NOT EXISTS (SELECT 1 FROM payment.outbox l WHERE l.payment_id = r.\"OriginalPaymentId\""
	"                     AND l.refund_id = r.\"Id\" AND l.kind = 'refund.list'"
	"                     AND l.created_at > pg_catalog.now() - $1 * interval '1 second')"
	"  ORDER BY r.\"CreatedAt\" LIMIT 100",
	1, {INT4OID}, NULL, 0
};

/*
 * A refund whose refund.create requests are all dead and name no
 * PaymentIntent or charge, of a payment with no PaymentIntent id either,
 * never reached Stripe: such a request cannot be built (outbox_build
 * refuses it before sending), so the refund cannot exist there, and
 * sending it again would fail the same way.  The refund becomes Failed
 * (its amount is free again; an administrator refunds by other means),
 * and its dead requests say why.
 */
static PePlan settle_refund_fail_lock_plan = {
	"SELECT 1 FROM @S@.\"Payments\" p WHERE p.\"Id\" IN"
	" (SELECT r.\"OriginalPaymentId\" FROM @S@.\"PaymentRefunds\" r WHERE" SETTLE_REFUND_DEAD_SQL
	"    AND NOT " SETTLE_REFUND_HAS_PI_SQL ")"
	" ORDER BY p.\"Id\" FOR NO KEY UPDATE OF p",
	0, {InvalidOid}, NULL, 0
};
static PePlan settle_refund_fail_plan = {
	"WITH f AS ("
	" UPDATE @S@.\"PaymentRefunds\" r SET \"RefundStatus\" = 2"
	"  WHERE" SETTLE_REFUND_DEAD_SQL
	"    AND NOT " SETTLE_REFUND_HAS_PI_SQL
	"  RETURNING r.\"Id\", r.\"OriginalPaymentId\")"
	" UPDATE payment.outbox d SET updated_at = pg_catalog.now(),"
	"  last_error = pg_catalog.left(COALESCE(d.last_error || '; ', '') ||"
	"   'the payment has no PaymentIntent, so the refund never reached Stripe: it is Failed', 1000)"
	"  FROM f WHERE d.payment_id = f.\"OriginalPaymentId\" AND d.refund_id = f.\"Id\""
	"   AND d.kind = 'refund.create' AND d.state = 'dead'",
	0, {InvalidOid}, NULL, 0
};

/*
 * pe_outbox_settle
 *		One turn of the settler (see settle_plan, settle_refund_plan,
 *		settle_refund_poll_plan):
 *		returns the number of lookups queued.  Caller: in a transaction of
 *		the worker, connected to SPI, as the worker role.
 */
int
pe_outbox_settle(void)
{
	Datum		arg = Int32GetDatum(pe_pending_ttl);
	Datum		args[3];
	int			rc;
	int			queued;

	args[0] = arg;
	args[1] = Int32GetDatum(pe_idempotency_window);
	args[2] = Int32GetDatum(pe_search_lag);
	/* never beside a key rotation, the other writer of many payments */
	if (!pe_rotation_lock(false))
		return 0;
	rc = SPI_execute_plan(pe_plan(&settle_stale_lock_plan), &args[1], NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "locking the payments of stale outbox rows failed: %s", SPI_result_code_string(rc));
	rc = SPI_execute_plan(pe_plan(&settle_stale_plan), &args[1], NULL, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "settling stale outbox rows failed: %s", SPI_result_code_string(rc));
	rc = SPI_execute_plan(pe_plan(&settle_resend_plan), args, NULL, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "sending dead create requests again failed: %s", SPI_result_code_string(rc));
	queued = (int) SPI_processed;
	rc = SPI_execute_plan(pe_plan(&settle_plan), args, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "queueing lookups failed: %s", SPI_result_code_string(rc));
	queued += (int) SPI_processed;
	rc = SPI_execute_plan(pe_plan(&settle_refund_fail_lock_plan), NULL, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "locking the payments of refunds to fail failed: %s", SPI_result_code_string(rc));
	rc = SPI_execute_plan(pe_plan(&settle_refund_fail_plan), NULL, NULL, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "failing refunds that never reached Stripe failed: %s", SPI_result_code_string(rc));
	rc = SPI_execute_plan(pe_plan(&settle_refund_plan), &arg, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "queueing refund lookups failed: %s", SPI_result_code_string(rc));
	queued += (int) SPI_processed;
	rc = SPI_execute_plan(pe_plan(&settle_refund_poll_plan), &arg, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "queueing lookups of refunds pending at Stripe failed: %s", SPI_result_code_string(rc));
	return queued + (int) SPI_processed;
}
