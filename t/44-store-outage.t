# scripts/test: alone (load, timing or rate assertions: no other test beside it)
# Store outages seen through HTTP: mailerd (2 workers) against a private
# PostgreSQL and Redis, under a steady load of store-touching requests and
# /health. For each store in turn: stop it, and
#   - every store-touching request answers, 503 while the store is down, each in
#     under 2 s (the slowest is measured), none hangs or loses its connection;
#   - /ready turns 503 naming the store;
#   - /health stays 200 throughout (liveness is not readiness);
# then start it again: /ready and the requests recover by themselves (polled with
# a deadline), and the master and its workers kept their pids (nothing restarted).
# The store-touching request is GET /ready, and GET /v1/me with a tenant key too
# when the identity API is there to make one.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use File::Temp qw(tempdir);
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);
use MailerdTest qw(wait_for src_dir slurp);
use MailerdStore;

MailerdTest::skip_without_store();

my $pg = MailerdStore->pg;
my $redis = MailerdStore->redis;
my $t = MailerdTest->new;
my $admin = 'a' x 64;
# statement_timeout bounds a request stuck on a frozen PostgreSQL (the
# default, 5 s, is more than the 2 s asked of every request here).
my $extra = sprintf(qq{postgres {\n    dsn "%s";\n    pool_size 2;\n    reconnect_max 500ms;\n    statement_timeout 1500ms;\n}\n}
                  . qq{redis {\n    address %s;\n    reconnect_max 500ms;\n}\n}
                  . qq{migrations_dir %s/migrations;\nadmin_token %s;\n},
                    $pg->dsn, $redis->addr, src_dir(), $admin);
$t->write_conf($t->conf_text(main_extra => $extra));
my ($rc, $out) = $t->run_cmd('-p', $t->dir, '-c', $t->dir . '/mailerd.conf', 'migrate');
is($rc, 0, 'mailerd migrate') or diag($out);
$t->start;

ok(wait_for(sub { (eval { $t->request('GET', '/ready')->{status} } // 0) == 200 }, 15),
   '/ready is 200 once both stores are up')
  or diag(eval { $t->request('GET', '/ready')->{body} } // $@);

# A tenant key for /v1/me, when the identity API exists (otherwise /ready alone).
my $key;
{
    my $auth = { Authorization => "Bearer $admin", 'Content-Type' => 'application/json' };
    my $r = eval { $t->request('POST', '/v1/admin/tenants', headers => $auth, body => '{"name":"outage"}') };
    my $tid = $r && $r->{status} =~ /^20[01]$/ && $r->{json} ? ($r->{json}{id} // ($r->{json}{tenant} // {})->{id}) : undef;
    if ($tid) {
        $r = eval { $t->request('POST', "/v1/admin/tenants/$tid/keys", headers => $auth, body => '{"name":"k"}') };
        $key = $r && $r->{json} ? ($r->{json}{secret} // $r->{json}{key} // ($r->{json}{key_secret})) : undef;
        $key = undef if ref $key;
        my $me = $key ? eval { $t->request('GET', '/v1/me', headers => { Authorization => "Bearer $key" }) } : undef;
        $key = undef unless $me && $me->{status} == 200;
    }
    note($key ? 'load includes GET /v1/me with a tenant key' : 'no identity API yet: load is GET /ready');
}

my $master = $t->pid;
my @workers = $t->worker_pids;
is(scalar @workers, 2, 'two workers');

# --- load: forked clients, one request per connection, each timed --------------------
my $ldir = tempdir('mailerd-load-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my @paths = ('/ready', '/health', $key ? ('/v1/me') : ());

# Each child loops over @paths until $ldir/stop exists (or 60 s pass), writing
# "start_time latency status path" per request; status 0 means no complete
# response (connection refused, reset, or 5 s without an answer).
sub start_load {
    my ($tag, $n) = @_;
    unlink "$ldir/stop";
    my @pids;
    for my $i (1 .. $n) {
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            open(my $fh, '>', "$ldir/$tag.$i") or exit 1;
            $fh->autoflush(1);
            my $end = time + 60;
            my $k = 0;
            while (!-e "$ldir/stop" && time < $end) {
                my $path = $paths[$k++ % @paths];
                my $h = $path eq '/v1/me' ? { Authorization => "Bearer $key" } : {};
                my $t0 = time;
                my $r = eval { $t->request('GET', $path, headers => $h, timeout => 5) };
                printf $fh "%.6f %.6f %d %s\n", $t0, time - $t0, $r ? $r->{status} : 0, $path;
            }
            close $fh;
            POSIX::_exit(0);
        }
        push @pids, $pid;
    }
    return @pids;
}

sub stop_load {
    my ($tag, @pids) = @_;
    open(my $s, '>', "$ldir/stop") or die $!;
    close $s;
    waitpid($_, 0) for @pids;
    my @rows;
    for my $f (glob("$ldir/$tag.*")) {
        for (split /\n/, slurp($f)) {
            my ($t0, $dt, $st, $path) = split ' ';
            push @rows, { t0 => $t0, dt => $dt, status => $st, path => $path };
        }
    }
    return sort { $a->{t0} <=> $b->{t0} } @rows;
}

sub lines_in { my ($tag) = @_; my $n = 0; $n += () = slurp($_) =~ /\n/g for glob("$ldir/$tag.*"); $n }

sub ready_json { my $r = eval { $t->request('GET', '/ready', timeout => 5) }; $r }

# The processes of the private PostgreSQL: the postmaster and its children.
sub pg_pids {
    my ($pm) = split /\n/, slurp($pg->dir . '/data/postmaster.pid');
    return () unless $pm;
    my @kids;
    for my $f (glob('/proc/[0-9]*/stat')) {
        my @st = split ' ', (slurp($f) =~ s/^.*\) //sr);
        push @kids, ($f =~ m{/proc/(\d+)/})[0] if @st > 1 && $st[1] == $pm;
    }
    return ($pm, @kids);
}

# Every worker has recovered: the metrics (a worker's own numbers are at most
# 1 s old, and during an outage longer than that they went down) show all
# connections up, and a run of /ready answers are all 200.
sub ready_everywhere {
    my $m = eval { $t->request('GET', '/metrics')->{body} } // '';
    my ($conf) = $m =~ /^mailerd_pg_pool_connections\{state="configured"\} (\d+)/m;
    my ($conn) = $m =~ /^mailerd_pg_pool_connections\{state="connected"\} (\d+)/m;
    my ($rc) = $m =~ /^mailerd_redis_connected (\d+)/m;
    return 0 unless defined $conf && $conf > 0 && ($conn // -1) == $conf && ($rc // -1) == 2;
    for (1 .. 10) {
        my $r = ready_json();
        return 0 unless $r && $r->{status} == 200;
    }
    return 1;
}

# --- one outage per store ---------------------------------------------------------------
# stopped: the server exits (clients see the connections close); frozen: SIGSTOP,
# so connections stay open and nothing answers (only timeouts can tell).
my @cases = (
    ['postgres', 'stopped', sub { $pg->stop }, sub { $pg->start }],
    ['redis', 'stopped', sub { $redis->stop }, sub { $redis->start }],
    ['postgres', 'frozen', sub { kill 'STOP', pg_pids() }, sub { kill 'CONT', pg_pids() }],
    ['redis', 'frozen', sub { kill 'STOP', $redis->{pid} }, sub { kill 'CONT', $redis->{pid} }],
);
for my $case (@cases) {
    my ($store, $how, $stop, $start) = @$case;
    my $name = "$store $how";
    my $tag = "$store-$how";
    my @pids = start_load($tag, 2);
    ok(wait_for(sub { lines_in($tag) >= 20 }, 10), "$name: load is running");

    my $t_stop = time;
    $stop->();
    my $t_stopped = time;
    note(sprintf '%s in %.2f s', $name, $t_stopped - $t_stop);

    my $down;
    ok(wait_for(sub {
        my $r = ready_json();
        $down = $r if $r && $r->{status} == 503;
        return $down && ($down->{json}{checks}{$store} // '') ne 'ok';
    }, 5), "$name: /ready turns 503");
    is($down && $down->{json}{error}{code}, 'not_ready', "$name: error code not_ready");
    like($down && $down->{json}{checks}{$store} // '', $how eq 'frozen' ? qr/^(timeout|down)$/ : qr/^down$/,
         "$name: the $store check says why") or diag($down && $down->{body});
    like($down && $down->{json}{error}{message} // '', qr/\Q$store\E/, "$name: the message names $store");
    # Keep it down while the load sees it for a while (at least 1.5 s after the stop).
    my $n0 = lines_in($tag);
    wait_for(sub { time - $t_stopped >= 1.5 && lines_in($tag) >= $n0 + 20 }, 10);
    my $h = eval { $t->request('GET', '/health') };
    is($h && $h->{status}, 200, "$name: /health is 200");

    my $t_start = time;
    $start->();
    my $t_started = time;
    my $back = wait_for(\&ready_everywhere, 20);
    my $t_back = time;
    ok($back, "$name, back: /ready recovers on every worker without restarting mailerd")
      or diag(eval { ready_json()->{body} });
    note(sprintf '%s: /ready 200 everywhere %.2f s after the start', $name, $t_back - $t_started);
    my $n1;
    wait_for(sub { time > $t_back + 0.3 && ($n1 //= lines_in($tag)) && lines_in($tag) >= $n1 + 30 }, 10);
    my @rows = stop_load($tag, @pids);

    my @store_rows = grep { $_->{path} ne '/health' } @rows;
    my ($slowest) = sort { $b->{dt} <=> $a->{dt} } @store_rows;
    note(sprintf '%s: %d store-touching requests, slowest %.3f s (%s %d)', $name, scalar @store_rows,
         $slowest->{dt}, $slowest->{path}, $slowest->{status});
    cmp_ok($slowest->{dt}, '<', 2, "$name: every store-touching request answered in under 2 s");
    my @lost = grep { $_->{status} == 0 } @rows;
    is(scalar @lost, 0, "$name: no request lost its connection or went unanswered")
      or diag(join "\n", map { "$_->{path} at +" . sprintf('%.2f', $_->{t0} - $t_stop) } @lost[0 .. ($#lost > 5 ? 5 : $#lost)]);
    my @odd = grep { $_->{status} != 200 && $_->{status} != 503 } @store_rows;
    is(scalar @odd, 0, "$name: store-touching requests answer 200 or 503, nothing else")
      or diag(join ', ', map { "$_->{path}=$_->{status}" } @odd[0 .. ($#odd > 5 ? 5 : $#odd)]);
    my @during = grep { $_->{t0} > $t_stopped + 0.5 && $_->{t0} + $_->{dt} < $t_start } @store_rows;
    ok(@during >= 10, "$name: load ran during the outage (" . scalar(@during) . " requests)");
    # /v1/me may be served from the worker's key cache (200) or fail (503); /ready
    # must fail.
    my @during_ok = grep { $_->{status} != 503 && $_->{path} eq '/ready' } @during;
    is(scalar @during_ok, 0, "$name: while it was down, /ready got 503")
      or diag(join ', ', map { "$_->{path}=$_->{status}" } @during_ok[0 .. ($#during_ok > 5 ? 5 : $#during_ok)]);
    my @health = grep { $_->{path} eq '/health' } @rows;
    my @health_bad = grep { $_->{status} != 200 } @health;
    ok(@health > 10 && !@health_bad, "$name: /health stayed 200 (" . scalar(@health) . " requests)");
    # Once every worker answered 200, the load gets 200 too (after the 250 ms a
    # worker may still serve its last /ready result).
    my @tail = grep { $_->{path} ne '/health' && $_->{t0} > $t_back + 0.3 } @rows;
    my @tail_bad = grep { $_->{status} != 200 } @tail;
    ok(@tail >= 10 && !@tail_bad, "$name, back: store-touching requests are 200 again (" . scalar(@tail) . ')')
      or diag(join ', ', map { "$_->{path}=$_->{status}" } @tail_bad);
    my ($d) = grep { $_->{path} eq '/ready' && $_->{status} == 503 } @store_rows;
    ok($d, "$name: the load saw /ready 503");
    if ($key) {
        my @me = grep { $_->{path} eq '/v1/me' } @during;
        note(sprintf '%s: /v1/me during the outage: %d answers, %d of them 503', $name, scalar @me,
             scalar grep { $_->{status} == 503 } @me);
    }

    is($t->pid, $master, "$name: the master kept its pid");
    is_deeply([$t->worker_pids], \@workers, "$name: the workers kept their pids");
}

# Metrics saw it: errors or reconnects were counted, and the pools are whole again.
{
    my $m = eval { $t->request('GET', '/metrics')->{body} } // '';
    my ($pgr) = $m =~ /^mailerd_pg_reconnects_total (\d+)/m;
    my ($rdr) = $m =~ /^mailerd_redis_reconnects_total (\d+)/m;
    cmp_ok($pgr // 0, '>', 0, 'mailerd_pg_reconnects_total counted the outage');
    cmp_ok($rdr // 0, '>', 0, 'mailerd_redis_reconnects_total counted the outage');
}

$t->stop;
done_testing;
