#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# ngx_unico_selfie_module: the one entry point.
#
#   ./build.sh [build]   build the module for Debian's nginx (objs in .build/)
#   ./build.sh run       build, then serve the demo on http://127.0.0.1:8080
#   ./build.sh test      build, then run the whole suite (prove t/)
#   ./build.sh test t/020-selfie.t ...   only these test files
#   ./build.sh asan      build nginx + module with ASan/UBSan (.build/asan)
#   ./build.sh fuzz [s]  run every libFuzzer target for s seconds (default 10)
#   ./build.sh bench     the side-by-side benchmark (bench/run.sh)
#   ./build.sh soak      the soak test (bench/soak.sh, 10 minutes)
#   ./build.sh deb       the Debian package libnginx-mod-http-unico-selfie
#                        for the system's nginx (in .build/deb/)
#
# Environment:
#   UNICO_NGINX=<line>   build and test against another nginx line: 1.22
#                        (Debian 12), 1.26 (Debian 13), 1.30 (Debian sid).
#                        The system's nginx when it is that line, else a
#                        Debian chroot of that release with its own nginx
#                        (cached in ~/.cache/ngx_unico_selfie, made anew
#                        after UNICO_CHROOT_MAX_AGE days, default 7);
#                        outputs in .build/nginx-<line>/
#                        (docs/nginx-versions.md)
#   NGINX_SRC=<dir>      nginx source tree to build against
#                        (default /usr/share/nginx/src, package nginx-dev);
#                        a tree without Debian's conf_flags is configured
#                        --with-compat, or with NGINX_CONF_FLAGS="..."
#   UNICO_SANITIZE=1     with "test": also run the suite against the
#                        sanitizer build (CI sets it)
#
# Needs root only to install missing Debian packages (and for the chroots).

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# UNICO_BUILD_DIR: set for the runs inside a chroot (one per nginx line)
BUILD="${UNICO_BUILD_DIR:-$REPO/.build}"
MODULE_SO="$BUILD/ngx_http_unico_selfie_module.so"

log() { printf '%s\n' "build.sh: $*" >&2; }
die() { log "$*"; exit 1; }


# Debian packages the build, the tests and the demo need.
# The same list on Debian 12 and 13: libpcre2-dev (what nginx-dev depends
# on), not libpcre3-dev, which Debian 13 no longer has.
PACKAGES=(nginx nginx-dev gcc make libc6-dev libyajl-dev libssl-dev
          libxxhash-dev libpcre2-dev zlib1g-dev openssl curl perl
          libio-socket-ssl-perl libnet-ssleay-perl libcrypt-openssl-rsa-perl
          libjson-pp-perl libnet-dns-perl libnginx-mod-http-image-filter
          prometheus chromium
          gdb               # t/255: stops a worker where it must die
          python3 nodejs)   # t/140: the signing recipes of docs/examples

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
    # wait for another apt or dpkg (a parallel test, the machine's own)
    apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends "${missing[@]}" >&2
}


# The compiler options Debian's nginx was built with (nginx -V), so that the
# module is optimised the same way and not with the addon default -O.
distro_cc_opt() {
    nginx -V 2>&1 | sed -n "s/.*--with-cc-opt='\([^']*\)'.*/\1/p"
}

distro_ld_opt() {
    nginx -V 2>&1 | sed -n "s/.*--with-ld-opt='\([^']*\)'.*/\1/p"
}


# The nginx the module is built for: the one on PATH (Debian's).
target_nginx() {
    command -v nginx 2>/dev/null || echo /usr/sbin/nginx
}


# The module signature ("8,4,8,0011...") that nginx compares at load_module:
# options such as --with-http_ssl_module or --with-compat change it, and
# nginx refuses a module whose signature is not its own ("is not binary
# compatible").  Of a configured tree: a probe compiled with its headers.
tree_signature() {
    local tree="$1"
    cat >"$tree/objs/unico_signature.c" <<'EOF'
#include <ngx_config.h>
#include <ngx_core.h>
char  unico_signature[] = NGX_MODULE_SIGNATURE;
EOF
    printf '%s\n\t%s\n' 'objs/unico_signature.o: objs/unico_signature.c' \
        '$(CC) -c $(CFLAGS) $(CORE_INCS) -o $@ objs/unico_signature.c' \
        >"$tree/objs/unico_signature.mk"
    (cd "$tree" && make -s -f objs/Makefile -f objs/unico_signature.mk \
         objs/unico_signature.o >/dev/null 2>&1) || return 0
    binary_signature "$tree/objs/unico_signature.o"
}

binary_signature() {
    grep -aoE '[0-9]+,[0-9]+,[0-9]+,[01]{20,}' "$1" 2>/dev/null | head -1
}


# A module that nginx would refuse is not built: the tree must be the
# target nginx's version and give its signature.
check_compatible() {
    local src="$1" tree="$2" nginx want have tv nv
    nginx=$(target_nginx)
    [ -x "$nginx" ] || return 0

    tv=$(sed -n 's/^#define NGINX_VERSION *"\(.*\)"/\1/p' \
             "$tree/src/core/nginx.h")
    nv=$("$nginx" -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
    [ "$tv" = "$nv" ] \
        || die "$src is nginx $tv but $nginx is $nv: nginx would refuse" \
               "the module (\"module version\"); build against the $nv" \
               "source"

    want=$(binary_signature "$nginx")
    have=$(tree_signature "$tree")
    [ -n "$want" ] && [ -n "$have" ] || return 0
    [ "$want" = "$have" ] && return 0

    if "$nginx" -V 2>&1 | grep -q -- '--with-compat'; then
        die "module signature $have differs from $want of $nginx:" \
            "nginx would refuse the module (\"not binary compatible\");" \
            "configure the tree with --with-compat, as $nginx is"
    fi
    die "module signature $have differs from $want of $nginx:" \
        "nginx would refuse the module (\"not binary compatible\");" \
        "$nginx is built without --with-compat: configure the tree with" \
        "its nginx -V options (NGINX_CONF_FLAGS=\"...\")"
}


build_module() {
    local src="${NGINX_SRC:-/usr/share/nginx/src}" tree="$BUILD/nginx"
    local cc_opt ld_opt stamp

    ensure_packages "${PACKAGES[@]}"
    [ -x "$src/configure" ] || die "no nginx source tree at $src"

    cc_opt="$(distro_cc_opt) -Werror"
    ld_opt="$(distro_ld_opt)"
    stamp="$src|$cc_opt|$ld_opt|$(cat "$REPO/config")"
    stamp="$stamp${NGINX_CONF_FLAGS:+|$NGINX_CONF_FLAGS}"

    mkdir -p "$BUILD"

    # one build at a time in this tree (parallel test runs share it)
    exec 9>"$BUILD/.lock"
    flock 9

    # configure writes objs/ into the tree: work on a copy, configured once
    if [ ! -f "$tree/objs/Makefile" ] \
       || [ "$(cat "$BUILD/configure.stamp" 2>/dev/null)" != "$stamp" ]
    then
        log "configuring against $src"
        rm -rf "$tree" "$BUILD/configure.stamp"
        cp -a "$src" "$tree"

        local flags=()
        if [ -n "${NGINX_CONF_FLAGS:-}" ]; then
            # shellcheck disable=SC2206
            flags=($NGINX_CONF_FLAGS)
        elif [ -f "$tree/conf_flags" ]; then
            # shellcheck disable=SC1091
            . "$tree/conf_flags"
            flags=("${NGX_CONF_FLAGS[@]}")
        else
            # a plain nginx.org tree: --with-compat (nginx.org's packages
            # and Docker image are built with it) keeps the signature
            # independent of the other options
            log "$src has no conf_flags: configuring --with-compat"
            flags=(--with-compat)
        fi

        (cd "$tree" && ./configure "${flags[@]}" \
             --with-cc-opt="$cc_opt" --with-ld-opt="$ld_opt" \
             --add-dynamic-module="$REPO" >"$BUILD/configure.log" 2>&1) \
            || { grep '^unico_selfie:' "$BUILD/configure.log" >&2 \
                 || tail -30 "$BUILD/configure.log" >&2
                 die "configure failed"; }

        printf '%s' "$stamp" >"$BUILD/configure.stamp"
    fi

    check_compatible "$src" "$tree"

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
    local label="$1" start=$SECONDS
    log "suite: $label"
    (cd "$REPO" && prove -r -j2 --timer "${TEST_FILES[@]:-t/}")
    log "suite: $label: passed in $((SECONDS - start))s"
}


cmd_test() {
    TEST_FILES=("$@")
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


# The Debian package, built with Debian's tooling (debian/: dh with the
# nginx_mod build system and dh_nginx of dh-sequence-nginx, as Debian's
# own libnginx-mod-* packages) for the system's nginx:
# .build/deb/libnginx-mod-http-unico-selfie_<version>-1_<arch>.deb, its
# path on stdout.  lintian must find no error.
cmd_deb() {
    local out="$BUILD/deb" version pkgver dir deb
    ensure_packages nginx nginx-dev build-essential dpkg-dev debhelper \
        libyajl-dev libssl-dev lintian

    version=$(sed -n 's/^#define NGX_HTTP_UNICO_SELFIE_VERSION *"\(.*\)"/\1/p' \
        "$REPO/ngx_unico_selfie_module/ngx_http_unico_selfie_version.h")
    pkgver=$(dpkg-parsechangelog -l "$REPO/debian/changelog" -S Version)
    [ "${pkgver%-*}" = "$version" ] \
        || die "debian/changelog is at $pkgver but the module is $version" \
               "(NGX_HTTP_UNICO_SELFIE_VERSION): add a changelog entry"

    # a copy of the sources: dpkg-buildpackage writes into the tree and
    # its parent
    dir="$out/libnginx-mod-http-unico-selfie-$version"
    rm -rf "$out"
    mkdir -p "$dir"
    tar -C "$REPO" --exclude=./.build --exclude=./.git -cf - . \
        | tar -C "$dir" -xf -

    log "dpkg-buildpackage -b in $dir"
    (cd "$dir" && dpkg-buildpackage -b -us -uc) >"$out/build.log" 2>&1 \
        || { tail -40 "$out/build.log" >&2
             die "dpkg-buildpackage failed (log: $out/build.log)"; }

    deb=$(ls "$out"/libnginx-mod-http-unico-selfie_"$pkgver"_*.deb)

    log "lintian $deb"
    lintian --fail-on error "$deb" >"$out/lintian.txt" 2>&1 \
        || { cat "$out/lintian.txt" >&2; die "lintian found errors"; }
    sed 's/^/lintian: /' "$out/lintian.txt" >&2

    log "built $deb"
    echo "$deb"
}


# --- nginx lines (UNICO_NGINX): the system's, or a Debian chroot ------------

CACHE="${UNICO_CACHE:-$HOME/.cache/ngx_unico_selfie}"
# bump when what a chroot is made with changes: older ones are made anew
CHROOT_FORMAT=1

line_suite() {
    case "$1" in
        1.22) echo bookworm ;;
        1.26) echo trixie ;;
        1.30) echo sid ;;
        *)    die "UNICO_NGINX=$1: not a known nginx line (1.22, 1.26, 1.30)" ;;
    esac
}


# Whether the system's nginx is that line (of its Debian release when nginx
# is not installed yet).
is_system_line() {
    local v
    v=$(dpkg-query -W -f='${db:Status-Abbrev}|${Version}' nginx 2>/dev/null \
        | sed -n 's/^ii *|\([0-9]*:\)\{0,1\}\([0-9]*\.[0-9]*\)\..*/\2/p')
    if [ -n "$v" ]; then
        [ "$v" = "$1" ]
        return
    fi
    [ "$(. /etc/os-release && echo "${VERSION_CODENAME:-}")" \
      = "$(line_suite "$1")" ]
}


# The Debian mirror this machine already uses (never written down here):
# the first "deb" entry of /etc/apt that is a Debian archive.
debian_mirror() {
    local m=""
    if [ -n "${UNICO_DEBIAN_MIRROR:-}" ]; then
        echo "$UNICO_DEBIAN_MIRROR"
        return
    fi
    # deb822 .sources files, one stanza a paragraph
    m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '
        BEGIN { RS = ""; FS = "\n" }
        {
            types = ""; uri = ""; suites = ""
            for (i = 1; i <= NF; i++) {
                if ($i ~ /^Types:/) types = $i
                else if ($i ~ /^URIs:/) { split($i, a, /[ \t]+/); uri = a[2] }
                else if ($i ~ /^Suites:/) suites = $i
            }
            if (types ~ /[ \t]deb([ \t]|$)/ && uri ~ /\/debian\/?$/ \
                && suites !~ /-security/) { print uri; exit }
        }')
    if [ -z "$m" ]; then
        m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
                2>/dev/null | awk '
            $1 == "deb" {
                for (i = 2; i <= NF; i++)
                    if ($i ~ /:\/\// && $i ~ /\/debian\/?$/ \
                        && $(i + 1) !~ /-security/) { print $i; exit }
            }')
    fi
    [ -n "$m" ] || die "no Debian mirror in /etc/apt (set UNICO_DEBIAN_MIRROR)"
    echo "$m"
}


# A path with something mounted at or below it.
has_mounts() {
    awk -v p="$1" '$2 == p || index($2, p "/") == 1 { found = 1 }
                   END { exit !found }' /proc/mounts
}


# The chroot of a Debian release with apt and nothing else
# (debootstrap --variant=minbase): what build.sh needs inside, it installs
# there itself, as on a new machine.  Made anew when older than
# UNICO_CHROOT_MAX_AGE days, so that the release's updates arrive.
ensure_chroot() {
    local suite="$1" root="$2" stamp="$2/.unico-chroot" max age mirror tmp
    max="${UNICO_CHROOT_MAX_AGE:-7}"

    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$CHROOT_FORMAT" ]; then
        age=$(( ($(date +%s) - $(stat -c %Y "$stamp")) / 86400 ))
        [ "$age" -lt "$max" ] && return 0
        log "the $suite chroot is $age days old (UNICO_CHROOT_MAX_AGE=$max):" \
            "making it anew"
    fi

    ensure_packages debootstrap
    mirror=$(debian_mirror)
    tmp="$root.new"
    for d in "$root" "$tmp"; do
        ! has_mounts "$d" || die "$d has mounts (another run?): not removing it"
        rm -rf --one-file-system "$d"
    done

    log "debootstrap --variant=minbase $suite $root (a minute or two)"
    mkdir -p "$CACHE"
    if ! debootstrap --variant=minbase "$suite" "$tmp" "$mirror" \
             >"$CACHE/debootstrap-$suite.log" 2>&1
    then
        tail -20 "$CACHE/debootstrap-$suite.log" >&2
        rm -rf --one-file-system "$tmp"
        die "debootstrap $suite failed (log: $CACHE/debootstrap-$suite.log)"
    fi

    # no service starts in the chroot: nginx's postinst would start one
    printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
    chmod 755 "$tmp/usr/sbin/policy-rc.d"

    # unstable's Release is past its Valid-Until by this machine's clock
    if [ "$suite" = sid ]; then
        echo 'Acquire::Check-Valid-Until "false";' \
            >"$tmp/etc/apt/apt.conf.d/99unico-check-valid-until"
    fi

    mv "$tmp" "$root"
    echo "$CHROOT_FORMAT" >"$stamp"
}


# .build/nginx-<line>/sbin/nginx: the chroot's nginx run on this machine's
# file system (paths given to it are this machine's), with the chroot's own
# dynamic loader and libraries.
write_nginx_wrapper() {
    local line="$1" root="$2" out="$BUILD/nginx-$1/sbin"
    mkdir -p "$out"
    cat >"$out/nginx.tmp" <<EOF
#!/bin/sh
# nginx $line: Debian $(line_suite "$line")'s /usr/sbin/nginx from the chroot
# $root, with its loader and libraries (written by build.sh).
r='$root'
exec "\$r/lib64/ld-linux-x86-64.so.2" \\
    --library-path "\$r/lib/x86_64-linux-gnu:\$r/usr/lib/x86_64-linux-gnu" \\
    "\$r/usr/sbin/nginx" "\$@"
EOF
    chmod 755 "$out/nginx.tmp"
    mv -f "$out/nginx.tmp" "$out/nginx"
}


# UNICO_NGINX=<line> on this machine's own line: the usual build, and
# .build/nginx-<line>/ points at it.
link_system_line() {
    local out="$BUILD/nginx-$1"
    mkdir -p "$out/sbin"
    ln -sfn "$(target_nginx)" "$out/sbin/nginx"
    ln -sfn ../ngx_http_unico_selfie_module.so \
        "$out/ngx_http_unico_selfie_module.so"
}


# ./build.sh build|test|run for another line: this same script runs inside the
# chroot, as on a new machine of that release (it installs its packages
# there), with the repository bind-mounted at /unico and its build in
# .build/nginx-<line>/.  The mounts are made in a mount namespace of their
# own, so they end with the run, however it ends.
chroot_cmd() {
    local line="$1" cmd="$2" suite root start rc=0
    shift 2
    suite=$(line_suite "$line")
    root="$CACHE/chroot-$suite"

    [ "$(id -u)" -eq 0 ] \
        || die "UNICO_NGINX=$line needs root (debootstrap, chroot, mounts)"
    [ "${UNICO_SANITIZE:-0}" = 1 ] \
        && log "UNICO_SANITIZE: the sanitizer build is of the system's" \
               "nginx; not in the $suite chroot"

    mkdir -p "$CACHE" "$BUILD/nginx-$line"
    exec 8>"$CACHE/chroot-$suite.lock"
    flock 8

    start=$SECONDS
    ensure_chroot "$suite" "$root"
    write_nginx_wrapper "$line" "$root"
    cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true

    log "nginx $line: ./build.sh $cmd in the Debian $suite chroot"
    unshare --mount --propagation private -- \
        "$REPO/build.sh" __in-chroot "$line" "$root" "$cmd" "$@" || rc=$?

    log "nginx $line ($suite chroot): ./build.sh $cmd" \
        "$([ $rc -eq 0 ] && echo passed || echo "FAILED ($rc)")" \
        "in $((SECONDS - start))s"
    return $rc
}


# In the private mount namespace chroot_cmd made.
in_chroot() {
    local line="$1" root="$2" cmd="$3"
    shift 3

    # shellcheck disable=SC2064
    trap "umount -l '$root/unico' '$root/tmp' '$root/dev' '$root/proc' \
              2>/dev/null || true" EXIT

    mkdir -p "$root/unico" "$root/proc" "$root/dev" "$root/tmp"
    mount --bind "$REPO" "$root/unico"
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"

    chroot "$root" /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" \
        UNICO_BUILD_DIR="/unico/.build/nginx-$line" \
        /bin/bash -c 'cd /unico && exec ./build.sh "$@"' build.sh "$cmd" "$@"
}


main() {
    if [ -n "${UNICO_NGINX:-}" ] && [ "${1:-}" != __in-chroot ]; then
        if ! is_system_line "$UNICO_NGINX"; then
            case "${1:-build}" in
                build|test|run)
                    chroot_cmd "$UNICO_NGINX" "${1:-build}" "${@:2}"
                    return ;;
                *)  die "UNICO_NGINX=$UNICO_NGINX: build, test or run only" ;;
            esac
        fi
        link_system_line "$UNICO_NGINX"
    fi

    case "${1:-build}" in
        __in-chroot) shift; in_chroot "$@" ;;
        build) build_module ;;
        test)  shift; cmd_test "$@" ;;
        run)   cmd_run ;;
        deb)   cmd_deb ;;
        asan)  build_asan ;;
        fuzz)  shift
               ensure_packages clang libclang-rt-14-dev libyajl-dev libssl-dev
               exec bash "$REPO/t/fuzz/run.sh" "${1:-10}" ;;
        bench) shift; build_module; exec bash "$REPO/bench/run.sh" "$@" ;;
        soak)  shift; build_module; exec bash "$REPO/bench/soak.sh" "$@" ;;
        *)     die "usage: $0 [build|run|test|asan|fuzz [s]|bench|soak|deb]" ;;
    esac
}


# One line, so that bash has read it whole before it runs: an edit of this
# file during a long run (a chroot run sees the repository live) cannot
# change what the run does next.
main "$@"; exit
