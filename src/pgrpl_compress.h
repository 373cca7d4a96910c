/*-------------------------------------------------------------------------
 * pgrpl_compress.h
 *		Compression of the change log's large values, decided by the writer.
 *-------------------------------------------------------------------------
 */
#ifndef PGRPL_COMPRESS_H
#define PGRPL_COMPRESS_H

#include "utils/relcache.h"

extern bool pgrpl_compress_row(Relation rel, Datum *values, bool *nulls,
							   const int *cols, int ncols, Size hoff);

#endif							/* PGRPL_COMPRESS_H */
