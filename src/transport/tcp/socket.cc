#include "transport/tcp/socket.h"

#include <asio.hpp>
#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <unistd.h>

#include <climits>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <thread>

#include "common/env.h"
#include "security/tls.h"
#include "transport/link_rules.h"

namespace eccl::transport::tcp {
namespace {

int pollMs(Deadline deadline, int capMs) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left < 0) left = 0;
  return static_cast<int>(std::min<long long>(left, capMs));
}

Status sysError(const char* what) {
  return error(ecclPeerLost, fmt::format("{}: {}", what, std::strerror(errno)));
}

// OpenSSL's socket BIO writes with write(2): a neighbour that died would then
// raise SIGPIPE and kill this (surviving) process. This BIO sends with
// MSG_NOSIGNAL instead and maps EAGAIN to OpenSSL's retry flags.
int bioWrite(BIO* b, const char* data, int n) {
  BIO_clear_retry_flags(b);
  const auto fd = static_cast<int>(reinterpret_cast<intptr_t>(BIO_get_data(b)));
  const ssize_t w = ::send(fd, data, static_cast<size_t>(n), MSG_NOSIGNAL);
  if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) BIO_set_retry_write(b);
  return static_cast<int>(w);
}

int bioRead(BIO* b, char* data, int n) {
  BIO_clear_retry_flags(b);
  const auto fd = static_cast<int>(reinterpret_cast<intptr_t>(BIO_get_data(b)));
  const ssize_t r = ::recv(fd, data, static_cast<size_t>(n), 0);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) BIO_set_retry_read(b);
  return static_cast<int>(r);
}

long bioCtrl(BIO*, int cmd, long, void*) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }

const BIO_METHOD* noSigpipeBio() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "eccl socket");
    BIO_meth_set_write(m, bioWrite);
    BIO_meth_set_read(m, bioRead);
    BIO_meth_set_ctrl(m, bioCtrl);
    return m;
  }();
  return method;
}

}  // namespace

Socket& Socket::operator=(Socket&& o) noexcept {
  if (this != &o) {
    if (ssl_ != nullptr) SSL_free(ssl_);
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    ssl_ = o.ssl_;
    o.fd_ = -1;
    o.ssl_ = nullptr;
  }
  return *this;
}

Socket::~Socket() {
  if (ssl_ != nullptr) SSL_free(ssl_);
  if (fd_ >= 0) ::close(fd_);
}

Status Socket::startTls(ssl_ctx_st* ctx, bool server) {
  ssl_ = SSL_new(ctx);
  BIO* bio = BIO_new(noSigpipeBio());
  if (ssl_ == nullptr || bio == nullptr) {
    if (bio != nullptr) BIO_free(bio);
    return error(ecclSystemError, "SSL_new: " + security::tlsErrors());
  }
  BIO_set_data(bio, reinterpret_cast<void*>(static_cast<intptr_t>(fd_)));
  BIO_set_init(bio, 1);
  SSL_set_bio(ssl_, bio, bio);  // one reference, owned by ssl_
  if (server) {
    SSL_set_accept_state(ssl_);
  } else {
    SSL_set_connect_state(ssl_);
  }
  return Status::ok();
}

Result<bool> Socket::tlsHandshakeStep() {
  ERR_clear_error();
  const int rc = SSL_do_handshake(ssl_);
  if (rc == 1) return true;
  switch (SSL_get_error(ssl_, rc)) {
    case SSL_ERROR_WANT_READ: want_ = POLLIN; return false;
    case SSL_ERROR_WANT_WRITE: want_ = POLLOUT; return false;
    default:
      return error(ecclAuthFailed, fmt::format("TLS handshake with {} failed: {} (do both sides "
                                               "use the same TLS mode and key material?)",
                                               peerName(), security::tlsErrors()));
  }
}

Status Socket::tlsHandshake(Deadline deadline) {
  for (;;) {
    Result<bool> done = tlsHandshakeStep();
    if (!done) return done.status();
    if (*done) return Status::ok();
    if (Clock::now() >= deadline) {
      return error(ecclTimeout, fmt::format("TLS handshake with {} timed out", peerName()));
    }
    pollfd p{fd_, want_, 0};
    ::poll(&p, 1, pollMs(deadline, 100));
  }
}

ssize_t Socket::sendSome(iovec* iov, int iovcnt, short* wait) {
  *wait = POLLOUT;
  if (ssl_ == nullptr) {
    // MSG_NOSIGNAL: a neighbour that died must give EPIPE here, not a
    // SIGPIPE that kills this (surviving) process.
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<size_t>(iovcnt);
    return ::sendmsg(fd_, &msg, MSG_NOSIGNAL);
  }
  // One buffer per call (records of up to 16 KiB); a retry after WANT_*
  // repeats the same buffer, as OpenSSL requires.
  ERR_clear_error();
  const int n = SSL_write(ssl_, iov->iov_base, static_cast<int>(std::min<size_t>(iov->iov_len, INT_MAX)));
  if (n > 0) return n;
  switch (SSL_get_error(ssl_, n)) {
    case SSL_ERROR_WANT_WRITE: errno = EAGAIN; return -1;
    case SSL_ERROR_WANT_READ: *wait = POLLIN; errno = EAGAIN; return -1;
    case SSL_ERROR_SYSCALL: if (errno == 0) errno = EPIPE; return -1;
    default: errno = EPROTO; return -1;
  }
}

ssize_t Socket::recvSome(void* buf, size_t n, short* wait) {
  *wait = POLLIN;
  if (ssl_ == nullptr) return ::recv(fd_, buf, n, 0);
  ERR_clear_error();
  const int r = SSL_read(ssl_, buf, static_cast<int>(std::min<size_t>(n, INT_MAX)));
  if (r > 0) return r;
  switch (SSL_get_error(ssl_, r)) {
    case SSL_ERROR_ZERO_RETURN: return 0;
    case SSL_ERROR_WANT_READ: errno = EAGAIN; return -1;
    case SSL_ERROR_WANT_WRITE: *wait = POLLOUT; errno = EAGAIN; return -1;
    case SSL_ERROR_SYSCALL: if (errno == 0) return 0; return -1;  // EOF without close_notify
    default: errno = EPROTO; return -1;
  }
}

void Socket::shutdown() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
}

std::string Socket::peerName() const {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getpeername(fd_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  asio::ip::tcp::endpoint ep;
  std::memcpy(ep.data(), &ss, std::min<size_t>(len, ep.capacity()));
  ep.resize(len);
  return fmt::format("{}:{}", ep.address().to_string(), ep.port());
}

void Socket::configureForData() {
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (uint64_t b = env::socketBufferBytes(); b > 0) {
    int v = static_cast<int>(b);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
  }
  ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
}

void Socket::pace(uint64_t bytesPerSecond) {
  const unsigned long rate = bytesPerSecond;
  ::setsockopt(fd_, SOL_SOCKET, SO_MAX_PACING_RATE, &rate, sizeof(rate));
}

Result<Socket> Socket::connect(const std::string& host, uint16_t port, Deadline deadline,
                               const CancelFlag& cancel, const std::string& localAddress) {
  asio::ip::address local;
  if (!localAddress.empty()) {
    asio::error_code lec;
    local = asio::ip::make_address(localAddress, lec);
    if (lec) return error(ecclInvalidArgument, fmt::format("bind address '{}' is not an IP address", localAddress));
  }
  asio::io_context io;
  asio::ip::tcp::resolver resolver(io);
  asio::error_code ec;
  auto results = resolver.resolve(host, std::to_string(port),
                                  asio::ip::resolver_base::numeric_service, ec);
  if (ec || results.empty()) {
    return error(ecclInvalidArgument,
                 fmt::format("cannot resolve '{}': {}", host, ec ? ec.message() : "no address"));
  }
  if (!localAddress.empty() &&
      std::none_of(results.begin(), results.end(), [&](const auto& entry) {
        return entry.endpoint().address().is_v4() == local.is_v4();
      })) {
    return error(ecclInvalidArgument, fmt::format("'{}' has no {} address to reach from bind "
                                                  "address {}", host, local.is_v4() ? "IPv4" : "IPv6",
                                                  localAddress));
  }
  std::string lastError = "deadline passed";
  while (Clock::now() < deadline) {
    if (int c = cancel.load(std::memory_order_acquire); c != 0) {
      return error(static_cast<ecclResult_t>(c), fmt::format("connecting to {}:{} was aborted", host, port));
    }
    for (const auto& entry : results) {
      const auto ep = entry.endpoint();
      Socket s(::socket(ep.protocol().family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (!s.valid()) return sysError("socket");
      if (!localAddress.empty()) {
        if (local.is_v4() != ep.address().is_v4()) continue;  // cannot reach it from there
        const asio::ip::tcp::endpoint from(local, 0);
        if (::bind(s.fd_, from.data(), static_cast<socklen_t>(from.size())) != 0) {
          return error(ecclSystemError, fmt::format("bind to {}: {}", localAddress,
                                                    std::strerror(errno)));
        }
      }
      ::fcntl(s.fd_, F_SETFL, ::fcntl(s.fd_, F_GETFL) | O_NONBLOCK);
      int rc = ::connect(s.fd_, ep.data(), static_cast<socklen_t>(ep.size()));
      if (rc != 0 && errno == EINPROGRESS) {
        pollfd p{s.fd_, POLLOUT, 0};
        rc = ::poll(&p, 1, pollMs(deadline, 1000)) == 1 ? 0 : -1;
        int err = rc == 0 ? 0 : ETIMEDOUT;
        socklen_t len = sizeof(err);
        if (rc == 0) ::getsockopt(s.fd_, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
          errno = err;
          rc = -1;
        }
      }
      if (rc == 0) return s;
      lastError = fmt::format("{}:{}: {}", ep.address().to_string(), port, std::strerror(errno));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return error(ecclPeerLost, fmt::format("cannot connect to {}:{} ({})", host, port, lastError));
}

Status Socket::writeAll(iovec* iov, int iovcnt, Deadline deadline, const CancelFlag& cancel,
                        const StallWatch* watch, Clock::duration* waited) {
  Deadline lastProgress = Clock::now();
  Deadline nextReport = lastProgress + (watch != nullptr ? watch->every : std::chrono::hours(1));
  bool started = false;             // some bytes are out: stopping now would cut the frame
  std::optional<Status> abandoned;  // why the op gave up while the frame was unfinished
  Deadline finishBy{};
  short wait = POLLOUT;
  while (iovcnt > 0) {
    ssize_t n = sendSome(iov, iovcnt, &wait);
    // A TLS write that must wait may already have put part of a record on
    // the wire: from then on the frame counts as started.
    if (ssl_ != nullptr) started = true;
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return sysError("send");
      const Deadline now = Clock::now();
      if (abandoned && now >= finishBy) {
        // The peer takes nothing (or the links are replaced anyway): close
        // the stream rather than leave it cut mid-frame. The other side sees
        // EOF, later sends fail fast, and a broken link makes the next
        // update open fresh ones.
        shutdown();
        return error(ecclPeerLost, fmt::format("{}; the stream was closed mid-frame",
                                               abandoned->message()));
      }
      if (!abandoned) {
        if (std::optional<Status> stop = sendAbort(cancel, deadline, now)) {
          if (!started) return *stop;
          // The receiver reads frames whole: finish this one so that the
          // stream stays aligned for the ops that follow on it, unless the
          // abort means the links are replaced anyway.
          finishBy = linksAreReplaced(stop->code()) ? now : now + kFinishFrameWithin;
          abandoned = std::move(stop);
          continue;
        }
      } else {
        pollfd p{fd_, wait, 0};
        ::poll(&p, 1, pollMs(finishBy, 50));
        continue;
      }
      if (watch != nullptr && watch->onStall && now >= nextReport) {
        watch->onStall(std::chrono::duration_cast<std::chrono::milliseconds>(now - lastProgress));
        nextReport = now + watch->every;
      }
      pollfd p{fd_, wait, 0};
      ::poll(&p, 1, pollMs(deadline, 50));
      if (waited != nullptr) *waited += Clock::now() - now;
      continue;
    }
    started = true;
    lastProgress = Clock::now();
    if (watch != nullptr) nextReport = lastProgress + watch->every;
    // Advance past what was written.
    while (iovcnt > 0 && static_cast<size_t>(n) >= iov->iov_len) {
      n -= static_cast<ssize_t>(iov->iov_len);
      ++iov;
      --iovcnt;
    }
    if (iovcnt > 0) {
      iov->iov_base = static_cast<char*>(iov->iov_base) + n;
      iov->iov_len -= static_cast<size_t>(n);
    }
  }
  return abandoned ? *abandoned : Status::ok();
}

Status Socket::readAll(void* buf, size_t n, const std::atomic<bool>& stop, Deadline deadline,
                       bool* closedFirst) {
  auto* p = static_cast<char*>(buf);
  short wait = POLLIN;
  while (n > 0) {
    ssize_t r = recvSome(p, n, &wait);
    if (r > 0) {
      p += r;
      n -= static_cast<size_t>(r);
      continue;
    }
    if (r == 0) {
      if (closedFirst != nullptr) *closedFirst = p == static_cast<char*>(buf);
      return error(ecclPeerLost, "connection closed by peer");
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return sysError("recv");
    if (stop.load(std::memory_order_acquire)) return error(ecclInternalError, "stopped");
    if (Clock::now() >= deadline) return error(ecclTimeout, "read timed out");
    pollfd pf{fd_, wait, 0};
    ::poll(&pf, 1, pollMs(deadline, 100));
  }
  return Status::ok();
}

}  // namespace eccl::transport::tcp
