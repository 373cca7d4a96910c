/*-------------------------------------------------------------------------
 * pgrpl_keyhash.h
 *		Row lookup keys: what the change log's key index is built on.
 *
 * A lookup key is a contract between the worker, which stores it with each
 * change, and the SQL functions and index expressions that compute it again
 * to find a row.  Its values may never change under a name that an existing
 * schema uses: each contract has its own function and C symbol.
 *-------------------------------------------------------------------------
 */
#ifndef PGRPL_KEYHASH_H
#define PGRPL_KEYHASH_H

#include "utils/jsonb.h"

/* Storage 2.0: pgrpl.row_key_hash(key), C symbol pgrpl_row_key_hash_v2. */
extern int64 pgrpl_row_key_hash(Jsonb *key);

/* Storage 1.1: pgrpl.key_hash(schema, table, key), symbol pgrpl_key_hash_sql. */
extern int64 pgrpl_key_hash_v1(const char *schema_name, const char *table_name,
							   Jsonb *key);

#endif							/* PGRPL_KEYHASH_H */
