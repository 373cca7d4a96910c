/*-------------------------------------------------------------------------
 * pgrpl_snapshot.h
 *		The rows a table had before capture started: read in chunks on a
 *		second connection and merged with the stream at watermarks.
 *
 * See docs/architecture.md, "Snapshots".  The worker calls
 * pgrpl_snapshot_step() between stream messages to read the next chunk and
 * emit its watermark; the capture module hands every transactional logical
 * message with the watermark prefix to the sink, whose worker version calls
 * pgrpl_snapshot_watermark() to write the chunk's rows into that watermark
 * transaction.
 *-------------------------------------------------------------------------
 */
#ifndef PGRPL_SNAPSHOT_H
#define PGRPL_SNAPSHOT_H

#include "access/xlogdefs.h"
#include "nodes/pg_list.h"
#include "replication/walreceiver.h"

#include "pgrpl_catalog.h"

/*
 * A chunk reads at most PGRPL_SNAPSHOT_CHUNK_ROWS rows, and stops before the
 * row that would take its values past PGRPL_SNAPSHOT_CHUNK_BYTES.
 */
#define PGRPL_SNAPSHOT_CHUNK_ROWS 10000
#define PGRPL_SNAPSHOT_CHUNK_BYTES (16 * 1024 * 1024)

/* The published tables of a primary, as "schema"."table" pairs. */
typedef struct PgrplTableName
{
	char	   *schema_name;
	char	   *table_name;
} PgrplTableName;

extern List *pgrpl_published_tables(WalReceiverConn *conn, List *publications,
									 bool loopback);
extern void pgrpl_snapshot_check_primary(WalReceiverConn *conn);
extern bool pgrpl_snapshot_request(int32 sub_id, const char *schema_name,
								   const char *table_name, bool copy, bool replace);

extern void pgrpl_snapshot_session_start(PgrplSubscription *sub);
extern void pgrpl_snapshot_session_end(void);
extern void pgrpl_snapshot_step(XLogRecPtr received);
extern bool pgrpl_snapshot_waiting(void);
extern void pgrpl_snapshot_poll(void);
extern bool pgrpl_snapshot_due(void);
extern void pgrpl_snapshot_note_commit(TransactionId xid);
extern int32 pgrpl_snapshot_watermark(const char *content, int len, int64 txn_id,
									  int32 first_seq, XLogRecPtr lsn);

#endif							/* PGRPL_SNAPSHOT_H */
