#!/usr/bin/perl
# `mailerd migrate` against a private PostgreSQL: applies migrations once each,
# in order, in a transaction with their schema_migrations row; refuses changed
# applied files and bad names; `migrate status`; concurrent runs serialise.
# Each scenario uses its own database so they do not see each other.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Copy qw(copy);
use File::Path qw(make_path remove_tree);
use Digest::SHA qw(sha256_hex);
use POSIX qw(:sys_wait_h);
use MailerdTest qw(src_dir slurp wait_for);
use MailerdStore;

my $SRC = src_dir();
my $pg  = MailerdStore->pg;
my $ndb = 0;

# A fresh database and a MailerdTest dir whose config points at it and at a
# private migrations dir holding the repo's 0001 (so files can be added and
# edited; the scenarios below number their own files from 0002 on). With
# all => 1 it holds every migration of the repo.
sub setup {
    my (%o) = @_;
    my $db = 'mig' . ++$ndb;
    $pg->psql_admin("CREATE DATABASE $db OWNER mailerd");
    my $t = MailerdTest->new;
    my $mdir = $t->dir . '/migrations';
    make_path($mdir);
    copy($_, $mdir) or die "copy $_: $!"
      for $o{all} ? glob("$SRC/migrations/*.sql") : ("$SRC/migrations/0001_identity.sql");
    my $dsn = $pg->dsn =~ s/dbname=\S+/dbname=$db/r;
    my $pgblock = $o{no_pg} ? '' : "postgres {\n    dsn \"$dsn\";\n}\n";
    $t->write_conf($t->conf_text(main_extra => "${pgblock}migrations_dir migrations;\n"));
    return { t => $t, db => $db, mdir => $mdir };
}

# Runs `mailerd migrate ARGS` for scenario s; returns (exit code, output). A
# sanitizer report in the output fails the test (the run_cmd output is not a log
# that MailerdTest->stop would check).
sub migrate {
    my ($s, @args) = @_;
    my ($rc, $out) = $s->{t}->run_cmd('-p', $s->{t}->dir, '-c', $s->{t}->dir . '/mailerd.conf', 'migrate', @args);
    do { fail("sanitizer report from migrate @args"); diag($out) }
      if $out =~ /AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:/;
    return ($rc, $out);
}

# psql without a shell: MailerdStore::psql quotes its arguments in '...' for a
# shell, which breaks on SQL that holds a single quote. Returns (rc, output) in
# list context and dies on failure in scalar context.
sub psql_db {
    my ($db, $q, $user) = @_;
    my $pid = open(my $fh, '-|') // die "fork: $!";
    if ($pid == 0) {
        open(STDERR, '>&', \*STDOUT);
        exec('psql', '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-p', $pg->port,
             '-U', $user // 'mailerd', '-d', $db, '-c', $q) or exit 127;
    }
    local $/;
    my $out = <$fh> // '';
    close $fh;
    my $rc = $? >> 8;
    $out =~ s/\n\z//;
    return ($rc, $out) if wantarray;
    die "psql failed ($q): $out" if $rc;
    return $out;
}

sub sql { my ($s, $q) = @_; scalar psql_db($s->{db}, $q) }
sub sql_may_fail { my ($s, $q) = @_; my ($rc) = psql_db($s->{db}, $q); $rc }

sub put {
    my ($s, $name, $text) = @_;
    open(my $fh, '>', "$s->{mdir}/$name") or die $!;
    print $fh $text;
    close $fh;
}

# Until src/core/md_main.c dispatches `migrate`, this file cannot run.
{
    my $s = setup();
    my ($rc, $out) = migrate($s, 'status');
    my ($first) = split /\n/, $out;
    plan skip_all => "this mailerd has no migrate command yet ($first)" if $out =~ /unexpected argument "migrate"/;
}

subtest 'first run applies 0001, second run is a no-op' => sub {
    my $s = setup();
    my ($rc, $out) = migrate($s);
    is($rc, 0, 'migrate exits 0') or diag($out);
    like($out, qr/^applied 0001_identity\.sql/m, 'reports the applied migration');
    like($out, qr/applied 1 migration; schema is now at version 0001/, 'final summary');
    is(sql($s, "SELECT to_regclass('tenants') IS NOT NULL AND to_regclass('api_keys') IS NOT NULL"),
       't', 'tenants and api_keys exist');
    my $sum = sha256_hex(slurp("$SRC/migrations/0001_identity.sql"));
    is(sql($s, 'SELECT version, name, checksum FROM schema_migrations'), "1|identity|$sum",
       'schema_migrations records version, name and the SHA-256 of the file');
    my $before = sql($s, 'SELECT * FROM schema_migrations ORDER BY version');

    ($rc, $out) = migrate($s);
    is($rc, 0, 'second run exits 0') or diag($out);
    like($out, qr/schema is current at version 0001/, 'second run says the schema is current');
    unlike($out, qr/^applied /m, 'second run applies nothing');
    is(sql($s, 'SELECT * FROM schema_migrations ORDER BY version'), $before,
       'schema_migrations unchanged (same rows, same applied_at)');

    # The schema does what 0001 promises.
    my $tid = '01890a5d-ac96-774b-bcce-b302099a8057';
    sql($s, "INSERT INTO tenants (id, name) VALUES ('$tid', 'acme')");
    is(sql($s, "SELECT status, metadata::text, deleted_at IS NULL FROM tenants"), "active|{}|t",
       'tenant defaults');
    for my $bad ("INSERT INTO tenants (id, name) VALUES (gen_random_uuid(), '')",
                 "INSERT INTO tenants (id, name) VALUES (gen_random_uuid(), repeat('x', 201))",
                 "INSERT INTO tenants (id, name, status) VALUES (gen_random_uuid(), 'a', 'bogus')",
                 "INSERT INTO tenants (id, name, metadata) VALUES (gen_random_uuid(), 'a', '[]')",
                 "INSERT INTO tenants (name) VALUES ('no id')") {
        ok(sql_may_fail($s, $bad), "refused: $bad");
    }
    my $key = "INSERT INTO api_keys (id, tenant_id, prefix, secret_hash) VALUES "
      . "(gen_random_uuid(), '$tid', 'md_test', sha256('secret'::bytea))";
    sql($s, $key);
    is(sql($s, "SELECT name, scopes::text, revoked_at IS NULL FROM api_keys"), "|{}|t", 'api key defaults');
    ok(sql_may_fail($s, $key), 'secret_hash is unique');
    ok(sql_may_fail($s, "INSERT INTO api_keys (id, tenant_id, prefix, secret_hash) VALUES "
      . "(gen_random_uuid(), '$tid', 'p', 'not-a-sha256'::bytea)"), 'secret_hash must be 32 bytes');
    sql($s, "DELETE FROM tenants WHERE id = '$tid'");
    is(sql($s, 'SELECT count(*) FROM api_keys'), '0', 'purging a tenant cascades to its keys');
};

subtest "every migration in the repo applies in order, once" => sub {
    my $s = setup(all => 1);
    my @files = map { s{.*/}{}r } sort glob("$SRC/migrations/*.sql");
    my ($rc, $out) = migrate($s);
    is($rc, 0, 'migrate exits 0') or diag($out);
    for my $f (@files) {
        like($out, qr/^applied \Q$f\E/m, "applied $f");
    }
    my ($last) = $files[-1] =~ /^0*(\d+)_/;
    is(sql($s, 'SELECT max(version), count(*) FROM schema_migrations'), "$last|" . scalar(@files),
       'every file recorded');
    ($rc, $out) = migrate($s);
    is($rc, 0, 'second run exits 0');
    like($out, qr/schema is current/, 'second run is a no-op');
};

subtest 'a failing migration rolls back entirely' => sub {
    my $s = setup();
    my ($rc, $out) = migrate($s);
    is($rc, 0, 'baseline applied') or diag($out);
    put($s, '0002_broken.sql', "-- a good statement first\nCREATE TABLE good_part (id int);\n"
        . "INSERT INTO good_part VALUES (1);\nCREATE TABLE bad_part (id no_such_type);\n");
    put($s, '0003_later.sql', "CREATE TABLE later (id int);\n");
    ($rc, $out) = migrate($s);
    is($rc, 1, 'exits 1');
    like($out, qr{0002_broken\.sql failed at line 4: ERROR: type "no_such_type" does not exist},
         'names the file, the line and the PostgreSQL error') or diag($out);
    like($out, qr/rolled back; schema stays at version 0001/, 'says it rolled back');
    is(sql($s, "SELECT to_regclass('good_part') IS NULL"), 't', 'the good part of 0002 is not there');
    is(sql($s, "SELECT to_regclass('later') IS NULL"), 't', 'later migrations were not applied');
    is(sql($s, 'SELECT max(version), count(*) FROM schema_migrations'), '1|1',
       'recorded version unchanged');

    # A failure in a statement the server runs (not parse time) has no position.
    put($s, '0002_broken.sql', "CREATE TABLE good_part (id int);\nSELECT 1/0;\n");
    ($rc, $out) = migrate($s);
    is($rc, 1, 'runtime error exits 1');
    like($out, qr{0002_broken\.sql failed: ERROR: division by zero \(SQLSTATE 22012\)}, 'runtime error named')
      or diag($out);
    is(sql($s, "SELECT to_regclass('good_part') IS NULL"), 't', 'rolled back again');

    # A migration may not end the transaction itself.
    put($s, '0002_broken.sql', "CREATE TABLE committed_early (id int);\nCOMMIT;\nBEGIN;\nCREATE TABLE rest (id int);\n");
    ($rc, $out) = migrate($s);
    is($rc, 1, 'COMMIT inside a migration is refused');
    like($out, qr/ends the transaction itself/, 'and explained') or diag($out);
    is(sql($s, 'SELECT max(version) FROM schema_migrations'), '1', 'and not recorded');
    is(sql($s, "SELECT to_regclass('rest') IS NULL"), 't', 'its part after the COMMIT is rolled back');
    sql($s, 'DROP TABLE committed_early');

    # Never applied, so it may still be fixed; then both apply in order.
    put($s, '0002_broken.sql', "CREATE TABLE good_part (id int);\n");
    ($rc, $out) = migrate($s);
    is($rc, 0, 'fixed migration applies') or diag($out);
    like($out, qr/applied 0002_broken\.sql.*\napplied 0003_later\.sql.*\napplied 2 migrations; schema is now at version 0003/s,
         'applied in version order');
    is(sql($s, 'SELECT string_agg(version::text, \',\' ORDER BY version) FROM schema_migrations'), '1,2,3',
       'all recorded');
};

subtest 'a changed applied migration is refused' => sub {
    my $s = setup();
    my ($rc, $out) = migrate($s);
    is($rc, 0, 'baseline applied') or diag($out);
    open(my $fh, '>>', "$s->{mdir}/0001_identity.sql") or die $!;
    print $fh "-- an innocent-looking edit\n";
    close $fh;
    put($s, '0002_next.sql', "CREATE TABLE next_one (id int);\n");
    ($rc, $out) = migrate($s);
    is($rc, 1, 'exits 1');
    like($out, qr/migration 0001 changed after it was applied/, 'says which migration changed') or diag($out);
    is(sql($s, "SELECT to_regclass('next_one') IS NULL"), 't', 'nothing else is applied');
    ($rc, $out) = migrate($s, 'status');
    is($rc, 1, 'status exits 1 too');
    like($out, qr/^0001\s+CHANGED/m, 'status marks it') or diag($out);

    # A renamed file is a change as well.
    copy("$SRC/migrations/0001_identity.sql", "$s->{mdir}/0001_identity.sql") or die;
    rename("$s->{mdir}/0001_identity.sql", "$s->{mdir}/0001_renamed.sql") or die;
    ($rc, $out) = migrate($s);
    is($rc, 1, 'renamed applied migration refused');
    like($out, qr/migration 0001 changed after it was applied: it was applied as "identity"/, 'named')
      or diag($out);
};

subtest 'file names' => sub {
    my $s = setup();
    put($s, 'README', "not a migration\n");
    put($s, '.gitkeep', '');
    my ($rc, $out) = migrate($s);
    is($rc, 0, 'other files are ignored') or diag($out);
    like($out, qr{warning: ignoring \S+/README: not a migration}, 'with a warning');
    unlike($out, qr/gitkeep/, 'dot files silently');

    for my $bad ('12_short.sql', '0002-dash.sql', '0002_Upper.sql', '0002_.sql', '0000_zero.sql',
                 '99999999999_big.sql', 'x0002_y.sql') {
        put($s, $bad, "SELECT 1;\n");
        ($rc, $out) = migrate($s);
        is($rc, 1, "$bad refused");
        like($out, qr/bad migration file name \S+\Q$bad\E/, "$bad named in the error") or diag($out);
        unlink "$s->{mdir}/$bad";
    }
    put($s, '0002_a.sql', "SELECT 1;\n");
    put($s, '00002_b.sql', "SELECT 1;\n");
    ($rc, $out) = migrate($s);
    is($rc, 1, 'duplicate versions refused');
    like($out, qr/duplicate migration version 0002: 0002_a\.sql and 00002_b\.sql|duplicate migration version 0002: 00002_b\.sql and 0002_a\.sql/,
         'both files named') or diag($out);
    is(sql($s, 'SELECT max(version) FROM schema_migrations'), '1', 'nothing applied');
};

subtest 'configuration errors' => sub {
    my $s = setup(no_pg => 1);
    my ($rc, $out) = migrate($s);
    is($rc, 1, 'no postgres block: exits 1');
    like($out, qr/migrate needs PostgreSQL: \S+ has no postgres \{ dsn/, 'says why');
    ($rc, $out) = migrate($s, 'bogus');
    is($rc, 2, 'unknown subcommand is a usage error');
    like($out, qr/usage: mailerd .*migrate \[status\]/, 'with usage');

    $s = setup();
    remove_tree($s->{mdir});
    ($rc, $out) = migrate($s);
    is($rc, 1, 'missing migrations_dir: exits 1');
    like($out, qr/cannot open the migrations directory \S+: No such file/, 'says why');
};

subtest 'migrate status' => sub {
    my $s = setup();
    put($s, '0002_second.sql', "CREATE TABLE second (id int);\n");
    my ($rc, $out) = migrate($s, 'status');
    is($rc, 0, 'status on an empty database exits 0') or diag($out);
    like($out, qr/^0001\s+pending\s+-\s+0001_identity\.sql$/m, '0001 pending');
    like($out, qr/^0002\s+pending\s+-\s+0002_second\.sql$/m, '0002 pending');
    like($out, qr/schema at version 0000, \S+ has 0002: 2 pending/, 'summary');
    is(sql($s, "SELECT to_regclass('schema_migrations') IS NULL"), 't', 'status changes nothing');

    unlink "$s->{mdir}/0002_second.sql";
    ($rc, $out) = migrate($s);
    is($rc, 0, 'migrate') or diag($out);
    put($s, '0002_second.sql', "CREATE TABLE second (id int);\n");
    ($rc, $out) = migrate($s, 'status');
    is($rc, 0, 'status exits 0');
    like($out, qr/^0001\s+applied\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+0001_identity\.sql$/m, '0001 applied, with its time');
    like($out, qr/^0002\s+pending/m, '0002 pending');
    like($out, qr/schema at version 0001, \S+ has 0002: 1 pending/, 'summary');

    ($rc, $out) = migrate($s);
    is($rc, 0, 'migrate') or diag($out);
    unlink "$s->{mdir}/0002_second.sql";
    ($rc, $out) = migrate($s, 'status');
    is($rc, 0, 'status exits 0');
    like($out, qr/^0002\s+applied\s+\S+\s+\(no file: 0002_second\.sql\)/m, 'an applied migration without a file is shown');
    ($rc, $out) = migrate($s);
    is($rc, 0, 'migrate with a missing applied file only warns') or diag($out);
    like($out, qr/warning: migration 0002_second is applied but has no file/, 'warns');
    like($out, qr/schema is current at version 0002/, 'and is current');
};

subtest 'a migration cannot leak session settings' => sub {
    my $s = setup();
    put($s, '0002_other.sql', "CREATE SCHEMA other;\nSET search_path = other;\nCREATE TABLE in_other (id int);\n");
    put($s, '0003_after.sql', "CREATE TABLE in_public (id int);\n");
    my ($rc, $out) = migrate($s);
    is($rc, 0, 'applied') or diag($out);
    is(sql($s, 'SELECT string_agg(version::text, \',\' ORDER BY version) FROM public.schema_migrations'), '1,2,3',
       'every row went to the schema_migrations found at the start');
    is(sql($s, "SELECT to_regclass('other.in_other') IS NOT NULL AND to_regclass('public.in_public') IS NOT NULL"),
       't', "0002's search_path did not carry over into 0003");
};

subtest 'concurrent runs serialise' => sub {
    my $s = setup();
    # Slow enough that the second run starts while the first holds the lock.
    put($s, '0002_slow.sql', "CREATE TABLE slow (id int);\nSELECT pg_sleep(1);\n");
    my $t = $s->{t};
    my @kids;
    for my $i (1, 2) {
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            open(STDOUT, '>', $t->dir . "/conc$i.out");
            open(STDERR, '>&', \*STDOUT);
            exec(MailerdTest::bin_path(), '-p', $t->dir, '-c', $t->dir . '/mailerd.conf', 'migrate') or exit 127;
        }
        push @kids, $pid;
    }
    my %st;
    wait_for(sub {
        for my $p (@kids) {
            next if exists $st{$p};
            $st{$p} = $? >> 8 if waitpid($p, WNOHANG) == $p;
        }
        return keys(%st) == 2;
    }, 20);
    my @out = map { slurp($t->dir . "/conc$_.out") } 1, 2;
    ok(!grep({ /Sanitizer|runtime error:/ } @out), 'no sanitizer report') or diag(join("\n---\n", @out));
    is($st{ $kids[0] }, 0, 'first run exits 0') or diag($out[0]);
    is($st{ $kids[1] }, 0, 'second run exits 0') or diag($out[1]);
    is(scalar(grep { /^applied 0001_identity\.sql/m } @out), 1, '0001 applied by exactly one run');
    is(scalar(grep { /^applied 0002_slow\.sql/m } @out), 1, '0002 applied by exactly one run');
    is(scalar(grep { /schema is current at version 0002/ } @out), 1, 'the other found the schema current')
      or diag(join("\n---\n", @out));
    is(sql($s, 'SELECT string_agg(version::text, \',\' ORDER BY version) FROM schema_migrations'), '1,2',
       'each migration recorded once');
};

# Migration 0011: message_content has no foreign keys; the purges its keys
# cascaded are statement triggers now, and the accept's tenant check is
# mailerd_lock_tenants (locks like the key check did, fails with its SQLSTATE).
subtest 'message_content without foreign keys (0011)' => sub {
    my $s = setup(all => 1);
    my ($rc, $out) = migrate($s);
    is($rc, 0, 'migrate exits 0') or diag($out);
    is(sql($s, "SELECT count(*) FROM pg_constraint WHERE conrelid = 'message_content'::regclass"
           . " AND contype = 'f'"), '0', 'no foreign key on message_content');
    my @t = map { sql($s, "INSERT INTO tenants (id, name) VALUES (gen_random_uuid(), 't$_') RETURNING id") } 1, 2;
    my $batch = sql($s, "INSERT INTO batches (id, tenant_id, accepted) VALUES (gen_random_uuid(),"
                    . " '$t[0]', 2) RETURNING id");
    my $n = 0;
    my $msg = sub {
        my ($tenant, $bid) = @_;
        $n++;
        sql($s, "INSERT INTO messages (id, tenant_id, batch_id, status, from_addr, to_addr, text_body)"
            . " VALUES (gen_random_uuid(), '$tenant', " . ($bid ? "'$bid'" : 'NULL')
            . ", 'queued', 'a\@example.com', 'r$n\@example.com', 'x') RETURNING id");
    };
    my @in_batch = map { $msg->($t[0], $batch) } 1, 2;
    my $alone = $msg->($t[0]);
    my $other = $msg->($t[1]);
    sql($s, "INSERT INTO events (id, tenant_id, message_id, type) VALUES (gen_random_uuid(), '$t[0]',"
        . " '$alone', 'queued'), (gen_random_uuid(), '$t[1]', '$other', 'queued')");
    sql($s, "DELETE FROM batches WHERE id = '$batch'");
    is(sql($s, "SELECT string_agg(id::text, ',' ORDER BY id) FROM message_content"),
       join(',', sort($alone, $other)), "a batch's delete takes its messages along, and only them");
    is(sql($s, 'SELECT count(*) FROM deliveries'), '2', '... and their delivery state');
    sql($s, "DELETE FROM tenants WHERE id = '$t[0]'");
    is(sql($s, "SELECT string_agg(id::text, ',') FROM message_content"), $other,
       "a tenant's purge takes its messages along, and only them");
    is(sql($s, "SELECT string_agg(message_id::text, ',') FROM deliveries"), $other,
       '... and their delivery state');
    is(sql($s, "SELECT string_agg(message_id::text, ',') FROM events"), $other, '... and its events');

    like(sql($s, "SELECT mailerd_lock_tenants(ARRAY['$t[1]'::uuid, '$t[1]'::uuid, NULL])"), qr/^t$/,
         'mailerd_lock_tenants passes for an existing tenant (duplicates and NULL ignored)');
    my ($frc, $fout) = psql_db($s->{db}, "SELECT mailerd_lock_tenants(ARRAY['$t[1]'::uuid, '$t[0]'::uuid])");
    ok($frc != 0 && $fout =~ /tenant does not exist/, 'it fails when one tenant is gone') or diag($fout);
    ($frc, $fout) = psql_db($s->{db}, "DO \$\$ BEGIN PERFORM mailerd_lock_tenants(ARRAY['$t[0]'::uuid]);"
                            . " EXCEPTION WHEN OTHERS THEN RAISE NOTICE 'sqlstate %', SQLSTATE; END \$\$");
    like($fout, qr/sqlstate 23503/, 'with the foreign key violation SQLSTATE') or diag($fout);

    # The lock holds off a purge until the accepting transaction ends.
    my $pid = open(my $holder, '-|') // die "fork: $!";
    if ($pid == 0) {
        open(STDERR, '>&', \*STDOUT);
        exec('psql', '-X', '-q', '-A', '-t', '-h', '127.0.0.1', '-p', $pg->port, '-U', 'mailerd',
             '-d', $s->{db}, '-c',
             "BEGIN; SELECT mailerd_lock_tenants(ARRAY['$t[1]'::uuid]); SELECT pg_sleep(2); COMMIT;") or exit 127;
    }
    ok(wait_for(sub { sql($s, "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
                         . " WHERE c.relname = 'tenants' AND l.mode = 'RowShareLock' AND l.pid <> pg_backend_pid()") ne '0' }, 5),
       'an accepting transaction holds its tenant');
    ($frc, $fout) = psql_db($s->{db}, "SET lock_timeout = '300ms'; DELETE FROM tenants WHERE id = '$t[1]'");
    ok($frc != 0 && $fout =~ /lock timeout/, 'a purge of that tenant waits for it') or diag($fout);
    { local $/; <$holder> }
    close $holder;
    sql($s, "DELETE FROM tenants WHERE id = '$t[1]'");
    is(sql($s, 'SELECT count(*) FROM message_content') . '/' . sql($s, 'SELECT count(*) FROM deliveries'),
       '0/0', 'after it ends, the purge goes through with the messages');
};

# Migration 0012: the tenant lock's queries keep one generic plan per session.
# With the default plan_cache_mode, PL/pgSQL planned its `id = ANY (ids)` query
# again on every call (a custom plan, showing the array as a constant); the
# plans are read here with auto_explain, loaded into this session only.
subtest 'mailerd_lock_tenants plans once (0012)' => sub {
    my $s = setup(all => 1);
    my ($rc, $out) = migrate($s);
    is($rc, 0, 'migrate exits 0') or diag($out);
    my $t = sql($s, "INSERT INTO tenants (id, name) VALUES (gen_random_uuid(), 't') RETURNING id");
    ($rc, $out) = psql_db($s->{db}, "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0;"
                          . " SET auto_explain.log_nested_statements = on; SET client_min_messages = log;"
                          . " SELECT mailerd_lock_tenants(ARRAY['$t'::uuid]) FROM generate_series(1, 8)");
    is($rc, 0, 'eight calls in one session') or diag($out);
    my $generic = () = $out =~ /Index Cond: \(id = ANY \(\$1\)\)/g;
    my $custom = () = $out =~ /Index Cond: \(id = ANY \('\{/g;
    is($custom, 0, 'no call planned the tenant lookup for its own array (no custom plan)');
    cmp_ok($generic, '>=', 8, 'every call ran the generic plan') or diag($out);
};

# Migration 0010: which tables mailerd_refresh_stats analyzes (mailerd's own
# calls are shown by t/70).
subtest 'mailerd_refresh_stats (0010)' => sub {
    my $s = setup(all => 1);
    my ($rc, $out) = migrate($s);
    is($rc, 0, 'migrate exits 0') or diag($out);
    sql($s, 'ALTER TABLE tenants SET (autovacuum_enabled = false)');
    sql($s, "INSERT INTO tenants (id, name) SELECT gen_random_uuid(), 't' || g FROM generate_series(1, 2000) g");
    my $refresh = sub { sql($s, "SELECT coalesce(string_agg(t, ',' ORDER BY t), '') FROM mailerd_refresh_stats($_[0], $_[1]) t") };
    like($refresh->(1000, 1000000), qr/(?:^|,)public\.tenants(?:,|$)/, 'a never-analyzed table with 2,000 new rows is analyzed');
    like(sql($s, "SELECT reltuples FROM pg_class WHERE relname = 'tenants'"), qr/^2000$/, 'its statistics say 2,000 rows');
    is($refresh->(1000, 1000000), '', 'called again at once: nothing changed, nothing analyzed');
    sql($s, 'UPDATE tenants SET name = name || \'x\'');
    is($refresh->(3000, 1000000), '', 'changes below min_changes: not analyzed');
    is($refresh->(1000, 2000), '', 'analyzed at max_rows or more: left to autovacuum');
    sql($s, 'UPDATE tenants SET name = name || \'y\'');
    sql($s, "CREATE ROLE $s->{db}_reader LOGIN");
    is(scalar psql_db($s->{db}, "SELECT coalesce(string_agg(t, ','), '') FROM mailerd_refresh_stats(1000, 1000000) t",
                      "$s->{db}_reader"), '', "a role that does not own the tables analyzes nothing (ANALYZE would skip them)");
    like($refresh->(1000, 1000000), qr/(?:^|,)public\.tenants(?:,|$)/, 'changed by its analyzed size, below max_rows: analyzed');
};

done_testing;
