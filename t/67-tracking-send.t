# Tracking and List-Unsubscribe at accept (issue 7, point 4), end to end
# against the real stack (PostgreSQL, Redis, mailerd with 2 workers and the
# sink ESP), reading the delivered .eml with Python's email package:
#   - tracking { } is checked at load (public_url, secrets, ids, domain);
#   - tenants carry tracking defaults (admin API: create, PATCH, GET), taken
#     at once by the workers' cached keys; a send's "tracking" overrides each;
#   - tracked html: every http(s) link goes to BASE/t/c/TOKEN and the pixel
#     BASE/t/o/TOKEN is added; tokens name the message, the link index and the
#     key id; the original URLs are stored in order (entities decoded), mailto
#     and #anchors are left alone; untracked mail is delivered byte for byte;
#   - following the delivered links: 302 to exactly the original URL, the open
#     pixel, events recorded; a token edited by one character gets 404;
#   - bulk mail carries List-Unsubscribe (https URL + mailto) and
#     List-Unsubscribe-Post; the caller's own List-Unsubscribe wins;
#     transactional mail has none; the delivered one-click URL unsubscribes
#     with Gmail's exact POST and the next send to the address is refused;
#   - batch sends: one set of tokens per recipient;
#   - rotation: after a reload that moves the secret to previous_secret, old
#     links still work and new mail uses the new key id;
#   - without the block: a send asking for tracking is 422
#     tracking_not_configured, tenant defaults and bulk mail add nothing.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use JSON::PP;
use MIME::Base64 qw(decode_base64);
use Time::HiRes qw(time sleep);
use MailerdTest qw(wait_for slurp);
use MailerdEml qw(parse_eml);

MailerdTest::skip_without_store();
plan skip_all => 'no /usr/bin/python3' unless -x '/usr/bin/python3';

my $SECRET1 = 'first-secret-0123456789abcdefghijklmnop';
my $SECRET2 = 'second-secret-ABCDEFGHIJKLMNOPQRSTUVWXYZ';
my $BASE = 'https://track.example.test';

# --- 0. configuration: checked at load, with FILE:LINE -----------------------------------------
{
    my $c = MailerdTest->new;
    for my $case (
        ["tracking {\n  secret $SECRET1;\n}\n", qr/needs "public_url"/, 'public_url required'],
        ["tracking {\n  public_url $BASE;\n}\n", qr/needs "secret" or "secret_file"/, 'secret required'],
        ["tracking {\n  public_url ftp://x.example;\n  secret $SECRET1;\n}\n", qr/:2: "public_url" must be an http\(s\) URL/, 'public_url scheme'],
        ["tracking {\n  public_url $BASE/?a=1;\n  secret $SECRET1;\n}\n", qr/:2: "public_url" must be/, 'public_url with a query'],
        ["tracking {\n  public_url $BASE;\n  secret short;\n}\n", qr/at least 16 bytes/, 'short secret'],
        ["tracking {\n  public_url $BASE;\n  secret $SECRET1;\n  secret_id 256;\n}\n", qr/:4: .*secret_id/, 'secret_id range'],
        ["tracking {\n  public_url $BASE;\n  secret $SECRET1;\n  previous_secret $SECRET2;\n  previous_secret_id 1;\n}\n",
         qr/"previous_secret_id" must differ/, 'previous id = current id'],
        ["tracking {\n  public_url $BASE;\n  secret $SECRET1;\n  secret_file x;\n}\n", qr/both given/, 'secret and secret_file'],
        ["tracking {\n  public_url $BASE;\n  secret $SECRET1;\n  unsubscribe_mailto_domain bad_domain;\n}\n",
         qr/"unsubscribe_mailto_domain" must be a domain/, 'mailto domain'],
        ["tracking {\n  public_url $BASE;\n  secret $SECRET1;\n}\ntracking {\n  public_url $BASE;\n  secret $SECRET1;\n}\n",
         qr/:\d+: "tracking" directive is duplicate/, 'duplicate block'],
        ["tracking {\n  public_url $BASE/;\n  secret $SECRET1;\n  previous_secret $SECRET2;\n  previous_secret_id 9;\n"
           . "  unsubscribe_mailto_domain unsub.example.test;\n}\n", undef, 'a full block'],
      ) {
        my ($text, $want, $name) = @$case;
        my $f = $c->write_conf($text, "check.conf");
        my ($rc, $out) = $c->run_cmd('-t', '-p', $c->dir, '-c', $f);
        if ($want) {
            ok($rc != 0 && $out =~ $want, "config: $name") or diag($out);
        } else {
            is($rc, 0, "config: $name") or diag($out);
        }
    }
}

my $tracking_block = "tracking {\n    public_url $BASE/;\n    secret $SECRET1;\n    secret_id 3;\n"
  . "    unsubscribe_mailto_domain unsub.example.test;\n}\n";
my $S = MailerdTest->stack(tenants => 2, main_extra => "esp sink {\n    dir sink;\n}\n" . $tracking_block);
my $t = $S->{t};
my $pg = $S->{pg};
my ($A, $B) = @{ $S->{tenants} };
my $dir = $t->dir;
my $json = JSON::PP->new->canonical;

sub sql { scalar $pg->psql($_[0]) }
sub api { $t->json_request(@_) }
sub admin { $t->json_request($S->{admin}, @_) }

sub err_is {
    my ($r, $status, $code, $field, $name) = @_;
    my $e = ($r->{json} // {})->{error} // {};
    my $ok = $r->{status} == $status && ($e->{code} // '') eq $code
      && (!defined $field || ($e->{field} // '') eq $field);
    ok($ok, $name) or diag("got $r->{status} $r->{body}");
}

my $HTML = '<html><body><p>Hi</p>'
  . '<a href="https://shop.example/a?x=1&amp;y=2">A</a> '
  . '<a href="mailto:help@acme.example">mail us</a> '
  . '<a href="#top">top</a> '
  . "<a class=\"btn\" href='https://shop.example/b'>B</a>"
  . '</body></html>';
my %msg = (from => 'Shop <shop@acme.example>', to => 'Jane <jane@example.com>', subject => 'Deals', text => 'plain https://shop.example/t',
           html => $HTML);

# Sends one message as tenant $who; returns its id (or fails the test).
sub send_one {
    my ($who, %o) = @_;
    my $r = api($who->{key}, 'POST', '/v1/messages', { %msg, %o });
    is($r->{status}, 202, "send accepted") or diag($r->{body});
    return ((($r->{json} // {})->{data} // [])->[0] // {})->{id};
}

# The delivered .eml of $id, parsed; waits for the sink.
sub delivered {
    my ($id) = @_;
    my $f = "$dir/sink/$id.eml";
    wait_for(sub { -s $f }, 15) or return undef;
    return parse_eml($f);
}

sub part {
    my ($e, $type) = @_;
    my ($p) = grep { $_->{type} eq $type } @{ ($e // {})->{parts} // [] };
    return ($p // {})->{body} // '';
}

# Decodes a token: (key id, kind, message id as uuid text, link index or undef).
sub token_fields {
    my ($tok) = @_;
    (my $b = $tok) =~ tr{-_}{+/};
    $b .= '=' x ((4 - length($b) % 4) % 4);
    my $raw = decode_base64($b);
    my @b = unpack('C*', $raw);
    my $hex = unpack('H*', substr($raw, 3, 16));
    my $uuid = join('-', unpack('A8 A4 A4 A4 A12', $hex));
    return ($b[1], $b[2], $uuid, @b == 37 ? $b[19] * 256 + $b[20] : undef);
}

sub get_msg { (api(($_[1] // $A)->{key}, 'GET', "/v1/messages/$_[0]") // {})->{json} // {} }

sub events_of {
    my ($id, $type) = @_;
    return sql("SELECT count(*) FROM events WHERE message_id = '$id' AND type = '$type'");
}

# --- 1. tenant defaults through the admin API ------------------------------------------------
{
    my $r = admin('GET', "/v1/admin/tenants/$A->{id}");
    is_deeply($r->{json}{tracking}, { opens => JSON::PP::false, clicks => JSON::PP::false },
              'a tenant tracks nothing by default');
    err_is(admin('PATCH', "/v1/admin/tenants/$A->{id}", { tracking => { opens => 'yes' } }),
           422, 'validation_failed', '/tracking/opens', 'tracking.opens must be a boolean');
    err_is(admin('PATCH', "/v1/admin/tenants/$A->{id}", { tracking => { views => JSON::PP::true } }),
           422, 'validation_failed', '/tracking', 'unknown tracking member');
    err_is(admin('PATCH', "/v1/admin/tenants/$A->{id}", { tracking => [] }),
           422, 'validation_failed', '/tracking', 'tracking must be an object');
    $r = admin('POST', '/v1/admin/tenants', { name => 'tracked', tracking => { opens => JSON::PP::true } });
    is($r->{status}, 201, 'create with tracking defaults') or diag($r->{body});
    is_deeply(($r->{json} // {})->{tracking}, { opens => JSON::PP::true, clicks => JSON::PP::false },
              'created with opens on');
}

# --- 2. per-message tracking: rewritten links, the pixel, stored URLs -------------------------
my ($click_a, $click_b, $open_tok, $tracked_id);
{
    my $id = send_one($A, tracking => { opens => JSON::PP::true, clicks => JSON::PP::true });
    $tracked_id = $id;
    my $e = delivered($id);
    ok($e, 'tracked message delivered') or BAIL_OUT('no delivery');
    my $html = part($e, 'text/html');
    my @clicks = $html =~ m{href="\Q$BASE\E/t/c/([A-Za-z0-9_-]+)"}g;
    is(scalar @clicks, 2, 'both http(s) links rewritten') or diag($html);
    ($click_a, $click_b) = @clicks;
    like($html, qr{href="mailto:help\@acme\.example"}, 'mailto left alone');
    like($html, qr{href="#top"}, 'anchor left alone');
    like($html, qr{<a class="btn" href="\Q$BASE\E/t/c/}, 'the rest of the tag kept');
    unlike($html, qr{shop\.example}, 'no original URL left in the html');
    ($open_tok) = $html =~ m{<img src="\Q$BASE\E/t/o/([A-Za-z0-9_-]+)" width="1" height="1"};
    ok($open_tok, 'open pixel added') or diag($html);
    like($html, qr{<img src="[^"]+/t/o/[^"]+"[^>]*></body>}, 'pixel just before </body>');
    is(part($e, 'text/plain'), "plain https://shop.example/t", 'text part untouched')
      or diag(part($e, 'text/plain'));

    my @f = token_fields($click_a);
    is_deeply(\@f, [ 3, 1, $id, 0 ], 'click token: key id 3, kind click, this message, link 0');
    @f = token_fields($click_b);
    is_deeply(\@f, [ 3, 1, $id, 1 ], 'second link: index 1');
    @f = token_fields($open_tok // '');
    is_deeply([ @f[0 .. 2] ], [ 3, 2, $id ], 'open token: kind open, this message');

    my $m = get_msg($id);
    is_deeply($m->{tracking},
              { opens => JSON::PP::true, clicks => JSON::PP::true, unsubscribe => JSON::PP::false,
                links => [ 'https://shop.example/a?x=1&y=2', 'https://shop.example/b' ] },
              'GET message: tracking with the original URLs in order, entities decoded');
    ok(!exists $e->{headers}{'list-unsubscribe'}, 'transactional mail: no List-Unsubscribe');
}

# --- 3. following the delivered links --------------------------------------------------------
{
    my $r = $t->request('GET', "/t/c/$click_a");
    is($r->{status}, 302, 'click: 302') or diag($r->{body});
    is($r->{headers}{location}, 'https://shop.example/a?x=1&y=2', 'to exactly the original URL');
    $r = $t->request('GET', "/t/c/$click_b");
    is($r->{headers}{location}, 'https://shop.example/b', 'second link to its own URL');
    my $bad = $click_a;
    substr($bad, 10, 1) = substr($bad, 10, 1) eq 'A' ? 'B' : 'A';
    $r = $t->request('GET', "/t/c/$bad");
    is($r->{status}, 404, 'a token changed in one character: 404');
    ok(!defined $r->{headers}{location}, '... and no redirect');
    $r = $t->request('GET', "/t/o/$open_tok");
    is($r->{status}, 200, 'open pixel: 200');
    like($r->{headers}{'content-type'} // '', qr{^image/gif}, 'a GIF');
    ok(wait_for(sub { events_of($tracked_id, 'clicked') == 2 && events_of($tracked_id, 'opened') == 1 }, 5),
       'clicked x2 and opened x1 recorded');
}

# --- 4. tenant defaults, per-message overrides, untracked mail ---------------------------------
{
    my $r = admin('PATCH', "/v1/admin/tenants/$A->{id}", { tracking => { clicks => JSON::PP::true } });
    is($r->{status}, 200, 'PATCH tracking') or diag($r->{body});
    is_deeply(($r->{json} // {})->{tracking}, { opens => JSON::PP::false, clicks => JSON::PP::true },
              'clicks on, opens unchanged');
    # The key is cached by the workers: the PATCH must reach them at once.
    my $id = send_one($A);
    my $html = part(delivered($id), 'text/html');
    like($html, qr{/t/c/}, 'tenant default clicks: links rewritten without a tracking field');
    unlike($html, qr{/t/o/}, '... and no pixel (opens off)');

    $id = send_one($A, tracking => { clicks => JSON::PP::false });
    my $e = delivered($id);
    is(part($e, 'text/html'), $HTML, 'per-message clicks:false overrides the tenant: html byte for byte')
      or diag(part($e, 'text/html'));
    ok(!defined get_msg($id)->{tracking}, 'nothing tracked: tracking null');

    $id = send_one($B);
    is(part(delivered($id), 'text/html'), $HTML, 'a tenant with no defaults: untouched');

    $id = send_one($A, tracking => { opens => JSON::PP::true }, html => undef);
    ok(delivered($id), 'tracking asked on a text-only message: delivered');
    is_deeply(get_msg($id)->{tracking}{links}, [], 'no html: no links');

    err_is(api($A->{key}, 'POST', '/v1/messages', { %msg, to => 'x@example.com', tracking => { opens => 1 } }),
           422, 'invalid_type', '/tracking/opens', 'send: tracking.opens must be a boolean');
    is(sql("SELECT count(*) FROM messages WHERE to_addr = 'x\@example.com'"), 0, 'nothing stored');
}

# --- 5. bulk mail: List-Unsubscribe, one-click -------------------------------------------------
{
    my $id = send_one($B, priority => 'bulk', to => 'Reader <reader@example.net>');
    my $e = delivered($id);
    my $lu = $e->{headers}{'list-unsubscribe'} // '';
    like($lu, qr{^<\Q$BASE\E/u/[A-Za-z0-9_-]+>, <mailto:unsub\+[a-z2-7]+\@unsub\.example\.test>$},
         'bulk: List-Unsubscribe with the https URL and the mailto') or diag($lu);
    is($e->{headers}{'list-unsubscribe-post'}, 'List-Unsubscribe=One-Click', 'List-Unsubscribe-Post (RFC 8058)');
    my ($utok) = $lu =~ m{/u/([A-Za-z0-9_-]+)>};
    my @f = token_fields($utok // '');
    is_deeply([ @f[0 .. 2] ], [ 3, 3, $id ], 'unsubscribe token: kind 3, this message');
    is(get_msg($id, $B)->{tracking}{unsubscribe}, JSON::PP::true, 'recorded as unsubscribe-capable');
    is(part($e, 'text/html'), $HTML, 'bulk without tracking: html untouched');

    my $r = $t->request('GET', "/u/$utok");
    is($r->{status}, 200, 'GET /u: the confirmation page');
    is(sql("SELECT count(*) FROM suppressions WHERE tenant_id = '$B->{id}'"), 0, '... which changes nothing');
    $r = $t->request('POST', "/u/$utok", headers => { 'Content-Type' => 'application/x-www-form-urlencoded' },
                     body => 'List-Unsubscribe=One-Click');
    is($r->{status}, 200, "one-click POST with Gmail's body: 200") or diag($r->{body});
    is(sql("SELECT reason FROM suppressions WHERE tenant_id = '$B->{id}' AND address = 'reader\@example.net'"),
       'unsubscribe', 'the recipient is suppressed for the tenant');
    is(events_of($id, 'unsubscribed'), 1, 'one unsubscribed event');
    err_is(api($B->{key}, 'POST', '/v1/messages', { %msg, to => 'reader@example.net' }),
           422, 'suppressed', undef, 'the next send to the address is refused');

    # An IDN recipient: the suppression key is the A-label form accept looks up.
    my $idn = "leser\@b\x{fc}cher.example";
    my $body = JSON::PP->new->utf8->canonical->encode({ %msg, to => $idn, priority => 'bulk' });
    $r = $t->request('POST', '/v1/messages', body => $body,
                     headers => { Authorization => "Bearer $B->{key}", 'Content-Type' => 'application/json' });
    is($r->{status}, 202, 'bulk send to an IDN address') or diag($r->{body});
    my $iid = ((($r->{json} // {})->{data} // [])->[0] // {})->{id};
    my ($itok) = ((delivered($iid) // {})->{headers}{'list-unsubscribe'} // '') =~ m{/u/([A-Za-z0-9_-]+)>};
    $r = $t->request('POST', "/u/$itok", headers => { 'Content-Type' => 'application/x-www-form-urlencoded' },
                     body => 'List-Unsubscribe=One-Click');
    is($r->{status}, 200, 'IDN recipient: one-click unsubscribe');
    is(sql("SELECT address FROM suppressions WHERE tenant_id = '$B->{id}' AND reason = 'unsubscribe'"
           . " AND address LIKE 'leser\@%'"), 'leser@xn--bcher-kva.example', 'suppressed under the A-label key');
    $r = $t->request('POST', '/v1/messages', body => $body,
                     headers => { Authorization => "Bearer $B->{key}", 'Content-Type' => 'application/json' });
    err_is($r, 422, 'suppressed', undef, 'the next send to the IDN address is refused');

    my $own = '<mailto:leave@acme.example>';
    $id = send_one($B, priority => 'bulk', headers => { 'list-unsubscribe' => $own });
    $e = delivered($id);
    is($e->{headers}{'list-unsubscribe'}, $own, "the caller's own List-Unsubscribe is kept");
    ok(!exists $e->{headers}{'list-unsubscribe-post'}, '... and none of ours added');
}

# --- 6. batch sends: tokens per recipient -------------------------------------------------------
{
    my $r = api($A->{key}, 'POST', '/v1/messages/batch',
                { from => $msg{from}, subject => 'Batch', html => $HTML, tracking => { opens => JSON::PP::true },
                  recipients => [ { to => 'b1@example.com' }, { to => 'b2@example.com' } ] });
    is($r->{status}, 202, 'batch with tracking accepted') or diag($r->{body});
    my @ids = map { $_->{id} } @{ ($r->{json} // {})->{accepted} // [] };
    is(scalar @ids, 2, 'two messages');
    my %seen;
    for my $id (@ids) {
        my $html = part(delivered($id), 'text/html');
        my @toks = $html =~ m{/t/[co]/([A-Za-z0-9_-]+)}g;
        is(scalar @toks, 3, "$id: two links and a pixel");
        is((token_fields($_))[2], $id, "token names its own message") for @toks;
        $seen{$_}++ for @toks;
    }
    is(scalar(grep { $_ > 1 } values %seen), 0, 'no token shared between recipients');

    # Per-batch counts: two opens of the first message, one of the second, one click.
    my ($o1) = grep { (token_fields($_))[1] == 2 && (token_fields($_))[2] eq $ids[0] } keys %seen;
    my ($o2) = grep { (token_fields($_))[1] == 2 && (token_fields($_))[2] eq $ids[1] } keys %seen;
    $t->request('GET', "/t/o/$_") for $o1, $o1, $o2;
    my $bid = $r->{json}{batch_id};
    my $b = wait_for(sub {
        my $j = api($A->{key}, 'GET', "/v1/batches/$bid")->{json} // {};
        (($j->{events} // {})->{opened} // {})->{total} == 3 ? $j : undef
    }, 5);
    is_deeply(($b // {})->{events}{opened}, { total => 3, messages => 2 }, 'batch: opens counted, total and unique');
    is_deeply(($b // {})->{events}{delivered}, { total => 2, messages => 2 }, 'batch: deliveries counted');
    is(($b // {})->{counts}{delivered}, 2, 'batch: status counts as before');
}

# --- 7. rotation ------------------------------------------------------------------------------
{
    my $new = $tracking_block;
    $new =~ s/secret \Q$SECRET1\E;\n    secret_id 3;/secret $SECRET2;\n    secret_id 4;\n    previous_secret $SECRET1;\n    previous_secret_id 3;/;
    ok($t->reload_conf(sub { my $c = shift; $c =~ s/\Q$tracking_block\E/$new/; $c }), 'reloaded with a new secret');
    my $r = $t->request('GET', "/t/c/$click_b");
    is($r->{headers}{location}, 'https://shop.example/b', 'a link made with the previous secret still works');
    my $id = send_one($A, tracking => { clicks => JSON::PP::true });
    my ($tok) = part(delivered($id), 'text/html') =~ m{/t/c/([A-Za-z0-9_-]+)};
    is((token_fields($tok // ''))[0], 4, 'new mail uses the new key id');
    is($t->request('GET', "/t/c/$tok")->{headers}{location}, 'https://shop.example/a?x=1&y=2', 'and works');
}

# --- 8. without the block ----------------------------------------------------------------------
{
    ok($t->reload_conf(sub { my $c = shift; $c =~ s/tracking \{.*?\n\}\n//s; $c }), 'reloaded without tracking');
    err_is(api($A->{key}, 'POST', '/v1/messages', { %msg, tracking => { opens => JSON::PP::true } }),
           422, 'tracking_not_configured', '/tracking', 'asking for tracking: 422 tracking_not_configured');
    my $id = send_one($A);    # tenant default clicks on: ignored without the block
    is(part(delivered($id), 'text/html'), $HTML, 'tenant default without the block: untouched');
    $id = send_one($B, priority => 'bulk');
    ok(!exists delivered($id)->{headers}{'list-unsubscribe'}, 'bulk without the block: no List-Unsubscribe');
    is($t->request('GET', "/t/c/$click_a")->{status}, 404, 'routes: 404 without the block');
}

$t->stop;
done_testing;
