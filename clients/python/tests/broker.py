"""Starts the real C programs for the tests: the broker on a free port of
127.0.0.1, producers and consumers, and CURVE certificates. Binaries come
from ASYNCQ_BIN_DIR (set by ctest), else build/bin at the top of the
repository."""
import asyncio
import ctypes
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

HERE = os.path.dirname(os.path.abspath(__file__))
BIN_DIR = os.environ.get("ASYNCQ_BIN_DIR") or os.path.join(HERE, "..", "..", "..", "build", "bin")
sys.path.insert(0, os.path.join(HERE, ".."))

import asyncq  # noqa: E402 (from the path just set)


def program(name):
    return os.path.join(BIN_DIR, name)


def _die_with_parent():
    """Run in each child: killed if the test process dies before it can
    stop it (Linux's PR_SET_PDEATHSIG), so no broker outlives a run."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


async def until(condition, what, timeout=10.0):
    """Waits until condition() is true (checked every 10 ms); what (or
    what(), when it is a function) says what it was, if it never is."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        await asyncio.sleep(0.01)


def put_and_get(producer, consumer, count, tasks=4):
    """`tasks` coroutines put 0 .. count - 1 on `producer` (each awaited,
    then 2 ms apart), and `tasks` more get them from `consumer` and ack
    each: (confirmed, received, putters, getters), the sets filled as they
    go. The caller cancels the tasks."""
    confirmed, received = set(), set()
    numbers = iter(range(count))

    async def put_some():
        for i in numbers:
            await producer.put(b"%d" % i)
            confirmed.add(i)
            await asyncio.sleep(0.002)

    async def get_some():
        while True:
            item = await consumer.get()
            received.add(int(item))
            consumer.task_done(item)

    putters = [asyncio.ensure_future(put_some()) for _ in range(tasks)]
    getters = [asyncio.ensure_future(get_some()) for _ in range(tasks)]
    return confirmed, received, putters, getters


class Broker:
    """A broker process; .address is what clients connect to, .log() what
    it wrote on stderr so far."""

    def __init__(self, *flags, bind="tcp://127.0.0.1:0"):
        self.flags, self.bind = flags, bind
        self._start()

    def _start(self):
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [program("asyncq-broker"), "--bind", self.bind, *self.flags],
            stdout=subprocess.PIPE, stderr=self._stderr, text=True, preexec_fn=_die_with_parent)
        line = self.process.stdout.readline()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"broker did not start: {line!r}")
        self.address = line.split()[1]

    def restart(self):
        """Stops the broker (SIGKILL) if it runs, and starts it again with the
        same flags and address (a fixed port: the same one)."""
        self.stop()
        self._start()

    def log(self):
        self._stderr.seek(0)
        return self._stderr.read()

    def run(self, name, *args, timeout=60):
        """Runs one of the programs against this broker; returns its stdout."""
        done = subprocess.run([program(name), *args], env={**os.environ,
                              "ASYNCQ_BROKER": self.address}, capture_output=True, text=True,
                              timeout=timeout, preexec_fn=_die_with_parent)
        if done.returncode != 0:
            raise AssertionError(f"{name} {args} exited {done.returncode}: {done.stderr}")
        return done.stdout

    def start(self, name, *args):
        return subprocess.Popen([program(name), *args],
                                env={**os.environ, "ASYNCQ_BROKER": self.address},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=_die_with_parent)

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.process.stdout.close()
        self._stderr.close()


async def silent_connection(address):
    """Opens a PUSH connection to the broker that sends nothing, and returns
    once the broker has closed it (--hello-timeout-ms): connections opened
    before it and as silent have been closed by then too."""
    socket = zmq.asyncio.Context.instance().socket(zmq.PUSH)
    monitor = socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    try:
        socket.connect(asyncq.endpoints(address)[0])
        parse_monitor_message(await monitor.recv_multipart())
    finally:
        socket.disable_monitor()
        monitor.close(linger=0)
        socket.close(linger=0)


class Keys:
    """A directory of CURVE certificates made by `asyncq keygen`: the
    broker's pair and clients' pairs; only clients made with allow=True are
    in the broker's clients directory."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="asyncq-keys-")
        self.clients = os.path.join(self.dir, "clients")
        os.mkdir(self.clients)
        self.make("broker", "produce,consume")

    def make(self, name, roles, allow=False):
        """Makes NAME's pair; returns the path of its secret certificate."""
        subprocess.run([program("asyncq"), "keygen", name, "--dir", self.dir, "--role", roles],
                       check=True, capture_output=True)
        if allow:
            shutil.copy(self.public(name), self.clients)
        return self.public(name) + "_secret"

    def public(self, name):
        return os.path.join(self.dir, name + ".key")

    def broker_flags(self):
        return ("--curve-secret", self.public("broker") + "_secret", "--clients", self.clients)

    def remove(self):
        shutil.rmtree(self.dir)


TEST_LIMIT = 60.0  # seconds one test may take, set-up and tear-down included


class AsyncCase(unittest.IsolatedAsyncioTestCase):
    """An asyncio test that fails rather than hangs: one still running
    TEST_LIMIT seconds after its asyncSetUp has every task's stack written
    on stderr, and its tasks cancelled (again 10 s later if it still runs),
    so that the run goes on and the hang can be read. Subclasses that
    define asyncSetUp call this one first."""

    async def asyncSetUp(self):
        self._watchdog = asyncio.get_running_loop().call_later(TEST_LIMIT, self._hung)
        self.addAsyncCleanup(self._disarm)  # the first cleanup added runs last

    def _hung(self):
        tasks = [task for task in asyncio.all_tasks() if not task.done()]
        print(f"\n{self.id()}: still running after {TEST_LIMIT:g} s; its {len(tasks)} tasks:",
              file=sys.stderr)
        for task in tasks:
            task.print_stack(file=sys.stderr)
            task.cancel()
        self._watchdog = asyncio.get_running_loop().call_later(10, self._hung)

    async def _disarm(self):
        self._watchdog.cancel()


_names = itertools.count(1)


class BrokerTestCase(AsyncCase):
    """Tests sharing one broker (started with broker_flags), each on a queue
    of its own (self.name), with the clients it made (self.client()) closed
    after it."""
    broker_flags: tuple = ()

    @classmethod
    def setUpClass(cls):
        cls.broker = Broker(*cls.broker_flags)

    @classmethod
    def tearDownClass(cls):
        cls.broker.stop()

    async def asyncSetUp(self):
        await super().asyncSetUp()
        self.name = f"{type(self).__name__}-{next(_names)}"
        self.clients = []

    async def asyncTearDown(self):
        for client in self.clients:
            await client.close(timeout=10)

    def client(self, kind=asyncq.Queue, **options):
        client = kind(self.broker.address, self.name, **options)
        self.clients.append(client)
        return client
