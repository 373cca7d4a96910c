/*-------------------------------------------------------------------------
 * pgrpl_preview.c
 *		pgrpl.capture_preview(): what the capture module makes of a stream.
 *
 * Runs pgoutput messages through the worker's own decoder and capture
 * module, with a sink that returns the rows as jsonb instead of writing
 * them: the relation versions, the change rows and the transaction rows a
 * subscription would record for those messages.  It tests the capture
 * rules on their own, and shows a user what pgrpl would make of the
 * messages of pg_logical_slot_peek_binary_changes().  Nothing is written.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"

#include "pgrpl_capture.h"
#include "pgrpl_jsonout.h"

PG_FUNCTION_INFO_V1(pgrpl_capture_preview);

/* The latest version of one remote relation, as the writer keeps it. */
typedef struct PgrplPreviewRel
{
	Oid			remote_oid;
	int32		rel_id;
	char	   *description;	/* the JSON emitted, without ids and LSN */
} PgrplPreviewRel;

typedef struct PgrplPreview
{
	ReturnSetInfo *rsinfo;
	int64		next_txn_id;
	int32		next_rel_id;
	List	   *versions;		/* of PgrplPreviewRel, one per remote oid */
} PgrplPreview;

/* ---- JSON members the shared writer (pgrpl_jsonout.c) does not have ---- */

/* An LSN, or null when there is none. */
static void
pgrpl_preview_lsn(StringInfo out, const char *key, XLogRecPtr lsn)
{
	if (XLogRecPtrIsInvalid(lsn))
		pgrpl_jsonout_str(out, key, NULL);
	else
		pgrpl_jsonout_lsn(out, key, lsn);
}

static void
pgrpl_preview_jsonb(StringInfo out, const char *key, Jsonb *value)
{
	pgrpl_jsonout_key(out, key);
	if (value == NULL)
		appendStringInfoString(out, "null");
	else
		(void) JsonbToCString(out, &value->root, VARSIZE(value));
}

static void
pgrpl_preview_emit(PgrplPreview *p, StringInfo out)
{
	Datum		value;
	bool		isnull = false;

	appendStringInfoChar(out, '}');
	value = DirectFunctionCall1(jsonb_in, CStringGetDatum(out->data));
	tuplestore_putvalues(p->rsinfo->setResult, p->rsinfo->setDesc, &value, &isnull);
}

/* ---- the sink ---- */

static void
pgrpl_preview_open(void *arg)
{
	/* A SQL function already runs in a transaction. */
}

static int64
pgrpl_preview_new_txn_id(void *arg)
{
	return ++((PgrplPreview *) arg)->next_txn_id;
}

/*
 * Like pgrpl_writer_relation_id: a description equal to the relation's
 * latest version is that version, anything else is a new one.
 */
static int32
pgrpl_preview_relation_id(void *arg, const PgrplRelationDesc *d)
{
	PgrplPreview *p = arg;
	PgrplPreviewRel *latest = NULL;
	StringInfoData desc;
	StringInfoData out;
	char		replident[2] = {d->replident, '\0'};
	ListCell   *lc;

	initStringInfo(&desc);
	appendStringInfoChar(&desc, '{');
	pgrpl_jsonout_str(&desc, "kind", "relation");
	pgrpl_jsonout_str(&desc, "schema_name", d->schema_name);
	pgrpl_jsonout_str(&desc, "table_name", d->table_name);
	pgrpl_jsonout_str(&desc, "replica_identity", replident);
	pgrpl_jsonout_key(&desc, "columns");
	appendStringInfoChar(&desc, '[');
	for (int i = 0; i < d->natts; i++)
	{
		appendStringInfoString(&desc, i > 0 ? ", {" : "{");
		pgrpl_jsonout_str(&desc, "name", d->names[i]);
		pgrpl_jsonout_str(&desc, "type", d->types[i]);
		pgrpl_jsonout_key(&desc, "key");
		appendStringInfoString(&desc, d->is_key[i] ? "true}" : "false}");
	}
	appendStringInfoChar(&desc, ']');

	foreach(lc, p->versions)
	{
		PgrplPreviewRel *v = lfirst(lc);

		if (v->remote_oid == d->remote_oid)
			latest = v;
	}
	if (latest != NULL && strcmp(latest->description, desc.data) == 0)
		return latest->rel_id;
	if (latest == NULL)
	{
		latest = palloc(sizeof(PgrplPreviewRel));
		latest->remote_oid = d->remote_oid;
		p->versions = lappend(p->versions, latest);
	}
	latest->rel_id = ++p->next_rel_id;
	latest->description = desc.data;

	initStringInfo(&out);
	appendStringInfoString(&out, desc.data);
	pgrpl_jsonout_int(&out, "rel_id", latest->rel_id);
	pgrpl_preview_lsn(&out, "first_lsn", d->first_lsn);
	pgrpl_preview_emit(p, &out);
	return latest->rel_id;
}

static void
pgrpl_preview_change(void *arg, const PgrplChangeRow *r)
{
	StringInfoData out;
	char		op[2] = {r->op, '\0'};

	initStringInfo(&out);
	appendStringInfoChar(&out, '{');
	pgrpl_jsonout_str(&out, "kind", "change");
	pgrpl_jsonout_int(&out, "txn_id", r->txn_id);
	pgrpl_jsonout_int(&out, "seq", r->seq);
	pgrpl_preview_lsn(&out, "lsn", r->lsn);
	pgrpl_jsonout_str(&out, "op", op);
	if (r->rel_id != 0)
		pgrpl_jsonout_int(&out, "rel_id", r->rel_id);
	pgrpl_preview_jsonb(&out, "old", r->old);
	pgrpl_preview_jsonb(&out, "new", r->new);
	if (r->unchanged != NULL)
	{
		text	   *t = DatumGetTextPP(DirectFunctionCall1(array_to_json,
														   PointerGetDatum(r->unchanged)));

		pgrpl_jsonout_key(&out, "unchanged");
		appendBinaryStringInfo(&out, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
	}
	pgrpl_preview_jsonb(&out, "row_key", r->row_key);
	pgrpl_preview_jsonb(&out, "old_key", r->old_key);
	if (r->op == PGRPL_OP_MESSAGE)
	{
		pgrpl_jsonout_str(&out, "message_prefix", r->message_prefix);
		pgrpl_jsonout_bytes(&out, "message_content", r->message_content,
							r->message_len);
	}
	pgrpl_preview_emit(arg, &out);
}

static void
pgrpl_preview_txn_row(void *arg, const PgrplTxnRow *t, const char *kind)
{
	StringInfoData out;
	char		state[2] = {t->state, '\0'};

	initStringInfo(&out);
	appendStringInfoChar(&out, '{');
	pgrpl_jsonout_str(&out, "kind", kind);
	pgrpl_jsonout_int(&out, "txn_id", t->txn_id);
	pgrpl_jsonout_str(&out, "state", state);
	pgrpl_preview_lsn(&out, "commit_lsn", t->commit_lsn);
	pgrpl_preview_lsn(&out, "end_lsn", t->end_lsn);
	if (t->has_xid)
		pgrpl_jsonout_int(&out, "xid", t->xid);
	pgrpl_jsonout_str(&out, "origin", t->origin);
	pgrpl_jsonout_int(&out, "changes", t->changes);
	if (t->gid != NULL)
	{
		pgrpl_jsonout_str(&out, "gid", t->gid);
		pgrpl_preview_lsn(&out, "prepare_lsn", t->prepare_lsn);
	}
	pgrpl_preview_emit(arg, &out);
}

static void
pgrpl_preview_transaction(void *arg, const PgrplTxnRow *t)
{
	pgrpl_preview_txn_row(arg, t, "transaction");
}

/* A streamed transaction's row, shown again with its final state. */
static void
pgrpl_preview_finish_transaction(void *arg, const PgrplTxnRow *t)
{
	pgrpl_preview_txn_row(arg, t, "transaction update");
}

/*
 * COMMIT or ROLLBACK PREPARED: shown with the gid it looks for; the preview
 * has no log to find the prepared transaction in.
 */
static bool
pgrpl_preview_finish_prepared(void *arg, const PgrplTxnRow *t)
{
	StringInfoData out;
	char		state[2] = {t->state, '\0'};

	initStringInfo(&out);
	appendStringInfoChar(&out, '{');
	pgrpl_jsonout_str(&out, "kind", "prepared update");
	pgrpl_jsonout_str(&out, "gid", t->gid);
	pgrpl_jsonout_int(&out, "xid", t->xid);
	pgrpl_jsonout_str(&out, "state", state);
	pgrpl_preview_lsn(&out, "commit_lsn", t->commit_lsn);
	pgrpl_preview_lsn(&out, "end_lsn", t->end_lsn);
	pgrpl_preview_emit(arg, &out);
	return true;
}

/* The preview has no log: nothing is known prepared. */
static bool
pgrpl_preview_prepared_known(void *arg, const char *gid, TransactionId xid)
{
	return false;
}

static void
pgrpl_preview_discard(void *arg, int64 txn_id, int32 from_seq)
{
	StringInfoData out;

	initStringInfo(&out);
	appendStringInfoChar(&out, '{');
	pgrpl_jsonout_str(&out, "kind", "discard");
	pgrpl_jsonout_int(&out, "txn_id", txn_id);
	pgrpl_jsonout_int(&out, "from_seq", from_seq);
	pgrpl_preview_emit(arg, &out);
}

/* One message through the capture module. */
static void
pgrpl_preview_message(PgrplCapture *cap, bytea *raw, XLogRecPtr lsn)
{
	PgrplMessage msg;

	pgrpl_decode_bytea(raw, &msg, cap->in_stream);
	(void) pgrpl_capture_message(cap, &msg, lsn);
}

/*
 * pgrpl.capture_preview(messages bytea[], lsns pg_lsn[] DEFAULT NULL)
 * RETURNS SETOF jsonb: the rows the messages (CopyData 'w' payloads, in
 * stream order, each received at the matching lsn) would become.
 */
Datum
pgrpl_capture_preview(PG_FUNCTION_ARGS)
{
	PgrplSink	sink = {
		.open = pgrpl_preview_open,
		.new_txn_id = pgrpl_preview_new_txn_id,
		.relation_id = pgrpl_preview_relation_id,
		.change = pgrpl_preview_change,
		.transaction = pgrpl_preview_transaction,
		.finish_transaction = pgrpl_preview_finish_transaction,
		.discard = pgrpl_preview_discard,
		.finish_prepared = pgrpl_preview_finish_prepared,
		.prepared_known = pgrpl_preview_prepared_known
	};
	PgrplPreview p = {0};
	PgrplCapture cap = {0};
	Datum	   *msgs;
	bool	   *msg_nulls;
	int			nmsgs;
	Datum	   *lsns = NULL;
	bool	   *lsn_nulls = NULL;
	int			nlsns = 0;
	int			client_encoding = pg_get_client_encoding();

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("messages must not be null")));
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(0), BYTEAOID, -1, false, TYPALIGN_INT,
					  &msgs, &msg_nulls, &nmsgs);
	if (!PG_ARGISNULL(1))
	{
		deconstruct_array(PG_GETARG_ARRAYTYPE_P(1), LSNOID, sizeof(XLogRecPtr),
						  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &lsns, &lsn_nulls, &nlsns);
		if (nlsns != nmsgs)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("lsns must have one element per message"),
					 errdetail("There are %d messages and %d LSNs.", nmsgs, nlsns)));
	}

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	p.rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	sink.arg = &p;
	pgrpl_relmap_reset();
	pgrpl_relmap_set_loopback(false);
	pgrpl_capture_init(&cap, &sink, false, InvalidXLogRecPtr);

	/* The bytes are the server's own: read them without conversion. */
	if (client_encoding != GetDatabaseEncoding())
		(void) SetClientEncoding(GetDatabaseEncoding());
	PG_TRY();
	{
		for (int i = 0; i < nmsgs; i++)
		{
			if (msg_nulls[i] || (lsns != NULL && lsn_nulls[i]))
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("messages and lsns must not contain nulls")));
			pgrpl_preview_message(&cap, DatumGetByteaPP(msgs[i]),
								  lsns ? DatumGetLSN(lsns[i]) : InvalidXLogRecPtr);
		}
	}
	PG_FINALLY();
	{
		if (client_encoding != GetDatabaseEncoding())
			(void) SetClientEncoding(client_encoding);
		pgrpl_capture_destroy(&cap);
		pgrpl_relmap_reset();
	}
	PG_END_TRY();
	return (Datum) 0;
}
