'use strict';
// The producer side (PROTOCOL.md 4.1, 4.7, 4.10): the puts of one tick
// gathered into PUTS batches on a PUSH socket, every message kept until
// SYNCED confirms it (to be sent again with the same seqs after a loss or a
// broker restart), and at most the broker's window of them. Its session
// also carries the client's joins and stats (PROTOCOL.md 2).
const { Session } = require('./session');
const { createLink } = require('./link');
const {
  message, encodePuts, encodePutsEach, BrokerError, PUTS_ENTRY_HEADER,
} = require('./protocol');

// Items this large go alone, as PUT: batching them saves nothing.
const PUT_ALONE_BYTES = 64 * 1024;

// The bytes a put with these options adds to batch beyond its plain entry
// when it joins it with options of its own (`each`, PROTOCOL.md 4.1): its
// options after their u8 length, and, when batch's puts share their options
// so far, those of each of them too.
function eachBytes(batch, options) {
  const own = 1 + options.length; // options are ASCII: a byte a character
  return batch.each ? own : own + batch.payloads.length * (1 + batch.options.length);
}

class Producer {
  // broker: the parsed address; options: { curve, reached, replicas } (Session's).
  // A client of a service of several brokers (PROTOCOL.md 4.15) has one
  // Producer per broker: each keeps the puts it sent until that broker
  // confirms them, and sends them again only to it.
  constructor(broker, clientId, options = {}) {
    this.session = new Session(broker, clientId, { ...options, helloSeq: () => this.confirmed + 1 });
    this.session.onMessage = (command, fields) => this.onMessage(command, fields);
    this.session.onReconnect = () => this.rejoined();
    this.linkOptions = { curve: options.curve };
    this.push = null; // connected at the first put: the broker closes silent connections (9.2)
    this.pushBroker = null; // the broker it is connected to: the session's (a group's leader, 4.16)
    this.seq = 0; // last seq given to a put
    this.confirmed = 0; // every seq up to this one is confirmed
    this.unconfirmed = []; // messages sent, oldest first: { last, count, bytes, frames }
    this.unconfirmedPuts = 0;
    this.unconfirmedBytes = 0;
    // Puts given seqs but not sent yet: { first, queue, leaseMs, options,
    // each, payloads, bytes }: options, the puts' own while they share them;
    // once they differ, null, and each holds every put's.
    this.batch = null;
    this.waiting = []; // puts waiting for room in the window, in order
    this.syncing = null;
    this.refused = new Map(); // seq -> BrokerError, until reported
    this.awaited = new Set(); // seqs whose put() reports their refusal itself
    this.held = null; // the full queue the broker holds our puts for (HELD), until SYNCED
    this.closed = false;
    this.onHeld = () => {};
    this.onError = () => {};
  }

  open(timeoutMs) {
    return this.session.open(timeoutMs);
  }

  // Whether the broker has a session for this producer now: welcomed, and
  // not saying HELLO again (a broker that fell silent or restarted).
  get up() {
    const { session } = this;
    return !this.closed && session.generation > 0 && !session.rehello && !session.closed;
  }

  // Resolves with the put's seq once it is batched or sent: at once, unless
  // the window is full. options: the put's options frame (PROTOCOL.md 4.1),
  // '' for none.
  send(queue, payload, leaseMs, options = '') {
    const { maxItem } = this.session.welcome;
    if (payload.length > maxItem) {
      const error = new RangeError(`item of ${payload.length} bytes is larger than the broker's limit of ${maxItem}`);
      return Promise.reject(error);
    }
    return new Promise((resolve, reject) => {
      this.waiting.push({ queue, payload, leaseMs, options, resolve, reject });
      this.admit();
    });
  }

  // Takes waiting puts, in order, while the window has room: the broker
  // holds at most window puts and window-bytes of a producer (4.10).
  admit() {
    let admitted = 0;
    while (admitted < this.waiting.length && this.fits(this.waiting[admitted])) {
      const put = this.waiting[admitted++];
      put.resolve(this.add(put));
    }
    this.waiting.splice(0, admitted); // once: a burst can leave many waiting
    if (this.waiting.length && !this.syncing) this.startSync();
  }

  // Whether put fits in the window, with the bytes of the items frames as
  // sent (and as the broker counts them).
  fits({ queue, payload, leaseMs, options }) {
    const { window, windowBytes } = this.session.welcome;
    const batch = this.batch;
    let puts = this.unconfirmedPuts;
    let bytes = this.unconfirmedBytes + PUTS_ENTRY_HEADER + payload.length;
    if (batch) {
      puts += batch.payloads.length;
      bytes += batch.bytes;
      if (options !== batch.options && queue === batch.queue && leaseMs === batch.leaseMs) {
        bytes += eachBytes(batch, options);
      }
    }
    return puts < window && (puts === 0 || bytes <= windowBytes);
  }

  // Gives the put its seq, in the batch or sent alone. A batch holds puts
  // of one queue and lease: a PUTS has one of each. Their options go once
  // in its options frame while they are the same, else with each entry.
  add({ queue, payload, leaseMs, options }) {
    const { maxItem, maxBatch } = this.session.welcome;
    const size = PUTS_ENTRY_HEADER + payload.length;
    const alone = payload.length >= PUT_ALONE_BYTES || size > maxItem;
    let batch = this.batch;
    let bytes = size; // what the put adds to the items frame
    let own = false; // the put joins batch with options of its own
    if (batch) {
      if (alone || queue !== batch.queue || leaseMs !== batch.leaseMs) {
        batch = null;
      } else if (options !== batch.options) { // null once they differ: always
        own = true;
        bytes += eachBytes(batch, options);
      }
      if (!batch || batch.bytes + bytes > maxItem) {
        this.sendBatch();
        batch = null;
        bytes = size;
        own = false;
      }
    }
    this.seq += 1;
    if (alone) {
      const frames = message('PUT', this.session.clientId, this.seq, queue, leaseMs, payload);
      if (options) frames.push(options); // no frame without options: brokers before 2.2 take none
      this.sendMessage(this.seq, 1, frames, payload.length);
      return this.seq;
    }
    if (!batch) {
      batch = { first: this.seq, queue, leaseMs, options, each: null, payloads: [], bytes: 0 };
      this.batch = batch;
      // The puts of this tick go together; none waits for a later one.
      setImmediate(() => this.sendBatch());
    } else if (own) {
      if (!batch.each) {
        batch.each = new Array(batch.payloads.length).fill(batch.options);
        batch.options = null;
      }
      batch.each.push(options);
    }
    batch.payloads.push(payload);
    batch.bytes += bytes;
    if (batch.payloads.length >= maxBatch) this.sendBatch();
    return this.seq;
  }

  sendBatch() {
    const batch = this.batch;
    if (!batch || this.closed) return;
    this.batch = null;
    const { first, queue, leaseMs, options, each, payloads } = batch;
    const producer = this.session.clientId;
    if (payloads.length === 1) { // never each: a batch of one shares its options
      const frames = message('PUT', producer, first, queue, leaseMs, payloads[0]);
      if (options) frames.push(options);
      this.sendMessage(first, 1, frames, payloads[0].length);
    } else if (each) {
      const items = encodePutsEach(payloads, each, batch.bytes);
      const frames = message('PUTS', producer, first, payloads.length, queue, leaseMs, items, 'each');
      this.sendMessage(first, payloads.length, frames, items.length);
    } else {
      const items = encodePuts(payloads, batch.bytes);
      const frames = message('PUTS', producer, first, payloads.length, queue, leaseMs, items);
      if (options) frames.push(options); // no frame without options: brokers before 2.2 take none
      this.sendMessage(first, payloads.length, frames, items.length);
    }
  }

  // Sends a PUT or PUTS and keeps it, as sent, until it is confirmed.
  sendMessage(first, count, frames, bytes) {
    this.unconfirmed.push({ last: first + count - 1, count, bytes, frames });
    this.unconfirmedPuts += count;
    this.unconfirmedBytes += bytes;
    this.pushSend(frames);
    // Half the window in use: a confirmation now, so that it rarely fills.
    if (!this.syncing && this.unconfirmedPuts >= this.session.welcome.window / 2) this.startSync();
  }

  // The broker's address, where the session is now: a group's leader (4.16).
  get broker() {
    return this.session.broker;
  }

  pushSend(frames) {
    if (this.closed) return;
    if (!this.push) {
      this.pushBroker = this.session.broker;
      this.push = createLink('PUSH', this.pushBroker, this.linkOptions);
    }
    // A put lost on the way is found by SYNC (LOST) and sent again.
    this.push.send(frames);
  }

  // After a new HELLO (the broker restarted, or a new leader of its group
  // answered, 4.16): a PUSH to where the broker no longer is (a replica
  // that does not lead drops puts) is replaced, and every unconfirmed
  // message goes again.
  rejoined() {
    if (this.push && this.pushBroker.router !== this.session.broker.router) {
      this.push.close();
      this.push = null;
    }
    this.resend();
  }

  // Every unconfirmed message again, oldest first, with its seqs (the
  // broker drops those it has); a SYNC follows.
  resend() {
    for (const sent of this.unconfirmed) this.pushSend(sent.frames);
  }

  startSync() {
    this.sendBatch(); // which may start a sync itself, when half the window is in use
    if (this.syncing) return;
    this.syncing = this.sync().then(() => {
      this.syncing = null;
      this.admit();
    }, (error) => {
      this.syncing = null;
      for (const put of this.waiting.splice(0)) put.reject(error);
      throw error;
    });
    this.syncing.catch(() => {}); // reported by confirm(), or to the puts waiting
  }

  // One SYNC for every put so far; its SYNCED confirms them (4.7).
  async sync() {
    const seq = this.seq;
    for (;;) {
      try {
        await this.session.request('sync', (tag) => message('SYNC', tag, this.session.clientId, seq));
        break;
      } catch (error) {
        if (!(error instanceof BrokerError)) throw error;
        if (error.code === 403) {
          // This client may not put (its roles): the broker takes none of these.
          this.refuse(this.confirmed + 1, seq, error);
          break;
        }
        if (error.code !== 410) throw error;
        this.resend(); // puts were lost on the way
      }
    }
    this.confirmed = Math.max(this.confirmed, seq);
    while (this.unconfirmed.length && this.unconfirmed[0].last <= seq) {
      const sent = this.unconfirmed.shift();
      this.unconfirmedPuts -= sent.count;
      this.unconfirmedBytes -= sent.bytes;
    }
    this.held = null;
  }

  async confirm(seq) {
    while (this.confirmed < seq) {
      if (!this.syncing) this.startSync();
      await this.syncing;
    }
  }

  // Resolves once put seq is confirmed; rejects with its refusal.
  async confirmPut(seq) {
    this.awaited.add(seq);
    try {
      await this.confirm(seq);
    } finally {
      this.awaited.delete(seq);
    }
    const error = this.refused.get(seq);
    if (error) {
      this.refused.delete(seq);
      throw error;
    }
  }

  // Resolves once every put is confirmed; rejects with the first refusal
  // that no put() reports.
  async flush() {
    const seq = this.seq;
    await this.confirm(seq);
    let first = null;
    for (const [refusedSeq, error] of this.refused) {
      if (refusedSeq > seq || this.awaited.has(refusedSeq)) continue;
      this.refused.delete(refusedSeq);
      first = first || error;
    }
    if (first) throw first;
  }

  onMessage(command, fields) {
    if (command === 'HELD' && fields.length === 4) {
      this.held = fields[3].toString();
      this.onHeld(this.held);
    } else if (command === 'ERROR') {
      this.onPutError(BrokerError.fromFields(fields));
    }
  }

  // An ERROR about puts has no tag and names their seqs, "7" or "7-70" (4.1).
  onPutError(error) {
    const range = /^(\d+)(?:-(\d+))?$/.exec(error.subject);
    if (error.tag || !range) {
      this.onError(error);
      return;
    }
    this.refuse(Number(range[1]), Number(range[2] || range[1]), error);
  }

  // Records the refusal of puts first to last, but of none already
  // confirmed (or refused): each is reported once.
  refuse(first, last, error) {
    for (let seq = Math.max(first, this.confirmed + 1); seq <= Math.min(last, this.seq); seq++) {
      if (!this.refused.has(seq)) this.refused.set(seq, error);
    }
  }

  async close() {
    this.closed = true;
    for (const put of this.waiting.splice(0)) put.reject(new Error('queue client is closed'));
    await this.session.close();
    if (this.push) this.push.close();
  }
}

module.exports = { Producer };
