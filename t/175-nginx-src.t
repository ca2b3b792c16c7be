# NGINX_SRC=<tree>: a tree without Debian's conf_flags (as nginx.org's
# tarball is) is configured --with-compat and gives a module the system's
# nginx loads; a tree of another version, or options that change the module
# signature, stop the build with a message that says why, before a module
# that nginx would refuse exists.
#
# The "plain" tree is a copy of /usr/share/nginx/src without conf_flags and
# debian/ (the headers, auto/ and configure of the same nginx.org release).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use UnicoTest;

my $NGINX = '/usr/sbin/nginx';
my $SRC = '/usr/share/nginx/src';

plan skip_all => 'build.sh builds for the system nginx; this run tests '
                 . $ENV{TEST_NGINX_BINARY}
    if $ENV{TEST_NGINX_BINARY} && $ENV{TEST_NGINX_BINARY} ne $NGINX;
plan skip_all => "no $SRC (nginx-dev)" unless -x "$SRC/configure";

my $t = UnicoTest->new;
my $dir = $t->dir;
my $repo = $t->repo;

# build.sh with NGINX_SRC and its own build directory: (exit, output)
sub build {
    my ($tree, %env) = @_;
    local $ENV{NGINX_SRC} = $tree;
    local $ENV{UNICO_BUILD_DIR} = "$dir/build-" . ++$t->{builds};
    local @ENV{keys %env} = values %env;
    delete local $ENV{UNICO_NGINX};
    my $out = `$repo/build.sh build 2>&1`;
    return ($? >> 8, $out, $ENV{UNICO_BUILD_DIR});
}

system('cp', '-a', $SRC, "$dir/plain") == 0 or die 'cp';
system('rm', '-rf', "$dir/plain/conf_flags", "$dir/plain/debian") == 0
    or die 'rm';

# a plain tree: --with-compat

my ($rc, $out, $build) = build("$dir/plain");
is($rc, 0, 'a tree without conf_flags: built') or diag($out);
like($out, qr/has no conf_flags: configuring --with-compat/,
     '... configured --with-compat, and says so');

my $so = "$build/ngx_http_unico_selfie_module.so";
$t->write_file('load.conf', "load_module $so;\nevents {}\n", 0644);
my $cmd = "$NGINX -t -q -g 'pid $dir/t.pid; error_log stderr;'"
          . " -c $dir/load.conf";
my $t_out = `$cmd 2>&1`;
is($? >> 8, 0, '... and the system nginx loads that module') or diag($t_out);

# options that change the signature

($rc, $out, $build) = build("$dir/plain",
                            NGINX_CONF_FLAGS => '--with-http_ssl_module');
isnt($rc, 0, 'a tree configured without --with-compat: the build stops');
my $refuse = 'nginx would refuse the module';
like($out, qr/module signature \S+ differs from \S+ of \S*nginx: $refuse/,
     '... saying the signature differs and nginx would refuse it');
ok(!-e "$build/ngx_http_unico_selfie_module.so", '... and no module exists');

# another nginx version

system('cp', '-a', "$dir/plain", "$dir/other") == 0 or die 'cp';
my $h = "$dir/other/src/core/nginx.h";
my $text = $t->slurp($h);
$text =~ s/(#define NGINX_VERSION\s+")[^"]+"/${1}0.0.1"/ or die 'nginx.h';
$t->write_file('other/src/core/nginx.h', $text, 0644);

($rc, $out, $build) = build("$dir/other");
isnt($rc, 0, 'a tree of another nginx version: the build stops');
like($out, qr/is nginx 0\.0\.1 but \S*nginx is [0-9.]+: nginx would refuse/,
     '... saying which versions differ');
ok(!-e "$build/ngx_http_unico_selfie_module.so", '... and no module exists');

done_testing;
