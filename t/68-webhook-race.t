#!/usr/bin/perl
# A provider's news that overtakes our own record of the send (issue 7, point
# 2: statuses never move backwards). Postmark (tools/mock-esp) holds its answer
# for a while; meanwhile its Delivery webhook for the message arrives and moves
# it from 'sending' to 'delivered'. When the answer comes, the record must stamp
# the send (esp, provider id, sent_at, a 'sent' event) without moving the
# status back to 'sent', and the message must not be sent again.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use MailerdTest qw(wait_for);

my $mock = eval { require MockESP; MockESP->new(journal => 1) };
plan skip_all => "tools/mock-esp is not functional: " . ($@ =~ s/\n.*//sr) unless $mock;

my $conf = $mock->esp_conf('pm', 'postmark', ca_file => $mock->ca_file, response_timeout => '10s')
  . "webhooks {\n    postmark_user pmuser;\n    postmark_password pmpass;\n}\n";
my $s = MailerdTest->stack(workers => 1, main_extra => $conf);
my $t = $s->{t};
my ($A) = @{ $s->{tenants} };
my $json = JSON::PP->new->canonical;

sub sql { scalar $s->{pg}->psql($_[0]) }

$mock->faults(provider => 'postmark', latency_ms => 2500);
my $r = $t->json_request($A->{key}, 'POST', '/v1/messages',
                         { from => 'Shop <shop@acme.example>', to => 'race@example.com', subject => 'race',
                           text => 'hello' });
is($r->{status}, 202, 'accepted') or diag($r->{body});
my $id = $r->{json}{data}[0]{id};

ok(wait_for(sub { sql("SELECT status FROM messages WHERE id = '$id'") eq 'sending' }, 10),
   'claimed: sending, the mock holds its answer');
my $hook = { RecordType => 'Delivery', ID => 'd-' . int(rand 1e9), MessageID => 'pm-early-' . int(rand 1e9),
             Recipient => 'race@example.com', DeliveredAt => '2026-01-01T00:00:00Z', Details => 'ok',
             Metadata => { mailerd_message_id => $id } };
$r = $t->request('POST', '/webhooks/postmark', body => $json->encode($hook),
                 headers => { 'Content-Type' => 'application/json',
                              Authorization => 'Basic ' . encode_base64('pmuser:pmpass', '') });
is($r->{status}, 200, 'the Delivery webhook arrives first') or diag($r->{body});
is(sql("SELECT status FROM messages WHERE id = '$id'"), 'delivered', 'it moves the message to delivered');

ok(wait_for(sub { sql("SELECT sent_at IS NOT NULL FROM messages WHERE id = '$id'") eq 't' }, 15),
   'then the provider answers and the send is recorded');
is(sql("SELECT status FROM messages WHERE id = '$id'"), 'delivered', 'the status stays delivered (never backwards)');
like(sql("SELECT esp || '|' || esp_message_id FROM messages WHERE id = '$id'"), qr/^pm\|.+/,
     'the account and the provider id are stamped');
ok(sql("SELECT delivered_at IS NOT NULL FROM messages WHERE id = '$id'") eq 't', 'delivered_at kept');
is(sql("SELECT string_agg(type, ',' ORDER BY type) FROM events WHERE message_id = '$id'"
       . " AND type IN ('sent', 'delivered')"), 'delivered,sent', "both the 'sent' and the 'delivered' events");
is(sql("SELECT attempts FROM messages WHERE id = '$id'"), 1, 'one attempt');
$mock->clear_faults;
sleep 1;
is(scalar(grep { $_->[0] eq 'postmark' && $_->[1] eq $id } $mock->journal_lines), 1,
   'the provider got it exactly once');

$t->stop;
done_testing;
