'use strict';
// asyncq client for Node.js: asyncio.Queue's producer/consumer pattern over
// an asyncq broker (the wire protocol is docs/PROTOCOL.md).
const { Queue } = require('./queue');
const { Item } = require('./consumer');
const {
  BrokerError, BrokerUnreachable, KeyRefused, KeyMismatch, KeyRequired, QueueEmpty, TimeoutError, endpoints,
} = require('./protocol');

module.exports = {
  Queue, Item, BrokerError, BrokerUnreachable, KeyRefused, KeyMismatch, KeyRequired, QueueEmpty, TimeoutError,
  endpoints,
};
