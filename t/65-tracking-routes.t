# The tracking and unsubscribe routes (issue 7, point 4) against the real stack
# (PostgreSQL, Redis, mailerd with 2 workers), with messages inserted directly
# in PostgreSQL and tokens made here by an independent implementation of
# md_track.h's format (HMAC-SHA256 truncated to 16 bytes, base64url):
#   - GET /t/c: 302 to exactly links[i] (non-ASCII bytes percent-encoded),
#     no-store, a `clicked` event with url, link, user agent and ip; every
#     single-character change of a valid token, the trailing bits, truncation,
#     an unknown secret or key id, a token of another kind, a link index past
#     the list, an unknown message, an untracked message: 404 and no event; a
#     token made with previous_secret still works (rotation);
#   - GET /t/o: the 43-byte GIF, no-store, an `opened` event;
#   - GET /u: an HTML page with a form posting the one-click body, the address
#     masked; nothing changes;
#   - POST /u: Gmail's exact urlencoded body and Yahoo's multipart body each
#     suppress (reason and source unsubscribe) with one `unsubscribed` event; a
#     repeat adds nothing; the page's button (via=page) is recorded as such; an
#     expiring suppression becomes permanent, a permanent one is kept; the
#     message status does not move; the next send to the address is 422
#     suppressed; a wrong body 400, another media type 415, a bad token 404;
#   - /metrics counts the events and the suppressions;
#   - PostgreSQL down: the click is 503, the pixel still served;
#   - without the tracking { } block (reload): 404 tracking_not_configured.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use Digest::SHA qw(hmac_sha256);
use MailerdTest qw(wait_for slurp);

MailerdTest::skip_without_store();

my $SECRET = 'current-secret-0123456789abcdef';
my $PREV   = 'previous-secret-fedcba9876543210';
my $tracking_block = "tracking {\n    public_url https://t.example.test;\n    secret $SECRET;\n"
  . "    previous_secret $PREV;\n    previous_secret_id 7;\n}\n";

my $S = MailerdTest->stack(main_extra => "esp sink {\n    dir sink;\n}\n" . $tracking_block);
my $t = $S->{t};
my $pg = $S->{pg};
my ($A) = @{ $S->{tenants} };

sub sql { scalar $pg->psql($_[0]) }

# --- tokens, as md_track.h describes them ------------------------------------------------
use constant { CLICK => 1, OPEN => 2, UNSUB => 3 };

sub b64url {
    (my $s = encode_base64($_[0], '')) =~ tr{+/}{-_};
    $s =~ s/=+$//;
    return $s;
}

# version 1 | key id | kind | message id (16) | [link, big-endian 16 bits] | mac (16)
sub token {
    my (%o) = @_;
    (my $hex = $o{msg}) =~ tr/-//d;
    my $bin = pack('CCC', $o{version} // 1, $o{key_id} // 1, $o{kind}) . pack('H32', $hex);
    $bin .= pack('n', $o{link} // 0) if $o{kind} == CLICK;
    $bin .= substr(hmac_sha256($bin, $o{secret} // $SECRET), 0, 16);
    return b64url($bin);
}

sub uuid {
    my @b = map { int rand 256 } 1 .. 16;
    $b[6] = ($b[6] & 0x0f) | 0x40;
    $b[8] = ($b[8] & 0x3f) | 0x80;
    my $h = join '', map { sprintf '%02x', $_ } @b;
    return join '-', substr($h, 0, 8), substr($h, 8, 4), substr($h, 12, 4), substr($h, 16, 4), substr($h, 20);
}

# A message row with a tracking value (SQL text, or NULL).
sub message {
    my ($to, $tracking, $status) = @_;
    my $id = uuid();
    sql("INSERT INTO messages (id, tenant_id, status, from_addr, to_addr, subject, text_body, tracking)"
        . " VALUES ('$id', '$A->{id}', '" . ($status // 'delivered') . "', 'news\@acme.example', '$to', 'Hi', 'Hello', "
        . (defined $tracking ? "'$tracking'::jsonb" : 'NULL') . ")");
    return $id;
}

my $UA = 'Mozilla/5.0 (mailerd test)';
sub get { my ($path, %h) = @_; return $t->request('GET', $path, headers => { 'User-Agent' => $UA, %h }) }
sub post {
    my ($path, $ct, $body) = @_;
    return $t->request('POST', $path, headers => { 'User-Agent' => $UA, defined $ct ? ('Content-Type' => $ct) : () },
                       body => $body);
}
sub events { my ($id, $type) = @_; sql("SELECT count(*) FROM events WHERE message_id = '$id'" . ($type ? " AND type = '$type'" : '')) }
sub code { ($_[0]{json} // {})->{error}{code} // '' }

my $L0 = 'https://example.com/offer?a=1&b=two#top';
my $L1 = "https://example.org/caf\x{c3}\x{a9}/\x{e2}\x{82}\x{ac}";    # UTF-8 bytes of café/€
my $L1_loc = 'https://example.org/caf%C3%A9/%E2%82%AC';
my $links = '["https://example.com/offer?a=1&b=two#top", "https://example.org/caf\u00e9/\u20ac"]';
my $M1 = message('j.doe@example.com', qq({"opens": true, "clicks": true, "unsubscribe": true, "links": $links}), 'sent');

# --- clicks ---------------------------------------------------------------------------------
my $tok0 = token(kind => CLICK, msg => $M1, link => 0);
my $tok1 = token(kind => CLICK, msg => $M1, link => 1);
is(length $tok0, 50, 'a click token is 50 characters');
{
    my $r = get("/t/c/$tok0");
    is($r->{status}, 302, 'click: 302') or diag($r->{body});
    is($r->{headers}{location}, $L0, '... to exactly links[0]');
    is($r->{headers}{'cache-control'}, 'no-store', '... not cached');
    is(events($M1, 'clicked'), 1, 'a clicked event');
    my $d = decode_json(sql("SELECT data FROM events WHERE message_id = '$M1' AND type = 'clicked'"));
    is_deeply($d, { url => $L0, link => 0, user_agent => $UA, ip => '127.0.0.1' },
              '... with url, link, user agent and ip');
    is(sql("SELECT tenant_id FROM events WHERE message_id = '$M1'"), $A->{id}, "... of the message's tenant");

    $r = get("/t/c/$tok1");
    is($r->{status}, 302, 'click on link 1: 302');
    is($r->{headers}{location}, $L1_loc, '... non-ASCII bytes percent-encoded');
    is(sql("SELECT data->>'url' = convert_from('\\x" . unpack('H*', $L1) . "', 'UTF8') FROM events"
           . " WHERE message_id = '$M1' AND type = 'clicked' AND data->>'link' = '1'"), 't',
       '... the event holds the original URL');
    is(sql("SELECT status FROM messages WHERE id = '$M1'"), 'sent', 'a click does not move the status');

    # rotation: made with previous_secret under its id
    my $old = token(kind => CLICK, msg => $M1, link => 0, secret => $PREV, key_id => 7);
    $r = get("/t/c/$old");
    is($r->{status}, 302, 'a token made with previous_secret still redirects');
    is($r->{headers}{location}, $L0, '... to the same URL');
}
{
    my $r = $t->request('HEAD', "/t/c/$tok0");
    is($r->{status}, 302, 'HEAD on a click link: 302');
    is($r->{headers}{location}, $L0, '... to the same URL');
}
is(events($M1, 'clicked'), 3, 'three clicks stored (HEAD records none)');

# Every way a click token can be wrong: 404 not_found and nothing stored.
{
    my $before = sql("SELECT count(*) FROM events");
    my @alpha = ('A' .. 'Z', 'a' .. 'z', 0 .. 9, '-', '_');
    my ($bad, $n) = (0, 0);
    for my $i (0 .. length($tok0) - 1) {
        my $c = substr($tok0, $i, 1);
        # one change per position, and every other character at the last one
        # (whose low bits are padding: a change there must be refused as well)
        my @repl = $i == length($tok0) - 1 ? grep { $_ ne $c } @alpha : ($alpha[(index(join('', @alpha), $c) + 1 + $i) % 64]);
        for my $x (@repl) {
            my $m = $tok0;
            substr($m, $i, 1, $x);
            my $r = get("/t/c/$m");
            $n++;
            $bad++ unless $r->{status} == 404 && code($r) eq 'not_found';
            diag("changed at $i to $x: $r->{status}") unless $r->{status} == 404;
        }
    }
    is($bad, 0, "all $n single-character changes of a click token: 404 not_found");
    my @cases = (
        [ substr($tok0, 0, 49), 'truncated by one' ],
        [ substr($tok0, 0, 47), 'truncated to the length of an open token' ],
        [ $tok0 . 'A', 'one character more' ],
        [ token(kind => CLICK, msg => $M1, link => 0, secret => 'another-secret-0123456789abcdef'), 'an unknown secret' ],
        [ token(kind => CLICK, msg => $M1, link => 0, key_id => 9), 'an unknown key id' ],
        [ token(kind => CLICK, msg => $M1, link => 0, secret => $PREV, key_id => 1), 'the previous secret under the current id' ],
        [ token(kind => CLICK, msg => $M1, link => 0, version => 2), 'version 2' ],
        [ token(kind => OPEN, msg => $M1), 'an open token' ],
        [ token(kind => UNSUB, msg => $M1), 'an unsubscribe token' ],
        [ token(kind => CLICK, msg => $M1, link => 2), 'a link index past the list' ],
        [ token(kind => CLICK, msg => $M1, link => 65535), 'link index 65535' ],
        [ token(kind => CLICK, msg => uuid(), link => 0), 'an unknown message' ],
        [ "$tok0=", 'with padding' ],
        [ 'x' x 200, 'a long junk token' ],
    );
    for my $c (@cases) {
        my $r = get("/t/c/$c->[0]");
        ok($r->{status} == 404 && code($r) eq 'not_found' && ($r->{headers}{'cache-control'} // '') eq 'no-store',
           "click, $c->[1]: 404 not_found, no-store")
          or diag("$r->{status} $r->{body}");
    }
    is(sql("SELECT count(*) FROM events"), $before, 'no event for any of them');
    my $untracked = message('u@example.com', undef);
    is(get('/t/c/' . token(kind => CLICK, msg => $untracked, link => 0))->{status}, 404,
       'a message without tracking links: 404');
    is(events($untracked), 0, '... no event');
}

# --- the open pixel ---------------------------------------------------------------------
my $GIF = pack('H*', '47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b');
{
    my $r = get('/t/o/' . token(kind => OPEN, msg => $M1));
    is($r->{status}, 200, 'open: 200');
    is($r->{headers}{'content-type'}, 'image/gif', '... image/gif');
    is($r->{headers}{'cache-control'}, 'no-store', '... not cached');
    is(length $r->{body}, 43, '... 43 bytes');
    is($r->{body}, $GIF, '... the transparent GIF');
    is(events($M1, 'opened'), 1, 'an opened event');
    is_deeply(decode_json(sql("SELECT data FROM events WHERE message_id = '$M1' AND type = 'opened'")),
              { user_agent => $UA, ip => '127.0.0.1' }, '... with user agent and ip');
    for my $c ([ token(kind => CLICK, msg => $M1, link => 0), 'a click token' ],
               [ token(kind => OPEN, msg => $M1, secret => 'another-secret-0123456789abcdef'), 'an unknown secret' ],
               [ token(kind => OPEN, msg => uuid()), 'an unknown message' ],
               [ substr(token(kind => OPEN, msg => $M1), 1), 'truncated' ]) {
        $r = get("/t/o/$c->[0]");
        ok($r->{status} == 404 && code($r) eq 'not_found', "open, $c->[1]: 404") or diag("$r->{status} $r->{body}");
    }
    is($t->request('HEAD', '/t/o/' . token(kind => OPEN, msg => $M1))->{status}, 200, 'HEAD on the pixel: 200');
    is(events($M1, 'opened'), 1, 'no event for them, nor for HEAD');
    my $no_opens = message('n@example.com', '{"opens": false, "clicks": true, "links": []}');
    $r = get('/t/o/' . token(kind => OPEN, msg => $no_opens));
    is($r->{status}, 200, 'a message that does not track opens still gets the pixel');
    is(events($no_opens), 0, '... and no event');
}

# --- unsubscribe ---------------------------------------------------------------------------
my $unsub = '{"opens": false, "clicks": false, "unsubscribe": true}';
my $M2 = message('Gmail.User@Example.COM', $unsub);
my $M3 = message('yahoo.user@example.net', $unsub);
my $M4 = message('page.user@example.com', $unsub);
my $M5 = message('bounced@example.com', $unsub);
sub supp { sql("SELECT reason || '|' || source || '|' || coalesce(detail, '') || '|' || CASE WHEN expires_at IS NULL THEN 't' ELSE 'f' END"
               . " FROM suppressions WHERE tenant_id = '$A->{id}' AND address = '$_[0]'") }
my $FORM = 'application/x-www-form-urlencoded';
{
    my $u2 = token(kind => UNSUB, msg => $M2);
    is(length $u2, 47, 'an unsubscribe token is 47 characters');
    my $r = get("/u/$u2");
    is($r->{status}, 200, 'GET /u: 200');
    like($r->{headers}{'content-type'}, qr{^text/html}, '... HTML');
    is($r->{headers}{'cache-control'}, 'no-store', '... not cached');
    like($r->{body}, qr{<form method="post" action="\Q$u2\E\?via=page">}, '... a form posting back to the same path');
    like($r->{body}, qr{<input type="hidden" name="List-Unsubscribe" value="One-Click">}, '... with the one-click field');
    like($r->{body}, qr{G\*\*\*\@example\.com}, '... the address masked, domain as the suppression keeps it');
    unlike($r->{body}, qr{Gmail\.User}i, '... never whole');
    like($r->{headers}{'content-security-policy'} // '', qr/default-src 'none'/, '... a CSP that loads nothing');
    is(supp('Gmail.User@example.com'), '', 'GET changes nothing: no suppression');
    is(events($M2), 0, '... no event');
    is(get('/u/' . token(kind => UNSUB, msg => uuid()))->{status}, 404, 'GET /u for an unknown message: 404');
    is(get('/u/' . token(kind => OPEN, msg => $M2))->{status}, 404, 'GET /u with an open token: 404');

    # refusals first: nothing may change
    $r = post("/u/$u2", $FORM, 'List-Unsubscribe=Two-Click');
    ok($r->{status} == 400 && code($r) eq 'invalid_body', 'a wrong body: 400 invalid_body') or diag($r->{body});
    $r = post("/u/$u2", $FORM, '');
    ok($r->{status} == 400 && code($r) eq 'invalid_body', 'an empty body: 400 invalid_body');
    $r = post("/u/$u2", 'text/plain', 'List-Unsubscribe=One-Click');
    ok($r->{status} == 415 && code($r) eq 'unsupported_media_type', 'text/plain: 415 unsupported_media_type');
    $r = post("/u/$u2", $FORM, 'List-Unsubscribe=One-Click&' . ('x' x 10000));
    is($r->{status}, 400, 'an oversized body: 400');
    for my $c ([ substr($u2, 0, 46) . (substr($u2, 46) eq 'A' ? 'B' : 'A'), 'a changed token' ],
               [ token(kind => CLICK, msg => $M2, link => 0), 'a click token' ],
               [ token(kind => UNSUB, msg => $M2, secret => 'another-secret-0123456789abcdef'), 'an unknown secret' ],
               [ token(kind => UNSUB, msg => uuid()), 'an unknown message' ]) {
        $r = post("/u/$c->[0]", $FORM, 'List-Unsubscribe=One-Click');
        ok($r->{status} == 404 && code($r) eq 'not_found', "POST /u, $c->[1]: 404") or diag("$r->{status} $r->{body}");
    }
    is(supp('Gmail.User@example.com'), '', 'still no suppression');
    is(events($M2), 0, 'still no event');

    # Gmail: exactly this body and type
    $r = post("/u/$u2", 'application/x-www-form-urlencoded', 'List-Unsubscribe=One-Click');
    is($r->{status}, 200, "Gmail's one-click POST: 200") or diag($r->{body});
    like($r->{headers}{'content-type'}, qr{^text/html}, '... an HTML answer');
    like($r->{body}, qr/[Uu]nsubscribed/, '... saying so');
    is(supp('Gmail.User@example.com'), 'unsubscribe|unsubscribe|one-click|t',
       'suppressed for good: reason and source unsubscribe, domain lower-cased');
    is(events($M2, 'unsubscribed'), 1, 'an unsubscribed event');
    is_deeply(decode_json(sql("SELECT data FROM events WHERE message_id = '$M2'")),
              { how => 'one-click', user_agent => $UA, ip => '127.0.0.1' }, '... with how, user agent and ip');
    is(sql("SELECT status FROM messages WHERE id = '$M2'"), 'delivered', 'the status does not move');

    $r = post("/u/$u2", $FORM, 'List-Unsubscribe=One-Click');
    is($r->{status}, 200, 'the same POST again: 200');
    is(events($M2), 1, '... adds no second event');
    is(sql("SELECT count(*) FROM suppressions WHERE tenant_id = '$A->{id}'"), 1, '... nor a suppression');

    # Concurrent unsubscribes of one message (a provider's retry racing the
    # recipient's click): one event.
    my $M6 = message('race@example.com', $unsub);
    my $p6 = '/u/' . token(kind => UNSUB, msg => $M6);
    my $body = 'List-Unsubscribe=One-Click';
    my @socks = map { $t->connect or die "connect: $!" } 1 .. 8;
    print $_ "POST $p6 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: $FORM\r\n"
      . "Content-Length: " . length($body) . "\r\n\r\n$body" for @socks;
    my @st = map { (MailerdTest::parse_response(MailerdTest::read_all($_, 10)))[0]{status} // 0 } @socks;
    close $_ for @socks;
    is_deeply(\@st, [ (200) x 8 ], '8 concurrent one-click POSTs: all 200');
    is(events($M6), 1, '... one unsubscribed event');

    # Yahoo: multipart with a real-looking boundary
    my $b = '----=_Part_1712_1053476351.1700000000000';
    my $yahoo = "--$b\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--$b--\r\n";
    $r = post('/u/' . token(kind => UNSUB, msg => $M3), "multipart/form-data; boundary=$b", $yahoo);
    is($r->{status}, 200, "Yahoo's multipart one-click POST: 200") or diag($r->{body});
    is(supp('yahoo.user@example.net'), 'unsubscribe|unsubscribe|one-click|t', '... suppressed');
    is(events($M3, 'unsubscribed'), 1, '... one unsubscribed event');

    # the page's button; an expiring entry becomes permanent
    sql("INSERT INTO suppressions (tenant_id, address, reason, expires_at, source) VALUES"
        . " ('$A->{id}', 'page.user\@example.com', 'manual', now() + interval '1 day', 'api'),"
        . " ('$A->{id}', 'bounced\@example.com', 'hard_bounce', NULL, 'hard_bounce')");
    $r = post('/u/' . token(kind => UNSUB, msg => $M4) . '?via=page', $FORM, 'List-Unsubscribe=One-Click');
    is($r->{status}, 200, "the page's button: 200");
    is(supp('page.user@example.com'), 'unsubscribe|unsubscribe|page|t', '... an expiring entry made permanent, how=page');
    is(sql("SELECT data->>'how' FROM events WHERE message_id = '$M4'"), 'page', '... the event says page');
    $r = post('/u/' . token(kind => UNSUB, msg => $M5), $FORM, 'List-Unsubscribe=One-Click');
    is($r->{status}, 200, 'unsubscribe of an address already suppressed for good: 200');
    is(supp('bounced@example.com'), 'hard_bounce|hard_bounce||t', '... the permanent entry is kept');
    is(events($M5, 'unsubscribed'), 1, '... the event is still stored');

    # the next send is refused
    $r = $t->json_request($A->{key}, 'POST', '/v1/messages',
                          { from => 'news@acme.example', to => 'Gmail.User@example.com', subject => 'Again', text => 'Hi' });
    is($r->{status}, 422, 'a send to the unsubscribed address: 422') or diag($r->{body});
    is(code($r), 'suppressed', '... suppressed');
    $r = $t->json_request($A->{key}, 'POST', '/v1/messages',
                          { from => 'news@acme.example', to => 'yahoo.user@example.net', subject => 'Again', text => 'Hi' });
    is(code($r), 'suppressed', 'the Yahoo address too');
}

# --- metrics --------------------------------------------------------------------------------
{
    my $m = $t->request('GET', '/metrics')->{body};
    my %want = (clicked => 3, opened => 1, unsubscribed => 5);
    for my $type (sort keys %want) {
        my ($v) = $m =~ /^mailerd_events_total\{type="$type"\} (\d+)/m;
        is($v, $want{$type}, "mailerd_events_total{type=\"$type\"} $want{$type}");
    }
    my ($s) = $m =~ /^mailerd_suppressions_added_total\{reason="unsubscribe"\} (\d+)/m;
    is($s, 4, 'mailerd_suppressions_added_total{reason="unsubscribe"} 4 (the kept hard bounce not counted)');
}

# --- PostgreSQL down -------------------------------------------------------------------------
{
    $pg->stop('fast');
    my $r = get("/t/c/$tok0");
    ok($r->{status} == 503 && code($r) eq 'store_unavailable', 'PostgreSQL down: a click is 503') or diag("$r->{status} $r->{body}");
    $r = get('/t/o/' . token(kind => OPEN, msg => $M1));
    ok($r->{status} == 200 && $r->{body} eq $GIF, '... the pixel is still served');
    $r = post('/u/' . token(kind => UNSUB, msg => $M2), $FORM, 'List-Unsubscribe=One-Click');
    is($r->{status}, 503, '... an unsubscribe is 503 (the provider retries)');
    $pg->start;
    ok(wait_for(sub { get("/t/c/$tok0")->{status} == 302 }, 20), 'clicks work again once it is back');
}

# --- without the tracking block ----------------------------------------------------------------
{
    my $new = $t->reload_conf(sub { my $c = shift; $c =~ s/tracking \{.*?\n\}\n//s; $c });
    ok($new, 'reloaded without the tracking block');
    for my $c ([ 'GET', "/t/c/$tok0" ], [ 'GET', '/t/o/' . token(kind => OPEN, msg => $M1) ],
               [ 'GET', '/u/' . token(kind => UNSUB, msg => $M2) ],
               [ 'POST', '/u/' . token(kind => UNSUB, msg => $M2) ]) {
        my $r = $c->[0] eq 'GET' ? get($c->[1]) : post($c->[1], $FORM, 'List-Unsubscribe=One-Click');
        ok($r->{status} == 404 && code($r) eq 'tracking_not_configured', "$c->[0] $c->[1]: 404 tracking_not_configured")
          or diag("$r->{status} $r->{body}");
    }
}

$t->stop;
done_testing;
