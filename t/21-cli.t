# The command line: -v, -h, -t, bad usage, -s against a running master and
# against none, and a second start on the same pid file.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use MailerdTest qw(wait_for slurp);

my $t = MailerdTest->new;
my $dir = $t->dir;

# --- -v, -h, bad usage -------------------------------------------------------------

my ($rc, $out) = $t->run_cmd('-v');
is($rc, 0, '-v exits 0');
like($out, qr/^mailerd version \d+\.\d+\.\d+$/m, '-v prints the version');
for my $lib ('libev \d+\.\d+', 'llhttp \d+\.\d+\.\d+', 'hiredis \d+\.\d+\.\d+',
             'c-ares \d+\.\d+\.\d+', 'OpenSSL \d+\.\d+', 'libpq \d+\.\d+',
             'jansson \d+\.\d+', 'libsystemd (?:yes|no)') {
    like($out, qr/^\s+$lib/m, "-v names $lib");
}

($rc, $out) = $t->run_cmd('-h');
is($rc, 0, '-h exits 0');
like($out, qr/usage: mailerd/, '-h prints usage');

($rc, $out) = $t->run_cmd('-x');
is($rc, 2, 'an unknown option exits 2');
like($out, qr/unknown option -x.*usage:/s, '... with a message and the usage');
($rc, $out) = $t->run_cmd('-c');
is($rc, 2, 'a missing option argument exits 2');
($rc, $out) = $t->run_cmd('-s', 'restart', '-c', "$dir/none.conf");
is($rc, 2, 'an unknown -s signal exits 2');
like($out, qr/invalid signal "restart"/, '... and names it');
($rc, $out) = $t->run_cmd('extra');
is($rc, 2, 'a stray argument exits 2');

# --- -t --------------------------------------------------------------------------

my $conf = $t->write_conf($t->conf_text);
($rc, $out) = $t->run_cmd('-t', '-p', $dir, '-c', $conf);
is($rc, 0, '-t on a valid file exits 0');
like($out, qr/^mailerd: configuration file \Q$conf\E test is successful$/m, '... and says so');

my $bad = $t->write_conf("worker_processes 2;\nhttp {\n    listen 127.0.0.1:1;\n    bogus_directive on;\n}\n",
                         'bad.conf');
($rc, $out) = $t->run_cmd('-t', '-p', $dir, '-c', $bad);
is($rc, 1, '-t on an invalid file exits 1');
like($out, qr/^mailerd: \Q$bad\E:4: .*bogus_directive/m, '... printing FILE:LINE: message');
like($out, qr/^mailerd: configuration file \Q$bad\E test failed$/m, '... and "test failed"');

($rc, $out) = $t->run_cmd('-t', '-p', $dir, '-c', "$dir/missing.conf");
is($rc, 1, '-t on a missing file exits 1');
like($out, qr/missing\.conf/, '... naming the file');

# The default file is PREFIX/conf/mailerd.conf.
mkdir "$dir/conf";
$t->write_conf($t->conf_text, 'conf/mailerd.conf');
($rc, $out) = $t->run_cmd('-t', '-p', $dir);
is($rc, 0, '-t finds PREFIX/conf/mailerd.conf by default');
like($out, qr{\Q$dir\E/conf/mailerd\.conf test is successful}, '... and names it');

# A config error at start: stderr and exit 1, nothing left running.
($rc, $out) = $t->run_cmd('-p', $dir, '-c', $bad);
is($rc, 1, 'starting with an invalid file exits 1');
like($out, qr/\Q$bad\E:4:/, '... with FILE:LINE on stderr');

# --- -s without a running instance -------------------------------------------------

($rc, $out) = $t->run_cmd('-s', 'reload', '-p', $dir, '-c', $conf);
is($rc, 1, '-s reload with no pid file exits 1');
like($out, qr/pid file \S*mailerd\.pid does not exist: mailerd is not running/,
     '... with a clear message');

# A stale pid file (a process that no longer exists).
my $dead = fork // die;
exit 0 if $dead == 0;
waitpid($dead, 0);
open(my $pf, '>', "$dir/mailerd.pid") or die;
print $pf "$dead\n";
close $pf;
($rc, $out) = $t->run_cmd('-s', 'quit', '-p', $dir, '-c', $conf);
is($rc, 1, '-s quit with a stale pid file exits 1');
like($out, qr/no process with pid $dead \(stale pid file/, '... and says the pid is stale');

# A pid file whose number now belongs to another program (the kernel reuses pids):
# -s must not signal it, and a start must not take it for a running mailerd.
my $other = fork // die;
if ($other == 0) { exec 'sleep', '30' or exit 1 }
open($pf, '>', "$dir/mailerd.pid") or die;
print $pf "$other\n";
close $pf;
($rc, $out) = $t->run_cmd('-s', 'quit', '-p', $dir, '-c', $conf);
is($rc, 1, '-s quit with a pid file naming another program exits 1');
like($out, qr/pid $other is not a mailerd process \(stale pid file/, '... and says why');
ok(kill(0, $other) && waitpid($other, POSIX::WNOHANG()) == 0, '... and did not signal that program');
kill 'KILL', $other;
waitpid($other, 0);
open($pf, '>', "$dir/mailerd.pid") or die;
print $pf "$$\n"; # this test (perl): alive, and not mailerd
close $pf;

# --- a running instance --------------------------------------------------------------

# The stale pid file (naming this perl process) must not stop a start.
$t->start;
my $master = $t->pid;
ok(wait_for(sub { slurp("$dir/mailerd.pid") =~ /^$master$/m }, 5), 'pid file holds the master pid');

# A second start on the same pid file refuses and leaves the first alone.
my $t2_port = MailerdTest::free_port();
my $conf2 = $t->write_conf($t->conf_text(http => { listen => "127.0.0.1:$t2_port" }), 'second.conf');
($rc, $out) = $t->run_cmd('-p', $dir, '-c', $conf2);
is($rc, 1, 'a second start with the same pid file exits 1');
like($out, qr/already running as pid $master/, '... naming the running pid');
is(slurp("$dir/mailerd.pid"), "$master\n", '... and the pid file is untouched');
is($t->request('GET', '/health')->{status}, 200, 'the first instance still serves');

# -s reopen: new log files appear after the old ones were moved away.
rename("$dir/logs/error.log", "$dir/logs/error.log.1") or die;
rename("$dir/logs/access.log", "$dir/logs/access.log.1") or die;
($rc, $out) = $t->run_cmd('-s', 'reopen', '-p', $dir, '-c', $conf);
is($rc, 0, '-s reopen exits 0') or diag($out);
ok(wait_for(sub { -s "$dir/logs/error.log" }, 5), 'the error log is reopened');
# Each worker reopens on its own SIGUSR1, after the master: keep asking until
# a request lands in the new file (a worker that has not reopened yet still
# writes to access.log.1).
ok(wait_for(sub {
       $t->request('GET', '/health');
       -e "$dir/logs/access.log" && slurp("$dir/logs/access.log") =~ m{/health};
   }, 5),
   'requests go to the new access log');

# -s reload: a new generation of workers.
my @before = $t->worker_pids;
($rc, $out) = $t->run_cmd('-s', 'reload', '-p', $dir, '-c', $conf);
is($rc, 0, '-s reload exits 0') or diag($out);
ok(wait_for(sub {
    my %old = map { $_ => 1 } @before;
    my @now = $t->worker_pids;
    @now == 2 && !grep { $old{$_} } @now;
}, 15), 'reload replaced the workers') or diag("before @before, now @{[ $t->worker_pids ]}");
is($t->request('GET', '/health')->{status}, 200, 'the new workers serve');

# -s quit: the master exits 0 and removes its pid file.
($rc, $out) = $t->run_cmd('-s', 'quit', '-p', $dir, '-c', $conf);
is($rc, 0, '-s quit exits 0') or diag($out);
my $st = $t->wait_exit(20);
is($st, 0, 'the master exits 0 after -s quit');
ok(!-e "$dir/mailerd.pid", 'the pid file is removed');
my @p = $t->log_problems;
ok(!@p, 'no alert, emerg or sanitizer report in the logs') or diag(join("\n", @p));

# -s stop: the fast way.
$t->start;
($rc, $out) = $t->run_cmd('-s', 'stop', '-p', $dir, '-c', $conf);
is($rc, 0, '-s stop exits 0') or diag($out);
is($t->wait_exit(20), 0, 'the master exits 0 after -s stop');
ok(!-e "$dir/mailerd.pid", 'the pid file is removed');

done_testing;
