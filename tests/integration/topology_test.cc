// ecclCommOptimizeTopology on loopback: every member takes part in the
// probes, gets a ring of distinct ranks and exact results afterwards; peer
// groups probe independently; a member calling ecclCommUpdateTopology joins
// the optimizing update; probe links are authenticated like every data link.
// (Which ring wins is checked in the network lab: tests/lab/.)
#include <gtest/gtest.h>

#include <cstdlib>
#include <future>
#include <thread>
#include <vector>

#include "support/peers.h"
#include "transport/transport.h"
#include "wire/data.h"

namespace eccl::test {
namespace {

// Each member contributes a one-hot vector at its rank: the sum is all ones
// exactly when the ranks are 0 .. n-1, each once.
void expectDistinctRanks(ecclComm_t comm) {
  const int n = worldOf(comm);
  std::vector<int32_t> v(n, 0);
  v[rankOf(comm)] = 1;
  ASSERT_EQ(ecclAllReduce(v.data(), v.data(), v.size(), ecclInt32, ecclSum, nullptr, comm, nullptr),
            ecclSuccess) << ecclGetLastError(comm);
  for (int r = 0; r < n; ++r) EXPECT_EQ(v[r], 1) << "rank " << r;
}

void expectExactSum(ecclComm_t comm) {
  const int n = worldOf(comm);
  std::vector<float> v(300000, static_cast<float>(rankOf(comm) + 1));
  ASSERT_EQ(ecclAllReduce(v.data(), v.data(), v.size(), ecclFloat32, ecclSum, nullptr, comm, nullptr),
            ecclSuccess) << ecclGetLastError(comm);
  const float want = static_cast<float>(n * (n + 1) / 2);
  EXPECT_EQ(v.front(), want);
  EXPECT_EQ(v.back(), want);
}

class OptimizeTopology : public ::testing::Test {
 protected:
  // Short probe rounds (read by the master when it starts).
  void SetUp() override { setenv("ECCL_PROBE_MS", "150", 1); }
  void TearDown() override { unsetenv("ECCL_PROBE_MS"); }
};

TEST_F(OptimizeTopology, EveryMemberProbesAndKeepsExactResults) {
  LocalMaster master;
  spawnPeers(master.address(), 4, [&](ecclComm_t comm) {
    ASSERT_EQ(ecclCommOptimizeTopology(comm), ecclSuccess) << ecclGetLastError(comm);
    EXPECT_EQ(worldOf(comm), 4);
    expectDistinctRanks(comm);
    expectExactSum(comm);
    // Every pair is measured now: the second call probes nothing and
    // keeps the ring it chose (no new epoch).
    uint64_t before = 0, after = 0;
    ASSERT_EQ(ecclCommGetEpoch(comm, &before), ecclSuccess);
    const int rank = rankOf(comm);
    ASSERT_EQ(ecclCommOptimizeTopology(comm), ecclSuccess) << ecclGetLastError(comm);
    ASSERT_EQ(ecclCommGetEpoch(comm, &after), ecclSuccess);
    EXPECT_EQ(after, before);
    EXPECT_EQ(rankOf(comm), rank);
    expectExactSum(comm);
  });
}

// Groups probe at once, each among its own members. Group 1's members call
// ecclCommUpdateTopology meanwhile: the update is global, so they take part
// (their group is probed too) and it completes for everyone.
TEST_F(OptimizeTopology, PeerGroupsProbeSeparatelyAndPlainUpdatesJoinIn) {
  LocalMaster master;
  std::vector<std::thread> threads;
  std::atomic<int> admitted{0};
  const int sizes[2] = {3, 2};
  for (uint32_t group : {0u, 1u}) {
    for (int i = 0; i < sizes[group]; ++i) {
      threads.emplace_back([&, group] {
        PeerOptions po;
        po.peerGroup = group;
        ecclComm_t comm = connectPeer(master.address(), po);
        ASSERT_NE(comm, nullptr);
        ++admitted;
        ASSERT_EQ(updateUntil(comm, [&] { return admitted >= 5 && worldOf(comm) == sizes[group]; }),
                  ecclSuccess) << ecclGetLastError(comm);
        const ecclResult_t r = group == 0 ? ecclCommOptimizeTopology(comm) : ecclCommUpdateTopology(comm);
        ASSERT_EQ(r, ecclSuccess) << ecclGetLastError(comm);
        EXPECT_EQ(worldOf(comm), sizes[group]);
        expectDistinctRanks(comm);
        expectExactSum(comm);
        EXPECT_EQ(ecclCommDestroy(comm), ecclSuccess);
      });
    }
  }
  for (auto& t : threads) t.join();
}

// Probes run with the group's token: optimize works in an authenticated
// group, and a transport without the token cannot open a probe channel to
// a member's acceptor (nor one that skips nothing but knows a wrong token).
TEST_F(OptimizeTopology, ProbesRespectTheAuthToken) {
  LocalMaster master("probe-secret");
  PeerOptions po;
  po.authToken = "probe-secret";
  spawnPeers(master.address(), 3, [&](ecclComm_t comm) {
    ASSERT_EQ(ecclCommOptimizeTopology(comm), ecclSuccess) << ecclGetLastError(comm);
    expectExactSum(comm);
  }, po);

  using namespace eccl::transport;
  const CancelFlag never{0};
  TransportOptions good, bad;
  good.bindAddress = bad.bindAddress = "127.0.0.1";
  good.authToken = "probe-secret";
  bad.authToken = "guess";
  auto member = createTransport("tcp", good).value();
  auto intruder = createTransport("tcp", bad).value();
  const uint64_t channel = wire::probeChannel(1, 0);
  auto dial = std::async(std::launch::async, [&] {
    return intruder->connectChannel({2, "127.0.0.1", member->port()}, 3, 1, channel,
                                    Clock::now() + std::chrono::seconds(3), never, 4);
  });
  auto in = member->acceptChannel(2, 3, 1, channel, Clock::now() + std::chrono::seconds(2), never);
  auto out = dial.get();
  EXPECT_FALSE(in.hasValue());
  ASSERT_FALSE(out.hasValue());
  EXPECT_EQ(out.status().code(), ecclAuthFailed) << out.status().message();
}

}  // namespace
}  // namespace eccl::test
