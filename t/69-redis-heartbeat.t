# The pub/sub heartbeat (src/store/md_redis.c): a subscription whose connection
# silently stops carrying messages is noticed and made again, so the key cache,
# which is trusted only while the revocation channel is subscribed, cannot go on
# vouching for a revoked key until its TTL (60 s).
#
# mailerd (1 worker) reaches Redis through a proxy in this test that can stop
# passing Redis's bytes to the connections that had subscribed, as a NAT or
# firewall that dropped an idle connection would, while the TCP connection
# stays open and every other connection works. With a key cached, the proxy
# freezes the pub/sub connection and the key is revoked in PostgreSQL (no
# message could have reached the worker anyway); within a few seconds the
# worker must notice (no heartbeat back), subscribe again on a new connection,
# flush its cache and refuse the key.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use IO::Select;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(time sleep);
use MailerdTest qw(wait_for);

MailerdTest::skip_without_store();

require MailerdStore;
my $redis = MailerdStore->redis;

# --- the proxy -----------------------------------------------------------------------
my $pport = MailerdTest::free_port();
my $lsock = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $pport, Listen => 16,
                                  ReuseAddr => 1, Proto => 'tcp') or die "listen: $!";
my $ppid = fork // die "fork: $!";
if ($ppid == 0) {
    my $freeze = 0;
    local $SIG{USR1} = sub { $freeze = 1 };
    my $sel = IO::Select->new($lsock);
    my (%peer, %pubsub, %frozen); # by fileno: the other socket; subscribed; frozen (server side)
    my %sock;
    while (1) {
        if ($freeze) {
            # freeze the server side of every connection that has subscribed by now
            $frozen{$_} = 1 for grep { $pubsub{$_} } keys %pubsub;
            $freeze = 0;
        }
        my @ready = $sel->can_read(0.1);
        for my $s (@ready) {
            if ($s == $lsock) {
                my $c = $lsock->accept or next;
                my $u = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $redis->port,
                                              Proto => 'tcp') or do { close $c; next };
                $peer{ fileno $c } = $u;
                $peer{ fileno $u } = $c;
                $sock{ fileno $c } = 'client';
                $sock{ fileno $u } = 'server';
                $sel->add($c, $u);
                next;
            }
            my $buf;
            my $n = sysread($s, $buf, 65536);
            my $o = $peer{ fileno $s };
            if (!$n) {
                $sel->remove($s, $o);
                delete @peer{ fileno $s, fileno $o };
                close $s;
                close $o;
                next;
            }
            if ($sock{ fileno $s } eq 'client') {
                $pubsub{ fileno $o } = 1 if $buf =~ /SUBSCRIBE/i; # keyed by the server side
                syswrite($o, $buf);
            } elsif (!$frozen{ fileno $s }) {
                syswrite($o, $buf);
            } # frozen: Redis's bytes go nowhere, the connection stays open
        }
    }
}
close $lsock;
END { if ($ppid) { local $?; kill "KILL", $ppid; waitpid($ppid, 0) } }

my $S = MailerdTest->stack(workers => 1, redis_address => "127.0.0.1:$pport");
my $t = $S->{t};
my $pg = $S->{pg};
my ($A) = @{ $S->{tenants} };

sub with_key { $t->json_request($A->{key}, 'GET', '/v1/messages?limit=1')->{status} }

ok(wait_for(sub { $t->error_log =~ /redis subscribed/ }, 10), 'the worker subscribed through the proxy');
is(with_key(), 200, 'the key works (and is cached)');
is(with_key(), 200, 'again, from the cache');

kill 'USR1', $ppid;
sleep 0.3;
$pg->psql("UPDATE api_keys SET revoked_at = now() WHERE tenant_id = '$A->{id}'");
my $t0 = time;
ok(wait_for(sub { with_key() == 401 }, 15), 'the revoked key is refused once the silent subscription is noticed');
my $took = time - $t0;
cmp_ok($took, '<', 10, sprintf('within %.1f s (the heartbeat allows 3 s, then a reconnect)', $took));
like($t->error_log, qr/no heartbeat came back on the pub\/sub connection/, 'the worker says why it reconnected');
my $subs = () = $t->error_log =~ /"redis subscribed"/g;
cmp_ok($subs, '>=', 2, 'and subscribed again on a new connection');

is($t->stop, 0, 'graceful stop');
done_testing;
