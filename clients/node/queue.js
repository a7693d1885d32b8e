'use strict';
// asyncq.Queue: asyncio.Queue's API over an asyncq broker, promise-based.
// Every time (timeout, lease, delay) is in seconds.
const crypto = require('crypto');
const { EventEmitter } = require('events');
const { Consumer } = require('./consumer');
const { Service } = require('./service');
const { Frame, tracked, heldHere } = require('./context');
const { curveOptions } = require('./curve');
const {
  parseAddresses, message, checkName, parseDeadLetter, parsePeeked, parseStats, fnv1a32, shardOfId, QueueEmpty, TimeoutError,
  WAIT_MAX_MS, LEASE_MAX_MS,
} = require('./protocol');

const ERRORS_KEPT = 100;
const DEFAULT_TIMEOUT = 5; // seconds to wait for WELCOME
// How long past its time-out a join over several brokers waits for one
// that has not answered (its TIMEOUT is on its way) before naming it.
const JOIN_GRACE_MS = 250;

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

// The bytes of a put's key (options.key: a string, as UTF-8, a Buffer or a
// Uint8Array), or null for none. Not sent: it picks the shard (PROTOCOL.md 4.15).
function keyOf(options) {
  const { key } = options;
  if (key === undefined) return null;
  if (typeof key === 'string') return Buffer.from(key);
  if (Buffer.isBuffer(key)) return key;
  if (key instanceof Uint8Array) return Buffer.from(key.buffer, key.byteOffset, key.byteLength);
  throw new TypeError(`key is a string, a Buffer or a Uint8Array, not ${key === null ? 'null' : typeof key}`);
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

// A broker's address as the user sees it: a group's leader, once known
// (4.16), else the address it was found under.
function memberAddress(member) {
  const { leader } = member.replicas;
  return member.replicas.replicated && leader ? leader.address : member.label;
}

// Emits 'held' (the queue's name) when the broker holds this client's puts
// back because the queue is full (the broker's --maxsize), and
// 'unreachable' (a BrokerUnreachable) for an address given where no broker
// answered and that no broker of the service lists (the others are used).
//
// A service of several brokers (shards, PROTOCOL.md 4.15) is one queue:
// given one of its addresses (or several, comma-separated), the client finds
// them all; each tick's puts go to the next broker in turn (or, with a key,
// to the key's shard), get() takes from all, and join(), stats() and the
// other requests ask every broker.
class Queue extends EventEmitter {
  // new Queue('localhost:5557', { queue: 'default', prefetch: 0, name: 'node',
  // timeout: 5, curveSecret: 'client.key_secret', serverKey: 'broker.key',
  // priorities: false })
  // broker: an address, or several comma-separated ('a:5557,b:5557').
  // priorities: true: every item got carries its put's priority (item.priority;
  // broker 2.2, which PriorityQueue needs too); else item.priority is null.
  constructor(broker = 'localhost', options = {}) {
    super();
    this.broker = broker;
    this.seeds = parseAddresses(broker); // each address given, parsed
    this.queue = checkName(options.queue || 'default');
    this.prefetch = prefetchOf(options);
    this.priorities = prioritiesOf(options);
    this.timeout = timeoutOf(options);
    // NAME-RANDOMHEX, and NAME-RANDOMHEX-get for the consumer; with a
    // service of several brokers, .N (N: the broker's number, as found)
    // before -get for the second broker on: 64 bytes at most.
    const name = checkName(options.name || 'node', 'client').slice(0, 64 - '-0123456789ab.255-get'.length);
    this.clientId = `${name}-${crypto.randomBytes(6).toString('hex')}`;
    this.curve = curveOptions(options);
    this.closed = false;
    this.service = null; // the brokers, with a Producer each: puts, joins, stats and shutdown
    this.producer = null; // the Producer of the first broker that answered
    this.consumer = null;
    this.consumerStarting = null; // the Consumer while it opens
    this.reached = false; // a session of this client has been welcomed: the broker exists
    this.unreachable = []; // BrokerUnreachable for each address given where no broker is
    // The next broker in turn for puts without a key; a short-lived client
    // starts anywhere, so that many of them spread too.
    this.turn = Math.floor(Math.random() * 256);
    this.tickMember = null; // the broker the open batch of puts without a key goes to
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
    return this.producer ? this.producer.session.welcome.roles : null;
  }

  // What a confirmed put survives: 'memory', 'always', 'interval', 'never', or
  // 'replicated' for a group of replicas (PROTOCOL.md 6).
  get persistence() {
    return this.producer ? this.producer.session.welcome.persistence : null;
  }

  // The queue a broker holds this client's puts back for, until they are in.
  get held() {
    const held = this.service ? this.service.producers().find((producer) => producer.held) : null;
    return held ? held.held : null;
  }

  // The brokers of the service as this client knows them, once it has
  // found them: [{ address, shard (null until it answers), up }], in the
  // order found; [] before. A group of replicas (4.16) is one, at its leader.
  get brokers() {
    if (!this.service || !this.service.opened) return [];
    return this.service.active().map((member) => ({
      address: memberAddress(member), shard: member.shard, up: member.up,
    }));
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

  // Finds the service (PROTOCOL.md 4.15) and opens a session with each of
  // its brokers; resolves with the first one's Producer. A host name that
  // does not resolve, or nothing listening, is said at once. Once this
  // client has reached a broker, a session opening while it restarts waits
  // for it (a get() started just before the restart gets its item after
  // it), as one already open does; close() ends it.
  control() {
    return this.opening('controlOpening', async () => {
      const service = new Service(this.broker, this.seeds, {
        clientId: this.clientId,
        curve: this.curve,
        timeoutMs: this.timeout * 1000,
        onHeld: (queue) => this.emit('held', queue),
        onError: (error) => this.recordError(error),
        onUnreachable: (error) => {
          this.unreachable.push(error);
          this.emit('unreachable', error);
        },
      });
      this.service = service;
      try {
        await service.open();
      } catch (error) {
        if (this.service === service) this.service = null;
        throw error;
      }
      this.reached = true;
      this.producer = service.primary.producer;
      return this.producer;
    });
  }

  // The broker for a put: with a key, its shard's (fnv1a32(key) mod the
  // number of shards), waited for if it has not answered yet, so that the
  // puts of one key keep their order; without, the broker whose batch
  // (this tick's puts, PROTOCOL.md 4.1) is still open, else the next in
  // turn that is up and not holding this client's puts (HELD). Given at
  // once (no await) when it can, so that puts keep their order.
  memberFor(key) {
    const service = this.service;
    if (key !== null) {
      const shard = fnv1a32(key) % service.shardCount;
      const member = service.memberForKey(shard);
      if (!member) return Promise.reject(new Error(`no broker of this service is shard ${shard}, the shard of this key`));
      if (member.state === 'up' && !member.keyWaiting) return member;
      member.keyWaiting = (member.keyWaiting || 0) + 1; // until sendPut() has given it its put
      return member.whenUp();
    }
    const tick = this.tickMember;
    if (tick && tick.state === 'up' && tick.producer.batch !== null) return tick;
    const members = service.active().filter((member) => member.state === 'up');
    if (members.length === 1) return members[0];
    const inTurn = (ok) => {
      for (let i = 0; i < members.length; i++) {
        const member = members[(this.turn + i) % members.length];
        if (ok(member)) {
          this.turn = (this.turn + i + 1) % members.length;
          return member;
        }
      }
      return null;
    };
    const member = inTurn((m) => m.up && !m.producer.held) || inTurn((m) => m.up) || inTurn(() => true);
    this.tickMember = member;
    return member;
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
    const { producer, seq } = await this.sendPut(item, options, 'put');
    await producer.confirmPut(seq);
  }

  // Sends item without waiting for the broker to confirm it; flush() waits.
  // The sends of one tick go out together, in PUTS batches. Resolves with
  // the put's seq (at the broker it went to).
  send(item, options = {}) {
    return this.sendPut(item, options, 'send').then(({ seq }) => seq);
  }

  // Sends item (options.key: to its shard); resolves with { producer, seq }.
  sendPut(item, options, what) {
    let payload;
    try {
      payload = payloadOf(item, what);
    } catch (error) {
      return Promise.reject(error);
    }
    const sent = (async () => {
      const leaseMs = leaseMsOf(options);
      const putOptions = putOptionsOf(options, this.front);
      const key = keyOf(options);
      if (!this.service || !this.service.opened || this.closed) await this.control();
      let member = this.memberFor(key);
      const waited = member instanceof Promise;
      if (waited) member = await member;
      const { producer } = member;
      const sending = producer.send(this.queue, payload, leaseMs, putOptions);
      if (waited) member.keyWaiting -= 1; // in order: the next put of the key comes after
      return { producer, seq: await sending };
    })();
    this.lastSend = sent.catch(() => {});
    return sent;
  }

  // Resolves once every broker has confirmed every put sent to it; rejects
  // with a BrokerError if one refused a put that put() does not report.
  async flush() {
    await this.lastSend;
    if (!this.service) return;
    const results = await Promise.allSettled(this.service.producers().map((producer) => producer.flush()));
    const failed = results.find((result) => result.status === 'rejected');
    if (failed) throw failed.reason;
  }

  // The options of this client's Consumer (consumer.js).
  consumerOptions() {
    return {
      prefetch: this.prefetch,
      curve: this.curve,
      opening: () => this.getsOpening,
      priorities: this.priorities,
      reached: () => this.reached,
    };
  }

  // The consumer: a session with every broker of the service (those that
  // have not answered yet, as they come up).
  consumerSession() {
    return this.opening('consumerOpening', async () => {
      await this.control();
      const brokers = this.service.active().map((member) => ({
        address: member.address,
        clientId: `${this.service.clientIdOf(member)}-get`,
        label: member.label,
        member,
        now: member.up, // the others' sessions open as they come up
      }));
      const consumer = new Consumer(brokers, null, this.queue, this.consumerOptions());
      consumer.onError = (error) => this.recordError(error);
      this.consumerStarting = consumer;
      try {
        await consumer.open(this.timeout * 1000);
      } finally {
        this.consumerStarting = null;
      }
      if (this.closed) {
        await consumer.close();
        throw new Error('queue client is closed');
      }
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
  // seconds: rejects with TimeoutError when it passes. With several brokers
  // (PROTOCOL.md 4.15), each is asked, once its puts from this client are
  // confirmed, and the counts are summed; one that cannot be reached keeps
  // the join waiting, and the TimeoutError names it (unanswered).
  async join(options = {}) {
    if (options.timeout !== undefined && !(options.timeout * 1000 <= WAIT_MAX_MS)) {
      throw new RangeError(`join(): timeout is at most ${WAIT_MAX_MS / 1000} seconds`);
    }
    if (this.consumer) this.consumer.flushAcks(); // acks made before the join, out before it
    await this.lastSend;
    await this.control();
    const deadline = options.timeout === undefined ? null : Date.now() + options.timeout * 1000;
    const build = (tag) => {
      const ms = deadline === null ? 0 : Math.max(1, deadline - Date.now());
      return message('JOIN', tag, this.queue, ms, options.all ? 'all' : 'before');
    };
    const members = this.service.active();
    if (members.length === 1) {
      const [{ producer }] = members;
      await producer.confirm(producer.seq); // this client's puts are in first
      const { command, fields } = await this.sessionFor(members[0]).request('join', build);
      if (command === 'TIMEOUT') {
        const outstanding = Number(fields[2].toString());
        throw new TimeoutError(`join timed out: ${outstanding} items still outstanding`, { outstanding, unanswered: [] });
      }
      return { count: Number(fields[2].toString()), dead: Number(fields[3].toString()) };
    }
    const answers = new Map(); // member -> { timedOut, count, dead }
    const asked = Promise.all(members.map(async (member) => {
      await member.whenUp();
      const { producer } = member;
      await producer.confirm(producer.seq); // this client's puts there are in first
      const { command, fields } = await this.sessionFor(member).request('join', build);
      answers.set(member, {
        timedOut: command === 'TIMEOUT',
        count: Number(fields[2].toString()),
        dead: command === 'TIMEOUT' ? 0 : Number(fields[3].toString()),
      });
    }));
    if (deadline === null) {
      await asked;
    } else {
      let timer;
      const late = new Promise((resolve) => {
        timer = setTimeout(resolve, Math.max(0, deadline - Date.now()) + JOIN_GRACE_MS);
      });
      try {
        await Promise.race([asked, late]);
      } finally {
        clearTimeout(timer);
      }
      asked.catch(() => {}); // what comes after the time-out is not waited for
    }
    const timedOut = members.filter((member) => answers.has(member) && answers.get(member).timedOut);
    const unanswered = members.filter((member) => !answers.has(member));
    if (timedOut.length || unanswered.length) {
      const outstanding = timedOut.reduce((sum, member) => sum + answers.get(member).count, 0);
      let text = `join timed out: ${outstanding} items still outstanding`;
      if (timedOut.length) {
        text += ` (${timedOut.map((member) => `${answers.get(member).count} at '${member.label}'`).join(', ')})`;
      }
      if (unanswered.length) {
        const names = unanswered.map((member) => `'${member.label}'`).join(', ');
        text += `; no answer from the broker${unanswered.length > 1 ? 's' : ''} at ${names}`;
      }
      throw new TimeoutError(text, { outstanding, unanswered: unanswered.map((member) => member.label) });
    }
    let count = 0;
    let dead = 0;
    for (const answer of answers.values()) {
      count += answer.count;
      dead += answer.dead;
    }
    return { count, dead };
  }

  // The session for a request to member's broker (JOIN, STATS, SHUTDOWN...):
  // the consumer's there when this client consumes, after its acks made so
  // far (two connections keep no order between them: a join on the
  // producer's could overtake them), else the producer's.
  sessionFor(member) {
    const consumer = this.consumer;
    const lane = consumer && !this.closed ? consumer.laneFor(member) : null;
    if (!lane || !lane.session.welcome || lane.session.closed) return member.producer.session;
    consumer.flushLane(lane);
    return lane.session;
  }

  // Sends build(tag) to every broker of the service (waiting for one that
  // has not answered this client yet); resolves with [{ member, fields }]
  // (the REPORT's), in the order found.
  async everyBroker(kind, build) {
    await this.control();
    return Promise.all(this.service.active().map(async (member) => {
      await member.whenUp();
      const { fields } = await this.sessionFor(member).request(kind, build);
      return { member, fields };
    }));
  }

  // Sends build(tag) to the broker that gave item id (its top 8 bits name
  // its shard, PROTOCOL.md 4.15); resolves with the REPORT's fields.
  async brokerOfId(id, kind, build) {
    await this.control();
    const members = this.service.active();
    const member = members.length === 1 ? members[0] : this.service.memberForShard(shardOfId(id));
    if (!member) throw new Error(`no broker of this service is shard ${shardOfId(id)}, which item id ${id} names`);
    await member.whenUp();
    const { fields } = await this.sessionFor(member).request(kind, build);
    return fields;
  }

  // The queue's numbers (PROTOCOL.md 4.8) as an object; {} if no broker
  // knows the queue. With several brokers, summed (state: 'open' if it is
  // open at every broker, else 'discarding' if it is so at one, else
  // 'draining'; lease_ms and paused: the largest). With { brokers: true }:
  // { total: that, brokers: [{ address, shard, stats }] }, each broker's own.
  async stats(options = {}) {
    const replies = await this.everyBroker('stats', (tag) => message('STATS', tag, this.queue));
    const each = replies.map(({ member, fields }) => ({
      address: memberAddress(member),
      shard: member.shard,
      stats: fields.length > 1 ? parseStats(fields[1].toString()) : {},
    }));
    const total = mergeStats(each.map((entry) => entry.stats));
    return options.brokers ? { total, brokers: each } : total;
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
  // keys. Resolves with the queue's numbers after it (the brokers' reports,
  // merged as stats() does).
  async shutdown(options = {}) {
    const mode = options.immediate ? 'immediate' : 'drain';
    const replies = await this.everyBroker('shutdown', (tag) => message('SHUTDOWN', tag, this.queue, mode));
    return mergeStats(replies.map(({ fields }) => (fields.length > 1 ? parseStats(fields[1].toString()) : {})));
  }

  // REOPEN, PURGE or DELETE (PROTOCOL.md 4.13), to every broker, on the
  // sessions stats() uses: resolves with the REPORTs' lines (Buffers), each
  // broker's after the one before; none from a broker that does not have
  // the queue.
  async lifecycle(command) {
    const replies = await this.everyBroker(command.toLowerCase(), (tag) => message(command, tag, this.queue));
    return replies.flatMap(({ fields }) => fields.slice(1));
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

  // DEAD (PROTOCOL.md 4.12) with action, on the sessions stats() uses: to
  // the broker that gave item id when one is given (its top 8 bits name
  // it), else to every broker. Resolves with the REPORTs' lines (Buffers),
  // each broker's after the one before.
  async dead(action, id) {
    const build = (tag) => message('DEAD', tag, this.queue, action);
    if (id !== undefined) return (await this.brokerOfId(id, 'dead', build)).slice(1);
    const replies = await this.everyBroker('dead', build);
    return replies.flatMap(({ fields }) => fields.slice(1));
  }

  // The queue's dead letters (PROTOCOL.md 4.12), oldest death first (the
  // first 1024 of each broker): [{ id, attempts, size, died, cause, reason,
  // reasonCut, payload, payloadCut }]. Needs the admin role on a broker
  // with keys.
  async deadLetters() {
    const letters = (await this.dead('list')).map(parseDeadLetter);
    if (this.service.active().length === 1) return letters;
    const when = (letter) => (letter.died ? letter.died.getTime() : -Infinity); // unknown: before any known
    return letters.sort((a, b) => when(a) - when(b)); // stable: each broker's order kept
  }

  // One dead item whole (PROTOCOL.md 4.12, DEAD show), given as a dead
  // letter or its id (decimal digits, or a bigint), asked of the broker the
  // id names: as deadLetters() shows it, but with its whole payload
  // (payloadCut false), however large: the broker sends at most 785 664
  // bytes an answer, so a larger one is asked again from where the last
  // answer stopped. Rejects with a 404 BrokerError if it is not a dead
  // item of this queue, with a TypeError or a RangeError (nothing sent)
  // for another item. Needs the admin role on a broker with keys; broker 2.2.
  async deadLetter(item) {
    const id = deadId(item, 'deadLetter');
    const parts = [];
    let got = 0;
    let letter = null;
    for (;;) {
      const lines = await this.dead(got ? `show ${id} ${got}` : `show ${id}`, id);
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
  // resolves with how many. Without items, every dead item (at every
  // broker). With items (an array of dead letters as deadLetters() gives,
  // or their ids: strings of decimal digits or bigints), those only, each
  // to the broker its id names, all or none at each broker (broker 2.2): if
  // one is not a dead item of this queue, it rejects with a 404 BrokerError
  // whose subject names every such id of that broker, and nothing changes
  // there; [] resolves with 0, nothing sent. The ids go in one request of
  // at most 1024 bytes ('requeue ' and the ids, a space between them: about
  // 50 ids of the broker's 20-digit size); more reject with a RangeError,
  // nothing sent: pass them in parts, each all or none. An id named twice
  // counts once.
  async requeueDead(items) {
    if (items === undefined) return countOf(await this.dead('requeue'), 'requeued');
    return this.deadByIds('requeue', items, 'requeueDead', 'requeued');
  }

  // Deletes the given dead items (an array, as requeueDead(items) takes),
  // all or none at each broker, with the same 404 and RangeError; resolves
  // with how many. purgeDead() deletes them all.
  async deleteDead(items) {
    return this.deadByIds('delete', items, 'deleteDead', 'deleted');
  }

  // DEAD requeue or delete of the ids of items, each to the broker its id
  // names: resolves with how many (key=N summed).
  async deadByIds(verb, items, what, key) {
    const ids = deadIds(items, what);
    if (!ids.length) return 0;
    deadAction(verb, ids, what); // all of them fit in one request
    await this.control();
    const groups = new Map(); // shard -> ids
    const single = this.service.active().length === 1;
    for (const id of ids) {
      const shard = single ? 0 : shardOfId(id);
      if (!groups.has(shard)) groups.set(shard, []);
      groups.get(shard).push(id);
    }
    const counts = await Promise.all([...groups.values()].map(async (group) => {
      const lines = await this.dead(deadAction(verb, group, what), group[0]);
      return countOf(lines, key);
    }));
    return counts.reduce((total, n) => total + n, 0);
  }

  // Deletes every dead item (at every broker); resolves with how many.
  async purgeDead() {
    return countOf(await this.dead('purge'), 'purged');
  }

  // The next n items (1 to 1024, default 10) the queue would deliver, in
  // that order, left where they are (PROTOCOL.md 4.14): [{ id, attempts,
  // size, priority, ageMs, payload (its first 64 bytes), payloadCut }].
  // Delayed items and those being processed are not shown; [] for a queue
  // the broker does not have. With several brokers, each is asked for n and
  // the n first by priority, then oldest first, are given: the order holds
  // at each broker, not across them (PROTOCOL.md 4.15). Needs the consume
  // or admin role on a broker with keys; broker 2.2.
  async peek(n = 10) {
    if (!Number.isInteger(n)) throw new TypeError(`peek(): n is an integer, not ${typeof n === 'number' ? n : typeof n}`);
    if (n < 1 || n > PEEK_MAX) throw new RangeError(`peek(): n is 1 to ${PEEK_MAX}, not ${n}`);
    const replies = await this.everyBroker('peek', (tag) => message('PEEK', tag, this.queue, String(n)));
    const peeked = replies.map(({ fields }) => fields.slice(1).filter((line) => line.length).map(parsePeeked));
    if (peeked.length === 1) return peeked[0];
    return peeked.flat().sort((a, b) => a.priority - b.priority || b.ageMs - a.ageMs).slice(0, n);
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
    const replies = await this.everyBroker(command.toLowerCase(), (tag) => message(command, tag, this.queue));
    return mergeStats(replies.map(({ fields }) => (fields.length > 1 ? parseStats(fields[1].toString()) : {})));
  }

  // Waits for every put to be confirmed (at most options.timeout seconds,
  // then rejects with TimeoutError: those puts may be lost), then ends every
  // session: items delivered to this client and not acked go back to the queue.
  async close(options = {}) {
    if (this.closed) return;
    try {
      await withTimeout(this.flush(), options.timeout, 'puts not confirmed in time');
    } finally {
      this.closed = true;
      // Opens waiting for a broker end.
      if (this.service) this.service.closeOpening();
      if (this.consumerStarting) this.consumerStarting.closeOpening();
      await Promise.allSettled([this.controlOpening, this.consumerOpening]); // no session opens after close
      const consumer = this.consumer || this.consumerStarting;
      if (consumer) await consumer.close();
      if (this.service) await this.service.close();
      // Last, so that a get() awaited right after close() has its handler.
      if (consumer) consumer.abandon();
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

// The ids of items (dead letters or ids), as decimal digits, each once, in
// order. Throws a TypeError or a RangeError (nothing sent) for an item that
// is not one.
function deadIds(items, what) {
  if (!Array.isArray(items)) throw new TypeError(`${what}(): items is an array of dead letters or ids`);
  const ids = new Set();
  for (const item of items) ids.add(deadId(item, what));
  return [...ids];
}

// DEAD's action for requeue or delete of ids (decimal digits). Throws a
// RangeError (nothing sent) for more than fit in one frame: the broker
// takes them all or none, so they are not split.
function deadAction(verb, ids, what) {
  const action = `${verb} ${ids.join(' ')}`;
  if (action.length > DEAD_ACTION_MAX) {
    throw new RangeError(`${what}(): ${ids.length} ids do not fit in one DEAD request (${action.length} bytes; the broker takes `
      + `at most ${DEAD_ACTION_MAX}: '${verb}', a space and the ids in decimal, a space between them, about 50 ids): `
      + 'nothing was sent; pass them in parts (each part is all or none)');
  }
  return action;
}

// The numbers of one queue at each broker (STATS lines parsed, {} where a
// broker does not have it) as one: counts summed; state 'open' if it is
// open at every broker that has it, else 'discarding' if it is so at one,
// else 'draining'; lease_ms and paused the largest; other text the first
// broker's. {} if no broker has the queue.
function mergeStats(all) {
  const present = all.filter((stats) => Object.keys(stats).length);
  if (present.length <= 1) return present.length ? present[0] : {};
  const total = {};
  for (const stats of present) {
    for (const [key, value] of Object.entries(stats)) {
      if (key === 'state') continue;
      if (typeof value !== 'number') {
        if (!(key in total)) total[key] = value;
      } else if (key === 'lease_ms' || key === 'paused') {
        total[key] = Math.max(total[key] || 0, value);
      } else {
        total[key] = (total[key] || 0) + value;
      }
    }
  }
  const states = present.map((stats) => stats.state).filter(Boolean);
  if (states.length) {
    if (states.every((state) => state === 'open')) total.state = 'open';
    else total.state = states.includes('discarding') ? 'discarding' : 'draining';
  }
  return total;
}

// The number key=N of a one-line REPORT, summed over the brokers' (a line
// each); empty (if given) when there is no line (PURGE or DELETE of a queue
// the brokers do not have).
function countOf(lines, key, empty) {
  if (!lines.length && empty !== undefined) return empty;
  if (!lines.length) throw new Error(`the broker's answer has no ${key}=N: ''`);
  let total = 0;
  for (const line of lines) {
    const value = parseStats(line.toString())[key];
    if (typeof value !== 'number') throw new Error(`the broker's answer has no ${key}=N: '${lines.map(String).join(' ')}'`);
    total += value;
  }
  return total;
}

module.exports = {
  Queue, LifoQueue, PriorityQueue, putOptionsOf,
};
