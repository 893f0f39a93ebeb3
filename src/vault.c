/*-------------------------------------------------------------------------
 *
 * vault.c
 *		The token vault: AES-256-GCM sealing of Stripe identifiers with
 *		OpenSSL EVP, the keyring, and the loader of secret files.
 *
 * A sealed value is "pe1:<key-id>:<base64 of nonce|ciphertext|tag>": a fresh
 * random 96-bit nonce from the OpenSSL CSPRNG, AES-256-GCM under the newest
 * key of the keyring, a 128-bit tag, and as additional authenticated data
 * the header "pe1:<key-id>:" followed by the caller's context.  Base64 is
 * decoded strictly (canonical padding, no unused bits), so every change of
 * a sealed value's text is detected.
 *
 * Invariants:
 *	- Key bytes live only in this backend's private memory: an anonymous
 *	  mapping, locked (when RLIMIT_MEMLOCK allows) and excluded from core
 *	  dumps, wiped with OPENSSL_cleanse before it is unmapped, which happens
 *	  when the keyring is replaced (after SIGHUP) and at process exit.  Never
 *	  shared memory, never a GUC value, never a message.
 *	- The keyring is loaded lazily, on first use in a backend, and again on
 *	  the first use after a configuration reload (the GUC assign hook marks
 *	  it stale).  It is never re-read per call.
 *	- The EVP_CIPHER is fetched once per backend.  An EVP_CIPHER_CTX lives
 *	  only inside one call of vault_encrypt/vault_decrypt, which allocate
 *	  every buffer first and raise no error while it exists: each path frees
 *	  it before anything is reported.
 *	- Buffers that held secrets (file contents, passphrases, unauthenticated
 *	  plaintext) are wiped before they are freed, and before any error is
 *	  raised after they were filled.
 *	- No message carries a key, a passphrase, a plaintext or a sealed value;
 *	  file paths and commands (superuser-only settings) go to the server log
 *	  only (errdetail_log).
 *
 * IDENTIFICATION
 *		src/vault.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "common/base64.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "port.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "payment_ext.h"
#include "vault.h"

/* ---------------------------------------------------------------------------
 * Constants
 * ---------------------------------------------------------------------------
 */

/* AES-256-GCM */
#define VAULT_KEY_LEN			32
#define VAULT_NONCE_LEN			12
#define VAULT_TAG_LEN			16

/* keyring file */
#define VAULT_KEY_ID_MAX		32
#define VAULT_MAX_KEYS			1024
#define VAULT_MAX_FILE_SIZE		(1024 * 1024)

/* encrypted keyring: this header line, then the output of "openssl enc" */
#define VAULT_ENC_MAGIC			"payment_ext-keyring-v1 aes-256-cbc pbkdf2-sha256 "
#define VAULT_ENC_SALTED		"Salted__"
#define VAULT_ENC_SALT_LEN		8
#define VAULT_ENC_MIN_ITER		10000
#define VAULT_ENC_MAX_ITER		100000000
#define VAULT_PASSPHRASE_MAX	1024

/* ---------------------------------------------------------------------------
 * Types and backend-local state
 * ---------------------------------------------------------------------------
 */
typedef struct VaultKey
{
	char		id[VAULT_KEY_ID_MAX + 1];
	unsigned char key[VAULT_KEY_LEN];
} VaultKey;

typedef struct VaultKeyring
{
	Size		mapsize;		/* bytes mapped, for munmap */
	int			nkeys;			/* keys[nkeys - 1] is the newest */
	VaultKey	keys[FLEXIBLE_ARRAY_MEMBER];
} VaultKeyring;

/* outcome of one seal or open; vault_report turns it into an ERROR */
typedef enum VaultStatus
{
	VAULT_OK,
	VAULT_MALFORMED,
	VAULT_UNKNOWN_KEY,
	VAULT_AUTH_FAILED,
	VAULT_CRYPTO_ERROR
} VaultStatus;

/* outcome of parsing a keyring's text */
typedef enum KeyringParse
{
	KEYRING_OK,
	KEYRING_MALFORMED,
	KEYRING_DUPLICATE,
	KEYRING_EMPTY,
	KEYRING_TOO_MANY,
	KEYRING_NO_MEMORY
} KeyringParse;

static VaultKeyring *vault_keyring = NULL;
static bool vault_keyring_stale = true;
static EVP_CIPHER *vault_cipher = NULL;
static bool vault_exit_registered = false;

/* ---------------------------------------------------------------------------
 * Keyring memory
 * ---------------------------------------------------------------------------
 */

/*
 * keyring_alloc
 *		Map zeroed private memory for nkeys keys, locked and kept out of core
 *		dumps where the system allows.  Returns NULL when mapping fails (the
 *		caller wipes what it holds and reports).
 */
static VaultKeyring *
keyring_alloc(int nkeys)
{
	Size		size = offsetof(VaultKeyring, keys) + sizeof(VaultKey) * nkeys;
	long		page = sysconf(_SC_PAGESIZE);
	void	   *p;
	VaultKeyring *kr;

	if (page <= 0)
		page = 4096;
	size = ((size + page - 1) / page) * page;
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			 -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	/* best effort: an unprivileged server may have a small RLIMIT_MEMLOCK */
	(void) mlock(p, size);
#ifdef MADV_DONTDUMP
	(void) madvise(p, size, MADV_DONTDUMP);
#endif
	kr = (VaultKeyring *) p;
	kr->mapsize = size;
	kr->nkeys = 0;
	return kr;
}

/* Wipe and unmap a keyring. */
static void
keyring_free(VaultKeyring *kr)
{
	Size		size;

	if (kr == NULL)
		return;
	size = kr->mapsize;
	OPENSSL_cleanse(kr, size);
	(void) munlock(kr, size);
	(void) munmap(kr, size);
}

/* Process exit: wipe the keys, free the cipher. */
static void
vault_at_exit(int code, Datum arg)
{
	keyring_free(vault_keyring);
	vault_keyring = NULL;
	vault_keyring_stale = true;
	if (vault_cipher != NULL)
		EVP_CIPHER_free(vault_cipher);
	vault_cipher = NULL;
}

/*
 * pe_assign_keyring
 *		Assign hook of payment_ext.keyring_file and
 *		payment_ext.keyring_passphrase_command, called on every configuration
 *		(re)load: wipe the keys now, load them again on next use.  Raises
 *		nothing, as assign hooks must.
 */
void
pe_assign_keyring(const char *newval, void *extra)
{
	keyring_free(vault_keyring);
	vault_keyring = NULL;
	vault_keyring_stale = true;
}

/* ---------------------------------------------------------------------------
 * Secret files
 * ---------------------------------------------------------------------------
 */

/*
 * pe_check_secret_path
 *		Check hook of the *_file settings: empty, or an absolute path that is
 *		not inside the data directory (textually; the loader checks again
 *		with symbolic links resolved).
 */
bool
pe_check_secret_path(char **newval, void **extra, GucSource source)
{
	const char *path = *newval;

	if (path == NULL || path[0] == '\0')
		return true;
	if (!is_absolute_path(path))
	{
		GUC_check_errdetail("The path must be absolute.");
		return false;
	}
	if (strchr(path, '\n') != NULL || strchr(path, '\r') != NULL)
	{
		GUC_check_errdetail("The path must not contain a line break.");
		return false;
	}
	if (DataDir != NULL)
	{
		char		canon[MAXPGPATH];

		strlcpy(canon, path, sizeof(canon));
		canonicalize_path(canon);
		if (path_is_prefix_of_path(DataDir, canon))
		{
			GUC_check_errdetail("A secret file must not be inside the data directory: a base backup would carry it.");
			return false;
		}
	}
	return true;
}

/*
 * vault_read_file
 *		Read the whole of the secret file path into a palloc'd buffer
 *		(NUL-terminated; *len excludes the terminator) after the checks of
 *		README "Secret files": a regular file, owned by the server's user or
 *		root, with no permission for group or others, outside the data
 *		directory, not empty, at most 1 MB.  what names the file in messages.
 *		Raises on any failure; the caller owns and must wipe the buffer.
 */
static char *
vault_read_file(const char *path, const char *what, Size *len)
{
	int			fd;
	struct stat st;
	char		real_file[PATH_MAX];
	char		real_data[PATH_MAX];
	char	   *buf;
	Size		size;
	Size		off = 0;

	if (path == NULL || path[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s is not configured", what)));
	if (!is_absolute_path(path))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("%s must be named by an absolute path", what)));

	fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
	if (fd < 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("could not open %s: %m", what),
				 errdetail_log("File \"%s\".", path)));

	if (fstat(fd, &st) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("could not stat %s: %m", what),
				 errdetail_log("File \"%s\".", path)));
	if (!S_ISREG(st.st_mode))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("%s is not a regular file", what),
				 errdetail_log("File \"%s\".", path)));
	if (st.st_uid != geteuid() && st.st_uid != 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("%s is not owned by the database server's user or root", what),
				 errdetail_log("File \"%s\".", path)));
	if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("%s is accessible by group or others", what),
				 errdetail_log("File \"%s\".", path),
				 errhint("Set its mode to 0600 or 0400.")));

	/* inside the data directory, symbolic links resolved */
	if (realpath(path, real_file) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("could not resolve the path of %s: %m", what),
				 errdetail_log("File \"%s\".", path)));
	if (DataDir != NULL && realpath(DataDir, real_data) != NULL &&
		path_is_prefix_of_path(real_data, real_file))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("%s is inside the data directory", what),
				 errdetail_log("File \"%s\".", path),
				 errhint("Keep secrets outside the data directory: a base backup would carry them next to the data they protect.")));

	if (st.st_size <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("%s is empty", what),
				 errdetail_log("File \"%s\".", path)));
	if (st.st_size > VAULT_MAX_FILE_SIZE)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("%s is larger than 1 MB", what),
				 errdetail_log("File \"%s\".", path)));

	size = (Size) st.st_size;
	buf = palloc(size + 1);
	while (off < size)
	{
		ssize_t		n = read(fd, buf + off, size - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
		{
			int			save_errno = errno;

			OPENSSL_cleanse(buf, size + 1);
			pfree(buf);
			errno = save_errno;
			ereport(ERROR,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 n < 0 ? errmsg("could not read %s: %m", what) :
					 errmsg("could not read %s: file changed while being read", what),
					 errdetail_log("File \"%s\".", path)));
		}
		off += n;
	}
	buf[size] = '\0';
	CloseTransientFile(fd);
	*len = size;
	return buf;
}

/*
 * pe_read_secret_file
 *		The secret held by the file path (the Stripe API key, the webhook
 *		signing secret): the file's text without trailing white space,
 *		palloc'd in CurrentMemoryContext.  Checks as vault_read_file; also
 *		refuses a file that holds a NUL byte or only white space.  The caller
 *		wipes the result with pe_secret_cleanse as soon as it is done.
 */
char *
pe_read_secret_file(const char *path, const char *what)
{
	Size		len;
	char	   *buf = vault_read_file(path, what, &len);

	if (strlen(buf) != len)
	{
		OPENSSL_cleanse(buf, len);
		pfree(buf);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("%s holds a NUL byte", what)));
	}
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' ||
					   buf[len - 1] == ' ' || buf[len - 1] == '\t'))
		buf[--len] = '\0';
	if (len == 0)
	{
		pfree(buf);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("%s holds only white space", what)));
	}
	return buf;
}

/* Wipe and free a secret returned by pe_read_secret_file. */
void
pe_secret_cleanse(char *secret)
{
	if (secret == NULL)
		return;
	OPENSSL_cleanse(secret, strlen(secret));
	pfree(secret);
}

/* ---------------------------------------------------------------------------
 * Keyring parsing
 * ---------------------------------------------------------------------------
 */

/* Key ids: 1-32 of [A-Za-z0-9_.-]; they appear in sealed values. */
static bool
vault_key_id_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		(c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
}

static int
vault_hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * keyring_parse_line
 *		Parse one line "<key-id> <64 hex digits>" (surrounding blanks allowed)
 *		of length len into *key.  Returns false if malformed.
 */
static bool
keyring_parse_line(const char *line, Size len, VaultKey *key)
{
	Size		i = 0;
	Size		idlen = 0;
	int			h;

	while (i < len && (line[i] == ' ' || line[i] == '\t'))
		i++;
	while (i < len && vault_key_id_char(line[i]))
	{
		if (idlen >= VAULT_KEY_ID_MAX)
			return false;
		key->id[idlen++] = line[i++];
	}
	key->id[idlen] = '\0';
	if (idlen == 0 || i >= len || (line[i] != ' ' && line[i] != '\t'))
		return false;
	while (i < len && (line[i] == ' ' || line[i] == '\t'))
		i++;
	if (len - i < VAULT_KEY_LEN * 2)
		return false;
	for (h = 0; h < VAULT_KEY_LEN; h++)
	{
		int			hi = vault_hex_value(line[i + 2 * h]);
		int			lo = vault_hex_value(line[i + 2 * h + 1]);

		if (hi < 0 || lo < 0)
			return false;
		key->key[h] = (unsigned char) ((hi << 4) | lo);
	}
	i += VAULT_KEY_LEN * 2;
	while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r'))
		i++;
	return i == len;
}

/*
 * keyring_parse
 *		Parse a keyring's text: one "<key-id> <64 hex>" per line, newest
 *		last; blank lines and lines starting with '#' are ignored.  On success
 *		*out is a new keyring; otherwise *out is NULL and *lineno the line at
 *		fault (0 when none).  Raises nothing, so that the caller can wipe the
 *		text before it reports.
 */
static KeyringParse
keyring_parse(const char *text, Size len, VaultKeyring **out, int *lineno)
{
	VaultKeyring *kr;
	int			nlines = 1;
	Size		pos = 0;
	int			line = 0;
	Size		i;

	*out = NULL;
	*lineno = 0;
	for (i = 0; i < len; i++)
		if (text[i] == '\n')
			nlines++;
	kr = keyring_alloc(Min(nlines, VAULT_MAX_KEYS));
	if (kr == NULL)
		return KEYRING_NO_MEMORY;

	while (pos < len)
	{
		const char *start = text + pos;
		const char *nl = memchr(start, '\n', len - pos);
		Size		linelen = nl ? (Size) (nl - start) : len - pos;
		Size		first = 0;
		int			k;

		line++;
		pos += linelen + (nl ? 1 : 0);

		if (memchr(start, '\0', linelen) != NULL)
		{
			*lineno = line;
			keyring_free(kr);
			return KEYRING_MALFORMED;
		}
		while (first < linelen && (start[first] == ' ' || start[first] == '\t' ||
								   start[first] == '\r'))
			first++;
		if (first == linelen || start[first] == '#')
			continue;

		if (kr->nkeys >= VAULT_MAX_KEYS)
		{
			*lineno = line;
			keyring_free(kr);
			return KEYRING_TOO_MANY;
		}
		if (!keyring_parse_line(start, linelen, &kr->keys[kr->nkeys]))
		{
			*lineno = line;
			keyring_free(kr);
			return KEYRING_MALFORMED;
		}
		for (k = 0; k < kr->nkeys; k++)
		{
			if (strcmp(kr->keys[k].id, kr->keys[kr->nkeys].id) == 0)
			{
				*lineno = line;
				keyring_free(kr);
				return KEYRING_DUPLICATE;
			}
		}
		kr->nkeys++;
	}
	if (kr->nkeys == 0)
	{
		keyring_free(kr);
		return KEYRING_EMPTY;
	}
	*out = kr;
	return KEYRING_OK;
}

/* ---------------------------------------------------------------------------
 * Encrypted keyring
 * ---------------------------------------------------------------------------
 */

/*
 * vault_run_passphrase_command
 *		Run payment_ext.keyring_passphrase_command ("%p" is replaced by a
 *		prompt, "%%" by "%") and copy the first line it prints, without its
 *		line break, into buf.  Returns the passphrase's length.  Raises if the
 *		command fails or prints nothing; buf is wiped first.
 */
static int
vault_run_passphrase_command(char *buf, int size)
{
	StringInfoData command;
	const char *p;
	FILE	   *fh;
	int			rc;
	int			len = 0;
	bool		got;

	initStringInfo(&command);
	for (p = pe_keyring_passphrase_command; *p; p++)
	{
		if (p[0] == '%' && p[1] == 'p')
		{
			appendStringInfoString(&command, "payment_ext keyring passphrase");
			p++;
		}
		else if (p[0] == '%' && p[1] == '%')
		{
			appendStringInfoChar(&command, '%');
			p++;
		}
		else
			appendStringInfoChar(&command, *p);
	}

	fflush(NULL);
	fh = OpenPipeStream(command.data, "r");
	if (fh == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("could not run payment_ext.keyring_passphrase_command: %m"),
				 errdetail_log("Command \"%s\".", command.data)));

	got = fgets(buf, size, fh) != NULL;
	rc = ClosePipeStream(fh);
	if (got)
	{
		len = strlen(buf);
		while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
			buf[--len] = '\0';
	}
	if (rc != 0 || len == 0)
	{
		OPENSSL_cleanse(buf, size);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 rc != 0 ?
				 errmsg("payment_ext.keyring_passphrase_command failed") :
				 errmsg("payment_ext.keyring_passphrase_command printed no passphrase"),
				 errdetail_log("Command \"%s\": %s.", command.data,
							   rc == -1 ? "could not close the pipe" : wait_result_to_str(rc))));
	}
	pfree(command.data);
	return len;
}

/*
 * vault_unlock_keyring
 *		Decrypt an encrypted keyring file (README "Encrypted keyring"):
 *		header line VAULT_ENC_MAGIC "<iterations>", then "Salted__", an 8-byte
 *		salt and AES-256-CBC ciphertext whose key and IV are PBKDF2-HMAC-SHA256
 *		of the passphrase, as "openssl enc -aes-256-cbc -pbkdf2 -md sha256
 *		-iter <iterations>" writes it.  Returns the palloc'd plaintext
 *		(length in *outlen), which the caller wipes.  Wipes file and
 *		passphrase before it raises.
 */
static char *
vault_unlock_keyring(char *file, Size len, Size *outlen)
{
	char		pass[VAULT_PASSPHRASE_MAX];
	unsigned char kiv[48];
	Size		magiclen = strlen(VAULT_ENC_MAGIC);
	const char *p = file + magiclen;
	const char *end = file + len;
	long		iter = 0;
	const unsigned char *salt;
	const unsigned char *ct;
	Size		ctlen;
	unsigned char *pt;
	int			passlen;
	int			n1 = 0;
	int			n2 = 0;
	bool		ok;
	EVP_CIPHER_CTX *ctx;

	while (p < end && *p >= '0' && *p <= '9' && iter <= VAULT_ENC_MAX_ITER)
		iter = iter * 10 + (*p++ - '0');
	if (p >= end || *p != '\n' || iter < VAULT_ENC_MIN_ITER || iter > VAULT_ENC_MAX_ITER)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("encrypted keyring has a malformed header"),
				 errdetail("The first line must be \"%s<iterations>\" with %d to %d iterations.",
						   VAULT_ENC_MAGIC, VAULT_ENC_MIN_ITER, VAULT_ENC_MAX_ITER)));
	p++;
	if ((Size) (end - p) < strlen(VAULT_ENC_SALTED) + VAULT_ENC_SALT_LEN + 16 ||
		memcmp(p, VAULT_ENC_SALTED, strlen(VAULT_ENC_SALTED)) != 0 ||
		(end - p - strlen(VAULT_ENC_SALTED) - VAULT_ENC_SALT_LEN) % 16 != 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("encrypted keyring is damaged"),
				 errdetail("After the header line it must hold the output of \"openssl enc -aes-256-cbc -salt\".")));
	salt = (const unsigned char *) p + strlen(VAULT_ENC_SALTED);
	ct = salt + VAULT_ENC_SALT_LEN;
	ctlen = end - (const char *) ct;

	/* every allocation before the secrets exist */
	pt = palloc(ctlen + 16 + 1);
	passlen = vault_run_passphrase_command(pass, sizeof(pass));

	ok = PKCS5_PBKDF2_HMAC(pass, passlen, salt, VAULT_ENC_SALT_LEN, (int) iter,
						   EVP_sha256(), sizeof(kiv), kiv) == 1;
	OPENSSL_cleanse(pass, sizeof(pass));
	ctx = ok ? EVP_CIPHER_CTX_new() : NULL;
	ok = ctx != NULL &&
		EVP_DecryptInit_ex(ctx, EVP_aes_256_cbc(), NULL, kiv, kiv + 32) == 1 &&
		EVP_DecryptUpdate(ctx, pt, &n1, ct, (int) ctlen) == 1 &&
		EVP_DecryptFinal_ex(ctx, pt + n1, &n2) == 1;
	if (ctx != NULL)
		EVP_CIPHER_CTX_free(ctx);
	OPENSSL_cleanse(kiv, sizeof(kiv));
	if (!ok)
	{
		OPENSSL_cleanse(pt, ctlen + 16 + 1);
		pfree(pt);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("could not unlock the encrypted keyring"),
				 errdetail("The passphrase is wrong or the file is damaged.")));
	}
	pt[n1 + n2] = '\0';
	*outlen = n1 + n2;
	return (char *) pt;
}

/* ---------------------------------------------------------------------------
 * Loading
 * ---------------------------------------------------------------------------
 */

/*
 * vault_load_keyring
 *		Read, unlock if encrypted, and parse payment_ext.keyring_file into a
 *		new keyring.  Raises on any failure, naming a line number, never a
 *		line.
 */
static VaultKeyring *
vault_load_keyring(void)
{
	Size		len;
	Size		textlen;
	char	   *file;
	char	   *text;
	bool		encrypted;
	bool		has_command;
	VaultKeyring *kr;
	KeyringParse rc;
	int			lineno;

	file = vault_read_file(pe_keyring_file, "the keyring file (payment_ext.keyring_file)",
						   &len);
	encrypted = len >= strlen(VAULT_ENC_MAGIC) &&
		memcmp(file, VAULT_ENC_MAGIC, strlen(VAULT_ENC_MAGIC)) == 0;
	has_command = pe_keyring_passphrase_command != NULL &&
		pe_keyring_passphrase_command[0] != '\0';

	if (encrypted != has_command)
	{
		OPENSSL_cleanse(file, len);
		pfree(file);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 encrypted ?
				 errmsg("the keyring file is encrypted but payment_ext.keyring_passphrase_command is not set") :
				 errmsg("payment_ext.keyring_passphrase_command is set but the keyring file is not encrypted"),
				 errhint("See \"Encrypted keyring\" in the README of payment_ext.")));
	}

	if (encrypted)
	{
		/* vault_unlock_keyring may raise: the encrypted file is no secret */
		text = vault_unlock_keyring(file, len, &textlen);
		pfree(file);
	}
	else
	{
		text = file;
		textlen = len;
	}

	rc = keyring_parse(text, textlen, &kr, &lineno);
	OPENSSL_cleanse(text, textlen);
	pfree(text);

	switch (rc)
	{
		case KEYRING_OK:
			break;
		case KEYRING_MALFORMED:
			ereport(ERROR,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("malformed line %d in the keyring file", lineno),
					 errdetail("Each line must be a key id (1 to %d of A-Z a-z 0-9 _ . -), blanks, and 64 hexadecimal digits.",
							   VAULT_KEY_ID_MAX)));
			break;
		case KEYRING_DUPLICATE:
			ereport(ERROR,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("duplicate key id on line %d of the keyring file", lineno)));
			break;
		case KEYRING_EMPTY:
			ereport(ERROR,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("the keyring file holds no key")));
			break;
		case KEYRING_TOO_MANY:
			ereport(ERROR,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("the keyring file holds more than %d keys (line %d)",
							VAULT_MAX_KEYS, lineno)));
			break;
		case KEYRING_NO_MEMORY:
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not map memory for the keyring: %m")));
			break;
	}
	return kr;
}

/*
 * vault_get_keyring
 *		This backend's keyring, loaded on first use and after a reload.  Also
 *		fetches the cipher once.  Raises if the keyring cannot be loaded (and
 *		tries again on the next call).
 */
static VaultKeyring *
vault_get_keyring(void)
{
	if (!vault_exit_registered)
	{
		on_proc_exit(vault_at_exit, (Datum) 0);
		vault_exit_registered = true;
	}
	if (vault_cipher == NULL)
	{
		vault_cipher = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
		if (vault_cipher == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_SYSTEM_ERROR),
					 errmsg("OpenSSL does not provide AES-256-GCM")));
	}
	if (vault_keyring == NULL || vault_keyring_stale)
	{
		keyring_free(vault_keyring);
		vault_keyring = NULL;
		vault_keyring = vault_load_keyring();
		vault_keyring_stale = false;
	}
	return vault_keyring;
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
vault_encrypt(const VaultKey *key, const char *aad_head, int aad_head_len,
			  const char *context, int ctxlen,
			  const char *pt, int ptlen, unsigned char *raw)
{
	EVP_CIPHER_CTX *ctx;
	unsigned char *nonce = raw;
	unsigned char *ct = raw + VAULT_NONCE_LEN;
	unsigned char *tag = ct + ptlen;
	int			n;
	bool		ok;

	if (RAND_bytes(nonce, VAULT_NONCE_LEN) != 1)
		return VAULT_CRYPTO_ERROR;
	ctx = EVP_CIPHER_CTX_new();
	if (ctx == NULL)
		return VAULT_CRYPTO_ERROR;
	ok = EVP_EncryptInit_ex2(ctx, vault_cipher, key->key, nonce, NULL) == 1 &&
		EVP_EncryptUpdate(ctx, NULL, &n, (const unsigned char *) aad_head, aad_head_len) == 1 &&
		(ctxlen == 0 ||
		 EVP_EncryptUpdate(ctx, NULL, &n, (const unsigned char *) context, ctxlen) == 1) &&
		(ptlen == 0 ||
		 EVP_EncryptUpdate(ctx, ct, &n, (const unsigned char *) pt, ptlen) == 1) &&
		EVP_EncryptFinal_ex(ctx, ct + ptlen, &n) == 1 &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, VAULT_TAG_LEN, tag) == 1;
	EVP_CIPHER_CTX_free(ctx);
	return ok ? VAULT_OK : VAULT_CRYPTO_ERROR;
}

/*
 * vault_decrypt
 *		Open raw (nonce | ciphertext | tag, rawlen bytes) under key with
 *		aad_head || context as AAD into pt (room for rawlen - 28 + 1).  On
 *		failure pt is wiped: it may hold unauthenticated plaintext.  Raises
 *		nothing.
 */
static VaultStatus
vault_decrypt(const VaultKey *key, const char *aad_head, int aad_head_len,
			  const char *context, int ctxlen,
			  unsigned char *raw, int rawlen, char *pt)
{
	EVP_CIPHER_CTX *ctx;
	int			ptlen = rawlen - VAULT_NONCE_LEN - VAULT_TAG_LEN;
	unsigned char *ct = raw + VAULT_NONCE_LEN;
	unsigned char *tag = ct + ptlen;
	int			n;
	bool		ok;

	ctx = EVP_CIPHER_CTX_new();
	if (ctx == NULL)
		return VAULT_CRYPTO_ERROR;
	ok = EVP_DecryptInit_ex2(ctx, vault_cipher, key->key, raw, NULL) == 1 &&
		EVP_DecryptUpdate(ctx, NULL, &n, (const unsigned char *) aad_head, aad_head_len) == 1 &&
		(ctxlen == 0 ||
		 EVP_DecryptUpdate(ctx, NULL, &n, (const unsigned char *) context, ctxlen) == 1) &&
		(ptlen == 0 ||
		 EVP_DecryptUpdate(ctx, (unsigned char *) pt, &n, ct, ptlen) == 1) &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, VAULT_TAG_LEN, tag) == 1 &&
		EVP_DecryptFinal_ex(ctx, (unsigned char *) pt + ptlen, &n) == 1;
	EVP_CIPHER_CTX_free(ctx);
	if (!ok)
	{
		OPENSSL_cleanse(pt, ptlen + 1);
		return VAULT_AUTH_FAILED;
	}
	pt[ptlen] = '\0';
	return VAULT_OK;
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
	const VaultKey *key = &kr->keys[kr->nkeys - 1];
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
	const VaultKey *key = NULL;
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
		if (!vault_key_id_char(id[k]))
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

/*
 * pe_extension_schema
 *		Name of the schema payment_ext's tables live in (CREATE EXTENSION's
 *		target), palloc'd.  PG15 does not export get_extension_schema.
 */
char *
pe_extension_schema(void)
{
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tuple;
	Oid			nspid = InvalidOid;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum("payment_ext"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
		nspid = ((Form_pg_extension) GETSTRUCT(tuple))->extnamespace;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	if (!OidIsValid(nspid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"payment_ext\" is not installed in this database")));
	return get_namespace_name(nspid);
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
