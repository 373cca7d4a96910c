# t/023_streaming.pl — streamed transactions (pgoutput protocol 2+).
#
# The primary streams every transaction larger than 64 kB while it runs.
#  1. Three sessions interleave streamed transactions with savepoints,
#     some rolled back, some whole transactions rolled back; the log must
#     hold exactly the committed rows of each, in commit order.
#  2. A streamed transaction rolled back after 200,000 rows leaves nothing
#     visible, and after VACUUM its space is used again.
#  3. The subscriber is killed (-9) while it receives a streamed
#     transaction, and again after the primary committed it; the
#     transaction is captured exactly once, nothing half-written remains.
#  4. The primary crashes in the middle of a streamed transaction: the
#     worker reconnects, the unfinished stream leaves nothing behind.
#  5. On a primary that leaves logical_decoding_work_mem at its default
#     (64MB), pgrpl's walsender streams from 4MB on; a value in the
#     conninfo's options is kept.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PgrplTest;

my $primary = pgrpl_init_primary('primary',
	conf => "logical_decoding_work_mem = '64kB'\n");
my $sub = pgrpl_init_subscriber('subscriber');
my $connstr = pgrpl_sub_connstr($primary);

$primary->safe_psql(
	'postgres', q{
	CREATE TABLE public.t (id bigint PRIMARY KEY, v text, s int);
	CREATE PUBLICATION pub FOR TABLE public.t;
});
$sub->safe_psql('postgres',
	"SELECT pgrpl.create_subscription('s', '$connstr', ARRAY['pub'], copy_data => false)");
pgrpl_wait_state($sub, 's', 'streaming');
is(pgrpl_stat($sub, 's', 'proto_version') >= 2, 1, 'protocol 2 or later negotiated');

# Rows of the log, per transaction in commit order: "xid:id,id,..." with
# the ids in seq order; the same shape is built from the primary's audit.
my $log_txns = q{
	SELECT string_agg(x, ' ' ORDER BY commit_lsn) FROM (
	  SELECT commit_lsn, xid || ':' || string_agg(coalesce(new->>'id', old->>'id'), ',' ORDER BY seq) AS x
	    FROM pgrpl.changes('s') GROUP BY commit_lsn, xid) q};

# ------------------------------------------- 1. interleaved, savepoints --

my @sessions = map { $primary->background_psql('postgres') } 1 .. 3;
my %expect;    # xid -> ids in order
my @order;     # xids in commit order
my $next_id = 1;
for my $round (1 .. 4)
{
	my @xids;
	for my $k (0 .. $#sessions)
	{
		my $s = $sessions[$k];
		$s->query_safe('BEGIN');
		$xids[$k] = $s->query_safe('SELECT txid_current()');
		$expect{ $xids[$k] } = [];
	}
	# Each step: every session inserts a batch (streamed: > 64 kB), in
	# turn, so the primary interleaves their stream chunks.
	for my $step (1 .. 4)
	{
		for my $k (0 .. $#sessions)
		{
			my $s = $sessions[$k];
			my $first = $next_id;
			my $n = 400 + 100 * $k;
			$next_id += $n;
			my $sp = "sp_${step}";
			my $rollback = ($step + $k + $round) % 3 == 0;
			$s->query_safe("SAVEPOINT $sp") if $rollback || $step == 2;
			$s->query_safe("INSERT INTO public.t SELECT g, repeat('x', 200), $k"
				  . " FROM generate_series($first, " . ($first + $n - 1) . ") g");
			if ($rollback)
			{
				$s->query_safe("ROLLBACK TO SAVEPOINT $sp");
			}
			else
			{
				$s->query_safe("RELEASE SAVEPOINT $sp") if $step == 2;
				push @{ $expect{ $xids[$k] } }, $first .. $first + $n - 1;
			}
		}
	}
	# Session 1 rolls back in round 2; the others commit, in varying order.
	for my $k ($round % 2 ? (2, 0, 1) : (0, 1, 2))
	{
		if ($round == 2 && $k == 1)
		{
			$sessions[$k]->query_safe('ROLLBACK');
			delete $expect{ $xids[$k] };
			next;
		}
		$sessions[$k]->query_safe('COMMIT');
		push @order, $xids[$k];
	}
}
$_->quit for @sessions;

pgrpl_wait_lsn($sub, 's', pgrpl_primary_lsn($primary));
my $want = join ' ', map { "$_:" . join(',', @{ $expect{$_} }) } @order;
is($sub->safe_psql('postgres', $log_txns), $want,
	'interleaved streamed transactions: exactly the committed rows, in commit order');
ok(pgrpl_stat($sub, 's', 'streamed_transactions') >= 11,
	'they were streamed');
is( $primary->safe_psql(
		'postgres',
		"SELECT stream_txns > 0 AND spill_bytes = 0 FROM pg_stat_replication_slots WHERE slot_name = 's'"),
	't', 'the primary streamed them and spilled nothing to disk');
is( $sub->safe_psql(
		'postgres',
		q{SELECT count(*) FROM pgrpl.transaction WHERE state = 'i'}),
	'0', 'no transaction left in progress');

# --------------------------------------- 2. rolled back after 200k rows --

my $leaf_q = q{SELECT c.relid FROM pg_partition_tree('pgrpl.change') c
	   WHERE c.isleaf ORDER BY pg_relation_size(c.relid) DESC LIMIT 1};
my $leaf = $sub->safe_psql('postgres', $leaf_q);
my $size0 = $sub->safe_psql('postgres', "SELECT pg_relation_size('$leaf')");
$primary->safe_psql(
	'postgres', q{
	BEGIN;
	INSERT INTO public.t SELECT g, repeat('r', 100), -1 FROM generate_series(10000001, 10200000) g;
	ROLLBACK;
	INSERT INTO public.t VALUES (1, 'marker', 0) ON CONFLICT (id) DO UPDATE SET v = 'marker';
});
pgrpl_wait_lsn($sub, 's', pgrpl_primary_lsn($primary));
is( $sub->safe_psql(
		'postgres',
		q{SELECT count(*) FROM pgrpl.changes('s') WHERE (new->>'s')::int = -1}),
	'0', 'a streamed transaction rolled back after 200k rows leaves nothing visible');
is( $sub->safe_psql(
		'postgres',
		q{SELECT count(*) FROM pgrpl.change c JOIN pgrpl.transaction t USING (sub_id, txn_id)
		   WHERE t.state = 'a'}),
	'0', 'its rows are removed');
$sub->safe_psql('postgres', "VACUUM $leaf");
my $size_before = $sub->safe_psql('postgres', "SELECT pg_relation_size('$leaf')");
# A PostgreSQL 18 walsender stops streaming a transaction it sees aborted
# (it may have sent little or nothing of it); before 18 all 200k rows come.
my $streamed = $size_before > $size0 + 10_000_000;
ok($streamed, 'the rolled-back transaction was streamed and written (before 18)')
  if $primary->pg_version < 18;
$primary->safe_psql('postgres',
	q{INSERT INTO public.t SELECT g, repeat('r', 100), -2 FROM generate_series(10000001, 10150000) g});
pgrpl_wait_lsn($sub, 's', pgrpl_primary_lsn($primary));
my $size_after = $sub->safe_psql('postgres', "SELECT pg_relation_size('$leaf')");
if ($streamed)
{
	cmp_ok($size_after, '<=', $size_before * 1.05,
		"after VACUUM, 150k new changes fit in the space of the rolled-back ones ($size_before -> $size_after bytes)");
}
else
{
	note "the primary streamed little of the rolled-back transaction: $size0 -> $size_before bytes";
}

# ---------------------------------------------- 3. kill -9 mid-stream --

# A session inserts 150k rows in steps, so the worker is inside the stream
# for a while; the subscriber is killed there, restarted, and killed again
# right after the primary commits.
my $big = $primary->background_psql('postgres');
$big->query_safe('BEGIN');
my $big_xid = $big->query_safe('SELECT txid_current()');
for my $step (0 .. 2)
{
	my $first = 20000001 + 50000 * $step;
	$big->query_safe("INSERT INTO public.t SELECT g, 'big', 3 FROM generate_series($first, "
		  . ($first + 49999) . ') g');
}
ok( $sub->poll_query_until(
		'postgres',
		q{SELECT streams_in_progress = 1
		    FROM pgrpl.stat_subscription WHERE name = 's'}),
	'the worker is receiving the streamed transaction')
  or diag($sub->safe_psql('postgres', q{SELECT * FROM pgrpl.stat_subscription}),
	"\n", $primary->safe_psql('postgres', q{SELECT * FROM pg_stat_replication_slots}),
	"\n", $primary->safe_psql('postgres', q{SELECT * FROM pg_stat_replication}));
pgrpl_kill9_all($sub);
$sub->start;
pgrpl_wait_state($sub, 's', 'streaming', 'restarted after kill -9 inside the stream',
	'streams_in_progress = 1');
$big->query_safe('COMMIT');
$big->quit;
# Right after the commit: the worker is writing or committing it.
pgrpl_kill9_all($sub);
$sub->start;
pgrpl_wait_lsn($sub, 's', pgrpl_primary_lsn($primary));
is( $sub->safe_psql(
		'postgres',
		qq{SELECT count(*), count(DISTINCT new->>'id'), min(seq), max(seq), count(DISTINCT commit_lsn)
		     FROM pgrpl.changes('s') WHERE xid = $big_xid}),
	'150000|150000|1|150000|1', 'killed twice: the streamed transaction is there exactly once');
is( $sub->safe_psql(
		'postgres',
		q{SELECT count(*) FROM pgrpl.transaction WHERE state = 'i'}),
	'0', 'nothing half-written remains');
is(pgrpl_stat($sub, 's', 'streams_in_progress'), '0', 'no stream in progress');

# ------------------------------------------- 4. primary crash mid-stream --

my $lost = $primary->background_psql('postgres', on_error_stop => 0);
$lost->query_safe('BEGIN');
$lost->query_safe(
	q{INSERT INTO public.t SELECT g, 'lost', 4 FROM generate_series(30000001, 30050000) g});
ok( $sub->poll_query_until(
		'postgres',
		q{SELECT streams_in_progress = 1 FROM pgrpl.stat_subscription WHERE name = 's'}),
	'a stream is open when the primary crashes');
$primary->stop('immediate');
eval { $lost->quit };
$primary->start;
$primary->safe_psql('postgres', q{INSERT INTO public.t VALUES (2, 'after crash', 0)
	ON CONFLICT (id) DO UPDATE SET v = 'after crash'});
pgrpl_wait_lsn($sub, 's', pgrpl_primary_lsn($primary));
is( $sub->safe_psql(
		'postgres',
		q{SELECT count(*) FILTER (WHERE new->>'v' = 'lost'), count(*) FILTER (WHERE new->>'v' = 'after crash')
		    FROM pgrpl.changes('s')}),
	'0|1', 'the crashed transaction left nothing visible; streaming goes on');
ok( $sub->poll_query_until(
		'postgres',
		q{SELECT count(*) = 0 FROM pgrpl.change c JOIN pgrpl.transaction t USING (sub_id, txn_id)
		   WHERE t.commit_lsn IS NULL}),
	'its rows are removed when the worker reconnects');

# The log equals the primary's table.
my $table = $primary->safe_psql('postgres',
	q{SELECT md5(string_agg(to_jsonb(t)::text, ',' ORDER BY id)) FROM public.t});
is( $sub->safe_psql(
		'postgres',
		q{SELECT md5(string_agg(r::text, ',' ORDER BY (r->>'id')::bigint))
		    FROM pgrpl.table_as_of('s', 'public.t') r}),
	$table, 'table_as_of equals the primary');

# ------------------------- 5. logical_decoding_work_mem of the walsender --

my $plain = pgrpl_init_primary('plain');
my $plain_conn = pgrpl_sub_connstr($plain);
$plain->safe_psql(
	'postgres', q{
	CREATE TABLE public.w (id bigint PRIMARY KEY, v text);
	CREATE PUBLICATION pub FOR TABLE public.w;
});
$sub->safe_psql(
	'postgres', qq{
	SELECT pgrpl.create_subscription('d', '$plain_conn', ARRAY['pub'], copy_data => false);
	SELECT pgrpl.create_subscription('k',
	    '$plain_conn options=''-c logical_decoding_work_mem=64MB''', ARRAY['pub'], copy_data => false);
});
pgrpl_wait_state($sub, $_, 'streaming') for qw(d k);
# About 15MB of decoded changes: more than 4MB, less than 64MB.
$plain->safe_psql('postgres',
	q{INSERT INTO public.w SELECT g, repeat('w', 100) FROM generate_series(1, 60000) g});
my $plain_lsn = pgrpl_primary_lsn($plain);
pgrpl_wait_lsn($sub, $_, $plain_lsn) for qw(d k);
ok( $plain->poll_query_until(
		'postgres',
		q{SELECT count(*) = 2 FROM pg_stat_replication_slots WHERE slot_name IN ('d', 'k') AND total_txns > 0}),
	'both slots decoded the transaction');
is( $plain->safe_psql(
		'postgres',
		q{SELECT string_agg(slot_name || ':' || (stream_txns > 0) || ',' || (spill_txns > 0), ' ' ORDER BY slot_name)
		    FROM pg_stat_replication_slots WHERE slot_name IN ('d', 'k')}),
	'd:true,false k:false,false',
	'streamed from 4MB on by default, not with 64MB from the conninfo');
is( $sub->safe_psql(
		'postgres',
		q{SELECT (SELECT count(*) FROM pgrpl.changes('d')) || ',' || (SELECT count(*) FROM pgrpl.changes('k'))}),
	'60000,60000', 'both captured the transaction whole');

done_testing();
