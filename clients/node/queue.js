'use strict';
// asyncq.Queue: asyncio.Queue's API over an asyncq broker, promise-based.
const crypto = require('crypto');
const zmq = require('zeromq');
const { Session } = require('./session');
const { endpoints, message, checkName, BrokerError, QueueEmpty, TimeoutError } = require('./protocol');

class Queue {
  // new Queue('localhost:5557', { queue: 'default', credit: 1, name: 'node', timeout: 5000 })
  constructor(broker = 'localhost', options = {}) {
    this.broker = broker;
    this.queue = checkName(options.queue || 'default');
    this.credit = options.credit || 1;
    this.timeout = options.timeout || 5000;
    [this.pushEndpoint, this.routerEndpoint] = endpoints(broker);
    this.clientId = `${checkName(options.name || 'node', 'client')}-${crypto.randomBytes(6).toString('hex')}`;
    this.tags = 0;
    this.closed = false;
    // Producer (and joiner) side.
    this.control = null;
    this.push = null;
    this.seq = 0; // last seq sent
    this.confirmed = 0; // every seq up to this one is confirmed
    this.unconfirmed = new Map(); // seq -> PUT frames
    this.refused = new Map(); // seq -> BrokerError
    this.syncing = null;
    // Consumer side.
    this.consumer = null;
    this.delivered = []; // items not yet got
    this.getters = []; // resolve functions of get() calls waiting
    this.held = new Map(); // id -> item got, not taskDone
    this.errors = []; // ERRORs about acks, for inspection
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

  producer() {
    return this.opening('controlOpening', async () => {
      const session = new Session(this.routerEndpoint, this.clientId, () => this.confirmed + 1);
      session.onMessage = (command, fields) => this.onControlMessage(command, fields);
      session.onReconnect = () => this.resend();
      await session.open(this.timeout);
      this.push = new zmq.Push({ linger: 0 });
      this.push.connect(this.pushEndpoint);
      this.pushing = Promise.resolve();
      this.control = session;
      return session;
    });
  }

  // Puts item (Buffer or string) and resolves once the broker holds it.
  // options.lease: seconds each delivery may take. Waits while the queue is
  // full. Rejects with a QueueShutDown BrokerError if the queue was shut down.
  async put(item, options = {}) {
    const seq = await this.send(item, options);
    await this.confirm(seq);
    const error = this.refused.get(seq);
    if (error) {
      this.refused.delete(seq);
      throw error;
    }
  }

  // Sends item without waiting for the broker to confirm it; flush() waits.
  async send(item, options = {}) {
    const session = await this.producer();
    const payload = Buffer.isBuffer(item) ? item : Buffer.from(String(item));
    if (payload.length > session.maxItem) {
      throw new RangeError(`item of ${payload.length} bytes is larger than the broker's limit of ${session.maxItem}`);
    }
    const leaseMs = options.lease === undefined ? 0 : Math.max(1, Math.round(options.lease * 1000));
    this.seq += 1;
    const frames = message('PUT', this.queue, this.clientId, this.seq, leaseMs, payload);
    this.unconfirmed.set(this.seq, frames);
    await this.sendPut(frames);
    return this.seq;
  }

  sendPut(frames) {
    this.pushing = this.pushing.then(() => this.push.send(frames));
    return this.pushing;
  }

  // Resolves once the broker has confirmed every put sent.
  flush() {
    return this.confirm(this.seq);
  }

  async confirm(seq) {
    while (this.confirmed < seq) {
      if (!this.syncing) this.syncing = this.sync(this.seq).finally(() => { this.syncing = null; });
      await this.syncing;
    }
  }

  async sync(seq) {
    const tag = `sync-${seq}`;
    for (;;) {
      try {
        await this.control.request(tag, () => message('SYNC', tag, this.clientId, seq));
        break;
      } catch (error) {
        if (!(error instanceof BrokerError) || error.code !== 410) throw error;
        await this.resend(); // puts were lost on the way (4.1)
      }
    }
    this.confirmed = Math.max(this.confirmed, seq);
    for (const s of this.unconfirmed.keys()) {
      if (s > seq) break;
      this.unconfirmed.delete(s);
    }
  }

  async resend() {
    for (const frames of this.unconfirmed.values()) await this.sendPut(frames);
  }

  onControlMessage(command, fields) {
    if (command !== 'ERROR') return;
    const error = BrokerError.fromFields(fields);
    if (/^\d+$/.test(error.subject)) this.refused.set(Number(error.subject), error);
    else this.errors.push(error);
  }

  consumerSession() {
    return this.opening('consumerOpening', async () => {
      const session = new Session(this.routerEndpoint, `${this.clientId}-get`);
      session.onMessage = (command, fields) => this.onConsumerMessage(command, fields);
      session.onReconnect = () => this.announceCredit();
      await session.open(this.timeout);
      this.consumer = session;
      await this.announceCredit();
      return session;
    });
  }

  announceCredit() {
    // After a reconnect, items not yet got are the broker's to deliver again.
    this.delivered = this.delivered.filter((item) => item instanceof BrokerError);
    return this.consumer.send(message('CREDIT', this.queue, this.credit));
  }

  onConsumerMessage(command, fields) {
    if (command === 'ITEM' && fields.length === 6) {
      const [queue, id, attempt, , leaseMs, data] = fields;
      this.deliver({
        queue: queue.toString(), id: id.toString(), attempt: Number(attempt.toString()),
        leaseMs: Number(leaseMs.toString()), data, toString() { return data.toString(); },
      });
    } else if (command === 'ERROR') {
      const error = BrokerError.fromFields(fields);
      if (error.code === 503 && error.subject === this.queue) this.deliver(error);
      else this.errors.push(error);
    }
  }

  deliver(item) {
    const getter = this.getters.shift();
    if (getter) getter(item);
    else this.delivered.push(item);
  }

  // An item already delivered to this client (its credit lets the broker
  // send ahead), else throws QueueEmpty. Delivery starts with the first get().
  getNowait() {
    if (!this.consumer || !this.delivered.length) throw new QueueEmpty('no item delivered to this client');
    const item = this.delivered[0];
    if (item instanceof BrokerError) throw item;
    this.delivered.shift();
    this.held.set(item.id, item);
    return item;
  }

  // Resolves with the next item: { data: Buffer, id, attempt, queue,
  // leaseMs }. options.signal (an AbortSignal) cancels the wait; an item
  // that arrives later is kept for the next get(). Rejects with a
  // QueueShutDown BrokerError once the queue is shut down and empty.
  async get(options = {}) {
    await this.consumerSession();
    const item = this.delivered.length
      ? this.delivered.shift()
      : await new Promise((resolve, reject) => {
        const getter = (value) => {
          if (options.signal) options.signal.removeEventListener('abort', abort);
          resolve(value);
        };
        const abort = () => {
          this.getters = this.getters.filter((g) => g !== getter);
          reject(options.signal.reason || new Error('aborted'));
        };
        if (options.signal) {
          if (options.signal.aborted) return abort();
          options.signal.addEventListener('abort', abort, { once: true });
        }
        this.getters.push(getter);
      });
    if (item instanceof BrokerError) {
      this.delivered.unshift(item);
      throw item;
    }
    this.held.set(item.id, item);
    return item;
  }

  // Acks an item got from get(): the given one (or its id), or the oldest
  // held. Throws if this client holds no such item.
  taskDone(item) {
    let id;
    if (item === undefined) {
      if (!this.held.size) throw new Error('taskDone() called too many times');
      id = this.held.keys().next().value;
    } else {
      id = typeof item === 'object' ? item.id : String(item);
      if (!this.held.has(id)) throw new Error(`taskDone(): no item ${id} is held by this client`);
    }
    this.held.delete(id);
    this.consumer.send(message('ACK', id));
  }

  // Gives a held item back, to be delivered again after delay seconds.
  async nack(item, delay = 0, reason = '') {
    if (!this.held.delete(item.id)) throw new Error(`nack(): no item ${item.id} is held by this client`);
    await this.consumer.send(message('NACK', Math.round(delay * 1000), reason, item.id));
  }

  // Resolves with { count, dead } once every item accepted on the queue
  // before the join (this client's puts included) is acked or dead-lettered;
  // with all: true, once nothing at all is outstanding. options.timeout in
  // seconds: rejects with TimeoutError when it passes.
  async join(options = {}) {
    const session = await this.producer();
    await this.flush();
    const deadline = options.timeout === undefined ? null : Date.now() + options.timeout * 1000;
    const tag = `join-${++this.tags}`;
    const build = () => {
      const ms = deadline === null ? 0 : Math.max(1, deadline - Date.now());
      return message('JOIN', tag, this.queue, ms, options.all ? 'all' : 'before');
    };
    const { command, fields } = await session.request(tag, build);
    if (command === 'TIMEOUT') throw new TimeoutError(`join timed out: ${fields[2]} items still outstanding`);
    return { count: Number(fields[2].toString()), dead: Number(fields[3].toString()) };
  }

  // The queue's numbers (PROTOCOL.md 4.8) as an object.
  async stats() {
    const session = await this.producer();
    const tag = `stats-${++this.tags}`;
    const { fields } = await session.request(tag, () => message('STATS', tag, this.queue));
    const stats = {};
    if (fields.length > 1) {
      for (const pair of fields[1].toString().split(' ')) {
        const [key, value] = pair.split('=');
        stats[key] = /^\d+$/.test(value) ? Number(value) : value;
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
      if (this.control && this.seq > this.confirmed) {
        if (options.timeout === undefined) {
          await this.flush();
        } else {
          let timer;
          await Promise.race([this.flush(), new Promise((_, reject) => {
            timer = setTimeout(() => reject(new TimeoutError('puts not confirmed in time')), options.timeout * 1000);
          })]).finally(() => clearTimeout(timer));
        }
      }
    } finally {
      this.closed = true;
      for (const session of [this.consumer, this.control]) if (session) await session.close();
      if (this.push) this.push.close();
    }
  }
}

module.exports = { Queue };
