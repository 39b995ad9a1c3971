// ecclSharedStateSync end to end: a master and N peer threads on loopback.
#include <gtest/gtest.h>

#include <cstring>
#include <mutex>
#include <numeric>
#include <string>
#include <vector>

#include <atomic>
#include <chrono>
#include <thread>

#include "state/hash.h"
#include "state/transfer.h"
#include "support/peers.h"

namespace eccl::test {
namespace {

// A peer's state: tensors "a" (float32), "b" (int64), "big" (float32), and a
// divergent "rng"; `salt` changes "b"'s and "big"'s content.
struct Local {
  std::vector<float> a, big;
  std::vector<int64_t> b;
  std::vector<uint64_t> rng;
  std::vector<ecclTensorInfo_t> tensors;
  ecclSharedState_t state = ECCL_SHARED_STATE_INIT;

  Local(int salt, size_t bigCount, int rank, uint64_t revision) {
    a.assign(1000, 1.5f);
    b.resize(77);
    std::iota(b.begin(), b.end(), salt);
    big.resize(bigCount);
    for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<float>((i * 7 + salt) % 1000);
    rng.assign(4, static_cast<uint64_t>(rank));
    tensors = {{"a", a.data(), a.size(), ecclFloat32, ecclMemHost, 0},
               {"b", b.data(), b.size(), ecclInt64, ecclMemHost, 0},
               {"big", big.data(), big.size(), ecclFloat32, ecclMemHost, 0},
               {"rng", rng.data(), rng.size(), ecclUint64, ecclMemHost, 1}};
    state.revision = revision;
    state.tensors = tensors.data();
    state.tensorCount = tensors.size();
  }
  uint64_t hash() const {
    std::vector<state::HashJob> jobs = {{a.data(), a.size() * 4, 0},
                                        {b.data(), b.size() * 8, 0},
                                        {big.data(), big.size() * 4, 0}};
    state::hashAll(jobs);
    return jobs[0].hash ^ (jobs[1].hash * 3) ^ (jobs[2].hash * 5);
  }
};

struct Hashes {
  std::mutex mu;
  std::vector<uint64_t> all;
  void put(uint64_t h) {
    std::lock_guard<std::mutex> lock(mu);
    all.push_back(h);
  }
  void expectEqual(size_t n) {
    ASSERT_EQ(all.size(), n);
    for (uint64_t h : all) EXPECT_EQ(h, all[0]);
  }
};

TEST(SharedState, IdenticalStateMovesNothingAndAnOutdatedPeerGetsOnlyDirtyTensors) {
  Hashes hashes;
  spawnPeers(3, [&](ecclComm_t comm) {
    const int rank = rankOf(comm);
    Local s(0, 1 << 16, rank, 5);
    ecclSyncInfo_t info = ECCL_SYNC_INFO_INIT;
    ASSERT_EQ(ecclSharedStateSync(comm, &s.state, ecclSyncEnforcePopular, &info), ecclSuccess)
        << ecclGetLastError(comm);
    EXPECT_EQ(info.bytesReceived, 0u);
    EXPECT_EQ(info.tensorsFetched, 0u);
    EXPECT_EQ(s.state.revision, 5u);
    // Rank 2 drifts in "b" only; the next sync (revision + 1) repairs just that.
    if (rank == 2) s.b[3] = -1;
    s.state.revision = 6;
    info = ECCL_SYNC_INFO_INIT;
    ASSERT_EQ(ecclSharedStateSync(comm, &s.state, ecclSyncEnforcePopular, &info), ecclSuccess)
        << ecclGetLastError(comm);
    if (rank == 2) {
      EXPECT_EQ(info.tensorsFetched, 1u);
      EXPECT_EQ(info.bytesReceived, s.b.size() * 8);
      EXPECT_EQ(s.b[3], 3);
    } else {
      EXPECT_EQ(info.bytesReceived, 0u);
    }
    EXPECT_EQ(s.rng[0], static_cast<uint64_t>(rank)) << "divergent tensors are never touched";
    hashes.put(s.hash());
  });
  hashes.expectEqual(3);
}

TEST(SharedState, NewcomerStripesFromThreeSources) {
  Hashes hashes;
  spawnPeers(4, [&](ecclComm_t comm) {
    const int rank = rankOf(comm);
    const bool newcomer = rank == 3;
    // 8 MiB to fetch, in 1 MiB chunks: enough for every source to carry some.
    Local s(newcomer ? 99 : 0, 2 << 20, rank, newcomer ? 0 : 41);
    ecclSyncInfo_t info = ECCL_SYNC_INFO_INIT;
    ASSERT_EQ(ecclSharedStateSync(comm, &s.state,
                                  newcomer ? ecclSyncReceiveOnly : ecclSyncEnforcePopular, &info),
              ecclSuccess)
        << ecclGetLastError(comm);
    EXPECT_EQ(s.state.revision, 41u);
    if (newcomer) {
      EXPECT_EQ(info.tensorsFetched, 2u);
      EXPECT_EQ(info.sourcesUsed, 3u) << "striped across the three up-to-date peers";
      for (uint32_t i = 0; i < info.sourcesUsed; ++i) EXPECT_GT(info.bytesFromSource[i], 0u);
    } else {
      EXPECT_GT(info.bytesSent, 0u);
    }
    hashes.put(s.hash());
  });
  hashes.expectEqual(4);
}

TEST(SharedState, MismatchesAreRefusedAndNeverOverwritten) {
  spawnPeers(3, [&](ecclComm_t comm) {
    const int rank = rankOf(comm);
    // Ranks 0 and 1 agree; rank 2 holds "b" with another shape and other values.
    Local s(rank == 2 ? 7 : 0, 1000, rank, 10);
    if (rank == 2) s.tensors[1].count = 76;
    const std::vector<int64_t> before = s.b;
    const ecclResult_t r = ecclSharedStateSync(comm, &s.state, ecclSyncEnforcePopular, nullptr);
    if (rank == 2) {
      EXPECT_EQ(r, ecclStateMismatch);
      EXPECT_NE(std::string(ecclGetLastError(comm)).find("\"b\""), std::string::npos)
          << ecclGetLastError(comm);
      EXPECT_EQ(s.b, before);
    } else {
      EXPECT_EQ(r, ecclSuccess) << ecclGetLastError(comm);
      EXPECT_EQ(s.b[0], 0);
    }
    // A revision skip is refused for the one that skips.
    s.state.revision = rank == 0 ? 13 : 11;
    if (rank == 2) s.tensors[1].count = 77;
    const ecclResult_t r2 = ecclSharedStateSync(comm, &s.state, ecclSyncEnforcePopular, nullptr);
    if (rank == 0) {
      EXPECT_EQ(r2, ecclStateMismatch);
    } else {
      EXPECT_EQ(r2, ecclSuccess) << ecclGetLastError(comm);
    }
  });
}

// Strategy rules end to end, at 2, 3 and 4 peers. Rank 0 is send-only with
// the popular content: it serves, never receives. With 3 or more, rank 1 is
// send-only with content that loses (rank 2 agrees with rank 0): refused,
// its bytes kept. Receive-only ranks (rank 1 of 2, rank 3 of 4) hold other
// content: they receive the popular one and never serve.
TEST(SharedState, StrategyRules) {
  for (int n : {2, 3, 4}) {
    SCOPED_TRACE("world " + std::to_string(n));
    spawnPeers(n, [&](ecclComm_t comm) {
      const int rank = rankOf(comm);
      const bool loser = n >= 3 && rank == 1;
      const bool receiveOnly = (n == 2 && rank == 1) || rank == 3;
      const ecclSyncStrategy_t strategy = rank == 0 || loser ? ecclSyncSendOnly
                                          : receiveOnly      ? ecclSyncReceiveOnly
                                                             : ecclSyncEnforcePopular;
      Local s(rank == 0 || rank == 2 ? 0 : 40 + rank, 1 << 12, rank, 3);
      const std::vector<int64_t> before = s.b;
      ecclSyncInfo_t info = ECCL_SYNC_INFO_INIT;
      const ecclResult_t r = ecclSharedStateSync(comm, &s.state, strategy, &info);
      if (loser) {
        EXPECT_EQ(r, ecclStateMismatch);
        EXPECT_NE(std::string(ecclGetLastError(comm)).find("send-only"), std::string::npos)
            << ecclGetLastError(comm);
        EXPECT_EQ(s.b, before);
        return;
      }
      ASSERT_EQ(r, ecclSuccess) << ecclGetLastError(comm);
      EXPECT_EQ(s.b[0], 0) << "everyone else holds the popular content";
      if (strategy == ecclSyncSendOnly) EXPECT_EQ(info.bytesReceived, 0u);
      if (receiveOnly) {
        EXPECT_GT(info.bytesReceived, 0u);
        EXPECT_EQ(info.bytesSent, 0u);
      }
      if (rank == 0 && n == 2) EXPECT_GT(info.bytesSent, 0u);  // the only source
    });
  }
}

// A byte flipped in flight (the test hook corrupts the first chunk once) is
// caught by the receiver's hash check and fetched again, never accepted.
TEST(SharedState, CorruptedTransferIsCaughtAndRepaired) {
  std::atomic<int> flipped{0};
  state::setChunkHookForTesting([&](uint32_t, uint64_t offset, std::span<std::byte> bytes) {
    if (offset == 0 && flipped.fetch_add(1) == 0) bytes[5] ^= std::byte{0x10};
  });
  Hashes hashes;
  spawnPeers(3, [&](ecclComm_t comm) {
    const int rank = rankOf(comm);
    Local s(rank == 2 ? 3 : 0, 1 << 16, rank, 1);
    ASSERT_EQ(ecclSharedStateSync(comm, &s.state, ecclSyncEnforcePopular, nullptr), ecclSuccess)
        << ecclGetLastError(comm);
    hashes.put(s.hash());
  });
  state::setChunkHookForTesting(nullptr);
  EXPECT_GE(flipped.load(), 3) << "the corrupted chunk and its refetch were both sent";
  hashes.expectEqual(3);
}

// Two peer groups sync at the same time, each to its own content.
TEST(SharedState, PeerGroupsSyncIndependently) {
  LocalMaster master;
  std::vector<std::thread> threads;
  std::atomic<int> admitted{0};
  Hashes byGroup[2];
  for (uint32_t group : {0u, 1u}) {
    for (int i = 0; i < 3; ++i) {
      threads.emplace_back([&, group, i] {
        PeerOptions po;
        po.peerGroup = group;
        ecclComm_t comm = connectPeer(master.address(), po);
        ASSERT_NE(comm, nullptr);
        ++admitted;
        ASSERT_EQ(updateUntil(comm, [&] { return admitted >= 6 && worldOf(comm) >= 3; }), ecclSuccess)
            << ecclGetLastError(comm);
        // Group g's content has salt 10 * g; one member of each group drifted.
        Local s(i == 2 ? 55 : static_cast<int>(10 * group), 1 << 18, i, 3);
        ASSERT_EQ(ecclSharedStateSync(comm, &s.state, ecclSyncEnforcePopular, nullptr), ecclSuccess)
            << ecclGetLastError(comm);
        EXPECT_EQ(s.b[0], static_cast<int64_t>(10 * group));
        byGroup[group].put(s.hash());
        ecclCommDestroy(comm);
      });
    }
  }
  for (auto& t : threads) t.join();
  byGroup[0].expectEqual(3);
  byGroup[1].expectEqual(3);
  EXPECT_NE(byGroup[0].all[0], byGroup[1].all[0]);
}

TEST(SharedState, BadArgumentsAreRefusedLocally) {
  spawnPeers(1, [&](ecclComm_t comm) {
    Local s(0, 10, 0, 1);
    s.tensors[1].name = "a";
    EXPECT_EQ(ecclSharedStateSync(comm, &s.state, ecclSyncEnforcePopular, nullptr), ecclInvalidArgument);
    EXPECT_NE(std::string(ecclGetLastError(comm)).find("two tensors"), std::string::npos);
    s.tensors[1].name = "b";
    EXPECT_EQ(ecclSharedStateSync(comm, &s.state, static_cast<ecclSyncStrategy_t>(9), nullptr),
              ecclInvalidArgument);
    s.tensors[0].memType = static_cast<ecclMemType_t>(5);
    EXPECT_EQ(ecclSharedStateSync(comm, &s.state, ecclSyncEnforcePopular, nullptr), ecclInvalidArgument);
    // No CUDA plugin next to this binary: device tensors are unsupported, with the reason.
    s.tensors[0].memType = ecclMemCuda;
    EXPECT_EQ(ecclSharedStateSync(comm, &s.state, ecclSyncEnforcePopular, nullptr), ecclUnsupported);
  });
}

}  // namespace
}  // namespace eccl::test
