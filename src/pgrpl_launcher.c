/*-------------------------------------------------------------------------
 * pgrpl_launcher.c
 *		Start workers: at server start, after create/enable, after a crash.
 *
 * The launcher is a static background worker connected to no database.
 * Subscriptions live in per-database tables it cannot read, so at start it
 * runs a short-lived "probe" worker in every database, which marks the
 * enabled subscriptions of that database as wanted in shared memory.  From
 * then on the SQL API marks them at commit.  The launcher then keeps one
 * worker per wanted subscription, restarting one that exits (after a short
 * delay, so a worker that dies at once cannot make it spin).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/heapam.h"
#include "access/tableam.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "pgrpl.h"
#include "pgrpl_catalog.h"
#include "pgrpl_launcher.h"
#include "pgrpl_shmem.h"

#define PGRPL_LAUNCHER_NAPTIME_MS	1000L
#define PGRPL_RESTART_DELAY_MS		1000L

void
pgrpl_launcher_register(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 5;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "pgrpl");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "pgrpl_launcher_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "pgrpl launcher");
	snprintf(bgw.bgw_type, BGW_MAXLEN, "pgrpl launcher");
	RegisterBackgroundWorker(&bgw);
}

static BackgroundWorkerHandle *
pgrpl_start_dynamic(const char *function, const char *name, Oid dboid, int32 subid)
{
	BackgroundWorker bgw;
	BackgroundWorkerHandle *handle;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "pgrpl");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(bgw.bgw_name, BGW_MAXLEN, "%s", name);
	snprintf(bgw.bgw_type, BGW_MAXLEN, "%s", function[6] == 'p' ? "pgrpl probe" : "pgrpl worker");
	bgw.bgw_main_arg = Int32GetDatum(subid);
	memcpy(bgw.bgw_extra, &dboid, sizeof(Oid));
	bgw.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&bgw, &handle))
	{
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("out of background worker slots"),
				 errhint("You might need to increase \"max_worker_processes\".")));
		return NULL;
	}
	return handle;
}

/* Databases a probe should look at: all that accept connections. */
static List *
pgrpl_list_databases(void)
{
	List	   *dbs = NIL;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	MemoryContext cxt = CurrentMemoryContext;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);
		MemoryContext oldcxt;

		if (!db->datallowconn || db->datistemplate)
			continue;
		oldcxt = MemoryContextSwitchTo(cxt);
		dbs = lappend_oid(dbs, db->oid);
		MemoryContextSwitchTo(oldcxt);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return dbs;
}

/* Run one probe per database, one at a time. */
static void
pgrpl_probe_databases(void)
{
	List	   *dbs = pgrpl_list_databases();
	ListCell   *lc;

	foreach(lc, dbs)
	{
		BackgroundWorkerHandle *handle;
		pid_t		pid;

		handle = pgrpl_start_dynamic("pgrpl_probe_main", "pgrpl probe", lfirst_oid(lc), 0);
		if (handle == NULL)
			continue;
		if (WaitForBackgroundWorkerStartup(handle, &pid) == BGWH_POSTMASTER_DIED)
			proc_exit(1);
		if (WaitForBackgroundWorkerShutdown(handle) == BGWH_POSTMASTER_DIED)
			proc_exit(1);
		pfree(handle);
	}
	list_free(dbs);
}

/* Launcher-local: the handle of the worker started for each slot. */
typedef struct PgrplLaunched
{
	BackgroundWorkerHandle *handle;
	Oid			dboid;
	int32		subid;
} PgrplLaunched;

static PgrplLaunched *launched;

/* Forget handles of workers that have exited. */
static void
pgrpl_reap_workers(TimestampTz now)
{
	for (int i = 0; i < pgrpl_slot_count(); i++)
	{
		PgrplLaunched *l = &launched[i];
		pid_t		pid;

		if (l->handle == NULL ||
			GetBackgroundWorkerPid(l->handle, &pid) != BGWH_STOPPED)
			continue;
		pfree(l->handle);
		l->handle = NULL;
		pgrpl_slot_delay_start(i, l->dboid, l->subid,
							   TimestampTzPlusMilliseconds(now, PGRPL_RESTART_DELAY_MS));
	}
}

/* Start a worker for every wanted slot that has none. */
static void
pgrpl_start_workers(TimestampTz now)
{
	for (int i = 0; i < pgrpl_slot_count(); i++)
	{
		Oid			dboid;
		int32		subid;
		char		name[BGW_MAXLEN];

		if (launched[i].handle != NULL ||
			!pgrpl_slot_needs_worker(i, now, &dboid, &subid))
			continue;

		snprintf(name, sizeof(name), "pgrpl worker for subscription %d", subid);
		launched[i].handle = pgrpl_start_dynamic("pgrpl_worker_main", name, dboid, subid);
		launched[i].dboid = dboid;
		launched[i].subid = subid;
	}
}

void
pgrpl_launcher_main(Datum main_arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	pgrpl_launcher_attach();

	launched = MemoryContextAllocZero(TopMemoryContext,
									  sizeof(PgrplLaunched) * pgrpl_slot_count());
	pgrpl_probe_databases();

	for (;;)
	{
		TimestampTz now = GetCurrentTimestamp();

		pgrpl_reap_workers(now);
		pgrpl_start_workers(now);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 PGRPL_LAUNCHER_NAPTIME_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}
}

/*
 * Probe one database: if pgrpl is installed there, mark its enabled
 * subscriptions as wanted.
 */
void
pgrpl_probe_main(Datum main_arg)
{
	Oid			dboid;
	List	   *ids = NIL;
	ListCell   *lc;

	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (OidIsValid(get_extension_oid("pgrpl", true)))
		ids = pgrpl_subscription_enabled_ids();
	PopActiveSnapshot();
	CommitTransactionCommand();

	foreach(lc, ids)
		pgrpl_slot_set_wanted(dboid, lfirst_int(lc), true);
	proc_exit(0);
}
