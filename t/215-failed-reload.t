# A reload that fails changes nothing the running workers use: nginx opens
# the new listening sockets after it has initialised the shared zones, so
# the module gives the token slots out only once the new configuration is
# committed (init_module), never in the zone's init.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use IO::Socket::INET;
use Test::More;
use Time::HiRes qw(sleep);
use UnicoTest;

my $ISS = 'gateway@tenant-7f3a.iam.acesso.io';
my $AUD = 'https://identityhomolog.acesso.io';

my $t = UnicoTest->new;
my $certs = $t->certs;

$t->start_mock(tokens => [], args => [
    '--public-key', "$certs/sa.pub.pem", '--issuer', $ISS,
    '--audience', $AUD, '--token-ttl', 3600]);

sub conf {
    my (%o) = @_;
    my $key = $o{key} // 'sa.key';
    my $extra = $o{extra} // '';

    return $t->selfie_conf(
        token => '',
        selfie => 'unico_selfie_account sandbox;',
        http => <<"CONF",
    unico_selfie_service_account sandbox {
        key_file     %%CERTS%%/$key;
        issuer       $ISS;
        environment  sandbox;
        token_api    /_unico_token;
    }
    $extra
CONF
        server => UnicoTest::token_location());
}

$t->start_nginx(conf(), workers => 2);

my $id = $t->id('jpeg-small');
my $sha = $t->fixture_sha256('selfie-360x480.jpg');

is($t->get("/selfies/$id")->{status}, 200, 'before the reload: 200');
is($t->token_calls, 1, 'one token request');

# a port that nginx cannot bind: the new configuration fails to load after
# its zones were initialised

my $busy = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1',
                                 LocalPort => 0, ReuseAddr => 0)
    or die "listen: $!";
my $busy_port = $busy->sockport;

for my $case (['another key for the account', 'sa-other.key'],
              ['the same account', 'sa.key'])
{
    my ($name, $key) = @$case;
    my $log = length $t->error_log;

    $t->write_conf(conf(key => $key, extra => "server { listen "
                        . "127.0.0.1:$busy_port; }"), workers => 2);
    kill 'HUP', $t->master_pid;

    # nginx tries to bind five times, 500 ms apart, then gives up
    ok($t->eventually(sub {
           substr($t->error_log, $log) =~ /still could not bind\(\)/
       }, 15), "$name: the reload failed on the busy port");

    for (1 .. 4) {
        my $r = $t->get("/selfies/$id");
        is($r->{status}, 200, "$name, after the failed reload: 200 ($_)");
        is(sha256_hex($r->{body}), $sha, "$name: byte-exact ($_)");
    }

    is($t->token_calls, 1, "$name: the token held is still used");
    unlike(substr($t->error_log, $log), qr/reason: internal/,
           "$name: no internal error");
}

# a reload that succeeds with the same account keeps the token too
close $busy;
my $log = length $t->error_log;
$t->write_conf(conf(), workers => 2);
kill 'HUP', $t->master_pid;
ok($t->eventually(sub {
       substr($t->error_log, $log) =~ /start worker process/ }, 10),
   'a good reload');
sleep 0.5;

is($t->get("/selfies/$id")->{status}, 200, 'after a good reload: 200');
is($t->token_calls, 1, 'after a good reload: the same token');

$t->check_logs_except(qr/bind\(\) to 127\.0\.0\.1:\d+ failed/,
                     qr/still could not bind\(\)/);

done_testing;
