#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# ngx_unico_selfie_module: the side-by-side benchmark (./build.sh bench).
#
#   bench/run.sh [--rounds R] [--duration S] [--connections N] [--quick]
#                [--threads N] [--placement split|float]
#                [--paths a,b,..] [--fixtures a,b,..]
#                [--no-memory] [--no-callgrind] [--no-waiting]
#                [--keep] [--output FILE]
#
# One machine, loopback only: a mock Unico (nginx serving the fixtures'
# JSON) and one gateway per path (static, proxy_json, njs, lua, module,
# module_cache), one worker each, all started once and left running.
# R rounds; in each round, for each fixture, every path is measured back
# to back (wrk, S seconds each), so a ratio between two paths is taken
# from measurements seconds apart; the report gives each figure as the
# median over the rounds with its range.  Then the memory held per
# in-flight request, 10,000 requests waiting on a slow Unico
# (bench/waiting.sh) and, through bench/callgrind.sh, the instructions per
# request.  The Markdown report goes to stdout and to
# bench/results/latest.md (--output to change it).  docs/benchmarks.md
# explains the paths, the method and the numbers.
#
# Needs root only to install missing Debian packages.

set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

ROUNDS=5
DURATION=5
WARMUP=1
CONNECTIONS=32
THREADS=""
QUICK=0
MEMORY=1
CALLGRIND=1
WAITING=1
MEM_N=200
MEM_FIXTURE=1080x1440
MEM_SECONDS=5
OUTPUT="$BENCH_DIR/results/latest.md"
ONLY_PATHS=""
ONLY_FIXTURES=""
ARGS="$*"
SET_ROUNDS=""
SET_DURATION=""

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case $1 in
    --rounds)       SET_ROUNDS=${2:?}; shift ;;
    --duration)     SET_DURATION=${2:?}; shift ;;
    --connections)  CONNECTIONS=${2:?}; shift ;;
    --threads)      THREADS=${2:?}; shift ;;
    --quick)        QUICK=1 ;;
    --placement)    PLACEMENT=${2:?}; shift ;;
    --paths)        ONLY_PATHS=${2:?}; shift ;;
    --fixtures)     ONLY_FIXTURES=${2:?}; shift ;;
    --no-memory)    MEMORY=0 ;;
    --no-callgrind) CALLGRIND=0 ;;
    --no-waiting)   WAITING=0 ;;
    --keep)         BENCH_KEEP=1 ;;
    --output)       OUTPUT=${2:?}; shift ;;
    -h|--help)      usage ;;
    *)              blog "unknown option $1"; usage ;;
    esac
    shift
done

QUIET_BUDGET=120
if [ "$QUICK" = 1 ]; then
    ROUNDS=2
    DURATION=2
    WARMUP=0
    MEM_SECONDS=2
    QUIET_BUDGET=0
    WAITING=0
fi
[ -n "$SET_ROUNDS" ] && ROUNDS=$SET_ROUNDS
[ -n "$SET_DURATION" ] && DURATION=$SET_DURATION

case $PLACEMENT in split|float) ;; *) bdie "--placement split|float" ;; esac
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || bdie "--rounds wants a number"
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
# the backstop: the cells at their nominal length plus 4 s each, and the
# memory, waiting and callgrind parts (docs/benchmarks.md: a full run is
# about 15 min, --quick about 2)
WATCHDOG=$(( ROUNDS * ${#FIXTURE_NAMES[@]} * ${#PATHS[@]} * (DURATION + WARMUP + 4) ))
if [ "$QUICK" = 1 ]; then WATCHDOG=$(( WATCHDOG + 300 )); else WATCHDOG=$(( WATCHDOG + 900 )); fi
bench_watchdog "$WATCHDOG"

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

# Before each fixture's group of cells: wait for other processes to go
# quiet, within a budget (QUIET_BUDGET seconds for the whole run).
wait_quiet() {
    local t0=$SECONDS lim
    [ "$QUIET_BUDGET" -gt 0 ] || return 0
    lim=$(( QUIET_BUDGET < 10 ? QUIET_BUDGET : 10 ))
    bench_wait_quiet "$lim" 10 \
        || blog "machine busy (${QUIET_BUSY}% of a CPU used by others): running anyway"
    QUIET_BUDGET=$(( QUIET_BUDGET - (SECONDS - t0) ))
}

# One gateway per path, all started before the first round and left
# running (idle while the others are measured), each on its own port:
# the cells of a round follow each other without a restart in between.
declare -A GW_PORT_OF GW_MASTER_OF GW_WORKER_OF
ACTIVE_PATHS=()
gw_start_all() {
    local path i=0 port
    for path in "${PATHS[@]}"; do
        i=$(( i + 1 ))
        if [ "$path" = module_cache ] && [ "$CACHE_OK" = 0 ]; then
            blog "module_cache: no \"unico_selfie_cache\" directive in the module: n/a"
            continue
        fi
        port=$(( GW_PORT + 1 + i ))
        [ "$port" = "$UP_PORT" ] && bdie "gateway port $port is the upstream's"
        GW_PORT=$port bench_write_gateway_conf "$path"
        bench_test_conf "$BENCH_WORK/gw-$path" "$path"
        bench_start_nginx "$BENCH_WORK/gw-$path" "$port"
        GW_PORT_OF[$path]=$port
        GW_MASTER_OF[$path]=$NGX_MASTER
        GW_WORKER_OF[$path]=$NGX_WORKER
        ACTIVE_PATHS+=("$path")
    done
}

gw_stop_all() {
    local path
    for path in "${ACTIVE_PATHS[@]}"; do
        bench_stop "${GW_MASTER_OF[$path]}"
        bench_check_log "$BENCH_WORK/gw-$path" "$path"
    done
}

run_cell() {   # run_cell <round> <path> <fixture>
    local round=$1 path=$2 name=$3 port url sha len out idp
    local g0 g1 u0 u1 c0 c1 s0 s1 hwm rss_kb req dur gw_worker
    port=${GW_PORT_OF[$path]}
    gw_worker=${GW_WORKER_OF[$path]}
    fx "$name"
    url="http://127.0.0.1:$port/selfies/$FX_ID"
    # a processId per request, except for the cache, which is measured
    # on hits: the same processId every time
    idp="/selfies/$FX_TAG-0000-4000-8000-"
    [ "$path" = module_cache ] && idp=""
    if [ "$path" = proxy_json ]; then
        sha=$FX_JSON_SHA len=$FX_JSON_SIZE
    else
        sha=$FX_SHA len=$FX_SIZE
    fi
    out="$RAW/$path-$name-r$round"

    kill -0 "$gw_worker" 2>/dev/null || bdie "$path: its gateway worker $gw_worker is gone"
    # byte-exact before timing
    bench_verify "$url" "$sha" "$len" "$path $name"
    bench_verify "http://127.0.0.1:$port${idp:-/selfies/$FX_TAG-0000-4000-8000-}$(printf '%012x' $(( 999000 + round )))" \
        "$sha" "$len" "$path $name (another processId)"
    # module_cache: the first answer filled the cache, this one is a hit
    [ "$path" = module_cache ] && bench_verify "$url" "$sha" "$len" "$path $name (cached)"

    if [ "$WARMUP" -gt 0 ]; then
        run_wrk "$WARMUP" "$url" "$out.warmup" "$idp"
        check_wrk "$out.warmup" "$len" "$path $name warm-up"
    fi

    proc_reset_hwm "$gw_worker" || blog "cannot reset VmHWM: peak includes earlier cells"
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

    req=$(wrk_field "$out.wrk" requests)
    dur=$(wrk_field "$out.wrk" duration_us)
    # round fixture path req/s p50 p99 rssMB gw% up% wrk% requests other%
    awk -v r="$round" -v n="$name" -v p="$path" -v req="$req" -v dur="$dur" \
        -v p50="$(wrk_field "$out.wrk" p50_us)" \
        -v p99="$(wrk_field "$out.wrk" p99_us)" \
        -v hwm="$hwm" -v rss="$rss_kb" \
        -v g=$(( g1 - g0 )) -v u=$(( u1 - u0 )) -v c=$(( c1 - c0 )) \
        -v all=$(( s1 - s0 )) -v tck="$CLK_TCK" 'BEGIN {
            s = dur / 1e6
            other = all - g - u - c
            if (other < 0) other = 0
            printf "%d\t%s\t%s\t%.0f\t%.2f\t%.2f\t%.1f\t%.0f\t%.0f\t%.0f\t%d\t%.0f\n",
                r, n, p, req / s, p50 / 1000, p99 / 1000,
                (hwm > rss ? hwm : rss) / 1024,
                100 * g / tck / s, 100 * u / tck / s, 100 * c / tck / s, req,
                100 * other / tck / s
        }' >>"$RESULTS"
    blog "$(tail -1 "$RESULTS" | awk -F'\t' '{printf "r%s %-9s %-12s %8s req/s  p50 %6s ms  p99 %6s ms  RSS %5s MB  CPU gw %s%% up %s%% wrk %s%% other %s%%", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $12}')"
}

gw_start_all
T_CELLS=$SECONDS
for (( round = 1; round <= ROUNDS; round++ )); do
    # the order of the paths turns by one each round, so that no path is
    # always the first after the quiet wait, or always follows the same one
    n=${#ACTIVE_PATHS[@]}
    for name in "${FIXTURE_NAMES[@]}"; do
        wait_quiet
        for (( k = 0; k < n; k++ )); do
            run_cell "$round" "${ACTIVE_PATHS[$(( (k + round - 1) % n ))]}" "$name"
        done
    done
    # errors fail the run at once (bench_check_log's rule; the requests
    # in flight when wrk stopped are counted once, at the end)
    for path in "${ACTIVE_PATHS[@]}"; do
        bad=$(grep -E '\[(error|crit|alert|emerg)\]|buffered to a temporary file' \
                   "$BENCH_WORK/gw-$path/logs/error.log" | grep -Ev "$BENCH_CLIENT_GONE" || true)
        [ -z "$bad" ] || { printf '%s\n' "$bad" | head -5 >&2; bdie "$path: errors in its log (round $round)"; }
    done
    blog "round $round of $ROUNDS done ($(( SECONDS - T_CELLS )) s)"
done
gw_stop_all
T_CELLS=$(( SECONDS - T_CELLS ))
for path in "${PATHS[@]}"; do
    if [[ " ${ACTIVE_PATHS[*]} " != *" $path "* ]]; then
        for name in "${FIXTURE_NAMES[@]}"; do
            printf '0\t%s\t%s\tn/a\n' "$name" "$path" >>"$RESULTS"
        done
    fi
done


# --- memory per in-flight request -----------------------------------------

# mem_test <path>: MEM_N concurrent requests whose JSON the mock sends in
# about MEM_SECONDS; the gateway worker's RSS at its peak against its
# baseline after warm-up
mem_test() {   # mem_test <path> <round>
    local path=$1 round=$2 prefix="$BENCH_WORK/gw-$1" dir="$RAW/mem-$1-r$2" i base peak=0 rss
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

    awk -v r="$round" -v p="$path" -v n="$MEM_N" -v base="$base" -v peak="$peak" \
        -v img="$FX_SIZE" -v json="$FX_JSON_SIZE" -v t="$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b - a}')" 'BEGIN {
            per = (peak - base) * 1024 / n
            printf "%d\t%s\t%d\t%.0f\t%.0f\t%.1f\t%.1f\t%.0f\t%.3f\t%s\n",
                r, p, n, img / 1024, json / 1024, base / 1024, peak / 1024,
                per / 1024, per / img, t
        }' >>"$MEMRESULTS"
    blog "memory $(tail -1 "$MEMRESULTS" | awk -F'\t' '{printf "r%s %-7s base %s MB peak %s MB: %s KB per request = %sx the image (%s s)", $1, $2, $6, $7, $8, $9, $10}')"
}

# the module once per round (the memory goal is its median), the peers once
if [ "$MEMORY" = 1 ]; then
    for (( round = 1; round <= ROUNDS; round++ )); do
        mem_test module "$round"
    done
    for path in njs lua; do
        [[ " ${PATHS[*]} " == *" $path "* ]] && mem_test "$path" 1
    done
fi

bench_stop "$UP_MASTER"


# --- 10,000 requests waiting on a slow Unico --------------------------------

WAITING_MD="$BENCH_WORK/waiting.md"
WAITING_TSV="$BENCH_WORK/waiting.tsv"
: >"$WAITING_MD"
: >"$WAITING_TSV"
if [ "$WAITING" = 1 ]; then
    BENCH_MODULE_SO=$MODULE_SO BENCH_PLACEMENT=$PLACEMENT \
    "$BENCH_DIR/waiting.sh" --tsv "$WAITING_TSV" >"$WAITING_MD" \
        || bdie "bench/waiting.sh failed"
fi


# --- instructions per request ---------------------------------------------

CALLGRIND_MD="$BENCH_WORK/callgrind.md"
CALLGRIND_TSV="$BENCH_WORK/callgrind.tsv"
: >"$CALLGRIND_MD"
: >"$CALLGRIND_TSV"
if [ "$CALLGRIND" = 1 ]; then
    # the goals need module, proxy_json (the module's own work is the
    # difference), module_cache and static (a hit against a file)
    cg_paths=module,proxy_json,module_cache,static,njs,lua
    cg_requests=200
    if [ "$QUICK" = 1 ]; then cg_paths=module,proxy_json,module_cache,static; cg_requests=50; fi
    BENCH_MODULE_SO=$MODULE_SO BENCH_PLACEMENT=$PLACEMENT \
    "$BENCH_DIR/callgrind.sh" --paths "$cg_paths" --tsv "$CALLGRIND_TSV" \
        --requests "$cg_requests" --fixture 720x960 >"$CALLGRIND_MD" \
        || bdie "bench/callgrind.sh failed"
fi


# --- report ---------------------------------------------------------------

# A cell is noisy when processes other than the gateway, the mock and wrk
# used more than NOISY % of a CPU during its timed run.
NOISY=10

# awk: sort a[1..k] and return its median
AWK_MED='function med(a, k,    i, j, t) {
    for (i = 2; i <= k; i++) { t = a[i]; j = i - 1
        while (j > 0 && a[j] > t) { a[j + 1] = a[j]; j-- } a[j + 1] = t }
    return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
}'

# ratios <fixture> <a> <b>: "median min max noisy rounds" of a's req/s
# over b's, each ratio within one round; noisy = the rounds where either
# cell was noisy
ratios() {
    awk -F'\t' -v n="$1" -v a="$2" -v b="$3" -v lim="$NOISY" "$AWK_MED"'
        $2 == n && $4 != "n/a" && ($3 == a || $3 == b) { v[$1, $3] = $4; o[$1, $3] = $12; r[$1] = 1 }
        END {
            k = 0; z = 0
            for (x in r) {
                if (!((x, a) in v) || !((x, b) in v) || v[x, b] == 0) continue
                q[++k] = v[x, a] / v[x, b]
                if (o[x, a] > lim || o[x, b] > lim) z++
            }
            if (k == 0) { print "n/a"; exit }
            m = med(q, k)
            printf "%.3f %.3f %.3f %d %d\n", m, q[1], q[k], z, k
        }' "$RESULTS"
}

# fmt_ratio "<median min max noisy rounds>": "1.23 [1.10-1.31]"
fmt_ratio() {
    [ "$1" = n/a ] && { echo n/a; return; }
    awk -v s="$1" 'BEGIN { split(s, f, " "); printf "%.2f [%.2f-%.2f]", f[1], f[2], f[3] }'
}

# met <"median ..."> <ge|le> <goal>
met() {
    [ "$1" = n/a ] && { echo n/a; return; }
    awk -v s="$1" -v op="$2" -v g="$3" 'BEGIN { split(s, f, " ")
        ok = (op == "ge") ? f[1] >= g : f[1] <= g; print ok ? "met" : "**not met**" }'
}

noisy_of() {   # "2/5" from "<median min max noisy rounds>"
    [ "$1" = n/a ] && { echo; return; }
    awk -v s="$1" 'BEGIN { split(s, f, " "); printf "%d/%d", f[4], f[5] }'
}

fixture_label() {   # fixture_label <name>: "selfie-360x480.jpg (21 KB)"
    fx "$1"
    echo "$(basename "$FX_FILE") ($(( (FX_SIZE + 512) / 1024 )) KB)"
}

goals_table() {
    local name s want
    echo "| figure | fixture | goal | median [min-max] | noisy rounds | met (median) |"
    echo "|---|---|--:|--:|--:|:-:|"
    for name in "${FIXTURE_NAMES[@]}"; do
        fx "$name"
        if [ "$FX_SIZE" -lt 50000 ]; then want=0.9; else want=1.5; fi
        s=$(ratios "$name" module proxy_json)
        printf '| miss: module ÷ proxy_json (req/s) | %s | >= %s | %s | %s | %s |\n' \
            "$(fixture_label "$name")" "$want" "$(fmt_ratio "$s")" "$(noisy_of "$s")" "$(met "$s" ge "$want")"
    done
    for name in "${FIXTURE_NAMES[@]}"; do
        s=$(ratios "$name" module_cache static)
        printf '| cache hit: module_cache ÷ static (req/s) | %s | >= 1.0 | %s | %s | %s |\n' \
            "$(fixture_label "$name")" "$(fmt_ratio "$s")" "$(noisy_of "$s")" "$(met "$s" ge 1.0)"
    done
    s=n/a
    [ -s "$MEMRESULTS" ] && s=$(awk -F'\t' "$AWK_MED"'
        $2 == "module" { q[++k] = $9 }
        END {
            if (k == 0) { print "n/a"; exit }
            m = med(q, k)
            printf "%.3f %.3f %.3f 0 %d\n", m, q[1], q[k], k }' "$MEMRESULTS")
    if [ "$s" != n/a ]; then
        printf '| memory per in-flight request ÷ image (%s at once, %s runs) | %s | <= 1.1 | %s | | %s |\n' \
            "$MEM_N" "$(awk '{print $5}' <<<"$s")" "$(fixture_label "$MEM_FIXTURE")" "$(fmt_ratio "$s")" "$(met "$s" le 1.1)"
    else
        echo "| memory per in-flight request ÷ image | | <= 1.1 | not measured | | |"
    fi
    if [ -s "$CALLGRIND_TSV" ]; then
        awk -F'\t' '{ ir[$1] = $2; json = $3; img = $4 }
            END {
                if (("module" in ir) && ("proxy_json" in ir)) {
                    v = (ir["module"] - ir["proxy_json"]) / json
                    printf "| instructions per JSON byte of the module'"'"'s own work ((module - proxy_json) ÷ %d B, callgrind) | %d KB | <= 1.0 | %.2f (%d - %d) | (deterministic) | %s |\n",
                        json, (img + 512) / 1024, v, ir["module"], ir["proxy_json"], v <= 1.0 ? "met" : "**not met**"
                } else print "| instructions per JSON byte of the module'"'"'s own work | | <= 1.0 | n/a | | |"
                if (("module_cache" in ir) && ("static" in ir) && ir["static"] > 0) {
                    v = ir["module_cache"] / ir["static"]
                    printf "| a cache hit'"'"'s instructions ÷ the static file'"'"'s (callgrind) | %d KB | <= 2 | %.2f (%d ÷ %d) | (deterministic) | %s |\n",
                        (img + 512) / 1024, v, ir["module_cache"], ir["static"], v <= 2 ? "met" : "**not met**"
                } else print "| a cache hit'"'"'s instructions ÷ the static file'"'"'s | | <= 2 | n/a | | |"
            }' "$CALLGRIND_TSV"
    else
        echo "| instructions per JSON byte; a cache hit's ÷ static's (callgrind) | | <= 1.0; <= 2 | not measured (--no-callgrind) | | |"
    fi
    if [ -s "$WAITING_TSV" ]; then
        awk -F'\t' '{ w[$1] = $2 }
            END {
                fixed = w["wait_kb"] * 1024 / w["image"]
                printf "| 10,000 waiting on a slow Unico, one worker: RSS per request before any byte (fixed cost) | %s | stated | %.1f KB | | - |\n",
                    w["fixture_label"], w["wait_kb"]
                printf "| 10,000 waiting, the JSON arriving (%s%% of it in): RSS per request ÷ image | %s | <= 1.1 + fixed (%.2f) | %.2f | | %s |\n",
                    w["held_pct"], w["fixture_label"], fixed, w["body_ratio"],
                    (w["body_ratio"] <= 1.1 + fixed) ? "met" : "**not met**"
                printf "| 10,000 waiting: a plain location'"'"'s p99 during ÷ idle (p50 %s -> %s ms, p99 %s -> %s ms) | - | unchanged (<= 1.25) | %.2f | %s | %s |\n",
                    w["idle_p50"], w["wait_p50"], w["idle_p99"], w["wait_p99"], w["p99_ratio"], w["noisy"],
                    (w["p99_ratio"] <= 1.25) ? "met" : "**not met**"
            }' "$WAITING_TSV"
    else
        echo "| 10,000 requests waiting on a slow Unico | | | not measured ($([ "$QUICK" = 1 ] && echo "--quick" || echo "--no-waiting")) | | |"
    fi
}

# per fixture and path: medians over the rounds
throughput_table() {
    local name f path s
    echo "| fixture | path | req/s median [min-max] | p50 ms | p99 ms | worker RSS MB (max) | ÷ proxy_json median [min-max] | CPU % gw / up / wrk / other (medians) | noisy rounds | bound by |"
    echo "|---|---|--:|--:|--:|--:|--:|--:|--:|---|"
    for name in "${FIXTURE_NAMES[@]}"; do
        f=$(fixture_label "$name")
        for path in "${PATHS[@]}"; do
            s=$(ratios "$name" "$path" proxy_json)
            awk -F'\t' -v n="$name" -v p="$path" -v f="$f" -v rs="$(fmt_ratio "$s")" -v lim="$NOISY" \
                -v pinned="$([ "$PLACEMENT" = split ] && echo 1 || echo 0)" "$AWK_MED"'
                $2 == n && $3 == p {
                    if ($4 == "n/a") { na = 1; next }
                    k++; q[k] = $4; l50[k] = $5; l99[k] = $6; g[k] = $8; u[k] = $9; w[k] = $10; o[k] = $12
                    if ($7 > rss) rss = $7
                    if ($12 > lim) z++
                }
                END {
                    if (na || k == 0) { printf "| %s | %s | n/a | | | | | | | |\n", f, p; exit }
                    m = med(q, k); lo = q[1]; hi = q[k]
                    mg = med(g, k); mu = med(u, k); mw = med(w, k); mo = med(o, k)
                    bound = "-"
                    if (mg >= 90) bound = "gateway"
                    else if (pinned && mu + mw >= 90) bound = "wrk + mock (CPU 0)"
                    printf "| %s | %s | %d [%d-%d] | %.2f | %.2f | %.1f | %s | %d / %d / %d / %d | %d/%d | %s |\n",
                        f, p, m, lo, hi, med(l50, k), med(l99, k), rss, rs, mg, mu, mw, mo, z + 0, k, bound
                }' "$RESULTS"
        done
    done
}

# every round's ratio for the goals' figures; * marks a noisy round
rounds_table() {
    local name head sep r pair a b
    head="| figure | fixture |"; sep="|---|---|"
    for (( r = 1; r <= ROUNDS; r++ )); do head+=" r$r |"; sep+="--:|"; done
    echo "$head"; echo "$sep"
    for pair in "module proxy_json" "module_cache static"; do
        read -r a b <<<"$pair"
        for name in "${FIXTURE_NAMES[@]}"; do
            awk -F'\t' -v n="$name" -v a="$a" -v b="$b" -v R="$ROUNDS" -v lim="$NOISY" -v f="$(fixture_label "$name")" '
                $2 == n && $4 != "n/a" && ($3 == a || $3 == b) { v[$1, $3] = $4; o[$1, $3] = $12 }
                END {
                    printf "| %s ÷ %s | %s |", a, b, f
                    for (r = 1; r <= R; r++) {
                        if (!((r, a) in v) || !((r, b) in v) || v[r, b] == 0) { printf " n/a |"; continue }
                        printf " %.2f%s |", v[r, a] / v[r, b], (o[r, a] > lim || o[r, b] > lim) ? "*" : ""
                    }
                    printf "\n"
                }' "$RESULTS"
        done
    done
}

noise_note() {
    local busy total others
    total=$(awk -F'\t' '$4 != "n/a"' "$RESULTS" | wc -l)
    busy=$(awk -F'\t' -v lim="$NOISY" '$4 != "n/a" && $12 > lim' "$RESULTS" | wc -l)
    others=$(awk -F'\t' "$AWK_MED"'$4 != "n/a" { q[++k] = $12 }
             END { if (!k) { print "-"; exit } m = med(q, k); printf "median %d%%, max %d%%", m, q[k] }' "$RESULTS")
    echo "- noise: in $busy of the $total timed cells other processes used more than $NOISY% of a CPU (noisy); their share over all cells: $others of a CPU; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
}

report() {
    local cpu
    cpu=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')

    cat <<EOF
# ngx_unico_selfie_module benchmark

$(date -u '+%Y-%m-%d %H:%M UTC'): \`bench/run.sh${ARGS:+ $ARGS}\`, $(( SECONDS - T0 )) s (the rounds: $T_CELLS s), module from ${MODULE_REV:-$(bench_module_revision)} (.so sha256 $(sha256sum "$MODULE_SO" | cut -c1-12)).

- machine: $(nproc) CPUs, $cpu, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), Linux $(uname -r)
- nginx $(${NGINX} -v 2>&1 | sed 's/.*nginx\///'), njs $(dpkg-query -W -f='${Version}' libnginx-mod-http-js), lua-nginx-module $(dpkg-query -W -f='${Version}' libnginx-mod-http-lua) ($(dpkg-query -W -f='${Version}' 'libluajit2-5.1-2' 2>/dev/null || echo LuaJIT)), wrk $(dpkg-query -W -f='${Version}' wrk)
- method: $ROUNDS rounds; in each round, for each fixture, every path back to back (the order turns by one path each round); wrk, $CONNECTIONS connections, $THREADS thread(s), $([ "$WARMUP" -gt 0 ] && echo "${WARMUP} s warm-up then ")${DURATION} s per cell, keepalive; one gateway worker per path, all started once; a different processId on every request (module_cache: the same one, to measure hits). A ratio is taken within a round; each figure is the median of the rounds' ratios, [min-max] their range
- placement: $(if [ "$PLACEMENT" = split ]; then echo "gateway workers on CPU $GW_CPU; mock Unico worker and wrk on CPU $LOAD_CPU"; else echo "no pinning"; fi)
- priority: $(if [ "$BENCH_NICE" != 0 ]; then echo "nginx instances, wrk and curl at nice $BENCH_NICE"; else echo "default (nice 0)"; fi)
- worker RSS: VmHWM of the gateway worker over each timed run (reset just before it), the largest over the rounds
- CPU: share of one core used during the timed run by the gateway worker (gw), the mock Unico worker (up), wrk, and every other process of the machine (other: /proc/stat's busy time less those three); "bound by": the gateway when its worker used >= 90% of its core, wrk + mock when they used >= 90% of theirs
- noisy: a cell during which other processes used more than $NOISY% of a CPU; "noisy rounds" counts the rounds in which either cell of a ratio was
$(noise_note)

## Goals (issue 11)

"met" is judged on the median; the range says how far a single round strays.

$(goals_table)

## Throughput and latency (medians over $ROUNDS rounds)

$(throughput_table)

## Every round's ratio (* = noisy round)

$(rounds_table)
EOF

    if [ -s "$MEMRESULTS" ]; then
        fx "$MEM_FIXTURE"
        cat <<EOF

## Memory per in-flight request

$MEM_N concurrent GET /slow/selfies/<id> for $(basename "$FX_FILE") ($(( FX_SIZE / 1024 )) KB image, $(( FX_JSON_SIZE / 1024 )) KB JSON); the mock Unico sends each JSON at $(( MEM_RATE / 1024 )) KB/s (limit_rate), so all $MEM_N are in flight together for about $MEM_SECONDS s. A fresh gateway each time; baseline: the worker's VmRSS after 20 warm-up requests; peak: the larger of VmHWM and VmRSS sampled every 50 ms. Per request = (peak - baseline) / $MEM_N. The module once per round, the peers once.

| round | path | N | image KB | JSON KB | baseline MB | peak MB | per request KB | ÷ image | wall s |
|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|
EOF
        awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s | %.2f | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 }' "$MEMRESULTS"
    fi

    if [ -s "$WAITING_MD" ]; then
        echo
        cat "$WAITING_MD"
    fi

    if [ -s "$CALLGRIND_MD" ]; then
        echo
        cat "$CALLGRIND_MD"
    fi
}

mkdir -p "$(dirname "$OUTPUT")"
report >"$BENCH_WORK/report.md"
cp "$BENCH_WORK/report.md" "$OUTPUT"
cat "$BENCH_WORK/report.md"
blog "done in $(( SECONDS - T0 )) s; report in $OUTPUT"
