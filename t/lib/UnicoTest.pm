package UnicoTest;
# SPDX-License-Identifier: BSD-2-Clause

# The test harness: a temporary prefix, free loopback ports, the mock Unico
# server (t/mock/unico.pl) over TLS with a CA made for the run, and an nginx
# (Debian's, or $TEST_NGINX_BINARY) that loads the module just built
# ($TEST_NGINX_MODULE).  Everything it starts it stops, also when a test
# dies; after each file it checks the error log for crashes, alerts and
# sanitizer reports.

use strict;
use warnings;

use Carp qw(croak);
use Cwd qw(abs_path);
use Digest::SHA qw(sha256_hex);
use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use JSON::PP qw(decode_json);
use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(sleep time);

our $REPO = abs_path(dirname(__FILE__) . '/../..');
our $TOKEN = 'test-token-2b7e1516.28aed2a6';

my @live;           # every harness object not stopped yet


sub new {
    my ($class, %o) = @_;

    my $dir = tempdir('unico-t-XXXXXX', TMPDIR => 1,
                      CLEANUP => !$ENV{TEST_KEEP});
    chmod 0755, $dir;
    mkdir "$dir/$_" for qw(logs tmp state);

    my $self = bless {
        dir    => $dir,
        nginx  => $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx',
        module => $ENV{TEST_NGINX_MODULE}
                  || "$REPO/.build/ngx_http_unico_selfie_module.so",
        pids   => {},
        owner  => $$,
        %o,
    }, $class;

    croak "no module at $self->{module}: run ./build.sh first"
        unless -f $self->{module};

    push @live, $self;
    diag("prefix: $dir") if $ENV{TEST_KEEP};

    return $self;
}


sub dir { $_[0]{dir} }
sub repo { $REPO }


sub free_port {
    my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1',
                                  LocalPort => 0, ReuseAddr => 1)
        or croak "no free port: $!";
    my $port = $s->sockport;
    close $s;
    return $port;
}


# The test CA and keys, made once per harness by t/mock/gen-certs.sh.
sub certs {
    my ($self) = @_;
    my $certs = "$self->{dir}/certs";

    unless (-f "$certs/ca.pem") {
        system('bash', "$REPO/t/mock/gen-certs.sh", $certs) == 0
            or croak "gen-certs.sh failed";
    }

    return $certs;
}


# name -> processId, from the mock's scenario table.
sub processes {
    my ($self) = @_;

    $self->{processes} ||= do {
        open my $fh, '<', "$REPO/t/mock/processes.json" or croak $!;
        local $/;
        my $list = decode_json(<$fh>);
        +{ map { $_->{name} => $_ } @$list };
    };

    return $self->{processes};
}


sub id {
    my ($self, $name) = @_;
    my $p = $self->processes->{$name} or croak "no mock process \"$name\"";
    return $p->{id};
}


sub fixture_sha256 {
    my ($self, $file) = @_;
    open my $fh, '<:raw', "$REPO/t/fixtures/$file" or croak "$file: $!";
    local $/;
    return sha256_hex(<$fh>);
}


sub spawn {
    my ($self, $name, $out, @cmd) = @_;

    my $pid = fork // croak "fork: $!";

    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $out or die "$out: $!";
        open STDERR, '>&', \*STDOUT;
        setpgrp(0, 0);
        exec @cmd or die "exec $cmd[0]: $!";
    }

    $self->{pids}{$name} = $pid;
    return $pid;
}


sub wait_port {
    my ($self, $port, $name, $timeout) = @_;
    my $deadline = time + ($timeout || 10);

    while (time < $deadline) {
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port",
                                      Timeout => 1);
        return 1 if $s;

        my $pid = $self->{pids}{$name};
        if ($pid && waitpid($pid, WNOHANG) == $pid) {
            delete $self->{pids}{$name};
            croak "$name exited before listening on $port: "
                  . $self->slurp("$self->{dir}/logs/$name.out");
        }

        sleep 0.05;
    }

    croak "$name does not listen on $port";
}


sub start_mock {
    my ($self, %o) = @_;
    my $certs = $self->certs;
    my $port = $self->{mock_port} = free_port();

    my @tokens = map { ('--token', $_) } @{ $o{tokens} || [$TOKEN] };

    $self->spawn('mock', "$self->{dir}/logs/mock.out",
                 $^X, "$REPO/t/mock/unico.pl",
                 '--listen', "127.0.0.1:$port",
                 ($o{cert} ? ('--cert', "$certs/$o{cert}.pem",
                              '--key', "$certs/$o{cert}.key")
                           : ('--cert', "$certs/server.pem",
                              '--key', "$certs/server.key")),
                 '--fixtures', "$REPO/t/fixtures",
                 '--log', "$self->{dir}/logs/mock.log",
                 '--state', "$self->{dir}/state",
                 @tokens, @{ $o{args} || [] });

    $self->wait_port($port, 'mock');
    return $port;
}


sub mock_port { $_[0]{mock_port} }


# The configuration a test gives is the inside of http{}; these are
# replaced in it: %%MOCK%% (127.0.0.1:port of the mock), %%CERTS%%,
# %%CONF%% (the repository's conf/), %%PORT%%, %%DIR%%, %%REPO%%.
sub write_conf {
    my ($self, $http, %o) = @_;
    my $dir = $self->{dir};
    my $port = $self->{port} ||= free_port();
    my $workers = $o{workers} || 1;
    my $level = $o{log_level} || 'info';
    my $main = $o{main} // '';
    my $certs = $self->{mock_port} ? $self->certs : "$dir/certs";

    my %subst = (
        MOCK  => '127.0.0.1:' . ($self->{mock_port} || 9),
        CERTS => $certs,
        CONF  => "$REPO/conf",
        PORT  => $port,
        DIR   => $dir,
        REPO  => $REPO,
    );

    $http =~ s/%%(\w+)%%/exists $subst{$1} ? $subst{$1} : croak "%%$1%%"/ge;

    my $conf = <<"CONF";
load_module $self->{module};

worker_processes  $workers;
daemon            off;
master_process    on;
pid               $dir/nginx.pid;
error_log         $dir/logs/error.log $level;
$main

events {
    worker_connections  4096;
}

http {
    access_log  $dir/logs/access.log;

    client_body_temp_path  $dir/tmp/body;
    proxy_temp_path        $dir/tmp/proxy;
    fastcgi_temp_path      $dir/tmp/fastcgi;
    uwsgi_temp_path        $dir/tmp/uwsgi;
    scgi_temp_path         $dir/tmp/scgi;

    $http
}
CONF

    my $file = "$dir/nginx.conf";
    open my $fh, '>', $file or croak "$file: $!";
    print $fh $conf;
    close $fh;

    return $file;
}


# nginx -t on a configuration: (exit status, output).
sub nginx_t {
    my ($self, $http, %o) = @_;
    my $file = $self->write_conf($http, %o);

    my $out = `$self->{nginx} -t -p $self->{dir} -c $file -e $self->{dir}/logs/t.log 2>&1`;
    return ($? >> 8, $out . $self->slurp("$self->{dir}/logs/t.log"));
}


sub start_nginx {
    my ($self, $http, %o) = @_;
    return $self->run_nginx($self->write_conf($http, %o));
}


# Starts nginx on a whole configuration file of the test's own (with
# "daemon off" and listening on $self->port).
sub run_nginx {
    my ($self, $file, $prefix) = @_;
    $prefix //= $self->{dir};
    $self->{port} ||= free_port();

    $self->spawn('nginx', "$self->{dir}/logs/nginx.out",
                 $self->{nginx}, '-p', $prefix, '-c', $file,
                 '-e', "$self->{dir}/logs/error.log");

    $self->wait_port($self->{port}, 'nginx');
    return $self->{port};
}


# The usual server: a selfie location and the internal API location, as the
# README shows them.  Options: selfie => extra directives of the selfie
# location, api => extra directives of the API location, server => extra
# directives of the server, http => extra directives of http{}.
sub selfie_conf {
    my ($self, %o) = @_;
    my $token = $o{token} // $TOKEN;
    $token = length $token ? "unico_selfie_token  $token;" : '';
    $o{$_} //= '' for qw(selfie api server http);

    return <<"CONF";
    log_format  unico  '\$status \$unico_selfie_reason '
                       '\$unico_selfie_upstream_status "\$request"';
    $o{http}

    server {
        listen       127.0.0.1:%%PORT%%;
        access_log   %%DIR%%/logs/access.log unico;
        $o{server}

        location ~ ^/selfies/(?<unico_process>[^/]+)\$ {
            unico_selfie        \$unico_process;
            unico_selfie_api    /_unico_api;
            $token
            $o{selfie}
        }

        location /_unico_api/ {
            internal;
            include                        %%CONF%%/unico_selfie_api.conf;
            proxy_ssl_trusted_certificate  %%CERTS%%/ca.pem;
            proxy_ssl_name                 localhost;
            proxy_read_timeout             2s;
            $o{api}
            proxy_pass                     https://%%MOCK%%/;
        }

        location = /ping {
            return 200 "pong\\n";
        }
    }
CONF
}


# The internal location of a service account's token_api, for the server=>
# option of selfie_conf().
sub token_location {
    return <<'CONF';
        location /_unico_token/ {
            internal;
            include                        %%CONF%%/unico_selfie_token.conf;
            proxy_ssl_trusted_certificate  %%CERTS%%/ca.pem;
            proxy_ssl_name                 localhost;
            proxy_pass                     https://%%MOCK%%/;
        }
CONF
}


sub port { $_[0]{port} }


# One HTTP/1.1 request on a new connection: {status, headers, body}.
# The request line is sent as given, so paths are not normalised.
sub request {
    my ($self, $method, $path, %o) = @_;
    my $headers = $o{headers} || {};
    my $body = $o{body} // '';

    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:" . ($o{port}
                                              || $self->{port}),
                                  Timeout => 5)
        or croak "connect: $!";

    my $req = "$method $path HTTP/1.1\r\nHost: localhost\r\n"
              . "Connection: close\r\n";
    $req .= "$_: $headers->{$_}\r\n" for sort keys %$headers;
    $req .= "Content-Length: " . length($body) . "\r\n" if length $body;
    $req .= "\r\n$body";

    $s->syswrite($req);

    my ($raw, $sel) = ('', IO::Select->new($s));
    my $deadline = time + ($o{timeout} || 20);

    # read to the end of the response, as a browser would: its
    # Content-Length, or the close
    while (time < $deadline) {
        last unless $sel->can_read($deadline - time);
        my $n = $s->sysread(my $chunk, 65536);
        last unless $n;
        $raw .= $chunk;
        last if response_complete($raw, $method);
    }

    close $s;
    return parse_response($raw);
}


sub response_complete {
    my ($raw, $method) = @_;
    my $end = index $raw, "\r\n\r\n";
    return 0 if $end < 0;

    my $head = substr $raw, 0, $end;
    return 1 if $method eq 'HEAD' || $head =~ m{^HTTP/1\.[01] (?:1\d\d|204|304) };
    my ($len) = $head =~ /^Content-Length:\s*(\d+)\s*$/mi or return 0;
    return length($raw) - $end - 4 >= $len;
}


sub parse_response {
    my ($raw) = @_;
    my ($head, $body) = split /\r\n\r\n/, $raw, 2;
    $head //= '';

    my ($line, @lines) = split /\r\n/, $head;
    my ($status) = ($line // '') =~ m{^HTTP/1\.[01] (\d{3})};
    my %h;

    for (@lines) {
        my ($k, $v) = /^([^:]+):\s*(.*)$/ or next;
        $k = lc $k;
        $h{$k} = exists $h{$k} ? "$h{$k}, $v" : $v;
    }

    return { status => $status // 0, headers => \%h, body => $body // '',
             raw => $raw, head => $head };
}


sub get  { my ($self, $path, %o) = @_; $self->request('GET', $path, %o) }
sub head { my ($self, $path, %o) = @_; $self->request('HEAD', $path, %o) }


# Every request the mock received, oldest first, control calls left out.
sub mock_requests {
    my ($self) = @_;
    my $file = "$self->{dir}/logs/mock.log";
    return [] unless -f $file;

    open my $fh, '<', $file or croak $!;
    my @r = map { decode_json($_) } grep { /\S/ } <$fh>;
    return [ grep { $_->{path} !~ m{^/__mock} } @r ];
}


sub selfie_calls {
    my ($self) = @_;
    return scalar grep { $_->{path} =~ m{/selfie$} } @{ $self->mock_requests };
}


sub error_log { $_[0]->slurp("$_[0]{dir}/logs/error.log") }
sub access_log { $_[0]->slurp("$_[0]{dir}/logs/access.log") }


sub slurp {
    my ($self, $file) = @_;
    open my $fh, '<', $file or return '';
    local $/;
    return <$fh>;
}


sub stop {
    my ($self) = @_;
    my $pids = $self->{pids};

    # a test's forked child leaves the servers to its parent
    return if $$ != $self->{owner};

    for my $name (sort keys %$pids) {
        my $pid = $pids->{$name};

        # nginx: graceful stop (QUIT) lets workers exit and report leaks
        kill($name eq 'nginx' ? 'QUIT' : 'TERM', $pid);

        my $deadline = time + 10;
        while (time < $deadline && waitpid($pid, WNOHANG) != $pid) {
            sleep 0.05;
        }

        if (kill 0, $pid) {
            kill 'KILL', -$pid;
            kill 'KILL', $pid;
            waitpid($pid, 0);
        }

        kill 'KILL', -$pid;     # whatever is left of its process group
        delete $pids->{$name};
    }

    @live = grep { $_ != $self } @live;
}


# After the test: no crash, no alert, no sanitizer report anywhere, and
# the test token in no log line.
sub check_logs {
    my ($self) = @_;
    $self->check_logs_except;
}


# GETs every path on its own connection, all in flight together; the
# responses in the order of the paths.
sub concurrent_get {
    my ($self, @paths) = @_;
    my (%conn, %buf);
    my $sel = IO::Select->new;

    for my $i (0 .. $#paths) {
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$self->{port}")
            or croak "connect: $!";
        $s->syswrite("GET $paths[$i] HTTP/1.1\r\nHost: localhost\r\n"
                     . "Connection: close\r\n\r\n");
        $conn{fileno $s} = $i;
        $buf{$i} = '';
        $sel->add($s);
    }

    my $deadline = time + 120;

    while ($sel->count && time < $deadline) {
        for my $s ($sel->can_read(1)) {
            my $i = $conn{fileno $s};
            my $n = $s->sysread(my $chunk, 262144);

            if ($n) {
                $buf{$i} .= $chunk;
                next;
            }

            $sel->remove($s);
            close $s;
        }
    }

    return map { parse_response($buf{$_}) } 0 .. $#paths;
}


# POST /__mock/control: changes the mock's token endpoint at run time.
sub mock_control {
    my ($self, %set) = @_;
    require IO::Socket::SSL;

    my $json = JSON::PP->new->canonical->encode(\%set);
    my $s = IO::Socket::SSL->new(
        PeerAddr => "127.0.0.1:$self->{mock_port}",
        SSL_ca_file => $self->certs . '/ca.pem',
        SSL_verifycn_name => 'localhost',
    ) or croak "mock control: $IO::Socket::SSL::SSL_ERROR";

    print $s "POST /__mock/control HTTP/1.1\r\nHost: localhost\r\n"
             . "Content-Type: application/json\r\nConnection: close\r\n"
             . "Content-Length: " . length($json) . "\r\n\r\n$json";

    my $raw = do { local $/; <$s> };
    close $s;

    my $r = parse_response($raw // '');
    croak "mock control: $r->{status} $r->{body}" unless $r->{status} == 200;
    return $r;
}


# Calls to the token endpoint, from the mock's log.
sub token_calls {
    my ($self) = @_;
    return scalar grep { $_->{path} eq '/oauth2/token' }
                  @{ $self->mock_requests };
}


END {
    $_->stop for @live;
}


# --- signed URLs, files, metrics, curl (edge features) ---

# A signing key for tests: $n random-looking bytes, base64 (default 32).
sub signing_key {
    my ($self, $seed, $n) = @_;
    require MIME::Base64;
    my $bytes = substr(Digest::SHA::sha512("unico-test-key-$seed"), 0,
                       $n // 32);
    return MIME::Base64::encode_base64($bytes, '');
}


# The signed path of a selfie: /selfies/<id>?expires=<expires>&sig=<sig>,
# HMAC-SHA256 over lc(id) "\n" expires with the base64 key $key.
sub signed_path {
    my ($self, $key, $id, $expires, %o) = @_;
    require MIME::Base64;
    my $raw = MIME::Base64::decode_base64($key =~ tr{-_}{+/}r);
    my $sig = MIME::Base64::encode_base64url(
        Digest::SHA::hmac_sha256(lc($id) . "\n" . $expires, $raw));
    my $prefix = $o{prefix} // '/selfies/';
    return "$prefix$id?expires=$expires&sig=$sig";
}


# The image the mock serves with --selfie-prefix for $id: jpeg-small with
# a JPEG comment segment (FF FE, length, the lowercase processId) after SOI.
sub prefix_selfie {
    my ($self, $id) = @_;
    open my $fh, '<:raw', "$REPO/t/fixtures/selfie-360x480.jpg" or croak $!;
    my $jpeg = do { local $/; <$fh> };
    $id = lc $id;
    return substr($jpeg, 0, 2) . "\xFF\xFE" . pack('n', 2 + length $id)
           . $id . substr($jpeg, 2);
}


# Writes a file into the prefix: its path.
sub write_file {
    my ($self, $name, $content, $mode) = @_;
    my $file = "$self->{dir}/$name";
    open my $fh, '>:raw', $file or croak "$file: $!";
    print $fh $content;
    close $fh;
    chmod($mode // 0600, $file);
    return $file;
}


# GET a Prometheus text page: { "name{labels}" => value }, and the text.
sub metrics {
    my ($self, $path) = @_;
    my $r = $self->get($path // '/metrics');
    croak "metrics: status $r->{status}" unless $r->{status} == 200;
    my %m;
    for (split /\n/, $r->{body}) {
        next if /^#/ || !/\S/;
        my ($k, $v) = /^(\S+)\s+(\S+)$/ or croak "metrics line: $_";
        $m{$k} = $v;
    }
    return wantarray ? (\%m, $r->{body}) : \%m;
}


# Calls $code until it returns true or $timeout seconds (default 5) pass:
# its last value.  For what nginx writes in the log phase, just after a
# response has been read.
sub eventually {
    my ($self, $code, $timeout) = @_;
    my $deadline = time + ($timeout // 5);
    my $v;

    until (($v = $code->()) || time >= $deadline) {
        sleep 0.05;
    }

    return $v;
}


# curl with the given arguments: (exit status, headers, body).
sub curl {
    my ($self, @args) = @_;
    my $h = "$self->{dir}/curl.headers";
    my $b = "$self->{dir}/curl.body";
    unlink $h, $b;
    system('curl', '-sS', '--max-time', '20', '-D', $h, '-o', $b, @args);
    return ($? >> 8, $self->slurp($h), $self->slurp($b));
}


# --- faults and load (t/102-faults.t, t/112-reload-under-load.t, bench/soak) ---

# check_logs, except that lines matching one of @allowed (regexes) are
# expected: e.g. the [alert] of a worker the test killed itself.  The
# allowed lines seen are returned.
sub check_logs_except {
    my ($self, @allowed) = @_;
    $self->stop;

    my $log = join '', map { $self->slurp("$self->{dir}/logs/$_") }
                       qw(error.log nginx.out);
    my (@bad, @seen);

    for my $line (split /\n/, $log) {
        next unless $line =~ /\[(alert|emerg|crit)\]/
                    || $line =~ /AddressSanitizer|LeakSanitizer|runtime error:/
                    || $line =~ /exited on signal/;

        if (grep { $line =~ $_ } @allowed) {
            push @seen, $line;
        } else {
            push @bad, $line;
        }
    }

    ok(!@bad, 'no crash, alert or sanitizer report in the logs'
              . (@allowed ? ' but the expected ones' : ''))
        or diag(join "\n", @bad[0 .. ($#bad < 20 ? $#bad : 19)]);

    my $logs = $log . $self->access_log;
    unlike($logs, qr/\Q$TOKEN\E/, 'the gateway token is in no log line');

    return @seen;
}


# The pid of nginx's master (from its pid file), or undef.
sub master_pid {
    my ($self) = @_;
    my $pid = $self->slurp("$self->{dir}/nginx.pid");
    return $pid =~ /(\d+)/ ? $1 : undef;
}


# The pids of the master's children (workers), from /proc, sorted.
sub worker_pids {
    my ($self) = @_;
    my $master = $self->master_pid or return ();
    my @w;

    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $line = <$fh> // next;
        my ($pid, $ppid) = $line =~ /^(\d+) \(.*\) \S+ (\d+)/ or next;
        push @w, $pid if $ppid == $master;
    }

    return sort { $a <=> $b } @w;
}


# True for an nginx built with AddressSanitizer (TEST_NGINX_SANITIZED=1, or
# the binary carries the ASan runtime's entry point): timing bounds widen.
sub sanitized {
    my ($self) = @_;
    return $self->{sanitized} //= $ENV{TEST_NGINX_SANITIZED}
        || index($self->slurp($self->{nginx}), '__asan_init') >= 0 ? 1 : 0;
}


# Loads a copy of the module from the prefix: a rebuild during a long test
# rewrites the .so in place, under the running nginx.
sub private_module {
    my ($self) = @_;
    require File::Copy;
    my $copy = "$self->{dir}/ngx_http_unico_selfie_module.so";
    File::Copy::copy($self->{module}, $copy) or croak "copy module: $!";
    $self->{module} = $copy;
    return $copy;
}


1;
