/*-------------------------------------------------------------------------
 * pgrpl_shmem.c
 *		Shared memory for the launcher and workers: every read and change of
 *		a slot, for the SQL API, the launcher and the worker itself.
 *
 * Locking: PgrplShared->lock protects which slots are in use and for whom,
 * "wanted", "restart", pid, latch and next_start; a slot's spinlock its
 * progress and statistics.  Whoever changes a slot's state, caught_up_lsn
 * or pid broadcasts its condition variable after releasing the locks, so a
 * waiter that prepared to sleep before looking never misses the change.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "pgrpl.h"
#include "pgrpl_shmem.h"

/*
 * A backend waiting on a slot's condition variable looks again at least this
 * often, in case a change came without a broadcast (e.g. a worker killed
 * before it could send one).
 */
#define PGRPL_CV_RECHECK_MS		1000L
/* ... and this often while the subscription has no slot at all. */
#define PGRPL_NO_SLOT_RECHECK_MS	100L

static PgrplShared *pgrpl_shared = NULL;

/* In a worker: the slot it claimed, and the state it last published. */
static PgrplSlot *MyPgrplSlot = NULL;
static PgrplWorkerState MyPgrplState = PGRPL_STATE_STARTING;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static Size
pgrpl_shmem_size(void)
{
	return add_size(offsetof(PgrplShared, slots),
					mul_size(pgrpl_max_workers, sizeof(PgrplSlot)));
}

static void
pgrpl_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(pgrpl_shmem_size());
	RequestNamedLWLockTranche("pgrpl", 1);
}

static void
pgrpl_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	pgrpl_shared = ShmemInitStruct("pgrpl", pgrpl_shmem_size(), &found);
	if (!found)
	{
		memset(pgrpl_shared, 0, pgrpl_shmem_size());
		pgrpl_shared->lock = &(GetNamedLWLockTranche("pgrpl"))->lock;
		pgrpl_shared->nslots = pgrpl_max_workers;
		for (int i = 0; i < pgrpl_shared->nslots; i++)
		{
			SpinLockInit(&pgrpl_shared->slots[i].mutex);
			ConditionVariableInit(&pgrpl_shared->slots[i].progress_cv);
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

void
pgrpl_shmem_install_hooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = pgrpl_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = pgrpl_shmem_startup;
}

/* Every entry point that touches shared state calls this first. */
void
pgrpl_shmem_check(void)
{
	if (pgrpl_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pgrpl must be loaded via \"shared_preload_libraries\""),
				 errhint("Add pgrpl to \"shared_preload_libraries\" in postgresql.conf and restart the server.")));
}

/* Caller holds the lock. */
static PgrplSlot *
pgrpl_slot_find(Oid dboid, int32 subid)
{
	for (int i = 0; i < pgrpl_shared->nslots; i++)
	{
		PgrplSlot  *slot = &pgrpl_shared->slots[i];

		if (slot->in_use && slot->dboid == dboid && slot->subid == subid)
			return slot;
	}
	return NULL;
}

static void
pgrpl_slot_reset_stats(PgrplSlot *slot)
{
	SpinLockAcquire(&slot->mutex);
	slot->state = PGRPL_STATE_STARTING;
	slot->received_lsn = InvalidXLogRecPtr;
	slot->flushed_lsn = InvalidXLogRecPtr;
	slot->latest_end_lsn = InvalidXLogRecPtr;
	slot->caught_up_lsn = InvalidXLogRecPtr;
	slot->last_msg_send_time = 0;
	slot->last_msg_receipt_time = 0;
	slot->latest_end_time = 0;
	slot->transactions = 0;
	slot->changes = 0;
	slot->bytes_received = 0;
	slot->proto_version = 0;
	slot->streamed_transactions = 0;
	slot->streamed_bytes = 0;
	slot->streams_in_progress = 0;
	slot->last_error[0] = '\0';
	slot->last_error_time = 0;
	SpinLockRelease(&slot->mutex);
}


/* ---------------------------------------------------------------------
 * For the SQL API and the actions applied at end of transaction
 * --------------------------------------------------------------------- */

int
pgrpl_slot_count(void)
{
	return pgrpl_shared->nslots;
}

bool
pgrpl_slot_any_free(void)
{
	bool		found = false;

	LWLockAcquire(pgrpl_shared->lock, LW_SHARED);
	for (int i = 0; i < pgrpl_shared->nslots && !found; i++)
		found = !pgrpl_shared->slots[i].in_use;
	LWLockRelease(pgrpl_shared->lock);
	return found;
}

bool
pgrpl_slot_is_wanted(Oid dboid, int32 subid)
{
	PgrplSlot  *slot;
	bool		wanted;

	LWLockAcquire(pgrpl_shared->lock, LW_SHARED);
	slot = pgrpl_slot_find(dboid, subid);
	wanted = (slot != NULL && slot->wanted);
	LWLockRelease(pgrpl_shared->lock);
	return wanted;
}

/*
 * Mark a subscription as wanting (or not) a worker, claiming a slot if
 * needed.  Runs at commit, so it must not throw: when every slot is taken
 * it only logs; the SQL API checks for room before it commits.
 */
void
pgrpl_slot_set_wanted(Oid dboid, int32 subid, bool wanted)
{
	PgrplSlot  *slot;

	LWLockAcquire(pgrpl_shared->lock, LW_EXCLUSIVE);
	slot = pgrpl_slot_find(dboid, subid);
	if (slot == NULL && wanted)
	{
		for (int i = 0; i < pgrpl_shared->nslots; i++)
		{
			if (!pgrpl_shared->slots[i].in_use)
			{
				slot = &pgrpl_shared->slots[i];
				slot->in_use = true;
				slot->dboid = dboid;
				slot->subid = subid;
				slot->pid = 0;
				slot->latch = NULL;
				slot->restart = false;
				pgrpl_slot_reset_stats(slot);
				break;
			}
		}
		if (slot == NULL)
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("out of pgrpl worker slots"),
					 errhint("You might need to increase \"pgrpl.max_workers\".")));
	}
	if (slot != NULL)
	{
		slot->wanted = wanted;
		slot->next_start = 0;
		if (wanted && slot->pid == 0)
		{
			/* A finished worker restarts from scratch: show "starting". */
			SpinLockAcquire(&slot->mutex);
			slot->state = PGRPL_STATE_STARTING;
			SpinLockRelease(&slot->mutex);
		}
	}
	LWLockRelease(pgrpl_shared->lock);
	if (wanted)
		pgrpl_wake_launcher();
}

/*
 * Stop wanting a worker.  A running one is signalled and frees the slot as
 * it exits; otherwise the slot is free at once.  Runs at commit: no waiting.
 */
void
pgrpl_slot_request_stop(Oid dboid, int32 subid)
{
	PgrplSlot  *slot;

	LWLockAcquire(pgrpl_shared->lock, LW_EXCLUSIVE);
	slot = pgrpl_slot_find(dboid, subid);
	if (slot != NULL)
	{
		slot->wanted = false;
		/* Under the lock: the worker clears pid under it before exiting. */
		if (slot->pid != 0)
			kill(slot->pid, SIGTERM);
		else
			slot->in_use = false;
	}
	LWLockRelease(pgrpl_shared->lock);
}

/* Forget a subscription: its worker must already be gone. */
void
pgrpl_slot_release(Oid dboid, int32 subid)
{
	PgrplSlot  *slot;

	LWLockAcquire(pgrpl_shared->lock, LW_EXCLUSIVE);
	slot = pgrpl_slot_find(dboid, subid);
	if (slot != NULL && slot->pid == 0)
		slot->in_use = false;
	else if (slot != NULL)
		slot->wanted = false;
	LWLockRelease(pgrpl_shared->lock);
}

/* Ask a running worker to reconnect so that it rereads its settings. */
void
pgrpl_slot_request_restart(Oid dboid, int32 subid)
{
	PgrplSlot  *slot;

	LWLockAcquire(pgrpl_shared->lock, LW_EXCLUSIVE);
	slot = pgrpl_slot_find(dboid, subid);
	if (slot != NULL)
	{
		slot->restart = true;
		if (slot->pid != 0 && slot->latch != NULL)
			SetLatch(slot->latch);
	}
	LWLockRelease(pgrpl_shared->lock);
}

/*
 * Stop the worker of a subscription and wait until it has exited, so that
 * its replication slot and origin are free when we return.  "wanted" is
 * cleared first, so the launcher does not start another one.
 *
 * The worker clears pid and then broadcasts progress_cv as it exits.  We
 * get on the condition variable's wait list before each look at pid, so a
 * broadcast that comes after the look wakes us up.
 */
void
pgrpl_slot_stop_worker(Oid dboid, int32 subid)
{
	ConditionVariable *prepared = NULL;

	for (;;)
	{
		PgrplSlot  *slot;
		ConditionVariable *cv = NULL;

		LWLockAcquire(pgrpl_shared->lock, LW_EXCLUSIVE);
		slot = pgrpl_slot_find(dboid, subid);
		if (slot != NULL)
		{
			slot->wanted = false;
			if (slot->pid != 0)
			{
				/*
				 * Under the lock: the worker clears pid under it before
				 * exiting.  SIGTERM is what "die" handles: it exits at once.
				 */
				kill(slot->pid, SIGTERM);
				cv = &slot->progress_cv;
			}
		}
		LWLockRelease(pgrpl_shared->lock);

		if (cv == NULL)
			break;
		if (cv != prepared)
		{
			/* Get on the wait list, then look again before sleeping. */
			ConditionVariablePrepareToSleep(cv);
			prepared = cv;
			continue;
		}
		/* Resends SIGTERM now and then; interrupts are checked inside. */
		(void) ConditionVariableTimedSleep(cv, PGRPL_CV_RECHECK_MS, PG_WAIT_EXTENSION);
	}
	if (prepared != NULL)
		ConditionVariableCancelSleep();
}

/*
 * One look at a subscription's progress: has it materialized "target", or
 * has its worker finished (at stop_lsn) and exited?  Returns the slot's
 * condition variable, or NULL if the subscription has no slot.
 */
static ConditionVariable *
pgrpl_slot_look(Oid dboid, int32 subid, XLogRecPtr target,
				bool *reached, bool *finished)
{
	PgrplSlot  *slot;
	ConditionVariable *cv = NULL;

	*reached = false;
	*finished = false;
	LWLockAcquire(pgrpl_shared->lock, LW_SHARED);
	slot = pgrpl_slot_find(dboid, subid);
	if (slot != NULL)
	{
		SpinLockAcquire(&slot->mutex);
		*reached = slot->caught_up_lsn >= target;
		*finished = slot->state == PGRPL_STATE_FINISHED && slot->pid == 0;
		SpinLockRelease(&slot->mutex);
		cv = &slot->progress_cv;
	}
	LWLockRelease(pgrpl_shared->lock);
	return cv;
}

bool
pgrpl_slot_wait_for_lsn(Oid dboid, int32 subid, XLogRecPtr target,
						long timeout_ms)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   timeout_ms);
	ConditionVariable *prepared = NULL;
	bool		reached;

	for (;;)
	{
		ConditionVariable *cv;
		bool		finished;
		long		left;

		cv = pgrpl_slot_look(dboid, subid, target, &reached, &finished);
		if (reached || finished)
			break;
		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (left <= 0)
			break;

		if (cv == NULL)
		{
			/* No slot (yet, e.g. before the start-up probe): poll. */
			if (prepared != NULL)
			{
				ConditionVariableCancelSleep();
				prepared = NULL;
			}
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 Min(left, PGRPL_NO_SLOT_RECHECK_MS), PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
		else if (cv != prepared)
		{
			/* Get on the wait list, then look again before sleeping. */
			ConditionVariablePrepareToSleep(cv);
			prepared = cv;
		}
		else
			(void) ConditionVariableTimedSleep(cv, Min(left, PGRPL_CV_RECHECK_MS),
											   PG_WAIT_EXTENSION);
	}
	if (prepared != NULL)
		ConditionVariableCancelSleep();
	return reached;
}

PgrplWorkerStatus *
pgrpl_slot_statuses(Oid dboid, int *count)
{
	PgrplWorkerStatus *result;
	int			n = 0;

	result = palloc(sizeof(PgrplWorkerStatus) * pgrpl_shared->nslots);
	LWLockAcquire(pgrpl_shared->lock, LW_SHARED);
	for (int i = 0; i < pgrpl_shared->nslots; i++)
	{
		PgrplSlot  *slot = &pgrpl_shared->slots[i];
		PgrplWorkerStatus *st = &result[n];

		if (!slot->in_use || slot->dboid != dboid)
			continue;
		st->subid = slot->subid;
		st->pid = slot->pid;
		SpinLockAcquire(&slot->mutex);
		st->state = slot->state;
		st->received_lsn = slot->received_lsn;
		st->flushed_lsn = slot->flushed_lsn;
		st->latest_end_lsn = slot->latest_end_lsn;
		st->last_msg_send_time = slot->last_msg_send_time;
		st->last_msg_receipt_time = slot->last_msg_receipt_time;
		st->latest_end_time = slot->latest_end_time;
		st->transactions = slot->transactions;
		st->changes = slot->changes;
		st->bytes_received = slot->bytes_received;
		st->proto_version = slot->proto_version;
		st->streamed_transactions = slot->streamed_transactions;
		st->streamed_bytes = slot->streamed_bytes;
		st->streams_in_progress = slot->streams_in_progress;
		memcpy(st->last_error, slot->last_error, PGRPL_ERROR_LEN);
		st->last_error_time = slot->last_error_time;
		SpinLockRelease(&slot->mutex);
		n++;
	}
	LWLockRelease(pgrpl_shared->lock);
	*count = n;
	return result;
}

/* ---------------------------------------------------------------------
 * For the launcher
 * --------------------------------------------------------------------- */

static void
pgrpl_launcher_detach(int code, Datum arg)
{
	LWLockAcquire(pgrpl_shared->lock, LW_EXCLUSIVE);
	pgrpl_shared->launcher_pid = 0;
	pgrpl_shared->launcher_latch = NULL;
	LWLockRelease(pgrpl_shared->lock);
}

void
pgrpl_launcher_attach(void)
{
	LWLockAcquire(pgrpl_shared->lock, LW_EXCLUSIVE);
	pgrpl_shared->launcher_pid = MyProcPid;
	pgrpl_shared->launcher_latch = &MyProc->procLatch;
	LWLockRelease(pgrpl_shared->lock);
	before_shmem_exit(pgrpl_launcher_detach, (Datum) 0);
}

void
pgrpl_wake_launcher(void)
{
	Latch	   *latch;

	LWLockAcquire(pgrpl_shared->lock, LW_SHARED);
	latch = pgrpl_shared->launcher_latch;
	if (latch != NULL)
		SetLatch(latch);
	LWLockRelease(pgrpl_shared->lock);
}

bool
pgrpl_slot_needs_worker(int index, TimestampTz now, Oid *dboid, int32 *subid)
{
	PgrplSlot  *slot = &pgrpl_shared->slots[index];
	bool		needed;

	LWLockAcquire(pgrpl_shared->lock, LW_SHARED);
	needed = slot->in_use && slot->wanted && slot->pid == 0 && slot->next_start <= now;
	*dboid = slot->dboid;
	*subid = slot->subid;
	LWLockRelease(pgrpl_shared->lock);
	return needed;
}

void
pgrpl_slot_delay_start(int index, Oid dboid, int32 subid, TimestampTz until)
{
	PgrplSlot  *slot = &pgrpl_shared->slots[index];

	LWLockAcquire(pgrpl_shared->lock, LW_EXCLUSIVE);
	if (slot->in_use && slot->subid == subid && slot->dboid == dboid)
		slot->next_start = until;
	LWLockRelease(pgrpl_shared->lock);
}

/* ---------------------------------------------------------------------
 * For the worker: its own slot
 * --------------------------------------------------------------------- */

bool
pgrpl_worker_claim_slot(Oid dboid, int32 subid)
{
	PgrplSlot  *slot;

	Assert(MyPgrplSlot == NULL);
	LWLockAcquire(pgrpl_shared->lock, LW_EXCLUSIVE);
	slot = pgrpl_slot_find(dboid, subid);
	if (slot != NULL && slot->wanted && slot->pid == 0)
	{
		slot->pid = MyProcPid;
		slot->latch = &MyProc->procLatch;
		slot->restart = false;
		MyPgrplSlot = slot;
	}
	LWLockRelease(pgrpl_shared->lock);
	return MyPgrplSlot != NULL;
}

void
pgrpl_worker_release_slot(void)
{
	PgrplSlot  *slot = MyPgrplSlot;

	if (slot == NULL)
		return;
	LWLockAcquire(pgrpl_shared->lock, LW_EXCLUSIVE);
	slot->pid = 0;
	slot->latch = NULL;
	/* A dropped or disabled subscription's slot is free again. */
	if (!slot->wanted && MyPgrplState != PGRPL_STATE_FINISHED)
		slot->in_use = false;
	LWLockRelease(pgrpl_shared->lock);
	MyPgrplSlot = NULL;
	/* After pid is cleared: stop_worker and wait_for_lsn look at it. */
	ConditionVariableBroadcast(&slot->progress_cv);
}

void
pgrpl_worker_set_state(PgrplWorkerState state)
{
	PgrplSlot  *slot = MyPgrplSlot;

	MyPgrplState = state;
	SpinLockAcquire(&slot->mutex);
	slot->state = state;
	SpinLockRelease(&slot->mutex);
	ConditionVariableBroadcast(&slot->progress_cv);
}

void
pgrpl_worker_record_error(const char *message)
{
	PgrplSlot  *slot = MyPgrplSlot;
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&slot->mutex);
	slot->state = PGRPL_STATE_ERROR;
	strlcpy(slot->last_error, message, PGRPL_ERROR_LEN);
	slot->last_error_time = now;
	SpinLockRelease(&slot->mutex);
	MyPgrplState = PGRPL_STATE_ERROR;
	ConditionVariableBroadcast(&slot->progress_cv);
}

void
pgrpl_worker_clear_error(void)
{
	PgrplSlot  *slot = MyPgrplSlot;

	SpinLockAcquire(&slot->mutex);
	slot->last_error[0] = '\0';
	SpinLockRelease(&slot->mutex);
}

void
pgrpl_worker_set_caught_up(XLogRecPtr lsn)
{
	PgrplSlot  *slot = MyPgrplSlot;
	bool		advanced = false;

	SpinLockAcquire(&slot->mutex);
	if (lsn > slot->caught_up_lsn)
	{
		slot->caught_up_lsn = lsn;
		advanced = true;
	}
	SpinLockRelease(&slot->mutex);
	if (advanced)
		ConditionVariableBroadcast(&slot->progress_cv);
}

void
pgrpl_worker_note_progress(XLogRecPtr progress)
{
	PgrplSlot  *slot = MyPgrplSlot;

	SpinLockAcquire(&slot->mutex);
	if (progress > slot->flushed_lsn)
		slot->flushed_lsn = progress;
	SpinLockRelease(&slot->mutex);
}

void
pgrpl_worker_note_received(XLogRecPtr received_lsn, int bytes,
						   TimestampTz send_time, TimestampTz receipt_time,
						   bool keepalive, XLogRecPtr wal_end, bool in_stream)
{
	PgrplSlot  *slot = MyPgrplSlot;

	SpinLockAcquire(&slot->mutex);
	slot->received_lsn = received_lsn;
	slot->bytes_received += bytes;
	if (in_stream)
		slot->streamed_bytes += bytes;
	slot->last_msg_send_time = send_time;
	slot->last_msg_receipt_time = receipt_time;
	if (keepalive)
	{
		slot->latest_end_lsn = wal_end;
		slot->latest_end_time = send_time;
	}
	SpinLockRelease(&slot->mutex);
}

void
pgrpl_worker_note_commit(XLogRecPtr end_lsn, int transactions, int streamed,
						 int64 changes)
{
	PgrplSlot  *slot = MyPgrplSlot;

	SpinLockAcquire(&slot->mutex);
	slot->flushed_lsn = end_lsn;
	slot->transactions += transactions;
	slot->streamed_transactions += streamed;
	slot->changes += changes;
	SpinLockRelease(&slot->mutex);
}

void
pgrpl_worker_note_protocol(int proto_version)
{
	PgrplSlot  *slot = MyPgrplSlot;

	SpinLockAcquire(&slot->mutex);
	slot->proto_version = proto_version;
	SpinLockRelease(&slot->mutex);
}

void
pgrpl_worker_note_streams(int in_progress)
{
	PgrplSlot  *slot = MyPgrplSlot;

	if (slot->streams_in_progress == in_progress)
		return;					/* only this process writes it */
	SpinLockAcquire(&slot->mutex);
	slot->streams_in_progress = in_progress;
	SpinLockRelease(&slot->mutex);
}

bool
pgrpl_worker_restart_pending(void)
{
	bool		restart;

	LWLockAcquire(pgrpl_shared->lock, LW_SHARED);
	restart = MyPgrplSlot->restart;
	LWLockRelease(pgrpl_shared->lock);
	return restart;
}

bool
pgrpl_worker_peek_restart(void)
{
	return ((volatile PgrplSlot *) MyPgrplSlot)->restart;
}

bool
pgrpl_worker_consume_restart(void)
{
	bool		restart;

	LWLockAcquire(pgrpl_shared->lock, LW_EXCLUSIVE);
	restart = MyPgrplSlot->restart;
	MyPgrplSlot->restart = false;
	LWLockRelease(pgrpl_shared->lock);
	return restart;
}

void
pgrpl_worker_unwant(void)
{
	LWLockAcquire(pgrpl_shared->lock, LW_EXCLUSIVE);
	MyPgrplSlot->wanted = false;
	LWLockRelease(pgrpl_shared->lock);
}

const char *
pgrpl_state_name(PgrplWorkerState state)
{
	switch (state)
	{
		case PGRPL_STATE_STARTING:
			return "starting";
		case PGRPL_STATE_CONNECTING:
			return "connecting";
		case PGRPL_STATE_STREAMING:
			return "streaming";
		case PGRPL_STATE_ERROR:
			return "error";
		case PGRPL_STATE_FINISHED:
			return "finished";
	}
	return "unknown";
}
