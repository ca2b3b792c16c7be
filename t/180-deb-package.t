# The Debian package, as an operator meets it: "./build.sh deb" builds
# libnginx-mod-http-unico-selfie for the system's nginx, "apt-get install
# ./<deb>" installs it, Debian's modules-enabled mechanism loads it
# ("nginx -t" on /etc/nginx/nginx.conf), the system nginx serves a selfie
# from the mock with a configuration in a temporary prefix that includes
# /etc/nginx/modules-enabled/*.conf and the packaged snippets, and
# "apt-get purge" leaves the machine as it was.
#
# Needs root and the system's nginx: skipped otherwise, and skipped when the
# package is already installed (an operator's install is not touched).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use Test::More;
use UnicoTest;

my $PKG = 'libnginx-mod-http-unico-selfie';
my $NGINX = '/usr/sbin/nginx';
my $REPO = UnicoTest->repo;

plan skip_all => 'needs root (apt-get install, nginx -t on /etc/nginx)'
    if $> != 0;
plan skip_all => "the package is for the system's nginx, not for "
                 . "$ENV{TEST_NGINX_BINARY}"
    if $ENV{TEST_NGINX_BINARY} && $ENV{TEST_NGINX_BINARY} ne $NGINX;
plan skip_all => "no $NGINX or apt-get"
    unless -x $NGINX && -x '/usr/bin/apt-get';

my ($line) = `$NGINX -v 2>&1` =~ m{nginx/(\d+\.\d+)};
plan skip_all => "UNICO_NGINX=$ENV{UNICO_NGINX} is not the system's "
                 . "nginx $line"
    if $ENV{UNICO_NGINX} && $ENV{UNICO_NGINX} ne $line;

sub installed {
    my $s = `dpkg-query -W -f='\${db:Status-Abbrev}' $PKG 2>/dev/null`;
    return $s =~ /^i/ ? 1 : $s =~ /^[a-z]/ && $s !~ /^un/ ? 'partly' : 0;
}

plan skip_all => "$PKG is installed on this machine: not touching it"
    if installed();

# what the package touches, before
sub state {
    return join "\n", map { "$_: " . join(' ', sort glob("$_/*")) }
        qw(/etc/nginx/modules-enabled /etc/nginx/snippets
           /usr/lib/nginx/modules /usr/share/nginx/modules-available);
}

my $before = state();
my $purge_needed = 0;

$ENV{DEBIAN_FRONTEND} = 'noninteractive';

sub purge {
    return unless $purge_needed;
    $purge_needed = 0;
    return `apt-get -o DPkg::Lock::Timeout=600 purge -y -q $PKG 2>&1`;
}

END { purge() }

# build

my $deb = `$REPO/build.sh deb 2>$REPO/.build/deb-test.log`;
is($? >> 8, 0, './build.sh deb: exit 0')
    or diag(`tail -30 $REPO/.build/deb-test.log`);
chomp $deb;
like($deb, qr{/${PKG}_[0-9.]+-1_[a-z0-9]+\.deb$}, "the package: $deb")
    or die "no package\n";

my $info = `dpkg-deb -I $deb`;
like($info, qr/^ Depends:.*\bnginx-abi-[0-9.]+-\d+\b/m,
     'dpkg-deb -I: Depends on the nginx-abi of dh_nginx');
my ($abi) = $info =~ /\b(nginx-abi-[0-9.]+-\d+)\b/;
like(`dpkg-query -W -f='\${Provides}' nginx 2>/dev/null`, qr/\Q$abi\E/,
     "the system's nginx provides $abi");

my $files = `dpkg-deb -c $deb`;
for (qw(./usr/lib/nginx/modules/ngx_http_unico_selfie_module.so
        ./usr/share/nginx/modules-available/mod-http-unico-selfie.conf
        ./etc/nginx/snippets/unico_selfie_api.conf
        ./etc/nginx/snippets/unico_selfie_token.conf))
{
    like($files, qr/ \Q$_\E$/m, "in the package: $_");
}

my $conffiles = `dpkg-deb --ctrl-tarfile $deb | tar -xO ./conffiles`;
is($conffiles, "/etc/nginx/snippets/unico_selfie_api.conf\n"
               . "/etc/nginx/snippets/unico_selfie_token.conf\n",
   'the snippets are conffiles');

# install

$purge_needed = 1;
my $out = `apt-get -o DPkg::Lock::Timeout=600 install -y -q $deb 2>&1`;
is($? >> 8, 0, 'apt-get install ./<deb>: exit 0') or diag($out);
is(installed(), 1, "$PKG is installed");

my $link = '/etc/nginx/modules-enabled/50-mod-http-unico-selfie.conf';
is(readlink($link), '/usr/share/nginx/modules-available/'
                    . 'mod-http-unico-selfie.conf',
   "enabled: $link");
is(scalar `cat $link`,
   "load_module modules/ngx_http_unico_selfie_module.so;\n",
   'the load file loads the module');

$out = `$NGINX -t 2>&1`;
is($? >> 8, 0, 'nginx -t on /etc/nginx/nginx.conf with it enabled')
    or diag($out);

# serve a selfie through the system's nginx, the module loaded the Debian
# way, with a configuration of the test's own in a temporary prefix

my $t = UnicoTest->new(module => '/usr/lib/nginx/modules/'
                                 . 'ngx_http_unico_selfie_module.so',
                       nginx => $NGINX);
$t->start_mock;

my $dir = $t->dir;
my $port = $t->{port} = UnicoTest::free_port();
my $mock = $t->mock_port;
my $certs = $t->certs;
my $token = $UnicoTest::TOKEN;

my $conf = $t->write_file('deb.conf', <<"CONF", 0644);
include /etc/nginx/modules-enabled/*.conf;

daemon          off;
pid             $dir/nginx.pid;
error_log       $dir/logs/error.log info;

events { worker_connections 64; }

http {
    access_log             $dir/logs/access.log;
    client_body_temp_path  $dir/tmp/body;
    proxy_temp_path        $dir/tmp/proxy;
    fastcgi_temp_path      $dir/tmp/fastcgi;
    uwsgi_temp_path        $dir/tmp/uwsgi;
    scgi_temp_path         $dir/tmp/scgi;

    server {
        listen  127.0.0.1:$port;

        location ~ ^/selfies/(?<unico_process>[^/]+)\$ {
            unico_selfie        \$unico_process;
            unico_selfie_api    /_unico_api;
            unico_selfie_token  $token;
        }

        location /_unico_api/ {
            internal;
            include                        snippets/unico_selfie_api.conf;
            proxy_ssl_trusted_certificate  $certs/ca.pem;
            proxy_ssl_name                 localhost;
            proxy_pass                     https://127.0.0.1:$mock/;
        }
    }
}
CONF

# the load file's "modules/..." is relative to the prefix and "include
# snippets/..." to the configuration's directory: the prefix has both as
# Debian's /usr/share/nginx and /etc/nginx have them
symlink '/usr/lib/nginx/modules', "$dir/modules";
symlink '/etc/nginx/snippets', "$dir/snippets";

$out = `$NGINX -t -p $dir -c $conf -e $dir/logs/t.log 2>&1`;
is($? >> 8, 0, 'nginx -t with modules-enabled and the packaged snippet')
    or diag($out . $t->slurp("$dir/logs/t.log"));

$t->run_nginx($conf);

my $r = $t->get('/selfies/' . $t->id('jpeg-small'));
is($r->{status}, 200, 'the packaged module serves a selfie: 200');
is(sha256_hex($r->{body}), $t->fixture_sha256('selfie-360x480.jpg'),
   '... byte for byte');
is($r->{headers}{'cache-control'}, 'private, no-store', '... with its headers');

$t->check_logs;

# purge: the machine as it was

$out = purge();
is(installed(), 0, "apt-get purge $PKG: gone") or diag($out);
ok(!-e $link && !-l $link, 'the modules-enabled link is gone');
is(state(), $before, 'modules, load files and snippets as before the test');

done_testing;
