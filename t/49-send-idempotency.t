# Idempotency-Key and durability of the send API, against the real stack:
#   - a replay (same key, same body) returns the first answer with the same ids,
#     Idempotent-Replayed: true, and creates no rows; for batches too;
#   - the same key with another body, or on another route, is 409
#     idempotency_conflict; keys are per tenant;
#   - concurrent requests with one key (on both workers) create one set of rows
#     and all get the same ids;
#   - a burst of 5,000 concurrent single sends: every id that got a 202 is a
#     committed row, and PostgreSQL counted far fewer commits than messages
#     (group commit).
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use JSON::PP;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use POSIX ();
use MailerdTest qw(wait_for slurp parse_response);

MailerdTest::skip_without_store();

my $S = MailerdTest->stack(tenants => 2, http => { worker_connections => 1024 });
my $t = $S->{t};
my $pg = $S->{pg};
my ($A, $B) = @{ $S->{tenants} };
my $json = JSON::PP->new->canonical;

sub sql { scalar $pg->psql($_[0]) }

sub api {
    my ($key, $method, $path, $body, %h) = @_;
    my %hd = (Authorization => "Bearer $key", %h);
    $hd{'Content-Type'} = 'application/json' if defined $body;
    return $t->request($method, $path, headers => \%hd, defined $body ? (body => $body) : ());
}

sub nrows { sql('SELECT count(*) FROM messages') + 0 }

my $body = $json->encode({ from => 'a@acme.example', to => ['x@example.com', 'y@example.com'],
                           subject => 'Once', text => 'only once' });

# --- replay ------------------------------------------------------------------------------
my $r1 = api($A->{key}, 'POST', '/v1/messages', $body, 'Idempotency-Key' => 'order-1');
is($r1->{status}, 202, 'first request: 202') or diag($r1->{body});
ok(!exists $r1->{headers}{'idempotent-replayed'}, 'first answer is not marked replayed');
my @ids = map { $_->{id} } @{ $r1->{json}{data} // [] };
is(scalar @ids, 2, 'two messages');
is(nrows(), 2, 'two rows');
is(sql("SELECT count(*) FROM idempotency_keys WHERE key = 'order-1'"), 1, 'the key is stored');

my $r2 = api($A->{key}, 'POST', '/v1/messages', $body, 'Idempotency-Key' => 'order-1');
is($r2->{status}, 202, 'replay: same status');
is($r2->{headers}{'idempotent-replayed'}, 'true', 'replay: Idempotent-Replayed: true');
is_deeply([map { $_->{id} } @{ $r2->{json}{data} // [] }], \@ids, 'replay: same ids');
is_deeply($r2->{json}, $r1->{json}, 'replay: same answer');
is(nrows(), 2, 'replay: no new rows');

# --- conflicts -------------------------------------------------------------------------------
(my $body2 = $body) =~ s/only once/changed/;
my $r = api($A->{key}, 'POST', '/v1/messages', $body2, 'Idempotency-Key' => 'order-1');
is($r->{status}, 409, 'changed body: 409');
is($r->{json}{error}{code}, 'idempotency_conflict', 'changed body: idempotency_conflict');
$r = api($A->{key}, 'POST', '/v1/messages', "$body ", 'Idempotency-Key' => 'order-1');
is($r->{status}, 409, 'one more byte of whitespace is another body: 409');
$r = api($A->{key}, 'POST', '/v1/messages/batch', $body, 'Idempotency-Key' => 'order-1');
is($r->{status}, 409, 'same key on another route: 409');
is(nrows(), 2, 'conflicts create nothing');

# keys are per tenant
$r = api($B->{key}, 'POST', '/v1/messages', $body, 'Idempotency-Key' => 'order-1');
is($r->{status}, 202, "tenant B may use the same key");
ok(!exists $r->{headers}{'idempotent-replayed'}, "tenant B's request is not a replay of A's");
my %b_ids = map { $_->{id} => 1 } @{ $r->{json}{data} // [] };
ok(!grep({ $b_ids{$_} } @ids), "tenant B gets its own ids");
is(nrows(), 4, 'tenant B: two new rows');

# refused requests do not consume the key
$r = api($A->{key}, 'POST', '/v1/messages', '{"from":"bad"}', 'Idempotency-Key' => 'order-2');
is($r->{status}, 422, 'refused with a key: 422');
$r = api($A->{key}, 'POST', '/v1/messages', $body, 'Idempotency-Key' => 'order-2');
is($r->{status}, 202, 'the key of a refused request is still free');
ok(!exists $r->{headers}{'idempotent-replayed'}, '... and not a replay');
is(nrows(), 6, 'two more rows');

# batches
my $bbody = $json->encode({ from => 'a@acme.example', subject => 'B', text => 'b',
                            recipients => [{ to => 'b1@example.com' }, { to => 'bad' }, { to => 'b2@example.com' }] });
$r1 = api($A->{key}, 'POST', '/v1/messages/batch', $bbody, 'Idempotency-Key' => 'batch-1');
is($r1->{status}, 202, 'batch with a key: 202') or diag($r1->{body});
$r2 = api($A->{key}, 'POST', '/v1/messages/batch', $bbody, 'Idempotency-Key' => 'batch-1');
is($r2->{headers}{'idempotent-replayed'}, 'true', 'batch replay is marked');
is_deeply($r2->{json}, $r1->{json}, 'batch replay: same batch_id, ids and rejections');
is(sql("SELECT count(*) FROM batches"), 1, 'one batch row');
is(nrows(), 8, 'batch replay: no new rows');

# --- concurrent requests with one key ----------------------------------------------------------
# Children leave with POSIX::_exit: a normal exit would run the destructors
# that stop the servers. Each client sends all but the last byte, waits at a barrier (a file), then the
# last byte: the requests reach both workers at once.
{
    my $n = 12;
    my $cbody = $json->encode({ from => 'a@acme.example', to => ['c1@example.com', 'c2@example.com', 'c3@example.com'],
                                subject => 'Race', text => 'race' });
    my $req = "POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $A->{key}\r\n"
      . "Content-Type: application/json\r\nIdempotency-Key: race-1\r\nConnection: close\r\n"
      . "Content-Length: " . length($cbody) . "\r\n\r\n$cbody";
    my $go = $t->dir . '/go';
    my @kids;
    for my $i (1 .. $n) {
        my $pid = fork // die;
        if ($pid == 0) {
            my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port, Proto => 'tcp') or POSIX::_exit(1);
            syswrite($s, substr($req, 0, -1));
            my $until = time + 10;
            sleep 0.001 until -e $go || time > $until;
            syswrite($s, substr($req, -1));
            my $raw = MailerdTest::read_all($s, 10);
            open(my $fh, '>', $t->dir . "/race.$i") or POSIX::_exit(1);
            print $fh $raw;
            close $fh;
            POSIX::_exit(0);
        }
        push @kids, $pid;
    }
    sleep 0.3;
    open(my $fh, '>', $go) or die;
    close $fh;
    waitpid($_, 0) for @kids;
    my (%sets, %status, $replayed);
    for my $i (1 .. $n) {
        my ($resp) = parse_response(slurp($t->dir . "/race.$i"));
        $status{$resp ? $resp->{status} : 'none'}++;
        next unless $resp && $resp->{json};
        $sets{ join(',', map { $_->{id} } @{ $resp->{json}{data} // [] }) }++;
        $replayed++ if ($resp->{headers}{'idempotent-replayed'} // '') eq 'true';
    }
    is_deeply(\%status, { 202 => $n }, "all $n concurrent requests got 202");
    is(scalar keys %sets, 1, 'all got the same ids');
    is($replayed, $n - 1, 'all but one were replays');
    is(sql("SELECT count(*) FROM messages WHERE subject = 'Race'"), 3, 'one set of rows');
}

# --- burst: 5,000 concurrent single sends, group commit ----------------------------------------
{
    my $total = 5000;
    my $procs = 100;
    my $per = $total / $procs;
    my $commits = sub { sql("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()") + 0 };
    my $before = $commits->();
    my $before_rows = nrows();
    my $t0 = time;
    my @kids;
    for my $p (1 .. $procs) {
        my $pid = fork // die;
        if ($pid == 0) {
            my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port, Proto => 'tcp') or POSIX::_exit(1);
            open(my $out, '>', $t->dir . "/burst.$p") or POSIX::_exit(1);
            my $buf = '';
            for my $i (1 .. $per) {
                my $b = qq({"from":"Load <load\@acme.example>","to":"u$p.$i\@example.com","subject":"Burst $p/$i",)
                  . qq("text":"Hello from the burst, message $i of client $p.","tags":["burst"]});
                my $req = "POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $A->{key}\r\n"
                  . "Content-Type: application/json\r\nContent-Length: " . length($b) . "\r\n\r\n$b";
                unless (syswrite($s, $req)) {
                    $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port, Proto => 'tcp') or last;
                    $buf = '';
                    syswrite($s, $req) or last;
                }
                my $resp;
                while (1) {
                    my $used;
                    ($resp, $used) = parse_response($buf);
                    if ($resp) { substr($buf, 0, $used, ''); last }
                    my $n = sysread($s, $buf, 65536, length $buf);
                    last unless $n;
                }
                unless ($resp) { print $out "none -\n"; $s = undef; last }
                my $id = $resp->{json} && $resp->{json}{data} ? $resp->{json}{data}[0]{id} : '-';
                print $out "$resp->{status} $id\n";
                if (($resp->{headers}{connection} // '') =~ /close/i) {
                    $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port, Proto => 'tcp') or last;
                    $buf = '';
                }
            }
            close $out;
            POSIX::_exit(0);
        }
        push @kids, $pid;
    }
    waitpid($_, 0) for @kids;
    my $elapsed = time - $t0;
    my (%st, @ok);
    for my $p (1 .. $procs) {
        for (split /\n/, slurp($t->dir . "/burst.$p")) {
            my ($code, $id) = split / /;
            $st{$code}++;
            push @ok, $id if $code eq '202';
        }
    }
    diag(sprintf('burst: %d requests in %.2fs (%.0f/s), statuses %s', $total, $elapsed, $total / ($elapsed || 1),
                 join(' ', map { "$_=$st{$_}" } sort keys %st)));
    ok(@ok >= $total * 0.9, 'at least 90% of the burst got 202 (' . scalar(@ok) . ')');
    my $uuid = qr/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
    is(scalar(grep { !/$uuid/ } @ok), 0, 'every 202 carries a UUIDv7');
    my %uniq = map { $_ => 1 } @ok;
    is(scalar keys %uniq, scalar @ok, 'no id twice');
    my $found = 0;
    my @all = @ok;
    while (my @chunk = splice(@all, 0, 1000)) {
        $found += sql("SELECT count(*) FROM messages WHERE id = ANY('{" . join(',', @chunk) . "}'::uuid[])");
    }
    is($found, scalar @ok, 'every id that got a 202 is a committed row');
    is(nrows() - $before_rows, $st{202} // 0, 'and no other rows were made');
    # The transactions that wrote the rows, exactly: one xmin per transaction
    # (message_content's: its rows are written once, by the accept).
    my $xacts = sql("SELECT count(DISTINCT xmin::text) FROM message_content WHERE tags = '{burst}'");
    diag("transactions that inserted the burst: $xacts for " . scalar(@ok) . " messages");
    ok($xacts > 0 && $xacts < @ok / 4, "group commit: $xacts transactions wrote " . scalar(@ok) . ' rows');
    # pg_stat_database shows a backend's commits only when it flushes its
    # statistics (within about 10 s when idle): wait until the delta covers at
    # least those transactions, then check it too.
    my $delta = 0;
    wait_for(sub { $delta = $commits->() - $before; $delta >= $xacts }, 15);
    diag("xact_commit delta over the burst: $delta");
    ok($delta >= $xacts && $delta < @ok / 4, "xact_commit delta ($delta) far below the messages (" . scalar(@ok) . ')');
    my $m = $t->request('GET', '/metrics')->{body};
    my ($acc) = $m =~ /^mailerd_messages_accepted_total (\d+)/m;
    ok(($acc // 0) >= @ok, 'accepted total counts the burst');
}

$t->stop;
done_testing;
