"""Plain (blocking-API) ZeroMQ sockets driven by the event loop: a reader
callback on ZMQ_FD and sends with NOBLOCK, without pyzmq's asyncio layer
and its futures and polls."""
from __future__ import annotations

import asyncio
from typing import Any, Callable, List

import zmq


NOBLOCK = int(zmq.NOBLOCK)
MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
EVENTS, POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)


def send_now(socket: zmq.Socket[Any], frames: List[bytes]) -> None:
    """Sends a message without waiting; raises zmq.Again when the socket
    has no room (then none of it was sent: ZeroMQ takes a message's later
    frames once it took its first). Plain ints for the flags: pyzmq's
    send_multipart makes an enum per frame."""
    last = len(frames) - 1
    for index, frame in enumerate(frames):
        socket.send(frame, MORE if index < last else NOBLOCK)


def plain_socket(context: zmq.Context[Any], kind: int, endpoint: str = "") -> zmq.Socket[Any]:
    """A socket with pyzmq's plain API on context, asyncio's or not; one
    for an IPv6 endpoint (tcp://[ADDRESS]:PORT) speaks IPv6."""
    socket = zmq.Context.shadow(context.underlying).socket(kind)
    if endpoint.startswith("tcp://["):
        socket.setsockopt(zmq.IPV6, 1)
    return socket


class Reader:
    """Calls on_ready(socket) from the event loop whenever a plain ZeroMQ
    socket may have a message to read or room to send. ZMQ_FD is
    edge-triggered and a send can consume its edge: check() after a send
    makes sure a message that arrived meanwhile is still read."""

    def __init__(self, socket: zmq.Socket[Any], on_ready: Callable[[], None]) -> None:
        self._socket, self._on_ready = socket, on_ready
        self._loop = asyncio.get_running_loop()
        self._fd: int = socket.getsockopt(zmq.FD)  # type: ignore[assignment]
        self._kicked = False
        self._closed = False
        self._loop.add_reader(self._fd, self._ready)
        self.kick()  # the descriptor signals only once a read found nothing

    def _ready(self) -> None:
        self._kicked = False
        if not self._closed:  # a kick made before close() comes after it
            self._on_ready()

    def check(self) -> None:
        """After a send: a message that arrived meanwhile, whose signal the
        send took, is read in the next turn."""
        if self._socket.getsockopt(EVENTS) & POLLIN:  # type: ignore[operator]
            self.kick()

    def kick(self) -> None:
        if not self._kicked:
            self._kicked = True
            self._loop.call_soon(self._ready)

    def close(self) -> None:
        self._closed = True
        self._loop.remove_reader(self._fd)
