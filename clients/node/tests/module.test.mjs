// The package as an ES module and as CommonJS, by its name: the same
// classes, the one project version, the Python client's error names.
import test from 'node:test';
import assert from 'node:assert';
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import asyncq, {
  Queue, LifoQueue, PriorityQueue, Item, BrokerError, BrokerUnreachable, KeyRefused, KeyMismatch, KeysRequired, KeyRequired,
  QueueEmpty, QueueShutDown, NotLeader, TimeoutError, ShardConflict, endpoints, version,
} from 'asyncq';

const require = createRequire(import.meta.url);

test('import and require give the same module', () => {
  const cjs = require('asyncq');
  assert.strictEqual(asyncq, cjs); // the default export is the CommonJS module
  const named = {
    Queue, LifoQueue, PriorityQueue, Item, BrokerError, BrokerUnreachable, KeyRefused, KeyMismatch, KeysRequired, KeyRequired,
    QueueEmpty, QueueShutDown, NotLeader, TimeoutError, ShardConflict, endpoints, version,
  };
  for (const [name, value] of Object.entries(named)) assert.strictEqual(value, cjs[name], name);
  assert.strictEqual(require.resolve('asyncq'), new URL('../index.js', import.meta.url).pathname);
});

test('version and error vocabulary', () => {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url)));
  assert.strictEqual(version, '2.5.0');
  assert.strictEqual(pkg.version, version);
  assert.strictEqual(KeyRequired, KeysRequired); // the name before 2.1.0, kept
  assert.ok(LifoQueue.prototype instanceof Queue);
  assert.ok(PriorityQueue.prototype instanceof Queue);
  for (const [Class, Base] of [[QueueShutDown, BrokerError], [NotLeader, BrokerError], [KeyRefused, BrokerUnreachable],
    [KeyMismatch, BrokerUnreachable], [KeysRequired, BrokerUnreachable]]) {
    assert.ok(Class.prototype instanceof Base, Class.name);
  }
  const shutDown = new QueueShutDown();
  assert.deepStrictEqual([shutDown.name, shutDown.code, shutDown.errorName], ['QueueShutDown', 503, 'SHUT_DOWN']);
  const notLeader = BrokerError.fromFields(['421', 'NOT_LEADER', 'hello3', 'b:5557', 'not the leader'].map(Buffer.from));
  assert.ok(notLeader instanceof NotLeader);
  assert.deepStrictEqual([notLeader.name, notLeader.code, notLeader.errorName, notLeader.leader],
    ['NotLeader', 421, 'NOT_LEADER', 'b:5557']);
  assert.strictEqual(new NotLeader().leader, null); // an election: no leader known
  assert.deepStrictEqual(
    [new KeysRequired('x').name, new BrokerError(429, 'LIMIT', 't', 'q', 'too much').message],
    ['KeysRequired', '429 LIMIT: too much (q)'],
  );
  assert.deepStrictEqual(endpoints('localhost:6000'), ['tcp://localhost:6000', 'tcp://localhost:6001']);
  assert.strictEqual(new TimeoutError('late').name, 'TimeoutError');
  const conflict = new ShardConflict(3, ['a:5557', 'b:5557']);
  assert.deepStrictEqual([conflict.name, conflict.shard, conflict.addresses], ['ShardConflict', 3, ['a:5557', 'b:5557']]);
  assert.ok(conflict.message.includes("'a:5557'") && conflict.message.includes("'b:5557'"));
  assert.strictEqual(new QueueEmpty('none').name, 'QueueEmpty');
});
