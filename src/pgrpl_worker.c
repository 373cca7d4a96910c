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
#include "storage/latch.h"
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
#include "pgrpl_capture.h"
#include "pgrpl_catalog.h"
#include "pgrpl_compat.h"
#include "pgrpl_decode.h"
#include "pgrpl_json.h"
#include "pgrpl_shmem.h"
#include "pgrpl_recvq.h"
#include "pgrpl_snapshot.h"
#include "pgrpl_stream.h"
#include "pgrpl_worker.h"
#include "pgrpl_writer.h"

#define PGRPL_NAPTIME_MS		1000L
/*
 * Nap while a local commit is not yet flushed, by the WAL writer or by
 * pgrpl_flush_quiet.
 */
#define PGRPL_FLUSH_POLL_MS		10L
#define PGRPL_BACKOFF_MIN_MS	1000L
#define PGRPL_BACKOFF_MAX_MS	60000L
/* How often an idle worker applies its subscription's retention. */
#define PGRPL_RETENTION_CHECK_MS	10000L

/* Bounds of one local commit holding several remote transactions. */
#define PGRPL_GROUP_MAX_UNITS	1000
#define PGRPL_GROUP_MAX_CHANGES	100000
#define PGRPL_GROUP_MAX_MS		200

/*
 * When the socket runs dry with a group open, wait this long for more before
 * committing it, while the group is younger than PGRPL_LINGER_MAX_AGE_MS
 * (see pgrpl_linger).
 */
#define PGRPL_LINGER_MS			1L
#define PGRPL_LINGER_MAX_AGE_MS	50

/*
 * After a drain of fewer than PGRPL_NAP_BELOW_MSGS messages in the middle
 * of a transaction or group, sleep PGRPL_NAP_US before looking again (see
 * the apply loop).
 */
#define PGRPL_NAP_BELOW_MSGS	512
#define PGRPL_NAP_US			500L
/* The same nap on a paced TCP stream (pgrpl_stream_pace). */
#define PGRPL_PACED_NAP_US		20000L
/* A group begun within this long after the previous commit is "busy". */
#define PGRPL_BUSY_COMMIT_MS	5

/* How often the drain loop considers sending a status update. */
#define PGRPL_STATUS_CHECK_MSGS	1024
/* How often (messages) a busy stream checks whether a chunk is due. */
#define PGRPL_SNAPSHOT_CHECK_MSGS 64

/*
 * While handling a busy stream, empty the socket into the receive queue
 * after this many messages or bytes handled.  A Unix socket fills with
 * about 280 small messages or 70 of 1.4 kB, 1-2 ms of a walsender's
 * output; handling 128 small ones takes about 0.5 ms.  Reading more often
 * cost measurable CPU in recv calls that found little.  Not on a paced
 * stream (pgrpl_stream_decide).
 */
#define PGRPL_FILL_MSGS			128
#define PGRPL_FILL_BYTES		(32 * 1024)

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

/* Everything one worker process knows. */
static struct
{
	int32		subid;
	PgrplSubscription *sub;
	WalReceiverConn *conn;
	bool		loopback;
	MemoryContext msgcxt;		/* reset after every message */
	MemoryContext subcxt;		/* the subscription row, per session */

	PgrplCapture cap;			/* the remote transaction, what becomes rows */
	PgrplProtocol proto;		/* what this session asked the primary for */
	bool		streams_unfinished; /* streamed rows of an ended session may remain */
	XLogRecPtr	progress;		/* end of the last unit committed here */
	XLogRecPtr	durable_start;	/* the session's start: durable here */
	TimestampTz last_retention; /* when retention was last applied */

	/*
	 * The open local transaction.  It holds whole remote transactions (a
	 * "group": committed together while more data is waiting, see
	 * pgrpl_group_full) and possibly the rows of the current one.
	 */
	bool		local_open;
	XLogRecPtr	group_end;		/* end of the last whole unit in it, or 0 */
	TimestampTz group_commit_time;	/* its remote commit time */
	int			group_units;
	int			group_streamed; /* of those, streamed transactions */
	TimestampTz group_stream_commit;	/* first of their STREAM COMMITs arrived */
	int64		group_changes;
	TimestampTz group_started;
	XLogRecPtr	seen_end;		/* end of the last remote unit processed */
	XLogRecPtr	last_received;
	XLogRecPtr	last_write_sent;
	XLogRecPtr	last_flush_sent;
	TimestampTz last_status_time;
	TimestampTz last_recv_time;
	TimestampTz last_data_time; /* of the last XLogData ('w') message */
	bool		ping_sent;
	TimestampTz streaming_since;	/* this session streams since, or 0 */
	TimestampTz last_commit;	/* of the last group */
	WaitEventSet *wait_set;		/* the session's socket and our latch */
	pgsocket	wait_fd;		/* the socket in wait_set */
	int			paced;			/* this session's stream: 1 paced, 0 not, -1 not
								 * decided yet */
	dlist_head	flush_map;
	TimestampTz flush_pending_since;	/* oldest commit in flush_map */
	PgrplSessionEnd end_reason; /* why a handler asked to end the session */

	/* for the error context */
	XLogRecPtr	cur_lsn;
	LogicalRepMsgType cur_type;
} W;

static void pgrpl_worker_shutdown(int code, Datum arg);
static PgrplSessionEnd pgrpl_session(void);
static PgrplSessionEnd pgrpl_apply_loop(void);
static bool pgrpl_handle_copydata(char *buf, int len, PgrplSessionEnd *end);
static void pgrpl_send_status(bool force, bool reply_requested);
static void pgrpl_flush_quiet(void);
static void pgrpl_abort_local(void);
static void pgrpl_group_reset(void);
static int	pgrpl_wait(pgsocket fd, long timeout_ms);
static void pgrpl_wait_release(void);
static void pgrpl_stream_decide(pgsocket fd);
static long pgrpl_nap_us(void);
static bool pgrpl_read_while_busy(void);
static bool pgrpl_commits_keep_coming(void);
static bool pgrpl_linger(pgsocket fd);
static bool pgrpl_group_busy(void);
static void pgrpl_commit_local(void);
static void pgrpl_begin_local(void);
static void pgrpl_discard_open_streams(void);
static void pgrpl_log_stream_visible(void);

/* ---------------------------------------------------------------------
 * The sink: what the capture module writes goes to the change log, in the
 * open local transaction
 * --------------------------------------------------------------------- */

static void
pgrpl_sink_open(void *arg)
{
	pgrpl_begin_local();
}

static int64
pgrpl_sink_new_txn_id(void *arg)
{
	return pgrpl_writer_new_txn_id();
}

static int32
pgrpl_sink_relation_id(void *arg, const PgrplRelationDesc *desc)
{
	return pgrpl_writer_relation_id(desc);
}

static void
pgrpl_sink_change(void *arg, const PgrplChangeRow *row)
{
	pgrpl_writer_insert_change(row);
}

static void
pgrpl_sink_transaction(void *arg, const PgrplTxnRow *row)
{
	pgrpl_writer_insert_transaction(row);
}

static void
pgrpl_sink_finish_transaction(void *arg, const PgrplTxnRow *row)
{
	pgrpl_writer_finish_transaction(row);
}

static void
pgrpl_sink_discard(void *arg, int64 txn_id, int32 from_seq)
{
	pgrpl_writer_discard_changes(txn_id, from_seq);
}

static bool
pgrpl_sink_finish_prepared(void *arg, const PgrplTxnRow *row)
{
	return pgrpl_writer_finish_prepared(row);
}

static bool
pgrpl_sink_prepared_known(void *arg, const char *gid, TransactionId xid)
{
	return pgrpl_writer_prepared_known(gid, xid);
}

static int32
pgrpl_sink_watermark(void *arg, const char *content, int len, int64 txn_id,
					 int32 first_seq, XLogRecPtr lsn)
{
	return pgrpl_snapshot_watermark(content, len, txn_id, first_seq, lsn);
}

static const PgrplSink pgrpl_worker_sink = {
	.open = pgrpl_sink_open,
	.new_txn_id = pgrpl_sink_new_txn_id,
	.relation_id = pgrpl_sink_relation_id,
	.change = pgrpl_sink_change,
	.transaction = pgrpl_sink_transaction,
	.finish_transaction = pgrpl_sink_finish_transaction,
	.discard = pgrpl_sink_discard,
	.finish_prepared = pgrpl_sink_finish_prepared,
	.prepared_known = pgrpl_sink_prepared_known,
	.watermark = pgrpl_sink_watermark,
	.arg = NULL
};

/* ---------------------------------------------------------------------
 * Shared state: everything goes through pgrpl_shmem.c's pgrpl_worker_*
 * --------------------------------------------------------------------- */

static void
pgrpl_worker_shutdown(int code, Datum arg)
{
	pgrpl_worker_release_slot();
}

/*
 * Settings changed (alter_subscription, set_stop_lsn) since this session
 * read them?  Checked at every BEGIN and COMMIT, so that no transaction
 * committed here after the change was decided with the old settings.
 */
static bool
pgrpl_restart_pending(void)
{
	bool		restart = pgrpl_worker_restart_pending();

	if (restart)
		W.end_reason = PGRPL_SESSION_RESTART;
	return restart;
}

static bool
pgrpl_restart_requested(void)
{
	return pgrpl_worker_consume_restart();
}

/* ---------------------------------------------------------------------
 * Error context: which message, LSN and relation failed
 * --------------------------------------------------------------------- */

static void
pgrpl_error_callback(void *arg)
{
	const char *type = pgrpl_message_type_name(W.cur_type);
	TransactionId xid;
	bool		in_xact;

	if (type == NULL)
		return;
	in_xact = pgrpl_capture_current_xid(&W.cap, &xid);
	/* As the built-in apply worker: message, relation, remote xid, LSN. */
	if (W.cap.cur_rel != NULL && in_xact)
		errcontext("processing remote %s for relation \"%s.%s\" in transaction %u at %X/%X of subscription \"%s\"",
				   type, W.cap.cur_rel->nspname, W.cap.cur_rel->relname, xid,
				   LSN_FORMAT_ARGS(W.cur_lsn), W.sub ? W.sub->name : "?");
	else if (in_xact)
		errcontext("processing remote %s in transaction %u at %X/%X of subscription \"%s\"",
				   type, xid, LSN_FORMAT_ARGS(W.cur_lsn),
				   W.sub ? W.sub->name : "?");
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
	pgrpl_writer_set_busy_callback(NULL);
	pgrpl_writer_reset();
	LWLockReleaseAll();
	ConditionVariableCancelSleep();
	pgstat_report_wait_end();
	pgrpl_wait_release();
	if (W.conn != NULL)
	{
		walrcv_disconnect(W.conn);
		W.conn = NULL;
	}
	pgrpl_snapshot_session_end();
	/* The next session starts capturing afresh (pgrpl_capture_init). */
	if (W.cap.nstreams > 0)
		W.streams_unfinished = true;
	pgrpl_capture_destroy(&W.cap);
	pgrpl_worker_note_streams(0);
	pgrpl_group_reset();
	pgrpl_worker_record_error(edata->message);
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
		if (pgrpl_worker_peek_restart())
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
	/* A crash may have left streamed rows: the first session looks. */
	W.streams_unfinished = true;
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	if (!pgrpl_worker_claim_slot(dboid, subid))
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
	SetCurrentStatementStartTimestamp();
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

/* Attach to our replication origin; returns its progress, made durable. */
static XLogRecPtr
pgrpl_setup_origin(void)
{
	char		name[NAMEDATALEN];
	RepOriginId originid;
	XLogRecPtr	progress;
	XLogRecPtr	logged;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	/* Never write into a schema of another storage version. */
	PushActiveSnapshot(GetTransactionSnapshot());
	pgrpl_writer_check_storage();
	logged = pgrpl_writer_session_start(W.subid);

	/*
	 * Streamed transactions an earlier session did not finish.  Only when
	 * there may be some (this process's first session, or the last one
	 * ended inside a stream): the log may be locked by someone for long,
	 * and a retry should not wait for that.
	 */
	if (W.streams_unfinished)
		pgrpl_writer_abort_in_progress();
	PopActiveSnapshot();
	pgrpl_origin_name(MyDatabaseId, W.subid, name, sizeof(name));
	originid = replorigin_by_name(name, true);
	if (originid == InvalidRepOriginId)
		originid = replorigin_create(name);
	if (replorigin_session_origin == InvalidRepOriginId)
	{
		pgrpl_replorigin_session_setup(originid);
		replorigin_session_origin = originid;
	}

	/*
	 * The progress in memory, and the log's end as this transaction saw it,
	 * may include our own asynchronous commits of an earlier session of this
	 * process that the WAL writer has not flushed yet.  This session reports
	 * the start position as flushed until it commits something itself, and
	 * the primary then never sends those transactions again: make them
	 * durable first (a crash would otherwise lose them for good).  "true":
	 * flush the local commit that recorded the progress; then our own last
	 * commit.  (Not GetXLogInsertRecPtr(): at a page boundary that is past
	 * any WAL written, and the flush fails -- right after crash recovery,
	 * for instance.)
	 */
	progress = replorigin_session_get_progress(true);
	CommitTransactionCommand();
	W.streams_unfinished = false;
	if (!XLogRecPtrIsInvalid(XactLastCommitEnd))
		XLogFlush(XactLastCommitEnd);
	/* Never below what the log holds (see pgrpl_writer_session_start). */
	return Max(progress, logged);
}

static PgrplSessionEnd
pgrpl_session(void)
{
	char	   *sysid;
	char		local_sysid[32];
	PgrplSessionEnd end;

	/*
	 * What the session sets up (the connection above all) lives as long as
	 * the session.  From PG18 on, a transaction's end returns to the context
	 * current at its start, no longer to TopMemoryContext: after an earlier
	 * session that is W.msgcxt, reset after every message.
	 */
	MemoryContextSwitchTo(TopMemoryContext);
	pgrpl_worker_set_state(PGRPL_STATE_STARTING);
	W.sub = pgrpl_load_subscription();
	if (W.sub == NULL)
	{
		pgrpl_worker_unwant();
		return PGRPL_SESSION_GONE;
	}

	W.progress = pgrpl_setup_origin();
	pgrpl_worker_note_progress(W.progress);
	pgrpl_worker_set_caught_up(W.progress);
	if (!XLogRecPtrIsInvalid(W.sub->stop_lsn) && W.progress >= W.sub->stop_lsn)
	{
		pgrpl_worker_set_state(PGRPL_STATE_FINISHED);
		pgrpl_worker_unwant();
		return PGRPL_SESSION_FINISHED;
	}

	pgrpl_worker_set_state(PGRPL_STATE_CONNECTING);
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
	pgrpl_capture_init(&W.cap, &pgrpl_worker_sink, W.loopback, W.progress);
	pgrpl_protocol_choose(walrcv_server_version(W.conn), W.sub->streaming,
						  W.sub->two_phase, W.sub->origin_none, &W.proto);
	W.cap.skip_origins = W.proto.skip_origins;
	pgrpl_worker_note_protocol(W.proto.proto_version);
	pgrpl_worker_note_streams(0);
	pgrpl_group_reset();
	W.seen_end = W.progress;
	W.last_received = W.progress;
	W.durable_start = W.progress;	/* pgrpl_setup_origin flushed it */
	W.last_write_sent = W.last_flush_sent = InvalidXLogRecPtr;
	W.last_status_time = 0;
	W.ping_sent = false;

	/* Reading the slot's row builds a tuple descriptor: catalog access. */
	StartTransactionCommand();
	pgrpl_sync_slot_failover(W.conn, W.sub->slot_name, W.sub->failover);
	CommitTransactionCommand();
	MemoryContextSwitchTo(TopMemoryContext);
	pgrpl_stream_start(W.conn, W.sub->slot_name, W.progress, W.sub->publications,
					   &W.proto);
	pgrpl_worker_set_state(PGRPL_STATE_STREAMING);
	W.streaming_since = GetCurrentTimestamp();
	pgrpl_worker_clear_error();
	pgrpl_snapshot_session_start(W.sub);

	end = pgrpl_apply_loop();
	pgrpl_snapshot_session_end();
	if (W.cap.nstreams > 0)
		W.streams_unfinished = true;

	/*
	 * Stopping mid-transaction: abort, and it is sent again next time (with
	 * any whole transactions grouped before it).  Otherwise keep the group.
	 */
	if (W.cap.active)
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
		pgrpl_discard_open_streams();
		/* Make our last commit durable so the final status can cover it. */
		XLogFlush(XactLastCommitEnd);
		pgrpl_send_status(true, false);

		/*
		 * The stream is in commit order, so what ended it (past stop_lsn)
		 * shows that every unit ending at or before stop_lsn is here:
		 * wait_for_lsn(stop_lsn) must say so, although the last unit may end
		 * well before it.
		 */
		pgrpl_worker_set_caught_up(W.sub->stop_lsn);
		pgrpl_worker_set_state(PGRPL_STATE_FINISHED);
		pgrpl_worker_unwant();
	}
	pgrpl_wait_release();
	walrcv_disconnect(W.conn);
	W.conn = NULL;
	return end;
}

/*
 * A session that ends for good leaves no streamed transaction half written
 * (a later session would remove it too, but there may be none for long).
 */
static void
pgrpl_discard_open_streams(void)
{
	if (W.cap.nstreams == 0)
		return;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgrpl_writer_abort_in_progress();
	PopActiveSnapshot();
	replorigin_session_origin_lsn = W.progress;
	replorigin_session_origin_timestamp = 0;
	CommitTransactionCommand();
	MemoryContextSwitchTo(W.msgcxt);
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

/*
 * Drop what the subscription's retention no longer keeps, between groups
 * (never inside one) and at most every PGRPL_RETENTION_CHECK_MS.  The purge
 * gives up on a lock it would wait for and is tried again later.
 */
static void
pgrpl_apply_retention(void)
{
	TimestampTz now = GetCurrentTimestamp();

	if (W.cap.active || W.local_open ||
		!TimestampDifferenceExceeds(W.last_retention, now, PGRPL_RETENTION_CHECK_MS))
		return;
	W.last_retention = now;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgrpl_writer_apply_retention();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(W.msgcxt);
}

/*
 * Read what the socket holds into the receive queue; anything received
 * shows the primary is alive.  Returns the number of messages added.
 */
static int
pgrpl_recv_fill(pgsocket *fd)
{
	int			added = pgrpl_recvq_fill(W.conn, fd);

	pgrpl_stream_decide(*fd);
	if (added > 0)
	{
		W.last_recv_time = GetCurrentTimestamp();
		W.ping_sent = false;
	}
	return added;
}

/*
 * The writer's busy callback: while it writes a batch (milliseconds), keep
 * the socket empty, or the walsender stops until the write is done (not on
 * a paced stream: see pgrpl_stream_decide).  Set only while the apply loop
 * runs: the connection streams then, and only then may it be read.
 */
static void
pgrpl_recv_fill_busy(void)
{
	pgsocket	fd = PGINVALID_SOCKET;	/* set only if the socket ran dry */

	if (pgrpl_read_while_busy())
		(void) pgrpl_recv_fill(&fd);
	/* The same holds for a snapshot chunk read ahead (pgrpl_snapshot.c). */
	pgrpl_snapshot_poll();
}

static PgrplSessionEnd
pgrpl_apply_loop(void)
{
	ErrorContextCallback errcallback;
	PgrplSessionEnd end = PGRPL_SESSION_RETRY;
	bool		done = false;
	pgsocket	fd = PGINVALID_SOCKET;	/* known once the socket ran dry */

	errcallback.callback = pgrpl_error_callback;
	errcallback.arg = NULL;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	pgrpl_recvq_reset();
	pgrpl_writer_set_busy_callback(pgrpl_recv_fill_busy);
	pgrpl_writer_set_short_batches(true);
	W.paced = -1;
	W.last_recv_time = GetCurrentTimestamp();
	while (!done)
	{
		char	   *buf = NULL;
		int			len;
		int			rc;
		uint32		nmsgs = 0;
		Size		fill_bytes = 0;

		CHECK_FOR_INTERRUPTS();
		MemoryContextSwitchTo(W.msgcxt);

		/*
		 * Handle everything available without blocking, emptying the socket
		 * into the receive queue on the way (pgrpl_recvq.h: the walsender
		 * waits whenever the socket is full).
		 */
		for (;;)
		{
			if (!pgrpl_recvq_next(&buf, &len))
			{
				if (pgrpl_recv_fill(&fd) == 0)
					break;		/* the socket ran dry */
				continue;
			}
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
			if (pgrpl_worker_peek_restart())
				break;

			/*
			 * A long catch-up never empties the socket: report progress on
			 * the way (at most every wal_receiver_status_interval), so the
			 * primary can recycle WAL and the flush list stays short.
			 */
			if (++nmsgs % PGRPL_STATUS_CHECK_MSGS == 0)
				pgrpl_send_status(false, false);

			/*
			 * A busy stream never runs dry either: between transactions,
			 * go on copying tables now and then (making the group visible
			 * first: a chunk is read in a transaction of its own).
			 */
			if (nmsgs % PGRPL_SNAPSHOT_CHECK_MSGS == 0 && !W.cap.active &&
				!W.cap.in_stream && pgrpl_snapshot_due())
			{
				pgrpl_commit_local();
				pgrpl_snapshot_step(W.seen_end);
				MemoryContextSwitchTo(W.msgcxt);
			}

			/* Keep the socket empty while we work (pgrpl_recvq.h). */
			fill_bytes += len;
			if (pgrpl_read_while_busy() &&
				(nmsgs % PGRPL_FILL_MSGS == 0 || fill_bytes >= PGRPL_FILL_BYTES))
			{
				pgrpl_recv_fill(&fd);
				fill_bytes = 0;
			}
		}
		if (pgrpl_recvq_ended())
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("the primary ended the replication stream of subscription \"%s\"",
							W.sub->name)));
		if (done)
			break;

		/*
		 * The socket ran dry after a short drain, in the middle of a remote
		 * transaction or of a group: the primary sends slower than we
		 * write, so more is on its way.  Waiting on the socket would wake
		 * us for every message the walsender sends (it sends each one on
		 * its own), two context switches per message on both sides, which
		 * made a worker that keeps up slower than one that lags.  Sleep a
		 * moment instead and take what piled up in one go; a longer drain
		 * means the socket's buffer may soon be full, so then no nap.  A
		 * lone transaction (a group of one) is committed at once: on a
		 * quiet stream the nap would only add to its latency.  A paced
		 * stream naps longer while transactions keep coming, so that the
		 * walsender's messages wait in its socket behind our capped window
		 * and leave together (pgrpl_nap_us).
		 */
		if (nmsgs > 0 && nmsgs < PGRPL_NAP_BELOW_MSGS &&
			(W.cap.active || pgrpl_group_busy()) && XLogRecPtrIsInvalid(W.sub->stop_lsn) &&
			!pgrpl_worker_peek_restart())
		{
			pg_usleep(pgrpl_nap_us());
			continue;
		}

		/*
		 * Nothing more is waiting: make the group visible now, unless more
		 * arrives in a moment.
		 */
		if (!W.cap.active)
		{
			if (pgrpl_linger(fd))
				continue;
			pgrpl_commit_local();
			/* Between transactions: the next chunk of a table to copy. */
			pgrpl_snapshot_step(W.seen_end);
			MemoryContextSwitchTo(W.msgcxt);
		}

		pgrpl_send_status(false, false);
		pgrpl_flush_quiet();
		pgrpl_apply_retention();

		if (pgrpl_restart_requested())
		{
			end = PGRPL_SESSION_RESTART;
			break;
		}

		/*
		 * Our commits are asynchronous.  While one is pending
		 * (pgrpl_send_status just dropped the flushed ones from flush_map),
		 * look again soon: the WAL writer may flush it meanwhile, or else
		 * pgrpl_flush_quiet does at the next pass, so the primary hears
		 * "flushed" promptly once the stream goes quiet.
		 */
		rc = pgrpl_wait(fd, dlist_is_empty(&W.flush_map) && !pgrpl_snapshot_waiting() ?
						PGRPL_NAPTIME_MS : PGRPL_FLUSH_POLL_MS);
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

	pgrpl_writer_set_busy_callback(NULL);
	error_context_stack = errcallback.previous;
	MemoryContextSwitchTo(TopMemoryContext);
	return end;
}

/*
 * Wait for the primary's socket, our latch or the timeout; returns the
 * WL_* events that happened (WL_TIMEOUT if none).  A worker keeping up with
 * a busy primary finds the socket empty thousands of times a second: one
 * epoll set kept for the session makes each wait a single system call,
 * where WaitLatchOrSocket builds and closes a set every time.
 */
static int
pgrpl_wait(pgsocket fd, long timeout_ms)
{
	WaitEvent	events[3];
	int			n;
	int			rc = 0;

	if (W.wait_set == NULL || W.wait_fd != fd)
	{
		pgrpl_wait_release();
		W.wait_set = pgrpl_create_wait_event_set(3);
		AddWaitEventToSet(W.wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
		AddWaitEventToSet(W.wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
		AddWaitEventToSet(W.wait_set, WL_SOCKET_READABLE, fd, NULL, NULL);
		W.wait_fd = fd;
	}
	n = WaitEventSetWait(W.wait_set, timeout_ms, events, lengthof(events),
						 PG_WAIT_EXTENSION);
	for (int i = 0; i < n; i++)
		rc |= events[i].events;
	return n == 0 ? WL_TIMEOUT : rc;
}

/*
 * Before the connection closes: the set must not outlive its socket (a new
 * connection may get the same descriptor number).
 */
static void
pgrpl_wait_release(void)
{
	if (W.wait_set != NULL)
		FreeWaitEventSet(W.wait_set);
	W.wait_set = NULL;
	W.wait_fd = PGINVALID_SOCKET;
}

/*
 * The first time a session's socket is known (it ran dry once), decide how
 * to treat its stream: pace TCP from a nearby primary (pgrpl_stream_pace),
 * and write short batches when the socket is a Unix socket, which holds
 * too little for the walsender to go on sending while we write a long one
 * (pgrpl_writer_set_short_batches).  Until then batches are short.
 *
 * A paced stream is read only when the receive queue runs dry, not every
 * PGRPL_FILL_MSGS messages or while the writer indexes a batch: reading
 * reopens the capped window a little at a time, and each message the
 * walsender sends into an open window leaves as a segment of its own,
 * which is what pacing is for avoiding.  The walsender does not stop
 * meanwhile: what does not fit the window waits in its own socket's send
 * buffer.  Measured over TCP (scripts/bench.sh, 3 drains each, medians):
 * the walsender sent 61k segments instead of 111k on (c), 192k instead of
 * 419k on (b), 83k instead of 187k on (d), and the drains took 3.42 s
 * instead of 3.67 s (c), 7.07 s instead of 7.57 s (b), 9.71 s instead of
 * 9.97 s (a), 3.93 s instead of 3.99 s (d).
 */
static void
pgrpl_stream_decide(pgsocket fd)
{
	bool		short_batches;

	if (W.paced >= 0 || fd == PGINVALID_SOCKET)
		return;
	W.paced = pgrpl_tcp_pacing && pgrpl_stream_pace(fd);
	short_batches = pgrpl_stream_is_unix_socket(fd);
	pgrpl_writer_set_short_batches(short_batches);
	elog(DEBUG1, "pgrpl: writing %s batches, reading the socket %s",
		 short_batches ? "short" : "long",
		 pgrpl_read_while_busy() ? "while busy" : "when the queue runs dry");
}

/*
 * Empty the socket while handling messages and writing batches, not only
 * when the receive queue runs dry?  Not on a paced stream (see
 * pgrpl_stream_decide); until the decision, yes.
 */
static bool
pgrpl_read_while_busy(void)
{
	return W.paced <= 0;
}

/*
 * How long the apply loop naps when a busy stream runs dry.  A paced
 * stream naps long only while transactions keep coming: the two halves of
 * a transaction arriving alone on a quiet stream (measured: 1 in 20 in the
 * latency benchmark) must not wait 20 ms for each other.
 */
static long
pgrpl_nap_us(void)
{
	if (W.paced > 0 && W.local_open && pgrpl_commits_keep_coming())
		return PGRPL_PACED_NAP_US;
	return PGRPL_NAP_US;
}

/*
 * Do remote transactions keep coming: the open group holds more than one,
 * or the previous group committed only a moment ago?
 */
static bool
pgrpl_commits_keep_coming(void)
{
	return W.group_units >= 2 ||
		!TimestampDifferenceExceeds(W.last_commit, GetCurrentTimestamp(),
									PGRPL_BUSY_COMMIT_MS);
}

/*
 * Is the open group one of a busy stream: more than one remote unit, a
 * streamed transaction's rows, or the previous group committed only a
 * moment ago?  (Otherwise it is a transaction that arrived alone on a
 * quiet stream, to be made visible at once.)
 */
static bool
pgrpl_group_busy(void)
{
	return W.local_open &&
		(XLogRecPtrIsInvalid(W.group_end) || pgrpl_commits_keep_coming());
}

/*
 * The socket ran dry with a local transaction open.  A worker that keeps up
 * with a busy walsender finds the socket empty between two of its sends,
 * every few transactions; committing each time costs a local commit, a WAL
 * writer wakeup and a status update per few transactions, which made the
 * worker, not the primary's decoding, the limit.  So wait a moment for
 * more, while the group is young and busy (see pgrpl_group_busy): rows
 * stay invisible at most PGRPL_LINGER_MAX_AGE_MS (plus a moment) longer
 * than without lingering, and a transaction that arrives alone is not
 * held back at all.  True if more data arrived.
 */
static bool
pgrpl_linger(pgsocket fd)
{
	if (fd == PGINVALID_SOCKET ||
		!pgrpl_group_busy() || !XLogRecPtrIsInvalid(W.sub->stop_lsn) ||
		TimestampDifferenceExceeds(W.group_started, GetCurrentTimestamp(),
								   PGRPL_LINGER_MAX_AGE_MS))
		return false;
	return (pgrpl_wait(fd, PGRPL_LINGER_MS) & WL_SOCKET_READABLE) != 0;
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
	if (dlist_is_empty(&W.flush_map))
		W.flush_pending_since = GetCurrentTimestamp();
	dlist_push_tail(&W.flush_map, &pos->node);
}

/*
 * No data has arrived for pgrpl.idle_flush_delay and a local commit has
 * waited that long: flush our WAL ourselves and tell the primary.  Our
 * commits are asynchronous, and the WAL writer flushes a last, partly
 * filled WAL page only every wal_writer_delay (200 ms by default), so the
 * end of a burst would otherwise reach the primary as "flushed" that much
 * later, holding its slot (and whoever waits for it) back.  Not while
 * data keeps arriving, even if the socket is dry at times (a worker
 * faster than its walsender often finds it so): each flush we report
 * moves the slot, and the walsender may write the slot's state to disk
 * each time.  On a trickle of transactions this is at most one flush per
 * delay, not one per transaction.
 */
static void
pgrpl_flush_quiet(void)
{
	PgrplFlushPos *last;
	TimestampTz now;

	if (dlist_is_empty(&W.flush_map) || pgrpl_idle_flush_delay < 0)
		return;
	now = GetCurrentTimestamp();
	/* Keepalives do not count: a caught-up walsender sends one per wakeup. */
	if (!TimestampDifferenceExceeds(W.flush_pending_since, now, pgrpl_idle_flush_delay) ||
		!TimestampDifferenceExceeds(W.last_data_time, now, pgrpl_idle_flush_delay))
		return;
	last = dlist_tail_element(PgrplFlushPos, node, &W.flush_map);
	XLogFlush(last->local_end);
	pgrpl_send_status(false, false);
}

/*
 * Tell the primary what we have: write = received, flush = durable here.
 * With nothing pending and no remote transaction open (streamed ones
 * included), everything received is either durable or needs nothing, so
 * the slot may advance to it (an idle primary can then recycle WAL).
 * Otherwise flush is the end of the last unit committed and flushed here:
 * never a position inside a transaction still being received.
 */
static void
pgrpl_send_status(bool force, bool reply_requested)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		pending;
	XLogRecPtr	flushed = pgrpl_flushed_remote_lsn(&pending);
	XLogRecPtr	write = W.last_received;
	XLogRecPtr	flush;

	/*
	 * Never W.progress: that is the end of our last commit, which may still
	 * sit in WAL buffers (the commits are asynchronous).  Reporting it
	 * before the first flush of a session let the slot skip transactions
	 * that a crash then lost.
	 */
	flush = Max(Max(flushed, W.last_flush_sent), W.durable_start);
	if (!pending && !W.cap.active && !W.local_open && W.cap.nstreams == 0)
		flush = Max(flush, write);
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

/* Open the local transaction (and the writer), once per group. */
static void
pgrpl_begin_local(void)
{
	if (W.local_open)
		return;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	/* Index expressions/predicates on the log may call SQL functions. */
	PushActiveSnapshot(GetTransactionSnapshot());
	pgrpl_writer_begin(W.subid);
	W.local_open = true;
	W.group_end = InvalidXLogRecPtr;
	W.group_units = 0;
	W.group_streamed = 0;
	W.group_stream_commit = 0;
	W.group_changes = 0;
	W.group_started = GetCurrentTimestamp();
	MemoryContextSwitchTo(W.msgcxt);
}

/*
 * How long streamed transactions took to become visible once their commit
 * arrived (their rows were written before): for the benchmark, and for
 * anyone who wonders whether large transactions wait here.
 */
static void
pgrpl_log_stream_visible(void)
{
	long		secs;
	int			usecs;

	TimestampDifference(W.group_stream_commit, GetCurrentTimestamp(), &secs, &usecs);
	ereport(DEBUG1,
			(errmsg_internal("pgrpl made %d streamed transactions visible %.3f ms after the first of their STREAM COMMITs arrived",
							 W.group_streamed, secs * 1000.0 + usecs / 1000.0)));
}

static void
pgrpl_group_reset(void)
{
	W.local_open = false;
	W.group_end = InvalidXLogRecPtr;
	W.group_units = 0;
	W.group_streamed = 0;
	W.group_stream_commit = 0;
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
	pgrpl_capture_forget_relation_ids(&W.cap);
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
	{
		/*
		 * Only rows of streamed transactions not yet committed (or their
		 * abort): invisible, and progress stays where it is.
		 */
		pgrpl_writer_end();
		PopActiveSnapshot();
		replorigin_session_origin_lsn = W.progress;
		replorigin_session_origin_timestamp = 0;
		CommitTransactionCommand();
		pgrpl_group_reset();
		MemoryContextSwitchTo(W.msgcxt);
	}
	if (W.local_open)
	{
		pgrpl_writer_end();
		PopActiveSnapshot();
		replorigin_session_origin_lsn = W.group_end;
		replorigin_session_origin_timestamp = W.group_commit_time;
		CommitTransactionCommand();
		W.last_commit = GetCurrentTimestamp();
		pgstat_report_stat(false);
		pgrpl_remember_commit(W.group_end);
		W.progress = W.group_end;
		W.cap.progress = W.progress;

		pgrpl_worker_note_commit(W.group_end, W.group_units, W.group_streamed,
								 W.group_changes);
		if (W.group_stream_commit != 0)
			pgrpl_log_stream_visible();
		pgrpl_group_reset();
		MemoryContextSwitchTo(W.msgcxt);
	}
	/* Everything processed is now materialized (or needed nothing). */
	if (!W.cap.active)
		pgrpl_worker_set_caught_up(W.seen_end);
}

/*
 * A whole remote unit was added to the open local transaction.  Keep
 * grouping while more data is queued (the drain loop commits when the
 * socket is empty), but bound what one local commit holds and how long
 * rows stay invisible.  With a stop_lsn every unit commits alone: the unit
 * that crosses it must be dropped without losing the ones before.
 */
static void
pgrpl_unit_done(XLogRecPtr end, TimestampTz commit_time, int64 changes, bool txn,
				bool streamed)
{
	/*
	 * Never back: a transaction prepared before the slot decoded at PREPARE
	 * is sent at its COMMIT PREPARED with its PREPARE's old end.
	 */
	W.group_end = Max(W.group_end, end);
	W.group_commit_time = commit_time;
	W.group_units += txn ? 1 : 0;
	W.group_streamed += streamed ? 1 : 0;
	W.group_changes += changes;
	W.seen_end = Max(W.seen_end, end);
	if (!XLogRecPtrIsInvalid(W.sub->stop_lsn) ||
		W.group_units >= PGRPL_GROUP_MAX_UNITS ||
		W.group_changes >= PGRPL_GROUP_MAX_CHANGES ||
		TimestampDifferenceExceeds(W.group_started, GetCurrentTimestamp(),
								   PGRPL_GROUP_MAX_MS))
		pgrpl_commit_local();
}

/* ---------------------------------------------------------------------
 * Message dispatch: session decisions here, rows in pgrpl_capture.c
 * --------------------------------------------------------------------- */

/*
 * Does this message end the session before it is captured?  Settings
 * changed (alter_subscription, set_stop_lsn) are noticed at every BEGIN and
 * COMMIT, so that no transaction committed here after the change was
 * decided with the old settings; a unit that ends past stop_lsn is not
 * captured (the open one is aborted with its local transaction).  The
 * two-phase messages that end a unit (PREPARE, STREAM PREPARE, COMMIT and
 * ROLLBACK PREPARED) are treated like COMMIT, BEGIN PREPARE like BEGIN.
 */
static bool
pgrpl_session_ends_at(PgrplMessage *msg)
{
	XLogRecPtr	stop = W.sub->stop_lsn;

	switch (msg->type)
	{
		case LOGICAL_REP_MSG_BEGIN:
			if (pgrpl_restart_pending())
				return true;
			return !XLogRecPtrIsInvalid(stop) && msg->u.begin.final_lsn >= stop;
		case LOGICAL_REP_MSG_COMMIT:
			if (!W.cap.active)
				return false;	/* the capture module reports the error */
			if (pgrpl_restart_pending())
				return true;
			return !XLogRecPtrIsInvalid(stop) && msg->u.commit.end_lsn > stop;
		case LOGICAL_REP_MSG_STREAM_COMMIT:
			/* What was streamed of it is sent again next session. */
			if (W.cap.active || W.cap.in_stream)
				return false;	/* the capture module reports the error */
			if (pgrpl_restart_pending())
				return true;
			return !XLogRecPtrIsInvalid(stop) &&
				msg->u.stream_commit.commit.end_lsn > stop;
		case LOGICAL_REP_MSG_BEGIN_PREPARE:
			if (pgrpl_restart_pending())
				return true;
			return !XLogRecPtrIsInvalid(stop) && msg->u.prepare.prepare_lsn >= stop;
		case LOGICAL_REP_MSG_PREPARE:
			if (!W.cap.active || !W.cap.preparing)
				return false;	/* the capture module reports the error */
			if (pgrpl_restart_pending())
				return true;
			return !XLogRecPtrIsInvalid(stop) && msg->u.prepare.end_lsn > stop;
		case LOGICAL_REP_MSG_STREAM_PREPARE:
			if (W.cap.active || W.cap.in_stream)
				return false;	/* the capture module reports the error */
			if (pgrpl_restart_pending())
				return true;
			return !XLogRecPtrIsInvalid(stop) && msg->u.prepare.end_lsn > stop;
		case LOGICAL_REP_MSG_COMMIT_PREPARED:
			if (W.cap.active || W.cap.in_stream)
				return false;	/* the capture module reports the error */
			if (pgrpl_restart_pending())
				return true;
			return !XLogRecPtrIsInvalid(stop) &&
				msg->u.commit_prepared.end_lsn > stop;
		case LOGICAL_REP_MSG_ROLLBACK_PREPARED:
			if (W.cap.active || W.cap.in_stream)
				return false;	/* the capture module reports the error */
			if (pgrpl_restart_pending())
				return true;
			return !XLogRecPtrIsInvalid(stop) &&
				msg->u.rollback_prepared.rollback_end_lsn > stop;
		case LOGICAL_REP_MSG_MESSAGE:
			return !msg->u.message.transactional && !W.cap.active && !W.cap.in_stream &&
				msg->u.message.lsn > W.progress &&
				!XLogRecPtrIsInvalid(stop) && msg->u.message.lsn > stop;
		default:
			return false;
	}
}

/* Dispatch one pgoutput message; true when the session must end. */
static bool
pgrpl_apply_message(StringInfo payload)
{
	PgrplMessage msg;
	PgrplCaptureResult result;
	bool		catalog_xact = false;
	TimestampTz arrived;

	W.cur_type = payload->len > 0 ? (LogicalRepMsgType) payload->data[0] : 0;
	pgrpl_decode_message(payload, &msg, W.cap.in_stream);
	if (pgrpl_session_ends_at(&msg))
		return true;
	arrived = (msg.type == LOGICAL_REP_MSG_STREAM_COMMIT) ? GetCurrentTimestamp() : 0;

	/* Resolving a RELATION's types needs the catalogs. */
	if (msg.type == LOGICAL_REP_MSG_RELATION && !IsTransactionState())
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		catalog_xact = true;
	}
	result = pgrpl_capture_message(&W.cap, &msg, W.cur_lsn);
	if (catalog_xact)
	{
		CommitTransactionCommand();
		MemoryContextSwitchTo(W.msgcxt);
	}

	if (result != PGRPL_CAPTURE_NONE && W.cap.unit_is_txn)
		pgrpl_snapshot_note_commit(W.cap.unit_xid);
	if (result == PGRPL_CAPTURE_UNIT && W.cap.unit_streamed && W.group_stream_commit == 0)
		W.group_stream_commit = arrived;
	if (result == PGRPL_CAPTURE_UNIT)
		pgrpl_unit_done(W.cap.unit_end, W.cap.unit_commit_time,
						W.cap.unit_changes, W.cap.unit_is_txn,
						W.cap.unit_streamed);
	else if (result == PGRPL_CAPTURE_EMPTY_UNIT)
	{
		/* Nothing captured (skipped or empty): nothing to make durable. */
		W.seen_end = Max(W.seen_end, W.cap.unit_end);
		if (!W.local_open)
			pgrpl_worker_set_caught_up(W.seen_end);
	}
	pgrpl_worker_note_streams(W.cap.nstreams);
	return false;
}

static void
pgrpl_note_received(PgrplCopyData *cd, int len)
{
	TimestampTz now = GetCurrentTimestamp();

	if (cd->wal_end > W.last_received)
		W.last_received = cd->wal_end;
	pgrpl_worker_note_received(W.last_received, len, cd->send_time, now,
							   cd->kind == 'k', cd->wal_end,
							   W.cap.in_stream ||
							   (cd->kind == 'w' && cd->payload.len > 0 &&
								cd->payload.data[0] == LOGICAL_REP_MSG_STREAM_START));
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
		W.last_data_time = W.last_recv_time;
		W.cur_lsn = cd.data_start;
		stop = pgrpl_apply_message(&cd.payload);
		/* Later errors (e.g. in walrcv_receive) are not about this message. */
		W.cur_type = 0;
		W.cap.cur_rel = NULL;
	}
	else
	{
		/*
		 * A keepalive: everything before wal_end has been sent, so with no
		 * transaction open we have all the primary committed up to there.
		 */
		if (!W.cap.active)
		{
			pgrpl_commit_local();
			pgrpl_worker_set_caught_up(cd.wal_end);
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
