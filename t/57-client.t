# Outbound HTTP client (src/http/md_client.c, src/core/md_dns.c).
#
# 1. t/unit/client_t: the client against servers the program forks itself (a
#    DNS responder on 127.0.0.1, plain and TLS HTTP servers with certificates
#    from a CA made with the openssl CLI): DNS cache/TTL/timeout, GET/POST,
#    chunked, keep-alive counts, wrong-name and unknown-CA certificates, connect
#    refused, response timeout, stale pooled connections, resend rule, cancel.
# 2. The same client against a real nginx (TLS, echo module) started here:
#    `client_t nginx`, relayed as TAP; then nginx's access log shows how many
#    connections carried the keep-alive requests, that a session was resumed,
#    and that nothing reached the servers with the wrong or unknown certificate.
use strict;
use warnings;
use Test::More;
use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use POSIX qw(:sys_wait_h);
use MailerdTest qw(bin_path slurp wait_for free_port);

my $bin = dirname(bin_path()) . '/../t/unit/client_t';
if (!-x $bin) {
    system('make', '-s', '-C', dirname(bin_path()) . '/..', 't/unit/client_t');
}
plan skip_all => "no $bin (make check builds it)" unless -x $bin;
plan skip_all => 'openssl CLI not installed' unless grep { -x "$_/openssl" } split /:/, $ENV{PATH};

sub relay {
    my ($line, $prefix) = @_;
    if ($line =~ /^(not )?ok \d+\s*-?\s*(.*)$/) {
        ok(!defined $1, "$prefix: $2");
    } elsif ($line =~ /^1\.\.0 # SKIP (.*)/) {
        note("$prefix skipped: $1");
    } elsif ($line =~ /^#/) {
        note("$prefix $line");
    }
}

sub run_unit {
    my ($prefix, @args) = @_;
    open(my $fh, '-|', $bin, @args) or die "run $bin: $!";
    my $n = 0;
    while (my $line = <$fh>) {
        chomp $line;
        $n++ if $line =~ /^(not )?ok /;
        relay($line, $prefix);
    }
    close $fh;
    is($? >> 8, 0, "$prefix: exit status 0");
    ok($n > 0, "$prefix: ran tests");
}

run_unit('client_t');

# ---- against nginx ------------------------------------------------------------------
my $nginx = (grep { -x $_ } '/usr/sbin/nginx', map { "$_/nginx" } split /:/, $ENV{PATH})[0];
my $echo = '/usr/lib/nginx/modules/ngx_http_echo_module.so';
SKIP: {
    skip 'nginx not installed', 1 unless $nginx;
    skip 'nginx echo module not installed', 1 unless -f $echo;
    skip 'nginx without ssl', 1 unless `$nginx -V 2>&1` =~ /--with-http_ssl_module/;

    my $dir = tempdir('mailerd-client-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    my $key = '-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes';
    my $q = '>/dev/null 2>&1';
    my $ok = 1;
    for my $ca (qw(ca ca2)) {
        $ok &&= system("cd $dir && openssl req -x509 $key -keyout $ca.key -out $ca.crt "
                       . "-subj '/CN=t57 $ca' -days 2 $q") == 0;
    }
    for my $leaf (['good', 'ca', 'DNS:localhost,IP:127.0.0.1'], ['wrong', 'ca', 'DNS:wrong.example.org'],
                  ['unknown', 'ca2', 'DNS:localhost,IP:127.0.0.1']) {
        my ($n, $ca, $san) = @$leaf;
        open(my $e, '>', "$dir/$n.ext") or die;
        print $e "subjectAltName=$san\n";
        close $e;
        $ok &&= system("cd $dir && openssl req $key -keyout $n.key -out $n.csr -subj '/CN=$n' $q "
                       . "&& openssl x509 -req -in $n.csr -CA $ca.crt -CAkey $ca.key -CAcreateserial "
                       . "-out $n.crt -days 2 -extfile $n.ext $q") == 0;
    }
    ok($ok, 'nginx: certificates made') or skip 'no certificates', 1;

    my %port = map { $_ => free_port() } qw(good wrong unknown);
    my $servers = '';
    for my $n (qw(good wrong unknown)) {
        $servers .= <<"EOS";
    server {
        listen 127.0.0.1:$port{$n} ssl;
        server_name localhost;
        ssl_certificate $dir/$n.crt;
        ssl_certificate_key $dir/$n.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets on;
        access_log $dir/access.log conn;
        location = /static { default_type text/plain; return 200 "static body"; }
        location = /echo { echo_read_request_body; echo_request_body; }
        location = /hang { echo_sleep 3; echo late; }
        location = /status { add_header Retry-After 3 always; return 503 "busy"; }
    }
EOS
    }
    open(my $cf, '>', "$dir/nginx.conf") or die;
    print $cf <<"EOC";
load_module $echo;
daemon off;
master_process on;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log info;
events { worker_connections 128; }
http {
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_timeout 1s;
    keepalive_requests 1000;
    log_format conn '\$server_port \$connection \$connection_requests "\$request" \$status \$ssl_session_reused';
$servers
}
EOC
    close $cf;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open(STDOUT, '>', "$dir/stdout.log");
        open(STDERR, '>&', \*STDOUT);
        exec($nginx, '-p', $dir, '-c', "$dir/nginx.conf", '-e', "$dir/error.log") or exit 127;
    }
    my $stop = sub {
        return unless $pid;
        kill 'TERM', $pid;
        my $gone = wait_for(sub { waitpid($pid, WNOHANG) == $pid }, 10);
        if (!$gone) { kill 'KILL', $pid; waitpid($pid, 0); }
        $pid = 0;
    };
    my $guard = bless { stop => $stop }, 'T57Guard';

    my $up = wait_for(sub {
        IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port{good}", Timeout => 1)
    }, 10);
    ok($up, 'nginx: listening') or do {
        diag(slurp("$dir/error.log") . slurp("$dir/stdout.log"));
        $stop->();
        skip 'nginx did not start', 1;
    };

    local $ENV{MD_TEST_NGINX_CA} = "$dir/ca.crt";
    local $ENV{MD_TEST_NGINX_GOOD} = $port{good};
    local $ENV{MD_TEST_NGINX_WRONG} = $port{wrong};
    local $ENV{MD_TEST_NGINX_UNKNOWN} = $port{unknown};
    local $ENV{MD_TEST_NGINX_LOG} = "$dir/client.log";
    run_unit('client_t nginx', 'nginx');
    my $clog = slurp("$dir/client.log");
    like($clog, qr/"level":"warn".*certificate verify failed: hostname mismatch/,
         'client log: the wrong-name failure is logged');
    like($clog, qr/"level":"warn".*unable to get local issuer certificate/,
         'client log: the unknown-CA failure is logged');

    # nginx writes a line when a request ends; /status was the last quick one.
    wait_for(sub { slurp("$dir/access.log") =~ m{GET /status} }, 5);
    my @lines = split /\n/, slurp("$dir/access.log");
    my %ka_conns = map { (split / /)[1] => 1 } grep { m{"POST /static\?ka } } @lines;
    is(scalar(grep { m{"POST /static\?ka } } @lines), 30, 'nginx log: 30 keep-alive requests');
    ok(keys(%ka_conns) >= 1 && keys(%ka_conns) <= 2,
       'nginx log: carried by <= max_connections (2) connections (' . scalar(keys %ka_conns) . ')');
    ok((grep { m{"GET /static\?resume .* r$} } @lines), 'nginx log: the session was resumed');
    is(scalar(grep { /^$port{wrong} / || /^$port{unknown} / } @lines), 0,
       'nginx log: nothing reached the wrong-name or unknown-CA server');
    my $errlog = slurp("$dir/error.log");
    ok($errlog !~ /\[(alert|emerg|crit)\]/, 'nginx: no alert in its error log')
        or diag($errlog);
    $stop->();
}

done_testing();

package T57Guard;
sub DESTROY { $_[0]{stop}->() }
