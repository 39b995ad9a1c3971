"""torch tensors through DLPack (every dtype, bfloat16 included), shared state over a
state_dict, and the torch.distributed backend under torch.multiprocessing and torchrun."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (the package works without it)")
import torch.distributed as dist  # noqa: E402

import eccl  # noqa: E402
from conftest import HERE, run_group  # noqa: E402

DTYPES = [torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64, torch.float16,
          torch.bfloat16, torch.float32, torch.float64]
N = 3


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_all_reduce_every_torch_dtype_in_place_and_into_out(master, dtype):
    def member(comm, i):
        x = (torch.arange(600) % 5 + i).to(dtype).reshape(20, 30)
        out = torch.zeros(600, dtype=dtype)
        comm.all_reduce(x, out=out)
        comm.all_reduce(x, "min")
        return x, out

    for x, out in run_group(master, N, member):
        assert torch.equal(out, (3 * (torch.arange(600) % 5) + 3).to(dtype))
        assert torch.equal(x, (torch.arange(600) % 5).to(dtype).reshape(20, 30))


def test_a_tensor_view_with_an_offset_is_used_in_place(master):
    def member(comm, i):
        base = torch.zeros(10)
        view = base[4:8]  # contiguous, storage offset 4
        view.fill_(i + 1)
        comm.all_reduce(view)
        return base

    for base in run_group(master, N, member):
        assert base.tolist() == [0] * 4 + [6] * 4 + [0] * 2


def test_empty_tensors_of_any_shape_are_fine(solo):
    for t in (torch.zeros(0), torch.zeros(3, 0), torch.zeros(0, 4).t()):
        assert solo.all_reduce(t).world_size == 1


def test_bad_torch_tensors_are_refused_by_name(solo):
    with pytest.raises(ValueError, match="not contiguous.*contiguous()"):
        solo.all_reduce(torch.ones(4, 4).t())
    with pytest.raises(TypeError, match="tensor cannot be shared without a copy.*detach"):
        solo.all_reduce(torch.ones(3, requires_grad=True))
    with pytest.raises(TypeError, match="(?i)bool"):
        solo.all_reduce(torch.ones(3, dtype=torch.bool))
    with pytest.raises(TypeError, match="complex"):
        solo.all_reduce(torch.ones(3, dtype=torch.complex64))
    with pytest.raises(TypeError, match="out cannot be shared"):
        solo.all_reduce(torch.ones(3), out=torch.ones(3, requires_grad=True))


def test_state_dict_sync_heals_a_divergent_model(master):
    def member(comm, i):
        model = _model(0 if i < 2 else 1)  # member 2 starts from other weights
        state = eccl.SharedState.from_state_dict(model.state_dict(), revision=1)
        info = comm.sync_shared_state(state)
        return [p.detach().clone() for p in model.parameters()], info

    results = run_group(master, N, member)
    for params, info in results:
        for a, b in zip(params, results[0][0]):
            assert torch.equal(a, b)
    assert results[2][1].tensors_fetched == 4 and results[0][1].tensors_fetched == 0
    assert torch.equal(results[2][0][0], next(_model(0).parameters()))


def _model(seed):
    # Not torch.manual_seed: the members are threads sharing the global generator.
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


def _backend_worker(rank, size, port, queue):
    import eccl.torch  # noqa: F401  registers "eccl"

    dist.init_process_group("eccl", rank=rank, world_size=size,
                            init_method=f"tcp://127.0.0.1:{port}")
    out = {}
    for name in ("SUM", "PRODUCT", "MIN", "MAX", "AVG"):
        t = torch.full((5,), float(rank + 1))
        dist.all_reduce(t, op=getattr(dist.ReduceOp, name))
        out[name] = t[0].item()
    b = torch.full((3,), float(rank), dtype=torch.bfloat16)
    dist.broadcast(b, src=size - 1)
    out["broadcast"] = b.tolist()
    work = dist.all_reduce(torch.ones(4, dtype=torch.int64), async_op=True)
    out["future"] = work.get_future().wait()[0].tolist()
    big = torch.ones(1 << 16)  # 256 KiB: asynchronous in the backend
    work = dist.all_reduce(big, async_op=True)
    out["big_future"] = work.get_future().wait()[0][:3].tolist()
    out["big_completed"] = work.is_completed() and bool((big == size).all())
    dist.barrier()
    try:
        dist.all_gather([torch.zeros(1) for _ in range(size)], torch.zeros(1))
    except NotImplementedError as e:
        out["all_gather"] = str(e)
    pg = dist.distributed_c10d._get_default_group()
    out["communicator"] = isinstance(pg.communicator, eccl.Communicator)
    out["backend"] = dist.get_backend()
    queue.put((rank, out))
    if rank == 1:
        queue.close()
        queue.join_thread()
        os.kill(os.getpid(), signal.SIGKILL)  # dies: the others' next op loses it
    t = torch.ones(1 << 16)
    try:
        dist.all_reduce(t)
        out["lost"] = "no error"
    except eccl.PeerLostError as e:
        out["lost"] = str(e)
        out["restored"] = bool((t == 1).all())
        pg.communicator.update_topology()
        dist.all_reduce(t)
        out["after"] = (pg.communicator.world_size, t[0].item())
    queue.put((rank, out))
    dist.barrier()


def test_backend_under_torch_multiprocessing():
    import torch.multiprocessing as mp

    size = 3
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_backend_worker, args=(r, size, port, queue)) for r in range(size)]
    for p in procs:
        p.start()
    got = {}
    for _ in range(size + size - 1):
        rank, out = queue.get(timeout=90)
        got.setdefault(rank, {}).update(out)
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, -signal.SIGKILL, 0]
    for rank, out in got.items():
        assert out["SUM"] == 6 and out["PRODUCT"] == 6 and out["MIN"] == 1 and out["MAX"] == 3
        assert out["AVG"] == 2
        assert out["broadcast"] == [2.0] * 3
        assert out["future"] == [3] * 4
        assert out["big_future"] == [3.0] * 3 and out["big_completed"]
        assert "allgather is not an ECCL collective" in out["all_gather"]
        assert out["communicator"] and out["backend"] == "eccl"
        if rank != 1:
            assert out["lost"].startswith("ecclPeerLost"), out["lost"]
            assert out["restored"] and out["after"] == (2, 2.0)


def test_backend_under_torchrun(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(
        "import torch, torch.distributed as dist, eccl.torch\n"
        "dist.init_process_group('eccl')\n"
        "t = torch.full((3,), float(dist.get_rank() + 1))\n"
        "dist.all_reduce(t)\n"
        "print('rank', dist.get_rank(), 'of', dist.get_world_size(), 'sum', t[0].item(), flush=True)\n"
        "dist.barrier()\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    # --redirects 1 --tee 1: torchrun of torch 1.13 on Python 3.11 cannot parse the default
    # "0" (its Std flag enum has no iterable zero member there); stdout tee'd works on all.
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--redirects", "1", "--tee", "1",
         "--master_port", str(_free_port()), str(script)],
        capture_output=True, text=True, timeout=120, env=env, cwd=HERE)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rank 0 of 2 sum 3.0" in r.stdout and "rank 1 of 2 sum 3.0" in r.stdout, r.stdout


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
