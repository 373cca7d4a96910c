/*-------------------------------------------------------------------------
 * pgrpl_shmem.h
 *		Shared state: one slot per subscription that wants a worker.
 *
 * A slot is claimed when a subscription is enabled (at commit of the SQL
 * call, or by the start-up probe) and freed when it is disabled or dropped.
 * The launcher starts a worker for every slot that is "wanted" and has none;
 * the worker publishes its progress and statistics in the same slot.
 *
 * Every other module reads and changes shared state only through the
 * functions below, which know its locking rules: the fields marked "lock"
 * are protected by PgrplShared->lock, the progress fields by the slot's
 * spinlock, and whoever changes the state, caught_up_lsn or pid of a slot
 * broadcasts its condition variable afterwards.
 *-------------------------------------------------------------------------
 */
#ifndef PGRPL_SHMEM_H
#define PGRPL_SHMEM_H

#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/spin.h"

typedef enum PgrplWorkerState
{
	PGRPL_STATE_STARTING = 0,
	PGRPL_STATE_CONNECTING,
	PGRPL_STATE_STREAMING,
	PGRPL_STATE_ERROR,
	PGRPL_STATE_FINISHED
} PgrplWorkerState;

#define PGRPL_ERROR_LEN 1024

typedef struct PgrplSlot
{
	/* Protected by PgrplShared->lock. */
	bool		in_use;
	bool		wanted;			/* launcher keeps a worker running */
	bool		restart;		/* worker should reconnect (settings changed) */
	Oid			dboid;
	int32		subid;
	pid_t		pid;			/* 0 while no worker runs */
	Latch	   *latch;			/* the worker's latch, valid while pid != 0 */
	TimestampTz next_start;		/* launcher waits until then before a restart */

	/* Progress and statistics: written by the worker under mutex. */
	slock_t		mutex;
	PgrplWorkerState state;
	XLogRecPtr	received_lsn;
	XLogRecPtr	flushed_lsn;	/* end LSN of last remote xact committed here */
	XLogRecPtr	latest_end_lsn; /* last position reported by a keepalive */
	XLogRecPtr	caught_up_lsn;	/* everything up to here is materialized */
	TimestampTz last_msg_send_time;
	TimestampTz last_msg_receipt_time;
	TimestampTz latest_end_time;
	uint64		transactions;
	uint64		changes;
	uint64		bytes_received;
	int			proto_version;	/* negotiated with the primary, 0: none yet */
	uint64		streamed_transactions;	/* streamed ones committed here */
	uint64		streamed_bytes; /* received inside stream blocks */
	int			streams_in_progress;	/* streamed, not yet ended */
	char		last_error[PGRPL_ERROR_LEN];
	TimestampTz last_error_time;

	/*
	 * Broadcast whenever state or caught_up_lsn changes, and when the worker
	 * has exited (after pid is cleared): wait_for_lsn and stop_worker sleep
	 * on it.
	 */
	ConditionVariable progress_cv;
} PgrplSlot;

typedef struct PgrplShared
{
	LWLock	   *lock;
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	int			nslots;
	PgrplSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} PgrplShared;

/* What stat_subscription shows of one slot: a copy taken under its locks. */
typedef struct PgrplWorkerStatus
{
	int32		subid;
	pid_t		pid;			/* 0 while no worker runs */
	PgrplWorkerState state;
	XLogRecPtr	received_lsn;
	XLogRecPtr	flushed_lsn;
	XLogRecPtr	latest_end_lsn;
	TimestampTz last_msg_send_time;
	TimestampTz last_msg_receipt_time;
	TimestampTz latest_end_time;
	uint64		transactions;
	uint64		changes;
	uint64		bytes_received;
	int			proto_version;
	uint64		streamed_transactions;
	uint64		streamed_bytes;
	int			streams_in_progress;
	char		last_error[PGRPL_ERROR_LEN];
	TimestampTz last_error_time;
} PgrplWorkerStatus;

extern void pgrpl_shmem_install_hooks(void);
extern void pgrpl_shmem_check(void);
extern const char *pgrpl_state_name(PgrplWorkerState state);

/* ---- SQL API and end-of-transaction actions ---- */

/* Number of slots (pgrpl.max_workers at server start). */
extern int	pgrpl_slot_count(void);

/* Is a slot free for one more enabled subscription? */
extern bool pgrpl_slot_any_free(void);

/* Does the subscription have a slot whose worker the launcher keeps running? */
extern bool pgrpl_slot_is_wanted(Oid dboid, int32 subid);

/*
 * Mark a subscription as wanting (or not) a worker, claiming a slot if
 * needed, and wake the launcher.  Never throws: when every slot is taken it
 * logs a WARNING.
 */
extern void pgrpl_slot_set_wanted(Oid dboid, int32 subid, bool wanted);

/*
 * Stop wanting a worker: signal the running one (it frees the slot when it
 * exits) or free the slot at once.  Does not wait.
 */
extern void pgrpl_slot_request_stop(Oid dboid, int32 subid);

/* Ask a running worker to reconnect so that it rereads its settings. */
extern void pgrpl_slot_request_restart(Oid dboid, int32 subid);

/* Forget a subscription: free its slot, or let its exiting worker free it. */
extern void pgrpl_slot_release(Oid dboid, int32 subid);

/*
 * Stop wanting a worker, signal it and wait until it has exited, so that its
 * replication slot and origin are free on return.
 */
extern void pgrpl_slot_stop_worker(Oid dboid, int32 subid);

/*
 * Wait up to timeout_ms (0: just look) until the worker has materialized
 * everything the primary committed up to "target".  False on timeout, and at
 * once when the worker has finished at its stop_lsn and exited.
 */
extern bool pgrpl_slot_wait_for_lsn(Oid dboid, int32 subid, XLogRecPtr target,
									long timeout_ms);

/* Copies of the slots of database dboid, palloc'd; *count of them. */
extern PgrplWorkerStatus *pgrpl_slot_statuses(Oid dboid, int *count);

/* ---- launcher ---- */

/* Publish the launcher's latch (until it exits) so that it can be woken. */
extern void pgrpl_launcher_attach(void);
extern void pgrpl_wake_launcher(void);

/*
 * Does slot "index" want a worker that is not running, and may one start by
 * "now"?  If so, *dboid and *subid say for which subscription.
 */
extern bool pgrpl_slot_needs_worker(int index, TimestampTz now,
									Oid *dboid, int32 *subid);

/*
 * The worker started for slot "index" has exited: start the next one no
 * earlier than "until", if the slot still belongs to that subscription.
 */
extern void pgrpl_slot_delay_start(int index, Oid dboid, int32 subid,
								   TimestampTz until);

/*
 * ---- the worker: its own slot ----
 *
 * A worker claims its slot once at start and releases it at exit (register
 * a before_shmem_exit callback that calls pgrpl_worker_release_slot right
 * after a successful claim).  The other functions act on the claimed slot.
 */

/*
 * Claim the slot of the subscription for this process: true if it exists,
 * is wanted and no other worker holds it.  Clears a pending restart.
 */
extern bool pgrpl_worker_claim_slot(Oid dboid, int32 subid);

/*
 * At exit: clear pid and latch; free the slot if it is no longer wanted
 * (disabled or dropped) unless the worker finished at its stop_lsn (the slot
 * keeps showing "finished"); then broadcast, so that stop_worker and
 * wait_for_lsn see the exit.  No-op if no slot was claimed.
 */
extern void pgrpl_worker_release_slot(void);

/* Publish the worker's state and broadcast. */
extern void pgrpl_worker_set_state(PgrplWorkerState state);

/* State "error" with this message (truncated) and the current time; broadcast. */
extern void pgrpl_worker_record_error(const char *message);

/* Clear last_error (a session has started streaming). */
extern void pgrpl_worker_clear_error(void);

/*
 * Everything up to lsn is materialized here: raise caught_up_lsn and, if it
 * moved, broadcast (wakes wait_for_lsn).
 */
extern void pgrpl_worker_set_caught_up(XLogRecPtr lsn);

/* At session start: raise flushed_lsn to the durable progress, never lower it. */
extern void pgrpl_worker_note_progress(XLogRecPtr progress);

/*
 * One CopyData message of "bytes" bytes arrived at receipt_time, sent at
 * send_time: received_lsn (the highest position received so far), bytes
 * counter, message times; for a keepalive also latest_end_lsn = wal_end and
 * latest_end_time = send_time.
 */
extern void pgrpl_worker_note_received(XLogRecPtr received_lsn, int bytes,
									   TimestampTz send_time,
									   TimestampTz receipt_time,
									   bool keepalive, XLogRecPtr wal_end,
									   bool in_stream);

/* The protocol version this session negotiated with the primary. */
extern void pgrpl_worker_note_protocol(int proto_version);

/* How many streamed transactions are open (received, not yet ended). */
extern void pgrpl_worker_note_streams(int in_progress);

/*
 * A local commit holding "transactions" remote transactions ("streamed" of
 * them streamed) and "changes" changes, the last ending at end_lsn:
 * flushed_lsn = end_lsn, counters advanced.
 */
extern void pgrpl_worker_note_commit(XLogRecPtr end_lsn, int transactions,
									 int streamed, int64 changes);

/* Has a restart been requested (settings changed)?  The flag stays set. */
extern bool pgrpl_worker_restart_pending(void);

/*
 * The same without taking the lock, for per-message checks in a busy loop:
 * may be stale; act on it through pgrpl_worker_consume_restart.
 */
extern bool pgrpl_worker_peek_restart(void);

/* Has a restart been requested?  Clears the flag. */
extern bool pgrpl_worker_consume_restart(void);

/* Stop being wanted (stop_lsn reached, subscription gone or disabled). */
extern void pgrpl_worker_unwant(void);

#endif							/* PGRPL_SHMEM_H */
