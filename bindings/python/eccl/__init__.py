"""ECCL: all-reduce and broadcast that keep working while peers join and die.

    import eccl, numpy as np
    with eccl.Master() as master, eccl.Communicator(master.address) as comm:
        comm.connect()
        x = np.ones(4, np.float32)
        comm.all_reduce(x)           # in place, across the peer group

NumPy arrays (buffer protocol) and torch tensors (DLPack) are used in place, never copied.
Failures raise eccl.Error subclasses (PeerLostError, ...). `import eccl.torch` registers the
torch.distributed backend "eccl" (done here already when torch was imported first)."""

import sys as _sys

from . import _eccl
from ._core import (
    Communicator,
    Master,
    OpInfo,
    Quantization,
    ReduceOp,
    Rounding,
    SharedState,
    SyncInfo,
    SyncStrategy,
    Work,
)
from ._errors import (
    AuthFailedError,
    Error,
    InProgressError,
    InternalError,
    InvalidArgumentError,
    InvalidUsageError,
    KickedError,
    MasterUnreachableError,
    PeerLostError,
    Result,
    StateMismatchError,
    SystemError,
    TimeoutError,
    TooFewPeersError,
    UnsupportedError,
    VersionMismatchError,
)

__version__ = _eccl.__version__

__all__ = [
    "AuthFailedError", "Communicator", "Error", "InProgressError", "InternalError",
    "InvalidArgumentError", "InvalidUsageError", "KickedError", "Master",
    "MasterUnreachableError", "OpInfo", "PeerLostError", "Quantization", "ReduceOp", "Result",
    "Rounding", "SharedState", "StateMismatchError", "SyncInfo", "SyncStrategy", "SystemError",
    "TimeoutError", "TooFewPeersError", "UnsupportedError", "VersionMismatchError", "Work",
    "__version__",
]

if "torch" in _sys.modules:
    try:
        from . import torch as _torch_backend  # noqa: F401  registers the "eccl" backend
    except ImportError:  # a torch built without torch.distributed
        pass
