# scripts/test: alone (load, timing or rate assertions: no other test beside it)
# Two mailerd instances on different ports sharing one PostgreSQL and one
# Redis (issue 5, "What must be shown"):
#   1. a stream of batch sends through both APIs: both instances accept, and
#      both deliver a share (each instance has its own sink directory and
#      journal, so the journals say who sent what); every id delivered;
#   2. a stream of sends through A while B delivers its share; B's master and
#      workers are SIGKILLed at once mid-run, frozen first at a moment B holds
#      entries (a busy host dying; see MailerdTest::freeze_holding). A finishes
#      everything: the entries B held are taken over after queue_lease
#      (XAUTOCLAIM) and the rest by the sweeper. No accepted id missing; the
#      count delivered twice is printed (a message B handed to its sink but did
#      not record can be sent again); nothing left pending in the group.
# queue_lease 3s and queue_recovery_interval 1s keep recovery quick.
# Scale: MAILERD_TWO_N (messages in phase 1, twice as many in phase 2; default 2000),
# MAILERD_CHAOS_WAIT (seconds to wait for the last deliveries, default 90).
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use POSIX ();
use Time::HiRes qw(time sleep);
use MailerdTest qw(wait_for slurp bin_path);

MailerdTest::skip_without_store();

my $asan = do {
    open(my $fh, '<:raw', bin_path()) or die "no mailerd at " . bin_path();
    local $/;
    my $b = <$fh>;
    $b =~ /__asan_init/ ? 1 : 0;
};
my $N = $ENV{MAILERD_TWO_N} // 2000;
my $WAIT = $ENV{MAILERD_CHAOS_WAIT} // 90;
my $LEASE = 3;
note("messages per phase: $N" . ($asan ? ' (ASan build)' : ''));

my %common = (
    workers    => 1,
    pool_size  => 4,
    main_extra => "esp sink {\n    dir sink;\n    journal sink.journal;\n}\n"
      . "queue_lease ${LEASE}s;\nqueue_recovery_interval 1s;\n",
);
my $S = MailerdTest->stack(%common);
my ($pg, $redis) = @{$S}{qw(pg redis)};
my $ta = $S->{t};
my $tb = MailerdTest->stack_peer($S, %common);
my ($K) = @{ $S->{tenants} };
isnt($ta->port, $tb->port, 'two instances on different ports');

my $sender;
END { if ($sender) { kill 'KILL', $sender; waitpid($sender, 0) } }

# Deliveries of one instance: its journal, or its .eml files until the sink
# writes a journal (those cannot show a message delivered twice).
sub deliveries {
    my ($t) = @_;
    my $j = $t->dir . '/sink.journal';
    return MailerdTest::read_journal($j) if -e $j;
    my %d;
    opendir(my $dh, $t->dir . '/sink') or return \%d;
    $d{$_} = 1 for map { /^([0-9a-f-]{36})\.eml$/ ? $1 : () } readdir $dh;
    closedir $dh;
    return \%d;
}

# Waits until every id is in one of the instances' deliveries; returns the
# missing ids and both delivery maps.
sub wait_delivered {
    my ($ids, $label) = @_;
    my ($da, $db, @missing);
    my $deadline = time + $WAIT;
    my $last = time;
    while (1) {
        ($da, $db) = (deliveries($ta), deliveries($tb));
        @missing = grep { !$da->{$_} && !$db->{$_} } @$ids;
        last if !@missing || time > $deadline;
        if (time - $last >= 10) {
            note(sprintf('%s: %d of %d delivered', $label, @$ids - @missing, scalar @$ids));
            $last = time;
        }
        sleep 0.5;
    }
    return (\@missing, $da, $db);
}

sub group_pending {
    my $n = 0;
    for my $s (qw(mailerd:q:transactional mailerd:q:bulk)) {
        my $x = $redis->cli('XPENDING', $s, 'mailerd') // '';
        $n += ($x =~ /^(\d+)/ ? $1 : 0);
    }
    return $n;
}

sub consumers {
    my $txt = '';
    for my $s (qw(mailerd:q:transactional mailerd:q:bulk)) {
        my $c = $redis->cli('XINFO', 'CONSUMERS', $s, 'mailerd') // '(none)';
        $c =~ s/\n/ /g;
        $txt .= "$s consumers: $c\n";
    }
    return $txt;
}

sub run_sender {
    my (%o) = @_;
    $sender = $ta->spawn_sender(key => $K->{key}, batch => 100, deadline => 240, %o);
}

sub finish_sender {
    my ($file) = @_;
    my $s = $sender ? MailerdTest::sender_wait($sender, $file, 180) : slurp("$file.done");
    undef $sender;
    chomp $s;
    return $s;
}

# --- 1. both accept, both deliver a share ---------------------------------------------------
my $f1 = $ta->dir . '/phase1.ids';
run_sender(file => $f1, total => $N, rate => $N / 5, tag => 'p1-', ports => [ $ta->port, $tb->port ]);
my $sum1 = finish_sender($f1);
note("phase 1 client: $sum1");
my @ids1 = MailerdTest::sender_ids($f1);
cmp_ok(scalar @ids1, '>=', $N * 0.99, "phase 1: at least 99 % of $N accepted (" . scalar(@ids1) . ')') or diag($sum1);
{
    # Who accepted: each instance's access log holds its 202s.
    my @acc = map { scalar(grep { m{/v1/messages/batch} && /\b202\b/ } split /\n/, $_->access_log) } $ta, $tb;
    note("batch requests answered 202: A $acc[0], B $acc[1]");
}
my ($miss1, $da, $db) = wait_delivered(\@ids1, 'phase 1');
is(scalar @$miss1, 0, 'phase 1: every accepted id delivered by one of the two')
  or diag("missing " . scalar(@$miss1) . "\n" . MailerdTest::queue_diag($pg, $redis, $miss1)
          . "A:\n" . $ta->log_warnings . "\nB:\n" . $tb->log_warnings);
my ($na, $nb) = (scalar(grep { $da->{$_} } @ids1), scalar(grep { $db->{$_} } @ids1));
diag("phase 1 split: A delivered $na, B delivered $nb of " . scalar(@ids1));
cmp_ok($na, '>=', @ids1 * 0.05, 'instance A delivered a share (at least 5 %)');
cmp_ok($nb, '>=', @ids1 * 0.05, 'instance B delivered a share (at least 5 %)');
ok(-e $ta->dir . '/sink.journal' && -e $tb->dir . '/sink.journal', 'both sinks write their journal')
  or diag('no journal: counted .eml files; duplicates cannot be seen');

# --- 2. B dies mid-run, A finishes everything ----------------------------------------------
my $f2 = $ta->dir . '/phase2.ids';
my $b_before = scalar keys %{ deliveries($tb) };
# As fast as A accepts, so there is a backlog and B is busy when it dies.
run_sender(file => $f2, total => $N * 2, batch => 500, rate => 0, tag => 'p2-', ports => [ $ta->port ]);
my $t0 = time;
# Kill B once it is busy with phase 2 work, at a moment it holds entries: B's
# workers are frozen (SIGSTOP) and the group asked what B's consumers (named
# after their pid) hold; if nothing, they go on and we try again a little later.
# So B dies holding entries (and claims), like a host lost mid-batch.
my $busy = wait_for(sub { scalar(keys %{ deliveries($tb) }) - $b_before >= $N * 0.05 }, 60);
ok($busy, 'B is delivering phase 2 work before it is killed')
  or diag("B delivered " . (scalar(keys %{ deliveries($tb) }) - $b_before) . " in phase 2\n" . $tb->log_warnings);
{
    my $b_held = MailerdTest::freeze_holding($redis, [ $tb->worker_pids ], 15);
    my $sending = $pg->psql("SELECT count(*) FROM messages WHERE status = 'sending'");
    my $pend = consumers();
    my @pids = $tb->kill_all;
    note(sprintf("%.1f s into phase 2: SIGKILLed B (pids %s) holding %d pending entries; B had delivered %d in phase 2;"
                 . " messages 'sending' then: %d", time - $t0, join(' ', @pids), $b_held,
                 scalar(keys %{ deliveries($tb) }) - $b_before, $sending));
    note($pend);
    ok($b_held > 0, 'B died holding entries of the consumer group (so A has something to take over)');
    ok(!grep({ -e "/proc/$_" && slurp("/proc/$_/stat") !~ /^\d+ \(.*\) Z/ } @pids), "B's master and workers are gone");
}
ok(!$tb->log_problems, "no alert or sanitizer report in B's logs up to the kill") or diag(join("\n", $tb->log_problems));

my $sum2 = finish_sender($f2);
note("phase 2 client: $sum2");
my @ids2 = MailerdTest::sender_ids($f2);
cmp_ok(scalar @ids2, '>=', $N * 2 * 0.99, "phase 2: at least 99 % of " . ($N * 2) . " accepted by A (" . scalar(@ids2) . ')')
  or diag($sum2);
my @all = (@ids1, @ids2);
my ($miss2, $da2, $db2) = wait_delivered(\@all, 'after the kill');
is(scalar @$miss2, 0, sprintf('after B was killed every accepted id is delivered (%.0f s after the kill)', time - $t0))
  or diag("missing " . scalar(@$miss2) . " of " . scalar(@all) . "\n" . MailerdTest::queue_diag($pg, $redis, $miss2)
          . consumers() . "A's warnings:\n" . $ta->log_warnings);
my $a_after = scalar(grep { $da2->{$_} && !$db2->{$_} } @ids2);
note("phase 2: A alone delivered $a_after, B delivered " . scalar(grep { $db2->{$_} } @ids2));

my @twice = grep { ($da2->{$_} // 0) + ($db2->{$_} // 0) > 1 } @all;
diag(sprintf('delivered twice: %d of %d (%.3f %%)', scalar @twice, scalar @all, @all ? 100 * @twice / @all : 0));
note('twice: ' . join(' ', map { "$_ A" . ($da2->{$_} // 0) . " B" . ($db2->{$_} // 0) } @twice[0 .. ($#twice < 9 ? $#twice : 9)]))
  if @twice;

ok(wait_for(sub { ($pg->psql("SELECT count(*) FROM messages WHERE status <> 'delivered'") // 1) == 0 }, 15),
   'every stored message ends delivered in PostgreSQL')
  or diag($pg->psql("SELECT id, status, attempts, last_error FROM messages WHERE status <> 'delivered' LIMIT 20"));
# The entries B held were read under its consumer name: A's XAUTOCLAIM takes
# them over after queue_lease and acknowledges them, so none stays pending.
ok(wait_for(sub { group_pending() == 0 }, 3 * $LEASE + 5), 'no entry left pending in the consumer group (B\'s were taken over)')
  or diag("pending: " . group_pending() . "\n" . consumers());

is($ta->stop, 0, 'graceful stop of A');
done_testing;
