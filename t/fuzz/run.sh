#!/usr/bin/env bash

# Copyright (C) ngx_unico_selfie_module authors
#
# Builds the libFuzzer targets of the pure core with clang and runs each
# for the given number of seconds (default 10), starting from the seeds in
# t/fuzz/corpus/<target>/.  Exits non-zero on a build failure or a crash.
#
#     bash t/fuzz/run.sh [seconds]
#
# CLANG picks the compiler (default: clang, else clang-14); FUZZ_BUILD_DIR
# a build directory to keep (default: a temporary one, removed unless a
# target crashed, when it holds the crash-* reproducer and the log).
# Seeds are only read: new inputs go to the build directory.

set -eu

secs=${1:-10}

case "$secs" in
    ''|*[!0-9]*) echo "usage: $0 [seconds]" >&2; exit 2 ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
src=$root/ngx_unico_selfie_module

if [ -n "${CLANG:-}" ]; then
    cc=$CLANG
elif command -v clang >/dev/null 2>&1; then
    cc=clang
elif command -v clang-14 >/dev/null 2>&1; then
    cc=clang-14
else
    echo "$0: clang not found" >&2
    exit 1
fi

if [ -n "${FUZZ_BUILD_DIR:-}" ]; then
    build=$FUZZ_BUILD_DIR
    keep=1
    mkdir -p "$build"
else
    build=$(mktemp -d "${TMPDIR:-/tmp}/unico-fuzz-XXXXXX")
    keep=0
fi

cleanup() {
    if [ "$keep" = 0 ]; then
        rm -rf "$build"
    fi
}

trap cleanup EXIT

targets="fuzz_payload fuzz_stream fuzz_base64 fuzz_base64_simd fuzz_uuid
         fuzz_signature fuzz_token"

flags="-std=c99 -g -O1 -Wall -Wextra -Werror -fno-omit-frame-pointer
       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"

for t in $targets; do
    echo "== build $t"

    case $t in
        fuzz_signature)
            core="$src/unico_selfie_signature.c $src/unico_selfie_hash.c
                  $src/unico_selfie_base64.c"
            libs="-lcrypto -lxxhash" ;;
        fuzz_token)
            core="$src/unico_selfie_jwt.c $src/unico_selfie_base64.c"
            libs="-lyajl -lcrypto" ;;
        fuzz_base64_simd)
            core=$src/unico_selfie_base64.c
            libs= ;;
        *)
            core="$src/unico_selfie_payload.c $src/unico_selfie_base64.c"
            libs=-lyajl ;;
    esac

    # shellcheck disable=SC2086
    "$cc" $flags -I"$src" "$here/$t.c" $core $libs -o "$build/$t"
done

# the JSON and base64 tokens worth splicing in

cat > "$build/fuzz_payload.dict" <<'DICT'
"\"fileContents\""
"\"contentType\""
"\"image/jpeg\""
"\"image/png\""
"\"IMAGE/PNG\""
"fileContent\\u0073"
"\\/"
"\\n"
"\\r\\n"
"\\u002F"
"\\u0000"
"\":\""
"\",\""
"{\"a\":"
"null"
"true"
"false"
"1e999"
"[]"
"{}"
"=="
"/9j/"
"iVBORw0KGgo"
DICT

cat > "$build/fuzz_base64.dict" <<'DICT'
"=="
"="
"\x0d\x0a"
"\x0a"
"\x09"
" "
"/9j/"
"+/"
"AAAAAAAAAAAAAAAA"
DICT

cp "$build/fuzz_payload.dict" "$build/fuzz_stream.dict"
cp "$build/fuzz_base64.dict" "$build/fuzz_base64_simd.dict"

: > "$build/fuzz_uuid.dict"

cat > "$build/fuzz_signature.dict" <<'DICT'
"\x00"
"\x0a"
"\x0d\x0a"
"#"
"="
"=="
"-_"
"+/"
"53060f52-f146-4c12-a234-5bb5031f6f5b"
"1700000100"
"9223372036854775807"
"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
"tRGPNG804wv4zq7qVeWrzM_mHDw3H5cZ6ZBEbHUvDTQ"
DICT

cat > "$build/fuzz_token.dict" <<'DICT'
"\"access_token\""
"\"token_type\""
"\"expires_in\""
"\"error\""
"\"error_description\""
"\"Bearer\""
"\"3600\""
"3600"
"999999999"
"1000000000"
"Falha na autentica\xc3\xa7\xc3\xa3o 1.2.7"
"1.2."
"1.2.21"
"\\u0041"
"\\u00e7"
"\\r\\n"
"\":\""
"\",\""
"{\"a\":"
"null"
"true"
"[]"
"{}"
"=="
"-._~+/"
DICT

failed=0

for t in $targets; do
    echo "== run $t for ${secs}s"

    mkdir -p "$build/corpus-$t"

    dict=
    if [ -s "$build/$t.dict" ]; then
        dict=-dict=$build/$t.dict
    fi

    if ! "$build/$t" -max_total_time="$secs" -timeout=10 \
            -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 \
            -artifact_prefix="$build/crash-$t-" $dict \
            "$build/corpus-$t" "$here/corpus/$t" \
            > "$build/$t.log" 2>&1
    then
        tail -n 60 "$build/$t.log"
        echo "== $t FAILED: log and reproducer in $build" >&2
        failed=1
        keep=1
        continue
    fi

    grep -E '^(Done|stat::number_of_executed_units|#[0-9]+.*DONE)' \
        "$build/$t.log" || true
    echo "== $t ok"
done

exit $failed
