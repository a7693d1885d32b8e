"""asyncq/1 wire protocol (docs/PROTOCOL.md): addresses, messages, errors."""
import re

SIGNATURE = b"asyncq/1"
DEFAULT_PORT = 5557
NAME_RE = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")


def endpoints(address):
    """The broker's (PULL, ROUTER) endpoints for HOST[:PORT], tcp://HOST:PORT
    or ipc://PATH (PROTOCOL.md section 2)."""
    if address.startswith("ipc://"):
        return address + ".pull", address + ".router"
    if address.startswith("tcp://"):
        address = address[len("tcp://"):]
    host, port = address, DEFAULT_PORT
    if address.startswith("["):  # [v6] or [v6]:PORT
        end = address.index("]")
        host, rest = address[:end + 1], address[end + 1:]
        if rest:
            port = int(rest.lstrip(":"))
    elif address.count(":") == 1:
        host, text = address.split(":")
        port = int(text)
    if not host or not 0 < port < 65535:
        raise ValueError(f"not a broker address: {address!r}")
    return f"tcp://{host}:{port}", f"tcp://{host}:{port + 1}"


def message(command, *fields):
    """A message: signature, command, then each field as one frame."""
    frames = [SIGNATURE, command]
    for field in fields:
        if isinstance(field, int):
            field = str(field).encode()
        elif isinstance(field, str):
            field = field.encode()
        frames.append(bytes(field))
    return frames


def parse(frames):
    """(command, fields) of a message from the broker, or None if it is not one."""
    if len(frames) < 2 or frames[0] != SIGNATURE:
        return None
    return frames[1], frames[2:]


def check_name(name, what="queue"):
    if not NAME_RE.match(name.encode() if isinstance(name, str) else name):
        raise ValueError(f"{what} name {name!r} is not valid: 1 to 64 of A-Z a-z 0-9 . _ : -")
    return name


class BrokerError(Exception):
    """An ERROR from the broker (PROTOCOL.md section 6)."""

    def __init__(self, code, name, subject=b"", text=""):
        super().__init__(f"{code} {name}: {text}")
        self.code, self.name, self.subject, self.text = code, name, subject, text

    @classmethod
    def from_fields(cls, fields):
        code = int(fields[0]) if fields and fields[0].isdigit() else 0
        name = fields[1].decode(errors="replace") if len(fields) > 1 else ""
        subject = fields[2] if len(fields) > 2 else b""
        text = fields[3].decode(errors="replace") if len(fields) > 3 else ""
        return (QueueShutDown if code == 503 else cls)(code, name, subject, text)


class QueueShutDown(BrokerError):
    """The queue was shut down (503): Python 3.13's asyncio.QueueShutDown."""


class BrokerUnreachable(ConnectionError):
    """No WELCOME from the broker in time."""
