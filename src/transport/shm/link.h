// Shared-memory Link: one Ring (shm/ring.h) from the dialler to the acceptor
// of a link whose ends are on the same host, a sibling of tcp/link.h.
//
// The link's TCP stream 0 stays open next to the ring and carries nothing
// more: it is how each side learns that the other process is gone (a
// SIGKILLed peer's socket closes; its ring cannot tell). So a dead peer is
// seen as on TCP, and a stopped one as a send or receive that makes no
// progress (the stall reports and the master's verdict, as on TCP).
//
// Sender: send() copies each frame into the ring in chunks, so the receiver
// copies the first bytes out while later ones go in; or, for large payloads
// where the receiver may read this process's memory, leaves the payload where
// it is and waits until the receiver copied it (one copy instead of two).
// Receiver: one reader thread copies frames out into pool buffers and leaves
// them in a Mailbox, exactly like a TCP link's readers. The semantics are TcpLink's: a frame is
// never left half written on a working link, a broken link stays broken.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <thread>

#include "transport/mailbox.h"
#include "transport/shm/ring.h"
#include "transport/tcp/socket.h"

namespace eccl::transport::shm {

// The ring of a link (ShmOffer::ringBytes): four default segments.
inline constexpr uint64_t kRingBytes = 4 << 20;

class ShmLink : public Link {
 public:
  enum class Role { kSender, kReceiver };

  // A chunk the sender publishes at a time; a sleeping side re-checks its
  // peer's socket and its own flags at least every kPoll.
  static constexpr size_t kChunkBytes = 256 << 10;
  static constexpr std::chrono::milliseconds kPoll{50};
  // A frame in the ring: u64 address | 64-byte header | payload. Payloads of
  // at least kRemoteMinBytes stay in the sender's memory when the receiver
  // may read it (Ring::remoteReads): the address says where, the receiver
  // copies them out with one copy (not two) and acks, and send() returns
  // once it did. Address 0: the payload follows.
  static constexpr size_t kRecordBytes = 8 + wire::kDataHeaderBytes;
  static constexpr uint32_t kRemoteMinBytes = 64 << 10;

  ShmLink(uint64_t remotePeer, Role role, Ring ring, tcp::Socket watch);
  ~ShmLink() override;

  Status send(const wire::DataHeader& header, const void* payload, Deadline deadline,
              const CancelFlag& cancel, const StallWatch* watch) override;
  Result<Frame> recv(const FrameKey& key, Deadline deadline, const CancelFlag& cancel) override;
  Result<Frame> recvAny(const FrameKey& first, std::span<const uint8_t> pending, Deadline deadline,
                        const CancelFlag& cancel) override;
  void retire(uint32_t tag, uint64_t seq) override { mailbox_.retire(tag, seq); }
  void interrupt() override { mailbox_.interrupt(); }
  void setMaxFrameBytes(uint32_t bytes) override { maxFrame_.store(bytes, std::memory_order_relaxed); }
  uint64_t remotePeer() const override { return remotePeer_; }
  uint32_t streamCount() const override { return 1; }
  std::vector<uint64_t> framesPerStream() const override {
    return {frames_.load(std::memory_order_relaxed)};
  }
  bool sharedMemory() const override { return true; }

 private:
  // Whether the other process closed its end of stream 0 (or sent on it).
  bool peerGone() const;
  void readLoop();
  // Reads exactly n bytes from the ring. `closedFirst`: the peer closed the
  // link before the first of them (between frames).
  Status readExact(std::byte* out, size_t n, bool* closedFirst);
  // Ends the link for good: later sends fail fast, the peer sees the socket close.
  Status breakLink(std::string why);

  uint64_t remotePeer_;
  Role role_;
  Ring ring_;
  tcp::Socket watch_;
  std::mutex sendMu_;  // one frame at a time
  Status broken_;      // under sendMu_
  uint64_t remoteSent_ = 0;  // under sendMu_: payloads left for the receiver to read
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> frames_{0};
  std::atomic<uint32_t> maxFrame_{wire::kMaxSegmentBytes};
  std::shared_ptr<BufferPool> pool_ = BufferPool::create(/*largePages=*/true);
  Mailbox mailbox_;
  std::thread reader_;
};

}  // namespace eccl::transport::shm
