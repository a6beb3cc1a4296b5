# Reads an .eml the sink wrote the way a mail client would: with Debian's
# Python email package (an independent MIME parser), so tests check our output
# against someone else's reading of the RFCs rather than our own.
package MailerdEml;
use strict;
use warnings;
use JSON::PP;
use Exporter 'import';
our @EXPORT_OK = qw(parse_eml);

# { headers => {lower-case name => decoded value}, defects, type, parts =>
# [{type, body, defects}], max_line, crlf }, or undef when Python fails.
sub parse_eml {
    my ($file) = @_;
    my $py = <<'PY';
import email, email.policy, json, sys
with open(sys.argv[1], 'rb') as f:
    raw = f.read()
m = email.message_from_bytes(raw, policy=email.policy.default)
out = {'headers': {k.lower(): str(v) for k, v in m.items()}, 'defects': len(m.defects),
       'type': m.get_content_type(), 'parts': [],
       'max_line': max(len(l) for l in raw.split(b'\r\n')), 'crlf': raw.count(b'\n') == raw.count(b'\r\n')}
for p in m.walk():
    if p.is_multipart():
        continue
    out['parts'].append({'type': p.get_content_type(), 'body': p.get_content(), 'defects': len(p.defects)})
sys.stdout.buffer.write(json.dumps(out, ensure_ascii=False).encode())
PY
    open(my $fh, '-|', '/usr/bin/python3', '-c', $py, $file) or die "python3: $!";
    local $/;
    my $o = <$fh>;
    close $fh;
    return eval { JSON::PP->new->decode($o) }; # bytes in, bytes out, like the literals here
}

1;
