#!/usr/bin/env python3
"""Data-parallel torch training over the "eccl" torch.distributed backend.

`import eccl.torch` registers the backend; then torch.distributed is used as usual: rank 0's
parameters are broadcast, every step's gradients are averaged with one all_reduce, and at the
end all ranks check (with all_reduce MAX and MIN) that they hold bit-identical parameters.
Exits non-zero if they don't, or if the loss did not fall.

    torch_backend.py [--world-size 3] [--steps 40]       # spawns its ranks itself
    torchrun --nproc_per_node 3 torch_backend.py         # or: ranks from RANK/WORLD_SIZE
"""
import argparse, hashlib, os, socket, sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import eccl.torch  # noqa: F401  registers the "eccl" backend



def say(line):
    """One write per line, so lines of concurrent ranks never interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()

def batch(gen, n=64):
    """Synthetic regression y = x . w + noise with a fixed w; each rank its own samples."""
    w = torch.linspace(-1, 1, 16).unsqueeze(1)
    x = torch.randn(n, 16, generator=gen)
    return x, x @ w + 0.05 * torch.randn(n, 1, generator=gen)


def average(tensors, world):
    """One all_reduce for all tensors (flattened, like DDP's buckets), averaged in place."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    if hasattr(dist.ReduceOp, "AVG"):
        dist.all_reduce(flat, op=dist.ReduceOp.AVG)
    else:  # older torch: sum, then divide
        dist.all_reduce(flat)
        flat /= world
    off = 0
    for t in tensors:
        t.copy_(flat[off:off + t.numel()].view_as(t))
        off += t.numel()


def train(rank, world, init_method, steps):
    torch.set_num_threads(1)
    dist.init_process_group("eccl", init_method=init_method, rank=rank, world_size=world)
    say(f"rank {rank}: backend {dist.get_backend()}, world {dist.get_world_size()}")

    torch.manual_seed(rank)  # different initial weights on purpose: the broadcast fixes it
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    with torch.no_grad():
        for p in model.parameters():
            dist.broadcast(p.detach(), src=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(100 + rank)

    losses = []
    for step in range(steps):
        x, y = batch(gen)
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        average([p.grad for p in model.parameters()], world)  # what DDP does
        opt.step()
        # The mean loss over all ranks (a second all_reduce per step).
        mean = loss.detach().reshape(1).clone()
        average([mean], world)
        losses.append(mean.item())
        if rank == 0 and (step % 10 == 0 or step == steps - 1):
            say(f"step {step:3d} loss {losses[-1]:.5f}")

    # Identical parameters on every rank: the elementwise max and min over ranks agree.
    with torch.no_grad():
        flat = torch.nn.utils.parameters_to_vector(model.parameters())
    hi, lo = flat.clone(), flat.clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    same = torch.equal(hi, lo) and torch.equal(hi, flat)
    digest = hashlib.sha256(flat.numpy().tobytes()).hexdigest()[:16]
    fell = losses[-1] < 0.25 * losses[0]
    say(f"rank {rank}: params hash {digest}, identical on all ranks: {same}, "
        f"loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    dist.barrier()
    # Leave the ECCL group before rank 0's master stops: torch 1.13's destroy_process_group
    # does not shut the backend down, and at exit the master might go first.
    dist.group.WORLD.shutdown()
    dist.destroy_process_group()
    if not (same and fell):
        say(f"rank {rank}: FAIL: " + ("parameters differ across ranks" if not same
                                      else "the loss did not fall"))
        sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world-size", type=int, default=3, help="ranks to spawn (not torchrun)")
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # torchrun (or another launcher)
        train(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), "env://", args.steps)
        return
    with socket.socket() as s:  # a free port for the c10d TCP store of rank 0
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        mp.spawn(train, args=(args.world_size, f"tcp://127.0.0.1:{port}", args.steps),
                 nprocs=args.world_size)
    except (mp.ProcessExitedException, mp.ProcessRaisedException) as e:
        sys.exit(f"torch_backend: FAIL: {e}")
    say(f"torch_backend: OK: {args.world_size} ranks trained with identical parameters")


if __name__ == "__main__":
    main()
