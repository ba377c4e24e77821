"""A TCP proxy that adds a fixed delay to every request, standing in for the distance to AWS.

It runs in its own process (so its CPU is never counted as replayer's), listens on a
loopback port and forwards to the emulator. The delay is applied once per request:
when a client starts sending after the server last spoke (or on a new connection).

    python bench/latency_proxy.py --upstream 127.0.0.1:5000 --delay-ms 20 --port 0
prints the port it listens on, then serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: dict[str, str],
                direction: str, delay: float) -> None:  # fmt: skip
    try:
        while data := await reader.read(65536):
            if direction == "up" and state["last"] != "up" and delay:
                await asyncio.sleep(delay)  # a new request: one round trip's worth of distance
            state["last"] = direction
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def serve(upstream: str, delay: float, port: int) -> None:
    host, _, up_port = upstream.rpartition(":")

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(host, int(up_port))
        except OSError:
            client_w.close()
            return
        state = {"last": "down"}
        await asyncio.gather(
            _pipe(client_r, server_w, state, "up", delay),
            _pipe(server_r, client_w, state, "down", delay),
        )

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", required=True, help="host:port of the emulator")
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.upstream, args.delay_ms / 1000, args.port))
    sys.exit(0)


if __name__ == "__main__":
    main()
