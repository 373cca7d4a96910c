# t/025_snapshot.pl — the rows tables had before capture started.
#
#  1. A 100,000-row table is copied (10 chunks) while a writer changes
#     random rows all the time (updates, deletes, inserts, key changes);
#     afterwards table_as_of equals the primary's table, and no key was
#     copied twice; at the copy's end and at transactions after it,
#     table_as_of equals the table as the primary's audit trail rebuilds it.
#  2. The subscriber is killed (-9) during a copy, twice: the copy goes on
#     from its last finished chunk, nothing is copied twice, the result
#     equals the primary.
#  3. The primary restarts (immediate) during a copy: likewise.  Then
#     only the copy's connection is terminated, twice: the same worker
#     goes on copying, likewise.
#  4. Copied again on demand after a purge: equals the primary again.
#  5. Updates that leave a TOASTed column unchanged (not sent) race a
#     copy: no row of table_as_of lacks that column.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PgrplTest;

my $primary = pgrpl_init_primary('primary');
my $sub = pgrpl_init_subscriber('subscriber');
my $connstr = pgrpl_sub_connstr($primary);
my $rows = 100_000;

$primary->safe_psql(
	'postgres', qq{
	CREATE TABLE public.t (id int PRIMARY KEY, v text, n int NOT NULL DEFAULT 0);
	INSERT INTO public.t SELECT g, md5(g::text), 0 FROM generate_series(1, $rows) g;
	CREATE TABLE public.stop (x int);
	-- Every change of public.t from here on, in commit order (one writer
	-- at a time, committing after each statement), unpublished.
	CREATE TABLE public.audit (n bigserial PRIMARY KEY, xid bigint NOT NULL DEFAULT txid_current(),
	                           id int NOT NULL, r jsonb);
	CREATE FUNCTION public.audit_t() RETURNS trigger LANGUAGE plpgsql AS \$\$
	BEGIN
	    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.id <> NEW.id) THEN
	        INSERT INTO public.audit (id, r) VALUES (OLD.id, NULL);
	    END IF;
	    IF TG_OP <> 'DELETE' THEN
	        INSERT INTO public.audit (id, r) VALUES (NEW.id, to_jsonb(NEW));
	    END IF;
	    RETURN NULL;
	END \$\$;
	CREATE TRIGGER audit_t AFTER INSERT OR UPDATE OR DELETE ON public.t
	    FOR EACH ROW EXECUTE FUNCTION public.audit_t();
	CREATE SEQUENCE public.new_ids START $rows;
	CREATE PUBLICATION pub FOR TABLE public.t;
	-- Changes random rows until public.stop has a row (or 120 s passed).
	CREATE PROCEDURE public.writer(seed float8)
	LANGUAGE plpgsql AS \$\$
	DECLARE
	    deadline timestamptz := clock_timestamp() + interval '120 seconds';
	    k int;
	    i int := 0;
	BEGIN
	    PERFORM setseed(seed);
	    WHILE NOT EXISTS (SELECT FROM public.stop) AND clock_timestamp() < deadline LOOP
	        i := i + 1;
	        k := 1 + floor(random() * $rows)::int;
	        CASE i % 10
	            WHEN 0 THEN DELETE FROM public.t WHERE id = k;
	            WHEN 1 THEN INSERT INTO public.t VALUES (nextval('public.new_ids') + 1, 'new ' || i, 0);
	            WHEN 2 THEN UPDATE public.t SET id = -id WHERE id = k;   -- a key change
	            ELSE UPDATE public.t SET v = md5(random()::text), n = n + 1 WHERE id = k;
	        END CASE;
	        COMMIT;
	        -- a busy primary, not one the worker cannot keep up with
	        IF i % 20 = 0 THEN PERFORM pg_sleep(0.01); END IF;
	    END LOOP;
	END
	\$\$;
});

# Start the writer in the background.
sub start_writer
{
	my ($seed) = @_;
	$primary->safe_psql('postgres', 'TRUNCATE public.stop');
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ 'psql', '-X', '-q', '-d', $primary->connstr('postgres'), '-c', "CALL public.writer($seed)" ],
		'>', \$out, '2>', \$err);
	# It is running once it has inserted a row (a sequence is not
	# transactional; statistics arrive only when the CALL ends).
	my $seen = $primary->safe_psql('postgres', 'SELECT last_value FROM public.new_ids');
	$primary->poll_query_until('postgres',
		"SELECT last_value > $seen FROM public.new_ids")
	  or diag("writer: $err");
	return $h;
}

sub stop_writer
{
	my ($h) = @_;
	$primary->safe_psql('postgres', 'INSERT INTO public.stop VALUES (1)');
	$h->finish;
	is($h->result(0), 0, 'the writer ended cleanly');
}

sub wait_copied
{
	my ($name, $what) = @_;
	ok( $sub->poll_query_until(
			'postgres',
			"SELECT bool_and(state = 'done') FROM pgrpl.stat_snapshot WHERE subscription = '$name'"),
		"$what: the copy finished")
	  or diag($sub->safe_psql('postgres', 'SELECT * FROM pgrpl.stat_snapshot'));
}

# table_as_of (after everything up to the primary's current LSN arrived)
# against the primary's table, compared as sorted JSON lines.
sub check_equal
{
	my ($name, $what) = @_;
	pgrpl_wait_lsn($sub, $name, pgrpl_primary_lsn($primary), "$what: caught up");
	my $log = $sub->safe_psql('postgres',
		"SELECT r::text FROM pgrpl.table_as_of('$name', 'public.t') r ORDER BY (r->>'id')::int");
	my $prim = $primary->safe_psql('postgres',
		"SELECT to_jsonb(t)::text FROM public.t ORDER BY id");
	my @l = split /\n/, $log;
	my @p = split /\n/, $prim;
	is(scalar(@l), scalar(@p), "$what: table_as_of has as many rows as the primary");
	is($log, $prim, "$what: table_as_of equals the primary's table");
}

# The table as it was at the commit of each of several transactions from
# the end of the copy on (the last watermark's, then ones spread over what
# followed), rebuilt on the primary from its audit trail (the rows as
# inserted, then each one's changes in commit order up to the last
# transaction the log shows committed at that LSN), against table_as_of
# at that LSN.
sub check_history
{
	my ($name, $what) = @_;
	my $copy_end = $sub->safe_psql('postgres',
		"SELECT max(commit_lsn) FROM pgrpl.changes('$name') WHERE op = 'SNAPSHOT'");
	my @after = split /\n/, $sub->safe_psql('postgres',
		"SELECT commit_lsn FROM pgrpl.transactions('$name') WHERE commit_lsn > '$copy_end' ORDER BY commit_lsn");
	ok(@after >= 5, "$what: transactions after the copy (" . scalar(@after) . ")");
	my @at = ($copy_end, map { $after[ int($_ * $#after / 4) ] } 0 .. 4);
	for my $lsn (@at)
	{
		# The last writer transactions the log has up to $lsn (the
		# watermarks' own transactions have no audit rows).
		my $xids = $sub->safe_psql('postgres', qq{
			SELECT string_agg(xid::text, ',') FROM (
			  SELECT xid FROM pgrpl.transactions('$name') WHERE commit_lsn <= '$lsn'
			   ORDER BY commit_lsn DESC LIMIT 50) x});
		my $cut = $primary->safe_psql('postgres',
			"SELECT max(n) FROM public.audit WHERE xid % 4294967296 IN ($xids)");
		my $want = $primary->safe_psql('postgres', qq{
			WITH base AS (SELECT g AS id, jsonb_build_object('id', g, 'v', md5(g::text), 'n', 0) AS r
			                FROM generate_series(1, $rows) g),
			     last AS (SELECT DISTINCT ON (id) id, r FROM public.audit WHERE n <= $cut ORDER BY id, n DESC)
			SELECT string_agg(x.r::text, E'\n' ORDER BY x.id) FROM (
			  SELECT COALESCE(l.id, b.id) AS id, CASE WHEN l.id IS NOT NULL THEN l.r ELSE b.r END AS r
			    FROM base b FULL JOIN last l ON l.id = b.id) x
			 WHERE x.r IS NOT NULL});
		my $got = $sub->safe_psql('postgres', qq{
			SELECT string_agg(r::text, E'\n' ORDER BY (r->>'id')::int)
			  FROM pgrpl.table_as_of('$name', 'public.t', '$lsn'::pg_lsn) r});
		ok($got eq $want, "$what: table_as_of at $lsn equals the primary's table then (audit up to $cut)")
		  or diag("log has " . scalar(split /\n/, $got) . " rows, the audit " . scalar(split /\n/, $want));
	}
}

# No key has two SNAPSHOT rows from the same copy (seq is per chunk; a key
# copied twice in one copy would show up twice among the copy's rows).
sub check_once
{
	my ($name, $what) = @_;
	is( $sub->safe_psql(
			'postgres', qq{
		SELECT count(*) FROM (
		  SELECT new->>'id' FROM pgrpl.changes('$name') WHERE op = 'SNAPSHOT'
		   GROUP BY new->>'id' HAVING count(*) > 1) d}),
		'0', "$what: no row was copied twice");
}

# ------------------------------------------ 1. copy under concurrent writes --

my $w = start_writer(0.1);
$sub->safe_psql('postgres',
	"SELECT pgrpl.create_subscription('s', '$connstr', ARRAY['pub'])");
wait_copied('s', 'concurrent writes');
stop_writer($w);
is( $sub->safe_psql(
		'postgres',
		"SELECT chunks >= 10 FROM pgrpl.stat_snapshot WHERE subscription = 's'"),
	't', 'copied in chunks of at most 10000 rows');
check_equal('s', 'concurrent writes');
check_once('s', 'concurrent writes');
check_history('s', 'concurrent writes');
# The writer really raced the copy: changes of rows arrived before their
# chunk was copied, and after.
is( $sub->safe_psql(
		'postgres', q{
		WITH first_copy AS (SELECT min(commit_lsn) AS l FROM pgrpl.changes('s') WHERE op = 'SNAPSHOT'),
		     last_copy AS (SELECT max(commit_lsn) AS l FROM pgrpl.changes('s') WHERE op = 'SNAPSHOT')
		SELECT count(*) FILTER (WHERE c.commit_lsn BETWEEN f.l AND l.l AND c.op <> 'SNAPSHOT') > 0
		  FROM pgrpl.changes('s') c, first_copy f, last_copy l}),
	't', 'changes were streamed while the table was being copied');

# -------------------------------------------- 2. kill -9 during a copy --

$w = start_writer(0.2);
$sub->safe_psql('postgres',
	"SELECT pgrpl.create_subscription('k', '$connstr', ARRAY['pub'])");
for my $round (1 .. 2)
{
	my $at = 2 + 3 * ($round - 1);
	$sub->poll_query_until('postgres',
		"SELECT chunks >= $at OR state = 'done' FROM pgrpl.stat_snapshot WHERE subscription = 'k'",
		't');
	# The worker commits asynchronously: what counts as finished is what
	# is on disk, so wait for the WAL writer to flush past the count read.
	my ($before, $lsn) = split /\|/,
	  $sub->safe_psql('postgres',
		"SELECT chunks, pg_current_wal_insert_lsn() FROM pgrpl.stat_snapshot WHERE subscription = 'k'");
	$sub->poll_query_until('postgres', "SELECT pg_current_wal_flush_lsn() >= '$lsn'");
	pgrpl_kill9_all($sub);
	$sub->start;
	note "kill -9 $round after $before chunks";
	ok( $sub->safe_psql('postgres',
			"SELECT chunks >= $before FROM pgrpl.stat_snapshot WHERE subscription = 'k'") eq 't',
		"kill -9 $round: the finished chunks ($before) are kept");
}
wait_copied('k', 'kill -9');
stop_writer($w);
check_equal('k', 'kill -9');
check_once('k', 'kill -9');

# ------------------------------------- 3. primary restart during a copy --

$w = start_writer(0.3);
$sub->safe_psql('postgres',
	"SELECT pgrpl.create_subscription('p', '$connstr', ARRAY['pub'])");
$sub->poll_query_until('postgres',
	"SELECT chunks >= 3 OR state = 'done' FROM pgrpl.stat_snapshot WHERE subscription = 'p'");
$primary->stop('immediate');
$w->finish;    # the writer lost its connection
$primary->start;
wait_copied('p', 'primary restart');
check_equal('p', 'primary restart');
check_once('p', 'primary restart');

# ------------------- 3b. the snapshot connection terminated during a copy --
# Only the copy's own connection is lost (the primary terminates it, as an
# idle timeout or an administrator would), twice: the copy goes on in the
# same session (the worker keeps its pid, the stream is not interrupted),
# from the last finished chunk, nothing twice.  A table of its own, large
# enough (50 chunks) that the copy is still running when the terminations
# come, however fast the machine copies.

my $big3 = 500_000;
$primary->safe_psql(
	'postgres', qq{
	CREATE TABLE public.t3 (id int PRIMARY KEY, v text);
	INSERT INTO public.t3 SELECT g, md5(g::text) FROM generate_series(1, $big3) g;
	CREATE PUBLICATION pub3 FOR TABLE public.t3;
});
$sub->safe_psql('postgres',
	"SELECT pgrpl.create_subscription('x', '$connstr', ARRAY['pub3'])");
$sub->poll_query_until('postgres',
	"SELECT pid IS NOT NULL FROM pgrpl.stat_subscription WHERE name = 'x'");
my $xpid = $sub->safe_psql('postgres',
	"SELECT pid FROM pgrpl.stat_subscription WHERE name = 'x'");
for my $at (2, 10)
{
	$sub->poll_query_until('postgres',
		"SELECT chunks >= $at OR state = 'done' FROM pgrpl.stat_snapshot WHERE subscription = 'x'");
	ok( $primary->poll_query_until(
			'postgres', qq{
		SELECT count(pg_catalog.pg_terminate_backend(pid)) > 0 FROM pg_stat_activity
		 WHERE application_name = 'x snapshot'}),
		"after $at chunks: the snapshot connection was terminated");
}
wait_copied('x', 'snapshot connection terminated');
is($sub->safe_psql('postgres',
		"SELECT pid FROM pgrpl.stat_subscription WHERE name = 'x'"),
	$xpid, 'snapshot connection terminated: the same worker finished the copy');
is($sub->safe_psql('postgres',
		"SELECT last_error IS NULL FROM pgrpl.stat_snapshot WHERE subscription = 'x'"),
	't', 'snapshot connection terminated: no error left once done');
is( $sub->safe_psql(
		'postgres', qq{
	SELECT count(*) || ' ' || md5(string_agg(r::text, ',' ORDER BY (r->>'id')::int))
	  FROM pgrpl.table_as_of('x', 'public.t3') r}),
	$primary->safe_psql(
		'postgres', qq{
	SELECT count(*) || ' ' || md5(string_agg(to_jsonb(t)::text, ',' ORDER BY id)) FROM public.t3 t}),
	'snapshot connection terminated: table_as_of equals the primary\'s table');
check_once('x', 'snapshot connection terminated');
$sub->safe_psql('postgres', "SELECT pgrpl.drop_subscription('x')");
$primary->safe_psql('postgres', 'DROP PUBLICATION pub3; DROP TABLE public.t3');

# ------------------------------------------------- 4. again, on demand --

$sub->safe_psql('postgres',
	"SELECT pgrpl.purge('s', 'FFFFFFFF/FFFFFFFF'::pg_lsn)");
is($sub->safe_psql('postgres', "SELECT count(*) FROM pgrpl.table_as_of('s', 'public.t')"),
	'0', 'after the purge the log knows no row');
$sub->safe_psql('postgres', "SELECT pgrpl.snapshot('s', 'public.t')");
wait_copied('s', 'on demand');
check_equal('s', 'on demand');

# ------------------------- 5. unchanged TOASTed values during a copy --

# An UPDATE that leaves a TOASTed column unchanged does not send it.  A row
# such updates change between its chunk's snapshot and watermark is left
# out of the chunk (the stream's change is newer), and no change in the
# log has that column: the chunk's row is written at the watermark with
# the updates applied instead.
my $big = 20_000;
$primary->safe_psql(
	'postgres', qq{
	CREATE TABLE public.big (id int PRIMARY KEY, n int NOT NULL DEFAULT 0, doc text);
	ALTER TABLE public.big ALTER COLUMN doc SET STORAGE EXTERNAL;   -- 2.5kB: out of line
	INSERT INTO public.big SELECT g, 0, repeat(md5(g::text), 80) FROM generate_series(1, $big) g;
	CREATE PUBLICATION pub_big FOR TABLE public.big;
	CREATE PROCEDURE public.big_writer() LANGUAGE plpgsql AS \$\$
	DECLARE
	    deadline timestamptz := clock_timestamp() + interval '120 seconds';
	BEGIN
	    PERFORM setseed(0.5);
	    WHILE NOT EXISTS (SELECT FROM public.stop) AND clock_timestamp() < deadline LOOP
	        UPDATE public.big SET n = n + 1 WHERE id = 1 + floor(random() * $big)::int;
	        COMMIT;
	    END LOOP;
	END
	\$\$;
	TRUNCATE public.stop;
});
my ($bout, $berr) = ('', '');
my $bw = IPC::Run::start(
	[ 'psql', '-X', '-q', '-d', $primary->connstr('postgres'), '-c', 'CALL public.big_writer()' ],
	'>', \$bout, '2>', \$berr);
$primary->poll_query_until('postgres', 'SELECT EXISTS (SELECT FROM public.big WHERE n > 0)')
  or diag("big_writer: $berr");
my $log_offset = -s $sub->logfile;
$sub->safe_psql('postgres',
	"SELECT pgrpl.create_subscription('b', '$connstr', ARRAY['pub_big'])");
wait_copied('b', 'unchanged TOAST');
stop_writer($bw);
pgrpl_wait_lsn($sub, 'b', pgrpl_primary_lsn($primary), 'unchanged TOAST: caught up');
is( $sub->safe_psql(
		'postgres', q{
		SELECT count(*) || ' rows, ' || count(*) FILTER (WHERE NOT r ? 'doc') || ' without doc'
		  FROM pgrpl.table_as_of('b', 'public.big') r}),
	"$big rows, 0 without doc",
	'unchanged TOAST: every row of table_as_of has its TOASTed column');
is( $sub->safe_psql(
		'postgres',
		"SELECT md5(string_agg(r::text, E'\\n' ORDER BY (r->>'id')::int)) FROM pgrpl.table_as_of('b', 'public.big') r"),
	$primary->safe_psql(
		'postgres',
		"SELECT md5(string_agg(to_jsonb(b)::text, E'\\n' ORDER BY id)) FROM public.big b"),
	"unchanged TOAST: table_as_of equals the primary's table");
# The race happened: some rows were written with updates applied.
my $merged = 0;
$merged += $_ for slurp_file($sub->logfile, $log_offset) =~ /, (\d+) rows updated to the watermark/g;
note "$merged rows written with the window's updates applied";
ok($merged > 0, 'unchanged TOAST: rows updated in their chunk\'s window were written with the updates');

for my $name (qw(s k p b))
{
	is(pgrpl_stat($sub, $name, 'last_error'), '', "$name: no error recorded");
}

done_testing();
