# t/024_twophase.pl — two-phase decoding (pgoutput protocol 3).
#
# A subscription with two_phase captures prepared transactions at PREPARE
# (invisible, state 'p') and makes them visible at COMMIT PREPARED, which
# may come in a later session of the worker:
#  1. Transactions prepared (one small, one streamed, one to roll back)
#     between ordinary ones: prepared in transactions(), not in changes().
#  2. The subscriber restarts; one is committed after the restart.
#  3. The subscriber is killed (-9); one is committed, one rolled back
#     after that, and the subscriber is killed again right after.
#  4. Killed right after a PREPARE; the primary restarts with a prepared
#     transaction; both committed later.
#  5. Exactly once: the log holds each committed transaction once, in
#     commit order, and equals the primary's table; a subscription without
#     two_phase gets the same log, each prepared transaction at its commit.
#  6. An existing slot whose confirmed position is past a transaction's
#     PREPARE: at COMMIT PREPARED the walsender sends the whole prepared
#     transaction (its prepare LSN is before where the subscription
#     started), then the commit; it is captured once.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PgrplTest;

my $primary = pgrpl_init_primary('primary',
	conf => "logical_decoding_work_mem = '64kB'\nmax_prepared_transactions = 10\n");
my $sub = pgrpl_init_subscriber('subscriber');
my $connstr = pgrpl_sub_connstr($primary);

$primary->safe_psql(
	'postgres', q{
	CREATE TABLE public.t (id bigint PRIMARY KEY, v text);
	CREATE PUBLICATION pub FOR TABLE public.t;
});
$sub->safe_psql('postgres',
	"SELECT pgrpl.create_subscription('s', '$connstr', ARRAY['pub'], two_phase => true, copy_data => false)");
$sub->safe_psql('postgres',
	"SELECT pgrpl.create_subscription('plain', '$connstr', ARRAY['pub'], slot_name => 'plain', copy_data => false)");
pgrpl_wait_state($sub, 's', 'streaming');
pgrpl_wait_state($sub, 'plain', 'streaming');
cmp_ok(pgrpl_stat($sub, 's', 'proto_version'), '>=', 3, 'protocol 3 or later negotiated');
is( $primary->safe_psql(
		'postgres',
		q{SELECT string_agg(slot_name || '=' || two_phase, ',' ORDER BY slot_name) FROM pg_replication_slots}),
	'plain=false,s=true', 'the walsender turned two_phase on for the slot of s only');

# Rows of the log, per transaction in commit order: "xid:id,id,...".
my $log_txns = q{
	SELECT string_agg(x, ' ' ORDER BY commit_lsn) FROM (
	  SELECT commit_lsn, xid || ':' || string_agg(coalesce(new->>'id', old->>'id'), ',' ORDER BY seq) AS x
	    FROM pgrpl.changes('%s') GROUP BY commit_lsn, xid) q};
my @order;     # "xid:ids" in commit order on the primary
my %prepared;  # gid -> "xid:ids"

# An ordinary transaction of ids $first..$last.
sub commit_rows
{
	my ($first, $last) = @_;
	my $xid = $primary->safe_psql('postgres',
		"BEGIN; INSERT INTO public.t SELECT g, 'c' FROM generate_series($first, $last) g;"
		  . " SELECT txid_current(); COMMIT;");
	push @order, "$xid:" . join(',', $first .. $last);
}

# A prepared transaction of ids $first..$last.
sub prepare_rows
{
	my ($gid, $first, $last) = @_;
	my $xid = $primary->safe_psql('postgres',
		"BEGIN; INSERT INTO public.t SELECT g, '$gid' FROM generate_series($first, $last) g;"
		  . " SELECT txid_current(); PREPARE TRANSACTION '$gid';");
	$prepared{$gid} = "$xid:" . join(',', $first .. $last);
}

sub finish_prepared
{
	my ($gid, $commit) = @_;
	$primary->safe_psql('postgres',
		($commit ? 'COMMIT' : 'ROLLBACK') . " PREPARED '$gid'");
	push @order, $prepared{$gid} if $commit;
	delete $prepared{$gid};
}

sub prepared_in_log
{
	return $sub->safe_psql('postgres',
		q{SELECT string_agg(gid || ':' || changes, ',' ORDER BY gid)
		    FROM pgrpl.transactions('s') WHERE state = 'prepared'});
}

# --------------------------------------------------------- 1. prepared --

commit_rows(1, 10);
prepare_rows('small', 101, 103);
commit_rows(11, 20);
prepare_rows('big', 1001, 21000);    # streamed: STREAM PREPARE
prepare_rows('gone', 30001, 30005);
commit_rows(21, 30);
pgrpl_wait_lsn($sub, 's', pgrpl_primary_lsn($primary));
is(prepared_in_log(), 'big:20000,gone:5,small:3',
	'transactions() shows the three prepared transactions');
is( $sub->safe_psql(
		'postgres',
		q{SELECT count(*) FROM pgrpl.changes('s') WHERE (new->>'id')::int > 100}),
	'0', 'changes() shows none of their rows');
is($sub->safe_psql('postgres', sprintf($log_txns, 's')),
	join(' ', @order), 'the committed ones are there');
ok(pgrpl_stat($sub, 's', 'streamed_transactions') >= 1, 'the big one was streamed');

# ---------------------------------------------------------- 2. restart --

$sub->restart;
pgrpl_wait_state($sub, 's', 'streaming', 'restarted');
finish_prepared('small', 1);
commit_rows(31, 40);
pgrpl_wait_lsn($sub, 's', pgrpl_primary_lsn($primary));
is(prepared_in_log(), 'big:20000,gone:5', 'committed after a restart: no longer prepared');
is($sub->safe_psql('postgres', sprintf($log_txns, 's')),
	join(' ', @order), 'and visible once, in commit order');

# ----------------------------------------------------------- 3. kill -9 --

pgrpl_kill9_all($sub);
$sub->start;
pgrpl_wait_state($sub, 's', 'streaming', 'restarted after kill -9');
finish_prepared('gone', 0);
finish_prepared('big', 1);
# Right after COMMIT PREPARED: the worker is writing or committing it.
pgrpl_kill9_all($sub);
$sub->start;
pgrpl_wait_lsn($sub, 's', pgrpl_primary_lsn($primary));
is(prepared_in_log(), '', 'nothing prepared left after kill -9 around the commit');
is($sub->safe_psql('postgres', sprintf($log_txns, 's')),
	join(' ', @order), 'the big one committed once; the rolled-back one is not there');
is( $sub->safe_psql(
		'postgres',
		q{SELECT count(*) FROM pgrpl.change c JOIN pgrpl.transaction t USING (sub_id, txn_id)
		   WHERE t.state = 'a'}),
	'0', 'the rolled-back one left no rows');

# ------------------------------- 4. kill -9 after PREPARE, primary restart --

prepare_rows('killed', 40001, 40010);
pgrpl_kill9_all($sub);
$sub->start;
pgrpl_wait_lsn($sub, 's', pgrpl_primary_lsn($primary));
is(prepared_in_log(), 'killed:10', 'killed right after PREPARE: prepared once');
prepare_rows('survivor', 50001, 50010);
$primary->restart;
commit_rows(41, 50);
finish_prepared('survivor', 1);
finish_prepared('killed', 1);
pgrpl_wait_lsn($sub, 's', pgrpl_primary_lsn($primary));
pgrpl_wait_lsn($sub, 'plain', pgrpl_primary_lsn($primary));

# ------------------------------------------------------- 5. exactly once --

my $want = join ' ', @order;
is($sub->safe_psql('postgres', sprintf($log_txns, 's')),
	$want, 'two_phase: every committed transaction exactly once, in commit order');
is($sub->safe_psql('postgres', sprintf($log_txns, 'plain')),
	$want, 'without two_phase: the same log');
is( $sub->safe_psql(
		'postgres',
		q{SELECT count(*) FROM pgrpl.transaction WHERE state IN ('p', 'i')}),
	'0', 'nothing prepared or in progress left');
my $table = $primary->safe_psql('postgres',
	q{SELECT md5(string_agg(to_jsonb(t)::text, ',' ORDER BY id)) FROM public.t});
for my $s ('s', 'plain')
{
	is( $sub->safe_psql(
			'postgres',
			qq{SELECT md5(string_agg(r::text, ',' ORDER BY (r->>'id')::bigint))
			    FROM pgrpl.table_as_of('$s', 'public.t') r}),
		$table, "table_as_of of $s equals the primary");
}

# ------------------------------------- 6. prepared before the start --

$primary->safe_psql('postgres',
	"SELECT 'init' FROM pg_create_logical_replication_slot('late', 'pgoutput')");
my $early_xid = $primary->safe_psql('postgres',
	"BEGIN; INSERT INTO public.t SELECT g, 'early' FROM generate_series(60001, 60005) g;"
	  . " SELECT txid_current(); PREPARE TRANSACTION 'early';");
$primary->safe_psql('postgres', "INSERT INTO public.t VALUES (60100, 'after early')");
# The slot's confirmed position moves past the PREPARE (the transaction is
# still open, so its changes stay decodable).
$primary->safe_psql('postgres',
	"SELECT 'moved' FROM pg_replication_slot_advance('late', pg_current_wal_lsn())");
$sub->safe_psql('postgres',
	"SELECT pgrpl.create_subscription('late', '$connstr', ARRAY['pub'], create_slot => false,"
	  . " two_phase => true, copy_data => false)");
pgrpl_wait_state($sub, 'late', 'streaming');
# Progress moves on past the PREPARE before its commit.
my $late_xid = $primary->safe_psql('postgres',
	"BEGIN; INSERT INTO public.t VALUES (60200, 'late'); SELECT txid_current(); COMMIT;");
pgrpl_wait_lsn($sub, 'late', pgrpl_primary_lsn($primary));
$primary->safe_psql('postgres', "COMMIT PREPARED 'early'");
pgrpl_wait_lsn($sub, 'late', pgrpl_primary_lsn($primary));
is( $sub->safe_psql(
		'postgres',
		q{SELECT xid || ':' || string_agg(new->>'id', ',' ORDER BY seq)
		    FROM pgrpl.changes('late') GROUP BY commit_lsn, xid ORDER BY commit_lsn}),
	"$late_xid:60200\n$early_xid:60001,60002,60003,60004,60005",
	'prepared before the slot decoded at PREPARE: captured once at COMMIT PREPARED');
is( $sub->safe_psql(
		'postgres',
		q{SELECT string_agg(state || ':' || coalesce(gid, ''), ',') FROM pgrpl.transactions('late')}),
	'committed:,committed:early', 'as a committed prepared transaction');

done_testing();
