/*-------------------------------------------------------------------------
 * pgrpl_writer.c
 *		Insert change and transaction rows into the change log.
 *
 * Rows go straight to the table AM and the indexes, without SQL or SPI:
 * the writer runs once per captured change and must keep up with what a
 * walsender can decode.  Each row is written as it arrives, so memory does
 * not grow with the size of a remote transaction.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "common/hashfn.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"

#include "pgrpl.h"
#include "pgrpl_writer.h"

/* Column numbers of pgrpl.change and pgrpl.transaction (install script). */
enum
{
	CH_SUB_ID, CH_COMMIT_LSN, CH_SEQ, CH_LSN, CH_OP, CH_SCHEMA, CH_TABLE,
	CH_OLD, CH_NEW, CH_UNCHANGED, CH_MSG_PREFIX, CH_MSG_CONTENT, CH_ROW_KEY,
	CH_KEY_HASH, CH_OLD_KEY, CH_NATTS
};
enum
{
	TX_SUB_ID, TX_COMMIT_LSN, TX_END_LSN, TX_XID, TX_COMMIT_TIME, TX_ORIGIN,
	TX_ORIGIN_LSN, TX_CHANGES, TX_NATTS
};

/*
 * Rows of a table are buffered and written with table_multi_insert (one
 * WAL record and one buffer lock per page instead of per row, as COPY
 * does), then indexed.  The buffer is bounded in rows and bytes, so memory
 * does not grow with the remote transaction.
 */
#define PGRPL_BATCH_ROWS	1000
#define PGRPL_BATCH_BYTES	(4 * 1024 * 1024)

typedef struct PgrplTarget
{
	Relation	rel;
	ResultRelInfo *rri;
	TupleTableSlot *slots[PGRPL_BATCH_ROWS];
	int			nbuffered;
	Size		bytes;
	MemoryContext batchcxt;		/* the buffered tuples */
} PgrplTarget;

typedef struct PgrplWriter
{
	bool		active;
	int32		subid;
	EState	   *estate;
	PgrplTarget change;
	PgrplTarget txn;
} PgrplWriter;

static PgrplWriter writer;

static Relation
pgrpl_open_log_table(const char *name, int natts)
{
	Oid			relid = get_relname_relid(name, get_namespace_oid(PGRPL_SCHEMA, false));
	Relation	rel;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"%s.%s\" does not exist", PGRPL_SCHEMA, name),
				 errhint("Is the pgrpl extension installed in this database?")));
	rel = table_open(relid, RowExclusiveLock);
	if (RelationGetDescr(rel)->natts != natts)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("relation \"%s.%s\" has an unexpected definition", PGRPL_SCHEMA, name),
				 errhint("Update the extension with ALTER EXTENSION pgrpl UPDATE.")));
	return rel;
}

static void
pgrpl_target_open(PgrplTarget *t, const char *name, int natts, Index rti)
{
	t->rel = pgrpl_open_log_table(name, natts);
	t->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(t->rri, t->rel, rti, NULL, 0);
	ExecOpenIndices(t->rri, false);
	for (int i = 0; i < PGRPL_BATCH_ROWS; i++)
		t->slots[i] = NULL;		/* made on first use */
	t->nbuffered = 0;
	t->bytes = 0;
	t->batchcxt = AllocSetContextCreate(CurrentMemoryContext, "pgrpl batch",
										ALLOCSET_DEFAULT_SIZES);
}

/* Open the change log for the current local transaction. */
void
pgrpl_writer_begin(int32 subid)
{
	MemoryContext oldcxt;

	Assert(IsTransactionState());
	if (writer.active)
		return;

	/* Lives exactly as long as the local transaction. */
	oldcxt = MemoryContextSwitchTo(TopTransactionContext);
	writer.subid = subid;
	writer.estate = CreateExecutorState();
	pgrpl_target_open(&writer.change, "change", CH_NATTS, 1);
	pgrpl_target_open(&writer.txn, "transaction", TX_NATTS, 2);
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
}

bool
pgrpl_writer_active(void)
{
	return writer.active;
}

/* Write the buffered rows of a table and their index entries. */
static void
pgrpl_target_flush(PgrplTarget *t)
{
	if (t->nbuffered == 0)
		return;
	table_multi_insert(t->rel, t->slots, t->nbuffered,
					   GetCurrentCommandId(true), 0, NULL);
	for (int i = 0; i < t->nbuffered; i++)
	{
		if (t->rri->ri_NumIndices > 0)
			ExecInsertIndexTuples(t->rri, t->slots[i], writer.estate, false,
								  false, NULL, NIL);
		ExecClearTuple(t->slots[i]);
		ResetPerTupleExprContext(writer.estate);
	}
	t->nbuffered = 0;
	t->bytes = 0;
	MemoryContextReset(t->batchcxt);
}

static void
pgrpl_target_insert(PgrplTarget *t, Datum *values, bool *nulls)
{
	MemoryContext oldcxt;
	HeapTuple	tuple;
	TupleTableSlot *slot;

	/* Slots live as long as the local transaction, like the writer. */
	if (t->slots[t->nbuffered] == NULL)
	{
		oldcxt = MemoryContextSwitchTo(TopTransactionContext);
		t->slots[t->nbuffered] =
			MakeTupleTableSlot(RelationGetDescr(t->rel), &TTSOpsHeapTuple);
		MemoryContextSwitchTo(oldcxt);
	}
	slot = t->slots[t->nbuffered];

	/*
	 * The values live in per-message memory: the batch keeps a copy, owned
	 * by the slot so that table_multi_insert need not copy it again.
	 */
	oldcxt = MemoryContextSwitchTo(t->batchcxt);
	tuple = heap_form_tuple(RelationGetDescr(t->rel), values, nulls);
	MemoryContextSwitchTo(oldcxt);
	ExecStoreHeapTuple(tuple, slot, true);
	t->nbuffered++;
	t->bytes += tuple->t_len;
	if (t->nbuffered == PGRPL_BATCH_ROWS || t->bytes >= PGRPL_BATCH_BYTES)
		pgrpl_target_flush(t);
}

/* Low bits of a lookup key that hold an integer key (see pgrpl_key_hash). */
#define PGRPL_KEY_INT_BITS	48

static int
pgrpl_numeric_cmp(Numeric a, Numeric b)
{
	return DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(a),
											 NumericGetDatum(b)));
}

/* The value of an integral numeric within +-2^47. */
static bool
pgrpl_numeric_key_integer(Numeric num, int64 *result)
{
	const int64 limit = INT64CONST(1) << (PGRPL_KEY_INT_BITS - 1);
	bool		have_error = false;
	int64		i;

	if (numeric_is_nan(num) || numeric_is_inf(num))
		return false;
	/* int4 first: no range checks needed (the common case) */
	i = numeric_int4_opt_error(num, &have_error);
	if (have_error)
	{
		if (pgrpl_numeric_cmp(num, int64_to_numeric(-limit)) < 0 ||
			pgrpl_numeric_cmp(num, int64_to_numeric(limit)) >= 0)
			return false;
		i = DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(num)));
	}
	/* both conversions round: 5 and 5.0 are one key, but 5.5 is not 6 */
	if (pgrpl_numeric_cmp(int64_to_numeric(i), num) != 0)
		return false;
	*result = i;
	return true;
}

/* The integer of a key that is one integral number within +-2^47. */
static bool
pgrpl_key_integer(Jsonb *key, int64 *result)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	if (!JB_ROOT_IS_OBJECT(key) || JB_ROOT_COUNT(key) != 1)
		return false;
	it = JsonbIteratorInit(&key->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_VALUE)
			return v.type == jbvNumeric &&
				pgrpl_numeric_key_integer(v.val.numeric, result);
	}
	return false;
}

/*
 * The relation's hash seed, remembered for the last relation asked about:
 * consecutive rows are mostly of one table.
 */
static uint64
pgrpl_relation_seed(const char *schema_name, const char *table_name)
{
	static char last_schema[NAMEDATALEN];
	static char last_table[NAMEDATALEN];
	static uint64 last_seed;
	static bool valid = false;
	size_t		schema_len;
	size_t		table_len;
	uint64		seed;

	if (valid && strcmp(schema_name, last_schema) == 0 &&
		strcmp(table_name, last_table) == 0)
		return last_seed;
	schema_len = strlen(schema_name);
	table_len = strlen(table_name);
	seed = hash_bytes_extended((const unsigned char *) schema_name, schema_len, 0);
	seed = hash_bytes_extended((const unsigned char *) table_name, table_len, seed);
	/* names of any length hash right; only short ones are remembered */
	if (schema_len < NAMEDATALEN && table_len < NAMEDATALEN)
	{
		strcpy(last_schema, schema_name);
		strcpy(last_table, table_name);
		last_seed = seed;
		valid = true;
	}
	return seed;
}

/*
 * The lookup key that row_history() and table_as_of() find rows by (the
 * change log is indexed on it).  A key of one integer column -- by far the
 * most common primary key -- is kept in order: the relation's 16-bit tag,
 * then the integer.  New rows of a table with an ascending key then land on
 * the rightmost index pages, as in the table's own primary key, instead of
 * on a random page each (measured: a random key index made 1M inserted rows
 * cost ~2x the index time).  Every other key is jsonb's own extended hash
 * (stable: hash partitioning relies on it) seeded with the relation name.
 * Values are not unique -- the two families may meet and hashes collide --
 * so every query also compares the relation and row_key itself.
 */
int64
pgrpl_key_hash(const char *schema_name, const char *table_name, Jsonb *key)
{
	uint64		seed = pgrpl_relation_seed(schema_name, table_name);
	int64		i;

	if (pgrpl_key_integer(key, &i))
		return (int64) (((seed >> PGRPL_KEY_INT_BITS) << PGRPL_KEY_INT_BITS) |
						(uint64) (i + (INT64CONST(1) << (PGRPL_KEY_INT_BITS - 1))));
	return DatumGetInt64(DirectFunctionCall2(jsonb_hash_extended,
											 JsonbPGetDatum(key),
											 UInt64GetDatum(seed)));
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

	Assert(writer.active);
	memset(nulls, 0, sizeof(nulls));
	values[CH_SUB_ID] = Int32GetDatum(writer.subid);
	values[CH_COMMIT_LSN] = LSNGetDatum(row->commit_lsn);
	values[CH_SEQ] = Int32GetDatum(row->seq);
	values[CH_LSN] = LSNGetDatum(row->lsn);
	values[CH_OP] = CharGetDatum(row->op);
	values[CH_SCHEMA] = pgrpl_text_or_null(row->schema_name, &nulls[CH_SCHEMA]);
	values[CH_TABLE] = pgrpl_text_or_null(row->table_name, &nulls[CH_TABLE]);
	values[CH_OLD] = PointerGetDatum(row->old);
	nulls[CH_OLD] = (row->old == NULL);
	values[CH_NEW] = PointerGetDatum(row->new);
	nulls[CH_NEW] = (row->new == NULL);
	values[CH_UNCHANGED] = PointerGetDatum(row->unchanged);
	nulls[CH_UNCHANGED] = (row->unchanged == NULL);
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
	values[CH_ROW_KEY] = PointerGetDatum(row->row_key);
	nulls[CH_ROW_KEY] = nulls[CH_KEY_HASH] = (row->row_key == NULL);
	if (row->row_key != NULL)
		values[CH_KEY_HASH] = Int64GetDatum(pgrpl_key_hash(row->schema_name,
														   row->table_name,
														   row->row_key));
	values[CH_OLD_KEY] = PointerGetDatum(row->old_key);
	nulls[CH_OLD_KEY] = (row->old_key == NULL);

	pgrpl_target_insert(&writer.change, values, nulls);
}

void
pgrpl_writer_insert_transaction(const PgrplTxnRow *row)
{
	Datum		values[TX_NATTS];
	bool		nulls[TX_NATTS];

	Assert(writer.active);
	memset(nulls, 0, sizeof(nulls));
	values[TX_SUB_ID] = Int32GetDatum(writer.subid);
	values[TX_COMMIT_LSN] = LSNGetDatum(row->commit_lsn);
	values[TX_END_LSN] = LSNGetDatum(row->end_lsn);
	values[TX_XID] = Int64GetDatum((int64) row->xid);
	values[TX_COMMIT_TIME] = TimestampTzGetDatum(row->commit_time);
	values[TX_ORIGIN] = pgrpl_text_or_null(row->origin, &nulls[TX_ORIGIN]);
	values[TX_ORIGIN_LSN] = LSNGetDatum(row->origin_lsn);
	nulls[TX_ORIGIN_LSN] = (row->origin == NULL);
	values[TX_CHANGES] = Int32GetDatum(row->changes);

	pgrpl_target_insert(&writer.txn, values, nulls);
}

static void
pgrpl_target_close(PgrplTarget *t)
{
	pgrpl_target_flush(t);
	ExecCloseIndices(t->rri);
	for (int i = 0; i < PGRPL_BATCH_ROWS && t->slots[i] != NULL; i++)
		ExecDropSingleTupleTableSlot(t->slots[i]);
	MemoryContextDelete(t->batchcxt);
	table_close(t->rel, NoLock);
}

/* Close the change log before the caller commits. */
void
pgrpl_writer_end(void)
{
	if (!writer.active)
		return;
	pgrpl_target_close(&writer.change);
	pgrpl_target_close(&writer.txn);
	FreeExecutorState(writer.estate);
	writer.active = false;
}
