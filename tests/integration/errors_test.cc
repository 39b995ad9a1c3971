// Bad input gets a clear error and loses nothing.
#include <gtest/gtest.h>

#include <asio.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <string>
#include <vector>

#include "support/peers.h"
#include "transport/transport.h"
#include "wire/control.h"

namespace eccl::test {
namespace {

bool mentions(const char* text, const char* what) { return std::string(text).find(what) != std::string::npos; }

TEST(Errors, MismatchedCountGivesInvalidUsageEverywhere) {
  spawnPeers(3, [](ecclComm_t comm) {
    const int rank = rankOf(comm);
    std::vector<float> v(rank == 1 ? 5000 : 4000, 1.0f);
    EXPECT_EQ(ecclAllReduce(v.data(), v.data(), v.size(), ecclFloat32, ecclSum, nullptr, comm,
                            nullptr), ecclInvalidUsage);
    EXPECT_TRUE(mentions(ecclGetLastError(comm), "count")) << ecclGetLastError(comm);
    // Nothing else is lost: the next op on the tag works.
    std::vector<float> w(100, 1.0f);
    EXPECT_EQ(ecclAllReduce(w.data(), w.data(), w.size(), ecclFloat32, ecclSum, nullptr, comm,
                            nullptr), ecclSuccess) << ecclGetLastError(comm);
    EXPECT_EQ(w[0], 3.0f);
  });
}

TEST(Errors, MismatchedOpAndDtypeGiveInvalidUsage) {
  spawnPeers(2, [](ecclComm_t comm) {
    const int rank = rankOf(comm);
    std::vector<int32_t> v(1000, 1);
    EXPECT_EQ(ecclAllReduce(v.data(), v.data(), v.size(), ecclInt32, rank == 0 ? ecclSum : ecclMax,
                            nullptr, comm, nullptr), ecclInvalidUsage);
    EXPECT_EQ(ecclAllReduce(v.data(), v.data(), v.size(), rank == 0 ? ecclInt32 : ecclUint32,
                            ecclSum, nullptr, comm, nullptr), ecclInvalidUsage);
    // One side passes count 0: it sends no data, the master still catches it.
    EXPECT_EQ(ecclAllReduce(v.data(), v.data(), rank == 0 ? 0 : v.size(), ecclInt32, ecclSum,
                            nullptr, comm, nullptr), ecclInvalidUsage);
    int32_t x = 1;
    EXPECT_EQ(ecclBroadcast(&x, 1, ecclInt32, rank, nullptr, comm, nullptr), ecclInvalidUsage);
    EXPECT_EQ(ecclAllReduce(&x, &x, 1, ecclInt32, ecclSum, nullptr, comm, nullptr), ecclSuccess);
  });
}

TEST(Errors, WrongMasterAddressIsUnreachableWithinTimeout) {
  // A port nobody listens on: bind one and close it again.
  asio::io_context io;
  asio::ip::tcp::acceptor a(io, {asio::ip::make_address("127.0.0.1"), 0});
  const uint16_t port = a.local_endpoint().port();
  a.close();
  const std::string addr = "127.0.0.1:" + std::to_string(port);
  ecclCommConfig_t cfg = ECCL_COMM_CONFIG_INIT;
  cfg.masterAddress = addr.c_str();
  cfg.connectTimeoutMs = 1000;
  ecclComm_t comm = nullptr;
  ASSERT_EQ(ecclCommCreate(&cfg, &comm), ecclSuccess);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(ecclCommConnect(comm), ecclMasterUnreachable);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(s, 3.0);
  EXPECT_GT(s, 0.5) << "a refused connect should be retried until the timeout";
  EXPECT_TRUE(mentions(ecclGetLastError(comm), addr.c_str())) << ecclGetLastError(comm);
  EXPECT_EQ(ecclCommDestroy(comm), ecclSuccess);
}

TEST(Errors, WrongAuthTokenIsRefused) {
  LocalMaster master("secret");
  ecclCommConfig_t cfg = ECCL_COMM_CONFIG_INIT;
  cfg.masterAddress = master.address().c_str();
  cfg.authToken = "guess";
  ecclComm_t comm = nullptr;
  ASSERT_EQ(ecclCommCreate(&cfg, &comm), ecclSuccess);
  EXPECT_EQ(ecclCommConnect(comm), ecclAuthFailed);
  EXPECT_TRUE(mentions(ecclGetLastError(comm), "token"));
  EXPECT_EQ(ecclCommDestroy(comm), ecclSuccess);
  // The right token works on the same master.
  PeerOptions po;
  po.authToken = "secret";
  ecclComm_t ok = connectPeer(master.address(), po);
  ASSERT_NE(ok, nullptr);
  EXPECT_EQ(ecclCommDestroy(ok), ecclSuccess);
}

// A peer of another protocol version gets a RegisterReply it can read.
TEST(Errors, ProtocolVersionMismatchIsReported) {
  LocalMaster master;
  const auto colon = master.address().rfind(':');
  asio::io_context io;
  asio::ip::tcp::socket s(io);
  s.connect({asio::ip::make_address("127.0.0.1"),
             static_cast<uint16_t>(std::stoi(master.address().substr(colon + 1)))});
  std::vector<std::byte> frame = wire::encodeControl(wire::Register{0, "127.0.0.1", 1234, 0});
  frame[4] = std::byte{99};  // protocol version field
  asio::write(s, asio::buffer(frame));
  std::array<std::byte, wire::kControlHeaderBytes> head{};
  asio::read(s, asio::buffer(head));
  Result<wire::ControlHeader> h = wire::decodeControlHeader(head);
  ASSERT_TRUE(h.hasValue()) << h.status().message();
  ASSERT_EQ(h->type, wire::MsgType::kRegisterReply);
  std::vector<std::byte> payload(h->payloadBytes);
  asio::read(s, asio::buffer(payload));
  Result<wire::ControlMessage> m = wire::decodeControl(h->type, payload);
  ASSERT_TRUE(m.hasValue());
  const auto& reply = std::get<wire::RegisterReply>(*m);
  EXPECT_EQ(reply.result, static_cast<uint32_t>(ecclVersionMismatch));
  EXPECT_TRUE(mentions(reply.message.c_str(), "99")) << reply.message;
}

// Garbage on the master port is dropped without disturbing members.
TEST(Errors, GarbageToMasterDoesNotDisturbMembers) {
  LocalMaster master;
  ecclComm_t comm = connectPeer(master.address());
  ASSERT_NE(comm, nullptr);
  {
    const auto colon = master.address().rfind(':');
    asio::io_context io;
    asio::ip::tcp::socket s(io);
    s.connect({asio::ip::make_address("127.0.0.1"),
               static_cast<uint16_t>(std::stoi(master.address().substr(colon + 1)))});
    const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    asio::write(s, asio::buffer(junk, sizeof(junk)));
    std::array<char, 16> buf{};
    asio::error_code ec;
    s.read_some(asio::buffer(buf), ec);
    EXPECT_TRUE(ec) << "the master should close a connection that sends garbage";
  }
  int pending = -1;
  EXPECT_EQ(ecclCommArePeersPending(comm, &pending), ecclSuccess);
  EXPECT_EQ(pending, 0);
  EXPECT_EQ(ecclCommDestroy(comm), ecclSuccess);
}

// A master that goes away surfaces as ecclMasterUnreachable, never a hang.
TEST(Errors, LostMasterIsReported) {
  auto master = std::make_unique<LocalMaster>();
  const std::string addr = master->address();
  std::atomic<int> ready{0};
  std::atomic<bool> masterGone{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&] {
      ecclComm_t comm = connectPeer(addr);
      ASSERT_NE(comm, nullptr);
      ASSERT_EQ(growWorld(comm, 2), ecclSuccess);
      ++ready;
      while (!masterGone) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      int pending = 0;
      EXPECT_EQ(ecclCommArePeersPending(comm, &pending), ecclMasterUnreachable);
      float x = 1;
      EXPECT_EQ(ecclAllReduce(&x, &x, 1, ecclFloat32, ecclSum, nullptr, comm, nullptr),
                ecclMasterUnreachable);
      EXPECT_TRUE(mentions(ecclGetLastError(comm), "master")) << ecclGetLastError(comm);
      EXPECT_EQ(ecclCommDestroy(comm), ecclSuccess);
    });
  }
  while (ready < 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  master.reset();
  masterGone = true;
  for (auto& t : threads) t.join();
}

// Destroy does not run ops that never started, and is bounded even when a
// neighbour never takes part.
TEST(Errors, DestroyEndsQueuedOps) {
  LocalMaster master;
  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&] {
      ecclCommConfig_t cfg = ECCL_COMM_CONFIG_INIT;
      cfg.masterAddress = master.address().c_str();
      cfg.opTimeoutMs = 1000;
      ecclComm_t comm = nullptr;
      ASSERT_EQ(ecclCommCreate(&cfg, &comm), ecclSuccess);
      ASSERT_EQ(ecclCommConnect(comm), ecclSuccess);
      ASSERT_EQ(growWorld(comm, 2), ecclSuccess);
      if (rankOf(comm) == 0) {  // rank 1 never issues these
        std::vector<float> v(1000);
        std::vector<ecclRequest_t> reqs(5);
        ecclOpOptions_t opts = ECCL_OP_OPTIONS_INIT;
        opts.tag = 3;
        for (auto& r : reqs) {
          ASSERT_EQ(ecclAllReduceAsync(v.data(), v.data(), v.size(), ecclFloat32, ecclSum, &opts,
                                       comm, &r), ecclSuccess);
        }
        const auto t0 = std::chrono::steady_clock::now();
        EXPECT_EQ(ecclCommDestroy(comm), ecclSuccess);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        EXPECT_LT(s, 5.0) << "destroy ran the queued ops";
        int failed = 0;
        for (auto& r : reqs) failed += ecclWait(r, nullptr) != ecclSuccess;
        EXPECT_EQ(failed, 5);
        done = true;
      } else {
        while (!done) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        EXPECT_EQ(ecclCommDestroy(comm), ecclSuccess);
      }
    });
  }
  for (auto& t : threads) t.join();
}

TEST(Errors, InvalidArgumentsCarryAMessage) {
  EXPECT_EQ(ecclCommCreate(nullptr, nullptr), ecclInvalidArgument);
  EXPECT_TRUE(mentions(ecclGetLastError(nullptr), "NULL"));
  ecclCommConfig_t cfg = ECCL_COMM_CONFIG_INIT;
  ecclComm_t comm = nullptr;
  EXPECT_EQ(ecclCommCreate(&cfg, &comm), ecclInvalidArgument);
  EXPECT_TRUE(mentions(ecclGetLastError(nullptr), "masterAddress"));
  cfg.masterAddress = "no-port-here";
  EXPECT_EQ(ecclCommCreate(&cfg, &comm), ecclInvalidArgument);
  cfg.masterAddress = "127.0.0.1:1";
  cfg.transport = "carrier-pigeon";
  EXPECT_EQ(ecclCommCreate(&cfg, &comm), ecclInvalidArgument);
  // Without an RDMA device (the ibverbs.* run puts a stand-in provider in).
  if (transport::checkTransport("ibverbs").code() == ecclUnsupported) {
    cfg.transport = "ibverbs";
    EXPECT_EQ(ecclCommCreate(&cfg, &comm), ecclUnsupported);
    EXPECT_TRUE(mentions(ecclGetLastError(nullptr), "ibverbs"));
  }
  ecclCommConfig_t zeroed{};
  EXPECT_EQ(ecclCommCreate(&zeroed, &comm), ecclInvalidArgument);
  EXPECT_TRUE(mentions(ecclGetLastError(nullptr), "ECCL_COMM_CONFIG_INIT"));

  spawnPeers(1, [](ecclComm_t c) {
    float x[4] = {};
    EXPECT_EQ(ecclAllReduce(x, x, 4, static_cast<ecclDataType_t>(ecclNumTypes), ecclSum, nullptr, c, nullptr),
              ecclInvalidArgument);
    EXPECT_TRUE(mentions(ecclGetLastError(c), "dtype"));
    EXPECT_EQ(ecclAllReduce(x, x, 4, ecclFloat32, static_cast<ecclRedOp_t>(ecclNumOps + 2), nullptr, c, nullptr),
              ecclInvalidArgument);
    EXPECT_EQ(ecclAllReduce(nullptr, x, 4, ecclFloat32, ecclSum, nullptr, c, nullptr),
              ecclInvalidArgument);
    EXPECT_EQ(ecclAllReduce(x, x + 1, 3, ecclFloat32, ecclSum, nullptr, c, nullptr),
              ecclInvalidArgument);
    EXPECT_TRUE(mentions(ecclGetLastError(c), "overlap"));
    ecclOpOptions_t opts = ECCL_OP_OPTIONS_INIT;
    opts.memType = ecclMemCuda;
    EXPECT_EQ(ecclAllReduce(x, x, 4, ecclFloat32, ecclSum, &opts, c, nullptr), ecclUnsupported);
    EXPECT_EQ(ecclAllReduceAsync(x, x, 4, ecclFloat32, ecclSum, nullptr, c, nullptr),
              ecclInvalidArgument);
    EXPECT_EQ(ecclCommConnect(c), ecclInvalidUsage);
    EXPECT_EQ(ecclCommGetRank(c, nullptr), ecclInvalidArgument);
  });
  EXPECT_EQ(ecclWait(nullptr, nullptr), ecclInvalidArgument);
  EXPECT_EQ(ecclCommGetWorldSize(nullptr, nullptr), ecclInvalidArgument);
  EXPECT_EQ(ecclCommDestroy(nullptr), ecclSuccess);
  EXPECT_EQ(ecclMasterDestroy(nullptr), ecclSuccess);
}

TEST(Errors, EveryResultHasARemedyText) {
  for (int r = 0; r < ecclNumResults; ++r) {
    const std::string s = ecclGetErrorString(static_cast<ecclResult_t>(r));
    EXPECT_GT(s.size(), 10u) << r;
    EXPECT_EQ(s.rfind("ecc", 0), 0u) << s;
  }
  EXPECT_TRUE(mentions(ecclGetErrorString(static_cast<ecclResult_t>(1000)), "unknown"));
  int v = 0;
  ASSERT_EQ(ecclGetVersion(&v), ecclSuccess);
  EXPECT_EQ(v, ECCL_VERSION_CODE);
}

}  // namespace
}  // namespace eccl::test

namespace eccl::test {
namespace {

// Connect, update and destroy must not overlap on one communicator: a call
// that finds another running says so instead of racing.
TEST(Errors, LifecycleCallsDoNotOverlap) {
  LocalMaster master;
  ecclComm_t member = connectPeer(master.address());
  ASSERT_NE(member, nullptr);
  const std::string address = master.address();
  ecclCommConfig_t cfg = commConfig(address, {});
  ecclComm_t newcomer = nullptr;
  ASSERT_EQ(ecclCommCreate(&cfg, &newcomer), ecclSuccess);
  // The newcomer's connect blocks while it is pending.
  std::thread joining([&] { EXPECT_EQ(ecclCommConnect(newcomer), ecclSuccess) << ecclGetLastError(newcomer); });
  int pending = 0;
  for (int i = 0; i < 500 && pending == 0; ++i) {
    ASSERT_EQ(ecclCommArePeersPending(member, &pending), ecclSuccess);
    if (pending == 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(pending, 1);
  EXPECT_EQ(ecclCommConnect(newcomer), ecclInvalidUsage);
  EXPECT_TRUE(mentions(ecclGetLastError(newcomer), "must not overlap"));
  EXPECT_EQ(ecclCommUpdateTopology(newcomer), ecclInvalidUsage);
  EXPECT_EQ(ecclCommDestroy(newcomer), ecclInvalidUsage);
  EXPECT_EQ(ecclCommUpdateTopology(member), ecclSuccess);  // admits it
  joining.join();
  int world = 0;
  EXPECT_EQ(ecclCommGetWorldSize(newcomer, &world), ecclSuccess);
  EXPECT_EQ(world, 2);
  EXPECT_EQ(ecclCommDestroy(newcomer), ecclSuccess);
  EXPECT_EQ(ecclCommDestroy(member), ecclSuccess);
}

}  // namespace
}  // namespace eccl::test
