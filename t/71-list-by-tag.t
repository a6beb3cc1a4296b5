# GET /v1/messages?tag= on a tenant with many messages finds a rare tag through
# message_content_tags_idx on every call (src/store/md_messages.c, list_sql).
# A prepared statement would run its generic plan from the sixth call on a
# connection, which cannot know how common the tag is and walks the tenant's
# ids newest first, filtering: every message read for a rare tag. One worker
# with one connection, so all calls share the connection; the index's use is
# read from pg_stat_user_indexes.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use MailerdTest qw(wait_for);

MailerdTest::skip_without_store();

my $S = MailerdTest->stack(workers => 1, pool_size => 1);
my ($t, $pg) = @{$S}{qw(t pg)};
my $tenant = $S->{tenants}[0]{id};
my $key = $S->{tenants}[0]{key};
my $N = 20000;
my $CALLS = 12;

sub sql { scalar $pg->psql($_[0]) }

# Hand-made rows (content and state), time-ordered ids; one in 4,000 tagged 'rare'.
sql(<<"EOF");
INSERT INTO message_content (id, tenant_id, from_addr, to_addr, subject, text_body, tags)
SELECT (lpad(to_hex(1700000000000 + g), 12, '0') || '70008000' || lpad(to_hex(g), 12, '0'))::uuid,
       '$tenant', 'a\@example.com', 'r' || g || '\@example.com', 's', 'x',
       CASE WHEN g % 4000 = 0 THEN '{rare,bulk}'::text[] ELSE '{common,bulk}'::text[] END
FROM generate_series(1, $N) g
EOF
sql("INSERT INTO deliveries (message_id, tenant_id, status, priority)"
    . " SELECT id, tenant_id, 'queued', 'transactional' FROM message_content WHERE tenant_id = '$tenant'");
sql('VACUUM ANALYZE message_content');
sql('ANALYZE deliveries');
my @rare = split /\n/, sql("SELECT id FROM message_content WHERE tenant_id = '$tenant'"
                           . " AND tags @> '{rare}' ORDER BY id DESC");
is(scalar @rare, $N / 4000, 'the rare tag is on five messages');

sub tag_scans {
    sql('SELECT pg_stat_clear_snapshot()');
    return sql("SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'message_content_tags_idx'");
}
my $scans0 = tag_scans();

my $all_right = 1;
for my $i (1 .. $CALLS) {
    my $r = $t->json_request($key, 'GET', '/v1/messages?tag=rare&limit=10');
    my @got = map { $_->{id} } @{ $r->{json}{data} // [] };
    $all_right &&= $r->{status} == 200 && "@got" eq "@rare" && !defined $r->{json}{next_cursor};
    $all_right or diag("call $i: $r->{status} $r->{body}"), last;
}
ok($all_right, "$CALLS calls on one connection: the five, newest first, no next page");

my $r = $t->json_request($key, 'GET', '/v1/messages?tag=absent');
is_deeply($r->{json}{data}, [], 'a tag no message has: an empty page');

# The backend reports its index use when idle (at most once a second).
my $want = $scans0 + $CALLS + 1;
my $scans;
ok(wait_for(sub { ($scans = tag_scans()) >= $want }, 10),
   'every one of them was planned with its tag and read message_content_tags_idx')
  or diag("idx_scan went from $scans0 to $scans, want $want");

# A common tag is still listed by walking the ids, pages and cursors as usual.
my (@seen, $cursor);
for my $page (1 .. 2) {
    $r = $t->json_request($key, 'GET', '/v1/messages?tag=common&limit=100' . ($cursor ? "&cursor=$cursor" : ''));
    is($r->{status}, 200, "common tag, page $page") or diag($r->{body});
    push @seen, map { $_->{id} } @{ $r->{json}{data} // [] };
    $cursor = $r->{json}{next_cursor};
}
my @newest = split /\n/, sql("SELECT id FROM message_content WHERE tenant_id = '$tenant'"
                             . " AND tags @> '{common}' ORDER BY id DESC LIMIT 200");
is_deeply(\@seen, \@newest, 'two pages of a common tag: the 200 newest, in order');

$t->stop;
done_testing;
