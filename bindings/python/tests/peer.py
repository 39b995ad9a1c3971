"""A member in its own process, for the tests that kill one (test_faults.py).

Joins the world, then all-reduces a 1M-element float32 tensor step after step. Each step
first agrees (an all-reduce with op max) on whether a newcomer waits, and if one does every
member calls update_topology() together. A PeerLostError is checked (the tensor holds its
input again), answered with update_topology(), and the step retried. Prints one line per
event: "ready", "step <k> world <n>", "lost", "restored", "done"."""

import argparse
import sys
import numpy as np

import eccl

p = argparse.ArgumentParser()
p.add_argument("--master", required=True)
p.add_argument("--failure-timeout", type=float, default=1.0)
p.add_argument("--world", type=int, required=True, help="members to wait for before step 0")
p.add_argument("--steps", type=int, default=10**9, help="steps after which to leave")
a = p.parse_args()


def say(*words):
    print(*words, flush=True)


comm = eccl.Communicator(a.master, failure_timeout=a.failure_timeout, heartbeat_interval=0.2)
comm.connect()
comm.wait_for_world(a.world, 60)
say("ready", comm.world_size)
x = np.empty(1 << 20, np.float32)
ctl = np.zeros(2, np.int64)  # (a newcomer waits, step): max over members
step = 0
while step < a.steps:
    ctl[:] = (1 if comm.peers_pending else 0, step)
    sent = ctl.copy()
    expect = None  # what the failed op's tensor must hold again
    try:
        expect = (ctl, sent)
        comm.all_reduce(ctl, "max")
        step = int(ctl[1])  # a newcomer takes the members' step
        if ctl[0]:
            expect = None
            comm.update_topology()
            continue
        x.fill(step + 1)
        expect = (x, np.full_like(x, step + 1))
        info = comm.all_reduce(x)
    except eccl.PeerLostError as e:
        say("lost", e.result.name)
        if expect is not None and not np.array_equal(*expect):
            say("NOT-RESTORED", expect[0][:4], expect[1][:4])
            sys.exit(3)
        say("restored")
        while True:
            try:
                comm.update_topology()
                break
            except eccl.PeerLostError:
                pass
        continue
    n = info.world_size
    if not (x == (step + 1) * n).all():
        say("WRONG", step, n, x[:4])
        sys.exit(2)
    say("step", step, "world", n)
    step += 1
comm.close()
say("done")
