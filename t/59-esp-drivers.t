#!/usr/bin/perl
# The four remote drivers end to end: mailerd (2 workers, PostgreSQL, Redis)
# with one account per driver pointed at tools/mock-esp over verified TLS (the
# mock's test CA as ca_file). One message per account, with cc, bcc, reply-to,
# an extra header, both parts and a non-ASCII subject, is accepted by the mock
# (which checks what the real API checks: SigV4, auth, fields, multipart),
# recorded as sent with the provider's id, and the mock's journal shows our id
# arrived through each provider's tag / custom arg / metadata / variable.
# A wrong SES secret is refused by the mock and the message is not sent.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use JSON::PP;
use Time::HiRes qw(time sleep);
use MailerdTest qw(wait_for);

plan skip_all => 'no PostgreSQL server binaries'
  unless -x (($ENV{MAILERD_PGBIN} // '/usr/lib/postgresql/15/bin') . '/pg_ctl');
plan skip_all => 'redis-server not installed'
  unless grep { -x "$_/redis-server" } split /:/, $ENV{PATH};
require MockESP;
plan skip_all => 'mock-esp not built' unless -x MockESP::bin_path();

my $mock = MockESP->new(journal => 1);
my $ca = $mock->ca_file;
my %drivers = (ses => 'ses', sg => 'sendgrid', pm => 'postmark', mg => 'mailgun');
my $conf = join('', map { $mock->esp_conf($_, $drivers{$_}, ca_file => $ca) } sort keys %drivers);
$conf .= $mock->esp_conf('ses_badkey', 'ses', ca_file => $ca, secret_access_key => 'wrong-secret');
$conf .= "default_esp sg;\nmax_attempts 1;\nretry_backoff_base 20ms;\nretry_backoff_max 100ms;\n";

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

my %want_status = (map({ $_ => 'sent' } keys %drivers), ses_badkey => 'failed');
my $all = wait_for(sub {
    for my $acct (keys %id) {
        my $st = sql("SELECT status FROM messages WHERE id = '$id{$acct}'") // '';
        return 0 if $st eq 'queued' || $st eq 'sending' || $st eq '';
    }
    return 1;
}, 30);
ok($all, 'every message reached a final state') or diag($t->error_log);

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
is($stats->{ses}{accepted}, 1, 'mock: one SES message accepted');
ok($stats->{ses}{rejected} >= 1, 'mock: the wrongly signed SES request was rejected');
my $bad = sql("SELECT status || '|' || coalesce(last_error, '') FROM messages WHERE id = '$id{ses_badkey}'");
like($bad, qr/^failed\|.*(Signature|signature)/, 'a wrong SES key fails the message with the signature error')
  or diag($bad);
ok(!exists $journal{ $id{ses_badkey} }, 'nothing was delivered with the wrong key');

# the requests the mock saw carry X-Mailerd-Message-Id
my $reqs = $mock->requests(undef, 50);
my $seen = grep { ($_->{body} // '') =~ /X-Mailerd-Message-Id/ } @$reqs;
ok($seen >= 4, "X-Mailerd-Message-Id in the request bodies ($seen)") if @$reqs && exists $reqs->[0]{body};

$t->stop;
$mock->stop;
done_testing();
