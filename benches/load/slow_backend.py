#!/usr/bin/env python3
"""A backend that answers every request after DELAY seconds (mirror_p99.sh's shadow).

Usage: slow_backend.py PORT DELAY

HTTP/1.1 keep-alive; reads each request's head and its Content-Length body,
waits DELAY seconds without blocking other connections, answers 200 with a
2-byte body. Each request is counted on arrival; the count is written to
stdout on SIGTERM, so the caller can see that the copies arrived.
"""

import asyncio
import signal
import sys

received = 0


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    global received
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            received += 1
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or 0)
            if length:
                await reader.readexactly(length)
            await asyncio.sleep(delay)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main() -> None:
    port, delay = int(sys.argv[1]), float(sys.argv[2])
    server = await asyncio.start_server(lambda r, w: serve(r, w, delay), "127.0.0.1", port, backlog=4096)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()
    print(f"received {received}", flush=True)


asyncio.run(main())
