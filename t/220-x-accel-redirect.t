# X-Accel-Redirect from upstream (a misconfigured proxy in front of Unico,
# or its token endpoint): the shipped includes ignore it, and a location
# written without them fails the call cleanly (502, reason "redirected")
# instead of sending the redirect target's output to the client before any
# status line.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use IO::Select;
use IO::Socket::INET;
use Test::More;
use UnicoTest;

my $ISS = 'gateway@tenant-7f3a.iam.acesso.io';
my $AUD = 'https://identityhomolog.acesso.io';

# A location as a user might write it by hand: no proxy_ignore_headers.
my $raw_proxy = <<'CONF';
            internal;
            proxy_pass_request_headers     off;
            proxy_pass_request_body        off;
            proxy_set_header               Authorization $unico_selfie_authorization;
            proxy_max_temp_file_size       0;
            proxy_ssl_verify               on;
            proxy_ssl_trusted_certificate  %%CERTS%%/ca.pem;
            proxy_ssl_name                 localhost;
CONF

my $leak = <<'CONF';
        location /leak {
            return 200 "LEAKED-REDIRECT-TARGET\n";
        }
CONF


# Two requests on one keep-alive connection: both responses, parsed.
sub two_on_one {
    my ($t, $first, $second) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->port,
                                  Timeout => 5) or die "connect: $!";
    my $sel = IO::Select->new($s);
    my @r;

    for my $path ($first, $second) {
        $s->syswrite("GET $path HTTP/1.1\r\nHost: localhost\r\n\r\n");
        my $raw = '';
        while ($sel->can_read(10)) {
            $s->sysread(my $chunk, 65536) or last;
            $raw .= $chunk;
            last if UnicoTest::response_complete($raw, 'GET');
        }
        push @r, UnicoTest::parse_response($raw);
    }

    return @r;
}


# --- Get Selfie answers with X-Accel-Redirect ---

{
    my $t = UnicoTest->new;
    $t->start_mock;
    $t->start_nginx($t->selfie_conf(server => $leak . <<"CONF"));
        location /_raw_api/ {
$raw_proxy
            proxy_pass                     https://%%MOCK%%/;
        }

        location ~ ^/raw/(?<raw_process>[^/]+)\$ {
            unico_selfie        \$raw_process;
            unico_selfie_api    /_raw_api;
            unico_selfie_token  $UnicoTest::TOKEN;
        }
CONF

    $t->mock_control(x_accel_redirect => '/leak');
    my $id = $t->id('jpeg-small');

    my $r = $t->get("/selfies/$id");
    is($r->{status}, 200, 'shipped include: X-Accel-Redirect ignored, 200');
    is(sha256_hex($r->{body}), $t->fixture_sha256('selfie-360x480.jpg'),
       'shipped include: byte-exact');

    my ($bad, $ping) = two_on_one($t, "/raw/$id", '/ping');
    is($bad->{status}, 502, 'location without the include: 502');
    unlike($bad->{raw}, qr/LEAKED/, 'the redirect target never reaches the client');
    like($bad->{raw}, qr{^HTTP/1\.1 502 }, 'the status line comes first');
    is($ping->{status}, 200, 'the connection goes on: the next request on it');
    is($ping->{body}, "pong\n", 'and its body is its own');

    like($t->access_log, qr/^502 redirected /m, 'reason: redirected');
    like($t->error_log, qr/X-Accel-Redirect redirected the call to Unico/,
         'the log line says what to fix');

    $t->check_logs;
}


# --- the token endpoint answers with X-Accel-Redirect ---

for my $case (['shipped include', '%%CONF%%/unico_selfie_token.conf', 200],
              ['location without the include', undef, 502])
{
    my ($name, $include, $status) = @$case;
    my $t = UnicoTest->new;
    my $certs = $t->certs;

    $t->start_mock(tokens => [], args => [
        '--public-key', "$certs/sa.pub.pem", '--issuer', $ISS,
        '--audience', $AUD]);

    my $token_loc = $include ? <<"CONF" : <<"CONF2";
            internal;
            include                        $include;
            proxy_ssl_trusted_certificate  %%CERTS%%/ca.pem;
            proxy_ssl_name                 localhost;
CONF
$raw_proxy
            proxy_method                   POST;
            proxy_set_body                 \$unico_selfie_token_body;
            proxy_set_header  Content-Type application/x-www-form-urlencoded;
CONF2

    $t->start_nginx($t->selfie_conf(
        token => '',
        selfie => 'unico_selfie_account sandbox;',
        http => <<"CONF",
    unico_selfie_service_account sandbox {
        key_file     %%CERTS%%/sa.key;
        issuer       $ISS;
        environment  sandbox;
        token_api    /_unico_token;
    }
CONF
        server => $leak . <<"CONF"));
        location /_unico_token/ {
$token_loc
            proxy_pass                     https://%%MOCK%%/;
        }
CONF

    # only the token endpoint misbehaves: Get Selfie is reached directly
    $t->mock_control(x_accel_redirect => '/leak');

    my ($r, $ping) = two_on_one($t, '/selfies/' . $t->id('jpeg-small'),
                                '/ping');

    if ($status == 200) {
        # the selfie call got the header too and ignored it as well
        is($r->{status}, 200, "token, $name: 200");
    } else {
        is($r->{status}, 502, "token, $name: 502");
        like($t->access_log, qr/^502 token_failed /m,
             "token, $name: reason token_failed");
    }

    unlike($r->{raw}, qr/LEAKED/, "token, $name: the target never leaks");
    is($ping->{body}, "pong\n", "token, $name: the connection goes on");

    $t->check_logs;
}


done_testing;
