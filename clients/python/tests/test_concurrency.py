"""Several coroutines on one Queue, as asyncio users write them: the bare
task_done() acks the calling task's item and no other, the credit follows
the get() calls waiting, a shutdown wakes every waiting get(), and the
crash job (a worker SIGKILLed and restarted) never lets a join report an
item done that never ran."""
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from broker import AsyncCase, Broker, HERE, Keys, _die_with_parent
from test_queue_semantics import QueueSemantics

import asyncq


class TaskDone(QueueSemantics):
    async def test_two_tasks_that_finish_in_the_opposite_order_ack_their_own_items(self):
        q = self.client()
        await q.put(b"first")
        await q.put(b"second")
        got_first, second_done = asyncio.Event(), asyncio.Event()

        async def slow():
            item = await q.get()
            got_first.set()
            await second_done.wait()  # still working when the other finishes
            return item

        async def fast():
            await got_first.wait()
            item = await q.get()
            q.task_done()  # bare: must ack "second", not the older "first"
            second_done.set()
            return item

        slow_task = asyncio.ensure_future(slow())
        self.assertEqual(await fast(), b"second")
        first = await slow_task
        self.assertEqual(first, b"first")
        self.assertEqual(set(q._consumer.held), {first.id})
        # The broker agrees: "first" is still in flight; closing gives it back.
        self.assertEqual((await q.stats())["acked"], 1)
        await q.close()
        other = self.client()
        again = await asyncio.wait_for(other.get(), 10)
        self.assertEqual(again, b"first")
        other.task_done()

    async def test_a_task_holding_two_items_must_name_the_one_done(self):
        q = self.client()
        await q.put(b"a")
        await q.put(b"b")
        a, b = await q.get(), await q.get()
        with self.assertRaisesRegex(ValueError, r"holds 2 items.*task_done\(item\)"):
            q.task_done()
        q.task_done(b)
        q.task_done()  # now only "a" is this task's
        await q.join(timeout=10)
        self.assertEqual((await q.stats())["acked"], 2)
        self.assertEqual(a, b"a")

    async def test_items_with_equal_bytes_are_told_apart(self):
        q = self.client()
        await q.put(b"same")
        await q.put(b"same")
        first, second = await q.get(), await q.get()
        q.task_done(second)
        q.task_done()  # the one left is "first", not a second ack of "second"
        await q.join(timeout=10)
        self.assertEqual((await q.stats())["acked"], 2)
        self.assertEqual(list(q.errors), [])
        self.assertNotEqual(first.id, second.id)

    async def test_a_task_that_got_nothing_cannot_ack_another_tasks_item(self):
        q = self.client()
        await q.put(b"x")
        item = await asyncio.ensure_future(q.get())  # got by another task

        async def stranger():
            q.task_done()

        with self.assertRaisesRegex(ValueError, r"task_done\(item\)"):
            await asyncio.ensure_future(stranger())
        self.assertEqual(set(q._consumer.held), {item.id})
        q.task_done(item)  # naming it works from any task
        await q.join(timeout=10)
        self.assertEqual((await q.stats())["acked"], 1)


class Credit(QueueSemantics):
    async def test_four_getters_run_four_at_a_time_without_naming_credit(self):
        q = self.client()
        for i in range(8):
            await q.put(str(i))
        running, most = 0, 0
        all_in = asyncio.Event()

        async def worker():
            nonlocal running, most
            for _ in range(2):
                await q.get()
                running += 1
                most = max(most, running)
                if running == 4:
                    all_in.set()
                await all_in.wait()
                running -= 1
                q.task_done()

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(4))), 20)
        self.assertEqual(most, 4)
        self.assertEqual((await q.join(timeout=10)).dead, 0)

    async def test_one_getter_holds_one_item(self):
        q = self.client()
        for i in range(5):
            await q.put(str(i))
        item = await q.get()
        stats = await q.stats()  # after CREDITED and the first delivery
        await asyncio.sleep(0)
        stats = await q.stats()
        self.assertEqual((stats["inflight"], stats["queued"]), (1, 4))
        q.task_done(item)

    def test_the_old_credit_option_still_works_as_prefetch_plus_one(self):
        with self.assertWarns(DeprecationWarning):
            q = asyncq.Queue(self.broker.address, self.name, credit=4)
        self.assertEqual((q.prefetch, q.credit), (3, 4))

    async def test_prefetch_sends_that_many_more_ahead(self):
        q = self.client(prefetch=2)
        for i in range(6):
            await q.put(str(i))
        await q.get()
        await self.until_stat("inflight", 3)
        self.assertEqual((await q.stats())["queued"], 3)
        q.task_done()


class Shutdown(QueueSemantics):
    async def test_a_shutdown_wakes_every_waiting_get(self):
        q = self.client()
        getters = [asyncio.ensure_future(q.get()) for _ in range(4)]
        await self.until_stat("consumers", 1)
        report = await self.client().shutdown()
        self.assertEqual(report["state"], "draining")
        done, pending = await asyncio.wait(getters, timeout=10)
        self.assertEqual(pending, set())
        for getter in done:
            self.assertIsInstance(getter.exception(), asyncq.QueueShutDown)
        with self.assertRaises(asyncq.QueueShutDown):
            await asyncio.wait_for(q.get(), 10)  # and every later get()

    async def test_shutdown_immediate_discards_the_queued_items(self):
        q = self.client()
        for i in range(3):
            await q.put(str(i))
        report = await q.shutdown(immediate=True)
        self.assertEqual(report["discarded"], 3)
        with self.assertRaises(asyncq.QueueShutDown):
            await q.put(b"refused")


class Errors(AsyncCase):
    async def test_a_host_that_does_not_resolve_is_said_at_once(self):
        started = time.monotonic()
        q = asyncq.Queue("no-such-host.invalid:5557", timeout=30)
        with self.assertRaisesRegex(asyncq.BrokerUnreachable,
                                    r"no-such-host\.invalid:5557.*does not resolve"):
            await q.put(b"x")
        self.assertLess(time.monotonic() - started, 10)

    async def test_a_port_where_nothing_listens_is_said_at_once_with_the_address_typed(self):
        import socket
        with socket.socket() as probe:  # a port nothing listens on once closed
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        address = f"127.0.0.1:{port}"
        started = time.monotonic()
        q = asyncq.Queue(address, timeout=30)
        with self.assertRaisesRegex(asyncq.BrokerUnreachable,
                                    rf"at {address}: .*[Cc]onnection refused"):
            await q.put(b"x")
        self.assertLess(time.monotonic() - started, 10)

    def test_a_malformed_address_names_the_accepted_forms(self):
        for address in (":notaport", "http://localhost:5557", "tcp://host", "host:99999"):
            with self.subTest(address=address):
                with self.assertRaisesRegex(ValueError, r"HOST\[:PORT\], tcp://HOST:PORT"):
                    asyncq.Queue(address)

    async def test_an_item_of_another_type_is_refused_naming_the_types(self):
        q = asyncq.Queue("localhost")
        for item in ({"a": 1}, 12, None):
            with self.subTest(item=item):
                with self.assertRaisesRegex(TypeError, "bytes, bytearray, memoryview or str"):
                    await q.put(item)
        await q.close()


class Refusals(QueueSemantics):
    async def test_a_refused_put_shows_the_brokers_code_and_reason(self):
        q = self.client()
        await q.shutdown()
        with self.assertRaisesRegex(asyncq.QueueShutDown, r"^503 SHUT_DOWN: .*refused"):
            await q.put(b"refused")
        other = asyncq.Queue(self.broker.address, self.name + "-open")
        self.clients.append(other)
        await other.put(b"still served")


class RefusalsWithKeys(AsyncCase):
    @classmethod
    def setUpClass(cls):
        cls.keys = Keys()
        cls.worker = cls.keys.make("worker", "produce,consume", allow=True)
        cls.admin = cls.keys.make("admin", "produce,consume,admin", allow=True)
        cls.broker = Broker(*cls.keys.broker_flags())

    @classmethod
    def tearDownClass(cls):
        cls.broker.stop()
        cls.keys.remove()

    async def test_a_shutdown_without_the_admin_role_shows_403_and_why(self):
        options = dict(server_key=self.keys.public("broker"))
        q = asyncq.Queue(self.broker.address, "keyed", curve_secret=self.worker, **options)
        with self.assertRaisesRegex(asyncq.BrokerError, r"^403 FORBIDDEN: .+") as caught:
            await q.shutdown()
        self.assertEqual(caught.exception.code, 403)
        await q.put(b"still served")
        admin = asyncq.Queue(self.broker.address, "keyed", curve_secret=self.admin, **options)
        self.assertEqual((await admin.shutdown())["state"], "draining")
        await q.close()
        await admin.close()


class Takeover(QueueSemantics):
    broker_flags = ("--maxsize", "1")

    async def test_a_producer_id_taken_over_fails_the_puts_not_confirmed_and_starts_anew(self):
        q = self.client()
        await q.put(b"in")                              # the queue is full now
        held = asyncio.ensure_future(q.put(b"held"))    # its SYNC waits (HELD)
        while q.held is None:
            await asyncio.sleep(0.01)
        # Another process says HELLO with this client's producer id.
        import zmq
        intruder = zmq.Context.instance().socket(zmq.DEALER)
        try:
            intruder.connect(asyncq.endpoints(self.broker.address)[1])
            intruder.send_multipart([b"asyncq/2", b"HELLO", b"h", q._client_id.encode(), b"1"])
            with self.assertRaisesRegex(asyncq.BrokerError, r"^409 CONFLICT") as caught:
                await asyncio.wait_for(held, 10)
            self.assertEqual(caught.exception.code, 409)
        finally:
            intruder.close(linger=0)
        consumer = self.client()
        self.assertEqual(await asyncio.wait_for(consumer.get(), 10), b"in")
        consumer.task_done()
        after = asyncio.ensure_future(q.put(b"after"))  # a producer of a new id
        # "held" was not confirmed: the broker may still have it (not
        # confirmed is not dropped), but nothing else comes before "after".
        got = [await asyncio.wait_for(consumer.get(), 10)]
        consumer.task_done()
        if got[0] == b"held":
            got.append(await asyncio.wait_for(consumer.get(), 10))
            consumer.task_done()
        self.assertEqual(got[-1], b"after")
        await asyncio.wait_for(after, 10)


class CrashJob(AsyncCase):
    """The README's worker grown into a real job: 4 coroutines on one Queue
    with the bare task_done(), SIGKILLed twice and restarted, on several
    seeds. Every item must have run before the join returns."""

    ITEMS, COROUTINES, KILLS = 400, 4, 2

    def setUp(self):
        self.broker = Broker("--heartbeat-ms", "100", "--lease-ms", "3000")
        self.dir = tempfile.mkdtemp(prefix="asyncq-crash-")
        self.workers = []

    def tearDown(self):
        for worker in self.workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
            worker.stdout.close()
        self.broker.stop()

    def start_worker(self, queue, log, seed):
        worker = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "crash_worker.py"), self.broker.address, queue,
             log, str(self.COROUTINES), str(seed)],
            stdout=subprocess.PIPE, text=True, start_new_session=True,
            preexec_fn=_die_with_parent)
        self.workers.append(worker)
        self.assertEqual(worker.stdout.readline().strip(), "READY")
        return worker

    async def run_job(self, seed):
        rng = random.Random(seed)
        queue, log = f"crash-{seed}", os.path.join(self.dir, f"ran-{seed}")
        open(log, "w").close()
        q = asyncq.Queue(self.broker.address, queue)
        for i in range(self.ITEMS):
            await q.send(f"task-{i}")
        await q.flush()
        worker = self.start_worker(queue, log, seed)
        for _ in range(self.KILLS):
            # Killed once it has acked a random share of what is left.
            acked = (await q.stats()).get("acked", 0)
            target = acked + rng.randint(10, self.ITEMS // (self.KILLS + 2))
            while (await q.stats()).get("acked", 0) < target:
                await asyncio.sleep(0.005)
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
            worker = self.start_worker(queue, log, seed + 1000)
        joined = await q.join(timeout=120)
        with open(log) as ran:
            ran_items = set(ran.read().split())
        never_ran = {f"task-{i}" for i in range(self.ITEMS)} - ran_items
        self.assertEqual(never_ran, set(), f"seed {seed}: the join said {joined} while "
                         f"{len(never_ran)} items never ran")
        self.assertEqual(joined.dead, 0)
        await q.close()

    async def test_every_item_ran_before_the_join_returned(self):
        for seed in (1, 2, 3):
            with self.subTest(seed=seed):
                await self.run_job(seed)


if __name__ == "__main__":
    unittest.main()
