# SPDX-License-Identifier: BSD-2-Clause
# ngx_unico_selfie_module benchmark: what bench/run.sh and bench/callgrind.sh
# share.  Sourced, not run.
#
# Everything lives in one work directory ($BENCH_WORK, made by bench_init):
#   data/      the fixtures' JSON as the mock Unico serves them, the static
#              images, their SHA-256
#   upstream/  prefix of the mock Unico (an nginx of its own)
#   gw-<path>/ prefix of the gateway under test, one per path
#   raw/       wrk outputs, curl outputs, samples
#
# Processes: every nginx master started here is recorded (BENCH_PIDS) with
# its worker, and bench_cleanup (the EXIT/INT/TERM trap) stops them all,
# by pid, QUIT first and KILL after a grace period.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
MODULE_SO="$REPO/.build/ngx_http_unico_selfie_module.so"
FIXTURES="$REPO/t/fixtures"
NGINX=${NGINX:-/usr/sbin/nginx}
NGX_MODULES=${NGX_MODULES:-/usr/lib/nginx/modules}

GW_PORT=${BENCH_GATEWAY_PORT:-18480}
UP_PORT=${BENCH_UPSTREAM_PORT:-18481}
TOKEN=bench-token

# CPU placement (see docs/benchmarks.md): the gateway worker alone on
# GW_CPU; the mock Unico's worker and wrk share LOAD_CPU.  "float" leaves
# everything to the scheduler.
PLACEMENT=${BENCH_PLACEMENT:-split}
GW_CPU=1
LOAD_CPU=0

# As root, the benchmark's processes (nginx, wrk, curl) run at nice -10,
# each in a session of its own whose scheduler autogroup is given the same
# nice value: with autogroups (Debian's default) nice alone only ranks
# processes within their session.  Whatever else runs on the machine then
# disturbs the measurement less.  BENCH_NICE=0 turns it off.
if [ "$(id -u)" -eq 0 ]; then
    BENCH_NICE=${BENCH_NICE:--10}
else
    BENCH_NICE=${BENCH_NICE:-0}
fi
NICE=()
if [ "$BENCH_NICE" != 0 ]; then
    # shellcheck disable=SC2016
    NICE=(setsid bash -c 'echo "$0" >/proc/self/autogroup 2>/dev/null; exec nice -n "$0" "$@"' "$BENCH_NICE")
fi

# name  processId  file  contentType
BENCH_FIXTURES=(
    "360x480   53060f52-f146-4c12-a234-5bb5031f6f5b selfie-360x480.jpg   image/jpeg"
    "720x960   de50b727-3c28-1c95-8d2b-242124c3d443 selfie-720x960.jpg   image/jpeg"
    "1080x1440 0193b2f4-7c1e-7a3d-9f20-5e6b8c41d7a9 selfie-1080x1440.jpg image/jpeg"
    "480x640   bf6260fe-c332-46b4-a37a-45aa3b53965d selfie-480x640.png   image/png"
)

BENCH_PATHS=(static proxy_json njs lua module module_cache)

BENCH_PIDS=()        # "master worker" pairs
BENCH_CHILD=""       # the wrk or curl being waited for
BENCH_WORK=""
BENCH_KEEP=${BENCH_KEEP:-0}
BENCH_FAILED=0

blog() { printf '%s\n' "bench: $*" >&2; }
bdie() { BENCH_FAILED=1; printf '%s\n' "bench: FAIL: $*" >&2; exit 1; }


# --- packages -------------------------------------------------------------

bench_have_pkg() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# Installs the missing ones from Debian's packages (root), or fails naming
# them (not root).  apt-get update runs once per process, only if needed.
bench_ensure_packages() {
    local missing=() p
    for p in "$@"; do
        bench_have_pkg "$p" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0

    [ "$(id -u)" -eq 0 ] \
        || bdie "missing Debian packages: ${missing[*]} (run as root to install them)"

    blog "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "${BENCH_APT_UPDATED:-}" ]; then
        apt-get update -qq >&2 || bdie "apt-get update failed"
        BENCH_APT_UPDATED=1
    fi
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
        || bdie "apt-get install ${missing[*]} failed"
}

# The module .so: built by build.sh when missing or older than its sources,
# then copied into the work directory (bench_snapshot_module), so that one
# run measures one build even if the sources change meanwhile.
# BENCH_MODULE_SO names a .so to use as it is (bench/run.sh passes its
# snapshot to bench/callgrind.sh).
bench_ensure_module() {
    local stale=0 f
    if [ -n "${BENCH_MODULE_SO:-}" ]; then
        [ -f "$BENCH_MODULE_SO" ] || bdie "no $BENCH_MODULE_SO"
        MODULE_SO=$BENCH_MODULE_SO
        return 0
    fi
    if [ -f "$MODULE_SO" ]; then
        for f in "$REPO/config" "$REPO"/ngx_unico_selfie_module/*; do
            [ "$f" -nt "$MODULE_SO" ] && stale=1
        done
    fi
    if [ ! -f "$MODULE_SO" ] || [ "$stale" = 1 ]; then
        blog "building the module (build.sh build)"
        "$REPO/build.sh" build >&2 || bdie "build.sh build failed"
    fi
    [ -f "$MODULE_SO" ] || bdie "no $MODULE_SO after build.sh build"
    MODULE_REV=$(bench_module_revision)
}

bench_module_revision() {
    local rev
    rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null) || { echo "an unknown revision"; return; }
    if [ -n "$(git -C "$REPO" status --porcelain -- config ngx_unico_selfie_module 2>/dev/null)" ]; then
        echo "commit $rev with uncommitted changes to its sources"
    else
        echo "commit $rev"
    fi
}

# after bench_init
bench_snapshot_module() {
    [ -n "${BENCH_MODULE_SO:-}" ] && return 0
    cp "$MODULE_SO" "$BENCH_WORK/ngx_http_unico_selfie_module.so"
    MODULE_SO="$BENCH_WORK/ngx_http_unico_selfie_module.so"
}


# --- work directory, data -------------------------------------------------

bench_init() {
    BENCH_WORK=$(mktemp -d "${TMPDIR:-/tmp}/unico-bench.XXXXXX")
    # nginx workers started by root run as "nobody": they read data/ and
    # bench/peers/ (Lua's require)
    chmod 755 "$BENCH_WORK"
    mkdir -p "$BENCH_WORK/data/static" "$BENCH_WORK/data/json" "$BENCH_WORK/raw"
    trap bench_cleanup EXIT
    trap 'blog "interrupted"; BENCH_FAILED=1; exit 130' INT
    trap 'blog "terminated"; BENCH_FAILED=1; exit 143' TERM
}

bench_cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    # a load generator still running (wrk, curl)
    if [ -n "${BENCH_CHILD:-}" ]; then
        kill -TERM "$BENCH_CHILD" 2>/dev/null
        wait "$BENCH_CHILD" 2>/dev/null
    fi
    bench_stop_all
    if [ -n "${BENCH_WATCHDOG:-}" ]; then
        kill -TERM "$BENCH_WATCHDOG" 2>/dev/null
        wait "$BENCH_WATCHDOG" 2>/dev/null
    fi
    if [ -n "$BENCH_WORK" ] && [ -d "$BENCH_WORK" ]; then
        if [ "$BENCH_KEEP" = 1 ] || [ "$BENCH_FAILED" = 1 ] || [ "$rc" -ne 0 ]; then
            blog "work directory kept: $BENCH_WORK"
        else
            rm -rf "$BENCH_WORK"
        fi
    fi
    exit "$rc"
}

# A hard bound on the whole run: TERM to this shell after $1 seconds.  The
# watchdog's own sleep goes with it when bench_cleanup stops it.
bench_watchdog() {
    local limit=$1 self=$$
    (
        trap - EXIT INT
        trap 'kill -TERM "$sp" 2>/dev/null; exit 0' TERM
        sleep "$limit" &
        sp=$!
        wait "$sp" || exit 0
        echo "bench: FAIL: watchdog: still running after ${limit}s" >&2
        kill -TERM "$self"
    ) </dev/null >/dev/null 2>&1 &
    BENCH_WATCHDOG=$!
}

# fx <name>: sets FX_NAME FX_ID FX_TAG FX_FILE FX_TYPE FX_SIZE FX_SHA FX_JSON
# FX_JSON_SHA FX_JSON_SIZE FX_EXT
#
# The mock Unico and the static path serve a fixture for ANY processId that
# starts with the fixture's tag (the first 8 hex digits of its own UUID):
# wrk then asks for a different processId on each request (bench_id), as
# real traffic does, so that the module's coalescing of concurrent
# requests for the same processId does not kick in (module_cache excepted).
fx() {
    local f n id file type
    for f in "${BENCH_FIXTURES[@]}"; do
        read -r n id file type <<<"$f"
        if [ "$n" = "$1" ]; then
            FX_NAME=$n FX_ID=$id FX_TAG=${id:0:8} FX_FILE="$FIXTURES/$file" FX_TYPE=$type
            FX_EXT=${file##*.}
            FX_SIZE=$(stat -c %s "$FX_FILE")
            FX_SHA=$(cat "$BENCH_WORK/data/$n.sha")
            FX_JSON="$BENCH_WORK/data/json/$FX_TAG"
            FX_JSON_SHA=$(cat "$BENCH_WORK/data/$n.json.sha")
            FX_JSON_SIZE=$(stat -c %s "$FX_JSON")
            return 0
        fi
    done
    bdie "unknown fixture $1"
}

# bench_id <tag> <n>: the n-th processId of a fixture
bench_id() {
    printf '%s-0000-4000-8000-%012x' "$1" "$2"
}

fixture_names() {
    local f n _
    for f in "${BENCH_FIXTURES[@]}"; do
        read -r n _ <<<"$f"
        printf '%s\n' "$n"
    done
}

# Unico's answer for each fixture, as Unico sends it: one line, no escapes,
# no trailing newline; and the decoded image for the static path.
bench_make_data() {
    local f n id file type json
    for f in "${BENCH_FIXTURES[@]}"; do
        read -r n id file type <<<"$f"
        [ -f "$FIXTURES/$file" ] || bdie "missing fixture $FIXTURES/$file"
        json="$BENCH_WORK/data/json/${id:0:8}"
        {
            printf '{"fileContents":"'
            base64 -w0 "$FIXTURES/$file"
            printf '","contentType":"%s"}' "$type"
        } >"$json"
        cp "$FIXTURES/$file" "$BENCH_WORK/data/static/${id:0:8}.${file##*.}"
        sha256sum <"$FIXTURES/$file" | cut -d' ' -f1 >"$BENCH_WORK/data/$n.sha"
        sha256sum <"$json" | cut -d' ' -f1 >"$BENCH_WORK/data/$n.json.sha"
    done
    chmod -R a+rX "$BENCH_WORK/data"
}


# --- processes ------------------------------------------------------------

bench_port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

bench_wait_port() {   # bench_wait_port <port> <seconds> <pid>
    local i n=$(( $2 * 20 ))
    for (( i = 0; i < n; i++ )); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# The only child of an nginx master (worker_processes 1).
bench_worker_of() {
    local i w
    for (( i = 0; i < 100; i++ )); do
        w=$(pgrep -P "$1" 2>/dev/null | head -1 || true)
        [ -n "$w" ] && { printf '%s\n' "$w"; return 0; }
        sleep 0.05
    done
    return 1
}

# bench_start_nginx <prefix> <port> [cmd prefix...]: starts nginx in the
# foreground of a background job; sets NGX_MASTER, NGX_WORKER (empty with
# master_process off).
bench_start_nginx() {
    local prefix=$1 port=$2
    shift 2
    : >"$prefix/logs/error.log"
    bench_port_free "$port" || bdie "127.0.0.1:$port is in use (set BENCH_GATEWAY_PORT / BENCH_UPSTREAM_PORT)"
    "${NICE[@]}" "$@" "$NGINX" -p "$prefix" -c conf/nginx.conf -e logs/error.log \
        </dev/null >>"$prefix/logs/stdout.log" 2>&1 &
    NGX_MASTER=$!
    NGX_WORKER=""
    BENCH_PIDS+=("$NGX_MASTER")
    if ! bench_wait_port "$port" "${BENCH_START_TIMEOUT:-20}" "$NGX_MASTER"; then
        tail -20 "$prefix/logs/error.log" "$prefix/logs/stdout.log" >&2 2>/dev/null
        bdie "nginx ($prefix) did not start listening on 127.0.0.1:$port"
    fi
    if grep -q 'master_process *off' "$prefix/conf/nginx.conf"; then
        return 0
    fi
    NGX_WORKER=$(bench_worker_of "$NGX_MASTER") || bdie "no nginx worker under $NGX_MASTER"
    BENCH_PIDS[${#BENCH_PIDS[@]}-1]="$NGX_MASTER $NGX_WORKER"
}

# Graceful stop, then forced after 5 s; the worker too if it outlives its
# master.
bench_stop_pid_pair() {
    local master=$1 worker=${2:-} i
    kill -QUIT "$master" 2>/dev/null || true
    for (( i = 0; i < 100; i++ )); do
        kill -0 "$master" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$master" 2>/dev/null; then
        kill -TERM "$master" 2>/dev/null || true
        sleep 0.5
        kill -KILL "$master" 2>/dev/null || true
    fi
    wait "$master" 2>/dev/null || true
    if [ -n "$worker" ] && kill -0 "$worker" 2>/dev/null; then
        sleep 0.2
        kill -KILL "$worker" 2>/dev/null || true
    fi
}

bench_stop() {   # bench_stop <master>
    local i pair m w keep=()
    for pair in "${BENCH_PIDS[@]}"; do
        read -r m w <<<"$pair"
        if [ "$m" = "$1" ]; then
            bench_stop_pid_pair "$m" "$w"
        else
            keep+=("$pair")
        fi
    done
    BENCH_PIDS=("${keep[@]}")
}

bench_stop_all() {
    local pair m w
    for pair in "${BENCH_PIDS[@]}"; do
        read -r m w <<<"$pair"
        bench_stop_pid_pair "$m" "$w"
    done
    BENCH_PIDS=()
}

# Fails loudly on any error the gateway logged, except those of clients
# that went away: wrk closes its connections with requests in flight when
# a run ends (njs then logs "failed to send response").
BENCH_CLIENT_GONE='failed to send response|client prematurely closed|client closed (keepalive )?connection|\((32: Broken pipe|104: Connection reset by peer)\) while sending (response )?to client'

bench_check_log() {   # bench_check_log <prefix> <what>
    local log="$1/logs/error.log" bad gone
    [ -f "$log" ] || return 0
    bad=$(grep -E '\[(error|crit|alert|emerg)\]|buffered to a temporary file' "$log" \
          | grep -Ev "$BENCH_CLIENT_GONE" || true)
    if [ -n "$bad" ]; then
        printf '%s\n' "$bad" | head -5 >&2
        bdie "$2: errors in $log"
    fi
    gone=$(grep -Ec "$BENCH_CLIENT_GONE" "$log" || true)
    [ "$gone" -gt 0 ] && blog "$2: $gone requests in flight when wrk stopped (not errors)"
    return 0
}

# --- /proc ----------------------------------------------------------------

proc_status_kb() {   # proc_status_kb <pid> <VmRSS|VmHWM>
    local k v _
    while read -r k v _; do
        [ "$k" = "$2:" ] && { printf '%s\n' "$v"; return 0; }
    done <"/proc/$1/status"
    return 1
}

# Resets VmHWM to the current RSS (Linux >= 4.0).
proc_reset_hwm() {
    echo 5 >"/proc/$1/clear_refs" 2>/dev/null
}

# TICKS = utime + stime of a process, in clock ticks (no fork: the
# children's times of this shell stay those of the load generator)
proc_cpu_ticks() {
    local line
    read -r line <"/proc/$1/stat" || return 1
    line=${line##*) }
    # after the comm: state is $1, utime $12, stime $13
    # shellcheck disable=SC2086
    set -- $line
    TICKS=$(( ${12} + ${13} ))
}

# TICKS = children's utime + stime of this shell (waited-for children)
self_child_ticks() {
    local line
    read -r line <"/proc/$$/stat"
    line=${line##*) }
    # shellcheck disable=SC2086
    set -- $line
    TICKS=$(( ${14} + ${15} ))
}

CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

# BUSY = busy clock ticks of the whole machine, all CPUs (/proc/stat)
sys_busy_ticks() {
    local cpu user nice system idle iowait irq softirq steal _
    read -r cpu user nice system idle iowait irq softirq steal _ </proc/stat
    BUSY=$(( user + nice + system + irq + softirq + steal ))
}

# Waits up to $1 s for the machine to be quiet: less than $2 % of one CPU
# busy over a second.  QUIET_BUSY = the last second's busy %.
bench_wait_quiet() {
    local limit=$1 max=$2 b0 i
    for (( i = 0; i < limit; i++ )); do
        sys_busy_ticks; b0=$BUSY
        sleep 1
        sys_busy_ticks
        QUIET_BUSY=$(( (BUSY - b0) * 100 / CLK_TCK ))
        [ "$QUIET_BUSY" -lt "$max" ] && return 0
    done
    return 1
}


# --- configurations -------------------------------------------------------

bench_affinity() {   # the worker_cpu_affinity line for a CPU, if pinning
    [ "$PLACEMENT" = split ] || return 0
    local mask=1 i
    for (( i = 0; i < $1; i++ )); do mask="${mask}0"; done
    printf 'worker_cpu_affinity  %s;\n' "$mask"
}

bench_temp_paths() {
    cat <<EOF
    client_body_temp_path  tmp/body;
    proxy_temp_path        tmp/proxy;
    fastcgi_temp_path      tmp/fastcgi;
    uwsgi_temp_path        tmp/uwsgi;
    scgi_temp_path         tmp/scgi;
EOF
}

# The http{} settings every gateway under test shares: no access log,
# sendfile, the image types, nginx's temp paths in the prefix.
bench_http_base() {
    cat <<EOF
    access_log    off;
    sendfile      on;
    # nginx's default; "on" (TCP_CORK, Debian's nginx.conf) stalls
    # some 87 KB answers for 40 ms on loopback, whatever the path
    tcp_nopush    off;
    types {
        image/jpeg  jpg;
        image/png   png;
    }
    default_type  application/octet-stream;
$(bench_temp_paths)
EOF
}

# The mock Unico: static JSON files, keepalive, the token checked; /slow/
# sends the same files at $1 bytes/s per connection.
bench_write_upstream_conf() {
    local prefix="$BENCH_WORK/upstream" rate=$1
    mkdir -p "$prefix/conf" "$prefix/logs" "$prefix/tmp"
    cat >"$prefix/conf/nginx.conf" <<EOF
# mock Unico: GET /client/v1/process/<uuid>/selfie -> the JSON file
worker_processes  1;
$(bench_affinity "$LOAD_CPU")
daemon            off;
pid               logs/nginx.pid;
error_log         logs/error.log warn;

events {
    worker_connections  4096;
}

http {
    access_log    off;
    sendfile      on;
    # nginx's default; "on" (TCP_CORK, Debian's nginx.conf) stalls
    # some 87 KB answers for 40 ms on loopback, whatever the path
    tcp_nopush    off;
    types         { }
    default_type  application/json;
    etag          off;
$(bench_temp_paths)

    server {
        listen  127.0.0.1:$UP_PORT backlog=4096;
        root    $BENCH_WORK/data/json;

        if (\$http_authorization != "Bearer $TOKEN") {
            return 401;
        }

        # the fixture whose tag starts the processId
        location ~ "^/client/v1/process/(?<tag>[0-9a-f]{8})-[0-9a-f-]{27}/selfie\$" {
            try_files  /\$tag =404;
        }

        location ~ "^/slow/client/v1/process/(?<tag>[0-9a-f]{8})-[0-9a-f-]{27}/selfie\$" {
            try_files   /\$tag =404;
            limit_rate  $rate;
        }
    }
}
EOF
}

# What the peers' and proxy_json's internal locations set: the shipped
# include's directives, minus TLS, with the token written out.
bench_api_directives() {
    cat <<EOF
            proxy_pass_request_headers  off;
            proxy_pass_request_body     off;
            proxy_set_header            Authorization   "Bearer $TOKEN";
            proxy_set_header            Accept          application/json;
            proxy_set_header            Content-Length  "";
            proxy_http_version          1.1;
            proxy_set_header            Connection      "";
            proxy_max_temp_file_size    0;
EOF
}

# The internal API locations of a gateway: /_api/ (fast) and /_api_slow/
# (the mock's rate-limited copy), with "include unico_selfie_api.conf" for
# the module and the explicit equivalent for the others.
bench_api_locations() {
    local path=$1 body suffix
    if [ "$path" = module ] || [ "$path" = module_cache ]; then
        body="            include                     unico_selfie_api.conf;"
    else
        body=$(bench_api_directives)
    fi
    if [ "$path" = njs ] || [ "$path" = lua ]; then
        # njs (a background subrequest) and Lua (ngx.location.capture) make
        # subrequests that never become the connection's active request:
        # nginx's buffered proxy cannot pass their data on before the
        # answer is complete, so the whole JSON must fit in the proxy's
        # buffers, or go to a temporary file (forbidden here by
        # proxy_max_temp_file_size 0: the request would hang)
        body+=$'\n'"$PEER_API_EXTRA"
    fi
    for suffix in "" _slow; do
        cat <<EOF
        location /_api$suffix/ {
            internal;
$body
            # the njs peer reads the JSON with an in-memory subrequest:
            # the largest answer (1.8 MB) must fit (ignored by the others)
            subrequest_output_buffer_size  2m;
            proxy_pass  http://unico/${suffix:+slow/};
        }

EOF
    done
}

# the njs and Lua peers' API locations add this (see bench_api_locations);
# BENCH_PEER_API overrides it
PEER_API_EXTRA=${BENCH_PEER_API:-"            proxy_buffers               64 32k;"}

BENCH_UUID_RE='[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}'

bench_selfie_locations() {
    local path=$1 pfx api
    for pfx in "" /slow; do
        api=/_api${pfx:+_slow}
        case $path in
        static)
            cat <<EOF
        location ~ "^$pfx/selfies/(?<tag>[0-9a-f]{8})-[0-9a-f-]{27}\$" {
            root       $BENCH_WORK/data/static;
            try_files  /\$tag.jpg /\$tag.png =404;
        }

EOF
            ;;
        proxy_json)
            cat <<EOF
        location ~ ^$pfx/selfies/(?<unico_process>[^/]+)\$ {
$(bench_api_directives)
            proxy_pass  http://unico${pfx}/client/v1/process/\$unico_process/selfie;
        }

EOF
            ;;
        njs)
            cat <<EOF
        location ~ "^$pfx/selfies/(?<unico_process>$BENCH_UUID_RE)\$" {
            js_content  peer.selfie${pfx:+Slow};
        }

EOF
            ;;
        lua)
            cat <<EOF
        location ~ "^$pfx/selfies/(?<unico_process>$BENCH_UUID_RE)\$" {
            content_by_lua_block {
                require("unico_selfie_peer").serve("$api")
            }
        }

EOF
            ;;
        module|module_cache)
            cat <<EOF
        location ~ ^$pfx/selfies/(?<unico_process>[^/]+)\$ {
            unico_selfie           \$unico_process;
            unico_selfie_api       $api;
            unico_selfie_token     $TOKEN;
            unico_selfie_max_size  2m;
EOF
            if [ "$path" = module_cache ]; then
                sed 's/^/            /' "$BENCH_DIR/conf/module-cache-location.conf"
            fi
            printf '        }\n\n'
            ;;
        esac
    done
}

bench_load_modules() {
    case $1 in
    njs)
        echo "load_module  $NGX_MODULES/ngx_http_js_module.so;" ;;
    lua)
        # Debian's Lua module needs the NDK module loaded before it
        echo "load_module  $NGX_MODULES/ndk_http_module.so;"
        echo "load_module  $NGX_MODULES/ngx_http_lua_module.so;" ;;
    module|module_cache)
        echo "load_module  $MODULE_SO;" ;;
    esac
}

bench_http_extra() {
    case $1 in
    static)
        cat <<EOF
    open_file_cache        max=64 inactive=60s;
    open_file_cache_valid  60s;
EOF
        ;;
    njs)
        echo "    js_import  peer from $BENCH_DIR/peers/unico_selfie_peer.js;" ;;
    lua)
        cat <<EOF
    lua_package_path  "$BENCH_DIR/peers/?.lua;;";
    init_by_lua_block {
        require "unico_selfie_peer"
    }
EOF
        ;;
    module_cache)
        cat "$BENCH_DIR/conf/module-cache-http.conf" ;;
    esac
}

# bench_write_gateway_conf <path> [single]: "single" is for callgrind:
# master_process off, no pinning.
bench_write_gateway_conf() {
    local path=$1 mode=${2:-} prefix="$BENCH_WORK/gw-$1" head
    mkdir -p "$prefix/conf" "$prefix/logs" "$prefix/tmp"
    cp "$REPO/conf/unico_selfie_api.conf" "$prefix/conf/"
    if [ "$mode" = single ]; then
        head="master_process  off;"
    else
        head=$(bench_affinity "$GW_CPU")
    fi
    cat >"$prefix/conf/nginx.conf" <<EOF
# gateway under test: $path
$(bench_load_modules "$path")

worker_processes  1;
$head
daemon            off;
pid               logs/nginx.pid;
error_log         logs/error.log warn;

events {
    worker_connections  4096;
}

http {
$(bench_http_base)
$(bench_http_extra "$path")

    upstream unico {
        server     127.0.0.1:$UP_PORT;
        keepalive  32;
    }

    server {
        listen  127.0.0.1:$GW_PORT backlog=4096;

$(bench_selfie_locations "$path")
$(bench_api_locations "$path")
    }
}
EOF
}

# Is the selfie cache there?  nginx -t on a configuration that names the
# directive: "unknown directive" means not yet.
bench_cache_supported() {
    local prefix="$BENCH_WORK/probe" out
    mkdir -p "$prefix/conf" "$prefix/logs" "$prefix/tmp"
    cat >"$prefix/conf/nginx.conf" <<EOF
load_module  $MODULE_SO;
pid          logs/nginx.pid;
error_log    logs/error.log;
events { }
http {
$(bench_temp_paths)
    server {
        listen  127.0.0.1:$GW_PORT;
        location /x {
            unico_selfie_cache  on;
        }
    }
}
EOF
    out=$("$NGINX" -t -p "$prefix" -c conf/nginx.conf -e stderr 2>&1 || true)
    ! grep -q 'unknown directive "unico_selfie_cache"' <<<"$out"
}

bench_test_conf() {   # bench_test_conf <prefix> <what>
    local out
    out=$("$NGINX" -t -p "$1" -c conf/nginx.conf -e stderr 2>&1) \
        || { printf '%s\n' "$out" >&2; bdie "$2: nginx -t failed ($1/conf/nginx.conf)"; }
}


# --- checks ---------------------------------------------------------------

# bench_verify <url> <sha256> <bytes> <what>: one GET, status 200, exact
# body.
bench_verify() {
    local url=$1 sha=$2 len=$3 what=$4 out="$BENCH_WORK/raw/verify.body" code got
    code=$(curl -sS --max-time 20 -o "$out" -w '%{http_code}' "$url") \
        || bdie "$what: curl $url failed"
    [ "$code" = 200 ] || bdie "$what: $url answered $code, not 200"
    got=$(sha256sum <"$out" | cut -d' ' -f1)
    [ "$got" = "$sha" ] \
        || bdie "$what: body of $url is not byte-exact ($(stat -c %s "$out") bytes, sha256 $got; want $len bytes, $sha)"
}
