#!/usr/bin/perl
#
# The mock Unico server (t/mock/unico.pl) against its contract
# (/work/shared/unico/API-FACTS.md, t/mock/README.md): the rest of the suite
# trusts it, so it is tested on its own first.  Talks to it with
# IO::Socket::SSL and a tiny HTTP/1.1 client, so framing is under control.

use strict;
use warnings;

use Test::More;

use Crypt::OpenSSL::RSA ();
use Digest::SHA qw(sha256_hex);
use Errno ();
use File::Basename qw(dirname);
use File::Spec ();
use File::Temp qw(tempdir);
use IO::Socket::SSL ();
use IO::Uncompress::Gunzip qw(gunzip $GunzipError);
use JSON::PP ();
use MIME::Base64 qw(decode_base64 encode_base64url);
use POSIX ();
use Time::HiRes qw(time sleep);

my $ROOT = File::Spec->rel2abs(dirname(__FILE__) . '/..');
my $MOCK = "$ROOT/t/mock/unico.pl";
my $FIXTURES = "$ROOT/t/fixtures";
my $JSON = JSON::PP->new->utf8->canonical;
my $TMP = tempdir('unico-mock-t.XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $CERTS = "$TMP/certs";

my $ISSUER = 'tester@1234abcd.iam.acesso.io';
my $AUDIENCE = 'https://identityhomolog.acesso.io';
my $STATIC_TOKEN = 'static-test-token-0123456789';
my $GRANT = 'urn:ietf:params:oauth:grant-type:jwt-bearer';

# Scenario ids, from the table the mock reads.
my %ID = map { $_->{name} => $_->{id} }
         @{ $JSON->decode(slurp("$ROOT/t/mock/processes.json")) };

my %SERVERS;        # pid => 1, killed in END


# ---------------------------------------------------------------------------
# Helpers


sub slurp {
    my ($file) = @_;
    open my $fh, '<:raw', $file or die "$file: $!";
    local $/;
    return scalar <$fh>;
}


sub fixture_sha {
    return sha256_hex(slurp("$FIXTURES/$_[0]"));
}


# Starts a mock with the usual options plus @extra; returns its pid, port,
# log and state directory.
sub start_mock {
    my ($name, @extra) = @_;
    my $dir = "$TMP/$name";
    mkdir $dir or die "$dir: $!";
    my %m = (pidfile => "$dir/pid", portfile => "$dir/port",
             log => "$dir/requests.log", state => "$dir/state");
    mkdir $m{state};

    my @cmd = ($^X, $MOCK, '--listen', '127.0.0.1:0',
        '--cert', "$CERTS/server.pem", '--key', "$CERTS/server.key",
        '--fixtures', $FIXTURES, '--token', $STATIC_TOKEN,
        '--log', $m{log}, '--state', $m{state},
        '--pidfile', $m{pidfile}, '--portfile', $m{portfile},
        '--public-key', "$CERTS/sa.pub.pem",
        '--issuer', $ISSUER, '--audience', $AUDIENCE, @extra);

    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        exec @cmd or POSIX::_exit(127);
    }
    $SERVERS{$pid} = 1;

    # Ready when the pidfile exists (it is written once listening).
    my $deadline = time + 15;
    sleep 0.05 until -s $m{pidfile} || time > $deadline
                     || waitpid($pid, POSIX::WNOHANG()) == $pid;
    die "mock $name did not start" unless -s $m{pidfile};
    chomp($m{port} = slurp($m{portfile}));
    $m{pid} = $pid;
    return \%m;
}


sub stop_mock {
    my ($m) = @_;
    kill 'TERM', $m->{pid};
    my $deadline = time + 10;
    my $reaped;
    until ($reaped || time > $deadline) {
        $reaped = waitpid($m->{pid}, POSIX::WNOHANG()) == $m->{pid};
        sleep 0.02 unless $reaped;
    }
    delete $SERVERS{$m->{pid}} if $reaped;
    return $reaped ? $? : undef;
}


END {
    for my $pid (keys %SERVERS) {
        kill 'TERM', $pid;
        waitpid $pid, 0;
    }
}


# Running (a zombie nobody reaps does not count: PID 1 in a container may
# not reap orphans).
sub alive {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return 0;
    my ($state) = <$fh> =~ /\)\s+(\S)/;
    return ($state // 'Z') ne 'Z';
}


# A connection: {sock, buf}.
sub mock_connect {
    my ($m, %o) = @_;
    my $sock = IO::Socket::SSL->new(
        PeerHost            => '127.0.0.1',
        PeerPort            => $m->{port},
        SSL_ca_file         => $o{ca} // "$CERTS/ca.pem",
        SSL_hostname        => 'localhost',
        SSL_verifycn_name   => 'localhost',
        SSL_verifycn_scheme => 'http',
        Timeout             => 10,
    ) or return undef;
    return { sock => $sock, buf => '' };
}


sub send_request {
    my ($conn, $method, $path, %o) = @_;
    my $body = $o{body} // '';
    my @h = (['Host', 'localhost'], @{ $o{headers} || [] });
    push @h, ['Content-Length', length $body] if length $body;
    my $req = "$method $path HTTP/1.1\r\n"
            . join('', map { "$_->[0]: $_->[1]\r\n" } @h) . "\r\n" . $body;
    my $sock = $conn->{sock};
    return print {$sock} $req;
}


# Reads more into $conn->{buf}: bytes read, 0 on EOF, undef on error.
sub fill {
    my ($conn) = @_;
    my $n = sysread($conn->{sock}, my $chunk, 65536);
    $conn->{error} = $! unless defined $n;
    $conn->{buf} .= $chunk if $n;
    return $n;
}


# One response: {status, headers (lowercase names), body, complete}; status
# 0 when the connection ended (or failed) before a status line.
sub read_response {
    my ($conn, $method) = @_;
    my $res = { status => 0, headers => {}, body => '', complete => 0 };
    local $SIG{ALRM} = sub { die "timeout\n" };
    alarm 30;
    eval {
        1 while $conn->{buf} !~ /\r\n\r\n/ && fill($conn);
        return unless $conn->{buf} =~ /\r\n\r\n/;
        my $head = substr($conn->{buf}, 0, $+[0], '');
        my ($line, @lines) = split /\r\n/, $head;
        my ($status) = $line =~ m{\AHTTP/1\.[01] (\d{3}) } or return;
        $res->{status} = $status;
        for (@lines) {
            my ($k, $v) = /\A([^:]+):\s*(.*)\z/ or next;
            $res->{headers}{lc $k} = $v;
        }
        read_body($conn, $res, $method // 'GET');
        1;
    } or $res->{timeout} = ($@ eq "timeout\n");
    alarm 0;
    return $res;
}


sub read_body {
    my ($conn, $res, $method) = @_;
    my $h = $res->{headers};
    if ($method eq 'HEAD' || $res->{status} == 304) {
        $res->{complete} = 1;
    } elsif (($h->{'transfer-encoding'} // '') =~ /chunked/i) {
        while (1) {
            1 while $conn->{buf} !~ /\A([0-9a-f]+)[^\r\n]*\r\n/i && fill($conn);
            my ($size) = $conn->{buf} =~ /\A([0-9a-f]+)[^\r\n]*\r\n/i or return;
            my $skip = $+[0];
            $size = hex $size;
            1 while length $conn->{buf} < $skip + $size + 2 && fill($conn);
            return if length $conn->{buf} < $skip + $size + 2;
            $res->{body} .= substr($conn->{buf}, $skip, $size);
            substr($conn->{buf}, 0, $skip + $size + 2, '');
            last unless $size;
        }
        $res->{complete} = 1;
    } elsif (defined $h->{'content-length'}) {
        my $len = $h->{'content-length'};
        1 while length $conn->{buf} < $len && fill($conn);
        $res->{body} = substr($conn->{buf}, 0, $len, '');
        $res->{complete} = length $res->{body} == $len;
    } else {
        1 while fill($conn);
        $res->{body} = $conn->{buf};
        $conn->{buf} = '';
        $res->{complete} = 1;
    }
}


# One request on its own connection.
sub http {
    my ($m, $method, $path, %o) = @_;
    my $conn = mock_connect($m) or return { status => 0, headers => {},
                                            body => '', connect_failed => 1 };
    send_request($conn, $method, $path, %o,
                 headers => [@{ $o{headers} || [] }, ['Connection', 'close']]);
    my $res = read_response($conn, $method);
    $res->{sock_error} = $conn->{error};
    close $conn->{sock};
    return $res;
}


sub selfie_path {
    return "/client/v1/process/$_[0]/selfie";
}


# GET the selfie of $id with the static token, or with $token when given
# (even undef: then "Bearer " alone).
sub get_selfie {
    my ($m, $id, @rest) = @_;
    my $token = @rest ? shift @rest : $STATIC_TOKEN;
    return http($m, 'GET', selfie_path($id),
                headers => [['Authorization', 'Bearer ' . ($token // '')],
                            @rest]);
}


# The image inside a Get Selfie body, and its contentType.  JSON::PP needs
# about half a microsecond per byte, so the plain shape {"fileContents":
# "<base64>","contentType":"<type>"} is taken apart with a regex instead.
sub decode_selfie {
    my ($body) = @_;
    if ($body =~ m{\A\{"fileContents":"([A-Za-z0-9+/=]*)","contentType":"([a-z/+]*)"\}\z}) {
        return (decode_base64($1), $2);
    }
    my $doc = eval { $JSON->decode($body) } or return;
    return (decode_base64($doc->{fileContents}), $doc->{contentType});
}


sub sign_jwt {
    my ($keyfile, $claims, $header) = @_;
    my $rsa = Crypt::OpenSSL::RSA->new_private_key(slurp($keyfile));
    $rsa->use_sha256_hash;
    $rsa->use_pkcs1_padding;
    my $input = encode_base64url($JSON->encode($header // { alg => 'RS256', typ => 'JWT' }))
              . '.' . encode_base64url($JSON->encode($claims));
    return "$input." . encode_base64url($rsa->sign($input));
}


sub now {
    return int time;
}


sub claims {
    my (%over) = @_;
    my $iat = exists $over{iat} ? $over{iat} : now();
    my %c = (iss => $ISSUER, aud => $AUDIENCE, scope => '*',
             iat => $iat, exp => ($iat =~ /\A\d+\z/ ? $iat : now()) + 3600,
             %over);
    delete @c{ grep { !defined $c{$_} } keys %c };
    return \%c;
}


sub token_request {
    my ($m, $assertion, %o) = @_;
    my $body = $o{body} // "grant_type=" . uri_escape($GRANT)
                          . "&assertion=" . uri_escape($assertion);
    return http($m, 'POST', '/oauth2/token', body => $body,
        headers => [['Content-Type', $o{content_type}
                                     // 'application/x-www-form-urlencoded']]);
}


sub uri_escape {
    my ($s) = @_;
    $s =~ s/([^A-Za-z0-9._~-])/sprintf '%%%02X', ord $1/ge;
    return $s;
}


# The Unico error code (1.2.N) of a token endpoint answer, or ''.
sub token_error_code {
    my ($res) = @_;
    my $doc = eval { $JSON->decode($res->{body}) } || {};
    my ($code) = ($doc->{error_description} // '') =~ /(1\.2\.\d+)\z/;
    return $code // '';
}


sub control {
    my ($m, $change) = @_;
    my $res = http($m, 'POST', '/__mock/control', body => $JSON->encode($change),
                   headers => [['Content-Type', 'application/json']]);
    return $res->{status} == 200 ? $JSON->decode($res->{body}) : undef;
}


sub log_entries {
    my ($m) = @_;
    return map { $JSON->decode($_) } split /\n/, slurp($m->{log});
}


# ---------------------------------------------------------------------------
# Certificates


my $gen = "$ROOT/t/mock/gen-certs.sh";
my $out = `sh $gen $CERTS 2>&1`;
is $?, 0, 'gen-certs.sh succeeds';
is $out, '', '... quietly';
my @files = qw(ca.pem ca.key server.pem server.key other-ca.pem other-ca.key
               untrusted.pem untrusted.key sa.key sa.pub.pem);
ok !(grep { !-s "$CERTS/$_" } @files), '... creating every file';
my $before = sha256_hex(join '', map { slurp("$CERTS/$_") } @files);
$out = `sh $gen $CERTS 2>&1`;
ok $? == 0 && $out eq ''
   && sha256_hex(join '', map { slurp("$CERTS/$_") } @files) eq $before,
   'a second run is quiet and changes nothing';
is system("openssl verify -CAfile $CERTS/ca.pem $CERTS/untrusted.pem "
          . ">/dev/null 2>&1") >> 8, 2, 'untrusted.pem does not verify with ca.pem';
like `openssl x509 -noout -ext subjectAltName -in $CERTS/server.pem`,
     qr/DNS:localhost.*IP Address:127\.0\.0\.1/s, 'server.pem names localhost and 127.0.0.1';
isnt system("sh $gen >/dev/null 2>&1"), 0, 'no OUTDIR: fails';


# ---------------------------------------------------------------------------
# Start


my $m = start_mock('main');
ok alive($m->{pid}), "mock runs (pid $m->{pid}, port $m->{port})";
is slurp($m->{pidfile}), "$m->{pid}\n", 'pidfile holds its pid';

my $health = http($m, 'GET', '/__mock/health');
is $health->{status}, 200, 'health check';


# ---------------------------------------------------------------------------
# Get Selfie: happy paths


for (['jpeg-small', 'selfie-360x480.jpg', 'image/jpeg'],
     ['jpeg-medium', 'selfie-720x960.jpg', 'image/jpeg'],
     ['jpeg-large', 'selfie-1080x1440.jpg', 'image/jpeg'],
     ['png', 'selfie-480x640.png', 'image/png'],
     ['reordered', 'selfie-480x640.png', 'image/png'],
     ['extra-fields', 'selfie-360x480.jpg', 'image/jpeg'],
     ['pretty-json', 'selfie-360x480.jpg', 'image/jpeg'],
    ) {
    my ($name, $file, $type) = @$_;
    my $res = get_selfie($m, $ID{$name});
    is $res->{status}, 200, "$name: 200";
    is $res->{headers}{'content-type'}, 'application/json', "$name: JSON";
    my ($image, $ctype) = decode_selfie($res->{body});
    is sha256_hex($image // ''), fixture_sha($file), "$name: the fixture's bytes";
    is $ctype, $type, "$name: contentType $type";
}

my $res = get_selfie($m, $ID{'jpeg-small'});
is sha256_hex(decode_base64($JSON->decode($res->{body})->{fileContents})),
   fixture_sha('selfie-360x480.jpg'), 'jpeg-small through a real JSON parser';
like $res->{headers}{'x-request-id'} // '', qr/\A[0-9a-f-]{36}\z/, 'X-Request-Id';
like $res->{headers}{'set-cookie'} // '', qr/unico_session=secret/, 'Set-Cookie';

$res = http($m, 'HEAD', selfie_path($ID{'jpeg-small'}),
            headers => [['Authorization', "Bearer $STATIC_TOKEN"]]);
ok $res->{status} == 200 && $res->{body} eq ''
   && $res->{headers}{'content-length'} > 20000, 'HEAD: headers only';

$res = get_selfie($m, uc $ID{'jpeg-small'});
is $res->{status}, 200, 'processId is case-insensitive';


# ---------------------------------------------------------------------------
# Get Selfie: errors


$res = http($m, 'GET', selfie_path($ID{'jpeg-small'}));
is $res->{status}, 401, 'no token: 401';
is $res->{body}, 'Unauthorized', '... with a plain-string body';
$res = get_selfie($m, $ID{'jpeg-small'}, 'not-a-token');
is $res->{status}, 401, 'unknown token: 401';
$res = http($m, 'GET', selfie_path('not-a-uuid'));
is $res->{status}, 401, 'the token is checked first';

$res = get_selfie($m, 'not-a-uuid');
is $res->{status}, 400, 'malformed processId: 400';
is_deeply $JSON->decode($res->{body}),
          { code => 3, message => 'process id is invalid', details => undef },
          '... code 3';
$res = get_selfie($m, '53060f52f1464c12a2345bb5031f6f5b');
is $res->{status}, 400, 'UUID without dashes: 400';

$res = get_selfie($m, '11111111-2222-4333-8444-555555555555');
is $res->{status}, 404, 'unknown processId: 404';
is_deeply $JSON->decode($res->{body}),
          { code => 5, message => 'process not found', details => undef },
          '... code 5';

for my $status (400, 401, 403, 404, 418, 500, 502, 503) {
    $res = get_selfie($m, $ID{"status-$status"});
    is $res->{status}, $status, "status-$status";
    my $doc = eval { $JSON->decode($res->{body}) } || {};
    ok exists $doc->{code} && exists $doc->{message}, '... Unico-like JSON body';
}
is $JSON->decode(get_selfie($m, $ID{'status-500'})->{body})->{code}, 99999,
   '500: code 99999';

$res = get_selfie($m, $ID{'status-429'});
is $res->{status}, 429, 'status-429';
is $res->{headers}{'retry-after'}, '7', '... Retry-After: 7';

$res = get_selfie($m, $ID{'status-302'});
ok $res->{status} == 302 && $res->{headers}{location}, 'status-302 with Location';

$res = http($m, 'POST', selfie_path($ID{'jpeg-small'}), body => 'x',
            headers => [['Authorization', "Bearer $STATIC_TOKEN"]]);
is $res->{status}, 405, 'POST on the selfie: 405';


# ---------------------------------------------------------------------------
# Get Selfie: payload variants


my $medium = fixture_sha('selfie-720x960.jpg');
for my $name (qw(escaped-slashes wrapped-newlines wrapped-crlf unicode-escapes
                 no-padding chunked)) {
    $res = get_selfie($m, $ID{$name});
    my ($image) = decode_selfie($res->{body});
    is sha256_hex($image // ''), $medium, "$name: decodes to the fixture";
}
like get_selfie($m, $ID{'escaped-slashes'})->{body}, qr{\\/},
     'escaped-slashes has \/';
like get_selfie($m, $ID{'unicode-escapes'})->{body}, qr{\\u002F},
     'unicode-escapes has \u002F';
like get_selfie($m, $ID{'wrapped-newlines'})->{body}, qr{\A[^\\]{90}.*\\n}s,
     'wrapped-newlines has \n escapes';
is get_selfie($m, $ID{chunked})->{headers}{'transfer-encoding'}, 'chunked',
   'chunked is chunked';

$res = get_selfie($m, $ID{gzip});
is $res->{headers}{'content-encoding'}, 'gzip', 'gzip: Content-Encoding';
gunzip(\$res->{body} => \my $plain) or diag $GunzipError;
is sha256_hex((decode_selfie($plain))[0] // ''),
   fixture_sha('selfie-360x480.jpg'), '... gunzips to the fixture';

for (['fileContents-number', qr/"fileContents":12345/],
     ['fileContents-null', qr/"fileContents":null/],
     ['missing-contentType', qr/\A\{"fileContents":"[^"]+"\}\z/],
     ['top-level-array', qr/\A\[\{/],
     ['duplicate-field', qr/("fileContents".*){2}/s],
     ['bad-base64', qr/"fileContents":"[^"]*\*[^"]*%[^"]*"/],
     ['content-type-svg', qr{"contentType":"image/svg\+xml"}],
     ['png-labelled-jpeg', qr{"fileContents":"iVBORw0KGgo.*"contentType":"image/jpeg"}s],
    ) {
    my ($name, $re) = @$_;
    $res = get_selfie($m, $ID{$name});
    ok $res->{status} == 200 && $res->{body} =~ $re, "$name: 200 with its body";
}

$res = get_selfie($m, $ID{'not-json'});
like $res->{headers}{'content-type'}, qr{\Atext/html}, 'not-json: text/html';
$res = get_selfie($m, $ID{'truncated-json'});
ok $res->{complete} && !eval { $JSON->decode($res->{body}) },
   'truncated-json: complete HTTP, broken JSON';
$res = get_selfie($m, $ID{'empty-body'});
ok $res->{status} == 200 && $res->{headers}{'content-length'} eq '0',
   'empty-body: Content-Length: 0';

$res = get_selfie($m, $ID{huge});
my ($huge) = decode_selfie($res->{body});
ok length($huge // '') == 6 * 1024 * 1024 && substr($huge, 0, 4) eq "\xFF\xD8\xFF\xE0",
   'huge: 6 MiB with a JPEG signature';
is sha256_hex((decode_selfie(get_selfie($m, $ID{huge})->{body}))[0] // ''),
   sha256_hex($huge // ''), '... the same bytes every time';


# ---------------------------------------------------------------------------
# Get Selfie: broken connections


$res = get_selfie($m, $ID{reset});
ok $res->{status} == 0 && ($res->{sock_error} // 0) == Errno::ECONNRESET,
   'reset: no answer, connection reset';
$res = get_selfie($m, $ID{'reset-mid-body'});
ok $res->{status} == 200 && !$res->{complete}
   && ($res->{sock_error} // 0) == Errno::ECONNRESET,
   'reset-mid-body: 200, part of the body, then reset';
$res = get_selfie($m, $ID{truncated});
ok $res->{status} == 200 && !$res->{complete} && !$res->{sock_error}
   && length $res->{body} > 0, 'truncated: part of the body, then a clean close';
$res = get_selfie($m, $ID{'chunked-truncated'});
ok $res->{status} == 200 && !$res->{complete}, 'chunked-truncated: no last chunk';
$res = get_selfie($m, $ID{'close-no-answer'});
ok $res->{status} == 0 && !$res->{sock_error}, 'close-no-answer: EOF, nothing';
$res = get_selfie($m, $ID{garbage});
ok $res->{status} == 0 && !$res->{timeout}, 'garbage: no HTTP status line';

$res = get_selfie($m, $ID{'401-once'});
is $res->{status}, 401, '401-once: first request 401';
$res = get_selfie($m, $ID{'401-once'});
is $res->{status}, 200, '... then 200';


# ---------------------------------------------------------------------------
# Connections: keep-alive, Connection: close, concurrency


my $conn = mock_connect($m);
my @statuses;
for (1 .. 3) {
    send_request($conn, 'GET', selfie_path($ID{'jpeg-small'}),
                 headers => [['Authorization', "Bearer $STATIC_TOKEN"]]);
    push @statuses, read_response($conn)->{status};
}
is "@statuses", '200 200 200', 'three requests on one keep-alive connection';
send_request($conn, 'GET', selfie_path($ID{'jpeg-small'}),
             headers => [['Authorization', "Bearer $STATIC_TOKEN"],
                         ['Connection', 'close']]);
$res = read_response($conn);
is $res->{headers}{connection}, 'close', 'Connection: close is answered in kind';
ok !fill($conn), '... and the connection is closed';
close $conn->{sock};

my @seq = map { $_->{seq} } grep { $_->{kind} eq 'selfie' } log_entries($m);
is "@seq[-4 .. -1]", '1 2 3 4', 'the log numbers requests per connection';

# A hanging answer must not delay others.
my $hang = mock_connect($m);
send_request($hang, 'GET', selfie_path($ID{hang}),
             headers => [['Authorization', "Bearer $STATIC_TOKEN"]]);
my $t0 = time;
$res = get_selfie($m, $ID{'jpeg-small'});
ok $res->{status} == 200 && time - $t0 < 2, 'a hanging answer does not delay others';

# 100 concurrent selfie requests, each in its own process.
my $want = fixture_sha('selfie-720x960.jpg');
my %kids;
for my $i (1 .. 100) {
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        my $r = get_selfie($m, $ID{'jpeg-medium'});
        my ($img) = decode_selfie($r->{body});
        POSIX::_exit($r->{status} == 200 && sha256_hex($img // '') eq $want ? 0 : 1);
    }
    $kids{$pid} = 1;
}
my $failed = 0;
while (%kids) {
    my $pid = waitpid(-1, 0);
    last if $pid <= 0;
    $failed++ if delete $kids{$pid} and $?;
}
is $failed, 0, '100 concurrent selfie requests all succeed';


# ---------------------------------------------------------------------------
# Token endpoint


my $jwt = sign_jwt("$CERTS/sa.key", claims());
$res = token_request($m, $jwt);
is $res->{status}, 200, 'a valid JWT gets a token';
my $tok = eval { $JSON->decode($res->{body}) } || {};
ok length($tok->{access_token} // '') >= 40, '... 40+ characters';
is $tok->{token_type}, 'Bearer', '... Bearer';
like $res->{body}, qr/"expires_in":3600[,}]/, '... expires_in a number, 3600';

$res = get_selfie($m, $ID{'jpeg-small'}, $tok->{access_token});
is $res->{status}, 200, 'the minted token works on the selfie API';

$res = token_request($m, $jwt);
is $res->{status}, 400, 'a replayed JWT: 400';
is token_error_code($res), '1.2.7', '... 1.2.7';
like $res->{body}, qr/"error":"server_error"/, '... server_error';
like $res->{body}, qr/Falha na autentica\x{c3}\x{a7}\x{c3}\x{a3}o/,
     '... the Portuguese description, UTF-8';

for (['extra claim jti', '1.2.22', sign_jwt("$CERTS/sa.key", claims(iat => now() - 1, jti => 'x'))],
     ['extra claim sub', '1.2.22', sign_jwt("$CERTS/sa.key", claims(iat => now() - 1, sub => 'x'))],
     ['missing scope', '1.2.22', sign_jwt("$CERTS/sa.key", claims(iat => now() - 1, scope => undef))],
     ['wrong key', '1.2.21', sign_jwt("$CERTS/sa-other.key", claims())],
     ['expired', '1.2.4', sign_jwt("$CERTS/sa.key", claims(iat => now() - 4000, exp => now() - 400))],
     ['lifetime over 3600 s', '1.2.96', sign_jwt("$CERTS/sa.key", claims(exp => now() + 3700))],
     ['iat 5 minutes ahead', '1.2.96', sign_jwt("$CERTS/sa.key", claims(iat => now() + 300, exp => now() + 600))],
     ['iat as a string', '1.2.96', sign_jwt("$CERTS/sa.key", claims(iat => '' . now()))],
     ['wrong issuer', '1.2.93', sign_jwt("$CERTS/sa.key", claims(iss => 'x@y.iam.acesso.io'))],
     ['production audience', '1.2.94', sign_jwt("$CERTS/sa.key", claims(aud => 'https://identity.acesso.io'))],
     ['audience with a trailing slash', '1.2.94', sign_jwt("$CERTS/sa.key", claims(aud => "$AUDIENCE/"))],
     ['scope other than *', '1.2.95', sign_jwt("$CERTS/sa.key", claims(scope => 'selfie'))],
     ['alg HS256', '1.2.92', sign_jwt("$CERTS/sa.key", claims(), { alg => 'HS256', typ => 'JWT' })],
     ['extra header kid', '1.2.92', sign_jwt("$CERTS/sa.key", claims(), { alg => 'RS256', typ => 'JWT', kid => '1' })],
     ['not a JWT', '1.2.91', 'abc.def'],
    ) {
    my ($what, $code, $assertion) = @$_;
    $res = token_request($m, $assertion);
    ok $res->{status} == 400 && token_error_code($res) eq $code, "$what: $code";
}

$res = token_request($m, sign_jwt("$CERTS/sa.key", claims(iat => now() - 200)),
                     content_type => 'application/json');
is token_error_code($res), '1.2.90', 'not a form: 1.2.90';
$res = token_request($m, undef, body => 'grant_type=client_credentials&assertion=x');
is token_error_code($res), '1.2.90', 'another grant_type: 1.2.90';


# ---------------------------------------------------------------------------
# Control endpoint


my $settings = control($m, { token_mode => 'error-1.2.18' });
is $settings->{token_mode}, 'error-1.2.18', 'control: token_mode set';
$res = token_request($m, sign_jwt("$CERTS/sa.key", claims(iat => now() - 300)));
is token_error_code($res), '1.2.18', '... the token endpoint answers 1.2.18';

control($m, { token_mode => 'error-500' });
is token_request($m, sign_jwt("$CERTS/sa.key", claims(iat => now() - 400)))->{status}, 500,
   'token_mode error-500: 500';
control($m, { token_mode => 'bad-json' });
$res = token_request($m, sign_jwt("$CERTS/sa.key", claims(iat => now() - 500)));
ok $res->{status} == 200 && !eval { $JSON->decode($res->{body}) }, 'token_mode bad-json';
control($m, { token_mode => 'down' });
$res = token_request($m, sign_jwt("$CERTS/sa.key", claims(iat => now() - 600)));
is $res->{status}, 0, 'token_mode down: no answer';

$settings = control($m, { token_mode => 'ok', expires_in_string => JSON::PP::true,
                          token_ttl => 120 });
is_deeply [@$settings{qw(token_mode token_ttl)}], ['ok', 120], 'control: back to ok, ttl 120';
$res = token_request($m, sign_jwt("$CERTS/sa.key", claims(iat => now() - 700)));
like $res->{body}, qr/"expires_in":"120"/, 'expires_in_string: "120"';
my $tok2 = $JSON->decode($res->{body})->{access_token};
is get_selfie($m, $ID{'jpeg-small'}, $tok2)->{status}, 200, '... the token works';

ok control($m, { revoke_tokens => JSON::PP::true }), 'control: revoke_tokens';
is get_selfie($m, $ID{'jpeg-small'}, $tok2)->{status}, 401, '... a revoked token gets 401';
is get_selfie($m, $ID{'jpeg-small'})->{status}, 200, '... static tokens still work';

is http($m, 'POST', '/__mock/control', body => '{"bogus":1}')->{status}, 400,
   'control: unknown key refused';

# a short token, with room for a loaded machine between minting and use;
# every assertion of this file has an iat of its own, hundreds of seconds
# apart, so that a slow run never mints the same one twice (1.2.7)
control($m, { token_ttl => 3 });
$res = token_request($m, sign_jwt("$CERTS/sa.key", claims(iat => now() - 800)));
my $short = $JSON->decode($res->{body})->{access_token};
is get_selfie($m, $ID{'jpeg-small'}, $short)->{status}, 200, 'a 3 s token works...';
sleep 3.2;
is get_selfie($m, $ID{'jpeg-small'}, $short)->{status}, 401, '... and expires';

$settings = control($m, { reset => JSON::PP::true });
is_deeply [@$settings{qw(token_mode token_ttl)}], ['ok', 3600], 'control: reset';
is get_selfie($m, $ID{'401-once'})->{status}, 401, '... 401-once fails once again';

my $stats = $JSON->decode(http($m, 'GET', '/__mock/stats')->{body});
ok $stats->{selfie} >= 1 && exists $stats->{token}, 'stats: counts by kind';


# ---------------------------------------------------------------------------
# Request log


http($m, 'GET', selfie_path($ID{'jpeg-small'}),
     headers => [['Authorization', "Bearer $STATIC_TOKEN"],
                 ['Cookie', 'client=1'], ['X-Probe', 'log-check']]);
my @log = log_entries($m);
my ($probe) = grep { ($_->{headers}{'x-probe'} // '') eq 'log-check' } @log;
ok $probe, 'the log records each request';
is $probe->{headers}{cookie}, 'client=1', '... with its headers, lowercased';
is $probe->{headers}{authorization}, "Bearer $STATIC_TOKEN", '... Authorization too';
is $probe->{method}, 'GET', '... method';
is $probe->{path}, selfie_path($ID{'jpeg-small'}), '... path';
ok $probe->{time} > 1e9 && $probe->{time} =~ /\./, '... time, a float';
my ($tokenreq) = grep { $_->{path} eq '/oauth2/token' } @log;
like $tokenreq->{body}, qr/\Agrant_type=urn%3Aietf/, 'a token request: body logged';
ok !(grep { $_->{path} =~ m{\A/__mock/} && $_->{kind} ne 'mock' } @log),
   'control requests are marked (kind mock, path /__mock/...)';



# ---------------------------------------------------------------------------
# --selfie-prefix and --rate-limit (for fleet tests: many processes, the
# tenant's limit)


{
    my $mp = start_mock('prefix', '--selfie-prefix', 'f1ee7000',
                        '--rate-limit', 5);
    my $jpeg = slurp("$FIXTURES/selfie-360x480.jpg");
    my %seen;
    for my $id ('f1ee7000-0000-4000-8000-000000000001',
                'F1EE7000-0000-4000-8000-00000000000A') {
        my $r = get_selfie($mp, $id);
        is $r->{status}, 200, "--selfie-prefix: $id is a process with a selfie";
        my ($image, $type) = decode_selfie($r->{body});
        my $want = "\xFF\xD8\xFF\xFE" . pack('n', 38) . lc($id)
                   . substr($jpeg, 2);
        is $type, 'image/jpeg', '... image/jpeg';
        ok defined $image && $image eq $want,
           '... jpeg-small with a comment segment holding the processId';
        $seen{sha256_hex($image // '')}++;
    }
    is scalar(keys %seen), 2, '... a distinct image per processId';
    is get_selfie($mp, 'f1ee7001-0000-4000-8000-000000000001')->{status}, 404,
       '... another prefix: 404';
    is get_selfie($mp, $ID{'status-404'})->{status}, 404,
       '... the table still answers';

    # the rate limit: from the start of the next clock second (the calls
    # above must not count), 8 calls
    my $prev = int time;
    sleep 0.01 while int(time) == $prev;
    my $sec = int time;
    my @r = map { get_selfie($mp, $ID{'jpeg-small'}) } 1 .. 8;
    my $same = int(time) == $sec;      # all 8 within that second?
    SKIP: {
        skip 'the 8 calls spanned two seconds (a loaded machine)', 3
            unless $same;
        is join(' ', map { $_->{status} } @r), '200 200 200 200 200 429 429 429',
           '--rate-limit 5: the 6th call of a second is 429';
        is $r[5]{headers}{'retry-after'}, '1', '... with Retry-After: 1';
        like $r[5]{body}, qr/"code":8/, '... and Unico\'s error body';
    }
    sleep 0.05 while int(time) == $sec;
    is get_selfie($mp, $ID{'jpeg-small'})->{status}, 200,
       '... the next second is admitted again';
    my $stats = $JSON->decode(http($mp, 'GET', '/__mock/stats')->{body});
    ok $stats->{rate_limited} >= 3, "... stats: rate_limited $stats->{rate_limited}";
    stop_mock($mp);
}

# ---------------------------------------------------------------------------
# Stopping


# Leave children behind on purpose: an idle keep-alive connection and a
# hanging request (one is already open).
my $idle = mock_connect($m);
send_request($idle, 'GET', selfie_path($ID{'jpeg-small'}),
             headers => [['Authorization', "Bearer $STATIC_TOKEN"]]);
read_response($idle);
my @children = do {
    my %pid = map { $_->{pid} => 1 } log_entries($m);
    grep { alive($_) } keys %pid;
};
ok scalar(@children) >= 2, 'children are serving open connections';

is stop_mock($m), 0, 'SIGTERM: the mock exits with 0';
ok !(grep { alive($_) } @children), '... and takes its children with it';
ok !-e $m->{pidfile}, '... removing its pidfile';

# Killed without a chance to clean up: the orphans notice and exit.
my $m2 = start_mock('orphans');
my $c2 = mock_connect($m2);
send_request($c2, 'GET', selfie_path($ID{hang}),
             headers => [['Authorization', "Bearer $STATIC_TOKEN"]]);
sleep 0.3;
my ($orphan) = map { $_->{pid} } log_entries($m2);
kill 'KILL', $m2->{pid};
waitpid $m2->{pid}, 0;
delete $SERVERS{$m2->{pid}};
my $deadline = time + 5;
sleep 0.1 while $orphan && alive($orphan) && time < $deadline;
ok $orphan && !alive($orphan), 'SIGKILL: the orphaned children exit soon after';

done_testing();
