#!/usr/bin/env bash
# ngx_unico_selfie_module: 10,000 requests waiting on a slow Unico.
#
#   bench/waiting.sh [--n N] [--fixture 360x480] [--probe S] [--tsv FILE] [--keep]
#
# One gateway worker (the module, no cache), N concurrent GET /selfies/<id>
# (a different processId each: no coalescing) against a mock Unico that
# answers when told (bench/waiting.py mock, on loopback):
#   idle      a plain location (return 200) measured with wrk for S s
#   phase 1   the mock holds every call, no byte of its answer sent: the
#             worker's RSS once all N calls have reached the mock, and the
#             plain location measured again, the same way, meanwhile
#   phase 2   the mock sends the headers and all of each JSON but its last
#             64 bytes, then holds again: the RSS with the JSON in flight,
#             and the plain location again
#   release   the mock completes every answer: all N checked byte-exact
#             (status, length, SHA-256), then the plain location idle again
# Prints a Markdown section; --tsv FILE also writes key<TAB>value lines
# (bench/run.sh reads them for its goals table).  Ports
# BENCH_WAIT_PORT (18490: gateway) and the next one (the mock); everything
# on 127.0.0.1, every process it starts stopped at the end (a watchdog
# ends it after 240 s).  Raises its own open-file limit (ulimit -n) and
# the gateway's (worker_rlimit_nofile, worker_connections); as root it
# installs what is missing from Debian's packages.

set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

N=10000
FIXTURE=360x480
PROBE=5
TSV=""
PY=/usr/bin/python3
WGW_PORT=${BENCH_WAIT_PORT:-18490}
WUP_PORT=$(( WGW_PORT + 1 ))
TAIL=64

while [ $# -gt 0 ]; do
    case $1 in
    --n)        N=${2:?}; shift ;;
    --fixture)  FIXTURE=${2:?}; shift ;;
    --probe)    PROBE=${2:?}; shift ;;
    --tsv)      TSV=${2:?}; shift ;;
    --keep)     BENCH_KEEP=1 ;;
    -h|--help)  sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    *)          blog "unknown option $1"; exit 2 ;;
    esac
    shift
done
[[ $N =~ ^[1-9][0-9]*$ ]] || bdie "--n wants a number"
[[ $PROBE =~ ^[1-9][0-9]*$ ]] || bdie "--probe wants whole seconds"

# the gateway needs 2 descriptors per waiting request (client, Unico),
# the mock and the client 1 each.  Where the hard limit cannot be raised
# (a container without CAP_SYS_RESOURCE), N is lowered to what fits, and
# the report says so.
N_ASKED=$N
NOFILE=$(( 2 * N + 200 ))
HARD=$(ulimit -Hn)
if [ "$HARD" != unlimited ] && [ "$HARD" -lt "$NOFILE" ]; then
    if ! ulimit -Hn "$NOFILE" 2>/dev/null; then
        N=$(( (HARD - 200) / 2 ))
        NOFILE=$HARD
        blog "waiting: the open-file hard limit is $HARD and cannot be raised here: $N requests instead of $N_ASKED"
    fi
fi
ulimit -n "$NOFILE" || bdie "cannot raise the open-file limit to $NOFILE"
[ "$N" -ge 1000 ] || bdie "waiting: an open-file limit of $HARD leaves room for $N requests only"
N_NOTE=""
[ "$N" = "$N_ASKED" ] || N_NOTE=" ($N, not $N_ASKED: the open-file hard limit here is $HARD and cannot be raised without CAP_SYS_RESOURCE; the gateway needs two descriptors per waiting request)"

bench_ensure_packages nginx curl procps wrk python3
bench_ensure_module
bench_init
bench_snapshot_module
bench_watchdog 240
bench_make_data
fx "$FIXTURE"
RAW="$BENCH_WORK/raw"
WDIR="$BENCH_WORK/waiting"
mkdir -p "$WDIR"

LOAD_PIN=("${NICE[@]}")
[ "$PLACEMENT" = split ] && LOAD_PIN+=(taskset -c "$LOAD_CPU")

MOCK_PID=""
CLIENT_PID=""
waiting_cleanup() {
    local rc=$? p
    set +e
    for p in $CLIENT_PID $MOCK_PID; do
        kill -TERM "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    (exit "$rc")
    bench_cleanup
}
trap waiting_cleanup EXIT

# --- the mock Unico -----------------------------------------------------------

bench_port_free "$WUP_PORT" || bdie "127.0.0.1:$WUP_PORT is in use (BENCH_WAIT_PORT)"
"${LOAD_PIN[@]}" "$PY" "$BENCH_DIR/waiting.py" mock --port "$WUP_PORT" \
    --json "$FX_JSON" --status "$WDIR/mock.status" --tail "$TAIL" --max-seconds 230 \
    </dev/null >"$WDIR/mock.log" 2>&1 &
MOCK_PID=$!
bench_wait_port "$WUP_PORT" 20 "$MOCK_PID" || { cat "$WDIR/mock.log" >&2; bdie "the mock did not start"; }

mock_field() {   # mode received held partial done -> $1-th
    local s
    s=$(cat "$WDIR/mock.status" 2>/dev/null) || { echo 0; return; }
    awk -v i="$1" '{ print $i }' <<<"$s"
}
mock_next() { kill -USR1 "$MOCK_PID"; sleep 0.3; }

# --- the gateway ----------------------------------------------------------------

prefix="$BENCH_WORK/gw-waiting"
mkdir -p "$prefix/conf" "$prefix/logs" "$prefix/tmp"
cp "$REPO/conf/unico_selfie_api.conf" "$prefix/conf/"
cat >"$prefix/conf/nginx.conf" <<EOF
# bench/waiting.sh: the gateway, the module without cache
load_module  $MODULE_SO;

worker_processes      1;
$(bench_affinity "$GW_CPU")
worker_rlimit_nofile  $NOFILE;
daemon                off;
pid                   logs/nginx.pid;
error_log             logs/error.log warn;

events {
    # nginx needs more connection slots than descriptors here: closed
    # connections wait in its posted queues before their slot is free
    worker_connections  $(( NOFILE + 4000 ));
}

http {
$(bench_http_base)

    upstream unico {
        server     127.0.0.1:$WUP_PORT;
        keepalive  32;
    }

    server {
        listen  127.0.0.1:$WGW_PORT backlog=4096;

        # what a gateway serves besides selfies, measured while they wait
        location = /plain {
            return  200 "ok\n";
        }

        location ~ ^/selfies/(?<unico_process>[^/]+)\$ {
            unico_selfie           \$unico_process;
            unico_selfie_api       /_api;
            unico_selfie_token     $TOKEN;
            unico_selfie_max_size  2m;
        }

        location /_api/ {
            internal;
            include     unico_selfie_api.conf;
            # Unico is slow on purpose here: the phases take well under this
            proxy_read_timeout  120s;
            proxy_pass  http://unico/;
        }
    }
}
EOF
bench_test_conf "$prefix" "waiting gateway"
bench_start_nginx "$prefix" "$WGW_PORT"
GW_MASTER=$NGX_MASTER
GW_WORKER=$NGX_WORKER

base_url="http://127.0.0.1:$WGW_PORT"
bench_verify "$base_url/selfies/$FX_ID" "$FX_SHA" "$FX_SIZE" "waiting: the module"
[ "$(curl -sS --max-time 5 "$base_url/plain")" = ok ] || bdie "waiting: /plain does not answer"
for (( i = 0; i < 50; i++ )); do
    printf 'url = "%s/selfies/%s"\noutput = "/dev/null"\n' "$base_url" "$(bench_id "$FX_TAG" $(( 500000 + i )))"
done >"$WDIR/warm.cfg"
curl -sS --max-time 60 -K "$WDIR/warm.cfg" || bdie "waiting: warm-up failed"

# probe <name>: wrk, 1 thread, 4 connections, PROBE s on /plain; sets
# P50 P99 (ms) OTHER (% of a CPU used by processes other than the
# gateway worker, wrk, the mock and the client)
probe() {
    local out="$WDIR/probe-$1" g0 g1 c0 c1 m0 m1 k0 k1 s0 s1
    proc_cpu_ticks "$GW_WORKER"; g0=$TICKS
    proc_cpu_ticks "$MOCK_PID"; m0=$TICKS
    k0=0; [ -n "$CLIENT_PID" ] && proc_cpu_ticks "$CLIENT_PID" && k0=$TICKS
    self_child_ticks; c0=$TICKS
    sys_busy_ticks; s0=$BUSY
    "${LOAD_PIN[@]}" wrk -t1 -c4 -d"${PROBE}s" --timeout 10s \
        -s "$BENCH_DIR/wrk/report.lua" "$base_url/plain" >"$out" 2>&1 &
    BENCH_CHILD=$!
    wait "$BENCH_CHILD" || { BENCH_CHILD=""; cat "$out" >&2; bdie "waiting: wrk failed ($1)"; }
    BENCH_CHILD=""
    sys_busy_ticks; s1=$BUSY
    self_child_ticks; c1=$TICKS
    k1=0; [ -n "$CLIENT_PID" ] && proc_cpu_ticks "$CLIENT_PID" && k1=$TICKS
    proc_cpu_ticks "$MOCK_PID"; m1=$TICKS
    proc_cpu_ticks "$GW_WORKER"; g1=$TICKS
    grep -q '^BENCH ' "$out" || { cat "$out" >&2; bdie "waiting: no result from wrk ($1)"; }
    local f
    for f in err_connect err_read err_write err_status err_timeout; do
        grep -q " $f=0" "$out" || { cat "$out" >&2; bdie "waiting: wrk counted $f ($1)"; }
    done
    P50=$(sed -n 's/.* p50_us=\([0-9]*\).*/\1/p' "$out" | awk '{ printf "%.3f", $1 / 1000 }')
    P99=$(sed -n 's/.* p99_us=\([0-9]*\).*/\1/p' "$out" | awk '{ printf "%.3f", $1 / 1000 }')
    RPS=$(awk '/^BENCH / { for (i = 2; i <= NF; i++) { split($i, a, "="); v[a[1]] = a[2] }
                          printf "%.0f", v["requests"] / (v["duration_us"] / 1e6) }' "$out")
    OTHER=$(( ((s1 - s0) - (g1 - g0) - (c1 - c0) - (m1 - m0) - (k1 - k0)) * 100 / CLK_TCK / PROBE ))
    [ "$OTHER" -lt 0 ] && OTHER=0
    blog "waiting: /plain $1: $RPS req/s, p50 $P50 ms, p99 $P99 ms (others: $OTHER% of a CPU)"
}

rss() { proc_status_kb "$GW_WORKER" VmRSS; }

# wait_for <seconds> <what> <command...>: polls every 0.2 s
wait_for() {
    local secs=$1 lim=$(( $1 * 5 )) what=$2 i
    shift 2
    for (( i = 0; i < lim; i++ )); do
        "$@" && return 0
        [ -z "$CLIENT_PID" ] || kill -0 "$CLIENT_PID" 2>/dev/null \
            || { cat "$WDIR/client.log" >&2; bdie "waiting: the client ended early ($what)"; }
        sleep 0.2
    done
    bdie "waiting: $what: not within $secs s (mock: $(cat "$WDIR/mock.status"); client: $(cat "$WDIR/client.status" 2>/dev/null))"
}

# --- idle -------------------------------------------------------------------------

T0=$SECONDS
sleep 0.5
probe idle
I_P50=$P50 I_P99=$P99 I_OTHER=$OTHER
sleep 0.5
BASE=$(rss)

# --- phase 1: N requests waiting, nothing received yet ----------------------------

mock_next   # -> hold
[ "$(mock_field 1)" = hold ] || bdie "waiting: the mock is not holding"
"${LOAD_PIN[@]}" "$PY" "$BENCH_DIR/waiting.py" client --port "$WGW_PORT" \
    --prefix "/selfies/$FX_TAG-0000-4000-8000-" --n "$N" \
    --sha256 "$FX_SHA" --size "$FX_SIZE" --status "$WDIR/client.status" \
    --max-seconds 200 </dev/null >"$WDIR/client.log" 2>&1 &
CLIENT_PID=$!
t1=$SECONDS
all_held() { [ "$(mock_field 3)" -ge "$N" ]; }
wait_for 45 "all $N calls held at the mock" all_held
T_ARRIVE=$(( SECONDS - t1 ))
sleep 1
WAIT_RSS=$(rss)
WAIT_FDS=$(ls "/proc/$GW_WORKER/fd" | wc -l)
blog "waiting: $N requests held; the worker has $WAIT_FDS descriptors open, RSS $WAIT_RSS KB"
probe waiting
W_P50=$P50 W_P99=$P99 W_OTHER=$OTHER
r=$(rss); [ "$r" -gt "$WAIT_RSS" ] && WAIT_RSS=$r
[ "$(mock_field 3)" -ge "$N" ] || bdie "waiting: calls left the mock while it held them"

# --- phase 2: the JSON arrives, all but its last bytes ------------------------------

mock_next   # -> body
all_partial() { [ "$(mock_field 4)" -ge "$N" ]; }
wait_for 30 "all $N JSON bodies sent but their last $TAIL bytes" all_partial
# the gateway reads what is in its sockets: RSS until it stops growing
# (2 s without growing by more than 0.5%, 20 s at most)
BODY_RSS=$(rss)
stable=0
for (( i = 0; i < 80 && stable < 8; i++ )); do
    sleep 0.25
    r=$(rss)
    if [ "$r" -gt $(( BODY_RSS + BODY_RSS / 200 )) ]; then stable=0; else stable=$(( stable + 1 )); fi
    [ "$r" -gt "$BODY_RSS" ] && BODY_RSS=$r
done
probe body
B_P50=$P50 B_P99=$P99 B_OTHER=$OTHER
r=$(rss); [ "$r" -gt "$BODY_RSS" ] && BODY_RSS=$r

# --- release ----------------------------------------------------------------------------

mock_next   # -> fast: every answer completed
wait "$CLIENT_PID" || { cat "$WDIR/client.log" >&2; CLIENT_PID=""; bdie "waiting: not every answer was byte-exact"; }
CLIENT_PID=""
blog "waiting: client: $(head -1 "$WDIR/client.log")"
T_ALL=$(( SECONDS - T0 ))
sleep 0.5
AFTER_RSS=$(rss)
probe after
A_P50=$P50 A_P99=$P99 A_OTHER=$OTHER

bench_stop "$GW_MASTER"
bench_check_log "$prefix" "waiting"
kill -TERM "$MOCK_PID" 2>/dev/null; wait "$MOCK_PID" 2>/dev/null || true
MOCK_PID=""

# --- report -----------------------------------------------------------------------------

LABEL="$(basename "$FX_FILE") ($(( (FX_SIZE + 512) / 1024 )) KB)"
HELD_PCT=$(awk -v j="$FX_JSON_SIZE" -v t="$TAIL" 'BEGIN { printf "%.1f", 100 * (j - t) / j }')
vals=$(awk -v n="$N" -v base="$BASE" -v w="$WAIT_RSS" -v b="$BODY_RSS" -v img="$FX_SIZE" \
           -v ip="$I_P99" -v wp="$W_P99" -v bp="$B_P99" 'BEGIN {
    wait_kb = (w - base) / n
    body_kb = (b - base) / n
    printf "%.2f %.2f %.3f %.3f %.2f %.2f\n", wait_kb, body_kb, body_kb * 1024 / img,
        (b - w) * 1024 / n / img, wp / ip, bp / ip }')
read -r WAIT_KB BODY_KB BODY_RATIO DELTA_RATIO P99_RATIO B99_RATIO <<<"$vals"
NOISY="idle $I_OTHER%, waiting $W_OTHER% of a CPU used by others"

if [ -n "$TSV" ]; then
    {
        printf 'fixture_label\t%s\n' "$LABEL"
        printf 'image\t%s\njson\t%s\nn\t%s\nn_asked\t%s\n' "$FX_SIZE" "$FX_JSON_SIZE" "$N" "$N_ASKED"
        printf 'base_kb\t%s\nwait_rss_kb\t%s\nbody_rss_kb\t%s\n' "$BASE" "$WAIT_RSS" "$BODY_RSS"
        printf 'wait_kb\t%s\nbody_kb\t%s\nbody_ratio\t%s\nheld_pct\t%s\n' "$WAIT_KB" "$BODY_KB" "$BODY_RATIO" "$HELD_PCT"
        printf 'idle_p50\t%s\nidle_p99\t%s\nwait_p50\t%s\nwait_p99\t%s\n' "$I_P50" "$I_P99" "$W_P50" "$W_P99"
        printf 'body_p50\t%s\nbody_p99\t%s\nafter_p50\t%s\nafter_p99\t%s\n' "$B_P50" "$B_P99" "$A_P50" "$A_P99"
        printf 'p99_ratio\t%s\nnoisy\t%s\n' "$P99_RATIO" "$NOISY"
    } >"$TSV"
fi

cat <<EOF
## $N requests waiting on a slow Unico$N_NOTE

\`bench/waiting.sh\`: one gateway worker (the module, no cache; \`worker_connections $(( 2 * N + 100 ))\`, \`worker_rlimit_nofile $NOFILE\`), $N concurrent GET /selfies/<id> for $LABEL (JSON $FX_JSON_SIZE B), a different processId each, one connection each, against a mock Unico (\`bench/waiting.py mock\`, loopback) that first holds every call without sending a byte, then sends the headers and all of each JSON but its last $TAIL bytes ($HELD_PCT% in) and holds again, then completes them; all $N answers checked byte-exact. All $N calls reached the mock ${T_ARRIVE} s after the first connection; the whole sequence took ${T_ALL} s. RSS is the gateway worker's VmRSS; per request = (RSS - idle RSS) / $N.

| state of the $N requests | worker RSS MB | per request KB | ÷ image |
|---|--:|--:|--:|
| idle, before (after 50 warm-up requests) | $(awk -v v="$BASE" 'BEGIN { printf "%.1f", v / 1024 }') | | |
| waiting: client connection, request, subrequest and Unico connection open; no byte of the answer yet | $(awk -v v="$WAIT_RSS" 'BEGIN { printf "%.1f", v / 1024 }') | $WAIT_KB | $(awk -v v="$WAIT_KB" -v i="$FX_SIZE" 'BEGIN { printf "%.3f", v * 1024 / i }') |
| the JSON arriving: headers and $HELD_PCT% of the body received | $(awk -v v="$BODY_RSS" 'BEGIN { printf "%.1f", v / 1024 }') | $BODY_KB | $BODY_RATIO |
| after: all answered | $(awk -v v="$AFTER_RSS" 'BEGIN { printf "%.1f", v / 1024 }') | | |

The JSON arriving adds $(awk -v v="$DELTA_RATIO" 'BEGIN { printf "%.2f", v }')× the image per request to the waiting cost.

A plain location (\`return 200\`) on the same worker, wrk 1 thread, 4 connections, $PROBE s each time:

| when | p50 ms | p99 ms | others' CPU % |
|---|--:|--:|--:|
| idle, before | $I_P50 | $I_P99 | $I_OTHER |
| $N requests waiting (no bytes) | $W_P50 | $W_P99 | $W_OTHER |
| $N requests, JSON in flight | $B_P50 | $B_P99 | $B_OTHER |
| idle, after | $A_P50 | $A_P99 | $A_OTHER |

p99 while waiting ÷ idle before: $P99_RATIO; with the JSON in flight: $B99_RATIO.
EOF
blog "waiting: done in $(( SECONDS - T0 )) s"
