# docs/deployment.md, "Thumbnails for list views", run as written: with
# Debian's image_filter module on the selfie location, ?w=96|160|240 gives
# a JPEG (or PNG) of that width with the aspect ratio kept, no w= gives
# the original byte for byte, and the original is fetched from Unico once
# for all sizes (the module's cache holds it once).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use Test::More;
use DocExamples;
use UnicoTest;

plan skip_all => 'image_filter not installed (Debian package '
                 . 'libnginx-mod-http-image-filter; ./build.sh test installs it)'
    unless -f '/usr/lib/nginx/modules/ngx_http_image_filter_module.so';
plan skip_all => 'the sanitizer build of nginx loads no Debian module'
    if $ENV{TEST_NGINX_SANITIZED};

my $t = UnicoTest->new;
my $repo = $t->repo;
my $b = DocExamples::block($repo, 'docs/deployment.md', qr/^Thumbnails/)
    or BAIL_OUT('no thumbnails block in docs/deployment.md');
if (my @bad = DocExamples::foreign_modules($t, $b->{text})) {
    plan skip_all => "Debian's $bad[0][0] does not load in the nginx under "
                     . "test ($bad[0][1])";
}
ok($b, 'the thumbnails recipe');

DocExamples::start_mock($t, '--token', 'YOUR_UNICO_ACCESS_TOKEN');
DocExamples::start($t, $b->{text}, $t->dir . '/recipe',
                   files => DocExamples::files($t));

my %fx = ('jpeg-small' => ['selfie-360x480.jpg', 360, 480, 'jpeg'],
          'jpeg-large' => ['selfie-1080x1440.jpg', 1080, 1440, 'jpeg'],
          'png'        => ['selfie-480x640.png', 480, 640, 'png']);

for my $name (sort keys %fx) {
    my ($file, $w0, $h0, $type) = @{ $fx{$name} };
    my $id = $t->id($name);

    for my $w (96, 160, 240) {
        my $r = $t->get("/selfies/$id?w=$w");
        is($r->{status}, 200, "$name w=$w: 200");
        my ($w1, $h1, $t1) = DocExamples::image_size($r->{body});
        is($w1, $w, "$name w=$w: $w wide");
        is($h1, int($h0 * $w / $w0 + 0.5), "$name w=$w: aspect kept ($h1 high)");
        is($t1, $type, "$name w=$w: still $type");
        is($r->{headers}{'content-type'}, "image/$type", "$name w=$w: Content-Type");
        ok(length $r->{body} < -s "$repo/t/fixtures/$file",
           "$name w=$w: smaller than the original");
    }

    my $r = $t->get("/selfies/$id");
    is(sha256_hex($r->{body}), $t->fixture_sha256($file),
       "$name without w=: the original, byte-exact");
    $r = $t->get("/selfies/$id?w=1000");
    is(sha256_hex($r->{body}), $t->fixture_sha256($file),
       "$name w= not in the list: the original");

    my $calls = grep { $_->{kind} eq 'selfie' && $_->{path} =~ /\Q$id\E/ }
                @{ $t->mock_requests };
    is($calls, 1, "$name: one call to Unico for every size");
}

# a failure stays a failure (not an image, not 415)
is($t->get('/selfies/' . $t->id('status-404') . '?w=96')->{status}, 404,
   'a 404 with w=: 404');
is($t->get('/selfies/not-a-uuid?w=96')->{status}, 400, 'a bad id with w=: 400');
my $r = $t->get('/selfies/' . $t->id('status-404'));
is($r->{status}, 404, 'a 404 without w=: 404');
is($r->{body}, "unico_404\n", '... the error location names the reason');
$r = $t->get('/selfies/' . $t->id('status-429') . '?w=96');
is($r->{status}, 503, 'a Unico 429 with w=: 503');
is($r->{headers}{'retry-after'}, '7', '... Retry-After passed on');

$t->check_logs;

done_testing;
