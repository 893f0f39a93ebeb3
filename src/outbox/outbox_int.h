/*-------------------------------------------------------------------------
 *
 * outbox_int.h
 *		What the files of the outbox worker share (not for the rest of
 *		payment_ext, which queues requests through stripe/stripe.h).
 *
 * An OutboxItem is one claimed payment.outbox row on its way to Stripe and
 * back.  It lives in its own memory context, a child of the worker's
 * in-flight context, from the claim until its outcome is recorded (or the
 * worker abandons it after an error); the request body and URL in it may
 * hold opened Stripe ids and are wiped before the context goes.
 *
 * IDENTIFICATION
 *		src/outbox/outbox_int.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PE_OUTBOX_INT_H
#define PE_OUTBOX_INT_H

#include "lib/ilist.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "outbox/http.h"

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

/* request.c: build r's request into item */
extern void pe_outbox_build(ClaimedRow *r, OutboxItem *item, const char *api_key);

/* record.c */
extern void pe_outbox_record_one(OutboxItem *item, OutboxTally *tally);
extern void pe_outbox_mark(int64 id, const char *state, double delay_ms,
						   int http_status, const char *last_error);
extern void pe_outbox_unsent(int64 id);
extern void pe_outbox_unusable(int64 id);
extern const char *pe_outbox_kind_name(OutboxKind kind);

/* settle.c: the settler's turn (in a transaction of the worker) */
extern int	pe_outbox_settle(void);

#endif							/* PE_OUTBOX_INT_H */
