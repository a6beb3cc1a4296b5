# Mutated raw HTTP/1.1 requests against the server (the real stack, so the
# requests that parse reach the API): request lines, header lines, framing
# (Content-Length, chunked, both, neither, too short), line ends, pipelining,
# bytes of every value, sizes past the limits. From a seed printed at the start
# (MD_FUZZ_SEED replays it, HTTP_FUZZ_N sets the count). The server must:
#   - answer each request with a well-formed HTTP/1.1 response or close the
#     connection (nothing else: no partial line, no second status for one
#     request), and never with 500;
#   - keep serving: a plain request gets its answer afterwards, both workers
#     still run, and the logs hold no sanitizer report (the sanitizer build
#     runs this too).
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use IO::Select;
use Time::HiRes qw(time);
use MailerdTest qw(wait_for parse_response);

MailerdTest::skip_without_store();

my $S = MailerdTest->stack(tenants => 1, main_extra => "esp sink {\n    driver sink;\n    dir sink;\n}\n");
my $t = $S->{t};
my ($A) = @{ $S->{tenants} };
my @workers = $t->worker_pids;

my $seed = $ENV{MD_FUZZ_SEED} // (time() ^ ($$ << 8));
srand($seed);
my $N = $ENV{HTTP_FUZZ_N} // 500;
diag("seed $seed (MD_FUZZ_SEED=$seed replays), $N requests");

sub pick { $_[ int rand @_ ] }

my $good_body = '{"from":"a@acme.example","to":"u@example.com","subject":"Hi","text":"Hello"}';

# A request as a list of parts, so mutations can work on lines.
sub base_request {
    my $k = int rand 4;
    # mostly Connection: close, so that the answer ends with the connection
    my @h = ("Host: 127.0.0.1", "Authorization: Bearer $A->{key}", rand() < 0.8 ? ('Connection: close') : ());
    if ($k == 0) {
        return ("GET /v1/messages?limit=2 HTTP/1.1", @h);
    } elsif ($k == 1) {
        return ("GET /health HTTP/1.1", "Host: 127.0.0.1", rand() < 0.8 ? ('Connection: close') : ());
    }
    my $body = $good_body;
    if ($k == 2) {
        return ("POST /v1/messages HTTP/1.1", @h, 'Content-Type: application/json',
                'Content-Length: ' . length($body), '', $body);
    }
    my $chunks = join('', map { sprintf("%x\r\n%s\r\n", length $_, $_) } ($body =~ /(.{1,20})/gs)) . "0\r\n\r\n";
    return ("POST /v1/messages HTTP/1.1", @h, 'Content-Type: application/json', 'Transfer-Encoding: chunked',
            '', $chunks);
}

my @odd = ("\x00", "\xff", "\x7f", "\r", "\n", " ", "\t", ":", "%", "%00", "%zz", "/../", "?", "#", "\xc3\xa9",
           "\x{e2}\x{80}\x{ae}", 'A' x 300, 'B' x 9000, '-1', '18446744073709551616', '0x10', '+5', ',');

sub mutate_request {
    my @p = base_request();
    for (1 .. 1 + int rand 3) {
        my $op = int rand 10;
        my $i = int rand @p;
        if ($op == 0) {           # method
            my $m = pick('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS', 'TRACE', 'CONNECT', 'BREW', 'get',
                         '', "G\x00T");
            $p[0] =~ s{^\S+}{$m};
        } elsif ($op == 1) {      # target
            my $target = pick('*', '/', '', 'http://x/v1/messages', '/v1/messages' . pick(@odd),
                              '/v1/' . ('x' x (1 + int rand 20000)));
            $p[0] =~ s{^(\S*) (\S*)}{$1 $target};
        } elsif ($op == 2) {      # version
            my $v = pick('HTTP/1.0', 'HTTP/2.0', 'HTTP/1.', 'HTTP/9.9', 'HTTPS/1.1', '', 'HTTP/1.1 extra');
            $p[0] =~ s{HTTP/1\.1$}{$v};
        } elsif ($op == 3) {      # a header line added
            splice(@p, 1 + int rand(@p > 1 ? @p - 1 : 1), 0, pick(
                'Content-Length: ' . pick(@odd, 0, 5, 100000000), 'Transfer-Encoding: ' . pick('chunked', 'gzip', 'chunked, chunked', 'identity', 'x'),
                'Expect: 100-continue', 'Connection: ' . pick('close', 'keep-alive', 'upgrade'), 'Upgrade: h2c',
                'Host: ' . pick(@odd), 'X-' . pick(@odd) . ': ' . pick(@odd), 'no colon here', ' folded continuation',
                ': empty name', 'Authorization: Bearer ' . pick(@odd), 'Content-Type: ' . pick('text/plain', 'application/json; charset=latin1', @odd),
                'Idempotency-Key: ' . pick(@odd), 'X-Big: ' . ('v' x (1 + int rand 40000))));
        } elsif ($op == 4) {      # a header line dropped
            splice(@p, $i, 1) if $i > 0 && $p[$i] ne '';
        } elsif ($op == 5) {      # bytes inserted
            my $s = $p[$i];
            substr($s, int rand(length($s) + 1), 0) = pick(@odd);
            $p[$i] = $s;
        } elsif ($op == 6) {      # a byte changed
            my $s = $p[$i];
            substr($s, int rand length $s, 1) = chr(int rand 256) if length $s;
            $p[$i] = $s;
        } elsif ($op == 7) {      # the body cut
            $p[-1] = substr($p[-1], 0, int rand length $p[-1]);
        } elsif ($op == 8) {      # chunk sizes garbled
            my $size = pick(@odd);
            $p[-1] =~ s{^([0-9a-f]+)\r\n}{$size\r\n};
        } else {                  # a line repeated
            splice(@p, $i, 0, $p[$i]) if $i > 0;
        }
    }
    my $eol = rand() < 0.1 ? "\n" : "\r\n";
    my $req;
    my $blank = 0;
    for my $k (0 .. $#p) {
        if ($p[$k] eq '' && !$blank) {
            $blank = 1;
            $req .= $eol;
            $req .= join($eol, @p[$k + 1 .. $#p]);
            last;
        }
        $req .= $p[$k] . $eol;
    }
    $req .= $eol unless $blank;
    $req .= pick('', '', '', "GET /health HTTP/1.1\r\nHost: x\r\n\r\n", "garbage\r\n\r\n") if rand() < 0.2;
    return $req;
}

# What the server sends until it closes, or goes quiet: 0.5 s before anything
# came (it waits for more of a request the mutation cut), 0.3 s after.
sub read_answer {
    my ($sock) = @_;
    my $sel = IO::Select->new($sock);
    my $buf = '';
    my $deadline = time + 5;
    while (time < $deadline) {
        last unless $sel->can_read(length $buf ? 0.3 : 0.5);
        my $n = sysread($sock, $buf, 65536, length $buf);
        last unless $n;
    }
    return $buf;
}

my (%bad, %statuses);
sub problem {
    my ($what, $req, $raw) = @_;
    my $show = sub { my $s = substr($_[0] // '', 0, 300); $s =~ s/([^\x20-\x7e])/sprintf('\\x%02x', ord $1)/ge; $s };
    diag("$what\n  request: " . $show->($req) . "\n  answer: " . $show->($raw)) unless $bad{$what}++;
}

for my $n (1 .. $N) {
    my $req = mutate_request();
    my $sock = $t->connect or do { problem('connect failed', $req, ''); next };
    binmode $sock;
    # the server may answer and close before all is written (an early 413/431)
    local $SIG{PIPE} = 'IGNORE';
    syswrite($sock, $req);
    shutdown($sock, 1) if rand() < 0.3;   # now and then the client says it is done
    my $raw = read_answer($sock);
    close $sock;
    # Every response in what came back must parse; an empty answer (closed)
    # is allowed, a partial one is not.
    my $rest = $raw;
    my $count = 0;
    while (length $rest) {
        # The first answer is to the request as sent; a later one may answer
        # bytes the server took as another request (a pipelined one, or a
        # body it did not count as one), whose method the client cannot know:
        # it may be a HEAD answer, whose Content-Length has no body after it.
        my ($r, $used) = parse_response($rest, $count == 0 && $req =~ /^HEAD /);
        ($r, $used) = parse_response($rest, 1) if !$r && $count > 0;
        if (!$r) {
            problem('an answer that is not a complete HTTP response', $req, $rest);
            last;
        }
        $statuses{ $r->{status} }++;
        problem("status $r->{status}", $req, $rest) if $r->{status} == 500;
        $count++;
        substr($rest, 0, $used, '');
    }
    $statuses{closed}++ unless $count;
}

ok(!%bad, "every request got well-formed responses or a close, never a 500")
    or diag(join("\n", map { "$_ ($bad{$_}x)" } sort keys %bad));
diag('statuses: ' . join(', ', map { "$_: $statuses{$_}" } sort keys %statuses));
ok(($statuses{202} // 0) + ($statuses{200} // 0) > 0, 'some mutated requests still went through');
ok(scalar(grep { /^4/ } keys %statuses) >= 3, 'and several kinds of 4xx came back');

my $r = $t->json_request($A->{key}, 'POST', '/v1/messages', $good_body);
is($r->{status}, 202, 'a plain send is accepted afterwards');
is(join(',', sort $t->worker_pids), join(',', sort @workers), 'the same workers still run');
$t->stop;
done_testing();
