#!/usr/bin/perl
#
# unico.pl - a mock of Unico's Get Selfie API and of its identity token
# endpoint (OAuth2 JWT bearer grant), for ngx_unico_selfie_module's tests and
# demo.  See t/mock/README.md for the options, the scenario table and the
# control API; /work/shared/unico/API-FACTS.md is the contract it follows.
#
# Architecture: the parent process only accepts connections and forks one
# child per connection; the child does the TLS handshake and serves HTTP/1.1
# requests (keep-alive) until the peer closes, the idle timeout passes or a
# scenario ends the connection.  Response bodies are computed in the parent
# before it starts accepting, so children share them copy-on-write.  State
# that children must share (minted tokens, used assertions, counters, the
# control settings, "first request" markers, generated bodies) lives in files
# under --state, written atomically (O_EXCL, rename, O_APPEND + flock).
#
# Only Perl core modules and Debian-packaged ones are used.

use strict;
use warnings;

use B ();
use Crypt::OpenSSL::RSA ();
use Digest::SHA qw(sha256 sha256_hex);
use Fcntl qw(O_WRONLY O_CREAT O_EXCL O_APPEND :flock);
use File::Basename qw(dirname);
use File::Path qw(make_path remove_tree);
use File::Spec ();
use File::Temp qw(tempdir);
use Getopt::Long qw(GetOptionsFromArray);
use IO::Compress::Gzip qw(gzip $GzipError);
use IO::Socket::IP ();
use IO::Socket::SSL ();
use JSON::PP ();
use MIME::Base64 qw(encode_base64 decode_base64 encode_base64url
                    decode_base64url);
use Net::SSLeay ();
use POSIX ();
use Socket qw(SOL_SOCKET SO_LINGER IPPROTO_TCP TCP_NODELAY);
use Time::HiRes qw(time sleep);


use constant {
    MAX_HEAD        => 64 * 1024,          # request line + headers
    MAX_BODY        => 16 * 1024 * 1024,   # request body
    WRITE_TIMEOUT   => 120,                # a stalled peer kills the child
    TLS_TIMEOUT     => 10,                 # handshake
    HANG_MAX        => 60,                 # default for "hang" scenarios
    JWT_MAX_LIFE    => 3600,               # exp - iat
    JWT_IAT_SKEW    => 60,                 # iat may be this far ahead
    DEFAULT_BODY    => '{"fileContents":"{{fileContents}}",'
                       . '"contentType":"{{contentType}}"}',
};

my $UUID_RE = qr/\A[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-
                 [0-9a-fA-F]{4}-[0-9a-fA-F]{12}\z/x;
my $GRANT_TYPE = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
my $JSON = JSON::PP->new->utf8->canonical;
my $DIR = dirname(File::Spec->rel2abs(__FILE__));

my %REASON = (
    100 => 'Continue', 200 => 'OK', 302 => 'Found', 400 => 'Bad Request',
    401 => 'Unauthorized', 403 => 'Forbidden', 404 => 'Not Found',
    405 => 'Method Not Allowed', 413 => 'Payload Too Large',
    418 => "I'm a teapot", 429 => 'Too Many Requests',
    431 => 'Request Header Fields Too Large',
    500 => 'Internal Server Error', 502 => 'Bad Gateway',
    503 => 'Service Unavailable', 504 => 'Gateway Timeout',
);

# Token endpoint errors (for --verbose and the README): the documented ones,
# then the mock's own (1.2.9x) for failures whose real code Unico does not
# document.
my %TOKEN_ERROR = (
    '1.2.4'  => 'JWT expired',
    '1.2.7'  => 'JWT already used',
    '1.2.18' => 'account locked',
    '1.2.21' => 'wrong key (signature does not verify)',
    '1.2.22' => 'claims are not exactly iss, aud, scope, iat, exp',
    '1.2.90' => 'mock: not a form POST with grant_type and assertion',
    '1.2.91' => 'mock: assertion is not a JWT (parts, base64url, JSON)',
    '1.2.92' => 'mock: header is not {"alg":"RS256","typ":"JWT"}',
    '1.2.93' => 'mock: iss is not --issuer',
    '1.2.94' => 'mock: aud is not --audience',
    '1.2.95' => 'mock: scope is not "*"',
    '1.2.96' => 'mock: iat/exp not integers, exp <= iat, '
                . 'exp - iat > 3600 or iat in the future',
);

my %O;                  # command-line options
my @SCENARIOS;          # the table, in file order
my %SCENARIO;           # lowercase id => entry
my %FIXTURE;            # file name => bytes
my %STATIC_TOKEN;       # --token values
my $PUBKEY;             # Crypt::OpenSSL::RSA, or undef
my $TLS_CTX;            # IO::Socket::SSL::SSL_Context, or undef with --plain
my %CHILD;              # parent: live children
my $STOP = 0;           # parent: SIGTERM/SIGINT seen
my $SNI;                # child: the server name of the TLS ClientHello

# How a scenario answers once the request is read (after "delay").
my %ACTION = (
    answer      => \&act_answer,
    hang        => \&act_hang,
    reset       => sub { 'rst' },
    close       => sub { 'close' },
    garbage     => \&act_garbage,
    'fail-once' => \&act_fail_once,
);

# How an answer's body goes on the wire.
my %TRANSFER = (
    length              => \&send_with_length,
    truncated           => sub { send_half(@_, 'close') },
    'reset-mid-body'    => sub { send_half(@_, 'rst') },
    'close-delimited'   => \&send_close_delimited,
    'slow-body'         => \&send_slow_body,
    chunked             => sub { send_chunked(@_, 1) },
    'chunked-truncated' => sub { send_chunked(@_, 0) },
);

# Rewrites of the base64 text inside the JSON string.
my %ENCODE = (
    'escape-slashes'  => sub { $_[0] =~ s{/}{\\/}gr },
    'unicode-slashes' => sub { $_[0] =~ s{/}{\\u002F}gr },
    'wrap-lf'         => sub { join '\n', unpack '(A76)*', $_[0] },
    'wrap-crlf'       => sub { join '\r\n', unpack '(A76)*', $_[0] },
    'strip-padding'   => sub { $_[0] =~ s/=+\z//r },
    'url-alphabet'    => sub { $_[0] =~ tr{+/}{-_}r },
    corrupt           => \&corrupt_base64,
);

my %SCENARIO_KEY = map { $_ => 1 } qw(
    name id description fixture data_base64 generate size content_type
    encode body cut status http_content_type headers content_encoding
    delay action hang_max transfer chunks body_delay close_after
    once_status
);

my %CONTROL_KEY = map { $_ => 1 } qw(
    token_mode token_ttl token_delay expires_in_string revoke_tokens reset
    x_accel_redirect
);


main(@ARGV);


sub main {
    %O = parse_options(@_);
    $SIG{PIPE} = 'IGNORE';
    $SIG{$_} = sub { $STOP = 1 } for qw(TERM INT HUP);

    load_scenarios($O{processes});
    fixture('selfie-360x480.jpg') if defined $O{'selfie-prefix'};
    init_state();
    $PUBKEY = load_public_key($O{'public-key'}) if $O{'public-key'};
    $TLS_CTX = tls_context() unless $O{plain};
    %STATIC_TOKEN = map { $_ => 1 } @{ $O{token} };

    my $listener = open_listener($O{listen});
    append_locked($O{log}, '') if defined $O{log};     # exists from now on
    write_file_atomic($O{portfile}, $listener->sockport . "\n")
        if defined $O{portfile};
    write_file_atomic($O{pidfile}, "$$\n") if defined $O{pidfile};

    accept_loop($listener);

    close $listener;
    stop_children();
    unlink grep { defined } $O{pidfile}, $O{portfile};
    remove_tree($O{state}) if $O{own_state};
    exit 0;
}


# ---------------------------------------------------------------------------
# Options and start-up


sub usage {
    my ($rc) = @_;
    print {$rc ? *STDERR : *STDOUT} <<"EOF";
usage: $0 --listen HOST:PORT (--cert F --key F | --plain) [options]
  --fixtures DIR         image files (default: t/fixtures)
  --processes FILE       scenario table (default: processes.json beside me)
  --token TOK            accepted bearer token (repeatable)
  --log FILE             request log, one JSON object per line
  --state DIR            cross-process state (default: a temporary directory)
  --pidfile FILE         written once listening
  --portfile FILE        the port actually bound (for --listen HOST:0)
  --public-key F         service-account public key (PEM) for /oauth2/token
  --issuer S             expected iss
  --audience S           expected aud
  --token-ttl SECONDS    lifetime of minted tokens (default 3600)
  --expires-in-string    expires_in as a string ("3600")
  --idle-timeout SECONDS keep-alive idle timeout (default 75)
  --selfie-prefix HEX    any UUID (not in the table) that starts with HEX is a
                         process with its own selfie (jpeg-small plus a JPEG
                         comment holding the processId)
  --rate-limit N         the tenant's limit: at most N selfie calls per clock
                         second, over it 429 with Retry-After: 1 (default: none)
  --verbose              report connection-level failures on stderr
EOF
    exit $rc;
}


sub parse_options {
    my @argv = @_;
    my %o = (
        processes      => "$DIR/processes.json",
        fixtures       => "$DIR/../fixtures",
        token          => [],
        'token-ttl'    => 3600,
        'idle-timeout' => 75,
    );

    GetOptionsFromArray(\@argv, \%o,
        'listen=s', 'cert=s', 'key=s', 'plain', 'fixtures=s', 'processes=s',
        'token=s@', 'log=s', 'state=s', 'pidfile=s', 'portfile=s',
        'public-key=s', 'issuer=s', 'audience=s', 'token-ttl=i',
        'expires-in-string', 'idle-timeout=i', 'verbose', 'help',
        'selfie-prefix=s', 'rate-limit=i',
    ) or usage(2);
    usage(0) if $o{help};

    die "unico.pl: unexpected arguments: @argv\n" if @argv;
    die "unico.pl: --listen HOST:PORT is required\n" unless $o{listen};
    die "unico.pl: --cert and --key are required (or --plain)\n"
        unless $o{plain} || ($o{cert} && $o{key});
    die "unico.pl: --token-ttl must be >= 0\n" if $o{'token-ttl'} < 0;
    die "unico.pl: --selfie-prefix must be 1 to 8 hex digits\n"
        if defined $o{'selfie-prefix'}
           && $o{'selfie-prefix'} !~ /\A[0-9a-fA-F]{1,8}\z/;
    $o{'selfie-prefix'} = lc $o{'selfie-prefix'} if defined $o{'selfie-prefix'};
    die "unico.pl: --rate-limit must be >= 1\n"
        if defined $o{'rate-limit'} && $o{'rate-limit'} < 1;
    return %o;
}


sub open_listener {
    my ($spec) = @_;
    my ($host, $port) = $spec =~ /\A\[(.+)\]:(\d+)\z/;
    ($host, $port) = $spec =~ /\A(.+):(\d+)\z/ unless defined $host;
    die "unico.pl: --listen wants HOST:PORT, not '$spec'\n"
        unless defined $host;

    my $sock = IO::Socket::IP->new(
        LocalHost => $host,
        LocalPort => $port,
        Proto     => 'tcp',
        Listen    => 1024,
        ReuseAddr => 1,
    ) or die "unico.pl: cannot listen on $spec: $@\n";
    $sock->blocking(0);
    return $sock;
}


sub tls_context {
    my $ctx = IO::Socket::SSL::SSL_Context->new(
        SSL_server          => 1,
        SSL_cert_file       => $O{cert},
        SSL_key_file        => $O{key},
        SSL_alpn_protocols  => ['http/1.1'],
    ) or die "unico.pl: TLS setup with $O{cert} / $O{key} failed: "
             . IO::Socket::SSL::errstr() . "\n";

    # Note the SNI while the ClientHello is processed: afterwards OpenSSL
    # reports none for resumed TLS 1.3 sessions (nginx resumes by default).
    Net::SSLeay::CTX_set_tlsext_servername_callback($ctx->{context}, sub {
        $SNI = Net::SSLeay::get_servername($_[0]);
        return 0;                               # SSL_TLSEXT_ERR_OK
    });
    return $ctx;
}


sub load_public_key {
    my ($file) = @_;
    my $rsa = eval { Crypt::OpenSSL::RSA->new_public_key(slurp($file)) }
        or die "unico.pl: $file is not an RSA public key: $@\n";
    $rsa->use_sha256_hash;
    $rsa->use_pkcs1_padding;
    return $rsa;
}


sub init_state {
    unless (defined $O{state}) {
        $O{state} = tempdir('unico-mock.XXXXXX', TMPDIR => 1);
        $O{own_state} = 1;
    }
    $O{state} = File::Spec->rel2abs($O{state});
    for my $sub (qw(tokens assertions once count cache rate)) {
        make_path("$O{state}/$sub");
    }
}


# ---------------------------------------------------------------------------
# The scenario table


sub load_scenarios {
    my ($file) = @_;
    my $table = eval { $JSON->decode(slurp($file)) }
        or die "unico.pl: $file: " . ($@ || "empty") . "\n";
    die "unico.pl: $file: not an array\n" unless ref $table eq 'ARRAY';

    my %name;
    for my $s (@$table) {
        check_scenario($s, $file);
        die "unico.pl: $file: duplicate name $s->{name}\n" if $name{$s->{name}}++;
        die "unico.pl: $file: duplicate id $s->{id}\n" if $SCENARIO{$s->{id}};
        # Generated images are built on first use (and cached in --state).
        $s->{_body} = build_body($s, image_of($s)) unless $s->{generate};
        $SCENARIO{$s->{id}} = $s;
        push @SCENARIOS, $s;
    }
}


sub check_scenario {
    my ($s, $file) = @_;
    my $what = "$file: " . ($s->{name} // '(unnamed)');

    die "unico.pl: $what: not an object\n" unless ref $s eq 'HASH';
    for (keys %$s) {
        die "unico.pl: $what: unknown key '$_'\n" unless $SCENARIO_KEY{$_};
    }
    die "unico.pl: $what: needs a name\n" unless defined $s->{name};
    die "unico.pl: $what: id must be a lowercase canonical UUID\n"
        unless defined $s->{id} && $s->{id} =~ $UUID_RE
               && $s->{id} eq lc $s->{id};
    die "unico.pl: $what: unknown action\n"
        if defined $s->{action} && !$ACTION{$s->{action}};
    die "unico.pl: $what: unknown transfer\n"
        if defined $s->{transfer} && !$TRANSFER{$s->{transfer}};
    die "unico.pl: $what: generate must be jpeg-noise with a size >= 4\n"
        if defined $s->{generate}
           && ($s->{generate} ne 'jpeg-noise' || ($s->{size} // 0) < 4);
    die "unico.pl: $what: content_encoding must be gzip\n"
        if defined $s->{content_encoding} && $s->{content_encoding} ne 'gzip';
    for (@{ $s->{encode} || [] }) {
        die "unico.pl: $what: unknown encode '$_'\n" unless $ENCODE{$_};
    }
    for (qw(status once_status size)) {
        die "unico.pl: $what: $_ must be an integer\n"
            if defined $s->{$_} && $s->{$_} !~ /\A\d+\z/;
    }
    for (qw(delay body_delay hang_max cut)) {
        die "unico.pl: $what: $_ must be a number\n"
            if defined $s->{$_} && $s->{$_} !~ /\A\d+(?:\.\d+)?\z/;
    }
    die "unico.pl: $what: chunks must be positive integers\n"
        if grep { !/\A[1-9]\d*\z/ } @{ $s->{chunks} || [] };
    die "unico.pl: $what: headers must be an object\n"
        if defined $s->{headers} && ref $s->{headers} ne 'HASH';
}


# The image bytes a scenario carries, or undef.
sub image_of {
    my ($s) = @_;
    return fixture($s->{fixture}) if defined $s->{fixture};
    return decode_base64($s->{data_base64}) if defined $s->{data_base64};
    return jpeg_noise($s->{size}) if defined $s->{generate};
    return undef;
}


sub fixture {
    my ($name) = @_;
    return $FIXTURE{$name} //= slurp("$O{fixtures}/$name");
}


# A JPEG signature followed by deterministic pseudo-random bytes (SHA-256 in
# counter mode), $size bytes in all.
sub jpeg_noise {
    my ($size) = @_;
    my $out = "\xFF\xD8\xFF\xE0";
    my $seed = "unico-mock-noise:$size:";
    my $i = 0;
    $out .= sha256($seed . $i++) while length $out < $size;
    return substr($out, 0, $size);
}


# The response body of a scenario: its template with the placeholders
# {{fileContents}} (the scenario's image, base64, after "encode"),
# {{fileContents:FILE}} (another fixture, plain base64), {{contentType}} and
# {{nest:N}} (N nested arrays) filled in; then "cut" and "content_encoding".
sub build_body {
    my ($s, $image) = @_;
    my $body = $s->{body} // (defined $image ? DEFAULT_BODY : '');
    my %fill = (
        fileContents => sub {
            my ($file) = @_;
            return encode_base64(fixture($file), '') if length($file // '');
            die "unico.pl: $s->{name}: {{fileContents}} without an image\n"
                unless defined $image;
            return encoded_base64($s, $image);
        },
        contentType => sub { json_string_inner(content_type_of($s)) },
        nest        => sub { my $n = $_[0] // 0; '[' x $n . ']' x $n },
    );

    $body =~ s{\{\{(\w+)(?::([^{}]*))?\}\}}{
        my $f = $fill{$1} or die "unico.pl: $s->{name}: unknown {{$1}}\n";
        $f->($2);
    }ge;

    $body = substr($body, 0, int(length($body) * $s->{cut}))
        if defined $s->{cut};
    if (($s->{content_encoding} // '') eq 'gzip') {
        gzip(\(my $plain = $body) => \my $packed)
            or die "unico.pl: gzip: $GzipError\n";
        $body = $packed;
    }
    return $body;
}


sub encoded_base64 {
    my ($s, $image) = @_;
    my $b64 = encode_base64($image, '');
    $b64 = $ENCODE{$_}->($b64) for @{ $s->{encode} || [] };
    return $b64;
}


# Puts a '*' and a '%' inside the base64 (not at its ends).
sub corrupt_base64 {
    my ($b64) = @_;
    my $len = length $b64;
    substr($b64, int($len / 3), 0, '*');
    substr($b64, int(2 * $len / 3), 0, '%');
    return $b64;
}


sub content_type_of {
    my ($s) = @_;
    return $s->{content_type} if defined $s->{content_type};
    return ($s->{fixture} // '') =~ /\.png\z/i ? 'image/png' : 'image/jpeg';
}


# A string as it appears between the quotes of a JSON string.
sub json_string_inner {
    my $json = JSON::PP->new->ascii->allow_nonref->encode("$_[0]");
    return substr($json, 1, -1);
}


# The body of a scenario; generated ones are built once per --state
# directory, under a lock, and read back from there.
sub scenario_body {
    my ($s) = @_;
    return $s->{_body} if defined $s->{_body};

    my %plain = map { /^_/ ? () : ($_ => $s->{$_}) } keys %$s;
    my $file = "$O{state}/cache/" . sha256_hex($JSON->encode(\%plain));
    return slurp("$file.body") if -e "$file.body";

    open my $lock, '>>', "$file.lock" or die "unico.pl: $file.lock: $!\n";
    flock $lock, LOCK_EX;
    write_file_atomic("$file.body", build_body($s, image_of($s)))
        unless -e "$file.body";
    close $lock;
    return slurp("$file.body");
}


# ---------------------------------------------------------------------------
# The parent: accept, fork, reap, stop


sub accept_loop {
    my ($listener) = @_;
    local $SIG{CHLD} = \&reap_children;

    until ($STOP) {
        my $rin = '';
        vec($rin, fileno $listener, 1) = 1;
        my $n = select(my $rout = $rin, undef, undef, 1);
        next unless $n && $n > 0;
        while (!$STOP and my $client = $listener->accept) {
            spawn($client, $listener);
        }
    }
}


sub spawn {
    my ($client, $listener) = @_;
    my $chld = POSIX::SigSet->new(POSIX::SIGCHLD());

    # Block SIGCHLD until the child is in %CHILD, or a quick child could be
    # reaped before it is registered.
    POSIX::sigprocmask(POSIX::SIG_BLOCK(), $chld);
    my $pid = fork;
    if (!defined $pid) {
        warn "unico.pl: fork: $!\n";
    } elsif ($pid == 0) {
        $SIG{$_} = 'DEFAULT' for qw(TERM INT HUP CHLD ALRM);
        POSIX::sigprocmask(POSIX::SIG_UNBLOCK(), $chld);
        close $listener;
        my $ok = eval { serve_connection($client); 1 };
        warn "unico.pl: $@" unless $ok;
        POSIX::_exit($ok ? 0 : 1);  # no END blocks, no destructors in children
    } else {
        $CHILD{$pid} = 1;
    }
    POSIX::sigprocmask(POSIX::SIG_UNBLOCK(), $chld);
    close $client;
}


sub reap_children {
    local ($!, $?);
    while ((my $pid = waitpid(-1, POSIX::WNOHANG())) > 0) {
        delete $CHILD{$pid};
    }
}


sub stop_children {
    kill 'TERM', keys %CHILD;
    my $deadline = time + 3;
    while (%CHILD && time < $deadline) {
        reap_children();
        sleep 0.01 if %CHILD;
    }
    return unless %CHILD;
    kill 'KILL', keys %CHILD;
    while (%CHILD) {
        my $pid = waitpid(-1, 0);
        last if $pid <= 0;
        delete $CHILD{$pid};
    }
}


# ---------------------------------------------------------------------------
# A connection (in a child)


sub serve_connection {
    my ($sock) = @_;
    $sock->blocking(1);
    setsockopt($sock, IPPROTO_TCP, TCP_NODELAY, 1);

    my $c = { sock => $sock, buf => '', seq => 0, ppid => getppid(),
              tls => !$O{plain} };
    return if $c->{tls} && !start_tls($c);

    my $end = 'close';
    while (my $req = read_request($c)) {
        $c->{seq}++;
        log_request($c, $req);
        count($req->{kind});
        $end = $req->{error}
             ? respond($c, $req, $req->{error}, [['Content-Type', 'text/plain']],
                       "$REASON{$req->{error}}\n", 1)
             : dispatch($c, $req);
        last unless $end eq 'keep';
    }
    finish_connection($c, $end);
}


sub start_tls {
    my ($c) = @_;
    my $ok = IO::Socket::SSL->start_SSL($c->{sock},
        SSL_server    => 1,
        SSL_reuse_ctx => $TLS_CTX,
        Timeout       => TLS_TIMEOUT,
    );
    if (!$ok) {
        warn "unico.pl: TLS handshake failed: $IO::Socket::SSL::SSL_ERROR\n"
            if $O{verbose};
        return 0;
    }
    $c->{sni} = $SNI;
    return 1;
}


# 'rst' aborts the connection with a TCP RST (SO_LINGER 0, no TLS
# close_notify); anything else closes it cleanly.
sub finish_connection {
    my ($c, $end) = @_;
    if ($end eq 'rst') {
        setsockopt($c->{sock}, SOL_SOCKET, SO_LINGER, pack('ii', 1, 0));
        POSIX::close(fileno $c->{sock});
        return;
    }
    $c->{sock}->close;
}


# Waits until the socket has something to read; false after $timeout
# seconds.  Exits when the parent has gone (killed without cleaning up).
sub wait_readable {
    my ($c, $timeout) = @_;
    return 1 if $c->{tls} && $c->{sock}->pending;

    my $deadline = time + $timeout;
    while (1) {
        POSIX::_exit(0) if getppid() != $c->{ppid};
        my $left = $deadline - time;
        return 0 if $left <= 0;
        my $rin = '';
        vec($rin, fileno $c->{sock}, 1) = 1;
        my $n = select(my $rout = $rin, undef, undef, $left < 1 ? $left : 1);
        return 1 if $n && $n > 0;
    }
}


# Appends what the peer sent to $c->{buf}; 0 on EOF, undef on error or
# after $timeout seconds of silence.
sub read_more {
    my ($c, $timeout) = @_;
    return undef unless wait_readable($c, $timeout);
    my $n = sysread($c->{sock}, my $chunk, 65536);
    $c->{buf} .= $chunk if $n;
    return $n;
}


sub conn_write {
    my ($c, $data) = @_;
    my ($off, $len) = (0, length $data);

    alarm WRITE_TIMEOUT;
    while ($off < $len) {
        my $n = syswrite($c->{sock}, $data, $len - $off, $off);
        last unless $n;
        $off += $n;
    }
    alarm 0;
    return $off == $len;
}


# Sleeps $secs seconds, or less if the peer closes the connection (then
# returns false).  Anything the peer sends meanwhile is kept for later.
sub pause {
    my ($c, $secs) = @_;
    my $deadline = time + $secs;
    while ((my $left = $deadline - time) > 0) {
        next unless wait_readable($c, $left);
        my $n = sysread($c->{sock}, my $chunk, 65536);
        return 0 unless $n;
        $c->{buf} .= $chunk;
    }
    return 1;
}


# ---------------------------------------------------------------------------
# HTTP requests


# Reads one request.  Returns undef when the peer closes or stays silent for
# --idle-timeout; a request with {error => STATUS} when it is malformed.
sub read_request {
    my ($c) = @_;
    my $timeout = $O{'idle-timeout'};

    my $end;
    while (1) {
        $c->{buf} =~ s/\A(?:\r?\n)+//;      # RFC 9112 2.2: ignore
        if ($c->{buf} =~ /\r?\n\r?\n/) {
            $end = $+[0];
            return bad_request(431) if $end > MAX_HEAD;
            last;
        }
        return bad_request(431) if length $c->{buf} > MAX_HEAD;
        return undef unless read_more($c, $timeout);
    }

    my $req = parse_head(substr($c->{buf}, 0, $end, ''))
        or return bad_request(400);
    return defined read_body($c, $req, $timeout) ? $req : undef;
}


sub bad_request {
    my ($status) = @_;
    return { error => $status, method => '', path => '', query => '',
             headers => {}, body => '', kind => 'other', keep_alive => 0 };
}


sub parse_head {
    my ($head) = @_;
    my ($line, @lines) = split /\r?\n/, $head;
    my ($method, $target, $version) =
        $line =~ m{\A([!#\$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP/(1\.[01])\z}
        or return undef;

    my %h;
    for (@lines) {
        my ($name, $value) = /\A([^\s:]+):[ \t]*(.*?)[ \t]*\z/ or return undef;
        $name = lc $name;
        $h{$name} = exists $h{$name} ? "$h{$name}, $value" : $value;
    }

    $target =~ s{\Ahttps?://[^/]*}{}i;          # absolute-form
    my ($path, $query) = split /\?/, $target, 2;
    my $conn = lc($h{connection} // '');
    my $keep = $version eq '1.1' ? $conn !~ /\bclose\b/
                                 : $conn =~ /\bkeep-alive\b/;

    return { method => $method, path => $path, query => $query // '',
             version => $version, headers => \%h, body => '',
             kind => request_kind($path), keep_alive => $keep ? 1 : 0 };
}


sub request_kind {
    my ($path) = @_;
    return 'mock'   if $path =~ m{\A/__mock(?:/|\z)};
    return 'selfie' if $path =~ m{\A/client/v1/process/[^/]*/selfie\z};
    return 'token'  if $path eq '/oauth2/token';
    return 'other';
}


# Reads the body (Content-Length or chunked) into $req->{body}.  True when
# done; 0 with $req->{error} set when the framing is wrong; undef when the
# peer went away.
sub read_body {
    my ($c, $req, $timeout) = @_;
    my $h = $req->{headers};

    if (lc($h->{expect} // '') eq '100-continue') {
        conn_write($c, "HTTP/1.1 100 Continue\r\n\r\n") or return undef;
    }
    if (($h->{'transfer-encoding'} // '') =~ /\bchunked\b/i) {
        return read_chunked_body($c, $req, $timeout);
    }

    my $len = $h->{'content-length'} // 0;
    return framing_error($req, 400) unless $len =~ /\A\d{1,10}\z/;
    return framing_error($req, 413) if $len > MAX_BODY;
    while (length $c->{buf} < $len) {
        return undef unless read_more($c, $timeout);
    }
    $req->{body} = substr($c->{buf}, 0, $len, '');
    return 1;
}


sub read_chunked_body {
    my ($c, $req, $timeout) = @_;
    my $body = '';

    while (1) {
        my $eol;
        while (($eol = index $c->{buf}, "\r\n") < 0) {
            return framing_error($req, 400) if length $c->{buf} > 1024;
            return undef unless read_more($c, $timeout);
        }
        my ($hex) = substr($c->{buf}, 0, $eol) =~ /\A([0-9a-fA-F]{1,8})/
            or return framing_error($req, 400);
        my $size = hex $hex;
        return framing_error($req, 413) if length($body) + $size > MAX_BODY;

        if ($size == 0) {               # last chunk, trailers, blank line
            my $end;
            while (($end = index $c->{buf}, "\r\n\r\n", $eol) < 0) {
                return framing_error($req, 400) if length $c->{buf} > MAX_HEAD;
                return undef unless read_more($c, $timeout);
            }
            substr($c->{buf}, 0, $end + 4, '');
            last;
        }

        my $need = $eol + 2 + $size + 2;
        while (length $c->{buf} < $need) {
            return undef unless read_more($c, $timeout);
        }
        $body .= substr($c->{buf}, $eol + 2, $size);
        substr($c->{buf}, 0, $need, '');
    }
    $req->{body} = $body;
    return 1;
}


sub framing_error {
    my ($req, $status) = @_;
    $req->{error} = $status;
    $req->{keep_alive} = 0;
    return 0;
}


# ---------------------------------------------------------------------------
# HTTP responses


# RFC 9110 IMF-fixdate, independent of the locale.
sub http_date {
    my ($sec, $min, $hour, $mday, $mon, $year, $wday) = gmtime;
    return sprintf '%s, %02d %s %04d %02d:%02d:%02d GMT',
        (qw(Sun Mon Tue Wed Thu Fri Sat))[$wday], $mday,
        (qw(Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec))[$mon],
        $year + 1900, $hour, $min, $sec;
}


sub response_head {
    my ($req, $status, $headers) = @_;
    my $head = sprintf "HTTP/1.1 %d %s\r\n", $status,
                       $REASON{$status} // 'Unknown';
    $head .= "Date: " . http_date() . "\r\nServer: unico-mock\r\n";
    $head .= "$_->[0]: $_->[1]\r\n" for @$headers;

    # a misbehaving proxy in front of Unico: an internal redirect for nginx
    my $accel = ($req->{path} // '') =~ m{^/__mock} ? ''
                : control_settings()->{x_accel_redirect};
    $head .= "X-Accel-Redirect: $accel\r\n" if length $accel;

    $head .= "Connection: keep-alive\r\n"
        if ($req->{version} // '') eq '1.0' && $req->{keep_alive}
           && !grep { lc $_->[0] eq 'connection' } @$headers;
    return "$head\r\n";
}


# Sends a complete response with Content-Length.  Returns 'keep' when the
# connection may serve another request, else 'close'.
sub respond {
    my ($c, $req, $status, $headers, $body, $close) = @_;
    $close ||= !$req->{keep_alive};

    my @h = (@$headers, ['Content-Length', length $body]);
    push @h, ['Connection', 'close'] if $close;
    my $data = response_head($req, $status, \@h);
    $data .= $body unless $req->{method} eq 'HEAD';
    return 'close' unless conn_write($c, $data);
    return $close ? 'close' : 'keep';
}


sub respond_json {
    my ($c, $req, $status, $data, @extra) = @_;
    return respond($c, $req, $status,
                   [@extra, ['Content-Type', 'application/json']],
                   $JSON->encode($data));
}


# Headers a real API answer carries; none of them may reach the gateway's
# clients (tests check that they do not leak).
sub api_headers {
    return (
        ['X-Request-Id', random_uuid()],
        ['Set-Cookie', 'unico_session=secret; Path=/; Secure; HttpOnly'],
        ['Cache-Control', 'public, max-age=86400'],
        ['ETag', '"unico-upstream-etag"'],
        ['Access-Control-Allow-Origin', '*'],
        ['Strict-Transport-Security', 'max-age=31536000'],
    );
}


sub unico_error {
    my ($code, $message) = @_;
    return { code => $code, message => $message, details => undef };
}


sub respond_unauthorized {
    my ($c, $req) = @_;
    return respond($c, $req, 401,
        [api_headers(), ['Content-Type', 'text/plain; charset=utf-8'],
         ['WWW-Authenticate', 'Bearer']],
        'Unauthorized');
}


sub dispatch {
    my ($c, $req) = @_;
    my $kind = $req->{kind};
    return handle_selfie($c, $req) if $kind eq 'selfie';
    return handle_token($c, $req)  if $kind eq 'token';
    return handle_mock($c, $req)   if $kind eq 'mock';
    return respond_json($c, $req, 404, unico_error(5, 'not found'));
}


# ---------------------------------------------------------------------------
# GET /client/v1/process/{processId}/selfie


sub handle_selfie {
    my ($c, $req) = @_;
    my ($id) = $req->{path} =~ m{\A/client/v1/process/([^/]*)/selfie\z};

    return respond_unauthorized($c, $req) unless authorized($req);
    return respond_json($c, $req, 405, unico_error(12, 'method not allowed'),
                        api_headers(), ['Allow', 'GET, HEAD'])
        unless $req->{method} eq 'GET' || $req->{method} eq 'HEAD';
    return respond_json($c, $req, 400, unico_error(3, 'process id is invalid'),
                        api_headers())
        unless $id =~ $UUID_RE;

    return respond_json($c, $req, 429, unico_error(8, 'rate limit exceeded'),
                        api_headers(), ['Retry-After', '1'])
        unless within_rate_limit();

    my $s = $SCENARIO{lc $id} || prefix_scenario(lc $id)
        or return respond_json($c, $req, 404,
                               unico_error(5, 'process not found'),
                               api_headers());
    return 'close' if $s->{delay} && !pause($c, $s->{delay});
    return $ACTION{ $s->{action} // 'answer' }->($c, $req, $s);
}


# --selfie-prefix: a UUID that starts with the prefix is a process whose
# selfie is jpeg-small with a JPEG comment segment (FF FE, length, the
# lowercase processId) right after SOI: a valid JPEG, distinct per process.
sub prefix_scenario {
    my ($id) = @_;
    my $prefix = $O{'selfie-prefix'};
    return undef unless defined $prefix && index($id, $prefix) == 0;

    my $jpeg = fixture('selfie-360x480.jpg');
    my $image = substr($jpeg, 0, 2) . "\xFF\xFE" . pack('n', 2 + length $id)
                . $id . substr($jpeg, 2);
    my $s = { name => "prefix-$id", id => $id, content_type => 'image/jpeg' };
    $s->{_body} = build_body($s, $image);
    return $s;
}


# --rate-limit N: the tenant's selfie calls in this clock second, counted
# across every connection's process in --state; true while under N.  Only
# the calls let through count, as a limiter admits them.
sub within_rate_limit {
    my $limit = $O{'rate-limit'} or return 1;
    my $sec = int time;
    my $file = "$O{state}/rate/$sec";
    my $fh;
    unless (sysopen $fh, $file, O_WRONLY | O_APPEND | O_CREAT, 0644) {
        warn "unico.pl: $file: $!\n";
        return 1;
    }
    flock $fh, LOCK_EX;
    my $ok = (-s $fh) < $limit;
    syswrite $fh, '.' if $ok;
    close $fh;
    count('rate_limited') unless $ok;
    return $ok;
}


sub authorized {
    my ($req) = @_;
    my ($token) = ($req->{headers}{authorization} // '')
                  =~ /\ABearer +([^\s,]+)\z/i or return 0;
    return 1 if $STATIC_TOKEN{$token};
    my $expiry = slurp_if_exists("$O{state}/tokens/" . sha256_hex($token));
    return defined $expiry && $expiry > time;
}


sub act_answer {
    my ($c, $req, $s) = @_;
    my @h = (api_headers(),
             ['Content-Type', $s->{http_content_type} // 'application/json']);
    push @h, ['Content-Encoding', $s->{content_encoding}]
        if $s->{content_encoding};
    push @h, map { [$_, $s->{headers}{$_}] } sort keys %{ $s->{headers} || {} };

    my $send = $TRANSFER{ $s->{transfer} // 'length' };
    return $send->($c, $req, $s, \@h, scenario_body($s));
}


sub act_hang {
    my ($c, $req, $s) = @_;
    pause($c, $s->{hang_max} // HANG_MAX);
    return 'close';
}


sub act_garbage {
    my ($c) = @_;
    conn_write($c, "\x00\x01garbage\r\n\r\n");
    return 'close';
}


# The first request for the scenario (per --state directory) gets
# once_status, later ones the normal answer.  O_EXCL makes "first" atomic
# across processes.
sub act_fail_once {
    my ($c, $req, $s) = @_;
    if (sysopen my $fh, "$O{state}/once/$s->{id}", O_WRONLY | O_CREAT | O_EXCL) {
        close $fh;
        my $status = $s->{once_status} // 401;
        return respond_unauthorized($c, $req) if $status == 401;
        return respond_json($c, $req, $status,
                            unico_error(99999, 'Internal failure! Try again later'));
    }
    return act_answer($c, $req, $s);
}


sub send_with_length {
    my ($c, $req, $s, $h, $body) = @_;
    return respond($c, $req, $s->{status} // 200, $h, $body, $s->{close_after});
}


# Full Content-Length, half the body, then $end ('close' or 'rst').
sub send_half {
    my ($c, $req, $s, $h, $body, $end) = @_;
    my $head = response_head($req, $s->{status} // 200,
                             [@$h, ['Content-Length', length $body]]);
    conn_write($c, $head . substr($body, 0, int(length($body) / 2)));
    return $end;
}


sub send_close_delimited {
    my ($c, $req, $s, $h, $body) = @_;
    conn_write($c, response_head($req, $s->{status} // 200,
                                 [@$h, ['Connection', 'close']]) . $body);
    return 'close';
}


# Headers and half the body, then the rest after body_delay seconds.
sub send_slow_body {
    my ($c, $req, $s, $h, $body) = @_;
    my $half = int(length($body) / 2);
    my $close = !$req->{keep_alive};
    my @h = (@$h, ['Content-Length', length $body]);
    push @h, ['Connection', 'close'] if $close;

    conn_write($c, response_head($req, $s->{status} // 200, \@h)
                   . substr($body, 0, $half)) or return 'close';
    pause($c, $s->{body_delay} // 5) or return 'close';
    conn_write($c, substr($body, $half)) or return 'close';
    return $close ? 'close' : 'keep';
}


# Chunks of the sizes in "chunks" (default 1000, 7, 1), then the rest in one
# chunk; each chunk its own write.  Without $last the terminating 0-length
# chunk is never sent and the connection is closed.
sub send_chunked {
    my ($c, $req, $s, $h, $body, $last) = @_;
    my $close = !$last || !$req->{keep_alive};
    my @h = (@$h, ['Transfer-Encoding', 'chunked']);
    push @h, ['Connection', 'close'] if $close;

    conn_write($c, response_head($req, $s->{status} // 200, \@h))
        or return 'close';
    my @sizes = @{ $s->{chunks} || [1000, 7, 1] };
    my $off = 0;
    while ($off < length $body) {
        my $size = shift(@sizes) // length($body) - $off;
        my $data = substr($body, $off, $size);
        $off += length $data;
        conn_write($c, sprintf("%x\r\n", length $data) . $data . "\r\n")
            or return 'close';
    }
    return 'close' unless $last;
    conn_write($c, "0\r\n\r\n") or return 'close';
    return $close ? 'close' : 'keep';
}


# ---------------------------------------------------------------------------
# POST /oauth2/token


sub handle_token {
    my ($c, $req) = @_;
    my $ctl = control_settings();

    return 'close' if $ctl->{token_delay} && !pause($c, $ctl->{token_delay});
    return token_misbehave($c, $req, $ctl->{token_mode})
        if $ctl->{token_mode} ne 'ok';

    my $ok = eval {
        my $assertion = token_form($req);
        verify_assertion($assertion);
        claim_assertion($assertion);
        1;
    };
    return token_success($c, $req, $ctl) if $ok;

    # Every refusal is HTTP 400, "wrong key" (1.2.21) included.
    my ($code) = ($@ // '') =~ /\Ajwt:(\S+)/ or die $@;
    warn "unico.pl: token request refused: $code ($TOKEN_ERROR{$code})\n"
        if $O{verbose};
    return token_error($c, $req, 400, auth_failure($code));
}


sub reject { die "jwt:$_[0]\n" }


# The assertion of a well-formed JWT bearer grant request.
sub token_form {
    my ($req) = @_;
    reject('1.2.90') unless $req->{method} eq 'POST';
    reject('1.2.90') unless ($req->{headers}{'content-type'} // '')
                             =~ m{\Aapplication/x-www-form-urlencoded\s*(?:;|\z)}i;

    my %form;
    for my $pair (split /&/, $req->{body}) {
        my ($k, $v) = map { url_decode($_) } split /=/, $pair, 2;
        reject('1.2.90') if exists $form{$k};       # repeated parameter
        $form{$k} = $v // '';
    }
    reject('1.2.90') unless ($form{grant_type} // '') eq $GRANT_TYPE;
    reject('1.2.90') unless length($form{assertion} // '');
    return $form{assertion};
}


sub url_decode {
    my ($s) = @_;
    $s =~ tr/+/ /;
    $s =~ s/%([0-9A-Fa-f]{2})/chr hex $1/ge;
    return $s;
}


# Checks everything but reuse; dies with reject() on the first failure, in
# this order: syntax, header, signature, claim names, iss, aud, scope, times.
sub verify_assertion {
    my ($jwt) = @_;
    my @part = split /\./, $jwt, -1;
    reject('1.2.91') unless @part == 3
        && !grep { !/\A[A-Za-z0-9_-]+\z/ || length($_) % 4 == 1 } @part;

    my $header = json_object(decode_base64url($part[0]));
    my $claims = json_object(decode_base64url($part[1]));
    reject('1.2.91') unless $header && $claims;

    reject('1.2.92') unless join(',', sort keys %$header) eq 'alg,typ'
        && is_json_string($header->{alg}) && $header->{alg} eq 'RS256'
        && is_json_string($header->{typ}) && $header->{typ} eq 'JWT';

    reject('1.2.21') unless $PUBKEY
        && eval { $PUBKEY->verify("$part[0].$part[1]",
                                  decode_base64url($part[2])) };

    reject('1.2.22') unless join(',', sort keys %$claims)
                            eq 'aud,exp,iat,iss,scope';
    check_claim_values($claims);
}


sub check_claim_values {
    my ($cl) = @_;
    my $now = time;

    reject('1.2.93') unless is_json_string($cl->{iss})
        && (!defined $O{issuer} || $cl->{iss} eq $O{issuer});
    reject('1.2.94') unless is_json_string($cl->{aud})
        && (!defined $O{audience} || $cl->{aud} eq $O{audience});
    reject('1.2.95') unless is_json_string($cl->{scope}) && $cl->{scope} eq '*';

    my ($iat, $exp) = @$cl{qw(iat exp)};
    reject('1.2.96') unless is_json_integer($iat) && is_json_integer($exp);
    reject('1.2.4')  unless $exp > $now;
    reject('1.2.96') if $exp <= $iat || $exp - $iat > JWT_MAX_LIFE
                     || $iat > $now + JWT_IAT_SKEW;
}


# Each assertion is accepted once, across processes and restarts that share
# --state: the first to create its marker file wins.
sub claim_assertion {
    my ($jwt) = @_;
    my $file = "$O{state}/assertions/" . sha256_hex($jwt);
    sysopen(my $fh, $file, O_WRONLY | O_CREAT | O_EXCL) or reject('1.2.7');
    close $fh;
}


sub token_success {
    my ($c, $req, $ctl) = @_;
    my $token = encode_base64url(random_bytes(36));       # 48 characters
    my $ttl = $ctl->{token_ttl};

    write_file_atomic("$O{state}/tokens/" . sha256_hex($token),
                      (time + $ttl) . "\n");
    count('minted');
    return respond_json($c, $req, 200, {
        access_token => $token,
        token_type   => 'Bearer',
        expires_in   => $ctl->{expires_in_string} ? "$ttl" : 0 + $ttl,
    }, ['Cache-Control', 'no-store'], ['Pragma', 'no-cache']);
}


sub auth_failure {
    my ($code) = @_;
    return "Falha na autentica\x{e7}\x{e3}o $code";
}


sub token_error {
    my ($c, $req, $status, $description, @extra) = @_;
    return respond_json($c, $req, $status, {
        error             => 'server_error',
        error_description => $description,
    }, ['Cache-Control', 'no-store'], @extra);
}


# token_mode other than "ok" (control_change lists them).
sub token_misbehave {
    my ($c, $req, $mode) = @_;
    return act_hang($c, $req, {})     if $mode eq 'hang';
    return 'close'                    if $mode eq 'down';
    return 'rst'                      if $mode eq 'reset';
    return token_error($c, $req, 400, auth_failure($1))
        if $mode =~ /\Aerror-(1\.2\.\d+)\z/;
    if ($mode =~ /\Aerror-(\d{3})\z/) {
        return token_error($c, $req, $1, 'Internal failure! Try again later',
                           $1 == 429 ? ['Retry-After', '7'] : ());
    }
    if ($mode eq 'no-token') {
        return respond_json($c, $req, 200,
                            { token_type => 'Bearer', expires_in => 3600 });
    }
    # bad-json
    return respond($c, $req, 200, [['Content-Type', 'application/json']],
                   '{"access_token": "abc", "token_type": "Bea');
}


# ---------------------------------------------------------------------------
# /__mock/*: control, stats, scenarios, health


sub handle_mock {
    my ($c, $req) = @_;
    my ($path, $method) = @$req{qw(path method)};

    return respond($c, $req, 200, [['Content-Type', 'text/plain']], "ok\n")
        if $path eq '/__mock/health';
    return respond_json($c, $req, 200, stats()) if $path eq '/__mock/stats';
    return respond_json($c, $req, 200, [
        map { +{ name => $_->{name}, id => $_->{id},
                 description => $_->{description} } } @SCENARIOS
    ]) if $path eq '/__mock/scenarios';
    return respond_json($c, $req, 404, { error => 'no such mock endpoint' })
        unless $path eq '/__mock/control';

    return respond_json($c, $req, 200, control_settings()) if $method eq 'GET';
    my $change = eval { $JSON->decode($req->{body}) };
    my $err = ref $change eq 'HASH' ? control_change($change)
                                    : 'body must be a JSON object';
    return respond_json($c, $req, 400, { error => $err }) if $err;
    return respond_json($c, $req, 200, control_settings());
}


sub control_defaults {
    return {
        token_mode        => 'ok',
        token_ttl         => 0 + $O{'token-ttl'},
        token_delay       => 0,
        x_accel_redirect  => '',
        expires_in_string => $O{'expires-in-string'} ? JSON::PP::true
                                                     : JSON::PP::false,
    };
}


sub control_settings {
    my $saved = eval { $JSON->decode(slurp("$O{state}/control.json")) } || {};
    return { %{ control_defaults() }, %$saved };
}


# Validates and applies a control request; returns an error or undef.
sub control_change {
    my ($ch) = @_;
    for (keys %$ch) {
        return "unknown control key '$_'" unless $CONTROL_KEY{$_};
    }
    return 'token_mode: ok, error-NNN, error-1.2.N, bad-json, no-token, '
           . 'hang, down or reset'
        if exists $ch->{token_mode} && ($ch->{token_mode} // '') !~
           /\A(?:ok|bad-json|no-token|hang|down|reset|error-\d{3}|error-1\.2\.\d+)\z/;
    return 'token_ttl: an integer >= 0'
        if exists $ch->{token_ttl} && ($ch->{token_ttl} // '') !~ /\A\d+\z/;
    return 'token_delay: a number >= 0'
        if exists $ch->{token_delay}
           && ($ch->{token_delay} // '') !~ /\A\d+(?:\.\d+)?\z/;
    return 'x_accel_redirect: a path or ""'
        if exists $ch->{x_accel_redirect}
           && ($ch->{x_accel_redirect} // '') !~ m{\A(?:/[\w/.-]*)?\z};

    reset_state() if $ch->{reset};
    revoke_tokens() if $ch->{revoke_tokens};

    my %set = map { exists $ch->{$_} ? ($_ => $ch->{$_}) : () }
              qw(token_mode token_ttl token_delay expires_in_string
                 x_accel_redirect);
    $set{$_} += 0 for grep { /ttl|delay/ } keys %set;
    $set{expires_in_string} = $set{expires_in_string} ? JSON::PP::true
                                                      : JSON::PP::false
        if exists $set{expires_in_string};
    update_control(\%set) if %set;
    return undef;
}


sub update_control {
    my ($set) = @_;
    my $file = "$O{state}/control.json";
    open my $lock, '>>', "$file.lock" or die "unico.pl: $file.lock: $!\n";
    flock $lock, LOCK_EX;
    my $saved = eval { $JSON->decode(slurp($file)) } || {};
    write_file_atomic($file, $JSON->encode({ %$saved, %$set }));
    close $lock;
}


sub revoke_tokens {
    unlink glob "$O{state}/tokens/*";
}


# Back to the start: control settings, counters, "first request" markers.
# Used assertions and minted tokens stay (use revoke_tokens for those).
sub reset_state {
    unlink "$O{state}/control.json";
    unlink glob "$O{state}/count/*";
    unlink glob "$O{state}/once/*";
}


# Each request appends one byte to count/<kind>, so a count is a file size.
sub count {
    my ($kind) = @_;
    append_locked("$O{state}/count/$kind", '.');
}


sub stats {
    my %n = map { $_ => (-s "$O{state}/count/$_") || 0 }
            qw(selfie token mock other minted rate_limited);
    my $now = time;
    my @tokens = glob "$O{state}/tokens/*";
    my @valid = grep { (slurp_if_exists($_) // 0) > $now } @tokens;
    my @assertions = glob "$O{state}/assertions/*";
    return {
        (map { $_ => $n{$_} } qw(selfie token mock other)),
        total           => $n{selfie} + $n{token} + $n{mock} + $n{other},
        tokens_minted   => $n{minted},
        tokens_valid    => scalar @valid,
        assertions_used => scalar @assertions,
        rate_limited    => $n{rate_limited},
    };
}


# ---------------------------------------------------------------------------
# The request log


sub log_request {
    my ($c, $req) = @_;
    return unless defined $O{log};
    my %headers = map { $_ => text($req->{headers}{$_}) } keys %{ $req->{headers} };
    my $entry = {
        time    => time,
        method  => $req->{method},
        path    => text($req->{path}),
        query   => text($req->{query}),
        headers => \%headers,
        body    => text($req->{body}),
        kind    => $req->{kind},
        pid     => $$,
        seq     => $c->{seq},
        tls     => $c->{tls} ? JSON::PP::true : JSON::PP::false,
        sni     => $c->{sni},
    };
    $entry->{error} = $req->{error} if $req->{error};
    append_locked($O{log}, $JSON->encode($entry) . "\n");
}


# Bytes as a string for JSON: UTF-8 when they are, else one char per byte.
sub text {
    my ($s) = @_;
    return '' unless defined $s;
    utf8::decode($s);
    return $s;
}


# ---------------------------------------------------------------------------
# Small helpers


sub slurp {
    my ($file) = @_;
    open my $fh, '<:raw', $file or die "unico.pl: $file: $!\n";
    local $/;
    my $data = <$fh>;
    return $data // '';
}


sub slurp_if_exists {
    my ($file) = @_;
    open my $fh, '<:raw', $file or return undef;
    local $/;
    return scalar <$fh>;
}


sub write_file_atomic {
    my ($file, $data) = @_;
    my $tmp = "$file.tmp.$$";
    open my $fh, '>:raw', $tmp or die "unico.pl: $tmp: $!\n";
    print {$fh} $data or die "unico.pl: $tmp: $!\n";
    close $fh or die "unico.pl: $tmp: $!\n";
    rename $tmp, $file or die "unico.pl: $file: $!\n";
}


sub append_locked {
    my ($file, $data) = @_;
    my $fh;
    unless (sysopen $fh, $file, O_WRONLY | O_APPEND | O_CREAT, 0644) {
        warn "unico.pl: $file: $!\n";
        return;
    }
    flock $fh, LOCK_EX;
    syswrite $fh, $data if length $data;
    close $fh;
}


sub random_bytes {
    my ($n) = @_;
    open my $fh, '<:raw', '/dev/urandom' or die "unico.pl: /dev/urandom: $!\n";
    read($fh, my $bytes, $n) == $n or die "unico.pl: /dev/urandom: short read\n";
    return $bytes;
}


sub random_uuid {
    my @b = unpack 'C16', random_bytes(16);
    $b[6] = ($b[6] & 0x0f) | 0x40;
    $b[8] = ($b[8] & 0x3f) | 0x80;
    return sprintf '%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-'
                   . '%02x%02x%02x%02x%02x%02x', @b;
}


sub json_object {
    my ($text) = @_;
    my $v = eval { $JSON->decode($text) };
    return ref $v eq 'HASH' ? $v : undef;
}


# JSON::PP leaves a decoded number without a string value (no POK flag) and
# an integer with IOK only; strings have POK.  That tells 1 from "1" and 1.5.
sub is_json_integer {
    my ($v) = @_;
    return 0 if !defined $v || ref $v;
    my $flags = B::svref_2object(\$v)->FLAGS;
    return ($flags & B::SVp_IOK) && !($flags & (B::SVp_POK | B::SVp_NOK));
}


sub is_json_string {
    my ($v) = @_;
    return 0 if !defined $v || ref $v;
    return B::svref_2object(\$v)->FLAGS & B::SVp_POK ? 1 : 0;
}
