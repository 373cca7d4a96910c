# t/PgrplTest.pm — helpers shared by pgrpl's TAP tests.
#
# Two clusters per test: a primary (wal_level=logical, publishes) and a
# subscriber (pgrpl preloaded, runs the pgrpl worker that captures the
# primary's stream).  Every wait is bounded: poll_query_until or
# pgrpl.wait_for_lsn with $PostgreSQL::Test::Utils::timeout_default.
package PgrplTest;

use strict;
use warnings;

use Exporter 'import';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();

our @EXPORT = qw(
  pgrpl_init_primary pgrpl_init_subscriber pgrpl_primary_lsn
  pgrpl_wait_lsn pgrpl_wait_state pgrpl_state pgrpl_stat
  pgrpl_sub_connstr pgrpl_log_count pgrpl_stays pgrpl_kill9_all
);

# A primary that allows logical decoding.  %params go to
# PostgreSQL::Test::Cluster->new (e.g. port => ...).
sub pgrpl_init_primary
{
	my ($name, %params) = @_;
	my $conf = delete $params{conf};
	my $node = PostgreSQL::Test::Cluster->new($name, %params);
	$node->init(allows_streaming => 'logical');
	pgrpl_drop_unknown_settings($node);
	# The test framework caps connections at 10 for streaming nodes.
	$node->append_conf('postgresql.conf', "max_connections = 30\n");
	$node->append_conf('postgresql.conf', $conf) if defined $conf;
	$node->start;
	return $node;
}

# A node of another major than the test framework's (install_path given,
# e.g. t/030_primary_versions.pl's primaries): the framework writes the
# settings of its own major into postgresql.conf, and an older server
# refuses to start on one it does not know (PG18's framework writes
# autovacuum_worker_slots, new in 18: "unrecognized configuration
# parameter", FATAL on PostgreSQL 10..17).  Comments out, in the block the
# framework added, every setting the node's postgres does not list in
# --describe-config.  Nothing to do for a node of the framework's own major.
sub pgrpl_drop_unknown_settings
{
	my ($node) = @_;
	my $install = $node->install_path;
	return unless defined $install;
	my $describe = `"$install/bin/postgres" --describe-config 2>/dev/null`;
	return unless $? == 0;
	my %known = map { (split /\t/)[0] => 1 } split /\n/, $describe;
	return unless %known;
	my $file = $node->data_dir . '/postgresql.conf';
	my $ours = 0;
	my (@out, @dropped);
	for my $line (split /\n/, slurp_file($file), -1)
	{
		$ours = 1 if $line =~ /^# Added by PostgreSQL::Test::Cluster/;
		if ($ours && $line =~ /^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=/ && !$known{ lc $1 })
		{
			push @dropped, $1;
			$line = "# (unknown to this server) $line";
		}
		push @out, $line;
	}
	return unless @dropped;
	note 'settings of the test framework unknown to ' . $node->name . "'s server, commented out: @dropped";
	open(my $fh, '>', $file) or die "cannot write $file: $!";
	print $fh join("\n", @out);
	close $fh;
	return;
}

# A subscriber with pgrpl preloaded and the extension installed in the
# database "postgres".
sub pgrpl_init_subscriber
{
	my ($name, %params) = @_;
	my $conf = delete $params{conf};
	my $node = PostgreSQL::Test::Cluster->new($name, %params);
	$node->init;
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'pgrpl'\n"
		  . "max_worker_processes = 16\n"
		  . "log_min_messages = debug1\n");
	$node->append_conf('postgresql.conf', $conf) if defined $conf;
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION pgrpl');
	return $node;
}

# The conninfo a subscriber uses to reach the primary.
sub pgrpl_sub_connstr
{
	my ($primary) = @_;
	return 'host=' . $primary->host . ' port=' . $primary->port
	  . ' dbname=postgres';
}

# The primary's insert position: unlike pg_current_wal_lsn() (the write
# position) it covers WAL not flushed yet, e.g. a non-transactional message
# just emitted, which has no commit record to flush it.  The WAL writer
# flushes it shortly.
sub pgrpl_primary_lsn
{
	my ($primary) = @_;
	return $primary->safe_psql('postgres', 'SELECT pg_current_wal_insert_lsn()');
}

# pgrpl.wait_for_lsn with the framework's default timeout; a test result.
sub pgrpl_wait_lsn
{
	my ($node, $sub, $lsn, $test_name) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $timeout = $PostgreSQL::Test::Utils::timeout_default;
	my $res = $node->safe_psql('postgres',
		"SELECT pgrpl.wait_for_lsn('$sub', '$lsn', '$timeout seconds')");
	is($res, 't', $test_name // "$sub caught up to $lsn")
	  or diag(
		$node->safe_psql(
			'postgres',
			"SELECT * FROM pgrpl.stat_subscription WHERE name = '$sub'"));
	return $res eq 't';
}

# Poll until the subscription's state is $state (with a condition of our own
# if $extra is given, an SQL boolean over the stat_subscription row).
sub pgrpl_wait_state
{
	my ($node, $sub, $state, $test_name, $extra) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $cond = "state = '$state'";
	$cond .= " AND ($extra)" if defined $extra;
	my $ok = $node->poll_query_until('postgres',
		"SELECT $cond FROM pgrpl.stat_subscription WHERE name = '$sub'");
	ok($ok, $test_name // "$sub reaches state $state")
	  or diag(
		$node->safe_psql(
			'postgres',
			"SELECT * FROM pgrpl.stat_subscription WHERE name = '$sub'"));
	return $ok;
}

sub pgrpl_state
{
	my ($node, $sub) = @_;
	return $node->safe_psql('postgres',
		"SELECT state FROM pgrpl.stat_subscription WHERE name = '$sub'");
}

# One column of the subscription's stat_subscription row.
sub pgrpl_stat
{
	my ($node, $sub, $col) = @_;
	return $node->safe_psql('postgres',
		"SELECT $col FROM pgrpl.stat_subscription WHERE name = '$sub'");
}

# Lines of $node's server log from byte $offset on, written by process $pid
# (the test framework's log_line_prefix has "[%p]"), that match $re.
sub pgrpl_log_count
{
	my ($node, $offset, $pid, $re) = @_;
	my $log = slurp_file($node->logfile, $offset);
	return scalar grep { /\[$pid\] / && /$re/ } split /\n/, $log;
}

# Watch the subscription for $seconds (a bounded observation window, e.g.
# to count retries): true if the SQL boolean $cond over its stat_subscription
# row held at every sample (about every 0.5 s).  On failure, diag the row.
sub pgrpl_stays
{
	my ($node, $sub, $seconds, $cond) = @_;
	my $deadline = Time::HiRes::time() + $seconds;
	my $samples = 0;
	while (1)
	{
		my $ok = $node->safe_psql('postgres',
			"SELECT ($cond) IS TRUE FROM pgrpl.stat_subscription WHERE name = '$sub'");
		$samples++;
		if ($ok ne 't')
		{
			diag("after $samples samples: "
				  . $node->safe_psql('postgres',
					"SELECT * FROM pgrpl.stat_subscription WHERE name = '$sub'"));
			return 0;
		}
		last if Time::HiRes::time() >= $deadline;
		# A deliberate observation period, not a wait for a condition.
		select(undef, undef, undef, 0.5);
	}
	return 1;
}

# ------------------------------------------------- other major versions --
#
# Primaries of other PostgreSQL major versions (t/030_primary_versions.pl)
# run server binaries that scripts/primaries.sh unpacked into
# $PGRPL_PRIMARIES_DIR/MAJOR/bin (default /var/cache/pgrpl-primaries): only
# initdb, pg_ctl and postgres, no psql or pg_config.

push @EXPORT, qw(pgrpl_primary_bindir pgrpl_primary_install_path);

# The bin dir of PostgreSQL $major's server binaries, or undef if there are
# none (not fetched).
sub pgrpl_primary_bindir
{
	my ($major) = @_;
	my $cache = $ENV{PGRPL_PRIMARIES_DIR} || '/var/cache/pgrpl-primaries';
	my $bindir = "$cache/$major/bin";
	return (-x "$bindir/postgres" && -x "$bindir/initdb" && -x "$bindir/pg_ctl")
	  ? $bindir
	  : undef;
}

# An install_path for PostgreSQL::Test::Cluster->new made of the server
# binaries in $bindir and the default installation's clients (psql etc.,
# which talk to older and newer servers alike), in a temp dir of the test:
# bin/ has links to both and a pg_config that only knows --version (the
# framework reads the node's version from it); lib/ is empty, as the
# framework puts it first in LD_LIBRARY_PATH and the server binaries find
# their own libraries through their RUNPATH ($ORIGIN/../lib, resolved past
# the links).  Returns (path, version such as "14.23"), or () if $bindir's
# postgres does not run.
sub pgrpl_primary_install_path
{
	my ($bindir) = @_;
	my $out = `"$bindir/postgres" --version 2>&1`;
	return () unless $? == 0 && $out =~ /\(PostgreSQL\) (\d+(?:\.\d+)?)/;
	my $version = $1;
	(my $major = $version) =~ s/\..*//;
	my $clients = `pg_config --bindir`;
	chomp $clients;
	die "pg_config --bindir failed" unless $? == 0 && -d $clients;

	my $dir = PostgreSQL::Test::Utils::tempdir("pg$major");
	mkdir "$dir/bin" or die "mkdir $dir/bin: $!";
	mkdir "$dir/lib" or die "mkdir $dir/lib: $!";
	for my $prog (qw(initdb pg_ctl postgres))
	{
		symlink("$bindir/$prog", "$dir/bin/$prog")
		  or die "symlink $dir/bin/$prog: $!";
	}
	opendir(my $dh, $clients) or die "opendir $clients: $!";
	for my $prog (readdir $dh)
	{
		next if $prog =~ /^\./ || -e "$dir/bin/$prog";
		next if grep { $_ eq $prog } qw(pg_config postmaster);
		symlink("$clients/$prog", "$dir/bin/$prog")
		  or die "symlink $dir/bin/$prog: $!";
	}
	closedir $dh;
	open(my $fh, '>', "$dir/bin/pg_config") or die "$dir/bin/pg_config: $!";
	print $fh "#!/bin/sh\necho 'PostgreSQL $version'\n";
	close $fh;
	chmod(0755, "$dir/bin/pg_config") or die "chmod $dir/bin/pg_config: $!";
	return ($dir, $version);
}

# The postmaster's pid and those of all its children.
sub pgrpl_server_pids
{
	my ($node) = @_;
	my $pm = (split /\n/, slurp_file($node->data_dir . '/postmaster.pid'))[0];
	my @kids;
	for my $stat (glob '/proc/[0-9]*/stat')
	{
		open my $fh, '<', $stat or next;
		my $line = <$fh>;
		close $fh;
		next unless defined $line;
		# pid (comm) state ppid ...
		push @kids, $1 if $line =~ /^(\d+) \(.*\) \S+ (\d+) / && $2 == $pm;
	}
	return ($pm, @kids);
}

# Still there, even as a zombie not yet reaped: the new postmaster would
# take a zombie holding the old pid for a running postmaster.
sub pgrpl_exists_pid
{
	my ($pid) = @_;
	return -e "/proc/$pid";
}

# kill -9 of the postmaster and every process it started, at once; then
# wait until they are all gone, so that the restart finds no process still
# attached to the old shared memory.
sub pgrpl_kill9_all
{
	my ($node) = @_;
	my @pids = pgrpl_server_pids($node);
	note 'SIGKILL to postmaster ' . $pids[0] . ' and ' . (@pids - 1) . ' children';
	kill 'KILL', @pids;
	$node->kill9;    # forgets the pid (signals the dead postmaster again)
	my $t0 = Time::HiRes::time();
	while (grep { pgrpl_exists_pid($_) } @pids)
	{
		die 'processes survive SIGKILL'
		  if Time::HiRes::time() > $t0 + $PostgreSQL::Test::Utils::timeout_default;
		Time::HiRes::usleep(50_000);
	}
	note sprintf('all gone after %.2f s', Time::HiRes::time() - $t0);
}

1;
