// Socket: an owned, non-blocking TCP file descriptor with deadline-bounded
// whole-buffer I/O. The data path uses plain fds on its own threads (one
// reader per stream, op threads writing) rather than an asio event loop, so
// that each stream's bytes go straight between the kernel and the op's
// buffers without another hop.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <string>

#include "transport/transport.h"

struct ssl_ctx_st;
struct ssl_st;

namespace eccl::transport::tcp {

// With TLS (startTls), the same calls move bytes through the socket's SSL
// object: one thread at a time per direction's caller, and a TLS socket is
// used for one direction only (links are), so no SSL object is ever touched
// by two threads at once.
class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  Socket(Socket&& o) noexcept : fd_(o.fd_), ssl_(o.ssl_) {
    o.fd_ = -1;
    o.ssl_ = nullptr;
  }
  Socket& operator=(Socket&& o) noexcept;
  ~Socket();

  // Puts an SSL object of `ctx` on the (non-blocking) socket; the handshake
  // then runs through tlsHandshakeStep or tlsHandshake.
  Status startTls(ssl_ctx_st* ctx, bool server);
  // One non-blocking step: true when done, false when it waits for
  // pollEvents(); an error when the handshake failed (ecclAuthFailed).
  Result<bool> tlsHandshakeStep();
  // The whole handshake, polling until the deadline.
  Status tlsHandshake(Deadline deadline);
  bool tls() const { return ssl_ != nullptr; }
  // What a non-blocking call that could not proceed waits for (POLLIN/POLLOUT).
  short pollEvents() const { return want_; }

  // Resolves host (name, IPv4 or IPv6 literal) and connects, retrying a
  // refused connection until the deadline.
  // Retries refused connections until the deadline or `cancel`.
  // A non-empty `localAddress` is bound first, so the connection leaves from
  // the address the peer is known by (multi-homed hosts, firewall rules).
  static Result<Socket> connect(const std::string& host, uint16_t port, Deadline deadline,
                                const CancelFlag& cancel, const std::string& localAddress = "");

  int fd() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // TCP_NODELAY, non-blocking, and the ECCL_SOCKET_BUFFER sizes if set.
  void configureForData();
  // Caps the rate this socket sends at (SO_MAX_PACING_RATE, bytes/s).
  void pace(uint64_t bytesPerSecond);
  // How long an aborted write keeps going to finish a frame it started.
  static constexpr std::chrono::milliseconds kFinishFrameWithin{250};

  // Writes all of iov (one frame); gives up on the deadline or `cancel`, but
  // never between bytes of the frame: once some are out, it finishes the
  // frame within kFinishFrameWithin (and still returns the abort's error),
  // or shuts the socket down (ecclPeerLost) so the other side sees EOF
  // instead of a cut frame. Aborts with ecclPeerLost, ecclKicked or
  // ecclMasterUnreachable shut it down at once: the links are replaced then.
  // `waited`, when given, grows by the time spent waiting for the socket to
  // take bytes.
  Status writeAll(iovec* iov, int iovcnt, Deadline deadline, const CancelFlag& cancel,
                  const StallWatch* watch = nullptr, Clock::duration* waited = nullptr);
  // Reads exactly n bytes. `stop` ends the wait (returns ecclSuccess-free
  // error with code ecclInternalError), a peer close gives ecclPeerLost;
  // `closedFirst`, when given, says whether that close came before any byte.
  Status readAll(void* buf, size_t n, const std::atomic<bool>& stop, Deadline deadline,
                 bool* closedFirst = nullptr);
  void shutdown();
  std::string peerName() const;

 private:
  // Some bytes out or in, through TLS when it is on; -1 with errno EAGAIN
  // when it must wait (for *wait: POLLIN or POLLOUT).
  ssize_t sendSome(iovec* iov, int iovcnt, short* wait);
  ssize_t recvSome(void* buf, size_t n, short* wait);

  int fd_ = -1;
  ssl_st* ssl_ = nullptr;
  short want_ = 0;  // the handshake's (one thread)
};

}  // namespace eccl::transport::tcp
