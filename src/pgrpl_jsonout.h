/*-------------------------------------------------------------------------
 * pgrpl_jsonout.h
 *		A tiny JSON object writer over a StringInfo (see pgrpl_jsonout.c).
 *-------------------------------------------------------------------------
 */
#ifndef PGRPL_JSONOUT_H
#define PGRPL_JSONOUT_H

#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "lib/stringinfo.h"

extern void pgrpl_jsonout_key(StringInfo out, const char *key);
extern void pgrpl_jsonout_str(StringInfo out, const char *key, const char *val);
extern void pgrpl_jsonout_int(StringInfo out, const char *key, int64 val);
extern void pgrpl_jsonout_bool(StringInfo out, const char *key, bool val);
extern void pgrpl_jsonout_lsn(StringInfo out, const char *key, XLogRecPtr lsn);
extern void pgrpl_jsonout_time(StringInfo out, const char *key, TimestampTz t);
extern void pgrpl_jsonout_bytes(StringInfo out, const char *key, const char *data, int len);

#endif							/* PGRPL_JSONOUT_H */
