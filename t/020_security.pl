# t/020_security.pl — passwords and the server's credentials.
#
# The primary listens on 127.0.0.1 and asks the replication role for a
# SCRAM password.  Checked:
#  - a wrong password: create_subscription fails cleanly (08006) and the
#    password appears nowhere: not in the error, not in
#    stat_subscription.last_error after alter_subscription to a wrong one,
#    not in pgrpl.subscriptions, and not anywhere in the subscriber's server
#    log (debug1, default log_min_error_statement): pgrpl hides the
#    STATEMENT and CONTEXT lines that would quote the call;
#  - sslmode=require against a server without SSL: a clean 08006;
#  - a non-superuser, even with EXECUTE on every pgrpl function and the
#    statement carrying a password, is refused (42501) by every function
#    that connects or makes the worker connect, and the primary sees no
#    connection attempt at all; granted read access, it sees only masked
#    conninfo and password-free errors.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PgrplTest;

my $right = 'Right-Pa55-7f3c1';
my $wrong = 'Wr0ng-Pa55-9d2e4';
my $other = 'Other-Pa55-c81b0';

my $primary = pgrpl_init_primary('primary',
	conf => "listen_addresses = '127.0.0.1'\n"
	  . "password_encryption = 'scram-sha-256'\n"
	  . "log_connections = on\n");
# The test framework logs every statement (log_statement = all); that, like
# log_min_duration_statement, logs a password written in a statement and is
# the administrator's choice.  What pgrpl controls is what is logged at the
# default settings: the error messages and the STATEMENT/CONTEXT lines that
# log_min_error_statement adds to them.
my $sub = pgrpl_init_subscriber('subscriber', conf => "log_statement = none\n");

$primary->safe_psql(
	'postgres', qq{
	CREATE ROLE repl LOGIN REPLICATION PASSWORD '$right';
	CREATE TABLE public.t (id int PRIMARY KEY);
	GRANT SELECT ON public.t TO repl;
	CREATE PUBLICATION pub FOR TABLE public.t;
});
# TCP connections of repl need its password; the test framework keeps
# trust on the Unix socket for itself.
my $hba = $primary->data_dir . '/pg_hba.conf';
my $old_hba = slurp_file($hba);
open(my $fh, '>', $hba) or die "cannot write $hba: $!";
print $fh "host all repl 127.0.0.1/32 scram-sha-256\n" . $old_hba;
close $fh;
$primary->reload;

my $port = $primary->port;
my $tcp = "host=127.0.0.1 port=$port dbname=postgres user=repl";
my $sub_log_start = -s $sub->logfile;
# (The primary logs all statements, our own CREATE ROLE ... PASSWORD too.)
my $primary_log_start = -s $primary->logfile;

# Runs SQL on the subscriber, returns (stdout, stderr) of psql.
sub sub_psql
{
	my ($sql, %opts) = @_;
	my ($out, $err);
	$sub->psql('postgres', $sql, stdout => \$out, stderr => \$err, %opts);
	return ($out, $err);
}

# ------------------------------------------------------- wrong password --

my (undef, $err) = sub_psql(
	"\\set VERBOSITY verbose\n"
	  . "SELECT pgrpl.create_subscription('s1', '$tcp password=$wrong', ARRAY['pub'], copy_data => false)");
like($err, qr/08006/, 'wrong password: connection_failure');
like($err, qr/password authentication failed/, 'wrong password: the error says why');
unlike($err, qr/\Q$wrong\E/, 'the error does not show the password');

# A conninfo that fails to parse and holds a password: no quote of it.
(undef, $err) = sub_psql(
	"SELECT pgrpl.create_subscription('s1', 'password=$wrong host=''x', ARRAY['pub'], copy_data => false)");
like($err, qr/invalid connection string syntax/, 'unparsable conninfo: syntax error');
unlike($err, qr/\Q$wrong\E/, 'unparsable conninfo: password not quoted');

# ------------------------------------------------------- sslmode=require --

(undef, $err) = sub_psql(
	"\\set VERBOSITY verbose\n"
	  . "SELECT pgrpl.create_subscription('s1', '$tcp password=$right sslmode=require', ARRAY['pub'], copy_data => false)"
);
like($err, qr/08006/, 'sslmode=require against a server without SSL: connection_failure');
like($err, qr/SSL/i, 'sslmode=require: the error names SSL');

# ----------------------------------------- right password, then a wrong one --

is( $sub->safe_psql(
		'postgres',
		"SELECT pgrpl.create_subscription('s1', '$tcp password=$right', ARRAY['pub'], copy_data => false) IS NOT NULL"
	),
	't',
	'right password: subscription created');
pgrpl_wait_state($sub, 's1', 'streaming');
$primary->safe_psql('postgres', 'INSERT INTO public.t VALUES (1)');
pgrpl_wait_lsn($sub, 's1', pgrpl_primary_lsn($primary));
is($sub->safe_psql('postgres', "SELECT count(*) FROM pgrpl.changes('s1')"),
	'1', 'it captures over the SCRAM-authenticated connection');
is( $sub->safe_psql('postgres', "SELECT conninfo FROM pgrpl.subscriptions"),
	"user='repl' password=******** dbname='postgres' host='127.0.0.1' port='$port'",
	'pgrpl.subscriptions masks the password');

$sub->safe_psql('postgres',
	"SELECT pgrpl.alter_subscription('s1', conninfo => '$tcp password=$other')");
ok( $sub->poll_query_until(
		'postgres',
		"SELECT last_error LIKE '%password authentication failed%'
		   FROM pgrpl.stat_subscription WHERE name = 's1'"),
	'after alter to a wrong password the worker reports the failure');
my $last_error = $sub->safe_psql('postgres',
	"SELECT last_error FROM pgrpl.stat_subscription WHERE name = 's1'");
unlike($last_error, qr/\Q$other\E/, 'last_error does not show the password');

# ------------------------------------------------------------ non-superuser --

$sub->safe_psql(
	'postgres', q{
	CREATE ROLE mallory LOGIN;
	GRANT USAGE ON SCHEMA pgrpl TO mallory;
	GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA pgrpl TO mallory;
});
# Granted read access, a non-superuser sees the masked conninfo and
# password-free errors only.
$sub->safe_psql('postgres',
	'GRANT SELECT ON pgrpl.subscriptions, pgrpl.stat_subscription TO mallory');
like($sub->safe_psql('postgres',
		"SELECT last_error FROM pgrpl.stat_subscription WHERE name = 's1'"),
	qr/password authentication failed/, 'the worker is still failing');
my ($out) = sub_psql(
	"SELECT conninfo, last_error FROM pgrpl.subscriptions JOIN pgrpl.stat_subscription USING (name)",
	extra_params => [ '-U', 'mallory' ]);
like($out, qr/password=\*{8}/, 'mallory sees the conninfo masked');
unlike($out, qr/\Q$other\E|\Q$right\E/, 'mallory sees no password');
($out, $err) = sub_psql("SELECT * FROM pgrpl.subscription",
	extra_params => [ '-U', 'mallory' ]);
like($err, qr/permission denied/, 'the table with the raw conninfo stays closed');

# Stop the failing worker, so that any connection to the primary from now
# on could only come from the refused calls.
$sub->safe_psql('postgres', "SELECT pgrpl.disable_subscription('s1')");
ok( $sub->poll_query_until(
		'postgres',
		"SELECT pid IS NULL FROM pgrpl.stat_subscription WHERE name = 's1'"),
	'worker stopped');
$primary->safe_psql('postgres', 'SELECT pg_sleep(0.5)');
my $conns_before = () = slurp_file($primary->logfile) =~ /connection received/g;
for my $call (
	"pgrpl.create_subscription('m1', '$tcp password=$right', ARRAY['pub'], copy_data => false)",
	"pgrpl.create_subscription('m1', '$tcp password=$right', ARRAY['pub'], create_slot => false, slot_name => 's1', copy_data => false)",
	"pgrpl.alter_subscription('s1', conninfo => '$tcp password=$wrong')",
	"pgrpl.enable_subscription('s1')",
	"pgrpl.disable_subscription('s1')",
	"pgrpl.set_stop_lsn('s1', NULL)",
	"pgrpl.drop_subscription('s1')",
	"pgrpl.drop_subscription('s1', drop_slot => false)")
{
	my ($out, $e) = ('', '');
	$sub->psql(
		'postgres', "\\set VERBOSITY verbose\nSELECT $call",
		stdout => \$out,
		stderr => \$e,
		extra_params => [ '-U', 'mallory' ]);
	like($e, qr/42501.*permission denied/s, "non-superuser refused: $call")
	  or diag($e);
}
# A moment for any connection attempt to show up in the primary's log.
$primary->safe_psql('postgres', 'SELECT pg_sleep(0.5)');
my $conns_after = () = slurp_file($primary->logfile) =~ /connection received/g;
# (safe_psql itself connects once over the Unix socket.)
is($conns_after - $conns_before, 1,
	'the primary saw no connection attempt from the refused calls');
is( $sub->safe_psql('postgres',
		"SELECT name, enabled, publications FROM pgrpl.subscriptions"),
	's1|f|{pub}',
	'the subscription is untouched');

# -------------------------------------------------------- the server log --

$sub->safe_psql('postgres', "SELECT pgrpl.drop_subscription('s1', drop_slot => false)");
$primary->safe_psql('postgres', "SELECT pg_drop_replication_slot('s1')");
my $log = slurp_file($sub->logfile, $sub_log_start);
like($log, qr/password authentication failed/,
	'the subscriber log has the failures');
for my $pw ($right, $wrong, $other)
{
	unlike($log, qr/\Q$pw\E/, "the subscriber log never shows password $pw");
}
unlike(slurp_file($primary->logfile, $primary_log_start), qr/\Q$right\E|\Q$wrong\E|\Q$other\E/,
	'nor does the primary log');

done_testing();
