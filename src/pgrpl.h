/*-------------------------------------------------------------------------
 * pgrpl.h
 *		Module-wide settings and names shared by every pgrpl source file.
 *-------------------------------------------------------------------------
 */
#ifndef PGRPL_H
#define PGRPL_H

#define PGRPL_SCHEMA		"pgrpl"

/* Replication origin names: "pgrpl_<database oid>_<subscription id>". */
#define PGRPL_ORIGIN_PREFIX	"pgrpl_"

/* GUCs (pgrpl.c) */
extern int	pgrpl_max_workers;
extern int	pgrpl_partition_size;
extern int	pgrpl_idle_flush_delay;
extern bool pgrpl_tcp_pacing;

/* True when the library was loaded by shared_preload_libraries. */
extern bool pgrpl_preloaded;

extern void pgrpl_origin_name(Oid dboid, int32 subid, char *buf, size_t len);

#endif							/* PGRPL_H */
