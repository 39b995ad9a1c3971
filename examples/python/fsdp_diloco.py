#!/usr/bin/env python3
"""DiLoCo across "nodes" that each shard a model with FSDP: torch.distributed inside a node,
ECCL between nodes, one peer group per shard.

--nodes nodes of --ranks-per-node processes each, all on this machine's CPU. Inside a node the
ranks form a gloo process group (a store of their own) and wrap one model in FSDP, so each rank
holds one flat shard. Across nodes, rank k of every node joins ECCL peer group k of one master:
shard k of node A all-reduces only with shard k of node B. Every outer step each rank averages
its shard's pseudo-gradient (global shard - local shard) over ECCL and applies a Nesterov step
to it; then it checks, with ECCL all_reduce MAX and MIN, that its shard is bit-identical on all
nodes. Exits 1 if a shard differs or the loss did not fall, and 77 (skipped) where this torch's
FSDP cannot run on CPU with gloo (torch 1.13, for one: it requires CUDA).

    fsdp_diloco.py [--nodes 2] [--ranks-per-node 2] [--outer-steps 8] [--inner-steps 10]
                   [--quantization bfloat16]
"""
import argparse, hashlib, socket, sys, time, warnings

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import eccl

SKIP = 77



def say(line):
    """One write per line, so lines of concurrent ranks never interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()

def make_model():
    torch.manual_seed(0)  # the same initial model on every node, so every shard starts equal
    return torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))


def make_data(gen, n):
    rule = torch.Generator().manual_seed(7)  # the same regression rule everywhere
    a, b = torch.randn(16, 1, generator=rule) / 4, torch.randn(16, 1, generator=rule) / 4
    x = torch.randn(n, 16, generator=gen)
    return x, torch.sin(x @ a) + 0.5 * (x @ b)


def fsdp_problem():
    """None if FSDP shards a model on CPU over gloo here, else why not (by trying it)."""
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        try:
            with warnings.catch_warnings():  # "switching to NO_SHARD" for a world of 1
                warnings.simplefilter("ignore")
                model = FSDP(torch.nn.Linear(4, 1), device_id=torch.device("cpu"))
                model(torch.ones(2, 4)).sum().backward()
        finally:
            dist.destroy_process_group()
    except Exception as e:  # noqa: BLE001 - any failure means: not on this torch
        return f"{type(e).__name__}: {e}"
    return None


def rank_main(index, args, master, ports):
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    torch.set_num_threads(1)
    node, local = divmod(index, args.ranks_per_node)
    name = f"node {node} shard {local}"
    # Inside the node: gloo over the node's own store; FSDP shards the model over it.
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{ports[node]}",
                            rank=local, world_size=args.ranks_per_node)
    model = FSDP(make_model(), device_id=torch.device("cpu"))
    shards = [p for p in model.parameters()]  # this rank's flat shard(s) of the model
    inner = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    glob = [s.detach().clone() for s in shards]  # the global shard: what outer steps update
    momentum = [torch.zeros_like(g) for g in glob]
    data_gen = torch.Generator().manual_seed(1000 + index)  # each rank its own data
    eval_x, eval_y = make_data(torch.Generator().manual_seed(1), 1024)

    # Across nodes: ECCL peer group = shard index, all groups on one master.
    comm = eccl.Communicator(master, peer_group=local)
    comm.connect()
    # update_topology() is collective over the members of every group, so a rank whose own
    # group is complete must go on admitting until every group is: its node agrees on that
    # (gloo MIN of "my group is complete"), polled while it keeps answering the updates.
    while True:
        complete = torch.tensor([int(comm.world_size >= args.nodes)])
        work = dist.all_reduce(complete, op=dist.ReduceOp.MIN, async_op=True)
        while not work.is_completed():
            comm.update_topology() if comm.peers_pending else time.sleep(0.01)
        work.wait()
        if complete.item():
            break

    def check(step):
        """Whether every shard is bit-identical on all nodes (for the whole node: gloo MIN)."""
        flat = torch.cat([s.detach().reshape(-1) for s in shards])
        hi, lo = flat.clone(), flat.clone()
        comm.all_reduce(hi, op="max")
        comm.all_reduce(lo, op="min")
        same = torch.tensor([int(torch.equal(hi, lo) and torch.equal(hi, flat))])
        dist.all_reduce(same, op=dist.ReduceOp.MIN)
        with torch.no_grad():  # FSDP's forward is collective inside the node
            loss = torch.nn.functional.mse_loss(model(eval_x), eval_y).item()
        digest = hashlib.sha256(flat.numpy().tobytes()).hexdigest()[:12]
        say(f"outer step {step}: {name} shard hash {digest}, identical across nodes: "
            f"{bool(same)}, loss {loss:.5f}")
        return bool(same), loss

    ok, first = check(0)
    for step in range(1, args.outer_steps + 1):
        for _ in range(args.inner_steps):  # FSDP data parallelism inside the node
            x, y = make_data(data_gen, 64)
            loss = torch.nn.functional.mse_loss(model(x), y)
            inner.zero_grad()
            loss.backward()
            inner.step()
        with torch.no_grad():
            for s, g, m in zip(shards, glob, momentum):
                pseudo = g - s.detach()
                comm.all_reduce(pseudo, op="avg", quantization=args.quantization)
                m.mul_(0.9).add_(pseudo)  # Nesterov: m = mu m + d; g -= lr (d + mu m)
                g.sub_(0.7 * (pseudo + 0.9 * m))
                s.copy_(g)  # the local shard restarts from the new global shard
        same, last = check(step)
        ok = ok and same
    comm.close()
    dist.destroy_process_group()
    if not ok or not last < 0.7 * first:
        say(f"{name}: FAIL: " + ("shards differed across nodes" if not ok else
                                f"the loss did not fall ({first:.4f} -> {last:.4f})"))
        sys.exit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--ranks-per-node", type=int, default=2)
    ap.add_argument("--outer-steps", type=int, default=8)
    ap.add_argument("--inner-steps", type=int, default=10)
    ap.add_argument("--quantization", default="bfloat16",
                    choices=["none", "float16", "bfloat16", "uint8", "uint4"])
    args = ap.parse_args()
    problem = fsdp_problem()
    if problem:
        say(f"fsdp_diloco: SKIP: FSDP cannot run on CPU with gloo in torch "
            f"{torch.__version__} (python {sys.version.split()[0]}): {problem}")
        sys.exit(SKIP)
    with eccl.Master() as master:
        ports = [free_port() for _ in range(args.nodes)]
        try:
            mp.spawn(rank_main, args=(args, master.address, ports),
                     nprocs=args.nodes * args.ranks_per_node)
        except (mp.ProcessExitedException, mp.ProcessRaisedException) as e:
            sys.exit(f"fsdp_diloco: FAIL: {e}")
    say(f"fsdp_diloco: OK: {args.nodes} nodes x {args.ranks_per_node} shards, every shard "
        f"identical across nodes after every outer step")


if __name__ == "__main__":
    main()
