// One table generates result names and remedy texts (libuv's UV_ERRNO_MAP
// pattern); adding a result without a text fails to compile.
#pragma once

#include "eccl/eccl.h"

#define ECCL_RESULT_TABLE(X)                                                                   \
  X(ecclSuccess, "success")                                                                    \
  X(ecclInvalidArgument, "invalid argument: a pointer, count, type, op, root or config field " \
                         "is out of range; ecclGetLastError says which")                      \
  X(ecclInvalidUsage, "invalid usage: wrong call order, or peers disagree on a collective "   \
                      "(count, dtype, op or root) for one tag; issue the same ops in the "    \
                      "same order on every peer")                                            \
  X(ecclInternalError, "internal error in ECCL; please report it with the log "              \
                       "(ECCL_LOG_LEVEL=debug)")                                             \
  X(ecclSystemError, "system error (socket, thread or memory); see ecclGetLastError for "    \
                     "the OS message")                                                        \
  X(ecclTimeout, "timed out: a peer or the master made no progress within the configured "   \
                 "timeout; check the network or raise opTimeoutMs")                          \
  X(ecclPeerLost, "a peer was lost during the operation; call ecclCommUpdateTopology and "    \
                  "retry")                                                                    \
  X(ecclTooFewPeers, "too few peers for this operation; wait for peers to join")              \
  X(ecclMasterUnreachable, "the master cannot be reached; check masterAddress and that "      \
                           "eccl-master is running")                                          \
  X(ecclAuthFailed, "authentication failed: the auth token differs from the master's")       \
  X(ecclVersionMismatch, "protocol version mismatch between this peer and the master or "    \
                         "other peers; use the same ECCL release everywhere")                \
  X(ecclStateMismatch, "shared state differs between peers and could not be reconciled")     \
  X(ecclUnsupported, "unsupported: feature, transport or memory type not available in this " \
                     "build or on this machine; ecclGetLastError says why")                  \
  X(ecclInProgress, "operation still in progress")                                            \
  X(ecclKicked, "the master declared this peer dead and removed it; call ecclCommConnect "  \
                "again to rejoin as a newcomer")

namespace eccl::api {

inline constexpr int kResultTableSize = 0
#define ECCL_COUNT_RESULT(name, text) +1
    ECCL_RESULT_TABLE(ECCL_COUNT_RESULT)
#undef ECCL_COUNT_RESULT
    ;
static_assert(kResultTableSize == ecclNumResults, "every ecclResult_t needs a text");

}  // namespace eccl::api
