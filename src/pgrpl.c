/*-------------------------------------------------------------------------
 * pgrpl.c
 *		Module entry point: settings, shared memory hooks and the launcher.
 *
 * pgrpl must be in shared_preload_libraries: the launcher is a static
 * background worker and worker state lives in shared memory sized at start.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "pgrpl.h"
#include "pgrpl_launcher.h"
#include "pgrpl_shmem.h"

PG_MODULE_MAGIC;

int			pgrpl_max_workers = 8;
int			pgrpl_partition_size = 1000000;
int			pgrpl_idle_flush_delay = 10;
bool		pgrpl_tcp_pacing = true;
bool		pgrpl_preloaded = false;

void		_PG_init(void);

void
_PG_init(void)
{
	/* Remember how we were loaded; CREATE EXTENSION refuses otherwise. */
	pgrpl_preloaded = process_shared_preload_libraries_in_progress;
	if (!pgrpl_preloaded)
		return;

	DefineCustomIntVariable("pgrpl.max_workers",
							"Maximum number of pgrpl subscriptions with a running worker, cluster-wide.",
							"Each worker also needs a slot in \"max_worker_processes\".",
							&pgrpl_max_workers,
							8, 1, 1024,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("pgrpl.partition_size",
							"Number of changes after which a subscription's change log starts a new partition.",
							"purge() and retention drop whole partitions; the transactions of the partition that straddles the bound are deleted row by row.",
							&pgrpl_partition_size,
							1000000, 100, INT_MAX / 2,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("pgrpl.idle_flush_delay",
							"Time a captured transaction waits for the WAL writer, once the stream is quiet, before the worker flushes WAL itself.",
							"The worker commits asynchronously and tells the primary a transaction is flushed only once it is durable here.  -1 leaves every flush to the WAL writer (up to wal_writer_delay later).",
							&pgrpl_idle_flush_delay,
							10, -1, 10000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomBoolVariable("pgrpl.tcp_pacing",
							 "Lets the messages of a busy primary reached over TCP with a short round trip pile up before the worker reads them.",
							 "The worker caps its TCP receive window at 128 kB and, while a busy stream runs dry, waits 20 ms instead of 0.5 ms, so that the walsender sends fewer, larger segments.  Applies to connections made after the change, with a round trip under 1 ms.",
							 &pgrpl_tcp_pacing,
							 true,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
	MarkGUCPrefixReserved("pgrpl");

	pgrpl_shmem_install_hooks();
	pgrpl_launcher_register();
}

void
pgrpl_origin_name(Oid dboid, int32 subid, char *buf, size_t len)
{
	snprintf(buf, len, PGRPL_ORIGIN_PREFIX "%u_%d", dboid, subid);
}
