#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# ngx_unico_selfie_module: instructions per request, under callgrind.
#
#   bench/callgrind.sh [--paths module[,proxy_json,njs,lua,static]]
#                      [--requests K] [--fixture 720x960] [--top N] [--keep]
#                      [--tsv FILE]
#
# For each path: the mock Unico (a plain nginx, as in bench/run.sh) and the
# gateway as ONE process (master_process off, daemon off) under
# valgrind --tool=callgrind --instr-atstart=no.  After 20 warm-up requests
# the instrumentation is switched on (callgrind_control -i on), K requests
# go over one keepalive connection, and the counts are dumped
# (callgrind_control -d): the dump holds exactly those K requests.
# Prints a Markdown section: instructions per request for each path, and
# the top functions (self cost) of each, from callgrind_annotate.
#
# --tsv FILE also writes one line per path: path, instructions per
# request, the fixture's JSON bytes, its image bytes (bench/run.sh reads
# it for its goals table).
#
# Needs root only to install missing Debian packages (valgrind, ...).

set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

CG_PATHS=module
K=200
FIXTURE=720x960
TOP=15
TSV=""

while [ $# -gt 0 ]; do
    case $1 in
    --paths)    CG_PATHS=${2:?}; shift ;;
    --requests) K=${2:?}; shift ;;
    --fixture)  FIXTURE=${2:?}; shift ;;
    --top)      TOP=${2:?}; shift ;;
    --keep)     BENCH_KEEP=1 ;;
    --tsv)      TSV=${2:?}; shift ;;
    -h|--help)  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    *)          blog "unknown option $1"; exit 2 ;;
    esac
    shift
done
IFS=, read -r -a PATHS <<<"$CG_PATHS"
[[ $K =~ ^[1-9][0-9]*$ ]] || bdie "--requests wants a number"

pkgs=(nginx curl procps valgrind)
for p in "${PATHS[@]}"; do
    case $p in
    njs) pkgs+=(libnginx-mod-http-js) ;;
    lua) pkgs+=(libnginx-mod-http-ndk libnginx-mod-http-lua lua-cjson) ;;
    module|module_cache|static|proxy_json) ;;
    *) bdie "unknown path $p" ;;
    esac
done
bench_ensure_packages "${pkgs[@]}"
bench_ensure_module

bench_init
bench_snapshot_module
bench_watchdog 600
bench_make_data
fx "$FIXTURE"
RAW="$BENCH_WORK/raw"

bench_write_upstream_conf 1m
bench_test_conf "$BENCH_WORK/upstream" "mock Unico"
bench_start_nginx "$BENCH_WORK/upstream" "$UP_PORT"
UP_MASTER=$NGX_MASTER

# a processId per request, as in bench/run.sh (module_cache: always the
# same one, to measure hits)
url="http://127.0.0.1:$GW_PORT/selfies/$FX_ID"
for (( i = 0; i < 20; i++ )); do
    printf 'url = "http://127.0.0.1:%s/selfies/%s"\noutput = "/dev/null"\n' \
        "$GW_PORT" "$(bench_id "$FX_TAG" $(( 300000 + i )))"
done >"$RAW/warm.cfg"
for (( i = 0; i < K; i++ )); do
    printf 'url = "http://127.0.0.1:%s/selfies/%s"\noutput = "/dev/null"\n' \
        "$GW_PORT" "$(bench_id "$FX_TAG" $(( 400000 + i )))"
done >"$RAW/k.cfg"
for (( i = 0; i < 20; i++ )); do
    printf 'url = "%s"\noutput = "/dev/null"\n' "$url"
done >"$RAW/warm-same.cfg"
for (( i = 0; i < K; i++ )); do
    printf 'url = "%s"\noutput = "/dev/null"\n' "$url"
done >"$RAW/k-same.cfg"

# the functions of libyajl (shipped without symbols) that show up
yajl_name() {
    case $1 in
    0x0000000000002650) echo "yajl_lex_lex (the lexer, string scan inlined)" ;;
    *) echo "$1" ;;
    esac
}

# cg_run <path>: sets CG_TOTAL; leaves the annotation in $RAW/<path>.annotate
cg_run() {
    local path=$1 prefix="$BENCH_WORK/gw-$1" out sha len pid dump same=""
    if [ "$path" = proxy_json ]; then sha=$FX_JSON_SHA len=$FX_JSON_SIZE; else sha=$FX_SHA len=$FX_SIZE; fi
    if [ "$path" = module_cache ]; then
        bench_cache_supported || return 1
        same=-same
    fi

    bench_write_gateway_conf "$path" single
    bench_test_conf "$prefix" "$path"
    out="$prefix/callgrind.out"
    BENCH_START_TIMEOUT=120 bench_start_nginx "$prefix" "$GW_PORT" \
        valgrind --tool=callgrind --instr-atstart=no \
                 --callgrind-out-file="$out" --log-file="$prefix/logs/valgrind.log"
    pid=$NGX_MASTER

    bench_verify "$url" "$sha" "$len" "callgrind $path"
    curl -sS --max-time 120 -K "$RAW/warm$same.cfg" || bdie "callgrind $path: warm-up failed"

    callgrind_control -i on "$pid" >"$RAW/$path.ctl" 2>&1 \
        || { cat "$RAW/$path.ctl" >&2; bdie "callgrind_control -i on failed"; }
    curl -sS --max-time 300 -K "$RAW/k$same.cfg" || bdie "callgrind $path: requests failed"
    callgrind_control -d "$pid" >>"$RAW/$path.ctl" 2>&1 \
        || { cat "$RAW/$path.ctl" >&2; bdie "callgrind_control -d failed"; }
    callgrind_control -i off "$pid" >>"$RAW/$path.ctl" 2>&1 || true

    bench_verify "$url" "$sha" "$len" "callgrind $path (after)"
    bench_stop "$pid"
    bench_check_log "$prefix" "callgrind $path"

    dump="$out.1"
    [ -s "$dump" ] || bdie "callgrind $path: no dump $dump"
    CG_TOTAL=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$dump" | head -1)
    [ -n "$CG_TOTAL" ] || CG_TOTAL=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$dump" | head -1)
    callgrind_annotate --inclusive=no "$dump" >"$RAW/$path.annotate" 2>/dev/null \
        || bdie "callgrind_annotate failed on $dump"
    cp "$dump" "$RAW/$path.callgrind.out"
}

declare -A TOTALS
for path in "${PATHS[@]}"; do
    blog "callgrind: $path, $K requests of $(basename "$FX_FILE")"
    if cg_run "$path"; then
        TOTALS[$path]=$CG_TOTAL
        blog "callgrind: $path: $(( CG_TOTAL / K )) instructions per request"
    else
        TOTALS[$path]=""
        blog "callgrind: $path: n/a"
    fi
done
bench_stop "$UP_MASTER"

if [ -n "$TSV" ]; then
    : >"$TSV"
    for path in "${PATHS[@]}"; do
        [ -n "${TOTALS[$path]}" ] || continue
        printf '%s\t%s\t%s\t%s\n' "$path" "$(( TOTALS[$path] / K ))" "$FX_JSON_SIZE" "$FX_SIZE" >>"$TSV"
    done
fi

# --- report ---------------------------------------------------------------

top_table() {   # top_table <annotate file> <K> <N>
    echo "| Ir / request | % | function | object |"
    echo "|--:|--:|---|---|"
    # lines: "163,062,200 (65.94%)  file:function [object]"
    awk -v n="$3" '/^ *[0-9,]+ \( *[0-9.]+%\) +[^ ]/ && !/PROGRAM TOTALS/ && k++ < n' "$1" \
        | while IFS= read -r line; do
        local ir pct fn obj file
        ir=$(sed -E 's/^ *([0-9,]+).*/\1/' <<<"$line" | tr -d ,)
        pct=$(sed -E 's/^ *[0-9,]+ \( *([0-9.]+)%\).*/\1/' <<<"$line")
        fn=$(sed -E 's/^ *[0-9,]+ \( *[0-9.]+%\) +(.*) \[[^]]*\]$/\1/; s/^ *[0-9,]+ \( *[0-9.]+%\) +//' <<<"$line")
        obj=$(sed -nE 's/.*\[([^]]*)\]$/\1/p' <<<"$line")
        obj=${obj##*/}
        file=${fn%:*}
        fn=${fn##*:}
        [[ $obj == libyajl* ]] && fn=$(yajl_name "$fn")
        # callgrind files inlined code under the header it came from
        [[ $file == *.h ]] && fn="$fn (inlined from ${file##*/})"
        printf '| %s | %s | %s | %s |\n' "$(( ir / $2 ))" "$pct" "$fn" "${obj:-}"
    done
}

cat <<EOF
## Instructions per request (callgrind)

$K × GET /selfies/<id> (a different processId each time; module_cache: the same one, all hits) for $(basename "$FX_FILE") ($(( FX_SIZE / 1024 )) KB image, $(( FX_JSON_SIZE / 1024 )) KB JSON) over one keepalive connection, after 20 warm-up requests; the gateway is one process (\`master_process off; daemon off;\`) under \`valgrind --tool=callgrind --instr-atstart=no\`, instrumentation on for exactly the $K requests (\`callgrind_control -i on\`, then \`-d\`). User-space instructions of the gateway only: the kernel's share (socket copies) and the mock Unico are not counted.

| path | instructions / request | ÷ module |
|---|--:|--:|
EOF
for path in "${PATHS[@]}"; do
    t=${TOTALS[$path]}
    if [ -z "$t" ]; then
        printf '| %s | n/a | |\n' "$path"
        continue
    fi
    m=${TOTALS[module]:-}
    if [ -n "$m" ]; then
        r=$(awk -v a="$t" -v b="$m" 'BEGIN { printf "%.2f", a / b }')
    else
        r=""
    fi
    printf '| %s | %s | %s |\n' "$path" "$(( t / K ))" "$r"
done

for path in "${PATHS[@]}"; do
    [ -n "${TOTALS[$path]}" ] || continue
    n=$TOP
    [ "$path" = module ] || n=8
    printf '\n### %s: top functions (self cost)\n\n' "$path"
    top_table "$RAW/$path.annotate" "$K" "$n"
done
