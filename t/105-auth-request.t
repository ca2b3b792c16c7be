# auth_request in the selfie location: its verdict comes first, Unico is
# called only when it allows, and it combines with signed URLs.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use Test::More;
use Time::HiRes qw(time);
use UnicoTest;

my $t = UnicoTest->new;
my $key = $t->signing_key('auth');
$t->write_file('keys', "$key\n");

$t->start_mock;
$t->start_nginx($t->selfie_conf(
    selfie => 'auth_request  /auth;',
    server => <<'CONF',
        location = /auth {
            internal;

            if ($http_x_session = "let-me-in") {
                return 204;
            }

            return 401;
        }

        # both: the session and a signed URL
        location ~ ^/both/(?<both_process>[^/]+)$ {
            auth_request                 /auth;
            unico_selfie                 $both_process;
            unico_selfie_api             /_unico_api;
            unico_selfie_token           test-token-2b7e1516.28aed2a6;
            unico_selfie_signature_keys  %%DIR%%/keys;
        }
CONF
));

my $id = $t->id('jpeg-medium');
my $sha = $t->fixture_sha256('selfie-720x960.jpg');
my $exp = int(time) + 300;

my $before = $t->selfie_calls;
my $r = $t->get("/selfies/$id");
is($r->{status}, 401, 'auth_request says 401: the client gets 401');
$r = $t->get("/selfies/$id", headers => { 'X-Session' => 'wrong' });
is($r->{status}, 401, 'a wrong session: 401');
is($t->selfie_calls, $before, 'Unico not called');

$r = $t->get("/selfies/$id", headers => { 'X-Session' => 'let-me-in' });
is($r->{status}, 200, 'auth_request says 204: 200');
is(sha256_hex($r->{body}), $sha, '... the image, byte-exact');
is($t->selfie_calls, $before + 1, '... after one call to Unico');

$r = $t->head("/selfies/$id", headers => { 'X-Session' => 'let-me-in' });
is($r->{status}, 200, 'HEAD through auth_request: 200');
is($r->{headers}{'content-length'}, -s "$FindBin::Bin/fixtures/selfie-720x960.jpg",
   '... with the Content-Length');

# with a signed URL too

$before = $t->selfie_calls;
my $signed = $t->signed_path($key, $id, $exp, prefix => '/both/');

$r = $t->get($signed);
is($r->{status}, 401, 'signed, no session: 401');

$r = $t->get("/both/$id", headers => { 'X-Session' => 'let-me-in' });
is($r->{status}, 403, 'session, no signature: 403');

is($t->selfie_calls, $before, 'Unico not called for either');

$r = $t->get($signed, headers => { 'X-Session' => 'let-me-in' });
is($r->{status}, 200, 'session and signature: 200');
is(sha256_hex($r->{body}), $sha, '... byte-exact');

like($t->access_log, qr/^401 - - "GET \/selfies\//m,
     'access log: the 401 has no reason, the module was not reached');

$t->check_logs;

done_testing;
