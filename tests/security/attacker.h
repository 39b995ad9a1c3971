// A scripted attacker for the security suite: raw control and data
// connections that speak (or garble) ECCL's wire protocol, from any loopback
// source address, with or without the token.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "wire/control.h"
#include "wire/data.h"

namespace eccl::test {

// A blocking TCP connection to 127.0.0.1:port from `from` (any 127/8 address).
class RawConn {
 public:
  RawConn(uint16_t port, const std::string& from = "127.0.0.1");
  ~RawConn();
  RawConn(RawConn&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  RawConn(const RawConn&) = delete;
  RawConn& operator=(const RawConn&) = delete;

  bool connected() const { return fd_ >= 0; }
  bool sendBytes(const void* p, size_t n);
  bool sendMsg(const wire::ControlMessage& m);
  // Exactly n bytes, or false on close/timeout.
  bool recvBytes(void* p, size_t n, std::chrono::milliseconds timeout);
  Result<wire::ControlMessage> recvMsg(std::chrono::milliseconds timeout);
  // Whether the other side closes the connection within `timeout` (bytes it
  // sends meanwhile are read and dropped).
  bool closedWithin(std::chrono::milliseconds timeout);

  // The control handshake with `token`; the master's challenge when it proved the token.
  Result<wire::AuthChallenge> authenticate(const std::string& token);
  // Handshake, Register in `group`, wait for admission (Topology).
  Result<wire::Topology> join(const std::string& token, uint32_t group,
                              std::chrono::milliseconds timeout);

 private:
  int fd_ = -1;
};

// The listening TCP ports of this process on loopback other than `except`:
// the data acceptors of the communicators it runs.
std::vector<uint16_t> listeningPorts(uint16_t except);

}  // namespace eccl::test
