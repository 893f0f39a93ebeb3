/*-------------------------------------------------------------------------
 *
 * webhook_int.h
 *		What the webhook intake (webhook.c) and the appliers of events
 *		(apply.c) share.
 *
 * IDENTIFICATION
 *		src/webhook/webhook_int.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PE_WEBHOOK_INT_H
#define PE_WEBHOOK_INT_H

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

/* apply.c: apply ev (in a transaction, connected to SPI) */
extern void pe_webhook_apply(WebhookEvent *ev);

#endif							/* PE_WEBHOOK_INT_H */
