// IPv6, explicit bind and advertised addresses.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "support/peers.h"

namespace eccl::test {
namespace {

bool ipv6LoopbackWorks() {
  const int fd = ::socket(AF_INET6, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  ::close(fd);
  return ok;
}

// Runs a 3-peer all-reduce with the given master listen address and peer addressing.
void allReduceWith(const char* listen, const std::string& masterHost, const char* bind,
                   const char* advertise) {
  ecclMasterConfig_t mc = ECCL_MASTER_CONFIG_INIT;
  mc.listenAddress = listen;
  ecclMaster_t master = nullptr;
  ASSERT_EQ(ecclMasterCreate(&mc, &master), ecclSuccess) << ecclGetLastError(nullptr);
  uint16_t port = 0;
  ecclMasterGetPort(master, &port);
  const std::string addr = masterHost + ":" + std::to_string(port);
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&] {
      ecclCommConfig_t cfg = ECCL_COMM_CONFIG_INIT;
      cfg.masterAddress = addr.c_str();
      cfg.bindAddress = bind;
      cfg.advertisedAddress = advertise;
      cfg.opTimeoutMs = kTestOpTimeoutMs;
      ecclComm_t comm = nullptr;
      ASSERT_EQ(ecclCommCreate(&cfg, &comm), ecclSuccess);
      ASSERT_EQ(ecclCommConnect(comm), ecclSuccess) << ecclGetLastError(comm);
      ASSERT_EQ(growWorld(comm, 3), ecclSuccess) << ecclGetLastError(comm);
      std::vector<double> v(10000, 1.0);
      EXPECT_EQ(ecclAllReduce(v.data(), v.data(), v.size(), ecclFloat64, ecclSum, nullptr, comm,
                              nullptr), ecclSuccess) << ecclGetLastError(comm);
      EXPECT_EQ(v[9999], 3.0);
      EXPECT_EQ(ecclCommDestroy(comm), ecclSuccess);
    });
  }
  for (auto& t : threads) t.join();
  ecclMasterDestroy(master);
}

TEST(Addressing, IPv6Loopback) {
  if (!ipv6LoopbackWorks()) GTEST_SKIP() << "IPv6 loopback (::1) is not configured on this host";
  allReduceWith("::1", "[::1]", nullptr, nullptr);
}

TEST(Addressing, ExplicitBindAndAdvertisedAddress) {
  allReduceWith("127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.1");
}

TEST(Addressing, HostnameMasterAddress) { allReduceWith("127.0.0.1", "localhost", nullptr, nullptr); }

}  // namespace
}  // namespace eccl::test
