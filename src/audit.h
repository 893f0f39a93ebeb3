/*-------------------------------------------------------------------------
 *
 * audit.h
 *		The audit trail's C interface for the other files of payment_ext.
 *
 * IDENTIFICATION
 *		src/audit.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PE_AUDIT_H
#define PE_AUDIT_H

#include "utils/jsonb.h"
#include "utils/relcache.h"
#include "utils/uuid.h"

/*
 * pe_audit_log_refusal
 *		Write one structured LOG line for an operation this extension is about
 *		to refuse: who (session_user, current_user, app.current_user_id, the
 *		client address), what and why.  Call it just before the
 *		ereport(ERROR): the refused transaction rolls back, this line stays.
 *		"what" and "why" are fixed descriptions chosen by the caller; never
 *		pass the refused value (an amount, a signature, a card number) in
 *		either.  The line carries no STATEMENT, so the SQL text is not logged
 *		with it.
 */
extern void pe_audit_log_refusal(const char *what, const char *why);

/*
 * pe_audit_system_action
 *		Insert one 'SystemAction' row into "PaymentAuditLog" with the request
 *		context of the current transaction, as the log's owner (the caller
 *		needs no privilege on it).  table_name may be NULL; details (may be
 *		NULL) goes into "NewValues" and must hold no secret.  For summaries of
 *		bulk work that ran with pe_suppress_row_audit set, such as key
 *		rotation.  The row joins the system chain.  Must run inside a
 *		transaction; it connects to SPI itself (nesting is fine).
 */
extern void pe_audit_system_action(const char *table_name,
								   const char *description,
								   Jsonb *details);

/* ---------------------------------------------------------------------------
 * Internal to audit.c and audit_chain.c
 * ---------------------------------------------------------------------------
 */

/* the system chain: rows with neither "PaymentId" nor "RowId" */
#define PE_AUDIT_SYSTEM_CHAIN_TEXT	"00000000-0000-0000-0000-000000000000"

/*
 * The row trigger holds the row lock of the payment whose chain the next
 * audit row joins (it is inserting or updating that payment): the chain
 * trigger then need not lock it again.  Cleared right after the insert and
 * at (sub)transaction abort.
 */
extern void pe_audit_chain_set_prelocked(const pg_uuid_t *payment_id);
extern void pe_audit_chain_clear_prelocked(void);

/*
 * Provenance of audit rows.  Who wrote a row ("SessionUser",
 * "CurrentUser", "UserId", "IpAddress", "UserAgent") and when ("CreatedAt")
 * are set by pe_audit_chain_link from the server's own state, never taken
 * from the INSERT: audit.c's writer registers what it computed before it
 * switched to the log's owner (values and nulls in AuditStoreColumn order,
 * see audit_int.h) for the duration of its insert; any other insert gets
 * the session's own roles and request context, and no application user.
 * pe_audit_chain_swap_writer returns the previous registration (restore it
 * afterwards); (sub)transaction abort forgets registrations made in it.
 */
typedef struct AuditWriter
{
	const Datum *values;
	const bool *nulls;
	SubTransactionId subid;
} AuditWriter;

extern const AuditWriter *pe_audit_chain_swap_writer(const AuditWriter *writer);
extern void pe_audit_chain_writer_at_abort(SubTransactionId subid);

/* audit_chain.c, for the audit trigger's direct write (audit_store.c) */
extern bool pe_audit_chain_lock_payment(Relation rel, const pg_uuid_t *payment);
extern void pe_audit_chain_link(Relation rel, Datum *values, bool *nulls);

/* schema of the extension (catalog scan: not for per-row use) */

/* relcache invalidation of relid (InvalidOid: all) for audit_chain.c */
extern void pe_audit_chain_relcache_inval(Oid relid);

#endif							/* PE_AUDIT_H */
