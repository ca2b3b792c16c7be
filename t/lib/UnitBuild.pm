package UnitBuild;
# SPDX-License-Identifier: BSD-2-Clause

# Copyright (C) ngx_unico_selfie_module authors
#
# Builds a C unit-test program with some of the pure core and runs it, for
# the t/0*-unit.t files.  The program is compiled under AddressSanitizer and
# UndefinedBehaviorSanitizer when the compiler has them, else (only when the
# sanitized compile fails) without; the compiler's messages are shown as TAP
# diagnostics.  The program prints TAP itself: its output goes straight to
# prove, and its exit status becomes the test file's.  A failed compile is a
# failed test.
#
#     use FindBin;
#     use lib "$FindBin::Bin/lib";
#     use UnitBuild;
#
#     UnitBuild::run(
#         test    => 't/unit/test_jwt.c',
#         sources => ['ngx_unico_selfie_module/unico_selfie_jwt.c'],
#         libs    => ['-lyajl', '-lcrypto'],
#         args    => [UnitBuild::path('t/fixtures')],
#     );
#
# Relative paths in test and sources are taken from the repository root;
# ngx_unico_selfie_module/ is always on the include path.  cflags adds
# compiler flags, args the program's arguments.  run() does not return.
#
# CC picks the compiler (default: cc).  UBSAN_OPTIONS and ASAN_OPTIONS are
# set only when not set already: UBSan fatal, LeakSanitizer on.

use strict;
use warnings;

use Carp qw(croak);
use File::Basename qw(basename dirname);
use File::Spec;
use File::Temp qw(tempdir);

our $ROOT = File::Spec->rel2abs(File::Spec->catdir(dirname(__FILE__),
    File::Spec->updir(), File::Spec->updir()));
our $SRC = File::Spec->catdir($ROOT, 'ngx_unico_selfie_module');

our @COMMON = ('-std=c99', '-Wall', '-Wextra', '-Werror', '-O1', '-g');
our @SANITIZE = ('-fsanitize=address,undefined', '-fno-omit-frame-pointer');


# a path of the repository, absolute

sub path {
    my ($p) = @_;

    return $p if File::Spec->file_name_is_absolute($p);
    return File::Spec->catfile($ROOT, $p);
}


# runs cc with flags, its messages to prove as diagnostics; true on success

sub _compile {
    my ($cc, $log, $flags, $files) = @_;

    print "# $cc @$flags ...\n";

    my $pid = fork();
    die "fork: $!" unless defined $pid;

    if ($pid == 0) {
        open(STDOUT, '>', $log) or die "open $log: $!";
        open(STDERR, '>&', \*STDOUT) or die "dup: $!";
        exec($cc, @$flags, @$files) or die "exec $cc: $!";
    }

    waitpid($pid, 0);
    my $rc = $?;

    if (open(my $fh, '<', $log)) {
        print "# $_" while <$fh>;
        close($fh);
    }

    return $rc == 0;
}


sub run {
    my (%o) = @_;

    croak 'UnitBuild::run: test => missing' unless defined $o{test};

    my @sources = @{ $o{sources} || [] };
    my @libs = @{ $o{libs} || [] };
    my @cflags = @{ $o{cflags} || [] };
    my @args = @{ $o{args} || [] };

    my $test = $o{test};
    my $name = basename($test);
    $name =~ s/\.c\z//;

    my $cc = $ENV{CC} || 'cc';
    my $dir = tempdir('unico-unit-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    my $bin = File::Spec->catfile($dir, $name);
    my $log = File::Spec->catfile($dir, 'cc.log');

    my @files = ("-I$SRC", path($test), (map { path($_) } @sources), @libs,
                 '-o', $bin);

    $| = 1;

    unless (_compile($cc, $log, [@COMMON, @SANITIZE, @cflags], \@files)) {
        print "# no sanitized build, retrying without sanitizers\n";

        unless (_compile($cc, $log, [@COMMON, @cflags], \@files)) {
            print "1..1\n";
            print "not ok 1 - compile $test\n";
            exit 1;
        }
    }

    # make UBSan fatal, and keep LeakSanitizer on where it works

    $ENV{UBSAN_OPTIONS} ||= 'halt_on_error=1:print_stacktrace=1';
    $ENV{ASAN_OPTIONS} ||= 'detect_leaks=1:abort_on_error=0';

    # not exec(): the temporary directory is removed at exit

    system($bin, @args);

    if ($? == -1) {
        print "# cannot run $bin: $!\n";
        exit 1;
    }

    if ($? & 127) {
        print "# $bin killed by signal " . ($? & 127) . "\n";
        exit 1;
    }

    exit($? >> 8);
}


1;
