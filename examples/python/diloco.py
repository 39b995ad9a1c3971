#!/usr/bin/env python3
"""DiLoCo with ECCL: a torch MLP trained by several processes that die and join mid-run.

Every worker runs --inner-steps AdamW steps on its own data, then an outer step: the
pseudo-gradient (global params - local params) is averaged over ECCL through a codec and a
Nesterov SGD step is applied to the global params, identically on every worker, so they stay
bit-identical. The global params, the outer momentum and the step counter form an
eccl.SharedState: a newcomer receives them from the members at its first sync.

The parent runs the eccl.Master and the workers, SIGKILLs worker 1 once a worker reports
outer step --kill-at, lets one more worker join at --join-at, and checks that every worker
printed the same hash at every step and at the end, and that the loss fell. Exits 1 if not.

    diloco.py [--workers 3] [--outer-steps 12] [--inner-steps 10] [--kill-at 6]
              [--join-at 3] [--quantization bfloat16]   (--kill-at/--join-at -1: never)
"""
import argparse, hashlib, os, queue, re, signal, subprocess, sys, threading, time

import eccl


def make_data(gen, n):
    """Synthetic regression: y = sin(x . a) + 0.5 x . b, the same rule on every worker."""
    rule = torch.Generator().manual_seed(7)
    a, b = torch.randn(16, 1, generator=rule) / 4, torch.randn(16, 1, generator=rule) / 4
    x = torch.randn(n, 16, generator=gen)
    return x, torch.sin(x @ a) + 0.5 * (x @ b)


def worker(args):
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the same initial model everywhere (a sync would fix it anyway)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
    glob = copy.deepcopy(model)  # the global params: what the outer step updates
    outer = torch.optim.SGD(glob.parameters(), lr=0.7, momentum=0.9, nesterov=True)
    shared = {"outer_step": torch.zeros(1, dtype=torch.int64)}
    for name, p in glob.named_parameters():
        # Created up front (SGD would make them lazily) so the shared state holds them; SGD
        # updates them in place, so the state always sees the live buffers.
        outer.state[p]["momentum_buffer"] = torch.zeros_like(p)
        shared["param." + name] = p
        shared["momentum." + name] = outer.state[p]["momentum_buffer"]
    step = shared["outer_step"]
    state = eccl.SharedState.from_state_dict(shared)
    inner = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    data_gen = torch.Generator().manual_seed(1000 + args.worker_id)  # each worker its own data
    eval_x, eval_y = make_data(torch.Generator().manual_seed(1), 1024)

    # Torch is imported and the model built: wait for the parent's word, then connect. The
    # first members get it once every process is ready, the late joiner at --join-at.
    print("ready", flush=True)
    sys.stdin.readline()
    comm = eccl.Communicator(args.worker)
    comm.connect()  # blocks until admitted by the members' update_topology()
    while args.worker_id < args.workers and comm.world_size < args.workers:  # first members
        comm.update_topology() if comm.peers_pending else time.sleep(0.01)

    last = None  # revision of our last successful sync; None: never synced

    def sync():
        # Collective of the whole group; a member's revision must be its last + 1, a
        # newcomer's first may be anything (0). It receives what the members hold.
        nonlocal last
        state.revision = 0 if last is None else last + 1
        info = comm.sync_shared_state(state)
        last = state.revision
        if info.bytes_received:
            print(f"synced revision={last} received={info.bytes_received}B "
                  f"at step={int(step)}", flush=True)

    def recover():
        # After a PeerLostError or to admit a newcomer: rewire, then sync (every update may
        # admit someone, and a newcomer's first op is a sync), then restart the outer step.
        while True:
            try:
                comm.update_topology()
                sync()
                return
            except eccl.PeerLostError:
                continue

    def report():  # the state's hash and the global model's loss on a fixed eval set
        with torch.no_grad():
            loss = torch.nn.functional.mse_loss(glob(eval_x), eval_y).item()
        digest = hashlib.sha256(b"".join(t.detach().numpy().tobytes()
                                         for t in state.tensors.values())).hexdigest()[:16]
        print(f"step={int(step)} world={comm.world_size} hash={digest} loss={loss:.5f}",
              flush=True)
        return digest, loss

    sync()
    digest, loss = report()
    params = list(glob.parameters())
    while int(step) < args.outer_steps:
        try:
            # Admit newcomers in lockstep: members may see peers_pending at different times.
            flag = torch.tensor([int(comm.peers_pending)], dtype=torch.int32)
            comm.all_reduce(flag, op="max")
            if flag.item():
                recover()
                continue
            with torch.no_grad():  # inner phase starts from the global params
                for p, g in zip(model.parameters(), params):
                    p.copy_(g)
            for _ in range(args.inner_steps):
                x, y = make_data(data_gen, 64)
                loss = torch.nn.functional.mse_loss(model(x), y)
                inner.zero_grad()
                loss.backward()
                inner.step()
            with torch.no_grad():
                pseudo = parameters_to_vector(params) - parameters_to_vector(model.parameters())
            comm.all_reduce(pseudo, op="avg", quantization=args.quantization)
        except eccl.PeerLostError as e:
            # Every member failed the op (and holds its input again). Redo the whole outer
            # step: the update may admit a newcomer, which starts at the top of the loop.
            print(f"peer lost at step={int(step)} ({e}); update_topology and retry", flush=True)
            recover()
            continue
        off = 0  # the outer Nesterov step on identical inputs: identical bits everywhere
        for p in params:
            p.grad = pseudo[off:off + p.numel()].view_as(p)
            off += p.numel()
        outer.step()
        step += 1
        digest, loss = report()
        time.sleep(args.step_delay)  # stands for real work; gives the parent time to act
    print(f"final step={int(step)} hash={digest} loss={loss:.5f}", flush=True)
    comm.close()


def parent(args):
    if not (args.join_at < args.outer_steps - 1 and args.kill_at < args.outer_steps - 1):
        print("diloco: --join-at and --kill-at must come before the last outer steps")
        return 2
    master = eccl.Master()
    procs, lines = {}, queue.Queue()

    def start(wid):
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", master.address,
               "--worker-id", str(wid)] + sys.argv[1:]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             stdin=subprocess.PIPE, text=True)
        procs[wid] = p

        def pump():  # the worker's lines into one queue; None when it closed its stdout
            for line in p.stdout:
                lines.put((wid, line.rstrip()))
            lines.put((wid, None))
        threading.Thread(target=pump, daemon=True).start()

    def tell(wid):
        procs[wid].stdin.write("go\n")
        procs[wid].stdin.flush()

    print(f"diloco: master {master.address}, {args.workers} workers, {args.outer_steps} outer "
          f"x {args.inner_steps} inner steps, codec {args.quantization}", flush=True)
    for wid in range(args.workers):
        start(wid)
    # The late joiner starts now too (importing torch takes seconds); it connects on our word.
    joiner = args.workers
    if args.join_at >= 0:
        start(joiner)
    victim, killed, joined, ready = 1, False, False, 0
    hashes, finals, losses, open_streams = {}, {}, [], len(procs)
    deadline = time.monotonic() + args.timeout
    while open_streams:
        try:
            wid, line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            print("diloco: FAIL: timed out", flush=True)
            for p in procs.values():
                p.kill()
            return 1
        if line is None:
            open_streams -= 1
            if ready < len(procs):  # it died before training started: the others would wait
                print(f"diloco: FAIL: worker w{wid} exited during startup", flush=True)
                for p in procs.values():
                    p.kill()
                return 1
            continue
        if line == "ready":
            ready += 1
            if ready == len(procs):  # everyone imported torch: the first members start
                for w in range(args.workers):
                    tell(w)
            continue
        print(f"[w{wid}] {line}", flush=True)
        m = re.match(r"(final )?step=(\d+) .*hash=(\w+) loss=([\d.]+)", line)
        if not m:
            continue
        s = int(m.group(2))
        if m.group(1):
            finals[wid] = m.group(3)
        else:
            hashes.setdefault(s, set()).add(m.group(3))
            losses.append((s, float(m.group(4))))
        if s >= args.join_at >= 0 and not joined:
            print(f"event join worker w{joiner} after step {s}", flush=True)
            tell(joiner)
            joined = True
        if s >= args.kill_at >= 0 and not killed and args.workers > 1:
            procs[victim].send_signal(signal.SIGKILL)
            print(f"event SIGKILL worker w{victim} after step {s}", flush=True)
            killed = True
    codes = {wid: p.wait() for wid, p in procs.items()}
    master.close()

    errors = [f"w{w} exited {c}" for w, c in codes.items()
              if c != 0 and not (killed and w == victim)]
    expected = set(procs) - ({victim} if killed else set())
    if set(finals) != expected:
        errors.append(f"final hashes from {sorted(finals)}, expected {sorted(expected)}")
    if len(set(finals.values())) > 1:
        errors.append(f"final hashes differ: {finals}")
    split = {s: h for s, h in hashes.items() if len(h) > 1}
    if split:
        errors.append(f"hashes differ at steps {split}")
    losses.sort()
    if not losses or not losses[-1][1] < 0.7 * losses[0][1]:
        errors.append(f"loss did not fall enough: {losses[:1]} -> {losses[-1:]}")
    if errors:
        print("diloco: FAIL: " + "; ".join(errors), flush=True)
        return 1
    print(f"diloco: OK: {len(finals)} workers end with hash {next(iter(finals.values()))}, "
          f"same hash at all {len(hashes)} steps, loss {losses[0][1]:.4f} -> "
          f"{losses[-1][1]:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--outer-steps", type=int, default=12)
    ap.add_argument("--inner-steps", type=int, default=10)
    ap.add_argument("--kill-at", type=int, default=6, help="outer step; -1: no kill")
    ap.add_argument("--join-at", type=int, default=3, help="outer step; -1: no join")
    ap.add_argument("--quantization", default="bfloat16",
                    choices=["none", "float16", "bfloat16", "uint8", "uint4"])
    ap.add_argument("--step-delay", type=float, default=0.1, help="seconds per outer step")
    ap.add_argument("--timeout", type=float, default=120, help="parent gives up after this")
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # internal: the master's address
    ap.add_argument("--worker-id", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:  # only workers need torch (the parent starts faster without it)
        import copy
        import torch
        from torch.nn.utils import parameters_to_vector
        worker(args)
    else:
        sys.exit(parent(args))
