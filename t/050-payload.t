# Unico's JSON as it may come: every accepted variant is served byte-exact,
# every broken one is a 502 with its own reason.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use Test::More;
use UnicoTest;

my $t = UnicoTest->new;
$t->start_mock;
$t->start_nginx($t->selfie_conf);

# accepted: mock process => the fixture it must yield
my %good = (
    'chunked'          => 'selfie-720x960.jpg',
    'close-delimited'  => 'selfie-360x480.jpg',
    'connection-close' => 'selfie-360x480.jpg',
    'escaped-slashes'  => 'selfie-720x960.jpg',
    'wrapped-newlines' => 'selfie-720x960.jpg',
    'wrapped-crlf'     => 'selfie-720x960.jpg',
    'unicode-escapes'  => 'selfie-720x960.jpg',
    'no-padding'       => 'selfie-720x960.jpg',
    'pretty-json'      => 'selfie-360x480.jpg',
    'reordered'        => 'selfie-480x640.png',
    'extra-fields'     => 'selfie-360x480.jpg',
    'deep-nesting'     => 'selfie-360x480.jpg',
);

for my $name (sort keys %good) {
    my $file = $good{$name};
    my $r = $t->get('/selfies/' . $t->id($name));

    is($r->{status}, 200, "$name: 200");
    is(sha256_hex($r->{body}), $t->fixture_sha256($file),
       "$name: byte-exact $file");
    is($r->{headers}{'content-length'}, -s "$FindBin::Bin/fixtures/$file",
       "$name: exact Content-Length");
}

# refused: mock process => reason (all 502)
my %bad = (
    'fileContents-number'   => 'wrong_type',
    'fileContents-null'     => 'wrong_type',
    'fileContents-empty'    => 'empty_image',
    'contentType-number'    => 'wrong_type',
    'missing-fileContents'  => 'missing_field',
    'missing-contentType'   => 'missing_field',
    'top-level-array'       => 'not_object',
    'not-json'              => 'bad_json',
    'truncated-json'        => 'bad_json',
    'empty-body'            => 'bad_json',
    'duplicate-field'       => 'duplicate_field',
    'duplicate-contentType' => 'duplicate_field',
    'bad-base64'            => 'bad_base64',
    'base64url'             => 'bad_base64',
    'content-type-html'     => 'bad_content_type',
    'content-type-svg'      => 'bad_content_type',
    'content-type-gif'      => 'bad_content_type',
    'png-labelled-jpeg'     => 'image_mismatch',
    'jpeg-labelled-png'     => 'image_mismatch',
    'huge'                  => 'response_too_large',
    'max-plus-one'          => 'image_too_large',
);

for my $name (sort keys %bad) {
    my $reason = $bad{$name};
    my $id = $t->id($name);
    my $before = length $t->error_log;

    my $r = $t->get("/selfies/$id");

    is($r->{status}, 502, "$name: 502");
    unlike($r->{head}, qr{Content-Type: image/}i, "$name: no image type");

    my $log = substr $t->error_log, $before;
    like($log, qr/\[error\].*reason: \Q$reason\E\b.*processId: "\Q$id\E"/,
         "$name: logged as $reason");
}

# exactly the default maximum (5m) is accepted
my $r = $t->get('/selfies/' . $t->id('max-exact'));
is($r->{status}, 200, 'max-exact: an image of exactly 5m is served');
is(length $r->{body}, 5242880, 'max-exact: all of it');

$t->check_logs;

done_testing;
