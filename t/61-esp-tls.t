#!/usr/bin/perl
# TLS verification on the way to a provider (issue 6): a server certificate for
# the wrong host, or from an unknown CA, fails the send as retryable and is
# logged; nothing is sent.
#
# Two extra tools/mock-esp instances share one test CA: "wh" serves a
# certificate signed by that CA for wrong.example only, "uca" one for the right
# names signed by a CA mailerd does not know. An account points at each with
# ca_file = the test CA. One message through each: it is deferred with code tls
# (an event), then failed after max_attempts (2) with a dead letter; the error
# log has a warning naming the certificate verification failure; the mock saw
# failed handshakes and accepted no request. Then an account with
# `tls_verify off` against the wrong-host mock: the warning is logged at load
# and the message is delivered.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use JSON::PP;
use File::Temp qw(tempdir);
use Time::HiRes qw(time sleep);
use MailerdTest qw(wait_for);

MailerdTest::skip_without_store();
require MockESP;
plan skip_all => 'mock-esp not built' unless -x MockESP::bin_path();

my $t0 = time;
my $certs = tempdir('mock-esp-certs-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{MAILERD_KEEP});
my $wh = MockESP->new(cert => 'wrong_host', cert_dir => $certs, journal => 1);
my $uca = MockESP->new(cert => 'unknown_ca', cert_dir => $certs, journal => 1);
my $ca = $wh->ca_file;
is($uca->ca_file, $ca, 'both mocks share the test CA');

my $conf = $wh->esp_conf('wh', 'sendgrid', ca_file => $ca)
  . $uca->esp_conf('uca', 'postmark', ca_file => $ca)
  . $wh->esp_conf('wh_off', 'sendgrid', ca_file => $ca, tls_verify => 'off')
  . "default_esp wh_off;\nmax_attempts 2;\nretry_backoff_base 50ms;\nretry_backoff_max 200ms;\n";

my $S = MailerdTest->stack(workers => 1, main_extra => $conf);
my $t = $S->{t};
my ($A) = @{ $S->{tenants} };
my $json = JSON::PP->new->utf8->canonical;

sub sql { scalar $S->{pg}->psql($_[0]) }

sub send_via {
    my ($acct) = @_;
    my $r = $t->json_request($A->{key}, 'POST', '/v1/messages', {
        from => 'TLS <sender@example.com>', to => ["$acct\@example.com"],
        subject => "tls $acct", text => 'hello', esp => $acct,
    });
    is($r->{status}, 202, "accepted for $acct") or diag($r->{body});
    return $r->{json}{data}[0]{id};
}

sub status_of { sql("SELECT status FROM messages WHERE id = '$_[0]'") // '' }

# The warnings of the error log (decoded) whose message or fields match $re.
sub warnings_like {
    my ($re) = @_;
    return grep { ($_->{level} // '') =~ /^(warn|error)$/ && $json->encode($_) =~ $re }
      $t->error_log_entries;
}

my %id = (wh => send_via('wh'), uca => send_via('uca'));
my %why = (wh => qr/certificate verify failed: (IP address|hostname) mismatch/i,
           uca => qr/certificate verify failed: (unable to get local issuer certificate|self.signed)/i);

ok(wait_for(sub { !grep { status_of($id{$_}) ne 'failed' } keys %id }, 20),
   'both messages end failed (after max_attempts)')
  or diag(join("\n", map { "$_: " . status_of($id{$_}) } sort keys %id) . "\n" . $t->log_warnings);

for my $acct (sort keys %id) {
    my $id = $id{$acct};
    my $row = sql("SELECT status || '|' || attempts || '|' || esp || '|' || coalesce(last_error, '') "
                  . "FROM messages WHERE id = '$id'");
    like($row, qr/^failed\|2\|$acct\|tls \(after 2 attempts\): tls: TLS handshake with 127\.0\.0\.1: /,
         "$acct: failed after 2 attempts, last error tls") or diag($row);
    like($row, $why{$acct}, "$acct: the last error names the verification failure");
    my $evs = sql("SELECT string_agg(type || ':' || coalesce(data->>'code', ''), ',' ORDER BY created_at, id) "
                  . "FROM events WHERE message_id = '$id' AND type IN ('deferred', 'failed', 'sent')");
    is($evs, 'deferred:tls,failed:attempts_exhausted',
       "$acct: retryable: deferred with code tls, then failed (attempts exhausted)");
    my $dl = sql("SELECT code || '|' || reason FROM dead_letters WHERE message_id = '$id'");
    like($dl, qr/^attempts_exhausted\|tls /, "$acct: a dead letter with the tls error") or diag($dl);
    my @w = warnings_like($why{$acct});
    ok(@w >= 1, "$acct: the error log has a warning naming the TLS verification failure")
      or diag($t->log_warnings);
    diag("$acct: " . ($w[0]{msg} // $json->encode($w[0]))) if @w && $ENV{TEST_VERBOSE};
}

# nothing was sent: no request reached either mock's API, and the handshakes failed
for my $m ([wh => $wh], [uca => $uca]) {
    my ($name, $mock) = @$m;
    my $st = $mock->stats;
    my $accepted = 0;
    $accepted += ($st->{$_}{accepted} // 0) + ($st->{$_}{rejected} // 0) + ($st->{$_}{failed} // 0)
      for qw(ses sendgrid postmark mailgun);
    is($accepted, 0, "$name mock: no API request reached it") or diag($json->encode($st));
    ok(($st->{tls}{handshake_failed} // 0) >= 2, "$name mock: failed handshakes (one per attempt at least)")
      or diag($json->encode($st));
    is(($st->{tls}{accepted} // 0), 0, "$name mock: no TLS connection completed") or diag($json->encode($st));
    is(scalar($mock->journal_lines), 0, "$name mock: its journal is empty");
}

# tls_verify off: said out loud at load, and the wrong-host mock then takes the mail
my @off = warnings_like(qr/tls_verify off|verification is OFF/i);
ok(@off >= 1, 'tls_verify off: a warning is logged at load') or diag($t->log_warnings);
ok(scalar(grep { $json->encode($_) =~ /wh_off|127\.0\.0\.1:\Q${\ $wh->port}\E/ } @off),
   'the warning names the account or its endpoint') or diag($json->encode(\@off));
my $off_id = send_via('wh_off');
ok(wait_for(sub { status_of($off_id) =~ /^(sent|delivered)$/ }, 10), 'tls_verify off: delivered to the wrong-host mock')
  or diag(sql("SELECT status || '|' || coalesce(last_error, '') FROM messages WHERE id = '$off_id'"));
my %journal = map { $_->[1] => $_->[0] } $wh->journal_lines;
is($journal{$off_id}, 'sendgrid', 'the wrong-host mock received it through SendGrid');
is($wh->stats->{sendgrid}{accepted}, 1, 'wrong-host mock: exactly one message accepted (the one without verification)');

$t->stop;
$wh->stop;
$uca->stop;
my $took = time - $t0;
ok($took < 30, sprintf('the test took %.1f s (< 30)', $took));
done_testing();
