// CompletionQueue and QueuePair: RAII over the verbs objects of one link,
// with the RC connection state machine (RESET -> INIT -> RTR -> RTS, or
// ERROR) in one place so that it can be unit-tested over the stand-in
// provider (tests/unit/ibverbs_test.cc).
#pragma once

#include <chrono>
#include <cstdint>

#include "transport/ibverbs/device.h"

namespace eccl::transport::ibverbs {

// A CQ with its own completion channel: a link's progress thread sleeps in
// poll() on channel()'s fd (with its watch socket) once a short busy-poll
// found nothing.
class CompletionQueue {
 public:
  static Result<CompletionQueue> create(std::shared_ptr<Device> device, int entries);
  CompletionQueue() = default;
  CompletionQueue(CompletionQueue&& o) noexcept { *this = std::move(o); }
  CompletionQueue& operator=(CompletionQueue&& o) noexcept;
  ~CompletionQueue();

  ibv_cq* cq() const { return cq_; }
  int fd() const { return channel_->fd; }
  // Asks for an event on the next completion. Completions that arrived
  // before are not announced: poll once more after arming.
  Status arm();
  // Takes the event the channel's fd announced (after poll() said readable).
  void consumeEvent();
  int poll(int n, ibv_wc* wc) { return device_->api().pollCq(cq_, n, wc); }

 private:
  std::shared_ptr<Device> device_;
  ibv_comp_channel* channel_ = nullptr;
  ibv_cq* cq_ = nullptr;
  unsigned unacked_ = 0;
};

class QueuePair {
 public:
  enum class State { kReset, kInit, kReadyToReceive, kReadyToSend, kError };
  struct Config {
    uint32_t sendDepth = 64;
    uint32_t recvDepth = 64;
    uint32_t maxSge = 2;
  };
  // Reliable connected, both queues on `cq`; a random first PSN.
  static Result<QueuePair> create(std::shared_ptr<Device> device, ibv_cq* cq, const Config& config);
  QueuePair() = default;
  QueuePair(QueuePair&& o) noexcept { *this = std::move(o); }
  QueuePair& operator=(QueuePair&& o) noexcept;
  ~QueuePair();

  ibv_qp* qp() const { return qp_; }
  uint32_t qpn() const { return qp_->qp_num; }
  uint32_t psn() const { return psn_; }
  State state() const { return state_; }
  // What the other side needs to connect to this one.
  wire::VerbsQp local() const { return {qpn(), psn_}; }

  // RESET -> INIT: remote writes allowed when `remoteWrite` (a receiving side).
  Status init(bool remoteWrite);
  // INIT -> RTR towards the remote queue pair, addressed as `remote` says
  // (its LID, or its GID when global), at the smaller of both MTUs.
  Status readyToReceive(const wire::VerbsOffer& remote, const wire::VerbsQp& remoteQp);
  // RTR -> RTS.
  Status readyToSend();
  // Any state -> ERROR: outstanding work completes flushed.
  void fail();

  Status postSend(ibv_send_wr* wr);
  Status postRecv(ibv_recv_wr* wr);

  // Transport retry: 4.096 us * 2^timeout per try (RdmaOptions::timeout,
  // default 14: ~67 ms), then kRetries more: a dead or unreachable peer shows
  // as IBV_WC_RETRY_EXC_ERR within 8 tries (an HCA may take up to 4x the
  // nominal time per try: 0.5 .. 2.2 s at 14).
  static constexpr uint8_t kRetries = 7;
  // After this a missing completion is the fabric's or driver's loss, not
  // a retry in progress: the worst-case retry time plus a second.
  static std::chrono::milliseconds completionDeadline(uint8_t timeout);
  // Receivers always have a receive posted (credits), so RNR never happens;
  // 7 (retry forever) only covers the moment a receive is being re-posted.
  static constexpr uint8_t kRnrRetries = 7;

 private:
  Status modify(ibv_qp_attr& attr, int mask, State to, const char* what);

  std::shared_ptr<Device> device_;
  ibv_qp* qp_ = nullptr;
  uint32_t psn_ = 0;
  State state_ = State::kReset;
};

}  // namespace eccl::transport::ibverbs
