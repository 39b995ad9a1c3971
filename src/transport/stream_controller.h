// StreamController: how many streams a link sends on, when nobody pinned the
// count. A link starts with few streams (loopback and fast LANs gain nothing
// from more, and every stream costs a socket and a reader thread) and, while
// its sender keeps waiting for the network, doubles them as long as each
// doubling raises throughput by `gain`. A doubling that seems not to pay off
// is undone and the old count measured once more (paths change: a token
// bucket's burst or slow start can inflate the window before the doubling);
// only if the doubling does not beat the lower of the two measurements by
// `gain` does the count settle there (the extra streams stay open, unused).
//
// Pure logic, fed one window of sending at a time by the link (TcpLink), so
// the unit tests drive it with simulated throughput curves.
#pragma once

#include <cstdint>

namespace eccl::transport {

class StreamController {
 public:
  struct Config {
    uint32_t start = 2;
    uint32_t cap = 32;
    double gain = 1.25;         // a doubling must raise throughput by this factor to stay
    double waitedToGrow = 0.1;  // the share of a window the sender waited on the network
  };

  explicit StreamController(Config config);

  // One window of sending: its throughput (bytes/s while the link was busy)
  // and the share of it the sender waited for a stream to take bytes. Returns
  // the number of streams to send on from now on.
  uint32_t onWindow(double bytesPerSecond, double waitedShare);
  // The link could not open more streams than `have`: stay there.
  void settleAt(uint32_t have);

  uint32_t streams() const { return streams_; }
  bool settled() const { return phase_ == Phase::kSettled; }

 private:
  enum class Phase { kWatching, kTrying, kRechecking, kSettled };
  Config config_;
  Phase phase_ = Phase::kWatching;
  uint32_t streams_;
  uint32_t before_ = 0;      // the count before the doubling being tried
  double rateBefore_ = 0.0;  // its throughput
  uint32_t tried_ = 0;       // the doubled count, while rechecking
  double rateTried_ = 0.0;   // its throughput
};

}  // namespace eccl::transport
