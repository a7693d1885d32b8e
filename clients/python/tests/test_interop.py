"""The Python client against the real C broker and the C programs."""
import asyncio
import re
import unittest

from broker import AsyncCase, Broker, silent_connection

import asyncq


class Interop(AsyncCase):
    def setUp(self):
        self.broker = Broker()

    def tearDown(self):
        self.broker.stop()

    async def test_put_from_python_consume_in_c(self):
        async with asyncq.Queue(self.broker.address, "py2c") as q:
            sent = [f"item-{i}" for i in range(50)]
            for item in sent:
                await q.put(item)
            out = self.broker.run("asyncq-consumer", "-q", "py2c", "--count", "50",
                                  "--max-sleep", "0", "--credit", "8")
            got = re.findall(r"got element <([^>]*)>", out)
            self.assertEqual(sorted(got), sorted(sent))
            self.assertEqual(await q.join(timeout=10), asyncq.Joined(0, 0))
            stats = await q.stats()
            self.assertEqual((stats["puts"], stats["acked"], stats["outstanding"]), (50, 50, 0))

    async def test_put_from_c_consume_in_python(self):
        out = self.broker.run("asyncq-producer", "-q", "c2py", "--count", "30",
                              "--max-sleep", "0")
        sent = re.findall(r"added <([^>]*)>", out)
        self.assertEqual(len(sent), 30)
        async with asyncq.Queue(self.broker.address, "c2py", prefetch=3) as q:
            got = []
            for _ in range(30):
                item = await q.get()
                self.assertEqual(item.attempt, 1)
                got.append(item.decode())
                q.task_done(item)
            self.assertEqual(got, sent)  # one producer, one consumer: FIFO
            self.assertEqual(await q.join(timeout=10), asyncq.Joined(0, 0))

    async def test_python_batches_to_a_c_consumer_and_c_batches_to_python(self):
        async with asyncq.Queue(self.broker.address, "batches") as q:
            for i in range(500):
                await q.send(f"py-{i}")  # one tick: PUTS batches
            await q.flush()
            out = self.broker.run("asyncq-consumer", "-q", "batches", "--count", "500",
                                  "--max-sleep", "0", "--credit", "64")  # ITEMS batches
            got = re.findall(r"got element <([^>]*)>", out)
            self.assertEqual(got, [f"py-{i}" for i in range(500)])
            out = self.broker.run("asyncq-producer", "-q", "batches", "--count", "500",
                                  "--max-sleep", "0")
            sent = re.findall(r"added <([^>]*)>", out)
            self.assertEqual(len(sent), 500)
        async with asyncq.Queue(self.broker.address, "batches", prefetch=63) as q:
            got = []
            for _ in range(500):
                got.append((await q.get()).decode())
                q.task_done()
            self.assertEqual(got, sent)
            self.assertEqual(await q.join(timeout=10), asyncq.Joined(0, 0))

    async def test_join_from_python_while_c_consumers_ack(self):
        async with asyncq.Queue(self.broker.address, "joinc") as q:
            for i in range(40):
                await q.put(f"job-{i}")
            consumers = [self.broker.start("asyncq-consumer", "-q", "joinc", "--max-sleep",
                                           "0.05") for _ in range(2)]
            try:
                joined = await q.join(timeout=60)
                stats = await q.stats()
                # When the join answers, every item is acked: not one earlier.
                self.assertEqual((stats["acked"], stats["outstanding"]), (40, 0))
                self.assertLessEqual(joined.count, 40)
                self.assertEqual(joined.dead, 0)
            finally:
                for consumer in consumers:
                    consumer.terminate()
                    consumer.communicate()

    async def test_blocking_client_with_c_producer(self):
        self.broker.run("asyncq-producer", "-q", "blocking", "--count", "5", "--max-sleep", "0")

        def work():
            with asyncq.BlockingQueue(self.broker.address, "blocking") as q:
                self.assertEqual(q.qsize(), 5)
                for _ in range(5):
                    q.get(timeout=10)
                    q.task_done()
                self.assertEqual(q.join(timeout=10), asyncq.Joined(0, 0))
                self.assertEqual(q.qsize(), 0)
                q.put(b"back")
                self.assertEqual((q.persistence, q.held), ("memory", None))
                self.assertEqual(q.get(timeout=10), b"back")
                with self.assertRaises(TimeoutError):
                    q.join(timeout=0.2)  # "back" is got, not acked
                q.task_done()
                q.join(timeout=10)

        await asyncio.to_thread(work)

    async def test_clients_carry_on_after_a_broker_restart(self):
        self.broker.stop()
        self.broker = Broker("--heartbeat-ms", "200")
        address = self.broker.address
        async with asyncq.Queue(address, "restart") as producer, \
                asyncq.Queue(address, "restart", prefetch=3) as consumer:
            getter = asyncio.create_task(consumer.get())
            while (await producer.stats()).get("consumers") != 1:
                await asyncio.sleep(0.01)  # until its CREDIT reached the broker
            for i in range(100):
                await producer.send(str(i))
            # Killed before any put was confirmed: they are all sent again.
            self.broker.stop()
            self.broker = Broker("--heartbeat-ms", "200", bind=address)
            await asyncio.wait_for(producer.flush(), 30)
            got = {await asyncio.wait_for(getter, 30)}
            consumer.task_done()
            while len(got) < 100:
                got.add(await asyncio.wait_for(consumer.get(), 30))
                consumer.task_done()
            self.assertEqual(got, {str(i).encode() for i in range(100)})
            await producer.join(timeout=30)
            stats = await producer.stats()
            # De-duplicated by producer id and seq: each put enqueued once.
            self.assertEqual((stats["puts"], stats["acked"]), (100, 100))

    async def test_clients_wait_for_a_broker_that_is_away_for_a_while(self):
        self.broker.stop()
        self.broker = Broker("--heartbeat-ms", "200")
        address = self.broker.address
        async with asyncq.Queue(address, "away") as producer, \
                asyncq.Queue(address, "away", prefetch=3) as consumer:
            await producer.put(b"before")
            self.assertEqual(await consumer.get(), b"before")
            consumer.task_done()
            self.broker.stop()
            for i in range(10):
                await producer.send(str(i))
            while producer.reconnects < 1 or consumer.reconnects < 1:
                await asyncio.sleep(0.05)  # both found the broker silent
            # Longer than a HELLO waits: each is said again on a new DEALER.
            await asyncio.sleep(1.5)
            self.broker = Broker("--heartbeat-ms", "200", bind=address)
            await asyncio.wait_for(producer.flush(), 30)
            got = set()
            while len(got) < 10:
                got.add(await asyncio.wait_for(consumer.get(), 30))
                consumer.task_done()
            self.assertEqual(got, {str(i).encode() for i in range(10)})
            self.assertEqual(await consumer.join(timeout=10), asyncq.Joined(0, 0))
            self.assertEqual((await producer.stats())["puts"], 10)

    async def test_an_idle_producer_leaves_no_silent_connection_after_a_restart(self):
        self.broker.stop()
        flags = ("--heartbeat-ms", "50", "--hello-timeout-ms", "1000")
        self.broker = Broker(*flags)
        address, refused = self.broker.address, "no HELLO (or put) in time"
        async with asyncq.Queue(address, "idle") as q:
            await q.put(b"confirmed")
            self.broker.stop()
            self.broker = Broker(*flags, bind=address)
            while q.reconnects < 1:
                await asyncio.sleep(0.01)
            # ZeroMQ reconnects every 100 ms: by now a PUSH socket the client
            # kept has its connection to the new broker. Once the broker has
            # closed a silent connection opened after it, it would have
            # closed that one too.
            await asyncio.sleep(0.3)
            await asyncio.wait_for(silent_connection(address), 10)
            self.assertEqual(self.broker.log().count(refused), 1)
            await q.put(b"after")  # a new PUSH connection, for this put
            self.assertEqual((await q.stats())["puts"], 1)

    async def test_a_waiting_join_is_asked_again_after_a_restart(self):
        self.broker.stop()
        self.broker = Broker("--heartbeat-ms", "200")
        address = self.broker.address
        async with asyncq.Queue(address, "rejoin") as q:
            await q.put(b"never acked")
            joiner = asyncio.create_task(q.join(timeout=60))
            while (await q.stats()).get("joiners") != 1:
                await asyncio.sleep(0.01)
            self.broker.stop()
            self.broker = Broker("--heartbeat-ms", "200", bind=address)
            # The new broker holds nothing: the join asked again answers at once.
            self.assertEqual(await asyncio.wait_for(joiner, 30), asyncq.Joined(0, 0))

    async def test_leases_nack_and_limits(self):
        async with asyncq.Queue(self.broker.address, "lease", prefetch=1) as q:
            with self.assertRaises(ValueError):
                await q.put(b"x" * (1024 * 1024 + 1))  # larger than the broker's max-item
            await q.put(b"job", lease=2.5)
            item = await q.get()
            self.assertEqual((item.attempt, item.lease_ms), (1, 2500))
            await q.touch(item)
            await q.nack(item, delay=0.05, reason="try again")
            again = await q.get()
            self.assertEqual((again, again.attempt), (b"job", 2))
            q.task_done(again)
            self.assertEqual((await q.join(timeout=10)).dead, 0)


if __name__ == "__main__":
    unittest.main()
