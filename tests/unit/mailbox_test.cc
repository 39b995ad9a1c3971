// Frame demultiplexing: order-independent delivery, retirement, cancel, timeout.
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "transport/mailbox.h"

namespace eccl::transport {
namespace {

Frame frame(std::shared_ptr<BufferPool>& pool, uint32_t tag, uint64_t seq, uint32_t step,
            uint32_t seg, size_t bytes = 8) {
  Frame f{{}, pool->get(bytes)};
  f.header.tag = tag;
  f.header.seq = seq;
  f.header.step = step;
  f.header.segment = seg;
  f.header.payloadBytes = static_cast<uint32_t>(bytes);
  return f;
}

const auto kSoon = std::chrono::milliseconds(200);

TEST(Mailbox, DeliversByKeyInAnyOrder) {
  auto pool = BufferPool::create();
  Mailbox mb;
  CancelFlag go{0};
  ASSERT_TRUE(mb.put(frame(pool, 1, 0, 0, 1)).isOk());
  ASSERT_TRUE(mb.put(frame(pool, 1, 0, 0, 0)).isOk());
  ASSERT_TRUE(mb.put(frame(pool, 2, 0, 0, 0)).isOk());
  for (auto [tag, seg] : {std::pair{1u, 0u}, {2u, 0u}, {1u, 1u}}) {
    Result<Frame> f = mb.take({tag, 0, 0, seg}, Clock::now() + kSoon, go, 7);
    ASSERT_TRUE(f.hasValue());
    EXPECT_EQ(f->header.tag, tag);
    EXPECT_EQ(f->header.segment, seg);
  }
}

TEST(Mailbox, TakesAStepsSegmentsInArrivalOrder) {
  auto pool = BufferPool::create();
  Mailbox mb;
  CancelFlag go{0};
  std::vector<uint8_t> pending(4, 1);  // segments 0..3 of step 2
  ASSERT_TRUE(mb.put(frame(pool, 1, 0, 2, 3)).isOk());     // arrives first, though last in order
  ASSERT_TRUE(mb.put(frame(pool, 1, 0, 1, 0)).isOk());     // another step
  ASSERT_TRUE(mb.put(frame(pool, 1, 0, 2, 9)).isOk());     // beyond the pending range
  Result<Frame> f = mb.takeAny({1, 0, 2, 0}, pending, Clock::now() + kSoon, go, 7);
  ASSERT_TRUE(f.hasValue());
  EXPECT_EQ(f->header.segment, 3u);
  pending[3] = 0;
  // Nothing else pending has arrived: a wait, then whatever comes next.
  std::thread late([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    ASSERT_TRUE(mb.put(frame(pool, 1, 0, 2, 1)).isOk());
  });
  f = mb.takeAny({1, 0, 2, 0}, pending, Clock::now() + kSoon, go, 7);
  late.join();
  ASSERT_TRUE(f.hasValue());
  EXPECT_EQ(f->header.segment, 1u);
  pending[1] = 0;
  // A segment no longer pending is never handed out again.
  ASSERT_TRUE(mb.put(frame(pool, 1, 0, 2, 1)).isOk());
  f = mb.takeAny({1, 0, 2, 0}, pending, Clock::now() + std::chrono::milliseconds(30), go, 7);
  EXPECT_EQ(f.status().code(), ecclTimeout);
  // The other step's frame and the one out of range are still there.
  EXPECT_TRUE(mb.take({1, 0, 1, 0}, Clock::now() + kSoon, go, 7).hasValue());
  EXPECT_TRUE(mb.take({1, 0, 2, 9}, Clock::now() + kSoon, go, 7).hasValue());
}

TEST(Mailbox, WaitsForALaterFrame) {
  auto pool = BufferPool::create();
  Mailbox mb;
  CancelFlag go{0};
  std::thread t([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ASSERT_TRUE(mb.put(frame(pool, 3, 4, 5, 6)).isOk());
  });
  Result<Frame> f = mb.take({3, 4, 5, 6}, Clock::now() + std::chrono::seconds(5), go, 7);
  t.join();
  EXPECT_TRUE(f.hasValue());
}

TEST(Mailbox, TimeoutNamesThePeer) {
  Mailbox mb;
  CancelFlag go{0};
  Result<Frame> f = mb.take({1, 0, 0, 0}, Clock::now() + std::chrono::milliseconds(30), go, 42);
  EXPECT_EQ(f.status().code(), ecclTimeout);
  EXPECT_NE(f.status().message().find("peer 42"), std::string::npos);
}

TEST(Mailbox, CancelAndFailureWakeWaiters) {
  Mailbox mb;
  CancelFlag cancel{0};
  std::thread t([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    cancel.store(ecclInvalidUsage);
    mb.interrupt();
  });
  Result<Frame> f = mb.take({1, 0, 0, 0}, Clock::now() + std::chrono::seconds(5), cancel, 1);
  t.join();
  EXPECT_EQ(f.status().code(), ecclInvalidUsage);
  CancelFlag go{0};
  mb.fail(error(ecclPeerLost, "cut"));
  EXPECT_EQ(mb.take({1, 0, 0, 0}, Clock::now() + std::chrono::seconds(5), go, 1).status().code(),
            ecclPeerLost);
}

TEST(Mailbox, RetiredOpsDropTheirFrames) {
  auto pool = BufferPool::create();
  Mailbox mb;
  CancelFlag go{0};
  ASSERT_TRUE(mb.put(frame(pool, 1, 3, 0, 0)).isOk());
  mb.retire(1, 3);
  ASSERT_TRUE(mb.put(frame(pool, 1, 2, 0, 0)).isOk());  // straggler of an older op
  ASSERT_TRUE(mb.put(frame(pool, 1, 4, 0, 0)).isOk());  // the next op on the tag
  EXPECT_FALSE(mb.take({1, 3, 0, 0}, Clock::now() + std::chrono::milliseconds(20), go, 1).hasValue());
  EXPECT_FALSE(mb.take({1, 2, 0, 0}, Clock::now() + std::chrono::milliseconds(20), go, 1).hasValue());
  EXPECT_TRUE(mb.take({1, 4, 0, 0}, Clock::now() + kSoon, go, 1).hasValue());
}

// A sender cannot make the mailbox hold frames of ops far ahead, or of
// unboundedly many tags.
TEST(Mailbox, RefusesFramesFarAheadOrOfTooManyTags) {
  auto pool = BufferPool::create();
  Mailbox mb;
  EXPECT_TRUE(mb.put(frame(pool, 1, kMaxOpsAhead - 1, 0, 0)).isOk());
  const Status far = mb.put(frame(pool, 1, kMaxOpsAhead, 0, 0));
  EXPECT_EQ(far.code(), ecclInvalidArgument);
  EXPECT_NE(far.message().find("ahead"), std::string::npos) << far.message();
  mb.retire(1, 10);  // ops up to #10 ended: the window moves
  EXPECT_TRUE(mb.put(frame(pool, 1, 10 + kMaxOpsAhead, 0, 0)).isOk());
  EXPECT_FALSE(mb.put(frame(pool, 1, 11 + kMaxOpsAhead, 0, 0)).isOk());
  for (uint32_t tag = 2; tag <= kMaxTags; ++tag) ASSERT_TRUE(mb.put(frame(pool, tag, 0, 0, 0)).isOk());
  EXPECT_FALSE(mb.put(frame(pool, kMaxTags + 1, 0, 0, 0)).isOk());
}

TEST(BufferPool, ReusesBuffers) {
  auto pool = BufferPool::create();
  const std::byte* first = nullptr;
  {
    auto h = pool->get(1 << 20);
    first = h.data();
  }
  auto h2 = pool->get(1000);
  EXPECT_EQ(h2.data(), first);
  EXPECT_EQ(h2.size(), 1000u);
}

}  // namespace
}  // namespace eccl::transport
