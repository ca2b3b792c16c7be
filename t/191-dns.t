# docs/troubleshooting.md, "DNS": the configuration with a resolver and a
# variable proxy_pass follows Unico's DNS while nginx runs.  A DNS server
# on loopback (t/mock/dns.pl) answers api.idcloud.unico.app first with
# 127.0.0.1, where nothing listens on the emulator's port, then with
# 127.0.0.2, where the emulator listens, then with 127.0.0.1 again: the
# selfie fails, is served, fails, without a reload.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use IO::Socket::INET;
use Test::More;
use Time::HiRes qw(sleep time);
use DocExamples;
use UnicoTest;

eval { require Net::DNS::Nameserver; 1 }
    or plan skip_all => 'Net::DNS::Nameserver not installed (Debian package '
                        . 'libnet-dns-perl; ./build.sh test installs it)';

IO::Socket::INET->new(LocalAddr => '127.0.0.2', LocalPort => 0, Proto => 'tcp')
    or plan skip_all => '127.0.0.2 is not a local address here';

my $t = UnicoTest->new;
my $repo = $t->repo;
my $dir = $t->dir;
my $certs = $t->certs;
my ($cert, $key) = DocExamples::unico_cert($dir, $certs);

# the block of the docs
my ($block) = grep { $_->{file} eq 'docs/troubleshooting.md'
                     && $_->{heading} =~ /variable proxy_pass/ }
              DocExamples::blocks($repo);
ok($block, 'the DNS block of troubleshooting.md') or BAIL_OUT('no block');
my $conf = $block->{text};

# the emulator on 127.0.0.2 only, on a port free on 127.0.0.1 too
my $port = UnicoTest::free_port();
$t->{mock_port} = $port;
$t->spawn('mock', "$dir/logs/mock.out", $^X, "$repo/t/mock/unico.pl",
          '--listen', "127.0.0.2:$port", '--cert', $cert, '--key', $key,
          '--log', "$dir/logs/mock.log", '--state', "$dir/state",
          '--token', $UnicoTest::TOKEN);
my $deadline = time + 10;
sleep 0.05 until IO::Socket::INET->new(PeerAddr => "127.0.0.2:$port")
                 || time > $deadline;

# the DNS server
my $dns = UnicoTest::free_port();
my $table = "$dir/dns.table";
sub answer {
    open my $fh, '>', "$table.tmp" or die $!;
    print $fh "api.idcloud.unico.app $_[0]\n";
    close $fh;
    rename "$table.tmp", $table or die $!;
}
answer('127.0.0.1');
$t->spawn('dns', "$dir/logs/dns.out", $^X, "$repo/t/mock/dns.pl",
          '--listen', "127.0.0.1:$dns", '--table', $table,
          '--log', "$dir/logs/dns.log", '--ttl', 1);
sleep 0.3;

# the doc's block, with the test's resolver, port and CA
ok($conf =~ s/^(\s*resolver\s+)\S+\s+valid=\S+;/${1}127.0.0.1:$dns valid=1s;/m,
   'the resolver points at the DNS server on loopback');
ok($conf =~ s/(set\s+\$unico_api\s+api\.idcloud\.unico\.app)/$1:$port/,
   'the port of the emulator');
$conf =~ s{/etc/ssl/certs/ca-certificates\.crt}{$certs/ca.pem};
$conf =~ s/include(\s+)unico_selfie_api\.conf/include$1$repo\/conf\/unico_selfie_api.conf/;

$t->start_nginx(<<"CONF");
    server {
        listen  127.0.0.1:%%PORT%%;
        access_log  %%DIR%%/logs/access.log;

        location ~ ^/selfies/(?<unico_process>[^/]+)\$ {
            unico_selfie        \$unico_process;
            unico_selfie_api    /_unico_api;
            unico_selfie_token  $UnicoTest::TOKEN;
        }

$conf
    }
CONF

# (the pid file and the worker come a moment after the port answers, more
# so under the sanitizer build)
my $master = $t->eventually(sub { $t->master_pid });
my @workers = @{ $t->eventually(sub { my @w = $t->worker_pids; @w ? \@w : undef })
                 || [] };
my $id = $t->id('jpeg-small');
my $sha = $t->fixture_sha256('selfie-360x480.jpg');

my $r = $t->get("/selfies/$id");
is($r->{status}, 502, 'the name points where nothing listens: 502');
like($t->error_log, qr/reason: upstream_error/, '... upstream_error');

answer('127.0.0.2');
$r = $t->eventually(sub {
    my $r = $t->get("/selfies/$id");
    $r->{status} == 200 ? $r : undef;
}, 10);
ok($r, 'the answer changed to the emulator: 200, without a reload');
is(sha256_hex($r ? $r->{body} : ''), $sha, '... the selfie, byte-exact');

my @calls = grep { $_->{kind} eq 'selfie' } @{ $t->mock_requests };
ok(@calls >= 1, 'the emulator was called');
is($calls[0]{sni}, 'api.idcloud.unico.app', '... with SNI of the real name');
is($calls[0]{path}, "/client/v1/process/$id/selfie", '... on the API path');

answer('127.0.0.1');
ok($t->eventually(sub { $t->get("/selfies/$id")->{status} == 502 }, 10),
   'the answer changed back: 502 again');

is($t->master_pid, $master, 'the same master throughout');
is_deeply([$t->worker_pids], \@workers, 'the same workers: no reload');

my @q = grep { /^api\.idcloud\.unico\.app A / } split /\n/,
        $t->slurp("$dir/logs/dns.log");
ok((grep { / 127\.0\.0\.1$/ } @q) && (grep { / 127\.0\.0\.2$/ } @q),
   'nginx asked the DNS server and got both answers (' . scalar(@q) . ' queries)');

$t->check_logs;

done_testing;
