/*-------------------------------------------------------------------------
 *
 * outbox.h
 *		The outbox worker as the module sees it: its registration.
 *
 * IDENTIFICATION
 *		src/outbox/outbox.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PE_OUTBOX_H
#define PE_OUTBOX_H

/*
 * Called by _PG_init: the wake-up of the worker at commit, and, under
 * shared_preload_libraries, its shared status and its registration.
 */
extern void pe_outbox_init(void);

#endif							/* PE_OUTBOX_H */
