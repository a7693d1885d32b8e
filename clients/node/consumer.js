'use strict';
// The consumer side (PROTOCOL.md 4.3 to 4.5): a session of its own for the
// consumed queue, CREDIT confirmed by CREDITED, deliveries as ITEM or ITEMS,
// and the acks of one tick in one ACK.
//
// Credit follows the getters, as asyncio.Queue does (N getters hold at most
// N items): the credit at the broker is the items held (got, not yet acked
// or nacked) plus the get() calls waiting plus prefetch (items sent ahead).
// It is worked out at most once per event-loop turn, with the acks, and sent
// only when it changed: a steady pool of workers sends none.
const { Session } = require('./session');
const {
  message, cutText, encodeIds, decodeDeliveries, parseStats, BrokerError, QueueShutDown, QueueEmpty, WAIT_MAX_MS, IDS_MAX,
} = require('./protocol');

// A delivery: data (a Buffer), id (a decimal string: ids exceed 2^53),
// attempt (1 on the first delivery), ageUs (since the broker accepted the
// put), leaseMs (ack or touch within it), queue, and priority: the put's,
// when the consumer asked for it (CREDIT with priority, PROTOCOL.md 4.3: a
// PriorityQueue, or a Queue with priorities: true), else null.
class Item {
  constructor(queue, {
    id, attempt, ageUs, leaseMs, data, priority = null,
  }) {
    this.queue = queue;
    this.id = id;
    this.attempt = attempt;
    this.ageUs = ageUs;
    this.leaseMs = leaseMs;
    this.data = data;
    this.priority = priority;
  }

  toString() {
    return this.data.toString();
  }
}

class Consumer {
  // broker: the parsed address; options: { prefetch, curve,
  // opening() (get() calls waiting for this consumer to open), priorities
  // (every CREDIT asks that deliveries carry their priority), batch (most
  // items per ITEMS; 0: one ITEM per item; default the broker's max-batch) }.
  constructor(broker, clientId, queue, options = {}) {
    this.session = new Session(broker, clientId, { curve: options.curve });
    this.session.onMessage = (command, fields) => this.onMessage(command, fields);
    this.session.onReconnect = () => this.rejoin();
    this.queue = queue;
    this.prefetch = options.prefetch || 0;
    this.opening = options.opening || (() => 0);
    this.priorities = Boolean(options.priorities);
    this.batchWanted = options.batch; // undefined: the broker's max-batch
    this.batch = 0; // most items per ITEMS asked for
    this.delivered = []; // items not yet got
    this.getters = []; // { resolve, reject } of get() calls waiting
    this.taken = new Map(); // id -> { item, frame } got, not taskDone
    this.stale = new Map(); // the same, from a session the broker has ended: their acks are not sent
    this.acks = []; // ids acked, to go out in one ACK
    this.credit = null; // the credit last sent; null: none in force
    this.creditWithdrawn = false;
    // The QueueShutDown error, once the queue is shut down and empty, or
    // deleted: no CREDIT is sent until a get() or reopen() finds it open
    // again (a CREDIT would make a deleted queue anew).
    this.shutDown = null;
    this.flushing = false; // a flush of acks and credit is due this turn
    this.closed = false;
    this.onError = () => {};
  }

  // What the credit should be now.
  wantedCredit() {
    return this.taken.size + this.getters.length + this.opening() + this.prefetch;
  }

  async open(timeoutMs) {
    await this.session.open(timeoutMs);
    const { maxBatch } = this.session.welcome;
    this.batch = this.batchWanted === undefined ? maxBatch : Math.min(this.batchWanted, maxBatch);
    try {
      await this.announceCredit();
    } catch (error) {
      await this.session.close(); // the next get() tries again
      throw error;
    }
  }

  // CREDIT, resolved by CREDITED: a consumer that has it and no item knows
  // the queue is empty, not that its request was lost (4.3). The credit is
  // worked out as it is sent, and again if it is sent again after a reconnect.
  // A consumer that wants priorities says so in every CREDIT (the broker
  // keeps what the latest said); one that does not sends the 4 fields a
  // broker before 2.2 takes.
  announceCredit() {
    return this.session.request('credit', (tag) => {
      this.credit = this.wantedCredit();
      const fields = [tag, this.queue, this.credit, this.batch];
      if (this.priorities) fields.push('priority');
      return message('CREDIT', ...fields);
    });
  }

  // Acks and the credit, once per turn.
  schedule() {
    if (this.flushing) return;
    this.flushing = true;
    setImmediate(() => {
      this.flushing = false;
      this.flushAcks();
      this.updateCredit();
    });
  }

  updateCredit() {
    if (this.closed || this.shutDown || this.creditWithdrawn || this.credit === null) return;
    if (this.wantedCredit() === this.credit) return;
    this.announceCredit().catch((error) => this.creditRefused(error));
  }

  // A CREDIT answered with an ERROR: 503 is the queue shut down and empty;
  // anything else (429: over the broker's --max-credit) is told to the
  // get() calls waiting, which it would leave waiting for ever.
  creditRefused(error) {
    if (!(error instanceof BrokerError)) return; // closed meanwhile
    if (error.code === 503) {
      this.shutDownNow(error);
      return;
    }
    this.credit = null; // sent again by the next get()
    this.onError(error);
    for (const getter of this.getters.splice(0)) getter.reject(error);
  }

  // After a new HELLO, the old session's items are the broker's to deliver
  // again (acks of them would be answered 404); a queue still shut down
  // answers the CREDIT with 503 again. A consumer told the queue was shut
  // down sends none: the next get() asks (askAgain()).
  rejoin() {
    this.delivered = [];
    this.acks = [];
    for (const [id, entry] of this.taken) this.stale.set(id, entry);
    this.taken.clear();
    this.creditWithdrawn = false;
    if (this.shutDown) {
      this.credit = null; // none in force in the new session
      return;
    }
    this.announceCredit().catch((error) => this.creditRefused(error));
  }

  // ITEM or ITEMS (with or without priorities): one not as PROTOCOL.md 4.4
  // says is dropped whole (its items come back when their leases run out).
  onMessage(command, fields) {
    if (command === 'ITEM' || command === 'ITEMS') {
      const decoded = decodeDeliveries(command, fields);
      if (decoded) for (const delivery of decoded.deliveries) this.deliver(new Item(decoded.queue, delivery));
    } else if (command === 'ERROR') {
      this.onBrokerError(BrokerError.fromFields(fields));
    }
  }

  // ERRORs whose subject is the queue are about this consumer as a whole.
  onBrokerError(error) {
    const aboutQueue = error.subject === this.queue;
    if (aboutQueue && error.code === 503) {
      this.shutDownNow(error); // shut down and empty
      return;
    }
    // 3 leases expired in a row: nothing more comes until CREDIT again (4.5).
    if (aboutQueue && error.code === 408) {
      this.creditWithdrawn = true;
      this.credit = null;
    }
    this.onError(error);
  }

  // Every get() waiting, and every later one, rejects with error once the
  // items delivered before it are got.
  shutDownNow(error) {
    this.shutDown = error instanceof QueueShutDown ? error : new QueueShutDown(503, 'SHUT_DOWN', '', this.queue, error.text);
    if (!this.delivered.length) for (const getter of this.getters.splice(0)) getter.reject(this.shutDown);
  }

  deliver(item) {
    if (this.shutDown) {
      // An item after the broker said the queue was shut down and empty: it
      // was reopened (REOPEN, 4.13) and sent it on the credit it kept. The
      // notice is out of date.
      this.shutDown = null;
      this.schedule();
    }
    const getter = this.getters.shift();
    if (getter) getter.resolve(item);
    else this.delivered.push(item);
  }

  // The queue takes puts again (reopened, or made anew after a DELETE): the
  // notice that it was shut down is forgotten and the credit said again (a
  // consumer told sends CREDIT again, PROTOCOL.md 4.13), so that get()
  // waits for items again.
  resume() {
    if (!this.shutDown) return;
    this.shutDown = null;
    if (this.credit !== null) this.credit = -1; // sent again this turn (null: by the next get())
    this.schedule();
  }

  // For a get() made after the broker said the queue was shut down and
  // empty (or deleted): asks the broker (STATS, which makes no queue)
  // whether that still holds. If the queue is open, or still has items,
  // resume(): the get() waits as usual (a CREDIT to a queue still shut down
  // is answered with the notice again). Else the notice stays.
  async askAgain() {
    const { fields } = await this.session.request('stats', (tag) => message('STATS', tag, this.queue));
    const stats = fields.length > 1 ? parseStats(fields[1].toString()) : null;
    if (stats && (stats.state === 'open' || stats.outstanding !== 0)) this.resume();
  }

  // Records item as got by frame (null: by getNowait()).
  take(item, frame) {
    const before = this.taken.get(item.id);
    // Delivered again (its lease ran out): the older delivery is gone.
    if (before && before.frame) before.frame.done();
    this.taken.set(item.id, { item, frame });
    if (frame) frame.hold(item);
    this.schedule();
  }

  getNowait() {
    if (!this.delivered.length) {
      if (this.shutDown) throw this.shutDown;
      throw new QueueEmpty('no item delivered to this client');
    }
    const item = this.delivered.shift();
    this.take(item, null);
    return item;
  }

  // The next item, for the get() whose frame this is.
  async get(signal, frame) {
    if (this.creditWithdrawn) {
      // A get() shows that this consumer reads again.
      this.creditWithdrawn = false;
      await this.announceCredit().catch((error) => {
        this.creditWithdrawn = true;
        throw error;
      });
    }
    if (!this.delivered.length && this.shutDown) await this.askAgain();
    let item;
    if (this.delivered.length) item = this.delivered.shift();
    else if (this.shutDown) throw this.shutDown;
    else {
      if (this.credit === null && !this.closed) {
        // Refused before (429): try again with this get().
        await this.announceCredit().catch((error) => {
          this.credit = null;
          throw error;
        });
      }
      item = await this.next(signal);
    }
    this.take(item, frame);
    return item;
  }

  // The next delivery; an item that arrives after signal aborted the wait
  // is kept for the next get().
  next(signal) {
    return new Promise((resolve, reject) => {
      const settle = (callback) => (value) => {
        if (signal) signal.removeEventListener('abort', abort);
        callback(value);
      };
      const getter = { resolve: settle(resolve), reject: settle(reject) };
      const abort = () => {
        this.getters = this.getters.filter((g) => g !== getter);
        this.schedule();
        reject(signal.reason || new Error('aborted'));
      };
      if (signal) {
        if (signal.aborted) return abort();
        signal.addEventListener('abort', abort, { once: true });
      }
      this.getters.push(getter);
      return this.schedule();
    });
  }

  // The entry of a held item, given as the item or its id.
  entry(item, what) {
    const id = item !== null && typeof item === 'object' ? item.id : String(item);
    const entry = this.taken.get(id) || this.stale.get(id);
    if (!entry) throw new Error(`${what}(): no item ${id} is held by this client`);
    return entry;
  }

  // Acks an item held: its entry.
  ack(entry) {
    const { id } = entry.item;
    if (entry.frame) entry.frame.done();
    if (this.stale.delete(id)) return; // the broker has ended the session that held it
    this.taken.delete(id);
    this.acks.push(id);
    if (this.acks.length === IDS_MAX) this.flushAcks();
    this.schedule();
  }

  taskDone(item) {
    this.ack(this.entry(item, 'taskDone'));
  }

  held() {
    return this.taken.size + this.stale.size;
  }

  flushAcks() {
    if (!this.acks.length) return;
    const ids = encodeIds(this.acks);
    this.acks = [];
    this.session.send(message('ACK', this.session.nextTag('ack'), ids));
  }

  touch(item) {
    const { item: held } = this.entry(item, 'touch');
    this.flushAcks(); // in the order they were made
    return this.session.send(message('TOUCH', this.session.nextTag('touch'), encodeIds([held.id])));
  }

  nack(item, delay, reason) {
    const delayMs = Math.round(delay * 1000);
    if (!(delayMs >= 0 && delayMs <= WAIT_MAX_MS)) {
      throw new RangeError(`nack(): delay is 0 to ${WAIT_MAX_MS / 1000} seconds`);
    }
    const entry = this.entry(item, 'nack');
    const { id } = entry.item;
    if (entry.frame) entry.frame.done();
    if (this.stale.delete(id)) return Promise.resolve();
    this.taken.delete(id);
    this.flushAcks();
    this.schedule();
    const tag = this.session.nextTag('nack');
    return this.session.send(message('NACK', tag, delayMs, cutText(reason), encodeIds([id])));
  }

  // Ends the session; the get() calls still waiting are rejected by
  // abandon(), once the client is closed.
  async close() {
    this.flushAcks();
    this.closed = true;
    await this.session.close();
  }

  abandon() {
    for (const entry of [...this.taken.values(), ...this.stale.values()]) if (entry.frame) entry.frame.done();
    for (const getter of this.getters.splice(0)) getter.reject(new Error('queue client is closed'));
  }
}

module.exports = { Consumer, Item };
