#!/usr/bin/perl

# Copyright (C) ngx_unico_selfie_module authors
#
# Builds t/unit/test_signature.c with the signed-URL core and the ETag
# hash (unico_selfie_signature.c, unico_selfie_hash.c, with
# unico_selfie_base64.c and libxxhash), under
# AddressSanitizer and UndefinedBehaviorSanitizer when the compiler has
# them, and runs it.  The program prints TAP itself; its output goes
# straight to prove.  A failed compile is a failed test.
#
#     prove -v t/015-signature-unit.t
#
# CC picks the compiler (default: cc).

use strict;
use warnings;

use File::Spec;
use File::Temp qw(tempdir);
use FindBin;

my $root = File::Spec->rel2abs(File::Spec->catdir($FindBin::Bin,
    File::Spec->updir()));
my $src = File::Spec->catdir($root, 'ngx_unico_selfie_module');

my $cc = $ENV{CC} || 'cc';
my $dir = tempdir('unico-unit-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $bin = File::Spec->catfile($dir, 'test_signature');

my @common = ('-std=c99', '-Wall', '-Wextra', '-Werror', '-O1', '-g');
my @sanitize = ('-fsanitize=address,undefined', '-fno-omit-frame-pointer');
my @files = ("-I$src", File::Spec->catfile($FindBin::Bin, 'unit',
    'test_signature.c'), File::Spec->catfile($src, 'unico_selfie_signature.c'),
    File::Spec->catfile($src, 'unico_selfie_hash.c'),
    File::Spec->catfile($src, 'unico_selfie_base64.c'), '-lcrypto', '-lxxhash',
    '-o', $bin);

$| = 1;

sub compile {
    my (@flags) = @_;
    my $log = File::Spec->catfile($dir, 'cc.log');

    print "# $cc @flags ...\n";

    # the compiler's messages go to a log, and to prove as diagnostics

    my $pid = fork();
    die "fork: $!" unless defined $pid;

    if ($pid == 0) {
        open(STDOUT, '>', $log) or die "open $log: $!";
        open(STDERR, '>&', \*STDOUT) or die "dup: $!";
        exec($cc, @flags, @files) or die "exec $cc: $!";
    }

    waitpid($pid, 0);
    my $rc = $?;

    if (open(my $fh, '<', $log)) {
        print "# $_" while <$fh>;
        close($fh);
    }

    return $rc == 0;
}

my $sanitized = compile(@common, @sanitize);

unless ($sanitized) {
    print "# no sanitized build, retrying without sanitizers\n";

    unless (compile(@common)) {
        print "1..1\n";
        print "not ok 1 - compile t/unit/test_signature.c\n";
        exit 1;
    }
}

# make UBSan fatal, and keep LeakSanitizer on where it works

$ENV{UBSAN_OPTIONS} ||= 'halt_on_error=1:print_stacktrace=1';
$ENV{ASAN_OPTIONS} ||= 'detect_leaks=1:abort_on_error=0';

system($bin);

if ($? == -1) {
    print "# cannot run $bin: $!\n";
    exit 1;
}

if ($? & 127) {
    print "# $bin killed by signal " . ($? & 127) . "\n";
    exit 1;
}

exit($? >> 8);
