# t/027_flush_feedback.pl — the primary is told "flushed" only for what is
# durable here, from a session's very first commit on.
#
# The worker commits asynchronously; the WAL writer of this subscriber
# writes at most every 10 s, so a captured transaction stays in WAL buffers
# for seconds.  Each round waits until the primary's slot has confirmed the
# round's transaction as flushed, then stops the subscriber at once
# (immediate: WAL buffers are lost, what was written survives) and checks
# that the transaction is in the log after the restart.  A slot that moved
# past a commit still in WAL buffers would never send the transaction again.
#
# The rounds cover the two ways a session's first commit comes before any
# flush: a new subscription (its origin has no progress yet), and a backlog
# that arrives with the first messages of a new session.  Until 2.2 the
# worker reported its last commit as flushed in both (t/006_faults_kill9
# lost 78 transactions once that way).
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PgrplTest;

my $primary = pgrpl_init_primary('primary');
my $sub = pgrpl_init_subscriber('subscriber',
	conf => "wal_writer_delay = '10s'\nwal_writer_flush_after = '16MB'\n"
	  . "autovacuum = off\nlog_min_messages = info\n");
my $connstr = pgrpl_sub_connstr($primary);

$primary->safe_psql(
	'postgres', q{
	CREATE TABLE public.f (id int PRIMARY KEY, round text NOT NULL);
	CREATE PUBLICATION pub FOR TABLE public.f;
});

# The primary's slot has confirmed $lsn as flushed (bounded wait).
sub wait_confirmed
{
	my ($lsn, $what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	ok( $primary->poll_query_until(
			'postgres', qq{
		SELECT confirmed_flush_lsn >= '$lsn'
		  FROM pg_replication_slots WHERE slot_type = 'logical'}),
		"$what: the slot confirms the transaction");
}

# After an immediate stop and a restart, the log holds exactly the rows
# the primary committed.
sub crash_and_check
{
	my ($what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	$sub->stop('immediate');
	$sub->start;
	pgrpl_wait_state($sub, 'f', 'streaming', "$what: streaming after the crash");
	my $lsn = pgrpl_primary_lsn($primary);
	pgrpl_wait_lsn($sub, 'f', $lsn, "$what: caught up after the crash");
	my $want = $primary->safe_psql('postgres',
		"SELECT string_agg(id || ':' || round, ',' ORDER BY id) FROM public.f");
	my $got = $sub->safe_psql(
		'postgres', q{
		SELECT string_agg((new->>'id') || ':' || (new->>'round'), ',' ORDER BY commit_lsn, seq)
		  FROM pgrpl.changes('f')});
	is($got, $want, "$what: no confirmed transaction lost, none twice");
}

# ----------------------------------------------- a new subscription --

$sub->safe_psql('postgres',
	"SELECT pgrpl.create_subscription('f', '$connstr', ARRAY['pub'], copy_data => false)");
pgrpl_wait_state($sub, 'f', 'streaming');
$primary->safe_psql('postgres', "INSERT INTO public.f VALUES (1, 'new subscription')");
wait_confirmed(pgrpl_primary_lsn($primary), 'new subscription');
crash_and_check('new subscription');

# ------------------------------------ a backlog at a session's start --

for my $round (1 .. 6)
{
	my $what = "backlog $round";
	$sub->stop('fast');
	$primary->safe_psql('postgres',
		"INSERT INTO public.f SELECT 1 + $round * 10 + g, '$what' FROM generate_series(0, $round) g");
	my $lsn = pgrpl_primary_lsn($primary);
	$sub->start;
	wait_confirmed($lsn, $what);
	crash_and_check($what);
}

done_testing();
