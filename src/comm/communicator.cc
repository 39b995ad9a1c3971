#include "comm/communicator.h"

#include <fmt/format.h>

#include <cstring>
#include <future>

#include "collectives/ring.h"
#include "collectives/small.h"
#ifdef ECCL_HAVE_NCCL
#include "transport/nccl/collective.h"
#endif
#include "common/dtype.h"
#include "common/env.h"
#include "common/log.h"
#include "common/stream_copy.h"

namespace eccl::comm {
namespace {

transport::Deadline after(std::chrono::milliseconds d) { return transport::Clock::now() + d; }

// An out-of-place all-reduce that fails before its ring touched anything
// still hands the caller's input back in the receive buffer, as every failed
// op does (in-place ones hold it already).
void handBackInput(const OpArgs& a) {
  if (a.kind == wire::OpKind::kAllReduce && a.sendbuf != a.recvbuf && a.count > 0) {
    std::memmove(a.recvbuf, a.sendbuf, a.count * dtypeSize(a.dtype));
  }
}

// An op that fails or never runs leaves its input in recvbuf, wherever it is.
Status handBack(const Request& req) {
  if (req.staging) return req.staging->restore();
  handBackInput(req.args());
  return Status::ok();
}

// A device error while putting the input back is worse than the op's own.
Status withRestore(const Request& req, Status failure) {
  Status restored = handBack(req);
  return restored.isOk() ? failure : restored;
}

}  // namespace

Communicator::Communicator(CommOptions options) : options_(std::move(options)) {}

Communicator::~Communicator() {
  {
    std::unique_lock<std::mutex> lock(opsMu_);
    // Let submitted ops finish (bounded), then stop the workers.
    opsCv_.wait_for(lock, options_.opTimeout, [&] { return inFlight_ == 0; });
    stopping_ = true;
    for (auto& [key, req] : active_) req->setVerdict(ecclInvalidUsage, "communicator destroyed");
  }
  opsCv_.notify_all();
  {
    std::lock_guard<std::mutex> lock(viewMu_);
    interruptLinks();
  }
  for (auto& [tag, q] : tags_) {
    if (q.worker.joinable()) q.worker.join();
  }
  if (control_) {
    control_->send(wire::Leave{});
    control_.reset();  // flushes the Leave, closes, joins
  }
  dropLinks();
  transport_.reset();
}

class Communicator::LifecycleCall {
 public:
  explicit LifecycleCall(std::atomic<bool>& flag) : flag_(flag), owner_(!flag.exchange(true)) {}
  ~LifecycleCall() {
    if (owner_) flag_.store(false, std::memory_order_release);
  }
  Status check(const char* call) const {
    if (owner_) return Status::ok();
    return error(ecclInvalidUsage, fmt::format("{} while ecclCommConnect or ecclCommUpdateTopology "
                                               "runs on this communicator in another thread; "
                                               "they must not overlap", call));
  }

 private:
  std::atomic<bool>& flag_;
  const bool owner_;
};

Status Communicator::connect() {
  const LifecycleCall call(lifecycle_);
  ECCL_RETURN_IF_ERROR(call.check("ecclCommConnect"));
  {
    std::lock_guard<std::mutex> ops(opsMu_);
    if (masterLost_.isOk()) {
      std::lock_guard<std::mutex> lock(viewMu_);
      if (connected_ || control_) return error(ecclInvalidUsage, "communicator already connected");
    } else if (inFlight_ != 0) {
      return error(ecclInvalidUsage, fmt::format("{} collectives still in flight; wait for them "
                                                 "before connecting again", inFlight_));
    }
  }
  dropSession();  // after ecclKicked or ecclMasterUnreachable: rejoin as a newcomer
  Status st = registerAndJoin();
  if (!st.isOk() && control_) {
    // Leave rather than stay registered (and later be put in a ring whose
    // links this peer never opens); a new ecclCommConnect starts afresh.
    control_->send(wire::Leave{});
    control_.reset();
    transport_.reset();
    std::lock_guard<std::mutex> lock(viewMu_);
    connected_ = false;
  }
  return st;
}

void Communicator::dropSession() {
  control_.reset();  // may report the loss once more; cleared below
  {
    std::lock_guard<std::mutex> lock(viewMu_);
    dropLinks();
    connected_ = false;
    epoch_ = 0;
    rank_ = 0;
    ring_.clear();
    linksError_ = Status::ok();
  }
  transport_.reset();
  {
    std::lock_guard<std::mutex> setup(linkSetupMu_);
    lostEpoch_ = 0;  // a restarted master counts epochs afresh
    lostPeers_.clear();
  }
  std::lock_guard<std::mutex> ops(opsMu_);
  masterLost_ = Status::ok();
  earlyVerdicts_.clear();
  nextSeq_.clear();
}

Status Communicator::registerAndJoin() {
  Result<std::unique_ptr<ControlClient>> c = ControlClient::connect(
      options_.masterAddress, after(options_.connectTimeout), options_.bindAddress, options_.tls,
      options_.authToken,
      options_.heartbeatInterval,
      options_.failureTimeout, [this](const wire::OpVerdict& v) { onVerdict(v); },
      [this](const Status& st) { onMasterLost(st); },
      [this](const wire::MemberLost& m) { onMemberLost(m); });
  if (!c) return c.status();
  control_ = std::move(*c);
  ECCL_RETURN_IF_ERROR(control_->authenticate(options_.authToken, after(options_.connectTimeout)));

  // The data acceptor listens where this host reaches the master unless told
  // otherwise: not on every interface of a multi-homed host.
  transport::TransportOptions topts;
  topts.bindAddress = options_.bindAddress;
  topts.listenAddress = options_.bindAddress.empty() ? control_->localAddress() : options_.bindAddress;
  topts.streams = options_.streams;
  topts.paceFirstStream = env::testPaceFirstStream();
  topts.sharedMemory = env::sharedMemory();
  topts.authToken = options_.authToken;
  topts.tls = options_.tls;
  topts.rdma.device = env::ibDevice();
  topts.rdma.gidIndex = env::ibGidIndex();
  topts.rdma.timeout = env::ibTimeout();
  topts.rdma.trafficClass = env::ibTrafficClass();
  topts.rdma.serviceLevel = env::ibServiceLevel();
  Result<std::unique_ptr<transport::Transport>> t = transport::createTransport(options_.transport, topts);
  if (!t) return t.status();
  transport_ = std::move(*t);

  wire::Register reg;
  reg.peerGroup = options_.peerGroup;
  reg.dataHost = options_.advertisedAddress;  // empty: the master uses what it sees
  reg.dataPort = transport_->port();
  reg.opTimeoutMs = static_cast<uint32_t>(std::min<int64_t>(options_.opTimeout.count(), UINT32_MAX));
  reg.segmentBytes = static_cast<uint32_t>(env::segmentBytes());
  control_->send(reg);
  Result<wire::ControlMessage> reply =
      control_->await(wire::MsgType::kRegisterReply, after(options_.connectTimeout));
  if (!reply) return reply.status();
  const auto& rr = std::get<wire::RegisterReply>(*reply);
  if (rr.result != ecclSuccess) {
    return error(static_cast<ecclResult_t>(rr.result),
                 fmt::format("the master refused registration: {}", rr.message));
  }
  peerId_ = rr.peerId;
  log::threadContext() = {peerId_, 0, true};
  ECCL_LOG(kInfo, kComm, "registered as peer {}; waiting for admission", peerId_);

  // Pending until the members' next topology update.
  Result<wire::ControlMessage> topo =
      control_->await(wire::MsgType::kTopology, after(options_.opTimeout));
  if (!topo) {
    return error(topo.status().code(),
                 fmt::format("not admitted: {}", topo.status().message()));
  }
  return applyTopology(std::get<wire::Topology>(*topo));
}

Status Communicator::requireConnected() const {
  std::lock_guard<std::mutex> lock(viewMu_);
  if (!connected_) return error(ecclInvalidUsage, "call ecclCommConnect first");
  return Status::ok();
}

Status Communicator::applyTopology(const wire::Topology& t) {
  if (t.result != ecclSuccess) {
    return error(static_cast<ecclResult_t>(t.result), t.message);
  }
  const int n = static_cast<int>(t.ring.size());
  {
    std::lock_guard<std::mutex> lock(viewMu_);
    const bool linksUp = n <= 1 || (right_ && left_);
    if (connected_ && t.epoch == epoch_ && t.ring == ring_ && linksUp) return Status::ok();  // nothing moved
    dropLinks();
    epoch_ = t.epoch;
    rank_ = static_cast<int>(t.rank);
    ring_ = t.ring;
    segmentBytes_ = t.segmentBytes;
    linksError_ = Status::ok();
  }
  log::threadContext() = {peerId_, t.epoch, true};
  // Not under viewMu_: the control thread takes it to interrupt links, and
  // setup may wait for up to the op timeout. No op runs meanwhile.
  const Status st = n > 1 ? openLinks(t) : Status::ok();
  {
    std::lock_guard<std::mutex> lock(viewMu_);
    connected_ = true;
    if (!st.isOk()) {
      // The view moves on (the master's epoch did), the links stay missing:
      // collectives fail with this until an update opens them.
      linksError_ = error(st.code(), fmt::format("data links of epoch {} are not open ({}); call "
                                                 "ecclCommUpdateTopology", t.epoch, st.message()));
      return st;
    }
  }
  {
    std::lock_guard<std::mutex> ops(opsMu_);
    nextSeq_.clear();
    // Members may already run this epoch's first ops while we were opening
    // links: keep verdicts that arrived for them, drop older epochs'.
    std::erase_if(earlyVerdicts_, [&](const auto& kv) { return kv.first.epoch < t.epoch; });
  }
  ECCL_LOG(kInfo, kComm, "epoch {}: rank {} of {}", t.epoch, t.rank, n);
  return Status::ok();
}

Status Communicator::openLinks(const wire::Topology& t) {
  const size_t n = t.ring.size();
  const wire::RingPeer& r = t.ring[(t.rank + 1) % n];
  const wire::RingPeer& l = t.ring[(t.rank + n - 1) % n];
  const auto deadline = after(options_.opTimeout);
  {
    std::lock_guard<std::mutex> ops(opsMu_);  // masterLost_
    std::lock_guard<std::mutex> setup(linkSetupMu_);
    settingUpEpoch_ = t.epoch;
    // A loss reported before setup began stops it as surely as one during it.
    int cancel = lostEpoch_ >= t.epoch ? ecclPeerLost : 0;
    if (!masterLost_.isOk()) cancel = masterLost_.code();
    linkSetupCancel_.store(cancel);
  }
  // Dial the right neighbour while the left one dials us; and the small
  // collectives' links to the members 2^k places on, one stream each.
  using LinkResult = Result<std::unique_ptr<transport::Link>>;
  auto dial = std::async(std::launch::async, [&] {
    return transport_->connect({r.peerId, r.host, r.port}, peerId_, t.epoch, deadline,
                               linkSetupCancel_);
  });
  std::vector<std::future<LinkResult>> hopDials;
  for (size_t d = 2, k = 1; d < n; d *= 2, ++k) {
    const wire::RingPeer& to = t.ring[(t.rank + d) % n];
    hopDials.push_back(std::async(std::launch::async, [&, to, k] {
      return transport_->connectChannel({to.peerId, to.host, to.port}, peerId_, t.epoch,
                                        wire::hopChannel(static_cast<uint32_t>(k)), deadline,
                                        linkSetupCancel_, /*streams=*/1);
    }));
  }
  LinkResult in = transport_->accept(peerId_, l.peerId, t.epoch, deadline, linkSetupCancel_);
  std::vector<LinkResult> hopIns;
  for (size_t d = 2, k = 1; d < n && in; d *= 2, ++k) {
    const wire::RingPeer& from = t.ring[(t.rank + n - d % n) % n];
    hopIns.push_back(transport_->acceptChannel(peerId_, from.peerId, t.epoch,
                                               wire::hopChannel(static_cast<uint32_t>(k)),
                                               deadline, linkSetupCancel_));
    if (!hopIns.back()) break;
  }
  if (!in || (!hopIns.empty() && !hopIns.back())) {
    // The dials give up too: nobody will take them.
    linkSetupCancel_.store(ecclPeerLost);
  }
  LinkResult out = dial.get();
  std::vector<LinkResult> hopOuts;
  for (auto& f : hopDials) hopOuts.push_back(f.get());
  {
    std::lock_guard<std::mutex> setup(linkSetupMu_);
    settingUpEpoch_ = 0;
  }
  if (!in) return in.status();
  if (!out) return out.status();
  for (LinkResult& h : hopIns) {
    if (!h) return h.status();
  }
  for (LinkResult& h : hopOuts) {
    if (!h) return h.status();
  }
  (*in)->setMaxFrameBytes(t.segmentBytes);
  std::lock_guard<std::mutex> lock(viewMu_);
  right_ = std::move(*out);
  left_ = std::move(*in);
  for (LinkResult& h : hopIns) {
    (*h)->setMaxFrameBytes(t.segmentBytes);
    hopIn_.push_back(std::move(*h));
  }
  for (LinkResult& h : hopOuts) hopOut_.push_back(std::move(*h));
  return Status::ok();
}

void Communicator::interruptLinks() {
  if (right_) right_->interrupt();
  if (left_) left_->interrupt();
  for (auto& l : hopOut_) l->interrupt();
  for (auto& l : hopIn_) l->interrupt();
}

void Communicator::dropLinks() {
  right_.reset();
  left_.reset();
  hopOut_.clear();
  hopIn_.clear();
}

Status Communicator::updateTopology(bool optimize) {
  const char* what = optimize ? "ecclCommOptimizeTopology" : "ecclCommUpdateTopology";
  const LifecycleCall call(lifecycle_);
  ECCL_RETURN_IF_ERROR(call.check(what));
  ECCL_RETURN_IF_ERROR(requireConnected());
  {
    std::lock_guard<std::mutex> lock(opsMu_);
    if (inFlight_ != 0) {
      return error(ecclInvalidUsage, fmt::format("{} collectives still in flight; wait for them "
                                                 "before {}", inFlight_, what));
    }
    if (topologyChanging_) {
      return error(ecclInvalidUsage, "ecclCommUpdateTopology or ecclCommOptimizeTopology is "
                                     "already running");
    }
    topologyChanging_ = true;  // links are replaced below: no op may start meanwhile
  }
  Status st = voteAndApply(optimize);
  {
    std::lock_guard<std::mutex> lock(opsMu_);
    topologyChanging_ = false;
  }
  return st;
}

Status Communicator::voteAndApply(bool optimize) {
  // A Topology already waiting answers a vote of ours that timed out earlier
  // and was completed afterwards: the master has moved on, so follow it.
  if (std::optional<wire::ControlMessage> late = control_->takeQueued(wire::MsgType::kTopology)) {
    return applyTopology(std::get<wire::Topology>(*late));
  }
  // A probe plan already waiting answers that earlier vote too: the master
  // still counts it, so probe now instead of voting again.
  std::optional<wire::ControlMessage> m = control_->takeQueued(wire::MsgType::kProbePlan);
  if (!m) control_->send(wire::Vote{epoch(), optimize});
  // Any member may have asked to optimize: a probe plan may come first.
  for (;;) {
    if (!m) {
      Result<wire::ControlMessage> next = control_->awaitAny(
          {wire::MsgType::kTopology, wire::MsgType::kProbePlan}, after(options_.opTimeout));
      if (!next) return next.status();
      m = std::move(*next);
    }
    if (const auto* plan = std::get_if<wire::ProbePlan>(&*m)) {
      control_->send(runProbes(*plan));
      m.reset();
      continue;
    }
    return applyTopology(std::get<wire::Topology>(*m));
  }
}

Result<bool> Communicator::arePeersPending() {
  ECCL_RETURN_IF_ERROR(requireConnected());
  control_->takeQueued(wire::MsgType::kPendingReply);  // a reply that came after a timeout
  control_->send(wire::PendingQuery{});
  Result<wire::ControlMessage> r =
      control_->await(wire::MsgType::kPendingReply, after(options_.opTimeout));
  if (!r) return r.status();
  return std::get<wire::PendingReply>(*r).pending > 0;
}

int Communicator::worldSize() const {
  std::lock_guard<std::mutex> lock(viewMu_);
  return static_cast<int>(ring_.size());
}

int Communicator::rank() const {
  std::lock_guard<std::mutex> lock(viewMu_);
  return rank_;
}

uint64_t Communicator::epoch() const {
  std::lock_guard<std::mutex> lock(viewMu_);
  return epoch_;
}

Result<std::shared_ptr<Request>> Communicator::submit(const OpArgs& args, bool runInline) {
  ECCL_RETURN_IF_ERROR(requireConnected());
  if (args.kind == wire::OpKind::kBroadcast && (args.root < 0 || args.root >= worldSize())) {
    return error(ecclInvalidArgument, fmt::format("broadcast root {} is not a rank of this "
                                                  "epoch (world size {})", args.root, worldSize()));
  }
  auto req = std::make_shared<Request>(args);
  if (args.memType == ecclMemCuda) {
    auto staging = Staging::begin(args, args.cudaStream);
    if (!staging) return staging.status();  // nothing of the caller's was touched
    req->staging = std::move(*staging);
  }
  const uint64_t epochNow = epoch();
  std::unique_lock<std::mutex> lock(opsMu_);
  Status refused;
  if (stopping_) {
    refused = error(ecclInvalidUsage, "communicator is being destroyed");
  } else if (topologyChanging_) {
    refused = error(ecclInvalidUsage, "a collective was issued while ecclCommUpdateTopology runs");
  } else if (!masterLost_.isOk()) {
    refused = masterLost_;
  }
  if (!refused.isOk()) {
    lock.unlock();  // a large copy must not hold up the control thread's verdicts
    return withRestore(*req, refused);
  }
  req->seq = nextSeq_[args.tag]++;
  req->epoch = epochNow;
  ++inFlight_;
  TagQueue& q = tags_[args.tag];
  if (runInline && q.queue.empty() && !q.busy) {
    q.busy = true;
    lock.unlock();
    execute(*req);
    lock.lock();
    tags_[args.tag].busy = false;
    lock.unlock();
    opsCv_.notify_all();  // the tag's worker may hold queued ops
    return req;
  }
  q.queue.push_back(req);
  if (!q.worker.joinable()) {
    const uint32_t tag = args.tag;
    q.worker = std::thread([this, tag] { workerLoop(tag); });
  }
  lock.unlock();
  opsCv_.notify_all();
  return req;
}

void Communicator::workerLoop(uint32_t tag) {
  log::threadContext() = {peerId_, epoch(), true};
  for (;;) {
    std::shared_ptr<Request> req;
    std::deque<std::shared_ptr<Request>> dropped;
    {
      std::unique_lock<std::mutex> lock(opsMu_);
      opsCv_.wait(lock, [&] {
        const TagQueue& q = tags_[tag];
        return stopping_ || (!q.queue.empty() && !q.busy);
      });
      TagQueue& q = tags_[tag];
      if (stopping_) {
        dropped.swap(q.queue);
        inFlight_ -= dropped.size();
      } else {
        req = q.queue.front();
        q.queue.pop_front();
        q.busy = true;
      }
    }
    if (!req) {
      // Ops that never started end now: destroy must not run them.
      for (const auto& d : dropped) {
        d->complete(withRestore(*d, error(ecclInvalidUsage,
                                          "communicator destroyed before the op started")),
                    ECCL_OP_INFO_INIT);
      }
      return;
    }
    execute(*req);
    {
      std::lock_guard<std::mutex> lock(opsMu_);
      tags_[tag].busy = false;
    }
    opsCv_.notify_all();
  }
}

void Communicator::execute(Request& req) {
  const auto start = transport::Clock::now();
  ecclOpInfo_t info = ECCL_OP_INFO_INIT;
  info.worldSize = worldSize();
  info.epoch = req.epoch;
  log::ScopedLogContext logContext(peerId_, req.epoch);
  TagQueue* tag = nullptr;
  {
    std::lock_guard<std::mutex> lock(opsMu_);  // map nodes are stable; the tag is busy
    tag = &tags_[req.args().tag];
  }
  Status st = req.args().kind == wire::OpKind::kSync
                  ? runSync(req, tag->staging)
                  : runRing(req, info, *tag);
  info.seconds = std::chrono::duration<double>(transport::Clock::now() - start).count();
  if (!st.isOk()) {
    ECCL_LOG(kWarn, kComm, "tag {} op #{} failed: {}", req.args().tag, req.seq, st.message());
  }
  {
    // Before complete(): a caller woken by it may update the topology at once.
    std::lock_guard<std::mutex> lock(opsMu_);
    --inFlight_;
  }
  opsCv_.notify_all();
  req.complete(std::move(st), info);
}

Status Communicator::runRing(Request& req, ecclOpInfo_t& info, TagQueue& tag) {
  std::vector<std::byte>& backup = tag.backup;
  Staging* const staging = req.staging.get();
  // Device buffers: the ring runs on a pinned host copy (comm/staging.h).
  OpArgs a = req.args();
  Status local;  // a failure of ours before the ring: the op fails on every member
  collectives::RingContext ctx;
  Status missing;  // this epoch's links, when they failed to open
  {
    std::lock_guard<std::mutex> lock(viewMu_);
    ctx.rank = rank_;
    ctx.world = static_cast<int>(ring_.size());
    ctx.segmentBytes = segmentBytes_;
    ctx.right = right_.get();
    ctx.left = left_.get();
    ctx.hopOut = {ctx.right};
    ctx.hopIn = {ctx.left};
    for (const auto& l : hopOut_) ctx.hopOut.push_back(l.get());
    for (const auto& l : hopIn_) ctx.hopIn.push_back(l.get());
    if (ctx.world > 1 && (ctx.right == nullptr || ctx.left == nullptr)) {
      missing = linksError_.isOk() ? error(ecclInternalError, "no data links in this epoch")
                                   : linksError_;
    }
  }
  if (!missing.isOk()) return withRestore(req, missing);
  // Device buffers on transport "nccl": the op runs on NCCL (even at a world
  // of one, where it is the only way to check NCCL on a single GPU).
#ifdef ECCL_HAVE_NCCL
  const bool viaNccl = staging != nullptr && options_.transport == "nccl" &&
                       transport::nccl::fits(a.dtype, a.quant);
#else
  const bool viaNccl = false;
#endif
  if (ctx.world == 1 && !viaNccl) {  // nothing to agree on with anyone
    if (staging != nullptr) return staging->copyThrough();
    if (a.kind == wire::OpKind::kAllReduce && a.count > 0 && a.sendbuf != a.recvbuf) {
      std::memmove(a.recvbuf, a.sendbuf, a.count * dtypeSize(a.dtype));
    }
    return Status::ok();
  }
  registerActive(req);
  const size_t bytes = a.count * dtypeSize(a.dtype);
  // (A broadcast root with a codec keeps the decoded value, so its buffer changes.)
  const bool changesInput = a.kind == wire::OpKind::kAllReduce || ctx.rank != a.root ||
                            a.quant != ecclQuantNone;
  // A codec op on device buffers keeps its elements on the device and moves
  // only encoded bytes (comm/device_ring.h); others run on a pinned copy.
  const bool deviceRing = staging != nullptr && !viaNccl && a.quant != ecclQuantNone && bytes > 0;
  if (deviceRing) {
    Result<collectives::ElementStore*> store = staging->startOnDevice(
        tag.staging, {a.dtype, a.rounding, a.blockElems}, changesInput);
    if (store) {
      ctx.elements = *store;
    } else {
      local = store.status();
    }
  } else if (staging != nullptr && !viaNccl) {
    Result<OpArgs> host = staging->start(tag.staging, ctx.rank == a.root);
    if (host) {
      a = *host;
    } else {
      local = host.status();
    }
  }
  // All or nothing: keep what the ring overwrites, to put it back on failure
  // (device buffers are their own backup: the ring works on a copy).
  const bool overwritesInput = staging == nullptr && changesInput &&
                               (a.kind != wire::OpKind::kAllReduce || a.sendbuf == a.recvbuf);
  // The ring copies each part before it first overwrites it, inside the
  // pipeline (the all-reduce where it first reads the part), not as a pass
  // over the whole buffer before it starts.
  std::vector<std::pair<size_t, size_t>> saved;  // (offset, bytes) copied to `backup`
  if (overwritesInput && bytes > 0 && local.isOk()) {
    try {
      if (backup.size() < bytes) backup.resize(bytes);
      saved.reserve(64);
    } catch (const std::bad_alloc&) {
      // Fail this op on every member (through the master), not the process.
      local = error(ecclSystemError, fmt::format("out of memory for the {}-byte copy of the input "
                                                 "that restores it on failure", bytes));
    }
  }
  const bool ringRuns = local.isOk();  // the input is untouched otherwise
  auto restoreInput = [&]() -> Status {
    if (bytes == 0) return Status::ok();
    if (staging != nullptr) return staging->restore();
    if (!ringRuns) return Status::ok();
    if (overwritesInput) {
      for (const auto& [offset, len] : saved) {
        std::memcpy(static_cast<std::byte*>(a.recvbuf) + offset, backup.data() + offset, len);
      }
    } else {
      handBackInput(a);
    }
    return Status::ok();
  };

  const wire::OpDescriptor desc = a.descriptor();
  control_->send(wire::OpBegin{req.epoch, a.tag, req.seq, desc});

  ctx.base.kind = desc.kind;
  ctx.base.dtype = desc.dtype;
  ctx.base.redop = desc.redop;
  ctx.base.count = desc.count;
  ctx.base.root = desc.root;
  ctx.base.group = options_.peerGroup;
  ctx.base.tag = a.tag;
  ctx.base.epoch = req.epoch;
  ctx.base.seq = req.seq;
  ctx.progressTimeout = options_.opTimeout;
  ctx.stallReport = std::max(std::chrono::milliseconds(1), options_.failureTimeout / 2);
  ctx.onStall = [&](uint64_t neighbour, bool sending, std::chrono::milliseconds stuck) {
    reportStall(req.epoch, a.tag, req.seq, neighbour, sending, stuck);
  };
  ctx.cancel = &req.cancel;
  if (overwritesInput) {
    ctx.beforeOverwrite = [&](size_t offset, size_t len) {
      // Read again only if the op fails: past the cache.
      streamCopy(backup.data() + offset, static_cast<const std::byte*>(a.recvbuf) + offset, len);
      saved.emplace_back(offset, len);
    };
  }
  if (staging != nullptr && !deviceRing) {
    ctx.awaitInput = [staging](size_t offset, size_t len) {
      return staging->awaitInput(offset, len);
    };
  }
  ctx.codec = codec::find(a.quant);
  ctx.codecParams = {a.dtype, a.rounding, a.blockElems};
  if (ringRuns && viaNccl) {
    local = runNccl(req, ctx, tag);
  } else if (ringRuns && collectives::takesSmallPath(ctx, bytes)) {
    local = a.kind == wire::OpKind::kAllReduce
                ? collectives::gatherAllReduce(ctx, a.sendbuf, a.recvbuf, a.count, a.dtype, a.op)
                : collectives::treeBroadcast(ctx, a.recvbuf, a.count, a.dtype, a.root);
  } else if (ringRuns) {
    auto ring = [&] {
      return a.kind == wire::OpKind::kAllReduce
                 ? collectives::ringAllReduce(ctx, a.sendbuf, a.recvbuf, a.count, a.dtype, a.op)
                 : collectives::ringBroadcast(ctx, a.recvbuf, a.count, a.dtype, a.root);
    };
    local = deviceRing ? staging->withDevice(ring) : ring();
  }
  info.bytesSent = ctx.bytesSent;
  info.bytesReceived = ctx.bytesReceived;
  info.logicalBytesSent = ctx.logicalBytesSent;
  info.streams = ctx.right != nullptr && ctx.bytesSent > 0 ? ctx.right->streamCount() : 0;
  info.sharedMemory = ctx.right != nullptr && ctx.bytesSent > 0 && ctx.right->sharedMemory() ? 1 : 0;
  info.logicalBytesReceived = ctx.logicalBytesReceived;

  // Report, then wait for the master's verdict on the whole group.
  control_->send(wire::OpDone{req.epoch, a.tag, req.seq, static_cast<uint32_t>(local.code()),
                              local.message()});
  // No deadline of our own here: returning before the verdict could fail an
  // op that the other members complete (the master's op deadline bounds it).
  const Status verdict = req.awaitVerdict();
  unregisterActive(req);
  for (transport::Link* l : ctx.hopOut) {
    if (l != nullptr) l->retire(a.tag, req.seq);  // (none at a world of one)
  }
  for (transport::Link* l : ctx.hopIn) {
    if (l != nullptr) l->retire(a.tag, req.seq);
  }
  Status finished;  // the NCCL backend's end of the op
#ifdef ECCL_HAVE_NCCL
  if (viaNccl && tag.nccl) {
    finished = staging->withDevice([&] { return tag.nccl->finish(verdict.isOk(), options_.opTimeout); });
    if (verdict.isOk()) return finished;
  }
#endif
  if (!verdict.isOk()) {
    ECCL_RETURN_IF_ERROR(restoreInput());
    ECCL_RETURN_IF_ERROR(finished);
    // Our own error says more when it caused the verdict rather than
    // being the verdict's cancellation.
    const bool cancelled = req.cancel.load(std::memory_order_acquire) != 0;
    if (!local.isOk() && !cancelled && local.code() == verdict.code()) return local;
    return verdict;
  }
  // Success verdict implies local success. A device buffer takes the result
  // only now; a device error here fails this member alone (nothing can undo
  // the others' success), as any local fault after the verdict would.
  if (staging != nullptr && !viaNccl) return staging->commit(changesInput);
  return local;
}

void Communicator::TagQueue::NcclDeleter::operator()(transport::nccl::TagComm* c) const {
#ifdef ECCL_HAVE_NCCL
  delete c;
#else
  (void)c;  // none is ever made
#endif
}

Status Communicator::runNccl(Request& req, collectives::RingContext& ctx, TagQueue& tag) {
#ifdef ECCL_HAVE_NCCL
  Result<const transport::nccl::Api*> api = transport::nccl::api();
  if (!api) return api.status();
  const OpArgs& a = req.args();
  if (a.count == 0) return Status::ok();  // nothing to move; the master checks the descriptors
  Staging& staging = *req.staging;
  transport::nccl::Call call;
  call.allReduce = a.kind == wire::OpKind::kAllReduce;
  call.sendbuf = a.sendbuf;
  call.recvbuf = a.recvbuf;
  call.count = a.count;
  call.dtype = a.dtype;
  call.op = a.op;
  call.root = a.root;
  call.rank = ctx.rank;
  call.world = ctx.world;
  call.epoch = req.epoch;
  call.device = staging.deviceIndex();
  call.ready = staging.ready();
  call.cancel = &req.cancel;
  call.timeout = options_.opTimeout;
  // The id travels on this op's own frames (its descriptor checked as ever):
  // the op's payload goes through NCCL, so its data links carry nothing else.
  call.shareId = [&ctx](ncclUniqueId* id) {
    return collectives::ringBroadcast(ctx, id, sizeof *id, ecclUint8, 0);
  };
  if (!tag.nccl) tag.nccl.reset(new transport::nccl::TagComm());
  return staging.withDevice([&] { return tag.nccl->run(**api, staging.device(), call); });
#else
  (void)req, (void)ctx, (void)tag;
  return error(ecclUnsupported, "this ECCL was built without NCCL (ECCL_WITH_NCCL)");
#endif
}

void Communicator::registerActive(Request& req) {
  const OpKey key{req.epoch, req.args().tag, req.seq};
  std::lock_guard<std::mutex> lock(opsMu_);
  active_[key] = std::shared_ptr<Request>(std::shared_ptr<Request>{}, &req);
  if (auto v = earlyVerdicts_.find(key); v != earlyVerdicts_.end()) {
    req.setVerdict(static_cast<ecclResult_t>(v->second.result), v->second.message);
    earlyVerdicts_.erase(v);
  } else if (!masterLost_.isOk()) {  // queued before the master went away
    req.setVerdict(masterLost_.code(), masterLost_.message());
  } else if (stopping_) {
    req.setVerdict(ecclInvalidUsage, "communicator destroyed");
  }
}

void Communicator::unregisterActive(const Request& req) {
  std::lock_guard<std::mutex> lock(opsMu_);
  active_.erase({req.epoch, req.args().tag, req.seq});
}

void Communicator::onVerdict(const wire::OpVerdict& v) {
  std::lock_guard<std::mutex> lock(opsMu_);
  const OpKey key{v.epoch, v.tag, v.seq};
  auto it = active_.find(key);
  if (it == active_.end()) {
    if (v.result != ecclSuccess) earlyVerdicts_[key] = v;  // the op has not started here yet
    return;
  }
  it->second->setVerdict(static_cast<ecclResult_t>(v.result), v.message);
  if (v.result != ecclSuccess) {
    std::lock_guard<std::mutex> view(viewMu_);
    interruptLinks();
  }
}

void Communicator::onMemberLost(const wire::MemberLost& m) {
  ECCL_LOG(kInfo, kComm, "peer {} left the group in epoch {}", m.peerId, m.epoch);
  std::lock_guard<std::mutex> setup(linkSetupMu_);
  if (m.epoch > lostEpoch_) lostPeers_.clear();
  if (m.epoch >= lostEpoch_) lostPeers_.insert(m.peerId);
  lostEpoch_ = std::max(lostEpoch_, m.epoch);
  if (settingUpEpoch_ != 0 && settingUpEpoch_ <= m.epoch) linkSetupCancel_.store(ecclPeerLost);
}

bool Communicator::peerLost(uint64_t epoch, uint64_t peer) {
  std::lock_guard<std::mutex> setup(linkSetupMu_);
  return lostEpoch_ == epoch && lostPeers_.count(peer) != 0;
}

void Communicator::reportStall(uint64_t epoch, uint32_t tag, uint64_t seq, uint64_t peer,
                               bool sending, std::chrono::milliseconds stuck) {
  ECCL_LOG(kWarn, kComm, "tag {} op #{}: {} peer {} for {} ms; told the master", tag, seq,
           sending ? "cannot send to" : "nothing from", peer, stuck.count());
  control_->send(wire::Suspect{epoch, tag, seq, peer,
                               static_cast<uint32_t>(std::min<int64_t>(stuck.count(), UINT32_MAX)),
                               sending});
}

void Communicator::onMasterLost(const Status& st) {
  std::lock_guard<std::mutex> lock(opsMu_);
  if (stopping_) return;
  ECCL_LOG(kError, kComm, "{}", st.message());
  masterLost_ = st;
  for (auto& [key, req] : active_) req->setVerdict(st.code(), st.message());
  {
    std::lock_guard<std::mutex> setup(linkSetupMu_);
    if (settingUpEpoch_ != 0) linkSetupCancel_.store(st.code());
  }
  std::lock_guard<std::mutex> view(viewMu_);
  interruptLinks();
}

void Communicator::setLastError(const std::string& message) {
  std::lock_guard<std::mutex> lock(errMu_);
  lastError_ = message;
}

std::string Communicator::lastError() const {
  std::lock_guard<std::mutex> lock(errMu_);
  return lastError_;
}

}  // namespace eccl::comm
