#include "transport/mailbox.h"

#include <fmt/format.h>

namespace eccl::transport {

Status Mailbox::put(Frame&& frame) {
  const FrameKey key{frame.header.tag, frame.header.seq, frame.header.step, frame.header.segment};
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto r = retiredBelow_.find(key.tag);
    const uint64_t below = r != retiredBelow_.end() ? r->second : 0;
    if (key.seq < below) return Status::ok();
    if (key.seq - below >= kMaxOpsAhead) {
      return error(ecclInvalidArgument, fmt::format("frame of tag {} op #{} is {} ops ahead of this "
                                                    "peer (at most {})", key.tag, key.seq,
                                                    key.seq - below, kMaxOpsAhead));
    }
    if (r == retiredBelow_.end()) {
      if (retiredBelow_.size() >= kMaxTags) {
        return error(ecclInvalidArgument, fmt::format("frames of more than {} tags", kMaxTags));
      }
      retiredBelow_.emplace(key.tag, 0);  // the tag is in use: counted from now on
    }
    frames_.insert_or_assign(key, std::move(frame));
  }
  cv_.notify_all();
  return Status::ok();
}

Result<Frame> Mailbox::take(const FrameKey& key, Deadline deadline, const CancelFlag& cancel,
                            uint64_t fromPeer) {
  const uint8_t one = 1;
  return takeAny(key, std::span<const uint8_t>(&one, 1), deadline, cancel, fromPeer);
}

Result<Frame> Mailbox::takeAny(const FrameKey& first, std::span<const uint8_t> pending,
                               Deadline deadline, const CancelFlag& cancel, uint64_t fromPeer) {
  const FrameKey& key = first;
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    // Held frames of this step from the first pending segment on, in order.
    for (auto it = frames_.lower_bound(first); it != frames_.end(); ++it) {
      const FrameKey& k = it->first;
      if (k.tag != first.tag || k.seq != first.seq || k.step != first.step ||
          k.segment - first.segment >= pending.size()) {
        break;
      }
      if (pending[k.segment - first.segment] == 0) continue;
      Frame f = std::move(it->second);
      frames_.erase(it);
      return f;
    }
    if (int c = cancel.load(std::memory_order_acquire); c != 0) {
      return error(static_cast<ecclResult_t>(c), "op aborted");
    }
    if (!broken_.isOk()) return broken_;
    const auto now = Clock::now();
    if (now >= deadline) {
      return error(ecclTimeout, fmt::format("no data from peer {} within the op timeout "
                                            "(tag {}, op #{}, step {}, segment {})",
                                            fromPeer, key.tag, key.seq, key.step, key.segment));
    }
    // Bounded wait: a cancel set without interrupt() is still seen promptly.
    cv_.wait_until(lock, std::min(deadline, now + std::chrono::milliseconds(50)));
  }
}

void Mailbox::retire(uint32_t tag, uint64_t seq) {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t& below = retiredBelow_[tag];
  below = std::max(below, seq + 1);
  auto it = frames_.lower_bound(FrameKey{tag, 0, 0, 0});
  while (it != frames_.end() && it->first.tag == tag && it->first.seq <= seq) it = frames_.erase(it);
}

void Mailbox::fail(const Status& status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (broken_.isOk()) broken_ = status;
  }
  cv_.notify_all();
}

}  // namespace eccl::transport
