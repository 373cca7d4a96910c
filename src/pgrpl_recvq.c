/*-------------------------------------------------------------------------
 * pgrpl_recvq.c
 *		The receive queue: stream messages read off the socket ahead of
 *		their handling (see pgrpl_recvq.h for why).
 *
 * Messages are appended to a list of blocks, each as its length, its bytes
 * and a terminating zero byte (libpq hands messages out zero-terminated,
 * and parsers may rely on it), every entry MAXALIGNed so a message starts
 * where libpq's own would.  Appending never moves or frees anything, so the
 * queue can be filled while a message handed out is still being handled
 * (the writer's busy callback does, in the middle of a long write); a block
 * is given back only when the next message is asked for.  A message larger
 * than a block gets a block of its own.  A message is copied once more
 * than before, a few percent of its handling even for the smallest ones.
 * A large message (a huge row) arriving at an empty queue is not copied:
 * it is handed out from libpq's buffer, and the socket is not read again
 * until it has been handled (the next read would free that buffer).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/memutils.h"

#include "pgrpl_recvq.h"

/*
 * Bytes of messages the queue takes before it leaves the rest in the
 * socket: about what loopback TCP buffers on its own (its buffers grow to a
 * few MB), tens of thousands of small changes.  One message is always
 * taken whatever its size, so a huge row still gets through.
 */
#define PGRPL_RECVQ_MAX			(4 * 1024 * 1024)

/* Size of an ordinary block, and how many empty ones are kept for reuse. */
#define PGRPL_RECVQ_BLOCK		(256 * 1024)
#define PGRPL_RECVQ_SPARES		2

/* Messages this large are handed out uncopied when the queue is empty. */
#define PGRPL_RECVQ_DIRECT		(1024 * 1024)

#define PGRPL_RECVQ_HEADER		MAXALIGN(sizeof(int))
#define PGRPL_RECVQ_ENTRY(len)	MAXALIGN(PGRPL_RECVQ_HEADER + (Size) (len) + 1)

typedef struct PgrplRecvBlock
{
	struct PgrplRecvBlock *next;
	Size		size;			/* bytes of data[] */
	Size		used;			/* end of the entries appended */
	Size		read;			/* end of the entries handed out */
	char		data[FLEXIBLE_ARRAY_MEMBER];
} PgrplRecvBlock;

static struct
{
	MemoryContext cxt;
	PgrplRecvBlock *first;		/* the next message to hand out is here */
	PgrplRecvBlock *last;		/* messages are appended here */
	PgrplRecvBlock *spares;		/* empty ordinary blocks */
	int			nspares;
	Size		queued;			/* bytes appended, not yet handed out */
	bool		ended;			/* the primary ended the stream after them */
	char	   *direct;			/* a large message in libpq's buffer, or NULL */
	int			direct_len;
	bool		direct_out;		/* ... handed out: it may still be in use */
} Q;

static void
pgrpl_recvq_release(PgrplRecvBlock *b)
{
	if (b->size == PGRPL_RECVQ_BLOCK && Q.nspares < PGRPL_RECVQ_SPARES)
	{
		b->used = b->read = 0;
		b->next = Q.spares;
		Q.spares = b;
		Q.nspares++;
	}
	else
		pfree(b);
}

void
pgrpl_recvq_reset(void)
{
	while (Q.first != NULL)
	{
		PgrplRecvBlock *b = Q.first;

		Q.first = b->next;
		pgrpl_recvq_release(b);
	}
	Q.last = NULL;
	Q.queued = 0;
	Q.ended = false;
	Q.direct = NULL;
	Q.direct_out = false;
}

/* A block at the end of the list with room for an entry of "entry" bytes. */
static PgrplRecvBlock *
pgrpl_recvq_new_block(Size entry)
{
	PgrplRecvBlock *b;

	if (entry <= PGRPL_RECVQ_BLOCK && Q.spares != NULL)
	{
		b = Q.spares;
		Q.spares = b->next;
		Q.nspares--;
	}
	else
	{
		Size		size = Max(entry, PGRPL_RECVQ_BLOCK);

		if (Q.cxt == NULL)
			Q.cxt = AllocSetContextCreate(TopMemoryContext, "pgrpl receive queue",
										  ALLOCSET_SMALL_SIZES);
		b = MemoryContextAllocHuge(Q.cxt, offsetof(PgrplRecvBlock, data) + size);
		b->size = size;
	}
	b->next = NULL;
	b->used = b->read = 0;
	if (Q.last != NULL)
		Q.last->next = b;
	else
		Q.first = b;
	Q.last = b;
	return b;
}

static void
pgrpl_recvq_push(const char *msg, int len)
{
	Size		entry = PGRPL_RECVQ_ENTRY(len);
	PgrplRecvBlock *b = Q.last;
	char	   *p;

	if (b == NULL || b->size - b->used < entry)
		b = pgrpl_recvq_new_block(entry);
	p = b->data + b->used;
	memcpy(p, &len, sizeof(int));
	memcpy(p + PGRPL_RECVQ_HEADER, msg, len);
	p[PGRPL_RECVQ_HEADER + len] = '\0';
	b->used += entry;
	Q.queued += entry;
}

int
pgrpl_recvq_fill(WalReceiverConn *conn, pgsocket *wait_fd)
{
	int			added = 0;

	/* Reading would free the large message in libpq's buffer. */
	if (Q.direct != NULL)
		return 0;
	while (!Q.ended && Q.queued < PGRPL_RECVQ_MAX)
	{
		char	   *msg = NULL;
		int			len;

		len = walrcv_receive(conn, &msg, wait_fd);
		if (len == 0)
			break;
		if (len < 0)
		{
			Q.ended = true;
			break;
		}
		added++;
		if (len < PGRPL_RECVQ_DIRECT)
		{
			pgrpl_recvq_push(msg, len);
			continue;
		}

		/*
		 * A large message: one at a time (its handling takes long anyway),
		 * uncopied when nothing is queued before it.
		 */
		if (Q.queued == 0)
		{
			Q.direct = msg;
			Q.direct_len = len;
		}
		else
			pgrpl_recvq_push(msg, len);
		break;
	}
	return added;
}

bool
pgrpl_recvq_next(char **buf, int *len)
{
	PgrplRecvBlock *b;
	int			l;

	/* A large message handed out last is done with: the socket may be read. */
	if (Q.direct_out)
	{
		Q.direct = NULL;
		Q.direct_out = false;
	}

	/*
	 * The message handed out last is no longer in use: blocks read to the
	 * end go, and the last block starts over once it is empty.
	 */
	while ((b = Q.first) != NULL && b->read == b->used)
	{
		if (b == Q.last)
		{
			b->read = b->used = 0;
			break;
		}
		Q.first = b->next;
		pgrpl_recvq_release(b);
	}
	if (b == NULL || b->read == b->used)
	{
		/* The queue is empty: a large message may wait behind it. */
		if (Q.direct == NULL)
			return false;
		*buf = Q.direct;
		*len = Q.direct_len;
		Q.direct_out = true;
		return true;
	}
	memcpy(&l, b->data + b->read, sizeof(int));
	*buf = b->data + b->read + PGRPL_RECVQ_HEADER;
	*len = l;
	b->read += PGRPL_RECVQ_ENTRY(l);
	Q.queued -= PGRPL_RECVQ_ENTRY(l);
	return true;
}

bool
pgrpl_recvq_ended(void)
{
	return Q.ended && Q.queued == 0 && Q.direct == NULL;
}
