# t/028_tcp_pacing.pl — pacing a TCP stream from a nearby primary.
#
# The worker caps its receive window and naps longer on a busy stream when
# the primary is reached over TCP with a short round trip
# (pgrpl.tcp_pacing, see pgrpl_stream_pace).  Checked:
#  - over TCP on loopback the session is paced (its DEBUG1 line), and a
#    backlog of many small transactions plus a large one is captured
#    whole, exactly once;
#  - with pgrpl.tcp_pacing = off the next session is not paced, and
#    captures the same way;
#  - over the Unix socket no session is paced;
#  - the writer writes long batches over TCP, short ones over the Unix
#    socket (pgrpl_writer_set_short_batches);
#  - a paced stream is read only when the receive queue runs dry, any
#    other also while the worker is busy (pgrpl_stream_decide).
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PgrplTest;

my $primary = pgrpl_init_primary('primary',
	conf => "listen_addresses = '127.0.0.1'\n");
my $sub = pgrpl_init_subscriber('subscriber');
my $port = $primary->port;
my $tcp = "host=127.0.0.1 port=$port dbname=postgres";
my $unix = pgrpl_sub_connstr($primary);

my $hba = $primary->data_dir . '/pg_hba.conf';
my $old_hba = slurp_file($hba);
open(my $fh, '>', $hba) or die "cannot write $hba: $!";
print $fh "host all all 127.0.0.1/32 trust\n"
  . "host replication all 127.0.0.1/32 trust\n"
  . $old_hba;
close $fh;
$primary->reload;

$primary->safe_psql(
	'postgres', q{
	CREATE TABLE public.p (id int PRIMARY KEY, v text NOT NULL);
	CREATE PUBLICATION pub FOR TABLE public.p;
});

my $paced = qr/pgrpl: pacing the stream \(minimum round trip \d+ us, window 131072 bytes\)/;
my $next_id = 1;

# A backlog built while the subscription is disabled (2000 transactions of
# one insert, then one of 20000 inserts), then drained at once: the worker
# keeps finding the socket dry in the middle of groups.  Returns the
# number of rows added.
sub backlog
{
	my ($name) = @_;
	$sub->safe_psql('postgres', "SELECT pgrpl.disable_subscription('$name')");
	my $first = $next_id;
	$primary->safe_psql(
		'postgres', qq{
		DO \$\$
		BEGIN
			FOR i IN $first..$first + 1999 LOOP
				INSERT INTO public.p VALUES (i, md5(i::text));
				COMMIT;
			END LOOP;
		END
		\$\$;
		INSERT INTO public.p SELECT g, md5(g::text)
		  FROM generate_series($first + 2000, $first + 21999) g;
	});
	$next_id += 22000;
	$sub->safe_psql('postgres', "SELECT pgrpl.enable_subscription('$name')");
	return 22000;
}

# The log of $name holds every inserted row exactly once.
sub check_rows
{
	my ($name, $rows, $what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	pgrpl_wait_lsn($sub, $name, pgrpl_primary_lsn($primary), "$what: caught up");
	is( $sub->safe_psql(
			'postgres', qq{
		SELECT count(*) || '/' || count(DISTINCT new->>'id')
		  FROM pgrpl.changes('$name') WHERE op = 'INSERT'}),
		"$rows/$rows", "$what: every row captured once");
}

# 1. TCP, pacing on (the default).
my $log_start = -s $sub->logfile;
$sub->safe_psql('postgres',
	"SELECT pgrpl.create_subscription('tcp', '$tcp', ARRAY['pub'], copy_data => false)");
my $rows = backlog('tcp');
check_rows('tcp', $rows, 'tcp, paced');
my $log = slurp_file($sub->logfile, $log_start);
like($log, $paced, 'a TCP stream from a loopback primary is paced');
like($log, qr/pgrpl: writing long batches/, 'over TCP the writer writes long batches');
unlike($log, qr/pgrpl: writing short batches/, 'over TCP no session writes short batches');
like($log, qr/pgrpl: writing long batches, reading the socket when the queue runs dry/,
	'a paced stream is read when the queue runs dry');
unlike($log, qr/reading the socket while busy/, 'no paced session reads while busy');

# 2. TCP, pacing off: the next session is not paced.
$sub->append_conf('postgresql.conf', "pgrpl.tcp_pacing = off\n");
$sub->reload;
$log_start = -s $sub->logfile;
$rows += backlog('tcp');
check_rows('tcp', $rows, 'tcp, not paced');
$log = slurp_file($sub->logfile, $log_start);
unlike($log, $paced, 'with pgrpl.tcp_pacing = off the stream is not paced');
like($log, qr/pgrpl: writing long batches, reading the socket while busy/,
	'a stream not paced is read while busy');

# 3. The Unix socket: never paced, pacing on or not.
$sub->append_conf('postgresql.conf', "pgrpl.tcp_pacing = on\n");
$sub->reload;
$sub->safe_psql('postgres', "SELECT pgrpl.drop_subscription('tcp')");
$log_start = -s $sub->logfile;
$sub->safe_psql('postgres',
	"SELECT pgrpl.create_subscription('unix', '$unix', ARRAY['pub'], copy_data => false)");
$rows = backlog('unix');
check_rows('unix', $rows, 'unix socket');
$log = slurp_file($sub->logfile, $log_start);
unlike($log, $paced, 'a stream over the Unix socket is not paced');
like($log, qr/pgrpl: writing short batches/, 'over the Unix socket the writer writes short batches');
unlike($log, qr/pgrpl: writing long batches/, 'over the Unix socket no session writes long batches');
like($log, qr/pgrpl: writing short batches, reading the socket while busy/,
	'over the Unix socket the stream is read while busy');

done_testing();
