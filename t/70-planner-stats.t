# Planner statistics that keep up with a growing table (migration 0010,
# src/store/md_analyze.c), against a real PostgreSQL with autovacuum off for
# the message tables, so that only mailerd can analyze them:
#   - a generic plan of the dispatcher's record statement made while deliveries
#     is empty scans the whole table; mailerd analyzes deliveries once it has
#     grown, and the same prepared statement, in the same session, is then
#     planned through deliveries_pkey (the analyze invalidated the cached plan);
#   - mailerd logs the tables it analyzed;
#   - mailerd_refresh_stats analyzes nothing while another caller holds its
#     lock, and a table it has just analyzed only after it changes again.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Time::HiRes qw(time sleep);
use MailerdTest qw(wait_for slurp src_dir);

MailerdTest::skip_without_store();

my $S = MailerdTest->stack(pg_extra => "    analyze_interval 200ms;\n");
my ($t, $pg) = @{$S}{qw(t pg)};
my $key = $S->{tenants}[0]{key};
my $LOCK = '7881696737154458739'; # the function's advisory lock ("mailerds")

sub sql { scalar $pg->psql($_[0]) }

sql("ALTER TABLE $_ SET (autovacuum_enabled = false)") for qw(deliveries message_content);
is(sql("SELECT count(*) FROM pg_stat_user_tables WHERE relname IN ('deliveries', 'message_content')"
       . " AND (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL)"),
   '0', 'the message tables start never analyzed');

# The record statement exactly as the dispatcher prepares it.
my $src = src_dir();
my $sent = `cd '$src' && bash -c '. scripts/lib.sh && md_c_string md_dispatch_sent_sql src/store/md_suppressions.h src/store/md_messages.h src/esp/md_dispatch.c'`;
ok($? == 0 && $sent =~ /UPDATE deliveries/, 'the record statement read from md_dispatch.c')
  or BAIL_OUT("cannot read md_dispatch_sent_sql");

# One session: plan it generically on the empty table, wait (inside one DO
# statement) until deliveries has been analyzed, plan it again.
my $script = $t->dir . '/plans.sql';
{
    open(my $fh, '>', $script) or die $!;
    print $fh <<"EOF";
SET plan_cache_mode = force_generic_plan;
PREPARE sent (uuid[], int[], int[], text[], text[], boolean[], uuid[], uuid[], jsonb[]) AS $sent;
EXPLAIN EXECUTE sent (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
SELECT 'waiting';
DO \$\$
BEGIN
    FOR i IN 1 .. 600 LOOP
        PERFORM pg_stat_clear_snapshot();
        EXIT WHEN EXISTS (SELECT 1 FROM pg_stat_user_tables
                          WHERE relname = 'deliveries' AND last_analyze IS NOT NULL);
        PERFORM pg_sleep(0.05);
    END LOOP;
END
\$\$;
SELECT 'analyzed';
EXPLAIN EXECUTE sent (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
EOF
    close $fh;
}
open(my $bg, '-|', 'psql', '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1',
     '-p', $pg->port, '-U', 'mailerd', '-d', 'mailerd', '-f', $script) or die "psql: $!";
# Nothing is sent before the session has made its first plan and waits.
ok(wait_for(sub {
    sql("SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
        . " AND query LIKE 'DO %pg_stat_clear_snapshot%' AND pid <> pg_backend_pid()") eq '1' }, 15),
   'the session planned on the empty table and waits');

my @ids = $t->send_many($key, 3000, 'grow');
is(scalar @ids, 3000, '3,000 messages accepted (no ESP: they stay queued)');

my $out = do { local $/; <$bg> } // '';
close $bg;
is($?, 0, 'the planning session ran to its end') or diag($out);
my ($before, $after) = $out =~ /\A(.*?)^waiting$(?:.*?)^analyzed$(.*)\z/ms;
like($before // '', qr/Seq Scan on deliveries/,
     'planned on the empty table, the record statement scans deliveries whole') or diag($out);
like($after // '', qr/Index Scan using deliveries_pkey on deliveries/,
     'after mailerd analyzed the grown table, the same statement goes through deliveries_pkey')
  or diag($out);
unlike($after // '', qr/Seq Scan on deliveries/, 'and no longer scans it') or diag($out);

ok(wait_for(sub {
    sql("SELECT count(*) FROM pg_stat_user_tables WHERE relname IN ('deliveries', 'message_content')"
        . " AND last_analyze IS NOT NULL") eq '2' }, 10),
   'mailerd analyzed both message tables (autovacuum is off for them)');
my @logged = map { $_->{table} // () }
  grep { ($_->{msg} // '') =~ /planner statistics: analyzed a table that grew/ } $t->error_log_entries;
ok((grep { $_ eq 'public.deliveries' } @logged), 'the analyze is logged with its table')
  or diag(join(', ', @logged));
is(scalar(grep { ($_->{msg} // '') =~ /planner statistics: refresh failed/ } $t->error_log_entries),
   0, 'no refresh failed');

# --- the function itself ---------------------------------------------------------------
# With min_changes 0 every table changed at least as much as its analyzed size
# qualifies, the never-analyzed ones included.
sql("ALTER TABLE $_ SET (autovacuum_enabled = false)") for qw(batches);
open(my $holder, '-|', 'psql', '-X', '-q', '-A', '-t', '-h', '127.0.0.1', '-p', $pg->port,
     '-U', 'mailerd', '-d', 'mailerd', '-c',
     "BEGIN; SELECT pg_advisory_xact_lock($LOCK); SELECT 'held'; SELECT pg_sleep(3); COMMIT;")
  or die "psql: $!";
ok(wait_for(sub { sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted") ne '0' }, 5),
   'another session holds the lock');
is(sql("SELECT count(*) FROM mailerd_refresh_stats(0, 1000000000)"), '0',
   'while another caller holds the lock, nothing is analyzed');
{ local $/; <$holder> }
close $holder;
# mailerd's own call may hold the lock for a moment: try until one gets it.
my $first = '';
wait_for(sub { $first = sql("SELECT string_agg(t, ',' ORDER BY t) FROM mailerd_refresh_stats(0, 1000000000) t"); $first ne '' }, 5);
like($first, qr/(?:^|,)public\.batches(?:,|$)/, 'once it is free, a never-analyzed table is analyzed')
  or diag($first);
like(sql("SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'batches'"), qr/^t$/,
     'batches has been analyzed');
sql("SELECT pg_stat_clear_snapshot()");
is(sql("SELECT count(*) FROM mailerd_refresh_stats(1, 1000000000)"), '0',
   'right after, with nothing changed, nothing is analyzed again');

done_testing();
