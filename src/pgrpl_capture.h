/*-------------------------------------------------------------------------
 * pgrpl_capture.h
 *		Where a decoded pgoutput message becomes change-log rows.
 *
 * The capture module holds the state of the remote transaction being
 * received and decides what is recorded: old/new values and the row's key,
 * the TRUNCATE fan-out to one row per relation, the LSN rule of
 * non-transactional messages, seq and txn_id, skipping what is already
 * here and, on a loopback primary, our own writes.  It writes through a
 * small function table (a "sink"), so it knows neither sockets nor local
 * transactions: the worker's sink opens the local transaction and calls the
 * writer; pgrpl.capture_preview()'s sink collects the rows for inspection.
 *
 * A streamed transaction (protocol 2) is written while its chunks arrive,
 * under a transaction row in state 'i' that STREAM COMMIT completes in one
 * step; an abort removes its rows, a subtransaction's abort the rows from
 * that subtransaction's first one on (its later siblings and the parent's
 * later rows come after the abort in the stream).
 *
 * Two-phase (protocol 3): a transaction between BEGIN PREPARE and PREPARE
 * is received like one between BEGIN and COMMIT, a streamed one ends with
 * STREAM PREPARE; either way PREPARE leaves a transaction row in state 'p'
 * (invisible).  COMMIT PREPARED and ROLLBACK PREPARED, much later and
 * possibly in another session, find that row by gid and xid.
 *-------------------------------------------------------------------------
 */
#ifndef PGRPL_CAPTURE_H
#define PGRPL_CAPTURE_H

#include "pgrpl_decode.h"
#include "pgrpl_json.h"
#include "pgrpl_writer.h"

/*
 * Prefix of pgrpl's own logical messages: the watermarks of snapshot
 * chunks (see pgrpl_snapshot.c).  Never captured as messages.
 */
#define PGRPL_WATERMARK_PREFIX "pgrpl.watermark"

typedef struct PgrplSink
{
	void		(*open) (void *arg);	/* before a unit's first row is built */
	int64		(*new_txn_id) (void *arg);
	int32		(*relation_id) (void *arg, const PgrplRelationDesc *desc);
	void		(*change) (void *arg, const PgrplChangeRow *row);
	void		(*transaction) (void *arg, const PgrplTxnRow *row);
	/* A streamed transaction's row, written earlier, gets its final state. */
	void		(*finish_transaction) (void *arg, const PgrplTxnRow *row);
	/* Remove the changes of txn_id from seq from_seq on (an abort). */
	void		(*discard) (void *arg, int64 txn_id, int32 from_seq);

	/*
	 * COMMIT PREPARED (state 'c') or ROLLBACK PREPARED ('a') of the
	 * prepared transaction row->gid, row->xid; false if there is none.
	 */
	bool		(*finish_prepared) (void *arg, const PgrplTxnRow *row);
	/* Whether the log holds prepared transaction gid, xid (state 'p'). */
	bool		(*prepared_known) (void *arg, const char *gid, TransactionId xid);

	/*
	 * A watermark (content, len) in the current remote transaction, whose
	 * message is at lsn: write what belongs there as rows of txn_id from
	 * first_seq on; returns how many.  NULL: watermarks are ignored.
	 */
	int32		(*watermark) (void *arg, const char *content, int len, int64 txn_id,
							  int32 first_seq, XLogRecPtr lsn);
	void	   *arg;
} PgrplSink;

typedef enum PgrplCaptureResult
{
	PGRPL_CAPTURE_NONE,			/* nothing ended */
	PGRPL_CAPTURE_UNIT,			/* a unit with rows was written (see unit_*) */
	PGRPL_CAPTURE_EMPTY_UNIT	/* a transaction ended with nothing captured */
} PgrplCaptureResult;

/* A subtransaction of a streamed transaction, and where its rows start. */
typedef struct PgrplSubxact
{
	TransactionId xid;
	int32		first_seq;
} PgrplSubxact;

/*
 * One remote transaction whose changes are being received: the one between
 * BEGIN and COMMIT, or a streamed one (protocol 2) between its first STREAM
 * START and its STREAM COMMIT or ABORT.
 */
typedef struct PgrplRemoteTxn
{
	TransactionId xid;			/* hash key of the streamed ones */
	bool		streamed;
	bool		skip;			/* already captured, or our own writes */
	char		origin[NAMEDATALEN];
	bool		has_origin;
	XLogRecPtr	origin_lsn;
	int32		seq;			/* rows written so far */
	int64		txn_id;			/* valid once seq > 0 */

	/* Streamed: subtransactions in the order their first row came. */
	int			nsubxacts;
	int			maxsubxacts;
	PgrplSubxact *subxacts;
} PgrplRemoteTxn;

typedef struct PgrplCapture
{
	const PgrplSink *sink;
	bool		loopback;		/* the primary is this cluster */
	bool		skip_origins;	/* drop transactions that have an origin */
	XLogRecPtr	progress;		/* units ending before this are here already */

	/* The remote transaction between BEGIN and COMMIT (or PREPARE). */
	bool		active;
	bool		preparing;		/* it began with BEGIN PREPARE */
	XLogRecPtr	final_lsn;		/* its commit's (or prepare's) LSN */
	PgrplRemoteTxn txn;

	/* Streamed transactions not yet committed or aborted, by xid. */
	HTAB	   *streams;
	int			nstreams;
	bool		in_stream;		/* between STREAM START and STREAM STOP */
	PgrplRemoteTxn *stream;		/* the one of that block */

	/* What the last pgrpl_capture_message call ended. */
	XLogRecPtr	unit_end;
	TimestampTz unit_commit_time;
	int64		unit_changes;
	bool		unit_is_txn;	/* a transaction committed (not a message,
								 * PREPARE or ROLLBACK PREPARED) */
	TransactionId unit_xid;		/* with unit_is_txn: its xid */
	bool		unit_streamed;

	/* For error context: the relation being captured, or NULL. */
	PgrplRelation *cur_rel;

	HTAB	   *rel_ids;		/* remote relation id -> rel_id */
} PgrplCapture;

extern void pgrpl_capture_init(PgrplCapture *cap, const PgrplSink *sink,
							   bool loopback, XLogRecPtr progress);
extern void pgrpl_capture_forget_relation_ids(PgrplCapture *cap);
extern void pgrpl_capture_destroy(PgrplCapture *cap);
extern PgrplCaptureResult pgrpl_capture_message(PgrplCapture *cap,
												PgrplMessage *msg,
												XLogRecPtr lsn);
extern bool pgrpl_capture_current_xid(PgrplCapture *cap, TransactionId *xid);

#endif							/* PGRPL_CAPTURE_H */
