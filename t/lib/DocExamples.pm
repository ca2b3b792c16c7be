package DocExamples;

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
    my ($conf, $root, $files) = @_;

    my $out = '';

    for my $line (split /(?<=\n)/, $conf) {
        my ($directive) = $line =~ /^\s*(\w+)/;
        $directive //= '';

        $line =~ s{(?<=[\s=])(/(?:etc|var|srv|opt|run|home|data)/[^\s;"']*)}{
            my $path = $1;
            my $dest = "$root$path";
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
                  . "0LZ2kxv8YwH7bJcZ7q3Wn5rX1mC9aE4tUoPdRfGhIjk=\n";
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


1;
