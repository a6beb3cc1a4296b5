#!/usr/bin/perl
# The four remote drivers end to end: mailerd (2 workers, PostgreSQL, Redis)
# with one account per driver pointed at tools/mock-esp over verified TLS (the
# mock's test CA as ca_file). One message per account, with cc, bcc, reply-to,
# an extra header, both parts and a non-ASCII subject, is accepted by the mock
# (which checks what the real API checks: SigV4, auth, fields, multipart),
# recorded as sent with the provider's id, and the mock's journal shows our id
# arrived through each provider's tag / custom arg / metadata / variable.
# A wrong SES secret is refused by the mock: the message is not sent and not
# failed for good: auth_failed is retryable, so it is deferred, ends failed
# after max_attempts (2) with a dead letter, and retry-failed sends it once the
# key is fixed (SIGHUP). Through a route whose first account has the wrong key,
# a message fails over to the second (good) account and is delivered there.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use JSON::PP;
use Time::HiRes qw(time sleep);
use MailerdTest qw(wait_for);

MailerdTest::skip_without_store();
require MockESP;
plan skip_all => 'mock-esp not built' unless -x MockESP::bin_path();

my $mock = MockESP->new(journal => 1);
my $ca = $mock->ca_file;
my %drivers = (ses => 'ses', sg => 'sendgrid', pm => 'postmark', mg => 'mailgun');
my $conf = join('', map { $mock->esp_conf($_, $drivers{$_}, ca_file => $ca) } sort keys %drivers);
$conf .= $mock->esp_conf('ses_badkey', 'ses', ca_file => $ca, secret_access_key => 'wrong-secret');
 $conf .= "default_esp sg;\nmax_attempts 2;\nretry_backoff_base 20ms;\nretry_backoff_max 100ms;\n";
# a message without an "esp" field takes this route: the wrong key first
$conf .= "routing {\n    route badfirst { esp ses_badkey; esp ses; }\n    default_route badfirst;\n}\n";

my $S = MailerdTest->stack(main_extra => $conf);
my $t = $S->{t};
my ($A) = @{ $S->{tenants} };
my $json = JSON::PP->new->utf8->canonical;

sub api {
    my ($method, $path, $body) = @_;
    my %h = (Authorization => "Bearer $A->{key}");
    $h{'Content-Type'} = 'application/json' if defined $body;
    return $t->request($method, $path, headers => \%h,
                       defined $body ? (body => $json->encode($body)) : ());
}

sub sql { scalar $S->{pg}->psql($_[0]) }

my %id;
for my $acct (sort(keys %drivers), 'ses_badkey') {
    my $r = api('POST', '/v1/messages', {
        from     => "Zo\x{eb} Sender <sender\@example.com>",
        to       => ["ann\@example.com"],
        cc       => ["cc\@example.com"],
        bcc      => ["bcc\@example.org"],
        reply_to => "help\@example.com",
        subject  => "Gr\x{fc}\x{df}e from $acct \x{2713}",
        text     => "Hello\nworld",
        html     => "<p>Hello</p>",
        headers  => { 'X-Campaign' => 'spring' },
        esp      => $acct,
    });
    is($r->{status}, 202, "accepted for $acct") or diag($r->{body});
    $id{$acct} = $r->{json}{data}[0]{id};
}

# the route: no "esp" field, so ses_badkey first, then ses
{
    my $r = api('POST', '/v1/messages', {
        from => 'Route <sender@example.com>', to => ['route@example.com'],
        subject => 'through the route', text => 'hello',
    });
    is($r->{status}, 202, 'accepted for the route') or diag($r->{body});
    $id{routed} = $r->{json}{data}[0]{id};
}

my $all = wait_for(sub {
    for my $acct (keys %id) {
        my $st = sql("SELECT status FROM messages WHERE id = '$id{$acct}'") // '';
        return 0 unless $st =~ /^(sent|delivered|failed)$/;
    }
    return 1;
}, 30);
ok($all, 'every message reached a final state (sent, delivered or failed)') or diag($t->log_warnings);

for my $acct (sort keys %drivers) {
    my $row = sql("SELECT status || '|' || esp || '|' || coalesce(esp_message_id, '') "
                  . "FROM messages WHERE id = '$id{$acct}'");
    my ($st, $esp, $pid) = split /\|/, $row // '', 3;
    ok(($st // '') =~ /^(sent|delivered)$/, "$acct ($drivers{$acct}): sent") or diag($row);
    is($esp, $acct, "$acct: recorded on its account");
    ok(length($pid // '') > 0 && ($pid // '') ne $id{$acct}, "$acct: the provider's id is kept ($pid)");
}

# the mock's journal: provider and the mailerd_message_id it read from the
# provider's own carrier (tag, custom arg, metadata, variable)
my %journal = map { $_->[1] => $_->[0] } $mock->journal_lines;
for my $acct (sort keys %drivers) {
    is($journal{ $id{$acct} }, $drivers{$acct}, "$acct: our id arrived through $drivers{$acct}");
}
my $stats = $mock->stats;
for my $p (qw(sendgrid postmark mailgun)) {
    is($stats->{$p}{accepted}, 1, "mock: one $p message accepted") or diag($json->encode($stats));
}
is($stats->{ses}{accepted}, 2, 'mock: two SES messages accepted (direct and routed)')
  or diag($json->encode($stats));
ok($stats->{ses}{rejected} >= 3, 'mock: the wrongly signed SES requests were rejected (2 attempts + 1 hop)')
  or diag($json->encode($stats));

# the wrong key: retryable auth_failed, deferred once, then failed after 2 attempts
my $bad = sql("SELECT status || '|' || attempts || '|' || coalesce(last_error, '') "
              . "FROM messages WHERE id = '$id{ses_badkey}'");
like($bad, qr/^failed\|2\|auth_failed \(after 2 attempts\): SignatureDoesNotMatch: .*signature/,
     'a wrong SES key: failed after max_attempts (2) with auth_failed and the provider\'s code and message')
  or diag($bad);
my $evs = sql("SELECT string_agg(type || ':' || coalesce(data->>'code', ''), ',' ORDER BY created_at, id) "
              . "FROM events WHERE message_id = '$id{ses_badkey}' AND type IN ('deferred', 'failed')");
is($evs, 'deferred:auth_failed,failed:attempts_exhausted',
   'events: deferred with code auth_failed, then failed (attempts exhausted)');
my $dl = sql("SELECT code || '|' || reason FROM dead_letters WHERE message_id = '$id{ses_badkey}'");
like($dl, qr/^attempts_exhausted\|auth_failed .*SignatureDoesNotMatch/, 'a dead letter keeps the auth failure')
  or diag($dl);
ok(!exists $journal{ $id{ses_badkey} }, 'nothing was delivered with the wrong key');

# the route: the wrong key is a failed hop, the good account delivers it
my $routed = sql("SELECT status || '|' || esp || '|' || attempts FROM messages WHERE id = '$id{routed}'");
like($routed, qr/^(sent|delivered)\|ses\|1$/, 'routed: delivered through the second account, first attempt')
  or diag($routed);
is($journal{ $id{routed} }, 'ses', 'routed: arrived through SES');
my $hop = sql("SELECT data->>'esp' || '|' || (data->>'code') || '|' || (data->>'error') FROM events "
              . "WHERE message_id = '$id{routed}' AND type = 'esp_failed'");
like($hop, qr/^ses_badkey\|auth_failed\|SignatureDoesNotMatch: /, 'routed: the hop at ses_badkey failed with auth_failed')
  or diag($hop);

# the key is fixed: retry-failed resends the dead letter
my $good = $mock->credentials->{ses_secret};
my $pids = $t->reload_conf(sub {
    my ($c) = @_;
    $c =~ s/secret_access_key wrong-secret;/secret_access_key $good;/ or die 'no wrong secret in the config';
    return $c;
});
ok($pids, 'SIGHUP with the right SES secret: workers replaced');
my $r = api('POST', '/v1/queue/retry-failed', { message_ids => [ $id{ses_badkey} ] });
is($r->{status}, 202, 'POST /v1/queue/retry-failed for the dead letter') or diag($r->{body});
my $resent = wait_for(sub {
    (sql("SELECT status FROM messages WHERE id = '$id{ses_badkey}'") // '') =~ /^(sent|delivered)$/
}, 15);
ok($resent, 'once the key is fixed the message is sent')
  or diag(sql("SELECT status || '|' || coalesce(last_error, '') FROM messages WHERE id = '$id{ses_badkey}'"));
%journal = map { $_->[1] => $_->[0] } $mock->journal_lines;
is($journal{ $id{ses_badkey} }, 'ses', 'and the mock received it through SES');

# the requests the mock saw carry X-Mailerd-Message-Id
my $reqs = $mock->requests(undef, 50);
my $seen = grep { ($_->{body} // '') =~ /X-Mailerd-Message-Id/ } @$reqs;
ok($seen >= 4, "X-Mailerd-Message-Id in the request bodies ($seen)") if @$reqs && exists $reqs->[0]{body};

$t->stop;
$mock->stop;
done_testing();
