# scripts/test: alone (load, timing or rate assertions: no other test beside it)
# The queue and the dispatcher with the sink ESP, against the real stack
# (PostgreSQL, Redis, mailerd with 2 workers and three sink accounts):
#   - messages sent through the API each become one valid .eml (checked with
#     Python's email package: decoded headers, Message-ID, Date, both parts,
#     custom headers), status delivered, events queued -> sending -> sent ->
#     delivered in order, provider id and timestamps recorded;
#   - fail_transient 0.3: every message ends delivered, some after retries
#     (attempts > 1, 'deferred' events); fail_permanent 1: failed with last_error
#     and a 'failed' event, no file;
#   - a canceled message is never written (canceled before its send_at, and a
#     stale queue entry for a canceled row is acknowledged and skipped);
#   - transactional before bulk: with a backlog of 2,000 bulk entries and 20
#     transactional ones queued at once, every transactional one is delivered
#     before most of the bulk;
#   - scheduled send_at 2 s ahead: not delivered before, delivered soon after;
#   - a Redis outage at accept time (Redis restarted empty, so even the
#     streams and the group are gone) is repaired by the recovery scan;
#   - /metrics: sent, failed, deferred, push errors, requeued, latency;
#   - a graceful stop in the middle of a 3,000 message backlog leaves each
#     message queued, sending (under a lease) or delivered with its file, and
#     after a restart (leases made to expire) every one is delivered; a message
#     left "sending" by a dead worker is requeued by the scan;
#   - a stop while a claim waits on row locks: the worker waits for the claim
#     and hands back what it took.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use JSON::PP;
use POSIX qw(strftime);
use Time::HiRes qw(time sleep);
use MailerdTest qw(wait_for slurp);
use MailerdEml qw(parse_eml);

MailerdTest::skip_without_store();
plan skip_all => 'no /usr/bin/python3' unless -x '/usr/bin/python3';

# --- 0. configuration: names are checked, with FILE:LINE ---------------------------------
{
    my $c = MailerdTest->new;
    for my $case (
        ["esp sink { dir s; }\ndefault_esp nope;\n", qr/:2: "default_esp" names no esp block: "nope"/, 'unknown default_esp'],
        ["default_esp later;\nesp later { driver sink; }\n", undef, 'default_esp may name a later block'],
        ["esp a {\n  driver smtp;\n}\n", qr/:2: invalid value "smtp" in "driver" directive/, 'unknown driver'],
        ["esp relay { dir s; }\n", qr/:1: esp "relay" has no "driver" directive/, 'no driver and a name that is none'],
        ["esp sink { }\nesp sink { }\n", qr/:2: duplicate esp "sink"/, 'duplicate account'],
        ["esp sink {\n  fail_transient 1.5;\n}\n", qr/:2: invalid value "1\.5" in "fail_transient"/, 'ratio above 1'],
        ["esp sink { fail_transient 0.7; fail_permanent 0.7; }\n", qr/:1: esp "sink": fail_transient \+ fail_permanent exceeds 1/, 'ratios above 1 together'],
        ["max_attempts 0;\n", qr/:1: .*max_attempts/, 'max_attempts at least 1'],
      ) {
        my ($text, $want, $name) = @$case;
        my $f = $c->write_conf($text, "check.conf");
        my ($rc, $out) = $c->run_cmd('-t', '-p', $c->dir, '-c', $f);
        if ($want) {
            ok($rc != 0 && $out =~ $want, "config: $name") or diag($out);
        } else {
            is($rc, 0, "config: $name") or diag($out);
        }
    }
}

my $S = MailerdTest->stack(
    main_extra => "esp sink {\n    dir sink;\n}\n"
      . "esp flaky {\n    driver sink;\n    dir flaky;\n    fail_transient 0.3;\n    seed 7;\n}\n"
      . "esp broken {\n    driver sink;\n    dir broken;\n    fail_permanent 1;\n}\n"
      . "max_attempts 20;\nretry_backoff_base 20ms;\nretry_backoff_max 200ms;\n"
      . "queue_recovery_interval 1s;\nqueue_recovery_full 1s;\n"
      # the priority check below bounds bulk mail in flight when the backlog lands
      . "dispatch_concurrency 64;\n"
      # no circuit breaker in the way of the retry checks (t/60 tests the breaker)
      . "routing {\n    breaker_failures 1000;\n    breaker_error_rate 1;\n}\n",
);
my $t = $S->{t};
my $pg = $S->{pg};
my $redis = $S->{redis};
my ($A) = @{ $S->{tenants} };
my $json = JSON::PP->new->canonical;
my $dir = $t->dir;

sub sql { scalar $pg->psql($_[0]) }

sub api {
    my ($method, $path, $body) = @_;
    my %h = (Authorization => "Bearer $A->{key}");
    $h{'Content-Type'} = 'application/json' if defined $body;
    return $t->request($method, $path, headers => \%h,
                       defined $body ? (body => $json->encode($body)) : ());
}

# Sends one message through the API; until the send API is wired into the
# workers (it answers 503 then), the row is written the way md_messages writes
# it and its id pushed the way md_queue_push does. Returns the id.
my $api_ok;
sub send_one {
    my (%m) = @_;
    %m = (from => 'Acme <billing@acme.example>', subject => 'Hi', text => 'Hello', %m);
    unless (defined $api_ok && !$api_ok) {
        my $r = api('POST', '/v1/messages', \%m);
        if ($r->{status} == 202 && $r->{json}) {
            $api_ok = 1;
            return $r->{json}{data}[0]{id};
        }
        die "send: $r->{status} $r->{body}" if $api_ok || $r->{status} != 503;
        $api_ok = 0;
        note('the send API is not serving yet: writing rows with psql and pushing with redis-cli');
    }
    return store_one(%m);
}

sub sq { my ($v) = @_; return defined $v ? '$q$' . $v . '$q$' : 'NULL' }

sub mailbox {
    my ($s) = @_;
    return ($2, $1) if $s =~ /^\s*"?(.*?)"?\s*<([^>]+)>\s*$/;
    return ($s, undef);
}

sub store_one {
    my (%m) = @_;
    my ($from, $from_name) = mailbox($m{from});
    my ($to, $to_name) = mailbox($m{to});
    my $cc = $json->encode([ map { my ($a, $n) = mailbox($_); { address => $a, defined $n ? (name => $n) : () } } @{ $m{cc} // [] } ]);
    my ($send_at, $status) = ('NULL', 'queued');
    if ($m{send_at}) {
        ($send_at, $status) = (sq($m{send_at}) . '::timestamptz', 'scheduled');
    }
    my $id = sql("WITH i AS (INSERT INTO messages (id, tenant_id, status, from_addr, from_name, to_addr, to_name, cc,"
                 . " reply_to, subject, text_body, html_body, headers, esp_route, send_at, next_attempt_at)"
                 . " VALUES (gen_random_uuid(), '$A->{id}', '$status', " . join(', ', map { sq($_) } $from, $from_name, $to, $to_name)
                 . ", " . sq($cc) . "::jsonb, " . join(', ', map { sq($_) } $m{reply_to}, $m{subject}, $m{text}, $m{html})
                 . ", " . sq($json->encode($m{headers} // {})) . "::jsonb, " . sq($m{esp}) . ", $send_at, $send_at)"
                 . " RETURNING id, tenant_id, status), e AS (INSERT INTO events (id, tenant_id, message_id, type)"
                 . " SELECT gen_random_uuid(), tenant_id, id, status FROM i) SELECT id FROM i");
    if ($m{send_at}) {
        my $at = sql("SELECT extract(epoch FROM send_at) FROM messages WHERE id = '$id'");
        $redis->cli('ZADD', 'mailerd:q:scheduled', $at, "t:$id");
    } else {
        $redis->cli('XADD', 'mailerd:q:transactional', 'MAXLEN', '~', '1000000', '*', 'id', $id);
    }
    return $id;
}

sub cancel {
    my ($id) = @_;
    return api('POST', "/v1/messages/$id/cancel")->{status} == 200 if $api_ok;
    return sql("WITH u AS (UPDATE messages SET status = 'canceled', updated_at = now() WHERE id = '$id'"
               . " AND status IN ('queued', 'scheduled', 'deferred') RETURNING id, tenant_id),"
               . " e AS (INSERT INTO events (id, tenant_id, message_id, type) SELECT gen_random_uuid(), tenant_id, id,"
               . " 'canceled' FROM u) SELECT count(*) FROM u") == 1;
}

# Many commands on one redis-cli connection (one per line; MULTI/EXEC work).
sub redis_pipe {
    my ($cmds) = @_;
    my $port = $redis->port;
    open(my $cli, '|-', "redis-cli -h 127.0.0.1 -p $port >/dev/null") or die "redis-cli: $!";
    { local $SIG{PIPE} = 'IGNORE'; print $cli $cmds; }
    close $cli or die "redis-cli failed: $?";
}

sub in_list { join(',', map { "'$_'" } @_) }

sub count_status {
    my ($status, @ids) = @_;
    return sql("SELECT count(*) FROM messages WHERE id IN (" . in_list(@ids) . ") AND status = '$status'");
}

# --- 1. delivered as valid MIME, with its events ----------------------------------------
my @ids;
for my $i (1 .. 6) {
    push @ids, send_one(
        to       => "Zoë Jones <user$i\@example.com>",
        cc       => ['cc@example.org'],
        reply_to => '"Help Desk" <help@acme.example>',
        subject  => "Grüße #$i",
        text     => "Hello $i\nSecond line",
        html     => "<p>Hello <b>$i</b></p>",
        headers  => { 'X-Campaign' => "c$i" },
    );
}
ok(wait_for(sub { count_status('delivered', @ids) == @ids }, 15), 'all six delivered')
  or diag(sql("SELECT id, status, attempts, last_error FROM messages"));
for my $id (@ids) {
    ok(-f "$dir/sink/$id.eml", "$id.eml written") or next;
}
my @tmp = glob("$dir/sink/.*tmp");
is(scalar @tmp, 0, 'no temporary files left in the sink directory');
my $e = parse_eml("$dir/sink/$ids[0].eml");
ok($e, 'python parses the .eml') or diag(slurp("$dir/sink/$ids[0].eml"));
if ($e) {
    my $h = $e->{headers};
    is($e->{defects}, 0, 'no MIME defects');
    ok($e->{crlf}, 'CRLF line endings');
    cmp_ok($e->{max_line}, '<=', 998, 'lines within 998 octets');
    like($h->{from}, qr/^Acme <billing\@acme\.example>$/, 'From');
    is($h->{to}, 'Zoë Jones <user1@example.com>', 'To with a non-ASCII display name, decoded');
    is($h->{cc}, 'cc@example.org', 'Cc');
    like($h->{'reply-to'}, qr/^"?Help Desk"? <help\@acme\.example>$/, 'Reply-To');
    is($h->{subject}, 'Grüße #1', 'Subject decoded (RFC 2047)');
    is($h->{'message-id'}, "<$ids[0]\@acme.example>", 'Message-ID from our id and the sender domain');
    is($h->{'x-mailerd-message-id'}, $ids[0], 'X-Mailerd-Message-Id');
    is($h->{'x-campaign'}, 'c1', 'custom header from the stored JSON');
    like($h->{date}, qr/\d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}/, 'Date');
    is($h->{'mime-version'}, '1.0', 'MIME-Version');
    is($e->{type}, 'multipart/alternative', 'multipart/alternative');
    my %p = map { $_->{type} => $_->{body} } @{ $e->{parts} };
    like($p{'text/plain'} // '', qr/^Hello 1\r?\nSecond line/, 'text part');
    like($p{'text/html'} // '', qr{<p>Hello <b>1</b></p>}, 'html part');
    ok(!exists $h->{bcc}, 'no Bcc header');
}
is(sql("SELECT string_agg(type, ',' ORDER BY created_at, id) FROM events WHERE message_id = '$ids[0]'"),
   'queued,sending,sent,delivered', 'events in order: queued, sending, sent, delivered');
is(sql("SELECT esp || '|' || esp_message_id || '|' || attempts || '|' || (sent_at IS NOT NULL)"
       . " || '|' || (delivered_at >= sent_at) || '|' || (lease_until IS NULL) FROM messages WHERE id = '$ids[0]'"),
   "sink|$ids[0]|1|true|true|true", 'esp, provider id, attempts, sent_at, delivered_at, lease cleared');
if ($api_ok) {
    my $r = api('GET', "/v1/messages/$ids[0]");
    is($r->{status}, 200, 'GET the delivered message');
    is($r->{json} && $r->{json}{status}, 'delivered', 'the API says delivered');
}
is(sql("SELECT count(*) FROM events WHERE message_id IN (" . in_list(@ids) . ") AND type = 'delivered'"),
   scalar @ids, 'one delivered event each');

# --- 2. transient failures are retried, permanent ones fail ----------------------------
my @flaky = map { send_one(to => "flaky$_\@example.com", esp => 'flaky') } 1 .. 30;
my @broken = map { send_one(to => "broken$_\@example.com", esp => 'broken') } 1 .. 3;
ok(wait_for(sub { count_status('delivered', @flaky) == @flaky }, 25), 'fail_transient 0.3: all delivered')
  or diag(sql("SELECT status, count(*), max(attempts) FROM messages WHERE id IN (" . in_list(@flaky) . ") GROUP BY 1"));
my $retried = sql("SELECT count(*) FROM messages WHERE id IN (" . in_list(@flaky) . ") AND attempts > 1");
cmp_ok($retried, '>', 0, "some needed more than one attempt ($retried of 30)");
is(sql("SELECT count(DISTINCT message_id) FROM events WHERE message_id IN (" . in_list(@flaky) . ") AND type = 'deferred'"),
   $retried, 'each retried message has deferred events');
is(scalar(grep { -f "$dir/flaky/$_.eml" } @flaky), 30, 'each flaky message written once it went through');
ok(wait_for(sub { count_status('failed', @broken) == @broken }, 10), 'fail_permanent 1: all failed');
like(sql("SELECT last_error FROM messages WHERE id = '$broken[0]'"), qr/^sink_rejected/, 'last_error names the rejection');
is(sql("SELECT string_agg(type, ',' ORDER BY created_at, id) FROM events WHERE message_id = '$broken[0]'"),
   'queued,sending,failed', 'events: queued, sending, failed');
is(scalar(grep { -e "$dir/broken/$_.eml" } @broken), 0, 'no file for a rejected message');

# --- 3. canceled messages are never written ---------------------------------------------
my $later = strftime('%Y-%m-%dT%H:%M:%SZ', gmtime(time + 2));
my $c1 = send_one(to => 'cancel@example.com', send_at => $later);
ok(cancel($c1), 'cancel a scheduled message');
# A stale entry for a canceled row (as if the cancel raced the queue).
my $c2 = send_one(to => 'cancel2@example.com', send_at => $later);
sql("UPDATE messages SET status = 'canceled' WHERE id = '$c2'");
$redis->cli('XADD', 'mailerd:q:transactional', '*', 'id', $c2);
my $probe = send_one(to => 'probe@example.com', send_at => strftime('%Y-%m-%dT%H:%M:%SZ', gmtime(time + 3)));
ok(wait_for(sub { count_status('delivered', $probe) == 1 }, 10), 'a message scheduled after them is delivered');
ok(!-e "$dir/sink/$c1.eml" && !-e "$dir/sink/$c2.eml", 'the canceled ones were never written');
is(sql("SELECT string_agg(status, ',' ORDER BY to_addr) FROM messages WHERE id IN ('$c1', '$c2')"),
   'canceled,canceled', 'both still canceled');
is(sql("SELECT count(*) FROM events WHERE message_id IN ('$c1', '$c2') AND type = 'sending'"), 0,
   'never claimed');

# --- 4. scheduled send_at ---------------------------------------------------------------
{
    my $at = int(time) + 3; # whole seconds: send_at is RFC 3339 without fractions
    my $s = send_one(to => 'later@example.com', send_at => strftime('%Y-%m-%dT%H:%M:%SZ', gmtime($at)));
    my $early = 0;
    while (time < $at - 0.1) {
        $early = 1 if -e "$dir/sink/$s.eml" || count_status('delivered', $s);
        sleep 0.1;
    }
    ok(!$early, 'scheduled message not delivered before send_at');
    ok(wait_for(sub { count_status('delivered', $s) == 1 }, 5), 'delivered after send_at');
    my $lag = sql("SELECT extract(epoch FROM delivered_at - send_at) FROM messages WHERE id = '$s'");
    cmp_ok($lag, '>=', 0, 'not before send_at (database clock)');
    cmp_ok($lag, '<', 2, "within 2 s of send_at ($lag s)");
    is(sql("SELECT string_agg(type, ',' ORDER BY created_at, id) FROM events WHERE message_id = '$s'"),
       'scheduled,sending,sent,delivered', 'events: scheduled, sending, sent, delivered');
}

# --- 5. transactional before bulk -------------------------------------------------------
{
    # Rows as the send API writes them, then all the entries in one MULTI so the
    # dispatchers find the whole backlog at once.
    my $mk = sub {
        my ($n, $prio) = @_;
        my $out = sql("WITH ins AS (INSERT INTO messages (id, tenant_id, status, priority, from_addr, to_addr, subject, text_body)"
                      . " SELECT gen_random_uuid(), '$A->{id}', 'queued', '$prio', 'bulk\@acme.example',"
                      . " 'r' || g || '\@example.com', '$prio ' || g, 'x' FROM generate_series(1, $n) g RETURNING id, tenant_id),"
                      . " ev AS (INSERT INTO events (id, tenant_id, message_id, type) SELECT gen_random_uuid(), tenant_id, id, 'queued' FROM ins)"
                      . " SELECT id FROM ins");
        return split /\n/, $out;
    };
    my @bulk = $mk->(2000, 'bulk');
    my @trans = $mk->(20, 'transactional');
    is(scalar @bulk, 2000, '2,000 bulk rows');
    my $cmds = "MULTI\n" . join('', map { "XADD mailerd:q:bulk * id $_\n" } @bulk)
      . join('', map { "XADD mailerd:q:transactional * id $_\n" } @trans) . "EXEC\n";
    redis_pipe($cmds);
    my $t0 = time;
    ok(wait_for(sub { count_status('delivered', @trans) == @trans }, 20), 'transactional delivered');
    my $bulk_before = sql("SELECT count(*) FROM messages WHERE priority = 'bulk' AND status = 'delivered'"
                          . " AND delivered_at < (SELECT max(delivered_at) FROM messages WHERE id IN (" . in_list(@trans) . "))");
    cmp_ok($bulk_before, '<', 500, "all transactional delivered before 500 of 2,000 bulk ($bulk_before)");
    ok(wait_for(sub { count_status('delivered', @bulk) == @bulk }, 40), 'the bulk backlog drains');
    note(sprintf('2,020 messages dispatched in %.1f s', time - $t0));
    is(scalar(() = glob("$dir/sink/*.eml")), scalar(@ids) + 1 + 1 + 2020, 'one file per delivered message');
}

# --- 6. a Redis outage at accept time ------------------------------------------------------
{
    $redis->stop;
    my $r2 = api('POST', '/v1/messages', { from => 'a@acme.example', to => 'outage@example.com',
                                           subject => 'during the outage', text => 'x' });
    my $oid;
    if ($r2->{status} == 202) {
        $oid = $r2->{json}{data}[0]{id};
        pass('accepted while Redis is down (committed in PostgreSQL)');
    } else {
        note("the API answered $r2->{status} during the outage; inserting the row as it would");
        $oid = sql("WITH i AS (INSERT INTO messages (id, tenant_id, status, from_addr, to_addr, text_body)"
                   . " VALUES (gen_random_uuid(), '$A->{id}', 'queued', 'a\@acme.example', 'outage\@example.com', 'x')"
                   . " RETURNING id, tenant_id), e AS (INSERT INTO events (id, tenant_id, message_id, type)"
                   . " SELECT gen_random_uuid(), tenant_id, id, 'queued' FROM i) SELECT id FROM i");
    }
    sleep 0.3;
    $redis->start; # empty: no streams, no group
    ok(wait_for(sub { count_status('delivered', $oid) == 1 }, 15), 'the recovery scan requeued it: delivered')
      or diag(sql("SELECT status, attempts, updated_at, now() FROM messages WHERE id = '$oid'"));
    ok(-f "$dir/sink/$oid.eml", 'and written');
}

# --- 7. metrics ------------------------------------------------------------------------
{
    my $m = $t->request('GET', '/metrics')->{body};
    my %v = $m =~ /^(mailerd_(?:messages_(?:sent|failed|deferred)_total|queue_\w+_total|dispatch_latency_seconds_\w+)) (\S+)$/mg;
    cmp_ok($v{mailerd_messages_sent_total} // 0, '>=', 2050, 'sent counted');
    cmp_ok($v{mailerd_messages_failed_total} // 0, '>=', 3, 'failed counted');
    cmp_ok($v{mailerd_messages_deferred_total} // 0, '>=', $retried, 'deferred counted');
    cmp_ok($v{mailerd_queue_requeued_total} // 0, '>=', 1, 'requeued counted');
    cmp_ok($v{mailerd_dispatch_latency_seconds_count} // 0, '>=', 2050, 'latency counted');
    cmp_ok($v{mailerd_dispatch_latency_seconds_sum} // 0, '>', 0, 'latency summed');
}

# Everything acknowledged: nothing left pending in the group.
my $pending = 0;
for my $s (qw(mailerd:q:transactional mailerd:q:bulk)) {
    my $x = $redis->cli('XPENDING', $s, 'mailerd') // '';
    $pending += ($x =~ /^(\d+)/ ? $1 : 0);
}
is($pending, 0, 'no stream entry left pending');

# --- 8. a graceful stop in the middle of a backlog, then the restart -------------------------
{
    my @bulk = split /\n/, sql("WITH ins AS (INSERT INTO messages (id, tenant_id, status, priority, from_addr, to_addr, text_body)"
                              . " SELECT gen_random_uuid(), '$A->{id}', 'queued', 'bulk', 'stop\@acme.example',"
                              . " 'stop' || g || '\@example.com', 'x' FROM generate_series(1, 3000) g RETURNING id)"
                              . " SELECT id FROM ins");
    redis_pipe(join('', map { "XADD mailerd:q:bulk * id $_\n" } @bulk));
    wait_for(sub { count_status('delivered', @bulk) >= 300 }, 10);
    is($t->stop, 0, 'graceful stop while dispatching');
    my %st = split /[|\n]/, sql("SELECT status, count(*) FROM messages WHERE id IN (" . in_list(@bulk) . ") GROUP BY 1");
    note(join(', ', map { "$_: $st{$_}" } sort keys %st));
    ok(!grep({ !/^(queued|sending|delivered)$/ } keys %st), 'stopped: each message queued, sending or delivered');
    my @files = grep { -f "$dir/sink/$_.eml" } @bulk;
    is(scalar @files, $st{delivered} // 0, 'a file exactly for each delivered message (nothing sent unrecorded)');
    is(sql("SELECT count(*) FROM messages WHERE id IN (" . in_list(@bulk) . ") AND status = 'sending' AND lease_until > now()"),
       $st{sending} // 0, 'those left sending hold a lease');
    # As if the lease (5 minutes) had run out; the restarted workers' scan takes them back.
    sql("UPDATE messages SET lease_until = now() - interval '1 second' WHERE status = 'sending'");
    # And one whose worker died holding it (no stream entry left anywhere).
    my $held = sql("WITH i AS (INSERT INTO messages (id, tenant_id, status, attempts, lease_until, from_addr, to_addr, text_body)"
                   . " VALUES (gen_random_uuid(), '$A->{id}', 'sending', 1, now() - interval '1 minute', 'a\@acme.example',"
                   . " 'held\@example.com', 'x') RETURNING id) SELECT id FROM i");
    $t->start;
    ok(wait_for(sub { count_status('delivered', $held) == 1 }, 10), 'an expired lease is requeued and delivered');
    is(sql("SELECT string_agg(type || coalesce(':' || (data->>'reason'), ''), ',' ORDER BY created_at, id) FROM events WHERE message_id = '$held'"),
       'queued:lease_expired,sending,sent,delivered', 'with a queued event saying why');
    is(sql("SELECT attempts FROM messages WHERE id = '$held'"), 2, 'the lost attempt still counts');
    ok(wait_for(sub { count_status('delivered', @bulk) == @bulk }, 25), 'after the restart every message is delivered')
      or diag(sql("SELECT status, count(*) FROM messages WHERE id IN (" . in_list(@bulk) . ") GROUP BY 1"));
    is(scalar(grep { -f "$dir/sink/$_.eml" } @bulk), 3000, 'and written');
}

# --- 9. a stop while a claim waits: what it claimed is handed back, not left to the lease ----
# A transaction of the test holds the rows of five queued messages, so the
# claim of their entries waits on the row locks; the stop comes while it waits,
# and the locks go only after. The stopping worker must wait for that claim and
# release what it took (released at once, the release found nothing to take
# and the claim then left the five "sending" for the 5-minute lease).
{
    my @ids = split /\n/, sql("WITH ins AS (INSERT INTO messages (id, tenant_id, status, from_addr, to_addr, text_body)"
                              . " SELECT gen_random_uuid(), '$A->{id}', 'queued', 'lock\@acme.example',"
                              . " 'lock' || g || '\@example.com', 'x' FROM generate_series(1, 5) g RETURNING id)"
                              . " SELECT id FROM ins");
    open(my $lock, '|-', 'psql', '-X', '-q', '-h', '127.0.0.1', '-p', $pg->{port}, '-U', $pg->{user}, '-d', $pg->{db})
      or die "psql: $!";
    { my $old = select($lock); $| = 1; select($old); }
    print $lock "BEGIN;\nSELECT id FROM messages WHERE id IN (" . in_list(@ids) . ") FOR UPDATE;\n";
    ok(wait_for(sub { sql("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                          . " WHERE a.state = 'idle in transaction' AND l.locktype = 'transactionid'") >= 1 }, 10),
       'the test holds the rows');
    redis_pipe(join('', map { "XADD mailerd:q:transactional * id $_\nSADD mailerd:q:live $_\n" } @ids));
    ok(wait_for(sub { sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'") >= 1 }, 10),
       'a claim waits for them');
    $t->signal('QUIT');
    sleep 0.5;
    print $lock "COMMIT;\n";
    close $lock;
    my $st = $t->wait_exit(30);
    is($st, 0, 'the stop finished once the claim could');
    is(sql("SELECT string_agg(status || ':' || attempts, ',') FROM messages WHERE id IN (" . in_list(@ids) . ")"),
       join(',', ('queued:0') x 5), 'the claimed messages were handed back: queued, attempt given back');
    is(sql("SELECT count(*) FROM events WHERE message_id IN (" . in_list(@ids) . ") AND type = 'queued'"
           . " AND data->>'reason' = 'handed_back'"), 5, "each with a 'queued' event, reason handed_back");
    $t->start;
    ok(wait_for(sub { count_status('delivered', @ids) == 5 }, 10), 'after the restart they go at once (no lease to wait out)');
}

is($t->stop, 0, 'graceful stop');
done_testing;
