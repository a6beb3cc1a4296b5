# The MIME builder checked by an independent parser: t/unit/mime_t --emit writes
# .eml files (ASCII, UTF-8 subject and names, both parts, html only, long lines,
# emoji) with the inputs as JSON beside them; Debian's Python email package
# (email.parser + email.policy.default) parses each one and compares decoded
# headers, part structure and decoded bodies with the inputs, and checks line
# endings, line lengths and that the parser recorded no defects.
#
# Display names are also decoded with the legacy email.header API, for all cases:
# Python 3.11's policy.default keeps the space between two adjacent encoded-words
# in address headers (CPython gh-128110; RFC 2047 6.2 says to drop it), so the
# policy.default name check is skipped for a field that has adjacent encoded-words
# (only the longname case, by design).
use strict;
use warnings;
use Test::More;
use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use MailerdTest qw(bin_path);

# Debian's interpreter, not the `python3` on PATH (another build, without the
# distribution's packages).
my $py = '/usr/bin/python3';
plan skip_all => "$py not installed" unless -x $py;

my $bin = dirname(bin_path()) . '/../t/unit/mime_t';
if (!-x $bin) {
    # check_PROGRAMS are built by `make check`; build just this one if needed.
    system('make', '-s', '-C', dirname(bin_path()) . '/..', 't/unit/mime_t');
}
plan skip_all => "no $bin (make check builds it)" unless -x $bin;

my $dir = tempdir('mailerd-mime-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{MAILERD_KEEP});
is(system($bin, '--emit', $dir), 0, 'mime_t --emit wrote the messages');
my @cases = map { (m{/([^/]+)\.eml$})[0] } sort glob("$dir/*.eml");
is_deeply([sort @cases], [sort qw(ascii utf8 both htmlonly longlines emoji longname)], 'every case is there');

my $script = <<'PY';
import json, sys, os, re
from email import policy
from email.parser import BytesParser
from email.header import decode_header, make_header
from email.utils import getaddresses

d = sys.argv[1]

def report(ok, name, detail=''):
    print(('ok' if ok else 'not ok') + ' - ' + name + ((' # ' + detail) if detail and not ok else ''))

def norm(s):
    return s.replace('\r\n', '\n').replace('\r', '\n')

for name in sorted(f[:-4] for f in os.listdir(d) if f.endswith('.eml')):
    raw = open(os.path.join(d, name + '.eml'), 'rb').read()
    want = json.load(open(os.path.join(d, name + '.json'), encoding='utf-8'))
    lines = raw.split(b'\r\n')
    report(b'\n' not in raw.replace(b'\r\n', b'') and b'\r' not in raw.replace(b'\r\n', b''),
           name + ': CRLF line endings only')
    report(max(len(l) for l in lines) <= 998, name + ': no line over 998 octets',
           str(max(len(l) for l in lines)))
    head = raw.split(b'\r\n\r\n', 1)[0].split(b'\r\n')
    report(max(len(l) for l in head) <= 78, name + ': header lines folded at 78',
           str(max(len(l) for l in head)))
    report(all(b < 128 for b in raw), name + ': the message is 7-bit clean')

    msg = BytesParser(policy=policy.default).parsebytes(raw)
    defects = [(p.get_content_type(), p.defects) for p in msg.walk() if p.defects]
    for h in ('subject', 'from', 'to', 'date', 'message-id'):
        if msg[h] is not None and msg[h].defects:
            defects.append((h, msg[h].defects))
    report(not defects, name + ': the parser found no defects', repr(defects))
    report(msg['subject'] == want['subject'], name + ': subject decodes to the input',
           repr((str(msg['subject']), want['subject'])))
    rawhead = raw.split(b'\r\n\r\n', 1)[0].decode('ascii') + '\r\n'
    def field(h):
        m = re.search(r'^' + h + r':(.*?)\r\n(?![ \t])', rawhead, re.S | re.M | re.I)
        return m.group(1).replace('\r\n', '')
    def legacy(h):
        return [[str(make_header(decode_header(n))), a] for n, a in getaddresses([field(h)])]
    def adjacent(h):
        return re.search(r'\?=[ \t]+=\?', field(h)) is not None
    wfrom = [[want['from_name'], want['from_addr']]]
    report(legacy('From') == wfrom, name + ': From decodes to the input (email.header)',
           repr(legacy('From')))
    report(legacy('To') == want['to'], name + ': To decodes to the input (email.header)',
           repr(legacy('To')))
    fr = [[a.display_name, a.addr_spec] for a in msg['from'].addresses]
    if not adjacent('From'):
        report(fr == wfrom, name + ': From decodes to the input (policy.default)', repr(fr))
    to = [[a.display_name, a.addr_spec] for a in msg['to'].addresses]
    if not adjacent('To'):
        report(to == want['to'], name + ': To decodes to the input (policy.default)',
               repr((to, want['to'])))
    else:
        report([a for _, a in to] == [a for _, a in want['to']],
               name + ': To addresses (policy.default; names: gh-128110)', repr(to))
    report(msg['mime-version'] == '1.0' and msg['date'].datetime is not None
           and msg['date'].datetime.utcoffset().total_seconds() == 0
           and msg['message-id'].startswith('<') and msg['bcc'] is None,
           name + ': MIME-Version, a UTC Date, Message-ID, no Bcc')

    text, html = want['text'], want['html']
    if text is not None and html is not None:
        parts = list(msg.iter_parts())
        report(msg.get_content_type() == 'multipart/alternative'
               and [p.get_content_type() for p in parts] == ['text/plain', 'text/html'],
               name + ': multipart/alternative with text then html',
               repr([msg.get_content_type()] + [p.get_content_type() for p in parts]))
    else:
        parts = [msg]
        report(msg.get_content_type() == ('text/plain' if text is not None else 'text/html'),
               name + ': a single part of the right type', msg.get_content_type())
    for p, body in zip(parts, [b for b in (text, html) if b is not None]):
        st = p.get_content_subtype()
        report(p.get_content_charset() == 'utf-8', name + ': ' + st + ' part is charset=utf-8')
        got = p.get_content()
        report(norm(got) == norm(body), name + ': ' + st + ' body decodes to the input',
               repr((got[:80], body[:80])))
PY

open(my $ph, '-|', $py, '-c', $script, $dir) or die "python: $!";
my $n = 0;
while (my $line = <$ph>) {
    chomp $line;
    if ($line =~ /^(not ok|ok) - (.*?)(?: # (.*))?$/) {
        ok($1 eq 'ok', $2) or diag($3 // '');
        $n++;
    } else {
        diag($line);
    }
}
close $ph;
is($?, 0, 'the Python checker ran to the end');
cmp_ok($n, '>', 50, "the checker made its checks ($n)");

done_testing;
