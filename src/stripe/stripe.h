/*-------------------------------------------------------------------------
 *
 * stripe.h
 *		What the flows that talk to Stripe share: the outbox queue, where
 *		every request to Stripe starts (queue.c); Stripe ids mapped to our
 *		rows, and the check that a PaymentIntent is the payment's (refs.c);
 *		and the one way each of Stripe's answers is written into the payment
 *		tables (ledger.c), whether it came back to the outbox worker or in a
 *		webhook.
 *
 * Every function here runs in a transaction, connected to SPI, in the
 * caller's role: the worker role (outbox worker), or the owner of a
 * SECURITY DEFINER function (payment.* functions, webhooks).  Lock order
 * (README, "Lock order"): the caller locks the payment's row first
 * (pe_payment_lock) before it writes anything of the payment here.
 *
 * IDENTIFICATION
 *		src/stripe/stripe.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PE_STRIPE_H
#define PE_STRIPE_H

#include "utils/jsonb.h"
#include "utils/uuid.h"

/* ---------------------------------------------------------------------------
 * queue.c: the outbox, where requests to Stripe wait
 * ---------------------------------------------------------------------------
 */

/*
 * Insert an outbox row: kind (payment.outbox.kind), its payment and refund
 * (NULL: none), the JSON text of its form parameters and its key.
 */
extern void pe_outbox_enqueue(const char *kind, const pg_uuid_t *payment_id,
							  const pg_uuid_t *refund_id, const char *request,
							  const char *idempotency_key);

/*
 * The context a Stripe id in an outbox request is sealed with: bound to the
 * parameter and to the row's idempotency key (DESIGN.md "Secrets").
 */
extern char *pe_outbox_context(const char *param, const char *idempotency_key);
extern char *pe_reseal_request(const char *request, const char *old_key,
							   const char *new_key);

/*
 * Issue 17, items 1 and 2: requests of payments (refunds) that no longer
 * want them.  A payment_intent.create is wanted only while its payment is
 * Pending and it is the payment's newest create (the current attempt); a
 * refund.create only while its refund is Processing.  pe_outbox_withdraw
 * ($1 a payment id, or every payment with all) makes every pending request
 * that is no longer wanted harmless: one never sent is done ("withdrawn");
 * a create already attempted, which Stripe may have executed, becomes a
 * probe: the same request without confirm and with metadata[withdrawn]
 * (the original confirm), sent under its own key, so Stripe either answers
 * that the key was used with other parameters (its PaymentIntent is then
 * searched for and undone) or makes an unconfirmed PaymentIntent that is
 * canceled.  Nothing is ever charged for it.
 */
extern void pe_outbox_withdraw(Datum payment_id, bool all);
extern const char *pe_outbox_undo_intent(const pg_uuid_t *payment_id, const char *pi_id,
										 const char *status, const char *why);
extern const char *pe_outbox_unwanted_refund_failed(const pg_uuid_t *payment_id,
													const char *pi_id, const char *reason);

/* The attempts of a payment: payment.retry makes a new one */
extern int	pe_intent_key_attempt(const char *key);
extern int	pe_intent_attempt(JsonbContainer *pi);
extern bool pe_intent_current(const pg_uuid_t *payment_id, const char *pi_id, int attempt,
							  int *status, pg_uuid_t *registration);
extern int	pe_intent_current_attempt(const pg_uuid_t *payment_id);

/* ---------------------------------------------------------------------------
 * refs.c: Stripe ids and our rows
 * ---------------------------------------------------------------------------
 */

/* Is s a Stripe object id (letters, digits, underscores, 4 to 255)? */
extern bool pe_stripe_id_ok(const char *s);
/* SHA-256 of a Stripe id, as a bytea Datum */
extern Datum pe_stripe_digest(const char *id);

/*
 * Stripe ids mapped to our rows by their SHA-256 digest (payment.stripe_refs).
 */
extern void pe_stripe_ref_add(const char *stripe_id, const char *object,
							  const pg_uuid_t *payment_id,
							  const pg_uuid_t *refund_id);
extern bool pe_stripe_ref_find(const char *stripe_id, pg_uuid_t *payment_id,
							   pg_uuid_t *refund_id, bool *has_refund);

/*
 * Does a PaymentIntent agree with its payment (metadata.payment_id, amount,
 * currency)?  The one check of the webhook appliers and of the worker's
 * outcomes; a disagreement is recorded by pe_pi_mismatch_record and shown
 * by payment.reconcile.
 */
extern const char *pe_pi_mismatch(JsonbContainer *pi, const pg_uuid_t *payment_id,
								  int64 amount_minor, const char *currency,
								  char **why);
extern void pe_pi_mismatch_record(const pg_uuid_t *payment_id, const char *code,
								  const char *why, const char *source);

/* ---------------------------------------------------------------------------
 * ledger.c: Stripe's answers written into the payment tables
 * ---------------------------------------------------------------------------
 */

/* A payment row, read under its row lock */
typedef struct PePaymentRow
{
	int			status;
	int64		amount_minor;
	char	   *currency;		/* upper case */
	bool		has_pi;			/* "EncryptedStripePaymentIntentId" is set */
	pg_uuid_t	registration;
} PePaymentRow;

extern bool pe_payment_lock(const pg_uuid_t *id, PePaymentRow *row);
extern bool pe_registration_other_live(const pg_uuid_t *registration,
									   const pg_uuid_t *payment_id);

/* Pending -> Completed, Failed -> Pending, the PaymentIntent of a Pending one */
extern bool pe_payment_complete(const pg_uuid_t *id, const char *sealed_pi);
extern bool pe_payment_reopen(const pg_uuid_t *id);
extern bool pe_payment_store_intent(const pg_uuid_t *id, const char *sealed_pi,
									bool replace);

/* Pending -> Failed with a "PaymentFailures" row; false if not Pending */
extern bool pe_payment_fail(const pg_uuid_t *id, const char *code, const char *message,
							const char *details, int retry_count);
extern void pe_failure_insert(const pg_uuid_t *payment_id, const char *code,
							  const char *message, const char *details,
							  int retry_count);

/* Why a canceled PaymentIntent failed its payment: "expired" or "canceled" */
extern const char *pe_cancel_failure_code(const char *cancellation_reason);
extern char *pe_cancel_message(const char *cancellation_reason);

/* payment.intents: the latest state Stripe reported of a PaymentIntent */
extern void pe_intent_report(const pg_uuid_t *payment_id, JsonbContainer *pi,
							 const char *status, const char *sealed_secret,
							 const char *source);
extern void pe_intent_refunded(const pg_uuid_t *payment_id, int64 amount_refunded,
							   double created);

/* payment.refund_states and "PaymentRefunds" */
extern void pe_refund_state_report(const pg_uuid_t *refund_id, const char *stripe_status,
								   const char *source);
extern bool pe_refund_set(const pg_uuid_t *refund_id, int status, const char *sealed_id,
						  bool replace_id);

#endif							/* PE_STRIPE_H */
