// The RDMA transport on a real device (CTest label "ibverbs"): the real
// libibverbs, the real HCA and driver, no stand-in. Without an RDMA device
// every test skips with the reason; docs/ibverbs.md lists what only these
// tests can confirm. In-process peers use the device's loopback.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <numeric>
#include <vector>

#include "support/peers.h"
#include "transport/transport.h"

namespace eccl::test {
namespace {

using namespace std::chrono_literals;

class IbverbsDevice : public ::testing::Test {
 protected:
  void SetUp() override {
    const Status st = transport::checkTransport("ibverbs");
    if (!st.isOk()) GTEST_SKIP() << "no RDMA device: " << st.message();
  }
  PeerOptions options() const {
    PeerOptions o;
    o.transport = "ibverbs";
    return o;
  }
};

// Sizes from empty to many slots and frames, in and out of place, and a
// broadcast from every root: exact integer results on every member.
TEST_F(IbverbsDevice, CollectivesAreExact) {
  spawnPeers(3, [](ecclComm_t comm) {
    const int rank = rankOf(comm);
    for (size_t n : {size_t{0}, size_t{1}, size_t{1001}, size_t{3} << 20}) {
      std::vector<int32_t> in(n), out(n, -1);
      std::iota(in.begin(), in.end(), rank);
      ASSERT_EQ(ecclAllReduce(in.data(), out.data(), n, ecclInt32, ecclSum, nullptr, comm, nullptr),
                ecclSuccess) << ecclGetLastError(comm);
      for (size_t i = 0; i < n; i += 997) ASSERT_EQ(out[i], static_cast<int32_t>(3 * i + 3)) << i;
      for (int root = 0; root < 3; ++root) {
        std::vector<int32_t> b(n, rank == root ? 7 : 0);
        ASSERT_EQ(ecclBroadcast(b.data(), n, ecclInt32, root, nullptr, comm, nullptr), ecclSuccess);
        for (size_t i = 0; i < n; i += 997) ASSERT_EQ(b[i], 7);
      }
    }
  }, options());
}

// A member leaving mid-run: the survivors' next op fails or the update drops
// it, and after the update the group works on fresh queue pairs.
TEST_F(IbverbsDevice, GroupSurvivesAMemberLeaving) {
  LocalMaster master;
  std::atomic<int> left{0};
  spawnPeers(master.address(), 3, [&](ecclComm_t comm) {
    if (rankOf(comm) == 2) {
      left = 1;
      return;  // spawnPeers destroys it: it leaves the group
    }
    while (left.load() == 0) std::this_thread::sleep_for(1ms);
    std::vector<float> v(1 << 20, 1.0f);
    for (int attempt = 0; attempt < 5; ++attempt) {
      if (ecclAllReduce(v.data(), v.data(), v.size(), ecclFloat32, ecclSum, nullptr, comm, nullptr) ==
          ecclSuccess) {
        EXPECT_EQ(v[0], 2.0f);
        return;
      }
      std::fill(v.begin(), v.end(), 1.0f);
      ASSERT_EQ(ecclCommUpdateTopology(comm), ecclSuccess) << ecclGetLastError(comm);
    }
    ADD_FAILURE() << "no all-reduce succeeded after the member left";
  }, options());
}

}  // namespace
}  // namespace eccl::test
