"""All-reduce, broadcast and shared state across a group of 3 communicators (threads of this
process) with NumPy arrays; test_torch.py does the same with torch tensors."""

import threading
import time

import numpy as np
import pytest

import eccl
from conftest import run_group

DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64,
          np.float16, np.float32, np.float64]
N = 3


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_all_reduce_every_dtype_in_place_and_into_out(master, dtype):
    def member(comm, i):
        x = (np.arange(1000) % 7 + i).astype(dtype)
        out = np.zeros_like(x)
        comm.all_reduce(x, out=out)
        before = x.copy()
        comm.all_reduce(x, "max")
        assert np.array_equal(before, (np.arange(1000) % 7 + i).astype(dtype))  # out= only read
        return out, x

    for out, mx in run_group(master, N, member):
        assert np.array_equal(out, (3 * (np.arange(1000) % 7) + 3).astype(dtype))
        assert np.array_equal(mx, (np.arange(1000) % 7 + 2).astype(dtype))


@pytest.mark.parametrize("op,expect", [("sum", 6), ("avg", 2), ("prod", 6), ("min", 1), ("max", 3)])
def test_every_reduce_op(master, op, expect):
    def member(comm, i):
        x = np.full(17, i + 1, np.float64)
        comm.all_reduce(x, op)
        return x

    for x in run_group(master, N, member):
        assert (x == expect).all()


def test_broadcast_and_async_forms_with_shapes(master):
    def member(comm, i):
        x = np.full((4, 8), i, np.float32) + (10 if comm.rank == 1 else 0)
        comm.broadcast(x, root=1)
        y = np.full((2, 3), comm.rank + 1, np.int64)
        work = comm.all_reduce_async(y, tag=1)
        z = np.full(5, comm.rank, np.int32)
        bwork = comm.broadcast_async(z, root=2, tag=2)
        return x, work.wait(), y, bwork.wait(), z

    results = run_group(master, N, member)
    x0 = results[0][0]
    for x, info, y, binfo, z in results:
        assert np.array_equal(x, x0) and x0.min() >= 10
        assert info.world_size == N and (y == 6).all()
        assert binfo.world_size == N and (z == 2).all()


@pytest.mark.parametrize("codec", ["float16", "bfloat16", "uint8", "uint4"])
def test_codecs_leave_every_member_with_identical_bits(master, codec):
    def member(comm, i):
        x = np.random.default_rng(i).standard_normal(5000).astype(np.float32)
        exact = x.copy()
        info = comm.all_reduce(x, quantization=codec, rounding="stochastic")
        comm.all_reduce(exact)
        return x, exact, info

    results = run_group(master, N, member)
    for x, exact, info in results:
        assert x.tobytes() == results[0][0].tobytes()
        # A few quantization steps at most: levels per block span the block's range.
        step = {"uint8": np.ptp(exact) / 255, "uint4": np.ptp(exact) / 15}.get(codec, 0.02)
        assert np.abs(x - exact).max() < 4 * step
        assert info.bytes_sent < info.logical_bytes_sent


def test_mismatched_tensors_between_peers_fail_on_all_with_input_kept(master):
    def member(comm, i):
        x = np.full(100 + (i == 2), float(i), np.float32)
        with pytest.raises(eccl.InvalidUsageError, match="ecclInvalidUsage"):
            comm.all_reduce(x)
        assert (x == i).all()
        y = np.ones(8, np.float32)
        comm.all_reduce(y)  # the group still works
        return y

    for y in run_group(master, N, member):
        assert (y == N).all()


def test_shared_state_sync_makes_divergent_members_identical(master):
    def member(comm, i):
        w = np.full(1000, 1.0 if i < 2 else 9.0, np.float32)  # two of three agree
        own = np.full(3, i, np.int32)
        state = eccl.SharedState({"w": w, "own": own}, revision=1, allow_divergence=["own"])
        info = comm.sync_shared_state(state, "enforce_popular")
        return w, own, state.revision, info

    for i, (w, own, revision, info) in enumerate(run_group(master, N, member)):
        assert (w == 1.0).all() and (own == i).all() and revision == 1
        assert info.revision == 1
        assert info.tensors_fetched == (1 if i == 2 else 0)


def test_peer_groups_reduce_separately(master):
    # Two groups of two in one world. update_topology() is collective over both groups, so
    # every member admits newcomers until all four are in (a shared count of complete
    # members here; examples/python/fsdp_diloco.py agrees over gloo).
    lock = threading.Lock()
    complete: set = set()
    results, errors = [], []

    def member(group, i):
        try:
            with eccl.Communicator(master.address, peer_group=group) as comm:
                comm.connect()
                deadline = time.monotonic() + 60
                while len(complete) < 4 and time.monotonic() < deadline:
                    if comm.world_size >= 2:
                        with lock:
                            complete.add((group, i))
                    comm.update_topology() if comm.peers_pending else time.sleep(0.005)
                x = np.full(4, group + 1, np.float64)
                comm.all_reduce(x)
                results.append((group, comm.world_size, x))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=member, args=(g, i)) for g in (0, 1) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors, errors
    assert len(results) == 4
    for group, world, x in results:
        assert world == 2 and (x == 2 * (group + 1)).all()
