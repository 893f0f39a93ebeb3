/*-------------------------------------------------------------------------
 *
 * state.c
 *		The outbox worker's process-local state, shared by its phases
 *		(claim.c, send.c, record.c) and its loop (worker.c): the curl
 *		handle, the memory contexts and lists of the requests it holds, the
 *		API key; and its transactions.
 *
 * Invariants:
 *	- Every transaction runs as payment_ext.worker_role
 *	  (SetUserIdAndSecContext), never as the superuser it connects as.
 *	- Memory: loop_cxt is reset at each turn of the loop; each claimed row
 *	  has its own context under inflight_cxt, deleted (after wiping the
 *	  request) once its outcome is recorded; both are reset after an error.
 *
 * IDENTIFICATION
 *		src/outbox/state.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

#include "outbox/outbox_int.h"

OutboxWorker pe_worker = {
	.http = NULL,
	.loop_cxt = NULL,
	.inflight_cxt = NULL,
	.done_list = DLIST_STATIC_INIT(pe_worker.done_list),
	.all_items = DLIST_STATIC_INIT(pe_worker.all_items),
	.api_key = NULL,
	.role_oid = InvalidOid
};

static Oid	saved_userid;
static int	saved_sec_context;

/* Start a transaction as the worker role, with SPI and a snapshot. */
void
pe_outbox_xact_begin(const char *what)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	GetUserIdAndSecContext(&saved_userid, &saved_sec_context);
	SetUserIdAndSecContext(pe_worker.role_oid, saved_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, what);
}

/* Commit the transaction of pe_outbox_xact_begin. */
void
pe_outbox_xact_end(void)
{
	SPI_finish();
	PopActiveSnapshot();
	SetUserIdAndSecContext(saved_userid, saved_sec_context);
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * pe_outbox_subxact
 *		Run fn(arg) in an internal subtransaction of the current transaction,
 *		so that one row's failure (a request that cannot be built, an
 *		outcome that cannot be recorded) rolls back alone and the others go
 *		on (PG_TRY in an internal subtransaction, as PL/pgSQL's exception
 *		blocks do).  Returns NULL when fn returned, else its error, copied
 *		into the caller's memory context and flushed, the subtransaction
 *		rolled back.  The caller's memory context and resource owner are
 *		current again on return either way.
 */
ErrorData *
pe_outbox_subxact(void (*fn) (void *arg), void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = oldowner;
	}
	PG_END_TRY();
	return edata;
}

/* Wipe an item's request (it may hold opened Stripe ids). */
void
pe_outbox_item_wipe(OutboxItem *item)
{
	pe_http_release(&item->http);
	if (item->http.body != NULL)
		explicit_bzero(item->http.body, item->body_cap);
	if (item->http.url != NULL)
		explicit_bzero(item->http.url, strlen(item->http.url));
}

/* Wipe an item's request and free it with everything it holds. */
void
pe_outbox_item_free(OutboxItem *item)
{
	pe_outbox_item_wipe(item);
	dlist_delete(&item->all_node);
	MemoryContextDelete(item->cxt);
}
