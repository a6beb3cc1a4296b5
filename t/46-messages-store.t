# The messages store (src/store/md_messages.c) against a real, private PostgreSQL
# migrated by `mailerd migrate`, without HTTP:
#  1. t/unit/messages_t: group commit (callbacks after COMMIT, rows visible to another
#     connection inside them), idempotency (replay, conflict, concurrent same key,
#     24 h expiry and cleanup), a poisoned unit failing alone, suppressed and scheduled
#     statuses with their events, get/cancel/batches, list pagination and filters,
#     tenant isolation, shutdown flush;
#  2. `messages_t burst`: 5,000 concurrent single-message accepts; the C side counts
#     its flushes, and here the server's own commit counter (pg_stat_database.
#     xact_commit) must have grown far less than 5,000 over the run.
# The C side reports TAP; each of its lines becomes a test here.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use File::Basename qw(dirname);
use Time::HiRes qw(time sleep);
use MailerdTest qw(wait_for bin_path src_dir);
use MailerdStore;

my $bin = bin_path();
my $builddir = dirname(dirname($bin));
my $unit = "$builddir/t/unit/messages_t";
# A check program: build it on demand if this build dir has not yet.
system("make -s -C '$builddir' t/unit/messages_t >/dev/null 2>&1") unless -x $unit;
plan skip_all => "no $unit (run make check in the build dir)" unless -x $unit;
plan skip_all => 'no PostgreSQL server binaries'
  unless -x (($ENV{MAILERD_PGBIN} // '/usr/lib/postgresql/15/bin') . '/pg_ctl');

my $pg = MailerdStore->pg;
local $ENV{MD_TEST_PG_DSN} = $pg->dsn;

# --- schema: the real migrations, through mailerd -------------------------------
{
    my $t = MailerdTest->new;
    my $src = src_dir();
    my $dsn = $pg->dsn;
    $t->write_conf($t->conf_text(main_extra => "postgres {\n    dsn \"$dsn\";\n}\n"
                                             . "migrations_dir $src/migrations;\n"));
    my ($rc, $out) = $t->run_cmd('-p', $t->dir, '-c', $t->dir . '/mailerd.conf', 'migrate');
    is($rc, 0, 'mailerd migrate applied the schema') or diag($out);
    unlike($out, qr/AddressSanitizer|LeakSanitizer|runtime error:/, 'no sanitizer report from migrate');
}

# Reads TAP from a pipe and turns each line into a test here; returns (exit status,
# the comment lines). A sanitizer report anywhere in the output fails.
sub relay_tap {
    my ($fh, $name) = @_;
    my ($plan, $n, @notes, $san) = (undef, 0);
    while (my $l = <$fh>) {
        chomp $l;
        $san = 1 if $l =~ /AddressSanitizer|LeakSanitizer|runtime error:/;
        if ($l =~ /^(not )?ok \d+ - (.*)$/) {
            $n++;
            ok(!$1, "$name: $2");
        } elsif ($l =~ /^1\.\.(\d+)/) {
            $plan = $1;
        } else {
            $l =~ s/^# //;
            push @notes, $l;
            note($l);
        }
    }
    close $fh;
    my $rc = $? >> 8;
    ok(defined $plan && $plan == $n, "$name: ran its whole plan ($n of " . ($plan // '?') . ")");
    ok(!$san, "$name: no sanitizer report");
    return ($rc, @notes);
}

# --- 1. functional -----------------------------------------------------------------
{
    open(my $fh, '-|', "$unit 2>&1") or die "run $unit: $!";
    my ($rc) = relay_tap($fh, 'messages_t');
    is($rc, 0, 'messages_t exited 0');
}

# --- 2. burst: commits counted by the server ------------------------------------------
# Backends publish their counters when they exit and, while they live, when idle
# (at most once a second). Read until two reads a second apart agree, up to the
# psql runs' own commits.
sub xact_commit {
    my $q = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()";
    my $last = $pg->psql($q);
    for (1 .. 10) {
        sleep 1.1;
        my $v = $pg->psql($q);
        return $v if $v - $last <= 3;
        $last = $v;
    }
    return $last;
}
{
    my $before = xact_commit();
    open(my $fh, '-|', "$unit burst 2>&1") or die "run $unit burst: $!";
    my ($rc, @notes) = relay_tap($fh, 'messages_t burst');
    is($rc, 0, 'messages_t burst exited 0');
    my $after = xact_commit();
    my ($flushes) = map { /(\d+) flushes/ ? $1 : () } @notes;
    # The counter also holds the readers' statements and each psql run here: a few dozen.
    my $delta = $after - $before;
    note("5,000 messages: $delta commits on the server, " . ($flushes // '?') . ' flushes');
    ok($delta > 0, "the server counted commits ($delta)");
    ok($delta < 500, "far fewer commits than messages: $delta < 500");
    is($pg->psql("SELECT count(*) FROM messages m JOIN tenants t ON t.id = m.tenant_id WHERE t.name = 't3'"),
       5000, 'all 5,000 rows are there');
}

done_testing();
