/*-------------------------------------------------------------------------
 *
 * pg_compat.h
 *		The server API differences between the PostgreSQL major versions
 *		payment_ext supports (15, 16, 17, 18; README "Supported
 *		versions"), in one place: every call whose signature or meaning
 *		changed between them goes through a shim below, guarded by
 *		PG_VERSION_NUM, so the code elsewhere has no version #ifs.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PE_PG_COMPAT_H
#define PE_PG_COMPAT_H

#include "postgres.h"

#include "access/heapam.h"
#include "common/jsonapi.h"
#include "executor/executor.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/relcache.h"

#if PG_VERSION_NUM < 150000
#error "payment_ext needs PostgreSQL 15 or later"
#endif

/*
 * pg_noreturn (18) replaced pg_attribute_noreturn() (up to 17), and is
 * written before the declaration.  GCC and Clang accept the attribute there.
 */
#ifndef pg_noreturn
#define pg_noreturn pg_attribute_noreturn()
#endif

/* 17 moved the local transaction id into MyProc->vxid. */
#if PG_VERSION_NUM >= 170000
#define PE_MY_LXID (MyProc->vxid.lxid)
#else
#define PE_MY_LXID (MyProc->lxid)
#endif

/*
 * 18: RelationGetPrimaryKeyIndex takes deferrable_ok.  Up to 17 the relcache
 * only ever reported an immediate (non-deferrable) primary key: false keeps
 * that meaning.
 */
#if PG_VERSION_NUM >= 180000
#define pe_RelationGetPrimaryKeyIndex(rel) RelationGetPrimaryKeyIndex((rel), false)
#else
#define pe_RelationGetPrimaryKeyIndex(rel) RelationGetPrimaryKeyIndex(rel)
#endif

/*
 * 17: makeJsonLexContextCstringLen takes the context to fill first (NULL:
 * allocate one, as before).
 */
#if PG_VERSION_NUM >= 170000
#define pe_makeJsonLexContextCstringLen(json, len, enc, esc) \
	makeJsonLexContextCstringLen(NULL, (json), (len), (enc), (esc))
#else
#define pe_makeJsonLexContextCstringLen(json, len, enc, esc) \
	makeJsonLexContextCstringLen((json), (len), (enc), (esc))
#endif

/*
 * 17: CreateWaitEventSet takes the ResourceOwner to remember the set in,
 * instead of a memory context.  Ours lives for the whole worker, across
 * transactions, in TopMemoryContext; NULL: owned by no resource owner, which
 * is what a set in TopMemoryContext was up to 16, freed by FreeWaitEventSet.
 */
#if PG_VERSION_NUM >= 170000
#define pe_CreateWaitEventSet_top(nevents) CreateWaitEventSet(NULL, (nevents))
#else
#define pe_CreateWaitEventSet_top(nevents) CreateWaitEventSet(TopMemoryContext, (nevents))
#endif

/*
 * 16: ExecInsertIndexTuples takes onlySummarizing (true: only the
 * summarizing indexes, e.g. BRIN, get entries: an update that heap_update
 * made HOT for all others).
 */
#if PG_VERSION_NUM >= 160000
#define pe_ExecInsertIndexTuples(rri, slot, estate, update, noDupErr, specConflict, arbiters, onlySummarizing) \
	ExecInsertIndexTuples((rri), (slot), (estate), (update), (noDupErr), (specConflict), (arbiters), (onlySummarizing))
#else
#define pe_ExecInsertIndexTuples(rri, slot, estate, update, noDupErr, specConflict, arbiters, onlySummarizing) \
	((void) (onlySummarizing), \
	 ExecInsertIndexTuples((rri), (slot), (estate), (update), (noDupErr), (specConflict), (arbiters)))
#endif

/*
 * pe_heap_update
 *		heap_update(), non-waiting-free form (wait = true, no crosscheck
 *		snapshot), telling which index entries the new version needs:
 *		*index_entries false: none (a HOT update); true with
 *		*only_summarizing: only the summarizing indexes (16+).  Up to 15 the
 *		answer is "all, unless the new tuple is heap-only"; from 16 on
 *		heap_update says so itself (TU_UpdateIndexes), and that value, not
 *		HeapTupleIsHeapOnly, is what counts.  Only meaningful on TM_Ok.
 */
static inline TM_Result
pe_heap_update(Relation rel, ItemPointer otid, HeapTuple newtup, CommandId cid,
			   TM_FailureData *tmfd, LockTupleMode *lockmode,
			   bool *index_entries, bool *only_summarizing)
{
	TM_Result	result;
#if PG_VERSION_NUM >= 160000
	TU_UpdateIndexes update_indexes = TU_None;

	result = heap_update(rel, otid, newtup, cid, InvalidSnapshot, true,
						 tmfd, lockmode, &update_indexes);
	*index_entries = (update_indexes != TU_None);
	*only_summarizing = (update_indexes == TU_Summarizing);
#else
	result = heap_update(rel, otid, newtup, cid, InvalidSnapshot, true,
						 tmfd, lockmode);
	*index_entries = !HeapTupleIsHeapOnly(newtup);
	*only_summarizing = false;
#endif
	return result;
}

#endif							/* PE_PG_COMPAT_H */
