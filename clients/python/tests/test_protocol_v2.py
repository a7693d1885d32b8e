"""What asyncq/2 brought, against the real C broker: PUTS batches, ITEMS
batches and binary acks, CREDITED, withdrawn credit, answered heartbeats,
the producer's window, LOST, a lazily opened PUSH socket and CURVE keys
(HELD is in test_queue_semantics.Maxsize)."""
import asyncio
import itertools
import os
import time
import unittest
from unittest import mock

import zmq.auth

from broker import AsyncCase, Broker, Keys, silent_connection, until

import asyncq

_names = itertools.count(1)


class BrokerTest(AsyncCase):
    """A broker of its own for each test, started with broker_flags."""
    broker_flags = ()

    def setUp(self):
        self.broker = Broker(*self.broker_flags)
        self.name = f"{type(self).__name__}-{next(_names)}"
        self.clients = []

    def tearDown(self):
        self.broker.stop()

    async def asyncTearDown(self):
        for client in self.clients:
            await client.close(timeout=10)

    def client(self, **options):
        client = asyncq.Queue(self.broker.address, self.name, **options)
        self.clients.append(client)
        return client

    async def until_stat(self, key, value):
        """Waits until the broker's stats of this test's queue show key=value."""
        watcher = self.client()
        deadline = time.monotonic() + 10
        while (stats := await watcher.stats()).get(key) != value:
            self.assertLess(time.monotonic(), deadline, f"{key} never became {value}: {stats}")
            await asyncio.sleep(0.01)


class Batches(BrokerTest):
    async def test_a_thousand_sends_then_flush_arrive_in_order(self):
        producer = self.client()
        for i in range(1000):
            await producer.send(str(i))
        await producer.flush()
        self.assertEqual(producer.held, None)
        self.assertEqual((await producer.stats())["puts"], 1000)
        consumer = self.client(prefetch=99)
        got = []
        for _ in range(1000):
            got.append(int(await consumer.get()))
            consumer.task_done()
        self.assertEqual(got, list(range(1000)))  # one producer, one consumer: FIFO
        self.assertEqual(await consumer.join(timeout=10), asyncq.Joined(0, 0))
        self.assertEqual(consumer.reconnects, 0)

    async def test_items_batch_delivered_and_acked_together(self):
        payloads = [b"", bytes(range(256)), "é".encode()] + [b"%d" % i for i in range(297)]
        producer = self.client()
        for payload in payloads:
            await producer.send(payload)
        await producer.flush()
        consumer = self.client(prefetch=299)
        # Every item was queued before the consumer's CREDIT: the broker
        # sends them in one ITEMS, so once the first is got, all are here.
        got = [await consumer.get()]
        got += [consumer.get_nowait() for _ in range(299)]
        self.assertEqual(got, payloads)
        self.assertEqual({item.attempt for item in got}, {1})
        self.assertEqual({item.queue for item in got}, {self.name})
        self.assertEqual(len({item.id for item in got}), 300)
        for item in got:
            consumer.task_done(item)  # one ACK of 300 ids
        self.assertEqual(await consumer.join(timeout=10), asyncq.Joined(0, 0))
        stats = await producer.stats()
        self.assertEqual((stats["acked"], stats["outstanding"]), (300, 0))
        self.assertEqual(list(consumer.errors), [])

    async def test_roles_and_persistence_come_with_welcome(self):
        q = self.client()
        self.assertIsNone(q.roles)
        await q.put(b"x")
        # Without keys, a loopback client may do everything.
        self.assertEqual(q.roles, {"produce", "consume", "admin"})
        self.assertEqual(q.persistence, "memory")


class BatchLimits(BrokerTest):
    """Which puts travel together, seen from the broker's side: a PUTS for
    a queue shut down is refused whole, by one ERROR naming its seq range."""
    broker_flags = ("--max-batch", "300", "--max-item", "200000")

    async def refusal_of(self, *items):
        """The first refusal flush() raises for items sent in one tick to
        this test's queue, shut down: it names the first message's seqs."""
        q = self.client()
        for item in items:
            await q.send(item)
        with self.assertRaises(asyncq.QueueShutDown) as raised:
            await q.flush()
        await q.flush()  # the refusals were reported once
        return raised.exception.subject

    async def test_puts_of_one_tick_go_in_batches_of_max_batch(self):
        self.broker.run("asyncq", "shutdown", "-q", self.name)
        self.assertEqual(await self.refusal_of(*[b"x"] * 1000), b"1-300")

    async def test_a_batch_holds_at_most_max_item_bytes(self):
        self.broker.run("asyncq", "shutdown", "-q", self.name)
        # 4 + 60000 bytes each: three fit in 200000, four do not.
        self.assertEqual(await self.refusal_of(*[b"y" * 60000] * 10), b"1-3")

    async def test_a_large_item_goes_alone(self):
        self.broker.run("asyncq", "shutdown", "-q", self.name)
        self.assertEqual(await self.refusal_of(b"z" * 65536, b"small"), b"1")

    async def test_a_change_of_lease_starts_a_new_batch(self):
        self.broker.run("asyncq", "shutdown", "-q", self.name)
        q = self.client()
        await q.send(b"a")
        await q.send(b"b")
        third = await q.send(b"c", lease=5)
        with self.assertRaises(asyncq.QueueShutDown) as raised:
            await q.flush()
        self.assertEqual((raised.exception.subject, third), (b"1-2", 3))

    async def test_put_raises_its_own_refusal(self):
        self.broker.run("asyncq", "shutdown", "-q", self.name)
        q = self.client()
        await q.send(b"sent")
        with self.assertRaises(asyncq.QueueShutDown) as raised:
            await q.put(b"put")  # in the same PUTS as "sent"
        self.assertEqual(raised.exception.subject, b"1-2")
        with self.assertRaises(asyncq.QueueShutDown):
            await q.flush()  # the refusal of "sent", not claimed by a put()


class Credit(BrokerTest):
    broker_flags = ("--max-credit", "10")

    async def test_a_refused_credit_raises_from_get(self):
        q = self.client(prefetch=10)
        with self.assertRaises(asyncq.BrokerError) as raised:
            await asyncio.wait_for(q.get(), 10)  # CREDITED awaited, not hanging
        self.assertEqual(raised.exception.code, 429)
        # The client may try again with a credit the broker takes.
        q.prefetch = 9  # with the get() waiting: a credit of 10
        getter = asyncio.create_task(q.get())
        await self.until_stat("consumers", 1)
        await self.client().put(b"ok")
        self.assertEqual(await asyncio.wait_for(getter, 10), b"ok")
        q.task_done()

    async def test_credit_withdrawn_after_three_expired_leases_is_asked_again(self):
        q = self.client()
        await q.put(b"slow", lease=0.1)
        for attempt in (1, 2, 3):
            item = await asyncio.wait_for(q.get(), 10)  # never acked: the lease expires
            self.assertEqual(item.attempt, attempt)
        # The third expiry withdraws the credit (ERROR 408 naming the queue);
        # the get() waiting asks for it again.
        item = await asyncio.wait_for(q.get(), 10)
        self.assertEqual((item, item.attempt), (b"slow", 4))
        self.assertEqual(list(q.errors), [])
        q.task_done(item)
        self.assertEqual(await q.join(timeout=10), asyncq.Joined(0, 0))
        self.assertEqual((await q.stats())["expired"], 3)

    async def test_an_ack_too_late_is_answered_with_its_id(self):
        first, second = self.client(), self.client()
        getter = asyncio.create_task(first.get())
        await self.until_stat("consumers", 1)
        await self.client().put(b"late", lease=0.5)
        item = await asyncio.wait_for(getter, 10)
        # Once the lease expires, the item goes to the other consumer.
        getter = asyncio.create_task(second.get())
        await self.until_stat("consumers", 2)
        again = await asyncio.wait_for(getter, 10)
        self.assertEqual((again.id, again.attempt), (item.id, 2))
        first.task_done(item)  # taken back from first: refused, not counted
        await until(lambda: first.errors, "the answer to the late ack")
        error = first.errors[0]
        self.assertEqual((error.code, error.ids), (408, (item.id,)))
        second.task_done(again)
        self.assertEqual(await second.join(timeout=10), asyncq.Joined(0, 0))

    async def test_limits_checked_before_sending(self):
        q = self.client()
        with self.assertRaises(ValueError):
            await q.join(timeout=86401)
        with self.assertRaises(ValueError):
            await q.put(b"x", lease=-1)
        await q.put(b"x")
        item = await q.get()
        with self.assertRaises(ValueError):
            await q.nack(item, delay=86401)
        await q.nack(item, reason="é" * 1000)  # cut to 1024 bytes of UTF-8
        again = await asyncio.wait_for(q.get(), 10)
        self.assertEqual(again.attempt, 2)
        q.task_done(again)
        await q.join(timeout=10)
        self.assertEqual(list(q.errors), [])


class Heartbeats(BrokerTest):
    # A session that leaves more than 1024 bytes of replies unread, as far as
    # its answered heartbeats tell, is closed: a dozen stats replies do that
    # unless the client answers every heartbeat.
    broker_flags = ("--heartbeat-ms", "50", "--max-pending", "1024")

    async def test_an_idle_client_answers_heartbeats_and_keeps_its_sessions(self):
        q = self.client()
        await q.put(b"kept")
        item = await q.get()
        for _ in range(8):
            await q.stats()
            await asyncio.sleep(0.15)  # idle for three heartbeat intervals
        q.task_done(item)
        self.assertEqual(await q.join(timeout=10), asyncq.Joined(0, 0))
        self.assertEqual(item.attempt, 1)
        self.assertEqual(q.reconnects, 0)
        self.assertEqual(list(q.errors), [])


class Window(BrokerTest):
    # The broker holds at most 10 puts of a producer for a full queue and
    # refuses more (429): the client must wait for confirmations instead.
    broker_flags = ("--maxsize", "5", "--window", "10")

    async def test_a_producer_keeps_no_more_unconfirmed_puts_than_the_window(self):
        producer = self.client()

        async def send_all():
            for i in range(50):
                await producer.send(str(i))
            await producer.flush()  # raises if a put was refused

        sender = asyncio.create_task(send_all())
        while producer.held is None and not sender.done():
            await asyncio.sleep(0.01)
        self.assertFalse(sender.done())  # it waits: the queue is full
        consumer = self.client(prefetch=4)
        got = []
        for _ in range(50):
            got.append(int(await asyncio.wait_for(consumer.get(), 10)))
            consumer.task_done()
        await asyncio.wait_for(sender, 10)
        self.assertEqual(got, list(range(50)))
        self.assertEqual((await producer.stats())["puts"], 50)


class Lost(BrokerTest):
    broker_flags = ("--heartbeat-ms", "100")

    async def test_puts_lost_on_the_way_are_sent_again(self):
        q = self.client()
        await q.put(b"0")  # the PUSH socket is open
        push = q._producer._push
        send, lost = push.send, []

        def lossy_send(frames):
            """Loses the first message, as a broken connection would."""
            if not lost:
                lost.append(frames)
                return None
            return send(frames)

        with mock.patch.object(push, "send", lossy_send):
            await q.send(b"1")
            await asyncio.sleep(0)  # the end of the tick sends "1": lost
            await q.send(b"2")      # arrives after a gap: dropped too
            # The broker answers the SYNC with LOST (410); the client sends
            # both again, then SYNCs once more.
            await asyncio.wait_for(q.flush(), 10)
        self.assertEqual(lost[0][1], b"PUT")
        self.assertEqual((await q.stats())["puts"], 3)
        got = []
        for _ in range(3):
            got.append(await asyncio.wait_for(q.get(), 10))
            q.task_done()
        self.assertEqual(got, [b"0", b"1", b"2"])


class Connections(BrokerTest):
    broker_flags = ("--hello-timeout-ms", "300")
    refused = "no HELLO (or put) in time"

    async def test_a_client_that_does_not_put_opens_no_push_connection(self):
        q = self.client()
        await q.stats()
        self.assertEqual(await q.join(timeout=5), asyncq.Joined(0, 0))
        # Opened after the client's connections: once the broker closed this
        # silent one, it would have closed a silent PUSH of the client's too.
        await asyncio.wait_for(silent_connection(self.broker.address), 10)
        self.assertEqual(self.broker.log().count(self.refused), 1)
        await q.put(b"now")  # the PUSH connection opens with the put
        self.assertEqual((await q.stats())["puts"], 1)


class Curve(AsyncCase):
    @classmethod
    def setUpClass(cls):
        # Made before the broker starts: it reads its clients directory then
        # (and on SIGHUP).
        cls.keys = Keys()
        cls.addClassCleanup(cls.keys.remove)
        cls.secret = cls.keys.make("client", "produce,consume,admin", allow=True)
        cls.reader = cls.keys.make("reader", "consume", allow=True)
        cls.stranger = cls.keys.make("stranger", "produce,consume")
        cls.keys.make("impostor", "produce")
        cls.broker = Broker(*cls.keys.broker_flags())
        cls.addClassCleanup(cls.broker.stop)

    def setUp(self):
        # The client must see no keys but those each test gives.
        environ = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCQ_")}
        patcher = mock.patch.dict(os.environ, environ, clear=True)
        patcher.start()
        self.addCleanup(patcher.stop)
        self.name = f"curve-{next(_names)}"

    async def round_trip(self, **options):
        async with asyncq.Queue(self.broker.address, self.name, **options) as q:
            await q.put(b"secret")
            self.assertEqual(await q.get(), b"secret")
            q.task_done()
            self.assertEqual(await q.join(timeout=10), asyncq.Joined(0, 0))
            return q

    async def test_a_client_with_the_right_keys_works(self):
        q = await self.round_trip(curve_secret=self.secret, server_key=self.keys.public("broker"))
        self.assertEqual(q.roles, {"produce", "consume", "admin"})

    async def test_keys_from_the_environment_and_a_z85_server_key(self):
        server_key = zmq.auth.load_certificate(self.keys.public("broker"))[0].decode()
        os.environ.update(ASYNCQ_CURVE_SECRET=self.secret, ASYNCQ_SERVER_KEY=server_key)
        await self.round_trip()
        q = asyncq.Queue(self.broker.address, self.name)
        self.assertEqual((await q.stats())["queued"], 0)  # STATS uses the keys too
        await q.close()

    async def test_a_wrong_server_key_is_a_key_mismatch(self):
        q = asyncq.Queue(self.broker.address, self.name, timeout=1, curve_secret=self.secret,
                         server_key=self.keys.public("impostor"))
        with self.assertRaisesRegex(asyncq.KeyMismatch, "broker's key does not match"):
            await q.put(b"x")
        with self.assertRaises(asyncq.KeyMismatch):
            await q.stats()
        await q.close()

    async def test_a_key_not_in_the_clients_directory_is_refused(self):
        q = asyncq.Queue(self.broker.address, self.name, timeout=1, curve_secret=self.stranger,
                         server_key=self.keys.public("broker"))
        with self.assertRaisesRegex(asyncq.KeyRefused, "refused this client's key"):
            await q.get()
        await q.close()

    async def test_a_client_without_keys_is_told_keys_are_required(self):
        # Without keys, the failure may show only after a reconnect or two.
        q = asyncq.Queue(self.broker.address, self.name, timeout=2.5)
        with self.assertRaisesRegex(asyncq.KeysRequired, "requires CURVE keys"):
            await q.join()
        await q.close()

    async def test_half_a_configuration_is_refused_at_once(self):
        with self.assertRaises(ValueError):
            asyncq.Queue(self.broker.address, curve_secret=self.secret)
        with self.assertRaises(ValueError):
            asyncq.Queue(self.broker.address, curve_secret=self.keys.public("broker"),
                         server_key=self.keys.public("broker"))  # not a secret certificate

    async def test_roles_from_the_certificate_limit_the_client(self):
        q = asyncq.Queue(self.broker.address, self.name, curve_secret=self.reader,
                         server_key=self.keys.public("broker"))
        with self.assertRaises(asyncq.BrokerError) as raised:
            await q.put(b"x")
        self.assertEqual(raised.exception.code, 403)
        self.assertEqual(q.roles, {"consume"})
        with self.assertRaises(asyncq.BrokerError):
            await q.close()  # the put cannot be confirmed: close() says so too

    async def test_c_producer_with_keys_to_python_consumer(self):
        self.broker.run("asyncq-producer", "-q", self.name, "--count", "20", "--max-sleep", "0",
                        "--curve-secret", self.secret, "--server-key", self.keys.public("broker"))
        async with asyncq.Queue(self.broker.address, self.name, prefetch=7,
                                curve_secret=self.secret,
                                server_key=self.keys.public("broker")) as q:
            for _ in range(20):
                await q.get()
                q.task_done()
            self.assertEqual(await q.join(timeout=10), asyncq.Joined(0, 0))


if __name__ == "__main__":
    unittest.main()
