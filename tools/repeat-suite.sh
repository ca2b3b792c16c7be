#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# ngx_unico_selfie_module: the determinism check of docs/testing.md.
#
#   tools/repeat-suite.sh [RUNS [BUSY [TEST_FILE...]]]
#
# Runs the README's test command (./build.sh test, with whatever
# UNICO_NGINX / UNICO_SANITIZE is set; on the given test files only, if
# any) RUNS times in a row (default 10)
# with BUSY busy loops beside it (default 2: one per core of the project's
# machine), and prints a line per run: its exit status, time, load average
# and prove's summary.  Every run's whole output is kept in
# .build/repeat/run-N.log.  Exits non-zero if any run failed; it does not
# stop at the first failure, so that one session shows every flaky test.

set -uo pipefail

RUNS=${1:-10}
BUSY=${2:-2}
shift $(($# < 2 ? $# : 2))
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$REPO/.build/repeat
PIDS=()

stop() {
    [ ${#PIDS[@]} -eq 0 ] || kill "${PIDS[@]}" 2>/dev/null
    PIDS=()
}
trap stop EXIT
trap 'stop; exit 130' INT TERM

mkdir -p "$OUT"
cd "$REPO" || exit 1

for _ in $(seq 1 "$BUSY"); do
    sh -c 'while :; do :; done' &
    PIDS+=($!)
done

echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')," \
     "$RUNS runs, $BUSY busy loops, from $(date -u +%FT%TZ)"

failed=0

for i in $(seq 1 "$RUNS"); do
    start=$SECONDS
    ./build.sh test "$@" > "$OUT/run-$i.log" 2>&1
    rc=$?
    [ $rc -eq 0 ] || failed=$((failed + 1))

    printf 'run %d: exit %d, %d s, load %s, %s\n' "$i" "$rc" \
        $((SECONDS - start)) "$(cut -d' ' -f1-3 /proc/loadavg)" \
        "$(grep -E '^(Files=|Result:)' "$OUT/run-$i.log" \
           | sed 's/ wallclock secs.*/ s/' | tr '\n' ' ')"
done

echo "$((RUNS - failed)) of $RUNS passed"
[ $failed -eq 0 ]
