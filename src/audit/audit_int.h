/*-------------------------------------------------------------------------
 *
 * audit_int.h
 *		Types and functions shared by the audit trail's files (audit.c,
 *		chain.c, context.c, describe.c, store.c); not for the rest of payment_ext,
 *		which uses audit.h.
 *
 * IDENTIFICATION
 *		src/audit/audit_int.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PE_AUDIT_INT_H
#define PE_AUDIT_INT_H

#include "access/attnum.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/jsonb.h"
#include "utils/relcache.h"
#include "utils/uuid.h"

/* how a sealed ("Encrypted...") column is shown */
#define PE_AUDIT_SEALED_TEXT		"[sealed]"

typedef enum AuditTable
{
	AUDIT_PAYMENTS,
	AUDIT_REFUNDS,
	AUDIT_FAILURES,
	AUDIT_METHODS
} AuditTable;

/* one live column of an audited table */
typedef struct AuditColumn
{
	AttrNumber	attnum;
	char	   *name;
	Oid			typid;
	int16		typlen;
	bool		typbyval;
	bool		sealed;			/* "Encrypted...": shown as "[sealed]" */
	FmgrInfo	output;			/* type output function */
} AuditColumn;

/* attribute map of one audited table, keyed by relation OID */
typedef struct AuditRelCache
{
	Oid			relid;			/* hash key */
	bool		valid;			/* false after a relcache invalidation */
	MemoryContext cxt;			/* owns everything below */
	AuditTable	kind;
	char	   *relname;
	int			ncolumns;
	AuditColumn *columns;
	/* attnums (0 when absent) of the columns the trigger interprets */
	int			att_id;
	int			att_payment;	/* the payment an entry belongs to */
	int			att_status;
	int			att_metadata;
	int			att_updated_at;
	int			att_amount;
	int			att_currency;
	int			att_pct;
	int			att_refund_amount;
	int			att_failure_code;
	int			att_retry;
	int			att_brand;
	int			att_last4;
	int			att_exp_month;
	int			att_exp_year;
} AuditRelCache;

/* one entry to write */
typedef struct AuditEntry
{
	const char *action_type;
	StringInfoData description;
	Jsonb	   *old_values;
	Jsonb	   *new_values;
	bool		has_payment;
	Datum		payment_id;
	bool		has_row;
	Datum		row_id;
	const char *table_name;
	bool		payment_locked; /* caller holds the payment's row lock */
} AuditEntry;

/* request context of the current change */
typedef struct AuditRequest
{
	bool		user_valid;		/* app.current_user_id is a uuid */
	pg_uuid_t	user;
	bool		ip_isnull;
	Datum		ip;
	char	   *user_agent;		/* NULL when absent */
	StringInfoData notes;		/* appended to the description */
} AuditRequest;

/* relmap.c: the map of an audited relation, and a row as jsonb */
extern AuditRelCache *pe_audit_relmap(Relation rel);
extern void pe_audit_relmap_inval(Oid relid);
extern bool pe_audit_datum_equal(AuditColumn *col, Datum a, Datum b);
extern Jsonb *pe_audit_row_json(AuditRelCache *entry, Datum *values, bool *nulls,
								bool *include);

/* describe.c: "ActionType" and "ActionDescription" of a row change */
extern void pe_audit_classify_insert(AuditEntry *e, AuditRelCache *entry,
									 Datum *values, bool *nulls);
extern void pe_audit_classify_update(AuditEntry *e, AuditRelCache *entry,
									 Datum *oldvalues, bool *oldnulls,
									 Datum *newvalues, bool *newnulls,
									 bool *changed);
extern void pe_audit_classify_delete(AuditEntry *e, AuditRelCache *entry,
									 Datum *values, bool *nulls);

/* context.c: request context and role names */
extern void pe_audit_read_request(AuditRequest *req);
extern const char *pe_audit_role_name(Oid roleid);

/* store.c: the direct write of an audit row */
typedef enum AuditStoreColumn
{
	AS_PAYMENT_ID,
	AS_USER_ID,
	AS_ACTION_TYPE,
	AS_DESCRIPTION,
	AS_OLD_VALUES,
	AS_NEW_VALUES,
	AS_IP_ADDRESS,
	AS_USER_AGENT,
	AS_TABLE_NAME,
	AS_ROW_ID,
	AS_SESSION_USER,
	AS_CURRENT_USER,
	AS_NCOLUMNS
} AuditStoreColumn;

extern Relation pe_audit_store_open(Oid logrelid, bool lock_payment,
									const pg_uuid_t *payment);
extern void pe_audit_store_write(Relation rel, const Datum *values,
								 const bool *nulls);
extern void pe_audit_store_close(Relation rel);
extern void pe_audit_store_inval(Oid relid);
extern void pe_audit_store_at_xact_end(SubTransactionId subid);

/* ---------------------------------------------------------------------------
 * The hash chain (chain.c), for the row trigger (audit.c) and its direct
 * write (store.c)
 * ---------------------------------------------------------------------------
 */

/* the system chain: rows with neither "PaymentId" nor "RowId" */
#define PE_AUDIT_SYSTEM_CHAIN_TEXT	"00000000-0000-0000-0000-000000000000"

/*
 * The row trigger holds the row lock of the payment whose chain the next
 * audit row joins (it is inserting or updating that payment): the chain
 * trigger then need not lock it again.  Cleared right after the insert and
 * at (sub)transaction abort.
 */
extern void pe_audit_chain_set_prelocked(const pg_uuid_t *payment_id);
extern void pe_audit_chain_clear_prelocked(void);

/*
 * Provenance of audit rows.  Who wrote a row ("SessionUser",
 * "CurrentUser", "UserId", "IpAddress", "UserAgent") and when ("CreatedAt")
 * are set by pe_audit_chain_link from the server's own state, never taken
 * from the INSERT: audit.c's writer registers what it computed before it
 * switched to the log's owner (values and nulls in AuditStoreColumn order,
 * see audit_int.h) for the duration of its insert; any other insert gets
 * the session's own roles and request context, and no application user.
 * pe_audit_chain_swap_writer returns the previous registration (restore it
 * afterwards); (sub)transaction abort forgets registrations made in it.
 */
typedef struct AuditWriter
{
	const Datum *values;
	const bool *nulls;
	SubTransactionId subid;
} AuditWriter;

extern const AuditWriter *pe_audit_chain_swap_writer(const AuditWriter *writer);
extern void pe_audit_chain_writer_at_abort(SubTransactionId subid);

/* chain.c, for the audit trigger's direct write (store.c) */
extern bool pe_audit_chain_lock_payment(Relation rel, const pg_uuid_t *payment);
extern void pe_audit_chain_link(Relation rel, Datum *values, bool *nulls);

/* relcache invalidation of relid (InvalidOid: all) for chain.c */
extern void pe_audit_chain_relcache_inval(Oid relid);

/* hash.c: the hashed columns, in hashing order; version "pe-audit-v1" */
#define CHAIN_MAGIC				"pe-audit-v1"
#define CHAIN_HASH_LEN			32
#define CHAIN_NCOLUMNS			16
#define CHAIN_COL_ID			0
#define CHAIN_COL_PAYMENT		1
#define CHAIN_COL_USER			2
#define CHAIN_COL_ACTION		3
#define CHAIN_COL_DESCRIPTION	4
#define CHAIN_COL_OLD			5
#define CHAIN_COL_NEW			6
#define CHAIN_COL_IP			7
#define CHAIN_COL_AGENT			8
#define CHAIN_COL_CREATED		9
#define CHAIN_COL_TABLE			10
#define CHAIN_COL_ROW			11
#define CHAIN_COL_SESSION		12
#define CHAIN_COL_CURRENT		13
#define CHAIN_COL_SEQ			14
#define CHAIN_COL_PREV			15

typedef struct ChainColumn
{
	const char *name;
	Oid			typid;
} ChainColumn;

extern const ChainColumn pe_audit_chain_columns[CHAIN_NCOLUMNS];
extern void pe_audit_chain_hash(Datum *values, bool *nulls, unsigned char *out);
extern bytea *pe_audit_chain_bytea(const unsigned char *data, int len);
extern void pe_audit_system_chain_id(pg_uuid_t *id);

#endif							/* PE_AUDIT_INT_H */
