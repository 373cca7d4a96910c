/*-------------------------------------------------------------------------
 * pgrpl_shmem.c
 *		Shared memory for the launcher and workers, and the slot operations
 *		the SQL API uses to start and stop workers.
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

PgrplShared *pgrpl_shared = NULL;

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
PgrplSlot *
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
	slot->last_error[0] = '\0';
	slot->last_error_time = 0;
	SpinLockRelease(&slot->mutex);
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
 * its replication slot and origin are free when we return.  The caller has
 * already cleared "wanted", so the launcher will not start another one.
 */
void
pgrpl_slot_stop_worker(Oid dboid, int32 subid)
{
	for (;;)
	{
		PgrplSlot  *slot;
		pid_t		pid = 0;

		LWLockAcquire(pgrpl_shared->lock, LW_SHARED);
		slot = pgrpl_slot_find(dboid, subid);
		if (slot != NULL)
			pid = slot->pid;
		LWLockRelease(pgrpl_shared->lock);

		if (pid == 0)
			return;

		/* SIGTERM is what "die" handles: the worker exits at once. */
		kill(pid, SIGTERM);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 10L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
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
