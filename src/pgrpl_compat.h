/*-------------------------------------------------------------------------
 * pgrpl_compat.h
 *		The one place where PostgreSQL major-version differences live.
 *
 * pgrpl builds against PostgreSQL 15 to 18 (tested as a subscriber on 15,
 * 17 and 18; see README, "Supported PostgreSQL versions").  Every call whose
 * signature differs between majors goes through a macro here, so porting
 * means editing this file only: no other file tests PG_VERSION_NUM.
 *-------------------------------------------------------------------------
 */
#ifndef PGRPL_COMPAT_H
#define PGRPL_COMPAT_H

#include "replication/walreceiver.h"

#if PG_VERSION_NUM < 150000
#error "pgrpl requires PostgreSQL 15 or later"
#endif

/* PG16 moved the varlena macros (VARDATA, SET_VARSIZE, ...) to varatt.h. */
#if PG_VERSION_NUM >= 160000
#include "varatt.h"
#endif

/*
 * PG16 added must_use_password to both calls; PG17 added replication
 * (false: a plain connection to a database; pgrpl wants replication).
 */
#if PG_VERSION_NUM >= 170000
#define pgrpl_walrcv_check_conninfo(ci) walrcv_check_conninfo((ci), false)
#define pgrpl_walrcv_connect(ci, appname, err) \
	walrcv_connect((ci), true, true, false, (appname), (err))
#elif PG_VERSION_NUM >= 160000
#define pgrpl_walrcv_check_conninfo(ci) walrcv_check_conninfo((ci), false)
#define pgrpl_walrcv_connect(ci, appname, err) \
	walrcv_connect((ci), true, false, (appname), (err))
#else
#define pgrpl_walrcv_check_conninfo(ci) walrcv_check_conninfo(ci)
#define pgrpl_walrcv_connect(ci, appname, err) \
	walrcv_connect((ci), true, (appname), (err))
#endif

/* PG16 changed replorigin_session_setup() to take the acquiring pid. */
#if PG_VERSION_NUM >= 160000
#define pgrpl_replorigin_session_setup(origin) replorigin_session_setup((origin), 0)
#else
#define pgrpl_replorigin_session_setup(origin) replorigin_session_setup(origin)
#endif

/* PG17 added failover (after two_phase) to slot creation; pgrpl's is off. */
#if PG_VERSION_NUM >= 170000
#define pgrpl_walrcv_create_slot(conn, slot, lsn) \
	walrcv_create_slot((conn), (slot), false, false, false, CRS_NOEXPORT_SNAPSHOT, (lsn))
#else
#define pgrpl_walrcv_create_slot(conn, slot, lsn) \
	walrcv_create_slot((conn), (slot), false, false, CRS_NOEXPORT_SNAPSHOT, (lsn))
#endif

/* PG16 added onlySummarizing to ExecInsertIndexTuples(). */
#if PG_VERSION_NUM >= 160000
#define pgrpl_exec_insert_index_tuples(rri, slot, estate) \
	ExecInsertIndexTuples((rri), (slot), (estate), false, false, NULL, NIL, false)
#else
#define pgrpl_exec_insert_index_tuples(rri, slot, estate) \
	ExecInsertIndexTuples((rri), (slot), (estate), false, false, NULL, NIL)
#endif

/*
 * PG17 made a wait event set belong to a resource owner instead of a memory
 * context.  pgrpl's set lives as long as a replication session and is freed
 * explicitly (also after an error), so it belongs to neither.
 */
#if PG_VERSION_NUM >= 170000
#define pgrpl_create_wait_event_set(nevents) CreateWaitEventSet(NULL, (nevents))
#else
#define pgrpl_create_wait_event_set(nevents) \
	CreateWaitEventSet(TopMemoryContext, (nevents))
#endif

/*
 * PG18 removed pg_attribute_noreturn() (a suffix) for pg_noreturn (a prefix,
 * C11 _Noreturn).  Write "static pgrpl_noreturn void f(...);".
 */
#if PG_VERSION_NUM >= 180000
#define pgrpl_noreturn pg_noreturn
#else
#define pgrpl_noreturn pg_attribute_noreturn()
#endif

#endif							/* PGRPL_COMPAT_H */
