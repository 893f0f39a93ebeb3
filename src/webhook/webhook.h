/*-------------------------------------------------------------------------
 *
 * webhook.h
 *		The webhook intake as the module sees it: the assign hook of
 *		payment_ext.webhook_secret_file.
 *
 * IDENTIFICATION
 *		src/webhook/webhook.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PE_WEBHOOK_H
#define PE_WEBHOOK_H

extern void pe_assign_webhook_secret(const char *newval, void *extra);

#endif							/* PE_WEBHOOK_H */
