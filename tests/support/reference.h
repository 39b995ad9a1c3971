// Reference values for collective tests: every rank's input is a small
// integer pattern, exact in every dtype, so the expected result is exact too.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/dtype.h"
#include "common/half.h"
#include "eccl/eccl.h"

namespace eccl::test {

// Rank r's element i: 1, 2 or 3.
inline int64_t inputValue(int rank, size_t i) { return static_cast<int64_t>((rank + i) % 3) + 1; }

inline void storeValue(void* buf, ecclDataType_t dt, size_t i, double v) {
  auto* b = static_cast<std::byte*>(buf);
  auto put = [&](auto x) { std::memcpy(b + i * sizeof(x), &x, sizeof(x)); };
  // Integers wrap like two's complement, as the kernels do.
  const auto w = static_cast<uint64_t>(static_cast<int64_t>(v));
  switch (dt) {
    case ecclInt8: case ecclUint8: put(static_cast<uint8_t>(w)); break;
    case ecclInt16: case ecclUint16: put(static_cast<uint16_t>(w)); break;
    case ecclInt32: case ecclUint32: put(static_cast<uint32_t>(w)); break;
    case ecclInt64: case ecclUint64: put(w); break;
    case ecclFloat16: put(floatToHalf(static_cast<float>(v))); break;
    case ecclBfloat16: put(floatToBf16(static_cast<float>(v))); break;
    case ecclFloat32: put(static_cast<float>(v)); break;
    case ecclFloat64: put(v); break;
    default: break;
  }
}

inline std::vector<std::byte> makeInput(int rank, size_t count, ecclDataType_t dt) {
  std::vector<std::byte> v(count * dtypeSize(dt) + 1);
  for (size_t i = 0; i < count; ++i) storeValue(v.data(), dt, i, static_cast<double>(inputValue(rank, i)));
  v.resize(count * dtypeSize(dt));
  return v;
}

// The exact result over `world` ranks, in the dtype's bytes.
inline std::vector<std::byte> expectedAllReduce(int world, size_t count, ecclDataType_t dt,
                                                ecclRedOp_t op) {
  std::vector<std::byte> out(count * dtypeSize(dt) + 1);
  const bool integer = dt <= ecclUint64;
  for (size_t i = 0; i < count; ++i) {
    int64_t acc = inputValue(0, i);
    for (int r = 1; r < world; ++r) {
      const int64_t x = inputValue(r, i);
      switch (op) {
        case ecclSum: case ecclAvg: acc += x; break;
        case ecclProd: acc *= x; break;
        case ecclMax: acc = std::max(acc, x); break;
        case ecclMin: acc = std::min(acc, x); break;
        default: break;
      }
    }
    double v = static_cast<double>(acc);
    if (op == ecclAvg) {
      if (integer) {
        // The kernels divide the wrapped sum in the dtype's own width.
        const bool isSigned = dt == ecclInt8 || dt == ecclInt16 || dt == ecclInt32 || dt == ecclInt64;
        const int bits = static_cast<int>(dtypeSize(dt) * 8);
        uint64_t mask = bits == 64 ? ~0ull : ((1ull << bits) - 1);
        uint64_t u = static_cast<uint64_t>(acc) & mask;
        if (isSigned && bits < 64 && (u >> (bits - 1))) {
          v = static_cast<double>(static_cast<int64_t>(u | ~mask) / world);
        } else {
          v = static_cast<double>(u / static_cast<uint64_t>(world));
        }
      } else if (dt == ecclFloat32) {
        v = static_cast<double>(static_cast<float>(acc) / static_cast<float>(world));
      } else if (dt == ecclFloat16 || dt == ecclBfloat16) {
        v = static_cast<double>(static_cast<float>(acc) / static_cast<float>(world));
      } else {
        v = static_cast<double>(acc) / world;
      }
    }
    storeValue(out.data(), dt, i, v);
  }
  out.resize(count * dtypeSize(dt));
  return out;
}

}  // namespace eccl::test
