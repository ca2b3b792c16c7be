#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause
#
# bench/soak/soak.pl - the soak driver behind bench/soak.sh and
# t/122-soak-short.t.
#
# Starts the mock Unico (t/mock/unico.pl), a second mock whose certificate
# does not verify, and one nginx worker with the module, all through the
# test harness (t/lib/UnicoTest.pm, so TEST_NGINX_BINARY / TEST_NGINX_MODULE
# choose the build).  Then several client processes send a weighted random
# mix for the given time:
#
#   good      the 4 fixtures (GET, byte-exact and headers checked; HEAD), the
#             accepted JSON variants, an upper-case processId, a 5 MiB image,
#             over a plain API location and over a keepalive upstream
#   bad input malformed processIds (400), methods other than GET/HEAD (405),
#             a well-formed unknown processId (404 from Unico)
#   faults    every Unico status of the table, reset / close / garbage /
#             truncated / reset mid-body / chunked-truncated / gzip / hang /
#             slow / slow body, a certificate that does not verify, and every
#             broken JSON payload
#
# Every answer is checked against the status (and, for the module's
# outcomes, the $unico_selfie_reason counted in the access log) that
# docs/status-codes.md gives.  The worker's RSS and open file descriptors are
# sampled every --sample seconds.  At the end it prints counts per scenario
# and status, the unexpected answers, the RSS series and the growth verdict:
#
#   last-quarter median RSS <= warm-up median * 1.05 + 2 MiB
#
# (warm-up: the first --warmup seconds).  It exits 0 only when there was no
# unexpected answer, no unexpected reason count, no crash/alert/sanitizer
# line in the logs, no worker respawn, no leaked descriptor and no growth.
#
# Usage: soak.pl [--seconds S | --minutes M] [--clients N] [--warmup S]
#                [--sample S] [--json FILE] [--seed N] [--no-tunables]
#                [--request-timeout S] [--quiet]

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../../t/lib";

use Digest::SHA qw(sha256 sha256_hex);
use File::Copy qw(copy);
use Getopt::Long qw(GetOptions);
use IO::Select;
use IO::Socket::INET;
use JSON::PP ();
use POSIX qw(WNOHANG);
use Socket qw(SOL_SOCKET SO_LINGER);
use Time::HiRes qw(time sleep);
use UnicoTest;

$| = 1;

my %O = (
    seconds           => undef,
    minutes           => undef,
    clients           => 6,
    warmup            => 60,
    sample            => 5,
    json              => undef,
    seed              => undef,
    tunables          => 1,
    'request-timeout' => 30,
    'read-timeout'    => 4,
    quiet             => 0,
    'log-level'       => 'info',
    exclude           => [],
    rss               => 1,
    order             => 'random',
    'rss-stat'        => 'median',
);

GetOptions(\%O, 'seconds=f', 'minutes=f', 'clients=i', 'warmup=f',
           'sample=f', 'json=s', 'seed=i', 'tunables!',
           'request-timeout=f', 'read-timeout=f', 'log-level=s', 'exclude=s@',
           'rss!', 'order=s', 'rss-stat=s', 'quiet',
           'help')
    or usage(2);
usage(0) if $O{help};

my $DURATION = defined $O{seconds} ? $O{seconds}
             : defined $O{minutes} ? $O{minutes} * 60 : 600;
die "soak: duration must be between 5 s and 24 h\n"
    if $DURATION < 5 || $DURATION > 86400;
die "soak: --clients must be 1..64\n" if $O{clients} < 1 || $O{clients} > 64;
die "soak: --order is random or sweep\n" if $O{order} !~ /^(random|sweep)$/;
die "soak: --rss-stat is median or min\n"
    if $O{'rss-stat'} !~ /^(median|min)$/;
$O{warmup} = $DURATION / 4 if $O{warmup} > $DURATION / 4;
$O{seed} //= int(time * 1000) % 1_000_000;

my $JSON = JSON::PP->new->canonical->pretty;
my $MAX_UNEXPECTED_KEPT = 50;

sub usage {
    print {$_[0] ? *STDERR : *STDOUT} <<'EOF';
usage: soak.pl [--seconds S | --minutes M] [options]
  --clients N          concurrent client processes (default 6)
  --warmup S           warm-up seconds for the RSS baseline (default 60)
  --sample S           RSS sampling period (default 5)
  --json FILE          write the report as JSON too
  --seed N             random seed (default: time)
  --no-tunables        run nginx with glibc's default malloc tuning
  --request-timeout S  client-side bound per request (default 30)
  --read-timeout S     proxy_read_timeout of the API locations (default 4;
                       below 5, the mock's slow and slow-body delays; a
                       loaded machine can keep the mock from starting a
                       5 MiB answer within 2 s)
  --log-level L        nginx error_log level (default info; debug works
                       with a --with-debug nginx)
  --exclude REGEX      leave out the scenarios whose name matches
                       (repeatable), e.g. one that trips a known bug
  --no-rss             report RSS but do not judge it (Valgrind, ...)
  --rss-stat min       judge the floor (minimum) of the warm-up and of the
                       last quarter instead of their medians: for short
                       runs, where requests in flight weigh on a median
  --order sweep        each client goes through the scenarios in turn
                       (every one covered in few requests) instead of
                       picking by weight (random, the default)
  --quiet              no progress lines
EOF
    exit $_[0];
}

sub say_ { print @_, "\n" unless $O{quiet} }


# ---------------------------------------------------------------------------
# Servers

my $t = UnicoTest->new;

# A private copy of the module: a rebuild during a long run rewrites the
# .so in place, under the running nginx.
{
    my $copy = $t->dir . '/ngx_http_unico_selfie_module.so';
    copy($t->{module}, $copy) or die "soak: copy $t->{module}: $!\n";
    $t->{module_source} = $t->{module};
    $t->{module} = $copy;
}

$t->start_mock;

# a second mock whose certificate is signed by another CA
my $u = UnicoTest->new;
my $untrusted_port = $u->start_mock(cert => 'untrusted');

my $rt = "$O{'read-timeout'}s";
my $api_common = <<"CONF";
            internal;
            include                        %%CONF%%/unico_selfie_api.conf;
            proxy_ssl_trusted_certificate  %%CERTS%%/ca.pem;
            proxy_ssl_name                 localhost;
            proxy_read_timeout             $rt;
CONF

my $token = $UnicoTest::TOKEN;
my $conf = $t->selfie_conf(
    http => <<"CONF",
    log_format  soak  '\$msec \$connection \$connection_requests \$status '
                      '\$unico_selfie_reason \$request_time "\$request"';

    upstream unico_keepalive {
        server     %%MOCK%%;
        keepalive  16;
    }
CONF
    server => <<"CONF");
        access_log  %%DIR%%/logs/connections.log soak;

        location ~ ^/ka/selfies/(?<unico_process>[^/]+)\$ {
            unico_selfie        \$unico_process;
            unico_selfie_api    /_unico_ka;
            unico_selfie_token  $token;
        }

        location /_unico_ka/ {
$api_common
            proxy_pass  https://unico_keepalive/;
        }

        location ~ ^/untrusted/selfies/(?<unico_process>[^/]+)\$ {
            unico_selfie        \$unico_process;
            unico_selfie_api    /_unico_untrusted;
            unico_selfie_token  $token;
        }

        location /_unico_untrusted/ {
$api_common
            proxy_pass  https://127.0.0.1:$untrusted_port/;
        }
CONF

$conf =~ s/proxy_read_timeout\s+2s;/proxy_read_timeout $rt;/;

# Big buffers mmap()ed and returned on free, so RSS follows live memory and
# not glibc's high-water mark (workers are forked, they inherit this).
if ($O{tunables}) {
    $ENV{GLIBC_TUNABLES} = 'glibc.malloc.mmap_threshold=131072:'
                           . 'glibc.malloc.trim_threshold=262144';
}

$t->start_nginx($conf, log_level => $O{'log-level'});
delete $ENV{GLIBC_TUNABLES};


# ---------------------------------------------------------------------------
# The scenario table

my %FILE = ('jpeg-small'  => 'selfie-360x480.jpg',
            'jpeg-medium' => 'selfie-720x960.jpg',
            'jpeg-large'  => 'selfie-1080x1440.jpg',
            'png'         => 'selfie-480x640.png');

my %SHA = map { $_ => $t->fixture_sha256($FILE{$_}) } keys %FILE;
my %SIZE = map { $_ => -s UnicoTest->repo . "/t/fixtures/$FILE{$_}" }
           keys %FILE;

# the mock's jpeg-noise image of max-exact (t/mock/unico.pl jpeg_noise)
my $NOISE_SIZE = 5242880;
my $NOISE_SHA = do {
    my $out = "\xFF\xD8\xFF\xE0";
    my $i = 0;
    $out .= sha256("unico-mock-noise:$NOISE_SIZE:" . $i++)
        while length $out < $NOISE_SIZE;
    sha256_hex(substr($out, 0, $NOISE_SIZE));
};

my @S;      # {name, method, path, status, reason, weight, sha, size, type}

sub scenario { push @S, {@_} }

my $good_id = $t->id('jpeg-small');

for my $prefix ('', '/ka') {
    my $tag = $prefix ? 'ka:' : '';
    for my $f (sort keys %FILE) {
        scenario(name => "${tag}good:$f", method => 'GET',
                 path => "$prefix/selfies/" . $t->id($f),
                 status => 200, reason => 'ok', weight => 6,
                 sha => $SHA{$f}, size => $SIZE{$f},
                 type => $f eq 'png' ? 'image/png' : 'image/jpeg');
    }
}

for my $f (sort keys %FILE) {
    scenario(name => "head:$f", method => 'HEAD',
             path => '/selfies/' . $t->id($f), status => 200,
             reason => 'ok', weight => 0.5, size => $SIZE{$f},
             type => $f eq 'png' ? 'image/png' : 'image/jpeg');
}

my %variant = (
    'chunked'          => 'jpeg-medium', 'close-delimited'  => 'jpeg-small',
    'connection-close' => 'jpeg-small',  'escaped-slashes'  => 'jpeg-medium',
    'wrapped-newlines' => 'jpeg-medium', 'wrapped-crlf'     => 'jpeg-medium',
    'unicode-escapes'  => 'jpeg-medium', 'no-padding'       => 'jpeg-medium',
    'pretty-json'      => 'jpeg-small',  'reordered'        => 'png',
    'extra-fields'     => 'jpeg-small',  'deep-nesting'     => 'jpeg-small',
);

for my $v (sort keys %variant) {
    my $f = $variant{$v};
    scenario(name => "good:$v", method => 'GET',
             path => '/selfies/' . $t->id($v), status => 200,
             reason => 'ok', weight => 0.5, sha => $SHA{$f},
             size => $SIZE{$f},
             type => $f eq 'png' ? 'image/png' : 'image/jpeg');
}

scenario(name => 'good:upper-case-id', method => 'GET',
         path => '/selfies/' . uc($good_id), status => 200, reason => 'ok',
         weight => 0.5, sha => $SHA{'jpeg-small'},
         size => $SIZE{'jpeg-small'}, type => 'image/jpeg');
scenario(name => 'good:max-exact-5MiB', method => 'GET',
         path => '/selfies/' . $t->id('max-exact'), status => 200,
         reason => 'ok', weight => 0.1, sha => $NOISE_SHA,
         size => $NOISE_SIZE, type => 'image/jpeg');

# bad input from the client
(my $nohyphen = $good_id) =~ s/-//g;
my %bad_id = (
    'word'          => 'not-a-uuid',
    '35-chars'      => substr($good_id, 0, 35),
    '37-chars'      => $good_id . 'a',
    'no-hyphens'    => $nohyphen . '0000',
    'non-hex'       => substr($good_id, 0, 35) . 'g',
    'hyphen-moved'  => '53060f52f-146-4c12-a234-5bb5031f6f5b',
    'braces'        => '{' . substr($good_id, 0, 34) . '}',
    'overlong-4000' => 'x' x 4000,
    'encoded-blank' => '%20' . substr($good_id, 1),
    'non-ascii'     => substr($good_id, 0, 35) . '%C3%A9',
);

for my $b (sort keys %bad_id) {
    scenario(name => "bad-id:$b", method => 'GET',
             path => "/selfies/$bad_id{$b}", status => 400,
             reason => 'bad_process_id', weight => 0.3);
}

for my $m (qw(POST PUT DELETE PATCH OPTIONS)) {
    scenario(name => "bad-method:$m", method => $m,
             path => "/selfies/$good_id", status => 405,
             reason => 'bad_method', weight => 0.4,
             body => $m eq 'POST' || $m eq 'PUT' ? 'x=1' : '');
}

scenario(name => 'unico:unknown-process', method => 'GET',
         path => '/selfies/00000000-0000-4000-8000-000000000001',
         status => 404, reason => 'unico_404', weight => 0.5);

# Unico's statuses
my @status_rows = (
    ['status-400', 400, 'unico_400'],   ['status-401', 502, 'unico_401'],
    ['status-403', 403, 'unico_403'],   ['status-404', 404, 'unico_404'],
    ['status-429', 503, 'unico_429'],   ['status-500', 502, 'unico_5xx'],
    ['status-502', 502, 'unico_5xx'],   ['status-503', 502, 'unico_5xx'],
    ['status-504', 502, 'unico_5xx'],   ['status-418', 502, 'unico_status'],
    ['status-302', 502, 'unico_status'],
);

for (@status_rows) {
    my ($n, $st, $re) = @$_;
    scenario(name => "unico:$n", method => 'GET',
             path => '/selfies/' . $t->id($n), status => $st,
             reason => $re, weight => 0.3,
             ($n eq 'status-429' ? (retry_after => '7') : ()));
}

# network faults, on the plain and the keepalive API location
my @net_rows = (
    ['reset',             502, 'upstream_error', 1],
    ['close-no-answer',   502, 'upstream_error', 1],
    ['garbage',           502, 'upstream_error', 1],
    ['reset-mid-body',    502, 'truncated',      1],
    ['truncated',         502, 'truncated',      1],
    ['chunked-truncated', 502, 'truncated',      1],
    ['gzip',              502, 'encoded',        0.5],
    ['hang',              504, 'upstream_timeout', 0.15],
    ['slow',              504, 'upstream_timeout', 0.1],
    ['slow-body',         502, 'truncated',      0.1],
);

for my $prefix ('', '/ka') {
    my $tag = $prefix ? 'ka:' : '';
    for (@net_rows) {
        my ($n, $st, $re, $w) = @$_;
        scenario(name => "${tag}fault:$n", method => 'GET',
                 path => "$prefix/selfies/" . $t->id($n), status => $st,
                 reason => $re, weight => $prefix ? $w / 2 : $w);
    }
}

scenario(name => 'fault:untrusted-certificate', method => 'GET',
         path => "/untrusted/selfies/$good_id", status => 502,
         reason => 'upstream_error', weight => 1);

# broken payloads (t/050-payload.t)
my %payload = (
    'fileContents-number'   => 'wrong_type',
    'fileContents-null'     => 'wrong_type',
    'fileContents-empty'    => 'empty_image',
    'contentType-number'    => 'wrong_type',
    'missing-fileContents'  => 'missing_field',
    'missing-contentType'   => 'missing_field',
    'top-level-array'       => 'not_object',
    'not-json'              => 'bad_json',
    'truncated-json'        => 'bad_json',
    'empty-body'            => 'bad_json',
    'duplicate-field'       => 'duplicate_field',
    'duplicate-contentType' => 'duplicate_field',
    'bad-base64'            => 'bad_base64',
    'base64url'             => 'bad_base64',
    'content-type-html'     => 'bad_content_type',
    'content-type-svg'      => 'bad_content_type',
    'content-type-gif'      => 'bad_content_type',
    'png-labelled-jpeg'     => 'image_mismatch',
    'jpeg-labelled-png'     => 'image_mismatch',
    'huge'                  => 'response_too_large',
    'max-plus-one'          => 'image_too_large',
);

for my $n (sort keys %payload) {
    scenario(name => "payload:$n", method => 'GET',
             path => '/selfies/' . $t->id($n), status => 502,
             reason => $payload{$n},
             weight => $n =~ /^(huge|max-plus-one)$/ ? 0.05 : 0.25);
}

my @EXCLUDED;
for my $re (@{ $O{exclude} }) {
    push @EXCLUDED, map { $_->{name} } grep { $_->{name} =~ /$re/ } @S;
    @S = grep { $_->{name} !~ /$re/ } @S;
}
die "soak: every scenario excluded\n" unless @S;

my $TOTAL_WEIGHT = 0;
$TOTAL_WEIGHT += $_->{weight} for @S;


# ---------------------------------------------------------------------------
# A small HTTP/1.1 client: keep-alive or not, Content-Length framing,
# bounded by --request-timeout.

sub http {
    my ($conn, $s, $keep) = @_;
    my $deadline = time + $O{'request-timeout'};
    my $reused = $conn->{sock} ? 1 : 0;

    unless ($conn->{sock}) {
        $conn->{sock} = IO::Socket::INET->new(
            PeerAddr => '127.0.0.1:' . $t->port, Timeout => 10)
            or return { error => "connect: $!" };
        $conn->{buf} = '';
        $conn->{n} = 0;
    }

    my $sock = $conn->{sock};
    my $body = $s->{body} // '';
    my $req = "$s->{method} $s->{path} HTTP/1.1\r\nHost: localhost\r\n"
            . ($keep ? '' : "Connection: close\r\n")
            . (length $body ? "Content-Length: " . length($body) . "\r\n"
                            : '')
            . "\r\n$body";

    my $off = 0;
    while ($off < length $req) {
        my $n = syswrite($sock, $req, length($req) - $off, $off);
        unless ($n) {
            drop($conn);
            return { error => "write: $!", reused => $reused };
        }
        $off += $n;
    }
    $conn->{n}++;

    my $sel = IO::Select->new($sock);
    my $buf = \$conn->{buf};
    my $fill = sub {
        my $left = $deadline - time;
        return 'timeout' if $left <= 0 || !$sel->can_read($left);
        my $n = sysread($sock, my $chunk, 262144);
        return defined $n ? 'eof' : "read: $!" unless $n;
        $$buf .= $chunk;
        return undef;
    };

    my $end;
    until (($end = index $$buf, "\r\n\r\n") >= 0) {
        my $err = $fill->();
        if ($err) {
            my $got = length $$buf;
            drop($conn);
            return { error => "$err before the header ($got bytes)",
                     reused => $reused };
        }
    }

    my $head = substr($$buf, 0, $end + 4, '');
    my $r = UnicoTest::parse_response($head);
    my $h = $r->{headers};
    my $len;

    if ($s->{method} eq 'HEAD' || $r->{status} == 204
        || $r->{status} == 304 || $r->{status} < 200)
    {
        $len = 0;
    } elsif (defined $h->{'content-length'}) {
        $len = $h->{'content-length'};
    } elsif (($h->{'transfer-encoding'} // '') =~ /chunked/i) {
        drop($conn);
        return { %$r, error => 'chunked answer (not expected)' };
    }

    if (defined $len) {
        while (length $$buf < $len) {
            my $err = $fill->();
            if ($err) {
                my $got = length $$buf;
                drop($conn);
                return { %$r, error => "$err in the body ($got of $len "
                                       . "bytes)" };
            }
        }
        $r->{body} = substr($$buf, 0, $len, '');
    } else {
        while (!(my $err = $fill->())) { }
        $r->{body} = $$buf;
        $$buf = '';
        drop($conn);
    }

    drop($conn) if !$keep || ($h->{connection} // '') =~ /close/i
                   || $conn->{n} >= 100;
    return $r;
}

sub drop {
    my ($conn) = @_;
    close $conn->{sock} if $conn->{sock};
    delete $conn->{sock};
    $conn->{buf} = '';
}

# What is wrong with an answer, or undef.
sub check {
    my ($s, $r) = @_;
    return $r->{error} if $r->{error};
    return "status $r->{status}, not $s->{status}"
        if $r->{status} != $s->{status};

    my $h = $r->{headers};
    if ($s->{status} == 200) {
        return "Content-Type " . ($h->{'content-type'} // '(none)')
            if ($h->{'content-type'} // '') ne $s->{type};
        return "Content-Length " . ($h->{'content-length'} // '(none)')
            if ($h->{'content-length'} // -1) != $s->{size};
        return 'no nosniff'
            if ($h->{'x-content-type-options'} // '') ne 'nosniff';
        if ($s->{method} eq 'GET') {
            return 'body is not byte-exact (' . length($r->{body}) . ' bytes)'
                if sha256_hex($r->{body}) ne $s->{sha};
        } else {
            return 'HEAD with a body' if length $r->{body};
        }
    } else {
        return 'an image Content-Type on a failure'
            if ($h->{'content-type'} // '') =~ m{^image/};
        return 'set-cookie leaked' if exists $h->{'set-cookie'};
    }
    return "Allow: " . ($h->{allow} // '(none)')
        if $s->{status} == 405 && ($h->{allow} // '') ne 'GET, HEAD';
    return "Retry-After: " . ($h->{'retry-after'} // '(none)')
        if defined $s->{retry_after}
           && ($h->{'retry-after'} // '') ne $s->{retry_after};
    return undef;
}

sub client {
    my ($n, $until, $out) = @_;
    srand($O{seed} + 7919 * $n);
    my $keep = $n % 2;              # odd clients use keep-alive
    my (%count, @unexpected, %latency_max);
    my $conn = {};
    my $stop = 0;
    local $SIG{INT} = local $SIG{TERM} = sub { $stop = 1 };

    my $i = int(@S * ($n - 1) / $O{clients});
    while (!$stop && time < $until) {
        my $s = $S[0];
        if ($O{order} eq 'sweep') {
            $s = $S[$i++ % @S];
        } else {
            my $x = rand $TOTAL_WEIGHT;
            for (@S) { $s = $_; last if ($x -= $_->{weight}) < 0 }
        }

        my $start = time;
        my $r = http($conn, $s, $keep);

        # A keep-alive connection nginx closed between two requests is
        # the usual keep-alive race (a browser retries): retry once, fresh.
        if ($r->{error} && $r->{reused} && $r->{error} =~ /before the header \(0 bytes\)|write/) {
            $count{'(keep-alive retries)'}{retry}++;
            $r = http($conn, $s, $keep);
        }
        my $took = time - $start;

        my $status = $r->{status} || 'none';
        $count{$s->{name}}{$status}++;
        $latency_max{$s->{name}} = $took
            if $took > ($latency_max{$s->{name}} // 0);

        if (my $why = check($s, $r)) {
            $count{$s->{name}}{unexpected}++;
            push @unexpected, { time => $start, scenario => $s->{name},
                                method => $s->{method},
                                path => substr($s->{path}, 0, 120),
                                status => $status, why => $why }
                if @unexpected < $MAX_UNEXPECTED_KEPT;
        }
    }
    drop($conn);

    open my $fh, '>', $out or die "$out: $!";
    print $fh JSON::PP->new->canonical->encode({
        count => \%count, unexpected => \@unexpected,
        latency_max => \%latency_max });
    close $fh;
}


# ---------------------------------------------------------------------------
# Worker sampling

sub master_pid {
    my $pid = $t->slurp($t->dir . '/nginx.pid');
    return $pid =~ /(\d+)/ ? $1 : undef;
}

sub workers {
    my $master = master_pid() or return ();
    my @w;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $line = <$fh> // next;
        my ($pid, $ppid) = $line =~ /^(\d+) \(.*\) \S+ (\d+)/ or next;
        push @w, $pid if $ppid == $master;
    }
    return sort { $a <=> $b } @w;
}

sub rss_kb {
    my ($pid) = @_;
    my $status = $t->slurp("/proc/$pid/status");
    return $status =~ /^VmRSS:\s+(\d+)/m ? $1 + 0 : undef;
}

sub fds {
    my ($pid) = @_;
    opendir my $d, "/proc/$pid/fd" or return undef;
    return scalar grep { /^\d+$/ } readdir $d;
}

# The worker's descriptors by kind: client connections, connections to the
# mocks (idle keepalive ones may stay), and everything else (listening
# socket, logs, eventfd, ...), which must not change.
sub fd_kinds {
    my ($pid) = @_;
    my %sock;
    for my $f ('/proc/net/tcp', '/proc/net/tcp6') {
        open my $fh, '<', $f or next;
        while (<$fh>) {
            my @f = split;
            next unless @f > 9 && $f[1] =~ /:([0-9A-F]{4})$/;
            my $lport = hex $1;
            my ($rport) = $f[2] =~ /:([0-9A-F]{4})$/;
            $sock{$f[9]} = [$lport, hex $rport, $f[3]];
        }
    }
    my %k = (client => 0, upstream => 0, other => 0);
    opendir my $d, "/proc/$pid/fd" or return undef;
    for my $fd (grep { /^\d+$/ } readdir $d) {
        my $link = readlink "/proc/$pid/fd/$fd" // next;
        my ($ino) = $link =~ /^socket:\[(\d+)\]$/;
        my $s = defined $ino ? $sock{$ino} : undef;
        if ($s && $s->[2] ne '0A' && $s->[0] == $t->port) {
            $k{client}++;
        } elsif ($s && ($s->[1] == $t->mock_port
                        || $s->[1] == $untrusted_port)) {
            $k{upstream}++;
        } else {
            $k{other}++;
        }
    }
    return \%k;
}

sub median {
    my @v = sort { $a <=> $b } @_;
    return undef unless @v;
    return @v % 2 ? $v[$#v / 2] : ($v[@v / 2 - 1] + $v[@v / 2]) / 2;
}


# ---------------------------------------------------------------------------
# The run

my @w0 = workers();
die "soak: expected one nginx worker, found " . scalar(@w0) . "\n"
    unless @w0 == 1;
my $worker = $w0[0];

# Before the clients: one good request through each API location, so the
# baseline descriptors include what nginx opens lazily; and one request for
# each image the mock generates on first use (5 and 6 MiB of noise: seconds
# of Perl on a loaded machine, which the first client to ask would see as
# a 504).  The logs are judged from after this point.
{
    my $conn = {};
    for my $s (grep { $_->{name} =~ /^(ka:)?good:jpeg-small$/ } @S) {
        my $r = http($conn, $s, 0);
        die "soak: warm-up request $s->{name} failed: "
            . (check($s, $r) // '') . "\n" if check($s, $r);
    }
    for my $s (grep { $_->{name} =~ /max-exact|huge|max-plus-one/ } @S) {
        for (1 .. 5) {
            last unless check($s, http($conn, $s, 0));
        }
    }
}
sleep 0.5;
my $fds0 = fd_kinds($worker);
my %log_from = map { $_ => -s $t->dir . "/logs/$_" }
               qw(access.log error.log);

my $stopping = 0;
local $SIG{INT} = local $SIG{TERM} = local $SIG{HUP} = sub { $stopping = 1 };

# a hard bound for the whole run, whatever happens
alarm int($DURATION + 300);
local $SIG{ALRM} = sub { die "soak: hard time limit reached\n" };

my $start = time;
my $until = $start + $DURATION;
my $results = $t->dir . '/soak';
mkdir $results;

say_(sprintf 'soak: %d s, %d clients, seed %d, worker %d, nginx %s',
             $DURATION, $O{clients}, $O{seed}, $worker, $t->{nginx});

my %kids;
for my $n (1 .. $O{clients}) {
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        $SIG{ALRM} = 'DEFAULT';
        eval { client($n, $until, "$results/client-$n.json"); 1 }
            or warn "soak: client $n: $@";
        POSIX::_exit(0);
    }
    $kids{$pid} = $n;
}

my @samples;
my $respawned = 0;
my $next = $start;

while (%kids) {
    if ($stopping) {
        kill 'TERM', keys %kids;
        $until = time if $until > time;
    }
    my $now = time;
    if ($now >= $next && $now <= $until + 1) {
        my @w = workers();
        $respawned = 1 if !grep { $_ == $worker } @w;
        my $rss = rss_kb($worker);
        push @samples, { t => sprintf('%.1f', $now - $start) + 0,
                         rss_kb => $rss, fds => fds($worker) }
            if defined $rss;
        say_(sprintf '  t=%5.0fs  worker RSS %6.1f MiB  fds %s',
                     $now - $start, ($rss // 0) / 1024,
                     $samples[-1]{fds} // '?') if defined $rss;
        $next += $O{sample};
    }
    while ((my $pid = waitpid(-1, WNOHANG)) > 0) { delete $kids{$pid} }
    if (time > $until + $O{'request-timeout'} + 15) {
        warn "soak: clients still running, killing them\n";
        kill 'KILL', keys %kids;
        waitpid($_, 0) for keys %kids;
        last;
    }
    sleep 0.1;
}
my $elapsed = time - $start;

# Descriptors back to the baseline once the load is gone (hang and slow
# connections end within the read timeout).
my ($fds_end, $fds_ok);
for (1 .. 100) {
    $fds_end = fd_kinds($worker) // last;
    $fds_ok = $fds_end->{client} == 0 && $fds_end->{upstream} <= 16
              && $fds_end->{other} == $fds0->{other};
    last if $fds_ok;
    sleep 0.1;
}

my $rss_end = rss_kb($worker);
@w0 = workers();
$respawned = 1 if !grep { $_ == $worker } @w0;


# ---------------------------------------------------------------------------
# Report

my (%count, @unexpected, %lat);
for my $n (1 .. $O{clients}) {
    my $text = $t->slurp("$results/client-$n.json");
    unless (length $text) {
        push @unexpected, { scenario => "(client $n)",
                            why => 'client produced no results' };
        next;
    }
    my $c = JSON::PP->new->decode($text);
    for my $s (keys %{ $c->{count} }) {
        $count{$s}{$_} += $c->{count}{$s}{$_} for keys %{ $c->{count}{$s} };
    }
    push @unexpected, @{ $c->{unexpected} };
    for (keys %{ $c->{latency_max} }) {
        $lat{$_} = $c->{latency_max}{$_}
            if $c->{latency_max}{$_} > ($lat{$_} // 0);
    }
}

my %by_name = map { $_->{name} => $_ } @S;
my ($requests, $unexpected_n) = (0, 0);
my %expect_reason;      # "status reason" => count the access log must have

for my $name (keys %count) {
    next unless $by_name{$name};
    my $s = $by_name{$name};
    for my $st (keys %{ $count{$name} }) {
        next if $st eq 'unexpected';
        $requests += $count{$name}{$st};
    }
    $unexpected_n += $count{$name}{unexpected} // 0;
    my $ok = $count{$name}{$s->{status}} // 0;
    $expect_reason{"$s->{status} $s->{reason}"} += $ok;
}
$unexpected_n += grep { $_->{scenario} =~ /^\(client/ } @unexpected;

# the access log's "status reason" against the clients' view
$t->stop;
$u->stop;

my %logged;
{
    open my $fh, '<', $t->dir . '/logs/access.log' or die $!;
    seek $fh, $log_from{'access.log'}, 0;
    while (<$fh>) {
        my ($st, $re, undef, $req) = /^(\d+) (\S+) (\S+) "(.*)"$/ or next;
        $logged{"$st $re"}++;
    }
}

my @reason_mismatch;
for my $k (sort keys %{{ %expect_reason, %logged }}) {
    my ($e, $l) = ($expect_reason{$k} // 0, $logged{$k} // 0);
    # a request whose answer was wrong is in the log but not expected
    push @reason_mismatch, "$k: clients $e, access log $l"
        if $e != $l && !($l > $e && $unexpected_n);
}

# error log: every failure logged exactly once, nothing alarming
my (%err_reason, @bad_lines);
for my $file ('error.log', 'nginx.out') {
    open my $fh, '<', $t->dir . "/logs/$file" or next;
    my $from = $file eq 'error.log' ? $log_from{'error.log'} : 0;
    seek $fh, $from, 0;
    while (<$fh>) {
        $err_reason{$1}++ if /unico selfie: .*\(reason: (\w+)/;
        push @bad_lines, $_
            if (/\[(alert|emerg|crit)\]/
                || /AddressSanitizer|LeakSanitizer|runtime error:/
                || /exited on signal/) && @bad_lines < 20;
    }
}
my %expect_err;
for (keys %expect_reason) {
    my ($st, $re) = split / /;
    $expect_err{$re} += $expect_reason{$_} unless $re eq 'ok';
}
for my $re (sort keys %{{ %expect_err, %err_reason }}) {
    my ($e, $l) = ($expect_err{$re} // 0, $err_reason{$re} // 0);
    push @reason_mismatch, "error log reason $re: expected $e, logged $l"
        if $e != $l && !($l > $e && $unexpected_n);
}

# RSS growth
my @warm = map { $_->{rss_kb} } grep { $_->{t} <= $O{warmup} } @samples;
my @last = map { $_->{rss_kb} }
           grep { $_->{t} >= 0.75 * $elapsed } @samples;
my $stat = $O{'rss-stat'} eq 'min'
         ? sub { (sort { $a <=> $b } @_)[0] } : \&median;
my $warm_med = $stat->(@warm);
my $last_med = $stat->(@last);
my $limit = defined $warm_med ? $warm_med * 1.05 + 2048 : undef;
my $growth_ok = defined $warm_med && defined $last_med
                && $last_med <= $limit;

my $sanitized = $ENV{TEST_NGINX_SANITIZED}
    || index($t->slurp($t->{nginx}), '__asan_init') >= 0;

my $pass = !$unexpected_n && !@reason_mismatch && !@bad_lines
           && !$respawned && $fds_ok
           && ($growth_ok || $sanitized || !$O{rss});

my %report = (
    duration_s     => sprintf('%.1f', $elapsed) + 0,
    clients        => $O{clients},
    seed           => $O{seed},
    nginx          => $t->{nginx},
    module         => $t->{module_source},
    module_sha256  => Digest::SHA->new(256)->addfile($t->{module})->hexdigest,
    sanitized      => $sanitized ? 1 : 0,
    glibc_tunables => $O{tunables} ? 1 : 0,
    requests       => $requests,
    unexpected     => $unexpected_n,
    unexpected_samples => \@unexpected,
    reason_mismatch => \@reason_mismatch,
    counts         => \%count,
    expected       => { map { $_->{name} => "$_->{status} $_->{reason}" } @S },
    error_log_reasons => \%err_reason,
    latency_max_s  => \%lat,
    bad_log_lines  => \@bad_lines,
    worker_respawned => $respawned ? 1 : 0,
    rss_samples    => \@samples,
    rss_warmup_s   => $O{warmup},
    rss_stat       => $O{'rss-stat'},
    rss_warmup_median_kb => $warm_med,
    rss_last_quarter_median_kb => $last_med,
    rss_limit_kb   => $limit,
    rss_end_kb     => $rss_end,
    rss_growth_ok  => $growth_ok ? 1 : 0,
    fds_start      => $fds0,
    fds_end        => $fds_end,
    fds_ok         => $fds_ok ? 1 : 0,
    excluded       => \@EXCLUDED,
    pass           => $pass ? 1 : 0,
    interrupted    => $stopping ? 1 : 0,
);

if ($O{json}) {
    open my $fh, '>', $O{json} or die "$O{json}: $!";
    print $fh $JSON->encode(\%report);
    close $fh;
}

unless ($O{quiet}) {
    printf "\nsoak: %d requests in %.0f s (%.0f/s), %d clients, seed %d\n",
           $requests, $elapsed, $requests / ($elapsed || 1), $O{clients},
           $O{seed};
    printf "%-36s %-22s %8s  %s\n", 'scenario', 'expected', 'count',
           'statuses (max latency)';
    for my $s (sort { $a->{name} cmp $b->{name} } @S) {
        my $c = $count{$s->{name}} || {};
        my $n = 0;
        $n += $c->{$_} for grep { $_ ne 'unexpected' } keys %$c;
        printf "%-36s %-22s %8d  %s (%.2fs)\n", $s->{name},
               "$s->{status} $s->{reason}", $n,
               join(' ', map { "$_:$c->{$_}" } sort keys %$c),
               $lat{$s->{name}} // 0;
    }
    printf "keep-alive retries: %d\n",
           $count{'(keep-alive retries)'}{retry} // 0;
    print "\nunexpected answers: $unexpected_n\n";
    printf "  %s %s %s: %s\n", $_->{scenario}, $_->{method} // '',
           $_->{status} // '', $_->{why} for @unexpected[0 .. ($#unexpected < 19 ? $#unexpected : 19)];
    print "reason counts (access/error log vs clients): ",
          (@reason_mismatch ? "MISMATCH\n" . join('', map { "  $_\n" } @reason_mismatch)
                            : "consistent\n");
    print "crash/alert/sanitizer lines: ", scalar(@bad_lines), "\n";
    print "  $_" for @bad_lines;
    print "worker respawned: ", ($respawned ? 'YES' : 'no'), "\n";
    printf "worker descriptors before the load: %s; after: %s%s\n",
           join(' ', map { "$_=$fds0->{$_}" } sort keys %$fds0),
           $fds_end ? join(' ', map { "$_=$fds_end->{$_}" } sort keys %$fds_end)
                    : '?',
           $fds_ok ? ' (no leak: no client connection left, idle keepalive '
                     . 'to Unico <= 16)'
                   : ' (LEAK)';
    print "excluded scenarios: @EXCLUDED\n" if @EXCLUDED;
    print "\nworker RSS (MiB) every $O{sample} s:\n";
    my @line;
    for (@samples) {
        push @line, sprintf '%4.0fs %6.1f', $_->{t}, $_->{rss_kb} / 1024;
        if (@line == 6) { print '  ', join('  ', @line), "\n"; @line = () }
    }
    print '  ', join('  ', @line), "\n" if @line;
    printf "warm-up (first %.0f s) %s %.1f MiB; last-quarter %s "
           . "%.1f MiB; limit (x1.05 + 2 MiB) %.1f MiB: %s\n",
           $O{warmup}, $O{'rss-stat'}, ($warm_med // 0) / 1024,
           $O{'rss-stat'}, ($last_med // 0) / 1024,
           ($limit // 0) / 1024,
           $growth_ok ? 'no growth'
           : $sanitized ? 'GROWTH (ignored: sanitizer build, ASan '
                          . 'quarantine holds freed memory)'
           : !@last ? 'not judged (no sample in the last quarter: '
                      . 'interrupted?)'
           : !$O{rss} ? 'GROWTH (not judged: --no-rss)'
           : 'GROWTH';
    print "\nsoak: ", ($pass ? 'PASS' : 'FAIL'),
          ($stopping ? ' (interrupted)' : ''), "\n";
}

exit($pass ? 0 : 1);
