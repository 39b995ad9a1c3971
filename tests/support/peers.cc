#include "support/peers.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#ifdef ECCL_HAVE_IBVERBS
#include "support/fake_verbs.h"
#endif

namespace eccl::test {
namespace {

// ECCL_TEST_TRANSPORT: the transport of peers whose options name none (the
// integration suite's passes over other transports, tests/CMakeLists.txt).
// "ibverbs" runs over the in-process stand-in provider, installed for the
// life of the process.
const char* defaultTransport() {
  static const char* name = [] {
    static const std::string t = std::getenv("ECCL_TEST_TRANSPORT") ? std::getenv("ECCL_TEST_TRANSPORT") : "";
#ifdef ECCL_HAVE_IBVERBS
    if (t == "ibverbs") {
      static FakeVerbs* fake = new FakeVerbs();  // never destroyed: peers may outlive statics
      transport::ibverbs::setApiForTesting(fake->api());
    }
#endif
    return t.empty() ? nullptr : t.c_str();
  }();
  return name;
}

}  // namespace

LocalMaster::LocalMaster(const char* authToken) {
  ecclMasterConfig_t cfg = ECCL_MASTER_CONFIG_INIT;
  cfg.listenAddress = "127.0.0.1";
  cfg.authToken = authToken;
  EXPECT_EQ(ecclMasterCreate(&cfg, &master_), ecclSuccess) << ecclGetLastError(nullptr);
  uint16_t port = 0;
  EXPECT_EQ(ecclMasterGetPort(master_, &port), ecclSuccess);
  address_ = "127.0.0.1:" + std::to_string(port);
}

LocalMaster::~LocalMaster() { ecclMasterDestroy(master_); }

ecclCommConfig_t commConfig(const std::string& masterAddress, const PeerOptions& options) {
  ecclCommConfig_t cfg = ECCL_COMM_CONFIG_INIT;
  cfg.masterAddress = masterAddress.c_str();
  cfg.peerGroup = options.peerGroup;
  cfg.streamsPerPeer = options.streams;
  cfg.authToken = options.authToken;
  cfg.tls = options.tls;
  cfg.tlsCertFile = options.tlsCertFile;
  cfg.tlsKeyFile = options.tlsKeyFile;
  cfg.tlsCaFile = options.tlsCaFile;
  cfg.transport = options.transport != nullptr ? options.transport : defaultTransport();
  cfg.opTimeoutMs = kTestOpTimeoutMs;
  cfg.connectTimeoutMs = 5000;
  return cfg;
}

ecclComm_t connectPeer(const std::string& masterAddress, const PeerOptions& options) {
  const ecclCommConfig_t cfg = commConfig(masterAddress, options);
  ecclComm_t comm = nullptr;
  if (ecclCommCreate(&cfg, &comm) != ecclSuccess) {
    ADD_FAILURE() << "ecclCommCreate: " << ecclGetLastError(nullptr);
    return nullptr;
  }
  if (ecclResult_t r = ecclCommConnect(comm); r != ecclSuccess) {
    ADD_FAILURE() << "ecclCommConnect: " << ecclGetErrorString(r) << ": " << ecclGetLastError(comm);
    ecclCommDestroy(comm);
    return nullptr;
  }
  return comm;
}

ecclResult_t updateUntil(ecclComm_t comm, const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return ecclTimeout;
    int pending = 0;
    if (ecclResult_t r = ecclCommArePeersPending(comm, &pending); r != ecclSuccess) return r;
    if (pending) {
      if (ecclResult_t r = ecclCommUpdateTopology(comm); r != ecclSuccess) return r;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return ecclSuccess;
}

ecclResult_t growWorld(ecclComm_t comm, int want) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (worldOf(comm) < want) {
    if (std::chrono::steady_clock::now() > deadline) return ecclTimeout;
    int pending = 0;
    if (ecclResult_t r = ecclCommArePeersPending(comm, &pending); r != ecclSuccess) return r;
    int32_t any = pending;
    if (ecclResult_t r = ecclAllReduce(&any, &any, 1, ecclInt32, ecclMax, nullptr, comm, nullptr);
        r != ecclSuccess) {
      return r;
    }
    if (any != 0) {
      if (ecclResult_t r = ecclCommUpdateTopology(comm); r != ecclSuccess) return r;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  return ecclSuccess;
}

void spawnPeers(int n, const std::function<void(ecclComm_t)>& body, const PeerOptions& options) {
  LocalMaster master(options.authToken);
  spawnPeers(master.address(), n, body, options);
}

void spawnPeers(const std::string& masterAddress, int n,
                const std::function<void(ecclComm_t)>& body, const PeerOptions& options) {
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&] {
      ecclComm_t comm = connectPeer(masterAddress, options);
      if (comm == nullptr) return;
      const ecclResult_t r = growWorld(comm, n);
      EXPECT_EQ(r, ecclSuccess) << ecclGetLastError(comm);
      if (r == ecclSuccess) body(comm);
      EXPECT_EQ(ecclCommDestroy(comm), ecclSuccess);
    });
  }
  for (auto& t : threads) t.join();
}

int rankOf(ecclComm_t comm) {
  int r = -1;
  EXPECT_EQ(ecclCommGetRank(comm, &r), ecclSuccess);
  return r;
}

int worldOf(ecclComm_t comm) {
  int w = -1;
  EXPECT_EQ(ecclCommGetWorldSize(comm, &w), ecclSuccess);
  return w;
}

}  // namespace eccl::test
