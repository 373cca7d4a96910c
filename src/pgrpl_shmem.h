/*-------------------------------------------------------------------------
 * pgrpl_shmem.h
 *		Shared state: one slot per subscription that wants a worker.
 *
 * A slot is claimed when a subscription is enabled (at commit of the SQL
 * call, or by the start-up probe) and freed when it is disabled or dropped.
 * The launcher starts a worker for every slot that is "wanted" and has none;
 * the worker publishes its progress and statistics in the same slot.
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
	char		last_error[PGRPL_ERROR_LEN];
	TimestampTz last_error_time;

	/* Broadcast whenever caught_up_lsn or state changes (wait_for_lsn). */
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

extern PgrplShared *pgrpl_shared;

extern void pgrpl_shmem_install_hooks(void);
extern void pgrpl_shmem_check(void);

extern PgrplSlot *pgrpl_slot_find(Oid dboid, int32 subid);
extern void pgrpl_slot_set_wanted(Oid dboid, int32 subid, bool wanted);
extern void pgrpl_slot_release(Oid dboid, int32 subid);
extern void pgrpl_slot_request_restart(Oid dboid, int32 subid);
extern void pgrpl_slot_stop_worker(Oid dboid, int32 subid);
extern void pgrpl_wake_launcher(void);
extern const char *pgrpl_state_name(PgrplWorkerState state);

#endif							/* PGRPL_SHMEM_H */
