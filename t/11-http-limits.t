#!/usr/bin/perl
# HTTP limits: header and body sizes (431, 414, 413), header and body timeouts
# (408), keep-alive timeout and request cap, send_timeout for a client that does
# not read, and the worker_connections cap (503 too_many_connections).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Select;
use IO::Socket::INET;
use Socket qw(SOL_SOCKET SO_RCVBUF);
use Time::HiRes qw(time sleep);
use MailerdTest qw(wait_for parse_response);

$SIG{PIPE} = 'IGNORE';

# Writes all of $data; false when the server already closed.
sub send_raw {
    my ($s, $data) = @_;
    while (length $data) {
        my $n = syswrite($s, $data);
        return 0 unless defined $n;
        substr($data, 0, $n, '');
    }
    return 1;
}

sub responses { MailerdTest::read_responses(@_) }

# Seconds until the peer closes (EOF or reset), discarding data; undef on timeout.
sub closed_after {
    my ($s, $timeout) = @_;
    my $sel = IO::Select->new($s);
    my $t0 = time;
    my $deadline = $t0 + $timeout;
    while (time < $deadline) {
        next unless $sel->can_read($deadline - time);
        my $n = sysread($s, my $buf, 65536);
        return time - $t0 if !defined $n || $n == 0;
    }
    return undef;
}

sub error_is {
    my ($r, $status, $code, $what) = @_;
    is($r && $r->{status}, $status, "$what: status $status");
    is($r && $r->{json} && $r->{json}{error}{code}, $code, "$what: code $code");
    like($r && $r->{headers}{'content-type'}, qr{^application/json}, "$what: JSON body");
    is($r && $r->{headers}{connection}, 'close', "$what: Connection: close");
}

my $t;
sub sock {
    my ($tt) = @_;
    my $s = ($tt // $t)->connect or die "connect: $!";
    binmode $s;
    return $s;
}

# Size and time limits, against two workers and against one.
for my $workers (2, 1) {
  subtest "limits with worker_processes $workers" => sub {
    limits_suite($workers);
    done_testing();
  };
}

sub limits_suite {
    my ($workers) = @_;
    $t = MailerdTest->new;
    $t->start(main => { worker_processes => $workers }, http => {
        debug_endpoints        => 'on',
        client_max_header_size => '1k',
        client_max_body_size   => '1k',
        client_header_timeout  => '1s',
        client_body_timeout    => '1s',
        keepalive_timeout      => '1s',
        keepalive_requests     => 3,
    });

# --- header size -------------------------------------------------------------------
{
    my $s = sock();
    send_raw($s, "GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " . ('a' x 1100) . "\r\n\r\n");
    my ($r) = responses($s, 1, 5);
    error_is($r, 431, 'headers_too_large', 'one header over client_max_header_size');
    ok(defined closed_after($s, 5), '431 closes the connection');

    $s = sock();
    send_raw($s, "GET /health HTTP/1.1\r\n" . ("A:1\r\n" x 101) . "\r\n");
    ($r) = responses($s, 1, 5);
    error_is($r, 431, 'headers_too_large', 'more than 100 header fields');

    $s = sock();
    send_raw($s, "GET /health HTTP/1.1\r\n" . ("A:1\r\n" x 99) . "\r\n");
    ($r) = responses($s, 1, 5);
    is($r && $r->{status}, 200, '99 header fields (plus none) are fine');

    $s = sock();
    send_raw($s, "GET /" . ('a' x 1100) . " HTTP/1.1\r\nHost: t\r\n\r\n");
    ($r) = responses($s, 1, 5);
    error_is($r, 414, 'uri_too_long', 'request line over the limit');
    ok(defined closed_after($s, 5), '414 closes the connection');

    $s = sock();
    send_raw($s, "GET /" . ('a' x 900) . " HTTP/1.1\r\nHost: t\r\nX-Fill: " . ('b' x 200) . "\r\n\r\n");
    ($r) = responses($s, 1, 5);
    error_is($r, 431, 'headers_too_large', 'long line plus headers over the limit');

    # Sent in pieces: the limit holds across reads.
    $s = sock();
    send_raw($s, "GET /health HTTP/1.1\r\nHost: t\r\n");
    for (1 .. 12) {
        send_raw($s, "X-Piece: " . ('c' x 90) . "\r\n");
        sleep 0.01;
    }
    ($r) = responses($s, 1, 5);
    is($r && $r->{status}, 431, 'header limit holds for headers sent in pieces');
}

# --- body size -------------------------------------------------------------------------
{
    my $s = sock();
    send_raw($s, "POST /debug/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n");
    my ($r) = responses($s, 1, 5);
    error_is($r, 413, 'payload_too_large', 'Content-Length over the limit, before any body byte');
    ok(defined closed_after($s, 5), '413 closes the connection');

    $s = sock();
    send_raw($s, "POST /debug/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    send_raw($s, sprintf("%x\r\n%s\r\n", 600, 'd' x 600));
    send_raw($s, sprintf("%x\r\n%s\r\n", 600, 'e' x 600));
    ($r) = responses($s, 1, 5);
    error_is($r, 413, 'payload_too_large', 'chunked body over the limit');

    my $body = 'f' x 1024;
    $r = $t->request('POST', '/debug/echo', body => $body);
    is($r->{status}, 200, 'a body of exactly client_max_body_size is accepted');
    is($r->{json}{body_length}, 1024, 'and read whole');
}

# --- timeouts ----------------------------------------------------------------------------
{
    my $s = sock();
    my $t0 = time;
    send_raw($s, "GET /health HTTP/1.1\r\nHost: t\r\n");
    my ($r) = responses($s, 1, 6);
    my $el = time - $t0;
    error_is($r, 408, 'request_timeout', 'headers not finished in client_header_timeout');
    ok($el > 0.8 && $el < 4, sprintf('408 after about a second (%.2fs)', $el));
    ok(defined closed_after($s, 5), '408 closes the connection');

    # client_header_timeout counts from the first byte: trickling does not extend it.
    $s = sock();
    $t0 = time;
    send_raw($s, "GET /health HTTP/1.1\r\n");
    my $sel = IO::Select->new($s);
    for (1 .. 10) {
        last if $sel->can_read(0.3);
        send_raw($s, "X-Slow-$_: 1\r\n");
    }
    ($r) = responses($s, 1, 5);
    $el = time - $t0;
    is($r && $r->{status}, 408, 'trickled headers still time out');
    ok($el < 2.5, sprintf('measured from the first byte (%.2fs)', $el));

    $s = sock();
    send_raw($s, "POST /debug/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc");
    $t0 = time;
    ($r) = responses($s, 1, 6);
    $el = time - $t0;
    error_is($r, 408, 'request_timeout', 'body stalled past client_body_timeout');
    ok($el > 0.8 && $el < 4, sprintf('body 408 after about a second (%.2fs)', $el));

    # client_body_timeout is inactivity: a slow but steady body completes.
    $s = sock();
    send_raw($s, "POST /debug/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n");
    for my $ch (split //, 'slow!') {
        sleep 0.5;
        send_raw($s, $ch);
    }
    ($r) = responses($s, 1, 5);
    is($r && $r->{status}, 200, 'a body trickled over 2.5s with 0.5s gaps is accepted');
    is($r && $r->{json}{body}, 'slow!', 'and complete');

    # keepalive_timeout: an idle connection is closed silently.
    $s = sock();
    send_raw($s, "GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
    ($r) = responses($s, 1, 5);
    is($r && $r->{headers}{connection}, 'keep-alive', 'keep-alive response');
    my $raw = '';
    $t0 = time;
    $sel = IO::Select->new($s);
    my $eof;
    while (time - $t0 < 5 && $sel->can_read(5)) {
        my $n = sysread($s, $raw, 4096, length $raw);
        if (!$n) { $eof = 1; last }
    }
    $el = time - $t0;
    ok($eof, 'idle keep-alive connection is closed');
    is($raw, '', 'silently (no response)');
    ok($el > 0.7 && $el < 4, sprintf('after keepalive_timeout (%.2fs)', $el));
}

# --- keepalive_requests ----------------------------------------------------------------------
{
    my $s = sock();
    my @c;
    for (1 .. 3) {
        send_raw($s, "GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
        my ($r) = responses($s, 1, 5);
        push @c, $r ? $r->{headers}{connection} : 'none';
    }
    is_deeply(\@c, [ 'keep-alive', 'keep-alive', 'close' ], 'keepalive_requests 3: the third response closes');
    ok(defined closed_after($s, 5), 'and the connection is closed');
}

    $t->stop;
}

# --- worker_connections cap and send_timeout (one worker) --------------------------------------
my $c = MailerdTest->new;
$c->start(main => { worker_processes => 1 },
          http => { debug_endpoints => 'on', worker_connections => 8, send_timeout => '1s' });
{
    my @held;
    for my $i (1 .. 8) {
        my $s = sock($c);
        send_raw($s, "GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
        my ($r) = responses($s, 1, 5);
        ok($r && $r->{status} == 200, "held connection $i served");
        push @held, $s;
    }
    my $x = sock($c);
    send_raw($x, "GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
    my ($r) = responses($x, 1, 5);
    error_is($r, 503, 'too_many_connections', 'connection over worker_connections');
    is($r && $r->{headers}{'retry-after'}, '1', 'Retry-After: 1');
    like($r && $r->{headers}{'x-request-id'}, qr/^[0-9a-f-]{36}$/, 'with a request id');
    ok(defined closed_after($x, 5), 'and it is closed');

    my $ok = 0;
    for my $s (@held) {
        send_raw($s, "GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
        my ($h) = responses($s, 1, 5);
        $ok++ if $h && $h->{status} == 200;
    }
    is($ok, 8, 'the held connections still work');

    close($_) for splice(@held, 0, 2);
    my $served = wait_for(sub {
        my $s = sock($c);
        send_raw($s, "GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        my ($h) = responses($s, 1, 5);
        close $s;
        return $h && $h->{status} == 200;
    }, 5);
    ok($served, 'after closing two, a new connection is served');
    close($_) for @held;
}

{
    # A client that does not read: the server stops after send_timeout of no progress.
    my $s = IO::Socket::INET->new(Proto => 'tcp') or die "socket: $!";
    setsockopt($s, SOL_SOCKET, SO_RCVBUF, 4096);
    $s->connect(Socket::pack_sockaddr_in($c->port, Socket::inet_aton('127.0.0.1'))) or die "connect: $!";
    $s->blocking(0);
    my $req = "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n" x 3000;
    my $sel = IO::Select->new($s);
    my $deadline = time + 3;
    while (length $req && time < $deadline) {
        next unless $sel->can_write(0.2);
        my $n = syswrite($s, $req);
        substr($req, 0, $n, '') if $n;
    }
    my $logged = wait_for(sub { $c->error_log =~ /timed out reading the response/ }, 8);
    ok($logged, 'send_timeout logged for a client that does not read');
    $s->blocking(1);
    my $bytes = 0;
    my $closed;
    $deadline = time + 10;
    while (time < $deadline) {
        last unless $sel->can_read($deadline - time);
        my $n = sysread($s, my $buf, 1 << 20);
        if (!$n) { $closed = 1; last }
        $bytes += $n;
    }
    ok($closed, 'the connection was closed by the server');
    ok($bytes < 3000 * 3000, "not every response was sent ($bytes bytes)");
    is($c->request('GET', '/health')->{status}, 200, 'server still serves');
}
$c->stop;

done_testing();
