# unico_selfie_token: a literal or any variables; an empty or malformed
# value is the gateway's fault (502) and is never forwarded; the token
# itself never shows in a log, a response or an error page.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use UnicoTest;

my $t = UnicoTest->new;
$t->start_mock(tokens => [$UnicoTest::TOKEN, 'second.token-value']);

my $conf = $t->selfie_conf(
    token => '$unico_token',
    http => <<'CONF');
    map $arg_t $unico_token {
        default   "";
        good      test-token-2b7e1516.28aed2a6;
        other     second.token-value;
        wrong     not-a-valid-token;
        blank     "has blank";
        crlf      "abc\r\nX-Injected: 1";
        split     test-token-$arg_x;
    }
CONF

$t->start_nginx($conf, log_level => 'debug');

my $id = $t->id('jpeg-small');

my $r = $t->get("/selfies/$id?t=good");
is($r->{status}, 200, 'token from a variable: 200');
is($t->mock_requests->[-1]{headers}{authorization},
   "Bearer $UnicoTest::TOKEN", 'Unico got that token');

$r = $t->get("/selfies/$id?t=other");
is($r->{status}, 200, 'another token from the same variable: 200');
is($t->mock_requests->[-1]{headers}{authorization},
   'Bearer second.token-value', 'Unico got the other token');

$r = $t->get("/selfies/$id?t=split&x=2b7e1516.28aed2a6");
is($r->{status}, 200, 'token made of two variables: 200');

my $calls = $t->selfie_calls;

$r = $t->get("/selfies/$id");
is($r->{status}, 502, 'empty token: 502');
like($t->error_log, qr/\[error\].*reason: no_token/, 'empty token: logged');

$r = $t->get("/selfies/$id?t=blank");
is($r->{status}, 502, 'token with a blank: 502');

$r = $t->get("/selfies/$id?t=crlf");
is($r->{status}, 502, 'token with CR LF: 502');
like($t->error_log, qr/\[error\].*reason: bad_token/,
     'malformed token: logged');

is($t->selfie_calls, $calls, 'no call to Unico without a usable token');

$r = $t->get("/selfies/$id?t=wrong");
is($r->{status}, 502, 'a token Unico refuses: 502');
like($t->error_log, qr/reason: unico_401/, 'logged as unico_401');
unlike($r->{raw}, qr/not-a-valid-token/, 'the token is not in the response');

# nothing token-like in any log, at debug level, and not in responses
my $logs = $t->error_log . $t->access_log;
for my $secret ($UnicoTest::TOKEN, 'second.token-value', 'has blank',
                'X-Injected')
{
    unlike($logs, qr/\Q$secret\E/, "\"$secret\" never logged")
        or diag(join "\n", grep { /\Q$secret\E/ } split /\n/, $logs);
}

$t->check_logs;

done_testing;
