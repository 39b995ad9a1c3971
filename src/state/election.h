// The master's choice of the shared state a sync makes every member hold
// (docs/state.md, "Election"): socket-free, so every rule is unit tested.
//
// Given each member's manifest (revision, strategy, tensor entries) and the
// revision of its last successful sync (none for a first sync), elect()
// decides the group's new revision and, per member: refused
// (ecclStateMismatch, with a message naming the peer and the tensor or the
// revisions), or the tensors it must fetch with the elected hashes and the
// peers to fetch them from, and the peers it serves.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "common/status.h"
#include "wire/control.h"

namespace eccl::state {

struct Manifest {
  uint64_t peerId = 0;
  std::optional<uint64_t> lastRevision;  // none: this member never synced
  uint64_t revision = 0;
  ecclSyncStrategy_t strategy = ecclSyncEnforcePopular;
  std::vector<wire::SyncEntry> entries;
};

struct Assignment {
  Status status;                     // ok, or why this member is refused
  std::vector<wire::SyncFetch> fetch;  // indices into its manifest, elected hashes
  std::vector<uint64_t> sources;     // at most maxSources, rotated per receiver
  std::vector<uint64_t> receivers;   // the members this one serves
};

struct Election {
  uint64_t revision = 0;                     // the group's revision after the sync
  std::map<uint64_t, Assignment> byPeer;     // every member of the input
};

Election elect(const std::vector<Manifest>& members, size_t maxSources);

}  // namespace eccl::state
