# HTTP/2 over TLS: curl --http2 gets the same bytes and headers as
# HTTP/1.1, for GET, HEAD, ranges, 304, signed URLs, failures, and for
# several streams at once on one connection.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use Test::More;
use Time::HiRes qw(time);
use UnicoTest;

my $version = `curl -V 2>/dev/null` // '';
plan skip_all => 'curl without HTTP/2' unless $version =~ /\bHTTP2\b/;

my $t = UnicoTest->new;
my $key = $t->signing_key('h2');
$t->write_file('keys', "$key\n");

$t->start_mock;
my $tls = UnicoTest::free_port();

$t->start_nginx($t->selfie_conf(http => <<"CONF"));
    server {
        listen               127.0.0.1:$tls ssl http2;
        ssl_certificate      %%CERTS%%/server.pem;
        ssl_certificate_key  %%CERTS%%/server.key;
        access_log           %%DIR%%/logs/access.log unico;

        location ~ ^/selfies/(?<unico_process>[^/]+)\$ {
            unico_selfie        \$unico_process;
            unico_selfie_api    /_unico_api;
            unico_selfie_token  $UnicoTest::TOKEN;
        }

        location ~ ^/signed/(?<signed_process>[^/]+)\$ {
            unico_selfie                 \$signed_process;
            unico_selfie_api             /_unico_api;
            unico_selfie_token           $UnicoTest::TOKEN;
            unico_selfie_signature_keys  %%DIR%%/keys;
        }

        location /_unico_api/ {
            internal;
            include                        %%CONF%%/unico_selfie_api.conf;
            proxy_ssl_trusted_certificate  %%CERTS%%/ca.pem;
            proxy_ssl_name                 localhost;
            proxy_read_timeout             2s;
            proxy_pass                     https://%%MOCK%%/;
        }
    }
CONF

$t->wait_port($tls, 'nginx');

my $base = "https://localhost:$tls";
my @tls = ('--cacert', $t->certs . '/ca.pem',
           '--resolve', "localhost:$tls:127.0.0.1");

sub h2 { $t->curl('--http2', @tls, @_) }
sub h1 { $t->curl('--http1.1', @tls, @_) }

sub header {
    my ($head, $name) = @_;
    my ($v) = $head =~ /^\Q$name\E:\s*([^\r\n]*)/mi;
    return $v;
}

my %fixtures = ('jpeg-small' => 'selfie-360x480.jpg',
                'jpeg-medium' => 'selfie-720x960.jpg',
                'jpeg-large' => 'selfie-1080x1440.jpg',
                'png' => 'selfie-480x640.png');

for my $name (sort keys %fixtures) {
    my $id = $t->id($name);
    my $sha = $t->fixture_sha256($fixtures{$name});

    my ($rc, $head, $body) = h2("$base/selfies/$id");
    is($rc, 0, "$name: curl --http2 ran");
    like($head, qr{^HTTP/2 200}, "$name: HTTP/2 200");
    is(sha256_hex($body), $sha, "$name: HTTP/2 bytes are the fixture's");

    my ($rc1, $head1, $body1) = h1("$base/selfies/$id");
    like($head1, qr{^HTTP/1\.1 200}, "$name: HTTP/1.1 over TLS 200");
    is($body1, $body, "$name: HTTP/2 and HTTP/1.1 bytes are the same");

    my $plain = $t->get("/selfies/$id");
    is($plain->{body}, $body, "$name: and the same as plain HTTP/1.1");

    for my $h ('content-type', 'content-length', 'etag', 'cache-control',
               'x-content-type-options')
    {
        is(header($head, $h), header($head1, $h),
           "$name: $h is the same in HTTP/2");
    }
}

my $id = $t->id('jpeg-medium');
my $file = "$FindBin::Bin/fixtures/selfie-720x960.jpg";
my $image = do { open my $fh, '<:raw', $file or die; local $/; <$fh> };

my ($rc, $head, $body) = h2('-I', "$base/selfies/$id");
like($head, qr{^HTTP/2 200}, 'HEAD over HTTP/2: 200');
is(header($head, 'content-length'), length $image, '... the Content-Length');
unlike($body, qr/\xFF\xD8\xFF/, '... no image bytes');

($rc, $head, $body) = h2('-r', '0-99', "$base/selfies/$id");
like($head, qr{^HTTP/2 206}, 'a range over HTTP/2: 206');
is($body, substr($image, 0, 100), '... the bytes');

($rc, $head, $body) = h2('-r', '0-9,20-29', "$base/selfies/$id");
like($head, qr{^HTTP/2 206}, 'two ranges over HTTP/2: 206');
like(header($head, 'content-type'), qr{^multipart/byteranges},
     '... multipart');

my $etag = header($head, 'etag');
($rc, $head, $body) = h2('-H', "If-None-Match: $etag", "$base/selfies/$id");
like($head, qr{^HTTP/2 304}, 'If-None-Match over HTTP/2: 304');
is($body, '', '... no body');

my $exp = int(time) + 300;
($rc, $head, $body) = h2($base . $t->signed_path($key, $id, $exp,
                                                 prefix => '/signed/'));
like($head, qr{^HTTP/2 200}, 'a signed URL over HTTP/2: 200');
is($body, $image, '... the image');

my $before = $t->selfie_calls;
($rc, $head) = h2("$base/signed/$id?expires=$exp&sig=x");
like($head, qr{^HTTP/2 403}, 'a bad signature over HTTP/2: 403');
is($t->selfie_calls, $before, '... and no call to Unico');

($rc, $head) = h2("$base/selfies/" . $t->id('status-404'));
like($head, qr{^HTTP/2 404}, 'Unico 404 over HTTP/2: 404');

($rc, $head) = h2("$base/selfies/" . $t->id('slow'));
like($head, qr{^HTTP/2 504}, 'Unico slow over HTTP/2: 504');

# several streams on one connection, each byte-exact

my @names = (sort keys %fixtures) x 3;
my @args = ('--http2', @tls, '-sS', '--no-progress-meter', '--max-time', '30',
            '--parallel',
            '--parallel-immediate', '--parallel-max', '12');

for my $i (0 .. $#names) {
    push @args, '-o', $t->dir . "/stream-$i", "$base/selfies/"
                . $t->id($names[$i]);
}

system('curl', @args);
is($? >> 8, 0, '12 streams in parallel: curl ran');

my $same = grep {
    sha256_hex($t->slurp($t->dir . "/stream-$_"))
        eq $t->fixture_sha256($fixtures{ $names[$_] })
} 0 .. $#names;
is($same, scalar @names, '12 streams in parallel: every body byte-exact');

$t->check_logs;

done_testing;
