/*-------------------------------------------------------------------------
 *
 * hash.c
 *		The hash of an audit row: its hashed columns and their canonical
 *		encoding, for the chain trigger (chain.c) and payment.verify_audit
 *		(verify.c).
 *
 * A chain is identified by "PaymentId", else "RowId" (a saved payment
 * method, a deleted payment), else the nil uuid (the system chain: TRUNCATE,
 * key rotation summaries).  Each row gets "ChainSeq" (1, 2, ...),
 * "PrevHash" (the previous row's "RowHash", NULL for the first) and
 *
 *	 "RowHash" = SHA-256("pe-audit-v1" || encode(col_1) || ... || encode(col_16))
 *
 * over the columns of pe_audit_chain_columns[] below, "ChainSeq" and
 * "PrevHash" included.  encode() is 0x00 for NULL, else 0x01, a 4-byte big-endian
 * length and the value in a form that depends on no setting: uuid as its 16
 * bytes, text as its bytes in the server encoding, jsonb as its canonical
 * text, inet as family, bits and address bytes, timestamptz and bigint as
 * 8-byte big-endian integers, bytea as its bytes.  (The types' binary send
 * forms would convert text to the client encoding, so they are not used
 * for text and jsonb.)
 *
 * Invariants: the EVP_MD is fetched once per backend; hashing is one-shot
 * (EVP_Digest), so no OpenSSL context can leak on error.
 *
 * IDENTIFICATION
 *		src/audit/hash.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/socket.h>

#include <openssl/evp.h>

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "port/pg_bswap.h"
#include "utils/inet.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "audit/audit_int.h"

/* the hashed columns, in hashing order; version "pe-audit-v1" */
const ChainColumn pe_audit_chain_columns[CHAIN_NCOLUMNS] = {
	[CHAIN_COL_ID] = {"Id", UUIDOID},
	[CHAIN_COL_PAYMENT] = {"PaymentId", UUIDOID},
	[CHAIN_COL_USER] = {"UserId", UUIDOID},
	[CHAIN_COL_ACTION] = {"ActionType", VARCHAROID},
	[CHAIN_COL_DESCRIPTION] = {"ActionDescription", TEXTOID},
	[CHAIN_COL_OLD] = {"OldValues", JSONBOID},
	[CHAIN_COL_NEW] = {"NewValues", JSONBOID},
	[CHAIN_COL_IP] = {"IpAddress", INETOID},
	[CHAIN_COL_AGENT] = {"UserAgent", TEXTOID},
	[CHAIN_COL_CREATED] = {"CreatedAt", TIMESTAMPTZOID},
	[CHAIN_COL_TABLE] = {"TableName", TEXTOID},
	[CHAIN_COL_ROW] = {"RowId", UUIDOID},
	[CHAIN_COL_SESSION] = {"SessionUser", TEXTOID},
	[CHAIN_COL_CURRENT] = {"CurrentUser", TEXTOID},
	[CHAIN_COL_SEQ] = {"ChainSeq", INT8OID},
	[CHAIN_COL_PREV] = {"PrevHash", BYTEAOID}
};

static EVP_MD *chain_sha256 = NULL;

/* The nil uuid, id of the system chain. */
void
pe_audit_system_chain_id(pg_uuid_t *id)
{
	memset(id->data, 0, UUID_LEN);
}

/* ---------------------------------------------------------------------------
 * Canonical encoding and hashing
 * ---------------------------------------------------------------------------
 */

/*
 * chain_encode
 *		Append the canonical encoding of the hashed columns (values and nulls
 *		in pe_audit_chain_columns[] order) to buf.  See the file header.
 */
static void
chain_encode(StringInfo buf, Datum *values, bool *nulls)
{
	int			i;

	appendBinaryStringInfo(buf, CHAIN_MAGIC, strlen(CHAIN_MAGIC));
	for (i = 0; i < (int) CHAIN_NCOLUMNS; i++)
	{
		Datum		v = values[i];
		int			lenpos;
		int			start;
		uint32		len;

		if (nulls[i])
		{
			appendStringInfoChar(buf, '\0');
			continue;
		}
		appendStringInfoChar(buf, '\1');
		lenpos = buf->len;
		appendBinaryStringInfo(buf, "\0\0\0\0", 4);
		start = buf->len;

		switch (pe_audit_chain_columns[i].typid)
		{
			case UUIDOID:
				appendBinaryStringInfo(buf, (char *) DatumGetUUIDP(v)->data,
									   UUID_LEN);
				break;
			case TEXTOID:
			case VARCHAROID:
			case BYTEAOID:
				{
					struct varlena *t = PG_DETOAST_DATUM_PACKED(v);

					appendBinaryStringInfo(buf, VARDATA_ANY(t),
										   VARSIZE_ANY_EXHDR(t));
				}
				break;
			case JSONBOID:
				{
					Jsonb	   *jb = DatumGetJsonbP(v);

					(void) JsonbToCString(buf, &jb->root, VARSIZE(jb));
				}
				break;
			case INETOID:
				{
					inet	   *ip = DatumGetInetPP(v);

					appendStringInfoChar(buf, (char) ip_family(ip));
					appendStringInfoChar(buf, (char) ip_bits(ip));
					appendBinaryStringInfo(buf, (char *) ip_addr(ip),
										   ip_addrsize(ip));
				}
				break;
			case TIMESTAMPTZOID:
			case INT8OID:
				{
					uint64		n = pg_hton64((uint64) DatumGetInt64(v));

					appendBinaryStringInfo(buf, (char *) &n, sizeof(n));
				}
				break;
			default:
				elog(ERROR, "unexpected type %u in the audit hash",
					 pe_audit_chain_columns[i].typid);
		}
		len = pg_hton32((uint32) (buf->len - start));
		memcpy(buf->data + lenpos, &len, 4);
	}
}

/* SHA-256 of values (pe_audit_chain_columns[] order) into out. */
void
pe_audit_chain_hash(Datum *values, bool *nulls, unsigned char *out)
{
	StringInfoData buf;
	unsigned int len = 0;

	if (chain_sha256 == NULL)
	{
		chain_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
		if (chain_sha256 == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
					 errmsg("could not load the SHA-256 digest from OpenSSL")));
	}

	initStringInfo(&buf);
	chain_encode(&buf, values, nulls);
	if (EVP_Digest(buf.data, buf.len, out, &len, chain_sha256, NULL) != 1 ||
		len != CHAIN_HASH_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not compute a SHA-256 digest")));
	pfree(buf.data);
}

/* a bytea of len bytes */
bytea *
pe_audit_chain_bytea(const unsigned char *data, int len)
{
	bytea	   *result = palloc(VARHDRSZ + len);

	SET_VARSIZE(result, VARHDRSZ + len);
	memcpy(VARDATA(result), data, len);
	return result;
}
