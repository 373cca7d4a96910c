# t/002_crash.pl — exactly-once capture across subscriber crashes.
#
# A procedure on the primary commits thousands of small and some large
# (spilled) transactions, one per iteration i: several tables, multi-row
# statements, updates, deletes, transactional and non-transactional
# messages, rolled back and unpublished transactions; each committed
# iteration and its xid go to an unpublished audit table.  A second session
# runs long transactions concurrently.  Meanwhile the subscriber is stopped
# fast and immediate, loses its worker to SIGKILL (crash-restart), is
# disabled and enabled, altered (in-process reconnect), has its walsender
# terminated by the primary, and is stopped at a stop_lsn set ahead of it
# and resumed, many times mid-stream.  At the end the captured log must
# equal, unit by unit and change by change, the history derived from the
# audit table: nothing missing, nothing twice, in commit order.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PgrplTest;

# The subscription does not ask for streaming: the large transactions are
# spilled to disk by the walsender and sent at commit (t/006_faults_kill9
# and t/023 crash streamed ones).
my $primary = pgrpl_init_primary('primary',
	conf => "logical_decoding_work_mem = '64kB'\n");
# restart_after_crash: a SIGKILLed worker makes the postmaster reinitialize.
# A lazy WAL writer leaves the worker's asynchronous commits unflushed for
# longer, so that crashes lose some of them and the primary must resend
# them (never reported as flushed).
my $sub = pgrpl_init_subscriber('subscriber',
	conf => "restart_after_crash = on\nlog_min_messages = info\n"
	  . "wal_writer_delay = '5s'\nwal_writer_flush_after = '16MB'\n");
my $connstr = pgrpl_sub_connstr($primary);

$primary->safe_psql(
	'postgres', q{
	CREATE TABLE public.a (id int PRIMARY KEY, v text, n int NOT NULL DEFAULT 0);
	CREATE TABLE public.b (id int PRIMARY KEY, a_id int, payload text);
	CREATE TABLE public.c (k int, v int);
	CREATE INDEX ON public.c (k, v);
	ALTER TABLE public.c REPLICA IDENTITY FULL;
	CREATE TABLE public.local_only (id int);
	CREATE TABLE public.audit (i int PRIMARY KEY, xid bigint NOT NULL, published bool NOT NULL);
	CREATE TABLE public.control (stop bool);
	CREATE TABLE public.done (last_i int);
	CREATE TABLE public.d (j int, part int, PRIMARY KEY (j, part));
	CREATE TABLE public.done_long (last_j int);
	CREATE PUBLICATION pub FOR TABLE public.a, public.b, public.c, public.d;

	-- Long transactions, concurrent with the workload: each spans hundreds
	-- of the workload's commits and often a crash of the subscriber.
	CREATE PROCEDURE public.longtx() LANGUAGE plpgsql AS $$
	DECLARE
	    j int := 0;
	BEGIN
	    LOOP
	        j := j + 1;
	        IF EXISTS (SELECT FROM public.control) THEN
	            INSERT INTO public.done_long VALUES (j - 1);
	            COMMIT;
	            EXIT;
	        END IF;
	        INSERT INTO public.d VALUES (j, 1);
	        PERFORM pg_sleep(0.3 + (j % 5) * 0.2);
	        INSERT INTO public.d VALUES (j, 2);
	        COMMIT;
	    END LOOP;
	END $$;

	-- One transaction per iteration until public.control has a row.
	CREATE PROCEDURE public.workload() LANGUAGE plpgsql AS $$
	DECLARE
	    i int := 0;
	BEGIN
	    LOOP
	        i := i + 1;
	        IF EXISTS (SELECT FROM public.control) THEN
	            INSERT INTO public.done VALUES (i - 1);
	            COMMIT;
	            EXIT;
	        END IF;
	        IF i % 19 = 0 THEN
	            PERFORM pg_logical_emit_message(false, 'nt', i::text);
	        END IF;
	        IF i % 17 = 0 THEN
	            INSERT INTO public.a (id, v) VALUES (i, 'rolled back');
	            ROLLBACK;
	        ELSIF i % 13 = 0 THEN
	            INSERT INTO public.local_only VALUES (i);
	            INSERT INTO public.audit VALUES (i, txid_current(), false);
	            COMMIT;
	        ELSE
	            INSERT INTO public.a (id, v) VALUES (i, 'v' || i);
	            IF i % 3 = 0 THEN
	                UPDATE public.a SET n = n + 1, v = 'u' || i WHERE id = i;
	            END IF;
	            IF i % 7 = 0 THEN
	                INSERT INTO public.b SELECT i * 10 + g, i, 'p' || g
	                  FROM generate_series(1, 5) g;
	            END IF;
	            IF i % 11 = 0 THEN
	                PERFORM pg_logical_emit_message(true, 'tx', i::text);
	            END IF;
	            IF i % 5 = 0 THEN
	                DELETE FROM public.a WHERE id = i;
	            END IF;
	            IF i % 1000 = 0 THEN
	                -- a large one, spilled to disk by the walsender
	                INSERT INTO public.c SELECT i, g FROM generate_series(1, 5000) g;
	            ELSIF i % 100 = 0 THEN
	                INSERT INTO public.c SELECT i, g FROM generate_series(1, 200) g;
	                FOR g IN 1..200 LOOP
	                    UPDATE public.c SET v = -v WHERE k = i AND v = g;
	                END LOOP;
	            END IF;
	            INSERT INTO public.audit VALUES (i, txid_current(), true);
	            COMMIT;
	        END IF;
	        PERFORM pg_sleep(0.002);
	    END LOOP;
	END $$;
});

$sub->safe_psql('postgres',
	"SELECT pgrpl.create_subscription('s', '$connstr', ARRAY['pub'], streaming => false, copy_data => false)");
pgrpl_wait_state($sub, 's', 'streaming');

# ------------------------------------------------------- the workload --

my ($load_out, $load_err) = ('', '');
my $load = IPC::Run::start(
	[
		'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1',
		'-d', $primary->connstr('postgres'),
		'-c', 'CALL public.workload()'
	],
	'>', \$load_out, '2>', \$load_err,
	IPC::Run::timeout(4 * $PostgreSQL::Test::Utils::timeout_default));
my ($long_out, $long_err) = ('', '');
my $long = IPC::Run::start(
	[
		'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1',
		'-d', $primary->connstr('postgres'),
		'-c', 'CALL public.longtx()'
	],
	'>', \$long_out, '2>', \$long_err,
	IPC::Run::timeout(4 * $PostgreSQL::Test::Utils::timeout_default));

my $txn_count = q{SELECT count(*) FROM pgrpl.transaction};

# Wait until the worker has captured $n more transactions than before and
# the workload is still going (so the next crash is mid-stream).
my $captured = 0;

sub wait_progress
{
	my ($what, $n) = @_;
	my $target = $captured + $n;
	ok( $sub->poll_query_until(
			'postgres', "SELECT count(*) >= $target FROM pgrpl.transaction"),
		"$what: the worker captures new transactions");
	$captured = $sub->safe_psql('postgres', $txn_count);
	is($primary->safe_psql('postgres', 'SELECT count(*) FROM public.done'),
		'0', "$what: the workload is still running");
}

# While the subscriber is down, let the primary run ahead by $n iterations:
# after the start the worker has a backlog to work through, and the next
# crash (after only a little progress) hits it in the middle of catching up.
sub wait_backlog
{
	my ($what, $n) = @_;
	my $now = $primary->safe_psql('postgres', 'SELECT count(*) FROM public.audit');
	ok( $primary->poll_query_until(
			'postgres', 'SELECT count(*) >= ' . ($now + $n) . ' FROM public.audit'),
		"$what: the primary runs ahead");
}

my $round = 0;
sub walsender_pid
{
	return $primary->safe_psql('postgres',
		"SELECT pid FROM pg_stat_replication WHERE application_name = 's'");
}

# Wait for a walsender other than $old to serve the worker.
sub wait_new_walsender
{
	my ($what, $old) = @_;
	ok( $primary->poll_query_until(
			'postgres',
			"SELECT count(*) = 1 AND bool_and(pid <> $old)
			   FROM pg_stat_replication WHERE application_name = 's'"),
		"$what: a new walsender serves the worker");
}

# fast / immediate: stop the subscriber so, start it after a backlog;
# kill-worker: SIGKILL to the worker (crash-restart of the subscriber);
# alter: alter_subscription, the worker reconnects in-process;
# disable: disable, backlog, enable;
# terminate: the primary terminates the walsender;
# stop: set_stop_lsn to the primary's position, wait for 'finished', resume.
for my $mode (
	qw(fast immediate kill-worker alter immediate disable fast terminate stop
	immediate kill-worker alter immediate fast disable immediate terminate
	kill-worker stop immediate))
{
	$round++;
	# Alternate crashes in steady streaming and in catch-up after a backlog.
	wait_progress("before round $round ($mode)", $round % 2 ? 250 : 50);
	my $before = $sub->safe_psql('postgres', $txn_count);
	my $before_lsn = pgrpl_stat($sub, 's', 'flushed_lsn');
	my $log_offset = -s $primary->logfile;
	if ($mode eq 'kill-worker')
	{
		my $pid = pgrpl_stat($sub, 's', 'pid');
		ok($pid =~ /^\d+$/, "round $round: the worker runs (pid $pid)");
		note "round $round: SIGKILL to worker $pid";
		kill 'KILL', $pid;
		# The postmaster reinitializes; the worker must come back.
		pgrpl_wait_state($sub, 's', 'streaming',
			"round $round: worker back after crash-restart",
			"pid IS NOT NULL AND pid <> $pid");
	}
	elsif ($mode eq 'alter')
	{
		my $pid = pgrpl_stat($sub, 's', 'pid');
		my $ws = walsender_pid();
		$sub->safe_psql('postgres',
			"SELECT pgrpl.alter_subscription('s', publications => ARRAY['pub'])");
		wait_new_walsender("round $round", $ws);
		pgrpl_wait_state($sub, 's', 'streaming',
			"round $round: the same worker streams again after alter_subscription",
			"pid = $pid");
	}
	elsif ($mode eq 'disable')
	{
		$sub->safe_psql('postgres', "SELECT pgrpl.disable_subscription('s')");
		pgrpl_wait_state($sub, 's', 'disabled', "round $round: disabled",
			'pid IS NULL');
		wait_backlog("round $round", 300);
		$sub->safe_psql('postgres', "SELECT pgrpl.enable_subscription('s')");
		pgrpl_wait_state($sub, 's', 'streaming', "round $round: enabled again");
	}
	elsif ($mode eq 'stop')
	{
		# Hold the worker on a lock in the middle of the stream, so that the
		# stop_lsn is surely ahead of it while the stream keeps coming.
		my $pid = pgrpl_stat($sub, 's', 'pid');
		my $locker = $sub->background_psql('postgres');
		$locker->query_safe('BEGIN');
		$locker->query_safe('LOCK TABLE pgrpl.change IN SHARE MODE');
		ok( $sub->poll_query_until(
				'postgres', qq{
			SELECT count(*) = 1 FROM pg_locks
			 WHERE relation = 'pgrpl.change'::regclass AND NOT granted AND pid = $pid}),
			"round $round: the worker is held in mid-stream");
		my $stop = pgrpl_primary_lsn($primary);
		wait_backlog("round $round", 300);
		$sub->safe_psql('postgres', "SELECT pgrpl.set_stop_lsn('s', '$stop')");
		$locker->query_safe('COMMIT');
		$locker->quit;
		pgrpl_wait_state($sub, 's', 'finished', "round $round: finished at $stop",
			'pid IS NULL');
		is( $sub->safe_psql(
				'postgres', qq{
			SELECT count(*) FROM pgrpl.changes('s')
			 WHERE (xid IS NOT NULL AND commit_lsn >= '$stop')
			    OR (xid IS NULL AND commit_lsn + 1 > '$stop')}),
			'0',
			"round $round: nothing captured past stop_lsn");
		is( $sub->safe_psql(
				'postgres', qq{
			SELECT pgrpl.wait_for_lsn('s', '$stop', '0 s')}),
			't',
			"round $round: everything up to stop_lsn is there");
		wait_backlog("round $round", 300);
		$sub->safe_psql('postgres', "SELECT pgrpl.set_stop_lsn('s', NULL)");
		pgrpl_wait_state($sub, 's', 'streaming', "round $round: resumed");
	}
	elsif ($mode eq 'terminate')
	{
		my $ws = walsender_pid();
		$primary->safe_psql('postgres', "SELECT pg_terminate_backend($ws)");
		wait_new_walsender("round $round", $ws);
		pgrpl_wait_state($sub, 's', 'streaming',
			"round $round: streaming again after the walsender was terminated");
	}
	else
	{
		$sub->stop($mode);
		wait_backlog("round $round", 300);
		$sub->start;
		pgrpl_wait_state($sub, 's', 'streaming',
			"round $round: worker back after stop('$mode')");
	}
	# Local commits are asynchronous: a crash may lose the last ones, which
	# the primary then sends again.
	$captured = $sub->safe_psql('postgres', $txn_count);
	note "round $round: $before transactions captured just before, $captured after";
	# Where the new session asked the primary to resume: before $before_lsn
	# if locally committed transactions were lost.
	my $log = slurp_file($primary->logfile, $log_offset);
	if ($log =~ /received replication command: START_REPLICATION SLOT s LOGICAL ([0-9A-F]+\/[0-9A-F]+)/)
	{
		my $resume = $1;
		my $lost = $primary->safe_psql('postgres',
			"SELECT '$resume'::pg_lsn < '$before_lsn'::pg_lsn");
		note "round $round: committed up to $before_lsn before, resumed at $resume"
		  . ($lost eq 't' ? ' (lost local commits are sent again)' : '');
	}
}
wait_progress('after the last round', 250);

# Stop the workload and let the subscriber catch up.
$primary->safe_psql('postgres', 'INSERT INTO public.control VALUES (true)');
ok($load->finish, 'the workload procedure ends without error')
  or diag("stdout: $load_out\nstderr: $load_err");
is($load_err, '', 'no error output from the workload');
ok($long->finish, 'the long transactions end without error')
  or diag("stdout: $long_out\nstderr: $long_err");
my $last_j = $primary->safe_psql('postgres', 'SELECT last_j FROM public.done_long');
note "$last_j long transactions";
cmp_ok($last_j, '>', 10, 'long transactions ran concurrently');

my $last_i = $primary->safe_psql('postgres', 'SELECT last_i FROM public.done');
note "workload ran $last_i iterations";
cmp_ok($last_i, '>', 1000, 'the workload ran over a thousand transactions');

my $lsn = pgrpl_primary_lsn($primary);
pgrpl_wait_lsn($sub, 's', $lsn, 'the subscriber catches up with the whole workload');

# ------------------------------------------------------- the expected log --

my %audit_xid;
my %published;
for my $row (split /\n/,
	$primary->safe_psql('postgres', 'SELECT i, xid, published FROM public.audit'))
{
	my ($i, $xid, $pub) = split /\|/, $row;
	$audit_xid{$i} = $xid;
	$published{$i} = $pub eq 't';
}

# The audit table itself is the primary's history: committed iterations are
# exactly those not rolled back.
is(scalar(keys %audit_xid),
	$last_i - int($last_i / 17),
	'the audit table has every committed iteration');

my @expected;
my $expected_txns = 0;
for my $i (1 .. $last_i)
{
	push @expected, "- M:nt:$i" if $i % 19 == 0;
	next if $i % 17 == 0;    # rolled back
	die "iteration $i missing from the audit table" unless exists $audit_xid{$i};
	next unless $published{$i};    # only an unpublished table: no unit
	my @c = ("I:a:$i:v$i");
	push @c, "U:a:$i:u$i" if $i % 3 == 0;
	push @c, map { 'I:b:' . ($i * 10 + $_) } 1 .. 5 if $i % 7 == 0;
	push @c, "M:tx:$i" if $i % 11 == 0;
	push @c, "D:a:$i" if $i % 5 == 0;
	if ($i % 1000 == 0)
	{
		push @c, map { "I:c:$i/$_" } 1 .. 5000;
	}
	elsif ($i % 100 == 0)
	{
		push @c, map { "I:c:$i/$_" } 1 .. 200;
		push @c, map { "U:c:$i/$_>$i/-$_" } 1 .. 200;
	}
	push @expected, "$audit_xid{$i} " . join(' ', @c);
	$expected_txns++;
}

# One line per captured unit (transaction or non-transactional message), in
# commit order: its xid, then its changes in seq order.
my @captured = split /\n/, $sub->safe_psql(
	'postgres', q{
	SELECT coalesce(min(xid)::text, '-') || ' ' || string_agg(sig, ' ' ORDER BY seq)
	  FROM (SELECT commit_lsn, seq, xid,
	               CASE
	                 WHEN op = 'MESSAGE' THEN
	                   'M:' || message_prefix || ':' || convert_from(message_content, 'UTF8')
	                 WHEN table_name = 'c' THEN
	                   left(op, 1) || ':c:'
	                   || coalesce((old->>'k') || '/' || (old->>'v') || '>', '')
	                   || (new->>'k') || '/' || (new->>'v')
	                 ELSE
	                   left(op, 1) || ':' || table_name || ':'
	                   || coalesce(new->>'id', old->>'id') || coalesce(':' || (new->>'v'), '')
	               END AS sig, table_name
	          FROM pgrpl.changes('s')) x
	 GROUP BY commit_lsn
	HAVING count(*) FILTER (WHERE table_name = 'd') = 0
	 ORDER BY commit_lsn});

is(scalar(@captured), scalar(@expected), 'as many units captured as committed');
my $first_diff;
for my $k (0 .. ($#captured > $#expected ? $#captured : $#expected))
{
	my $got = $captured[$k] // '(none)';
	my $exp = $expected[$k] // '(none)';
	next if $got eq $exp;
	$first_diff = $k;
	last;
}
ok(!defined $first_diff,
	'the captured log equals the primary\'s history, unit by unit, in commit order')
  or diag(
	"first difference at unit $first_diff:\n",
	map { sprintf("  #%d got: %.200s\n  #%d exp: %.200s\n",
			$_, $captured[$_] // '(none)', $_, $expected[$_] // '(none)') }
	  grep { $_ >= 0 } ($first_diff - 1 .. $first_diff + 1));

# The long transactions: each once, whole, in commit order.
is( $sub->safe_psql(
		'postgres', q{
	SELECT string_agg(u, ' ' ORDER BY commit_lsn) FROM (
	  SELECT commit_lsn, string_agg((new->>'j') || '.' || (new->>'part'), '+' ORDER BY seq) AS u
	    FROM pgrpl.changes('s') WHERE table_name = 'd'
	   GROUP BY commit_lsn) x}),
	join(' ', map { "$_.1+$_.2" } 1 .. $last_j),
	'every long transaction captured once, whole, in commit order');
$expected_txns += $last_j;

# The same properties, stated directly.
is( $sub->safe_psql(
		'postgres', q{
	SELECT count(*) FROM (
	  SELECT new->>'id' FROM pgrpl.changes('s')
	   WHERE op = 'INSERT' AND table_name = 'a'
	   GROUP BY 1 HAVING count(*) <> 1) x}),
	'0',
	'every insert into a is captured exactly once');
is( $sub->safe_psql(
		'postgres', q{
	SELECT count(*) FROM pgrpl.changes('s')
	 WHERE op = 'INSERT' AND table_name = 'a'
	   AND new <> jsonb_build_object('id', (new->>'id')::int, 'v', 'v' || (new->>'id'), 'n', 0)}),
	'0',
	'new of every insert into a is the full row');
is( $sub->safe_psql(
		'postgres', q{
	SELECT count(*), count(DISTINCT commit_lsn), count(DISTINCT end_lsn),
	       count(DISTINCT xid)
	  FROM pgrpl.transaction WHERE state = 'c'}),
	"$expected_txns|$expected_txns|$expected_txns|$expected_txns",
	'pgrpl.transaction: one row per committed transaction, no duplicate commit_lsn');
is( $sub->safe_psql(
		'postgres', q{
	SELECT count(*) FROM pgrpl.transaction t
	 WHERE t.changes <> (SELECT count(*) FROM pgrpl.change c
	                      WHERE c.sub_id = t.sub_id AND c.txn_id = t.txn_id)
	    OR (t.state <> 'a' AND (t.changes < 1 OR t.end_lsn <= t.commit_lsn))}),
	'0',
	'pgrpl.transaction.changes matches the change rows of each transaction');
# A large transaction streamed when a crash came is sent again from its
# start: the rows written of it before are deleted and its row says 'a'.
is( $sub->safe_psql(
		'postgres', q{SELECT count(*) FROM pgrpl.transaction WHERE state NOT IN ('c', 'm', 'a')}),
	'0', 'no transaction is left in progress');
is( $sub->safe_psql(
		'postgres', q{
	SELECT count(*) FROM pgrpl.change c
	  LEFT JOIN pgrpl.transaction t USING (sub_id, txn_id)
	 WHERE t.state IS DISTINCT FROM 'c'
	   AND NOT (t.state = 'm' AND c.op = 'M' AND c.seq = 1 AND c.message_prefix = 'nt'
	            AND c.lsn = t.commit_lsn AND t.xid IS NULL)}),
	'0',
	'every change has a committed transaction row; units of their own are non-transactional messages');
is( $sub->safe_psql(
		'postgres', q{
	SELECT count(*) FROM (
	  SELECT txn_id FROM pgrpl.change GROUP BY txn_id
	  HAVING min(seq) <> 1 OR max(seq) <> count(*)) x}),
	'0',
	'seq runs 1..n within every unit');

# The origin's progress is the end of the last captured unit.
is( $sub->safe_psql(
		'postgres', q{
	SELECT o.remote_lsn >= (SELECT max(end_lsn) FROM pgrpl.transaction)
	  FROM pg_replication_origin_status o
	  JOIN pg_replication_origin r ON r.roident = o.local_id
	 WHERE r.roname LIKE 'pgrpl%'}),
	't',
	'the replication origin stands at or past the last captured transaction');

# One more restart after the end: still nothing captured twice.
my $total = $sub->safe_psql('postgres', 'SELECT count(*) FROM pgrpl.change');
$sub->stop('immediate');
$sub->start;
pgrpl_wait_state($sub, 's', 'streaming', 'streaming after a final immediate stop');
$primary->safe_psql('postgres', "INSERT INTO public.a (id, v) VALUES (-1, 'last')");
$lsn = pgrpl_primary_lsn($primary);
pgrpl_wait_lsn($sub, 's', $lsn, 'caught up after the final restart');
is($sub->safe_psql('postgres', 'SELECT count(*) FROM pgrpl.change'),
	$total + 1, 'only the new change is added after the final restart');

$sub->stop;
$primary->stop;
done_testing();
