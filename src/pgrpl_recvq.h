/*-------------------------------------------------------------------------
 * pgrpl_recvq.h
 *		The receive queue: stream messages read off the socket ahead of
 *		their handling.
 *
 * The walsender can send only as much as the socket between us holds.  A
 * Unix socket holds a few hundred small messages (its buffer is charged
 * per message, not per byte), so whenever the worker spends a few
 * milliseconds writing, the walsender stops and waits.  The worker empties
 * the socket into this queue often while it works, so the primary goes on
 * decoding meanwhile; the queue is bounded, and beyond the bound the
 * socket's own limit holds the walsender back as before.
 *-------------------------------------------------------------------------
 */
#ifndef PGRPL_RECVQ_H
#define PGRPL_RECVQ_H

#include "replication/walreceiver.h"

/* Forget everything queued (a new session, or after an error). */
extern void pgrpl_recvq_reset(void);

/*
 * Move what the socket holds into the queue without blocking, up to the
 * queue's bound.  Returns the number of messages added.  When the socket
 * ran dry, *wait_fd is the socket to wait on; when the primary ended the
 * stream, pgrpl_recvq_ended() says so once the queue has been handled.
 */
extern int	pgrpl_recvq_fill(WalReceiverConn *conn, pgsocket *wait_fd);

/*
 * The next queued message, valid until the next pgrpl_recvq_next or
 * pgrpl_recvq_reset (filling the queue meanwhile does not move it).  False
 * when the queue is empty.
 */
extern bool pgrpl_recvq_next(char **buf, int *len);

/* The primary ended the stream (after the messages still queued). */
extern bool pgrpl_recvq_ended(void);

#endif							/* PGRPL_RECVQ_H */
