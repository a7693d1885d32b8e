"""CURVE keys (PROTOCOL.md section 7): loading them, putting them on
sockets, and telling from a socket's monitor why a HELLO went unanswered."""
from __future__ import annotations

import asyncio
import os
from typing import Any, Callable, NamedTuple, Optional, Tuple

import zmq
import zmq.auth
from zmq.utils.monitor import parse_monitor_message

from .protocol import BrokerUnreachable, KeyMismatch, KeyRefused, KeysRequired
from .sockets import Reader, plain_socket

class Keys(NamedTuple):
    public: bytes
    secret: bytes
    server: bytes

Z85_CHARS = frozenset(
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")

HANDSHAKE_FAILURES = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                      | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


def load_keys(curve_secret: Optional[str] = None,
              server_key: Optional[str] = None) -> Optional[Keys]:
    """This client's keys, from the arguments or else ASYNCQ_CURVE_SECRET (the
    path of its secret certificate, as `asyncq keygen` writes) and
    ASYNCQ_SERVER_KEY (the broker's public certificate, or its Z85 key).
    None when neither is set: the client then speaks without CURVE. Raises
    ValueError when only one is set or a file is not a certificate, so a
    misconfigured client fails before it connects."""
    secret_file = curve_secret or os.environ.get("ASYNCQ_CURVE_SECRET")
    server = server_key or os.environ.get("ASYNCQ_SERVER_KEY")
    if not secret_file and not server:
        return None
    if not secret_file:
        raise ValueError(f"{server}: the broker's key is given but not this client's "
                         "certificate (curve_secret, ASYNCQ_CURVE_SECRET)")
    if not server:
        raise ValueError(f"{secret_file}: this client's certificate is given but not the "
                         "broker's key (server_key, ASYNCQ_SERVER_KEY)")
    public, secret = _load_certificate(secret_file)
    if secret is None:
        raise ValueError(f"{secret_file} is not a secret certificate "
                         "(asyncq keygen writes NAME.key_secret)")
    return Keys(public, secret, _server_key(server))


def _load_certificate(path: str) -> Tuple[bytes, Optional[bytes]]:
    try:
        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable certificate ({error})") from None


def _server_key(text: str) -> bytes:
    """A certificate file if one is there, else a 40-character Z85 key."""
    if not os.path.exists(text) and len(text) == 40 and set(text.encode()) <= Z85_CHARS:
        return text.encode()
    return _load_certificate(text)[0]


def apply_keys(socket: zmq.Socket[Any], keys: Optional[Keys]) -> None:
    """Makes socket a CURVE client of the broker (every socket, PUSH too:
    the broker's PULL socket speaks CURVE as well)."""
    if keys:
        socket.curve_secretkey = keys.secret
        socket.curve_publickey = keys.public
        socket.curve_serverkey = keys.server


class HandshakeWatch:
    """What a socket's monitor reports about its connection: handshake
    failures, read when a HELLO went unanswered (they say whether keys are
    the reason), a connection that failed, for which on_connect_failed is
    called at once while it is set, and a connection lost (the broker's
    process died, say), for which on_disconnected is (inside an event
    loop)."""

    def __init__(self, socket: zmq.Socket[Any]) -> None:
        self._socket = socket
        endpoint = f"inproc://asyncq-monitor-{id(socket):x}-{os.urandom(4).hex()}"
        socket.monitor(endpoint, HANDSHAKE_FAILURES | zmq.EVENT_CONNECTED
                       | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_DISCONNECTED)
        self._events = plain_socket(socket.context, zmq.PAIR)
        self._events.connect(endpoint)
        self._failure: Optional[int] = None
        self.connected = False       # a connection was made, at least once
        self.connect_failed = False  # a connection failed, and none was made since
        self.on_connect_failed: Optional[Callable[[], None]] = None
        self.on_disconnected: Optional[Callable[[], None]] = None
        try:
            asyncio.get_running_loop()
            self._reader: Optional[Reader] = Reader(self._events, self.read_events)
        except RuntimeError:
            self._reader = None  # a blocking caller reads them in failure()

    def read_events(self) -> None:
        disconnected = False
        while True:
            try:
                event = parse_monitor_message(self._events.recv_multipart(zmq.NOBLOCK))["event"]
            except zmq.Again:
                break
            if event == zmq.EVENT_CONNECTED:
                self.connected, self.connect_failed = True, False
            elif event == zmq.EVENT_CONNECT_RETRIED:
                self.connect_failed = not self.connected
            elif event == zmq.EVENT_DISCONNECTED:
                disconnected = True
            elif self._failure is None or event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self._failure = event
        if self.connect_failed and self.on_connect_failed is not None:
            self.on_connect_failed()
        if disconnected and self.on_disconnected is not None:
            self.on_disconnected()

    def failure(self, keys: Optional[Keys]) -> Optional[BrokerUnreachable]:
        """The exception that explains the silence, or None if no handshake
        failed. A refused key is a ZAP (AUTH) failure; a wrong server key
        leaves the broker unable to read our HELLO box, and a client
        without keys meets CURVE's mechanism: both are protocol failures."""
        self.read_events()
        if self._failure is None:
            return None
        if self._failure == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return KeyRefused("the broker refused this client's key: its public certificate "
                              f"({keys.public.decode() if keys else 'none'}) is not in the "
                              "broker's clients directory")
        if keys:
            return KeyMismatch("the broker's key does not match the server key this client "
                               "was given (server_key, ASYNCQ_SERVER_KEY), or the broker does "
                               "not use CURVE")
        return KeysRequired("the broker requires CURVE keys: give this client its secret "
                            "certificate and the broker's key (curve_secret and server_key, "
                            "or ASYNCQ_CURVE_SECRET and ASYNCQ_SERVER_KEY)")

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if not self._socket.closed:
            self._socket.disable_monitor()
        self._events.close(linger=0)
