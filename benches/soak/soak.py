#!/usr/bin/env python3
"""The soak run's backends and load, on 127.0.0.1 only (run.sh drives it).

  soak.py backend PORT NAME   an HTTP/1.1 backend: keep-alive, GET (small
                              bodies), POST (echoes the length of the body it
                              read), and WebSocket echo after an Upgrade
  soak.py load PROXY SECONDS  steady mixed load on the proxy; prints one JSON
                              line per failed request, and a summary at the end

Python's standard library only. The load is paced (a fixed number of
workers, each with a short pause between requests) so that a shared machine
stays usable.
"""
import asyncio
import base64
import hashlib
import json
import os
import random
import struct
import sys
import time

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MIB = 1024 * 1024


# ------------------------------------------------------------- backend --
async def read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return method, target, headers


async def backend_conn(reader, writer, name):
    try:
        while True:
            try:
                method, target, headers = await read_head(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if headers.get("upgrade", "").lower() == "websocket":
                accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + WS_GUID).digest())
                writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
                await writer.drain()
                while True:  # echo frames back, unmasked
                    b0, b1 = await reader.readexactly(2)
                    n = b1 & 0x7F
                    if n == 126:
                        n = struct.unpack(">H", await reader.readexactly(2))[0]
                    elif n == 127:
                        n = struct.unpack(">Q", await reader.readexactly(8))[0]
                    mask = await reader.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
                    data = bytes(c ^ mask[i % 4] for i, c in enumerate(await reader.readexactly(n)))
                    if b0 & 0x0F == 0x8:
                        writer.write(b"\x88\x00")
                        await writer.drain()
                        return
                    writer.write(bytes([b0, len(data)]) + data if len(data) < 126 else
                                 bytes([b0, 126]) + struct.pack(">H", len(data)) + data)
                    await writer.drain()
            length = int(headers.get("content-length", "0"))
            got = 0
            while got < length:
                chunk = await reader.read(min(65536, length - got))
                if not chunk:
                    return
                got += len(chunk)
            if target.startswith("/big"):
                body = b"x" * MIB
            else:
                body = f"{name} {method} {target} {got}\n".encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n" % len(body) + body)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def backend(port, name):
    server = await asyncio.start_server(lambda r, w: backend_conn(r, w, name), "127.0.0.1", port, reuse_address=True)
    async with server:
        await server.serve_forever()


# ---------------------------------------------------------------- load --
class Tally:
    def __init__(self):
        self.ok = {}
        self.failed = []

    def good(self, kind):
        self.ok[kind] = self.ok.get(kind, 0) + 1

    def bad(self, kind, cause, retryable):
        # A failure a retry rule should have saved: a GET (idempotent, no
        # body) that never got an answer, or got a 502/503 from the proxy.
        rec = {"t": round(time.time(), 3), "kind": kind, "cause": cause, "should_have_been_saved": retryable}
        self.failed.append(rec)
        print(json.dumps(rec), flush=True)


async def http_exchange(reader, writer, request, expect_len=None):
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length)
    close = b"connection: close" in head.lower()
    return status, body, close


def get_req(path, close=False):
    return (f"GET {path} HTTP/1.1\r\nHost: soak\r\n" + ("Connection: close\r\n" if close else "") + "\r\n").encode()


async def keepalive_gets(port, end, tally, pause):
    conn = None
    while time.time() < end:
        kind = "get-keepalive"
        try:
            if conn is None:
                conn = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
            path = "/big" if random.random() < 0.05 else "/small"
            status, body, close = await asyncio.wait_for(http_exchange(*conn, get_req(path)), 10)
            if status != 200:
                tally.bad(kind, f"status {status}: {body[:80]!r}", True)
            elif path == "/big" and len(body) != MIB:
                tally.bad(kind, f"short 1 MiB body: {len(body)}", True)
            else:
                tally.good(kind)
            if close:
                conn[1].close()
                conn = None
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError, OSError) as e:
            # A keep-alive connection the proxy closed between requests (a
            # reload, idle timeout) is normal: a client opens a new one. A
            # failure with the request in flight is not.
            tally.bad(kind, f"{type(e).__name__}: {e}", True)
            if conn:
                conn[1].close()
            conn = None
        await asyncio.sleep(pause)


async def new_conn_gets(port, end, tally, pause):
    while time.time() < end:
        kind = "get-newconn"
        try:
            conn = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
            status, body, _ = await asyncio.wait_for(http_exchange(*conn, get_req("/new", close=True)), 10)
            conn[1].close()
            if status != 200:
                tally.bad(kind, f"status {status}: {body[:80]!r}", True)
            else:
                tally.good(kind)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError, OSError) as e:
            tally.bad(kind, f"{type(e).__name__}: {e}", True)
        await asyncio.sleep(pause)


async def big_posts(port, end, tally, pause):
    payload = os.urandom(MIB)
    while time.time() < end:
        kind = "post-1mib"
        try:
            conn = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
            req = b"POST /upload HTTP/1.1\r\nHost: soak\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % MIB + payload
            status, body, _ = await asyncio.wait_for(http_exchange(*conn, req), 20)
            conn[1].close()
            if status != 200 or not body.rstrip().endswith(str(MIB).encode()):
                # A POST is never sent again: one in flight to a killed
                # backend fails by design.
                tally.bad(kind, f"status {status}: {body[:80]!r}", False)
            else:
                tally.good(kind)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError, OSError) as e:
            tally.bad(kind, f"{type(e).__name__}: {e}", False)
        await asyncio.sleep(pause)


async def websockets(port, end, tally, pause):
    while time.time() < end:
        kind = "websocket"
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
            key = base64.b64encode(os.urandom(16))
            writer.write(b"GET /ws HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if b" 101 " not in head.split(b"\r\n")[0]:
                tally.bad(kind, f"no upgrade: {head[:60]!r}", False)
                writer.close()
                await asyncio.sleep(pause)
                continue
            for i in range(5):
                msg = f"ping {i}".encode()
                mask = os.urandom(4)
                writer.write(bytes([0x81, 0x80 | len(msg)]) + mask + bytes(c ^ mask[j % 4] for j, c in enumerate(msg)))
                await writer.drain()
                b0, b1 = await asyncio.wait_for(reader.readexactly(2), 10)
                echo = await asyncio.wait_for(reader.readexactly(b1 & 0x7F), 10)
                if echo != msg:
                    raise ConnectionError(f"echo {echo!r} != {msg!r}")
                await asyncio.sleep(0.2)
            writer.write(b"\x88\x80" + os.urandom(4))
            await writer.drain()
            writer.close()
            tally.good(kind)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError, OSError) as e:
            # A tunnel to a killed backend breaks by design.
            tally.bad(kind, f"{type(e).__name__}: {e}", False)
        await asyncio.sleep(pause)


async def h2c(port, end, tally, pause):
    # nghttp (nghttp2's client) sends the streams at once on one connection;
    # curl 7.88 fails every request after the first on a reused h2c connection.
    urls = [f"http://127.0.0.1:{port}/h2/{i}" for i in range(4)]
    while time.time() < end:
        kind = "h2c"
        proc = await asyncio.create_subprocess_exec(
            "nghttp", "-n", "-s", "-t", "10", *urls, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        codes = [line.split()[4] for line in out.decode().splitlines()
                 if len(line.split()) >= 6 and line.split()[0].isdigit() and line.split()[-1].startswith("/h2/")]
        for code in codes:
            if code == "200":
                tally.good(kind)
            else:
                tally.bad(kind, f"status {code}", True)
        if proc.returncode != 0 or len(codes) != len(urls):
            tally.bad(kind, f"nghttp exit {proc.returncode}, {len(codes)} of {len(urls)} answered: {err.decode().strip()[:120]}", True)
        await asyncio.sleep(pause)


async def load(port, seconds):
    end = time.time() + seconds
    tally = Tally()
    tasks = [keepalive_gets(port, end, tally, 0.02) for _ in range(4)]
    tasks += [new_conn_gets(port, end, tally, 0.05) for _ in range(2)]
    tasks += [big_posts(port, end, tally, 0.5)]
    tasks += [websockets(port, end, tally, 0.2) for _ in range(2)]
    tasks += [h2c(port, end, tally, 0.5)]
    await asyncio.gather(*tasks)
    saved = [f for f in tally.failed if f["should_have_been_saved"]]
    print(json.dumps({"summary": True, "ok": tally.ok, "failed": len(tally.failed),
                      "failed_should_have_been_saved": len(saved)}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "backend":
        asyncio.run(backend(int(sys.argv[2]), sys.argv[3]))
    elif sys.argv[1] == "load":
        asyncio.run(load(int(sys.argv[2]), float(sys.argv[3])))
    else:
        sys.exit(__doc__)
