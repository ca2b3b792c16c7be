# Cached selfies never outlive their TTL: each worker sweeps the zones every
# second, so a quiet gateway wipes a face within about a second of its TTL
# without any request for it.  The key is the processId and who asks (the
# API prefix and the credentials): stable across reloads, never shared by
# two tenants.  The cache's gauges and counters on the metrics page.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use IO::Select;
use IO::Socket::INET;
use Test::More;
use Time::HiRes qw(sleep time);
use UnicoTest;

my $t = UnicoTest->new;
my %token = (a => $UnicoTest::TOKEN, b => 'tenant-b-token-7Qx');
$t->start_mock(tokens => [values %token]);

my $loc = sub {
    my ($p, $token, $cache) = @_;
    return <<"CONF";
        location ~ ^/$p/(?<${p}_process>[^/]+)\$ {
            unico_selfie        \$${p}_process;
            unico_selfie_api    /_unico_api;
            unico_selfie_token  $token;
            unico_selfie_cache  $cache;
        }
CONF
};

$t->start_nginx($t->selfie_conf(
    http => "unico_selfie_cache_zone short:4m ttl=2s;\n"
            . "    unico_selfie_cache_zone long:4m ttl=1h;",
    selfie => 'unico_selfie_cache short;',
    server => $loc->('a', $token{a}, 'long')
              . $loc->('b', $token{b}, 'long')
              . $loc->('a2', $token{a}, 'long')
              . "        location = /metrics { unico_selfie_metrics; }\n"),
    workers => 2);

my $id = $t->id('jpeg-medium');
my $sha = $t->fixture_sha256('selfie-720x960.jpg');

sub gauge {
    my ($name, $zone) = @_;
    return $t->metrics->{"unico_selfie_cache_${name}{zone=\"$zone\"}"};
}

# --- the TTL holds without any request for the selfie ---

my $r = $t->get("/selfies/$id");
is(sha256_hex($r->{body}), $sha, 'a miss: byte-exact');
my $t0 = time;
is(gauge('entries', 'short'), 1, 'one entry');
is(gauge('bytes', 'short'), 87247, 'its bytes');

ok($t->eventually(sub { gauge('entries', 'short') == 0 }, 6),
   'the entry is gone after its TTL, without a request for it');
my $gone = time - $t0;
cmp_ok($gone, '<', 2 + 1 + 1.5,
       sprintf('within the TTL (2 s) and a sweep (1 s): %.1f s', $gone));
is(gauge('bytes', 'short'), 0, 'no bytes held');
is($t->metrics->{'unico_selfie_cache_evictions_total{zone="short",reason="expired"}'},
   1, 'counted as expired');

# --- the key survives a reload ---

my $calls = $t->selfie_calls;
is($t->get("/a/$id")->{status}, 200, 'tenant a: miss');
is($t->selfie_calls, $calls + 1, 'tenant a: one call');

my $log = length $t->error_log;
kill 'HUP', $t->master_pid;
ok($t->eventually(sub {
       substr($t->error_log, $log) =~ /start worker process/ }, 10),
   'reloaded');
sleep 0.5;

$r = $t->get("/a/$id");
is(sha256_hex($r->{body}), $sha, 'after the reload: byte-exact');
is($t->selfie_calls, $calls + 1, 'after the reload: a hit, no call');

# --- two tenants never share an entry; the same credentials do ---

$r = $t->get("/b/$id");
is(sha256_hex($r->{body}), $sha, 'tenant b: byte-exact');
is($t->selfie_calls, $calls + 2, "tenant b: a call of its own, not a's entry");

my @auth = map { $_->{headers}{authorization} }
           grep { $_->{path} =~ m{/\Q$id\E/selfie$} } @{ $t->mock_requests };
is($auth[-1], "Bearer $token{b}", "tenant b's call carried b's token");

is($t->get("/a2/$id")->{status}, 200, 'another location, tenant a: 200');
is($t->selfie_calls, $calls + 2, 'another location, same credentials: a hit');

my $m = $t->metrics;
is($m->{'unico_selfie_cache_entries{zone="long"}'}, 2,
   'the long zone holds two entries, one per tenant');
cmp_ok($m->{'unico_selfie_cache_lookups_total{zone="long",result="hit"}'},
       '>=', 2, 'hits counted');
cmp_ok($m->{'unico_selfie_cache_lookups_total{zone="long",result="miss"}'},
       '>=', 2, 'misses counted');

# --- a hit is sent from the zone: its entry outlives its TTL only as
# long as a slow client still reads it, and is never overwritten before ---

{
    my $png = $t->id('png');
    my $png_sha = $t->fixture_sha256('selfie-480x640.png');

    is($t->get("/selfies/$png")->{status}, 200, 'the PNG: cached');

    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->port)
        or die "connect: $!";
    $s->sockopt(Socket::SO_RCVBUF(), 8192);
    $s->syswrite("GET /selfies/$png HTTP/1.1\r\nHost: localhost\r\n"
                 . "Connection: close\r\n\r\n");

    # read slowly for longer than the TTL and a sweep, while other selfies
    # take the zone's memory
    my ($raw, $sel) = ('', IO::Select->new($s));
    my $t0 = time;
    my @others = map { $t->id($_) } qw(jpeg-large jpeg-medium jpeg-small
                                        escaped-slashes wrapped-newlines);

    while ($sel->can_read(10)) {
        my $n = $s->sysread(my $chunk, 16384) or last;
        $raw .= $chunk;

        if (time - $t0 < 3.5) {
            sleep 0.1;
            $t->get('/selfies/' . shift(@others)) if @others && time - $t0 > 1.5;
        }
    }

    my $r = UnicoTest::parse_response($raw);
    cmp_ok(time - $t0, '>', 3, 'the response took longer than the TTL');
    is($r->{status}, 200, 'a slow hit: 200');
    is(sha256_hex($r->{body}), $png_sha,
       'a slow hit: byte-exact, though its entry expired meanwhile');
}

$t->check_logs;

done_testing;
