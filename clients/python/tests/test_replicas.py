"""A shard that is a group of replicas (PROTOCOL.md 4.16): WELCOME's
`replicas`, 421 NOT_LEADER followed to the leader (or, during an election,
the next replica tried), several addresses of one group as one shard, and
a new leader found when the old one dies or steps down, the unconfirmed
puts sent to it again. Against a fake group on loopback (ROUTER and PULL
sockets answering as section 4.16 says), and, when the broker has
--peers, against three real replicas whose leader is killed mid-run."""
import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import zmq
import zmq.asyncio

from broker import AsyncCase, Broker, _die_with_parent, program, put_and_get, until
from test_shards import free_base

import asyncq
from asyncq.protocol import PUTS_ENTRY, parse_groups, parse_service

WAIT = 10  # seconds: a condition that never comes fails the test, not hangs it
_names = iter(range(1, 1000000))


class FakeGroup:
    """count replicas of one shard on 127.0.0.1, each a ROUTER (PORT+1) and
    a PULL (PORT), answering as PROTOCOL.md 4.16 says: the leader WELCOMEs
    (persistence `replicated`, its service field listing the replicas),
    sends HEARTBEATs, takes puts and answers SYNC once it has every seq up
    to it; the others answer HELLO with 421 naming the leader (none while
    .leader is None: an election), anything else with 412, and drop puts.
    The group's log is shared: puts a leader confirmed are the next
    leader's; kill() loses those it had not."""

    def __init__(self, count=3, heartbeat_ms=100):
        self.context = zmq.asyncio.Context.instance()
        self.heartbeat_ms = heartbeat_ms
        base = free_base(3 * count)
        self.ports = [base + 3 * index for index in range(count)]
        self.addresses = [f"127.0.0.1:{port}" for port in self.ports]
        self.leader = 0      # the index of the leader; None: an election
        self.term = 1        # the leader's broker-id is lead-TERM
        self.hold_syncs = False  # the leader takes puts and answers no SYNC
        self.hellos = [[] for _ in range(count)]  # (client id, answer) per replica
        self.puts = {}       # (producer, seq) -> payload: the group's log
        self.committed = set()  # (producer, seq) a SYNCED covered
        self.syncs = []      # (replica, peer, tag, producer, seq) waiting
        self.peers = [set() for _ in range(count)]  # sessions of each (the leader's)
        self.silent = set()  # replicas that answer nothing (a host stopped, or cut off)
        self.routers, self.pulls, self.tasks = [], [], []
        for index, port in enumerate(self.ports):
            router = self.context.socket(zmq.ROUTER)
            router.bind(f"tcp://127.0.0.1:{port + 1}")
            pull = self.context.socket(zmq.PULL)
            pull.bind(f"tcp://127.0.0.1:{port}")
            self.routers.append(router)
            self.pulls.append(pull)
            self.tasks += [asyncio.ensure_future(self._serve(index)),
                           asyncio.ensure_future(self._take_puts(index))]
        self.tasks.append(asyncio.ensure_future(self._beat()))

    def service(self):
        return f"shard=0 replicas={','.join(self.addresses)} brokers="

    async def _serve(self, index):
        router = self.routers[index]
        while True:
            peer, *frames = await router.recv_multipart()
            command, fields = frames[1], frames[2:]
            tag = fields[0] if fields else b""
            if command == b"HEARTBEAT" or command == b"BYE" or index in self.silent:
                continue
            if index != self.leader:
                if command == b"HELLO":
                    leader = b"" if self.leader is None else self.addresses[self.leader].encode()
                    self.hellos[index].append((fields[1].decode(), "421"))
                    await router.send_multipart([peer, b"asyncq/2", b"ERROR", b"421",
                                                 b"NOT_LEADER", tag, leader, b"not the leader"])
                else:
                    await router.send_multipart([peer, b"asyncq/2", b"ERROR", b"412",
                                                 b"NO_SESSION", tag, b"", b"no session"])
                continue
            if command == b"HELLO":
                self.hellos[index].append((fields[1].decode(), "WELCOME"))
                self.peers[index].add(peer)
                await router.send_multipart(
                    [peer, b"asyncq/2", b"WELCOME", tag, b"lead-%d" % self.term, b"1048576",
                     b"%d" % self.heartbeat_ms, b"1024", b"4096", b"8388608",
                     b"produce,consume,admin", b"replicated", self.service().encode()])
            elif command == b"SYNC":
                self.syncs.append((index, peer, tag, fields[1].decode(), int(fields[2])))
                await self._answer_syncs()
            elif command == b"STATS":
                await router.send_multipart([peer, b"asyncq/2", b"REPORT", tag])

    async def _take_puts(self, index):
        pull = self.pulls[index]
        while True:
            frames = await pull.recv_multipart()
            if index != self.leader:
                continue  # a follower drops puts
            command, producer, seq = frames[1], frames[2].decode(), int(frames[3])
            if command == b"PUT":
                payloads = [frames[6]]
            else:
                count, items, payloads, at = int(frames[4]), frames[7], [], 0
                for _ in range(count):
                    (length,) = PUTS_ENTRY.unpack_from(items, at)
                    payloads.append(items[at + 4:at + 4 + length])
                    at += 4 + length
            for offset, payload in enumerate(payloads):
                self.puts.setdefault((producer, seq + offset), payload)  # a resend: once
            await self._answer_syncs()

    async def _answer_syncs(self):
        if self.hold_syncs:
            return
        waiting, self.syncs = self.syncs, []
        for index, peer, tag, producer, seq in waiting:
            if index != self.leader:
                continue  # a leader that stepped down forgot it
            if all((producer, number) in self.puts for number in range(1, seq + 1)):
                self.committed.update((producer, number) for number in range(1, seq + 1))
                await self.routers[index].send_multipart(
                    [peer, b"asyncq/2", b"SYNCED", tag, producer.encode(), b"%d" % seq])
            else:
                self.syncs.append((index, peer, tag, producer, seq))

    async def _beat(self):
        number = 0
        while True:
            await asyncio.sleep(self.heartbeat_ms / 1000)
            number += 1
            if self.leader is not None:
                for peer in list(self.peers[self.leader]):
                    await self.routers[self.leader].send_multipart(
                        [peer, b"asyncq/2", b"HEARTBEAT", b"%d" % number])

    def payloads(self):
        return {payload for payload in self.puts.values()}

    def elect(self, index):
        """index leads from now on, with a new broker-id; its sessions are
        new."""
        self.term += 1
        self.leader = index
        if index is not None:
            self.peers[index].clear()

    def down(self, index):
        """index's process is gone: its sockets close, nothing answers there."""
        self.tasks[2 * index].cancel()
        self.tasks[2 * index + 1].cancel()
        self.routers[index].close(linger=0)
        self.pulls[index].close(linger=0)

    def kill(self, index, successor):
        """The leader index dies, losing the puts it had not confirmed;
        successor leads."""
        self.down(index)
        self.puts = {key: payload for key, payload in self.puts.items() if key in self.committed}
        self.syncs = []
        self.hold_syncs = False
        self.elect(successor)

    async def close(self):
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for sockets in (self.routers, self.pulls):
            for socket_ in sockets:
                socket_.close(linger=0)


class Parsing(unittest.TestCase):
    def test_the_service_field_with_replicas(self):
        service = parse_service(b"shard=0 replicas=a:5557,b:5557,c:5557 brokers=")
        self.assertEqual(service, (0, (), ("a:5557", "b:5557", "c:5557")))
        self.assertEqual(service.replicas, ("a:5557", "b:5557", "c:5557"))
        self.assertEqual(parse_service(b"shard=2 brokers=:1,:3,:5"), (2, (":1", ":3", ":5"), ()))
        self.assertEqual(parse_service(b"later=x replicas=a:1 shard=1 brokers=b:2 more=y"),
                         (1, ("b:2",), ("a:1",)))
        for bad in (b"shard=0 replicas=a:1,,b:1 brokers=", b"shard=0 replicas=, brokers=",
                    b"replicas=a:1 brokers="):
            with self.subTest(field=bad):
                self.assertIsNone(parse_service(bad))

    def test_a_welcome_carries_the_replicas_and_replicated(self):
        welcome = asyncq.protocol.parse_welcome(
            [b"h1", b"id", b"1048576", b"1000", b"1024", b"4096", b"8388608", b"produce",
             b"replicated", b"shard=0 replicas=a:5557,b:5557 brokers="])
        self.assertEqual(welcome.persistence, "replicated")
        self.assertEqual(welcome.replicas, ("a:5557", "b:5557"))
        self.assertEqual((welcome.shard, welcome.brokers), (0, ()))
        alone = asyncq.protocol.parse_welcome(
            [b"h1", b"id", b"1048576", b"1000", b"1024", b"4096", b"8388608", b"produce",
             b"memory", b"shard=0 brokers="])
        self.assertEqual(alone.replicas, ())

    def test_the_groups_of_a_service_of_groups(self):
        field = (b"shard=0 replicas=a:1,a:2,a:3 brokers=a:1,b:1,c:1 "
                 b"groups=a:1|a:2|a:3,b:1|b:2|b:3,c:1 later=x")
        self.assertEqual(parse_groups(field),
                         (("a:1", "a:2", "a:3"), ("b:1", "b:2", "b:3"), ("c:1",)))
        self.assertEqual(parse_service(field), (0, ("a:1", "b:1", "c:1"), ("a:1", "a:2", "a:3")))
        self.assertEqual(parse_groups(b"shard=0 brokers=a:1,b:1"), ())
        welcome = asyncq.protocol.parse_welcome(
            [b"h1", b"id", b"1048576", b"1000", b"1024", b"4096", b"8388608", b"produce",
             b"replicated", field])
        self.assertEqual(welcome.groups, parse_groups(field))
        self.assertEqual(welcome.brokers, ("a:1", "b:1", "c:1"))
        for bad in (b"groups=a:1||a:2,b:1", b"groups=a:1,,b:1", b"groups=a:1|,b:1",
                    b"groups=,"):
            with self.subTest(field=bad):
                self.assertIsNone(parse_groups(b"shard=0 brokers=a:1,b:1 " + bad))
        # A shard in one list and not in the other: not as 4.16 says.
        self.assertIsNone(asyncq.protocol.parse_welcome(
            [b"h1", b"id", b"1048576", b"1000", b"1024", b"4096", b"8388608", b"produce",
             b"replicated", b"shard=0 brokers=a:1,b:1 groups=a:1|a:2"]))

    def test_421_is_not_leader_naming_the_leader(self):
        error = asyncq.BrokerError.from_fields([b"421", b"NOT_LEADER", b"hello3", b"b:5557",
                                                b"not the leader"])
        self.assertIsInstance(error, asyncq.NotLeader)
        self.assertEqual((error.code, error.name, error.tag, error.leader),
                         (421, "NOT_LEADER", b"hello3", "b:5557"))
        election = asyncq.BrokerError.from_fields([b"421", b"NOT_LEADER", b"hello4", b"", b"x"])
        self.assertIsInstance(election, asyncq.NotLeader)
        self.assertIsNone(election.leader)


class Fake(AsyncCase):
    async def asyncSetUp(self):
        await super().asyncSetUp()
        self.group = FakeGroup()
        self.name = f"replicas-{next(_names)}"
        self.clients = []

    async def asyncTearDown(self):
        for client in self.clients:
            await client.close(timeout=1)
        await self.group.close()

    def client(self, address, **options):
        client = asyncq.Queue(address, self.name, **options)
        self.clients.append(client)
        return client

    async def test_a_follower_given_alone_leads_to_the_leader(self):
        self.group.elect(1)
        q = self.client(self.group.addresses[2])
        await asyncio.wait_for(q.put(b"x"), WAIT)
        self.assertEqual(q.brokers, {0: self.group.addresses[1]})
        self.assertEqual(q.unreachable, {})
        self.assertEqual(q.persistence, "replicated")
        self.assertEqual([answer for _, answer in self.group.hellos[2]], ["421"])
        self.assertEqual([answer for _, answer in self.group.hellos[1]], ["WELCOME"])
        self.assertEqual(self.group.payloads(), {b"x"})

    async def test_every_address_of_a_group_is_one_shard(self):
        q = self.client(",".join(self.group.addresses))
        for i in range(5):
            await asyncio.wait_for(q.put(b"%d" % i, key="k%d" % i), WAIT)
        self.assertEqual(q.brokers, {0: self.group.addresses[0]})  # no ShardConflict
        self.assertEqual(q.unreachable, {})
        self.assertEqual(q._service.count, 1)  # keys: one shard
        self.assertEqual(self.group.payloads(), {b"%d" % i for i in range(5)})
        # The followers sent it on; the leader WELCOMEd each address's session.
        self.assertEqual([answer for _, answer in self.group.hellos[1]], ["421"])
        self.assertEqual([answer for _, answer in self.group.hellos[2]], ["421"])

    async def test_a_follower_down_is_not_an_address_left_out(self):
        self.group.down(2)
        q = self.client(f"{self.group.addresses[1]},{self.group.addresses[2]}", timeout=2)
        await asyncio.wait_for(q.put(b"x"), WAIT)
        self.assertEqual(q.brokers, {0: self.group.addresses[0]})
        self.assertEqual(q.unreachable, {})  # the leader lists it: a replica down, not a typo

    async def test_a_silent_replica_is_not_waited_for_the_whole_timeout(self):
        # Given every replica, one silent (its host stopped, or cut off):
        # the queue opens once the others answered and 1.5 s have passed,
        # not after the whole connect time.
        self.group.silent.add(2)
        q = self.client(",".join(self.group.addresses), timeout=5)
        started = time.monotonic()
        await asyncio.wait_for(q.put(b"x"), WAIT)
        self.assertLess(time.monotonic() - started, 4)
        self.assertEqual(q.brokers, {0: self.group.addresses[0]})
        self.assertEqual(q.unreachable, {})  # the leader lists it: a replica, not a typo
        self.assertEqual(self.group.payloads(), {b"x"})

    async def test_during_an_election_the_next_replica_is_tried(self):
        self.group.leader = None
        q = self.client(self.group.addresses[1])
        put = asyncio.ensure_future(q.put(b"x"))
        await until(lambda: len(self.group.hellos[1]) >= 2, "HELLO again after 421")
        self.assertFalse(put.done())
        self.group.elect(2)
        await asyncio.wait_for(put, WAIT)
        self.assertEqual(q.brokers, {0: self.group.addresses[2]})
        self.assertEqual(self.group.hellos[1][0][1], "421")

    async def test_no_leader_in_time_is_unreachable_naming_the_421(self):
        self.group.leader = None
        q = self.client(self.group.addresses[0], timeout=1)
        with self.assertRaisesRegex(asyncq.BrokerUnreachable,
                                    "no leader of the replicas") as raised:
            await q.put(b"x")
        self.assertIsInstance(raised.exception.__cause__, asyncq.NotLeader)
        self.assertGreater(len(self.group.hellos[0]), 1)  # asked again, every 250 ms

    async def test_a_leader_killed_its_unconfirmed_puts_go_to_the_next(self):
        q = self.client(",".join(self.group.addresses))
        for i in range(5):
            await asyncio.wait_for(q.put(b"%d" % i), WAIT)
        self.group.hold_syncs = True
        for i in range(5, 10):
            await q.send(b"%d" % i)  # taken by the leader, never confirmed
        await until(lambda: len(self.group.puts) == 10, "the puts at the leader")
        self.group.kill(0, successor=2)
        self.assertEqual(len(self.group.puts), 5)  # not committed: lost with it
        await asyncio.wait_for(q.flush(), WAIT)
        self.assertEqual(self.group.payloads(), {b"%d" % i for i in range(10)})
        self.assertEqual(q.brokers, {0: self.group.addresses[2]})
        self.assertGreater(q.reconnects, 0)
        await asyncio.wait_for(q.put(b"after"), WAIT)
        self.assertIn(b"after", self.group.payloads())

    async def test_a_leader_that_steps_down_answers_412_then_421(self):
        q = self.client(self.group.addresses[0])
        await asyncio.wait_for(q.put(b"first"), WAIT)
        self.group.elect(1)  # 0 still runs: a follower now
        await asyncio.wait_for(q.put(b"second"), WAIT)
        self.assertEqual(self.group.payloads(), {b"first", b"second"})
        self.assertEqual(q.brokers, {0: self.group.addresses[1]})
        self.assertIn("421", [answer for _, answer in self.group.hellos[0]])


class ReplicaGroup:
    """Three real replicas of one shard on 127.0.0.1 (ports P, P+3, P+6:
    each uses three), durable each in a directory of its own."""

    def __init__(self, flags=()):
        self.dir = tempfile.mkdtemp(prefix="asyncq-replicas-")
        for _ in range(20):  # ports taken meanwhile: others
            base = free_base(9)
            self.ports = [base, base + 3, base + 6]
            peers = ",".join(f"127.0.0.1:{port}" for port in self.ports)
            self.brokers = []
            try:
                for node, port in enumerate(self.ports, 1):
                    data = os.path.join(self.dir, f"node-{node}")
                    self.brokers.append(Broker("--peers", peers, "--node-id", str(node),
                                               "--data-dir", data, *flags,
                                               bind=f"127.0.0.1:{port}"))
                return
            except RuntimeError:
                self.stop()
        raise RuntimeError("could not start the group")

    @property
    def addresses(self):
        return [f"127.0.0.1:{port}" for port in self.ports]

    def stop(self):
        for broker in self.brokers:
            broker.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RealGroup(AsyncCase):
    @staticmethod
    async def _stop(tasks, producer, consumer, group):
        """The tasks cancelled, the clients closed, the replicas stopped."""
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await producer.close(timeout=WAIT)
        await consumer.close(timeout=WAIT)
        group.stop()

    @staticmethod
    def _state(q, group):
        """The client's sessions and the replicas' logs, for a failure."""
        sessions = [(session.address, session.up, session.reconnects)
                    for session in q._sessions()]
        logs = "\n".join(f"--- {broker.address} (exit status {broker.process.poll()})\n"
                         + "\n".join(broker.log().splitlines()[-15:]) for broker in group.brokers)
        return f"sessions {sessions}\n{logs}"

    async def test_the_leader_killed_mid_run_loses_no_confirmed_put(self):
        group = ReplicaGroup(("--heartbeat-ms", "200", "--lease-ms", "5000"))
        addresses = ",".join(group.addresses)
        producer = asyncq.Queue(addresses, "replicated", timeout=WAIT)
        consumer = asyncq.Queue(addresses, "replicated", timeout=WAIT, prefetch=4)
        count = 300
        confirmed, received, putters, getters = put_and_get(producer, consumer, count)
        try:
            await until(lambda: len(confirmed) >= 100, "100 puts confirmed", 3 * WAIT)
            self.assertEqual(producer.persistence, "replicated")
            self.assertEqual(len(producer.brokers), 1)
            self.assertEqual(producer.unreachable, {})
            leader = producer.brokers[0]
            killed = group.brokers[group.addresses.index(leader)]
            killed.process.send_signal(signal.SIGKILL)
            killed.process.wait()
            try:
                await asyncio.wait_for(asyncio.gather(*putters), 6 * WAIT)
            except asyncio.TimeoutError:
                self.fail("puts not confirmed after the leader was killed: "
                          + self._state(producer, group))
            self.assertEqual(confirmed, set(range(count)))
            self.assertNotEqual(producer.brokers[0], leader)
            # The join covers every confirmed put: when it returns, each
            # has been acked (a getter acks in the tick it got it).
            joined = await producer.join(timeout=6 * WAIT)
            self.assertEqual(joined.dead, 0)
            self.assertTrue(confirmed <= received,
                            f"joined before {sorted(confirmed - received)[:20]} were acked")
            self.assertEqual((await producer.stats()).get("outstanding", 0), 0)
            self.assertGreater(producer.reconnects, 0)
            self.assertGreater(consumer.reconnects, 0)
        finally:
            await self._stop(putters + getters, producer, consumer, group)

    async def test_a_leader_killed_is_left_when_its_connection_closes(self):
        """The leader's process killed closes its connections: the clients
        look for the new leader at once, not after three heartbeats (15 s
        here), and an item put after the kill is delivered within a few
        seconds (an election time-out, 0.5 to 1 s, and a hop or two). One
        awaited put at a time, a consumer beside it; the join is exact."""
        group = ReplicaGroup(("--heartbeat-ms", "5000"))
        addresses = ",".join(group.addresses)
        producer = asyncq.Queue(addresses, "failover", timeout=WAIT)
        consumer = asyncq.Queue(addresses, "failover", timeout=WAIT)
        count = 400
        confirmed, received, putters, getters = put_and_get(producer, consumer, count, tasks=1)
        try:
            await until(lambda: len(confirmed) >= 100, "100 puts confirmed", 3 * WAIT)
            self.assertEqual({session.heartbeat for session in producer._sessions()}, {5.0})
            leader = producer.brokers[0]
            killed = group.brokers[group.addresses.index(leader)]
            # Puts go one at a time, in order: this one starts after the kill.
            after = len(confirmed) + 1
            killed.process.send_signal(signal.SIGKILL)
            killed.process.wait()
            start = asyncio.get_running_loop().time()
            await until(lambda: any(number >= after for number in received),
                        lambda: "an item put after the kill: " + self._state(producer, group),
                        3 * WAIT)
            failover = asyncio.get_running_loop().time() - start
            self.assertLess(failover, 4.0, self._state(producer, group))
            await asyncio.wait_for(asyncio.gather(*putters), 3 * WAIT)
            self.assertEqual(confirmed, set(range(count)))
            self.assertNotEqual(producer.brokers[0], leader)
            joined = await producer.join(timeout=3 * WAIT)
            self.assertEqual(joined.dead, 0)
            self.assertEqual(received, confirmed)
        finally:
            await self._stop(putters + getters, producer, consumer, group)


class ServiceOfGroups:
    """Two shards, each a group of three real replicas on 127.0.0.1, each
    started as PROTOCOL.md 4.16 says: --shard K --service
    'A0|A1|A2,B0|B1|B2' --node-id N (its --peers its shard's entry), 10
    ports apart (a replica uses three). .groups: each shard's addresses.
    Every replica runs in a process group of its own, killed by stop()."""

    def __init__(self, flags=()):
        self.dir = tempfile.mkdtemp(prefix="asyncq-groups-")
        for _ in range(20):  # ports taken meanwhile: others
            base = free_base(53)
            self.groups = [[f"127.0.0.1:{base + 30 * shard + 10 * place}" for place in range(3)]
                           for shard in range(2)]
            service = ",".join("|".join(group) for group in self.groups)
            self.processes = {}
            for shard, group in enumerate(self.groups):
                for node, address in enumerate(group, 1):
                    with self._log(address, "w") as log:
                        self.processes[address] = subprocess.Popen(
                            [program("asyncq-broker"), "--bind", address, "--shard", str(shard),
                             "--service", service, "--node-id", str(node), "--data-dir",
                             os.path.join(self.dir, f"shard-{shard}-node-{node}"),
                             # Each lead stays where its election put it.
                             "--lead-balance-ms", "0", *flags],
                            stdout=subprocess.PIPE, stderr=log, text=True,
                            start_new_session=True, preexec_fn=_die_with_parent)
            if all(process.stdout.readline().startswith("READY ")
                   for process in self.processes.values()):
                return
            self.stop(keep_dir=True)
        raise RuntimeError("could not start the service")

    def _log(self, address, mode="r"):
        return open(os.path.join(self.dir, address.replace(":", "-") + ".log"), mode)

    def logs(self):
        """What each replica wrote on stderr, its last lines, for a failure."""
        text = ""
        for address, process in self.processes.items():
            with self._log(address) as log:
                lines = log.read().splitlines()[-10:]
            text += f"\n--- {address} (exit status {process.poll()})\n" + "\n".join(lines)
        return text

    def votes(self, address):
        """Whether the replica at address takes part in elections, as its
        log says: a new group's replicas start abstaining, and a follower
        votes once a leader told it what the group committed (it holds it),
        so that until then the group could elect no other leader."""
        with self._log(address) as log:
            text = log.read()
        return "leads its group" in text or "it votes" in text

    def signal(self, address, number):
        """Sends the replica at address (its process group) a signal."""
        try:
            os.killpg(self.processes[address].pid, number)
        except ProcessLookupError:
            pass

    def kill(self, address):
        """SIGKILL to the replica at address; returns once it is dead."""
        self.signal(address, signal.SIGKILL)
        self.processes[address].wait()

    def stop(self, keep_dir=False):
        for address, process in self.processes.items():
            self.kill(address)
            process.stdout.close()
        if not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


async def leader_of(addresses, timeout=WAIT):
    """The address of the replica that leads its group (it WELCOMEs a
    HELLO), asking each in turn over a DEALER of its own until one does."""
    context = zmq.asyncio.Context.instance()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for address in addresses:
            host, port = address.rsplit(":", 1)
            probe = context.socket(zmq.DEALER)
            try:
                probe.connect(f"tcp://{host}:{int(port) + 1}")
                await probe.send_multipart([b"asyncq/2", b"HELLO", b"h",
                                            b"probe-" + os.urandom(4).hex().encode(), b"0"])
                if await probe.poll(300) and (await probe.recv_multipart())[1] == b"WELCOME":
                    await probe.send_multipart([b"asyncq/2", b"BYE", b"b"])
                    return address
            finally:
                probe.close(linger=100)
        await asyncio.sleep(0.01)
    raise AssertionError(f"no leader among {addresses} within {timeout} s")


class ShardsOfGroups(AsyncCase):
    """A service whose shards are each a group of replicas (4.16, WELCOME's
    `groups`): a client given only shard 0's addresses finds shard 1 at its
    leader although shard 1's first replica (the one `brokers` lists) is
    dead, puts on both shards, gets every item and joins; and when none of
    shard 1's replicas answers at first, its session in the background
    finds it once they do."""

    async def asyncSetUp(self):
        await super().asyncSetUp()
        self.service = ServiceOfGroups()
        self.addCleanup(self.service.stop)
        await asyncio.gather(*(leader_of(group) for group in self.service.groups))
        await until(lambda: all(map(self.service.votes, self.service.groups[1])),
                    lambda: "shard 1's replicas voting: " + self.service.logs(), WAIT)
        self.service.kill(self.service.groups[1][0])  # the address `brokers` gives shard 1
        try:
            self.leader = await leader_of(self.service.groups[1][1:])
        except AssertionError as error:
            self.fail(f"{error}: {self.service.logs()}")

    async def put_get_join(self, q, count):
        """count items put (each awaited: a batch each, spread), got and
        acked, then joined; those got."""
        for i in range(count):
            await asyncio.wait_for(q.put(b"%d" % i), WAIT)
        got = []
        for _ in range(count):
            got.append(await asyncio.wait_for(q.get(), WAIT))
            q.task_done(got[-1])
        self.assertEqual(sorted(got), sorted(b"%d" % i for i in range(count)))
        self.assertEqual({item.id >> 56 for item in got}, {0, 1})  # both shards
        joined = await asyncio.wait_for(q.join(), 2 * WAIT)
        self.assertEqual(joined.dead, 0)
        return got

    async def test_a_shard_whose_first_replica_is_dead_is_found_at_its_leader(self):
        service, leader = self.service, self.leader
        shard0 = service.groups[0]
        for given in (shard0[0], ",".join(shard0)):
            with self.subTest(given=given):
                q = asyncq.Queue(given, f"groups-{next(_names)}", timeout=WAIT)
                self.addAsyncCleanup(q.close, timeout=WAIT)
                count = 20
                await self.put_get_join(q, count)
                self.assertEqual(q.brokers[1], leader)
                self.assertEqual(q._service.count, 2)
                self.assertEqual(q.unreachable, {})
                stats = await asyncio.wait_for(q.shard_stats(), WAIT)
                self.assertGreater(stats[1]["puts"], 0)
                self.assertEqual(stats[0]["puts"] + stats[1]["puts"], count)

    async def test_a_group_down_is_looked_for_at_each_replica_in_the_background(self):
        service, followers = self.service, self.service.groups[1][1:]
        for address in followers:  # shard 1's live replicas silent: none answers
            service.signal(address, signal.SIGSTOP)
        q = asyncq.Queue(service.groups[0][0], f"groups-{next(_names)}", timeout=1)
        self.addAsyncCleanup(q.close, timeout=WAIT)
        await asyncio.wait_for(q.put(b"first"), WAIT)  # shard 1 down: to shard 0
        self.assertEqual(q._service.count, 2)
        self.assertEqual(q.unreachable, {})
        self.assertEqual([session.up for session in q._sessions()], [True, False])
        for address in followers:
            service.signal(address, signal.SIGCONT)
        await until(lambda: all(session.up for session in q._sessions()),
                    lambda: f"shard 1 found ({q.brokers}): {service.logs()}", WAIT)
        self.assertIn(q.brokers[1], followers)
        self.assertEqual(await asyncio.wait_for(q.get(), WAIT), b"first")
        q.task_done()
        await self.put_get_join(q, 10)

    async def test_a_group_where_nothing_listens_is_down_at_once(self):
        service = self.service
        for address in service.groups[1][1:]:  # shard 1's replicas all dead: connections refused
            service.kill(address)
        start = time.monotonic()
        q = asyncq.Queue(service.groups[0][0], f"groups-{next(_names)}", timeout=WAIT)
        self.addAsyncCleanup(q.close, timeout=WAIT)
        await asyncio.wait_for(q.put(b"first"), 2 * WAIT)  # shard 1 down: to shard 0
        # Down once each replica refused (a quarter second apart), not after
        # the time-out (WAIT) as for replicas that may still answer.
        self.assertLess(time.monotonic() - start, WAIT / 2)
        self.assertEqual(q._service.count, 2)
        self.assertEqual(q.unreachable, {})
        self.assertEqual([session.up for session in q._sessions()], [True, False])
        self.assertEqual(await asyncio.wait_for(q.get(), WAIT), b"first")
        q.task_done()


if __name__ == "__main__":
    unittest.main()
