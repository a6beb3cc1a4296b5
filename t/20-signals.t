# scripts/test: alone (load, timing or rate assertions: no other test beside it)
# The process model under signals: reload under load without a failed request,
# a rejected reload, a killed worker, log reopening, graceful stop with a slow
# request in flight, and worker_processes auto.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use MailerdTest qw(wait_for slurp);
use IO::Socket::INET;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);

my $t = MailerdTest->new;
my $dir = $t->dir;
my %conf = (http => { debug_endpoints => 'on', keepalive_timeout => '30s' });
$t->start(%conf);

# MAILERD_NO_WRK=1 forces the Perl clients (to test them where wrk is installed).
sub has_wrk { !$ENV{MAILERD_NO_WRK} && system('sh', '-c', 'command -v wrk >/dev/null 2>&1') == 0 }

# --- load generators -------------------------------------------------------------
# Each returns a handle; load_finish(handle) waits and returns
# {requests => N, errors => N, detail => text}. errors counts every request that did
# not get a 2xx answer: refused or reset connections, timeouts, other statuses.

sub wrk_start {
    my ($secs) = @_;
    my $out = "$dir/wrk.out";
    my $pid = fork // die;
    if ($pid == 0) {
        open(STDOUT, '>', $out); open(STDERR, '>&', \*STDOUT);
        exec('wrk', '-t1', '-c8', "-d${secs}s", '--timeout', '5s', $t->url . '/health') or exit 127;
    }
    return { pid => $pid, out => $out, kind => 'wrk' };
}

sub wrk_finish {
    my ($h) = @_;
    waitpid($h->{pid}, 0);
    my $o = slurp($h->{out});
    my ($n) = $o =~ /(\d+) requests in /;
    my $errors = 0;
    if ($o =~ /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/) {
        $errors += $1 + $2 + $3 + $4;
    }
    $errors += $1 if $o =~ /Non-2xx or 3xx responses: (\d+)/;
    $errors = 1 unless defined $n;
    return { requests => $n // 0, errors => $errors, detail => $o };
}

# The fallback: N forked clients, each a keep-alive connection sending GET /health
# back to back; a "Connection: close" answer means reconnect, anything else that is
# not a complete 200 is a failure.
sub perl_load_start {
    my ($secs, $n) = @_;
    my @kids;
    for my $i (1 .. ($n // 4)) {
        my $pid = fork // die;
        if ($pid == 0) {
            my ($ok, $bad, @why) = (0, 0);
            my $end = time + $secs;
            my $sock;
            while (time < $end) {
                $sock //= $t->connect;
                unless ($sock) { $bad++; push @why, "connect: $!"; sleep 0.01; next }
                print $sock "GET /health HTTP/1.1\r\nHost: t\r\n\r\n";
                my ($r) = MailerdTest::read_responses($sock, 1, 5);
                if ($r && $r->{status} == 200) {
                    $ok++;
                } else {
                    $bad++;
                    push @why, $r ? "status $r->{status}" : "no response";
                }
                if (!$r || ($r->{headers}{connection} // '') =~ /close/i) {
                    close $sock;
                    undef $sock;
                }
            }
            open(my $fh, '>', "$dir/load.$i") or die;
            print $fh "$ok $bad @why[0 .. ($#why < 4 ? $#why : 4)]\n";
            close $fh;
            POSIX::_exit(0);
        }
        push @kids, [$pid, $i];
    }
    return { kids => \@kids, kind => 'perl' };
}

sub perl_load_finish {
    my ($h) = @_;
    my ($ok, $bad, $detail) = (0, 0, '');
    for my $k (@{ $h->{kids} }) {
        waitpid($k->[0], 0);
        my $l = slurp("$dir/load.$k->[1]");
        my ($o, $b, $why) = $l =~ /^(\d+) (\d+) ?(.*)$/ or do { $bad++; next };
        $ok += $o;
        $bad += $b;
        $detail .= "client $k->[1]: $why\n" if $b;
    }
    return { requests => $ok + $bad, errors => $bad, detail => $detail };
}

sub load_start { has_wrk() ? wrk_start(@_) : perl_load_start(@_) }
sub load_finish { $_[0]{kind} eq 'wrk' ? wrk_finish($_[0]) : perl_load_finish($_[0]) }

sub health_ok { my $r = eval { $t->request('GET', '/health') }; $r && $r->{status} == 200 }

sub entries_matching {
    my ($re, %o) = @_;
    return grep { ($_->{msg} // '') =~ $re && (!$o{level} || ($_->{level} // '') eq $o{level}) }
        $t->error_log_entries;
}

sub pids_changed {
    my (@before) = @_;
    my %old = map { $_ => 1 } @before;
    my @now = $t->worker_pids;
    return (@now == @before && !grep { $old{$_} } @now) ? \@now : undef;
}

# --- (1) reload under load: zero failed requests, new pids, new log level ------------

my @gen1 = $t->worker_pids;
is(scalar @gen1, 2, 'two workers at start');
ok(!entries_matching(qr/^worker started$/, level => 'debug'),
   'no debug lines at level info');

diag('load generator: ' . (has_wrk() ? 'wrk' : 'forked perl clients'));
my $load = load_start(4);
# Reload once the load is actually flowing.
ok(wait_for(sub { length($t->access_log) > 2000 }, 5), 'load is flowing before the reload');
$t->write_conf($t->conf_text(%conf, main => { error_log => 'logs/error.log debug' }));
$t->signal('HUP');
my $gen2 = wait_for(sub { pids_changed(@gen1) }, 15);
ok($gen2, 'SIGHUP replaced every worker') or diag("before @gen1, now @{[ $t->worker_pids ]}");
my $res = load_finish($load);
cmp_ok($res->{requests}, '>', 100, "load sent requests ($res->{requests})");
is($res->{errors}, 0, 'no request failed during the reload') or diag($res->{detail});
my %new = map { $_ => 1 } @{ $gen2 // [] };
ok(wait_for(sub { grep { $new{ $_->{pid} // 0 } } entries_matching(qr/^worker started$/, level => 'debug') }, 5),
   'new workers log at the new level debug');
ok(!grep({ $_->{pid} && ($_->{pid} == $gen1[0] || $_->{pid} == $gen1[1]) }
         entries_matching(qr/^worker started$/, level => 'debug')),
   'old workers never logged at debug');
ok(wait_for(sub { !grep { kill 0, $_ } @gen1 }, 15), 'old workers exited');
ok(entries_matching(qr/^configuration reloaded/), 'the master logs the reload');

# --- (2) an invalid config on SIGHUP is rejected; the same workers keep serving -----

my @gen2 = $t->worker_pids;
my $good = $t->conf_text(%conf, main => { error_log => 'logs/error.log debug' });
my $badtext = $good;
$badtext =~ s/^http \{\n/http {\n    no_such_directive 1;\n/m or die;
my $badline = 1 + (() = substr($badtext, 0, index($badtext, 'no_such_directive')) =~ /\n/g);
$t->write_conf($badtext);
$t->signal('HUP');
my $conf_file = "$dir/mailerd.conf";
ok(wait_for(sub { entries_matching(qr/\Q$conf_file\E:$badline:/, level => 'error') }, 10),
   "the rejected reload is logged at error with $conf_file:$badline");
ok(health_ok(), 'requests are still answered');
is_deeply([$t->worker_pids], \@gen2, 'the same workers keep serving');
$t->write_conf($good);

# --- listeners across reloads -----------------------------------------------------------
# An added address serves after the reload; a removed one is closed once the old
# workers are gone (no new worker may keep it open, or clients would hang on it);
# an address that cannot be bound rejects the reload.

sub get_on_port {
    my ($port) = @_;
    my $s = $t->connect(port => $port) or return undef;
    print $s "GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    my ($r) = MailerdTest::read_responses($s, 1, 5);
    return $r;
}

my $port2 = MailerdTest::free_port();
my %two = (%conf, main => { error_log => 'logs/error.log debug' },
           http => { %{ $conf{http} }, listen => ['127.0.0.1:' . $t->port, "127.0.0.1:$port2"] });
my @before = $t->worker_pids;
$t->write_conf($t->conf_text(%two));
$t->signal('HUP');
ok(wait_for(sub { pids_changed(@before) }, 15), 'reload adding a listener');
my $r2 = get_on_port($port2);
ok($r2 && $r2->{status} == 200, 'the added address serves');
ok(health_ok(), 'the kept address serves');

@before = $t->worker_pids;
$t->write_conf($good);
$t->signal('HUP');
ok(wait_for(sub { pids_changed(@before) && !grep { kill 0, $_ } @before }, 15),
   'reload removing it; old workers gone');
ok(!IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port2, Proto => 'tcp', Timeout => 2),
   'the removed address refuses connections');
ok(health_ok(), 'the kept address still serves');

my $port3 = MailerdTest::free_port();
my $squat = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port3, Listen => 1,
                                  Proto => 'tcp') or die "squat: $!";
@before = $t->worker_pids;
$t->write_conf($t->conf_text(%conf, main => { error_log => 'logs/error.log debug' },
    http => { %{ $conf{http} }, listen => ['127.0.0.1:' . $t->port, "127.0.0.1:$port3"] }));
$t->signal('HUP');
ok(wait_for(sub { entries_matching(qr/bind\(\) to 127\.0\.0\.1:$port3 failed/, level => 'error') }, 10),
   'a reload whose address is taken is rejected with the bind error');
ok(wait_for(sub { entries_matching(qr/^reload rejected: cannot open the listeners/, level => 'error') }, 5),
   '... and says the reload was rejected');
is_deeply([$t->worker_pids], \@before, 'the running workers stay');
ok(health_ok(), 'and serve');
close $squat;
$t->write_conf($good);

# --- (4) SIGKILL a worker: replaced, counted, still serving -----------------------------

@gen2 = $t->worker_pids;
my $victim = $gen2[0];
kill 'KILL', $victim;
my $gen3 = wait_for(sub {
    my @now = $t->worker_pids;
    (@now == 2 && !grep { $_ == $victim } @now) ? \@now : undef;
}, 10);
ok($gen3, 'a killed worker is replaced') or diag("now: @{[ $t->worker_pids ]}");
ok(grep({ $_ == $gen2[1] } @{ $gen3 // [] }), 'the other worker is untouched');
ok(wait_for(sub { entries_matching(qr/^worker $victim exited on signal 9$/, level => 'error') }, 5),
   'the death is logged at level error');
my $all_ok = 1;
$all_ok &&= health_ok() for 1 .. 10;
ok($all_ok, 'requests keep being answered');
my $m = $t->request('GET', '/metrics');
like($m->{body}, qr/^mailerd_worker_restarts_total 1$/m, '/metrics counts one worker restart');

# A replacement that dies at once is respawned after a back-off, not in a tight
# loop. (Killed again until one is caught young, so a slow host cannot flake this.)
my ($kills, $fresh, $looping) = (1, undef, undef);
for (1 .. 3) {
    ($fresh) = grep { $_ != $gen2[1] } $t->worker_pids;
    last unless $fresh;
    kill 'KILL', $fresh;
    $kills++;
    $looping = wait_for(sub { entries_matching(qr/^worker in slot \d+ is crash-looping, respawning in/,
                                               level => 'warn') }, 1);
    last if $looping;
    wait_for(sub { my @w = $t->worker_pids; @w == 2 && !grep { $_ == $fresh } @w }, 10);
}
ok($looping, 'a worker that lived under a second is respawned with a delay');
ok(wait_for(sub { my @w = $t->worker_pids; @w == 2 && !grep { $_ == ($fresh // 0) } @w }, 10),
   '... and comes back');
like($t->request('GET', '/metrics')->{body}, qr/^mailerd_worker_restarts_total $kills$/m,
     "/metrics counts $kills restarts");

# --- (6) SIGUSR1 reopens the logs in the master and every worker -------------------------

rename("$dir/logs/error.log", "$dir/logs/error.log.old") or die;
rename("$dir/logs/access.log", "$dir/logs/access.log.old") or die;
$t->signal('USR1');
my %want = map { $_ => 1 } ($t->pid, $t->worker_pids);
ok(wait_for(sub {
    my %seen = map { ($_->{pid} // 0) => 1 } entries_matching(qr/^logs reopened$/);
    !grep { !$seen{$_} } keys %want;
}, 10), 'master and workers write to the new error log');
ok(health_ok(), 'a request after the reopen');
ok(wait_for(sub { $t->access_log =~ m{/health} }, 5), 'the access line lands in the new access log');
ok(!-e "$dir/logs/access.log.old" || slurp("$dir/logs/access.log.old") !~ /logs reopened/,
   'nothing about the reopen in the old file');

# --- (3) SIGQUIT with a slow request in flight ---------------------------------------

my $slow = $t->connect or die;
print $slow "GET /debug/sleep?ms=1500 HTTP/1.1\r\nHost: t\r\n\r\n";
# Wait until a worker holds the request (two open connections: it and /metrics').
ok(wait_for(sub {
    my $r = eval { $t->request('GET', '/metrics') } or return 0;
    my ($n) = $r->{body} =~ /^mailerd_http_connections_open (\d+)/m;
    ($n // 0) >= 2;
}, 5), 'the slow request is in flight');
my $t0 = time;
$t->signal('QUIT');
my ($resp) = MailerdTest::read_responses($slow, 1, 10);
ok($resp && $resp->{status} == 200, 'the in-flight request completes with 200 after SIGQUIT')
    or diag(explain $resp);
cmp_ok(time - $t0, '<', 5, 'within its own duration, not a timeout');
like($resp->{headers}{connection} // '', qr/close/i, '... with Connection: close');
$t->stop;
ok(!-e "$dir/mailerd.pid", 'the pid file is removed');

# --- (5) worker_processes auto ------------------------------------------------------

my $ncpu = `getconf _NPROCESSORS_ONLN 2>/dev/null`;
chomp $ncpu;
$ncpu ||= 1;
my $auto = MailerdTest->new;
$auto->start(main => { worker_processes => 'auto' });
ok(wait_for(sub { my @w = $auto->worker_pids; @w == $ncpu }, 10),
   "worker_processes auto starts $ncpu workers") or diag("workers: @{[ $auto->worker_pids ]}");
ok(grep({ ($_->{msg} // '') =~ /started with $ncpu workers/ } $auto->error_log_entries),
   'the master logs the worker count');
$auto->stop;

done_testing;
