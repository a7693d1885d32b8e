'use strict';
// The consumer side (PROTOCOL.md 4.3 to 4.5): a session of its own for the
// consumed queue with each broker of the service (4.15), CREDIT confirmed by
// CREDITED, deliveries as ITEM or ITEMS, and the acks of one tick in one ACK
// to each broker that delivered what they ack.
//
// Credit follows the getters, as asyncio.Queue does (N getters hold at most
// N items): the credit is the items held (got, not yet acked or nacked) plus
// the get() calls waiting plus prefetch (items sent ahead). It is worked out
// at most once per event-loop turn, with the acks, and sent only when it
// changed: a steady pool of workers sends none.
//
// With several brokers (lanes) it is shared out so that the sum of what
// the brokers may send never exceeds it: each lane's credit is the items it
// delivered and that are still held, plus the part of the rest (the credit
// for items to come) assigned to it. A broker that has items nobody takes
// while this consumer's credit sits at another says READY (CREDIT asks for
// it); the credit then moves: lowered at the other broker, and raised here
// once that broker's CREDITED says the lowering is in force (items it sent
// before come first, and count as held).
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

// The consumer's session with one broker, and the credit it holds there.
class Lane {
  // address: the broker's, parsed; options: { clientId, label, member,
  // curve, reached, now (the broker answered this client: open it before
  // the consumer is said to be open) }.
  constructor(consumer, address, options) {
    this.address = address;
    this.label = options.label || address.address;
    this.member = options.member || null; // the service's record of this broker (service.js)
    this.now = options.now !== false;
    this.session = new Session(address, options.clientId, {
      curve: options.curve,
      reached: options.reached,
      replicas: this.member ? this.member.replicas : undefined, // its shard's (4.16): starts at its leader
    });
    this.session.onMessage = (command, fields) => consumer.onMessage(command, fields, this);
    this.session.onReconnect = () => consumer.rejoin(this);
    this.session.onDown = () => consumer.laneDown(this);
    this.batch = 0; // most items per ITEMS asked for
    this.opened = false; // welcomed, and its first CREDIT sent
    this.credit = null; // the credit last sent; null: none in force
    this.refused = false; // its CREDIT was refused (429): sent again by the next get()
    this.inForce = 0; // the credit the broker confirmed last (CREDITED)
    this.inFlight = new Map(); // tag -> credit sent and not yet confirmed
    this.held = 0; // items this session delivered, not yet acked or nacked (got or not)
    this.assigned = 0; // its share of the credit for items to come (several lanes)
    this.ready = false; // READY came: the broker has items for a consumer with room
    this.lastDelivery = 0; // when it last delivered, counting deliveries
    this.granted = 0; // when it was last given credit for items to come, counting grants
    this.shutDown = null; // the QueueShutDown this broker sent: the queue is shut down and empty here
    this.creditWithdrawn = false; // 408: 3 leases expired in a row, nothing comes until CREDIT
    this.acks = []; // ids acked, to go out in one ACK
  }

  // Whether the broker has this session now.
  get up() {
    const { session } = this;
    return this.opened && session.generation > 0 && !session.rehello && !session.closed;
  }

  // How many more items the broker may send now: what the credit in force,
  // or one on its way, allows beyond the items held. None from a broker
  // this session lost (a new one starts with no credit), nor from a queue
  // shut down and empty there.
  get loose() {
    if (!this.up || this.shutDown || this.creditWithdrawn) return 0;
    return Math.max(0, Math.max(this.inForce, ...this.inFlight.values()) - this.held);
  }

  // Whether a CREDIT that raises the credit here is on its way: the broker
  // has not had the chance to use it yet.
  get raising() {
    for (const credit of this.inFlight.values()) if (credit > this.inForce) return true;
    return false;
  }
}

class Consumer {
  // broker: the parsed address of the one broker, or the brokers of the
  // service: [{ address, clientId, label, member, now }] (then clientId is
  // unused); options: { prefetch, curve, reached(), opening() (get() calls
  // waiting for this consumer to open), priorities (every CREDIT asks that
  // deliveries carry their priority), batch (most items per ITEMS; 0: one
  // ITEM per item; default the broker's max-batch) }.
  constructor(broker, clientId, queue, options = {}) {
    const brokers = Array.isArray(broker) ? broker : [{ address: broker, clientId }];
    this.lanes = brokers.map((entry) => new Lane(this, entry.address, {
      ...entry, curve: options.curve, reached: options.reached,
    }));
    this.sharing = this.lanes.length > 1; // the credit is shared out among brokers
    this.queue = queue;
    this.prefetch = options.prefetch || 0;
    this.opening = options.opening || (() => 0);
    this.priorities = Boolean(options.priorities);
    this.batchWanted = options.batch; // undefined: the broker's max-batch
    this.delivered = []; // items not yet got
    this.laneOf = new WeakMap(); // item delivered -> its lane
    this.getters = []; // { resolve, reject } of get() calls waiting
    this.taken = new Map(); // id -> { item, frame, lane } got, not taskDone
    this.stale = new Map(); // the same, from a session the broker has ended: their acks are not sent
    // The QueueShutDown error, once the queue is shut down and empty, or
    // deleted, at every broker: no CREDIT is sent until a get() or reopen()
    // finds it open again (a CREDIT would make a deleted queue anew).
    this.shutDown = null;
    this.deliveries = 0;
    this.turn = Math.floor(Math.random() * this.lanes.length); // where credit goes when no broker says where
    this.flushing = false; // a flush of acks and credit is due this turn
    this.closed = false;
    this.onError = () => {};
  }

  // The session with the first broker (the only one, unless the service
  // has several).
  get session() {
    return this.lanes[0].session;
  }

  // The credit sent to the brokers, summed; null while none is in force.
  get credit() {
    const sent = this.lanes.filter((lane) => lane.credit !== null);
    return sent.length ? sent.reduce((sum, lane) => sum + lane.credit, 0) : null;
  }

  // What the credit should be now, all brokers together.
  wantedCredit() {
    return this.taken.size + this.getters.length + this.opening() + this.prefetch;
  }

  // The credit for items to come: what the getters waiting, those opening
  // and prefetch still want, beyond the items delivered and not yet got.
  freeCredit() {
    return Math.max(0, this.getters.length + this.opening() + this.prefetch - this.delivered.length);
  }

  // The lane of the service's member (service.js), if any.
  laneFor(member) {
    return this.lanes.find((lane) => lane.member === member) || null;
  }

  // Opens the session with every broker that has answered this client (the
  // others as they come up) and sends each its CREDIT.
  // With none up now (restarting), waits for the first that comes back.
  async open(timeoutMs) {
    const now = this.lanes.filter((lane) => lane.now);
    if (!now.length && this.lanes.length === 1) {
      await this.openLane(this.lanes[0], timeoutMs);
      return;
    }
    const later = this.lanes.filter((lane) => !lane.now).map((lane) => this.openLane(lane, timeoutMs));
    for (const opening of later) opening.catch(() => {}); // waits for its broker: until closed
    if (now.length) {
      await Promise.all(now.map((lane) => this.openLane(lane, timeoutMs)));
    } else {
      await Promise.any(later).catch((error) => {
        throw error.errors ? error.errors[0] : error;
      });
    }
  }

  async openLane(lane, timeoutMs) {
    await lane.session.open(timeoutMs);
    const { maxBatch } = lane.session.welcome;
    lane.batch = this.batchWanted === undefined ? maxBatch : Math.min(this.batchWanted, maxBatch);
    lane.opened = true;
    try {
      await this.announceCredit(lane);
    } catch (error) {
      if (this.sharing && !this.closed) {
        this.creditRefused(error, lane);
        return;
      }
      lane.opened = false;
      await lane.session.close(); // the next get() tries again
      throw error;
    }
    if (this.sharing) this.schedule();
  }

  // What lane's CREDIT says now: the whole credit with one broker; with
  // several, the items it delivered and that are still held, plus its share.
  creditFor(lane) {
    return this.sharing ? lane.held + lane.assigned : this.wantedCredit();
  }

  // CREDIT, resolved by CREDITED: a consumer that has it and no item knows
  // the queue is empty, not that its request was lost (4.3). The credit is
  // worked out as it is sent, and again if it is sent again after a reconnect.
  // A consumer that wants priorities says so in every CREDIT (the broker
  // keeps what the latest said); one sharing its credit among brokers asks
  // for READY (4.15) in every CREDIT to a broker of 2.2 or later; one that
  // asks neither sends the 4 fields a broker before 2.2 takes.
  announceCredit(lane = this.lanes[0]) {
    return lane.session.request('credit', (tag) => {
      const credit = this.creditFor(lane);
      lane.credit = credit;
      lane.refused = false;
      lane.inFlight.set(tag, credit);
      const fields = [tag, this.queue, credit, lane.batch];
      const words = [];
      if (this.priorities) words.push('priority');
      if (this.sharing && !lane.session.legacy) words.push('ready');
      if (words.length) fields.push(words.join(' '));
      return message('CREDIT', ...fields);
    }).then((reply) => {
      const [tag, , credit] = reply.fields.map(String);
      lane.inFlight.delete(tag);
      lane.inForce = Number(credit);
      if (this.sharing) this.schedule(); // a lowering in force: the credit may move
      return reply;
    }, (error) => {
      if (error instanceof BrokerError) lane.inFlight.delete(error.tag);
      throw error;
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
    if (this.closed) return;
    if (this.sharing) {
      this.shareCredit();
      return;
    }
    const lane = this.lanes[0];
    if (this.shutDown || lane.creditWithdrawn || lane.credit === null) return;
    if (this.wantedCredit() === lane.credit) return;
    this.announceCredit(lane).catch((error) => this.creditRefused(error, lane));
  }

  // Shares the credit for items to come out among the brokers (4.15):
  // first to those that said READY (the one given credit least lately
  // first), taken from those that did not (they have no item for it, or
  // they would have used it), unless a raise there is still on its way;
  // else where it is, else to the broker that delivered last, else to the
  // next in turn. A lowering goes out at once; a raise only as far as the
  // credit the other brokers may still use (loose, until their CREDITED)
  // leaves room for.
  shareCredit() {
    if (this.shutDown) return;
    const lanes = [];
    for (const lane of this.lanes) {
      if (!lane.up || lane.shutDown || lane.creditWithdrawn) {
        lane.assigned = 0;
      } else if (lane.credit === null) {
        lane.assigned = 0;
        // Never announced in this session (a broker back), unless refused.
        if (!lane.refused) this.announceCredit(lane).catch((error) => this.creditRefused(error, lane));
      } else {
        lanes.push(lane);
      }
    }
    if (!lanes.length) return;
    // A READY is out of date once the broker has room for this consumer,
    // in force (no CREDIT on its way): an ack made some, and it uses it if
    // it has items. Not before: a lowering it said READY after, not yet
    // CREDITED, still looks like room here.
    for (const lane of lanes) if (!lane.inFlight.size && lane.inForce > lane.held) lane.ready = false;
    const free = this.freeCredit();
    const target = new Map(lanes.map((lane) => [lane, lane.assigned]));
    const ready = lanes.filter((lane) => lane.ready).sort((a, b) => a.granted - b.granted);
    if (ready.length) for (const lane of lanes) if (!lane.ready && !lane.raising) target.set(lane, 0);
    let total = lanes.reduce((sum, lane) => sum + target.get(lane), 0);
    // Too much: taken back from those that delivered least lately.
    const byUse = [...lanes].sort((a, b) => a.lastDelivery - b.lastDelivery);
    for (const lane of byUse) {
      if (total <= free) break;
      const cut = Math.min(target.get(lane), total - free);
      target.set(lane, target.get(lane) - cut);
      total -= cut;
    }
    // Too little: to those with items (READY), else where it is, else to
    // the broker that delivered last, else to the next in turn.
    if (total < free) {
      let to = ready;
      if (!to.length) to = lanes.filter((lane) => target.get(lane) > 0);
      if (!to.length) {
        const last = byUse[byUse.length - 1];
        to = [last.lastDelivery ? last : lanes[this.turn++ % lanes.length]];
      }
      for (let i = 0; total < free; i++, total++) {
        const lane = to[i % to.length];
        target.set(lane, target.get(lane) + 1);
      }
    }
    // Lowerings first, at once; then raises, within the room the others leave.
    for (const lane of lanes) {
      lane.assigned = target.get(lane);
      if (lane.held + lane.assigned < lane.credit) this.announceCredit(lane).catch((error) => this.creditRefused(error, lane));
    }
    for (const lane of lanes) {
      const wanted = lane.held + target.get(lane);
      if (wanted <= lane.credit) continue;
      const others = this.lanes.reduce((sum, other) => (other === lane ? sum : sum + other.loose), 0);
      const room = Math.max(0, Math.min(target.get(lane), free - others));
      lane.assigned = room;
      if (lane.held + room > lane.credit) {
        if (room > 0) {
          lane.ready = false; // told again after this CREDIT, if it has items still
          this.grants = (this.grants || 0) + 1;
          lane.granted = this.grants;
        }
        this.announceCredit(lane).catch((error) => this.creditRefused(error, lane));
      } else {
        lane.assigned = Math.max(0, lane.credit - lane.held); // as it is, until room is made
      }
    }
  }

  // A CREDIT answered with an ERROR: 503 is the queue shut down and empty;
  // anything else (429: over the broker's --max-credit) is told to the
  // get() calls waiting, which it would leave waiting for ever.
  creditRefused(error, lane = this.lanes[0]) {
    if (!(error instanceof BrokerError)) return; // closed meanwhile
    if (error.code === 503) {
      this.laneShutDown(lane, error);
      return;
    }
    lane.credit = null; // sent again by the next get()
    lane.refused = true;
    this.onError(error);
    for (const getter of this.getters.splice(0)) getter.reject(error);
  }

  // After a new HELLO, the old session's items are the broker's to deliver
  // again (acks of them would be answered 404); a queue still shut down
  // answers the CREDIT with 503 again. A consumer told the queue was shut
  // down sends none: the next get() asks (askAgain()).
  rejoin(lane = this.lanes[0]) {
    this.delivered = this.delivered.filter((item) => this.laneOf.get(item) !== lane);
    lane.acks = [];
    for (const [id, entry] of this.taken) {
      if (entry.lane !== lane) continue;
      this.stale.set(id, entry);
      this.taken.delete(id);
    }
    lane.held = 0;
    lane.inForce = 0;
    lane.assigned = 0;
    lane.ready = false;
    lane.creditWithdrawn = false;
    if (!lane.opened) return; // its first CREDIT follows the WELCOME (openLane())
    if (lane.shutDown) {
      lane.credit = null; // none in force in the new session
      return;
    }
    this.announceCredit(lane).catch((error) => this.creditRefused(error, lane));
    if (this.sharing) this.schedule();
  }

  // A broker fell silent or dropped the session: the credit there moves on.
  laneDown() {
    if (this.sharing) this.schedule();
  }

  // ITEM or ITEMS (with or without priorities): one not as PROTOCOL.md 4.4
  // says is dropped whole (its items come back when their leases run out).
  // READY (4.15): the broker has items that no consumer with room takes.
  onMessage(command, fields, lane = this.lanes[0]) {
    if (command === 'ITEM' || command === 'ITEMS') {
      const decoded = decodeDeliveries(command, fields);
      if (decoded) for (const delivery of decoded.deliveries) this.deliver(new Item(decoded.queue, delivery), lane);
    } else if (command === 'READY') {
      lane.ready = true;
      if (lane.shutDown) this.laneReopened(lane); // items again: the queue was reopened there
      this.schedule();
    } else if (command === 'ERROR') {
      this.onBrokerError(BrokerError.fromFields(fields), lane);
    }
  }

  // ERRORs whose subject is the queue are about this consumer as a whole.
  onBrokerError(error, lane = this.lanes[0]) {
    const aboutQueue = error.subject === this.queue;
    if (aboutQueue && error.code === 503) {
      this.laneShutDown(lane, error); // shut down and empty
      return;
    }
    // 3 leases expired in a row: nothing more comes until CREDIT again (4.5).
    if (aboutQueue && error.code === 408) {
      lane.creditWithdrawn = true;
      lane.credit = null;
      if (this.sharing) this.schedule();
    }
    this.onError(error);
  }

  // The queue is shut down and empty (or deleted) at lane's broker. Once
  // every broker has said so, get() rejects with it.
  laneShutDown(lane, error) {
    lane.shutDown = error instanceof QueueShutDown ? error : new QueueShutDown(503, 'SHUT_DOWN', '', this.queue, error.text);
    lane.assigned = 0;
    if (this.lanes.every((each) => each.shutDown)) this.shutDownNow(lane.shutDown);
    else if (this.sharing) this.schedule(); // its credit moves on
  }

  // Every get() waiting, and every later one, rejects with error once the
  // items delivered before it are got.
  shutDownNow(error) {
    this.shutDown = error instanceof QueueShutDown ? error : new QueueShutDown(503, 'SHUT_DOWN', '', this.queue, error.text);
    if (!this.delivered.length) for (const getter of this.getters.splice(0)) getter.reject(this.shutDown);
  }

  // Items from a broker that said the queue was shut down and empty: it
  // was reopened (REOPEN, 4.13) and sent them on the credit it kept (or
  // said READY). The notice is out of date.
  laneReopened(lane) {
    lane.shutDown = null;
    if (this.shutDown) this.shutDown = null;
    this.schedule();
  }

  deliver(item, lane = this.lanes[0]) {
    lane.held += 1;
    this.deliveries += 1;
    lane.lastDelivery = this.deliveries;
    this.laneOf.set(item, lane);
    if (lane.shutDown || this.shutDown) this.laneReopened(lane);
    const getter = this.getters.shift();
    if (getter) getter.resolve(item);
    else this.delivered.push(item);
  }

  // The queue takes puts again (reopened, or made anew after a DELETE): the
  // notice that it was shut down is forgotten and the credit said again (a
  // consumer told sends CREDIT again, PROTOCOL.md 4.13), so that get()
  // waits for items again. lanes: the brokers where it is so (default: all).
  resume(lanes = this.lanes) {
    let resumed = false;
    for (const lane of lanes) {
      if (!lane.shutDown) continue;
      lane.shutDown = null;
      if (lane.credit !== null) lane.credit = -1; // sent again this turn (null: by the next get())
      resumed = true;
    }
    if (!resumed && !this.shutDown) return;
    this.shutDown = null;
    this.schedule();
  }

  // For a get() made after every broker said the queue was shut down and
  // empty (or deleted): asks each (STATS, which makes no queue) whether
  // that still holds. Where the queue is open, or still has items,
  // resume(): the get() waits as usual (a CREDIT to a queue still shut down
  // is answered with the notice again). Else the notice stays.
  async askAgain() {
    const asked = this.lanes.filter((lane) => lane.opened && lane.shutDown);
    const open = await Promise.all(asked.map(async (lane) => {
      const { fields } = await lane.session.request('stats', (tag) => message('STATS', tag, this.queue));
      const stats = fields.length > 1 ? parseStats(fields[1].toString()) : null;
      return Boolean(stats && (stats.state === 'open' || stats.outstanding !== 0));
    }));
    const reopened = asked.filter((lane, i) => open[i]);
    if (reopened.length) this.resume(reopened);
  }

  // Records item as got by frame (null: by getNowait()).
  take(item, frame) {
    const lane = this.laneOf.get(item) || this.lanes[0];
    const before = this.taken.get(item.id);
    if (before) {
      // Delivered again (its lease ran out): the older delivery is gone.
      if (before.frame) before.frame.done();
      before.lane.held = Math.max(0, before.lane.held - 1);
    }
    this.taken.set(item.id, { item, frame, lane });
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
    const withdrawn = this.lanes.filter((lane) => lane.creditWithdrawn && lane.opened);
    if (withdrawn.length) {
      // A get() shows that this consumer reads again.
      await Promise.all(withdrawn.map((lane) => {
        lane.creditWithdrawn = false;
        return this.announceCredit(lane).catch((error) => {
          lane.creditWithdrawn = true;
          throw error;
        });
      }));
    }
    if (!this.delivered.length && this.shutDown) await this.askAgain();
    let item;
    if (this.delivered.length) item = this.delivered.shift();
    else if (this.shutDown) throw this.shutDown;
    else {
      const unsent = this.lanes.filter((lane) => lane.credit === null && lane.opened && !lane.shutDown && !this.closed);
      if (unsent.length) {
        // Refused before (429): try again with this get().
        await Promise.all(unsent.map((lane) => this.announceCredit(lane).catch((error) => {
          lane.credit = null;
          lane.refused = true;
          throw error;
        })));
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

  // Acks an item held: its entry. The ack goes to the broker that delivered it.
  ack(entry) {
    const { id } = entry.item;
    if (entry.frame) entry.frame.done();
    if (this.stale.delete(id)) return; // the broker has ended the session that held it
    this.taken.delete(id);
    const { lane } = entry;
    lane.held = Math.max(0, lane.held - 1);
    lane.acks.push(id);
    if (lane.acks.length === IDS_MAX) this.flushLane(lane);
    this.schedule();
  }

  taskDone(item) {
    this.ack(this.entry(item, 'taskDone'));
  }

  held() {
    return this.taken.size + this.stale.size;
  }

  flushAcks() {
    for (const lane of this.lanes) this.flushLane(lane);
  }

  // The acks for lane's broker, in one ACK.
  flushLane(lane) {
    if (!lane.acks.length) return;
    const ids = encodeIds(lane.acks);
    lane.acks = [];
    lane.session.send(message('ACK', lane.session.nextTag('ack'), ids));
  }

  touch(item) {
    const { item: held, lane } = this.entry(item, 'touch');
    this.flushLane(lane); // in the order they were made
    return lane.session.send(message('TOUCH', lane.session.nextTag('touch'), encodeIds([held.id])));
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
    const { lane } = entry;
    lane.held = Math.max(0, lane.held - 1);
    this.flushLane(lane);
    this.schedule();
    const tag = lane.session.nextTag('nack');
    return lane.session.send(message('NACK', tag, delayMs, cutText(reason), encodeIds([id])));
  }

  // Ends the opens still waiting for a broker (close() ends the rest).
  closeOpening() {
    for (const lane of this.lanes) if (!lane.session.generation) lane.session.close(false);
  }

  // Ends the sessions; the get() calls still waiting are rejected by
  // abandon(), once the client is closed.
  async close() {
    this.flushAcks();
    this.closed = true;
    await Promise.all(this.lanes.map((lane) => lane.session.close()));
  }

  abandon() {
    for (const entry of [...this.taken.values(), ...this.stale.values()]) if (entry.frame) entry.frame.done();
    for (const getter of this.getters.splice(0)) getter.reject(new Error('queue client is closed'));
  }
}

module.exports = { Consumer, Item };
