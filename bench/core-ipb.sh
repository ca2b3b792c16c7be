#!/usr/bin/env bash
# ngx_unico_selfie_module: instructions per JSON byte of the pure core.
#
#   bench/core-ipb.sh [--fixture t/fixtures/selfie-720x960.jpg]
#                     [--before <git rev>] [--chunk 4096]
#
# Builds bench/core/ipb.c with Debian's nginx CFLAGS (nginx -V; -O2, no
# -march) against this tree's core, scalar (-DUNICO_BASE64_NO_SIMD) and
# with the run-time chosen SSSE3/AVX2 decoder, and against the core of
# another revision (default: main) for "before"; runs each under
# valgrind --tool=callgrind --toggle-collect=measure, so that only the
# decode itself is counted (not reading the file nor building the JSON),
# and prints a Markdown table of instructions and instructions per JSON
# byte.  Needs valgrind (Debian package valgrind), gcc, libyajl-dev.

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FIXTURE=$REPO/t/fixtures/selfie-720x960.jpg
BEFORE=main
CHUNK=4096

while [ $# -gt 0 ]; do
    case $1 in
    --fixture) FIXTURE=${2:?}; shift ;;
    --before)  BEFORE=${2:?}; shift ;;
    --chunk)   CHUNK=${2:?}; shift ;;
    *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
    shift
done

command -v valgrind >/dev/null || { echo "valgrind not found" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/unico-ipb-XXXXXX")
trap 'rm -rf "$work"' EXIT

cflags=$(nginx -V 2>&1 | sed -n "s/.*--with-cc-opt='\([^']*\)'.*/\1/p")
cflags=${cflags:--g -O2}
src=$REPO/ngx_unico_selfie_module

# shellcheck disable=SC2086
build() {
    local out=$1 dir=$2; shift 2
    gcc -std=c99 $cflags "$@" -I"$dir" "$REPO/bench/core/ipb.c" \
        "$dir"/unico_selfie_payload.c \
        $(ls "$dir"/unico_selfie_base64.c 2>/dev/null) \
        -lyajl -o "$out"
}

mkdir -p "$work/before"
for f in unico_selfie_payload.c unico_selfie_payload.h \
         unico_selfie_base64.c unico_selfie_base64.h; do
    git -C "$REPO" show "$BEFORE:ngx_unico_selfie_module/$f" \
        > "$work/before/$f" 2>/dev/null || rm -f "$work/before/$f"
done

build "$work/ipb-before" "$work/before" -DUNICO_IPB_BEFORE
build "$work/ipb-scalar" "$src" -DUNICO_BASE64_NO_SIMD
build "$work/ipb-simd" "$src"

count() {
    local out=$work/cg.$RANDOM
    LD_BIND_NOW=1 valgrind --tool=callgrind --toggle-collect=measure \
        --callgrind-out-file="$out" "$@" >"$work/run.log" 2>&1 \
        || { cat "$work/run.log" >&2; exit 1; }
    sed -n 's/^summary: *//p' "$out"
}

read -r _ jlen _ _ ilen _ < <("$work/ipb-simd" parse "$FIXTURE")
blen=$(( (ilen + 2) / 3 * 4 ))

printf '%s, JSON %d bytes (base64 %d), image %d bytes; %s\n\n' \
    "$(basename "$FIXTURE")" "$jlen" "$blen" "$ilen" "$(gcc --version | head -1)"
printf '| what | instructions | per JSON byte |\n|---|---:|---:|\n'

row() {
    local what=$1 ir; shift
    ir=$(count "$@")
    awk -v w="$what" -v ir="$ir" -v n="$jlen" \
        'BEGIN { printf "| %s | %d | %.3f |\n", w, ir, ir / n }'
}

row "before ($BEFORE): unico_payload_parse" "$work/ipb-before" parse "$FIXTURE"
row "unico_payload_parse, scalar" "$work/ipb-scalar" parse "$FIXTURE"
row "unico_payload_parse, SIMD" "$work/ipb-simd" parse "$FIXTURE"
row "stream, $CHUNK-byte chunks, scalar" "$work/ipb-scalar" stream "$FIXTURE" "$CHUNK"
row "stream, $CHUNK-byte chunks, SIMD" "$work/ipb-simd" stream "$FIXTURE" "$CHUNK"
row "unico_base64_decode alone, scalar" "$work/ipb-scalar" base64 "$FIXTURE"
row "unico_base64_decode alone, SSSE3" "$work/ipb-simd" base64-ssse3 "$FIXTURE"
row "unico_base64_decode alone, SIMD" "$work/ipb-simd" base64 "$FIXTURE"
