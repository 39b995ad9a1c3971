#include "attacker.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <climits>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "security/auth.h"

namespace eccl::test {

RawConn::RawConn(uint16_t port, const std::string& from) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in local{};
  local.sin_family = AF_INET;
  ::inet_pton(AF_INET, from.c_str(), &local.sin_addr);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  ::inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0 ||
      ::connect(fd_, reinterpret_cast<sockaddr*>(&to), sizeof(to)) != 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

RawConn::~RawConn() {
  if (fd_ >= 0) ::close(fd_);
}

bool RawConn::sendBytes(const void* p, size_t n) {
  const auto* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = ::send(fd_, c, n, MSG_NOSIGNAL);
    if (w <= 0) return false;
    c += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool RawConn::sendMsg(const wire::ControlMessage& m) {
  const std::vector<std::byte> b = wire::encodeControl(m);
  return sendBytes(b.data(), b.size());
}

bool RawConn::recvBytes(void* p, size_t n, std::chrono::milliseconds timeout) {
  auto* c = static_cast<char*>(p);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (n > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd pf{fd_, POLLIN, 0};
    if (::poll(&pf, 1, static_cast<int>(left.count())) <= 0) return false;
    const ssize_t r = ::recv(fd_, c, n, 0);
    if (r <= 0) return false;
    c += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

Result<wire::ControlMessage> RawConn::recvMsg(std::chrono::milliseconds timeout) {
  std::array<std::byte, wire::kControlHeaderBytes> head{};
  if (!recvBytes(head.data(), head.size(), timeout)) return error(ecclPeerLost, "closed or silent");
  Result<wire::ControlHeader> h = wire::decodeControlHeader(head);
  if (!h) return h.status();
  std::vector<std::byte> payload(h->payloadBytes);
  if (!recvBytes(payload.data(), payload.size(), timeout)) return error(ecclPeerLost, "short payload");
  return wire::decodeControl(h->type, payload);
}

bool RawConn::closedWithin(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd pf{fd_, POLLIN, 0};
    if (::poll(&pf, 1, static_cast<int>(left.count())) <= 0) return false;
    if (::recv(fd_, buf, sizeof(buf), 0) <= 0) return true;
  }
}

Result<wire::AuthChallenge> RawConn::authenticate(const std::string& token) {
  const security::Nonce nonce = security::randomNonce().value();
  if (!sendMsg(wire::AuthHello{nonce})) return error(ecclPeerLost, "send failed");
  Result<wire::ControlMessage> m = recvMsg(std::chrono::seconds(5));
  if (!m) return m.status();
  const auto* c = std::get_if<wire::AuthChallenge>(&*m);
  if (c == nullptr) return error(ecclInvalidUsage, "no challenge");
  if (!security::verifyProof(token, security::Role::kServer, security::Purpose::kControl, {},
                             nonce, c->serverNonce, c->serverProof)) {
    return error(ecclAuthFailed, "the master's proof is wrong");
  }
  sendMsg(wire::AuthProof{security::makeProof(token, security::Role::kClient,
                                              security::Purpose::kControl, {}, nonce,
                                              c->serverNonce)});
  return *c;
}

Result<wire::Topology> RawConn::join(const std::string& token, uint32_t group,
                                     std::chrono::milliseconds timeout) {
  Result<wire::AuthChallenge> c = authenticate(token);
  if (!c) return c.status();
  sendMsg(wire::Register{group, "", 9, 60000});
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    Result<wire::ControlMessage> m = recvMsg(std::chrono::milliseconds(200));
    if (!m) {
      if (m.status().message() == "closed or silent") continue;
      return m.status();
    }
    if (const auto* rr = std::get_if<wire::RegisterReply>(&*m); rr && rr->result != ecclSuccess) {
      return error(static_cast<ecclResult_t>(rr->result), rr->message);
    }
    if (const auto* t = std::get_if<wire::Topology>(&*m)) return *t;
  }
  return error(ecclTimeout, "not admitted");
}

std::vector<uint16_t> listeningPorts(uint16_t except) {
  // Socket inodes this process holds ...
  std::set<std::string> inodes;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* e = ::readdir(d)) {
      char target[PATH_MAX];
      const std::string path = std::string("/proc/self/fd/") + e->d_name;
      const ssize_t n = ::readlink(path.c_str(), target, sizeof(target) - 1);
      if (n <= 0) continue;
      target[n] = '\0';
      if (std::strncmp(target, "socket:[", 8) == 0) {
        inodes.insert(std::string(target + 8, static_cast<size_t>(n) - 9));
      }
    }
    ::closedir(d);
  }
  // ... that listen (state 0A) in /proc/net/tcp{,6}.
  std::vector<uint16_t> ports;
  for (const char* table : {"/proc/self/net/tcp", "/proc/self/net/tcp6"}) {
    std::ifstream f(table);
    std::string line;
    std::getline(f, line);
    while (std::getline(f, line)) {
      std::istringstream in(line);
      std::string sl, local, remote, state, queues, timer, retr, uid, timeout, inode;
      in >> sl >> local >> remote >> state >> queues >> timer >> retr >> uid >> timeout >> inode;
      if (state != "0A" || inodes.count(inode) == 0) continue;
      const auto port = static_cast<uint16_t>(std::stoul(local.substr(local.find(':') + 1), nullptr, 16));
      if (port != except) ports.push_back(port);
    }
  }
  return ports;
}

}  // namespace eccl::test
