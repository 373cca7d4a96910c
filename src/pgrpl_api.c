/*-------------------------------------------------------------------------
 * pgrpl_api.c
 *		SQL-callable functions: manage subscriptions, wait, report.
 *
 * Thin by design: argument checks and privilege checks here, the work in
 * pgrpl_catalog.c (rows), pgrpl_stream.c (the primary) and pgrpl_shmem.c
 * (workers).  Everything that opens a connection is superuser-only, checked
 * here as well as by the REVOKEs of the install script.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "replication/origin.h"
#include "replication/slot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

#include "pgrpl.h"
#include "pgrpl_catalog.h"
#include "pgrpl_shmem.h"
#include "pgrpl_snapshot.h"
#include "pgrpl_stream.h"
#include "pgrpl_writer.h"

PG_FUNCTION_INFO_V1(pgrpl_check_preloaded);
PG_FUNCTION_INFO_V1(pgrpl_create_subscription);
PG_FUNCTION_INFO_V1(pgrpl_drop_subscription);
PG_FUNCTION_INFO_V1(pgrpl_enable_subscription);
PG_FUNCTION_INFO_V1(pgrpl_disable_subscription);
PG_FUNCTION_INFO_V1(pgrpl_alter_subscription);
PG_FUNCTION_INFO_V1(pgrpl_set_stop_lsn);
PG_FUNCTION_INFO_V1(pgrpl_set_retention);
PG_FUNCTION_INFO_V1(pgrpl_snapshot_table);
PG_FUNCTION_INFO_V1(pgrpl_refresh_subscription);
PG_FUNCTION_INFO_V1(pgrpl_wait_for_lsn);
PG_FUNCTION_INFO_V1(pgrpl_mask_conninfo);
PG_FUNCTION_INFO_V1(pgrpl_worker_status);

static void
pgrpl_require_superuser(const char *what)
{
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to %s", what),
				 errdetail("Only superusers can manage pgrpl subscriptions.")));
	pgrpl_shmem_check();
}

/*
 * A statement that passes a conninfo may hold a password in its text.
 * While such a function runs, every message it raises is logged without
 * the STATEMENT and CONTEXT lines that would quote that text (the client
 * still gets them).  Push before anything can fail, pop before returning.
 */
static void
pgrpl_hide_statement_callback(void *arg)
{
	errhidestmt(true);
	errhidecontext(true);
}

static void
pgrpl_hide_statement(ErrorContextCallback *cb)
{
	cb->callback = pgrpl_hide_statement_callback;
	cb->arg = NULL;
	cb->previous = error_context_stack;
	error_context_stack = cb;
}

static char *
pgrpl_arg_text(FunctionCallInfo fcinfo, int n, const char *argname)
{
	if (PG_ARGISNULL(n))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", argname)));
	return text_to_cstring(PG_GETARG_TEXT_PP(n));
}

static void
pgrpl_check_name(const char *kind, const char *name)
{
	if (name[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("%s name must not be empty", kind)));
	if (strlen(name) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("%s name \"%s\" is too long", kind, name),
				 errdetail("The maximum length is %d bytes.", NAMEDATALEN - 1)));
}

/* text[] of publication names to a List of String, validated. */
static List *
pgrpl_publication_list(ArrayType *arr)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	List	   *pubs = NIL;

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("publications must be a one-dimensional array")));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("at least one publication is required")));
	for (int i = 0; i < n; i++)
	{
		char	   *name;
		ListCell   *lc;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("publication names must not be null")));
		name = TextDatumGetCString(elems[i]);
		pgrpl_check_name("publication", name);
		foreach(lc, pubs)
			if (strcmp(strVal(lfirst(lc)), name) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_DUPLICATE_OBJECT),
						 errmsg("publication name \"%s\" used more than once", name)));
		pubs = lappend(pubs, makeString(name));
	}
	return pubs;
}

static void
pgrpl_require_free_slot(void)
{
	if (!pgrpl_slot_any_free())
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many enabled pgrpl subscriptions"),
				 errdetail("Every one of the %d worker slots is in use.", pgrpl_slot_count()),
				 errhint("You might need to increase \"pgrpl.max_workers\".")));
}

Datum
pgrpl_check_preloaded(PG_FUNCTION_ARGS)
{
	if (!pgrpl_preloaded)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pgrpl must be loaded via \"shared_preload_libraries\""),
				 errhint("Add pgrpl to \"shared_preload_libraries\" in postgresql.conf and restart the server.")));
	pgrpl_shmem_check();
	PG_RETURN_VOID();
}

/*
 * Find where capture starts: create the slot, or read the confirmed
 * position of an existing one.  On a loopback primary, creating a slot
 * waits for every transaction holding an xid to end -- ours included.
 */
static XLogRecPtr
pgrpl_prepare_slot(WalReceiverConn *conn, const char *slot, bool create_slot,
				   bool loopback)
{
	XLogRecPtr	lsn = InvalidXLogRecPtr;
	bool		exists = pgrpl_remote_slot_exists(conn, slot, &lsn);

	if (!create_slot)
	{
		if (!exists)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("replication slot \"%s\" does not exist on the primary", slot),
					 errhint("Omit create_slot => false to have pgrpl create it.")));
		return lsn;
	}
	if (exists)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("replication slot \"%s\" already exists on the primary", slot),
				 errhint("Pass create_slot => false to use it, or choose another slot_name.")));
	if (loopback && TransactionIdIsValid(GetTopTransactionIdIfAny()))
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("cannot create a replication slot on this server in a transaction that has written data"),
				 errdetail("Creating the slot waits for all writing transactions to end, including this one."),
				 errhint("Call pgrpl.create_subscription in a transaction of its own.")));
	return pgrpl_create_remote_slot(conn, slot);
}

/* origin => 'any' | 'none', as the built-in subscription's option. */
static bool
pgrpl_origin_none_arg(FunctionCallInfo fcinfo, int n)
{
	char	   *origin = text_to_cstring(PG_GETARG_TEXT_PP(n));

	if (pg_strcasecmp(origin, "none") == 0)
		return true;
	if (pg_strcasecmp(origin, "any") == 0)
		return false;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unrecognized origin value: \"%s\"", origin),
			 errhint("Use \"any\" to capture every transaction, or \"none\" for only those without a replication origin.")));
	return false;				/* keep the compiler quiet */
}

/* A retention must be a positive interval. */
static Interval *
pgrpl_retention_arg(FunctionCallInfo fcinfo, int n)
{
	Interval   *retention;
	Interval	zero = {0};

	if (PG_ARGISNULL(n))
		return NULL;
	retention = PG_GETARG_INTERVAL_P(n);
	if (!DatumGetBool(DirectFunctionCall2(interval_gt, IntervalPGetDatum(retention),
										  IntervalPGetDatum(&zero))))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("retention must be a positive interval"),
				 errhint("Pass NULL to keep changes forever.")));
	return retention;
}

static void pgrpl_drop_slot_or_warn(PgrplSubscription *sub);

/* What create_subscription learns from the primary before any local write. */
typedef struct PgrplRemoteSetup
{
	XLogRecPtr	start_lsn;
	List	   *tables;			/* PgrplTableName of the published tables */
} PgrplRemoteSetup;

/*
 * The part of create_subscription that talks to the primary: checks, the
 * published tables, the slot.  *slot_created is set as soon as the slot
 * exists, before anything else can fail.
 */
static void
pgrpl_setup_remote(PgrplSubscription *sub, bool create_slot, bool failover_given,
				   bool list_tables, bool copy_data, PgrplRemoteSetup *out,
				   volatile bool *slot_created)
{
	WalReceiverConn *conn;
	char		local_sysid[32];
	bool		loopback;

	conn = pgrpl_stream_connect(sub->conninfo, sub->name);
	/* Close the connection on error too, or its walsender lingers. */
	PG_TRY();
	{
		sub->system_identifier = pgrpl_stream_identify(conn);
		snprintf(local_sysid, sizeof(local_sysid), UINT64_FORMAT, GetSystemIdentifier());
		loopback = strcmp(sub->system_identifier, local_sysid) == 0;
		pgrpl_check_publications(conn, sub->publications);
		if (sub->failover)
			pgrpl_check_failover_supported(conn);
		if (copy_data)
			pgrpl_snapshot_check_primary(conn);
		/* Read before the slot exists: what is there now gets copied. */
		if (list_tables)
			out->tables = pgrpl_published_tables(conn, sub->publications, loopback);
		out->start_lsn = pgrpl_prepare_slot(conn, sub->slot_name, create_slot, loopback);
		*slot_created = create_slot;
		/* Not given: a slot of ours is none, an existing one stays as it is. */
		if (!failover_given && !create_slot)
			sub->failover = pgrpl_remote_slot_failover(conn, sub->slot_name);
		/* A slot is created without it (PG15's walrcv_create_slot has no such option). */
		pgrpl_sync_slot_failover(conn, sub->slot_name, sub->failover);
	}
	PG_FINALLY();
	{
		walrcv_disconnect(conn);
	}
	PG_END_TRY();
}

/*
 * create_subscription failed after it created the slot (in a later check on
 * the primary, or while writing the catalogs): drop the slot again, or the
 * primary keeps WAL for a slot nobody reads, and a retry is told the slot
 * already exists.  Called from PG_CATCH: rethrows the error being handled
 * (a failure to drop becomes a WARNING first).  Only libpq work happens
 * here, nothing that needs the failed transaction.
 */
static void
pgrpl_undo_new_slot(PgrplSubscription *sub, MemoryContext cxt)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	PG_TRY();
	{
		pgrpl_drop_slot_or_warn(sub);
	}
	PG_CATCH();
	{
		ErrorData  *dropfail;

		MemoryContextSwitchTo(cxt);
		dropfail = CopyErrorData();
		FlushErrorState();
		ereport(WARNING,
				(errcode(dropfail->sqlerrcode),
				 errmsg("could not drop replication slot \"%s\" created by the failed pgrpl.create_subscription", sub->slot_name),
				 errdetail("%s", dropfail->message),
				 errhint("Drop the slot on the primary by hand with SELECT pg_drop_replication_slot('%s');",
						 sub->slot_name)));
	}
	PG_END_TRY();
	ReThrowError(edata);
}

Datum
pgrpl_create_subscription(PG_FUNCTION_ARGS)
{
	PgrplSubscription sub = {0};
	bool		create_slot;
	PgrplRemoteSetup remote = {0};
	volatile bool slot_created = false;
	MemoryContext fncxt = CurrentMemoryContext;
	char		origin[NAMEDATALEN];
	Interval   *retention;
	bool		failover_given;
	bool		copy_data;
	ListCell   *lc;
	ErrorContextCallback hide;

	pgrpl_hide_statement(&hide);
	pgrpl_require_superuser("create a pgrpl subscription");
	sub.name = pgrpl_arg_text(fcinfo, 0, "name");
	sub.conninfo = pgrpl_arg_text(fcinfo, 1, "conninfo");
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("publications must not be null")));
	sub.publications = pgrpl_publication_list(PG_GETARG_ARRAYTYPE_P(2));
	sub.slot_name = PG_ARGISNULL(3) ? sub.name : text_to_cstring(PG_GETARG_TEXT_PP(3));
	create_slot = PG_ARGISNULL(4) ? true : PG_GETARG_BOOL(4);
	sub.enabled = PG_ARGISNULL(5) ? true : PG_GETARG_BOOL(5);
	sub.stop_lsn = PG_ARGISNULL(6) ? InvalidXLogRecPtr : PG_GETARG_LSN(6);
	retention = PG_NARGS() > 7 ? pgrpl_retention_arg(fcinfo, 7) : NULL;
	sub.streaming = (PG_NARGS() > 8 && !PG_ARGISNULL(8)) ? PG_GETARG_BOOL(8) : true;
	sub.two_phase = (PG_NARGS() > 9 && !PG_ARGISNULL(9)) ? PG_GETARG_BOOL(9) : false;
	sub.origin_none = (PG_NARGS() > 10 && !PG_ARGISNULL(10)) ? pgrpl_origin_none_arg(fcinfo, 10) : false;
	failover_given = (PG_NARGS() > 11 && !PG_ARGISNULL(11));
	sub.failover = failover_given ? PG_GETARG_BOOL(11) : false;
	copy_data = (PG_NARGS() > 12 && !PG_ARGISNULL(12)) ? PG_GETARG_BOOL(12) : false;

	/* Everything that can fail locally is checked before the slot exists. */
	pgrpl_check_name("subscription", sub.name);
	pgrpl_check_slot_name(sub.slot_name);
	if (pgrpl_subscription_get(sub.name, true) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("pgrpl subscription \"%s\" already exists", sub.name)));
	if (sub.enabled)
		pgrpl_require_free_slot();
	pgrpl_check_conninfo(sub.conninfo);
	/* As CREATE SUBSCRIPTION: a rollback would leave the new slot behind. */
	if (create_slot && IsTransactionBlock())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("pgrpl.create_subscription with create_slot cannot run inside a transaction block"),
				 errdetail("Creating the replication slot on the primary cannot be rolled back."),
				 errhint("Run it on its own, or create the slot first and pass create_slot => false.")));

	PG_TRY();
	{
		pgrpl_setup_remote(&sub, create_slot, failover_given, PG_NARGS() > 12,
						   copy_data, &remote, &slot_created);
		sub.start_lsn = remote.start_lsn;
		pgrpl_subscription_insert(&sub);
		pgrpl_writer_create_log(sub.id);
		/* A leftover origin of an earlier incarnation must not lend its progress. */
		pgrpl_origin_name(MyDatabaseId, sub.id, origin, sizeof(origin));
		replorigin_drop_by_name(origin, true, false);
		(void) replorigin_create(origin);

		if (retention != NULL)
			pgrpl_subscription_set_option(sub.id, "retention", INTERVALOID,
										  IntervalPGetDatum(retention), false);
		if (PG_NARGS() > 8)
			pgrpl_subscription_set_option(sub.id, "streaming", BOOLOID,
										  BoolGetDatum(sub.streaming), false);
		if (PG_NARGS() > 9)
			pgrpl_subscription_set_option(sub.id, "two_phase", BOOLOID,
										  BoolGetDatum(sub.two_phase), false);
		if (PG_NARGS() > 11)
		{
			pgrpl_subscription_set_option(sub.id, "origin", TEXTOID,
										  CStringGetTextDatum(sub.origin_none ? "none" : "any"),
										  false);
			pgrpl_subscription_set_option(sub.id, "failover", BOOLOID,
										  BoolGetDatum(sub.failover), false);
		}
		/* Every published table is known; copied if copy_data. */
		foreach(lc, remote.tables)
		{
			PgrplTableName *t = lfirst(lc);

			pgrpl_snapshot_request(sub.id, t->schema_name, t->table_name, copy_data, true);
		}
	}
	PG_CATCH();
	{
		if (slot_created)
			pgrpl_undo_new_slot(&sub, fncxt);
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (sub.enabled)
		pgrpl_at_end_of_xact(sub.id, PGRPL_ACTION_START, PGRPL_ACTION_NONE);
	error_context_stack = hide.previous;
	PG_RETURN_LSN(remote.start_lsn);
}

/* Drop the slot on the primary; a WARNING, not an ERROR, if unreachable. */
static void
pgrpl_drop_slot_or_warn(PgrplSubscription *sub)
{
	WalReceiverConn *conn;
	char	   *err = NULL;

	pgrpl_stream_load();
	conn = pgrpl_stream_try_connect(sub->conninfo, sub->name, &err);
	if (conn == NULL)
	{
		ereport(WARNING,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not connect to the primary to drop replication slot \"%s\": %s",
						sub->slot_name, err ? pchomp(err) : "unknown error"),
				 errhint("Drop the slot on the primary by hand with SELECT pg_drop_replication_slot('%s');",
						 sub->slot_name)));
		return;
	}
	if (pgrpl_remote_slot_exists(conn, sub->slot_name, NULL))
		pgrpl_drop_remote_slot(conn, sub->slot_name);
	else
		ereport(NOTICE,
				(errmsg("replication slot \"%s\" does not exist on the primary",
						sub->slot_name)));
	walrcv_disconnect(conn);
}

Datum
pgrpl_drop_subscription(PG_FUNCTION_ARGS)
{
	PgrplSubscription *sub;
	bool		drop_slot;
	char		origin[NAMEDATALEN];

	pgrpl_require_superuser("drop a pgrpl subscription");
	sub = pgrpl_subscription_get(pgrpl_arg_text(fcinfo, 0, "name"), false);
	drop_slot = PG_ARGISNULL(1) ? true : PG_GETARG_BOOL(1);
	/* As DROP SUBSCRIPTION: a rollback would keep a subscription without slot. */
	if (drop_slot && IsTransactionBlock())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("pgrpl.drop_subscription with drop_slot cannot run inside a transaction block"),
				 errdetail("Dropping the replication slot on the primary cannot be rolled back."),
				 errhint("Run it on its own, or pass drop_slot => false and drop the slot by hand.")));

	/*
	 * The worker must be gone before its slot and origin can be dropped.  If
	 * the drop is rolled back, the launcher must keep a worker again exactly
	 * if it did before: that is what shared memory says, not "enabled" as
	 * this transaction sees it (an uncommitted enable or disable has not
	 * been applied yet).
	 */
	pgrpl_at_end_of_xact(sub->id, PGRPL_ACTION_FORGET,
						 pgrpl_slot_is_wanted(MyDatabaseId, sub->id) ?
						 PGRPL_ACTION_START : PGRPL_ACTION_NONE);
	pgrpl_slot_stop_worker(MyDatabaseId, sub->id);

	pgrpl_subscription_delete(sub->id);
	pgrpl_origin_name(MyDatabaseId, sub->id, origin, sizeof(origin));
	replorigin_drop_by_name(origin, true, false);
	if (drop_slot)
		pgrpl_drop_slot_or_warn(sub);
	PG_RETURN_VOID();
}

Datum
pgrpl_enable_subscription(PG_FUNCTION_ARGS)
{
	PgrplSubscription *sub;

	pgrpl_require_superuser("enable a pgrpl subscription");
	sub = pgrpl_subscription_get(pgrpl_arg_text(fcinfo, 0, "name"), false);
	if (!sub->enabled)
	{
		pgrpl_require_free_slot();
		sub->enabled = true;
		pgrpl_subscription_update(sub);
	}
	pgrpl_at_end_of_xact(sub->id, PGRPL_ACTION_START, PGRPL_ACTION_NONE);
	PG_RETURN_VOID();
}

Datum
pgrpl_disable_subscription(PG_FUNCTION_ARGS)
{
	PgrplSubscription *sub;

	pgrpl_require_superuser("disable a pgrpl subscription");
	sub = pgrpl_subscription_get(pgrpl_arg_text(fcinfo, 0, "name"), false);
	if (sub->enabled)
	{
		sub->enabled = false;
		pgrpl_subscription_update(sub);
	}
	pgrpl_at_end_of_xact(sub->id, PGRPL_ACTION_STOP, PGRPL_ACTION_NONE);
	PG_RETURN_VOID();
}

Datum
pgrpl_alter_subscription(PG_FUNCTION_ARGS)
{
	PgrplSubscription *sub;
	ErrorContextCallback hide;

	pgrpl_hide_statement(&hide);
	pgrpl_require_superuser("alter a pgrpl subscription");
	sub = pgrpl_subscription_get(pgrpl_arg_text(fcinfo, 0, "name"), false);
	if (!PG_ARGISNULL(1))
	{
		sub->conninfo = text_to_cstring(PG_GETARG_TEXT_PP(1));
		pgrpl_check_conninfo(sub->conninfo);
	}
	if (!PG_ARGISNULL(2))
		sub->publications = pgrpl_publication_list(PG_GETARG_ARRAYTYPE_P(2));
	pgrpl_subscription_update(sub);
	if (PG_NARGS() > 3 && !PG_ARGISNULL(3))
		pgrpl_subscription_set_option(sub->id, "retention", INTERVALOID,
									  IntervalPGetDatum(pgrpl_retention_arg(fcinfo, 3)),
									  false);
	if (PG_NARGS() > 4 && !PG_ARGISNULL(4))
		pgrpl_subscription_set_option(sub->id, "streaming", BOOLOID,
									  PG_GETARG_DATUM(4), false);
	if (PG_NARGS() > 5 && !PG_ARGISNULL(5))
		pgrpl_subscription_set_option(sub->id, "origin", TEXTOID,
									  CStringGetTextDatum(pgrpl_origin_none_arg(fcinfo, 5) ? "none" : "any"),
									  false);
	/* The worker makes the slot say so when it connects (it restarts below). */
	if (PG_NARGS() > 6 && !PG_ARGISNULL(6))
		pgrpl_subscription_set_option(sub->id, "failover", BOOLOID,
									  PG_GETARG_DATUM(6), false);
	pgrpl_at_end_of_xact(sub->id, PGRPL_ACTION_RESTART, PGRPL_ACTION_NONE);
	error_context_stack = hide.previous;
	PG_RETURN_VOID();
}

/* "schema.table" (or "table", in public) as pgrpl.split_relation() reads it. */
static void
pgrpl_split_relation(const char *relation, char **schema_name, char **table_name)
{
	Oid			argtype = TEXTOID;
	Datum		arg = CStringGetTextDatum(relation);
	MemoryContext cxt = CurrentMemoryContext;

	SPI_connect();
	if (SPI_execute_with_args("SELECT s.schema_name, s.table_name FROM pgrpl.split_relation($1) s",
							  1, &argtype, &arg, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not split a relation name");
	*schema_name = MemoryContextStrdup(cxt, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
	*table_name = MemoryContextStrdup(cxt, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2));
	SPI_finish();
}

/*
 * pgrpl.snapshot(subscription, relation): copy the table again while
 * streaming goes on (after a purge, to repair).  The worker starts it.
 */
Datum
pgrpl_snapshot_table(PG_FUNCTION_ARGS)
{
	PgrplSubscription *sub;
	char	   *schema_name;
	char	   *table_name;

	pgrpl_require_superuser("snapshot a table of a pgrpl subscription");
	sub = pgrpl_subscription_get(pgrpl_arg_text(fcinfo, 0, "subscription"), false);
	pgrpl_split_relation(pgrpl_arg_text(fcinfo, 1, "relation"), &schema_name, &table_name);
	pgrpl_snapshot_request(sub->id, schema_name, table_name, true, true);
	pgrpl_at_end_of_xact(sub->id, PGRPL_ACTION_RESTART, PGRPL_ACTION_NONE);
	PG_RETURN_VOID();
}

/*
 * pgrpl.refresh_subscription(name, copy_data): the tables the publications
 * publish now that the subscription does not know yet are copied (or only
 * noted, without copy_data).  pgoutput already streams their changes.
 */
Datum
pgrpl_refresh_subscription(PG_FUNCTION_ARGS)
{
	PgrplSubscription *sub;
	bool		copy_data;
	WalReceiverConn *conn;
	List	   *tables = NIL;
	ListCell   *lc;
	int64		added = 0;
	char		local_sysid[32];
	ErrorContextCallback hide;

	pgrpl_hide_statement(&hide);
	pgrpl_require_superuser("refresh a pgrpl subscription");
	sub = pgrpl_subscription_get(pgrpl_arg_text(fcinfo, 0, "name"), false);
	copy_data = PG_ARGISNULL(1) ? true : PG_GETARG_BOOL(1);
	pgrpl_stream_load();
	conn = pgrpl_stream_connect(sub->conninfo, sub->name);
	PG_TRY();
	{
		if (copy_data)
			pgrpl_snapshot_check_primary(conn);
		snprintf(local_sysid, sizeof(local_sysid), UINT64_FORMAT, GetSystemIdentifier());
		tables = pgrpl_published_tables(conn, sub->publications,
										strcmp(pgrpl_stream_identify(conn), local_sysid) == 0);
	}
	PG_FINALLY();
	{
		walrcv_disconnect(conn);
	}
	PG_END_TRY();
	foreach(lc, tables)
	{
		PgrplTableName *t = lfirst(lc);

		if (pgrpl_snapshot_request(sub->id, t->schema_name, t->table_name, copy_data, false))
			added++;
	}
	if (added > 0)
		pgrpl_at_end_of_xact(sub->id, PGRPL_ACTION_RESTART, PGRPL_ACTION_NONE);
	error_context_stack = hide.previous;
	PG_RETURN_INT64(added);
}

Datum
pgrpl_set_stop_lsn(PG_FUNCTION_ARGS)
{
	PgrplSubscription *sub;

	pgrpl_require_superuser("alter a pgrpl subscription");
	sub = pgrpl_subscription_get(pgrpl_arg_text(fcinfo, 0, "name"), false);
	sub->stop_lsn = PG_ARGISNULL(1) ? InvalidXLogRecPtr : PG_GETARG_LSN(1);
	pgrpl_subscription_update(sub);
	/* A finished worker starts again; a running one rereads stop_lsn. */
	if (sub->enabled)
	{
		pgrpl_at_end_of_xact(sub->id, PGRPL_ACTION_RESTART, PGRPL_ACTION_NONE);
		pgrpl_at_end_of_xact(sub->id, PGRPL_ACTION_START, PGRPL_ACTION_NONE);
	}
	PG_RETURN_VOID();
}

/*
 * pgrpl.set_retention(name, retention): keep changes for that long (NULL:
 * forever).  The worker applies it by itself; no restart needed.
 */
Datum
pgrpl_set_retention(PG_FUNCTION_ARGS)
{
	PgrplSubscription *sub;
	Interval   *retention;

	pgrpl_require_superuser("alter a pgrpl subscription");
	sub = pgrpl_subscription_get(pgrpl_arg_text(fcinfo, 0, "name"), false);
	retention = pgrpl_retention_arg(fcinfo, 1);
	pgrpl_subscription_set_option(sub->id, "retention", INTERVALOID,
								  PointerGetDatum(retention), retention == NULL);
	PG_RETURN_VOID();
}

Datum
pgrpl_wait_for_lsn(PG_FUNCTION_ARGS)
{
	PgrplSubscription *sub;
	XLogRecPtr	target;
	long		timeout_ms = 30000;

	pgrpl_require_superuser("wait for a pgrpl subscription");
	sub = pgrpl_subscription_get(pgrpl_arg_text(fcinfo, 0, "name"), false);
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("target must not be null")));
	target = PG_GETARG_LSN(1);
	if (!PG_ARGISNULL(2))
	{
		Interval   *iv = PG_GETARG_INTERVAL_P(2);
		double		secs = iv->time / 1000000.0 +
			(iv->day + iv->month * 30.0) * SECS_PER_DAY;

		if (secs < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("timeout must not be negative")));
		timeout_ms = (long) Min(secs * 1000.0, (double) INT_MAX);
	}
	/* No worker runs for a disabled subscription: nothing will come. */
	if (!sub->enabled)
		timeout_ms = 0;
	PG_RETURN_BOOL(pgrpl_slot_wait_for_lsn(MyDatabaseId, sub->id, target, timeout_ms));
}

Datum
pgrpl_mask_conninfo(PG_FUNCTION_ARGS)
{
	char	   *masked = pgrpl_mask_conninfo_str(text_to_cstring(PG_GETARG_TEXT_PP(0)));

	if (masked == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(masked));
}

static Datum
pgrpl_lsn_or_null(XLogRecPtr lsn, bool *isnull)
{
	*isnull = XLogRecPtrIsInvalid(lsn);
	return LSNGetDatum(lsn);
}

static Datum
pgrpl_time_or_null(TimestampTz t, bool *isnull)
{
	*isnull = (t == 0);
	return TimestampTzGetDatum(t);
}

/* One row per worker slot of this database. */
Datum
pgrpl_worker_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	PgrplWorkerStatus *statuses;
	int			count;

	pgrpl_shmem_check();
	InitMaterializedSRF(fcinfo, 0);

	statuses = pgrpl_slot_statuses(MyDatabaseId, &count);
	for (int i = 0; i < count; i++)
	{
		PgrplWorkerStatus *st = &statuses[i];
		Datum		values[18];
		bool		nulls[18];

		memset(nulls, 0, sizeof(nulls));
		values[0] = Int32GetDatum(st->subid);
		values[1] = Int32GetDatum(st->pid);
		nulls[1] = (st->pid == 0);
		values[2] = CStringGetTextDatum(pgrpl_state_name(st->state));
		values[3] = pgrpl_lsn_or_null(st->received_lsn, &nulls[3]);
		values[4] = pgrpl_lsn_or_null(st->flushed_lsn, &nulls[4]);
		values[5] = pgrpl_lsn_or_null(st->latest_end_lsn, &nulls[5]);
		values[6] = pgrpl_time_or_null(st->last_msg_send_time, &nulls[6]);
		values[7] = pgrpl_time_or_null(st->last_msg_receipt_time, &nulls[7]);
		values[8] = pgrpl_time_or_null(st->latest_end_time, &nulls[8]);
		values[9] = Int64GetDatum((int64) st->transactions);
		values[10] = Int64GetDatum((int64) st->changes);
		values[11] = Int64GetDatum((int64) st->bytes_received);
		values[12] = CStringGetTextDatum(st->last_error);
		nulls[12] = (st->last_error[0] == '\0');
		values[13] = pgrpl_time_or_null(st->last_error_time, &nulls[13]);
		/*
		 * Added in 2.1.  A 2.0 schema's function declares the first 14
		 * only; the tuplestore takes as many as the result type has.
		 */
		values[14] = Int32GetDatum(st->proto_version);
		nulls[14] = (st->proto_version == 0);
		values[15] = Int64GetDatum((int64) st->streamed_transactions);
		values[16] = Int64GetDatum((int64) st->streamed_bytes);
		values[17] = Int32GetDatum(st->streams_in_progress);
		Assert(rsinfo->setDesc->natts <= lengthof(values));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	pfree(statuses);
	return (Datum) 0;
}
