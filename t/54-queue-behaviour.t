# scripts/test: alone (load, timing or rate assertions: no other test beside it)
# Issue 5, "what must be shown": the behaviour of the hardened queue through the
# API, against the real stack (PostgreSQL, Redis, mailerd with 2 workers, two
# tenants and sink accounts that journal every delivery, so a double send shows):
#   - retries: with the sink failing 30% transiently, 300 messages all end
#     delivered, once each; attempts are recorded (attempts > 1 for some, one
#     'deferred' event per failed attempt, the journal's attempt number, GET
#     /v1/messages/{id});
#   - dead letters: fail_permanent 1 -> 'failed' after exactly one attempt, a
#     dead_letters row, listed by GET /v1/queue/dead with its reason, an entry on
#     the mailerd:q:dead stream; after a reload to fail_permanent 0, POST
#     /v1/queue/retry-failed sends them again and they end delivered and leave
#     the dead list; max_attempts 2 with a sink that always fails transiently ->
#     failed after two attempts, a dead letter too;
#   - scheduled: send_at 3-4 s ahead is not sent before send_at and is sent
#     within 2 s after it; one canceled before then is never sent;
#   - pause: POST /v1/queue/pause holds tenant A's mail while B's flows; resume
#     releases A's;
#   - priority: a bulk backlog of 20,000 (accepted through the batch API under
#     the admin pause, then released); transactional messages sent during the
#     drain are each sent within one second while bulk is still waiting.
# Each subtest names what it checks in PostgreSQL and Redis apart from what the
# API answers, so a failure says which part is missing.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use JSON::PP;
use POSIX qw(strftime);
use Time::HiRes qw(time sleep);
use MailerdTest qw(wait_for slurp);

MailerdTest::skip_without_store();

# Interrupted: exit through global destruction so the stack's destructors stop
# PostgreSQL, Redis and mailerd.
$SIG{INT} = $SIG{TERM} = sub { exit 130 };

my $S = MailerdTest->stack(
    tenants    => 2,
    main_extra => "esp sink {\n    dir sink;\n    journal sink.journal;\n}\n"
      . "esp flaky {\n    driver sink;\n    dir flaky;\n    journal flaky.journal;\n    fail_transient 0.3;\n    seed 11;\n}\n"
      . "esp broken {\n    driver sink;\n    dir broken;\n    journal broken.journal;\n    fail_permanent 1;\n}\n"
      . "esp exhaust {\n    driver sink;\n    dir exhaust;\n    journal exhaust.journal;\n    fail_transient 1;\n}\n"
      . "max_attempts 20;\nretry_backoff_base 20ms;\nretry_backoff_max 200ms;\n"
      . "queue_recovery_interval 1s;\nqueue_recovery_full 1s;\n"
      # The circuit breaker (t/60) would open on five failures in a row, which a
      # 30% failure rate produces now and then, and defer everything for its
      # cool-down: here only the retry machinery is under test.
      . "routing {\n    breaker_failures 1000;\n    breaker_error_rate 1;\n}\n",
);
my $t = $S->{t};
my $pg = $S->{pg};
my $redis = $S->{redis};
my ($A, $B) = @{ $S->{tenants} };
my $dir = $t->dir;
my $json_dump = sub { JSON::PP->new->canonical->allow_nonref->encode($_[0]) };

sub sql { scalar $pg->psql($_[0]) }
sub api { my ($who, @r) = @_; return $t->json_request(ref $who ? $who->{key} : $who, @r) }
sub in_list { join(',', map { "'$_'" } @_) }
sub ok2xx { my ($r) = @_; return $r->{status} >= 200 && $r->{status} < 300 }
sub brief { my ($r) = @_; return "$r->{status} " . substr($r->{body} // '', 0, 300) }

# Sends one batch through the API (default: the default account, transactional);
# returns the ids accepted, in recipient order, and the batch id.
sub send_batch {
    my ($who, $tos, %f) = @_;
    my $r = api($who, 'POST', '/v1/messages/batch',
                { from => 'Acme <billing@acme.example>', subject => 'queue test', text => 'Hello',
                  %f, recipients => [ map { { to => $_ } } @$tos ] });
    die 'batch send: ' . brief($r) unless $r->{status} == 202 && $r->{json};
    return ([ map { $_->{id} } @{ $r->{json}{accepted} } ], $r->{json}{batch_id});
}

sub send_one {
    my ($who, %f) = @_;
    my $r = api($who, 'POST', '/v1/messages',
                { from => 'Acme <billing@acme.example>', to => 'one@example.com', subject => 'one',
                  text => 'Hello', %f });
    die 'send: ' . brief($r) unless $r->{status} == 202 && $r->{json};
    return $r->{json}{data}[0]{id};
}

sub count_status {
    my ($status, @ids) = @_;
    return 0 unless @ids;
    return sql("SELECT count(*) FROM messages WHERE id IN (" . in_list(@ids) . ") AND status = '$status'");
}

sub wait_status {
    my ($status, $ids, $timeout) = @_;
    return wait_for(sub { count_status($status, @$ids) == @$ids }, $timeout);
}

# Where a set of messages stands, for diagnostics.
sub summary {
    my (@ids) = @_;
    return sql("SELECT status || ': ' || count(*) || ' (attempts ' || min(attempts) || '..' || max(attempts)"
               . " || coalesce(', e.g. ' || min(last_error), '') || ')' FROM messages WHERE id IN (" . in_list(@ids)
               . ") GROUP BY status ORDER BY status");
}

sub events_of {
    my ($id) = @_;
    return sql("SELECT string_agg(type, ',' ORDER BY created_at, id) FROM events WHERE message_id = '$id'") // '';
}

# The sink files and journal entries of some messages under an account.
sub files_of { my ($acct, @ids) = @_; return scalar grep { -e "$dir/$acct/$_.eml" } @ids }
sub journal_of {
    my ($acct, @ids) = @_;
    my $j = $t->sink_journal("$acct.journal");
    my ($once, $twice, $none) = (0, 0, 0);
    for (@ids) {
        my $n = scalar @{ $j->{$_} // [] };
        $n == 0 ? $none++ : $n == 1 ? $once++ : $twice++;
    }
    return { once => $once, more => $twice, none => $none, j => $j };
}

# Each message sent once: one 'sent' event each and, when the sink account
# journals (its journal directive), exactly one journal line each.
sub sent_once {
    my ($acct, $name, @ids) = @_;
    my $in = in_list(@ids);
    is(sql("SELECT count(*) FROM messages m WHERE id IN ($in) AND (SELECT count(*) FROM events e"
           . " WHERE e.message_id = m.id AND e.type = 'sent') <> 1"), 0, "$name: one 'sent' event each");
  SKIP: {
        skip "no $acct.journal: the sink does not write its journal yet", 1 unless -e "$dir/$acct.journal";
        my $jn = journal_of($acct, @ids);
        is($jn->{once}, scalar @ids, "$name: the sink journal has each exactly once")
          or diag("once $jn->{once}, more than once $jn->{more}, never $jn->{none}");
    }
}

# GET /v1/queue/dead for a tenant, following next_cursor; returns (status of the
# first page, { message id => entry }).
sub dead_list {
    my ($who) = @_;
    my (%e, $first, $cursor);
    for (1 .. 50) {
        my $r = api($who, 'GET', '/v1/queue/dead' . (defined $cursor ? "?cursor=$cursor" : ''));
        $first //= $r;
        last unless $r->{status} == 200 && ref $r->{json} eq 'HASH' && ref $r->{json}{data} eq 'ARRAY';
        for my $d (@{ $r->{json}{data} }) {
            my $id = $d->{message_id} // $d->{id} // next;
            $e{$id} = $d;
        }
        $cursor = $r->{json}{next_cursor};
        last unless defined $cursor && length $cursor;
    }
    return ($first, \%e);
}

# The mailerd:q:dead stream as { message id => { field => value } }.
sub dead_stream {
    my %e;
    my $out = $redis->cli('XRANGE', 'mailerd:q:dead', '-', '+') // '';
    my @l = split /\n/, $out;
    my $cur;
    for (my $i = 0; $i < @l; $i++) {
        if ($l[$i] =~ /^\d+-\d+$/) { $cur = {}; next }
        next unless $cur && $i + 1 < @l;
        $cur->{ $l[$i] } = $l[$i + 1];
        $e{ $cur->{id} } = $cur if $l[$i] eq 'id';
        $i++;
    }
    return \%e;
}

# Runs a subtest; a die inside (a refused send, a dead server) fails it with the
# reason and lets the others run.
sub guarded {
    my ($name, $code) = @_;
    subtest $name => sub {
        eval { $code->(); 1 } or fail("$name: died: $@");
    };
}

# --- retries ------------------------------------------------------------------------------
guarded 'retries: 30% transient failures, every message delivered once, attempts recorded' => sub {
    my ($ids) = send_batch($A, [ map { "retry$_\@example.com" } 1 .. 300 ], esp => 'flaky', subject => 'retry');
    my @ids = @$ids;
    is(scalar @ids, 300, '300 accepted');
    ok(wait_status('delivered', \@ids, 40), 'every message ends delivered') or diag(summary(@ids));
    my $in = in_list(@ids);
    my $retried = sql("SELECT count(*) FROM messages WHERE id IN ($in) AND attempts > 1");
    cmp_ok($retried, '>=', 30, "retries happened: $retried of 300 needed more than one attempt (expected ~90)");
    cmp_ok($retried, '<=', 180, 'and not far more than a 30% failure rate explains');
    is(sql("SELECT count(DISTINCT message_id) FROM events WHERE message_id IN ($in) AND type = 'deferred'"),
       $retried, "the $retried retried messages, and only they, have 'deferred' events");
    is(sql("SELECT count(*) FROM messages m WHERE id IN ($in) AND attempts - 1 <>"
           . " (SELECT count(*) FROM events e WHERE e.message_id = m.id AND e.type = 'deferred')"), 0,
       "one 'deferred' event per failed attempt (attempts - 1 of them)")
      or diag(sql("SELECT m.id, m.attempts, (SELECT string_agg(type, ',' ORDER BY created_at, id) FROM events e"
                  . " WHERE e.message_id = m.id) FROM messages m WHERE id IN ($in) AND attempts > 1 LIMIT 3"));
    sent_once('flaky', 'delivered once', @ids);
    my %att = split /[|\n]/, sql("SELECT id, attempts FROM messages WHERE id IN ($in)");
  SKIP: {
        skip 'no flaky.journal: the sink does not write its journal yet', 1 unless -e "$dir/flaky.journal";
        my $j = journal_of('flaky', @ids)->{j};
        is(scalar(grep { ($j->{$_}[-1] // -1) != ($att{$_} // -2) } @ids), 0,
           'the attempt the sink journaled is the attempt count recorded');
    }
    is(files_of('flaky', @ids), 300, 'one .eml each');
    is(sql("SELECT count(*) FROM dead_letters WHERE message_id IN ($in)"), 0, 'no dead letter among them');

    my $one = sql("SELECT id FROM messages WHERE id IN ($in) ORDER BY attempts DESC, id LIMIT 1");
    my $r = api($A, 'GET', "/v1/messages/$one");
    is($r->{status}, 200, 'GET /v1/messages/{id} of a retried message');
    my $m = $r->{json} // {};
    is($m->{attempts}, $att{$one}, "the API shows its attempts ($att{$one})");
    is($m->{status}, 'delivered', 'and status delivered');
    ok((grep { ($_->{type} // '') eq 'deferred' } @{ $m->{events} // [] }), "and its 'deferred' events")
      or diag(brief($r));
};

# --- dead letters ---------------------------------------------------------------------------
guarded 'dead letters: permanent failure, the dead list and stream, retry-failed' => sub {
    my ($ids) = send_batch($A, [ map { "dead$_\@example.com" } 1 .. 20 ], esp => 'broken', subject => 'dead');
    my @ids = @$ids;
    my $in = in_list(@ids);
    ok(wait_status('failed', \@ids, 15), "fail_permanent 1: all 20 end 'failed'") or diag(summary(@ids));
    sleep 0.5; # longer than any retry delay here: a retry would show
    is(sql("SELECT count(*) FROM messages WHERE id IN ($in) AND attempts = 1 AND status = 'failed'"), 20,
       'after exactly one attempt, and not retried')
      or diag(summary(@ids));
    is(events_of($ids[0]), 'queued,sending,failed', 'events: queued, sending, failed');
    is(files_of('broken', @ids), 0, 'nothing written by the sink');

    my %dl = split /[|\n]/, sql("SELECT message_id, code || '/' || attempts || '/' || coalesce(esp, '') || '/' || reason"
                                . " FROM dead_letters WHERE message_id IN ($in)");
    is(scalar keys %dl, 20, 'PostgreSQL: a dead_letters row each (queue side)');
    like($dl{ $ids[0] } // '', qr{^sink_rejected/1/broken/\S}, 'the row: code sink_rejected, 1 attempt, esp, a reason')
      or diag($dl{ $ids[0] } // 'no row');
    note("rejected: code/attempts/esp/reason = " . ($dl{ $ids[0] } // 'no row'));

    my ($r, $listed) = dead_list($A);
    is($r->{status}, 200, 'GET /v1/queue/dead: 200 (API side)') or diag(brief($r));
    is(scalar(grep { $listed->{$_} } @ids), 20, 'lists all 20');
    my $d = $listed->{ $ids[0] } // {};
    ok(defined $d->{reason} && length $d->{reason}, 'with a reason') or diag($json_dump->($d));
    is($d->{code}, 'sink_rejected', 'and the code');
    my ($rb, $listed_b) = dead_list($B);
    is(scalar(grep { $listed_b->{$_} } @ids), 0, "tenant B does not see A's dead letters") if $rb->{status} == 200;

    my $ds = dead_stream();
    is(scalar(grep { $ds->{$_} } @ids), 20, 'Redis: each on the mailerd:q:dead stream');
    my $se = $ds->{ $ids[0] } // {};
    ok(($se->{tenant} // '') eq $A->{id} && ($se->{code} // '') eq 'sink_rejected' && length($se->{reason} // ''),
       'stream entry: id, tenant, code, reason') or diag($json_dump->($se));

    # The account heals; retry-failed sends them again. max_attempts 2 for what follows.
    my $pids = $t->reload_conf(sub {
        my ($c) = @_;
        $c =~ s/fail_permanent 1;/fail_permanent 0;/ or die 'no fail_permanent in the config';
        $c =~ s/max_attempts 20;/max_attempts 2;/ or die 'no max_attempts in the config';
        return $c;
    });
    ok($pids, 'SIGHUP: reloaded to fail_permanent 0, max_attempts 2, workers replaced')
      or diag('workers: ' . join(' ', $t->worker_pids));
    # One by id first: only it moves.
    $r = api($A, 'POST', '/v1/queue/retry-failed', { message_ids => [ $ids[0] ] });
    ok(ok2xx($r), 'POST /v1/queue/retry-failed {message_ids: [one]}: 2xx') or diag(brief($r));
    if (ok2xx($r)) {
        ok(wait_status('delivered', [ $ids[0] ], 10), 'that one is sent again and ends delivered')
          or diag(summary($ids[0]));
        is(count_status('failed', @ids[1 .. $#ids]), 19, 'the other 19 are still failed');
    }
    $r = api($A, 'POST', '/v1/queue/retry-failed', {});
    ok(ok2xx($r), 'POST /v1/queue/retry-failed {} (all of the tenant): 2xx') or diag(brief($r));
    if (ok2xx($r)) {
        ok(wait_status('delivered', \@ids, 15), 'all 20 are sent again and end delivered') or diag(summary(@ids));
        like(events_of($ids[1]), qr/^queued,sending,failed,queued,sending,sent,delivered$/,
             'events: failed, queued again, then sent and delivered') or diag(events_of($ids[1]));
        sent_once('broken', 'retried', @ids);
    }
    if (keys %dl) {
        is(sql("SELECT count(*) FROM dead_letters WHERE message_id IN ($in)"), 0, 'their dead_letters rows are gone');
    }
    ($r, $listed) = dead_list($A);
    is(scalar(grep { $listed->{$_} } @ids), 0, 'GET /v1/queue/dead no longer lists them') if $r->{status} == 200;

    # max_attempts exhausted.
    my ($ex) = send_batch($A, [ map { "exhaust$_\@example.com" } 1 .. 5 ], esp => 'exhaust', subject => 'exhaust');
    my @ex = @$ex;
    my $exin = in_list(@ex);
    ok(wait_status('failed', \@ex, 15), "max_attempts 2, always failing transiently: 'failed'") or diag(summary(@ex));
    is(sql("SELECT count(*) FROM messages WHERE id IN ($exin) AND attempts = 2"), 5, 'after exactly 2 attempts')
      or diag(summary(@ex));
    is(events_of($ex[0]), 'queued,sending,deferred,sending,failed', 'events: one deferral, then failed');
    is(sql("SELECT count(*) FROM dead_letters WHERE message_id IN ($exin) AND attempts = 2 AND reason <> ''"), 5,
       'PostgreSQL: dead_letters rows with 2 attempts and a reason')
      or diag(sql("SELECT code, attempts, reason FROM dead_letters WHERE message_id IN ($exin)"));
    note('exhausted: ' . sql("SELECT code || ': ' || reason FROM dead_letters WHERE message_id = '$ex[0]'"));
    ($r, $listed) = dead_list($A);
    is(scalar(grep { $listed->{$_} && length($listed->{$_}{reason} // '') } @ex), 5,
       'GET /v1/queue/dead lists them with a reason') or diag(brief($r));
    $ds = dead_stream();
    is(scalar(grep { $ds->{$_} } @ex), 5, 'and they are on the mailerd:q:dead stream');
    is(files_of('exhaust', @ex), 0, 'nothing written');
};

# --- scheduled sends -------------------------------------------------------------------------
guarded 'scheduled: not before send_at, within 2 s after; canceled ones never sent' => sub {
    my $at = int(time) + 4; # 3 to 4 s ahead, whole seconds
    my $send_at = strftime('%Y-%m-%dT%H:%M:%SZ', gmtime $at);
    my @ids = map { send_one($A, to => "sched$_\@example.com", send_at => $send_at) } 1 .. 3;
    push @ids, send_one($A, to => 'schedbulk@example.com', send_at => $send_at, priority => 'bulk');
    my ($cx, $cx2) = map { send_one($A, to => "cancel$_\@example.com", send_at => $send_at) } 1 .. 2;
    my $in = in_list(@ids);
    is(sql("SELECT count(*) FROM messages WHERE id IN ($in, '$cx', '$cx2') AND status = 'scheduled'"
           . " AND extract(epoch FROM send_at) = $at"), 6, "six stored 'scheduled' with send_at $send_at");
    my $r = api($A, 'POST', "/v1/messages/$cx/cancel");
    is($r->{status}, 200, 'cancel one at once') or diag(brief($r));
    wait_for(sub { time >= $at - 2 }, 5);
    $r = api($A, 'POST', "/v1/messages/$cx2/cancel");
    is($r->{status}, 200, 'cancel another 2 s before send_at') or diag(brief($r));

    my ($early, $polls) = ('', 0);
    while (time < $at - 0.2) {
        my $s = sql("SELECT string_agg(id || '=' || status, ' ') FROM messages WHERE id IN ($in)"
                    . " AND status NOT IN ('scheduled', 'queued')");
        $polls++;
        if ($s) { $early = $s . sprintf(' at %.2f s before send_at', $at - time); last }
        sleep 0.1;
    }
    is($early, '', "none taken before send_at ($polls polls up to 0.2 s before)");
    is(files_of('sink', @ids), 0, 'no file before send_at');

    ok(wait_for(sub { count_status('delivered', @ids) == @ids || time > $at + 4 }, 10)
       && count_status('delivered', @ids) == @ids, 'all four delivered') or diag(summary(@ids));
    my %d = split /[|\n]/, sql("SELECT id, extract(epoch FROM sent_at) - $at FROM messages WHERE id IN ($in)");
    for my $id (@ids) {
        my $dt = $d{$id};
        ok(defined $dt && length $dt && $dt >= 0 && $dt <= 2,
           sprintf('%s sent %s s after send_at (0..2)', $id, defined $dt && length $dt ? sprintf('%.3f', $dt) : 'never'));
    }
    sent_once('sink', 'scheduled', @ids);

    ok(wait_for(sub { time > $at + 2.5 }, 10), 'waited past send_at + 2 s');
    is(sql("SELECT string_agg(status, ',') FROM messages WHERE id IN ('$cx', '$cx2')"), 'canceled,canceled',
       'the canceled ones are still canceled');
    is(sql("SELECT count(*) FROM events WHERE message_id IN ('$cx', '$cx2') AND type = 'sending'"), 0,
       'never claimed');
    my $jn = journal_of('sink', $cx, $cx2);
    ok(!files_of('sink', $cx, $cx2) && !$jn->{once} && !$jn->{more}, 'never in the sink');
};

# --- pause and resume -------------------------------------------------------------------------
guarded "pause: tenant A's mail is held while B's flows; resume releases it" => sub {
    my $r = api($A, 'POST', '/v1/queue/pause', {});
    ok(ok2xx($r), 'POST /v1/queue/pause as A: 2xx') or diag(brief($r));
    is(sql("SELECT count(*) FROM queue_pauses WHERE scope = '$A->{id}'"), 1, 'PostgreSQL: queue_pauses has A');
    my ($a) = send_batch($A, [ map { "pa$_\@example.com" } 1 .. 20 ], subject => 'paused A');
    my ($b) = send_batch($B, [ map { "pb$_\@example.com" } 1 .. 20 ], subject => 'flowing B');
    my $a_bulk = send_one($A, to => 'pabulk@example.com', priority => 'bulk');
    my @a = (@$a, $a_bulk);
    my @b = @$b;
    ok(wait_status('delivered', \@b, 15), "B's 20 are delivered while A is paused") or diag(summary(@b));
    sleep 0.5;
    is(count_status('queued', @a), 21, "A's 21 are still 'queued'") or diag(summary(@a));
    is(sql("SELECT count(*) FROM events WHERE message_id IN (" . in_list(@a) . ") AND type = 'sending'"), 0,
       "none of A's was claimed");
    is(files_of('sink', @a), 0, "none of A's is in the sink");
    my $g = api($A, 'GET', "/v1/messages/$a[0]");
    is($g->{json} && $g->{json}{status}, 'queued', 'GET shows A\'s message queued') or diag(brief($g));

    $r = api($A, 'POST', '/v1/queue/resume', {});
    ok(ok2xx($r), 'POST /v1/queue/resume as A: 2xx') or diag(brief($r));
    if (ok2xx($r)) {
        is(sql("SELECT count(*) FROM queue_pauses WHERE scope = '$A->{id}'"), 0, 'PostgreSQL: the pause is gone');
    }
    ok(wait_status('delivered', \@a, 15), "A's are all delivered after the resume") or diag(summary(@a));
    sent_once('sink', 'paused and resumed', @a, @b);
};

# --- priority -----------------------------------------------------------------------------------
guarded 'priority: with a bulk backlog of 20,000 a transactional message is sent within 1 s' => sub {
    my $t0 = time;
    my $r = api($S->{admin}, 'POST', '/v1/admin/queue/pause', {});
    my $held = ok2xx($r);
    ok($held, 'POST /v1/admin/queue/pause (global): 2xx') or diag(brief($r));
    my @batches;
    if ($held) {
        for my $k (1 .. 20) {
            my (undef, $bid) = send_batch($A, [ map { "bulk${k}_$_\@example.com" } 1 .. 1000 ],
                                          priority => 'bulk', subject => "bulk $k");
            push @batches, $bid;
        }
    } else {
        # Without the admin pause: write the rows and their entries directly, the
        # way the accept path does, so the drain still starts with 20,000 waiting.
        note('no admin pause: inserting 20,000 bulk rows with psql and pushing them with redis-cli');
        my $bid = sql("INSERT INTO batches (id, tenant_id, accepted) VALUES (gen_random_uuid(), '$A->{id}', 20000) RETURNING id");
        my @ids = split /\n/, sql("WITH ins AS (INSERT INTO messages (id, tenant_id, batch_id, status, priority, from_addr, to_addr,"
                                  . " subject, text_body) SELECT gen_random_uuid(), '$A->{id}', '$bid', 'queued', 'bulk',"
                                  . " 'bulk\@acme.example', 'b' || g || '\@example.com', 'bulk', 'x'"
                                  . " FROM generate_series(1, 20000) g RETURNING id, tenant_id),"
                                  . " ev AS (INSERT INTO events (id, tenant_id, message_id, type)"
                                  . " SELECT gen_random_uuid(), tenant_id, id, 'queued' FROM ins) SELECT id FROM ins");
        my $port = $redis->port;
        open(my $cli, '|-', "redis-cli -h 127.0.0.1 -p $port >/dev/null") or die "redis-cli: $!";
        print $cli join('', map { "SADD mailerd:q:live $_\nXADD mailerd:q:bulk MAXLEN ~ 1000000 * id $_\n" } @ids);
        close $cli;
        push @batches, $bid;
    }
    my $bin = in_list(@batches);
    my $nbulk = sql("SELECT count(*) FROM messages WHERE batch_id IN ($bin)");
    is($nbulk, 20000, sprintf('20,000 bulk messages accepted (%.1f s)', time - $t0));
    if ($held) {
        sleep 0.3;
        is(sql("SELECT count(*) FROM messages WHERE batch_id IN ($bin) AND status <> 'queued'"), 0,
           'the admin pause held every one of them');
        $r = api($S->{admin}, 'POST', '/v1/admin/queue/resume', {});
        ok(ok2xx($r), 'POST /v1/admin/queue/resume: 2xx') or diag(brief($r));
    }
    my $drain0 = time;
    # The drain of 20,000 takes about a second on two cores, so the start is
    # seen by the cheapest query and the three sends follow each other closely:
    # each must go out while bulk is still waiting.
    ok(wait_for(sub { sql("SELECT EXISTS (SELECT 1 FROM messages WHERE batch_id IN ($bin) AND status = 'delivered')") eq 't' }, 10),
       'the bulk drain has started');
    my @tx;
    for my $i (1 .. 3) {
        push @tx, send_one($A, to => "urgent$i\@example.com", subject => "urgent $i");
        sleep 0.03;
    }
    ok(wait_status('delivered', \@tx, 10), 'the transactional messages are delivered') or diag(summary(@tx));
    for my $id (@tx) {
        my $g = api($A, 'GET', "/v1/messages/$id");
        my $m = $g->{json} // {};
        my $lat = sql("SELECT extract(epoch FROM sent_at - created_at) FROM messages WHERE id = '$id'");
        my $left = sql("SELECT count(*) FROM messages WHERE batch_id IN ($bin) AND (sent_at IS NULL"
                       . " OR sent_at > (SELECT sent_at FROM messages WHERE id = '$id'))");
        ok(defined $m->{sent_at} && defined $m->{created_at}, 'GET shows created_at and sent_at') or diag(brief($g));
        ok(length($lat // '') && $lat < 1.0, sprintf('%s sent %s s after it was accepted (< 1 s)', $id,
                                                     length($lat // '') ? sprintf('%.3f', $lat) : 'never'));
        cmp_ok($left, '>', 0, "while bulk was still waiting ($left of 20,000 not yet sent)");
    }
    ok(wait_for(sub { sql("SELECT count(*) FROM messages WHERE batch_id IN ($bin) AND status = 'delivered'") == 20000 }, 60),
       'the backlog drains') or diag(sql("SELECT status, count(*) FROM messages WHERE batch_id IN ($bin) GROUP BY 1"));
    note(sprintf('20,000 bulk drained in %.1f s', time - $drain0));
    is(sql("SELECT count(*) FROM (SELECT message_id FROM events e JOIN messages m ON m.id = e.message_id"
           . " WHERE m.batch_id IN ($bin) AND e.type = 'sent' GROUP BY 1 HAVING count(*) > 1) x"), 0,
       "no bulk message has two 'sent' events");
  SKIP: {
        skip 'no sink.journal: the sink does not write its journal yet', 1 unless -e "$dir/sink.journal";
        my $j = $t->sink_journal('sink.journal');
        my $dups = grep { @{ $j->{$_} } > 1 } keys %$j;
        is($dups, 0, 'no message sent twice (sink journal)');
    }
};

is($t->stop, 0, 'graceful stop');
done_testing;
