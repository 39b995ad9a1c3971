#include "transport/tcp/link.h"

#include <fmt/format.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>

#include <climits>

#include "common/log.h"
#include "transport/link_rules.h"

namespace eccl::transport::tcp {
namespace {

// The dials of one growth step, filled by detached threads.
struct DialBatch {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::optional<Result<Socket>>> results;
  size_t done = 0;
};

}  // namespace

bool TcpLink::Inbox::deliver(Socket&& socket) {
  std::lock_guard<std::mutex> lock(mu_);
  return link_ != nullptr && link_->addStream(std::move(socket));
}

TcpLink::TcpLink(uint64_t remotePeer, std::vector<Socket> streams, bool receives,
                 std::optional<Growth> growth)
    : remotePeer_(remotePeer), receives_(receives), growth_(std::move(growth)) {
  if (!receives_) {
    mailbox_.fail(error(ecclInternalError, fmt::format("the link to peer {} only sends", remotePeer)));
  }
  for (Socket& s : streams) addStream(std::move(s));
  active_.store(count_.load());
  inbox_->link_ = this;
  if (growth_ && growth_->dial) {
    controller_.emplace(growth_->config);
    if (count_.load() < controller_->streams()) controller_->settleAt(count_.load());
    const log::Context ctx = log::threadContext();
    grower_ = std::thread([this, ctx] {
      log::threadContext() = ctx;
      growLoop();
    });
  }
}

TcpLink::~TcpLink() {
  if (grower_.joinable()) {
    stopGrowth_->store(ecclInternalError, std::memory_order_release);
    growCv_.notify_all();
    grower_.join();
  }
  {
    std::lock_guard<std::mutex> lock(inbox_->mu_);
    inbox_->link_ = nullptr;
  }
  stop_.store(true, std::memory_order_release);
  const uint32_t n = count_.load(std::memory_order_acquire);
  for (uint32_t i = 0; i < n; ++i) streams_[i]->socket.shutdown();
  for (uint32_t i = 0; i < n; ++i) {
    if (streams_[i]->reader.joinable()) streams_[i]->reader.join();
  }
}

bool TcpLink::addStream(Socket socket) {
  std::lock_guard<std::mutex> lock(addMu_);
  const uint32_t i = count_.load(std::memory_order_relaxed);
  if (i >= streams_.size()) return false;
  auto st = std::make_unique<Stream>();
  st->socket = std::move(socket);
  st->socket.configureForData();
  if (receives_) {
    Stream* raw = st.get();
    const log::Context ctx = log::threadContext();
    st->reader = std::thread([this, raw, ctx] {
      log::threadContext() = ctx;
      try {
        readLoop(*raw);
      } catch (const std::exception& e) {  // e.g. no memory for a frame: fail the link, not the process
        ECCL_LOG(kError, kTransport, "link from peer {} failed: {}", remotePeer_, e.what());
        mailbox_.fail(error(ecclSystemError, fmt::format("link with peer {} failed: {}",
                                                         remotePeer_, e.what())));
      }
    });
  }
  streams_[i] = std::move(st);
  count_.store(i + 1, std::memory_order_release);
  return true;
}

uint32_t TcpLink::streamCount() const {
  const uint32_t open = count_.load(std::memory_order_acquire);
  return receives_ && !growth_ ? open : std::min(open, active_.load(std::memory_order_acquire));
}

std::vector<uint64_t> TcpLink::framesPerStream() const {
  std::vector<uint64_t> out(count_.load(std::memory_order_acquire));
  for (size_t i = 0; i < out.size(); ++i) out[i] = streams_[i]->frames.load(std::memory_order_relaxed);
  return out;
}

double TcpLink::Stream::startDelay() {
  // Bytes not yet sent (in flight ones are on their way already).
  int q = 0;
  if (::ioctl(socket.fd(), SIOCOUTQNSD, &q) != 0 || q < 0) q = 0;
  const auto queued = static_cast<uint64_t>(q);
  const Clock::time_point now = Clock::now();
  const uint64_t drained = written > queued ? written - queued : 0;
  const double dt = std::chrono::duration<double>(now - sampledAt).count();
  if (queuedAt > 0 && queued > 0 && dt >= 1e-3 && drained >= drainedAt) {
    // It had bytes queued throughout (it may have emptied in between, but a
    // queue that ran dry would understate its pace): what left is its pace.
    const double r = static_cast<double>(drained - drainedAt) / dt;
    rate = rate == 0.0 ? r : 0.7 * rate + 0.3 * r;
  }
  if (dt >= 1e-3 || queuedAt == 0) {
    sampledAt = now;
    drainedAt = drained;
    queuedAt = queued;
  }
  // When it would start on a frame: at once when idle (so that an idle
  // stream is never passed over for a busy one, whatever its last rate),
  // else once its queue drained. Not measured yet: taken as fast.
  return static_cast<double>(queued) / (rate > 0.0 ? rate : 1e12);
}

TcpLink::Stream& TcpLink::pick(std::unique_lock<std::mutex>& lock) {
  const uint32_t n = std::max<uint32_t>(1, std::min(active_.load(std::memory_order_acquire),
                                                    count_.load(std::memory_order_acquire)));
  const uint32_t first = next_.fetch_add(1, std::memory_order_relaxed) % n;
  if (n == 1) {
    lock = std::unique_lock<std::mutex>(streams_[0]->sendMu);
    return *streams_[0];
  }
  // Of the streams no other op is writing to, the one expected to start on
  // this frame soonest. Ties (idle ones, as on a fast path) go round-robin:
  // the first idle stream from the rotating start wins, and nothing beats it,
  // so the search (one ioctl per stream) stops there.
  Stream* best = nullptr;
  double bestDelay = 0.0;
  for (uint32_t k = 0; k < n && (best == nullptr || bestDelay > 0.0); ++k) {
    Stream& c = *streams_[(first + k) % n];
    std::unique_lock<std::mutex> l(c.sendMu, std::try_to_lock);
    if (!l) continue;
    const double d = c.startDelay();
    if (best == nullptr || d < bestDelay) {
      best = &c;
      bestDelay = d;
      lock = std::move(l);
    }
  }
  if (best == nullptr) {  // every stream is busy with another op's frame: queue on one
    best = streams_[first].get();
    lock = std::unique_lock<std::mutex>(best->sendMu);
  }
  return *best;
}

Status TcpLink::send(const wire::DataHeader& header, const void* payload, Deadline deadline,
                     const CancelFlag& cancel, const StallWatch* watch) {
  std::byte head[wire::kDataHeaderBytes];
  wire::encodeDataHeader(header, head);
  iovec iov[2] = {{head, sizeof(head)}, {const_cast<void*>(payload), header.payloadBytes}};
  Clock::duration waited{};
  Status st;
  {
    std::unique_lock<std::mutex> lock;
    const uint64_t bytes = wire::kDataHeaderBytes + header.payloadBytes;
    Stream& s = pick(lock);
    st = s.socket.writeAll(iov, header.payloadBytes > 0 ? 2 : 1, deadline, cancel, watch, &waited);
    if (st.isOk()) {
      s.written += bytes;
      s.frames.fetch_add(1, std::memory_order_relaxed);
      written_.fetch_add(bytes, std::memory_order_relaxed);
    }
  }
  if (!st.isOk() && st.code() == ecclPeerLost) {
    return error(ecclPeerLost, fmt::format("link to peer {}: {}", remotePeer_, st.message()));
  }
  if (controller_) {
    waitedNs_.fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(waited).count(),
                        std::memory_order_relaxed);
  }
  return st;
}

void TcpLink::sample() {
  const Clock::time_point now = Clock::now();
  // What is still queued (unsent or unacknowledged) on the streams.
  uint64_t queued = 0;
  const uint32_t open = count_.load(std::memory_order_acquire);
  for (uint32_t i = 0; i < open; ++i) {
    int q = 0;
    if (::ioctl(streams_[i]->socket.fd(), SIOCOUTQ, &q) == 0 && q > 0) queued += static_cast<uint64_t>(q);
  }
  const uint64_t written = written_.load(std::memory_order_relaxed);
  const uint64_t drained = written > queued ? written - queued : 0;
  const uint64_t waitedNs = waitedNs_.load(std::memory_order_relaxed);
  const bool busy = sample_.queued > 0 && queued > 0 && drained >= sample_.drained;
  if (busy) {
    if (now - lastBusy_ > kBusyGap) busySince_ = now;
    lastBusy_ = now;
  }
  if (busy && now - busySince_ >= kWarmUp) {
    window_.span += now - sample_.at;
    window_.waited += std::chrono::nanoseconds(waitedNs - sample_.waitedNs);
    window_.drained += drained - sample_.drained;
  }
  sample_ = Sample{now, drained, queued, waitedNs};
  if (window_.span < kWindow) return;
  const double secs = std::chrono::duration<double>(window_.span).count();
  const double rate = static_cast<double>(window_.drained) / secs;
  const double waitedShare = std::min(1.0, std::chrono::duration<double>(window_.waited).count() / secs);
  window_ = Window{};
  const uint32_t target = controller_->onWindow(rate, waitedShare);
  ECCL_LOG(kDebug, kTransport, "link to peer {}: {:.1f} MB/s on {} streams, waited {:.0f}% -> {}",
           remotePeer_, rate / 1e6, active_.load(), waitedShare * 100, target);
  applyTarget(target);
}

void TcpLink::applyTarget(uint32_t target) {
  if (target > count_.load(std::memory_order_acquire)) {
    // The new streams' handshakes run at once (on a long path each costs
    // round trips that would add up one after another), on detached threads
    // that own what they open: a link being destroyed does not wait for a
    // handshake with a peer that stopped answering.
    const uint32_t have = count_.load(std::memory_order_acquire);
    auto batch = std::make_shared<DialBatch>();
    batch->results.resize(target - have);
    const log::Context ctx = log::threadContext();
    for (uint32_t i = have; i < target; ++i) {
      std::thread([batch, dial = growth_->dial, stop = stopGrowth_, slot = i - have, i, ctx] {
        log::threadContext() = ctx;
        Result<Socket> s = dial(i, *stop);
        std::lock_guard<std::mutex> lock(batch->mu);
        batch->results[slot] = std::move(s);
        ++batch->done;
        batch->cv.notify_all();
      }).detach();
    }
    {
      std::unique_lock<std::mutex> lock(batch->mu);
      while (batch->done < batch->results.size()) {
        if (stopGrowth_->load(std::memory_order_acquire) != 0) return;
        batch->cv.wait_for(lock, kSampleEvery);
      }
    }
    uint32_t failed = 0;
    std::string why;
    for (std::optional<Result<Socket>>& s : batch->results) {
      if (*s && addStream(std::move(**s))) continue;
      ++failed;
      if (!*s) why = s->status().message();
    }
    const uint32_t open = count_.load(std::memory_order_acquire);
    if (failed > 0) {
      ECCL_LOG(kInfo, kTransport, "link to peer {}: {} of {} added streams did not open ({}); "
               "staying at {}", remotePeer_, failed, target - have, why, open);
      controller_->settleAt(open);
    }
    ECCL_LOG(kDebug, kTransport, "link to peer {}: {} streams open", remotePeer_, open);
    target = std::min(target, open);
  }
  if (target != active_.load(std::memory_order_acquire)) {  // measured afresh, after a warm-up
    sample_ = Sample{Clock::now()};
    window_ = Window{};
    busySince_ = lastBusy_ = Clock::now();
  }
  active_.store(target, std::memory_order_release);
  if (controller_->settled() && !reportedSettled_) {
    reportedSettled_ = true;
    ECCL_LOG(kInfo, kTransport, "link to peer {}: settled on {} streams", remotePeer_, target);
    if (growth_->onSettled) growth_->onSettled(target);
  }
}

void TcpLink::growLoop() {
  std::unique_lock<std::mutex> lock(growMu_);
  while (stopGrowth_->load(std::memory_order_acquire) == 0 && !controller_->settled()) {
    growCv_.wait_for(lock, kSampleEvery);
    if (stopGrowth_->load(std::memory_order_acquire) != 0) return;
    sample();
  }
}

Result<Frame> TcpLink::recv(const FrameKey& key, Deadline deadline, const CancelFlag& cancel) {
  return mailbox_.take(key, deadline, cancel, remotePeer_);
}

Result<Frame> TcpLink::recvAny(const FrameKey& first, std::span<const uint8_t> pending,
                               Deadline deadline, const CancelFlag& cancel) {
  return mailbox_.takeAny(first, pending, deadline, cancel, remotePeer_);
}

void TcpLink::readLoop(Stream& s) {
  const Deadline never = Clock::time_point::max();
  for (;;) {
    std::byte head[wire::kDataHeaderBytes];
    bool closedFirst = false;
    Status st = s.socket.readAll(head, sizeof(head), stop_, never, &closedFirst);
    Result<Frame> frame = error(ecclInternalError, "");
    if (st.isOk()) {
      Result<wire::DataHeader> h = decodeFrameHeader(head, maxFrame_.load(std::memory_order_relaxed));
      if (!h) {
        st = error(h.status().code(), fmt::format("bad frame from peer {} ({}): {}", remotePeer_,
                                                  s.socket.peerName(), h.status().message()));
      } else {
        Frame f{*h, pool_->get(h->payloadBytes)};
        st = s.socket.readAll(f.payload.data(), h->payloadBytes, stop_, never);
        if (st.isOk()) st = mailbox_.put(std::move(f));
        if (st.isOk()) continue;
      }
    }
    if (stop_.load(std::memory_order_acquire)) return;
    // A stream the other side closed between two frames: the frames it sent
    // last on the other streams may still be on their way (a closing link
    // ends all its streams, not in order). The link breaks when every
    // stream has ended so, or at once on an error or a frame cut short.
    if (closedFirst && ended_.fetch_add(1, std::memory_order_acq_rel) + 1 <
                           count_.load(std::memory_order_acquire)) {
      return;
    }
    ECCL_LOG(kInfo, kTransport, "link from peer {} broke: {}", remotePeer_, st.message());
    mailbox_.fail(error(ecclPeerLost, fmt::format("link with peer {} broke: {}", remotePeer_,
                                                  st.message())));
    return;
  }
}

}  // namespace eccl::transport::tcp
