/*-------------------------------------------------------------------------
 *
 * guard.h
 *		The card-number guard (cardguard.c): what other files call.
 *
 * Raises ERRCODE_PE_CARD_NUMBER when a value holds a card number (README,
 * "Card-number guard"), naming the argument, never the value.
 *
 * IDENTIFICATION
 *		src/guard/guard.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PE_GUARD_H
#define PE_GUARD_H

#include "utils/jsonb.h"

/* SQLSTATE of class PE (payment_ext), listed in README */
#define ERRCODE_PE_CARD_NUMBER		MAKE_SQLSTATE('P','E','0','0','1')

extern void pe_guard_text(const char *value, const char *argname);
extern void pe_guard_identifier(const char *value, const char *argname);
extern void pe_guard_jsonb(Jsonb *value, const char *argname);
extern bool pe_contains_card_number(const char *value, bool identifier);

/* A Stripe object id argument: 1 to 255 of [A-Za-z0-9_-], no card number */
extern void pe_check_stripe_id(const char *value, const char *argname);

#endif							/* PE_GUARD_H */
