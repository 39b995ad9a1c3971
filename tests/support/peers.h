// Test support: an in-process master and N peers as threads on loopback
// (the gloo base_test pattern). Failures inside peer threads are recorded by
// GoogleTest (EXPECT_* is thread-safe); spawnPeers joins every thread.
#pragma once

#include <functional>
#include <string>

#include "eccl/eccl.h"

namespace eccl::test {

// Short timeouts so a broken test fails well inside its CTest timeout.
inline constexpr uint32_t kTestOpTimeoutMs = 20000;

class LocalMaster {
 public:
  explicit LocalMaster(const char* authToken = nullptr);
  ~LocalMaster();
  const std::string& address() const { return address_; }

 private:
  ecclMaster_t master_ = nullptr;
  std::string address_;
};

struct PeerOptions {
  uint32_t peerGroup = 0;
  uint32_t streams = 2;
  const char* authToken = nullptr;
  const char* tls = nullptr;  // NULL: ECCL_TLS (off)
  const char* tlsCertFile = nullptr;
  const char* tlsKeyFile = nullptr;
  const char* tlsCaFile = nullptr;
  const char* transport = nullptr;  // NULL: ECCL_TEST_TRANSPORT, else tcp
};

// The config connectPeer uses (pointers into `masterAddress` and `options`).
ecclCommConfig_t commConfig(const std::string& masterAddress, const PeerOptions& options);

// Creates and connects a communicator; fails the test (and returns NULL) on error.
ecclComm_t connectPeer(const std::string& masterAddress, const PeerOptions& options = {});

// Members agree (MAX all-reduce of their pending flags) and update the
// topology together until the group has `want` members.
ecclResult_t growWorld(ecclComm_t comm, int want);

// Without collectives (for members of different peer groups, which cannot
// all-reduce together): updates the topology whenever peers are pending until
// done() holds; ecclTimeout after 20 s.
ecclResult_t updateUntil(ecclComm_t comm, const std::function<bool()>& done);

// Runs body(comm) on n peer threads that share one world of n members.
void spawnPeers(int n, const std::function<void(ecclComm_t)>& body, const PeerOptions& options = {});
void spawnPeers(const std::string& masterAddress, int n,
                const std::function<void(ecclComm_t)>& body, const PeerOptions& options = {});

int rankOf(ecclComm_t comm);
int worldOf(ecclComm_t comm);

}  // namespace eccl::test
