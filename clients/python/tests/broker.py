"""Starts the real C programs for the tests: the broker on a free port of
127.0.0.1, producers and consumers. Binaries come from ASYNCQ_BIN_DIR (set by
ctest), else build/bin at the top of the repository."""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BIN_DIR = os.environ.get("ASYNCQ_BIN_DIR") or os.path.join(HERE, "..", "..", "..", "build", "bin")
sys.path.insert(0, os.path.join(HERE, ".."))


def program(name):
    return os.path.join(BIN_DIR, name)


class Broker:
    """A broker process; .address is what clients connect to."""

    def __init__(self, *flags, bind="tcp://127.0.0.1:0"):
        self.process = subprocess.Popen(
            [program("asyncq-broker"), "--bind", bind, *flags],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.process.stdout.readline()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"broker did not start: {line!r}")
        self.address = line.split()[1]

    def run(self, name, *args, timeout=60):
        """Runs one of the programs against this broker; returns its stdout."""
        done = subprocess.run([program(name), *args], env={**os.environ,
                              "ASYNCQ_BROKER": self.address}, capture_output=True, text=True,
                              timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(f"{name} {args} exited {done.returncode}: {done.stderr}")
        return done.stdout

    def start(self, name, *args):
        return subprocess.Popen([program(name), *args],
                                env={**os.environ, "ASYNCQ_BROKER": self.address},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.process.stdout.close()
