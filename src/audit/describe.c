/*-------------------------------------------------------------------------
 *
 * describe.c
 *		What an audited change was: the "ActionType" and the readable
 *		"ActionDescription" of an INSERT, UPDATE or DELETE of "Payments",
 *		"PaymentRefunds", "PaymentFailures" or "PaymentMethods".
 *
 * Payments: an insert is PaymentInitiated (Pending), PaymentProcessed
 * (NotRequired: a zero amount needs no charge and is settled at once),
 * PaymentCompleted or PaymentFailed (inserted already settled, as imports
 * do), else SystemAction; an update is PaymentCompleted (Pending ->
 * Completed), PaymentFailed (Pending -> Failed), PaymentRetried (Failed ->
 * Pending), StatusChanged (any other status change, refunds included: the
 * refund row's own entry is the RefundCompleted), MetadataUpdated (only
 * "Metadata", with or without "UpdatedAt"), else SystemAction.  Refunds:
 * RefundInitiated (insert Processing), RefundCompleted, RefundFailed
 * (insert or update to that status), StatusChanged, MetadataUpdated,
 * SystemAction.  Failures: PaymentFailed on insert.  Saved methods and
 * every DELETE: SystemAction.
 *
 * Invariants:
 *	- No catalog access: values are shown with the output functions cached
 *	  in the relation's AuditRelCache.  Sealed columns are never shown.
 *	- Allocations go to the caller's (per-tuple) memory context.
 *
 * IDENTIFICATION
 *		src/audit/describe.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "lib/stringinfo.h"

#include "audit/audit_int.h"
#include "base/status.h"
#include "base/xact.h"

/* text of a column's value for a description ("?" when absent or NULL) */
static char *
audit_value_text(AuditRelCache *entry, AttrNumber attnum, Datum *values,
				 bool *nulls)
{
	int			i;

	if (attnum == 0 || nulls[attnum - 1])
		return "?";
	for (i = 0; i < entry->ncolumns; i++)
	{
		if (entry->columns[i].attnum == attnum)
		{
			if (entry->columns[i].sealed)
				return PE_AUDIT_SEALED_TEXT;
			return OutputFunctionCall(&entry->columns[i].output,
									  values[attnum - 1]);
		}
	}
	return "?";
}

/* int4 value of a column, or -1 when absent or NULL */
static int
audit_value_int(AttrNumber attnum, Datum *values, bool *nulls)
{
	if (attnum == 0 || nulls[attnum - 1])
		return -1;
	return DatumGetInt32(values[attnum - 1]);
}

/* name of a payment or refund status for a description */
static const char *
audit_status_text(AuditTable kind, int status)
{
	const char *name;

	name = kind == AUDIT_PAYMENTS ? pe_payment_status_name(status) :
		pe_refund_status_name(status);
	return name != NULL ? name : psprintf("%d", status);
}

/* "amount currency" of a row */
static char *
audit_amount_text(AuditRelCache *entry, Datum *values, bool *nulls)
{
	return psprintf("%s %s",
					audit_value_text(entry, entry->att_amount, values, nulls),
					audit_value_text(entry, entry->att_currency, values, nulls));
}

/* ", changed: a, b" for an UPDATE */
static void
audit_append_changed(StringInfo buf, AuditRelCache *entry, bool *changed)
{
	int			i;
	bool		first = true;

	for (i = 0; i < entry->ncolumns; i++)
	{
		if (!changed[entry->columns[i].attnum - 1])
			continue;
		appendStringInfoString(buf, first ? " (changed: " : ", ");
		appendStringInfoString(buf, entry->columns[i].name);
		first = false;
	}
	if (!first)
		appendStringInfoChar(buf, ')');
}

/* Action and description of an INSERT. */
void
pe_audit_classify_insert(AuditEntry *e, AuditRelCache *entry, Datum *values,
					  bool *nulls)
{
	StringInfo	d = &e->description;
	int			status = audit_value_int(entry->att_status, values, nulls);

	switch (entry->kind)
	{
		case AUDIT_PAYMENTS:
			switch (status)
			{
				case PE_PAYMENT_PENDING:
					e->action_type = "PaymentInitiated";
					appendStringInfoString(d, "payment initiated");
					break;
				case PE_PAYMENT_NOT_REQUIRED:
					e->action_type = "PaymentProcessed";
					appendStringInfoString(d, "payment not required (zero amount), processed at once");
					break;
				case PE_PAYMENT_COMPLETED:
					e->action_type = "PaymentCompleted";
					appendStringInfoString(d, "payment recorded as Completed");
					break;
				case PE_PAYMENT_FAILED:
					e->action_type = "PaymentFailed";
					appendStringInfoString(d, "payment recorded as Failed");
					break;
				default:
					e->action_type = "SystemAction";
					appendStringInfo(d, "payment recorded as %s",
									 audit_status_text(entry->kind, status));
					break;
			}
			appendStringInfo(d, ": %s at %s%% sliding scale",
							 audit_amount_text(entry, values, nulls),
							 audit_value_text(entry, entry->att_pct, values, nulls));
			break;
		case AUDIT_REFUNDS:
			switch (status)
			{
				case PE_REFUND_COMPLETED:
					e->action_type = "RefundCompleted";
					appendStringInfoString(d, "refund recorded as Completed");
					break;
				case PE_REFUND_FAILED:
					e->action_type = "RefundFailed";
					appendStringInfoString(d, "refund recorded as Failed");
					break;
				default:
					e->action_type = "RefundInitiated";
					appendStringInfoString(d, "refund initiated");
					break;
			}
			appendStringInfo(d, ": %s", audit_amount_text(entry, values, nulls));
			break;
		case AUDIT_FAILURES:
			e->action_type = "PaymentFailed";
			appendStringInfo(d, "payment failure recorded: code %s, retry %s",
							 audit_value_text(entry, entry->att_failure_code, values, nulls),
							 audit_value_text(entry, entry->att_retry, values, nulls));
			break;
		case AUDIT_METHODS:
			e->action_type = "SystemAction";
			appendStringInfo(d, "saved payment method added: %s ending %s, expires %s/%s",
							 audit_value_text(entry, entry->att_brand, values, nulls),
							 audit_value_text(entry, entry->att_last4, values, nulls),
							 audit_value_text(entry, entry->att_exp_month, values, nulls),
							 audit_value_text(entry, entry->att_exp_year, values, nulls));
			break;
	}
}

/* Action and description of an UPDATE that changed something. */
/* Is this row the payment that payment.resolve() is updating? */
static bool
audit_resolving(AuditRelCache *entry, Datum *values, bool *nulls)
{
	if (!pe_resolve_active || pe_resolve_reason == NULL || entry->att_id == 0 ||
		nulls[entry->att_id - 1])
		return false;
	return memcmp(DatumGetUUIDP(values[entry->att_id - 1]), &pe_resolve_payment,
				  UUID_LEN) == 0;
}

void
pe_audit_classify_update(AuditEntry *e, AuditRelCache *entry,
					  Datum *oldvalues, bool *oldnulls,
					  Datum *newvalues, bool *newnulls, bool *changed)
{
	StringInfo	d = &e->description;
	int			i;
	bool		metadata_only;
	bool		status_changed;
	int			from = audit_value_int(entry->att_status, oldvalues, oldnulls);
	int			to = audit_value_int(entry->att_status, newvalues, newnulls);

	/* metadata-only: "Metadata" changed, and nothing else but "UpdatedAt" */
	metadata_only = entry->att_metadata != 0 && changed[entry->att_metadata - 1];
	for (i = 0; metadata_only && i < entry->ncolumns; i++)
	{
		AttrNumber	attnum = entry->columns[i].attnum;

		if (changed[attnum - 1] && attnum != entry->att_metadata &&
			attnum != entry->att_updated_at)
			metadata_only = false;
	}
	status_changed = entry->att_status != 0 && changed[entry->att_status - 1];

	switch (entry->kind)
	{
		case AUDIT_PAYMENTS:
			if (status_changed)
			{
				if (from == PE_PAYMENT_PENDING && to == PE_PAYMENT_COMPLETED)
				{
					e->action_type = "PaymentCompleted";
					appendStringInfoString(d, "payment completed");
				}
				else if (from == PE_PAYMENT_PENDING && to == PE_PAYMENT_FAILED)
				{
					e->action_type = "PaymentFailed";
					appendStringInfoString(d, "payment failed");
				}
				else if (from == PE_PAYMENT_FAILED && to == PE_PAYMENT_PENDING)
				{
					e->action_type = "PaymentRetried";
					appendStringInfoString(d, "payment retried");
				}
				else
				{
					e->action_type = "StatusChanged";
					appendStringInfoString(d, "payment status changed");
				}
				appendStringInfo(d, ": %s -> %s",
								 audit_status_text(entry->kind, from),
								 audit_status_text(entry->kind, to));
				if (audit_resolving(entry, newvalues, newnulls))
					appendStringInfo(d, ", resolved by payment.resolve, reason: %s",
									 pe_resolve_reason);
				if (to == PE_PAYMENT_REFUNDED ||
					to == PE_PAYMENT_PARTIALLY_REFUNDED)
					appendStringInfo(d, ", refunded %s of %s",
									 audit_value_text(entry, entry->att_refund_amount,
													  newvalues, newnulls),
									 audit_amount_text(entry, newvalues, newnulls));
			}
			else if (metadata_only)
			{
				e->action_type = "MetadataUpdated";
				appendStringInfoString(d, "payment metadata updated");
			}
			else
			{
				e->action_type = "SystemAction";
				appendStringInfoString(d, "payment updated");
			}
			break;
		case AUDIT_REFUNDS:
			if (status_changed)
			{
				if (to == PE_REFUND_COMPLETED)
				{
					e->action_type = "RefundCompleted";
					appendStringInfoString(d, "refund completed");
				}
				else if (to == PE_REFUND_FAILED)
				{
					e->action_type = "RefundFailed";
					appendStringInfoString(d, "refund failed");
				}
				else
				{
					e->action_type = "StatusChanged";
					appendStringInfoString(d, "refund status changed");
				}
				appendStringInfo(d, ": %s -> %s, %s",
								 audit_status_text(entry->kind, from),
								 audit_status_text(entry->kind, to),
								 audit_amount_text(entry, newvalues, newnulls));
			}
			else if (metadata_only)
			{
				e->action_type = "MetadataUpdated";
				appendStringInfoString(d, "refund metadata updated");
			}
			else
			{
				e->action_type = "SystemAction";
				appendStringInfoString(d, "refund updated");
			}
			break;
		case AUDIT_FAILURES:
			e->action_type = "SystemAction";
			appendStringInfoString(d, "payment failure updated");
			break;
		case AUDIT_METHODS:
			e->action_type = "SystemAction";
			appendStringInfo(d, "saved payment method updated: %s ending %s",
							 audit_value_text(entry, entry->att_brand, newvalues, newnulls),
							 audit_value_text(entry, entry->att_last4, newvalues, newnulls));
			break;
	}
	audit_append_changed(d, entry, changed);
}

/* Action and description of a DELETE. */
void
pe_audit_classify_delete(AuditEntry *e, AuditRelCache *entry, Datum *values,
					  bool *nulls)
{
	StringInfo	d = &e->description;

	e->action_type = "SystemAction";
	switch (entry->kind)
	{
		case AUDIT_PAYMENTS:
			appendStringInfo(d, "payment deleted: %s, status %s",
							 audit_amount_text(entry, values, nulls),
							 audit_status_text(entry->kind,
											   audit_value_int(entry->att_status, values, nulls)));
			break;
		case AUDIT_REFUNDS:
			appendStringInfo(d, "refund deleted: %s, status %s",
							 audit_amount_text(entry, values, nulls),
							 audit_status_text(entry->kind,
											   audit_value_int(entry->att_status, values, nulls)));
			break;
		case AUDIT_FAILURES:
			appendStringInfo(d, "payment failure deleted: code %s",
							 audit_value_text(entry, entry->att_failure_code, values, nulls));
			break;
		case AUDIT_METHODS:
			appendStringInfo(d, "saved payment method removed: %s ending %s",
							 audit_value_text(entry, entry->att_brand, values, nulls),
							 audit_value_text(entry, entry->att_last4, values, nulls));
			break;
	}
}
