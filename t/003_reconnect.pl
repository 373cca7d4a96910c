# t/003_reconnect.pl — the worker survives trouble on the primary's side:
# primary stopped fast and immediate (crash) and started again, walsender
# terminated with pg_terminate_backend, walsender frozen (SIGSTOP) until
# wal_receiver_timeout fires.  Each time last_error is recorded while the
# stream is down, the worker reconnects by itself (state streaming again),
# and at the end every committed row is captured exactly once.
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
	conf => "wal_receiver_timeout = '3s'\nlog_min_messages = info\n");
my $connstr = pgrpl_sub_connstr($primary);

$primary->safe_psql(
	'postgres', q{
	CREATE TABLE public.r (id serial PRIMARY KEY, phase text NOT NULL);
	CREATE PUBLICATION pub FOR TABLE public.r;
	-- n transactions of one row each
	CREATE PROCEDURE public.batch(p text, n int) LANGUAGE plpgsql AS $$
	BEGIN
	    FOR k IN 1..n LOOP
	        INSERT INTO public.r (phase) VALUES (p);
	        COMMIT;
	    END LOOP;
	END $$;
});

$sub->safe_psql('postgres',
	"SELECT pgrpl.create_subscription('r', '$connstr', ARRAY['pub'], copy_data => false)");
pgrpl_wait_state($sub, 'r', 'streaming');

# Every row of the primary captured exactly once, nothing else.
sub check_exactly_once
{
	my ($what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	pgrpl_wait_lsn($sub, 'r', pgrpl_primary_lsn($primary), "$what: caught up");
	my $want = $primary->safe_psql('postgres',
		"SELECT string_agg(id || ':' || phase, ',' ORDER BY id) FROM public.r");
	my $got = $sub->safe_psql(
		'postgres', q{
		SELECT string_agg((new->>'id') || ':' || (new->>'phase'), ',' ORDER BY commit_lsn, seq)
		  FROM pgrpl.changes('r')});
	# one transaction per row on the primary, committed in id order
	is($got, $want, "$what: every row captured once, in commit order");
	is( $sub->safe_psql(
			'postgres', q{
		SELECT count(*) = count(DISTINCT commit_lsn) AND bool_and(changes = 1)
		  FROM pgrpl.transaction WHERE state = 'c'}),
		't',
		"$what: one transaction row per transaction");
}

sub walsender_pid
{
	return $primary->safe_psql('postgres',
		"SELECT pid FROM pg_stat_replication WHERE application_name = 'r'");
}

$primary->safe_psql('postgres', "CALL public.batch('initial', 200)");
check_exactly_once('initial');

my $worker_pid = pgrpl_stat($sub, 'r', 'pid');

# ---------------------------------------------- primary stopped (fast) --

# Rows committed just before the stop may or may not have been received.
$primary->safe_psql('postgres', "CALL public.batch('before fast stop', 300)");
$primary->stop('fast');
pgrpl_wait_state($sub, 'r', 'error', 'primary down (fast): state error',
	q{last_error LIKE 'could not connect to the primary%' AND last_error_time IS NOT NULL});
$primary->start;
pgrpl_wait_state($sub, 'r', 'streaming', 'primary back (fast): streaming again',
	'last_error IS NULL');
$primary->safe_psql('postgres', "CALL public.batch('after fast stop', 100)");
check_exactly_once('primary stopped fast');

# ------------------------------------------ primary stopped (immediate) --

# The slot's confirmed position is kept in memory and saved only by a
# checkpoint: after a crash the primary's slot is behind what pgrpl has.
$primary->safe_psql('postgres', "CALL public.batch('before crash, captured', 300)");
pgrpl_wait_lsn($sub, 'r', pgrpl_primary_lsn($primary),
	'batch captured before the crash');
$primary->safe_psql('postgres', "CALL public.batch('before crash', 300)");
$primary->stop('immediate');
pgrpl_wait_state($sub, 'r', 'error', 'primary down (immediate): state error',
	q{last_error LIKE 'could not connect to the primary%'});
$primary->start;
pgrpl_wait_state($sub, 'r', 'streaming',
	'primary back after crash: streaming again');
$primary->safe_psql('postgres', "CALL public.batch('after crash', 100)");
check_exactly_once('primary crashed');

# --------------------------------------------- walsender terminated --

my $t0 = $sub->safe_psql('postgres', 'SELECT clock_timestamp()');
my $ws = walsender_pid();
$primary->safe_psql('postgres', "CALL public.batch('before terminate', 300)");
is( $primary->safe_psql(
		'postgres',
		"SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE application_name = 'r'"),
	't',
	'walsender terminated');
pgrpl_wait_state($sub, 'r', 'streaming',
	'streaming again after the walsender was terminated',
	"last_error_time > '$t0'");
isnt(walsender_pid(), $ws, 'a new walsender serves the worker');
$primary->safe_psql('postgres', "CALL public.batch('after terminate', 100)");
check_exactly_once('walsender terminated');

# ------------------------------------------ wal_receiver_timeout fires --

$ws = walsender_pid();
my $log_offset = -s $sub->logfile;
$primary->safe_psql('postgres', "CALL public.batch('before freeze', 100)");
pgrpl_wait_lsn($sub, 'r', pgrpl_primary_lsn($primary), 'caught up before the freeze');
note "SIGSTOP to walsender $ws";
kill 'STOP', $ws;
$primary->safe_psql('postgres', "CALL public.batch('while frozen', 100)");
ok( $sub->wait_for_log(
		qr/terminating pgrpl worker of subscription "r" due to timeout/,
		$log_offset),
	'wal_receiver_timeout detects the silent walsender');
# The frozen walsender still holds the slot: reconnecting fails, recorded.
pgrpl_wait_state($sub, 'r', 'error', 'state error while the walsender is frozen',
	'last_error IS NOT NULL');
kill 'CONT', $ws;
$primary->safe_psql('postgres', "SELECT pg_terminate_backend($ws)");
pgrpl_wait_state($sub, 'r', 'streaming', 'streaming again after the timeout');
$primary->safe_psql('postgres', "CALL public.batch('after freeze', 100)");
check_exactly_once('walsender frozen');

# The worker itself never died: it reconnected every time.
is(pgrpl_stat($sub, 'r', 'pid'), $worker_pid,
	'the same worker process reconnected each time');
is( $sub->safe_psql(
		'postgres', q{
	SELECT s.transactions = (SELECT count(*) FROM pgrpl.transaction WHERE state = 'c')
	   AND s.changes = (SELECT count(*) FROM pgrpl.change)
	  FROM pgrpl.stat_subscription s WHERE name = 'r'}),
	't',
	'stat_subscription counted every transaction across reconnects');

$sub->stop;
$primary->stop;
done_testing();
