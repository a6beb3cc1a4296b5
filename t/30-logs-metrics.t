# JSON error and access logs, log reopening, and /metrics against the real daemon
# with 2 workers: exact request counts by route and status, histogram consistency,
# the connections gauge, and totals that are the same whichever worker answers.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use MailerdTest qw(wait_for);
use JSON::PP;

my $t = MailerdTest->new;
$t->start;

# --- helpers -------------------------------------------------------------------

# Parses Prometheus text; returns (\%series, \@bad_lines, \%types).
sub parse_prom {
    my ($text) = @_;
    my (%s, @bad, %type);
    for my $l (split /\n/, $text) {
        next if $l eq '';
        if ($l =~ /^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/) {
            $type{$1} = $2;
            next;
        }
        next if $l =~ /^# HELP \S+ /;
        if ($l =~ /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\})? (\S+)$/) {
            my ($name, $labels, $v) = ($1, $3 // '', $4);
            if ($v !~ /^(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]Inf|NaN)$/) {
                push @bad, $l;
                next;
            }
            push @bad, "duplicate: $l" if exists $s{"$name\{$labels}"};
            $s{"$name\{$labels}"} = $v;
        } else {
            push @bad, $l;
        }
    }
    return (\%s, \@bad, \%type);
}

# Fetches /metrics without asserting anything (for polling loops).
sub metrics_quiet {
    my $r = eval { $t->request('GET', '/metrics') } or return {};
    return {} unless $r->{status} == 200;
    my ($s) = parse_prom($r->{body});
    return $s;
}

sub metrics {
    my $r = $t->request('GET', '/metrics');
    is($r->{status}, 200, 'GET /metrics is 200') or return {};
    my ($s, $bad, $type) = parse_prom($r->{body});
    ok(!@$bad, 'every /metrics line is `name{labels} value`') or diag(join("\n", @$bad));
    return wantarray ? ($s, $r) : $s;
}

sub val { my ($m, $k) = @_; $m->{$k} // 0 }

sub req_key { my ($route, $st) = @_; qq(mailerd_http_requests_total{route="$route",status="$st"}) }
sub hist_key {
    my ($route, $suffix, $le) = @_;
    return defined $le
        ? qq(mailerd_http_request_duration_seconds_bucket{route="$route",le="$le"})
        : qq(mailerd_http_request_duration_seconds_$suffix\{route="$route"});
}

# Sends one request on an open keep-alive socket and reads its response.
sub ka_request {
    my ($sock, $method, $path) = @_;
    print $sock "$method $path HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    my ($r) = MailerdTest::read_responses($sock, 1, 10);
    return $r;
}

# --- /metrics exposition ---------------------------------------------------------

my ($m0, $r0) = metrics();
like($r0->{headers}{'content-type'} // '', qr{^text/plain; version=0\.0\.4},
     'Prometheus content type');
my (undef, undef, $types) = parse_prom($r0->{body});
is($types->{mailerd_http_requests_total}, 'counter', 'requests_total is a counter');
is($types->{mailerd_http_request_duration_seconds}, 'histogram', 'duration is a histogram');
is($types->{mailerd_http_connections_open}, 'gauge', 'connections_open is a gauge');
is($m0->{'mailerd_worker_restarts_total{}'}, 0, 'worker_restarts_total present, 0 so far');
my $st = $m0->{'mailerd_start_time_seconds{}'} // 0;
cmp_ok(abs($st - time), '<', 120, 'start time is recent');
is($m0->{'mailerd_build_info{version="0.1.0"}'}, 1, 'build_info');

# --- exact counts after a known number of requests --------------------------------

# Several connections at once so both workers answer some.
my @socks = map { $t->connect or die "connect: $!" } 1 .. 6;
my @ids;
my $i = 0;
for my $n (1 .. 5) {
    my $r = ka_request($socks[$i++ % @socks], 'GET', '/health');
    is($r && $r->{status}, 200, "GET /health #$n");
    push @ids, [$r->{headers}{'x-request-id'}, 'GET', '/health', 200, $r];
}
for my $n (1 .. 2) {
    my $r = ka_request($socks[$i++ % @socks], 'GET', "/no-such-thing-$n");
    is($r && $r->{status}, 404, "GET /no-such-thing-$n is 404");
    push @ids, [$r->{headers}{'x-request-id'}, 'GET', "/no-such-thing-$n", 404, $r];
}
ok(!grep({ !defined $_->[0] || $_->[0] eq '' } @ids), 'every response carries X-Request-Id');

# The gauge sees the 6 held connections (plus the one asking).
my $m1 = metrics();
cmp_ok(val($m1, 'mailerd_http_connections_open{}'), '>=', 7, 'connections gauge counts the held connections');
close $_ for @socks;
my $gauge_back = wait_for(sub {
    my $g = metrics_quiet()->{'mailerd_http_connections_open{}'};
    return defined $g && $g <= 1;
}, 10);
ok($gauge_back, 'gauge falls back once the connections are closed');

# Which worker answered a request: its access line says (the pid).
sub answered_by {
    my ($id) = @_;
    my $pid;
    wait_for(sub {
        for my $l (split /\n/, $t->access_log) {
            my $j = eval { decode_json($l) } or next;
            $pid = $j->{pid} if ($j->{request_id} // '') eq $id;
        }
        return defined $pid;
    }, 5);
    return $pid;
}

# Fresh connections land on either worker (both wait on the shared listener);
# keep asking until both have answered some /health requests, so the totals
# below are sums over two slots.
my %answered = map { (answered_by($_->[0]) // '?') => 1 } @ids;
my $spread = 0;
while (keys(%answered) < 2 && $spread < 200) {
    my $r = $t->request('GET', '/health');
    $spread++;
    $answered{ answered_by($r->{headers}{'x-request-id'} // '') // '?' } = 1;
}
delete $answered{'?'};
is(scalar(keys %answered), 2, "both workers answered (after $spread extra requests)");
my $want_health = 5 + $spread;

# Metrics are counted when a response completes; poll until ours are in, then
# insist on the exact increments.
my $m2;
wait_for(sub {
    $m2 = metrics_quiet();
    return val($m2, req_key('/health', 200)) - val($m0, req_key('/health', 200)) >= $want_health
        && val($m2, req_key('none', 404)) - val($m0, req_key('none', 404)) >= 2;
}, 10);
is(val($m2, req_key('/health', 200)) - val($m0, req_key('/health', 200)), $want_health,
   "requests_total{/health,200} grew by exactly $want_health, summed over both workers");
is(val($m2, req_key('none', 404)) - val($m0, req_key('none', 404)), 2,
   'requests_total{none,404} grew by exactly 2');
is(val($m2, hist_key('/health', 'count')) - val($m0, hist_key('/health', 'count')), $want_health,
   "histogram count of /health grew by $want_health");

# Histogram invariants for every route present.
my %routes = map { /^mailerd_http_request_duration_seconds_count\{route="((?:[^"\\]|\\.)*)"\}$/ ? ($1 => 1) : () }
             keys %$m2;
ok($routes{'/health'} && $routes{'none'} && $routes{'/metrics'}, 'histograms for /health, none, /metrics');
for my $route (sort keys %routes) {
    my $count = $m2->{hist_key($route, 'count')};
    is($m2->{hist_key($route, undef, '+Inf')}, $count, "$route: +Inf bucket == count");
    my $sum_req = 0;
    $sum_req += $m2->{$_} for grep { /^mailerd_http_requests_total\{route="\Q$route\E",/ } keys %$m2;
    # /metrics may count itself between the two reads; the others are quiet.
    if ($route eq '/metrics') {
        cmp_ok(abs($sum_req - $count), '<=', 1, "$route: count matches requests_total");
    } else {
        is($count, $sum_req, "$route: count == sum of requests_total over statuses");
    }
    my $prev = 0;
    my $mono = 1;
    for my $le (qw(0.0005 0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 +Inf)) {
        my $v = $m2->{hist_key($route, undef, $le)};
        $mono = 0 unless defined $v && $v >= $prev;
        $prev = $v // $prev;
    }
    ok($mono, "$route: buckets are cumulative");
    cmp_ok($m2->{hist_key($route, 'sum')}, '>=', 0, "$route: sum present");
}

# Totals are the same whichever worker renders them (all slots summed): ask on
# several fresh connections and compare the quiet series.
my %seen;
for (1 .. 8) {
    my $m = metrics_quiet();
    $seen{ join ',', val($m, req_key('/health', 200)), val($m, req_key('none', 404)) } = 1;
}
is(scalar(keys %seen), 1, 'every worker renders the same totals') or diag(join ' | ', keys %seen);

# --- access log ---------------------------------------------------------------------

my %by_id;
wait_for(sub {
    %by_id = ();
    for my $l (split /\n/, $t->access_log) {
        my $j = eval { decode_json($l) } or next;
        $by_id{ $j->{request_id} // '' } = $j;
    }
    return !grep { !$by_id{ $_->[0] } } @ids;
}, 10);
my @bad_access = grep { !eval { decode_json($_); 1 } } split /\n/, $t->access_log;
ok(!@bad_access, 'every access log line is JSON') or diag(join("\n", @bad_access[0 .. md_min(4, $#bad_access)]));
for my $x (@ids) {
    my ($id, $method, $path, $status, $r) = @$x;
    my $j = $by_id{$id};
    ok($j, "access line for request $id") or next;
    is($j->{type}, 'access', 'type access');
    is($j->{method}, $method, 'method');
    is($j->{path}, $path, 'path');
    is($j->{status}, $status, 'status');
    cmp_ok($j->{bytes}, '>=', length($r->{body}), 'bytes at least the body');
    ok(defined $j->{duration_ms} && $j->{duration_ms} >= 0 && $j->{duration_ms} < 10000,
       'duration_ms is a plausible number');
    like($j->{time} // '', qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, 'time format');
    like($j->{remote} // '', qr/^127\.0\.0\.1:\d+$/, 'remote address');
    is($j->{route}, '/health', 'route pattern') if $status == 200;
}
my %pids = map { $by_id{ $_->[0] } ? ($by_id{ $_->[0] }{pid} => 1) : () } @ids;
my @workers = $t->worker_pids;
ok(!grep({ my $p = $_; !grep { $_ == $p } @workers } keys %pids), 'access lines carry worker pids');
note('requests answered by ' . scalar(keys %pids) . ' worker(s)');

# --- reopen on SIGUSR1 ------------------------------------------------------------------

my $dir = $t->dir;
rename("$dir/logs/access.log", "$dir/logs/access.log.1") or die "rename: $!";
rename("$dir/logs/error.log", "$dir/logs/error.log.1") or die "rename: $!";
$t->signal('USR1');
my $new_access = wait_for(sub {
    # Each probe is logged; only a reopened worker writes to the new file.
    eval { $t->request('GET', '/health') };
    return -s "$dir/logs/access.log";
}, 10);
ok($new_access, 'SIGUSR1: a new access log is created and written');
ok(-e "$dir/logs/error.log", 'SIGUSR1: a new error log is created');

# --- error log: every line a JSON object with the base keys -------------------------------

$t->stop;
my @lines;
for my $f ("$dir/logs/error.log.1", "$dir/logs/error.log") {
    push @lines, split /\n/, MailerdTest::slurp($f);
}
ok(@lines >= 1, 'the error log has lines (' . scalar(@lines) . ')');
my @bad;
my %levels = map { $_ => 1 } qw(emerg alert crit error warn notice info debug);
for my $l (@lines) {
    my $j = eval { decode_json($l) };
    unless (ref $j eq 'HASH' && defined $j->{time} && $levels{ $j->{level} // '' }
            && ($j->{pid} // '') =~ /^\d+$/ && defined $j->{msg}
            && $j->{time} =~ /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/) {
        push @bad, $l;
    }
}
ok(!@bad, 'every error log line is JSON with time, level, pid, msg') or diag(join("\n", @bad));
my $stderr = $t->stderr_log;
my @stderr_bad = grep { $_ ne '' && !eval { decode_json($_); 1 } } split /\n/, $stderr;
ok(!@stderr_bad, 'whatever reached stderr is JSON lines too') or diag(join("\n", @stderr_bad));

sub md_min { $_[0] < $_[1] ? $_[0] : $_[1] }

done_testing;
