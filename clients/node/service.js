'use strict';
// The service this client uses (PROTOCOL.md 4.15): one broker, or several
// (shards) as one. From the addresses it is given (a host name that
// resolves to several addresses means each of them), it says HELLO with
// `service` to each and adds every broker they list, until it knows them
// all. It keeps a Producer (a session, and a PUSH once there are puts)
// with each: they carry the client's puts, joins and requests.
//
// A shard may be a group of replicas (4.16): its followers answer 421 and
// the session follows to the leader, so several addresses given of one
// group are one shard (the leader's broker-id says so: the others are
// duplicates), and a replica that does not answer is not an address given
// wrong. Each shard's Replicas are shared by its sessions. A service whose
// shards are groups lists every shard's addresses (WELCOME's `groups`):
// each of them is its shard's, and the one session of a shard not found
// yet asks them in turn until one leads to the shard's leader.
const dns = require('dns');
const net = require('net');
const { Producer } = require('./producer');
const { Replicas } = require('./session');
const {
  parseAddress, parseListed, BrokerUnreachable, ShardConflict,
} = require('./protocol');

const FIRST_TRY_MS = 1500; // what a silent one of several addresses costs (open)

// A problem with how the service is set up, which does not stop this client.
function warn(text) {
  process.emitWarning(`asyncq: ${text}`, 'AsyncqWarning');
}

// A broker of the service, as this client knows it.
class Member {
  constructor(address, label, options = {}) {
    this.address = address; // parsed (protocol.parseAddress)
    this.label = label; // as given, for messages
    this.key = address.router;
    this.index = options.index; // in the order found: its sessions' client ids end with it
    this.seed = Boolean(options.seed); // given to the client (or an address of a name given)
    this.group = options.group || null; // the name given, when it had several addresses
    // Where its broker may be (4.16): its address, and for one given, the
    // other addresses given (tried after a 421 that names no leader); once
    // its broker WELCOMEd, its group of replicas, if it is one.
    this.replicas = options.replicas || new Replicas([address]);
    this.listed = false; // a broker of the service lists it
    this.listedShard = null; // its place in such a list
    this.shard = null; // the shard it said it is
    this.brokerId = null;
    this.state = 'opening'; // 'up' once welcomed, 'failed' (nothing there), 'duplicate' (a broker known under another address)
    this.error = null; // why it failed
    this.producer = null;
    this.settled = false; // the first HELLO has an outcome (or, for a broker listed, had its time)
    this.settling = null;
    this.settle = () => {};
    this.waiters = []; // { resolve, reject } of whenUp() calls
  }

  // Whether it is part of the service: answered, or listed by one that did.
  get active() {
    return this.state === 'up' || (this.listed && this.state !== 'duplicate');
  }

  // Whether its producer's session is up now.
  get up() {
    return this.state === 'up' && this.producer !== null && this.producer.up;
  }

  // Resolves once this broker has answered this client (at once if it
  // has); rejects once the client is closed.
  whenUp() {
    if (this.state === 'up') return Promise.resolve(this);
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }
}

class Service {
  // given: the addresses as the user wrote them; seeds: them parsed
  // (protocol.parseAddresses). options: { clientId, curve, timeoutMs,
  // onHeld(queue), onError(error) (an ERROR about no request),
  // onUnreachable(error) (an address given where no broker answered and
  // that no broker of the service lists) }.
  constructor(given, seeds, options) {
    this.given = given;
    this.seeds = seeds;
    this.clientId = options.clientId;
    this.curve = options.curve;
    this.timeoutMs = options.timeoutMs;
    this.onHeld = options.onHeld || (() => {});
    this.onError = options.onError || (() => {});
    this.onUnreachable = options.onUnreachable || (() => {});
    this.members = []; // in the order found
    this.byKey = new Map(); // ROUTER endpoint -> member
    this.byShard = new Map(); // shard -> member that said it is that shard
    this.listSize = 0; // the longest list of brokers a broker gave
    this.primary = null; // the first broker that answered
    this.fatal = null; // a ShardConflict: the service cannot be used
    this.unresolved = []; // BrokerUnreachable for names given that do not resolve
    this.candidates = new Replicas(); // the addresses given, resolved
    this.grouped = new Replicas(); // every address of a group of replicas the service lists (WELCOME's groups, 4.16)
    this.opened = false; // open() has resolved
    this.closed = false;
  }

  // The brokers of the service, in the order found (those answered or
  // listed, not addresses where none answered).
  active() {
    return this.members.filter((member) => member.active);
  }

  // The number of shards: keys are spread over this many (4.15): the
  // brokers a broker lists, else (brokers without a list, given one by one)
  // those found.
  get shardCount() {
    return this.listSize || Math.max(1, this.active().length);
  }

  // The member that is shard, or will be (listed at that place); null if none.
  memberForShard(shard) {
    const said = this.byShard.get(shard);
    if (said && said.active) return said;
    return this.members.find((member) => member.active && member.shard === null && member.listedShard === shard) || null;
  }

  // The member for a key whose hash mod shardCount is index: the shard at
  // that place of the list, else the index-th broker found, by shard.
  memberForKey(index) {
    if (this.listSize) return this.memberForShard(index);
    const found = this.active().filter((member) => member.state === 'up').sort((a, b) => a.shard - b.shard);
    return found[index] || null;
  }

  // Every producer, one per broker of the service.
  producers() {
    return this.active().map((member) => member.producer).filter(Boolean);
  }

  // Finds the service: resolves once every broker known has answered, or
  // failed, or (one listed by another) had the time-out to answer (it is
  // then down: its session keeps saying HELLO). Rejects if no broker
  // answered, or with a ShardConflict.
  async open() {
    const candidates = await this.expand();
    const given = candidates.map((candidate) => candidate.address);
    this.candidates = new Replicas(given); // every address given, for keepReplicas()
    for (const candidate of candidates) {
      this.add(candidate.address, candidate.label, {
        seed: true, group: candidate.group, replicas: new Replicas([candidate.address, ...given]),
      });
    }
    // Of several addresses, one still silent FIRST_TRY_MS after it was
    // asked (its host cut off, or stopped) is not waited for once another
    // has answered: its session goes on in the background.
    for (;;) {
      const waiting = this.members.filter((member) => !member.settled);
      if (!waiting.length || this.fatal || this.closed) break;
      const left = Math.max(...waiting.map((member) => member.startedMs + FIRST_TRY_MS)) - Date.now();
      const enough = this.primary && this.members.length > 1;
      if (enough && left <= 0) break;
      let timer;
      const waits = waiting.map((member) => member.settling);
      if (enough) waits.push(new Promise((resolve) => { timer = setTimeout(resolve, left); }));
      await Promise.race(waits);
      clearTimeout(timer);
    }
    if (this.closed) throw new Error('queue client is closed');
    if (this.fatal) {
      await this.close();
      throw this.fatal;
    }
    if (!this.primary) {
      const errors = [...this.unresolved, ...this.members.map((member) => member.error).filter(Boolean)];
      await this.close();
      if (errors.length === 1) throw errors[0];
      throw new BrokerUnreachable(`no broker answered at '${this.given}': ${errors.map((error) => error.message).join('; ')}`,
        { address: this.given, cause: errors[0] });
    }
    for (const error of this.unresolved) this.onUnreachable(error);
    for (const member of this.members) {
      if (member.state !== 'failed' || member.listed) continue;
      // A name's address where no broker listens, when another of its
      // addresses has one (a broker bound to IPv4 only, for localhost): not
      // an address given wrong.
      const served = member.group && this.members.some((other) => other.group === member.group && other.state === 'up');
      // A replica of a group whose leader answered: down, or cut off, for now.
      const replica = this.members.some((other) => other.state === 'up' && other.replicas.replicated
        && other.replicas.knows(member.address));
      // An address of a shard's group, as the service lists it: its shard
      // is waited for (found, or down for now) through its one session.
      const grouped = this.grouped.knows(member.address);
      if (!served && !replica && !grouped) this.onUnreachable(member.error);
    }
    this.opened = true;
    return this.primary;
  }

  // The addresses given, each host name resolved: one that resolves to
  // several addresses stands for each of them (as IP addresses), one that
  // resolves to one is kept as the name (ZeroMQ resolves it). A name that
  // does not resolve is said at once, with the cause; it fails the open if
  // it was the only address.
  async expand() {
    const resolved = await Promise.all(this.seeds.map(async (seed) => {
      if (seed.host === undefined || net.isIP(seed.host)) return [{ address: seed, label: seed.address }];
      let found;
      try {
        found = await dns.promises.lookup(seed.host, { all: true });
      } catch (error) {
        this.unresolved.push(new BrokerUnreachable(`cannot resolve '${seed.host}', the host of the broker address `
          + `'${seed.address}': ${error.code || error.message}`, { address: seed.address, cause: error }));
        return [];
      }
      const ips = [...new Set(found.map((entry) => entry.address))];
      if (ips.length <= 1) return [{ address: seed, label: seed.address }];
      return ips.map((ip) => {
        const host = ip.includes(':') ? `[${ip}]` : ip;
        const address = parseAddress(`${host}:${seed.port}`);
        return { address, label: `${seed.address} (${ip})`, group: seed.address };
      });
    }));
    const candidates = resolved.flat();
    if (!candidates.length) {
      const [first] = this.unresolved;
      if (this.unresolved.length === 1) throw first;
      throw new BrokerUnreachable(`no address of '${this.given}' resolves: ${this.unresolved.map((e) => e.message).join('; ')}`,
        { address: this.given, cause: first });
    }
    return candidates;
  }

  // A broker at address, unless one is known there; started (HELLO) at once.
  add(address, label, options) {
    const known = this.byKey.get(address.router);
    if (known) return known;
    const member = new Member(address, label, { ...options, index: this.members.length });
    this.members.push(member);
    this.byKey.set(member.key, member);
    this.start(member);
    return member;
  }

  // The client id of member's sessions: the client's, and for a second
  // broker on, its number after a dot, so that one broker reached under
  // two addresses never has one session take another's place (4.2).
  clientIdOf(member) {
    return member.index ? `${this.clientId}.${member.index}` : this.clientId;
  }

  // Says HELLO to member with a new Producer. A broker listed by another
  // is part of the service: its session waits for it however long it
  // takes; an address given is said unreachable after the time-out.
  start(member) {
    if (member.producer) member.producer.close();
    member.state = 'opening';
    member.settled = false;
    member.startedMs = Date.now();
    member.settling = new Promise((resolve) => {
      member.settle = () => {
        member.settled = true;
        clearTimeout(member.timer);
        resolve();
      };
    });
    const producer = new Producer(member.address, this.clientIdOf(member), {
      curve: this.curve, reached: () => member.listed, replicas: member.replicas,
    });
    member.producer = producer;
    producer.onHeld = this.onHeld;
    producer.onError = this.onError;
    producer.session.onWelcome = (welcome) => this.welcomed(member, producer, welcome);
    producer.session.onFailure = (kind) => {
      if (member.listed && kind !== 'other' && member.producer === producer) member.settle(); // down, for now
    };
    member.timer = setTimeout(() => {
      if (member.listed && member.producer === producer) member.settle();
    }, this.timeoutMs);
    member.timer.unref();
    producer.open(this.timeoutMs).catch((error) => {
      if (member.producer !== producer) return; // started again meanwhile
      if (!this.closed && member.state === 'opening') {
        member.state = 'failed';
        member.error = error;
      }
      member.settle();
    });
  }

  // A WELCOME from member's broker: its shard and the brokers it lists.
  welcomed(member, producer, welcome) {
    if (member.producer !== producer || this.closed) return;
    const { service } = welcome; // null: a broker before 2.2, shard 0 alone
    const shard = service ? service.shard : 0;
    if (member.state !== 'up') {
      const same = this.members.find((other) => other !== member && other.state === 'up' && other.brokerId === welcome.brokerId);
      if (same) {
        // The same broker, reached under another address.
        member.state = 'duplicate';
        member.settle();
        setImmediate(() => producer.close());
        return;
      }
      const other = this.byShard.get(shard);
      if (other && other !== member && other.state === 'up') {
        const conflict = new ShardConflict(shard, [other.label, member.label]);
        member.state = 'duplicate';
        member.settle();
        if (!this.opened) {
          this.fatal = conflict;
        } else {
          // Found once the client was at work (a broker listed came up): it is not used.
          warn(conflict.message);
          setImmediate(() => producer.close());
        }
        return;
      }
      member.state = 'up';
      member.shard = shard;
      this.keepReplicas(member, producer.session);
      this.byShard.set(shard, member);
      if (!this.primary) this.primary = member;
      member.settle();
      for (const waiter of member.waiters.splice(0)) waiter.resolve(member);
    } else if (shard !== member.shard) {
      warn(`the broker at '${member.label}' was shard ${member.shard} and now says it is shard ${shard}`);
    }
    member.brokerId = welcome.brokerId;
    if (!service) return;
    const { groups } = service;
    this.listSize = Math.max(this.listSize, groups ? groups.length : service.brokers.length);
    if (groups) groups.forEach((entries, place) => this.addGroup(entries, place, member));
    else service.brokers.forEach((entry, place) => this.addListed(entry, place, member));
  }

  // The replicas of member's shard are those its session found, shared from
  // now on by every session of the shard: a group's (4.16) are its leader's
  // list (not the other addresses given, which a 421 naming no leader may
  // have sent it to); a broker alone's, its address.
  keepReplicas(member, session) {
    const found = session.replicas;
    const listed = session.welcome.service ? session.welcome.service.replicas : [];
    const replicas = new Replicas(found.replicated ? listed : [], found.replicated);
    replicas.learn([session.broker]);
    if (found.replicated) {
      replicas.learn(found.addresses.filter((address) => !this.candidates.knows(address)));
      replicas.leader = session.broker;
    }
    member.replicas = replicas;
    session.replicas = replicas;
  }

  // A broker listed by from's broker at place: part of the service.
  addListed(entry, place, from) {
    let address;
    try {
      address = parseListed(entry, from.address);
    } catch (error) {
      warn(`the broker at '${from.label}' lists '${entry}', which is not a broker address: ${error.message}`);
      return;
    }
    const known = this.byKey.get(address.router);
    if (!known) {
      const member = new Member(address, address.address, { index: this.members.length });
      member.listed = true;
      member.listedShard = place;
      this.members.push(member);
      this.byKey.set(member.key, member);
      this.start(member);
      return;
    }
    if (known.listedShard === null) known.listedShard = place;
    if (known.listed) return;
    known.listed = true;
    if (known.state === 'failed') this.start(known); // an address given, down for now: it is waited for
  }

  // The shard at place, as from's broker lists it in `groups` (4.16):
  // entries, its replicas' client addresses (HOST:PORT), or a broker
  // alone's one address (then as `brokers` lists it: addListed()). Each
  // address of a group is the shard's: an address given of it still being
  // asked is asked there only from now on (not at the other addresses
  // given, another shard's), and the shard has one member, whose session
  // asks every address of the group in turn (as it asks a group it has
  // seen) until one leads to the leader: the one that found the shard,
  // else one of its addresses given (asked again, at the group's
  // addresses), else one made at an address of the group.
  addGroup(entries, place, from) {
    if (entries.length === 1) {
      this.addListed(entries[0], place, from);
      return;
    }
    const addresses = [];
    for (const entry of entries) {
      try {
        addresses.push(parseAddress(entry));
      } catch (error) {
        warn(`the broker at '${from.label}' lists '${entry}' in shard ${place}'s group, which is not a replica's address: `
          + `${error.message}`);
      }
    }
    if (!addresses.length) return;
    this.grouped.learn(addresses);
    const group = new Replicas(addresses, true);
    const ours = this.members.filter((member) => member.state !== 'up' && group.knows(member.address));
    for (const member of ours) {
      if (member.state !== 'opening') continue;
      // Its session holds these Replicas: the group's, and those a 421 named.
      const { replicas } = member;
      replicas.addresses = replicas.addresses.filter((address) => group.knows(address) || !this.candidates.knows(address));
      replicas.learn(addresses);
    }
    const found = this.byShard.get(place);
    if (found && found.state === 'up') {
      if (found.listedShard === null) found.listedShard = place;
      found.listed = true;
      return;
    }
    if (ours.some((member) => member.listed && member.listedShard === place && member.state === 'opening')) return; // asked
    // An address given of the group (one still being asked started again:
    // it may have been sent to another shard's replicas), else a new one.
    const member = ours.find((m) => m.state === 'opening') || ours.find((m) => m.state === 'failed')
      || ours.find((m) => m.state === 'duplicate');
    if (member) {
      member.listed = true; // waited for, however long it takes
      member.listedShard = place;
      member.replicas = group;
      this.start(member);
      return;
    }
    const first = addresses.find((address) => !this.byKey.has(address.router)); // not a broker known under another shard
    if (!first) return;
    const added = new Member(first, first.address, { index: this.members.length, replicas: group });
    added.listed = true;
    added.listedShard = place;
    this.members.push(added);
    this.byKey.set(added.key, added);
    this.start(added);
  }

  // Ends the opens still waiting for a broker (close() ends the rest).
  closeOpening() {
    this.closed = true; // an open() still going rejects: the client is closed
    for (const member of this.members) {
      if (member.producer && !member.producer.session.generation) member.producer.session.close(false);
    }
  }

  async close() {
    this.closed = true;
    for (const member of this.members) {
      clearTimeout(member.timer);
      member.settle();
      for (const waiter of member.waiters.splice(0)) waiter.reject(new Error('queue client is closed'));
    }
    await Promise.all(this.members.map((member) => (member.producer ? member.producer.close() : null)));
  }
}

module.exports = { Service, Member };
