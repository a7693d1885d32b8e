"""The put side of a Queue (PROTOCOL.md 4.1, 4.7, 4.10). Puts made in one
event-loop tick go out together, as one PUTS, at the end of the tick: a
burst costs few messages and a single put waits for nothing. Every message
is kept until the broker confirms it (SYNCED) and sent again, with the same
seqs, when the broker lost it; the broker keeps each put once. At most the
broker's window of puts is left unconfirmed."""
import asyncio
import collections
import logging

import zmq

from .protocol import PUTS_ENTRY, BrokerError, message, pack_puts, seq_range
from .security import apply_keys
from .session import log_failure

log = logging.getLogger("asyncq")

ALONE_BYTES = 64 * 1024  # an item this large goes alone, as a PUT

Sent = collections.namedtuple("Sent", "first last frames size")  # size: as has_room counts


def _retrieved(sync):
    """Marks a SYNC's failure seen: whoever waits for it raises it, and one
    started early that nobody waited for is asked again by the next
    confirm()."""
    if not sync.cancelled():
        sync.exception()


class Producer:
    def __init__(self, session, context, push_endpoint, keys):
        self._session = session
        self._context, self._push_endpoint, self._keys = context, push_endpoint, keys
        self._push = None
        self.seq = 0          # the last seq given to a put, sent or gathered
        self.confirmed = 0    # every seq up to this one is confirmed
        self.held = None      # the full queue the broker holds our puts for (HELD)
        self.unconfirmed = 0  # puts sent or gathered, not confirmed
        self._unconfirmed_bytes = 0
        self._sent = collections.deque()  # Sent messages not confirmed, oldest first
        self._batch = []                  # payloads gathered for the next message
        self._batch_key = None            # their (queue, lease_ms)
        self._batch_size = 0              # bytes of their PUTS items frame
        self._flush_handle = None
        self._syncing = None
        self._watched = set()             # seqs a put() waits for
        self._refused = {}                # seq -> BrokerError, for those put()s
        self.refusals = collections.deque(maxlen=100)  # about puts no put() waits for
        session.on_message = self._on_message
        session.on_reconnect = self._on_reconnect

    def _push_socket(self):
        """The PUSH socket, connected at the first put: a client that only
        joins or reads stats opens none (the broker closes connections that
        neither put nor say HELLO, 9.2)."""
        if self._push is None:
            self._push = self._context.socket(zmq.PUSH)
            apply_keys(self._push, self._keys)
            self._push.connect(self._push_endpoint)
        return self._push

    def has_room(self, size):
        """Whether one more put of size bytes stays within the window. Bytes
        count as in a PUTS items frame, length prefix included: at least
        what the broker counts."""
        welcome = self._session.welcome
        return not self.unconfirmed or (
            self.unconfirmed < welcome.window
            and self._unconfirmed_bytes + PUTS_ENTRY.size + size <= welcome.window_bytes)

    async def make_room(self, size):
        """Waits for confirmations until one more put of size bytes fits in
        the window: the broker holds at most that much of a producer for a
        full queue (4.10), and more would be refused."""
        while not self.has_room(size):
            await self.confirm(self._sent[0].last if self._sent else self.seq)

    def add(self, queue, payload, lease_ms):
        """Gives the put its seq and sends it: alone, or in the batch sent at
        the end of this tick. Returns the seq. The caller made room."""
        max_item = self._session.welcome.max_item
        entry = PUTS_ENTRY.size + len(payload)
        alone = len(payload) >= ALONE_BYTES or entry > max_item
        if self._batch and (alone or self._batch_key != (queue, lease_ms)
                            or self._batch_size + entry > max_item):
            self.flush()
        self.seq += 1
        self.unconfirmed += 1
        self._unconfirmed_bytes += entry
        if alone:
            self._send(Sent(self.seq, self.seq, message(
                b"PUT", self._session.client_id, self.seq, queue, lease_ms, payload), entry))
            return self.seq
        if not self._batch:
            self._batch_key = (queue, lease_ms)
            self._flush_handle = asyncio.get_running_loop().call_soon(self.flush)
        self._batch.append(payload)
        self._batch_size += entry
        if len(self._batch) >= self._session.welcome.max_batch:
            self.flush()
        return self.seq

    def flush(self):
        """Sends the gathered puts: one as a PUT, more as one PUTS."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._batch:
            return
        (queue, lease_ms), payloads, size = self._batch_key, self._batch, self._batch_size
        self._batch, self._batch_size = [], 0
        first, client_id = self.seq - len(payloads) + 1, self._session.client_id
        if len(payloads) == 1:
            frames = message(b"PUT", client_id, first, queue, lease_ms, payloads[0])
        else:
            frames = message(b"PUTS", client_id, first, len(payloads), queue, lease_ms,
                             pack_puts(payloads))
        self._send(Sent(first, self.seq, frames, size))

    def _send(self, sent):
        self._sent.append(sent)
        self._push_socket().send_multipart(sent.frames).add_done_callback(log_failure)
        # Half the window in use: ask for a confirmation now, so that the
        # window rarely fills and put() rarely waits for one.
        welcome = self._session.welcome
        if (self.unconfirmed >= welcome.window // 2
                or self._unconfirmed_bytes >= welcome.window_bytes // 2):
            self._start_sync()

    def _on_reconnect(self):
        """After a new HELLO (the broker restarted): the unconfirmed puts
        again. With none, the PUSH socket is closed, to be opened at the
        next put: its new connection would sit silent, and a broker closes
        such connections again and again (9.2)."""
        if not self._sent and self._push is not None:
            self._push.close(linger=0)
            self._push = None
        self._resend()

    def _resend(self):
        """Every unconfirmed message again, oldest first, each with its seqs:
        the broker takes them in order and drops those it has (4.1)."""
        for sent in self._sent:
            self._push_socket().send_multipart(sent.frames).add_done_callback(log_failure)

    async def confirm(self, seq):
        """Returns once the broker has confirmed every put up to seq."""
        if self._batch and seq > self.seq - len(self._batch):
            self.flush()
        while self.confirmed < seq:
            self._start_sync()
            await asyncio.shield(self._syncing)

    def _start_sync(self):
        """One SYNC at a time, for the last put sent."""
        if self._sent and (self._syncing is None or self._syncing.done()):
            self._syncing = asyncio.ensure_future(self._sync(self._sent[-1].last))
            self._syncing.add_done_callback(_retrieved)

    async def _sync(self, seq):
        client_id = self._session.client_id
        while True:
            try:
                await self._session.request(
                    b"sync", lambda tag: message(b"SYNC", tag, client_id, seq))
                break
            except BrokerError as error:
                if error.code != 410:
                    raise
                # Puts were lost on the way: all again, then the SYNC again,
                # which waits for them at the broker (4.7).
                log.info("%s: the broker lost puts; sending them again", client_id)
                self._resend()
        self._confirm_to(seq)

    def _confirm_to(self, seq):
        self.confirmed = max(self.confirmed, seq)
        self.held = None
        while self._sent and self._sent[0].last <= seq:
            sent = self._sent.popleft()
            self.unconfirmed -= sent.last - sent.first + 1
            self._unconfirmed_bytes -= sent.size

    def watch(self, seq):
        """A put() will wait for seq: an ERROR refusing it is kept for it."""
        self._watched.add(seq)

    def claim(self, seq):
        """Stops watching seq; returns the BrokerError refusing it, if any."""
        self._watched.discard(seq)
        return self._refused.pop(seq, None)

    def _on_message(self, command, fields):
        if command == b"HELD" and len(fields) == 4:
            self.held = fields[3].decode()
            log.info("%s: puts from seq %s on held: queue %s is full", self._session.client_id,
                     fields[2].decode(), self.held)
        elif command == b"ERROR":
            error = BrokerError.from_fields(fields)
            puts = None if error.tag else seq_range(error.subject)
            if puts:
                self._refuse(*puts, error)
            else:
                log.warning("%s: %s", self._session.client_id, error)

    def _refuse(self, first, last, error):
        """Puts first..last were received and refused (4.1)."""
        watched = [seq for seq in self._watched if first <= seq <= last]
        for seq in watched:
            self._refused[seq] = error
        if len(watched) < last - first + 1:
            self.refusals.append(error)

    def close(self):
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        if self._syncing is not None:
            self._syncing.cancel()
        if self._push is not None:
            self._push.close(linger=0)  # only confirmed puts are promised
