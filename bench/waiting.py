#!/usr/bin/env python3
"""bench/waiting.sh's two helpers, Python 3 standard library only.

  waiting.py mock   --port P --json FILE --status FILE [--tail B] [--max-seconds S]
  waiting.py client --port P --prefix PATH --n N --sha256 HEX --size BYTES
                    --status FILE [--max-seconds S]

mock: a slow Unico on 127.0.0.1:P.  Every GET with "Authorization: Bearer
bench-token" gets the JSON of FILE (Content-Length, keepalive); without
it, 401.  How it answers depends on its mode, which SIGUSR1 advances:
  fast  (start)  the whole answer at once
  hold           nothing at all: the request waits, no byte of the answer
  body           the headers and the JSON but its last B bytes (--tail);
                 then it waits
  fast           everything still waiting is completed; new requests get
                 the whole answer again
Every 0.2 s it writes "mode received held partial done" to --status.

client: N connections to 127.0.0.1:P at once (connects 500 at a time),
one "GET <prefix><12 hex digits>" each (a different processId each),
Connection: close, and reads every answer whole: status 200, exactly
BYTES bytes, SHA-256 HEX.  Every 0.2 s it writes "connected sent done ok
bad" to --status; at the end one line "ok=N bad=M" on stdout, exit 0 only
if all N were good.

Both listen or connect on loopback only and exit after --max-seconds
whatever happens.
"""

import argparse
import asyncio
import hashlib
import os
import resource
import signal
import sys

TOKEN = b"Bearer bench-token"


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, n)
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return
        except (ValueError, OSError):
            want = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


async def write_status(path, fn, stop):
    while not stop.is_set():
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(fn() + "\n")
        os.replace(tmp, path)
        try:
            await asyncio.wait_for(stop.wait(), 0.2)
        except asyncio.TimeoutError:
            pass
    with open(path, "w") as f:
        f.write(fn() + "\n")


# --- mock --------------------------------------------------------------------

async def mock(args):
    body = open(args.json, "rb").read()
    tail = min(args.tail, len(body))
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: keep-alive\r\n\r\n" % len(body))
    deny = (b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n"
            b"Connection: keep-alive\r\n\r\n")
    first, last = head + body[:len(body) - tail], body[len(body) - tail:]

    modes = ["fast", "hold", "body"]
    st = {"mode": 0, "received": 0, "held": 0, "partial": 0, "done": 0}
    go_body = asyncio.Event()     # set: no holding
    go_tail = asyncio.Event()     # set: no stopping before the tail
    go_body.set()
    go_tail.set()
    stop = asyncio.Event()

    def advance():
        st["mode"] = (st["mode"] + 1) % 3
        m = modes[st["mode"]]
        if m == "hold":
            go_body.clear()
            go_tail.clear()
        elif m == "body":
            go_body.set()
        else:
            go_tail.set()

    # waits for the gate to open, counted in st[what] meanwhile
    async def hold(gate, what):
        if not gate.is_set():
            st[what] += 1
            await gate.wait()
            st[what] -= 1

    async def handle(reader, writer):
        try:
            while True:
                req = await reader.readuntil(b"\r\n\r\n")
                st["received"] += 1
                auth = b""
                for line in req.split(b"\r\n"):
                    if line.lower().startswith(b"authorization:"):
                        auth = line.split(b":", 1)[1].strip()
                if auth != TOKEN:
                    writer.write(deny)
                    await writer.drain()
                    continue
                await hold(go_body, "held")
                writer.write(first)
                await writer.drain()
                await hold(go_tail, "partial")
                writer.write(last)
                await writer.drain()
                st["done"] += 1
        except (asyncio.IncompleteReadError, ConnectionError,
                asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, advance)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = await asyncio.start_server(handle, "127.0.0.1", args.port,
                                        backlog=4096, reuse_address=True)
    status = asyncio.create_task(write_status(
        args.status,
        lambda: "%s %d %d %d %d" % (modes[st["mode"]], st["received"],
                                    st["held"], st["partial"], st["done"]),
        stop))
    try:
        await asyncio.wait_for(stop.wait(), args.max_seconds)
    except asyncio.TimeoutError:
        print("waiting.py mock: --max-seconds reached", file=sys.stderr)
    stop.set()
    server.close()
    await status


# --- client ------------------------------------------------------------------

async def client(args):
    st = {"connected": 0, "sent": 0, "done": 0, "ok": 0, "bad": 0}
    errors = {}
    gate = asyncio.Semaphore(500)
    stop = asyncio.Event()

    async def one(i):
        path = "%s%012x" % (args.prefix, i)
        try:
            async with gate:
                reader, writer = await asyncio.open_connection("127.0.0.1", args.port)
            st["connected"] += 1
            writer.write(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          "Connection: close\r\n\r\n" % path).encode())
            await writer.drain()
            st["sent"] += 1
            head = await reader.readuntil(b"\r\n\r\n")
            h = hashlib.sha256()
            n = 0
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                h.update(chunk)
                n += len(chunk)
            writer.close()
            code = head.split(b" ", 2)[1]
            if code == b"200" and n == args.size and h.hexdigest() == args.sha256:
                st["ok"] += 1
            else:
                st["bad"] += 1
                k = "status %s, %d bytes" % (code.decode(), n)
                errors[k] = errors.get(k, 0) + 1
        except Exception as e:  # noqa: BLE001 - counted and reported
            st["bad"] += 1
            k = type(e).__name__ + ": " + str(e)[:60]
            errors[k] = errors.get(k, 0) + 1
        finally:
            st["done"] += 1

    status = asyncio.create_task(write_status(
        args.status,
        lambda: "%d %d %d %d %d" % (st["connected"], st["sent"], st["done"],
                                    st["ok"], st["bad"]),
        stop))
    tasks = [asyncio.create_task(one(args.first + i)) for i in range(args.n)]
    done, pending = await asyncio.wait(tasks, timeout=args.max_seconds)
    for t in pending:
        t.cancel()
    stop.set()
    await status
    print("ok=%d bad=%d unfinished=%d" % (st["ok"], st["bad"], len(pending)))
    for k, v in sorted(errors.items(), key=lambda kv: -kv[1])[:5]:
        print("  %d x %s" % (v, k))
    return 0 if st["ok"] == args.n else 1


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mock")
    m.add_argument("--port", type=int, required=True)
    m.add_argument("--json", required=True)
    m.add_argument("--status", required=True)
    m.add_argument("--tail", type=int, default=64)
    m.add_argument("--max-seconds", type=float, default=180)
    c = sub.add_parser("client")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--prefix", required=True)
    c.add_argument("--n", type=int, required=True)
    c.add_argument("--first", type=int, default=0x10000)
    c.add_argument("--sha256", required=True)
    c.add_argument("--size", type=int, required=True)
    c.add_argument("--status", required=True)
    c.add_argument("--max-seconds", type=float, default=180)
    args = p.parse_args()
    raise_nofile(65536)
    if args.cmd == "mock":
        asyncio.run(mock(args))
        return 0
    return asyncio.run(client(args))


if __name__ == "__main__":
    sys.exit(main())
