"""One DEALER and the session it holds with the broker (PROTOCOL.md 4.2):
HELLO, replies matched to requests by tag, heartbeats answered, and saying
HELLO again when the broker restarts or falls silent. A broker that is a
group of replicas (4.16) is followed to its leader: a 421 names it (or an
election is under way: the next replica is tried), and a leader gone is
looked for at each replica in turn.

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
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional, Tuple

import zmq

from .protocol import (BrokerError, BrokerUnreachable, Fields, Frames, NotLeader, Welcome,
                       endpoints, message, parse, parse_welcome, same_place, wake_all)
from .security import HandshakeWatch, Keys, apply_keys
from .sockets import EVENTS, POLLIN, Reader, plain_socket, send_now

log = logging.getLogger("asyncq")

REPLIES = frozenset((b"CREDITED", b"SYNCED", b"JOINED", b"TIMEOUT", b"REPORT"))
READ_BATCH = 256  # messages handled in a row before other callbacks get a turn
TAG_NUMBER = re.compile(rb"(\d+)$")
Reply = Tuple[bytes, Fields]
ELECTION_WAIT = 0.25  # seconds between HELLOs to replicas that know no leader (4.16)


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


class Replicas:
    """The addresses where one shard's broker may be (PROTOCOL.md 4.16):
    the address given first, those a 421 named, and once its leader
    WELCOMEd, the group its `replicas` lists. .replicated: the shard is a
    group (a 421 came, or a WELCOME listed replicas): only then does a
    session look for its broker at the others when it does not answer.
    .leader: where the latest WELCOME came from, shared by the shard's
    sessions, so that one that found a new leader shows the others;
    on_leader(address) is called when it moves."""

    def __init__(self, addresses: Iterable[str] = (), replicated: bool = False) -> None:
        self.addresses: List[str] = []
        self.replicated = replicated
        self.leader: Optional[str] = None
        self.on_leader: Callable[[str], None] = lambda address: None
        self.learn(addresses)

    def learn(self, addresses: Iterable[str]) -> None:
        """Adds the addresses not known yet (under any name), in order."""
        for address in addresses:
            if not self.knows(address):
                self.addresses.append(address)

    def knows(self, address: str) -> bool:
        return any(same_place(address, known) for known in self.addresses)

    def after(self, address: str) -> str:
        """The replica to try after the one at address: the next in the
        list, round, or the first when address is not one."""
        for index, known in enumerate(self.addresses):
            if same_place(address, known):
                return self.addresses[(index + 1) % len(self.addresses)]
        return self.addresses[0] if self.addresses else address

    def led_from(self, address: str) -> None:
        """The leader WELCOMEd a session at address."""
        if self.leader is None or not same_place(self.leader, address):
            self.leader = address
            self.on_leader(address)


class Session:
    def __init__(self, context: zmq.Context[Any], endpoint: str, client_id: str,
                 keys: Optional[Keys] = None, hello_seq: Callable[[], int] = lambda: 0,
                 address: Optional[str] = None, shard: Optional[int] = None,
                 push: str = "", replicas: Optional[Replicas] = None) -> None:
        self._context = context
        self._endpoint = endpoint
        self.address = address or endpoint  # as the user gave it, for messages
        self.push_endpoint = push  # the PULL socket of the broker at address, for a Producer
        # Where else its broker may be (a group of replicas, 4.16): HELLO
        # follows a 421 there, and looks for a leader gone at each in turn.
        self.replicas = replicas if replicas is not None else Replicas([self.address])
        # 421s followed in a row since the last WELCOME (or a replica where
        # nothing listened): from the third, each after a moment.
        self._redirects = 0
        self._keys = keys
        self.client_id = client_id
        self.hello_seq = hello_seq  # the HELLO's seq (4.2), asked at each HELLO
        # HELLO asks for WELCOME's `service` field (4.15) until a broker
        # before 2.2 refuses it (400): then this session says HELLO without.
        self.asks_service = True
        self.shard = shard  # this broker's shard, once known: a WELCOME saying another is logged
        self._loop = asyncio.get_running_loop()
        self.welcome: Optional[Welcome] = None  # the latest WELCOME
        self.reconnects = 0      # times HELLO was said again after the first WELCOME
        self._number = 0         # of the latest tag made: tags are kind + number
        self._hello_number = 0   # the latest HELLO's: a tag below it is from an older session
        self._hello: Optional[Tuple[bytes, "asyncio.Future[bool]"]] = None
        self._pending: Dict[bytes, Request] = {}
        self._outbox: Deque[Frames] = collections.deque()  # sends the socket had no room for
        self._rehello: Optional["asyncio.Task[None]"] = None
        # The HELLO said again to a replica, given up when its connection
        # fails or is lost (_say_hello's pass_over).
        self._passing_over: Optional["asyncio.Future[bool]"] = None
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
        # Called when the session is lost (HELLO is said again from then on),
        # and when its DEALER is replaced: nothing of the session lost can
        # arrive after that.
        self.on_down: Callable[[], None] = lambda: None
        self.on_reset: Callable[[], None] = lambda: None
        self._up_waiters: List["asyncio.Future[None]"] = []

    @property
    def up(self) -> bool:
        """Whether the broker has welcomed this session and not fallen silent
        or lost it since (HELLO is not being said again)."""
        return (self.welcome is not None and not self._closed
                and (self._rehello is None or self._rehello.done()))

    def when_up(self) -> "asyncio.Future[None]":
        """A future done once the session is up (at once if it is); failed
        with RuntimeError if the session is closed first."""
        future: "asyncio.Future[None]" = self._loop.create_future()
        if self.up:
            future.set_result(None)
        elif self._closed:
            future.set_exception(RuntimeError("queue client is closed"))
        else:
            self._up_waiters.append(future)
        return future

    def _wake_up_waiters(self, error: Optional[BaseException] = None) -> None:
        waiters, self._up_waiters = self._up_waiters, []
        wake_all(waiters, error)

    @property
    def endpoint(self) -> str:
        """The ROUTER endpoint of the broker this session is at now."""
        return self._endpoint

    @property
    def heartbeat(self) -> float:
        """Seconds between the broker's HEARTBEATs to this session."""
        return self.welcome.heartbeat_ms / 1000 if self.welcome else 1.0

    def _new_socket(self) -> Tuple[zmq.Socket[Any], HandshakeWatch, Reader]:
        socket = plain_socket(self._context, zmq.DEALER, self._endpoint)
        apply_keys(socket, self._keys)
        watch = HandshakeWatch(socket)
        watch.on_disconnected = lambda: self._connection_lost(socket)
        socket.connect(self._endpoint)
        return socket, watch, Reader(socket, self._on_ready)

    @property
    def _in_group(self) -> bool:
        """The broker is a group of replicas, more than one known (4.16):
        one that does not answer is looked for at the others."""
        return self.replicas.replicated and len(self.replicas.addresses) > 1

    def _connection_lost(self, socket: zmq.Socket[Any]) -> None:
        """The DEALER's connection was lost. A group's leader whose process
        died (its host closed the connection) is silent at once, and the
        group has another leader within an election time-out (4.16): HELLO
        goes to the next replica now, not after three heartbeats. What the
        broker sent before is read first. A broker alone is left to its
        heartbeats: libzmq connects again by itself to one restarting. A
        replica asked again that died as it was asked (it took the
        connection in) is passed over as one where nothing listens."""
        if socket is not self.socket:
            return
        if self._passing_over is not None:
            self._connect_failed(self._passing_over, False)
            return
        if not self.up or not self._in_group:
            return
        self._on_ready()
        if socket is self.socket and self.up:
            log.info("%s: the connection to %s was lost", self.client_id, self.address)
            self.reconnect(gone=True)

    def _replace_socket(self) -> None:
        """A fresh DEALER, so that unanswered HELLOs do not pile up and all
        reach a broker that comes back (4.2)."""
        failure = self._watch.failure(self._keys)
        if failure:
            log.warning("%s: %s", self.client_id, failure)
        self._close_socket(linger=0)
        self._outbox.clear()
        self.socket, self._watch, self._reader = self._new_socket()
        self.on_reset()

    def _close_socket(self, linger: int) -> None:
        self._reader.close()
        self._watch.close()
        self.socket.close(linger=linger)

    async def open(self, timeout: float) -> None:
        """Says HELLO; raises BrokerUnreachable (or the subclass that says
        which key is wrong, or that nothing listens at the address) without
        a WELCOME within timeout seconds, and BrokerError if the broker
        refuses the HELLO. A replica that does not lead (421, 4.16) is
        followed to the leader it names, or after a moment, with none
        named, the next replica known is asked; once the shard is known to
        be replicated, a replica that does not answer is passed over too."""
        self._watch_silence()
        try:
            await self._open(timeout)
        except BaseException:
            await self.close(bye=False)
            raise

    async def _open(self, timeout: float) -> None:
        deadline = self._loop.time() + timeout
        failure: Optional[Exception] = None  # why the latest replica tried did not WELCOME
        refused: List[str] = []  # replicas where nothing listened, since one answered
        while True:
            left = deadline - self._loop.time()
            if left <= 0:
                raise self._no_leader(failure, timeout)
            rotate = self._in_group
            try:
                if await self._say_hello(min(left, self._retry_wait()) if rotate else left,
                                         watch_connect=True):
                    return
                keys = self._watch.failure(self._keys)  # every replica would say the same
                if keys is not None or not rotate:
                    raise keys or BrokerUnreachable(
                        f"no answer from the broker at {self.address} within {timeout:g} s")
                failure = BrokerUnreachable(f"no answer from the replica at {self.address}")
                refused.clear()
            except NotLeader as error:
                failure = error
                refused.clear()
                await self._follow(error, deadline)
                continue
            except BrokerUnreachable as error:  # nothing listens there
                if not self._in_group:
                    raise
                failure = error
                refused.append(self.address)
                if all(any(same_place(address, gone) for gone in refused)
                       for address in self.replicas.addresses):
                    # Nothing listens at any replica: the group is down, said
                    # at once as for a broker alone (a service's session
                    # looks for it again in the background, 4.16).
                    raise BrokerUnreachable(
                        f"cannot connect to any replica of the group "
                        f"({', '.join(self.replicas.addresses)}): nothing listens there") \
                        from error
                await asyncio.sleep(min(ELECTION_WAIT, max(0.0, deadline - self._loop.time())))
            self._move(self.replicas.after(self.address))

    def _no_leader(self, failure: Optional[Exception], timeout: float) -> Exception:
        """The error of an open() that found no leader in time."""
        if isinstance(failure, BrokerUnreachable) and not self.replicas.replicated:
            return failure
        if failure is None:
            return BrokerUnreachable(
                f"no answer from the broker at {self.address} within {timeout:g} s")
        error = BrokerUnreachable(
            f"no leader of the replicas {', '.join(self.replicas.addresses)} answered within "
            f"{timeout:g} s (the latest: {failure})")
        error.__cause__ = failure
        return error

    def _retry_wait(self) -> float:
        """How long one HELLO is given before it is said again (4.2)."""
        return max(1.0, self.heartbeat)

    def _move(self, address: str) -> None:
        """Says the next HELLO to the replica at address (it may be where
        this session is), on a new DEALER."""
        if address != self.address:
            try:
                push, router = endpoints(address)
            except ValueError as error:
                log.warning("%s: %s", self.client_id, error)
                return
            log.info("%s: looking for the leader at %s (was at %s)", self.client_id, address,
                     self.address)
            self.address, self.push_endpoint, self._endpoint = address, push, router
        self._replace_socket()

    async def _follow(self, error: NotLeader, deadline: Optional[float] = None) -> None:
        """A 421: HELLO next to the leader it names, at once (after a moment
        when 421s keep naming others: no loop runs hot); with none named
        (an election), after a moment, to the next replica known."""
        self.replicas.replicated = True
        leader = error.leader
        if leader is not None:
            try:
                endpoints(leader)
            except ValueError:
                log.warning("%s: the replica at %s names %r as its leader: not an address",
                            self.client_id, self.address, leader)
                leader = None
        self._redirects += 1
        if leader is None or same_place(leader, self.address) or self._redirects > 2:
            wait = ELECTION_WAIT
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - self._loop.time()))
            await asyncio.sleep(wait)
        if self._closed:
            return
        if leader is not None:
            self.replicas.learn([leader])
            self._move(leader)
        else:
            self._move(self.replicas.after(self.address))

    def open_in_background(self) -> None:
        """Says HELLO until the broker answers, in the background (a broker
        of the service that is down): on_reconnect is called once it has."""
        self._watch_silence()
        self.reconnect()

    async def renew(self, timeout: float) -> None:
        """Says HELLO again now, on this DEALER: another DEALER of this
        client said HELLO with its client id (the same broker reached under
        two addresses), taking its session over (4.2). Without a WELCOME
        within timeout seconds, HELLO goes on in the background."""
        try:
            if await self._say_hello(timeout):
                return
        except BrokerError as error:
            log.info("%s: HELLO again: %s", self.client_id, error)
        self.reconnect()

    def tag(self, kind: bytes) -> bytes:
        """A new tag: kind, then a number that grows with every tag."""
        self._number += 1
        return b"%s%d" % (kind, self._number)

    def _is_stale(self, tag: bytes) -> bool:
        """Whether tag was sent before the latest HELLO, to a session gone."""
        number = TAG_NUMBER.search(tag)
        return number is not None and int(number.group(1)) < self._hello_number

    async def _say_hello(self, timeout: float, watch_connect: bool = False,
                         pass_over: bool = False) -> bool:
        """Says HELLO; True once WELCOMEd, False after timeout seconds.
        watch_connect (the first HELLO): a connection that fails is
        reported at once, with its cause (BrokerUnreachable), not after the
        time-out. pass_over (a replica asked again): so is one that fails
        or is lost before the answer (the replica died as it was asked),
        without asking the system why."""
        tag = self.tag(b"hello")
        self._hello_number = self._number
        hello: "asyncio.Future[bool]" = self._loop.create_future()
        self._hello = (tag, hello)
        self.send(self._hello_message(tag))
        if watch_connect or pass_over:
            self._watch.on_connect_failed = lambda: self._connect_failed(hello, not pass_over)
            self._passing_over = hello if pass_over else None
            self._watch.read_events()
        try:
            await asyncio.wait_for(asyncio.shield(hello), timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            self._watch.on_connect_failed = None
            self._passing_over = None

    def _hello_message(self, tag: bytes) -> Frames:
        if self.asks_service:
            return message(b"HELLO", tag, self.client_id, self.hello_seq(), b"service")
        return message(b"HELLO", tag, self.client_id, self.hello_seq())

    def _connect_failed(self, hello: "asyncio.Future[bool]", why: bool) -> None:
        if not hello.done():
            cause = connect_error(self._endpoint) if why else "nothing listens there"
            hello.set_exception(BrokerUnreachable(
                f"cannot connect to the broker at {self.address}: {cause}"))

    def reconnect(self, gone: bool = False) -> None:
        """Says HELLO again (until the broker answers), in the background;
        gone: the broker fell silent or its connection was lost, so a
        group's next replica is asked first (it names the leader, or
        leads)."""
        if self._closed or (self._rehello is not None and not self._rehello.done()):
            return
        self._rehello = asyncio.ensure_future(self._reconnect(gone))
        self._rehello.add_done_callback(log_failure)
        if self.welcome is not None:
            self.on_down()

    async def _reconnect(self, gone: bool) -> None:
        if self.welcome is not None:
            self.reconnects += 1
            log.info("%s: saying HELLO again to %s", self.client_id, self.address)
        leader = self.replicas.leader
        if leader is not None and not same_place(leader, self.address):
            self._move(leader)  # another session of this shard found the leader there
        elif gone and self._in_group:
            self._move(self.replicas.after(self.address))
        while not await self._hello_again():
            pass
        self._wake_up_waiters()
        self.on_reconnect()
        for request in list(self._pending.values()):
            if self._is_stale(request.tag):
                self._send_request(request)

    async def _hello_again(self) -> bool:
        """One more HELLO, given a second or so (4.2); without a WELCOME,
        the next is said on a new DEALER, to the next replica when the
        broker is a group (4.16). A refused one (403: the key or the client
        id) is tried again as slowly; a 421 is followed. A replica where
        nothing listens (a leader just gone, that its followers still name)
        is passed over after a moment, not after the whole wait."""
        wait = self._retry_wait()
        in_group = self._in_group
        try:
            if await self._say_hello(wait, pass_over=in_group):
                return True
        except NotLeader as error:
            await self._follow(error)
            return False
        except BrokerUnreachable:
            # Nothing listens there: the next replica, after a moment (no
            # loop runs hot while none listens), and the 421 that named this
            # one is followed at once (the moment was waited).
            await asyncio.sleep(ELECTION_WAIT)
            self._redirects = 0
        except BrokerError as error:
            log.warning("%s: HELLO refused: %s", self.client_id, error)
            await asyncio.sleep(wait)
        if self._closed:
            return False
        if in_group:
            self._move(self.replicas.after(self.address))
        else:
            self._replace_socket()
        return False

    def _watch_silence(self) -> None:
        """A broker silent for three heartbeat intervals is gone: HELLO
        again (4.9). Checked every interval."""
        if self._closed:
            return
        if self.welcome and self._loop.time() - self._heard > 3 * self.heartbeat:
            self._heard = self._loop.time()
            self.reconnect(gone=True)
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
        if welcome.shard is not None and self.shard is not None and welcome.shard != self.shard:
            log.error("%s: the broker at %s now says it is shard %d, not %d: its item ids may "
                      "collide with another broker's", self.client_id, self.address,
                      welcome.shard, self.shard)
        self.welcome = welcome
        self._redirects = 0
        if welcome.replicas:
            self.replicas.replicated = True
            self.replicas.learn(welcome.replicas)
        if self.replicas.replicated:
            self.replicas.led_from(self.address)
        if not self._hello[1].done():
            self._hello[1].set_result(True)

    def _on_error(self, error: BrokerError, fields: Fields) -> None:
        if error.code == 412:
            self._on_no_session(error)
            return
        if isinstance(error, NotLeader) and not (self._hello and error.tag == self._hello[0]):
            return  # about an older HELLO: the one said since is answered on its own
        if self._hello and error.tag == self._hello[0] and not self._hello[1].done():
            if error.code == 400 and self.asks_service:
                # A broker before 2.2 takes no 4th field: HELLO again without
                # it, and this broker is shard 0, alone (4.15).
                log.info("%s: the broker at %s is older than 2.2 (no service)", self.client_id,
                         self.address)
                self.asks_service = False
                tag = self.tag(b"hello")
                self._hello_number = self._number
                self._hello = (tag, self._hello[1])
                self.send(self._hello_message(tag))
                return
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
        self._wake_up_waiters(RuntimeError("queue client is closed"))
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
