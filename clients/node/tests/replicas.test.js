'use strict';
// A shard that is a group of replicas (PROTOCOL.md 4.16): WELCOME's
// `replicas`, 421 NOT_LEADER followed to the leader (or, during an
// election, the next replica tried), several addresses of one group as one
// shard, and a new leader found when the old one dies or steps down, the
// unconfirmed puts sent to it again. Against a fake group on loopback
// (ROUTER and PULL sockets answering as section 4.16 says), and against
// three real replicas whose leader is killed mid-run.
const test = require('node:test');
const assert = require('node:assert');
const fs = require('fs');
const os = require('os');
const path = require('path');
const zmq = require('zeromq');
const {
  Broker, until, freeTriples,
} = require('./broker');
const {
  Queue, NotLeader, BrokerError, BrokerUnreachable,
} = require('..');
const {
  parseService, parseAddress, shardOfId, fnv1a32, message,
} = require('../protocol');
const { Session, Replicas } = require('../session');

// Waits here are on conditions; one that never comes fails the test, not hangs it.
const LIMIT = { timeout: 60000 };

// count replicas of one shard on 127.0.0.1, each a ROUTER (PORT+1) and a
// PULL (PORT), answering as PROTOCOL.md 4.16 says: the leader WELCOMEs
// (persistence `replicated`, its service field listing the replicas),
// sends HEARTBEATs, takes puts and answers SYNC once it has every seq up
// to it; the others answer HELLO with 421 naming the leader (none while
// leader is null: an election), anything else with 412, and drop puts. The
// group's log is shared: puts a leader confirmed are the next leader's;
// kill() loses those it had not.
class FakeGroup {
  static async start(count = 3, heartbeatMs = 100) {
    const group = new FakeGroup(await freeTriples(count), heartbeatMs);
    for (let index = 0; index < count; index++) {
      const router = new zmq.Router({ linger: 0 });
      await router.bind(`tcp://127.0.0.1:${group.ports[index] + 1}`);
      const pull = new zmq.Pull({ linger: 0 });
      await pull.bind(`tcp://127.0.0.1:${group.ports[index]}`);
      group.routers.push(router);
      group.pulls.push(pull);
      group.serve(index);
      group.takePuts(index);
    }
    group.beat = setInterval(() => group.heartbeat(), heartbeatMs);
    return group;
  }

  constructor(ports, heartbeatMs) {
    this.ports = ports;
    this.addresses = ports.map((port) => `127.0.0.1:${port}`);
    this.heartbeatMs = heartbeatMs;
    this.leader = 0; // the index of the leader; null: an election
    this.term = 1; // the leader's broker-id is lead-TERM
    this.holdSyncs = false; // the leader takes puts and answers no SYNC
    this.hellos = ports.map(() => []); // the answers each replica gave HELLOs
    this.puts = new Map(); // 'producer seq' -> payload: the group's log
    this.committed = new Set(); // 'producer seq' a SYNCED covered
    this.syncs = []; // { index, peer, tag, producer, seq } waiting
    this.peers = ports.map(() => new Map()); // sessions of each (the leader's)
    this.alive = ports.map(() => true);
    this.silent = new Set(); // replicas that answer nothing (a host stopped, or cut off)
    this.sending = ports.map(() => Promise.resolve()); // a socket sends one message at a time
    this.routers = [];
    this.pulls = [];
    this.beats = 0;
  }

  service() {
    return `shard=0 replicas=${this.addresses.join(',')} brokers=`;
  }

  send(index, frames) {
    this.sending[index] = this.sending[index].then(() => this.alive[index] && this.routers[index].send(frames))
      .catch(() => {});
  }

  async serve(index) {
    try {
      for await (const [peer, , command, ...fields] of this.routers[index]) this.handle(index, peer, String(command), fields);
    } catch (error) {
      // closed: down
    }
  }

  handle(index, peer, command, fields) {
    const tag = fields.length ? fields[0] : '';
    const reply = (...frames) => this.send(index, [peer, 'asyncq/2', ...frames]);
    if (command === 'HEARTBEAT' || command === 'BYE' || this.silent.has(index)) return;
    if (index !== this.leader) {
      if (command === 'HELLO') {
        this.hellos[index].push('421');
        reply('ERROR', '421', 'NOT_LEADER', tag, this.leader === null ? '' : this.addresses[this.leader], 'not the leader');
      } else {
        reply('ERROR', '412', 'NO_SESSION', tag, '', 'no session');
      }
      return;
    }
    if (command === 'HELLO') {
      this.hellos[index].push('WELCOME');
      this.peers[index].set(peer.toString('hex'), peer);
      reply('WELCOME', tag, `lead-${this.term}`, '1048576', String(this.heartbeatMs), '1024', '4096', '8388608',
        'produce,consume,admin', 'replicated', this.service());
    } else if (command === 'SYNC') {
      this.syncs.push({
        index, peer, tag, producer: String(fields[1]), seq: Number(String(fields[2])),
      });
      this.answerSyncs();
    } else if (command === 'STATS') {
      reply('REPORT', tag);
    }
  }

  async takePuts(index) {
    try {
      for await (const [, command, producer, seq, ...rest] of this.pulls[index]) {
        if (index !== this.leader) continue; // a follower drops puts
        const first = Number(String(seq));
        const payloads = [];
        if (String(command) === 'PUT') {
          payloads.push(rest[2]);
        } else {
          const [count, , , items] = rest;
          for (let at = 0, i = 0; i < Number(String(count)); i++) {
            const length = items.readUInt32BE(at);
            payloads.push(items.subarray(at + 4, at + 4 + length));
            at += 4 + length;
          }
        }
        payloads.forEach((payload, offset) => {
          const key = `${producer} ${first + offset}`;
          if (!this.puts.has(key)) this.puts.set(key, String(payload)); // a resend: once
        });
        this.answerSyncs();
      }
    } catch (error) {
      // closed: down
    }
  }

  answerSyncs() {
    if (this.holdSyncs) return;
    const waiting = this.syncs;
    this.syncs = [];
    for (const sync of waiting) {
      if (sync.index !== this.leader) continue; // a leader that stepped down forgot it
      const keys = Array.from({ length: sync.seq }, (_, i) => `${sync.producer} ${i + 1}`);
      if (keys.every((key) => this.puts.has(key))) {
        keys.forEach((key) => this.committed.add(key));
        this.send(sync.index, [sync.peer, 'asyncq/2', 'SYNCED', sync.tag, sync.producer, String(sync.seq)]);
      } else {
        this.syncs.push(sync);
      }
    }
  }

  heartbeat() {
    this.beats += 1;
    if (this.leader === null) return;
    for (const peer of this.peers[this.leader].values()) {
      this.send(this.leader, [peer, 'asyncq/2', 'HEARTBEAT', String(this.beats)]);
    }
  }

  payloads() {
    return new Set(this.puts.values());
  }

  // index leads from now on, with a new broker-id; its sessions are new.
  elect(index) {
    this.term += 1;
    this.leader = index;
    if (index !== null) this.peers[index].clear();
  }

  // index's process is gone: its sockets close, nothing answers there.
  down(index) {
    this.alive[index] = false;
    this.routers[index].close();
    this.pulls[index].close();
  }

  // The leader index dies, losing the puts it had not confirmed; successor leads.
  kill(index, successor) {
    this.down(index);
    this.puts = new Map([...this.puts].filter(([key]) => this.committed.has(key)));
    this.syncs = [];
    this.holdSyncs = false;
    this.elect(successor);
  }

  close() {
    clearInterval(this.beat);
    for (let index = 0; index < this.ports.length; index++) {
      if (this.alive[index]) this.down(index);
    }
  }
}

// Runs body(group, client) against a fake group; the Queues client(address,
// options) makes are closed after it, and the group, however body ends.
async function withGroup(body) {
  const group = await FakeGroup.start();
  const clients = [];
  const client = (address, options = {}) => {
    const q = new Queue(address, { queue: 'replicated', ...options });
    clients.push(q);
    return q;
  };
  try {
    await body(group, client);
  } finally {
    await Promise.allSettled(clients.map((q) => q.close({ timeout: 1 })));
    group.close();
  }
}

// Gets and acks items (their numbers into `received`) until stopped() says
// so; a get() that fails once stopped ends it.
async function getUntil(consumer, received, stopped) {
  while (!stopped()) {
    let item;
    try {
      item = await consumer.get();
    } catch (error) {
      if (stopped()) return;
      throw error;
    }
    received.add(Number(item.toString()));
    consumer.taskDone(item);
  }
}

test('WELCOME\'s service field with replicas, and 421 as NotLeader', () => {
  assert.deepStrictEqual(parseService('shard=0 replicas=a:5557,b:5557,c:5557 brokers='),
    { shard: 0, brokers: [], replicas: ['a:5557', 'b:5557', 'c:5557'] });
  assert.deepStrictEqual(parseService('later=x replicas=a:1 shard=1 brokers=b:2 more=y'),
    { shard: 1, brokers: ['b:2'], replicas: ['a:1'] });
  assert.deepStrictEqual(parseService('shard=2 brokers=:1,:3'), { shard: 2, brokers: [':1', ':3'], replicas: [] });
  assert.deepStrictEqual(parseService('shard=0 replicas=a:1,b:1 brokers=a:1,c:1,:9 groups=a:1|b:1,c:1|d:1|e:1,:9 later=x'), {
    shard: 0, brokers: ['a:1', 'c:1', ':9'], replicas: ['a:1', 'b:1'], groups: [['a:1', 'b:1'], ['c:1', 'd:1', 'e:1'], [':9']],
  });
  assert.strictEqual(parseService('replicas=a:1 brokers='), null);
  const election = BrokerError.fromFields(['421', 'NOT_LEADER', 'hello4', '', 'no leader'].map(Buffer.from));
  assert.ok(election instanceof NotLeader);
  assert.deepStrictEqual([election.code, election.errorName, election.tag, election.leader], [421, 'NOT_LEADER', 'hello4', null]);
});

test('a follower given alone leads to the leader', LIMIT, () => withGroup(async (group, client) => {
  group.elect(1);
  const q = client(group.addresses[2]);
  const unreachable = [];
  q.on('unreachable', (error) => unreachable.push(error));
  await q.put('x');
  assert.deepStrictEqual(q.brokers, [{ address: group.addresses[1], shard: 0, up: true }]);
  assert.deepStrictEqual(unreachable, []);
  assert.strictEqual(q.persistence, 'replicated');
  assert.deepStrictEqual(group.hellos[2], ['421']);
  assert.deepStrictEqual(group.hellos[1], ['WELCOME']);
  assert.deepStrictEqual(group.payloads(), new Set(['x']));
}));

test('every address of a group is one shard', LIMIT, () => withGroup(async (group, client) => {
  const q = client(group.addresses.join(','));
  const unreachable = [];
  q.on('unreachable', (error) => unreachable.push(error));
  for (let i = 0; i < 5; i++) await q.put(String(i), { key: `k${i}` });
  assert.deepStrictEqual(q.brokers, [{ address: group.addresses[0], shard: 0, up: true }]); // no ShardConflict
  assert.deepStrictEqual(unreachable, []);
  assert.strictEqual(q.service.shardCount, 1); // keys: one shard
  assert.deepStrictEqual(group.payloads(), new Set(['0', '1', '2', '3', '4']));
  assert.deepStrictEqual(group.hellos[1], ['421']); // sent on, once
  assert.deepStrictEqual(group.hellos[2], ['421']);
}));

test('a follower down is not an address left out', LIMIT, () => withGroup(async (group, client) => {
  group.down(2);
  const q = client(`${group.addresses[1]},${group.addresses[2]}`, { timeout: 2 });
  const unreachable = [];
  q.on('unreachable', (error) => unreachable.push(error));
  await q.put('x');
  assert.deepStrictEqual(q.brokers, [{ address: group.addresses[0], shard: 0, up: true }]);
  assert.deepStrictEqual(unreachable, []); // the leader lists it: a replica down, not a typo
}));

test('a silent replica is not waited for the whole time-out', LIMIT, () => withGroup(async (group, client) => {
  // Given every replica, one silent (its host stopped, or cut off): the
  // queue opens once the others answered and 1.5 s have passed, not after
  // the whole connect time.
  group.silent.add(2);
  const q = client(group.addresses.join(','), { timeout: 5 });
  const unreachable = [];
  q.on('unreachable', (error) => unreachable.push(error));
  const started = Date.now();
  await q.put('x');
  assert.ok(Date.now() - started < 4000, `the put took ${Date.now() - started} ms`);
  assert.deepStrictEqual(q.brokers, [{ address: group.addresses[0], shard: 0, up: true }]);
  assert.deepStrictEqual(unreachable, []); // the leader lists it: a replica, not a typo
  assert.deepStrictEqual(group.payloads(), new Set(['x']));
}));

test('during an election the next replica is tried', LIMIT, () => withGroup(async (group, client) => {
  group.leader = null;
  const q = client(group.addresses[1]);
  let done = false;
  const put = q.put('x').then(() => { done = true; });
  await until(() => group.hellos[1].length >= 2); // HELLO again after a 421 naming no leader
  assert.strictEqual(done, false);
  group.elect(2);
  await put;
  assert.deepStrictEqual(q.brokers, [{ address: group.addresses[2], shard: 0, up: true }]);
  assert.strictEqual(group.hellos[1][0], '421');
}));

test('no leader in time: BrokerUnreachable, caused by the 421', LIMIT, () => withGroup(async (group, client) => {
  group.leader = null;
  const q = client(group.addresses[0], { timeout: 1 });
  await assert.rejects(q.put('x'), (error) => error instanceof BrokerUnreachable && error.cause instanceof NotLeader
    && /no leader of the replicas/.test(error.message));
  assert.ok(group.hellos[0].length > 1); // asked again, every 250 ms
}));

test('a leader killed: its unconfirmed puts go to the next', LIMIT, () => withGroup(async (group, client) => {
  const q = client(group.addresses.join(','));
  for (let i = 0; i < 5; i++) await q.put(String(i));
  group.holdSyncs = true;
  for (let i = 5; i < 10; i++) q.send(String(i)); // taken by the leader, never confirmed
  await until(() => group.puts.size === 10);
  group.kill(0, 2);
  assert.strictEqual(group.puts.size, 5); // not committed: lost with it
  await q.flush();
  assert.deepStrictEqual(group.payloads(), new Set(Array.from({ length: 10 }, (_, i) => String(i))));
  assert.deepStrictEqual(q.brokers, [{ address: group.addresses[2], shard: 0, up: true }]);
  await q.put('after');
  assert.ok(group.payloads().has('after'));
}));

test('a leader that steps down answers 412, then 421 naming the next', LIMIT, () => withGroup(async (group, client) => {
  const q = client(group.addresses[0]);
  await q.put('first');
  group.elect(1); // 0 still runs: a follower now
  await q.put('second');
  assert.deepStrictEqual(group.payloads(), new Set(['first', 'second']));
  assert.deepStrictEqual(q.brokers, [{ address: group.addresses[1], shard: 0, up: true }]);
  assert.ok(group.hellos[0].includes('421'));
}));

// Ends every broker, then removes their data directories.
async function stopAll(brokers, dirs) {
  await Promise.all(brokers.map((broker) => broker.stop()));
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
}

// Three real replicas of one group on free ports, each with a data
// directory of its own (extra: more broker flags). stop() ends every one
// and removes the directories.
async function startReplicas(extra) {
  const ports = await freeTriples(3);
  const peers = ports.map((port) => `127.0.0.1:${port}`);
  const dirs = ports.map((_, index) => fs.mkdtempSync(path.join(os.tmpdir(), `asyncq-replica-${index + 1}-`)));
  const brokers = [];
  const stop = () => stopAll(brokers, dirs);
  try {
    for (let index = 0; index < 3; index++) {
      brokers.push(await Broker.start(['--peers', peers.join(','), '--node-id', String(index + 1), '--data-dir', dirs[index],
        ...extra], `tcp://${peers[index]}`));
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return { peers, brokers, stop };
}

test('three real replicas, the leader killed mid-run: every confirmed put delivered, join exact',
  { ...LIMIT, timeout: 120000 }, async () => {
    const { peers, brokers, stop } = await startReplicas(['--heartbeat-ms', '200', '--lease-ms', '5000']);
    const clients = [];
    let stopped = false;
    try {
      const producer = new Queue(peers.join(','), { queue: 'replicated', timeout: 10 });
      const consumer = new Queue(peers.join(','), { queue: 'replicated', timeout: 10, prefetch: 4 });
      clients.push(producer, consumer);
      const unreachable = [];
      producer.on('unreachable', (error) => unreachable.push(error));
      const count = 300;
      const confirmed = new Set();
      const received = new Set();
      let next = 0;
      const putSome = async () => {
        while (next < count) {
          const i = next++;
          await producer.put(String(i));
          confirmed.add(i);
          await new Promise((resolve) => setTimeout(resolve, 2));
        }
      };
      const putters = Array.from({ length: 4 }, putSome);
      const getters = Array.from({ length: 4 }, () => getUntil(consumer, received, () => stopped));
      await until(() => confirmed.size >= 100);
      assert.strictEqual(producer.persistence, 'replicated');
      assert.strictEqual(producer.brokers.length, 1);
      assert.deepStrictEqual(unreachable, []);
      const leader = producer.brokers[0].address;
      const killed = brokers[peers.indexOf(leader)];
      await killed.stop(); // SIGKILL
      await Promise.all(putters);
      assert.strictEqual(confirmed.size, count);
      assert.notStrictEqual(producer.brokers[0].address, leader);
      // The join covers every confirmed put: when it returns, each has been
      // acked (a getter acks in the tick it got it).
      const joined = await producer.join({ timeout: 60 });
      assert.strictEqual(joined.dead, 0);
      const missing = [...confirmed].filter((i) => !received.has(i));
      assert.deepStrictEqual(missing, [], 'joined before these were acked');
      assert.strictEqual((await producer.stats()).outstanding, 0);
      stopped = true;
      await Promise.all(clients.map((q) => q.close({ timeout: 10 })));
      await Promise.allSettled(getters);
    } finally {
      stopped = true;
      await Promise.allSettled(clients.map((q) => q.close({ timeout: 10 })));
      await stop();
    }
  });

test('three real replicas, the leader killed: left when its connection closes, not after three heartbeats',
  LIMIT, async () => {
    // Heartbeats every 5 s: the clients would call the leader silent after
    // 15 s. Its process killed closes its connections: they look for the
    // new leader at once, and an item put after the kill is delivered within
    // a few seconds (an election time-out, 0.5 to 1 s, and a hop or two).
    // One awaited put at a time, a consumer beside it; the join is exact.
    const { peers, brokers, stop } = await startReplicas(['--heartbeat-ms', '5000']);
    const clients = [];
    let stopped = false;
    try {
      const producer = new Queue(peers.join(','), { queue: 'failover', timeout: 10 });
      const consumer = new Queue(peers.join(','), { queue: 'failover', timeout: 10 });
      clients.push(producer, consumer);
      const count = 400;
      const confirmed = new Set();
      const received = new Set();
      const putter = (async () => {
        for (let i = 0; i < count; i++) {
          await producer.put(String(i));
          confirmed.add(i);
          await new Promise((resolve) => setTimeout(resolve, 2));
        }
      })();
      putter.catch(() => {}); // awaited below: a failure before then is not an unhandled rejection
      const getter = getUntil(consumer, received, () => stopped);
      await until(() => confirmed.size >= 100);
      const leader = producer.brokers[0].address;
      // Puts go one at a time, in order: this one starts after the kill.
      const after = confirmed.size + 1;
      await brokers[peers.indexOf(leader)].stop(); // SIGKILL
      const start = Date.now();
      await until(() => [...received].some((i) => i >= after));
      const failover = (Date.now() - start) / 1000;
      assert.ok(failover < 4, `an item put after the kill delivered ${failover} s after it`);
      await putter;
      assert.strictEqual(confirmed.size, count);
      assert.notStrictEqual(producer.brokers[0].address, leader);
      const joined = await producer.join({ timeout: 30 });
      assert.strictEqual(joined.dead, 0);
      assert.deepStrictEqual([...received].sort((a, b) => a - b), [...confirmed].sort((a, b) => a - b));
      stopped = true;
      await Promise.all(clients.map((q) => q.close({ timeout: 10 })));
      await Promise.allSettled([getter]);
    } finally {
      stopped = true;
      await Promise.allSettled(clients.map((q) => q.close({ timeout: 10 })));
      await stop();
    }
  });

// A service of two shards, each a group of three replicas (PROTOCOL.md
// 4.16): replica N of shard K started with --shard K, --service listing
// every shard's replicas ('A0|A1|A2,B0|B1|B2') and --node-id N, a data
// directory each. groups[K] are shard K's addresses; stop() ends every
// replica and removes the directories. A port taken before its replica
// binds it (tests run side by side: exit 3) starts them again elsewhere.
async function startGroups() {
  for (let attempt = 1; ; attempt++) {
    const ports = await freeTriples(6);
    const groups = [ports.slice(0, 3), ports.slice(3)].map((group) => group.map((port) => `127.0.0.1:${port}`));
    const service = groups.map((group) => group.join('|')).join(',');
    const dirs = [];
    const brokers = [];
    const stop = () => stopAll(brokers, dirs);
    try {
      for (let shard = 0; shard < 2; shard++) {
        for (let index = 0; index < 3; index++) {
          const dir = fs.mkdtempSync(path.join(os.tmpdir(), `asyncq-group-${shard}-${index + 1}-`));
          dirs.push(dir);
          // --lead-balance-ms 0: each lead stays where its election put it (the test names the leaders).
          brokers.push(await Broker.start(['--shard', String(shard), '--service', service, '--node-id', String(index + 1),
            '--data-dir', dir, '--lead-balance-ms', '0'], `tcp://${groups[shard][index]}`));
        }
      }
    } catch (error) {
      await stop();
      if (attempt === 5 || error.message !== 'broker exited 3') throw error;
      continue;
    }
    return { groups, brokers: [brokers.slice(0, 3), brokers.slice(3)], stop };
  }
}

// The address of the leader of the group of replicas at addresses, once
// it has one: a session says HELLO to each in turn, following 421s, until
// one WELCOMEs. settled: and once every replica holds the leader's whole
// log, an entry past the group's first ones included (a put committed
// since): each has then been told what the group committed, so it takes
// part in elections (a log that started empty abstains until then,
// broker/replica.c), and the group elects another leader if this one dies.
async function leaderOf(addresses, settled = false) {
  const session = new Session(parseAddress(addresses[0]), `leader-probe-${process.pid}`,
    { replicas: new Replicas(addresses, true) });
  try {
    await session.open(20000);
    if (settled) {
      await until(async () => {
        const { fields } = await session.request('replicas', (tag) => message('REPLICAS', tag, 'list'));
        const lines = fields.slice(1).map(String);
        return lines.length === addresses.length
          && lines.every((line) => / lag=0\b/.test(line) && Number((/ match_index=(\d+)/.exec(line) || [])[1]) > 2);
      });
    }
    return session.broker.address;
  } finally {
    await session.close();
  }
}

// A key whose puts go to shard of count (fnv1a32 mod count, 4.15).
function keyFor(shard, count) {
  for (let i = 0; ; i++) {
    if (fnv1a32(Buffer.from(`key-${i}`)) % count === shard) return `key-${i}`;
  }
}

// Rejects with why after ms, unless promise settles first.
function within(promise, ms, why) {
  let timer;
  const late = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(why)), ms); });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

test('shards that are groups of replicas: one whose first replica is dead is found at the others (WELCOME\'s groups)',
  LIMIT, async () => {
    const { groups, brokers, stop } = await startGroups();
    const clients = [];
    try {
      // An item put on each shard, every replica holding it: each group
      // elects another leader if its leader dies.
      const warm = new Queue(groups[0].join(','), { queue: 'warm-up', timeout: 10 });
      clients.push(warm);
      for (const shard of [0, 1]) await warm.put('warm', { key: keyFor(shard, 2) });
      const leaders = await Promise.all(groups.map((group) => leaderOf(group, true)));
      await warm.close({ timeout: 5 });
      await brokers[1][0].stop(); // SIGKILL shard 1's first replica, the one `brokers=` names
      if (leaders[1] === groups[1][0]) leaders[1] = await leaderOf(groups[1].slice(1));
      assert.notStrictEqual(leaders[1], groups[1][0]);
      // Given shard 0's addresses only: shard 1 is found through `groups`.
      const q = new Queue(groups[0].join(','), { queue: 'groups', timeout: 10 });
      // Given shard 0's leader and shard 1's dead first replica: not an address left out.
      const other = new Queue(`${leaders[0]},${groups[1][0]}`, { queue: 'groups', timeout: 10 });
      clients.push(q, other);
      const unreachable = [];
      for (const client of [q, other]) client.on('unreachable', (error) => unreachable.push(error));
      const reached = (client) => within(client.stats({ brokers: true }), 15000, 'shard 1 never reached')
        .then(({ brokers: each }) => each.map((entry) => entry.shard).sort());
      assert.deepStrictEqual(await reached(q), [0, 1]);
      assert.deepStrictEqual(await reached(other), [0, 1]);
      // Each shard's row names its leader, as `brokers` does.
      const rows = (await q.stats({ brokers: true })).brokers.sort((a, b) => a.shard - b.shard);
      assert.deepStrictEqual(rows.map((row) => row.address), leaders);
      const shards = (client) => client.brokers.map(({ address, shard, up }) => ({ address, shard, up }))
        .sort((a, b) => a.shard - b.shard);
      const expected = [{ address: leaders[0], shard: 0, up: true }, { address: leaders[1], shard: 1, up: true }];
      assert.deepStrictEqual(shards(q), expected);
      assert.deepStrictEqual(shards(other), expected);
      assert.strictEqual(q.service.shardCount, 2);
      assert.deepStrictEqual(unreachable, []);
      // Each put awaited: a batch of its own, to the next shard in turn.
      const count = 20;
      const put = Array.from({ length: count }, (_, i) => `item-${i}`);
      for (const item of put) await q.put(item);
      const got = [];
      const byShard = [0, 0];
      for (let i = 0; i < count; i++) {
        const item = await within(q.get(), 20000, `item ${i + 1} of ${count} never came`);
        got.push(item.toString());
        byShard[shardOfId(item.id)] += 1;
        q.taskDone(item);
      }
      const joined = await within(q.join({ timeout: 20 }), 25000, 'join() did not resolve');
      assert.strictEqual(joined.dead, 0);
      assert.deepStrictEqual(got.sort(), put.sort());
      assert.ok(byShard[0] > 0 && byShard[1] > 0, `items by shard: ${byShard}`);
      assert.strictEqual((await q.stats()).outstanding, 0);
    } finally {
      await Promise.allSettled(clients.map((q) => q.close({ timeout: 5 })));
      await stop();
    }
  });

test('a shard whose replicas are all dead (connections refused) is down at once, not after the time-out',
  LIMIT, async () => {
    const { groups, brokers, stop } = await startGroups();
    const clients = [];
    try {
      await leaderOf(groups[0]);
      for (const broker of brokers[1]) await broker.stop(); // SIGKILL: nothing listens there
      const start = Date.now();
      const q = new Queue(groups[0][0], { queue: 'groups-down', timeout: 10 });
      clients.push(q);
      await within(q.put('first'), 20000, 'put() did not resolve');
      const took = Date.now() - start;
      assert.ok(took < 5000, `the put took ${took} ms: shard 1 was waited for`);
      assert.deepStrictEqual(q.brokers.map(({ up }) => up).sort(), [false, true], JSON.stringify(q.brokers));
      const item = await within(q.get(), 10000, 'the item never came');
      assert.strictEqual(item.toString(), 'first');
      q.taskDone(item);
    } finally {
      await Promise.allSettled(clients.map((q) => q.close({ timeout: 5 })));
      await stop();
    }
  });
