#!/usr/bin/python3
"""A history of client operations on an asyncq queue, recorded and checked
(Jepsen-style), for tests/hosts/replicas.sh.

    check_history.py produce -b LIST -q Q --name N --count C [--tasks T] [--max-sleep S] --log FILE
    check_history.py consume -b LIST -q Q --name N [--workers W] [--max-sleep S] --log FILE
    check_history.py join    -b LIST -q Q --name N --stop FILE [--every S] --log FILE
    check_history.py check   FILE...

The clients (the asyncq package of clients/python; keys from ASYNCQ_CURVE_SECRET
and ASYNCQ_SERVER_KEY) write one JSON line per operation, flushed at once, with
the time (time.time(): every process runs on the one machine, so the times of
different processes compare):

    put-invoked {p}            before put(p); p is unique ("PREFIX-TASK-NUMBER")
    put-confirmed {p}          after put(p) returned (the broker confirmed it)
    put-failed {p, error}      put(p) raised
    got {p, id, attempt}       after get() returned an item
    acked {p, id, attempt}     just before task_done(item)
    join-invoked {n}           before join()
    join-returned {n, count}   after join() returned
    join-failed {n, error}     join() raised (a timeout, say)
    puts-done, closed          a producer's puts all returned; its Queue closed

`produce` exits 0 once every put was confirmed, 1 if one raised. `consume`
runs until SIGTERM. `join` joins again and again (a pause of up to --every
between) until FILE exists, then joins once more and exits 0 if that last
join returned.

`check` reads every history and prints one "ok: ..." or "FAILED: ..." line a
property, exiting 1 if one fails:
  - every put invoked was confirmed;
  - (a) every confirmed put was delivered and acked at least once;
  - (b) no join returned before every put confirmed before the join was
    invoked had been acked (an `acked` record earlier than the return);
  - (c) no payload delivered twice with the same attempt (at most one first
    delivery, attempt 1): duplicates only as redeliveries;
  - (d) nothing delivered that was never put, or before it was put;
  - each payload delivered under one item id (a put resent to a new leader is
    not enqueued twice);
  - a join invoked after the last confirm returned (the run ends settled).
"""
import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "clients", "python"))


class Log:
    def __init__(self, path, proc):
        self.file = open(path, "a", buffering=1)
        self.proc = proc

    def __call__(self, op, **fields):
        record = {"t": time.time(), "proc": self.proc, "op": op}
        record.update(fields)
        self.file.write(json.dumps(record, sort_keys=True) + "\n")
        self.file.flush()


async def produce(args):
    import asyncq
    log = Log(args.log, args.name)
    failed = 0
    async with asyncq.Queue(args.broker, args.queue, name=args.name, timeout=10.0) as q:
        async def task(k):
            nonlocal failed
            rng = random.Random(f"{args.name}-{k}")
            for i in range(args.count):
                await asyncio.sleep(rng.random() * args.max_sleep)
                p = f"{args.name}-{k}-{i:05d}"
                log("put-invoked", p=p)
                try:
                    await q.put(p)
                except Exception as error:  # noqa: BLE001 (recorded, the run goes on)
                    failed += 1
                    log("put-failed", p=p, error=f"{type(error).__name__}: {error}")
                    continue
                log("put-confirmed", p=p)
        await asyncio.gather(*(task(k) for k in range(args.tasks)))
        log("puts-done")
    log("closed")
    print(f"{args.name}: {args.count * args.tasks - failed} puts confirmed, {failed} failed",
          flush=True)
    return 1 if failed else 0


async def consume(args):
    import asyncq
    log = Log(args.log, args.name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    q = asyncq.Queue(args.broker, args.queue, name=args.name, timeout=10.0)

    async def worker(k):
        rng = random.Random(f"{args.name}-{k}")
        while True:
            item = await q.get()
            p = item.decode("utf-8", "replace")
            log("got", p=p, id=item.id, attempt=item.attempt)
            await asyncio.sleep(rng.random() * args.max_sleep)
            log("acked", p=p, id=item.id, attempt=item.attempt)
            q.task_done(item)

    workers = [asyncio.ensure_future(worker(k)) for k in range(args.workers)]
    stopping = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait(workers + [stopping], return_when=asyncio.FIRST_COMPLETED)
    for future in workers + [stopping]:
        future.cancel()
    for future in done:
        if future is not stopping and future.exception():
            print(f"{args.name}: {future.exception()!r}", file=sys.stderr, flush=True)
            return 1
    return 0


async def join(args):
    import asyncq
    log = Log(args.log, args.name)
    rng = random.Random(args.name)
    n = 0
    last_returned = False
    async with asyncq.Queue(args.broker, args.queue, name=args.name, timeout=10.0) as q:
        while True:
            final = os.path.exists(args.stop)
            n += 1
            log("join-invoked", n=n, final=final)
            try:
                joined = await q.join(timeout=30)
                log("join-returned", n=n, count=joined.count, dead=joined.dead, final=final)
                last_returned = True
            except Exception as error:  # noqa: BLE001 (recorded)
                log("join-failed", n=n, error=f"{type(error).__name__}: {error}", final=final)
                last_returned = False
            if final:
                break
            await asyncio.sleep(rng.random() * args.every)
    print(f"{args.name}: {n} joins, the last {'returned' if last_returned else 'FAILED'}",
          flush=True)
    return 0 if last_returned else 1


def check(paths):
    records = []
    for path in paths:
        with open(path) as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    records.append(json.loads(line))
                except ValueError:
                    # A consumer killed in mid-write leaves its last line cut.
                    print(f"note: {path}:{number}: not JSON, skipped: {line[:80]!r}")
    records.sort(key=lambda r: r["t"])
    invoked, confirmed, failed = {}, {}, {}
    got, acked = [], {}
    joins = {}
    nemesis = []  # what the test did to the hosts ({"op": "nemesis", "what": ...}), for the reader
    for r in records:
        op = r["op"]
        if op == "put-invoked":
            if r["p"] in invoked:
                print(f"note: {r['p']} put twice by the clients")
            invoked[r["p"]] = r["t"]
        elif op == "put-confirmed":
            confirmed[r["p"]] = r["t"]
        elif op == "put-failed":
            failed[r["p"]] = r
        elif op == "got":
            got.append(r)
        elif op == "acked":
            acked.setdefault(r["p"], []).append(r["t"])
        elif op.startswith("join-"):
            joins.setdefault((r["proc"], r["n"]), {})[op] = r
        elif op == "nemesis":
            nemesis.append(r)

    failures = 0

    def report(ok, what, detail=()):
        nonlocal failures
        print(("ok: " if ok else "FAILED: ") + what)
        if not ok:
            failures += 1
            for line in list(detail)[:10]:
                print("    " + line)

    redelivered = sum(1 for r in got if r["attempt"] > 1)
    print(f"history: {len(invoked)} puts invoked, {len(confirmed)} confirmed, {len(failed)} "
          f"failed; {len(got)} deliveries ({redelivered} redeliveries), "
          f"{sum(map(len, acked.values()))} acks; {len(joins)} joins")

    start = records[0]["t"] if records else 0.0
    for r in nemesis:
        print(f"at {r['t'] - start:7.3f}s: {r['what']}")
    slow = sorted(((confirmed[p] - invoked[p], p) for p in confirmed if p in invoked), reverse=True)
    for took, p in slow[:3]:
        print(f"a slowest put: {p}, invoked at {invoked[p] - start:.3f}s, confirmed {took:.3f}s later")
    slow = sorted(((ops["join-returned"]["t"] - ops["join-invoked"]["t"], key)
                   for key, ops in joins.items() if "join-returned" in ops and "join-invoked" in ops),
                  reverse=True)
    done = {r["proc"]: r["t"] for r in records if r["op"] == "puts-done"}
    for r in records:
        if r["op"] == "closed" and r["proc"] in done:
            print(f"{r['proc']}: its puts were done at {done[r['proc']] - start:.3f}s, "
                  f"closed {r['t'] - done[r['proc']]:.3f}s later")
    for took, (proc, n) in slow[:1]:
        print(f"the slowest join: {proc} {n}, invoked at "
              f"{joins[(proc, n)]['join-invoked']['t'] - start:.3f}s, returned {took:.3f}s later")

    unconfirmed = sorted(set(invoked) - set(confirmed))
    report(not unconfirmed and not failed and invoked,
           f"every put invoked was confirmed ({len(confirmed)} of {len(invoked)})",
           [f"{p}: never confirmed" for p in unconfirmed]
           + [f"{p}: {r['error']}" for p, r in failed.items()])

    delivered = {r["p"] for r in got}
    lost = sorted(p for p in confirmed if p not in delivered or p not in acked)
    report(not lost, f"(a) every confirmed put was delivered and acked ({len(lost)} not)",
           [f"{p}: confirmed at {confirmed[p]:.3f}, "
            f"{'delivered' if p in delivered else 'never delivered'}, "
            f"{'acked' if p in acked else 'never acked'}" for p in lost])

    early = []
    returned = 0
    by_confirm = sorted(confirmed.items(), key=lambda kv: kv[1])
    for (proc, n), ops in sorted(joins.items()):
        if "join-invoked" not in ops or "join-returned" not in ops:
            continue
        returned += 1
        t_invoked, t_returned = ops["join-invoked"]["t"], ops["join-returned"]["t"]
        for p, t_confirmed in by_confirm:
            if t_confirmed >= t_invoked:
                break
            if not any(t < t_returned for t in acked.get(p, ())):
                early.append(f"{proc} join {n} (invoked {t_invoked:.3f}, returned "
                             f"{t_returned:.3f}, count {ops['join-returned']['count']}): "
                             f"{p} confirmed at {t_confirmed:.3f}, first acked "
                             f"{min(acked[p]) if p in acked else 'never'}")
    report(not early and returned > 0,
           f"(b) no join returned before the puts confirmed before it were acked "
           f"({returned} joins returned, {len(early)} early)", early)

    seen, twice = {}, []
    for r in got:
        key = (r["p"], r["attempt"])
        if key in seen:
            twice.append(f"{r['p']} delivered twice as attempt {r['attempt']}: id {seen[key]['id']} "
                         f"to {seen[key]['proc']} at {seen[key]['t']:.3f}, id {r['id']} to "
                         f"{r['proc']} at {r['t']:.3f}")
        else:
            seen[key] = r
    report(not twice, f"(c) no payload delivered twice with the same attempt, none twice as "
           f"attempt 1 ({redelivered} redeliveries, {len(twice)} duplicates)", twice)

    phantom = [f"{r['p']} delivered (id {r['id']}, attempt {r['attempt']}) to {r['proc']} at "
               f"{r['t']:.3f}, " + (f"put invoked only at {invoked[r['p']]:.3f}"
                                    if r["p"] in invoked else "never put")
               for r in got if r["p"] not in invoked or r["t"] < invoked[r["p"]]]
    report(not phantom, f"(d) nothing delivered that was not put ({len(phantom)})", phantom)

    ids = {}
    for r in got:
        ids.setdefault(r["p"], set()).add(r["id"])
    split = [f"{p}: ids {sorted(v)}" for p, v in sorted(ids.items()) if len(v) > 1]
    report(not split, f"each payload delivered under one item id: enqueued once "
           f"({len(split)} under several)", split)

    last_confirm = max(confirmed.values(), default=0.0)
    settled = [ops for ops in joins.values() if "join-returned" in ops
               and ops["join-invoked"]["t"] > last_confirm]
    report(bool(settled), f"a join invoked after the last confirm returned ({len(settled)})")
    return 1 if failures else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("produce", "consume", "join"):
        p = sub.add_parser(name)
        p.add_argument("-b", "--broker", required=True)
        p.add_argument("-q", "--queue", required=True)
        p.add_argument("--name", required=True)
        p.add_argument("--log", required=True)
        if name == "produce":
            p.add_argument("--count", type=int, required=True)
            p.add_argument("--tasks", type=int, default=2)
            p.add_argument("--max-sleep", type=float, default=0.02)
        elif name == "consume":
            p.add_argument("--workers", type=int, default=2)
            p.add_argument("--max-sleep", type=float, default=0.01)
        else:
            p.add_argument("--stop", required=True)
            p.add_argument("--every", type=float, default=0.3)
    p = sub.add_parser("check")
    p.add_argument("files", nargs="+")
    args = parser.parse_args()
    if args.command == "check":
        return check(args.files)
    return asyncio.run({"produce": produce, "consume": consume, "join": join}[args.command](args))


if __name__ == "__main__":
    sys.exit(main())
