# docs/deployment.md, "A CDN in front", run as written, nginx playing the
# CDN: a signed URL is filled once and then served from the CDN's cache;
# another signature, a forged one, an expired or unsigned URL is its own
# key and reaches the gateway (403, never cached); the TTL is no longer
# than the origin's max-age; the cache is on tmpfs and no selfie byte is
# written anywhere else.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Basename qw(basename);
use File::Find qw(find);
use File::Path qw(remove_tree);
use Digest::SHA ();
use Test::More;
use DocExamples;
use UnicoTest;

my $t = UnicoTest->new;
my $repo = $t->repo;
my $b = DocExamples::block($repo, 'docs/deployment.md', qr/CDN in front/);
ok($b, 'the CDN recipe') or BAIL_OUT('no block');

like($b->{text}, qr{proxy_cache_path\s+/dev/shm/}, 'the CDN caches on tmpfs');
my ($ttl) = $b->{text} =~ /proxy_cache_valid\s+200\s+(\d+)s;/;
my ($max_age) = $b->{text} =~ /"public, max-age=(\d+)"/;
ok($ttl && $max_age && $ttl <= $max_age, "CDN TTL ${\($ttl//'?')}s <= max-age ${\($max_age//'?')}s");

my $shm = '/dev/shm/' . basename($t->dir);
END { remove_tree($shm) if $shm && -d $shm }

DocExamples::start_mock($t, '--token', 'YOUR_UNICO_ACCESS_TOKEN');
my $run = DocExamples::start($t, $b->{text}, $t->dir . '/recipe',
                             files => DocExamples::files($t), shm => $shm);
my $cdn = (grep { $_ ne '8081' } keys %{ $run->{ports} })[0];
$t->{port} = $run->{ports}{$cdn};

my $key = $DocExamples::SIGNING_KEY;
my $id = $t->id('jpeg-medium');
my $now = time;
my $calls = sub { scalar grep { $_->{kind} eq 'selfie' } @{ $t->mock_requests } };

my $url = $t->signed_path($key, $id, $now + 300);
my $r = $t->get($url);
is($r->{status}, 200, 'a signed URL: 200');
is($r->{headers}{'x-cache-status'}, 'MISS', '... filled from the gateway');
is($r->{headers}{'cache-control'}, 'public, max-age=60', '... public, max-age=60');
$r = $t->get($url);
is($r->{status}, 200, 'the same URL again: 200');
is($r->{headers}{'x-cache-status'}, 'HIT', '... from the CDN');
is($calls->(), 1, 'one call to Unico');

my $other = $t->signed_path($key, $id, $now + 240);
$r = $t->get($other);
is($r->{headers}{'x-cache-status'}, 'MISS', 'another signature of the same selfie: its own entry');
is($calls->(), 2, '... and its own call');

(my $forged = $url) =~ s/sig=(.)/'sig=' . ($1 eq 'A' ? 'B' : 'A')/e;
for (1, 2) {
    $r = $t->get($forged);
    is($r->{status}, 403, "a forged signature ($_): 403 from the gateway");
    is($r->{headers}{'x-cache-status'}, 'MISS', '... not from a copy');
}
(my $bare = $url) =~ s/\?.*//;
is($t->get($bare)->{status}, 403, 'no signature: 403');
is($t->get($bare)->{headers}{'x-cache-status'}, 'MISS', '... never cached');
my $expired = $t->signed_path($key, $id, $now - 120);
is($t->get($expired)->{status}, 403, 'an expired URL: 403');
(my $reordered = $url) =~ s/\?expires=(\d+)&sig=(\S+)/?sig=$2&expires=$1/;
is($t->get($reordered)->{headers}{'x-cache-status'}, 'MISS',
   'the arguments in another order: another key, not a copy');
is($calls->(), 3, 'Unico was called for nothing else');

# request collapsing (proxy_cache_lock on): 20 at once for a URL not yet
# cached are one fill; the others wait for it and are answered from it
my $fresh = $t->signed_path($key, $t->id('jpeg-small'), $now + 180);
my @r = $t->concurrent_get(($fresh) x 20);
my $want = $t->fixture_sha256('selfie-360x480.jpg');
is(scalar(grep { $_->{status} == 200
                 && Digest::SHA::sha256_hex($_->{body}) eq $want } @r), 20,
   '20 concurrent requests for a new URL: 20 byte-exact answers');
my %st;
$st{ $_->{headers}{'x-cache-status'} // '-' }++ for @r;
is($st{MISS}, 1, '... one of them filled the cache (MISS)');
is(($st{HIT} // 0) + ($st{MISS} // 0), 20,
   '... the others waited for it and got the copy (HIT)')
    or diag(explain \%st);
is($calls->(), 4, '... one Unico call');

# selfies only on tmpfs: no file of the test's prefix holds image bytes
my $head = substr($t->slurp("$repo/t/fixtures/selfie-720x960.jpg"), 0, 256);
my @found;
find(sub { push @found, $File::Find::name
               if -f $_ && index($t->slurp($_), $head) >= 0 }, $t->dir);
is_deeply(\@found, [], 'no selfie bytes in any file outside tmpfs');
my @cached;
find(sub { push @cached, $File::Find::name if -f $_ }, $shm);
ok(@cached >= 2, 'the CDN\'s entries are on tmpfs (' . scalar(@cached) . ')');

$t->check_logs;

done_testing;
