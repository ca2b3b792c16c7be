# The demo page in a real browser: Debian's Chromium, headless, driven by
# playwright-core (from npm, into .build/browser; no browser download).
# Every sample selfie is decoded by the browser at its real size, the
# signed <img> too, while the expired one, the 404 and the 400 examples
# are not images.  The screenshot is kept in .build/demo-browser.png.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Fcntl qw(:flock);
use File::Copy qw(copy);
use File::Path qw(make_path);
use JSON::PP qw(decode_json);
use Test::More;
use UnicoTest;

plan skip_all => 'the browser test runs once, against Debian\'s nginx'
    if $ENV{TEST_NGINX_SANITIZED};
plan skip_all => 'no /usr/bin/chromium (Debian package chromium; '
                 . './build.sh test installs it)' unless -x '/usr/bin/chromium';
my ($node) = grep { -x } map { "$_/node" } split /:/, $ENV{PATH} // "";
plan skip_all => "no node (Debian package nodejs)" unless $node;

my $repo = $UnicoTest::REPO;
my $cache = "$repo/.build/browser";
make_path($cache);

# playwright-core into .build/browser, once, one installer at a time
{
    open my $lock, '>', "$cache/.lock" or die $!;
    flock $lock, LOCK_EX;
    copy("$repo/t/browser/package.json", "$cache/package.json") or die $!;
    unless (-f "$cache/node_modules/playwright-core/package.json") {
        my $out = `cd $cache && npm install --no-audit --no-fund --loglevel=error 2>&1`;
        plan skip_all => "npm could not install playwright-core: $out"
            if $? || !-f "$cache/node_modules/playwright-core/package.json";
    }
}

my $t = UnicoTest->new;
my $mock = $t->start_mock(tokens => ['demo-token']);
my $port = $t->{port} = UnicoTest::free_port();

# the demo as ./build.sh run serves it, on free ports (as t/090-demo.t)
my $prefix = $t->dir . '/demo';
mkdir "$prefix";
mkdir "$prefix/$_" for qw(conf logs modules);
symlink $t->certs, "$prefix/conf/certs" or die $!;
symlink $t->{module}, "$prefix/modules/ngx_http_unico_selfie_module.so"
    or die $!;
copy($_, "$prefix/conf/") or die $!
    for glob("$repo/conf/*.conf"), "$repo/conf/demo-signature.keys";
chmod 0600, "$prefix/conf/demo-signature.keys";
my $conf = $t->slurp("$prefix/conf/demo.conf");
$conf =~ s/127\.0\.0\.1:8080/127.0.0.1:$port/g;
$conf =~ s/127\.0\.0\.1:8443/127.0.0.1:$mock/g;
open my $fh, '>', "$prefix/conf/demo.conf" or die $!;
print $fh $conf;
close $fh;
$t->run_nginx("$prefix/conf/demo.conf", $prefix);

my $shot = "$repo/.build/demo-browser.png";
unlink $shot;
my $json = `cd $cache && NODE_PATH=$cache/node_modules timeout 120 $node $repo/t/browser/check-demo.js http://127.0.0.1:$port/ $shot 2>&1`;
is($? >> 8, 0, 'Chromium loaded the demo page') or diag($json);
my $res = eval { decode_json((grep { /^\{/ } split /\n/, $json)[-1] // '') } || {};

is($res->{status}, 200, 'the page: 200');

my %want = (
    '53060f52-f146-4c12-a234-5bb5031f6f5b' => [360, 480],
    'de50b727-3c28-1c95-8d2b-242124c3d443' => [720, 960],
    '0193b2f4-7c1e-7a3d-9f20-5e6b8c41d7a9' => [1080, 1440],
    'bf6260fe-c332-46b4-a37a-45aa3b53965d' => [480, 640],
);

my @imgs = @{ $res->{images} || [] };
my @plain = grep { ($_->{src} // '') =~ m{^/selfies/} } @imgs;
is(scalar @plain, 4, 'four sample selfies on the page');
for my $img (@plain) {
    my ($id) = $img->{src} =~ m{/selfies/([^?]+)};
    my $w = $want{$id} || [0, 0];
    is("$img->{naturalWidth}x$img->{naturalHeight}", "$w->[0]x$w->[1]",
       "$id decoded by the browser at $w->[0]x$w->[1]");
}

my ($ok) = grep { ($_->{id} // '') eq 'signed-ok' } @imgs;
my ($old) = grep { ($_->{id} // '') eq 'signed-expired' } @imgs;
is(($ok->{naturalWidth} // 0) . 'x' . ($ok->{naturalHeight} // 0), '720x960',
   'the signed URL: decoded at 720x960');
ok($old && $old->{complete} && $old->{naturalWidth} == 0,
   'the expired signed URL: not an image');

my %links = map { $_->{href} => $_ } @{ $res->{links} || [] };
my $l404 = $links{'/selfies/bfe1952e-f728-4ea6-8f0c-43c49f77445b'} || {};
my $l400 = $links{'/selfies/not-a-uuid'} || {};
is($l404->{status}, 404, 'the 404 example: 404');
ok(defined $l404->{decoded} && !$l404->{decoded}, '... not an image for the browser');
unlike($l404->{contentType} // 'image/', qr{^image/}, '... nor by its type');
is($l400->{status}, 400, 'the 400 example: 400');
ok(defined $l400->{decoded} && !$l400->{decoded}, '... not an image for the browser');

is_deeply($res->{metrics}, ['/metrics'], 'the page links to the metrics');

ok(-s $shot, "a screenshot: $shot");
open my $png, '<:raw', $shot;
read $png, my $magic, 8 if $png;
is($magic // '', "\x89PNG\r\n\x1a\n", '... a PNG');

$t->check_logs;

done_testing;
