"""Members in separate processes: one is SIGKILLed mid-run, one joins mid-run."""

import time

import pytest

import eccl
from conftest import Peer

FAILURE_TIMEOUT = 1.0  # short detection keeps these tests fast; members and master agree


@pytest.fixture
def master():
    with eccl.Master(failure_timeout=FAILURE_TIMEOUT, heartbeat_interval=0.2) as m:
        yield m


def _peer(master, *args):
    return Peer(master, *args, failure_timeout=FAILURE_TIMEOUT)


def test_sigkill_fails_the_op_on_every_survivor_with_input_restored_then_retry(master):
    peers = [_peer(master, "--world", "3", "--steps", "40") for _ in range(3)]
    for p in peers:
        p.wait_for("step 3 ")
    victim, survivors = peers[0], peers[1:]
    killed_at = time.monotonic()
    victim.kill()
    for p in survivors:
        p.wait_for("lost PEER_LOST", timeout=10)
    detected = time.monotonic() - killed_at
    # The failure bound: heartbeat silence past failure_timeout, plus the master's rounds.
    assert detected < FAILURE_TIMEOUT * 3 + 2, f"survivors saw the loss after {detected:.1f} s"
    for p in survivors:
        p.wait_for("restored")
        p.wait_for("step 39 world 2", timeout=30)
        assert p.finish() == 0, p.lines[-10:]


def test_a_newcomer_joins_mid_run_and_takes_the_members_step(master):
    # The members go on until 3 steps ran with the newcomer; it is started (imports done)
    # before they run and connects on "go".
    members = [_peer(master, "--world", "2", "--steps", "5", "--until-world", "3")
               for _ in range(2)]
    newcomer = _peer(master, "--world", "3", "--steps", "5", "--until-world", "3", "--wait-go")
    newcomer.wait_for("started")
    for p in members:
        p.wait_for("step 2 ")
    newcomer.send("go")
    line = newcomer.wait_for("step ", timeout=30)
    assert line.endswith("world 3"), line
    joined_at = int(line.split()[1])
    assert joined_at > 2, f"the newcomer started at step {joined_at}, not the members' step"
    for p in members + [newcomer]:
        p.wait_for("done")
        assert p.finish() == 0, p.lines[-10:]
    for p in members:
        p.wait_for(f"step {joined_at} world 3")
