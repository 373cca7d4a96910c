/*-------------------------------------------------------------------------
 * pgrpl_stream.h
 *		The replication connection to the primary: connect, slot commands,
 *		START_REPLICATION, CopyData framing and standby status updates.
 *
 * Everything goes through PostgreSQL's libpqwalreceiver, so every libpq
 * connection option (TLS, SCRAM, passfile, unix sockets) works.
 *-------------------------------------------------------------------------
 */
#ifndef PGRPL_STREAM_H
#define PGRPL_STREAM_H

#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "replication/walreceiver.h"

/* One CopyData message of the walsender's COPY BOTH stream. */
typedef struct PgrplCopyData
{
	char		kind;			/* 'w' data, 'k' keepalive */
	XLogRecPtr	data_start;		/* 'w': LSN of the change */
	XLogRecPtr	wal_end;		/* 'w' and 'k': walsender's position */
	TimestampTz send_time;
	bool		reply_requested;	/* 'k' */
	StringInfoData payload;		/* 'w': the pgoutput message */
} PgrplCopyData;

/*
 * What START_REPLICATION asks of pgoutput, chosen from the primary's version
 * (pgrpl_protocol_choose): each protocol feature only where it exists.
 */
typedef struct PgrplProtocol
{
	int			server_version; /* the primary's, as PG_VERSION_NUM */
	int			proto_version;	/* 1 to 4 */
	bool		messages;		/* logical messages (14+) */
	bool		streaming;		/* in-progress transactions streamed (14+) */
	bool		abort_info;		/* STREAM ABORT carries LSN and time (16+) */
	bool		two_phase;		/* prepared transactions decoded at PREPARE (15+) */
	bool		origin_none;	/* the primary sends only transactions without
								 * a replication origin (16+) */
	bool		skip_origins;	/* origin 'none' wanted from an older primary:
								 * pgrpl drops transactions with an ORIGIN */
} PgrplProtocol;

extern void pgrpl_protocol_choose(int server_version, bool streaming,
								  bool two_phase, bool origin_none,
								  PgrplProtocol *proto);
/*
 * logical_decoding_work_mem of pgrpl's walsender when streaming (unless set
 * on the primary or in the conninfo): see pgrpl_stream_start.
 */
#define PGRPL_DECODING_WORK_MEM "4MB"

extern void pgrpl_stream_load(void);
extern bool pgrpl_stream_pace(pgsocket fd);
extern bool pgrpl_stream_is_unix_socket(pgsocket fd);
extern void pgrpl_remote_command(WalReceiverConn *conn, const char *cmd,
								 const char *what);
extern void pgrpl_check_conninfo(const char *conninfo);
extern char *pgrpl_mask_conninfo_str(const char *conninfo);
extern WalReceiverConn *pgrpl_stream_try_connect(const char *conninfo,
												 const char *appname, char **err);
extern WalReceiverConn *pgrpl_stream_connect(const char *conninfo,
											 const char *appname);
extern char *pgrpl_stream_identify(WalReceiverConn *conn);
extern WalRcvExecResult *pgrpl_remote_query(WalReceiverConn *conn, const char *sql,
											int ncols, const char *what);
/* One row of pgrpl_remote_copy: its columns' text, NULL for a null. */
typedef void (*PgrplCopyRowFn) (char **fields, void *arg);
extern void pgrpl_remote_copy_start(WalReceiverConn *conn, const char *query,
									const char *what);
extern bool pgrpl_remote_copy_read(WalReceiverConn *conn, int ncols, PgrplCopyRowFn fn,
								   void *arg, bool wait, const char *what);
extern void pgrpl_remote_copy(WalReceiverConn *conn, const char *query, int ncols,
							  PgrplCopyRowFn fn, void *arg, const char *what);
extern void pgrpl_check_publications(WalReceiverConn *conn, List *publications);
extern bool pgrpl_remote_slot_exists(WalReceiverConn *conn, const char *slot,
									 XLogRecPtr *confirmed_flush);
extern XLogRecPtr pgrpl_create_remote_slot(WalReceiverConn *conn, const char *slot);
extern void pgrpl_check_failover_supported(WalReceiverConn *conn);
extern bool pgrpl_remote_slot_failover(WalReceiverConn *conn, const char *slot);
extern void pgrpl_sync_slot_failover(WalReceiverConn *conn, const char *slot,
									 bool failover);
extern void pgrpl_drop_remote_slot(WalReceiverConn *conn, const char *slot);
extern void pgrpl_stream_start(WalReceiverConn *conn, const char *slot,
							   XLogRecPtr startpos, List *publications,
							   const PgrplProtocol *proto);
extern void pgrpl_parse_copydata(char *buf, int len, PgrplCopyData *msg);
extern void pgrpl_send_feedback(WalReceiverConn *conn, XLogRecPtr write,
								XLogRecPtr flush, bool reply_requested);
extern void pgrpl_check_slot_name(const char *name);

#endif							/* PGRPL_STREAM_H */
