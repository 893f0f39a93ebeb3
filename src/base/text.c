/*-------------------------------------------------------------------------
 *
 * text.c
 *		Text helpers of payment_ext (see text.h).
 *
 * IDENTIFICATION
 *		src/base/text.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/json.h"

#include "base/text.h"

/* ---------------------------------------------------------------------------
 * uuids, numerics, amounts
 * ---------------------------------------------------------------------------
 */

/* The text form of a uuid. */
char *
pe_uuid_text(const pg_uuid_t *id)
{
	return DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(id)));
}

/*
 * pe_parse_uuid
 *		Parse s as a uuid into *out without raising; false when s is NULL,
 *		empty or not a uuid.  Accepts what uuid_in accepts.
 */
bool
pe_parse_uuid(const char *s, pg_uuid_t *out)
{
	int			i = 0;
	bool		braces = false;
	const char *p = s;

	if (s == NULL || *s == '\0')
		return false;
	if (*p == '{')
	{
		braces = true;
		p++;
	}
	while (i < UUID_LEN)
	{
		int			hi,
					lo;

		if (!isxdigit((unsigned char) p[0]) || !isxdigit((unsigned char) p[1]))
			return false;
		hi = isdigit((unsigned char) p[0]) ? p[0] - '0' : (pg_ascii_tolower((unsigned char) p[0]) - 'a' + 10);
		lo = isdigit((unsigned char) p[1]) ? p[1] - '0' : (pg_ascii_tolower((unsigned char) p[1]) - 'a' + 10);
		out->data[i++] = (unsigned char) ((hi << 4) | lo);
		p += 2;
		if (*p == '-' && (i % 2) == 0 && i < UUID_LEN)
			p++;
	}
	if (braces)
	{
		if (*p != '}')
			return false;
		p++;
	}
	return *p == '\0';
}

/* The text form of a numeric. */
char *
pe_numeric_text(Numeric value)
{
	return DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(value)));
}

/* Minor units as "12.34" (two minor digits: the currencies of DESIGN). */
char *
pe_minor_text(int64 v)
{
	return psprintf("%s" INT64_FORMAT ".%02d", v < 0 ? "-" : "",
					(v < 0 ? -v : v) / 100, (int) ((v < 0 ? -v : v) % 100));
}

/* ---------------------------------------------------------------------------
 * Bounded text
 * ---------------------------------------------------------------------------
 */

/*
 * pe_clip_chars
 *		A palloc'd copy of s with at most maxchars characters (a varchar(n)
 *		counts characters), never cut inside one.
 */
char *
pe_clip_chars(const char *s, int maxchars)
{
	return pnstrdup(s, pg_mbcharcliplen(s, strlen(s), maxchars));
}

/*
 * pe_strlcpy_mb
 *		strlcpy into dst (size bytes, size > 0) that cuts src on a character
 *		boundary of the database encoding.  Never raises: usable under a
 *		spinlock's caller and in the worker's status paths.
 */
void
pe_strlcpy_mb(char *dst, const char *src, size_t size)
{
	size_t		len = strlen(src);
	size_t		n = len;

	if (len >= size)
		n = pg_mbcliplen(src, (int) len, (int) size - 1);
	memcpy(dst, src, n);
	dst[n] = '\0';
}

/*
 * pe_hex_decode
 *		Decode exactly 2 * nbytes hex digits at s into out.  False, with
 *		nothing said, on any other character: used on keys and MACs, which
 *		an error message must never echo (PostgreSQL 15's hex_decode does).
 */
bool
pe_hex_decode(const char *s, size_t nbytes, unsigned char *out)
{
	size_t		i;

	for (i = 0; i < 2 * nbytes; i++)
	{
		char		c = s[i];
		int			v;

		if (c >= '0' && c <= '9')
			v = c - '0';
		else if (c >= 'a' && c <= 'f')
			v = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v = c - 'A' + 10;
		else
			return false;
		if (i % 2 == 0)
			out[i / 2] = (unsigned char) (v << 4);
		else
			out[i / 2] |= (unsigned char) v;
	}
	return true;
}

/* ---------------------------------------------------------------------------
 * jsonb and JSON
 * ---------------------------------------------------------------------------
 */

/* The text of a scalar (string, number, boolean), or NULL for any other. */
char *
pe_jbv_text(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvString:
			return pnstrdup(v->val.string.val, v->val.string.len);
		case jbvNumeric:
			return pe_numeric_text(v->val.numeric);
		case jbvBool:
			return pstrdup(v->val.boolean ? "true" : "false");
		default:
			return NULL;
	}
}

/* The text of key in object c (strings, numbers, booleans), or NULL. */
char *
pe_jb_text(JsonbContainer *c, const char *key)
{
	JsonbValue *v;

	if (c == NULL)
		return NULL;
	v = getKeyJsonValueFromContainer(c, key, strlen(key), NULL);
	if (v == NULL)
		return NULL;
	return pe_jbv_text(v);
}

/* The container under key in c if it is of the wanted kind, or NULL. */
static JsonbContainer *
jb_container(JsonbContainer *c, const char *key, bool object)
{
	JsonbValue *v;

	if (c == NULL)
		return NULL;
	v = getKeyJsonValueFromContainer(c, key, strlen(key), NULL);
	if (v == NULL || v->type != jbvBinary)
		return NULL;
	if (object ? !JsonContainerIsObject(v->val.binary.data) :
		!JsonContainerIsArray(v->val.binary.data))
		return NULL;
	return v->val.binary.data;
}

/* The object under key in object c, or NULL. */
JsonbContainer *
pe_jb_object(JsonbContainer *c, const char *key)
{
	return jb_container(c, key, true);
}

/* The array under key in object c, or NULL. */
JsonbContainer *
pe_jb_array(JsonbContainer *c, const char *key)
{
	return jb_container(c, key, false);
}

/* An integer amount (minor units) under key, or -1. */
int64
pe_jb_amount(JsonbContainer *c, const char *key)
{
	char	   *s = pe_jb_text(c, key);

	if (s == NULL || s[0] == '\0' || strlen(s) > 15 || strspn(s, "0123456789") != strlen(s))
		return -1;
	return strtoll(s, NULL, 10);
}

/*
 * pe_jb_next_object
 *		The next element of the array that iterator *it walks (made by
 *		JsonbIteratorInit on the array) that is an object, or NULL at the
 *		end; elements of other kinds are passed over.
 */
JsonbContainer *
pe_jb_next_object(JsonbIterator **it)
{
	JsonbValue	v;
	JsonbIteratorToken tok;

	while ((tok = JsonbIteratorNext(it, &v, true)) != WJB_DONE)
		if (tok == WJB_ELEM && v.type == jbvBinary && JsonContainerIsObject(v.val.binary.data))
			return v.val.binary.data;
	return NULL;
}

/*
 * pe_json_field
 *		Append "key": "value" (null when value is NULL) to the JSON object
 *		being built in buf, which holds its '{' and the fields so far; the
 *		caller appends the '}'.
 */
void
pe_json_field(StringInfo buf, const char *key, const char *value)
{
	if (buf->len > 1)
		appendStringInfoString(buf, ", ");
	escape_json(buf, key);
	appendStringInfoString(buf, ": ");
	if (value == NULL)
		appendStringInfoString(buf, "null");
	else
		escape_json(buf, value);
}
