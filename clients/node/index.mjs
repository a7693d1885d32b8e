// asyncq client for Node.js as an ES module: the CommonJS module's exports
// (index.js), named and as the default export.
import asyncq from './index.js';

export const {
  Queue,
  LifoQueue,
  PriorityQueue,
  Item,
  BrokerError,
  BrokerUnreachable,
  KeyRefused,
  KeyMismatch,
  KeysRequired,
  KeyRequired,
  QueueEmpty,
  QueueShutDown,
  NotLeader,
  TimeoutError,
  ShardConflict,
  endpoints,
  version,
} = asyncq;
export default asyncq;
