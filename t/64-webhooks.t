# Provider webhooks against the real stack (PostgreSQL, Redis, mailerd with the
# sink ESP), issue 7:
#   - configuration: a bad SendGrid key and a half Postmark login are refused;
#   - every real signed SNS sample (t/data/sns, seeded certificate directory,
#     relaxed dates, their TopicArns configured) is accepted, raw and inside a
#     Lambda-style Records wrapper; the negative sample, one byte changed, a
#     certificate URL on another host or over http are refused with 401, store
#     nothing and make no outbound request (a local listener, where the test
#     points every SNS fetch, sees no connection); a topic not configured: 403;
#   - a burst of notifications with a certificate not cached yet makes one fetch
#     per worker, not one each;
#   - an unknown certificate is fetched asynchronously (from that listener, for a
#     certificate the test made) and the SES bounce inside then stored;
#   - SendGrid (a key pair made here), Mailgun (HMAC) and Postmark (basic auth)
#     bounces for our messages, matched by mailerd_message_id or by the ESP's
#     id, move the message to bounced and suppress the address (hard_bounce);
#     a bad SendGrid signature, a replayed Mailgun token, a stale timestamp and
#     wrong Postmark credentials are refused and store nothing;
#   - the same webhook twice stores one event; a late delivery leaves bounced;
#   - 3 soft bounces within the window suppress with an expiry ~7 days ahead;
#   - unknown messages are acknowledged and counted;
#   - GET /v1/messages/{id}/events and GET /v1/events (type, cursor);
#   - /metrics: events by type, suppressions by reason, refusals by provider.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use JSON::PP;
use MIME::Base64 qw(encode_base64 decode_base64);
use Digest::SHA qw(hmac_sha256_hex);
use IO::Socket::INET;
use File::Copy qw(copy);
use POSIX qw(strftime :sys_wait_h);
use Time::HiRes qw(time sleep);
use MailerdTest qw(wait_for slurp);

MailerdTest::skip_without_store();
plan skip_all => 'no openssl' unless grep { -x "$_/openssl" } split /:/, $ENV{PATH};

my $json = JSON::PP->new->canonical;
my $src = MailerdTest::src_dir();

sub run_ok {
    my ($cmd) = @_;
    my $out = `$cmd 2>&1`;
    die "$cmd: $out" if $?;
    return $out;
}

# --- keys and certificates made here ---------------------------------------------------
my $work = MailerdTest->new; # a scratch dir (not started)
my $wd = $work->dir;
run_ok("openssl ecparam -name prime256v1 -genkey -noout -out $wd/sg.key");
run_ok("openssl ec -in $wd/sg.key -pubout -outform DER -out $wd/sg.pub.der");
my $sg_pub = encode_base64(slurp("$wd/sg.pub.der"), '');
run_ok("openssl req -x509 -newkey rsa:2048 -nodes -keyout $wd/sns.key -out $wd/sns.crt"
       . " -subj /CN=sns.amazonaws.com -days 30");
my $mg_key = join('', map { ('a' .. 'f', 0 .. 9)[rand 16] } 1 .. 32);

# --- configuration is checked ------------------------------------------------------------
for my $case (["webhooks {\n  sendgrid_public_key bm90YWtleQ==;\n}\n", qr/:2: invalid "sendgrid_public_key"/],
              ["webhooks {\n  postmark_user u;\n}\n", qr/postmark_user" and "postmark_password" go together/],
              ["webhooks {\n  soft_bounce_limit 0;\n}\n", qr/:2: .*soft_bounce_limit/]) {
    my $f = $work->write_conf($case->[0], 'check.conf');
    my ($rc, $out) = $work->run_cmd('-t', '-p', $wd, '-c', $f);
    ok($rc != 0 && $out =~ $case->[1], "config refused: $case->[1]") or diag($out);
}

# --- the SNS samples ---------------------------------------------------------------------
my $sns_dir = "$src/t/data/sns";
my $results = decode_json(slurp("$sns_dir/verification-results.json"))->{results};
mkdir "$wd/snscerts";
copy($_, "$wd/snscerts/") or die "copy $_: $!" for glob("$sns_dir/*/SimpleNotificationService-*.pem");
my %topics;
my @samples;
for my $res (@$results) {
    my $body = slurp("$sns_dir/$res->{file}");
    my $m = decode_json($body);
    $topics{ $m->{TopicArn} } = 1;
    push @samples, { %$res, body => $body, msg => $m };
}
my $our_topic = 'arn:aws:sns:us-west-2:123456789012:mailerd-test';
$topics{$our_topic} = 1;

# A listener standing in for every SNS host: it logs each request's path and serves
# the certificate made above, and 200 for anything else (SubscribeURL).
my $lport = MailerdTest::free_port();
my $lsock = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $lport, Listen => 16,
                                  ReuseAddr => 1, Proto => 'tcp') or die "listen: $!";
my $llog = "$wd/listener.log";
my $lpid = fork // die "fork: $!";
if ($lpid == 0) {
    my $crt = slurp("$wd/sns.crt");
    while (my $c = $lsock->accept) {
        my $req = '';
        while ($req !~ /\r\n\r\n/) {
            my $n = sysread($c, $req, 4096, length $req);
            last unless $n;
        }
        my ($path) = $req =~ /^GET (\S+)/;
        # A slow certificate: the burst below arrives while it is on its way.
        select(undef, undef, undef, 0.5) if ($path // '') =~ /slow[^\/]*\.pem$/;
        open(my $fh, '>>', $llog);
        print $fh(($path // '?') . "\n");
        close $fh;
        my $body = ($path // '') =~ /\.pem$/ ? $crt : "<ConfirmSubscriptionResponse/>";
        print $c "HTTP/1.1 200 OK\r\nContent-Length: " . length($body) . "\r\nConnection: close\r\n\r\n$body";
        close $c;
    }
    POSIX::_exit(0);
}
close $lsock;
sub listener_hits { my $s = -e $llog ? slurp($llog) : ''; return scalar(() = $s =~ /\n/g) }

my $conf = "webhooks {\n"
  . join('', map { "    sns_topic $_;\n" } sort keys %topics)
  . "    sns_cert_dir $wd/snscerts;\n    sns_relax_dates on;\n"
  . "    sns_fetch_override http://127.0.0.1:$lport;\n"
  . "    sendgrid_public_key $sg_pub;\n    mailgun_signing_key $mg_key;\n"
  . "    postmark_user pmuser;\n    postmark_password pmpass;\n"
  . "    soft_bounce_limit 3;\n    soft_bounce_window 72h;\n    soft_bounce_suppress 7d;\n}\n";
my $S = eval { MailerdTest->stack(main_extra => "esp sink {\n    dir sink;\n}\n" . $conf) };
unless ($S) {
    kill 'TERM', $lpid;
    waitpid($lpid, 0);
    die $@;
}
my $t = $S->{t};
my $pg = $S->{pg};
my ($A) = @{ $S->{tenants} };
sub sql { scalar $pg->psql($_[0]) }

sub post {
    my ($path, $body, %h) = @_;
    $h{'Content-Type'} //= 'application/json';
    return $t->request('POST', $path, headers => \%h, body => $body);
}
sub nevents { sql("SELECT count(*) FROM events WHERE provider_event_id IS NOT NULL") }
sub nsupp { sql("SELECT count(*) FROM suppressions") }

# --- SNS: every real sample -------------------------------------------------------------
for my $s (@samples) {
    my $want = $s->{expected} eq 'pass' ? 200 : 401;
    my $r = post('/webhooks/ses', $s->{body});
    is($r->{status}, $want, "SNS sample $s->{file}: $want") or diag($r->{body});
    if ($want == 200 && $s->{msg}{Type} eq 'Notification') {
        my $w = post('/webhooks/ses', $json->encode({ Records => [ { EventSource => 'aws:sns', Sns => $s->{msg} } ] }));
        is($w->{status}, 200, "SNS sample $s->{file} inside a Records wrapper") or diag($w->{body});
    }
    if ($s->{msg}{Type} eq 'SubscriptionConfirmation') {
        is($r->{json} && $r->{json}{status}, 'confirmed', 'subscription confirmed');
    }
}
ok(listener_hits() >= 1, 'the SubscribeURL was fetched (through the client, to the stand-in host)');

my $before_hits = listener_hits();
my $before_ev = nevents();
{
    my ($s) = grep { $_->{expected} eq 'pass' && $_->{msg}{Type} eq 'Notification' && $_->{msg}{SigningCertURL} } @samples;
    my %m = %{ $s->{msg} };
    my %tamper = (%m, MessageId => do { (my $x = $m{MessageId}) =~ s/^(.)/$1 eq 'a' ? 'b' : 'a'/e; $x });
    is(post('/webhooks/ses', $json->encode(\%tamper))->{status}, 401, 'SNS: one byte changed -> 401');
    (my $u = $m{SigningCertURL}) =~ s{amazonaws\.com/}{amazonaws.com.evil.example/};
    is(post('/webhooks/ses', $json->encode({ %m, SigningCertURL => $u }))->{status}, 401, 'SNS: lookalike certificate host -> 401');
    (my $h = $m{SigningCertURL}) =~ s{^https:}{http:};
    is(post('/webhooks/ses', $json->encode({ %m, SigningCertURL => $h }))->{status}, 401, 'SNS: http certificate URL -> 401');
    is(post('/webhooks/ses', $json->encode({ %m, SigningCertURL => "https://my-bucket.s3.amazonaws.com/SimpleNotificationService-abc.pem" }))->{status},
       401, 'SNS: a storage bucket URL -> 401');
    is(post('/webhooks/ses', $json->encode({ %m, TopicArn => 'arn:aws:sns:us-east-1:1:other' }))->{status}, 403, 'SNS: topic not configured -> 403');
}
sleep 0.3;
is(listener_hits(), $before_hits, 'no outbound request for refused SNS messages');
is(nevents(), $before_ev, 'refused SNS messages stored nothing');

# --- our messages, through the sink -------------------------------------------------------
sub send_to {
    my ($to) = @_;
    my $r = $t->json_request($A->{key}, 'POST', '/v1/messages',
                             { from => 'billing@acme.example', to => $to, subject => 'Hi', text => 'Hello' });
    die "send: $r->{status} $r->{body}" unless $r->{status} == 202;
    my $id = $r->{json}{data}[0]{id};
    wait_for(sub { sql("SELECT status FROM messages WHERE id = '$id'") eq 'delivered' }, 20)
      or die "message $id not delivered by the sink: " . sql("SELECT status, last_error FROM messages WHERE id = '$id'");
    return ($id, sql("SELECT esp_message_id FROM messages WHERE id = '$id'"));
}
sub status_of { sql("SELECT status FROM messages WHERE id = '$_[0]'") }
sub suppression { sql("SELECT reason || '|' || source || '|' || coalesce(detail, '') || '|' || CASE WHEN expires_at IS NULL THEN 't' ELSE 'f' END FROM suppressions WHERE tenant_id = '$A->{id}' AND address = '$_[0]'") }

# --- SNS: an unknown certificate is fetched, then an SES bounce stored ------------------
sub sns_sign {
    my (%m) = @_;
    my @keys = $m{Type} eq 'Notification' ? qw(Message MessageId Subject Timestamp TopicArn Type)
                                           : qw(Message MessageId SubscribeURL Timestamp Token TopicArn Type);
    my $str = join('', map { defined $m{$_} ? "$_\n$m{$_}\n" : '' } @keys);
    open(my $fh, '>', "$wd/tosign") or die;
    print $fh $str;
    close $fh;
    $m{SignatureVersion} = '2';
    run_ok("openssl dgst -sha256 -sign $wd/sns.key -out $wd/sig.bin $wd/tosign");
    $m{Signature} = encode_base64(slurp("$wd/sig.bin"), '');
    return $json->encode(\%m);
}
{
    my ($id) = send_to('ses.bounce@Example.COM');
    my $ses = { eventType => 'Bounce', mail => { messageId => 'ses-1', destination => ['ses.bounce@example.com'],
                                                 tags => { mailerd_message_id => [$id] } },
                bounce => { bounceType => 'Permanent', bounceSubType => 'General', feedbackId => "fb-$id",
                            bouncedRecipients => [ { emailAddress => 'ses.bounce@example.com', diagnosticCode => 'smtp; 550 5.1.1 unknown' } ],
                            timestamp => '2024-01-01T00:00:00.000Z' } };
    my $hits = listener_hits();
    my $body = sns_sign(Type => 'Notification', MessageId => "m-$id", TopicArn => $our_topic,
                        Message => $json->encode($ses), Timestamp => strftime('%Y-%m-%dT%H:%M:%S.000Z', gmtime),
                        SigningCertURL => 'https://sns.us-west-2.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem');
    my $r = post('/webhooks/ses', $body);
    is($r->{status}, 200, 'SNS with an unknown certificate: fetched, verified, stored') or diag($r->{body});
    is($r->{json} && $r->{json}{stored}, 1, 'one event stored');
    is(listener_hits(), $hits + 1, 'the certificate was fetched once');
    is(status_of($id), 'bounced', 'SES hard bounce: message bounced');
    like(suppression('ses.bounce@example.com'), qr/^hard_bounce\|hard_bounce\|.*\|t$/, 'SES hard bounce suppresses for good');
    # each worker keeps its own cache: at most one fetch per worker (2)
    is(post('/webhooks/ses', $body)->{status}, 200, "the same SNS message again: 200") for 1 .. 6;
    ok(listener_hits() <= $hits + 2, 'the certificate is cached (at most one fetch per worker)');
    is(sql("SELECT count(*) FROM events WHERE message_id = '$id' AND provider_event_id IS NOT NULL"), 1, 'stored once');
}

# --- SNS: a burst signed with a certificate not cached yet waits on one fetch ----------------
{
    my $url = 'https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-slow0123456789.pem';
    my $before = () = (-e $llog ? slurp($llog) : '') =~ /slow/g;
    my @socks;
    for my $i (1 .. 12) {
        my $body = sns_sign(Type => 'Notification', MessageId => "burst-$i", TopicArn => $our_topic,
                            Message => '{"hello":"burst"}', Timestamp => strftime('%Y-%m-%dT%H:%M:%S.000Z', gmtime),
                            SigningCertURL => $url);
        my $sock = $t->connect or die "connect: $!";
        print $sock "POST /webhooks/ses HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
          . "Content-Type: application/json\r\nContent-Length: " . length($body) . "\r\n\r\n$body";
        push @socks, $sock;
    }
    my @st = map { my ($r) = MailerdTest::parse_response(MailerdTest::read_all($_, 15)); close $_; $r ? $r->{status} : 0 } @socks;
    is(join(',', @st), join(',', (200) x 12), 'twelve notifications at once, all verified (200)');
    my $fetches = (() = slurp($llog) =~ /slow/g) - $before;
    cmp_ok($fetches, '<=', 2, "one certificate fetch per worker for the whole burst ($fetches)");
    cmp_ok($fetches, '>=', 1, 'and it was fetched');
}

# --- SendGrid ----------------------------------------------------------------------------
sub sg_post {
    my ($events, %o) = @_;
    my $body = $json->encode($events);
    my $ts = $o{ts} // time;
    $ts = int $ts;
    open(my $fh, '>', "$wd/sgsign") or die;
    print $fh $ts . $body;
    close $fh;
    run_ok("openssl dgst -sha256 -sign $wd/sg.key -out $wd/sgsig.bin $wd/sgsign");
    my $sig = encode_base64(slurp("$wd/sgsig.bin"), '');
    $body =~ s/bounce/bounca/ if $o{tamper};
    return post('/webhooks/sendgrid', $body, 'X-Twilio-Email-Event-Webhook-Signature' => $sig,
                'X-Twilio-Email-Event-Webhook-Timestamp' => $ts);
}
{
    my ($id, $esp_id) = send_to('sg.bounce@example.com');
    my $ev = { email => 'sg.bounce@example.com', event => 'bounce', type => 'bounce', sg_event_id => "sg-b-$id",
               sg_message_id => "$esp_id.filter0001", timestamp => int time, reason => '550 5.1.1 unknown',
               mailerd_message_id => $id };
    my $n = nevents();
    my $r = sg_post([$ev], tamper => 1);
    is($r->{status}, 401, 'SendGrid: bad signature -> 401');
    is(nevents(), $n, 'SendGrid: nothing stored for a bad signature');
    is(status_of($id), 'delivered', 'SendGrid: status unchanged for a bad signature');
    $r = sg_post([$ev]);
    is($r->{status}, 200, 'SendGrid: signed bounce accepted') or diag($r->{body});
    is(status_of($id), 'bounced', 'SendGrid bounce: bounced');
    like(suppression('sg.bounce@example.com'), qr/^hard_bounce\|/, 'SendGrid hard bounce suppresses');
    # out of order: a delivery after the bounce leaves bounced
    $r = sg_post([{ %$ev, event => 'delivered', sg_event_id => "sg-d-$id", type => undef }]);
    is($r->{status}, 200, 'SendGrid late delivery accepted');
    is(status_of($id), 'bounced', 'a late delivery does not undo a bounce');
    is(sql("SELECT count(*) FROM events WHERE message_id = '$id' AND provider_event_id = 'sg-d-$id' AND type = 'delivered'"), 1,
       'the late delivery is still stored as an event');
    is(sg_post([$ev], ts => time - 7200)->{status}, 401, 'SendGrid: old timestamp -> 401');
}

# --- Mailgun -----------------------------------------------------------------------------
sub mg_body {
    my ($data, %o) = @_;
    my $ts = int($o{ts} // time);
    my $token = $o{token} // join('', map { ('a' .. 'z', 0 .. 9)[rand 36] } 1 .. 50);
    return $json->encode({ 'event-data' => $data,
                           signature => { timestamp => "$ts", token => $token, signature => hmac_sha256_hex("$ts$token", $mg_key) } });
}
{
    my ($id, $esp_id) = send_to('mg.bounce@example.com');
    my $data = { event => 'failed', severity => 'permanent', reason => 'bounce', recipient => 'mg.bounce@example.com',
                 id => "mg-$id", timestamp => time, 'user-variables' => { mailerd_message_id => $id },
                 message => { headers => { 'message-id' => "<$esp_id>" } },
                 'delivery-status' => { code => 550, message => '5.1.1 unknown' } };
    my $n = nevents();
    is(post('/webhooks/mailgun', mg_body($data, ts => time - 600))->{status}, 401, 'Mailgun: stale timestamp -> 401');
    my $bad = mg_body($data);
    # flip the first hex digit to another one (never to itself)
    $bad =~ s/"signature":"([0-9a-f])/'"signature":"' . ($1 eq '0' ? '1' : '0')/e;
    is(post('/webhooks/mailgun', $bad)->{status}, 401, 'Mailgun: bad signature -> 401');
    is(nevents(), $n, 'Mailgun: nothing stored when refused');
    my $body = mg_body($data);
    my $r = post('/webhooks/mailgun', $body);
    is($r->{status}, 200, 'Mailgun: signed permanent failure accepted') or diag($r->{body});
    is(status_of($id), 'bounced', 'Mailgun bounce: bounced');
    like(suppression('mg.bounce@example.com'), qr/^hard_bounce\|/, 'Mailgun hard bounce suppresses');
    $r = post('/webhooks/mailgun', $body);
    is($r->{status}, 401, 'Mailgun: replayed token -> 401');
    is($r->{json} && $r->{json}{error}{code}, 'replayed', 'Mailgun: the replay is named');
}

# --- Postmark ----------------------------------------------------------------------------
my $pm_auth = 'Basic ' . encode_base64('pmuser:pmpass', '');
sub pm_post { my ($o, $auth) = @_; return post('/webhooks/postmark', $json->encode($o), Authorization => $auth // $pm_auth) }
{
    my ($id, $esp_id) = send_to('pm.bounce@example.com');
    my $b = { RecordType => 'Bounce', ID => 1000 + int(rand 1e6), Type => 'HardBounce', TypeCode => 1, MessageID => $esp_id,
              Email => 'pm.bounce@example.com', BouncedAt => '2024-01-01T00:00:00Z', Details => 'smtp;550 5.1.1',
              Metadata => { mailerd_message_id => $id } };
    my $r = pm_post($b, 'Basic ' . encode_base64('pmuser:wrong', ''));
    is($r->{status}, 401, 'Postmark: wrong credentials -> 401');
    is(pm_post($b, '')->{status}, 401, 'Postmark: no credentials -> 401');
    is(status_of($id), 'delivered', 'Postmark: nothing changed when refused');
    $r = pm_post($b);
    is($r->{status}, 200, 'Postmark: bounce accepted') or diag($r->{body});
    is(status_of($id), 'bounced', 'Postmark bounce: bounced');
    like(suppression('pm.bounce@example.com'), qr/^hard_bounce\|/, 'Postmark hard bounce suppresses');

    # matched by the ESP's id alone; the same webhook twice stores one event
    my ($id2, $esp2) = send_to('pm.fallback@example.com');
    my $c = { RecordType => 'SpamComplaint', ID => 2000 + int(rand 1e6), Type => 'SpamComplaint', TypeCode => 512,
              MessageID => $esp2, Email => 'pm.fallback@example.com', BouncedAt => '2024-01-01T00:00:00Z' };
    is(pm_post($c)->{status}, 200, 'Postmark complaint (no Metadata) accepted');
    $r = pm_post($c);
    is($r->{status}, 200, 'the same webhook again: 200');
    is($r->{json} && $r->{json}{duplicates}, 1, 'the second delivery is a duplicate');
    is(sql("SELECT count(*) FROM events WHERE message_id = '$id2' AND provider_event_id IS NOT NULL"), 1,
       'matched by esp_message_id, stored once');
    is(status_of($id2), 'complained', 'complaint: complained');
    like(suppression('pm.fallback@example.com'), qr/^complaint\|/, 'complaint suppresses');

    # unknown messages are acknowledged and counted
    $r = pm_post({ %$b, ID => 3, MessageID => 'nobody', Metadata => { mailerd_message_id => '01234567-89ab-7def-8123-456789abcdef' } });
    is($r->{status}, 200, 'an event for an unknown message: 200');
    is($r->{json} && $r->{json}{unknown}, 1, 'counted as unknown');

    # soft bounces: the third within the window suppresses, with an expiry
    my @soft = map { [ send_to('soft@example.com') ] } 1 .. 3;
    for my $i (0 .. 2) {
        my ($sid, $sesp) = @{ $soft[$i] };
        $r = pm_post({ RecordType => 'Bounce', ID => 5000 + $i + int(rand 1e6), Type => 'SoftBounce', TypeCode => 4096,
                       MessageID => $sesp, Email => 'soft@example.com', BouncedAt => '2024-01-01T00:00:00Z',
                       Metadata => { mailerd_message_id => $sid } });
        is($r->{status}, 200, "soft bounce " . ($i + 1) . " accepted");
        if ($i < 2) {
            is(suppression('soft@example.com'), '', "not suppressed after " . ($i + 1) . " soft bounce(s)");
        }
    }
    like(suppression('soft@example.com'), qr/^soft_bounce\|soft_bounce_rule\|3 soft bounces.*\|f$/, 'the third soft bounce suppresses');
    my $days = sql("SELECT round(extract(epoch FROM expires_at - now()) / 86400) FROM suppressions WHERE address = 'soft\@example.com'");
    is($days, 7, 'for 7 days');
    is(status_of($soft[0][0]), 'delivered', 'a soft bounce does not move the status');
}

# A hard bounce from any provider: the next send to that address is refused as
# suppressed (the domain compared case-insensitively); deleting the suppression
# allows it again.
for my $addr (qw(ses.bounce@EXAMPLE.com sg.bounce@example.com mg.bounce@example.com pm.bounce@example.com)) {
    my $r = $t->json_request($A->{key}, 'POST', '/v1/messages',
                             { from => 'billing@acme.example', to => $addr, subject => 'Again', text => 'Hello' });
    is($r->{status}, 422, "after the hard bounce, a send to $addr is refused");
    is($r->{json} && $r->{json}{error}{code}, 'suppressed', '... as suppressed');
}
{
    my $r = $t->json_request($A->{key}, 'DELETE', '/v1/suppressions/sg.bounce@example.com');
    is($r->{status}, 204, 'DELETE /v1/suppressions/{address}');
    $r = $t->json_request($A->{key}, 'POST', '/v1/messages',
                          { from => 'billing@acme.example', to => 'sg.bounce@example.com', subject => 'Again', text => 'Hello' });
    is($r->{status}, 202, '... and the address can be sent to again');
}

# --- the event reads ---------------------------------------------------------------------
{
    my ($id) = sql("SELECT message_id FROM events WHERE provider_event_id LIKE 'sg-b-%' LIMIT 1");
    my $r = $t->json_request($A->{key}, 'GET', "/v1/messages/$id/events");
    is($r->{status}, 200, 'GET /v1/messages/{id}/events');
    my @types = map { $_->{type} } @{ $r->{json}{data} // [] };
    ok((grep { $_ eq 'bounced' } @types) && (grep { $_ eq 'delivered' } @types), 'lists the provider events') or diag("@types");
    my ($b) = grep { $_->{type} eq 'bounced' } @{ $r->{json}{data} };
    is($b->{data}{provider}, 'sendgrid', 'event data names the provider');
    is($t->json_request($A->{key}, 'GET', '/v1/messages/01234567-89ab-7def-8123-456789abcdef/events')->{status}, 404, 'unknown message: 404');
    is($t->json_request(undef, 'GET', "/v1/messages/$id/events")->{status}, 401, 'events need a key');

    $r = $t->json_request($A->{key}, 'GET', '/v1/events?type=bounced&limit=1');
    is($r->{status}, 200, 'GET /v1/events?type=bounced');
    is(scalar @{ $r->{json}{data} }, 1, 'one per page');
    my %seen = ($r->{json}{data}[0]{id} => 1);
    my $cursor = $r->{json}{next_cursor};
    ok($cursor, 'a next_cursor');
    while ($cursor) {
        $r = $t->json_request($A->{key}, 'GET', "/v1/events?type=bounced&limit=1&cursor=$cursor");
        last unless $r->{status} == 200;
        $seen{ $_->{id} }++ for @{ $r->{json}{data} };
        $cursor = $r->{json}{next_cursor};
    }
    is(scalar keys %seen, sql("SELECT count(*) FROM events WHERE tenant_id = '$A->{id}' AND type = 'bounced'"),
       'paging visits every bounced event once');
    is($t->json_request($A->{key}, 'GET', '/v1/events?type=nope')->{status}, 422, 'unknown type: 422');
    is($t->json_request($A->{key}, 'GET', '/v1/events?since=2020-01-01T00:00:00Z')->{status}, 200, 'since');
}

# --- metrics -----------------------------------------------------------------------------
{
    my $m = $t->request('GET', '/metrics')->{body};
    my ($b) = $m =~ /^mailerd_events_total\{type="bounced"\} (\d+)/m;
    ok(($b // 0) >= 4, 'mailerd_events_total{type="bounced"}') or diag($b);
    my ($hb) = $m =~ /^mailerd_suppressions_added_total\{reason="hard_bounce"\} (\d+)/m;
    ok(($hb // 0) >= 4, 'mailerd_suppressions_added_total{reason="hard_bounce"}');
    my ($mg) = $m =~ /^mailerd_webhook_verification_failures_total\{provider="mailgun"\} (\d+)/m;
    ok(($mg // 0) >= 3, 'verification failures by provider');
    my ($un) = $m =~ /^mailerd_webhook_unknown_messages_total\{provider="postmark"\} (\d+)/m;
    ok(($un // 0) >= 1, 'unknown messages counted');
}

is_deeply([ $t->log_problems ], [], 'no errors or crashes in the log') if $t->can('log_problems');

kill 'TERM', $lpid;
waitpid($lpid, 0);
$t->stop;
done_testing;
