// Transport and Link: the data-path interface every backend implements
// (tcp/, with shm/ for links between peers on one host that the TCP transport
// sets up; ibverbs/, RDMA queue pairs set up over a TCP stream; nccl/).
//
// Link: an ordered, reliable channel to one neighbour made of N parallel
// streams. A sender cuts large transfers into frames (one pipelining segment
// each) and send() stripes them across the streams, so one flow's window or
// a per-flow rate cap does not bound throughput. The receiving side demuxes
// frames by FrameKey; recv() hands back the frame an op asks for, whatever
// stream it came on and whatever else is in flight, so ops of different tags
// share a link concurrently.
//
// Blocking and errors: send() and recv() block the calling op thread until
// done, the deadline passes (ecclTimeout), the op's cancel flag becomes
// non-zero (that result is returned), or the link breaks (ecclPeerLost with
// the reason). A broken link stays broken: every later call fails fast.
// A send never leaves a frame half written on a working link: aborted after
// part of a frame went out, it finishes the frame (briefly bounded) or breaks
// the link; after ecclPeerLost, ecclKicked or ecclMasterUnreachable, whose
// links are replaced anyway, it breaks it at once.
//
// Thread safety: send, recv, retire and interrupt may be called from any
// thread concurrently. A Link is destroyed only when no call is in flight.
#pragma once

#include <atomic>
#include <chrono>
#include <compare>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "security/tls.h"
#include "transport/buffer_pool.h"
#include "wire/data.h"

namespace eccl::transport {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;
// 0 while the op may proceed; otherwise the ecclResult_t it was aborted with.
using CancelFlag = std::atomic<int>;

struct FrameKey {
  uint32_t tag = 0;
  uint64_t seq = 0;
  uint32_t step = 0;
  uint32_t segment = 0;
  auto operator<=>(const FrameKey&) const = default;
};

struct Frame {
  wire::DataHeader header;
  BufferPool::Handle payload;
  std::span<const std::byte> bytes() const { return payload.span(); }
};

// Reports a send that makes no progress (the other side takes no bytes):
// onStall runs every `every` while it lasts, with how long it has lasted.
struct StallWatch {
  std::chrono::milliseconds every{1000};
  std::function<void(std::chrono::milliseconds stuck)> onStall;
};

class Link {
 public:
  virtual ~Link() = default;

  // Sends one frame of header.payloadBytes bytes read from `payload`. `watch`
  // may be null.
  virtual Status send(const wire::DataHeader& header, const void* payload, Deadline deadline,
                      const CancelFlag& cancel, const StallWatch* watch) = 0;
  // Waits for the frame with `key` from the other side.
  virtual Result<Frame> recv(const FrameKey& key, Deadline deadline, const CancelFlag& cancel) = 0;
  // Waits for whichever frame of (first.tag, first.seq, first.step) arrives
  // first among segments first.segment + i with pending[i] != 0, so that a
  // step's segments are taken in arrival order (one delayed segment does not
  // hold back those behind it).
  virtual Result<Frame> recvAny(const FrameKey& first, std::span<const uint8_t> pending,
                                Deadline deadline, const CancelFlag& cancel) = 0;
  // Drops held and future frames of `tag` with sequence <= seq (the op ended).
  virtual void retire(uint32_t tag, uint64_t seq) = 0;
  // Wakes recv() callers so that they re-check their cancel flags.
  virtual void interrupt() = 0;
  // Frames larger than this (the group's segment size) break the link.
  virtual void setMaxFrameBytes(uint32_t bytes) = 0;

  virtual uint64_t remotePeer() const = 0;
  // Streams the link sends on now (adaptive links change it), or receives on.
  virtual uint32_t streamCount() const = 0;
  // Frames sent on each stream so far (diagnostics and tests).
  virtual std::vector<uint64_t> framesPerStream() const = 0;
  // Whether frames move through memory shared with a peer on this host.
  virtual bool sharedMemory() const { return false; }
};

struct Endpoint {
  uint64_t peerId = 0;
  std::string host;
  uint16_t port = 0;
};

// Transport "ibverbs" (ibverbs/device.h, ibverbs/queue_pair.h; the ECCL_IB_* knobs).
struct RdmaOptions {
  std::string device;  // "name" or "name:port"; empty: the first device with an active port
  // -1: on RoCE the first RoCE v2 GID with an IPv4 address (sysfs), else 0;
  // on InfiniBand, LID addressing.
  int gidIndex = -1;
  uint8_t timeout = 14;  // local ACK timeout: 4.096 us * 2^timeout per try, 7 retries
  uint8_t trafficClass = 0;
  uint8_t serviceLevel = 0;
};

struct TransportOptions {
  std::string bindAddress;    // outgoing links leave from it; empty = the OS picks
  std::string listenAddress;  // the acceptor's; empty = bindAddress, or any (IPv4 and IPv6)
  // Streams per link: 0 lets each link find its count (StreamController,
  // from adaptiveStart up to adaptiveCap); otherwise that many, fixed.
  uint32_t streams = 0;
  uint32_t adaptiveStart = 2;
  uint32_t adaptiveCap = 32;
  // Test hooks (SO_MAX_PACING_RATE on outgoing streams, bytes/s; 0 = off):
  // stream 0 of every link, a stream slower than its siblings; or every
  // stream, a path that caps each flow (more streams, more throughput).
  uint64_t paceFirstStream = 0;
  uint64_t paceEveryStream = 0;
  // Links between peers on this host run through shared memory (shm/link.h),
  // unless TLS is on.
  bool sharedMemory = true;
  std::string authToken;
  security::TlsOptions tls;  // TLS 1.3 on every stream after the handshake
  RdmaOptions rdma;  // transport "ibverbs"
};

class Transport {
 public:
  virtual ~Transport() = default;

  // Port others dial to reach this peer's data links.
  virtual uint16_t port() const = 0;
  // Opens this peer's outgoing link to `to` for `epoch`, authenticating each
  // stream (security/auth.h; ecclAuthFailed when the other side does not
  // know the token). Gives up at the deadline or soon after `cancel` becomes
  // non-zero (that result).
  virtual Result<std::unique_ptr<Link>> connect(const Endpoint& to, uint64_t selfId,
                                                uint64_t epoch, Deadline deadline,
                                                const CancelFlag& cancel) = 0;
  // Waits for `from` to open its link to `selfId` for `epoch`; same limits.
  // From this call on, the acceptor takes streams only from `from` for this
  // epoch (and parks, bounded, those of later epochs): what the master named.
  virtual Result<std::unique_ptr<Link>> accept(uint64_t selfId, uint64_t from, uint64_t epoch,
                                               Deadline deadline, const CancelFlag& cancel) = 0;

  // Links of a shared-state transfer (wire::syncChannel, never 0), between
  // any two members of `epoch`, besides the ring link: same handshake, same
  // limits, but no neighbour rule. The acceptor parks such streams (bounded
  // per source) until acceptChannel claims them, so either side may come first.
  // `streams` fixes the link's stream count (bandwidth probes); 0 = the
  // transport's setting.
  virtual Result<std::unique_ptr<Link>> connectChannel(const Endpoint& to, uint64_t selfId,
                                                       uint64_t epoch, uint64_t channel,
                                                       Deadline deadline, const CancelFlag& cancel,
                                                       uint32_t streams = 0) = 0;
  virtual Result<std::unique_ptr<Link>> acceptChannel(uint64_t selfId, uint64_t from,
                                                      uint64_t epoch, uint64_t channel,
                                                      Deadline deadline,
                                                      const CancelFlag& cancel) = 0;
};

// The registry. Whether this build and machine can run transport `name`,
// without opening anything (ecclCommCreate's check): ecclInvalidArgument for
// an unknown name, ecclUnsupported with the reason for one that is not built
// in or cannot load its library.
Status checkTransport(const std::string& name);

// "tcp" (and "nccl", whose data links are TCP too) or "ibverbs"; other names
// give what checkTransport gives.
Result<std::unique_ptr<Transport>> createTransport(const std::string& name,
                                                   const TransportOptions& options);

}  // namespace eccl::transport
