// RDMA Link: a sibling of tcp/link.h and shm/link.h over reliable-connected
// queue pairs, one direction like every link (the dialler sends).
//
// Data: RDMA write-with-immediate into receive slots the receiver registered
// once (slotsPerQp slots of slotBytes per queue pair). A frame is cut into
// chunks of one slot each: the first carries the 64-byte header, then the
// payload follows; each chunk is one write whose immediate is the queue
// pair's chunk counter, so the receiver learns of it from one completion,
// checks that nothing was lost or reordered, copies it out into a pool buffer
// (the same Mailbox as TCP links) and re-posts the receive. Why writes and
// not send/recv: a send needs a posted receive buffer of the right size per
// message, and RDMA write lands where the receiver said without one; the
// immediate gives the receiver its completion (a plain write gives none).
//
// Flow control: one credit per slot, at most kMaxInFlight per queue pair.
// The sender spends one per chunk and waits when it has none; the receiver
// returns them in batches (half of min(slots, kMaxInFlight), or at the end of
// a frame) as a zero-length send-with-immediate whose immediate is the count. So a slot is never
// overwritten before it was copied out, and writes never meet a missing
// receive (no RNR).
//
// Source buffers: payloads up to kCopyMaxBytes are copied next to the header
// into a registered bounce buffer (one write); larger ones go out from where
// they lie, registered for the send (registration.h: zero copy), and send()
// returns once the HCA has read them (the last chunk's completion, or on a
// broken link the flush of what was outstanding; a registration the HCA may
// still read is kept until the link is destroyed).
//
// Frames are striped across queue pairs whole (one frame at a time per queue
// pair, in order on it), so several op threads send at once and a large
// transfer uses all of them.
//
// Faults: an error completion (retry exceeded, remote access error, a flush
// after the queue pair went to ERROR), a queue pair that fails to post, a
// signalled write without completion for QueuePair::completionDeadline(), or the set-up
// TCP stream closing (the peer process ended) breaks the link: ecclPeerLost
// with the reason to every caller, as on TCP. Breaking moves the queue pairs
// to ERROR and shuts the TCP stream down, so the peer learns at once too.
// Destruction never waits for the peer.
//
// One progress thread per link polls its completion queue: a short
// busy-poll, then it arms the queue and sleeps in poll() on the completion
// channel and the TCP stream (at most kPoll, to notice destruction).
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <optional>
#include <mutex>
#include <thread>
#include <vector>

#include "transport/ibverbs/queue_pair.h"
#include "transport/ibverbs/registration.h"
#include "transport/mailbox.h"
#include "transport/tcp/socket.h"

namespace eccl::transport::ibverbs {

// What a transport's links share: the device and the registrations.
struct Resources {
  std::shared_ptr<Device> device;
  std::shared_ptr<Registrations> registrations;
};

// The receive slots one link's receiver offers (and the sender writes into).
struct SlotConfig {
  uint32_t slotBytes = 256 << 10;
  uint32_t slotsPerQp = 8;
};

class VerbsLink : public Link {
 public:
  static constexpr uint32_t kCopyMaxBytes = 8 << 10;
  // Writes in flight per queue pair at most (the sender's credits), whatever
  // number of slots the receiver offers.
  static constexpr uint32_t kMaxInFlight = 64;
  // Credit messages a receiver keeps in its send queue at once.
  static constexpr uint32_t kCreditSends = 8;
  static constexpr std::chrono::milliseconds kPoll{50};
  static constexpr std::chrono::microseconds kBusyPoll{50};

  // The dialler's half of the set-up, over its authenticated stream `side`:
  // creates `qps` queue pairs, offers them, connects them to the acceptor's
  // answer. ecclPeerLost / ecclTimeout / the cancel code when the exchange
  // fails; the acceptor's refusal with its reason.
  static Result<std::unique_ptr<VerbsLink>> dial(const Resources& resources, uint64_t remotePeer,
                                                 uint32_t qps, tcp::Socket side, Deadline deadline,
                                                 const CancelFlag& cancel);
  // The acceptor's half: reads the offer, creates as many queue pairs and
  // the receive slots, answers. On failure it answers with a refusal.
  static Result<std::unique_ptr<VerbsLink>> accept(const Resources& resources, uint64_t remotePeer,
                                                   const SlotConfig& slots, tcp::Socket side,
                                                   Deadline deadline, const CancelFlag& cancel);
  ~VerbsLink() override;

  Status send(const wire::DataHeader& header, const void* payload, Deadline deadline,
              const CancelFlag& cancel, const StallWatch* watch) override;
  Result<Frame> recv(const FrameKey& key, Deadline deadline, const CancelFlag& cancel) override;
  Result<Frame> recvAny(const FrameKey& first, std::span<const uint8_t> pending, Deadline deadline,
                        const CancelFlag& cancel) override;
  void retire(uint32_t tag, uint64_t seq) override;
  void interrupt() override;
  void setMaxFrameBytes(uint32_t bytes) override { maxFrame_.store(bytes, std::memory_order_relaxed); }
  uint64_t remotePeer() const override { return remotePeer_; }
  uint32_t streamCount() const override { return static_cast<uint32_t>(qps_.size()); }
  std::vector<uint64_t> framesPerStream() const override;
  // Its queue pairs' numbers (diagnostics and tests).
  std::vector<uint32_t> queuePairNumbers() const;

 private:
  enum class Role { kSender, kReceiver };
  // One queue pair and what the side using it keeps about it.
  struct Lane {
    QueuePair qp;
    // Sender: one frame at a time (frameMu), credits and completions (under mu_).
    std::mutex frameMu;
    uint32_t credits = 0;
    uint32_t nextSlot = 0;
    uint32_t nextChunk = 0;   // the immediate of the next write
    uint64_t posted = 0;      // signalled writes posted (the ticket of the last)
    uint64_t completed = 0;   // and completed
    Clock::time_point oldestPosted{};  // when the first not yet completed one went out
    // Receiver (progress thread only): the frame being filled.
    uint32_t expectChunk = 0;
    uint32_t unreturned = 0;  // slots copied out, credits not yet returned
    uint32_t creditSends = 0; // credit messages posted, completion not yet polled
    bool inFrame = false;
    wire::DataHeader header;
    BufferPool::Handle payload;
    uint32_t filled = 0;
    std::atomic<uint64_t> frames{0};
  };

  VerbsLink(const Resources& resources, uint64_t remotePeer, Role role, tcp::Socket side);
  // Creates the completion queue and `count` queue pairs, in INIT.
  Status createLanes(uint32_t count, uint32_t slotsPerQp);
  Status connectLanes(const wire::VerbsOffer& remote);
  void start();
  void progressLoop();
  // Handles one completion (progress thread); an error breaks the link.
  Status onCompletion(const ibv_wc& wc);
  Status onChunk(Lane& lane, uint32_t index, const ibv_wc& wc);
  Status returnCredits(Lane& lane, uint32_t index);
  // A receive on lane `index`: for a slot's write (receiver) or a credit message (sender).
  Status postReceive(uint32_t index);
  // Ends the link for good (any thread): callers get ecclPeerLost with `why`.
  Status breakLink(const std::string& why);
  Status broken() const;
  // Waits (sender) until `ready` holds under mu_, with the op's limits.
  Status awaitLane(std::unique_lock<std::mutex>& lock, const std::function<bool()>& ready,
                   Deadline deadline, const CancelFlag& cancel, const StallWatch* watch);

  Resources resources_;
  uint64_t remotePeer_;
  Role role_;
  tcp::Socket side_;
  std::optional<CompletionQueue> cq_;
  std::vector<std::unique_ptr<Lane>> qps_;
  // Sender: the bounce buffers (one per lane: header + small payload) and
  // where the receiver's slots are. Receiver: the slots.
  std::byte* memory_ = nullptr;
  size_t memoryBytes_ = 0;
  ibv_mr* mr_ = nullptr;
  SlotConfig slots_;
  uint32_t window_ = 0;  // sender: credits per queue pair when none is spent
  uint32_t copyMax_ = 0;  // sender: payloads up to this go with the header, copied
  // Overdue completions break the link (QueuePair::completionDeadline()).
  std::chrono::milliseconds completionDeadline_;
  // Registrations of sends whose writes never completed nor flushed.
  std::vector<Registrations::Pin> orphans_;
  uint64_t remoteSlots_ = 0;
  uint32_t remoteKey_ = 0;
  std::atomic<uint32_t> nextLane_{0};
  uint64_t watchId_ = 0;  // the device's asynchronous-event watch of our queue pairs

  mutable std::mutex mu_;
  std::condition_variable cv_;
  Status broken_;  // under mu_
  std::atomic<bool> stop_{false};
  std::atomic<uint32_t> maxFrame_{wire::kMaxSegmentBytes};
  std::shared_ptr<BufferPool> pool_ = BufferPool::create();
  Mailbox mailbox_;
  std::thread progress_;
};

}  // namespace eccl::transport::ibverbs
