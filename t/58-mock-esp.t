#!/usr/bin/perl
# tools/mock-esp (issue 6, point 6): each of the four APIs accepts a correct
# request over verified TLS and refuses what the real service refuses; SES
# requests are signed by two independent signers (curl's --aws-sigv4 and a
# SigV4 signer written here with Digest::SHA); faults (status, 429 + Retry-After,
# latency, reset, hang, rate, count, permanent rejections) behave; stats, the
# journal and the request log count right; keep-alive connections are counted once.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use MockESP;
use JSON::PP;
use Digest::SHA qw(sha256_hex hmac_sha256 hmac_sha256_hex);
use MIME::Base64 qw(encode_base64);
use POSIX qw(strftime);
use File::Temp qw(tempdir);
use Time::HiRes qw(time sleep);
use IO::Socket::SSL;

my $tmp = tempdir('t58-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $mock = MockESP->new(journal => 1);
my $url = $mock->url;
my $ca = $mock->ca_file;
my %expect = map { $_ => { accepted => 0, rejected => 0, failed => 0 } } qw(ses sendgrid postmark mailgun);
my @journal_expect;

# --- helpers -------------------------------------------------------------------

my $nfile = 0;
# curl over TLS with the test CA: returns (exit code, status, {headers}, body).
sub curl {
    my (%o) = @_;
    my $bf = "$tmp/body" . ++$nfile;
    my $hf = "$tmp/hdr$nfile";
    my @cmd = ('curl', '-sS', '--cacert', $o{cacert} // $ca, '-o', $bf, '-D', $hf,
               '--max-time', $o{max_time} // 10, '-X', $o{method} // 'POST');
    push @cmd, '-H', $_ for @{ $o{headers} // [] };
    if (defined $o{body}) {
        my $in = "$tmp/in$nfile";
        open(my $fh, '>', $in) or die;
        print $fh $o{body};
        close $fh;
        push @cmd, '--data-binary', "\@$in";
    }
    push @cmd, @{ $o{extra} // [] };
    push @cmd, ($o{url} // $url) . $o{path};
    my $pid = open(my $out, '-|') // die;
    if (!$pid) {
        open(STDERR, '>&', \*STDOUT);
        exec(@cmd) or exit 127;
    }
    my $err = do { local $/; <$out> };
    close $out;
    my $rc = $? >> 8;
    my $h = -e $hf ? do { local $/; open(my $f, '<', $hf); <$f> } : '';
    my @blocks = grep { /\S/ } split /\r\n\r\n/, $h;
    my $last = $blocks[-1] // '';
    my ($st) = $last =~ m{^HTTP/\S+ (\d+)};
    my %hd;
    $hd{ lc $1 } = $2 while $last =~ /^([\w-]+):\s*(.*?)\r?$/mg;
    my $b = -e $bf ? do { local $/; open(my $f, '<', $bf); <$f> } : '';
    return ($rc, $st // 0, \%hd, $b // '', $err);
}

sub jdec { my $j = eval { decode_json($_[0]) }; return $j }

# AWS SigV4 (header form) written from the AWS documentation, independent of
# src/esp/md_sigv4.c: returns the header lines to send.
sub sigv4_headers {
    my (%o) = @_;
    my $t = $o{time} // time;
    my $amz = strftime('%Y%m%dT%H%M%SZ', gmtime $t);
    my $day = substr($amz, 0, 8);
    my $region = $o{region} // 'us-east-1';
    my $host = $o{host} // "127.0.0.1:" . $mock->port;
    my %h = ('content-type' => 'application/json', host => $host, 'x-amz-date' => $amz);
    my @names = sort keys %h;
    my $creq = join("\n", 'POST', $o{path} // '/v2/email/outbound-emails', '',
                    join('', map { "$_:$h{$_}\n" } @names),
                    join(';', @names), sha256_hex($o{sign_body} // $o{body}));
    my $scope = "$day/$region/" . ($o{service} // 'ses') . "/aws4_request";
    my $sts = join("\n", 'AWS4-HMAC-SHA256', $amz, $scope, sha256_hex($creq));
    my $k = hmac_sha256($day, 'AWS4' . ($o{secret} // $mock->{ses_secret}));
    $k = hmac_sha256($region, $k);
    $k = hmac_sha256($o{service} // 'ses', $k);
    $k = hmac_sha256('aws4_request', $k);
    my $sig = hmac_sha256_hex($sts, $k);
    my $akid = $o{akid} // $mock->{ses_key_id};
    return ("Content-Type: application/json", "X-Amz-Date: $amz", "Host: $host",
            "Authorization: AWS4-HMAC-SHA256 Credential=$akid/$scope, "
            . "SignedHeaders=" . join(';', @names) . ", Signature=$sig");
}

sub ses_body {
    my (%o) = @_;
    my $b = {
        FromEmailAddress => 'Sender <sender@example.com>',
        Destination      => { ToAddresses => ['rcpt@example.net'] },
        Content          => { Simple => {
            Subject => { Data => 'Hello' },
            Body    => { Text => { Data => 'text' }, Html => { Data => '<p>html</p>' } },
            Headers => [ { Name => 'X-Mailerd-Message-Id', Value => $o{id} // 'ses-id-1' } ],
        } },
        EmailTags            => [ { Name => 'mailerd_message_id', Value => $o{id} // 'ses-id-1' } ],
        ConfigurationSetName => 'default',
    };
    $o{mutate}->($b) if $o{mutate};
    return encode_json($b);
}

sub ses_send {
    my (%o) = @_;
    my $body = $o{body} // ses_body(%o);
    return curl(path => '/v2/email/outbound-emails', body => $o{send_body} // $body,
                headers => [ sigv4_headers(%o, body => $body) ]);
}

sub check_stats {
    my ($what) = @_;
    my $s = $mock->stats;
    for my $p (sort keys %expect) {
        for my $k (qw(accepted rejected failed)) {
            is($s->{$p}{$k}, $expect{$p}{$k}, "$what: $p $k = $expect{$p}{$k}");
        }
    }
}

# A TLS keep-alive client: ($sock) then request($sock, ...) -> (status, {headers}, body) or ().
sub tls_open {
    my (%o) = @_;
    return IO::Socket::SSL->new(PeerAddr => '127.0.0.1', PeerPort => $o{port} // $mock->port,
                                SSL_ca_file => $o{ca} // $ca, SSL_verifycn_name => 'localhost',
                                SSL_hostname => 'localhost', SSL_verifycn_scheme => 'http',
                                SSL_verify_mode => SSL_VERIFY_PEER, Timeout => 5);
}

sub tls_request {
    my ($s, $path, $headers, $body, $timeout) = @_;
    $timeout //= 5;
    my $req = "POST $path HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " . length($body) . "\r\n"
        . join('', map { "$_\r\n" } @$headers) . "\r\n$body";
    print $s $req or return ();
    my $buf = '';
    my $deadline = time + $timeout;
    my $sel = IO::Select->new($s);
    while (time < $deadline) {
        if ($buf =~ /\r\n\r\n/) {
            my ($head, $rest) = split /\r\n\r\n/, $buf, 2;
            my ($len) = $head =~ /^Content-Length:\s*(\d+)/mi;
            if (length($rest) >= ($len // 0)) {
                my ($st) = $head =~ m{^HTTP/1\.1 (\d+)};
                my %hd;
                $hd{ lc $1 } = $2 while $head =~ /^([\w-]+):\s*(.*?)\r?$/mg;
                return ($st, \%hd, substr($rest, 0, $len // 0));
            }
        }
        next unless $s->pending || $sel->can_read(0.1);
        my $n = sysread($s, $buf, 65536, length $buf);
        return () unless $n;
    }
    return ('timeout');
}

my $sg_ok = encode_json({
    personalizations => [ { to => [ { email => 'r@example.net', name => 'R' } ],
                            custom_args => { mailerd_message_id => 'sg-id-1' } } ],
    from    => { email => 'sender@example.com', name => 'S' },
    subject => 'Hi',
    content => [ { type => 'text/plain', value => 'text' }, { type => 'text/html', value => '<p>h</p>' } ],
    headers => { 'X-Mailerd-Message-Id' => 'sg-id-1' },
});
my @sg_auth = ("Authorization: Bearer $mock->{sendgrid_key}", 'Content-Type: application/json');
my @pm_auth = ("X-Postmark-Server-Token: $mock->{postmark_token}", 'Content-Type: application/json',
               'Accept: application/json');
sub pm_body {
    my (%o) = @_;
    my $b = { From => 'sender@example.com', To => 'r@example.net, "Doe, J" <j@example.net>',
              Subject => 'Hi', TextBody => 'text', MessageStream => 'outbound',
              Metadata => { mailerd_message_id => $o{id} // 'pm-id-1' },
              Headers => [ { Name => 'X-Mailerd-Message-Id', Value => $o{id} // 'pm-id-1' } ] };
    $o{mutate}->($b) if $o{mutate};
    return $b;
}
my $mg_path = "/v3/$mock->{mailgun_domain}/messages";
sub mg_send {
    my (%f) = @_;
    my $key = delete $f{_key} // $mock->{mailgun_key};
    my $path = delete $f{_path} // $mg_path;
    my @form = map { ('--form-string', "$_=$f{$_}") } grep { defined $f{$_} } sort keys %f;
    return curl(path => $path, extra => [ '-u', "api:$key", @form ]);
}

# --- SES ------------------------------------------------------------------------

{
    my ($rc, $st, $h, $b) = ses_send(id => 'ses-id-1');
    is($rc, 0, 'SES: curl verified the mock\'s certificate against the test CA');
    is($st, 200, 'SES: a correctly signed SendEmail is accepted');
    like(jdec($b)->{MessageId} // '', qr/^[0-9a-f]{16}-[0-9a-f-]{36}-000000$/, 'SES: MessageId looks like SES\'s');
    $expect{ses}{accepted}++;
    push @journal_expect, 'ses ses-id-1';

    # curl's own SigV4 implementation, a second independent signer.
    my $body = ses_body(id => 'ses-id-curl');
    ($rc, $st, $h, $b) = curl(path => '/v2/email/outbound-emails', body => $body,
                              headers => ['Content-Type: application/json'],
                              extra => [ '--aws-sigv4', 'aws:amz:eu-west-1:ses',
                                         '--user', "$mock->{ses_key_id}:$mock->{ses_secret}" ]);
    is($st, 200, 'SES: a request signed by curl --aws-sigv4 (eu-west-1) is accepted') or diag $b;
    $expect{ses}{accepted}++;
    push @journal_expect, 'ses ses-id-curl';
    my $recs = $mock->requests('ses');
    is($recs->[-1]{region}, 'eu-west-1', 'SES: the region is taken from the credential scope');
    is($recs->[-1]{mailerd_message_id}, 'ses-id-curl', 'SES: our id read from EmailTags');
    is($recs->[-1]{header_message_id}, 'ses-id-curl', 'SES: our id read from Content.Simple.Headers');

    ($rc, $st, $h, $b) = ses_send(secret => 'wrong-secret');
    is($st, 403, 'SES: wrong secret -> 403');
    is(jdec($b)->{__type}, 'SignatureDoesNotMatch', 'SES: ... SignatureDoesNotMatch');
    is($h->{'x-amzn-errortype'}, 'SignatureDoesNotMatch', 'SES: ... and x-amzn-ErrorType');
    $expect{ses}{rejected}++;

    ($rc, $st, $h, $b) = ses_send(time => time - 600);
    is($st, 403, 'SES: a date 10 minutes old -> 403');
    is(jdec($b)->{__type}, 'InvalidSignatureException', 'SES: ... InvalidSignatureException');
    like(jdec($b)->{message}, qr/^Signature expired/, 'SES: ... "Signature expired"');
    $expect{ses}{rejected}++;

    ($rc, $st, $h, $b) = ses_send(time => time + 600);
    is($st, 403, 'SES: a date 10 minutes ahead -> 403 too');
    $expect{ses}{rejected}++;
    ($rc, $st, $h, $b) = ses_send(time => time - 240);
    is($st, 200, 'SES: 4 minutes of skew is within the limit');
    $expect{ses}{accepted}++;
    push @journal_expect, 'ses ses-id-1';

    ($rc, $st, $h, $b) = ses_send(akid => 'AKIDUNKNOWN');
    is(jdec($b)->{__type}, 'UnrecognizedClientException', 'SES: unknown access key id -> UnrecognizedClientException');
    $expect{ses}{rejected}++;
    ($rc, $st, $h, $b) = ses_send(service => 'email');
    is($st, 403, 'SES: a scope for another service -> 403');
    $expect{ses}{rejected}++;
    ($rc, $st, $h, $b) = ses_send(send_body => ses_body(id => 'tampered'));
    is(jdec($b)->{__type}, 'SignatureDoesNotMatch', 'SES: a body changed after signing -> SignatureDoesNotMatch');
    $expect{ses}{rejected}++;
    ($rc, $st, $h, $b) = curl(path => '/v2/email/outbound-emails', body => ses_body(),
                              headers => ['Content-Type: application/json']);
    is($st, 403, 'SES: no Authorization -> 403');
    is(jdec($b)->{__type}, 'MissingAuthenticationTokenException', 'SES: ... MissingAuthenticationTokenException');
    $expect{ses}{rejected}++;

    for my $case (
        [ 'no Destination', sub { delete $_[0]{Destination} } ],
        [ 'empty ToAddresses', sub { $_[0]{Destination}{ToAddresses} = [] } ],
        [ 'no FromEmailAddress', sub { delete $_[0]{FromEmailAddress} } ],
        [ 'no Subject', sub { delete $_[0]{Content}{Simple}{Subject} } ],
        [ 'no Body', sub { delete $_[0]{Content}{Simple}{Body} } ],
        [ 'no Content', sub { delete $_[0]{Content} } ],
        [ 'a bad address', sub { $_[0]{Destination}{ToAddresses} = ['not-an-address'] } ],
        [ '51 recipients', sub { $_[0]{Destination}{ToAddresses} = [ map { "r$_\@example.net" } 1 .. 51 ] } ],
        [ 'a tag value with a dot', sub { $_[0]{EmailTags}[0]{Value} = 'a.b' } ],
    ) {
        ($rc, $st, $h, $b) = ses_send(mutate => $case->[1]);
        is($st, 400, "SES: $case->[0] -> 400");
        is(jdec($b)->{__type}, 'BadRequestException', "SES: $case->[0] -> BadRequestException");
        $expect{ses}{rejected}++;
    }
    my $raw = "From: sender\@example.com\r\nTo: r\@example.net\r\nSubject: raw\r\n"
        . "X-Mailerd-Message-Id: ses-raw-1\r\n\r\nbody\r\n";
    ($rc, $st, $h, $b) = ses_send(body => encode_json({
        Content => { Raw => { Data => encode_base64($raw, '') } },
        EmailTags => [ { Name => 'mailerd_message_id', Value => 'ses-raw-1' } ] }));
    is($st, 200, 'SES: Content.Raw without FromEmailAddress or Destination is accepted');
    $expect{ses}{accepted}++;
    push @journal_expect, 'ses ses-raw-1';
    is($mock->requests('ses')->[-1]{header_message_id}, 'ses-raw-1', 'SES: our header found in the raw message');
}

# --- SendGrid -------------------------------------------------------------------

{
    my ($rc, $st, $h, $b) = curl(path => '/v3/mail/send', body => $sg_ok, headers => \@sg_auth);
    is($st, 202, 'SendGrid: a correct send -> 202');
    is($b, '', 'SendGrid: ... with an empty body');
    like($h->{'x-message-id'} // '', qr/^[A-Za-z0-9_-]{22}$/, 'SendGrid: ... and an X-Message-Id');
    $expect{sendgrid}{accepted}++;
    push @journal_expect, 'sendgrid sg-id-1';
    my $r = $mock->requests('sendgrid')->[-1];
    is($r->{mailerd_message_id}, 'sg-id-1', 'SendGrid: our id read from custom_args');
    is($r->{header_message_id}, 'sg-id-1', 'SendGrid: our id read from headers');
    is($r->{provider_message_id}, $h->{'x-message-id'}, 'SendGrid: the record keeps the provider id');

    ($rc, $st, $h, $b) = curl(path => '/v3/mail/send', body => $sg_ok,
                              headers => [ 'Authorization: Bearer SG.wrong', 'Content-Type: application/json' ]);
    is($st, 401, 'SendGrid: a wrong key -> 401');
    like(jdec($b)->{errors}[0]{message} // '', qr/authorization grant is invalid/, 'SendGrid: ... with errors[].message');
    $expect{sendgrid}{rejected}++;
    ($rc, $st, $h, $b) = curl(path => '/v3/mail/send', body => $sg_ok, headers => ['Content-Type: application/json']);
    is($st, 401, 'SendGrid: no Authorization -> 401');
    $expect{sendgrid}{rejected}++;
    ($rc, $st, $h, $b) = curl(path => '/v3/mail/send', body => $sg_ok,
                              headers => [ $sg_auth[0], 'Content-Type: text/plain' ]);
    is($st, 400, 'SendGrid: a non-JSON Content-Type -> 400');
    $expect{sendgrid}{rejected}++;
    for my $case (
        [ 'no from', sub { delete $_[0]{from} }, 'from' ],
        [ 'no personalizations', sub { delete $_[0]{personalizations} }, 'personalizations' ],
        [ 'a personalization without to', sub { delete $_[0]{personalizations}[0]{to} }, 'personalizations.to' ],
        [ 'no subject', sub { delete $_[0]{subject} }, 'subject' ],
        [ 'no content', sub { delete $_[0]{content} }, 'content' ],
        [ 'an empty content value', sub { $_[0]{content}[0]{value} = '' }, 'content.value' ],
        [ 'text/plain not first', sub { $_[0]{content} = [ reverse @{ $_[0]{content} } ] }, 'content' ],
        [ 'a non-string custom arg', sub { $_[0]{personalizations}[0]{custom_args}{n} = 5 }, 'personalizations.custom_args' ],
    ) {
        my $j = decode_json($sg_ok);
        $case->[1]->($j);
        ($rc, $st, $h, $b) = curl(path => '/v3/mail/send', body => encode_json($j), headers => \@sg_auth);
        is($st, 400, "SendGrid: $case->[0] -> 400");
        is(jdec($b)->{errors}[0]{field}, $case->[2], "SendGrid: $case->[0] -> field $case->[2]");
        $expect{sendgrid}{rejected}++;
    }
    my $j = decode_json($sg_ok);
    delete $j->{content};
    delete $j->{subject};
    $j->{template_id} = 'd-0123456789abcdef';
    $j->{personalizations}[0]{custom_args}{mailerd_message_id} = 'sg-tmpl';
    ($rc, $st) = curl(path => '/v3/mail/send', body => encode_json($j), headers => \@sg_auth);
    is($st, 202, 'SendGrid: template_id stands in for content and subject');
    $expect{sendgrid}{accepted}++;
    push @journal_expect, 'sendgrid sg-tmpl';
}

# --- Postmark -------------------------------------------------------------------

{
    my ($rc, $st, $h, $b) = curl(path => '/email', body => encode_json(pm_body()), headers => \@pm_auth);
    is($st, 200, 'Postmark: a correct send -> 200');
    my $r = jdec($b);
    is($r->{ErrorCode}, 0, 'Postmark: ... ErrorCode 0');
    is($r->{Message}, 'OK', 'Postmark: ... Message OK');
    like($r->{MessageID} // '', qr/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, 'Postmark: ... a UUID MessageID');
    like($r->{SubmittedAt} // '', qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$/, 'Postmark: ... SubmittedAt');
    is($r->{To}, 'r@example.net, "Doe, J" <j@example.net>', 'Postmark: ... To echoed');
    $expect{postmark}{accepted}++;
    push @journal_expect, 'postmark pm-id-1';
    is($mock->requests('postmark')->[-1]{mailerd_message_id}, 'pm-id-1', 'Postmark: our id read from Metadata');

    ($rc, $st, $h, $b) = curl(path => '/email', body => encode_json(pm_body()),
                              headers => [ 'X-Postmark-Server-Token: wrong', 'Content-Type: application/json' ]);
    is($st, 401, 'Postmark: a wrong token -> 401');
    is(jdec($b)->{ErrorCode}, 10, 'Postmark: ... ErrorCode 10');
    $expect{postmark}{rejected}++;
    ($rc, $st, $h, $b) = curl(path => '/email', body => encode_json(pm_body()), headers => ['Content-Type: application/json']);
    is(jdec($b)->{ErrorCode}, 10, 'Postmark: no token -> ErrorCode 10');
    $expect{postmark}{rejected}++;
    for my $case (
        [ 'no From', sub { delete $_[0]{From} }, 300 ],
        [ 'no To', sub { delete $_[0]{To} }, 300 ],
        [ 'no TextBody or HtmlBody', sub { delete $_[0]{TextBody} }, 300 ],
        [ 'a bad To', sub { $_[0]{To} = 'nobody' }, 300 ],
        [ 'an unknown MessageStream', sub { $_[0]{MessageStream} = 'nope' }, 1235 ],
    ) {
        ($rc, $st, $h, $b) = curl(path => '/email', body => encode_json(pm_body(mutate => $case->[1])),
                                  headers => \@pm_auth);
        is($st, 422, "Postmark: $case->[0] -> 422");
        is(jdec($b)->{ErrorCode}, $case->[2], "Postmark: $case->[0] -> ErrorCode $case->[2]");
        $expect{postmark}{rejected}++;
    }
    my $batch = [ pm_body(id => 'pm-b1'), pm_body(id => 'pm-b2', mutate => sub { delete $_[0]{TextBody} }),
                  pm_body(id => 'pm-b3') ];
    ($rc, $st, $h, $b) = curl(path => '/email/batch', body => encode_json($batch), headers => \@pm_auth);
    is($st, 200, 'Postmark batch: 200 even with a failing message');
    my $res = jdec($b) // [];
    is_deeply([ map { $_->{ErrorCode} } @$res ], [ 0, 300, 0 ], 'Postmark batch: one result per message, in order');
    $expect{postmark}{accepted} += 2;
    $expect{postmark}{rejected}++;
    push @journal_expect, 'postmark pm-b1', 'postmark pm-b3';

    # The outbound message search finds a message by our Metadata id (what
    # mailerd asks after an interrupted attempt), batch messages included.
    my $search = sub {
        my ($q, @hd) = @_;
        my ($rc2, $st2, $h2, $b2) = curl(method => 'GET', path => "/messages/outbound?$q",
                                          headers => @hd ? \@hd : [ $pm_auth[0], 'Accept: application/json' ]);
        return ($st2, jdec($b2));
    };
    my ($st2, $j2) = $search->('count=1&offset=0&metadata_mailerd_message_id=pm-id-1');
    is($st2, 200, 'Postmark search: 200');
    is($j2->{TotalCount}, 1, 'Postmark search: one message with that Metadata');
    is($j2->{Messages}[0]{MessageID}, $r->{MessageID}, "Postmark search: ... the send's MessageID");
    is($j2->{Messages}[0]{Metadata}{mailerd_message_id}, 'pm-id-1', 'Postmark search: ... with its Metadata');
    ($st2, $j2) = $search->('count=10&offset=0&metadata_mailerd_message_id=pm-b3&messagestream=outbound');
    is($j2->{TotalCount}, 1, 'Postmark search: a batch message is found too');
    is($j2->{Messages}[0]{MessageID}, $res->[2]{MessageID}, "Postmark search: ... with its batch result's MessageID");
    ($st2, $j2) = $search->('count=1&offset=0&metadata_mailerd_message_id=pm-b2');
    is_deeply([ $st2, $j2->{TotalCount}, scalar @{ $j2->{Messages} // [1] } ], [ 200, 0, 0 ],
              'Postmark search: a refused message is not found');
    ($st2, $j2) = $search->('count=1&offset=0&metadata_mailerd_message_id=pm-id-1&messagestream=broadcast');
    is($j2->{TotalCount}, 0, 'Postmark search: another stream holds none of them');
    ($st2, $j2) = $search->('count=500&offset=0');
    is($j2->{TotalCount}, 3, 'Postmark search: without a filter, every message taken');
    is_deeply([ map { $_->{Metadata}{mailerd_message_id} } @{ $j2->{Messages} } ], [ 'pm-b3', 'pm-b1', 'pm-id-1' ],
              'Postmark search: newest first');
    ($st2, $j2) = $search->('count=1&offset=1');
    is($j2->{Messages}[0]{Metadata}{mailerd_message_id}, 'pm-b1', 'Postmark search: offset pages');
    ($st2, $j2) = $search->('offset=0&metadata_mailerd_message_id=pm-id-1');
    is($st2, 422, 'Postmark search: no count -> 422');
    ($st2, $j2) = $search->('count=501&offset=0');
    is($st2, 422, 'Postmark search: count over 500 -> 422');
    ($st2, $j2) = $search->('count=1&offset=0', 'X-Postmark-Server-Token: wrong');
    is_deeply([ $st2, $j2->{ErrorCode} ], [ 401, 10 ], 'Postmark search: a wrong token -> 401, ErrorCode 10');
    is($mock->provider_stats('postmark')->{searches}, 9, 'Postmark search: counted in "searches"');
    $expect{postmark}{rejected} += 3;
}

# --- Mailgun --------------------------------------------------------------------

{
    my %ok = (from => 'Sender <sender@example.com>', to => 'r@example.net', subject => 'Hi',
              text => 'text', 'v:mailerd_message_id' => 'mg-id-1', 'h:X-Mailerd-Message-Id' => 'mg-id-1');
    my ($rc, $st, $h, $b) = mg_send(%ok);
    is($st, 200, 'Mailgun: a correct multipart send -> 200');
    my $r = jdec($b);
    like($r->{id} // '', qr/^<[^<>]+\@\Q$mock->{mailgun_domain}\E>$/, 'Mailgun: ... an id <...@domain>');
    is($r->{message}, 'Queued. Thank you.', 'Mailgun: ... "Queued. Thank you."');
    $expect{mailgun}{accepted}++;
    push @journal_expect, 'mailgun mg-id-1';
    my $rec = $mock->requests('mailgun')->[-1];
    is($rec->{mailerd_message_id}, 'mg-id-1', 'Mailgun: our id read from v:mailerd_message_id');
    is($rec->{header_message_id}, 'mg-id-1', 'Mailgun: our id read from h:X-Mailerd-Message-Id');

    ($rc, $st, $h, $b) = mg_send(%ok, _key => 'key-wrong');
    is($st, 401, 'Mailgun: a wrong key -> 401');
    is($b, 'Forbidden', 'Mailgun: ... "Forbidden"');
    $expect{mailgun}{rejected}++;
    ($rc, $st, $h, $b) = mg_send(%ok, _path => '/v3/unknown.example.org/messages');
    is($st, 404, 'Mailgun: an unknown domain -> 404');
    $expect{mailgun}{rejected}++;
    for my $case ([ 'from', 'from parameter is missing' ], [ 'to', 'to parameter is missing' ],
                  [ 'subject', 'subject parameter is missing' ], [ 'text', "Need at least one of 'text', 'html'" ]) {
        my %f = %ok;
        delete $f{ $case->[0] };
        ($rc, $st, $h, $b) = mg_send(%f);
        is($st, 400, "Mailgun: without $case->[0] -> 400");
        like(jdec($b)->{message} // '', qr/\Q$case->[1]\E/, "Mailgun: without $case->[0] -> message");
        $expect{mailgun}{rejected}++;
    }
    ($rc, $st, $h, $b) = mg_send(%ok, to => 'not an address');
    is($st, 400, 'Mailgun: a bad to -> 400');
    $expect{mailgun}{rejected}++;
    ($rc, $st, $h, $b) = mg_send(%ok, text => undef, html => '<p>x</p>', 'v:mailerd_message_id' => 'mg-id-2');
    is($st, 200, 'Mailgun: html alone is enough');
    $expect{mailgun}{accepted}++;
    push @journal_expect, 'mailgun mg-id-2';
    ($rc, $st) = curl(path => $mg_path, extra => [ '-u', "api:$mock->{mailgun_key}",
        '--data-urlencode', 'from=sender@example.com', '--data-urlencode', 'to=r@example.net',
        '--data-urlencode', 'subject=s', '--data-urlencode', 'text=t',
        '--data-urlencode', 'v:mailerd_message_id=mg-id-3' ]);
    is($st, 200, 'Mailgun: x-www-form-urlencoded also accepted');
    $expect{mailgun}{accepted}++;
    push @journal_expect, 'mailgun mg-id-3';
}

check_stats('after the API checks');
is_deeply([ map { "@$_" } $mock->journal_lines ], \@journal_expect,
          'journal: one line per accepted message, provider and our id');

# --- faults -----------------------------------------------------------------------

{
    my ($s, $j) = $mock->ctl('POST', '/_mock/faults', { provider => 'sendgrid', status => 'x' });
    is($s, 400, 'faults: a malformed fault is refused');
    ($s, $j) = $mock->ctl('POST', '/_mock/faults', { provider => 'nope', status => 500 });
    is($s, 400, 'faults: an unknown provider is refused');

    $mock->faults(provider => 'sendgrid', status => 500, rate => 1.0);
    my ($rc, $st, $h, $b) = curl(path => '/v3/mail/send', body => $sg_ok, headers => \@sg_auth);
    is($st, 500, 'fault 500: SendGrid answers 500');
    ok(jdec($b)->{errors}, 'fault 500: ... in SendGrid\'s error shape');
    $expect{sendgrid}{failed}++;
    ($rc, $st) = curl(path => '/email', body => encode_json(pm_body(id => 'pm-f1')), headers => \@pm_auth);
    is($st, 200, 'fault 500: other providers are untouched');
    $expect{postmark}{accepted}++;
    push @journal_expect, 'postmark pm-f1';

    $mock->faults(provider => 'postmark', status => 429, retry_after => 7);
    ($rc, $st, $h, $b) = curl(path => '/email', body => encode_json(pm_body()), headers => \@pm_auth);
    is($st, 429, 'fault 429: Postmark answers 429');
    is($h->{'retry-after'}, 7, 'fault 429: ... with Retry-After: 7');
    $expect{postmark}{failed}++;
    $mock->faults(provider => 'ses', status => 429);
    ($rc, $st, $h, $b) = ses_send();
    is(jdec($b)->{__type}, 'TooManyRequestsException', 'fault 429: SES says TooManyRequestsException');
    ok(!exists $h->{'retry-after'}, 'fault 429: ... without Retry-After unless asked, like SES');
    $expect{ses}{failed}++;

    $mock->faults(provider => 'mailgun', latency_ms => 400);
    my $t0 = time;
    ($rc, $st) = mg_send(from => 'sender@example.com', to => 'r@example.net', subject => 's', text => 't',
                         'v:mailerd_message_id' => 'mg-lat');
    my $el = time - $t0;
    is($st, 200, 'fault latency: the answer still comes');
    ok($el >= 0.4 && $el < 3, "fault latency: ... after 400 ms (took ${\ sprintf '%.3f', $el} s)");
    $expect{mailgun}{accepted}++;
    push @journal_expect, 'mailgun mg-lat';

    $mock->faults(provider => 'ses', reset => JSON::PP::true);
    ($rc, $st) = ses_send();
    ok($rc == 35 || $rc == 56 || $rc == 52, "fault reset: curl sees the connection reset (exit $rc)");
    is($st, 0, 'fault reset: ... and no answer');
    $expect{ses}{failed}++;

    $mock->faults(provider => 'sendgrid', hang => JSON::PP::true);
    $t0 = time;
    ($rc, $st) = curl(path => '/v3/mail/send', body => $sg_ok, headers => \@sg_auth, max_time => 1);
    is($rc, 28, 'fault hang: curl times out');
    $expect{sendgrid}{failed}++;
    ok(MockESP::wait_until(sub { ($mock->stats->{tls}{open} // 9) == 0 }, 5),
       'fault hang: the hung connection is freed when the client goes away');

    $mock->faults(provider => '*', status => 503, rate => 0.5);
    my %got;
    for my $i (1 .. 10) {
        ($rc, $st) = curl(path => '/email', body => encode_json(pm_body(id => "pm-r$i")), headers => \@pm_auth);
        $got{$st}++;
        push @journal_expect, "postmark pm-r$i" if $st == 200;
    }
    is($got{503}, 5, 'fault rate 0.5: 5 of 10 requests fail');
    is($got{200}, 5, 'fault rate 0.5: ... and 5 go through');
    $expect{postmark}{failed} += 5;
    $expect{postmark}{accepted} += 5;

    $mock->faults(provider => 'mailgun', status => 500, count => 2);
    my @st;
    for my $i (1 .. 3) {
        (undef, $st) = mg_send(from => 'sender@example.com', to => 'r@example.net', subject => 's',
                               text => 't', 'v:mailerd_message_id' => "mg-c$i");
        push @st, $st;
    }
    is_deeply(\@st, [ 500, 500, 200 ], 'fault count 2: two failures, then recovery');
    $expect{mailgun}{failed} += 2;
    $expect{mailgun}{accepted}++;
    push @journal_expect, 'mailgun mg-c3';

    $mock->faults(provider => 'postmark', reject_rate => 1.0);
    ($rc, $st, $h, $b) = curl(path => '/email', body => encode_json(pm_body()), headers => \@pm_auth);
    is($st, 422, 'fault reject_rate: a permanent rejection');
    is(jdec($b)->{ErrorCode}, 406, 'fault reject_rate: ... ErrorCode 406 (inactive recipient)');
    $expect{postmark}{rejected}++;
    $mock->faults(provider => 'ses', reject_rate => 1.0);
    ($rc, $st, $h, $b) = ses_send();
    is(jdec($b)->{__type}, 'MessageRejected', 'fault reject_rate: SES says MessageRejected');
    $expect{ses}{rejected}++;

    is($mock->clear_faults, 200, 'faults: DELETE clears them');
    ($rc, $st) = ses_send(id => 'ses-after');
    is($st, 200, 'faults: after DELETE, SES accepts again');
    $expect{ses}{accepted}++;
    push @journal_expect, 'ses ses-after';
    ($rc, $st) = curl(path => '/v3/mail/send', body => $sg_ok, headers => \@sg_auth);
    is($st, 202, 'faults: ... and SendGrid');
    $expect{sendgrid}{accepted}++;
    push @journal_expect, 'sendgrid sg-id-1';
}

check_stats('after the faults');
is_deeply([ map { "@$_" } $mock->journal_lines ], \@journal_expect, 'journal: still exact after the faults');

# --- keep-alive and connection counting --------------------------------------------

{
    my $before = $mock->stats;
    my $s = tls_open();
    ok($s, 'keep-alive: a verified TLS connection (IO::Socket::SSL, name localhost)') or diag $SSL_ERROR;
    my @sts;
    for my $i (1 .. 5) {
        my ($st) = tls_request($s, '/v3/mail/send', \@sg_auth, $sg_ok);
        push @sts, $st // 'none';
        push @journal_expect, 'sendgrid sg-id-1';
    }
    for my $i (1 .. 3) {
        my ($st) = tls_request($s, '/email', \@pm_auth, encode_json(pm_body(id => "pm-k$i")));
        push @sts, $st // 'none';
        push @journal_expect, "postmark pm-k$i";
    }
    is_deeply(\@sts, [ (202) x 5, (200) x 3 ], 'keep-alive: 8 requests on one connection');
    close $s;
    $expect{sendgrid}{accepted} += 5;
    $expect{postmark}{accepted} += 3;
    my $after = $mock->stats;
    is($after->{tls}{accepted} - $before->{tls}{accepted}, 1, 'keep-alive: one TLS connection accepted');
    is($after->{sendgrid}{connections} - $before->{sendgrid}{connections}, 1, 'keep-alive: sendgrid connections +1');
    is($after->{postmark}{connections} - $before->{postmark}{connections}, 1, 'keep-alive: postmark connections +1');
    is($after->{sendgrid}{requests} - $before->{sendgrid}{requests}, 5, 'keep-alive: sendgrid requests +5');

    # The "close" fault drops the connection right after an answer, without a
    # Connection: close header (a pooled connection closed by the peer).
    $mock->faults(provider => 'sendgrid', close => JSON::PP::true);
    $s = tls_open();
    my ($st, $h) = tls_request($s, '/v3/mail/send', \@sg_auth, $sg_ok);
    is($st, 202, 'fault close: the answer arrives');
    ok(!defined $h->{connection}, 'fault close: ... without Connection: close');
    my @r2 = tls_request($s, '/v3/mail/send', \@sg_auth, $sg_ok, 2);
    ok(!@r2, 'fault close: ... and the connection is closed after it');
    close $s;
    $mock->clear_faults;
    $expect{sendgrid}{accepted}++;
    push @journal_expect, 'sendgrid sg-id-1';
}

# --- TLS: wrong host and unknown CA -------------------------------------------------

{
    my $bad = MockESP->new(cert => 'wrong_host', cert_dir => $mock->dir);
    my ($rc, $st) = curl(url => $bad->url, path => '/v3/mail/send', body => $sg_ok, headers => \@sg_auth,
                         cacert => $bad->ca_file);
    is($rc, 60, 'TLS: a certificate for another host fails verification in curl (exit 60)');
    is($bad->stats->{sendgrid}{requests}, 0, 'TLS: ... and nothing reached the mock');
    $bad->stop;
    my $unk = MockESP->new(cert => 'unknown_ca', cert_dir => $mock->dir);
    ($rc, $st) = curl(url => $unk->url, path => '/v3/mail/send', body => $sg_ok, headers => \@sg_auth);
    is($rc, 60, 'TLS: a certificate from an unknown CA fails verification (exit 60)');
    ok(MockESP::wait_until(sub { $unk->stats->{tls}{handshake_failed} >= 1 }, 5),
       'TLS: ... the mock counts the failed handshake');
    ($rc, $st) = curl(url => $unk->url, path => '/v3/mail/send', body => $sg_ok, headers => \@sg_auth,
                      cacert => $unk->other_ca_file);
    is($st, 202, 'TLS: ... and works with that CA (the unknown_ca mock is otherwise sound)');
    is($unk->stop, 0, 'TLS: second mock stops cleanly');
    unlike($unk->stderr_log, qr/AddressSanitizer|runtime error|LeakSanitizer/, 'TLS: ... without sanitizer reports');
}

# --- request log -----------------------------------------------------------------------

{
    my $recs = $mock->requests('postmark', 3);
    is(scalar @$recs, 3, 'requests: limit honoured');
    is($recs->[-1]{mailerd_message_id}, 'pm-k3', 'requests: newest last');
    is($recs->[-1]{sni}, 'localhost', 'requests: SNI recorded');
    my ($s) = $mock->ctl('GET', '/_mock/nope');
    is($s, 404, 'control: unknown endpoint -> 404');
}

# A connection left open at SIGTERM is closed cleanly (no leak report).
my $left_open = tls_open();
tls_request($left_open, '/v3/mail/send', \@sg_auth, $sg_ok);
$expect{sendgrid}{accepted}++;
push @journal_expect, 'sendgrid sg-id-1';

check_stats('at the end');
is_deeply([ map { "@$_" } $mock->journal_lines ], \@journal_expect, 'journal: exact at the end');
is($mock->stop, 0, 'mock-esp exits 0 on SIGTERM');
unlike($mock->stderr_log, qr/AddressSanitizer|runtime error|LeakSanitizer/, 'no sanitizer reports');
done_testing;
