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
#include "nodes/pg_list.h"
#include "utils/timestamp.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "base/spi.h"
#include "outbox/http.h"
#include "stripe/stripe.h"

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

/*
 * The answer to one request, as outcome.c classifies it:
 *	- an object (2xx, valid JSON): success, mapped by the object's status;
 *	- no answer (network error, timeout, dropped connection), a 2xx with
 *	  broken JSON, 5xx, 409, 429, or Stripe-Should-Retry: true: transient,
 *	  retried with the same Idempotency-Key;
 *	- a transient status with Stripe-Should-Retry: false: dead (the outcome
 *	  is unknown: never a Failed payment);
 *	- 400 idempotency_error, 401, 403: dead at once, with a LOG line;
 *	- any other 4xx (402 card_error above all): final.
 */
typedef enum OutcomeClass
{
	OUTCOME_SUCCESS,			/* an object came back */
	OUTCOME_FINAL,				/* Stripe refused for good */
	OUTCOME_RETRY,				/* transient: try again with the same key */
	OUTCOME_DEAD				/* give up; a human (or the settler) looks */
} OutcomeClass;

typedef struct Outcome
{
	OutcomeClass cls;
	int			http_status;	/* 0 without an answer */
	Jsonb	   *object;			/* the answer's JSON object, or NULL */
	char	   *err_type;		/* Stripe's error object, when there is one */
	char	   *err_code;
	char	   *err_decline;
	char	   *err_param;
	char	   *err_message;	/* scrubbed */
	char	   *last_error;		/* for the outbox row and the status; no secrets */
	/* the payment, read under its row lock (outcome_lock_payment) */
	bool		has_payment;
	PePaymentRow payment;
} Outcome;


/* request.c: build r's request into item */
extern void pe_outbox_build(ClaimedRow *r, OutboxItem *item, const char *api_key);

/* outcome.c: classification, and the writes every kind of answer needs */
extern void pe_outcome_classify(OutboxItem *item, Outcome *o);
extern uint64 pe_outcome_exec(PePlan *p, Datum *args, const char *nulls);
extern char *pe_outcome_seal(const char *value, const char *table, const char *column,
							 pg_uuid_t *id);
extern void pe_outcome_payment_failed(OutboxItem *item, Outcome *o, const char *code,
									  const char *message);
extern char *pe_outcome_request_text(int64 id);
extern void pe_outbox_mark(int64 id, const char *state, double delay_ms,
						   int http_status, const char *last_error);
extern void pe_outbox_unsent(int64 id);
extern void pe_outbox_unusable(int64 id);
extern const char *pe_outbox_kind_name(OutboxKind kind);
extern double pe_outbox_backoff_ms(int attempts, int retry_after_s);

/* record_intent.c: answers about PaymentIntents */
extern void pe_outbox_record_intent(OutboxItem *item, Outcome *o, JsonbContainer *pi);
extern void pe_outbox_record_search(OutboxItem *item, Outcome *o);
extern void pe_outbox_create_refused(OutboxItem *item, Outcome *o);
extern void pe_outbox_cancel_refused(OutboxItem *item, Outcome *o);

/* record_refund.c: answers about Refunds */
extern void pe_outbox_record_refund(OutboxItem *item, Outcome *o, JsonbContainer *re,
									const char *source);
extern void pe_outbox_record_refund_list(OutboxItem *item, Outcome *o);
extern void pe_outbox_record_unwanted(OutboxItem *item, Outcome *o);

/* record.c: the third phase */
extern void pe_outbox_record_one(OutboxItem *item, OutboxTally *tally);

/* record.c: the third phase */
extern bool pe_outbox_record_outcomes(void);

/* claim.c: the first phase */
extern int	pe_outbox_claim_batch(int limit, int64 after_id, List **items,
								  TimestampTz *next_due);
extern void pe_outbox_sweep(void);

/* send.c: the second phase, and the circuit breaker (issue 20) */
typedef struct OutboxBreaker
{
	int			failures;		/* transport failures and 5xx in a row */
	bool		open;			/* no row is claimed but one probe at a time */
	TimestampTz since;
	TimestampTz next_probe_at;
	int64		last_probe_id;	/* probes take the due rows in turn */
	long		probe_interval_ms;
	uint64		probes;			/* probes sent while open */
} OutboxBreaker;

extern OutboxBreaker pe_breaker;
extern void pe_outbox_send_batch(List *items);
extern void pe_outbox_collect_done(void);
extern bool pe_outbox_breaker_observe(OutboxItem *item);
extern void pe_outbox_breaker_release(void);

/* settle.c: the settler's turn (in a transaction of the worker) */
extern int	pe_outbox_settle(void);

/* state.c: the worker's process-local state and its transactions */
typedef struct OutboxWorker
{
	PeHttp	   *http;			/* curl's multi handle, NULL when none */
	MemoryContext loop_cxt;		/* reset at each turn of the loop */
	MemoryContext inflight_cxt; /* parent of every item's context */
	dlist_head	done_list;		/* finished, not recorded yet */
	dlist_head	all_items;		/* every live item */
	char	   *api_key;		/* TopMemoryContext; wiped when replaced */
	Oid			role_oid;		/* payment_ext.worker_role */
} OutboxWorker;

extern OutboxWorker pe_worker;
extern void pe_outbox_xact_begin(const char *what);
extern void pe_outbox_xact_end(void);
extern ErrorData *pe_outbox_subxact(void (*fn) (void *arg), void *arg);
extern void pe_outbox_item_wipe(OutboxItem *item);
extern void pe_outbox_item_free(OutboxItem *item);

/* status.c: the shared status (a no-op without shared_preload_libraries) */
extern void pe_outbox_status_set(const char *state);
extern void pe_outbox_status_error(const char *text);
extern void pe_outbox_status_started(void);
extern void pe_outbox_status_stopped(void);
extern void pe_outbox_status_in_flight(int in_flight, int sent);
extern void pe_outbox_status_unbuilt(bool final);
extern void pe_outbox_status_recorded(const OutboxTally *tally, int in_flight);
extern void pe_outbox_status_unreachable(TimestampTz since, const char *what);
extern void pe_outbox_status_probe(void);
extern void pe_outbox_status_woken(void);

#endif							/* PE_OUTBOX_INT_H */
