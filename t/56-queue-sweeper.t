# scripts/test: alone (load, timing or rate assertions: no other test beside it)
# The sweeper (src/store/md_queue.c) against the real stack: PostgreSQL, Redis,
# mailerd with 2 workers, queue_recovery_interval 1s and queue_recovery_full 1s
# (every turn reads every waiting message: the rows written by hand below, with
# random ids, stand for lost pushes of any age; t/73 has the window of recent ids).
#   - first without an esp block, so nothing reads the streams and every pushed
#     message stays queued and covered:
#     (c) a covered backlog (older than the grace) is never pushed again: the
#         stream length and mailerd_queue_requeued_total do not grow;
#     (b) a message PostgreSQL says is queued with no Redis entry is pushed,
#         exactly once;
#     (d) a paused tenant's messages (queue_pauses) are left alone, also when
#         its lease expired ('sending' turned back to 'queued', not pushed);
#     (f) the queue gauges in /metrics match what Redis holds (depth per
#         priority, scheduled, in flight, dead);
#     (e) dead_letters rows and dead-stream entries older than the retention
#         go, younger ones stay;
#     (a) after FLUSHALL every waiting message is pushed again, once, and the
#         scheduled ones not due yet are back in the scheduled set;
#   - then with a sink esp block (reload): everything queued is delivered, the
#     paused tenant's mail once the pause row goes, and a FLUSHALL in the middle
#     of an 8,000 message drain loses nothing (8,000: with four claims of 256 in
#     flight per worker a smaller backlog could be gone before the flush).
# A "probe" (a queued row with no entry) marks a sweeper turn: once it is
# pushed, a whole turn ran after it was written, so a negative assertion made
# then has had a sweeper turn to fail.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use JSON::PP;
use Time::HiRes qw(time sleep);
use MailerdTest qw(wait_for slurp);

MailerdTest::skip_without_store();

my $S = MailerdTest->stack(
    tenants    => 2,
    main_extra => "queue_recovery_interval 1s;\nqueue_recovery_full 1s;\nqueue_dead_retention 1h;\n"
      . "retry_backoff_base 20ms;\nretry_backoff_max 200ms;\n",
);
my $t = $S->{t};
my $pg = $S->{pg};
my $redis = $S->{redis};
my ($A, $B) = @{ $S->{tenants} };
my $json = JSON::PP->new->canonical;
my $dir = $t->dir;
my ($QT, $QB, $SCHED, $LIVE, $DEAD) =
  qw(mailerd:q:transactional mailerd:q:bulk mailerd:q:scheduled mailerd:q:live mailerd:q:dead);

sub sql { scalar $pg->psql($_[0]) }
sub in_list { join(',', map { "'$_'" } @_) }

sub metrics {
    my $m = $t->request('GET', '/metrics')->{body} // '';
    my %v = $m =~ /^(mailerd_\S+) (\S+)$/mg;
    return \%v;
}
sub requeued { metrics()->{mailerd_queue_requeued_total} // 0 }

sub xlen { $redis->cli('XLEN', $_[0]) // -1 }

# Many commands on one redis-cli connection (one per line).
sub redis_cmds {
    my ($cmds) = @_;
    my $port = $redis->port;
    open(my $cli, '|-', "redis-cli -h 127.0.0.1 -p $port >/dev/null") or die "redis-cli: $!";
    print $cli $cmds;
    close $cli or die "redis-cli: $?";
}

# How many of the ids are members of the live set.
sub live_count { $redis->members_in($LIVE, @_) }

# A batch through the API; returns the accepted ids.
sub send_batch {
    my ($tenant, $n, %o) = @_;
    my $r = $t->json_request($tenant->{key}, 'POST', '/v1/messages/batch', {
        from => 'Acme <billing@acme.example>', subject => 'sweeper', text => 'x', %o,
        recipients => [ map { { to => "s$_\@example.com" } } 1 .. $n ] });
    die "batch: $r->{status} $r->{body}" unless $r->{status} == 202 && $r->{json};
    return map { $_->{id} } @{ $r->{json}{accepted} };
}

# Rows written straight into PostgreSQL with no queue entry, as if their push
# was lost; updated_at in the past so they are older than the grace.
sub insert_queued {
    my ($tenant, $n, %o) = @_;
    my $status = $o{status} // 'queued';
    my $prio = $o{priority} // 'transactional';
    my $lease = $status eq 'sending' ? "now() - interval '1 minute'" : 'NULL';
    my $out = sql("WITH i AS (INSERT INTO messages (id, tenant_id, status, priority, attempts, lease_until,"
                  . " from_addr, to_addr, text_body, updated_at)"
                  . " SELECT gen_random_uuid(), '$tenant->{id}', '$status', '$prio',"
                  . " CASE WHEN '$status' = 'sending' THEN 1 ELSE 0 END, $lease,"
                  . " 'a\@acme.example', 'lost' || g || '\@example.com', 'x', now() - interval '1 minute'"
                  . " FROM generate_series(1, $n) g RETURNING id, tenant_id),"
                  . " e AS (INSERT INTO events (id, tenant_id, message_id, type)"
                  . " SELECT gen_random_uuid(), tenant_id, id, 'queued' FROM i) SELECT id FROM i");
    return split /\n/, $out;
}

# Waits for a full sweeper turn: a fresh uncovered row for tenant A is pushed
# (it is in the live set, or a dispatcher has taken it already). Returns true
# when it was.
my @probes;
sub sweep_turn {
    my ($id) = insert_queued($A, 1);
    push @probes, $id;
    # 20 s: a turn right after one over thousands of rows, in the sanitizer
    # build on a loaded machine, once took more than 10 (CI, 2026-11-27).
    return wait_for(sub { live_count($id) == 1 || sql("SELECT status FROM messages WHERE id = '$id'") ne 'queued' }, 20);
}

# --- (c) a covered backlog is not pushed again ------------------------------------------
my @a_msgs = send_batch($A, 40);
is(scalar @a_msgs, 40, '40 accepted');
my @a_bulk = send_batch($A, 5, priority => 'bulk');
ok(wait_for(sub { xlen($QT) == 40 && xlen($QB) == 5 }, 5), 'push: one entry per message on its stream')
  or diag('XLEN ' . xlen($QT) . ' / ' . xlen($QB));
is(live_count(@a_msgs, @a_bulk), 45, 'push: every id in the live set');
# Old enough for the sweeper to look at them: only coverage keeps them out.
sql("UPDATE messages SET updated_at = now() - interval '1 hour' WHERE id IN (" . in_list(@a_msgs, @a_bulk) . ")");
is(requeued(), 0, 'nothing requeued yet');
ok(sweep_turn(), 'a sweeper turn pushed the probe (an uncovered queued row)');
ok(sweep_turn(), 'and a second turn the second probe');
is(xlen($QT), 42, 'the covered backlog was not pushed again: 40 entries + 2 probes');
is(xlen($QB), 5, 'bulk stream unchanged');
is(requeued(), 2, 'mailerd_queue_requeued_total counts only the probes');
{
    # (b) lost pushes of both priorities, pushed exactly once each.
    my @lost = insert_queued($A, 10);
    my @lost_bulk = insert_queued($A, 3, priority => 'bulk');
    ok(wait_for(sub { live_count(@lost, @lost_bulk) == 13 }, 10), 'lost pushes are pushed again');
    ok(sweep_turn(), 'another turn');
    is(xlen($QT), 42 + 10 + 1, 'transactional: once each');
    is(xlen($QB), 5 + 3, 'bulk ones on the bulk stream, once each');
    is(requeued(), 2 + 13 + 1, 'requeued counted');
    push @a_msgs, @lost;
    push @a_bulk, @lost_bulk;
}

# --- (d) a paused tenant is left alone ----------------------------------------------------
my @b_msgs;
{
    sql("INSERT INTO queue_pauses (scope) VALUES ('$B->{id}')");
    @b_msgs = insert_queued($B, 4);
    my @b_sending = insert_queued($B, 2, status => 'sending');
    my $before = requeued();
    ok(sweep_turn(), 'a turn after the pause');
    ok(sweep_turn(), 'and another');
    is(live_count(@b_msgs, @b_sending), 0, "the paused tenant's messages were not pushed");
    is(requeued(), $before + 2, 'only the probes were requeued');
    is(sql("SELECT string_agg(DISTINCT status, ',') FROM messages WHERE id IN (" . in_list(@b_sending) . ")"),
       'queued', 'its expired leases were turned back to queued');
    is(sql("SELECT count(*) FROM events WHERE message_id IN (" . in_list(@b_sending) . ")"
           . " AND type = 'queued' AND data->>'reason' = 'lease_expired'"), 2, 'with a lease_expired event each');
    push @b_msgs, @b_sending;
}

# --- (f) the gauges ---------------------------------------------------------------------
my @sched; # two scheduled an hour ahead, which (a) finds again
{
    @sched = send_batch($A, 2, send_at => strftime_in(3600));
    ok(wait_for(sub { ($redis->cli('ZCARD', $SCHED) // 0) == 2 }, 5), 'two scheduled an hour ahead');
    # Two transactional entries read by a consumer that never acknowledges.
    $redis->cli('XREADGROUP', 'GROUP', 'mailerd', 'ghost:1', 'COUNT', '2', 'STREAMS', $QT, '>');
    my $now_ms = int(time * 1000);
    my $old = $now_ms - 2 * 3600 * 1000;
    $redis->cli('XADD', $DEAD, "$old-0", 'id', 'x', 'tenant', 'y', 'code', 'old', 'reason', 'old one');
    $redis->cli('XADD', $DEAD, "$old-1", 'id', 'x', 'tenant', 'y', 'code', 'old', 'reason', 'old two');
    $redis->cli('XADD', $DEAD, '*', 'id', 'x', 'tenant', 'y', 'code', 'new', 'reason', 'young');
    ok(wait_for(sub { xlen($DEAD) == 1 }, 10), '(e) dead stream trimmed to the retention (the young entry stays)')
      or diag('XLEN dead ' . xlen($DEAD));
    ok(sweep_turn(), 'a turn after the changes');
    my $want_t = xlen($QT) - 2;
    my $m;
    my $ok = wait_for(sub {
        $m = metrics();
        ($m->{'mailerd_queue_depth{priority="transactional"}'} // -1) == $want_t
          && ($m->{'mailerd_queue_depth{priority="bulk"}'} // -1) == xlen($QB)
          && ($m->{mailerd_queue_scheduled} // -1) == 2
          && ($m->{mailerd_queue_in_flight} // -1) == 2
          && ($m->{mailerd_queue_dead} // -1) == 1
    }, 10);
    ok($ok, "gauges: depth $want_t/" . xlen($QB) . ', scheduled 2, in flight 2, dead 1')
      or diag(join("\n", map { "$_ $m->{$_}" } grep { /queue_(depth|scheduled|in_flight|dead)\b/ } sort keys %$m));
    like(slurp_metrics(), qr/^# TYPE mailerd_queue_depth gauge$/m, 'gauge TYPE line');
    my $m2 = metrics();
    for my $c (qw(mailerd_delivery_attempts_total mailerd_dead_letters_total mailerd_queue_reclaimed_total
                  mailerd_queue_handed_back_total)) {
        ok(defined $m2->{$c}, "$c rendered");
    }
    like($redis->cli('XINFO', 'CONSUMERS', $QT, 'mailerd') // '', qr/ghost:1/,
         'a consumer holding entries is not reaped');

    # Trimming takes only what the group acknowledged: the ghost acknowledges
    # the first of its two entries (leaving its message's live member behind,
    # which md_queue_ack would remove; FLUSHALL in (a) clears it), and after a
    # turn that entry is gone while the pending one and the unread ones stay.
    my @read = split /\n/, $redis->cli('XPENDING', $QT, 'mailerd', '-', '+', '10') // '';
    my ($e1, $e2) = grep { /^\d+-\d+$/ } @read;
    my $len = xlen($QT);
    my $last = (split /\n/, $redis->cli('XREVRANGE', $QT, '+', '-', 'COUNT', '1') // '')[0];
    is($redis->cli('XACK', $QT, 'mailerd', $e1), 1, 'the ghost acknowledges its first entry');
    ok(sweep_turn(), 'a turn after the acknowledgement');
    ok(wait_for(sub { ($redis->cli('XRANGE', $QT, $e1, $e1) // '') eq '' }, 5),
       'the acknowledged entry was trimmed');
    like($redis->cli('XRANGE', $QT, $e2, $e2) // '', qr/\Q$e2\E/, 'the pending one stays');
    like($redis->cli('XRANGE', $QT, $last, $last) // '', qr/\Q$last\E/, 'the newest unread one stays');
    is(xlen($QT), $len - 1 + 1, 'only that one went (the turn pushed its probe)');
}

# --- (e) dead letters older than the retention are deleted ---------------------------------
{
    my @f = split /\n/, sql("WITH i AS (INSERT INTO messages (id, tenant_id, status, from_addr, to_addr, text_body)"
                            . " SELECT gen_random_uuid(), '$A->{id}', 'failed', 'a\@acme.example', 'dead' || g || '\@example.com', 'x'"
                            . " FROM generate_series(1, 4) g RETURNING id) SELECT id FROM i");
    sql("INSERT INTO dead_letters (message_id, tenant_id, code, reason, attempts, created_at)"
        . " SELECT id, '$A->{id}', 'test', 'test', 1,"
        . " CASE WHEN row_number() OVER (ORDER BY id) <= 2 THEN now() - interval '2 hours' ELSE now() - interval '50 minutes' END"
        . " FROM messages WHERE id IN (" . in_list(@f) . ")");
    ok(wait_for(sub { sql("SELECT count(*) FROM dead_letters WHERE message_id IN (" . in_list(@f) . ")") == 2 }, 10),
       'the two dead letters older than 1h are deleted');
    ok(sweep_turn(), 'another turn');
    is(sql("SELECT count(*) FROM dead_letters WHERE message_id IN (" . in_list(@f) . ")"
           . " AND created_at > now() - interval '1 hour'"), 2, 'the two younger ones stay');
}

# --- (a) FLUSHALL: every waiting message pushed again, once --------------------------------
{
    my $before = requeued();
    my @waiting = (@a_msgs, @a_bulk, @probes);
    is(sql("SELECT count(*) FROM messages WHERE id IN (" . in_list(@waiting) . ") AND status = 'queued'"),
       scalar @waiting, 'all of them still queued in PostgreSQL');
    $redis->cli('FLUSHALL');
    ok(wait_for(sub { live_count(@waiting) == @waiting }, 10), 'after FLUSHALL every waiting message is covered again');
    my $probe_count = @probes;
    ok(sweep_turn(), 'another turn');
    is(xlen($QT) + xlen($QB), @waiting + 1, 'one entry each (+ the new probe), no duplicates');
    is(scalar(grep { ($redis->cli('ZSCORE', $SCHED, "t:$_") // '') ne '' } @sched), 2,
       'the two scheduled an hour ahead are back in the scheduled set');
    is(live_count(@sched), 0, 'not pushed to a stream (not due)');
    is(requeued() - $before, @waiting + 1 + @sched, 'requeued counts them once');
    is(live_count(@b_msgs), 0, 'the paused tenant still left alone');
    like($redis->cli('XINFO', 'GROUPS', $QT) // '', qr/mailerd/, 'the consumer group is back');
}

# --- (h) the sweeper pages through deliveries_waiting_idx ------------------------------------
# 6,000 sends scheduled a day ahead: waiting rows a turn must read and skip. The
# pages walk deliveries_waiting_idx from their cursor (migrations 0007, 0008);
# the old pages read every waiting row past their cursor through the pending
# index and sorted them, and never touched it.
{
    sql("INSERT INTO messages (id, tenant_id, status, priority, send_at, from_addr, to_addr, text_body)"
        . " SELECT gen_random_uuid(), '$A->{id}', 'scheduled', 'bulk', now() + interval '1 day',"
        . " 'a\@acme.example', 'later' || g || '\@example.com', 'x' FROM generate_series(1, 6000) g");
    # (reads, scans) of the index so far. Statistics reach the view a while
    # after the statements (and turns run every second meanwhile), so the
    # test looks at reads per scan: a page scan starts at its cursor and
    # stops at its limit or the end, never passing a row twice.
    my $stat = sub { split /\|/, sql("SELECT idx_tup_read, idx_scan FROM pg_stat_user_indexes"
                                     . " WHERE indexrelname = 'deliveries_waiting_idx'") };
    my $held = sql("SET enable_indexscan = off; SET enable_indexonlyscan = off; SET enable_bitmapscan = off;"
                   . " SELECT count(*) FROM messages WHERE status IN ('queued', 'scheduled', 'deferred')");
    my ($r0, $s0) = $stat->();
    ok(sweep_turn(), 'a turn over 6,000 rows scheduled ahead');
    my ($d, $n) = (0, 0);
    ok(wait_for(sub { my ($r, $c) = $stat->(); ($d, $n) = ($r - $r0, $c - $s0); $d >= 6000 }, 20),
       "the turn's pages read them through deliveries_waiting_idx")
      or diag("index reads: $d");
    cmp_ok($d / ($n || 1), '<=', $held, "no page scan passes a row twice: $d reads in $n scans, $held rows");
    is(live_count(split /\n/, sql("SELECT id FROM messages WHERE to_addr LIKE 'later%'")), 0,
       'none of them pushed (not due)');
}

# --- delivery with a dispatcher -------------------------------------------------------------
ok($t->reload_conf(sub { $_[0] =~ s/(queue_recovery_interval)/esp sink {\n    dir sink;\n    journal sink.journal;\n}\n$1/r }),
   'reload with a sink esp block');
{
    my @waiting = (@a_msgs, @a_bulk, @probes);
    ok(wait_for(sub { sql("SELECT count(*) FROM messages WHERE id IN (" . in_list(@waiting) . ") AND status = 'delivered'")
                        == @waiting }, 20), 'every waiting message is delivered')
      or diag(sql("SELECT status, count(*) FROM messages WHERE id IN (" . in_list(@waiting) . ") GROUP BY 1"));
    ok(sweep_turn(), 'a turn');
    is(sql("SELECT count(*) FROM messages WHERE id IN (" . in_list(@b_msgs) . ") AND status = 'queued'"),
       scalar @b_msgs, "the paused tenant's mail is held");
    sql("DELETE FROM queue_pauses");
    ok(wait_for(sub { sql("SELECT count(*) FROM messages WHERE id IN (" . in_list(@b_msgs) . ") AND status = 'delivered'")
                        == @b_msgs }, 15), 'once the pause row is gone the sweeper releases it')
      or diag(sql("SELECT status, count(*) FROM messages WHERE id IN (" . in_list(@b_msgs) . ") GROUP BY 1"));
    is(sql("SELECT max(attempts) FROM messages WHERE id IN (" . in_list(@waiting) . ")"), 1,
       'each sent in one attempt (no duplicate claim)');
}

# --- (g) an interrupted attempt is not sent twice ------------------------------------------
# Two messages whose attempt 1 ran out of its lease with no outcome recorded, as
# a worker SIGKILLed between the sink's write and the record leaves them; the
# first one's file is there (that attempt wrote it, and died before its journal
# line), the second's is not. The sweeper turns both back marked interrupted;
# the next attempt finds the first one's file and reports it delivered without
# writing again (adding the journal line the dead attempt did not), and writes
# the second.
{
    my ($done, $lost) = insert_queued($A, 2, status => 'sending');
    my $left = "X-Left-By: attempt 1\r\nSubject: left\r\n\r\nwritten before the worker died\r\n";
    open(my $fh, '>', "$dir/sink/$done.eml") or die "$dir/sink/$done.eml: $!";
    print $fh $left;
    close $fh;
    ok(!-e "$dir/sink/$lost.eml", 'the second interrupted attempt left no file');
    ok(wait_for(sub { sql("SELECT count(*) FROM messages WHERE id IN ('$done', '$lost') AND status = 'delivered'") == 2 }, 15),
       'both interrupted messages end delivered')
      or diag(sql("SELECT id, status, last_error FROM messages WHERE id IN ('$done', '$lost')"));
    is(slurp("$dir/sink/$done.eml"), $left, 'the file the interrupted attempt wrote was not written again');
    like(slurp("$dir/sink/$lost.eml") // '', qr/^X-Mailerd-Message-Id: \Q$lost\E\r?$/mi,
         'the message whose attempt left nothing was written');
    is(sql("SELECT string_agg(attempts || ':' || coalesce(last_error, 'null'), ',') FROM messages"
           . " WHERE id IN ('$done', '$lost')"), '2:null,2:null', 'attempt 2 each, no error left');
    is(sql("SELECT count(*) FROM events WHERE message_id IN ('$done', '$lost') AND type = 'sending'"
           . " AND (data->>'interrupted')::boolean AND (data->>'attempt')::int = 2"), 2,
       "each attempt 2 has a 'sending' event marked interrupted");
    is(sql("SELECT count(*) FROM events WHERE message_id = '$done' AND type IN ('sent', 'delivered')"), 2,
       'the reconciled one has its sent and delivered events');
    my @reconciled = grep { ($_->{msg} // '') =~ /interrupted attempt had written/ } $t->error_log_entries;
    is(join(',', map { $_->{message_id} } @reconciled), $done, 'the sink logged the reconciled one only');
    my $j = $t->sink_journal('sink.journal');
    is(join(' ', map { scalar @{ $j->{$_} // [] } } $done, $lost), '1 1',
       'one journal line each: the reconciled one gets the line its dead attempt did not write');
}

# An 8,000-message backlog tagged TAG (to_addr TAG<n>@example.com; every other
# one bulk when MIXED, else all bulk), as the send API writes the rows, with its
# entries pushed by one script: atomic, so the drain starts with all of it there
# (pushed one by one on a loaded machine, it drained as it came). Returns the
# ids once the drain is under way: 200 new files in the sink, which tells it
# faster than a psql per look can on a loaded machine.
sub drain_backlog {
    my ($tag, $mixed) = @_;
    my $prio = $mixed ? "CASE WHEN g % 2 = 0 THEN 'bulk' ELSE 'transactional' END" : "'bulk'";
    my @rows = split /\n/, sql("WITH i AS (INSERT INTO messages (id, tenant_id, status, priority, from_addr, to_addr, text_body)"
                               . " SELECT gen_random_uuid(), '$A->{id}', 'queued', $prio,"
                               . " 'a\@acme.example', '$tag' || g || '\@example.com', 'x' FROM generate_series(1, 8000) g"
                               . " RETURNING id, tenant_id, priority),"
                               . " e AS (INSERT INTO events (id, tenant_id, message_id, type) SELECT gen_random_uuid(), tenant_id, id, 'queued' FROM i)"
                               . " SELECT id || ' ' || left(priority, 1) FROM i");
    my $files = sub { opendir(my $dh, "$dir/sink") or return 0; scalar grep { /\.eml\z/ } readdir $dh };
    my $before = $files->();
    my $port = $redis->port;
    open(my $cli, '|-', "redis-cli -h 127.0.0.1 -p $port >/dev/null") or die "redis-cli: $!";
    print $cli "EVAL \"for i = 1, #ARGV, 2 do redis.call('XADD', ARGV[i + 1] == 'b' and KEYS[1] or KEYS[2], '*', 'id', ARGV[i])"
      . " redis.call('SADD', KEYS[3], ARGV[i]) end\" 3 $QB $QT $LIVE @rows\n";
    close $cli or die "redis-cli: $?";
    wait_for(sub { $files->() - $before >= 200 }, 20);
    return map { (split / /)[0] } @rows;
}
sub delivered_of { sql("SELECT count(*) FROM messages WHERE to_addr LIKE '$_[0]%' AND status = 'delivered'") }
sub pending_total {
    my $n = 0;
    for my $q ($QT, $QB) { my $x = $redis->cli('XPENDING', $q, 'mailerd') // ''; $n += $x =~ /^(\d+)/ ? $1 : 0 }
    return $n;
}

# --- a FLUSHALL in the middle of a drain loses nothing --------------------------------------
{
    my @ids = drain_backlog('drain', 1);
    is(scalar @ids, 8000, '8,000 queued rows');
    $redis->cli('FLUSHALL');
    my $at_flush = delivered_of('drain');
    cmp_ok($at_flush, '<', 8000, "the flush came before the end of the drain ($at_flush delivered then)");
    ok(wait_for(sub { delivered_of('drain') == @ids }, 60), 'every message delivered after the flush')
      or diag(sql("SELECT status, count(*) FROM messages WHERE to_addr LIKE 'drain%' GROUP BY 1"));
    is(scalar(grep { -f "$dir/sink/$_.eml" } @ids), 8000, 'and written');
    is(sql("SELECT count(*) FROM events WHERE message_id IN (SELECT id FROM messages WHERE to_addr LIKE 'drain%')"
           . " AND type = 'sent'"), 8000,
       'one sent event each: no message sent twice');
    # The streams have no length cap; the sweeper trims what was acknowledged.
    ok(wait_for(sub { xlen($QT) + xlen($QB) <= 4 }, 15),
       'after the drain the sweeper trimmed the acknowledged entries from the streams')
      or diag('XLEN ' . xlen($QT) . ' + ' . xlen($QB) . "\n" . pending_report());
}

# --- a Redis stall in the middle of a drain: the acknowledgements it cut off go again --------
# Redis stopped (SIGSTOP) for longer than command_timeout (1s): the workers drop
# their command connections with XACKs on the wire. Those are sent again once
# the connections are back, so nothing stays pending (left pending, entries wait
# for XAUTOCLAIM after queue_lease, five minutes here, and hold back the trim).
{
    my @ids = drain_backlog('stall', 0);
    is(scalar @ids, 8000, '8,000 more queued rows');
    kill 'STOP', $redis->{pid};
    sleep 1.6;
    kill 'CONT', $redis->{pid};
    my $at_stall = delivered_of('stall');
    cmp_ok($at_stall, '<', 8000, "Redis stalled in the middle of the drain ($at_stall delivered by then)");
    ok(wait_for(sub { delivered_of('stall') == @ids }, 60), 'every message delivered after the stall')
      or diag(sql("SELECT status, count(*) FROM messages WHERE to_addr LIKE 'stall%' GROUP BY 1"));
    ok(grep({ ($_->{reason} // '') =~ /command_timeout/ } $t->error_log_entries),
       'the stall cost the workers their command connections');
    ok(wait_for(sub { pending_total() == 0 }, 15), 'no entry left pending: the lost XACKs were sent again')
      or diag('pending ' . pending_total() . "\n" . pending_report());
    ok(wait_for(sub { xlen($QT) + xlen($QB) <= 4 }, 15), '... and the sweeper trimmed the streams')
      or diag('XLEN ' . xlen($QT) . ' + ' . xlen($QB));
}

# --- acknowledgements in bulk -----------------------------------------------------------------
# 6,000 entries whose messages do not exist (nothing to claim: each is only
# acknowledged), read by dispatchers holding up to 2,048 entries each, so one
# loop iteration acknowledges more than one XACK/SREM takes (512): every entry
# must end acknowledged and out of the live set.
{
    ok($t->reload_conf(sub { $_[0] =~ s/(queue_recovery_interval)/dispatch_concurrency 2048;\n$1/r }),
       'reload with dispatch_concurrency 2048');
    my @fake = map { sprintf('00000000-0000-7000-8000-%012x', $_) } 1 .. 6000;
    # the live member before the entry, as the push script writes them (in
    # the other order a dispatcher could acknowledge the entry in between)
    redis_cmds(join('', map { "SADD $LIVE $fake[$_]\nXADD " . ($_ % 2 ? $QT : $QB) . " * id $fake[$_]\n" } 0 .. $#fake));
    ok(wait_for(sub { live_count(@fake) == 0 && pending_total() == 0 }, 30),
       'every entry acknowledged and out of the live set')
      or diag('live ' . live_count(@fake) . ', pending ' . pending_total() . "\n" . pending_report());
}

is($t->stop, 0, 'graceful stop');
done_testing;

# What holds the group's pending entries, for a failed assertion: per stream the
# XPENDING summary (count, ids, consumers), the oldest few (consumer, idle ms,
# deliveries) and the status of their messages.
sub pending_report {
    my $out = '';
    for my $q ($QT, $QB) {
        $out .= "$q: XPENDING " . join(' ', split /\n/, $redis->cli('XPENDING', $q, 'mailerd') // '?') . "\n";
        my @p = split /\n/, $redis->cli('XPENDING', $q, 'mailerd', '-', '+', '5') // '';
        while (my ($eid, $consumer, $idle, $n) = splice(@p, 0, 4)) {
            my @f = split /\n/, $redis->cli('XRANGE', $q, $eid, $eid) // '';
            my $mid = $f[2] // '?';
            my $st = $mid =~ /^[0-9a-f-]{36}\z/ ? sql("SELECT status || ' attempts ' || attempts FROM messages WHERE id = '$mid'") : '';
            $out .= "  $eid $consumer idle ${idle}ms delivered ${n}x: message $mid " . ($st || 'no row') . "\n";
        }
    }
    return $out . 'consumers: ' . join(' ', split /\n/, $redis->cli('XINFO', 'CONSUMERS', $QB, 'mailerd') // '');
}

sub strftime_in {
    my ($secs) = @_;
    require POSIX;
    return POSIX::strftime('%Y-%m-%dT%H:%M:%SZ', gmtime(time + $secs));
}

sub slurp_metrics { $t->request('GET', '/metrics')->{body} // '' }
