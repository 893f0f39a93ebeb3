/*-------------------------------------------------------------------------
 *
 * payment_ext.h
 *		Declarations shared by the files of payment_ext.
 *
 * IDENTIFICATION
 *		src/payment_ext.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PAYMENT_EXT_H
#define PAYMENT_EXT_H

#include "executor/spi.h"
#include "utils/numeric.h"
#include "utils/uuid.h"

/* Payment status codes ("Payments"."Status"), DESIGN.md */
#define PE_PAYMENT_PENDING				0
#define PE_PAYMENT_COMPLETED			1
#define PE_PAYMENT_FAILED				2
#define PE_PAYMENT_REFUNDED				3
#define PE_PAYMENT_PARTIALLY_REFUNDED	4
#define PE_PAYMENT_NOT_REQUIRED			5

/* Refund status codes ("PaymentRefunds"."RefundStatus") */
#define PE_REFUND_PROCESSING			0
#define PE_REFUND_COMPLETED				1
#define PE_REFUND_FAILED				2

/* GUCs, defined in payment_ext.c */
extern char *pe_stripe_api_base;
extern char *pe_database;

/* outbox worker (outbox_worker.c, outbox_outcome.c) */
extern int	pe_max_in_flight;
extern int	pe_max_attempts;
extern int	pe_max_requests_per_second;
extern int	pe_request_timeout_ms;
extern int	pe_connect_timeout_ms;
extern int	pe_retry_base_ms;
extern int	pe_retry_max_ms;
extern char *pe_worker_role;

/* token vault (vault.c): file paths and a command, never secrets */
extern char *pe_keyring_file;
extern char *pe_keyring_passphrase_command;
extern char *pe_stripe_api_key_file;
extern char *pe_webhook_secret_file;

/* webhooks and settling (webhook.c, webhook_apply.c, the outbox worker) */
extern int	pe_webhook_tolerance;
extern int	pe_pending_ttl;
extern int	pe_idempotency_window;
extern int	pe_search_lag;
extern char *pe_system_user_id;
extern void pe_assign_webhook_secret(const char *newval, void *extra);

/*
 * payment.resolve() (resolve.c) sets these, never SQL, for the one UPDATE
 * it makes: the state trigger then lets that payment past the transition
 * rules and the audit trigger writes the reason into the row's description.
 * Restored by PG_FINALLY and reset at transaction end.
 */
extern bool pe_resolve_active;
extern pg_uuid_t pe_resolve_payment;
extern const char *pe_resolve_reason;

/*
 * Set (for the current transaction only, never from SQL) by code that
 * rewrites rows in bulk without changing their meaning, such as key rotation
 * re-sealing ciphertext: the audit trigger then writes no per-row entry and
 * the caller writes one summary entry instead.  Reset at transaction end.
 */
extern bool pe_suppress_row_audit;

/*
 * SPI plans prepared once per backend.  The SQL text may use @S@ for the
 * quoted schema that holds the spec's tables (the extension's schema): the
 * plan is prepared again if the extension moves to another schema.
 */
typedef struct PePlan
{
	const char *sql;			/* text, with @S@ for the tables' schema */
	int			nargs;
	Oid			argtypes[12];
	SPIPlanPtr	plan;			/* kept (SPI_keepplan), or NULL */
	uint64		generation;		/* pe_schema_generation it was made for */
} PePlan;

extern SPIPlanPtr pe_plan(PePlan *p);
extern const char *pe_tables_schema(void);
extern char *pe_extension_schema(void);
extern Oid	pe_extension_namespace(void);
extern SPIPlanPtr pe_prepare_kept(const char *sql, int nargs, Oid *argtypes);
extern bool pe_hex_decode(const char *s, size_t nbytes, unsigned char *out);
extern Datum pe_spi_getdatum(int row, int col, bool *isnull);

/* security.c */
extern bool pe_parse_uuid(const char *s, pg_uuid_t *out);
extern void pe_check_app_table(Oid nspid, const char *relname);

/* pricing.c */
extern void pe_check_currency(const char *currency, const char *what);
extern void pe_check_money(Numeric value, const char *what, bool allow_zero);
extern void pe_check_discount(Numeric pct);
extern Numeric pe_compute_price(Numeric full_price, Numeric discount_pct);
extern int64 pe_minor_units(Numeric amount);
extern int	pe_numeric_cmp(Numeric a, Numeric b);

/* operations.c, and their GUCs (payment_ext.c) */
extern bool pe_restoring;
extern bool pe_allow_drop;
extern bool pe_adopt_existing_roles;
extern bool pe_restoring_insert(uint32 event);

/* payment_ext.c */
struct FunctionCallInfoBaseData;
extern void pe_check_arg_not_null(struct FunctionCallInfoBaseData *fcinfo, int argno,
								  const char *name);
extern void pe_check_trigger(struct FunctionCallInfoBaseData *fcinfo, const char *name,
							 bool before, bool row);

/*
 * A column that a trigger function reads or writes, and the type it needs
 * (TEXTOID accepts varchar too).  pe_trigger_columns sets *attnum (0 when
 * an optional column is absent) and raises 42703 for a missing required
 * column and 42804 for a column of another type, naming the trigger
 * function, the table and the column: a trigger attached to a table of
 * another shape is an error, never a misread Datum.
 */
typedef struct PeTriggerColumn
{
	int		   *attnum;
	const char *name;
	Oid			typid;
	bool		required;
} PeTriggerColumn;

extern void pe_trigger_columns(Relation rel, const char *trigger,
							   const PeTriggerColumn *cols, int n, bool cached);
extern bool pe_attnum_has_type(TupleDesc td, int attnum, Oid typid);

/*
 * Text bounded for a column or a buffer, cut on a character boundary (a
 * byte cut can split a multi-byte character and store invalid text).
 */
extern char *pe_clip_chars(const char *s, int maxchars);

/* calls body; constraint violations re-raised without the row (payment_ext.c) */
extern Datum pe_call_redacted(PGFunction body, struct FunctionCallInfoBaseData *fcinfo);
extern void pe_strlcpy_mb(char *dst, const char *src, size_t size);

/* state.c */
typedef struct PeFixedColumn
{
	int		   *attnum;			/* the column's number, looked up per relation */
	const char *name;
} PeFixedColumn;

extern void pe_check_fixed_columns(HeapTuple oldtuple, HeapTuple newtuple, TupleDesc td,
								   const PeFixedColumn *fixed, int n, const char *what,
								   const char *detail);
extern int	pe_attnum(TupleDesc tupdesc, const char *name);
extern bool pe_column_unchanged(HeapTuple a, HeapTuple b, TupleDesc td, int attnum);
extern void pe_refund_totals(Datum payment_id, Datum *live, bool *live_null,
							 Datum *completed, bool *completed_null,
							 Datum *latest, bool *latest_null);
extern int	pe_paid_rank(int status);
extern int	pe_refund_status_from_stripe(const char *stripe_status);
extern void pe_check_refund_reason(const char *reason);
extern int	pe_status_for_refunds(Numeric amount, Datum completed, bool completed_null);
extern void pe_check_metadata_object(Datum metadata, const char *what);

/* payments.c */
extern char *pe_reseal_request(const char *request, const char *old_key,
							   const char *new_key);

/* outbox_worker.c */
extern void pe_outbox_init(void);
extern void pe_outbox_at_xact_end(bool committed);

extern const char *pe_payment_status_name(int status);
extern const char *pe_refund_status_name(int status);
extern void pe_check_card_expiry(int32 year, int32 month);

#endif							/* PAYMENT_EXT_H */
