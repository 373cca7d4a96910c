# t/004_stop_lsn.pl — stop_lsn: the worker captures exactly the units that
# end at or before it, then its state is 'finished' and stays so (also across
# a server restart); moving stop_lsn later resumes up to the new point;
# set_stop_lsn(NULL) resumes and captures the rest exactly once.
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
	CREATE TABLE public.s (id text PRIMARY KEY);
	CREATE PUBLICATION pub FOR TABLE public.s;
});

# Created disabled: the whole history below is written before it streams.
$sub->safe_psql('postgres',
	"SELECT pgrpl.create_subscription('x', '$connstr', ARRAY['pub'], enabled => false, copy_data => false)");
is(pgrpl_state($sub, 'x'), 'disabled', 'created disabled');

# Run $sql in autocommit mode and return the insert position right after
# it: the end of its commit record (unless another process wrote WAL in
# between, which still puts it between this transaction and the next).
sub commit_and_lsn
{
	my ($sql) = @_;
	my $out = $primary->safe_psql('postgres',
		"$sql; SELECT pg_current_wal_insert_lsn()");
	return (split /\n/, $out)[-1];
}

# The primary's history, in commit order:
#   T1, T2, T3 | A: end of T3 | nt message | inside Ta (open since before
#   T3) | B | T4 | C: end of T4 | Ta commits | T5
commit_and_lsn("INSERT INTO public.s VALUES ('T1')");
my $ta = $primary->background_psql('postgres');
$ta->query_safe('BEGIN');
$ta->query_safe("INSERT INTO public.s VALUES ('Ta-1')");
commit_and_lsn("INSERT INTO public.s VALUES ('T2')");
my $lsn_a = commit_and_lsn("INSERT INTO public.s VALUES ('T3')");
$primary->safe_psql('postgres', "SELECT pg_logical_emit_message(false, 'nt', 'between')");
$ta->query_safe("INSERT INTO public.s VALUES ('Ta-2')");
my $lsn_b = $primary->safe_psql('postgres', 'SELECT pg_current_wal_insert_lsn()');
my $lsn_c = commit_and_lsn(
	"BEGIN; INSERT INTO public.s VALUES ('T4-1'); INSERT INTO public.s VALUES ('T4-2'); COMMIT");
$ta->query_safe('COMMIT');
$ta->quit;
my $lsn_end = commit_and_lsn("INSERT INTO public.s VALUES ('T5')");
note "A $lsn_a, B $lsn_b, C $lsn_c, end $lsn_end";

my $log_query = q{
	SELECT string_agg(coalesce(new->>'id', 'msg:' || convert_from(message_content, 'UTF8')),
	                  ',' ORDER BY commit_lsn, seq)
	  FROM pgrpl.changes('x')};

# ---------------------------------------------- A: between transactions --

$sub->safe_psql(
	'postgres', qq{
	SELECT pgrpl.set_stop_lsn('x', '$lsn_a');
	SELECT pgrpl.enable_subscription('x');
});
is($sub->safe_psql('postgres', "SELECT stop_lsn FROM pgrpl.subscriptions WHERE name = 'x'"),
	$lsn_a, 'subscriptions shows stop_lsn');
pgrpl_wait_state($sub, 'x', 'finished', 'A: finished at stop_lsn', 'pid IS NULL');
is($sub->safe_psql('postgres', $log_query),
	'T1,T2,T3', 'A: exactly the transactions ending at or before stop_lsn');
is( $sub->safe_psql(
		'postgres', "SELECT max(end_lsn) <= '$lsn_a' FROM pgrpl.transaction"),
	't',
	'A: no captured transaction ends past stop_lsn');
is($sub->safe_psql('postgres', "SELECT pgrpl.wait_for_lsn('x', '$lsn_a', '1 s')"),
	't', 'A: wait_for_lsn(stop_lsn) is true');
my $t_wait = time;
is($sub->safe_psql('postgres', "SELECT pgrpl.wait_for_lsn('x', '$lsn_end', '60 s')"),
	'f', 'A: wait_for_lsn past stop_lsn returns false on a finished worker');
cmp_ok(time - $t_wait, '<', 30, 'A: ... at once, not after its timeout');

# 'finished' stays: across a restart nothing more is captured.
$sub->restart;
pgrpl_wait_state($sub, 'x', 'finished', 'A: still finished after a restart',
	'pid IS NULL');
is($sub->safe_psql('postgres', $log_query),
	'T1,T2,T3', 'A: nothing more captured after the restart');
is($sub->safe_psql('postgres', "SELECT enabled FROM pgrpl.subscriptions WHERE name = 'x'"),
	't', 'A: the subscription stays enabled');

# ------------------------------------- B: inside an open transaction --

$sub->safe_psql('postgres', "SELECT pgrpl.set_stop_lsn('x', '$lsn_b')");
pgrpl_wait_state($sub, 'x', 'finished', 'B: finished again', 'pid IS NULL');
is($sub->safe_psql('postgres', $log_query),
	'T1,T2,T3,msg:between',
	'B: only the message before stop_lsn; Ta and T4 end after it');
is($sub->safe_psql('postgres', "SELECT pgrpl.wait_for_lsn('x', '$lsn_b', '0 s')"),
	't', 'B: wait_for_lsn(stop_lsn) is true although no unit ends there');

# ------------------------------------------- C: at a transaction's end --

$sub->safe_psql('postgres', "SELECT pgrpl.set_stop_lsn('x', '$lsn_c')");
pgrpl_wait_state($sub, 'x', 'finished', 'C: finished again', 'pid IS NULL');
is($sub->safe_psql('postgres', $log_query),
	'T1,T2,T3,msg:between,T4-1,T4-2',
	'C: T4 (ending at stop_lsn) captured, Ta (ending after it) not');

# ---------------------------------------------------- resume for good --

$sub->safe_psql('postgres', "SELECT pgrpl.set_stop_lsn('x', NULL)");
pgrpl_wait_state($sub, 'x', 'streaming', 'resumed after set_stop_lsn(NULL)');
$primary->safe_psql('postgres', "INSERT INTO public.s VALUES ('T6')");
pgrpl_wait_lsn($sub, 'x', pgrpl_primary_lsn($primary), 'caught up after resuming');
is($sub->safe_psql('postgres', $log_query),
	'T1,T2,T3,msg:between,T4-1,T4-2,Ta-1,Ta-2,T5,T6',
	'the rest is captured exactly once, in commit order');
is($sub->safe_psql('postgres', "SELECT stop_lsn IS NULL FROM pgrpl.subscriptions WHERE name = 'x'"),
	't', 'stop_lsn is cleared');

# A stop_lsn the worker has already passed: it finishes at once, capturing
# nothing more.
$sub->safe_psql('postgres', "SELECT pgrpl.set_stop_lsn('x', '$lsn_a')");
pgrpl_wait_state($sub, 'x', 'finished', 'a stop_lsn in the past finishes at once',
	'pid IS NULL');
$primary->safe_psql('postgres', "INSERT INTO public.s VALUES ('T7')");
$sub->safe_psql('postgres', "SELECT pgrpl.set_stop_lsn('x', NULL)");
pgrpl_wait_lsn($sub, 'x', pgrpl_primary_lsn($primary), 'caught up after the last resume');
is($sub->safe_psql('postgres', $log_query),
	'T1,T2,T3,msg:between,T4-1,T4-2,Ta-1,Ta-2,T5,T6,T7',
	'no unit captured twice after finishing and resuming again');

# ---------------------- stop_lsn set ahead of a busy, streaming worker --

# The worker must honour a stop_lsn ahead of it at once, not only when the
# stream next runs dry.  To make the race deterministic, a lock on the
# change log holds the worker while it is in the middle of the stream:
# W1 is being written, W2..W4 wait in the socket, stop_lsn is after W2.
$primary->safe_psql(
	'postgres', q{
	CREATE TABLE public.w (id text PRIMARY KEY);
	CREATE PUBLICATION pubw FOR TABLE public.w;
});
$sub->safe_psql('postgres',
	"SELECT pgrpl.create_subscription('w', '$connstr', ARRAY['pubw'], copy_data => false)");
pgrpl_wait_state($sub, 'w', 'streaming');
my $w_pid = pgrpl_stat($sub, 'w', 'pid');

my $locker = $sub->background_psql('postgres');
$locker->query_safe('BEGIN');
$locker->query_safe('LOCK TABLE pgrpl.change IN SHARE MODE');
$primary->safe_psql('postgres', "INSERT INTO public.w VALUES ('W1')");
ok( $sub->poll_query_until(
		'postgres', qq{
	SELECT count(*) = 1 FROM pg_locks
	 WHERE relation = 'pgrpl.change'::regclass AND NOT granted AND pid = $w_pid}),
	'the worker waits for the lock while writing W1');
my $lsn_w = commit_and_lsn("INSERT INTO public.w VALUES ('W2')");
commit_and_lsn("INSERT INTO public.w VALUES ('W3')");
commit_and_lsn("INSERT INTO public.w VALUES ('W4')");
$sub->safe_psql('postgres', "SELECT pgrpl.set_stop_lsn('w', '$lsn_w')");
$locker->query_safe('COMMIT');
$locker->quit;
pgrpl_wait_state($sub, 'w', 'finished', 'the busy worker finished at stop_lsn',
	'pid IS NULL');
is( $sub->safe_psql(
		'postgres',
		"SELECT string_agg(new->>'id', ',' ORDER BY commit_lsn, seq) FROM pgrpl.changes('w')"),
	'W1,W2',
	'a busy worker stops exactly at a stop_lsn set ahead of it');
$sub->safe_psql('postgres', "SELECT pgrpl.set_stop_lsn('w', NULL)");
pgrpl_wait_lsn($sub, 'w', pgrpl_primary_lsn($primary), 'w resumed and caught up');
is( $sub->safe_psql(
		'postgres',
		"SELECT string_agg(new->>'id', ',' ORDER BY commit_lsn, seq) FROM pgrpl.changes('w')"),
	'W1,W2,W3,W4',
	'the rest follows once stop_lsn is cleared');

# ------------ stop_lsn given to create_subscription, existing slot --

my $slot_lsn = $primary->safe_psql('postgres',
	"SELECT lsn FROM pg_create_logical_replication_slot('y_slot', 'pgoutput')");
my $lsn_y = commit_and_lsn("INSERT INTO public.s VALUES ('Y1')");
commit_and_lsn("INSERT INTO public.s VALUES ('Y2')");
is( $sub->safe_psql(
		'postgres', qq{
	SELECT pgrpl.create_subscription('y', '$connstr', ARRAY['pub'],
	                                 slot_name => 'y_slot', create_slot => false,
	                                 stop_lsn => '$lsn_y', copy_data => false)}),
	$slot_lsn,
	'create_subscription on an existing slot returns its confirmed position');
pgrpl_wait_state($sub, 'y', 'finished', 'second subscription finished', 'pid IS NULL');
is( $sub->safe_psql(
		'postgres',
		"SELECT string_agg(new->>'id', ',' ORDER BY commit_lsn, seq) FROM pgrpl.changes('y')"),
	'Y1',
	'second subscription: only what ends at or before its stop_lsn');
is(pgrpl_state($sub, 'x'), 'streaming', 'the first subscription is unaffected');

$sub->stop;
$primary->stop;
done_testing();
