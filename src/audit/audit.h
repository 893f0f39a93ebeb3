/*-------------------------------------------------------------------------
 *
 * audit.h
 *		The audit trail's C interface for the other files of payment_ext.
 *
 * IDENTIFICATION
 *		src/audit/audit.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PE_AUDIT_H
#define PE_AUDIT_H

#include "utils/jsonb.h"

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

#endif							/* PE_AUDIT_H */
