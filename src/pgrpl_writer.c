/*-------------------------------------------------------------------------
 * pgrpl_writer.c
 *		Insert change and transaction rows into the change log (storage 2.0).
 *
 * Rows go straight to the table AM and the indexes of the partition they
 * belong to, without SQL, tuple routing or SPI: the writer runs once per
 * captured change and must keep up with what a walsender can decode.  Each
 * row is written as it arrives (buffered in bounded batches), so memory
 * does not grow with the size of a remote transaction.
 *
 * Layout (pgrpl--1.1--2.0.sql): pgrpl.change and pgrpl.transaction are
 * partitioned by subscription, then by ranges of 2^32 txn_ids.  The writer
 * hands out txn_ids in increasing order and moves on to the next range when
 * the current one holds pgrpl.partition_size changes, so purge() can drop
 * old ranges whole.  Relation versions and partitions are created rarely,
 * through SPI.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/heaptoast.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "nodes/makefuncs.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"

#include "pgrpl.h"
#include "pgrpl_compat.h"
#include "pgrpl_compress.h"
#include "pgrpl_keyhash.h"
#include "pgrpl_writer.h"

/* Column numbers of pgrpl.change and pgrpl.transaction (install script). */
enum
{
	CH_SUB_ID, CH_SEQ, CH_TXN_ID, CH_LSN, CH_KEY_HASH, CH_REL_ID, CH_OP,
	CH_UNCHANGED, CH_ROW_KEY, CH_OLD_KEY, CH_OLD, CH_NEW, CH_MSG_PREFIX,
	CH_MSG_CONTENT, CH_NATTS
};
/* The columns whose large values the writer compresses (pgrpl_compress.c). */
static const int change_large_cols[] = {CH_OLD, CH_NEW, CH_MSG_CONTENT};
enum
{
	TX_SUB_ID, TX_CHANGES, TX_TXN_ID, TX_COMMIT_LSN, TX_END_LSN, TX_XID,
	TX_COMMIT_TIME, TX_ORIGIN_LSN, TX_STATE, TX_ORIGIN, TX_GID, TX_PREPARE_LSN,
	TX_PREPARE_TIME, TX_NATTS
};

/* txn_ids of one partition: [part << 32, (part + 1) << 32) */
#define PGRPL_PART_SHIFT	32
#define PGRPL_PART_OF(txn_id)	((txn_id) >> PGRPL_PART_SHIFT)

/*
 * Rows of a table are buffered and written with table_multi_insert (one
 * WAL record and one buffer lock per page instead of per row, as COPY
 * does), then indexed.  The buffer is bounded in rows and bytes, so memory
 * does not grow with the remote transaction.  The bounds are small for
 * another reason: table_multi_insert TOASTs and writes the whole batch
 * before we can read the socket again (see the busy callback), and a Unix
 * socket holds only about 200 kB, 1-2 ms of the walsender's output.  With
 * 4 MB batches of 14 kB values the walsender waited on a full socket for
 * 25-45 ms per batch, and 1000 rows / 256 kB still let it sleep on the
 * socket while a batch of small rows was written (several ms).
 *
 * So there are two sizes (pgrpl_writer_set_short_batches).  Short ones,
 * 250 rows / 64 kB, take well under a millisecond and still fill several
 * pages per WAL record: for a Unix socket (measured against long ones,
 * pgrpl alone, variants alternating: drains of (b) and (d) 4-12% shorter,
 * with less of the walsender's CPU).  Long ones, 1000 rows / 256 kB, for
 * TCP, whose buffers hold megabytes: there the short ones made drains of
 * (a) and (d) 6-10% longer, as reading the socket more often undoes the
 * pacing of a nearby primary's stream (pgrpl_stream_pace).
 */
#define PGRPL_BATCH_ROWS_MAX		1000
#define PGRPL_BATCH_ROWS_SHORT		250
#define PGRPL_BATCH_BYTES_LONG		(256 * 1024)
#define PGRPL_BATCH_BYTES_SHORT		(64 * 1024)

/* Rows indexed between two calls of the busy callback (long: about 1 ms) */
#define PGRPL_BUSY_CALLBACK_ROWS_LONG	256
#define PGRPL_BUSY_CALLBACK_ROWS_SHORT	64

/*
 * A batch's slots, kept from one local transaction to the next: a worker
 * keeping up with a busy primary commits many small groups, and making up
 * to a thousand slots per table and group was a tenth of its time.  The
 * slots use a copy of the table's descriptor (so they pin nothing in a
 * resource owner) and serve any leaf of the same row layout.
 */
typedef struct PgrplSlotSet
{
	TupleDesc	desc;
	TupleTableSlot *slots[PGRPL_BATCH_ROWS_MAX];	/* made on first use */
	struct PgrplSlotSet *next;	/* in the free list */
} PgrplSlotSet;

typedef struct PgrplTarget
{
	Relation	rel;			/* the leaf partition */
	ResultRelInfo *rri;
	PgrplSlotSet *set;
	TupleTableSlot **slots;		/* set->slots */
	int			nbuffered;
	Size		bytes;
	MemoryContext batchcxt;		/* the buffered tuples */
	BulkInsertState bistate;	/* see pgrpl_target_open */
} PgrplTarget;

/* The two leaves of one partition. */
typedef struct PgrplLeaves
{
	int64		part;
	PgrplTarget change;
	PgrplTarget txn;
} PgrplLeaves;

/*
 * Partitions open at once: the current one, and the older ones that
 * streamed transactions still being received write into (their rows go
 * where their txn_id, handed out at their first row, says).
 */
#define PGRPL_MAX_OPEN_PARTS	4

/* Open for the current local transaction only. */
typedef struct PgrplWriter
{
	bool		active;
	int			nleaves;
	PgrplLeaves *leaves[PGRPL_MAX_OPEN_PARTS];	/* most recently used first */
	EState	   *estate;
} PgrplWriter;

static PgrplWriter writer;

static PgrplWriterBusyCallback busy_callback = NULL;

/* The batch bounds in force (pgrpl_writer_set_short_batches) */
static int	batch_rows = PGRPL_BATCH_ROWS_SHORT;
static Size batch_bytes = PGRPL_BATCH_BYTES_SHORT;
static int	busy_callback_rows = PGRPL_BUSY_CALLBACK_ROWS_SHORT;

/* Slot sets not in use; they and their slots live in slot_cxt. */
static PgrplSlotSet *free_slot_sets;
static MemoryContext slot_cxt;

/* Per session: the subscription and where its txn_ids stand. */
static int32 writer_subid;
static int64 next_txn_id = -1;
static int64 part_changes;		/* changes in next_txn_id's partition */

/* ---------------------------------------------------------------------
 * Small SPI helpers (rare paths)
 * --------------------------------------------------------------------- */

/*
 * Run one statement returning at most one int4, int8 or pg_lsn (as int64);
 * false if no row or NULL.
 */
static bool
pgrpl_spi_int8(const char *sql, int nargs, Oid *types, Datum *values, int64 *result)
{
	bool		found = false;

	SPI_connect();
	if (SPI_execute_with_args(sql, nargs, types, values, NULL, false, 1) < 0)
		elog(ERROR, "could not run \"%s\"", sql);
	if (SPI_processed > 0)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									  1, &isnull);

		if (!isnull)
		{
			Oid			typid = TupleDescAttr(SPI_tuptable->tupdesc, 0)->atttypid;

			if (typid == INT4OID)
				*result = DatumGetInt32(d);
			else if (typid == LSNOID)
				*result = (int64) DatumGetLSN(d);
			else
				*result = DatumGetInt64(d);
			found = true;
		}
	}
	SPI_finish();
	return found;
}

/*
 * Refuse to write into a schema of another storage version: after a library
 * upgrade the database may still hold the 1.x layout until ALTER EXTENSION
 * pgrpl UPDATE runs, and rows written in the new layout's shape there would
 * be rejected at best.  Needs a transaction.
 */
void
pgrpl_writer_check_storage(void)
{
	int64		version = 0;
	char		extversion[NAMEDATALEN] = "(not installed)";
	bool		has_version = false;

	SPI_connect();
	if (SPI_execute("SELECT e.extversion, pg_catalog.to_regprocedure('pgrpl.storage_version()') IS NOT NULL"
					"  FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'pgrpl'",
					true, 1) == SPI_OK_SELECT && SPI_processed > 0)
	{
		strlcpy(extversion, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1),
				sizeof(extversion));
		has_version = strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2), "t") == 0;
	}
	SPI_finish();
	if (has_version)
		(void) pgrpl_spi_int8("SELECT pgrpl.storage_version()", 0, NULL, NULL, &version);
	if (version != PGRPL_STORAGE_VERSION)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pgrpl cannot write into the change log of extension version %s",
						extversion),
				 errdetail("The loaded library writes storage version %d; the installed schema has version %d.",
						   PGRPL_STORAGE_VERSION, (int) version),
				 errhint("Update the extension with ALTER EXTENSION pgrpl UPDATE.")));
}

/*
 * At the start of a session: where the subscription's txn_ids stand, and
 * the end of the last unit in the log.  The replication origin's progress
 * commits with the rows, so the two agree -- unless the origin lost its
 * progress while the log kept its rows (dropping an origin clears its
 * progress at once, even when the dropping transaction rolls back, e.g. a
 * drop_subscription rolled back): then the log's own end says what not to
 * capture again.  The
 * next id is above every id in the log, including ids of rows whose
 * transaction row a purge deleted (they must never become visible again
 * under a new transaction).  The current partition's fill is estimated from
 * its statistics; partition_size is a target, not a limit.
 */
XLogRecPtr
pgrpl_writer_session_start(int32 subid)
{
	Oid			argtypes[1] = {INT4OID};
	Datum		args[1] = {Int32GetDatum(subid)};
	int64		max_id = -1;
	int64		rows = 0;
	char	   *leaf;
	Oid			leafid;
	int64		first_id;
	static XLogRecPtr logged_end = InvalidXLogRecPtr;

	/*
	 * Once per process: only this worker writes the subscription's log, so
	 * what it learned stays true across its sessions, and a reconnect does
	 * not wait for a lock someone holds on the log.
	 */
	if (writer_subid == subid && next_txn_id >= 0)
		return logged_end;
	writer_subid = subid;
	(void) pgrpl_spi_int8("SELECT pg_catalog.max(x) FROM ("
						  " SELECT pg_catalog.max(c.txn_id) FROM pgrpl.change c WHERE c.sub_id OPERATOR(pg_catalog.=) $1"
						  " UNION ALL"
						  " SELECT pg_catalog.max(t.txn_id) FROM pgrpl.transaction t WHERE t.sub_id OPERATOR(pg_catalog.=) $1) m(x)",
						  1, argtypes, args, &max_id);
	first_id = max_id + 1;
	leaf = psprintf("change_%d_" INT64_FORMAT, subid, PGRPL_PART_OF(first_id));
	leafid = get_relname_relid(leaf, get_namespace_oid(PGRPL_SCHEMA, false));
	if (OidIsValid(leafid))
	{
		Oid			t[1] = {OIDOID};
		Datum		a[1] = {ObjectIdGetDatum(leafid)};

		(void) pgrpl_spi_int8("SELECT CASE WHEN c.reltuples > 0 THEN c.reltuples::pg_catalog.int8 ELSE 0 END"
							  "  FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) $1",
							  1, t, a, &rows);
	}
	part_changes = rows;

	/* The end of the last unit the log holds (see the header comment). */
	if (pgrpl_spi_int8("SELECT pg_catalog.max(x) FROM ("
					   " (SELECT t.end_lsn FROM pgrpl.transaction t"
					   "   WHERE t.sub_id OPERATOR(pg_catalog.=) $1 AND t.commit_lsn IS NOT NULL"
					   "   ORDER BY t.commit_lsn DESC LIMIT 1)"
					   " UNION ALL"
					   /* a PREPARE is a unit too */
					   " SELECT pg_catalog.max(t.end_lsn) FROM pgrpl.transaction t"
					   "   WHERE t.sub_id OPERATOR(pg_catalog.=) $1 AND t.state OPERATOR(pg_catalog.=) 'p') m(x)",
					   1, argtypes, args, &max_id))
		logged_end = (XLogRecPtr) max_id;
	/* Last: a failure above leaves it unknown, to be learned again. */
	next_txn_id = first_id;
	return logged_end;
}

/*
 * A new transaction id.  Only at a transaction boundary may the log move on
 * to the next partition: all rows of a transaction live in its id's one.
 */
int64
pgrpl_writer_new_txn_id(void)
{
	Assert(next_txn_id >= 0);
	if (part_changes >= pgrpl_partition_size)
	{
		next_txn_id = (PGRPL_PART_OF(next_txn_id) + 1) << PGRPL_PART_SHIFT;
		part_changes = 0;
	}
	return next_txn_id++;
}

/*
 * Purge what the subscription's retention (if any) no longer keeps; the
 * purge drops whole partitions (pgrpl.apply_retention).  Needs a
 * transaction with a snapshot and no open writer.
 */
void
pgrpl_writer_apply_retention(void)
{
	Oid			argtypes[1] = {INT4OID};
	Datum		args[1] = {Int32GetDatum(writer_subid)};
	int64		removed = 0;

	Assert(!writer.active);
	if (pgrpl_spi_int8("SELECT pgrpl.apply_retention($1)", 1, argtypes, args, &removed) &&
		removed > 0)
		ereport(DEBUG1,
				(errmsg_internal("pgrpl retention removed " INT64_FORMAT " changes", removed)));
}

/* ---------------------------------------------------------------------
 * Partitions
 * --------------------------------------------------------------------- */

static Oid
pgrpl_log_relid(const char *name)
{
	return get_relname_relid(name, get_namespace_oid(PGRPL_SCHEMA, false));
}

/* Create partition "part" of subscription subid's log (and its parents). */
static void
pgrpl_create_partition(int32 subid, int64 part)
{
	Oid			argtypes[2] = {INT4OID, INT8OID};
	Datum		args[2] = {Int32GetDatum(subid), Int64GetDatum(part)};
	int64		dummy;

	(void) pgrpl_spi_int8("SELECT 0 FROM pgrpl.ensure_partition($1, $2)",
						  2, argtypes, args, &dummy);
	CommandCounterIncrement();
}

/*
 * A new subscription's log: the partitions its first changes go to (ids
 * from 0) and the next one, which the worker would otherwise create when
 * its first changes arrive.  That is DDL with an fsync per index built
 * (tens of milliseconds), during which the worker reads nothing and the
 * walsender soon stops; and the tables are there for anyone to look at
 * from the start.
 */
void
pgrpl_writer_create_log(int32 subid)
{
	pgrpl_create_partition(subid, 0);
	pgrpl_create_partition(subid, 1);
}

/*
 * The leaf of table "base" (change or transaction) for partition "part",
 * created if missing.  The parents are locked first, as DROP TABLE of a
 * partition (purge) locks the parent before the leaf: same order, no
 * deadlock, and after the lock we see whether a purge dropped the leaf.
 */
static Relation
pgrpl_open_leaf(const char *base, int64 part, int natts)
{
	Oid			top = pgrpl_log_relid(base);
	char	   *subname = psprintf("%s_%d", base, writer_subid);
	char	   *leafname = psprintf("%s_%d_" INT64_FORMAT, base, writer_subid, part);
	Oid			sub;
	Oid			leaf;
	Relation	rel;

	if (!OidIsValid(top))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"%s.%s\" does not exist", PGRPL_SCHEMA, base),
				 errhint("Is the pgrpl extension installed in this database?")));
	LockRelationOid(top, RowExclusiveLock);
	sub = pgrpl_log_relid(subname);
	if (OidIsValid(sub))
		LockRelationOid(sub, RowExclusiveLock);
	leaf = pgrpl_log_relid(leafname);
	if (!OidIsValid(sub) || !OidIsValid(leaf))
	{
		pgrpl_create_partition(writer_subid, part);
		sub = pgrpl_log_relid(subname);
		leaf = pgrpl_log_relid(leafname);
		if (!OidIsValid(sub) || !OidIsValid(leaf))
			elog(ERROR, "could not create partition \"%s\"", leafname);
		LockRelationOid(sub, RowExclusiveLock);
	}
	rel = table_open(leaf, RowExclusiveLock);
	if (RelationGetDescr(rel)->natts != natts)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("relation \"%s.%s\" has an unexpected definition",
						PGRPL_SCHEMA, leafname),
				 errhint("Update the extension with ALTER EXTENSION pgrpl UPDATE.")));
	return rel;
}

/* Do two descriptors lay out and deform rows the same way? */
static bool
pgrpl_same_layout(TupleDesc a, TupleDesc b)
{
	if (a->natts != b->natts)
		return false;
	for (int i = 0; i < a->natts; i++)
	{
		Form_pg_attribute x = TupleDescAttr(a, i);
		Form_pg_attribute y = TupleDescAttr(b, i);

		if (x->atttypid != y->atttypid || x->attlen != y->attlen ||
			x->attbyval != y->attbyval || x->attalign != y->attalign ||
			x->attisdropped != y->attisdropped)
			return false;
	}
	return true;
}

/* A free slot set for rows of "desc", reused when one fits. */
static PgrplSlotSet *
pgrpl_slot_set_get(TupleDesc desc)
{
	PgrplSlotSet **prev = &free_slot_sets;
	PgrplSlotSet *set;
	MemoryContext oldcxt;

	for (set = free_slot_sets; set != NULL; prev = &set->next, set = set->next)
	{
		if (pgrpl_same_layout(set->desc, desc))
		{
			*prev = set->next;
			set->next = NULL;
			return set;
		}
	}
	if (slot_cxt == NULL)
		slot_cxt = AllocSetContextCreate(TopMemoryContext, "pgrpl slots",
										 ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(slot_cxt);
	set = palloc0(sizeof(PgrplSlotSet));
	set->desc = CreateTupleDescCopy(desc);
	MemoryContextSwitchTo(oldcxt);
	return set;
}

/*
 * Back to the free list, its slots empty.  A few sets suffice (two leaves
 * per open partition); one of another layout is dropped.
 */
static void
pgrpl_slot_set_put(PgrplSlotSet *set)
{
	int			n = 0;

	for (PgrplSlotSet *s = free_slot_sets; s != NULL; s = s->next)
		n++;
	if (n >= 2 * PGRPL_MAX_OPEN_PARTS)
	{
		for (int i = 0; i < PGRPL_BATCH_ROWS_MAX && set->slots[i] != NULL; i++)
			ExecDropSingleTupleTableSlot(set->slots[i]);
		FreeTupleDesc(set->desc);
		pfree(set);
		return;
	}
	set->next = free_slot_sets;
	free_slot_sets = set;
}

static void
pgrpl_target_open(PgrplTarget *t, const char *base, int64 part, int natts, Index rti)
{
	t->rel = pgrpl_open_leaf(base, part, natts);
	t->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(t->rri, t->rel, rti, NULL, 0);
	ExecOpenIndices(t->rri, false);
	t->set = pgrpl_slot_set_get(RelationGetDescr(t->rel));
	t->slots = t->set->slots;
	t->nbuffered = 0;
	t->bytes = 0;
	t->batchcxt = AllocSetContextCreate(TopTransactionContext, "pgrpl batch",
										ALLOCSET_DEFAULT_SIZES);

	/*
	 * As COPY: the log only grows, so keep the page being filled pinned
	 * from one batch to the next, and take new heap pages from a ring of
	 * buffers rather than evicting others all over shared_buffers (the
	 * log's pages are not read again soon).  Measured: about 8% less of
	 * the worker's CPU on small rows.  Indexes and TOASTed values still
	 * go through the whole pool (heap_toast_insert_or_update has no such
	 * state).  Allocated in TopTransactionContext: an abort frees it and
	 * releases its pin, so pgrpl_writer_reset need not.
	 */
	t->bistate = GetBulkInsertState();
}

void
pgrpl_writer_set_busy_callback(PgrplWriterBusyCallback callback)
{
	busy_callback = callback;
}

/*
 * Write short batches (true: the caller's socket holds little, a Unix
 * socket) or long ones (false: TCP).  See PGRPL_BATCH_ROWS_SHORT.  Takes
 * effect from the next row buffered.
 */
void
pgrpl_writer_set_short_batches(bool short_batches)
{
	batch_rows = short_batches ? PGRPL_BATCH_ROWS_SHORT : PGRPL_BATCH_ROWS_MAX;
	batch_bytes = short_batches ? PGRPL_BATCH_BYTES_SHORT : PGRPL_BATCH_BYTES_LONG;
	busy_callback_rows = short_batches ?
		PGRPL_BUSY_CALLBACK_ROWS_SHORT : PGRPL_BUSY_CALLBACK_ROWS_LONG;
}

/* Write the buffered rows of a table and their index entries. */
static void
pgrpl_target_flush(PgrplTarget *t)
{
	if (t->nbuffered == 0)
		return;
	table_multi_insert(t->rel, t->slots, t->nbuffered,
					   GetCurrentCommandId(true), 0, t->bistate);
	if (busy_callback != NULL)
		busy_callback();
	for (int i = 0; i < t->nbuffered; i++)
	{
		if (t->rri->ri_NumIndices > 0)
			pgrpl_exec_insert_index_tuples(t->rri, t->slots[i], writer.estate);
		ExecClearTuple(t->slots[i]);
		ResetPerTupleExprContext(writer.estate);
		if (busy_callback != NULL && (i + 1) % busy_callback_rows == 0)
			busy_callback();
	}
	t->nbuffered = 0;
	t->bytes = 0;
	MemoryContextReset(t->batchcxt);
}

static void
pgrpl_target_close(PgrplTarget *t)
{
	pgrpl_target_flush(t);
	FreeBulkInsertState(t->bistate);
	t->bistate = NULL;
	ExecCloseIndices(t->rri);
	pgrpl_slot_set_put(t->set);
	t->set = NULL;
	t->slots = NULL;
	MemoryContextDelete(t->batchcxt);
	table_close(t->rel, NoLock);
}

static void
pgrpl_leaves_close(PgrplLeaves *l)
{
	pgrpl_target_close(&l->change);
	pgrpl_target_close(&l->txn);
	pfree(l);
}

/*
 * The leaves of partition "part", opened for this transaction if they are
 * not yet (closing the least recently used when too many are open).
 */
static PgrplLeaves *
pgrpl_writer_use_partition(int64 part)
{
	MemoryContext oldcxt;
	PgrplLeaves *l;

	if (writer.nleaves > 0 && writer.leaves[0]->part == part)
		return writer.leaves[0];
	for (int i = 1; i < writer.nleaves; i++)
	{
		if (writer.leaves[i]->part != part)
			continue;
		l = writer.leaves[i];
		memmove(&writer.leaves[1], &writer.leaves[0], sizeof(PgrplLeaves *) * i);
		writer.leaves[0] = l;
		return l;
	}

	oldcxt = MemoryContextSwitchTo(TopTransactionContext);
	if (writer.nleaves == PGRPL_MAX_OPEN_PARTS)
		pgrpl_leaves_close(writer.leaves[--writer.nleaves]);
	l = palloc0(sizeof(PgrplLeaves));
	l->part = part;
	pgrpl_target_open(&l->change, "change", part, CH_NATTS, 1);
	pgrpl_target_open(&l->txn, "transaction", part, TX_NATTS, 2);
	memmove(&writer.leaves[1], &writer.leaves[0], sizeof(PgrplLeaves *) * writer.nleaves);
	writer.leaves[0] = l;
	writer.nleaves++;

	/*
	 * Keep the next partition ready.  A reader's transaction keeps the
	 * partition list it first saw (it holds its locks on the parents, so it
	 * takes in no invalidations): created this early, a new partition is
	 * already in that list unless the reader stays open for a whole
	 * partition's worth of changes.
	 */
	if (part == PGRPL_PART_OF(next_txn_id) &&
		!OidIsValid(pgrpl_log_relid(psprintf("change_%d_" INT64_FORMAT,
											 writer_subid, part + 1))))
		pgrpl_create_partition(writer_subid, part + 1);
	MemoryContextSwitchTo(oldcxt);
	return l;
}

/* Open the change log for the current local transaction. */
void
pgrpl_writer_begin(int32 subid)
{
	MemoryContext oldcxt;

	Assert(IsTransactionState());
	Assert(subid == writer_subid && next_txn_id >= 0);
	if (writer.active)
		return;
	/* Lives exactly as long as the local transaction. */
	oldcxt = MemoryContextSwitchTo(TopTransactionContext);
	writer.estate = CreateExecutorState();
	writer.nleaves = 0;
	writer.active = true;
	MemoryContextSwitchTo(oldcxt);
}

/*
 * After an error: the aborted transaction has released the relations and
 * freed the memory, so only forget them.
 */
void
pgrpl_writer_reset(void)
{
	writer.active = false;
	writer.nleaves = 0;

	/*
	 * The slots of the targets that were open may still point to tuples of
	 * the aborted transaction's memory: drop every set.
	 */
	free_slot_sets = NULL;
	if (slot_cxt != NULL)
		MemoryContextReset(slot_cxt);
}

bool
pgrpl_writer_active(void)
{
	return writer.active;
}

/*
 * The values live in per-message memory: the batch keeps a copy, owned by
 * the slot so that table_multi_insert need not copy it again.
 */
static HeapTuple
pgrpl_target_form_tuple(PgrplTarget *t, Datum *values, bool *nulls)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(t->batchcxt);
	HeapTuple	tuple = heap_form_tuple(RelationGetDescr(t->rel), values, nulls);

	MemoryContextSwitchTo(oldcxt);
	return tuple;
}

/*
 * Buffer a row of t.  Its columns large_cols[] (nlarge of them, or none)
 * may hold large values the writer compresses itself (pgrpl_compress.c),
 * decided on the formed tuple: only one TOAST would work on is formed
 * again, a small row (nearly every one) costs no extra pass.
 */
static void
pgrpl_target_insert(PgrplTarget *t, Datum *values, bool *nulls,
					const int *large_cols, int nlarge)
{
	MemoryContext oldcxt;
	HeapTuple	tuple;
	TupleTableSlot *slot;

	/* Slots live in their set, for the session (see PgrplSlotSet). */
	if (t->slots[t->nbuffered] == NULL)
	{
		oldcxt = MemoryContextSwitchTo(slot_cxt);
		t->slots[t->nbuffered] = MakeTupleTableSlot(t->set->desc, &TTSOpsHeapTuple);
		MemoryContextSwitchTo(oldcxt);
	}
	slot = t->slots[t->nbuffered];

	tuple = pgrpl_target_form_tuple(t, values, nulls);
	if (nlarge > 0 && tuple->t_len > TOAST_TUPLE_THRESHOLD &&
		pgrpl_compress_row(t->rel, values, nulls, large_cols, nlarge,
						   tuple->t_data->t_hoff))
	{
		heap_freetuple(tuple);
		tuple = pgrpl_target_form_tuple(t, values, nulls);
	}
	ExecStoreHeapTuple(tuple, slot, true);
	t->nbuffered++;
	t->bytes += tuple->t_len;
	if (t->nbuffered >= batch_rows || t->bytes >= batch_bytes)
		pgrpl_target_flush(t);
}

static inline Datum
pgrpl_ptr_or_null(void *p, bool *isnull)
{
	*isnull = (p == NULL);
	return PointerGetDatum(p);
}

static inline Datum
pgrpl_text_or_null(const char *s, bool *isnull)
{
	*isnull = (s == NULL);
	return s ? CStringGetTextDatum(s) : (Datum) 0;
}

void
pgrpl_writer_insert_change(const PgrplChangeRow *row)
{
	Datum		values[CH_NATTS];
	bool		nulls[CH_NATTS];
	PgrplLeaves *leaves;

	Assert(writer.active);
	leaves = pgrpl_writer_use_partition(PGRPL_PART_OF(row->txn_id));
	memset(nulls, 0, sizeof(nulls));
	values[CH_SUB_ID] = Int32GetDatum(writer_subid);
	values[CH_SEQ] = Int32GetDatum(row->seq);
	values[CH_TXN_ID] = Int64GetDatum(row->txn_id);
	values[CH_LSN] = LSNGetDatum(row->lsn);
	values[CH_REL_ID] = Int32GetDatum(row->rel_id);
	nulls[CH_REL_ID] = (row->rel_id == 0);
	values[CH_OP] = CharGetDatum(row->op);
	values[CH_UNCHANGED] = pgrpl_ptr_or_null(row->unchanged, &nulls[CH_UNCHANGED]);
	values[CH_ROW_KEY] = pgrpl_ptr_or_null(row->row_key, &nulls[CH_ROW_KEY]);
	nulls[CH_KEY_HASH] = (row->row_key == NULL);
	if (row->row_key != NULL)
		values[CH_KEY_HASH] = Int64GetDatum(pgrpl_row_key_hash(row->row_key));
	values[CH_OLD_KEY] = pgrpl_ptr_or_null(row->old_key, &nulls[CH_OLD_KEY]);
	values[CH_OLD] = pgrpl_ptr_or_null(row->old, &nulls[CH_OLD]);
	values[CH_NEW] = pgrpl_ptr_or_null(row->new, &nulls[CH_NEW]);
	values[CH_MSG_PREFIX] = pgrpl_text_or_null(row->message_prefix,
											   &nulls[CH_MSG_PREFIX]);
	if (row->op == PGRPL_OP_MESSAGE)
	{
		bytea	   *content = palloc(VARHDRSZ + row->message_len);

		SET_VARSIZE(content, VARHDRSZ + row->message_len);
		memcpy(VARDATA(content), row->message_content, row->message_len);
		values[CH_MSG_CONTENT] = PointerGetDatum(content);
	}
	else
		nulls[CH_MSG_CONTENT] = true;

	pgrpl_target_insert(&leaves->change, values, nulls, change_large_cols,
						lengthof(change_large_cols));
	if (PGRPL_PART_OF(row->txn_id) == PGRPL_PART_OF(next_txn_id))
		part_changes++;
}

void
pgrpl_writer_insert_transaction(const PgrplTxnRow *row)
{
	Datum		values[TX_NATTS];
	bool		nulls[TX_NATTS];
	PgrplLeaves *leaves;

	Assert(writer.active);
	leaves = pgrpl_writer_use_partition(PGRPL_PART_OF(row->txn_id));
	memset(nulls, 0, sizeof(nulls));
	values[TX_SUB_ID] = Int32GetDatum(writer_subid);
	values[TX_CHANGES] = Int32GetDatum(row->changes);
	values[TX_TXN_ID] = Int64GetDatum(row->txn_id);
	values[TX_COMMIT_LSN] = LSNGetDatum(row->commit_lsn);
	nulls[TX_COMMIT_LSN] = XLogRecPtrIsInvalid(row->commit_lsn);
	values[TX_END_LSN] = LSNGetDatum(row->end_lsn);
	nulls[TX_END_LSN] = XLogRecPtrIsInvalid(row->end_lsn);
	values[TX_XID] = Int64GetDatum((int64) row->xid);
	nulls[TX_XID] = !row->has_xid;
	values[TX_COMMIT_TIME] = TimestampTzGetDatum(row->commit_time);
	nulls[TX_COMMIT_TIME] = (row->commit_time == 0);
	values[TX_ORIGIN_LSN] = LSNGetDatum(row->origin_lsn);
	nulls[TX_ORIGIN_LSN] = (row->origin == NULL);
	values[TX_STATE] = CharGetDatum(row->state);
	values[TX_ORIGIN] = pgrpl_text_or_null(row->origin, &nulls[TX_ORIGIN]);
	values[TX_GID] = pgrpl_text_or_null(row->gid, &nulls[TX_GID]);
	values[TX_PREPARE_LSN] = LSNGetDatum(row->prepare_lsn);
	nulls[TX_PREPARE_LSN] = (row->gid == NULL);
	values[TX_PREPARE_TIME] = TimestampTzGetDatum(row->prepare_time);
	nulls[TX_PREPARE_TIME] = (row->gid == NULL);

	pgrpl_target_insert(&leaves->txn, values, nulls, NULL, 0);
}

/*
 * Give the transaction row of a streamed transaction, written in state 'i'
 * at its first row, its final state: committed (commit position, time,
 * origin, number of changes) or aborted.  One row updated, however many
 * changes the transaction has.
 */
void
pgrpl_writer_finish_transaction(const PgrplTxnRow *row)
{
	PgrplLeaves *leaves;
	Oid			argtypes[12] = {INT8OID, CHAROID, LSNOID, LSNOID, TIMESTAMPTZOID,
	TEXTOID, LSNOID, INT4OID, INT8OID, TEXTOID, LSNOID, TIMESTAMPTZOID};
	Datum		args[12];
	char		nulls[12] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	char	   *sql;

	Assert(writer.active);
	leaves = pgrpl_writer_use_partition(PGRPL_PART_OF(row->txn_id));
	/* The row may still be in the batch. */
	pgrpl_target_flush(&leaves->txn);
	CommandCounterIncrement();

	args[0] = Int64GetDatum(row->txn_id);
	args[1] = CharGetDatum(row->state);
	args[2] = LSNGetDatum(row->commit_lsn);
	nulls[2] = XLogRecPtrIsInvalid(row->commit_lsn) ? 'n' : ' ';
	args[3] = LSNGetDatum(row->end_lsn);
	nulls[3] = XLogRecPtrIsInvalid(row->end_lsn) ? 'n' : ' ';
	args[4] = TimestampTzGetDatum(row->commit_time);
	nulls[4] = (row->commit_time == 0) ? 'n' : ' ';
	args[5] = row->origin ? CStringGetTextDatum(row->origin) : (Datum) 0;
	nulls[5] = row->origin ? ' ' : 'n';
	args[6] = LSNGetDatum(row->origin_lsn);
	nulls[6] = row->origin ? ' ' : 'n';
	args[7] = Int32GetDatum(row->changes);
	args[8] = Int64GetDatum((int64) row->xid);
	/* A streamed transaction that was prepared (STREAM PREPARE). */
	args[9] = row->gid ? CStringGetTextDatum(row->gid) : (Datum) 0;
	nulls[9] = row->gid ? ' ' : 'n';
	args[10] = LSNGetDatum(row->prepare_lsn);
	nulls[10] = row->gid ? ' ' : 'n';
	args[11] = TimestampTzGetDatum(row->prepare_time);
	nulls[11] = row->gid ? ' ' : 'n';
	sql = psprintf("UPDATE pgrpl.%s SET state = $2, commit_lsn = $3, end_lsn = $4,"
				   " commit_time = $5, origin = $6, origin_lsn = $7, changes = $8,"
				   " gid = $10, prepare_lsn = $11, prepare_time = $12"
				   " WHERE txn_id OPERATOR(pg_catalog.=) $1 AND xid OPERATOR(pg_catalog.=) $9"
				   " AND state OPERATOR(pg_catalog.=) 'i'",
				   quote_identifier(RelationGetRelationName(leaves->txn.rel)));
	SPI_connect();
	if (SPI_execute_with_args(sql, 12, argtypes, args, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update pgrpl.transaction");
	if (SPI_processed != 1)
		elog(ERROR, "transaction row " INT64_FORMAT " of a streamed transaction is missing",
			 row->txn_id);
	SPI_finish();
}

/*
 * COMMIT PREPARED (row->state 'c': commit_lsn, end_lsn, commit_time) or
 * ROLLBACK PREPARED ('a': the changes are removed) of the prepared
 * transaction row->gid, row->xid.  It is found through the parent table
 * and the index of prepared transactions: its txn_id is known only to the
 * session that received its PREPARE, and this is rare enough for SQL.
 * False when there is none: its PREPARE was empty, filtered or before the
 * slot decoded at PREPARE, or it was finished already.
 */
bool
pgrpl_writer_finish_prepared(const PgrplTxnRow *row)
{
	Oid			argtypes[7] = {INT4OID, TEXTOID, INT8OID, CHAROID, LSNOID, LSNOID,
	TIMESTAMPTZOID};
	Datum		args[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	int64		txn_id = -1;
	bool		found;

	Assert(writer.active);
	Assert(row->gid != NULL);
	/* The prepared row may still be in a batch of this transaction. */
	for (int i = 0; i < writer.nleaves; i++)
	{
		pgrpl_target_flush(&writer.leaves[i]->txn);
		pgrpl_target_flush(&writer.leaves[i]->change);
	}
	CommandCounterIncrement();

	args[0] = Int32GetDatum(writer_subid);
	args[1] = CStringGetTextDatum(row->gid);
	args[2] = Int64GetDatum((int64) row->xid);
	args[3] = CharGetDatum(row->state);
	args[4] = LSNGetDatum(row->commit_lsn);
	nulls[4] = XLogRecPtrIsInvalid(row->commit_lsn) ? 'n' : ' ';
	args[5] = LSNGetDatum(row->end_lsn);
	nulls[5] = XLogRecPtrIsInvalid(row->end_lsn) ? 'n' : ' ';
	args[6] = TimestampTzGetDatum(row->commit_time);
	nulls[6] = (row->commit_time == 0) ? 'n' : ' ';

	SPI_connect();
	if (SPI_execute_with_args("UPDATE pgrpl.transaction t SET state = $4,"
							  " commit_lsn = $5, end_lsn = COALESCE($6, t.end_lsn), commit_time = $7"
							  " WHERE t.sub_id OPERATOR(pg_catalog.=) $1 AND t.state OPERATOR(pg_catalog.=) 'p'"
							  "   AND t.gid OPERATOR(pg_catalog.=) $2 AND t.xid OPERATOR(pg_catalog.=) $3"
							  " RETURNING t.txn_id",
							  7, argtypes, args, nulls, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "could not update pgrpl.transaction");
	if (SPI_processed > 1)
		elog(ERROR, "prepared transaction \"%s\" is in the change log more than once",
			 row->gid);
	found = (SPI_processed == 1);
	if (found)
	{
		bool		isnull;

		txn_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_finish();
	CommandCounterIncrement();
	if (found && row->state == PGRPL_TXN_ABORTED)
		pgrpl_writer_discard_changes(txn_id, 1);
	return found;
}

/* Whether the log holds the prepared transaction gid, xid (state 'p'). */
bool
pgrpl_writer_prepared_known(const char *gid, TransactionId xid)
{
	Oid			argtypes[3] = {INT4OID, TEXTOID, INT8OID};
	Datum		args[3];
	int64		found = 0;

	Assert(writer.active);
	for (int i = 0; i < writer.nleaves; i++)
		pgrpl_target_flush(&writer.leaves[i]->txn);
	CommandCounterIncrement();
	args[0] = Int32GetDatum(writer_subid);
	args[1] = CStringGetTextDatum(gid);
	args[2] = Int64GetDatum((int64) xid);
	(void) pgrpl_spi_int8("SELECT 1 FROM pgrpl.transaction t"
						  " WHERE t.sub_id OPERATOR(pg_catalog.=) $1 AND t.state OPERATOR(pg_catalog.=) 'p'"
						  "   AND t.gid OPERATOR(pg_catalog.=) $2 AND t.xid OPERATOR(pg_catalog.=) $3",
						  3, argtypes, args, &found);
	return found == 1;
}

/*
 * Write every buffered row, so that SQL in this transaction sees all that
 * was captured so far (a snapshot chunk checks the log for newer changes).
 */
void
pgrpl_writer_flush(void)
{
	if (!writer.active)
		return;
	for (int i = 0; i < writer.nleaves; i++)
	{
		pgrpl_target_flush(&writer.leaves[i]->change);
		pgrpl_target_flush(&writer.leaves[i]->txn);
	}
	CommandCounterIncrement();
}

/*
 * Remove the changes of txn_id from seq from_seq on: an aborted streamed
 * transaction (from 1) or subtransaction.  Costs as many rows as it removes;
 * VACUUM reclaims their space.
 */
void
pgrpl_writer_discard_changes(int64 txn_id, int32 from_seq)
{
	PgrplLeaves *leaves;
	Oid			argtypes[2] = {INT8OID, INT4OID};
	Datum		args[2] = {Int64GetDatum(txn_id), Int32GetDatum(from_seq)};
	char	   *sql;

	Assert(writer.active);
	leaves = pgrpl_writer_use_partition(PGRPL_PART_OF(txn_id));
	pgrpl_target_flush(&leaves->change);
	CommandCounterIncrement();
	sql = psprintf("DELETE FROM pgrpl.%s WHERE txn_id OPERATOR(pg_catalog.=) $1"
				   " AND seq OPERATOR(pg_catalog.>=) $2",
				   quote_identifier(RelationGetRelationName(leaves->change.rel)));
	SPI_connect();
	if (SPI_execute_with_args(sql, 2, argtypes, args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not delete from pgrpl.change");
	SPI_finish();
	CommandCounterIncrement();
}

/*
 * At the start of a session: streamed transactions an earlier session was
 * receiving (state 'i') will be streamed again from their start, so what
 * was written of them goes.  Needs a transaction with a snapshot and no
 * open writer.
 */
void
pgrpl_writer_abort_in_progress(void)
{
	Oid			argtypes[1] = {INT4OID};
	Datum		args[1] = {Int32GetDatum(writer_subid)};
	int64		removed = 0;

	Assert(!writer.active);
	if (pgrpl_spi_int8("WITH t AS (UPDATE pgrpl.transaction t SET state = 'a'"
					   "  WHERE t.sub_id OPERATOR(pg_catalog.=) $1 AND t.commit_lsn IS NULL"
					   "    AND t.state OPERATOR(pg_catalog.=) 'i' RETURNING t.txn_id),"
					   " d AS (DELETE FROM pgrpl.change c USING t"
					   "  WHERE c.sub_id OPERATOR(pg_catalog.=) $1 AND c.txn_id OPERATOR(pg_catalog.=) t.txn_id"
					   "  RETURNING 1)"
					   " SELECT pg_catalog.count(*) FROM d",
					   1, argtypes, args, &removed) && removed > 0)
		ereport(LOG,
				(errmsg("pgrpl removed " INT64_FORMAT " changes of streamed transactions that did not finish",
						removed),
				 errdetail("The primary streams them again from their start.")));
}

/* Close the change log before the caller commits. */
void
pgrpl_writer_end(void)
{
	if (!writer.active)
		return;
	while (writer.nleaves > 0)
		pgrpl_leaves_close(writer.leaves[--writer.nleaves]);
	FreeExecutorState(writer.estate);
	writer.active = false;
}

/* ---------------------------------------------------------------------
 * The relation dictionary
 * --------------------------------------------------------------------- */

static ArrayType *
pgrpl_text_array(const char **items, const bool *filter, int n)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	int			count = 0;

	for (int i = 0; i < n; i++)
		if (filter == NULL || filter[i])
			elems[count++] = CStringGetTextDatum(items[i]);
	return construct_array(elems, count, TEXTOID, -1, false, TYPALIGN_INT);
}

/*
 * The rel_id of a relation version: the subscription's latest version of
 * that remote relation if it is described the same, else a new version
 * (a column added or dropped, another key, a rename).  Runs in the local
 * transaction that writes the first change of it, so a version exists only
 * if a change refers to it.
 */
int32
pgrpl_writer_relation_id(const PgrplRelationDesc *d)
{
	Oid			argtypes[9] = {INT4OID, OIDOID, TEXTOID, TEXTOID, CHAROID,
	TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, LSNOID};
	Datum		args[9];
	char		replident[2] = {d->replident, '\0'};
	int64		rel_id;

	args[0] = Int32GetDatum(writer_subid);
	args[1] = ObjectIdGetDatum(d->remote_oid);
	args[2] = CStringGetTextDatum(d->schema_name);
	args[3] = CStringGetTextDatum(d->table_name);
	args[4] = CharGetDatum(replident[0]);
	args[5] = PointerGetDatum(pgrpl_text_array(d->names, NULL, d->natts));
	args[6] = PointerGetDatum(pgrpl_text_array(d->types, NULL, d->natts));
	args[7] = PointerGetDatum(pgrpl_text_array(d->names, d->is_key, d->natts));
	args[8] = LSNGetDatum(d->first_lsn);

	if (pgrpl_spi_int8("SELECT r.rel_id FROM pgrpl.relation r"
					   " WHERE r.sub_id OPERATOR(pg_catalog.=) $1 AND r.remote_oid OPERATOR(pg_catalog.=) $2"
					   "   AND r.rel_id OPERATOR(pg_catalog.=) (SELECT pg_catalog.max(l.rel_id) FROM pgrpl.relation l"
					   "        WHERE l.sub_id OPERATOR(pg_catalog.=) $1 AND l.remote_oid OPERATOR(pg_catalog.=) $2)"
					   "   AND r.schema_name OPERATOR(pg_catalog.=) $3 AND r.table_name OPERATOR(pg_catalog.=) $4"
					   "   AND r.replica_identity OPERATOR(pg_catalog.=) $5"
					   "   AND r.columns OPERATOR(pg_catalog.=) $6 AND r.column_types OPERATOR(pg_catalog.=) $7"
					   "   AND r.key_columns OPERATOR(pg_catalog.=) $8",
					   8, argtypes, args, &rel_id))
		return (int32) rel_id;
	if (!pgrpl_spi_int8("INSERT INTO pgrpl.relation (sub_id, remote_oid, schema_name, table_name,"
						" replica_identity, columns, column_types, key_columns, first_lsn)"
						" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING rel_id",
						9, argtypes, args, &rel_id))
		elog(ERROR, "could not add a relation version to pgrpl.relation");
	return (int32) rel_id;
}
