/*-------------------------------------------------------------------------
 *
 * xact.h
 *		State that lives for one transaction at most, set only by trusted C
 *		code (never by SQL), and the restore mode.
 *
 * IDENTIFICATION
 *		src/base/xact.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PE_BASE_XACT_H
#define PE_BASE_XACT_H

#include "utils/uuid.h"

/*
 * Set (for the current transaction only, never from SQL) by code that
 * rewrites rows in bulk without changing their meaning, such as key rotation
 * re-sealing ciphertext: the audit trigger then writes no per-row entry and
 * the caller writes one summary entry instead.  Reset at transaction end.
 */
extern bool pe_suppress_row_audit;

/*
 * payment.resolve() (api/resolve.c) sets these, never SQL, for the one
 * UPDATE it makes: the state trigger then lets that payment past the
 * transition rules and the audit trigger writes the reason into the row's
 * description.  Restored by PG_FINALLY and reset at transaction end.
 */
extern bool pe_resolve_active;
extern pg_uuid_t pe_resolve_payment;
extern const char *pe_resolve_reason;

/*
 * Must a trigger fired by event store the row exactly as given (restore
 * mode: a superuser's COPY, or payment_ext.restoring in a superuser's
 * session; INSERT only)?
 */
extern bool pe_restoring_insert(uint32 event);

/* Called by _PG_init: resets the state above at every transaction end. */
extern void pe_base_init(void);

#endif							/* PE_BASE_XACT_H */
