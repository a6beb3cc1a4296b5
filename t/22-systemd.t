# sd_notify: READY=1 once serving, RELOADING=1 then READY=1 around a reload (valid
# or not), STOPPING=1 on stop; over a filesystem and an abstract socket, with the
# master and in single-process mode.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use MailerdTest qw(wait_for);
use IO::Socket::UNIX;
use IO::Select;
use Socket qw(SOCK_DGRAM);

# Collects datagrams from the notify socket; returns all messages so far.
sub collector {
    my ($sock) = @_;
    my @got;
    return sub {
        my $sel = IO::Select->new($sock);
        while ($sel->can_read(0)) {
            my $buf;
            defined($sock->recv($buf, 4096)) or last;
            push @got, $buf;
        }
        return @got;
    };
}

sub states { map { split /\n/ } @_ }

# The states received after the first n messages.
sub since {
    my ($msgs, $n) = @_;
    my @m = $msgs->();
    return states(@m[$n .. $#m]);
}

sub wait_state {
    my ($msgs, $state, $after) = @_;
    $after //= 0;
    return wait_for(sub { grep { $_ eq $state } since($msgs, $after) }, 15);
}

for my $mode (['path', 0], ['abstract', 0], ['single-process', 1]) {
    my ($kind, $single) = @$mode;
    my $t = MailerdTest->new;
    my $dir = $t->dir;
    my ($addr, $sock);
    if ($kind eq 'abstract') {
        my $name = "mailerd-test-$$-" . int(rand(1e9));
        $sock = IO::Socket::UNIX->new(Type => SOCK_DGRAM, Local => "\0$name") or die "socket: $!";
        $addr = "\@$name";
    } else {
        $addr = "$dir/notify.sock";
        $sock = IO::Socket::UNIX->new(Type => SOCK_DGRAM, Local => $addr) or die "socket: $!";
    }
    my $msgs = collector($sock);
    my %main = $single ? (master_process => 'off') : ();
    $t->start(main => \%main, env => { NOTIFY_SOCKET => $addr });

    ok(wait_state($msgs, 'READY=1'), "$kind: READY=1 at start");
    my @m = $msgs->();
    is(scalar(grep { $_ eq 'READY=1' } states(@m)), 1, "$kind: exactly one READY=1 so far");
    if (!$single) {
        # The master says READY only once every worker serves.
        is(scalar(my @w = $t->worker_pids), 2, "$kind: both workers up at READY");

        my $n = @m;
        $t->signal('HUP');
        ok(wait_state($msgs, 'READY=1', $n), "$kind: READY=1 after a reload");
        my @s = since($msgs, $n);
        is($s[0], 'RELOADING=1', "$kind: RELOADING=1 comes first");
        ok(grep({ /^MONOTONIC_USEC=\d+$/ } @s), "$kind: ... with MONOTONIC_USEC");

        # A rejected reload is bracketed the same way.
        $n = () = $msgs->();
        $t->write_conf("http {\n    nonsense;\n}\n");
        $t->signal('HUP');
        ok(wait_state($msgs, 'READY=1', $n), "$kind: READY=1 after a rejected reload");
        @s = since($msgs, $n);
        is($s[0], 'RELOADING=1', "$kind: ... preceded by RELOADING=1");
        is($t->request('GET', '/health')->{status}, 200, "$kind: still serving");
    } else {
        is(scalar(my @w = $t->worker_pids), 0, "$kind: no worker processes");
        is($t->request('GET', '/health')->{status}, 200, "$kind: serving");
        my $n = () = $msgs->();
        $t->signal('HUP');
        ok(wait_for(sub { grep { ($_->{msg} // '') =~ /SIGHUP ignored/ } $t->error_log_entries }, 5),
           "$kind: SIGHUP is logged as ignored");
        is($t->request('GET', '/health')->{status}, 200, "$kind: still serving after SIGHUP");
        is(scalar(() = $msgs->()), $n, "$kind: no notification for an ignored SIGHUP");
    }

    my $n = () = $msgs->();
    $t->stop;
    ok(wait_state($msgs, 'STOPPING=1', $n), "$kind: STOPPING=1 on stop");
}

# Without NOTIFY_SOCKET nothing is sent and nothing breaks.
my $t = MailerdTest->new;
{
    local $ENV{NOTIFY_SOCKET};
    delete $ENV{NOTIFY_SOCKET};
    $t->start;
}
is($t->request('GET', '/health')->{status}, 200, 'runs without NOTIFY_SOCKET');
ok(!grep({ ($_->{level} // '') =~ /warn|error/ && ($_->{msg} // '') =~ /notify/ } $t->error_log_entries),
   'no notify warnings without NOTIFY_SOCKET');
$t->stop;

done_testing;
