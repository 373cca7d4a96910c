/*-------------------------------------------------------------------------
 * pgrpl_launcher.h
 *		The launcher keeps one worker running per enabled subscription.
 *-------------------------------------------------------------------------
 */
#ifndef PGRPL_LAUNCHER_H
#define PGRPL_LAUNCHER_H

#include "fmgr.h"

extern void pgrpl_launcher_register(void);
extern PGDLLEXPORT void pgrpl_launcher_main(Datum main_arg);
extern PGDLLEXPORT void pgrpl_probe_main(Datum main_arg);

#endif							/* PGRPL_LAUNCHER_H */
