# The happy path: each sample selfie served byte-exact, with the right
# headers, for GET and HEAD; nothing of the client's request reaches Unico.

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

my %fixtures = (
    'jpeg-small'  => ['selfie-360x480.jpg',   'image/jpeg'],
    'jpeg-medium' => ['selfie-720x960.jpg',   'image/jpeg'],
    'jpeg-large'  => ['selfie-1080x1440.jpg', 'image/jpeg'],
    'png'         => ['selfie-480x640.png',   'image/png'],
);

for my $name (sort keys %fixtures) {
    my ($file, $type) = @{ $fixtures{$name} };
    my $size = -s "$FindBin::Bin/fixtures/$file";
    my $id = $t->id($name);

    my $r = $t->get("/selfies/$id");

    is($r->{status}, 200, "$name: 200");
    is(sha256_hex($r->{body}), $t->fixture_sha256($file),
       "$name: body is $file byte for byte");
    is($r->{headers}{'content-type'}, $type, "$name: Content-Type $type");
    is($r->{headers}{'content-length'}, $size,
       "$name: Content-Length $size");
    is($r->{headers}{'x-content-type-options'}, 'nosniff',
       "$name: nosniff");
    is($r->{headers}{'cache-control'}, 'private, no-store',
       "$name: Cache-Control private, no-store");

    my $h = $t->head("/selfies/$id");

    is($h->{status}, 200, "$name: HEAD 200");
    is($h->{body}, '', "$name: HEAD has no body");
    is($h->{headers}{'content-length'}, $size,
       "$name: HEAD Content-Length is the image's");
    is($h->{headers}{'content-type'}, $type, "$name: HEAD Content-Type");
}

# processIds in upper case are canonical too
my $upper = uc $t->id('jpeg-small');
my $r = $t->get("/selfies/$upper");
is($r->{status}, 200, 'upper-case processId accepted');

# Unico's own response headers stay behind the gateway
$r = $t->get('/selfies/' . $t->id('jpeg-small'));
ok(!exists $r->{headers}{'set-cookie'}, 'no Set-Cookie from Unico');
ok(!exists $r->{headers}{'x-request-id'}, 'no X-Request-Id from Unico');

# the client's credentials, cookies and body never reach Unico
my $before = scalar @{ $t->mock_requests };

$r = $t->request('GET', '/selfies/' . $t->id('jpeg-medium'),
                 headers => { 'Cookie' => 'session=client-secret',
                              'Authorization' => 'Bearer client-token',
                              'Accept-Encoding' => 'gzip',
                              'X-Forwarded-For' => '203.0.113.9' });
is($r->{status}, 200, 'request with client headers served');

my @calls = @{ $t->mock_requests };
is(scalar @calls, $before + 1, 'exactly one call to Unico');

my $call = $calls[-1];
is($call->{method}, 'GET', 'Unico called with GET');
is($call->{path}, '/client/v1/process/' . $t->id('jpeg-medium') . '/selfie',
   'Unico called on the Get Selfie path');
is($call->{headers}{authorization}, "Bearer $UnicoTest::TOKEN",
   'Unico gets the gateway token');
ok(!exists $call->{headers}{cookie}, 'no client Cookie reaches Unico');
ok(!exists $call->{headers}{'accept-encoding'},
   'no client Accept-Encoding reaches Unico');
ok(!exists $call->{headers}{'x-forwarded-for'},
   'no other client header reaches Unico');
is($call->{body} // '', '', 'no body reaches Unico');

# a body sent with GET is discarded, the connection stays usable
$r = $t->request('GET', '/selfies/' . $t->id('jpeg-small'),
                 body => 'x' x 1000);
is($r->{status}, 200, 'GET with a body served');
is($t->mock_requests->[-1]{body} // '', '', 'the body did not reach Unico');

# the internal location cannot be reached from outside, and carries no
# token outside the module's subrequests
$r = $t->get('/_unico_api/client/v1/process/' . $t->id('jpeg-small')
             . '/selfie');
is($r->{status}, 404, 'the internal API location is not public');

like($t->access_log, qr/^200 ok 200 /m, 'access log: status, reason, Unico');

$t->check_logs;

done_testing;
