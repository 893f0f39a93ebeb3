/*-------------------------------------------------------------------------
 *
 * refs.c
 *		Stripe ids and our rows: the digests that map a Stripe object to its
 *		payment or refund (payment.stripe_refs), and the check that a
 *		PaymentIntent is the payment's (its metadata, amount and currency)
 *		before it completes the payment or is stored for it.
 *
 * Invariants:
 *	- A Stripe id is stored only as its SHA-256 digest here; it never
 *	  appears in a message, a stored failure or a log line.
 *	- Callers are in a transaction, connected to SPI, holding the row lock
 *	  of the payment concerned (README, "Lock order").
 *
 * IDENTIFICATION
 *		src/stripe/refs.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/evp.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "base/spi.h"
#include "base/text.h"
#include "stripe/stripe.h"

static PePlan ref_add_plan = {
	"INSERT INTO payment.stripe_refs (digest, object, payment_id, refund_id)"
	" VALUES ($1, $2, $3, $4) ON CONFLICT (digest) DO NOTHING",
	4, {BYTEAOID, TEXTOID, UUIDOID, UUIDOID}, NULL, 0
};
static PePlan ref_find_plan = {
	"SELECT payment_id, refund_id FROM payment.stripe_refs WHERE digest = $1",
	1, {BYTEAOID}, NULL, 0
};
/* a mismatch already recorded since the payment last changed */
static PePlan mismatch_seen_plan = {
	"SELECT 1 FROM @S@.\"PaymentFailures\" f JOIN @S@.\"Payments\" p ON p.\"Id\" = f.\"PaymentId\""
	" WHERE f.\"PaymentId\" = $1 AND f.\"FailureCode\" = $2 AND f.\"CreatedAt\" >= p.\"UpdatedAt\"",
	2, {UUIDOID, TEXTOID}, NULL, 0
};

/* ---------------------------------------------------------------------------
 * Stripe ids by digest
 * ---------------------------------------------------------------------------
 */

/* Is s a Stripe object id (letters, digits, underscores, 4 to 255)? */
bool
pe_stripe_id_ok(const char *s)
{
	size_t		n;

	if (s == NULL)
		return false;
	n = strlen(s);
	return n > 3 && n <= 255 &&
		strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") == n;
}

/* SHA-256 of a Stripe id, as a bytea. */
Datum
pe_stripe_digest(const char *id)
{
	bytea	   *b = palloc(VARHDRSZ + 32);
	unsigned int len = 0;

	if (EVP_Digest(id, strlen(id), (unsigned char *) VARDATA(b), &len, EVP_sha256(), NULL) != 1 ||
		len != 32)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not compute a SHA-256 digest")));
	SET_VARSIZE(b, VARHDRSZ + 32);
	return PointerGetDatum(b);
}

/* See stripe.h. */
void
pe_stripe_ref_add(const char *stripe_id, const char *object,
				  const pg_uuid_t *payment_id, const pg_uuid_t *refund_id)
{
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	int			rc;

	if (!pe_stripe_id_ok(stripe_id))
		return;
	args[0] = pe_stripe_digest(stripe_id);
	args[1] = CStringGetTextDatum(object);
	args[2] = UUIDPGetDatum(payment_id);
	if (refund_id != NULL)
		args[3] = UUIDPGetDatum(refund_id);
	else
		nulls[3] = 'n';
	rc = SPI_execute_plan(pe_plan(&ref_add_plan), args, nulls, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "recording a Stripe reference failed: %s", SPI_result_code_string(rc));
}

/* See stripe.h. */
bool
pe_stripe_ref_find(const char *stripe_id, pg_uuid_t *payment_id,
				   pg_uuid_t *refund_id, bool *has_refund)
{
	Datum		arg;
	bool		isnull;
	Datum		d;
	int			rc;

	if (!pe_stripe_id_ok(stripe_id))
		return false;
	arg = pe_stripe_digest(stripe_id);
	rc = SPI_execute_plan(pe_plan(&ref_find_plan), &arg, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "looking up a Stripe reference failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		return false;
	memcpy(payment_id, DatumGetUUIDP(pe_spi_getdatum(0, 1, &isnull)), UUID_LEN);
	d = pe_spi_getdatum(0, 2, &isnull);
	if (has_refund)
		*has_refund = !isnull;
	if (!isnull && refund_id != NULL)
		memcpy(refund_id, DatumGetUUIDP(d), UUID_LEN);
	return true;
}

/* ---------------------------------------------------------------------------
 * Does a PaymentIntent belong to its payment?
 * ---------------------------------------------------------------------------
 */

/*
 * pe_pi_mismatch
 *		Check that the PaymentIntent pi belongs to the payment and asks for
 *		its money: metadata.payment_id names payment_id, the currency is
 *		the payment's (any case), the amount is the payment's amount in
 *		minor units, and so is amount_received when it is succeeded.
 *		Returns NULL when it agrees, else the "FailureCode" of the first
 *		difference (metadata_mismatch, currency_mismatch, amount_mismatch)
 *		with *why saying what differs (amounts and currencies, never a
 *		Stripe id).  Used by the webhook appliers and the worker's outcomes
 *		alike, before a PaymentIntent completes a payment or is stored for
 *		it.
 */
const char *
pe_pi_mismatch(JsonbContainer *pi, const pg_uuid_t *payment_id,
			   int64 amount_minor, const char *currency, char **why)
{
	char	   *md_pid = pe_jb_text(pe_jb_object(pi, "metadata"), "payment_id");
	char	   *cur = pe_jb_text(pi, "currency");
	char	   *status = pe_jb_text(pi, "status");
	int64		amount = pe_jb_amount(pi, "amount");
	int64		received = pe_jb_amount(pi, "amount_received");
	pg_uuid_t	u;

	if (md_pid == NULL || !pe_parse_uuid(md_pid, &u) ||
		memcmp(u.data, payment_id->data, UUID_LEN) != 0)
	{
		*why = pstrdup(md_pid == NULL ?
					   "the PaymentIntent has no metadata[payment_id]" :
					   "the PaymentIntent's metadata[payment_id] names another payment");
		return "metadata_mismatch";
	}
	if (cur == NULL || pg_strcasecmp(cur, currency) != 0)
	{
		*why = psprintf("the PaymentIntent is in %s, the payment in %s",
						cur ? pe_scrub(cur, 8) : "no currency", currency);
		return "currency_mismatch";
	}
	if (amount != amount_minor)
	{
		*why = psprintf("the PaymentIntent is for %s, the payment for %s %s",
						amount < 0 ? "no amount" : pe_minor_text(amount),
						pe_minor_text(amount_minor), currency);
		return "amount_mismatch";
	}
	if (status != NULL && strcmp(status, "succeeded") == 0 && received >= 0 &&
		received != amount_minor)
	{
		*why = psprintf("Stripe received %s, the payment is for %s %s",
						pe_minor_text(received), pe_minor_text(amount_minor), currency);
		return "amount_mismatch";
	}
	return NULL;
}

/*
 * pe_pi_mismatch_record
 *		Record that a PaymentIntent disagreed with payment_id (code and why
 *		from pe_pi_mismatch; source: webhook, response or lookup): a
 *		"PaymentFailures" row, which payment.reconcile shows until the
 *		payment changes; once only while the payment does not change (the
 *		settler's repeated lookups find the same PaymentIntent).  The
 *		payment itself is left as it is.  Caller: in a transaction,
 *		connected to SPI, holding the payment's row lock.
 */
void
pe_pi_mismatch_record(const pg_uuid_t *payment_id, const char *code,
					  const char *why, const char *source)
{
	StringInfoData details;
	Datum		args[2];

	args[0] = UUIDPGetDatum(payment_id);
	args[1] = CStringGetTextDatum(code);
	if (SPI_execute_plan(pe_plan(&mismatch_seen_plan), args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "looking up recorded mismatches failed");
	if (SPI_processed > 0)
		return;

	initStringInfo(&details);
	appendStringInfoChar(&details, '{');
	pe_json_field(&details, "source", source);
	pe_json_field(&details, "code", code);
	appendStringInfoChar(&details, '}');
	pe_failure_insert(payment_id, code,
					  psprintf("Stripe's PaymentIntent does not match the payment (%s): %s; the payment was not completed from it",
							   source, why),
					  details.data, 0);
}
