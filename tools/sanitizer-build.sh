#!/usr/bin/env bash
#
# tools/sanitizer-build.sh -- build an AddressSanitizer + UndefinedBehaviorSanitizer
# nginx 1.22.1 (Debian 12's source and configure flags) together with
# ngx_http_unico_selfie_module as a dynamic module built with the same flags.
#
# Usage:
#   tools/sanitizer-build.sh [REPO_DIR [OUT_DIR]]
#
#   REPO_DIR  directory holding the nginx addon `config`
#             (default: the repository containing this script)
#   OUT_DIR   install prefix (default: $UNICO_ASAN_PREFIX, else <cache>/asan)
#
# Environment:
#   UNICO_CACHE        cache directory (default: $HOME/.cache/ngx_unico_selfie)
#   UNICO_ASAN_PREFIX  default OUT_DIR
#   UNICO_JOBS         make -j value (default: 2)
#   UNICO_KEEP_BUILDS  build dirs (one per flag set) kept in the cache (default: 3)
#   CC                 compiler (default: gcc; clang works too, see below)
#   UNICO_EXTRA_CC_OPT extra compiler flags appended to the sanitizer flags
#   UNICO_VERBOSE=1    stream configure/make output instead of logging it
#
# Output: the last two lines on stdout are
#   NGINX=<OUT_DIR>/sbin/nginx
#   MODULE=<OUT_DIR>/modules/<addon>.so
# Progress goes to stderr; build logs go to <build dir>/build.log and are
# shown (tail) only on failure.
#
# Idempotent: the unpacked Debian source, the nginx build (keyed by the
# configure arguments and compiler) and the install are reused.  A second
# run with unchanged inputs needs no network and compiles nothing; a run
# after the module's sources changed recompiles only the module.
#
# Compiler: gcc by default -- Debian's own compiler for nginx (same code
# generation and -Werror warning set as the packaged binary), its runtimes
# (libasan8, libubsan1) come with gcc-12, gcc 12 at -O1 with ASan+UBSan is
# warning-free on 1.22.1, and its -fsanitize=undefined does not include
# pointer-overflow, which nginx core trips under clang.  CC=clang (14) builds
# and works too (the flags and suppressions cover it); the one gcc quirk is
# that UBSan ignores log_path (see sanitizer_env).
#
# Sanitizer runtime (details in tools/README.md; `--print-env [DIR]` prints
# the recommended ASAN_OPTIONS/UBSAN_OPTIONS/LSAN_OPTIONS as export lines):
#   * fork() of master/worker/cache processes is fine under ASan; each process
#     runs LeakSanitizer at its own exit (so leaks show up after nginx stops).
#   * nginx dup2()s the main error_log file onto fd 2 once the configuration
#     is read (ngx_log_redirect_stderr), so by default all reports of the
#     master and workers land in that error_log; before that (config parsing,
#     `nginx -t`, `nginx -s`) they go to the invoking process's stderr.
#   * detect_odr_violation=0 is required: every nginx dynamic module defines
#     ngx_modules[]/ngx_module_names[] like the nginx binary does, which ASan
#     reports as an ODR violation when the module is loaded.
#   * `nginx -t` and `nginx -s ...` return from main() without freeing their
#     cycle; run them with detect_leaks=0.
#
# Usage as a library of settings: `eval "$(tools/sanitizer-build.sh --print-env)"`.
#

set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly SCRIPT_DIR
readonly NGINX_UPSTREAM_VERSION=1.22.1
# Bump when the build layout/logic changes so that old build dirs are not reused.
readonly BUILD_FORMAT=1

# NGX_DEBUG_PALLOC=1 makes every pool allocation a separate malloc(), so ASan
# sees overflows of pool memory too.
#
# -fsanitize-recover=alignment,nonnull-attribute,pointer-overflow: nginx
# 1.22.1's core trips these checks by design on x86_64 -- NGX_HAVE_NONALIGNED
# unaligned uint16/uint32 loads and stores (ngx_http_parse.c method matching
# on pipelined requests, all of HTTP/2 framing), memcpy(dst, NULL, 0)
# (ngx_pstrdup() of an empty string at every startup) and, with clang only
# (gcc's -fsanitize=undefined does not include pointer-overflow), "applying
# zero offset to null pointer" in HTTP/2 request body handling.
# Non-recoverable UBSan checks abort even when suppressed, so these kinds are
# made recoverable and tools/ubsan.supp suppresses them for the nginx
# executable only; UBSAN_OPTIONS=halt_on_error=1 keeps them fatal in the
# module.  Every other UBSan check stays non-recoverable everywhere.
readonly SAN_CC_OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined -fsanitize-recover=alignment,nonnull-attribute,pointer-overflow -DNGX_DEBUG_PALLOC=1"
# -z nodelete (a no-op for the executable): nginx dlclose()s modules when it
# destroys the cycle pool at exit, before LeakSanitizer runs, which would
# leave the module's frames in leak reports as "<unknown module>".
readonly SAN_LD_OPT="-fsanitize=address,undefined -Wl,-z,nodelete"

# Debian packages needed to fetch, unpack and build (see ensure_prereqs).
readonly PREREQ_PKGS=(gcc make libc6-dev dpkg-dev xz-utils patch libpcre2-dev
                      libpcre3-dev zlib1g-dev libssl-dev libyajl-dev)

APT_UPDATED=0

log()  { printf 'sanitizer-build: %s\n' "$*" >&2; }
die()  { log "error: $*"; exit 1; }

usage() {
    sed -n '3,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
}

# Run a command, logging its output to $LOG (or showing it when verbose).
# On failure, show the end of the log.
run_logged() {
    local what=$1; shift
    if [[ ${UNICO_VERBOSE:-0} == 1 ]]; then
        "$@" >&2 || die "$what failed"
        return
    fi
    printf '\n=== %s: %s\n' "$what" "$*" >>"$LOG"
    if ! "$@" >>"$LOG" 2>&1; then
        tail -n 60 "$LOG" >&2
        die "$what failed (full log: $LOG)"
    fi
}

as_root() {
    [[ $(id -u) == 0 ]] || die "need root to run: $* (or install it yourself)"
    "$@"
}

apt_update_once() {
    if [[ $APT_UPDATED == 0 ]]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 \
            || die "apt-get update failed"
        APT_UPDATED=1
    fi
}

pkg_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

# 1. Prerequisites: install only what is missing, with one apt-get update.
ensure_prereqs() {
    local missing=() p
    for p in "${PREREQ_PKGS[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
    case ${CC:-gcc} in
        clang*) command -v "${CC}" >/dev/null || missing+=(clang) ;;
    esac
    # The sanitizer runtimes ship with the compiler packages (gcc-12 ->
    # libgcc-12-dev -> libasan8, libubsan1; clang -> libclang-rt-*-dev).
    if ((${#missing[@]})); then
        log "installing: ${missing[*]}"
        apt_update_once
        as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
            || die "apt-get install failed"
    fi
    command -v "${CC:-gcc}" >/dev/null || die "compiler ${CC:-gcc} not found"
    command -v make >/dev/null || die "make not found"
}

# Versions of nginx 1.22.1 source packages apt knows about, newest first.
source_versions() {
    apt-cache showsrc nginx 2>/dev/null \
        | sed -n "s/^Version: \(\([0-9]*:\)\{0,1\}${NGINX_UPSTREAM_VERSION//./\\.}-.*\)/\1/p" \
        | sort -u \
        | sort_dpkg_versions_desc
}

# Sort stdin by dpkg's version ordering, newest first (insertion sort: there
# are only a handful of versions).
sort_dpkg_versions_desc() {
    local versions=() v i j tmp
    while read -r v; do versions+=("$v"); done
    for ((i = 1; i < ${#versions[@]}; i++)); do
        for ((j = i; j > 0; j--)); do
            if dpkg --compare-versions "${versions[j]}" gt "${versions[j-1]}"; then
                tmp=${versions[j]}; versions[j]=${versions[j-1]}; versions[j-1]=$tmp
            else
                break
            fi
        done
    done
    ((${#versions[@]})) && printf '%s\n' "${versions[@]}"
    return 0
}

# Make sure apt knows nginx source packages (needs a deb-src entry).
ensure_deb_src() {
    [[ -n $(source_versions) ]] && return 0

    local src=/etc/apt/sources.list.d/debian.sources
    local dst=/etc/apt/sources.list.d/debian-src.sources
    if ! grep -qsE '^[[:space:]]*Types:.*\<deb-src\>' /etc/apt/sources.list.d/*.sources \
       && ! grep -qsE '^[[:space:]]*deb-src[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list
    then
        [[ -f $src ]] || die "no deb-src entry and no $src to derive one from"
        log "adding deb-src entries: $dst"
        sed -E 's/^([[:space:]]*)Types:.*/\1Types: deb-src/' "$src" \
            | as_root tee "$dst" >/dev/null
    fi
    APT_UPDATED=0          # the index must be refreshed to see deb-src lists
    apt_update_once
    [[ -n $(source_versions) ]] \
        || die "apt-cache showsrc nginx lists no $NGINX_UPSTREAM_VERSION version"
}

# 2. Debian's nginx source (upstream 1.22.1 + debian/patches applied), unpacked
# into $SRC_DIR.  Reused when present.
#
# Trap: the mirror may lack the newest version's files (1.22.1-9+deb12u11's
# .dsc/.debian.tar.xz 404 while +deb12u9 works), so fall back to older
# versions from `apt-cache showsrc`.
ensure_source() {
    local stamp=$SRC_DIR/.unico-source-version
    if [[ -f $stamp && -x $SRC_DIR/configure && -f $SRC_DIR/debian/rules ]]; then
        return 0
    fi

    ensure_deb_src
    local dl=$CACHE/src/download.$$ v ok=
    rm -rf "$dl" "$SRC_DIR"
    mkdir -p "$dl"
    # `apt-get source` as root warns that _apt cannot write here; harmless.
    for v in "" $(source_versions); do
        log "apt-get source nginx${v:+=$v}"
        rm -rf "$dl/nginx-$NGINX_UPSTREAM_VERSION"
        if (cd "$dl" && apt-get source -qq "nginx${v:+=$v}") >>"$CACHE/src/apt-source.log" 2>&1 \
           && [[ -x $dl/nginx-$NGINX_UPSTREAM_VERSION/configure ]]; then
            ok=1
            break
        fi
        log "  failed (see $CACHE/src/apt-source.log), trying an older version"
    done
    [[ -n $ok ]] || die "could not obtain nginx $NGINX_UPSTREAM_VERSION source"

    v=$(dpkg-parsechangelog -l "$dl/nginx-$NGINX_UPSTREAM_VERSION/debian/changelog" -S Version)
    echo "$v" >"$dl/nginx-$NGINX_UPSTREAM_VERSION/.unico-source-version"
    mv "$dl/nginx-$NGINX_UPSTREAM_VERSION" "$SRC_DIR"
    rm -rf "$dl"
    log "nginx source $v unpacked in $SRC_DIR"
}

# Debian's configure flags, one per line.  The full list of the packaged
# binary (basic + "bin" flavour flags) comes from debian/rules of the tree we
# build; /usr/share/nginx/src/conf_flags (nginx-dev) only holds the basic
# subset meant for building third-party modules, so it is the fallback.
debian_flags() {
    local flags mk
    mk=$(mktemp)
    # shellcheck disable=SC2016  # $(...) is make syntax
    printf 'unico-print-flags:\n\t@printf "%%s\\n" $(basic_configure_flags) $(filter-out $(common_configure_flags),$(bin_configure_flags))\n' >"$mk"
    flags=$(cd "$SRC_DIR" && make -s -f debian/rules -f "$mk" unico-print-flags 2>/dev/null) || flags=
    rm -f "$mk"
    if [[ -z $flags && -r /usr/share/nginx/src/conf_flags ]]; then
        flags=$(bash -c '. /usr/share/nginx/src/conf_flags && printf "%s\n" "${NGX_CONF_FLAGS[@]}"')
    fi
    [[ -n $flags ]] || die "cannot determine Debian's configure flags"
    printf '%s\n' "$flags"
}

# 3. The configure arguments: Debian's minus paths, cc/ld opts and the
# =dynamic modules that need extra libraries (geoip, image_filter, perl,
# xslt, mail, stream -- and the mail_*/stream_* options that only make sense
# with them), plus our prefix, debug, sanitizer flags and the addon.
compute_configure_args() {
    local f
    CONFIGURE_ARGS=(--prefix="$OUT_DIR" --error-log-path=stderr)
    while read -r f; do
        case $f in
            --prefix=* | --*-path=* | --user=* | --group=* | --builddir=*) ;;
            --with-cc-opt=* | --with-ld-opt=* | --with-debug) ;;
            *=dynamic | --with-mail* | --with-stream*) ;;
            --*) CONFIGURE_ARGS+=("$f") ;;
        esac
    done < <(debian_flags)
    CONFIGURE_ARGS+=(--with-debug
                     --with-cc-opt="$SAN_CC_OPT${UNICO_EXTRA_CC_OPT:+ $UNICO_EXTRA_CC_OPT}"
                     --with-ld-opt="$SAN_LD_OPT"
                     --add-dynamic-module="$REPO_DIR")
}

sha() { sha256sum | cut -c1-16; }

# 3b. (Re)configure when needed.  The build dir is keyed by everything that
# affects the nginx binary, so a change of flags builds into a new dir.
# Within one build dir, re-running configure (because the addon's `config`
# changed) keeps the mtimes of generated files whose content did not change,
# so make recompiles only the module.
ensure_configured() {
    local cc_id key stamp_want f
    cc_id=$("${CC:-gcc}" --version | head -n1)
    key=$( { echo "$BUILD_FORMAT"; cat "$SRC_DIR/.unico-source-version";
             echo "$cc_id"; printf '%s\n' "${CONFIGURE_ARGS[@]}"; } | sha)
    BUILD_DIR=$CACHE/build-$key
    LOG=$BUILD_DIR/build.log
    mkdir -p "$BUILD_DIR"
    touch "$BUILD_DIR"        # most recently used, for prune_builds
    : >"$LOG"

    # The build dir mirrors the source tree through symlinks; only objs/ and
    # Makefile are real.
    for f in auto conf configure contrib html man src; do
        [[ -e $BUILD_DIR/$f ]] || ln -sfn "$SRC_DIR/$f" "$BUILD_DIR/$f"
    done

    stamp_want=$( { printf '%s\n' "${CONFIGURE_ARGS[@]}"; cat "$REPO_DIR/config"; } | sha)
    if [[ -f $BUILD_DIR/objs/Makefile \
          && $(cat "$BUILD_DIR/.configured" 2>/dev/null) == "$stamp_want" ]]; then
        return 0
    fi

    # Generated files (top Makefile, objs/Makefile, objs/*.[ch]) are saved
    # as $prev/<dir>_<name> to compare with configure's new output.
    local prev=$BUILD_DIR/.prev p
    rm -rf "$prev"
    mkdir -p "$prev"
    if [[ -f $BUILD_DIR/objs/Makefile ]]; then
        log "addon config changed: re-running configure in $BUILD_DIR"
        for f in "$BUILD_DIR"/objs/*.[ch] "$BUILD_DIR"/objs/Makefile "$BUILD_DIR"/Makefile; do
            if [[ -f $f ]]; then
                cp -p "$f" "$prev/$(basename "$(dirname "$f")")_$(basename "$f")"
            fi
        done
    else
        log "configuring nginx in $BUILD_DIR"
    fi
    rm -f "$BUILD_DIR/.configured"
    # shellcheck disable=SC2016  # expanded by the inner sh
    run_logged configure env CC="${CC:-gcc}" \
        sh -c 'cd "$1" && shift && ./configure "$@"' sh "$BUILD_DIR" "${CONFIGURE_ARGS[@]}"
    for f in "$BUILD_DIR"/objs/*.[ch] "$BUILD_DIR"/objs/Makefile "$BUILD_DIR"/Makefile; do
        p=$prev/$(basename "$(dirname "$f")")_$(basename "$f")
        if [[ -f $f && -f $p ]] && cmp -s "$f" "$p"; then
            touch -r "$p" "$f"          # unchanged: keep the old mtime
        fi
    done
    rm -rf "$prev"
    # The addon's include dirs/flags may have changed: recompile its objects.
    delete_module_objects
    echo "$stamp_want" >"$BUILD_DIR/.configured"
}

# nginx's Makefile only knows the headers listed in ngx_module_deps; when any
# header of the repo changed since the last build, drop the module's objects
# so they are recompiled (cheap: only the addon).
invalidate_module_objects() {
    local h
    h=$(cd "$REPO_DIR" && find . -name .git -prune -o -name '*.h' -type f -print0 \
            | sort -z | xargs -0r sha256sum | sha)
    if [[ $(cat "$BUILD_DIR/.headers" 2>/dev/null) != "$h" ]]; then
        delete_module_objects
        echo "$h" >"$BUILD_DIR/.headers.new"
    fi
}

# Objects of the addon (the only addon in this build) live under objs/addon/.
delete_module_objects() {
    if [[ -d $BUILD_DIR/objs/addon ]]; then
        find "$BUILD_DIR/objs/addon" -name '*.o' -delete
    fi
}

# Keep the $UNICO_KEEP_BUILDS most recently used build dirs (~90 MB each).
prune_builds() {
    local keep=${UNICO_KEEP_BUILDS:-3} d n=0
    while read -r d; do
        n=$((n + 1))
        if ((n > keep)); then
            log "removing old build dir $d"
            rm -rf "$d"
        fi
    done < <(ls -1dt "$CACHE"/build-* 2>/dev/null)
}

# 4. Build (make decides what is stale: the nginx binary only after a
# configure change, the module after its sources changed) and install.
build_and_install() {
    local jobs=${UNICO_JOBS:-2}
    invalidate_module_objects
    if [[ ! -x $BUILD_DIR/objs/nginx ]]; then
        log "building nginx + module (cold build, a few minutes)"
    fi
    run_logged make make -C "$BUILD_DIR" -f objs/Makefile -j"$jobs" binary modules
    if [[ -f $BUILD_DIR/.headers.new ]]; then
        mv "$BUILD_DIR/.headers.new" "$BUILD_DIR/.headers"
    fi

    mkdir -p "$OUT_DIR"/{sbin,modules,conf,logs}
    install_if_changed "$BUILD_DIR/objs/nginx" "$OUT_DIR/sbin/nginx" 755
    local so found=
    for so in "$BUILD_DIR"/objs/*.so; do
        [[ -f $so ]] || continue
        install_if_changed "$so" "$OUT_DIR/modules/$(basename "$so")" 755
        found=1
    done
    [[ -n $found ]] || die "no dynamic module was built"
    for f in "$SRC_DIR"/conf/*; do
        [[ -f $OUT_DIR/conf/$(basename "$f") ]] || cp "$f" "$OUT_DIR/conf/"
    done
}

# Copy via a temporary file + rename, so that a running binary is not
# overwritten in place; skip when identical.
install_if_changed() {
    local src=$1 dst=$2 mode=$3
    cmp -s "$src" "$dst" 2>/dev/null && return 0
    cp "$src" "$dst.tmp.$$"
    chmod "$mode" "$dst.tmp.$$"
    mv -f "$dst.tmp.$$" "$dst"
}

# The .so's name is the addon's ngx_addon_name.
module_path() {
    local name
    name=$(sed -n 's/^[[:space:]]*ngx_addon_name=["'\'']\{0,1\}\([A-Za-z0-9_]*\).*/\1/p' \
               "$REPO_DIR/config" | head -n1)
    [[ -n $name && -f $OUT_DIR/modules/$name.so ]] \
        || die "cannot find the module built from $REPO_DIR/config in $OUT_DIR/modules"
    printf '%s\n' "$OUT_DIR/modules/$name.so"
}

# 5. Check: nginx -V, and nginx -t with a config that loads the module, under
# the recommended sanitizer options.  Runs in a subshell (own env and trap).
smoke_check() (
    local nginx=$1 module=$2 tmp out
    tmp=$(mktemp -d)
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT
    mkdir -p "$tmp/logs"
    cat >"$tmp/nginx.conf" <<EOF
load_module $module;
error_log logs/error.log debug;
pid logs/nginx.pid;
events { worker_connections 64; }
http {
    access_log off;
    server { listen 127.0.0.1:1; location / { return 204; } }
}
EOF
    eval "$(sanitizer_env "$tmp")"
    # `nginx -t` (like `nginx -s ...`) returns from main() without destroying
    # its cycle, so leak checking is off for it (see tools/README.md).
    ASAN_OPTIONS=$ASAN_OPTIONS:detect_leaks=0
    out=$("$nginx" -V 2>&1) || die "nginx -V failed: $out"
    grep -q -- '--with-cc-opt=.*-fsanitize=address' <<<"$out" \
        || die "nginx -V does not show the sanitizer flags"
    if ! out=$("$nginx" -t -p "$tmp" -c "$tmp/nginx.conf" 2>&1) \
       || grep -q -e 'runtime error:' -e 'Sanitizer' <<<"$out" \
       || compgen -G "$tmp/asan.*" >/dev/null
    then
        die "nginx -t with the module failed:"$'\n'"$out"$'\n'"$(cat "$tmp"/asan.* 2>/dev/null)"
    fi
)

# Recommended sanitizer environment, as shell `export` lines (see
# tools/README.md).  $1 (optional): directory for ASan/LSan report files
# (log_path); without it every report goes to the process's stderr, which
# nginx points at the main error_log once the configuration is read.
# UBSan ignores log_path with gcc's split libasan/libubsan runtimes and always
# writes to stderr.
sanitizer_env() {
    local dir=${1:-} asan ubsan log=
    # Same log_path in both: with gcc, libubsan initialising (at nginx's first
    # UBSan check, i.e. at startup) resets libasan's report path to its own
    # log_path, "stderr" unless set.
    [[ -n $dir ]] && log=:log_path=$dir/asan
    asan=detect_leaks=1:detect_odr_violation=0:abort_on_error=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_string_checks=1$log
    ubsan=print_stacktrace=1:halt_on_error=1:abort_on_error=1:suppressions=$SCRIPT_DIR/ubsan.supp$log
    printf "export ASAN_OPTIONS='%s'\n" "$asan"
    printf "export UBSAN_OPTIONS='%s'\n" "$ubsan"
    printf "export LSAN_OPTIONS='%s'\n" \
        "suppressions=$SCRIPT_DIR/lsan.supp:print_suppressions=0"
}

main() {
    case ${1:-} in
        -h | --help) usage; exit 0 ;;
        --print-env) sanitizer_env "${2:-}"; exit 0 ;;
    esac

    REPO_DIR=$(cd "${1:-$SCRIPT_DIR/..}" && pwd)
    [[ -f $REPO_DIR/config ]] || die "$REPO_DIR has no nginx addon 'config'"
    CACHE=${UNICO_CACHE:-$HOME/.cache/ngx_unico_selfie}
    mkdir -p "$CACHE/src"
    CACHE=$(cd "$CACHE" && pwd)
    case $CACHE/ in "$REPO_DIR"/*) die "cache $CACHE must not be inside the repo" ;; esac
    OUT_DIR=${2:-${UNICO_ASAN_PREFIX:-$CACHE/asan}}
    mkdir -p "$OUT_DIR"
    OUT_DIR=$(cd "$OUT_DIR" && pwd)
    SRC_DIR=$CACHE/src/nginx-$NGINX_UPSTREAM_VERSION
    LOG=$CACHE/src/apt-source.log

    # one build per cache at a time
    exec 9>"$CACHE/.lock"
    flock 9

    ensure_prereqs
    ensure_source
    compute_configure_args
    ensure_configured
    build_and_install
    prune_builds

    local module
    module=$(module_path)
    smoke_check "$OUT_DIR/sbin/nginx" "$module"

    printf 'NGINX=%s\n' "$OUT_DIR/sbin/nginx"
    printf 'MODULE=%s\n' "$module"
}

main "$@"
