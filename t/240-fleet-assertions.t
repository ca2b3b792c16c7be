# Two gateways of a fleet with the same service account refresh in the
# same second: Unico accepts an assertion once and RS256 is deterministic,
# so identical claims would collide (1.2.7) and one gateway would back off.
# Each gateway's assertions carry an "exp" derived from its name (the
# hostname, or the account's "instance"): they differ, both are accepted.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Copy qw(copy);
use IO::Select;
use IO::Socket::INET;
use JSON::PP qw(decode_json);
use MIME::Base64 qw(decode_base64url);
use Test::More;
use Time::HiRes qw(sleep time);
use UnicoTest;

my $ISS = 'gateway@tenant-7f3a.iam.acesso.io';
my $AUD = 'https://identityhomolog.acesso.io';

sub conf {
    my ($t, $instance) = @_;
    my $inst = defined $instance ? "instance     $instance;" : '';

    return $t->selfie_conf(
        token => '',
        selfie => 'unico_selfie_account sandbox;',
        http => <<"CONF",
    unico_selfie_service_account sandbox {
        key_file     %%CERTS%%/sa.key;
        issuer       $ISS;
        environment  sandbox;
        token_api    /_unico_token;
        $inst
    }
CONF
        server => UnicoTest::token_location());
}

# Both gateways' first requests, sent in the same second: their responses.
sub same_second {
    my (@gw) = @_;

    # far enough from the end of a second for both to be minted in it
    sleep 0.02 while time - int(time) > 0.3;

    my @s = map {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $_->port)
            or die "connect: $!";
        $s;
    } @gw;

    my $id = $gw[0]->id('jpeg-small');
    $_->syswrite("GET /selfies/$id HTTP/1.1\r\nHost: localhost\r\n"
                 . "Connection: close\r\n\r\n") for @s;

    return map {
        my ($s, $raw, $sel) = ($_, '', IO::Select->new($_));
        while ($sel->can_read(10)) {
            $s->sysread(my $c, 65536) or last;
            $raw .= $c;
        }
        UnicoTest::parse_response($raw);
    } @s;
}

sub claims {
    my ($call) = @_;
    my ($c) = $call->{body} =~ /assertion=[\w-]+\.([\w-]+)\./;
    return decode_json(decode_base64url($c));
}

for my $case (['two instances', 'edge-gw-1', 'edge-gw-2'],
              ['one hostname, no instance', undef, undef])
{
    my ($name, @instance) = @$case;

    my $t1 = UnicoTest->new;
    my $certs = $t1->certs;
    $t1->start_mock(tokens => [], args => [
        '--public-key', "$certs/sa.pub.pem", '--issuer', $ISS,
        '--audience', $AUD]);

    # a second gateway: its own prefix, the first one's mock and keys
    my $t2 = UnicoTest->new;
    mkdir $t2->dir . '/certs';
    copy($_, $t2->dir . '/certs/') for glob "$certs/*";
    $t2->{mock_port} = $t1->mock_port;

    $t1->start_nginx(conf($t1, $instance[0]));
    $t2->start_nginx(conf($t2, $instance[1]));

    my @r = same_second($t1, $t2);
    my @calls = grep { $_->{path} eq '/oauth2/token' } @{ $t1->mock_requests };
    is(scalar @calls, 2, "$name: two token requests");

    my @c = map { claims($_) } @calls;
    is($c[0]{iat}, $c[1]{iat}, "$name: minted in the same second");

    if (defined $instance[0]) {
        is($r[0]{status}, 200, "$name: the first gateway is served");
        is($r[1]{status}, 200, "$name: the second gateway is served");
        isnt($c[0]{exp}, $c[1]{exp}, "$name: the assertions differ by exp");

        for (@c) {
            my $life = $_->{exp} - $_->{iat};
            ok($life >= 600 && $life < 3600,
               "$name: exp - iat = $life, within Unico's hour");
        }

        unlike($t1->error_log . $t2->error_log, qr/1\.2\.7/,
               "$name: no assertion refused as reused");
    } else {
        # the collision the instance setting exists for: the test does
        # construct it
        is($c[0]{exp}, $c[1]{exp}, "$name: identical assertions");
        is(join(' ', sort map { $_->{status} } @r), '200 502',
           "$name: one gateway is refused (1.2.7)");
    }

    $t2->check_logs;
    $t1->check_logs;
}

done_testing;
