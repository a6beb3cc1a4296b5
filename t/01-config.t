# `mailerd -t`: a valid configuration passes with exit 0; each kind of mistake
# exits 1 and names FILE:LINE so an operator can go straight to it.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use MailerdTest qw(src_dir bin_path);

plan skip_all => "no mailerd binary at " . bin_path() unless -x bin_path();

my $t = MailerdTest->new;
my $dir = $t->dir;
mkdir "$dir/inc" or die "mkdir: $!";

# Runs `mailerd -t -c FILE -p DIR` on text; returns (exit code, output, file).
sub check {
    my ($text, %o) = @_;
    my $f = $t->write_conf($text, $o{name} // 'test.conf');
    my ($code, $out) = $t->run_cmd('-t', '-c', $f, '-p', $dir);
    return ($code, $out, $f);
}

sub rejects {
    my ($name, $text, $line, $msg, %o) = @_;
    my ($code, $out, $f) = check($text);
    my $file = $o{file} // $f;
    is($code, 1, "$name: exit 1");
    like($out, qr/^mailerd: \Q$file:$line: $msg\E/m, "$name: $file:$line in the output")
        or diag($out);
}

{
    my ($code, $out, $f) = check($t->conf_text);
    is($code, 0, 'the harness config passes') or diag($out);
    like($out, qr/mailerd: configuration file \Q$f\E test is successful/, 'success message');
}

{
    my $conf = src_dir() . '/conf/mailerd.conf';
    local $ENV{MAILERD_LISTEN};
    delete $ENV{MAILERD_LISTEN};
    my ($code, $out) = $t->run_cmd('-t', '-c', $conf, '-p', src_dir());
    is($code, 0, 'the shipped conf/mailerd.conf passes') or diag($out);
    like($out, qr/test is successful/, 'shipped config: success message');
}

{
    # A relative -c resolves against the cwd; includes against the including file.
    $t->write_conf("keepalive_timeout 5s;\n", 'inc/http.conf');
    my ($code, $out) = check("pid off;\nhttp {\n    include inc/http.conf;\n}\n");
    is($code, 0, 'a config with a relative include passes') or diag($out);
}

rejects('unknown directive', "worker_processes 1;\n\nworker_process 2;\n", 3,
        'unknown directive "worker_process"');
rejects('missing ";"', "master_process on;\nworker_processes 2\npid x.pid;\n", 2,
        'directive "worker_processes" is not terminated by ";"');
rejects('missing ";" before "}"', "http {\n    listen 127.0.0.1:8025\n}\n", 2,
        'directive "listen" is not terminated by ";"');
rejects('bad size', "http {\n    client_max_body_size 12q;\n}\n", 2,
        'invalid value "12q" in "client_max_body_size" directive');
rejects('extra "}"', "http {\n    send_timeout 5s;\n}\n}\n", 4, 'unexpected "}"');
rejects('missing "}"', "http {\n    send_timeout 5s;\n", 3,
        'unexpected end of file, expecting "}"');
rejects('missing include', "pid off;\ninclude missing.conf;\n", 2,
        qq{include file "$dir/missing.conf" not found});
rejects('directive in the wrong block', "listen 8080;\n", 1,
        '"listen" directive is not allowed here');
rejects('duplicate', "pid a;\npid b;\n", 2, '"pid" directive is duplicate');

{
    $t->write_conf("# included\nbogus on;\n", 'inc/bad.conf');
    rejects('error inside an included file', "include inc/bad.conf;\n", 2,
            'unknown directive "bogus"', file => "$dir/inc/bad.conf");
}

{
    local $ENV{MD_T_NOT_SET};
    delete $ENV{MD_T_NOT_SET};
    rejects('unset environment variable', "http {\n    listen \${MD_T_NOT_SET};\n}\n", 2,
            'environment variable "MD_T_NOT_SET" is not set');
    local $ENV{MD_T_PORT} = $t->port;
    my ($code, $out) = check("http {\n    listen 127.0.0.1:\${MD_T_PORT};\n}\n");
    is($code, 0, 'a set environment variable expands') or diag($out);
}

{
    my ($code, $out) = $t->run_cmd('-t', '-c', "$dir/no-such.conf", '-p', $dir);
    is($code, 1, 'missing main file: exit 1');
    like($out, qr/^mailerd: \Q$dir\E\/no-such\.conf: cannot open configuration file/m,
         'missing main file: names the file') or diag($out);
}

done_testing();
