package MailerdTest;
# Integration-test harness: each test file writes its own small config, starts
# mailerd in a temp dir on free loopback ports, talks to it over real sockets, and
# stops it gracefully. stop() fails the test if the logs hold an alert/emerg line
# or a sanitizer report, so every file also tests clean shutdown.
use strict;
use warnings;
use Exporter 'import';
use File::Temp qw(tempdir);
use File::Spec;
use File::Basename qw(dirname);
use Cwd qw(abs_path);
use IO::Socket::INET;
use IO::Select;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);
use Test::More;

our @EXPORT_OK = qw(free_port wait_for http_request parse_response src_dir bin_path slurp);

sub src_dir { abs_path(dirname(__FILE__) . '/../..') }

# Skips the whole test file unless a PostgreSQL server and redis-server are
# installed: what every test of the whole stack needs.
sub skip_without_store {
    Test::More::plan(skip_all => 'no PostgreSQL server binaries')
      unless -x (($ENV{MAILERD_PGBIN} // '/usr/lib/postgresql/15/bin') . '/pg_ctl');
    Test::More::plan(skip_all => 'redis-server not installed')
      unless grep { -x "$_/redis-server" } split /:/, $ENV{PATH};
}

sub bin_path {
    return $ENV{MAILERD_BIN} if $ENV{MAILERD_BIN};
    my $b = src_dir() . '/build/src/mailerd';
    return $b;
}

sub slurp {
    my ($f) = @_;
    open(my $fh, '<', $f) or return '';
    local $/;
    my $s = <$fh>;
    return $s // '';
}

# A port the kernel just gave us and released; good enough on a loopback test box.
# A port is released before its user binds it, so the kernel may hand the same
# one out again: never return a port twice in one process (t/90 once got the
# same one for the mock ESP's API and control listeners).
my %ports_given;
sub free_port {
    for (1 .. 100) {
        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp',
                                      Listen => 1, ReuseAddr => 1) or die "free_port: $!";
        my $p = $s->sockport;
        close $s;
        return $p unless $ports_given{$p}++;
    }
    die "free_port: no new port in 100 tries";
}

# Polls cond every 50 ms until it returns true or timeout seconds pass.
sub wait_for {
    my ($cond, $timeout) = @_;
    $timeout //= 10;
    my $deadline = time + $timeout;
    while (time < $deadline) {
        my $r = $cond->();
        return $r if $r;
        sleep 0.05;
    }
    return $cond->();
}

sub new {
    my ($class, %o) = @_;
    my $dir = tempdir('mailerd-t-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{MAILERD_KEEP});
    my $self = bless { dir => $dir, port => free_port(), %o }, $class;
    mkdir "$dir/logs";
    return $self;
}

sub dir  { $_[0]{dir} }
sub port { $_[0]{port} }
sub url  { "http://127.0.0.1:$_[0]{port}" }
sub pid  { $_[0]{pid} }

# The default config for tests: one block per context, overridable piecemeal.
# %main and %http add or replace directives (value undef drops one).
sub conf_text {
    my ($self, %o) = @_;
    my %main = (
        worker_processes => 2,
        pid              => 'mailerd.pid',
        error_log        => 'logs/error.log info',
        shutdown_timeout => '10s',
        %{ $o{main} // {} },
    );
    my %http = (
        listen             => "127.0.0.1:$self->{port}",
        access_log         => 'logs/access.log',
        %{ $o{http} // {} },
    );
    my $s = "# written by t/lib/MailerdTest.pm\n";
    for my $k (sort keys %main) {
        next unless defined $main{$k};
        $s .= "$k $main{$k};\n";
    }
    $s .= $o{main_extra} // '';
    $s .= "http {\n";
    for my $k (sort keys %http) {
        next unless defined $http{$k};
        for my $v (ref $http{$k} ? @{ $http{$k} } : ($http{$k})) {
            $s .= "    $k $v;\n";
        }
    }
    $s .= $o{http_extra} // '';
    $s .= "}\n";
    return $s;
}

sub write_conf {
    my ($self, $text, $name) = @_;
    $name //= 'mailerd.conf';
    my $f = "$self->{dir}/$name";
    open(my $fh, '>', $f) or die "$f: $!";
    print $fh $text;
    close $fh;
    $self->{conf} = $f if $name eq 'mailerd.conf';
    return $f;
}

# Runs `mailerd ARGS` to completion; returns (exit code, stdout+stderr).
sub run_cmd {
    my ($self, @args) = @_;
    my $out = "$self->{dir}/cmd.out";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open(STDOUT, '>', $out); open(STDERR, '>&', \*STDOUT);
        exec(bin_path(), @args) or exit 127;
    }
    waitpid($pid, 0);
    return ($? >> 8, slurp($out));
}

# Starts mailerd with the config written by write_conf (or conf_text(%o) if none)
# and waits until /health answers. Extra environment in $o{env}.
sub start {
    my ($self, %o) = @_;
    $self->write_conf($self->conf_text(%o)) unless $self->{conf} && !$o{rewrite};
    my $stderr = "$self->{dir}/logs/stderr.log";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open(STDOUT, '>>', $stderr); open(STDERR, '>>', $stderr);
        %ENV = (%ENV, %{ $o{env} // {} });
        exec(bin_path(), '-p', $self->{dir}, '-c', $self->{conf}, @{ $o{args} // [] }) or exit 127;
    }
    $self->{pid} = $pid;
    return $self if $o{no_wait};
    my $up = wait_for(sub {
        my $r = eval { $self->request('GET', '/health') };
        return $r && $r->{status} == 200;
    }, $o{timeout} // 15);
    unless ($up) {
        diag("mailerd did not come up; stderr:\n" . slurp($stderr) . "\nerror log:\n"
             . slurp("$self->{dir}/logs/error.log"));
        die "mailerd did not start";
    }
    return $self;
}

sub running {
    my ($self) = @_;
    return 0 unless $self->{pid};
    my $r = waitpid($self->{pid}, WNOHANG);
    if ($r == $self->{pid}) {
        $self->{exit_status} = $?;
        delete $self->{pid};
        return 0;
    }
    return 1;
}

# Waits for the master to exit; returns its wait status, or undef on timeout.
sub wait_exit {
    my ($self, $timeout) = @_;
    my $pid = $self->{pid} or return $self->{exit_status};
    my $st;
    wait_for(sub {
        my $r = waitpid($pid, WNOHANG);
        if ($r == $pid) { $st = $?; return 1 }
        return 0;
    }, $timeout // 30);
    if (defined $st) {
        delete $self->{pid};
        $self->{exit_status} = $st;
    }
    return $st;
}

sub signal {
    my ($self, $sig) = @_;
    kill($sig, $self->{pid}) if $self->{pid};
}

# Worker pids: the master's children, from /proc.
sub worker_pids {
    my ($self) = @_;
    my $pid = $self->{pid} or return ();
    my @kids;
    for my $t (glob("/proc/$pid/task/*/children")) {
        push @kids, split ' ', slurp($t);
    }
    return sort { $a <=> $b } @kids;
}

sub error_log { slurp("$_[0]{dir}/logs/error.log") }
sub access_log { slurp("$_[0]{dir}/logs/access.log") }
sub stderr_log { slurp("$_[0]{dir}/logs/stderr.log") }

# Lines of the error log as decoded JSON objects (lines that are not JSON are
# returned as {raw => line} so a test can fail on them).
sub error_log_entries {
    my ($self) = @_;
    require JSON::PP;
    my @e;
    for my $l (split /\n/, $self->error_log) {
        my $j = eval { JSON::PP::decode_json($l) };
        push @e, $j // { raw => $l };
    }
    return @e;
}

# The error-log entries whose msg matches $re (and, given, whose channel is
# $channel).
sub logged {
    my ($self, $re, $channel) = @_;
    return grep { ($_->{msg} // '') =~ $re && (!defined $channel || ($_->{channel} // '') eq $channel) }
      $self->error_log_entries;
}

# How many processes wrote the entries logged() finds.
sub logged_by {
    my ($self, @a) = @_;
    my %pid = map { ($_->{pid} // 0) => 1 } $self->logged(@a);
    return scalar keys %pid;
}

# Problems that must never appear: alerts, emergencies, sanitizer reports.
sub log_problems {
    my ($self) = @_;
    my @p;
    for my $l (split /\n/, $self->error_log . "\n" . $self->stderr_log) {
        push @p, $l if $l =~ /"level":"(?:alert|emerg)"|AddressSanitizer|LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer/;
    }
    return @p;
}

# Graceful stop (SIGQUIT), then the log check. Returns the master's wait status.
sub stop {
    my ($self, %o) = @_;
    return $self->{exit_status} unless $self->{pid};
    $self->signal($o{signal} // 'QUIT');
    my $st = $self->wait_exit($o{timeout} // 30);
    if (!defined $st) {
        fail("mailerd stops within the timeout");
        kill 'KILL', $self->{pid};
        waitpid($self->{pid}, 0);
        delete $self->{pid};
        return;
    }
    unless ($o{no_check}) {
        my @p = $self->log_problems;
        ok(!@p, 'no alert, emerg or sanitizer report in the logs') or diag(join("\n", @p));
        is($st, 0, 'master exits with status 0') unless $o{any_status};
    }
    return $st;
}

sub DESTROY {
    my ($self) = @_;
    if ($self->{pid}) {
        kill 'KILL', $self->{pid};
        # Workers die with the master's channel; make sure of it.
        waitpid($self->{pid}, 0);
    }
}

# --- HTTP over raw sockets ---------------------------------------------------

sub connect {
    my ($self, %o) = @_;
    return IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $o{port} // $self->{port},
                                 Proto => 'tcp', Timeout => 5);
}

# One request on a fresh connection (Connection: close). Returns a response hash.
sub request {
    my ($self, $method, $path, %o) = @_;
    my $sock = $self->connect or die "connect: $!";
    my $body = $o{body} // '';
    my $h = $o{headers} // {};
    my $req = "$method $path HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
    $req .= "$_: $h->{$_}\r\n" for sort keys %$h;
    $req .= "Content-Length: " . length($body) . "\r\n" if length $body || $method =~ /^(POST|PUT|PATCH)$/;
    $req .= "\r\n$body";
    print $sock $req;
    my $raw = read_all($sock, $o{timeout} // 10);
    close $sock;
    my ($resp) = parse_response($raw, $method eq 'HEAD');
    die "no complete response to $method $path (got: " . substr($raw, 0, 200) . ")" unless $resp;
    return $resp;
}

# Reads until EOF or timeout; returns what came.
sub read_all {
    my ($sock, $timeout) = @_;
    my $sel = IO::Select->new($sock);
    my $buf = '';
    my $deadline = time + ($timeout // 10);
    while (time < $deadline) {
        last unless $sel->can_read($deadline - time);
        my $n = sysread($sock, $buf, 65536, length $buf);
        last unless $n;
    }
    return $buf;
}

# Reads until n complete responses are in, EOF or timeout.
sub read_responses {
    my ($sock, $n, $timeout, $head) = @_;
    my $sel = IO::Select->new($sock);
    my $buf = '';
    my @r;
    my $deadline = time + ($timeout // 10);
    while (@r < $n && time < $deadline) {
        while (@r < $n) {
            my ($resp, $used) = parse_response($buf, $head);
            last unless $resp;
            push @r, $resp;
            substr($buf, 0, $used, '');
        }
        last if @r >= $n;
        last unless $sel->can_read($deadline - time);
        my $got = sysread($sock, $buf, 65536, length $buf);
        last unless $got;
    }
    while (@r < $n) {
        my ($resp, $used) = parse_response($buf, $head);
        last unless $resp;
        push @r, $resp;
        substr($buf, 0, $used, '');
    }
    return @r;
}

# Parses one response at the start of $raw. Returns (hash, bytes used) or ().
# The hash: status, reason, headers (lower-cased names; repeated ones joined by ", "),
# body, json (decoded when the body is JSON).
sub parse_response {
    my ($raw, $head_only) = @_;
    my $end = index($raw, "\r\n\r\n");
    return () if $end < 0;
    my ($line, @hl) = split /\r\n/, substr($raw, 0, $end);
    my ($status, $reason) = $line =~ m{^HTTP/1\.[01] (\d{3}) ?(.*)$} or return ();
    my %h;
    for (@hl) {
        my ($k, $v) = /^([^:]+):\s*(.*)$/ or next;
        $k = lc $k;
        $h{$k} = exists $h{$k} ? "$h{$k}, $v" : $v;
    }
    my $pos = $end + 4;
    my $body = '';
    if ($head_only || $status == 204 || $status == 304 || $status =~ /^1/) {
    } elsif (($h{'transfer-encoding'} // '') =~ /chunked/i) {
        while (1) {
            my $e = index($raw, "\r\n", $pos);
            return () if $e < 0;
            my $size = hex(substr($raw, $pos, $e - $pos));
            $pos = $e + 2;
            if ($size == 0) {
                my $t = index($raw, "\r\n", $pos);
                return () if $t < 0;
                $pos = $t + 2;
                last;
            }
            return () if length($raw) < $pos + $size + 2;
            $body .= substr($raw, $pos, $size);
            $pos += $size + 2;
        }
    } elsif (defined $h{'content-length'}) {
        return () if length($raw) < $pos + $h{'content-length'};
        $body = substr($raw, $pos, $h{'content-length'});
        $pos += $h{'content-length'};
    } else {
        $body = substr($raw, $pos);
        $pos = length $raw;
    }
    my %r = (status => $status, reason => $reason, headers => \%h, body => $body);
    if (($h{'content-type'} // '') =~ m{^application/json}) {
        require JSON::PP;
        $r{json} = eval { JSON::PP::decode_json($body) };
    }
    return (\%r, $pos);
}

sub http_request { my $t = shift; $t->request(@_) }


# --- the whole stack (issue 4 on) -------------------------------------------------
#
# MailerdTest->stack(%o): private PostgreSQL + Redis (MailerdStore), `mailerd
# migrate`, mailerd started with both and an admin token file, /ready polled to
# 200, and $o{tenants} (default 1) tenants each with one API key. Returns a hash:
#   { t => MailerdTest, pg => MailerdStore, redis => MailerdStore, admin => token,
#     tenants => [ { id => ..., key => secret }, ... ] }
# Options: main_extra / http_extra (config text added inside main / http), main
# and http (directive hashes as conf_text takes them), pool_size (default 4),
# pg_extra (directives added inside the postgres block, each ending in ";\n"),
# workers (default 2), env (for start), redis_address (what mailerd connects to
# instead of the Redis itself: a proxy). Keep the returned hash alive as long as
# the servers are needed: their destructors stop them.
sub stack {
    my ($class, %o) = @_;
    require MailerdStore;
    require JSON::PP;
    my $pg = MailerdStore->pg;
    my $redis = MailerdStore->redis;
    my $t = $class->new;
    my $admin = join('', map { ('a' .. 'z', 'A' .. 'Z', 0 .. 9)[rand 62] } 1 .. 40);
    {
        open(my $fh, '>', $t->dir . '/admin.token') or die $!;
        print $fh "$admin\n";
        close $fh;
        chmod 0600, $t->dir . '/admin.token';
    }
    my $extra = sprintf(qq{postgres {\n    dsn "%s";\n    pool_size %d;\n%s}\n}
                      . qq{redis {\n    address %s;\n}\n}
                      . qq{migrations_dir %s/migrations;\nadmin_token_file admin.token;\n},
                        $pg->dsn, $o{pool_size} // 4, $o{pg_extra} // '',
                        $o{redis_address} // $redis->addr, src_dir());
    $t->write_conf($t->conf_text(main => { worker_processes => $o{workers} // 2, %{ $o{main} // {} } },
                                 http => $o{http} // {},
                                 main_extra => $extra . ($o{main_extra} // ''),
                                 http_extra => $o{http_extra} // ''));
    my ($rc, $out) = $t->run_cmd('-p', $t->dir, '-c', $t->dir . '/mailerd.conf', 'migrate');
    die "mailerd migrate failed: $out" if $rc;
    $t->start(env => $o{env} // {});
    wait_for(sub { (eval { $t->request('GET', '/ready')->{status} } // 0) == 200 }, 15)
      or die "mailerd is not ready: " . (eval { $t->request('GET', '/ready')->{body} } // $@);
    my $s = { t => $t, pg => $pg, redis => $redis, admin => $admin, tenants => [] };
    for my $i (1 .. ($o{tenants} // 1)) {
        push @{ $s->{tenants} }, $class->stack_tenant($s, "tenant$i");
    }
    return $s;
}

# Creates a tenant named $name with one key through the admin API of a stack.
# Returns { id => tenant id, key => secret }.
sub stack_tenant {
    my ($class, $s, $name) = @_;
    require JSON::PP;
    my %h = (Authorization => "Bearer $s->{admin}", 'Content-Type' => 'application/json');
    my $r = $s->{t}->request('POST', '/v1/admin/tenants', headers => \%h,
                             body => JSON::PP::encode_json({ name => $name }));
    die "tenant $name: $r->{status} $r->{body}" unless $r->{status} == 201;
    my $id = $r->{json}{id};
    $r = $s->{t}->request('POST', "/v1/admin/tenants/$id/keys", headers => \%h, body => '{}');
    die "key for $name: $r->{status} $r->{body}" unless $r->{status} == 201;
    return { id => $id, key => $r->{json}{secret} };
}

# --- helpers for queue and API tests (issue 5 on) ------------------------------------

# One JSON request with a bearer token (undef: none); $body is encoded when it is
# a reference, sent as is otherwise. Returns the response hash of request().
sub json_request {
    my ($self, $token, $method, $path, $body, %o) = @_;
    require JSON::PP;
    my %h = defined $token ? (Authorization => "Bearer $token") : ();
    if (defined $body) {
        $h{'Content-Type'} = 'application/json';
        $body = JSON::PP->new->canonical->encode($body) if ref $body;
    }
    return $self->request($method, $path, headers => \%h, defined $body ? (body => $body) : (), %o);
}

# Accepts $n messages for API key $key through POST /v1/messages/batch (500 per
# request, waiting out 429/503 back-pressure for up to 60 s): recipients
# "$tag$k-$i@example.com", subject "$prefix $tag $k" so tests can select them
# with LIKE '$prefix $tag %'. Returns the accepted ids; dies on any other answer.
sub send_many {
    my ($self, $key, $n, $tag, %o) = @_;
    my $prefix = $o{prefix} // 'many';
    my @ids;
    my $k = 0;
    my $deadline = time + 60;
    while (@ids < $n) {
        die "send_many: no progress for 60 s" if time > $deadline;
        my $m = $n - @ids > 500 ? 500 : $n - @ids;
        my $r = $self->json_request($key, 'POST', '/v1/messages/batch', {
            from => $o{from} // 'Acme <many@acme.example>', subject => "$prefix $tag $k",
            text => "body $k", recipients => [ map { { to => "$tag$k-$_\@example.com" } } 1 .. $m ] },
            timeout => 30);
        if ($r->{status} == 429 || $r->{status} == 503) { sleep 0.2; next } # back-pressure
        die "batch: $r->{status} $r->{body}" unless $r->{status} == 202;
        push @ids, map { $_->{id} } @{ $r->{json}{accepted} };
        $k++;
        $deadline = time + 60;
    }
    return @ids;
}

# Rewrites the config with $edit (a sub taking and returning its text), sends
# SIGHUP and waits until every worker has been replaced. Returns the new worker
# pids (array ref), or undef when the workers were not all replaced in time.
sub reload_conf {
    my ($self, $edit, $timeout) = @_;
    my @old = $self->worker_pids;
    my %old = map { $_ => 1 } @old;
    $self->write_conf($edit->(slurp($self->{conf})));
    $self->signal('HUP');
    return wait_for(sub {
        my @now = $self->worker_pids;
        return (@now && @now >= @old && !grep { $old{$_} } @now) ? \@now : undef;
    }, $timeout // 15);
}

# A sink journal ("<message id> <attempt>" per delivery, see the sink's journal
# directive) as { id => [attempt, ...] }; relative names are under the test dir.
sub sink_journal {
    my ($self, $file) = @_;
    $file = "$self->{dir}/$file" unless $file =~ m{^/};
    my %j;
    for my $l (split /\n/, slurp($file)) {
        my ($id, $n) = split ' ', $l;
        push @{ $j{$id} }, $n if defined $id;
    }
    return \%j;
}


# --- chaos helpers (issue 5: t/53, t/55) -----------------------------------------------

# MailerdTest->stack_peer($s, %o): one more mailerd on the stores of the stack $s
# (same PostgreSQL, Redis and admin token; its own dir, port and logs; no
# migrate). Options as stack takes them: main_extra, http_extra, main, http,
# pool_size, workers, env. Returns the started, ready MailerdTest; keep it (and
# $s) alive while needed.
sub stack_peer {
    my ($class, $s, %o) = @_;
    my $t = $class->new;
    {
        open(my $fh, '>', $t->dir . '/admin.token') or die $!;
        print $fh "$s->{admin}\n";
        close $fh;
        chmod 0600, $t->dir . '/admin.token';
    }
    my $extra = sprintf(qq{postgres {\n    dsn "%s";\n    pool_size %d;\n}\n}
                      . qq{redis {\n    address %s;\n}\n}
                      . qq{migrations_dir %s/migrations;\nadmin_token_file admin.token;\n},
                        $s->{pg}->dsn, $o{pool_size} // 4, $s->{redis}->addr, src_dir());
    $t->write_conf($t->conf_text(main => { worker_processes => $o{workers} // 2, %{ $o{main} // {} } },
                                 http => $o{http} // {},
                                 main_extra => $extra . ($o{main_extra} // ''),
                                 http_extra => $o{http_extra} // ''));
    $t->start(env => $o{env} // {});
    wait_for(sub { (eval { $t->request('GET', '/ready')->{status} } // 0) == 200 }, 15)
      or die "mailerd peer is not ready: " . (eval { $t->request('GET', '/ready')->{body} } // $@);
    return $t;
}

# Like a crash of the whole host: SIGKILL to the master and every worker at
# once (mailerd does not make a process group of its own, so the pids are
# listed from /proc). Reaps the master; returns the pids killed.
sub kill_all {
    my ($self) = @_;
    my $pid = $self->{pid} or return ();
    my @pids = ($pid, $self->worker_pids);
    kill 'KILL', @pids;
    waitpid($pid, 0);
    $self->{exit_status} = $?;
    delete $self->{pid};
    # The workers are not our children: wait until they are gone from /proc.
    wait_for(sub { !grep { -e "/proc/$_" && slurp("/proc/$_/stat") !~ /^\d+ \(.*\) Z/ } @pids[1 .. $#pids] }, 10);
    return @pids;
}

# Reads a sink journal ("<message id> <attempt>" per delivery). Returns a hash
# ref: message id => number of lines (deliveries). A missing file reads empty;
# a torn last line (a writer killed mid-write) is ignored.
sub read_journal {
    my ($file) = @_;
    my %n;
    open(my $fh, '<', $file) or return \%n;
    while (my $l = <$fh>) {
        next unless $l =~ /^([0-9a-f-]{36}) \d+\n\z/;
        $n{$1}++;
    }
    close $fh;
    return \%n;
}

# Starts a client in a child process that sends $o{total} messages through
# POST /v1/messages/batch, $o{batch} recipients a request (default 100), at
# about $o{rate} messages/s (0: as fast as it can), spreading the requests over
# the ports in $o{ports} (default: this instance's). Like a real application it
# retries a request refused with 429/5xx or lost on the connection, after
# 100 ms, until $o{deadline} seconds (default 300) have passed. Every id
# answered with 202 is appended to $o{file} as it comes (one a line, flushed),
# so the parent sees the progress; at the end "$o{file}.done" gets one line of
# counts (accepted, retried, by status). Priorities alternate between bulk and
# transactional per request unless $o{priority} is given. Returns the child's
# pid; reap it with sender_wait.
sub spawn_sender {
    my ($self, %o) = @_;
    my $file = $o{file} or die "spawn_sender: file";
    my @ports = @{ $o{ports} // [ $self->{port} ] };
    my $pid = fork // die "fork: $!";
    return $pid if $pid;
    # The child must never run the parent's destructors (they stop the servers).
    my $rc = eval {
        require JSON::PP;
        my $total = $o{total} // 1000;
        my $bs = $o{batch} // 100;
        my $rate = $o{rate} // 0;
        my $deadline = time + ($o{deadline} // 300);
        my $tag = $o{tag} // 'c';
        open(my $out, '>>', $file) or die "$file: $!";
        $out->autoflush(1);
        my %st;
        my ($retries, $accepted, $k) = (0, 0, 0);
        my $start = time;
        my $sent = 0;
        while ($sent < $total && time < $deadline) {
            my $n = $total - $sent < $bs ? $total - $sent : $bs;
            my $prio = $o{priority} // ($k % 2 ? 'transactional' : 'bulk');
            my $body = JSON::PP::encode_json({
                from => 'Chaos <chaos@acme.example>', subject => "chaos $tag $k", text => "chaos $k",
                priority => $prio,
                recipients => [ map { { to => "$tag$k-$_\@example.com" } } 1 .. $n ] });
            while (time < $deadline) {
                my $port = $ports[$k % @ports];
                my $r = eval {
                    local $self->{port} = $port;
                    $self->request('POST', '/v1/messages/batch', body => $body, timeout => 15,
                                   headers => { Authorization => "Bearer $o{key}",
                                                'Content-Type' => 'application/json' });
                };
                my $code = $r ? $r->{status} : 'conn';
                $st{$code}++;
                if ($r && $r->{status} == 202 && $r->{json}) {
                    my @ids = map { $_->{id} } @{ $r->{json}{accepted} // [] };
                    print $out map { "$_\n" } @ids;
                    $accepted += @ids;
                    last;
                }
                if ($r && $r->{status} != 429 && $r->{status} < 500) {
                    $st{"body$code"} //= substr($r->{body}, 0, 200);
                    last; # refused for good: not accepted, not retried
                }
                $retries++;
                sleep 0.1;
            }
            $sent += $n;
            $k++;
            if ($rate > 0) {
                my $due = $start + $sent / $rate;
                sleep($due - time) if $due > time;
            }
        }
        close $out;
        open(my $d, '>', "$file.done") or die $!;
        print $d "accepted=$accepted retries=$retries "
          . join(' ', map { "$_=$st{$_}" } sort keys %st) . "\n";
        close $d;
        0;
    };
    if (!defined $rc) {
        if (open(my $d, '>>', "$file.done")) { print $d "sender died: $@\n"; close $d }
        $rc = 1;
    }
    POSIX::_exit($rc);
}

# Reads the ids a spawn_sender child has got 202 for so far.
sub sender_ids {
    my ($file) = @_;
    open(my $fh, '<', $file) or return ();
    my @ids;
    while (my $l = <$fh>) {
        push @ids, $1 if $l =~ /^([0-9a-f-]{36})\n\z/;
    }
    close $fh;
    return @ids;
}

# Waits up to $timeout s for a spawn_sender child; kills it after that. Returns
# the summary line it wrote (or what went wrong).
sub sender_wait {
    my ($pid, $file, $timeout) = @_;
    my $done = wait_for(sub { waitpid($pid, WNOHANG) == $pid }, $timeout // 60);
    unless ($done) {
        kill 'KILL', $pid;
        waitpid($pid, 0);
        return "sender killed after ${\($timeout // 60)} s; " . slurp("$file.done");
    }
    my $s = slurp("$file.done");
    chomp $s;
    return $s;
}


# Why messages are not delivered: for a stack's $pg and $redis and some ids
# (the first $o{max} // 15 are looked at one by one) returns text with the
# status of all of them, each one's row, events and Redis coverage (live set,
# scheduled set), and the consumer group's view of both streams.
sub queue_diag {
    my ($pg, $redis, $ids, %o) = @_;
    my @ids = @$ids;
    my @few = grep { defined } @ids[0 .. (($o{max} // 15) - 1)];
    my $txt = '';
    my $q = sub { my ($sql) = @_; my ($rc, $out) = $pg->psql($sql, may_fail => 1); $rc ? "(psql: $out)" : $out };
    if (@few) {
        my $in = join(',', map { "'$_'" } @few);
        $txt .= "first " . scalar(@few) . " of " . scalar(@ids) . " ids: id|status|priority|attempts|lease_left_s|updated_ago_s|last_error|events\n";
        $txt .= $q->("SELECT m.id, m.status, m.priority, m.attempts,"
                     . " round(extract(epoch FROM m.lease_until - now())::numeric, 1),"
                     . " round(extract(epoch FROM now() - m.updated_at)::numeric, 1), m.last_error,"
                     . " (SELECT string_agg(e.type || coalesce(':' || (e.data->>'reason'), ''), ',' ORDER BY e.created_at, e.id)"
                     . "  FROM events e WHERE e.message_id = m.id)"
                     . " FROM messages m WHERE m.id IN ($in) ORDER BY m.id") . "\n";
        my $found = $q->("SELECT count(*) FROM messages WHERE id IN ($in)");
        $txt .= "rows found for them in messages: $found\n";
        for my $id (@few) {
            my $live = $redis->cli('SISMEMBER', 'mailerd:q:live', $id) // '?';
            my $st = $redis->cli('ZSCORE', 'mailerd:q:scheduled', "t:$id") // '';
            my $sb = $redis->cli('ZSCORE', 'mailerd:q:scheduled', "b:$id") // '';
            $txt .= "  redis $id: live=$live scheduled_t=" . ($st eq '' ? '-' : $st)
              . " scheduled_b=" . ($sb eq '' ? '-' : $sb) . "\n";
        }
    }
    $txt .= "all messages by status: " . join(', ', split /\n/, $q->("SELECT status || '=' || count(*) FROM messages GROUP BY status ORDER BY 1")) . "\n";
    for my $s (qw(mailerd:q:transactional mailerd:q:bulk)) {
        my $g = $redis->cli('XINFO', 'GROUPS', $s) // '(none)';
        $g =~ s/\n/ /g;
        my $p = $redis->cli('XPENDING', $s, 'mailerd') // '(none)';
        $p =~ s/\n/ /g;
        $txt .= "$s: XLEN " . ($redis->cli('XLEN', $s) // '?') . "; group: $g; pending: $p\n";
    }
    $txt .= "scheduled ZCARD " . ($redis->cli('ZCARD', 'mailerd:q:scheduled') // '?')
      . ", live SCARD " . ($redis->cli('SCARD', 'mailerd:q:live') // '?') . "\n";
    return $txt;
}

# The error log lines at warn level or above (the last $max, default 30), for diagnostics.
sub log_warnings {
    my ($self, $max) = @_;
    my @l = grep { /"level":"(?:warn|error|crit|alert|emerg)"/ } split /\n/, $self->error_log;
    $max //= 30;
    @l = @l[-$max .. -1] if @l > $max;
    return join("\n", @l);
}


# Freezes worker processes (SIGSTOP) at a moment they hold queue work, so a
# SIGKILL that follows hits them mid-batch, as a busy host would be hit. Asks
# the consumer group of both streams (XPENDING) what the consumers named after
# these pids ("host:pid") hold; when nothing, lets them go on (SIGCONT) and
# tries again 20 ms later, for up to $timeout s (default 15). Returns how many
# entries they hold, with the pids left stopped; 0 (pids running) on timeout.
# The caller kills them (or sends SIGCONT).
sub freeze_holding {
    my ($redis, $pids, $timeout) = @_;
    my $until = time + ($timeout // 15);
    while (time < $until) {
        kill 'STOP', @$pids;
        my $held = 0;
        for my $s (qw(mailerd:q:transactional mailerd:q:bulk)) {
            my @x = split /\n/, ($redis->cli('XPENDING', $s, 'mailerd') // '');
            my %c = @x > 3 ? @x[3 .. $#x] : ();
            for my $name (keys %c) {
                $held += $c{$name} if grep { $name =~ /\b$_$/ } @$pids;
            }
        }
        return $held if $held;
        kill 'CONT', @$pids;
        sleep 0.02;
    }
    return 0;
}

1;
