// Small-message collectives (collectives/small.h): an all-gather of inputs
// and a reduction in rank order, a binomial-tree broadcast; at world sizes 2
// to 32, with random floats, every member ends with the same bits, and those
// are the bits of the rank-order sum.
#include <gtest/gtest.h>

#include <cstring>
#include <mutex>
#include <random>
#include <vector>

#include "collectives/small.h"
#include "support/peers.h"

namespace eccl::test {
namespace {

std::vector<float> randomInput(int rank, size_t count) {
  std::mt19937 rng(977 + static_cast<unsigned>(rank));
  std::normal_distribution<float> dist(0.0f, 1e4f);
  std::vector<float> v(count);
  for (float& x : v) x = dist(rng);
  return v;
}

// Bytes one member sends in the all-gather: every other member's input once.
uint64_t gatherBytes(int world, size_t bytes) { return static_cast<uint64_t>(world - 1) * bytes; }

class SmallWorld : public ::testing::TestWithParam<int> {};

TEST_P(SmallWorld, AllReduceIsTheRankOrderSumOnEveryMember) {
  const int n = GetParam();
  // The largest small op at this world, less one (an odd count).
  const size_t count = collectives::kSmallGatherBytes / (static_cast<size_t>(n) * sizeof(float)) - 1;
  // The rank-order sum, as the small path computes it: ((in0 + in1) + in2) + ...
  std::vector<float> want = randomInput(0, count);
  for (int q = 1; q < n; ++q) {
    const std::vector<float> in = randomInput(q, count);
    for (size_t i = 0; i < count; ++i) want[i] = want[i] + in[i];
  }
  std::mutex mu;
  std::vector<std::vector<float>> got(static_cast<size_t>(n));
  spawnPeers(n, [&](ecclComm_t comm) {
    const int rank = rankOf(comm);
    std::vector<float> v = randomInput(rank, count);
    ecclOpInfo_t info = ECCL_OP_INFO_INIT;
    ASSERT_EQ(ecclAllReduce(v.data(), v.data(), count, ecclFloat32, ecclSum, nullptr, comm, &info),
              ecclSuccess) << ecclGetLastError(comm);
    // The gather moved every other input here once (the ring would move 2(n-1)/n of one).
    EXPECT_EQ(info.bytesReceived, gatherBytes(n, count * sizeof(float)));
    // Out of place, and AVG, the same way.
    std::vector<float> in = randomInput(rank, count), out(count, -1.0f);
    ASSERT_EQ(ecclAllReduce(in.data(), out.data(), count, ecclFloat32, ecclSum, nullptr, comm, nullptr),
              ecclSuccess);
    EXPECT_EQ(std::memcmp(out.data(), v.data(), count * sizeof(float)), 0);
    EXPECT_TRUE(in == randomInput(rank, count)) << "sendbuf was modified";
    std::lock_guard<std::mutex> lock(mu);
    got[static_cast<size_t>(rank)] = std::move(v);
  });
  for (int r = 0; r < n; ++r) {
    ASSERT_EQ(got[static_cast<size_t>(r)].size(), count) << "rank " << r;
    EXPECT_EQ(std::memcmp(got[static_cast<size_t>(r)].data(), want.data(), count * sizeof(float)), 0)
        << "rank " << r << " of " << n << " differs from the rank-order sum";
  }
}

TEST_P(SmallWorld, BroadcastFromEveryRoot) {
  const int n = GetParam();
  const size_t count = collectives::kSmallGatherBytes / (static_cast<size_t>(n) * sizeof(float)) - 3;
  spawnPeers(n, [&](ecclComm_t comm) {
    const int rank = rankOf(comm);
    for (int root = 0; root < n; root += std::max(1, n / 5)) {
      std::vector<float> v = randomInput(rank, count);
      ecclOpInfo_t info = ECCL_OP_INFO_INIT;
      ASSERT_EQ(ecclBroadcast(v.data(), count, ecclFloat32, root, nullptr, comm, &info), ecclSuccess)
          << ecclGetLastError(comm);
      EXPECT_TRUE(v == randomInput(root, count)) << "rank " << rank << " root " << root;
      // A tree: everyone but the root receives the data once.
      EXPECT_EQ(info.bytesReceived, rank == root ? 0u : count * sizeof(float));
    }
  });
}

INSTANTIATE_TEST_SUITE_P(Worlds, SmallWorld, ::testing::Values(2, 3, 5, 8, 13, 32),
                         [](const ::testing::TestParamInfo<int>& p) {
                           return "World" + std::to_string(p.param);
                         });

// Segments smaller than a gathered frame: the gather cuts its frames to the
// group's segment size (here 4 KiB, the smallest; rounds here carry up to
// 5 KiB per input) and still ends identical.
TEST(SmallOps, GatherFramesAreCutToTheSegmentSize) {
  ::setenv("ECCL_SEGMENT_BYTES", "4096", 1);  // read when each peer connects
  const int n = 6;
  const size_t count = collectives::kSmallGatherBytes / (n * sizeof(float));  // the largest small op
  std::mutex mu;
  std::vector<std::vector<float>> got(static_cast<size_t>(n));
  spawnPeers(n, [&](ecclComm_t comm) {
    std::vector<float> v = randomInput(rankOf(comm), count);
    ASSERT_EQ(ecclAllReduce(v.data(), v.data(), count, ecclFloat32, ecclMax, nullptr, comm, nullptr),
              ecclSuccess) << ecclGetLastError(comm);
    std::lock_guard<std::mutex> lock(mu);
    got[static_cast<size_t>(rankOf(comm))] = std::move(v);
  });
  ::unsetenv("ECCL_SEGMENT_BYTES");
  std::vector<float> want = randomInput(0, count);
  for (int q = 1; q < n; ++q) {
    const std::vector<float> in = randomInput(q, count);
    for (size_t i = 0; i < count; ++i) want[i] = std::max(want[i], in[i]);
  }
  for (int r = 0; r < n; ++r) EXPECT_TRUE(got[static_cast<size_t>(r)] == want) << "rank " << r;
}

}  // namespace
}  // namespace eccl::test
