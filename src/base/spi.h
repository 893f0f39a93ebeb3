/*-------------------------------------------------------------------------
 *
 * spi.h
 *		The extension's own catalog entry and schema, and SPI plans kept
 *		per backend.
 *
 * IDENTIFICATION
 *		src/base/spi.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PE_BASE_SPI_H
#define PE_BASE_SPI_H

#include "executor/spi.h"

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
	uint64		generation;		/* the schema generation it was made for */
} PePlan;

extern SPIPlanPtr pe_plan(PePlan *p);
extern uint64 pe_spi_run(PePlan *p, Datum *args, const char *nulls,
						 bool read_only, long count, const char *what);
extern void pe_spi_find_payment(PePlan *p, Datum payment_id, bool read_only);
extern SPIPlanPtr pe_prepare_kept(const char *sql, int nargs, Oid *argtypes);
extern Datum pe_spi_getdatum(int row, int col, bool *isnull);

/* the extension payment_ext in this database */
extern bool pe_extension_lookup(Oid *nspid, Oid *owner);
extern Oid	pe_extension_namespace(void);
extern char *pe_extension_schema(void);
extern const char *pe_tables_schema(void);

#endif							/* PE_BASE_SPI_H */
