# t/022_typecache.pl — a value the subscriber's type cannot take.
#
# The subscriber recreates a user type incompatibly while the worker runs:
# the next change of that column cannot be converted.  The subscription
# stops there with the input function's error, and the server log's
# context names the column, its type and its relation.  Once the type is
# fixed, the retry captures the change.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PgrplTest;

my $primary = pgrpl_init_primary('primary');
my $sub = pgrpl_init_subscriber('subscriber');
my $connstr = pgrpl_sub_connstr($primary);

$primary->safe_psql(
	'postgres', q{
	CREATE TYPE public.tc_pair AS (a int, b text);
	CREATE TABLE public.t (id int PRIMARY KEY, p public.tc_pair);
	CREATE PUBLICATION pub FOR TABLE public.t;
});
$sub->safe_psql('postgres', 'CREATE TYPE public.tc_pair AS (a int, b text)');
$sub->safe_psql('postgres',
	"SELECT pgrpl.create_subscription('s', '$connstr', ARRAY['pub'], copy_data => false)");
pgrpl_wait_state($sub, 's', 'streaming');

$primary->safe_psql('postgres', "INSERT INTO public.t VALUES (1, ROW(1, 'one'))");
pgrpl_wait_lsn($sub, 's', pgrpl_primary_lsn($primary));
is($sub->safe_psql('postgres', q{SELECT new->'p' FROM pgrpl.changes('s')}),
	'{"a": 1, "b": "one"}', 'first row converted with the type as it was');

# "a" becomes a date here: the primary's "2" is no date.
my $offset = -s $sub->logfile;
$sub->safe_psql('postgres',
	'DROP TYPE public.tc_pair; CREATE TYPE public.tc_pair AS (a date, b text)');
$primary->safe_psql('postgres', "INSERT INTO public.t VALUES (2, ROW(2, 'two'))");
my $lsn = pgrpl_primary_lsn($primary);

pgrpl_wait_state($sub, 's', 'error', 'the unconvertible value stops the subscription',
	q{last_error LIKE 'invalid input syntax for type date%'});
ok( $sub->wait_for_log(
		qr/CONTEXT:  converting column "p" \(type public\.tc_pair\) of remote relation "public\.t" to jsonb/,
		$offset),
	'the error context names the column, its type and its relation');
ok( $sub->log_contains(
		qr/processing remote INSERT for relation "public\.t" in transaction [0-9]+ at [0-9A-F]+\/[0-9A-F]+ of subscription "s"/,
		$offset),
	'under the worker\'s context of the message, naming the remote transaction');

# Fixed here: the next attempt captures the row, and nothing is lost.
$sub->safe_psql('postgres',
	'DROP TYPE public.tc_pair; CREATE TYPE public.tc_pair AS (a int, b text)');
pgrpl_wait_lsn($sub, 's', $lsn);
is( $sub->safe_psql(
		'postgres', q{SELECT string_agg(new->>'p', ' ' ORDER BY commit_lsn, seq)
		                FROM pgrpl.changes('s')}),
	'{"a": 1, "b": "one"} {"a": 2, "b": "two"}',
	'after the fix the change is captured once');

done_testing();
