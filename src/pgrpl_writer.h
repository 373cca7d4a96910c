/*-------------------------------------------------------------------------
 * pgrpl_writer.h
 *		Change-log writer: captured changes and transactions to rows.
 *
 * This is where a change becomes a row.  The writer knows the change-log
 * tables and nothing of the replication protocol; the caller owns the local
 * transaction and the replication origin progress committed with it.
 *-------------------------------------------------------------------------
 */
#ifndef PGRPL_WRITER_H
#define PGRPL_WRITER_H

#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "utils/array.h"
#include "utils/jsonb.h"

#define PGRPL_OP_INSERT		'I'
#define PGRPL_OP_UPDATE		'U'
#define PGRPL_OP_DELETE		'D'
#define PGRPL_OP_TRUNCATE	'T'
#define PGRPL_OP_MESSAGE	'M'

typedef struct PgrplChangeRow
{
	XLogRecPtr	commit_lsn;
	int32		seq;
	XLogRecPtr	lsn;
	char		op;
	const char *schema_name;	/* NULL for messages */
	const char *table_name;
	Jsonb	   *old;
	Jsonb	   *new;
	ArrayType  *unchanged;
	const char *message_prefix; /* messages only */
	const char *message_content;
	int			message_len;
	Jsonb	   *row_key;		/* replica identity after the change, or NULL */
	Jsonb	   *old_key;		/* UPDATE: identity before, if it changed */
} PgrplChangeRow;

typedef struct PgrplTxnRow
{
	XLogRecPtr	commit_lsn;
	XLogRecPtr	end_lsn;
	TransactionId xid;
	TimestampTz commit_time;
	const char *origin;			/* NULL if none */
	XLogRecPtr	origin_lsn;
	int32		changes;
} PgrplTxnRow;

extern int64 pgrpl_key_hash(const char *schema_name, const char *table_name,
							Jsonb *key);
extern void pgrpl_writer_begin(int32 subid);
extern void pgrpl_writer_insert_change(const PgrplChangeRow *row);
extern void pgrpl_writer_insert_transaction(const PgrplTxnRow *row);
extern void pgrpl_writer_end(void);
extern void pgrpl_writer_reset(void);
extern bool pgrpl_writer_active(void);

#endif							/* PGRPL_WRITER_H */
