"""The torch.distributed backend "eccl": importing this module registers it.

    import eccl.torch, torch.distributed as dist
    dist.init_process_group("eccl", rank=r, world_size=n, init_method="tcp://host:port")

Rank 0 starts an embedded eccl.Master and publishes its address through the c10d store; every
rank connects, and init returns once all n are members. CPU tensors: all_reduce (SUM, AVG,
PRODUCT, MIN, MAX), broadcast, barrier, sync or async (Work with get_future()). Other
collectives raise NotImplementedError naming the collective. A dead peer raises
eccl.PeerLostError ("ecclPeerLost: ..."); the process group's `.communicator` is the
eccl.Communicator, for update_topology() and the rest of the elastic API.

Environment: ECCL_MASTER_LISTEN ("host:port" rank 0's master listens on; default
"127.0.0.1:0", or "0.0.0.0:0" when MASTER_ADDR names another host), ECCL_AUTH_TOKEN (needed
off loopback), ECCL_OP_TIMEOUT (seconds, default 60)."""

from __future__ import annotations

import inspect
import os
import socket
import threading
import time
import weakref
from datetime import timedelta

import torch
import torch.distributed as dist
from torch._C._distributed_c10d import ProcessGroup as _ProcessGroup
from torch._C._distributed_c10d import Work as _Work

from ._core import Communicator, Master, ReduceOp, Work

BACKEND = "eccl"
_STORE_KEY = "eccl/master"
_JOINED_KEY = "eccl/joined"  # processes that connected ...
_LEFT_KEY = "eccl/left"  # ... and those that left again
_FAILED = "failed: "

_OPS = [
    (dist.ReduceOp.SUM, ReduceOp.SUM),
    (dist.ReduceOp.PRODUCT, ReduceOp.PROD),
    (dist.ReduceOp.MIN, ReduceOp.MIN),
    (dist.ReduceOp.MAX, ReduceOp.MAX),
]
if hasattr(dist.ReduceOp, "AVG"):
    _OPS.append((dist.ReduceOp.AVG, ReduceOp.AVG))


def _reduce_op(op) -> ReduceOp:
    for theirs, ours in _OPS:
        if op == theirs:
            return ours
    raise NotImplementedError(f"eccl backend: reduce op {op} is not supported (ECCL has SUM, "
                              "AVG, PRODUCT, MIN, MAX)")


def _single(tensors, what: str) -> torch.Tensor:
    if len(tensors) != 1:
        raise ValueError(f"eccl backend: {what} takes one tensor per process, got {len(tensors)}")
    t = tensors[0]
    if t.device.type != "cpu":
        raise ValueError(f"eccl backend: {what} got a tensor on {t.device}; this backend "
                         "moves CPU tensors")
    # As gloo: parameters that require grad are reduced in place (detach shares storage).
    return t.detach()


# Ops of at most this many bytes run to completion inside the call (their Work is done when
# returned): an async op's hand-off to the library's worker thread costs more than such an op
# takes (24 us vs 8 us of CPU per call), and there is nothing worth overlapping. Larger ones
# run asynchronously. Ops of one tag run in issue order either way.
SYNC_BYTES = 64 * 1024


class _Finished:
    """An op already run: the eccl.Work interface over its outcome."""

    def __init__(self, run):
        try:
            self._outcome = run()
        except Exception as e:  # noqa: BLE001 - raised by wait(), as an async op's would be
            self._outcome = e

    def wait(self):
        if isinstance(self._outcome, Exception):
            raise self._outcome
        return self._outcome

    def done(self) -> bool:
        return True


def _start(t: torch.Tensor, run_sync, run_async):
    if t.numel() * t.element_size() <= SYNC_BYTES:
        return _Finished(run_sync)
    return run_async()


class EcclWork(_Work):
    """A c10d Work over an eccl.Work. wait() raises the op's eccl.Error."""

    def __init__(self, work: Work | _Finished, result: list):
        super().__init__()
        self._work = work
        self._result = result
        self._future = None
        self._future_lock = threading.Lock()

    def wait(self, timeout: timedelta | None = None) -> bool:  # noqa: ARG002 - op_timeout rules
        self._work.wait()
        return True

    def is_completed(self) -> bool:
        return self._work.done()

    def is_success(self) -> bool:
        if not self._work.done():
            return False
        try:
            self._work.wait()
        except Exception:  # noqa: BLE001
            return False
        return True

    def exception(self):
        try:
            self._work.wait()
        except Exception as e:  # noqa: BLE001
            return e
        return None

    def result(self) -> list:
        self._work.wait()
        return self._result

    def get_future(self) -> torch.futures.Future:
        """A Future completed (from a helper thread) with the output tensors, or the error."""
        with self._future_lock:
            if self._future is None:
                future = torch.futures.Future()

                def complete():
                    try:
                        self._work.wait()
                    except Exception as e:  # noqa: BLE001
                        future.set_exception(e)
                    else:
                        future.set_result(self._result)

                threading.Thread(target=complete, name="eccl-future", daemon=True).start()
                self._future = future
            return self._future


class ProcessGroupECCL(_ProcessGroup):
    """torch.distributed ProcessGroup over an eccl.Communicator (see the module's doc)."""

    def __init__(self, store, rank: int, size: int, timeout: timedelta):
        super().__init__(rank, size)
        self._size = size
        self._rank = rank
        self._members = _Membership(store, timeout)
        # Leaves the group when the process group is freed, or at interpreter exit (torch
        # 1.13's destroy_process_group does not call shutdown()).
        self._finalizer = weakref.finalize(self, self._members.close)
        self.master: Master | None = None
        if rank == 0:
            try:
                listen = _listen_address()
                self.master = self._members.master = Master(
                    listen, allow_unauthenticated=_off_loopback_ok())
            except Exception as e:
                # The others wait for the address: tell them why there is none.
                store.set(_STORE_KEY, f"{_FAILED}{e}")
                raise
            store.set(_STORE_KEY, _published_address(self.master, listen))
        address = store.get(_STORE_KEY).decode()
        if address.startswith(_FAILED):
            raise RuntimeError(f"eccl backend: rank 0 could not start the master: "
                               f"{address[len(_FAILED):]}")
        self.communicator = self._members.communicator = Communicator(
            address, op_timeout=float(os.environ.get("ECCL_OP_TIMEOUT", "60")))
        try:
            store.add(_JOINED_KEY, 1)
            self.communicator.connect()
            self.communicator.wait_for_world(size, timeout.total_seconds())
        except BaseException:
            self.shutdown()
            raise
        self._ranks_epoch = -1
        self._eccl_rank: list[int] = []

    # ---- what torch asks of a backend ---------------------------------------------------

    def name(self) -> str:
        return BACKEND

    def getBackendName(self) -> str:  # noqa: N802 - torch's name
        return BACKEND

    def _get_backend_name(self) -> str:
        return BACKEND

    def size(self) -> int:
        return self._size

    def rank(self) -> int:
        return self._rank

    def allreduce(self, tensors, opts=None):
        t = _single(tensors, "all_reduce")
        op = _reduce_op(opts.reduceOp) if opts is not None else ReduceOp.SUM
        c = self.communicator
        return EcclWork(_start(t, lambda: c.all_reduce(t, op), lambda: c.all_reduce_async(t, op)),
                        tensors)

    def broadcast(self, tensors, opts=None):
        t = _single(tensors, "broadcast")
        root = self._eccl_root(opts.rootRank if opts is not None else 0)
        c = self.communicator
        return EcclWork(_start(t, lambda: c.broadcast(t, root), lambda: c.broadcast_async(t, root)),
                        tensors)

    def barrier(self, opts=None):  # noqa: ARG002
        token = torch.zeros(1, dtype=torch.int32)
        return EcclWork(_Finished(lambda: self.communicator.all_reduce(token)), [token])

    def shutdown(self) -> None:
        """Leaves the group; rank 0 then stops its master once the other members left (at
        most 10 s). Idempotent."""
        self._finalizer()

    # ---- ranks --------------------------------------------------------------------------

    def _eccl_root(self, torch_rank: int) -> int:
        """The ring rank of torch rank `torch_rank` in the current epoch: a collective
        all-reduce of (torch rank -> ring rank) whenever the epoch changed."""
        epoch = self.communicator.epoch
        if epoch != self._ranks_epoch:
            table = torch.zeros(self._size, dtype=torch.int64)
            table[self._rank] = self.communicator.rank + 1
            self.communicator.all_reduce(table)
            self._eccl_rank = [int(r) - 1 for r in table]
            self._ranks_epoch = epoch
        if not 0 <= torch_rank < self._size or self._eccl_rank[torch_rank] < 0:
            raise ValueError(f"eccl backend: broadcast root {torch_rank} is not a member of "
                             "the current epoch")
        return self._eccl_rank[torch_rank]


class _Membership:
    """What a process group holds open, closed apart from it (weakref.finalize)."""

    def __init__(self, store, timeout: timedelta):
        self.store = store
        self.timeout = timeout
        self.master: Master | None = None
        self.communicator: Communicator | None = None

    def close(self) -> None:
        if self.communicator is not None:
            self.communicator.close()
            _try(lambda: self.store.add(_LEFT_KEY, 1))
        if self.master is not None:
            # The others leave through the master: keep it until every process that joined
            # left (one that died never does: at most 10 s).
            deadline = time.monotonic() + min(self.timeout.total_seconds(), 10.0)
            while time.monotonic() < deadline and _try(
                    lambda: self.store.add(_LEFT_KEY, 0) < self.store.add(_JOINED_KEY, 0), False):
                time.sleep(0.01)
            self.master.close()


def _try(call, default=None):
    try:
        return call()
    except Exception:  # noqa: BLE001 - the store's host (rank 0) may be gone already
        return default


def _listen_address() -> str:
    listen = os.environ.get("ECCL_MASTER_LISTEN")
    if listen:
        return listen
    peer = os.environ.get("MASTER_ADDR", "127.0.0.1")
    return "127.0.0.1:0" if peer in ("127.0.0.1", "localhost", "::1") else "0.0.0.0:0"


def _off_loopback_ok() -> bool:
    # Off loopback the master demands a token (ECCL_AUTH_TOKEN) unless this is set.
    return os.environ.get("ECCL_ALLOW_UNAUTHENTICATED", "0") == "1"


def _published_address(master: Master, listen: str) -> str:
    """What the other ranks dial: the listen host when it is one address, else (a wildcard)
    MASTER_ADDR, else this host's name."""
    host = listen.rpartition(":")[0].strip("[]")
    if host in ("0.0.0.0", "::", ""):
        host = os.environ.get("MASTER_ADDR") or socket.gethostname()
    return f"[{host}]:{master.port}" if ":" in host else f"{host}:{master.port}"


def _unsupported(name: str):
    def method(self, *args, **kwargs):  # noqa: ARG001
        raise NotImplementedError(f"eccl backend: {name} is not an ECCL collective (it has "
                                  "all_reduce, broadcast and barrier)")
    method.__name__ = name
    return method


for _name in ("allgather", "allgather_coalesced", "allreduce_coalesced", "alltoall",
              "alltoall_base", "gather", "reduce", "reduce_scatter", "scatter", "send", "recv",
              "recv_anysource", "monitored_barrier", "_allgather_base", "_reduce_scatter_base",
              "allgather_into_tensor_coalesced", "reduce_scatter_tensor_coalesced"):
    setattr(ProcessGroupECCL, _name, _unsupported(_name))


def _create(store, rank, size, timeout):
    return ProcessGroupECCL(store, rank, size, timeout)


if BACKEND.upper() not in getattr(dist.Backend, "_plugins", {}) and not hasattr(
        dist.Backend, BACKEND.upper()):
    if "devices" in inspect.signature(dist.Backend.register_backend).parameters:
        dist.Backend.register_backend(BACKEND, _create, devices=["cpu"])
    else:  # torch < 2.1
        dist.Backend.register_backend(BACKEND, _create)
