// Ring all-reduce on a master and N peer threads over loopback TCP.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include <algorithm>
#include <mutex>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include "support/peers.h"
#include "support/reference.h"

namespace eccl::test {
namespace {

// Every peer's result, by rank, to compare across peers after the run.
struct Results {
  std::mutex mu;
  std::vector<std::vector<std::byte>> byRank;
  explicit Results(int n) : byRank(static_cast<size_t>(n)) {}
  void put(int rank, std::vector<std::byte> v) {
    std::lock_guard<std::mutex> lock(mu);
    byRank[static_cast<size_t>(rank)] = std::move(v);
  }
  void expectIdentical() {
    for (size_t r = 1; r < byRank.size(); ++r) {
      EXPECT_TRUE(byRank[r] == byRank[0]) << "rank " << r << " differs from rank 0";
    }
  }
};

void checkAllReduce(ecclComm_t comm, size_t count, ecclDataType_t dt, ecclRedOp_t op,
                    bool inPlace, Results* results = nullptr) {
  const int rank = rankOf(comm), world = worldOf(comm);
  std::vector<std::byte> in = makeInput(rank, count, dt);
  std::vector<std::byte> out(in.size(), std::byte{0xAB});
  ecclOpInfo_t info = ECCL_OP_INFO_INIT;
  void* recv = inPlace ? in.data() : out.data();
  ASSERT_EQ(ecclAllReduce(in.data(), recv, count, dt, op, nullptr, comm, &info), ecclSuccess)
      << ecclGetLastError(comm);
  std::vector<std::byte> got(static_cast<std::byte*>(recv), static_cast<std::byte*>(recv) + in.size());
  EXPECT_TRUE(got == expectedAllReduce(world, count, dt, op))
      << dtypeName(dt) << " " << opName(op) << " count " << count << " rank " << rank;
  EXPECT_EQ(info.worldSize, world);
  // Peers of one process share a host: their links run through shared
  // memory unless ECCL_SHM=0 (the tcp.* run of this suite) or the links are
  // RDMA (the ibverbs.* run).
  if (world > 1 && count > 0) {
    const char* shm = std::getenv("ECCL_SHM");
    const char* transport = std::getenv("ECCL_TEST_TRANSPORT");
    const bool tcp = transport == nullptr || std::string(transport) == "tcp";
    EXPECT_EQ(info.sharedMemory, tcp && !(shm != nullptr && std::string(shm) == "0") ? 1u : 0u);
  }
  if (!inPlace) {
    EXPECT_TRUE(in == makeInput(rank, count, dt)) << "sendbuf was modified";
  }
  if (results != nullptr) results->put(rank, std::move(got));
}

TEST(AllReduce, EveryDtypeAndOp) {
  spawnPeers(3, [](ecclComm_t comm) {
    for (int dt = 0; dt < ecclNumTypes; ++dt) {
      for (int op = 0; op < ecclNumOps; ++op) {
        for (size_t count : {size_t{1}, size_t{7}, size_t{1001}}) {
          checkAllReduce(comm, count, static_cast<ecclDataType_t>(dt), static_cast<ecclRedOp_t>(op),
                         /*inPlace=*/count == 7);
        }
      }
    }
  });
}

class AllReduceWorld : public ::testing::TestWithParam<int> {};

TEST_P(AllReduceWorld, AwkwardCountsInAndOutOfPlace) {
  const int n = GetParam();
  spawnPeers(n, [n](ecclComm_t comm) {
    EXPECT_EQ(worldOf(comm), n);
    for (size_t count : {size_t{0}, size_t{1}, size_t{7}, size_t(n - 1), size_t(3 * n + 1),
                         size_t{100003}}) {
      checkAllReduce(comm, count, ecclFloat32, ecclSum, false);
      checkAllReduce(comm, count, ecclInt32, ecclMax, true);
    }
  });
}

INSTANTIATE_TEST_SUITE_P(Worlds, AllReduceWorld, ::testing::Values(1, 2, 3, 5, 8));

// Peers with different ECCL_SEGMENT_BYTES: the master hands the group the
// smallest (4 KiB), which both rings cut frames to and both links enforce;
// a ring still cutting 1 MiB frames would break the 4 KiB peer's link.
TEST(AllReduce, SegmentSizeIsNegotiated) {
  LocalMaster master;
  ::setenv("ECCL_SEGMENT_BYTES", "4096", 1);
  ecclComm_t small = connectPeer(master.address());  // read at connect: 4 KiB
  ::unsetenv("ECCL_SEGMENT_BYTES");
  ASSERT_NE(small, nullptr);
  std::thread joining([&] {
    ecclComm_t big = connectPeer(master.address());  // 1 MiB
    ASSERT_NE(big, nullptr);
    std::vector<float> v(1 << 18, 2.0f);
    ASSERT_EQ(ecclAllReduce(v.data(), v.data(), v.size(), ecclFloat32, ecclSum, nullptr, big, nullptr),
              ecclSuccess) << ecclGetLastError(big);
    EXPECT_EQ(std::count(v.begin(), v.end(), 3.0f), static_cast<long>(v.size()));
    ecclCommDestroy(big);
  });
  // EXPECT, not ASSERT: the joining thread must be joined whatever happens.
  EXPECT_EQ(growWorld(small, 2), ecclSuccess) << ecclGetLastError(small);
  std::vector<float> v(1 << 18, 1.0f);
  EXPECT_EQ(ecclAllReduce(v.data(), v.data(), v.size(), ecclFloat32, ecclSum, nullptr, small, nullptr),
            ecclSuccess) << ecclGetLastError(small);
  EXPECT_EQ(std::count(v.begin(), v.end(), 3.0f), static_cast<long>(v.size()));
  joining.join();
  ecclCommDestroy(small);
}

TEST(AllReduce, Large64MiBFloat32) {
  const size_t count = (64u << 20) / sizeof(float);
  Results results(4);
  spawnPeers(4, [&](ecclComm_t comm) {
    checkAllReduce(comm, count, ecclFloat32, ecclSum, /*inPlace=*/true, &results);
  });
  results.expectIdentical();
}

// Random floats: the sum is inexact, but every peer must hold the same bits.
TEST(AllReduce, BitIdenticalAcrossPeers) {
  const int n = 4;
  Results results(n);
  spawnPeers(n, [&](ecclComm_t comm) {
    const int rank = rankOf(comm);
    std::mt19937 rng(1234 + rank);
    std::normal_distribution<float> dist(0.0f, 1e3f);
    std::vector<float> v(300007);
    for (float& x : v) x = dist(rng);
    ASSERT_EQ(ecclAllReduce(v.data(), v.data(), v.size(), ecclFloat32, ecclSum, nullptr, comm,
                            nullptr), ecclSuccess);
    std::vector<uint16_t> h(200003);
    for (size_t i = 0; i < h.size(); ++i) h[i] = floatToBf16(dist(rng));
    ASSERT_EQ(ecclAllReduce(h.data(), h.data(), h.size(), ecclBfloat16, ecclAvg, nullptr, comm,
                            nullptr), ecclSuccess);
    std::vector<std::byte> bytes(v.size() * 4 + h.size() * 2);
    std::memcpy(bytes.data(), v.data(), v.size() * 4);
    std::memcpy(bytes.data() + v.size() * 4, h.data(), h.size() * 2);
    results.put(rank, std::move(bytes));
  });
  results.expectIdentical();
}

// Adaptive striping in the ring: stream 0 of every link paced to 1 MB/s
// (ECCL_TEST_PACE_STREAM0), 64 KiB segments so that each step has many:
// frames avoid the slow stream and segments are taken as they arrive, and
// the results are still exact (integers) and bit-identical (floats).
TEST(AllReduce, SlowStreamKeepsResultsExactAndIdentical) {
  const int n = 3;
  Results results(n);
  ::setenv("ECCL_TEST_PACE_STREAM0", "1000000", 1);  // read when each peer connects
  ::setenv("ECCL_SEGMENT_BYTES", "65536", 1);
  PeerOptions options;
  options.streams = 4;
  spawnPeers(n, [&](ecclComm_t comm) {
    const int rank = rankOf(comm);
    std::vector<int32_t> ints(1 << 20);
    for (size_t i = 0; i < ints.size(); ++i) ints[i] = static_cast<int32_t>(i % 1000) * (rank + 1);
    ASSERT_EQ(ecclAllReduce(ints.data(), ints.data(), ints.size(), ecclInt32, ecclSum, nullptr, comm,
                            nullptr), ecclSuccess) << ecclGetLastError(comm);
    for (size_t i = 0; i < ints.size(); ++i) {
      ASSERT_EQ(ints[i], static_cast<int32_t>(i % 1000) * 6) << i;  // 1 + 2 + 3
    }
    std::mt19937 rng(99 + rank);
    std::normal_distribution<float> dist(0.0f, 1e3f);
    std::vector<float> v(1 << 20);
    for (float& x : v) x = dist(rng);
    ASSERT_EQ(ecclAllReduce(v.data(), v.data(), v.size(), ecclFloat32, ecclSum, nullptr, comm,
                            nullptr), ecclSuccess) << ecclGetLastError(comm);
    ASSERT_EQ(ecclBroadcast(v.data(), v.size() / 2, ecclFloat32, 1, nullptr, comm, nullptr),
              ecclSuccess) << ecclGetLastError(comm);
    std::vector<std::byte> bytes(v.size() * 4);
    std::memcpy(bytes.data(), v.data(), bytes.size());
    results.put(rank, std::move(bytes));
  }, options);
  ::unsetenv("ECCL_TEST_PACE_STREAM0");
  ::unsetenv("ECCL_SEGMENT_BYTES");
  results.expectIdentical();
}

// 16 tags in flight at once, issued in a different order on every peer; ops
// of one tag stay in issue order.
TEST(AllReduce, SixteenConcurrentTags) {
  const int n = 3, kTags = 16, kPerTag = 3;
  spawnPeers(n, [&](ecclComm_t comm) {
    const int rank = rankOf(comm);
    std::vector<std::vector<int64_t>> bufs(kTags * kPerTag);
    std::vector<ecclRequest_t> reqs(bufs.size());
    std::vector<int> order(kTags);
    std::iota(order.begin(), order.end(), 0);
    std::mt19937 rng(rank);
    std::shuffle(order.begin(), order.end(), rng);
    for (int t : order) {
      for (int k = 0; k < kPerTag; ++k) {
        const size_t idx = static_cast<size_t>(t * kPerTag + k);
        bufs[idx].assign(5000 + static_cast<size_t>(t), (rank + 1) * (t + 1) + k);
        ecclOpOptions_t opts = ECCL_OP_OPTIONS_INIT;
        opts.tag = static_cast<uint32_t>(t);
        ASSERT_EQ(ecclAllReduceAsync(bufs[idx].data(), bufs[idx].data(), bufs[idx].size(),
                                     ecclInt64, ecclSum, &opts, comm, &reqs[idx]),
                  ecclSuccess) << ecclGetLastError(comm);
      }
    }
    for (size_t idx = 0; idx < reqs.size(); ++idx) {
      ASSERT_EQ(ecclWait(reqs[idx], nullptr), ecclSuccess) << ecclGetLastError(nullptr);
      const int t = static_cast<int>(idx) / kPerTag, k = static_cast<int>(idx) % kPerTag;
      const int64_t want = static_cast<int64_t>(n * (n + 1) / 2) * (t + 1) + n * k;
      EXPECT_EQ(bufs[idx].front(), want);
      EXPECT_EQ(bufs[idx].back(), want);
    }
  });
}

TEST(AllReduce, TestPollsUntilDone) {
  spawnPeers(2, [](ecclComm_t comm) {
    std::vector<double> v(1 << 16, 1.0);
    ecclRequest_t req = nullptr;
    ASSERT_EQ(ecclAllReduceAsync(v.data(), v.data(), v.size(), ecclFloat64, ecclSum, nullptr, comm,
                                 &req), ecclSuccess);
    int done = 0;
    while (!done) ASSERT_EQ(ecclTest(req, &done), ecclSuccess);
    ecclOpInfo_t info = ECCL_OP_INFO_INIT;
    ASSERT_EQ(ecclWait(req, &info), ecclSuccess);
    EXPECT_EQ(v[0], 2.0);
    EXPECT_GT(info.bytesSent, 0u);
    EXPECT_GT(info.bytesReceived, 0u);
  });
}

}  // namespace
}  // namespace eccl::test
