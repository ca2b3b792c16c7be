# error_page works for every status the module returns, and the reason
# survives the redirect for the access log.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use UnicoTest;

my $t = UnicoTest->new;
$t->start_mock;
$t->start_nginx($t->selfie_conf(
    selfie => 'error_page 400 403 404 405 502 503 504 = /placeholder;',
    server => <<'CONF'));
        location = /placeholder {
            internal;
            default_type  text/plain;
            return 200 "placeholder $unico_selfie_reason\n";
        }
CONF

my %cases = (
    'status-400' => 'unico_400',
    'status-403' => 'unico_403',
    'status-404' => 'unico_404',
    'status-429' => 'unico_429',
    'status-500' => 'unico_5xx',
    'slow'       => 'upstream_timeout',
    'not-json'   => 'bad_json',
);

for my $name (sort keys %cases) {
    my $r = $t->get('/selfies/' . $t->id($name));
    is($r->{status}, 200, "$name: error_page answered");
    is($r->{body}, "placeholder $cases{$name}\n",
       "$name: error_page sees \$unico_selfie_reason");
}

my $r = $t->get('/selfies/not-a-uuid');
is($r->{body}, "placeholder bad_process_id\n", 'bad id: error_page');

$r = $t->request('POST', '/selfies/' . $t->id('jpeg-small'));
is($r->{body}, "placeholder bad_method\n", 'POST: error_page');

like($t->access_log, qr/^200 unico_404 404 /m,
     'access log keeps the reason after the redirect');

$t->check_logs;

done_testing;
