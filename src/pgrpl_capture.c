/*-------------------------------------------------------------------------
 * pgrpl_capture.c
 *		Decoded pgoutput messages to change-log rows.
 *
 * One call per message.  The rules that decide what a change becomes live
 * here and nowhere else: which values are "old" and "new", the row's key
 * after the change and before it when the key changed, one TRUNCATE row per
 * relation, where a non-transactional message sits in the log, seq within a
 * transaction, and what is skipped.  Rows go to a sink (pgrpl_capture.h);
 * the module has no other side effects.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "pgrpl.h"
#include "pgrpl_capture.h"

typedef struct PgrplRelIdEntry
{
	LogicalRepRelId remoteid;	/* hash key */
	int32		rel_id;
} PgrplRelIdEntry;

/* Free what the streamed transactions hold, and the tables. */
void
pgrpl_capture_destroy(PgrplCapture *cap)
{
	if (cap->streams != NULL)
	{
		HASH_SEQ_STATUS status;
		PgrplRemoteTxn *t;

		hash_seq_init(&status, cap->streams);
		while ((t = hash_seq_search(&status)) != NULL)
			if (t->subxacts != NULL)
				pfree(t->subxacts);
		hash_destroy(cap->streams);
	}
	if (cap->rel_ids != NULL)
		hash_destroy(cap->rel_ids);
	cap->streams = NULL;
	cap->rel_ids = NULL;
	cap->nstreams = 0;
	cap->in_stream = false;
	cap->stream = NULL;
	cap->active = false;
}

/*
 * Start capturing a session.  Streamed transactions of an earlier session
 * are forgotten: the primary sends them again from their start.
 */
void
pgrpl_capture_init(PgrplCapture *cap, const PgrplSink *sink, bool loopback,
				   XLogRecPtr progress)
{
	HASHCTL		ctl;

	pgrpl_capture_destroy(cap);
	memset(cap, 0, sizeof(*cap));
	cap->txn.txn_id = -1;
	cap->sink = sink;
	cap->loopback = loopback;
	cap->progress = progress;
	ctl.keysize = sizeof(LogicalRepRelId);
	ctl.entrysize = sizeof(PgrplRelIdEntry);
	ctl.hcxt = TopMemoryContext;
	cap->rel_ids = hash_create("pgrpl relation versions", 64, &ctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	ctl.keysize = sizeof(TransactionId);
	ctl.entrysize = sizeof(PgrplRemoteTxn);
	cap->streams = hash_create("pgrpl streamed transactions", 16, &ctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/* The remote transaction rows go to now, if any (for error context). */
bool
pgrpl_capture_current_xid(PgrplCapture *cap, TransactionId *xid)
{
	if (cap->active)
		*xid = cap->txn.xid;
	else if (cap->in_stream)
		*xid = cap->stream->xid;
	else
		return false;
	return true;
}

/*
 * Relation versions are recorded in the local transaction that first uses
 * them; after that transaction aborted, the ids may not exist.
 */
void
pgrpl_capture_forget_relation_ids(PgrplCapture *cap)
{
	HASH_SEQ_STATUS status;
	PgrplRelIdEntry *e;

	hash_seq_init(&status, cap->rel_ids);
	while ((e = hash_seq_search(&status)) != NULL)
		(void) hash_search(cap->rel_ids, &e->remoteid, HASH_REMOVE, NULL);
}

/* A message that needs an open remote transaction came outside one. */
static void
pgrpl_error_outside(const char *type)
{
	ereport(ERROR,
			(errcode(ERRCODE_PROTOCOL_VIOLATION),
			 errmsg("unexpected %s outside a transaction", type)));
}

/* A message that must not come inside a remote transaction did. */
static void
pgrpl_error_inside(const char *type)
{
	ereport(ERROR,
			(errcode(ERRCODE_PROTOCOL_VIOLATION),
			 errmsg("unexpected %s inside a transaction", type)));
}

/* The relation dictionary's id of the version the stream last described. */
static int32
pgrpl_capture_rel_id(PgrplCapture *cap, PgrplRelation *rel, XLogRecPtr lsn)
{
	PgrplRelIdEntry *e;
	int32		rel_id;
	PgrplRelationDesc d;
	const char **names;
	const char **types;
	bool	   *is_key;

	e = hash_search(cap->rel_ids, &rel->remoteid, HASH_FIND, NULL);
	if (e != NULL)
		return e->rel_id;

	names = palloc(sizeof(char *) * Max(rel->natts, 1));
	types = palloc(sizeof(char *) * Max(rel->natts, 1));
	is_key = palloc(sizeof(bool) * Max(rel->natts, 1));
	for (int i = 0; i < rel->natts; i++)
	{
		names[i] = rel->cols[i].name;
		types[i] = rel->cols[i].type_name;
		is_key[i] = rel->cols[i].is_key;
	}
	d.remote_oid = rel->remoteid;
	d.schema_name = rel->nspname;
	d.table_name = rel->relname;
	d.replident = rel->replident;
	d.natts = rel->natts;
	d.names = names;
	d.types = types;
	d.is_key = is_key;
	d.first_lsn = lsn;
	/* Remembered only once the sink has it: an error leaves no entry. */
	rel_id = cap->sink->relation_id(cap->sink->arg, &d);
	e = hash_search(cap->rel_ids, &rel->remoteid, HASH_ENTER, NULL);
	e->rel_id = rel_id;
	return rel_id;
}

/* The remote transaction the current message belongs to. */
static PgrplRemoteTxn *
pgrpl_current(PgrplCapture *cap)
{
	return cap->active ? &cap->txn : cap->stream;
}

/* The transaction row of a remote transaction not (or never) committed. */
static void
pgrpl_uncommitted_row(PgrplRemoteTxn *t, char state, PgrplTxnRow *row)
{
	memset(row, 0, sizeof(*row));
	row->txn_id = t->txn_id;
	row->state = state;
	row->has_xid = true;
	row->xid = t->xid;
}

/*
 * Before the first row of the current remote transaction: the sink opens
 * what it writes into, and the transaction gets its id.  A streamed one
 * gets its transaction row now, in state 'i': invisible until its commit,
 * and it tells purge that the partition is still being written.
 */
static void
pgrpl_capture_open(PgrplCapture *cap)
{
	PgrplRemoteTxn *t = pgrpl_current(cap);

	cap->sink->open(cap->sink->arg);
	if (t->txn_id >= 0)
		return;
	t->txn_id = cap->sink->new_txn_id(cap->sink->arg);
	if (t->streamed)
	{
		PgrplTxnRow row;

		pgrpl_uncommitted_row(t, PGRPL_TXN_IN_PROGRESS, &row);
		cap->sink->transaction(cap->sink->arg, &row);
	}
}

/*
 * Remember where a subtransaction's rows start, at its first row: its abort
 * removes the rows from there on.
 */
static void
pgrpl_capture_note_subxact(PgrplRemoteTxn *t, TransactionId xid)
{
	if (!TransactionIdIsValid(xid) || xid == t->xid)
		return;
	/* Usually the same as the last one. */
	for (int i = t->nsubxacts - 1; i >= 0; i--)
		if (t->subxacts[i].xid == xid)
			return;
	if (t->nsubxacts == t->maxsubxacts)
	{
		t->maxsubxacts = Max(16, t->maxsubxacts * 2);
		t->subxacts = t->subxacts == NULL ?
			MemoryContextAlloc(TopMemoryContext, sizeof(PgrplSubxact) * t->maxsubxacts) :
			repalloc(t->subxacts, sizeof(PgrplSubxact) * t->maxsubxacts);
	}
	t->subxacts[t->nsubxacts].xid = xid;
	t->subxacts[t->nsubxacts].first_seq = t->seq + 1;
	t->nsubxacts++;
}

/* Write one row of the current remote transaction. */
static void
pgrpl_capture_row(PgrplCapture *cap, PgrplChangeRow *row, TransactionId xid,
				  XLogRecPtr lsn)
{
	PgrplRemoteTxn *t = pgrpl_current(cap);

	pgrpl_capture_open(cap);
	if (t->streamed)
		pgrpl_capture_note_subxact(t, xid);
	row->txn_id = t->txn_id;
	row->seq = ++t->seq;
	row->lsn = lsn;
	cap->sink->change(cap->sink->arg, row);
}

/* True when the changes of the current remote transaction are recorded. */
static bool
pgrpl_capturing(PgrplCapture *cap, const char *type)
{
	if (!cap->active && !cap->in_stream)
		pgrpl_error_outside(type);
	return !pgrpl_current(cap)->skip;
}

/* Forget a remote transaction's state (not the struct itself). */
static void
pgrpl_remote_txn_reset(PgrplRemoteTxn *t, TransactionId xid, bool streamed)
{
	if (t->subxacts != NULL)
		pfree(t->subxacts);
	memset(t, 0, sizeof(*t));
	t->xid = xid;
	t->streamed = streamed;
	t->txn_id = -1;
}

static void
pgrpl_capture_begin(PgrplCapture *cap, LogicalRepBeginData *b)
{
	if (cap->active || cap->in_stream)
		pgrpl_error_inside("BEGIN");
	cap->active = true;
	cap->preparing = false;
	cap->final_lsn = b->final_lsn;
	pgrpl_remote_txn_reset(&cap->txn, b->xid, false);
	/* Sent again after a reconnect although we have it: skip it. */
	cap->txn.skip = (b->final_lsn < cap->progress);
}

static void
pgrpl_capture_origin(PgrplCapture *cap, PgrplOriginMsg *o)
{
	PgrplRemoteTxn *t;

	if (!cap->active && !cap->in_stream)
		pgrpl_error_outside("ORIGIN");
	t = pgrpl_current(cap);
	strlcpy(t->origin, o->name, NAMEDATALEN);
	t->has_origin = true;
	t->origin_lsn = o->lsn;
	/*
	 * origin 'none' from a primary that cannot filter (before 16): the
	 * message comes before any change, and of a streamed transaction in
	 * its first block, whose skip the later blocks keep.
	 */
	if (cap->skip_origins)
		t->skip = true;
	/* Our own writes, decoded from this very cluster: never capture them. */
	if (cap->loopback && strncmp(t->origin, PGRPL_ORIGIN_PREFIX,
								 strlen(PGRPL_ORIGIN_PREFIX)) == 0)
		t->skip = true;
}

/*
 * INSERT, UPDATE, DELETE.  "old" is what the primary sent of the row
 * before (its key, or the whole row with REPLICA IDENTITY FULL); row_key is
 * the key after the change; old_key is set only when an UPDATE changed the
 * key, which is what row_history() follows.
 */
static void
pgrpl_capture_change(PgrplCapture *cap, PgrplMessage *msg, XLogRecPtr lsn)
{
	PgrplChangeMsg *c = &msg->u.change;
	PgrplRelation *rel = pgrpl_relmap_get(c->relid);
	PgrplChangeRow row = {0};

	cap->cur_rel = rel;
	if (!pgrpl_capturing(cap, pgrpl_message_type_name(msg->type)) || rel->skip)
		return;
	/* Converting values may read the catalogs: the sink opens first. */
	pgrpl_capture_open(cap);

	switch (msg->type)
	{
		case LOGICAL_REP_MSG_INSERT:
			row.op = PGRPL_OP_INSERT;
			row.new = pgrpl_tuple_to_jsonb(rel, &c->newtup, false, &row.unchanged);
			row.row_key = pgrpl_tuple_key(rel, &c->newtup, NULL);
			break;
		case LOGICAL_REP_MSG_UPDATE:
			row.op = PGRPL_OP_UPDATE;
			row.new = pgrpl_tuple_to_jsonb(rel, &c->newtup, false, &row.unchanged);
			if (c->old_kind != 0)
			{
				row.old = pgrpl_tuple_to_jsonb(rel, &c->oldtup, c->old_kind == 'K', NULL);
				row.old_key = (c->old_kind == 'K') ? row.old :
					pgrpl_tuple_key(rel, &c->oldtup, NULL);
			}
			row.row_key = pgrpl_tuple_key(rel, &c->newtup,
										  c->old_kind != 0 ? &c->oldtup : NULL);
			if (row.old_key != NULL && row.row_key != NULL &&
				pgrpl_jsonb_equal(row.old_key, row.row_key))
				row.old_key = NULL;
			break;
		case LOGICAL_REP_MSG_DELETE:
			row.op = PGRPL_OP_DELETE;
			row.old = pgrpl_tuple_to_jsonb(rel, &c->oldtup, c->old_kind == 'K', NULL);
			row.row_key = (c->old_kind == 'K') ? row.old :
				pgrpl_tuple_key(rel, &c->oldtup, NULL);
			break;
		default:
			Assert(false);
	}
	row.rel_id = pgrpl_capture_rel_id(cap, rel, lsn);
	pgrpl_capture_row(cap, &row, msg->xid, lsn);
}

/* One row per truncated relation that is captured. */
static void
pgrpl_capture_truncate(PgrplCapture *cap, PgrplTruncateMsg *t,
					   TransactionId xid, XLogRecPtr lsn)
{
	ListCell   *lc;

	if (!pgrpl_capturing(cap, "TRUNCATE"))
		return;
	foreach(lc, t->relids)
	{
		PgrplRelation *rel = pgrpl_relmap_get(lfirst_oid(lc));
		PgrplChangeRow row = {0};

		if (rel->skip)
			continue;
		cap->cur_rel = rel;
		pgrpl_capture_open(cap);
		row.op = PGRPL_OP_TRUNCATE;
		row.rel_id = pgrpl_capture_rel_id(cap, rel, lsn);
		pgrpl_capture_row(cap, &row, xid, lsn);
	}
}

/*
 * A non-transactional message is its own unit.  pgoutput sends the END of
 * the message's WAL record as its lsn, so a restart there skips it (the
 * walsender skips messages that start before its start point), yet still
 * sends a transaction whose commit record starts right there -- often the
 * very transaction that emitted the message.  So the message's row gets
 * lsn - 1 (inside its own record) as commit_lsn and lsn: unique, and before
 * that transaction; its unit ends at lsn.
 */
static PgrplCaptureResult
pgrpl_capture_logical_message(PgrplCapture *cap, PgrplLogicalMsg *m,
							  TransactionId xid, XLogRecPtr lsn)
{
	PgrplChangeRow row = {0};
	PgrplTxnRow txn = {0};

	/* pgrpl's own: a snapshot chunk goes where its watermark is. */
	if (strcmp(m->prefix, PGRPL_WATERMARK_PREFIX) == 0)
	{
		if (m->transactional && pgrpl_capturing(cap, "transactional MESSAGE") &&
			cap->sink->watermark != NULL)
		{
			PgrplRemoteTxn *t = pgrpl_current(cap);

			pgrpl_capture_open(cap);
			t->seq += cap->sink->watermark(cap->sink->arg, m->content, m->len,
										   t->txn_id, t->seq + 1, lsn);
		}
		return PGRPL_CAPTURE_NONE;
	}

	row.op = PGRPL_OP_MESSAGE;
	row.message_prefix = m->prefix;
	row.message_content = m->content;
	row.message_len = m->len;

	if (m->transactional)
	{
		if (pgrpl_capturing(cap, "transactional MESSAGE"))
			pgrpl_capture_row(cap, &row, xid, lsn);
		return PGRPL_CAPTURE_NONE;
	}
	if (cap->active || cap->in_stream)
		pgrpl_error_inside("non-transactional MESSAGE");
	if (m->lsn <= cap->progress)
		return PGRPL_CAPTURE_NONE;

	cap->sink->open(cap->sink->arg);
	row.txn_id = txn.txn_id = cap->sink->new_txn_id(cap->sink->arg);
	row.seq = 1;
	row.lsn = m->lsn - 1;
	cap->sink->change(cap->sink->arg, &row);
	txn.state = PGRPL_TXN_MESSAGE;
	txn.commit_lsn = m->lsn - 1;
	txn.end_lsn = m->lsn;
	txn.changes = 1;
	cap->sink->transaction(cap->sink->arg, &txn);

	cap->unit_end = m->lsn;
	cap->unit_commit_time = GetCurrentTimestamp();
	cap->unit_changes = 1;
	cap->unit_is_txn = false;
	cap->unit_streamed = false;
	return PGRPL_CAPTURE_UNIT;
}

/* The transaction row of a committed remote transaction. */
static void
pgrpl_committed_row(PgrplRemoteTxn *t, LogicalRepCommitData *c, PgrplTxnRow *row)
{
	row->txn_id = t->txn_id;
	row->state = PGRPL_TXN_COMMITTED;
	row->commit_lsn = c->commit_lsn;
	row->end_lsn = c->end_lsn;
	row->has_xid = true;
	row->xid = t->xid;
	row->commit_time = c->committime;
	row->origin = t->has_origin ? t->origin : NULL;
	row->origin_lsn = t->origin_lsn;
	row->changes = t->seq;
}

static PgrplCaptureResult
pgrpl_capture_commit(PgrplCapture *cap, LogicalRepCommitData *c)
{
	PgrplTxnRow txn = {0};

	if (!cap->active || cap->preparing)
		pgrpl_error_outside("COMMIT");
	if (c->commit_lsn != cap->final_lsn)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("incorrect commit LSN %X/%X in COMMIT message (expected %X/%X)",
						LSN_FORMAT_ARGS(c->commit_lsn),
						LSN_FORMAT_ARGS(cap->final_lsn))));
	cap->active = false;
	cap->unit_end = c->end_lsn;
	cap->unit_commit_time = c->committime;
	cap->unit_changes = cap->txn.seq;
	cap->unit_is_txn = true;
	cap->unit_xid = cap->txn.xid;
	cap->unit_streamed = false;
	if (cap->txn.seq == 0)
		return PGRPL_CAPTURE_EMPTY_UNIT;	/* skipped or nothing captured */

	pgrpl_committed_row(&cap->txn, c, &txn);
	cap->sink->transaction(cap->sink->arg, &txn);
	return PGRPL_CAPTURE_UNIT;
}

/* ---- streamed transactions (protocol 2) ---- */

static PgrplRemoteTxn *
pgrpl_stream_find(PgrplCapture *cap, TransactionId xid, const char *type)
{
	PgrplRemoteTxn *t = hash_search(cap->streams, &xid, HASH_FIND, NULL);

	if (t == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("unexpected %s for transaction %u, which is not being streamed",
						type, xid)));
	return t;
}

static void
pgrpl_stream_forget(PgrplCapture *cap, PgrplRemoteTxn *t)
{
	TransactionId xid = t->xid;

	pgrpl_remote_txn_reset(t, xid, true);
	(void) hash_search(cap->streams, &xid, HASH_REMOVE, NULL);
	cap->nstreams--;
}

/*
 * STREAM START: a chunk of transaction xid follows.  Its first chunk starts
 * it; every later one continues it (after a reconnect the primary streams a
 * transaction again from its first chunk).
 */
static void
pgrpl_capture_stream_start(PgrplCapture *cap, PgrplStreamStartMsg *m)
{
	PgrplRemoteTxn *t;
	bool		found;

	if (cap->active || cap->in_stream)
		pgrpl_error_inside("STREAM START");
	if (!m->first_segment)
		t = pgrpl_stream_find(cap, m->xid, "STREAM START");
	else
	{
		t = hash_search(cap->streams, &m->xid, HASH_ENTER, &found);
		if (found)
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("transaction %u is streamed a second time", m->xid)));
		memset(t, 0, sizeof(*t));
		pgrpl_remote_txn_reset(t, m->xid, true);
		cap->nstreams++;
	}
	cap->in_stream = true;
	cap->stream = t;
}

static void
pgrpl_capture_stream_stop(PgrplCapture *cap)
{
	if (!cap->in_stream)
		pgrpl_error_outside("STREAM STOP");
	cap->in_stream = false;
	cap->stream = NULL;
}

/* Make a streamed transaction's rows invisible and remove them. */
static void
pgrpl_stream_discard(PgrplCapture *cap, PgrplRemoteTxn *t)
{
	PgrplTxnRow row;

	if (t->txn_id < 0)
		return;					/* nothing was written */
	cap->sink->open(cap->sink->arg);
	cap->sink->discard(cap->sink->arg, t->txn_id, 1);
	pgrpl_uncommitted_row(t, PGRPL_TXN_ABORTED, &row);
	cap->sink->finish_transaction(cap->sink->arg, &row);
}

/*
 * A streamed transaction ends (commit or prepare at "lsn") with nothing to
 * keep: our own writes, nothing captured, or -- not expected, the walsender
 * streams only transactions that end after where it started -- already
 * here.  Its rows go, and the caller reports an empty unit.
 */
static bool
pgrpl_stream_ends_empty(PgrplCapture *cap, PgrplRemoteTxn *t, XLogRecPtr lsn)
{
	if (lsn < cap->progress)
		t->skip = true;
	if (!t->skip && t->seq > 0)
		return false;
	pgrpl_stream_discard(cap, t);
	pgrpl_stream_forget(cap, t);
	cap->unit_changes = 0;
	return true;
}

/* A streamed transaction's row gets its final state "row"; it is done. */
static void
pgrpl_stream_finish(PgrplCapture *cap, PgrplRemoteTxn *t, const PgrplTxnRow *row)
{
	cap->sink->open(cap->sink->arg);
	cap->sink->finish_transaction(cap->sink->arg, row);
	pgrpl_stream_forget(cap, t);
}

/*
 * STREAM COMMIT: the transaction's row gets its commit, which makes all its
 * rows visible at once -- the cost does not depend on how many there are.
 */
static PgrplCaptureResult
pgrpl_capture_stream_commit(PgrplCapture *cap, PgrplStreamCommitMsg *m)
{
	PgrplRemoteTxn *t;
	PgrplTxnRow txn = {0};

	if (cap->active || cap->in_stream)
		pgrpl_error_inside("STREAM COMMIT");
	t = pgrpl_stream_find(cap, m->xid, "STREAM COMMIT");
	cap->unit_end = m->commit.end_lsn;
	cap->unit_commit_time = m->commit.committime;
	cap->unit_changes = t->seq;
	cap->unit_is_txn = true;
	cap->unit_xid = m->xid;
	cap->unit_streamed = true;
	if (pgrpl_stream_ends_empty(cap, t, m->commit.commit_lsn))
		return PGRPL_CAPTURE_EMPTY_UNIT;
	pgrpl_committed_row(t, &m->commit, &txn);
	pgrpl_stream_finish(cap, t, &txn);
	return PGRPL_CAPTURE_UNIT;
}

/*
 * STREAM ABORT of the transaction (xid == subxid): nothing of it stays.  Of
 * a subtransaction: its rows and those of its own subtransactions go, which
 * are all the rows from its first one on (a subtransaction's rows end
 * before its parent's next row, and its abort is sent before that row).
 */
static void
pgrpl_capture_stream_abort(PgrplCapture *cap, PgrplStreamAbortMsg *m)
{
	PgrplRemoteTxn *t;

	if (cap->active || cap->in_stream)
		pgrpl_error_inside("STREAM ABORT");
	t = pgrpl_stream_find(cap, m->xid, "STREAM ABORT");
	if (m->subxid == m->xid)
	{
		pgrpl_stream_discard(cap, t);
		pgrpl_stream_forget(cap, t);
		return;
	}
	for (int i = 0; i < t->nsubxacts; i++)
	{
		if (t->subxacts[i].xid != m->subxid)
			continue;
		cap->sink->open(cap->sink->arg);
		cap->sink->discard(cap->sink->arg, t->txn_id, t->subxacts[i].first_seq);
		t->seq = t->subxacts[i].first_seq - 1;
		t->nsubxacts = i;
		return;
	}
	/* A subtransaction none of whose rows were captured. */
}

/* ---- two-phase (protocol 3) ---- */

/* The transaction row of a transaction prepared on the primary. */
static void
pgrpl_prepared_row(PgrplRemoteTxn *t, LogicalRepPreparedTxnData *p, PgrplTxnRow *row)
{
	row->txn_id = t->txn_id;
	row->state = PGRPL_TXN_PREPARED;
	row->end_lsn = p->end_lsn;
	row->has_xid = true;
	row->xid = t->xid;
	row->origin = t->has_origin ? t->origin : NULL;
	row->origin_lsn = t->origin_lsn;
	row->changes = t->seq;
	row->gid = p->gid;
	row->prepare_lsn = p->prepare_lsn;
	row->prepare_time = p->prepare_time;
}

/* What a PREPARE, of either kind, ended. */
static void
pgrpl_prepare_unit(PgrplCapture *cap, LogicalRepPreparedTxnData *p, int32 changes,
				   bool streamed)
{
	cap->unit_end = p->end_lsn;
	cap->unit_commit_time = p->prepare_time;
	cap->unit_changes = changes;
	/* The transaction counts when it commits. */
	cap->unit_is_txn = false;
	cap->unit_streamed = streamed;
}

/*
 * BEGIN PREPARE: like BEGIN, for a transaction that ends with PREPARE.  A
 * prepare LSN before progress does not mean the transaction is here: a
 * transaction prepared before the slot decoded at PREPARE (before its
 * two_phase_at) is sent whole at its COMMIT PREPARED, as BEGIN PREPARE ...
 * PREPARE with its old prepare LSN, then COMMIT PREPARED.  So it is
 * skipped only if the log holds it, prepared.
 */
static void
pgrpl_capture_begin_prepare(PgrplCapture *cap, LogicalRepPreparedTxnData *b)
{
	if (cap->active || cap->in_stream)
		pgrpl_error_inside("BEGIN PREPARE");
	cap->active = true;
	cap->preparing = true;
	cap->final_lsn = b->prepare_lsn;
	pgrpl_remote_txn_reset(&cap->txn, b->xid, false);
	if (b->prepare_lsn < cap->progress)
	{
		cap->sink->open(cap->sink->arg);
		cap->txn.skip = cap->sink->prepared_known(cap->sink->arg, b->gid, b->xid);
	}
}

/*
 * PREPARE: the transaction's rows stay invisible under a row in state 'p'.
 * A unit of its own: the primary will not send the transaction's changes
 * again, only its COMMIT or ROLLBACK PREPARED.
 */
static PgrplCaptureResult
pgrpl_capture_prepare(PgrplCapture *cap, LogicalRepPreparedTxnData *p)
{
	PgrplTxnRow txn = {0};

	if (!cap->active || !cap->preparing)
		pgrpl_error_outside("PREPARE");
	if (p->prepare_lsn != cap->final_lsn || p->xid != cap->txn.xid)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("PREPARE of transaction %u at %X/%X does not match BEGIN PREPARE of transaction %u at %X/%X",
						p->xid, LSN_FORMAT_ARGS(p->prepare_lsn),
						cap->txn.xid, LSN_FORMAT_ARGS(cap->final_lsn))));
	cap->active = false;
	cap->preparing = false;
	pgrpl_prepare_unit(cap, p, cap->txn.seq, false);
	/* Sent at its COMMIT PREPARED (see above): progress does not go back. */
	cap->unit_end = Max(cap->unit_end, cap->progress);
	if (cap->txn.seq == 0)
		return PGRPL_CAPTURE_EMPTY_UNIT;	/* skipped or nothing captured */

	pgrpl_prepared_row(&cap->txn, p, &txn);
	cap->sink->transaction(cap->sink->arg, &txn);
	return PGRPL_CAPTURE_UNIT;
}

/* STREAM PREPARE: a streamed transaction ('i') is prepared ('p'). */
static PgrplCaptureResult
pgrpl_capture_stream_prepare(PgrplCapture *cap, LogicalRepPreparedTxnData *p)
{
	PgrplRemoteTxn *t;
	PgrplTxnRow txn = {0};

	if (cap->active || cap->in_stream)
		pgrpl_error_inside("STREAM PREPARE");
	t = pgrpl_stream_find(cap, p->xid, "STREAM PREPARE");
	pgrpl_prepare_unit(cap, p, t->seq, true);
	if (pgrpl_stream_ends_empty(cap, t, p->prepare_lsn))
		return PGRPL_CAPTURE_EMPTY_UNIT;
	pgrpl_prepared_row(t, p, &txn);
	pgrpl_stream_finish(cap, t, &txn);
	return PGRPL_CAPTURE_UNIT;
}

/*
 * COMMIT PREPARED: the prepared transaction's row gets its commit, which
 * makes its rows visible at once.  If there is none (nothing of it was
 * captured), an empty unit.  A transaction prepared before the slot
 * decoded at PREPARE comes whole, as BEGIN ... COMMIT, instead.
 */
static PgrplCaptureResult
pgrpl_capture_commit_prepared(PgrplCapture *cap, LogicalRepCommitPreparedTxnData *c)
{
	PgrplTxnRow txn = {0};

	if (cap->active || cap->in_stream)
		pgrpl_error_inside("COMMIT PREPARED");
	cap->unit_end = c->end_lsn;
	cap->unit_commit_time = c->commit_time;
	cap->unit_changes = 0;		/* counted at PREPARE */
	cap->unit_is_txn = true;
	cap->unit_xid = c->xid;
	cap->unit_streamed = false;
	/* Sent again after a reconnect although we have it. */
	if (c->commit_lsn < cap->progress)
		return PGRPL_CAPTURE_EMPTY_UNIT;

	cap->sink->open(cap->sink->arg);
	txn.state = PGRPL_TXN_COMMITTED;
	txn.commit_lsn = c->commit_lsn;
	txn.end_lsn = c->end_lsn;
	txn.commit_time = c->commit_time;
	txn.has_xid = true;
	txn.xid = c->xid;
	txn.gid = c->gid;
	if (!cap->sink->finish_prepared(cap->sink->arg, &txn))
		return PGRPL_CAPTURE_EMPTY_UNIT;
	return PGRPL_CAPTURE_UNIT;
}

/* ROLLBACK PREPARED: nothing of the prepared transaction stays. */
static PgrplCaptureResult
pgrpl_capture_rollback_prepared(PgrplCapture *cap,
								LogicalRepRollbackPreparedTxnData *r)
{
	PgrplTxnRow txn = {0};

	if (cap->active || cap->in_stream)
		pgrpl_error_inside("ROLLBACK PREPARED");
	cap->unit_end = r->rollback_end_lsn;
	cap->unit_commit_time = r->rollback_time;
	cap->unit_changes = 0;
	cap->unit_is_txn = false;
	cap->unit_streamed = false;
	if (r->rollback_end_lsn <= cap->progress)
		return PGRPL_CAPTURE_EMPTY_UNIT;

	cap->sink->open(cap->sink->arg);
	txn.state = PGRPL_TXN_ABORTED;
	txn.has_xid = true;
	txn.xid = r->xid;
	txn.gid = r->gid;
	if (!cap->sink->finish_prepared(cap->sink->arg, &txn))
		return PGRPL_CAPTURE_EMPTY_UNIT;
	return PGRPL_CAPTURE_UNIT;
}

/*
 * Capture one decoded message received at "lsn".  RELATION needs catalog
 * access: the caller provides a transaction for it.
 */
PgrplCaptureResult
pgrpl_capture_message(PgrplCapture *cap, PgrplMessage *msg, XLogRecPtr lsn)
{
	cap->cur_rel = NULL;
	switch (msg->type)
	{
		case LOGICAL_REP_MSG_BEGIN:
			pgrpl_capture_begin(cap, &msg->u.begin);
			break;
		case LOGICAL_REP_MSG_COMMIT:
			return pgrpl_capture_commit(cap, &msg->u.commit);
		case LOGICAL_REP_MSG_ORIGIN:
			pgrpl_capture_origin(cap, &msg->u.origin);
			break;
		case LOGICAL_REP_MSG_RELATION:
			/* A new description: the next change records a version if new. */
			(void) pgrpl_relmap_add_relation(msg->u.relation);
			(void) hash_search(cap->rel_ids, &msg->u.relation->remoteid,
							   HASH_REMOVE, NULL);
			break;
		case LOGICAL_REP_MSG_TYPE:
			pgrpl_relmap_add_type(&msg->u.type);
			break;
		case LOGICAL_REP_MSG_INSERT:
		case LOGICAL_REP_MSG_UPDATE:
		case LOGICAL_REP_MSG_DELETE:
			pgrpl_capture_change(cap, msg, lsn);
			break;
		case LOGICAL_REP_MSG_TRUNCATE:
			pgrpl_capture_truncate(cap, &msg->u.truncate, msg->xid, lsn);
			break;
		case LOGICAL_REP_MSG_MESSAGE:
			return pgrpl_capture_logical_message(cap, &msg->u.message,
												 msg->xid, lsn);
		case LOGICAL_REP_MSG_STREAM_START:
			pgrpl_capture_stream_start(cap, &msg->u.stream_start);
			break;
		case LOGICAL_REP_MSG_STREAM_STOP:
			pgrpl_capture_stream_stop(cap);
			break;
		case LOGICAL_REP_MSG_STREAM_COMMIT:
			return pgrpl_capture_stream_commit(cap, &msg->u.stream_commit);
		case LOGICAL_REP_MSG_STREAM_ABORT:
			pgrpl_capture_stream_abort(cap, &msg->u.stream_abort);
			break;
		case LOGICAL_REP_MSG_BEGIN_PREPARE:
			pgrpl_capture_begin_prepare(cap, &msg->u.prepare);
			break;
		case LOGICAL_REP_MSG_PREPARE:
			return pgrpl_capture_prepare(cap, &msg->u.prepare);
		case LOGICAL_REP_MSG_STREAM_PREPARE:
			return pgrpl_capture_stream_prepare(cap, &msg->u.prepare);
		case LOGICAL_REP_MSG_COMMIT_PREPARED:
			return pgrpl_capture_commit_prepared(cap, &msg->u.commit_prepared);
		case LOGICAL_REP_MSG_ROLLBACK_PREPARED:
			return pgrpl_capture_rollback_prepared(cap, &msg->u.rollback_prepared);
		default:
			/* The decoder only returns the types above. */
			elog(ERROR, "unexpected pgoutput message type %d", msg->type);
	}
	return PGRPL_CAPTURE_NONE;
}
