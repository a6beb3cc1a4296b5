#!/usr/bin/perl
# scripts/test: alone (load, timing or rate assertions: no other test beside it)
# Routing, failover, circuit breakers and rate limits (issue 6, md_route.c and
# md_dispatch.c) against tools/mock-esp:
#   - failover: the primary (SendGrid API) answers 500 / 429 / hangs -> every
#     message arrives at the secondary (Postmark API), none lost, each with an
#     esp_failed event for the hop while the primary was tried;
#   - the primary's circuit opens (GET /v1/admin/esps, "scope": "server", and
#     mailerd_esp_* in /metrics) and closes once it recovers and the cool-down
#     has passed;
#   - rate 200 with two workers: a 10 s window sends 2,000 +/- 5%, and every
#     worker answers GET /v1/admin/esps with both workers' sends;
#   - keep-alive: 10,000 sends to one account open no more than max_connections
#     TLS connections (the mock's counters).
# Skips, saying why, when tools/mock-esp is not built or does not answer.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use JSON::PP;
use MailerdTest;

my $mock = eval { require MockESP; MockESP->new(journal => 1) };
plan skip_all => "tools/mock-esp is not functional yet: " . ($@ =~ s/\n.*//sr) unless $mock;
my $stats = $mock->stats;
plan skip_all => 'tools/mock-esp answers no /_mock/stats' unless ref $stats eq 'HASH';

sub sql { my ($s, $q) = @_; scalar $s->{pg}->psql($q) }

sub send_batch {
    my ($s, $n, $tag) = @_;
    return $s->{t}->send_many($s->{tenants}[0]{key}, $n, $tag, prefix => 'route',
                              from => 'Route <route@acme.example>');
}

# Waits until every id is in a final state; returns { status => count }.
sub wait_final {
    my ($s, $ids, $timeout, $tag) = @_;
    # by tag when the list is long (a command line has its limits)
    my $cond = ref $ids eq 'ARRAY' && @$ids <= 1000
      ? 'id IN (' . join(',', map { "'$_'" } @$ids) . ')' : undef;
    my $n = @$ids;
    $cond //= "subject LIKE 'route $_[3] %'";
    my %c;
    MailerdTest::wait_for(sub {
        %c = map { split /\|/ } split /\n/,
            sql($s, "SELECT status, count(*) FROM messages WHERE $cond GROUP BY 1");
        my $done = 0;
        $done += $c{$_} // 0 for qw(sent delivered failed);
        return $done == $n;
    }, $timeout // 30);
    return \%c;
}

sub esps {
    my ($s, $whole) = @_;
    my $r = $s->{t}->json_request($s->{admin}, 'GET', '/v1/admin/esps');
    return $r->{status} == 200 ? $r->{json} : {} if $whole;
    return $r->{status} == 200 ? { map { $_->{name} => $_ } @{ $r->{json}{data} } } : {};
}

# The value of one /metrics sample (name with its labels, as written), or undef.
sub metric {
    my ($s, $sample) = @_;
    my $body = $s->{t}->request('GET', '/metrics')->{body} // '';
    return $body =~ /^\Q$sample\E (\S+)$/m ? $1 : undef;
}

sub journal_count {
    my ($provider, $ids) = @_;
    my %want = map { $_ => 1 } @$ids;
    my %seen;
    $seen{ $_->[1] }++ for grep { $_->[0] eq $provider && $want{ $_->[1] } } $mock->journal_lines;
    return scalar keys %seen;
}

my $routing = $mock->esp_conf('primary', 'sendgrid', response_timeout => '2s',
                              ca_file => $mock->ca_file, max_connections => 4)
  . $mock->esp_conf('secondary', 'postmark', ca_file => $mock->ca_file, max_connections => 4)
  . "routing {\n    route main { esp primary; esp secondary; }\n"
  . "    breaker_failures 3;\n    breaker_cooldown 2s;\n}\n";

my $s = eval { MailerdTest->stack(workers => 1, main_extra => $routing . "queue_lease 60s;\n") };
plan skip_all => "cannot start the stack with the mock's accounts: " . ($@ =~ s/\n.*//sr) unless $s;

subtest 'healthy: the primary takes the mail' => sub {
    my @ids = send_batch($s, 20, 'ok');
    my $c = wait_final($s, \@ids);
    is($c->{sent} // 0, 20, 'all sent') or diag explain $c;
    is(journal_count('sendgrid', \@ids), 20, 'all at the primary (SendGrid)');
    is(sql($s, "SELECT count(DISTINCT esp) || ':' || min(esp) FROM messages WHERE id IN ("
           . join(',', map { "'$_'" } @ids) . ")"), '1:primary', 'recorded as the primary');
};

for my $fault ([status => 500], [status => 429, retry_after => 1], [hang => JSON::PP::true]) {
    my %f = @$fault;
    my $name = join(' ', map { "$_=$f{$_}" } sort keys %f);
    subtest "primary fails ($name): failover to the secondary" => sub {
        $mock->faults(provider => 'sendgrid', rate => 1.0, %f);
        my @ids = send_batch($s, 30, "f" . ($f{status} // '') . ($f{hang} ? 'h' : ''));
        my $c = wait_final($s, \@ids, 60);
        is($c->{sent} // 0, 30, 'all sent, none lost') or diag explain $c;
        is(journal_count('postmark', \@ids), 30, 'every one arrived at the secondary (Postmark)');
        my $list = join(',', map { "'$_'" } @ids);
        is(sql($s, "SELECT count(*) FROM messages WHERE id IN ($list) AND esp = 'secondary'"), 30,
           'recorded as sent by the secondary');
        my $hops = sql($s, "SELECT count(*) FROM events WHERE message_id IN ($list)"
                         . " AND type = 'esp_failed' AND data->>'esp' = 'primary'");
        ok($hops >= 3, "failed hops at the primary are esp_failed events ($hops)");
        is(sql($s, "SELECT max(attempts) FROM messages WHERE id IN ($list)"), 1,
           'a failover is no new attempt');
        my $e = esps($s);
        # open, or half-open when the cool-down (2 s) passed while the last
        # hung sends timed out
        like($e->{primary}{state} // '', qr/^(open|half-open)\z/, 'the primary circuit opened')
          or diag explain $e->{primary};
        ok(@{ $e->{primary}{recent_errors} // [] } > 0, 'recent errors are shown');
        is(scalar @{ $e->{primary}{workers} // [] }, 1, 'one worker runs the account')
          or diag explain $e->{primary};
        like($e->{primary}{workers}[0]{state} // '', qr/^(open|half-open)\z/,
             "the worker's own breaker state is listed");
        my $open = metric($s, 'mailerd_esp_circuit_open{esp="primary"}');
        # a half-open breaker (cool-down over) is no longer counted as open
        ok(defined $open && $open <= 1, "mailerd_esp_circuit_open{esp=\"primary\"} ("
           . ($open // 'undef') . ")");
        ok((metric($s, 'mailerd_esp_failed_total{esp="primary"}') // 0) >= 3,
           'mailerd_esp_failed_total counts the failed hops');
        $mock->clear_faults;
        # recovery: after the cool-down a probe goes to the primary and closes it
        my $closed = MailerdTest::wait_for(sub {
            my @p = send_batch($s, 2, 'probe');
            wait_final($s, \@p, 30);
            return esps($s)->{primary}{state} eq 'closed';
        }, 20);
        ok($closed, 'the circuit closes after the primary recovers');
        my @after = send_batch($s, 10, 'after');
        wait_final($s, \@after);
        is(journal_count('sendgrid', \@after), 10, 'mail goes to the primary again');
    };
}

subtest 'admin view' => sub {
    my $r = $s->{t}->json_request(undef, 'GET', '/v1/admin/esps');
    is($r->{status}, 401, 'needs the admin token');
    my $w = esps($s, 1);
    is($w->{scope}, 'server', 'server-wide figures ("scope": "server")');
    is($w->{recent_errors_scope}, 'server', 'recent errors of every worker');
    # Whichever worker answers, the same errors (one worker ran the failing
    # account, so a per-worker list would be empty on the other).
    my %lists;
    for (1 .. 8) {
        my $a = esps($s, 1);
        my ($p) = grep { $_->{name} eq 'primary' } @{ $a->{data} // [] };
        $lists{ $a->{pid} // 0 } = join(',', map { "$_->{worker}:$_->{code}:$_->{at}" } @{ $p->{recent_errors} // [] });
    }
    my @distinct = do { my %u = map { $_ => 1 } values %lists; keys %u };
    ok(@distinct == 1 && $distinct[0] ne '', 'the same non-empty recent errors from '
       . scalar(keys %lists) . ' answering worker(s)') or diag explain \%lists;
    my $e = { map { $_->{name} => $_ } @{ $w->{data} // [] } };
    is($e->{primary}{driver}, 'sendgrid', 'driver');
    ok(defined $e->{primary}{latency}{p50_ms}, 'latency p50');
    ok($e->{primary}{latency}{samples} > 0, 'latency samples');
    ok($e->{primary}{sent} > 0 && $e->{secondary}{sent} > 0, 'sent counts');
    ok(exists $e->{primary}{in_flight}, 'in flight');
    is($e->{primary}{state}, 'closed', 'closed again');
    my $sent = sql($s, "SELECT count(*) FROM messages WHERE esp = 'primary' AND status IN ('sent', 'delivered')");
    is($e->{primary}{sent}, $sent, "sent is every message the primary took ($sent)");
    is(metric($s, 'mailerd_esp_sent_total{esp="primary"}'), $sent, 'mailerd_esp_sent_total');
    is(metric($s, 'mailerd_esp_circuit_open{esp="primary"}'), 0, 'mailerd_esp_circuit_open 0');
    ok(defined metric($s, 'mailerd_esp_latency_seconds_count{esp="secondary"}'),
       'mailerd_esp_latency_seconds');
};

subtest 'keep-alive: 10,000 sends, at most max_connections connections' => sub {
    my $before = $mock->stats->{sendgrid}{connections} // 0;
    my $n = $ENV{ROUTE_KEEPALIVE_N} // 10000;
    my @ids = eval { send_batch($s, $n, 'ka') };
    is($@, '', 'accepted') or return;
    my $c = wait_final($s, \@ids, 180, 'ka');
    is($c->{sent} // 0, $n, "all $n sent") or diag explain $c;
    my $conns = ($mock->stats->{sendgrid}{connections} // 0) - $before;
    ok($conns <= 4, "TLS connections that carried these sends: $conns (max_connections 4)");
    my $e = esps($s);
    ok(($e->{primary}{connections}{open} // 0) <= 4, 'the pool holds at most 4 open');
};
undef $s;

subtest 'rate 200 with two workers: 2,000 +/- 5% in 10 s' => sub {
    my $conf = $mock->esp_conf('paced', 'sendgrid', ca_file => $mock->ca_file, rate => 200);
    my $r = MailerdTest->stack(workers => 2, main_extra => $conf);
    my $t0 = $mock->stats->{sendgrid}{accepted} // 0;
    my @ids = send_batch($r, 3500, 'rate');
    # measure a 10 s window once sending is under way
    MailerdTest::wait_for(sub { ($mock->stats->{sendgrid}{accepted} // 0) > $t0 + 50 }, 20);
    my $a = $mock->stats->{sendgrid}{accepted};
    my $start = time;
    sleep 10;
    my $b = $mock->stats->{sendgrid}{accepted};
    my $got = ($b - $a) * 10 / (time - $start);
    ok(abs($got - 2000) <= 100, sprintf('sent %.0f in 10 s (2000 +/- 5%%)', $got));
    # Server-wide figures: whichever worker answers, "sent" counts both
    # workers' sends (the mock's count before and after the request bounds it).
    my (%pids, @bad);
    for (1 .. 30) {
        my $m0 = ($mock->stats->{sendgrid}{accepted} // 0) - $t0;
        my $w = esps($r, 1);
        my $m1 = ($mock->stats->{sendgrid}{accepted} // 0) - $t0;
        my ($p) = grep { $_->{name} eq 'paced' } @{ $w->{data} // [] };
        next unless $p;
        $pids{ $w->{pid} }++;
        push @bad, "pid $w->{pid}: sent $p->{sent}, mock $m0..$m1"
          unless $p->{sent} >= $m0 - 20 && $p->{sent} <= $m1;
        push @bad, "pid $w->{pid}: " . scalar(@{ $p->{workers} }) . " workers listed"
          unless @{ $p->{workers} } == 2;
        last if keys %pids >= 2 && $_ >= 6;
    }
    is_deeply(\@bad, [], 'every answer has both workers\' sends and both breakers');
    diag('answered by ' . scalar(keys %pids) . ' worker(s)');
    # Recent errors are server-wide too: a second of 503s reaches both
    # workers' sends, and whichever worker answers lists errors of both.
    $mock->faults(provider => 'sendgrid', rate => 1.0, status => 503);
    sleep 1;
    $mock->clear_faults;
    my (%lists, %slots);
    for (1 .. 30) {
        my $w = esps($r, 1);
        my ($p) = grep { $_->{name} eq 'paced' } @{ $w->{data} // [] };
        next unless $p;
        my @errs = @{ $p->{recent_errors} // [] };
        $lists{ $w->{pid} } = scalar(keys %{ { map { $_->{worker} => 1 } @errs } });
        $slots{ $_->{worker} } = 1 for @errs;
        last if keys %lists >= 2 && $_ >= 6;
    }
    is(scalar(keys %slots), 2, 'the recent errors name both workers');
    ok(!grep({ $_ != 2 } values %lists), 'every answering worker (' . scalar(keys %lists)
       . ') lists errors of both') or diag explain \%lists;
    $r->{t}->stop;
};

done_testing;
