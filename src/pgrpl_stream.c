/*-------------------------------------------------------------------------
 * pgrpl_stream.c
 *		Talk to the primary over a logical replication connection.
 *
 * Identifiers and literals sent to the primary are always quoted here; no
 * caller builds a command string itself.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/socket.h>
#include <netinet/in.h>
#ifdef __linux__
#include <linux/tcp.h>		/* struct tcp_info with tcpi_min_rtt */
#endif

#include "access/tupdesc.h"
#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "libpq-fe.h"
#include "libpq/pqformat.h"
#include "miscadmin.h"
#include "replication/slot.h"
#include "storage/latch.h"
#include "utils/wait_event.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "pgrpl_compat.h"
#include "pgrpl_stream.h"

/* Make walrcv_* available in this process. */
void
pgrpl_stream_load(void)
{
	if (WalReceiverFunctions == NULL)
		load_file("libpqwalreceiver", false);
	if (WalReceiverFunctions == NULL)
		elog(ERROR, "libpqwalreceiver didn't initialize correctly");
}

/*
 * libpq's parse errors can quote a fragment of the string; when that string
 * holds a password the fragment might be part of it, so say less.
 */
void
pgrpl_check_conninfo(const char *conninfo)
{
	char	   *err = NULL;
	PQconninfoOption *opts = PQconninfoParse(conninfo, &err);

	if (opts == NULL)
	{
		bool		secret = (strstr(conninfo, "password") != NULL ||
							  strchr(conninfo, '@') != NULL);

		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("invalid connection string syntax"),
				 (err && !secret) ? errdetail_internal("%s", pchomp(err)) :
				 errdetail("The connection string could not be parsed."),
				 errhint("Use keyword=value pairs or a postgresql:// URI.")));
	}
	PQconninfoFree(opts);
	if (err)
		PQfreemem(err);
	pgrpl_stream_load();
	pgrpl_walrcv_check_conninfo(conninfo);
}

static void
pgrpl_append_conn_value(StringInfo buf, const char *val)
{
	appendStringInfoChar(buf, '\'');
	for (const char *p = val; *p; p++)
	{
		if (*p == '\'' || *p == '\\')
			appendStringInfoChar(buf, '\\');
		appendStringInfoChar(buf, *p);
	}
	appendStringInfoChar(buf, '\'');
}

/*
 * The connection string with every secret (password, sslpassword) replaced,
 * in keyword=value form
 * (URIs are rewritten too, since they can carry user:password@).  NULL if
 * it cannot be parsed: then nothing of it can be shown safely.
 */
char *
pgrpl_mask_conninfo_str(const char *conninfo)
{
	char	   *err = NULL;
	PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
	StringInfoData buf;

	if (err)
		PQfreemem(err);
	if (opts == NULL)
		return NULL;

	initStringInfo(&buf);
	for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
	{
		if (o->val == NULL)
			continue;
		if (buf.len > 0)
			appendStringInfoChar(&buf, ' ');
		appendStringInfo(&buf, "%s=", o->keyword);
		/* libpq marks its secret options ("password", "sslpassword") '*' */
		if (strchr(o->dispchar, '*') != NULL)
			appendStringInfoString(&buf, "********");
		else
			pgrpl_append_conn_value(&buf, o->val);
	}
	PQconninfoFree(opts);
	return buf.data;
}

/* NULL and *err set if the connection fails. */
WalReceiverConn *
pgrpl_stream_try_connect(const char *conninfo, const char *appname, char **err)
{
	pgrpl_stream_load();
	return pgrpl_walrcv_connect(conninfo, appname, err);
}

WalReceiverConn *
pgrpl_stream_connect(const char *conninfo, const char *appname)
{
	WalReceiverConn *conn;
	char	   *err = NULL;

	conn = pgrpl_stream_try_connect(conninfo, appname, &err);
	if (conn == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not connect to the primary: %s",
						err ? pchomp(err) : "unknown error")));
	return conn;
}

/* The primary's system identifier, as text. */
char *
pgrpl_stream_identify(WalReceiverConn *conn)
{
	TimeLineID	tli;

	return walrcv_identify_system(conn, &tli);
}

/* Run a query returning "ncols" text columns; ERROR if it fails. */
WalRcvExecResult *
pgrpl_remote_query(WalReceiverConn *conn, const char *sql, int ncols,
				   const char *what)
{
	Oid		   *types = palloc(sizeof(Oid) * Max(ncols, 1));
	WalRcvExecResult *res;

	for (int i = 0; i < ncols; i++)
		types[i] = TEXTOID;
	res = walrcv_exec(conn, sql, ncols, types);
	pfree(types);
	if (res->status != WALRCV_OK_TUPLES)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not %s on the primary: %s", what,
						res->err ? res->err : "unexpected result")));
	return res;
}

/*
 * Split one row of COPY's text format in place: columns end at a tab, the
 * row at its end (COPY's newline already cut off), "\N" alone is a null,
 * and a backslash escapes the next character (\b \f \n \r \t \v name
 * control characters; COPY TO writes no octal or hex escapes).  False if
 * the row has not exactly ncols columns.
 */
static bool
pgrpl_copy_split(char *row, int len, char **fields, int ncols)
{
	char	   *src = row;
	char	   *end = row + len;
	int			n = 0;

	for (;;)
	{
		char	   *start = src;
		char	   *dst = src;
		bool		escaped = false;

		while (src < end && *src != '\t')
		{
			char		c = *src++;

			if (c == '\\' && src < end)
			{
				escaped = true;
				c = *src++;
				switch (c)
				{
					case 'b':
						c = '\b';
						break;
					case 'f':
						c = '\f';
						break;
					case 'n':
						c = '\n';
						break;
					case 'r':
						c = '\r';
						break;
					case 't':
						c = '\t';
						break;
					case 'v':
						c = '\v';
						break;
					default:
						/* the character itself (a backslash, or N of \N) */
						break;
				}
			}
			*dst++ = c;
		}
		if (n == ncols)
			return false;
		/* "\N" alone (two bytes in, one N out) is a null */
		fields[n++] = (escaped && src - start == 2 && dst - start == 1 && start[0] == 'N') ?
			NULL : start;
		*dst = '\0';
		if (src >= end)
			break;
		src++;					/* the tab */
	}
	return n == ncols;
}

/*
 * Start "COPY (query) TO STDOUT" on conn; pgrpl_remote_copy_read takes its
 * rows.  walrcv_exec returns once the primary has begun the COPY, before
 * the rows: they come while the caller does other work.
 */
void
pgrpl_remote_copy_start(WalReceiverConn *conn, const char *query, const char *what)
{
	WalRcvExecResult *res;

	res = walrcv_exec(conn, psprintf("COPY (%s) TO STDOUT", query), 0, NULL);
	if (res->status != WALRCV_OK_COPY_OUT)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not %s on the primary: %s", what,
						res->err ? res->err : "unexpected result")));
	walrcv_clear_result(res);
}

/*
 * Hand the rows of the COPY begun on conn to fn, as their columns' text
 * (NULL for a null) in a palloc'd buffer of the row's own (fn may keep
 * it).  True once the COPY is complete; without wait, false as soon as
 * no more rows have arrived.  walrcv_exec would build a tuplestore of the
 * whole result, each value passed through its input function, and the
 * caller copy each value out of it again: the larger part of the worker's
 * time reading a snapshot chunk.  The built-in table sync reads its COPY
 * the same way (walrcv_receive until it returns -1).
 */
bool
pgrpl_remote_copy_read(WalReceiverConn *conn, int ncols, PgrplCopyRowFn fn,
					   void *arg, bool wait, const char *what)
{
	char	  **fields = palloc(sizeof(char *) * Max(ncols, 1));
	bool		complete = false;

	for (;;)
	{
		pgsocket	fd = PGINVALID_SOCKET;
		char	   *buf;
		int			len;

		CHECK_FOR_INTERRUPTS();
		len = walrcv_receive(conn, &buf, &fd);
		if (len > 0)
		{
			char	   *row = palloc(len + 1);

			/* Each row ends with a newline (text format). */
			memcpy(row, buf, len);
			if (row[len - 1] == '\n')
				len--;
			row[len] = '\0';
			if (!pgrpl_copy_split(row, len, fields, ncols))
				ereport(ERROR,
						(errcode(ERRCODE_PROTOCOL_VIOLATION),
						 errmsg("could not %s on the primary: a row does not have %d columns",
								what, ncols)));
			fn(fields, arg);
			continue;
		}
		if (len < 0)
		{
			complete = true;	/* the COPY is complete */
			break;
		}
		if (!wait)
			break;
		(void) WaitLatchOrSocket(MyLatch,
								 WL_LATCH_SET | WL_SOCKET_READABLE | WL_EXIT_ON_PM_DEATH,
								 fd, -1L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	pfree(fields);
	return complete;
}

/* COPY (query) TO STDOUT, every row handed to fn as it arrives. */
void
pgrpl_remote_copy(WalReceiverConn *conn, const char *query, int ncols,
				  PgrplCopyRowFn fn, void *arg, const char *what)
{
	pgrpl_remote_copy_start(conn, query, what);
	(void) pgrpl_remote_copy_read(conn, ncols, fn, arg, true, what);
}

/* Fail naming every publication the primary does not have. */
void
pgrpl_check_publications(WalReceiverConn *conn, List *publications)
{
	StringInfoData sql;
	StringInfoData missing;
	WalRcvExecResult *res;
	TupleTableSlot *slot;
	ListCell   *lc;
	int			nmissing = 0;

	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT n FROM pg_catalog.unnest(ARRAY[");
	foreach(lc, publications)
		appendStringInfo(&sql, "%s%s", foreach_current_index(lc) > 0 ? ", " : "",
						 quote_literal_cstr(strVal(lfirst(lc))));
	appendStringInfoString(&sql, "]::pg_catalog.text[]) WITH ORDINALITY AS u(n, i)"
						   " WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication p"
						   " WHERE p.pubname OPERATOR(pg_catalog.=) u.n) ORDER BY i");
	res = pgrpl_remote_query(conn, sql.data, 1, "check the publications");

	initStringInfo(&missing);
	slot = MakeSingleTupleTableSlot(res->tupledesc, &TTSOpsMinimalTuple);
	while (tuplestore_gettupleslot(res->tuplestore, true, false, slot))
	{
		bool		isnull;
		Datum		d = slot_getattr(slot, 1, &isnull);

		appendStringInfo(&missing, "%s%s", nmissing++ > 0 ? ", " : "",
						 quote_identifier(TextDatumGetCString(d)));
		ExecClearTuple(slot);
	}
	ExecDropSingleTupleTableSlot(slot);
	walrcv_clear_result(res);

	if (nmissing > 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg_plural("publication %s does not exist on the primary",
							   "publications %s do not exist on the primary",
							   nmissing, missing.data),
				 errhint("Create it on the primary with CREATE PUBLICATION, or fix the name.")));
}

/* Is there a slot of that name?  Also checks it is a pgoutput slot. */
bool
pgrpl_remote_slot_exists(WalReceiverConn *conn, const char *slotname,
						 XLogRecPtr *confirmed_flush)
{
	char	   *sql;
	WalRcvExecResult *res;
	TupleTableSlot *slot;
	bool		found = false;

	/* walrcv_exec returns text output: booleans come back as "t"/"f". */
	sql = psprintf("SELECT slot_type, plugin, confirmed_flush_lsn::pg_catalog.text,"
				   " (s.database OPERATOR(pg_catalog.=) pg_catalog.current_database())::pg_catalog.text"
				   " FROM pg_catalog.pg_replication_slots s"
				   " WHERE s.slot_name OPERATOR(pg_catalog.=) %s",
				   quote_literal_cstr(slotname));
	res = pgrpl_remote_query(conn, sql, 4, "look up the replication slot");
	slot = MakeSingleTupleTableSlot(res->tupledesc, &TTSOpsMinimalTuple);
	if (tuplestore_gettupleslot(res->tuplestore, true, false, slot))
	{
		bool		isnull[4];
		char	   *val[4];

		for (int i = 0; i < 4; i++)
		{
			Datum		d = slot_getattr(slot, i + 1, &isnull[i]);

			val[i] = isnull[i] ? NULL : TextDatumGetCString(d);
		}
		found = true;
		if (val[0] == NULL || strcmp(val[0], "logical") != 0 ||
			val[1] == NULL || strcmp(val[1], "pgoutput") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_WRONG_OBJECT_TYPE),
					 errmsg("replication slot \"%s\" on the primary is not a logical slot of plugin \"pgoutput\"",
							slotname)));
		if (val[3] == NULL || strcmp(val[3], "true") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_WRONG_OBJECT_TYPE),
					 errmsg("replication slot \"%s\" on the primary belongs to another database",
							slotname)));
		if (confirmed_flush)
			*confirmed_flush = val[2] ? DatumGetLSN(DirectFunctionCall1(pg_lsn_in, CStringGetDatum(val[2])))
				: InvalidXLogRecPtr;
	}
	ExecDropSingleTupleTableSlot(slot);
	walrcv_clear_result(res);
	return found;
}

XLogRecPtr
pgrpl_create_remote_slot(WalReceiverConn *conn, const char *slotname)
{
	XLogRecPtr	lsn = InvalidXLogRecPtr;

	(void) pgrpl_walrcv_create_slot(conn, slotname, &lsn);
	return lsn;
}

/*
 * Failover slots (synchronized to the primary's standbys, so that capture
 * goes on after a failover) exist from PostgreSQL 17 on.
 */
void
pgrpl_check_failover_supported(WalReceiverConn *conn)
{
	int			server_version = walrcv_server_version(conn);

	if (server_version < 170000)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("failover slots need a primary of PostgreSQL 17 or later"),
				 errdetail("The primary runs PostgreSQL %d.", server_version / 10000),
				 errhint("Set failover to false with pgrpl.alter_subscription, or omit it.")));
}

/* Is the slot a failover slot?  Never before PostgreSQL 17. */
bool
pgrpl_remote_slot_failover(WalReceiverConn *conn, const char *slotname)
{
	char	   *sql;
	WalRcvExecResult *res;
	TupleTableSlot *slot;
	bool		failover = false;

	if (walrcv_server_version(conn) < 170000)
		return false;
	sql = psprintf("SELECT s.failover::pg_catalog.text FROM pg_catalog.pg_replication_slots s"
				   " WHERE s.slot_name OPERATOR(pg_catalog.=) %s",
				   quote_literal_cstr(slotname));
	res = pgrpl_remote_query(conn, sql, 1, "read the failover property of the replication slot");
	slot = MakeSingleTupleTableSlot(res->tupledesc, &TTSOpsMinimalTuple);
	if (tuplestore_gettupleslot(res->tuplestore, true, false, slot))
	{
		bool		isnull;
		Datum		d = slot_getattr(slot, 1, &isnull);

		failover = !isnull && strcmp(TextDatumGetCString(d), "true") == 0;
	}
	ExecDropSingleTupleTableSlot(slot);
	walrcv_clear_result(res);
	pfree(sql);
	return failover;
}

/*
 * Make the slot a failover slot or not, as the subscription says.  Done
 * at every connection, before START_REPLICATION (the slot must not be in
 * use), so that alter_subscription(failover => ...) takes effect at the
 * worker's next session and a slot changed by hand is set back.
 */
void
pgrpl_sync_slot_failover(WalReceiverConn *conn, const char *slotname, bool failover)
{
	char	   *cmd;

	if (failover)
		pgrpl_check_failover_supported(conn);
	if (pgrpl_remote_slot_failover(conn, slotname) == failover)
		return;
	cmd = psprintf("ALTER_REPLICATION_SLOT %s ( FAILOVER %s )",
				   quote_identifier(slotname), failover ? "true" : "false");
	pgrpl_remote_command(conn, cmd,
						 psprintf("alter replication slot \"%s\"", slotname));
	pfree(cmd);
}

/* WAIT: the walsender of a just-stopped worker may not have exited yet. */
void
pgrpl_drop_remote_slot(WalReceiverConn *conn, const char *slotname)
{
	char	   *cmd = psprintf("DROP_REPLICATION_SLOT %s WAIT",
							   quote_identifier(slotname));

	pgrpl_remote_command(conn, cmd,
						 psprintf("drop replication slot \"%s\"", slotname));
}

/*
 * Run a command, or a query returning no columns, on the primary (outside
 * a transaction: a result with columns would need the catalogs for its
 * descriptor); "what" completes the error message "could not <what> on the
 * primary".
 */
void
pgrpl_remote_command(WalReceiverConn *conn, const char *cmd, const char *what)
{
	WalRcvExecResult *res = walrcv_exec(conn, cmd, 0, NULL);

	if (res->status != WALRCV_OK_COMMAND && res->status != WALRCV_OK_TUPLES)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not %s on the primary: %s", what,
						res->err ? res->err : "unexpected result")));
	walrcv_clear_result(res);
}

/*
 * The publication_names option: each name quoted as an identifier (pgoutput
 * splits the list with SplitIdentifierString), the list quoted as a
 * replication-command string literal (which knows only '' as escape).
 */
static char *
pgrpl_publication_names_literal(List *publications)
{
	StringInfoData names;
	StringInfoData lit;
	ListCell   *lc;

	initStringInfo(&names);
	foreach(lc, publications)
	{
		const char *name = strVal(lfirst(lc));

		if (names.len > 0)
			appendStringInfoChar(&names, ',');
		appendStringInfoChar(&names, '"');
		for (const char *p = name; *p; p++)
		{
			if (*p == '"')
				appendStringInfoChar(&names, '"');
			appendStringInfoChar(&names, *p);
		}
		appendStringInfoChar(&names, '"');
	}

	initStringInfo(&lit);
	appendStringInfoChar(&lit, '\'');
	for (const char *p = names.data; *p; p++)
	{
		if (*p == '\'')
			appendStringInfoChar(&lit, '\'');
		appendStringInfoChar(&lit, *p);
	}
	appendStringInfoChar(&lit, '\'');
	return lit.data;
}

/*
 * The protocol to ask a primary of server_version for.  pgoutput rejects
 * options it does not know ("unrecognized pgoutput option"), so each is
 * sent only from the version that added it: logical messages and streaming
 * of in-progress transactions (protocol 2) from 14, and from 16 protocol 4
 * with streaming 'parallel', the only way to have STREAM ABORT carry the
 * abort's LSN and time (the walsender does nothing else differently for
 * it: how the changes are applied is the subscriber's business).
 * two_phase needs protocol 3 (15+): before 15 it is not asked for, and
 * prepared transactions arrive at COMMIT PREPARED as ordinary ones.
 * origin 'none' is pgoutput's from 16 on, where the walsender does not
 * even decode what it filters; from older primaries every transaction
 * comes, and those with an ORIGIN message are dropped here instead.
 */
void
pgrpl_protocol_choose(int server_version, bool streaming, bool two_phase,
					  bool origin_none, PgrplProtocol *proto)
{
	memset(proto, 0, sizeof(*proto));
	proto->server_version = server_version;
	proto->proto_version = 1;
	proto->messages = (server_version >= 140000);
	if (streaming && server_version >= 140000)
	{
		proto->streaming = true;
		proto->proto_version = 2;
		if (server_version >= 160000)
		{
			proto->proto_version = 4;
			proto->abort_info = true;
		}
	}
	if (two_phase && server_version >= 150000)
	{
		proto->two_phase = true;
		proto->proto_version = Max(proto->proto_version, 3);
	}
	if (origin_none)
	{
		proto->origin_none = (server_version >= 160000);
		proto->skip_origins = !proto->origin_none;
	}
}

/*
 * START_REPLICATION with the options of "proto".  PG15's
 * WalRcvStreamOptions has no messages field, so the command is sent with
 * walrcv_exec, which leaves the connection in COPY BOTH mode for
 * walrcv_receive/walrcv_send.  With two_phase 'on', a PG15+ walsender turns
 * two_phase on for the slot if it is not yet (from this start point on:
 * transactions prepared before it arrive at COMMIT PREPARED, whole).
 */
void
pgrpl_stream_start(WalReceiverConn *conn, const char *slotname,
				   XLogRecPtr startpos, List *publications,
				   const PgrplProtocol *proto)
{
	char	   *cmd;
	WalRcvExecResult *res;

	/*
	 * pgoutput formats values with the walsender's settings; libpqwalreceiver
	 * already asks for ISO dates.  With UTC as well, timestamps arrive in the
	 * form to_jsonb() gives with TimeZone UTC, and pgrpl_json.c can convert
	 * them without parsing.
	 */
	pgrpl_remote_command(conn, "SET TimeZone TO 'UTC'",
						 "set the time zone of the replication connection");

	/*
	 * Stream large transactions early.  A transaction larger than the
	 * walsender's logical_decoding_work_mem is streamed while it is still
	 * being decoded; a smaller one arrives only after its commit has been
	 * decoded, and then decoding waits for us.  pgrpl writes streamed rows
	 * as they arrive and makes them visible at STREAM COMMIT at a cost
	 * independent of their number, so streaming from a few megabytes on
	 * lets the primary decode while we write, instead of one after the
	 * other (and spares the primary's spill files).  A value set on the
	 * primary or in the conninfo's options is left alone.
	 */
	if (proto->streaming)
		pgrpl_remote_command(conn,
							 "SELECT FROM pg_catalog.pg_settings WHERE CASE "
							 "WHEN name = 'logical_decoding_work_mem' AND source = 'default' "
							 "THEN pg_catalog.set_config('logical_decoding_work_mem', '"
							 PGRPL_DECODING_WORK_MEM "', false) IS NOT NULL ELSE false END",
							 "set logical_decoding_work_mem of the replication connection");

	cmd = psprintf("START_REPLICATION SLOT %s LOGICAL %X/%X "
				   "(proto_version '%d', publication_names %s%s%s%s%s)",
				   quote_identifier(slotname), LSN_FORMAT_ARGS(startpos),
				   proto->proto_version,
				   pgrpl_publication_names_literal(publications),
				   proto->messages ? ", messages 'true'" : "",
				   !proto->streaming ? "" :
				   proto->abort_info ? ", streaming 'parallel'" : ", streaming 'on'",
				   proto->two_phase ? ", two_phase 'on'" : "",
				   proto->origin_none ? ", origin 'none'" : "");
	res = walrcv_exec(conn, cmd, 0, NULL);
	if (res->status != WALRCV_OK_COPY_BOTH)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not start logical replication from slot \"%s\": %s",
						slotname, res->err ? res->err : "unexpected result")));
	walrcv_clear_result(res);
}

/* Split a CopyData message into its header fields and payload. */
void
pgrpl_parse_copydata(char *buf, int len, PgrplCopyData *msg)
{
	StringInfoData s;

	s.data = buf;
	s.len = len;
	s.maxlen = -1;
	s.cursor = 0;

	msg->kind = pq_getmsgbyte(&s);
	msg->reply_requested = false;
	switch (msg->kind)
	{
		case 'w':
			msg->data_start = pq_getmsgint64(&s);
			msg->wal_end = pq_getmsgint64(&s);
			msg->send_time = pq_getmsgint64(&s);
			msg->payload.data = buf + s.cursor;
			msg->payload.len = len - s.cursor;
			msg->payload.maxlen = -1;
			msg->payload.cursor = 0;
			break;
		case 'k':
			msg->wal_end = pq_getmsgint64(&s);
			msg->send_time = pq_getmsgint64(&s);
			msg->reply_requested = pq_getmsgbyte(&s) != 0;
			pq_getmsgend(&s);
			break;
		default:
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("invalid replication stream message type \"%c\"",
							isprint((unsigned char) msg->kind) ? msg->kind : '?')));
	}
}

/* A standby status update ('r'): apply equals flush for a change log. */
void
pgrpl_send_feedback(WalReceiverConn *conn, XLogRecPtr write, XLogRecPtr flush,
					bool reply_requested)
{
	StringInfoData s;

	initStringInfo(&s);
	pq_sendbyte(&s, 'r');
	pq_sendint64(&s, write);
	pq_sendint64(&s, flush);
	pq_sendint64(&s, flush);
	pq_sendint64(&s, GetCurrentTimestamp());
	pq_sendbyte(&s, reply_requested ? 1 : 0);
	walrcv_send(conn, s.data, s.len);
	pfree(s.data);
}

/* The primary would reject these; say so before connecting. */
void
pgrpl_check_slot_name(const char *name)
{
	(void) ReplicationSlotValidateName(name, ERROR);
}

/*
 * Is the stream's socket a Unix socket?  One holds only about 200 kB of
 * the walsender's messages (its buffer is charged per message), TCP's
 * megabytes.
 */
bool
pgrpl_stream_is_unix_socket(pgsocket fd)
{
	struct sockaddr_storage addr;
	socklen_t	addrlen = sizeof(addr);

	return fd != PGINVALID_SOCKET &&
		getsockname(fd, (struct sockaddr *) &addr, &addrlen) == 0 &&
		addr.ss_family == AF_UNIX;
}

/*
 * Pacing a TCP stream: the window we advertise, and the longest minimum
 * round trip at which we cap it (128 kB per millisecond is still 128 MB/s).
 */
#define PGRPL_PACE_WINDOW		(128 * 1024)
#define PGRPL_PACE_MAX_RTT_US	1000

/*
 * Pace the stream of a nearby primary over TCP: cap the window we
 * advertise at PGRPL_PACE_WINDOW.  The walsender sends every message with
 * its own send(); when the receiver keeps up, each one leaves as a TCP
 * segment of its own, and the walsender (the limit of a subscription)
 * spends a good part of its CPU on segments.  With the window full, its
 * later messages wait in its socket and leave together once we read
 * (measured: 10-20% less of the walsender's CPU per drain of small
 * transactions).  A capped window also caps throughput at the window per
 * round trip, so only where the round trip is short (loopback, a LAN).
 *
 * The round trip is the kernel's minimum (from the handshake on): the
 * smoothed one is made of the samples our rare status updates give, each
 * including the walsender's time to its next send (2-3 ms on loopback).
 * Returns true if the stream is now paced.
 */
bool
pgrpl_stream_pace(pgsocket fd)
{
#if defined(__linux__) && defined(TCP_WINDOW_CLAMP) && defined(TCP_INFO)
	struct sockaddr_storage addr;
	socklen_t	addrlen = sizeof(addr);
	struct tcp_info info;
	socklen_t	infolen = sizeof(info);
	int			window = PGRPL_PACE_WINDOW;

	memset(&info, 0, sizeof(info));
	if (fd == PGINVALID_SOCKET ||
		getsockname(fd, (struct sockaddr *) &addr, &addrlen) != 0 ||
		(addr.ss_family != AF_INET && addr.ss_family != AF_INET6) ||
		getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &infolen) != 0)
		return false;
	/* A kernel too old to report the minimum leaves it out (zero). */
	if (infolen < offsetof(struct tcp_info, tcpi_min_rtt) + sizeof(info.tcpi_min_rtt) ||
		info.tcpi_min_rtt == 0 || info.tcpi_min_rtt > PGRPL_PACE_MAX_RTT_US)
	{
		elog(DEBUG1, "pgrpl: not pacing the stream (minimum round trip %u us)",
			 info.tcpi_min_rtt);
		return false;
	}
	if (setsockopt(fd, IPPROTO_TCP, TCP_WINDOW_CLAMP, &window, sizeof(window)) != 0)
		return false;
	elog(DEBUG1, "pgrpl: pacing the stream (minimum round trip %u us, window %d bytes)",
		 info.tcpi_min_rtt, window);
	return true;
#else
	return false;
#endif
}
