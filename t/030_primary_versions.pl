# t/030_primary_versions.pl — primaries of other PostgreSQL major versions
# than the subscriber's: for each, a PG15 subscriber with pgrpl creates a
# subscription (slot created over the replication connection), captures
# inserts, updates, deletes, a TRUNCATE (primaries >= 11: pgoutput had none
# before), logical messages (primaries >= 14: pgoutput had none before, so
# pgrpl must not ask for them) and transactions larger than
# logical_decoding_work_mem (streamed from primaries >= 14), checks the
# protocol pgrpl negotiated, then drops the subscription with its slot.
# A second subscription with two_phase asks for it only from primaries >=
# 15 (protocol 3+), where a prepared transaction is captured at PREPARE;
# from older ones it arrives at COMMIT PREPARED.  origin => 'none' keeps
# out transactions with a replication origin (filtered by 16+ primaries,
# by pgrpl before); failover => true makes a failover slot on 17+ (and is
# refused before); a stored generated column is captured from an 18
# primary that publishes it (publish_generated_columns), absent before.
# copy_data copies a table's existing rows from 14 on (refused before).
#
# The server binaries come from scripts/primaries.sh (run as root; it
# prints their bin dirs), which scripts/test.sh runs before the TAP tests.
# PGRPL_PRIMARY_VERSIONS chooses the majors (e.g. "10 14 18"; default or
# `all`: 10..18); PGRPL_PRIMARIES_DIR is the cache scripts/primaries.sh
# filled (default /var/cache/pgrpl-primaries).  A major whose binaries are
# not there is skipped, and the whole file if none is.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PgrplTest;

my $wanted = $ENV{PGRPL_PRIMARY_VERSIONS} || 'all';
$wanted = '10 11 12 13 14 15 16 17 18' if $wanted eq 'all';
my @majors = grep { /^\d+$/ } split /[\s,]+/, $wanted;

my (%bindir, @missing);
for my $major (@majors)
{
	my $dir = pgrpl_primary_bindir($major);
	if (defined $dir) { $bindir{$major} = $dir; }
	else { push @missing, $major; }
}
my $missing_reason =
  'no server binaries; run `bash scripts/primaries.sh MAJOR` as root';
plan skip_all => "no primary versions chosen (PGRPL_PRIMARY_VERSIONS=$wanted)"
  unless @majors;
plan skip_all => "PostgreSQL @majors: $missing_reason" unless %bindir;

my $sub = pgrpl_init_subscriber('subscriber');

# The START_REPLICATION commands the primary received from the
# subscription's walsender (log_replication_commands is on in the
# framework's configuration).
sub start_commands
{
	my ($primary, $name) = @_;
	my $log = slurp_file($primary->logfile);
	return map { s/.*received replication command: //r }
	  grep { /received replication command: START_REPLICATION SLOT "?$name"? LOGICAL/ }
	  split /\n/, $log;
}

sub test_primary
{
	my ($major) = @_;
	my $name = "v$major";

	my ($install, $version) = pgrpl_primary_install_path($bindir{$major});
	unless (defined $install)
	{
		fail("PostgreSQL $major: $bindir{$major}/postgres --version fails");
		return;
	}
	note "PostgreSQL $version primary, binaries in $bindir{$major}";

	# logical_decoding_work_mem (PG13+) at its minimum, so that the big
	# transactions below are streamed when pgrpl asks for streaming.
	my $primary = pgrpl_init_primary(
		"primary$major",
		install_path => $install,
		conf => "max_prepared_transactions = 5\n"
		  . ($major >= 13 ? "logical_decoding_work_mem = '64kB'\n" : ''));
	is( $primary->safe_psql('postgres',
			"SELECT current_setting('server_version_num')::int / 10000"),
		$major, "$name: the primary runs PostgreSQL $major");

	$primary->safe_psql(
		'postgres', q{
		CREATE TABLE public.t (id int PRIMARY KEY, v text, n numeric,
		                       ts timestamptz, arr int[], js jsonb);
		CREATE TABLE public.big (id int PRIMARY KEY, pad text);
		CREATE PUBLICATION pub FOR TABLE public.t, public.big;
	});

	my $connstr = pgrpl_sub_connstr($primary);
	my $start_lsn = $sub->safe_psql('postgres',
		"SELECT pgrpl.create_subscription('$name', '$connstr', ARRAY['pub'], copy_data => false)");
	like($start_lsn, qr{^[0-9A-F]+/[0-9A-F]+$},
		"$name: create_subscription created the slot on the primary");
	is( $primary->safe_psql(
			'postgres',
			"SELECT slot_type || ' ' || plugin FROM pg_replication_slots WHERE slot_name = '$name'"),
		'logical pgoutput',
		"$name: the slot is a pgoutput slot");

	# Streaming, or an error (which the worker would retry forever).
	$sub->poll_query_until('postgres',
		"SELECT state = 'streaming' OR last_error IS NOT NULL
		   FROM pgrpl.stat_subscription WHERE name = '$name'");
	my $err = pgrpl_stat($sub, $name, 'last_error');
	is($err, '', "$name: the worker streams without an error");
	unless (pgrpl_state($sub, $name) eq 'streaming' && $err eq '')
	{
		diag("$name: " . pgrpl_state($sub, $name) . ": $err");
		for my $cmd (start_commands($primary, $name)) { diag("sent: $cmd"); }
		$sub->safe_psql('postgres', "SELECT pgrpl.drop_subscription('$name')");
		$primary->stop('fast');
		return;
	}

	# The protocol pgrpl negotiated: pgoutput rejects options it does not
	# know, so logical messages and streaming (protocol 2) from PG14 on,
	# protocol 4 with streaming 'parallel' from PG16 on, else protocol 1.
	my ($proto, $opts) =
	    $major >= 16 ? (4, qr/messages 'true'.*streaming 'parallel'/)
	  : $major >= 14 ? (2, qr/messages 'true'.*streaming 'on'/)
	  :                (1, undef);
	my @cmds = start_commands($primary, $name);
	ok(@cmds > 0, "$name: the primary logged START_REPLICATION") or return;
	like($cmds[-1], qr/\(proto_version '$proto',/,
		"$name: pgrpl asks for protocol $proto");
	if (defined $opts)
	{
		like($cmds[-1], $opts, "$name: pgrpl asks for messages and streaming");
	}
	else
	{
		unlike($cmds[-1], qr/messages|streaming/,
			"$name: pgrpl asks for neither messages nor streaming");
	}
	is(pgrpl_stat($sub, $name, 'proto_version'),
		$proto, "$name: stat_subscription shows protocol $proto");

	# ------------------------------------------------------------- DML --
	$primary->safe_psql(
		'postgres', q{
		INSERT INTO public.t VALUES
		  (1, 'one', 1.50, '2024-01-02 03:04:05.678+02', '{1,2}', '{"a": [1, null]}'),
		  (2, 'two', 'NaN', 'infinity', '{}', '"s"'),
		  (3, NULL, NULL, NULL, '{NULL,3}', 'null');
		UPDATE public.t SET v = 'one bis', n = n * 2 WHERE id = 1;
		DELETE FROM public.t WHERE id = 2;
	});
	# Logical messages: none arrive from a primary before 14, whatever pgrpl
	# asks; they are emitted anyway.
	$primary->safe_psql(
		'postgres', q{
		BEGIN;
		INSERT INTO public.t (id, v) VALUES (5, 'five');
		SELECT pg_logical_emit_message(true, 'pfx', 'transactional');
		COMMIT;
	});
	$primary->safe_psql('postgres',
		"SELECT pg_logical_emit_message(false, 'pfx', 'not transactional')");
	$primary->safe_psql('postgres', 'TRUNCATE public.t');
	$primary->safe_psql('postgres',
		"INSERT INTO public.t VALUES (4, 'four', 4.25, '2000-01-01 00:00:00+00', '{4}', '{\"k\": 4}')");
	# Larger than logical_decoding_work_mem: spilled, or streamed with v2
	# (then also a streamed transaction that aborts, and one whose
	# subtransaction aborts after its changes were streamed).
	$primary->safe_psql('postgres',
		"INSERT INTO public.big SELECT g, repeat('x', 100) FROM generate_series(1, 3000) g");
	$primary->safe_psql(
		'postgres', q{
		BEGIN;
		INSERT INTO public.big SELECT g, repeat('x', 100) FROM generate_series(10001, 13000) g;
		ROLLBACK;
		BEGIN;
		INSERT INTO public.big SELECT g, repeat('x', 100) FROM generate_series(20001, 23000) g;
		SAVEPOINT s;
		INSERT INTO public.big SELECT g, repeat('x', 100) FROM generate_series(30001, 33000) g;
		ROLLBACK TO SAVEPOINT s;
		COMMIT;
	});
	$primary->safe_psql('postgres', "INSERT INTO public.t (id, v) VALUES (6, 'six')");

	my $lsn = pgrpl_primary_lsn($primary);
	pgrpl_wait_lsn($sub, $name, $lsn, "$name: caught up to $lsn")
	  or return;

	my @expected = (
		'INSERT|t|1|one',
		'INSERT|t|2|two',
		'INSERT|t|3|',
		'UPDATE|t|1|one bis',
		'DELETE|t|2|',
		'INSERT|t|5|five');
	push @expected, 'MESSAGE|pfx|transactional|' if $major >= 14;
	push @expected, 'MESSAGE|pfx|not transactional|' if $major >= 14;
	push @expected, 'TRUNCATE|t||' if $major >= 11;
	push @expected, 'INSERT|t|4|four', 'INSERT|t|6|six';
	is( $sub->safe_psql(
			'postgres', qq{
		SELECT op, coalesce(table_name, message_prefix),
		       coalesce(new->>'id', old->>'id', convert_from(message_content, 'UTF8')),
		       new->>'v'
		  FROM pgrpl.changes('$name')
		 WHERE table_name IS DISTINCT FROM 'big'
		 ORDER BY commit_lsn, seq}),
		join("\n", @expected),
		"$name: the change log holds exactly the primary's changes, in order");

	# Values as the primary's to_jsonb() gives them (in UTC).
	is( $sub->safe_psql(
			'postgres',
			"SELECT new FROM pgrpl.changes('$name')
			  WHERE op = 'INSERT' AND table_name = 't' AND new->>'id' = '4'"),
		$primary->safe_psql(
			'postgres',
			"SET TimeZone = 'UTC'; SELECT to_jsonb(t) FROM public.t WHERE id = 4"),
		"$name: a captured row equals to_jsonb(row) on the primary");

	is( $sub->safe_psql(
			'postgres', qq{
		SELECT count(*), count(DISTINCT commit_lsn), count(DISTINCT xid),
		       count(*) FILTER (WHERE (new->>'id')::int BETWEEN 1 AND 3000),
		       count(*) FILTER (WHERE (new->>'id')::int BETWEEN 20001 AND 23000),
		       bool_and(op = 'INSERT')
		  FROM pgrpl.changes('$name') WHERE table_name = 'big'}),
		'6000|2|2|3000|3000|t',
		"$name: big transactions: each captured once, nothing rolled back");

	# Streamed from PG14 on: at least the two big committed ones.
	is( pgrpl_stat($sub, $name, 'streamed_transactions >= 2'),
		$major >= 14 ? 't' : 'f',
		"$name: big transactions " . ($major >= 14 ? 'were' : 'were not') . ' streamed');
	is(pgrpl_stat($sub, $name, 'last_error'), '', "$name: no error recorded");

	# ------------------------------------------------------- two-phase --
	my $tp = "${name}tp";
	# (From 17 on also a failover slot: the two go together.)
	$sub->safe_psql('postgres',
		"SELECT pgrpl.create_subscription('$tp', '$connstr', ARRAY['pub'], two_phase => true, copy_data => false"
		  . ($major >= 17 ? ', failover => true' : '') . ')');
	pgrpl_wait_state($sub, $tp, 'streaming', "$tp: a two_phase subscription streams");
	my @tp_cmds = start_commands($primary, $tp);
	if ($major >= 15)
	{
		like($tp_cmds[-1], qr/\(proto_version '[34]',.*two_phase 'on'/,
			"$tp: pgrpl asks for protocol 3+ and two_phase");
	}
	else
	{
		unlike($tp_cmds[-1], qr/two_phase/, "$tp: pgrpl does not ask for two_phase");
	}
	$primary->safe_psql('postgres',
		"BEGIN; INSERT INTO public.t (id, v) VALUES (7, 'prepared'); PREPARE TRANSACTION 'tp7'");
	pgrpl_wait_lsn($sub, $tp, pgrpl_primary_lsn($primary), "$tp: caught up after PREPARE")
	  or return;
	is( $sub->safe_psql(
			'postgres',
			"SELECT count(*) FROM pgrpl.transactions('$tp') WHERE state = 'prepared' AND gid = 'tp7'"),
		$major >= 15 ? '1' : '0',
		"$tp: the prepared transaction is " . ($major >= 15 ? '' : 'not ') . 'captured at PREPARE');
	$primary->safe_psql('postgres', "COMMIT PREPARED 'tp7'");
	pgrpl_wait_lsn($sub, $tp, pgrpl_primary_lsn($primary), "$tp: caught up after COMMIT PREPARED")
	  or return;
	is( $sub->safe_psql(
			'postgres',
			"SELECT count(*) FROM pgrpl.changes('$tp') WHERE new->>'v' = 'prepared'"),
		'1', "$tp: visible once after COMMIT PREPARED");
	is(pgrpl_stat($sub, $tp, 'last_error'), '', "$tp: no error recorded");
	if ($major >= 17)
	{
		is( $primary->safe_psql('postgres',
				"SELECT two_phase AND failover FROM pg_replication_slots WHERE slot_name = '$tp'"),
			't', "$tp: the slot is a two_phase failover slot");
	}
	$sub->safe_psql('postgres', "SELECT pgrpl.drop_subscription('$tp')");

	# ---------------------------------------------------------- origin --
	# origin => 'none': a 16+ primary filters by itself (pgoutput's origin
	# option); from older ones pgrpl drops transactions with an ORIGIN.
	my $on = "${name}on";
	$sub->safe_psql('postgres',
		"SELECT pgrpl.create_subscription('$on', '$connstr', ARRAY['pub'], origin => 'none', copy_data => false)");
	pgrpl_wait_state($sub, $on, 'streaming', "$on: an origin 'none' subscription streams");
	my @on_cmds = start_commands($primary, $on);
	if ($major >= 16)
	{
		like($on_cmds[-1], qr/origin 'none'/, "$on: pgrpl asks the primary for origin 'none'");
	}
	else
	{
		unlike($on_cmds[-1], qr/origin/, "$on: pgrpl does not send origin to a primary before 16");
	}
	my $before = pgrpl_primary_lsn($primary);
	$primary->safe_psql(
		'postgres', q{
		SELECT pg_replication_origin_create('elsewhere');
		SELECT pg_replication_origin_session_setup('elsewhere');
		INSERT INTO public.t (id, v) VALUES (8, 'from elsewhere');
		INSERT INTO public.big SELECT g, 'elsewhere' FROM generate_series(40001, 43000) g;
		SELECT pg_replication_origin_session_reset();
		INSERT INTO public.t (id, v) VALUES (9, 'local');
	});
	$lsn = pgrpl_primary_lsn($primary);
	pgrpl_wait_lsn($sub, $on,   $lsn, "$on: caught up")   or return;
	pgrpl_wait_lsn($sub, $name, $lsn, "$name: caught up") or return;
	is( $sub->safe_psql(
			'postgres',
			"SELECT string_agg(coalesce(origin, '-') || ':' || changes, ',' ORDER BY commit_lsn)
			   FROM pgrpl.transactions('$name') WHERE commit_lsn > '$before'"),
		'elsewhere:1,elsewhere:3000,-:1',
		"$name: origin 'any' captures the transactions of another origin, with their origin");
	is( $sub->safe_psql(
			'postgres',
			"SELECT string_agg(new->>'v', ',' ORDER BY commit_lsn, seq) FROM pgrpl.changes('$on')
			  WHERE new->>'v' IN ('from elsewhere', 'local') OR new->>'pad' = 'elsewhere'"),
		'local', "$on: origin 'none' captures only the transaction without an origin");
	is(pgrpl_stat($sub, $on, 'last_error'), '', "$on: no error recorded");
	$sub->safe_psql('postgres', "SELECT pgrpl.drop_subscription('$on')");

	# -------------------------------------------------------- failover --
	# Failover slots from 17 on; before, asking for one is an error.
	my $fo = "${name}fo";
	my ($ret, $out, $stderr) = $sub->psql('postgres',
		"SELECT pgrpl.create_subscription('$fo', '$connstr', ARRAY['pub'], failover => true, copy_data => false)");
	if ($major >= 17)
	{
		is($ret, 0, "$fo: create_subscription with failover") or diag($stderr);
		is( $primary->safe_psql('postgres',
				"SELECT failover FROM pg_replication_slots WHERE slot_name = '$fo'"),
			't', "$fo: the slot on the primary is a failover slot");
		$sub->safe_psql('postgres', "SELECT pgrpl.alter_subscription('$fo', failover => false)");
		ok( $primary->poll_query_until(
				'postgres',
				"SELECT NOT failover FROM pg_replication_slots WHERE slot_name = '$fo'"),
			"$fo: after alter_subscription(failover => false) the worker made the slot no failover slot");
		pgrpl_wait_state($sub, $fo, 'streaming', "$fo: streams again");
		is(pgrpl_stat($sub, $fo, 'last_error'), '', "$fo: no error recorded");
		$sub->safe_psql('postgres', "SELECT pgrpl.drop_subscription('$fo')");
	}
	else
	{
		isnt($ret, 0, "$fo: create_subscription with failover fails");
		like($stderr, qr/failover slots need a primary of PostgreSQL 17 or later/,
			"$fo: and says why");
		is( $primary->safe_psql('postgres',
				"SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$fo'"),
			'0', "$fo: no slot was left on the primary");
	}

	# ------------------------------------------------ generated columns --
	# A stored generated column is sent by an 18 primary whose publication
	# says publish_generated_columns = stored; before 18 never.
	if ($major >= 12)
	{
		my $gen = "${name}gen";
		$primary->safe_psql('postgres',
			"CREATE TABLE public.gen (id int PRIMARY KEY, a int,
			                         b int GENERATED ALWAYS AS (a * 2) STORED);
			 CREATE PUBLICATION pubgen FOR TABLE public.gen"
			  . ($major >= 18 ? ' WITH (publish_generated_columns = stored)' : ''));
		$sub->safe_psql('postgres',
			"SELECT pgrpl.create_subscription('$gen', '$connstr', ARRAY['pubgen'], copy_data => false)");
		pgrpl_wait_state($sub, $gen, 'streaming', "$gen: streams");
		$primary->safe_psql('postgres', 'INSERT INTO public.gen (id, a) VALUES (1, 21)');
		pgrpl_wait_lsn($sub, $gen, pgrpl_primary_lsn($primary), "$gen: caught up")
		  or return;
		my $row = $sub->safe_psql('postgres',
			"SELECT new FROM pgrpl.changes('$gen') WHERE op = 'INSERT'");
		my $full = $primary->safe_psql('postgres', 'SELECT to_jsonb(g) FROM public.gen g');
		if ($major >= 18)
		{
			is($row, $full, "$gen: new equals to_jsonb() with the generated column");
		}
		else
		{
			is($row, '{"a": 21, "id": 1}',
				"$gen: new lacks the generated column (to_jsonb() gives $full)");
		}
		$sub->safe_psql('postgres', "SELECT pgrpl.drop_subscription('$gen')");
	}

	# -------------------------------------------------------- copy_data --
	# The rows a table already has: copied in chunks merged at watermarks
	# (logical messages) from 14 on; refused before.
	my $cp = "${name}cp";
	$primary->safe_psql('postgres',
		"CREATE TABLE public.pre (id int PRIMARY KEY, v text, ts timestamptz);
		 INSERT INTO public.pre SELECT g, 'row ' || g, '2020-01-01'::timestamptz + g * interval '1 hour'
		   FROM generate_series(1, 12000) g;
		 CREATE PUBLICATION pubpre FOR TABLE public.pre");
	($ret, $out, $stderr) = $sub->psql('postgres',
		"SELECT pgrpl.create_subscription('$cp', '$connstr', ARRAY['pubpre'])");
	if ($major >= 14)
	{
		is($ret, 0, "$cp: create_subscription copies the existing rows") or diag($stderr);
		$primary->safe_psql('postgres', "UPDATE public.pre SET v = 'changed' WHERE id % 1000 = 0");
		ok( $sub->poll_query_until(
				'postgres',
				"SELECT bool_and(state = 'done') FROM pgrpl.stat_snapshot WHERE subscription = '$cp'"),
			"$cp: the copy finished");
		pgrpl_wait_lsn($sub, $cp, pgrpl_primary_lsn($primary), "$cp: caught up") or return;
		is( $sub->safe_psql('postgres',
				"SELECT string_agg(r::text, ',' ORDER BY (r->>'id')::int) FROM pgrpl.table_as_of('$cp', 'public.pre') r"),
			$primary->safe_psql('postgres',
				"SET TimeZone = 'UTC'; SELECT string_agg(to_jsonb(p)::text, ',' ORDER BY id) FROM public.pre p"),
			"$cp: table_as_of equals the primary's table");
		is(pgrpl_stat($sub, $cp, 'last_error'), '', "$cp: no error recorded");
		$sub->safe_psql('postgres', "SELECT pgrpl.drop_subscription('$cp')");
	}
	else
	{
		isnt($ret, 0, "$cp: copy_data is refused");
		like($stderr, qr/copy_data needs a primary of PostgreSQL 14 or later/, "$cp: and says why");
	}

	# ------------------------------------------------------------- drop --
	$sub->safe_psql('postgres', "SELECT pgrpl.drop_subscription('$name')");
	is( $primary->safe_psql(
			'postgres',
			"SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$name'"),
		'0',
		"$name: drop_subscription dropped the slot on the primary");
	$primary->stop('fast');
	return;
}

for my $major (@majors)
{
  SKIP:
	{
		skip "PostgreSQL $major: $missing_reason", 1
		  unless $bindir{$major};
		subtest "PostgreSQL $major primary" => sub { test_primary($major) };
	}
}

done_testing();
