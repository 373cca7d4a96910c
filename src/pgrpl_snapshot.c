/*-------------------------------------------------------------------------
 * pgrpl_snapshot.c
 *		Copy the rows a published table already has into the change log,
 *		in chunks, merged with the stream at watermarks.
 *
 * One table at a time, one chunk at a time, on a second connection of the
 * worker (replication=database, which runs SQL):
 *
 *	1. In a REPEATABLE READ transaction on the primary: its snapshot S, and
 *	   the next rows in key order after the last finished chunk.  P is the
 *	   end of the last remote transaction processed before: the stream is
 *	   in commit order, so every later one commits at or after P.
 *	2. A transactional logical message with a unique id: the watermark W.
 *	3. When W arrives in the stream, the chunk's rows become SNAPSHOT rows
 *	   of W's transaction -- except rows whose key a transaction invisible
 *	   to S changed and committed before W (between P and W): the stream's
 *	   change is newer.  The chunk's last key is stored in the same local
 *	   transaction, so a crash resumes from the last finished chunk; a chunk
 *	   whose W was not written yet is read again (its W, sent again, is no
 *	   longer known and is ignored).
 *
 * A transaction the primary already showed committed while S still saw it
 * running (its commit record was in WAL, e.g. waiting for a synchronous
 * standby) and whose commit the worker had received before P -- so its
 * changes are older than P, yet S did not see them -- makes the chunk be
 * read again a little later.  So does a transaction S saw running whose
 * commit the worker had already received when it took S (the walsender
 * decodes a commit once its WAL is flushed, and the committing backend may
 * not have left the proc array yet).  A TRUNCATE of the table between P and
 * W that S did not see discards the chunk likewise.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "pgrpl_capture.h"
#include "pgrpl_json.h"
#include "pgrpl_snapshot.h"
#include "pgrpl_stream.h"
#include "pgrpl_writer.h"

/* How long a chunk waits after a committed-but-invisible transaction. */
#define PGRPL_SNAPSHOT_HAZARD_RETRY_MS	100
/* Heap blocks a step reads of a table without a key (8MB). */
#define PGRPL_KEYLESS_BLOCKS	1024
/* How many of the last commits received are remembered (see below). */
#define PGRPL_SNAPSHOT_RECENT_COMMITS 4096
/* How often a busy stream stops for the next chunk. */
#define PGRPL_SNAPSHOT_BUSY_MS	50
/* How long the worker waits after an error before the next table. */
#define PGRPL_SNAPSHOT_ERROR_RETRY_MS	5000
/* A table that failed is tried again after 5 s, doubling up to 5 min. */
#define PGRPL_SNAPSHOT_DEFER_MAX_MS	(300 * 1000)

/* A table that failed this session, and when to try it again. */
typedef struct PgrplDeferred
{
	char	   *name;			/* "schema.table", quoted */
	int			failures;
	TimestampTz retry_at;
} PgrplDeferred;

/* The table being copied, as the primary describes it. */
typedef struct PgrplSnapTable
{
	char	   *schema_name;
	char	   *table_name;
	Oid			remote_oid;
	char		relkind;
	char		replident;
	char	   *row_filter;		/* NULL: none */
	/* The published columns, as a RELATION message would list them. */
	int			natts;
	const char **names;
	const char **types;
	Oid		   *typids;			/* the types' oids on the primary */
	bool	   *is_key;
	char	   *drop_literal;	/* text[] of unpublished columns */
	char	   *key_literal;	/* text[] of replica identity columns, or NULL */
	/* The columns the chunks are paged by (a unique NOT NULL key). */
	int			npage;
	char	  **page_names;
	char	  **page_types;
	char	  **last_page;		/* values after the last finished chunk, or NULL */
	int64		chunks;
	/*
	 * No key to page by: the whole table is one chunk, read under one
	 * snapshot in pieces of PGRPL_KEYLESS_BLOCKS blocks (paged by ctid,
	 * stable within a snapshot) and spooled to a local temporary file
	 * until its one watermark arrives.  [range_from, range_to) are the
	 * blocks of the piece being read.
	 */
	bool		keyless;
	BlockNumber range_from;
	BlockNumber range_to;

	/*
	 * Every column converts here exactly as to_jsonb() gives it there
	 * (built-in types): a chunk brings each column's text, converted here
	 * as the stream's values are.  Otherwise the primary sends each row's
	 * to_jsonb() text, parsed here: three times the primary's work per
	 * row, and its key built by an aggregate per row.
	 */
	bool		local_convert;
} PgrplSnapTable;

typedef struct PgrplChunkRow
{
	char	   *page;			/* the paging key's values, as a text[] */
	char	   *row_key;		/* jsonb text, or NULL */
	char	   *new_row;		/* jsonb text */
	char	  **values;			/* local_convert: the columns' text, or NULL */
} PgrplChunkRow;

/* A chunk of a table: its snapshot S, position P and rows. */
typedef struct PgrplChunk
{
	MemoryContext cxt;			/* its rows and snapshot; reset per chunk */
	bool		active;			/* (the chunk read ahead) its read has begun */
	bool		copying;		/* its rows are still coming (COPY) */
	char	  **start_page;		/* the key it starts after (NULL: the first) */
	TimestampTz emitted_at;
	char	   *watermark;
	XLogRecPtr	received_before;	/* P */
	/*
	 * Read ahead: the txn_id of the watermark transaction of the chunk
	 * before (-1: none).  It commits after P, but holds nothing but this
	 * copy's own rows, of other keys: not part of the window.
	 */
	int64		prev_txn_id;
	uint64		xmin;
	uint64		xmax;
	int			nxip;
	uint64	   *xip;
	/* xip members the primary already showed committed when S was taken */
	int			ncommitted;
	uint64	   *committed;
	/* transactions whose commit arrived since it was read (in TopMemoryContext) */
	int			nwindow;
	int			maxwindow;
	TransactionId *window;
	int			nrows;
	int			maxrows;
	bool		chunk_is_last;	/* the chunk reaches the table's end */
	PgrplChunkRow *rows;
} PgrplChunk;

static struct
{
	PgrplSubscription *sub;
	WalReceiverConn *conn;
	int			server_version;
	MemoryContext cxt;			/* the table; reset per table */
	PgrplSnapTable *table;
	char	   *cur_schema;		/* the table being copied (also before */
	char	   *cur_table;		/* it is described), or NULL */
	bool		done;			/* nothing left to copy in this session */
	List	   *skip;			/* PgrplDeferred: tables that failed */
	TimestampTz retry_after;
	TimestampTz last_busy_step;
	uint64		counter;

	/*
	 * The chunk whose watermark is awaited (in_flight) or being read, and
	 * the next one, read ahead while the first is awaited and written.
	 */
	bool		in_flight;
	PgrplChunk chunks[2];
	PgrplChunk *cur;
	PgrplChunk *ahead;

	/* A keyless table being read (its remote transaction open) and spooled. */
	bool		reading;
	BlockNumber nblocks;
	Tuplestorestate *spool;		/* row_key, new_row */
	TupleDesc	spool_desc;
	TupleTableSlot *spool_slot;

	/* The xids of the last commits received, a ring. */
	TransactionId recent[PGRPL_SNAPSHOT_RECENT_COMMITS];
	uint64		nrecent;
}			S;

static bool pgrpl_snapshot_missed_commit(PgrplChunk *c);
static void pgrpl_snapshot_emit_watermark(void);
static void pgrpl_snapshot_forget_table(void);
static void pgrpl_snapshot_retry_soon(void);
static void pgrpl_snapshot_read_more(PgrplChunk *c, bool wait);

/* ---------------------------------------------------------------------
 * Helpers
 * --------------------------------------------------------------------- */

/* ARRAY['a', 'b'] as a SQL literal of type text[] ('{}' when empty). */
static char *
pgrpl_text_array_literal(const char **items, const bool *filter, int n)
{
	StringInfoData buf;
	bool		first = true;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "ARRAY[");
	for (int i = 0; i < n; i++)
	{
		if (filter != NULL && !filter[i])
			continue;
		if (!first)
			appendStringInfoString(&buf, ", ");
		appendStringInfoString(&buf, quote_literal_cstr(items[i]));
		first = false;
	}
	appendStringInfoString(&buf, "]::pg_catalog.text[]");
	return buf.data;
}

static char *
pgrpl_publications_literal(List *publications)
{
	const char **names = palloc(sizeof(char *) * Max(list_length(publications), 1));
	ListCell   *lc;
	int			n = 0;

	foreach(lc, publications)
		names[n++] = strVal(lfirst(lc));
	return pgrpl_text_array_literal(names, NULL, n);
}

/* The text of column col of the current row (NULL if null). */
static char *
pgrpl_result_text(TupleTableSlot *slot, int col)
{
	bool		isnull;
	Datum		d = slot_getattr(slot, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/* Parse "{a,b}" into its elements. */
static char **
pgrpl_parse_text_array(const char *literal, int *n)
{
	/* array_in caches in flinfo: call it through fmgr. */
	ArrayType  *arr = DatumGetArrayTypeP(OidInputFunctionCall(F_ARRAY_IN, (char *) literal,
															  TEXTOID, -1));
	Datum	   *elems;
	bool	   *nulls;
	char	  **out;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, n);
	out = palloc(sizeof(char *) * Max(*n, 1));
	for (int i = 0; i < *n; i++)
		out[i] = nulls[i] ? NULL : TextDatumGetCString(elems[i]);
	return out;
}

/* ---------------------------------------------------------------------
 * The primary's catalog
 * --------------------------------------------------------------------- */

/*
 * The tables the publications publish, as pgoutput sends them; on a
 * loopback primary not our own change log (FOR ALL TABLES publishes it).
 */
List *
pgrpl_published_tables(WalReceiverConn *conn, List *publications, bool loopback)
{
	WalRcvExecResult *res;
	TupleTableSlot *slot;
	List	   *tables = NIL;
	char	   *sql;

	sql = psprintf("SELECT DISTINCT t.schemaname::pg_catalog.text, t.tablename::pg_catalog.text"
				   " FROM pg_catalog.pg_publication_tables t"
				   " WHERE t.pubname OPERATOR(pg_catalog.=) ANY (%s)%s ORDER BY 1, 2",
				   pgrpl_publications_literal(publications),
				   loopback ? " AND t.schemaname OPERATOR(pg_catalog.<>) 'pgrpl'" : "");
	res = pgrpl_remote_query(conn, sql, 2, "list the published tables");
	slot = MakeSingleTupleTableSlot(res->tupledesc, &TTSOpsMinimalTuple);
	while (tuplestore_gettupleslot(res->tuplestore, true, false, slot))
	{
		PgrplTableName *t = palloc(sizeof(PgrplTableName));

		t->schema_name = pgrpl_result_text(slot, 1);
		t->table_name = pgrpl_result_text(slot, 2);
		tables = lappend(tables, t);
	}
	ExecDropSingleTupleTableSlot(slot);
	walrcv_clear_result(res);
	return tables;
}

/*
 * Chunks are merged at watermarks, transactional logical messages, which
 * pgoutput sends from PostgreSQL 14 on.
 */
void
pgrpl_snapshot_check_primary(WalReceiverConn *conn)
{
	int			server_version = walrcv_server_version(conn);

	if (server_version < 140000)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("copy_data needs a primary of PostgreSQL 14 or later"),
				 errdetail("The primary runs PostgreSQL %d, whose pgoutput sends no logical messages, which pgrpl's snapshots are merged at.",
						   server_version / 10000),
				 errhint("Pass copy_data => false.")));
}

/*
 * The table as the stream's RELATION message would describe it, for
 * converting its rows here (see PgrplSnapTable.local_convert).  Needs a
 * transaction; free with pgrpl_relation_free.
 */
static PgrplRelation *
pgrpl_snapshot_relation(PgrplSnapTable *t)
{
	LogicalRepRelation remote;

	memset(&remote, 0, sizeof(remote));
	remote.remoteid = t->remote_oid;
	remote.nspname = t->schema_name;
	remote.relname = t->table_name;
	remote.natts = t->natts;
	remote.attnames = (char **) t->names;
	remote.atttyps = t->typids;
	remote.replident = t->replident;
	for (int i = 0; i < t->natts; i++)
		if (t->is_key[i])
			remote.attkeys = bms_add_member(remote.attkeys, i);
	return pgrpl_relation_build(&remote, CurrentMemoryContext);
}

static bool
pgrpl_snapshot_converts_exactly(PgrplSnapTable *t)
{
	PgrplRelation *rel;
	bool		exact;

	/* Other types are named by TYPE messages, which this has none of. */
	for (int i = 0; i < t->natts; i++)
		if (t->typids[i] >= FirstGenbkiObjectId)
			return false;
	rel = pgrpl_snapshot_relation(t);
	exact = pgrpl_relation_converts_exactly(rel);
	pgrpl_relation_free(rel);
	return exact;
}

/*
 * Describe the table to copy: its published columns and replica identity
 * (as the RELATION message would say), the publications' row filter, and
 * the key to page it by (the replica identity index, else the primary
 * key).  NULL if the table is gone.
 */
static PgrplSnapTable *
pgrpl_snapshot_describe(const char *schema_name, const char *table_name)
{
	PgrplSnapTable *t;
	WalRcvExecResult *res;
	TupleTableSlot *slot;
	char	   *sql;
	char	   *where;
	char	   *pubs = pgrpl_publications_literal(S.sub->publications);
	bool		v15 = S.server_version >= 150000;
	List	   *names = NIL,
			   *types = NIL,
			   *keys = NIL,
			   *pubd = NIL,
			   *typids = NIL;
	char	   *page;
	ListCell   *l1,
			   *l2,
			   *l3,
			   *l4;
	int			i;

	where = psprintf("n.nspname OPERATOR(pg_catalog.=) %s AND c.relname OPERATOR(pg_catalog.=) %s",
					 quote_literal_cstr(schema_name), quote_literal_cstr(table_name));
	sql = psprintf("SELECT c.oid::pg_catalog.text,"
				   " c.relkind::pg_catalog.text OPERATOR(pg_catalog.||) c.relreplident::pg_catalog.text,"
				   " %s,"
				   " (SELECT pg_catalog.array_agg(a.attname ORDER BY k.ord)::pg_catalog.text"
				   "    FROM pg_catalog.pg_index i,"
				   "         pg_catalog.unnest(i.indkey::pg_catalog.int2[]) WITH ORDINALITY k(attnum, ord),"
				   "         pg_catalog.pg_attribute a"
				   "   WHERE i.indexrelid OPERATOR(pg_catalog.=) COALESCE(pg_catalog.pg_get_replica_identity_index(c.oid),"
				   "           (SELECT p.indexrelid FROM pg_catalog.pg_index p"
				   "             WHERE p.indrelid OPERATOR(pg_catalog.=) c.oid AND p.indisprimary))"
				   "     AND a.attrelid OPERATOR(pg_catalog.=) c.oid AND a.attnum OPERATOR(pg_catalog.=) k.attnum)"
				   " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace"
				   " WHERE %s",
				   v15 ? psprintf("(SELECT CASE WHEN pg_catalog.bool_or(p.rowfilter IS NULL) THEN NULL"
								  "  ELSE pg_catalog.string_agg('(' OPERATOR(pg_catalog.||) p.rowfilter OPERATOR(pg_catalog.||) ')', ' OR ') END"
								  "  FROM pg_catalog.pg_publication_tables p"
								  " WHERE p.pubname OPERATOR(pg_catalog.=) ANY (%s)"
								  "   AND p.schemaname OPERATOR(pg_catalog.=) n.nspname AND p.tablename OPERATOR(pg_catalog.=) c.relname)",
								  pubs)
				   : "NULL::pg_catalog.text",
				   where);
	res = pgrpl_remote_query(S.conn, sql, 4, "describe the table to copy");
	slot = MakeSingleTupleTableSlot(res->tupledesc, &TTSOpsMinimalTuple);
	if (!tuplestore_gettupleslot(res->tuplestore, true, false, slot))
	{
		ExecDropSingleTupleTableSlot(slot);
		walrcv_clear_result(res);
		return NULL;
	}
	t = palloc0(sizeof(PgrplSnapTable));
	t->schema_name = pstrdup(schema_name);
	t->table_name = pstrdup(table_name);
	t->remote_oid = (Oid) strtoul(pgrpl_result_text(slot, 1), NULL, 10);
	{
		char	   *kinds = pgrpl_result_text(slot, 2);

		t->relkind = kinds[0];
		t->replident = kinds[1];
	}
	t->row_filter = pgrpl_result_text(slot, 3);
	page = pgrpl_result_text(slot, 4);
	ExecDropSingleTupleTableSlot(slot);
	walrcv_clear_result(res);

	if (page == NULL && t->relkind == 'p')
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("partitioned table \"%s.%s\" on the primary has no key to copy it by", schema_name, table_name),
				 errdetail("pgrpl copies a partitioned table through its root in chunks ordered by its replica identity index or primary key."),
				 errhint("Give the table a primary key, or publish its partitions without publish_via_partition_root.")));
	t->keyless = (page == NULL);
	if (t->keyless)
	{
		t->npage = 1;
		t->page_names = palloc(sizeof(char *));
		t->page_names[0] = "ctid";
	}
	else
		t->page_names = pgrpl_parse_text_array(page, &t->npage);

	/* The columns, in attribute order, with what a RELATION message says. */
	sql = psprintf("SELECT a.attname::pg_catalog.text,"
				   " CASE WHEN a.atttypid OPERATOR(pg_catalog.<) 10000::pg_catalog.oid"
				   "      THEN pg_catalog.format_type(a.atttypid, NULL)"
				   "      ELSE pg_catalog.quote_ident(tn.nspname) OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(ty.typname) END,"
				   " (c.relreplident OPERATOR(pg_catalog.=) 'f' OR a.attnum OPERATOR(pg_catalog.=) ANY (ri.indkey::pg_catalog.int2[]))::pg_catalog.text,"
				   " (%s)::pg_catalog.text,"
				   " a.atttypid::pg_catalog.text"
				   " FROM pg_catalog.pg_attribute a"
				   " JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) a.attrelid"
				   " JOIN pg_catalog.pg_type ty ON ty.oid OPERATOR(pg_catalog.=) a.atttypid"
				   " JOIN pg_catalog.pg_namespace tn ON tn.oid OPERATOR(pg_catalog.=) ty.typnamespace"
				   " LEFT JOIN pg_catalog.pg_index ri ON ri.indexrelid OPERATOR(pg_catalog.=) pg_catalog.pg_get_replica_identity_index(c.oid)"
				   " WHERE a.attrelid OPERATOR(pg_catalog.=) %u AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped"
				   " ORDER BY a.attnum",
				   S.server_version >= 180000 ?
				   psprintf("EXISTS (SELECT FROM pg_catalog.pg_publication_tables p"
							" WHERE p.pubname OPERATOR(pg_catalog.=) ANY (%s)"
							"   AND p.schemaname OPERATOR(pg_catalog.=) %s AND p.tablename OPERATOR(pg_catalog.=) %s"
							"   AND a.attname OPERATOR(pg_catalog.=) ANY (p.attnames))",
							pubs, quote_literal_cstr(schema_name), quote_literal_cstr(table_name)) :
				   v15 ?
				   psprintf("a.attgenerated OPERATOR(pg_catalog.=) '' AND EXISTS (SELECT FROM pg_catalog.pg_publication_tables p"
							" WHERE p.pubname OPERATOR(pg_catalog.=) ANY (%s)"
							"   AND p.schemaname OPERATOR(pg_catalog.=) %s AND p.tablename OPERATOR(pg_catalog.=) %s"
							"   AND a.attname OPERATOR(pg_catalog.=) ANY (p.attnames))",
							pubs, quote_literal_cstr(schema_name), quote_literal_cstr(table_name)) :
				   "a.attgenerated OPERATOR(pg_catalog.=) ''",
				   t->remote_oid);
	res = pgrpl_remote_query(S.conn, sql, 5, "describe the columns of the table to copy");
	slot = MakeSingleTupleTableSlot(res->tupledesc, &TTSOpsMinimalTuple);
	while (tuplestore_gettupleslot(res->tuplestore, true, false, slot))
	{
		names = lappend(names, pgrpl_result_text(slot, 1));
		types = lappend(types, pgrpl_result_text(slot, 2));
		keys = lappend(keys, pgrpl_result_text(slot, 3));
		pubd = lappend(pubd, pgrpl_result_text(slot, 4));
		typids = lappend_oid(typids, (Oid) strtoul(pgrpl_result_text(slot, 5), NULL, 10));
	}
	ExecDropSingleTupleTableSlot(slot);
	walrcv_clear_result(res);

	t->names = palloc(sizeof(char *) * Max(list_length(names), 1));
	t->types = palloc(sizeof(char *) * Max(list_length(names), 1));
	t->is_key = palloc(sizeof(bool) * Max(list_length(names), 1));
	t->typids = palloc(sizeof(Oid) * Max(list_length(names), 1));
	{
		const char **dropped = palloc(sizeof(char *) * Max(list_length(names), 1));
		int			ndropped = 0;

		i = 0;
		forfour(l1, names, l2, types, l3, keys, l4, pubd)
		{
			if (strcmp((char *) lfirst(l4), "true") != 0)
			{
				dropped[ndropped++] = lfirst(l1);
				continue;
			}
			t->names[i] = lfirst(l1);
			t->types[i] = lfirst(l2);
			t->typids[i] = list_nth_oid(typids, foreach_current_index(l1));
			/* NULL: no replica identity index (and not FULL) */
			t->is_key[i] = (t->replident != 'n' && lfirst(l3) != NULL &&
							strcmp((char *) lfirst(l3), "true") == 0);
			i++;
		}
		t->natts = i;
		t->drop_literal = pgrpl_text_array_literal(dropped, NULL, ndropped);
	}
	{
		bool		any_key = false;

		for (i = 0; i < t->natts; i++)
			any_key |= t->is_key[i];
		t->key_literal = any_key ? pgrpl_text_array_literal(t->names, t->is_key, t->natts) : NULL;
	}
	t->local_convert = !t->keyless && pgrpl_snapshot_converts_exactly(t);

	/* The paging columns' types (they need not be published). */
	t->page_types = palloc(sizeof(char *) * t->npage);
	if (t->keyless)
	{
		t->page_types[0] = "pg_catalog.tid";
		return t;
	}
	for (int k = 0; k < t->npage; k++)
	{
		t->page_types[k] = NULL;
		forboth(l1, names, l2, types)
		{
			if (strcmp(lfirst(l1), t->page_names[k]) == 0)
				t->page_types[k] = lfirst(l2);
		}
		if (t->page_types[k] == NULL)
			elog(ERROR, "paging column \"%s\" of \"%s.%s\" not found",
				 t->page_names[k], schema_name, table_name);
	}
	return t;
}

/* ---------------------------------------------------------------------
 * pgrpl.snapshot rows
 * --------------------------------------------------------------------- */

/*
 * Ask for a table's snapshot (copy) or note it as known without one.  With
 * replace, a new request for a table replaces the old one; without, a
 * table known already is left alone, and so is one the log has changes of
 * (a subscription from before snapshots): false then.
 */
bool
pgrpl_snapshot_request(int32 sub_id, const char *schema_name,
					   const char *table_name, bool copy, bool replace)
{
	Oid			argtypes[4] = {INT4OID, TEXTOID, TEXTOID, CHAROID};
	Datum		args[4] = {Int32GetDatum(sub_id), CStringGetTextDatum(schema_name),
	CStringGetTextDatum(table_name), CharGetDatum(copy ? 'p' : 'd')};
	bool		done;

	SPI_connect();
	if (replace)
		done = SPI_execute_with_args("INSERT INTO pgrpl.snapshot AS s (sub_id, schema_name, table_name, state, finished_at)"
									 " VALUES ($1, $2, $3, $4, CASE WHEN $4 OPERATOR(pg_catalog.=) 'd' THEN pg_catalog.now() END)"
									 " ON CONFLICT (sub_id, schema_name, table_name) DO UPDATE"
									 " SET state = excluded.state, last_key = NULL, rows_copied = 0, chunks = 0,"
									 "     requested_at = pg_catalog.now(), started_at = NULL,"
									 "     finished_at = excluded.finished_at, last_error = NULL",
									 4, argtypes, args, NULL, false, 0) == SPI_OK_INSERT;
	else
		done = SPI_execute_with_args("INSERT INTO pgrpl.snapshot (sub_id, schema_name, table_name, state, finished_at)"
									 " SELECT $1, $2, $3, $4, CASE WHEN $4 OPERATOR(pg_catalog.=) 'd' THEN pg_catalog.now() END"
									 "  WHERE NOT EXISTS (SELECT FROM pgrpl.relation r"
									 "         WHERE r.sub_id OPERATOR(pg_catalog.=) $1 AND r.schema_name OPERATOR(pg_catalog.=) $2"
									 "           AND r.table_name OPERATOR(pg_catalog.=) $3)"
									 " ON CONFLICT (sub_id, schema_name, table_name) DO NOTHING",
									 4, argtypes, args, NULL, false, 0) == SPI_OK_INSERT;
	if (!done)
		elog(ERROR, "could not update pgrpl.snapshot");
	done = SPI_processed > 0;
	SPI_finish();
	return done;
}

/* The next table to copy, or NULL; sets *last_key to where it stopped. */
static bool
pgrpl_snapshot_next(char **schema_name, char **table_name, char **last_key,
					TimestampTz *wait_until)
{
	Oid			argtype = INT4OID;
	Datum		arg = Int32GetDatum(S.sub->id);
	MemoryContext cxt = CurrentMemoryContext;
	bool		found = false;
	TimestampTz now = GetCurrentTimestamp();

	*wait_until = 0;
	SPI_connect();
	if (SPI_execute_with_args("SELECT schema_name, table_name, last_key::pg_catalog.text"
							  " FROM pgrpl.snapshot WHERE sub_id OPERATOR(pg_catalog.=) $1"
							  "   AND state OPERATOR(pg_catalog.<>) 'd'"
							  " ORDER BY requested_at, schema_name, table_name",
							  1, &argtype, &arg, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read pgrpl.snapshot");
	for (uint64 i = 0; i < SPI_processed && !found; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *nsp = SPI_getvalue(tup, desc, 1);
		char	   *rel = SPI_getvalue(tup, desc, 2);
		char	   *name = psprintf("%s.%s", quote_identifier(nsp), quote_identifier(rel));
		ListCell   *lc;
		bool		skip = false;

		foreach(lc, S.skip)
		{
			PgrplDeferred *d = lfirst(lc);

			if (strcmp(d->name, name) == 0 && d->retry_at > now)
			{
				skip = true;
				if (*wait_until == 0 || d->retry_at < *wait_until)
					*wait_until = d->retry_at;
			}
		}
		if (skip)
			continue;
		found = true;
		*schema_name = MemoryContextStrdup(cxt, nsp);
		*table_name = MemoryContextStrdup(cxt, rel);
		*last_key = SPI_getvalue(tup, desc, 3);
		if (*last_key)
			*last_key = MemoryContextStrdup(cxt, *last_key);
	}
	SPI_finish();
	return found;
}

/* Record a chunk (or the table's end, or an error) in pgrpl.snapshot. */
static void
pgrpl_snapshot_record(const char *state, const char *last_key, int64 rows,
					  const char *error)
{
	Oid			argtypes[7] = {INT4OID, TEXTOID, TEXTOID, CHAROID, TEXTOID, INT8OID, TEXTOID};
	Datum		args[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', last_key ? ' ' : 'n', ' ', error ? ' ' : 'n'};

	args[0] = Int32GetDatum(S.sub->id);
	args[1] = CStringGetTextDatum(S.cur_schema);
	args[2] = CStringGetTextDatum(S.cur_table);
	args[3] = CharGetDatum(state[0]);
	args[4] = last_key ? CStringGetTextDatum(last_key) : (Datum) 0;
	args[5] = Int64GetDatum(rows);
	args[6] = error ? CStringGetTextDatum(error) : (Datum) 0;
	SPI_connect();
	if (SPI_execute_with_args("UPDATE pgrpl.snapshot SET state = $4,"
							  " last_key = COALESCE($5::pg_catalog.text[], last_key),"
							  " rows_copied = rows_copied OPERATOR(pg_catalog.+) $6,"
							  " chunks = chunks OPERATOR(pg_catalog.+) CASE WHEN $5 IS NULL THEN 0 ELSE 1 END,"
							  " started_at = COALESCE(started_at, pg_catalog.now()),"
							  " finished_at = CASE WHEN $4 OPERATOR(pg_catalog.=) 'd' THEN pg_catalog.now() END,"
							  " last_error = $7"
							  " WHERE sub_id OPERATOR(pg_catalog.=) $1 AND schema_name OPERATOR(pg_catalog.=) $2"
							  "   AND table_name OPERATOR(pg_catalog.=) $3",
							  7, argtypes, args, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update pgrpl.snapshot");
	SPI_finish();
}

/* Close the snapshot connection, if open (the next step opens another). */
static void
pgrpl_snapshot_disconnect(void)
{
	if (S.conn != NULL)
	{
		walrcv_disconnect(S.conn);
		S.conn = NULL;
	}
}

/*
 * The next chunk of S.table starts after chunk c's last row: its paging
 * key becomes the table's last_page, in the table's context.
 */
static void
pgrpl_snapshot_start_after(PgrplChunk *c)
{
	MemoryContext old = MemoryContextSwitchTo(S.cxt);
	int			n;

	S.table->last_page = pgrpl_parse_text_array(c->rows[c->nrows - 1].page, &n);
	MemoryContextSwitchTo(old);
}

/* ---------------------------------------------------------------------
 * Reading a chunk
 * --------------------------------------------------------------------- */

static void
pgrpl_snapshot_connect(void)
{
	char	   *appname;
	MemoryContext old;

	if (S.conn != NULL)
		return;
	appname = psprintf("%s snapshot", S.sub->name);
	/* It outlives the transaction of the step that opens it. */
	old = MemoryContextSwitchTo(TopMemoryContext);
	S.conn = pgrpl_stream_connect(S.sub->conninfo, appname);
	MemoryContextSwitchTo(old);
	S.server_version = walrcv_server_version(S.conn);
	/* Values as the stream gives them (see pgrpl_stream_start). */
	pgrpl_remote_command(S.conn, "SET TimeZone TO 'UTC'", "set the time zone of the snapshot connection");
	/* A watermark need not wait for a synchronous standby. */
	pgrpl_remote_command(S.conn, "SET synchronous_commit TO local", "set synchronous_commit of the snapshot connection");
}

/* "t.a, t.b": the paging key, in the chunks' order. */
static char *
pgrpl_chunk_order(PgrplSnapTable *t)
{
	StringInfoData order;

	initStringInfo(&order);
	for (int k = 0; k < t->npage; k++)
		appendStringInfo(&order, "%st.%s", k > 0 ? ", " : "", quote_identifier(t->page_names[k]));
	return order.data;
}

/* " AND ROW(t.a, t.b) <op> ROW(<values>)", the values cast to the key's types. */
static void
pgrpl_append_key_bound(StringInfo sql, PgrplSnapTable *t, const char *op, char **values)
{
	appendStringInfo(sql, " AND ROW(%s) OPERATOR(pg_catalog.%s) ROW(", pgrpl_chunk_order(t), op);
	for (int k = 0; k < t->npage; k++)
		appendStringInfo(sql, "%sCAST(%s AS %s)", k > 0 ? ", " : "",
						 quote_literal_cstr(values[k]), t->page_types[k]);
	appendStringInfoChar(sql, ')');
}

/*
 * " FROM <table> t WHERE ...": the rows after the last finished chunk that
 * the publication's row filter lets through.
 */
static void
pgrpl_append_chunk_from(StringInfo sql, PgrplSnapTable *t)
{
	appendStringInfo(sql, " FROM %s%s.%s t WHERE true",
					 t->relkind == 'p' ? "" : "ONLY ",
					 quote_identifier(t->schema_name), quote_identifier(t->table_name));
	if (t->row_filter)
		appendStringInfo(sql, " AND (%s)", t->row_filter);
	if (t->keyless)
		appendStringInfo(sql, " AND t.ctid OPERATOR(pg_catalog.>=) '(%u,0)'::pg_catalog.tid"
						 " AND t.ctid OPERATOR(pg_catalog.<) '(%u,0)'::pg_catalog.tid",
						 t->range_from, t->range_to);
	if (t->last_page)
		pgrpl_append_key_bound(sql, t, ">", t->last_page);
}

/*
 * " + size of t.a + size of t.b ...": a row's values' sizes from their
 * headers, nothing detoasted: octet_length() of text and bytea is their
 * uncompressed size, pg_column_size() of other types their stored one.
 */
static void
pgrpl_append_value_sizes(StringInfo sql, PgrplSnapTable *t)
{
	for (int i = 0; i < t->natts; i++)
	{
		const char *type = t->types[i];
		bool		raw = strcmp(type, "text") == 0 || strcmp(type, "bytea") == 0 ||
			strcmp(type, "character varying") == 0 || strcmp(type, "character") == 0;

		appendStringInfo(sql, " OPERATOR(pg_catalog.+) COALESCE(pg_catalog.%s(t.%s), 0)",
						 raw ? "octet_length" : "pg_column_size", quote_identifier(t->names[i]));
	}
}

/*
 * The rows of the next chunk as subquery x (" FROM (...) x WHERE ..."):
 * at most PGRPL_SNAPSHOT_CHUNK_ROWS rows after the last finished chunk,
 * in key order, while the values before each row take less than
 * PGRPL_SNAPSHOT_CHUNK_BYTES.  x has the paging key as text[] (p), the
 * key's columns (k0, k1, ...), with "values" the published columns
 * (c0, c1, ...), and the row number (rn) and running size (cum); the
 * test whether the chunk ends the table is PGRPL_CHUNK_ENDS_TABLE on its
 * last row.  No count(*) over all rows and a float sum: both made the
 * probe cost as much as reading the rows.  The values stay columns of
 * their own, so TOASTed ones are not read for rows the bound leaves out.
 */
#define PGRPL_CHUNK_ENDS_TABLE \
	"(x.rn OPERATOR(pg_catalog.<) " CppAsString2(PGRPL_SNAPSHOT_CHUNK_ROWS) \
	" AND x.cum OPERATOR(pg_catalog.<) " CppAsString2(PGRPL_SNAPSHOT_CHUNK_BYTES) ")::pg_catalog.text"

static void
pgrpl_append_bounded_rows(StringInfo sql, PgrplSnapTable *t, bool values)
{
	StringInfoData keys;

	initStringInfo(&keys);
	for (int k = 0; k < t->npage; k++)
		appendStringInfo(&keys, "%ss.k%d", k > 0 ? ", " : "", k);
	appendStringInfoString(sql, " FROM (SELECT s.*, pg_catalog.row_number() OVER w AS rn,"
						   " pg_catalog.sum(s.sz) OVER w AS cum FROM (SELECT ARRAY[");
	for (int k = 0; k < t->npage; k++)
		appendStringInfo(sql, "%st.%s::pg_catalog.text", k > 0 ? ", " : "",
						 quote_identifier(t->page_names[k]));
	appendStringInfoString(sql, "]::pg_catalog.text AS p");
	for (int k = 0; k < t->npage; k++)
		appendStringInfo(sql, ", t.%s AS k%d", quote_identifier(t->page_names[k]), k);
	/* Their output functions' text, not a cast's (bool, inet, char(n)). */
	for (int i = 0; values && i < t->natts; i++)
		appendStringInfo(sql, ", t.%s AS c%d", quote_identifier(t->names[i]), i);
	appendStringInfoString(sql, ", 0::pg_catalog.float8");
	pgrpl_append_value_sizes(sql, t);
	appendStringInfoString(sql, " AS sz");
	pgrpl_append_chunk_from(sql, t);
	appendStringInfo(sql, " ORDER BY %s LIMIT %d) s WINDOW w AS (ORDER BY %s ROWS UNBOUNDED PRECEDING)) x"
					 " WHERE x.cum OPERATOR(pg_catalog.-) x.sz OPERATOR(pg_catalog.<) %d",
					 pgrpl_chunk_order(t), PGRPL_SNAPSHOT_CHUNK_ROWS, keys.data,
					 PGRPL_SNAPSHOT_CHUNK_BYTES);
	pfree(keys.data);
}

/*
 * Where the next chunk ends: the last key of at most
 * PGRPL_SNAPSHOT_CHUNK_ROWS rows whose values, before the last one, take
 * less than PGRPL_SNAPSHOT_CHUNK_BYTES (so at least one row), and whether
 * that is the end of the table.  A chunk is held in memory several times
 * over (the connection's result, its copy, the rows being written): with
 * values of 100MB it must be a row or two, not ten thousand, and the rows
 * before it say nothing about that.  The sizes come from the values'
 * headers, nothing is detoasted: octet_length() of text and bytea is their
 * uncompressed size, pg_column_size() of other types their stored one.
 */
static char *
pgrpl_chunk_probe_sql(PgrplSnapTable *t)
{
	StringInfoData sql;

	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT x.p, " PGRPL_CHUNK_ENDS_TABLE);
	pgrpl_append_bounded_rows(&sql, t, false);
	appendStringInfoString(&sql, " ORDER BY x.rn DESC LIMIT 1");
	return sql.data;
}

/*
 * The SELECT of the next chunk of a table whose columns convert here
 * (local_convert), with its end found in the same query: the probe's rows
 * (at most PGRPL_SNAPSHOT_CHUNK_ROWS, less than PGRPL_SNAPSHOT_CHUNK_BYTES
 * of values before the last) and the probe's end-of-table test as a last
 * column, read from the chunk's last row.  One scan of the rows on the
 * primary instead of two, and no round trip in between: a chunk read
 * ahead (pgrpl_snapshot_read_ahead) is read by the primary while the
 * worker writes the one before.  The values are columns of their own
 * under aliases, so TOASTed ones stay unread until the rows past the
 * byte bound have been left out (a whole-row value would detoast them).
 */
static char *
pgrpl_chunk_copy_sql(PgrplSnapTable *t)
{
	StringInfoData sql;

	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT x.p");
	for (int i = 0; i < t->natts; i++)
		appendStringInfo(&sql, ", x.c%d", i);
	appendStringInfoString(&sql, ", " PGRPL_CHUNK_ENDS_TABLE);
	pgrpl_append_bounded_rows(&sql, t, true);
	/* The window's order: no sort. */
	appendStringInfoString(&sql, " ORDER BY ");
	for (int k = 0; k < t->npage; k++)
		appendStringInfo(&sql, "%sx.k%d", k > 0 ? ", " : "", k);
	return sql.data;
}

/*
 * The SELECT of the next chunk (of a table whose rows the primary turns
 * into jsonb, or of a keyless one's piece), up to and including key
 * "last", as pgrpl_chunk_probe_sql found it.
 */
static char *
pgrpl_chunk_sql(PgrplSnapTable *t, char **last)
{
	StringInfoData sql;

	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT ARRAY[");
	for (int k = 0; k < t->npage; k++)
		appendStringInfo(&sql, "%st.%s::pg_catalog.text", k > 0 ? ", " : "",
						 quote_identifier(t->page_names[k]));
	appendStringInfoString(&sql, "]::pg_catalog.text, ");
	if (t->key_literal)
		appendStringInfo(&sql, "(SELECT pg_catalog.jsonb_object_agg(e.key, e.value)"
						 " FROM pg_catalog.jsonb_each(pg_catalog.to_jsonb(t.*)) e"
						 " WHERE e.key OPERATOR(pg_catalog.=) ANY (%s))::pg_catalog.text, ",
						 t->key_literal);
	else
		appendStringInfoString(&sql, "NULL::pg_catalog.text, ");
	appendStringInfo(&sql, "(pg_catalog.to_jsonb(t.*) OPERATOR(pg_catalog.-) %s)::pg_catalog.text",
					 t->drop_literal);
	pgrpl_append_chunk_from(&sql, t);
	pgrpl_append_key_bound(&sql, t, "<=", last);
	appendStringInfo(&sql, " ORDER BY %s LIMIT %d", pgrpl_chunk_order(t), PGRPL_SNAPSHOT_CHUNK_ROWS);
	return sql.data;
}

/* "xmin:xmax:xip,..." of pg_current_snapshot() / txid_current_snapshot(). */
static void
pgrpl_parse_snapshot(PgrplChunk *c, const char *snap)
{
	char	   *end;
	const char *p = snap;
	int			cap = 16;

	c->xmin = strtou64(p, &end, 10);
	if (*end != ':')
		elog(ERROR, "unexpected snapshot \"%s\"", snap);
	c->xmax = strtou64(end + 1, &end, 10);
	if (*end != ':')
		elog(ERROR, "unexpected snapshot \"%s\"", snap);
	p = end + 1;
	c->nxip = 0;
	c->xip = MemoryContextAlloc(c->cxt, sizeof(uint64) * cap);
	while (*p)
	{
		if (c->nxip == cap)
		{
			cap *= 2;
			c->xip = repalloc(c->xip, sizeof(uint64) * cap);
		}
		c->xip[c->nxip++] = strtou64(p, &end, 10);
		p = (*end == ',') ? end + 1 : end;
		if (end == p && *p)
			elog(ERROR, "unexpected snapshot \"%s\"", snap);
	}
}

/*
 * Start the remote REPEATABLE READ transaction a chunk (or a keyless
 * table) is read in, and take its snapshot S.
 */
static void
pgrpl_snapshot_begin_read(PgrplChunk *c)
{
	bool		v13 = S.server_version >= 130000;
	WalRcvExecResult *res;
	TupleTableSlot *slot;
	char	   *snap;
	char	   *committed;
	char	  **items;

	MemoryContextReset(c->cxt);
	c->nrows = 0;
	c->prev_txn_id = -1;
	c->start_page = S.table->last_page;
	c->chunk_is_last = true;
	pgrpl_remote_command(S.conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", "start a snapshot transaction");
	res = pgrpl_remote_query(S.conn,
							 v13 ?
							 "SELECT pg_catalog.pg_current_snapshot()::pg_catalog.text,"
							 " (SELECT COALESCE(pg_catalog.array_agg(x), '{}') FROM pg_catalog.pg_snapshot_xip(pg_catalog.pg_current_snapshot()) x"
							 "   WHERE pg_catalog.pg_xact_status(x) OPERATOR(pg_catalog.=) 'committed')::pg_catalog.text" :
							 "SELECT pg_catalog.txid_current_snapshot()::pg_catalog.text,"
							 " (SELECT COALESCE(pg_catalog.array_agg(x), '{}') FROM pg_catalog.txid_snapshot_xip(pg_catalog.txid_current_snapshot()) x"
							 "   WHERE pg_catalog.txid_status(x) OPERATOR(pg_catalog.=) 'committed')::pg_catalog.text",
							 2, "read the snapshot");
	slot = MakeSingleTupleTableSlot(res->tupledesc, &TTSOpsMinimalTuple);
	if (!tuplestore_gettupleslot(res->tuplestore, true, false, slot))
		elog(ERROR, "no snapshot returned");
	snap = pgrpl_result_text(slot, 1);
	committed = pgrpl_result_text(slot, 2);
	ExecDropSingleTupleTableSlot(slot);
	walrcv_clear_result(res);
	pgrpl_parse_snapshot(c, snap);
	items = pgrpl_parse_text_array(committed, &c->ncommitted);
	c->committed = MemoryContextAlloc(c->cxt, sizeof(uint64) * Max(c->ncommitted, 1));
	for (int i = 0; i < c->ncommitted; i++)
		c->committed[i] = strtou64(items[i], NULL, 10);
	c->nwindow = 0;
}

/*
 * A row of a chunk (pgrpl_remote_copy_read), kept in the chunk's context:
 * the paging key's text[], then the columns' text and whether the table
 * ends here (local_convert), or the row's key and the row as jsonb text.
 * The primary printed the key with jsonb_object_agg, in the form
 * jsonb_out gives the log's keys here (sorted keys, one spacing), compared
 * as text by the stale-key filter: parsing it again here took most of a
 * chunk's read.
 */
static void
pgrpl_chunk_row(char **fields, void *arg)
{
	PgrplChunk *c = (PgrplChunk *) arg;
	PgrplChunkRow *r;

	if (c->nrows == c->maxrows)
	{
		c->maxrows *= 2;
		c->rows = repalloc(c->rows, sizeof(PgrplChunkRow) * c->maxrows);
	}
	r = &c->rows[c->nrows++];
	r->page = fields[0];
	if (S.table->local_convert)
	{
		r->values = palloc(sizeof(char *) * Max(S.table->natts, 1));
		memcpy(r->values, fields + 1, sizeof(char *) * S.table->natts);
		r->row_key = r->new_row = NULL;
		/* The last row says whether the table ends with it. */
		c->chunk_is_last = (fields[1 + S.table->natts] != NULL &&
							strcmp(fields[1 + S.table->natts], "true") == 0);
		return;
	}
	r->values = NULL;
	r->row_key = fields[1];
	r->new_row = fields[2];
}

/* A row of a keyless table's piece (ctid, key, row) onto the spool. */
static void
pgrpl_spool_row(char **fields, void *arg)
{
	Datum		values[2];
	bool		nulls[2];

	nulls[0] = (fields[1] == NULL);
	values[0] = fields[1] ? CStringGetTextDatum(fields[1]) : (Datum) 0;
	nulls[1] = false;
	values[1] = CStringGetTextDatum(fields[2]);
	tuplestore_putvalues(S.spool, S.spool_desc, values, nulls);
	S.cur->nrows++;
}

/*
 * Read the rows of chunk c (of a keyless table: of the next piece of its
 * block range, onto the spool) in the open remote transaction: where it
 * ends, then its COPY.  False if there are none.  Without wait, the rows
 * keep coming after the return (c->copying) for pgrpl_snapshot_read_more.
 */
static bool
pgrpl_snapshot_read_rows(PgrplChunk *c, bool wait)
{
	WalRcvExecResult *res;
	TupleTableSlot *slot;
	MemoryContext old;
	char	  **last = NULL;
	bool		is_end = true;

	if (S.table->local_convert)
	{
		/* Its end is found by the COPY itself (pgrpl_chunk_copy_sql). */
		old = MemoryContextSwitchTo(c->cxt);
		c->maxrows = 256;
		c->rows = palloc(sizeof(PgrplChunkRow) * c->maxrows);
		MemoryContextSwitchTo(old);
		pgrpl_remote_copy_start(S.conn, pgrpl_chunk_copy_sql(S.table), "read rows to copy");
		c->copying = true;
		pgrpl_snapshot_read_more(c, wait);
		return true;
	}

	/* Where the chunk ends (nothing: no rows left). */
	res = pgrpl_remote_query(S.conn, pgrpl_chunk_probe_sql(S.table), 2,
							 "find the end of the next chunk to copy");
	slot = MakeSingleTupleTableSlot(res->tupledesc, &TTSOpsMinimalTuple);
	if (tuplestore_gettupleslot(res->tuplestore, true, false, slot))
	{
		int			n;

		old = MemoryContextSwitchTo(S.cxt);
		last = pgrpl_parse_text_array(pgrpl_result_text(slot, 1), &n);
		MemoryContextSwitchTo(old);
		is_end = strcmp(pgrpl_result_text(slot, 2), "true") == 0;
		if (n != S.table->npage)
			elog(ERROR, "unexpected key of a chunk to copy");
	}
	ExecDropSingleTupleTableSlot(slot);
	walrcv_clear_result(res);
	if (last == NULL)
		return false;

	if (S.table->keyless)
	{
		pgrpl_remote_copy(S.conn, pgrpl_chunk_sql(S.table, last), 3,
						  pgrpl_spool_row, NULL, "read rows to copy");
		/* The piece ends at "last", or the range is done. */
		S.table->last_page = is_end ? NULL : last;
		if (is_end)
			S.table->range_from = S.table->range_to;
		return true;
	}
	c->chunk_is_last = is_end;
	old = MemoryContextSwitchTo(c->cxt);
	c->maxrows = 256;
	c->rows = palloc(sizeof(PgrplChunkRow) * c->maxrows);
	MemoryContextSwitchTo(old);
	pgrpl_remote_copy_start(S.conn, pgrpl_chunk_sql(S.table, last), "read rows to copy");
	c->copying = true;
	pgrpl_snapshot_read_more(c, wait);
	return true;
}

/* Take the rows of chunk c that have arrived; with wait, all of them. */
static void
pgrpl_snapshot_read_more(PgrplChunk *c, bool wait)
{
	MemoryContext old = MemoryContextSwitchTo(c->cxt);

	if (pgrpl_remote_copy_read(S.conn, S.table->local_convert ? 2 + S.table->natts : 3,
							   pgrpl_chunk_row, c, wait, "read rows to copy"))
		c->copying = false;
	MemoryContextSwitchTo(old);
}

/* Read the next chunk of S.table, with its snapshot. */
static void
pgrpl_snapshot_read_chunk(void)
{
	pgrpl_snapshot_begin_read(S.cur);
	(void) pgrpl_snapshot_read_rows(S.cur, true);
	pgrpl_remote_command(S.conn, "COMMIT", "end the snapshot transaction");
}

/*
 * Begin reading the chunk after the one in flight, while that one's
 * watermark is on its way and its rows are written: the primary reads
 * and sends the next one meanwhile, where it used to wait for the worker
 * and the worker for it (the copy took the sum of both).  The chunk has
 * a snapshot and a P of its own, taken now, when no commit has arrived
 * since the one in flight was read; its watermark goes out once the one
 * in flight has been handled (pgrpl_snapshot_step_guts).  Nothing of it
 * is written before then, so dropping it (pgrpl_snapshot_drop_ahead)
 * costs only the read.
 */
static void
pgrpl_snapshot_read_ahead(XLogRecPtr received)
{
	PgrplChunk *cur = S.cur;
	PgrplChunk *c = S.ahead;

	if (!S.in_flight || S.table == NULL || S.table->keyless || cur->chunk_is_last ||
		cur->nrows == 0)
		return;
	/* It starts after the last row of the one in flight. */
	pgrpl_snapshot_start_after(cur);
	c->received_before = received;
	pgrpl_snapshot_begin_read(c);
	c->active = true;
	if (pgrpl_snapshot_missed_commit(c) || !pgrpl_snapshot_read_rows(c, false))
	{
		/* Read it later, the usual way. */
		pgrpl_remote_command(S.conn, "COMMIT", "end the snapshot transaction");
		c->active = false;
	}
}

/*
 * The chunk in flight must be read again (or the session ends): the read
 * starts where it started, and the chunk read ahead is dropped with its
 * connection (its COPY or its transaction may still be open on it).
 */
static void
pgrpl_snapshot_drop_ahead(void)
{
	if (S.table != NULL && !S.table->keyless)
		S.table->last_page = S.cur->start_page;
	if (!S.ahead->active)
		return;
	S.ahead->active = false;
	S.ahead->copying = false;
	pgrpl_snapshot_disconnect();
}

/* The current table is finished (copied, gone or failed): on to the next. */
static void
pgrpl_snapshot_forget_table(void)
{
	S.table = NULL;
	S.cur_schema = S.cur_table = NULL;
}

/* Read this chunk again a little later (a hazard of the snapshot). */
static void
pgrpl_snapshot_retry_soon(void)
{
	S.retry_after = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												PGRPL_SNAPSHOT_HAZARD_RETRY_MS);
}

/* ---------------------------------------------------------------------
 * Tables without a key
 * --------------------------------------------------------------------- */

/* Forget the spool of a keyless table (its temporary file too). */
static void
pgrpl_spool_end(void)
{
	if (S.spool_slot != NULL)
		ExecClearTuple(S.spool_slot);
	if (S.spool != NULL)
		tuplestore_end(S.spool);
	S.spool = NULL;
	S.reading = false;
}

/*
 * Begin the spool: in TopMemoryContext, its file kept across the local
 * transactions until the watermark arrives (interXact).
 */
static void
pgrpl_spool_begin(void)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	pgrpl_spool_end();
	if (S.spool_desc == NULL)
	{
		S.spool_desc = CreateTemplateTupleDesc(2);
		TupleDescInitBuiltinEntry(S.spool_desc, 1, "row_key", TEXTOID, -1, 0);
		TupleDescInitBuiltinEntry(S.spool_desc, 2, "new_row", TEXTOID, -1, 0);
		S.spool_slot = MakeSingleTupleTableSlot(S.spool_desc, &TTSOpsMinimalTuple);
	}
	/*
	 * The spool outlives the step's transaction: its files must not be
	 * tied to that transaction's resource owner (nor remember it).
	 */
	{
		ResourceOwner owner = CurrentResourceOwner;

		CurrentResourceOwner = NULL;
		S.spool = tuplestore_begin_heap(false, true, work_mem);
		CurrentResourceOwner = owner;
	}
	MemoryContextSwitchTo(old);
}

/*
 * A chunk (of a keyless table: the whole table) has been read: put its
 * watermark into the stream, or, if it has no rows, the table is copied.
 */
static void
pgrpl_snapshot_chunk_read(void)
{
	if (S.cur->nrows == 0)
	{
		pgrpl_spool_end();
		pgrpl_snapshot_record("d", NULL, 0, NULL);
		pgrpl_snapshot_forget_table();
		return;
	}
	pgrpl_snapshot_emit_watermark();
	pgrpl_snapshot_record("c", NULL, 0, NULL);
}

/*
 * One step of copying a table without a key.  Its rows can be told apart
 * by nothing but their place, which is stable only within one snapshot:
 * the whole table is one chunk, read under one snapshot (the remote
 * transaction stays open across steps, streaming goes on between them)
 * a piece of at most PGRPL_KEYLESS_BLOCKS blocks (and a chunk's rows and
 * bytes) per step, spooled here, and written at its one watermark.  It
 * cannot resume: after a crash the copy starts over (nothing of it was
 * written before its watermark).
 */
static void
pgrpl_snapshot_step_keyless(XLogRecPtr received)
{
	PgrplSnapTable *t = S.table;

	if (!S.reading)
	{
		WalRcvExecResult *res;
		TupleTableSlot *slot;

		S.cur->received_before = received;
		pgrpl_snapshot_begin_read(S.cur);
		if (pgrpl_snapshot_missed_commit(S.cur))
		{
			pgrpl_remote_command(S.conn, "COMMIT", "end the snapshot transaction");
			pgrpl_snapshot_retry_soon();
			return;
		}
		/* Blocks added after S hold no row S sees. */
		res = pgrpl_remote_query(S.conn,
								 psprintf("SELECT (pg_catalog.pg_relation_size(%u)"
										  " OPERATOR(pg_catalog./) pg_catalog.current_setting('block_size')::pg_catalog.int8)::pg_catalog.text",
										  t->remote_oid),
								 1, "read the size of the table to copy");
		slot = MakeSingleTupleTableSlot(res->tupledesc, &TTSOpsMinimalTuple);
		if (!tuplestore_gettupleslot(res->tuplestore, true, false, slot))
			elog(ERROR, "no table size returned");
		S.nblocks = (BlockNumber) strtoul(pgrpl_result_text(slot, 1), NULL, 10);
		ExecDropSingleTupleTableSlot(slot);
		walrcv_clear_result(res);
		t->range_from = 0;
		t->last_page = NULL;
		pgrpl_spool_begin();
		S.reading = true;
		pgrpl_snapshot_record("c", NULL, 0, NULL);
	}

	if (t->range_from < S.nblocks)
	{
		t->range_to = Min(S.nblocks, t->range_from + PGRPL_KEYLESS_BLOCKS);
		if (!pgrpl_snapshot_read_rows(S.cur, true))
		{
			t->range_from = t->range_to;
			t->last_page = NULL;
		}
		if (t->range_from < S.nblocks)
			return;				/* more in the next step */
	}

	pgrpl_remote_command(S.conn, "COMMIT", "end the snapshot transaction");
	S.reading = false;
	S.cur->chunk_is_last = true;
	pgrpl_snapshot_chunk_read();
}

/* Put the chunk's watermark into the stream. */
static void
pgrpl_snapshot_emit_watermark(void)
{
	WalRcvExecResult *res;
	char	   *sql;

	S.cur->watermark = MemoryContextStrdup(S.cur->cxt,
									  psprintf("%s/%d/%d/" UINT64_FORMAT, S.sub->system_identifier,
											   S.sub->id, MyProcPid, ++S.counter));
	sql = psprintf("SELECT pg_catalog.pg_logical_emit_message(true, %s, %s)::pg_catalog.text",
				   quote_literal_cstr(PGRPL_WATERMARK_PREFIX), quote_literal_cstr(S.cur->watermark));
	res = pgrpl_remote_query(S.conn, sql, 1, "emit the watermark of a snapshot chunk");
	walrcv_clear_result(res);
	S.in_flight = true;
	S.cur->emitted_at = GetCurrentTimestamp();
}

/*
 * Did chunk c's S see running a transaction whose commit the worker has
 * received already, at or before P?  Its changes are in the log before
 * P, and the chunk misses them.  Called before the worker handles any
 * stream message after S was taken (a chunk read ahead: right after its
 * S), so every commit received is one at or before P.
 */
static bool
pgrpl_snapshot_missed_commit(PgrplChunk *c)
{
	uint64		n = Min(S.nrecent, PGRPL_SNAPSHOT_RECENT_COMMITS);

	for (int i = 0; i < c->nxip; i++)
		for (uint64 j = 0; j < n; j++)
			if (S.recent[j] == (TransactionId) c->xip[i])
				return true;
	return false;
}

static void
pgrpl_snapshot_step_guts(XLogRecPtr received)
{
	if (S.ahead->active)
	{
		PgrplChunk *c = S.ahead;

		/*
		 * The chunk before it has been handled: the one read ahead takes
		 * its place (the rest of its rows first), then the next is read
		 * ahead of it.
		 */
		if (c->copying)
			pgrpl_snapshot_read_more(c, true);
		pgrpl_remote_command(S.conn, "COMMIT", "end the snapshot transaction");
		c->active = false;
		S.ahead = S.cur;
		S.cur = c;
		pgrpl_snapshot_chunk_read();
		pgrpl_snapshot_read_ahead(received);
		return;
	}
	if (S.table == NULL)
	{
		char	   *nsp,
				   *rel,
				   *last_key;
		MemoryContext old;

		TimestampTz wait_until;

		if (!pgrpl_snapshot_next(&nsp, &rel, &last_key, &wait_until))
		{
			/* Nothing left, or only tables that failed and wait. */
			if (wait_until != 0)
				S.retry_after = wait_until;
			else
				S.done = true;
			pgrpl_snapshot_disconnect();
			return;
		}
		MemoryContextReset(S.cxt);
		S.cur_schema = MemoryContextStrdup(S.cxt, nsp);
		S.cur_table = MemoryContextStrdup(S.cxt, rel);
		pgrpl_snapshot_connect();
		old = MemoryContextSwitchTo(S.cxt);
		S.table = pgrpl_snapshot_describe(nsp, rel);
		if (S.table != NULL && last_key != NULL)
		{
			int			n;

			S.table->last_page = pgrpl_parse_text_array(last_key, &n);
			if (n != S.table->npage)
				S.table->last_page = NULL;	/* the key changed: start over */
		}
		MemoryContextSwitchTo(old);
		if (S.table == NULL)
		{
			/* Dropped on the primary: nothing left to copy. */
			pgrpl_snapshot_record("d", NULL, 0, NULL);
			pgrpl_snapshot_forget_table();
			return;
		}
	}

	/* The connection was dropped with a chunk read ahead. */
	pgrpl_snapshot_connect();
	if (S.table->keyless)
	{
		pgrpl_snapshot_step_keyless(received);
		return;
	}
	S.cur->received_before = received;
	pgrpl_snapshot_read_chunk();
	if (pgrpl_snapshot_missed_commit(S.cur))
	{
		pgrpl_snapshot_retry_soon();
		return;
	}
	pgrpl_snapshot_chunk_read();
	pgrpl_snapshot_read_ahead(received);
}

/*
 * Table "name" (quoted schema.table) failed: try it again later, after 5 s,
 * then twice as long after each failure up to 5 min (a connection lost or
 * a privilege granted later heals by itself; a table that cannot be
 * copied costs one attempt and its last_error now and then), while the
 * other tables go on.  In TopMemoryContext.
 */
static void
pgrpl_snapshot_defer(char *name)
{
	PgrplDeferred *d = NULL;
	ListCell   *lc;
	int64		delay = PGRPL_SNAPSHOT_ERROR_RETRY_MS;

	foreach(lc, S.skip)
	{
		if (strcmp(((PgrplDeferred *) lfirst(lc))->name, name) == 0)
			d = lfirst(lc);
	}
	if (d == NULL)
	{
		d = MemoryContextAllocZero(TopMemoryContext, sizeof(PgrplDeferred));
		d->name = name;
		S.skip = lappend(S.skip, d);
	}
	else
		pfree(name);
	for (int i = 0; i < d->failures && delay < PGRPL_SNAPSHOT_DEFER_MAX_MS; i++)
		delay *= 2;
	d->failures++;
	d->retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
											  Min(delay, PGRPL_SNAPSHOT_DEFER_MAX_MS));
}

/*
 * Read the next chunk and put its watermark into the stream, unless one is
 * awaited (then only take the rows of the chunk read ahead) or nothing is
 * left.  Called between remote transactions, outside a local one.  An
 * error (no privilege, a lost connection) is recorded on the table's row,
 * and the table is tried again later (pgrpl_snapshot_defer); streaming
 * goes on.
 */
void
pgrpl_snapshot_step(XLogRecPtr received)
{
	MemoryContext caller = CurrentMemoryContext;

	if (S.sub == NULL || S.done)
		return;
	/* While a watermark is awaited: only the rows of a chunk read ahead. */
	if (S.in_flight)
	{
		pgrpl_snapshot_poll();
		return;
	}
	if (S.retry_after != 0 && GetCurrentTimestamp() < S.retry_after)
		return;
	S.retry_after = 0;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	PG_TRY();
	{
		pgrpl_snapshot_step_guts(received);
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		char	   *name = NULL;

		MemoryContextSwitchTo(TopMemoryContext);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		MemoryContextSwitchTo(TopMemoryContext);
		pgrpl_snapshot_disconnect();
		S.in_flight = false;
		S.ahead->active = S.ahead->copying = false;
		pgrpl_spool_end();
		S.retry_after = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													PGRPL_SNAPSHOT_ERROR_RETRY_MS);
		if (S.cur_table != NULL)
		{
			ereport(WARNING,
					(errcode(edata->sqlerrcode),
					 errmsg("pgrpl subscription \"%s\" could not copy table \"%s.%s\": %s",
							S.sub->name, S.cur_schema, S.cur_table, edata->message)));
			name = MemoryContextStrdup(TopMemoryContext,
									   psprintf("%s.%s", quote_identifier(S.cur_schema),
												quote_identifier(S.cur_table)));
			StartTransactionCommand();
			PushActiveSnapshot(GetTransactionSnapshot());
			pgrpl_snapshot_record("e", NULL, 0, edata->message);
			PopActiveSnapshot();
			CommitTransactionCommand();
			/* From PG18 on the transaction's end returns to "caller". */
			MemoryContextSwitchTo(TopMemoryContext);
			pgrpl_snapshot_defer(name);
			pgrpl_snapshot_forget_table();
		}
		else
			ereport(WARNING,
					(errcode(edata->sqlerrcode),
					 errmsg("pgrpl subscription \"%s\" could not start copying a table: %s",
							S.sub->name, edata->message)));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);
}

/* ---------------------------------------------------------------------
 * The watermark
 * --------------------------------------------------------------------- */

static int
pgrpl_cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Is the transaction with this (32-bit) xid visible to the chunk's S? */
static bool
pgrpl_snapshot_sees(uint32 xid)
{
	/* The full xid nearest to xmax: all that matter are within 2^31 of it. */
	int64		full = (int64) S.cur->xmax + (int32) (xid - (uint32) S.cur->xmax);

	if (full >= (int64) S.cur->xmax)
		return false;
	if (full < (int64) S.cur->xmin)
		return true;
	for (int i = 0; i < S.cur->nxip; i++)
		if ((int64) S.cur->xip[i] == full)
			return false;
	return true;
}

/*
 * A key that a transaction invisible to S changed in the window (after P,
 * before W): the chunk's row of that key is older than the stream's
 * change.  Its row is left out -- unless every change of the key in the
 * window was an UPDATE of that key and the last one left a TOASTed column
 * unchanged (not sent): then nothing in the log has that column's value,
 * and the chunk has it (unchanged since S).  The row is then written at W
 * with the updates applied to it ("merge"), the current row.
 */
typedef struct PgrplStaleKey
{
	char	   *key;			/* canonical jsonb text; first: see bsearch */
	bool		merge_ok;		/* all its changes so far were plain updates */
	bool		merge;
} PgrplStaleKey;

/* One change of a key in the window, in commit order. */
typedef struct PgrplKeyEvent
{
	char	   *key;			/* first: sorted with pgrpl_cmp_str */
	uint64		order;
	bool		plain_update;	/* an UPDATE that kept the key */
	bool		unchanged;		/* it left some column unchanged */
} PgrplKeyEvent;

static int
pgrpl_cmp_key_event(const void *a, const void *b)
{
	const PgrplKeyEvent *x = a;
	const PgrplKeyEvent *y = b;
	int			c = strcmp(x->key, y->key);

	if (c != 0)
		return c;
	return (x->order > y->order) - (x->order < y->order);
}

/*
 * The window's changes of S.table (see below for which): SPI, ordered by
 * commit.  Driven by the window's transactions (the commit_lsn index), each
 * one's changes by txn_id, filtered by relation afterwards (OFFSET 0 keeps
 * the filter out of the subquery): through the relation's index the
 * planner would visit every row copied so far, at every chunk.  With
 * "key", only that key's changes, with their new rows.
 */
static void
pgrpl_snapshot_window_changes(const char *key)
{
	Oid			argtypes[6] = {INT4OID, LSNOID, TEXTOID, TEXTOID, TEXTOID, INT8OID};
	Datum		args[6];

	args[0] = Int32GetDatum(S.sub->id);
	args[1] = LSNGetDatum(S.cur->received_before);
	args[2] = CStringGetTextDatum(S.table->schema_name);
	args[3] = CStringGetTextDatum(S.table->table_name);
	args[4] = key ? CStringGetTextDatum(key) : (Datum) 0;
	args[5] = Int64GetDatum(S.cur->prev_txn_id);
	if (SPI_execute_with_args("SELECT t.xid, c.op, c.row_key::pg_catalog.text, c.old_key::pg_catalog.text,"
							  " c.unchanged IS NOT NULL, CASE WHEN $5 IS NOT NULL THEN c.new END"
							  " FROM pgrpl.transaction t"
							  " CROSS JOIN LATERAL (SELECT c.rel_id, c.seq, c.op, c.row_key, c.old_key, c.unchanged, c.new"
							  "   FROM pgrpl.change c"
							  "   WHERE c.sub_id OPERATOR(pg_catalog.=) t.sub_id AND c.txn_id OPERATOR(pg_catalog.=) t.txn_id"
							  "   OFFSET 0) c"
							  " WHERE t.sub_id OPERATOR(pg_catalog.=) $1 AND t.state OPERATOR(pg_catalog.=) 'c'"
							  "   AND t.commit_lsn OPERATOR(pg_catalog.>=) $2"
							  "   AND t.txn_id OPERATOR(pg_catalog.<>) $6"
							  "   AND c.rel_id OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT r.rel_id FROM pgrpl.relation r"
							  "         WHERE r.schema_name OPERATOR(pg_catalog.=) $3 AND r.table_name OPERATOR(pg_catalog.=) $4))"
							  "   AND ($5 IS NULL OR c.row_key::pg_catalog.text OPERATOR(pg_catalog.=) $5)"
							  " ORDER BY t.commit_lsn, c.seq",
							  6, argtypes, args, key ? "      " : "    n ", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the change log");
}

/*
 * Whether row "tup" of pgrpl_snapshot_window_changes() is a change that S
 * did not see (a non-transactional message's unit has no xid, and no key).
 */
static bool
pgrpl_snapshot_window_missed(HeapTuple tup, TupleDesc desc)
{
	bool		no_xid;
	int64		xid = DatumGetInt64(SPI_getbinval(tup, desc, 1, &no_xid));

	return !no_xid && !pgrpl_snapshot_sees((uint32) xid);
}

/*
 * The keys (sorted) that transactions invisible to S changed and committed
 * after P -- before W, as W is being captured now.  *truncated if one of
 * them truncated the table.
 */
static PgrplStaleKey *
pgrpl_snapshot_stale_keys(int *nkeys, bool *truncated)
{
	PgrplKeyEvent *events;
	PgrplStaleKey *keys;
	int			nevents = 0;
	int			n = 0;
	MemoryContext cxt = CurrentMemoryContext;

	*truncated = false;
	/*
	 * Rows written earlier in this local transaction count too: not
	 * read-only, so that SPI reads with a new command id, not with the
	 * snapshot the local transaction began with; and the rows the writer
	 * still buffers are written first.
	 */
	pgrpl_writer_flush();
	SPI_connect();
	pgrpl_snapshot_window_changes(NULL);
	events = MemoryContextAlloc(cxt, sizeof(PgrplKeyEvent) * Max(2 * SPI_processed, 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		char		op;
		char	   *k1;
		char	   *k0;
		bool		moved;

		if (!pgrpl_snapshot_window_missed(tup, desc))
			continue;
		op = DatumGetChar(SPI_getbinval(tup, desc, 2, &isnull));
		k1 = SPI_getvalue(tup, desc, 3);
		k0 = SPI_getvalue(tup, desc, 4);
		moved = (k0 != NULL && (k1 == NULL || strcmp(k0, k1) != 0));
		if (op == PGRPL_OP_TRUNCATE)
			*truncated = true;
		if (k1 != NULL)
		{
			events[nevents].key = MemoryContextStrdup(cxt, k1);
			events[nevents].order = i;
			events[nevents].plain_update = (op == PGRPL_OP_UPDATE && !moved);
			events[nevents].unchanged = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull));
			nevents++;
		}
		if (moved)
		{
			/* The row left this key: as a DELETE of it. */
			events[nevents].key = MemoryContextStrdup(cxt, k0);
			events[nevents].order = i;
			events[nevents].plain_update = false;
			events[nevents].unchanged = false;
			nevents++;
		}
	}
	SPI_finish();

	/* One entry per key: merge if all were plain updates, the last partial. */
	qsort(events, nevents, sizeof(PgrplKeyEvent), pgrpl_cmp_key_event);
	keys = MemoryContextAlloc(cxt, sizeof(PgrplStaleKey) * Max(nevents, 1));
	for (int i = 0; i < nevents; i++)
	{
		bool		plain = events[i].plain_update;

		if (i > 0 && strcmp(events[i].key, events[i - 1].key) == 0)
		{
			keys[n - 1].merge = keys[n - 1].merge_ok && plain && events[i].unchanged;
			keys[n - 1].merge_ok &= plain;
			continue;
		}
		keys[n].key = events[i].key;
		keys[n].merge_ok = plain;
		keys[n].merge = plain && events[i].unchanged;
		n++;
	}
	*nkeys = n;
	return keys;
}

/*
 * The chunk's row "base" of a key whose window changes were all UPDATEs of
 * it (see PgrplStaleKey) with those updates applied: each one's new row
 * lacks only the columns it left unchanged, so the later value of every
 * column wins, and a column no update sent keeps the chunk's value.
 */
static Jsonb *
pgrpl_snapshot_apply_updates(Jsonb *base, const char *key)
{
	MemoryContext cxt = CurrentMemoryContext;
	Datum		row = JsonbPGetDatum(base);

	SPI_connect();
	pgrpl_snapshot_window_changes(key);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		upd = SPI_getbinval(tup, desc, 6, &isnull);
		MemoryContext old;

		if (isnull || !pgrpl_snapshot_window_missed(tup, desc))
			continue;
		old = MemoryContextSwitchTo(cxt);
		row = DirectFunctionCall2(jsonb_concat, row, upd);
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	return DatumGetJsonbP(row);
}

/* The chunk row's values (local_convert), as the stream's are converted. */
static void
pgrpl_snapshot_convert_row(PgrplRelation *rel, LogicalRepTupleData *tup,
						   char **values, PgrplChangeRow *row)
{
	for (int i = 0; i < tup->ncols; i++)
	{
		StringInfo	v = &tup->colvalues[i];

		tup->colstatus[i] = values[i] ? LOGICALREP_COLUMN_TEXT : LOGICALREP_COLUMN_NULL;
		v->data = values[i];
		v->len = values[i] ? strlen(values[i]) : 0;
		v->maxlen = v->len + 1;
		v->cursor = 0;
	}
	row->row_key = pgrpl_tuple_key(rel, tup, NULL);
	row->new = pgrpl_tuple_to_jsonb(rel, tup, false, NULL);
}

/*
 * A watermark arrived in the current remote transaction (txn_id, the
 * message at lsn): if it is the awaited one, write the chunk's rows as its
 * changes from first_seq on and record the chunk.  Returns how many rows
 * were written (0 for anyone else's watermark, or a discarded chunk).
 */
int32
pgrpl_snapshot_watermark(const char *content, int len, int64 txn_id,
						 int32 first_seq, XLogRecPtr lsn)
{
	PgrplSnapTable *t = S.table;
	PgrplRelationDesc d;
	PgrplStaleKey *stale;
	int			nstale;
	int			merged = 0;
	bool		truncated;
	int32		rel_id;
	int32		written = 0;
	MemoryContext rowcxt;
	MemoryContext old;
	PgrplRelation *rel = NULL;
	LogicalRepTupleData tup;

	if (!S.in_flight || (int) strlen(S.cur->watermark) != len ||
		memcmp(S.cur->watermark, content, len) != 0)
		return 0;
	S.in_flight = false;
	if (S.ahead->active)
		S.ahead->prev_txn_id = txn_id;

	/*
	 * A transaction S saw running although the primary had committed it:
	 * if its commit arrived in the window, the stale keys below cover it;
	 * if before P, its changes are older than P and S missed them.
	 */
	for (int i = 0; i < S.cur->ncommitted; i++)
	{
		bool		in_window = false;

		for (int j = 0; j < S.cur->nwindow && !in_window; j++)
			in_window = (S.cur->window[j] == (TransactionId) S.cur->committed[i]);
		if (!in_window)
		{
			pgrpl_snapshot_drop_ahead();
			pgrpl_spool_end();
			pgrpl_snapshot_retry_soon();
			return 0;			/* read again, a little later */
		}
	}
	stale = pgrpl_snapshot_stale_keys(&nstale, &truncated);
	if (truncated)
	{
		pgrpl_snapshot_drop_ahead();
		pgrpl_spool_end();
		return 0;				/* read again, after the TRUNCATE */
	}

	d.remote_oid = t->remote_oid;
	d.schema_name = t->schema_name;
	d.table_name = t->table_name;
	d.replident = t->replident;
	d.natts = t->natts;
	d.names = t->names;
	d.types = t->types;
	d.is_key = t->is_key;
	d.first_lsn = lsn;
	rel_id = pgrpl_writer_relation_id(&d);

	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "pgrpl snapshot row",
								   ALLOCSET_DEFAULT_SIZES);
	if (t->keyless)
		tuplestore_rescan(S.spool);
	if (t->local_convert)
	{
		rel = pgrpl_snapshot_relation(t);
		tup.ncols = t->natts;
		tup.colvalues = palloc0(sizeof(StringInfoData) * Max(t->natts, 1));
		tup.colstatus = palloc0(Max(t->natts, 1));
	}
	for (int i = 0; i < S.cur->nrows; i++)
	{
		PgrplChunkRow spooled;
		PgrplChunkRow *r = &spooled;
		PgrplChangeRow row = {0};
		char	   *key;
		PgrplStaleKey *sk;

		/* A keyless table's rows can be many: one at a time in memory. */
		MemoryContextReset(rowcxt);
		old = MemoryContextSwitchTo(rowcxt);
		if (t->keyless)
		{
			bool		isnull;
			Datum		d;

			if (!tuplestore_gettupleslot(S.spool, true, false, S.spool_slot))
				elog(ERROR, "spooled rows to copy are missing");
			d = slot_getattr(S.spool_slot, 1, &isnull);
			spooled.row_key = isnull ? NULL : TextDatumGetCString(d);
			spooled.new_row = TextDatumGetCString(slot_getattr(S.spool_slot, 2, &isnull));

			/*
			 * A row read back from the spool's file is allocated here, in
			 * rowcxt, and owned by the slot: free it now, while rowcxt
			 * holds it.  Left in the slot, the next read (or the next
			 * table's) would pfree it after the reset above, or after
			 * rowcxt is deleted, and corrupt the allocator (a worker
			 * crashed in the planner of its next query that way).
			 */
			ExecClearTuple(S.spool_slot);
		}
		else
			r = &S.cur->rows[i];

		if (t->local_convert)
		{
			pgrpl_snapshot_convert_row(rel, &tup, r->values, &row);
			key = (nstale > 0 && row.row_key != NULL) ?
				JsonbToCString(NULL, &row.row_key->root, VARSIZE(row.row_key)) : NULL;
		}
		else
			key = r->row_key;
		sk = (key != NULL && nstale > 0) ?
			bsearch(&key, stale, nstale, sizeof(PgrplStaleKey), pgrpl_cmp_str) : NULL;
		if (sk != NULL && !sk->merge)
		{
			MemoryContextSwitchTo(old);
			continue;
		}
		if (!t->local_convert)
		{
			row.new = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(r->new_row)));
			row.row_key = r->row_key ?
				DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(r->row_key))) : NULL;
		}
		if (sk != NULL)
		{
			row.new = pgrpl_snapshot_apply_updates(row.new, key);
			merged++;
		}
		row.txn_id = txn_id;
		row.seq = first_seq + written;
		row.lsn = lsn;
		row.op = PGRPL_OP_SNAPSHOT;
		row.rel_id = rel_id;
		pgrpl_writer_insert_change(&row);
		MemoryContextSwitchTo(old);
		written++;
	}
	MemoryContextDelete(rowcxt);
	if (rel != NULL)
		pgrpl_relation_free(rel);

	ereport(DEBUG1,
			(errmsg_internal("pgrpl copied %d of %d rows of \"%s.%s\" (values converted %s, %d stale keys, %d rows updated to the watermark); watermark arrived %ld ms after it was emitted",
							 written, S.cur->nrows, t->schema_name, t->table_name,
							 t->local_convert ? "here" : "by the primary", nstale, merged,
							 (long) ((GetCurrentTimestamp() - S.cur->emitted_at) / 1000))));
	if (t->keyless)
	{
		/* One chunk, not resumable: "{}" counts it and is no key. */
		pgrpl_spool_end();
		pgrpl_snapshot_record("d", "{}", written, NULL);
		pgrpl_snapshot_forget_table();
		return written;
	}
	/* Where the next chunk starts, unless this one reached the end. */
	pgrpl_snapshot_record(S.cur->chunk_is_last ? "d" : "c",
						  S.cur->rows[S.cur->nrows - 1].page, written, NULL);
	pgrpl_snapshot_start_after(S.cur);
	if (S.cur->chunk_is_last)
	{
		pgrpl_snapshot_forget_table();
	}
	return written;
}

/* ---------------------------------------------------------------------
 * Sessions
 * --------------------------------------------------------------------- */

/* A worker session starts: copy what pgrpl.snapshot says is pending. */
void
pgrpl_snapshot_session_start(PgrplSubscription *sub)
{
	ListCell   *lc;

	if (S.cxt == NULL)
	{
		S.cxt = AllocSetContextCreate(TopMemoryContext, "pgrpl snapshot table",
									  ALLOCSET_DEFAULT_SIZES);
		for (int i = 0; i < 2; i++)
			S.chunks[i].cxt = AllocSetContextCreate(TopMemoryContext, "pgrpl snapshot chunk",
													ALLOCSET_DEFAULT_SIZES);
	}
	MemoryContextReset(S.cxt);
	for (int i = 0; i < 2; i++)
	{
		MemoryContextReset(S.chunks[i].cxt);
		S.chunks[i].active = S.chunks[i].copying = false;
	}
	S.cur = &S.chunks[0];
	S.ahead = &S.chunks[1];
	S.sub = sub;
	pgrpl_snapshot_forget_table();
	S.done = false;
	S.in_flight = false;
	S.retry_after = 0;
	foreach(lc, S.skip)
		pfree(((PgrplDeferred *) lfirst(lc))->name);
	list_free_deep(S.skip);
	S.skip = NIL;
}

/* The session ends: a chunk in flight is read again next time. */
void
pgrpl_snapshot_session_end(void)
{
	pgrpl_snapshot_disconnect();
	S.in_flight = false;
	if (S.ahead != NULL)
		S.ahead->active = S.ahead->copying = false;
	pgrpl_spool_end();
	pgrpl_snapshot_forget_table();
	S.sub = NULL;
}

/*
 * Whether pgrpl_snapshot_step() would read a chunk now: on a busy stream,
 * at most every PGRPL_SNAPSHOT_BUSY_MS, so that group commits stay large.
 */
bool
pgrpl_snapshot_due(void)
{
	TimestampTz now;

	if (S.sub == NULL || S.done || S.in_flight)
		return false;
	now = GetCurrentTimestamp();
	if (now < S.retry_after || now < S.last_busy_step + PGRPL_SNAPSHOT_BUSY_MS * 1000)
		return false;
	S.last_busy_step = now;
	return true;
}

/* Remember a commit in the window of chunk c. */
static void
pgrpl_chunk_note_commit(PgrplChunk *c, TransactionId xid)
{
	if (c->nwindow == c->maxwindow)
	{
		c->maxwindow = Max(64, c->maxwindow * 2);
		c->window = c->window == NULL ?
			MemoryContextAlloc(TopMemoryContext, sizeof(TransactionId) * c->maxwindow) :
			repalloc(c->window, sizeof(TransactionId) * c->maxwindow);
	}
	c->window[c->nwindow++] = xid;
}

/*
 * A transaction's commit arrived: remembered among the recent ones, and
 * in the window of each chunk being read or in flight (only needed to
 * clear the members of its snapshot the primary showed committed).
 */
void
pgrpl_snapshot_note_commit(TransactionId xid)
{
	S.recent[S.nrecent++ % PGRPL_SNAPSHOT_RECENT_COMMITS] = xid;
	if (S.cur == NULL)
		return;
	if ((S.in_flight || S.reading) && S.cur->ncommitted > 0)
		pgrpl_chunk_note_commit(S.cur, xid);
	if (S.ahead->active && S.ahead->ncommitted > 0)
		pgrpl_chunk_note_commit(S.ahead, xid);
}

/*
 * Whether a table is being copied in this session and wants the worker
 * back soon (for the next chunk or its watermark): not while every table
 * left waits to be tried again after an error.
 */
bool
pgrpl_snapshot_waiting(void)
{
	if (S.sub == NULL || S.done)
		return false;
	/* A retry within a second (a hazard's) counts as soon. */
	return S.in_flight || S.retry_after == 0 ||
		S.retry_after <= TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000);
}

/*
 * Take the rows of the chunk read ahead that have arrived, without
 * waiting: called while the worker writes (the writer's busy callback)
 * and while it waits for a watermark (pgrpl_snapshot_step), so that the
 * primary goes on sending them instead of waiting on a full socket (a TCP
 * connection's window starts at 64 kB; a chunk is about 1 MB).  Only libpq's reads run here (no shared state), so an error is
 * caught and turned into a WARNING: the chunk is dropped with its
 * connection and read again after the one in flight, while the local
 * transaction of the stream goes on.
 */
void
pgrpl_snapshot_poll(void)
{
	MemoryContext caller = CurrentMemoryContext;

	if (S.ahead == NULL || !S.ahead->active || !S.ahead->copying)
		return;
	PG_TRY();
	{
		pgrpl_snapshot_read_more(S.ahead, false);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();
		FlushErrorState();
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("pgrpl subscription \"%s\" could not read ahead in table \"%s.%s\": %s",
						S.sub->name, S.cur_schema, S.cur_table, edata->message),
				 errdetail("The rows will be read again.")));
		FreeErrorData(edata);
		S.ahead->active = S.ahead->copying = false;
		pgrpl_snapshot_disconnect();
	}
	PG_END_TRY();
}
