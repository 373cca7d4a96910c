# t/007_rebuild.pl — table_as_of() rebuilds the primary's tables.
#
# A randomized workload (seed printed; PGRPL_TEST_SEED replays it) on the
# primary mixes inserts, updates of plain columns, of a TOASTed column and
# of the key, updates that leave the TOASTed column unchanged, deletes and
# the odd TRUNCATE, on a table with a primary key and on one with REPLICA
# IDENTITY FULL.  Halfway, the primary's rows are saved with the LSN after
# them.  At the end, table_as_of(NULL) must equal the primary's tables and
# table_as_of(that LSN) the saved rows (compared as sets of to_jsonb rows).
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PgrplTest;

my $seed = $ENV{PGRPL_TEST_SEED} // int(rand(1_000_000));
note "seed $seed";

my $primary = pgrpl_init_primary('primary');
my $sub = pgrpl_init_subscriber('subscriber');
my $connstr = pgrpl_sub_connstr($primary);

$primary->safe_psql(
	'postgres', q{
	CREATE TABLE public.r (id int PRIMARY KEY, v int, note text, big text);
	ALTER TABLE public.r ALTER big SET STORAGE EXTERNAL;
	CREATE TABLE public.f (a int, b text);
	ALTER TABLE public.f REPLICA IDENTITY FULL;
	CREATE SEQUENCE public.f_seq;
	CREATE PUBLICATION pub FOR TABLE public.r, public.f;
	CREATE TABLE public.saved (tab text, row jsonb);

	-- An incompressible value well over the TOAST threshold.
	CREATE FUNCTION public.big(n int) RETURNS text LANGUAGE sql AS
	$$ SELECT string_agg(md5(n::text || i::text), '') FROM generate_series(1, 120) i $$;

	CREATE PROCEDURE public.work(n int) LANGUAGE plpgsql AS $$
	DECLARE
	    op float8;
	    k int;
	BEGIN
	    FOR i IN 1 .. n LOOP
	        op := random();
	        k := 1 + floor(random() * 300)::int;
	        IF op < 0.30 THEN
	            INSERT INTO r VALUES (k, i, 'n' || i,
	                                  CASE WHEN random() < 0.5 THEN big(i) END)
	              ON CONFLICT (id) DO UPDATE SET v = excluded.v;
	        ELSIF op < 0.50 THEN
	            UPDATE r SET v = v + 1, note = 'u' || i WHERE id = k;  -- big unchanged
	        ELSIF op < 0.58 THEN
	            UPDATE r SET big = big(i) WHERE id = k;
	        ELSIF op < 0.66 THEN
	            UPDATE r SET id = id + 1000 WHERE id = k
	               AND NOT EXISTS (SELECT 1 FROM r WHERE id = k + 1000);
	        ELSIF op < 0.76 THEN
	            DELETE FROM r WHERE id = k;
	        ELSIF op < 0.86 THEN
	            INSERT INTO f VALUES (nextval('f_seq'), 'f' || i);
	        ELSIF op < 0.93 THEN
	            UPDATE f SET b = b || '+' WHERE a = (SELECT a FROM f ORDER BY a OFFSET floor(random() * 5) LIMIT 1);
	        ELSIF op < 0.999 THEN
	            DELETE FROM f WHERE a = (SELECT min(a) FROM f);
	        ELSE
	            TRUNCATE r;
	        END IF;
	        IF random() < 0.3 THEN
	            COMMIT;
	        END IF;
	    END LOOP;
	    COMMIT;
	END $$;
});

$sub->safe_psql('postgres',
	"SELECT pgrpl.create_subscription('s', '$connstr', ARRAY['pub'], copy_data => false)");

$primary->safe_psql('postgres', "SELECT setseed(" . ($seed % 1000) / 1000.0 . "); CALL public.work(3000)");
$primary->safe_psql(
	'postgres', q{
	INSERT INTO saved SELECT 'r', to_jsonb(r) FROM r;
	INSERT INTO saved SELECT 'f', to_jsonb(f) FROM f;
});
my $mid = pgrpl_primary_lsn($primary);
$primary->safe_psql('postgres', "SELECT setseed(" . (($seed + 1) % 1000) / 1000.0 . "); CALL public.work(3000)");
pgrpl_wait_lsn($sub, 's', pgrpl_primary_lsn($primary));

# A set of jsonb rows, order-independent: count and md5 of the sorted texts.
sub digest
{
	my ($node, $query) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) || ' ' || md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), ''))
		   FROM ($query) q(x)");
}

for my $tab ('r', 'f')
{
	my $now = digest($primary, "SELECT to_jsonb(t) FROM public.$tab t");
	my $mid_rows = digest($primary, "SELECT row FROM public.saved WHERE tab = '$tab'");
	like($now, qr/^[1-9]/, "$tab is not empty at the end");
	is(digest($sub, "SELECT * FROM pgrpl.table_as_of('s', 'public.$tab')"),
		$now, "table_as_of('$tab') equals the primary's table now");
	is(digest($sub, "SELECT * FROM pgrpl.table_as_of('s', 'public.$tab', '$mid'::pg_lsn)"),
		$mid_rows, "table_as_of('$tab', mid LSN) equals the rows saved then");
}

# The workload really exercised what the rebuild must handle.
my $kinds = $sub->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE op = 'UPDATE' AND unchanged IS NOT NULL) > 0,
	       count(*) FILTER (WHERE op = 'UPDATE' AND table_name = 'r' AND old IS NOT NULL) > 0,
	       count(*) FILTER (WHERE op = 'DELETE') > 0
	  FROM pgrpl.changes('s')});
is($kinds, 't|t|t', 'the log holds unchanged-TOAST updates, key changes and deletes');

done_testing();
