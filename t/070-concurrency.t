# Non-blocking: 100 concurrent requests are all byte-exact, and while Unico
# is slow the same single worker keeps answering other requests at once.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use POSIX ();
use Test::More;
use Time::HiRes qw(time sleep);
use UnicoTest;

my $t = UnicoTest->new;
$t->start_mock;
$t->start_nginx($t->selfie_conf);

my @names = qw(jpeg-small jpeg-medium jpeg-large png);
my %file = ('jpeg-small' => 'selfie-360x480.jpg',
            'jpeg-medium' => 'selfie-720x960.jpg',
            'jpeg-large' => 'selfie-1080x1440.jpg',
            'png' => 'selfie-480x640.png');
my %sha = map { $_ => $t->fixture_sha256($file{$_}) } @names;

my @paths = map { $names[$_ % 4] } 0 .. 99;
my @r = $t->concurrent_get(map { '/selfies/' . $t->id($_) } @paths);

my $exact = grep {
    $r[$_]{status} == 200 && sha256_hex($r[$_]{body}) eq $sha{$paths[$_]}
} 0 .. 99;

is($exact, 100, '100 concurrent requests, all 200 and byte-exact');

# a slow Unico does not block the worker: /ping answers meanwhile
my $pid = fork // die;
if ($pid == 0) {
    my @slow = $t->concurrent_get(('/selfies/' . $t->id('slow')) x 20);
    POSIX::_exit((grep { $_->{status} == 504 } @slow) == 20 ? 0 : 1);
}

sleep 0.5;

my @lat;
for (1 .. 10) {
    my $start = time;
    my $r = $t->get('/ping');
    push @lat, time - $start if $r->{status} == 200;
    sleep 0.05;
}

is(scalar @lat, 10, 'the worker answered /ping during 20 slow Unico calls');
my ($max) = sort { $b <=> $a } @lat;
cmp_ok($max, '<', 0.25, sprintf('within %.0f ms', $max * 1000));

waitpid($pid, 0);
is($? >> 8, 0, 'the 20 slow requests all got 504 at the read timeout');

$t->check_logs;

done_testing;
