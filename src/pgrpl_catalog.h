/*-------------------------------------------------------------------------
 * pgrpl_catalog.h
 *		The pgrpl.subscription table, and worker changes made at commit.
 *-------------------------------------------------------------------------
 */
#ifndef PGRPL_CATALOG_H
#define PGRPL_CATALOG_H

#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "nodes/pg_list.h"

typedef struct PgrplSubscription
{
	int32		id;
	char	   *name;
	bool		enabled;
	char	   *conninfo;
	List	   *publications;	/* of String */
	char	   *slot_name;
	XLogRecPtr	stop_lsn;		/* InvalidXLogRecPtr: none */
	char	   *system_identifier;
	XLogRecPtr	start_lsn;
	bool		streaming;		/* ask for in-progress transactions (14+) */
	bool		two_phase;		/* decode prepared transactions at PREPARE (15+) */
	bool		origin_none;	/* only transactions without a replication origin */
	bool		failover;		/* the slot is a failover slot (17+) */
} PgrplSubscription;

extern PgrplSubscription *pgrpl_subscription_get(const char *name, bool missing_ok);
extern PgrplSubscription *pgrpl_subscription_get_by_id(int32 id);
extern List *pgrpl_subscription_enabled_ids(void);
extern int32 pgrpl_subscription_insert(PgrplSubscription *sub);
extern void pgrpl_subscription_update(PgrplSubscription *sub);
extern void pgrpl_subscription_delete(int32 id);
extern void pgrpl_subscription_set_option(int32 id, const char *column, Oid type,
										  Datum value, bool isnull);

/* What the launcher should do with a subscription's worker, at end of xact. */
typedef enum PgrplWorkerAction
{
	PGRPL_ACTION_NONE,
	PGRPL_ACTION_START,			/* wanted = true */
	PGRPL_ACTION_STOP,			/* wanted = false, signal the worker */
	PGRPL_ACTION_RESTART,		/* reconnect to reread settings */
	PGRPL_ACTION_FORGET			/* free the slot (after drop) */
} PgrplWorkerAction;

/*
 * Queue what to do with the worker of subscription subid (of this database)
 * when the transaction ends: on_commit if it commits, on_abort if it aborts.
 * on_abort undoes a change the caller made to shared memory at once; it is
 * also applied, at the end of the transaction however it ends, when the
 * subtransaction that queued it is rolled back.  Actions are applied in the
 * order queued.  A transaction with actions queued cannot be prepared.
 */
extern void pgrpl_at_end_of_xact(int32 subid, PgrplWorkerAction on_commit,
								 PgrplWorkerAction on_abort);

#endif							/* PGRPL_CATALOG_H */
