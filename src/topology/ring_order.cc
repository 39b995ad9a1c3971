#include "topology/ring_order.h"

#include <algorithm>
#include <numeric>
#include <random>

namespace eccl::topology {

RingScore score(const Matrix& bw, const std::vector<int>& ring) {
  RingScore s;
  if (ring.size() < 2) return s;
  s.bottleneck = bw[ring.back()][ring.front()];
  s.total = s.bottleneck;
  for (size_t k = 0; k + 1 < ring.size(); ++k) {
    const double b = bw[ring[k]][ring[k + 1]];
    s.bottleneck = std::min(s.bottleneck, b);
    s.total += b;
  }
  return s;
}

namespace {

std::vector<int> exact(const Matrix& bw) {
  std::vector<int> ring(bw.size());
  std::iota(ring.begin(), ring.end(), 0);
  std::vector<int> best = ring;
  RingScore bestScore = score(bw, ring);
  // Member 0 stays first: rotations of a ring are the same ring.
  while (std::next_permutation(ring.begin() + 1, ring.end())) {
    const RingScore s = score(bw, ring);
    if (bestScore < s) {
      bestScore = s;
      best = ring;
    }
  }
  return best;
}

// Greedy: from member 0, always on to the fastest unvisited member.
std::vector<int> greedy(const Matrix& bw) {
  const int n = static_cast<int>(bw.size());
  std::vector<int> ring{0};
  std::vector<bool> used(static_cast<size_t>(n), false);
  used[0] = true;
  while (static_cast<int>(ring.size()) < n) {
    int next = -1;
    for (int j = 0; j < n; ++j) {
      if (!used[static_cast<size_t>(j)] && (next < 0 || bw[ring.back()][j] > bw[ring.back()][next])) next = j;
    }
    used[static_cast<size_t>(next)] = true;
    ring.push_back(next);
  }
  return ring;
}

// Local search until no move improves: moving a run of 1..3 members elsewhere
// (Or-opt, direction kept, which matters on asymmetric paths) and reversing a
// run (2-opt).
using Clock = std::chrono::steady_clock;

void improve(const Matrix& bw, std::vector<int>& ring, Clock::time_point giveUp) {
  const int n = static_cast<int>(ring.size());
  RingScore current = score(bw, ring);
  for (bool better = true; better && Clock::now() < giveUp;) {
    better = false;
    for (int len = 1; len <= 3 && !better; ++len) {
      for (int i = 1; i + len <= n && !better; ++i) {
        for (int at = 1; at <= n - len && !better; ++at) {
          if (at == i) continue;
          std::vector<int> cand(ring);
          std::vector<int> run(cand.begin() + i, cand.begin() + i + len);
          cand.erase(cand.begin() + i, cand.begin() + i + len);
          cand.insert(cand.begin() + at, run.begin(), run.end());
          if (const RingScore s = score(bw, cand); current < s) {
            ring = std::move(cand);
            current = s;
            better = true;
          }
        }
      }
    }
    for (int i = 1; i < n && !better; ++i) {
      for (int j = i + 1; j < n && !better; ++j) {
        std::vector<int> cand(ring);
        std::reverse(cand.begin() + i, cand.begin() + j + 1);
        if (const RingScore s = score(bw, cand); current < s) {
          ring = std::move(cand);
          current = s;
          better = true;
        }
      }
    }
  }
}

std::vector<int> search(const Matrix& bw, const SolveOptions& options) {
  const Clock::time_point giveUp = Clock::now() + options.budget;
  std::vector<int> identity(bw.size());
  std::iota(identity.begin(), identity.end(), 0);
  std::vector<int> best = identity;
  improve(bw, best, giveUp);
  std::vector<int> g = greedy(bw);
  improve(bw, g, giveUp);
  if (score(bw, best) < score(bw, g)) best = g;
  // Random restarts while the budget lasts.
  std::mt19937_64 rng(options.seed);
  while (Clock::now() < giveUp) {
    std::vector<int> r = identity;
    std::shuffle(r.begin() + 1, r.end(), rng);
    improve(bw, r, giveUp);
    if (score(bw, best) < score(bw, r)) best = std::move(r);
  }
  return best;
}

}  // namespace

std::vector<int> bestRing(const Matrix& bw, const SolveOptions& options) {
  const int n = static_cast<int>(bw.size());
  if (n <= 2) {
    std::vector<int> ring(static_cast<size_t>(n));
    std::iota(ring.begin(), ring.end(), 0);
    return ring;
  }
  if (n <= kExactUpTo && !options.forceSearch) return exact(bw);
  return search(bw, options);
}

}  // namespace eccl::topology
