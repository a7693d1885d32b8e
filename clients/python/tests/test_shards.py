"""A service of several brokers as one queue (PROTOCOL.md 4.15), against
real brokers over real sockets: three brokers started with --shard K and
--service :P0,:P2,:P4, each on its own pair of ports. A client given one
address finds them all; puts spread; one getter holds one item at most,
whichever shard has items (credit moves on READY); joins are exact across
shards and wait for a broker that is stopped; keys pin items to a shard; a
broker killed and restarted loses no confirmed put; two brokers with one
shard number, and a wrong address in a list, are said clearly. Each test
ends with a request that succeeds."""
import asyncio
import logging
import os
import random
import shutil
import signal
import socket
import tempfile
import time
import unittest

import zmq
import zmq.asyncio

from broker import AsyncCase, Broker, put_and_get

import asyncq

WAIT = 10  # seconds: a condition that never comes fails the test, not hangs it
_names = iter(range(1, 1000000))


def free_base(ports):
    """A port from which `ports` consecutive ports of 127.0.0.1 are free now,
    below the range the system draws outgoing connections' ports from."""
    for _ in range(100):
        base = random.randrange(20000, 32000 - ports)
        taken = []
        try:
            for port in range(base, base + ports):
                probe = socket.socket()
                taken.append(probe)
                probe.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for probe in taken:
                probe.close()
    raise RuntimeError("no free ports")


class Service:
    """count brokers as one service on 127.0.0.1: shard K on port P0 + 2K
    (its pair: P0 + 2K and P0 + 2K + 1), each told --service :P0,:P2,...
    durable: each keeps its data in a directory of its own."""

    def __init__(self, count=3, flags=(), durable=False):
        self.dir = tempfile.mkdtemp(prefix="asyncq-shards-") if durable else None
        for _ in range(20):  # ports taken meanwhile: others
            base = free_base(2 * count)
            self.ports = [base + 2 * shard for shard in range(count)]
            service = ",".join(f":{port}" for port in self.ports)
            self.brokers = []
            try:
                for shard, port in enumerate(self.ports):
                    data = ("--data-dir", os.path.join(self.dir, f"shard-{shard}")) \
                        if durable else ()
                    self.brokers.append(Broker("--shard", str(shard), "--service", service,
                                               *data, *flags, bind=f"tcp://127.0.0.1:{port}"))
                return
            except RuntimeError:
                self.stop()
        raise RuntimeError("could not start the service")

    def address(self, shard):
        return f"127.0.0.1:{self.ports[shard]}"

    def stop(self):
        for broker in self.brokers:
            broker.stop()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


async def raw_stats(port, queue):
    """One broker's STATS line of queue, asked over a DEALER of its own (not
    the client under test): {} when it does not have the queue."""
    socket_ = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    try:
        socket_.connect(f"tcp://127.0.0.1:{port + 1}")
        await socket_.send_multipart([b"asyncq/2", b"HELLO", b"h",
                                      b"probe-" + os.urandom(4).hex().encode(), b"0"])
        while (await asyncio.wait_for(socket_.recv_multipart(), WAIT))[1] != b"WELCOME":
            pass
        await socket_.send_multipart([b"asyncq/2", b"STATS", b"s", queue.encode()])
        while (reply := await asyncio.wait_for(socket_.recv_multipart(), WAIT))[1] != b"REPORT":
            pass
        await socket_.send_multipart([b"asyncq/2", b"BYE", b"b"])
        return asyncq.queue.parse_stats(reply[3]) if len(reply) > 3 else {}
    finally:
        socket_.close(linger=100)


class ShardTest(AsyncCase):
    """Tests sharing one service (started with service_flags), each on a
    queue of its own, with the clients it made closed after it."""
    service_flags = ()
    durable = False

    @classmethod
    def setUpClass(cls):
        cls.service = Service(flags=cls.service_flags, durable=cls.durable)

    @classmethod
    def tearDownClass(cls):
        cls.service.stop()

    async def asyncSetUp(self):
        await super().asyncSetUp()
        self.name = f"{type(self).__name__}-{next(_names)}"
        self.clients = []

    async def asyncTearDown(self):
        for client in self.clients:
            await client.close(timeout=WAIT)

    def client(self, address=None, kind=asyncq.Queue, **options):
        client = kind(address or self.service.address(0), self.name, **options)
        self.clients.append(client)
        return client

    async def each_stats(self):
        """Every broker's stats of this test's queue, asked directly."""
        return [await raw_stats(port, self.name) for port in self.service.ports]

    async def get_all(self, q, count):
        got = []
        for _ in range(count):
            got.append(await asyncio.wait_for(q.get(), WAIT))
            q.task_done()
        return got


class Shards(ShardTest):
    async def test_a_client_given_one_address_finds_every_broker(self):
        q = self.client(self.service.address(1))
        await q.put(b"x")
        self.assertEqual(q.brokers, {shard: self.service.address(shard) for shard in range(3)})
        self.assertEqual(q.unreachable, {})
        self.assertEqual(set(await q.shard_stats()) <= {0, 1, 2}, True)
        self.assertEqual(bytes(await asyncio.wait_for(q.get(), WAIT)), b"x")
        q.task_done()
        self.assertEqual(await q.join(timeout=WAIT), (0, 0))

    async def test_puts_spread_over_the_brokers(self):
        q = self.client()
        for i in range(30):
            await q.put(b"%d" % i)  # each put a batch of its own: the next broker's
        for burst in range(3):  # a tick's sends: one batch, to one broker
            for i in range(5):
                await q.send(b"burst-%d-%d" % (burst, i))
            await asyncio.sleep(0)
        await q.flush()
        each = await self.each_stats()
        self.assertEqual([stats["puts"] for stats in each], [15, 15, 15])
        self.assertEqual((await q.stats())["puts"], 45)
        self.assertEqual({shard: stats["puts"] for shard, stats in (await q.shard_stats()).items()},
                         {0: 15, 1: 15, 2: 15})
        got = await self.get_all(q, 45)
        self.assertEqual({item.shard for item in got}, {0, 1, 2})
        self.assertTrue(all(item.id >> 56 == item.shard for item in got))
        self.assertEqual(sorted(got), sorted([b"%d" % i for i in range(30)] + [
            b"burst-%d-%d" % (burst, i) for burst in range(3) for i in range(5)]))
        self.assertEqual(await q.join(timeout=WAIT), (0, 0))

    async def test_one_getter_holds_one_item_and_gets_every_shards(self):
        producer = self.client(self.service.address(2))
        for i in range(30):
            await producer.put(b"%d" % i)
        self.assertEqual([stats["queued"] for stats in await self.each_stats()], [10, 10, 10])
        consumer = self.client()  # prefetch 0: one getter, one item
        got = []
        for _ in range(30):
            item = await asyncio.wait_for(consumer.get(), WAIT)
            each = await self.each_stats()
            self.assertEqual(sum(stats["inflight"] for stats in each), 1, each)
            self.assertEqual(consumer._consumer.waiting, 0)
            got.append(item)
            consumer.task_done()
        self.assertEqual(sorted(got), sorted(b"%d" % i for i in range(30)))
        self.assertEqual({item.shard for item in got}, {0, 1, 2})
        self.assertEqual(await consumer.join(timeout=WAIT), (0, 0))  # its acks went first

    async def test_getters_wait_for_items_put_later_on_any_shard(self):
        consumer = self.client(prefetch=2)
        getters = [asyncio.ensure_future(consumer.get()) for _ in range(3)]
        await asyncio.sleep(0.2)  # the credit is placed; no items yet
        producer = self.client()
        for shard in (2, 1, 0):
            await producer.put(b"for %d" % shard, key=_key_for(shard))
        got = [await asyncio.wait_for(getter, WAIT) for getter in getters]
        self.assertEqual(sorted(item.shard for item in got), [0, 1, 2])
        held = sum(stats["inflight"] for stats in await self.each_stats())
        self.assertLessEqual(held, 3 + 2)  # three getters and a prefetch of 2
        for item in got:
            consumer.task_done(item)
        self.assertEqual(await consumer.join(timeout=WAIT), (0, 0))

    async def test_a_join_waits_for_the_acks_of_every_shard(self):
        producer = self.client()
        for i in range(9):
            await producer.put(b"%d" % i)
        with self.assertRaisesRegex(TimeoutError, r"join timed out: 3 items still outstanding at "
                                    r"shard 0 at 127\.0\.0\.1:\d+; 3 items"):
            await producer.join(timeout=0.2)
        consumer = self.client(prefetch=9)
        got = [await asyncio.wait_for(consumer.get(), WAIT) for _ in range(9)]
        self.assertEqual(sorted(item.shard for item in got), [0] * 3 + [1] * 3 + [2] * 3)
        joined = asyncio.ensure_future(producer.join())
        await asyncio.sleep(0.1)  # the JOINs reached the brokers: 9 in flight
        self.assertFalse(joined.done())
        for item in got[:-1]:
            consumer.task_done(item)
            await asyncio.sleep(0.05)
            self.assertFalse(joined.done())
        consumer.task_done(got[-1])
        self.assertEqual(await asyncio.wait_for(joined, WAIT), (9, 0))
        self.assertEqual(sum(stats["outstanding"] for stats in await self.each_stats()), 0)
        self.assertEqual(await producer.join(timeout=WAIT), (0, 0))

    async def test_a_key_pins_its_items_to_one_shard_in_order(self):
        q = self.client()
        keys = {"alpha": [], b"beta": [], "gamma": []}
        for i in range(60):
            key = list(keys)[i % 3]
            await q.send(b"%s-%d" % (key.encode() if isinstance(key, str) else key, i), key=key)
            if i % 7 == 0:
                await asyncio.sleep(0)  # several batches
        await q.flush()
        shards = {key: asyncq.fnv1a32(key.encode() if isinstance(key, str) else key) % 3
                  for key in keys}
        each = await self.each_stats()
        for shard in range(3):
            expected = 20 * sum(1 for key in keys if shards[key] == shard)
            self.assertEqual(each[shard].get("puts", 0), expected)
        for item in await self.get_all(q, 60):
            key = item.split(b"-")[0]
            keys[key.decode() if key != b"beta" else key].append(item)
            self.assertEqual(item.shard, shards[key.decode() if key != b"beta" else key])
        for key, items in keys.items():
            self.assertEqual([int(item.split(b"-")[1]) for item in items],
                             sorted(int(item.split(b"-")[1]) for item in items))
        with self.assertRaisesRegex(TypeError, "key is bytes or str"):
            await q.put(b"x", key=12)
        await q.put(b"last", key="alpha")
        self.assertEqual((await q.shard_stats())[shards["alpha"]]["puts"],
                         each[shards["alpha"]]["puts"] + 1)

    async def test_shutdown_ends_gets_only_once_every_shard_is_empty(self):
        producer = self.client()
        for i in range(6):
            await producer.put(b"%d" % i)
        await producer.shutdown()
        with self.assertRaises(asyncq.QueueShutDown):
            await producer.put(b"refused")
        consumer = self.client()  # one getter: its credit must move to each shard
        got = await self.get_all(consumer, 6)
        self.assertEqual({item.shard for item in got}, {0, 1, 2})
        with self.assertRaises(asyncq.QueueShutDown):
            await asyncio.wait_for(consumer.get(), WAIT)
        await producer.reopen()
        await producer.put(b"again")
        self.assertEqual(bytes(await asyncio.wait_for(consumer.get(), WAIT)), b"again")
        consumer.task_done()
        self.assertEqual(await consumer.join(timeout=WAIT), (0, 0))

    async def test_peek_purge_and_delete_act_on_every_shard(self):
        q = self.client()
        for i in range(6):
            await q.put(b"%d" % i, priority=i % 2)
        peeked = await q.peek(10)
        self.assertEqual(sorted(item.payload for item in peeked), [b"%d" % i for i in range(6)])
        self.assertEqual({item.id >> 56 for item in peeked}, {0, 1, 2})
        self.assertEqual([item.priority for item in peeked], [0, 0, 0, 1, 1, 1])
        # n in all: the next n the service would deliver, of every shard's.
        self.assertEqual([item.priority for item in await q.peek(4)], [0, 0, 0, 1])
        paused = await q.pause()
        self.assertEqual(paused["paused"], 1)
        self.assertEqual([stats["paused"] for stats in await self.each_stats()], [1, 1, 1])
        await q.resume()
        self.assertEqual(await q.purge(), 6)
        await q.put(b"kept")
        self.assertEqual(await q.delete(), 1)
        await q.put(b"anew")
        self.assertEqual(bytes(await asyncio.wait_for(q.get(), WAIT)), b"anew")
        q.task_done()
        self.assertEqual(await q.join(timeout=WAIT), (0, 0))

    async def test_a_priority_queue_over_the_shards(self):
        q = self.client(kind=asyncq.PriorityQueue)
        for i, priority in enumerate([5, 1, 3, 1, 5, 2, 4, 0, 2]):
            await q.put((priority, b"%d" % i))
        got = [await asyncio.wait_for(q.get(), WAIT) for _ in range(9)]
        for priority, item in got:
            self.assertEqual(item.priority, priority)
            q.task_done((priority, item))
        for shard in range(3):  # lowest first at each broker
            mine = [priority for priority, item in got if item.shard == shard]
            self.assertEqual(mine, sorted(mine))
            self.assertEqual(len(mine), 3)
        self.assertEqual(await q.join(timeout=WAIT), (0, 0))


def _key_for(shard, count=3):
    """A key that lands on shard (of count)."""
    return next(key for key in (f"key-{i}" for i in range(1000))
                if asyncq.fnv1a32(key.encode()) % count == shard)


class DeadLetters(ShardTest):
    service_flags = ("--max-attempts", "1")

    async def test_dead_letters_of_every_shard_and_by_id_at_their_broker(self):
        q = self.client(prefetch=5)
        for shard in range(3):
            for i in range(2):
                await q.put(b"%d-%d" % (shard, i), key=_key_for(shard))
        for _ in range(6):
            q.nack(await asyncio.wait_for(q.get(), WAIT), reason="no")
        deadline = time.monotonic() + WAIT
        while len(dead := await q.dead_letters()) < 6:
            self.assertLess(time.monotonic(), deadline)
            await asyncio.sleep(0.05)
        self.assertEqual(sorted(letter.payload for letter in dead),
                         sorted(b"%d-%d" % (shard, i) for shard in range(3) for i in range(2)))
        for letter in dead:
            self.assertEqual(int(letter.payload[:1]), letter.id >> 56)
        self.assertEqual((await q.dead_letter(dead[0].id)).payload, dead[0].payload)
        self.assertEqual(await q.requeue_dead([letter for letter in dead
                                               if letter.payload.endswith(b"-0")]), 3)
        ones = [letter.id for letter in dead if letter.payload.endswith(b"-1")]
        self.assertEqual(await q.delete_dead(ones[:2]), 2)
        with self.assertRaises(asyncq.BrokerError) as missing:
            await q.delete_dead(ones[:1])  # deleted already
        self.assertEqual(missing.exception.code, 404)
        self.assertEqual(missing.exception.ids, (ones[0],))
        self.assertEqual(await q.purge_dead(), 1)
        got = await self.get_all(q, 3)
        self.assertEqual(sorted(got), [b"0-0", b"1-0", b"2-0"])
        self.assertEqual(await q.join(timeout=WAIT), (0, 0))


class Stopped(ShardTest):
    service_flags = ("--heartbeat-ms", "200")

    async def test_a_join_with_a_broker_stopped_times_out_naming_it(self):
        q = self.client()
        for i in range(6):
            await q.put(b"%d" % i)
        await self.get_all(q, 6)
        broker = self.service.brokers[1]
        broker.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            with self.assertRaisesRegex(
                    TimeoutError, rf"no answer from the broker of shard 1 at "
                    rf"{self.service.address(1)}") as raised:
                await q.join(timeout=0.5)
            self.assertNotIn("shard 0", str(raised.exception))
            self.assertLess(time.monotonic() - started, 5)
        finally:
            broker.process.send_signal(signal.SIGCONT)
        self.assertEqual(await q.join(timeout=WAIT), (0, 0))

    async def test_puts_go_to_the_brokers_up_while_one_is_stopped(self):
        q = self.client()
        await q.put(b"first")
        broker = self.service.brokers[2]
        broker.process.send_signal(signal.SIGSTOP)
        try:
            deadline = time.monotonic() + WAIT
            while q._producers.by_shard[2].session.up:  # found silent (3 heartbeats)
                self.assertLess(time.monotonic(), deadline)
                await asyncio.sleep(0.05)
            for i in range(10):
                await asyncio.wait_for(q.put(b"%d" % i), WAIT)
        finally:
            broker.process.send_signal(signal.SIGCONT)
        got = await self.get_all(q, 11)
        self.assertEqual(sorted(got), sorted([b"first"] + [b"%d" % i for i in range(10)]))
        self.assertEqual(await q.join(timeout=WAIT), (0, 0))

    async def test_a_getter_gets_from_the_brokers_up_while_one_is_stopped(self):
        producer = self.client()
        for shard in range(3):
            for i in range(2):
                await producer.put(b"%d-%d" % (shard, i), key=_key_for(shard))
        consumer = self.client()  # one getter: its credit is at one broker at a time
        got = {bytes(await asyncio.wait_for(consumer.get(), WAIT))}
        consumer.task_done()
        broker = self.service.brokers[1]
        broker.process.send_signal(signal.SIGSTOP)
        try:
            others = {b"%d-%d" % (shard, i) for shard in (0, 2) for i in range(2)}
            deadline = time.monotonic() + WAIT
            while not others <= got:
                self.assertLess(time.monotonic(), deadline, f"got only {sorted(got)}")
                got.add(bytes(await asyncio.wait_for(consumer.get(), WAIT)))
                consumer.task_done()
        finally:
            broker.process.send_signal(signal.SIGCONT)
        while len(got) < 6:  # shard 1's, once it is back (again if it was held)
            got.add(bytes(await asyncio.wait_for(consumer.get(), WAIT)))
            consumer.task_done()
        self.assertEqual(await consumer.join(timeout=WAIT), (0, 0))


class Killed(ShardTest):
    service_flags = ("--heartbeat-ms", "100", "--lease-ms", "5000")
    durable = True

    async def test_a_broker_killed_and_restarted_loses_no_confirmed_put(self):
        producer = self.client(timeout=2)
        consumer = self.client(prefetch=4)
        count = 300
        confirmed, received, putters, getters = put_and_get(producer, consumer, count)
        try:
            while len(confirmed) < 100:
                await asyncio.sleep(0.01)
            broker = self.service.brokers[1]
            broker.process.kill()
            broker.process.wait()
            await asyncio.sleep(0.5)
            broker.restart()
            await asyncio.wait_for(asyncio.gather(*putters), 3 * WAIT)
            self.assertEqual(confirmed, set(range(count)))
            deadline = time.monotonic() + 3 * WAIT
            while not confirmed <= received:
                if time.monotonic() > deadline:
                    feeds = {shard: (feed.credit, feed.confirmed, list(feed.asked), feed.out,
                                     feed.ready, feed.told, feed.session.up)
                             for shard, feed in consumer._consumer.feeds.items()}
                    self.fail(f"not delivered: {sorted(confirmed - received)[:20]}; "
                              f"{await self.each_stats()}; feeds {feeds}; "
                              f"held {len(consumer._consumer.held)} "
                              f"waiting {consumer._consumer.waiting}")
                await asyncio.sleep(0.05)
            joined = await producer.join(timeout=3 * WAIT)
            self.assertEqual(joined.dead, 0)
            self.assertEqual(sum(stats.get("outstanding", 0)
                                 for stats in await self.each_stats()), 0)
        finally:
            for task in putters + getters:
                task.cancel()
            await asyncio.gather(*putters, *getters, return_exceptions=True)
        self.assertGreater(producer.reconnects + consumer.reconnects, 0)
        self.assertGreater((await raw_stats(self.service.ports[1], self.name))["puts"], 0)
        await producer.put(b"after")
        self.assertEqual(bytes(await asyncio.wait_for(consumer.get(), WAIT)), b"after")
        consumer.task_done()
        self.assertEqual(await consumer.join(timeout=WAIT), (0, 0))


class Blocking(unittest.TestCase):
    def test_a_blocking_queue_given_every_address(self):
        service = Service()
        try:
            addresses = ",".join(service.address(shard) for shard in range(3))
            with asyncq.BlockingQueue(addresses, "blocking") as q:
                for i in range(6):
                    q.put(b"%d" % i, key="one key")
                self.assertEqual(sorted(q.brokers), [0, 1, 2])
                got = [q.get(timeout=WAIT) for _ in range(6)]
                self.assertEqual(got, [b"%d" % i for i in range(6)])  # one shard, in order
                self.assertEqual({item.shard for item in got},
                                 {asyncq.fnv1a32(b"one key") % 3})
                for item in got:
                    q.task_done(item)
                self.assertEqual(q.join(timeout=WAIT), (0, 0))
                self.assertEqual(sum(stats["puts"] for stats in q.shard_stats().values()), 6)
        finally:
            service.stop()


class Misconfigured(AsyncCase):
    async def test_two_brokers_with_one_shard_number_are_refused_naming_both(self):
        first, second = Broker(), Broker()  # both shard 0, each alone
        try:
            a, b = first.address[len("tcp://"):], second.address[len("tcp://"):]
            q = asyncq.Queue(f"{a},{b}", "twins")
            with self.assertRaises(asyncq.ShardConflict) as raised:
                await q.put(b"x")
            self.assertIn(a, str(raised.exception))
            self.assertIn(b, str(raised.exception))
            self.assertIn("shard 0", str(raised.exception))
            await q.close()
            same = asyncq.Queue(f"{a},localhost:{a.rpartition(':')[2]}", "twins")
            with self.assertRaisesRegex(asyncq.ShardConflict, "the same broker given twice"):
                await same.put(b"x")
            await same.close()
            async with asyncq.Queue(a, "twins") as one:  # one of them alone: fine
                await one.put(b"x")
                self.assertEqual(one.brokers, {0: a})
                self.assertEqual(bytes(await asyncio.wait_for(one.get(), WAIT)), b"x")
                one.task_done()
                self.assertEqual(await one.join(timeout=WAIT), (0, 0))
        finally:
            first.stop()
            second.stop()

    async def test_a_wrong_address_in_a_list_is_named_and_the_others_served(self):
        service = Service()
        try:
            wrong = f"127.0.0.1:{free_base(2)}"
            q = asyncq.Queue(f"{service.address(0)},{wrong}", "wrong", timeout=2)
            with self.assertLogs("asyncq", logging.WARNING) as logged:
                await q.put(b"x")
            self.assertIn(wrong, "\n".join(logged.output))
            self.assertEqual(list(q.unreachable), [wrong])
            self.assertIsInstance(q.unreachable[wrong], asyncq.BrokerUnreachable)
            self.assertRegex(str(q.unreachable[wrong]), rf"at {wrong}: .*[Cc]onnection refused")
            self.assertEqual(sorted(q.brokers), [0, 1, 2])
            self.assertEqual(bytes(await asyncio.wait_for(q.get(), WAIT)), b"x")
            q.task_done()
            self.assertEqual(await q.join(timeout=WAIT), (0, 0))
            await q.close()
            alone = asyncq.Queue(wrong, "wrong", timeout=2)  # nothing else: an error
            with self.assertRaisesRegex(asyncq.BrokerUnreachable, rf"at {wrong}: "):
                await alone.put(b"x")
            await alone.close()
        finally:
            service.stop()


class OlderBroker(AsyncCase):
    """A broker before 2.2 refuses HELLO's 4th field with 400: the client
    says HELLO again without it, and takes that broker as shard 0, alone."""

    async def test_hello_without_service_to_a_broker_that_refuses_it(self):
        context = zmq.asyncio.Context.instance()
        router = context.socket(zmq.ROUTER)
        base = free_base(2)
        router.bind(f"tcp://127.0.0.1:{base + 1}")
        hellos = []

        async def old_broker():
            while True:
                peer, *frames = await router.recv_multipart()
                command, tag = frames[1], frames[2]
                if command == b"HELLO":
                    hellos.append(frames[2:])
                    if len(frames) == 6:
                        await router.send_multipart([peer, b"asyncq/2", b"ERROR", b"400",
                                                     b"MALFORMED", tag, b"", b"too many frames"])
                    else:
                        await router.send_multipart(
                            [peer, b"asyncq/2", b"WELCOME", tag, b"old", b"1048576", b"1000",
                             b"1024", b"4096", b"8388608", b"produce,consume,admin", b"memory"])
                elif command == b"STATS":
                    await router.send_multipart([peer, b"asyncq/2", b"REPORT", tag,
                                                 b"queue=old queued=0 puts=7 state=open"])

        server = asyncio.ensure_future(old_broker())
        try:
            q = asyncq.Queue(f"127.0.0.1:{base}", "old")
            self.assertEqual((await asyncio.wait_for(q.stats(), WAIT))["puts"], 7)
            self.assertEqual([hello[2:] for hello in hellos], [[b"1", b"service"], [b"1"]])
            self.assertEqual(q.brokers, {0: f"127.0.0.1:{base}"})
            self.assertEqual((await q.shard_stats())[0]["puts"], 7)
            await q.close()
        finally:
            server.cancel()
            router.close(linger=0)


class Unit(unittest.TestCase):
    def test_fnv1a32(self):
        self.assertEqual(asyncq.fnv1a32(b""), 0x811C9DC5)
        self.assertEqual(asyncq.fnv1a32(b"a"), 0xE40C292C)
        self.assertEqual(asyncq.fnv1a32(b"foobar"), 0xBF9CF968)

    def test_addresses(self):
        q = asyncq.Queue("a:5557,b:5559, ipc:///tmp/x")
        self.assertEqual(q._service.given, ["a:5557", "b:5559", "ipc:///tmp/x"])
        for bad in ("a:5557,", ",a", "a:5557,b:99999"):
            with self.subTest(address=bad):
                with self.assertRaises(ValueError):
                    asyncq.Queue(bad)


if __name__ == "__main__":
    unittest.main()
