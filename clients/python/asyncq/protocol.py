"""asyncq/2 wire protocol (docs/PROTOCOL.md): addresses, messages, the
binary batch frames, errors."""
from __future__ import annotations

import asyncio
import dataclasses
import datetime
import math
import operator
import re
import struct
from typing import Dict, FrozenSet, List, NamedTuple, Optional, Sequence, Tuple, Union

SIGNATURE = b"asyncq/2"
DEFAULT_PORT = 5557
NAME_RE = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")
TEXT_MAX = 1024          # bytes of a text field (a NACK reason)
IDS_MAX = 1024           # ids in one ACK, TOUCH or NACK
PEEK_MAX = 1024          # items one PEEK shows
WAIT_MAX_MS = 86400000   # longest NACK delay and JOIN time-out
PRIORITY_MIN, PRIORITY_MAX = -2**31, 2**31 - 1  # a put's priority (4.1)
NUMBER_MAX = 2**64 - 1   # largest number field
PUTS_ENTRY = struct.Struct(">I")        # length before each PUTS item
ITEMS_ENTRY = struct.Struct(">QIQII")   # id, attempt, age-us, lease-ms, length

Frames = List[bytes]           # a message as sent: signature, command, fields
Fields = List[bytes]           # a message's fields, after its command
Field = Union[bytes, str, int]
Delivery = Tuple[int, int, int, int, memoryview]  # id, attempt, age-us, lease-ms, payload
Stats = Dict[str, Union[int, str]]


class Welcome(NamedTuple):
    broker_id: str
    max_item: int
    heartbeat_ms: int
    max_batch: int
    window: int
    window_bytes: int
    roles: FrozenSet[str]
    persistence: str  # "memory", "always", "interval", "never" or "replicated" (6)
    # WELCOME's 10th field (4.15), when the HELLO asked for it: this
    # broker's shard number and its service's brokers in shard order (empty:
    # it is alone). None and (): a broker before 2.2, shard 0 alone.
    shard: Optional[int] = None
    brokers: Tuple[str, ...] = ()
    # The replicas of this shard (4.16), HOST:PORT each, as the leader's
    # --peers lists them; () for a broker that is not replicated.
    replicas: Tuple[str, ...] = ()
    # Every shard's client addresses, in shard order (4.16: `groups`, sent
    # when some shard of the service is a group of replicas): a group's
    # replicas, or a broker alone's one address. () without it.
    groups: Tuple[Tuple[str, ...], ...] = ()


ADDRESS_FORMS = "HOST[:PORT], tcp://HOST:PORT or ipc://PATH"


def endpoints(address: str) -> Tuple[str, str]:
    """The broker's (PULL, ROUTER) endpoints for HOST[:PORT], tcp://HOST:PORT
    or ipc://PATH (PROTOCOL.md section 2). Raises ValueError naming the
    accepted forms for anything else."""
    if not isinstance(address, str):
        raise TypeError(f"a broker address is a str ({ADDRESS_FORMS}), not "
                        f"{type(address).__name__}")
    if address.startswith("ipc://") and len(address) > len("ipc://"):
        return address + ".pull", address + ".router"
    rest = address[len("tcp://"):] if address.startswith("tcp://") else address
    host, port_text = rest, str(DEFAULT_PORT)
    if rest.startswith("["):  # [v6] or [v6]:PORT
        end = rest.find("]")
        host, tail = (rest[:end + 1], rest[end + 1:]) if end > 0 else ("", "")
        if tail:
            port_text = tail[1:] if tail.startswith(":") else "?"
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
    elif ":" in rest or "/" in rest:
        host = ""
    if (not host or any(c in host for c in "/ @") or not port_text.isdigit()
            or not 0 < int(port_text) < 65535 or (address.startswith("tcp://") and ":" not in rest)):
        raise ValueError(f"not a broker address: {address!r} (expected {ADDRESS_FORMS}; "
                         f"PORT is the broker's first port, 1 to 65534)")
    port = int(port_text)
    return f"tcp://{host}:{port}", f"tcp://{host}:{port + 1}"


def message(command: bytes, *fields: Field) -> Frames:
    """A message: signature, command, then each field as one frame."""
    frames = [SIGNATURE, command]
    for field in fields:
        if isinstance(field, int):
            field = str(field).encode()
        elif isinstance(field, str):
            field = field.encode()
        frames.append(bytes(field))
    return frames


def parse(frames: Sequence[bytes]) -> Optional[Tuple[bytes, Fields]]:
    """(command, fields) of a message from the broker, or None if it is not one."""
    if len(frames) < 2 or frames[0] != SIGNATURE:
        return None
    return frames[1], list(frames[2:])


def parse_welcome(fields: Fields) -> Optional[Welcome]:
    """WELCOME's fields after its tag (4.2, and the optional `service` of
    4.15), or None if they are not all there or the service field is not
    as 4.15 says."""
    if len(fields) not in (9, 10):
        return None
    broker_id, max_item, heartbeat_ms, max_batch, window, window_bytes, roles, persistence = \
        fields[1:9]
    service = ServiceField(None, (), ())
    groups: Tuple[Tuple[str, ...], ...] = ()
    if len(fields) == 10:
        parsed = parse_service(fields[9])
        parsed_groups = parse_groups(fields[9])
        if parsed is None or parsed_groups is None:
            return None
        if parsed_groups and len(parsed_groups) != len(parsed.brokers):
            return None  # a shard in one list and not in the other
        service, groups = parsed, parsed_groups
    return Welcome(broker_id.decode(), int(max_item), max(int(heartbeat_ms), 1),
                   max(int(max_batch), 1), max(int(window), 1), int(window_bytes),
                   frozenset(role for role in roles.decode().split(",") if role),
                   persistence.decode(), service.shard, service.brokers, service.replicas,
                   groups)


SHARDS_MAX = 256  # brokers in one service: an item id's top 8 bits (4.15)


class ServiceField(NamedTuple):
    """WELCOME's `service` field (4.15, 4.16): the broker's shard, its
    service's brokers in shard order (() when it is alone) and its shard's
    replicas (() when it is not replicated)."""
    shard: Optional[int]
    brokers: Tuple[str, ...]
    replicas: Tuple[str, ...]


def _address_list(text: str) -> Optional[Tuple[str, ...]]:
    """A comma-separated list of addresses ("" is none), or None when an
    entry is empty."""
    entries = tuple(text.split(",")) if text else ()
    return None if any(not entry for entry in entries) else entries


def _service_pairs(field: bytes) -> Optional[Dict[str, str]]:
    """WELCOME's `service` field as its KEY=VALUE pairs; None when it is
    not UTF-8."""
    try:
        return dict(pair.partition("=")[::2] for pair in field.decode().split())
    except UnicodeDecodeError:
        return None


def parse_service(field: bytes) -> Optional[ServiceField]:
    """WELCOME's `service` field (4.15), `shard=K [replicas=A,B,C]
    brokers=A,B,... [groups=A|B|C,D|E|F]`, as a ServiceField, or None when
    it is not that. Keys this client does not know are ignored, and so is
    `groups` here: parse_groups() reads it."""
    pairs = _service_pairs(field)
    if pairs is None:
        return None
    shard = pairs.get("shard", "")
    if not shard.isdigit() or int(shard) >= SHARDS_MAX:
        return None
    brokers = _address_list(pairs.get("brokers", ""))
    replicas = _address_list(pairs.get("replicas", ""))
    if brokers is None or replicas is None:
        return None
    return ServiceField(int(shard), brokers, replicas)


def parse_groups(field: bytes) -> Optional[Tuple[Tuple[str, ...], ...]]:
    """The `groups` of WELCOME's `service` field (4.16: sent when some shard
    of the service is a group of replicas): every shard's client addresses,
    in shard order, a group's joined by '|' (`groups=A0|A1|A2,B0`: shard 0
    is a group of three, shard 1 a broker alone); () without it, None when
    an entry or an address in one is empty."""
    pairs = _service_pairs(field)
    if pairs is None:
        return None
    entries = _address_list(pairs.get("groups", ""))
    if entries is None:
        return None
    groups = tuple(tuple(entry.split("|")) for entry in entries)
    return None if any(not address for group in groups for address in group) else groups


def shard_of(item_id: int) -> int:
    """The shard an item id names: its top 8 bits (4.15)."""
    return item_id >> 56


FNV_OFFSET, FNV_PRIME = 0x811C9DC5, 0x01000193


def fnv1a32(data: Union[bytes, str]) -> int:
    """FNV-1a, 32 bits, of data (a str as UTF-8, as put's key is): the hash
    that places a put's key on a shard (PROTOCOL.md 4.15: shard =
    fnv1a32(key) mod the number of shards). Start from 2166136261; for
    each byte, XOR it in, then multiply by 16777619, modulo 2**32.
    fnv1a32(b"") is 2166136261, fnv1a32(b"a") 3826002220 (0xe40c292c)."""
    if isinstance(data, str):
        data = data.encode()
    value = FNV_OFFSET
    for byte in data:
        value = ((value ^ byte) * FNV_PRIME) & 0xFFFFFFFF
    return value


def same_place(a: str, b: str) -> bool:
    """Whether two broker addresses name the same endpoints."""
    try:
        return endpoints(a)[1].lower() == endpoints(b)[1].lower()
    except ValueError:
        return False


def split_addresses(text: str) -> List[str]:
    """A broker address, or several separated by commas (a service,
    4.15), as a list; each checked as endpoints() checks one. Raises
    ValueError for an empty entry or one not an address."""
    if not isinstance(text, str):
        endpoints(text)  # the TypeError naming the forms
    addresses = [part.strip() for part in text.split(",")] if "," in text else [text]
    for address in addresses:
        if not address:
            raise ValueError(f"not a list of broker addresses: {text!r} (an empty entry; "
                             f"expected {ADDRESS_FORMS}, separated by commas)")
        endpoints(address)
    return addresses


def wake_all(waiters: "List[asyncio.Future[None]]",
             error: Optional[BaseException] = None) -> None:
    """Ends every future of `waiters` not yet done: with None, or raising
    `error`."""
    for waiter in waiters:
        if not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)


def check_name(name: str, what: str = "queue") -> str:
    if not NAME_RE.match(name.encode() if isinstance(name, str) else name):
        raise ValueError(f"{what} name {name!r} is not valid: 1 to 64 of A-Z a-z 0-9 . _ : -")
    return name


def pack_ids(ids: Sequence[int]) -> bytes:
    """The ids frame of ACK, TOUCH and NACK: 8 bytes each, big-endian."""
    return struct.pack(f">{len(ids)}Q", *ids)


def pack_puts(payloads: Sequence[bytes]) -> bytes:
    """A PUTS items frame: each payload after its u32 length (4.1)."""
    return b"".join(PUTS_ENTRY.pack(len(payload)) + payload for payload in payloads)


EACH = b"each"  # the options frame of a PUTS whose entries carry their own (4.1)


def pack_puts_each(options: Sequence[bytes], payloads: Sequence[bytes]) -> bytes:
    """A PUTS items frame for the options frame `each` (4.1): each payload
    after its options (u8 length, then the options frame's text; 0 bytes:
    none) and its u32 length. The two sequences are as long."""
    heads: Dict[bytes, bytes] = {}  # options -> their u8 length and text (few distinct)
    parts: List[bytes] = []
    append, pack = parts.append, PUTS_ENTRY.pack
    for entry_options, payload in zip(options, payloads):
        head = heads.get(entry_options)
        if head is None:
            head = heads[entry_options] = bytes((len(entry_options),)) + entry_options
        append(head)
        append(pack(len(payload)))
        append(payload)
    return b"".join(parts)


def _seconds(value: object, what: str, kind: str = "seconds (an int or a float)") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} is {kind}, not {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{what} is a finite number of seconds, not {value!r}")
    return value


def _ms_up(seconds: float, what: str) -> int:
    """seconds as whole milliseconds, rounded up (a float within a
    microsecond of a whole millisecond is that millisecond: 0.007 s is 7 ms,
    not 8 for its 7.000000000000001)."""
    if isinstance(seconds, int):
        ms = seconds * 1000
    else:
        exact = seconds * 1000
        ms = round(exact)
        if abs(exact - ms) >= 1e-3:
            ms = math.ceil(exact)
        elif ms == 0 and seconds > 0:
            ms = 1  # a delay, however short, is one
    if ms > NUMBER_MAX:
        raise ValueError(f"{what} is too far ahead: {seconds!r} seconds")
    return ms


def _datetime_ms(at: datetime.datetime) -> int:
    """at in milliseconds since 1970, rounded up; a naive datetime is local
    time (as datetime.timestamp() takes it)."""
    return int(at.replace(microsecond=0).timestamp()) * 1000 + -(-at.microsecond // 1000)


_FRONT_DELAYED = ("a LifoQueue's puts go to the front of the queue, which the broker does not "
                  "take with a delay: no delay or at")


def put_options(priority: Optional[int] = None, delay: Optional[float] = None,
                at: Union[datetime.datetime, float, None] = None, front: bool = False) -> bytes:
    """A put's options frame (4.1): b"" when there are none. Raises
    TypeError or ValueError for options the broker would refuse (those it
    alone knows, a delay over its --max-delay, it refuses with 400)."""
    options: List[bytes] = []
    if priority is not None:
        if isinstance(priority, bool):
            raise TypeError("priority is an int, not bool")
        try:
            value = operator.index(priority)
        except TypeError:
            raise TypeError(f"priority is an int, not {type(priority).__name__}") from None
        if not PRIORITY_MIN <= value <= PRIORITY_MAX:
            raise ValueError(f"priority is from {PRIORITY_MIN} to {PRIORITY_MAX}, not {value}")
        if value:
            options.append(b"priority=%d" % value)
    if delay is not None and at is not None:
        raise ValueError("a put takes delay or at, not both")
    if delay is not None:
        seconds = _seconds(delay, "delay")
        if seconds < 0:
            raise ValueError(f"delay is 0 or more seconds, not {delay!r}")
        ms = _ms_up(seconds, "delay")
        if ms:
            if front:
                raise ValueError(_FRONT_DELAYED)
            options.append(b"delay-ms=%d" % ms)
    elif at is not None:
        if isinstance(at, datetime.datetime):
            ms = _datetime_ms(at)
        else:
            ms = _ms_up(_seconds(at, "at", "a datetime.datetime or seconds since 1970 "
                                 "(an int or a float)"), "at")
        if front:
            raise ValueError(_FRONT_DELAYED)
        options.append(b"at-ms=%d" % max(ms, 0))  # before 1970: past, so at once
    if front:
        options.append(b"front")
    return b" ".join(options)


def unpack_items(count: int, frame: bytes) -> List[Delivery]:
    """The deliveries of an ITEMS frame (4.4) as (id, attempt, age_us,
    lease_ms, payload) tuples, each payload a memoryview of the frame (copied
    once, into its Item). Raises ValueError if the frame does not hold
    exactly `count` of them."""
    view, at = memoryview(frame), 0
    deliveries: List[Delivery] = []
    for _ in range(count):
        if at + ITEMS_ENTRY.size > len(view):
            raise ValueError("ITEMS frame shorter than its count")
        item_id, attempt, age_us, lease_ms, length = ITEMS_ENTRY.unpack_from(view, at)
        at += ITEMS_ENTRY.size
        if at + length > len(view):
            raise ValueError("ITEMS payload runs past the frame")
        deliveries.append((item_id, attempt, age_us, lease_ms, view[at:at + length]))
        at += length
    if at != len(view):
        raise ValueError("ITEMS frame longer than its count")
    return deliveries


PRIORITY_MIN, PRIORITY_MAX = -2**31, 2**31 - 1
PRIORITIES = struct.Struct(">i")


def parse_priority(field: bytes) -> int:
    """ITEM's priority field (4.4): a signed decimal within int32."""
    digits = field[1:] if field[:1] == b"-" else field
    if not digits.isdigit() or not PRIORITY_MIN <= int(field) <= PRIORITY_MAX:
        raise ValueError(f"priority {field[:20]!r} is not a whole number in int32")
    return int(field)


def unpack_priorities(count: int, frame: bytes) -> List[Optional[int]]:
    """ITEMS' priorities frame (4.4): `count` big-endian int32."""
    if len(frame) != 4 * count:
        raise ValueError(f"{len(frame)} bytes of priorities for {count} items")
    return [priority for (priority,) in PRIORITIES.iter_unpack(frame)]


def seq_range(subject: bytes) -> Optional[Tuple[int, int]]:
    """(first, last) of an ERROR subject about puts ("7" or "7-70"), or
    None if the subject is not a seq range."""
    first, dash, last = subject.partition(b"-")
    if not first.isdigit() or (dash and not last.isdigit()):
        return None
    return int(first), int(last) if dash else int(first)


def parse_stats(line: bytes) -> Stats:
    """A STATS line (4.8) as a dict: numbers as ints, the rest as str."""
    values: Stats = {}
    for pair in line.decode().split():
        key, _, value = pair.partition("=")
        values[key] = int(value) if value.isdigit() else value
    return values


def cut_text(text: str) -> bytes:
    """text as at most TEXT_MAX bytes of UTF-8, cut on a character boundary."""
    return text.encode()[:TEXT_MAX].decode(errors="ignore").encode()


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """A dead item of a queue, as DEAD list shows it (PROTOCOL.md 4.12).
    size is the whole payload's size; payload its start (at most 32 bytes,
    payload_cut when there is more); died when it died (aware, UTC; None
    when the broker does not know); cause why: "lease", "nack", "session",
    "restart" or "unknown" (a later broker may give others); reason what
    its last NACK said (reason_cut when the broker showed only its start)."""
    id: int
    attempts: int
    size: int
    died: Optional[datetime.datetime]
    cause: str
    reason: str
    reason_cut: bool
    payload: bytes
    payload_cut: bool


def _unquote(line: bytes, at: int) -> Tuple[bytes, int]:
    """The bytes of the quoted value whose opening quote is at line[at]
    (`\\"`, `\\\\` and `\\xNN` undone), and the index after its closing quote."""
    out = bytearray()
    at += 1
    while at < len(line):
        byte = line[at]
        if byte == 0x22:  # "
            return bytes(out), at + 1
        if byte == 0x5C and at + 1 < len(line):  # backslash
            following = line[at + 1]
            digits = line[at + 2:at + 4]
            if following == 0x78 and len(digits) == 2 and all(d in b"0123456789abcdefABCDEF"
                                                              for d in digits):  # \xNN
                out.append(int(digits, 16))
                at += 4
                continue
            out.append(following)
            at += 2
            continue
        out.append(byte)
        at += 1
    raise ValueError("a quoted value is not closed")


def parse_pairs(line: bytes) -> Dict[str, Tuple[bytes, bool]]:
    """A REPORT line of key=value pairs as {key: (value, cut)}: a value is a
    word or a quoted string (unescaped), cut when `...` follows its closing
    quote. Words without "=" are skipped."""
    pairs: Dict[str, Tuple[bytes, bool]] = {}
    at = 0
    while at < len(line):
        if line[at] == 0x20:
            at += 1
            continue
        space, equals = line.find(b" ", at), line.find(b"=", at)
        if space < 0:
            space = len(line)
        if equals < 0 or equals > space:
            at = space  # not a pair
            continue
        key = line[at:equals].decode(errors="replace")
        at = equals + 1
        if line[at:at + 1] == b'"':
            value, at = _unquote(line, at)
            cut = line.startswith(b"...", at)
            if cut:
                at += 3
        else:
            end = line.find(b" ", at)
            end = len(line) if end < 0 else end
            value, cut, at = line[at:end], False, end
        pairs[key] = (value, cut)
    return pairs


def _died(text: bytes) -> Optional[datetime.datetime]:
    for form in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            when = datetime.datetime.strptime(text.decode("ascii"), form)
        except (ValueError, UnicodeDecodeError):
            continue
        return when.replace(tzinfo=datetime.timezone.utc)
    return None  # "unknown"


def parse_dead_letter(line: bytes) -> DeadLetter:
    """One line of DEAD list (4.12). Keys this client does not know are
    ignored; raises ValueError for a line without id, attempts and size."""
    pairs = parse_pairs(line)
    try:
        numbers = [int(pairs[key][0]) for key in ("id", "attempts", "size")]
    except (KeyError, ValueError):
        raise ValueError(f"not a DEAD list line: {line[:200]!r}") from None
    reason, reason_cut = pairs.get("reason", (b"", False))
    payload, payload_cut = pairs.get("payload", (b"", False))
    return DeadLetter(id=numbers[0], attempts=numbers[1], size=numbers[2],
                      died=_died(pairs.get("died", (b"unknown", False))[0]),
                      cause=pairs.get("cause", (b"unknown", False))[0].decode(errors="replace"),
                      reason=reason.decode(errors="replace"), reason_cut=reason_cut,
                      payload=payload, payload_cut=payload_cut)


@dataclasses.dataclass(frozen=True)
class PeekedItem:
    """An item a queue would deliver next, as PEEK shows it (PROTOCOL.md
    4.14), left where it is. size is the whole payload's size; payload its
    start (at most 64 bytes, escapes undone; payload_cut when there is
    more); priority the put's (lowest first); age the seconds since the
    broker accepted it (to the millisecond); attempts its deliveries so
    far (a nacked or expired item comes back with its attempts)."""
    id: int
    attempts: int
    size: int
    priority: int
    age: float
    payload: bytes
    payload_cut: bool


def parse_peeked(line: bytes) -> PeekedItem:
    """One line of PEEK (4.14). Keys this client does not know are ignored;
    raises ValueError for a line without id, attempts, size, priority and
    age_ms as numbers."""
    pairs = parse_pairs(line)
    try:
        numbers = [int(pairs[key][0]) for key in ("id", "attempts", "size", "priority", "age_ms")]
    except (KeyError, ValueError):
        raise ValueError(f"not a PEEK line: {line[:200]!r}") from None
    payload, payload_cut = pairs.get("payload", (b"", False))
    return PeekedItem(id=numbers[0], attempts=numbers[1], size=numbers[2], priority=numbers[3],
                      age=numbers[4] / 1000, payload=payload, payload_cut=payload_cut)


class BrokerError(Exception):
    """An ERROR from the broker (PROTOCOL.md section 8): .code, .name, .tag
    (of the request it answers, b"" for puts and notices), .subject (bytes:
    a seq range, ids, a queue...) and .text."""

    def __init__(self, code: int, name: str, subject: bytes = b"", text: str = "",
                 tag: bytes = b"") -> None:
        super().__init__(f"{code} {name}: {text}" + (f" ({subject.decode(errors='replace')})"
                                                      if subject else ""))
        self.code, self.name, self.subject, self.text, self.tag = code, name, subject, text, tag

    @property
    def ids(self) -> Tuple[int, ...]:
        """The item ids a 404 or 408 about ids names, else ()."""
        words = self.subject.split()
        if self.code not in (404, 408) or not all(word.isdigit() for word in words):
            return ()
        return tuple(int(word) for word in words)

    @classmethod
    def from_fields(cls, fields: Fields) -> "BrokerError":
        code = int(fields[0]) if fields and fields[0].isdigit() else 0
        name = fields[1].decode(errors="replace") if len(fields) > 1 else ""
        tag = fields[2] if len(fields) > 2 else b""
        subject = fields[3] if len(fields) > 3 else b""
        text = fields[4].decode(errors="replace") if len(fields) > 4 else ""
        if code == 503:
            return QueueShutDown(code, name, subject, text, tag)
        if code == NOT_LEADER:
            return NotLeader(code, name, subject, text, tag)
        return cls(code, name, subject, text, tag)


NOT_LEADER = 421  # a replica that does not lead its group answered HELLO (4.16)


class NotLeader(BrokerError):
    """421 NOT_LEADER (PROTOCOL.md 4.16): a replica that does not lead its
    group answered HELLO. .leader is the leader's address as the group's
    --peers lists it (HOST:PORT), or None while an election is under way.
    The client follows it by itself: it is seen only as the __cause__ of
    the BrokerUnreachable raised when no leader answered in time."""

    @property
    def leader(self) -> Optional[str]:
        address = self.subject.decode(errors="replace").strip()
        return address or None


_ASYNCIO_SHUT_DOWN: Tuple[type, ...] = (
    (getattr(asyncio, "QueueShutDown"),) if hasattr(asyncio, "QueueShutDown") else ())


class QueueShutDown(BrokerError, *_ASYNCIO_SHUT_DOWN):  # type: ignore[misc]
    """The queue was shut down (503): Python 3.13's asyncio.QueueShutDown
    (and, from Python 3.13, a subclass of it)."""


class BrokerUnreachable(ConnectionError):
    """The broker cannot be reached: its host does not resolve or nothing
    listens at its address (both said at once), or no WELCOME came within
    the client's timeout (something else listens there, or the broker is
    stuck). The message names the address as given, and why."""


class KeyRefused(BrokerUnreachable):
    """The broker refused this client's CURVE key: its public certificate is
    not in the broker's clients directory."""


class KeyMismatch(BrokerUnreachable):
    """The CURVE handshake failed: the broker's key is not the one this
    client was given (or the broker does not use CURVE)."""


class KeysRequired(BrokerUnreachable):
    """The broker uses CURVE and this client has no keys."""


class ShardConflict(ValueError):
    """Two brokers given to one client say they are the same shard (4.15):
    the same broker given twice under two names, or two brokers started
    without their own --shard. Their item ids would collide, so the client
    refuses to use them; the message names both."""
