/*-------------------------------------------------------------------------
 *
 * text.h
 *		Text helpers of payment_ext: uuids, numerics and minor units as text,
 *		text clipped on a character boundary, hex, jsonb accessors and a
 *		JSON object builder, and log scrubbing (scrub.c).
 *
 * Everything here is palloc'd in CurrentMemoryContext, and raises nothing
 * that could echo its input.
 *
 * IDENTIFICATION
 *		src/base/text.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PE_BASE_TEXT_H
#define PE_BASE_TEXT_H

#include "lib/stringinfo.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/uuid.h"

/* uuids, numerics and amounts as text */
extern char *pe_uuid_text(const pg_uuid_t *id);
extern bool pe_parse_uuid(const char *s, pg_uuid_t *out);
extern char *pe_numeric_text(Numeric value);
extern char *pe_minor_text(int64 minor);

/*
 * Text bounded for a column or a buffer, cut on a character boundary (a
 * byte cut can split a multi-byte character and store invalid text).
 */
extern char *pe_clip_chars(const char *s, int maxchars);
extern void pe_strlcpy_mb(char *dst, const char *src, size_t size);

extern bool pe_hex_decode(const char *s, size_t nbytes, unsigned char *out);

/* jsonb: the values of an object's keys, NULL when absent or of another kind */
extern char *pe_jbv_text(JsonbValue *v);
extern char *pe_jb_text(JsonbContainer *c, const char *key);
extern JsonbContainer *pe_jb_object(JsonbContainer *c, const char *key);
extern JsonbContainer *pe_jb_array(JsonbContainer *c, const char *key);
extern int64 pe_jb_amount(JsonbContainer *c, const char *key);
extern JsonbContainer *pe_jb_next_object(JsonbIterator **it);

/* JSON object text: "key": "value" (or null), after buf's '{' and fields */
extern void pe_json_field(StringInfo buf, const char *key, const char *value);

/* scrub.c: text fit for a log line or a stored message */
extern char *pe_scrub(const char *text, int maxlen);

#endif							/* PE_BASE_TEXT_H */
