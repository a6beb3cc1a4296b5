#!/usr/bin/perl
# scripts/test: alone (load, timing or rate assertions: no other test beside it)
# Per-tenant sending rate (issue 6, point 4; md_route.c): `tenant_rate TENANT N;`
# in the routing block, enforced with the Redis token bucket (key per tenant)
# before the account's bucket, across two workers.
#   - tenant A has tenant_rate 50, tenant B none: with a backlog of both (A's
#     accepted first), A's
#     deliveries over a 6 s window stay within 50/s +-10% while B's backlog is
#     delivered at once (it is not held behind A's waiting messages);
#   - a message without a tenant token waits, it does not fail: every A message
#     is delivered on its first attempt;
#   - the bucket is shared in Redis under mailerd:tenant_rate:{TENANT}, and
#     /metrics counts the sends waiting for a tenant's token.
# The sink's journal ("<id> <attempt>" per delivery, written at the send) is the
# clock of the deliveries; PostgreSQL's records may lag them by a chunk.
#
# With dispatch_concurrency 256 (set below; the default is 1024): a limited tenant's
# backlog beyond MD_ROUTE_TENANT_MAX_WAIT (5 s) of its rate per worker, or a
# quarter of the worker's places, is deferred (code tenant_rate_limited, the attempt given back) instead of
# holding the dispatcher's places, so B is read and delivered at once.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use MailerdTest;

my $s = MailerdTest->stack(
    workers => 2, tenants => 2,
    main_extra => "dispatch_concurrency 256;\n"
      . "esp sink {\n    dir sink;\n    journal sink.journal;\n}\n# ROUTING\n");
my $dir = $s->{t}->dir;
my $journal = "$dir/sink.journal";
my ($A, $B) = @{ $s->{tenants} };

sub sql { scalar $s->{pg}->psql($_[0]) }

# Delivered ids of the journal, in order, with the time each was first seen.
my (%seen, $jpos);
sub poll_journal {
    open(my $fh, '<', $journal) or return;
    seek($fh, $jpos // 0, 0);
    my $now = time;
    while (my $l = <$fh>) {
        last unless $l =~ /\n\z/; # a line being written: read it next time
        $jpos = tell($fh);
        my ($id) = split ' ', $l;
        $seen{$id} //= $now;
    }
    close $fh;
}
sub count_of { my ($ids) = @_; scalar grep { exists $seen{$_} } @$ids }

sub send_batch {
    my ($tenant, $n, $tag) = @_;
    return $s->{t}->send_many($tenant->{key}, $n, $tag, prefix => 'trate',
                              from => 'Rate <rate@acme.example>');
}

my $routing = "routing {\n    tenant_rate $A->{id} 50;\n}\n";
ok($s->{t}->reload_conf(sub { $_[0] =~ s/# ROUTING\n/$routing/r }),
   'reloaded with tenant_rate 50 for tenant A')
  or BAIL_OUT('reload failed: ' . $s->{t}->error_log);

my $warm = [ send_batch($B, 5, 'warm') ];
ok(MailerdTest::wait_for(sub { poll_journal(); count_of($warm) == 5 }, 20),
   'the stack delivers');

my @a = send_batch($A, 500, 'a');
my $tb = time;
my @b = send_batch($B, 300, 'b');
my $b_sent = time;

# B: delivered at once, while A's backlog waits for tokens
my $b_done = MailerdTest::wait_for(sub { poll_journal(); count_of(\@b) == @b }, 20);
my $b_took = time - $tb;
ok($b_done, 'all of B delivered');
my $a_then = count_of(\@a);
ok($b_took < 3, sprintf('B is not held back: 300 delivered %.2f s after A\'s 500 were accepted '
                        . '(B accepted after %.2f s)', $b_took, $b_sent - $tb));
ok($a_then < 200, "A was still waiting meanwhile ($a_then of 500 delivered)");
my ($waiting) = ($s->{t}->request('GET', '/metrics')->{body} // '') =~ /^mailerd_tenant_rate_waiting (\d+)$/m;
ok(($waiting // 0) > 20 && $waiting <= 130,
   'mailerd_tenant_rate_waiting shows them, at most a quarter of each worker\'s places (' . ($waiting // 'undef') . ')');

# A: a 6 s window once it is under way
MailerdTest::wait_for(sub { poll_journal(); count_of(\@a) >= 25 }, 10);
poll_journal();
my ($t0, $c0) = (time, count_of(\@a));
while (time - $t0 < 6) { sleep 0.1; poll_journal() }
my ($t1, $c1) = (time, count_of(\@a));
my $rate = ($c1 - $c0) / ($t1 - $t0);
ok($rate >= 45 && $rate <= 55, sprintf('A sends at %.1f/s over %.1f s (50/s +-10%%)', $rate, $t1 - $t0));
ok($c1 < @a, "A's backlog was not exhausted in the window ($c1 of 500)");

# The rest of A arrives; waiting for a token was no failure
ok(MailerdTest::wait_for(sub { poll_journal(); count_of(\@a) == @a }, 30), 'all of A delivered');
my $list = join(',', map { "'$_'" } @a);
ok(MailerdTest::wait_for(sub {
    sql("SELECT count(*) FROM messages WHERE id IN ($list) AND status IN ('sent', 'delivered')") == @a
}, 15), 'all of A recorded as sent');
is(sql("SELECT max(attempts) FROM messages WHERE id IN ($list)"), 1,
   'each on its first attempt (deferrals by the rate are not attempts)');
is(sql("SELECT count(*) FROM events WHERE message_id IN ($list) AND type = 'failed'"), 0, 'none failed');
my $deferred = sql("SELECT count(DISTINCT message_id) FROM events WHERE message_id IN ($list)"
                   . " AND type = 'deferred'");
ok($deferred > 100, "A's backlog beyond what may wait was deferred, not held ($deferred messages)");
is(sql("SELECT count(*) FROM events WHERE message_id IN ($list) AND type = 'deferred'"
       . " AND data->>'code' <> 'tenant_rate_limited'"), 0, '... every deferral with code tenant_rate_limited');
my $key = "mailerd:tenant_rate:{$A->{id}}";
my $ttl = $s->{redis}->cli('PTTL', $key) // 'error';
ok($ttl =~ /^\d+\z/ && $ttl > 0, "the bucket is in Redis ($key: pttl $ttl)");
is($s->{redis}->cli('EXISTS', "mailerd:tenant_rate:{$B->{id}}"), 0, 'B, unlimited, has none');

$s->{t}->stop;
done_testing;
