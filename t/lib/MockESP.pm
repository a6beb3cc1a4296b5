package MockESP;
# Starts and stops tools/mock-esp for tests: a test CA and server certificates made
# with the openssl CLI, a TLS port and a control port on 127.0.0.1, known
# credentials for the four providers, and helpers for the control API.
#
#   my $mock = MockESP->new(journal => 1);   # ->start is called by new unless start => 0
#   $mock->url            # https://127.0.0.1:PORT  (the `endpoint` for any driver)
#   $mock->ca_file        # the CA that signed the mock's certificate
#   $mock->stats          # decoded GET /_mock/stats
#   $mock->faults(provider => 'ses', status => 500)    # POST /_mock/faults
#   $mock->clear_faults; $mock->requests('ses'); $mock->journal_lines; $mock->stop;
#
# cert => 'good' (default), 'wrong_host' (signed by the test CA for another name)
# or 'unknown_ca' (right names, signed by a CA the client does not know). The
# certificates of one MockESP->certs($dir) call share one CA, so two mocks can
# use the same ca_file.
#
# The binary: $ENV{MOCK_ESP_BIN}, else tools/mock-esp next to $ENV{MAILERD_BIN}'s
# build, else build/tools/mock-esp in the source tree.
use strict;
use warnings;
use File::Temp qw(tempdir);
use File::Basename qw(dirname);
use Cwd qw(abs_path);
use IO::Socket::INET;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);
use JSON::PP;

our %DEFAULT_KEYS = (
    ses_key_id      => 'AKIDMOCKESP0EXAMPLE',
    ses_secret      => 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYMOCKEXAMPLE',
    sendgrid_key    => 'SG.mock-sendgrid-key.0123456789',
    postmark_token  => 'mock-postmark-server-token',
    mailgun_key     => 'key-mock-mailgun-0123456789',
    mailgun_domain  => 'mg.example.com',
);

sub src_dir { abs_path(dirname(__FILE__) . '/../..') }

sub bin_path {
    return $ENV{MOCK_ESP_BIN} if $ENV{MOCK_ESP_BIN};
    if ($ENV{MAILERD_BIN}) {
        my $b = dirname(dirname($ENV{MAILERD_BIN})) . '/tools/mock-esp';
        return $b if -x $b;
    }
    return src_dir() . '/build/tools/mock-esp';
}

sub _free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp',
                                  Listen => 1, ReuseAddr => 1) or die "free_port: $!";
    my $p = $s->sockport;
    close $s;
    return $p;
}

sub _run {
    my (@cmd) = @_;
    my $out = `@cmd 2>&1`;
    die "command failed: @cmd\n$out" if $?;
    return $out;
}

# Makes (once per directory) a test CA, a second unknown CA, and server
# certificates: good (localhost, 127.0.0.1, mock-esp.test, *.mock-esp.test),
# wrong_host (wrong.example only) and unknown_ca (good names, other CA).
# Returns a hash of file paths.
sub certs {
    my ($class, $dir) = @_;
    my %f = (ca => "$dir/ca.pem", other_ca => "$dir/other-ca.pem");
    for my $kind (qw(good wrong_host unknown_ca)) {
        $f{"${kind}_cert"} = "$dir/$kind.pem";
        $f{"${kind}_key"}  = "$dir/$kind.key";
    }
    return \%f if -s $f{good_cert} && -s $f{wrong_host_cert} && -s $f{unknown_ca_cert};
    my $ossl = 'openssl';
    for my $ca (qw(ca other-ca)) {
        _run($ossl, 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
             '-nodes', '-keyout', "$dir/$ca.key", '-out', "$dir/$ca.pem", '-days', '3',
             '-subj', "'/CN=mailerd test $ca'",
             '-addext', "'basicConstraints=critical,CA:TRUE'",
             '-addext', "'keyUsage=critical,keyCertSign,cRLSign'");
    }
    my %san = (
        good       => 'DNS:localhost,IP:127.0.0.1,DNS:mock-esp.test,DNS:*.mock-esp.test',
        wrong_host => 'DNS:wrong.example',
        unknown_ca => 'DNS:localhost,IP:127.0.0.1,DNS:mock-esp.test,DNS:*.mock-esp.test',
    );
    for my $kind (qw(good wrong_host unknown_ca)) {
        my $ca = $kind eq 'unknown_ca' ? 'other-ca' : 'ca';
        open(my $fh, '>', "$dir/$kind.ext") or die;
        print $fh "subjectAltName=$san{$kind}\nextendedKeyUsage=serverAuth\n"
                . "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n";
        close $fh;
        my $cn = $kind eq 'wrong_host' ? 'wrong.example' : 'localhost';
        _run($ossl, 'req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
             '-nodes', '-keyout', "$dir/$kind.key", '-out', "$dir/$kind.csr", '-subj', "'/CN=$cn'");
        _run($ossl, 'x509', '-req', '-in', "$dir/$kind.csr", '-CA', "$dir/$ca.pem",
             '-CAkey', "$dir/$ca.key", '-CAcreateserial', '-out', "$dir/$kind.pem", '-days', '3',
             '-extfile', "$dir/$kind.ext");
    }
    return \%f;
}

# Polls cond every 50 ms until it returns true or timeout seconds pass.
sub wait_until {
    my ($cond, $timeout) = @_;
    my $deadline = time + ($timeout // 10);
    while (time < $deadline) {
        my $r = $cond->();
        return $r if $r;
        sleep 0.05;
    }
    return $cond->();
}

sub new {
    my ($class, %o) = @_;
    my $dir = $o{dir} // tempdir('mock-esp-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{MAILERD_KEEP});
    my $self = bless {
        %DEFAULT_KEYS,
        cert         => 'good',
        idle_timeout => 75,
        %o,
        dir          => $dir,
        port         => $o{port} // _free_port(),
        control_port => $o{control_port} // _free_port(),
    }, $class;
    $self->{certs} = $class->certs($o{cert_dir} // $dir);
    $self->{journal_file} = "$dir/mock-journal.log" if $self->{journal} && $self->{journal} eq '1';
    $self->{journal_file} = $self->{journal} if $self->{journal} && $self->{journal} ne '1';
    $self->start unless defined $o{start} && !$o{start};
    return $self;
}

sub dir          { $_[0]{dir} }
sub port         { $_[0]{port} }
sub control_port { $_[0]{control_port} }
sub url          { "https://127.0.0.1:$_[0]{port}" }
sub localhost_url { "https://localhost:$_[0]{port}" }
sub control_url  { "http://127.0.0.1:$_[0]{control_port}" }
sub ca_file      { $_[0]{certs}{ca} }
sub other_ca_file { $_[0]{certs}{other_ca} }
sub journal_file { $_[0]{journal_file} }
sub pid          { $_[0]{pid} }
sub stderr_log   { my $f = "$_[0]{dir}/mock-esp.stderr"; open(my $h, '<', $f) or return ''; local $/; <$h> // '' }
sub credentials  { my $s = shift; return { map { $_ => $s->{$_} } CORE::keys %DEFAULT_KEYS } }

sub args {
    my ($self) = @_;
    my $kind = $self->{cert};
    my @a = ('--listen', "127.0.0.1:$self->{port}", '--control', "127.0.0.1:$self->{control_port}",
             '--cert', $self->{certs}{"${kind}_cert"}, '--key', $self->{certs}{"${kind}_key"},
             '--ses-key', "$self->{ses_key_id}:$self->{ses_secret}",
             '--sendgrid-key', $self->{sendgrid_key}, '--postmark-token', $self->{postmark_token},
             '--mailgun-key', $self->{mailgun_key}, '--mailgun-domain', $self->{mailgun_domain},
             '--pid-file', "$self->{dir}/mock-esp.pid", '--idle-timeout', $self->{idle_timeout});
    push @a, '--journal', $self->{journal_file} if $self->{journal_file};
    push @a, '--verbose' if $self->{verbose} || $ENV{MOCK_ESP_VERBOSE};
    push @a, @{ $self->{extra_args} } if $self->{extra_args};
    return @a;
}

# Starts the mock and waits (up to 10 s) until its control port answers.
sub start {
    my ($self) = @_;
    my $bin = bin_path();
    die "mock-esp binary not found at $bin (set MOCK_ESP_BIN)" unless -x $bin;
    my @args = $self->args;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open(STDIN, '<', '/dev/null');
        open(STDOUT, '>>', "$self->{dir}/mock-esp.stderr");
        open(STDERR, '>>', "$self->{dir}/mock-esp.stderr");
        exec($bin, @args) or POSIX::_exit(127);
    }
    $self->{pid} = $pid;
    my $deadline = time + 10;
    while (time < $deadline) {
        my ($st) = eval { $self->ctl('GET', '/_mock/health') };
        return $self if $st && $st == 200;
        if (waitpid($pid, WNOHANG) == $pid) {
            delete $self->{pid};
            die "mock-esp exited at start:\n" . $self->stderr_log;
        }
        sleep 0.05;
    }
    $self->stop;
    die "mock-esp did not come up:\n" . $self->stderr_log;
}

sub running {
    my ($self) = @_;
    return 0 unless $self->{pid};
    return waitpid($self->{pid}, WNOHANG) == 0;
}

# SIGTERM, then SIGKILL after 5 s. Returns the exit status ($?) or undef.
sub stop {
    my ($self) = @_;
    my $pid = delete $self->{pid} or return undef;
    kill 'TERM', $pid;
    my $deadline = time + 5;
    while (time < $deadline) {
        return $? if waitpid($pid, WNOHANG) == $pid;
        sleep 0.02;
    }
    kill 'KILL', $pid;
    waitpid($pid, 0);
    return $?;
}

sub DESTROY {
    my ($self) = @_;
    local ($?, $@, $!);
    $self->stop if $self->{pid};
}

# One plain-HTTP request to the control port: (status, decoded JSON or undef, raw body).
sub ctl {
    my ($self, $method, $path, $body) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{control_port},
                                  Proto => 'tcp', Timeout => 5) or die "control connect: $!";
    $body = encode_json($body) if ref $body;
    $body //= '';
    print $s "$method $path HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        . "Content-Type: application/json\r\nContent-Length: " . length($body) . "\r\n\r\n$body";
    local $/;
    my $resp = <$s> // '';
    close $s;
    my ($head, $rb) = split(/\r\n\r\n/, $resp, 2);
    my ($st) = ($head // '') =~ m{^HTTP/1\.\d (\d+)};
    my $json = eval { decode_json($rb) };
    return ($st, $json, $rb);
}

sub stats    { my ($s, $j) = $_[0]->ctl('GET', '/_mock/stats'); return $j }
sub requests {
    my ($self, $provider, $limit) = @_;
    my $q = join('&', ($provider ? "provider=$provider" : ()), ($limit ? "limit=$limit" : ()));
    my ($s, $j) = $self->ctl('GET', '/_mock/requests' . ($q ? "?$q" : ''));
    return $j ? $j->{requests} : [];
}
sub faults {
    my ($self, %f) = @_;
    my ($s, $j) = $self->ctl('POST', '/_mock/faults', \%f);
    die "faults refused ($s)" unless $s && $s == 200;
    return $j;
}
# One provider's counters from /_mock/stats (a hash; empty when the mock does
# not answer). Postmark's include batch_requests, batch_messages, batch_max, searches.
sub provider_stats {
    my ($self, $provider) = @_;
    my $s = $self->stats;
    return ref $s eq 'HASH' && ref $s->{$provider} eq 'HASH' ? $s->{$provider} : {};
}
sub clear_faults { my ($s) = $_[0]->ctl('DELETE', '/_mock/faults'); return $s }
sub reset        { my ($s) = $_[0]->ctl('POST', '/_mock/reset'); return $s }

# The journal as a list of [provider, mailerd_message_id].
sub journal_lines {
    my ($self) = @_;
    open(my $fh, '<', $self->{journal_file} // return ()) or return ();
    return map { chomp; [split / /, $_, 2] } <$fh>;
}

# Lines for an `esp NAME { ... }` block pointing a driver at this mock (the
# directive names follow issue 6; the drivers may add their own).
sub esp_conf {
    my ($self, $name, $driver, %o) = @_;
    my %d = (driver => $driver, endpoint => $self->url);
    %d = (%d, access_key_id => $self->{ses_key_id}, secret_access_key => $self->{ses_secret},
          region => 'us-east-1') if $driver eq 'ses';
    %d = (%d, api_key => $self->{sendgrid_key}) if $driver eq 'sendgrid';
    %d = (%d, server_token => $self->{postmark_token}) if $driver eq 'postmark';
    %d = (%d, api_key => $self->{mailgun_key}, domain => $self->{mailgun_domain})
        if $driver eq 'mailgun';
    %d = (%d, %o);
    return "esp $name {\n" . join('', map { "    $_ $d{$_};\n" } grep { defined $d{$_} } sort keys %d) . "}\n";
}

1;
