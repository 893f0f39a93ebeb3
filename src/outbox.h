/*-------------------------------------------------------------------------
 *
 * outbox.h
 *		What the outbox worker (outbox_worker.c) and the recording of its
 *		outcomes (outbox_outcome.c) share.
 *
 * An OutboxItem is one claimed payment.outbox row on its way to Stripe and
 * back.  It lives in its own memory context, a child of the worker's
 * in-flight context, from the claim until its outcome is recorded (or the
 * worker abandons it after an error); the request body and URL in it may
 * hold opened Stripe ids and are wiped before the context goes.
 *
 * IDENTIFICATION
 *		src/outbox.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PE_OUTBOX_H
#define PE_OUTBOX_H

#include "lib/ilist.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "http.h"

/* Initial capacity of a request body, so that it is never reallocated */
#define OUTBOX_BODY_CAPACITY	16384

/* The fixed Stripe API version of every request (README, "Outbox worker") */
#define PE_STRIPE_VERSION		"2023-08-16"

/* What an outbox row asks Stripe for (payment.outbox.kind) */
typedef enum OutboxKind
{
	OUTBOX_PI_CREATE,			/* payment_intent.create: POST /v1/payment_intents */
	OUTBOX_REFUND_CREATE,		/* refund.create: POST /v1/refunds */
	OUTBOX_PI_RETRIEVE,			/* payment_intent.retrieve: GET /v1/payment_intents/{id} */
	OUTBOX_PI_CANCEL,			/* payment_intent.cancel: POST .../{id}/cancel */
	OUTBOX_PI_SEARCH,			/* payment_intent.search: GET .../search?query= */
	OUTBOX_REFUND_LIST,			/* refund.list: GET /v1/refunds?payment_intent= */
	OUTBOX_REFUND_UNWANTED		/* refund.unwanted: POST /v1/refunds, all of a
								 * charge its payment does not keep */
} OutboxKind;

typedef struct OutboxItem
{
	PeHttpRequest http;			/* the request and, when done, its answer */
	MemoryContext cxt;			/* holds this item and all it points to */
	dlist_node	node;			/* in the worker's done list when finished */
	dlist_node	all_node;		/* in the worker's list of every live item */
	size_t		body_cap;		/* bytes of http.body to wipe */
	int64		id;				/* payment.outbox.id */
	OutboxKind	kind;
	pg_uuid_t	payment_id;
	pg_uuid_t	refund_id;
	bool		has_refund;
	char	   *idempotency_key;
	int			attempts;		/* including this one */
	bool		withdrawn;		/* a create withdrawn after an attempt: sent
								 * unconfirmed only to learn its fate */
	int			unusable_answers;	/* answers that could not be used, before this one */
	bool		key_first;		/* this claim set key_sent_at (issue 20) */
	bool		probe;			/* sent alone while Stripe is unreachable */
} OutboxItem;

/* What one round of recording did, for the shared status */
typedef struct OutboxTally
{
	int			successes;		/* Stripe answered with an object */
	int			failures;		/* final errors: declines and other 4xx */
	int			retries;		/* transient: scheduled again */
	int			dead;			/* gave up */
	char		last_error[256];	/* the last error recorded, no secrets */
} OutboxTally;

/* A claimed payment.outbox row, copied out of SPI memory */
typedef struct ClaimedRow
{
	int64		id;
	char	   *kind;
	pg_uuid_t	payment_id;
	pg_uuid_t	refund_id;
	bool		has_refund;
	Jsonb	   *request;
	char	   *idempotency_key;
	int			attempts;
	int			unusable_answers;
	bool		key_first;		/* key_sent_at was NULL before this claim */
} ClaimedRow;

/* outbox_request.c: build r's request into item */
extern void pe_outbox_build(ClaimedRow *r, OutboxItem *item, const char *api_key);

/* outbox_outcome.c */
extern void pe_outbox_record_one(OutboxItem *item, OutboxTally *tally);
extern void pe_outbox_mark(int64 id, const char *state, double delay_ms,
						   int http_status, const char *last_error);
extern void pe_outbox_unsent(int64 id);
extern void pe_outbox_unusable(int64 id);
extern char *pe_outbox_scrub(const char *text, int maxlen);
extern const char *pe_outbox_kind_name(OutboxKind kind);

/*
 * Issue 17, items 1 and 2: requests of payments (refunds) that no longer
 * want them.  A payment_intent.create is wanted only while its payment is
 * Pending and it is the payment's newest create (the current attempt); a
 * refund.create only while its refund is Processing.  PE_OUTBOX_WITHDRAW_SQL
 * (outbox_outcome.c, three statements, $1 a payment id or NULL for all) makes
 * every pending request that is no longer wanted harmless: one never sent is
 * done ("withdrawn"); a create already attempted, which Stripe may have
 * executed, becomes a probe: the same request without confirm and with
 * metadata[withdrawn] (the original confirm), sent under its own key, so
 * Stripe either answers that the key was used with other parameters (its
 * PaymentIntent is then searched for and undone) or makes an unconfirmed
 * PaymentIntent that is canceled.  Nothing is ever charged for it.
 */
extern void pe_outbox_withdraw(Datum payment_id, bool all);
extern int	pe_intent_attempt(JsonbContainer *pi);
extern bool pe_intent_is_current(const pg_uuid_t *payment_id, const char *pi_id,
								 int attempt, char **stored_sealed);
extern const char *pe_outbox_undo_intent(const pg_uuid_t *payment_id, const char *pi_id,
										 const char *status, const char *why);
extern const char *pe_outbox_unwanted_refund_failed(const pg_uuid_t *payment_id,
												   const char *pi_id, const char *reason);

/* outbox_settle.c: the settler's turn (in a transaction of the worker) */
extern int	pe_outbox_settle(void);

#endif							/* PE_OUTBOX_H */
