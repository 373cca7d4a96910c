# t/006_faults_slot.pl — trouble with the slot or publication on the primary:
# slot dropped by hand, publication dropped (and re-created), a second
# consumer holding the slot, slot invalidated by max_slot_wal_keep_size.
# Each gives a clear last_error and state 'error', retries back off (the
# worker's ERROR lines are counted over an observation window: a handful,
# not one a second), nothing is captured while it lasts, and streaming
# resumes once the trouble is fixed where that is possible.  After each
# case the change log is compared with the primary's committed history.
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
my $sub = pgrpl_init_subscriber('subscriber', conf => "log_min_messages = info\n");
my $connstr = pgrpl_sub_connstr($primary);

$primary->safe_psql(
	'postgres', q{
	CREATE TABLE public.t (id int PRIMARY KEY);
	CREATE TABLE public.filler (g int);
	CREATE PUBLICATION pub FOR TABLE public.t;
});
$sub->safe_psql('postgres',
	"SELECT pgrpl.create_subscription('k', '$connstr', ARRAY['pub'], copy_data => false)");
pgrpl_wait_state($sub, 'k', 'streaming');

# Observation window after a failure: with backoff 1 s, 2 s, 4 s, ... the
# worker fails at about 0, 1, 3 and 7 s; retrying every second would fail
# ten times or more.
my $window = 10;
my $max_errors = 5;

my $n_captured = 0;
sub insert_row
{
	my ($id) = @_;
	$primary->safe_psql('postgres', "INSERT INTO public.t VALUES ($id)");
}

# The whole change log: exactly the rows @ids, one transaction each, in
# commit order, nothing twice.
sub check_log
{
	my ($what, $subname, @ids) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	pgrpl_wait_lsn($sub, $subname, pgrpl_primary_lsn($primary), "$what: caught up");
	is( $sub->safe_psql(
			'postgres',
			"SELECT string_agg(op || ':' || (coalesce(new, old)->>'id'), ',' ORDER BY commit_lsn, seq)
			   FROM pgrpl.changes('$subname')"),
		join(',', map { "INSERT:$_" } @ids),
		"$what: the change log is exactly the committed history");
	is( $sub->safe_psql(
			'postgres', q{
		SELECT count(*) = count(DISTINCT commit_lsn) AND bool_and(changes = 1)
		  FROM pgrpl.transaction WHERE state = 'c'}),
		't',
		"$what: one transaction row per transaction");
	$n_captured = $sub->safe_psql('postgres', 'SELECT count(*) FROM pgrpl.change');
}

# Watch the subscription for the window: its worker (pid) stays the same
# and, unless $in_stream (the failure comes after streaming started), it
# never gets to stream: it is in error, or retrying (starting, connecting)
# with the last error still in last_error.  It must capture nothing, log at
# most $max_errors errors from $offset on, and be in error with last_error
# matching $like at the end.  Returns the number of errors.
sub check_bounded_errors
{
	my ($what, $offset, $like, $in_stream) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $pid = pgrpl_stat($sub, 'k', 'pid');
	my $cond = "pid = $pid";
	$cond .= " AND state IN ('error', 'starting', 'connecting') AND last_error LIKE '$like'"
	  unless $in_stream;
	ok(pgrpl_stays($sub, 'k', $window, $cond),
		"$what: " . ($in_stream ? 'same worker' : 'never streams') . " for ${window}s");
	pgrpl_wait_state($sub, 'k', 'error', "$what: in error at the end",
		"pid = $pid AND last_error LIKE '$like'");
	my $errors = pgrpl_log_count($sub, $offset, $pid, qr/ERROR: /);
	note "$what: $errors errors logged by worker $pid";
	cmp_ok($errors, '>=', 2, "$what: the worker keeps retrying");
	cmp_ok($errors, '<=', $max_errors, "$what: retries back off (no busy loop)");
	is($sub->safe_psql('postgres', 'SELECT count(*) FROM pgrpl.change'),
		$n_captured, "$what: nothing captured meanwhile");
	return $errors;
}

# The walsender holding the slot.
sub walsender_pid
{
	return $primary->safe_psql('postgres',
		"SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'k'");
}

insert_row($_) for 1 .. 3;
check_log('start', 'k', 1 .. 3);

# --------------------------------------------------- slot dropped by hand --

my $offset = -s $sub->logfile;
# Terminate the walsender (waiting until it is gone) and drop the slot
# before the worker reconnects; retried should the worker win the race.
ok( $primary->poll_query_until(
		'postgres', q{
	SELECT true FROM (
	  SELECT pg_terminate_backend(active_pid, 10000) FROM pg_replication_slots
	   WHERE slot_name = 'k' AND active_pid IS NOT NULL) x,
	  pg_drop_replication_slot('k')}),
	'slot dropped: the slot is dropped on the primary');
insert_row(4);    # no slot keeps it for us: lost
pgrpl_wait_state($sub, 'k', 'error', 'slot dropped: state error',
	q{last_error LIKE 'could not start logical replication from slot "k": ERROR:  replication slot "k" does not exist%'});
check_bounded_errors('slot dropped', $offset, '%replication slot "k" does not exist%');

# Recovery: re-create the slot by hand.  Streaming resumes from the new
# slot's start; what was committed while no slot existed (4) is not there
# to be captured.  A settings change ends the backoff wait at once.
$primary->safe_psql('postgres',
	"SELECT pg_create_logical_replication_slot('k', 'pgoutput')");
insert_row(5);
$sub->safe_psql('postgres',
	"SELECT pgrpl.alter_subscription('k', publications => ARRAY['pub'])");
pgrpl_wait_state($sub, 'k', 'streaming', 'slot re-created: streaming again',
	'last_error IS NULL');
check_log('slot re-created', 'k', 1, 2, 3, 5);

# ---------------------------------------------------- publication dropped --

# PG15's pgoutput fails with 'publication "pub" does not exist' at the
# first change it decodes after the drop.  It looks publications up with
# the historic snapshot of the change being decoded, so re-creating the
# publication does not help with changes committed before that: the stream
# keeps failing at the same place.
# PostgreSQL 18's pgoutput skips a missing publication instead ("WARNING:
# skipped loading publication"): the stream goes on, without what was
# committed while the publication was missing.
my $skips_missing =
  $primary->safe_psql('postgres', 'SHOW server_version_num') >= 180000;
$offset = -s $sub->logfile;
$primary->safe_psql('postgres', 'DROP PUBLICATION pub');
insert_row(6);    # committed while not published
my $after_6 = pgrpl_primary_lsn($primary);
if ($skips_missing)
{
	my $pid = pgrpl_stat($sub, 'k', 'pid');
	ok(pgrpl_stays($sub, 'k', $window, "pid = $pid AND state = 'streaming'"),
		"publication dropped (18+): same worker streams on for ${window}s");
	$primary->safe_psql('postgres', 'CREATE PUBLICATION pub FOR TABLE public.t');
	insert_row(7);
}
else
{
	pgrpl_wait_state($sub, 'k', 'error', 'publication dropped: state error',
		q{last_error LIKE '%publication "pub" does not exist%'});
	check_bounded_errors('publication dropped', $offset,
		'%publication "pub" does not exist%', 1);

	$offset = -s $sub->logfile;
	$primary->safe_psql('postgres', 'CREATE PUBLICATION pub FOR TABLE public.t');
	insert_row(7);
	# Give it the time of a few retries to resume by itself (PostgreSQL 15
	# does not: see above).
	my $pid = pgrpl_stat($sub, 'k', 'pid');
	ok(pgrpl_stays($sub, 'k', $window, "pid = $pid"),
		"publication re-created: same worker for ${window}s");
	my $resumed =
	  $sub->safe_psql('postgres', 'SELECT count(*) FROM pgrpl.change') > $n_captured;
	note 'publication re-created: '
	  . ($resumed ? 'streaming resumed by itself'
		: 'still failing on the change committed while it was missing');
	cmp_ok(pgrpl_log_count($sub, $offset, $pid, qr/ERROR: /),
		'<=', $max_errors, 'publication re-created: retries still back off');

	# Recovery: move the slot past the change committed while the publication
	# was missing (it was not published anyway), between two retries.
	unless ($resumed)
	{
		pgrpl_wait_state($sub, 'k', 'error', 'publication re-created: still in error',
			q{last_error LIKE '%publication "pub" does not exist%'});
		is($sub->safe_psql('postgres', 'SELECT count(*) FROM pgrpl.change'),
			$n_captured, 'publication re-created: nothing captured meanwhile');
		ok( $primary->poll_query_until(
				'postgres',
				"SELECT true FROM pg_replication_slot_advance('k', '$after_6')"),
			'publication re-created: slot advanced past the unpublished change');
		$sub->safe_psql('postgres',
			"SELECT pgrpl.alter_subscription('k', publications => ARRAY['pub'])");
	}
}
pgrpl_wait_state($sub, 'k', 'streaming',
	'publication re-created: streaming again', 'last_error IS NULL');
check_log('publication re-created', 'k', 1, 2, 3, 5, 7);

# ------------------------------------------- a second consumer on the slot --

$sub->safe_psql('postgres', "SELECT pgrpl.disable_subscription('k')");
pgrpl_wait_state($sub, 'k', 'disabled', 'second consumer: disabled', 'pid IS NULL');
ok( $primary->poll_query_until(
		'postgres',
		"SELECT NOT active FROM pg_replication_slots WHERE slot_name = 'k'"),
	'second consumer: the slot is free');
my ($recv_out, $recv_err) = ('', '');
my $recv = IPC::Run::start(
	[
		'pg_recvlogical', '-d', $primary->connstr('postgres'),
		'-S', 'k', '--start', '-o', 'proto_version=1',
		'-o', 'publication_names=pub', '-f', '/dev/null'
	],
	'>', \$recv_out, '2>', \$recv_err,
	IPC::Run::timeout(4 * $PostgreSQL::Test::Utils::timeout_default));
ok( $primary->poll_query_until(
		'postgres',
		"SELECT active_pid IS NOT NULL FROM pg_replication_slots WHERE slot_name = 'k'"),
	'second consumer: pg_recvlogical holds the slot');
my $holder = walsender_pid();
# Nothing is committed while it holds the slot: whatever it received it
# would confirm, and the slot would never send it to pgrpl.
$offset = -s $sub->logfile;
$sub->safe_psql('postgres', "SELECT pgrpl.enable_subscription('k')");
pgrpl_wait_state($sub, 'k', 'error', 'second consumer: state error',
	qq{last_error LIKE '%replication slot "k" is active for PID $holder%'});
check_bounded_errors('second consumer', $offset,
	'%replication slot "k" is active for PID%');

# Recovery by itself once the other consumer is gone (within a backoff).
$recv->signal('INT');
$recv->finish;
pgrpl_wait_state($sub, 'k', 'streaming',
	'second consumer gone: streaming again by itself', 'last_error IS NULL');
insert_row(8);
check_log('second consumer gone', 'k', 1, 2, 3, 5, 7, 8);

# ------------------------------------------------------ slot invalidated --

$primary->safe_psql('postgres',
	"ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'");
$primary->reload;
$sub->safe_psql('postgres', "SELECT pgrpl.disable_subscription('k')");
pgrpl_wait_state($sub, 'k', 'disabled', 'invalidated: disabled', 'pid IS NULL');
ok( $primary->poll_query_until(
		'postgres',
		"SELECT NOT active FROM pg_replication_slots WHERE slot_name = 'k'"),
	'invalidated: the slot is free');
insert_row(9);    # lost with the slot
# More WAL than max_slot_wal_keep_size, in several segments, then a
# checkpoint: the slot's WAL is removed and the slot marked lost.
for my $i (1 .. 3)
{
	$primary->safe_psql('postgres',
		'INSERT INTO public.filler SELECT generate_series(1, 1000); SELECT pg_switch_wal()');
}
$primary->safe_psql('postgres', 'CHECKPOINT');
ok( $primary->poll_query_until(
		'postgres',
		"SELECT wal_status = 'lost' FROM pg_replication_slots WHERE slot_name = 'k'"),
	'invalidated: the slot is lost');
$offset = -s $sub->logfile;
$sub->safe_psql('postgres', "SELECT pgrpl.enable_subscription('k')");
# The primary's words differ by major: 15/16 "cannot read from logical
# replication slot", 17 "can no longer get changes from replication slot",
# 18 "can no longer access replication slot" (detail: "invalidated due to
# "wal_removed"" instead of "because it exceeded the maximum reserved size").
my $invalidated = '%replication slot "k"%invalidated%';
pgrpl_wait_state($sub, 'k', 'error', 'invalidated: state error',
	qq{last_error LIKE '$invalidated'});
like(pgrpl_stat($sub, 'k', 'last_error'),
	qr/slot has been invalidated (because it exceeded the maximum reserved size|due to "wal_removed")/,
	'invalidated: last_error says why');
check_bounded_errors('invalidated', $offset, $invalidated);

# Recovery: the slot cannot be used again.  Dropping the subscription drops
# it; a new subscription captures from its creation on.
$primary->safe_psql('postgres', 'ALTER SYSTEM RESET max_slot_wal_keep_size');
$primary->reload;
my ($ret, $stdout, $stderr) =
  $sub->psql('postgres', "SELECT pgrpl.drop_subscription('k')");
is($ret, 0, 'invalidated: drop_subscription succeeds');
is($stderr, '', 'invalidated: ... without a warning');
is( $primary->safe_psql(
		'postgres', "SELECT count(*) FROM pg_replication_slots"),
	'0', 'invalidated: the lost slot is dropped on the primary');
$sub->safe_psql('postgres',
	"SELECT pgrpl.create_subscription('k2', '$connstr', ARRAY['pub'], copy_data => false)");
pgrpl_wait_state($sub, 'k2', 'streaming', 'new subscription streams');
insert_row(10);
check_log('new subscription', 'k2', 10);

$sub->stop;
$primary->stop;
done_testing();
