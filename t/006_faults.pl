# t/006_faults.pl — faults that last: the primary down for longer than the
# backoff cap, a subscriber slower than wal_sender_timeout, a subscriber that
# cannot write for half a minute.  Two primaries, one subscriber:
#
#   primary "down" (subscription "down"): stopped for more than 60 s.  The
#     worker records last_error, retries with a backoff that grows to 60 s
#     and no further (its "could not connect" lines are counted and their
#     spacing checked), reconnects by itself within one backoff of the
#     primary's return, and loses nothing.
#   primary "busy" (subscription "slow"), while "down" is down:
#     - wal_sender_timeout = 5s and a 1M-row, two-table transaction applied
#       by a subscriber made slow (an expression index on pgrpl.change whose
#       function stalls 1 s every 100k rows): the worker keeps answering
#       keepalives, the walsender never times out, the transaction lands
#       once;
#     - the same with 300k rows while the worker is held on a lock in the
#       middle of the transaction: it cannot answer keepalives, the
#       walsender times out (once), the worker reconnects and the
#       transaction lands once;
#     - wal_sender_timeout back to 60 s, LOCK TABLE pgrpl.change IN
#       ACCESS EXCLUSIVE MODE for 30 s while the primary keeps committing:
#       the slot's confirmed_flush_lsn, sampled every second, never passes a
#       transaction not yet committed here, and all of it arrives once.
# Every case ends with the captured log compared with the primary's history.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use Time::Local qw(timegm);
use PgrplTest;

my $down = pgrpl_init_primary('down');
my $busy = pgrpl_init_primary('busy',
	conf => "wal_sender_timeout = '5s'\nlog_min_messages = info\n");
my $sub = pgrpl_init_subscriber('subscriber', conf => "log_min_messages = info\n");

my $ws_timeout_re = qr/terminating walsender process due to replication timeout/;

$down->safe_psql(
	'postgres', q{
	CREATE TABLE public.r (id serial PRIMARY KEY, phase text NOT NULL);
	CREATE PUBLICATION pub FOR TABLE public.r;
	CREATE PROCEDURE public.batch(p text, n int) LANGUAGE plpgsql AS $$
	BEGIN
	    FOR k IN 1..n LOOP
	        INSERT INTO public.r (phase) VALUES (p);
	        COMMIT;
	    END LOOP;
	END $$;
});
$busy->safe_psql(
	'postgres', q{
	CREATE TABLE public.big1 (id int PRIMARY KEY, v text);
	CREATE TABLE public.big2 (id int PRIMARY KEY, w int);
	CREATE TABLE public.w (id int PRIMARY KEY);
	CREATE TABLE public.control (stop bool);
	CREATE PUBLICATION pub FOR TABLE public.big1, public.big2, public.w;
	-- One row per transaction, about 50 a second, until control has a row.
	CREATE PROCEDURE public.trickle() LANGUAGE plpgsql AS $$
	DECLARE
	    i int := 0;
	BEGIN
	    LOOP
	        EXIT WHEN EXISTS (SELECT FROM public.control);
	        i := i + 1;
	        INSERT INTO public.w VALUES (i);
	        COMMIT;
	        PERFORM pg_sleep(0.02);
	    END LOOP;
	END $$;
});

$sub->safe_psql('postgres',
	"SELECT pgrpl.create_subscription('down', '" . pgrpl_sub_connstr($down)
	  . "', ARRAY['pub'], copy_data => false)");
$sub->safe_psql('postgres',
	"SELECT pgrpl.create_subscription('slow', '" . pgrpl_sub_connstr($busy)
	  . "', ARRAY['pub'], copy_data => false)");
pgrpl_wait_state($sub, 'down', 'streaming');
pgrpl_wait_state($sub, 'slow', 'streaming');

# Every row of "down" captured exactly once, in commit order.
sub check_down
{
	my ($what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	pgrpl_wait_lsn($sub, 'down', pgrpl_primary_lsn($down), "$what: caught up");
	is( $sub->safe_psql(
			'postgres', q{
		SELECT string_agg((new->>'id') || ':' || (new->>'phase'), ',' ORDER BY commit_lsn, seq)
		  FROM pgrpl.changes('down')}),
		$down->safe_psql('postgres',
			"SELECT string_agg(id || ':' || phase, ',' ORDER BY id) FROM public.r"),
		"$what: every row captured once, in commit order");
	is( $sub->safe_psql(
			'postgres', q{
		SELECT count(*) = count(DISTINCT commit_lsn) AND bool_and(changes = 1)
		  FROM pgrpl.transactions('down')}),
		't',
		"$what: one transaction row per transaction");
}

$down->safe_psql('postgres', "CALL public.batch('before', 200)");
check_down('down, start');

# =================================== the primary goes down for over 60 s ==

my $down_pid = pgrpl_stat($sub, 'down', 'pid');
my $down_offset = -s $sub->logfile;
# Rows committed just before the stop may or may not have been received.
$down->safe_psql('postgres', "CALL public.batch('just before stop', 300)");
$down->stop('fast');
my $t_down = time;
my $down_log_end = -s $down->logfile;
pgrpl_wait_state($sub, 'down', 'error', 'down: last_error is set while the primary is down',
	q{last_error LIKE 'could not connect to the primary%' AND last_error_time IS NOT NULL});

# While it is down, the other cases run against "busy".  Between their steps
# (and every second of the 30 s lock) this brings the primary back once it
# has been down for more than the backoff cap (60 s) plus the time the
# backoff takes to get there.
my $min_down = 70;
my $t_up;
# Failing to connect: in error, or retrying (starting, connecting) with the
# error of the last attempt still in last_error.
my $down_failing = q{state IN ('error', 'starting', 'connecting')
	AND last_error LIKE 'could not connect to the primary%'};
sub restore_down_if_due
{
	return if defined $t_up || time - $t_down < $min_down;
	is( pgrpl_stat(
			$sub, 'down',
			"$down_failing AND pid = $down_pid"),
		't',
		'down: still in error, same worker, when the primary comes back');
	$down->start;
	$t_up = time;
}

# ======================= a subscriber slower than wal_sender_timeout (5 s) ==

# A partial index on pgrpl.change whose function (called for every 100000th
# row of a transaction only) stalls 1 s, and at row 200000 also waits for
# advisory lock 4242 (free unless a test session holds it).  Each stall is
# shorter than half the timeout, so a worker that reads its messages in
# between can answer the walsender in time.
$sub->safe_psql(
	'postgres', q{
	CREATE FUNCTION public.slow_seq(seq int) RETURNS int
	LANGUAGE plpgsql IMMUTABLE AS $$
	BEGIN
	    PERFORM pg_sleep(1);
	    IF seq = 200000 THEN
	        PERFORM pg_advisory_lock_shared(4242);
	        PERFORM pg_advisory_unlock_shared(4242);
	    END IF;
	    RETURN seq;
	END $$;
	CREATE INDEX change_slow_idx ON pgrpl.change (public.slow_seq(seq))
	 WHERE seq % 100000 = 0;
});

sub busy_walsender
{
	return $busy->safe_psql('postgres',
		"SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'slow'");
}

# One transaction inserting ids $from..$to into big1 and big2; its xid.
sub big_transaction
{
	my ($from, $to) = @_;
	my $out = $busy->safe_psql(
		'postgres', qq{
		BEGIN;
		INSERT INTO public.big1 SELECT g, 'v' || g FROM generate_series($from, $to) g;
		INSERT INTO public.big2 SELECT g, g FROM generate_series($from, $to) g;
		SELECT txid_current();
		COMMIT;});
	return (split /\n/, $out)[-1];
}

# The transaction $xid was captured exactly once, whole: one transaction
# row, and every inserted row of both tables once.
sub check_big
{
	my ($what, $xid, $from, $to) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $n = $to - $from + 1;
	my $sum = ($from + $to) * $n / 2;
	is( $sub->safe_psql(
			'postgres', "SELECT count(*), sum(changes) FROM pgrpl.transactions('slow') WHERE xid = $xid"),
		'1|' . (2 * $n),
		"$what: one transaction row with all its changes");
	is( $sub->safe_psql(
			'postgres', qq{
		SELECT string_agg(format('%s:%s:%s:%s', table_name, count, ids, sum), ' ' ORDER BY table_name)
		  FROM (SELECT r.table_name, count(*), count(DISTINCT new->>'id') AS ids,
		               sum((new->>'id')::bigint) AS sum
		          FROM pgrpl.change c
		          JOIN pgrpl.relation r USING (sub_id, rel_id)
		          JOIN pgrpl.transaction t USING (sub_id, txn_id)
		          JOIN pgrpl.subscription s USING (sub_id)
		         WHERE s.sub_name = 'slow' AND t.xid = $xid AND c.op = 'I'
		         GROUP BY r.table_name) x}),
		"big1:$n:$n:$sum big2:$n:$n:$sum",
		"$what: every row of both tables captured once");
}

# ---------------------------------------------- slow but reading: 1M rows --

my $busy_offset = -s $busy->logfile;
my $ws = busy_walsender();
my $err_time = pgrpl_stat($sub, 'slow', "coalesce(last_error_time::text, 'none')");
my $t0 = time;
my $xid = big_transaction(1, 500000);
my $t_commit = time;
pgrpl_wait_lsn($sub, 'slow', pgrpl_primary_lsn($busy), 'slow: 1M-row transaction applied');
my $apply = time - $t_commit;
note sprintf('slow: primary committed 1M rows in %.1f s, the subscriber applied them %.1f s later',
	$t_commit - $t0, $apply);
cmp_ok($apply, '>', 10, 'slow: applying took longer than twice wal_sender_timeout');
is(scalar(() = slurp_file($busy->logfile, $busy_offset) =~ /$ws_timeout_re/g),
	0, 'slow: the walsender never timed out');
is(busy_walsender(), $ws, 'slow: the same walsender served it throughout');
is(pgrpl_stat($sub, 'slow', "coalesce(last_error_time::text, 'none')"),
	$err_time, 'slow: no error recorded');
check_big('slow', $xid, 1, 500000);
restore_down_if_due();

# ------------------------------------ held on a lock mid-transaction: 300k --

# A worker waiting on a lock reads nothing, so it cannot answer the
# walsender's keepalives: after wal_sender_timeout the walsender gives up.
# Once the lock is released the worker finds the connection gone, rolls
# the partial transaction back, reconnects and receives it again.
$busy_offset = -s $busy->logfile;
$t0 = $sub->safe_psql('postgres', 'SELECT clock_timestamp()');
my $slow_pid = pgrpl_stat($sub, 'slow', 'pid');
my $locker = $sub->background_psql('postgres');
$locker->query_safe('SELECT pg_advisory_lock(4242)');
$xid = big_transaction(500001, 650000);
ok( $sub->poll_query_until(
		'postgres', qq{
	SELECT count(*) = 1 FROM pg_locks
	 WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted AND pid = $slow_pid}),
	'held: the worker waits on the lock in the middle of the transaction');
ok($busy->wait_for_log($ws_timeout_re, $busy_offset),
	'held: the walsender times out');
$locker->query_safe('SELECT pg_advisory_unlock(4242)');
$locker->quit;
pgrpl_wait_lsn($sub, 'slow', pgrpl_primary_lsn($busy), 'held: the transaction is applied after the lock is released');
is(scalar(() = slurp_file($busy->logfile, $busy_offset) =~ /$ws_timeout_re/g),
	1, 'held: the walsender timed out once, not in a loop');
is( pgrpl_stat($sub, 'slow', "last_error_time > '$t0'"),
	't', 'held: the lost connection was recorded as an error');
pgrpl_wait_state($sub, 'slow', 'streaming', 'held: streaming again, same worker',
	"pid = $slow_pid");
check_big('held', $xid, 500001, 650000);
restore_down_if_due();

$sub->safe_psql('postgres', 'DROP INDEX pgrpl.change_slow_idx; DROP FUNCTION public.slow_seq');

# ================================ the subscriber cannot write for 30 s ==

$busy->safe_psql('postgres', "ALTER SYSTEM SET wal_sender_timeout = '60s'");
$busy->reload;
my ($trickle_out, $trickle_err) = ('', '');
my $trickle = IPC::Run::start(
	[
		'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1',
		'-d', $busy->connstr('postgres'),
		'-c', 'CALL public.trickle()'
	],
	'>', \$trickle_out, '2>', \$trickle_err,
	IPC::Run::timeout(4 * $PostgreSQL::Test::Utils::timeout_default));
ok( $sub->poll_query_until(
		'postgres', "SELECT count(*) >= 20 FROM pgrpl.changes('slow', relation => 'public.w')"),
	'locked: the trickle is being captured');

$ws = busy_walsender();
$locker = $sub->background_psql('postgres');
$locker->query_safe('BEGIN');
$locker->query_safe('LOCK TABLE pgrpl.change IN ACCESS EXCLUSIVE MODE');
ok( $sub->poll_query_until(
		'postgres', qq{
	SELECT count(*) = 1 FROM pg_locks
	 WHERE relation = 'pgrpl.change'::regclass AND NOT granted AND pid = $slow_pid}),
	'locked: the worker waits for the lock');
my $w_at_lock = $busy->safe_psql('postgres', 'SELECT count(*) FROM public.w');

# While the worker cannot write, sample the slot's confirmed_flush_lsn and
# then what is committed here.  The walsender would resume at
# confirmed_flush_lsn, skipping every transaction whose commit record starts
# before it, so each of those must already be here: none of the transactions
# captured in the end may have commit_lsn < the sample yet be missing from
# what was visible right after.  (confirmed_flush_lsn may lie past the end
# of the last transaction here -- e.g. at the end of an idle stretch a
# keepalive reported -- but never past a transaction not yet committed.)
# The same goes on for 5 s after the lock, while the worker catches up.
my @samples;
sub sample_flush
{
	my $c = $busy->safe_psql('postgres',
		"SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'slow'");
	my $v = $sub->safe_psql('postgres',
		"SELECT count(*) || '|' || coalesce(max(end_lsn)::text, '0/0') FROM pgrpl.transactions('slow')");
	push @samples, [ $c, split(/\|/, $v) ];
}
my $t_lock = time;
while (time - $t_lock < 30)
{
	sample_flush();
	restore_down_if_due();
	# A deliberate sampling period, not a wait for a condition.
	select(undef, undef, undef, 1);
}
cmp_ok(scalar(@samples), '>=', 20, 'locked: sampled throughout the lock');
my $primary_w = $busy->safe_psql('postgres', 'SELECT count(*) FROM public.w');
$locker->query_safe('COMMIT');
$locker->quit;
my $t_unlock = time;
while (time - $t_unlock < 5)
{
	sample_flush();
	select(undef, undef, undef, 0.25);
}

$busy->safe_psql('postgres', 'INSERT INTO public.control VALUES (true)');
ok($trickle->finish, 'locked: the trickle ends without error')
  or diag("stdout: $trickle_out\nstderr: $trickle_err");
pgrpl_wait_lsn($sub, 'slow', pgrpl_primary_lsn($busy), 'locked: caught up after the lock');
note "locked: the primary committed $primary_w trickle rows by the end of the lock; "
  . 'confirmed_flush_lsn went from ' . $samples[0][0] . ' to ' . $samples[-1][0];
cmp_ok($primary_w, '>', $w_at_lock + 100,
	'locked: the primary kept committing during the lock');

my $values = join(', ', map { "('$_->[0]'::pg_lsn, $_->[1])" } @samples);
is( $sub->safe_psql(
		'postgres', qq{
	SELECT count(*) FROM (VALUES $values) s(confirmed, visible)
	 WHERE (SELECT count(*) FROM pgrpl.transactions('slow') t
	         WHERE t.commit_lsn < s.confirmed) > s.visible}),
	'0',
	'locked: confirmed_flush_lsn never passed a transaction not committed here, during the lock and the catch-up after it');
note 'locked: samples of confirmed_flush_lsn past the end of the last transaction here: '
  . $sub->safe_psql('postgres',
	"SELECT count(*) FILTER (WHERE confirmed > last_end) FROM (VALUES "
	  . join(', ', map { "('$_->[0]'::pg_lsn, '$_->[2]'::pg_lsn)" } @samples)
	  . ") s(confirmed, last_end)")
  . ' of ' . scalar(@samples);
is(busy_walsender(), $ws, 'locked: the stream survived the lock (wal_sender_timeout 60 s)');
is( $sub->safe_psql(
		'postgres', q{
	SELECT string_agg(new->>'id', ',' ORDER BY commit_lsn, seq)
	  FROM pgrpl.changes('slow', relation => 'public.w')}),
	$busy->safe_psql('postgres', 'SELECT string_agg(id::text, \',\' ORDER BY id) FROM public.w'),
	'locked: every trickle row captured once, in commit order');
is( $sub->safe_psql(
		'postgres', q{
	SELECT count(*) = count(DISTINCT commit_lsn) AND count(*) = count(DISTINCT xid)
	  FROM pgrpl.transactions('slow')}),
	't',
	'locked: one transaction row per transaction');

# ================================================ the primary comes back ==

# Still down (the cases above were quick): keep it down until it is due.
if (!defined $t_up)
{
	ok( pgrpl_stays(
			$sub, 'down', $min_down - (time - $t_down),
			"$down_failing AND pid = $down_pid"),
		'down: the worker stays in error while the primary is down');
	restore_down_if_due();
}
pgrpl_wait_state($sub, 'down', 'streaming', 'down: streaming again by itself',
	"pid = $down_pid AND last_error IS NULL");
my $reconnect = time - $t_up;
my $outage = $t_up - $t_down;
note sprintf('down: primary down for %.0f s, the worker reconnected %.1f s after its return',
	$outage, $reconnect);
cmp_ok($reconnect, '<=', 60 + 15, 'down: reconnected within one capped backoff');

# Attempts: each failed one is a "could not connect" line of the worker;
# the one that succeeded is the first IDENTIFY_SYSTEM on the primary after
# its return.  With sleeps of 1, 2, 4, ... 60 s they fall at about 1, 3, 7,
# 15, 31, 63, 123, ... s: the gaps double up to 60 s and stay there.
sub log_time
{
	my ($line) = @_;
	return undef
	  unless $line =~ /^(\d+)-(\d+)-(\d+) (\d+):(\d+):(\d+)(\.\d+)? UTC/;
	return timegm($6, $5, $4, $3, $2 - 1, $1) + ($7 // 0);
}
my @at = map { log_time($_) }
  grep { /\[$down_pid\] ERROR:  could not connect to the primary/ }
  split /\n/, slurp_file($sub->logfile, $down_offset);
my $failed = scalar(@at);
my ($success) = grep { /received replication command: IDENTIFY_SYSTEM/ }
  split /\n/, slurp_file($down->logfile, $down_log_end);
push @at, log_time($success) if defined $success;
my @gaps = map { $at[$_] - $at[ $_ - 1 ] } 1 .. $#at;
note "down: $failed failed attempts; gaps between attempts, the last one to "
  . 'the successful one: ' . join(' ', map { sprintf '%.1f', $_ } @gaps);
my ($expected, $sleep, $when) = (0, 1, 1);
while ($when <= $outage + $reconnect)
{
	$expected++;
	$sleep = $sleep * 2 > 60 ? 60 : $sleep * 2;
	$when += $sleep;
}
cmp_ok($failed, '>=', 5, 'down: the worker kept retrying');
cmp_ok($failed, '<=', $expected, "down: at most $expected failed attempts (no busy loop)");
ok(defined $success, 'down: the successful attempt is in the primary\'s log');
my $max_gap = (sort { $b <=> $a } @gaps)[0] // 0;
cmp_ok($max_gap, '>=', 50, 'down: the backoff grew to the cap');
cmp_ok($max_gap, '<=', 62, 'down: the backoff is capped at 60 s');
is(scalar(grep { $gaps[$_] < 0.8 * $gaps[ $_ - 1 ] } 1 .. $#gaps),
	0, 'down: the gaps never shrink');

$down->safe_psql('postgres', "CALL public.batch('after', 100)");
check_down('down, after the outage');

$sub->stop;
$down->stop;
$busy->stop;
done_testing();
