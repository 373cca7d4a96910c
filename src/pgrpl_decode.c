/*-------------------------------------------------------------------------
 * pgrpl_decode.c
 *		Parse one pgoutput (protocol version 1) message.
 *
 * The server's own logicalrep_read_* readers do the parsing where they
 * exist.  They report some malformations with elog() or allocation errors,
 * so every reader runs under PG_TRY and any failure is rethrown as a
 * protocol violation; lengths that would make a reader allocate wildly are
 * checked before it runs.  A message must be consumed exactly: trailing
 * bytes are an error too.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "libpq/pqformat.h"
#include "utils/memutils.h"

#include "pgrpl_decode.h"

static void pgrpl_decode_body(StringInfo in, PgrplMessage *msg);

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
		default:
			return NULL;
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

/*
 * Decode the message in "in" (starting at its cursor) into *msg.  On any
 * malformation, ERROR with ERRCODE_PROTOCOL_VIOLATION; *msg is then
 * undefined.  Memory is allocated in the current context.
 */
void
pgrpl_decode_message(StringInfo in, PgrplMessage *msg)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	const char *name;

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
				 errdetail("Only protocol version 1 messages are expected.")));
	in->cursor++;

	PG_TRY();
	{
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
	int			nrelids;
	List	   *relids;

	/* Bound the count by the bytes present before the reader allocates. */
	if (in->len - in->cursor < 5)
		pgrpl_protocol_error("TRUNCATE", "The message is too short.");
	memcpy(&nrelids, in->data + in->cursor, 4);
	nrelids = (int) pg_ntoh32(nrelids);
	if (nrelids < 0 || nrelids > (in->len - in->cursor - 5) / 4)
		pgrpl_protocol_error("TRUNCATE", "The relation count does not match the message length.");

	relids = logicalrep_read_truncate(in, &msg->u.truncate.cascade,
									  &msg->u.truncate.restart_seqs);
	msg->u.truncate.relids = relids;
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

static void
pgrpl_decode_body(StringInfo in, PgrplMessage *msg)
{
	switch (msg->type)
	{
		case LOGICAL_REP_MSG_BEGIN:
			logicalrep_read_begin(in, &msg->u.begin);
			break;
		case LOGICAL_REP_MSG_COMMIT:
			logicalrep_read_commit(in, &msg->u.commit);
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
		default:
			Assert(false);
	}
}
