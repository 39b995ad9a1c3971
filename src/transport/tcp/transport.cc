#include "transport/tcp/transport.h"

#include <asio.hpp>
#include <fmt/format.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "transport/tcp/link.h"

namespace eccl::transport::tcp {
namespace {

constexpr auto kHelloTimeout = std::chrono::seconds(2);
constexpr size_t kMaxParked = 1024;

}  // namespace

Result<std::unique_ptr<TcpTransport>> TcpTransport::create(const TransportOptions& options) {
  std::unique_ptr<TcpTransport> t(new TcpTransport(options));
  t->authHash_ = wire::tokenHash(options.authToken);
  asio::error_code ec;
  asio::ip::address addr = asio::ip::address_v6::any();  // dual-stack where allowed
  if (!options.bindAddress.empty()) {
    addr = asio::ip::make_address(options.bindAddress, ec);
    if (ec) {
      return error(ecclInvalidArgument,
                   fmt::format("bind address '{}' is not an IP address", options.bindAddress));
    }
  }
  asio::ip::tcp::endpoint ep(addr, 0);
  Socket s(::socket(ep.protocol().family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s.valid() && options.bindAddress.empty()) {  // no IPv6 on this host
    ep = asio::ip::tcp::endpoint(asio::ip::address_v4::any(), 0);
    s = Socket(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  }
  if (!s.valid()) return error(ecclSystemError, "cannot create the data socket");
  int one = 1, zero = 0;
  ::setsockopt(s.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (ep.protocol() == asio::ip::tcp::v6() && options.bindAddress.empty()) {
    ::setsockopt(s.fd(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
  }
  if (::bind(s.fd(), ep.data(), static_cast<socklen_t>(ep.size())) != 0 ||
      ::listen(s.fd(), 256) != 0) {
    return error(ecclSystemError, fmt::format("cannot listen for data links on {}: {}",
                                              ep.address().to_string(), std::strerror(errno)));
  }
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  ::getsockname(s.fd(), reinterpret_cast<sockaddr*>(&ss), &len);
  t->port_ = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  t->listener_ = std::move(s);
  const log::Context ctx = log::threadContext();
  TcpTransport* raw = t.get();
  t->acceptor_ = std::thread([raw, ctx] {
    log::threadContext() = ctx;
    raw->acceptLoop();
  });
  return t;
}

TcpTransport::~TcpTransport() {
  stop_.store(true);
  listener_.shutdown();
  if (acceptor_.joinable()) acceptor_.join();
}

void TcpTransport::acceptLoop() {
  while (!stop_.load()) {
    pollfd p{listener_.fd(), POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    int fd = ::accept4(listener_.fd(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    admit(Socket(fd));
  }
}

// Reads the hello on the acceptor thread. A peer that connects and says
// nothing holds up other accepts for at most kHelloTimeout.
void TcpTransport::admit(Socket s) {
  s.configureForData();
  std::byte hello[wire::kHelloBytes];
  Status st = s.readAll(hello, sizeof(hello), stop_, Clock::now() + kHelloTimeout);
  if (!st.isOk()) {
    ECCL_LOG(kWarn, kTransport, "data connection from {} sent no hello: {}", s.peerName(),
             st.message());
    return;
  }
  Result<wire::LinkHello> h = wire::decodeHello(hello);
  if (!h) {
    ECCL_LOG(kWarn, kTransport, "data connection from {} refused: {}", s.peerName(),
             h.status().message());
    return;
  }
  if (h->authHash != authHash_) {
    ECCL_LOG(kWarn, kTransport, "data connection from {} (peer {}) refused: wrong auth token",
             s.peerName(), h->fromPeer);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (parked_.size() >= kMaxParked) parked_.erase(parked_.begin());
    Parked& p = parked_[{h->fromPeer, h->epoch}];
    if (p.streams.size() != h->streamCount) {
      p.streams.clear();
      p.streams.resize(h->streamCount);
      p.arrived = 0;
    }
    if (!p.streams[h->streamIndex].valid()) ++p.arrived;
    p.streams[h->streamIndex] = std::move(s);
  }
  cv_.notify_all();
}

Result<std::unique_ptr<Link>> TcpTransport::connect(const Endpoint& to, uint64_t selfId,
                                                    uint64_t epoch, Deadline deadline,
                                                    const CancelFlag& cancel) {
  std::vector<Socket> streams;
  for (uint32_t i = 0; i < options_.streams; ++i) {
    Result<Socket> s = Socket::connect(to.host, to.port, deadline, cancel, options_.bindAddress);
    if (!s) {
      return error(s.status().code(), fmt::format("data link to peer {}: {}", to.peerId,
                                                  s.status().message()));
    }
    std::byte hello[wire::kHelloBytes];
    wire::encodeHello({selfId, epoch, i, options_.streams, authHash_}, hello);
    iovec iov{hello, sizeof(hello)};
    ECCL_RETURN_IF_ERROR(s->writeAll(&iov, 1, deadline, cancel));
    streams.push_back(std::move(*s));
  }
  return std::unique_ptr<Link>(new TcpLink(to.peerId, std::move(streams)));
}

Result<std::unique_ptr<Link>> TcpTransport::accept(uint64_t from, uint64_t epoch,
                                                   Deadline deadline, const CancelFlag& cancel) {
  std::unique_lock<std::mutex> lock(mu_);
  const auto key = std::make_pair(from, epoch);
  for (;;) {
    auto it = parked_.find(key);
    if (it != parked_.end() && it->second.arrived == it->second.streams.size()) {
      std::vector<Socket> streams = std::move(it->second.streams);
      parked_.erase(it);
      // Streams of older epochs will never be claimed.
      for (auto p = parked_.begin(); p != parked_.end();) {
        p = p->first.second < epoch ? parked_.erase(p) : std::next(p);
      }
      return std::unique_ptr<Link>(new TcpLink(from, std::move(streams)));
    }
    if (int c = cancel.load(std::memory_order_acquire); c != 0) {
      return error(static_cast<ecclResult_t>(c),
                   fmt::format("waiting for peer {}'s data link of epoch {} was aborted", from, epoch));
    }
    if (Clock::now() >= deadline) {
      return error(ecclTimeout, fmt::format("peer {} did not open its data link for epoch {} "
                                            "in time", from, epoch));
    }
    // Short waits: the cancel flag has no way to wake this condition variable.
    cv_.wait_until(lock, std::min(deadline, Clock::now() + std::chrono::milliseconds(20)));
  }
}

}  // namespace eccl::transport::tcp
