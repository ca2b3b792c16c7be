#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# ngx_unico_selfie_module: the side-by-side benchmark (./build.sh bench).
#
#   bench/run.sh [--duration S] [--connections N] [--quick]
#                [--threads N] [--placement split|float]
#                [--paths a,b,..] [--fixtures a,b,..]
#                [--no-memory] [--no-callgrind] [--keep] [--output FILE]
#
# One machine, loopback only: a mock Unico (nginx serving the fixtures'
# JSON) and, in turn, one gateway per path (static, proxy_json, njs, lua,
# module, module_cache), one worker each; wrk drives each cell.  Then the
# memory held per in-flight request (module, njs, lua) and, through
# bench/callgrind.sh, the instructions per request.  The Markdown report
# goes to stdout and to bench/results/latest.md (--output to change it).
# docs/benchmarks.md explains the paths, the placement and the numbers.
#
# Needs root only to install missing Debian packages.

set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

DURATION=10
WARMUP=2
CONNECTIONS=32
THREADS=""
QUICK=0
MEMORY=1
CALLGRIND=1
MEM_N=200
MEM_FIXTURE=1080x1440
MEM_SECONDS=5
OUTPUT="$BENCH_DIR/results/latest.md"
ONLY_PATHS=""
ONLY_FIXTURES=""
ARGS="$*"

usage() {
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case $1 in
    --duration)     DURATION=${2:?}; shift ;;
    --connections)  CONNECTIONS=${2:?}; shift ;;
    --threads)      THREADS=${2:?}; shift ;;
    --quick)        QUICK=1 ;;
    --placement)    PLACEMENT=${2:?}; shift ;;
    --paths)        ONLY_PATHS=${2:?}; shift ;;
    --fixtures)     ONLY_FIXTURES=${2:?}; shift ;;
    --no-memory)    MEMORY=0 ;;
    --no-callgrind) CALLGRIND=0 ;;
    --keep)         BENCH_KEEP=1 ;;
    --output)       OUTPUT=${2:?}; shift ;;
    -h|--help)      usage ;;
    *)              blog "unknown option $1"; usage ;;
    esac
    shift
done

QUIET_BUDGET=120
if [ "$QUICK" = 1 ]; then
    DURATION=3
    WARMUP=0
    MEM_SECONDS=2
    QUIET_BUDGET=0
fi

case $PLACEMENT in split|float) ;; *) bdie "--placement split|float" ;; esac
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || bdie "--duration wants whole seconds"
[[ $CONNECTIONS =~ ^[1-9][0-9]*$ ]] || bdie "--connections wants a number"

# wrk shares one core with the mock Unico when pinned: one thread there;
# two when everything floats over the two cores
if [ -z "$THREADS" ]; then
    if [ "$PLACEMENT" = split ]; then THREADS=1; else THREADS=2; fi
fi
[ "$THREADS" -le "$CONNECTIONS" ] || THREADS=$CONNECTIONS

if [ "$PLACEMENT" = split ] && [ "$(nproc)" -lt 2 ]; then
    blog "fewer than 2 CPUs: --placement float"
    PLACEMENT=float
fi

PATHS=("${BENCH_PATHS[@]}")
[ -n "$ONLY_PATHS" ] && IFS=, read -r -a PATHS <<<"$ONLY_PATHS"
for p in "${PATHS[@]}"; do
    [[ " ${BENCH_PATHS[*]} " == *" $p "* ]] || bdie "unknown path $p (${BENCH_PATHS[*]})"
done
mapfile -t FIXTURE_NAMES < <(fixture_names)
[ -n "$ONLY_FIXTURES" ] && IFS=, read -r -a FIXTURE_NAMES <<<"$ONLY_FIXTURES"


# --- setup ----------------------------------------------------------------

T0=$SECONDS

pkgs=(nginx curl procps wrk libnginx-mod-http-js libnginx-mod-http-ndk
      libnginx-mod-http-lua lua-cjson)
[ "$CALLGRIND" = 1 ] && pkgs+=(valgrind)
bench_ensure_packages "${pkgs[@]}"
bench_ensure_module

bench_init
bench_snapshot_module
# the design bound is 12 min (full) / 2 min (quick); this is the backstop
if [ "$QUICK" = 1 ]; then bench_watchdog 240; else bench_watchdog 1080; fi

bench_make_data
RAW="$BENCH_WORK/raw"
RESULTS="$BENCH_WORK/results.tsv"
MEMRESULTS="$BENCH_WORK/memory.tsv"
: >"$RESULTS"
: >"$MEMRESULTS"

fx "$MEM_FIXTURE"
MEM_RATE=$(( FX_JSON_SIZE / MEM_SECONDS ))
bench_write_upstream_conf "$MEM_RATE"
bench_test_conf "$BENCH_WORK/upstream" "mock Unico"
bench_start_nginx "$BENCH_WORK/upstream" "$UP_PORT"
UP_MASTER=$NGX_MASTER
UP_WORKER=$NGX_WORKER

# the mock answers what Unico answers, and only with the token
for name in "${FIXTURE_NAMES[@]}"; do
    fx "$name"
    code=$(curl -sS --max-time 10 -o "$RAW/up.body" -w '%{http_code}' \
           -H "Authorization: Bearer $TOKEN" \
           "http://127.0.0.1:$UP_PORT/client/v1/process/$FX_ID/selfie")
    [ "$code" = 200 ] && [ "$(sha256sum <"$RAW/up.body" | cut -d' ' -f1)" = "$FX_JSON_SHA" ] \
        || bdie "mock Unico: wrong answer for $name ($code)"
done
code=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' \
       "http://127.0.0.1:$UP_PORT/client/v1/process/$FX_ID/selfie")
[ "$code" = 401 ] || bdie "mock Unico: answered $code without the token"

CACHE_OK=0
if bench_cache_supported; then CACHE_OK=1; fi

LOAD_PIN=("${NICE[@]}")
[ "$PLACEMENT" = split ] && LOAD_PIN+=(taskset -c "$LOAD_CPU")


# --- throughput cells -----------------------------------------------------

# run_wrk <seconds> <url> <outfile> [id prefix]: in this shell (not a
# subshell), so that its CPU time shows in this shell's children's times.
# With an id prefix, each request asks for another processId
# (wrk/report.lua).
# (In the background and waited for, so that a signal's trap runs at once
# and stops it: see BENCH_CHILD in lib.sh.)
run_wrk() {
    BENCH_PREFIX=${4:-} "${LOAD_PIN[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" \
        -d"$1s" --timeout 10s -s "$BENCH_DIR/wrk/report.lua" "$2" >"$3" 2>&1 &
    BENCH_CHILD=$!
    wait "$BENCH_CHILD" || { BENCH_CHILD=""; cat "$3" >&2; bdie "wrk failed ($2)"; }
    BENCH_CHILD=""
}

# wrk_field <file> <key>: a value of the BENCH line of wrk/report.lua
wrk_field() {
    awk -v k="$2" '/^BENCH / {
        for (i = 2; i <= NF; i++) {
            split($i, a, "=")
            if (a[1] == k) { print a[2]; exit }
        }
    }' "$1"
}

check_wrk() {   # check_wrk <file> <bytes per body> <what>
    local f=$1 len=$2 what=$3 k v req bytes
    grep -q '^BENCH ' "$f" || { cat "$f" >&2; bdie "$what: no result from wrk"; }
    for k in err_connect err_read err_write err_status err_timeout; do
        v=$(wrk_field "$f" "$k")
        [ "$v" = 0 ] || { cat "$f" >&2; bdie "$what: wrk counted $v $k"; }
    done
    req=$(wrk_field "$f" requests)
    bytes=$(wrk_field "$f" bytes)
    [ "$req" -gt 0 ] || bdie "$what: no request completed"
    [ "$bytes" -ge $(( req * len )) ] \
        || bdie "$what: $bytes bytes for $req responses of $len bytes"
}

# Before each cell: wait for other processes to go quiet, within a budget
# (QUIET_BUDGET seconds for the whole run).
wait_quiet() {
    local t0=$SECONDS lim
    [ "$QUIET_BUDGET" -gt 0 ] || return 0
    lim=$(( QUIET_BUDGET < 15 ? QUIET_BUDGET : 15 ))
    bench_wait_quiet "$lim" 10 \
        || blog "machine busy (${QUIET_BUSY}% of a CPU used by others): running anyway"
    QUIET_BUDGET=$(( QUIET_BUDGET - (SECONDS - t0) ))
}

run_cell() {   # run_cell <path> <fixture>
    local path=$1 name=$2 prefix="$BENCH_WORK/gw-$1" url sha len out idp
    local g0 g1 u0 u1 c0 c1 s0 s1 hwm rss_kb req dur
    fx "$name"
    url="http://127.0.0.1:$GW_PORT/selfies/$FX_ID"
    # a processId per request, except for the cache, which is measured
    # on hits: the same processId every time
    idp="/selfies/$FX_TAG-0000-4000-8000-"
    [ "$path" = module_cache ] && idp=""
    if [ "$path" = proxy_json ]; then
        sha=$FX_JSON_SHA len=$FX_JSON_SIZE
    else
        sha=$FX_SHA len=$FX_SIZE
    fi
    out="$RAW/$path-$name"

    wait_quiet
    bench_start_nginx "$prefix" "$GW_PORT"
    local gw_master=$NGX_MASTER gw_worker=$NGX_WORKER

    bench_verify "$url" "$sha" "$len" "$path $name"
    bench_verify "http://127.0.0.1:$GW_PORT${idp:-/selfies/$FX_TAG-0000-4000-8000-}$(printf '%012x' 999999)" \
        "$sha" "$len" "$path $name (another processId)"
    # module_cache: the first answer filled the cache, this one is a hit
    [ "$path" = module_cache ] && bench_verify "$url" "$sha" "$len" "$path $name (cached)"

    if [ "$WARMUP" -gt 0 ]; then
        run_wrk "$WARMUP" "$url" "$out.warmup" "$idp"
        check_wrk "$out.warmup" "$len" "$path $name warm-up"
    fi

    proc_reset_hwm "$gw_worker" || blog "cannot reset VmHWM: peak includes the warm-up"
    proc_cpu_ticks "$gw_worker"; g0=$TICKS
    proc_cpu_ticks "$UP_WORKER"; u0=$TICKS
    self_child_ticks; c0=$TICKS
    sys_busy_ticks; s0=$BUSY

    run_wrk "$DURATION" "$url" "$out.wrk" "$idp"

    sys_busy_ticks; s1=$BUSY
    self_child_ticks; c1=$TICKS
    proc_cpu_ticks "$UP_WORKER"; u1=$TICKS
    proc_cpu_ticks "$gw_worker"; g1=$TICKS
    hwm=$(proc_status_kb "$gw_worker" VmHWM)
    rss_kb=$(proc_status_kb "$gw_worker" VmRSS)

    check_wrk "$out.wrk" "$len" "$path $name"
    bench_verify "$url" "$sha" "$len" "$path $name (after the run)"

    bench_stop "$gw_master"
    bench_check_log "$prefix" "$path $name"

    req=$(wrk_field "$out.wrk" requests)
    dur=$(wrk_field "$out.wrk" duration_us)
    awk -v n="$name" -v p="$path" -v req="$req" -v dur="$dur" \
        -v p50="$(wrk_field "$out.wrk" p50_us)" \
        -v p99="$(wrk_field "$out.wrk" p99_us)" \
        -v hwm="$hwm" -v rss="$rss_kb" \
        -v g=$(( g1 - g0 )) -v u=$(( u1 - u0 )) -v c=$(( c1 - c0 )) \
        -v all=$(( s1 - s0 )) -v tck="$CLK_TCK" 'BEGIN {
            s = dur / 1e6
            other = all - g - u - c
            if (other < 0) other = 0
            printf "%s\t%s\t%.0f\t%.2f\t%.2f\t%.1f\t%.0f\t%.0f\t%.0f\t%d\t%.0f\n",
                n, p, req / s, p50 / 1000, p99 / 1000,
                (hwm > rss ? hwm : rss) / 1024,
                100 * g / tck / s, 100 * u / tck / s, 100 * c / tck / s, req,
                100 * other / tck / s
        }' >>"$RESULTS"
    blog "$(tail -1 "$RESULTS" | awk -F'\t' '{printf "%-9s %-12s %8s req/s  p50 %6s ms  p99 %6s ms  RSS %5s MB  CPU gw %s%% up %s%% wrk %s%% other %s%%", $1, $2, $3, $4, $5, $6, $7, $8, $9, $11}')"
}

for path in "${PATHS[@]}"; do
    if [ "$path" = module_cache ] && [ "$CACHE_OK" = 0 ]; then
        blog "module_cache: no \"unico_selfie_cache\" directive in the module: n/a"
        for name in "${FIXTURE_NAMES[@]}"; do
            printf '%s\tmodule_cache\tn/a\n' "$name" >>"$RESULTS"
        done
        continue
    fi
    bench_write_gateway_conf "$path"
    bench_test_conf "$BENCH_WORK/gw-$path" "$path"
    for name in "${FIXTURE_NAMES[@]}"; do
        run_cell "$path" "$name"
    done
done


# --- noisy cells, again ---------------------------------------------------

# On a shared machine other processes take CPU during some cells (the
# "other" column).  While the time budget lasts (BENCH_RETRY_UNTIL seconds
# into the run, 500 by default, none with --quick), the noisiest cell is
# measured again, at most twice more; the report keeps each cell's least
# noisy measurement.
RETRY_UNTIL=${BENCH_RETRY_UNTIL:-500}
[ "$QUICK" = 1 ] && RETRY_UNTIL=0
RETRIES=0

retry_noisy() {
    local line other name path
    while [ $(( SECONDS - T0 + WARMUP + DURATION + 5 )) -lt "$RETRY_UNTIL" ]; do
        line=$(awk -F'\t' '$3 != "n/a" {
                   k = $1 "\t" $2; n[k]++
                   if (!(k in best) || $11 < best[k]) best[k] = $11
               }
               END {
                   m = 10
                   for (k in best) if (n[k] < 3 && best[k] > m) { m = best[k]; w = k }
                   if (w != "") print m "\t" w
               }' "$RESULTS")
        [ -n "$line" ] || return 0
        IFS=$'\t' read -r other name path <<<"$line"
        blog "again: $path $name (others used ${other}% of a CPU)"
        run_cell "$path" "$name"
        RETRIES=$(( RETRIES + 1 ))
    done
}

retry_noisy


# --- memory per in-flight request -----------------------------------------

# mem_test <path>: MEM_N concurrent requests whose JSON the mock sends in
# about MEM_SECONDS; the gateway worker's RSS at its peak against its
# baseline after warm-up
mem_test() {
    local path=$1 prefix="$BENCH_WORK/gw-$1" dir="$RAW/mem-$1" i base peak=0 rss
    local hwm t0 t1 curl_pid codes sums fast
    fx "$MEM_FIXTURE"
    fast="http://127.0.0.1:$GW_PORT/selfies/$FX_ID"
    mkdir -p "$dir"

    bench_write_gateway_conf "$path"
    bench_start_nginx "$prefix" "$GW_PORT"
    local gw_master=$NGX_MASTER gw_worker=$NGX_WORKER

    bench_verify "$fast" "$FX_SHA" "$FX_SIZE" "memory $path"
    # warm-up: pools, the JIT, the allocator's free lists
    : >"$dir/warm.cfg"
    for (( i = 0; i < 20; i++ )); do
        printf 'url = "http://127.0.0.1:%s/selfies/%s"\noutput = "/dev/null"\n' \
            "$GW_PORT" "$(bench_id "$FX_TAG" $(( 100000 + i )))" >>"$dir/warm.cfg"
    done
    curl -sS --max-time 60 -K "$dir/warm.cfg" || bdie "memory $path: warm-up failed"
    sleep 0.5
    base=$(proc_status_kb "$gw_worker" VmRSS)
    proc_reset_hwm "$gw_worker" || true

    : >"$dir/slow.cfg"
    # distinct processIds: concurrent requests for the same one would
    # share one Unico call in the module (coalescing)
    for (( i = 0; i < MEM_N; i++ )); do
        printf 'url = "http://127.0.0.1:%s/slow/selfies/%s"\noutput = "%s/%d.img"\n' \
            "$GW_PORT" "$(bench_id "$FX_TAG" $(( 200000 + i )))" "$dir" "$i" >>"$dir/slow.cfg"
    done
    t0=$(date +%s.%N)
    "${LOAD_PIN[@]}" curl -sS --max-time $(( MEM_SECONDS * 6 + 20 )) \
        --parallel --parallel-immediate --parallel-max "$MEM_N" \
        -w '%{http_code}\n' -K "$dir/slow.cfg" >"$dir/codes" 2>"$dir/curl.err" &
    curl_pid=$!
    BENCH_CHILD=$curl_pid
    while kill -0 "$curl_pid" 2>/dev/null; do
        rss=$(proc_status_kb "$gw_worker" VmRSS) || break
        [ "$rss" -gt "$peak" ] && peak=$rss
        sleep 0.05
    done
    wait "$curl_pid" || { BENCH_CHILD=""; cat "$dir/curl.err" >&2; bdie "memory $path: curl failed"; }
    BENCH_CHILD=""
    t1=$(date +%s.%N)
    hwm=$(proc_status_kb "$gw_worker" VmHWM)
    [ "$hwm" -gt "$peak" ] && peak=$hwm

    codes=$(sort "$dir/codes" | uniq -c | awk '{printf "%s x %s; ", $1, $2}')
    [ "$(grep -c '^200$' "$dir/codes")" = "$MEM_N" ] \
        || bdie "memory $path: not all $MEM_N answers were 200 ($codes)"
    sums=$(cat "$dir"/*.img | wc -c)
    [ "$sums" = $(( MEM_N * FX_SIZE )) ] || bdie "memory $path: $sums bytes received"
    sums=$(sha256sum "$dir"/*.img | cut -d' ' -f1 | sort -u)
    [ "$sums" = "$FX_SHA" ] || bdie "memory $path: bodies are not byte-exact"
    rm -f "$dir"/*.img

    bench_stop "$gw_master"
    bench_check_log "$prefix" "memory $path"

    awk -v p="$path" -v n="$MEM_N" -v base="$base" -v peak="$peak" \
        -v img="$FX_SIZE" -v json="$FX_JSON_SIZE" -v t="$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b - a}')" 'BEGIN {
            per = (peak - base) * 1024 / n
            printf "%s\t%d\t%.0f\t%.0f\t%.1f\t%.1f\t%.0f\t%.2f\t%s\n",
                p, n, img / 1024, json / 1024, base / 1024, peak / 1024,
                per / 1024, per / img, t
        }' >>"$MEMRESULTS"
    blog "memory $(tail -1 "$MEMRESULTS" | awk -F'\t' '{printf "%-7s base %s MB peak %s MB: %s KB per request = %sx the image (%s s)", $1, $5, $6, $7, $8, $9}')"
}

if [ "$MEMORY" = 1 ]; then
    for path in module njs lua; do
        mem_test "$path"
    done
fi

bench_stop "$UP_MASTER"


# --- instructions per request ---------------------------------------------

CALLGRIND_MD="$BENCH_WORK/callgrind.md"
: >"$CALLGRIND_MD"
if [ "$CALLGRIND" = 1 ]; then
    cg_paths=module,module_cache,static,proxy_json,njs,lua
    [ "$QUICK" = 1 ] && cg_paths=module
    BENCH_MODULE_SO=$MODULE_SO BENCH_PLACEMENT=$PLACEMENT \
    "$BENCH_DIR/callgrind.sh" --paths "$cg_paths" \
        --requests 200 --fixture 720x960 >"$CALLGRIND_MD" \
        || bdie "bench/callgrind.sh failed"
fi


# --- report ---------------------------------------------------------------

noise_note() {
    local busy
    busy=$(awk -F'\t' '$3 != "n/a" && $11 > 10 { printf "%s%s %s (%s%%)", sep, $1, $2, $11; sep = ", " }' "$RESULTS")
    if [ -n "$busy" ]; then
        echo "- **noise**: other processes used more than 10% of a CPU during: $busy; those cells are not reliable"
    else
        echo "- noise: no cell had more than 10% of a CPU used by other processes"
    fi
    if [ "$RETRIES" -gt 0 ]; then
        echo "- $RETRIES noisy cells were measured again; each cell shows its least noisy measurement (every measurement: the last section)"
    fi
}

report() {
    local cpu
    cpu=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')

    cat <<EOF
# ngx_unico_selfie_module benchmark

$(date -u '+%Y-%m-%d %H:%M UTC'): \`bench/run.sh${ARGS:+ $ARGS}\`, $(( SECONDS - T0 )) s, module from ${MODULE_REV:-$(bench_module_revision)} (.so sha256 $(sha256sum "$MODULE_SO" | cut -c1-12)).

- machine: $(nproc) CPUs, $cpu, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), Linux $(uname -r)
- nginx $(${NGINX} -v 2>&1 | sed 's/.*nginx\///'), njs $(dpkg-query -W -f='${Version}' libnginx-mod-http-js), lua-nginx-module $(dpkg-query -W -f='${Version}' libnginx-mod-http-lua) ($(dpkg-query -W -f='${Version}' 'libluajit2-5.1-2' 2>/dev/null || echo LuaJIT)), wrk $(dpkg-query -W -f='${Version}' wrk)
- load: wrk, $CONNECTIONS connections, $THREADS thread(s), $([ "$WARMUP" -gt 0 ] && echo "${WARMUP} s warm-up then ")${DURATION} s per cell, keepalive, one gateway worker; a different processId on every request (module_cache: the same one, to measure hits)
- placement: $(if [ "$PLACEMENT" = split ]; then echo "gateway worker alone on CPU $GW_CPU; mock Unico worker and wrk on CPU $LOAD_CPU"; else echo "no pinning"; fi)
- priority: $(if [ "$BENCH_NICE" != 0 ]; then echo "nginx instances, wrk and curl at nice $BENCH_NICE"; else echo "default (nice 0)"; fi)
- worker RSS: VmHWM of the gateway worker over the timed run (reset just before it)
- CPU: share of one core used during the timed run by the gateway worker (gw), the mock Unico worker (up), wrk, and every other process of the machine (other: /proc/stat's busy time less those three); "bound by": the gateway when its worker used >= 90% of its core, wrk + mock when they used >= 90% of theirs (the cell then measures the load side, not the gateway)
$(noise_note)

## Throughput and latency

| fixture | path | req/s | p50 ms | p99 ms | worker RSS MB | req/s ÷ proxy_json | CPU % gw / up / wrk / other | bound by |
|---|---|--:|--:|--:|--:|--:|--:|---|
EOF
    local name f
    for name in "${FIXTURE_NAMES[@]}"; do
        fx "$name"
        f="$(basename "$FX_FILE") ($(( (FX_SIZE + 512) / 1024 )) KB)"
        awk -F'\t' -v n="$name" -v f="$f" -v pinned="$([ "$PLACEMENT" = split ] && echo 1 || echo 0)" '
            $1 == n { rows[++k] = $0; if ($2 == "proxy_json") base = $3 }
            END {
                for (i = 1; i <= k; i++) {
                    split(rows[i], c, "\t")
                    if (c[3] == "n/a") {
                        printf "| %s | %s | n/a | | | | | | |\n", f, c[2]
                        continue
                    }
                    ratio = base > 0 ? sprintf("%.2f", c[3] / base) : "-"
                    bound = "-"
                    if (c[7] >= 90) bound = "gateway"
                    else if (pinned && c[8] + c[9] >= 90) bound = "wrk + mock (CPU 0)"
                    if (c[11] > 10) bound = bound " (noisy)"
                    printf "| %s | %s | %d | %.2f | %.2f | %.1f | %s | %d / %d / %d / %d | %s |\n",
                        f, c[2], c[3], c[4], c[5], c[6], ratio, c[7], c[8], c[9], c[11], bound
                }
            }' "$RESULTS"
    done

    echo
    echo "## Targets"
    echo
    echo "| target | fixture | measured | met |"
    echo "|---|---|--:|:-:|"
    for name in "${FIXTURE_NAMES[@]}"; do
        fx "$name"
        awk -F'\t' -v n="$name" -v f="$(basename "$FX_FILE")" -v big=$(( FX_SIZE >= 87000 )) '
            $1 == n { v[$2] = $3; o[$2] = $11 }
            function row(t, a, b, want) {
                if (!(a in v) || !(b in v) || v[a] == "n/a" || v[b] == "n/a" || v[b] == 0) {
                    printf "| %s | %s | n/a | n/a |\n", t, f
                    return
                }
                r = v[a] / v[b]
                noisy = (o[a] > 10 || o[b] > 10) ? " (noisy)" : ""
                printf "| %s | %s | %.2fx%s | %s |\n", t, f, r, noisy, (r >= want ? "yes" : "**no**")
            }
            END {
                row("module >= 2x lua", "module", "lua", 2)
                row("module >= 4x njs", "module", "njs", 4)
                if (big) row("module >= 1.0x proxy_json", "module", "proxy_json", 1)
                row("module_cache >= 0.8x static", "module_cache", "static", 0.8)
            }' "$RESULTS"
    done
    if [ -s "$MEMRESULTS" ]; then
        awk -F'\t' '$1 == "module" {
            printf "| memory per in-flight request <= 1.5x image | %s KB | %.2fx | %s |\n",
                $3, $8, ($8 <= 1.5 ? "yes" : "**no**") }' "$MEMRESULTS"
    fi

    if [ -s "$MEMRESULTS" ]; then
        fx "$MEM_FIXTURE"
        cat <<EOF

## Memory per in-flight request

$MEM_N concurrent GET /slow/selfies/<id> for $(basename "$FX_FILE") ($(( FX_SIZE / 1024 )) KB image, $(( FX_JSON_SIZE / 1024 )) KB JSON); the mock Unico sends each JSON at $(( MEM_RATE / 1024 )) KB/s (limit_rate), so all $MEM_N are in flight together for about $MEM_SECONDS s. Baseline: the worker's VmRSS after 20 warm-up requests; peak: the larger of VmHWM and VmRSS sampled every 50 ms. Per request = (peak - baseline) / $MEM_N.

| path | N | image KB | JSON KB | baseline MB | peak MB | per request KB | ÷ image | wall s |
|---|--:|--:|--:|--:|--:|--:|--:|--:|
EOF
        awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %.2f | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9 }' "$MEMRESULTS"
    fi

    if [ -s "$CALLGRIND_MD" ]; then
        echo
        cat "$CALLGRIND_MD"
    fi

    if [ "$RETRIES" -gt 0 ]; then
        cat <<EOF

## Every measurement of the cells measured again

| fixture | path | req/s | p50 ms | p99 ms | CPU % gw / up / wrk / other |
|---|---|--:|--:|--:|--:|
EOF
        awk -F'\t' 'NR == FNR { k = $1 "\t" $2; n[k]++; next }
            n[$1 "\t" $2] > 1 {
                printf "| %s | %s | %d | %.2f | %.2f | %d / %d / %d / %d |\n", $1, $2, $3, $4, $5, $7, $8, $9, $11
            }' "$RESULTS_ALL" "$RESULTS_ALL"
    fi
}

# each cell's least noisy measurement, in the order first measured
BEST="$BENCH_WORK/best.tsv"
awk -F'\t' '{
        k = $1 "\t" $2
        if (!(k in row)) { order[++n] = k; row[k] = $0; o[k] = $11; next }
        if ($3 != "n/a" && $11 < o[k]) { row[k] = $0; o[k] = $11 }
    }
    END { for (i = 1; i <= n; i++) print row[order[i]] }' "$RESULTS" >"$BEST"
RESULTS_ALL=$RESULTS
RESULTS=$BEST

mkdir -p "$(dirname "$OUTPUT")"
report >"$BENCH_WORK/report.md"
cp "$BENCH_WORK/report.md" "$OUTPUT"
cat "$BENCH_WORK/report.md"
blog "done in $(( SECONDS - T0 )) s; report in $OUTPUT"
