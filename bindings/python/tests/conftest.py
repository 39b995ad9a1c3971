"""Shared helpers: groups of communicators as threads of this process (each blocking call
releases the GIL, so they run side by side), or as separate processes (tests/peer.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import eccl

HERE = Path(__file__).resolve().parent


@pytest.fixture
def master():
    """A master with the library's default timeouts (2 s failure timeout): the suite runs on
    a loaded machine, where a shorter one could declare a starved member dead."""
    with eccl.Master() as m:
        yield m


@pytest.fixture
def solo(master):
    """A connected communicator, alone in its world."""
    with eccl.Communicator(master.address) as comm:
        comm.connect()
        yield comm


def run_group(master: eccl.Master, size: int, fn, *, timeout: float = 60.0, **comm_kwargs):
    """fn(comm, index) in `size` threads, each with its own communicator, once all are
    members of one world. Returns fn's results by index; re-raises the first failure."""
    results: list = [None] * size
    errors: list = []
    barrier = threading.Barrier(size)

    def member(i: int) -> None:
        try:
            with eccl.Communicator(master.address, **comm_kwargs) as comm:
                comm.connect()
                comm.wait_for_world(size, timeout)
                barrier.wait(timeout)
                results[i] = fn(comm, i)
                barrier.wait(timeout)  # nobody leaves while others still reduce
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=member, args=(i,), daemon=True) for i in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 10)
        assert not t.is_alive(), "a member thread hung"
    real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
    if real or errors:
        raise (real or errors)[0]
    return results


class Peer:
    """tests/peer.py in its own process; lines of its stdout are read by a thread."""

    def __init__(self, master: eccl.Master, *args: str, failure_timeout: float = 2.0,
                 env: dict | None = None):
        self.lines: list[str] = []
        self._eof = False
        self._cv = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "peer.py"), "--master", master.address,
             "--failure-timeout", str(failure_timeout), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, **(env or {})})
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._cv:
                self.lines.append(line.rstrip("\n"))
                self._cv.notify_all()
        with self._cv:
            self._eof = True
            self._cv.notify_all()

    def wait_for(self, prefix: str, timeout: float = 30.0) -> str:
        """The first line starting with `prefix` (waits for it)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for line in self.lines:
                    if line.startswith(prefix):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    raise AssertionError(f"no line {prefix!r} from the peer within {timeout} s "
                                         f"(exit code {self.proc.poll()}); it printed: "
                                         f"{self.lines[-20:]}")
                self._cv.wait(min(left, 0.2))

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
