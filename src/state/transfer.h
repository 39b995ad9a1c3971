// Striped shared-state transfers over the data transport (docs/state.md,
// "Transfers"), written against transport::Link only.
//
// A receiver fetches its dirty tensors from several sources at once. Per
// source it holds two links: requests (it dials the source) and data (the
// source dials it), so each link has one writer. The tensors are cut into
// chunks of at most `chunkBytes`. The first chunks are striped round-robin
// over the sources (a window's worth each), the rest wait in a shared queue;
// one worker per source takes its stripe, then the next queued chunk, keeps
// up to kWindow requests outstanding and writes each arriving chunk in place,
// so every source carries a share and a fast one carries more. When a tensor's last chunk lands its hash is checked: a mismatch puts
// all its chunks back (at most kMaxRefetches times, then ecclStateMismatch).
// A source whose link breaks, that the master removed (isLost), or that
// stalls past the progress timeout hands its outstanding chunks back to the
// others; with no source left the fetch fails with ecclPeerLost. Tensors being fetched then hold a mix of old and new
// chunks.
//
// A source serves one receiver per call: it answers requests in order until
// the receiver says it is done (or the op is cancelled), checking each
// request against its tensors.
//
// Frames: kind kSync on the channel links, tag wire::kSyncTag, seq 0 (the
// channel names the op), step = the request's number on that link.
//
// Thread safety: fetch() runs its own threads and returns when they ended;
// the links must outlive the call. serve() runs on the calling thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include "common/status.h"
#include "transport/transport.h"

namespace eccl::state {

inline constexpr size_t kWindow = 4;
inline constexpr int kMaxRefetches = 2;

struct TransferContext {
  uint64_t epoch = 0;
  uint32_t group = 0;
  size_t chunkBytes = 1 << 20;  // at most the group's segment size
  std::chrono::milliseconds progressTimeout{60000};  // per chunk waited for
  std::chrono::milliseconds stallReport{1000};
  // Reports a stall (every stallReport while it lasts): nothing from a source
  // (sending false), or a receiver that takes no data (sending true). A source
  // waiting for requests is idle, not stalled: not reported.
  std::function<void(uint64_t peer, bool sending, std::chrono::milliseconds stuck)> onStall;
  // Whether the master removed `peer` (checked every stallReport while
  // waiting on it): a lost source's chunks go to the others at once.
  std::function<bool(uint64_t peer)> isLost;
  const transport::CancelFlag* cancel = nullptr;
};

// A tensor to fetch: where it goes, and the elected content's hash.
struct Target {
  uint32_t tensor = 0;  // its place in the elected state (sorted by name)
  std::byte* data = nullptr;
  size_t bytes = 0;
  uint64_t hash = 0;
};

struct SourceLinks {
  uint64_t peer = 0;
  transport::Link* requests = nullptr;  // receiver -> source
  transport::Link* data = nullptr;      // source -> receiver
};

struct FetchStats {
  uint64_t bytesReceived = 0;  // chunk payloads, refetches included
  std::map<uint64_t, uint64_t> bytesFrom;  // by source peer
  uint32_t refetches = 0;  // tensors whose hash did not match at first
  uint32_t sourcesLost = 0;  // sources whose links broke or stalled mid-transfer
};

Status fetch(const TransferContext& ctx, std::span<const Target> targets,
             std::span<const SourceLinks> sources, FetchStats* stats);

// What a source serves: its tensors by their place in the elected state.
struct Served {
  const std::byte* data = nullptr;
  size_t bytes = 0;
};

// Answers `receiver`'s requests until it is done. Returns the bytes sent.
Result<uint64_t> serve(const TransferContext& ctx, uint64_t receiver,
                       std::span<const Served> tensors, transport::Link& requests,
                       transport::Link& data);

// For tests: called on every chunk a source sends, on a copy of its bytes
// (never the source's tensor), so a test can corrupt a transfer in flight.
// nullptr (the default) turns it off. Not thread-safe to change while
// transfers run.
using ChunkHook = std::function<void(uint32_t tensor, uint64_t offset, std::span<std::byte> bytes)>;
void setChunkHookForTesting(ChunkHook hook);

}  // namespace eccl::state
