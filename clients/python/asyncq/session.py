"""One DEALER and the session it holds with the broker (PROTOCOL.md 4.2):
HELLO, replies matched to requests by tag, heartbeats answered, and saying
HELLO again when the broker restarts or falls silent."""
import asyncio
import logging
import re

import zmq

from .protocol import BrokerError, BrokerUnreachable, message, parse, parse_welcome
from .security import HandshakeWatch, apply_keys

log = logging.getLogger("asyncq")

REPLIES = frozenset((b"CREDITED", b"SYNCED", b"JOINED", b"TIMEOUT", b"REPORT"))
READ_BATCH = 256  # messages handled in a row before other tasks get a turn
TAG_NUMBER = re.compile(rb"(\d+)$")


def log_failure(future):
    """A done callback for sends and tasks nobody awaits: their failure is
    logged instead of being lost."""
    if not future.cancelled() and future.exception() is not None:
        log.warning("asyncq: %s", future.exception())


class Request:
    """A request waiting for its reply. After a new HELLO it is sent again,
    built anew (a JOIN with the time left) and with a fresh tag."""

    def __init__(self, kind, build, future):
        self.kind, self.build, self.future, self.tag = kind, build, future, None


class Session:
    def __init__(self, context, endpoint, client_id, keys=None, hello_seq=lambda: 0):
        self._context = context
        self._endpoint = endpoint
        self._keys = keys
        self.client_id = client_id
        self._hello_seq = hello_seq
        self.welcome = None      # the latest WELCOME (protocol.Welcome)
        self.reconnects = 0      # times HELLO was said again after the first WELCOME
        self._number = 0         # of the latest tag made: tags are kind + number
        self._hello_number = 0   # the latest HELLO's: a tag below it is from an older session
        self._hello = None       # (tag, future) of the HELLO waiting for its WELCOME
        self._pending = {}       # tag -> Request
        self._reader = None
        self._rehello = None
        self._closed = False
        self.socket, self._watch = self._new_socket()
        # Set by the owner: called with (command, fields) for messages that are
        # not replies to a request (ITEMS, HELD, ERRORs about puts or acks...),
        # and after every HELLO but the first, before waiting requests are
        # sent again.
        self.on_message = lambda command, fields: None
        self.on_reconnect = lambda: None

    @property
    def heartbeat(self):
        """Seconds between the broker's HEARTBEATs to this session."""
        return self.welcome.heartbeat_ms / 1000 if self.welcome else 1.0

    def _new_socket(self):
        socket = self._context.socket(zmq.DEALER)
        apply_keys(socket, self._keys)
        watch = HandshakeWatch(socket)
        socket.connect(self._endpoint)
        return socket, watch

    def _replace_socket(self):
        """A fresh DEALER, so that unanswered HELLOs do not pile up and all
        reach a broker that comes back (4.2)."""
        failure = self._watch.failure(self._keys)
        if failure:
            log.warning("%s: %s", self.client_id, failure)
        old, old_watch = self.socket, self._watch
        self.socket, self._watch = self._new_socket()
        old_watch.close()
        old.close(linger=0)

    async def open(self, timeout):
        """Says HELLO; raises BrokerUnreachable (or the subclass that says
        which key is wrong) without a WELCOME within timeout seconds, and
        BrokerError if the broker refuses the HELLO."""
        self._reader = asyncio.ensure_future(self._read())
        self._reader.add_done_callback(log_failure)
        try:
            if not await self._say_hello(timeout):
                raise self._watch.failure(self._keys) or BrokerUnreachable(
                    f"no answer from the broker at {self._endpoint}")
        except BaseException:
            await self.close(bye=False)
            raise

    def tag(self, kind):
        """A new tag: kind, then a number that grows with every tag."""
        self._number += 1
        return b"%s%d" % (kind, self._number)

    def _is_stale(self, tag):
        """Whether tag was sent before the latest HELLO, to a session gone."""
        number = TAG_NUMBER.search(tag)
        return number is not None and int(number.group(1)) < self._hello_number

    async def _say_hello(self, timeout):
        tag = self.tag(b"hello")
        self._hello_number = self._number
        self._hello = (tag, asyncio.get_running_loop().create_future())
        self.send(message(b"HELLO", tag, self.client_id, self._hello_seq()))
        try:
            await asyncio.wait_for(self._hello[1], timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def reconnect(self):
        """Says HELLO again (until the broker answers), in the background."""
        if self._closed or (self._rehello is not None and not self._rehello.done()):
            return
        self._rehello = asyncio.ensure_future(self._reconnect())
        self._rehello.add_done_callback(log_failure)

    async def _reconnect(self):
        self.reconnects += 1
        log.info("%s: saying HELLO again", self.client_id)
        while not await self._hello_again():
            self._replace_socket()
        self.on_reconnect()
        for request in list(self._pending.values()):
            if self._is_stale(request.tag):
                self._send_request(request)

    async def _hello_again(self):
        """One more HELLO, given a second or so (4.2). A refused one (403:
        the key or the client id) is tried again as slowly."""
        wait = max(1.0, self.heartbeat)
        try:
            return await self._say_hello(wait)
        except BrokerError as error:
            log.warning("%s: HELLO refused: %s", self.client_id, error)
            await asyncio.sleep(wait)
            return False

    def send(self, frames):
        """Sends at once, without waiting (a DEALER queues what its
        connection cannot take yet)."""
        self.socket.send_multipart(frames).add_done_callback(log_failure)

    async def request(self, kind, build):
        """Sends build(tag) and returns the reply with that tag as (command,
        fields); raises BrokerError for an ERROR about it."""
        request = Request(kind, build, asyncio.get_running_loop().create_future())
        self._send_request(request)
        try:
            return await request.future
        finally:
            self._pending.pop(request.tag, None)

    def _send_request(self, request):
        self._pending.pop(request.tag, None)
        request.tag = self.tag(request.kind)
        self._pending[request.tag] = request
        self.send(request.build(request.tag))

    async def _read(self):
        while not self._closed:
            socket = self.socket
            try:
                if await socket.poll(int(3 * self.heartbeat * 1000)):
                    self._read_ready(socket)
                elif self.welcome:
                    self.reconnect()  # silent for three heartbeat intervals (4.9)
            except asyncio.CancelledError:
                if self._closed or socket is self.socket:
                    raise
                # The socket was replaced and closed under poll(): read the new one.
            except zmq.ZMQError:
                if self._closed or socket is self.socket:
                    raise

    def _read_ready(self, socket):
        for _ in range(READ_BATCH):
            try:
                frames = socket.recv_multipart(zmq.NOBLOCK).result()
            except zmq.Again:
                return
            parsed = parse(frames)
            try:
                if parsed is None:
                    raise ValueError("not asyncq/2")
                self._dispatch(*parsed)
            except (ValueError, IndexError) as error:
                # A field not as asyncq/2 says: the message is dropped, the
                # reader goes on.
                log.warning("%s: malformed message from the broker (%s): %r",
                            self.client_id, error, frames[:4])

    def _dispatch(self, command, fields):
        if command == b"HEARTBEAT" and fields:
            self.send(message(b"HEARTBEAT", fields[0]))  # answered as read (4.9)
        elif command == b"WELCOME":
            self._on_welcome(fields)
        elif command == b"ERROR":
            self._on_error(BrokerError.from_fields(fields), fields)
        elif command in REPLIES and fields and fields[0] in self._pending:
            future = self._pending[fields[0]].future
            if not future.done():
                future.set_result((command, fields))
        else:
            self.on_message(command, fields)

    def _on_welcome(self, fields):
        if not self._hello or not fields or fields[0] != self._hello[0]:
            return  # the answer to an older HELLO
        welcome = parse_welcome(fields)
        if welcome is None:
            log.warning("%s: WELCOME not as asyncq/2 says: %r", self.client_id, fields)
            return
        self.welcome = welcome
        if not self._hello[1].done():
            self._hello[1].set_result(True)

    def _on_error(self, error, fields):
        if error.code == 412:
            self._on_no_session(error)
            return
        if self._hello and error.tag == self._hello[0] and not self._hello[1].done():
            self._hello[1].set_exception(error)
            return
        request = self._pending.get(error.tag) if error.tag else None
        if request and not request.future.done():
            request.future.set_exception(error)
        else:
            self.on_message(b"ERROR", fields)

    def _on_no_session(self, error):
        """412 about a request sent before the latest HELLO is stale: that
        request is asked again in the new session. Any other means the
        broker lost this session (it restarted): HELLO again."""
        if not self._is_stale(error.tag):
            self.reconnect()
        elif error.tag in self._pending:
            self._send_request(self._pending[error.tag])

    async def close(self, bye=True):
        if self._closed:
            return
        self._closed = True
        for task in (self._rehello, self._reader):
            if task and not task.done():
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        for request in self._pending.values():
            if not request.future.done():
                request.future.set_exception(RuntimeError("queue client is closed"))
        self._watch.close()
        if bye and self.welcome:
            self._say_bye()
            self.socket.close(linger=1000)
        else:
            self.socket.close(linger=0)

    def _say_bye(self):
        """BYE: items this session holds go back to the queue at once. Sent
        through a plain socket on the same ZeroMQ socket: an asyncio send
        may leave a wake-up scheduled for the socket closed right after."""
        try:
            zmq.Socket.shadow(self.socket.underlying).send_multipart(
                message(b"BYE", self.tag(b"bye")), zmq.NOBLOCK)
        except zmq.Again:
            pass  # the broker finds the session gone at its next heartbeat
