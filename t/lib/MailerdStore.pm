package MailerdStore;
# Private PostgreSQL and Redis servers for integration tests: each on a free
# loopback port under its own temp dir, stopped (and removed) by the object's
# destructor. PostgreSQL refuses to run as root, so when we are root the data
# directory is handed to the postgres user and the server runs as that user.
use strict;
use warnings;
use File::Temp qw(tempdir);
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);
use MailerdTest qw(free_port wait_for slurp);

my $PGBIN = $ENV{MAILERD_PGBIN} // '/usr/lib/postgresql/15/bin';

sub _as_pg {
    my @cmd = @_;
    return ($> == 0) ? ('runuser', '-u', 'postgres', '--', @cmd) : @cmd;
}

# Runs a command without a shell (arguments may hold any character); returns
# (exit code, stdout+stderr).
sub _run {
    my (@cmd) = @_;
    my $pid = open(my $fh, '-|') // die "fork: $!";
    if ($pid == 0) {
        open(STDERR, '>&', \*STDOUT);
        exec(@cmd) or exit 127;
    }
    local $/;
    my $out = <$fh> // '';
    close $fh;
    return ($? >> 8, $out);
}

# --- PostgreSQL ----------------------------------------------------------------

# MailerdStore->pg(%opts): initdb + start. Opts: db (default "mailerd").
sub pg {
    my ($class, %o) = @_;
    my $dir = tempdir('mailerd-pg-XXXXXX', TMPDIR => 1, CLEANUP => 0);
    chmod 0755, $dir;
    my $self = bless { kind => 'pg', dir => $dir, data => "$dir/data", port => free_port(),
                       db => $o{db} // 'mailerd', user => 'mailerd' }, $class;
    if ($> == 0) {
        my (undef, undef, $uid, $gid) = getpwnam('postgres') or die "no postgres user";
        chown $uid, $gid, $dir;
    }
    my ($rc, $out) = _run(_as_pg("$PGBIN/initdb", '-D', $self->{data}, '-U', 'postgres', '-A', 'trust',
                                 '--no-sync', '-E', 'UTF8', '--locale=C.UTF-8'));
    die "initdb failed: $out" if $rc;
    open(my $fh, '>>', "$self->{data}/postgresql.conf") or die $!;
    # Fast and throwaway: no fsync (durability is PostgreSQL's job, not the tests').
    print $fh "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
      . "max_connections = 200\nshared_buffers = 64MB\nlog_min_messages = warning\n";
    close $fh;
    $self->start;
    $self->psql_admin("CREATE ROLE mailerd LOGIN SUPERUSER");
    $self->psql_admin("CREATE DATABASE $self->{db} OWNER mailerd");
    return $self;
}

sub start {
    my ($self) = @_;
    return $self->_redis_start if $self->{kind} eq 'redis';
    my ($rc, $out) = _run(_as_pg("$PGBIN/pg_ctl", '-D', $self->{data}, '-l', "$self->{dir}/pg.log", '-w',
        '-t', '30', '-o', "-c listen_addresses=127.0.0.1 -p $self->{port} -k $self->{dir}", 'start'));
    die "pg_ctl start failed: $out\n" . slurp("$self->{dir}/pg.log") if $rc;
    $self->{running} = 1;
    return $self;
}

# mode: fast (default; disconnects clients) or immediate (like a crash).
sub stop {
    my ($self, $mode) = @_;
    return $self->_redis_stop if $self->{kind} eq 'redis';
    return unless $self->{running};
    _run(_as_pg("$PGBIN/pg_ctl", '-D', $self->{data}, '-m', $mode // 'fast', '-w', '-t', '30', 'stop'));
    $self->{running} = 0;
}

sub restart { my ($s, $m) = @_; $s->stop($m); $s->start }
sub port { $_[0]{port} }
sub dir  { $_[0]{dir} }

# A libpq keyword/value DSN (hostaddr: mailerd never resolves names with libpq).
sub dsn {
    my ($self) = @_;
    return "hostaddr=127.0.0.1 port=$self->{port} dbname=$self->{db} user=$self->{user}";
}

# Runs SQL with psql as the mailerd user; returns the output (tuples only, | separated).
sub psql {
    my ($self, $sql, %o) = @_;
    my ($rc, $out) = _run('psql', '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1',
                          '-p', $self->{port}, '-U', $o{user} // $self->{user}, '-d', $o{db} // $self->{db},
                          '-c', $sql);
    die "psql failed ($sql): $out" if $rc && !$o{may_fail};
    chomp $out;
    return wantarray ? ($rc, $out) : $out;
}

sub psql_admin { my ($s, $sql) = @_; $s->psql($sql, user => 'postgres', db => 'postgres') }

# --- Redis ---------------------------------------------------------------------

# MailerdStore->redis(%opts): opts: persist (appendonly on, for restart tests).
sub redis {
    my ($class, %o) = @_;
    my $dir = tempdir('mailerd-redis-XXXXXX', TMPDIR => 1, CLEANUP => 0);
    my $self = bless { kind => 'redis', dir => $dir, port => free_port(), persist => $o{persist} }, $class;
    $self->_redis_start;
    return $self;
}

sub _redis_start {
    my ($self) = @_;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open(STDOUT, '>>', "$self->{dir}/redis.log");
        open(STDERR, '>&', \*STDOUT);
        exec('redis-server', '--bind', '127.0.0.1', '--port', $self->{port}, '--dir', $self->{dir},
             '--save', '', '--appendonly', $self->{persist} ? 'yes' : 'no', '--daemonize', 'no',
             '--protected-mode', 'no') or exit 127;
    }
    $self->{pid} = $pid;
    my $up = wait_for(sub { ($self->cli('PING') // '') eq 'PONG' }, 15);
    die "redis did not start: " . slurp("$self->{dir}/redis.log") unless $up;
    $self->{running} = 1;
    return $self;
}

sub _redis_stop {
    my ($self) = @_;
    return unless $self->{pid};
    kill 'TERM', $self->{pid};
    waitpid($self->{pid}, 0);
    delete $self->{pid};
    $self->{running} = 0;
}

sub addr { "127.0.0.1:$_[0]{port}" }
sub url  { "redis://127.0.0.1:$_[0]{port}" }

# One command through redis-cli; returns its raw output, chomped.
sub cli {
    my ($self, @args) = @_;
    my ($rc, $out) = _run('redis-cli', '-h', '127.0.0.1', '-p', $self->{port}, @args);
    return undef if $rc;
    chomp $out;
    return $out;
}

# How many of @ids are members of the Redis set $set (SMISMEMBER, 500 at a time).
sub members_in {
    my ($self, $set, @ids) = @_;
    my $n = 0;
    for (my $i = 0; $i < @ids; $i += 500) {
        my $e = $i + 499 < $#ids ? $i + 499 : $#ids;
        my $out = $self->cli('SMISMEMBER', $set, @ids[$i .. $e]) // '';
        $n += () = $out =~ /^1$/mg;
    }
    return $n;
}

# A subscriber of its own on $channel (a socket speaking RESP); returns it once
# Redis confirmed the subscription.
sub subscriber {
    my ($self, $channel) = @_;
    require IO::Socket::INET;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{port}, Timeout => 5)
      or die "redis subscriber: $!";
    binmode $s;
    syswrite($s, sprintf("*2\r\n\$9\r\nSUBSCRIBE\r\n\$%d\r\n%s\r\n", length $channel, $channel));
    my $buf = '';
    wait_for(sub { sysread($s, $buf, 4096, length $buf) if _readable($s); $buf =~ /subscribe\r\n.*:1\r\n/s }, 5)
      or die "redis subscriber: no confirmation for $channel";
    return $s;
}

# The payloads a subscriber() received: waits up to $wait seconds for the first.
sub messages {
    my ($self, $s, $wait) = @_;
    my ($buf, @m) = ('');
    my $t0 = time;
    while (!@m && time - $t0 < $wait) {
        next if !_readable($s, $wait - (time - $t0));
        my $n = sysread($s, $buf, 65536, length $buf);
        last unless $n;
        pos($buf) = 0;
        @m = ();
        while ($buf =~ /\*3\r\n\$7\r\nmessage\r\n\$\d+\r\n[^\r]*\r\n\$(\d+)\r\n/g) {
            last if length($buf) < pos($buf) + $1;
            push @m, substr($buf, pos($buf), $1);
        }
    }
    return @m;
}

sub _readable {
    my ($s, $wait) = @_;
    my $rin = '';
    vec($rin, fileno($s), 1) = 1;
    return select(my $rout = $rin, undef, undef, $wait // 0.05) > 0;
}

sub DESTROY {
    my ($self) = @_;
    local $?;
    $self->stop('immediate');
    system('rm', '-rf', $self->{dir}) if $self->{dir} && !$ENV{MAILERD_KEEP};
}

1;
