# shellcheck shell=bash
# Shared helpers for scripts/test, scripts/quickstart and bench/*. Source it:
#   . "$(dirname "$0")/../scripts/lib.sh"
# It sets REPO (the checkout, wherever it is) and defines md_* functions.
# Nothing here runs anything on its own.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NPROC=$(nproc 2>/dev/null || echo 2)

# Every Debian package a fresh Debian 12 machine needs to build, test, run and
# benchmark mailerd. PostgreSQL and Redis are here for the issues that use them.
MD_APT_PACKAGES=(
    build-essential autoconf automake libtool pkg-config
    libev-dev node-llhttp libhiredis-dev libc-ares-dev libssl-dev libpq-dev
    libjansson-dev libidn2-dev libsystemd-dev
    perl wrk nginx-light postgresql redis-server curl ca-certificates procps
    python3 python3-yaml libio-socket-ssl-perl
)

md_say() { printf '==> %s\n' "$*" >&2; }
md_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Installs MD_APT_PACKAGES unless MAILERD_SKIP_APT=1, we are not root, or all
# of them are installed already (so a developer's rerun needs no network).
md_apt_install() {
    if [ "${MAILERD_SKIP_APT:-0}" = 1 ] || [ "$(id -u)" != 0 ]; then
        return 0
    fi
    if dpkg-query -W -f='${Status}\n' "${MD_APT_PACKAGES[@]}" 2>/dev/null |
        grep -c '^install ok installed$' | grep -qx "${#MD_APT_PACKAGES[@]}"; then
        return 0
    fi
    md_say "apt-get install ${MD_APT_PACKAGES[*]}"
    # Package scripts must not start PostgreSQL, Redis or nginx as system
    # services: tests start their own on loopback, and nothing may outlive us.
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1
    fi
    local rc=0
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends "${MD_APT_PACKAGES[@]}" || rc=$?
    [ "$own_policy" = 1 ] && rm -f "$policy"
    return "$rc"
}

# Generates configure when the checkout has none (a fresh clone) or when
# configure.ac changed since; automake's own rules handle Makefile.am edits.
md_autoreconf() {
    if [ ! -x "$REPO/configure" ] || [ "$REPO/configure.ac" -nt "$REPO/configure" ]; then
        md_say "autoreconf -fi"
        (cd "$REPO" && autoreconf -fi)
    fi
}

# md_build DIR [configure args...]: configures DIR (relative to REPO) when it
# has no Makefile or configure is newer, then runs make. Up to date: no-op.
md_build() {
    local dir=$REPO/$1
    shift
    mkdir -p "$dir"
    if [ ! -f "$dir/Makefile" ] || [ "$REPO/configure" -nt "$dir/config.status" ]; then
        md_say "configure in ${dir#"$REPO"/}: $*"
        (cd "$dir" && "$REPO/configure" -q "$@") || return 1
    fi
    md_say "make in ${dir#"$REPO"/}"
    make -C "$dir" -s -j"$NPROC"
}

# True while pid runs; a zombie (exited, not yet reaped) counts as gone.
md_alive() {
    local pid=$1 state
    kill -0 "$pid" 2>/dev/null || return 1
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
    [ "$state" != Z ]
}

# md_wait_gone PID SECONDS: polls until pid is gone; false on timeout.
md_wait_gone() {
    local pid=$1 deadline=$((SECONDS + $2))
    while md_alive "$pid"; do
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.1
    done
}

# md_http_status URL: prints the HTTP status code ("000" when nothing answers).
md_http_status() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" 2>/dev/null || true
}

# md_wait_http URL SECONDS [PID]: polls until URL answers 200; false on timeout
# or as soon as PID (the server being waited for) has died.
md_wait_http() {
    local url=$1 deadline=$((SECONDS + $2)) pid=${3:-}
    until [ "$(md_http_status "$url")" = 200 ]; do
        [ -n "$pid" ] && ! md_alive "$pid" && return 1
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.1
    done
}

# md_free_port: a loopback TCP port the kernel just handed out and released.
md_free_port() {
    perl -MIO::Socket::INET -e 'print IO::Socket::INET->new(LocalAddr => "127.0.0.1",
        LocalPort => 0, Listen => 1, ReuseAddr => 1)->sockport, "\n"'
}

# md_cpu_snapshot: one line, "busy idle postgres mailerd redis" in clock ticks:
# the machine's busy and idle time (/proc/stat) and the CPU time so far of
# every live process named postgres, mailerd or redis-server (/proc/PID/stat,
# user + system). Two snapshots around a run say where the machine's time went
# (md_cpu_split).
md_cpu_snapshot() {
    awk '/^cpu / { printf "%d %d", $2 + $3 + $4 + $7 + $8, $5 + $6; exit }' /proc/stat
    # The command name is in parentheses and may hold spaces; fields 14 and 15
    # (utime, stime) follow it. A process that ends between the glob and its
    # read makes cat fail, which under pipefail and set -e would end the caller.
    { cat /proc/[0-9]*/stat 2>/dev/null || :; } | awk '{
        c = $0; sub(/^[0-9]+ \(/, "", c); name = c; sub(/\).*/, "", name)
        sub(/^.*\) /, "", c); split(c, f, " ")
        t = f[12] + f[13]
        if (name == "postgres") pg += t; else if (name == "mailerd") md += t
        else if (name == "redis-server") rd += t
    } END { printf " %d %d %d\n", pg, md, rd }'
}

# md_cpu_split BEFORE AFTER N: from two md_cpu_snapshot lines and N events
# (messages) between them, "postgres P, mailerd M, redis R, the rest O us per
# message; idle I%" (the rest: wrk, the system, other tenants of the machine).
md_cpu_split() {
    awk -v a="$1" -v b="$2" -v n="$3" -v hz="$(getconf CLK_TCK)" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        busy = y[1] - x[1]; idle = y[2] - x[2]; us = 1e6 / hz / (n > 0 ? n : 1)
        pg = y[3] - x[3]; md = y[4] - x[4]; rd = y[5] - x[5]
        printf "postgres %.1f, mailerd %.1f, redis %.1f, the rest %.1f us per message; idle %.0f%%",
            pg * us, md * us, rd * us, (busy - pg - md - rd) * us, 100 * idle / (busy + idle)
    }'
}

# PostgreSQL server options of the dispatch benchmarks (bench/drain,
# bench/pg-dispatch). A checkpoint makes the next change to each page write the
# whole page to WAL; a drain changes pages written long before it (the
# backlog), so a checkpoint inside one cost ~25% of its rate (with 2GB: one
# every ~23 s of bench/drain's WAL). Both start their measured runs after a
# CHECKPOINT, with this much room for WAL before the next. MD_BENCH_PG_EXTRA
# adds options for an experiment (e.g. "-c wal_compression=lz4").
MD_BENCH_PG_OPTS="-c max_wal_size=8GB -c checkpoint_timeout=30min -c shared_buffers=256MB${MD_BENCH_PG_EXTRA:+ $MD_BENCH_PG_EXTRA}"

# md_c_string NAME FILE...: the C string constant NAME[] of the last FILE, its
# string macros expanded from all of them (one-parameter ones included): the
# SQL text a statement of the C code sends, for benchmarks that run it alone.
md_c_string() {
    local name=$1
    shift
    NAME=$name perl -0777 -e '
        my $src = join "", map { local $/; open(my $f, "<", $_) or die "$_: $!\n"; <$f> } @ARGV;
        $src =~ s/\\\n/ /g;
        my $tok = qr/"(?:[^"\\]|\\.)*"|\w+|[(),]/;
        my (%mac, %par);
        while ($src =~ /^#define\s+(\w+)(\((\w+)\))?[ \t]+(.*)$/mg) {
            my ($k, $p, $v) = ($1, $3, $4);
            next unless $v =~ /^\s*(?:$tok\s*)+$/;
            $mac{$k} = [ $v =~ /($tok)/g ];
            $par{$k} = $p if defined $p;
        }
        sub expand {
            my ($t, $env) = @_;
            my $s = "";
            for (my $i = 0; $i < @$t; $i++) {
                my $x = $t->[$i];
                if ($x =~ /^"(.*)"$/s) { $s .= $1 =~ s/\\(.)/$1/gr; next }
                if (exists $env->{$x}) { $s .= $env->{$x}; next }
                die "unknown macro $x\n" unless $mac{$x};
                if (defined $par{$x}) {
                    $t->[++$i] eq "(" or die "$x needs an argument\n";
                    my ($depth, @arg) = (1);
                    while (++$i < @$t) {
                        $depth += $t->[$i] eq "(" ? 1 : $t->[$i] eq ")" ? -1 : 0;
                        last if $depth == 0;
                        push @arg, $t->[$i];
                    }
                    $s .= expand($mac{$x}, { $par{$x} => expand(\@arg, $env) });
                } else {
                    $s .= expand($mac{$x}, $env);
                }
            }
            return $s;
        }
        $src =~ /\Q$ENV{NAME}\E\[\]\s*=\s*((?:$tok|\s)+);/ or die "no $ENV{NAME}\n";
        my $body = $1;
        print expand([ $body =~ /($tok)/g ], {});
    ' "$@"
}

# --- private PostgreSQL and Redis (scripts/quickstart; tests use t/lib/MailerdStore.pm) ---

# md_pg_bindir: the newest installed PostgreSQL server's bin directory
# (MAILERD_PGBIN overrides); prints nothing and fails when there is none.
md_pg_bindir() {
    if [ -n "${MAILERD_PGBIN:-}" ]; then
        [ -x "$MAILERD_PGBIN/pg_ctl" ] && echo "$MAILERD_PGBIN"
        return
    fi
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
    [ -n "$d" ] && [ -x "$d/pg_ctl" ] && echo "$d"
}

# md_as_pg CMD...: runs CMD as the postgres user when we are root (PostgreSQL
# refuses to run as root), as ourselves otherwise.
md_as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# md_port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
md_port_open() {
    perl -MIO::Socket::INET -e 'exit(IO::Socket::INET->new(PeerAddr => "127.0.0.1",
        PeerPort => $ARGV[0], Proto => "tcp", Timeout => 1) ? 0 : 1)' "$1"
}

# md_hex_token BYTES: BYTES random bytes from the OS CSPRNG, as lower-case hex.
md_hex_token() {
    od -An -v -N "$1" -tx1 /dev/urandom | tr -d ' \n'
}

# --- the PostgreSQL-only benchmarks (bench/pg-dispatch, bench/pg-accept) ---------------

# md_bench_pg_start NAME: makes $tmp (/tmp/mailerd-NAME-XXXXXX, removed on exit
# unless $keep is 1) and starts a private durable PostgreSQL in it with
# MD_BENCH_PG_OPTS on 127.0.0.1:$pg_port, stopped on exit (Ctrl-C included).
# Needs $pgbin (md_pg_bindir). Defines sql (psql as mailerd, -d DB given by the
# caller), cpu_ticks (the whole machine's busy ticks, /proc/stat), $hz and
# median (of numbers, one per line) for the benchmark's own use.
md_bench_pg_start() {
    tmp=$(mktemp -d "/tmp/mailerd-$1-XXXXXX")
    chmod 755 "$tmp"
    pg_started=0
    trap md_bench_pg_cleanup EXIT
    trap 'exit 130' INT TERM HUP
    pg_port=$(md_free_port)
    mkdir -p "$tmp/pg/run"
    [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$tmp/pg"
    chmod 700 "$tmp/pg/run"
    md_say "initdb and start PostgreSQL on 127.0.0.1:$pg_port"
    md_as_pg "$pgbin/initdb" -D "$tmp/pg/data" -U mailerd -A trust -E UTF8 --locale=C.UTF-8 \
        >"$tmp/initdb.log" 2>&1 || { cat "$tmp/initdb.log" >&2; md_die "initdb failed"; }
    pg_started=1
    md_as_pg "$pgbin/pg_ctl" -D "$tmp/pg/data" -l "$tmp/pg/postgres.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $tmp/pg/run $MD_BENCH_PG_OPTS" \
        start >/dev/null || { tail -n 20 "$tmp/pg/postgres.log" >&2; md_die "PostgreSQL did not start"; }
    hz=$(getconf CLK_TCK)
    sql() { PGOPTIONS='-c client_min_messages=warning' psql -X -q -A -t -v ON_ERROR_STOP=1 \
        -h 127.0.0.1 -p "$pg_port" -U mailerd "$@"; }
    cpu_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
    median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
}

md_bench_pg_cleanup() {
    if [ "$pg_started" = 1 ]; then
        md_as_pg "$pgbin/pg_ctl" -D "$tmp/pg/data" -m fast -w -t 60 stop >/dev/null 2>&1 ||
            md_as_pg "$pgbin/pg_ctl" -D "$tmp/pg/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
    fi
    if [ "${keep:-0}" = 1 ]; then echo "kept $tmp" >&2; else rm -rf "$tmp"; fi
}
