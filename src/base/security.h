/*-------------------------------------------------------------------------
 *
 * security.h
 *		The check made before reading one of the application's tables with
 *		more rights than the caller (base/security.c).
 *
 * IDENTIFICATION
 *		src/base/security.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PE_BASE_SECURITY_H
#define PE_BASE_SECURITY_H

extern void pe_check_app_table(Oid nspid, const char *relname);

#endif							/* PE_BASE_SECURITY_H */
