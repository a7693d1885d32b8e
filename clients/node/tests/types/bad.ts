// The client misused: each line marked "// error" must fail to type-check
// (tests/types.test.js), and no other.
import { Queue, LifoQueue, PriorityQueue, Item, Stats } from '../..';

export async function misuse(): Promise<void> {
  const named = new Queue('localhost', { queue: 42 }); // error
  const q = new Queue('localhost', { credit: '8' }); // error
  const typo = new Queue('localhost', { queues: 'jobs' }); // error
  const ahead = new Queue('localhost', { prefetch: '1' }); // error
  await q.put(42); // error
  await q.put('x', { lease: '10s' }); // error
  await q.put('x', { priority: '1' }); // error
  await q.put('x', { delay: 1, at: new Date() }); // error
  await q.put('x', { at: '2030-01-01' }); // error
  await q.send('x', { delay: '5' }); // error
  const stack = new LifoQueue('localhost');
  await stack.put('x', { delay: 5 }); // error
  await stack.put('x', { at: new Date() }); // error
  await stack.close();
  const id: number = (await q.get()).id; // error
  q.taskDone(7); // error
  await q.nack(); // error
  await q.join({ timeout: '10' }); // error
  await q.shutdown({ immediate: 'yes' }); // error
  await q.reopen({ immediate: true }); // error
  const purged: string = await q.purge(); // error
  const deleted: boolean = await q.delete(); // error
  const count: number = await q.empty(); // error
  await q.put({ job: 1 }); // error
  q.on('held', (queue: number) => queue); // error
  const made = new Item(); // error
  const shutDown: boolean = (await q.get()).data; // error
  const deadId: bigint = (await q.deadLetters())[0].id; // error
  const requeued: string = await q.requeueDead(); // error
  await q.requeueDead(7); // error
  await q.deleteDead(); // error
  await q.deleteDead([7]); // error
  const peeked: string = (await q.peek(3))[0].payload; // error
  await q.peek('3'); // error
  await q.pause(true); // error
  const ranked = new Queue('localhost', { priorities: 'yes' }); // error
  const rank: number = (await q.get()).priority; // error
  const pq = new PriorityQueue('localhost');
  await pq.put('x', { priority: '1' }); // error
  const pqRank: string = (await pq.get()).priority; // error
  await q.deadLetter(); // error
  await q.deadLetter(7); // error
  const whole: string = (await q.deadLetter('1')).payload; // error
  await ranked.close();
  const resumed: boolean = (await q.resume()).paused; // error
  await q.put('x', { key: 42 }); // error
  const summed: number = (await q.stats({ brokers: true })).queued; // error
  const each: Stats = (await q.stats({ brokers: true })).brokers; // error
  const shardOf: string = q.brokers[0].shard; // error
  q.on('unreachable', (error: string) => error); // error
  await named.close();
  await typo.close();
  await ahead.close();
  console.log(id, made, shutDown, count, deadId, requeued, peeked, resumed, rank, pqRank, whole, summed, each, shardOf);
}
