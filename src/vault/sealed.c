/*-------------------------------------------------------------------------
 *
 * sealed.c
 *		Sealed columns: the trigger that admits only values sealed for their
 *		column and row (payment.rotate_keys() is rotate.c).
 *
 * Every column named "Encrypted..." of "Payments", "PaymentMethods",
 * "PaymentRefunds" and "PaymentFailures" holds NULL or a value sealed with
 * the context "<Table>.<Column>:<row Id>"; a sealed string value of the
 * top level of payment.outbox.request uses "outbox.request.<param>:
 * <idempotency_key>"; payment.intents.client_secret,
 * payment.disputes.stripe_dispute_id and payment.webhook_events.payload
 * use "payment.<table>.<column>:<row id>" (the full list is above
 * RotateTable in rotate.c).
 *
 * Invariants: the plaintext of every value checked is wiped at once; an
 * error names the column and row, never the value.
 *
 * IDENTIFICATION
 *		src/vault/sealed.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/crypto.h>

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/rel.h"

#include "base/trigger.h"
#include "base/xact.h"
#include "vault/vault.h"

/* ---------------------------------------------------------------------------
 * The trigger
 * ---------------------------------------------------------------------------
 */

/*
 * pe_sealed_column
 *		Is att a live sealed column: "Encrypted..." of type text (or
 *		varchar)?
 */
bool
pe_sealed_column(Form_pg_attribute att)
{
	return !att->attisdropped &&
		strncmp(NameStr(att->attname), PE_SEALED_COLUMN_PREFIX,
				strlen(PE_SEALED_COLUMN_PREFIX)) == 0 &&
		(att->atttypid == TEXTOID || att->atttypid == VARCHAROID);
}

/*
 * Trigger function: BEFORE INSERT OR UPDATE FOR EACH ROW on the four payment
 * tables.  Refuses a non-NULL "Encrypted..." value that does not open under
 * "<Table>.<Column>:<Id>"; on UPDATE checks only changed values (all of them
 * when "Id" changed).  The plaintext is wiped at once.
 */
PG_FUNCTION_INFO_V1(pe_sealed_columns_trigger);
Datum
pe_sealed_columns_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	rel;
	TupleDesc	tupdesc;
	HeapTuple	newtuple;
	HeapTuple	oldtuple = NULL;
	int			idattnum;
	char	   *id;
	bool		id_changed = false;
	int			i;
	static const PeTriggerUse use =
		PE_TRIGGER_USE("pe_sealed_columns_trigger", true, PE_TRIG_INSERT | PE_TRIG_UPDATE, 0,
					   "BEFORE INSERT OR UPDATE FOR EACH ROW");

	pe_trigger_check(fcinfo, &use);
	/*
	 * a restore (pe_restoring_insert): values are loaded as they were dumped,
	 * even if this server's keyring cannot open them (payment.key_usage
	 * shows such keys afterwards); refusing them would lose the rows.
	 */
	if (pe_restoring_insert(trigdata->tg_event))
		return PointerGetDatum(trigdata->tg_trigtuple);

	rel = trigdata->tg_relation;
	tupdesc = RelationGetDescr(rel);
	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		oldtuple = trigdata->tg_trigtuple;
		newtuple = trigdata->tg_newtuple;
	}
	else
		newtuple = trigdata->tg_trigtuple;

	{
		PeTriggerColumn idcol = {&idattnum, "Id", UUIDOID, true};

		pe_trigger_columns(rel, "payment.sealed_columns_trigger()", &idcol, 1, false);
	}
	id = SPI_getvalue(newtuple, tupdesc, idattnum);
	if (id == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("\"Id\" of \"%s\" must not be null", RelationGetRelationName(rel))));
	if (oldtuple != NULL)
	{
		char	   *oldid = SPI_getvalue(oldtuple, tupdesc, idattnum);

		id_changed = oldid == NULL || strcmp(oldid, id) != 0;
	}

	for (i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);
		bool		isnull;
		Datum		value;
		char	   *sealed;
		char	   *context;
		char	   *plaintext;

		if (!pe_sealed_column(att))
		{
			/* a sealed column of another type is never skipped silently */
			if (!att->attisdropped &&
				strncmp(NameStr(att->attname), PE_SEALED_COLUMN_PREFIX,
						strlen(PE_SEALED_COLUMN_PREFIX)) == 0)
				pe_trigger_column_mistyped(rel, "payment.sealed_columns_trigger()", i + 1,
										   TEXTOID);
			continue;
		}
		value = heap_getattr(newtuple, i + 1, tupdesc, &isnull);
		if (isnull)
			continue;
		if (oldtuple != NULL && !id_changed)
		{
			bool		oldnull;
			Datum		oldvalue = heap_getattr(oldtuple, i + 1, tupdesc, &oldnull);

			if (!oldnull && datum_image_eq(value, oldvalue, false, -1))
				continue;
		}

		sealed = TextDatumGetCString(value);
		context = pe_vault_context(RelationGetRelationName(rel),
								   NameStr(att->attname), id);
		if (!pe_try_open(sealed, context, &plaintext))
			ereport(ERROR,
					(errcode(ERRCODE_CHECK_VIOLATION),
					 errmsg("column \"%s\" of \"%s\" accepts only values sealed for its row",
							NameStr(att->attname), RelationGetRelationName(rel)),
					 errdetail("Seal the value with payment.encrypt(value, '%s.%s:' || \"Id\").",
							   RelationGetRelationName(rel), NameStr(att->attname)),
					 errtablecol(rel, i + 1)));
		OPENSSL_cleanse(plaintext, strlen(plaintext));
		pfree(plaintext);
		pfree(sealed);
		pfree(context);
	}
	return PointerGetDatum(newtuple);
}
