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

void
pgrpl_capture_init(PgrplCapture *cap, const PgrplSink *sink, bool loopback,
				   XLogRecPtr progress)
{
	HASHCTL		ctl;

	if (cap->rel_ids != NULL)
		hash_destroy(cap->rel_ids);
	memset(cap, 0, sizeof(*cap));
	cap->txn_id = -1;
	cap->sink = sink;
	cap->loopback = loopback;
	cap->progress = progress;
	ctl.keysize = sizeof(LogicalRepRelId);
	ctl.entrysize = sizeof(PgrplRelIdEntry);
	ctl.hcxt = TopMemoryContext;
	cap->rel_ids = hash_create("pgrpl relation versions", 64, &ctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
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

/*
 * Before the first row of the current remote transaction: the sink opens
 * what it writes into, and the transaction gets its id.
 */
static void
pgrpl_capture_open(PgrplCapture *cap)
{
	if (cap->txn_id >= 0)
		return;
	cap->sink->open(cap->sink->arg);
	cap->txn_id = cap->sink->new_txn_id(cap->sink->arg);
}

/* Write one row of the current remote transaction. */
static void
pgrpl_capture_row(PgrplCapture *cap, PgrplChangeRow *row, XLogRecPtr lsn)
{
	pgrpl_capture_open(cap);
	row->txn_id = cap->txn_id;
	row->seq = ++cap->seq;
	row->lsn = lsn;
	cap->sink->change(cap->sink->arg, row);
}

/* True when the changes of the current remote transaction are recorded. */
static bool
pgrpl_capturing(PgrplCapture *cap, const char *type)
{
	if (!cap->active)
		pgrpl_error_outside(type);
	return !cap->skip;
}

static void
pgrpl_capture_begin(PgrplCapture *cap, LogicalRepBeginData *b)
{
	if (cap->active)
		pgrpl_error_inside("BEGIN");
	cap->active = true;
	cap->final_lsn = b->final_lsn;
	cap->xid = b->xid;
	cap->has_origin = false;
	cap->origin[0] = '\0';
	cap->origin_lsn = InvalidXLogRecPtr;
	cap->seq = 0;
	cap->txn_id = -1;
	/* Sent again after a reconnect although we have it: skip it. */
	cap->skip = (b->final_lsn < cap->progress);
}

static void
pgrpl_capture_origin(PgrplCapture *cap, PgrplOriginMsg *o)
{
	if (!cap->active)
		pgrpl_error_outside("ORIGIN");
	strlcpy(cap->origin, o->name, NAMEDATALEN);
	cap->has_origin = true;
	cap->origin_lsn = o->lsn;
	/* Our own writes, decoded from this very cluster: never capture them. */
	if (cap->loopback && strncmp(cap->origin, PGRPL_ORIGIN_PREFIX,
								 strlen(PGRPL_ORIGIN_PREFIX)) == 0)
		cap->skip = true;
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
	pgrpl_capture_row(cap, &row, lsn);
}

/* One row per truncated relation that is captured. */
static void
pgrpl_capture_truncate(PgrplCapture *cap, PgrplTruncateMsg *t, XLogRecPtr lsn)
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
		pgrpl_capture_row(cap, &row, lsn);
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
pgrpl_capture_logical_message(PgrplCapture *cap, PgrplLogicalMsg *m, XLogRecPtr lsn)
{
	PgrplChangeRow row = {0};
	PgrplTxnRow txn = {0};

	row.op = PGRPL_OP_MESSAGE;
	row.message_prefix = m->prefix;
	row.message_content = m->content;
	row.message_len = m->len;

	if (m->transactional)
	{
		if (pgrpl_capturing(cap, "transactional MESSAGE"))
			pgrpl_capture_row(cap, &row, lsn);
		return PGRPL_CAPTURE_NONE;
	}
	if (cap->active)
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
	return PGRPL_CAPTURE_UNIT;
}

static PgrplCaptureResult
pgrpl_capture_commit(PgrplCapture *cap, LogicalRepCommitData *c)
{
	PgrplTxnRow txn = {0};

	if (!cap->active)
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
	cap->unit_changes = cap->seq;
	cap->unit_is_txn = true;
	if (cap->seq == 0)
		return PGRPL_CAPTURE_EMPTY_UNIT;	/* skipped or nothing captured */

	txn.txn_id = cap->txn_id;
	txn.state = PGRPL_TXN_COMMITTED;
	txn.commit_lsn = c->commit_lsn;
	txn.end_lsn = c->end_lsn;
	txn.has_xid = true;
	txn.xid = cap->xid;
	txn.commit_time = c->committime;
	txn.origin = cap->has_origin ? cap->origin : NULL;
	txn.origin_lsn = cap->origin_lsn;
	txn.changes = cap->seq;
	cap->sink->transaction(cap->sink->arg, &txn);
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
			pgrpl_capture_truncate(cap, &msg->u.truncate, lsn);
			break;
		case LOGICAL_REP_MSG_MESSAGE:
			return pgrpl_capture_logical_message(cap, &msg->u.message, lsn);
		default:
			/* The decoder only returns the types above. */
			elog(ERROR, "unexpected pgoutput message type %d", msg->type);
	}
	return PGRPL_CAPTURE_NONE;
}
