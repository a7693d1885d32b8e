#!/usr/bin/python3
"""Awaited puts from Python, side by side in one run: a loop of
`await q.put(item)` on asyncq's Python client against a loop of awaited
`XADD` on redis-py's asyncio client (Debian: python3-redis, redis-server),
each server started here on a free port of 127.0.0.1. The systems take
turns run by run; the median of the runs is printed. Each put returns only
once the server holds the item: asyncq's SYNCED, Redis's reply.

A third line is the floor under any Python client of libzmq: awaited
round trips of 64 bytes from a bare pyzmq DEALER (read from the event
loop as asyncq's client reads, nothing of asyncq) to a libzmq echo that does
no work at all (zmq_proxy of a ROUTER onto itself, in C). An asyncq put
pays that round trip and the broker's and the client's work on top.

    bench/python_puts.py [--broker-bin build/bin] [--count 5000] [--runs 5]
"""
import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "clients", "python"))

import asyncq  # noqa: E402


def free_port(pair=False):
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if not pair or port < 65000:
            return port


async def asyncq_puts(address, count, payload, run):
    async with asyncq.Queue(address, f"bench-puts-{run}") as q:
        await q.put(payload)  # connected
        started = time.perf_counter()
        for _ in range(count):
            await q.put(payload)
        return count / (time.perf_counter() - started)


ECHO = """
import sys, zmq
socket = zmq.Context().socket(zmq.ROUTER)
socket.bind("tcp://127.0.0.1:0")
print(socket.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
zmq.proxy(socket, socket)  # in libzmq: each message back to its sender
"""


async def pyzmq_round_trips(endpoint, count, payload):
    import zmq
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.connect(endpoint)
    loop = asyncio.get_running_loop()
    waiting = []

    def ready():
        while socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            socket.recv(zmq.NOBLOCK)
            waiting.pop().set_result(None)

    loop.add_reader(socket.getsockopt(zmq.FD), ready)

    async def round_trip():
        waiter = loop.create_future()
        waiting.append(waiter)
        socket.send(payload, zmq.NOBLOCK)
        ready()  # a send can take the descriptor's edge
        await waiter

    try:
        await round_trip()  # connected
        started = time.perf_counter()
        for _ in range(count):
            await round_trip()
        return count / (time.perf_counter() - started)
    finally:
        loop.remove_reader(socket.getsockopt(zmq.FD))
        socket.close(linger=0)


async def redis_xadds(port, count, payload):
    import redis.asyncio
    client = redis.asyncio.Redis(port=port)
    await client.xadd("bench-puts", {"d": payload})
    started = time.perf_counter()
    for _ in range(count):
        await client.xadd("bench-puts", {"d": payload})
    rate = count / (time.perf_counter() - started)
    await client.delete("bench-puts")
    await (client.aclose() if hasattr(client, "aclose") else client.close())
    return rate


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker-bin", default=os.path.join(HERE, "..", "build", "bin"))
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    payload = b"x" * args.size
    port, redis_port = free_port(pair=True), free_port()
    broker = subprocess.Popen([os.path.join(args.broker_bin, "asyncq-broker"), "--bind",
                               f"127.0.0.1:{port}"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    redis_dir = tempfile.mkdtemp(prefix="asyncq-bench-redis-")
    server = subprocess.Popen(["redis-server", "--port", str(redis_port), "--save", "",
                               "--appendonly", "no", "--dir", redis_dir],
                              stdout=subprocess.DEVNULL)
    echo = subprocess.Popen([sys.executable, "-c", ECHO], stdout=subprocess.PIPE, text=True)
    try:
        echo_endpoint = echo.stdout.readline().strip()
        address = broker.stdout.readline().split()[1]
        deadline = time.monotonic() + 10
        while True:  # redis-server accepts once it has loaded
            try:
                socket.create_connection(("127.0.0.1", redis_port)).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        floor = "pyzmq round trip (floor)"
        rates = {"asyncq await q.put()": [], "redis-py await xadd()": [], floor: []}
        for run in range(args.runs):
            rates["asyncq await q.put()"].append(
                asyncio.run(asyncq_puts(address, args.count, payload, run)))
            rates["redis-py await xadd()"].append(
                asyncio.run(redis_xadds(redis_port, args.count, payload)))
            rates[floor].append(asyncio.run(pyzmq_round_trips(echo_endpoint, args.count,
                                                              payload)))
        print(f"{args.count} awaited puts of {args.size} bytes, median of {args.runs} runs "
              f"(systems taking turns):")
        for name, values in rates.items():
            print(f"  {name:24} {statistics.median(values):8.0f}/s   "
                  f"(runs: {', '.join(f'{v:.0f}' for v in values)})")
    finally:
        for process in (broker, server, echo):
            process.kill()
            process.wait()


if __name__ == "__main__":
    main()
