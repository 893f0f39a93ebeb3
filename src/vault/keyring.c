/*-------------------------------------------------------------------------
 *
 * keyring.c
 *		The vault's keys: the keyring file (plain or encrypted under a
 *		passphrase from a command), and the loader of secret files shared
 *		with the Stripe API key and the webhook signing secret.
 *
 * Invariants:
 *	- Key bytes live only in this backend's private memory: an anonymous
 *	  mapping, locked (when RLIMIT_MEMLOCK allows) and excluded from core
 *	  dumps, wiped with OPENSSL_cleanse before it is unmapped.  That happens
 *	  when the keyring is replaced (the assign hook runs at every
 *	  configuration reload) and at process exit.  Never shared memory, never
 *	  a GUC value, never a message.  The cipher contexts that vault.c keeps
 *	  per key are freed with the keyring.
 *	- The keyring is loaded lazily, on first use in a backend, and again on
 *	  the first use after a reload; never per call.
 *	- Buffers that held secrets (file contents, passphrases, decrypted
 *	  keyrings) are wiped before they are freed and before any error is
 *	  raised after they were filled.  Parsing raises nothing: it returns a
 *	  code and a line number, and the caller wipes, then reports.
 *	- No message carries a key, a passphrase or a line of the file; paths
 *	  and commands (superuser-only settings) go to the server log only
 *	  (errdetail_log).  Files are opened with OpenTransientFile and commands
 *	  with OpenPipeStream, which an ERROR closes.
 *
 * IDENTIFICATION
 *		src/vault/keyring.c
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

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "port.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "utils/guc.h"

#include "base/guc.h"
#include "base/text.h"
#include "vault/keyring.h"
#include "vault/vault.h"

/* ---------------------------------------------------------------------------
 * Constants, types and backend-local state
 * ---------------------------------------------------------------------------
 */
#define KEYRING_MAX_KEYS		1024
#define KEYRING_MAX_FILE_SIZE	(1024 * 1024)

/* encrypted keyring: this header line, then the output of "openssl enc" */
#define KEYRING_ENC_MAGIC		"payment_ext-keyring-v1 aes-256-cbc pbkdf2-sha256 "
#define KEYRING_ENC_SALTED		"Salted__"
#define KEYRING_ENC_SALT_LEN	8
#define KEYRING_ENC_MIN_ITER	10000
#define KEYRING_ENC_MAX_ITER	100000000
#define KEYRING_PASSPHRASE_MAX	1024

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

static VaultKeyring *keyring_current = NULL;
static bool keyring_stale = true;
static bool keyring_exit_registered = false;

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
	int			k;

	if (kr == NULL)
		return;
	for (k = 0; k < kr->nkeys; k++)
	{
		if (kr->keys[k].enc_ctx != NULL)
			EVP_CIPHER_CTX_free(kr->keys[k].enc_ctx);
		if (kr->keys[k].dec_ctx != NULL)
			EVP_CIPHER_CTX_free(kr->keys[k].dec_ctx);
	}
	size = kr->mapsize;
	OPENSSL_cleanse(kr, size);
	(void) munlock(kr, size);
	(void) munmap(kr, size);
}

/* Process exit: wipe the keys. */
static void
keyring_at_exit(int code, Datum arg)
{
	keyring_free(keyring_current);
	keyring_current = NULL;
	keyring_stale = true;
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
	keyring_free(keyring_current);
	keyring_current = NULL;
	keyring_stale = true;
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
 * keyring_read_file
 *		Read the whole of the secret file path into a palloc'd buffer
 *		(NUL-terminated; *len excludes the terminator) after the checks of
 *		README "Token vault" (Keyring): a regular file, owned by the
 *		server's user or root, with no permission for group or others,
 *		outside the data directory, not empty, at most 1 MB.  what names the file in messages.
 *		Raises on any failure; the caller owns and must wipe the buffer.
 */
static char *
keyring_read_file(const char *path, const char *what, Size *len)
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
	if (st.st_size > KEYRING_MAX_FILE_SIZE)
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
 *		palloc'd in CurrentMemoryContext.  Checks as keyring_read_file; also
 *		refuses a file that holds a NUL byte or only white space.  The caller
 *		wipes the result with pe_secret_cleanse as soon as it is done.
 */
char *
pe_read_secret_file(const char *path, const char *what)
{
	Size		len;
	char	   *buf = keyring_read_file(path, what, &len);

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
bool
pe_key_id_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		(c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
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

	while (i < len && (line[i] == ' ' || line[i] == '\t'))
		i++;
	while (i < len && pe_key_id_char(line[i]))
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
	if (!pe_hex_decode(line + i, VAULT_KEY_LEN, key->key))
		return false;
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
	kr = keyring_alloc(Min(nlines, KEYRING_MAX_KEYS));
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

		if (kr->nkeys >= KEYRING_MAX_KEYS)
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
 * keyring_passphrase
 *		Run payment_ext.keyring_passphrase_command ("%p" is replaced by a
 *		prompt, "%%" by "%") and copy the first line it prints, without its
 *		line break, into buf.  Returns the passphrase's length.  Raises if the
 *		command fails or prints nothing; buf is wiped first.
 */
static int
keyring_passphrase(char *buf, int size)
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
 * keyring_unlock
 *		Decrypt an encrypted keyring file (README "Encrypted keyring"):
 *		header line KEYRING_ENC_MAGIC "<iterations>", then "Salted__", an 8-byte
 *		salt and AES-256-CBC ciphertext whose key and IV are PBKDF2-HMAC-SHA256
 *		of the passphrase, as "openssl enc -aes-256-cbc -pbkdf2 -md sha256
 *		-iter <iterations>" writes it.  Returns the palloc'd plaintext
 *		(length in *outlen), which the caller wipes.  Wipes file and
 *		passphrase before it raises.
 */
static char *
keyring_unlock(char *file, Size len, Size *outlen)
{
	char		pass[KEYRING_PASSPHRASE_MAX];
	unsigned char kiv[48];
	Size		magiclen = strlen(KEYRING_ENC_MAGIC);
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

	while (p < end && *p >= '0' && *p <= '9' && iter <= KEYRING_ENC_MAX_ITER)
		iter = iter * 10 + (*p++ - '0');
	if (p >= end || *p != '\n' || iter < KEYRING_ENC_MIN_ITER || iter > KEYRING_ENC_MAX_ITER)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("encrypted keyring has a malformed header"),
				 errdetail("The first line must be \"%s<iterations>\" with %d to %d iterations.",
						   KEYRING_ENC_MAGIC, KEYRING_ENC_MIN_ITER, KEYRING_ENC_MAX_ITER)));
	p++;
	if ((Size) (end - p) < strlen(KEYRING_ENC_SALTED) + KEYRING_ENC_SALT_LEN + 16 ||
		memcmp(p, KEYRING_ENC_SALTED, strlen(KEYRING_ENC_SALTED)) != 0 ||
		(end - p - strlen(KEYRING_ENC_SALTED) - KEYRING_ENC_SALT_LEN) % 16 != 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("encrypted keyring is damaged"),
				 errdetail("After the header line it must hold the output of \"openssl enc -aes-256-cbc -salt\".")));
	salt = (const unsigned char *) p + strlen(KEYRING_ENC_SALTED);
	ct = salt + KEYRING_ENC_SALT_LEN;
	ctlen = end - (const char *) ct;

	/* every allocation before the secrets exist */
	pt = palloc(ctlen + 16 + 1);
	passlen = keyring_passphrase(pass, sizeof(pass));

	ok = PKCS5_PBKDF2_HMAC(pass, passlen, salt, KEYRING_ENC_SALT_LEN, (int) iter,
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
 * keyring_load
 *		Read, unlock if encrypted, and parse payment_ext.keyring_file into a
 *		new keyring.  Raises on any failure, naming a line number, never a
 *		line.
 */
static VaultKeyring *
keyring_load(void)
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

	file = keyring_read_file(pe_keyring_file, "the keyring file (payment_ext.keyring_file)",
						   &len);
	encrypted = len >= strlen(KEYRING_ENC_MAGIC) &&
		memcmp(file, KEYRING_ENC_MAGIC, strlen(KEYRING_ENC_MAGIC)) == 0;
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
		/* keyring_unlock may raise: the encrypted file is no secret */
		text = keyring_unlock(file, len, &textlen);
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
							KEYRING_MAX_KEYS, lineno)));
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
 * pe_keyring_get
 *		This backend's keyring, loaded on first use and after a reload.
 *		Raises if it cannot be loaded (and tries again on the next call).
 *		The result stays valid until the next configuration reload.
 */
VaultKeyring *
pe_keyring_get(void)
{
	if (!keyring_exit_registered)
	{
		on_proc_exit(keyring_at_exit, (Datum) 0);
		keyring_exit_registered = true;
	}
	if (keyring_current == NULL || keyring_stale)
	{
		keyring_free(keyring_current);
		keyring_current = NULL;
		keyring_current = keyring_load();
		keyring_stale = false;
	}
	return keyring_current;
}
