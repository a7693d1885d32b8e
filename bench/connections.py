#!/usr/bin/env python3
"""What idle connections cost the broker: opens N sessions (DEALERs that say
HELLO, then stay silent), then times put -> get -> ack round trips through
the same broker, and prints percentiles. A benchmark, not a test.

    /usr/bin/python3 bench/connections.py [--connections 10000] [--rounds 500]

Starts build/bin/asyncq-broker (or $ASYNCQ_BIN_DIR/asyncq-broker) on a free
loopback port. Needs pyzmq (Debian's python3-zmq); the idle clients are
spread over child processes of 4000 each (each ZeroMQ socket takes two file
descriptors).
"""
import argparse
import os
import resource
import struct
import subprocess
import time

import zmq

SIG = b"asyncq/2"


def start_broker(connections):
    bin_dir = os.environ.get("ASYNCQ_BIN_DIR",
                             os.path.join(os.path.dirname(__file__), "..", "build", "bin"))
    broker = subprocess.Popen(
        [os.path.join(bin_dir, "asyncq-broker"), "--bind", "tcp://127.0.0.1:0",
         "--max-connections", str(connections + 100)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = broker.stdout.readline()
    if not line.startswith("READY "):
        raise SystemExit("broker did not start")
    port = int(line.split(":")[-1])
    return broker, port


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def hello(sock, client_id, seq=0):
    sock.send_multipart([SIG, b"HELLO", b"h", client_id, str(seq).encode()])
    while True:
        frames = sock.recv_multipart()
        if frames[1] == b"WELCOME":
            return
        if frames[1] == b"HEARTBEAT":
            sock.send_multipart(frames)


def recv_command(sock, command):
    """The next message that is `command`, answering heartbeats meanwhile."""
    while True:
        frames = sock.recv_multipart()
        if frames[1] == command:
            return frames
        if frames[1] == b"HEARTBEAT":
            sock.send_multipart(frames)
        elif frames[1] == b"ERROR":
            raise SystemExit(f"broker error: {frames}")


def open_sessions(ctx, port, count, first=0):
    sockets = []
    for i in range(first, first + count):
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.rcvhwm = 0
        sock.connect(f"tcp://127.0.0.1:{port + 1}")
        sock.send_multipart([SIG, b"HELLO", b"h", f"idle-{i}".encode(), b"0"])
        sockets.append(sock)
    poller = zmq.Poller()
    for sock in sockets:
        poller.register(sock, zmq.POLLIN)
    welcomed = set()
    deadline = time.monotonic() + 120
    while len(welcomed) < count and time.monotonic() < deadline:
        for sock, _ in poller.poll(1000):
            frames = sock.recv_multipart()
            if frames[1] == b"WELCOME":
                welcomed.add(sock)
                poller.unregister(sock)
    return sockets, len(welcomed)


def idle_process(port, count, first, report):
    """A child that, once its parent says go, holds `count` idle sessions
    until its parent closes `report`: one process cannot hold 10000 ZeroMQ
    sockets (each takes two descriptors) under a 20000-descriptor hard
    limit. Children are forked before the parent opens any socket: a child
    would otherwise keep the parent's connections open after it closes
    them."""
    os.read(report, 1)  # go
    ctx = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, count + 100)
    sockets, welcomed = open_sessions(ctx, port, count, first)
    os.write(report, f"{welcomed}\n".encode())
    os.read(report, 1)  # returns when the parent goes
    for sock in sockets:
        sock.close()
    ctx.term()
    os._exit(0)


def fork_idle_processes(port, count, per_process=4000):
    """Forks the children that will hold `count` idle sessions between them;
    returns the parent's ends of their pipes."""
    ends, first = [], 0
    while first < count:
        share = min(per_process, count - first)
        parent, child = socket_pair()
        if os.fork() == 0:
            os.close(parent)
            idle_process(port, share, first, child)
        os.close(child)
        ends.append(parent)
        first += share
    return ends


def open_idle(ends):
    """Tells the children to open their sessions; returns how many did."""
    for end in ends:
        os.write(end, b"g")
    return sum(int(os.read(end, 64).decode().strip() or 0) for end in ends)


def socket_pair():
    import socket
    a, b = socket.socketpair()
    return os.dup(a.detach()), os.dup(b.detach())


def round_trips(ctx, port, rounds, name):
    producer = ctx.socket(zmq.DEALER)
    push = ctx.socket(zmq.PUSH)
    consumer = ctx.socket(zmq.DEALER)
    for sock in (producer, push, consumer):
        sock.linger = 0
    producer.connect(f"tcp://127.0.0.1:{port + 1}")
    consumer.connect(f"tcp://127.0.0.1:{port + 1}")
    producer_id = f"rt-producer-{name}".encode()
    hello(producer, producer_id, 1)
    hello(consumer, f"rt-consumer-{name}".encode())
    consumer.send_multipart([SIG, b"CREDIT", b"c", b"rt", b"1", b"0"])
    recv_command(consumer, b"CREDITED")
    push.connect(f"tcp://127.0.0.1:{port}")
    delivered, acked = [], []
    for seq in range(1, rounds + 1):
        start = time.perf_counter()
        push.send_multipart([SIG, b"PUT", producer_id, str(seq).encode(), b"rt", b"0", b"x"])
        item = recv_command(consumer, b"ITEM")
        delivered.append(time.perf_counter() - start)
        consumer.send_multipart([SIG, b"ACK", b"a", struct.pack(">Q", int(item[3]))])
        producer.send_multipart([SIG, b"JOIN", b"j", b"rt", b"0", b"before"])
        recv_command(producer, b"JOINED")  # answered once the ack is in
        acked.append(time.perf_counter() - start)
    for sock in (producer, push, consumer):
        sock.close()
    return delivered, acked


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=500)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    broker, port = start_broker(args.connections)
    ends = fork_idle_processes(port, args.connections)
    ctx = zmq.Context()
    try:
        base = rss_mib(broker.pid)
        delivered, acked = round_trips(ctx, port, args.rounds, "before")
        print(f"no idle connections: put->get p50 {percentile(delivered, .5):.3f} ms, "
              f"p99 {percentile(delivered, .99):.3f} ms; put->ack (join answered) "
              f"p50 {percentile(acked, .5):.3f} ms, p99 {percentile(acked, .99):.3f} ms")
        started = time.monotonic()
        welcomed = open_idle(ends)
        print(f"{welcomed} idle sessions opened in {time.monotonic() - started:.1f} s; "
              f"broker RSS {base:.1f} -> {rss_mib(broker.pid):.1f} MiB")
        delivered, acked = round_trips(ctx, port, args.rounds, "after")
        print(f"with {welcomed} idle sessions: put->get p50 {percentile(delivered, .5):.3f} ms, "
              f"p99 {percentile(delivered, .99):.3f} ms; put->ack (join answered) "
              f"p50 {percentile(acked, .5):.3f} ms, p99 {percentile(acked, .99):.3f} ms")
        for end in ends:
            os.close(end)
        for _ in ends:
            os.wait()
    finally:
        broker.terminate()
        broker.wait()
        ctx.term()


if __name__ == "__main__":
    main()
