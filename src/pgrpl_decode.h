/*-------------------------------------------------------------------------
 * pgrpl_decode.h
 *		pgoutput protocol versions 1 to 4: bytes to structs.
 *
 * The decoder has no side effects and knows nothing of tables: it turns one
 * logical replication message into a PgrplMessage or throws an ERROR with
 * ERRCODE_PROTOCOL_VIOLATION.  Between STREAM START and STREAM STOP
 * (protocol 2+) the messages that belong to a transaction carry its
 * (sub)transaction's xid first; the caller says whether it is inside such a
 * block, the decoder keeps no state of its own.
 *-------------------------------------------------------------------------
 */
#ifndef PGRPL_DECODE_H
#define PGRPL_DECODE_H

#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "replication/logicalproto.h"

typedef struct PgrplChangeMsg
{
	LogicalRepRelId relid;
	char		old_kind;		/* 'K' key, 'O' whole old row, 0 none */
	LogicalRepTupleData oldtup;
	LogicalRepTupleData newtup; /* unused for DELETE */
} PgrplChangeMsg;

typedef struct PgrplTruncateMsg
{
	List	   *relids;			/* LogicalRepRelId list (oids) */
	bool		cascade;
	bool		restart_seqs;
} PgrplTruncateMsg;

typedef struct PgrplLogicalMsg
{
	bool		transactional;
	XLogRecPtr	lsn;
	char	   *prefix;
	int			len;
	const char *content;
} PgrplLogicalMsg;

typedef struct PgrplOriginMsg
{
	char	   *name;
	XLogRecPtr	lsn;
} PgrplOriginMsg;

/* STREAM START: a chunk of an in-progress transaction follows. */
typedef struct PgrplStreamStartMsg
{
	TransactionId xid;
	bool		first_segment;
} PgrplStreamStartMsg;

/* STREAM COMMIT: a streamed transaction committed. */
typedef struct PgrplStreamCommitMsg
{
	TransactionId xid;
	LogicalRepCommitData commit;
} PgrplStreamCommitMsg;

/* STREAM ABORT: a streamed transaction (xid == subxid) or subtransaction. */
typedef struct PgrplStreamAbortMsg
{
	TransactionId xid;
	TransactionId subxid;
	bool		has_abort_info; /* protocol 4 with streaming 'parallel' */
	XLogRecPtr	abort_lsn;
	TimestampTz abort_time;
} PgrplStreamAbortMsg;

typedef struct PgrplMessage
{
	LogicalRepMsgType type;
	/* Inside a stream block: the (sub)transaction the message belongs to. */
	TransactionId xid;
	union
	{
		LogicalRepBeginData begin;
		LogicalRepCommitData commit;
		PgrplOriginMsg origin;
		LogicalRepRelation *relation;
		LogicalRepTyp type;
		PgrplChangeMsg change;	/* INSERT, UPDATE, DELETE */
		PgrplTruncateMsg truncate;
		PgrplLogicalMsg message;
		PgrplStreamStartMsg stream_start;
		PgrplStreamCommitMsg stream_commit;
		PgrplStreamAbortMsg stream_abort;
		/* BEGIN PREPARE, PREPARE, STREAM PREPARE (protocol 3) */
		LogicalRepPreparedTxnData prepare;
		LogicalRepCommitPreparedTxnData commit_prepared;
		LogicalRepRollbackPreparedTxnData rollback_prepared;
	}			u;
} PgrplMessage;

extern void pgrpl_decode_message(StringInfo in, PgrplMessage *msg, bool in_stream);
extern void pgrpl_decode_bytea(bytea *raw, PgrplMessage *msg, bool in_stream);
extern bool pgrpl_message_has_stream_xid(LogicalRepMsgType type);
extern const char *pgrpl_message_type_name(LogicalRepMsgType type);

#endif							/* PGRPL_DECODE_H */
