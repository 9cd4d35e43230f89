"""A TCP proxy that makes loopback look like a network link: a bandwidth cap and added latency.

perf/run's lazy job puts it between lamina and docker-registry. Run as a program:

    netproxy.py --target 127.0.0.1:5000 --mbit 100 --rtt-ms 5

It listens on 127.0.0.1 (a free port unless --port), prints the port on stdout, then answers
each line on stdin: "count" gives "UP DOWN CONNECTIONS" (bytes it passed towards the target and
back, connections accepted), "quit" or end of input stops it. Python's standard library only.

The link: each direction is one token bucket shared by every connection (the cap applies to the
link, not to each connection, as a registry behind one line sees it). Every chunk is held half
the round trip before it is passed on, without holding up the chunks behind it, so the latency
does not cap a connection's throughput; a new connection waits one round trip more before its
first byte goes through, as a TCP handshake would.
"""

import argparse
import asyncio
import os
import sys

CHUNK = 64 * 1024
QUEUED_CHUNKS = 64  # per direction of a connection: what sits "on the wire" before reading stops


class TokenBucket:
    """At most `rate` bytes per second on average, in bursts of at most `burst` bytes."""

    def __init__(self, rate, burst):
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = None

    async def take(self, n):
        if self.rate <= 0:
            return
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if self.stamp is not None:
                self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= n:
                self.tokens -= n  # no await between the check and this: asyncio is one thread
                return
            await asyncio.sleep((n - self.tokens) / self.rate)


class Link:
    def __init__(self, target_host, target_port, rate, rtt):
        self.target = (target_host, target_port)
        self.rtt = rtt
        # 20 ms of the line, at least four chunks: a timer that fires late (a busy machine) must not
        # cost the line the time it overslept, which a bucket only a chunk deep would.
        burst = max(4 * CHUNK, int(rate * 0.02))
        self.buckets = {"up": TokenBucket(rate, burst), "down": TokenBucket(rate, burst)}
        self.bytes = {"up": 0, "down": 0}
        self.connections = 0

    async def serve(self, client_reader, client_writer):
        try:
            await self.connect(client_reader, client_writer)
        except asyncio.CancelledError:
            client_writer.close()  # the proxy is stopping

    async def connect(self, client_reader, client_writer):
        self.connections += 1
        try:
            await asyncio.sleep(self.rtt)  # the handshake's round trip
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(
                self.pump(client_reader, server_writer, "up"),
                self.pump(server_reader, client_writer, "down"),
            )
        finally:
            for w in (client_writer, server_writer):
                w.close()

    async def pump(self, reader, writer, direction):
        """Copies one direction: each chunk leaves half a round trip after it arrived and once
        the bucket allows; end of input is passed on as a half-close."""
        loop = asyncio.get_running_loop()
        queue = asyncio.Queue(QUEUED_CHUNKS)
        delay = self.rtt / 2
        bucket = self.buckets[direction]

        async def receive():
            while True:
                try:
                    data = await reader.read(CHUNK)
                except OSError:
                    data = b""
                await queue.put((loop.time() + delay, data))
                if not data:
                    return

        async def send():
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof() and not writer.is_closing():
                        writer.write_eof()
                    return
                await bucket.take(len(data))
                writer.write(data)
                self.bytes[direction] += len(data)
                await writer.drain()

        receiving = asyncio.ensure_future(receive())
        try:
            await send()
        except OSError:
            pass  # the other side went away: this direction is over
        finally:
            receiving.cancel()


def answer_commands(link, stop):
    """Reads command lines from stdin (called when it is readable)."""
    pending = bytearray()

    def on_readable():
        data = os.read(0, 4096)
        if not data:
            stop.set()
            return
        pending.extend(data)
        while b"\n" in pending:
            line, _, rest = bytes(pending).partition(b"\n")
            pending[:] = rest
            command = line.decode(errors="replace").strip()
            if command == "count":
                reply = f"{link.bytes['up']} {link.bytes['down']} {link.connections}\n"
            elif command == "quit":
                stop.set()
                return
            else:
                reply = f"error: unknown command {command!r}\n"
            os.write(1, reply.encode())

    return on_readable


async def main(args):
    host, _, port = args.target.rpartition(":")
    link = Link(host or "127.0.0.1", int(port), args.mbit * 1_000_000 / 8, args.rtt_ms / 1000)
    server = await asyncio.start_server(link.serve, "127.0.0.1", args.port)
    listening = server.sockets[0].getsockname()[1]
    os.write(1, f"{listening}\n".encode())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(0, answer_commands(link, stop))
    await stop.wait()
    server.close()


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="netproxy.py", description="TCP proxy with a bandwidth cap and added latency."
    )
    p.add_argument("--target", required=True, metavar="HOST:PORT", help="where to connect")
    p.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    p.add_argument(
        "--mbit", type=float, default=0, help="megabits per second each way (0: no cap)"
    )
    p.add_argument("--rtt-ms", type=float, default=0, help="added round-trip time, milliseconds")
    return p.parse_args(argv)


if __name__ == "__main__":
    try:
        asyncio.run(main(parse_args(sys.argv[1:])))
    except KeyboardInterrupt:
        pass
