/*-------------------------------------------------------------------------
 * pgrpl_writer.h
 *		Change-log storage: rows, transactions, relation versions, partitions.
 *
 * The writer knows the change-log tables (storage 2.0) and nothing of the
 * replication protocol.  A change row refers to its transaction by txn_id,
 * which the writer hands out, so that changes can be written before their
 * transaction's commit position is known; a transaction row with a commit
 * LSN makes them visible.  The caller owns the local transaction and the
 * replication-origin progress committed with it.
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
#define PGRPL_OP_SNAPSHOT	'S'	/* a row as it was, copied by a snapshot */

/* pgrpl.transaction.state */
#define PGRPL_TXN_COMMITTED		'c'	/* a remote transaction, visible */
#define PGRPL_TXN_MESSAGE		'm'	/* a non-transactional message, visible */
#define PGRPL_TXN_IN_PROGRESS	'i'	/* rows written, no commit yet: invisible */
#define PGRPL_TXN_ABORTED		'a'	/* never committed: invisible, reclaimable */
#define PGRPL_TXN_PREPARED		'p'	/* prepared on the primary: invisible */

/*
 * The storage layout this library writes (pgrpl.storage_version()): 3 is
 * 2.0's with the two-phase columns of pgrpl.transaction (extension 2.1).
 */
#define PGRPL_STORAGE_VERSION	3

typedef struct PgrplChangeRow
{
	int64		txn_id;
	int32		seq;
	XLogRecPtr	lsn;
	char		op;
	int32		rel_id;			/* 0 for messages */
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
	int64		txn_id;
	char		state;			/* PGRPL_TXN_* */
	XLogRecPtr	commit_lsn;		/* Invalid: not committed */
	XLogRecPtr	end_lsn;
	bool		has_xid;		/* false for messages */
	TransactionId xid;
	TimestampTz commit_time;	/* 0: none */
	const char *origin;			/* NULL if none */
	XLogRecPtr	origin_lsn;
	int32		changes;
	const char *gid;			/* a prepared transaction's, or NULL */
	XLogRecPtr	prepare_lsn;	/* with gid */
	TimestampTz prepare_time;	/* with gid */
} PgrplTxnRow;

/* One version of a remote relation, as the stream described it. */
typedef struct PgrplRelationDesc
{
	Oid			remote_oid;
	const char *schema_name;
	const char *table_name;
	char		replident;		/* as pg_class.relreplident */
	int			natts;
	const char **names;
	const char **types;
	const bool *is_key;
	XLogRecPtr	first_lsn;
} PgrplRelationDesc;

extern void pgrpl_writer_check_storage(void);
extern void pgrpl_writer_create_log(int32 subid);
extern XLogRecPtr pgrpl_writer_session_start(int32 subid);
extern void pgrpl_writer_begin(int32 subid);
extern int64 pgrpl_writer_new_txn_id(void);
extern int32 pgrpl_writer_relation_id(const PgrplRelationDesc *desc);
extern void pgrpl_writer_insert_change(const PgrplChangeRow *row);
extern void pgrpl_writer_insert_transaction(const PgrplTxnRow *row);
extern void pgrpl_writer_finish_transaction(const PgrplTxnRow *row);
extern void pgrpl_writer_discard_changes(int64 txn_id, int32 from_seq);
extern bool pgrpl_writer_finish_prepared(const PgrplTxnRow *row);
extern bool pgrpl_writer_prepared_known(const char *gid, TransactionId xid);
extern void pgrpl_writer_abort_in_progress(void);
extern void pgrpl_writer_flush(void);
extern void pgrpl_writer_end(void);
extern void pgrpl_writer_apply_retention(void);
extern void pgrpl_writer_reset(void);
extern bool pgrpl_writer_active(void);

/*
 * Called every few hundred rows while buffered rows are written (a batch
 * takes milliseconds): the worker empties its socket meanwhile, so that a
 * long write does not stop the primary's walsender.  It must not touch the
 * change log.  NULL (the default): nothing is called.
 */
typedef void (*PgrplWriterBusyCallback) (void);
extern void pgrpl_writer_set_busy_callback(PgrplWriterBusyCallback callback);
extern void pgrpl_writer_set_short_batches(bool short_batches);

#endif							/* PGRPL_WRITER_H */
