#include "transport/ibverbs/link.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <poll.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "common/log.h"
#include "transport/link_rules.h"

namespace eccl::transport::ibverbs {
namespace {

constexpr size_t kHeaderBytes = wire::kDataHeaderBytes;
constexpr size_t kBounceBytes = kHeaderBytes + VerbsLink::kCopyMaxBytes;

// wr_id: the lane in the low byte, a signalled write's ticket above it.
uint64_t workId(uint32_t lane, uint64_t ticket = 0) { return lane | (ticket << 8); }
uint32_t laneOf(uint64_t id) { return static_cast<uint32_t>(id & 0xff); }
uint64_t ticketOf(uint64_t id) { return id >> 8; }

std::chrono::milliseconds until(Deadline d, std::chrono::milliseconds cap) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(d - Clock::now());
  return std::clamp(left, std::chrono::milliseconds(1), cap);
}

// Waits until the side stream has bytes (or closed), watching `cancel`.
Status awaitReadable(const tcp::Socket& side, Deadline deadline, const CancelFlag& cancel) {
  for (;;) {
    if (int c = cancel.load(std::memory_order_acquire); c != 0) {
      return error(static_cast<ecclResult_t>(c), "RDMA link set-up aborted");
    }
    if (Clock::now() >= deadline) return error(ecclTimeout, "RDMA link set-up timed out");
    pollfd p{side.fd(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(until(deadline, std::chrono::milliseconds(20)).count())) > 0) {
      return Status::ok();
    }
  }
}

Result<wire::VerbsOffer> readOffer(tcp::Socket& side, bool fromAcceptor, Deadline deadline,
                                   const CancelFlag& cancel) {
  ECCL_RETURN_IF_ERROR(awaitReadable(side, deadline, cancel));
  std::byte buf[wire::kVerbsOfferBytes];
  const std::atomic<bool> never{false};
  ECCL_RETURN_IF_ERROR(side.readAll(buf, sizeof(buf), never, deadline));
  return wire::decodeVerbsOffer(buf, fromAcceptor);
}

Status writeOffer(tcp::Socket& side, const wire::VerbsOffer& offer, Deadline deadline,
                  const CancelFlag& cancel) {
  std::byte buf[wire::kVerbsOfferBytes];
  wire::encodeVerbsOffer(offer, buf);
  iovec iov{buf, sizeof(buf)};
  return side.writeAll(&iov, 1, deadline, cancel);
}

wire::VerbsOffer localOffer(const Device& d) {
  wire::VerbsOffer o;
  o.lid = d.lid();
  o.mtu = static_cast<uint8_t>(d.mtu());
  o.global = d.global() ? 1 : 0;
  if (d.global()) std::memcpy(o.gid.data(), d.gid().raw, 16);
  return o;
}

}  // namespace

VerbsLink::VerbsLink(const Resources& resources, uint64_t remotePeer, Role role, tcp::Socket side)
    : resources_(resources),
      remotePeer_(remotePeer),
      role_(role),
      side_(std::move(side)),
      completionDeadline_(QueuePair::completionDeadline(resources.device->path().timeout)) {}

Status VerbsLink::createLanes(uint32_t count, uint32_t slotsPerQp) {
  const std::shared_ptr<Device>& d = resources_.device;
  // Sender: writes (at most 2 windows' worth in the send queue, credits
  // permitting) and a receive per credit message; receiver: a receive per
  // slot and at most kCreditSends credit messages. The CQ holds every
  // completion the queues can have outstanding, so it cannot overrun.
  QueuePair::Config config;
  config.sendDepth = role_ == Role::kSender ? 2 * slotsPerQp + 1 : kCreditSends + 1;
  config.recvDepth = slotsPerQp + 1;
  config.maxSge = 2;
  Result<CompletionQueue> cq = CompletionQueue::create(
      d, static_cast<int>(count * (config.sendDepth + config.recvDepth) + 16));
  if (!cq) return cq.status();
  cq_.emplace(std::move(*cq));
  for (uint32_t i = 0; i < count; ++i) {
    Result<QueuePair> qp = QueuePair::create(d, cq_->cq(), config);
    if (!qp) return qp.status();
    auto lane = std::make_unique<Lane>();
    lane->qp = std::move(*qp);
    ECCL_RETURN_IF_ERROR(lane->qp.init(/*remoteWrite=*/role_ == Role::kReceiver));
    qps_.push_back(std::move(lane));
  }
  // One registered region: the receiver's slots, or the sender's bounce buffers.
  memoryBytes_ = role_ == Role::kReceiver ? size_t{slots_.slotBytes} * slotsPerQp * count
                                          : kBounceBytes * count;
  memoryBytes_ = (memoryBytes_ + 4095) & ~size_t{4095};
  memory_ = static_cast<std::byte*>(std::aligned_alloc(4096, memoryBytes_));
  if (memory_ == nullptr) return error(ecclSystemError, "RDMA link: out of memory for its buffers");
  const int access = role_ == Role::kReceiver ? IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE
                                              : IBV_ACCESS_LOCAL_WRITE;
  mr_ = d->api().regMr(d->pd(), memory_, memoryBytes_, access);
  if (mr_ == nullptr) {
    return error(ecclSystemError, fmt::format("RDMA link: cannot register {} bytes on {}: {} "
                                              "(locked-memory limit? see ulimit -l)", memoryBytes_,
                                              d->name(), std::strerror(errno)));
  }
  return Status::ok();
}

Status VerbsLink::connectLanes(const wire::VerbsOffer& remote) {
  if (remote.qps.size() != qps_.size()) {
    return error(ecclInvalidArgument, fmt::format("RDMA link: peer {} answered with {} queue pairs "
                                                  "for {}", remotePeer_, remote.qps.size(), qps_.size()));
  }
  for (size_t i = 0; i < qps_.size(); ++i) {
    ECCL_RETURN_IF_ERROR(qps_[i]->qp.readyToReceive(remote, remote.qps[i]));
    ECCL_RETURN_IF_ERROR(qps_[i]->qp.readyToSend());
  }
  return Status::ok();
}

Status VerbsLink::postReceive(uint32_t index) {
  // No buffer: a write-with-immediate lands in its slot (receiver), and a
  // credit message is a zero-length send (sender); the receive only completes them.
  ibv_recv_wr wr{};
  wr.wr_id = workId(index);
  wr.num_sge = 0;
  return qps_[index]->qp.postRecv(&wr);
}

Result<std::unique_ptr<VerbsLink>> VerbsLink::dial(const Resources& resources, uint64_t remotePeer,
                                                   uint32_t qps, tcp::Socket side,
                                                   Deadline deadline, const CancelFlag& cancel) {
  std::unique_ptr<VerbsLink> link(new VerbsLink(resources, remotePeer, Role::kSender, std::move(side)));
  auto fail = [&](const Status& st) {
    return error(st.code(), fmt::format("RDMA link to peer {}: {}", remotePeer, st.message()));
  };
  qps = std::clamp<uint32_t>(qps, 1, wire::kMaxStreams);
  // The queue pairs are made before the acceptor says how many slots it
  // has: at most kMaxInFlight of them are used (credits never exceed it).
  if (Status st = link->createLanes(qps, kMaxInFlight); !st.isOk()) return fail(st);
  wire::VerbsOffer offer = localOffer(*resources.device);
  for (const auto& lane : link->qps_) offer.qps.push_back(lane->qp.local());
  if (Status st = writeOffer(link->side_, offer, deadline, cancel); !st.isOk()) return fail(st);
  Result<wire::VerbsOffer> answer = readOffer(link->side_, /*fromAcceptor=*/true, deadline, cancel);
  if (!answer) return fail(answer.status());
  if (answer->refusal != 0) {
    // Its own result (out of memory, no registration, ...): retrying the
    // same link would fail the same way, unlike a lost peer.
    const ecclResult_t code = answer->refusal < static_cast<uint32_t>(ecclNumResults)
                                  ? static_cast<ecclResult_t>(answer->refusal)
                                  : ecclSystemError;
    return error(code, fmt::format("RDMA link to peer {}: the peer could not set up its side "
                                   "(its result {}; its log says why)", remotePeer,
                                   static_cast<int>(code)));
  }
  if (Status st = link->connectLanes(*answer); !st.isOk()) return fail(st);
  link->slots_ = {answer->slotBytes, answer->slotsPerQp};
  link->remoteSlots_ = answer->slotAddress;
  link->remoteKey_ = answer->rkey;
  link->window_ = std::min(answer->slotsPerQp, kMaxInFlight);
  link->copyMax_ = std::min<uint32_t>(kCopyMaxBytes, answer->slotBytes - kHeaderBytes);
  for (uint32_t i = 0; i < qps; ++i) {
    link->qps_[i]->credits = link->window_;
    for (uint32_t k = 0; k < link->window_; ++k) {
      if (Status st = link->postReceive(i); !st.isOk()) return fail(st);
    }
  }
  link->start();
  return link;
}

Result<std::unique_ptr<VerbsLink>> VerbsLink::accept(const Resources& resources, uint64_t remotePeer,
                                                     const SlotConfig& slots, tcp::Socket side,
                                                     Deadline deadline, const CancelFlag& cancel) {
  std::unique_ptr<VerbsLink> link(new VerbsLink(resources, remotePeer, Role::kReceiver, std::move(side)));
  link->slots_ = slots;
  Result<wire::VerbsOffer> offer = readOffer(link->side_, /*fromAcceptor=*/false, deadline, cancel);
  if (!offer) {
    return error(offer.status().code(), fmt::format("RDMA link from peer {}: {}", remotePeer,
                                                    offer.status().message()));
  }
  const uint32_t count = static_cast<uint32_t>(offer->qps.size());
  Status st = link->createLanes(count, slots.slotsPerQp);
  if (st.isOk()) st = link->connectLanes(*offer);
  for (uint32_t i = 0; st.isOk() && i < count; ++i) {
    for (uint32_t k = 0; k < slots.slotsPerQp && st.isOk(); ++k) st = link->postReceive(i);
  }
  wire::VerbsOffer answer = localOffer(*resources.device);
  if (st.isOk()) {
    for (const auto& lane : link->qps_) answer.qps.push_back(lane->qp.local());
    answer.slotAddress = reinterpret_cast<uintptr_t>(link->memory_);
    answer.rkey = link->mr_->rkey;
    answer.slotBytes = slots.slotBytes;
    answer.slotsPerQp = slots.slotsPerQp;
  } else {
    ECCL_LOG(kWarn, kTransport, "RDMA link from peer {}: refusing it: {}", remotePeer, st.message());
    answer = wire::VerbsOffer{};
    answer.refusal = static_cast<uint32_t>(st.code());
  }
  Status sent = writeOffer(link->side_, answer, deadline, cancel);
  if (!st.isOk() || !sent.isOk()) {
    const Status& why = st.isOk() ? sent : st;
    return error(why.code(), fmt::format("RDMA link from peer {}: {}", remotePeer, why.message()));
  }
  link->start();
  return link;
}

void VerbsLink::start() {
  std::vector<uint32_t> qpns;
  for (const auto& lane : qps_) qpns.push_back(lane->qp.qpn());
  watchId_ = resources_.device->watch(std::move(qpns), [this](const std::string& why) {
    (void)breakLink(why);
  });
  const log::Context ctx = log::threadContext();
  progress_ = std::thread([this, ctx] {
    log::threadContext() = ctx;
    progressLoop();
  });
}

VerbsLink::~VerbsLink() {
  if (watchId_ != 0) resources_.device->unwatch(watchId_);  // no event handler runs on us after this
  stop_.store(true, std::memory_order_release);
  if (progress_.joinable()) progress_.join();
  // Queue pairs before the memory their work names, the CQ after them.
  qps_.clear();
  orphans_.clear();
  cq_.reset();
  if (mr_ != nullptr) resources_.device->api().deregMr(mr_);
  std::free(memory_);
}

Status VerbsLink::broken() const {
  std::lock_guard<std::mutex> lock(mu_);
  return broken_;
}

Status VerbsLink::breakLink(const std::string& why) {
  Status st;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!broken_.isOk()) return broken_;
    broken_ = error(ecclPeerLost, fmt::format("RDMA link {} peer {}: {}",
                                              role_ == Role::kSender ? "to" : "from", remotePeer_, why));
    st = broken_;
    // Outstanding work completes flushed; the peer's writes fail.
    for (auto& lane : qps_) lane->qp.fail();
  }
  side_.shutdown();  // the peer's progress thread sees the stream close
  ECCL_LOG(kInfo, kTransport, "{}", st.message());
  mailbox_.fail(st);
  cv_.notify_all();
  return st;
}

void VerbsLink::progressLoop() {
  ibv_wc wc[32];
  Clock::time_point idleSince = Clock::now();
  Clock::time_point nextScan = idleSince;
  bool armed = false;
  while (!stop_.load(std::memory_order_acquire)) {
    const int n = cq_->poll(32, wc);
    if (n < 0) {
      (void)breakLink("polling the completion queue failed");
      break;
    }
    for (int i = 0; i < n; ++i) {
      if (Status st = onCompletion(wc[i]); !st.isOk()) (void)breakLink(st.message());
    }
    const Clock::time_point now = Clock::now();
    // Every lane's oldest write, on a timer: a stuck lane is found while its siblings are busy.
    if (role_ == Role::kSender && now >= nextScan) {
      nextScan = now + kPoll;
      std::unique_lock<std::mutex> lock(mu_);
      for (size_t i = 0; i < qps_.size() && broken_.isOk(); ++i) {
        const Lane& l = *qps_[i];
        if (l.completed < l.posted && now - l.oldestPosted > completionDeadline_) {
          lock.unlock();
          (void)breakLink(fmt::format("queue pair {}: a write got no completion within {} ms (the "
                                      "HCA reports a dead peer sooner, as retry exceeded: the "
                                      "fabric or driver lost it)", l.qp.qpn(),
                                      completionDeadline_.count()));
          break;
        }
      }
    }
    if (n > 0) {
      idleSince = now;
      armed = false;
      continue;
    }
    if (now - idleSince < kBusyPoll) continue;
    if (!armed) {
      // Arm, then poll again: a completion that came in between raises no event.
      if (Status st = cq_->arm(); !st.isOk()) (void)breakLink(st.message());
      armed = true;
      continue;
    }
    pollfd fds[2] = {{cq_->fd(), POLLIN, 0}, {side_.fd(), POLLIN | POLLRDHUP, 0}};
    const bool watching = broken().isOk();
    if (::poll(fds, watching ? 2 : 1, static_cast<int>(kPoll.count())) <= 0) continue;
    if ((fds[0].revents & POLLIN) != 0) {
      cq_->consumeEvent();
      armed = false;
    }
    if (watching && fds[1].revents != 0) {
      // What completed before says more (the error the peer broke the link over).
      for (int k = 0, n = cq_->poll(32, wc); k < n; ++k) {
        if (Status st = onCompletion(wc[k]); !st.isOk()) (void)breakLink(st.message());
      }
      (void)breakLink("the peer closed the link (its process ended, or it broke the link)");
    }
  }
}

Status VerbsLink::onCompletion(const ibv_wc& wc) {
  const uint32_t index = laneOf(wc.wr_id);
  if (index >= qps_.size()) return error(ecclInternalError, "a completion of no queue pair of this link");
  Lane& lane = *qps_[index];
  if (wc.status != IBV_WC_SUCCESS) {
    if (stop_.load(std::memory_order_acquire)) return Status::ok();
    // A write that ended in error (or was flushed) is done too: the HCA
    // reads nothing of its payload any more.
    if (role_ == Role::kSender && ticketOf(wc.wr_id) != 0) {
      std::lock_guard<std::mutex> lock(mu_);
      lane.completed = std::max(lane.completed, ticketOf(wc.wr_id));
    }
    cv_.notify_all();
    if (wc.status == IBV_WC_WR_FLUSH_ERR) {
      // Flushed: the queue pair went to ERROR, broken here or (if not) by
      // the HCA or the peer's error.
      if (!broken().isOk()) return Status::ok();
      return error(ecclPeerLost, fmt::format("queue pair {} went to the error state (its work "
                                             "completed flushed)", lane.qp.qpn()));
    }
    const char* what = resources_.device->api().wcStatusStr(wc.status);
    return error(ecclPeerLost, fmt::format("queue pair {}: completion error {} ({}): {}", lane.qp.qpn(),
                                           what, static_cast<int>(wc.status),
                                           wc.status == IBV_WC_RETRY_EXC_ERR
                                               ? "the peer stopped answering (dead or unreachable)"
                                               : "the link cannot carry on"));
  }
  if (role_ == Role::kReceiver) {
    if (wc.opcode == IBV_WC_RECV_RDMA_WITH_IMM) return onChunk(lane, index, wc);
    if (wc.opcode == IBV_WC_SEND) {  // a credit message went out: room for the next
      --lane.creditSends;
      return lane.unreturned > 0 ? returnCredits(lane, index) : Status::ok();
    }
    return error(ecclInvalidArgument, fmt::format("queue pair {}: unexpected completion opcode {}",
                                                  lane.qp.qpn(), static_cast<int>(wc.opcode)));
  }
  if (wc.opcode == IBV_WC_RDMA_WRITE) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      lane.completed = std::max(lane.completed, ticketOf(wc.wr_id));
      lane.oldestPosted = Clock::now();
    }
    cv_.notify_all();
    return Status::ok();
  }
  if (wc.opcode == IBV_WC_RECV && (wc.wc_flags & IBV_WC_WITH_IMM) != 0 && wc.byte_len == 0) {
    const uint32_t returned = ntohl(wc.imm_data);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (returned == 0 || lane.credits + returned > window_) {
        return error(ecclInvalidArgument, fmt::format("queue pair {}: the peer returned {} credits "
                                                      "with {} of {} held", lane.qp.qpn(), returned,
                                                      lane.credits, window_));
      }
      lane.credits += returned;
    }
    cv_.notify_all();
    return postReceive(index);
  }
  return error(ecclInvalidArgument, fmt::format("queue pair {}: unexpected completion opcode {} "
                                                "({} bytes)", lane.qp.qpn(),
                                                static_cast<int>(wc.opcode), wc.byte_len));
}

Status VerbsLink::onChunk(Lane& lane, uint32_t index, const ibv_wc& wc) {
  const uint32_t chunk = ntohl(wc.imm_data);
  if (chunk != lane.expectChunk) {
    return error(ecclInvalidArgument, fmt::format("queue pair {}: chunk {} where {} was due (lost or "
                                                  "reordered write)", lane.qp.qpn(), chunk,
                                                  lane.expectChunk));
  }
  ++lane.expectChunk;
  const uint32_t slot = chunk % slots_.slotsPerQp;
  const std::byte* data =
      memory_ + (size_t{index} * slots_.slotsPerQp + slot) * slots_.slotBytes;
  const uint32_t len = wc.byte_len;
  if (!lane.inFrame) {
    Result<wire::DataHeader> h =
        len >= kHeaderBytes
            ? decodeFrameHeader(std::span(data, kHeaderBytes), maxFrame_.load(std::memory_order_relaxed))
            : Result<wire::DataHeader>(error(ecclInvalidArgument, "a chunk shorter than a header"));
    if (!h) {
      return error(h.status().code(), fmt::format("bad frame from peer {} (RDMA): {}", remotePeer_,
                                                  h.status().message()));
    }
    const uint64_t want = std::min<uint64_t>(slots_.slotBytes, kHeaderBytes + h->payloadBytes);
    if (len != want) {
      return error(ecclInvalidArgument, fmt::format("queue pair {}: first chunk of {} bytes, {} "
                                                    "expected", lane.qp.qpn(), len, want));
    }
    lane.header = *h;
    lane.payload = pool_->get(h->payloadBytes);
    lane.inFrame = true;
    lane.filled = len - static_cast<uint32_t>(kHeaderBytes);
    if (lane.filled > 0) std::memcpy(lane.payload.data(), data + kHeaderBytes, lane.filled);
  } else {
    const uint32_t want = std::min(slots_.slotBytes, lane.header.payloadBytes - lane.filled);
    if (len != want) {
      return error(ecclInvalidArgument, fmt::format("queue pair {}: chunk of {} bytes, {} expected",
                                                    lane.qp.qpn(), len, want));
    }
    std::memcpy(lane.payload.data() + lane.filled, data, len);
    lane.filled += len;
  }
  // The slot is free again: a receive for the next write, a credit for the sender.
  ECCL_RETURN_IF_ERROR(postReceive(index));
  ++lane.unreturned;
  const bool frameDone = lane.filled == lane.header.payloadBytes;
  if (frameDone) {
    lane.inFrame = false;
    lane.frames.fetch_add(1, std::memory_order_relaxed);
    ECCL_RETURN_IF_ERROR(mailbox_.put(Frame{lane.header, std::move(lane.payload)}));
  }
  // The sender holds at most min(slots, kMaxInFlight) credits: return them
  // by half of that, so that it never waits for a batch it cannot fill.
  const uint32_t batch = std::max<uint32_t>(1, std::min(slots_.slotsPerQp, kMaxInFlight) / 2);
  if (frameDone || lane.unreturned >= batch) return returnCredits(lane, index);
  return Status::ok();
}

Status VerbsLink::returnCredits(Lane& lane, uint32_t index) {
  // The send queue is full of credit messages not yet completed: these go
  // with the next one, when a completion makes room.
  if (lane.creditSends >= kCreditSends) return Status::ok();
  ++lane.creditSends;
  ibv_send_wr wr{};
  wr.wr_id = workId(index);
  wr.opcode = IBV_WR_SEND_WITH_IMM;
  wr.num_sge = 0;
  wr.imm_data = htonl(lane.unreturned);
  wr.send_flags = IBV_SEND_SIGNALED;
  lane.unreturned = 0;
  return lane.qp.postSend(&wr);
}

Status VerbsLink::awaitLane(std::unique_lock<std::mutex>& lock, const std::function<bool()>& ready,
                            Deadline deadline, const CancelFlag& cancel, const StallWatch* watch) {
  const Clock::time_point since = Clock::now();
  Clock::time_point nextReport = since + (watch != nullptr ? watch->every : std::chrono::hours(1));
  while (!ready()) {
    if (!broken_.isOk()) return broken_;
    const Clock::time_point now = Clock::now();
    if (std::optional<Status> stop = sendAbort(cancel, deadline, now)) return *stop;
    if (watch != nullptr && watch->onStall && now >= nextReport) {
      lock.unlock();
      watch->onStall(std::chrono::duration_cast<std::chrono::milliseconds>(now - since));
      lock.lock();
      nextReport = now + watch->every;
      continue;
    }
    cv_.wait_for(lock, until(std::min(deadline, nextReport), kPoll));
  }
  return Status::ok();
}

Status VerbsLink::send(const wire::DataHeader& header, const void* payload, Deadline deadline,
                       const CancelFlag& cancel, const StallWatch* watch) {
  if (role_ != Role::kSender) return error(ecclInternalError, "send on the receiving end of a link");
  if (Status st = broken(); !st.isOk()) return st;
  const uint32_t index = nextLane_.fetch_add(1, std::memory_order_relaxed) % qps_.size();
  Lane& lane = *qps_[index];
  std::lock_guard<std::mutex> frame(lane.frameMu);

  std::byte* bounce = memory_ + kBounceBytes * index;
  wire::encodeDataHeader(header, bounce);
  const uint32_t n = header.payloadBytes;
  const auto* src = static_cast<const std::byte*>(payload);
  const bool copied = n <= copyMax_;
  std::optional<Registrations::Pin> pin;
  if (copied) {
    if (n > 0) std::memcpy(bounce + kHeaderBytes, src, n);
  } else {
    Result<Registrations::Pin> p = resources_.registrations->pin(src, n);
    if (!p) return p.status();  // nothing went out: the link still works
    pin.emplace(std::move(*p));
  }

  static const CancelFlag kNever{0};
  std::unique_lock<std::mutex> lock(mu_);
  auto breakHere = [&](const std::string& why) {
    lock.unlock();
    Status st = breakLink(why);
    lock.lock();
    return st;
  };
  // Chunks: the header and as much payload as fits one slot, then a slot each.
  uint32_t sent = 0;
  bool first = true;
  std::optional<Status> abandoned;  // why the op gave up while the frame was unfinished
  Deadline finishBy{};
  Status result;
  while (result.isOk() && (first || sent < n)) {
    // A credit, and room in the send queue: a write holds its entry until
    // its completion is polled, which may come after the credit it earned.
    auto ready = [&] { return lane.credits > 0 && lane.posted - lane.completed < 2 * window_; };
    Status waited = awaitLane(lock, ready, abandoned ? finishBy : deadline,
                              abandoned ? kNever : cancel, watch);
    if (!broken_.isOk()) {
      result = broken_;
      break;
    }
    if (!waited.isOk()) {
      if (first) return waited;  // nothing went out: the link still works
      if (abandoned) {
        result = breakHere(fmt::format("{}; the link was closed mid-frame", abandoned->message()));
      } else if (linksAreReplaced(waited.code())) {
        result = breakHere(waited.message());
      } else {
        // The receiver takes frames whole: finish this one, briefly.
        abandoned = waited;
        finishBy = Clock::now() + tcp::Socket::kFinishFrameWithin;
      }
      continue;
    }
    ibv_sge sge[2];
    int sges = 0;
    if (first) {
      const uint32_t take = copied ? n : std::min<uint32_t>(n, slots_.slotBytes - kHeaderBytes);
      sge[sges++] = {reinterpret_cast<uintptr_t>(bounce),
                     static_cast<uint32_t>(kHeaderBytes + (copied ? n : 0)), mr_->lkey};
      if (!copied && take > 0) sge[sges++] = {reinterpret_cast<uintptr_t>(src), take, pin->lkey()};
      sent = take;
    } else {
      const uint32_t take = std::min(slots_.slotBytes, n - sent);
      sge[sges++] = {reinterpret_cast<uintptr_t>(src + sent), take, pin->lkey()};
      sent += take;
    }
    first = false;
    ibv_send_wr wr{};
    wr.wr_id = workId(index, lane.posted + 1);
    wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
    wr.sg_list = sge;
    wr.num_sge = sges;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.imm_data = htonl(lane.nextChunk);
    wr.wr.rdma.remote_addr =
        remoteSlots_ + (uint64_t{index} * slots_.slotsPerQp + lane.nextSlot) * slots_.slotBytes;
    wr.wr.rdma.rkey = remoteKey_;
    if (lane.completed == lane.posted) lane.oldestPosted = Clock::now();
    if (Status st = lane.qp.postSend(&wr); !st.isOk()) {
      result = breakHere(st.message());
      break;
    }
    ++lane.posted;
    --lane.credits;
    ++lane.nextChunk;
    lane.nextSlot = (lane.nextSlot + 1) % slots_.slotsPerQp;
  }
  // The payload stays put until the HCA has read it: the last write's
  // completion, or on a broken link the flush of what was outstanding. The
  // progress thread breaks the link when a completion is overdue, and a
  // queue pair in ERROR flushes at once, so this wait is bounded.
  const uint64_t last = lane.posted;
  const Clock::time_point giveUp = Clock::now() + 2 * completionDeadline_;
  while (lane.completed < last && Clock::now() < giveUp) {
    cv_.wait_for(lock, until(giveUp, kPoll));
  }
  if (lane.completed < last) {
    // No flush came: the HCA might still read these pages, so their
    // registration stays until the queue pairs are gone (destruction).
    if (pin) orphans_.push_back(std::move(*pin));
    if (broken_.isOk()) {
      (void)breakHere(fmt::format("no completion within {} ms", 2 * completionDeadline_.count()));
    }
  }
  if (result.isOk() && !broken_.isOk()) result = broken_;
  if (result.isOk() && abandoned) result = *abandoned;
  if (result.isOk()) lane.frames.fetch_add(1, std::memory_order_relaxed);
  return result;
}

Result<Frame> VerbsLink::recv(const FrameKey& key, Deadline deadline, const CancelFlag& cancel) {
  return mailbox_.take(key, deadline, cancel, remotePeer_);
}

Result<Frame> VerbsLink::recvAny(const FrameKey& first, std::span<const uint8_t> pending,
                                 Deadline deadline, const CancelFlag& cancel) {
  return mailbox_.takeAny(first, pending, deadline, cancel, remotePeer_);
}

void VerbsLink::retire(uint32_t tag, uint64_t seq) {
  mailbox_.retire(tag, seq);
}

void VerbsLink::interrupt() {
  mailbox_.interrupt();
  cv_.notify_all();
}

std::vector<uint32_t> VerbsLink::queuePairNumbers() const {
  std::vector<uint32_t> v;
  for (const auto& lane : qps_) v.push_back(lane->qp.qpn());
  return v;
}

std::vector<uint64_t> VerbsLink::framesPerStream() const {
  std::vector<uint64_t> v;
  for (const auto& lane : qps_) v.push_back(lane->frames.load(std::memory_order_relaxed));
  return v;
}

}  // namespace eccl::transport::ibverbs
