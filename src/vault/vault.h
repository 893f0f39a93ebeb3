/*-------------------------------------------------------------------------
 *
 * vault.h
 *		The token vault: what other files of payment_ext call.
 *
 * Sealing (vault.c): AES-256-GCM under the newest key of the keyring,
 * a fresh random 96-bit nonce per value, text form
 * "pe1:<key-id>:<base64 of nonce|ciphertext|tag>", with the context bound as
 * additional authenticated data.  A sealed column's context is exactly
 * "<Table>.<Column>:<row Id>", for example
 * "Payments.EncryptedStripePaymentIntentId:<uuid>"; a sealed value in
 * payment.outbox.request uses "outbox.request.<param>:<idempotency_key>"
 * (pe_vault_context builds both).  Results are palloc'd in
 * CurrentMemoryContext; a value that does not open raises an ERROR that
 * carries neither the value nor any key material.
 *
 * IDENTIFICATION
 *		src/vault/vault.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PE_VAULT_H
#define PE_VAULT_H

#include "catalog/pg_attribute.h"
#include "utils/guc.h"

/* SQLSTATEs of class PE (payment_ext), listed in README */
#define ERRCODE_PE_SEALED_INVALID	MAKE_SQLSTATE('P','E','0','0','2')
#define ERRCODE_PE_KEY_NOT_FOUND	MAKE_SQLSTATE('P','E','0','0','3')

/* The prefix of every sealed value */
#define PE_SEALED_PREFIX			"pe1:"

/* The prefix of every sealed column of the spec's tables ("Encrypted...") */
#define PE_SEALED_COLUMN_PREFIX		"Encrypted"

/* sealing */
extern char *pe_seal(const char *plaintext, const char *context);
extern char *pe_open(const char *sealed, const char *context);
extern bool pe_try_open(const char *sealed, const char *context,
						char **plaintext);
extern char *pe_vault_context(const char *table, const char *column,
							  const char *row_id);
extern const char *pe_newest_key_id(void);
extern char *pe_vault_key_id_of(const char *sealed);

/* sealed.c: is att a sealed column ("Encrypted..." text)? */
extern bool pe_sealed_column(Form_pg_attribute att);

/*
 * key rotation (rotate.c): the lock one rotation holds while it runs, an
 * advisory lock in a lock space of its own (pg_locks.objsubid)
 */
#define PE_ROTATE_LOCK_SPACE		0x5046
extern bool pe_rotation_lock(bool wait);

/* secret files (keyring, Stripe API key, webhook signing secret) */
extern char *pe_read_secret_file(const char *path, const char *what);
extern void pe_secret_cleanse(char *secret);

/* GUC hooks (keyring.c), installed by _PG_init in payment_ext.c */
extern bool pe_check_secret_path(char **newval, void **extra, GucSource source);
extern void pe_assign_keyring(const char *newval, void *extra);

#endif							/* PE_VAULT_H */
