// Master: serves the Membership state machine over asio TCP on one thread.
// Holds no tensor data. Used by ecclMasterCreate and the eccl-master tool.
//
// Each connection must first prove it knows the auth token (security/auth.h;
// the master proves it too), then register within registerTimeout; until
// then it may send only tiny frames (wire::kMaxPreAuthPayload). Connections
// are capped per source address and in total, and an out-of-descriptors
// accept backs off instead of spinning (docs/security.md lists every bound).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "security/tls.h"

namespace eccl::master {

struct MasterOptions {
  std::string listenAddress = "0.0.0.0";
  uint16_t port = 0;
  std::string authToken;
  uint32_t heartbeatIntervalMs = 500;
  uint32_t failureTimeoutMs = 2000;
  uint32_t voteTimeoutMs = 60000;
  // Without a token the master refuses to listen on anything but loopback,
  // unless this says the open mode is meant.
  bool allowUnauthenticated = false;
  // Accept advertised data addresses that differ from the observed one (NAT).
  bool trustAdvertisedAddresses = false;
  // Bounds; 0 takes the environment knob's value (ECCL_MASTER_*).
  uint32_t maxConnections = 0;
  uint32_t maxConnectionsPerSource = 0;
  uint32_t registerTimeoutMs = 0;
  uint32_t probeMs = 0;  // each bandwidth probe round (ECCL_PROBE_MS)
  security::TlsOptions tls;
};

class Master {
 public:
  static Result<std::unique_ptr<Master>> start(const MasterOptions& options);
  ~Master();  // stops serving and joins the thread

  uint16_t port() const;

  Master(const Master&) = delete;
  Master& operator=(const Master&) = delete;

 private:
  struct Impl;
  explicit Master(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace eccl::master
