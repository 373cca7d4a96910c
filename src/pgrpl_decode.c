/*-------------------------------------------------------------------------
 * pgrpl_decode.c
 *		Parse one pgoutput message (protocol versions 1 to 4, two-phase
 *		messages included).
 *
 * The server's own logicalrep_read_* readers do the parsing where they
 * exist.  They trust the lengths and counts they read: logicalrep_read_tuple
 * pallocs a column value's length (up to 1 GB) before checking it against
 * the message, and the relation and tuple readers allocate per-column arrays
 * from a count.  So a side-effect-free pre-scan walks the whole message
 * first and checks every count, length, string terminator, tag byte and
 * text encoding against the bytes actually present; only a message that
 * passes it reaches the server readers.  Those still run under PG_TRY (for
 * the few checks of their own, e.g. a zero final_lsn), any failure rethrown
 * as a protocol violation.  A message must be consumed exactly: trailing
 * bytes are an error too.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "libpq/pqformat.h"
#include "mb/pg_wchar.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "pgrpl_compat.h"
#include "pgrpl_decode.h"

static void pgrpl_decode_body(StringInfo in, PgrplMessage *msg);
static pgrpl_noreturn void pgrpl_protocol_error(const char *what, const char *detail);

const char *
pgrpl_message_type_name(LogicalRepMsgType type)
{
	switch (type)
	{
		case LOGICAL_REP_MSG_BEGIN:
			return "BEGIN";
		case LOGICAL_REP_MSG_COMMIT:
			return "COMMIT";
		case LOGICAL_REP_MSG_ORIGIN:
			return "ORIGIN";
		case LOGICAL_REP_MSG_RELATION:
			return "RELATION";
		case LOGICAL_REP_MSG_TYPE:
			return "TYPE";
		case LOGICAL_REP_MSG_INSERT:
			return "INSERT";
		case LOGICAL_REP_MSG_UPDATE:
			return "UPDATE";
		case LOGICAL_REP_MSG_DELETE:
			return "DELETE";
		case LOGICAL_REP_MSG_TRUNCATE:
			return "TRUNCATE";
		case LOGICAL_REP_MSG_MESSAGE:
			return "MESSAGE";
		case LOGICAL_REP_MSG_STREAM_START:
			return "STREAM START";
		case LOGICAL_REP_MSG_STREAM_STOP:
			return "STREAM STOP";
		case LOGICAL_REP_MSG_STREAM_COMMIT:
			return "STREAM COMMIT";
		case LOGICAL_REP_MSG_STREAM_ABORT:
			return "STREAM ABORT";
		case LOGICAL_REP_MSG_BEGIN_PREPARE:
			return "BEGIN PREPARE";
		case LOGICAL_REP_MSG_PREPARE:
			return "PREPARE";
		case LOGICAL_REP_MSG_COMMIT_PREPARED:
			return "COMMIT PREPARED";
		case LOGICAL_REP_MSG_ROLLBACK_PREPARED:
			return "ROLLBACK PREPARED";
		case LOGICAL_REP_MSG_STREAM_PREPARE:
			return "STREAM PREPARE";
		default:
			return NULL;
	}
}

/*
 * The messages that, inside a stream block, start with the xid of the
 * (sub)transaction they belong to (pgoutput's logicalrep_write_*).
 */
bool
pgrpl_message_has_stream_xid(LogicalRepMsgType type)
{
	switch (type)
	{
		case LOGICAL_REP_MSG_RELATION:
		case LOGICAL_REP_MSG_TYPE:
		case LOGICAL_REP_MSG_INSERT:
		case LOGICAL_REP_MSG_UPDATE:
		case LOGICAL_REP_MSG_DELETE:
		case LOGICAL_REP_MSG_TRUNCATE:
		case LOGICAL_REP_MSG_MESSAGE:
			return true;
		default:
			return false;
	}
}

static void
pgrpl_protocol_error(const char *what, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_PROTOCOL_VIOLATION),
			 errmsg("invalid pgoutput %s message", what),
			 detail ? errdetail_internal("%s", detail) : 0));
}

/* ---- the pre-scan: reads only, allocates nothing, never trusts a length ---- */

typedef struct PgrplScan
{
	const char *data;
	int			len;
	int			pos;
	const char *what;			/* message type name, for errors */
} PgrplScan;

static pgrpl_noreturn void pgrpl_scan_error(PgrplScan *s, const char *fmt, int a, int b)
			pg_attribute_printf(2, 0);
static void pgrpl_scan_text(PgrplScan *s, int n, const char *fmt, int a)
			pg_attribute_printf(3, 0);

static void
pgrpl_scan_error(PgrplScan *s, const char *fmt, int a, int b)
{
	char		detail[256];

	snprintf(detail, sizeof(detail), fmt, a, b);
	pgrpl_protocol_error(s->what, detail);
}

/* At least n more bytes must be present. */
static void
pgrpl_scan_need(PgrplScan *s, int n)
{
	if (n < 0 || s->len - s->pos < n)
		pgrpl_scan_error(s, "The message ends early: %d bytes needed at offset %d.",
						 n, s->pos + 1);
}

static uint32
pgrpl_scan_uint(PgrplScan *s, int nbytes)
{
	uint32		v = 0;

	pgrpl_scan_need(s, nbytes);
	for (int i = 0; i < nbytes; i++)
		v = (v << 8) | (unsigned char) s->data[s->pos++];
	return v;
}

/* n bytes of text: valid in the server encoding, no NUL. */
static void
pgrpl_scan_text(PgrplScan *s, int n, const char *fmt, int a)
{
	pgrpl_scan_need(s, n);
	if (!pg_verify_mbstr(GetDatabaseEncoding(), s->data + s->pos, n, true))
		pgrpl_scan_error(s, fmt, a, 0);
	s->pos += n;
}

/* A NUL-terminated string; maxlen > 0: an identifier shorter than that. */
static void
pgrpl_scan_string(PgrplScan *s, int maxlen)
{
	const char *start = s->data + s->pos;
	const char *nul = memchr(start, '\0', s->len - s->pos);
	int			slen;

	if (nul == NULL)
		pgrpl_scan_error(s, "Unterminated string at offset %d.", s->pos + 1, 0);
	slen = nul - start;
	if (maxlen > 0 && slen >= maxlen)
		pgrpl_scan_error(s, "A name of %d bytes at offset %d is too long.",
						 slen, s->pos + 1);
	pgrpl_scan_text(s, slen, "The string at offset %d is not valid in the server encoding.",
					s->pos + 1);
	s->pos++;					/* the NUL */
}

/* A tuple (TupleData): column count, then a kind byte and maybe a value each. */
static void
pgrpl_scan_tuple(PgrplScan *s)
{
	int			natts = (int) pgrpl_scan_uint(s, 2);

	if (natts > MaxTupleAttributeNumber)
		pgrpl_scan_error(s, "A tuple of %d columns (the maximum is %d).",
						 natts, MaxTupleAttributeNumber);
	/* each column takes at least its kind byte */
	pgrpl_scan_need(s, natts);
	for (int i = 0; i < natts; i++)
	{
		char		kind = (char) pgrpl_scan_uint(s, 1);
		int32		len;

		switch (kind)
		{
			case LOGICALREP_COLUMN_NULL:
			case LOGICALREP_COLUMN_UNCHANGED:
				break;
			case LOGICALREP_COLUMN_TEXT:
			case LOGICALREP_COLUMN_BINARY:
				len = (int32) pgrpl_scan_uint(s, 4);
				if (len < 0 || len > s->len - s->pos)
					pgrpl_scan_error(s, "Column %d has length %d, more than the message holds.",
									 i + 1, len);
				if (kind == LOGICALREP_COLUMN_TEXT)
					pgrpl_scan_text(s, len, "The text value of column %d is not valid in the server encoding.",
									i + 1);
				else
					s->pos += len;
				break;
			default:
				pgrpl_scan_error(s, "Column %d has unknown kind byte 0x%02x.",
								 i + 1, (unsigned char) kind);
		}
	}
}

/* RELATION: relid, namespace, name, replica identity, columns. */
static void
pgrpl_scan_relation(PgrplScan *s)
{
	int			natts;

	(void) pgrpl_scan_uint(s, 4);
	pgrpl_scan_string(s, NAMEDATALEN);
	pgrpl_scan_string(s, NAMEDATALEN);
	(void) pgrpl_scan_uint(s, 1);
	natts = (int) pgrpl_scan_uint(s, 2);
	if (natts > MaxTupleAttributeNumber)
		pgrpl_scan_error(s, "A relation of %d columns (the maximum is %d).",
						 natts, MaxTupleAttributeNumber);
	/* flags, name (at least its NUL), type oid, typmod */
	pgrpl_scan_need(s, natts * 10);
	for (int i = 0; i < natts; i++)
	{
		(void) pgrpl_scan_uint(s, 1);
		pgrpl_scan_string(s, NAMEDATALEN);
		(void) pgrpl_scan_uint(s, 4);
		(void) pgrpl_scan_uint(s, 4);
	}
}

/* INSERT / UPDATE / DELETE: relid, then tagged tuples. */
static void
pgrpl_scan_change(PgrplScan *s, LogicalRepMsgType type)
{
	char		tag;

	(void) pgrpl_scan_uint(s, 4);
	tag = (char) pgrpl_scan_uint(s, 1);
	if (type != LOGICAL_REP_MSG_INSERT && (tag == 'K' || tag == 'O'))
	{
		pgrpl_scan_tuple(s);
		if (type == LOGICAL_REP_MSG_DELETE)
			return;
		tag = (char) pgrpl_scan_uint(s, 1);
	}
	else if (type == LOGICAL_REP_MSG_DELETE)
		pgrpl_scan_error(s, "Old tuple tag 0x%02x (expected 'K' or 'O').",
						 (unsigned char) tag, 0);
	if (tag != 'N')
		pgrpl_scan_error(s, "New tuple tag 0x%02x (expected 'N').",
						 (unsigned char) tag, 0);
	pgrpl_scan_tuple(s);
}

/*
 * Check that the message body in "in" (from its cursor) is well formed for
 * its type, without changing "in" or allocating.
 */
static void
pgrpl_prescan(StringInfo in, LogicalRepMsgType type, const char *what,
			  bool stream_xid)
{
	PgrplScan	s;
	int			n;

	s.data = in->data;
	s.len = in->len;
	s.pos = in->cursor;
	s.what = what;

	if (stream_xid)
		(void) pgrpl_scan_uint(&s, 4);
	switch (type)
	{
		case LOGICAL_REP_MSG_BEGIN:
			pgrpl_scan_need(&s, 8 + 8 + 4);	/* final_lsn, time, xid */
			s.pos += 20;
			break;
		case LOGICAL_REP_MSG_COMMIT:
			pgrpl_scan_need(&s, 1 + 8 + 8 + 8); /* flags, lsns, time */
			s.pos += 25;
			break;
		case LOGICAL_REP_MSG_ORIGIN:
			pgrpl_scan_need(&s, 8);
			s.pos += 8;
			pgrpl_scan_string(&s, 0);
			break;
		case LOGICAL_REP_MSG_RELATION:
			pgrpl_scan_relation(&s);
			break;
		case LOGICAL_REP_MSG_TYPE:
			(void) pgrpl_scan_uint(&s, 4);
			pgrpl_scan_string(&s, NAMEDATALEN);
			pgrpl_scan_string(&s, NAMEDATALEN);
			break;
		case LOGICAL_REP_MSG_INSERT:
		case LOGICAL_REP_MSG_UPDATE:
		case LOGICAL_REP_MSG_DELETE:
			pgrpl_scan_change(&s, type);
			break;
		case LOGICAL_REP_MSG_TRUNCATE:
			n = (int) pgrpl_scan_uint(&s, 4);
			(void) pgrpl_scan_uint(&s, 1);
			if (n < 0 || n > (s.len - s.pos) / 4)
				pgrpl_scan_error(&s, "A count of %d relations, more than the message holds.",
								 n, 0);
			s.pos += n * 4;
			break;
		case LOGICAL_REP_MSG_MESSAGE:
			(void) pgrpl_scan_uint(&s, 1);
			pgrpl_scan_need(&s, 8);
			s.pos += 8;
			pgrpl_scan_string(&s, 0);
			n = (int) pgrpl_scan_uint(&s, 4);
			if (n < 0 || n > s.len - s.pos)
				pgrpl_scan_error(&s, "Content length %d, more than the message holds.",
								 n, 0);
			s.pos += n;
			break;
		case LOGICAL_REP_MSG_STREAM_START:
			pgrpl_scan_need(&s, 4 + 1); /* xid, first segment */
			s.pos += 5;
			break;
		case LOGICAL_REP_MSG_STREAM_STOP:
			break;
		case LOGICAL_REP_MSG_STREAM_COMMIT:
			pgrpl_scan_need(&s, 4 + 1 + 8 + 8 + 8); /* xid, flags, lsns, time */
			s.pos += 29;
			break;
		case LOGICAL_REP_MSG_STREAM_ABORT:
			/* xid, subxid, and with abort info (v4) its LSN and time */
			n = (s.len - s.pos == 4 + 4 + 8 + 8) ? 24 : 8;
			pgrpl_scan_need(&s, n);
			s.pos += n;
			break;

			/*
			 * Two-phase (protocol 3).  The gid goes into a GIDSIZE buffer
			 * with strlcpy: a longer one would be cut silently, so it is
			 * refused here.
			 */
		case LOGICAL_REP_MSG_BEGIN_PREPARE:
			pgrpl_scan_need(&s, 8 + 8 + 8 + 4); /* lsns, time, xid */
			s.pos += 28;
			pgrpl_scan_string(&s, GIDSIZE);
			break;
		case LOGICAL_REP_MSG_PREPARE:
		case LOGICAL_REP_MSG_STREAM_PREPARE:
		case LOGICAL_REP_MSG_COMMIT_PREPARED:
			pgrpl_scan_need(&s, 1 + 8 + 8 + 8 + 4); /* flags, lsns, time, xid */
			s.pos += 29;
			pgrpl_scan_string(&s, GIDSIZE);
			break;
		case LOGICAL_REP_MSG_ROLLBACK_PREPARED:
			pgrpl_scan_need(&s, 1 + 8 + 8 + 8 + 8 + 4); /* flags, lsns, times, xid */
			s.pos += 37;
			pgrpl_scan_string(&s, GIDSIZE);
			break;
		default:
			Assert(false);
	}
	if (s.pos != s.len)
		pgrpl_scan_error(&s, "%d bytes of trailing data.", s.len - s.pos, 0);
}

/*
 * Decode the message in "in" (starting at its cursor) into *msg.  On any
 * malformation, ERROR with ERRCODE_PROTOCOL_VIOLATION; *msg is then
 * undefined.  Memory is allocated in the current context.  in_stream: the
 * message came between STREAM START and STREAM STOP.
 */
void
pgrpl_decode_message(StringInfo in, PgrplMessage *msg, bool in_stream)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	const char *name;
	bool		stream_xid;

	if (in->cursor >= in->len)
		pgrpl_protocol_error("(empty)", "The message has no type byte.");

	msg->type = (LogicalRepMsgType) in->data[in->cursor];
	name = pgrpl_message_type_name(msg->type);
	if (name == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("invalid pgoutput message type \"%c\" (0x%02x)",
						isprint((unsigned char) msg->type) ? msg->type : '?',
						(unsigned char) msg->type),
				 errdetail("pgrpl knows the message types of pgoutput protocol versions 1 to 4.")));
	in->cursor++;
	stream_xid = in_stream && pgrpl_message_has_stream_xid(msg->type);

	/* Nothing reaches the server's readers before this succeeds. */
	pgrpl_prescan(in, msg->type, name, stream_xid);

	PG_TRY();
	{
		msg->xid = stream_xid ? (TransactionId) pq_getmsgint(in, 4) :
			InvalidTransactionId;
		pgrpl_decode_body(in, msg);
		if (in->cursor != in->len)
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("%d bytes of trailing data", in->len - in->cursor)));
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		/* Running out of memory is not the peer's fault: keep it as is. */
		if (edata->sqlerrcode == ERRCODE_OUT_OF_MEMORY)
			PG_RE_THROW();
		FlushErrorState();
		pgrpl_protocol_error(name, edata->message);
	}
	PG_END_TRY();
}

static void
pgrpl_decode_change(StringInfo in, PgrplMessage *msg)
{
	PgrplChangeMsg *c = &msg->u.change;
	int			start = in->cursor;	/* at the relation id */
	bool		has_old = false;

	memset(c, 0, sizeof(*c));
	switch (msg->type)
	{
		case LOGICAL_REP_MSG_INSERT:
			c->relid = logicalrep_read_insert(in, &c->newtup);
			break;
		case LOGICAL_REP_MSG_UPDATE:
			c->relid = logicalrep_read_update(in, &has_old, &c->oldtup, &c->newtup);
			/* The reader consumed the 'K'/'O' byte: it is right after relid. */
			if (has_old)
				c->old_kind = in->data[start + 4];
			break;
		case LOGICAL_REP_MSG_DELETE:
			/* Peek at the old-tuple kind the reader will check. */
			if (in->len - start >= 5)
				c->old_kind = in->data[start + 4];
			c->relid = logicalrep_read_delete(in, &c->oldtup);
			break;
		default:
			Assert(false);
	}
}

static void
pgrpl_decode_truncate(StringInfo in, PgrplMessage *msg)
{
	/* The pre-scan bounded the relation count by the bytes present. */
	msg->u.truncate.relids =
		logicalrep_read_truncate(in, &msg->u.truncate.cascade,
								 &msg->u.truncate.restart_seqs);
}

static void
pgrpl_decode_logical_message(StringInfo in, PgrplMessage *msg)
{
	PgrplLogicalMsg *m = &msg->u.message;
	int			flags = pq_getmsgbyte(in);

	if (flags & ~1)
		pgrpl_protocol_error("MESSAGE", "Unrecognized flags.");
	m->transactional = (flags & 1) != 0;
	m->lsn = pq_getmsgint64(in);
	m->prefix = pstrdup(pq_getmsgstring(in));
	m->len = pq_getmsgint(in, 4);
	if (m->len < 0)
		pgrpl_protocol_error("MESSAGE", "Negative content length.");
	m->content = pq_getmsgbytes(in, m->len);
}

/*
 * A commit time is a real, finite timestamp: anything else would be stored
 * in pgrpl.transaction as an invalid timestamptz.
 */
static void
pgrpl_check_commit_time(TimestampTz t)
{
	if (!IS_VALID_TIMESTAMP(t))
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("commit time " INT64_FORMAT " is out of range", t)));
}

/* A transaction id as the stream control messages carry it: never 0. */
static TransactionId
pgrpl_read_xid(StringInfo in, const char *what)
{
	TransactionId xid = (TransactionId) pq_getmsgint(in, 4);

	if (!TransactionIdIsValid(xid))
		pgrpl_protocol_error(what, "Invalid transaction id 0.");
	return xid;
}

/*
 * The stream control messages (protocol 2+), read here rather than by the
 * server's readers, whose signatures differ between major versions.
 */
static void
pgrpl_decode_stream(StringInfo in, PgrplMessage *msg)
{
	switch (msg->type)
	{
		case LOGICAL_REP_MSG_STREAM_START:
			msg->u.stream_start.xid = pgrpl_read_xid(in, "STREAM START");
			msg->u.stream_start.first_segment = pq_getmsgbyte(in) == 1;
			break;
		case LOGICAL_REP_MSG_STREAM_STOP:
			break;
		case LOGICAL_REP_MSG_STREAM_COMMIT:
			{
				PgrplStreamCommitMsg *c = &msg->u.stream_commit;

				c->xid = pgrpl_read_xid(in, "STREAM COMMIT");
				if (pq_getmsgbyte(in) != 0)
					pgrpl_protocol_error("STREAM COMMIT", "Unrecognized flags.");
				c->commit.commit_lsn = pq_getmsgint64(in);
				c->commit.end_lsn = pq_getmsgint64(in);
				c->commit.committime = pq_getmsgint64(in);
				if (XLogRecPtrIsInvalid(c->commit.commit_lsn) ||
					c->commit.end_lsn <= c->commit.commit_lsn)
					pgrpl_protocol_error("STREAM COMMIT", "Invalid commit or end LSN.");
				pgrpl_check_commit_time(c->commit.committime);
				break;
			}
		case LOGICAL_REP_MSG_STREAM_ABORT:
			{
				PgrplStreamAbortMsg *a = &msg->u.stream_abort;

				a->xid = pgrpl_read_xid(in, "STREAM ABORT");
				a->subxid = pgrpl_read_xid(in, "STREAM ABORT");
				a->has_abort_info = (in->len - in->cursor) > 0;
				a->abort_lsn = a->has_abort_info ? pq_getmsgint64(in) : InvalidXLogRecPtr;
				a->abort_time = a->has_abort_info ? pq_getmsgint64(in) : 0;
				break;
			}
		default:
			Assert(false);
	}
}

/* The LSNs a two-phase message carries: set, and its end after its start. */
static void
pgrpl_check_lsns(const char *what, XLogRecPtr start, XLogRecPtr end)
{
	if (XLogRecPtrIsInvalid(start) || end <= start)
		pgrpl_protocol_error(what, "Invalid LSN or end LSN.");
}

/*
 * The two-phase messages (protocol 3), read by the server's readers; the
 * pre-scan checked the lengths and the gid.  A transaction id of 0 would
 * not find its prepared transaction again.
 */
static void
pgrpl_decode_twophase(StringInfo in, PgrplMessage *msg)
{
	const char *what = pgrpl_message_type_name(msg->type);

	switch (msg->type)
	{
		case LOGICAL_REP_MSG_BEGIN_PREPARE:
		case LOGICAL_REP_MSG_PREPARE:
		case LOGICAL_REP_MSG_STREAM_PREPARE:
			{
				LogicalRepPreparedTxnData *p = &msg->u.prepare;

				if (msg->type == LOGICAL_REP_MSG_BEGIN_PREPARE)
					logicalrep_read_begin_prepare(in, p);
				else if (msg->type == LOGICAL_REP_MSG_PREPARE)
					logicalrep_read_prepare(in, p);
				else
					logicalrep_read_stream_prepare(in, p);
				pgrpl_check_lsns(what, p->prepare_lsn, p->end_lsn);
				pgrpl_check_commit_time(p->prepare_time);
				if (!TransactionIdIsValid(p->xid))
					pgrpl_protocol_error(what, "Invalid transaction id 0.");
				break;
			}
		case LOGICAL_REP_MSG_COMMIT_PREPARED:
			{
				LogicalRepCommitPreparedTxnData *c = &msg->u.commit_prepared;

				logicalrep_read_commit_prepared(in, c);
				pgrpl_check_lsns(what, c->commit_lsn, c->end_lsn);
				pgrpl_check_commit_time(c->commit_time);
				if (!TransactionIdIsValid(c->xid))
					pgrpl_protocol_error(what, "Invalid transaction id 0.");
				break;
			}
		case LOGICAL_REP_MSG_ROLLBACK_PREPARED:
			{
				LogicalRepRollbackPreparedTxnData *r = &msg->u.rollback_prepared;

				logicalrep_read_rollback_prepared(in, r);

				/*
				 * The prepare's end and time are 0 when the walsender did
				 * not decode the prepare in this session (e.g. it started
				 * after it): only the rollback's own are checked.
				 */
				if (XLogRecPtrIsInvalid(r->rollback_end_lsn) ||
					r->rollback_end_lsn <= r->prepare_end_lsn)
					pgrpl_protocol_error(what, "Invalid LSN or end LSN.");
				if (r->prepare_time != 0)
					pgrpl_check_commit_time(r->prepare_time);
				pgrpl_check_commit_time(r->rollback_time);
				if (!TransactionIdIsValid(r->xid))
					pgrpl_protocol_error(what, "Invalid transaction id 0.");
				break;
			}
		default:
			Assert(false);
	}
}

static void
pgrpl_decode_body(StringInfo in, PgrplMessage *msg)
{
	switch (msg->type)
	{
		case LOGICAL_REP_MSG_BEGIN:
			logicalrep_read_begin(in, &msg->u.begin);
			pgrpl_check_commit_time(msg->u.begin.committime);
			break;
		case LOGICAL_REP_MSG_COMMIT:
			logicalrep_read_commit(in, &msg->u.commit);
			pgrpl_check_commit_time(msg->u.commit.committime);
			break;
		case LOGICAL_REP_MSG_ORIGIN:
			msg->u.origin.name = logicalrep_read_origin(in, &msg->u.origin.lsn);
			break;
		case LOGICAL_REP_MSG_RELATION:
			msg->u.relation = logicalrep_read_rel(in);
			break;
		case LOGICAL_REP_MSG_TYPE:
			logicalrep_read_typ(in, &msg->u.type);
			break;
		case LOGICAL_REP_MSG_INSERT:
		case LOGICAL_REP_MSG_UPDATE:
		case LOGICAL_REP_MSG_DELETE:
			pgrpl_decode_change(in, msg);
			break;
		case LOGICAL_REP_MSG_TRUNCATE:
			pgrpl_decode_truncate(in, msg);
			break;
		case LOGICAL_REP_MSG_MESSAGE:
			pgrpl_decode_logical_message(in, msg);
			break;
		case LOGICAL_REP_MSG_STREAM_START:
		case LOGICAL_REP_MSG_STREAM_STOP:
		case LOGICAL_REP_MSG_STREAM_COMMIT:
		case LOGICAL_REP_MSG_STREAM_ABORT:
			pgrpl_decode_stream(in, msg);
			break;
		case LOGICAL_REP_MSG_BEGIN_PREPARE:
		case LOGICAL_REP_MSG_PREPARE:
		case LOGICAL_REP_MSG_COMMIT_PREPARED:
		case LOGICAL_REP_MSG_ROLLBACK_PREPARED:
		case LOGICAL_REP_MSG_STREAM_PREPARE:
			pgrpl_decode_twophase(in, msg);
			break;
		default:
			Assert(false);
	}
}

/*
 * Decode one message held in a bytea (the SQL functions' input): the
 * readers take strings in place, so they get a terminated copy.
 */
void
pgrpl_decode_bytea(bytea *raw, PgrplMessage *msg, bool in_stream)
{
	StringInfoData in;

	in.len = VARSIZE_ANY_EXHDR(raw);
	in.maxlen = in.len + 1;
	in.data = palloc(in.maxlen);
	memcpy(in.data, VARDATA_ANY(raw), in.len);
	in.data[in.len] = '\0';
	in.cursor = 0;
	pgrpl_decode_message(&in, msg, in_stream);
}
