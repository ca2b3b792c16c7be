# A request body is discarded, never sent to Unico; one that cannot be
# discarded (a malformed chunked body) gets nginx's own status, 400, with
# the reason bad_request_body, not 500.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use IO::Select;
use IO::Socket::INET;
use Test::More;
use UnicoTest;

my $t = UnicoTest->new;
$t->start_mock;
$t->start_nginx($t->selfie_conf);

my $id = $t->id('jpeg-small');

sub raw {
    my ($req) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->port,
                                  Timeout => 5) or die "connect: $!";
    $s->syswrite($req);
    my ($raw, $sel) = ('', IO::Select->new($s));
    while ($sel->can_read(10)) {
        $s->sysread(my $chunk, 65536) or last;
        $raw .= $chunk;
        last if UnicoTest::response_complete($raw, 'GET');
    }
    return UnicoTest::parse_response($raw);
}

my $calls = $t->selfie_calls;

my $r = raw("GET /selfies/$id HTTP/1.1\r\nHost: localhost\r\n"
            . "Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
            . "zz\r\nnot a chunk\r\n0\r\n\r\n");
is($r->{status}, 400, 'a malformed chunked body: 400');
is($t->selfie_calls, $calls, 'a malformed chunked body: no call to Unico');
ok($t->eventually(sub { $t->access_log =~ /^400 bad_request_body /m }),
   'logged with the reason bad_request_body');

$r = raw("GET /selfies/$id HTTP/1.1\r\nHost: localhost\r\n"
         . "Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
         . "5\r\nhello\r\n0\r\n\r\n");
is($r->{status}, 200, 'a well-formed body: discarded, 200');
is(sha256_hex($r->{body}), $t->fixture_sha256('selfie-360x480.jpg'),
   'a well-formed body: byte-exact');

my ($last) = grep { $_->{path} =~ /selfie$/ } reverse @{ $t->mock_requests };
is($last->{body}, '', 'the body never reaches Unico');

$t->check_logs;

done_testing;
