#!/usr/bin/perl
# An attempt after an interrupted one (its worker died between a send and its
# record) asks Postmark whether it already has the message, through the
# outbound message search by the Metadata every send carries
# (src/esp/md_esp_postmark.c, md_esp_driver_t.build_lookup), instead of sending
# it again. Rows written by hand in 'sending' with an expired lease stand for
# the dead attempts; a message that attempt did send is POSTed to
# tools/mock-esp here first, as the dead worker had.
#   (a) a single-send account: the message Postmark has is recorded sent with
#       the MessageID Postmark gave the dead attempt, not sent again; the one
#       it has not is sent, once;
#   (b) the same through an account that sends batches (/email/batch);
#   (c) a search that fails (a 500) ends the attempt deferred, still marked
#       interrupted, without failing over to the route's next account (which
#       could not know whether Postmark sent it); the next attempt asks again
#       and sends it through Postmark, once;
#   (d) messages that were not interrupted are sent without a search;
#   (e) a route whose first account cannot look up (SendGrid) before Postmark:
#       the interrupted attempt may have failed over to Postmark, so Postmark
#       is asked; the message it has is recorded sent through it, with its
#       MessageID, and SendGrid never gets it; the one it has not goes out
#       through the route's first account, once; when that search fails the
#       message goes out through the first account too (at least once, as
#       with no lookup), with a warning, rather than waiting for an account
#       the route has moved past.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use JSON::PP;
use File::Temp qw(tempdir);
use MailerdTest qw(wait_for);

MailerdTest::skip_without_store();
my $mock = eval { require MockESP; MockESP->new(journal => 1) };
plan skip_all => "tools/mock-esp is not functional: " . ($@ =~ s/\n.*//sr) unless $mock;

my $conf = $mock->esp_conf('pm', 'postmark', ca_file => $mock->ca_file, max_connections => 2)
  . $mock->esp_conf('pmb', 'postmark', ca_file => $mock->ca_file, max_connections => 2, batch => 10,
                    batch_window => '50ms')
  . $mock->esp_conf('sg', 'sendgrid', ca_file => $mock->ca_file, max_connections => 2)
  . "routing {\n    route main { esp pm; esp sg; }\n    route alt { esp sg; esp pm; }\n    default_route main;\n}\n"
  . "queue_recovery_interval 1s;\nretry_backoff_base 1s;\nretry_backoff_max 2s;\n";
my $S = MailerdTest->stack(workers => 1, main_extra => $conf, tenants => 2);
my ($t, $pg) = @{$S}{qw(t pg)};
my ($A, $B) = @{ $S->{tenants} };
my $tmp = tempdir('t74-XXXXXX', TMPDIR => 1, CLEANUP => 1);

sub sql { scalar $pg->psql($_[0]) }

# n rows of tenant $who (default A) whose attempt 1 ran out of its lease with
# no outcome recorded, routed to $esp (an account name; undef: the tenant's
# route). Returns their ids.
sub interrupted {
    my ($n, $esp, $who) = @_;
    $who //= $A;
    my $route = defined $esp ? "'$esp'" : 'NULL';
    return split /\n/, sql("WITH i AS (INSERT INTO messages (id, tenant_id, status, priority, attempts,"
        . " lease_until, esp_route, from_addr, to_addr, subject, text_body, updated_at)"
        . " SELECT gen_random_uuid(), '$who->{id}', 'sending', 'transactional', 1, now() - interval '1 minute',"
        . " $route, 'a\@acme.example', 'r' || g || '\@example.com', 'interrupted', 'x', now() - interval '1 minute'"
        . " FROM generate_series(1, $n) g RETURNING id, tenant_id),"
        . " e AS (INSERT INTO events (id, tenant_id, message_id, type)"
        . " SELECT gen_random_uuid(), tenant_id, id, 'queued' FROM i) SELECT id FROM i");
}

# What the dead attempt did: POST /email to the mock with our id in Metadata.
# Returns Postmark's MessageID.
my $nreq = 0;
sub sent_by_dead_attempt {
    my ($id) = @_;
    my $body = encode_json({ From => 'a@acme.example', To => 'r@example.com', Subject => 'interrupted',
                             TextBody => 'x', MessageStream => 'outbound',
                             Metadata => { mailerd_message_id => $id } });
    my $in = "$tmp/req" . ++$nreq;
    open(my $fh, '>', $in) or die "$in: $!";
    print $fh $body;
    close $fh;
    my $out = `curl -sS --cacert '${\ $mock->ca_file }' -H 'X-Postmark-Server-Token: $mock->{postmark_token}' -H 'Content-Type: application/json' -H 'Accept: application/json' --data-binary '\@$in' '${\ $mock->url }/email'`;
    my $j = eval { decode_json($out) } // {};
    return $j->{MessageID};
}

# { id => times } of the mock's journal lines of $provider for @ids.
sub journal_counts {
    my ($provider, @ids) = @_;
    my %want = map { $_ => 1 } @ids;
    my %seen = map { $_ => 0 } @ids;
    $seen{ $_->[1] }++ for grep { $_->[0] eq $provider && $want{ $_->[1] } } $mock->journal_lines;
    return join ' ', map { $seen{$_} } @ids;
}

sub row { [ split /\|/, sql("SELECT status, attempts, coalesce(esp, ''), coalesce(esp_message_id, ''),"
                           . " coalesce(last_error, '') FROM messages WHERE id = '$_[0]'"), -1 ] }
sub searches { $mock->provider_stats('postmark')->{searches} // 0 }
sub reconciled { grep { ($_->{msg} // '') =~ /interrupted attempt had sent the message already/ } $t->error_log_entries }

sub lookup_case {
    my ($label, $esp) = @_;
    my ($done, $lost) = interrupted(2, $esp);
    my $pid = sent_by_dead_attempt($done);
    ok($pid, "$label: the dead attempt's send reached Postmark ($pid)");
    my $s0 = searches();
    ok(wait_for(sub { sql("SELECT count(*) FROM messages WHERE id IN ('$done', '$lost') AND status = 'sent'") == 2 }, 20),
       "$label: both end sent") or diag(explain([ row($done), row($lost) ]));
    is(row($done)->[3], $pid, "$label: the one Postmark had is recorded with the MessageID of the dead attempt's send");
    is(journal_counts('postmark', $done, $lost), '1 1', "$label: each reached Postmark once (the first by the dead attempt)");
    is(searches() - $s0, 2, "$label: one search each");
    is(join(',', map { row($_)->[1] } $done, $lost), '2,2', "$label: attempt 2 each");
    is(sql("SELECT count(*) FROM events WHERE message_id IN ('$done', '$lost') AND type = 'sending'"
           . " AND (data->>'interrupted')::boolean"), 2, "$label: their 'sending' events say interrupted");
    is(join(',', map { $_->{message_id} } grep { ($_->{message_id} // '') =~ /^(\Q$done\E|\Q$lost\E)$/ } reconciled()),
       $done, "$label: logged as found for the one Postmark had only");
}

# --- (a), (b) -------------------------------------------------------------------------------
lookup_case('single sends', 'pm');
lookup_case('batch sends', 'pmb');
cmp_ok($mock->provider_stats('postmark')->{batch_requests}, '>=', 1, 'the batch account sent through /email/batch');

# --- (c) a failed search --------------------------------------------------------------------
{
    $mock->faults(provider => 'postmark', status => 500, count => 1);
    my ($id) = interrupted(1);
    ok(wait_for(sub { row($id)->[0] eq 'deferred' || row($id)->[0] eq 'sent' }, 20), 'a search answered 500')
      or diag(explain(row($id)));
    my $r = row($id);
    is($r->[0], 'deferred', '... defers the attempt');
    like($r->[4], qr/^interrupted: attempt 2: looking up the interrupted attempt failed/,
         '... with last_error still marked interrupted');
    is(journal_counts('sendgrid', $id), '0', '... and did not fail over to the next account');
    ok(wait_for(sub { row($id)->[0] eq 'sent' }, 20), 'the next attempt asks again and sends it')
      or diag(explain(row($id)));
    is(row($id)->[1], 3, '... as attempt 3');
    is(row($id)->[2], 'pm', '... through Postmark');
    is(journal_counts('postmark', $id) . ' ' . journal_counts('sendgrid', $id), '1 0', '... once');
    is(sql("SELECT count(*) FROM events WHERE message_id = '$id' AND type = 'sending'"
           . " AND (data->>'interrupted')::boolean AND (data->>'attempt')::int = 3"), 1,
       "... its attempt 3 'sending' event says interrupted too");
}

# --- (d) no search without an interruption ---------------------------------------------------
{
    my $s0 = searches();
    my @ids = $t->send_many($A->{key}, 5, 'plain');
    is(scalar @ids, 5, 'five messages accepted');
    my $in = join(',', map { "'$_'" } @ids);
    ok(wait_for(sub { sql("SELECT count(*) FROM messages WHERE id IN ($in) AND status = 'sent'") == 5 }, 20),
       'sent');
    is(searches() - $s0, 0, 'without a search');
    is(journal_counts('postmark', @ids), '1 1 1 1 1', 'once each');
}

# --- (e) the route's first account cannot look up ------------------------------------------
ok($t->reload_conf(sub { $_[0] =~ s/default_route main;/default_route main;\n    tenant_route $B->{id} alt;/r }),
   'tenant B routed through alt (SendGrid, then Postmark)');
{
    my ($done, $lost) = interrupted(2, undef, $B);
    my $pid = sent_by_dead_attempt($done);
    ok($pid, "failed over: the dead attempt's send reached Postmark ($pid)");
    my $s0 = searches();
    ok(wait_for(sub { sql("SELECT count(*) FROM messages WHERE id IN ('$done', '$lost') AND status = 'sent'") == 2 }, 20),
       'failed over: both end sent') or diag(explain([ row($done), row($lost) ]));
    is_deeply([ @{ row($done) }[2, 3] ], [ 'pm', $pid ],
              'failed over: the one Postmark had is recorded sent through it, with its MessageID');
    is(journal_counts('sendgrid', $done) . ' ' . journal_counts('postmark', $done), '0 1',
       '... SendGrid never got it, Postmark once (the dead attempt)');
    is(row($lost)->[2], 'sg', 'failed over: the one Postmark has not goes out through the first account');
    is(journal_counts('sendgrid', $lost) . ' ' . journal_counts('postmark', $lost), '1 0', '... once');
    is(searches() - $s0, 2, 'failed over: one search each');

    $mock->faults(provider => 'postmark', status => 500, count => 1);
    my ($unknown) = interrupted(1, undef, $B);
    ok(wait_for(sub { row($unknown)->[0] eq 'sent' }, 20), "failed over, Postmark's search answers 500: sent")
      or diag(explain(row($unknown)));
    is(row($unknown)->[2], 'sg', '... through the first account');
    is(journal_counts('sendgrid', $unknown) . ' ' . journal_counts('postmark', $unknown), '1 0', '... once');
    ok((grep { ($_->{message_id} // '') eq $unknown && ($_->{esp} // '') eq 'pm' }
        $t->logged(qr/looking up an interrupted attempt failed at another account/)),
       '... with a warning naming the account whose search failed');
}

ok(!$t->log_problems, 'no alert or sanitizer report in the logs') or diag(join("\n", $t->log_problems));
is($t->stop, 0, 'graceful stop');
done_testing;
