/*-------------------------------------------------------------------------
 * test/fuzz/fuzz.c
 *		Standalone fuzz driver for pgrpl's pgoutput decoder.
 *
 * Feeds mutated real pgoutput messages (the corpus: one message a line, in
 * hex, see capture.sh) to pgrpl.decode() over one libpq connection, and
 * checks that every case either decodes or fails with a clean ERROR
 * (08P01 protocol_violation expected; any other SQLSTATE is counted and
 * shown) and that the backend survives every case.  A case that loses the
 * connection is written to <crashdir>/crash-<case>.hex and the run stops.
 * At the end the backend's VmPeak/VmHWM are printed (when the server is
 * local) and, with -l, the postmaster log is searched for
 * "terminated by signal".
 *
 * Build:  cc -O2 -o fuzz fuzz.c -I$(pg_config --includedir) \
 *             -L$(pg_config --libdir) -lpq
 * Run:    ./fuzz -d 'host=... dbname=...' -c corpus.hex -n 100000 -s 1 \
 *             [-l postmaster.log] [-o crashdir] [-v]
 * (test/fuzz/run.sh does both.)  Exit status 0: all clean.
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "libpq-fe.h"

#define MAXMSG (1 << 20)

typedef struct Buf
{
	unsigned char *d;
	int			len;
} Buf;

static Buf *corpus;
static int	ncorpus;
static uint64_t rng;

static uint64_t
next(void)
{
	/* xorshift64* */
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 2685821657736338717ULL;
}

static int
rnd(int n)
{
	return n <= 0 ? 0 : (int) (next() % (uint64_t) n);
}

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static void
load_corpus(const char *path)
{
	FILE	   *f = fopen(path, "r");
	char	   *line = NULL;
	size_t		cap = 0;
	ssize_t		n;
	int			max = 0;

	if (f == NULL)
	{
		fprintf(stderr, "cannot open %s: %s\n", path, strerror(errno));
		exit(2);
	}
	while ((n = getline(&line, &cap, f)) > 0)
	{
		Buf			b;

		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		if (n == 0 || line[0] == '#')
			continue;
		b.len = (int) n / 2;
		b.d = malloc(b.len + 1);
		for (int i = 0; i < b.len; i++)
			b.d[i] = (unsigned char) (hexval(line[2 * i]) * 16 + hexval(line[2 * i + 1]));
		if (ncorpus == max)
		{
			max = max ? max * 2 : 64;
			corpus = realloc(corpus, sizeof(Buf) * max);
		}
		corpus[ncorpus++] = b;
	}
	free(line);
	fclose(f);
	if (ncorpus == 0)
	{
		fprintf(stderr, "empty corpus %s\n", path);
		exit(2);
	}
}

/* Replace len bytes at pos of m (growing it if needed) with src. */
static void
put(Buf *m, int pos, const unsigned char *src, int n)
{
	for (int i = 0; i < n && pos + i < MAXMSG; i++)
	{
		if (pos + i >= m->len)
			m->len = pos + i + 1;
		m->d[pos + i] = src[i];
	}
}

static void
put32(Buf *m, int pos, uint32_t v)
{
	unsigned char b[4] = {v >> 24, v >> 16, v >> 8, v};

	put(m, pos, b, 4);
}

static const uint32_t extremes4[] = {0, 0xffffffff, 0x7fffffff, 0x80000000,
	0x3ffffffe, 0x3fffffff, 0x00010000, 0xfffffffe, 1, 0x40000000};
static const uint16_t extremes2[] = {0, 0xffff, 0x7fff, 0x8000, 1664, 1665, 1};

static void
mutate_once(Buf *m)
{
	int			pos = rnd(m->len);
	int			op = rnd(13);
	Buf		   *o;
	int			k,
				n;

	if (m->len == 0)
	{
		m->d[0] = 'I';
		m->len = 1;
		return;
	}
	switch (op)
	{
		case 0:					/* bit flip */
			m->d[pos] ^= (unsigned char) (1 << rnd(8));
			break;
		case 1:					/* random byte */
			m->d[pos] = (unsigned char) rnd(256);
			break;
		case 2:					/* insert a byte */
			if (m->len + 1 >= MAXMSG)
				break;
			memmove(m->d + pos + 1, m->d + pos, m->len - pos);
			m->d[pos] = (unsigned char) rnd(256);
			m->len++;
			break;
		case 3:					/* delete a byte */
			memmove(m->d + pos, m->d + pos + 1, m->len - pos - 1);
			m->len--;
			break;
		case 4:					/* truncate */
			m->len = pos;
			break;
		case 5:					/* 4-byte field to an extreme */
			put32(m, pos, extremes4[rnd(10)]);
			break;
		case 6:					/* 2-byte field to an extreme */
			{
				uint16_t	v = extremes2[rnd(7)];
				unsigned char b[2] = {v >> 8, v};

				put(m, pos, b, 2);
			}
			break;
		case 7:					/* a column length after 't'/'b' */
			for (k = pos; k + 4 < m->len; k++)
				if (m->d[k] == 't' || m->d[k] == 'b')
				{
					put32(m, k + 1, extremes4[rnd(10)]);
					return;
				}
			put32(m, pos, 0x7fffffff);
			break;
		case 8:					/* splice with another message */
			o = &corpus[rnd(ncorpus)];
			k = rnd(o->len + 1);
			n = o->len - k;
			if (pos + 1 + n >= MAXMSG)
				break;
			memcpy(m->d + pos + 1, o->d + k, n);
			m->len = pos + 1 + n;
			break;
		case 9:					/* duplicate a segment */
			n = 1 + rnd(16);
			if (pos + n > m->len)
				n = m->len - pos;
			if (m->len + n >= MAXMSG)
				break;
			memmove(m->d + pos + 2 * n, m->d + pos + n, m->len - pos - n);
			memcpy(m->d + pos + n, m->d + pos, n);
			m->len += n;
			break;
		case 10:				/* tuple column count (after type, relid, tag) */
			if (m->len >= 8)
			{
				uint16_t	v = extremes2[rnd(7)];
				unsigned char b[2] = {v >> 8, v};

				put(m, 6, b, 2);
			}
			break;
		case 11:				/* swap the type byte */
			m->d[0] = (unsigned char) "BCORYIUDTMZ"[rnd(11)];
			break;
		default:				/* append random bytes */
			n = 1 + rnd(8);
			for (k = 0; k < n && m->len < MAXMSG; k++)
				m->d[m->len++] = (unsigned char) rnd(256);
			break;
	}
}

static void
write_crash(const char *dir, long c, Buf *m)
{
	char		path[1024];
	FILE	   *f;

	snprintf(path, sizeof(path), "%s/crash-%ld.hex", dir, c);
	f = fopen(path, "w");
	if (f == NULL)
		return;
	for (int i = 0; i < m->len; i++)
		fprintf(f, "%02x", m->d[i]);
	fprintf(f, "\n");
	fclose(f);
	fprintf(stderr, "crashing input written to %s\n", path);
}

static void
print_mem(int pid)
{
	char		path[64];
	char		line[256];
	FILE	   *f;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	f = fopen(path, "r");
	if (f == NULL)
		return;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "VmPeak:", 7) == 0 || strncmp(line, "VmHWM:", 6) == 0)
			printf("backend %s", line);
	fclose(f);
}

int
main(int argc, char **argv)
{
	const char *conninfo = "";
	const char *corpus_path = "test/fuzz/corpus.hex";
	const char *logpath = NULL;
	const char *crashdir = ".";
	long		ncases = 10000;
	long		decoded = 0,
				violation = 0,
				other = 0;
	int			verbose = 0;
	int			opt;
	int			pid;
	PGconn	   *conn;
	PGresult   *res;
	Buf			m;

	rng = 88172645463325252ULL;
	while ((opt = getopt(argc, argv, "d:c:n:s:l:o:v")) != -1)
	{
		switch (opt)
		{
			case 'd':
				conninfo = optarg;
				break;
			case 'c':
				corpus_path = optarg;
				break;
			case 'n':
				ncases = atol(optarg);
				break;
			case 's':
				rng ^= (uint64_t) strtoull(optarg, NULL, 10) * 0x9E3779B97F4A7C15ULL;
				if (rng == 0)
					rng = 1;
				break;
			case 'l':
				logpath = optarg;
				break;
			case 'o':
				crashdir = optarg;
				break;
			case 'v':
				verbose = 1;
				break;
			default:
				fprintf(stderr, "usage: %s [-d conninfo] [-c corpus] [-n cases] [-s seed] [-l log] [-o crashdir] [-v]\n", argv[0]);
				return 2;
		}
	}
	load_corpus(corpus_path);
	conn = PQconnectdb(conninfo);
	if (PQstatus(conn) != CONNECTION_OK)
	{
		fprintf(stderr, "connection failed: %s", PQerrorMessage(conn));
		return 2;
	}
	res = PQexec(conn, "SELECT pg_backend_pid()");
	pid = atoi(PQgetvalue(res, 0, 0));
	PQclear(res);
	res = PQprepare(conn, "dec", "SELECT pgrpl.decode($1::bytea)", 1, NULL);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		fprintf(stderr, "prepare failed: %s", PQerrorMessage(conn));
		return 2;
	}
	PQclear(res);

	m.d = malloc(MAXMSG + 16);
	for (long c = 0; c < ncases; c++)
	{
		Buf		   *src = &corpus[rnd(ncorpus)];
		int			nmut = rnd(4) == 0 ? 2 + rnd(3) : 1;
		const char *vals[1];
		int			lens[1];
		int			fmts[1] = {1};

		memcpy(m.d, src->d, src->len);
		m.len = src->len;
		for (int k = 0; k < nmut; k++)
			mutate_once(&m);
		vals[0] = (const char *) m.d;
		lens[0] = m.len;
		res = PQexecPrepared(conn, "dec", 1, vals, lens, fmts, 0);
		if (PQresultStatus(res) == PGRES_TUPLES_OK)
			decoded++;
		else
		{
			const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

			if (PQstatus(conn) != CONNECTION_OK || state == NULL)
			{
				fprintf(stderr, "case %ld: connection lost: %s", c, PQerrorMessage(conn));
				write_crash(crashdir, c, &m);
				return 1;
			}
			if (strcmp(state, "08P01") == 0)
				violation++;
			else
			{
				other++;
				if (verbose || other <= 10)
				{
					fprintf(stderr, "case %ld: unexpected %s: %s", c, state,
							PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
					fprintf(stderr, "\n");
					write_crash(crashdir, c, &m);
				}
			}
		}
		PQclear(res);
	}

	res = PQexec(conn, "SELECT pg_backend_pid()");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || atoi(PQgetvalue(res, 0, 0)) != pid)
	{
		fprintf(stderr, "backend did not survive\n");
		return 1;
	}
	PQclear(res);
	printf("cases %ld  decoded %ld  protocol_violation %ld  other_errors %ld\n",
		   ncases, decoded, violation, other);
	print_mem(pid);
	PQfinish(conn);

	if (logpath)
	{
		FILE	   *f = fopen(logpath, "r");
		char		line[4096];
		int			crashes = 0;

		if (f == NULL)
		{
			fprintf(stderr, "cannot open %s\n", logpath);
			return 1;
		}
		while (fgets(line, sizeof(line), f))
			if (strstr(line, "terminated by signal") != NULL)
			{
				crashes++;
				fputs(line, stderr);
			}
		fclose(f);
		printf("postmaster log: %d \"terminated by signal\" lines\n", crashes);
		if (crashes > 0)
			return 1;
	}
	return other > 0 ? 1 : 0;
}
