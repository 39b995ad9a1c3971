// TLS 1.3 on the control channel and the data streams: psk (key from the
// token) and cert (mutual, CA-checked), and what a mismatch does.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <numeric>
#include <string>
#include <vector>

#include "support/peers.h"

namespace eccl::test {
namespace {

constexpr char kToken[] = "tls-test-token";

struct TlsMaster {
  TlsMaster(const char* tls, const char* cert = nullptr, const char* key = nullptr,
            const char* ca = nullptr) {
    ecclMasterConfig_t cfg = ECCL_MASTER_CONFIG_INIT;
    cfg.listenAddress = "127.0.0.1";
    cfg.authToken = kToken;
    cfg.tls = tls;
    cfg.tlsCertFile = cert;
    cfg.tlsKeyFile = key;
    cfg.tlsCaFile = ca;
    EXPECT_EQ(ecclMasterCreate(&cfg, &master), ecclSuccess) << ecclGetLastError(nullptr);
    uint16_t port = 0;
    ecclMasterGetPort(master, &port);
    address = "127.0.0.1:" + std::to_string(port);
  }
  ~TlsMaster() { ecclMasterDestroy(master); }
  ecclMaster_t master = nullptr;
  std::string address;
};

// 3 peers: a 1 Mi-float all-reduce and a broadcast, every element checked.
void allReduceAndBroadcast(const std::string& address, const PeerOptions& po) {
  spawnPeers(address, 3, [](ecclComm_t comm) {
    const int rank = rankOf(comm);
    std::vector<float> v(1 << 20);
    std::iota(v.begin(), v.end(), static_cast<float>(rank));
    ecclOpInfo_t info = ECCL_OP_INFO_INIT;
    ASSERT_EQ(ecclAllReduce(v.data(), v.data(), v.size(), ecclFloat32, ecclSum, nullptr, comm, &info),
              ecclSuccess) << ecclGetLastError(comm);
    for (size_t i = 0; i < v.size(); i += 4099) ASSERT_EQ(v[i], 3.0f * i + 3.0f) << i;
    EXPECT_GT(info.bytesSent, 0u);
    std::vector<int32_t> b(4096, rank == 1 ? 7 : 0);
    ASSERT_EQ(ecclBroadcast(b.data(), b.size(), ecclInt32, 1, nullptr, comm, nullptr), ecclSuccess);
    EXPECT_EQ(std::count(b.begin(), b.end(), 7), 4096);
  }, po);
}

ecclResult_t tryConnect(const std::string& address, const PeerOptions& po, std::string* why) {
  ecclCommConfig_t cfg = commConfig(address, po);
  cfg.connectTimeoutMs = 3000;
  ecclComm_t comm = nullptr;
  if (ecclResult_t r = ecclCommCreate(&cfg, &comm); r != ecclSuccess) {
    *why = ecclGetLastError(nullptr);
    return r;
  }
  const ecclResult_t r = ecclCommConnect(comm);
  *why = ecclGetLastError(comm);
  ecclCommDestroy(comm);
  return r;
}

TEST(Tls, PskCarriesAllReduceAndBroadcast) {
  TlsMaster master("psk");
  PeerOptions po;
  po.authToken = kToken;
  po.tls = "psk";
  allReduceAndBroadcast(master.address, po);
}

TEST(Tls, ModeMismatchFailsCleanly) {
  std::string why;
  {
    TlsMaster master("psk");
    PeerOptions plain;
    plain.authToken = kToken;
    plain.tls = "off";
    const ecclResult_t r = tryConnect(master.address, plain, &why);
    EXPECT_TRUE(r == ecclMasterUnreachable || r == ecclAuthFailed) << ecclGetErrorString(r) << ": " << why;
  }
  {
    TlsMaster master("off");
    PeerOptions psk;
    psk.authToken = kToken;
    psk.tls = "psk";
    EXPECT_EQ(tryConnect(master.address, psk, &why), ecclAuthFailed) << why;
    EXPECT_NE(why.find("TLS"), std::string::npos) << why;
  }
  {  // psk keys from different tokens do not match.
    TlsMaster master("psk");
    PeerOptions other;
    other.authToken = "another-token";
    other.tls = "psk";
    EXPECT_EQ(tryConnect(master.address, other, &why), ecclAuthFailed) << why;
  }
  PeerOptions noToken;
  noToken.tls = "psk";
  EXPECT_EQ(tryConnect("127.0.0.1:1", noToken, &why), ecclInvalidArgument) << why;
  PeerOptions bad;
  bad.tls = "maybe";
  EXPECT_EQ(tryConnect("127.0.0.1:1", bad, &why), ecclInvalidArgument) << why;
}

// Certificates made with the openssl tool: a CA, a peer certificate it
// signed, and one from another CA.
class TlsCert : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::system("command -v openssl > /dev/null 2>&1") != 0) {
      GTEST_SKIP() << "the openssl command is not installed (scripts/install-deps.sh installs it)";
    }
    dir_ = std::filesystem::temp_directory_path() /
           ("eccl-tls-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    const std::string d = dir_.string();
    const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    const std::string script =
        "set -e; cd " + d + "; exec > openssl.log 2>&1;"
        "openssl req -x509 " + ec + " -days 2 -subj /CN=eccl-test-ca -keyout ca.key -out ca.pem;"
        "openssl req " + ec + " -subj /CN=eccl-peer -keyout peer.key -out peer.csr;"
        "openssl x509 -req -in peer.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out peer.pem;"
        "openssl req -x509 " + ec + " -days 2 -subj /CN=rogue -keyout rogue.key -out rogue.pem;";
    ASSERT_EQ(std::system(("bash -c '" + script + "'").c_str()), 0) << "see " << d << "/openssl.log";
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  std::string file(const char* name) const { return (dir_ / name).string(); }
  std::filesystem::path dir_;
};

TEST_F(TlsCert, MutualCertificatesCarryAllReduce) {
  const std::string cert = file("peer.pem"), key = file("peer.key"), ca = file("ca.pem");
  TlsMaster master("cert", cert.c_str(), key.c_str(), ca.c_str());
  PeerOptions po;
  po.authToken = kToken;
  po.tls = "cert";
  po.tlsCertFile = cert.c_str();
  po.tlsKeyFile = key.c_str();
  po.tlsCaFile = ca.c_str();
  allReduceAndBroadcast(master.address, po);
}

TEST_F(TlsCert, CertificateOfAnotherCaIsRefused) {
  const std::string cert = file("peer.pem"), key = file("peer.key"), ca = file("ca.pem");
  const std::string rogue = file("rogue.pem"), rogueKey = file("rogue.key");
  TlsMaster master("cert", cert.c_str(), key.c_str(), ca.c_str());
  PeerOptions po;
  po.authToken = kToken;  // even with the right token
  po.tls = "cert";
  po.tlsCertFile = rogue.c_str();
  po.tlsKeyFile = rogueKey.c_str();
  po.tlsCaFile = ca.c_str();
  std::string why;
  const ecclResult_t r = tryConnect(master.address, po, &why);
  EXPECT_TRUE(r == ecclAuthFailed || r == ecclMasterUnreachable) << ecclGetErrorString(r) << ": " << why;
  po.tlsCertFile = "/nonexistent.pem";
  EXPECT_EQ(tryConnect(master.address, po, &why), ecclInvalidArgument) << why;
}

}  // namespace
}  // namespace eccl::test
