# t/021_conversion.pl — value conversion under stress, primary vs change log.
#
#  - every built-in type family, domains, enums, composites, ranges and
#    arrays (multi-dimensional too): each captured value equals to_jsonb()
#    of the column on the primary (TimeZone UTC), column by column;
#  - user types that do not exist on the subscriber come through as JSON
#    strings of the primary's text output (to_jsonb(col::text));
#  - a 1,600-column table: the whole row equals to_jsonb(row);
#  - one row with a large text value (PGRPL_BIG_MB, default 100 MB) and a
#    20 MB bytea: captured intact (md5 compared), and the worker's peak
#    resident memory (VmHWM from /proc) stays within a bound; the numbers
#    are printed as diagnostics.  Past jsonb's 256 MB limit (e.g.
#    PGRPL_BIG_MB=300) the row cannot be captured: a clear error instead.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PgrplTest;

my $big_mb = $ENV{PGRPL_BIG_MB} // 100;

my $primary = pgrpl_init_primary('primary');
my $sub = pgrpl_init_subscriber('subscriber');
my $connstr = pgrpl_sub_connstr($primary);

# Types both sides know (same qualified names), and types only the primary has.
my $shared_types = q{
	CREATE TYPE public.cv_mood AS ENUM ('sad', 'ok', 'happy');
	CREATE TYPE public.cv_pair AS (a int, b text, c timestamptz);
	CREATE DOMAIN public.cv_posint AS int CHECK (VALUE > 0);
	CREATE DOMAIN public.cv_ts AS timestamptz;
	CREATE TYPE public.cv_floatrange AS RANGE (subtype = float8);
};
$primary->safe_psql('postgres', $shared_types);
$sub->safe_psql('postgres', $shared_types);
$primary->safe_psql(
	'postgres', q{
	CREATE SCHEMA only_here;
	CREATE TYPE only_here.secret_enum AS ENUM ('x', 'y');
	CREATE TYPE only_here.secret_pair AS (a int, b text);
	CREATE TYPE only_here.secret_range AS RANGE (subtype = int8);
	CREATE DOMAIN only_here.secret_dom AS text;
});

# One column per type, several rows of edge values.
my @cols = (
	[ 'i2', 'int2', "'-32768'", "'32767'", 'NULL' ],
	[ 'i4', 'int4', "'-2147483648'", "'0'", "'2147483647'" ],
	[ 'i8', 'int8', "'-9223372036854775808'", "'9223372036854775807'", "'1'" ],
	[ 'num', 'numeric', "'NaN'", "'-0.000000000000000000001'", "'123456789012345678901234567890.12345'" ],
	[ 'num52', 'numeric(5,2)', "'1.5'", "'-999.99'", "'0'" ],
	[ 'f4', 'float4', "'NaN'", "'-Infinity'", "'1.17549435e-38'" ],
	[ 'f8', 'float8', "'Infinity'", "'-0'", "'0.1'" ],
	[ 'mon', 'money', "'-92233720368547758.08'", "'0'", "'1234.5'" ],
	[ 'bt', 'bit(4)', "B'1010'", "B'0000'", 'NULL' ],
	[ 'vb', 'varbit', "B''", "B'1'", "B'101010101010101010'" ],
	[ 'bo', 'bool', "'t'", "'f'", 'NULL' ],
	[ 'tx', 'text', q{'it''s "q" \ é ✓ ' || chr(9) || chr(10)}, "''", q{'\u0000 literal'} ],
	[ 'vc', 'varchar(5)', "'abcde'", "''", 'NULL' ],
	[ 'ch', 'char(3)', "'a'", "''", "'abc'" ],
	[ 'nm', 'name', "'a name'", "''", 'NULL' ],
	[ 'qc', '"char"', "'x'", "''", 'NULL' ],
	[ 'by', 'bytea', q{'\x00ff'}, q{''}, q{'\x5c27'} ],
	[ 'd', 'date', "'infinity'", "'-infinity'", "'4713-01-01 BC'" ],
	[ 'd2', 'date', "'2024-02-29'", "'5874897-12-31'", "'0001-01-01'" ],
	[ 'tm', 'time', "'24:00'", "'00:00:00.000001'", "'12:34'" ],
	[ 'ttz', 'timetz', "'12:34:56.789+05:30'", "'00:00-14:59'", "'24:00+15:59'" ],
	[ 'ts', 'timestamp', "'infinity'", "'4714-11-24 00:00 BC'", "'294276-12-31 23:59:59.999999'" ],
	[ 'tstz', 'timestamptz', "'-infinity'", "'2024-03-10 02:30:00 America/New_York'", "'1999-12-31 23:59:59.999999+14'" ],
	[ 'iv', 'interval', "'1 year 2 mons -3 days 04:05:06.7'", "'-178000000 years'", "'0'" ],
	[ 'u', 'uuid', "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "'00000000-0000-0000-0000-000000000000'", 'NULL' ],
	[ 'ip', 'inet', "'192.168.0.1/24'", "'::ffff:1.2.3.4'", "'2001:db8::1/128'" ],
	[ 'ci', 'cidr', "'10.0.0.0/8'", "'2001:db8::/32'", 'NULL' ],
	[ 'mac', 'macaddr', "'08:00:2b:01:02:03'", "'ff:ff:ff:ff:ff:ff'", 'NULL' ],
	[ 'mac8', 'macaddr8', "'08:00:2b:01:02:03:04:05'", 'NULL', 'NULL' ],
	[ 'pt', 'point', "'(1.5,-2)'", "'(NaN,Infinity)'", 'NULL' ],
	[ 'ln', 'line', "'{1,-1,0}'", 'NULL', 'NULL' ],
	[ 'ls', 'lseg', "'[(0,0),(1,1)]'", 'NULL', 'NULL' ],
	[ 'bx', 'box', "'(1,1),(0,0)'", 'NULL', 'NULL' ],
	[ 'pa', 'path', "'[(0,0),(1,1),(2,0)]'", "'((0,0),(1,1))'", 'NULL' ],
	[ 'pg', 'polygon', "'((0,0),(1,1),(1,0))'", 'NULL', 'NULL' ],
	[ 'cr', 'circle', "'<(0,0),2>'", 'NULL', 'NULL' ],
	[ 'tsv', 'tsvector', "'a fat cat:2A sat'", "''", 'NULL' ],
	[ 'tsq', 'tsquery', "'fat & (rat | !cat) <-> sat'", 'NULL', 'NULL' ],
	[ 'js', 'json', q{'{"a": [1, 2.5e3, null, "x\u00e9"], "a": 2}'}, q{'"str"'}, q{'null'} ],
	[ 'jsb', 'jsonb', q{'{"b": {"c": true}, "n": 1.000}'}, q{'[]'}, q{'12345678901234567890'} ],
	[ 'x', 'xml', q{'<a href="x">t&amp;</a>'}, q{'text only'}, 'NULL' ],
	[ 'r4', 'int4range', "'[1,10)'", "'empty'", "'(,5]'" ],
	[ 'rn', 'numrange', "'[1.5,2.5]'", 'NULL', 'NULL' ],
	[ 'rd', 'daterange', "'[2024-01-01,infinity)'", 'NULL', 'NULL' ],
	[ 'rtz', 'tstzrange', "'[2024-01-01 00:00+00,2024-01-02 00:00+02)'", 'NULL', 'NULL' ],
	[ 'mr', 'int4multirange', "'{[1,3),[5,7)}'", "'{}'", 'NULL' ],
	[ 'mrd', 'datemultirange', "'{[2024-01-01,2024-02-01)}'", 'NULL', 'NULL' ],
	[ 'a1', 'int[]', "'{1,NULL,-3}'", "'{}'", "'[0:1]={7,8}'" ],
	[ 'a2', 'text[][]', q{'{{"a","b,c"},{"\"q\"",NULL}}'}, q{'{}'}, 'NULL' ],
	[ 'a3', 'int[][][]', "'{{{1,2},{3,4}},{{5,6},{7,8}}}'", 'NULL', 'NULL' ],
	[ 'ajs', 'jsonb[]', q{ARRAY['{"a":1}'::jsonb, 'null']}, 'NULL', 'NULL' ],
	[ 'ats', 'timestamptz[]', q{'{"2024-01-01 00:00+05","infinity"}'}, 'NULL', 'NULL' ],
	[ 'lsn', 'pg_lsn', "'16/B374D848'", 'NULL', 'NULL' ],
	[ 'oi', 'oid', "'4294967295'", 'NULL', 'NULL' ],
	[ 'rt', 'regtype', "'integer'", 'NULL', 'NULL' ],
	[ 'mood', 'public.cv_mood', "'happy'", 'NULL', 'NULL' ],
	[ 'moods', 'public.cv_mood[]', "'{sad,ok}'", 'NULL', 'NULL' ],
	[ 'pair', 'public.cv_pair', q{'(7,"seven, ""7""","2024-01-01 00:00+02")'}, "'(,,)'", 'NULL' ],
	[ 'pairs', 'public.cv_pair[]', q{ARRAY[ROW(1,'x',NULL)::public.cv_pair]}, 'NULL', 'NULL' ],
	[ 'pos', 'public.cv_posint', "'42'", 'NULL', 'NULL' ],
	[ 'dts', 'public.cv_ts', "'2024-06-01 12:00+02'", 'NULL', 'NULL' ],
	[ 'fr', 'public.cv_floatrange', "'[1.5,2.5]'", "'empty'", 'NULL' ],
	[ 'se', 'only_here.secret_enum', "'y'", 'NULL', 'NULL' ],
	[ 'ses', 'only_here.secret_enum[]', "'{x,y}'", 'NULL', 'NULL' ],
	[ 'sp', 'only_here.secret_pair', q{'(1,"b c")'}, 'NULL', 'NULL' ],
	[ 'sr', 'only_here.secret_range', "'[1,5)'", 'NULL', 'NULL' ],
	[ 'sd', 'only_here.secret_dom', "'dom text'", 'NULL', 'NULL' ]);
my %unknown = map { $_ => 1 } qw(se ses sp sr);

my $ddl = "CREATE TABLE public.cv (id int PRIMARY KEY, "
  . join(', ', map { "$_->[0] $_->[1]" } @cols) . ')';
my @rows;
for my $r (1 .. 3)
{
	push @rows, "($r, " . join(', ', map { "$_->[$r + 1]::$_->[1]" } @cols) . ')';
}

# 1,600 columns (the maximum), mostly int (a heap row must fit a page).
my $wide_ddl = 'CREATE TABLE public.wide (id int PRIMARY KEY'
  . join('', map { $_ % 100 == 0 ? ", c$_ text" : $_ % 100 == 50 ? ", c$_ jsonb" : ", c$_ int" } 1 .. 1599)
  . ')';
my $wide_row = 'INSERT INTO public.wide VALUES (1'
  . join('',
	map { $_ % 100 == 0 ? ", 'v$_'" : $_ % 100 == 50 ? ", '{\"k\": $_}'" : ", $_" } 1 .. 1599)
  . ')';

$primary->safe_psql('postgres', "$ddl; $wide_ddl;
	CREATE TABLE public.big (id int PRIMARY KEY, t text, b bytea);
	CREATE PUBLICATION pub FOR TABLE public.cv, public.wide, public.big;");
$sub->safe_psql('postgres',
	"SELECT pgrpl.create_subscription('s', '$connstr', ARRAY['pub'], copy_data => false)");
pgrpl_wait_state($sub, 's', 'streaming');

$primary->safe_psql('postgres', 'INSERT INTO public.cv VALUES ' . join(', ', @rows));
$primary->safe_psql('postgres', $wide_row);
pgrpl_wait_lsn($sub, 's', pgrpl_primary_lsn($primary));
is(pgrpl_stat($sub, 's', 'last_error'), '', 'no error converting the values');

# ------------------------------------------------ column by column --

# key|row id|jsonb text, from either side.
sub kv
{
	my ($node, $sql) = @_;
	my %h;
	for (split /\n/, $node->safe_psql('postgres', "SET TimeZone = 'UTC'; $sql"))
	{
		my ($id, $k, $v) = split /\|/, $_, 3;
		$h{"$id.$k"} = $v;
	}
	return \%h;
}
my $expect_known = kv($primary,
	q{SELECT t.id, e.key, e.value::text FROM public.cv t, jsonb_each(to_jsonb(t)) e});
my $expect_text = kv($primary,
	q{SELECT t.id, e.key, to_jsonb(e.value #>> '{}')::text
	    FROM public.cv t, jsonb_each(to_jsonb(t)) e});
# (For the unknown types: to_jsonb(col::text), through a row of texts.)
my $unknown_text = kv($primary,
	q{SELECT id, key, CASE WHEN value IS NULL THEN 'null' ELSE to_jsonb(value)::text END
	    FROM (SELECT id, 'se' AS key, se::text AS value FROM public.cv
	          UNION ALL SELECT id, 'ses', ses::text FROM public.cv
	          UNION ALL SELECT id, 'sp', sp::text FROM public.cv
	          UNION ALL SELECT id, 'sr', sr::text FROM public.cv) x});
my $got = kv($sub,
	q{SELECT (c.new->>'id')::int, e.key, e.value::text
	    FROM pgrpl.changes('s', relation => 'public.cv') c, jsonb_each(c.new) e});

for my $r (1 .. 3)
{
	for my $c ('id', map { $_->[0] } @cols)
	{
		my $k = "$r.$c";
		my $want = $unknown{$c} ? $unknown_text->{$k} : $expect_known->{$k};
		is($got->{$k}, $want,
			"row $r, $c"
			  . ($unknown{$c} ? ' (type unknown here: primary text)' : ' = to_jsonb on the primary'));
	}
}
# The domain over text of an unknown schema is text either way.
is($got->{'1.sd'}, '"dom text"', 'domain of an unknown type: its text');

my $wide_primary = $primary->safe_psql('postgres',
	'SELECT md5(to_jsonb(w)::text), (SELECT count(*) FROM jsonb_object_keys(to_jsonb(w))) FROM public.wide w');
is( $sub->safe_psql(
		'postgres',
		"SELECT md5(new::text), (SELECT count(*) FROM jsonb_object_keys(new))
		   FROM pgrpl.changes('s', relation => 'public.wide')"),
	$wide_primary,
	'1,600-column row equals to_jsonb(row) on the primary');

# ------------------------------------------------------- a huge value --

sub worker_mem
{
	my $pid = pgrpl_stat($sub, 's', 'pid');
	open(my $fh, '<', "/proc/$pid/status") or return (0, 0, $pid);
	my ($hwm, $rss) = (0, 0);
	while (<$fh>)
	{
		$hwm = $1 if /^VmHWM:\s+(\d+)/;
		$rss = $1 if /^VmRSS:\s+(\d+)/;
	}
	close $fh;
	return ($hwm, $rss, $pid);
}
my ($hwm0, $rss0, $pid0) = worker_mem();

$primary->safe_psql(
	'postgres', qq{
	INSERT INTO public.big
	SELECT 1, string_agg(md5(i::text), ''),
	       (SELECT string_agg(decode(md5(j::text), 'hex'), ''::bytea)
	          FROM generate_series(1, 20 * 1024 * 1024 / 16) j)
	  FROM generate_series(1, $big_mb * 1024 * 1024 / 32) i});
my $big_lsn = pgrpl_primary_lsn($primary);
# jsonb cannot hold more than 256 MB (JENTRY_OFFLENMASK) in one object:
# such a row (to_jsonb() of it fails on the primary too) stops the
# subscription at that transaction with the reason in last_error, and the
# worker lives on, retrying.
my $too_big = ($big_mb + 40) * 1024 * 1024 > 268435455;
if ($too_big)
{
	ok( $sub->poll_query_until(
			'postgres',
			"SELECT last_error LIKE '%exceeds the maximum%'
			   FROM pgrpl.stat_subscription WHERE name = 's'"),
		"a row over jsonb's 256 MB limit stops the subscription with a clear error");
}
else
{
	pgrpl_wait_lsn($sub, 's', $big_lsn, "a row with a $big_mb MB value is captured");
}
my ($hwm1, $rss1, $pid1) = worker_mem();
is($pid1, $pid0, 'the same worker process did it (no crash, no restart)');

if (!$too_big)
{
	my $want_big = $primary->safe_psql('postgres',
		'SELECT length(t), md5(t), length(b), md5(b) FROM public.big');
	is( $sub->safe_psql(
			'postgres', q{
		SELECT length(new->>'t'), md5(new->>'t'), length(decode(substr(new->>'b', 3), 'hex')),
		       md5(decode(substr(new->>'b', 3), 'hex'))
		  FROM pgrpl.changes('s', relation => 'public.big')}),
		$want_big,
		'the large text and bytea arrive intact');
}

my $value_kb = $big_mb * 1024 + 40 * 1024;    # text + bytea (hex text: 40 MB)
diag(sprintf(
		'worker memory: VmHWM %d kB before, %d kB after a %d kB row (%.1fx the row); VmRSS now %d kB',
		$hwm0, $hwm1, $value_kb, ($hwm1 - $hwm0) / $value_kb, $rss1));
# The row passes through the libpq buffer, the CopyData copy, the decoded
# value, the jsonb and the heap tuple being toasted: a handful of copies is
# expected, growth with no bound is not.
cmp_ok($hwm1 - $hwm0, '<', 10 * $value_kb, 'worker peak memory stays under 10x the row');
cmp_ok($rss1, '<', $hwm0 + 3 * $value_kb,
	'and its resident memory comes back down afterwards');

done_testing();
