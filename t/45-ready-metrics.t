# scripts/test: alone (/ready answered by every worker in a row, a burst of it)
# GET /ready and the store metrics, against a private PostgreSQL and Redis:
#  - /ready is 200 with every check "ok" once both stores answer and the schema is
#    current; its result is shared for a moment (a hammering load balancer costs
#    a handful of PINGs, not one per request);
#  - the schema check compares the database with the migrations on disk: behind
#    (an unapplied 0002) and ahead (the database is newer) are 503 naming
#    "schema", and `mailerd migrate` makes it 200 again without a restart;
#  - a store that is not configured fails readiness ("not_configured");
#  - /metrics has the pool and client gauges and counters with sane values:
#    connected == pool_size x workers, reconnects grow after a PostgreSQL restart
#    and counters do not go back when a worker is killed and replaced.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use File::Copy qw(copy);
use Time::HiRes qw(time sleep);
use MailerdTest qw(wait_for src_dir);
use MailerdStore;

MailerdTest::skip_without_store();

my $pg = MailerdStore->pg;
my $redis = MailerdStore->redis;
my $t = MailerdTest->new;
my $dir = $t->dir;

# Migration dirs: "current" (the repo's), "next" (plus an unapplied 0002).
my @shipped = sort glob(src_dir() . '/migrations/*.sql');
my $latest = 0;
for (@shipped) { $latest = $1 + 0 if m{/(\d+)_[^/]*\.sql$} && $1 > $latest }
ok($latest >= 1, "the repo ships migrations (latest $latest)");
my $next = $latest + 1;
for my $d ('current', 'next') {
    mkdir "$dir/mig-$d";
    copy($_, "$dir/mig-$d/") or die "copy $_: $!" for @shipped;
}
{
    my $f = sprintf('%s/mig-next/%04d_wiring_test.sql', $dir, $next);
    open(my $fh, '>', $f) or die "$f: $!";
    print $fh "CREATE TABLE wiring_test (x int);\n";
    close $fh;
}

sub conf {
    my (%o) = @_;
    my $extra = '';
    $extra .= sprintf(qq{postgres {\n    dsn "%s";\n    pool_size 3;\n    reconnect_max 500ms;\n}\n}, $pg->dsn)
      unless $o{no_pg};
    $extra .= sprintf(qq{redis {\n    address %s;\n}\n}, $redis->addr) unless $o{no_redis};
    $extra .= "migrations_dir $dir/mig-" . ($o{mig} // 'current') . ";\n";
    $t->write_conf($t->conf_text(main_extra => $extra));
}

sub ready { my $r = eval { $t->request('GET', '/ready', timeout => 5) }; $r }

sub metrics {
    my $r = eval { $t->request('GET', '/metrics') } or return {};
    my %m;
    for (split /\n/, $r->{body}) {
        next if /^#/;
        $m{$1} = $2 if /^(\S+) (\S+)$/;
    }
    return \%m;
}

# Until cond(/ready) holds on every worker: a run of answers all satisfy it.
sub ready_everywhere {
    my ($cond, $timeout) = @_;
    return wait_for(sub {
        for (1 .. 10) {
            my $r = ready();
            return 0 unless $r && $cond->($r);
        }
        return 1;
    }, $timeout // 20);
}

conf();
my ($rc, $out) = $t->run_cmd('-p', $dir, '-c', "$dir/mailerd.conf", 'migrate');
is($rc, 0, 'mailerd migrate') or diag($out);
$t->start;

# --- /ready ------------------------------------------------------------------------
# Every pool connected first: a run of 200s alone may all come from one worker
# (they share the listening socket; a busy one accepts none).
ok(wait_for(sub {
    my $m = metrics();
    ($m->{'mailerd_pg_pool_connections{state="connected"}'} // -1) == 6 && ($m->{mailerd_redis_connected} // -1) == 2;
}, 20) && ready_everywhere(sub { $_[0]{status} == 200 }), '/ready turns 200 on every worker')
  or diag(eval { ready()->{body} });
# What the workers logged about their stores, for a /ready that is not 200 (a
# pool connection lost and made again would show here).
sub store_log { join "\n", grep { /postgres|redis|pool/i } split /\n/, $t->error_log }
my $r = ready();
is($r->{status}, 200, '/ready 200') or diag(store_log());
is_deeply($r->{json}, { status => 'ready', checks => { postgres => 'ok', redis => 'ok', schema => 'ok' } },
          '/ready body names every check') or diag($r->{body});
is($r->{headers}{'cache-control'}, 'no-store', '/ready is not cacheable');
my $h = eval { $t->request('HEAD', '/ready') };
is($h && $h->{status}, 200, 'HEAD /ready 200');

# A hammering load balancer: many /ready (for over a second, so the cached
# result expires a few times), few PINGs.
sub pings {
    my ($calls) = ($redis->cli('INFO', 'commandstats') // '') =~ /cmdstat_ping:calls=(\d+)/;
    return $calls // 0;
}
{
    my $p0 = pings();
    my $t0 = time;
    my $n = 0;
    my $bad = 0;
    my $first_bad;
    while ($n < 300 || time - $t0 < 1.2) {
        my $x = ready();
        unless ($x && $x->{status} == 200) {
            $bad++;
            $first_bad //= sprintf('first one at %.3f s: %s %s', time - $t0, $x ? $x->{status} : 'no answer',
                                   $x ? $x->{body} // '' : '');
        }
        $n++;
    }
    my $el = time - $t0;
    my $p = pings() - $p0;
    # One check per worker per 250 ms at most (+1 each for the edges).
    my $bound = 2 * (int($el / 0.25) + 2);
    note(sprintf '%d /ready in %.2f s cost %d PINGs (bound %d)', $n, $el, $p, $bound);
    is($bad, 0, "$n /ready in a row are 200") or diag(($first_bad // '') . "\n" . store_log());
    ok($p >= 1 && $p <= $bound, "they cost $p PINGs, not one each (at most $bound)");
}

# --- metrics ---------------------------------------------------------------------------
my $m;
ok(wait_for(sub {
    $m = metrics();
    ($m->{'mailerd_pg_pool_connections{state="configured"}'} // -1) == 6
      && ($m->{'mailerd_pg_pool_connections{state="connected"}'} // -1) == 6
      && ($m->{mailerd_redis_connected} // -1) == 2;
}, 10), 'connected == configured == pool_size x workers; Redis connected in both workers')
  or diag(join "\n", map { "$_ $m->{$_}" } grep /pg_|redis_/, sort keys %$m);
for my $k (qw(mailerd_pg_queries_in_flight mailerd_pg_queries_waiting mailerd_pg_query_errors_total
              mailerd_pg_timeouts_total mailerd_pg_reconnects_total mailerd_redis_commands_in_flight
              mailerd_redis_reconnects_total mailerd_redis_errors_total)) {
    ok(defined $m->{$k} && $m->{$k} =~ /^\d+$/, "$k is there, a count (" . ($m->{$k} // 'undef') . ')');
}
is($m->{mailerd_pg_queries_waiting}, 0, 'nothing waits for a connection');
is($m->{mailerd_pg_query_errors_total}, 0, 'no query errors yet');
{
    my $body = eval { $t->request('GET', '/metrics')->{body} } // '';
    like($body, qr/^# TYPE mailerd_pg_reconnects_total counter$/m, 'reconnects are a counter');
    like($body, qr/^# TYPE mailerd_pg_pool_connections gauge$/m, 'pool connections are a gauge');
}

# A PostgreSQL restart: every connection is lost and comes back; counted.
# /ready is asked all along, so each worker holds a fresh "postgres down" when
# its pool reconnects: that must not be served on once a connection is up (it
# was, for up to the 250 ms the result is shared).
my $rec0 = $m->{mailerd_pg_reconnects_total};
{
    my $from = length $t->error_log;
    $pg->stop('fast');
    ok(wait_for(sub { my $x = ready(); $x && $x->{status} == 503 && ($x->{json}{checks}{postgres} // '') eq 'down' }, 10),
       'PostgreSQL stopped: /ready 503, postgres "down"');
    $pg->start;
    my %back;
    my $n = 0;
    my $t0 = time;
    until (keys %back == 2 || time - $t0 > 20) {
        ready();
        $n++;
        my $since = substr($t->error_log, $from);
        $back{$1} = 1 while $since =~ /"pid":(\d+),[^\n]*"msg":"postgres connected"/g;
    }
    is(scalar keys %back, 2, "both workers' pools reconnected (/ready asked $n times meanwhile)");
    my @not = grep { !$_ || $_->{status} != 200 } map { ready() } 1 .. 20;
    is(scalar @not, 0, 'and at once every /ready is 200 again, no "down" served from before')
      or diag($not[0] ? $not[0]{body} : 'no answer');
}
ok(wait_for(sub {
    $m = metrics();
    ($m->{'mailerd_pg_pool_connections{state="connected"}'} // -1) == 6
      && ($m->{mailerd_pg_reconnects_total} // 0) > $rec0;
}, 20), 'after a PostgreSQL restart: reconnects counted, all 6 connections back')
  or diag(join "\n", map { "$_ $m->{$_}" } grep /pg_/, sort keys %$m);
ok(ready_everywhere(sub { $_[0]{status} == 200 }), '/ready 200 again after the restart');

# A worker killed and replaced: counters keep their sums; gauges come back.
{
    my %before = map { $_ => $m->{$_} } grep /_total$/, keys %$m;
    my @w = $t->worker_pids;
    kill 'KILL', $w[0];
    ok(wait_for(sub { my @n = $t->worker_pids; @n == 2 && !grep { $_ == $w[0] } @n }, 10),
       'the master replaced the killed worker');
    ok(wait_for(sub {
        $m = metrics();
        ($m->{'mailerd_pg_pool_connections{state="connected"}'} // -1) == 6
          && ($m->{mailerd_redis_connected} // -1) == 2;
    }, 10), 'the new worker connected: 6 PostgreSQL connections, 2 Redis');
    my @down = grep { ($m->{$_} // 0) < $before{$_} } sort keys %before;
    is_deeply(\@down, [], 'no counter went back across the worker restart')
      or diag(join ', ', map { "$_: $before{$_} -> " . ($m->{$_} // 'undef') } @down);
}

# --- schema ------------------------------------------------------------------------------
my $behind = "behind: $latest/$next";
conf(mig => 'next');
$t->signal('HUP');
# Conditions are checked on a run of answers: a worker that has just started
# (after a reload) may not have connected yet, and says so.
ok(ready_everywhere(sub {
    $_[0]{status} == 503 && ($_[0]{json}{checks}{schema} // '') eq $behind
      && ($_[0]{json}{checks}{postgres} // '') eq 'ok' && ($_[0]{json}{checks}{redis} // '') eq 'ok' }),
   "an unapplied migration: /ready 503 with schema \"$behind\", postgres and redis ok")
  or diag(eval { ready()->{body} });
$r = ready();
is($r->{json}{error}{code}, 'not_ready', 'error code not_ready');
like($r->{json}{error}{message}, qr/schema/, 'the message names the schema');

($rc, $out) = $t->run_cmd('-p', $dir, '-c', "$dir/mailerd.conf", 'migrate');
is($rc, 0, 'mailerd migrate applies it') or diag($out);
ok(ready_everywhere(sub { $_[0]{status} == 200 }), '/ready 200 again, without a restart');

my $ahead = "ahead: $next/$latest";
conf(mig => 'current');
$t->signal('HUP');
ok(ready_everywhere(sub { $_[0]{status} == 503 && ($_[0]{json}{checks}{schema} // '') eq $ahead }),
   "a database newer than the migrations on disk: /ready 503 with schema \"$ahead\"")
  or diag(eval { ready()->{body} });

# --- a store that is not configured ----------------------------------------------------
conf(mig => 'next', no_redis => 1);
$t->signal('HUP');
ok(ready_everywhere(sub {
    $_[0]{status} == 503 && ($_[0]{json}{checks}{redis} // '') eq 'not_configured'
      && ($_[0]{json}{checks}{postgres} // '') eq 'ok' && ($_[0]{json}{checks}{schema} // '') eq 'ok' }),
   'without a redis block: /ready 503, redis "not_configured" (postgres and schema ok)')
  or diag(eval { ready()->{body} });
ok(wait_for(sub { $m = metrics(); ($m->{mailerd_redis_connected} // -1) == 0 }, 10),
   'mailerd_redis_connected is 0 once the old workers are gone');

conf(mig => 'next', no_pg => 1);
$t->signal('HUP');
ok(ready_everywhere(sub {
    $_[0]{status} == 503 && ($_[0]{json}{checks}{postgres} // '') eq 'not_configured'
      && ($_[0]{json}{checks}{redis} // '') eq 'ok' }),
   'without a postgres block: /ready 503, postgres "not_configured"')
  or diag(eval { ready()->{body} });
ok(wait_for(sub { $m = metrics(); ($m->{'mailerd_pg_pool_connections{state="configured"}'} // -1) == 0 }, 10),
   'no PostgreSQL connection configured any more');
is(eval { $t->request('GET', '/health')->{status} }, 200, '/health is 200 all along');

$t->stop;
done_testing;
