// Mailbox: where a link's reader threads leave received frames until the op
// that expects them asks. Backend-independent; every Link uses one.
#pragma once

#include <condition_variable>
#include <map>
#include <mutex>
#include <span>

#include "transport/transport.h"

namespace eccl::transport {

// A neighbour can be ahead of this peer on a tag by an op or two (it moves on
// once every member finished); frames further ahead, or of more tags than any
// job uses at once, are a broken or hostile sender: put() refuses them and
// the link breaks, instead of holding whatever it sends.
inline constexpr uint64_t kMaxOpsAhead = 64;
inline constexpr size_t kMaxTags = 65536;

class Mailbox {
 public:
  // Stores a frame, or drops it if its (tag, seq) was retired; an error for a
  // frame beyond the bounds above (nothing is stored).
  Status put(Frame&& frame);
  Result<Frame> take(const FrameKey& key, Deadline deadline, const CancelFlag& cancel,
                     uint64_t fromPeer);
  // The first frame to arrive among the pending segments (Link::recvAny).
  Result<Frame> takeAny(const FrameKey& first, std::span<const uint8_t> pending, Deadline deadline,
                        const CancelFlag& cancel, uint64_t fromPeer);
  void retire(uint32_t tag, uint64_t seq);
  // The link broke: waiters and later takers get `status`.
  void fail(const Status& status);
  void interrupt() { cv_.notify_all(); }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<FrameKey, Frame> frames_;
  std::map<uint32_t, uint64_t> retiredBelow_;  // tag -> frames with seq below are dead
  Status broken_;
};

}  // namespace eccl::transport
