// TCP Transport: a listening socket with an acceptor thread that runs each
// incoming stream's handshake and parks it until accept() claims the link.
//
// The acceptor multiplexes handshakes with poll(), so a connection that says
// nothing (or trickles bytes) holds only its own slot, for at most
// kHandshakeTimeout. Everything a remote party can make it hold is bounded:
// handshakes in progress (per source address and in total), parked streams
// (per source and in total; full means new ones are refused, parked ones are
// never evicted), and accept() backs off when the process is out of file
// descriptors instead of spinning.
#pragma once

#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <tuple>

#include "transport/shm/ring.h"
#include "transport/tcp/link.h"
#include "transport/tcp/socket.h"

namespace eccl::transport::tcp {

// Limits of the data acceptor (docs/security.md lists them).
inline constexpr auto kHandshakeTimeout = std::chrono::seconds(2);
inline constexpr size_t kMaxHandshakes = 256;
inline constexpr size_t kMaxHandshakesPerSource = 32;
inline constexpr size_t kMaxParkedStreams = 1024;
inline constexpr size_t kMaxParkedStreamsPerSource = 2 * wire::kMaxStreams;
// The acceptor's last handshake byte: the stream is taken, as a TCP stream or
// (stream 0 of a link that offered a ring the acceptor mapped) as the watch of
// a shared-memory link.
inline constexpr std::byte kAcceptedTcp{1};
inline constexpr std::byte kAcceptedShm{2};
// A neighbour may dial the next epoch's link before this peer asked for it;
// streams further ahead than this are refused (they could never be claimed soon).
inline constexpr uint64_t kMaxEpochsAhead = 2;

// Opens one authenticated stream (dialler's side of the handshake). Shared
// by a transport and its adaptive links, which dial more streams later.
class StreamDialer {
 public:
  // `helloFlags` go on every hello (kHelloRdma for an RDMA transport's links).
  StreamDialer(TransportOptions options, std::shared_ptr<security::TlsContext> tls,
               uint32_t helloFlags = 0)
      : options_(std::move(options)), tls_(std::move(tls)), helloFlags_(helloFlags) {}
  // Stream `index` of the link (from selfId to `to`, epoch, channel) that
  // opened with `count` streams; ecclPeerLost when the acceptor refused it.
  // With `ring` given (stream 0, no TLS), it offers the acceptor a
  // shared-memory ring and leaves it there when the acceptor took it.
  Result<Socket> stream(const Endpoint& to, uint64_t selfId, uint64_t epoch, uint64_t channel,
                        uint32_t index, uint32_t count, Deadline deadline,
                        const CancelFlag& cancel, std::optional<shm::Ring>* ring = nullptr) const;
  const TransportOptions& options() const { return options_; }
  bool tls() const { return tls_ != nullptr; }

 private:
  TransportOptions options_;
  std::shared_ptr<security::TlsContext> tls_;
  uint32_t helloFlags_ = 0;
};

// Makes a transport's links out of their one authenticated stream, in place
// of TcpLink or ShmLink: how the RDMA transport (ibverbs/transport.h) sets up
// its links over this acceptor, handshake and limits. A transport with a
// maker opens one stream per link, never adaptive, never shared memory.
class LinkMaker {
 public:
  virtual ~LinkMaker() = default;
  // `streams`: what the caller asked for (0: the transport's setting).
  virtual Result<std::unique_ptr<Link>> dialled(const Endpoint& to, uint64_t epoch,
                                                uint64_t channel, uint32_t streams, Socket stream,
                                                Deadline deadline, const CancelFlag& cancel) = 0;
  virtual Result<std::unique_ptr<Link>> accepted(uint64_t from, uint64_t epoch, uint64_t channel,
                                                 Socket stream, Deadline deadline,
                                                 const CancelFlag& cancel) = 0;
};

class TcpTransport : public Transport {
 public:
  static Result<std::unique_ptr<TcpTransport>> create(const TransportOptions& options,
                                                      std::shared_ptr<LinkMaker> maker = nullptr);
  ~TcpTransport() override;

  uint16_t port() const override { return port_; }
  Result<std::unique_ptr<Link>> connect(const Endpoint& to, uint64_t selfId, uint64_t epoch,
                                        Deadline deadline, const CancelFlag& cancel) override;
  Result<std::unique_ptr<Link>> accept(uint64_t selfId, uint64_t from, uint64_t epoch,
                                       Deadline deadline, const CancelFlag& cancel) override;
  Result<std::unique_ptr<Link>> connectChannel(const Endpoint& to, uint64_t selfId, uint64_t epoch,
                                               uint64_t channel, Deadline deadline,
                                               const CancelFlag& cancel,
                                               uint32_t streams = 0) override;
  Result<std::unique_ptr<Link>> acceptChannel(uint64_t selfId, uint64_t from, uint64_t epoch,
                                              uint64_t channel, Deadline deadline,
                                              const CancelFlag& cancel) override;

 private:
  struct Handshake;  // one incoming stream's handshake in progress (acceptor thread only)
  // (from peer, epoch, channel): channel 0 is the ring link, others sync channels.
  using ParkKey = std::tuple<uint64_t, uint64_t, uint64_t>;
  struct Parked {
    std::vector<Socket> streams;  // by stream index
    std::vector<Socket> added;    // beyond the link's opening count
    std::optional<shm::Ring> ring;  // set: a shared-memory link, complete with stream 0
    uint32_t arrived = 0;         // of both
    std::string source;
    uint64_t to = 0;
  };
  struct Expected {  // set by accept(): whose streams this peer takes now
    uint64_t self = 0;
    uint64_t from = 0;
    uint64_t epoch = 0;
  };

  TcpTransport(const TransportOptions& options, std::shared_ptr<LinkMaker> maker)
      : options_(options), maker_(std::move(maker)) {}
  void acceptLoop();
  void acceptNew(std::vector<std::unique_ptr<Handshake>>& handshakes, Clock::time_point& pausedUntil);
  // Advances one handshake on readable input; false when it is over (parked or refused).
  bool advance(Handshake& h);
  // Where adaptive links leave the stream count they settled on, by host, so
  // that the next link to that host (next epoch) starts there.
  struct Learned {
    std::mutex mu;
    std::map<std::string, uint32_t> streams;
  };
  static constexpr size_t kMaxLearnedHosts = 4096;
  // fixedStreams: that many; 0 = options_.streams (0 there: adaptive).
  Result<std::unique_ptr<Link>> dial(const Endpoint& to, uint64_t selfId, uint64_t epoch,
                                     uint64_t channel, Deadline deadline, const CancelFlag& cancel,
                                     uint32_t fixedStreams = 0);
  // Waits for the parked link `key` (under `lock`).
  Result<std::unique_ptr<Link>> claim(std::unique_lock<std::mutex>& lock, const ParkKey& key,
                                      Deadline deadline, const CancelFlag& cancel);
  Status checkExpected(const wire::LinkHello& hello) const;  // under mu_
  Status park(Handshake& h);
  size_t parkedFrom(const std::string& source) const;  // under mu_

  TransportOptions options_;
  std::shared_ptr<LinkMaker> maker_;  // null: TCP and shared-memory links
  std::shared_ptr<security::TlsContext> tlsServer_;  // null without TLS
  std::shared_ptr<const StreamDialer> dialer_;
  std::shared_ptr<Learned> learned_ = std::make_shared<Learned>();
  Socket listener_;
  uint16_t port_ = 0;
  std::thread acceptor_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<Expected> expected_;
  std::map<ParkKey, Parked> parked_;
  // Claimed receiving links, for the streams their diallers add later.
  std::map<ParkKey, std::weak_ptr<TcpLink::Inbox>> live_;
  size_t parkedStreams_ = 0;
};

}  // namespace eccl::transport::tcp
