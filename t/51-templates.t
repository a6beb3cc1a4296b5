# scripts/test: alone (cross-worker timing: a change seen by every worker once answered)
# Templates API and cache against a private PostgreSQL and Redis, mailerd with 2
# workers (MailerdTest->stack):
#   - CRUD: create (201, UUIDv7 id, timestamps), read, list (cursor pages), full
#     replace, soft delete (204, then 404 everywhere; the name is free again);
#   - validation: 400 invalid_json, 422 validation_failed + JSON pointer (name
#     charset and length, subject, parts, sizes, unknown fields), 422
#     template_syntax_error with field, line and column, 409 template_name_taken;
#   - isolation: tenant B can neither read, list, update, delete nor render A's
#     templates (404), and B's partials never resolve to A's templates;
#   - render preview: HTML escaping in html only (not text or subject), triple
#     mustache and &, sections, inverted sections, dotted names, partials (another
#     template by name, the same part), a missing partial renders empty, a
#     template including itself fails with a clear error and does not hang;
#   - cache: a change to a partial, a partial created after it was missing, a
#     deleted partial are all seen by the next render;
#   - an update through one worker is rendered by every worker within 1 s (fresh
#     connections, worker pids from the access log);
#   - while Redis refuses PUBLISH no worker trusts its cache, and a change is
#     kept and published once it is allowed;
#   - with Redis down, workers stop trusting their caches and still render the
#     latest version.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use JSON::PP;
use Time::HiRes qw(time sleep);
use MailerdTest qw(wait_for parse_response);
use MailerdStore;

MailerdTest::skip_without_store();

my $s = MailerdTest->stack(tenants => 2);
my $t = $s->{t};
my ($A, $B) = @{ $s->{tenants} };
my @workers = $t->worker_pids;
is(scalar @workers, 2, 'two workers');

my $json = JSON::PP->new->canonical->utf8;

sub req {
    my ($who, $method, $path, $body) = @_;
    my %h = (Authorization => "Bearer $who->{key}");
    $h{'Content-Type'} = 'application/json' if defined $body;
    $body = $json->encode($body) if ref $body;
    return $t->request($method, $path, headers => \%h, defined $body ? (body => $body) : ());
}

sub is_error {
    my ($r, $status, $code, $name) = @_;
    my $ok = is($r->{status}, $status, "$name: status $status");
    $ok &&= is(ref($r->{json}) && ref($r->{json}{error}) ? $r->{json}{error}{code} : undef, $code,
               "$name: error code $code");
    $ok &&= ok(defined $r->{json}{error}{message} && !ref $r->{json}{error}{message},
               "$name: error has a message");
    diag("got: $r->{status} $r->{body}") unless $ok;
    return $ok;
}

sub validation {
    my ($r, $field, $name) = @_;
    is_error($r, 422, 'validation_failed', $name);
    is($r->{json}{error}{field}, $field, "$name: field $field");
}

sub syntax_error {
    my ($r, $field, $line, $col, $name) = @_;
    is_error($r, 422, 'template_syntax_error', $name);
    is($r->{json}{error}{field}, $field, "$name: field $field");
    is($r->{json}{error}{line}, $line, "$name: line $line");
    is($r->{json}{error}{column}, $col, "$name: column $col");
}

sub create {
    my ($who, $tpl, $name) = @_;
    my $r = req($who, 'POST', '/v1/templates', $tpl);
    is($r->{status}, 201, "create $name") or diag($r->{body});
    return $r->{json} // {};
}

sub render {
    my ($who, $id, $vars) = @_;
    return req($who, 'POST', "/v1/templates/$id/render", defined $vars ? { variables => $vars } : undef);
}

my $uuid_re = qr/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
my $ts_re = qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/;
my $unknown = '01890000-0000-7000-8000-000000000000';

# --- CRUD -----------------------------------------------------------------------------------
my $r = req($A, 'POST', '/v1/templates',
            { name => 'welcome', subject => 'Hi {{name}}', html => '<p>Hi {{name}}</p>', text => 'Hi {{name}}' });
is($r->{status}, 201, 'POST /v1/templates: 201') or diag($r->{body});
my $w = $r->{json};
like($w->{id}, $uuid_re, 'id is a UUIDv7');
is($w->{name}, 'welcome', 'name');
is($w->{subject}, 'Hi {{name}}', 'subject');
is($w->{html}, '<p>Hi {{name}}</p>', 'html');
is($w->{text}, 'Hi {{name}}', 'text');
like($w->{created_at}, $ts_re, 'created_at is RFC 3339 UTC');
like($w->{updated_at}, $ts_re, 'updated_at');

$r = req($A, 'GET', "/v1/templates/$w->{id}");
is($r->{status}, 200, 'GET /v1/templates/{id}');
is_deeply($r->{json}, $w, '... the same template');
$r = req($A, 'GET', '/v1/templates/' . uc $w->{id});
is($r->{status}, 200, 'an upper-case id is the same id');

my $tx = create($A, { name => 'text-only', subject => 'S', text => 'plain {{x}}' }, 'a text-only template');
is($tx->{html}, undef, 'html is null when absent');
my $hx = create($A, { name => 'html.only', subject => '', html => '<i>{{x}}</i>', text => undef },
                'an html-only template (text null, empty subject)');
is($hx->{text}, undef, 'text is null');

$r = req($A, 'GET', '/v1/templates');
is($r->{status}, 200, 'GET /v1/templates');
is_deeply([ map { $_->{name} } @{ $r->{json}{data} } ], [qw(welcome text-only html.only)], 'listed in creation order');
is($r->{json}{next_cursor}, undef, 'one page: next_cursor null');
my ($sum) = grep { $_->{name} eq 'text-only' } @{ $r->{json}{data} };
ok(!exists $sum->{text} && !exists $sum->{html}, 'a listing has no bodies');
ok($sum->{has_text} && !$sum->{has_html}, 'has_text / has_html');
{
    my (@names, $cursor, $pages);
    do {
        $r = req($A, 'GET', '/v1/templates?limit=2' . ($cursor ? "&cursor=$cursor" : ''));
        is($r->{status}, 200, 'page ' . ++$pages);
        push @names, map { $_->{name} } @{ $r->{json}{data} };
        $cursor = $r->{json}{next_cursor};
    } while ($cursor && $pages < 5);
    is_deeply(\@names, [qw(welcome text-only html.only)], 'cursor pages walk every template once');
    is($pages, 2, 'two pages of 2');
}
is_error(req($A, 'GET', '/v1/templates?limit=0'), 422, 'invalid_parameter', 'limit=0');
is_error(req($A, 'GET', '/v1/templates?limit=101'), 422, 'invalid_parameter', 'limit over the maximum');
is_error(req($A, 'GET', '/v1/templates?cursor=nope'), 422, 'invalid_parameter', 'a bad cursor');

$r = req($A, 'PUT', "/v1/templates/$tx->{id}", { name => 'text-renamed', subject => 'S2', html => '<b>{{x}}</b>' });
is($r->{status}, 200, 'PUT: 200') or diag($r->{body});
is($r->{json}{name}, 'text-renamed', 'PUT renames');
is($r->{json}{text}, undef, 'PUT is a full replace: text absent is null');
is($r->{json}{html}, '<b>{{x}}</b>', 'html set');
is($r->{json}{created_at}, $tx->{created_at}, 'created_at kept');
ok($r->{json}{updated_at} gt $tx->{updated_at}, 'updated_at moves');
is_deeply(req($A, 'GET', "/v1/templates/$tx->{id}")->{json}, $r->{json}, 'GET shows the replacement');

# --- validation ---------------------------------------------------------------------------------
is_error(req($A, 'POST', '/v1/templates', '{"name":'), 400, 'invalid_json', 'truncated JSON');
is_error(req($A, 'POST', '/v1/templates', ''), 400, 'invalid_json', 'empty body');
is_error(req($A, 'POST', '/v1/templates', '{"name":"a","name":"b"}'), 400, 'invalid_json', 'duplicate member');
validation(req($A, 'POST', '/v1/templates', '[1]'), '', 'body not an object');
my %ok = (name => 'v', subject => 's', text => 't');
validation(req($A, 'POST', '/v1/templates', { %ok, name => undef }), '/name', 'name null');
validation(req($A, 'POST', '/v1/templates', { subject => 's', text => 't' }), '/name', 'name missing');
validation(req($A, 'POST', '/v1/templates', { %ok, name => '' }), '/name', 'empty name');
validation(req($A, 'POST', '/v1/templates', { %ok, name => 'a b' }), '/name', 'name with a space');
validation(req($A, 'POST', '/v1/templates', { %ok, name => 'a{b}' }), '/name', 'name with braces');
validation(req($A, 'POST', '/v1/templates', { %ok, name => "caf\x{e9}" }), '/name', 'non-ASCII name');
validation(req($A, 'POST', '/v1/templates', { %ok, name => 'x' x 201 }), '/name', 'name of 201 characters');
is(req($A, 'POST', '/v1/templates', { %ok, name => 'n' x 200 })->{status}, 201, 'name of 200 characters');
validation(req($A, 'POST', '/v1/templates', { name => 'v', text => 't' }), '/subject', 'subject missing');
validation(req($A, 'POST', '/v1/templates', { %ok, subject => 5 }), '/subject', 'subject not a string');
validation(req($A, 'POST', '/v1/templates', { %ok, subject => "a\r\nBcc: x\@y" }), '/subject', 'subject with a line break');
validation(req($A, 'POST', '/v1/templates', { %ok, subject => 'x' x 4097 }), '/subject', 'subject over 4 KB');
validation(req($A, 'POST', '/v1/templates', { name => 'v', subject => 's' }), '/html', 'neither html nor text');
validation(req($A, 'POST', '/v1/templates', { name => 'v', subject => 's', html => undef, text => undef }),
           '/html', 'html and text both null');
validation(req($A, 'POST', '/v1/templates', { %ok, html => ['x'] }), '/html', 'html not a string');
validation(req($A, 'POST', '/v1/templates', { %ok, text => 'x' x (512 * 1024 + 1) }), '/text', 'text over 512 KB');
is(req($A, 'POST', '/v1/templates', { %ok, name => 'big', text => 'x' x (512 * 1024) })->{status}, 201,
   'text of exactly 512 KB');
validation(req($A, 'POST', '/v1/templates', { %ok, htm => 'x' }), '/htm', 'unknown field');

syntax_error(req($A, 'POST', '/v1/templates', { %ok, html => "<p>\n  {{#items}}x" }), '/html', 2, 3,
             'unclosed section in html');
syntax_error(req($A, 'POST', '/v1/templates', { %ok, text => "a\nb\nc {{/x}}" }), '/text', 3, 3,
             'close without open in text');
syntax_error(req($A, 'POST', '/v1/templates', { %ok, subject => 'Hi {{name' }), '/subject', 1, 4,
             'unclosed tag in subject');
syntax_error(req($A, 'POST', '/v1/templates', { %ok, html => "\x{e9}\x{e9} {{#a}}{{/b}}" }), '/html', 1, 10,
             'mismatched close: the column counts characters');
syntax_error(req($A, 'POST', '/v1/templates', { %ok, text => "{{= | =}}" }), '/text', 1, 1, 'bad set-delimiter tag');
like(req($A, 'POST', '/v1/templates', { %ok, html => "{{#a}}" })->{json}{error}{message} // '',
     qr/unclosed section 'a'/, 'the syntax error message says what is wrong');
syntax_error(req($A, 'PUT', "/v1/templates/$w->{id}", { %ok, name => 'welcome', html => '{{#x}}' }), '/html', 1, 1,
             'PUT refuses a syntax error too');

is_error(req($A, 'POST', '/v1/templates', { %ok, name => 'welcome' }), 409, 'template_name_taken', 'a taken name');
is_error(req($A, 'PUT', "/v1/templates/$hx->{id}", { %ok, name => 'welcome' }), 409, 'template_name_taken',
         'renaming onto a taken name');
is(req($A, 'GET', "/v1/templates/$hx->{id}")->{json}{name}, 'html.only', '... changes nothing');
is_error(req($A, 'GET', '/v1/templates/nope'), 404, 'not_found', 'malformed id');
is_error(req($A, 'GET', "/v1/templates/$unknown"), 404, 'not_found', 'unknown id');
is_error(req($A, 'PUT', "/v1/templates/$unknown", \%ok), 404, 'not_found', 'PUT an unknown id');
is_error(req($A, 'DELETE', "/v1/templates/$unknown"), 404, 'not_found', 'DELETE an unknown id');
is_error(render($A, $unknown), 404, 'not_found', 'render an unknown id');
is($t->request('GET', '/v1/templates')->{status}, 401, 'no key: 401');
is($t->request('GET', '/v1/templates', headers => { Authorization => "Bearer $s->{admin}" })->{status}, 401,
   'the admin token is not a tenant key');

# --- tenant isolation ---------------------------------------------------------------------------
is_error(req($B, 'GET', "/v1/templates/$w->{id}"), 404, 'not_found', "B reads A's template");
is_error(req($B, 'PUT', "/v1/templates/$w->{id}", { %ok, name => 'stolen' }), 404, 'not_found', "B updates A's template");
is_error(req($B, 'DELETE', "/v1/templates/$w->{id}"), 404, 'not_found', "B deletes A's template");
is_error(render($B, $w->{id}, { name => 'x' }), 404, 'not_found', "B renders A's template");
is_deeply(req($B, 'GET', '/v1/templates')->{json}{data}, [], "B's listing is empty");
is(req($A, 'GET', "/v1/templates/$w->{id}")->{json}{name}, 'welcome', "A's template is untouched");
my $bw = create($B, { name => 'welcome', subject => 'B', text => 'B says {{> footer}}.' }, "B may use A's name");
create($A, { name => 'footer', subject => '', text => 'A footer' }, "A's footer");
is(render($B, $bw->{id})->{json}{text}, 'B says .', "B's partial does not resolve to A's template");

# --- render ---------------------------------------------------------------------------------------
$r = render($A, $w->{id}, { name => q{<b>"Tom" & 'Jerry'</b>} });
is($r->{status}, 200, 'render: 200') or diag($r->{body});
is($r->{json}{subject}, q{Hi <b>"Tom" & 'Jerry'</b>}, 'subject is not escaped');
is($r->{json}{text}, q{Hi <b>"Tom" & 'Jerry'</b>}, 'text is not escaped');
is($r->{json}{html}, '<p>Hi &lt;b&gt;&quot;Tom&quot; &amp; &#39;Jerry&#39;&lt;/b&gt;</p>', 'html is escaped');

$r = render($A, $tx->{id}, { x => '<y>' });
is($r->{json}{text}, undef, 'text null for a template without text');
is($r->{json}{html}, '<b>&lt;y&gt;</b>', 'html rendered');
is($r->{json}{subject}, 'S2', 'subject without variables');
$r = render($A, $w->{id});
is($r->{status}, 200, 'render without a body');
is($r->{json}{html}, '<p>Hi </p>', 'missing variables render empty');
validation(render($A, $w->{id}, [1]), '/variables', 'variables not an object');
validation(req($A, 'POST', "/v1/templates/$w->{id}/render", { vars => {} }), '/vars', 'unknown field in render');
is_error(req($A, 'POST', "/v1/templates/$w->{id}/render", '{'), 400, 'invalid_json', 'render with bad JSON');

my $rich = create($A, {
    name => 'rich',
    subject => '{{order.id}}: {{#items}}{{name}} {{/items}}',
    html => '{{{raw}}}|{{& raw}}|{{raw}}|{{#items}}<li>{{name}} x{{qty}}</li>{{/items}}{{^items}}none{{/items}}'
          . '|{{#vip}}VIP {{customer.name.first}}{{/vip}}{{^vip}}regular{{/vip}}|{{! a comment }}'
          . '{{=<% %>=}}<% order.id %>',
    text => "{{#items}}- {{name}}\n{{/items}}{{^items}}nothing\n{{/items}}Total: {{order.total}}",
}, 'a template using sections, inverted sections, dotted names, comments, delimiters');
$r = render($A, $rich->{id}, {
    raw => '<hr>', vip => JSON::PP::true, customer => { name => { first => 'Ada & Co' } },
    order => { id => 'A-1', total => 12.5 }, items => [ { name => 'pen', qty => 2 }, { name => '<ink>', qty => 1 } ],
});
is($r->{status}, 200, 'render rich') or diag($r->{body});
is($r->{json}{subject}, 'A-1: pen <ink> ', 'subject: dotted name and a section over a list');
is($r->{json}{html}, '<hr>|<hr>|&lt;hr&gt;|<li>pen x2</li><li>&lt;ink&gt; x1</li>|VIP Ada &amp; Co|A-1',
   'html: triple mustache, &, escaping, sections, dotted names, comments, set delimiters');
is($r->{json}{text}, "- pen\n- <ink>\nTotal: 12.5", 'text: sections over a list, no escaping');
$r = render($A, $rich->{id}, { items => [], vip => JSON::PP::false, order => {} });
is($r->{json}{html}, '|||none|regular|', 'inverted sections render for an empty list and false');
is($r->{json}{text}, "nothing\nTotal: ", 'text inverted section');

# Partials: the same part of the template called by name.
create($A, { name => 'sig', subject => '[{{brand}}]', html => '<p>{{brand}}</p>', text => '-- {{brand}}' }, 'partial sig');
my $main = create($A, {
    name => 'main',
    subject => 'News {{> sig}}',
    html => "<div>\n{{> sig}}\n</div>{{> nosuch}}",
    text => "Body\n{{> sig}}\n{{> nosuch}}end",
}, 'a template with partials');
$r = render($A, $main->{id}, { brand => 'A&B' });
is($r->{status}, 200, 'render with partials') or diag($r->{body});
is($r->{json}{subject}, 'News [A&B]', 'subject partial uses the partial\'s subject, unescaped');
is($r->{json}{html}, "<div>\n<p>A&amp;B</p></div>", 'html partial uses the partial\'s html, escaped; missing partial empty');
is($r->{json}{text}, "Body\n-- A&Bend", 'text partial; a missing partial renders empty');

# Nested partials and a partial that exists only for some parts.
create($A, { name => 'outer', subject => '', html => '[{{> inner}}]' }, 'partial outer (html only)');
create($A, { name => 'inner', subject => '', html => '{{who}}' }, 'partial inner');
my $nest = create($A, { name => 'nest', subject => 's', html => '{{> outer}}', text => 't{{> outer}}' }, 'nest');
$r = render($A, $nest->{id}, { who => '<me>' });
is($r->{json}{html}, '[&lt;me&gt;]', 'partials nest');
is($r->{json}{text}, 't', 'a partial without that part renders empty');

# Recursion: a template including itself, with and without data to stop it.
my $loop = create($A, { name => 'loop', subject => 's', html => 'x{{> loop}}' }, 'a template including itself');
my $t0 = time;
$r = render($A, $loop->{id});
my $took = time - $t0;
is_error($r, 422, 'template_render_failed', 'endless recursion');
like($r->{json}{error}{message} // '', qr/html: .*(deeper|recursive)/, 'the error says why') or diag($r->{body});
ok($took < 3, sprintf('and it does not hang (%.2f s)', $took));
my $fan = create($A, { name => 'fan', subject => 's', text => '{{> fan}}{{> fan}}{{> fan}}{{> fan}}' }, 'a fan-out recursion');
$t0 = time;
$r = render($A, $fan->{id});
is($r->{status}, 422, 'a fan-out recursion fails too');
ok(time - $t0 < 5, sprintf('within the work cap (%.2f s)', time - $t0));
my $tree = create($A, { name => 'tree', subject => '', text => '{{name}}({{#kids}}{{> tree}}{{/kids}})' }, 'data recursion');
$r = render($A, $tree->{id}, { name => 'a', kids => [ { name => 'b', kids => [ { name => 'c', kids => [] } ] }, { name => 'd', kids => [] } ] });
is($r->{json}{text}, 'a(b(c())d())', 'recursion bounded by the data renders');
# Output cap: 1 MB per part.
my $huge = create($A, { name => 'huge', subject => '', text => '{{#l}}{{s}}{{/l}}' }, 'big output');
$r = render($A, $huge->{id}, { s => 'y' x 1000, l => [ (1) x 1100 ] });
is_error($r, 422, 'template_render_failed', 'output over 1 MB');

# --- the cache follows changes ---------------------------------------------------------------------
# Through the cache (render twice), change the partial: the next render has it.
my $pmain = create($A, { name => 'pmain', subject => 's', text => '<{{> part}}>' }, 'pmain');
is(render($A, $pmain->{id})->{json}{text}, '<>', 'missing partial (now cached as missing)');
is(render($A, $pmain->{id})->{json}{text}, '<>', '... twice');
my $part = create($A, { name => 'part', subject => '', text => 'v1' }, 'the partial appears');
is(render($A, $pmain->{id})->{json}{text}, '<v1>', 'a partial created later is found');
is(req($A, 'PUT', "/v1/templates/$part->{id}", { name => 'part', subject => '', text => 'v2' })->{status}, 200, 'partial updated');
is(render($A, $pmain->{id})->{json}{text}, '<v2>', 'the updated partial is used');
is(req($A, 'PUT', "/v1/templates/$part->{id}", { name => 'part-old', subject => '', text => 'v3' })->{status}, 200,
   'partial renamed away');
is(render($A, $pmain->{id})->{json}{text}, '<>', 'a renamed partial no longer resolves under the old name');
is(req($A, 'PUT', "/v1/templates/$part->{id}", { name => 'part', subject => '', text => 'v4' })->{status}, 200, 'and back');
is(render($A, $pmain->{id})->{json}{text}, '<v4>', 'resolves again');
is(req($A, 'DELETE', "/v1/templates/$part->{id}")->{status}, 204, 'partial deleted');
is(render($A, $pmain->{id})->{json}{text}, '<>', 'a deleted partial renders empty');

# --- delete ---------------------------------------------------------------------------------------
$r = req($A, 'DELETE', "/v1/templates/$hx->{id}");
is($r->{status}, 204, 'DELETE: 204');
is($r->{body}, '', 'no body');
is_error(req($A, 'GET', "/v1/templates/$hx->{id}"), 404, 'not_found', 'GET after delete');
is_error(render($A, $hx->{id}), 404, 'not_found', 'render after delete');
is_error(req($A, 'PUT', "/v1/templates/$hx->{id}", \%ok), 404, 'not_found', 'PUT after delete');
is_error(req($A, 'DELETE', "/v1/templates/$hx->{id}"), 404, 'not_found', 'DELETE twice');
ok(!grep({ $_->{id} eq $hx->{id} } @{ req($A, 'GET', '/v1/templates?limit=100')->{json}{data} }), 'not listed');
is(req($A, 'POST', '/v1/templates', { %ok, name => 'html.only' })->{status}, 201, 'its name is free again');
is($s->{pg}->psql("SELECT count(*) FROM templates WHERE id = '$hx->{id}' AND deleted_at IS NOT NULL"), 1,
   'the row is kept (soft delete)');

# --- an update reaches every worker within 1 s -------------------------------------------------------
# Renders on $n fresh connections opened together (so both workers accept some),
# each tagged with an X-Request-Id; returns [rid, status, text].
my $nrid = 0;
sub md_min { $_[0] < $_[1] ? $_[0] : $_[1] }
sub burst {
    my ($n, $id, $tag) = @_;
    my @c;
    my $body = '{"variables":{"v":"x"}}';
    for (1 .. $n) {
        my $sock = $t->connect or next;
        push @c, [$sock, sprintf('%s-%d', $tag, ++$nrid)];
    }
    for my $c (@c) {
        print { $c->[0] } "POST /v1/templates/$id/render HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
          . "X-Request-Id: $c->[1]\r\nAuthorization: Bearer $A->{key}\r\nContent-Type: application/json\r\n"
          . "Content-Length: " . length($body) . "\r\n\r\n$body";
    }
    my @res;
    for my $c (@c) {
        my ($resp) = parse_response(MailerdTest::read_all($c->[0], 5));
        close $c->[0];
        push @res, [$c->[1], $resp ? $resp->{status} : 0, $resp && $resp->{json} ? $resp->{json}{text} : undef];
    }
    return @res;
}

# pid that served each request id (polls: access lines are flushed once per loop pass).
sub served_by {
    my (@rids) = @_;
    my %want = map { $_ => 1 } @rids;
    my %pid;
    wait_for(sub {
        for my $l (split /\n/, $t->access_log) {
            next unless $l =~ /"request_id":"([^"]+)"/ && $want{$1};
            my $j = eval { decode_json($l) } or next;
            $pid{ $j->{request_id} } = $j->{pid};
        }
        return keys %pid == keys %want;
    }, 5);
    return \%pid;
}

# Warms both workers' caches with version $old, changes the template with
# $change->(), then renders until both workers show $new; returns the seconds
# from the change to the last worker's first new render and the stale answers.
# Renders $id until each worker rendered $text at least twice (so both have it cached).
sub warm {
    my ($id, $text, $label) = @_;
    my (%ok, @other);
    my $deadline = time + 8; # generous: the machine may be shared with load tests
    while (time < $deadline) {
        my @res = burst(6, $id, "warm$label");
        my $by = served_by(map { $_->[0] } @res);
        for (@res) {
            if ($_->[1] == 200 && ($_->[2] // '') eq $text) {
                $ok{ $by->{ $_->[0] } // 0 }++;
            } else {
                push @other, [ @$_, $by->{ $_->[0] } ];
            }
        }
        last if (grep { ($ok{$_} // 0) >= 2 } @workers) == 2;
    }
    is((grep { ($ok{$_} // 0) >= 2 } @workers), 2, "$label: both workers rendered '$text' (cached)")
      or diag(explain [ \%ok, [ @other[0 .. md_min(5, $#other)] ] ]);
}

sub propagation {
    my ($id, $old, $new, $change, $label) = @_;
    warm($id, $old, $label);
    my $t0 = time;
    $change->();
    my (%first, @stale);
    while (time - $t0 < 1.5) {
        my @res = burst(4, $id, "after$label");
        my $by = served_by(map { $_->[0] } @res);
        for (@res) {
            my $pid = $by->{ $_->[0] } // next;
            if ($_->[1] == 200 && ($_->[2] // '') eq $new) {
                $first{$pid} //= time - $t0;
            } else {
                push @stale, [@$_, $pid];
            }
        }
        last if keys %first == 2 && time - $t0 > 1.1;
    }
    is((grep { defined $first{$_} } @workers), 2, "$label: both workers rendered the new version") or diag(explain \%first);
    my ($slowest) = sort { $b <=> $a } values %first;
    ok(defined $slowest && $slowest < 1.0, sprintf('%s: on every worker within 1 s (%.3f s)', $label, $slowest // -1));
    return @stale;
}

{
    my $x = create($A, { name => 'spread', subject => 's', text => 'one {{v}}' }, 'template for propagation');
    my $acks = sub { map { $_ => 1 } grep { /^mailerd:ack:[0-9a-f]{32}$/ } split /\n/, $s->{redis}->cli('KEYS', 'mailerd:ack:*') // '' };
    my @stale = propagation($x->{id}, 'one x', 'two x', sub {
        my %before = $acks->();
        my $r = req($A, 'PUT', "/v1/templates/$x->{id}", { name => 'spread', subject => 's', text => 'two {{v}}' });
        is($r->{status}, 200, 'PUT through one worker');
        # answered once both workers dropped the old version (md_broadcast)
        my %after = $acks->();
        my @new = grep { !$before{$_} } keys %after;
        is(scalar @new, 1, 'one change count in Redis');
        is(@new ? $s->{redis}->cli('GET', $new[0]) : undef, 2, '... both workers counted themselves before the answer');
    }, 'update');
    is(scalar @stale, 0, 'no render after the PUT was answered used the old version') or diag(explain \@stale);

    # A partial changed: the template that includes it changes on every worker.
    create($A, { name => 'spread-part', subject => '', text => 'P1' }, 'partial for propagation');
    my $y = create($A, { name => 'spread-main', subject => 's', text => '[{{> spread-part}}]' }, 'its includer');
    my ($pp) = grep { $_->{name} eq 'spread-part' } @{ req($A, 'GET', '/v1/templates?limit=100')->{json}{data} };
    @stale = propagation($y->{id}, '[P1]', '[P2]', sub {
        is(req($A, 'PUT', "/v1/templates/$pp->{id}", { name => 'spread-part', subject => '', text => 'P2' })->{status},
           200, 'PUT the partial');
    }, 'partial-update');
    is(scalar @stale, 0, 'no stale render after the partial changed') or diag(explain \@stale);

    # Deleted: every worker answers 404 at once.
    my $del_t0 = time;
    is(req($A, 'DELETE', "/v1/templates/$x->{id}")->{status}, 204, 'delete the propagated template');
    my @res = burst(8, $x->{id}, 'deleted');
    my $by = served_by(map { $_->[0] } @res);
    is((grep { $_->[1] != 404 } @res), 0, 'every render after the delete is 404') or diag(explain \@res);
    my %pids = map { ($by->{ $_->[0] } // 0) => 1 } @res;
    note(sprintf('404 from %d worker(s) within %.3f s', scalar(keys %pids), time - $del_t0));
}

# --- a change Redis refuses to publish goes out once it takes it ----------------------------------
# PUBLISH denied by an ACL: the workers' pub/sub heartbeats are refused too,
# so no worker trusts its cache; the PUT is answered and the change kept, and
# every render shows the new version; once PUBLISH is allowed the kept message
# goes out (md_broadcast_or_keep), seen by a subscriber of the test's own.
{
    my $redis = $s->{redis};
    my $q = create($A, { name => 'refused', subject => 's', text => 'p1 {{v}}' }, 'template for the refused PUBLISH');
    warm($q->{id}, 'p1 x', 'refused');
    my $sub = $redis->subscriber('mailerd:templates:changed');
    is($redis->cli('ACL', 'SETUSER', 'default', '-publish'), 'OK', 'PUBLISH refused by an ACL');
    ok(wait_for(sub { $t->logged_by(qr/redis refuses the pub\/sub heartbeat/) == 2 }, 5),
       'both workers warn that Redis refuses their heartbeat');
    $r = req($A, 'PUT', "/v1/templates/$q->{id}", { name => 'refused', subject => 's', text => 'p2 {{v}}' });
    is($r->{status}, 200, 'the change is answered');
    my $will_retry = qr/publishing an invalidation failed, will retry/;
    ok(wait_for(sub { $t->logged($will_retry, 'mailerd:templates:changed') }, 5),
       '... with a warning that it will be published again');
    my @res = map { burst(4, $q->{id}, 'refused') } 1 .. 4;
    is((grep { ($_->[2] // '') ne 'p2 x' } @res), 0, 'meanwhile no worker trusts its cache: every render shows the new version')
      or diag(explain \@res);
    my @m = $redis->messages($sub, 1);   # four retries, refused
    is(scalar @m, 0, 'nothing was published while refused') or diag(explain \@m);
    is(scalar(() = $t->logged($will_retry, 'mailerd:templates:changed')), 1, 'the warning is not repeated for each retry');
    is($redis->cli('ACL', 'SETUSER', 'default', '+publish'), 'OK', 'PUBLISH allowed again');
    @m = $redis->messages($sub, 5);
    is_deeply(\@m, ["$A->{id} $q->{id} refused"], 'then the kept change is published, once') or diag(explain \@m);
    ok(wait_for(sub { $t->logged_by(qr/redis takes the pub\/sub heartbeat again/) == 2 }, 5),
       'and both workers trust their (flushed) caches again');
    close $sub;
    $redis->cli('ACL', 'SETUSER', 'default', '+publish');
}

# --- Redis down: caches are not trusted, renders read PostgreSQL -------------------------------------
{
    my $z = create($A, { name => 'nored', subject => 's', text => 'r1 {{v}}' }, 'template for the Redis outage');
    warm($z->{id}, 'r1 x', 'outage');
    # Written behind mailerd's back: a worker that trusts its cache does not see it
    # (which shows renders come from the cache) ...
    $s->{pg}->psql("UPDATE templates SET text = 'r2' WHERE id = '$z->{id}'");
    my (@res, %pids);
    for (1 .. 10) {
        my @b = burst(6, $z->{id}, 'cached');
        my $by = served_by(map { $_->[0] } @b);
        $pids{ $by->{ $_->[0] } // 0 }++ for @b;
        push @res, @b;
        last if (grep { $pids{$_} } @workers) == 2;
    }
    is((grep { ($_->[2] // '') ne 'r1 x' } @res), 0, 'renders come from the cache while Redis is up')
      or diag(explain \@res);
    is((grep { $pids{$_} } @workers), 2, '... on both workers');
    # ... and one that does not trust it (its subscription is down) does.
    $s->{redis}->stop;
    my @t = map { render($A, $z->{id}) } 1 .. 6;
    is((grep { $_->{status} == 200 && ($_->{json}{text} // '') eq 'r2' } @t), 6,
       'with Redis down every render reads the latest version') or diag(explain [ map { $_->{body} } @t ]);
    $r = req($A, 'PUT', "/v1/templates/$z->{id}", { name => 'nored', subject => 's', text => 'r3' });
    is($r->{status}, 200, 'a PUT still works with Redis down (the change is published later)');
    $s->{redis}->start;
    ok(wait_for(sub { (eval { $t->request('GET', '/ready')->{status} } // 0) == 200 }, 15), 'ready again after Redis is back');
    @t = map { render($A, $z->{id}) } 1 .. 6;
    is((grep { ($_->{json}{text} // '') eq 'r3' } @t), 6, 'after the outage renders show the latest version');
}

$t->stop;
my @errors = grep { ($_->{level} // '') =~ /^(error|crit)$/ && ($_->{msg} // '') =~ /template/ } $t->error_log_entries;
is(scalar @errors, 0, 'no template errors in the log') or diag(explain \@errors);

done_testing;
