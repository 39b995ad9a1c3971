// Rules every Link backend applies the same way (tcp/, shm/).
#pragma once

#include <fmt/format.h>

#include <optional>
#include <span>

#include "transport/transport.h"

namespace eccl::transport {

// Aborts after which the group's links are replaced anyway (a member is gone,
// or this peer left the group): finishing a frame for them buys nothing.
inline bool linksAreReplaced(int code) {
  return code == ecclPeerLost || code == ecclKicked || code == ecclMasterUnreachable;
}

// Why a send that is waiting for its peer gives up now, if it does: the op's
// abort, or its deadline.
inline std::optional<Status> sendAbort(const CancelFlag& cancel, Deadline deadline, Deadline now) {
  if (int c = cancel.load(std::memory_order_acquire); c != 0) {
    return error(static_cast<ecclResult_t>(c), "op aborted");
  }
  if (now >= deadline) return error(ecclTimeout, "peer did not take data within the op timeout");
  return std::nullopt;
}

// A received frame header, decoded and held to the group's segment size.
inline Result<wire::DataHeader> decodeFrameHeader(std::span<const std::byte> head, uint32_t maxFrame) {
  Result<wire::DataHeader> h = wire::decodeDataHeader(head);
  if (h && h->payloadBytes > maxFrame) {
    return error(ecclInvalidArgument, fmt::format("frame of {} bytes exceeds the group's segment "
                                                  "size of {}", h->payloadBytes, maxFrame));
  }
  return h;
}

}  // namespace eccl::transport
