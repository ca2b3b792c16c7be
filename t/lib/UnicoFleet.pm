package UnicoFleet;

# A fleet on 127.0.0.1 for the fleet tests (t/250-fleet.t,
# t/251-fleet-budget.t): the mock Unico, shield nginx with the module (each
# its own UnicoTest prefix, as separate hosts would have), edge nginx that
# pick a shield by `hash $unico_process consistent`, and optionally an
# nginx playing the CDN in front of the first edge.  The configurations
# are the ones docs/fleet.md shows.  Everything started is stopped by
# UnicoTest (each object stops its own processes, also when a test dies).

use strict;
use warnings;

use Carp qw(croak);
use Digest::SHA qw(sha256_hex);
use File::Copy qw(copy);
use File::Path qw(remove_tree);
use IO::Select;
use IO::Socket::INET;
use JSON::PP qw(decode_json);
use MIME::Base64 qw(decode_base64url);
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);
use UnicoTest;

our $ISS = 'gateway@tenant-7f3a.iam.acesso.io';
our $AUD = 'https://identityhomolog.acesso.io';
our $PREFIX = 'f1ee7000';      # the mock's --selfie-prefix

# The reasons a shield answers that another shield can fix
# (docs/status-codes.md): the shield maps them to 429, which the module
# never sends itself, and the edge retries 429 on the next shield.
our $LOCAL = join ' ', qw(token_failed token_unavailable token_timeout
                          over_budget internal no_token bad_token);

my @shm;        # CDN cache directories on tmpfs, removed at exit
END { remove_tree($_) for grep { -d } @shm }


# $n processIds that the mock serves (--selfie-prefix), fixed per $tag.
sub ids {
    my ($n, $tag) = @_;
    return map {
        my $h = sha256_hex("fleet-$tag-$_");
        sprintf '%s-%s-4%s-8%s-%s', $PREFIX, substr($h, 0, 4),
                substr($h, 4, 3), substr($h, 7, 3), substr($h, 10, 12);
    } 1 .. $n;
}


# start(%o): shields => 3, edges => 2, workers => 1 (per shield),
# account => 1 (a service account, each shield its own instance; 0: the
# mock's static token), budget => 'unico_selfie_budget ...;' (each shield),
# mock => [extra mock options], broken_token => [shield indexes whose
# token endpoint is unreachable], cdn => 1.
sub start {
    my ($class, %o) = @_;
    $o{shields} //= 3;
    $o{edges} //= 2;
    $o{account} //= 1;

    my $self = bless { o => \%o }, $class;

    my $m = $self->{mock} = UnicoTest->new;
    my $certs = $m->certs;
    $m->start_mock(
        tokens => $o{account} ? [] : [$UnicoTest::TOKEN],
        args => ['--public-key', "$certs/sa.pub.pem", '--issuer', $ISS,
                 '--audience', $AUD, '--selfie-prefix', $PREFIX,
                 @{ $o{mock} || [] }]);

    # ports first: every edge names every shield
    for my $i (0 .. $o{shields} - 1) {
        my $s = UnicoTest->new;
        mkdir $s->dir . '/certs';
        copy($_, $s->dir . '/certs/') for glob "$certs/*";
        $s->{mock_port} = $m->mock_port;
        $s->{port} = UnicoTest::free_port();
        $s->{index} = $i;
        push @{ $self->{shields} }, $s;
    }

    $self->write_keys($o{keys} || [UnicoTest->signing_key('fleet-old')]);
    $self->start_shield($_) for 0 .. $o{shields} - 1;

    for my $i (0 .. $o{edges} - 1) {
        my $e = UnicoTest->new;
        $e->start_nginx($self->edge_conf);
        push @{ $self->{edges} }, $e;
    }

    if ($o{cdn}) {
        my $c = $self->{cdn} = UnicoTest->new;
        my $shm = '/dev/shm/' . (split m{/}, $c->dir)[-1];
        push @shm, $shm;
        $c->start_nginx($self->cdn_conf($shm));
        $self->{cdn_shm} = $shm;
    }

    return $self;
}


sub mock { $_[0]{mock} }
sub shields { @{ $_[0]{shields} } }
sub edges { @{ $_[0]{edges} } }
sub cdn { $_[0]{cdn} }


# The same signing key file on every shield (as configuration management
# would put it on every host).
sub write_keys {
    my ($self, $keys) = @_;
    $_->write_file('signature.keys', join('', map { "$_\n" } @$keys))
        for $self->shields;
}


sub shield_conf {
    my ($self, $s) = @_;
    my %o = %{ $self->{o} };
    my $i = $s->{index};
    my $budget = $o{budget} // '';
    my $token_pass = (grep { $_ == $i } @{ $o{broken_token} || [] })
                     ? '127.0.0.1:' . $self->closed_port
                     : '%%MOCK%%';

    my ($cred, $account) = $o{account}
        ? ('unico_selfie_account fleet;', <<"CONF")
    unico_selfie_service_account fleet {
        key_file     %%CERTS%%/sa.key;
        issuer       $ISS;
        environment  sandbox;
        token_api    /_unico_token;
        instance     shield-$i;
    }
CONF
        : ("unico_selfie_token $UnicoTest::TOKEN;", '');

    my $local = join "\n", map { "        $_ 1;" } split / /, $LOCAL;
    my $errors = 'error_page 502 = @unico_502; error_page 503 = @unico_503;'
                 . ' error_page 504 = @unico_504;';

    return $s->selfie_conf(
        token => '',
        selfie => "$cred\n unico_selfie_cache selfies;\n $errors",
        http => <<"CONF",
$account
    unico_selfie_cache_zone  selfies:16m ttl=300s;
    $budget

    map \$unico_selfie_reason \$unico_shield_local {
        default  0;
$local
    }
CONF
        server => <<"CONF");
        add_header  X-Unico-Selfie-Reason  \$unico_selfie_reason  always;

        location \@unico_502 { if (\$unico_shield_local) { return 429; } return 502; }
        location \@unico_503 { if (\$unico_shield_local) { return 429; } return 503; }
        location \@unico_504 { if (\$unico_shield_local) { return 429; } return 504; }

        location ~ ^/signed/(?<unico_process>[^/]+)\$ {
            unico_selfie                 \$unico_process;
            unico_selfie_api             /_unico_api;
            $cred
            unico_selfie_cache           selfies;
            unico_selfie_signature_keys  %%DIR%%/signature.keys;
            unico_selfie_cache_control   "public, max-age=60";
            $errors
        }

        location /_unico_token/ {
            internal;
            include                        %%CONF%%/unico_selfie_token.conf;
            proxy_ssl_trusted_certificate  %%CERTS%%/ca.pem;
            proxy_ssl_name                 localhost;
            proxy_pass                     https://$token_pass/;
        }
CONF
}


# A loopback port nobody listens on: connections are refused.
sub closed_port {
    my ($self) = @_;
    return $self->{closed_port} //= UnicoTest::free_port();
}


sub start_shield {
    my ($self, $i) = @_;
    my $s = $self->{shields}[$i];
    $s->start_nginx($self->shield_conf($s),
                    workers => $self->{o}{workers} || 1);
}


sub edge_conf {
    my ($self) = @_;
    my $servers = join "\n", map {
        "        server 127.0.0.1:" . $_->port
        . " max_fails=1 fail_timeout=1s;"
    } $self->shields;

    return <<"CONF";
    upstream shields {
        hash \$unico_process consistent;
$servers
        keepalive  16;
    }

    log_format  edge  '\$status "\$upstream_status" "\$upstream_addr" '
                      '\$upstream_http_x_unico_selfie_reason "\$request"';

    server {
        listen       127.0.0.1:%%PORT%%;
        access_log   %%DIR%%/logs/access.log edge;

        location ~ ^/(?:selfies|signed)/(?<unico_process>[^/]+)\$ {
            proxy_pass                  http://shields;
            proxy_http_version          1.1;
            proxy_set_header            Connection "";
            proxy_next_upstream         error timeout http_429;
            proxy_next_upstream_tries   3;
            proxy_connect_timeout       1s;
            proxy_read_timeout          30s;
            proxy_hide_header           X-Unico-Selfie-Reason;
            proxy_intercept_errors      on;
            error_page                  429 = \@fleet_busy;
        }

        location \@fleet_busy {
            add_header  Retry-After 1 always;
            return      503;
        }
    }
CONF
}


sub cdn_conf {
    my ($self, $shm) = @_;
    my $edge = $self->{edges}[0]->port;

    return <<"CONF";
    proxy_cache_path  $shm  keys_zone=selfie_cdn:4m max_size=64m
                      inactive=60s use_temp_path=off;

    log_format  cdn  '\$status \$upstream_cache_status "\$request"';

    server {
        listen       127.0.0.1:%%PORT%%;
        access_log   %%DIR%%/logs/access.log cdn;

        location /signed/ {
            proxy_cache             selfie_cdn;
            proxy_cache_key         \$uri?\$args;
            proxy_cache_valid       200 60s;
            proxy_cache_valid       any 0;
            proxy_cache_lock        on;
            proxy_cache_lock_timeout 10s;
            proxy_ignore_headers    Set-Cookie;
            add_header              X-Cache-Status \$upstream_cache_status always;
            proxy_pass              http://127.0.0.1:$edge;
        }
    }
CONF
}


# Sends every request at once, each on its own connection: [port, path]
# pairs.  $hook->() runs once after $at requests have been written (while
# the first ones are in flight).  The responses, in order.
sub fire {
    my ($self, $reqs, %o) = @_;
    my (%conn, %buf);
    my $sel = IO::Select->new;

    for my $i (0 .. $#$reqs) {
        my ($port, $path) = @{ $reqs->[$i] };
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port")
            or croak "connect: $!";
        $s->syswrite("GET $path HTTP/1.1\r\nHost: localhost\r\n"
                     . "Connection: close\r\n\r\n");
        $conn{fileno $s} = $i;
        $buf{$i} = '';
        $sel->add($s);
        $o{hook}->() if $o{hook} && $i + 1 == $o{at};
    }

    my $deadline = time + ($o{timeout} || 60);

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

    return map { UnicoTest::parse_response($buf{$_}) } 0 .. $#$reqs;
}


# Every id $n times, alternating over the edges, interleaved.
sub spread {
    my ($self, $n, @ids) = @_;
    my @ports = map { $_->port } $self->edges;
    my ($k, @r) = (0);
    for my $round (1 .. $n) {
        for my $id (@ids) {
            push @r, [$ports[$k++ % @ports], "/selfies/$id"];
        }
    }
    return \@r;
}


# The mock's selfie calls (whole log entries), from entry $from on.
sub calls {
    my ($self, $from) = @_;
    my @c = grep { $_->{kind} eq 'selfie' } @{ $self->{mock}->mock_requests };
    @c = @c[($from // 0) .. $#c];
    return wantarray ? @c : scalar @c;      # in scalar context: how many
}


sub call_ids {
    my ($self, $from) = @_;
    return map { $_->{path} =~ m{/process/([^/]+)/selfie} ? lc $1 : () }
           $self->calls($from);
}


# The mock's GET /__mock/stats.
sub stats {
    my ($self) = @_;
    require IO::Socket::SSL;
    my $m = $self->{mock};
    my $s = IO::Socket::SSL->new(
        PeerAddr => '127.0.0.1:' . $m->mock_port,
        SSL_ca_file => $m->certs . '/ca.pem',
        SSL_verifycn_name => 'localhost',
    ) or croak 'mock stats: ' . IO::Socket::SSL::errstr();
    print $s "GET /__mock/stats HTTP/1.1\r\nHost: localhost\r\n"
             . "Connection: close\r\n\r\n";
    my $raw = do { local $/; <$s> };
    close $s;
    my $r = UnicoTest::parse_response($raw // '');
    croak "mock stats: $r->{status}" unless $r->{status} == 200;
    return decode_json($r->{body});
}


# The mock's token calls and their claims.
sub token_claims {
    my ($self) = @_;
    return map {
        my ($c) = $_->{body} =~ /assertion=[\w-]+\.([\w-]+)\./;
        decode_json(decode_base64url($c));
    } grep { $_->{kind} eq 'token' } @{ $self->{mock}->mock_requests };
}


# id => shield index, from the shields' access logs (every 200).
sub homes {
    my ($self) = @_;
    my %home;
    for my $s ($self->shields) {
        for (split /\n/, $s->access_log) {
            $home{lc $1}{ $s->{index} } = 1
                if m{^200 ok \S+ "GET /selfies/([0-9a-fA-F-]+) };
        }
    }
    return \%home;
}


# Kills a shield's master and workers at once (a host that dies).
sub kill_shield {
    my ($self, $i) = @_;
    my $s = $self->{shields}[$i];
    my $pid = delete $s->{pids}{nginx} or croak "shield $i is not running";
    kill 'KILL', -$pid;
    kill 'KILL', $pid;
    waitpid $pid, 0;
}


# A reload of every shield (SIGHUP), returning once each runs only
# workers of the new configuration.
sub reload_shields {
    my ($self) = @_;
    for my $s ($self->shields) {
        my @old = $s->worker_pids;
        kill 'HUP', $s->master_pid;
        my $deadline = time + 10;
        while (time < $deadline) {
            my @now = $s->worker_pids;
            my %old = map { $_ => 1 } @old;
            last if @now == ($self->{o}{workers} || 1)
                    && !grep { $old{$_} } @now;
            sleep 0.05;
        }
    }
}


sub stop {
    my ($self) = @_;
    $_->stop for grep { defined } $self->{cdn}, $self->edges, $self->shields,
                                  $self->{mock};
}


# check_logs of every process (crashes, alerts, the token), then stop.
sub check_logs {
    my ($self) = @_;
    $_->check_logs for grep { defined } $self->{cdn}, $self->edges,
                                        $self->shields, $self->{mock};
}


1;
