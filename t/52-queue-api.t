# The queue control API (issue 5) against the real stack (PostgreSQL, Redis,
# mailerd with 2 workers), three tenants:
#   phase 1, no esp block (nothing is dispatched, so rows written with psql keep
#   their status while the API reads them):
#   - 401 without a key on every route, admin routes refuse a tenant key and
#     tenant routes the admin token, and a refused request changes nothing;
#   - GET /v1/queue/stats: exact figures for a tenant (queued by priority,
#     scheduled, deferred, in flight, dead, sent/failed of the last minute,
#     older events not counted), other tenants' rows not counted; the admin
#     form sums every tenant and carries the Redis figures (or redis_error);
#   - pause/resume: idempotent (changed false the second time, same paused_at),
#     the queue_pauses row, the global pause seen from a tenant, resume's requeue
#     outcome; bad bodies refused with nothing written;
#   - GET /v1/queue/dead: newest first, cursor pagination walks every row once
#     (rows sharing one created_at included), batch_id and code filters, tenant
#     isolation, every query-parameter error with its field;
#   - POST /v1/queue/retry-failed: every validation error with its field and
#     nothing changed; unknown batch / another tenant's id retry nothing; by ids,
#     by batch and all: status queued, attempts 0, errors cleared, a queued
#     event with reason retry, the dead row gone; 2,500 dead letters are retried
#     in pages with the ids list capped;
#   - Redis down: admin stats answer with redis null and why, resume answers
#     200 with requeue "failed"; PostgreSQL down: 503 store_unavailable;
#   phase 2, reloaded with a sink and a permanently failing sink:
#   - a tenant's pause holds its mail while another tenant's flows, resume
#     releases it; the global pause holds everyone's, its resume releases it;
#   - permanent failures land in the dead list through the dispatcher; after a
#     reload that heals the account, retry-failed sends them and they are
#     delivered.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use JSON::PP;
use Time::HiRes qw(time sleep);
use MailerdTest qw(wait_for slurp);

MailerdTest::skip_without_store();

my $S = MailerdTest->stack(tenants => 3, main_extra => "queue_recovery_interval 1s;\nqueue_recovery_full 1s;\n");
my $t = $S->{t};
my $pg = $S->{pg};
my ($A, $B, $C) = @{ $S->{tenants} };
my $json = JSON::PP->new->canonical;
my $dir = $t->dir;
my $uuid_re = qr/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
my $ts_re = qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/;

sub sql { scalar $pg->psql($_[0]) }

sub api {
    my ($key, $method, $path, $body) = @_;
    my %h = defined $key ? (Authorization => "Bearer $key") : ();
    if (defined $body) {
        $h{'Content-Type'} = 'application/json';
        $body = $json->encode($body) if ref $body;
    }
    return $t->request($method, $path, headers => \%h, defined $body ? (body => $body) : ());
}

sub err_is {
    my ($r, $status, $code, $field, $name) = @_;
    my $e = ($r->{json} // {})->{error} // {};
    my $ok = $r->{status} == $status && ($e->{code} // '') eq $code
      && (!defined $field || ($e->{field} // '') eq $field);
    ok($ok, $name) or diag("got $r->{status} $r->{body}");
}

# Everything the queue API can change, as one string: a refused request must
# leave it as it was.
sub state_digest {
    return sql("SELECT md5(coalesce((SELECT string_agg(scope, ',' ORDER BY scope) FROM queue_pauses), '')"
               . " || coalesce((SELECT string_agg(message_id::text, ',' ORDER BY message_id) FROM dead_letters), '')"
               . " || coalesce((SELECT string_agg(id::text || status || attempts, ',' ORDER BY id) FROM messages), '')"
               . " || (SELECT count(*) FROM events))");
}

# Messages of tenant $tid written as the send API and the dispatcher would.
# %o: n, status, priority, batch, extra columns (SQL).
sub mk_messages {
    my ($tid, %o) = @_;
    my $n = $o{n} // 1;
    my $batch = $o{batch} ? "'$o{batch}'" : 'NULL';
    my $status = $o{status} // 'queued';
    my $prio = $o{priority} // 'transactional';
    my $cols = $o{cols} // '';
    my $vals = $o{vals} // '';
    my $out = sql("WITH i AS (INSERT INTO messages (id, tenant_id, batch_id, status, priority, from_addr, to_addr,"
                  . " text_body$cols) SELECT gen_random_uuid(), '$tid', $batch, '$status', '$prio',"
                  . " 'a\@acme.example', 'r' || g || '\@example.com', 'x'$vals FROM generate_series(1, $n) g"
                  . " RETURNING id) SELECT id FROM i");
    return split /\n/, $out;
}

sub mk_batch {
    my ($tid) = @_;
    return sql("INSERT INTO batches (id, tenant_id, accepted) VALUES (gen_random_uuid(), '$tid', 1) RETURNING id");
}

# Dead letters: failed messages with their dead_letters rows, created_at given
# as an SQL expression. Returns the message ids.
sub mk_dead {
    my ($tid, %o) = @_;
    my $code = $o{code} // 'sink_rejected';
    my $at = $o{at} // 'now()';
    my @ids = mk_messages($tid, n => $o{n} // 1, status => 'failed', batch => $o{batch},
                          cols => ', attempts, last_error', vals => ", 3, '$code: rejected'");
    sql("INSERT INTO dead_letters (message_id, tenant_id, batch_id, code, reason, attempts, esp, created_at)"
        . " SELECT id, tenant_id, batch_id, '$code', 'rejected by the test', 3, 'broken', $at FROM messages"
        . " WHERE id IN (" . join(',', map { "'$_'" } @ids) . ")");
    return @ids;
}

sub in_list { join(',', map { "'$_'" } @_) }

# --- 1. authentication ------------------------------------------------------------------
my @tenant_routes = (['GET', '/v1/queue/stats'], ['POST', '/v1/queue/pause'], ['POST', '/v1/queue/resume'],
                     ['POST', '/v1/queue/retry-failed'], ['GET', '/v1/queue/dead']);
my @admin_routes = (['GET', '/v1/admin/queue/stats'], ['POST', '/v1/admin/queue/pause'],
                    ['POST', '/v1/admin/queue/resume']);
{
    mk_dead($A->{id}, n => 2);
    my $before = state_digest();
    for my $rt (@tenant_routes, @admin_routes) {
        my ($m, $p) = @$rt;
        my $r = api(undef, $m, $p, $m eq 'POST' ? {} : undef);
        err_is($r, 401, 'unauthorized', undef, "$m $p without a credential: 401");
        like($r->{headers}{'www-authenticate'} // '', qr/^Bearer/, "$m $p: WWW-Authenticate");
        $r = api('mk_' . ('x' x 43), $m, $p, $m eq 'POST' ? {} : undef);
        is($r->{status}, 401, "$m $p with an unknown key: 401");
    }
    for my $rt (@admin_routes) {
        my ($m, $p) = @$rt;
        err_is(api($A->{key}, $m, $p, $m eq 'POST' ? {} : undef), 401, 'unauthorized', undef,
               "$m $p refuses a tenant key");
    }
    for my $rt (@tenant_routes) {
        my ($m, $p) = @$rt;
        err_is(api($S->{admin}, $m, $p, $m eq 'POST' ? {} : undef), 401, 'unauthorized', undef,
               "$m $p refuses the admin token");
    }
    is(state_digest(), $before, 'refused requests changed nothing (no pause, dead letters kept)');
    sql("DELETE FROM messages");
}

# --- 2. stats ------------------------------------------------------------------------------
{
    my $r = api($A->{key}, 'GET', '/v1/queue/stats');
    is($r->{status}, 200, 'stats of an empty tenant');
    my $s = $r->{json} // {};
    is_deeply([ @$s{qw(scheduled deferred in_flight dead paused global_paused)} ], [ 0, 0, 0, 0, JSON::PP::false(), JSON::PP::false() ],
              'all zero, not paused') or diag($r->{body});
    is_deeply($s->{queued}, { transactional => 0, bulk => 0, total => 0 }, 'queued by priority, zero');
    is_deeply($s->{last_minute}, { sent => 0, failed => 0 }, 'last minute, zero');
    like($s->{as_of} // '', $ts_re, 'as_of is an RFC 3339 timestamp');
    ok(exists $s->{paused_at} && !defined $s->{paused_at}, 'paused_at null');

    mk_messages($A->{id}, n => 2, priority => 'transactional');
    mk_messages($A->{id}, n => 3, priority => 'bulk');
    mk_messages($A->{id}, n => 4, status => 'scheduled', cols => ', send_at, next_attempt_at',
                vals => ", now() + interval '1 day', now() + interval '1 day'");
    mk_messages($A->{id}, n => 5, status => 'deferred', cols => ', next_attempt_at, attempts',
                vals => ", now() + interval '1 day', 1");
    mk_messages($A->{id}, n => 6, status => 'sending', cols => ', lease_until, attempts',
                vals => ", now() + interval '1 hour', 1");
    mk_messages($A->{id}, n => 2, status => 'delivered');
    mk_dead($A->{id}, n => 7);
    # events: 8 sent and 9 failed within the minute, 10 sent two minutes ago (not counted)
    my ($some) = mk_messages($A->{id}, status => 'delivered');
    sql("INSERT INTO events (id, tenant_id, message_id, type, created_at) SELECT gen_random_uuid(), '$A->{id}',"
        . " '$some', t, c FROM (SELECT 'sent', now() FROM generate_series(1, 8) UNION ALL"
        . " SELECT 'failed', now() - interval '30 seconds' FROM generate_series(1, 9) UNION ALL"
        . " SELECT 'sent', now() - interval '2 minutes' FROM generate_series(1, 10)) AS e(t, c)");
    # tenant B: one of each, to check isolation and the admin sums
    mk_messages($B->{id}, n => 1, priority => 'bulk');
    mk_messages($B->{id}, n => 1, status => 'sending', cols => ', lease_until', vals => ", now() + interval '1 hour'");
    mk_dead($B->{id}, n => 1);

    $r = api($A->{key}, 'GET', '/v1/queue/stats');
    $s = $r->{json} // {};
    is_deeply($s->{queued}, { transactional => 2, bulk => 3, total => 5 }, 'A: queued 2 + 3') or diag($r->{body});
    is_deeply([ @$s{qw(scheduled deferred in_flight dead)} ], [ 4, 5, 6, 7 ],
              'A: scheduled 4, deferred 5, in flight 6, dead 7') or diag($r->{body});
    is_deeply($s->{last_minute}, { sent => 8, failed => 9 }, 'A: last minute sent 8, failed 9 (older events not counted)');

    $r = api($B->{key}, 'GET', '/v1/queue/stats');
    $s = $r->{json} // {};
    is_deeply([ $s->{queued}{total}, $s->{queued}{bulk}, @$s{qw(scheduled deferred in_flight dead)} ], [ 1, 1, 0, 0, 1, 1 ],
              'B sees only its own') or diag($r->{body});

    $r = api($S->{admin}, 'GET', '/v1/admin/queue/stats');
    is($r->{status}, 200, 'admin stats');
    $s = $r->{json} // {};
    is_deeply($s->{queued}, { transactional => 2, bulk => 4, total => 6 }, 'admin: queued over all tenants') or diag($r->{body});
    is_deeply([ @$s{qw(scheduled deferred in_flight dead paused_tenants)} ], [ 4, 5, 7, 8, 0 ], 'admin: the sums');
    is_deeply($s->{last_minute}, { sent => 8, failed => 9 }, 'admin: last minute');
    ok(exists $s->{redis}, 'admin: a redis member');
    if (defined $s->{redis}) {
        my $x = $s->{redis};
        ok(!defined $s->{redis_error}, 'redis_error null when redis answered');
        for my $k (qw(stream_length lag pending)) {
            ok(ref $x->{$k} eq 'HASH' && defined $x->{$k}{transactional} && defined $x->{$k}{bulk}, "redis.$k per priority");
        }
        ok(defined $x->{scheduled} && defined $x->{dead_stream}, 'redis scheduled and dead_stream');
    } else {
        like($s->{redis_error} // '', qr/\S/, "redis null says why ($s->{redis_error})");
    }
    sql("DELETE FROM events; DELETE FROM messages");
}

# --- 3. pause and resume -------------------------------------------------------------------------
{
    my $before = state_digest();
    err_is(api($A->{key}, 'POST', '/v1/queue/pause', '{'), 400, 'invalid_json', undef, 'pause: bad JSON is 400');
    err_is(api($A->{key}, 'POST', '/v1/queue/pause', { tenant => 'x' }), 422, 'validation_failed', '/tenant', 'pause: unknown member');
    err_is(api($A->{key}, 'POST', '/v1/queue/pause', '[]'), 422, 'validation_failed', '', 'pause: not an object');
    err_is(api($S->{admin}, 'POST', '/v1/admin/queue/pause', { scope => 'x' }), 422, 'validation_failed', '/scope',
           'admin pause: unknown member');
    is(state_digest(), $before, 'refused pauses wrote nothing');

    my $r = api($A->{key}, 'POST', '/v1/queue/pause', {});
    is($r->{status}, 200, 'pause');
    my $p = $r->{json} // {};
    is_deeply([ @$p{qw(scope tenant_id paused changed global_paused)} ],
              [ 'tenant', $A->{id}, JSON::PP::true(), JSON::PP::true(), JSON::PP::false() ], 'pause answer')
      or diag($r->{body});
    like($p->{paused_at} // '', $ts_re, 'paused_at');
    is(sql("SELECT scope FROM queue_pauses"), $A->{id}, 'the queue_pauses row');
    my $r2 = api($A->{key}, 'POST', '/v1/queue/pause');
    is($r2->{status}, 200, 'pausing twice is fine (empty body too)');
    ok(!$r2->{json}{changed}, 'changed false the second time');
    is($r2->{json}{paused_at}, $p->{paused_at}, 'same paused_at');
    is(sql("SELECT count(*) FROM queue_pauses"), 1, 'still one row');
    my $st = api($A->{key}, 'GET', '/v1/queue/stats')->{json};
    ok($st->{paused} && $st->{paused_at} eq $p->{paused_at}, 'stats: paused since paused_at');
    ok(!api($B->{key}, 'GET', '/v1/queue/stats')->{json}{paused}, 'B is not paused');
    is(api($S->{admin}, 'GET', '/v1/admin/queue/stats')->{json}{paused_tenants}, 1, 'admin: one paused tenant');

    $r = api($S->{admin}, 'POST', '/v1/admin/queue/pause', {});
    is($r->{status}, 200, 'global pause');
    is_deeply([ @{ $r->{json} // {} }{qw(scope paused changed)} ], [ 'global', JSON::PP::true(), JSON::PP::true() ],
              'global pause answer') or diag($r->{body});
    ok(!exists $r->{json}{tenant_id}, 'no tenant_id on the global pause');
    ok(!api($S->{admin}, 'POST', '/v1/admin/queue/pause')->{json}{changed}, 'global pause twice: changed false');
    $st = api($B->{key}, 'GET', '/v1/queue/stats')->{json};
    ok($st->{global_paused} && $st->{global_paused_at} =~ $ts_re && !$st->{paused}, 'B sees the global pause');

    # A resumes while the global pause holds: its own pause goes, requeue is skipped.
    $r = api($A->{key}, 'POST', '/v1/queue/resume', {});
    is($r->{status}, 200, 'resume under the global pause');
    is_deeply([ @{ $r->{json} // {} }{qw(paused changed global_paused requeue)} ],
              [ JSON::PP::false(), JSON::PP::true(), JSON::PP::true(), 'skipped' ], 'requeue skipped, global still holds')
      or diag($r->{body});
    is(sql("SELECT string_agg(scope, ',') FROM queue_pauses"), '*', 'only the global row left');

    $r = api($S->{admin}, 'POST', '/v1/admin/queue/resume');
    is($r->{status}, 200, 'global resume');
    my $g = $r->{json} // {};
    ok($g->{changed} && !$g->{paused} && !$g->{global_paused}, 'global resume answer') or diag($r->{body});
    like($g->{requeue} // '', qr/^(done|pending|failed)$/, "global resume requeue: $g->{requeue}");
    ok(($g->{requeue} eq 'done') == defined $g->{requeued}, 'requeued is a count exactly when done');
    $r = api($A->{key}, 'POST', '/v1/queue/resume');
    is($r->{status}, 200, 'resume when not paused');
    ok(!$r->{json}{changed}, 'changed false');
    is(sql("SELECT count(*) FROM queue_pauses"), 0, 'no pause left');
}

# --- 3b. clients that leave while the answer is on its way ---------------------------------------
{
    for my $i (1 .. 15) {
        for my $req (["POST /v1/queue/resume", $A->{key}], ["POST /v1/admin/queue/resume", $S->{admin}],
                     ["GET /v1/admin/queue/stats", $S->{admin}], ["POST /v1/queue/retry-failed", $A->{key}]) {
            my $s = $t->connect or next;
            print $s "$req->[0] HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer $req->[1]\r\n"
              . "Content-Length: 0\r\n\r\n";
            close $s;
        }
    }
    ok(wait_for(sub { api($A->{key}, 'GET', '/v1/queue/stats')->{status} == 200 }, 5),
       'still serving after 60 requests whose clients left (the logs are checked at stop)');
}

# --- 4. the dead list ----------------------------------------------------------------------------
my ($batch1, @dead_b1, @dead_other, @dead_same, @dead_B);
{
    $batch1 = mk_batch($A->{id});
    # oldest to newest: 3 in batch1 (an hour ago), 2 with code max_attempts (30 min
    # ago), 4 sharing one created_at (10 min ago), and one of B's
    @dead_b1 = mk_dead($A->{id}, n => 3, batch => $batch1,
                       at => "now() - interval '1 hour' + (row_number() OVER ()) * interval '1 second'");
    @dead_other = mk_dead($A->{id}, n => 2, code => 'max_attempts', at => "now() - interval '30 minutes'");
    @dead_same = mk_dead($A->{id}, n => 4, at => "now() - interval '10 minutes'"); # one now(): a tie
    @dead_B = mk_dead($B->{id}, n => 1);
    my @all = split /\n/, sql("SELECT message_id FROM dead_letters WHERE tenant_id = '$A->{id}'"
                              . " ORDER BY created_at DESC, message_id DESC");
    is(scalar @all, 9, 'nine dead letters for A');

    my $r = api($A->{key}, 'GET', '/v1/queue/dead');
    is($r->{status}, 200, 'GET /v1/queue/dead');
    my $d = $r->{json} // {};
    is_deeply([ map { $_->{message_id} } @{ $d->{data} // [] } ], \@all, 'newest first, then by id; only A\'s');
    ok(exists $d->{next_cursor} && !defined $d->{next_cursor}, 'one page: next_cursor null');
    my ($first) = grep { $_->{message_id} eq $dead_b1[0] } @{ $d->{data} };
    is_deeply([ @{ $first // {} }{qw(code reason attempts esp batch_id)} ],
              [ 'sink_rejected', 'rejected by the test', 3, 'broken', $batch1 ], 'a row: code, reason, attempts, esp, batch_id');
    like($first->{created_at} // '', $ts_re, 'created_at');

    my (@walk, $cursor, $pages);
    do {
        my $q = '/v1/queue/dead?limit=2' . ($cursor ? "&cursor=$cursor" : '');
        my $p = api($A->{key}, 'GET', $q);
        last unless $p->{status} == 200;
        push @walk, map { $_->{message_id} } @{ $p->{json}{data} };
        $cursor = $p->{json}{next_cursor};
        $pages++;
    } while ($cursor && $pages < 20);
    is_deeply(\@walk, \@all, "limit=2: $pages pages walk every row once, in order (ties on created_at included)");
    is($pages, 5, 'five pages of two');

    $r = api($A->{key}, 'GET', "/v1/queue/dead?batch_id=$batch1");
    is_deeply([ sort map { $_->{message_id} } @{ $r->{json}{data} // [] } ], [ sort @dead_b1 ], 'filter by batch_id');
    $r = api($A->{key}, 'GET', '/v1/queue/dead?code=max_attempts&limit=1');
    is(scalar @{ $r->{json}{data} // [] }, 1, 'filter by code, limit 1');
    $r = api($A->{key}, 'GET', "/v1/queue/dead?code=max_attempts&cursor=$r->{json}{next_cursor}");
    is(scalar @{ $r->{json}{data} // [] }, 1, 'the second max_attempts row on the next page');
    ok(!defined $r->{json}{next_cursor}, 'and no more');
    $r = api($A->{key}, 'GET', "/v1/queue/dead?batch_id=$batch1&code=max_attempts");
    is_deeply($r->{json}{data}, [], 'filters combine with AND');
    $r = api($B->{key}, 'GET', '/v1/queue/dead');
    is_deeply([ map { $_->{message_id} } @{ $r->{json}{data} // [] } ], \@dead_B, 'B sees only its own');
    $r = api($B->{key}, 'GET', "/v1/queue/dead?batch_id=$batch1");
    is_deeply($r->{json}{data}, [], 'B filtering by A\'s batch sees nothing');

    for my $case (['limit=0', 'invalid_parameter', 'limit'], ['limit=201', 'invalid_parameter', 'limit'],
                  ['limit=x', 'invalid_parameter', 'limit'], ['cursor=abc', 'invalid_parameter', 'cursor'],
                  ['cursor=123_nope', 'invalid_parameter', 'cursor'], ['batch_id=nope', 'invalid_parameter', 'batch_id'],
                  ['code=', 'invalid_parameter', 'code'], ['code=a%2', 'invalid_parameter', 'code'],
                  ['limit=1&limit=2', 'invalid_parameter', 'limit'], ['status=failed', 'unknown_parameter', 'status']) {
        my ($q, $code, $field) = @$case;
        err_is(api($A->{key}, 'GET', "/v1/queue/dead?$q"), 422, $code, $field, "dead ?$q: 422 $code ($field)");
    }
}

# --- 5. retry-failed -----------------------------------------------------------------------------
{
    my $before = state_digest();
    my $ids1001 = [ map { sprintf('00000000-0000-7000-8000-%012d', $_) } 1 .. 1001 ];
    for my $case (['{', 400, 'invalid_json', undef, 'bad JSON'],
                  ['[]', 422, 'validation_failed', '', 'not an object'],
                  [{ id => 1 }, 422, 'validation_failed', '/id', 'unknown member'],
                  [{ batch_id => $batch1, message_ids => [ $dead_b1[0] ] }, 422, 'validation_failed', '/message_ids', 'both forms'],
                  [{ batch_id => 'nope' }, 422, 'validation_failed', '/batch_id', 'bad batch id'],
                  [{ batch_id => undef }, 422, 'validation_failed', '/batch_id', 'null batch id'],
                  [{ message_ids => [] }, 422, 'validation_failed', '/message_ids', 'empty ids'],
                  [{ message_ids => 'x' }, 422, 'validation_failed', '/message_ids', 'ids not an array'],
                  [{ message_ids => $ids1001 }, 422, 'validation_failed', '/message_ids', '1,001 ids'],
                  [{ message_ids => [ $dead_b1[0], 'x' ] }, 422, 'validation_failed', '/message_ids/1', 'a bad id, by index'],
                  [{ message_ids => [ $dead_b1[0], 7 ] }, 422, 'validation_failed', '/message_ids/1', 'a number as an id']) {
        my ($body, $status, $code, $field, $name) = @$case;
        err_is(api($A->{key}, 'POST', '/v1/queue/retry-failed', $body), $status, $code, $field, "retry-failed: $name");
    }
    is(state_digest(), $before, 'refused retries changed nothing');

    my $r = api($A->{key}, 'POST', '/v1/queue/retry-failed', { batch_id => '00000000-0000-7000-8000-000000000001' });
    is($r->{status}, 202, 'an unknown batch is not an error');
    is_deeply([ @{ $r->{json} // {} }{qw(retried ids more requeue)} ], [ 0, [], JSON::PP::false(), 'none' ], 'it retries nothing')
      or diag($r->{body});
    $r = api($A->{key}, 'POST', '/v1/queue/retry-failed', { message_ids => [ @dead_B ] });
    is($r->{status}, 202, 'another tenant\'s id: 202');
    is($r->{json}{retried}, 0, 'retries nothing');
    is(sql("SELECT status FROM messages WHERE id = '$dead_B[0]'"), 'failed', 'B\'s message still failed');
    is(state_digest(), $before, 'nothing changed');

    # by ids (one known, one unknown)
    $r = api($A->{key}, 'POST', '/v1/queue/retry-failed',
             { message_ids => [ $dead_other[0], '00000000-0000-7000-8000-000000000002' ] });
    is($r->{status}, 202, 'retry by ids');
    is_deeply([ @{ $r->{json} // {} }{qw(retried ids ids_truncated more)} ],
              [ 1, [ $dead_other[0] ], JSON::PP::false(), JSON::PP::false() ], 'one retried, listed') or diag($r->{body});
    like($r->{json}{requeue} // '', qr/^(started|failed)$/, "requeue $r->{json}{requeue}");
    is(sql("SELECT status || '|' || attempts || '|' || (last_error IS NULL) || '|' || (next_attempt_at IS NULL)"
           . " FROM messages WHERE id = '$dead_other[0]'"), 'queued|0|true|true', 'queued, attempts 0, error cleared');
    is(sql("SELECT count(*) FROM dead_letters WHERE message_id = '$dead_other[0]'"), 0, 'its dead row is gone');
    is(sql("SELECT type || ':' || (data->>'reason') FROM events WHERE message_id = '$dead_other[0]'"), 'queued:retry',
       'a queued event with reason retry');
    is(sql("SELECT status FROM messages WHERE id = '$dead_other[1]'"), 'failed', 'the other max_attempts one untouched');
    $r = api($A->{key}, 'POST', '/v1/queue/retry-failed', { message_ids => [ $dead_other[0] ] });
    is($r->{json}{retried}, 0, 'retrying it again: nothing (no longer dead)');

    # by batch
    $r = api($A->{key}, 'POST', '/v1/queue/retry-failed', { batch_id => $batch1 });
    is($r->{status}, 202, 'retry by batch');
    is_deeply([ sort @{ $r->{json}{ids} // [] } ], [ sort @dead_b1 ], 'the batch\'s three');
    is(sql("SELECT count(*) FROM messages WHERE id IN (" . in_list(@dead_b1) . ") AND status = 'queued'"), 3, 'queued');
    is(scalar @{ api($A->{key}, 'GET', "/v1/queue/dead?batch_id=$batch1")->{json}{data} // [1] }, 0, 'none left in the batch');

    # all (an empty body is {})
    $r = api($A->{key}, 'POST', '/v1/queue/retry-failed');
    is($r->{status}, 202, 'retry all');
    is_deeply([ sort @{ $r->{json}{ids} // [] } ], [ sort($dead_other[1], @dead_same) ], 'the five left');
    is(sql("SELECT count(*) FROM dead_letters WHERE tenant_id = '$A->{id}'"), 0, 'A\'s dead list is empty');
    is(sql("SELECT count(*) FROM dead_letters WHERE tenant_id = '$B->{id}'"), 1, 'B\'s untouched');
    is(sql("SELECT count(*) FROM events WHERE type = 'queued' AND data->>'reason' = 'retry'"), 9, 'nine retry events in all');
    is(api($A->{key}, 'GET', '/v1/queue/stats')->{json}{dead}, 0, 'stats: dead 0');

    # many: pages of 1,000, the ids list capped
    my @many = mk_dead($C->{id}, n => 2500);
    my $t0 = time;
    $r = api($C->{key}, 'POST', '/v1/queue/retry-failed', {});
    is($r->{status}, 202, 'retry 2,500');
    my $m = $r->{json} // {};
    is_deeply([ @$m{qw(retried ids_truncated more)} ], [ 2500, JSON::PP::true(), JSON::PP::false() ],
              'all 2,500 in one request, ids truncated') or diag(substr($r->{body}, 0, 300));
    is(scalar @{ $m->{ids} // [] }, 1000, 'ids capped at 1,000');
    note(sprintf('2,500 retried in %.2f s', time - $t0));
    is(sql("SELECT count(*) FROM messages WHERE tenant_id = '$C->{id}' AND status = 'queued' AND attempts = 0"), 2500,
       'all queued');
    is(sql("SELECT count(*) FROM events WHERE tenant_id = '$C->{id}' AND type = 'queued'"), 2500, 'one event each');
    is(sql("SELECT count(*) FROM dead_letters"), 1, 'only B\'s dead letter left');
    sql("DELETE FROM events; DELETE FROM messages");
}

# --- 5b. store outages: Redis down (the PostgreSQL part still answers), PostgreSQL down (503) -------
{
    my $redis = $S->{redis};
    $redis->stop;
    my $r = api($S->{admin}, 'GET', '/v1/admin/queue/stats');
    is($r->{status}, 200, 'admin stats with Redis down: 200');
    ok(exists $r->{json}{redis} && !defined $r->{json}{redis} && ($r->{json}{redis_error} // '') =~ /\S/,
       "redis null, redis_error says why (" . ($r->{json}{redis_error} // '') . ")") or diag($r->{body});
    is(api($A->{key}, 'POST', '/v1/queue/pause')->{status}, 200, 'pause with Redis down');
    $r = api($A->{key}, 'POST', '/v1/queue/resume');
    is($r->{status}, 200, 'resume with Redis down: 200 (PostgreSQL committed it)');
    is($r->{json}{requeue}, 'failed', 'requeue failed: the sweeper repairs it later') or diag($r->{body});
    ok(exists $r->{json}{requeued} && !defined $r->{json}{requeued}, 'requeued null');
    is(sql("SELECT count(*) FROM queue_pauses"), 0, 'the pause is gone');
    $redis->start;

    $pg->stop;
    for my $rt (['GET', '/v1/queue/stats'], ['POST', '/v1/queue/pause'], ['GET', '/v1/queue/dead'],
                ['POST', '/v1/queue/retry-failed']) {
        my ($m, $p) = @$rt;
        my $r2 = api($A->{key}, $m, $p, $m eq 'POST' ? {} : undef);
        err_is($r2, 503, 'store_unavailable', undef, "$m $p with PostgreSQL down: 503");
        is($r2->{headers}{'retry-after'}, 1, 'with Retry-After') if $r2->{status} == 503;
    }
    err_is(api($S->{admin}, 'GET', '/v1/admin/queue/stats'), 503, 'store_unavailable', undef,
           'admin stats with PostgreSQL down: 503');
    $pg->start;
    ok(wait_for(sub { (eval { $t->request('GET', '/ready')->{status} } // 0) == 200 }, 20), 'ready again');
    ok(wait_for(sub { api($A->{key}, 'GET', '/v1/queue/stats')->{status} == 200 }, 10), 'stats answer again');
    is(sql("SELECT count(*) FROM queue_pauses"), 0, 'nothing was written during the outage');
}

# --- 6. with ESPs: pause holds mail, resume releases it ------------------------------------------------
my $conf = slurp("$dir/mailerd.conf");
sub reload_with {
    my ($extra) = @_;
    my @before = $t->worker_pids;
    $t->write_conf($conf . $extra);
    $t->signal('HUP');
    my $ok = wait_for(sub {
        my @now = $t->worker_pids;
        my %old = map { $_ => 1 } @before;
        return @now >= 2 && !grep { $old{$_} } @now;
    }, 20);
    wait_for(sub { (eval { $t->request('GET', '/ready')->{status} } // 0) == 200 }, 10);
    return $ok;
}
my $esps = "esp sink {\n    dir sink;\n}\nesp broken {\n    driver sink;\n    dir broken;\n    fail_permanent %s;\n}\n"
  . "max_attempts 3;\nretry_backoff_base 20ms;\nretry_backoff_max 100ms;\n";
ok(reload_with(sprintf($esps, 1)), 'reloaded with a sink and a failing sink');

sub send_msg {
    my ($who, %m) = @_;
    my $r = api($who->{key}, 'POST', '/v1/messages',
                { from => 'a@acme.example', to => 'x@example.com', subject => 's', text => 't', %m });
    die "send: $r->{status} $r->{body}" unless $r->{status} == 202;
    return $r->{json}{data}[0]{id};
}
sub delivered { scalar grep { -f "$dir/$_[0]/$_.eml" } @_[1 .. $#_] }
sub status_count {
    my ($status, @ids) = @_;
    return sql("SELECT count(*) FROM messages WHERE status = '$status' AND id IN (" . in_list(@ids) . ")");
}

{
    is(api($A->{key}, 'POST', '/v1/queue/pause')->{status}, 200, 'A pauses');
    my @a = map { send_msg($A, to => "a$_\@example.com") } 1 .. 3;
    my @b = map { send_msg($B, to => "b$_\@example.com") } 1 .. 3;
    ok(wait_for(sub { delivered('sink', @b) == 3 }, 10), 'B\'s mail flows while A is paused');
    # A's must stay held: give the dispatchers and the sweeper (1 s) time to act.
    my $t_end = time + 2.5;
    my $leak = 0;
    while (time < $t_end) { $leak ||= delivered('sink', @a); sleep 0.1 }
    is($leak, 0, 'A\'s mail is held (2.5 s, longer than the sweeper interval)');
    is(status_count('queued', @a), 3, 'A\'s messages stay queued');
    my $st = api($A->{key}, 'GET', '/v1/queue/stats')->{json};
    ok($st->{paused} && $st->{queued}{total} == 3, 'stats: paused with 3 queued');
    my $r = api($A->{key}, 'POST', '/v1/queue/resume');
    is($r->{status}, 200, 'A resumes');
    note("resume: requeue $r->{json}{requeue}, requeued " . ($r->{json}{requeued} // 'null'));
    ok(wait_for(sub { delivered('sink', @a) == 3 }, 10), 'resume releases A\'s mail')
      or diag(sql("SELECT id, status, attempts, last_error FROM messages WHERE id IN (" . in_list(@a) . ")"));
    ok(wait_for(sub { status_count('delivered', @a) == 3 }, 5), 'and records it delivered');
    is($r->{json}{requeue}, 'done', 'the requeue finished before the answer');
    cmp_ok($r->{json}{requeued} // -1, '>=', 3, 'and put the three back');

    # the global pause holds everyone
    is(api($S->{admin}, 'POST', '/v1/admin/queue/pause')->{status}, 200, 'global pause');
    @a = map { send_msg($A, to => "ga$_\@example.com") } 1 .. 2;
    @b = map { send_msg($B, to => "gb$_\@example.com") } 1 .. 2;
    $t_end = time + 2.5;
    $leak = 0;
    while (time < $t_end) { $leak ||= delivered('sink', @a, @b); sleep 0.1 }
    is($leak, 0, 'nothing sent under the global pause');
    is(status_count('queued', @a, @b), 4, 'all four queued');
    $r = api($S->{admin}, 'POST', '/v1/admin/queue/resume');
    is($r->{status}, 200, 'global resume');
    ok(wait_for(sub { delivered('sink', @a, @b) == 4 }, 10), 'the global resume releases everyone\'s mail');
}

# --- 7. permanent failures land in the dead list; retry-failed sends them after a fix -------------------
{
    my @f = map { send_msg($A, to => "dead$_\@example.com", esp => 'broken') } 1 .. 3;
    ok(wait_for(sub { status_count('failed', @f) == 3 }, 10), 'three permanent failures');
    ok(wait_for(sub { sql("SELECT count(*) FROM dead_letters WHERE message_id IN (" . in_list(@f) . ")") == 3 }, 5),
       'the dispatcher wrote their dead_letters rows');
    my $d = api($A->{key}, 'GET', '/v1/queue/dead')->{json}{data} // [];
    is_deeply([ sort map { $_->{message_id} } @$d ], [ sort @f ], 'GET /v1/queue/dead lists them');
    like($d->[0]{code} // '', qr/\S/, "with a code ($d->[0]{code})");
    is($d->[0]{esp}, 'broken', 'and the esp');
    my $st = api($A->{key}, 'GET', '/v1/queue/stats')->{json};
    is($st->{dead}, 3, 'stats: dead 3');
    cmp_ok($st->{last_minute}{failed}, '>=', 3, 'stats: failed in the last minute');
    cmp_ok($st->{last_minute}{sent}, '>=', 5, 'stats: sent in the last minute');

    ok(reload_with(sprintf($esps, 0)), 'reloaded: the failing account is healed');
    my $r = api($A->{key}, 'POST', '/v1/queue/retry-failed', { message_ids => \@f });
    is($r->{status}, 202, 'retry-failed');
    is($r->{json}{retried}, 3, 'three retried');
    ok(wait_for(sub { delivered('broken', @f) == 3 }, 10), 'and delivered this time')
      or diag(sql("SELECT id, status, attempts, last_error FROM messages WHERE id IN (" . in_list(@f) . ")"));
    ok(wait_for(sub { status_count('delivered', @f) == 3 }, 5), 'recorded delivered');
    is(sql("SELECT attempts FROM messages WHERE id = '$f[0]'"), 1, 'attempts counted from zero again');
    is(api($A->{key}, 'GET', '/v1/queue/stats')->{json}{dead}, 0, 'the dead list is empty');
}

is($t->stop, 0, 'graceful stop');
done_testing;
