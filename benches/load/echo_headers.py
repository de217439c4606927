#!/usr/bin/env python3
"""A one-purpose HTTP/1.1 backend: answers every request with its own head.

Usage: echo_headers.py PORT

run.sh starts it on the backend's port before the real backend, sends one
request through each proxy (HTTP/1.1 and h2c) and records what the backend
saw, so the forwarding headers of every proxy can be compared: the same
headers, or the comparison is not like for like. Keep-alive, one thread,
loopback only; it runs until killed.
"""
import asyncio
import sys


async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or b"0")
            if length:
                await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n" % len(head) + head)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()


asyncio.run(main())
