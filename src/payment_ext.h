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

/* token vault (vault.c): file paths and a command, never secrets */
extern char *pe_keyring_file;
extern char *pe_keyring_passphrase_command;
extern char *pe_stripe_api_key_file;
extern char *pe_webhook_secret_file;

/*
 * Set (for the current transaction only, never from SQL) by code that
 * rewrites rows in bulk without changing their meaning, such as key rotation
 * re-sealing ciphertext: the audit trigger then writes no per-row entry and
 * the caller writes one summary entry instead.  Reset at transaction end.
 */
extern bool pe_suppress_row_audit;

extern const char *pe_payment_status_name(int status);
extern const char *pe_refund_status_name(int status);
extern void pe_check_card_expiry(int32 year, int32 month);

#endif							/* PAYMENT_EXT_H */
