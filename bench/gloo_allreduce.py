#!/usr/bin/env python3
"""All-reduce benchmark for torch.distributed's gloo backend (the baseline), and for
ECCL from Python: --backend eccl (the torch.distributed backend "eccl" of the eccl
package) or eccl-python (eccl.Communicator.all_reduce on the same torch tensors).

Runs N local processes (CPU tensors) that talk over loopback and measures
all_reduce the way nccl-tests does, so the numbers can be put side by side
with ECCL's `eccl-bench allreduce`:

  * sizes are swept from -b/--minbytes to -e/--maxbytes, multiplying by
    -f/--stepfactor (suffixes K/M/G, powers of 1024);
  * per size: `warmup` untimed all_reduces, a barrier, then `iters` timed
    all_reduces; the per-iteration average of each rank is all_reduced with
    MAX and the slowest rank's time is reported;
  * algbw = bytes / time, busbw = algbw * 2*(n-1)/n, GB/s = 1e9 bytes/s.

Rendezvous: the parent process hosts a TCPStore on 127.0.0.1 with a port
picked by the kernel (port 0), the ranks connect to it as clients, and
GLOO_SOCKET_IFNAME defaults to the loopback interface.

Examples:
  python3 bench/gloo_allreduce.py --peers 4 -b 8 -e 64M -f 2
  python3 bench/gloo_allreduce.py --peers 4 -b 64M -e 64M --json
"""

import argparse
import datetime
import json
import os
import re
import sys
import time

INSTALL_HINT = "install python3-torch (apt) or torch (pip)"

DTYPES = ("float32", "float64", "int32", "float16", "bfloat16")
ELEM_SIZE = {"float32": 4, "float64": 8, "int32": 4, "float16": 2, "bfloat16": 2}
OPS = ("sum", "max", "min", "prod")
BACKENDS = ("gloo", "eccl", "eccl-python")

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgKMG]?)(?:i?[bB])?\s*$")
_SIZE_MULT = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text):
    """'8' -> 8, '64K' -> 65536, '64M'/'64MiB'/'64MB' -> 67108864 (binary units)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(
            "invalid size %r (expected an integer with optional K/M/G suffix)" % text)
    return int(m.group(1)) * _SIZE_MULT[m.group(2).lower()]


def positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("invalid integer %r" % text)
    if v < 1:
        raise argparse.ArgumentTypeError("must be >= 1, got %d" % v)
    return v


def non_negative_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("invalid integer %r" % text)
    if v < 0:
        raise argparse.ArgumentTypeError("must be >= 0, got %d" % v)
    return v


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="torch.distributed gloo all_reduce benchmark (nccl-tests style)")
    p.add_argument("--peers", "-p", type=positive_int, default=4,
                   help="number of local processes (default 4)")
    p.add_argument("-b", "--minbytes", type=parse_size, default=parse_size("8"),
                   help="smallest message size in bytes, K/M/G suffixes allowed (default 8)")
    p.add_argument("-e", "--maxbytes", type=parse_size, default=parse_size("64M"),
                   help="largest message size in bytes (default 64M)")
    p.add_argument("-f", "--stepfactor", type=positive_int, default=2,
                   help="multiply the size by this factor each step (default 2)")
    p.add_argument("-d", "--dtype", choices=DTYPES, default="float32",
                   help="element type (default float32)")
    p.add_argument("-o", "--op", choices=OPS, default="sum",
                   help="reduction operation (default sum)")
    p.add_argument("-n", "--iters", type=positive_int, default=20,
                   help="timed iterations per size (default 20)")
    p.add_argument("-w", "--warmup", type=non_negative_int, default=5,
                   help="untimed warmup iterations per size (default 5)")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="skip the one-shot correctness check per size")
    p.add_argument("--timeout", type=positive_int, default=300,
                   help="process-group timeout in seconds (default 300)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object to stdout instead of the table")
    p.add_argument("--backend", choices=BACKENDS, default="gloo",
                   help="gloo (default), eccl (torch.distributed backend of the eccl package) "
                   "or eccl-python (eccl.Communicator directly); eccl needs the package on "
                   "PYTHONPATH")
    args = p.parse_args(argv)
    if args.minbytes > args.maxbytes:
        p.error("--minbytes (%d) is larger than --maxbytes (%d)" % (args.minbytes, args.maxbytes))
    if args.stepfactor < 2 and args.minbytes != args.maxbytes:
        p.error("--stepfactor must be >= 2 unless --minbytes == --maxbytes")
    return args


def size_list(minbytes, maxbytes, stepfactor, elem_size):
    """Byte sizes of the sweep, rounded down to whole elements (at least one)."""
    out = []
    size = minbytes
    while True:
        count = max(1, size // elem_size)
        nbytes = count * elem_size
        if not out or out[-1] != nbytes:
            out.append(nbytes)
        if stepfactor < 2 or size * stepfactor > maxbytes:
            break
        size *= stepfactor
    return out


def _torch_dtype(torch, name):
    return getattr(torch, name)


def _reduce_op(dist, name):  # dist: torch.distributed or _EcclPython
    return {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX,
            "min": dist.ReduceOp.MIN, "prod": dist.ReduceOp.PRODUCT}[name]


def _check(torch, dist, rank, world, count, dtype, op, redop):
    """One all_reduce on rank/position-dependent data, compared to the expected result."""
    idx = torch.arange(count, dtype=torch.float64)
    pos = torch.remainder(idx, 7)
    n = float(world)
    if op == "prod":
        # factors in {1, 2}: the product is a power of two, exact in every dtype
        base = float(rank % 2 + 1)
        data = torch.full((count,), base, dtype=torch.float64)
        expected = torch.full((count,), float(2 ** ((world) // 2)), dtype=torch.float64)
    else:
        data = pos + float(rank + 1)
        if op == "sum":
            expected = n * pos + n * (n + 1) / 2
        elif op == "max":
            expected = pos + n
        else:
            expected = pos + 1.0
    t = data.to(dtype)
    dist.all_reduce(t, op=redop)
    got = t.to(torch.float64)
    want = expected.to(dtype).to(torch.float64)
    if dtype in (torch.float16, torch.bfloat16):
        ok = torch.allclose(got, want, rtol=1e-2, atol=0.0)
    else:
        ok = torch.equal(got, want)
    if not ok:
        bad = int((got != want).sum().item())
        raise RuntimeError("rank %d: all_reduce(%s) of %d elements gave %d wrong values"
                           % (rank, op, count, bad))


def _probe(torch, dist, args):
    """Try the dtype/op on a one-rank gloo group so unsupported combinations
    fail here with a clear message instead of inside every spawned rank."""
    try:
        pg = dist.ProcessGroupGloo(dist.HashStore(), 0, 1, datetime.timedelta(seconds=30))
        opts = dist.AllreduceOptions()
        opts.reduceOp = _reduce_op(dist, args.op)
        pg.allreduce([torch.ones(2, dtype=_torch_dtype(torch, args.dtype))], opts).wait()
    except (RuntimeError, AttributeError, TypeError) as exc:
        return "the gloo backend of torch %s cannot all_reduce(%s) %s tensors: %s" % (
            torch.__version__, args.op, args.dtype, exc)
    return None


class _EcclPython:
    """The slice of torch.distributed this benchmark calls, straight on the eccl.Communicator
    that the torch backend sets up (rank 0's master, its address in the store)."""

    class ReduceOp:
        SUM, MAX, MIN, PRODUCT = "sum", "max", "min", "prod"

    def __init__(self, store, rank, size, timeout):
        from eccl.torch import ProcessGroupECCL

        self.pg = ProcessGroupECCL(store, rank, size, timeout)
        self.comm = self.pg.communicator

    def get_world_size(self):
        return self.comm.world_size

    def all_reduce(self, tensor, op="sum"):
        self.comm.all_reduce(tensor, op)

    def barrier(self):
        import numpy as np

        self.comm.all_reduce(np.zeros(1, np.int32))

    def destroy_process_group(self):
        self.pg.shutdown()


def _worker(rank, args, port, sizes, torch_version):
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    timeout = datetime.timedelta(seconds=args.timeout)
    store = dist.TCPStore("127.0.0.1", port, args.peers, False, timeout=timeout)
    if args.backend == "eccl-python":
        dist = _EcclPython(store, rank, args.peers, timeout)
    else:
        if args.backend == "eccl":
            import eccl.torch  # noqa: F401  registers the backend
        dist.init_process_group(args.backend, store=store, rank=rank, world_size=args.peers,
                                timeout=timeout)
    world = dist.get_world_size()
    dtype = _torch_dtype(torch, args.dtype)
    redop = _reduce_op(dist, args.op)
    esize = ELEM_SIZE[args.dtype]
    busfactor = 2.0 * (world - 1) / world
    out = sys.stdout
    rows = []

    if rank == 0 and not args.json:
        out.write("# %s all_reduce benchmark: torch %s, %d peers (local, loopback), "
                  "iters %d, warmup %d, torch threads 1\n"
                  % (args.backend, torch_version, world, args.iters, args.warmup))
        out.write("#\n")
        out.write("#       size         count      type   redop    time(us)"
                  "   algbw(GB/s)   busbw(GB/s)\n")
        out.write("#        (B)    (elements)\n")
        out.flush()

    for nbytes in sizes:
        count = nbytes // esize
        if args.check:
            _check(torch, dist, rank, world, count, dtype, args.op, redop)
        # Values that stay put under repeated in-place reduction (no overflow,
        # no denormals): 0 for sum, 1 for prod, rank-dependent for max/min.
        if args.op == "sum":
            buf = torch.zeros(count, dtype=dtype)
        elif args.op == "prod":
            buf = torch.ones(count, dtype=dtype)
        else:
            buf = torch.full((count,), float(rank + 1), dtype=dtype)

        for _ in range(args.warmup):
            dist.all_reduce(buf, op=redop)
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(args.iters):
            dist.all_reduce(buf, op=redop)
        elapsed = (time.perf_counter() - t0) / args.iters

        tt = torch.tensor([elapsed], dtype=torch.float64)
        dist.all_reduce(tt, op=dist.ReduceOp.MAX)
        sec = float(tt.item())
        algbw = nbytes / sec / 1e9
        busbw = algbw * busfactor
        row = {"op": "allreduce", "bytes": nbytes, "count": count, "dtype": args.dtype,
               "redop": args.op, "time_us": sec * 1e6, "algbw_gbps": algbw,
               "busbw_gbps": busbw}
        rows.append(row)
        if rank == 0 and not args.json:
            out.write("%12d  %12d  %8s  %6s  %10.2f  %12.4f  %12.4f\n"
                      % (nbytes, count, args.dtype, args.op, sec * 1e6, algbw, busbw))
            out.flush()

    if rank == 0:
        if args.json:
            doc = {"tool": args.backend, "peers": world, "torch": torch_version,
                   "iters": args.iters, "warmup": args.warmup, "rows": rows}
            out.write(json.dumps(doc) + "\n")
        else:
            avg = sum(r["busbw_gbps"] for r in rows) / len(rows)
            out.write("# Avg bus bandwidth    : %g\n" % avg)
        out.flush()

    dist.barrier()
    dist.destroy_process_group()


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)

    try:
        import torch
        import torch.distributed as dist
        import torch.multiprocessing as mp
    except ImportError as exc:
        sys.stderr.write("gloo_allreduce.py: error: cannot import torch (%s); %s\n"
                         % (exc, INSTALL_HINT))
        return 2
    if not dist.is_available() or not dist.is_gloo_available():
        sys.stderr.write("gloo_allreduce.py: error: this torch build (%s) has no "
                         "torch.distributed gloo backend; %s\n" % (torch.__version__, INSTALL_HINT))
        return 2

    # Keep every rank single-threaded (the machine may have very few cores) and
    # on the loopback interface, unless the caller chose otherwise.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    if "GLOO_SOCKET_IFNAME" not in os.environ and os.path.isdir("/sys/class/net/lo"):
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)

    problem = _probe(torch, dist, args)
    if problem:
        sys.stderr.write("gloo_allreduce.py: error: %s\n" % problem)
        return 2

    sizes = size_list(args.minbytes, args.maxbytes, args.stepfactor, ELEM_SIZE[args.dtype])

    # The parent hosts the rendezvous store; port 0 lets the kernel pick a free
    # port, so there is no probe-then-bind race.
    timeout = datetime.timedelta(seconds=args.timeout)
    store = dist.TCPStore("127.0.0.1", 0, args.peers, True, timeout=timeout,
                          wait_for_workers=False)
    try:
        mp.spawn(_worker, args=(args, store.port, sizes, torch.__version__),
                 nprocs=args.peers, join=True)
    except KeyboardInterrupt:
        sys.stderr.write("gloo_allreduce.py: interrupted\n")
        return 130
    except Exception as exc:  # ProcessRaisedException / ProcessExitedException
        sys.stderr.write("gloo_allreduce.py: error: a rank failed:\n%s\n" % exc)
        return 1
    finally:
        del store
    return 0


if __name__ == "__main__":
    sys.exit(main())
