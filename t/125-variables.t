# The access-log variables: $unico_selfie_bytes, $unico_selfie_upstream_time
# and $unico_selfie_token_fresh (with $unico_selfie_reason and
# $unico_selfie_upstream_status), for a served image, failures before and
# after Unico, a timeout, and a service account's first and later requests.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use UnicoTest;

my $format = <<'CONF';
    log_format  vars  '$status reason=$unico_selfie_reason '
                      'unico=$unico_selfie_upstream_status '
                      'bytes=$unico_selfie_bytes '
                      'time=$unico_selfie_upstream_time '
                      'fresh=$unico_selfie_token_fresh "$request"';
CONF

# the request's line, once nginx has written it (in the log phase, just
# after the response)
sub line_for {
    my ($t, $path) = @_;
    return $t->eventually(sub {
        my @l = grep { /"GET \Q$path\E HTTP/ } split /\n/,
                $t->slurp($t->dir . '/logs/vars.log');
        return $l[-1];
    }) // '';
}

my $t = UnicoTest->new;
$t->start_mock;
$t->start_nginx($t->selfie_conf(
    http => $format,
    server => 'access_log  %%DIR%%/logs/vars.log vars;',
));

my $small = "/selfies/" . $t->id('jpeg-small');
my $size = -s "$FindBin::Bin/fixtures/selfie-360x480.jpg";

$t->get($small);
like(line_for($t, $small),
     qr/^200 reason=ok unico=200 bytes=$size time=\d+\.\d{3} fresh=0 /,
     'served: the image size, the time in seconds.milliseconds, fresh=0');

$t->get('/selfies/not-a-uuid');
like(line_for($t, '/selfies/not-a-uuid'),
     qr/^400 reason=bad_process_id unico=- bytes=0 time=- fresh=- /,
     'refused before Unico: no status, 0 bytes, no time, no token');

my $nf = '/selfies/' . $t->id('status-404');
$t->get($nf);
like(line_for($t, $nf),
     qr/^404 reason=unico_404 unico=404 bytes=0 time=\d+\.\d{3} fresh=0 /,
     'Unico 404: its status, 0 bytes, the time, fresh=0');

my $slow = '/selfies/' . $t->id('slow');
$t->get($slow);
my ($secs) = line_for($t, $slow) =~ /time=(\d+\.\d{3})/;
ok(defined $secs && $secs >= 1.9 && $secs < 4,
   'a timeout: the time is the read timeout (2s): ' . ($secs // 'none'));
like(line_for($t, $slow), qr/^504 reason=upstream_timeout unico=- bytes=0 /,
     '... 504 upstream_timeout');

my $bad = '/selfies/' . $t->id('bad-base64');
$t->get($bad);
like(line_for($t, $bad), qr/^502 reason=bad_base64 unico=200 bytes=0 /,
     'a bad body: Unico 200, no image bytes');

$t->check_logs;


# a service account: the first request waits for a new token, the next
# ones use it

my $ISS = 'gateway@tenant-7f3a.iam.acesso.io';
my $AUD = 'https://identityhomolog.acesso.io';

my $s = UnicoTest->new;
my $certs = $s->certs;

$s->start_mock(tokens => [], args => [
    '--public-key', "$certs/sa.pub.pem", '--issuer', $ISS,
    '--audience', $AUD, '--token-ttl', 3600]);

$s->start_nginx($s->selfie_conf(
    token => '',
    selfie => 'unico_selfie_account sandbox;',
    http => $format . <<"CONF",
    unico_selfie_service_account sandbox {
        key_file     %%CERTS%%/sa.key;
        issuer       $ISS;
        environment  sandbox;
        token_api    /_unico_token;
    }
CONF
    server => <<'CONF'));
        access_log  %%DIR%%/logs/vars.log vars;

        location /_unico_token/ {
            internal;
            include                        %%CONF%%/unico_selfie_token.conf;
            proxy_ssl_trusted_certificate  %%CERTS%%/ca.pem;
            proxy_ssl_name                 localhost;
            proxy_read_timeout             2s;
            proxy_pass                     https://%%MOCK%%/;
        }
CONF

my $first = '/selfies/' . $s->id('jpeg-small');
my $second = '/selfies/' . $s->id('jpeg-medium');

is($s->get($first)->{status}, 200, 'service account: first request 200');
is($s->get($second)->{status}, 200, 'service account: second request 200');

like(line_for($s, $first), qr/^200 reason=ok .* fresh=1 /,
     'the first request waited for a new token: fresh=1');
like(line_for($s, $second), qr/^200 reason=ok .* fresh=0 /,
     'the second used the token held: fresh=0');

$s->get('/selfies/not-a-uuid');
like(line_for($s, '/selfies/not-a-uuid'), qr/ fresh=- /,
     'a request refused before the token: fresh empty');

$s->check_logs;

done_testing;
