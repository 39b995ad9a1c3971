// All-reduce and broadcast with payload codecs (docs/codecs.md) on a master
// and N peer threads over loopback: every member ends with the same bytes,
// the quantized result is within the bound that follows from the per-hop
// error, wire bytes shrink as the format says, and peers that disagree about
// the codec all get ecclInvalidUsage instead of a hang.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/half.h"
#include "support/peers.h"

namespace eccl::test {
namespace {

constexpr ecclQuantization_t kCodecs[] = {ecclQuantFloat16, ecclQuantBfloat16, ecclQuantUint8,
                                          ecclQuantUint4};

// Rank r's input: normal(0, 1) values, the same in every process.
std::vector<float> inputOf(int rank, size_t count, uint32_t salt) {
  std::vector<float> v(count);
  std::mt19937 rng(static_cast<uint32_t>(rank) * 7919u + salt);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (float& x : v) x = d(rng);
  return v;
}

// Error of one encode to nearest relative to the largest magnitude M it sees:
// uint8 and uint4 are within half a scale, scale <= 2M / levels; 16-bit
// floats within half an ulp, <= M * 2^-11 (float16) or 2^-8 (bfloat16).
double unitError(ecclQuantization_t q) {
  switch (q) {
    case ecclQuantFloat16: return 0x1p-11;
    case ecclQuantBfloat16: return 0x1p-8;
    case ecclQuantUint8: return 1.0 / 255;
    case ecclQuantUint4: return 1.0 / 15;
    default: return 0;
  }
}

// Results of every rank under one name, compared byte for byte at the end.
struct Shared {
  std::mutex mu;
  std::map<std::string, std::map<int, std::vector<std::byte>>> byName;
  void put(const std::string& name, int rank, const void* p, size_t bytes) {
    const auto* b = static_cast<const std::byte*>(p);
    std::lock_guard<std::mutex> lock(mu);
    byName[name][rank].assign(b, b + bytes);
  }
  void expectIdentical(int world) {
    EXPECT_FALSE(byName.empty());
    for (const auto& [name, ranks] : byName) {
      ASSERT_EQ(ranks.size(), static_cast<size_t>(world)) << name;
      for (const auto& [rank, bytes] : ranks) {
        EXPECT_TRUE(bytes == ranks.begin()->second) << name << ": rank " << rank << " differs";
      }
    }
  }
};

ecclOpOptions_t optionsFor(ecclQuantization_t q, bool stochastic, uint32_t tag) {
  ecclOpOptions_t o = ECCL_OP_OPTIONS_INIT;
  o.quantization = q;
  o.rounding = stochastic ? ecclRoundStochastic : ecclRoundNearest;
  o.tag = tag;
  return o;
}

class CodecWorld : public ::testing::TestWithParam<int> {};

// Every codec, nearest and stochastic: an in-place sum on tag 1 and an
// out-of-place average on tag 2 at the same time, then a broadcast.
TEST_P(CodecWorld, AllReduceAndBroadcastEveryCodec) {
  const int n = GetParam();
  const size_t count = 10007;  // not a multiple of the block, chunks of unequal size
  Shared shared;
  // The exact sums and the largest input magnitude, from every rank's input.
  std::vector<double> exact(count, 0.0);
  double m = 0;
  for (int r = 0; r < n; ++r) {
    const std::vector<float> in = inputOf(r, count, 1);
    for (size_t i = 0; i < count; ++i) {
      exact[i] += in[i];
      m = std::max(m, static_cast<double>(std::fabs(in[i])));
    }
  }
  spawnPeers(n, [&](ecclComm_t comm) {
    const int rank = rankOf(comm);
    for (ecclQuantization_t q : kCodecs) {
      for (bool stochastic : {false, true}) {
        const std::string name = std::string(quantName(q)) + (stochastic ? "/stochastic" : "");
        SCOPED_TRACE(name + " rank " + std::to_string(rank));
        const std::vector<float> input = inputOf(rank, count, 1);
        std::vector<float> sum = input, avg(count, -1.0f);
        ecclOpOptions_t o1 = optionsFor(q, stochastic, 1), o2 = optionsFor(q, stochastic, 2);
        ecclRequest_t r1 = nullptr, r2 = nullptr;
        ASSERT_EQ(ecclAllReduceAsync(sum.data(), sum.data(), count, ecclFloat32, ecclSum, &o1,
                                     comm, &r1), ecclSuccess) << ecclGetLastError(comm);
        ASSERT_EQ(ecclAllReduceAsync(input.data(), avg.data(), count, ecclFloat32, ecclAvg, &o2,
                                     comm, &r2), ecclSuccess) << ecclGetLastError(comm);
        ecclOpInfo_t info = ECCL_OP_INFO_INIT;
        ASSERT_EQ(ecclWait(r1, &info), ecclSuccess) << ecclGetLastError(comm);
        ASSERT_EQ(ecclWait(r2, nullptr), ecclSuccess) << ecclGetLastError(comm);
        shared.put(name + " sum", rank, sum.data(), count * 4);
        shared.put(name + " avg", rank, avg.data(), count * 4);

        // Hop k encodes a partial sum of k inputs (|x| <= kM), the owner the
        // full sum once more: sum over hops of unit * k * M.
        // (Stochastic rounding lands on either neighbour: up to a full step.)
        const double u = unitError(q) * (stochastic ? 2 : 1);
        const double sumBound = u * m * (n * (n - 1) / 2.0 + n) + 1e-5 * n * n * m;
        const double avgBound = u * m * ((n - 1) / 2.0 + 1) + 1e-5 * n * m;
        for (size_t i = 0; i < count; ++i) {
          ASSERT_LE(std::fabs(sum[i] - exact[i]), sumBound) << "sum element " << i;
          ASSERT_LE(std::fabs(avg[i] - exact[i] / n), avgBound) << "avg element " << i;
        }
        // What crossed the wire: the encoded size, a fraction of the logical bytes.
        EXPECT_GT(info.logicalBytesSent, 0u);
        const double ratio = static_cast<double>(info.bytesSent) / info.logicalBytesSent;
        const double want = q == ecclQuantUint8 ? 1.03 / 4 : q == ecclQuantUint4 ? 0.53 / 4 : 0.5;
        EXPECT_NEAR(ratio, want, 0.02);
        // (Chunks differ by one element at most: so do the bytes of each step.)
        EXPECT_NEAR(static_cast<double>(info.logicalBytesReceived),
                    static_cast<double>(info.logicalBytesSent), 2.0 * (n - 1) * 4);

        // Broadcast: the root's buffer becomes the decoded value too.
        const int root = static_cast<int>(q) % n;
        std::vector<float> b = rank == root ? input : std::vector<float>(count, 9.0f);
        ecclOpOptions_t o3 = optionsFor(q, stochastic, 3);
        ASSERT_EQ(ecclBroadcast(b.data(), count, ecclFloat32, root, &o3, comm, nullptr),
                  ecclSuccess) << ecclGetLastError(comm);
        shared.put(name + " broadcast", rank, b.data(), count * 4);
        const std::vector<float> rootInput = inputOf(root, count, 1);
        for (size_t i = 0; i < count; ++i) {
          ASSERT_LE(std::fabs(b[i] - rootInput[i]), u * m + 1e-6) << "broadcast element " << i;
        }
      }
    }
  });
  shared.expectIdentical(n);
}

INSTANTIATE_TEST_SUITE_P(Worlds, CodecWorld, ::testing::Values(2, 3, 5, 8));

// 16-bit and 64-bit sources, every op: identical bytes on every member, and
// small integers (exact in every format) come out exact with the float codecs.
TEST(Codec, EverySourceDtypeAndOp) {
  const int n = 3;
  Shared shared;
  spawnPeers(n, [&](ecclComm_t comm) {
    const int rank = rankOf(comm);
    for (ecclDataType_t dt : {ecclFloat16, ecclBfloat16, ecclFloat64}) {
      for (ecclQuantization_t q : kCodecs) {
        for (int op = 0; op < ecclNumOps; ++op) {
          const size_t count = 777, esz = dtypeSize(dt);
          std::vector<std::byte> buf(count * esz);
          for (size_t i = 0; i < count; ++i) {
            const double v = static_cast<double>((rank + i) % 5) - 2;  // -2..2
            if (dt == ecclFloat64) {
              std::memcpy(buf.data() + i * 8, &v, 8);
            } else {
              const uint16_t h = dt == ecclFloat16 ? floatToHalf(static_cast<float>(v))
                                                   : floatToBf16(static_cast<float>(v));
              std::memcpy(buf.data() + i * 2, &h, 2);
            }
          }
          ecclOpOptions_t o = optionsFor(q, false, 0);
          ASSERT_EQ(ecclAllReduce(buf.data(), buf.data(), count, dt, static_cast<ecclRedOp_t>(op),
                                  &o, comm, nullptr), ecclSuccess) << ecclGetLastError(comm);
          shared.put(std::string(dtypeName(dt)) + "/" + quantName(q) + "/" +
                         opName(static_cast<ecclRedOp_t>(op)),
                     rank, buf.data(), buf.size());
          if ((q == ecclQuantFloat16 || q == ecclQuantBfloat16) && op == ecclSum) {
            for (size_t i = 0; i < count; ++i) {
              double want = 0;
              for (int r = 0; r < n; ++r) want += static_cast<double>((r + i) % 5) - 2;
              double got;
              if (dt == ecclFloat64) {
                std::memcpy(&got, buf.data() + i * 8, 8);
              } else {
                uint16_t h;
                std::memcpy(&h, buf.data() + i * 2, 2);
                got = dt == ecclFloat16 ? halfToFloat(h) : bf16ToFloat(h);
              }
              ASSERT_EQ(got, want) << dtypeName(dt) << " " << quantName(q) << " element " << i;
            }
          }
        }
      }
    }
  });
  shared.expectIdentical(n);
}

// Peers that disagree about the codec, its rounding or its block size for one
// op all get ecclInvalidUsage (from the master, whichever sees it first), and
// the next op that agrees works.
TEST(Codec, MismatchedCodecIsInvalidUsageEverywhere) {
  spawnPeers(3, [](ecclComm_t comm) {
    const int rank = rankOf(comm);
    std::vector<float> buf(5000, 1.0f);
    const std::vector<float> before = buf;
    ecclOpOptions_t o = ECCL_OP_OPTIONS_INIT;
    o.quantization = rank == 0 ? ecclQuantUint8 : ecclQuantUint4;
    EXPECT_EQ(ecclAllReduce(buf.data(), buf.data(), buf.size(), ecclFloat32, ecclSum, &o, comm,
                            nullptr), ecclInvalidUsage);
    EXPECT_EQ(buf, before) << "a failed op restores the input";
    o.quantization = ecclQuantUint8;
    o.quantBlockSize = rank == 1 ? 128 : 256;
    EXPECT_EQ(ecclAllReduce(buf.data(), buf.data(), buf.size(), ecclFloat32, ecclSum, &o, comm,
                            nullptr), ecclInvalidUsage);
    o.quantBlockSize = 0;
    o.rounding = rank == 2 ? ecclRoundStochastic : ecclRoundNearest;
    EXPECT_EQ(ecclBroadcast(buf.data(), buf.size(), ecclFloat32, 0, &o, comm, nullptr),
              ecclInvalidUsage);
    o.quantization = rank == 0 ? ecclQuantNone : ecclQuantBfloat16;
    o.rounding = ecclRoundNearest;
    EXPECT_EQ(ecclAllReduce(buf.data(), buf.data(), buf.size(), ecclFloat32, ecclSum, &o, comm,
                            nullptr), ecclInvalidUsage);
    EXPECT_EQ(buf, before);
    o.quantization = ecclQuantBfloat16;
    ASSERT_EQ(ecclAllReduce(buf.data(), buf.data(), buf.size(), ecclFloat32, ecclSum, &o, comm,
                            nullptr), ecclSuccess) << ecclGetLastError(comm);
    EXPECT_EQ(buf[0], 3.0f);
  });
}

// What no codec can carry is refused before anything is sent, with a message.
TEST(Codec, BadArgumentsAreRefusedLocally) {
  spawnPeers(1, [](ecclComm_t comm) {
    std::vector<int32_t> ints(16, 1);
    ecclOpOptions_t o = ECCL_OP_OPTIONS_INIT;
    o.quantization = ecclQuantUint8;
    EXPECT_EQ(ecclAllReduce(ints.data(), ints.data(), ints.size(), ecclInt32, ecclSum, &o, comm,
                            nullptr), ecclInvalidArgument);
    EXPECT_NE(std::string(ecclGetLastError(comm)).find("int32"), std::string::npos)
        << ecclGetLastError(comm);
    std::vector<float> f(16, 1.0f);
    o.quantBlockSize = 100;
    EXPECT_EQ(ecclAllReduce(f.data(), f.data(), f.size(), ecclFloat32, ecclSum, &o, comm, nullptr),
              ecclInvalidArgument);
    o.quantBlockSize = 0;
    o.quantization = static_cast<ecclQuantization_t>(17);
    EXPECT_EQ(ecclAllReduce(f.data(), f.data(), f.size(), ecclFloat32, ecclSum, &o, comm, nullptr),
              ecclInvalidArgument);
    o.quantization = ecclQuantUint8;
    o.rounding = static_cast<ecclRounding_t>(9);  // what a C caller can pass
    EXPECT_EQ(ecclAllReduce(f.data(), f.data(), f.size(), ecclFloat32, ecclSum, &o, comm, nullptr),
              ecclInvalidArgument);
    o.quantization = ecclQuantNone;
    o.rounding = ecclRoundStochastic;
    EXPECT_EQ(ecclBroadcast(f.data(), f.size(), ecclFloat32, 0, &o, comm, nullptr),
              ecclInvalidArgument);
  });
}

}  // namespace
}  // namespace eccl::test
