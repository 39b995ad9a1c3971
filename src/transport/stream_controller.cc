#include "transport/stream_controller.h"

#include <algorithm>

namespace eccl::transport {

StreamController::StreamController(Config config)
    : config_(config), streams_(std::clamp<uint32_t>(config.start, 1, std::max<uint32_t>(1, config.cap))) {
  if (streams_ >= config_.cap) phase_ = Phase::kSettled;
}

uint32_t StreamController::onWindow(double bytesPerSecond, double waitedShare) {
  switch (phase_) {
    case Phase::kSettled:
      break;
    case Phase::kTrying:
      if (bytesPerSecond >= rateBefore_ * config_.gain) {
        // The doubling paid off: keep it, and watch whether the next one would.
        phase_ = streams_ >= config_.cap ? Phase::kSettled : Phase::kWatching;
      } else {
        tried_ = streams_;
        rateTried_ = bytesPerSecond;
        streams_ = before_;
        phase_ = Phase::kRechecking;
      }
      break;
    case Phase::kRechecking:
      // Against the lower of the old count's two measurements: either may
      // have been inflated (a refilled rate-limiter bucket, a lucky window).
      if (rateTried_ >= std::min(rateBefore_, bytesPerSecond) * config_.gain) {
        // The old count is slower than it first looked: the doubling stays.
        streams_ = tried_;
        phase_ = streams_ >= config_.cap ? Phase::kSettled : Phase::kWatching;
      } else {
        phase_ = Phase::kSettled;
      }
      break;
    case Phase::kWatching:
      // Only a sender that waits on the network can gain from more streams;
      // one that waits on its own reduction or its upstream neighbour cannot.
      if (waitedShare >= config_.waitedToGrow) {
        before_ = streams_;
        rateBefore_ = bytesPerSecond;
        streams_ = std::min(config_.cap, streams_ * 2);
        phase_ = Phase::kTrying;
      }
      break;
  }
  return streams_;
}

void StreamController::settleAt(uint32_t have) {
  streams_ = std::max<uint32_t>(1, std::min(streams_, have));
  phase_ = Phase::kSettled;
}

}  // namespace eccl::transport
