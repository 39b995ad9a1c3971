// Admission, epochs, late joiners and peer groups.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "support/peers.h"

namespace eccl::test {
namespace {

TEST(Membership, FirstPeerIsAdmittedAtOnce) {
  LocalMaster master;
  ecclComm_t comm = connectPeer(master.address());
  ASSERT_NE(comm, nullptr);
  EXPECT_EQ(worldOf(comm), 1);
  EXPECT_EQ(rankOf(comm), 0);
  uint64_t epoch = 0;
  ASSERT_EQ(ecclCommGetEpoch(comm, &epoch), ecclSuccess);
  EXPECT_EQ(epoch, 1u);
  int pending = -1;
  ASSERT_EQ(ecclCommArePeersPending(comm, &pending), ecclSuccess);
  EXPECT_EQ(pending, 0);
  // A world of one reduces locally.
  float x[3] = {1, 2, 3}, y[3] = {};
  ASSERT_EQ(ecclAllReduce(x, y, 3, ecclFloat32, ecclSum, nullptr, comm, nullptr), ecclSuccess);
  EXPECT_EQ(y[2], 3.0f);
  // Nothing changed: no new epoch.
  ASSERT_EQ(ecclCommUpdateTopology(comm), ecclSuccess);
  ASSERT_EQ(ecclCommGetEpoch(comm, &epoch), ecclSuccess);
  EXPECT_EQ(epoch, 1u);
  EXPECT_EQ(ecclCommDestroy(comm), ecclSuccess);
}

// Three members run collectives; a fourth registers mid-run, stays pending
// (disturbing nothing) until the members update the topology, then takes
// part in the next all-reduce.
TEST(Membership, LateJoinerAdmittedAtUpdateTopology) {
  LocalMaster master;
  std::atomic<bool> joinerRegistered{false};
  std::atomic<int> admittedWorld{0};
  std::thread joiner;
  spawnPeers(master.address(), 3, [&](ecclComm_t comm) {
    const int rank = rankOf(comm);
    uint64_t epoch0 = 0;
    ecclCommGetEpoch(comm, &epoch0);
    if (rank == 0) {
      joiner = std::thread([&] {
        ecclComm_t late = connectPeer(master.address());  // blocks while pending
        ASSERT_NE(late, nullptr);
        admittedWorld = worldOf(late);
        EXPECT_EQ(rankOf(late), 3);
        std::vector<int32_t> v(1000, 10);
        ASSERT_EQ(ecclAllReduce(v.data(), v.data(), v.size(), ecclInt32, ecclSum, nullptr, late,
                                nullptr), ecclSuccess) << ecclGetLastError(late);
        EXPECT_EQ(v[999], 10 + 1 + 2 + 3);
        EXPECT_EQ(ecclCommDestroy(late), ecclSuccess);
      });
    }
    // Keep all-reducing until everyone has seen the newcomer pending.
    for (int step = 0;; ++step) {
      int pending = 0;
      ASSERT_EQ(ecclCommArePeersPending(comm, &pending), ecclSuccess);
      std::vector<int32_t> v(1000, 1);
      int32_t flag = pending;
      ASSERT_EQ(ecclAllReduce(&flag, &flag, 1, ecclInt32, ecclMin, nullptr, comm, nullptr), ecclSuccess);
      ASSERT_EQ(ecclAllReduce(v.data(), v.data(), v.size(), ecclInt32, ecclSum, nullptr, comm,
                              nullptr), ecclSuccess);
      EXPECT_EQ(v[0], 3);
      EXPECT_EQ(worldOf(comm), 3);
      if (flag == 1) break;
      ASSERT_LT(step, 2000) << "the newcomer never showed up as pending";
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    joinerRegistered = true;
    ASSERT_EQ(ecclCommUpdateTopology(comm), ecclSuccess) << ecclGetLastError(comm);
    EXPECT_EQ(worldOf(comm), 4);
    EXPECT_EQ(rankOf(comm), rank);  // admission order keeps existing ranks
    uint64_t epoch1 = 0;
    ecclCommGetEpoch(comm, &epoch1);
    EXPECT_EQ(epoch1, epoch0 + 1);
    std::vector<int32_t> v(1000, rank + 1);
    ASSERT_EQ(ecclAllReduce(v.data(), v.data(), v.size(), ecclInt32, ecclSum, nullptr, comm,
                            nullptr), ecclSuccess) << ecclGetLastError(comm);
    EXPECT_EQ(v[0], 16);
    if (rank == 0) joiner.join();
  });
  EXPECT_TRUE(joinerRegistered);
  EXPECT_EQ(admittedWorld, 4);
}

// Two peer groups share a master and an epoch but reduce separately.
TEST(Membership, PeerGroupsReduceSeparately) {
  LocalMaster master;
  std::vector<std::thread> threads;
  std::atomic<int> admitted{0};
  for (uint32_t group : {0u, 1u}) {
    for (int i = 0; i < 2; ++i) {
      threads.emplace_back([&, group] {
        PeerOptions po;
        po.peerGroup = group;
        ecclComm_t comm = connectPeer(master.address(), po);
        ASSERT_NE(comm, nullptr);
        ++admitted;
        // Topology updates are global: every member votes while anyone is
        // pending, whatever its group, until all four are in.
        ASSERT_EQ(updateUntil(comm, [&] { return admitted >= 4; }), ecclSuccess)
            << ecclGetLastError(comm);
        EXPECT_EQ(worldOf(comm), 2);
        uint32_t g = 99;
        ASSERT_EQ(ecclCommGetPeerGroup(comm, &g), ecclSuccess);
        EXPECT_EQ(g, group);
        std::vector<float> v(4096, 1.0f + static_cast<float>(group));
        ASSERT_EQ(ecclAllReduce(v.data(), v.data(), v.size(), ecclFloat32, ecclSum, nullptr, comm,
                                nullptr), ecclSuccess) << ecclGetLastError(comm);
        EXPECT_EQ(v[0], 2.0f * (1.0f + static_cast<float>(group)));
        EXPECT_EQ(ecclCommDestroy(comm), ecclSuccess);
      });
    }
  }
  for (auto& t : threads) t.join();
}

}  // namespace
}  // namespace eccl::test
