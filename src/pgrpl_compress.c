/*-------------------------------------------------------------------------
 * pgrpl_compress.c
 *		Compression of the change log's large values, decided by the writer.
 *
 * A change row's large values (old, new, a message's content) have storage
 * EXTERNAL (pgrpl--2.2--2.3.sql): the table AM moves them out of line but
 * never compresses them.  The writer compresses them here instead, under
 * the same rule TOAST follows for EXTENDED columns (only a row over
 * TOAST_TUPLE_THRESHOLD, its biggest values first, until it fits), with one
 * difference: a value of PGRPL_PROBE_MIN bytes or more is compressed only
 * if a sample of it shrinks.  Why: lz4 has no early exit, and a
 * captured value that does not compress (random or encrypted bytes, hex or
 * base64 of them, compressed media) cost the worker a full pass for
 * nothing: 10% of its CPU while it captured 14 kB values of hex (the
 * benchmark's workload (c)), where built-in replication's pglz gives up
 * after the first kilobyte.  What does not compress is stored as it is.
 *
 * Against a 2.2 schema (columns still EXTENDED) nothing is done here: the
 * table AM compresses as it always did.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "access/heaptoast.h"
#include "access/htup_details.h"
#include "access/toast_internals.h"
#include "catalog/pg_type_d.h"
#include "utils/rel.h"

#include "pgrpl_compress.h"

/*
 * A value at least PGRPL_PROBE_MIN bytes long is compressed only if
 * PGRPL_PROBE_BYTES from its middle shrink by 1/PGRPL_PROBE_SAVING_DIV:
 * the middle, because a jsonb value starts with its keys and offsets,
 * which compress well whatever the values are.
 */
#define PGRPL_PROBE_MIN			(4 * 1024)
#define PGRPL_PROBE_BYTES		1024
#define PGRPL_PROBE_SAVING_DIV	8

/* At most this many candidate columns per row (a bit each). */
#define PGRPL_COMPRESS_MAX_COLS	8

/*
 * Is value (an uncompressed, inline varlena) worth compressing with
 * cmethod?  Small ones always are (a full try costs little more than a
 * probe); larger ones if a sample of them shrinks enough.
 */
static bool
pgrpl_compress_worth_trying(Datum value, char cmethod)
{
	struct varlena *v = (struct varlena *) DatumGetPointer(value);
	Size		len = VARSIZE_ANY_EXHDR(v);
	struct varlena *probe;
	struct varlena *packed;
	bool		worth;

	if (len < PGRPL_PROBE_MIN)
		return true;
	probe = palloc(VARHDRSZ + PGRPL_PROBE_BYTES);
	SET_VARSIZE(probe, VARHDRSZ + PGRPL_PROBE_BYTES);
	memcpy(VARDATA(probe), VARDATA_ANY(v) + (len - PGRPL_PROBE_BYTES) / 2,
		   PGRPL_PROBE_BYTES);
	packed = (struct varlena *) DatumGetPointer(
		toast_compress_datum(PointerGetDatum(probe), cmethod));
	worth = packed != NULL &&
		VARSIZE(packed) <= VARSIZE(probe) - VARSIZE(probe) / PGRPL_PROBE_SAVING_DIV;
	if (packed != NULL)
		pfree(packed);
	pfree(probe);
	return worth;
}

/*
 * Compress the values of columns cols[] of a row about to be inserted into
 * rel, as TOAST would compress EXTENDED ones (heap_toast_insert_or_update):
 * the caller found the row, formed with header size hoff, over
 * TOAST_TUPLE_THRESHOLD; the biggest first, until its data fits the
 * table's toast_tuple_target.  Only columns with storage EXTERNAL are ours
 * to compress.  values[] entries may be replaced by compressed copies in
 * the current memory context; true if any was.
 */
bool
pgrpl_compress_row(Relation rel, Datum *values, bool *nulls,
				   const int *cols, int ncols, Size hoff)
{
	TupleDesc	desc = RelationGetDescr(rel);
	Size		max_data_len = RelationGetToastTupleTarget(rel, TOAST_TUPLE_TARGET) - hoff;
	uint32		tried = 0;
	bool		changed = false;

	Assert(ncols <= PGRPL_COMPRESS_MAX_COLS);
	while (heap_compute_data_size(desc, values, nulls) > max_data_len)
	{
		int			biggest = -1;
		Size		biggest_size = MAXALIGN(TOAST_POINTER_SIZE);
		Form_pg_attribute att;
		Datum		packed;

		for (int k = 0; k < ncols; k++)
		{
			struct varlena *v;

			if ((tried & (1U << k)) != 0 || nulls[cols[k]])
				continue;
			v = (struct varlena *) DatumGetPointer(values[cols[k]]);
			if (VARATT_IS_4B_U(v) && VARSIZE(v) > biggest_size)
			{
				biggest = k;
				biggest_size = VARSIZE(v);
			}
		}
		if (biggest < 0)
			break;
		tried |= 1U << biggest;
		att = TupleDescAttr(desc, cols[biggest]);
		if (att->attstorage != TYPSTORAGE_EXTERNAL ||
			!pgrpl_compress_worth_trying(values[cols[biggest]], att->attcompression))
			continue;
		packed = toast_compress_datum(values[cols[biggest]], att->attcompression);
		if (DatumGetPointer(packed) != NULL)
		{
			values[cols[biggest]] = packed;
			changed = true;
		}
	}
	return changed;
}
