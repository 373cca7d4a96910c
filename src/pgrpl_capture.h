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
 *-------------------------------------------------------------------------
 */
#ifndef PGRPL_CAPTURE_H
#define PGRPL_CAPTURE_H

#include "pgrpl_decode.h"
#include "pgrpl_json.h"
#include "pgrpl_writer.h"

typedef struct PgrplSink
{
	void		(*open) (void *arg);	/* before a unit's first row is built */
	int64		(*new_txn_id) (void *arg);
	int32		(*relation_id) (void *arg, const PgrplRelationDesc *desc);
	void		(*change) (void *arg, const PgrplChangeRow *row);
	void		(*transaction) (void *arg, const PgrplTxnRow *row);
	void	   *arg;
} PgrplSink;

typedef enum PgrplCaptureResult
{
	PGRPL_CAPTURE_NONE,			/* nothing ended */
	PGRPL_CAPTURE_UNIT,			/* a unit with rows was written (see unit_*) */
	PGRPL_CAPTURE_EMPTY_UNIT	/* a transaction ended with nothing captured */
} PgrplCaptureResult;

typedef struct PgrplCapture
{
	const PgrplSink *sink;
	bool		loopback;		/* the primary is this cluster */
	XLogRecPtr	progress;		/* units ending before this are here already */

	/* The remote transaction being received (between BEGIN and COMMIT). */
	bool		active;
	bool		skip;			/* already captured, or our own writes */
	XLogRecPtr	final_lsn;
	TransactionId xid;
	char		origin[NAMEDATALEN];
	bool		has_origin;
	XLogRecPtr	origin_lsn;
	int32		seq;			/* rows written so far */
	int64		txn_id;			/* valid once seq > 0 */

	/* What the last pgrpl_capture_message call ended. */
	XLogRecPtr	unit_end;
	TimestampTz unit_commit_time;
	int64		unit_changes;
	bool		unit_is_txn;	/* false: a non-transactional message */

	/* For error context: the relation being captured, or NULL. */
	PgrplRelation *cur_rel;

	HTAB	   *rel_ids;		/* remote relation id -> rel_id */
} PgrplCapture;

extern void pgrpl_capture_init(PgrplCapture *cap, const PgrplSink *sink,
							   bool loopback, XLogRecPtr progress);
extern void pgrpl_capture_forget_relation_ids(PgrplCapture *cap);
extern PgrplCaptureResult pgrpl_capture_message(PgrplCapture *cap,
												PgrplMessage *msg,
												XLogRecPtr lsn);

#endif							/* PGRPL_CAPTURE_H */
