/*-------------------------------------------------------------------------
 *
 * webhook.h
 *		What the webhook intake (webhook.c), the appliers of events
 *		(webhook_apply.c) and the outbox worker's outcomes share.
 *
 * IDENTIFICATION
 *		src/webhook.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PE_WEBHOOK_H
#define PE_WEBHOOK_H

#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

/* SQLSTATEs of the webhook intake (class PE, listed in README) */
#define ERRCODE_PE_WEBHOOK_SIGNATURE	MAKE_SQLSTATE('P','E','0','1','0')
#define ERRCODE_PE_WEBHOOK_TIMESTAMP	MAKE_SQLSTATE('P','E','0','1','1')
#define ERRCODE_PE_WEBHOOK_HEADER		MAKE_SQLSTATE('P','E','0','1','2')
#define ERRCODE_PE_WEBHOOK_PAYLOAD		MAKE_SQLSTATE('P','E','0','1','3')

/* The user that refunds made in Stripe's Dashboard are processed by */
#define PE_SYSTEM_USER_ID		"00000000-0000-0000-0000-00000000057e"

/*
 * One verified event being applied.  The appliers fill in the outputs; all
 * of it lives in the caller's memory context.
 */
typedef struct WebhookEvent
{
	const char *id;				/* evt_... */
	const char *type;			/* payment_intent.succeeded, ... */
	JsonbContainer *object;		/* data.object, or NULL */
	double		created;		/* the event's created (Unix seconds), or -1 */
	/* outputs */
	pg_uuid_t	payment_id;
	bool		has_payment;
	pg_uuid_t	refund_id;
	bool		has_refund;
	char	   *object_status;	/* data.object.status, or NULL */
	char	   *outcome;		/* applied: ... | no change: ... | ignored: ... */
	bool		applied;		/* the payment tables changed */
} WebhookEvent;

/* webhook_apply.c: apply ev (in a transaction, connected to SPI) */
extern void pe_webhook_apply(WebhookEvent *ev);

/* JSON helpers (webhook_apply.c) */
extern char *pe_jb_text(JsonbContainer *c, const char *key);
extern JsonbContainer *pe_jb_object(JsonbContainer *c, const char *key);
extern JsonbContainer *pe_jb_array(JsonbContainer *c, const char *key);

/*
 * Stripe ids mapped to our rows by their SHA-256 digest (payment.stripe_refs).
 * Caller: in a transaction, connected to SPI.
 */
extern void pe_stripe_ref_add(const char *stripe_id, const char *object,
							  const pg_uuid_t *payment_id,
							  const pg_uuid_t *refund_id);
extern bool pe_stripe_ref_find(const char *stripe_id, pg_uuid_t *payment_id,
							   pg_uuid_t *refund_id, bool *has_refund);

/* Is a PaymentIntent status terminal (succeeded, canceled)? */
extern bool pe_pi_status_terminal(const char *status);

/*
 * Does a PaymentIntent agree with its payment (metadata.payment_id, amount,
 * currency)?  The one check of the webhook appliers and of the worker's
 * outcomes (webhook_apply.c); a disagreement is recorded by
 * pe_pi_mismatch_record and shown by payment.reconcile.
 */
extern const char *pe_pi_mismatch(JsonbContainer *pi, const pg_uuid_t *payment_id,
								  int64 amount_minor, const char *currency,
								  char **why);
extern void pe_pi_mismatch_record(const pg_uuid_t *payment_id, const char *code,
								  const char *why, const char *source);

#endif							/* PE_WEBHOOK_H */
