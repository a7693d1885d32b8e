// The client from an ES module, by the package's name, as a TypeScript
// project with Node's module resolution sees it (tests/types.test.js).
import asyncq, {
  Queue, LifoQueue, PriorityQueue, QueueShutDown, KeysRequired, ShardConflict, version,
} from 'asyncq';

export async function fromEsm(): Promise<string> {
  const q: Queue = new asyncq.Queue('localhost', { prefetch: 1 });
  const stack: Queue = new LifoQueue('localhost');
  await stack.close();
  const ranked: Queue = new PriorityQueue('localhost', { queue: 'ranked' });
  await ranked.close();
  try {
    await q.put('x');
  } catch (error) {
    if (error instanceof QueueShutDown || error instanceof KeysRequired) return error.message;
    if (error instanceof ShardConflict) return error.addresses.join(' ');
  } finally {
    await q.close();
  }
  return version;
}
