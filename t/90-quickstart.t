# scripts/quickstart --detach / status / stop against the binary under test,
# with its state in a temp dir (MAILERD_VAR) so the repo's var/ is untouched:
# it starts a private PostgreSQL and Redis there (free ports), migrates, makes
# an admin token, and /ready is 200; the printed send recipe lands a .eml in
# MAILERD_SINK_DIR; stop takes all three down.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use MailerdTest qw(src_dir bin_path slurp wait_for free_port);
use JSON::PP ();

MailerdTest::skip_without_store();

my $t = MailerdTest->new;
# The private PostgreSQL runs as the postgres user, which must reach VAR.
chmod 0755, $t->dir;
my $var = $t->dir . '/var';
my $pg_port = free_port();
my $redis_port = free_port();
my $qs = src_dir() . '/scripts/quickstart';
local $ENV{MAILERD_SKIP_APT} = 1;
local $ENV{MAILERD_SKIP_BUILD} = 1;
local $ENV{MAILERD_BIN} = bin_path();
local $ENV{MAILERD_LISTEN} = '127.0.0.1:' . $t->port;
local $ENV{MAILERD_VAR} = $var;
local $ENV{MAILERD_PG_PORT} = $pg_port;
local $ENV{MAILERD_REDIS_PORT} = $redis_port;
delete local $ENV{MAILERD_PG_DSN};
delete local $ENV{MAILERD_REDIS_ADDR};

# Runs scripts/quickstart ARGS; returns (exit code, output).
sub quickstart {
    my $out = qx{bash '$qs' @_ </dev/null 2>&1};
    return ($? >> 8, $out);
}

# Whatever happens below (a failed assertion that dies, a timeout), stop what the
# quickstart started: mailerd, PostgreSQL and Redis would otherwise outlive the test.
my $started_by_us = $$;
END {
    if (defined $started_by_us && $$ == $started_by_us && -d $var) {
        local $?;
        # File-scope `local %ENV` settings may be unwound by now: name the state
        # directory explicitly so this can never stop the repo's own var/.
        local $ENV{MAILERD_VAR} = $var;
        local $ENV{MAILERD_SKIP_APT} = 1;
        local $ENV{MAILERD_SKIP_BUILD} = 1;
        qx{bash '$qs' stop </dev/null 2>&1};
    }
}

my ($rc, $out) = quickstart('status');
is($rc, 3, 'status before start: not running (exit 3)') or diag($out);

($rc, $out) = quickstart('--detach');
is($rc, 0, 'quickstart --detach exits 0') or diag($out);
like($out, qr{curl .*/health}, 'prints what to try');

my %env;
for (split /\n/, slurp("$var/quickstart.env")) {
    $env{$1} = $2 if /^(MAILERD_\w+)=(.*)$/;
}
for my $k (qw(MAILERD_URL MAILERD_PID MAILERD_CONF MAILERD_PREFIX MAILERD_BIN
              MAILERD_LOG_DIR MAILERD_ERROR_LOG MAILERD_ACCESS_LOG
              MAILERD_PG_DSN MAILERD_REDIS_URL MAILERD_ADMIN_TOKEN MAILERD_SINK_DIR)) {
    ok(defined $env{$k} && length $env{$k}, "quickstart.env has $k");
}
is((stat("$var/quickstart.env"))[2] & 0777, 0600, 'quickstart.env is mode 0600 (it holds the admin token)');
like($env{MAILERD_PG_DSN} // '', qr/port=$pg_port\b/, 'MAILERD_PG_DSN uses MAILERD_PG_PORT');
is($env{MAILERD_REDIS_URL}, "redis://127.0.0.1:$redis_port", 'MAILERD_REDIS_URL uses MAILERD_REDIS_PORT');
like($env{MAILERD_ADMIN_TOKEN} // '', qr/^[0-9a-f]{64}$/, 'the admin token is 32 random bytes in hex');
is(slurp("$var/admin.token") =~ s/\s+//gr, $env{MAILERD_ADMIN_TOKEN}, '... kept in var/admin.token');
is((stat("$var/admin.token"))[2] & 0777, 0600, 'var/admin.token is mode 0600');
ok(-f "$var/pg/data/PG_VERSION", 'PostgreSQL data under var/pg');
ok(-d "$var/redis", 'Redis data under var/redis');
is($env{MAILERD_URL}, $t->url, 'MAILERD_URL is the MAILERD_LISTEN address');
my $pid = $env{MAILERD_PID} // 0;
ok($pid > 1 && kill(0, $pid), "master (pid $pid) runs");
like($env{MAILERD_LOG_DIR} // '', qr{^\Q$var\E/}, 'logs are under MAILERD_VAR');
ok(!-e src_dir() . '/var/quickstart.env' || (stat _)[9] < $^T, "the repo's var/ is untouched");

my $r = eval { $t->request('GET', '/health') };
is($r && $r->{status}, 200, 'GET /health answers 200');
# Both stores up and migrated: /ready turns 200 (polled: workers connect at start).
my $ready;
ok(wait_for(sub { $ready = eval { $t->request('GET', '/ready') }; $ready && $ready->{status} == 200 }, 15),
   'GET /ready answers 200 (PostgreSQL, Redis and schema ok)') or diag($ready && $ready->{body});
my $pg_pid = (split /\n/, slurp("$var/pg/data/postmaster.pid"))[0] // 0;
my $redis_pid = slurp("$var/run/redis.pid") =~ s/\s+//gr || 0;
ok($pg_pid > 1 && kill(0, $pg_pid), "private PostgreSQL runs (pid $pg_pid)");
ok($redis_pid > 1 && kill(0, $redis_pid), "private Redis runs (pid $redis_pid)");

# The demo tenant's key from quickstart.env authenticates.
my $key = $env{MAILERD_API_KEY} // '';
like($key, qr/^mk_[A-Za-z0-9_-]{43}$/, 'quickstart.env has MAILERD_API_KEY, a tenant key');
like($out, qr/\Q$key\E/, '... and the key is printed') if $key;
$r = eval { $t->request('GET', '/v1/me', headers => { Authorization => "Bearer $key" }) };
is($r && $r->{status}, 200, 'GET /v1/me with MAILERD_API_KEY answers 200') or diag($r ? $r->{body} : $@);
is($r && $r->{json} ? $r->{json}{tenant}{name} : undef, 'demo', '... for the tenant "demo"');

# The printed send recipe works: its JSON with the demo key is accepted, and the
# sink ESP writes the message into MAILERD_SINK_DIR.
my $sink = $env{MAILERD_SINK_DIR} // '';
is($sink, "$var/sink", 'MAILERD_SINK_DIR is var/sink under MAILERD_VAR');
ok(-d $sink, '... and exists');
my ($recipe) = $out =~ m{^[ \t]*(\. \S+/quickstart\.env; curl [^\n]*Bearer \$MAILERD_API_KEY[^\n]*\\\n[ \t]*-d '\{[^']*\}' \\\n[ \t]*\Q$env{MAILERD_URL}\E/v1/messages)$}m;
ok(defined $recipe, 'prints a curl that POSTs a message to /v1/messages with the demo key') or diag($out);
like($out, qr{\Q$sink\E/ID\.eml}, '... and says where the .eml appears');
my $id;
if (defined $recipe) {
    # Run as printed, the way a person pastes it into a shell.
    open(my $fh, '>', $t->dir . '/recipe.sh') or die $!;
    print $fh "$recipe\n";
    close $fh;
    my $answer = qx{bash '@{[ $t->dir ]}/recipe.sh' 2>&1};
    is($? >> 8, 0, 'the recipe runs') or diag($answer);
    my $j = eval { JSON::PP::decode_json($answer) };
    $id = $j && ref $j->{data} eq 'ARRAY' ? $j->{data}[0]{id} : undef;
    like($id // '', qr/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/,
         '... and answers the accepted message id (UUIDv7)') or diag($answer);
}
SKIP: {
    skip 'no message id', 2 unless $id;
    my $eml = "$sink/$id.eml";
    ok(wait_for(sub { -s $eml }, 20), "the sink wrote $id.eml") or diag(`ls -la '$sink' 2>&1`);
    my $text = -s $eml ? slurp($eml) : '';
    like($text, qr/^Subject: Hello from mailerd\r?$/m, '... with the recipe\'s subject');
}

($rc, $out) = quickstart('status');
is($rc, 0, 'status: running') or diag($out);
like($out, qr/pid $pid/, 'status names the master pid');

($rc, $out) = quickstart('stop');
is($rc, 0, 'quickstart stop exits 0') or diag($out);
ok(!kill(0, $pid) || slurp("/proc/$pid/stat") =~ /^\d+ \(.*?\) Z/, 'master is gone');
# The master runs in its own session (setsid): its workers are in it too.
# Zombies do not count: here pid 1 may be slow to reap the orphaned master.
my @left = grep { my @f = split " ", (slurp($_) =~ s/^.*\) //sr); @f > 3 && $f[3] == $pid && $f[0] ne "Z" }
    glob("/proc/[0-9]*/stat");
ok(!@left, 'no process of its session is left') or diag("left: @left");
ok(!eval { $t->request('GET', '/health', timeout => 2) }, 'nothing answers any more');
ok(wait_for(sub { !kill(0, $pg_pid) }, 10), 'stop stopped PostgreSQL');
ok(wait_for(sub { !kill(0, $redis_pid) }, 10), 'stop stopped Redis');
ok(!-e $env{MAILERD_ERROR_LOG} || slurp($env{MAILERD_ERROR_LOG}) !~ /"level":"(?:alert|emerg)"|Sanitizer/,
   'no alert, emerg or sanitizer report in the error log')
    or diag(slurp($env{MAILERD_ERROR_LOG}));
my $stderr = slurp("$env{MAILERD_LOG_DIR}/stderr.log");
ok($stderr !~ /Sanitizer|runtime error:/, 'no sanitizer report on stderr') or diag($stderr);

($rc, $out) = quickstart('status');
is($rc, 3, 'status after stop: not running');

# A second run reuses the stores' data and the admin token.
($rc, $out) = quickstart('--detach');
is($rc, 0, 'a second quickstart --detach exits 0') or diag($out);
unlike($out, qr/initdb/, '... without a new initdb');
my %env2;
for (split /\n/, slurp("$var/quickstart.env")) {
    $env2{$1} = $2 if /^(MAILERD_\w+)=(.*)$/;
}
is($env2{MAILERD_ADMIN_TOKEN}, $env{MAILERD_ADMIN_TOKEN}, '... with the same admin token');
ok(wait_for(sub { my $x = eval { $t->request('GET', '/ready') }; $x && $x->{status} == 200 }, 15),
   '... and /ready 200 (the schema is still current)');
is($env2{MAILERD_API_KEY}, $env{MAILERD_API_KEY}, '... and the same demo API key');
$r = eval { $t->request('GET', '/v1/me', headers => { Authorization => "Bearer " . ($env2{MAILERD_API_KEY} // '') }) };
is($r && $r->{status}, 200, '... which still authenticates') or diag($r ? $r->{body} : $@);
($rc, $out) = quickstart('stop');
is($rc, 0, 'quickstart stop exits 0 again') or diag($out);

# --esp mock: the mock ESP runs beside mailerd, mail goes through SES, and when
# SES fails it moves to SendGrid.
SKIP: {
    require MockESP;
    my $mock_bin = MockESP::bin_path();
    skip "no mock-esp binary at $mock_bin", 12 unless -x $mock_bin;
    local $ENV{MAILERD_MOCK_BIN} = $mock_bin;
    local $ENV{MAILERD_MOCK_PORT} = free_port();
    local $ENV{MAILERD_MOCK_CONTROL_PORT} = free_port();
    ($rc, $out) = quickstart('--detach', '--esp', 'mock');
    is($rc, 0, 'quickstart --detach --esp mock exits 0') or diag($out);
    my %env3;
    for (split /\n/, slurp("$var/quickstart.env")) {
        $env3{$1} = $2 if /^(MAILERD_\w+)=(.*)$/;
    }
    my $mock_url = $env3{MAILERD_MOCK_URL} // '';
    is($mock_url, "http://127.0.0.1:$ENV{MAILERD_MOCK_CONTROL_PORT}", 'quickstart.env has MAILERD_MOCK_URL');
    like($out, qr{_mock/faults}, '... and the output says how to make SES fail');
    my $auth = { Authorization => "Bearer " . ($env3{MAILERD_API_KEY} // '') };
    my $mock = sub { JSON::PP::decode_json(scalar qx{curl -s --max-time 5 -X $_[0] $mock_url$_[1] @{[ $_[2] // '' ]}}) };
    my $send = sub {
        my $r = eval { $t->request('POST', '/v1/messages',
            headers => { %$auth, 'Content-Type' => 'application/json' },
            body => JSON::PP::encode_json({ from => 'Demo <demo@example.com>', to => 'you@example.org',
                                            subject => $_[0], text => 'hi' })) };
        return $r && $r->{status} == 202 ? $r->{json}{data}[0]{id} : undef;
    };
    my $final = sub {
        my ($id) = @_;
        my $m;
        wait_for(sub { my $r = eval { $t->request('GET', "/v1/messages/$id", headers => $auth) };
                       $m = $r && $r->{json}; $m && $m->{status} =~ /^(sent|failed)$/ }, 20);
        return $m // {};
    };
    my $id1 = $send->('through ses');
    ok($id1, 'a message is accepted');
    my $m1 = $id1 ? $final->($id1) : {};
    is($m1->{status}, 'sent', '... and sent');
    is($m1->{esp}, 'ses', '... through SES, the first account of the route');
    is(eval { $mock->('GET', '/_mock/stats')->{ses}{accepted} }, 1, 'the mock SES took it (SigV4 checked)');
    $mock->('POST', '/_mock/faults', q{-d '{"provider":"ses","status":500}'});
    my $id2 = $send->('through sendgrid');
    my $m2 = $id2 ? $final->($id2) : {};
    is($m2->{status}, 'sent', 'with SES failing, the next message is sent');
    is($m2->{esp}, 'sendgrid', '... through SendGrid (failover)');
    ok((grep { $_->{type} eq 'esp_failed' } @{ $m2->{events} // [] }), '... with the failed SES hop as an event');
    is(eval { $mock->('GET', '/_mock/stats')->{sendgrid}{accepted} }, 1, 'the mock SendGrid took it');
    my $mock_pid = slurp("$var/mock/mock-esp.pid") =~ s/\s+//gr;
    ($rc, $out) = quickstart('stop');
    is($rc, 0, 'quickstart stop exits 0 with the mock running') or diag($out);
    ok(wait_for(sub { !kill(0, $mock_pid) }, 10), '... and stops the mock ESP');
}

done_testing;
