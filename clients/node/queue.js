'use strict';
// asyncq.Queue: asyncio.Queue's API over an asyncq broker, promise-based.
const crypto = require('crypto');
const { EventEmitter } = require('events');
const { Producer } = require('./producer');
const { Consumer } = require('./consumer');
const { curveOptions } = require('./curve');
const {
  endpoints, message, checkName, QueueEmpty, TimeoutError, WAIT_MAX_MS, LEASE_MAX_MS,
} = require('./protocol');

const ERRORS_KEPT = 100;

// Rejects with TimeoutError(text) if promise takes longer than seconds.
function withTimeout(promise, seconds, text) {
  if (seconds === undefined) return promise;
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(text)), seconds * 1000);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

function payloadOf(item) {
  if (Buffer.isBuffer(item)) return item;
  if (item instanceof Uint8Array) return Buffer.from(item.buffer, item.byteOffset, item.byteLength);
  return Buffer.from(String(item));
}

function leaseMsOf(options) {
  if (options.lease === undefined) return 0; // the queue's
  const ms = Math.max(1, Math.round(options.lease * 1000));
  if (!(ms <= LEASE_MAX_MS)) throw new RangeError(`lease is at most ${LEASE_MAX_MS / 1000} seconds`);
  return ms;
}

// Emits 'held' (the queue's name) when the broker holds this client's puts
// back because the queue is full (the broker's --maxsize).
class Queue extends EventEmitter {
  // new Queue('localhost:5557', { queue: 'default', credit: 1, name: 'node',
  // timeout: 5000, curveSecret: 'client.key_secret', serverKey: 'broker.key' })
  constructor(broker = 'localhost', options = {}) {
    super();
    this.broker = broker;
    this.queue = checkName(options.queue || 'default');
    this.credit = options.credit || 1;
    this.timeout = options.timeout || 5000;
    [this.pushEndpoint, this.routerEndpoint] = endpoints(broker);
    // NAME-RANDOMHEX, and NAME-RANDOMHEX-get for the consumer: 64 bytes at most.
    const name = checkName(options.name || 'node', 'client').slice(0, 64 - '-0123456789ab-get'.length);
    this.clientId = `${name}-${crypto.randomBytes(6).toString('hex')}`;
    this.curve = curveOptions(options);
    this.closed = false;
    this.producer = null; // puts, joins and stats
    this.consumer = null;
    this.lastSend = Promise.resolve(); // flush() covers every send() made before it
    this.errors = []; // the latest ERRORs about no request (acks of items not held...), for inspection
  }

  // What this client may do (WELCOME's roles), once a session is open.
  get roles() {
    const side = this.producer || this.consumer;
    return side ? side.session.welcome.roles : null;
  }

  // What a confirmed put survives: 'memory', 'always', 'interval' or 'never' (PROTOCOL.md 6).
  get persistence() {
    const side = this.producer || this.consumer;
    return side ? side.session.welcome.persistence : null;
  }

  // The queue the broker holds this client's puts back for, until they are in.
  get held() {
    return this.producer ? this.producer.held : null;
  }

  recordError(error) {
    this.errors.push(error);
    if (this.errors.length > ERRORS_KEPT) this.errors.shift();
  }

  opening(key, open) {
    // One open at a time per side, shared by concurrent callers.
    if (this.closed) return Promise.reject(new Error('queue client is closed'));
    if (!this[key]) this[key] = open().catch((error) => {
      this[key] = null;
      throw error;
    });
    return this[key];
  }

  control() {
    return this.opening('controlOpening', async () => {
      const producer = new Producer(this.routerEndpoint, this.pushEndpoint, this.clientId, this.curve);
      producer.onHeld = (queue) => this.emit('held', queue);
      producer.onError = (error) => this.recordError(error);
      await producer.open(this.timeout);
      this.producer = producer;
      return producer;
    });
  }

  // Puts item (a Buffer or Uint8Array, or a string) and resolves once the
  // broker holds it. options.lease: seconds each delivery may take. Waits
  // while the queue is full. Rejects with a QueueShutDown BrokerError if the
  // queue was shut down.
  async put(item, options = {}) {
    const seq = await this.send(item, options);
    await this.producer.confirmPut(seq);
  }

  // Sends item without waiting for the broker to confirm it; flush() waits.
  // The sends of one tick go out together, in PUTS batches.
  send(item, options = {}) {
    const payload = payloadOf(item);
    const sent = (async () => {
      const leaseMs = leaseMsOf(options);
      const producer = await this.control();
      return producer.send(this.queue, payload, leaseMs);
    })();
    this.lastSend = sent.catch(() => {});
    return sent;
  }

  // Resolves once the broker has confirmed every put sent; rejects with a
  // BrokerError if it refused one that put() does not report.
  async flush() {
    await this.lastSend;
    if (this.producer) await this.producer.flush();
  }

  consumerSession() {
    return this.opening('consumerOpening', async () => {
      const consumer = new Consumer(this.routerEndpoint, `${this.clientId}-get`, this.queue, this.credit, this.curve);
      consumer.onError = (error) => this.recordError(error);
      await consumer.open(this.timeout);
      this.consumer = consumer;
      return consumer;
    });
  }

  // An item already delivered to this client (its credit lets the broker
  // send ahead), else throws QueueEmpty. Delivery starts with the first get().
  getNowait() {
    if (!this.consumer) throw new QueueEmpty('no item delivered to this client');
    return this.consumer.getNowait();
  }

  // Resolves with the next item: { data: Buffer, id, attempt, queue,
  // leaseMs, ageUs }. options.signal (an AbortSignal) cancels the wait; an
  // item that arrives later is kept for the next get(). Rejects with a
  // QueueShutDown BrokerError once the queue is shut down and empty.
  async get(options = {}) {
    const consumer = await this.consumerSession();
    return consumer.get(options.signal);
  }

  // Acks an item got from get(): the given one (or its id), or the oldest
  // held. Throws if this client holds no such item.
  taskDone(item) {
    if (!this.consumer) throw new Error('taskDone() called too many times');
    this.consumer.taskDone(item);
  }

  // Gives a held item a fresh lease, for work that takes longer than it.
  async touch(item) {
    if (!this.consumer) throw new Error('touch(): this client holds no item');
    await this.consumer.touch(item);
  }

  // Gives a held item back, to be delivered again after delay seconds.
  async nack(item, delay = 0, reason = '') {
    if (!this.consumer) throw new Error('nack(): this client holds no item');
    await this.consumer.nack(item, delay, reason);
  }

  // Resolves with { count, dead } once every item accepted on the queue
  // before the join (this client's puts included) is acked or dead-lettered;
  // with all: true, once nothing at all is outstanding. options.timeout in
  // seconds: rejects with TimeoutError when it passes.
  async join(options = {}) {
    if (options.timeout !== undefined && !(options.timeout * 1000 <= WAIT_MAX_MS)) {
      throw new RangeError(`join(): timeout is at most ${WAIT_MAX_MS / 1000} seconds`);
    }
    if (this.consumer) this.consumer.flushAcks(); // acks made before the join, out before it
    await this.lastSend;
    const producer = await this.control();
    await producer.confirm(producer.seq); // this client's puts are in first
    const deadline = options.timeout === undefined ? null : Date.now() + options.timeout * 1000;
    const build = (tag) => {
      const ms = deadline === null ? 0 : Math.max(1, deadline - Date.now());
      return message('JOIN', tag, this.queue, ms, options.all ? 'all' : 'before');
    };
    const { command, fields } = await producer.session.request('join', build);
    if (command === 'TIMEOUT') throw new TimeoutError(`join timed out: ${fields[2]} items still outstanding`);
    return { count: Number(fields[2].toString()), dead: Number(fields[3].toString()) };
  }

  // The queue's numbers (PROTOCOL.md 4.8) as an object; {} if the broker
  // does not know the queue.
  async stats() {
    const producer = await this.control();
    const { fields } = await producer.session.request('stats', (tag) => message('STATS', tag, this.queue));
    const stats = {};
    if (fields.length > 1) {
      for (const pair of fields[1].toString().split(' ')) {
        const [key, value] = pair.split('=');
        // A queue's name stays a string even when it is all digits ("42").
        stats[key] = key !== 'queue' && /^\d+$/.test(value) ? Number(value) : value;
      }
    }
    return stats;
  }

  // Items waiting for delivery (asyncio's qsize()), asked of the broker.
  async qsize() {
    return (await this.stats()).queued || 0;
  }

  // Waits for every put to be confirmed (at most options.timeout seconds,
  // then rejects with TimeoutError: those puts may be lost), then ends both
  // sessions: items delivered to this client and not acked go back to the queue.
  async close(options = {}) {
    if (this.closed) return;
    try {
      await withTimeout(this.flush(), options.timeout, 'puts not confirmed in time');
    } finally {
      this.closed = true;
      await Promise.allSettled([this.controlOpening, this.consumerOpening]); // no session opens after close
      if (this.consumer) await this.consumer.close();
      if (this.producer) await this.producer.close();
    }
  }
}

module.exports = { Queue };
