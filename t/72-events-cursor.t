# GET /v1/events with a cursor looks the cursor's event up within an hour of
# the time in its id (UUIDv7), not through the tenant's whole range of
# events_tenant_idx (src/store/md_events.c, md_events_list_sql), and still
# finds an event whose created_at is far from its id's time. Blocks read
# (table and indexes) are counted with pg_statio_user_tables over the
# partitions: with one tenant the old lookup was a sequential scan, with many a
# walk of the tenant's range of events_tenant_idx; either reads it all.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Time::HiRes qw(sleep);
use MailerdTest qw(wait_for);

MailerdTest::skip_without_store();

my $S = MailerdTest->stack(workers => 1, pool_size => 1);
my ($t, $pg) = @{$S}{qw(t pg)};
my $tenant = $S->{tenants}[0]{id};
my $key = $S->{tenants}[0]{key};
my $N = 40000;

sub sql { scalar $pg->psql($_[0]) }

# One event a minute over the last N minutes, ids made from created_at as a
# UUIDv7 is (48 bits of milliseconds first); one more, the "late" one, whose
# created_at is two days after its id's time (a provider's late timestamp).
sql(<<"EOF");
INSERT INTO events (id, tenant_id, message_id, type, created_at)
SELECT (lpad(to_hex((extract(epoch FROM at) * 1000)::bigint), 12, '0') || '7000' || '8000'
        || lpad(to_hex(g), 12, '0'))::uuid,
       '$tenant', gen_random_uuid(), 'delivered', at
FROM (SELECT g, date_trunc('second', now()) - make_interval(mins => $N - g + 10) AS at
      FROM generate_series(1, $N) g) s
EOF
sql('ANALYZE events');
my $late_at = sql("SELECT created_at + interval '2 days' FROM events WHERE tenant_id = '$tenant'"
                  . " ORDER BY created_at OFFSET 100 LIMIT 1");
my $late = sql("INSERT INTO events (id, tenant_id, message_id, type, created_at)"
               . " SELECT (lpad(to_hex((extract(epoch FROM created_at) * 1000)::bigint), 12, '0')"
               . " || '7000' || '8000' || 'ffffffffffff')::uuid, tenant_id, gen_random_uuid(), 'delivered',"
               . " created_at + interval '2 days' FROM events WHERE tenant_id = '$tenant'"
               . " ORDER BY created_at OFFSET 100 LIMIT 1 RETURNING id");

sub blocks {
    sql('SELECT pg_stat_clear_snapshot()');
    return sql("SELECT coalesce(sum(s.heap_blks_hit + s.heap_blks_read + coalesce(s.idx_blks_hit, 0)"
               . " + coalesce(s.idx_blks_read, 0)), 0) FROM pg_statio_user_tables s"
               . " JOIN pg_inherits i ON i.inhrelid = s.relid"
               . " WHERE i.inhparent = 'events'::regclass");
}

# Blocks a call reads, as reported once the backend is idle.
sub reads_of {
    my ($path) = @_;
    my $before = blocks();
    my $r = $t->json_request($key, 'GET', $path);
    my $after;
    wait_for(sub { ($after = blocks()) > $before }, 5);
    sleep 1.2; # a report per second at most: take the whole of it
    $after = blocks();
    return ($r, $after - $before);
}

my @ids = split /\n/, sql("SELECT id FROM events WHERE tenant_id = '$tenant'"
                          . " ORDER BY created_at, id");
is(scalar @ids, $N + 1, 'the events are there');
my $i = int($N / 2);
my ($r, $read) = reads_of("/v1/events?limit=10&cursor=$ids[$i]");
is($r->{status}, 200, 'a page after a cursor in the middle') or diag($r->{body});
is_deeply([map { $_->{id} } @{ $r->{json}{data} // [] }], [@ids[$i + 1 .. $i + 10]],
          'the ten events after it, oldest first');
is($r->{json}{next_cursor}, $ids[$i + 10], 'next_cursor is the last of them');
my $size = sql("SELECT sum(pg_relation_size(i.inhrelid))::bigint / 8192 FROM pg_inherits i"
              . " WHERE i.inhparent = 'events'::regclass");
cmp_ok($read, '<', 60, "the page read $read blocks (the events take $size)");

my ($k) = grep { $ids[$_] eq $late } 0 .. $#ids;
($r) = reads_of("/v1/events?limit=2&cursor=$late");
is($r->{status}, 200, "a cursor whose created_at is two days from its id's time") or diag($r->{body});
is_deeply([map { $_->{id} } @{ $r->{json}{data} // [] }], [grep { defined } @ids[$k + 1, $k + 2]],
          'is still found: the events after it');

$r = $t->json_request($key, 'GET', '/v1/events?cursor=01900000-0000-7000-8000-000000000000');
is($r->{status}, 422, 'a cursor that is no event of the tenant is refused') or diag($r->{body});
is($r->{json}{error}{field}, 'cursor', '... naming the cursor');

$t->stop;
done_testing;
