# scripts/test: alone (timing: sweeper turns every second, a periodic full turn)
# Which sweeper turns read every waiting message (src/store/md_queue.c, "which
# turns read everything"): only those after something that may have lost queue
# entries, and one at least every queue_recovery_full; the others turn leases
# back and do the housekeeping. mailerd with 2 workers, queue_recovery_interval
# 1s, queue_recovery_full 30s, no esp block (nothing reads the streams: a
# pushed message stays covered). Rows written by hand with no queue entry stand
# for lost pushes that no process saw.
#   (a) at start every worker asks for a full turn and registers a heartbeat,
#       renewed every second; once one full turn started a grace after that,
#       the turns are recent;
#   (b) recent turns do not look for lost rows (new or old ids), and read
#       nothing of deliveries_waiting_idx beside a 5,001-row backlog;
#   (c) after mailerd's Redis connections were cut (as a Redis restart or
#       failover does) a full turn pushes them all, and puts back the
#       scheduled-set members of messages not due yet (a scheduled send, a
#       deferred retry), without pushing those;
#   (d) after a push failed (Redis refusing writes) a full turn pushes the
#       message and what else was lost;
#   (e) a process whose heartbeat stopped (it died without a goodbye) makes a
#       full turn, and leaves the registry;
#       a reset written by a clock far ahead is brought back to now + grace;
#   (f) with no event, a full turn still comes within queue_recovery_full
#       (reloaded to 10s for it);
#   (g) a graceful stop removes the workers' heartbeats;
#   (h) one that comes before a worker's first heartbeat still delivers the
#       full turns the worker owes (its start asks for them), before its
#       goodbye.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use POSIX ();
use Time::HiRes qw(time sleep);
use MailerdTest qw(wait_for);

MailerdTest::skip_without_store();

my $FULL = 30;
my $S = MailerdTest->stack(
    main_extra => "queue_recovery_interval 1s;\nqueue_recovery_full ${FULL}s;\n",
);
my ($t, $pg, $redis) = @{$S}{qw(t pg redis)};
my $A = $S->{tenants}[0];
my $LIVE = 'mailerd:q:live';

sub sql { scalar $pg->psql($_[0]) }

sub metrics {
    my $m = $t->request('GET', '/metrics')->{body} // '';
    my %v = $m =~ /^(mailerd_\S+) (\S+)$/mg;
    return \%v;
}
sub turns { my $m = metrics(); map { $m->{"mailerd_queue_sweeper_turns_total{scope=\"$_\"}"} // 0 } qw(full recent) }
sub full_turns { (turns())[0] }

sub live_count { $redis->members_in($LIVE, @_) }

# $n queued rows with no queue entry, as if their push was lost, with UUIDv7
# ids of $age ago (48 bits of milliseconds first) and updated_at a minute ago
# (older than the grace). Returns their ids.
sub insert_lost {
    my ($n, $age) = @_;
    my $out = sql("WITH i AS (INSERT INTO messages (id, tenant_id, status, priority, from_addr, to_addr,"
                  . " text_body, updated_at) SELECT (lpad(to_hex((extract(epoch FROM now() - interval '$age')"
                  . " * 1000)::bigint), 12, '0') || '7' || substr(md5(random()::text), 1, 3) || '8'"
                  . " || substr(md5(random()::text), 1, 15))::uuid, '$A->{id}', 'queued', 'transactional',"
                  . " 'a\@acme.example', 'lost' || g || '\@example.com', 'x', now() - interval '1 minute'"
                  . " FROM generate_series(1, $n) g RETURNING id, tenant_id),"
                  . " e AS (INSERT INTO events (id, tenant_id, message_id, type)"
                  . " SELECT gen_random_uuid(), tenant_id, id, 'queued' FROM i) SELECT id FROM i");
    return split /\n/, $out;
}

# Waits for $n more recent turns than now; returns true when they ran.
sub recent_turns {
    my ($n) = @_;
    my $r0 = (turns())[1];
    return wait_for(sub { (turns())[1] >= $r0 + $n }, 5 * $n);
}

# Waits until two recent turns ran with no full turn between them: an event's
# reset asks for full turns until one starts a grace after it, and a row
# written before that would be found by one of them.
sub settle {
    return wait_for(sub { my $f = full_turns(); recent_turns(2) && full_turns() == $f }, 20);
}

sub waiting_reads {
    return sql("SELECT idx_tup_read FROM pg_stat_user_indexes WHERE indexrelname = 'deliveries_waiting_idx'");
}

# --- (a) start ---------------------------------------------------------------------------------
ok(wait_for(sub { my ($f, $r) = turns(); $f >= 1 && $r >= 2 }, 15), 'full turns at start, then recent turns')
  or diag(join(' ', turns()));
is($redis->cli('HLEN', 'mailerd:q:procs'), 2, 'both workers keep a heartbeat');
{
    # Renewed every second by a timer of their own, not by the turns: a long
    # turn must not let its worker's deadline pass.
    my %d0 = split /\n/, $redis->cli('HGETALL', 'mailerd:q:procs');
    # Two beats at least in 2.5 s, each deadline a beat's wall clock + 10 s:
    # moved on by about 2 s (not exactly: the loop's wake-ups jitter).
    sleep 2.5;
    my %d1 = split /\n/, $redis->cli('HGETALL', 'mailerd:q:procs');
    is(scalar(grep { ($d1{$_} // 0) >= $d0{$_} + 1000 } keys %d0), 2, 'each deadline moved on by a second or more in 2.5 s');
    cmp_ok((sort { $a <=> $b } values %d1)[0], '>=', int(time * 1000) + 8000, 'deadlines about 10 s ahead (3 x the interval, at least 10 s)');
}
ok($redis->cli('GET', 'mailerd:q:sweep-mark') >= $redis->cli('GET', 'mailerd:q:sweep-reset'),
   'the last full turn started after the start reset');

# --- (b) recent turns do not look for lost rows -------------------------------------------------
my $full0 = full_turns();
my @new = insert_lost(3, '0 seconds');
my @old = insert_lost(1, '1 hour');
my @backlog = insert_lost(5000, '2 hours');
my $reads0 = waiting_reads();
ok(recent_turns(3), 'three recent turns after the rows were written');
is(full_turns(), $full0, 'no full turn meanwhile') or diag('a periodic full turn came early: the assertions below are void');
is(live_count(@new, @old, @backlog), 0, 'none of the lost rows was looked for');
# Statistics reach the view a little after the statements.
sleep 1.5;
my $read = waiting_reads() - $reads0;
cmp_ok($read, '<', 100, "the turns read $read entries of deliveries_waiting_idx, not the 5,004 rows");

# --- (c) Redis connections cut: a full turn ------------------------------------------------------
# Two messages not due for an hour whose scheduled-set members were lost too: a
# scheduled send (its member removed) and a deferred bulk retry written by hand.
my $SCHED = 'mailerd:q:scheduled';
my $send_at = int(time) + 3600;
my $rs = $t->json_request($A->{key}, 'POST', '/v1/messages',
                          { from => 'a@acme.example', to => 'later@example.com', subject => 's', text => 'x',
                            send_at => POSIX::strftime('%Y-%m-%dT%H:%M:%SZ', gmtime($send_at)) });
is($rs->{status}, 202, 'a message scheduled an hour ahead');
my $sched_id = $rs->{json}{data}[0]{id};
ok(wait_for(sub { ($redis->cli(q{ZSCORE}, $SCHED, "t:$sched_id") // q{}) ne q{} }, 5),
   'its member is in the scheduled set');
$redis->cli('ZREM', $SCHED, "t:$sched_id");
my ($def_id, $def_due) = split /\|/, sql("INSERT INTO messages (id, tenant_id, status, priority, from_addr, to_addr,"
    . " text_body, updated_at, next_attempt_at) VALUES (gen_random_uuid(), '$A->{id}', 'deferred', 'bulk',"
    . " 'a\@acme.example', 'retry\@example.com', 'x', now() - interval '1 minute', now() + interval '1 hour')"
    . " RETURNING id, extract(epoch FROM next_attempt_at)");
my $full1 = full_turns();
my $reads1 = waiting_reads();
$redis->cli('CLIENT', 'KILL', 'TYPE', 'normal');
ok(wait_for(sub { live_count(@new, @old, @backlog) == 5004 }, 15),
   'after the connections were cut, the lost rows were pushed');
cmp_ok(full_turns(), '>', $full1, 'by a full turn');
# The statistics (b) relied on do show a full turn's reads.
ok(wait_for(sub { waiting_reads() - $reads1 >= 5004 }, 5), 'which read them through deliveries_waiting_idx')
  or diag('reads: ' . (waiting_reads() - $reads1));
ok(wait_for(sub { ($redis->cli('ZSCORE', $SCHED, "t:$sched_id") // '') ne '' }, 5),
   'the scheduled message has its member back before it is due');
cmp_ok(abs(($redis->cli('ZSCORE', $SCHED, "t:$sched_id") || 0) - $send_at), '<', 0.001, 'scored at its send_at');
cmp_ok(abs(($redis->cli('ZSCORE', $SCHED, "b:$def_id") || 0) - $def_due), '<', 0.001,
       'the deferred bulk retry too, scored at its next attempt');
is(live_count($sched_id, $def_id), 0, 'neither went to a stream early');
is(metrics()->{mailerd_queue_requeued_total}, 5006, 'requeued counted');

# --- (d) a failed push: a full turn -------------------------------------------------------------
{
    ok(settle(), 'two recent turns in a row');
    my @old2 = insert_lost(1, '1 hour');
    ok(recent_turns(2), 'recent turns after another lost row');
    is(live_count(@old2), 0, 'it was not looked for');
    my $full2 = full_turns();
    my $errs0 = metrics()->{mailerd_queue_push_errors_total} // 0;
    $redis->cli('CONFIG', 'SET', 'min-replicas-to-write', '1');
    my $r = $t->json_request($A->{key}, 'POST', '/v1/messages',
                             { from => 'a@acme.example', to => 'b@example.com', subject => 's', text => 'x' });
    is($r->{status}, 202, 'a message accepted while Redis refuses writes');
    ok(wait_for(sub { (metrics()->{mailerd_queue_push_errors_total} // 0) > $errs0 }, 10), 'its push failed');
    $redis->cli('CONFIG', 'SET', 'min-replicas-to-write', '0');
    my $id = $r->{json}{data}[0]{id};
    ok(wait_for(sub { live_count(@old2, $id) == 2 }, 15), 'then the message and the lost row were pushed');
    cmp_ok(full_turns(), '>', $full2, 'by a full turn');
}

# --- (e) a process that died without a goodbye ----------------------------------------------------
{
    ok(settle(), 'two recent turns in a row');
    my @old3 = insert_lost(1, '1 hour');
    ok(recent_turns(2), 'recent turns after another lost row');
    is(live_count(@old3), 0, 'it was not looked for');
    my $full3 = full_turns();
    # Its last heartbeat, with a deadline 1.5 s ahead.
    my $deadline = int(time * 1000) + 1500;
    $redis->cli('HSET', 'mailerd:q:procs', 'ghost:1', $deadline);
    ok(wait_for(sub { live_count(@old3) == 1 }, 15), 'after its deadline the lost row was pushed');
    cmp_ok(full_turns(), '>', $full3, 'by a full turn');
    is($redis->cli('HEXISTS', 'mailerd:q:procs', 'ghost:1'), 0, 'and the dead process left the registry');
    is($redis->cli('HLEN', 'mailerd:q:procs'), 2, 'the live workers stay');
}

# --- (e2) a reset from a clock far ahead does not keep every turn full ------------------------
{
    $redis->cli('SET', 'mailerd:q:sweep-reset', int(time * 1000) + 86400 * 1000);
    ok(wait_for(sub { $redis->cli('GET', 'mailerd:q:sweep-reset') < int(time * 1000) + 5000 }, 10),
       'a reset a day ahead is brought back to now + grace');
}

# --- (f) no event: a full turn within queue_recovery_full --------------------------------------------
{
    # A shorter period than the rest runs with (each turn reads it), so the
    # wait for it is short too; the reload's new workers ask for full turns at
    # start, as (e)'s reset did, until one starts a grace after it.
    $FULL = 10;
    ok($t->reload_conf(sub { $_[0] =~ s/queue_recovery_full \d+s;/queue_recovery_full ${FULL}s;/r }),
       "reloaded with queue_recovery_full ${FULL}s");
    ok(settle(), 'two recent turns in a row');
    my @old4 = insert_lost(1, '1 hour');
    ok(recent_turns(1), 'a recent turn after another lost row');
    is(live_count(@old4), 0, 'it was not looked for');
    my $full4 = full_turns();
    my $t0 = time;
    ok(wait_for(sub { live_count(@old4) == 1 }, $FULL + 10), "it is found within queue_recovery_full (${FULL}s)")
      or diag(join(' ', turns()));
    cmp_ok(full_turns(), '>', $full4, sprintf('by a full turn, %.0f s later', time - $t0));
}

# --- (g) a graceful stop says goodbye ---------------------------------------------------------------
ok(!$t->log_problems, 'no alert or sanitizer report in the logs') or diag(join("\n", $t->log_problems));
is($t->stop, 0, 'graceful stop');
is($redis->cli('HLEN', 'mailerd:q:procs'), 0, 'the workers removed their heartbeats');

# --- (h) a stop before the first heartbeat still sends the owed reset -----------------------------
{
    $redis->cli('DEL', 'mailerd:q:sweep-reset');
    my $t0 = time;
    $t->start;
    # The first heartbeat is a second after a worker starts; a stop before it
    # found the start's reset owed, and the goodbye used to be skipped then.
    my $ready = wait_for(sub { my $r = eval { $t->request('GET', '/ready') }; $r && $r->{status} == 200 }, 10);
    my $early = time - $t0 < 0.9;
    $t->signal('QUIT');
    is($t->wait_exit(30), 0, sprintf('stopped %.2f s after start', time - $t0));
    ok($ready, 'it was ready first');
    ok(($redis->cli('GET', 'mailerd:q:sweep-reset') // '') =~ /^\d+$/, 'the owed full turns were asked for')
        or diag($early ? 'stopped before the first heartbeat' : 'a heartbeat could have sent it');
    is($redis->cli('HLEN', 'mailerd:q:procs'), 0, 'and no heartbeat was left behind');
}
done_testing;
