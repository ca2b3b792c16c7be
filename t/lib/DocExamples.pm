package DocExamples;
# SPDX-License-Identifier: BSD-2-Clause

# The ```nginx blocks of README.md and docs/*.md, and what it takes to run
# them: t/190-doc-examples.t runs `nginx -t` on every one, and runs the
# README's quick start and docs/service-account.md's sandbox configuration
# end to end against the Unico emulator.
#
# The convention (docs/testing.md, "Examples in the docs"):
#
# - A block that has `events`, or begins with `load_module` and has `http`,
#   is a complete nginx.conf and must pass as it is.
# - Any other block is a fragment: it must pass inside the smallest of these
#   wrappers: the main level (load_module + events {}), http {}, server {}
#   in http {}, location / {} in server {}.
# - A block deliberately partial (it names a host, a module or a file that
#   only the reader has) says so on a comment line of its own:
#       # doc-test: partial: <why>
#   It is listed, not run; the reason must not be empty.
# - A block for newer nginx versions only says so the same way:
#       # doc-test: nginx >= 1.27.3
#   It runs where the nginx under test is that version or later.
#
# Unico's hosts are declared as upstreams of their own names (the test
# machine resolves no public name, and nginx -t resolves every proxy_pass
# host without variables).
#
# Absolute paths outside the repository (/etc/..., /var/..., /srv/...) are
# rewritten into the test's prefix, and the files they name are made there:
# a certificate and key for ssl_certificate(_key), the test service-account
# key for key_file, a key file for unico_selfie_signature_keys, a CA bundle
# for proxy_ssl_trusted_certificate, directories for logs and caches.

use strict;
use warnings;

use Carp qw(croak);
use File::Basename qw(dirname);
use File::Copy qw(copy);
use File::Path qw(make_path);
use File::Temp ();
use UnicoTest ();

# the key materialise() writes for unico_selfie_signature_keys
our $SIGNING_KEY = '0LZ2kxv8YwH7bJcZ7q3Wn5rX1mC9aE4tUoPdRfGhIjk=';

our $MODULE_LINE = 'load_module modules/ngx_http_unico_selfie_module.so;';

# Unico's hosts, as the docs name them.
our @UNICO_HOSTS = qw(api.idcloud.unico.app api.idcloud.uat.unico.app
                      identity.acesso.io identityhomolog.acesso.io);


# Every ```nginx block: [{ file, line, heading, text }], in file order.
sub blocks {
    my ($repo) = @_;
    my @files = ("$repo/README.md", sort glob "$repo/docs/*.md");
    my @blocks;

    for my $file (@files) {
        open my $fh, '<', $file or croak "$file: $!";
        my ($in, $start, $text, $heading, $fence) = (0, 0, '', '', '');
        my $n = 0;

        while (my $l = <$fh>) {
            $n++;

            if (!$in && $l =~ /^(\s*)```nginx\s*$/) {
                ($in, $start, $text, $fence) = (1, $n, '', $1);
                next;
            }

            if ($in && $l =~ /^\s*```\s*$/) {
                $in = 0;
                (my $rel = $file) =~ s{^\Q$repo\E/}{};
                push @blocks, { file => $rel, line => $start,
                                heading => $heading, text => $text };
                next;
            }

            if ($in) {
                $l =~ s/^\Q$fence\E//;      # a block indented in a list
                $text .= $l;
                next;
            }

            $heading = $1 if $l =~ /^#+\s+(.*?)\s*$/;
        }

        croak "$file: unclosed ```nginx block at line $start" if $in;
    }

    return @blocks;
}


sub partial {
    my ($text) = @_;
    return $text =~ /^\s*#\s*doc-test:\s*partial\b:?\s*(.*?)\s*$/m
           ? ($1 eq '' ? 'partial, but says not why' : $1) : undef;
}


sub complete {
    my ($text) = @_;
    return ($text =~ /\A(?:\s*#[^\n]*\n|\s*\n)*\s*load_module\b/
            && $text =~ /^\s*http\s*\{/m)
           || $text =~ /^\s*events\s*\{/m;
}


# "# doc-test: nginx >= 1.27.3": the version the block needs, or undef.
sub needs_version {
    my ($text) = @_;
    return $text =~ /^\s*#\s*doc-test:\s*nginx\s*>=\s*(\d+\.\d+\.\d+)/m
           ? $1 : undef;
}


# 1.27.3 -> 1027003, as nginx_version
sub version_number {
    my ($v) = @_;
    my ($a, $b, $c) = split /\./, $v;
    return $a * 1000000 + $b * 1000 + $c;
}


# The wrappers to try for a fragment, smallest first: [name, conf].
sub wrappings {
    my ($text) = @_;
    my $mod = $MODULE_LINE;

    my $main = $text =~ /^\s*\Q$mod\E/m ? '' : "$mod\n";

    return (
        [ main     => "$main$text\nevents {}\n" ],
        [ http     => "$mod\nevents {}\nhttp {\n$text\n}\n" ],
        [ server   => "$mod\nevents {}\nhttp {\nserver {\n$text\n}\n}\n" ],
        [ location => "$mod\nevents {}\nhttp {\nserver {\nlocation / {\n"
                      . "$text\n}\n}\n}\n" ],
    );
}


# This machine resolves no public name, and nginx -t resolves the host of
# every proxy_pass without variables: each Unico host a configuration
# proxies to is declared as an upstream of that name (on 127.0.0.1:9,
# never connected to by nginx -t), in its first http block.
sub offline {
    my ($conf) = @_;
    my @hosts = grep { $conf =~ m{proxy_pass\s+https?://\Q$_\E[/;:]} }
                @UNICO_HOSTS;
    return $conf unless @hosts;
    my $up = join '', map { "upstream $_ { server 127.0.0.1:9; }\n" } @hosts;
    $conf =~ s/^(\s*http\s*\{[^\n]*\n)/$1$up/m
        or croak "no http block for the Unico upstreams";
    return $conf;
}


# Rewrites the absolute paths of a configuration into $root (a directory
# of the prefix) and makes the files they name.  $files: { ca, cert, key,
# sa_key } to copy from.
sub materialise {
    my ($conf, $root, $files, %o) = @_;
    my $shm = $o{shm} // "$root/dev/shm";

    my $out = '';

    for my $line (split /(?<=\n)/, $conf) {
        my ($directive) = $line =~ /^\s*(\w+)/;
        $directive //= '';

        $line =~ s{(?<=[\s=])(/(?:etc|var|srv|opt|run|home|data|dev/shm)/[^\s;"']*)}{
            my $path = $1;
            my $dest = $path =~ m{^/dev/shm(/.*)} ? "$shm$1" : "$root$path";
            make_file($directive, $dest, $files);
            $dest;
        }ge;

        $out .= $line;
    }

    return $out;
}


sub make_file {
    my ($directive, $dest, $files) = @_;

    if ($directive =~ /^(?:access_log|error_log)$/) {
        make_path(dirname($dest));
        return;
    }

    if ($directive =~ /^(?:root|alias|proxy_cache_path|proxy_temp_path)$/) {
        make_path($dest);
        return;
    }

    return if -e $dest;
    make_path(dirname($dest));

    my %from = (
        ssl_certificate                => $files->{cert},
        ssl_certificate_key            => $files->{key},
        proxy_ssl_trusted_certificate  => $files->{ca},
        ssl_trusted_certificate        => $files->{ca},
        ssl_client_certificate         => $files->{ca},
        key_file                       => $files->{sa_key},
    );

    if (my $src = $from{$directive}) {
        copy($src, $dest) or croak "copy $src $dest: $!";
        chmod 0600, $dest if $directive =~ /key/;
        return;
    }

    if ($directive eq 'unico_selfie_signature_keys') {
        open my $fh, '>', $dest or croak "$dest: $!";
        print $fh "# made by t/190-doc-examples.t\n"
                  . "$SIGNING_KEY\n";
        close $fh;
        chmod 0600, $dest;
        return;
    }

    if ($directive eq 'include') {
        open my $fh, '>', $dest or croak "$dest: $!";
        close $fh;
        return;
    }

    make_path(dirname($dest));
}


# A certificate for Unico's host names (and localhost), signed by the test
# CA in $certs: the emulator plays Unico under its real names with it, and
# nginx verifies it as it would Unico's.  ($dir/unico.pem, $dir/unico.key)
sub unico_cert {
    my ($dir, $certs) = @_;
    open my $ext, '>', "$dir/unico.ext" or croak $!;
    print $ext "subjectAltName = "
               . join(', ', map { "DNS:$_" } @UNICO_HOSTS, 'localhost')
               . "\nextendedKeyUsage = serverAuth\n";
    close $ext;
    system("openssl req -new -newkey rsa:2048 -nodes -keyout $dir/unico.key"
           . " -subj /CN=api.idcloud.unico.app -out $dir/unico.csr"
           . " 2>/dev/null && openssl x509 -req -in $dir/unico.csr"
           . " -CA $certs/ca.pem -CAkey $certs/ca.key -set_serial 7"
           . " -days 2 -extfile $dir/unico.ext -out $dir/unico.pem"
           . " 2>/dev/null") == 0 or croak 'unico cert failed';
    return ("$dir/unico.pem", "$dir/unico.key");
}


# A prefix for one configuration: conf/ with the shipped includes,
# modules/ with this module and Debian's.
sub prefix {
    my ($t, $p) = @_;
    File::Path::make_path("$p/conf", "$p/logs", "$p/modules", "$p/root");
    my $repo = $t->repo;
    for my $f (glob "$repo/conf/*.conf") {
        copy($f, "$p/conf/") or croak "copy $f: $!";
    }
    symlink $t->{module}, "$p/modules/ngx_http_unico_selfie_module.so"
        or croak "symlink: $!";
    for my $so (glob '/usr/lib/nginx/modules/*.so') {
        (my $base = $so) =~ s{.*/}{};
        symlink $so, "$p/modules/$base";
    }
    return $p;
}


# Starts a complete configuration of the docs against the emulator (running
# on $t->mock_port with unico_cert()): the same text, with each port it
# listens on moved to a free one (also where it names 127.0.0.1:<port>),
# Unico's hosts declared as upstreams that point at the emulator, the CA
# bundle the test CA, and its files made in the prefix.  Returns
# { prefix, ports => { old => new }, conf }.
sub start {
    my ($t, $text, $p, %o) = @_;
    prefix($t, $p) unless -d "$p/conf";
    my $conf = $text;
    my %ports;

    while ($conf =~ /^\s*listen\s+(?:127\.0\.0\.1:)?(\d+)\b/mg) {
        $ports{$1} //= UnicoTest::free_port();
    }
    for my $old (keys %ports) {
        $conf =~ s/^(\s*listen\s+)(?:127\.0\.0\.1:)?$old\b/${1}127.0.0.1:$ports{$old}/mg;
        $conf =~ s/\b127\.0\.0\.1:$old\b/127.0.0.1:$ports{$old}/g;
    }

    my @hosts = grep { $conf =~ m{proxy_pass\s+https://\Q$_\E/} } @UNICO_HOSTS;
    my $up = join '', map { "    upstream $_ { server 127.0.0.1:"
                            . $t->mock_port . "; }\n" } @hosts;
    $conf =~ s/^http \{\n/http {\n$up    access_log $p\/logs\/access.log;\n/m
        or croak 'no http block';

    $conf = materialise($conf, "$p/root",
                        { %{ $o{files} }, ca => $t->certs . '/ca.pem' },
                        %o);

    open my $fh, '>', "$p/conf/nginx.conf" or croak $!;
    print $fh $conf;
    close $fh;

    $t->spawn('nginx', $t->dir . '/logs/nginx.out', $t->{nginx}, '-p', "$p/",
              '-c', "$p/conf/nginx.conf", '-e', $t->dir . '/logs/error.log',
              '-g', "daemon off; pid $p/nginx.pid;");
    $t->wait_port($_, 'nginx') for values %ports;
    $t->{port} = (values %ports)[0] if keys %ports == 1;

    return { prefix => $p, ports => \%ports, conf => $conf };
}


# The emulator with Unico's names on its certificate.
sub start_mock {
    my ($t, @args) = @_;
    my $dir = $t->dir;
    my ($cert, $key) = -f "$dir/unico.pem" ? ("$dir/unico.pem", "$dir/unico.key")
                                           : unico_cert($dir, $t->certs);
    $t->{mock_port} = UnicoTest::free_port();
    $t->spawn('mock', "$dir/logs/mock.out", $^X, $t->repo . '/t/mock/unico.pl',
              '--listen', '127.0.0.1:' . $t->mock_port,
              '--cert', $cert, '--key', $key,
              '--log', "$dir/logs/mock.log", '--state', "$dir/state", @args);
    $t->wait_port($t->mock_port, 'mock');
    return $t->mock_port;
}


# Files for materialise(): a gateway certificate and the test keys.
sub files {
    my ($t) = @_;
    my $dir = $t->dir;
    unless (-f "$dir/gw.pem") {
        system("openssl req -x509 -newkey rsa:2048 -nodes -keyout $dir/gw.key"
               . " -out $dir/gw.pem -days 2 -subj /CN=img.example.com -addext"
               . " subjectAltName=DNS:img.example.com,DNS:localhost,IP:127.0.0.1"
               . " 2>/dev/null") == 0 or croak 'openssl req failed';
    }
    return {
        ca     => $t->certs . '/ca.pem',
        cert   => "$dir/gw.pem",
        key    => "$dir/gw.key",
        sa_key => $t->certs . '/sa.key',
    };
}


# The block of $file under a heading that matches $re.
sub block {
    my ($repo, $file, $re) = @_;
    my ($b) = grep { $_->{file} eq $file && $_->{heading} =~ $re }
              blocks($repo);
    return $b;
}


# (width, height, type) of a JPEG or PNG, from its bytes; () otherwise.
sub image_size {
    my ($b) = @_;
    return () unless defined $b && length $b > 24;

    if (substr($b, 0, 8) eq "\x89PNG\r\n\x1a\n") {
        my ($w, $h) = unpack 'NN', substr($b, 16, 8);
        return ($w, $h, 'png');
    }

    return () unless substr($b, 0, 2) eq "\xff\xd8";
    my $i = 2;
    while ($i + 9 < length $b) {
        my ($ff, $m, $len) = unpack 'CCn', substr($b, $i, 4);
        return () unless $ff == 0xff;
        if ($m >= 0xc0 && $m <= 0xcf && $m != 0xc4 && $m != 0xc8
            && $m != 0xcc)
        {
            my ($h, $w) = unpack 'nn', substr($b, $i + 5, 4);
            return ($w, $h, 'jpeg');
        }
        $i += 2 + $len;
    }
    return ();
}


# The Debian modules a block loads besides this one that the nginx under
# test cannot load (built for another nginx): [name, why], or ().
my %loads;
sub foreign_modules {
    my ($t, $text) = @_;
    my @bad;
    while ($text =~ /^\s*load_module\s+modules\/(\S+\.so)\s*;/mg) {
        my $so = $1;
        next if $so eq 'ngx_http_unico_selfie_module.so';
        $loads{$so} //= do {
            my $d = File::Temp::tempdir(CLEANUP => 1);
            open my $fh, '>', "$d/t.conf" or croak $!;
            print $fh "load_module /usr/lib/nginx/modules/$so;\nevents {}\n";
            close $fh;
            my $out = `$t->{nginx} -t -p $d/ -c $d/t.conf -e $d/e.log 2>&1`;
            $? ? ($out =~ /(\[emerg\].*)/ ? $1 : $out) : '';
        };
        push @bad, [$so, $loads{$so}] if $loads{$so} ne '';
    }
    return @bad;
}


1;
