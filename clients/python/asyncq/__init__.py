"""asyncq client: asyncio.Queue's producer/consumer pattern over an asyncq
broker, or over a service of several (shards), each a broker alone or a
group of replicas; the wire protocol, asyncq/2, is docs/PROTOCOL.md. Needs
pyzmq (Debian: python3-zmq)."""
from .blocking import BlockingQueue
from .consumer import Item, QueueEmpty
from .protocol import (BrokerError, BrokerUnreachable, DeadLetter, KeyMismatch, KeyRefused,
                       KeysRequired, NotLeader, PeekedItem, QueueShutDown, ShardConflict,
                       endpoints, fnv1a32)
from .queue import Joined, LifoQueue, PriorityQueue, Queue

__version__ = "2.5.0"

__all__ = ["Queue", "LifoQueue", "PriorityQueue", "BlockingQueue", "Item", "Joined", "DeadLetter", "PeekedItem",
           "BrokerError", "BrokerUnreachable", "KeyMismatch", "KeyRefused", "KeysRequired",
           "NotLeader", "QueueEmpty", "QueueShutDown", "ShardConflict", "endpoints", "fnv1a32",
           "__version__"]
