"""A member in its own process, for the tests that kill one (test_faults.py) and, with
--dtypes, the cross-process check of every element type (test_processes.py).

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
p.add_argument("--until-world", type=int, default=0,
               help="also go on until 3 steps ran in a world of at least this size")
p.add_argument("--wait-go", action="store_true", help="connect only after 'go' on stdin")
p.add_argument("--dtypes", action="store_true",
               help="all-reduce (in place, out=) and broadcast every NumPy and torch element "
               "type once, print 'dtypes ok <n>' and leave")
a = p.parse_args()


def say(*words):
    print(*words, flush=True)


comm = eccl.Communicator(a.master, failure_timeout=a.failure_timeout, heartbeat_interval=0.2)
if a.wait_go:
    say("started")
    sys.stdin.readline()
comm.connect()
comm.wait_for_world(a.world, 60)
say("ready", comm.world_size)


def check_dtypes():
    """Every element type across the processes: rank r contributes (i % 5) + r + 1."""
    n, r = comm.world_size, comm.rank
    arrays = [lambda dt=dt: np.arange(300, dtype=np.int64).astype(dt) for dt in (
        np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64,
        np.float16, np.float32, np.float64)]
    try:
        import torch

        arrays += [lambda dt=dt: torch.arange(300).to(dt) for dt in (
            torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64, torch.float16,
            torch.bfloat16, torch.float32, torch.float64)]
    except ImportError:
        pass
    for make in arrays:
        base = make()
        x = base % 5 + (r + 1)
        out = make() * 0
        comm.all_reduce(x, out=out)
        want = (base % 5) * n + n * (n + 1) // 2
        comm.all_reduce(x)
        b = make() * 0 + r
        comm.broadcast(b, root=n - 1)
        if not ((out == want).all() and (x == want).all() and (b == n - 1).all()):
            say("DTYPE-FAIL", type(base).__module__, base.dtype, out[:6], x[:6], b[:6])
            sys.exit(4)
    say("dtypes ok", len(arrays))


if a.dtypes:
    check_dtypes()
    comm.all_reduce(np.zeros(1, np.int32))  # nobody leaves while others still check
    comm.close()
    sys.exit(0)
x = np.empty(1 << 20, np.float32)
ctl = np.zeros(3, np.int64)  # (a newcomer waits, step, go on): max over members
step = 0
steps_at_world = 0  # steps run in a world of at least --until-world
while True:
    more = step < a.steps or (a.until_world > 0 and steps_at_world < 3)
    ctl[:] = (1 if comm.peers_pending else 0, step, 1 if more else 0)
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
        if not ctl[2]:
            break
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
    if a.until_world > 0 and n >= a.until_world:
        steps_at_world += 1
    say("step", step, "world", n)
    step += 1
comm.close()
say("done")
