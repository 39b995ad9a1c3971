"""The eccl.Error hierarchy: one subclass per ecclResult_t, carrying the library's message."""

from __future__ import annotations

import builtins
from enum import IntEnum


class Result(IntEnum):
    """ecclResult_t: the C library's result codes (stable numbers)."""

    SUCCESS = 0
    INVALID_ARGUMENT = 1
    INVALID_USAGE = 2
    INTERNAL_ERROR = 3
    SYSTEM_ERROR = 4
    TIMEOUT = 5
    PEER_LOST = 6
    TOO_FEW_PEERS = 7
    MASTER_UNREACHABLE = 8
    AUTH_FAILED = 9
    VERSION_MISMATCH = 10
    STATE_MISMATCH = 11
    UNSUPPORTED = 12
    IN_PROGRESS = 13
    KICKED = 14


_C_NAMES = {
    Result.INVALID_ARGUMENT: "ecclInvalidArgument",
    Result.INVALID_USAGE: "ecclInvalidUsage",
    Result.INTERNAL_ERROR: "ecclInternalError",
    Result.SYSTEM_ERROR: "ecclSystemError",
    Result.TIMEOUT: "ecclTimeout",
    Result.PEER_LOST: "ecclPeerLost",
    Result.TOO_FEW_PEERS: "ecclTooFewPeers",
    Result.MASTER_UNREACHABLE: "ecclMasterUnreachable",
    Result.AUTH_FAILED: "ecclAuthFailed",
    Result.VERSION_MISMATCH: "ecclVersionMismatch",
    Result.STATE_MISMATCH: "ecclStateMismatch",
    Result.UNSUPPORTED: "ecclUnsupported",
    Result.IN_PROGRESS: "ecclInProgress",
    Result.KICKED: "ecclKicked",
}


class Error(RuntimeError):
    """A failed ECCL call. `result` is the Result code, `message` the library's text.

    str(error) reads "ecclPeerLost: <message>", so logs name the C result too."""

    result: Result = Result.INTERNAL_ERROR

    def __init__(self, message: str, result: Result | int | None = None):
        if result is not None:
            self.result = Result(result)
        self.message = message
        super().__init__(f"{_C_NAMES.get(self.result, 'ecclError')}: {message}")


class InvalidArgumentError(Error, ValueError):
    result = Result.INVALID_ARGUMENT


class InvalidUsageError(Error):
    result = Result.INVALID_USAGE


class InternalError(Error):
    result = Result.INTERNAL_ERROR


class SystemError(Error, OSError):  # noqa: A001 - mirrors ecclSystemError
    result = Result.SYSTEM_ERROR


class TimeoutError(Error, builtins.TimeoutError):  # noqa: A001 - mirrors ecclTimeout
    result = Result.TIMEOUT


class PeerLostError(Error):
    """A member of the group died or was cut off. Every member failed the op and holds its
    input again: call Communicator.update_topology() and retry."""

    result = Result.PEER_LOST


class TooFewPeersError(Error):
    result = Result.TOO_FEW_PEERS


class MasterUnreachableError(Error, ConnectionError):
    result = Result.MASTER_UNREACHABLE


class AuthFailedError(Error, PermissionError):
    result = Result.AUTH_FAILED


class VersionMismatchError(Error):
    result = Result.VERSION_MISMATCH


class StateMismatchError(Error):
    result = Result.STATE_MISMATCH


class UnsupportedError(Error, NotImplementedError):
    result = Result.UNSUPPORTED


class InProgressError(Error):
    result = Result.IN_PROGRESS


class KickedError(Error):
    """The master removed this member (it missed a vote, or was declared dead). The next
    connect() starts over as a newcomer."""

    result = Result.KICKED


_BY_RESULT = {
    cls.result: cls
    for cls in (
        InvalidArgumentError, InvalidUsageError, InternalError, SystemError, TimeoutError,
        PeerLostError, TooFewPeersError, MasterUnreachableError, AuthFailedError,
        VersionMismatchError, StateMismatchError, UnsupportedError, InProgressError,
        KickedError,
    )
}


def from_result(result: int, message: str) -> Error:
    """The exception for a C result (called by the native module)."""
    try:
        code = Result(result)
    except ValueError:
        return Error(f"{message} (result {result})")
    return _BY_RESULT.get(code, Error)(message, code)
