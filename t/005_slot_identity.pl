# t/005_slot_identity.pl — the slot on the primary advances while the
# published tables are idle (other activity goes on), so the primary can
# recycle WAL; and a different cluster answering at the primary's address is
# refused with a clear last_error, nothing captured from it, until the real
# primary is back.
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

my $schema = q{
	CREATE TABLE public.p (id int PRIMARY KEY);
	CREATE TABLE public.other (id int);
	CREATE PUBLICATION pub FOR TABLE public.p;
};
$primary->safe_psql('postgres', $schema);

$sub->safe_psql('postgres',
	"SELECT pgrpl.create_subscription('z', '$connstr', ARRAY['pub'], copy_data => false)");
pgrpl_wait_state($sub, 'z', 'streaming');
$primary->safe_psql('postgres', 'INSERT INTO public.p VALUES (1)');
pgrpl_wait_lsn($sub, 'z', pgrpl_primary_lsn($primary), 'first change captured');

# ----------------------------------- slot advances with idle publication --

# Unpublished work only: pgoutput sends nothing for it, yet the worker's
# feedback must move the slot past it.
$primary->safe_psql(
	'postgres', q{
	INSERT INTO public.other SELECT generate_series(1, 1000);
	UPDATE public.other SET id = id + 1;
	DELETE FROM public.other;
});
my $idle_lsn = pgrpl_primary_lsn($primary);
ok( $primary->poll_query_until(
		'postgres',
		"SELECT confirmed_flush_lsn >= '$idle_lsn' FROM pg_replication_slots WHERE slot_name = 'z'"
	),
	'confirmed_flush_lsn of the slot advances past unpublished activity');
is( $sub->safe_psql(
		'postgres', "SELECT pgrpl.wait_for_lsn('z', '$idle_lsn', '10 s')"),
	't',
	'wait_for_lsn is satisfied without any captured change');
is($sub->safe_psql('postgres', 'SELECT count(*) FROM pgrpl.change'),
	'1', 'nothing captured for unpublished activity');

# ---------------------------------- a different cluster at the same port --

my $worker_pid = pgrpl_stat($sub, 'z', 'pid');
my $sysid = $primary->safe_psql('postgres',
	'SELECT system_identifier FROM pg_control_system()');
$primary->stop;

# Same port, same socket directory: the same conninfo reaches it.  It even
# has the same table, publication and slot, so only the system identifier
# tells it apart.
my $impostor = pgrpl_init_primary('impostor', port => $primary->port);
$impostor->safe_psql('postgres', $schema);
$impostor->safe_psql('postgres',
	"SELECT pg_create_logical_replication_slot('z', 'pgoutput')");
$impostor->safe_psql('postgres', 'INSERT INTO public.p VALUES (666)');
isnt($impostor->safe_psql('postgres', 'SELECT system_identifier FROM pg_control_system()'),
	$sysid, 'the impostor is another cluster');

pgrpl_wait_state($sub, 'z', 'error', 'the impostor is refused',
	q{last_error LIKE '%is a different database cluster%'});
like(pgrpl_stat($sub, 'z', 'last_error'),
	qr/^the primary of subscription "z" is a different database cluster$/,
	'last_error names the problem');
ok($sub->log_contains(qr/DETAIL:  The primary's system identifier is \d+, but the subscription was created for $sysid\./),
	'the server log has both system identifiers');
is( $impostor->safe_psql(
		'postgres', "SELECT active FROM pg_replication_slots WHERE slot_name = 'z'"),
	'f',
	'the impostor\'s slot is never used');
is($sub->safe_psql('postgres', 'SELECT count(*) FROM pgrpl.change'),
	'1', 'nothing captured from the impostor');
is(pgrpl_stat($sub, 'z', 'pid'), $worker_pid, 'the worker keeps retrying');

# The real primary comes back: streaming resumes where it left off.
$impostor->stop;
$primary->start;
pgrpl_wait_state($sub, 'z', 'streaming', 'streaming again from the real primary',
	'last_error IS NULL');
$primary->safe_psql('postgres', 'INSERT INTO public.p VALUES (2)');
pgrpl_wait_lsn($sub, 'z', pgrpl_primary_lsn($primary), 'caught up with the real primary');
is( $sub->safe_psql(
		'postgres',
		"SELECT string_agg(new->>'id', ',' ORDER BY commit_lsn, seq) FROM pgrpl.changes('z')"),
	'1,2',
	'only the real primary\'s changes, each once');

# ---------------------------------- drop while the primary is down --

$primary->stop;
my ($ret, $stdout, $stderr) =
  $sub->psql('postgres', "SELECT pgrpl.drop_subscription('z')");
is($ret, 0, 'drop_subscription succeeds while the primary is down');
like(
	$stderr,
	qr/WARNING:  could not connect to the primary to drop replication slot "z"/,
	'... with a warning that the slot is left');
is($sub->safe_psql('postgres', 'SELECT count(*) FROM pgrpl.subscription'),
	'0', 'the subscription is gone');
$primary->start;
is( $primary->safe_psql(
		'postgres',
		"SELECT active FROM pg_replication_slots WHERE slot_name = 'z'"),
	'f',
	'the slot is left on the primary, unused');

$sub->stop;
$primary->stop;
done_testing();
