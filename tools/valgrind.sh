#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
#
# tools/valgrind.sh -- nginx with the module under Valgrind's memcheck.
#
# Usage: tools/valgrind.sh [--soak-seconds N] [--tests "t/a.t t/b.t"]
#                          [--out DIR] [--no-tests] [--no-soak]
#
# What runs (nginx as the suite runs it: master_process on, the workers
# fork()ed from the master; Valgrind follows fork() by itself and
# --trace-children=yes would follow an exec() too):
#
#   1. the soak driver (bench/soak/soak.pl) for --soak-seconds (default 60)
#      with 3 clients: every good, bad-input and faulty-Unico scenario of
#      the mock, the keepalive upstream and the untrusted certificate;
#   2. a subset of the suite (default: t/020-selfie.t t/030-status.t
#      t/040-bad-input.t t/050-payload.t t/080-error-page.t): the happy
#      path, every status row, bad input, every payload variant (the JSON
#      and base64 code) and error_page.
#
# Valgrind options: --tool=memcheck --leak-check=full
# --errors-for-leak-kinds=definite,possible --track-origins=yes
# --trace-children=yes --error-exitcode=99 --gen-suppressions=all
# --suppressions=tools/valgrind.supp, one log per process (vg.<pid>.log).
# Workers are stopped with QUIT, so each exits through
# ngx_worker_process_exit and the leak check sees its final heap.
#
# nginx's pools hide reads and writes inside pool blocks from memcheck (the
# ASan build with NGX_DEBUG_PALLOC covers that); memcheck finds
# uninitialised values, bad frees, malloc()ed overflows (yajl, OpenSSL,
# ngx_alloc of large buffers) and leaks.
#
# Verdict: the error records whose stack has a frame of the module
# (ngx_http_unico_selfie_*, unico_*) are the module's; every other record
# (nginx core, OpenSSL, glibc, Perl is not traced) is reported as noise,
# counted by its top frame.  Exit status: 0 when the module has no record,
# 1 when it has, 2 on a usage or setup error.  Test or soak failures (timing
# under Valgrind is 20-50x slower) are reported but do not decide.
#
# Environment: TEST_NGINX_BINARY (default /usr/sbin/nginx) and
# TEST_NGINX_MODULE (default .build/ngx_http_unico_selfie_module.so) as
# for the suite; VALGRIND (default valgrind); UNICO_SOAK_EXCLUDE, a regex of
# soak scenarios to leave out (default none; before b060fe6 "max-exact" had
# to be, as BUG-1 of docs/reliability.md left a request hanging whose pools
# then showed as "possibly lost").

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
soak=60
tests="t/020-selfie.t t/030-status.t t/040-bad-input.t t/050-payload.t t/080-error-page.t"
out=
run_tests=1
run_soak=1

usage() { sed -n '2,45p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
    case $1 in
        --soak-seconds) soak=${2:?}; shift 2 ;;
        --tests)        tests=${2:?}; shift 2 ;;
        --out)          out=${2:?}; shift 2 ;;
        --no-tests)     run_tests=0; shift ;;
        --no-soak)      run_soak=0; shift ;;
        -h|--help)      usage 0 ;;
        *)              echo "valgrind.sh: unknown argument $1" >&2; usage 2 ;;
    esac
done

nginx=${TEST_NGINX_BINARY:-/usr/sbin/nginx}
module=${TEST_NGINX_MODULE:-$REPO/.build/ngx_http_unico_selfie_module.so}
vg=${VALGRIND:-valgrind}

command -v "$vg" >/dev/null || { echo "valgrind.sh: no $vg" >&2; exit 2; }
[ -x "$nginx" ] || { echo "valgrind.sh: no nginx at $nginx" >&2; exit 2; }
[ -f "$module" ] || { echo "valgrind.sh: no module at $module (./build.sh)" >&2; exit 2; }
if grep -q __asan_init "$nginx" 2>/dev/null; then
    echo "valgrind.sh: $nginx is an ASan build; Valgrind needs a plain one" >&2
    exit 2
fi

[ -n "$out" ] || out=$(mktemp -d "${TMPDIR:-/var/tmp}/unico-valgrind.XXXXXX")
mkdir -p "$out/logs" "$out/tmp"
out=$(cd "$out" && pwd)

# a private copy of the module (a rebuild rewrites the .so in place)
cp "$module" "$out/ngx_http_unico_selfie_module.so"

cat >"$out/nginx-valgrind" <<EOF
#!/bin/sh
exec $vg --tool=memcheck --leak-check=full \\
    --show-leak-kinds=definite,possible \\
    --errors-for-leak-kinds=definite,possible \\
    --track-origins=yes --num-callers=40 \\
    --trace-children=yes --error-exitcode=99 \\
    --gen-suppressions=all \\
    --suppressions=$REPO/tools/valgrind.supp \\
    --log-file=$out/logs/vg.%p.log \\
    $nginx "\$@"
EOF
chmod +x "$out/nginx-valgrind"

export TEST_NGINX_BINARY="$out/nginx-valgrind"
export TEST_NGINX_MODULE="$out/ngx_http_unico_selfie_module.so"
export TMPDIR="$out/tmp"

echo "valgrind.sh: results in $out" >&2
soak_rc=- tests_rc=-

exclude=${UNICO_SOAK_EXCLUDE:-}

if [ "$run_soak" = 1 ]; then
    echo "valgrind.sh: soak for ${soak}s under memcheck" >&2
    set +e
    perl "$REPO/bench/soak/soak.pl" --seconds "$soak" --clients 3 \
        --warmup "$soak" --sample 10 --request-timeout 120 --no-rss \
        --order sweep ${exclude:+--exclude "$exclude"} \
        --json "$out/soak.json" >"$out/soak.txt" 2>&1
    soak_rc=$?
    set -e
fi

if [ "$run_tests" = 1 ] && [ -n "$tests" ]; then
    echo "valgrind.sh: $tests under memcheck" >&2
    set +e
    # shellcheck disable=SC2086
    (cd "$REPO" && prove $tests) >"$out/prove.txt" 2>&1
    tests_rc=$?
    set -e
fi

# The verdict: split every record of every log into the module's and the
# rest.
perl - "$out" "$soak_rc" "$tests_rc" <<'PERL'
use strict;
use warnings;

my ($out, $soak_rc, $tests_rc) = @ARGV;
my (@mine, %noise, $procs, $errors, $suppressed, @exit);

for my $log (sort glob "$out/logs/vg.*.log") {
    open my $fh, '<', $log or next;
    my ($pid) = $log =~ /vg\.(\d+)\.log$/;
    my ($cmd, @block) = ('');
    $procs++;

    my $flush = sub {
        return unless @block;
        my $text = join '', @block;
        @block = ();
        return unless $text =~ /^==\d+== \S/m
                      && $text =~ /^==\d+==\s+(at|by) 0x/m;
        return if $text =~ /^==\d+== (HEAP|LEAK|ERROR) SUMMARY/m;
        if ($text =~ /\b(ngx_http_unico_selfie_\w+|unico_\w+)\b/) {
            push @mine, "--- $log\n$text";
        } else {
            my ($top) = $text =~ /^==\d+==\s+at 0x\w+: (\S+)/m;
            my ($what) = $text =~ /^==\d+== ([^\n]*)/;
            $what =~ s/[\d,]+ bytes in [\d,]+ blocks/N bytes in N blocks/;
            $what =~ s/ in loss record.*//;
            $noise{"$what @ " . ($top // '?')}++;
        }
    };

    while (my $line = <$fh>) {
        $cmd = $1 if $line =~ /^==\d+== Command: (.*)/;
        if ($line =~ /^==\d+== ERROR SUMMARY: (\d+) errors .*suppressed: (\d+)/) {
            $errors += $1;
            $suppressed += $2;
            push @exit, "pid $pid: $1 errors, $2 suppressed ($cmd)";
        }
        if ($line =~ /^\{/ .. $line =~ /^\}/) {
            next;       # a generated suppression
        }
        if ($line =~ /^==\d+== ?$/) {
            $flush->();
            next;
        }
        push @block, $line;
    }
    $flush->();
}

open my $rep, '>', "$out/report.txt" or die $!;
my $p = sub { print {$rep} @_; print @_ };

$p->("valgrind.sh: $procs processes traced, "
     . ($errors // 0) . " error records ("
     . ($suppressed // 0) . " suppressed)\n");
$p->("  $_\n") for @exit;
$p->("soak exit status: $soak_rc (under memcheck; timing not judged)\n");
$p->("tests exit status: $tests_rc (under memcheck; timing not judged)\n");
$p->("\nrecords with a frame of the module: " . scalar(@mine) . "\n");
$p->($_) for @mine;
$p->("\nother records (nginx core, OpenSSL, libc), by kind and top frame:\n");
$p->(sprintf "  %4d  %s\n", $noise{$_}, $_)
    for sort { $noise{$b} <=> $noise{$a} } keys %noise;
$p->("  none\n") unless %noise;
$p->("\nlogs: $out/logs/vg.<pid>.log, full report: $out/report.txt\n");

exit(@mine ? 1 : 0);
PERL
