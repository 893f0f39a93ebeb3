/*-------------------------------------------------------------------------
 *
 * keyring.h
 *		The keyring as vault.c sees it (keyring.c loads it).
 *
 * IDENTIFICATION
 *		src/vault/keyring.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PE_KEYRING_H
#define PE_KEYRING_H

#include <openssl/evp.h>

#define VAULT_KEY_LEN			32
#define VAULT_KEY_ID_MAX		32

typedef struct VaultKey
{
	char		id[VAULT_KEY_ID_MAX + 1];
	unsigned char key[VAULT_KEY_LEN];
	/* vault.c's contexts with this key set, made on first use */
	EVP_CIPHER_CTX *enc_ctx;
	EVP_CIPHER_CTX *dec_ctx;
} VaultKey;

typedef struct VaultKeyring
{
	Size		mapsize;		/* bytes mapped, for munmap */
	int			nkeys;			/* keys[nkeys - 1] is the newest */
	VaultKey	keys[FLEXIBLE_ARRAY_MEMBER];
} VaultKeyring;

extern VaultKeyring *pe_keyring_get(void);
extern bool pe_key_id_char(char c);

#endif							/* PE_KEYRING_H */
