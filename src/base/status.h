/*-------------------------------------------------------------------------
 *
 * status.h
 *		Status codes of payments and refunds (DESIGN.md), and their names.
 *
 * IDENTIFICATION
 *		src/base/status.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PE_BASE_STATUS_H
#define PE_BASE_STATUS_H

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

/* The name of a code, or NULL when it is not one */
extern const char *pe_payment_status_name(int status);
extern const char *pe_refund_status_name(int status);

#endif							/* PE_BASE_STATUS_H */
