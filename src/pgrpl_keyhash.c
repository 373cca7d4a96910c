/*-------------------------------------------------------------------------
 * pgrpl_keyhash.c
 *		Row lookup keys of replica identity keys, one function per contract.
 *
 * row_history() and table_as_of() find a row's changes by an index on
 * (rel_id, key_hash).  A key of one integral number -- by far the most
 * common primary key -- is kept in order, so that the changes of a table
 * with an ascending key extend the index at its right edge as the table's
 * own primary key does, instead of landing on a random leaf page each
 * (measured in 1.1: a random key made 1M inserted rows cost about twice the
 * index time).  Every other key is jsonb's extended hash, which is stable
 * across releases (hash partitioning relies on it).  Values are not unique:
 * queries also compare row_key itself.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/numeric.h"

#include "pgrpl_keyhash.h"

static int
pgrpl_numeric_cmp(Numeric a, Numeric b)
{
	return DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(a),
											 NumericGetDatum(b)));
}

/*
 * The value of an integral numeric within [lo, hi).  Both conversions
 * round, so the result is compared back: 5 and 5.0 are one key, 5.5 is not 6.
 */
static bool
pgrpl_numeric_integer(Numeric num, int64 lo, int64 hi, int64 *result)
{
	bool		have_error = false;
	int64		i;

	if (numeric_is_nan(num) || numeric_is_inf(num))
		return false;
	/* int4 first: no range checks needed (the common case) */
	i = numeric_int4_opt_error(num, &have_error);
	if (have_error)
	{
		if (pgrpl_numeric_cmp(num, int64_to_numeric(lo)) < 0 ||
			pgrpl_numeric_cmp(num, int64_to_numeric(hi)) >= 0)
			return false;
		i = DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(num)));
	}
	if (pgrpl_numeric_cmp(int64_to_numeric(i), num) != 0)
		return false;
	*result = i;
	return true;
}

/* The number of a key that is an object of one integral number in range. */
static bool
pgrpl_key_integer(Jsonb *key, int64 lo, int64 hi, int64 *result)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	if (!JB_ROOT_IS_OBJECT(key) || JB_ROOT_COUNT(key) != 1)
		return false;
	it = JsonbIteratorInit(&key->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_VALUE)
			return v.type == jbvNumeric &&
				pgrpl_numeric_integer(v.val.numeric, lo, hi, result);
	}
	return false;
}

static int64
pgrpl_jsonb_hash(Jsonb *key, uint64 seed)
{
	return DatumGetInt64(DirectFunctionCall2(jsonb_hash_extended,
											 JsonbPGetDatum(key),
											 UInt64GetDatum(seed)));
}

/*
 * 2.0: the relation leads the index, so the key alone decides.  The upper
 * bound excludes INT64_MAX only because numeric comparison needs an
 * exclusive limit; that one value is hashed like any other key.
 */
int64
pgrpl_row_key_hash(Jsonb *key)
{
	int64		i;

	if (pgrpl_key_integer(key, PG_INT64_MIN, PG_INT64_MAX, &i))
		return i;
	return pgrpl_jsonb_hash(key, 0);
}

/* Low bits of a 1.1 lookup key that hold an integer key. */
#define PGRPL_KEY_V1_INT_BITS	48

/*
 * 1.1: the index led with sub_id only, so the relation was mixed in: the
 * relation name's 16-bit tag above a 48-bit integer, or jsonb's hash
 * seeded with the relation name.  Kept unchanged for schemas still at 1.1.
 */
int64
pgrpl_key_hash_v1(const char *schema_name, const char *table_name, Jsonb *key)
{
	const int64 half = INT64CONST(1) << (PGRPL_KEY_V1_INT_BITS - 1);
	uint64		seed;
	int64		i;

	seed = hash_bytes_extended((const unsigned char *) schema_name,
							   strlen(schema_name), 0);
	seed = hash_bytes_extended((const unsigned char *) table_name,
							   strlen(table_name), seed);
	if (pgrpl_key_integer(key, -half, half, &i))
		return (int64) (((seed >> PGRPL_KEY_V1_INT_BITS) << PGRPL_KEY_V1_INT_BITS) |
						(uint64) (i + half));
	return pgrpl_jsonb_hash(key, seed);
}
