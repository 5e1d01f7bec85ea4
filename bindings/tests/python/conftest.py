"""Makes the generated bindings importable: scripts/bindings.sh writes them, with the library they
were generated from, into bindings/generated/python."""

import os
import sys

GENERATED = os.path.join(os.path.dirname(__file__), "..", "..", "generated", "python")
sys.path.insert(0, os.path.abspath(GENERATED))

import shutil
import subprocess
import tempfile

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
SERVER = os.environ.get("TANDEM_SERVER", os.path.join(ROOT, "target", "debug", "tandem-server"))
PROGRAM = "First-year success"


class Relay:
    """A `tandem-server serve` process on loopback (tokens required), with its accounts made by
    `tandem-server admin`: coach carla paired with mentee ana in one program."""

    def __init__(self, data):
        self.data = data
        self.admin("program", "add", PROGRAM)
        self.admin("user", "add", "carla", "--role", "coach", "--program", PROGRAM)
        self.admin("user", "add", "ana", "--role", "mentee", "--program", PROGRAM)
        self.admin("pairing", "add", "--coach", "carla", "--mentee", "ana")
        self.process = None

    def start(self):
        self.log = open(os.path.join(self.data, "relay.log"), "w")
        self.process = subprocess.Popen(
            [SERVER, "serve", "--listen", "127.0.0.1:0", "--data", self.data],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        line = self.process.stdout.readline()
        assert line.startswith("tandem-server listening on "), f"relay said {line!r}"
        self.url = f"ws://{line.split()[-1]}/sync"

    def admin(self, *args):
        done = subprocess.run(
            [SERVER, "admin", "--data", self.data, *args], capture_output=True, text=True
        )
        assert done.returncode == 0, f"admin {args}: {done.stderr}"
        return done.stdout.strip()

    def token(self, user):
        """A device token, shown once; the device's actors are bound to it on first use."""
        return self.admin("token", "issue", "--user", user, "--name", f"{user}'s test phone")

    def stop(self):
        if self.process is None:
            return
        self.process.kill()
        self.process.wait(timeout=10)
        self.process.stdout.close()
        self.log.close()


@pytest.fixture
def relay():
    """A real relay, killed at the end of the test whatever happened."""
    data = tempfile.mkdtemp(prefix="tandem-relay-")
    relay = Relay(data)
    try:
        relay.start()
        yield relay
    finally:
        relay.stop()
        shutil.rmtree(data, ignore_errors=True)
