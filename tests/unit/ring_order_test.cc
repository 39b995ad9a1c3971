// Ring order from a bandwidth matrix: the exact solver against an independent
// brute force, the search against the exact answer, and the cases the
// topology optimizer must get right.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <numeric>
#include <cstdio>
#include <random>

#include "topology/ring_order.h"

namespace eccl::topology {
namespace {

Matrix randomMatrix(int n, std::mt19937& rng, double unreachable = 0.0) {
  std::uniform_real_distribution<double> rate(1e6, 1e9);
  std::bernoulli_distribution cut(unreachable);
  Matrix bw(static_cast<size_t>(n), std::vector<double>(static_cast<size_t>(n), 0.0));
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      if (i != j) bw[i][j] = cut(rng) ? 0.0 : rate(rng);
    }
  }
  return bw;
}

// Every ring, every starting member: the best score there is.
RingScore bruteForce(const Matrix& bw) {
  std::vector<int> p(bw.size());
  std::iota(p.begin(), p.end(), 0);
  RingScore best = score(bw, p);
  do {
    const RingScore s = score(bw, p);
    if (best < s) best = s;
  } while (std::next_permutation(p.begin(), p.end()));
  return best;
}

bool isRing(const std::vector<int>& ring, size_t n) {
  std::vector<int> sorted(ring);
  std::sort(sorted.begin(), sorted.end());
  std::vector<int> all(n);
  std::iota(all.begin(), all.end(), 0);
  return sorted == all && (ring.empty() || ring.front() == 0);
}

TEST(RingOrder, ScoreIsTheSlowestHopThenTheSum) {
  const Matrix bw{{0, 5, 1}, {2, 0, 7}, {3, 4, 0}};
  const RingScore s = score(bw, {0, 1, 2});  // 0->1 5, 1->2 7, 2->0 3
  EXPECT_EQ(s.bottleneck, 3);
  EXPECT_EQ(s.total, 15);
  const RingScore r = score(bw, {0, 2, 1});  // 0->2 1, 2->1 4, 1->0 2
  EXPECT_EQ(r.bottleneck, 1);
  EXPECT_TRUE(r < s);
}

TEST(RingOrder, ExactMatchesBruteForceUpToNineMembers) {
  std::mt19937 rng(7);
  for (int n = 3; n <= kExactUpTo; ++n) {
    for (int trial = 0; trial < (n <= 7 ? 30 : 5); ++trial) {
      const Matrix bw = randomMatrix(n, rng, trial % 3 == 0 ? 0.3 : 0.0);
      const std::vector<int> ring = bestRing(bw);
      ASSERT_TRUE(isRing(ring, static_cast<size_t>(n)));
      const RingScore got = score(bw, ring), want = bruteForce(bw);
      EXPECT_EQ(got.bottleneck, want.bottleneck) << "n " << n << " trial " << trial;
      EXPECT_DOUBLE_EQ(got.total, want.total) << "n " << n << " trial " << trial;
    }
  }
}

TEST(RingOrder, SearchFindsTheBestBottleneckAndNeverLosesToAdmissionOrder) {
  std::mt19937 rng(11);
  int exactBottleneck = 0, cases = 0;
  for (int n = 3; n <= kExactUpTo; ++n) {
    for (int trial = 0; trial < 20; ++trial, ++cases) {
      const Matrix bw = randomMatrix(n, rng);
      SolveOptions o;
      o.forceSearch = true;
      o.budget = std::chrono::milliseconds(5);
      const std::vector<int> ring = bestRing(bw, o);
      ASSERT_TRUE(isRing(ring, static_cast<size_t>(n)));
      std::vector<int> identity(static_cast<size_t>(n));
      std::iota(identity.begin(), identity.end(), 0);
      EXPECT_FALSE(score(bw, ring) < score(bw, identity));
      if (score(bw, ring).bottleneck == bruteForce(bw).bottleneck) ++exactBottleneck;
    }
  }
  // A heuristic, but on worlds this small it should all but always find it.
  EXPECT_GE(exactBottleneck * 100, cases * 95) << exactBottleneck << " of " << cases;
  std::printf("search found the best bottleneck in %d of %d worlds\n", exactBottleneck, cases);
}

TEST(RingOrder, AvoidsSlowPairsThatAdmissionOrderMakesNeighbours) {
  // 4 hosts at 1 Gbit/s; 0->1 and 2->3 (neighbours in admission order) 10x slower.
  Matrix bw(4, std::vector<double>(4, 125e6));
  for (int i = 0; i < 4; ++i) bw[i][i] = 0;
  bw[0][1] = bw[2][3] = 12.5e6;
  const std::vector<int> ring = bestRing(bw);
  EXPECT_EQ(score(bw, ring).bottleneck, 125e6);
  EXPECT_EQ(score(bw, {0, 1, 2, 3}).bottleneck, 12.5e6);
}

TEST(RingOrder, NeverMakesUnreachablePairsNeighboursWhenItCanAvoidIt) {
  std::mt19937 rng(3);
  for (int n : {5, 8, 12, 20}) {
    Matrix bw = randomMatrix(n, rng);
    // Member 1 cannot reach member 2, 2 cannot reach 3 (say, firewalls).
    bw[1][2] = bw[2][3] = 0;
    const std::vector<int> ring = bestRing(bw);
    ASSERT_TRUE(isRing(ring, static_cast<size_t>(n)));
    EXPECT_GT(score(bw, ring).bottleneck, 0.0) << n;
  }
}

TEST(RingOrder, LargeWorldsStayWithinTheBudget) {
  std::mt19937 rng(5);
  const Matrix bw = randomMatrix(64, rng);
  SolveOptions o;
  o.budget = std::chrono::milliseconds(300);
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int> ring = bestRing(bw, o);
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(isRing(ring, 64));
  std::vector<int> identity(64);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_FALSE(score(bw, ring) < score(bw, identity));
  // One improvement pass may overrun the budget a little, never by much.
  EXPECT_LT(took, std::chrono::seconds(3));
}

}  // namespace
}  // namespace eccl::topology
