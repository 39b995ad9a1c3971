"""Members in separate processes: one is SIGKILLed mid-run, one joins mid-run."""

import time

from conftest import FAILURE_TIMEOUT, Peer


def test_sigkill_fails_the_op_on_every_survivor_with_input_restored_then_retry(master):
    peers = [Peer(master, "--world", "3", "--steps", "40") for _ in range(3)]
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
    members = [Peer(master, "--world", "2", "--steps", "60") for _ in range(2)]
    for p in members:
        p.wait_for("step 2 ")
    newcomer = Peer(master, "--world", "3", "--steps", "60")
    line = newcomer.wait_for("step ", timeout=30)
    assert line.endswith("world 3"), line
    joined_at = int(line.split()[1])
    assert joined_at > 2, f"the newcomer started at step {joined_at}, not the members' step"
    for p in members + [newcomer]:
        assert p.finish() == 0, p.lines[-10:]
        assert p.lines[-1] == "done"
    for p in members:
        p.wait_for(f"step {joined_at} world 3")
