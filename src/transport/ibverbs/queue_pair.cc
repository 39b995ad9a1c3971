#include "transport/ibverbs/queue_pair.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>

namespace eccl::transport::ibverbs {

Result<CompletionQueue> CompletionQueue::create(std::shared_ptr<Device> device, int entries) {
  CompletionQueue q;
  q.device_ = std::move(device);
  const Api& api = q.device_->api();
  q.channel_ = api.createCompChannel(q.device_->context());
  if (q.channel_ == nullptr) {
    return error(ecclSystemError, fmt::format("cannot create a completion channel on {}: {}",
                                              q.device_->name(), std::strerror(errno)));
  }
  entries = std::min(entries, q.device_->maxCqe());
  q.cq_ = api.createCq(q.device_->context(), entries, nullptr, q.channel_, 0);
  if (q.cq_ == nullptr) {
    return error(ecclSystemError, fmt::format("cannot create a completion queue of {} entries on "
                                              "{}: {}", entries, q.device_->name(), std::strerror(errno)));
  }
  return q;
}

CompletionQueue& CompletionQueue::operator=(CompletionQueue&& o) noexcept {
  std::swap(device_, o.device_);
  std::swap(channel_, o.channel_);
  std::swap(cq_, o.cq_);
  std::swap(unacked_, o.unacked_);
  return *this;
}

CompletionQueue::~CompletionQueue() {
  if (!device_) return;
  const Api& api = device_->api();
  if (cq_ != nullptr) {
    if (unacked_ > 0) api.ackCqEvents(cq_, unacked_);
    api.destroyCq(cq_);
  }
  if (channel_ != nullptr) api.destroyCompChannel(channel_);
}

Status CompletionQueue::arm() {
  if (int rc = device_->api().reqNotifyCq(cq_, 0); rc != 0) {
    return error(ecclSystemError, fmt::format("ibv_req_notify_cq: {}", std::strerror(rc)));
  }
  return Status::ok();
}

void CompletionQueue::consumeEvent() {
  ibv_cq* cq = nullptr;
  void* ctx = nullptr;
  if (device_->api().getCqEvent(channel_, &cq, &ctx) == 0) ++unacked_;
  // Acknowledging takes a lock in libibverbs: batch it.
  if (unacked_ >= 64) {
    device_->api().ackCqEvents(cq_, unacked_);
    unacked_ = 0;
  }
}

Result<QueuePair> QueuePair::create(std::shared_ptr<Device> device, ibv_cq* cq, const Config& config) {
  QueuePair q;
  q.device_ = std::move(device);
  ibv_qp_init_attr attr{};
  attr.send_cq = cq;
  attr.recv_cq = cq;
  attr.qp_type = IBV_QPT_RC;
  attr.cap.max_send_wr = config.sendDepth;
  attr.cap.max_recv_wr = config.recvDepth;
  attr.cap.max_send_sge = config.maxSge;
  attr.cap.max_recv_sge = 1;
  q.qp_ = q.device_->api().createQp(q.device_->pd(), &attr);
  if (q.qp_ == nullptr) {
    return error(ecclSystemError, fmt::format("cannot create an RC queue pair on {} ({} send, {} "
                                              "receive entries): {}", q.device_->name(),
                                              config.sendDepth, config.recvDepth, std::strerror(errno)));
  }
  // A random first PSN: packets of an earlier connection that reused the
  // queue pair number are not taken for this one's.
  static thread_local std::mt19937 rng{std::random_device{}()};
  q.psn_ = rng() & 0xffffff;
  return q;
}

QueuePair& QueuePair::operator=(QueuePair&& o) noexcept {
  std::swap(device_, o.device_);
  std::swap(qp_, o.qp_);
  std::swap(psn_, o.psn_);
  std::swap(state_, o.state_);
  return *this;
}

QueuePair::~QueuePair() {
  // Destroying never waits for the peer: a dead one cannot hold us here.
  if (qp_ != nullptr) device_->api().destroyQp(qp_);
}

std::chrono::milliseconds QueuePair::completionDeadline(uint8_t timeout) {
  const double perTry = 4.096e-6 * static_cast<double>(uint64_t{1} << timeout);
  return std::chrono::milliseconds(static_cast<int64_t>(perTry * 4 * (kRetries + 1) * 1000)) +
         std::chrono::seconds(1);
}

Status QueuePair::modify(ibv_qp_attr& attr, int mask, State to, const char* what) {
  if (int rc = device_->api().modifyQp(qp_, &attr, mask); rc != 0) {
    state_ = State::kError;
    return error(ecclSystemError, fmt::format("queue pair {} on {}: {} failed: {}", qpn(),
                                              device_->name(), what, std::strerror(rc)));
  }
  state_ = to;
  return Status::ok();
}

Status QueuePair::init(bool remoteWrite) {
  if (state_ != State::kReset) return error(ecclInternalError, "queue pair: INIT from a state but RESET");
  ibv_qp_attr attr{};
  attr.qp_state = IBV_QPS_INIT;
  attr.pkey_index = 0;
  attr.port_num = device_->port();
  attr.qp_access_flags = remoteWrite ? IBV_ACCESS_REMOTE_WRITE : 0;
  return modify(attr, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS,
                State::kInit, "RESET->INIT");
}

Status QueuePair::readyToReceive(const wire::VerbsOffer& remote, const wire::VerbsQp& remoteQp) {
  if (state_ != State::kInit) return error(ecclInternalError, "queue pair: RTR from a state but INIT");
  if (device_->global() != (remote.global != 0)) {
    return error(ecclInvalidUsage,
                 fmt::format("RDMA: this peer addresses by {} and its peer by {}: both need the "
                             "same link layer (InfiniBand LID or RoCE GID, ECCL_IB_GID_INDEX)",
                             device_->global() ? "GID" : "LID", remote.global ? "GID" : "LID"));
  }
  ibv_qp_attr attr{};
  attr.qp_state = IBV_QPS_RTR;
  attr.path_mtu = static_cast<ibv_mtu>(std::min<int>(device_->mtu(), remote.mtu));
  attr.dest_qp_num = remoteQp.qpn;
  attr.rq_psn = remoteQp.psn;
  attr.max_dest_rd_atomic = 1;
  attr.min_rnr_timer = 12;  // 0.64 ms
  attr.ah_attr.port_num = device_->port();
  attr.ah_attr.dlid = remote.lid;
  attr.ah_attr.sl = device_->path().serviceLevel;
  if (remote.global != 0) {
    attr.ah_attr.is_global = 1;
    std::memcpy(attr.ah_attr.grh.dgid.raw, remote.gid.data(), 16);
    attr.ah_attr.grh.sgid_index = static_cast<uint8_t>(device_->gidIndex());
    attr.ah_attr.grh.hop_limit = 64;
    attr.ah_attr.grh.traffic_class = device_->path().trafficClass;
  }
  return modify(attr,
                IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                    IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER,
                State::kReadyToReceive, "INIT->RTR");
}

Status QueuePair::readyToSend() {
  if (state_ != State::kReadyToReceive) return error(ecclInternalError, "queue pair: RTS from a state but RTR");
  ibv_qp_attr attr{};
  attr.qp_state = IBV_QPS_RTS;
  attr.timeout = device_->path().timeout;
  attr.retry_cnt = kRetries;
  attr.rnr_retry = kRnrRetries;
  attr.sq_psn = psn_;
  attr.max_rd_atomic = 1;
  return modify(attr,
                IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
                    IBV_QP_MAX_QP_RD_ATOMIC,
                State::kReadyToSend, "RTR->RTS");
}

void QueuePair::fail() {
  if (qp_ == nullptr || state_ == State::kError) return;
  ibv_qp_attr attr{};
  attr.qp_state = IBV_QPS_ERR;
  (void)modify(attr, IBV_QP_STATE, State::kError, "->ERROR");
  state_ = State::kError;
}

Status QueuePair::postSend(ibv_send_wr* wr) {
  ibv_send_wr* bad = nullptr;
  if (int rc = device_->api().postSend(qp_, wr, &bad); rc != 0) {
    return error(ecclPeerLost, fmt::format("ibv_post_send on queue pair {}: {}", qpn(), std::strerror(rc)));
  }
  return Status::ok();
}

Status QueuePair::postRecv(ibv_recv_wr* wr) {
  ibv_recv_wr* bad = nullptr;
  if (int rc = device_->api().postRecv(qp_, wr, &bad); rc != 0) {
    return error(ecclPeerLost, fmt::format("ibv_post_recv on queue pair {}: {}", qpn(), std::strerror(rc)));
  }
  return Status::ok();
}

}  // namespace eccl::transport::ibverbs
