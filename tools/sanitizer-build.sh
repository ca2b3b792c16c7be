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
# Sanitizer runtime (details in tools/README.md):
#   * The recommended ASan/UBSan/LSan options are compiled into the nginx
#     binary as defaults (a generated static addon, never in the module), so
#     no environment is needed; *SAN_OPTIONS in the environment override
#     them flag by flag.  `--print-env [DIR]` prints them as export lines.
#   * fork() of master/worker/cache processes is fine under ASan; each process
#     runs LeakSanitizer at its own exit, so leaks show up once nginx stops.
#   * nginx dup2()s the main error_log file onto fd 2 once the configuration
#     is read (ngx_log_redirect_stderr), so all reports of the master and
#     workers land in that error_log; before that (config parsing, nginx -t,
#     nginx -s) they go to the invoking process's stderr.
#   * Leak checking is off for nginx -t/-T/-s (they never free their cycle).

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
# made recoverable and ubsan_supp (below) suppresses them for the nginx
# executable only; UBSAN_OPTIONS=halt_on_error=1 keeps them fatal in the
# module.  Every other UBSan check stays non-recoverable everywhere.
readonly SAN_CC_OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined -fsanitize-recover=alignment,nonnull-attribute,pointer-overflow -DNGX_DEBUG_PALLOC=1"
# -z nodelete (a no-op for the executable): nginx dlclose()s modules when it
# destroys the cycle pool at exit, before LeakSanitizer runs, which would
# leave the module's frames in leak reports as "<unknown module>".
readonly SAN_LD_OPT="-fsanitize=address,undefined -Wl,-z,nodelete"

# Recommended sanitizer options.  They are compiled into the nginx binary as
# defaults (see write_defaults_addon), so the binary behaves right with no
# environment at all; ASAN_OPTIONS/UBSAN_OPTIONS/LSAN_OPTIONS still override
# them flag by flag.  Suppression files are added where they are installed.
#   detect_odr_violation=0  required: each nginx dynamic module defines
#                           ngx_modules[]/ngx_module_names[] as the binary
#                           does; ASan aborts load_module with "odr-violation"
#   abort_on_error=1        reports end in SIGABRT ("exited on signal 6")
#   fast_unwind_on_malloc=0 full allocation stacks through libssl/libcrypto
#                           (no frame pointers there), so that LSan reports
#                           of OpenSSL memory say who allocated it and
#                           tools/lsan.supp can tell nginx core from the
#                           module; costs ~20% test time
#   detect_leaks            on, except for nginx -t/-T/-s (see below)
readonly SAN_ASAN_OPTS=detect_odr_violation=0:abort_on_error=1:fast_unwind_on_malloc=0:detect_stack_use_after_return=1:check_initialization_order=1:strict_string_checks=1
readonly SAN_UBSAN_OPTS=print_stacktrace=1:halt_on_error=1:abort_on_error=1
readonly SAN_LSAN_OPTS=print_suppressions=0

# Debian packages needed to fetch, unpack and build (see ensure_prereqs).
readonly PREREQ_PKGS=(gcc make libc6-dev dpkg-dev xz-utils patch libpcre2-dev
                      libpcre3-dev zlib1g-dev libssl-dev libyajl-dev
                      libxxhash-dev)

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
    # ngx_sanitizer_defaults: relative to the build dir, see
    # write_defaults_addon.
    CONFIGURE_ARGS+=(--with-debug
                     --with-cc-opt="$SAN_CC_OPT${UNICO_EXTRA_CC_OPT:+ $UNICO_EXTRA_CC_OPT}"
                     --with-ld-opt="$SAN_LD_OPT"
                     --add-module=ngx_sanitizer_defaults
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

    # The build dir mirrors the source tree through symlinks; only objs/,
    # Makefile and ngx_sanitizer_defaults/ are real.
    for f in auto conf configure contrib html man src; do
        [[ -e $BUILD_DIR/$f ]] || ln -sfn "$SRC_DIR/$f" "$BUILD_DIR/$f"
    done
    write_defaults_addon "$BUILD_DIR/ngx_sanitizer_defaults"

    stamp_want=$( { printf '%s\n' "${CONFIGURE_ARGS[@]}"; cat "$REPO_DIR/config" \
                    "$BUILD_DIR/ngx_sanitizer_defaults/config"; } | sha)
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
        log "re-running configure in $BUILD_DIR (an addon config changed)"
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
    # (hidden dirs such as .git or .build/ are skipped)
    h=$(cd "$REPO_DIR" && find . -path './.*' -prune -o -name '*.h' -type f -print0 \
            | sort -z | xargs -0r sha256sum | sha)
    if [[ $(cat "$BUILD_DIR/.headers" 2>/dev/null) != "$h" ]]; then
        delete_module_objects
        echo "$h" >"$BUILD_DIR/.headers.new"
    fi
}

# The module's objects are the only ones under objs/addon/.
delete_module_objects() {
    if [[ -d $BUILD_DIR/objs/addon ]]; then
        find "$BUILD_DIR/objs/addon" -name '*.o' -type f -delete
    fi
}

# Write stdin to $1 unless $1 already has that content (keeps mtimes, so make
# does not rebuild needlessly).
write_if_changed() {
    local dst=$1 tmp
    tmp=$(mktemp "$dst.XXXXXX")
    cat >"$tmp"
    if cmp -s "$tmp" "$dst"; then
        rm -f "$tmp"
    else
        mv -f "$tmp" "$dst"
    fi
}

# A source file compiled into the nginx binary only (never into the module):
# __asan_default_options() & co. return the recommended options.  The LSan
# suppressions (tools/lsan.supp) are compiled in too, through
# __lsan_default_suppressions(): LSan reads its suppression file lazily, at
# the leak check at exit, i.e. in workers running as "nobody", which cannot
# read files under /root (the default cache); the report is then replaced by
# "failed to read suppressions file" and an abort.  UBSan reads its file once
# at exec time (the root master), so $OUT_DIR/sanitizer/ubsan.supp is fine.  Leak checking is
# turned off for `nginx -t/-T` and `nginx -s ...`: they return from main()
# without destroying their configuration cycle, which LeakSanitizer would
# report as ~270 KB of leaks on every config test (only long-running
# master/worker processes free their cycle pool at exit).
write_defaults_addon() {
    local dir=$1 supp=$OUT_DIR/sanitizer lsan_supp
    mkdir -p "$dir"
    # tools/lsan.supp as C string lines, without comments and blank lines
    lsan_supp=$(sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^$/d' \
                    -e 's/[\\"]/\\&/g' -e 's/.*/    "&\\n"/' "$SCRIPT_DIR/lsan.supp")
    # Added to CORE_SRCS rather than NGX_ADDON_SRCS: static addon objects
    # depend on every addon's headers, the dynamic module's included, and
    # would relink nginx whenever a module header changes.
    write_if_changed "$dir/config" <<'EOF'
# generated by tools/sanitizer-build.sh: not a module, one more core source
ngx_addon_name=ngx_sanitizer_defaults
CORE_SRCS="$CORE_SRCS $ngx_addon_dir/ngx_sanitizer_defaults.c"
mkdir -p "$NGX_OBJS/$ngx_addon_dir"
EOF
    write_if_changed "$dir/ngx_sanitizer_defaults.c" <<EOF
/*
 * Generated by tools/sanitizer-build.sh.  Linked into the sanitizer nginx
 * binary only.  Default sanitizer options; the ASAN_OPTIONS, UBSAN_OPTIONS
 * and LSAN_OPTIONS environment variables override them flag by flag.
 */

#include <fcntl.h>
#include <unistd.h>
#include <sys/syscall.h>


#define NGX_SAN_ASAN   "$SAN_ASAN_OPTS"
#define NGX_SAN_UBSAN  "$SAN_UBSAN_OPTS:suppressions=$supp/ubsan.supp"
#define NGX_SAN_LSAN   "$SAN_LSAN_OPTS"


/*
 * Whether nginx was started as "nginx -t", "-T" or "-s signal": these return
 * from main() without destroying their cycle, so leak checking is pointless
 * for them.  Called from the sanitizer runtime's initialisation, before
 * main() and before ASan's shadow memory exists: hence not instrumented, raw
 * system calls and no libc string functions.  The option syntax is that of
 * ngx_get_options().
 */

__attribute__((no_sanitize("address", "undefined"))) static int
ngx_san_config_only(void)
{
    static char  buf[16384];
    char        *p, *end;
    long         fd, n;
    int          value;

    fd = syscall(SYS_openat, AT_FDCWD, "/proc/self/cmdline", O_RDONLY);
    if (fd < 0) {
        return 0;
    }

    n = syscall(SYS_read, fd, buf, sizeof(buf) - 1);
    (void) syscall(SYS_close, fd);

    if (n <= 0) {
        return 0;
    }

    buf[n] = '\0';
    end = buf + n;

    /* skip argv[0] */
    for (p = buf; p < end && *p; p++) { /* void */ }

    value = 0;

    for (p++; p < end; p++) {

        if (value || *p != '-') {
            /* the value of -p/-c/-g/-e, or not an option */
            value = 0;

        } else {
            for (p++; *p; p++) {
                if (*p == 't' || *p == 'T' || *p == 's') {
                    return 1;
                }

                if (*p == 'p' || *p == 'c' || *p == 'g' || *p == 'e') {
                    value = (p[1] == '\0');
                    break;
                }
            }
        }

        while (p < end && *p) {
            p++;
        }
    }

    return 0;
}


__attribute__((visibility("default"), used)) const char *
__asan_default_options(void)
{
    return ngx_san_config_only() ? NGX_SAN_ASAN ":detect_leaks=0"
                                 : NGX_SAN_ASAN ":detect_leaks=1";
}


__attribute__((visibility("default"), used)) const char *
__ubsan_default_options(void)
{
    return NGX_SAN_UBSAN;
}


__attribute__((visibility("default"), used)) const char *
__lsan_default_options(void)
{
    return NGX_SAN_LSAN;
}


/* tools/lsan.supp */

__attribute__((visibility("default"), used)) const char *
__lsan_default_suppressions(void)
{
    return
${lsan_supp:-    \"\"}
    "";
}
EOF
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
    # the UBSan suppression file the binary's defaults point to (the LSan
    # ones are compiled in; the copy is for reference and --print-env)
    mkdir -p "$OUT_DIR/sanitizer"
    install_if_changed "$SCRIPT_DIR/lsan.supp" "$OUT_DIR/sanitizer/lsan.supp" 644
    ubsan_supp | write_if_changed "$OUT_DIR/sanitizer/ubsan.supp"
    chmod 644 "$OUT_DIR/sanitizer/ubsan.supp"
}

# UBSan runtime suppressions, installed as $OUT_DIR/sanitizer/ubsan.supp.
ubsan_supp() {
    cat <<'EOF'
# UBSan runtime suppressions for the sanitizer nginx, generated by
# tools/sanitizer-build.sh (edit them there).
#
# nginx 1.22.1's core trips these checks by design, so they are compiled as
# recoverable (-fsanitize-recover=...; a non-recoverable check aborts even
# when suppressed) and suppressed here for the nginx executable only: the
# pattern matches the ELF object the check is in, i.e. <prefix>/sbin/nginx.
# The same checks still fire -- and with halt_on_error=1 abort -- in the
# module's .so.
#
#   alignment          NGX_HAVE_NONALIGNED: unaligned uint16/uint32 loads and
#                      stores (ngx_http_parse.c on pipelined requests, HTTP/2
#                      frame parsing and output everywhere)
#   nonnull-attribute  memcpy(dst, NULL, 0), e.g. ngx_pstrdup() of the empty
#                      conf_param at every startup (ngx_cycle.c:118)
#   pointer-overflow   clang only: "applying zero offset to null pointer" in
#                      HTTP/2 request body handling (ngx_http_v2.c)
alignment:/sbin/nginx$
nonnull-attribute:/sbin/nginx$
pointer-overflow:/sbin/nginx$
EOF
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

# nginx started as root runs its workers as "nobody".  Their sanitizer
# runtime symbolises report stacks by reading the ELF files then, so a module
# it cannot read (e.g. under /root, where the default cache lives) shows up
# as "module.so+0x4ab5" only (addr2line -f -i -e <module.so> 0x4ab5 still
# resolves it).  Warn about that.
check_worker_access() {
    local module=$1
    [[ $(id -u) == 0 ]] && command -v runuser >/dev/null || return 0
    id nobody >/dev/null 2>&1 || return 0
    if ! runuser -u nobody -- test -r "$module"; then
        log "warning: user nobody cannot read $module: in reports from"
        log "  nginx workers (user nobody when started as root) the module's"
        log "  frames stay unsymbolised; use an OUT_DIR outside /root (e.g."
        log "  <repo>/.build/asan) or \"user root;\" in test configurations"
    fi
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
    # no *SAN_OPTIONS: the defaults compiled into the binary must suffice
    unset ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS
    out=$("$nginx" -V 2>&1) || die "nginx -V failed: $out"
    grep -q -- '--with-cc-opt=.*-fsanitize=address' <<<"$out" \
        || die "nginx -V does not show the sanitizer flags"
    if ! out=$("$nginx" -t -p "$tmp" -c "$tmp/nginx.conf" 2>&1) \
       || grep -q -e 'runtime error:' -e 'Sanitizer' <<<"$out"
    then
        die "nginx -t with the module failed:"$'\n'"$out"
    fi
)

# The recommended sanitizer environment as shell `export` lines -- the same
# as the defaults compiled into the binary, so exporting it is optional; it
# is for seeing/adjusting them, and for log_path.  Uses $SUPP_DIR (the
# installed suppression files).  $1 (optional): directory
# for ASan/LSan report files.  Without it every report goes to the process's
# stderr, which nginx points at the main error_log once the configuration is
# read.  detect_leaks is deliberately absent: it is on by default, and the
# binary turns it off for nginx -t/-T/-s; setting it here would override
# that.
sanitizer_env() {
    local dir=${1:-} log=
    # The same log_path in both: with gcc, libubsan's initialisation (at
    # nginx's first UBSan check, i.e. at startup) resets libasan's report
    # path to UBSan's log_path, "stderr" unless set.  UBSan's own reports
    # ignore log_path with gcc's split runtimes and always go to stderr.
    [[ -n $dir ]] && log=:log_path=$dir/asan
    printf "export ASAN_OPTIONS='%s'\n" "$SAN_ASAN_OPTS$log"
    printf "export UBSAN_OPTIONS='%s'\n" \
        "$SAN_UBSAN_OPTS:suppressions=$SUPP_DIR/ubsan.supp$log"
    # LSan suppressions are compiled in (see write_defaults_addon)
    printf "export LSAN_OPTIONS='%s'\n" "$SAN_LSAN_OPTS"
}

main() {
    case ${1:-} in
        -h | --help) usage; exit 0 ;;
        --print-env)
            # the suppression files as installed in the default OUT_DIR
            SUPP_DIR=${UNICO_ASAN_PREFIX:-${UNICO_CACHE:-$HOME/.cache/ngx_unico_selfie}/asan}/sanitizer
            sanitizer_env "${2:-}"
            exit 0 ;;
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
    check_worker_access "$module"

    printf 'NGINX=%s\n' "$OUT_DIR/sbin/nginx"
    printf 'MODULE=%s\n' "$module"
}

main "$@"
