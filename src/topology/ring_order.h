// Ring order from measured bandwidths (issue 11, item 3): an asymmetric
// travelling-salesman problem whose objective is the ring's bottleneck (a
// ring all-reduce runs at the pace of its slowest hop), then its total.
// Pure functions, tested against brute force.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

namespace eccl::topology {

// bw[i][j]: bytes/s measured from member i to member j; 0 = cannot reach.
using Matrix = std::vector<std::vector<double>>;

struct RingScore {
  double bottleneck = 0.0;  // the slowest hop
  double total = 0.0;       // all hops
  bool operator<(const RingScore& o) const {
    return bottleneck != o.bottleneck ? bottleneck < o.bottleneck : total < o.total;
  }
};

// The score of `ring` (member indices in ring order; member ring[k] sends to
// ring[k+1], the last to the first).
RingScore score(const Matrix& bw, const std::vector<int>& ring);

// Worlds up to this size are solved exactly (every ring is tried).
inline constexpr int kExactUpTo = 9;

struct SolveOptions {
  std::chrono::milliseconds budget{200};  // for the search beyond kExactUpTo
  uint64_t seed = 1;                      // restarts are random but repeatable
  bool forceSearch = false;               // tests: search even where exact is possible
};

// The best ring found: starts with member 0, never scores below the identity
// (admission) order, and has no unreachable hop when some ring has none.
std::vector<int> bestRing(const Matrix& bw, const SolveOptions& options = {});

}  // namespace eccl::topology
