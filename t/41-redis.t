# Redis client against a real Redis (MailerdStore): the C unit program
# t/unit/redis_t, then its outage mode, driven from here over stdin/stdout.
# Outage phases: Redis stopped (and restarted empty, so scripts are gone) and
# Redis frozen with SIGSTOP (connections stay open, nothing answers). In both
# the C side keeps issuing commands and checks that each fails fast, then that
# the client recovers by itself once Redis is back.
use strict;
use warnings;
use Test::More;
use File::Basename qw(dirname);
use Digest::SHA qw(sha1_hex);
use File::Temp qw(tempfile tempdir);
use IO::Select;
use IPC::Open3;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time);
use MailerdTest qw(bin_path slurp wait_for);
use MailerdStore;

my $bin = dirname(bin_path()) . '/../t/unit/redis_t';
if (!-x $bin) {
    # check_PROGRAMS are built by `make check`; build just this one if needed.
    system('make', '-s', '-C', dirname(bin_path()) . '/..', 't/unit/redis_t');
}
plan skip_all => "no $bin (make check builds it)" unless -x $bin;
plan skip_all => 'redis-server not installed' unless grep { -x "$_/redis-server" } split /:/, $ENV{PATH};

my $redis = MailerdStore->redis;
$ENV{MD_TEST_REDIS_ADDR} = $redis->addr;

# A second Redis on a unix socket only (MailerdStore's listens on TCP).
my $udir = tempdir('mailerd-redis-u-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $upid = fork // die "fork: $!";
if ($upid == 0) {
    open(STDOUT, '>', "$udir/redis.log");
    open(STDERR, '>&', \*STDOUT);
    exec('redis-server', '--port', '0', '--unixsocket', "$udir/r.sock", '--unixsocketperm', '700',
         '--dir', $udir, '--save', '', '--appendonly', 'no', '--daemonize', 'no') or exit 127;
}
if (wait_for(sub { -S "$udir/r.sock" }, 10)) {
    $ENV{MD_TEST_REDIS_UNIX} = "unix:$udir/r.sock";
} else {
    diag('unix-socket redis did not start: ' . slurp("$udir/redis.log"));
}

# Turns the C program's TAP lines into our own results.
sub relay {
    my ($line, $prefix) = @_;
    if ($line =~ /^(not )?ok \d+\s*-?\s*(.*)$/) {
        ok(!defined $1, "$prefix: $2");
    } elsif ($line =~ /^Bail out!/) {
        fail("$prefix: $line");
    } elsif ($line =~ /^#/) {
        note("$prefix $line");
    }
}

sub sanitizer_clean {
    my ($file, $name) = @_;
    my $err = slurp($file);
    my $bad = $err =~ /(AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error)/;
    ok(!$bad, "$name: no sanitizer report") or diag($err);
}

# --- the unit tests ---------------------------------------------------------------

{
    my (undef, $errf) = tempfile('mailerd-redis-t-XXXXXX', TMPDIR => 1, UNLINK => 1);
    my $t0 = time;
    my @out = `'$bin' 2>'$errf'`;
    my $rc = $? >> 8;
    my ($plan) = grep { /^1\.\.\d+/ } @out;
    ok($plan && $plan !~ /SKIP/ && $plan =~ /^1\.\.(\d+)/ && $1 > 50, 'unit program ran its tests')
      or diag(@out);
    relay($_, 'unit') for map { chomp; $_ } @out;
    is($rc, 0, sprintf('unit program exit status 0 (%.1fs)', time - $t0));
    sanitizer_clean($errf, 'unit');
}
kill 'TERM', $upid;
waitpid($upid, 0);

# --- the outage scenario ---------------------------------------------------------

my (undef, $errf) = tempfile('mailerd-redis-o-XXXXXX', TMPDIR => 1, UNLINK => 1);
open(my $errfh, '>', $errf) or die $!;
my $pid = open3(my $to, my $from, '>&' . fileno($errfh), $bin, 'outage');
$to->autoflush(1);
my $sel = IO::Select->new($from);
my $buf = '';

# Reads lines until one is exactly $want (relaying TAP lines); false on timeout/EOF.
sub expect_line {
    my ($want, $timeout) = @_;
    my $deadline = time + $timeout;
    for (;;) {
        while ($buf =~ s/^([^\n]*)\n//) {
            my $l = $1;
            return 1 if $l eq $want;
            relay($l, 'outage');
        }
        my $left = $deadline - time;
        return 0 if $left <= 0;
        next unless $sel->can_read($left);
        my $n = sysread($from, $buf, 4096, length $buf);
        return 0 unless $n;
    }
}

sub proc_state {
    my ($p) = @_;
    my $s = slurp("/proc/$p/stat");
    return $s =~ /^\d+ \(.*\) (\S)/ ? $1 : '';
}

ok(expect_line('@ready', 20), 'outage: client healthy at start');

# Phase 1: Redis stops (connections closed) and comes back empty.
$redis->stop;
ok(!defined $redis->cli('PING'), 'redis is down');
print $to "down\n";
ok(expect_line('@checked', 20), 'phase 1: checked while down');
$redis->start;
# The restarted Redis lost the outage program's script, so its "the script runs"
# check after the recovery goes through the NOSCRIPT fallback. The C side keeps
# calling while we look and may already have reloaded it through that very
# fallback, so flush again to make the precondition certain rather than racy.
is($redis->cli('SCRIPT', 'FLUSH'), 'OK', 'scripts flushed after the restart');
# (No assertion that the script is gone now: the client may reload it through
# the fallback between the FLUSH and any check; what matters is that its calls
# keep working, checked below.)
print $to "up\n";
ok(expect_line('@ready', 30), 'phase 1: client recovered');

# Phase 2: Redis hangs (SIGSTOP): the kernel still accepts connections, nothing answers.
my $rpid = $redis->{pid};
kill 'STOP', $rpid;
ok(wait_for(sub { proc_state($rpid) eq 'T' }, 5), 'redis is frozen');
print $to "down\n";
ok(expect_line('@checked', 20), 'phase 2: checked while frozen');
kill 'CONT', $rpid;
print $to "up\n";
ok(expect_line('@ready', 30), 'phase 2: client recovered');

print $to "quit\n";
close $to;
my $deadline = time + 10;
while (time < $deadline && $sel->can_read($deadline - time)) {
    last unless sysread($from, $buf, 4096, length $buf);
}
relay($_, 'outage') for split /\n/, $buf;
waitpid($pid, 0);
is($? >> 8, 0, 'outage program exit status 0');
close $errfh;
sanitizer_clean($errf, 'outage');

done_testing;
