# t/027_flush_feedback.pl — the primary is told "flushed" only for what is
# durable here, from a session's very first commit on.
#
# The worker commits asynchronously; the WAL writer of this subscriber
# writes at most every 10 s and the worker's own flush of a quiet stream
# is off (pgrpl.idle_flush_delay = -1), so a captured transaction stays in
# WAL buffers for seconds.  Each round waits until the primary's slot has confirmed the
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
#
# Last, with pgrpl.idle_flush_delay at its default: once the stream goes
# quiet the worker flushes its last commit itself, and the primary hears
# "flushed" within moments, not when the WAL writer gets to it.
use strict;
use warnings;
use Time::HiRes qw(time usleep);

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PgrplTest;

my $primary = pgrpl_init_primary('primary');
my $sub = pgrpl_init_subscriber('subscriber',
	conf => "wal_writer_delay = '10s'\nwal_writer_flush_after = '16MB'\n"
	  . "pgrpl.idle_flush_delay = -1\n"
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

# ------------------------------------------- the quiet stream's flush --

# With the WAL writer flushing every 10 s, each of these transactions would
# be confirmed after 5 s on average (and all five within 3 s about once in
# three thousand runs) if only the WAL writer flushed.
$sub->append_conf('postgresql.conf', "pgrpl.idle_flush_delay = 10ms\n");
$sub->reload;
is($sub->safe_psql('postgres', 'SHOW pgrpl.idle_flush_delay'), '10ms', 'idle_flush_delay reloaded');
my $slow = 0;
for my $round (1 .. 5)
{
	$primary->safe_psql('postgres',
		"INSERT INTO public.f VALUES (100 + $round, 'quiet flush $round')");
	my $lsn = pgrpl_primary_lsn($primary);
	my $confirmed = 0;
	my $start = time;
	while (time - $start < 3)
	{
		$confirmed = $primary->safe_psql(
			'postgres', qq{
			SELECT confirmed_flush_lsn >= '$lsn'
			  FROM pg_replication_slots WHERE slot_type = 'logical'}) eq 't';
		last if $confirmed;
		usleep(20_000);
	}
	$slow++ unless $confirmed;
	# Slow or not, it is confirmed in the end (bounded wait).
	wait_confirmed($lsn, "quiet flush $round") unless $confirmed;
}
is($slow, 0, 'a quiet stream\'s transactions are confirmed as flushed within 3 s each');
crash_and_check('quiet flush');

done_testing();
