# Structured fuzzing of the JSON API against the real stack (PostgreSQL, Redis,
# mailerd with 2 workers, the sink ESP). Valid requests to the send, batch,
# template, render, suppression (one, many, CSV import, removal) and listing
# routes are mutated, and the public tracking routes get any token and body (fields set to values of
# every JSON type and odd strings, removed, added, nested; now and then the
# serialized bytes themselves), from a seed printed at the start
# (MD_FUZZ_SEED replays it, API_FUZZ_N sets the count). Every answer must be:
#   - a status the API documents (2xx, or 400/404/405/409/413/414/415/422/429/
#     431/503), never a 5xx or a dropped connection;
#   - for an error, a JSON body with a stable code and a message;
# and at the end:
#   - every message id a 202 gave is a committed row, and there are no other
#     rows: nothing of a refused request is stored;
#   - every accepted message is delivered by the sink (or still scheduled): the
#     API accepts nothing the MIME builder cannot write;
#   - the logs hold no sanitizer report (the sanitizer build runs this too).
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use JSON::PP;
use MailerdTest qw(wait_for);

MailerdTest::skip_without_store();

my $S = MailerdTest->stack(
    tenants    => 1,
    main_extra => "esp sink {\n    driver sink;\n    dir sink;\n}\n",
);
my $t = $S->{t};
my $pg = $S->{pg};
my ($A) = @{ $S->{tenants} };
my $json = JSON::PP->new->canonical->allow_nonref;

my $seed = $ENV{MD_FUZZ_SEED} // (time() ^ ($$ << 8));
srand($seed);
my $N = $ENV{API_FUZZ_N} // 3000;
diag("seed $seed (MD_FUZZ_SEED=$seed replays), $N requests");

sub pick { $_[ int rand @_ ] }

# Strings that take the validators' branches: addresses of every shape, header
# and Mustache syntax, control characters, invalid and astral UTF-8, lengths at
# and past the limits.
my @strings = (
    '', 'a', 'user@example.com', 'Acme <billing@acme.example>', '"Acme, Inc." <a@acme.example>',
    '"quoted local"@example.com', 'a@[192.0.2.1]', 'a@[IPv6:2001:db8::1]', "\x{fc}ser\@b\x{fc}cher.example",
    'user@xn--bcher-kva.example', "a\@\x{2665}.example", '@example.com', 'a@', 'a@b', 'a..b@example.com',
    ('x' x 64) . '@example.com', ('x' x 65) . '@example.com', 'a@' . join('.', ('d' x 63) x 4) . '.com',
    "a\r\nBcc: x\@evil.example", "line\nbreak", "tab\there", "nul\x00byte", "bell\x07",
    "caf\x{e9}", "\x{1F48C} letter", "\x{202E}rtl", "\x{FEFF}bom", "\x{D7FF}", "=?utf-8?q?x?=",
    '{{name}}', '{{#list}}{{.}}{{/list}}', '{{{raw}}}', '{{& raw}}', '{{> p}}', '{{=<% %>=}}',
    '{{#a}}', '{{/a}}', '{{', '}}', '<p>Hi <b>{{name}}</b></p>', '<a href="https://x.example/?a=1&b=2">l</a>',
    'transactional', 'bulk', 'sink', 'nosuch', '2030-01-01T00:00:00Z', '1999-01-01T00:00:00Z',
    '2030-13-45T99:99:99Z', 'not a date', 'X-Custom', 'From', 'Content-Type', 'Bad Name:',
    'x' x 256, 'y' x 1000, 'z' x 20000, '0190b8e4-8b1c-7cc0-9a0e-2b7c1d2e3f40', '../../etc/passwd',
    '%00', "\\u0000", '-1', '1e999',
);

sub rand_string { pick(@strings) }

sub rand_value {
    my ($depth) = @_;
    $depth //= 0;
    my $k = int rand($depth > 2 ? 8 : 11);
    return undef if $k == 0;
    return (JSON::PP::true, JSON::PP::false)[ int rand 2 ] if $k == 1;
    return pick(0, -1, 1, 2**31, 2**53 + 1, -2**63, 1.5, 1e300, -0.0) if $k == 2;
    return rand_string() if $k <= 7;
    return [ map { rand_value($depth + 1) } 1 .. int rand 4 ] if $k <= 9;
    return { map { (rand_string() => rand_value($depth + 1)) } 1 .. int rand 4 };
}

sub rand_addresses {
    return rand_value() if rand() < 0.2;
    my $n = rand() < 0.05 ? 40 + int rand 30 : int rand 4;
    return [ map {
        my $a = "r$_-" . int(rand 1e9) . '@example.com';
        my $k = rand;
        $k < 0.6 ? $a : $k < 0.8 ? { address => $a, name => rand_string() } : rand_string()
    } 1 .. $n ];
}

# Mutations of a request body (a hash): change, remove, add or nest. None a
# third of the time (the body stays valid but for what the base varies), so
# that enough requests get through to test what happens to accepted ones.
sub mutate {
    my ($h, $fields) = @_;
    my $n = rand() < 0.35 ? 0 : 1 + int rand 2;
    for (1 .. $n) {
        my $op = int rand 10;
        my $f = pick(@$fields);
        if ($op <= 4) {
            $h->{$f} = $f =~ /^(to|cc|bcc|reply_to)$/ && rand() < 0.6 ? rand_addresses()
                     : $f =~ /^(subject|text|html)$/ && rand() < 0.7 ? rand_string()
                     : rand_value();
        } elsif ($op == 5) {
            delete $h->{$f};
        } elsif ($op == 6) {
            $h->{ rand_string() } = rand_value();
        } elsif ($op == 7) {
            $h->{headers} = { map { (pick('X-Tag', 'X-A', rand_string()) => rand_value(2)) } 1 .. 1 + int rand 3 };
        } elsif ($op == 8) {
            $h->{metadata} = rand() < 0.7 ? { map { (rand_string() => rand_value(1)) } 1 .. int rand 4 } : rand_value();
        } else {
            $h->{tags} = rand() < 0.7 ? [ map { rand_string() } 1 .. int rand 5 ] : rand_value();
        }
    }
    return $h;
}

# The serialized body, now and then broken at the byte level.
sub encode_body {
    my ($h) = @_;
    my $b = $json->encode($h);
    utf8::encode($b);    # characters to UTF-8 bytes
    return $b if rand() > 0.1;
    my $op = int rand 4;
    if ($op == 0) {
        substr($b, int rand length $b) = '';
    } elsif ($op == 1) {
        substr($b, int rand length $b, 1) = chr(int rand 256);
    } elsif ($op == 2) {
        substr($b, int rand length $b, 0) = pick("\xff", "\xc3", "\xed\xa0\x80", '\\ud800', ',', '}', '"');
    } else {
        $b = "[$b]";
    }
    return $b;
}

my %documented = map { $_ => 1 } (200, 201, 202, 204, 400, 404, 405, 409, 413, 414, 415, 422, 429, 431, 503);

# A random string as one path segment.
sub seg {
    my $s = shift;
    utf8::encode($s);
    $s =~ s/([^A-Za-z0-9._~-])/sprintf('%%%02X', ord $1)/ge;
    return $s;
}
my (%ids, %bad, $templates_made, %seen_status);
my @templates;

# Checks one answer; returns its JSON (or undef).
sub check {
    my ($what, $r, $body) = @_;
    $seen_status{ $r->{status} }++;
    my $j = eval { decode_json($r->{body}) };
    my $problem;
    if (!$documented{ $r->{status} }) {
        $problem = "status $r->{status}";
    } elsif ($r->{status} >= 400) {
        my $e = ref $j eq 'HASH' ? $j->{error} : undef;
        $problem = 'error without a stable code and a message'
            unless ref $e eq 'HASH' && defined $e->{code} && $e->{code} =~ /^[a-z][a-z0-9_]*$/
            && defined $e->{message} && length $e->{message};
    } elsif (ref $j ne 'HASH' && $r->{status} != 204) {
        $problem = 'a success without a JSON object';
    }
    if ($problem) {
        my $key = "$what: $problem";
        diag("$key\n  request: " . substr($body // '', 0, 400) . "\n  answer: $r->{status} "
             . substr($r->{body}, 0, 400)) unless $bad{$key}++;
    }
    return $j;
}

# One request as given; a dropped connection or a partial answer is status 0
# (which check() and the tracking checks count as a problem) and said once.
sub raw {
    my ($method, $path, $headers, $body) = @_;
    my $r = eval { $t->request($method, $path, headers => $headers, defined $body ? (body => $body) : ()) };
    return $r if $r;
    my $key = "$method " . substr($path, 0, 80) . ': no complete answer';
    diag("$key: $@\n  request: " . substr($body // '', 0, 400)) unless $bad{$key}++;
    return { status => 0, body => '' };
}

# A request with the tenant's key (and a JSON body when there is one).
sub api {
    my ($method, $path, $body, %h) = @_;
    my %hd = (Authorization => "Bearer $A->{key}", %h);
    $hd{'Content-Type'} = 'application/json' if defined $body;
    return raw($method, $path, \%hd, $body);
}

# A few good templates to send with; more come from the fuzzed saves.
for my $i (1 .. 3) {
    my $r = api('POST', '/v1/templates', $json->encode({
        name => "base$i", subject => 'Hello {{name}}', html => '<p>{{name}} {{#items}}<i>{{.}}</i>{{/items}}</p>',
        text => 'Hi {{name}}{{> base1}}' }));
    my $j = check('POST /v1/templates', $r);
    push @templates, $j->{id} if $r->{status} == 201 && $j->{id};
}
is(scalar @templates, 3, 'the base templates are saved');

# A subject that renders empty is an empty buffer with no memory behind it:
# the sanitizer build's worker died on it (memchr and memcpy given NULL) until
# the fuzzing below found it.
{
    my $r = api('POST', '/v1/templates', $json->encode({ name => 'empty-subject', subject => '{{nothing}}',
                                                         text => 'body' }));
    my $j = check('POST /v1/templates', $r);
    $r = api('POST', '/v1/messages', $json->encode({ from => 'a@acme.example', to => 'e@example.com',
                                                      template_id => $j->{id} // '' }));
    is($r->{status}, 202, 'a template whose subject renders empty is accepted') or diag($r->{body});
    $j = check('POST /v1/messages', $r);
    $ids{ $_->{id} } = 1 for @{ ref $j eq 'HASH' && ref $j->{data} eq 'ARRAY' ? $j->{data} : [] };
}

my %base_send = (from => 'Acme <billing@acme.example>', to => 'user@example.com', subject => 'Hi',
                 text => 'Hello', html => '<p>Hello</p>', tags => ['t'], metadata => { k => 'v' },
                 priority => 'transactional');
my @send_fields = qw(from to cc bcc reply_to subject text html template_id variables headers tags
                     metadata priority send_at esp);

for my $i (1 .. $N) {
    my $kind = int rand 13;
    if ($kind <= 3) {
        my %h = %base_send;
        if (rand() < 0.3) {
            delete @h{qw(text html subject)};
            $h{template_id} = pick(@templates, rand_string());
            $h{variables} = { name => rand_value(1), items => rand_value(1) };
        }
        my $body = encode_body(mutate(\%h, \@send_fields));
        my %hd = rand() < 0.1 ? ('Idempotency-Key' => pick('k1', 'k2', 'x' x 255, 'x' x 256, "k\x01")) : ();
        my $r = api('POST', '/v1/messages', $body, %hd);
        my $j = check('POST /v1/messages', $r, $body);
        if ($r->{status} == 202 && ref $j eq 'HASH' && ref $j->{data} eq 'ARRAY') {
            # a suppressed recipient is answered but never stored
            $ids{ $_->{id} } = 1 for grep { ($_->{status} // '') ne 'suppressed' } @{ $j->{data} };
        }
    } elsif ($kind <= 5) {
        my %h = (from => 'Acme <billing@acme.example>', subject => 'Hi {{name}}', text => 'Dear {{name}}',
                 recipients => [ map { { to => "b$_-" . int(rand 1e9) . '@example.com',
                                         variables => { name => "n$_" } } } 1 .. 1 + int rand 3 ]);
        if (rand() < 0.5) {
            my $rc = pick(@{ $h{recipients} });
            mutate($rc, [qw(to variables metadata cc name)]);
        } else {
            mutate(\%h, [qw(from subject text html recipients template_id variables tags metadata priority)]);
        }
        my $body = encode_body(\%h);
        my $r = api('POST', '/v1/messages/batch', $body);
        my $j = check('POST /v1/messages/batch', $r, $body);
        if ($r->{status} == 202 && ref $j eq 'HASH' && ref $j->{accepted} eq 'ARRAY') {
            $ids{ $_->{id} } = 1 for @{ $j->{accepted} };
        }
    } elsif ($kind <= 7) {
        my %h = (name => 'fz' . int(rand 1e9), subject => 'S {{a}}', html => '<b>{{a}}</b>', text => '{{a}}');
        mutate(\%h, [qw(name subject html text)]);
        $h{$_} = rand_string() . rand_string() for grep { rand() < 0.3 } qw(subject html text);
        my $body = encode_body(\%h);
        my $r = rand() < 0.8 ? api('POST', '/v1/templates', $body)
              : api('PUT', '/v1/templates/' . seg(pick($templates[-1], rand_string())), $body);
        my $j = check('save a template', $r, $body);
        push @templates, $j->{id} if $r->{status} == 201 && ref $j eq 'HASH' && $j->{id};
    } elsif ($kind == 8) {
        my $body = encode_body({ variables => { a => rand_value(), name => rand_value(), items => rand_value() } });
        my $r = api('POST', '/v1/templates/' . seg(pick(@templates, rand_string())) . '/render', $body);
        check('POST /v1/templates/{id}/render', $r, $body);
    } elsif ($kind == 9) {
        my @q = map { seg(pick('status', 'tag', 'batch_id', 'since', 'limit', 'cursor', 'reason', rand_string())) . '='
                      . (rand() < 0.8 ? seg(substr(rand_string(), 0, 40)) : pick('%FF', '%C3%28', '%00', '%ED%A0%80', '%'))
                    } 1 .. int rand 4;
        my $r = api('GET', pick('/v1/messages', '/v1/suppressions', '/v1/events') . (@q ? '?' . join('&', @q) : ''));
        check('GET a listing', $r, join('&', @q));
    } elsif ($kind == 10) {
        # suppressions: one, many, or removed; the sends above then meet them
        my $one = sub { my %e = (address => pick('user@example.com', rand_string()));
                        $e{reason} = pick('manual', 'hard_bounce', 'complaint', 'unsubscribe', rand_string()) if rand() < 0.5;
                        $e{expires_at} = pick('2030-01-01T00:00:00Z', rand_string()) if rand() < 0.3;
                        mutate(\%e, [qw(address reason expires_at)]) if rand() < 0.5;
                        \%e };
        my $k = rand;
        if ($k < 0.7) {
            my $body = encode_body($k < 0.4 ? $one->() : { suppressions => [ map { $one->() } 1 .. int rand 5 ] });
            check('POST /v1/suppressions', api('POST', '/v1/suppressions', $body), $body);
        } else {
            check('DELETE /v1/suppressions/{address}',
                  api('DELETE', '/v1/suppressions/' . seg(pick('user@example.com', rand_string()))));
        }
    } elsif ($kind == 11) {
        # a CSV import: lines of fields from the odd strings, quoted or not
        my @lines = map { join(',', map { rand() < 0.3 ? '"' . ($_ =~ s/"/""/gr) . '"' : $_ }
                                    map { rand_string() } 1 .. 1 + int rand 3) } 1 .. 1 + int rand 6;
        unshift @lines, pick('address,reason', 'address,reason,expires_at', 'reason,address', 'x') if rand() < 0.4;
        my $body = join(pick("\n", "\r\n"), @lines);
        utf8::encode($body);
        my %hd = ('Content-Type' => rand() < 0.9 ? 'text/csv' : 'application/json');
        my $r = raw('POST', '/v1/suppressions/import', { Authorization => "Bearer $A->{key}", %hd }, $body);
        check('POST /v1/suppressions/import', $r, $body);
    } else {
        # the public tracking routes: any token, any one-click body
        my $tok = seg(rand() < 0.5 ? rand_string() : join('', map { pick('A' .. 'Z', 'a' .. 'z', 0 .. 9, '-', '_') } 1 .. 50));
        my $r;
        if (rand() < 0.5) {
            $r = raw('GET', pick('/t/c/', '/t/o/', '/u/') . $tok, {});
            # a tracking route answers a bad token with 404 (or the pixel/redirect for a good one)
            $seen_status{ $r->{status} }++;
            my $key = "GET tracking: status $r->{status}";
            diag("$key for " . substr($tok, 0, 100)) if $r->{status} !~ /^(404|414)$/ && !$bad{$key}++;
        } else {
            my $body = pick('List-Unsubscribe=One-Click', rand_string(), "--b\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--b--\r\n");
            utf8::encode($body);
            $r = raw('POST', "/u/$tok", { 'Content-Type' => pick('application/x-www-form-urlencoded',
                     'multipart/form-data; boundary=b', 'text/plain', '') }, $body);
            $seen_status{ $r->{status} }++;
            my $key = "POST /u/{token}: status $r->{status}";
            diag("$key for " . substr($tok, 0, 100)) if $r->{status} !~ /^(400|404|414|415)$/ && !$bad{$key}++;
        }
    }
}

ok(!%bad, 'every answer has a documented status and, for errors, a code and a message')
    or diag(join("\n", map { "$_ ($bad{$_}x)" } sort keys %bad));
diag('statuses: ' . join(', ', map { "$_: $seen_status{$_}" } sort keys %seen_status));
ok(($seen_status{202} // 0) > $N / 40, 'a fair share of the requests were accepted')
    or diag('too few 202s: the mutations refuse everything, which tests little');
ok(($seen_status{422} // 0) > $N / 20, 'and a fair share refused by validation');

# Nothing of a refused request is stored, everything accepted is.
my @want = sort keys %ids;
my $stored = $pg->psql("SELECT count(*) FROM messages WHERE tenant_id = '$A->{id}'");
is($stored, scalar @want, 'the stored messages are exactly those the 202s named');
my $missing = 0;
while (my @chunk = splice(@want, 0, 500)) {
    my $list = join(',', map { "'$_'" } @chunk);
    $missing += @chunk - $pg->psql("SELECT count(*) FROM messages WHERE id IN ($list)");
}
is($missing, 0, 'every id of a 202 is a committed row');

# Every accepted message is written by the sink: the API took nothing the MIME
# builder refuses. (Scheduled ones stay scheduled; a suppressed one was never
# queued.)
my $left;
ok(wait_for(sub {
    $left = $pg->psql("SELECT count(*) FROM messages WHERE tenant_id = '$A->{id}'"
                      . " AND status IN ('queued', 'sending', 'deferred', 'accepted')");
    $left == 0 }, 90), 'the queue drains') or diag("$left messages still waiting");
my $odd = $pg->psql("SELECT string_agg(status || ': ' || coalesce(last_error, ''), E'\\n')"
                    . " FROM messages WHERE tenant_id = '$A->{id}'"
                    . " AND status NOT IN ('delivered', 'scheduled', 'suppressed')");
ok(!length $odd, 'every accepted message was delivered (or is scheduled)') or diag($odd);

is(api('GET', '/health')->{status}, 200, 'mailerd still answers');
$t->stop;
done_testing();
