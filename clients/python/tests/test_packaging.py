"""The package installs offline, with Debian's tools only, into a virtual
environment, and the installed copy works against a broker. Needs Debian's
python3-venv, python3-setuptools, python3-wheel and python3-zmq."""
import os
import shutil
import subprocess
import tempfile
import unittest

from broker import HERE, Broker

PYTHON = "/usr/bin/python3"  # Debian's: the one python3-venv and python3-zmq serve
SOURCE = os.path.join(HERE, "..")

ROUND_TRIP = """
import asyncio, sys, asyncq

async def main(address):
    async with asyncq.Queue(address, "installed") as q:
        await q.put(b"from the venv")
        item = await q.get()
        q.task_done()
        print(asyncq.__file__)
        print(item.decode())
        print(tuple(await q.join(timeout=10)))

asyncio.run(main(sys.argv[1]))
"""


class Packaging(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="asyncq-venv-")
        self.addCleanup(shutil.rmtree, self.dir)
        self.broker = Broker()
        self.addCleanup(self.broker.stop)

    def run_checked(self, *args, **options):
        done = subprocess.run(args, capture_output=True, text=True, timeout=120, **options)
        self.assertEqual(done.returncode, 0, f"{args}: {done.stdout}{done.stderr}")
        return done.stdout

    def test_installs_offline_into_a_venv_and_works(self):
        venv = os.path.join(self.dir, "venv")
        self.run_checked(PYTHON, "-m", "venv", "--system-site-packages", venv)
        # Built from a copy: a build in place would leave build/ and
        # asyncq.egg-info in the repository.
        source = os.path.join(self.dir, "source")
        shutil.copytree(SOURCE, source, ignore=shutil.ignore_patterns(
            "tests", "__pycache__", "build", "*.egg-info"))
        # --no-index: anything that would need PyPI fails instead.
        self.run_checked(os.path.join(venv, "bin", "pip"), "install", "--no-build-isolation",
                         "--no-index", "--no-cache-dir", source)
        environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        out = self.run_checked(os.path.join(venv, "bin", "python"), "-c", ROUND_TRIP,
                               self.broker.address, cwd=self.dir, env=environment)
        module, item, joined = out.splitlines()
        self.assertTrue(module.startswith(os.path.join(venv, "lib") + os.sep), module)
        self.assertEqual((item, joined), ("from the venv", "(0, 0)"))


if __name__ == "__main__":
    unittest.main()
