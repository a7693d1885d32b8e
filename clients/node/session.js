'use strict';
// One DEALER and the session it holds with the broker (PROTOCOL.md 4.2):
// HELLO, replies and errors matched to requests by tag, heartbeats answered,
// and saying HELLO again when the broker restarts or falls silent. A broker
// that is a group of replicas (4.16) is followed to its leader: a 421 names
// it (or an election is under way: the next replica is tried), and a leader
// gone is looked for at each replica in turn.
const { createLink, probe } = require('./link');
const {
  message, parse, parseAddress, parseService, BrokerError, BrokerUnreachable, KeyRefused, KeyMismatch, KeysRequired,
  NotLeader,
} = require('./protocol');

const REPLIES = new Set(['CREDITED', 'SYNCED', 'JOINED', 'TIMEOUT', 'REPORT']);
const ELECTION_WAIT_MS = 250; // between HELLOs to replicas that know no leader (4.16)

// The number a tag ends with: tags count up, so it tells when a request was sent.
const tagNumber = (tag) => Number(/\d*$/.exec(tag)[0] || -1);

// Whether two parsed addresses are the same broker's.
const samePlace = (a, b) => a.router.toLowerCase() === b.router.toLowerCase();

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

// The addresses where one shard's broker may be (PROTOCOL.md 4.16), parsed:
// the address given first, those a 421 named, and once its leader WELCOMEd,
// the group its `replicas` lists. replicated: the shard is a group (a 421
// came, or a WELCOME listed replicas): only then does a session look for its
// broker at the others when it does not answer. leader: where the latest
// WELCOME came from, shared by the shard's sessions, so that one that found
// a new leader shows the others; onLeader(address) when it moves.
class Replicas {
  constructor(addresses = [], replicated = false) {
    this.addresses = [];
    this.replicated = replicated;
    this.leader = null;
    this.onLeader = null;
    this.learn(addresses);
  }

  // Adds the addresses (parsed, or as listed: HOST:PORT) not known yet.
  learn(addresses) {
    for (const entry of addresses) {
      let address = entry;
      if (typeof entry === 'string') {
        try {
          address = parseAddress(entry);
        } catch (error) {
          continue; // not an address: nowhere to look
        }
      }
      if (!this.knows(address)) this.addresses.push(address);
    }
  }

  knows(address) {
    return this.addresses.some((known) => samePlace(known, address));
  }

  // Whether a broker that does not answer is looked for at another replica.
  get several() {
    return this.replicated && this.addresses.length > 1;
  }

  // The replica to try after the one at address: the next in the list,
  // round, or the first when address is not one.
  after(address) {
    const index = this.addresses.findIndex((known) => samePlace(known, address));
    if (index < 0) return this.addresses[0] || address;
    return this.addresses[(index + 1) % this.addresses.length];
  }

  // The leader WELCOMEd a session at address.
  ledFrom(address) {
    if (this.leader && samePlace(this.leader, address)) return;
    this.leader = address;
    if (this.onLeader) this.onLeader(address);
  }
}

class Session {
  // broker: the broker's address, parsed (protocol.parseAddress);
  // options.helloSeq(): the seq HELLO carries (4.2); options.curve: CURVE
  // socket options, or null; options.reached(): whether the broker has
  // answered this client before (then open() waits for it as a reconnect does);
  // options.replicas: where else the broker may be (a Replicas, shared by
  // the sessions of one shard); HELLO starts at its leader, once known.
  // Every HELLO asks for the service (its 4th field, PROTOCOL.md 4.15),
  // unless the broker refused that field (400: a broker before 2.2); then
  // this session says HELLO without it from then on (legacy).
  constructor(broker, clientId, options = {}) {
    this.replicas = options.replicas || new Replicas([broker]);
    this.broker = (this.replicas.replicated && this.replicas.leader) || broker; // where HELLO goes now
    this.redirects = 0; // 421s followed in a row since the last WELCOME (or a replica where nothing listens)
    this.clientId = clientId;
    this.helloSeq = options.helloSeq || (() => 0);
    this.curve = options.curve || null;
    this.reached = options.reached || (() => false);
    this.legacy = false; // the broker refused HELLO's service field: before 2.2
    this.welcome = null; // WELCOME's fields, once one came; welcome.service: { shard, brokers } or null
    this.heartbeat = 1000;
    this.generation = 0; // WELCOMEs received: a request sent in an older one is stale
    this.helloTag = -1; // number of the tag of the HELLO the latest WELCOME answered
    this.tags = 0;
    this.pending = new Map(); // tag -> { build, resolve, reject }
    this.helloWaiter = null;
    this.handshakeFailure = null; // why ZeroMQ could not connect: 'auth', a protocol error code, 'other'
    this.connectError = null; // the system's error when nothing listens there
    this.refused = false; // the link's connection failed, or was lost before a WELCOME (newLink() resets it)
    this.onMessage = () => {};
    this.onReconnect = null;
    this.onWelcome = null; // after each WELCOME, the first included
    this.onDown = null; // when the broker falls silent or drops the session: saying HELLO again
    this.onFailure = null; // (kind): a handshake failed, or nothing listens ('connect')
    this.closed = false;
    this.rehello = null;
    this.lastHeard = Date.now(); // when the broker last sent anything
    this.watchdog = null;
    this.link = this.newLink();
  }

  // The broker's ROUTER endpoint.
  get endpoint() {
    return this.broker.router;
  }

  newLink() {
    this.refused = false;
    const link = createLink('DEALER', this.broker, {
      curve: this.curve,
      onMessage: (frames) => this.receive(frames),
      onFailure: (kind, error) => this.handshakeFailed(kind, error),
      onLost: () => this.connectionLost(link),
      onRefused: () => this.connectRefused(link),
    });
    return link;
  }

  // The link's connection was lost. A group's leader whose process died
  // (its host closed the connection) is silent at once, and the group has
  // another leader within an election time-out (4.16): HELLO goes to the
  // next replica now, not after three heartbeats. A broker alone is left to
  // its heartbeats: libzmq connects again by itself to one restarting. A
  // replica asked again that died as it was asked (it took the connection
  // in) is passed over as one where nothing listens.
  connectionLost(link) {
    if (link !== this.link) return;
    if (this.generation && !this.rehello && !this.closed && this.replicas.several) this.reconnect(true);
    else this.connectRefused(link);
  }

  // Nothing listens where the link connects (or its connection was lost
  // before a WELCOME): a HELLO said again to a replica (passOver) ends now,
  // not after its wait.
  connectRefused(link) {
    if (link !== this.link) return;
    this.refused = true;
    if (this.helloWaiter && this.helloWaiter.passOver) this.helloWaiter.resolve(false);
  }

  nextTag(kind) {
    this.tags += 1;
    return `${kind}${this.tags}`;
  }

  // Sends a message; one lost (the link was replaced or closed) is covered
  // by sending again after HELLO.
  send(frames) {
    return this.link.send(frames);
  }

  // A fresh link, so that unanswered HELLOs do not pile up (and one that a
  // broker took in as it died is not waited for).
  replaceLink() {
    const old = this.link;
    this.link = this.newLink();
    old.close();
  }

  // Says HELLO until the broker answers (WELCOME), again every second or
  // so on a fresh link: one said to a broker that then died (restarted) is
  // never answered. Rejects with why after timeoutMs, or at once when the
  // handshake failed for good, unless the broker has answered this client
  // before (reached()): then it is restarting, and open() waits for it, as
  // a session already open would (reconnect()), until closed.
  async open(timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    // libzmq retries quietly where nothing listens: without a WELCOME in
    // 100 ms, one plain connection asks the system why.
    const probing = setTimeout(() => {
      if (this.generation || this.closed) return;
      probe(this.broker).then((error) => {
        if (error && !this.generation && !this.closed) this.handshakeFailed('connect', error);
      });
    }, 100);
    probing.unref();
    this.watch();
    let notLed = null; // the latest 421: no leader answered yet
    try {
      for (;;) {
        const left = deadline - Date.now();
        if (left <= 0 && !this.reached()) throw this.noLeader(notLed);
        const wait = this.reached() ? this.retryMs() : Math.min(left, this.retryMs());
        try {
          if (await this.hello(wait, true)) return;
        } catch (error) {
          if (!(error instanceof NotLeader)) throw error;
          // A replica that does not lead (4.16): to the leader it names,
          // or, during an election, to the next replica a moment later.
          notLed = error;
          await this.follow(error);
          continue;
        }
        if (this.closed) throw new Error('queue client is closed');
        notLed = null;
        if (this.replicas.several && !this.keyFailure()) {
          this.moveTo(this.replicas.after(this.broker)); // a replica down: the next
        } else {
          if (this.failedForGood() && !this.reached()) throw this.unreachable();
          this.replaceLink();
        }
      }
    } catch (error) {
      clearTimeout(probing);
      await this.close(false);
      throw error;
    }
  }

  // How long one HELLO is given before it is said again.
  retryMs() {
    return Math.max(1000, this.heartbeat);
  }

  // A ZAP refusal, a mechanism mismatch or nothing listening will not
  // change by waiting.
  failedForGood() {
    return Boolean(this.connectError || this.keyFailure());
  }

  // A handshake failed for the keys: every replica will say the same.
  keyFailure() {
    return Boolean(this.handshakeFailure && this.handshakeFailure !== 'other');
  }

  // Why open() found no WELCOME in time; for a group of replicas, naming
  // them, and what the one tried last said (notLed: its 421, if it was one).
  noLeader(notLed) {
    if (!this.replicas.replicated) return this.unreachable();
    const group = this.replicas.addresses.map((address) => address.address).join(', ');
    const latest = notLed || this.unreachable();
    return new BrokerUnreachable(`no leader of the replicas ${group} answered in time (the latest: ${latest.message})`,
      { address: this.broker.address, cause: latest });
  }

  // The next HELLO goes to the replica at address (it may be where this
  // session is), on a new link.
  moveTo(address) {
    if (!samePlace(address, this.broker)) {
      this.broker = address;
      this.connectError = null; // both were about the other replica
      this.handshakeFailure = null;
    }
    this.replaceLink();
  }

  // A 421: the next HELLO goes to the leader it names, at once (after a
  // moment when 421s keep naming others: no loop runs hot); with none named
  // (an election), after a moment, to the next replica known.
  async follow(error) {
    this.replicas.replicated = true;
    let leader = null;
    if (error.leader) {
      try {
        leader = parseAddress(error.leader);
      } catch (bad) {
        console.error(`asyncq: ${this.clientId}: the replica at '${this.broker.address}' names '${error.leader}' as its leader: ${bad.message}`);
      }
    }
    this.redirects += 1;
    if (!leader || samePlace(leader, this.broker) || this.redirects > 2) await sleep(ELECTION_WAIT_MS);
    if (this.closed) return;
    if (leader) {
      this.replicas.learn([leader]);
      this.moveTo(leader);
    } else {
      this.moveTo(this.replicas.after(this.broker));
    }
  }

  // Every heartbeat interval: a broker silent for three of them restarted
  // or went away (4.9), and is greeted again.
  watch() {
    this.watchdog = setTimeout(() => {
      if (this.closed) return;
      if (this.generation && !this.rehello && Date.now() - this.lastHeard > 3 * this.heartbeat) this.reconnect(true);
      this.watch();
    }, this.heartbeat);
    this.watchdog.unref();
  }

  // Resolves true on WELCOME, false after timeoutMs (or, if failFast, once
  // the handshake has failed for good; if passOver, once nothing listens
  // there); rejects with the BrokerError that answered.
  hello(timeoutMs, failFast = false, passOver = false) {
    const tag = this.nextTag('hello');
    return new Promise((resolve, reject) => {
      const settle = (callback) => (value) => {
        clearTimeout(timer);
        this.helloWaiter = null;
        callback(value);
      };
      const timer = setTimeout(settle(resolve), timeoutMs, false);
      if (this.helloWaiter) this.helloWaiter.resolve(false); // not answered: superseded
      this.helloWaiter = {
        tag, failFast, passOver, withService: !this.legacy, resolve: settle(resolve), reject: settle(reject),
      };
      this.sendHello();
      if (passOver && this.refused) this.helloWaiter.resolve(false);
    });
  }

  // HELLO for the waiter, with the service field unless the broker is
  // older than 2.2.
  sendHello() {
    const fields = [this.helloWaiter.tag, this.clientId, this.helloSeq()];
    if (this.helloWaiter.withService) fields.push('service');
    this.send(message('HELLO', ...fields));
  }

  handshakeFailed(kind, error) {
    if (kind === 'connect') {
      this.connectError = error;
    } else if (kind !== 'other' || !this.handshakeFailure) {
      // 'other' (the connection broke during the handshake) says least.
      this.handshakeFailure = kind;
    }
    // A ZAP refusal, a mechanism mismatch or nothing listening will not
    // change by waiting (but a broker that answered before is restarting).
    if (kind !== 'other' && this.helloWaiter && this.helloWaiter.failFast && !this.reached()) {
      this.helloWaiter.resolve(false);
    }
    if (this.onFailure) this.onFailure(kind);
  }

  // Why HELLO got no answer (PROTOCOL.md 7). A broken handshake ('other')
  // is also how a broker without keys turns away other hosts.
  unreachable() {
    const failure = this.handshakeFailure;
    const { address } = this.broker;
    const where = `the broker at '${address}'`;
    const options = { address };
    const mechanism = failure === 'ERR_ZMTP_MECHANISM_MISMATCH'; // one side uses CURVE, the other not
    if (failure === 'auth') return new KeyRefused(`${where} refused this client's key`, options);
    if (mechanism && !this.curve) {
      return new KeysRequired(`${where} requires keys: give curveSecret and serverKey `
        + '(or ASYNCQ_CURVE_SECRET and ASYNCQ_SERVER_KEY)', options);
    }
    if (mechanism) return new KeyMismatch(`${where} uses no keys (CURVE)`, options);
    if (failure && !this.curve) {
      return new KeysRequired(`${where} broke off the handshake: it requires keys, `
        + 'or it has none and takes connections only from its own host', options);
    }
    if (failure) {
      return new KeyMismatch(`${where} failed the CURVE handshake: its key does not match serverKey, or it uses no keys`,
        options);
    }
    const error = this.connectError;
    if (error) {
      const why = error.code === 'ECONNREFUSED' || error.code === 'ENOENT' ? ' (is the broker running?)' : '';
      const socket = this.broker.path !== undefined ? `${this.broker.path}.router` : `port ${this.broker.port + 1}`;
      return new BrokerUnreachable(`cannot connect to ${where} (its ROUTER socket, ${socket}): ${error.message}${why}`,
        { ...options, cause: error });
    }
    return new BrokerUnreachable(`no answer from ${where}`, options);
  }

  // Says HELLO again (until the broker answers, or this session is
  // closed); the WELCOME restores the owner's state (rejoined()). gone: the
  // broker fell silent or its connection was lost, so a group's next
  // replica is asked first (it names the leader, or leads).
  reconnect(gone = false) {
    if (!this.rehello && !this.closed) {
      if (this.onDown) this.onDown();
      this.rehello = (async () => {
        const { leader } = this.replicas;
        // Another session of this shard found the leader there.
        if (this.replicas.replicated && leader && !samePlace(leader, this.broker)) this.moveTo(leader);
        else if (gone && this.replicas.several) this.moveTo(this.replicas.after(this.broker));
        while (!this.closed && !(await this.helloAgain()));
      })().finally(() => {
        this.rehello = null;
      });
    }
    return this.rehello || Promise.resolve();
  }

  // A WELCOME to a HELLO said again, as it is read: the owner restores its
  // state (drops the old session's deliveries) before any message of the
  // new session is read, then the requests sent before that HELLO (to a
  // broker that has no session for them) go again, after what the owner
  // sent anew.
  rejoined() {
    const stale = [...this.pending].filter(([tag]) => tagNumber(tag) < this.helloTag);
    if (this.onReconnect) this.onReconnect();
    for (const [, entry] of stale) this.send(entry.build());
  }

  // One more HELLO, given a second or so (4.2); without a WELCOME, the next
  // is said on a new link, to the next replica when the broker is a group
  // (4.16). A 421 is followed. A replica where nothing listens (a leader
  // just gone, that its followers still name) is passed over after a
  // moment, not after the whole wait.
  async helloAgain() {
    const { several } = this.replicas;
    try {
      if (await this.hello(this.retryMs(), false, several)) return true;
      // Nothing listens there: the next replica, after a moment (no loop
      // runs hot while none listens), and the 421 that named this one is
      // followed at once (the moment was waited).
      if (several && this.refused && !this.closed) {
        await sleep(ELECTION_WAIT_MS);
        this.redirects = 0;
      }
    } catch (error) {
      if (error instanceof NotLeader) {
        await this.follow(error);
        return false;
      }
      // Refused (a client id held by another key): retried, not in a tight loop.
      console.error(`asyncq: ${this.clientId}: ${error.message}`);
      await sleep(this.retryMs());
    }
    if (this.closed) return false; // never a link made after close()
    if (several) this.moveTo(this.replicas.after(this.broker));
    else this.replaceLink();
    return false;
  }

  // Sends build(tag) and resolves with the reply with that tag, { command,
  // fields }; rejects with the BrokerError about it. Sent again after a
  // reconnect, so build must give the request as it should be then.
  async request(kind, build) {
    const tag = this.nextTag(kind);
    for (;;) {
      if (this.closed) throw new Error('queue client is closed');
      const generation = this.generation;
      try {
        return await new Promise((resolve, reject) => {
          this.pending.set(tag, { build: () => build(tag), resolve, reject });
          this.send(build(tag));
        });
      } catch (error) {
        if (!(error instanceof BrokerError) || error.code !== 412) throw error;
        // The broker has no session for us; unless we said HELLO since this
        // was sent (then it is stale), say HELLO again. Then send it again.
        if (generation === this.generation) await this.reconnect();
      } finally {
        this.pending.delete(tag);
      }
    }
  }

  // Settles the request with this tag; false if none waits for it.
  settle(tag, outcome, value) {
    const entry = this.pending.get(tag);
    if (!entry) return false;
    this.pending.delete(tag);
    entry[outcome](value);
    return true;
  }

  receive(frames) {
    this.lastHeard = Date.now();
    const parsed = parse(frames);
    if (parsed) this.dispatch(parsed.command, parsed.fields);
  }

  dispatch(command, fields) {
    const tag = fields.length ? fields[0].toString() : '';
    if (command === 'HEARTBEAT') {
      // Answered as it is read: the broker learns that we read what it sends (4.9).
      this.send(message('HEARTBEAT', ...fields));
    } else if (command === 'WELCOME') {
      if (this.helloWaiter && tag === this.helloWaiter.tag && (fields.length === 9 || fields.length === 10)) {
        this.welcomed(fields);
      }
    } else if (REPLIES.has(command)) {
      this.settle(tag, 'resolve', { command, fields });
    } else if (command === 'ERROR') {
      this.onError(BrokerError.fromFields(fields), fields);
    } else {
      this.onMessage(command, fields);
    }
  }

  welcomed(fields) {
    const [, brokerId, maxItem, heartbeatMs, maxBatch, window, windowBytes, roles, persistence] = fields.map(String);
    this.welcome = {
      brokerId,
      maxItem: Number(maxItem),
      heartbeatMs: Number(heartbeatMs),
      maxBatch: Math.max(Number(maxBatch), 1),
      window: Math.max(Number(window), 1),
      windowBytes: Number(windowBytes),
      roles: roles ? roles.split(',') : [],
      persistence,
      // The service (4.15): this broker's shard and every broker's address;
      // null from a broker before 2.2 (shard 0, alone).
      service: fields.length === 10 ? parseService(fields[9]) : null,
    };
    this.heartbeat = Math.max(this.welcome.heartbeatMs, 10);
    this.lastHeard = Date.now();
    this.redirects = 0;
    if (this.welcome.service && this.welcome.service.replicas.length) {
      this.replicas.replicated = true;
      this.replicas.learn(this.welcome.service.replicas);
    }
    if (this.replicas.replicated) this.replicas.ledFrom(this.broker);
    this.generation += 1;
    this.helloTag = tagNumber(this.helloWaiter.tag);
    this.helloWaiter.resolve(true);
    if (this.generation > 1) this.rejoined();
    if (this.onWelcome) this.onWelcome(this.welcome);
  }

  onError(error, fields) {
    if (this.helloWaiter && error.tag === this.helloWaiter.tag && error.code === 400 && this.helloWaiter.withService) {
      // A broker before 2.2 takes no 4th field: HELLO again without it,
      // for the same waiter; the broker is then shard 0, alone (4.15).
      this.legacy = true;
      this.helloWaiter.withService = false;
      this.helloWaiter.tag = this.nextTag('hello');
      this.sendHello();
    } else if (this.helloWaiter && error.tag === this.helloWaiter.tag) {
      this.helloWaiter.reject(error);
    } else if (error instanceof NotLeader) {
      // About an older HELLO: the one said since is answered on its own.
    } else if (!this.settle(error.tag, 'reject', error)) {
      if (error.code !== 412) this.onMessage('ERROR', fields);
      // About a message sent without a session (the broker restarted, or
      // dropped us); one sent before our latest HELLO is stale.
      else if (this.generation && !this.rehello && tagNumber(error.tag) > this.helloTag) this.reconnect();
    }
  }

  async close(bye = true) {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.watchdog);
    if (this.helloWaiter) this.helloWaiter.resolve(false); // an open() or reconnect() ends now
    for (const entry of this.pending.values()) entry.reject(new Error('queue client is closed'));
    if (bye && this.generation) {
      // Items this session holds go back to the queue at once.
      this.send(message('BYE', this.nextTag('bye')));
      await this.link.close(1000);
    } else {
      await this.link.close(0);
    }
  }
}

module.exports = { Session, Replicas };
