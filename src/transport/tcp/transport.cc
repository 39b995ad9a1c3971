#include "transport/tcp/transport.h"

#include <asio.hpp>
#include <fmt/format.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fcntl.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <thread>

#include "common/guarded.h"
#include "common/log.h"
#include "security/auth.h"
#include "transport/shm/link.h"
#include "transport/tcp/link.h"

namespace eccl::transport::tcp {
namespace {

using security::Purpose;
using security::Role;

// After EMFILE/ENFILE the listener is not polled for this long: the pending
// connection stays in the kernel's backlog instead of waking us in a spin.
constexpr auto kAcceptBackoff = std::chrono::milliseconds(100);

std::string sourceOf(const std::string& peerName) {
  const size_t colon = peerName.rfind(':');
  return colon == std::string::npos ? peerName : peerName.substr(0, colon);
}

// Reads exactly n bytes of a handshake answer, within the deadline.
Status readHandshake(Socket& s, void* buf, size_t n, Deadline deadline) {
  static const std::atomic<bool> kNoStop{false};
  return s.readAll(buf, n, kNoStop, deadline);
}

}  // namespace

struct TcpTransport::Handshake {
  enum class Phase { kPrefix, kHello, kProof, kTls, kShmOffer };
  Socket socket;
  std::string peer;    // address:port, for log lines
  std::string source;  // address alone: the unit of the per-source bounds
  Deadline deadline{};
  Phase phase = Phase::kPrefix;
  std::array<std::byte, std::max(wire::kHelloBytes, wire::kShmOfferBytes)> in{};
  size_t have = 0;
  wire::LinkHello hello;
  security::Nonce nonce{};
  std::optional<shm::Ring> ring;  // the dialler's shared-memory ring, when it offered one here

  size_t need() const {
    switch (phase) {
      case Phase::kPrefix: return wire::kHandshakePrefixBytes;
      case Phase::kHello: return wire::kHelloBytes;
      case Phase::kProof: return wire::kProofBytes;
      case Phase::kTls: return 0;
      case Phase::kShmOffer: return wire::kShmOfferBytes;
    }
    return 0;
  }
  short events() const { return phase == Phase::kTls ? socket.pollEvents() : POLLIN; }
};

Result<std::unique_ptr<TcpTransport>> TcpTransport::create(const TransportOptions& options,
                                                           std::shared_ptr<LinkMaker> maker) {
  std::unique_ptr<TcpTransport> t(new TcpTransport(options, std::move(maker)));
  asio::error_code ec;
  asio::ip::address addr = asio::ip::address_v6::any();  // dual-stack where allowed
  const std::string& listen = options.listenAddress.empty() ? options.bindAddress : options.listenAddress;
  if (!listen.empty()) {
    addr = asio::ip::make_address(listen, ec);
    if (ec) {
      return error(ecclInvalidArgument,
                   fmt::format("bind address '{}' is not an IP address", listen));
    }
  }
  asio::ip::tcp::endpoint ep(addr, 0);
  Socket s(::socket(ep.protocol().family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s.valid() && listen.empty()) {  // no IPv6 on this host
    ep = asio::ip::tcp::endpoint(asio::ip::address_v4::any(), 0);
    s = Socket(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  }
  if (!s.valid()) return error(ecclSystemError, "cannot create the data socket");
  int one = 1, zero = 0;
  ::setsockopt(s.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (ep.protocol() == asio::ip::tcp::v6() && listen.empty()) {
    ::setsockopt(s.fd(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
  }
  if (::bind(s.fd(), ep.data(), static_cast<socklen_t>(ep.size())) != 0 ||
      ::listen(s.fd(), 256) != 0 ||
      ::fcntl(s.fd(), F_SETFL, ::fcntl(s.fd(), F_GETFL) | O_NONBLOCK) != 0) {
    return error(ecclSystemError, fmt::format("cannot listen for data links on {}: {}",
                                              ep.address().to_string(), std::strerror(errno)));
  }
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  ::getsockname(s.fd(), reinterpret_cast<sockaddr*>(&ss), &len);
  t->port_ = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  t->listener_ = std::move(s);
  if (options.tls.mode != security::TlsMode::kOff) {
    Result<std::shared_ptr<security::TlsContext>> c =
        security::TlsContext::create(options.tls, options.authToken, /*server=*/false);
    if (!c) return c.status();
    Result<std::shared_ptr<security::TlsContext>> sv =
        security::TlsContext::create(options.tls, options.authToken, /*server=*/true);
    if (!sv) return sv.status();
    t->tlsServer_ = *sv;
    t->dialer_ = std::make_shared<StreamDialer>(options, *c, t->maker_ ? wire::kHelloRdma : 0);
  } else {
    t->dialer_ = std::make_shared<StreamDialer>(options, nullptr, t->maker_ ? wire::kHelloRdma : 0);
  }
  const log::Context ctx = log::threadContext();
  TcpTransport* raw = t.get();
  t->acceptor_ = std::thread([raw, ctx] {
    log::threadContext() = ctx;
    runGuarded(log::Subsys::kTransport, "data acceptor", [raw] { raw->acceptLoop(); });
  });
  return t;
}

TcpTransport::~TcpTransport() {
  stop_.store(true);
  listener_.shutdown();
  if (acceptor_.joinable()) acceptor_.join();
}

void TcpTransport::acceptLoop() {
  std::vector<std::unique_ptr<Handshake>> handshakes;
  Clock::time_point pausedUntil{};
  std::vector<pollfd> fds;
  while (!stop_.load()) {
    const auto now = Clock::now();
    // Handshakes past their time are dropped: a slow or silent client holds
    // its slot for kHandshakeTimeout at most.
    std::erase_if(handshakes, [&](const std::unique_ptr<Handshake>& h) {
      if (now < h->deadline) return false;
      ECCL_LOG(kInfo, kTransport, "data connection from {} did not finish its handshake in {} ms; "
               "closed", h->peer, std::chrono::duration_cast<std::chrono::milliseconds>(
                                      kHandshakeTimeout).count());
      return true;
    });
    fds.clear();
    const bool listening = now >= pausedUntil;
    fds.push_back({listener_.fd(), static_cast<short>(listening ? POLLIN : 0), 0});
    for (const auto& h : handshakes) fds.push_back({h->socket.fd(), h->events(), 0});
    if (::poll(fds.data(), fds.size(), 50) <= 0) continue;
    // Handshakes first: acceptNew may append to the vector fds mirrors.
    for (size_t i = handshakes.size(); i-- > 0;) {
      if (fds[i + 1].revents == 0) continue;
      if (!advance(*handshakes[i])) handshakes.erase(handshakes.begin() + static_cast<long>(i));
    }
    if (listening && (fds[0].revents & POLLIN) != 0) acceptNew(handshakes, pausedUntil);
  }
}

void TcpTransport::acceptNew(std::vector<std::unique_ptr<Handshake>>& handshakes,
                             Clock::time_point& pausedUntil) {
  // The listener is non-blocking: take what the backlog holds, a bounded
  // number per round so that handshakes in progress get their turn.
  for (int round = 0; round < 64; ++round) {
    int fd = ::accept4(listener_.fd(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        ECCL_LOG(kWarn, kTransport, "data acceptor out of file descriptors ({}); pausing "
                 "accepts for {} ms", std::strerror(errno), kAcceptBackoff.count());
        pausedUntil = Clock::now() + kAcceptBackoff;
      }
      return;
    }
    auto h = std::make_unique<Handshake>();
    h->socket = Socket(fd);
    // TCP_NODELAY before the handshake: its small messages must not wait for
    // Nagle and delayed ACKs (40 ms each).
    h->socket.configureForData();
    h->peer = h->socket.peerName();
    h->source = sourceOf(h->peer);
    const auto fromSource = std::count_if(handshakes.begin(), handshakes.end(),
                                          [&](const auto& o) { return o->source == h->source; });
    if (static_cast<size_t>(fromSource) >= kMaxHandshakesPerSource) {
      ECCL_LOG(kInfo, kTransport, "data connection from {} refused: {} handshakes in progress "
               "from that address", h->peer, fromSource);
      continue;  // closes it
    }
    if (handshakes.size() >= kMaxHandshakes) {
      // Full: the oldest (slowest) handshake makes room. Honest ones finish
      // in a round trip, so many sources trickling bytes cannot lock peers out.
      ECCL_LOG(kInfo, kTransport, "{} data handshakes in progress: dropping the oldest, from {}",
               handshakes.size(), handshakes.front()->peer);
      handshakes.erase(handshakes.begin());
    }
    h->deadline = Clock::now() + kHandshakeTimeout;
    handshakes.push_back(std::move(h));
  }
}

bool TcpTransport::advance(Handshake& h) {
  if (h.phase == Handshake::Phase::kTls) {
    Result<bool> done = h.socket.tlsHandshakeStep();
    if (done && !*done) return true;  // waits for more
    const Status st = done ? park(h) : done.status();
    if (st.isOk()) return false;
    ECCL_LOG(kWarn, kTransport, "data connection from {} (claims peer {}, epoch {}) refused: {}",
             h.peer, h.hello.fromPeer, h.hello.epoch, st.message());
    return false;
  }
  const size_t need = h.need();
  const ssize_t r = ::recv(h.socket.fd(), h.in.data() + h.have, need - h.have, 0);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return true;
  if (r <= 0) {
    ECCL_LOG(kInfo, kTransport, "data connection from {} closed during its handshake", h.peer);
    return false;
  }
  h.have += static_cast<size_t>(r);
  if (h.have < need) return true;
  const std::span<const std::byte> got(h.in.data(), need);
  Status st;
  switch (h.phase) {
    case Handshake::Phase::kPrefix:
      st = wire::checkHandshakePrefix(got, wire::kHelloMagic, "link hello");
      if (st.isOk()) {
        h.phase = Handshake::Phase::kHello;  // keep the prefix: it is part of the hello
        return true;
      }
      break;
    case Handshake::Phase::kHello: {
      Result<wire::LinkHello> hello = wire::decodeHello(got);
      if (!hello) {
        st = hello.status();
        break;
      }
      h.hello = *hello;
      if (((h.hello.flags & wire::kHelloRdma) != 0) != (maker_ != nullptr)) {
        st = error(ecclInvalidUsage,
                   fmt::format("it opens {} link and this peer's transport is {}: every member of "
                               "a group must use the same transport",
                               maker_ ? "a TCP" : "an RDMA", maker_ ? "\"ibverbs\"" : "TCP"));
        break;
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        st = checkExpected(h.hello);
      }
      if (!st.isOk()) break;
      Result<security::Nonce> nonce = security::randomNonce();
      if (!nonce) {
        st = nonce.status();
        break;
      }
      h.nonce = *nonce;
      const auto ctx = wire::linkContext(h.hello);
      wire::LinkChallenge c{h.nonce, security::makeProof(options_.authToken, Role::kServer,
                                                         Purpose::kData, ctx, h.hello.nonce,
                                                         h.nonce)};
      std::byte out[wire::kChallengeBytes];
      wire::encodeChallenge(c, out);
      // A fresh connection's send buffer always takes 72 bytes at once.
      if (::send(h.socket.fd(), out, sizeof(out), MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof(out))) {
        st = error(ecclPeerLost, "could not send the challenge");
        break;
      }
      h.phase = Handshake::Phase::kProof;
      h.have = 0;
      return true;
    }
    case Handshake::Phase::kProof: {
      Result<wire::LinkProof> proof = wire::decodeProof(got);
      if (!proof) {
        st = proof.status();
        break;
      }
      if (!security::verifyProof(options_.authToken, Role::kClient, Purpose::kData,
                                 wire::linkContext(h.hello), h.hello.nonce, h.nonce,
                                 proof->proof)) {
        st = error(ecclAuthFailed, "wrong auth token (its proof does not match)");
        break;
      }
      if ((h.hello.flags & wire::kHelloOffersShm) != 0) {
        if (tlsServer_) {
          st = error(ecclInvalidUsage, "shared memory offered on a TLS link");
          break;
        }
        h.phase = Handshake::Phase::kShmOffer;  // the offer follows the proof
        h.have = 0;
        return true;
      }
      if (tlsServer_) {
        // TLS next, stepped by the poll loop like the rest of the handshake.
        st = h.socket.startTls(tlsServer_->native(), /*server=*/true);
        if (!st.isOk()) break;
        h.phase = Handshake::Phase::kTls;
        return advance(h);
      }
      st = park(h);
      if (st.isOk()) return false;  // parked: the socket moved on
      break;
    }
    case Handshake::Phase::kShmOffer: {
      Result<wire::ShmOffer> offer = wire::decodeShmOffer(got);
      if (!offer) {
        st = offer.status();
        break;
      }
      // Where the ring cannot be had (another host after all, or /proc
      // closed to this process), the link runs on TCP: the answer says which.
      if (!options_.sharedMemory) {
        ECCL_LOG(kInfo, kTransport, "peer {} offered shared memory; ECCL_SHM=0 here: TCP",
                 h.hello.fromPeer);
      } else if (Result<shm::Ring> ring = shm::Ring::open(*offer); ring) {
        h.ring = std::move(*ring);
      } else {
        ECCL_LOG(kInfo, kTransport, "link from peer {} stays on TCP: {}", h.hello.fromPeer,
                 ring.status().message());
      }
      st = park(h);
      if (st.isOk()) return false;
      break;
    }
    case Handshake::Phase::kTls:
      break;  // handled above
  }
  ECCL_LOG(kWarn, kTransport, "data connection from {} (claims peer {}, epoch {}) refused: {}",
           h.peer, h.hello.fromPeer, h.hello.epoch, st.message());
  return false;
}

Status TcpTransport::checkExpected(const wire::LinkHello& hello) const {
  if (!expected_) return Status::ok();  // no link asked for yet: park, checked when claimed
  const Expected& e = *expected_;
  if (hello.toPeer != e.self) {
    return error(ecclInvalidUsage, fmt::format("it is for peer {}, this is peer {}", hello.toPeer,
                                               e.self));
  }
  if (hello.epoch < e.epoch) {
    return error(ecclInvalidUsage, fmt::format("epoch {} is over (now {})", hello.epoch, e.epoch));
  }
  if (hello.epoch > e.epoch + kMaxEpochsAhead) {
    return error(ecclInvalidUsage, fmt::format("epoch {} is too far ahead (now {})", hello.epoch,
                                               e.epoch));
  }
  if (hello.channel == 0 && hello.epoch == e.epoch && hello.fromPeer != e.from) {
    return error(ecclInvalidUsage, fmt::format("in epoch {} the master named peer {} as this "
                                               "peer's left neighbour", e.epoch, e.from));
  }
  return Status::ok();
}

size_t TcpTransport::parkedFrom(const std::string& source) const {
  size_t n = 0;
  for (const auto& [key, p] : parked_) {
    if (p.source == source) n += p.arrived;
  }
  return n;
}

Status TcpTransport::park(Handshake& h) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ECCL_RETURN_IF_ERROR(checkExpected(h.hello));  // accept() may have moved on meanwhile
    if (parkedStreams_ >= kMaxParkedStreams) {
      return error(ecclInvalidUsage, fmt::format("{} streams are parked already", parkedStreams_));
    }
    if (parkedFrom(h.source) >= kMaxParkedStreamsPerSource) {
      return error(ecclInvalidUsage, fmt::format("{} streams from {} are parked already",
                                                 kMaxParkedStreamsPerSource, h.source));
    }
    // Tell the dialler the stream is taken (one byte, through TLS when on): a
    // dialler whose stream was refused or dropped after its proof learns so.
    auto confirm = [&h] {
      static const CancelFlag kNever{0};
      std::byte accepted{h.ring ? kAcceptedShm : kAcceptedTcp};
      iovec iov{&accepted, 1};
      return h.socket.writeAll(&iov, 1, Clock::now() + std::chrono::milliseconds(100), kNever);
    };
    const ParkKey key{h.hello.fromPeer, h.hello.epoch, h.hello.channel};
    const bool added = h.hello.streamIndex >= h.hello.streamCount;
    if (added) {
      // A stream the dialler added to a link: straight into the link when it
      // was claimed already, else parked with its first streams.
      auto live = live_.find(key);
      if (std::shared_ptr<TcpLink::Inbox> inbox = live != live_.end() ? live->second.lock() : nullptr) {
        ECCL_RETURN_IF_ERROR(confirm());
        if (!inbox->deliver(std::move(h.socket))) {
          return error(ecclInvalidUsage, "its link is closed or has all its streams");
        }
        return Status::ok();
      }
    }
    Parked& p = parked_[key];
    if (p.streams.size() != h.hello.streamCount) {
      parkedStreams_ -= p.arrived;
      p.streams.clear();
      p.added.clear();
      p.streams.resize(h.hello.streamCount);
      p.arrived = 0;
      p.ring.reset();
    }
    if (added && p.streams.size() + p.added.size() >= wire::kMaxStreams) {
      return error(ecclInvalidUsage, fmt::format("its link has {} streams already", wire::kMaxStreams));
    }
    ECCL_RETURN_IF_ERROR(confirm());
    p.source = h.source;
    p.to = h.hello.toPeer;
    if (added) {
      ++p.arrived;
      ++parkedStreams_;
      p.added.push_back(std::move(h.socket));
    } else {
      if (!p.streams[h.hello.streamIndex].valid()) {
        ++p.arrived;
        ++parkedStreams_;
      }
      p.streams[h.hello.streamIndex] = std::move(h.socket);
      if (h.hello.streamIndex == 0) p.ring = std::move(h.ring);
    }
  }
  cv_.notify_all();
  return Status::ok();
}

Result<Socket> StreamDialer::stream(const Endpoint& to, uint64_t selfId, uint64_t epoch,
                                    uint64_t channel, uint32_t index, uint32_t count,
                                    Deadline deadline, const CancelFlag& cancel,
                                    std::optional<shm::Ring>* ring) const {
  auto fail = [&](ecclResult_t code, const std::string& what) {
    return error(code, fmt::format("data link to peer {} (stream {}): {}", to.peerId, index, what));
  };
  Result<Socket> s = Socket::connect(to.host, to.port, deadline, cancel, options_.bindAddress);
  if (!s) return fail(s.status().code(), s.status().message());
  s->configureForData();
  if (options_.paceEveryStream > 0) {
    s->pace(options_.paceEveryStream);
  } else if (index == 0 && options_.paceFirstStream > 0) {
    s->pace(options_.paceFirstStream);
  }
  Result<security::Nonce> nonce = security::randomNonce();
  if (!nonce) return nonce.status();
  // Peers on one host share a ring instead (the acceptor checks that they are).
  std::optional<shm::Ring> offered;
  std::byte offer[wire::kShmOfferBytes];
  if (ring != nullptr && index == 0 && !tls_ && options_.sharedMemory) {
    wire::ShmOffer o;
    if (Result<shm::Ring> r = shm::Ring::create(shm::kRingBytes, &o); r) {
      offered = std::move(*r);
      wire::encodeShmOffer(o, offer);
    } else {
      ECCL_LOG(kInfo, kTransport, "no shared-memory ring for the link to peer {}: {}", to.peerId,
               r.status().message());
    }
  }
  const wire::LinkHello hello{selfId, to.peerId, epoch, index, count, channel, *nonce,
                              (offered ? wire::kHelloOffersShm : 0u) | helloFlags_};
  std::byte hb[wire::kHelloBytes];
  wire::encodeHello(hello, hb);
  iovec iov{hb, sizeof(hb)};
  ECCL_RETURN_IF_ERROR(s->writeAll(&iov, 1, deadline, cancel));
  const Deadline step = std::min(deadline, Clock::now() + kHandshakeTimeout);
  std::byte cb[wire::kChallengeBytes];
  if (Status st = readHandshake(*s, cb, sizeof(cb), step); !st.isOk()) {
    return fail(ecclPeerLost, fmt::format("refused before a challenge ({}); see the peer's log",
                                          st.message()));
  }
  Result<wire::LinkChallenge> c = wire::decodeChallenge(cb);
  if (!c) return fail(c.status().code(), c.status().message());
  const auto ctx = wire::linkContext(hello);
  if (!security::verifyProof(options_.authToken, Role::kServer, Purpose::kData, ctx, hello.nonce,
                             c->nonce, c->proof)) {
    return fail(ecclAuthFailed, "the acceptor does not know the auth token");
  }
  std::byte pb[wire::kProofBytes];
  wire::encodeProof({security::makeProof(options_.authToken, Role::kClient, Purpose::kData, ctx,
                                         hello.nonce, c->nonce)},
                    pb);
  iovec piov[2] = {{pb, sizeof(pb)}, {offer, sizeof(offer)}};
  ECCL_RETURN_IF_ERROR(s->writeAll(piov, offered ? 2 : 1, deadline, cancel));
  if (tls_) {
    ECCL_RETURN_IF_ERROR(s->startTls(tls_->native(), /*server=*/false));
    Status st = s->tlsHandshake(step);
    if (!st.isOk()) return fail(st.code(), st.message());
  }
  std::byte accepted{0};
  if (Status st = readHandshake(*s, &accepted, 1, step);
      !st.isOk() || (accepted != kAcceptedTcp && !(offered && accepted == kAcceptedShm))) {
    return fail(ecclPeerLost, "the acceptor did not take the stream (see the peer's log)");
  }
  if (accepted == kAcceptedShm) {
    offered->closeDescriptor();  // mapped on both sides now
    *ring = std::move(offered);
  }
  return s;
}

Result<std::unique_ptr<Link>> TcpTransport::connect(const Endpoint& to, uint64_t selfId,
                                                    uint64_t epoch, Deadline deadline,
                                                    const CancelFlag& cancel) {
  return dial(to, selfId, epoch, 0, deadline, cancel);
}

Result<std::unique_ptr<Link>> TcpTransport::connectChannel(const Endpoint& to, uint64_t selfId,
                                                           uint64_t epoch, uint64_t channel,
                                                           Deadline deadline,
                                                           const CancelFlag& cancel,
                                                           uint32_t streams) {
  if (channel == 0) return error(ecclInternalError, "channel 0 is the ring link");
  return dial(to, selfId, epoch, channel, deadline, cancel, streams);
}

Result<std::unique_ptr<Link>> TcpTransport::dial(const Endpoint& to, uint64_t selfId,
                                                 uint64_t epoch, uint64_t channel,
                                                 Deadline deadline, const CancelFlag& cancel,
                                                 uint32_t fixedStreams) {
  uint32_t count = maker_ ? 1 : fixedStreams != 0 ? fixedStreams : options_.streams;
  const bool adaptive = count == 0;
  if (adaptive) {
    std::lock_guard<std::mutex> lock(learned_->mu);
    auto it = learned_->streams.find(to.host);
    count = std::min(options_.adaptiveCap,
                     it != learned_->streams.end() ? it->second : options_.adaptiveStart);
  }
  std::vector<Socket> streams;
  std::optional<shm::Ring> ring;
  for (uint32_t i = 0; i < count && !ring; ++i) {
    // A busy acceptor (a flood of handshakes) may drop a stream: try again
    // for a while, but not for the whole deadline (a refusal may be final).
    const Deadline retryUntil = std::min(deadline, Clock::now() + 2 * kHandshakeTimeout);
    for (;;) {
      Result<Socket> s = dialer_->stream(to, selfId, epoch, channel, i, count, deadline, cancel,
                                         maker_ ? nullptr : &ring);
      if (s) {
        streams.push_back(std::move(*s));
        break;
      }
      if (s.status().code() != ecclPeerLost || Clock::now() >= retryUntil ||
          cancel.load(std::memory_order_acquire) != 0) {
        return s.status();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  if (maker_) {
    return maker_->dialled(to, epoch, channel, fixedStreams, std::move(streams[0]), deadline, cancel);
  }
  if (ring) {
    ECCL_LOG(kDebug, kTransport, "link to peer {} (epoch {}, channel {}): shared memory", to.peerId,
             epoch, channel);
    return std::unique_ptr<Link>(new shm::ShmLink(to.peerId, shm::ShmLink::Role::kSender,
                                                  std::move(*ring), std::move(streams[0])));
  }
  std::optional<TcpLink::Growth> growth;
  if (adaptive) {
    growth.emplace();
    growth->config.start = count;
    growth->config.cap = options_.adaptiveCap;
    growth->dial = [dialer = dialer_, to, selfId, epoch, channel, count](uint32_t index,
                                                                         const CancelFlag& stop) {
      return dialer->stream(to, selfId, epoch, channel, index, count,
                            Clock::now() + 4 * kHandshakeTimeout, stop);
    };
    growth->onSettled = [learned = learned_, host = to.host](uint32_t n) {
      std::lock_guard<std::mutex> lock(learned->mu);
      if (learned->streams.size() >= kMaxLearnedHosts) learned->streams.clear();
      learned->streams[host] = n;
    };
  }
  // A TLS link only sends: its SSL objects are never read from another thread.
  return std::unique_ptr<Link>(new TcpLink(to.peerId, std::move(streams),
                                           /*receives=*/!dialer_->tls(), std::move(growth)));
}

Result<std::unique_ptr<Link>> TcpTransport::accept(uint64_t selfId, uint64_t from, uint64_t epoch,
                                                   Deadline deadline, const CancelFlag& cancel) {
  std::unique_lock<std::mutex> lock(mu_);
  expected_ = Expected{selfId, from, epoch};
  // What was parked before anyone was expected gets the same check now.
  for (auto p = parked_.begin(); p != parked_.end();) {
    const auto& [pFrom, pEpoch, pChannel] = p->first;
    const bool stale = pEpoch < epoch || p->second.to != selfId ||
                       (pChannel == 0 && pEpoch == epoch && pFrom != from);
    if (stale) {
      parkedStreams_ -= p->second.arrived;
      p = parked_.erase(p);
    } else {
      ++p;
    }
  }
  return claim(lock, {from, epoch, 0}, deadline, cancel);
}

Result<std::unique_ptr<Link>> TcpTransport::acceptChannel(uint64_t selfId, uint64_t from,
                                                          uint64_t epoch, uint64_t channel,
                                                          Deadline deadline,
                                                          const CancelFlag& cancel) {
  if (channel == 0) return error(ecclInternalError, "channel 0 is the ring link");
  std::unique_lock<std::mutex> lock(mu_);
  // Channels of earlier sync ops that were never claimed (the op failed
  // before) would hold their sources' parking slots: drop them, and any not
  // addressed to this peer.
  for (auto p = parked_.begin(); p != parked_.end();) {
    const auto& [pFrom, pEpoch, pChannel] = p->first;
    if (p->second.to != selfId ||
        (pChannel != 0 && pEpoch == epoch && (pChannel >> 2) < (channel >> 2))) {
      parkedStreams_ -= p->second.arrived;
      p = parked_.erase(p);
    } else {
      ++p;
    }
  }
  return claim(lock, {from, epoch, channel}, deadline, cancel);
}

Result<std::unique_ptr<Link>> TcpTransport::claim(std::unique_lock<std::mutex>& lock,
                                                  const ParkKey& key, Deadline deadline,
                                                  const CancelFlag& cancel) {
  const auto& [from, epoch, channel] = key;
  for (;;) {
    auto it = parked_.find(key);
    if (it != parked_.end() && it->second.ring && it->second.streams[0].valid()) {
      // Shared memory: stream 0 is all the link has, and only watches.
      auto link = std::make_unique<shm::ShmLink>(from, shm::ShmLink::Role::kReceiver,
                                                 std::move(*it->second.ring),
                                                 std::move(it->second.streams[0]));
      parkedStreams_ -= it->second.arrived;
      parked_.erase(it);
      return std::unique_ptr<Link>(std::move(link));
    }
    if (maker_ && it != parked_.end() && it->second.streams[0].valid()) {
      // The maker's set-up talks to the dialler: not under the acceptor's lock.
      Socket stream = std::move(it->second.streams[0]);
      parkedStreams_ -= it->second.arrived;
      parked_.erase(it);
      lock.unlock();
      return maker_->accepted(from, epoch, channel, std::move(stream), deadline, cancel);
    }
    if (it != parked_.end() &&
        std::all_of(it->second.streams.begin(), it->second.streams.end(),
                    [](const Socket& s) { return s.valid(); })) {
      std::vector<Socket> streams = std::move(it->second.streams);
      for (Socket& a : it->second.added) streams.push_back(std::move(a));
      parkedStreams_ -= it->second.arrived;
      parked_.erase(it);
      auto link = std::make_unique<TcpLink>(from, std::move(streams));
      std::erase_if(live_, [](const auto& e) { return e.second.expired(); });
      live_[key] = link->inbox();
      return std::unique_ptr<Link>(std::move(link));
    }
    const std::string what = channel == 0 ? "data link" : fmt::format("transfer channel {}", channel);
    if (int c = cancel.load(std::memory_order_acquire); c != 0) {
      return error(static_cast<ecclResult_t>(c), fmt::format("waiting for peer {}'s {} of epoch "
                                                             "{} was aborted", from, what, epoch));
    }
    if (Clock::now() >= deadline) {
      return error(ecclTimeout, fmt::format("peer {} did not open its {} for epoch {} in time",
                                            from, what, epoch));
    }
    // Short waits: the cancel flag has no way to wake this condition variable.
    cv_.wait_until(lock, std::min(deadline, Clock::now() + std::chrono::milliseconds(20)));
  }
}

}  // namespace eccl::transport::tcp
