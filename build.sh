#!/usr/bin/env bash
# ngx_unico_selfie_module: the one entry point.
#
#   ./build.sh [build]   build the module for Debian's nginx (objs in .build/)
#   ./build.sh run       build, then serve the demo on http://127.0.0.1:8080
#   ./build.sh test      build, then run the whole suite (prove t/)
#   ./build.sh asan      build nginx + module with ASan/UBSan (.build/asan)
#   ./build.sh fuzz [s]  run every libFuzzer target for s seconds (default 10)
#   ./build.sh bench     the side-by-side benchmark (bench/run.sh)
#   ./build.sh soak      the soak test (bench/soak.sh, 10 minutes)
#
# Environment:
#   NGINX_SRC=<dir>      nginx source tree to build against
#                        (default /usr/share/nginx/src, package nginx-dev)
#   UNICO_SANITIZE=1     with "test": also run the suite against the
#                        sanitizer build (CI sets it)
#
# Needs root only to install missing Debian packages.

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD="$REPO/.build"
MODULE_SO="$BUILD/ngx_http_unico_selfie_module.so"

log() { printf '%s\n' "build.sh: $*" >&2; }
die() { log "$*"; exit 1; }


# Debian packages the build, the tests and the demo need.
PACKAGES=(nginx nginx-dev gcc make libc6-dev libyajl-dev libssl-dev libxxhash-dev
          libpcre3-dev zlib1g-dev openssl curl perl
          libio-socket-ssl-perl libnet-ssleay-perl libcrypt-openssl-rsa-perl
          libjson-pp-perl libnet-dns-perl libnginx-mod-http-image-filter
          prometheus chromium)

ensure_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null \
            | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0

    [ "$(id -u)" -eq 0 ] \
        || die "missing packages: ${missing[*]} (run as root to install)"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}


# The compiler options Debian's nginx was built with (nginx -V), so that the
# module is optimised the same way and not with the addon default -O.
distro_cc_opt() {
    nginx -V 2>&1 | sed -n "s/.*--with-cc-opt='\([^']*\)'.*/\1/p"
}

distro_ld_opt() {
    nginx -V 2>&1 | sed -n "s/.*--with-ld-opt='\([^']*\)'.*/\1/p"
}


build_module() {
    local src="${NGINX_SRC:-/usr/share/nginx/src}" tree="$BUILD/nginx"
    local cc_opt ld_opt stamp

    ensure_packages "${PACKAGES[@]}"
    [ -x "$src/configure" ] || die "no nginx source tree at $src"

    cc_opt="$(distro_cc_opt) -Werror"
    ld_opt="$(distro_ld_opt)"
    stamp="$src|$cc_opt|$ld_opt|$(cat "$REPO/config")"

    mkdir -p "$BUILD"

    # one build at a time in this tree (parallel test runs share it)
    exec 9>"$BUILD/.lock"
    flock 9

    # configure writes objs/ into the tree: work on a copy, configured once
    if [ ! -f "$tree/objs/Makefile" ] \
       || [ "$(cat "$BUILD/configure.stamp" 2>/dev/null)" != "$stamp" ]
    then
        log "configuring against $src"
        rm -rf "$tree"
        cp -a "$src" "$tree"

        local flags=()
        if [ -f "$tree/conf_flags" ]; then
            # shellcheck disable=SC1091
            . "$tree/conf_flags"
            flags=("${NGX_CONF_FLAGS[@]}")
        fi

        (cd "$tree" && ./configure "${flags[@]}" \
             --with-cc-opt="$cc_opt" --with-ld-opt="$ld_opt" \
             --add-dynamic-module="$REPO" >"$BUILD/configure.log" 2>&1) \
            || { tail -30 "$BUILD/configure.log" >&2; die "configure failed"; }

        printf '%s' "$stamp" >"$BUILD/configure.stamp"
    fi

    (cd "$tree" && make -f objs/Makefile modules >"$BUILD/make.log" 2>&1) \
        || { grep -E 'error|warning' "$BUILD/make.log" >&2 || \
             tail -30 "$BUILD/make.log" >&2; die "module build failed"; }

    # a new inode: nginx processes that loaded the old file keep it
    cp "$tree/objs/ngx_http_unico_selfie_module.so" "$MODULE_SO.tmp"
    mv -f "$MODULE_SO.tmp" "$MODULE_SO"
    flock -u 9
    log "built $MODULE_SO"
}


build_asan() {
    "$REPO/tools/sanitizer-build.sh" "$REPO" "$BUILD/asan"
}


run_suite() {
    local label="$1"
    log "suite: $label"
    (cd "$REPO" && prove -r -j2 --timer t/)
}


cmd_test() {
    build_module

    TEST_NGINX_BINARY=/usr/sbin/nginx TEST_NGINX_MODULE="$MODULE_SO" \
        run_suite "Debian's nginx"

    if [ "${UNICO_SANITIZE:-0}" = 1 ]; then
        local out nginx module
        out=$(build_asan)
        nginx=$(printf '%s\n' "$out" | sed -n 's/^NGINX=//p')
        module=$(printf '%s\n' "$out" | sed -n 's/^MODULE=//p')
        [ -x "$nginx" ] && [ -f "$module" ] || die "sanitizer build failed"

        # the sanitizer options and suppressions are compiled into that
        # nginx (tools/README.md): no environment needed
        TEST_NGINX_BINARY="$nginx" TEST_NGINX_MODULE="$module" \
        TEST_NGINX_SANITIZED=1 \
            run_suite "nginx with AddressSanitizer and UBSan"
    fi
}


# The demo: the Unico emulator on 127.0.0.1:8443, nginx with conf/demo.conf
# on 127.0.0.1:8080, both in the foreground until Ctrl-C.  UNICO_DEMO_PORT
# and UNICO_DEMO_MOCK_PORT move them (t/196-demo-run.t uses free ports).
cmd_run() {
    local prefix="$BUILD/demo" port="${UNICO_DEMO_PORT:-8080}"
    local mock_port="${UNICO_DEMO_MOCK_PORT:-8443}" i ready=""

    # globals, not locals: the EXIT trap runs after cmd_run has returned,
    # when its locals are gone ("set -u" then stopped the handler with
    # "nginx_pid: unbound variable")
    DEMO_NGINX_PID=""
    DEMO_MOCK_PID=""

    stop_demo() {
        trap - INT TERM EXIT
        # either may be gone already (Ctrl-C reaches them too): a failed
        # kill must not end the handler under "set -e"
        [ -z "$DEMO_NGINX_PID" ] || kill -QUIT "$DEMO_NGINX_PID" 2>/dev/null \
            || true
        [ -z "$DEMO_MOCK_PID" ] || kill -TERM "$DEMO_MOCK_PID" 2>/dev/null \
            || true
        wait 2>/dev/null || true
        DEMO_NGINX_PID="" DEMO_MOCK_PID=""
        log "demo stopped"
    }

    build_module

    mkdir -p "$prefix/conf" "$prefix/logs" "$prefix/modules" "$prefix/state"
    cp "$REPO"/conf/*.conf "$REPO"/conf/demo-signature.keys "$prefix/conf/"
    chmod 600 "$prefix/conf/demo-signature.keys"
    sed -i -e "s/127\.0\.0\.1:8080/127.0.0.1:$port/" \
           -e "s/127\.0\.0\.1:8443/127.0.0.1:$mock_port/" \
           "$prefix/conf/demo.conf"
    ln -sf "$MODULE_SO" "$prefix/modules/"
    [ -f "$prefix/conf/certs/ca.pem" ] || bash "$REPO/t/mock/gen-certs.sh" \
        "$prefix/conf/certs"

    trap 'stop_demo; exit 130' INT TERM
    trap stop_demo EXIT

    perl "$REPO/t/mock/unico.pl" --listen "127.0.0.1:$mock_port" \
        --cert "$prefix/conf/certs/server.pem" \
        --key "$prefix/conf/certs/server.key" \
        --fixtures "$REPO/t/fixtures" --token demo-token \
        --state "$prefix/state" --log "$prefix/logs/unico-mock.log" &
    DEMO_MOCK_PID=$!

    nginx -p "$prefix" -c conf/demo.conf -e logs/error.log &
    DEMO_NGINX_PID=$!

    # announce the demo only once every part answers: a sample selfie
    # through nginx comes back as an image, so the emulator answers too
    for i in $(seq 1 300); do
        kill -0 "$DEMO_NGINX_PID" 2>/dev/null \
            || die "nginx did not start: see $prefix/logs/error.log"
        kill -0 "$DEMO_MOCK_PID" 2>/dev/null \
            || die "the Unico emulator did not start"
        if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
                "http://127.0.0.1:$port/selfies/53060f52-f146-4c12-a234-5bb5031f6f5b" \
                2>/dev/null)" = 200 ]
        then
            ready=1
            break
        fi
        sleep 0.1
    done
    [ -n "$ready" ] || die "the demo does not answer: see $prefix/logs/"

    cat >&2 <<MSG
build.sh: demo on http://127.0.0.1:$port/ (Ctrl-C stops it), for example:
    curl -o selfie.jpg http://127.0.0.1:$port/selfies/53060f52-f146-4c12-a234-5bb5031f6f5b
logs in $prefix/logs
MSG
    wait "$DEMO_NGINX_PID"
}


case "${1:-build}" in
    build) build_module ;;
    test)  cmd_test ;;
    run)   cmd_run ;;
    asan)  build_asan ;;
    fuzz)  shift
           ensure_packages clang libclang-rt-14-dev libyajl-dev libssl-dev
           exec bash "$REPO/t/fuzz/run.sh" "${1:-10}" ;;
    bench) shift; build_module; exec bash "$REPO/bench/run.sh" "$@" ;;
    soak)  shift; build_module; exec bash "$REPO/bench/soak.sh" "$@" ;;
    *)     die "usage: $0 [build|run|test|asan|fuzz [s]|bench|soak]" ;;
esac
