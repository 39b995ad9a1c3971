"""Master, Communicator, Work and SharedState: the Pythonic layer over eccl._eccl."""

from __future__ import annotations

import builtins
import threading
import time
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Iterable, Mapping

from . import _eccl
from ._errors import InvalidArgumentError


class ReduceOp(IntEnum):
    """ecclRedOp_t. AVG sums, then divides once by the world size (integers truncate)."""

    SUM = 0
    AVG = 1
    PROD = 2
    MAX = 3
    MIN = 4


class Quantization(IntEnum):
    """ecclQuantization_t: the payload codec of an op (docs/codecs.md); float tensors only."""

    NONE = 0
    FLOAT16 = 1
    BFLOAT16 = 2
    UINT8 = 3
    UINT4 = 4


class Rounding(IntEnum):
    """ecclRounding_t: how a codec rounds. STOCHASTIC is unbiased and still deterministic."""

    NEAREST = 0
    STOCHASTIC = 1


class SyncStrategy(IntEnum):
    """ecclSyncStrategy_t: a member's part in a shared-state sync (docs/state.md)."""

    ENFORCE_POPULAR = 0
    RECEIVE_ONLY = 1
    SEND_ONLY = 2


def _enum(cls: type[IntEnum], value: Any, what: str) -> int:
    """An enum member from itself, its name in any case ("sum", "AVG"), or None (= 0)."""
    if value is None:
        return 0
    if isinstance(value, cls):
        return int(value)
    if isinstance(value, str):
        try:
            return int(cls[value.upper()])
        except KeyError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            return int(cls(value))
        except ValueError:
            pass
    names = ", ".join(m.name.lower() for m in cls)
    raise InvalidArgumentError(f"{what} {value!r} is not one of: {names}")


def _ms(seconds: float | None, what: str) -> int:
    if seconds is None:
        return 0
    if seconds <= 0:
        raise InvalidArgumentError(f"{what} must be positive seconds, got {seconds!r}")
    return max(1, int(round(seconds * 1000)))


def _host_port(address: str) -> tuple[str, int]:
    """("host", port) from "host:port" or "[v6]:port"."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise InvalidArgumentError(f'listen address {address!r} is not "host:port"')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


@dataclass(frozen=True)
class OpInfo:
    """What one all-reduce or broadcast did (ecclOpInfo_t)."""

    bytes_sent: int
    bytes_received: int
    logical_bytes_sent: int
    logical_bytes_received: int
    world_size: int
    epoch: int
    seconds: float
    streams: int
    shared_memory: bool


@dataclass(frozen=True)
class SyncInfo:
    """What one shared-state sync did (ecclSyncInfo_t). bytes_from_source maps each source
    peer's id to the bytes it sent this member."""

    bytes_sent: int
    bytes_received: int
    revision: int
    tensors_fetched: int
    sources_lost: int
    bytes_from_source: dict
    seconds: float


class Master:
    """The membership manager, served from a background thread of this process.

    listen: "host:port"; port 0 picks a free one (see .port). Without a token the master
    listens on loopback only unless allow_unauthenticated=True. Timeouts are in seconds.
    Use as a context manager, or call close(); connected peers then see
    MasterUnreachableError."""

    def __init__(
        self,
        listen: str = "127.0.0.1:0",
        auth_token: str | None = None,
        *,
        heartbeat_interval: float = 0.5,
        failure_timeout: float = 2.0,
        vote_timeout: float = 60.0,
        allow_unauthenticated: bool = False,
        trust_advertised_addresses: bool = False,
        tls: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_ca: str | None = None,
    ):
        self._host, port = _host_port(listen)
        self._native = _eccl.Master(
            host=self._host or None,
            port=port,
            auth_token=auth_token,
            heartbeat_ms=_ms(heartbeat_interval, "heartbeat_interval"),
            failure_timeout_ms=_ms(failure_timeout, "failure_timeout"),
            vote_timeout_ms=_ms(vote_timeout, "vote_timeout"),
            allow_unauthenticated=allow_unauthenticated,
            trust_advertised_addresses=trust_advertised_addresses,
            tls=tls,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_ca=tls_ca,
        )

    @property
    def port(self) -> int:
        """The TCP port the master listens on."""
        return self._native.port

    @property
    def address(self) -> str:
        """"host:port" for Communicator(master=...) (0.0.0.0 and :: read as loopback)."""
        host = self._host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def closed(self) -> bool:
        return self._native.closed

    def close(self) -> None:
        """Stops serving. Idempotent."""
        self._native.close()

    def __enter__(self) -> Master:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<eccl.Master {'closed' if self.closed else self.address}>"


class Work:
    """An asynchronous op. wait() blocks (without the GIL) until it finished on this member,
    returns its OpInfo or raises its Error; it may be called from any thread, more than once.
    done() never blocks. The arrays stay referenced until the op finished."""

    def __init__(self, native: Any, arrays: tuple):
        self._native = native
        self._arrays = arrays
        self._lock = threading.Lock()
        self._outcome: OpInfo | BaseException | None = None

    def wait(self) -> OpInfo:
        with self._lock:
            if self._outcome is None:
                try:
                    self._outcome = OpInfo(**self._native.wait())
                except BaseException as e:  # noqa: BLE001 - re-raised to every waiter
                    self._outcome = e
                self._arrays = ()
        if isinstance(self._outcome, BaseException):
            raise self._outcome
        return self._outcome

    def done(self) -> bool:
        return self._outcome is not None or self._native.done()

    def __repr__(self) -> str:
        return f"<eccl.Work {'done' if self.done() else 'running'}>"


class SharedState:
    """Named tensors kept identical across a peer group (docs/state.md).

    tensors: name -> NumPy array or torch tensor (contiguous, host memory), held by
    reference: a sync writes the elected content into them in place. allow_divergence: names
    never compared or transferred. revision: +1 per sync; updated by each sync."""

    def __init__(
        self,
        tensors: Mapping[str, Any],
        *,
        revision: int = 0,
        allow_divergence: Iterable[str] = (),
    ):
        self.tensors = dict(tensors)
        self.revision = int(revision)
        self.allow_divergence = set(allow_divergence)
        unknown = self.allow_divergence - self.tensors.keys()
        if unknown:
            raise InvalidArgumentError(f"allow_divergence names no tensor: {sorted(unknown)}")

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, Any],
        *,
        revision: int = 0,
        allow_divergence: Iterable[str] = (),
    ) -> SharedState:
        """A state over a torch state_dict (a module's or an optimizer's flattened one): the
        tensors are shared with it, so a sync updates the model in place. Non-tensor entries
        (an optimizer's step counts as ints, say) are refused: put them in a tensor."""
        tensors = {}
        for name, value in state_dict.items():
            if not hasattr(value, "__dlpack__") and not hasattr(value, "__buffer__"):
                try:
                    memoryview(value)
                except TypeError:
                    raise InvalidArgumentError(
                        f"state_dict entry {name!r} is a {type(value).__name__}, not a tensor"
                    ) from None
            if getattr(value, "requires_grad", False):
                value = value.detach()
            tensors[name] = value
        return cls(tensors, revision=revision, allow_divergence=allow_divergence)

    def __repr__(self) -> str:
        return f"<eccl.SharedState {len(self.tensors)} tensors, revision {self.revision}>"


class Communicator:
    """A member of an ECCL group: all-reduce and broadcast that keep working while peers join
    and die. Nothing is contacted until connect().

    master: the master's "host:port". peer_group: collectives are scoped to it (FSDP shards
    use their shard index). streams: TCP streams per neighbour link (None = adaptive).
    Timeouts in seconds; failure_timeout must match the master's. Use as a context manager,
    or call close()."""

    def __init__(
        self,
        master: str,
        peer_group: int = 0,
        *,
        streams: int | None = None,
        auth_token: str | None = None,
        connect_timeout: float = 10.0,
        op_timeout: float = 60.0,
        heartbeat_interval: float = 0.5,
        failure_timeout: float = 2.0,
        advertised_address: str | None = None,
        bind_address: str | None = None,
        transport: str | None = None,
        tls: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_ca: str | None = None,
    ):
        if streams is not None and streams <= 0:
            raise InvalidArgumentError(f"streams must be positive or None, got {streams!r}")
        self._native = _eccl.Comm(
            master=master,
            peer_group=peer_group,
            transport=transport,
            streams=streams or 0,
            auth_token=auth_token,
            connect_timeout_ms=_ms(connect_timeout, "connect_timeout"),
            op_timeout_ms=_ms(op_timeout, "op_timeout"),
            advertised_address=advertised_address,
            bind_address=bind_address,
            heartbeat_ms=_ms(heartbeat_interval, "heartbeat_interval"),
            failure_timeout_ms=_ms(failure_timeout, "failure_timeout"),
            tls=tls,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_ca=tls_ca,
        )
        self._sync_lock = threading.Lock()

    # ---- membership ---------------------------------------------------------------------

    def connect(self) -> None:
        """Registers with the master and blocks until admitted: at once into an empty world,
        else at the members' next update_topology()."""
        self._native.connect()

    def update_topology(self) -> None:
        """Collective over all members: admits pending peers, drops dead ones, rewires the
        ring. Call it after a PeerLostError, or when peers_pending is true."""
        self._native.update_topology()

    def optimize_topology(self) -> None:
        """update_topology() that first measures bandwidths and reorders the ring for them."""
        self._native.optimize_topology()

    def wait_for_world(self, size: int, timeout: float | None = None) -> None:
        """Blocks until this peer group's world has at least `size` members. Every member
        calls it (a newcomer after connect()): members admit pending peers with
        update_topology() whenever one waits. Raises TimeoutError (the builtin) after
        `timeout` seconds. The update is collective over every group's members: with several
        groups forming at once, a member whose group is complete must go on admitting until
        all are (examples/python/fsdp_diloco.py shows one way)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.world_size < size:
            if deadline is not None and time.monotonic() > deadline:
                raise builtins.TimeoutError(
                    f"eccl: {self.world_size} of {size} members joined within {timeout} s")
            if self.peers_pending:
                self.update_topology()
            else:
                time.sleep(0.005)

    @property
    def peers_pending(self) -> bool:
        """Whether a newcomer waits to be admitted (one master round-trip)."""
        return self._native.peers_pending()

    @property
    def world_size(self) -> int:
        return self._native.world_size()

    @property
    def rank(self) -> int:
        """This member's place in the ring of the current epoch (changes with the world)."""
        return self._native.rank()

    @property
    def epoch(self) -> int:
        return self._native.epoch()

    @property
    def peer_group(self) -> int:
        return self._native.peer_group()

    @property
    def closed(self) -> bool:
        return self._native.closed

    # ---- collectives --------------------------------------------------------------------

    def all_reduce(
        self,
        tensor: Any,
        op: ReduceOp | str = ReduceOp.SUM,
        *,
        quantization: Quantization | str | None = None,
        rounding: Rounding | str = Rounding.NEAREST,
        block_size: int = 0,
        tag: int = 0,
        out: Any = None,
    ) -> OpInfo:
        """Reduces `tensor` across the peer group, in place or into `out` (same element type
        and count; `tensor` is then only read). Every member ends with identical bits. On
        failure every member raises and holds its input again (out: tensor's contents)."""
        return OpInfo(**self._native.all_reduce(tensor, out, *self._reduce_args(
            op, quantization, rounding, block_size, tag)))

    def all_reduce_async(
        self,
        tensor: Any,
        op: ReduceOp | str = ReduceOp.SUM,
        *,
        quantization: Quantization | str | None = None,
        rounding: Rounding | str = Rounding.NEAREST,
        block_size: int = 0,
        tag: int = 0,
        out: Any = None,
    ) -> Work:
        """all_reduce() that returns at once; ops of one tag run in issue order."""
        native = self._native.all_reduce_async(tensor, out, *self._reduce_args(
            op, quantization, rounding, block_size, tag))
        return Work(native, (tensor, out))

    def broadcast(
        self,
        tensor: Any,
        root: int = 0,
        *,
        quantization: Quantization | str | None = None,
        rounding: Rounding | str = Rounding.NEAREST,
        block_size: int = 0,
        tag: int = 0,
    ) -> OpInfo:
        """Copies `tensor` of the member at ring rank `root` into every other member's."""
        return OpInfo(**self._native.broadcast(tensor, root, *self._codec_args(
            quantization, rounding, block_size, tag)))

    def broadcast_async(
        self,
        tensor: Any,
        root: int = 0,
        *,
        quantization: Quantization | str | None = None,
        rounding: Rounding | str = Rounding.NEAREST,
        block_size: int = 0,
        tag: int = 0,
    ) -> Work:
        native = self._native.broadcast_async(tensor, root, *self._codec_args(
            quantization, rounding, block_size, tag))
        return Work(native, (tensor,))

    def sync_shared_state(
        self,
        state: SharedState,
        strategy: SyncStrategy | str = SyncStrategy.ENFORCE_POPULAR,
    ) -> SyncInfo:
        """Collective of the peer group: every member's non-divergent tensors end with the
        elected content, and state.revision with the group's. Raises StateMismatchError
        (nothing touched) when names, dtypes or counts differ, or the revision skipped."""
        entries = [(name, t, name in state.allow_divergence) for name, t in state.tensors.items()]
        with self._sync_lock:
            revision, info = self._native.sync_shared_state(
                entries, state.revision, _enum(SyncStrategy, strategy, "strategy"))
        state.revision = revision
        return SyncInfo(**info)

    def _codec_args(self, quantization, rounding, block_size, tag) -> tuple:
        return (
            _enum(Quantization, quantization, "quantization"),
            _enum(Rounding, rounding, "rounding"),
            int(block_size),
            int(tag),
        )

    def _reduce_args(self, op, quantization, rounding, block_size, tag) -> tuple:
        return (_enum(ReduceOp, op, "op"),) + self._codec_args(
            quantization, rounding, block_size, tag)

    # ---- lifetime -----------------------------------------------------------------------

    def close(self) -> None:
        """Finishes ops still in flight, leaves the group and frees the communicator."""
        self._native.close()

    def __enter__(self) -> Communicator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return "<eccl.Communicator closed>"
        return f"<eccl.Communicator group {self.peer_group}>"
