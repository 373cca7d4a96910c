/*-------------------------------------------------------------------------
 * pgrpl_jsonout.c
 *		A tiny JSON object writer over a StringInfo, for the functions that
 *		describe things as jsonb: pgrpl.decode() and pgrpl.capture_preview().
 *
 * The caller opens the object with '{' (or an array with '['), each call
 * appends one "key": value member, and the caller closes it.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"

#include "pgrpl_compat.h"
#include "pgrpl_jsonout.h"


void
pgrpl_jsonout_key(StringInfo out, const char *key)
{
	if (out->data[out->len - 1] != '{' && out->data[out->len - 1] != '[')
		appendStringInfoString(out, ", ");
	escape_json(out, key);
	appendStringInfoString(out, ": ");
}

void
pgrpl_jsonout_str(StringInfo out, const char *key, const char *val)
{
	pgrpl_jsonout_key(out, key);
	if (val == NULL)
		appendStringInfoString(out, "null");
	else
		escape_json(out, val);
}

void
pgrpl_jsonout_int(StringInfo out, const char *key, int64 val)
{
	pgrpl_jsonout_key(out, key);
	appendStringInfo(out, INT64_FORMAT, val);
}

void
pgrpl_jsonout_bool(StringInfo out, const char *key, bool val)
{
	pgrpl_jsonout_key(out, key);
	appendStringInfoString(out, val ? "true" : "false");
}

void
pgrpl_jsonout_lsn(StringInfo out, const char *key, XLogRecPtr lsn)
{
	char		buf[32];

	snprintf(buf, sizeof(buf), "%X/%X", LSN_FORMAT_ARGS(lsn));
	pgrpl_jsonout_str(out, key, buf);
}

void
pgrpl_jsonout_time(StringInfo out, const char *key, TimestampTz t)
{
	char		buf[MAXDATELEN + 1];

	pgrpl_jsonout_key(out, key);
	escape_json(out, JsonEncodeDateTime(buf, TimestampTzGetDatum(t),
										TIMESTAMPTZOID, NULL));
}

void
pgrpl_jsonout_bytes(StringInfo out, const char *key, const char *data, int len)
{
	bytea	   *b = palloc(VARHDRSZ + len);

	SET_VARSIZE(b, VARHDRSZ + len);
	memcpy(VARDATA(b), data, len);
	pgrpl_jsonout_str(out, key,
				   DatumGetCString(DirectFunctionCall1(byteaout, PointerGetDatum(b))));
}
