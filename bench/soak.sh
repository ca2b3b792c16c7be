#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
#
# bench/soak.sh [--minutes M] [soak.pl options]
#
# The soak: the mock Unico, a mock with an untrusted certificate and one
# nginx worker with the module (TEST_NGINX_BINARY / TEST_NGINX_MODULE choose
# the build, as for the suite), a mix of good requests (the 4 fixtures and
# the accepted JSON variants, byte-exact), bad input (malformed processIds,
# wrong methods) and every faulty Unico behaviour of the mock from several
# client processes, for M minutes (default 10).  Worker RSS is sampled every
# 5 s.  Prints counts per scenario and status, the unexpected answers, the
# RSS series and the growth verdict (last-quarter median <= warm-up median
# * 1.05 + 2 MiB, warm-up = the first minute); exits non-zero on any
# unexpected answer, crash, descriptor leak or growth.
#
# Bounded: the driver stops its clients at the deadline and has a hard
# limit of the duration + 5 minutes; Ctrl-C (or TERM) stops the clients,
# nginx and the mocks.  Options after --minutes go to bench/soak/soak.pl
# (--clients N, --json FILE, --exclude REGEX, --seed N, --sample S, ...).
#
# --exclude REGEX leaves scenarios out (e.g. one that trips a known bug:
# before b060fe6, BUG-1 of docs/reliability.md made two overlapping
# requests for the 5 MiB image hang, and the first 10-minute run excluded
# "max-exact").
#
# See docs/reliability.md for what it found.

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
minutes=10
args=()

while [ $# -gt 0 ]; do
    case $1 in
        --minutes)   minutes=${2:?--minutes needs a value}; shift 2 ;;
        --minutes=*) minutes=${1#*=}; shift ;;
        -h|--help)   sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *)           args+=("$1"); shift ;;
    esac
done

case $minutes in
    ''|*[!0-9.]*) echo "soak.sh: --minutes wants a number" >&2; exit 2 ;;
esac

module=${TEST_NGINX_MODULE:-$REPO/.build/ngx_http_unico_selfie_module.so}
if [ ! -f "$module" ]; then
    echo "soak.sh: no module at $module: run ./build.sh first" >&2
    exit 2
fi

# its own temporary directory: a shared /tmp may be cleaned under a long run
# (UNICO_SOAK_KEEP=1 keeps it, with the logs, for a post-mortem)
export TMPDIR
TMPDIR=$(mktemp -d "${UNICO_SOAK_TMP:-/var/tmp}/unico-soak.XXXXXX")

pid=
stop() {
    trap - INT TERM EXIT
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    if [ "${UNICO_SOAK_KEEP:-0}" = 1 ]; then
        echo "soak.sh: kept $TMPDIR" >&2
    else
        rm -rf "$TMPDIR"
    fi
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap stop EXIT

cd "$REPO"
[ "${UNICO_SOAK_KEEP:-0}" = 1 ] && export TEST_KEEP=1
perl "$REPO/bench/soak/soak.pl" --minutes "$minutes" ${args[@]+"${args[@]}"} &
pid=$!
rc=0
wait "$pid" || rc=$?
pid=
exit "$rc"
