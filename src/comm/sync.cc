// The peer's side of a shared-state sync (docs/state.md): hash, send the
// manifest, wait for the master's plan, fetch or serve over transfer
// channels, report, and wait for this member's verdict.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <future>
#include <thread>

#include "comm/communicator.h"
#include "common/dtype.h"
#include "common/log.h"
#include "cuda/device.h"
#include "state/hash.h"
#include "state/transfer.h"

namespace eccl::comm {
namespace {

using transport::Clock;

struct Plan {
  wire::SyncPlan head;  // part 0 (message and peer lists)
  std::vector<wire::SyncFetch> fetch;
};

// The tensors compared between members, in the elected state's order (by
// name): their place there is how requests name them.
std::vector<uint32_t> electedOrder(const ecclSharedState_t& s) {
  std::vector<uint32_t> order;
  for (uint32_t i = 0; i < s.tensorCount; ++i) {
    if (s.tensors[i].allowDivergence == 0) order.push_back(i);
  }
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    return std::string_view(s.tensors[a].name) < std::string_view(s.tensors[b].name);
  });
  return order;
}

size_t bytesOf(const ecclTensorInfo_t& t) { return t.count * dtypeSize(t.dtype); }

// The CUDA tensors of a shared state, mirrored in pinned host memory: the
// sync hashes, serves and fetches the mirrors, and only the tensors it
// fetched go back to the device, after a successful sync (a failed one
// leaves the device tensors as they were).
class DeviceMirrors {
 public:
  // `shadow` (backed by `tensors`): `state` with the mirrors, carved from
  // `area`'s pinned buffer (kept for the next sync), in place of the device
  // tensors.
  Status copyIn(const ecclSharedState_t& state, StagingArea& area, ecclSharedState_t* shadow,
                std::vector<ecclTensorInfo_t>* tensors) {
    Result<cuda::Device*> found = cuda::device();
    if (!found) return found.status();
    dev_ = *found;
    tensors->assign(state.tensors, state.tensors + state.tensorCount);
    auto onDevice = [](const ecclTensorInfo_t& t) { return t.memType == ecclMemCuda && bytesOf(t) > 0; };
    size_t total = 0;
    for (const ecclTensorInfo_t& t : *tensors) {
      if (onDevice(t)) total += (bytesOf(t) + 63) / 64 * 64;
    }
    Result<void*> block = area.hostBuffer(dev_, total);
    if (!block) return block.status();
    auto* next = static_cast<std::byte*>(*block);
    for (uint32_t i = 0; i < tensors->size(); ++i) {
      ecclTensorInfo_t& t = (*tensors)[i];
      if (!onDevice(t)) continue;
      Result<int> device = dev_->deviceOf(t.data, bytesOf(t));  // (checked by the API)
      if (!device) return device.status();
      mirrors_.push_back({i, t.data, next, bytesOf(t), *device});
      ECCL_RETURN_IF_ERROR(cuda::copyAndWait(*dev_, *device, next, t.data, bytesOf(t)));
      t.data = next;
      t.memType = ecclMemHost;
      next += (bytesOf(t) + 63) / 64 * 64;
    }
    *shadow = state;
    shadow->tensors = tensors->data();
    return Status::ok();
  }

  Status copyOut(const std::vector<uint32_t>& fetched) {
    for (const Mirror& m : mirrors_) {
      if (std::find(fetched.begin(), fetched.end(), m.index) == fetched.end()) continue;
      ECCL_RETURN_IF_ERROR(cuda::copyAndWait(*dev_, m.device, m.tensor, m.host, m.bytes));
    }
    return Status::ok();
  }

 private:
  struct Mirror {
    uint32_t index;  // in the state
    void* tensor;
    void* host;
    size_t bytes;
    int device;
  };
  cuda::Device* dev_ = nullptr;
  std::vector<Mirror> mirrors_;
};

}  // namespace

Status Communicator::runSync(Request& req, StagingArea& area) {
  SyncArgs& args = *req.args().sync;
  ecclSharedState_t& state = *args.state;
  const bool onDevice = std::any_of(state.tensors, state.tensors + state.tensorCount,
                                    [](const ecclTensorInfo_t& t) { return t.memType == ecclMemCuda; });
  if (!onDevice) return syncState(req, args, nullptr);
  DeviceMirrors mirrors;
  ecclSharedState_t shadow;
  std::vector<ecclTensorInfo_t> tensors;
  // A device error here (rare: the API checked the pointers) keeps this member
  // out of the sync; the others then fail it at the master's op deadline.
  ECCL_RETURN_IF_ERROR(mirrors.copyIn(state, area, &shadow, &tensors));
  SyncArgs onHost{&shadow, args.strategy, args.info};
  std::vector<uint32_t> fetched;
  Status st = syncState(req, onHost, &fetched);
  if (st.isOk()) st = mirrors.copyOut(fetched);
  // Stale device tensors keep the old revision: the next sync repairs them.
  if (st.isOk()) state.revision = shadow.revision;
  return st;
}

Status Communicator::syncState(Request& req, SyncArgs& args, std::vector<uint32_t>* fetched) {
  ecclSharedState_t& state = *args.state;
  const auto start = Clock::now();
  std::vector<wire::RingPeer> ring;
  uint32_t segment = 0;
  {
    std::lock_guard<std::mutex> lock(viewMu_);
    ring = ring_;
    segment = segmentBytes_;
  }
  registerActive(req);
  control_->send(wire::OpBegin{req.epoch, wire::kSyncTag, req.seq, req.args().descriptor()});

  // 1. Hash and send the manifest.
  std::vector<state::HashJob> jobs;
  for (size_t i = 0; i < state.tensorCount; ++i) {
    const ecclTensorInfo_t& t = state.tensors[i];
    jobs.push_back({t.data, t.allowDivergence != 0 ? 0 : bytesOf(t), 0});
  }
  state::hashAll(jobs);
  std::vector<wire::SyncEntry> entries;
  for (size_t i = 0; i < state.tensorCount; ++i) {
    const ecclTensorInfo_t& t = state.tensors[i];
    entries.push_back({t.name, static_cast<uint8_t>(t.dtype), t.count,
                       t.allowDivergence != 0 ? 0 : jobs[i].hash, t.allowDivergence != 0});
  }
  for (auto& part : wire::splitManifest(req.epoch, req.seq, state.revision,
                                        static_cast<uint8_t>(args.strategy), entries)) {
    control_->send(std::move(part));
  }

  // 2. The plan, in parts; a failure verdict (cancel) ends the wait.
  Plan plan;
  uint32_t parts = 0, want = 1;
  Status local;
  while (parts < want) {
    if (int c = req.cancel.load(std::memory_order_acquire); c != 0) {
      local = error(static_cast<ecclResult_t>(c), "the sync was aborted while waiting for its plan");
      break;
    }
    Result<wire::ControlMessage> m =
        control_->await(wire::MsgType::kSyncPlan, Clock::now() + std::chrono::milliseconds(50));
    if (!m) {
      if (m.status().code() == ecclTimeout) continue;
      local = m.status();
      break;
    }
    const auto& p = std::get<wire::SyncPlan>(*m);
    if (p.epoch != req.epoch || p.seq != req.seq) continue;  // of an earlier, failed sync
    if (p.part == 0) plan.head = p;
    want = p.parts;
    plan.fetch.insert(plan.fetch.end(), p.fetch.begin(), p.fetch.end());
    ++parts;
  }
  if (local.isOk() && plan.head.result != ecclSuccess) {
    local = error(static_cast<ecclResult_t>(plan.head.result), plan.head.message);
  }

  // 3. Transfers: fetch what differs, serve who asks.
  state::TransferContext tctx;
  tctx.epoch = req.epoch;
  tctx.group = options_.peerGroup;
  tctx.chunkBytes = segment;
  tctx.progressTimeout = options_.opTimeout;
  tctx.stallReport = std::max(std::chrono::milliseconds(1), options_.failureTimeout / 2);
  tctx.onStall = [&](uint64_t peer, bool sending, std::chrono::milliseconds stuck) {
    reportStall(req.epoch, wire::kSyncTag, req.seq, peer, sending, stuck);
  };
  tctx.isLost = [&](uint64_t peer) { return peerLost(req.epoch, peer); };
  tctx.cancel = &req.cancel;
  auto endpoint = [&](uint64_t peer) -> std::optional<transport::Endpoint> {
    for (const wire::RingPeer& r : ring) {
      if (r.peerId == peer) return transport::Endpoint{r.peerId, r.host, r.port};
    }
    return std::nullopt;
  };
  const auto deadline = Clock::now() + options_.opTimeout;
  // Opens a transfer channel to or from `peer` in attempts of at most a stall
  // report each, so that a peer the master removed meanwhile (dead: nobody
  // listens, or it never dials) ends the wait at once, not at the op deadline.
  using LinkResult = Result<std::unique_ptr<transport::Link>>;
  auto openChannel = [&](uint64_t peer, const std::function<LinkResult(Clock::time_point)>& attempt) {
    for (;;) {
      LinkResult r = attempt(std::min(deadline, Clock::now() + tctx.stallReport));
      if (r) return r;
      const ecclResult_t code = r.status().code();
      const bool final = code == ecclAuthFailed || code == ecclVersionMismatch || code == ecclInvalidUsage;
      if (final || Clock::now() >= deadline || req.cancel.load(std::memory_order_acquire) != 0) return r;
      if (peerLost(req.epoch, peer)) {
        return LinkResult(error(ecclPeerLost, fmt::format("the master removed peer {} ({})", peer,
                                                          r.status().message())));
      }
    }
  };
  const uint64_t reqChannel = wire::syncChannel(req.seq, wire::SyncDirection::kRequests);
  const uint64_t dataChannel = wire::syncChannel(req.seq, wire::SyncDirection::kData);
  const std::vector<uint32_t> order = electedOrder(state);
  std::vector<state::Served> served;
  for (uint32_t i : order) served.push_back({static_cast<const std::byte*>(state.tensors[i].data),
                                             bytesOf(state.tensors[i])});
  // Sources serve on their own threads, while a receiver fetches here.
  std::vector<std::future<void>> serving;
  std::atomic<uint64_t> bytesServed{0};
  if (local.isOk()) {
    for (uint64_t r : plan.head.receivers) {
      const auto to = endpoint(r);
      if (!to) continue;
      serving.push_back(std::async(std::launch::async, [&, r, to] {
        auto in = openChannel(r, [&](Clock::time_point until) {
          return transport_->acceptChannel(peerId_, r, req.epoch, reqChannel, until, req.cancel);
        });
        auto out = in ? openChannel(r, [&](Clock::time_point until) {
          return transport_->connectChannel(*to, peerId_, req.epoch, dataChannel, until, req.cancel);
        })
                      : LinkResult(in.status());
        Result<uint64_t> sent = out ? state::serve(tctx, r, served, **in, **out) : out.status();
        if (sent) bytesServed += *sent;
        if (!sent) {  // the receiver's problem (it reports it); our state is fine
          ECCL_LOG(kWarn, kComm, "serving peer {} its shared state stopped: {}", r,
                   sent.status().message());
        }
      }));
    }
  }
  state::FetchStats stats;
  if (local.isOk() && !plan.fetch.empty()) {
    std::vector<std::unique_ptr<transport::Link>> held;
    std::vector<state::SourceLinks> links;
    for (uint64_t src : plan.head.sources) {
      const auto from = endpoint(src);
      if (!from) continue;
      auto out = openChannel(src, [&](Clock::time_point until) {
        return transport_->connectChannel(*from, peerId_, req.epoch, reqChannel, until, req.cancel);
      });
      if (!out) {
        ECCL_LOG(kWarn, kComm, "shared-state source {} unreachable: {}", src, out.status().message());
        continue;
      }
      auto in = openChannel(src, [&](Clock::time_point until) {
        return transport_->acceptChannel(peerId_, src, req.epoch, dataChannel, until, req.cancel);
      });
      if (!in) {
        ECCL_LOG(kWarn, kComm, "shared-state source {} did not open its data channel: {}", src,
                 in.status().message());
        continue;
      }
      links.push_back({src, out->get(), in->get()});
      held.push_back(std::move(*out));
      held.push_back(std::move(*in));
    }
    // My tensor index -> its place in the elected order.
    std::vector<uint32_t> placeOf(state.tensorCount, 0);
    for (uint32_t k = 0; k < order.size(); ++k) placeOf[order[k]] = k;
    std::vector<state::Target> targets;
    for (const wire::SyncFetch& f : plan.fetch) {
      if (f.index >= state.tensorCount) {
        local = error(ecclInternalError, fmt::format("the plan names tensor #{} of {}", f.index,
                                                     state.tensorCount));
        break;
      }
      ecclTensorInfo_t& t = state.tensors[f.index];
      targets.push_back({placeOf[f.index], static_cast<std::byte*>(t.data), bytesOf(t), f.hash});
    }
    if (local.isOk()) {
      local = links.empty() ? error(ecclPeerLost, "no source of the shared state could be reached")
                            : state::fetch(tctx, targets, links, &stats);
    }
  }
  for (auto& f : serving) f.wait();

  // 4. Report, and wait for this member's verdict.
  control_->send(wire::OpDone{req.epoch, wire::kSyncTag, req.seq,
                              static_cast<uint32_t>(local.code()), local.message()});
  const Status verdict = req.awaitVerdict();
  unregisterActive(req);
  const Status result = !local.isOk() ? local : verdict;
  if (args.info != nullptr) {
    ecclSyncInfo_t& info = *args.info;
    info.bytesReceived = stats.bytesReceived;
    info.bytesSent = bytesServed.load();
    info.revision = result.isOk() ? plan.head.revision : state.revision;
    info.tensorsFetched = result.isOk() ? static_cast<uint32_t>(plan.fetch.size()) : 0;
    info.sourcesUsed = 0;
    info.sourcesLost = stats.sourcesLost;
    for (const auto& [peer, bytes] : stats.bytesFrom) {
      if (info.sourcesUsed < ECCL_SYNC_MAX_SOURCES && bytes > 0) {
        info.sourcePeers[info.sourcesUsed] = peer;
        info.bytesFromSource[info.sourcesUsed] = bytes;
        ++info.sourcesUsed;
      }
    }
    info.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  }
  if (result.isOk()) state.revision = plan.head.revision;
  if (result.isOk() && fetched != nullptr) {
    for (const wire::SyncFetch& f : plan.fetch) fetched->push_back(f.index);
  }
  return result;
}

}  // namespace eccl::comm
