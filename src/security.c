/*-------------------------------------------------------------------------
 *
 * security.c
 *		The request context the application sets (app.current_user_id,
 *		app.user_role), read safely for row-level security.
 *
 * The spec's policy casts current_setting('app.current_user_id') to uuid,
 * which fails when the setting is unset (an error) or '' (a bad uuid: what
 * current_setting returns after any SET LOCAL has ended).  These functions
 * never fail: an unset, empty or malformed setting is NULL, and a policy
 * built on them shows nothing rather than raising or showing everything.
 *
 * Any role can SET app.current_user_id: it is the application's claim, and
 * the application's connection is the trust boundary.  It decides which rows
 * a session sees, nothing more; refunds, retries, key rotation and repair
 * check the caller's role instead.
 *
 * IDENTIFICATION
 *		src/security.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/uuid.h"

#include "payment_ext.h"

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

/* SQL function: payment.app_user_id() returns uuid */
PG_FUNCTION_INFO_V1(pe_app_user_id);
Datum
pe_app_user_id(PG_FUNCTION_ARGS)
{
	const char *value = GetConfigOption("app.current_user_id", true, false);
	pg_uuid_t  *result = palloc(sizeof(pg_uuid_t));

	if (!pe_parse_uuid(value, result))
		PG_RETURN_NULL();
	PG_RETURN_UUID_P(result);
}

/* SQL function: payment.app_sees_all() returns boolean */
PG_FUNCTION_INFO_V1(pe_app_sees_all);
Datum
pe_app_sees_all(PG_FUNCTION_ARGS)
{
	const char *role = GetConfigOption("app.user_role", true, false);

	PG_RETURN_BOOL(role != NULL &&
				   (strcmp(role, "Admin") == 0 || strcmp(role, "Teacher") == 0));
}
