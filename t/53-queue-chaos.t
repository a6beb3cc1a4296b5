# scripts/test: alone (load, timing or rate assertions: no other test beside it)
# No loss under chaos (issue 5, "What must be shown"): while a client sends
# 10,000 messages through the batch API in a steady stream, the test
#   (a) SIGKILLs a worker at a moment it holds queue entries (frozen with
#       SIGSTOP until the consumer group shows it holding some; a busy host's
#       worker always does; MAILERD_CHAOS_KILL=random kills it whenever), and
#       the master must replace it,
#   (b) restarts Redis with persistence off (everything in it is gone),
#   (c) restarts PostgreSQL (a fast stop: a clean shutdown, so no committed
#       row is lost by the throwaway test server's synchronous_commit = off),
#   (d) reloads mailerd with SIGHUP (a new generation of workers),
# one after the other at 15/35/55/75 % of the accepted count. The client
# retries what is refused with 5xx/429 or lost on the connection, like a real
# application, and only ids answered with 202 count as accepted.
# Afterwards every accepted id must appear in the sink's journal
# ("<message id> <attempt>" per delivery, duplicates included) and be
# "delivered" in PostgreSQL; the test prints how many were delivered twice and
# fails at 0.1 % or more, and fails if any id is missing (printing the missing
# ids' rows, events and Redis coverage). An attempt interrupted after the sink
# wrote its file (the killed worker's unrecorded sends) is reconciled by the
# next one, which finds the file (md_esp_sink.c); the test prints how many.
#
# queue_lease 3s and queue_recovery_interval 1s keep recovery quick.
# Scale: MAILERD_CHAOS_N (messages, default 10000, ASan builds too),
# MAILERD_CHAOS_RATE (messages/s the client aims at, default N/20),
# MAILERD_CHAOS_WAIT (seconds to wait for the last deliveries, default 60).
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Time::HiRes qw(time sleep);
use MailerdTest qw(wait_for slurp bin_path);

MailerdTest::skip_without_store();

# An ASan build is some times slower: fewer messages unless told otherwise.
my $asan = do {
    open(my $fh, '<:raw', bin_path()) or die "no mailerd at " . bin_path();
    local $/;
    my $b = <$fh>;
    $b =~ /__asan_init/ ? 1 : 0;
};
my $N = $ENV{MAILERD_CHAOS_N} // 10000;
my $RATE = $ENV{MAILERD_CHAOS_RATE} // $N / 20;
my $WAIT = $ENV{MAILERD_CHAOS_WAIT} // 60;
my $WORKERS = 2;
note("messages: $N at ~$RATE/s" . ($asan ? ' (ASan build)' : ''));

my $S = MailerdTest->stack(
    workers    => $WORKERS,
    pool_size  => 4,
    main_extra => "esp sink {\n    dir sink;\n    journal sink.journal;\n}\n"
      . "queue_lease 3s;\nqueue_recovery_interval 1s;\n",
);
my ($t, $pg, $redis) = @{$S}{qw(t pg redis)};
my ($A) = @{ $S->{tenants} };
my $dir = $t->dir;
my $journal = "$dir/sink.journal";
my $idfile = "$dir/accepted.ids";

# Persistence is off (so (b) really loses everything): no RDB, no AOF.
is($redis->cli('CONFIG', 'GET', 'appendonly'), "appendonly\nno", 'redis: appendonly off');
is($redis->cli('CONFIG', 'GET', 'save'), "save\n", 'redis: no RDB snapshots');

my $sender = $t->spawn_sender(file => $idfile, total => $N, batch => 100, rate => $RATE,
                              key => $A->{key}, tag => 'k', deadline => 240);
END { if ($sender) { kill 'KILL', $sender; waitpid($sender, 0) } }
my $t0 = time;

# Deliveries so far: the journal when the sink writes one, else the .eml files
# (which cannot show a message delivered twice: a second write replaces the first).
sub deliveries {
    return MailerdTest::read_journal($journal) if -e $journal;
    my %d;
    opendir(my $dh, "$dir/sink") or return \%d;
    $d{$_} = 1 for map { /^([0-9a-f-]{36})\.eml$/ ? $1 : () } readdir $dh;
    closedir $dh;
    return \%d;
}


# False once the client has exited (it is then reaped and forgotten).
sub sender_alive {
    return 0 unless $sender;
    return 1 if waitpid($sender, POSIX::WNOHANG()) == 0;
    undef $sender;
    return 0;
}

sub accepted { scalar(my @x = MailerdTest::sender_ids($idfile)) }

# Waits until the client has $n ids accepted (or gave up); returns the count.
sub wait_accepted {
    my ($n, $what) = @_;
    my $got = 0;
    wait_for(sub { $got = accepted(); $got >= $n || !sender_alive() }, 120);
    note(sprintf("%.1f s: %d accepted, %d delivered; now: %s", time - $t0, $got,
                 scalar(keys %{ deliveries() }), $what));
    ok($got >= $n, "the stream reached $n accepted before $what") or diag(slurp("$idfile.done"));
    return $got;
}

# When each disruption happened (wall clock), to tell which one a lost message
# belongs to: [name, time].
my @chaos;

# How many of @ids fall after each disruption, by the time $agg (an aggregate
# of the events e of one message) gives: the last event for a missing message,
# the first "sending" for one delivered twice.
sub by_disruption {
    my ($label, $agg, @ids) = @_;
    @ids = @ids[0 .. 1999] if @ids > 2000;
    return '' unless @ids;
    my %at = split /[|\n]/, $pg->psql("SELECT m.id, coalesce(extract(epoch FROM $agg), 0) FROM messages m"
                                      . " LEFT JOIN events e ON e.message_id = m.id WHERE m.id IN ("
                                      . join(',', map { "'$_'" } @ids) . ") GROUP BY m.id", may_fail => 1);
    my %n;
    for my $id (@ids) {
        my $at = $at{$id};
        my $which = defined $at ? 'before (a)' : 'no row in PostgreSQL';
        if (defined $at) {
            for my $c (@chaos) { $which = "after $c->[0]" if $at >= $c->[1] - 0.5 }
        }
        $n{$which}++;
    }
    return "$label: " . join(', ', map { "$_: $n{$_}" } sort keys %n) . "\n";
}

sub workers_up {
    my @w = $t->worker_pids;
    return @w == $WORKERS ? \@w : undef;
}

# --- (a) SIGKILL a worker ------------------------------------------------------------
wait_accepted(int($N * 0.15), '(a) SIGKILL a worker');
{
    my @w = $t->worker_pids;
    is(scalar @w, $WORKERS, "$WORKERS workers before the kill");
    # Killed while it holds work (frozen first at a moment its consumer has
    # pending entries), not at an idle moment between two batches.
    my $victim = $w[-1];
    my $held = ($ENV{MAILERD_CHAOS_KILL} // '') eq 'random' ? -1 : MailerdTest::freeze_holding($redis, [$victim], 10);
    push @chaos, ['(a) SIGKILL a worker', time];
    kill 'KILL', $victim;
    note("killed worker $victim holding $held pending entries");
    ok($held > 0, 'the worker was killed holding queue entries') unless $held < 0;
    ok(wait_for(sub { my $n = workers_up(); $n && !grep { $_ == $victim } @$n }, 15),
       'the master replaced the killed worker') or diag($t->log_warnings);
}

# --- (b) restart Redis, persistence off ------------------------------------------------
wait_accepted(int($N * 0.35), '(b) restart Redis');
{
    push @chaos, ['(b) Redis restart', time];
    $redis->stop;
    sleep 1; # an outage, not just a blink: pushes and reads fail meanwhile
    $redis->start;
    note('redis keys right after the restart: ' . ($redis->cli('DBSIZE') // '?'));
}

# --- (c) restart PostgreSQL -------------------------------------------------------------
wait_accepted(int($N * 0.55), '(c) restart PostgreSQL');
{
    my $t1 = time;
    push @chaos, ['(c) PostgreSQL restart', $t1];
    $pg->stop('fast');
    sleep 1; # sends are refused (503) and results cannot be recorded meanwhile
    $pg->start;
    note(sprintf('postgres was down %.1f s', time - $t1));
}

# --- (d) SIGHUP reload -----------------------------------------------------------------
wait_accepted(int($N * 0.75), '(d) SIGHUP reload');
{
    my @old = $t->worker_pids;
    push @chaos, ['(d) SIGHUP', time];
    $t->signal('HUP');
    ok(wait_for(sub { my $n = workers_up(); $n && !grep { my $o = $_; grep { $_ == $o } @$n } @old }, 20),
       'SIGHUP: a new generation of workers replaced the old one') or diag($t->log_warnings);
}

# --- the rest of the stream, then every accepted id delivered ----------------------------
my $summary = $sender ? MailerdTest::sender_wait($sender, $idfile, 180) : slurp("$idfile.done");
undef $sender;
chomp $summary;
note("client: $summary");
my @ids = MailerdTest::sender_ids($idfile);
my %uniq = map { $_ => 1 } @ids;
is(scalar keys %uniq, scalar @ids, 'every accepted id is distinct');
cmp_ok(scalar @ids, '>=', $N * 0.99, "at least 99 % of the $N messages were accepted (" . scalar(@ids) . ')')
  or diag($summary);

my $journal_ok = -e $journal;
my ($d, @missing);
my $last_note = time;
my $deadline = time + $WAIT;
while (1) {
    $d = deliveries();
    @missing = grep { !$d->{$_} } @ids;
    last if !@missing || time > $deadline;
    if (time - $last_note >= 10) {
        note(sprintf('%.0f s: %d of %d accepted ids delivered', time - $t0, @ids - @missing, scalar @ids));
        $last_note = time;
    }
    sleep 0.5;
}
$journal_ok ||= -e $journal;
ok($journal_ok, 'the sink writes its journal (deliveries counted from it)')
  or diag('no journal: counted .eml files instead; duplicates cannot be seen');
is(scalar @missing, 0, sprintf('every accepted id is delivered to the sink (%.0f s after the start)', time - $t0))
  or diag("missing " . scalar(@missing) . " of " . scalar(@ids) . "\n"
          . by_disruption('missing ids by the disruption before their last event', 'max(e.created_at)', @missing) . MailerdTest::queue_diag($pg, $redis, \@missing) . "warnings in the error log:\n" . $t->log_warnings);

my @twice = grep { ($d->{$_} // 0) > 1 } @ids;
my $extra = 0;
$extra += $d->{$_} - 1 for @twice;
my $rate = @ids ? @twice / @ids : 0;
diag(sprintf('delivered twice: %d of %d accepted (%.3f %%), %d extra deliveries',
             scalar @twice, scalar @ids, 100 * $rate, $extra));
# Attempts a disruption interrupted after the sink wrote them: the next attempt
# found the file and did not write it again (md_esp_sink.c).
diag(sprintf('interrupted attempts taken again: %s; found written by the sink, not sent again: %d',
             scalar $pg->psql("SELECT count(*) FROM events WHERE type = 'sending' AND (data->>'interrupted')::boolean",
                              may_fail => 1) // '?',
             scalar grep { ($_->{msg} // '') =~ /interrupted attempt had written/ } $t->error_log_entries));
cmp_ok($rate, '<', 0.001, 'fewer than 0.1 % delivered twice')
  or diag(by_disruption('delivered twice, by the disruption before their first claim',
                        "min(e.created_at) FILTER (WHERE e.type = 'sending')", @twice)
          . "journal attempts and events of some:\n" . twice_detail(@twice[0 .. ($#twice < 9 ? $#twice : 9)])
          . "dispatch warnings:\n" . join("\n", grep { /dispatch/ } split /\n/, $t->log_warnings(200)));

# For messages delivered twice: the attempt numbers the sink wrote and the events.
sub twice_detail {
    my (@ids) = @_;
    my $j = $t->sink_journal('sink.journal');
    my %ev = split /[|\n]/, $pg->psql("SELECT message_id, string_agg(type || coalesce(':' || (data->>'reason'), ''), ','"
                                      . " ORDER BY created_at, id) FROM events WHERE message_id IN ("
                                      . join(',', map { "'$_'" } @ids) . ") GROUP BY 1");
    return join('', map { "  $_ journal attempts " . join(',', @{ $j->{$_} // [] }) . "; events " . ($ev{$_} // '') . "\n" } @ids);
}

# PostgreSQL agrees: each accepted message is delivered, none left behind.
my %st = split /[|\n]/, $pg->psql("SELECT status, count(*) FROM messages GROUP BY 1");
note('messages by status: ' . join(', ', map { "$_=$st{$_}" } sort keys %st));
ok(wait_for(sub { ($pg->psql("SELECT count(*) FROM messages WHERE status <> 'delivered'") // 1) == 0 }, 15),
   'every stored message (accepted or not) ends delivered in PostgreSQL')
  or diag($pg->psql("SELECT id, status, attempts, last_error FROM messages WHERE status <> 'delivered' LIMIT 20"));
cmp_ok($pg->psql('SELECT count(*) FROM messages'), '>=', scalar @ids, 'a row for each accepted id');

is($t->stop, 0, 'graceful stop after the chaos');
done_testing;
