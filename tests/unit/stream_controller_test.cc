// The stream-count controller against simulated throughput curves: how fast a
// link drains with k streams, and how much of the time its sender waits.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <random>

#include "transport/stream_controller.h"

namespace eccl::transport {
namespace {

struct Path {
  std::function<double(uint32_t streams)> rate;    // bytes/s it drains
  std::function<double(uint32_t streams)> waited;  // share of the time the sender waits
};

// Feeds `windows` windows; returns the count the controller ends on.
uint32_t run(StreamController& c, const Path& p, int windows, std::vector<uint32_t>* seen = nullptr) {
  uint32_t k = c.streams();
  for (int i = 0; i < windows; ++i) {
    k = c.onWindow(p.rate(k), p.waited(k));
    if (seen != nullptr) seen->push_back(k);
  }
  return k;
}

// A WAN path whose flows are each capped at 1/8 of the link (the lab's
// hashlimit rule): throughput rises with streams until 8, then is flat.
Path cappedFlows(double link, double perFlow) {
  return {[=](uint32_t k) { return std::min(link, perFlow * k); },
          [](uint32_t) { return 0.9; }};  // network-bound: the sender waits
}

TEST(StreamController, GrowsUntilPerFlowCapsNoLongerBind) {
  StreamController c({});
  std::vector<uint32_t> seen;
  EXPECT_EQ(run(c, cappedFlows(125e6, 125e6 / 8), 20, &seen), 8u);
  EXPECT_TRUE(c.settled());
  // 2 -> 4 -> 8 -> 16 tried, 8 rechecked, settled: a handful of windows.
  EXPECT_LE(std::find(seen.begin(), seen.end(), 8u) - seen.begin(), 2);
  EXPECT_EQ(*std::max_element(seen.begin(), seen.end()), 16u);
}

TEST(StreamController, StaysLowWhereMoreStreamsOnlyCost) {
  // Loopback: the sender waits (the receiver is busy), but more streams do
  // not drain any faster; one doubling is tried and undone.
  StreamController c({});
  Path flat{[](uint32_t) { return 2e9; }, [](uint32_t) { return 0.7; }};
  EXPECT_EQ(run(c, flat, 10), 2u);
  EXPECT_TRUE(c.settled());
}

TEST(StreamController, NeverGrowsWhenTheSenderDoesNotWait) {
  // Compute-bound (or waiting on its upstream neighbour): the network is not
  // the limit, whatever the curve would say.
  StreamController c({});
  Path p = cappedFlows(125e6, 1e6);
  p.waited = [](uint32_t) { return 0.02; };
  EXPECT_EQ(run(c, p, 50), 2u);
  EXPECT_FALSE(c.settled());  // still watching: the next busy phase may differ
}

TEST(StreamController, RespectsTheCap) {
  StreamController c({.start = 2, .cap = 12});
  std::vector<uint32_t> seen;
  EXPECT_EQ(run(c, cappedFlows(1e12, 1e6), 20, &seen), 12u);
  EXPECT_LE(*std::max_element(seen.begin(), seen.end()), 12u);
  EXPECT_TRUE(c.settled());
}

TEST(StreamController, AnInflatedFirstMeasurementIsRechecked) {
  // The window before a doubling ran on a rate limiter's refilled bucket:
  // the doubling looks like a loss, the old count measured again is slower,
  // so the doubling stays and growth goes on.
  StreamController c({});
  const Path p = cappedFlows(125e6, 125e6 / 8);
  int calls = 0;
  Path inflated{[&](uint32_t k) { return calls++ == 0 ? 125e6 : p.rate(k); }, p.waited};
  EXPECT_EQ(run(c, inflated, 20), 8u);
}

TEST(StreamController, ConvergesUnderNoise) {
  // +-5% noise on every window: still ends between 8 and 16 streams on the
  // capped path, and at 2 on the flat one, for every seed.
  for (uint32_t seed = 0; seed < 200; ++seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<double> noise(0.95, 1.05);
    const Path capped = cappedFlows(125e6, 125e6 / 8);
    Path noisy{[&](uint32_t k) { return capped.rate(k) * noise(rng); }, capped.waited};
    StreamController c({});
    const uint32_t k = run(c, noisy, 30);
    EXPECT_TRUE(k == 8 || k == 16) << "seed " << seed << ": " << k;
    EXPECT_TRUE(c.settled()) << seed;

    Path flat{[&](uint32_t) { return 2e9 * noise(rng); }, [](uint32_t) { return 0.7; }};
    StreamController f({});
    EXPECT_EQ(run(f, flat, 30), 2u) << seed;
  }
}

TEST(StreamController, StartsSettledAtOrAboveTheCapAndSettlesWhereDialsFail) {
  StreamController full({.start = 32, .cap = 32});
  EXPECT_TRUE(full.settled());
  EXPECT_EQ(full.streams(), 32u);
  StreamController c({});
  EXPECT_EQ(c.onWindow(1e6, 0.9), 4u);  // asks for 4
  c.settleAt(3);                        // only one more stream opened
  EXPECT_EQ(c.streams(), 3u);
  EXPECT_TRUE(c.settled());
  EXPECT_EQ(c.onWindow(1e9, 1.0), 3u);
}

}  // namespace
}  // namespace eccl::transport
