'use strict';
// asyncq.Queue: asyncio.Queue's API over an asyncq broker, promise-based.
// Every time (timeout, lease, delay) is in seconds.
const crypto = require('crypto');
const dns = require('dns');
const net = require('net');
const { EventEmitter } = require('events');
const { Producer } = require('./producer');
const { Consumer } = require('./consumer');
const { Frame, tracked, heldHere } = require('./context');
const { curveOptions } = require('./curve');
const {
  parseAddress, message, checkName, parseDeadLetter, parsePeeked, parseStats, BrokerUnreachable, QueueEmpty, TimeoutError, WAIT_MAX_MS,
  LEASE_MAX_MS,
} = require('./protocol');

const ERRORS_KEPT = 100;
const DEFAULT_TIMEOUT = 5; // seconds to wait for WELCOME

// Rejects with TimeoutError(text) if promise takes longer than seconds.
function withTimeout(promise, seconds, text) {
  if (seconds === undefined) return promise;
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(text)), seconds * 1000);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

// The bytes of an item to put: a Buffer or Uint8Array as it is, a string as UTF-8.
function payloadOf(item, what) {
  if (Buffer.isBuffer(item)) return item;
  if (item instanceof Uint8Array) return Buffer.from(item.buffer, item.byteOffset, item.byteLength);
  if (typeof item === 'string') return Buffer.from(item);
  const kind = item === null ? 'null' : typeof item === 'object' ? (item.constructor && item.constructor.name) || 'object' : typeof item;
  throw new TypeError(`${what}(): an item is a Buffer, a Uint8Array or a string, not ${kind}`
    + ' (serialize it first, e.g. JSON.stringify)');
}

function leaseMsOf(options) {
  if (options.lease === undefined) return 0; // the queue's
  const ms = Math.max(1, Math.round(options.lease * 1000));
  if (!(ms <= LEASE_MAX_MS)) throw new RangeError(`lease is at most ${LEASE_MAX_MS / 1000} seconds`);
  return ms;
}

const PRIORITY_MIN = -2147483648;
const PRIORITY_MAX = 2147483647;

// Milliseconds for seconds, rounded up: "not before" (a float's error, as
// 1.1 * 1000 = 1100.0000000000002, under a microsecond, is no part of a
// millisecond).
function msUp(seconds) {
  const ms = seconds * 1000;
  const whole = Math.round(ms);
  return Math.abs(ms - whole) < 1e-3 ? whole : Math.ceil(ms);
}

// A put's options frame (PROTOCOL.md 4.1) for options.priority, .delay
// (seconds) and .at (a Date, or seconds since the epoch), and front (a
// LifoQueue's puts): '' when there are none, so that no frame is sent.
// Throws a TypeError or a RangeError for a value not valid, before anything
// is sent.
function putOptionsOf(options, front) {
  const { priority, delay, at } = options;
  if (priority === undefined && delay === undefined && at === undefined) return front ? 'front' : '';
  const parts = [];
  if (priority !== undefined) {
    if (typeof priority !== 'number') throw new TypeError(`priority is a number, not ${typeof priority}`);
    if (!(Number.isInteger(priority) && priority >= PRIORITY_MIN && priority <= PRIORITY_MAX)) {
      throw new RangeError(`priority is an integer from ${PRIORITY_MIN} to ${PRIORITY_MAX}, not ${priority}`);
    }
    if (priority !== 0) parts.push(`priority=${priority}`);
  }
  if (delay !== undefined && at !== undefined) {
    throw new TypeError('give delay (seconds from now) or at (a time), not both');
  }
  if (delay !== undefined) {
    if (typeof delay !== 'number') throw new TypeError(`delay is a number of seconds, not ${typeof delay}`);
    if (!(delay >= 0 && Number.isFinite(delay))) throw new RangeError(`delay is in seconds, 0 or more, not ${delay}`);
    let ms = msUp(delay);
    if (ms === 0 && delay > 0) ms = 1;
    if (ms > Number.MAX_SAFE_INTEGER) throw new RangeError(`delay of ${delay} seconds is too long`);
    if (ms !== 0) {
      if (front) throw new RangeError('a LifoQueue put goes to the front at once: it takes no delay');
      parts.push(`delay-ms=${ms}`);
    }
  }
  if (at !== undefined) {
    let ms;
    if (at instanceof Date) ms = at.getTime();
    else if (typeof at === 'number') ms = msUp(at);
    else throw new TypeError(`at is a Date or seconds since the epoch, not ${at === null ? 'null' : typeof at}`);
    if (!Number.isFinite(ms)) throw new RangeError(`at is not a valid time: ${at}`);
    ms = Math.max(0, ms); // before 1970: past, at once
    if (ms > Number.MAX_SAFE_INTEGER) throw new RangeError(`at ${at} is too far ahead`);
    if (front) throw new RangeError('a LifoQueue put goes to the front at once: it takes no at');
    parts.push(`at-ms=${ms}`);
  }
  if (front) parts.push('front');
  return parts.join(' ');
}

// Items the broker may send ahead of the get() calls: options.prefetch, or
// the deprecated options.credit less one.
function prefetchOf(options) {
  const check = (value, name, least) => {
    if (!(Number.isInteger(value) && value >= least)) throw new RangeError(`${name} is a whole number, at least ${least}`);
    return value;
  };
  if (options.prefetch !== undefined) return check(options.prefetch, 'prefetch', 0);
  if (options.credit !== undefined) return check(options.credit, 'credit', 1) - 1;
  return 0;
}

// Whether deliveries carry their priority: options.priorities, a boolean.
function prioritiesOf(options) {
  const { priorities } = options;
  if (priorities !== undefined && typeof priorities !== 'boolean') {
    throw new TypeError(`priorities is true or false, not ${priorities === null ? 'null' : typeof priorities}`);
  }
  return Boolean(priorities);
}

function timeoutOf(options) {
  if (options.timeout === undefined) return DEFAULT_TIMEOUT;
  const { timeout } = options;
  if (!(typeof timeout === 'number' && timeout > 0 && timeout <= WAIT_MAX_MS / 1000)) {
    throw new RangeError(`timeout is in seconds, more than 0 and at most ${WAIT_MAX_MS / 1000}`);
  }
  if (timeout >= 1000) {
    process.emitWarning(`asyncq: timeout ${timeout} is in seconds (it was milliseconds before 2.1.0)`);
  }
  return timeout;
}

// Emits 'held' (the queue's name) when the broker holds this client's puts
// back because the queue is full (the broker's --maxsize).
class Queue extends EventEmitter {
  // new Queue('localhost:5557', { queue: 'default', prefetch: 0, name: 'node',
  // timeout: 5, curveSecret: 'client.key_secret', serverKey: 'broker.key',
  // priorities: false })
  // priorities: true: every item got carries its put's priority (item.priority;
  // broker 2.2, which PriorityQueue needs too); else item.priority is null.
  constructor(broker = 'localhost', options = {}) {
    super();
    this.broker = broker;
    this.target = parseAddress(broker); // its parts and ZeroMQ endpoints
    this.queue = checkName(options.queue || 'default');
    this.prefetch = prefetchOf(options);
    this.priorities = prioritiesOf(options);
    this.timeout = timeoutOf(options);
    // NAME-RANDOMHEX, and NAME-RANDOMHEX-get for the consumer: 64 bytes at most.
    const name = checkName(options.name || 'node', 'client').slice(0, 64 - '-0123456789ab-get'.length);
    this.clientId = `${name}-${crypto.randomBytes(6).toString('hex')}`;
    this.curve = curveOptions(options);
    this.closed = false;
    this.producer = null; // puts, joins, stats and shutdown
    this.consumer = null;
    this.reached = false; // a session of this client has been welcomed: the broker exists
    this.sessionsOpening = new Set(); // ended by close()
    this.getsOpening = 0; // get() calls waiting for the consumer's session to open
    this.lastSend = Promise.resolve(); // flush() covers every send() made before it
    this.errors = []; // the latest ERRORs about no request (acks of items not held...), for inspection
  }

  // Whether every put goes to the front of its priority (LifoQueue).
  get front() {
    return false;
  }

  // Deprecated: the credit a single get() gives, prefetch + 1.
  get credit() {
    return this.prefetch + 1;
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

  // A host name that does not resolve is said at once, with the cause.
  async resolveHost() {
    const { host } = this.target;
    if (host === undefined || net.isIP(host) || this.resolved) return;
    try {
      await dns.promises.lookup(host);
      this.resolved = true;
    } catch (error) {
      throw new BrokerUnreachable(`cannot resolve '${host}', the host of the broker address '${this.broker}': `
        + `${error.code || error.message}`, { address: this.broker, cause: error });
    }
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

  // Opens side's session. Once this client has reached the broker, a
  // session opening while the broker restarts waits for it to come back
  // (a get() started just before the restart gets its item after it), as
  // one already open does; close() ends it.
  async openSide(side) {
    const { session } = side;
    session.reached = () => this.reached;
    this.sessionsOpening.add(session);
    try {
      await side.open(this.timeout * 1000);
    } finally {
      this.sessionsOpening.delete(session);
    }
    this.reached = true;
  }

  control() {
    return this.opening('controlOpening', async () => {
      await this.resolveHost();
      const producer = new Producer(this.target, this.clientId, { curve: this.curve });
      producer.onHeld = (queue) => this.emit('held', queue);
      producer.onError = (error) => this.recordError(error);
      await this.openSide(producer);
      this.producer = producer;
      return producer;
    });
  }

  // Puts item (a Buffer or Uint8Array, or a string) and resolves once the
  // broker has confirmed it (SYNCED). options.lease: seconds each delivery
  // may take; options.priority: an integer, lowest delivered first (default
  // 0); options.delay: seconds before it may be delivered, or options.at: a
  // Date (or seconds since the epoch) before which it is not. Waits while
  // the queue is full. Rejects with QueueShutDown if the queue was shut
  // down, with a BrokerError if the broker refused it, with a TypeError or a
  // RangeError for options not valid (nothing sent).
  async put(item, options = {}) {
    const seq = await this.send(item, options, 'put');
    await this.producer.confirmPut(seq);
  }

  // Sends item without waiting for the broker to confirm it; flush() waits.
  // The sends of one tick go out together, in PUTS batches.
  send(item, options = {}, what = 'send') {
    let payload;
    try {
      payload = payloadOf(item, what);
    } catch (error) {
      return Promise.reject(error);
    }
    const sent = (async () => {
      const leaseMs = leaseMsOf(options);
      const putOptions = putOptionsOf(options, this.front);
      const producer = this.producer && !this.closed ? this.producer : await this.control();
      return producer.send(this.queue, payload, leaseMs, putOptions);
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

  // The options of this client's Consumer (consumer.js).
  consumerOptions() {
    return {
      prefetch: this.prefetch, curve: this.curve, opening: () => this.getsOpening, priorities: this.priorities,
    };
  }

  consumerSession() {
    return this.opening('consumerOpening', async () => {
      await this.resolveHost();
      const consumer = new Consumer(this.target, `${this.clientId}-get`, this.queue, this.consumerOptions());
      consumer.onError = (error) => this.recordError(error);
      await this.openSide(consumer);
      this.consumer = consumer;
      return consumer;
    });
  }

  // An item already delivered to this client (prefetch lets the broker
  // send ahead), else throws QueueEmpty (QueueShutDown once the queue is
  // shut down and empty). Delivery starts with the first get(). A bare
  // taskDone() does not ack it: give it, taskDone(item).
  getNowait() {
    if (!this.consumer) throw new QueueEmpty('no item delivered to this client');
    return this.consumer.getNowait();
  }

  // Resolves with the next item: { data: Buffer, id, attempt, queue,
  // leaseMs, ageUs, priority (the put's with priorities: true, else null) }.
  // options.signal (an AbortSignal) cancels the wait; an item that arrives
  // later is kept for the next get(). Rejects with
  // QueueShutDown once the queue is shut down and empty, or deleted, every
  // get() waiting then included, and every later one while that lasts: a
  // get() made after it asks the broker again (one round trip), and waits
  // for items as usual once the queue is reopened (by any client) or, after
  // a delete, made anew by a put. The item counts as got by the async
  // context that awaits this promise (for a bare taskDone()).
  get(options = {}) {
    const frame = new Frame(this);
    const { promise, resolve, reject } = tracked(frame);
    this.getsOpening += 1;
    let opening = true;
    const opened = () => {
      if (opening) this.getsOpening -= 1;
      opening = false;
    };
    this.consumerSession().then((consumer) => {
      opened();
      return consumer.get(options.signal, frame);
    }).then(resolve, (error) => {
      opened();
      frame.done();
      reject(error);
    });
    return promise;
  }

  // Acks an item got from get(), given as the item (or its id). Without
  // one, acks the item that the calling async context got from get() (the
  // context that awaited it, and the code it goes on to), and throws if that
  // context holds none, or more than one: it never acks another context's.
  taskDone(item) {
    const consumer = this.consumer;
    if (item !== undefined) {
      if (!consumer) throw new Error(`taskDone(): no item ${typeof item === 'object' ? item.id : item} is held by this client`);
      consumer.taskDone(item);
      return;
    }
    const held = consumer ? consumer.held() : 0;
    if (!held) throw new Error('taskDone() called too many times: this client holds no item');
    const here = heldHere(this);
    if (here.length === 1) {
      consumer.taskDone(here[0].item);
      return;
    }
    if (here.length) {
      throw new Error(`taskDone(): this async context holds ${here.length} items from get(): `
        + 'say which, taskDone(item)');
    }
    throw new Error(`taskDone(): this async context got no item from get() that it still holds (this client holds ${held}, `
      + 'got in other async contexts or by getNowait()): say which, taskDone(item)');
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
    const { command, fields } = await this.requestSession(producer).request('join', build);
    if (command === 'TIMEOUT') throw new TimeoutError(`join timed out: ${fields[2]} items still outstanding`);
    return { count: Number(fields[2].toString()), dead: Number(fields[3].toString()) };
  }

  // The session for a JOIN, STATS or SHUTDOWN: the consumer's when this
  // client consumes, after its acks made so far (two connections keep no
  // order between them: a join on the producer's could overtake them),
  // else the producer's.
  requestSession(producer) {
    const consumer = this.consumer;
    if (!consumer || this.closed || !consumer.session.welcome) return producer.session;
    consumer.flushAcks();
    return consumer.session;
  }

  // The queue's numbers (PROTOCOL.md 4.8) as an object; {} if the broker
  // does not know the queue.
  async stats() {
    const producer = await this.control();
    const { fields } = await this.requestSession(producer).request('stats', (tag) => message('STATS', tag, this.queue));
    return fields.length > 1 ? parseStats(fields[1].toString()) : {};
  }

  // Items waiting for delivery at the broker (asyncio's qsize()): not those
  // delivered and not yet acked, nor delayed ones. A moment's number, asked
  // of the broker.
  async qsize() {
    return (await this.stats()).queued || 0;
  }

  // Whether no item waits for delivery (qsize() is 0), asked of the broker.
  async empty() {
    return (await this.qsize()) === 0;
  }

  // Shuts the queue down (PROTOCOL.md 4.11, asyncio's Queue.shutdown): puts
  // are refused from now on; get() rejects with QueueShutDown once the queue
  // is empty. options.immediate: queued items are discarded, and joins
  // rejected. reopen() undoes it. Needs the admin role on a broker with
  // keys. Resolves with the queue's numbers after it (the broker's report).
  async shutdown(options = {}) {
    const producer = await this.control();
    const mode = options.immediate ? 'immediate' : 'drain';
    const { fields } = await this.requestSession(producer).request('shutdown', (tag) => message('SHUTDOWN', tag, this.queue, mode));
    return fields.length > 1 ? parseStats(fields[1].toString()) : {};
  }

  // REOPEN, PURGE or DELETE (PROTOCOL.md 4.13), on the session stats()
  // uses: resolves with the REPORT's lines (Buffers), none when the broker
  // does not have the queue.
  async lifecycle(command) {
    const producer = await this.control();
    const { fields } = await this.requestSession(producer).request(command.toLowerCase(), (tag) => message(command, tag, this.queue));
    return fields.slice(1);
  }

  // Opens the queue again after shutdown(), for every client: puts are
  // taken again, and consumers' get() calls wait for items instead of
  // rejecting with QueueShutDown. This client's next get() consumes again
  // at once; another client's once it asks the broker again (each get()
  // after a QueueShutDown does), or at once if the broker still had credit
  // of it. An open queue is left as it is. A queue the broker does not have
  // (never used, deleted, or forgotten once idle) is not made: nothing
  // happens, and no error. Needs the admin role on a broker with keys (else
  // a 403 BrokerError); rejects with QueueShutDown (503) while the broker is
  // stopping (a signal), with a 400 BrokerError from a broker before 2.2.
  async reopen() {
    const lines = await this.lifecycle('REOPEN');
    if (lines.length && this.consumer) this.consumer.resume(); // the notice is out of date: CREDIT again
  }

  // Discards the queue's queued and delayed items (counted in its
  // discarded); items being processed stay with their consumers, and the
  // queue stays open. Waiting joins count the discarded items as done.
  // Resolves with how many were discarded (0 for a queue the broker does
  // not have). Needs the admin role on a broker with keys.
  async purge() {
    return countOf(await this.lifecycle('PURGE'), 'purged', 0);
  }

  // Deletes the queue: every item it holds (queued, delayed, being
  // processed: their taskDone() is then answered 404, and dead) is
  // discarded; waiting joins and puts held for room reject with
  // QueueShutDown, and so does every get() waiting, of every client, as
  // after a shutdown. The broker then forgets the queue: a later put (or a
  // get() of a client that was not told) makes a new, empty, open one,
  // which a client told of the delete consumes from again on its next
  // get(). Resolves with how many items were discarded (0 for a queue the
  // broker does not have, and nothing happens). Needs the admin role on a
  // broker with keys.
  async delete() {
    return countOf(await this.lifecycle('DELETE'), 'deleted', 0);
  }

  // DEAD (PROTOCOL.md 4.12) with action, on the session stats() uses:
  // resolves with the REPORT's lines (Buffers).
  async dead(action) {
    const producer = await this.control();
    const { fields } = await this.requestSession(producer).request('dead', (tag) => message('DEAD', tag, this.queue, action));
    return fields.slice(1);
  }

  // The queue's dead letters (PROTOCOL.md 4.12), oldest death first (the
  // first 1024): [{ id, attempts, size, died, cause, reason, reasonCut,
  // payload, payloadCut }]. Needs the admin role on a broker with keys.
  async deadLetters() {
    return (await this.dead('list')).map(parseDeadLetter);
  }

  // One dead item whole (PROTOCOL.md 4.12, DEAD show), given as a dead
  // letter or its id (decimal digits, or a bigint): as deadLetters() shows
  // it, but with its whole payload (payloadCut false), however large: the
  // broker sends at most 785 664 bytes an answer, so a larger one is asked
  // again from where the last answer stopped. Rejects with a 404
  // BrokerError if it is not a dead item of this queue, with a TypeError or
  // a RangeError (nothing sent) for another item. Needs the admin role on a
  // broker with keys; broker 2.2.
  async deadLetter(item) {
    const id = deadId(item, 'deadLetter');
    const parts = [];
    let got = 0;
    let letter = null;
    for (;;) {
      const lines = await this.dead(got ? `show ${id} ${got}` : `show ${id}`);
      if (!lines.length) throw new Error(`the broker's answer to DEAD show ${id} has no line`);
      if (!letter) letter = parseDeadLetter(lines[0]);
      const before = got;
      for (const line of lines.slice(1)) {
        const text = line.toString('latin1');
        if (!BASE64_LINE.test(text)) {
          throw new Error(`the broker's answer to DEAD show ${id} has a line not in base64: '${text.slice(0, 80)}'`);
        }
        const bytes = Buffer.from(text, 'base64');
        parts.push(bytes);
        got += bytes.length;
      }
      if (got >= letter.size || got === before) break; // whole, or nothing more comes
    }
    if (got !== letter.size) {
      throw new Error(`the broker's answer to DEAD show ${id} gave ${got} bytes of an item of ${letter.size}`);
    }
    return { ...letter, payload: Buffer.concat(parts, got), payloadCut: false };
  }

  // Moves dead items back to the end of the queue, their attempts reset;
  // resolves with how many. Without items, every dead item. With items (an
  // array of dead letters as deadLetters() gives, or their ids: strings of
  // decimal digits or bigints), those only, all or none (broker 2.2): if one
  // is not a dead item of this queue, it rejects with a 404 BrokerError
  // whose subject names every such id, and nothing changes; [] resolves
  // with 0, nothing sent. The ids go in one request of at most 1024 bytes
  // ('requeue ' and the ids, a space between them: about 50 ids of the
  // broker's 20-digit size); more reject with a RangeError, nothing sent:
  // pass them in parts, each all or none. An id named twice counts once.
  async requeueDead(items) {
    if (items === undefined) return countOf(await this.dead('requeue'), 'requeued');
    const action = deadAction('requeue', items, 'requeueDead');
    return action ? countOf(await this.dead(action), 'requeued') : 0;
  }

  // Deletes the given dead items (an array, as requeueDead(items) takes),
  // all or none, with the same 404 and RangeError; resolves with how many.
  // purgeDead() deletes them all.
  async deleteDead(items) {
    const action = deadAction('delete', items, 'deleteDead');
    return action ? countOf(await this.dead(action), 'deleted') : 0;
  }

  // Deletes every dead item; resolves with how many.
  async purgeDead() {
    return countOf(await this.dead('purge'), 'purged');
  }

  // The next n items (1 to 1024, default 10) the queue would deliver, in
  // that order, left where they are (PROTOCOL.md 4.14): [{ id, attempts,
  // size, priority, ageMs, payload (its first 64 bytes), payloadCut }].
  // Delayed items and those being processed are not shown; [] for a queue
  // the broker does not have. Needs the consume or admin role on a broker
  // with keys; broker 2.2.
  async peek(n = 10) {
    if (!Number.isInteger(n)) throw new TypeError(`peek(): n is an integer, not ${typeof n === 'number' ? n : typeof n}`);
    if (n < 1 || n > PEEK_MAX) throw new RangeError(`peek(): n is 1 to ${PEEK_MAX}, not ${n}`);
    const producer = await this.control();
    const { fields } = await this.requestSession(producer).request('peek', (tag) => message('PEEK', tag, this.queue, String(n)));
    return fields.slice(1).filter((line) => line.length).map(parsePeeked);
  }

  // Pauses the queue's deliveries, for every client (PROTOCOL.md 4.14):
  // puts are taken, nothing is delivered (get() waits), items being
  // processed stay with their consumers, joins wait, until resume(). A
  // queue the broker does not have is made (so that it can be paused
  // before its first put); a durable broker keeps the pause across
  // restarts. Resolves with the queue's numbers after it (paused: 1).
  // Needs the admin role on a broker with keys; broker 2.2.
  async pause() {
    return this.pauseCommand('PAUSE');
  }

  // Delivers again after pause(); resolves with the queue's numbers after
  // it (paused: 0). A queue not paused is left as it is.
  async resume() {
    return this.pauseCommand('RESUME');
  }

  async pauseCommand(command) {
    const producer = await this.control();
    const { fields } = await this.requestSession(producer).request(command.toLowerCase(), (tag) => message(command, tag, this.queue));
    return fields.length > 1 ? parseStats(fields[1].toString()) : {};
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
      for (const session of this.sessionsOpening) session.close(false); // an open waiting for the broker ends
      await Promise.allSettled([this.controlOpening, this.consumerOpening]); // no session opens after close
      if (this.consumer) await this.consumer.close();
      if (this.producer) await this.producer.close();
      // Last, so that a get() awaited right after close() has its handler.
      if (this.consumer) this.consumer.abandon();
    }
  }
}

// A Queue whose consumer asks for priorities (asyncio's PriorityQueue, as
// far as the broker orders: lowest priority first, first in, first out
// within one): every item get() resolves with carries its put's .priority.
// put(item, { priority }) as Queue's. Needs broker 2.2 (an older one
// refuses the CREDIT with a 400 BrokerError, which get() rejects with).
class PriorityQueue extends Queue {
  constructor(broker = 'localhost', options = {}) {
    super(broker, { ...options, priorities: true });
  }
}

// A Queue whose puts come out last in, first out (asyncio's LifoQueue):
// each goes to the front of its priority. A put with a delay (or at) is
// refused with a RangeError: the broker puts no delayed item at the front.
class LifoQueue extends Queue {
  get front() {
    return true;
  }
}

const PEEK_MAX = 1024; // items one PEEK shows
const DEAD_ACTION_MAX = 1024; // bytes of DEAD's action frame: 'requeue ID...' or 'delete ID...'
const ID_MAX = (1n << 64n) - 1n;
const BASE64_LINE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/; // RFC 4648, padded

// The id of a dead item given as a dead letter or its id (decimal digits,
// or a bigint), as decimal digits. Throws a TypeError or a RangeError.
function deadId(item, what) {
  const id = item !== null && typeof item === 'object' ? item.id : item;
  let value;
  if (typeof id === 'bigint') value = id;
  else if (typeof id === 'string' && /^\d{1,20}$/.test(id)) value = BigInt(id);
  else throw new TypeError(`${what}(): a dead item is a dead letter or its id (decimal digits, or a bigint), not ${JSON.stringify(String(id))}`);
  if (value < 0n || value > ID_MAX) throw new RangeError(`${what}(): not an item id: ${value}`);
  return value.toString();
}

// DEAD's action for requeue or delete of items (dead letters or ids), each
// once, in order; '' for none. Throws a TypeError or a RangeError (nothing
// sent) for an item that is not one, or more than fit in one frame: the
// broker takes them all or none, so they are not split.
function deadAction(verb, items, what) {
  if (!Array.isArray(items)) throw new TypeError(`${what}(): items is an array of dead letters or ids`);
  const ids = new Set();
  for (const item of items) ids.add(deadId(item, what));
  if (!ids.size) return '';
  const action = `${verb} ${[...ids].join(' ')}`;
  if (action.length > DEAD_ACTION_MAX) {
    throw new RangeError(`${what}(): ${ids.size} ids do not fit in one DEAD request (${action.length} bytes; the broker takes `
      + `at most ${DEAD_ACTION_MAX}: '${verb}', a space and the ids in decimal, a space between them, about 50 ids): `
      + 'nothing was sent; pass them in parts (each part is all or none)');
  }
  return action;
}

// The number key=N of a one-line REPORT; empty (if given) when it has no
// line (PURGE or DELETE of a queue the broker does not have).
function countOf(lines, key, empty) {
  if (!lines.length && empty !== undefined) return empty;
  const value = lines.length ? parseStats(lines[0].toString())[key] : undefined;
  if (typeof value !== 'number') throw new Error(`the broker's answer has no ${key}=N: '${lines.map(String).join(' ')}'`);
  return value;
}

module.exports = {
  Queue, LifoQueue, PriorityQueue, putOptionsOf,
};
