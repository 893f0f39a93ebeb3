/*-------------------------------------------------------------------------
 *
 * rules.h
 *		The payment rules as other files call them: money and pricing
 *		(pricing.c), the payment state machine and the refunds' totals
 *		(state.c), refund reasons (refund.c), card expiry (methods.c).
 *
 * The rules themselves run as triggers, so they hold whoever writes; what
 * is here is what the SQL functions and the recording of Stripe's answers
 * check before they write, and share with the triggers.
 *
 * IDENTIFICATION
 *		src/rules/rules.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PE_RULES_H
#define PE_RULES_H

#include "access/htup.h"
#include "utils/numeric.h"

#include "base/pg_compat.h"

/* pricing.c: money, currencies, the sliding scale */
extern void pe_check_currency(const char *currency, const char *what);
extern void pe_check_money(Numeric value, const char *what, bool allow_zero);
extern void pe_check_discount(Numeric pct);
extern Numeric pe_compute_price(Numeric full_price, Numeric discount_pct);
extern int64 pe_minor_units(Numeric amount);
extern int	pe_numeric_cmp(Numeric a, Numeric b);

/* state.c: columns a trigger refuses to change */
typedef struct PeFixedColumn
{
	int		   *attnum;			/* the column's number, looked up per relation */
	const char *name;
} PeFixedColumn;

extern void pe_check_fixed_columns(HeapTuple oldtuple, HeapTuple newtuple, TupleDesc td,
								   const PeFixedColumn *fixed, int n, const char *what,
								   const char *detail);

/* state.c: a payment's refunds and the paid states they give */
extern void pe_refund_totals(Datum payment_id, Datum *live, bool *live_null,
							 Datum *completed, bool *completed_null,
							 Datum *latest, bool *latest_null);
extern int	pe_paid_rank(int status);
extern int	pe_status_for_refunds(Numeric amount, Datum completed, bool completed_null);
extern int	pe_refund_status_from_stripe(const char *stripe_status);
extern void pe_check_metadata_object(Datum metadata, const char *what);
pg_noreturn extern void pe_refuse_transition(const char *what, const char *from,
											 const char *to, const char *hint);
extern void pe_check_row_metadata(HeapTuple oldtuple, HeapTuple newtuple, TupleDesc td,
								  int attnum, const char *what);

/* refund.c */
extern void pe_check_refund_reason(const char *reason);

/* methods.c */
extern void pe_check_card_expiry(int32 year, int32 month);

#endif							/* PE_RULES_H */
