# HTTP semantics of the image: a strong ETag from the bytes, 304 for a
# matching If-None-Match (after one call to Unico: the ETag is only known
# once the image is), 412 for a failed If-Match, byte ranges (single,
# suffix, open, multipart, unsatisfiable, If-Range), exact HEAD, and
# unico_selfie_cache_control.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use Test::More;
use UnicoTest;

my $t = UnicoTest->new;
$t->start_mock;

sub extra_location {
    my ($prefix, $directives) = @_;
    return <<"CONF";
        location ~ ^/$prefix/(?<${prefix}_process>[^/]+)\$ {
            unico_selfie        \$${prefix}_process;
            unico_selfie_api    /_unico_api;
            unico_selfie_token  test-token-2b7e1516.28aed2a6;
            $directives
        }
CONF
}

$t->start_nginx($t->selfie_conf(
    server => extra_location('public', 'unico_selfie_cache_control '
                                       . '"public, max-age=60";')
              . extra_location('nocc', 'unico_selfie_cache_control off;')
              . extra_location('noetag', 'etag off;')
              . extra_location('onerange', 'max_ranges 1;'),
));

my $id = $t->id('jpeg-small');
my $file = "$FindBin::Bin/fixtures/selfie-360x480.jpg";
my $size = -s $file;
my $image = do { open my $fh, '<:raw', $file or die; local $/; <$fh> };

# the ETag

my $r = $t->get("/selfies/$id");
my $etag = $r->{headers}{etag} // '';

is($r->{status}, 200, 'GET: 200');
like($etag, qr/^"[0-9a-f]{16}"$/, "a strong ETag: $etag");
is($r->{headers}{'accept-ranges'}, 'bytes', 'Accept-Ranges: bytes');
ok(!exists $r->{headers}{'last-modified'}, 'no Last-Modified');
is($r->{headers}{'cache-control'}, 'private, no-store',
   'Cache-Control: private, no-store by default');

$r = $t->get("/selfies/$id");
is($r->{headers}{etag}, $etag, 'the same bytes, the same ETag');

my %tags;
for my $name (qw(jpeg-small jpeg-medium jpeg-large png)) {
    $tags{ $t->get('/selfies/' . $t->id($name))->{headers}{etag} } = 1;
}
is(scalar keys %tags, 4, 'four images, four ETags');

# If-None-Match

my $before = $t->selfie_calls;
$r = $t->get("/selfies/$id", headers => { 'If-None-Match' => $etag });
is($r->{status}, 304, 'If-None-Match with the ETag: 304');
is($r->{body}, '', '... without a body');
is($r->{headers}{etag}, $etag, '... with the ETag');
is($r->{headers}{'cache-control'}, 'private, no-store',
   '... and Cache-Control');
ok(!exists $r->{headers}{'content-length'}, '... and no Content-Length');
is($t->selfie_calls, $before + 1,
   '... after one call to Unico (the ETag comes from the image)');
ok($t->eventually(sub { $t->access_log =~ /^304 ok 200 /m }),
   'access log: 304 ok 200');

$r = $t->get("/selfies/$id",
             headers => { 'If-None-Match' => "\"0000000000000000\", $etag" });
is($r->{status}, 304, 'If-None-Match with a list holding it: 304');

$r = $t->get("/selfies/$id", headers => { 'If-None-Match' => "W/$etag" });
is($r->{status}, 304, 'If-None-Match compares weakly: W/ matches');

$r = $t->get("/selfies/$id", headers => { 'If-None-Match' => '*' });
is($r->{status}, 304, 'If-None-Match: * matches');

$r = $t->get("/selfies/$id",
             headers => { 'If-None-Match' => '"0123456789abcdef"' });
is($r->{status}, 200, 'If-None-Match with another ETag: 200');
is(sha256_hex($r->{body}), sha256_hex($image), '... the image');

$r = $t->head("/selfies/$id", headers => { 'If-None-Match' => $etag });
is($r->{status}, 304, 'HEAD with If-None-Match: 304');

$r = $t->get("/selfies/$id", headers => { 'If-Match' => '"nope"' });
is($r->{status}, 412, 'If-Match with another ETag: 412');

$r = $t->get("/selfies/$id", headers => { 'If-Match' => $etag });
is($r->{status}, 200, 'If-Match with the ETag: 200');

$r = $t->get('/selfies/' . $t->id('status-404'),
             headers => { 'If-None-Match' => '*' });
is($r->{status}, 404, 'a failure is not turned into 304');

# HEAD

$r = $t->head("/selfies/$id");
is($r->{status}, 200, 'HEAD: 200');
is($r->{body}, '', '... no body');
is($r->{headers}{'content-length'}, $size, '... the exact Content-Length');
is($r->{headers}{etag}, $etag, '... the same ETag as GET');
is($r->{headers}{'content-type'}, 'image/jpeg', '... the Content-Type');

# ranges

$r = $t->get("/selfies/$id", headers => { Range => 'bytes=0-99' });
is($r->{status}, 206, 'bytes=0-99: 206');
is($r->{headers}{'content-range'}, "bytes 0-99/$size", '... Content-Range');
is($r->{headers}{'content-length'}, 100, '... Content-Length 100');
is($r->{body}, substr($image, 0, 100), '... the first 100 bytes');
is($r->{headers}{etag}, $etag, '... and the ETag');

$r = $t->get("/selfies/$id", headers => { Range => 'bytes=-100' });
is($r->{status}, 206, 'suffix bytes=-100: 206');
is($r->{headers}{'content-range'},
   'bytes ' . ($size - 100) . '-' . ($size - 1) . "/$size",
   '... Content-Range');
is($r->{body}, substr($image, -100), '... the last 100 bytes');

$r = $t->get("/selfies/$id", headers => { Range => 'bytes=1000-' });
is($r->{status}, 206, 'open bytes=1000-: 206');
is($r->{body}, substr($image, 1000), '... the rest of the image');

$r = $t->get("/selfies/$id",
             headers => { Range => "bytes=0-$size" });
is($r->{status}, 206, 'a range past the end is cut to the image');
is($r->{body}, $image, '... the whole image');

$r = $t->get("/selfies/$id", headers => { Range => 'bytes=0-9,100-109' });
is($r->{status}, 206, 'two ranges: 206');
my ($boundary) = ($r->{headers}{'content-type'} // '')
                 =~ m{^multipart/byteranges; boundary=(\S+)$};
ok($boundary, '... multipart/byteranges');

my @parts = grep { /Content-Range/ } split /--\Q$boundary\E/, $r->{body};
is(scalar @parts, 2, '... two parts');
like($parts[0], qr{Content-Type: image/jpeg\r\nContent-Range: bytes 0-9/$size\r\n\r\n\Q${\ substr($image, 0, 10)}\E\r\n$},
     '... the first part');
like($parts[1], qr{Content-Range: bytes 100-109/$size\r\n\r\n\Q${\ substr($image, 100, 10)}\E\r\n$},
     '... the second part');
is($r->{headers}{'content-length'}, length $r->{body},
   '... and its Content-Length is exact');

$r = $t->get("/onerange/$id", headers => { Range => 'bytes=0-9,100-109' });
is($r->{status}, 200, 'max_ranges 1 and two ranges: the whole image');

$r = $t->get("/selfies/$id", headers => { Range => "bytes=$size-" });
is($r->{status}, 416, 'bytes=<size>-: 416');
is($r->{headers}{'content-range'}, "bytes */$size", '... Content-Range */size');

$r = $t->get("/selfies/$id", headers => { Range => 'bytes=0-99',
                                          'If-Range' => $etag });
is($r->{status}, 206, 'If-Range with the ETag: 206');

$r = $t->get("/selfies/$id", headers => { Range => 'bytes=0-99',
                                          'If-Range' => '"0123456789abcdef"' });
is($r->{status}, 200, 'If-Range with another ETag: the whole image');
is(length $r->{body}, $size, '... all of it');

$r = $t->head("/selfies/$id", headers => { Range => 'bytes=0-99' });
is($r->{status}, 206, 'HEAD with a range: 206');
is($r->{headers}{'content-length'}, 100, '... Content-Length 100');
is($r->{body}, '', '... no body');

# the PNG, and a failure is not ranged

my $png = $t->id('png');
$r = $t->get("/selfies/$png", headers => { Range => 'bytes=0-7' });
is($r->{body}, "\x89PNG\r\n\x1a\n", 'PNG: bytes=0-7 is the signature');

$r = $t->get('/selfies/' . $t->id('status-500'),
             headers => { Range => 'bytes=0-7' });
is($r->{status}, 502, 'a failure with a Range: 502');

# Cache-Control and etag off

$r = $t->get("/public/$id");
is($r->{headers}{'cache-control'}, 'public, max-age=60',
   'unico_selfie_cache_control sets the header');

$r = $t->get("/nocc/$id");
is($r->{status}, 200, 'unico_selfie_cache_control off: 200');
ok(!exists $r->{headers}{'cache-control'}, '... and no Cache-Control');

$r = $t->get("/noetag/$id", headers => { 'If-None-Match' => $etag });
is($r->{status}, 200, 'etag off: no 304');
ok(!exists $r->{headers}{etag}, '... and no ETag');

$t->check_logs;

# nginx -t

my $c = UnicoTest->new;
my ($rc, $out) = $c->nginx_t(<<'CONF');
    server {
        listen 127.0.0.1:%%PORT%%;
        unico_selfie_cache_control  "";
    }
CONF
isnt($rc, 0, 'an empty unico_selfie_cache_control: nginx -t fails');
like($out, qr/use "off"/, '... pointing to off');

($rc, $out) = $c->nginx_t(<<'CONF');
    unico_selfie_cache_control  "private, max-age=30";
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            unico_selfie_cache_control  off;
        }
    }
CONF
is($rc, 0, 'unico_selfie_cache_control in http{} and off in a location');

done_testing;
