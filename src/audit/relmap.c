/*-------------------------------------------------------------------------
 *
 * relmap.c
 *		The audit trigger's map of each audited relation (its columns'
 *		names, types, output functions and sealed flags, and the columns it
 *		interprets), and a row as the jsonb of "OldValues" / "NewValues".
 *
 * Invariants:
 *	- No per-row catalog access: the map of each audited table is built
 *	  once per relation in its own memory context under CacheMemoryContext
 *	  and rebuilt after a relcache invalidation of that relation (ALTER
 *	  TABLE changes the TupleDesc); audit.c's invalidation callback calls
 *	  pe_audit_relmap_inval.
 *	- Every "Encrypted..." column is shown as "[sealed]", never its value.
 *
 * IDENTIFICATION
 *		src/audit/relmap.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/socket.h>

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inet.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/uuid.h"

#include "audit/audit.h"
#include "audit/audit_int.h"
#include "base/security.h"
#include "base/spi.h"
#include "base/text.h"
#include "base/trigger.h"
#include "base/xact.h"

/* A sealed column: its value is never shown */
#define AUDIT_SEALED_PREFIX			"Encrypted"

static MemoryContext AuditMemoryContext = NULL;
static HTAB *audit_rel_hash = NULL;

/* Relcache invalidation of relid (InvalidOid: all): rebuild its map. */
void
pe_audit_relmap_inval(Oid relid)
{
	HASH_SEQ_STATUS status;
	AuditRelCache *entry;

	if (audit_rel_hash == NULL)
		return;
	hash_seq_init(&status, audit_rel_hash);
	while ((entry = (AuditRelCache *) hash_seq_search(&status)) != NULL)
	{
		if (relid == InvalidOid || entry->relid == relid)
			entry->valid = false;
	}
}

/* ---------------------------------------------------------------------------
 * Attribute maps
 * ---------------------------------------------------------------------------
 */

/*
 * audit_interpreted_columns
 *		The columns the trigger interprets (beyond printing them through
 *		their output functions) in entry's table, with the types it reads
 *		them as (pe_trigger_columns: a trigger attached to a table of
 *		another shape is an error, never a misread value).  Sets the
 *		entry's att_* (0: absent, or not interpreted for its kind).
 */
static void
audit_interpreted_columns(Relation rel, AuditRelCache *entry)
{
	const char *trigger = "payment.audit_row_trigger()";
	const PeTriggerColumn common[] = {
		{&entry->att_id, "Id", UUIDOID, true},
		{&entry->att_metadata, "Metadata", JSONBOID, false},
		{&entry->att_updated_at, "UpdatedAt", TIMESTAMPTZOID, false}
	};
	const PeTriggerColumn payments[] = {
		{&entry->att_status, "Status", INT4OID, true},
		{&entry->att_amount, "AmountValue", NUMERICOID, false},
		{&entry->att_currency, "Currency", TEXTOID, false},
		{&entry->att_pct, "SlidingScalePercentage", NUMERICOID, false},
		{&entry->att_refund_amount, "RefundAmountValue", NUMERICOID, false}
	};
	const PeTriggerColumn refunds[] = {
		{&entry->att_payment, "OriginalPaymentId", UUIDOID, true},
		{&entry->att_status, "RefundStatus", INT4OID, true},
		{&entry->att_amount, "RefundAmountValue", NUMERICOID, false},
		{&entry->att_currency, "RefundCurrency", TEXTOID, false}
	};
	const PeTriggerColumn failures[] = {
		{&entry->att_payment, "PaymentId", UUIDOID, true},
		{&entry->att_failure_code, "FailureCode", TEXTOID, false},
		{&entry->att_retry, "RetryCount", INT4OID, false}
	};
	const PeTriggerColumn methods[] = {
		{&entry->att_brand, "CardBrand", TEXTOID, false},
		{&entry->att_last4, "LastFourDigits", TEXTOID, false},
		{&entry->att_exp_month, "ExpiryMonth", INT4OID, false},
		{&entry->att_exp_year, "ExpiryYear", INT4OID, false}
	};

	entry->att_payment = entry->att_status = entry->att_amount = entry->att_currency = 0;
	entry->att_pct = entry->att_refund_amount = entry->att_failure_code = entry->att_retry = 0;
	entry->att_brand = entry->att_last4 = entry->att_exp_month = entry->att_exp_year = 0;
	pe_trigger_columns(rel, trigger, common, lengthof(common), false);
	switch (entry->kind)
	{
		case AUDIT_PAYMENTS:
			pe_trigger_columns(rel, trigger, payments, lengthof(payments), false);
			entry->att_payment = entry->att_id;
			break;
		case AUDIT_REFUNDS:
			pe_trigger_columns(rel, trigger, refunds, lengthof(refunds), false);
			break;
		case AUDIT_FAILURES:
			pe_trigger_columns(rel, trigger, failures, lengthof(failures), false);
			break;
		case AUDIT_METHODS:
			pe_trigger_columns(rel, trigger, methods, lengthof(methods), false);
			break;
	}
}

/*
 * pe_audit_relmap
 *		The attribute map of the audited relation rel, built on first use and
 *		after an invalidation.  Catalog lookups (output functions) happen only
 *		here.
 */
AuditRelCache *
pe_audit_relmap(Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	TupleDesc	tupdesc = RelationGetDescr(rel);
	AuditRelCache *entry;
	bool		found;
	MemoryContext oldcxt;
	const char *relname = RelationGetRelationName(rel);
	AuditTable	kind;
	int			i;

	if (audit_rel_hash == NULL)
	{
		HASHCTL		ctl;

		AuditMemoryContext = AllocSetContextCreate(CacheMemoryContext,
												   "payment_ext audit cache",
												   ALLOCSET_SMALL_SIZES);
		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(AuditRelCache);
		ctl.hcxt = AuditMemoryContext;
		audit_rel_hash = hash_create("payment_ext audited relations", 8, &ctl,
									 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	entry = (AuditRelCache *) hash_search(audit_rel_hash, &relid, HASH_ENTER,
										  &found);
	if (found && entry->valid)
		return entry;
	if (found && entry->cxt != NULL)
		MemoryContextDelete(entry->cxt);
	entry->cxt = NULL;
	entry->valid = false;

	if (strcmp(relname, "Payments") == 0)
		kind = AUDIT_PAYMENTS;
	else if (strcmp(relname, "PaymentRefunds") == 0)
		kind = AUDIT_REFUNDS;
	else if (strcmp(relname, "PaymentFailures") == 0)
		kind = AUDIT_FAILURES;
	else if (strcmp(relname, "PaymentMethods") == 0)
		kind = AUDIT_METHODS;
	else
	{
		hash_search(audit_rel_hash, &relid, HASH_REMOVE, NULL);
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("the payment audit trigger does not audit table \"%s\"",
						relname),
				 errhint("It audits \"Payments\", \"PaymentRefunds\", \"PaymentFailures\" and \"PaymentMethods\".")));
	}

	entry->cxt = AllocSetContextCreate(AuditMemoryContext,
									   "payment_ext audit relation",
									   ALLOCSET_SMALL_SIZES);
	oldcxt = MemoryContextSwitchTo(entry->cxt);

	entry->kind = kind;
	entry->relname = pstrdup(relname);
	entry->columns = palloc0(sizeof(AuditColumn) * Max(tupdesc->natts, 1));
	entry->ncolumns = 0;
	for (i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);
		AuditColumn *col;
		Oid			typoutput;
		bool		typisvarlena;

		if (att->attisdropped)
			continue;
		col = &entry->columns[entry->ncolumns++];
		col->attnum = att->attnum;
		col->name = pstrdup(NameStr(att->attname));
		col->typid = att->atttypid;
		col->typlen = att->attlen;
		col->typbyval = att->attbyval;
		col->sealed = strncmp(col->name, AUDIT_SEALED_PREFIX,
							  strlen(AUDIT_SEALED_PREFIX)) == 0;
		getTypeOutputInfo(att->atttypid, &typoutput, &typisvarlena);
		fmgr_info_cxt(typoutput, &col->output, entry->cxt);
	}
	MemoryContextSwitchTo(oldcxt);

	audit_interpreted_columns(rel, entry);
	entry->valid = true;
	return entry;
}

/* ---------------------------------------------------------------------------
 * Values: comparison and jsonb
 * ---------------------------------------------------------------------------
 */

/* Are two non-null values of col equal?  Binary, then by content. */
bool
pe_audit_datum_equal(AuditColumn *col, Datum a, Datum b)
{
	struct varlena *va;
	struct varlena *vb;
	bool		result;

	if (datumIsEqual(a, b, col->typbyval, col->typlen))
		return true;
	if (col->typlen != -1)
		return false;
	/* same value, different representation (compressed, short header) */
	va = PG_DETOAST_DATUM_PACKED(a);
	vb = PG_DETOAST_DATUM_PACKED(b);
	result = VARSIZE_ANY_EXHDR(va) == VARSIZE_ANY_EXHDR(vb) &&
		memcmp(VARDATA_ANY(va), VARDATA_ANY(vb), VARSIZE_ANY_EXHDR(va)) == 0;
	return result;
}

/* a jsonb string value of s */
static void
audit_string_value(JsonbValue *v, char *s)
{
	v->type = jbvString;
	v->val.string.val = s;
	v->val.string.len = strlen(s);
}

/*
 * audit_push_value
 *		Push the value of col (as to_jsonb() would show it, but sealed
 *		columns as "[sealed]") as the value of the current key.
 */
static void
audit_push_value(JsonbParseState **state, AuditColumn *col, Datum value,
				 bool isnull)
{
	JsonbValue	v;

	if (isnull)
		v.type = jbvNull;
	else if (col->sealed)
		audit_string_value(&v, PE_AUDIT_SEALED_TEXT);
	else
	{
		switch (col->typid)
		{
			case BOOLOID:
				v.type = jbvBool;
				v.val.boolean = DatumGetBool(value);
				break;
			case INT2OID:
				v.type = jbvNumeric;
				v.val.numeric = DatumGetNumeric(DirectFunctionCall1(int2_numeric, value));
				break;
			case INT4OID:
				v.type = jbvNumeric;
				v.val.numeric = DatumGetNumeric(DirectFunctionCall1(int4_numeric, value));
				break;
			case INT8OID:
				v.type = jbvNumeric;
				v.val.numeric = DatumGetNumeric(DirectFunctionCall1(int8_numeric, value));
				break;
			case NUMERICOID:
				{
					Numeric		num = DatumGetNumeric(value);

					/* jsonb numbers have no NaN or infinity: as to_jsonb */
					if (numeric_is_nan(num) || numeric_is_inf(num))
						audit_string_value(&v, OutputFunctionCall(&col->output, value));
					else
					{
						v.type = jbvNumeric;
						v.val.numeric = num;
					}
				}
				break;
			case JSONBOID:
				{
					Jsonb	   *jb = DatumGetJsonbP(value);

					v.type = jbvBinary;
					v.val.binary.data = &jb->root;
					v.val.binary.len = VARSIZE(jb) - VARHDRSZ;
				}
				break;
			case DATEOID:
			case TIMESTAMPOID:
			case TIMESTAMPTZOID:
				{
					char		buf[MAXDATELEN + 1];

					JsonEncodeDateTime(buf, value, col->typid, NULL);
					audit_string_value(&v, pstrdup(buf));
				}
				break;
			case TEXTOID:
			case VARCHAROID:
				audit_string_value(&v, TextDatumGetCString(value));
				break;
			default:
				audit_string_value(&v, OutputFunctionCall(&col->output, value));
				break;
		}
	}
	pushJsonbValue(state, WJB_VALUE, &v);
}

/*
 * pe_audit_row_json
 *		A jsonb object of the columns of a row: all of them when include is
 *		NULL, else those whose include[attnum - 1] is set.
 */
Jsonb *
pe_audit_row_json(AuditRelCache *entry, Datum *values, bool *nulls,
				  bool *include)
{
	JsonbParseState *state = NULL;
	JsonbValue *result;
	int			i;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (i = 0; i < entry->ncolumns; i++)
	{
		AuditColumn *col = &entry->columns[i];
		int			idx = col->attnum - 1;
		JsonbValue	key;

		if (include != NULL && !include[idx])
			continue;
		audit_string_value(&key, col->name);
		pushJsonbValue(&state, WJB_KEY, &key);
		audit_push_value(&state, col, values[idx], nulls[idx]);
	}
	result = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(result);
}
