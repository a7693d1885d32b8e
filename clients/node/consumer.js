'use strict';
// The consumer side (PROTOCOL.md 4.3 to 4.5): a session of its own for the
// consumed queue, CREDIT confirmed by CREDITED, deliveries as ITEM or ITEMS,
// and the acks of one tick in one ACK.
const { Session } = require('./session');
const {
  message, cutText, encodeIds, decodeItems, BrokerError, QueueEmpty, WAIT_MAX_MS, IDS_MAX,
} = require('./protocol');

const number = (frame) => Number(frame.toString());

// A delivery: data (a Buffer), id (a decimal string: ids exceed 2^53),
// attempt (1 on the first delivery), ageUs (since the broker accepted the
// put), leaseMs (ack or touch within it), queue.
class Item {
  constructor(queue, { id, attempt, ageUs, leaseMs, data }) {
    this.queue = queue;
    this.id = id;
    this.attempt = attempt;
    this.ageUs = ageUs;
    this.leaseMs = leaseMs;
    this.data = data;
  }

  toString() {
    return this.data.toString();
  }
}

class Consumer {
  constructor(routerEndpoint, clientId, queue, credit, curve) {
    this.session = new Session(routerEndpoint, clientId, { curve });
    this.session.onMessage = (command, fields) => this.onMessage(command, fields);
    this.session.onReconnect = () => this.rejoin();
    this.queue = queue;
    this.credit = credit;
    this.batch = 0; // most items per ITEMS asked for
    this.delivered = []; // items not yet got, then possibly the QueueShutDown error
    this.getters = []; // { resolve, reject } of get() calls waiting
    this.taken = new Map(); // id -> item got, not taskDone
    this.acks = []; // ids acked, to go out in one ACK
    this.creditWithdrawn = false;
    this.onError = () => {};
  }

  async open(timeoutMs) {
    await this.session.open(timeoutMs);
    this.batch = Math.min(this.credit, this.session.welcome.maxBatch);
    try {
      await this.announceCredit();
    } catch (error) {
      await this.session.close(); // the next get() tries again
      throw error;
    }
  }

  // CREDIT, resolved by CREDITED: a consumer that has it and no item knows
  // the queue is empty, not that its request was lost (4.3).
  announceCredit() {
    return this.session.request('credit', (tag) => message('CREDIT', tag, this.queue, this.credit, this.batch));
  }

  // After a new HELLO, the old session's items are the broker's to deliver
  // again (acks of them would be answered 404); a queue still shut down
  // answers the CREDIT with 503 again.
  rejoin() {
    this.delivered = [];
    this.acks = [];
    this.creditWithdrawn = false;
    this.announceCredit().catch((error) => {
      if (error instanceof BrokerError) this.onError(error); // else closed meanwhile
    });
  }

  onMessage(command, fields) {
    if (command === 'ITEM' && fields.length === 6) {
      const [queue, id, attempt, ageUs, leaseMs, data] = fields;
      this.deliver(new Item(queue.toString(), {
        id: id.toString(), attempt: number(attempt), ageUs: number(ageUs), leaseMs: number(leaseMs), data,
      }));
    } else if (command === 'ITEMS' && fields.length === 3) {
      const queue = fields[0].toString();
      for (const delivery of decodeItems(fields[2], number(fields[1])) || []) this.deliver(new Item(queue, delivery));
    } else if (command === 'ERROR') {
      this.onBrokerError(BrokerError.fromFields(fields));
    }
  }

  // ERRORs whose subject is the queue are about this consumer as a whole.
  onBrokerError(error) {
    const aboutQueue = error.subject === this.queue;
    if (aboutQueue && error.code === 503) {
      this.deliver(error); // shut down and empty: get() rejects once the items are got
      return;
    }
    // 3 leases expired in a row: nothing more comes until CREDIT again (4.5).
    if (aboutQueue && error.code === 408) this.creditWithdrawn = true;
    this.onError(error);
  }

  deliver(item) {
    const getter = this.getters.shift();
    if (getter) getter.resolve(item);
    else this.delivered.push(item);
  }

  getNowait() {
    if (!this.delivered.length) throw new QueueEmpty('no item delivered to this client');
    const item = this.delivered[0];
    if (item instanceof BrokerError) throw item;
    this.delivered.shift();
    this.taken.set(item.id, item);
    return item;
  }

  async get(signal) {
    if (this.creditWithdrawn) {
      // A get() shows that this consumer reads again.
      this.creditWithdrawn = false;
      await this.announceCredit().catch((error) => {
        this.creditWithdrawn = true;
        throw error;
      });
    }
    const item = this.delivered.length ? this.delivered.shift() : await this.next(signal);
    if (item instanceof BrokerError) {
      this.delivered.unshift(item);
      throw item;
    }
    this.taken.set(item.id, item);
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
        reject(signal.reason || new Error('aborted'));
      };
      if (signal) {
        if (signal.aborted) return abort();
        signal.addEventListener('abort', abort, { once: true });
      }
      return this.getters.push(getter);
    });
  }

  // The id of a held item, given as the item or its id.
  takenId(item, what) {
    const id = typeof item === 'object' ? item.id : String(item);
    if (!this.taken.has(id)) throw new Error(`${what}(): no item ${id} is held by this client`);
    return id;
  }

  // Acks the given item, or the oldest held.
  taskDone(item) {
    if (item === undefined && !this.taken.size) throw new Error('taskDone() called too many times');
    const id = item === undefined ? this.taken.keys().next().value : this.takenId(item, 'taskDone');
    this.taken.delete(id);
    this.acks.push(id);
    if (this.acks.length === IDS_MAX) this.flushAcks();
    else if (this.acks.length === 1) setImmediate(() => this.flushAcks());
  }

  flushAcks() {
    if (!this.acks.length) return;
    const ids = encodeIds(this.acks);
    this.acks = [];
    this.session.send(message('ACK', this.session.nextTag('ack'), ids));
  }

  touch(item) {
    const id = this.takenId(item, 'touch');
    this.flushAcks(); // in the order they were made
    return this.session.send(message('TOUCH', this.session.nextTag('touch'), encodeIds([id])));
  }

  nack(item, delay, reason) {
    const delayMs = Math.round(delay * 1000);
    if (!(delayMs >= 0 && delayMs <= WAIT_MAX_MS)) {
      throw new RangeError(`nack(): delay is 0 to ${WAIT_MAX_MS / 1000} seconds`);
    }
    const id = this.takenId(item, 'nack');
    this.taken.delete(id);
    this.flushAcks();
    const tag = this.session.nextTag('nack');
    return this.session.send(message('NACK', tag, delayMs, cutText(reason), encodeIds([id])));
  }

  async close() {
    this.flushAcks();
    for (const getter of this.getters.splice(0)) getter.reject(new Error('queue client is closed'));
    await this.session.close();
  }
}

module.exports = { Consumer, Item };
