# t/001_basic.pl — capture basics across two clusters: the captured log
# matches the primary's DML, inserts equal to_jsonb(row) on the primary, the
# worker comes back by itself after a restart of the subscriber, disable /
# enable, and alter_subscription(publications) picked up by the running
# worker without losing its position.
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
	CREATE TABLE public.t1 (id int PRIMARY KEY, txt text, num numeric,
	                        ts timestamptz, arr int[], js jsonb, flag bool);
	CREATE TABLE public.t2 (id int PRIMARY KEY, v text);
	CREATE TABLE public.unpublished (id int PRIMARY KEY);
	CREATE PUBLICATION pub1 FOR TABLE public.t1;
	CREATE PUBLICATION pub2 FOR TABLE public.t2;
});

# ------------------------------------------------------------ subscribe --

my $start_lsn = $sub->safe_psql('postgres',
	"SELECT pgrpl.create_subscription('s1', '$connstr', ARRAY['pub1'], copy_data => false)");
like($start_lsn, qr{^[0-9A-F]+/[0-9A-F]+$}, 'create_subscription returns an LSN');

is( $primary->safe_psql(
		'postgres',
		"SELECT slot_type || ' ' || plugin || ' ' || (confirmed_flush_lsn >= '$start_lsn')
		   FROM pg_replication_slots WHERE slot_name = 's1'"),
	'logical pgoutput true',
	'the logical slot exists on the primary, at or past the returned LSN');

is( $sub->safe_psql(
		'postgres',
		"SELECT enabled, slot_name, publications, stop_lsn IS NULL
		   FROM pgrpl.subscriptions WHERE name = 's1'"),
	't|s1|{pub1}|t',
	'pgrpl.subscriptions shows the subscription');

pgrpl_wait_state($sub, 's1', 'streaming');
is( $primary->safe_psql(
		'postgres',
		"SELECT count(*) FROM pg_stat_replication WHERE application_name = 's1'"),
	'1',
	'the worker has a walsender on the primary');

# ------------------------------------------------------------------ DML --

# Values are compared as to_jsonb() gives them in UTC.
$primary->safe_psql(
	'postgres', q{
	INSERT INTO public.t1 VALUES
	  (1, 'one', 1.50, '2024-01-02 03:04:05.678+02', '{1,2}', '{"a": [1, {"b": null}]}', true),
	  (2, 'two', -2e-3, 'infinity', '{}', '"str"', false),
	  (3, NULL, 'NaN', NULL, '{NULL,3}', 'null', NULL);
	UPDATE public.t1 SET txt = 'one bis', num = num * 2 WHERE id = 1;
	DELETE FROM public.t1 WHERE id = 2;
	INSERT INTO public.t2 VALUES (1, 'not published yet');
	INSERT INTO public.unpublished VALUES (1);
});
my $primary_xid = $primary->safe_psql(
	'postgres', q{
	BEGIN;
	INSERT INTO public.t1 (id, txt) VALUES (4, 'four');
	SELECT pg_logical_emit_message(true, 'pfx', 'transactional');
	UPDATE public.t1 SET flag = true WHERE id = 3;
	SELECT 'xid=' || txid_current();
	COMMIT;
});
$primary_xid =~ s/.*xid=(\d+).*/$1/s;
$primary->safe_psql('postgres',
	"SELECT pg_logical_emit_message(false, 'pfx', 'not transactional')");
my $lsn = pgrpl_primary_lsn($primary);
pgrpl_wait_lsn($sub, 's1', $lsn, 'wait_for_lsn returns true once caught up');

my $log_query = q{
	SELECT op, coalesce(table_name, message_prefix),
	       coalesce(new->>'id', old->>'id', convert_from(message_content, 'UTF8')),
	       old IS NULL
	  FROM pgrpl.changes('s1') ORDER BY commit_lsn, seq};
is( $sub->safe_psql('postgres', $log_query),
	join("\n",
		'INSERT|t1|1|t',
		'INSERT|t1|2|t',
		'INSERT|t1|3|t',
		'UPDATE|t1|1|t',
		'DELETE|t1|2|f',
		'INSERT|t1|4|t',
		'MESSAGE|pfx|transactional|t',
		'UPDATE|t1|3|t',
		'MESSAGE|pfx|not transactional|t'),
	'the change log holds exactly the published changes, in commit order');

is( $sub->safe_psql(
		'postgres', q{
	SELECT count(DISTINCT commit_lsn), count(*) FILTER (WHERE xid IS NULL),
	       bool_and(lsn <= commit_lsn), bool_and(commit_time IS NOT NULL OR op = 'MESSAGE')
	  FROM pgrpl.changes('s1')}),
	'5|1|t|t',
	'4 transactions + 1 non-transactional message; change LSNs precede commits');

# seq numbers each transaction from 1 without gaps
is( $sub->safe_psql(
		'postgres', q{
	SELECT count(*) FROM (
	  SELECT commit_lsn FROM pgrpl.changes('s1') GROUP BY commit_lsn
	  HAVING min(seq) <> 1 OR max(seq) <> count(*)) x}),
	'0',
	'seq runs 1..n within each transaction');

# The xid of the explicit transaction is the primary's.
is( $sub->safe_psql(
		'postgres',
		"SELECT DISTINCT xid FROM pgrpl.changes('s1') WHERE new->>'id' = '4'"),
	$primary_xid,
	'xid of a captured transaction is the primary\'s');

# new of each INSERT equals to_jsonb(row) on the primary.
my $primary_rows = $primary->safe_psql(
	'postgres', q{
	SET TimeZone = 'UTC';
	SELECT id, to_jsonb(t1) FROM public.t1 WHERE id = 4
	UNION ALL
	SELECT 1, to_jsonb(r) FROM (SELECT 1 AS id, 'one'::text AS txt, 1.50::numeric AS num,
	    '2024-01-02 03:04:05.678+02'::timestamptz AS ts, '{1,2}'::int[] AS arr,
	    '{"a": [1, {"b": null}]}'::jsonb AS js, true AS flag) r
	UNION ALL
	SELECT 2, to_jsonb(r) FROM (SELECT 2 AS id, 'two'::text AS txt, -2e-3::numeric AS num,
	    'infinity'::timestamptz AS ts, '{}'::int[] AS arr, '"str"'::jsonb AS js,
	    false AS flag) r
	UNION ALL
	SELECT 3, to_jsonb(r) FROM (SELECT 3 AS id, NULL::text AS txt, 'NaN'::numeric AS num,
	    NULL::timestamptz AS ts, '{NULL,3}'::int[] AS arr, 'null'::jsonb AS js,
	    NULL::bool AS flag) r
	ORDER BY 1});
my $captured_rows = $sub->safe_psql(
	'postgres', q{
	SELECT (new->>'id')::int, new FROM pgrpl.changes('s1')
	 WHERE op = 'INSERT' ORDER BY 1});
is($captured_rows, $primary_rows, 'new of INSERTs equals to_jsonb(row) on the primary');

# ... and new of the UPDATEs the row as it is now on the primary.
is( $sub->safe_psql(
		'postgres', q{
	SELECT (new->>'id')::int, new FROM pgrpl.changes('s1')
	 WHERE op = 'UPDATE' ORDER BY commit_lsn DESC, 1 LIMIT 1}),
	$primary->safe_psql(
		'postgres',
		"SET TimeZone = 'UTC'; SELECT id, to_jsonb(t1) FROM public.t1 WHERE id = 3"),
	'new of an UPDATE equals to_jsonb(row) after it');
is( $sub->safe_psql(
		'postgres',
		"SELECT old FROM pgrpl.changes('s1') WHERE op = 'DELETE'"),
	'{"id": 2}',
	'old of a DELETE holds the replica identity');

is( $sub->safe_psql(
		'postgres',
		"SELECT transactions, changes FROM pgrpl.stat_subscription WHERE name = 's1'"),
	'4|9',
	'stat_subscription counts transactions and changes');

is( $sub->safe_psql(
		'postgres', q{
	SELECT count(*) FROM pgrpl.transaction t
	 WHERE t.changes <> (SELECT count(*) FROM pgrpl.change c
	                      WHERE c.sub_id = t.sub_id AND c.txn_id = t.txn_id)}),
	'0',
	'pgrpl.transaction.changes matches the change rows');

# ---------------------------------------------- restart of the subscriber --

# A second database with its own subscription: its sub_id is 1 as well,
# only the database tells the two apart.
$sub->safe_psql('postgres', 'CREATE DATABASE db2');
$sub->safe_psql('db2', 'CREATE EXTENSION pgrpl');
$sub->safe_psql('db2',
	"SELECT pgrpl.create_subscription('s2', '$connstr', ARRAY['pub2'], copy_data => false)");
is($sub->safe_psql('db2', 'SELECT sub_id FROM pgrpl.subscription'),
	$sub->safe_psql('postgres', 'SELECT sub_id FROM pgrpl.subscription'),
	'both subscriptions have the same sub_id');
ok( $sub->poll_query_until(
		'db2', "SELECT state = 'streaming' FROM pgrpl.stat_subscription WHERE name = 's2'"),
	's2 streams in db2');
is($sub->safe_psql('postgres', 'SELECT count(*) FROM pgrpl.stat_subscription'),
	'1', 'stat_subscription shows only the subscriptions of its database');

my $count_query = q{SELECT count(*) FROM pgrpl.change};
my $before = $sub->safe_psql('postgres', $count_query);
my $old_pid = pgrpl_stat($sub, 's1', 'pid');

$sub->restart;
pgrpl_wait_state($sub, 's1', 'streaming', 'the worker is back after a restart',
	"pid IS NOT NULL AND pid <> $old_pid");
ok( $sub->poll_query_until(
		'db2', "SELECT state = 'streaming' FROM pgrpl.stat_subscription WHERE name = 's2'"),
	'the worker of db2 is back after the restart as well');
$primary->safe_psql('postgres', "INSERT INTO public.t2 VALUES (3, 'for db2')");
is( $sub->safe_psql(
		'db2',
		"SELECT pgrpl.wait_for_lsn('s2', '" . pgrpl_primary_lsn($primary) . "', '180 s')"),
	't',
	's2 caught up');
is( $sub->safe_psql(
		'db2',
		"SELECT string_agg(table_name || ':' || (new->>'id'), ',') FROM pgrpl.changes('s2')"),
	't2:3',
	's2 captured its publication\'s change made after it was created');

# Nothing is captured twice: the worker resumes after what it has.
$lsn = pgrpl_primary_lsn($primary);
pgrpl_wait_lsn($sub, 's1', $lsn, 'caught up after the restart');
is($sub->safe_psql('postgres', $count_query),
	$before, 'a restart captures nothing again');

$primary->safe_psql('postgres',
	"INSERT INTO public.t1 (id, txt) VALUES (5, 'after restart')");
$lsn = pgrpl_primary_lsn($primary);
pgrpl_wait_lsn($sub, 's1', $lsn, 'caught up with new changes after restart');
is( $sub->safe_psql(
		'postgres', q{
	SELECT string_agg(new->>'id', ',' ORDER BY commit_lsn, seq)
	  FROM pgrpl.changes('s1') WHERE op = 'INSERT'}),
	'1,2,3,4,5',
	'the change after the restart is captured, nothing twice');

# The slot on the primary now stands at or past what we have.
ok( $primary->poll_query_until(
		'postgres',
		"SELECT confirmed_flush_lsn >= '$lsn' FROM pg_replication_slots WHERE slot_name = 's1'"
	),
	'the slot is confirmed up to the captured position');

# ----------------------------------------------------- disable / enable --

$sub->safe_psql('postgres', "SELECT pgrpl.disable_subscription('s1')");
pgrpl_wait_state($sub, 's1', 'disabled', 'disabled subscription', 'pid IS NULL');
ok( $primary->poll_query_until(
		'postgres',
		"SELECT NOT active FROM pg_replication_slots WHERE slot_name = 's1'"),
	'the slot is released on the primary');
is($sub->safe_psql('postgres', "SELECT enabled FROM pgrpl.subscriptions WHERE name = 's1'"),
	'f', 'subscriptions shows enabled = false');

$primary->safe_psql(
	'postgres', q{
	INSERT INTO public.t1 (id, txt) VALUES (6, 'while disabled');
	UPDATE public.t1 SET txt = 'updated while disabled' WHERE id = 6;
});
$lsn = pgrpl_primary_lsn($primary);
is( $sub->safe_psql(
		'postgres', "SELECT pgrpl.wait_for_lsn('s1', '$lsn', '200 ms')"),
	'f',
	'wait_for_lsn times out (false) on a disabled subscription');
is( $sub->safe_psql(
		'postgres', "SELECT count(*) FROM pgrpl.changes('s1') WHERE new->>'id' = '6'"),
	'0',
	'nothing captured while disabled');

$sub->safe_psql('postgres', "SELECT pgrpl.enable_subscription('s1')");
pgrpl_wait_state($sub, 's1', 'streaming', 'enabled again');
pgrpl_wait_lsn($sub, 's1', $lsn, 'caught up after enable');
is( $sub->safe_psql(
		'postgres', q{
	SELECT string_agg(op || ':' || (new->>'txt'), ',' ORDER BY commit_lsn, seq)
	  FROM pgrpl.changes('s1') WHERE new->>'id' = '6'}),
	'INSERT:while disabled,UPDATE:updated while disabled',
	'changes made while disabled are captured once after enable');

# --------------------------------------------- alter_subscription(pubs) --

my $worker_pid = pgrpl_stat($sub, 's1', 'pid');
my $walsender_pid = $primary->safe_psql('postgres',
	"SELECT pid FROM pg_stat_replication WHERE application_name = 's1'");

# A change of t1 the worker may or may not have seen before it reconnects.
$primary->safe_psql('postgres',
	"INSERT INTO public.t1 (id, txt) VALUES (7, 'before alter')");
$sub->safe_psql('postgres',
	"SELECT pgrpl.alter_subscription('s1', publications => ARRAY['pub1', 'pub2'])");
$primary->safe_psql('postgres',
	"INSERT INTO public.t1 (id, txt) VALUES (8, 'during alter')");

is($sub->safe_psql('postgres', "SELECT publications FROM pgrpl.subscriptions WHERE name = 's1'"),
	'{pub1,pub2}', 'subscriptions shows the new publications');

# The worker reconnects with the new list: a new walsender on the primary.
ok( $primary->poll_query_until(
		'postgres',
		"SELECT count(*) = 1 AND bool_and(pid <> $walsender_pid)
		   FROM pg_stat_replication WHERE application_name = 's1'"),
	'the worker reconnected after alter_subscription');
pgrpl_wait_state($sub, 's1', 'streaming', 'streaming after alter',
	"pid = $worker_pid");

$primary->safe_psql(
	'postgres', q{
	INSERT INTO public.t2 VALUES (2, 'published now');
	INSERT INTO public.t1 (id, txt) VALUES (9, 'after alter');
});
$lsn = pgrpl_primary_lsn($primary);
pgrpl_wait_lsn($sub, 's1', $lsn, 'caught up after alter');
is( $sub->safe_psql(
		'postgres', q{
	SELECT string_agg(table_name || ':' || (new->>'id'), ',' ORDER BY commit_lsn, seq)
	  FROM pgrpl.changes('s1') WHERE op = 'INSERT'}),
	't1:1,t1:2,t1:3,t1:4,t1:5,t1:6,t1:7,t1:8,t2:2,t1:9',
	'the running worker captures the new publication, no change lost or doubled');
is(pgrpl_stat($sub, 's1', 'pid'), $worker_pid,
	'the same worker process picked up the new publication list');

# ---------------------------------------------------------------- drop --

$sub->safe_psql('postgres', "SELECT pgrpl.drop_subscription('s1')");
is($sub->safe_psql('postgres', 'SELECT count(*) FROM pgrpl.change'),
	'0', 'drop_subscription removes the captured rows');
is( $primary->safe_psql(
		'postgres', "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 's1'"),
	'0',
	'drop_subscription drops the slot on the primary');
is($sub->safe_psql('postgres', 'SELECT count(*) FROM pgrpl.stat_subscription'),
	'0', 'no subscription left');
is($sub->safe_psql('postgres', "SELECT count(*) FROM pg_replication_origin WHERE roname LIKE 'pgrpl%'"),
	'1', 'the origin of s1 is gone, that of s2 (db2) is left');

# The other database's subscription goes on.
$primary->safe_psql('postgres', "INSERT INTO public.t2 VALUES (4, 'for db2 again')");
is( $sub->safe_psql(
		'db2',
		"SELECT pgrpl.wait_for_lsn('s2', '" . pgrpl_primary_lsn($primary) . "', '180 s')"),
	't',
	's2 still streams after s1 was dropped');

# A new subscription of the same name starts from its new slot: nothing of
# the old one's history comes back.
$sub->safe_psql('postgres',
	"SELECT pgrpl.create_subscription('s1', '$connstr', ARRAY['pub1'], copy_data => false)");
$primary->safe_psql('postgres', "INSERT INTO public.t1 (id, txt) VALUES (10, 'new s1')");
pgrpl_wait_lsn($sub, 's1', pgrpl_primary_lsn($primary), 'the new s1 caught up');
is( $sub->safe_psql(
		'postgres',
		"SELECT string_agg(op || ':' || (new->>'id'), ',') FROM pgrpl.changes('s1')"),
	'INSERT:10',
	'a re-created subscription captures only what follows its creation');
$sub->safe_psql('postgres', "SELECT pgrpl.drop_subscription('s1')");
$sub->safe_psql('db2', "SELECT pgrpl.drop_subscription('s2')");
is( $primary->safe_psql(
		'postgres', "SELECT count(*) FROM pg_replication_slots"),
	'0',
	'all slots dropped on the primary');

$sub->stop;
$primary->stop;
done_testing();
