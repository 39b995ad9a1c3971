// TCP Link: up to wire::kMaxStreams sockets to one neighbour, one reader
// thread per socket feeding a Mailbox.
//
// Striping: send() puts each frame on the stream expected to start sending
// it soonest (an idle one, else the one whose unsent bytes drain first at the
// rate it has been sending at) among those no other thread is writing to, so
// a slow or capped stream is given fewer frames instead of holding back the
// ones behind it. The receiver takes frames by
// key, in whatever order they arrive.
//
// Stream count: a link opened with a fixed count keeps it. An adaptive link
// (Growth given) feeds a StreamController with windows of its sending and
// dials the streams it asks for on a thread of its own; the acceptor hands
// those to the receiving link through its Inbox.
//
// A link is used in one direction: the dialled one sends, the accepted one
// receives. With `receives` false no reader threads run (TLS links: an SSL
// object must not be read and written from two threads at once).
#pragma once

#include <array>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "transport/mailbox.h"
#include "transport/stream_controller.h"
#include "transport/tcp/socket.h"

namespace eccl::transport::tcp {

class TcpLink : public Link {
 public:
  // How an adaptive link opens more streams.
  struct Growth {
    StreamController::Config config;
    // Opens stream `index` of this link: the same handshake as the first ones.
    std::function<Result<Socket>(uint32_t index, const CancelFlag& stop)> dial;
    // Told the count the controller settled on (once per link).
    std::function<void(uint32_t streams)> onSettled;
  };

  // The acceptor's way to hand a live receiving link the streams its dialler
  // added. Outlives the link; deliver() fails once the link is gone.
  class Inbox {
   public:
    bool deliver(Socket&& socket);

   private:
    friend class TcpLink;
    std::mutex mu_;
    TcpLink* link_ = nullptr;
  };

  // The controller is fed windows of this much busy sending, sampled every
  // kSampleEvery, counted only once the link has been busy for kWarmUp
  // since it opened, last idled (longer than kBusyGap) or changed its stream
  // count: a stream that idled, or was just added, starts fast (a rate
  // limiter's bucket refilled: a second's worth on the lab's per-flow caps)
  // or slow (TCP's slow start), and neither is what the path sustains.
  static constexpr auto kWindow = std::chrono::milliseconds(500);
  static constexpr auto kSampleEvery = std::chrono::milliseconds(10);
  static constexpr auto kWarmUp = std::chrono::milliseconds(1500);
  static constexpr auto kBusyGap = std::chrono::milliseconds(200);

  TcpLink(uint64_t remotePeer, std::vector<Socket> streams, bool receives = true,
          std::optional<Growth> growth = std::nullopt);
  ~TcpLink() override;

  Status send(const wire::DataHeader& header, const void* payload, Deadline deadline,
              const CancelFlag& cancel, const StallWatch* watch) override;
  Result<Frame> recv(const FrameKey& key, Deadline deadline, const CancelFlag& cancel) override;
  Result<Frame> recvAny(const FrameKey& first, std::span<const uint8_t> pending, Deadline deadline,
                        const CancelFlag& cancel) override;
  void retire(uint32_t tag, uint64_t seq) override { mailbox_.retire(tag, seq); }
  void interrupt() override { mailbox_.interrupt(); }
  void setMaxFrameBytes(uint32_t bytes) override { maxFrame_.store(bytes, std::memory_order_relaxed); }
  uint64_t remotePeer() const override { return remotePeer_; }
  uint32_t streamCount() const override;
  std::vector<uint64_t> framesPerStream() const override;

  const std::shared_ptr<Inbox>& inbox() const { return inbox_; }

 private:
  struct Stream {
    Socket socket;
    std::mutex sendMu;  // one frame at a time per socket
    std::thread reader;
    std::atomic<uint64_t> frames{0};  // sent on it
    // Under sendMu: bytes written, and the drain rate measured from them.
    uint64_t written = 0;
    Clock::time_point sampledAt{};
    uint64_t drainedAt = 0;  // written minus queued, at sampledAt
    uint64_t queuedAt = 0;
    double rate = 0.0;  // bytes/s while it had bytes queued; 0 = not known yet
    // Seconds until it would start sending a new frame: its unsent bytes
    // over its rate (samples the queue and updates the rate).
    double startDelay();
  };
  // Sending measured while the link stayed busy (bytes queued in the kernel
  // at both ends of a sample interval), so that what it saw is what the
  // path drains, not how fast this process fed it or how long it waited for
  // its upstream neighbour.
  struct Window {
    Clock::duration span{};    // busy time
    Clock::duration waited{};  // of it, the sender waited for a stream to take bytes
    uint64_t drained = 0;      // bytes the other side acknowledged meanwhile
  };
  struct Sample {
    Clock::time_point at{};
    uint64_t drained = 0;  // written minus still queued, at `at`
    uint64_t queued = 0;
    uint64_t waitedNs = 0;  // waitedNs_ at `at`
  };

  // Publishes a stream at index count_ (and starts its reader); false when full.
  bool addStream(Socket socket);
  // The stream the next frame goes on, locked for the caller.
  Stream& pick(std::unique_lock<std::mutex>& lock);
  // Adaptive links: a thread samples the link every kSampleEvery, feeds the
  // controller a window at a time and dials the streams it asks for.
  void growLoop();
  void sample();
  void applyTarget(uint32_t target);
  void readLoop(Stream& s);

  uint64_t remotePeer_;
  bool receives_;
  std::array<std::unique_ptr<Stream>, wire::kMaxStreams> streams_;
  std::atomic<uint32_t> count_{0};   // streams open; [0, count_) are published
  std::atomic<uint32_t> active_{0};  // of those, the ones send() uses
  std::mutex addMu_;
  std::atomic<uint32_t> next_{0};
  std::atomic<bool> stop_{false};
  std::atomic<uint32_t> ended_{0};  // streams the other side closed between frames
  std::atomic<uint32_t> maxFrame_{wire::kMaxSegmentBytes};
  std::shared_ptr<BufferPool> pool_ = BufferPool::create();
  Mailbox mailbox_;
  std::shared_ptr<Inbox> inbox_ = std::make_shared<Inbox>();

  // Adaptive links only. Controller, window and sample are the grower's.
  std::optional<Growth> growth_;
  std::optional<StreamController> controller_;
  Window window_;
  Sample sample_;
  Clock::time_point busySince_{};  // start of the current busy streak
  Clock::time_point lastBusy_{};   // the latest busy sample
  bool reportedSettled_ = false;
  std::atomic<uint64_t> written_{0};   // bytes handed to the kernel
  std::atomic<uint64_t> waitedNs_{0};  // sends waiting for a stream to take bytes
  // Shared with the detached threads that dial added streams.
  std::shared_ptr<CancelFlag> stopGrowth_ = std::make_shared<CancelFlag>(0);
  std::mutex growMu_;  // for growCv_ (the destructor's wake-up)
  std::condition_variable growCv_;
  std::thread grower_;
};

}  // namespace eccl::transport::tcp
