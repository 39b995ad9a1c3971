// Recovery paths that run in one process: a failed op hands back the
// caller's input, a kicked peer is told so and can rejoin. The multi-process
// faults (SIGKILL, SIGSTOP, cut links) are in tests/fault.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>
#include <vector>

#include "support/peers.h"

namespace eccl::test {
namespace {

// A mismatch fails the op on every peer after some of its bytes may already
// have been reduced: the receive buffers must hold the inputs again.
TEST(Recovery, FailedOpsLeaveTheInputInPlace) {
  spawnPeers(3, [](ecclComm_t comm) {
    const int rank = rankOf(comm);
    const size_t n = rank == 2 ? 300000 : 200000;
    std::vector<float> input(n);
    for (size_t i = 0; i < n; ++i) input[i] = static_cast<float>(rank * 1000 + i % 977);
    // In place.
    std::vector<float> v = input;
    EXPECT_EQ(ecclAllReduce(v.data(), v.data(), n, ecclFloat32, ecclSum, nullptr, comm, nullptr),
              ecclInvalidUsage);
    EXPECT_EQ(v, input);
    // Out of place: the receive buffer gets the input.
    std::vector<float> out(n, -1.0f);
    EXPECT_EQ(ecclAllReduce(input.data(), out.data(), n, ecclFloat32, ecclSum, nullptr, comm,
                            nullptr), ecclInvalidUsage);
    EXPECT_EQ(out, input);
    // Broadcast: every non-root keeps what it had.
    v = input;
    EXPECT_EQ(ecclBroadcast(v.data(), n, ecclFloat32, 0, nullptr, comm, nullptr), ecclInvalidUsage);
    EXPECT_EQ(v, input);
    // And the group still works.
    float x = 1;
    EXPECT_EQ(ecclAllReduce(&x, &x, 1, ecclFloat32, ecclSum, nullptr, comm, nullptr), ecclSuccess);
    EXPECT_EQ(x, 3.0f);
  });
}

// A peer that stops heartbeating is removed; its next call says so, and it
// can connect again as a newcomer.
TEST(Recovery, KickedPeerIsToldAndCanRejoin) {
  ecclMasterConfig_t mcfg = ECCL_MASTER_CONFIG_INIT;
  mcfg.listenAddress = "127.0.0.1";
  mcfg.heartbeatIntervalMs = 200;
  mcfg.failureTimeoutMs = 1000;
  ecclMaster_t master = nullptr;
  ASSERT_EQ(ecclMasterCreate(&mcfg, &master), ecclSuccess);
  uint16_t port = 0;
  ASSERT_EQ(ecclMasterGetPort(master, &port), ecclSuccess);
  const std::string addr = "127.0.0.1:" + std::to_string(port);

  ecclCommConfig_t cfg = ECCL_COMM_CONFIG_INIT;
  cfg.masterAddress = addr.c_str();
  cfg.heartbeatIntervalMs = 5000;  // far slower than the master tolerates
  cfg.failureTimeoutMs = 20000;
  ecclComm_t comm = nullptr;
  ASSERT_EQ(ecclCommCreate(&cfg, &comm), ecclSuccess);
  ASSERT_EQ(ecclCommConnect(comm), ecclSuccess) << ecclGetLastError(comm);
  std::this_thread::sleep_for(std::chrono::milliseconds(1600));
  int pending = 0;
  EXPECT_EQ(ecclCommArePeersPending(comm, &pending), ecclKicked);
  EXPECT_NE(std::string(ecclGetLastError(comm)).find("no heartbeat"), std::string::npos)
      << ecclGetLastError(comm);
  float x = 1;
  EXPECT_EQ(ecclCommUpdateTopology(comm), ecclKicked);
  // Rejoin: the world is empty, so it is admitted at once.
  ASSERT_EQ(ecclCommConnect(comm), ecclSuccess) << ecclGetLastError(comm);
  EXPECT_EQ(ecclCommArePeersPending(comm, &pending), ecclSuccess) << ecclGetLastError(comm);
  EXPECT_EQ(ecclAllReduce(&x, &x, 1, ecclFloat32, ecclSum, nullptr, comm, nullptr), ecclSuccess);
  uint64_t epoch = 0;
  EXPECT_EQ(ecclCommGetEpoch(comm, &epoch), ecclSuccess);
  EXPECT_EQ(epoch, 2u);  // a new epoch without the old self
  EXPECT_EQ(ecclCommDestroy(comm), ecclSuccess);
  EXPECT_EQ(ecclMasterDestroy(master), ecclSuccess);
}

// The heartbeat settings are checked against each other.
TEST(Recovery, FailureTimeoutMustExceedHeartbeat) {
  ecclCommConfig_t cfg = ECCL_COMM_CONFIG_INIT;
  cfg.masterAddress = "127.0.0.1:1";
  cfg.heartbeatIntervalMs = 1000;
  cfg.failureTimeoutMs = 1000;
  ecclComm_t comm = nullptr;
  EXPECT_EQ(ecclCommCreate(&cfg, &comm), ecclInvalidArgument);
  EXPECT_NE(std::string(ecclGetLastError(nullptr)).find("failureTimeoutMs"), std::string::npos);
}

}  // namespace
}  // namespace eccl::test
