"""asyncq client: asyncio.Queue's producer/consumer pattern over an asyncq
broker (the wire protocol is docs/PROTOCOL.md). Needs pyzmq (Debian:
python3-zmq)."""
from .blocking import BlockingQueue
from .protocol import BrokerError, BrokerUnreachable, QueueShutDown, endpoints
from .queue import Item, Joined, Queue, QueueEmpty

__all__ = ["Queue", "BlockingQueue", "Item", "Joined", "BrokerError", "BrokerUnreachable",
           "QueueEmpty", "QueueShutDown", "endpoints"]
