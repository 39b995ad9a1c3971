// The member's side of ecclCommOptimizeTopology (docs/topology.md): in each
// round of its plan it sends to its partner for the probe time while the
// partner sends to it, over a transfer channel of its own (authenticated
// like every data link), and measures what arrives.
#include <fmt/format.h>

#include <future>

#include "comm/communicator.h"
#include "common/log.h"

namespace eccl::comm {
namespace {

using transport::Clock;

constexpr uint32_t kProbeFrameBytes = 256u << 10;
// Streams of a probe link when the links find their own count: enough flows
// that a per-flow cap does not hide what the path carries.
constexpr uint32_t kProbeStreams = 8;

transport::FrameKey probeKey(const wire::ProbePlan& plan, uint32_t round, uint32_t frame) {
  return {0, plan.session, round, frame};
}

// Frames of kProbeFrameBytes until the partner has measured (it then closes
// the link, which ends the sends) or twice the probe time has passed; the
// last frame says so (count 1).
Status sendProbe(transport::Link& link, const wire::ProbePlan& plan, uint32_t round,
                 std::span<const std::byte> payload, transport::Deadline deadline,
                 const transport::CancelFlag& cancel) {
  wire::DataHeader h;
  h.kind = static_cast<uint8_t>(wire::OpKind::kProbe);
  h.epoch = plan.epoch;
  h.seq = plan.session;
  h.step = round;
  h.payloadBytes = static_cast<uint32_t>(payload.size());
  const auto start = Clock::now();
  const auto duration = 2 * std::chrono::milliseconds(plan.probeMs);
  for (uint32_t i = 0;; ++i) {
    const bool last = Clock::now() - start >= duration;
    h.segment = i;
    h.count = last ? 1 : 0;
    ECCL_RETURN_IF_ERROR(link.send(h, payload.data(), deadline, cancel, nullptr));
    if (last) return Status::ok();
  }
}

// Bytes/s of what arrives on `link` in the probe time after the first frame
// (not the bytes still queued behind it: the caller closes the link after).
// A link cut short by the deadline counts what came; nothing at all is 0.
Result<uint64_t> receiveProbe(transport::Link& link, const wire::ProbePlan& plan, uint32_t round,
                              Clock::time_point roundStart, transport::Deadline deadline,
                              const transport::CancelFlag& cancel) {
  link.setMaxFrameBytes(kProbeFrameBytes);
  Clock::time_point first{}, last{};
  uint64_t bytes = 0;  // after the first frame
  const auto window = std::chrono::milliseconds(plan.probeMs);
  for (uint32_t i = 0;; ++i) {
    Result<transport::Frame> f = link.recv(probeKey(plan, round, i), deadline, cancel);
    if (!f) {
      if (cancel.load(std::memory_order_acquire) != 0) return f.status();
      break;  // the partner stopped or was too slow: count what came
    }
    const auto now = Clock::now();
    const wire::DataHeader& h = f->header;
    if (h.kind != static_cast<uint8_t>(wire::OpKind::kProbe) || h.epoch != plan.epoch) {
      return error(ecclInvalidArgument, fmt::format("probe link from peer {} carried a frame of "
                                                    "another kind or epoch", link.remotePeer()));
    }
    if (i == 0) {
      first = now;
    } else {
      bytes += h.payloadBytes;
    }
    last = now;
    if (h.count != 0 || now - first >= window) break;
  }
  if (first == Clock::time_point{}) return uint64_t{0};
  if (bytes == 0) {  // one frame only: a lower bound
    const double s = std::chrono::duration<double>(last - roundStart).count();
    return static_cast<uint64_t>(kProbeFrameBytes / std::max(s, 1e-3));
  }
  const double s = std::chrono::duration<double>(last - first).count();
  return static_cast<uint64_t>(static_cast<double>(bytes) / std::max(s, 1e-6));
}

}  // namespace

wire::ProbeReport Communicator::runProbes(const wire::ProbePlan& plan) {
  wire::ProbeReport report{plan.epoch, plan.session, ecclSuccess, {}};
  const auto start = Clock::now();
  {
    // A member lost in this epoch (MemberLost) or a lost master stops the
    // probes, as it stops link setup. Losses reported before the plan came
    // are no reason to stop: the master probes the members it has.
    std::lock_guard<std::mutex> ops(opsMu_);
    std::lock_guard<std::mutex> setup(linkSetupMu_);
    settingUpEpoch_ = plan.epoch;
    linkSetupCancel_.store(masterLost_.isOk() ? 0 : masterLost_.code());
  }
  const uint32_t streams = options_.streams != 0 ? options_.streams : kProbeStreams;
  const std::vector<std::byte> payload(kProbeFrameBytes);
  for (uint32_t round = 0; round < plan.rounds.size(); ++round) {
    const wire::RingPeer& partner = plan.rounds[round];
    if (partner.peerId == 0) continue;
    const uint64_t channel = wire::probeChannel(plan.session, round);
    const auto roundStart = Clock::now();
    const transport::Deadline deadline = roundStart + std::chrono::milliseconds(plan.probeMs) +
                                         std::chrono::milliseconds(wire::kProbeRoundSlackMs);
    // Send while receiving; the outgoing link lives until the round ends.
    // Sends start once the partner's link to us is open too: its handshakes
    // must not queue behind our data on a slow path (a skewed window).
    std::promise<void> incoming;
    std::shared_future<void> incomingOpen = incoming.get_future().share();
    auto sender = std::async(std::launch::async, [&]() -> std::unique_ptr<transport::Link> {
      auto out = transport_->connectChannel({partner.peerId, partner.host, partner.port}, peerId_,
                                            plan.epoch, channel, deadline, linkSetupCancel_,
                                            streams);
      if (!out) {
        ECCL_LOG(kInfo, kComm, "probe round {}: cannot reach peer {}: {}", round, partner.peerId,
                 out.status().message());
        return nullptr;
      }
      incomingOpen.wait_until(deadline);
      // Normally ended by the partner closing the link once it has measured.
      if (Status st = sendProbe(**out, plan, round, payload, deadline, linkSetupCancel_);
          !st.isOk()) {
        ECCL_LOG(kDebug, kComm, "probe round {}: sending to peer {} ended: {}", round,
                 partner.peerId, st.message());
      }
      return std::move(*out);
    });
    Result<uint64_t> rate = uint64_t{0};
    auto in = transport_->acceptChannel(peerId_, partner.peerId, plan.epoch, channel, deadline,
                                        linkSetupCancel_);
    incoming.set_value();
    if (in) {
      rate = receiveProbe(**in, plan, round, roundStart, deadline, linkSetupCancel_);
      in->reset();  // ends the partner's sends
    } else {
      ECCL_LOG(kInfo, kComm, "probe round {}: peer {} did not reach this peer: {}", round,
               partner.peerId, in.status().message());
    }
    const std::unique_ptr<transport::Link> out = sender.get();
    if (const int cancel = linkSetupCancel_.load(std::memory_order_acquire); cancel != 0) {
      report.result = static_cast<uint32_t>(cancel);
      break;
    }
    if (!rate) {
      report.result = rate.status().code();
      ECCL_LOG(kWarn, kComm, "probe round {}: {}", round, rate.status().message());
      break;
    }
    report.rates.push_back({partner.peerId, *rate});
    ECCL_LOG(kInfo, kComm, "probe round {}: peer {} -> this peer: {:.1f} MB/s", round,
             partner.peerId, static_cast<double>(*rate) / 1e6);
  }
  {
    std::lock_guard<std::mutex> setup(linkSetupMu_);
    settingUpEpoch_ = 0;
  }
  ECCL_LOG(kInfo, kComm, "bandwidth probes: {} partners in {} ms", report.rates.size(),
           std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count());
  return report;
}

}  // namespace eccl::comm
