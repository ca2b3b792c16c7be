# A fleet on 127.0.0.1 (docs/fleet.md): the mock Unico, 3 shield nginx
# with the module, its cache and one service account (each shield its own
# `instance`), 2 edge nginx that pick a shield by
# `hash $unico_process consistent` and retry only what another shield can
# fix, and an nginx playing the CDN in front of an edge.
#
# 1. Cold start: the 3 shields mint their tokens in the same second, none
#    is refused as reused; 300 concurrent requests for 30 processIds over
#    both edges cost exactly 30 Unico calls, every answer byte-exact.
# 2. A shield is killed while requests are in flight: every request still
#    succeeds; Unico is called only for the processIds that moved.  It
#    comes back: Unico is called again only for its own processIds.
# 3. Signed URLs: the same key file on every shield; rotation step 1 (add
#    the new key everywhere) makes a URL signed with the new key work on
#    every shield; step 3 (remove the old one) refuses the old signature.
# 4. The CDN in front of an edge keys on the signature: an unsigned or
#    differently signed URL never gets a cached face; concurrent requests
#    for one URL are one fill (proxy_cache_lock).
# 5. An edge retries a shield-local failure (no token) on another shield,
#    and never a Unico failure.
# 6. With 2 workers per shield, calls == distinct processIds: coalescing
#    across the workers of a shield, through its cache zone.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(sleep time);
use UnicoFleet;
use UnicoTest;

my $T0 = time;
my @ids = UnicoFleet::ids(30, 'main');

# docs/fleet.md shows the configurations this test runs (t/lib/UnicoFleet.pm
# writes them for loopback ports): the lines that make the fleet work are
# in both
{
    use DocExamples;
    my $repo = UnicoTest->repo;
    my $edge = DocExamples::block($repo, 'docs/fleet.md', qr/^The edge$/);
    my $shield = DocExamples::block($repo, 'docs/fleet.md', qr/^The shield$/);
    my $lib = UnicoTest->slurp("$repo/t/lib/UnicoFleet.pm");
    for my $re (qr/hash \s+ \\?\$unico_process \s+ consistent;/x,
                qr/proxy_next_upstream \s+ error \s timeout \s http_429;/x,
                qr/proxy_hide_header \s+ X-Unico-Selfie-Reason;/x,
                qr/proxy_intercept_errors \s+ on;/x,
                qr/error_page \s+ 429 \s = \s \\?\@fleet_busy;/x,
                qr/add_header \s+ Retry-After \s 1 \s always;/x) {
        like($edge->{text}, $re, "docs/fleet.md, the edge: $re");
        like($lib, $re, '... as tested');
    }
    for my $re (qr/add_header \s+ X-Unico-Selfie-Reason \s+ \\?\$unico_selfie_reason \s+ always;/x,
                qr/error_page \s+ 502 \s = \s \\?\@unico_502;/x,
                qr/if \s \(\\?\$unico_shield_local\) \s \{ \s return \s 429; \s \} \s return \s 502;/x,
                qr/instance \s+ shield-/x) {
        like($shield->{text}, $re, "docs/fleet.md, the shield: $re");
        like($lib, $re, '... as tested');
    }
    my @reasons = $shield->{text} =~ /^\s+(\w+)\s+1;$/mg;
    is(join(" ", sort @reasons), join(" ", sort split / /, $UnicoFleet::LOCAL),
       'the shield-local reasons: the same in the docs and the test');
}

# every answer 200 and byte-exact for its path's processId
sub all_exact {
    my ($name, $reqs, @r) = @_;
    my @bad;
    for my $i (0 .. $#r) {
        my ($id) = $reqs->[$i][1] =~ m{/([0-9a-f-]{36})};
        push @bad, "$reqs->[$i][1]: $r[$i]{status}"
            unless $r[$i]{status} == 200
                   && $r[$i]{body} eq UnicoTest->prefix_selfie($id);
    }
    ok(!@bad, "$name: " . scalar(@r) . " answers, all 200 and byte-exact")
        or diag(join "\n", @bad[0 .. ($#bad < 9 ? $#bad : 9)]);
}

sub count_by {
    my %n;
    $n{$_}++ for @_;
    return \%n;
}


# --- 1. cold start, 300 requests, 30 processIds ---------------------------

my $f = UnicoFleet->start(cdn => 1);
my @shields = $f->shields;

# the first requests at the start of a second: the three shields mint
# their assertions in the same second
sleep 0.01 while time - int(time) > 0.1;
my $reqs = $f->spread(10, @ids);
my $r;
my $t = time;
my @r = $f->fire($reqs);
my $cold = time - $t;
all_exact('cold fleet', $reqs, @r);

my @called = $f->call_ids;
is(scalar @called, 30, 'cold fleet: exactly 30 Unico calls');
is(scalar keys %{ count_by(@called) }, 30, '... one per processId');

my @claims = $f->token_claims;
is(scalar @claims, 3, 'three token requests, one per shield');
is(scalar keys %{ count_by(map { $_->{iat} } @claims) }, 1,
   '... minted in the same second');
is(scalar keys %{ count_by(map { $_->{exp} } @claims) }, 3,
   '... three distinct assertions (distinct instance names)');
unlike(join('', map { $_->error_log } @shields), qr/1\.2\.7/,
       '... none refused as reused (1.2.7)');

my $homes = $f->homes;
is(scalar(grep { keys %{ $homes->{$_} } == 1 } @ids), 30,
   'each processId was served by one shield only (its home)');
my %by_shield;
for my $id (@ids) {
    push @{ $by_shield{$_} }, $id for keys %{ $homes->{$id} };
}
is(scalar(grep { @{ $by_shield{$_} || [] } } 0 .. 2), 3,
   'every shield serves (' . join('/', map { scalar @{ $by_shield{$_} || [] } } 0 .. 2)
   . ' processIds)');


# --- 2. a shield dies under load, and comes back --------------------------

# the shield with the most processIds
my ($victim) = sort { @{ $by_shield{$b} } <=> @{ $by_shield{$a} } } 0 .. 2;
my %moved = map { $_ => 1 } @{ $by_shield{$victim} };
my $mark = scalar $f->calls;

$reqs = $f->spread(10, @ids);
$t = time;
@r = $f->fire($reqs, at => 100, hook => sub { $f->kill_shield($victim) });
my $dead = time - $t;
all_exact("shield $victim killed after 100 of 300 requests", $reqs, @r);

my @after = $f->call_ids($mark);
my @strays = grep { !$moved{$_} } @after;
is(scalar @strays, 0, 'Unico was called for no processId that stayed home');
is(scalar @after, scalar keys %moved,
   'one call per processId that moved (' . scalar(keys %moved) . ')');
is(scalar keys %{ count_by(@after) }, scalar keys %moved,
   '... each of them');

$reqs = $f->spread(5, @ids);
@r = $f->fire($reqs);
all_exact('with the shield down', $reqs, @r);
is(scalar $f->calls, $mark + keys %moved, '... served from the other shields\' caches');

$f->start_shield($victim);

# Each edge takes the shield back once its fail_timeout (1 s) has passed
# and a request it lets through succeeds: on a loaded machine a little
# later than 1 s.  Probe each edge with one of the shield's processIds
# until the shield itself answers it (bounded), so that the rounds below
# measure the shield back in both rings, not the edges' timers.
my ($probe) = sort keys %moved;
my %edge_back;
my $probe_until = time + 20;
while (keys %edge_back < 2 && time < $probe_until) {
    sleep 0.5;
    for my $e (0, 1) {
        next if $edge_back{$e};
        my $log = length $shields[$victim]->access_log;
        $f->fire([[ ($f->edges)[$e]->port, "/selfies/$probe" ]]);
        $edge_back{$e} = 1
            if $shields[$victim]->eventually(
                   sub { length($shields[$victim]->access_log) > $log }, 1);
    }
}
is(scalar keys %edge_back, 2, "both edges took shield $victim back");

# Each edge lets one request try the returning shield and sends the rest
# elsewhere until that one succeeds: one request per processId through
# each edge, one at a time, brings it back into both rings.
$mark = scalar $f->calls;
$reqs = $f->spread(2, @ids);
all_exact("shield $victim back, one request at a time", $reqs,
          map { $f->fire([$_]) } @$reqs);
@after = $f->call_ids($mark);
is(scalar(grep { !$moved{$_} } @after), 0,
   'back: Unico was called only for the returning shield\'s processIds');
# (how many of them reach it depends on when each edge takes it back, on
# a loaded machine a little after fail_timeout: at most once each)
cmp_ok(scalar @after, '<=', scalar keys %moved,
       '... at most once each (its cache was lost)');
is(scalar(grep { $_ > 1 } values %{ count_by(@after) }), 0,
   '... never twice for one processId');

my $before = length $shields[$victim]->access_log;
my $calls_before = scalar $f->calls;
$reqs = $f->spread(10, @ids);
@r = $f->fire($reqs);
all_exact("shield $victim back, 300 at once", $reqs, @r);
is(scalar $f->calls, $calls_before, '... no Unico call');
$shields[$victim]->eventually(sub {
    (() = substr($shields[$victim]->access_log, $before) =~ m{^200 ok }mg)
        >= 10 * keys %moved }, 5);
my $back = () = substr($shields[$victim]->access_log, $before) =~ m{^200 ok }mg;
is($back, 10 * keys %moved, '... it serves all the requests of its processIds again');
unlike($shields[$victim]->error_log, qr/1\.2\.7/,
       '... its new assertion was accepted');


# --- 3. signed URLs across the fleet: rotation ----------------------------

my $old = UnicoTest->signing_key('fleet-old');
my $new = UnicoTest->signing_key('fleet-new');
my $exp = int(time) + 300;
my $id = $ids[0];
my $signed_old = $f->mock->signed_path($old, $id, $exp, prefix => '/signed/');
my $signed_new = $f->mock->signed_path($new, $id, $exp, prefix => '/signed/');

is(join(' ', map { $_->get($signed_new)->{status} } @shields), '403 403 403',
   'before the rotation: the new key is refused on every shield');

# step 1: the new key added everywhere, then reload
$f->write_keys([$old, $new]);
$f->reload_shields;
is(join(' ', map { $_->get($signed_new)->{status} } @shields), '200 200 200',
   'step 1 (new key added everywhere): a URL signed with it works on every shield');
is(join(' ', map { $_->get($signed_old)->{status} } @shields), '200 200 200',
   '... and the old key still does');

# step 2, the signer switches: every processId through the edges
$reqs = [ map { [($f->edges)[0]->port,
                 $f->mock->signed_path($new, $_, $exp, prefix => '/signed/')] }
          @ids ];
all_exact('step 2 (the signer uses the new key), through an edge', $reqs,
          $f->fire($reqs));

# step 3: the old key removed everywhere
$f->write_keys([$new]);
$f->reload_shields;
is(join(' ', map { $_->get($signed_old)->{status} } @shields), '403 403 403',
   'step 3 (old key removed): the old signature is refused everywhere');
is(join(' ', map { $_->get($signed_new)->{status} } @shields), '200 200 200',
   '... the new one works everywhere');


# --- 4. the CDN in front of an edge ---------------------------------------

my $cdn = $f->cdn;
my $edge0 = ($f->edges)[0];
# the edge logs a request just after the CDN got its answer: wait for the
# count expected, then take what is there
my $edge_hits = sub {
    my ($path, $want) = @_;
    my $count = sub {
        my $n = () = $edge0->access_log =~ m{"GET \Q$path\E HTTP}g;
        return $n;
    };
    $edge0->eventually(sub { $count->() >= $want }, 5);
    sleep 0.1;
    return $count->();
};
my $cid = $ids[1];
my $url = $f->mock->signed_path($new, $cid, $exp, prefix => '/signed/');

$r = $cdn->get($url);
is("$r->{status} $r->{headers}{'x-cache-status'}", '200 MISS',
   'CDN: a signed URL is filled from the edge');
is($r->{headers}{'cache-control'}, 'public, max-age=60',
   '... with the shield\'s Cache-Control');
is($r->{body}, UnicoTest->prefix_selfie($cid), '... byte-exact');
$r = $cdn->get($url);
is("$r->{status} $r->{headers}{'x-cache-status'}", '200 HIT',
   '... then served from the CDN');

(my $bare = $url) =~ s/\?.*//;
(my $forged = $url) =~ s/sig=(.)/'sig=' . ($1 eq 'A' ? 'B' : 'A')/e;
my $other = $f->mock->signed_path($new, $cid, $exp - 60, prefix => '/signed/');
my $old_signed = $f->mock->signed_path($old, $cid, $exp, prefix => '/signed/');

for my $case (['unsigned', $bare, 403], ['forged', $forged, 403],
              ['signed with the removed key', $old_signed, 403],
              ['signed differently (another expires)', $other, 200])
{
    my ($name, $path, $status) = @$case;
    my @got = map { my $x = $cdn->get($path); "$x->{status} $x->{headers}{'x-cache-status'}" } 1, 2;
    if ($status == 403) {
        is("@got", '403 MISS 403 MISS', "CDN: $name: 403 from the shield, twice, never cached");
        is($edge_hits->($path, 2), 2, '... both reached the edge');
    } else {
        is("@got", '200 MISS 200 HIT', "CDN: $name: its own entry, filled from the edge");
        is($edge_hits->($path, 1), 1, '... once');
    }
}

# request collapsing: 20 at once for a URL not cached yet, one fill
my $lock_url = $f->mock->signed_path($new, $ids[2], $exp - 30, prefix => '/signed/');
$reqs = [ map { [$cdn->port, $lock_url] } 1 .. 20 ];
@r = $f->fire($reqs);
all_exact('CDN: 20 concurrent requests for one URL', $reqs, @r);
is($edge_hits->($lock_url, 1), 1, '... one request reached the edge (proxy_cache_lock)');


# --- 5. shield-local failures are retried, Unico failures are not ---------

$f->check_logs;

my $g = UnicoFleet->start(broken_token => [0], edges => 1);
my @gids = UnicoFleet::ids(30, 'local');
$reqs = [ map { [($g->edges)[0]->port, "/selfies/$_"] } @gids ];
@r = $g->fire($reqs);
all_exact('shield 0 cannot reach the token endpoint', $reqs, @r);
my $elog = ($g->edges)[0]->access_log;
my @retried = $elog =~ m{^200 "429, 200" "[^"]+" ok }mg;
ok(@retried >= 1, 'the edge retried on another shield ('
                  . scalar(@retried) . ' answers after a 429)');
like(($g->shields)[0]->access_log, qr/^429 token_(?:failed|unavailable) /m,
     '... where shield 0 answered 429 for its token failure');
is(scalar $g->calls, 30, '... and Unico was called once per processId');

my $gmark = scalar $g->calls;
$r = ($g->edges)[0]->get('/selfies/' . $g->mock->id('status-500'));
is($r->{status}, 502, 'a Unico 500: 502 at the client');
is(scalar $g->calls, $gmark + 1, '... one Unico call: not retried');
$r = ($g->edges)[0]->get('/selfies/' . $g->mock->id('status-429'));
is("$r->{status} " . ($r->{headers}{'retry-after'} // '-'), '503 7',
   'a Unico 429: 503 with Unico\'s Retry-After');
is(scalar $g->calls, $gmark + 2, '... one Unico call: not retried');
# (a 429 before may be there: the processId's home can be the shield
# without a token, once the edge's fail_timeout has passed)
unlike(($g->edges)[0]->access_log, qr/^\d+ "[^"]*\b50[234],/m,
       '... the edge retried no shield after a Unico failure');
ok(!grep({ exists $_->{headers}{'x-unico-selfie-reason'} } @r, $r),
   'the reason header stays between shield and edge');

$g->check_logs;


# --- 6. two workers per shield --------------------------------------------

{
    my $w = UnicoFleet->start(workers => 2);
    my @wids = UnicoFleet::ids(30, 'workers');
    $reqs = $w->spread(10, @wids);
    all_exact('2 workers per shield', $reqs, $w->fire($reqs));
    is(scalar $w->calls, 30, '... exactly 30 Unico calls');
    $w->check_logs;
}

diag(sprintf 'fleet: cold 300 requests %.2fs, kill round %.2fs, '
             . '%d processIds moved; whole file %.1fs',
     $cold, $dead, scalar keys %moved, time - $T0);

done_testing;
