# Every row of the status table (docs/status-codes.md): what Unico or the
# network does, what the client gets, $unico_selfie_reason, and one log
# line at the documented level with the processId and no token.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(time);
use UnicoTest;

my $t = UnicoTest->new;
$t->start_mock;
$t->start_nginx($t->selfie_conf);

# mock process, client status, reason, log level
my @rows = (
    ['status-400',        400, 'unico_400',        'info'],
    ['status-401',        502, 'unico_401',        'error'],
    ['status-403',        403, 'unico_403',        'error'],
    ['status-404',        404, 'unico_404',        'info'],
    ['status-429',        503, 'unico_429',        'error'],
    ['status-500',        502, 'unico_5xx',        'error'],
    ['status-502',        502, 'unico_5xx',        'error'],
    ['status-503',        502, 'unico_5xx',        'error'],
    ['status-504',        502, 'unico_5xx',        'error'],
    ['status-418',        502, 'unico_status',     'error'],
    ['status-302',        502, 'unico_status',     'error'],
    ['reset',             502, 'upstream_error',   'error'],
    ['close-no-answer',   502, 'upstream_error',   'error'],
    ['garbage',           502, 'upstream_error',   'error'],
    ['reset-mid-body',    502, 'truncated',        'error'],
    ['truncated',         502, 'truncated',        'error'],
    ['chunked-truncated', 502, 'truncated',        'error'],
    ['slow-body',         502, 'truncated',        'error'],
    ['slow',              504, 'upstream_timeout', 'error'],
    ['hang',              504, 'upstream_timeout', 'error'],
    ['gzip',              502, 'encoded',          'error'],
);

for my $row (@rows) {
    my ($name, $status, $reason, $level) = @$row;
    my $id = $t->id($name);

    my $log_before = length $t->error_log;
    my $start = time;
    my $r = $t->get("/selfies/$id");
    my $took = time - $start;

    is($r->{status}, $status, "$name: client gets $status");
    unlike($r->{head}, qr/image\//, "$name: no image Content-Type");

    my $log = substr $t->error_log, $log_before;
    my @lines = grep { /unico selfie: .*\(reason: \Q$reason\E/ }
                split /\n/, $log;

    is(scalar @lines, 1, "$name: one log line with reason $reason");
    like($lines[0] // '', qr/\[\Q$level\E\]/, "$name: logged at $level");
    like($lines[0] // '', qr/processId: "\Q$id\E"/,
         "$name: the log line names the processId");
    unlike($log, qr/\Q$UnicoTest::TOKEN\E/, "$name: no token in the log");

    if ($reason eq 'upstream_timeout') {
        cmp_ok($took, '<', 4, "$name: answered at the read timeout (2s)");
    }
}

# 429: Unico's Retry-After reaches the client
my $r = $t->get('/selfies/' . $t->id('status-429'));
is($r->{headers}{'retry-after'}, '7', '429: Retry-After passed on');

# no Retry-After elsewhere
$r = $t->get('/selfies/' . $t->id('status-500'));
ok(!exists $r->{headers}{'retry-after'}, '500: no Retry-After');

# Unico's error bodies never reach the client
unlike($r->{body}, qr/Internal failure/, "Unico's error body not passed on");

# the reason reaches the access log
my $access = $t->access_log;
for my $row (@rows) {
    my ($name, $status, $reason) = @$row;
    my $id = $t->id($name);
    like($access, qr/^\Q$status $reason\E .*\Q$id\E/m,
         "$name: access log has $status $reason");
}

# gateway still serves after every failure
$r = $t->get('/selfies/' . $t->id('jpeg-small'));
is($r->{status}, 200, 'still serving after the failures');

$t->check_logs;

done_testing;
