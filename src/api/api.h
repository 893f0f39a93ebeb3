/*-------------------------------------------------------------------------
 *
 * api.h
 *		What the application's functions (payment.create, payment.retry,
 *		payment.refund) share: their idempotency keys (idempotency.c).
 *
 * IDENTIFICATION
 *		src/api/api.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PE_API_H
#define PE_API_H

#include "common/cryptohash.h"
#include "fmgr.h"
#include "utils/numeric.h"

/* The hash of a call's arguments, for its idempotency key */
typedef struct PeArgHash
{
	pg_cryptohash_ctx *ctx;
} PeArgHash;

extern void pe_arghash_init(PeArgHash *h);
extern void pe_arghash_add(PeArgHash *h, const char *value);
extern void pe_arghash_add_numeric(PeArgHash *h, Numeric value);
extern bytea *pe_arghash_final(PeArgHash *h);

extern void pe_check_idempotency_key(const char *key);
extern char *pe_idem_key_arg(FunctionCallInfo fcinfo, int argno, PeArgHash *h);
extern bool pe_idem_claim(const char *operation, const char *key, bytea *hash,
						  Datum new_id, Datum *existing);
extern bool pe_idem_replay(const char *operation, const char *key, bytea *hash,
						   Datum new_id, Datum *existing);

#endif							/* PE_API_H */
