/*-------------------------------------------------------------------------
 *
 * idempotency.c
 *		Idempotency keys of payment.create and payment.refund: the same key
 *		with the same arguments returns the row the first call made; with
 *		other arguments it is refused (a double click never pays or refunds
 *		twice).
 *
 * Invariants:
 *	- A key is claimed with INSERT ... ON CONFLICT DO NOTHING before any
 *	  other write: a concurrent call with the same key waits for the first
 *	  one's transaction, then returns its row (same arguments) or is refused
 *	  (different arguments).
 *	- The arguments are compared by a SHA-256 of them, length-prefixed
 *	  field by field, so that no two argument lists hash alike.
 *
 * IDENTIFICATION
 *		src/api/idempotency.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/numeric.h"
#include "utils/uuid.h"

#include "api/api.h"
#include "audit/audit.h"
#include "base/spi.h"
#include "guard/guard.h"

#define PE_MAX_IDEMPOTENCY_KEY	255

/* ---------------------------------------------------------------------------
 * Argument hashing for idempotency keys
 * ---------------------------------------------------------------------------
 */
/* Start the hash of a call's arguments. */
void
pe_arghash_init(PeArgHash *h)
{
	h->ctx = pg_cryptohash_create(PG_SHA256);
	if (h->ctx == NULL || pg_cryptohash_init(h->ctx) < 0)
		elog(ERROR, "could not initialise SHA-256");
}

/* Add one field, length-prefixed so that no two argument lists collide. */
void
pe_arghash_add(PeArgHash *h, const char *value)
{
	char		len[32];
	int			n;

	if (value == NULL)
		n = snprintf(len, sizeof(len), "N;");
	else
		n = snprintf(len, sizeof(len), "%zu:", strlen(value));
	if (pg_cryptohash_update(h->ctx, (const uint8 *) len, n) < 0 ||
		(value != NULL &&
		 pg_cryptohash_update(h->ctx, (const uint8 *) value, strlen(value)) < 0))
		elog(ERROR, "could not update SHA-256");
}

/* Add an amount: 40, 40.0 and 40.00 hash alike. */
void
pe_arghash_add_numeric(PeArgHash *h, Numeric value)
{
	/* 40, 40.0 and 40.00 are the same amount */
	pe_arghash_add(h, numeric_normalize(value));
}

/* The SHA-256 of the arguments added, as a bytea. */
bytea *
pe_arghash_final(PeArgHash *h)
{
	bytea	   *result = palloc(VARHDRSZ + PG_SHA256_DIGEST_LENGTH);

	if (pg_cryptohash_final(h->ctx, (uint8 *) VARDATA(result), PG_SHA256_DIGEST_LENGTH) < 0)
		elog(ERROR, "could not finish SHA-256");
	pg_cryptohash_free(h->ctx);
	SET_VARSIZE(result, VARHDRSZ + PG_SHA256_DIGEST_LENGTH);
	return result;
}

/* ---------------------------------------------------------------------------
 * Idempotency keys
 * ---------------------------------------------------------------------------
 */
static PePlan idem_claim_plan = {
	"INSERT INTO payment.idempotency_keys (operation, key, request_hash, result_id)"
	" VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
	4, {TEXTOID, TEXTOID, BYTEAOID, UUIDOID}, NULL, 0
};

static PePlan idem_lookup_plan = {
	"SELECT request_hash, result_id FROM payment.idempotency_keys"
	" WHERE operation = $1 AND key = $2",
	2, {TEXTOID, TEXTOID}, NULL, 0
};

/* Raise unless key is a usable idempotency key. */
void
pe_check_idempotency_key(const char *key)
{
	size_t		len = strlen(key);

	pe_guard_identifier(key, "idempotency_key");
	if (len == 0 || len > PE_MAX_IDEMPOTENCY_KEY)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("idempotency_key must have 1 to %d characters", PE_MAX_IDEMPOTENCY_KEY)));
}

/*
 * pe_idem_key_arg
 *		The idempotency key of the call, argument argno, checked, with *h
 *		started for the hash of the call's arguments; NULL (h untouched)
 *		when the argument is NULL.
 */
char *
pe_idem_key_arg(FunctionCallInfo fcinfo, int argno, PeArgHash *h)
{
	char	   *key;

	if (PG_ARGISNULL(argno))
		return NULL;
	key = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	pe_check_idempotency_key(key);
	pe_arghash_init(h);
	return key;
}

/*
 * pe_idem_claim
 *		Claim key for operation with the arguments' hash and the id the new
 *		row will have.  Returns true when the key was already used with the
 *		same arguments, setting *existing to the row it made; raises when it
 *		was used with other arguments; returns false when the key is ours.
 *		Caller is connected to SPI.
 */
bool
pe_idem_claim(const char *operation, const char *key, bytea *hash, Datum new_id,
			  Datum *existing)
{
	Datum		args[4];
	bool		isnull;
	bytea	   *old_hash;
	int			rc;

	args[0] = CStringGetTextDatum(operation);
	args[1] = CStringGetTextDatum(key);
	args[2] = PointerGetDatum(hash);
	args[3] = new_id;
	rc = SPI_execute_plan(pe_plan(&idem_claim_plan), args, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "claiming the idempotency key failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 1)
		return false;

	rc = SPI_execute_plan(pe_plan(&idem_lookup_plan), args, NULL, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "idempotency key vanished");
	old_hash = DatumGetByteaPP(pe_spi_getdatum(0, 1, &isnull));
	if (VARSIZE_ANY_EXHDR(old_hash) != VARSIZE_ANY_EXHDR(hash) ||
		memcmp(VARDATA_ANY(old_hash), VARDATA_ANY(hash), VARSIZE_ANY_EXHDR(hash)) != 0)
	{
		pe_audit_log_refusal(operation, "idempotency key reused with other arguments");
		/*
		 * Nothing about the earlier call: the key may be another user's,
		 * and the row it made is theirs.
		 */
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("idempotency key was already used with different arguments"),
				 errhint("Use a new key for a new request.")));
	}
	*existing = pe_spi_getdatum(0, 2, &isnull);
	return true;
}

/*
 * pe_idem_replay
 *		When key is not NULL and was already used for operation with the same
 *		arguments (pe_idem_claim): finish the caller's SPI connection, set
 *		*existing to the id of the row the first call made, copied out of
 *		SPI's memory, and return true; the caller returns it.  Raises when
 *		the key was used with other arguments; false when the call goes on.
 */
bool
pe_idem_replay(const char *operation, const char *key, bytea *hash, Datum new_id,
			   Datum *existing)
{
	if (key == NULL || !pe_idem_claim(operation, key, hash, new_id, existing))
		return false;
	*existing = SPI_datumTransfer(*existing, false, UUID_LEN);
	SPI_finish();
	return true;
}
