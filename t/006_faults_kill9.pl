# t/006_faults_kill9.pl — the subscriber killed at random moments.
#
# A procedure on the primary commits a stream of mixed small transactions
# (several tables, updates, deletes, transactional and non-transactional
# messages, rolled back and unpublished ones) and every few seconds a large
# two-table one of 50,000 changes; each committed iteration and its xid go
# to an unpublished audit table.  Meanwhile the whole subscriber is killed
# 22 times: in odd rounds with SIGKILL to the postmaster and every one of
# its processes at once (kill -9, nothing gets to clean up), in even rounds
# with stop('immediate').  The moment is random (Perl's rand, seed printed;
# set PGRPL_TEST_SEED to replay), and every third round waits until the
# worker is in the middle of a large transaction or of a group of several
# before killing.  After each kill the subscriber restarts and catches up
# with the backlog.  At the end the change log must equal the history
# derived from the audit table, unit by unit: nothing missing, nothing
# twice, in commit order.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use Digest::MD5 qw(md5_hex);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use PgrplTest;

my $seed = $ENV{PGRPL_TEST_SEED} // (time() ^ $$) % 1000000;
srand($seed);
note "random seed $seed (set PGRPL_TEST_SEED=$seed to replay)";

# The large transactions are streamed while they run (protocol 2): kills
# land inside streamed transactions and during their commit too.
my $primary = pgrpl_init_primary('primary',
	conf => "logical_decoding_work_mem = '256kB'\n");
# A lazy WAL writer leaves the worker's asynchronous commits unwritten for
# longer, so kills lose some of them and the primary must send them again
# (they were never reported as flushed).  Frequent checkpoints keep crash
# recovery short.
my $sub = pgrpl_init_subscriber('subscriber',
	conf => "log_min_messages = info\n"
	  . "wal_writer_delay = '5s'\nwal_writer_flush_after = '16MB'\n"
	  . "checkpoint_timeout = '30s'\nmax_wal_size = '256MB'\n");
my $connstr = pgrpl_sub_connstr($primary);

my $big_every = 250;    # iterations between large transactions
$primary->safe_psql(
	'postgres', qq{
	CREATE TABLE public.a (id int PRIMARY KEY, v text, n int NOT NULL DEFAULT 0);
	CREATE TABLE public.b (id int PRIMARY KEY, a_id int, payload text);
	CREATE TABLE public.big_a (id bigint PRIMARY KEY, v int);
	CREATE TABLE public.big_b (id bigint PRIMARY KEY, w int);
	CREATE TABLE public.local_only (id int);
	CREATE TABLE public.audit (i int PRIMARY KEY, xid bigint NOT NULL, published bool NOT NULL);
	CREATE TABLE public.control (stop bool);
	CREATE TABLE public.done (last_i int);
	CREATE PUBLICATION pub FOR TABLE public.a, public.b, public.big_a, public.big_b;

	-- One transaction per iteration until public.control has a row.
	CREATE PROCEDURE public.workload() LANGUAGE plpgsql AS \$\$
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
	            IF i % $big_every = 0 THEN
	                -- large, two tables: 25000 + 24000 inserts, 1000 updates
	                INSERT INTO public.big_a SELECT i * 100000::bigint + g, g
	                  FROM generate_series(1, 25000) g;
	                INSERT INTO public.big_b SELECT i * 100000::bigint + g, i
	                  FROM generate_series(1, 24000) g;
	                UPDATE public.big_a SET v = -v
	                 WHERE id BETWEEN i * 100000::bigint + 1 AND i * 100000::bigint + 1000;
	            END IF;
	            INSERT INTO public.audit VALUES (i, txid_current(), true);
	            COMMIT;
	        END IF;
	        PERFORM pg_sleep(0.01);
	    END LOOP;
	END \$\$;
});

$sub->safe_psql('postgres',
	"SELECT pgrpl.create_subscription('s', '$connstr', ARRAY['pub'], copy_data => false)");
pgrpl_wait_state($sub, 's', 'streaming');

my ($load_out, $load_err) = ('', '');
my $load = IPC::Run::start(
	[
		'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1',
		'-d', $primary->connstr('postgres'),
		'-c', 'CALL public.workload()'
	],
	'>', \$load_out, '2>', \$load_err,
	IPC::Run::timeout(10 * $PostgreSQL::Test::Utils::timeout_default));

# ------------------------------------------------------------ the kills --

# The worker has a local transaction open (it holds its lock on the change
# log) holding more than 1 MB of the primary's WAL: in the middle of a large
# transaction, or of a group of transactions committed together.
# A large transaction is streamed: the worker is in its middle from its
# first chunk to its commit, whether or not a local transaction is open.
my $in_flight = q{
	SELECT count(*) > 0 FROM pgrpl.stat_subscription s
	 WHERE s.name = 's'
	   AND (s.streams_in_progress > 0
	        OR (pg_wal_lsn_diff(s.received_lsn, s.flushed_lsn) > 1000000
	            AND EXISTS (SELECT FROM pg_locks l
	                         WHERE l.pid = s.pid AND l.granted
	                           AND l.relation = 'pgrpl.change'::regclass)))};
my $open_txn = q{
	SELECT count(*) > 0 FROM pgrpl.stat_subscription s, pg_locks l
	 WHERE s.name = 's' AND l.pid = s.pid
	   AND l.relation = 'pgrpl.change'::regclass AND l.granted};


my $rounds = 22;
my ($kills_open, $kills_in_flight, $kills_lost) = (0, 0, 0);
for my $round (1 .. $rounds)
{
	my $how = $round % 2 ? 'kill -9' : "stop('immediate')";
	if ($round % 3 == 0)
	{
		ok($sub->poll_query_until('postgres', $in_flight),
			"round $round: the worker is in the middle of a large transaction or group");
		# A short random delay: a group or large transaction can end within
		# 200 ms on a fast writer, and the kill must still land inside it.
		usleep(int(rand(30_000)));
	}
	else
	{
		# A random moment within 3 s of the worker streaming again.
		usleep(int(rand(3_000_000)));
	}
	my $committed = pgrpl_stat($sub, 's', 'flushed_lsn');
	my $log_offset = -s $primary->logfile;
	my $open = $sub->safe_psql('postgres', $open_txn) eq 't';
	my $flight = $sub->safe_psql('postgres', $in_flight) eq 't';
	$kills_open++ if $open;
	$kills_in_flight++ if $flight;
	note "round $round: $how"
	  . ($flight ? ' in the middle of a large transaction or group'
		: $open ? ' with a local transaction open' : '');
	if ($round % 2)
	{
		pgrpl_kill9_all($sub);
	}
	else
	{
		$sub->stop('immediate');
	}
	$sub->start;
	pgrpl_wait_state($sub, 's', 'streaming', "round $round: streaming again after $how");
	# Where the new session asked the primary to resume: before what was
	# committed here just before the kill if the kill lost local commits
	# (asynchronous, never reported as flushed), which are sent again.
	# (flushed_lsn is NULL if nothing was flushed yet in this session.)
	if ($committed ne ''
		&& slurp_file($primary->logfile, $log_offset) =~
		/received replication command: START_REPLICATION SLOT s LOGICAL ([0-9A-F]+\/[0-9A-F]+)/)
	{
		my $lost = $primary->safe_psql('postgres', "SELECT '$1'::pg_lsn < '$committed'::pg_lsn");
		$kills_lost++ if $lost eq 't';
	}
}
note "$kills_open of $rounds kills hit an open local transaction, "
  . "$kills_in_flight in the middle of a large transaction or group, "
  . "$kills_lost lost local commits that the primary sent again";
cmp_ok($kills_in_flight, '>=', int($rounds / 3),
	'kills landed in the middle of large transactions or groups');

# Stop the workload and let the subscriber catch up.
$primary->safe_psql('postgres', 'INSERT INTO public.control VALUES (true)');
ok($load->finish, 'the workload ends without error')
  or diag("stdout: $load_out\nstderr: $load_err");
is($load_err, '', 'no error output from the workload');
my $last_i = $primary->safe_psql('postgres', 'SELECT last_i FROM public.done');
my $n_big = int($last_i / $big_every) - int($last_i / ($big_every * 17)) -
  int($last_i / ($big_every * 13)) + int($last_i / ($big_every * 13 * 17));
note "workload ran $last_i iterations, about $n_big of them large";
cmp_ok($n_big, '>=', 10, 'at least ten large transactions');
pgrpl_wait_lsn($sub, 's', pgrpl_primary_lsn($primary), 'the subscriber catches up');

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
is(scalar(keys %audit_xid),
	$last_i - int($last_i / 17),
	'the audit table has every committed iteration');

# One line per unit, in commit order: xid ('-' for a non-transactional
# message), number of changes, md5 of the changes' signatures in order.
sub unit_line
{
	my ($xid, @c) = @_;
	return "$xid " . scalar(@c) . ' ' . md5_hex(join(' ', @c));
}
my @expected;
my $expected_txns = 0;
for my $i (1 .. $last_i)
{
	push @expected, unit_line('-', "M:nt:$i") if $i % 19 == 0;
	next if $i % 17 == 0;    # rolled back
	die "iteration $i missing from the audit table" unless exists $audit_xid{$i};
	next unless $published{$i};    # only an unpublished table: no unit
	my @c = ("I:a:$i:v$i");
	push @c, "U:a:$i:u$i" if $i % 3 == 0;
	push @c, map { 'I:b:' . ($i * 10 + $_) } 1 .. 5 if $i % 7 == 0;
	push @c, "M:tx:$i" if $i % 11 == 0;
	push @c, "D:a:$i" if $i % 5 == 0;
	if ($i % $big_every == 0)
	{
		my $base = $i * 100000;
		push @c, map { 'I:big_a:' . ($base + $_) . ":$_" } 1 .. 25000;
		push @c, map { 'I:big_b:' . ($base + $_) . ":$i" } 1 .. 24000;
		push @c, map { 'U:big_a:' . ($base + $_) . ":-$_" } 1 .. 1000;
	}
	push @expected, unit_line($audit_xid{$i}, @c);
	$expected_txns++;
}

my @captured = split /\n/, $sub->safe_psql(
	'postgres', q{
	SELECT coalesce(min(xid)::text, '-') || ' ' || count(*) || ' '
	       || md5(string_agg(sig, ' ' ORDER BY seq))
	  FROM (SELECT commit_lsn, seq, xid,
	               CASE
	                 WHEN op = 'MESSAGE' THEN
	                   'M:' || message_prefix || ':' || convert_from(message_content, 'UTF8')
	                 ELSE
	                   left(op, 1) || ':' || table_name || ':'
	                   || coalesce(new->>'id', old->>'id')
	                   || coalesce(':' || (new->>'v'), '') || coalesce(':' || (new->>'w'), '')
	               END AS sig
	          FROM pgrpl.changes('s')) x
	 GROUP BY commit_lsn
	 ORDER BY commit_lsn});

is(scalar(@captured), scalar(@expected), 'as many units captured as committed');
my $first_diff;
for my $k (0 .. ($#captured > $#expected ? $#captured : $#expected))
{
	next if ($captured[$k] // '(none)') eq ($expected[$k] // '(none)');
	$first_diff = $k;
	last;
}
ok(!defined $first_diff,
	'the captured log equals the primary\'s history, unit by unit, in commit order')
  or diag(
	"first difference at unit $first_diff:\n",
	map { sprintf("  #%d got: %s\n  #%d exp: %s\n",
			$_, $captured[$_] // '(none)', $_, $expected[$_] // '(none)') }
	  grep { $_ >= 0 } ($first_diff - 1 .. $first_diff + 1));

is( $sub->safe_psql(
		'postgres', q{
	SELECT count(*), count(DISTINCT commit_lsn), count(DISTINCT end_lsn), count(DISTINCT xid)
	  FROM pgrpl.transaction WHERE state = 'c'}),
	"$expected_txns|$expected_txns|$expected_txns|$expected_txns",
	'pgrpl.transaction: one row per committed transaction');
is( $sub->safe_psql(
		'postgres', q{
	SELECT count(*) FROM pgrpl.transaction t
	 WHERE t.changes <> (SELECT count(*) FROM pgrpl.change c
	                      WHERE c.sub_id = t.sub_id AND c.txn_id = t.txn_id)}),
	'0',
	'pgrpl.transaction.changes matches the change rows of each transaction');
is( $sub->safe_psql(
		'postgres', q{
	SELECT count(*) FROM (
	  SELECT txn_id FROM pgrpl.change GROUP BY txn_id
	  HAVING min(seq) <> 1 OR max(seq) <> count(*)) x}),
	'0',
	'seq runs 1..n within every unit');
is( $primary->safe_psql(
		'postgres',
		q{SELECT stream_txns > 0 FROM pg_stat_replication_slots WHERE slot_name = 's'}),
	't', 'the large transactions were streamed');
is($sub->safe_psql('postgres', q{SELECT count(*) FROM pgrpl.transaction WHERE state = 'i'}),
	'0', 'no streamed transaction is left half-written');

$sub->stop;
$primary->stop;
done_testing();
