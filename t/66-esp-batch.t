#!/usr/bin/perl
# scripts/test: alone (load, timing or rate assertions: no other test beside it)
# Postmark's batch call (issue 6, point 5): an account with `batch 500` sends
# through POST /email/batch of tools/mock-esp.
#   (a) 1,200 messages arrive exactly once, in requests of at most 500 and far
#       fewer requests than messages, each recorded with its own MessageID
#       (the answer's results are mapped back in order);
#   (b) with the mock rejecting a share of the messages inside 200 answers,
#       exactly those end 'failed' with Postmark's ErrorCode (406) and
#       Message kept, and the others 'sent';
#   (c) a whole batch answered 500, or 429 with Retry-After, fails over to the
#       second account of the route (SendGrid here: a Postmark fault hits every
#       Postmark account of the mock) with nothing lost and nothing sent twice.
# Skips, saying why, when tools/mock-esp is not built or does not answer.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use JSON::PP;
use MailerdTest;

my $mock = eval { require MockESP; MockESP->new(journal => 1, extra_args => [ '--keep', '5000' ]) };
plan skip_all => "tools/mock-esp is not functional yet: " . ($@ =~ s/\n.*//sr) unless $mock;
plan skip_all => 'tools/mock-esp answers no /_mock/stats' unless ref $mock->stats eq 'HASH';
plan skip_all => 'tools/mock-esp counts no Postmark batches (batch_requests)'
  unless defined $mock->provider_stats('postmark')->{batch_requests};

sub sql { my ($s, $q) = @_; scalar $s->{pg}->psql($q) }

# Accepts n messages tagged $tag (subject "batch TAG N"); returns their ids.
sub send_msgs {
    my ($s, $n, $tag) = @_;
    return $s->{t}->send_many($s->{tenants}[0]{key}, $n, $tag, prefix => 'batch',
                              from => 'Batch <batch@acme.example>');
}

# Waits until every message tagged $tag is final; returns { status => count }.
sub wait_final {
    my ($s, $n, $tag, $timeout) = @_;
    my %c;
    MailerdTest::wait_for(sub {
        %c = map { split /\|/ } split /\n/,
            sql($s, "SELECT status, count(*) FROM messages WHERE subject LIKE 'batch $tag %'"
                  . " GROUP BY 1");
        my $done = 0;
        $done += $c{$_} // 0 for qw(sent delivered failed);
        return $done == $n;
    }, $timeout // 60);
    return \%c;
}

# { id => times } of the journal lines of $provider for the ids given.
sub journal_counts {
    my ($provider, $ids) = @_;
    my %want = map { $_ => 1 } @$ids;
    my %seen;
    $seen{ $_->[1] }++ for grep { $_->[0] eq $provider && $want{ $_->[1] } } $mock->journal_lines;
    return \%seen;
}

# Lines of "id|status|esp|esp_message_id|last_error" for a tag, as a hash by id.
sub rows {
    my ($s, $tag) = @_;
    my %r;
    for (split /\n/, sql($s, "SELECT id, status, coalesce(esp, ''), coalesce(esp_message_id, ''),"
                           . " coalesce(last_error, '') FROM messages"
                           . " WHERE subject LIKE 'batch $tag %'")) {
        my ($id, @f) = split /\|/, $_, 5;
        $r{$id} = \@f;
    }
    return \%r;
}

my $conf = $mock->esp_conf('pm', 'postmark', ca_file => $mock->ca_file, max_connections => 4,
                           batch => 500, batch_window => '50ms', response_timeout => '5s')
  . $mock->esp_conf('backup', 'sendgrid', ca_file => $mock->ca_file, max_connections => 4)
  . "routing {\n    route main { esp pm; esp backup; }\n"
  . "    breaker_failures 3;\n    breaker_cooldown 1s;\n}\n"
  # room for two reads of 256 in flight, so a collector can fill to 500
  . "dispatch_concurrency 1024;\nqueue_lease 60s;\n";

my $s = eval { MailerdTest->stack(workers => 1, main_extra => $conf) };
plan skip_all => "cannot start the stack with the mock's accounts: " . ($@ =~ s/\n.*//sr) unless $s;

subtest '(a) 1,200 messages: exactly once, in batches of at most 500' => sub {
    my $before = $mock->provider_stats('postmark');
    my @ids = send_msgs($s, 1200, 'a');
    is(scalar @ids, 1200, '1,200 accepted');
    my $c = wait_final($s, 1200, 'a', 90);
    is($c->{sent} // 0, 1200, 'all sent') or diag explain $c;
    my $seen = journal_counts('postmark', \@ids);
    is(scalar(keys %$seen), 1200, 'every message arrived at the mock');
    is(scalar(grep { $_ != 1 } values %$seen), 0, '... exactly once each');
    my $after = $mock->provider_stats('postmark');
    my $reqs = $after->{requests} - $before->{requests};
    my $breqs = $after->{batch_requests} - $before->{batch_requests};
    is($breqs, $reqs, "every request went to /email/batch ($breqs)");
    is($after->{batch_messages} - $before->{batch_messages}, 1200,
       'the batches carried 1,200 messages');
    ok($after->{batch_max} <= 500, "no request held more than 500 ($after->{batch_max})");
    ok($breqs >= 3 && $breqs <= 60, "far fewer requests than messages: $breqs for 1,200");
    diag("1,200 messages in $breqs requests, the largest of $after->{batch_max}");
    my $rows = rows($s, 'a');
    my %pids = map { $_->[2] => 1 } values %$rows;
    is(scalar(grep { $_->[1] ne 'pm' } values %$rows), 0, 'recorded as sent by the account pm');
    is(scalar(keys %pids), 1200, 'each message has its own provider id');
    # The mock's per-message records: the MessageID it gave each message is
    # the one recorded for that message (the results were read in order).
    my @recs = grep { ($_->{path} // '') eq '/email/batch' && defined $_->{batch_index}
                      && $_->{mailerd_message_id} && $rows->{ $_->{mailerd_message_id} } }
               @{ $mock->requests('postmark', 5000) };
    ok(@recs >= 500, 'the mock kept the per-message records (' . scalar(@recs) . ')');
    my @wrong = grep { $rows->{ $_->{mailerd_message_id} }[2] ne ($_->{provider_message_id} // '') }
                @recs;
    is(scalar @wrong, 0, 'each message recorded the MessageID of its own result');
};

subtest '(b) messages rejected inside 200 answers end failed with the provider code' => sub {
    my $before = $mock->provider_stats('postmark');
    $mock->faults(provider => 'postmark', reject_rate => 0.25);
    my @ids = send_msgs($s, 400, 'b');
    my $c = wait_final($s, 400, 'b', 60);
    $mock->clear_faults;
    my $after = $mock->provider_stats('postmark');
    is($after->{failed} - $before->{failed}, 0, 'no request failed as a whole');
    my $rej = $after->{rejected} - $before->{rejected};
    is($rej, 100, 'the mock rejected a quarter of the messages (error diffusion)');
    is($c->{failed} // 0, $rej, "exactly that many failed ($rej)") or diag explain $c;
    is($c->{sent} // 0, 400 - $rej, 'the others were sent') or diag explain $c;
    my %rejected = map { $_->{mailerd_message_id} => 1 }
                   grep { ($_->{outcome} // '') eq 'rejected' && $_->{mailerd_message_id} }
                   @{ $mock->requests('postmark', 5000) };
    my $rows = rows($s, 'b');
    my @mismatch = grep { ($rows->{$_}[0] eq 'failed') != !!$rejected{$_} } keys %$rows;
    is(scalar @mismatch, 0, 'the failed messages are exactly the ones the mock rejected')
      or diag explain [ @mismatch[0 .. ($#mismatch < 4 ? $#mismatch : 4)] ];
    my @f = grep { $_->[0] eq 'failed' } values %$rows;
    is(scalar(grep { $_->[3] !~ /^406: You tried to send to recipient\(s\) that have been marked as inactive/ } @f),
       0, "last_error keeps ErrorCode 406 and Postmark's Message")
      or diag $f[0][3];
    my $list = join(',', map { "'$_'" } grep { $rows->{$_}[0] eq 'failed' } keys %$rows);
    is(sql($s, "SELECT count(*) FROM dead_letters WHERE code = '406' AND message_id IN ($list)"),
       scalar @f, 'their dead letters carry code 406') if $list;
    my $seen = journal_counts('postmark', \@ids);
    is(scalar(grep { $rows->{$_}[0] ne 'sent' || $seen->{$_} != 1 } keys %$seen), 0,
       'every message the mock took is sent, once');
    is(sql($s, "SELECT max(attempts) FROM messages WHERE subject LIKE 'batch b %'"), 1,
       'a permanent rejection is not retried');
};

for my $fault ([status => 500], [status => 429, retry_after => 1]) {
    my %f = @$fault;
    my $tag = "c$f{status}";
    subtest "(c) a whole batch answered $f{status}: failover to the second account" => sub {
        my $pm0 = $mock->provider_stats('postmark');
        $mock->faults(provider => 'postmark', rate => 1.0, %f);
        my @ids = send_msgs($s, 600, $tag);
        my $c = wait_final($s, 600, $tag, 90);
        $mock->clear_faults;
        is($c->{sent} // 0, 600, 'all sent, none lost') or diag explain $c;
        my $pm1 = $mock->provider_stats('postmark');
        ok($pm1->{failed} - $pm0->{failed} >= 1,
           'the primary refused whole batches (' . ($pm1->{failed} - $pm0->{failed}) . ')');
        is(scalar(keys %{ journal_counts('postmark', \@ids) }), 0, 'none taken by Postmark');
        my $seen = journal_counts('sendgrid', \@ids);
        is(scalar(keys %$seen), 600, 'every one arrived at the second account');
        is(scalar(grep { $_ != 1 } values %$seen), 0, '... exactly once each');
        my $rows = rows($s, $tag);
        is(scalar(grep { $_->[1] ne 'backup' } values %$rows), 0, 'recorded as sent by backup');
        is(sql($s, "SELECT max(attempts) FROM messages WHERE subject LIKE 'batch $tag %'"), 1,
           'a failover is no new attempt');
        my $hops = sql($s, "SELECT count(*) FROM events e JOIN messages m ON m.id = e.message_id"
                         . " WHERE m.subject LIKE 'batch $tag %' AND e.type = 'esp_failed'"
                         . " AND e.data->>'esp' = 'pm'");
        ok($hops >= 1, "the failed batch hops are esp_failed events ($hops)");
        # the primary's breaker closes again once Postmark answers
        my $k = 0;
        my $ok = MailerdTest::wait_for(sub {
            my @p = send_msgs($s, 5, "${tag}p" . $k++);
            wait_final($s, 5, "${tag}p" . ($k - 1), 30);
            my $j = journal_counts('postmark', \@p);
            return scalar(keys %$j) == 5;
        }, 20);
        ok($ok, 'after the fault is cleared, mail goes to Postmark again');
    };
}

subtest 'a graceful stop lets the sends on the wire finish' => sub {
    # Every answer of the mock takes 1.5 s, so the stop comes while requests
    # are on the wire: the worker waits for their answers and records them
    # (canceled, they were left 'sending' until a 60 s lease ran out).
    my $conf3 = $mock->esp_conf('sg', 'sendgrid', ca_file => $mock->ca_file, max_connections => 4)
      . "queue_lease 60s;\n";
    my $r = eval { MailerdTest->stack(workers => 1, main_extra => $conf3) };
    ok($r, 'a stack with a SendGrid account') or return diag $@;
    $mock->faults(provider => 'sendgrid', latency_ms => 1500);
    my $before = $mock->provider_stats('sendgrid')->{requests} // 0;
    my @ids = send_msgs($r, 12, 'w');
    ok(MailerdTest::wait_for(sub { ($mock->provider_stats('sendgrid')->{requests} // 0) > $before }, 10),
       'requests are on the wire');
    is($r->{t}->stop, 0, 'graceful stop');
    $mock->clear_faults;
    my %st = split /[|\n]/, sql($r, "SELECT status, count(*) FROM messages WHERE subject LIKE 'batch w %' GROUP BY 1");
    note(join(', ', map { "$_: $st{$_}" } sort keys %st));
    is($st{sending} // 0, 0, "none left 'sending'");
    my $seen = journal_counts('sendgrid', \@ids);
    ok(keys(%$seen) >= 1 && keys(%$seen) == ($st{sent} // 0),
       'what reached the mock is recorded sent (' . scalar(keys %$seen) . '), the rest handed back');
    $r->{t}->start;
    my $c = wait_final($r, 12, 'w', 30);
    is($c->{sent} // 0, 12, 'all sent after the restart, without waiting for a lease') or diag explain $c;
    $seen = journal_counts('sendgrid', \@ids);
    is(scalar(grep { $_ != 1 } values %$seen) + (12 - keys %$seen), 0, 'each exactly once');
    $r->{t}->stop;
};

subtest 'stopping with parked messages loses none' => sub {
    # A long window keeps messages parked in the collector when the worker is
    # told to stop: they are handed back and sent after the restart.
    my $conf2 = $mock->esp_conf('pm', 'postmark', ca_file => $mock->ca_file, batch => 500,
                                batch_window => '1s')
      . "dispatch_concurrency 64;\nqueue_lease 60s;\n";
    my $r = eval { MailerdTest->stack(workers => 1, main_extra => $conf2) };
    ok($r, 'a stack with a 1 s window') or return diag $@;
    my @ids = send_msgs($r, 40, 'd');
    # parked: claimed ('sending'), nothing at the mock yet
    my $parked = MailerdTest::wait_for(sub {
        sql($r, "SELECT count(*) FROM messages WHERE subject LIKE 'batch d %' AND status = 'sending'") > 0
    }, 10);
    ok($parked, 'messages are claimed and parked');
    $r->{t}->stop;
    my $st = sql($r, "SELECT count(*) FROM messages WHERE subject LIKE 'batch d %' AND status = 'sending'");
    my $seen = journal_counts('postmark', \@ids);
    my $out = scalar keys %$seen;
    # a window that ran out just before the stop sent its batch: those are recorded
    is($st, 0, "no message left 'sending' after a graceful stop ($out had gone out)");
    $r->{t}->start;
    my $c = wait_final($r, 40, 'd', 30);
    is($c->{sent} // 0, 40, 'all sent after the restart') or diag explain $c;
    $seen = journal_counts('postmark', \@ids);
    is(scalar(grep { $_ != 1 } values %$seen) + (40 - keys %$seen), 0, 'each exactly once');
    $r->{t}->stop;
};

$s->{t}->stop;
undef $s;
$mock->stop;
done_testing;
