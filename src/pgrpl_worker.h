/*-------------------------------------------------------------------------
 * pgrpl_worker.h
 *		The per-subscription worker: stream, decode, write, report.
 *-------------------------------------------------------------------------
 */
#ifndef PGRPL_WORKER_H
#define PGRPL_WORKER_H

#include "fmgr.h"

extern PGDLLEXPORT void pgrpl_worker_main(Datum main_arg);

#endif							/* PGRPL_WORKER_H */
