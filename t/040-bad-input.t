# Bad input from the client: every malformed processId and every method
# but GET and HEAD is refused with a clear status and an info log line,
# and Unico is never called.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use UnicoTest;

my $t = UnicoTest->new;
$t->start_mock;

# a second location takes the processId from the query string, unescaped:
# there the empty id and percent-encoded bytes reach the module as they are
my $conf = $t->selfie_conf(server => <<'CONF');
        location = /selfie {
            unico_selfie        $arg_id;
            unico_selfie_api    /_unico_api;
            unico_selfie_token  test-token-2b7e1516.28aed2a6;
        }
CONF

$t->start_nginx($conf);

my $good = $t->id('jpeg-small');
(my $nohyphen = $good) =~ s/-//g;

my @bad_ids = (
    ['not-a-uuid',                       'a word'],
    [substr($good, 0, 35),               '35 characters'],
    [$good . 'a',                        '37 characters'],
    [$nohyphen . '0000',                 '36 characters, no hyphens'],
    [substr($good, 0, 35) . 'g',         'a non-hex digit'],
    ['53060f52f-146-4c12-a234-5bb5031f6f5b', 'a hyphen moved'],
    ['{' . substr($good, 0, 34) . '}',   'braces'],
    ['x' x 4000,                         'overlong (4000 characters)'],
    ['%20' . substr($good, 1),           'an encoded blank'],
    [substr($good, 0, 35) . '%C3%A9',    'a non-ASCII character'],
);

my $calls = $t->selfie_calls;

for my $case (@bad_ids) {
    my ($id, $what) = @$case;

    my $r = $t->get("/selfies/$id");
    is($r->{status}, 400, "path: $what: 400");

    $r = $t->get("/selfie?id=$id");
    is($r->{status}, 400, "query: $what: 400");
}

# $arg_id is not unescaped: a percent-encoded id is not canonical there
my $r = $t->get('/selfie?id=53060f52-f146-4c12-a234-5bb5031f6f5%62');
is($r->{status}, 400, 'query: a percent-encoded hex digit: 400');

$r = $t->get('/selfie?id=%2e%2e');
is($r->{status}, 400, 'query: an encoded ..: 400');

$r = $t->get('/selfie?id=');
is($r->{status}, 400, 'query: empty processId: 400');

$r = $t->get('/selfie');
is($r->{status}, 400, 'query: no processId: 400');

$r = $t->get("/selfie?id=$good%00");
is($r->{status}, 400, 'query: an encoded NUL: 400');

# what nginx itself refuses or routes elsewhere never reaches the module
for my $path ("/selfies/$good%00", "/selfies/..%2F$good",
              "/selfies/53060f52-f146-4c12-a234%2F5bb5031f6f5b",
              '/selfies/%2e%2e', '/selfies/', '/selfies/../selfies/x')
{
    $r = $t->get($path);
    ok($r->{status} == 400 || $r->{status} == 404,
       "$path: refused ($r->{status})");
}

is($t->selfie_calls, $calls, 'no bad processId reached Unico');

my @info = grep { /\[info\].*reason: bad_process_id/ }
           split /\n/, $t->error_log;
cmp_ok(scalar @info, '>=', 2 * @bad_ids + 5,
       'each refused processId logged at info');

# methods
for my $method (qw(POST PUT DELETE PATCH OPTIONS PROPFIND)) {
    $r = $t->request($method, "/selfies/$good", body => 'x=1');
    is($r->{status}, 405, "$method: 405");
    like($r->{headers}{allow} // '', qr/^GET, HEAD$/,
         "$method: Allow: GET, HEAD");
}

is($t->selfie_calls, $calls, 'no refused method reached Unico');

like($t->error_log, qr/\[info\].*reason: bad_method/,
     'a refused method is logged at info');

# in the path nginx unescapes first: %62 is "b", a canonical id again
$r = $t->get('/selfies/53060f52-f146-4c12-a234-5bb5031f6f5%62');
is($r->{status}, 200, 'path: an unescaped canonical id is served');

# the good id still works on both locations
is($t->get("/selfies/$good")->{status}, 200, 'good id in the path: 200');
is($t->get("/selfie?id=$good")->{status}, 200, 'good id in the query: 200');

$t->check_logs;

done_testing;
