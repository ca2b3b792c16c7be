# The signing recipes of docs/signed-urls.md (docs/examples/sign-url.*):
# each one whose runtime is on the machine mints a URL that nginx serves
# byte-exact; the same URL tampered with, or minted already expired, is
# 403 and Unico is not called; every recipe mints the same URL; and the
# page shows each recipe as it is in the file.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use Test::More;
use Time::HiRes qw(time);
use UnicoTest;

my $examples = "$UnicoTest::REPO/docs/examples";

sub have { system("command -v $_[0] >/dev/null 2>&1") == 0 }

my @recipes = (
    ['shell (openssl)', 'sign-url.sh', [qw(sh openssl)], ['sh']],
    ['Node.js',         'sign-url.js', ['node'],         ['node']],
    ['Python',          'sign-url.py', ['python3'],      ['python3']],
    ['Go',              'sign-url.go', ['go'],           ['go', 'run']],
);

my $t = UnicoTest->new;

# the key file nginx reads, with the key in its second line and a comment:
# the recipes read the first key line
my $key = $t->signing_key('recipes');
my $keys = $t->write_file('keys', "# signing key, rotated 2026-11\n$key\n"
                                  . $t->signing_key('next') . "\n");

$t->start_mock;
$t->start_nginx($t->selfie_conf(
    server => 'unico_selfie_signature_keys  %%DIR%%/keys;'));

my $id = $t->id('jpeg-large');
my $sha = $t->fixture_sha256('selfie-1080x1440.jpg');
my $exp = int(time) + 300;
my $old = int(time) - 3600;

my $doc = $t->slurp("$UnicoTest::REPO/docs/signed-urls.md");
my %minted;

for my $recipe (@recipes) {
    my ($name, $file, $needs, $cmd) = @$recipe;
    my $src = "$examples/$file";

    ok(-f $src, "$name: $file exists");
    ok(index($doc, $t->slurp($src)) >= 0,
       "$name: docs/signed-urls.md shows $file as it is");

    SKIP: {
        my @missing = grep { !have($_) } @$needs;
        skip "$name: no @missing on this machine", 8 if @missing;

        my $run = sub {
            my ($expires) = @_;
            local $ENV{GOCACHE} = $t->dir . '/gocache';
            local $ENV{HOME} = $t->dir;
            my $out = `@$cmd $src $keys $id $expires 2>&1`;
            chomp $out;
            return ($? >> 8, $out);
        };

        my ($rc, $url) = $run->($exp);
        is($rc, 0, "$name: ran");
        like($url, qr{^/selfies/\Q$id\E\?expires=$exp&sig=[A-Za-z0-9_-]{43}$},
             "$name: printed a URL");

        $minted{$name} = $url;

        my $before = $t->selfie_calls;
        my $r = $t->get($url);
        is($r->{status}, 200, "$name: nginx accepts its URL");
        is(sha256_hex($r->{body}), $sha, "$name: byte-exact");

        my $tampered = $url =~ s/sig=(.)/'sig=' . ($1 eq 'A' ? 'B' : 'A')/er;
        $r = $t->get($tampered);
        is($r->{status}, 403, "$name: tampered URL: 403");

        my ($rc2, $expired) = $run->($old);
        $r = $t->get($expired);
        is($r->{status}, 403, "$name: expired URL: 403");

        is($t->selfie_calls, $before + 1,
           "$name: Unico called for the good URL only");

        ok($t->eventually(sub {
               $t->access_log =~ /^403 signature_expired .*\Q$old\E/m }),
           "$name: the expired URL logged as signature_expired");
    }
}

# every recipe, and the test harness, mint the same URL

my $harness = $t->signed_path($key, $id, $exp);
my @names = sort keys %minted;
ok(@names >= 3, 'at least three recipes ran (' . join(', ', @names) . ')');

for my $name (@names) {
    is($minted{$name}, $harness, "$name mints what the harness mints");
}

$t->check_logs;

done_testing;
