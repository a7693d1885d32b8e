'use strict';
// asyncq client for Node.js: asyncio.Queue's producer/consumer pattern over
// an asyncq broker (the wire protocol is docs/PROTOCOL.md). CommonJS; the
// ES module (index.mjs) exports the same.
const { Queue, LifoQueue, PriorityQueue } = require('./queue');
const { Item } = require('./consumer');
const {
  BrokerError, BrokerUnreachable, KeyRefused, KeyMismatch, KeysRequired, QueueEmpty, QueueShutDown, NotLeader, TimeoutError, ShardConflict,
  endpoints,
} = require('./protocol');
const { version } = require('./package.json');

module.exports = {
  Queue,
  LifoQueue,
  PriorityQueue,
  Item,
  BrokerError,
  BrokerUnreachable,
  KeyRefused,
  KeyMismatch,
  KeysRequired,
  KeyRequired: KeysRequired, // deprecated: the name before 2.1.0
  QueueEmpty,
  QueueShutDown,
  NotLeader,
  TimeoutError,
  ShardConflict,
  endpoints,
  version,
};
