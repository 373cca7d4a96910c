/*-------------------------------------------------------------------------
 * pgrpl_catalog.c
 *		Read and write pgrpl.subscription; apply worker changes at commit.
 *
 * Catalog access is rare (SQL API calls, worker start), so it uses SPI
 * with schema-qualified statements.  Changes to shared memory that must
 * only happen if the SQL call commits are queued and applied from a
 * transaction callback, as the built-in launcher does; the queue follows
 * subtransactions.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"

#include "pgrpl_catalog.h"
#include "pgrpl_shmem.h"

/*
 * Columns added after 1.0 are read through to_jsonb(), so that a library
 * newer than the installed schema still reads the subscription (and then
 * reports the version mismatch itself) instead of failing on a column.
 */
#define SUB_COLUMNS "s.sub_id, s.sub_name, s.enabled, s.conninfo, s.publications, s.slot_name, " \
	"s.stop_lsn, s.system_identifier, s.start_lsn, " \
	"COALESCE((pg_catalog.to_jsonb(s) OPERATOR(pg_catalog.->>) 'streaming')::pg_catalog.bool, true), " \
	"COALESCE((pg_catalog.to_jsonb(s) OPERATOR(pg_catalog.->>) 'two_phase')::pg_catalog.bool, false), " \
	"COALESCE(pg_catalog.to_jsonb(s) OPERATOR(pg_catalog.->>) 'origin', 'any') OPERATOR(pg_catalog.=) 'none', " \
	"COALESCE((pg_catalog.to_jsonb(s) OPERATOR(pg_catalog.->>) 'failover')::pg_catalog.bool, false)"

static char *
pgrpl_spi_text(HeapTuple tup, TupleDesc desc, int col)
{
	char	   *v = SPI_getvalue(tup, desc, col);

	return v;
}

static PgrplSubscription *
pgrpl_subscription_from_tuple(HeapTuple tup, TupleDesc desc, MemoryContext cxt)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(cxt);
	PgrplSubscription *sub = palloc0(sizeof(PgrplSubscription));
	bool		isnull;
	Datum		d;
	Datum	   *elems;
	int			nelems;

	sub->id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
	sub->name = pgrpl_spi_text(tup, desc, 2);
	sub->enabled = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
	sub->conninfo = pgrpl_spi_text(tup, desc, 4);
	d = SPI_getbinval(tup, desc, 5, &isnull);
	deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, NULL, &nelems);
	for (int i = 0; i < nelems; i++)
		sub->publications = lappend(sub->publications,
									makeString(TextDatumGetCString(elems[i])));
	sub->slot_name = pgrpl_spi_text(tup, desc, 6);
	d = SPI_getbinval(tup, desc, 7, &isnull);
	sub->stop_lsn = isnull ? InvalidXLogRecPtr : DatumGetLSN(d);
	sub->system_identifier = pgrpl_spi_text(tup, desc, 8);
	sub->start_lsn = DatumGetLSN(SPI_getbinval(tup, desc, 9, &isnull));
	sub->streaming = DatumGetBool(SPI_getbinval(tup, desc, 10, &isnull));
	sub->two_phase = DatumGetBool(SPI_getbinval(tup, desc, 11, &isnull));
	sub->origin_none = DatumGetBool(SPI_getbinval(tup, desc, 12, &isnull));
	sub->failover = DatumGetBool(SPI_getbinval(tup, desc, 13, &isnull));
	MemoryContextSwitchTo(oldcxt);
	return sub;
}

static PgrplSubscription *
pgrpl_subscription_fetch(const char *where, Oid argtype, Datum arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	PgrplSubscription *sub = NULL;
	char	   *sql;

	sql = psprintf("SELECT " SUB_COLUMNS " FROM pgrpl.subscription s WHERE %s", where);
	SPI_connect();
	if (SPI_execute_with_args(sql, 1, &argtype, &arg, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read pgrpl.subscription");
	if (SPI_processed > 0)
		sub = pgrpl_subscription_from_tuple(SPI_tuptable->vals[0],
											SPI_tuptable->tupdesc, cxt);
	SPI_finish();
	return sub;
}

PgrplSubscription *
pgrpl_subscription_get(const char *name, bool missing_ok)
{
	PgrplSubscription *sub;

	sub = pgrpl_subscription_fetch("sub_name OPERATOR(pg_catalog.=) $1", TEXTOID,
								   CStringGetTextDatum(name));
	if (sub == NULL && !missing_ok)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("pgrpl subscription \"%s\" does not exist", name)));
	return sub;
}

/* NULL if it is gone (dropped while its worker ran). */
PgrplSubscription *
pgrpl_subscription_get_by_id(int32 id)
{
	return pgrpl_subscription_fetch("sub_id OPERATOR(pg_catalog.=) $1", INT4OID,
									Int32GetDatum(id));
}

List *
pgrpl_subscription_enabled_ids(void)
{
	List	   *ids = NIL;
	MemoryContext cxt = CurrentMemoryContext;

	SPI_connect();
	if (SPI_execute("SELECT sub_id FROM pgrpl.subscription WHERE enabled", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read pgrpl.subscription");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
		MemoryContext oldcxt = MemoryContextSwitchTo(cxt);

		ids = lappend_int(ids, DatumGetInt32(d));
		MemoryContextSwitchTo(oldcxt);
	}
	SPI_finish();
	return ids;
}

static Datum
pgrpl_publications_datum(List *publications)
{
	Datum	   *elems = palloc(sizeof(Datum) * list_length(publications));
	ListCell   *lc;

	foreach(lc, publications)
		elems[foreach_current_index(lc)] = CStringGetTextDatum(strVal(lfirst(lc)));
	return PointerGetDatum(construct_array(elems, list_length(publications),
										   TEXTOID, -1, false, TYPALIGN_INT));
}

static void
pgrpl_subscription_values(PgrplSubscription *sub, Datum *values, char *nulls)
{
	values[0] = CStringGetTextDatum(sub->name);
	values[1] = BoolGetDatum(sub->enabled);
	values[2] = CStringGetTextDatum(sub->conninfo);
	values[3] = pgrpl_publications_datum(sub->publications);
	values[4] = CStringGetTextDatum(sub->slot_name);
	values[5] = LSNGetDatum(sub->stop_lsn);
	nulls[5] = XLogRecPtrIsInvalid(sub->stop_lsn) ? 'n' : ' ';
	values[6] = CStringGetTextDatum(sub->system_identifier);
	values[7] = LSNGetDatum(sub->start_lsn);
	values[8] = Int32GetDatum(sub->id);
}

static const Oid sub_argtypes[9] = {TEXTOID, BOOLOID, TEXTOID, TEXTARRAYOID,
TEXTOID, PG_LSNOID, TEXTOID, PG_LSNOID, INT4OID};

int32
pgrpl_subscription_insert(PgrplSubscription *sub)
{
	Datum		values[9];
	char		nulls[9];
	bool		isnull;

	memset(nulls, ' ', sizeof(nulls));
	pgrpl_subscription_values(sub, values, nulls);
	SPI_connect();
	if (SPI_execute_with_args("INSERT INTO pgrpl.subscription (sub_name, enabled, conninfo,"
							  " publications, slot_name, stop_lsn, system_identifier, start_lsn)"
							  " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING sub_id",
							  8, (Oid *) sub_argtypes, values, nulls, false, 1) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not insert into pgrpl.subscription");
	sub->id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	return sub->id;
}

void
pgrpl_subscription_update(PgrplSubscription *sub)
{
	Datum		values[9];
	char		nulls[9];

	memset(nulls, ' ', sizeof(nulls));
	pgrpl_subscription_values(sub, values, nulls);
	SPI_connect();
	if (SPI_execute_with_args("UPDATE pgrpl.subscription SET sub_name = $1, enabled = $2,"
							  " conninfo = $3, publications = $4, slot_name = $5, stop_lsn = $6,"
							  " system_identifier = $7, start_lsn = $8 WHERE sub_id = $9",
							  9, (Oid *) sub_argtypes, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update pgrpl.subscription");
	SPI_finish();
}

/*
 * Set one of the columns added after 1.0 (streaming, two_phase, retention,
 * origin, failover), which pgrpl_subscription_update() leaves alone so
 * that it also works on a schema older than the library.  "column" is
 * one of those names, never user input; the table's CHECK constraints
 * have the last word on the value.
 */
void
pgrpl_subscription_set_option(int32 id, const char *column, Oid type,
							  Datum value, bool isnull)
{
	Oid			argtypes[2] = {INT4OID, type};
	Datum		args[2] = {Int32GetDatum(id), value};
	char		nulls[2] = {' ', isnull ? 'n' : ' '};
	char	   *sql;

	sql = psprintf("UPDATE pgrpl.subscription SET %s = $2 WHERE sub_id = $1",
				   quote_identifier(column));
	SPI_connect();
	if (SPI_execute_with_args(sql, 2, argtypes, args, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update pgrpl.subscription");
	SPI_finish();
	pfree(sql);
}

/* Drops the captured data too: the subscription's tables, not row by row. */
void
pgrpl_subscription_delete(int32 id)
{
	Oid			argtype = INT4OID;
	Datum		arg = Int32GetDatum(id);

	SPI_connect();
	if (SPI_execute_with_args("SELECT pgrpl.drop_log($1)",
							  1, &argtype, &arg, NULL, false, 0) != SPI_OK_SELECT ||
		SPI_execute_with_args("DELETE FROM pgrpl.subscription WHERE sub_id = $1",
							  1, &argtype, &arg, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not delete from pgrpl.subscription");
	SPI_finish();
}

/* ---- worker actions applied at end of transaction ---- */

/*
 * An action queued by a SQL call, applied when the top-level transaction
 * ends.  on_commit is what the call means for the worker.  on_abort undoes
 * what the call did to shared memory before commit (drop_subscription stops
 * the worker at once).
 *
 * The queue follows subtransactions, as the built-in launcher's list of
 * workers to stop at commit once did (AtEOSubXact_ApplyLauncher): an action
 * belongs to the nesting level that queued it.  A subtransaction that
 * commits hands its actions to its parent.  One that aborts drops the
 * actions with nothing to undo; the others must undo however the top-level
 * transaction ends, so their on_abort becomes their on_commit as well.
 */
typedef struct PgrplPendingAction
{
	Oid			dboid;
	int32		subid;
	int			nest_level;		/* GetCurrentTransactionNestLevel() */
	PgrplWorkerAction on_commit;
	PgrplWorkerAction on_abort;
} PgrplPendingAction;

/* In the order queued, which is the order they are applied in. */
static List *pending_actions = NIL;
static bool xact_callback_registered = false;

static void
pgrpl_apply_action(Oid dboid, int32 subid, PgrplWorkerAction action)
{
	switch (action)
	{
		case PGRPL_ACTION_NONE:
			break;
		case PGRPL_ACTION_START:
			pgrpl_slot_set_wanted(dboid, subid, true);
			break;
		case PGRPL_ACTION_STOP:
			pgrpl_slot_request_stop(dboid, subid);
			break;
		case PGRPL_ACTION_RESTART:
			pgrpl_slot_request_restart(dboid, subid);
			break;
		case PGRPL_ACTION_FORGET:
			pgrpl_slot_release(dboid, subid);
			break;
	}
}

static void
pgrpl_xact_callback(XactEvent event, void *arg)
{
	ListCell   *lc;
	bool		commit;

	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:

			/*
			 * The queue is this backend's: COMMIT PREPARED, maybe in another
			 * session, could not apply it.  As PrepareTransaction does for
			 * the built-in workers; the abort that follows applies on_abort.
			 */
			if (pending_actions != NIL)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that has manipulated pgrpl workers"),
						 errdetail("Workers are started, stopped and restarted when the transaction that called a pgrpl management function commits, and COMMIT PREPARED cannot do that."),
						 errhint("Call pgrpl management functions in a transaction that is not prepared.")));
			return;
		case XACT_EVENT_PREPARE:
			Assert(pending_actions == NIL);
			return;
		case XACT_EVENT_COMMIT:
			commit = true;
			break;
		case XACT_EVENT_ABORT:
			commit = false;
			break;
		default:
			return;
	}

	foreach(lc, pending_actions)
	{
		PgrplPendingAction *a = lfirst(lc);

		pgrpl_apply_action(a->dboid, a->subid, commit ? a->on_commit : a->on_abort);
	}
	list_free_deep(pending_actions);
	pending_actions = NIL;
}

/* Runs while the ending subtransaction is still the current one. */
static void
pgrpl_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	int			level = GetCurrentTransactionNestLevel();
	ListCell   *lc;

	if (event != SUBXACT_EVENT_COMMIT_SUB && event != SUBXACT_EVENT_ABORT_SUB)
		return;

	foreach(lc, pending_actions)
	{
		PgrplPendingAction *a = lfirst(lc);

		if (a->nest_level < level)
			continue;
		if (event == SUBXACT_EVENT_ABORT_SUB)
		{
			if (a->on_abort == PGRPL_ACTION_NONE)
			{
				pending_actions = foreach_delete_current(pending_actions, lc);
				pfree(a);
				continue;
			}
			a->on_commit = a->on_abort;
		}
		a->nest_level = level - 1;
	}
}

void
pgrpl_at_end_of_xact(int32 subid, PgrplWorkerAction on_commit,
					 PgrplWorkerAction on_abort)
{
	MemoryContext oldcxt;
	PgrplPendingAction *a;

	if (!xact_callback_registered)
	{
		RegisterXactCallback(pgrpl_xact_callback, NULL);
		RegisterSubXactCallback(pgrpl_subxact_callback, NULL);
		xact_callback_registered = true;
	}
	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	a = palloc(sizeof(PgrplPendingAction));
	a->dboid = MyDatabaseId;
	a->subid = subid;
	a->nest_level = GetCurrentTransactionNestLevel();
	a->on_commit = on_commit;
	a->on_abort = on_abort;
	pending_actions = lappend(pending_actions, a);
	MemoryContextSwitchTo(oldcxt);
}
