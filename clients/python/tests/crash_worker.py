"""The worker of the crash job (test_concurrency.py): several coroutines
share one asyncq.Queue and do what the README shows, `item = await
q.get(); work; q.task_done()`, with the bare task_done(). Each item is
written to the log (and flushed) once its work is done, before its ack:
an item acked and not in the log was never run."""
import asyncio
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import asyncq  # noqa: E402


async def main(address, queue, log_path, coroutines, seed):
    rng = random.Random(seed)
    log = open(log_path, "a", buffering=1)
    q = asyncq.Queue(address, queue)

    async def work():
        while True:
            item = await q.get()
            await asyncio.sleep(rng.random() * 0.004)
            log.write(item.decode() + "\n")
            q.task_done()

    print("READY", flush=True)
    await asyncio.gather(*(work() for _ in range(coroutines)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
