# Configuration: nginx -t says what is missing; unico_selfie_max_size is
# the only size knob; settings inherit from http{} and server{}.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use Test::More;
use UnicoTest;

my $t = UnicoTest->new;

sub conf_t {
    my ($body) = @_;
    return $t->nginx_t(<<"CONF");
    server {
        listen 127.0.0.1:%%PORT%%;
        $body
    }
CONF
}

my ($rc, $out) = conf_t(<<'CONF');
        location /s {
            unico_selfie        $arg_id;
            unico_selfie_token  abc;
        }
CONF
isnt($rc, 0, 'no unico_selfie_api: nginx -t fails');
like($out, qr/"unico_selfie" in \S+nginx\.conf:\d+ needs "unico_selfie_api"/,
     'no unico_selfie_api: the message names the directive and the place');

($rc, $out) = conf_t(<<'CONF');
        location /s {
            unico_selfie      $arg_id;
            unico_selfie_api  /_unico_api;
        }
CONF
isnt($rc, 0, 'no token: nginx -t fails');
like($out, qr/"unico_selfie" in \S+:\d+ needs "unico_selfie_token"/,
     'no token: the message says so');

($rc, $out) = conf_t(<<'CONF');
        location /s {
            unico_selfie        $arg_id;
            unico_selfie_api    _unico_api;
            unico_selfie_token  abc;
        }
CONF
isnt($rc, 0, 'relative unico_selfie_api: nginx -t fails');
like($out, qr/must be a URI prefix that starts with "\/"/,
     'relative unico_selfie_api: the message says why');

($rc, $out) = conf_t(<<'CONF');
        location /s {
            unico_selfie        $arg_id;
            unico_selfie        $arg_x;
            unico_selfie_api    /_unico_api;
            unico_selfie_token  abc;
        }
CONF
isnt($rc, 0, 'unico_selfie twice: nginx -t fails');
like($out, qr/"unico_selfie" directive is duplicate/, 'duplicate: said');

($rc, $out) = conf_t(<<'CONF');
        location /s {
            unico_selfie           $arg_id;
            unico_selfie_api       /_unico_api;
            unico_selfie_token     abc;
            unico_selfie_max_size  lots;
        }
CONF
isnt($rc, 0, 'bad size: nginx -t fails');
like($out, qr/"unico_selfie_max_size" directive invalid value/,
     'bad size: said');

($rc, $out) = conf_t(<<'CONF');
        unico_selfie_api       /_unico_api/;
        unico_selfie_token     $http_x_token;
        unico_selfie_max_size  1m;

        location /s {
            unico_selfie  $arg_id;
        }
CONF
is($rc, 0, 'api, token and size inherited from server{}: nginx -t passes')
    or diag($out);

# unico_selfie_max_size alone governs: raised far above the default and
# above anything subrequest_output_buffer_size says, a 6 MiB image passes;
# lowered, a 333 KB one is refused
$t->start_mock;
$t->start_nginx($t->selfie_conf(server => <<'CONF'));
        location ~ ^/small/(?<sid>[^/]+)$ {
            unico_selfie           $sid;
            unico_selfie_api       /_unico_api/;
            unico_selfie_token     test-token-2b7e1516.28aed2a6;
            unico_selfie_max_size  100k;
        }

        location ~ ^/big/(?<sid>[^/]+)$ {
            unico_selfie           $sid;
            unico_selfie_api       /_unico_api;
            unico_selfie_token     test-token-2b7e1516.28aed2a6;
            unico_selfie_max_size  8m;
        }
CONF

my $r = $t->get('/big/' . $t->id('huge'));
is($r->{status}, 200, 'max_size 8m: a 6 MiB image is served');
is(length $r->{body}, 6291456, 'max_size 8m: all 6 MiB of it');

$r = $t->get('/small/' . $t->id('jpeg-large'));
is($r->{status}, 502, 'max_size 100k: the 333 KB selfie is refused');
like($t->error_log, qr/reason: response_too_large/,
     'max_size 100k: refused before reading it whole');

$r = $t->get('/small/' . $t->id('jpeg-medium'));
is($r->{status}, 200, 'max_size 100k: the 87 KB selfie is served');
is(sha256_hex($r->{body}), $t->fixture_sha256('selfie-720x960.jpg'),
   'max_size 100k: byte-exact');

# a chunked answer has no Content-Length: bounded while it arrives
$r = $t->get('/small/' . $t->id('chunked'));
is($r->{status}, 200, 'max_size 100k: chunked 87 KB served');

$t->check_logs;

done_testing;
