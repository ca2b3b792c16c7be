-- wrk script for bench/run.sh.
--
-- With BENCH_PREFIX set (e.g. "/selfies/de50b727-0000-4000-8000-"), each
-- request asks for another processId: the prefix and a 12-hex-digit
-- number, cycling over a pool of 4096 per thread, the threads' pools
-- disjoint, so that no two requests in flight share a processId.  Without
-- it, every request is the URL of the command line.
--
-- When the run is done, prints one parseable line: latencies and duration
-- in microseconds.

local prefix = os.getenv("BENCH_PREFIX")
local POOL = 4096
local threads = 0
local pool = nil
local static = nil
local i = 0

function setup(thread)
    thread:set("tid", threads)
    threads = threads + 1
end

function init(args)
    if prefix ~= nil and prefix ~= "" then
        pool = {}
        for k = 1, POOL do
            pool[k] = wrk.format(nil, string.format("%s%012x", prefix,
                                                    (tid or 0) * POOL + k))
        end
    else
        static = wrk.format()
    end
end

function request()
    if pool == nil then
        return static
    end
    i = i % POOL + 1
    return pool[i]
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "BENCH requests=%d duration_us=%d bytes=%d p50_us=%d p90_us=%d "
        .. "p99_us=%d max_us=%d mean_us=%.0f err_connect=%d err_read=%d "
        .. "err_write=%d err_status=%d err_timeout=%d\n",
        summary.requests, summary.duration, summary.bytes,
        latency:percentile(50), latency:percentile(90),
        latency:percentile(99), latency.max, latency.mean,
        e.connect, e.read, e.write, e.status, e.timeout))
end
