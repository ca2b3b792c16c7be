# The demo configuration (conf/demo.conf) as "./build.sh run" serves it,
# and every sample URL the README lists answers the image it promises.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use File::Copy qw(copy);
use Test::More;
use UnicoTest;

my $t = UnicoTest->new;
my $repo = $t->repo;
my $mock = $t->start_mock(tokens => ['demo-token']);
my $port = $t->{port} = UnicoTest::free_port();

# the demo's prefix, with the demo's fixed ports swapped for free ones
my $prefix = $t->dir . '/demo';
mkdir $prefix;
mkdir "$prefix/$_" for qw(conf logs modules);
symlink $t->certs, "$prefix/conf/certs" or die $!;
symlink $t->{module}, "$prefix/modules/ngx_http_unico_selfie_module.so"
    or die $!;

for my $f (glob("$repo/conf/*.conf"), "$repo/conf/demo-signature.keys") {
    copy($f, "$prefix/conf/") or die $!;
}
chmod 0600, "$prefix/conf/demo-signature.keys";

my $conf = $t->slurp("$prefix/conf/demo.conf");
ok($conf =~ s/127\.0\.0\.1:8080/127.0.0.1:$port/g, 'demo listens on 8080');
ok($conf =~ s/127\.0\.0\.1:8443/127.0.0.1:$mock/g, 'demo mock on 8443');
open my $fh, '>', "$prefix/conf/demo.conf" or die $!;
print $fh $conf;
close $fh;

$t->run_nginx("$prefix/conf/demo.conf", $prefix);

# the README's sample URLs
my $readme = $t->slurp("$repo/README.md");
my (%samples, %statuses);
while ($readme =~ m{http://127\.0\.0\.1:8080/selfies/(\S+)\s+#\s*(\S+)}g) {
    my ($id, $what) = ($1, $2);
    if ($what =~ /^(\d{3}):?$/) {
        $statuses{$id} = $1;
    } else {
        $samples{$id} = $what;
    }
}

is(scalar keys %samples, 4, 'README lists the four sample processes');

for my $id (sort keys %samples) {
    my $file = $samples{$id};
    my $r = $t->get("/selfies/$id");
    is($r->{status}, 200, "README sample $id: 200");
    is(sha256_hex($r->{body}), $t->fixture_sha256($file),
       "README sample $id: byte-exact $file");
}

is(scalar keys %statuses, 2, 'README lists two failing examples');

for my $id (sort keys %statuses) {
    is($t->get("/selfies/$id")->{status}, $statuses{$id},
       "README example $id: $statuses{$id}");
}

my $r = $t->get('/');
like($r->{body}, qr/<img src="\/selfies\//, 'the demo page shows images');

# the signed-URL flow the page shows: one URL that works, one expired
my @signed = $r->{body} =~ m{<img id="(signed-\w+)"[^>]*\ssrc="([^"]+)"}g;
my %signed = @signed;
is(scalar keys %signed, 2, 'the demo page shows two signed images');
(my $ok = $signed{'signed-ok'} // '') =~ s/&amp;/&/g;
(my $old = $signed{'signed-expired'} // '') =~ s/&amp;/&/g;
my $s = $t->get($ok);
is($s->{status}, 200, 'the signed URL of the demo page: 200');
is(sha256_hex($s->{body}), $t->fixture_sha256('selfie-720x960.jpg'),
   'the signed URL: the image');
is($t->get($old)->{status}, 403, 'the expired URL of the demo page: 403');
like($t->access_log . $t->slurp("$prefix/logs/access.log"),
     qr/signature_expired/, 'and it is logged as signature_expired');
(my $unsigned = $ok) =~ s/\?.*//;
is($t->get($unsigned)->{status}, 403, 'the signed location without a signature: 403');

like($r->{body}, qr{<a href="/metrics">}, 'the demo page links to the metrics');
like($t->get('/metrics')->{body}, qr/^unico_selfie_requests_total\{status="200"\} \d+/m,
     'the metrics page answers');

like($t->slurp("$prefix/logs/access.log"), qr/reason=ok unico=200/,
     'demo access log shows the reason and Unico status');

unlike($t->slurp("$prefix/logs/error.log"), qr/\[(alert|crit|emerg)\]/,
       'demo error log: no alert');

$t->check_logs;

done_testing;
