# Protecting the tenant: concurrent requests for one selfie share one Unico
# call; the optional shared-memory cache serves hits, expires and evicts;
# the optional call budget holds across workers.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use Test::More;
use Time::HiRes qw(sleep time);
use UnicoTest;

my $sha_medium = UnicoTest->fixture_sha256('selfie-720x960.jpg');
my $sha_large = UnicoTest->fixture_sha256('selfie-1080x1440.jpg');

sub random_uuid {
    my @h = map { sprintf '%04x', int rand 65536 } 1 .. 8;
    return "$h[0]$h[1]-$h[2]-$h[3]-$h[4]-$h[5]$h[6]$h[7]";
}

# coalescing, one worker
{
    my $t = UnicoTest->new;
    $t->start_mock;
    $t->start_nginx($t->selfie_conf);

    my @r = $t->concurrent_get(('/selfies/' . $t->id('delay-1s')) x 50);
    my $exact = grep { $_->{status} == 200
                       && sha256_hex($_->{body}) eq $sha_medium } @r;

    is($exact, 50, '50 concurrent requests for one selfie: all byte-exact');
    is($t->selfie_calls, 1, '50 concurrent requests: one Unico call');

    my $calls = $t->selfie_calls;
    @r = $t->concurrent_get(('/selfies/' . $t->id('status-404-delay')) x 20);
    is((grep { $_->{status} == 404 } @r), 20, 'a shared 404: 20 times 404');
    is($t->selfie_calls, $calls + 1, 'a shared 404: one Unico call');

    $calls = $t->selfie_calls;
    @r = $t->concurrent_get(('/selfies/' . $t->id('status-429-delay')) x 10);
    is((grep { $_->{status} == 503 && ($_->{headers}{'retry-after'} // '') eq '7' }
        @r), 10, 'a shared 429: each gets 503 with Retry-After');
    is($t->selfie_calls, $calls + 1, 'a shared 429: one Unico call');

    # one after the other, no coalescing: each calls
    $calls = $t->selfie_calls;
    $t->get('/selfies/' . $t->id('jpeg-medium')) for 1 .. 3;
    is($t->selfie_calls, $calls + 3, 'sequential requests: no cache, 3 calls');

    $t->check_logs;
}

# the cache: hit, miss, expiry, eviction
{
    my $t = UnicoTest->new;

    # three locations, three tenants' tokens: three entries for one selfie
    my %token = (a => $UnicoTest::TOKEN, b => 'tenant-b-token',
                 c => 'tenant-c-token');
    $t->start_mock(tokens => [values %token]);

    my $loc = sub {
        my ($p) = @_;
        return <<"CONF";
        location ~ ^/$p/(?<sid>[^/]+)\$ {
            unico_selfie        \$sid;
            unico_selfie_api    /_unico_api;
            unico_selfie_token  $token{$p};
            unico_selfie_cache  small;
        }
CONF
    };

    $t->start_nginx($t->selfie_conf(
        http => "unico_selfie_cache_zone selfies:8m ttl=2s;\n"
                . "    unico_selfie_cache_zone small:768k ttl=60s;",
        selfie => 'unico_selfie_cache selfies;',
        server => join('', map { $loc->($_) } qw(a b c))),
        workers => 2);

    my $id = $t->id('jpeg-medium');
    my $calls = $t->selfie_calls;

    my $r = $t->get("/selfies/$id");
    is(sha256_hex($r->{body}), $sha_medium, 'cache miss: byte-exact');
    is($t->selfie_calls, $calls + 1, 'cache miss: one call');

    for (1 .. 6) {
        $r = $t->get("/selfies/$id");
        is(sha256_hex($r->{body}), $sha_medium, "cache hit $_: byte-exact");
    }
    is($t->selfie_calls, $calls + 1, 'cache hits on 2 workers: no call');

    sleep 2.5;
    $r = $t->get("/selfies/$id");
    is($r->{status}, 200, 'after the TTL: 200');
    is($t->selfie_calls, $calls + 2, 'after the TTL: a new call');

    # failures are not cached
    $calls = $t->selfie_calls;
    $t->get('/selfies/' . $t->id('status-404')) for 1 .. 2;
    is($t->selfie_calls, $calls + 2, 'a 404 is not cached');

    # LRU: the 768k zone holds two 333 KB selfies, not three
    my $large = $t->id('jpeg-large');
    $calls = $t->selfie_calls;

    $t->get("/a/$large");                 # a
    $t->get("/b/$large");                 # a b
    $t->get("/a/$large");                 # b a   (hit)
    is($t->selfie_calls, $calls + 2, 'LRU: two entries, one hit');

    $t->get("/c/$large");                 # a c   (b evicted)
    is($t->selfie_calls, $calls + 3, 'LRU: a third entry');

    $r = $t->get("/a/$large");
    is(sha256_hex($r->{body}), $sha_large, 'LRU: the recently used one');
    is($t->selfie_calls, $calls + 3, 'LRU: is still cached');

    $t->get("/b/$large");
    is($t->selfie_calls, $calls + 4, 'LRU: the least recently used was evicted');

    # a selfie larger than half the zone is not cached
    $calls = $t->selfie_calls;
    $t->get('/a/' . $t->id('png')) for 1 .. 2;
    is($t->selfie_calls, $calls + 2, 'too large for the zone: not cached');

    $t->check_logs;
}

# the budget, shared by 4 workers
{
    my $t = UnicoTest->new;
    $t->start_mock;
    $t->start_nginx($t->selfie_conf(
        http => 'unico_selfie_budget 5r/s burst=5 wait=0;'), workers => 4);

    my $start = time;
    my @r = $t->concurrent_get(map { '/selfies/' . random_uuid() } 1 .. 40);
    my $took = time - $start;

    my $over = grep { $_->{status} == 503 } @r;
    my $called = grep { $_->{status} == 404 } @r;

    is($over + $called, 40, 'over the budget: 503, within: Unico\'s 404');
    cmp_ok($called, '<=', 5 + int(5 * $took) + 1,
           "calls within the budget ($called in " . sprintf('%.1f', $took)
           . ' s)');
    cmp_ok($over, '>', 0, "$over requests refused");
    ok((grep { $_->{status} == 503 && ($_->{headers}{'retry-after'} // '') eq '1' } @r)
       == $over, 'each refusal has Retry-After');
    is($t->selfie_calls, $called, 'Unico saw only the calls within budget');
    like($t->error_log, qr/reason: over_budget/, 'logged as over_budget');

    $t->check_logs;
}

# with a wait, requests queue for the budget instead of failing
{
    my $t = UnicoTest->new;
    $t->start_mock;
    $t->start_nginx($t->selfie_conf(
        http => 'unico_selfie_budget 10r/s burst=2 wait=5s;'), workers => 4);

    my $start = time;
    my @r = $t->concurrent_get(map { '/selfies/' . random_uuid() } 1 .. 20);
    my $took = time - $start;

    is((grep { $_->{status} == 404 } @r), 20, 'waiting: all 20 called Unico');
    cmp_ok($took, '>=', 1.4, sprintf('paced at 10 r/s (%.2f s)', $took));

    my @times = sort { $a <=> $b }
                map { $_->{time} } grep { $_->{path} =~ /selfie$/ }
                @{ $t->mock_requests };
    my $max_in_1s = 0;
    for my $i (0 .. $#times) {
        my $n = grep { $_ >= $times[$i] && $_ < $times[$i] + 1 } @times;
        $max_in_1s = $n if $n > $max_in_1s;
    }
    # burst + rate, and one more on each side of a window edge: the mock
    # stamps requests when it reads them, late on a loaded machine
    cmp_ok($max_in_1s, '<=', 14, "at most burst + rate in any second ($max_in_1s)");

    $t->check_logs;
}

done_testing;
