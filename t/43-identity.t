# Identity against a private PostgreSQL and Redis, mailerd with 2 workers and
# the admin token in a file:
#   - admin token: required on /v1/admin/..., refused when missing or wrong;
#   - tenants: create/get/list (cursor pages)/patch/delete with validation errors
#     (400 invalid_json, 422 validation_failed + JSON pointer, 404 not_found);
#   - keys: the secret is returned once, authenticates on /v1/me, is listed
#     without secret or hash, is stored only as SHA-256, never logged;
#   - 401 with WWW-Authenticate: Bearer and the JSON error shape for missing,
#     malformed, unknown and revoked keys;
#   - realms: admin routes refuse tenant keys, tenant routes the admin token (401);
#   - isolation: tenant A can neither see nor revoke tenant B's keys anywhere;
#   - revocation: a key cached on both workers gets 401 on both within 1 s,
#     and the DELETE answers only once both workers have dropped it; while
#     Redis refuses PUBLISH no worker trusts its cache, and a revocation is
#     kept and published once it is allowed;
#   - a suspended or soft-deleted tenant's keys stop working at once;
#   - last_used_at is written in batches (a trigger counts the row updates) and
#     at graceful stop.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Digest::SHA qw(sha256_hex);
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(time sleep);
use MailerdTest qw(wait_for src_dir slurp parse_response);
use MailerdStore;

MailerdTest::skip_without_store();

my $pg = MailerdStore->pg;
my $redis = MailerdStore->redis;
my $t = MailerdTest->new;

# The admin token lives in a file, with surrounding whitespace that must be trimmed.
my $admin = join('', map { ('a' .. 'z', 'A' .. 'Z', 0 .. 9)[rand 62] } 1 .. 40);
{
    open(my $fh, '>', $t->dir . '/admin.token') or die $!;
    print $fh "  $admin\n\n";
    close $fh;
    chmod 0600, $t->dir . '/admin.token';
}
my $extra = sprintf(qq{postgres {\n    dsn "%s";\n    pool_size 2;\n}\n}
                  . qq{redis {\n    address %s;\n}\n}
                  . qq{migrations_dir %s/migrations;\nadmin_token_file admin.token;\n},
                    $pg->dsn, $redis->addr, src_dir());
$t->write_conf($t->conf_text(main_extra => $extra));
my ($rc, $out) = $t->run_cmd('-p', $t->dir, '-c', $t->dir . '/mailerd.conf', 'migrate');
is($rc, 0, 'mailerd migrate') or diag($out);

# Counts every write of last_used_at (one row per key per UPDATE): how the test
# tells batched updates from one per request.
sub sql { scalar $pg->psql($_[0]) }
sql(q{CREATE TABLE touch_log (key_id uuid, at timestamptz DEFAULT clock_timestamp())});
sql(q{CREATE FUNCTION touch_log_f() RETURNS trigger LANGUAGE plpgsql AS }
  . q{$$BEGIN INSERT INTO touch_log (key_id) VALUES (NEW.id); RETURN NULL; END$$});
sql(q{CREATE TRIGGER touch_log_t AFTER UPDATE OF last_used_at ON api_keys FOR EACH ROW }
  . q{EXECUTE FUNCTION touch_log_f()});

$t->start;
ok(wait_for(sub { (eval { $t->request('GET', '/ready')->{status} } // 0) == 200 }, 15), '/ready is 200')
  or diag(eval { $t->request('GET', '/ready')->{body} } // $@);
my @workers = $t->worker_pids;
is(scalar @workers, 2, 'two workers');

my @secrets; # every key secret handed out, to search logs and the database for

sub admin_req {
    my ($method, $path, $body, %o) = @_;
    my %h = (Authorization => "Bearer " . ($o{token} // $admin));
    $h{'Content-Type'} = 'application/json' if defined $body;
    return $t->request($method, $path, headers => \%h, defined $body ? (body => $body) : ());
}

sub key_req {
    my ($key, $method, $path, %o) = @_;
    my %h = defined $key ? (Authorization => "Bearer $key") : ();
    %h = (%h, %{ $o{headers} // {} });
    return $t->request($method, $path, headers => \%h);
}

sub is_error {
    my ($r, $status, $code, $name) = @_;
    my $ok = is($r->{status}, $status, "$name: status $status");
    $ok &&= is(ref($r->{json}) && ref($r->{json}{error}) ? $r->{json}{error}{code} : undef, $code,
               "$name: error code $code");
    $ok &&= ok(defined $r->{json}{error}{message} && !ref $r->{json}{error}{message},
               "$name: error has a message");
    diag("got: $r->{status} $r->{body}") unless $ok;
    return $ok;
}

sub is_401 {
    my ($r, $name) = @_;
    is_error($r, 401, 'unauthorized', $name);
    like($r->{headers}{'www-authenticate'} // '', qr/^Bearer\b/, "$name: WWW-Authenticate: Bearer");
}

sub validation {
    my ($r, $field, $name) = @_;
    is_error($r, 422, 'validation_failed', $name);
    is($r->{json}{error}{field}, $field, "$name: field $field");
}

sub new_tenant {
    my ($name) = @_;
    my $r = admin_req('POST', '/v1/admin/tenants', encode_json({ name => $name }));
    is($r->{status}, 201, "tenant $name created") or diag($r->{body});
    return $r->{json};
}

sub new_key {
    my ($tid, $name) = @_;
    my $r = admin_req('POST', "/v1/admin/tenants/$tid/keys", defined $name ? encode_json({ name => $name }) : undef);
    is($r->{status}, 201, 'key created' . (defined $name ? " ($name)" : '')) or diag($r->{body});
    push @secrets, $r->{json}{secret} if $r->{json} && $r->{json}{secret};
    return $r->{json};
}

my $uuid_re = qr/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
my $ts_re = qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/;

# --- admin token ------------------------------------------------------------------------
is_401($t->request('GET', '/v1/admin/tenants'), 'admin route without a token');
is_401(admin_req('GET', '/v1/admin/tenants', undef, token => "x$admin"), 'admin route with a wrong token');
is_401(admin_req('GET', '/v1/admin/tenants', undef, token => substr($admin, 0, 39)), 'admin route with a truncated token');
is_401($t->request('GET', '/v1/admin/tenants', headers => { Authorization => "Basic $admin" }),
       'admin route with another scheme');
is(admin_req('GET', '/v1/admin/tenants')->{status}, 200, 'admin token (trimmed from its file) accepted');
is($t->request('GET', '/v1/admin/tenants', headers => { Authorization => "bearer   $admin" })->{status}, 200,
   'scheme is case-insensitive');

# --- tenants ----------------------------------------------------------------------------
my $r = admin_req('POST', '/v1/admin/tenants', '{"name":"Acme","metadata":{"plan":"pro","region":"eu"}}');
is($r->{status}, 201, 'POST /v1/admin/tenants: 201');
my $A = $r->{json};
like($A->{id}, $uuid_re, 'tenant id is a UUIDv7');
is($A->{name}, 'Acme', 'name');
is($A->{status}, 'active', 'status active');
is_deeply($A->{metadata}, { plan => 'pro', region => 'eu' }, 'metadata');
like($A->{created_at}, $ts_re, 'created_at is RFC 3339 UTC');
like($A->{updated_at}, $ts_re, 'updated_at');

is_error(admin_req('POST', '/v1/admin/tenants', '{"name":'), 400, 'invalid_json', 'truncated JSON');
is_error(admin_req('POST', '/v1/admin/tenants', ''), 400, 'invalid_json', 'empty body');
is_error(admin_req('POST', '/v1/admin/tenants', '{"name":"a","name":"b"}'), 400, 'invalid_json', 'duplicate member');
validation(admin_req('POST', '/v1/admin/tenants', '["x"]'), '', 'body not an object');
validation(admin_req('POST', '/v1/admin/tenants', '{}'), '/name', 'name missing');
validation(admin_req('POST', '/v1/admin/tenants', '{"name":5}'), '/name', 'name not a string');
validation(admin_req('POST', '/v1/admin/tenants', '{"name":""}'), '/name', 'name empty');
validation(admin_req('POST', '/v1/admin/tenants', encode_json({ name => 'x' x 201 })), '/name', 'name too long');
is(admin_req('POST', '/v1/admin/tenants', encode_json({ name => "\x{e9}" x 200 }))->{status}, 201,
   '200 non-ASCII characters are fine (characters, not bytes)');
validation(admin_req('POST', '/v1/admin/tenants', '{"name":"x","metadata":[1]}'), '/metadata', 'metadata not an object');
validation(admin_req('POST', '/v1/admin/tenants', '{"name":"x","plan":"pro"}'), '/plan', 'unknown field');
validation(admin_req('POST', '/v1/admin/tenants', '{"name":"x","a/b~c":1}'), '/a~1b~0c', 'unknown field: JSON pointer escapes');
$r = admin_req('POST', '/v1/admin/tenants', encode_json({ name => 'x', "\x{e9}" x 100 => 1 }));
is($r->{status}, 422, 'a long non-ASCII unknown field is cut to a valid JSON answer');
like($r->{json}{error}{field} // '', qr/^\/(?:\x{e9})+$/, '... between whole characters');

is_deeply(admin_req('GET', "/v1/admin/tenants/$A->{id}")->{json}, $A, 'GET tenant returns what POST did');
is_error(admin_req('GET', '/v1/admin/tenants/01890000-0000-7000-8000-000000000000'), 404, 'not_found', 'unknown tenant id');
is_error(admin_req('GET', '/v1/admin/tenants/not-a-uuid'), 404, 'not_found', 'malformed tenant id');
is(admin_req('GET', '/v1/admin/tenants/' . uc $A->{id})->{status}, 200, 'upper-case id accepted');

$r = admin_req('PATCH', "/v1/admin/tenants/$A->{id}", '{"name":"Acme Corp","metadata":{"region":null,"tier":2}}');
is($r->{status}, 200, 'PATCH tenant');
is($r->{json}{name}, 'Acme Corp', 'PATCH: name changed');
is_deeply($r->{json}{metadata}, { plan => 'pro', tier => 2 }, 'PATCH: metadata merged, null removes a key');
ok($r->{json}{updated_at} gt $A->{updated_at}, 'PATCH: updated_at moves');
is($r->{json}{created_at}, $A->{created_at}, 'PATCH: created_at kept');
validation(admin_req('PATCH', "/v1/admin/tenants/$A->{id}", '{"status":"gone"}'), '/status', 'PATCH: bad status');
validation(admin_req('PATCH', "/v1/admin/tenants/$A->{id}", '{"name":null}'), '/name', 'PATCH: null name');
is_error(admin_req('PATCH', "/v1/admin/tenants/$A->{id}", 'nope'), 400, 'invalid_json', 'PATCH: bad JSON');
is_error(admin_req('PATCH', '/v1/admin/tenants/01890000-0000-7000-8000-000000000000', '{"name":"x"}'), 404,
         'not_found', 'PATCH unknown tenant');

# Pages: every live tenant exactly once, in id order, across pages of 2.
my $B = new_tenant('Beta');
my $C = new_tenant('Gamma');
my $D = new_tenant('Delta');
{
    my (@ids, $cursor, $pages);
    do {
        my $q = '/v1/admin/tenants?limit=2' . ($cursor ? "&cursor=$cursor" : '');
        my $p = admin_req('GET', $q);
        is($p->{status}, 200, "list page $q") or last;
        ok(@{ $p->{json}{data} } <= 2, 'page holds at most limit');
        push @ids, map { $_->{id} } @{ $p->{json}{data} };
        $cursor = $p->{json}{next_cursor};
        $pages++;
    } while ($cursor && $pages < 20);
    my @live = split /\n/, sql('SELECT id FROM tenants WHERE deleted_at IS NULL ORDER BY id');
    is_deeply(\@ids, \@live, 'pages list every live tenant once, in id order');
    ok($pages >= 3, "several pages ($pages)");
}
is_error(admin_req('GET', '/v1/admin/tenants?limit=0'), 422, 'invalid_parameter', 'limit 0');
is_error(admin_req('GET', '/v1/admin/tenants?limit=abc'), 422, 'invalid_parameter', 'limit not a number');
is_error(admin_req('GET', '/v1/admin/tenants?cursor=zzz'), 422, 'invalid_parameter', 'bad cursor');
is(admin_req('GET', '/v1/admin/tenants?limit=0')->{json}{error}{field}, 'limit',
   'a bad query parameter is named in "field"');
is(admin_req('GET', '/v1/admin/tenants?cursor=zzz')->{json}{error}{field}, 'cursor',
   '... the cursor too');

# --- keys -------------------------------------------------------------------------------
my $ka = new_key($A->{id}, 'ci');
like($ka->{secret}, qr/^mk_[A-Za-z0-9_-]{43}$/, 'secret: mk_ + 43 base64url characters (32 bytes)');
is($ka->{prefix}, substr($ka->{secret}, 0, 11), 'prefix is the first 11 characters');
like($ka->{id}, $uuid_re, 'key id is a UUIDv7');
is($ka->{tenant_id}, $A->{id}, 'key tenant_id');
is($ka->{name}, 'ci', 'key name');
is($ka->{last_used_at}, undef, 'last_used_at null');
is($ka->{revoked_at}, undef, 'revoked_at null');
my $ka2 = new_key($A->{id});
is($ka2->{name}, '', 'a key without a body gets an empty name');
isnt($ka2->{secret}, $ka->{secret}, 'two keys differ');
validation(admin_req('POST', "/v1/admin/tenants/$A->{id}/keys", '{"name":7}'), '/name', 'key name not a string');
validation(admin_req('POST', "/v1/admin/tenants/$A->{id}/keys", '{"scopes":[]}'), '/scopes', 'key: unknown field');
is_error(admin_req('POST', '/v1/admin/tenants/01890000-0000-7000-8000-000000000000/keys', '{}'), 404, 'not_found',
         'key for an unknown tenant');
is_error(admin_req('GET', '/v1/admin/tenants/01890000-0000-7000-8000-000000000000/keys'), 404, 'not_found',
         'keys of an unknown tenant');

$r = key_req($ka->{secret}, 'GET', '/v1/me');
is($r->{status}, 200, 'GET /v1/me with the new key') or diag($r->{body});
is_deeply($r->{json}{tenant}, { id => $A->{id}, name => 'Acme Corp', status => 'active' }, '/v1/me: tenant');
is_deeply($r->{json}{key}, { map { $_ => $ka->{$_} } qw(id name prefix created_at last_used_at) }, '/v1/me: key');

is_401(key_req(undef, 'GET', '/v1/me'), 'no Authorization');
is_401(key_req('mk_' . ('A' x 43), 'GET', '/v1/me'), 'unknown well-formed key');
is_401(key_req(substr($ka->{secret}, 0, 45), 'GET', '/v1/me'), 'truncated key');
is_401(key_req($ka->{secret} . 'x', 'GET', '/v1/me'), 'key with an extra character');
is_401(key_req('mk_' . ('!' x 43), 'GET', '/v1/me'), 'key with bad characters');
is_401($t->request('GET', '/v1/me', headers => { Authorization => "Basic $ka->{secret}" }), 'key with another scheme');
is_401($t->request('GET', '/v1/me', headers => { Authorization => 'Bearer' }), 'Bearer without a key');
is_401($t->request('GET', '/v1/keys'), '/v1/keys without a key');

# Listings never hold the secret or its hash.
$r = admin_req('GET', "/v1/admin/tenants/$A->{id}/keys");
is($r->{status}, 200, 'GET keys');
is_deeply([ map { $_->{id} } @{ $r->{json}{data} } ], [ $ka->{id}, $ka2->{id} ], 'both keys listed in order');
is_deeply([ sort keys %{ $r->{json}{data}[0] } ], [ sort qw(id tenant_id name prefix created_at last_used_at revoked_at) ],
          'key listing fields (no secret, no hash)');
my $hash_a = sha256_hex($ka->{secret});
unlike($r->{body}, qr/\Q$ka->{secret}\E|\Q$hash_a\E|\Q$ka2->{secret}\E/i, 'listing holds neither secret nor hash');
is(sql("SELECT encode(secret_hash, 'hex') FROM api_keys WHERE id = '$ka->{id}'"), $hash_a, 'the database holds SHA-256(secret)');

# --- realms -------------------------------------------------------------------------------
is_401(admin_req('GET', '/v1/admin/tenants', undef, token => $ka->{secret}), 'admin route refuses a tenant key');
is_401(admin_req('POST', "/v1/admin/tenants/$A->{id}/keys", '{}', token => $ka->{secret}),
       'tenant key cannot create keys');
$r = key_req($admin, 'GET', '/v1/me');
is_401($r, 'tenant route refuses the admin token');
like($r->{json}{error}{message}, qr/admin token/, '... saying why');

# --- isolation ----------------------------------------------------------------------------
my $kb = new_key($B->{id}, 'b');
$r = key_req($ka->{secret}, 'GET', '/v1/keys');
is($r->{status}, 200, 'GET /v1/keys as A');
is_deeply([ sort map { $_->{id} } @{ $r->{json}{data} } ], [ sort $ka->{id}, $ka2->{id} ], 'A sees only its own keys');
$r = key_req($kb->{secret}, 'GET', '/v1/keys');
is_deeply([ map { $_->{id} } @{ $r->{json}{data} } ], [ $kb->{id} ], 'B sees only its own key');
is_error(key_req($ka->{secret}, 'DELETE', "/v1/keys/$kb->{id}"), 404, 'not_found', "A cannot revoke B's key (404)");
is_401(key_req($ka->{secret}, 'GET', "/v1/admin/tenants/$B->{id}/keys"), "A cannot list B's keys via admin");
is_401(key_req($ka->{secret}, 'DELETE', "/v1/admin/keys/$kb->{id}"), "A cannot revoke B's key via admin");
is_401(key_req($ka->{secret}, 'GET', "/v1/admin/tenants/$B->{id}"), "A cannot read tenant B");
is_401(key_req($ka->{secret}, 'PATCH', "/v1/admin/tenants/$B->{id}"), "A cannot change tenant B");
is(sql("SELECT count(*) FROM api_keys WHERE id = '$kb->{id}' AND revoked_at IS NULL"), 1, "B's key is not revoked");
$r = key_req($kb->{secret}, 'GET', '/v1/me');
is($r->{status}, 200, "B's key still works");
is($r->{json}{tenant}{id}, $B->{id}, '... as B');
# A revokes its own second key through the tenant route.
$r = key_req($ka->{secret}, 'DELETE', "/v1/keys/$ka2->{id}");
is($r->{status}, 200, 'A revokes its own key');
like($r->{json}{revoked_at} // '', $ts_re, '... revoked_at set');
is_401(key_req($ka2->{secret}, 'GET', '/v1/me'), 'revoked key (tenant route) gets 401');
is(key_req($ka->{secret}, 'GET', '/v1/me')->{status}, 200, "A's other key still works");

# --- revocation reaches every worker within one second -------------------------------------

# Sends $n requests on $n connections opened together (so both workers accept
# some), each tagged with an X-Request-Id; returns [rid, status, start time].
my $nrid = 0;
sub burst {
    my ($n, $key, $tag, $path) = @_;
    $path //= '/v1/me';
    my @c;
    for (1 .. $n) {
        my $s = $t->connect or next;
        push @c, [$s, sprintf('%s-%d', $tag, ++$nrid)];
    }
    my $t0 = time;
    for my $c (@c) {
        print { $c->[0] } "GET $path HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Request-Id: $c->[1]\r\n"
          . "Authorization: Bearer $key\r\n\r\n";
    }
    my @res;
    for my $c (@c) {
        my ($resp) = parse_response(MailerdTest::read_all($c->[0], 5));
        close $c->[0];
        push @res, [$c->[1], $resp ? $resp->{status} : 0, $t0];
    }
    return @res;
}

# pid that served each request id (polls: access lines are flushed once per loop pass).
sub served_by {
    my (@rids) = @_;
    my %want = map { $_ => 1 } @rids;
    my %pid;
    wait_for(sub {
        for my $l (split /\n/, $t->access_log) {
            next unless $l =~ /"request_id":"([^"]+)"/ && $want{$1};
            my $j = eval { decode_json($l) } or next;
            $pid{ $j->{request_id} } = $j->{pid};
        }
        return keys %pid == keys %want;
    }, 5);
    return \%pid;
}

# Each worker serves the key at least twice (lookup, then cache hit).
sub warm_both {
    my ($key, $path) = @_;
    my %ok;
    for my $round (1 .. 30) {
        my @res = burst(6, $key, 'warm', $path);
        my $by = served_by(map { $_->[0] } @res);
        for (@res) { $ok{ $by->{ $_->[0] } // 0 }++ if $_->[1] == 200 }
        last if (grep { ($ok{$_} // 0) >= 2 } @workers) == 2;
    }
    is((grep { ($ok{$_} // 0) >= 2 } @workers), 2, 'both workers served the key (cached)') or diag(explain \%ok);
}

{
    my $kr = new_key($A->{id}, 'to-revoke');
    warm_both($kr->{secret});

    my $ack_keys = sub { grep { /^mailerd:ack:[0-9a-f]{32}$/ } split /\n/, $redis->cli('KEYS', 'mailerd:ack:*') // '' };
    my %before = map { $_ => 1 } $ack_keys->();
    my $t0 = time;
    $r = admin_req('DELETE', "/v1/admin/keys/$kr->{id}");
    my $t_resp = time;
    is($r->{status}, 200, 'DELETE /v1/admin/keys/{id}');
    # The answer waited until every worker the revocation reached had dropped
    # the key and counted itself in (md_auth_revoked, md_broadcast).
    my @acks = grep { !$before{$_} } $ack_keys->();
    is(scalar @acks, 1, 'one revocation count in Redis');
    is(@acks ? $redis->cli('GET', $acks[0]) : undef, 2, '... both workers counted themselves before the answer');
    cmp_ok(@acks ? $redis->cli('TTL', $acks[0]) : -1, '>', 0, '... and it expires');
    like($r->{json}{revoked_at} // '', $ts_re, 'revoked_at set');
    my (%first401, @after);
    while (time - $t0 < 1.5) {
        my @res = burst(4, $kr->{secret}, 'revoked');
        push @after, @res;
        my $by = served_by(map { $_->[0] } @res);
        for (@res) {
            my $pid = $by->{ $_->[0] } // next;
            $first401{$pid} //= $_->[2] - $t0 if $_->[1] == 401;
        }
        last if keys %first401 == 2 && time - $t0 > 1.1;
    }
    my @not401 = grep { $_->[1] != 401 } @after;
    is(scalar @not401, 0, 'every request after the revocation answered got 401')
      or diag(explain \@not401);
    is((grep { defined $first401{$_} } @workers), 2, 'both workers answered 401') or diag(explain \%first401);
    my ($slowest) = sort { $b <=> $a } values %first401;
    ok(defined $slowest && $slowest < 1.0, sprintf('401 on every worker within 1 s of the revocation (%.3f s; DELETE took %.3f s)',
                                                   $slowest // -1, $t_resp - $t0));
    is_401(key_req($kr->{secret}, 'GET', '/v1/me'), 'revoked key gets 401');
    $r = admin_req('DELETE', "/v1/admin/keys/$kr->{id}");
    is($r->{status}, 200, 'revoking twice is fine');
    is_error(admin_req('DELETE', '/v1/admin/keys/01890000-0000-7000-8000-000000000000'), 404, 'not_found', 'revoke an unknown key');
}

# --- a revocation waits for every subscriber to count itself -------------------------------------
# A third subscriber that never counts itself (a worker of an older version,
# or one whose command connection is down): the PUBLISH reaches three, two
# count, and the answer comes when MD_BROADCAST_WAIT (0.5 s) has passed, with a
# warning. Without the wait it would come at once.
{
    my $kw = new_key($A->{id}, 'to-revoke-slow');
    my $spid = open(my $sub, '-|', 'redis-cli', '-h', '127.0.0.1', '-p', $redis->port, 'SUBSCRIBE', 'mailerd:auth:revoked')
      // die "redis-cli: $!";
    ok(wait_for(sub { ($redis->cli('PUBSUB', 'NUMSUB', 'mailerd:auth:revoked') // '') =~ /\n3$/ }, 5),
       'a third subscriber on the revocation channel');
    my $t0 = time;
    my $r2 = admin_req('DELETE', "/v1/admin/keys/$kw->{id}");
    my $took = time - $t0;
    is($r2->{status}, 200, 'the revocation is answered');
    cmp_ok($took, '>=', 0.45, sprintf('... after waiting for the silent subscriber (%.3f s)', $took));
    cmp_ok($took, '<', 3, '... but not for ever');
    ok(wait_for(sub { grep { ($_->{msg} // '') =~ /not confirmed by every subscriber/ && ($_->{applied} // -1) == 2
                             && ($_->{reached} // -1) == 3 } $t->error_log_entries }, 5),
       '... and a warning: applied by 2 of the 3 it reached');
    kill 'TERM', $spid;
    close $sub;
}

# --- a revocation Redis refuses to publish goes out once it takes it -------------------------------
# PUBLISH denied by an ACL. The workers' pub/sub heartbeats are PUBLISHes too:
# refused, they make every worker stop trusting its cache (else the one that
# did not make a revocation would serve the key from it until it expires).
# The revocation is answered and kept; once PUBLISH is allowed the kept message
# goes out (md_broadcast_or_keep), seen by a subscriber of the test's own, and
# the caches start afresh.
{
    my $kp = new_key($A->{id}, 'to-revoke-refused');
    warm_both($kp->{secret}, '/v1/keys');
    my $sub = $redis->subscriber('mailerd:auth:revoked');
    is($redis->cli('ACL', 'SETUSER', 'default', '-publish'), 'OK', 'PUBLISH refused by an ACL');
    ok(wait_for(sub { $t->logged_by(qr/redis refuses the pub\/sub heartbeat/) == 2 }, 5),
       'both workers warn that Redis refuses their heartbeat');
    my $r2 = admin_req('DELETE', "/v1/admin/keys/$kp->{id}");
    is($r2->{status}, 200, 'the revocation is answered');
    my $will_retry = qr/publishing an invalidation failed, will retry/;
    ok(wait_for(sub { $t->logged($will_retry, 'mailerd:auth:revoked') }, 5),
       '... with a warning that it will be published again');
    my @res = map { burst(4, $kp->{secret}, 'refused', '/v1/keys') } 1 .. 4;
    my $by = served_by(map { $_->[0] } @res);
    my %pids = map { ($by->{ $_->[0] } // 0) => 1 } @res;
    is((grep { $_->[1] != 401 } @res), 0,
       sprintf('meanwhile neither worker trusts its cache: every request with the key gets 401 (%d workers)',
               scalar keys %pids)) or diag(explain \@res);
    my @m = $redis->messages($sub, 1);   # four retries, refused
    is(scalar @m, 0, 'nothing was published while refused') or diag(explain \@m);
    is(scalar(() = $t->logged($will_retry, 'mailerd:auth:revoked')), 1, 'the warning is not repeated for each retry');
    is($redis->cli('ACL', 'SETUSER', 'default', '+publish'), 'OK', 'PUBLISH allowed again');
    @m = $redis->messages($sub, 5);
    is_deeply(\@m, [ sha256_hex($kp->{secret}) ], 'then the kept revocation is published, once')
      or diag(explain \@m);
    ok(wait_for(sub { $t->logged_by(qr/redis takes the pub\/sub heartbeat again/) == 2 }, 5),
       'and both workers trust their (flushed) caches again');
    my @late = map { burst(4, $kp->{secret}, 'published', '/v1/keys') } 1 .. 3;
    is((grep { $_->[1] != 401 } @late), 0, 'the key stays refused') or diag(explain \@late);
    close $sub;
}
$redis->cli('ACL', 'SETUSER', 'default', '+publish');

# --- suspended and deleted tenants ------------------------------------------------------------
{
    my $kc = new_key($C->{id}, 'c');
    for (1 .. 3) { burst(4, $kc->{secret}, 'warmc') }
    $r = admin_req('PATCH', "/v1/admin/tenants/$C->{id}", '{"status":"suspended"}');
    is($r->{json}{status}, 'suspended', 'tenant suspended');
    my @res = burst(6, $kc->{secret}, 'susp');
    is((grep { $_->[1] == 401 } @res), scalar @res, "a suspended tenant's key gets 401 at once");
    $r = admin_req('PATCH', "/v1/admin/tenants/$C->{id}", '{"status":"active"}');
    @res = burst(6, $kc->{secret}, 'react');
    is((grep { $_->[1] == 200 } @res), scalar @res, 'and works again once reactivated');

    $r = admin_req('DELETE', "/v1/admin/tenants/$C->{id}");
    is($r->{status}, 200, 'DELETE tenant');
    like($r->{json}{deleted_at} // '', $ts_re, 'deleted_at set');
    @res = burst(6, $kc->{secret}, 'deleted');
    is((grep { $_->[1] == 401 } @res), scalar @res, "a deleted tenant's key gets 401 at once");
    is(sql("SELECT count(*) FROM api_keys WHERE tenant_id = '$C->{id}' AND revoked_at IS NULL"), 0,
       "its keys are revoked in the database");
    ok(sql("SELECT deleted_at IS NOT NULL FROM tenants WHERE id = '$C->{id}'") eq 't', 'the row stays (soft delete)');
    is_error(admin_req('GET', "/v1/admin/tenants/$C->{id}"), 404, 'not_found', 'a deleted tenant is gone from GET');
    is_error(admin_req('DELETE', "/v1/admin/tenants/$C->{id}"), 404, 'not_found', 'deleting twice');
    is_error(admin_req('GET', "/v1/admin/tenants/$C->{id}/keys"), 404, 'not_found', 'its keys are gone from listings');
    is_error(admin_req('POST', "/v1/admin/tenants/$C->{id}/keys", '{}'), 404, 'not_found', 'no new keys for it');
    ok(!grep({ $_->{id} eq $C->{id} } @{ admin_req('GET', '/v1/admin/tenants?limit=200')->{json}{data} }),
       'not listed');
}

# --- last_used_at: batched ------------------------------------------------------------------
{
    my $kl = new_key($D->{id}, 'usage');
    my $n = 0;
    my $tb = time;
    for (1 .. 5) { $n += grep { $_->[1] == 200 } burst(6, $kl->{secret}, 'use') }
    my $burst_s = time - $tb;
    is($n, 30, '30 authenticated requests');
    ok(wait_for(sub { sql("SELECT last_used_at IS NOT NULL FROM api_keys WHERE id = '$kl->{id}'") eq 't' }, 10),
       'last_used_at gets set');
    my $rows = sql("SELECT count(*) FROM touch_log WHERE key_id = '$kl->{id}'");
    # At most one write per worker per flush interval (2 s) during the burst, plus one.
    my $bound = 2 * (int($burst_s / 2) + 2);
    ok($rows >= 1 && $rows <= $bound && $rows < 30,
       "last_used_at written $rows times for 30 uses in ${\ sprintf('%.2f', $burst_s)} s (bound $bound)");
    $r = key_req($kl->{secret}, 'GET', '/v1/me');
    like($r->{json}{key}{last_used_at} // '', $ts_re, '/v1/me shows last_used_at');
}

# --- graceful stop flushes last_used_at; secrets are nowhere ----------------------------------
my $kq = new_key($D->{id}, 'at-stop');
is(key_req($kq->{secret}, 'GET', '/v1/me')->{status}, 200, 'key used just before the stop');
push @secrets, $admin;
$t->stop;
{
    # The flush at stop needs md_app_shutdown (src/core/md_app.c) to call
    # md_auth_app_shutdown before it shuts the pool down.
    local $TODO = slurp(src_dir() . '/src/core/md_app.c') =~ /md_auth_app_shutdown/
      ? undef : 'md_app_shutdown does not call md_auth_app_shutdown yet';
    is(sql("SELECT last_used_at IS NOT NULL FROM api_keys WHERE id = '$kq->{id}'"), 't',
       'last_used_at of a use just before a graceful stop is written');
}

my $logs = $t->error_log . $t->access_log . $t->stderr_log;
ok(length $t->access_log > 1000, 'the access log has lines');
my $db = sql(q{SELECT coalesce(string_agg(row_to_json(k)::text, E'\n'), '') FROM api_keys k});
my @leaks;
for my $s (@secrets) {
    my $core = substr($s, 3);
    push @leaks, "log: $s" if index($logs, $core) >= 0;
    push @leaks, "db: $s" if index($db, $core) >= 0;
}
is(scalar @leaks, 0, 'no secret (nor the admin token) in the error log, access log, stderr or api_keys ('
   . scalar(@secrets) . ' checked)') or diag(join("\n", @leaks));
like($db, qr/"secret_hash":"\\\\x[0-9a-f]{64}"/, 'api_keys holds 32-byte hashes');

# --- a refused admin token: admin routes answer 503, tenant routes still work ---------------
{
    my $t2 = MailerdTest->new;
    my $short = 'shorttoken-' . int(rand(1e6));
    my $extra2 = sprintf(qq{postgres {\n    dsn "%s";\n    pool_size 1;\n}\nredis {\n    address %s;\n}\n}
                       . qq{migrations_dir %s/migrations;\nadmin_token %s;\n}, $pg->dsn, $redis->addr, src_dir(), $short);
    $t2->write_conf($t2->conf_text(main_extra => $extra2, main => { worker_processes => 1 }));
    $t2->start;
    my $x = $t2->request('GET', '/v1/admin/tenants', headers => { Authorization => "Bearer $short" });
    is_error($x, 503, 'admin_not_configured', 'a too short admin token disables admin routes');
    like($t2->error_log, qr/admin token is too short/, '... with an error in the log');
    unlike($t2->error_log . $t2->access_log, qr/\Q$short\E/, '... which does not hold the token');
    $x = $t2->request('GET', '/v1/me', headers => { Authorization => "Bearer $kb->{secret}" });
    is($x->{status}, 200, 'tenant routes are unaffected');
    $t2->stop;
}

done_testing;
