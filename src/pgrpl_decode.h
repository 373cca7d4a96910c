/*-------------------------------------------------------------------------
 * pgrpl_decode.h
 *		pgoutput protocol v1: bytes to structs.
 *
 * The decoder has no side effects and knows nothing of tables: it turns one
 * logical replication message into a PgrplMessage or throws an ERROR with
 * ERRCODE_PROTOCOL_VIOLATION.
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

typedef struct PgrplMessage
{
	LogicalRepMsgType type;
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
	}			u;
} PgrplMessage;

extern void pgrpl_decode_message(StringInfo in, PgrplMessage *msg);
extern const char *pgrpl_message_type_name(LogicalRepMsgType type);

#endif							/* PGRPL_DECODE_H */
