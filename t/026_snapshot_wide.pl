# t/026_snapshot_wide.pl — snapshots of wide rows and of tables without a key.
#
#  1. A chunk is bounded by the bytes of its values as well as by its
#     rows: in a table whose first rows are small and whose later rows
#     hold 100MB values, the wide rows are copied a row per chunk, not ten
#     thousand at once.  Then a wide value changes through the stream.
#     table_as_of equals the primary's table each time, and the worker's
#     memory stays within a few times one value.
#  2. A table without a key (REPLICA IDENTITY FULL) is copied whole under
#     one snapshot while a writer changes random rows; the subscriber is
#     killed (-9) in the middle of the copy, which starts over: nothing is
#     copied twice and table_as_of equals the primary's table.
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
my $mb = 1024 * 1024;

# 100MB of hex digits per wide value (3,276,800 md5s): little to compress.
# Rows 1-3 are small, 4-6 wide; the table is never analyzed, so nothing
# tells the copy beforehand how wide its rows are.
$primary->safe_psql(
	'postgres', q{
	CREATE TABLE public.wide (id int PRIMARY KEY, v text);
	INSERT INTO public.wide VALUES (1, 'one'), (2, 'two'), (3, 'three');
	INSERT INTO public.wide
	  SELECT i, (SELECT string_agg(md5((g * 7 + i)::text), '') FROM generate_series(1, 3276800) g)
	    FROM generate_series(4, 6) i;
	CREATE PUBLICATION pub FOR TABLE public.wide;
});
is( $primary->safe_psql('postgres',
		q{SELECT string_agg(octet_length(v)::text, ',' ORDER BY id) FROM public.wide}),
	'3,3,5,104857600,104857600,104857600', 'three small rows, then three of 100MB');

# The log's table against the primary's, compared by digest (not 300MB of
# text through psql).
sub check_equal
{
	my ($what) = @_;
	pgrpl_wait_lsn($sub, 's', pgrpl_primary_lsn($primary), "$what: caught up");
	my $prim = $primary->safe_psql('postgres',
		q{SELECT string_agg(id || ':' || md5(to_jsonb(w)::text), ',' ORDER BY id) FROM public.wide w});
	my $log = $sub->safe_psql('postgres',
		q{SELECT string_agg((r->>'id') || ':' || md5(r::text), ',' ORDER BY (r->>'id')::int)
		    FROM pgrpl.table_as_of('s', 'public.wide') r});
	is($log, $prim, "$what: table_as_of equals the primary's table");
}

$sub->safe_psql('postgres',
	"SELECT pgrpl.create_subscription('s', '$connstr', ARRAY['pub'])");
ok( $sub->poll_query_until(
		'postgres',
		q{SELECT state = 'done' FROM pgrpl.stat_snapshot WHERE subscription = 's'}),
	'the copy finished')
  or diag($sub->safe_psql('postgres', 'SELECT * FROM pgrpl.stat_snapshot'));
# Rows 1-4 (the values before row 4 are tiny), then 5, then 6.
is( $sub->safe_psql(
		'postgres', q{SELECT rows_copied || ' rows in ' || chunks || ' chunks'
		                FROM pgrpl.stat_snapshot WHERE subscription = 's'}),
	'6 rows in 3 chunks', 'a wide row ends its chunk');
is( $sub->safe_psql(
		'postgres', q{
	SELECT string_agg(n::text, ',' ORDER BY commit_lsn) FROM (
	  SELECT commit_lsn, count(*) AS n FROM pgrpl.changes('s') WHERE op = 'SNAPSHOT'
	   GROUP BY commit_lsn) c}),
	'4,1,1', 'each chunk is the changes of its own watermark transaction');
check_equal('copied');

# Through the stream: a wide value replaced by another, a small row made wide.
$primary->safe_psql(
	'postgres', q{
	UPDATE public.wide SET v = (SELECT string_agg(md5((g * 11)::text), '') FROM generate_series(1, 3276800) g)
	 WHERE id IN (2, 5);
	DELETE FROM public.wide WHERE id = 6;
});
check_equal('streamed');

# The worker held one wide value a few times over at most, never a chunk of
# ten thousand (its peak includes what it read from the stream).
my $pid = $sub->safe_psql('postgres', q{SELECT pid FROM pgrpl.stat_subscription WHERE name = 's'});
my $status = slurp_file("/proc/$pid/status");
my ($hwm_kb) = $status =~ /^VmHWM:\s+(\d+) kB/m;
note("worker peak RSS: $hwm_kb kB");
cmp_ok($hwm_kb * 1024, '<', 1536 * $mb, 'the worker peak RSS stays under 1.5GB');

# ------------------------------------------------- 2. no key, under writes --

my $rows = 200_000;
$primary->safe_psql(
	'postgres', qq{
	CREATE TABLE public.k (id int, v text, n int);
	INSERT INTO public.k SELECT g, md5(g::text), 0 FROM generate_series(1, $rows) g;
	ALTER TABLE public.k REPLICA IDENTITY FULL;
	CREATE TABLE public.stop (x int);
	CREATE PUBLICATION kpub FOR TABLE public.k;
	-- Changes random rows until public.stop has a row (or 120 s passed).
	CREATE PROCEDURE public.writer()
	LANGUAGE plpgsql AS \$\$
	DECLARE
	    deadline timestamptz := clock_timestamp() + interval '120 seconds';
	    pick int;
	    i int := 0;
	BEGIN
	    WHILE NOT EXISTS (SELECT FROM public.stop) AND clock_timestamp() < deadline LOOP
	        i := i + 1;
	        pick := 1 + floor(random() * $rows)::int;
	        CASE i % 4
	            WHEN 0 THEN DELETE FROM public.k WHERE id = pick;
	            WHEN 1 THEN INSERT INTO public.k VALUES ($rows + i, 'new', 0);
	            ELSE UPDATE public.k SET n = n + 1, v = md5(random()::text) WHERE id = pick;
	        END CASE;
	        COMMIT;
	        PERFORM pg_sleep(0.005);
	    END LOOP;
	END
	\$\$;
});
my ($wout, $werr) = ('', '');
my $writer = IPC::Run::start(
	[ 'psql', '-X', '-q', '-d', $primary->connstr('postgres'), '-c', 'CALL public.writer()' ],
	'>', \$wout, '2>', \$werr);
$sub->safe_psql('postgres',
	"SELECT pgrpl.create_subscription('k', '$connstr', ARRAY['kpub'])");
ok( $sub->poll_query_until(
		'postgres',
		q{SELECT state = 'copying' FROM pgrpl.stat_snapshot WHERE subscription = 'k'}),
	'the keyless copy is under way');
pgrpl_kill9_all($sub);
$sub->start;
ok( $sub->poll_query_until(
		'postgres',
		q{SELECT state = 'done' FROM pgrpl.stat_snapshot WHERE subscription = 'k'}),
	'the keyless copy finished after the kill')
  or diag($sub->safe_psql('postgres', 'SELECT * FROM pgrpl.stat_snapshot'));
$primary->safe_psql('postgres', 'INSERT INTO public.stop VALUES (1)');
$writer->finish;
is($writer->result(0), 0, 'the writer ended cleanly') or diag($werr);
ok( $primary->safe_psql('postgres', q{SELECT count(*) FROM public.k WHERE n > 0 OR id > 200000}) > 0,
	'the writer changed rows');

pgrpl_wait_lsn($sub, 'k', pgrpl_primary_lsn($primary), 'keyless: caught up');
is( $sub->safe_psql(
		'postgres', q{
	SELECT (SELECT count(*) FROM pgrpl.changes('k') WHERE op = 'SNAPSHOT') = s.rows_copied AND s.chunks = 1,
	       (SELECT count(*) FROM (SELECT new->>'id' FROM pgrpl.changes('k') WHERE op = 'SNAPSHOT'
	                               GROUP BY 1 HAVING count(*) > 1) d)
	  FROM pgrpl.stat_snapshot s WHERE s.subscription = 'k'}),
	't|0', 'one chunk, no row copied twice');
my $kprim = $primary->safe_psql('postgres',
	q{SELECT md5(string_agg(to_jsonb(k)::text, ',' ORDER BY id, v)) FROM public.k});
is( $sub->safe_psql(
		'postgres',
		q{SELECT md5(string_agg(r::text, ',' ORDER BY (r->>'id')::int, r->>'v'))
		    FROM pgrpl.table_as_of('k', 'public.k') r}),
	$kprim, 'keyless: table_as_of equals the primary\'s table');

done_testing();
