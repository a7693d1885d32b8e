"""One DEALER and the session it holds with the broker (PROTOCOL.md 4.2):
HELLO, replies matched to requests by tag, heartbeats answered, and saying
HELLO again when the broker restarts or falls silent.

The DEALER is a plain (blocking-API) ZeroMQ socket read from the event
loop's own reader callback on its ZMQ_FD, and written with NOBLOCK: a
request and its reply cost no task, future or poll of pyzmq's asyncio layer
(a profile of a loop of awaited puts spent most of its time there)."""
from __future__ import annotations

import asyncio
import collections
import logging
import re
import socket as stdsocket
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import zmq

from .protocol import (BrokerError, BrokerUnreachable, Fields, Frames, Welcome, message, parse,
                       parse_welcome)
from .security import HandshakeWatch, Keys, apply_keys
from .sockets import EVENTS, POLLIN, Reader, plain_socket, send_now

log = logging.getLogger("asyncq")

REPLIES = frozenset((b"CREDITED", b"SYNCED", b"JOINED", b"TIMEOUT", b"REPORT"))
READ_BATCH = 256  # messages handled in a row before other callbacks get a turn
TAG_NUMBER = re.compile(rb"(\d+)$")
Reply = Tuple[bytes, Fields]


def log_failure(future: "asyncio.Future[Any]") -> None:
    """A done callback for tasks nobody awaits: their failure is logged
    instead of being lost."""
    if not future.cancelled() and future.exception() is not None:
        log.warning("asyncq: %s", future.exception())


Answer = Callable[[Optional[Reply], Optional[BaseException]], None]


class Request:
    """A request waiting for its reply, given to answer(reply, error) once.
    After a new HELLO it is sent again, built anew (a JOIN with the time
    left) and with a fresh tag."""

    def __init__(self, kind: bytes, build: Callable[[bytes], Frames], answer: Answer) -> None:
        self.kind, self.build, self._answer = kind, build, answer
        self.tag = b""
        self.done = False

    def answer(self, reply: Optional[Reply], error: Optional[BaseException] = None) -> None:
        if not self.done:
            self.done = True
            self._answer(reply, error)


class Session:
    def __init__(self, context: zmq.Context[Any], endpoint: str, client_id: str,
                 keys: Optional[Keys] = None, hello_seq: Callable[[], int] = lambda: 0,
                 address: Optional[str] = None) -> None:
        self._context = context
        self._endpoint = endpoint
        self.address = address or endpoint  # as the user gave it, for messages
        self._keys = keys
        self.client_id = client_id
        self._hello_seq = hello_seq
        self._loop = asyncio.get_running_loop()
        self.welcome: Optional[Welcome] = None  # the latest WELCOME
        self.reconnects = 0      # times HELLO was said again after the first WELCOME
        self._number = 0         # of the latest tag made: tags are kind + number
        self._hello_number = 0   # the latest HELLO's: a tag below it is from an older session
        self._hello: Optional[Tuple[bytes, "asyncio.Future[bool]"]] = None
        self._pending: Dict[bytes, Request] = {}
        self._outbox: Deque[Frames] = collections.deque()  # sends the socket had no room for
        self._rehello: Optional["asyncio.Task[None]"] = None
        self._silence: Optional[asyncio.TimerHandle] = None
        self._heard = self._loop.time()
        self._closed = False
        self.socket, self._watch, self._reader = self._new_socket()
        # Set by the owner: called with (command, fields) for messages that are
        # not replies to a request (ITEMS, HELD, ERRORs about puts or acks...),
        # and after every HELLO but the first, before waiting requests are
        # sent again.
        self.on_message: Callable[[bytes, Fields], None] = lambda command, fields: None
        self.on_reconnect: Callable[[], None] = lambda: None

    @property
    def heartbeat(self) -> float:
        """Seconds between the broker's HEARTBEATs to this session."""
        return self.welcome.heartbeat_ms / 1000 if self.welcome else 1.0

    def _new_socket(self) -> Tuple[zmq.Socket[Any], HandshakeWatch, Reader]:
        socket = plain_socket(self._context, zmq.DEALER)
        apply_keys(socket, self._keys)
        watch = HandshakeWatch(socket)
        socket.connect(self._endpoint)
        return socket, watch, Reader(socket, self._on_ready)

    def _replace_socket(self) -> None:
        """A fresh DEALER, so that unanswered HELLOs do not pile up and all
        reach a broker that comes back (4.2)."""
        failure = self._watch.failure(self._keys)
        if failure:
            log.warning("%s: %s", self.client_id, failure)
        self._close_socket(linger=0)
        self._outbox.clear()
        self.socket, self._watch, self._reader = self._new_socket()

    def _close_socket(self, linger: int) -> None:
        self._reader.close()
        self._watch.close()
        self.socket.close(linger=linger)

    async def open(self, timeout: float) -> None:
        """Says HELLO; raises BrokerUnreachable (or the subclass that says
        which key is wrong, or that nothing listens at the address) without
        a WELCOME within timeout seconds, and BrokerError if the broker
        refuses the HELLO."""
        self._watch_silence()
        try:
            if not await self._say_hello(timeout, watch_connect=True):
                raise self._watch.failure(self._keys) or BrokerUnreachable(
                    f"no answer from the broker at {self.address} within {timeout:g} s")
        except BaseException:
            await self.close(bye=False)
            raise

    def tag(self, kind: bytes) -> bytes:
        """A new tag: kind, then a number that grows with every tag."""
        self._number += 1
        return b"%s%d" % (kind, self._number)

    def _is_stale(self, tag: bytes) -> bool:
        """Whether tag was sent before the latest HELLO, to a session gone."""
        number = TAG_NUMBER.search(tag)
        return number is not None and int(number.group(1)) < self._hello_number

    async def _say_hello(self, timeout: float, watch_connect: bool = False) -> bool:
        tag = self.tag(b"hello")
        self._hello_number = self._number
        hello: "asyncio.Future[bool]" = self._loop.create_future()
        self._hello = (tag, hello)
        self.send(message(b"HELLO", tag, self.client_id, self._hello_seq()))
        if watch_connect:
            # The first HELLO: a connection that fails is reported at once,
            # with its cause, not after the time-out.
            self._watch.on_connect_failed = lambda: self._connect_failed(hello)
            self._watch.read_events()
        try:
            await asyncio.wait_for(asyncio.shield(hello), timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            self._watch.on_connect_failed = None

    def _connect_failed(self, hello: "asyncio.Future[bool]") -> None:
        if not hello.done():
            hello.set_exception(BrokerUnreachable(
                f"cannot connect to the broker at {self.address}: {connect_error(self._endpoint)}"))

    def reconnect(self) -> None:
        """Says HELLO again (until the broker answers), in the background."""
        if self._closed or (self._rehello is not None and not self._rehello.done()):
            return
        self._rehello = asyncio.ensure_future(self._reconnect())
        self._rehello.add_done_callback(log_failure)

    async def _reconnect(self) -> None:
        self.reconnects += 1
        log.info("%s: saying HELLO again", self.client_id)
        while not await self._hello_again():
            self._replace_socket()
        self.on_reconnect()
        for request in list(self._pending.values()):
            if self._is_stale(request.tag):
                self._send_request(request)

    async def _hello_again(self) -> bool:
        """One more HELLO, given a second or so (4.2). A refused one (403:
        the key or the client id) is tried again as slowly."""
        wait = max(1.0, self.heartbeat)
        try:
            return await self._say_hello(wait)
        except BrokerError as error:
            log.warning("%s: HELLO refused: %s", self.client_id, error)
            await asyncio.sleep(wait)
            return False

    def _watch_silence(self) -> None:
        """A broker silent for three heartbeat intervals is gone: HELLO
        again (4.9). Checked every interval."""
        if self._closed:
            return
        if self.welcome and self._loop.time() - self._heard > 3 * self.heartbeat:
            self._heard = self._loop.time()
            self.reconnect()
        self._silence = self._loop.call_later(self.heartbeat, self._watch_silence)

    def send(self, frames: Frames) -> None:
        """Sends at once, without waiting: what the socket has no room for
        waits in order and goes when it has."""
        if self._closed:
            return
        if not self._outbox:
            try:
                send_now(self.socket, frames)
                self._reader.check()
                return
            except zmq.Again:
                pass
        self._outbox.append(frames)
        self._reader.kick()

    def _flush_outbox(self) -> None:
        while self._outbox:
            try:
                send_now(self.socket, self._outbox[0])
            except zmq.Again:
                # No room yet: the socket's descriptor signals when there is;
                # a heartbeat's worth later it is tried again regardless.
                self._loop.call_later(0.05, self._reader.kick)
                return
            self._outbox.popleft()

    def call(self, kind: bytes, build: Callable[[bytes], Frames], answer: Answer) -> None:
        """Sends build(tag) now; answer(reply, None) is called with the reply
        with that tag, as (command, fields), or answer(None, error) with the
        BrokerError of an ERROR about it, from the reader, with no task or
        future between (an awaited put's SYNC)."""
        self._send_request(Request(kind, build, answer))

    async def request(self, kind: bytes, build: Callable[[bytes], Frames]) -> Reply:
        """Sends build(tag) and returns the reply with that tag as (command,
        fields); raises BrokerError for an ERROR about it."""
        future: "asyncio.Future[Reply]" = self._loop.create_future()

        def answer(reply: Optional[Reply], error: Optional[BaseException]) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                assert reply is not None
                future.set_result(reply)

        request = Request(kind, build, answer)
        self._send_request(request)
        try:
            return await future
        finally:
            request.done = True
            self._pending.pop(request.tag, None)

    def _send_request(self, request: Request) -> None:
        self._pending.pop(request.tag, None)
        request.tag = self.tag(request.kind)
        self._pending[request.tag] = request
        self.send(request.build(request.tag))

    def _on_ready(self) -> None:
        if self._closed:
            return
        socket = self.socket
        if self._outbox:
            self._flush_outbox()
        for _ in range(READ_BATCH):
            try:
                if not socket.getsockopt(EVENTS) & POLLIN:  # type: ignore[operator]
                    return
                frames = socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError as error:
                log.warning("%s: %s", self.client_id, error)
                return
            self._heard = self._loop.time()
            self._handle(frames)
            if self._closed or socket is not self.socket:
                return
        self._reader.kick()  # more to read: after the other callbacks' turn

    def _handle(self, frames: List[bytes]) -> None:
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

    def _dispatch(self, command: bytes, fields: Fields) -> None:
        if command == b"HEARTBEAT" and fields:
            self.send(message(b"HEARTBEAT", fields[0]))  # answered as read (4.9)
        elif command == b"WELCOME":
            self._on_welcome(fields)
        elif command == b"ERROR":
            self._on_error(BrokerError.from_fields(fields), fields)
        elif command in REPLIES and fields and fields[0] in self._pending:
            self._pending.pop(fields[0]).answer((command, fields))
        else:
            self.on_message(command, fields)

    def _on_welcome(self, fields: Fields) -> None:
        if not self._hello or not fields or fields[0] != self._hello[0]:
            return  # the answer to an older HELLO
        welcome = parse_welcome(fields)
        if welcome is None:
            log.warning("%s: WELCOME not as asyncq/2 says: %r", self.client_id, fields)
            return
        self.welcome = welcome
        if not self._hello[1].done():
            self._hello[1].set_result(True)

    def _on_error(self, error: BrokerError, fields: Fields) -> None:
        if error.code == 412:
            self._on_no_session(error)
            return
        if self._hello and error.tag == self._hello[0] and not self._hello[1].done():
            self._hello[1].set_exception(error)
            return
        request = self._pending.pop(error.tag, None) if error.tag else None
        if request and not request.done:
            request.answer(None, error)
        else:
            self.on_message(b"ERROR", fields)

    def _on_no_session(self, error: BrokerError) -> None:
        """412 about a request sent before the latest HELLO is stale: that
        request is asked again in the new session. Any other means the
        broker lost this session (it restarted): HELLO again."""
        if not self._is_stale(error.tag):
            self.reconnect()
        elif error.tag in self._pending:
            self._send_request(self._pending[error.tag])

    async def close(self, bye: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        if self._silence is not None:
            self._silence.cancel()
        if self._rehello is not None and not self._rehello.done():
            self._rehello.cancel()
            try:
                await self._rehello
            except (asyncio.CancelledError, Exception):
                pass
        for request in list(self._pending.values()):
            request.answer(None, RuntimeError("queue client is closed"))
        if bye and self.welcome:
            try:
                self.socket.send_multipart(message(b"BYE", self.tag(b"bye")), zmq.NOBLOCK)
            except zmq.Again:
                pass  # the broker finds the session gone at its next heartbeat
            self._close_socket(linger=1000)  # the BYE still goes; close() does not wait
        else:
            self._close_socket(linger=0)


def connect_error(endpoint: str) -> str:
    """Why a connection to endpoint failed, asked of the system with one
    plain connect (only once ZeroMQ said it failed): "connection refused"
    and the like."""
    if not endpoint.startswith("tcp://"):
        return "nothing listens there (no such socket file, or it refuses)"
    host, _, port = endpoint[len("tcp://"):].rpartition(":")
    try:
        with stdsocket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
            return "the connection was closed (is it an asyncq broker?)"
    except OSError as error:
        return (f"nothing listens there: {error.strerror or error} (at {host}:{port}, the "
                f"broker's second port; is the broker running?)")
