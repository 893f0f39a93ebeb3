/*-------------------------------------------------------------------------
 *
 * context.c
 *		Who and where a change or a refusal comes from, for the audit trail:
 *		the request context from the app.* settings (with the connection's
 *		own values as fallbacks), cached role names, the structured LOG line
 *		of refused operations, and the append-only guard of
 *		"PaymentAuditLog".
 *
 * app.current_user_id, app.client_ip and app.user_agent are the
 * application's claims (any role can SET them): an empty value is absent
 * (current_setting() returns '' after any SET LOCAL has ended), a malformed
 * one is never an error but a quoted, masked and clipped note in the
 * description.  session_user and current_user are recorded beside them.
 *
 * Invariants:
 *	- Nothing here raises for bad settings: the parsers check before they
 *	  call the type input functions.
 *	- Role names are cached by OID and forgotten on any pg_authid change;
 *	  callers get copies, never pointers into the cache.
 *	- The refusal line never holds the refused value: callers pass fixed
 *	  texts, and the line is emitted without the STATEMENT.
 *
 * IDENTIFICATION
 *		src/audit/context.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/socket.h>

#include "commands/trigger.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/inet.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/uuid.h"

#include "audit/audit.h"
#include "audit/audit_int.h"
#include "base/text.h"
#include "base/trigger.h"

/* ---------------------------------------------------------------------------
 * Constants
 * ---------------------------------------------------------------------------
 */

/* quoted settings in a description are clipped to this many bytes */
#define AUDIT_CLAIM_MAX_BYTES		64
/* "UserAgent" is clipped to this many bytes */
#define AUDIT_USER_AGENT_MAX_BYTES	1000
/* digit runs this long in a quoted setting are masked (card numbers) */
#define AUDIT_MASK_DIGIT_RUN		7

/* ---------------------------------------------------------------------------
 * Backend state
 * ---------------------------------------------------------------------------
 */

/* client address of the connection: computed once per backend */
static bool audit_client_addr_done = false;
static bool audit_client_addr_isnull = true;
static Datum audit_client_addr;

/* role names by OID, two entries (session_user and current_user) */
static Oid	audit_role_oid[2] = {InvalidOid, InvalidOid};
static char audit_role_name_buf[2][NAMEDATALEN];
static int	audit_role_next = 0;
static bool audit_role_callback_registered = false;

/* Role renamed or dropped: forget the cached names. */
static void
audit_authid_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	audit_role_oid[0] = InvalidOid;
	audit_role_oid[1] = InvalidOid;
}

/* ---------------------------------------------------------------------------
 * Request context
 * ---------------------------------------------------------------------------
 */


/*
 * audit_parse_inet
 *		Parse an inet without raising: the same check as inet_in's, done
 *		first, then inet_in itself (which cannot fail any more).
 */
static bool
audit_parse_inet(const char *s, Datum *result)
{
	unsigned char addr[16];
	int			family = strchr(s, ':') != NULL ? PGSQL_AF_INET6 : PGSQL_AF_INET;
	int			maxbits = family == PGSQL_AF_INET6 ? 128 : 32;
	int			bits;

	bits = pg_inet_net_pton(family, s, addr, -1);
	if (bits < 0 || bits > maxbits)
		return false;
	*result = DirectFunctionCall1(inet_in, CStringGetDatum(s));
	return true;
}

/*
 * audit_safe_claim
 *		A setting's raw text made safe to record (without quotes): runs
 *		of AUDIT_MASK_DIGIT_RUN or more digits (spaces and dashes between
 *		them allowed) are masked with '#', so a card number set by mistake
 *		never lands in the log; control characters and quotes become '?';
 *		and the text is clipped to AUDIT_CLAIM_MAX_BYTES on a character
 *		boundary.
 */
static char *
audit_safe_claim(const char *raw)
{
	char	   *s = pstrdup(raw);
	int			len = strlen(s);
	int			i = 0;
	int			cut;

	while (i < len)
	{
		int			start = i;
		int			digits = 0;
		int			j;

		while (i < len && ((s[i] >= '0' && s[i] <= '9') ||
						   ((s[i] == ' ' || s[i] == '-') && i > start)))
		{
			if (s[i] >= '0' && s[i] <= '9')
				digits++;
			i++;
		}
		if (digits >= AUDIT_MASK_DIGIT_RUN)
		{
			for (j = start; j < i; j++)
				if (s[j] >= '0' && s[j] <= '9')
					s[j] = '#';
		}
		if (i == start)
			i++;
	}
	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c < 0x20 || c == 0x7f || c == '\'' || c == '"' || c == '\\')
			s[i] = '?';
	}
	if (len <= AUDIT_CLAIM_MAX_BYTES)
		return s;
	cut = pg_mbcliplen(s, len, AUDIT_CLAIM_MAX_BYTES);
	s[cut] = '\0';
	return psprintf("%s...", s);
}

/* an app.* setting, NULL when not defined or empty */
static const char *
audit_setting(const char *name)
{
	const char *value = GetConfigOption(name, true, false);

	if (value == NULL || value[0] == '\0')
		return NULL;
	return value;
}

/*
 * The connection's client address, as inet_client_addr() gives it (NULL for
 * Unix sockets and background workers); computed once per backend.
 */
static bool
audit_connection_addr(Datum *result)
{
	if (!audit_client_addr_done)
	{
		LOCAL_FCINFO(fcinfo, 0);
		Datum		addr;

		InitFunctionCallInfoData(*fcinfo, NULL, 0, InvalidOid, NULL, NULL);
		addr = inet_client_addr(fcinfo);
		if (!fcinfo->isnull)
		{
			MemoryContext oldcxt = MemoryContextSwitchTo(TopMemoryContext);

			audit_client_addr = datumCopy(addr, false, -1);
			audit_client_addr_isnull = false;
			MemoryContextSwitchTo(oldcxt);
		}
		audit_client_addr_done = true;
	}
	*result = audit_client_addr;
	return !audit_client_addr_isnull;
}

/* text clipped to max_bytes on a character boundary */
static char *
audit_clip(const char *s, int max_bytes)
{
	int			len = strlen(s);

	if (len <= max_bytes)
		return pstrdup(s);
	return pnstrdup(s, pg_mbcliplen(s, len, max_bytes));
}

/*
 * audit_read_request
 *		The request context of the current change, from the app.* settings
 *		(an empty one is absent) with the connection's own values as
 *		fallbacks.  Malformed settings become notes for the description.
 */
void
pe_audit_read_request(AuditRequest *req)
{
	const char *uid = audit_setting("app.current_user_id");
	const char *ip = audit_setting("app.client_ip");
	const char *ua = audit_setting("app.user_agent");

	initStringInfo(&req->notes);

	req->user_valid = false;
	if (uid != NULL)
	{
		if (pe_parse_uuid(uid, &req->user))
			req->user_valid = true;
		else
		{
			appendStringInfo(&req->notes,
							 "; app.current_user_id is not a uuid: '%s'",
							 audit_safe_claim(uid));
		}
	}

	if (ip != NULL)
	{
		req->ip_isnull = !audit_parse_inet(ip, &req->ip);
		if (req->ip_isnull)
		{
			appendStringInfo(&req->notes,
							 "; app.client_ip is not an IP address: '%s'",
							 audit_safe_claim(ip));
		}
	}
	else
		req->ip_isnull = !audit_connection_addr(&req->ip);

	if (ua == NULL && application_name != NULL && application_name[0] != '\0')
		ua = application_name;
	req->user_agent = ua != NULL ?
		audit_clip(ua, AUDIT_USER_AGENT_MAX_BYTES) : NULL;
}

/*
 * Name of a role, from a two-entry cache (no catalog access when warm).
 * The result is a palloc'd copy in the caller's memory context: the next
 * lookup may evict the very slot a name came from (session_user hit, then
 * current_user missed), so a pointer into the cache would change under the
 * caller.
 */
const char *
pe_audit_role_name(Oid roleid)
{
	int			i;
	char	   *name;

	if (!audit_role_callback_registered)
	{
		CacheRegisterSyscacheCallback(AUTHOID, audit_authid_callback, (Datum) 0);
		audit_role_callback_registered = true;
	}
	for (i = 0; i < 2; i++)
	{
		if (audit_role_oid[i] == roleid && OidIsValid(roleid))
			return pstrdup(audit_role_name_buf[i]);
	}
	i = audit_role_next;
	audit_role_next = (audit_role_next + 1) % 2;
	name = GetUserNameFromId(roleid, true);
	if (name != NULL)
		strlcpy(audit_role_name_buf[i], name, NAMEDATALEN);
	else
		snprintf(audit_role_name_buf[i], NAMEDATALEN, "role %u", roleid);
	audit_role_oid[i] = roleid;
	return pstrdup(audit_role_name_buf[i]);
}

/*
 * audit_append_logvalue
 *		Append s to a log line in double quotes, with quotes and backslashes
 *		escaped and control characters replaced, so the line stays one line.
 */
static void
audit_append_logvalue(StringInfo buf, const char *s)
{
	const char *p;

	if (s == NULL)
	{
		appendStringInfoChar(buf, '-');
		return;
	}
	appendStringInfoChar(buf, '"');
	for (p = s; *p != '\0'; p++)
	{
		unsigned char c = (unsigned char) *p;

		if (c == '"' || c == '\\')
		{
			appendStringInfoChar(buf, '\\');
			appendStringInfoChar(buf, (char) c);
		}
		else if (c < 0x20 || c == 0x7f)
			appendStringInfoChar(buf, '?');
		else
			appendStringInfoChar(buf, (char) c);
	}
	appendStringInfoChar(buf, '"');
}

/*
 * pe_audit_log_refusal
 *		See audit.h.  Never raises (beyond out-of-memory): it only reads
 *		settings and cached role names.
 */
void
pe_audit_log_refusal(const char *what, const char *why)
{
	StringInfoData buf;
	pg_uuid_t	user;
	const char *uid = audit_setting("app.current_user_id");
	const char *ip = audit_setting("app.client_ip");
	Datum		addr;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "what=");
	audit_append_logvalue(&buf, what);
	appendStringInfoString(&buf, " why=");
	audit_append_logvalue(&buf, why);
	appendStringInfoString(&buf, " session_user=");
	audit_append_logvalue(&buf, pe_audit_role_name(GetSessionUserId()));
	appendStringInfoString(&buf, " current_user=");
	audit_append_logvalue(&buf, pe_audit_role_name(GetUserId()));

	/* the settings are claims: malformed ones masked and clipped */
	appendStringInfoString(&buf, " app_user_id=");
	if (uid == NULL)
		appendStringInfoChar(&buf, '-');
	else if (pe_parse_uuid(uid, &user))
		audit_append_logvalue(&buf,
							  pe_uuid_text(&user));
	else
		audit_append_logvalue(&buf, audit_safe_claim(uid));
	appendStringInfoString(&buf, " client_addr=");
	if (ip != NULL)
		audit_append_logvalue(&buf, audit_parse_inet(ip, &addr) ?
							  DatumGetCString(DirectFunctionCall1(inet_out, addr)) :
							  audit_safe_claim(ip));
	else if (audit_connection_addr(&addr))
		audit_append_logvalue(&buf,
							  DatumGetCString(DirectFunctionCall1(inet_out, addr)));
	else
		appendStringInfoString(&buf, "local");

	/*
	 * ERRCODE_WARNING: the line records that an operation was refused; the
	 * refusal's own SQLSTATE belongs to the caller's ERROR.
	 */
	ereport(LOG,
			(errcode(ERRCODE_WARNING),
			 errmsg("payment_ext refusal: %s", buf.data),
			 errhidestmt(true),
			 errhidecontext(true)));
	pfree(buf.data);
}

/*
 * Trigger function: BEFORE UPDATE OR DELETE FOR EACH ROW and BEFORE
 * TRUNCATE FOR EACH STATEMENT on "PaymentAuditLog".  A superuser passes
 * (and the hash chain shows what they changed); everyone else is refused.
 */
PG_FUNCTION_INFO_V1(pe_audit_append_only_trigger);
Datum
pe_audit_append_only_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TriggerEvent event;
	const char *what;
	static const PeTriggerUse use = {
		true,
		PE_TRIG_UPDATE | PE_TRIG_DELETE | PE_TRIG_TRUNCATE,
		PE_TRIG_UPDATE | PE_TRIG_DELETE | PE_TRIG_TRUNCATE,
		"payment.audit_append_only_trigger() must be called as a trigger",
		"payment.audit_append_only_trigger() must be fired BEFORE UPDATE, DELETE or TRUNCATE"
	};

	pe_trigger_check(fcinfo, &use);
	event = trigdata->tg_event;

	if (superuser())
	{
		if (TRIGGER_FIRED_BY_UPDATE(event))
			return PointerGetDatum(trigdata->tg_newtuple);
		if (TRIGGER_FIRED_BY_DELETE(event))
			return PointerGetDatum(trigdata->tg_trigtuple);
		return PointerGetDatum(NULL);
	}

	what = TRIGGER_FIRED_BY_UPDATE(event) ? "UPDATE of \"PaymentAuditLog\"" :
		TRIGGER_FIRED_BY_DELETE(event) ? "DELETE from \"PaymentAuditLog\"" :
		"TRUNCATE of \"PaymentAuditLog\"";
	pe_audit_log_refusal(what, "the audit log is append-only");
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("the payment audit log is append-only"),
			 errdetail("%s is refused to every role but a superuser.", what)));
	PG_RETURN_NULL();			/* not reached */
}
