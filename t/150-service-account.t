# Service accounts: the module signs the assertion, exchanges it once for
# every worker, keeps the token in shared memory across reloads, refreshes
# ahead of expiry in the background, retries a 401 once with a new token,
# and backs off when the token endpoint fails.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use Test::More;
use Time::HiRes qw(sleep time);
use UnicoTest;

my $ISS = 'gateway@tenant-7f3a.iam.acesso.io';
my $AUD = 'https://identityhomolog.acesso.io';

sub account_conf {
    my ($t, %o) = @_;
    my $extra = $o{account} // '';

    return $t->selfie_conf(
        token => '',
        selfie => "unico_selfie_account sandbox;",
        http => <<"CONF",
    unico_selfie_service_account sandbox {
        key_file     %%CERTS%%/sa.key;
        issuer       $ISS;
        environment  sandbox;
        token_api    /_unico_token;
        $extra
    }
CONF
        server => <<'CONF');
        location /_unico_token/ {
            internal;
            include                        %%CONF%%/unico_selfie_token.conf;
            proxy_ssl_trusted_certificate  %%CERTS%%/ca.pem;
            proxy_ssl_name                 localhost;
            proxy_read_timeout             2s;
            proxy_pass                     https://%%MOCK%%/;
        }
CONF
}

sub start {
    my (%o) = @_;
    my $t = UnicoTest->new;
    my $certs = $t->certs;

    $t->start_mock(tokens => [], args => [
        '--public-key', "$certs/sa.pub.pem", '--issuer', $ISS,
        '--audience', $AUD, @{ $o{mock} || [] }]);

    $t->start_nginx(account_conf($t, %o), workers => $o{workers} || 1,
                    log_level => $o{log_level} || 'info');
    return $t;
}

my $sha_small = UnicoTest->can('fixture_sha256')->(undef, 'selfie-360x480.jpg');

# 4 workers, 200 cold concurrent requests: one token call
{
    my $t = start(workers => 4, log_level => 'debug',
                  mock => ['--token-ttl', 3600]);
    $t->mock_control(token_delay => 0.5);

    my @r = $t->concurrent_get(('/selfies/' . $t->id('jpeg-small')) x 200);
    my $ok = grep { $_->{status} == 200 && sha256_hex($_->{body}) eq $sha_small }
             @r;

    is($ok, 200, '200 cold concurrent requests on 4 workers: all byte-exact');
    is($t->token_calls, 1, 'exactly one token request for them');

    my $call = (grep { $_->{path} eq '/oauth2/token' }
                @{ $t->mock_requests })[0];
    is($call->{method}, 'POST', 'token request: POST');
    like($call->{headers}{'content-type'},
         qr{^application/x-www-form-urlencoded}, 'token request: form');
    like($call->{body},
         qr/^grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=[\w-]+\.[\w-]+\.[\w-]+$/,
         'token request: the JWT bearer grant');
    ok(!exists $call->{headers}{cookie} && !exists $call->{headers}{authorization},
       'token request: nothing of the client');

    # the claims, exactly as documented
    my ($h, $c) = map { JSON::PP::decode_json(decode_b64url($_)) }
                  ($call->{body} =~ /assertion=([\w-]+)\.([\w-]+)\./);
    is_deeply($h, { alg => 'RS256', typ => 'JWT' }, 'JWT header');
    is_deeply([sort keys %$c], [qw(aud exp iat iss scope)],
              'JWT claims: exactly iss, aud, scope, iat, exp');
    is($c->{iss}, $ISS, 'iss');
    is($c->{aud}, $AUD, 'aud: the sandbox identity service');
    is($c->{scope}, '*', 'scope');
    cmp_ok($c->{exp} - $c->{iat}, '<=', 3600, 'exp - iat <= 3600');

    # every selfie call used the minted token
    my @auth = map { $_->{headers}{authorization} }
               grep { $_->{path} =~ /selfie$/ } @{ $t->mock_requests };
    my %distinct = map { $_ => 1 } @auth;
    is(scalar keys %distinct, 1, 'every worker used the same token');

    # a reload with the same account keeps the token
    my $master = $t->{pids}{nginx};
    kill 'HUP', $master;
    sleep 1.5;
    is($t->get('/selfies/' . $t->id('jpeg-small'))->{status}, 200,
       'after a reload: 200');
    is($t->token_calls, 1, 'after a reload: still one token request');

    # no secret in the debug log: tokens, assertions, key material
    my ($token) = keys %distinct;
    $token =~ s/^Bearer //;
    my ($assertion) = $call->{body} =~ /assertion=(\S+)/;
    my @key = grep { length > 20 && !/-----/ }
              split /\n/, $t->slurp($t->certs . '/sa.key');

    my $log = $t->error_log . $t->access_log;
    like($log, qr/\[debug\]/, 'the error log is at debug level');
    unlike($log, qr/\Q$token\E/, 'the access token is never logged');
    unlike($log, qr/\Q$assertion\E/, 'the assertion is never logged');
    unlike($log, qr/\Q$_\E/, 'no key material logged') for @key[0 .. 2];
    unlike($log, qr/eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9/,
           'no JWT header logged');

    $t->check_logs;
}

# expires_in as a string; a 401 once: one refresh, then 200
{
    my $t = start(mock => ['--expires-in-string']);

    is($t->get('/selfies/' . $t->id('jpeg-small'))->{status}, 200,
       'expires_in as a string: 200');
    is($t->token_calls, 1, 'one token request');

    sleep 1.1;      # the next assertion is minted in another second

    my $r = $t->get('/selfies/' . $t->id('401-once'));
    is($r->{status}, 200, '401 once: refreshed, retried, 200');
    is(sha256_hex($r->{body}), $sha_small, '401 once: byte-exact');
    is($t->token_calls, 2, '401 once: exactly one more token request');

    # always 401: one refresh and one retry, then 502
    my $start = time;
    $r = $t->get('/selfies/' . $t->id('status-401'));
    is($r->{status}, 502, '401 always: 502');
    is($t->token_calls, 3, '401 always: one more token request, no more');
    like($t->error_log, qr/reason: unico_401/, '401 always: logged');

    # a revoked token: the next request refreshes and succeeds
    $t->mock_control(revoke_tokens => JSON::PP::true);
    sleep 1.1;
    is($t->get('/selfies/' . $t->id('jpeg-medium'))->{status}, 200,
       'revoked token: refreshed and served');
    is($t->token_calls, 4, 'revoked token: one token request');

    $t->check_logs;
}

# refresh ahead: a 4 s token is refreshed after 2 s, in the background
{
    my $t = start(mock => ['--token-ttl', 4]);

    is($t->get('/selfies/' . $t->id('jpeg-small'))->{status}, 200,
       'short-lived token: first request');

    # from now on a token request takes 1 s: a request that waited for
    # one would take that long
    $t->mock_control(token_delay => 1);

    my ($max, $n) = (0, 0);
    my $end = time + 7;
    while (time < $end) {
        my $start = time;
        my $r = $t->get('/selfies/' . $t->id('jpeg-small'));
        my $took = time - $start;
        $max = $took if $took > $max;
        $n++ if $r->{status} == 200;
        sleep 0.2;
    }

    cmp_ok($t->token_calls, '>=', 3, 'refreshed ahead of expiry, repeatedly');
    cmp_ok($t->token_calls, '<=', 6, 'but not more than needed');
    cmp_ok($max, '<', 0.9, sprintf('no request waited (slowest %.0f ms)',
                                   $max * 1000));
    ok($n > 10, "all $n requests served");

    $t->check_logs;
}

# token endpoint failures: 502 with the Unico code, backing off, recovery
{
    my $t = start();
    $t->mock_control(token_mode => 'error-1.2.18');

    my $r = $t->get('/selfies/' . $t->id('jpeg-small'));
    is($r->{status}, 502, 'account locked (1.2.18): 502');
    like($t->error_log, qr/\[error\].*Unico error 1\.2\.18/,
         'the Unico error code is logged');
    like($t->error_log, qr/reason: token_failed/, 'reason token_failed');

    # within the back-off (1 s after a first failure), no further attempt:
    # requests for half of it, however many a loaded machine manages
    my ($n, $until) = (0, time + 0.5);
    while (time < $until) {
        $t->get('/selfies/' . $t->id('jpeg-small'));
        $n++;
    }
    is($t->token_calls, 1,
       "backing off: no new token request for $n requests");
    like($t->error_log, qr/reason: token_unavailable/,
         'backing off: reason token_unavailable');

    # down for ~6 s: attempts back off (1, 2, 4 s)
    $t->mock_control(token_mode => 'down');
    my $end = time + 6;
    my %status;
    while (time < $end) {
        $status{ $t->get('/selfies/' . $t->id('jpeg-small'))->{status} }++;
        sleep 0.1;
    }
    is_deeply([keys %status], [502], 'down: every request 502');
    cmp_ok($t->token_calls, '<=', 5, 'down: at most a few token requests');

    # recovery
    $t->mock_control(token_mode => 'ok');
    my $ok = 0;
    $end = time + 70;
    while (time < $end) {
        if ($t->get('/selfies/' . $t->id('jpeg-small'))->{status} == 200) {
            $ok = 1;
            last;
        }
        sleep 0.25;
    }
    ok($ok, 'recovered once the endpoint is back');

    $t->check_logs;
}

# bad keys and issuers fail nginx -t, naming the file and the problem
{
    my $t = UnicoTest->new;
    my $certs = $t->certs;
    my $dir = $t->dir;

    system("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
           . "-out $dir/ec.key 2>/dev/null") == 0 or die;
    system("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 "
           . "-aes256 -pass pass:secret -out $dir/enc.key 2>/dev/null") == 0
        or die;
    system("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 "
           . "-out $dir/short.key 2>/dev/null") == 0 or die;
    open my $fh, '>', "$dir/garbage.key" or die;
    print $fh "not a key\n";
    close $fh;

    my @cases = (
        ["$dir/missing.key", $ISS, qr/cannot read key file "\Q$dir\E\/missing\.key"/],
        ["$dir/garbage.key", $ISS, qr/key file "\Q$dir\E\/garbage\.key": not a PEM private key/],
        ["$dir/ec.key", $ISS, qr/ec\.key": not an RSA key/],
        ["$dir/enc.key", $ISS, qr/enc\.key": the key is protected by a passphrase/],
        ["$dir/short.key", $ISS, qr/short\.key": an RSA key shorter than 2048 bits/],
        ["$certs/sa.key", 'gateway@tenant.example.com', qr/invalid issuer "gateway\@tenant\.example\.com"/],
        ["$certs/sa.key", 'gateway', qr/invalid issuer "gateway"/],
        ["$certs/sa.pkcs1.key", $ISS, undef],
    );

    for my $case (@cases) {
        my ($key, $iss, $re) = @$case;
        my ($rc, $out) = $t->nginx_t(<<"CONF");
    unico_selfie_service_account a {
        key_file     $key;
        issuer       $iss;
        environment  production;
        token_api    /_unico_token;
    }
CONF
        if ($re) {
            isnt($rc, 0, "nginx -t fails: $key, $iss");
            like($out, $re, 'the message names the file and the problem');
            unlike($out, qr/BEGIN|secret/, 'no key material in the message');
        } else {
            is($rc, 0, 'a PKCS#1 key is fine') or diag($out);
        }
    }

    my ($rc, $out) = $t->nginx_t(<<'CONF');
    server {
        listen 127.0.0.1:%%PORT%%;
        location /s {
            unico_selfie          $arg_id;
            unico_selfie_api      /_unico_api;
            unico_selfie_account  nowhere;
        }
    }
CONF
    isnt($rc, 0, 'an unknown account: nginx -t fails');
    like($out, qr/unknown service account "nowhere"/, 'and says so');
}

sub decode_b64url {
    my ($s) = @_;
    $s =~ tr{-_}{+/};
    $s .= '=' x ((4 - length($s) % 4) % 4);
    require MIME::Base64;
    return MIME::Base64::decode_base64($s);
}

done_testing;
