/*-------------------------------------------------------------------------
 *
 * vault.c
 *		The token vault: AES-256-GCM sealing of Stripe identifiers with
 *		OpenSSL EVP, and its SQL functions.
 *
 * A sealed value is "pe1:<key-id>:<base64 of nonce|ciphertext|tag>": a fresh
 * random 96-bit nonce from the OpenSSL CSPRNG, AES-256-GCM under the newest
 * key of the keyring (keyring.c), a 128-bit tag, and as additional
 * authenticated data the header "pe1:<key-id>:" followed by the caller's
 * context.  Base64 is decoded strictly (canonical padding, no unused bits),
 * so every change of a sealed value's text is detected.
 *
 * Invariants:
 *	- The EVP_CIPHER is fetched once per backend.  Each key has at most two
 *	  EVP_CIPHER_CTX (seal, open) with its key schedule set, made on first
 *	  use and freed with the keyring (reload, process exit); a call only
 *	  sets a new nonce.  OpenSSL calls raise nothing: every buffer is
 *	  allocated first, and an outcome code becomes an ERROR in
 *	  vault_report, after the OpenSSL work is over.
 *	- Nonces are drawn from RAND_bytes in blocks of VAULT_NONCE_POOL, each
 *	  handed out once; the pool is filled only in the backend that uses it
 *	  (never before a fork).
 *	- A failed open wipes the unauthenticated plaintext it produced.
 *	- No message carries a key, a plaintext or a sealed value.
 *
 * IDENTIFICATION
 *		src/vault/vault.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "fmgr.h"
#include "funcapi.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "guard/guard.h"
#include "vault/keyring.h"
#include "vault/vault.h"

/* ---------------------------------------------------------------------------
 * Constants, types and backend-local state
 * ---------------------------------------------------------------------------
 */
#define VAULT_NONCE_LEN			12
#define VAULT_TAG_LEN			16
#define VAULT_NONCE_POOL		128		/* nonces per RAND_bytes call */

/* outcome of one seal or open; vault_report turns it into an ERROR */
typedef enum VaultStatus
{
	VAULT_OK,
	VAULT_MALFORMED,
	VAULT_UNKNOWN_KEY,
	VAULT_AUTH_FAILED,
	VAULT_CRYPTO_ERROR
} VaultStatus;

static EVP_CIPHER *vault_cipher = NULL;
static unsigned char vault_nonces[VAULT_NONCE_POOL * VAULT_NONCE_LEN];
static int	vault_nonces_left = 0;

/*
 * vault_get_keyring
 *		The keyring, with the cipher fetched once per backend.
 */
static VaultKeyring *
vault_get_keyring(void)
{
	if (vault_cipher == NULL)
	{
		vault_cipher = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
		if (vault_cipher == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_SYSTEM_ERROR),
					 errmsg("OpenSSL does not provide AES-256-GCM")));
	}
	return pe_keyring_get();
}

/*
 * pe_newest_key_id
 *		Id of the key that seals, loading the keyring if needed.  Points into
 *		the keyring: copy it before anything may reload the configuration.
 */
const char *
pe_newest_key_id(void)
{
	VaultKeyring *kr = vault_get_keyring();

	return kr->keys[kr->nkeys - 1].id;
}

/* Next fresh nonce into out; false if the CSPRNG fails. */
static bool
vault_next_nonce(unsigned char *out)
{
	if (vault_nonces_left == 0)
	{
		if (RAND_bytes(vault_nonces, sizeof(vault_nonces)) != 1)
			return false;
		vault_nonces_left = VAULT_NONCE_POOL;
	}
	vault_nonces_left--;
	memcpy(out, vault_nonces + vault_nonces_left * VAULT_NONCE_LEN, VAULT_NONCE_LEN);
	/* each nonce is used once */
	memset(vault_nonces + vault_nonces_left * VAULT_NONCE_LEN, 0, VAULT_NONCE_LEN);
	return true;
}

/*
 * vault_key_ctx
 *		The context of key for sealing (encrypt) or opening, with the key
 *		schedule set; made on first use.  NULL if OpenSSL fails.
 */
static EVP_CIPHER_CTX *
vault_key_ctx(VaultKey *key, bool encrypt)
{
	EVP_CIPHER_CTX **slot = encrypt ? &key->enc_ctx : &key->dec_ctx;
	EVP_CIPHER_CTX *ctx;

	if (*slot != NULL)
		return *slot;
	ctx = EVP_CIPHER_CTX_new();
	if (ctx == NULL)
		return NULL;
	if ((encrypt ?
		 EVP_EncryptInit_ex2(ctx, vault_cipher, key->key, NULL, NULL) :
		 EVP_DecryptInit_ex2(ctx, vault_cipher, key->key, NULL, NULL)) != 1)
	{
		EVP_CIPHER_CTX_free(ctx);
		return NULL;
	}
	*slot = ctx;
	return ctx;
}

/* ---------------------------------------------------------------------------
 * Base64, strict
 * ---------------------------------------------------------------------------
 */
static const char vault_b64_chars[] =
"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int
vault_b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Encode len bytes of src into dst (room for 4 * ceil(len / 3) + 1). */
static void
vault_b64_encode(const unsigned char *src, int len, char *dst)
{
	int			i;

	for (i = 0; i + 2 < len; i += 3)
	{
		uint32		v = (src[i] << 16) | (src[i + 1] << 8) | src[i + 2];

		*dst++ = vault_b64_chars[(v >> 18) & 63];
		*dst++ = vault_b64_chars[(v >> 12) & 63];
		*dst++ = vault_b64_chars[(v >> 6) & 63];
		*dst++ = vault_b64_chars[v & 63];
	}
	if (len - i == 1)
	{
		*dst++ = vault_b64_chars[src[i] >> 2];
		*dst++ = vault_b64_chars[(src[i] & 3) << 4];
		*dst++ = '=';
		*dst++ = '=';
	}
	else if (len - i == 2)
	{
		*dst++ = vault_b64_chars[src[i] >> 2];
		*dst++ = vault_b64_chars[((src[i] & 3) << 4) | (src[i + 1] >> 4)];
		*dst++ = vault_b64_chars[(src[i + 1] & 15) << 2];
		*dst++ = '=';
	}
	*dst = '\0';
}

/*
 * vault_b64_decode
 *		Decode canonical base64 (length a multiple of 4, padding only at the
 *		end, unused bits zero) into dst (room for len / 4 * 3).  Returns the
 *		decoded length, or -1 for anything else.
 */
static int
vault_b64_decode(const char *src, int len, unsigned char *dst)
{
	int			i;
	int			out = 0;

	if (len <= 0 || len % 4 != 0)
		return -1;
	for (i = 0; i < len; i += 4)
	{
		int			a = vault_b64_value(src[i]);
		int			b = vault_b64_value(src[i + 1]);
		int			c;
		int			d;
		bool		last = (i + 4 == len);

		if (a < 0 || b < 0)
			return -1;
		if (last && src[i + 2] == '=' && src[i + 3] == '=')
		{
			if (b & 15)
				return -1;
			dst[out++] = (a << 2) | (b >> 4);
			break;
		}
		c = vault_b64_value(src[i + 2]);
		if (c < 0)
			return -1;
		if (last && src[i + 3] == '=')
		{
			if (c & 3)
				return -1;
			dst[out++] = (a << 2) | (b >> 4);
			dst[out++] = ((b & 15) << 4) | (c >> 2);
			break;
		}
		d = vault_b64_value(src[i + 3]);
		if (d < 0)
			return -1;
		dst[out++] = (a << 2) | (b >> 4);
		dst[out++] = ((b & 15) << 4) | (c >> 2);
		dst[out++] = ((c & 3) << 6) | d;
	}
	return out;
}

/* ---------------------------------------------------------------------------
 * Seal and open
 * ---------------------------------------------------------------------------
 */

/*
 * vault_report
 *		The one place where a seal or open outcome becomes an ERROR.  Names
 *		the key id only when asked (an id from the keyring or one that
 *		passed the id syntax and the card-number guard).
 */
static void
vault_report(VaultStatus status, const char *key_id)
{
	switch (status)
	{
		case VAULT_OK:
			return;
		case VAULT_MALFORMED:
			ereport(ERROR,
					(errcode(ERRCODE_PE_SEALED_INVALID),
					 errmsg("sealed value does not open"),
					 errdetail("It is not of the form pe1:<key-id>:<base64>, or it is truncated.")));
			break;
		case VAULT_UNKNOWN_KEY:
			ereport(ERROR,
					(errcode(ERRCODE_PE_KEY_NOT_FOUND),
					 errmsg("sealed value names a key that is not in the keyring"),
					 key_id ? errdetail("Key id \"%s\".", key_id) : 0,
					 errhint("Put the key back into payment_ext.keyring_file; payment.key_usage shows which keys are still in use.")));
			break;
		case VAULT_AUTH_FAILED:
			ereport(ERROR,
					(errcode(ERRCODE_PE_SEALED_INVALID),
					 errmsg("sealed value does not open"),
					 errdetail("It was changed, it belongs to another context (column or row), or its key is not the one it was sealed with.")));
			break;
		case VAULT_CRYPTO_ERROR:
			ereport(ERROR,
					(errcode(ERRCODE_SYSTEM_ERROR),
					 errmsg("OpenSSL failed to seal or open a value")));
			break;
	}
}

/*
 * vault_encrypt
 *		Seal ptlen bytes of pt under key with aad_head || context as AAD into
 *		raw (nonce | ciphertext | tag, room for ptlen + 28).  Raises nothing.
 */
static VaultStatus
vault_encrypt(VaultKey *key, const char *aad_head, int aad_head_len,
			  const char *context, int ctxlen,
			  const char *pt, int ptlen, unsigned char *raw)
{
	EVP_CIPHER_CTX *ctx;
	unsigned char *nonce = raw;
	unsigned char *ct = raw + VAULT_NONCE_LEN;
	unsigned char *tag = ct + ptlen;
	int			n;

	if (!vault_next_nonce(nonce))
		return VAULT_CRYPTO_ERROR;
	ctx = vault_key_ctx(key, true);
	if (ctx == NULL)
		return VAULT_CRYPTO_ERROR;
	if (EVP_EncryptInit_ex2(ctx, NULL, NULL, nonce, NULL) == 1 &&
		EVP_EncryptUpdate(ctx, NULL, &n, (const unsigned char *) aad_head, aad_head_len) == 1 &&
		(ctxlen == 0 ||
		 EVP_EncryptUpdate(ctx, NULL, &n, (const unsigned char *) context, ctxlen) == 1) &&
		(ptlen == 0 ||
		 EVP_EncryptUpdate(ctx, ct, &n, (const unsigned char *) pt, ptlen) == 1) &&
		EVP_EncryptFinal_ex(ctx, ct + ptlen, &n) == 1 &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, VAULT_TAG_LEN, tag) == 1)
		return VAULT_OK;
	return VAULT_CRYPTO_ERROR;
}

/*
 * vault_decrypt
 *		Open raw (nonce | ciphertext | tag, rawlen bytes) under key with
 *		aad_head || context as AAD into pt (room for rawlen - 28 + 1).  On
 *		failure pt is wiped: it may hold unauthenticated plaintext.  Raises
 *		nothing.
 */
static VaultStatus
vault_decrypt(VaultKey *key, const char *aad_head, int aad_head_len,
			  const char *context, int ctxlen,
			  unsigned char *raw, int rawlen, char *pt)
{
	EVP_CIPHER_CTX *ctx;
	int			ptlen = rawlen - VAULT_NONCE_LEN - VAULT_TAG_LEN;
	unsigned char *ct = raw + VAULT_NONCE_LEN;
	unsigned char *tag = ct + ptlen;
	int			n;

	ctx = vault_key_ctx(key, false);
	if (ctx == NULL)
		return VAULT_CRYPTO_ERROR;
	if (EVP_DecryptInit_ex2(ctx, NULL, NULL, raw, NULL) == 1 &&
		EVP_DecryptUpdate(ctx, NULL, &n, (const unsigned char *) aad_head, aad_head_len) == 1 &&
		(ctxlen == 0 ||
		 EVP_DecryptUpdate(ctx, NULL, &n, (const unsigned char *) context, ctxlen) == 1) &&
		(ptlen == 0 ||
		 EVP_DecryptUpdate(ctx, (unsigned char *) pt, &n, ct, ptlen) == 1) &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, VAULT_TAG_LEN, tag) == 1 &&
		EVP_DecryptFinal_ex(ctx, (unsigned char *) pt + ptlen, &n) == 1)
	{
		pt[ptlen] = '\0';
		return VAULT_OK;
	}
	OPENSSL_cleanse(pt, ptlen + 1);
	return VAULT_AUTH_FAILED;
}

/*
 * pe_seal
 *		Seal plaintext under the newest key, bound to context.  Returns the
 *		sealed text form, palloc'd in CurrentMemoryContext.
 */
char *
pe_seal(const char *plaintext, const char *context)
{
	VaultKeyring *kr = vault_get_keyring();
	VaultKey   *key = &kr->keys[kr->nkeys - 1];
	int			ptlen = strlen(plaintext);
	int			ctxlen = strlen(context);
	int			idlen = strlen(key->id);
	int			head_len = strlen(PE_SEALED_PREFIX) + idlen + 1;
	int			rawlen = VAULT_NONCE_LEN + ptlen + VAULT_TAG_LEN;
	unsigned char *raw;
	char	   *out;
	VaultStatus status;

	if (ptlen > 64 * 1024 * 1024)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("value to seal is longer than 64 MB")));

	raw = palloc(rawlen);
	out = palloc(head_len + 4 * ((rawlen + 2) / 3) + 1);
	memcpy(out, PE_SEALED_PREFIX, strlen(PE_SEALED_PREFIX));
	memcpy(out + strlen(PE_SEALED_PREFIX), key->id, idlen);
	out[head_len - 1] = ':';

	status = vault_encrypt(key, out, head_len, context, ctxlen,
						   plaintext, ptlen, raw);
	if (status != VAULT_OK)
		vault_report(status, NULL);
	vault_b64_encode(raw, rawlen, out + head_len);
	pfree(raw);
	return out;
}

/*
 * vault_open_status
 *		Open sealed under context.  On success *plaintext is palloc'd;
 *		otherwise a status for vault_report, and *bad_key_id names the unknown
 *		key when it is fit to be shown.  Raises only if the keyring cannot be
 *		loaded.
 */
static VaultStatus
vault_open_status(const char *sealed, const char *context, char **plaintext,
				  char *bad_key_id)
{
	VaultKeyring *kr;
	VaultKey   *key = NULL;
	const char *id = sealed + strlen(PE_SEALED_PREFIX);
	const char *colon;
	int			idlen;
	int			head_len;
	int			b64len;
	int			rawlen;
	unsigned char *raw;
	char	   *pt;
	int			k;
	VaultStatus status;

	*plaintext = NULL;
	bad_key_id[0] = '\0';
	if (strncmp(sealed, PE_SEALED_PREFIX, strlen(PE_SEALED_PREFIX)) != 0)
		return VAULT_MALFORMED;
	colon = strchr(id, ':');
	if (colon == NULL)
		return VAULT_MALFORMED;
	idlen = colon - id;
	if (idlen < 1 || idlen > VAULT_KEY_ID_MAX)
		return VAULT_MALFORMED;
	for (k = 0; k < idlen; k++)
		if (!pe_key_id_char(id[k]))
			return VAULT_MALFORMED;

	kr = vault_get_keyring();
	for (k = kr->nkeys - 1; k >= 0; k--)
	{
		if (strncmp(kr->keys[k].id, id, idlen) == 0 && kr->keys[k].id[idlen] == '\0')
		{
			key = &kr->keys[k];
			break;
		}
	}
	if (key == NULL)
	{
		memcpy(bad_key_id, id, idlen);
		bad_key_id[idlen] = '\0';
		if (pe_contains_card_number(bad_key_id, true))
			bad_key_id[0] = '\0';
		return VAULT_UNKNOWN_KEY;
	}

	head_len = colon + 1 - sealed;
	b64len = strlen(colon + 1);
	raw = palloc(b64len / 4 * 3 + 1);
	rawlen = vault_b64_decode(colon + 1, b64len, raw);
	if (rawlen < VAULT_NONCE_LEN + VAULT_TAG_LEN)
	{
		pfree(raw);
		return VAULT_MALFORMED;
	}
	pt = palloc(rawlen - VAULT_NONCE_LEN - VAULT_TAG_LEN + 1);
	status = vault_decrypt(key, sealed, head_len, context, strlen(context),
						   raw, rawlen, pt);
	pfree(raw);
	if (status != VAULT_OK)
	{
		pfree(pt);
		return status;
	}
	*plaintext = pt;
	return VAULT_OK;
}

/*
 * pe_open
 *		Open a sealed value bound to context.  Returns the plaintext,
 *		palloc'd in CurrentMemoryContext; raises ERRCODE_PE_SEALED_INVALID or
 *		ERRCODE_PE_KEY_NOT_FOUND if it does not open.
 */
char *
pe_open(const char *sealed, const char *context)
{
	char	   *pt;
	char		bad_key_id[VAULT_KEY_ID_MAX + 1];
	VaultStatus status;

	status = vault_open_status(sealed, context, &pt, bad_key_id);
	if (status != VAULT_OK)
		vault_report(status, bad_key_id[0] ? bad_key_id : NULL);
	return pt;
}

/*
 * pe_try_open
 *		Like pe_open, but returns false instead of raising when the value does
 *		not open (malformed, unknown key, changed, wrong context).  On success
 *		*plaintext is palloc'd.  Still raises if the keyring cannot be loaded.
 */
bool
pe_try_open(const char *sealed, const char *context, char **plaintext)
{
	char		bad_key_id[VAULT_KEY_ID_MAX + 1];

	return vault_open_status(sealed, context, plaintext, bad_key_id) == VAULT_OK;
}

/*
 * pe_vault_context
 *		The context of a sealed column: "<table>.<column>:<row_id>".
 */
char *
pe_vault_context(const char *table, const char *column, const char *row_id)
{
	return psprintf("%s.%s:%s", table, column, row_id);
}

/*
 * pe_vault_key_id_of
 *		Key id of a sealed value (palloc'd), or NULL if it is not of the form
 *		pe1:<key-id>:...
 */
char *
pe_vault_key_id_of(const char *sealed)
{
	const char *id;
	const char *colon;

	if (strncmp(sealed, PE_SEALED_PREFIX, strlen(PE_SEALED_PREFIX)) != 0)
		return NULL;
	id = sealed + strlen(PE_SEALED_PREFIX);
	colon = strchr(id, ':');
	if (colon == NULL || colon == id || colon - id > VAULT_KEY_ID_MAX)
		return NULL;
	return pnstrdup(id, colon - id);
}

/* ---------------------------------------------------------------------------
 * SQL functions
 * ---------------------------------------------------------------------------
 */

/* SQL function: payment.encrypt(text, text) returns text */
PG_FUNCTION_INFO_V1(pe_encrypt);
Datum
pe_encrypt(PG_FUNCTION_ARGS)
{
	char	   *plaintext = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *context = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *sealed;

	pe_guard_text(plaintext, "plaintext");
	pe_guard_text(context, "context");
	sealed = pe_seal(plaintext, context);
	OPENSSL_cleanse(plaintext, strlen(plaintext));
	PG_RETURN_TEXT_P(cstring_to_text(sealed));
}

/* SQL function: payment.decrypt(text, text) returns text */
PG_FUNCTION_INFO_V1(pe_decrypt);
Datum
pe_decrypt(PG_FUNCTION_ARGS)
{
	char	   *sealed = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *context = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *plaintext = pe_open(sealed, context);
	text	   *result = cstring_to_text(plaintext);

	OPENSSL_cleanse(plaintext, strlen(plaintext));
	PG_RETURN_TEXT_P(result);
}

/* SQL function: payment.keyring_keys() returns setof (key_id text, position int, newest boolean) */
PG_FUNCTION_INFO_V1(pe_keyring_keys);
Datum
pe_keyring_keys(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	VaultKeyring *kr;
	int			k;

	InitMaterializedSRF(fcinfo, 0);
	kr = vault_get_keyring();
	for (k = 0; k < kr->nkeys; k++)
	{
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		values[0] = CStringGetTextDatum(kr->keys[k].id);
		values[1] = Int32GetDatum(k + 1);
		values[2] = BoolGetDatum(k == kr->nkeys - 1);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
