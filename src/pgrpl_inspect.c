/*-------------------------------------------------------------------------
 * pgrpl_inspect.c
 *		SQL functions that look at data without touching the change log:
 *		pgrpl.decode() describes one pgoutput message as jsonb, and
 *		pgrpl.key_hash() is the row lookup hash the change log is indexed by.
 *
 * decode() runs the worker's own decoder, so it shows exactly what the
 * worker would see, and malformed input fails the same way: a clean ERROR
 * with ERRCODE_PROTOCOL_VIOLATION.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

#include "pgrpl_decode.h"
#include "pgrpl_jsonout.h"
#include "pgrpl_keyhash.h"

PG_FUNCTION_INFO_V1(pgrpl_decode_sql);
PG_FUNCTION_INFO_V1(pgrpl_key_hash_sql);
PG_FUNCTION_INFO_V1(pgrpl_row_key_hash_v2);

/* ---- one section per message type ---- */

/* A tuple: one {"status", "value"} per column, as sent. */
static void
pgrpl_describe_tuple(StringInfo out, const char *key, LogicalRepTupleData *tup)
{
	pgrpl_jsonout_key(out, key);
	appendStringInfoChar(out, '[');
	for (int i = 0; i < tup->ncols; i++)
	{
		char		status = tup->colstatus[i];
		char		kind[2] = {status, '\0'};

		if (i > 0)
			appendStringInfoString(out, ", ");
		appendStringInfoChar(out, '{');
		pgrpl_jsonout_str(out, "kind", kind);
		if (status == LOGICALREP_COLUMN_TEXT)
			pgrpl_jsonout_str(out, "value", tup->colvalues[i].data);
		else if (status == LOGICALREP_COLUMN_BINARY)
			pgrpl_jsonout_bytes(out, "value", tup->colvalues[i].data,
							 tup->colvalues[i].len);
		appendStringInfoChar(out, '}');
	}
	appendStringInfoChar(out, ']');
}

static void
pgrpl_describe_relation(StringInfo out, LogicalRepRelation *rel)
{
	char		ident[2] = {rel->replident, '\0'};

	pgrpl_jsonout_int(out, "relid", rel->remoteid);
	pgrpl_jsonout_str(out, "namespace", rel->nspname);
	pgrpl_jsonout_str(out, "relname", rel->relname);
	pgrpl_jsonout_str(out, "replica_identity", ident);
	pgrpl_jsonout_key(out, "columns");
	appendStringInfoChar(out, '[');
	for (int i = 0; i < rel->natts; i++)
	{
		if (i > 0)
			appendStringInfoString(out, ", ");
		appendStringInfoChar(out, '{');
		pgrpl_jsonout_str(out, "name", rel->attnames[i]);
		pgrpl_jsonout_int(out, "type_oid", rel->atttyps[i]);
		pgrpl_jsonout_bool(out, "key", bms_is_member(i, rel->attkeys));
		appendStringInfoChar(out, '}');
	}
	appendStringInfoChar(out, ']');
}

static void
pgrpl_describe_change(StringInfo out, PgrplMessage *msg)
{
	PgrplChangeMsg *c = &msg->u.change;

	pgrpl_jsonout_int(out, "relid", c->relid);
	if (c->old_kind != 0)
	{
		char		kind[2] = {c->old_kind, '\0'};

		pgrpl_jsonout_str(out, "old_kind", kind);
		pgrpl_describe_tuple(out, "old", &c->oldtup);
	}
	if (msg->type != LOGICAL_REP_MSG_DELETE)
		pgrpl_describe_tuple(out, "new", &c->newtup);
}

static void
pgrpl_describe_truncate(StringInfo out, PgrplTruncateMsg *t)
{
	ListCell   *lc;

	pgrpl_jsonout_bool(out, "cascade", t->cascade);
	pgrpl_jsonout_bool(out, "restart_identity", t->restart_seqs);
	pgrpl_jsonout_key(out, "relids");
	appendStringInfoChar(out, '[');
	foreach(lc, t->relids)
		appendStringInfo(out, "%s%u", foreach_current_index(lc) > 0 ? ", " : "",
						 lfirst_oid(lc));
	appendStringInfoChar(out, ']');
}

static void
pgrpl_describe(StringInfo out, PgrplMessage *msg)
{
	appendStringInfoChar(out, '{');
	pgrpl_jsonout_str(out, "type", pgrpl_message_type_name(msg->type));
	if (TransactionIdIsValid(msg->xid))
		pgrpl_jsonout_int(out, "xid", msg->xid);
	switch (msg->type)
	{
		case LOGICAL_REP_MSG_BEGIN:
			pgrpl_jsonout_lsn(out, "final_lsn", msg->u.begin.final_lsn);
			pgrpl_jsonout_time(out, "commit_time", msg->u.begin.committime);
			pgrpl_jsonout_int(out, "xid", msg->u.begin.xid);
			break;
		case LOGICAL_REP_MSG_COMMIT:
			pgrpl_jsonout_lsn(out, "commit_lsn", msg->u.commit.commit_lsn);
			pgrpl_jsonout_lsn(out, "end_lsn", msg->u.commit.end_lsn);
			pgrpl_jsonout_time(out, "commit_time", msg->u.commit.committime);
			break;
		case LOGICAL_REP_MSG_ORIGIN:
			pgrpl_jsonout_lsn(out, "origin_lsn", msg->u.origin.lsn);
			pgrpl_jsonout_str(out, "name", msg->u.origin.name);
			break;
		case LOGICAL_REP_MSG_RELATION:
			pgrpl_describe_relation(out, msg->u.relation);
			break;
		case LOGICAL_REP_MSG_TYPE:
			pgrpl_jsonout_int(out, "type_oid", msg->u.type.remoteid);
			pgrpl_jsonout_str(out, "namespace", msg->u.type.nspname);
			pgrpl_jsonout_str(out, "name", msg->u.type.typname);
			break;
		case LOGICAL_REP_MSG_INSERT:
		case LOGICAL_REP_MSG_UPDATE:
		case LOGICAL_REP_MSG_DELETE:
			pgrpl_describe_change(out, msg);
			break;
		case LOGICAL_REP_MSG_TRUNCATE:
			pgrpl_describe_truncate(out, &msg->u.truncate);
			break;
		case LOGICAL_REP_MSG_MESSAGE:
			pgrpl_jsonout_bool(out, "transactional", msg->u.message.transactional);
			pgrpl_jsonout_lsn(out, "lsn", msg->u.message.lsn);
			pgrpl_jsonout_str(out, "prefix", msg->u.message.prefix);
			pgrpl_jsonout_bytes(out, "content", msg->u.message.content,
							 msg->u.message.len);
			break;
		case LOGICAL_REP_MSG_STREAM_START:
			pgrpl_jsonout_int(out, "xid", msg->u.stream_start.xid);
			pgrpl_jsonout_bool(out, "first_segment", msg->u.stream_start.first_segment);
			break;
		case LOGICAL_REP_MSG_STREAM_STOP:
			break;
		case LOGICAL_REP_MSG_STREAM_COMMIT:
			pgrpl_jsonout_int(out, "xid", msg->u.stream_commit.xid);
			pgrpl_jsonout_lsn(out, "commit_lsn", msg->u.stream_commit.commit.commit_lsn);
			pgrpl_jsonout_lsn(out, "end_lsn", msg->u.stream_commit.commit.end_lsn);
			pgrpl_jsonout_time(out, "commit_time", msg->u.stream_commit.commit.committime);
			break;
		case LOGICAL_REP_MSG_STREAM_ABORT:
			pgrpl_jsonout_int(out, "xid", msg->u.stream_abort.xid);
			pgrpl_jsonout_int(out, "subxid", msg->u.stream_abort.subxid);
			if (msg->u.stream_abort.has_abort_info)
			{
				pgrpl_jsonout_lsn(out, "abort_lsn", msg->u.stream_abort.abort_lsn);
				pgrpl_jsonout_time(out, "abort_time", msg->u.stream_abort.abort_time);
			}
			break;
		case LOGICAL_REP_MSG_BEGIN_PREPARE:
		case LOGICAL_REP_MSG_PREPARE:
		case LOGICAL_REP_MSG_STREAM_PREPARE:
			pgrpl_jsonout_lsn(out, "prepare_lsn", msg->u.prepare.prepare_lsn);
			pgrpl_jsonout_lsn(out, "end_lsn", msg->u.prepare.end_lsn);
			pgrpl_jsonout_time(out, "prepare_time", msg->u.prepare.prepare_time);
			pgrpl_jsonout_int(out, "xid", msg->u.prepare.xid);
			pgrpl_jsonout_str(out, "gid", msg->u.prepare.gid);
			break;
		case LOGICAL_REP_MSG_COMMIT_PREPARED:
			pgrpl_jsonout_lsn(out, "commit_lsn", msg->u.commit_prepared.commit_lsn);
			pgrpl_jsonout_lsn(out, "end_lsn", msg->u.commit_prepared.end_lsn);
			pgrpl_jsonout_time(out, "commit_time", msg->u.commit_prepared.commit_time);
			pgrpl_jsonout_int(out, "xid", msg->u.commit_prepared.xid);
			pgrpl_jsonout_str(out, "gid", msg->u.commit_prepared.gid);
			break;
		case LOGICAL_REP_MSG_ROLLBACK_PREPARED:
			pgrpl_jsonout_lsn(out, "prepare_end_lsn", msg->u.rollback_prepared.prepare_end_lsn);
			pgrpl_jsonout_lsn(out, "rollback_end_lsn", msg->u.rollback_prepared.rollback_end_lsn);
			pgrpl_jsonout_time(out, "prepare_time", msg->u.rollback_prepared.prepare_time);
			pgrpl_jsonout_time(out, "rollback_time", msg->u.rollback_prepared.rollback_time);
			pgrpl_jsonout_int(out, "xid", msg->u.rollback_prepared.xid);
			pgrpl_jsonout_str(out, "gid", msg->u.rollback_prepared.gid);
			break;
		default:
			elog(ERROR, "unexpected pgoutput message type %d", msg->type);
	}
	appendStringInfoChar(out, '}');
}

/*
 * pgrpl.decode(message bytea [, in_stream boolean]) RETURNS jsonb;
 * in_stream: the message came between STREAM START and STREAM STOP.
 */
Datum
pgrpl_decode_sql(PG_FUNCTION_ARGS)
{
	bytea	   *raw = PG_GETARG_BYTEA_PP(0);
	bool		in_stream = PG_NARGS() > 1 && PG_GETARG_BOOL(1);
	StringInfoData out;
	PgrplMessage msg;
	int			client_encoding = pg_get_client_encoding();

	/*
	 * The readers take names and prefixes as sent by a client, converting
	 * them from the client encoding; these bytes are the server's own, so
	 * read them with no conversion (as the worker does), whatever this
	 * session's client_encoding.  Restored on the way out, error or not.
	 */
	if (client_encoding != GetDatabaseEncoding())
		(void) SetClientEncoding(GetDatabaseEncoding());
	PG_TRY();
	{
		pgrpl_decode_bytea(raw, &msg, in_stream);
	}
	PG_FINALLY();
	{
		if (client_encoding != GetDatabaseEncoding())
			(void) SetClientEncoding(client_encoding);
	}
	PG_END_TRY();

	initStringInfo(&out);
	pgrpl_describe(&out, &msg);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data)));
}

/*
 * pgrpl.key_hash(schema_name text, table_name text, key jsonb) RETURNS bigint:
 * the 1.x lookup key, for schemas not yet updated to 2.0 (their indexes call
 * it; its results must not change under this symbol).
 */
Datum
pgrpl_key_hash_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(pgrpl_key_hash_v1(text_to_cstring(PG_GETARG_TEXT_PP(0)),
									  text_to_cstring(PG_GETARG_TEXT_PP(1)),
									  PG_GETARG_JSONB_P(2)));
}

/* pgrpl.row_key_hash(key jsonb) RETURNS bigint: the 2.0 lookup key. */
Datum
pgrpl_row_key_hash_v2(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(pgrpl_row_key_hash(PG_GETARG_JSONB_P(0)));
}
