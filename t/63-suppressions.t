# Suppressions (issue 7, point 3) against the real stack (PostgreSQL, Redis,
# mailerd with 2 workers and the sink ESP):
#   - the API's shapes and errors: POST one (201 created, 200 replaced) and
#     many (per-item errors, duplicates, 422 all_items_rejected), GET one and
#     the listing (reason filter, cursor pages by address, limit, bad
#     parameters), DELETE (204, then 404), stats, tenants do not see each other;
#   - case rules: Foo@Example.COM is Foo@example.com, not foo@example.com,
#     in the body, the path (percent-decoded) and at accept;
#   - only manual entries may expire through the API; expired entries are not
#     in effect at once and the scheduled cleanup deletes them (and soft_bounces
#     rows older than 72 h);
#   - CSV import: header or none, quoting, bad lines with their line numbers,
#     duplicates, 415 without text/csv;
#   - accept: a single send to a suppressed recipient is 422 suppressed with
#     nothing stored; multi-recipient and batch sends list it in rejected and
#     accept the others; idempotency replays say the same; deleting the
#     suppression lets the next send through;
#   - dispatch: a recipient suppressed between accept and dispatch (held with
#     the admin pause) is not sent to; the message ends 'suppressed' with its
#     event.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use JSON::PP;
use POSIX qw(strftime);
use Time::HiRes qw(time sleep);
use MailerdTest qw(wait_for slurp);

MailerdTest::skip_without_store();

my $S = MailerdTest->stack(tenants => 2,
    main_extra => "esp sink {\n    dir sink;\n}\nsuppression_cleanup_interval 1s;\n");
my $t = $S->{t};
my $pg = $S->{pg};
my ($A, $B) = @{ $S->{tenants} };
my $json = JSON::PP->new->canonical;
my $dir = $t->dir;
my $ts_re = qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/;

sub sql { scalar $pg->psql($_[0]) }

sub api {
    my ($key, $method, $path, $body, %h) = @_;
    $h{Authorization} = "Bearer $key" if defined $key;
    if (defined $body && !exists $h{'Content-Type'}) {
        $h{'Content-Type'} = 'application/json';
    }
    $body = $json->encode($body) if ref $body;
    return $t->request($method, $path, headers => \%h, defined $body ? (body => $body) : ());
}

sub err_is {
    my ($r, $status, $code, $field, $name) = @_;
    my $e = ($r->{json} // {})->{error} // {};
    my $ok = $r->{status} == $status && ($e->{code} // '') eq $code
      && (!defined $field || ($e->{field} // '') eq $field);
    ok($ok, $name) or diag("got $r->{status} $r->{body}");
}

sub count_supp { sql("SELECT count(*) FROM suppressions WHERE tenant_id = '$_[0]'") }
sub future { strftime('%Y-%m-%dT%H:%M:%SZ', gmtime(time + ($_[0] // 86400))) }

my %send = (from => 'News <news@acme.example>', subject => 'Hello', text => 'Hi there');

# --- 1. POST one, GET, DELETE ----------------------------------------------------------------
{
    my $r = api($A->{key}, 'POST', '/v1/suppressions', { address => 'Foo@Example.COM' });
    is($r->{status}, 201, 'POST one: 201') or diag($r->{body});
    my $s = $r->{json} // {};
    is_deeply([ @$s{qw(address reason source)} ], [ 'Foo@example.com', 'manual', 'api' ],
              'stored normalised: domain lower-cased, local part as given; reason manual by default');
    like($s->{created_at} // '', $ts_re, 'created_at');
    ok(exists $s->{expires_at} && !defined $s->{expires_at}, 'expires_at null');

    $r = api($A->{key}, 'POST', '/v1/suppressions', { address => 'Foo@EXAMPLE.com', reason => 'complaint' });
    is($r->{status}, 200, 'the same address in another case: 200, replaced');
    is($r->{json}{reason}, 'complaint', 'with the new reason');
    is(count_supp($A->{id}), 1, 'one row');

    is(api($A->{key}, 'GET', '/v1/suppressions/Foo@example.com')->{status}, 200, 'GET by the stored form');
    is(api($A->{key}, 'GET', '/v1/suppressions/Foo%40EXAMPLE.Com')->{json}{address}, 'Foo@example.com',
       'GET percent-decoded, domain in any case');
    err_is(api($A->{key}, 'GET', '/v1/suppressions/foo@example.com'), 404, 'not_found', undef,
           'the local part is case-sensitive');
    err_is(api($B->{key}, 'GET', '/v1/suppressions/Foo@example.com'), 404, 'not_found', undef,
           'another tenant does not see it');
    err_is(api($A->{key}, 'GET', '/v1/suppressions/not-an-address'), 422, 'invalid_address', 'address',
           'GET of a malformed address: 422');
    err_is(api($B->{key}, 'DELETE', '/v1/suppressions/Foo@example.com'), 404, 'not_found', undef,
           'another tenant cannot delete it');
    is(api($A->{key}, 'DELETE', '/v1/suppressions/Foo%40example.COM')->{status}, 204, 'DELETE: 204');
    err_is(api($A->{key}, 'DELETE', '/v1/suppressions/Foo@example.com'), 404, 'not_found', undef,
           'DELETE again: 404');
    is(count_supp($A->{id}), 0, 'gone');
    is(api(undef, 'GET', '/v1/suppressions')->{status}, 401, 'a key is required');
}

# --- 2. validation ----------------------------------------------------------------------------
{
    my $before = count_supp($A->{id});
    err_is(api($A->{key}, 'POST', '/v1/suppressions', '{'), 400, 'invalid_json', undef, 'bad JSON');
    err_is(api($A->{key}, 'POST', '/v1/suppressions', {}), 422, 'required', '/address', 'address required');
    err_is(api($A->{key}, 'POST', '/v1/suppressions', { address => 'x@y.example', foo => 1 }), 422,
           'unknown_field', '/foo', 'unknown field');
    err_is(api($A->{key}, 'POST', '/v1/suppressions', { address => 'nope' }), 422, 'invalid_address',
           '/address', 'bad address');
    err_is(api($A->{key}, 'POST', '/v1/suppressions', { address => 'Name <x@y.example>' }), 422,
           'invalid_address', '/address', 'a display name is refused');
    err_is(api($A->{key}, 'POST', '/v1/suppressions', { address => 'x@y.example', reason => 'spam' }), 422,
           'invalid_reason', '/reason', 'unknown reason');
    err_is(api($A->{key}, 'POST', '/v1/suppressions',
               { address => 'x@y.example', reason => 'hard_bounce', expires_at => future() }),
           422, 'expires_at_not_allowed', '/expires_at', 'only manual entries expire');
    err_is(api($A->{key}, 'POST', '/v1/suppressions', { address => 'x@y.example', expires_at => 'tomorrow' }),
           422, 'invalid_expires_at', '/expires_at', 'bad expires_at');
    err_is(api($A->{key}, 'POST', '/v1/suppressions',
               { address => 'x@y.example', expires_at => '2001-01-01T00:00:00Z' }),
           422, 'invalid_expires_at', '/expires_at', 'expires_at in the past');
    err_is(api($A->{key}, 'POST', '/v1/suppressions', { suppressions => [] }), 422, 'required',
           '/suppressions', 'empty list');
    err_is(api($A->{key}, 'POST', '/v1/suppressions',
               { suppressions => [ map { { address => "u$_\@x.example" } } 1 .. 1001 ] }),
           422, 'too_many_items', '/suppressions', 'over 1000');
    my $r = api($A->{key}, 'POST', '/v1/suppressions', { suppressions => [ { address => 'bad' }, 'x' ] });
    err_is($r, 422, 'all_items_rejected', '/suppressions', 'every item rejected: 422');
    is(scalar @{ $r->{json}{error}{rejected} // [] }, 2, 'with each item listed');
    is(count_supp($A->{id}), $before, 'nothing stored by refused requests');
}

# --- 3. POST many, list, stats ------------------------------------------------------------------
{
    my $exp = future(3 * 86400);
    my $r = api($A->{key}, 'POST', '/v1/suppressions', { suppressions => [
        { address => 'a1@example.com', reason => 'hard_bounce' },
        { address => 'bad@' },
        { address => 'a2@Example.com', reason => 'manual', expires_at => $exp },
        { address => 'A1@example.com', reason => 'complaint' },
        { address => 'a1@EXAMPLE.com' },
        { address => 'a3@example.com', reason => 'unsubscribe' },
    ] });
    is($r->{status}, 200, 'POST many: 200') or diag($r->{body});
    my $j = $r->{json} // {};
    is_deeply([ map { $_->{address} } @{ $j->{data} } ], [ 'a1@example.com', 'a2@example.com', 'A1@example.com',
                                                          'a3@example.com' ], 'stored in item order');
    is_deeply([ map { [ $_->{index}, $_->{code}, $_->{field} ] } @{ $j->{rejected} } ],
              [ [ 1, 'invalid_address', '/suppressions/1/address' ],
                [ 4, 'duplicate_address', '/suppressions/4/address' ] ],
              'per-item errors with index and field; a duplicate in another case is one address');
    is_deeply([ @$j{qw(created updated)} ], [ 4, 0 ], 'created 4, updated 0');
    like($j->{data}[1]{expires_at} // '', $ts_re, 'a manual entry may expire');

    # more rows for paging
    api($A->{key}, 'POST', '/v1/suppressions', { suppressions => [ map { { address => sprintf('p%02d@example.com', $_) } } 1 .. 25 ] });
    api($B->{key}, 'POST', '/v1/suppressions', { address => 'b-only@example.com' });

    my (@all, $cursor, $pages);
    do {
        my $q = '/v1/suppressions?limit=10' . (defined $cursor ? "&cursor=$cursor" : '');
        $r = api($A->{key}, 'GET', $q);
        is($r->{status}, 200, "page " . ($pages // 0)) or last;
        push @all, map { $_->{address} } @{ $r->{json}{data} };
        $cursor = $r->{json}{next_cursor};
        $pages++;
    } while (defined $cursor && $pages < 10);
    is($pages, 3, '29 entries in pages of 10: 3 pages');
    is(scalar @all, 29, 'every entry once');
    my @sorted = split /\n/, sql("SELECT address FROM suppressions WHERE tenant_id = '$A->{id}' ORDER BY address");
    is_deeply(\@all, \@sorted, 'in address order');
    ok(!grep({ $_ eq 'b-only@example.com' } @all), 'no other tenant\'s entry');

    $r = api($A->{key}, 'GET', '/v1/suppressions?reason=hard_bounce');
    is_deeply([ map { $_->{address} } @{ $r->{json}{data} } ], [ 'a1@example.com' ], 'reason filter');
    ok(!defined $r->{json}{next_cursor}, 'next_cursor null on the last page');
    err_is(api($A->{key}, 'GET', '/v1/suppressions?reason=nope'), 422, 'invalid_parameter', 'reason', 'bad reason');
    err_is(api($A->{key}, 'GET', '/v1/suppressions?limit=0'), 422, 'invalid_parameter', 'limit', 'limit 0');
    err_is(api($A->{key}, 'GET', '/v1/suppressions?limit=1001'), 422, 'invalid_parameter', 'limit', 'limit 1001');
    err_is(api($A->{key}, 'GET', '/v1/suppressions?cursor=!!'), 422, 'invalid_parameter', 'cursor', 'bad cursor');
    # base64url of bytes that are not UTF-8 (t/75 found it answered 500)
    err_is(api($A->{key}, 'GET', '/v1/suppressions?cursor=' . ('x' x 40)), 422, 'invalid_parameter', 'cursor',
           'a cursor that decodes to no UTF-8');
    err_is(api($A->{key}, 'GET', '/v1/suppressions?bogus=1'), 422, 'unknown_parameter', undef, 'unknown parameter');

    $r = api($A->{key}, 'GET', '/v1/suppressions/stats');
    is($r->{status}, 200, 'stats');
    is_deeply($r->{json}, { total => 29, expiring_soon => 1, expiring_soon_days => 7,
                            by_reason => { hard_bounce => 1, soft_bounce => 0, complaint => 1, unsubscribe => 1,
                                           manual => 26 } }, 'counts by reason, expiring soon')
      or diag($r->{body});
    is(api($B->{key}, 'GET', '/v1/suppressions/stats')->{json}{total}, 1, 'per tenant');
}

# --- 4. CSV import ---------------------------------------------------------------------------------
{
    my $csv = "address,reason,expires_at\r\n"
      . "imp1\@example.com,hard_bounce,\r\n"     # line 2
      . "\"Imp2\@Example.COM\",,\r\n"           # 3: quoted, reason default
      . "\n"                                     # 4: blank
      . "not-an-address,manual\n"                # 5: bad address
      . "imp3\@example.com,spam\n"               # 6: bad reason
      . "imp4\@example.com,manual," . future() . "\n"   # 7
      . "imp5\@example.com,complaint," . future() . "\n" # 8: only manual expires
      . "IMP1\@example.com,manual\n"             # 9: another local part: new
      . "imp1\@EXAMPLE.com,manual\n"             # 10: duplicate of line 2
      . "\"unterminated\@example.com\n"          # 11: broken quote
      . "a1\@example.com,complaint\n";           # 12: exists: updated
    my $r = api($A->{key}, 'POST', '/v1/suppressions/import', $csv, 'Content-Type' => 'text/csv');
    is($r->{status}, 200, 'import: 200') or diag($r->{body});
    my $j = $r->{json} // {};
    is_deeply([ @$j{qw(imported updated rejected_count lines)} ], [ 4, 1, 5, 10 ],
              'imported 4, updated 1, rejected 5 of 10 lines') or diag($r->{body});
    is_deeply([ map { [ $_->{line}, $_->{code} ] } @{ $j->{rejected} // [] } ],
              [ [ 5, 'invalid_address' ], [ 6, 'invalid_reason' ], [ 8, 'expires_at_not_allowed' ],
                [ 10, 'duplicate_address' ], [ 11, 'invalid_csv' ] ], 'bad lines with their line numbers');
    is(sql("SELECT string_agg(address || ':' || reason || ':' || source || ':' || (expires_at IS NOT NULL), ',' ORDER BY address COLLATE \"C\")"
           . " FROM suppressions WHERE tenant_id = '$A->{id}' AND address IN ('imp1\@example.com', 'Imp2\@example.com',"
           . " 'imp4\@example.com', 'IMP1\@example.com', 'a1\@example.com')"),
       join(',', sort 'imp1@example.com:hard_bounce:import:false', 'Imp2@example.com:manual:import:false',
            'imp4@example.com:manual:import:true', 'IMP1@example.com:manual:import:false', 'a1@example.com:complaint:import:false'),
       'rows as imported');
    $r = api($A->{key}, 'POST', '/v1/suppressions/import', "nohdr1\@example.com\nnohdr2\@example.com,hard_bounce\n",
             'Content-Type' => 'text/csv; charset=utf-8');
    is_deeply([ @{ $r->{json} // {} }{qw(imported updated rejected_count)} ], [ 2, 0, 0 ], 'no header line')
      or diag($r->{body});
    err_is(api($A->{key}, 'POST', '/v1/suppressions/import', "address\n", 'Content-Type' => 'text/csv'), 422,
           'empty_import', undef, 'a header and no data: 422');
    err_is(api($A->{key}, 'POST', '/v1/suppressions/import', "address,color\nx\@y.example,red\n",
               'Content-Type' => 'text/csv'), 422, 'invalid_csv_header', undef, 'an unknown column');
    err_is(api($A->{key}, 'POST', '/v1/suppressions/import', "x\@y.example\n"), 415, 'unsupported_media_type',
           undef, 'JSON content type: 415');
    # a large import in one request (several statements, one transaction)
    my $big = join('', map { "bulk$_\@example.org\n" } 1 .. 5000);
    $r = api($A->{key}, 'POST', '/v1/suppressions/import', $big, 'Content-Type' => 'text/csv');
    is($r->{json}{imported}, 5000, '5,000 lines imported') or diag(substr($r->{body}, 0, 300));
}

# --- 5. accept-time refusal --------------------------------------------------------------------------
my $msgs_before = sql("SELECT count(*) FROM messages");
{
    api($A->{key}, 'POST', '/v1/suppressions', { address => 'Foo@Example.COM' });
    my $r = api($A->{key}, 'POST', '/v1/messages', { %send, to => 'Foo@example.com' });
    err_is($r, 422, 'suppressed', '/to', 'single send to a suppressed recipient: 422 suppressed');
    $r = api($A->{key}, 'POST', '/v1/messages', { %send, to => [ 'Foo@EXAMPLE.com' ] });
    err_is($r, 422, 'suppressed', '/to/0', 'the same in another domain case, as a list of one');
    is(sql("SELECT count(*) FROM messages"), $msgs_before, 'nothing stored');

    $r = api($B->{key}, 'POST', '/v1/messages', { %send, to => 'Foo@example.com' });
    is($r->{status}, 202, 'another tenant may send to it') or diag($r->{body});
    $r = api($A->{key}, 'POST', '/v1/messages', { %send, to => 'foo@example.com' });
    is($r->{status}, 202, 'foo@ (another local part) is not suppressed') or diag($r->{body});

    $r = api($A->{key}, 'POST', '/v1/messages', { %send, to => [ 'ok1@example.com', 'Foo@example.com', 'ok2@example.com' ] });
    is($r->{status}, 202, 'multi-recipient: 202') or diag($r->{body});
    my $j = $r->{json} // {};
    is_deeply([ map { $_->{to} } @{ $j->{data} } ], [ 'ok1@example.com', 'ok2@example.com' ], 'the others accepted');
    is_deeply($j->{rejected}, [ { index => 1, code => 'suppressed', field => '/to/1',
                                  message => "the recipient is on this tenant's suppression list" } ],
              'the suppressed one in rejected');
    is(sql("SELECT count(*) FROM messages WHERE tenant_id = '$A->{id}' AND to_addr = 'Foo\@example.com'"), 0,
       'no message row for it');

    $r = api($A->{key}, 'POST', '/v1/messages', { %send, to => [ 'Foo@example.com', 'a1@example.com' ] });
    err_is($r, 422, 'all_recipients_rejected', '/to', 'every recipient suppressed: 422');
    is(scalar @{ $r->{json}{error}{rejected} // [] }, 2, 'each listed');

    $r = api($A->{key}, 'POST', '/v1/messages/batch', { %send, recipients => [
        { to => 'b1@example.com' }, { to => 'Foo@example.com' }, { to => 'bad' }, { to => 'b2@example.com' } ] });
    is($r->{status}, 202, 'batch: 202') or diag($r->{body});
    $j = $r->{json} // {};
    is_deeply([ map { $_->{index} } @{ $j->{accepted} } ], [ 0, 3 ], 'batch: the others accepted');
    is_deeply([ map { [ $_->{index}, $_->{code}, $_->{field} ] } @{ $j->{rejected} } ],
              [ [ 1, 'suppressed', '/recipients/1/to' ], [ 2, 'invalid_address', '/recipients/2/to' ] ],
              'batch: suppressed and invalid in rejected, by index');
    $r = api($A->{key}, 'GET', "/v1/batches/$j->{batch_id}");
    is_deeply([ @{ $r->{json} // {} }{qw(accepted rejected)} ], [ 2, 2 ], 'the batch row counts it rejected');
    $r = api($A->{key}, 'POST', '/v1/messages/batch', { %send, recipients => [ { to => 'Foo@example.com' } ] });
    err_is($r, 422, 'all_recipients_rejected', '/recipients', 'batch of suppressed only: 422');

    # idempotency: the stored answer is the one given
    my %k = ('Idempotency-Key' => 'supp-1');
    my $body = { %send, to => [ 'ok3@example.com', 'Foo@example.com' ] };
    my $r1 = api($A->{key}, 'POST', '/v1/messages', $body, %k);
    my $r2 = api($A->{key}, 'POST', '/v1/messages', $body, %k);
    is($r1->{status}, 202, 'with a key: 202');
    is($r2->{headers}{'idempotent-replayed'} // '', 'true', 'replayed');
    is_deeply($r2->{json}, $r1->{json}, 'the replay answers the same (suppressed one in rejected)')
      or diag("$r1->{body}\n$r2->{body}");
    %k = ('Idempotency-Key' => 'supp-2');
    $body = { %send, to => 'Foo@example.com' };
    err_is(api($A->{key}, 'POST', '/v1/messages', $body, %k), 422, 'suppressed', '/to', 'key, refused: 422');
    is(sql("SELECT count(*) FROM idempotency_keys WHERE key = 'supp-2'"), 0, 'the refusal stored no key');

    # deleting the suppression allows the next send
    is(api($A->{key}, 'DELETE', '/v1/suppressions/Foo@example.com')->{status}, 204, 'delete the suppression');
    $r = api($A->{key}, 'POST', '/v1/messages', $body, %k);
    is($r->{status}, 202, 'the same key now sends') or diag($r->{body});
    my $id = $r->{json}{data}[0]{id};
    ok(wait_for(sub { sql("SELECT status FROM messages WHERE id = '$id'") eq 'delivered' }, 20),
       'and it is delivered');
}

# --- 6. dispatch-time check ------------------------------------------------------------------------
{
    my $r = api($S->{admin}, 'POST', '/v1/admin/queue/pause', {});
    is($r->{status}, 200, 'global pause') or diag($r->{body});
    my @ids;
    for my $to ('late@Example.com', 'fine@example.com', "late\@b\x{fc}cher.example") {
        $r = api($A->{key}, 'POST', '/v1/messages', JSON::PP->new->utf8->canonical->encode({ %send, to => $to }));
        is($r->{status}, 202, 'accepted for ' . ($to =~ s/[^\x00-\x7f]/?/gr)) or diag($r->{body});
        push @ids, $r->{json}{data}[0]{id};
    }
    sleep 1.5;
    is(sql("SELECT string_agg(status, ',' ORDER BY to_addr) FROM messages WHERE id IN ('$ids[0]', '$ids[1]')"),
       'queued,queued', 'held by the pause');
    $r = api($A->{key}, 'POST', '/v1/suppressions', { address => 'late@example.COM' });
    is($r->{status}, 201, 'suppressed after the accept');
    $r = api($A->{key}, 'POST', '/v1/suppressions', { address => 'late@xn--bcher-kva.example' });
    is($r->{status}, 201, 'an IDN address suppressed in its A-label form after the accept');
    $r = api($S->{admin}, 'POST', '/v1/admin/queue/resume', {});
    is($r->{status}, 200, 'resume') or diag($r->{body});
    ok(wait_for(sub { sql("SELECT status FROM messages WHERE id = '$ids[1]'") eq 'delivered' }, 20),
       'the other message is delivered');
    ok(wait_for(sub { sql("SELECT status FROM messages WHERE id = '$ids[0]'") eq 'suppressed' }, 20),
       'the suppressed one ends suppressed') or diag(sql("SELECT status FROM messages WHERE id = '$ids[0]'"));
    ok(!-e "$dir/sink/$ids[0].eml", 'and was not sent');
    ok(wait_for(sub { sql("SELECT status FROM messages WHERE id = '$ids[2]'") eq 'suppressed' }, 20),
       'the IDN recipient (stored in UTF-8) is caught at dispatch too')
      or diag(sql("SELECT status FROM messages WHERE id = '$ids[2]'"));
    ok(-e "$dir/sink/$ids[1].eml", 'the other was');
    is(sql("SELECT data->>'code' FROM events WHERE message_id = '$ids[0]' AND type = 'suppressed'"), 'suppressed',
       "a 'suppressed' event with code suppressed");
    is(sql("SELECT attempts FROM messages WHERE id = '$ids[0]'"), 0, 'no attempt counted');
    $r = api($A->{key}, 'GET', "/v1/messages/$ids[0]");
    is($r->{json}{status}, 'suppressed', 'GET /v1/messages/{id} says suppressed');
}

# --- 7. expiry and the cleanup (suppression_cleanup_interval 1s here) ------------------------
{
    api($A->{key}, 'POST', '/v1/suppressions', { address => 'exp@example.com', expires_at => future(3600) });
    is(api($A->{key}, 'GET', '/v1/suppressions/exp@example.com')->{status}, 200, 'an expiring entry is in effect');
    sql("UPDATE suppressions SET expires_at = now() - interval '1 second' WHERE address = 'exp\@example.com'");
    err_is(api($A->{key}, 'GET', '/v1/suppressions/exp@example.com'), 404, 'not_found', undef,
           'once expired it is not shown');
    sql("INSERT INTO soft_bounces (tenant_id, address, at) VALUES ('$A->{id}', 'old\@example.com', now() - interval '73 hours'),"
        . " ('$A->{id}', 'new\@example.com', now() - interval '1 hour')");
    my $gone = wait_for(sub {
        sql("SELECT count(*) FROM suppressions WHERE address = 'exp\@example.com'") == 0
          && sql("SELECT count(*) FROM soft_bounces WHERE address = 'old\@example.com'") == 0
    }, 10);
    ok($gone, 'the scheduled cleanup deleted the expired entry and the old soft bounce');
    is(sql("SELECT count(*) FROM soft_bounces WHERE address = 'new\@example.com'"), 1, 'a recent soft bounce stays');
    # an entry that expires later is in effect now
    my $r = api($A->{key}, 'POST', '/v1/messages', { %send, to => 'a2@example.com' });
    err_is($r, 422, 'suppressed', '/to', 'a2 (expires in 3 days) is still refused');
}

is_deeply([ $t->log_problems ], [], 'no errors or warnings in the logs') if $t->can('log_problems');
$t->stop;
done_testing;
