# The PostgreSQL pool (src/store/md_pg.c) against a real, private PostgreSQL:
#  1. the C unit tests (t/unit/pg_t): connect, a pipelined burst of 1,000 queries
#     on one connection matched to their callers in order, prepared statements,
#     batch rollback, SQLSTATEs, statement timeout and watchdog, the wait-queue
#     bound, fail-fast on an unreachable server, shutdown;
#  2. an outage: pg_t in "outage" mode keeps issuing queries while we stop the
#     server under it; calls must fail fast (well under 2 s) while it is down, and
#     the same pool must reconnect by itself once it is back.
# The C side reports TAP; each of its lines becomes a test here.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use Time::HiRes qw(time);
use MailerdTest qw(wait_for bin_path);
use MailerdStore;

my $bin = bin_path();
my $builddir = dirname(dirname($bin));
my $unit = "$builddir/t/unit/pg_t";
# pg_t is a check program: build it on demand if this build dir has not yet.
system('make', '-s', '-C', $builddir, 't/unit/pg_t') unless -x $unit;
plan skip_all => "no $unit (run make check in the build dir)" unless -x $unit;
plan skip_all => 'no PostgreSQL server binaries'
  unless -x (($ENV{MAILERD_PGBIN} // '/usr/lib/postgresql/15/bin') . '/pg_ctl');

my $pg = MailerdStore->pg;
local $ENV{MD_TEST_PG_DSN} = $pg->dsn;

# Reads TAP from a pipe and turns each line into a test here; returns the exit status.
sub relay_tap {
    my ($fh, $name) = @_;
    my ($plan, $n) = (undef, 0);
    while (my $l = <$fh>) {
        chomp $l;
        if ($l =~ /^(not )?ok \d+ - (.*)$/) {
            $n++;
            ok(!$1, "$name: $2");
        } elsif ($l =~ /^1\.\.(\d+)/) {
            $plan = $1;
        } else {
            $l =~ s/^# //;
            note($l);
        }
    }
    close $fh;
    my $rc = $? >> 8;
    ok(defined $plan && $plan == $n, "$name: ran its whole plan ($n of " . ($plan // '?') . ")");
    return $rc;
}

# --- 1. unit tests ----------------------------------------------------------------
{
    open(my $fh, '-|', "$unit 2>&1") or die "run $unit: $!";
    my $rc = relay_tap($fh, 'pg_t');
    is($rc, 0, 'pg_t exited 0');
}

# --- 2. outage: a clean stop (clients get a FATAL first), then a crash-like one ----
for my $mode ('fast', 'immediate') {
    my $dir = tempdir('mailerd-pg-outage-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    my $pid = open(my $fh, '-|', "$unit outage $dir 2>&1") or die "run $unit outage: $!";
    my $fail = sub { diag("outage ($mode): $_[0]"); kill 'KILL', $pid };
    ok(wait_for(sub { -e "$dir/up" }, 20), "outage ($mode): the C side is up and querying")
      or $fail->('never up');
    my $t0 = time;
    $pg->stop($mode);
    note(sprintf 'postgres stopped (%s) in %.2f s', $mode, time - $t0);
    open(my $s, '>', "$dir/stopped") or die $!;
    close $s;
    ok(wait_for(sub { -e "$dir/checked" }, 20), "outage ($mode): the C side measured the outage")
      or $fail->('never checked');
    $pg->start;
    open($s, '>', "$dir/started") or die $!;
    close $s;
    my $rc = relay_tap($fh, "pg_t outage ($mode)");
    is($rc, 0, "pg_t outage ($mode) exited 0");
}

done_testing();
