'use strict';
// asyncq client for Node.js: asyncio.Queue's producer/consumer pattern over
// an asyncq broker (the wire protocol is docs/PROTOCOL.md).
const { Queue } = require('./queue');
const { BrokerError, BrokerUnreachable, QueueEmpty, TimeoutError, endpoints } = require('./protocol');

module.exports = { Queue, BrokerError, BrokerUnreachable, QueueEmpty, TimeoutError, endpoints };
