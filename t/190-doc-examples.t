# Every ```nginx block of README.md and docs/*.md passes `nginx -t` with the
# module loaded (complete configurations as they are, fragments in the
# smallest wrapper; t/lib/DocExamples.pm has the convention), and the two
# configurations a new operator copies first, the README's quick start and
# docs/service-account.md's sandbox, serve a selfie end to end against the
# Unico emulator.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use File::Copy qw(copy);
use File::Path qw(make_path remove_tree);
use Test::More;
use DocExamples;
use UnicoTest;

my $t = UnicoTest->new;
my $repo = $t->repo;
my $certs = $t->certs;
my $dir = $t->dir;

# the gateway's own certificate, for "listen 443 ssl" blocks
system("openssl req -x509 -newkey rsa:2048 -nodes -keyout $dir/gw.key"
       . " -out $dir/gw.pem -days 2 -subj /CN=img.example.com -addext"
       . " subjectAltName=DNS:img.example.com,DNS:localhost,IP:127.0.0.1"
       . " 2>/dev/null") == 0 or die 'openssl req failed';

# Unico's real host names on a certificate of the test CA: the emulator
# plays them, and nginx verifies them as it would Unico's
DocExamples::unico_cert($dir, $certs);

my %files = (
    ca     => -f '/etc/ssl/certs/ca-certificates.crt'
              ? '/etc/ssl/certs/ca-certificates.crt' : "$certs/ca.pem",
    cert   => "$dir/gw.pem",
    key    => "$dir/gw.key",
    sa_key => "$certs/sa.key",
);

my @blocks = DocExamples::blocks($repo);
ok(@blocks >= 15, scalar(@blocks) . ' ```nginx blocks found');

my $n = 0;

# A fresh prefix for one configuration: conf/ with the shipped includes,
# modules/ with this module and Debian's.
sub prefix {
    my $p = "$dir/ex" . ++$n;
    make_path("$p/conf", "$p/logs", "$p/modules", "$p/root");
    copy($_, "$p/conf/") or die $! for glob "$repo/conf/*.conf";
    symlink $t->{module}, "$p/modules/ngx_http_unico_selfie_module.so"
        or die $!;
    for my $so (glob '/usr/lib/nginx/modules/*.so') {
        (my $base = $so) =~ s{.*/}{};
        symlink $so, "$p/modules/$base";
    }
    return $p;
}

sub nginx_t {
    my ($p, $conf, %o) = @_;
    $conf = DocExamples::offline($conf);
    $conf = DocExamples::materialise($conf, "$p/root", $o{files} || \%files);
    open my $fh, '>', "$p/conf/nginx.conf" or die $!;
    print $fh $conf;
    close $fh;
    my $out = `$t->{nginx} -t -q -p $p/ -c $p/conf/nginx.conf -e $p/logs/error.log -g 'pid $p/nginx.pid;' 2>&1`;
    my $rc = $? >> 8;
    $out .= $t->slurp("$p/logs/error.log") if $rc;
    return ($rc, $out);
}

my ($nginx_version) = `$t->{nginx} -v 2>&1` =~ m{nginx/(\d+\.\d+\.\d+)};
$nginx_version = DocExamples::version_number($nginx_version // '0.0.0');

my (%seen, @partial);

for my $b (@blocks) {
    my $name = "$b->{file}:$b->{line}";

    if (defined(my $why = DocExamples::partial($b->{text}))) {
        unlike($why, qr/says not why/, "$name: partial, with a reason")
            or next;
        push @partial, "$name ($why)";
        next;
    }

    if (my $v = DocExamples::needs_version($b->{text})) {
        if ($nginx_version < DocExamples::version_number($v)) {
            push @partial, "$name (nginx >= $v)";
            next;
        }
    }

    if (my @bad = DocExamples::foreign_modules($t, $b->{text})) {
        push @partial, "$name ($bad[0][0] does not load in this nginx: $bad[0][1])";
        next;
    }

    if (DocExamples::complete($b->{text})) {
        my ($rc, $out) = nginx_t(prefix(), $b->{text});
        is($rc, 0, "$name: nginx -t on the complete configuration")
            or diag($out);
        $seen{complete}++;
        next;
    }

    my (@errors, $ok);
    for my $w (DocExamples::wrappings($b->{text})) {
        my ($rc, $out) = nginx_t(prefix(), $w->[1]);
        if ($rc == 0) {
            $ok = $w->[0];
            last;
        }
        push @errors, "in $w->[0]: $out";
    }

    ok($ok, "$name: nginx -t on the fragment" . ($ok ? " (in $ok)" : ''))
        or diag(join '', @errors);
    $seen{fragment}++;
}

ok($seen{complete} >= 5, "complete configurations: $seen{complete}");
ok($seen{fragment} >= 8, "fragments: $seen{fragment}");
diag("deliberately partial, not run: @partial") if @partial && $ENV{TEST_VERBOSE};

# --- end to end -----------------------------------------------------------

# Runs a complete configuration of the docs against the emulator: the same
# text, with the paths in a prefix, the Unico hosts it proxies to given as
# upstreams that point at the emulator (whose certificate carries their
# names, signed by the test CA), and the listen port a free one.
sub run_example {
    my ($block, %o) = @_;
    my $p = prefix();
    my $port = $t->{port} = UnicoTest::free_port();
    my $conf = $block->{text};

    ok($conf =~ s/^(\s*listen\s+)(?:443|80)\b/${1}127.0.0.1:$port/m,
       "$block->{file}: its listen moved to a free port");

    my @hosts = grep { $conf =~ m{proxy_pass\s+https://\Q$_\E/} }
                @DocExamples::UNICO_HOSTS;
    ok(@hosts, "$block->{file}: proxies to @hosts");
    my $up = join '', map { "    upstream $_ { server 127.0.0.1:"
                            . $t->mock_port . "; }\n" } @hosts;
    $conf =~ s/^http \{\n/http {\n$up    access_log $p\/logs\/access.log;\n/m
        or die 'no http block';

    $conf = DocExamples::materialise($conf, "$p/root",
                                     { %files, ca => "$certs/ca.pem" });
    open my $fh, '>', "$p/conf/nginx.conf" or die $!;
    print $fh $conf;
    close $fh;

    $t->spawn('nginx', "$dir/logs/nginx.out", $t->{nginx}, '-p', "$p/",
              '-c', "$p/conf/nginx.conf", '-e', "$dir/logs/error.log",
              '-g', "daemon off; pid $p/nginx.pid;");
    $t->wait_port($port, 'nginx');

    my $scheme = $conf =~ /listen\s+\S+\s+ssl/ ? 'https' : 'http';
    my $id = $t->id('jpeg-small');
    my ($rc, $head, $body) = $t->curl('-k', "$scheme://127.0.0.1:$port/selfies/$id");
    like($head, qr{^HTTP/\S+ 200}, "$block->{file}: a selfie, 200");
    is(sha256_hex($body), $t->fixture_sha256('selfie-360x480.jpg'),
       "$block->{file}: byte-exact");

    my @calls = @{ $t->mock_requests };
    ok((grep { ($_->{sni} // '') eq $hosts[0] } @calls),
       "$block->{file}: Unico was reached by its name, TLS verified ($hosts[0])");

    $t->stop;
    return \@calls;
}

my ($quick) = grep { $_->{file} eq 'README.md'
                     && $_->{heading} =~ /Use it in your nginx/ } @blocks;
ok($quick, 'the README quick start is found') and do {
    # the emulator, with Unico's names on its certificate
    $t->{mock_port} = UnicoTest::free_port();
    $t->spawn('mock', "$dir/logs/mock.out", $^X, "$repo/t/mock/unico.pl",
              '--listen', "127.0.0.1:" . $t->mock_port,
              '--cert', "$dir/unico.pem", '--key', "$dir/unico.key",
              '--log', "$dir/logs/mock.log", '--state', "$dir/state",
              '--token', 'YOUR_UNICO_ACCESS_TOKEN');
    $t->wait_port($t->mock_port, 'mock');
    run_example($quick);
};

my ($sandbox) = grep { $_->{file} eq 'docs/service-account.md'
                       && $_->{heading} =~ /^Sandbox/ } @blocks;
ok($sandbox, 'the service-account sandbox example is found') and do {
    unlink "$dir/logs/mock.log";
    remove_tree("$dir/state");
    make_path("$dir/state");
    $t->spawn('mock', "$dir/logs/mock.out", $^X, "$repo/t/mock/unico.pl",
              '--listen', "127.0.0.1:" . $t->mock_port,
              '--cert', "$dir/unico.pem", '--key', "$dir/unico.key",
              '--log', "$dir/logs/mock.log", '--state', "$dir/state",
              '--public-key', "$certs/sa.pub.pem",
              '--issuer', 'gateway@0a1b2c3d.iam.acesso.io',
              '--audience', 'https://identityhomolog.acesso.io');
    $t->wait_port($t->mock_port, 'mock');
    my $calls = run_example($sandbox);
    is(scalar(grep { $_->{path} eq '/oauth2/token' } @$calls), 1,
       'the sandbox example obtained one token from the token endpoint');
    ok((grep { $_->{path} eq '/oauth2/token'
               && ($_->{sni} // '') eq 'identityhomolog.acesso.io' } @$calls),
       'by the sandbox identity host');
};

my ($production) = grep { $_->{file} eq 'docs/service-account.md'
                          && $_->{heading} =~ /^Production/ } @blocks;
ok($production, 'a production example sits beside the sandbox one');
like($production->{text} // '', qr{environment\s+production;}, '... production audience');
like($production->{text} // '', qr{https://api\.idcloud\.unico\.app/}, '... production API');
like($production->{text} // '', qr{https://identity\.acesso\.io/}, '... production identity');
like($production->{text} // '', qr{/etc/ssl/certs/ca-certificates\.crt},
     '... the system CA bundle');

$t->check_logs;

done_testing;
