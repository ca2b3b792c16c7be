# nginx -t refuses what would crash, share state by accident or silently
# override: a cache zone named like one of the module's own zones, token
# and account on one level, unico_selfie and unico_selfie_metrics in one
# location, an RSA key too long to sign.  Where credentials are inherited,
# the innermost level wins (docs/directives.md).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use UnicoTest;

my $ISS = 'gateway@tenant-7f3a.iam.acesso.io';
my $AUD = 'https://identityhomolog.acesso.io';

my $t = UnicoTest->new;
my $certs = $t->certs;

my $account = <<'CONF';
    unico_selfie_service_account sandbox {
        key_file     %%CERTS%%/sa.key;
        issuer       gateway@tenant-7f3a.iam.acesso.io;
        environment  sandbox;
        token_api    /_unico_token;
    }
CONF

sub conf_t {
    my ($http, $body) = @_;
    return $t->nginx_t(<<"CONF");
    $http
    server {
        listen 127.0.0.1:%%PORT%%;
        $body
    }
CONF
}

my $selfie = <<'CONF';
        location /s {
            unico_selfie        $arg_id;
            unico_selfie_api    /_unico_api;
            unico_selfie_token  abc;
            unico_selfie_cache  c;
        }
CONF

# --- reserved zone names ---

for my $name (qw(unico_selfie_tokens unico_selfie_metrics unico_selfie_budget)) {
    for my $with ('', $account) {
        my $label = $with ? 'beside a service account' : 'alone';
        my ($rc, $out) = conf_t(
            "$with    unico_selfie_cache_zone $name:1m;\n"
            . "    unico_selfie_budget 5r/s;\n",
            $selfie =~ s/unico_selfie_cache  c/unico_selfie_cache  $name/r);

        is($rc, 1, "cache zone \"$name\" $label: nginx -t fails");
        like($out, qr/zone name "$name" is reserved for the module's own use.* in \S+nginx\.conf:\d+/,
             "cache zone \"$name\" $label: refused at its own line");
        unlike($out, qr/signal|Segmentation|core dumped/i,
               "cache zone \"$name\" $label: no crash");
    }
}

my ($rc, $out) = conf_t($account, $selfie =~ s/unico_selfie_cache  c/unico_selfie_cache  unico_selfie_tokens/r);
is($rc, 1, 'unico_selfie_cache naming the tokens zone: nginx -t fails');
like($out, qr/"unico_selfie_tokens" is one of the module's own zones/,
     'unico_selfie_cache naming the tokens zone: says why');

($rc, $out) = conf_t("unico_selfie_cache_zone c:1m;", $selfie);
is($rc, 0, 'an ordinary cache zone name: nginx -t passes') or diag($out);

# --- one source of credentials per level ---

($rc, $out) = conf_t($account, <<'CONF');
        location /s {
            unico_selfie          $arg_id;
            unico_selfie_api      /_unico_api;
            unico_selfie_token    abc;
            unico_selfie_account  sandbox;
        }
CONF
is($rc, 1, 'token then account in one location: nginx -t fails');
like($out, qr/"unico_selfie_account" directive cannot be used with "unico_selfie_token" on the same level/,
     'token then account: says why');

($rc, $out) = conf_t($account, <<'CONF');
        unico_selfie_account  sandbox;
        unico_selfie_token    abc;
CONF
is($rc, 1, 'account then token in one server: nginx -t fails');
like($out, qr/"unico_selfie_token" directive cannot be used with "unico_selfie_account" on the same level/,
     'account then token: says why');

# --- unico_selfie and unico_selfie_metrics in one location ---

for my $order (['unico_selfie_metrics;', 'unico_selfie $arg_id;'],
               ['unico_selfie $arg_id;', 'unico_selfie_metrics;'])
{
    ($rc, $out) = conf_t('', <<"CONF");
        location /s {
            $order->[0]
            $order->[1]
            unico_selfie_api    /_unico_api;
            unico_selfie_token  abc;
        }
CONF
    is($rc, 1, "\"$order->[0]\" then \"$order->[1]\": nginx -t fails");
    like($out, qr/cannot be in the location of "unico_selfie(_metrics)?"/,
         "\"$order->[0]\" then \"$order->[1]\": says why");
}

# --- an RSA key too long to sign ---

($rc, $out) = conf_t($account =~ s{%%CERTS%%/sa\.key}{%%REPO%%/t/fixtures/keys/rsa-8704.key}r,
                     '');
is($rc, 1, 'an 8704-bit RSA key: nginx -t fails');
like($out, qr/an RSA key longer than 8192 bits, which cannot sign/,
     'an 8704-bit RSA key: says why');

# --- inherited credentials: the innermost level wins ---

$t->start_mock(tokens => [$UnicoTest::TOKEN], args => [
    '--public-key', "$certs/sa.pub.pem", '--issuer', $ISS,
    '--audience', $AUD]);

$t->start_nginx(<<"CONF");
    $account
    log_format  unico  '\$status \$unico_selfie_reason';

    server {
        listen       127.0.0.1:%%PORT%%;
        access_log   %%DIR%%/logs/access.log unico;

        unico_selfie_account  sandbox;
        unico_selfie_api      /_unico_api;

        # the account, inherited
        location ~ ^/acct/(?<p1>[^/]+)\$ {
            unico_selfie  \$p1;
        }

        # a token here: the account is not inherited
        location ~ ^/tok/(?<p2>[^/]+)\$ {
            unico_selfie        \$p2;
            unico_selfie_token  $UnicoTest::TOKEN;
        }

        location /_unico_api/ {
            internal;
            include                        %%CONF%%/unico_selfie_api.conf;
            proxy_ssl_trusted_certificate  %%CERTS%%/ca.pem;
            proxy_ssl_name                 localhost;
            proxy_pass                     https://%%MOCK%%/;
        }

@{[ UnicoTest::token_location() ]}
    }
CONF

my $id = $t->id('jpeg-small');

is($t->get("/tok/$id")->{status}, 200, 'a token in the location: 200');
is($t->token_calls, 0, 'a token in the location: no service-account token');
my ($last) = grep { $_->{path} =~ /selfie$/ } reverse @{ $t->mock_requests };
is($last->{headers}{authorization}, "Bearer $UnicoTest::TOKEN",
   'a token in the location: that token is sent');

is($t->get("/acct/$id")->{status}, 200, 'the account inherited: 200');
is($t->token_calls, 1, 'the account inherited: its token is requested');

$t->check_logs;

done_testing;
