/*-------------------------------------------------------------------------
 * pgrpl_worker.c
 *		The worker of one subscription: the apply loop.
 *
 * Modeled on the built-in apply worker (worker.c):
 *	- one local transaction per remote transaction, holding its change rows,
 *	  its transaction row and the replication origin progress, so that a
 *	  crash loses or keeps all three together;
 *	- local commits are asynchronous; the primary is told "flushed" only for
 *	  remote transactions whose local commit record is on disk (a list of
 *	  remote end / local end pairs checked against the local flush pointer);
 *	- the socket is drained without blocking, status is sent after each
 *	  batch, and the loop waits on latch + socket with a timeout, so SIGTERM,
 *	  SIGHUP and postmaster death are handled promptly;
 *	- a per-message memory context is reset after every message;
 *	- errors are caught at the top, recorded in shared memory, and the
 *	  session is retried with exponential backoff (1 s to 60 s).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlogrecovery.h"
#include "catalog/namespace.h"
#include "libpq/pqsignal.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/origin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "pgrpl.h"
#include "pgrpl_catalog.h"
#include "pgrpl_compat.h"
#include "pgrpl_decode.h"
#include "pgrpl_json.h"
#include "pgrpl_shmem.h"
#include "pgrpl_stream.h"
#include "pgrpl_worker.h"
#include "pgrpl_writer.h"

#define PGRPL_NAPTIME_MS		1000L
/* Nap while a local commit is not yet flushed (by the WAL writer). */
#define PGRPL_FLUSH_POLL_MS		10L
#define PGRPL_BACKOFF_MIN_MS	1000L
#define PGRPL_BACKOFF_MAX_MS	60000L

/* Bounds of one local commit holding several remote transactions. */
#define PGRPL_GROUP_MAX_UNITS	1000
#define PGRPL_GROUP_MAX_CHANGES	100000
#define PGRPL_GROUP_MAX_MS		200

/* How often the drain loop considers sending a status update. */
#define PGRPL_STATUS_CHECK_MSGS	1024

typedef enum PgrplSessionEnd
{
	PGRPL_SESSION_RETRY,		/* reconnect (after backoff if it failed) */
	PGRPL_SESSION_RESTART,		/* settings changed: reconnect now */
	PGRPL_SESSION_FINISHED,		/* stop_lsn reached */
	PGRPL_SESSION_GONE			/* subscription disabled or dropped */
} PgrplSessionEnd;

/* A local commit not yet known to be flushed. */
typedef struct PgrplFlushPos
{
	dlist_node	node;
	XLogRecPtr	remote_end;
	XLogRecPtr	local_end;
} PgrplFlushPos;

/* State of the remote transaction being received. */
typedef struct PgrplRemoteXact
{
	bool		active;			/* between BEGIN and COMMIT */
	bool		skip;			/* our own writes on a loopback primary, or
								 * already captured */
	XLogRecPtr	final_lsn;
	TransactionId xid;
	TimestampTz commit_time;
	char		origin[NAMEDATALEN];
	bool		has_origin;
	XLogRecPtr	origin_lsn;
	int32		seq;
} PgrplRemoteXact;

/* Everything one worker process knows. */
static struct
{
	PgrplSlot  *slot;
	int32		subid;
	PgrplSubscription *sub;
	WalReceiverConn *conn;
	bool		loopback;
	MemoryContext msgcxt;		/* reset after every message */
	MemoryContext subcxt;		/* the subscription row, per session */

	PgrplRemoteXact xact;
	XLogRecPtr	progress;		/* end of the last unit committed here */

	/*
	 * The open local transaction.  It holds whole remote transactions (a
	 * "group": committed together while more data is waiting, see
	 * pgrpl_group_full) and possibly the rows of the current one.
	 */
	bool		local_open;
	XLogRecPtr	group_end;		/* end of the last whole unit in it, or 0 */
	TimestampTz group_commit_time;	/* its remote commit time */
	int			group_units;
	int64		group_changes;
	TimestampTz group_started;
	XLogRecPtr	seen_end;		/* end of the last remote unit processed */
	XLogRecPtr	last_received;
	XLogRecPtr	last_write_sent;
	XLogRecPtr	last_flush_sent;
	TimestampTz last_status_time;
	TimestampTz last_recv_time;
	bool		ping_sent;
	TimestampTz streaming_since;	/* this session streams since, or 0 */
	dlist_head	flush_map;
	PgrplWorkerState state;
	PgrplSessionEnd end_reason; /* why a handler asked to end the session */

	/* for the error context */
	XLogRecPtr	cur_lsn;
	LogicalRepMsgType cur_type;
	PgrplRelation *cur_rel;
} W;

static void pgrpl_worker_shutdown(int code, Datum arg);
static PgrplSessionEnd pgrpl_session(void);
static PgrplSessionEnd pgrpl_apply_loop(void);
static bool pgrpl_handle_copydata(char *buf, int len, PgrplSessionEnd *end);
static void pgrpl_send_status(bool force, bool reply_requested);
static void pgrpl_abort_local(void);
static void pgrpl_group_reset(void);
static void pgrpl_commit_local(void);

/* ---------------------------------------------------------------------
 * Shared state helpers
 * --------------------------------------------------------------------- */

static void
pgrpl_set_state(PgrplWorkerState state)
{
	W.state = state;
	SpinLockAcquire(&W.slot->mutex);
	W.slot->state = state;
	SpinLockRelease(&W.slot->mutex);
	ConditionVariableBroadcast(&W.slot->progress_cv);
}

static void
pgrpl_record_error(const char *message)
{
	SpinLockAcquire(&W.slot->mutex);
	W.slot->state = PGRPL_STATE_ERROR;
	strlcpy(W.slot->last_error, message, PGRPL_ERROR_LEN);
	W.slot->last_error_time = GetCurrentTimestamp();
	SpinLockRelease(&W.slot->mutex);
	W.state = PGRPL_STATE_ERROR;
	ConditionVariableBroadcast(&W.slot->progress_cv);
}

/* Everything up to "lsn" is materialized here: wake wait_for_lsn(). */
static void
pgrpl_set_caught_up(XLogRecPtr lsn)
{
	bool		advanced = false;

	SpinLockAcquire(&W.slot->mutex);
	if (lsn > W.slot->caught_up_lsn)
	{
		W.slot->caught_up_lsn = lsn;
		advanced = true;
	}
	SpinLockRelease(&W.slot->mutex);
	if (advanced)
		ConditionVariableBroadcast(&W.slot->progress_cv);
}

/* Claim our slot; false if it is gone or another worker holds it. */
static bool
pgrpl_claim_slot(Oid dboid, int32 subid)
{
	PgrplSlot  *slot;
	bool		ok = false;

	LWLockAcquire(pgrpl_shared->lock, LW_EXCLUSIVE);
	slot = pgrpl_slot_find(dboid, subid);
	if (slot != NULL && slot->wanted && slot->pid == 0)
	{
		slot->pid = MyProcPid;
		slot->latch = &MyProc->procLatch;
		slot->restart = false;
		W.slot = slot;
		ok = true;
	}
	LWLockRelease(pgrpl_shared->lock);
	return ok;
}

static void
pgrpl_worker_shutdown(int code, Datum arg)
{
	LWLockAcquire(pgrpl_shared->lock, LW_EXCLUSIVE);
	W.slot->pid = 0;
	W.slot->latch = NULL;
	/* A dropped or disabled subscription's slot is free again. */
	if (!W.slot->wanted && W.state != PGRPL_STATE_FINISHED)
		W.slot->in_use = false;
	LWLockRelease(pgrpl_shared->lock);
	ConditionVariableBroadcast(&W.slot->progress_cv);
}

/* Stop being wanted, e.g. after stop_lsn or when the row is gone. */
static void
pgrpl_unwant(void)
{
	LWLockAcquire(pgrpl_shared->lock, LW_EXCLUSIVE);
	W.slot->wanted = false;
	LWLockRelease(pgrpl_shared->lock);
}

/*
 * Settings changed (alter_subscription, set_stop_lsn) since this session
 * read them?  Checked at every BEGIN and COMMIT, so that no transaction
 * committed here after the change was decided with the old settings.
 */
static bool
pgrpl_restart_pending(void)
{
	bool		restart;

	LWLockAcquire(pgrpl_shared->lock, LW_SHARED);
	restart = W.slot->restart;
	LWLockRelease(pgrpl_shared->lock);
	if (restart)
		W.end_reason = PGRPL_SESSION_RESTART;
	return restart;
}

static bool
pgrpl_restart_requested(void)
{
	bool		restart;

	LWLockAcquire(pgrpl_shared->lock, LW_EXCLUSIVE);
	restart = W.slot->restart;
	W.slot->restart = false;
	LWLockRelease(pgrpl_shared->lock);
	return restart;
}

/* ---------------------------------------------------------------------
 * Error context: which message, LSN and relation failed
 * --------------------------------------------------------------------- */

static void
pgrpl_error_callback(void *arg)
{
	const char *type = pgrpl_message_type_name(W.cur_type);

	if (type == NULL)
		return;
	if (W.cur_rel != NULL)
		errcontext("processing remote %s for relation \"%s.%s\" at %X/%X of subscription \"%s\"",
				   type, W.cur_rel->nspname, W.cur_rel->relname,
				   LSN_FORMAT_ARGS(W.cur_lsn), W.sub ? W.sub->name : "?");
	else
		errcontext("processing remote %s at %X/%X of subscription \"%s\"",
				   type, LSN_FORMAT_ARGS(W.cur_lsn), W.sub ? W.sub->name : "?");
}

/* ---------------------------------------------------------------------
 * Worker entry point
 * --------------------------------------------------------------------- */

static void
pgrpl_worker_settings(void)
{
	/* Values are converted as to_jsonb() would in UTC (README). */
	SetConfigOption("TimeZone", "UTC", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("DateStyle", "ISO", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("search_path", "", PGC_SUSET, PGC_S_OVERRIDE);
	/* Safe: flush feedback only covers locally flushed commits. */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("session_replication_role", "replica", PGC_SUSET, PGC_S_OVERRIDE);
}

/* Clean up after an error caught in the main loop (cf. PostgresMain). */
static void
pgrpl_recover_from_error(void)
{
	ErrorData  *edata;

	HOLD_INTERRUPTS();
	error_context_stack = NULL;
	MemoryContextSwitchTo(TopMemoryContext);
	edata = CopyErrorData();
	EmitErrorReport();
	FlushErrorState();
	AbortOutOfAnyTransaction();
	pgrpl_writer_reset();
	LWLockReleaseAll();
	ConditionVariableCancelSleep();
	pgstat_report_wait_end();
	if (W.conn != NULL)
	{
		walrcv_disconnect(W.conn);
		W.conn = NULL;
	}
	W.xact.active = false;
	pgrpl_group_reset();
	pgrpl_record_error(edata->message);
	FreeErrorData(edata);
	MemoryContextReset(W.msgcxt);
	RESUME_INTERRUPTS();
}

/* Sleep interruptibly; SIGTERM ends the process via CHECK_FOR_INTERRUPTS. */
static void
pgrpl_sleep(long ms)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);

	for (;;)
	{
		long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until);

		if (left <= 0)
			return;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 left, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		/* A settings change ends the backoff: try again now. */
		if (W.slot->restart)
			return;
	}
}

void
pgrpl_worker_main(Datum main_arg)
{
	int32		subid = DatumGetInt32(main_arg);
	Oid			dboid;
	long		backoff = PGRPL_BACKOFF_MIN_MS;

	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	if (!pgrpl_claim_slot(dboid, subid))
		proc_exit(0);
	W.subid = subid;
	before_shmem_exit(pgrpl_worker_shutdown, (Datum) 0);

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	pgrpl_worker_settings();
	pgrpl_stream_load();

	W.msgcxt = AllocSetContextCreate(TopMemoryContext, "pgrpl message",
									 ALLOCSET_DEFAULT_SIZES);
	W.subcxt = AllocSetContextCreate(TopMemoryContext, "pgrpl subscription",
									 ALLOCSET_SMALL_SIZES);
	dlist_init(&W.flush_map);

	for (;;)
	{
		PgrplSessionEnd end = PGRPL_SESSION_RETRY;
		XLogRecPtr	progress_before = W.progress;

		W.streaming_since = 0;
		PG_TRY();
		{
			end = pgrpl_session();
		}
		PG_CATCH();
		{
			pgrpl_recover_from_error();
			end = PGRPL_SESSION_RETRY;
		}
		PG_END_TRY();

		if (end == PGRPL_SESSION_GONE || end == PGRPL_SESSION_FINISHED)
			break;

		/*
		 * Start the backoff over only after a session that got somewhere: it
		 * captured something new, or streamed for a good while.  Receiving
		 * something is not enough: a stream that fails right after its first
		 * keepalive (e.g. the publication was dropped on the primary) would
		 * be retried every second forever.
		 */
		if (W.progress > progress_before ||
			(W.streaming_since != 0 &&
			 TimestampDifferenceExceeds(W.streaming_since, GetCurrentTimestamp(),
										PGRPL_BACKOFF_MAX_MS)))
			backoff = PGRPL_BACKOFF_MIN_MS;
		if (end == PGRPL_SESSION_RESTART || pgrpl_restart_requested())
		{
			backoff = PGRPL_BACKOFF_MIN_MS;
			continue;
		}
		pgrpl_sleep(backoff);
		(void) pgrpl_restart_requested();
		backoff = Min(backoff * 2, PGRPL_BACKOFF_MAX_MS);
	}
	proc_exit(0);
}

/* ---------------------------------------------------------------------
 * One session: read settings, connect, stream until something ends it
 * --------------------------------------------------------------------- */

/* Read the subscription row; NULL if it is gone or disabled. */
static PgrplSubscription *
pgrpl_load_subscription(void)
{
	PgrplSubscription *sub;
	MemoryContext oldcxt;

	MemoryContextReset(W.subcxt);
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	oldcxt = MemoryContextSwitchTo(W.subcxt);
	sub = (get_namespace_oid(PGRPL_SCHEMA, true) == InvalidOid) ? NULL :
		pgrpl_subscription_get_by_id(W.subid);
	MemoryContextSwitchTo(oldcxt);
	PopActiveSnapshot();
	CommitTransactionCommand();
	if (sub == NULL || !sub->enabled)
		return NULL;
	return sub;
}

/* Attach to our replication origin; returns its durable progress. */
static XLogRecPtr
pgrpl_setup_origin(void)
{
	char		name[NAMEDATALEN];
	RepOriginId originid;
	XLogRecPtr	progress;

	StartTransactionCommand();
	pgrpl_origin_name(MyDatabaseId, W.subid, name, sizeof(name));
	originid = replorigin_by_name(name, true);
	if (originid == InvalidRepOriginId)
		originid = replorigin_create(name);
	if (replorigin_session_origin == InvalidRepOriginId)
	{
		pgrpl_replorigin_session_setup(originid);
		replorigin_session_origin = originid;
	}
	progress = replorigin_session_get_progress(false);
	CommitTransactionCommand();
	return progress;
}

static PgrplSessionEnd
pgrpl_session(void)
{
	char	   *sysid;
	char		local_sysid[32];
	PgrplSessionEnd end;

	pgrpl_set_state(PGRPL_STATE_STARTING);
	W.sub = pgrpl_load_subscription();
	if (W.sub == NULL)
	{
		pgrpl_unwant();
		return PGRPL_SESSION_GONE;
	}

	W.progress = pgrpl_setup_origin();
	SpinLockAcquire(&W.slot->mutex);
	if (W.progress > W.slot->flushed_lsn)
		W.slot->flushed_lsn = W.progress;
	SpinLockRelease(&W.slot->mutex);
	pgrpl_set_caught_up(W.progress);
	if (!XLogRecPtrIsInvalid(W.sub->stop_lsn) && W.progress >= W.sub->stop_lsn)
	{
		pgrpl_set_state(PGRPL_STATE_FINISHED);
		pgrpl_unwant();
		return PGRPL_SESSION_FINISHED;
	}

	pgrpl_set_state(PGRPL_STATE_CONNECTING);
	W.conn = pgrpl_stream_connect(W.sub->conninfo, W.sub->name);

	sysid = pgrpl_stream_identify(W.conn);
	if (strcmp(sysid, W.sub->system_identifier) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the primary of subscription \"%s\" is a different database cluster",
						W.sub->name),
				 errdetail("The primary's system identifier is %s, but the subscription was created for %s.",
						   sysid, W.sub->system_identifier),
				 errhint("Point the subscription back to its primary with pgrpl.alter_subscription, or drop and recreate it.")));
	snprintf(local_sysid, sizeof(local_sysid), UINT64_FORMAT, GetSystemIdentifier());
	W.loopback = (strcmp(sysid, local_sysid) == 0);

	pgrpl_relmap_reset();
	pgrpl_relmap_set_loopback(W.loopback);
	memset(&W.xact, 0, sizeof(W.xact));
	pgrpl_group_reset();
	W.seen_end = W.progress;
	W.last_received = W.progress;
	W.last_write_sent = W.last_flush_sent = InvalidXLogRecPtr;
	W.last_status_time = 0;
	W.ping_sent = false;

	pgrpl_stream_start(W.conn, W.sub->slot_name, W.progress, W.sub->publications);
	pgrpl_set_state(PGRPL_STATE_STREAMING);
	W.streaming_since = GetCurrentTimestamp();
	SpinLockAcquire(&W.slot->mutex);
	W.slot->last_error[0] = '\0';
	SpinLockRelease(&W.slot->mutex);

	end = pgrpl_apply_loop();

	/*
	 * Stopping mid-transaction: abort, and it is sent again next time (with
	 * any whole transactions grouped before it).  Otherwise keep the group.
	 */
	if (W.xact.active)
		pgrpl_abort_local();
	else
		pgrpl_commit_local();
	if (end == PGRPL_SESSION_FINISHED)
	{
		/*
		 * What ended the session (e.g. a non-transactional message past
		 * stop_lsn) was received but not captured: confirm no more than we
		 * have, or the slot would skip it once streaming resumes.
		 */
		W.last_received = Min(W.last_received, W.progress);
		/* Make our last commit durable so the final status can cover it. */
		XLogFlush(XactLastCommitEnd);
		pgrpl_send_status(true, false);

		/*
		 * The stream is in commit order, so what ended it (past stop_lsn)
		 * shows that every unit ending at or before stop_lsn is here:
		 * wait_for_lsn(stop_lsn) must say so, although the last unit may end
		 * well before it.
		 */
		pgrpl_set_caught_up(W.sub->stop_lsn);
		pgrpl_set_state(PGRPL_STATE_FINISHED);
		pgrpl_unwant();
	}
	walrcv_disconnect(W.conn);
	W.conn = NULL;
	return end;
}

/* ---------------------------------------------------------------------
 * The apply loop
 * --------------------------------------------------------------------- */

static void
pgrpl_check_timeout(TimestampTz now)
{
	TimestampTz timeout;

	if (wal_receiver_timeout <= 0)
		return;
	timeout = TimestampTzPlusMilliseconds(W.last_recv_time, wal_receiver_timeout);
	if (now >= timeout)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("terminating pgrpl worker of subscription \"%s\" due to timeout",
						W.sub->name),
				 errdetail("Nothing was received from the primary for %d ms (\"wal_receiver_timeout\").",
						   wal_receiver_timeout)));
	/* Half way there: ask the primary for a sign of life. */
	if (!W.ping_sent &&
		now >= TimestampTzPlusMilliseconds(W.last_recv_time, wal_receiver_timeout / 2))
	{
		pgrpl_send_status(true, true);
		W.ping_sent = true;
	}
}

static PgrplSessionEnd
pgrpl_apply_loop(void)
{
	ErrorContextCallback errcallback;
	PgrplSessionEnd end = PGRPL_SESSION_RETRY;
	bool		done = false;

	errcallback.callback = pgrpl_error_callback;
	errcallback.arg = NULL;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	W.last_recv_time = GetCurrentTimestamp();
	while (!done)
	{
		pgsocket	fd = PGINVALID_SOCKET;
		char	   *buf = NULL;
		int			len;
		int			rc;
		uint32		nmsgs = 0;

		CHECK_FOR_INTERRUPTS();
		MemoryContextSwitchTo(W.msgcxt);

		/* Drain everything available without blocking. */
		len = walrcv_receive(W.conn, &buf, &fd);
		while (len != 0)
		{
			if (len < 0)
				ereport(ERROR,
						(errcode(ERRCODE_CONNECTION_FAILURE),
						 errmsg("the primary ended the replication stream of subscription \"%s\"",
								W.sub->name)));
			W.last_recv_time = GetCurrentTimestamp();
			W.ping_sent = false;
			done = pgrpl_handle_copydata(buf, len, &end);
			MemoryContextSwitchTo(W.msgcxt);
			MemoryContextReset(W.msgcxt);
			if (done)
				break;
			CHECK_FOR_INTERRUPTS();

			/*
			 * Settings changed (e.g. a stop_lsn ahead of us): act now, not
			 * when a busy stream next runs dry -- by then we could be far
			 * past the new stop_lsn.  Unlocked read, as in pgrpl_sleep; the
			 * flag is consumed below.
			 */
			if (W.slot->restart)
				break;

			/*
			 * A long catch-up never empties the socket: report progress on
			 * the way (at most every wal_receiver_status_interval), so the
			 * primary can recycle WAL and the flush list stays short.
			 */
			if (++nmsgs % PGRPL_STATUS_CHECK_MSGS == 0)
				pgrpl_send_status(false, false);
			len = walrcv_receive(W.conn, &buf, &fd);
		}
		if (done)
			break;

		/* Nothing more is waiting: make the group visible now. */
		if (!W.xact.active)
			pgrpl_commit_local();

		pgrpl_send_status(false, false);

		if (pgrpl_restart_requested())
		{
			end = PGRPL_SESSION_RESTART;
			break;
		}

		/*
		 * Our commits are asynchronous: the WAL writer flushes them within
		 * wal_writer_delay.  While one is pending (pgrpl_send_status just
		 * dropped the flushed ones from flush_map), look again soon, so the
		 * primary hears "flushed" promptly once the stream goes quiet (a
		 * full nap would hold the slot back by up to a second).
		 */
		rc = WaitLatchOrSocket(MyLatch,
							   WL_SOCKET_READABLE | WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							   fd,
							   dlist_is_empty(&W.flush_map) ? PGRPL_NAPTIME_MS : PGRPL_FLUSH_POLL_MS,
							   PG_WAIT_EXTENSION);
		if (rc & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (rc & WL_TIMEOUT)
			pgrpl_check_timeout(GetCurrentTimestamp());
	}

	error_context_stack = errcallback.previous;
	MemoryContextSwitchTo(TopMemoryContext);
	return end;
}

/* ---------------------------------------------------------------------
 * Status updates and flush tracking
 * --------------------------------------------------------------------- */

/*
 * Highest remote end LSN whose local commit is flushed; sets *pending when
 * some local commit is not flushed yet.
 */
static XLogRecPtr
pgrpl_flushed_remote_lsn(bool *pending)
{
	XLogRecPtr	local_flush = GetFlushRecPtr(NULL);
	XLogRecPtr	flushed = InvalidXLogRecPtr;
	dlist_mutable_iter iter;

	*pending = false;
	dlist_foreach_modify(iter, &W.flush_map)
	{
		PgrplFlushPos *pos = dlist_container(PgrplFlushPos, node, iter.cur);

		if (pos->local_end > local_flush)
		{
			*pending = true;
			break;
		}
		flushed = pos->remote_end;
		dlist_delete(iter.cur);
		pfree(pos);
	}
	return flushed;
}

static void
pgrpl_remember_commit(XLogRecPtr remote_end)
{
	PgrplFlushPos *pos = MemoryContextAlloc(TopMemoryContext, sizeof(PgrplFlushPos));

	pos->remote_end = remote_end;
	pos->local_end = XactLastCommitEnd;
	dlist_push_tail(&W.flush_map, &pos->node);
}

/*
 * Tell the primary what we have: write = received, flush = durable here.
 * With nothing pending and no remote transaction open, everything received
 * is either durable or needs nothing, so the slot may advance to it (an idle
 * primary can then recycle WAL).
 */
static void
pgrpl_send_status(bool force, bool reply_requested)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		pending;
	XLogRecPtr	flushed = pgrpl_flushed_remote_lsn(&pending);
	XLogRecPtr	write = W.last_received;
	XLogRecPtr	flush = Max(flushed, W.last_flush_sent);

	if (!pending && !W.xact.active && !W.local_open)
		flush = Max(flush, write);
	if (XLogRecPtrIsInvalid(flush))
		flush = W.progress;
	if (write < flush)
		write = flush;

	if (!force && write == W.last_write_sent && flush == W.last_flush_sent &&
		!TimestampDifferenceExceeds(W.last_status_time, now,
									wal_receiver_status_interval * 1000))
		return;

	pgrpl_send_feedback(W.conn, write, flush, reply_requested);
	W.last_write_sent = write;
	W.last_flush_sent = flush;
	W.last_status_time = now;
}

/* ---------------------------------------------------------------------
 * Message handlers
 * --------------------------------------------------------------------- */

static void
pgrpl_protocol_error(const char *fmt, const char *type)
{
	ereport(ERROR,
			(errcode(ERRCODE_PROTOCOL_VIOLATION),
			 errmsg(fmt, type)));
}

/* Open the local transaction (and the writer), once per group. */
static void
pgrpl_begin_local(void)
{
	if (W.local_open)
		return;
	StartTransactionCommand();
	/* Index expressions/predicates on the log may call SQL functions. */
	PushActiveSnapshot(GetTransactionSnapshot());
	pgrpl_writer_begin(W.subid);
	W.local_open = true;
	W.group_end = InvalidXLogRecPtr;
	W.group_units = 0;
	W.group_changes = 0;
	W.group_started = GetCurrentTimestamp();
	MemoryContextSwitchTo(W.msgcxt);
}

static void
pgrpl_group_reset(void)
{
	W.local_open = false;
	W.group_end = InvalidXLogRecPtr;
	W.group_units = 0;
	W.group_changes = 0;
}

/* Forget the open local transaction; its remote units are sent again. */
static void
pgrpl_abort_local(void)
{
	if (!W.local_open)
		return;
	pgrpl_writer_reset();
	AbortCurrentTransaction();
	pgrpl_group_reset();
	MemoryContextSwitchTo(W.msgcxt);
}

/*
 * Commit the whole remote units of the open local transaction.  The
 * replication origin's progress commits atomically with their rows (see
 * origin.c); the commit is asynchronous, and pgrpl_send_status reports it
 * as flushed only once the local WAL is flushed past it.
 */
static void
pgrpl_commit_local(void)
{
	if (W.local_open && XLogRecPtrIsInvalid(W.group_end))
		pgrpl_abort_local();	/* rows of nothing whole: cannot happen */
	if (W.local_open)
	{
		pgrpl_writer_end();
		PopActiveSnapshot();
		replorigin_session_origin_lsn = W.group_end;
		replorigin_session_origin_timestamp = W.group_commit_time;
		CommitTransactionCommand();
		pgstat_report_stat(false);
		pgrpl_remember_commit(W.group_end);
		W.progress = W.group_end;

		SpinLockAcquire(&W.slot->mutex);
		W.slot->flushed_lsn = W.group_end;
		W.slot->transactions += W.group_units;
		W.slot->changes += W.group_changes;
		SpinLockRelease(&W.slot->mutex);
		pgrpl_group_reset();
		MemoryContextSwitchTo(W.msgcxt);
	}
	/* Everything processed is now materialized (or needed nothing). */
	if (!W.xact.active)
		pgrpl_set_caught_up(W.seen_end);
}

/*
 * A whole remote unit was added to the open local transaction.  Keep
 * grouping while more data is queued (the drain loop commits when the
 * socket is empty), but bound what one local commit holds and how long
 * rows stay invisible.  With a stop_lsn every unit commits alone: the unit
 * that crosses it must be dropped without losing the ones before.
 */
static void
pgrpl_unit_done(XLogRecPtr end, TimestampTz commit_time, int64 changes, bool txn)
{
	W.group_end = end;
	W.group_commit_time = commit_time;
	W.group_units += txn ? 1 : 0;
	W.group_changes += changes;
	W.seen_end = end;
	if (!XLogRecPtrIsInvalid(W.sub->stop_lsn) ||
		W.group_units >= PGRPL_GROUP_MAX_UNITS ||
		W.group_changes >= PGRPL_GROUP_MAX_CHANGES ||
		TimestampDifferenceExceeds(W.group_started, GetCurrentTimestamp(),
								   PGRPL_GROUP_MAX_MS))
		pgrpl_commit_local();
}

/* True when the changes of the current remote transaction are written. */
static bool
pgrpl_capturing(const char *type)
{
	if (!W.xact.active)
		pgrpl_protocol_error("unexpected %s outside a transaction", type);
	return !W.xact.skip;
}

static void
pgrpl_write_change(PgrplChangeRow *row)
{
	pgrpl_begin_local();
	row->commit_lsn = W.xact.final_lsn;
	row->seq = ++W.xact.seq;
	row->lsn = W.cur_lsn;
	pgrpl_writer_insert_change(row);
}

static bool
pgrpl_handle_begin(PgrplMessage *msg)
{
	if (W.xact.active)
		pgrpl_protocol_error("unexpected %s inside a transaction", "BEGIN");
	if (pgrpl_restart_pending())
		return true;
	memset(&W.xact, 0, sizeof(W.xact));
	W.xact.active = true;
	W.xact.final_lsn = msg->u.begin.final_lsn;
	W.xact.xid = msg->u.begin.xid;
	W.xact.commit_time = msg->u.begin.committime;
	/* Sent again after a reconnect although we have it: skip it. */
	W.xact.skip = (W.xact.final_lsn < W.progress);

	/* Its end is past stop_lsn: the stream is complete for the user. */
	return !XLogRecPtrIsInvalid(W.sub->stop_lsn) &&
		W.xact.final_lsn >= W.sub->stop_lsn;
}

static bool
pgrpl_handle_commit(PgrplMessage *msg)
{
	LogicalRepCommitData *c = &msg->u.commit;

	if (!W.xact.active)
		pgrpl_protocol_error("unexpected %s outside a transaction", "COMMIT");
	if (c->commit_lsn != W.xact.final_lsn)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("incorrect commit LSN %X/%X in COMMIT message (expected %X/%X)",
						LSN_FORMAT_ARGS(c->commit_lsn),
						LSN_FORMAT_ARGS(W.xact.final_lsn))));
	if (pgrpl_restart_pending())
		return true;			/* resent to the next session */
	if (!XLogRecPtrIsInvalid(W.sub->stop_lsn) && c->end_lsn > W.sub->stop_lsn)
		return true;			/* the caller aborts the local transaction */

	if (W.xact.seq > 0)
	{
		PgrplTxnRow txn;

		txn.commit_lsn = c->commit_lsn;
		txn.end_lsn = c->end_lsn;
		txn.xid = W.xact.xid;
		txn.commit_time = c->committime;
		txn.origin = W.xact.has_origin ? W.xact.origin : NULL;
		txn.origin_lsn = W.xact.origin_lsn;
		txn.changes = W.xact.seq;
		pgrpl_writer_insert_transaction(&txn);
		W.xact.active = false;
		pgrpl_unit_done(c->end_lsn, c->committime, W.xact.seq, true);
	}
	else
	{
		/* Nothing captured (skipped or empty): nothing to make durable. */
		W.xact.active = false;
		W.seen_end = Max(W.seen_end, c->end_lsn);
		if (!W.local_open)
			pgrpl_set_caught_up(W.seen_end);
	}
	return false;
}

static void
pgrpl_handle_origin(PgrplMessage *msg)
{
	if (!W.xact.active)
		pgrpl_protocol_error("unexpected %s outside a transaction", "ORIGIN");
	strlcpy(W.xact.origin, msg->u.origin.name, NAMEDATALEN);
	W.xact.has_origin = true;
	W.xact.origin_lsn = msg->u.origin.lsn;
	/* Our own writes, decoded from this very cluster: never capture them. */
	if (W.loopback && strncmp(W.xact.origin, PGRPL_ORIGIN_PREFIX,
							  strlen(PGRPL_ORIGIN_PREFIX)) == 0)
		W.xact.skip = true;
}

static void
pgrpl_handle_relation(PgrplMessage *msg)
{
	bool		started = !IsTransactionState();

	/* Resolving types needs the catalogs. */
	if (started)
		StartTransactionCommand();
	pgrpl_relmap_add_relation(msg->u.relation);
	if (started)
		CommitTransactionCommand();
	MemoryContextSwitchTo(W.msgcxt);
}

static void
pgrpl_handle_change(PgrplMessage *msg)
{
	PgrplChangeMsg *c = &msg->u.change;
	PgrplRelation *rel = pgrpl_relmap_get(c->relid);
	PgrplChangeRow row = {0};

	W.cur_rel = rel;
	if (!pgrpl_capturing(pgrpl_message_type_name(msg->type)) || rel->skip)
		return;
	pgrpl_begin_local();

	row.schema_name = rel->nspname;
	row.table_name = rel->relname;
	switch (msg->type)
	{
		case LOGICAL_REP_MSG_INSERT:
			row.op = PGRPL_OP_INSERT;
			row.new = pgrpl_tuple_to_jsonb(rel, &c->newtup, false, &row.unchanged);
			row.row_key = pgrpl_tuple_key(rel, &c->newtup, NULL);
			break;
		case LOGICAL_REP_MSG_UPDATE:
			row.op = PGRPL_OP_UPDATE;
			row.new = pgrpl_tuple_to_jsonb(rel, &c->newtup, false, &row.unchanged);
			if (c->old_kind != 0)
			{
				row.old = pgrpl_tuple_to_jsonb(rel, &c->oldtup, c->old_kind == 'K', NULL);
				row.old_key = (c->old_kind == 'K') ? row.old :
					pgrpl_tuple_key(rel, &c->oldtup, NULL);
			}
			row.row_key = pgrpl_tuple_key(rel, &c->newtup,
										  c->old_kind != 0 ? &c->oldtup : NULL);
			/* old_key marks a key change: row_history() follows it. */
			if (row.old_key != NULL && row.row_key != NULL &&
				pgrpl_jsonb_equal(row.old_key, row.row_key))
				row.old_key = NULL;
			break;
		case LOGICAL_REP_MSG_DELETE:
			row.op = PGRPL_OP_DELETE;
			row.old = pgrpl_tuple_to_jsonb(rel, &c->oldtup, c->old_kind == 'K', NULL);
			row.row_key = (c->old_kind == 'K') ? row.old :
				pgrpl_tuple_key(rel, &c->oldtup, NULL);
			break;
		default:
			Assert(false);
	}
	pgrpl_write_change(&row);
}

static void
pgrpl_handle_truncate(PgrplMessage *msg)
{
	ListCell   *lc;

	if (!pgrpl_capturing("TRUNCATE"))
		return;
	foreach(lc, msg->u.truncate.relids)
	{
		PgrplRelation *rel = pgrpl_relmap_get(lfirst_oid(lc));
		PgrplChangeRow row = {0};

		if (rel->skip)
			continue;
		row.op = PGRPL_OP_TRUNCATE;
		row.schema_name = rel->nspname;
		row.table_name = rel->relname;
		pgrpl_write_change(&row);
	}
}

/*
 * A non-transactional message is its own unit: one local transaction whose
 * progress is its lsn.  pgoutput sends the END of the message's WAL record
 * as its lsn, so a restart there skips it (the walsender skips messages
 * that start before its start point), yet still sends a transaction whose
 * commit record starts right there -- often the very transaction that
 * emitted the message.  So the message's row gets lsn - 1 (inside its own
 * record) as commit_lsn and lsn: unique, and before that transaction.
 */
static bool
pgrpl_handle_message(PgrplMessage *msg)
{
	PgrplLogicalMsg *m = &msg->u.message;
	PgrplChangeRow row = {0};
	XLogRecPtr	end = m->lsn;

	row.op = PGRPL_OP_MESSAGE;
	row.message_prefix = m->prefix;
	row.message_content = m->content;
	row.message_len = m->len;

	if (m->transactional)
	{
		if (pgrpl_capturing("transactional MESSAGE"))
			pgrpl_write_change(&row);
		return false;
	}

	if (W.xact.active)
		pgrpl_protocol_error("unexpected %s inside a transaction",
							 "non-transactional MESSAGE");
	if (end <= W.progress)
		return false;
	if (!XLogRecPtrIsInvalid(W.sub->stop_lsn) && end > W.sub->stop_lsn)
		return true;

	pgrpl_begin_local();
	row.commit_lsn = m->lsn - 1;
	row.seq = 1;
	row.lsn = m->lsn - 1;
	pgrpl_writer_insert_change(&row);
	pgrpl_unit_done(end, GetCurrentTimestamp(), 1, false);
	return false;
}

/* Dispatch one pgoutput message; true when stop_lsn has been reached. */
static bool
pgrpl_apply_message(StringInfo payload)
{
	PgrplMessage msg;

	W.cur_rel = NULL;
	W.cur_type = payload->len > 0 ? (LogicalRepMsgType) payload->data[0] : 0;
	pgrpl_decode_message(payload, &msg);

	switch (msg.type)
	{
		case LOGICAL_REP_MSG_BEGIN:
			return pgrpl_handle_begin(&msg);
		case LOGICAL_REP_MSG_COMMIT:
			return pgrpl_handle_commit(&msg);
		case LOGICAL_REP_MSG_ORIGIN:
			pgrpl_handle_origin(&msg);
			break;
		case LOGICAL_REP_MSG_RELATION:
			pgrpl_handle_relation(&msg);
			break;
		case LOGICAL_REP_MSG_TYPE:
			pgrpl_relmap_add_type(&msg.u.type);
			break;
		case LOGICAL_REP_MSG_INSERT:
		case LOGICAL_REP_MSG_UPDATE:
		case LOGICAL_REP_MSG_DELETE:
			pgrpl_handle_change(&msg);
			break;
		case LOGICAL_REP_MSG_TRUNCATE:
			pgrpl_handle_truncate(&msg);
			break;
		case LOGICAL_REP_MSG_MESSAGE:
			return pgrpl_handle_message(&msg);
		default:
			/* The decoder only returns the types above. */
			elog(ERROR, "unexpected pgoutput message type %d", msg.type);
	}
	return false;
}

static void
pgrpl_note_received(PgrplCopyData *cd, int len)
{
	TimestampTz now = GetCurrentTimestamp();

	if (cd->wal_end > W.last_received)
		W.last_received = cd->wal_end;
	SpinLockAcquire(&W.slot->mutex);
	W.slot->received_lsn = W.last_received;
	W.slot->bytes_received += len;
	W.slot->last_msg_send_time = cd->send_time;
	W.slot->last_msg_receipt_time = now;
	if (cd->kind == 'k')
	{
		W.slot->latest_end_lsn = cd->wal_end;
		W.slot->latest_end_time = cd->send_time;
	}
	SpinLockRelease(&W.slot->mutex);
}

/*
 * Handle one CopyData message.  Returns true when the session must end
 * (*end says why).
 */
static bool
pgrpl_handle_copydata(char *buf, int len, PgrplSessionEnd *end)
{
	PgrplCopyData cd;
	bool		stop = false;

	W.end_reason = PGRPL_SESSION_FINISHED;
	pgrpl_parse_copydata(buf, len, &cd);
	pgrpl_note_received(&cd, len);

	if (cd.kind == 'w')
	{
		W.cur_lsn = cd.data_start;
		stop = pgrpl_apply_message(&cd.payload);
		/* Later errors (e.g. in walrcv_receive) are not about this message. */
		W.cur_type = 0;
		W.cur_rel = NULL;
	}
	else
	{
		/*
		 * A keepalive: everything before wal_end has been sent, so with no
		 * transaction open we have all the primary committed up to there.
		 */
		if (!W.xact.active)
		{
			pgrpl_commit_local();
			pgrpl_set_caught_up(cd.wal_end);
			if (!XLogRecPtrIsInvalid(W.sub->stop_lsn) && cd.wal_end >= W.sub->stop_lsn)
				stop = true;
		}
		if (cd.reply_requested && !stop)
			pgrpl_send_status(true, false);
	}
	if (stop)
		*end = W.end_reason;
	return stop;
}
