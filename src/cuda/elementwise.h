// The per-element arithmetic of the CUDA reduction kernels, written once for
// the host compiler and nvcc alike so a CPU test can prove it bit-identical
// to reduce/reduce.cc (whose header states the semantics).
//
// Why not the obvious device code: a GPU does not follow the CPU's NaN rules.
// Its float32 arithmetic returns one canonical NaN (0x7fffffff) whatever the
// operands, where the CPU returns the NaN operand, quieted, or its own default
// NaN for invalid operations (inf - inf, 0 * inf), which on x86 is negative.
// So every float result goes through propagateNan(), which rebuilds the CPU's
// NaN from the operands and whatever NaN the hardware made. The cvt
// instructions for float16 and bfloat16 canonicalize NaN too, so the 16-bit
// conversions are bit manipulation copied from common/half.h.
//
// Floating-point rounding: each element is one IEEE operation rounded to
// nearest even. On the device that is __fadd_rn and friends, which nvcc never
// contracts into an FMA, and __fdiv_rn / __ddiv_rn, which are IEEE-correct
// (plain `/` is too unless -prec-div=false, but the intrinsic does not depend
// on flags). So the kernels need no -fmad=false. They do need float32
// subnormals kept: no -ftz=true and no --use_fast_math, as on the CPU (which
// never sets FTZ/DAZ).
//
// The one thing left open is the one reduce.h leaves open: which payload the
// result carries when both operands of a sum or product are NaN. The CPU's
// answer depends on which operand order the compiler emitted; here it is
// always a's.
//
// Nothing here includes a CUDA header; device-only intrinsics sit behind
// __CUDA_ARCH__, which only nvcc's device pass defines.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "eccl/eccl.h"

#ifdef __CUDACC__
#define ECCL_HD __host__ __device__
#else
#define ECCL_HD
#endif

namespace eccl::cuda {

// ---- Bits and single IEEE operations ---------------------------------------

ECCL_HD inline uint32_t bitsOf(float x) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(x);
#else
  uint32_t r;
  std::memcpy(&r, &x, sizeof r);
  return r;
#endif
}

ECCL_HD inline float floatFrom(uint32_t bits) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(bits);
#else
  float r;
  std::memcpy(&r, &bits, sizeof r);
  return r;
#endif
}

ECCL_HD inline uint64_t bitsOf(double x) {
#ifdef __CUDA_ARCH__
  return static_cast<uint64_t>(__double_as_longlong(x));
#else
  uint64_t r;
  std::memcpy(&r, &x, sizeof r);
  return r;
#endif
}

ECCL_HD inline double doubleFrom(uint64_t bits) {
#ifdef __CUDA_ARCH__
  return __longlong_as_double(static_cast<long long>(bits));
#else
  double r;
  std::memcpy(&r, &bits, sizeof r);
  return r;
#endif
}

// On the host one operator is one IEEE operation: nothing here multiplies and
// adds in one expression, so there is nothing to contract either.
#ifdef __CUDA_ARCH__
#define ECCL_IEEE_OP(name, type, op, intrinsic) \
  ECCL_HD inline type name(type a, type b) { return intrinsic(a, b); }
#else
#define ECCL_IEEE_OP(name, type, op, intrinsic) \
  ECCL_HD inline type name(type a, type b) { return a op b; }
#endif
ECCL_IEEE_OP(add, float, +, __fadd_rn)
ECCL_IEEE_OP(sub, float, -, __fsub_rn)
ECCL_IEEE_OP(mul, float, *, __fmul_rn)
ECCL_IEEE_OP(div, float, /, __fdiv_rn)
ECCL_IEEE_OP(add, double, +, __dadd_rn)
ECCL_IEEE_OP(mul, double, *, __dmul_rn)
ECCL_IEEE_OP(div, double, /, __ddiv_rn)
#undef ECCL_IEEE_OP

// ---- NaN as the CPU makes it -------------------------------------------------

// The NaN an invalid operation produces on the host CPU: x86's "real
// indefinite" is negative, while Arm, POWER and RISC-V use the positive one.
// nvcc's device pass sees the host's architecture macros, so device code
// copies the host it was built for.
#if defined(__x86_64__) || defined(__i386__)
inline constexpr uint32_t kDefaultNan32 = 0xffc00000u;
inline constexpr uint64_t kDefaultNan64 = 0xfff8000000000000u;
#else
inline constexpr uint32_t kDefaultNan32 = 0x7fc00000u;
inline constexpr uint64_t kDefaultNan64 = 0x7ff8000000000000u;
#endif

ECCL_HD inline float quiet(float x) { return floatFrom(bitsOf(x) | 0x00400000u); }
ECCL_HD inline double quiet(double x) { return doubleFrom(bitsOf(x) | 0x0008000000000000u); }
ECCL_HD inline float defaultNan(float) { return floatFrom(kDefaultNan32); }
ECCL_HD inline double defaultNan(double) { return doubleFrom(kDefaultNan64); }

// The result r of `a OP b` as the CPU gives it: a NaN operand comes out
// quieted (a's first), and a NaN from non-NaN operands is the default NaN.
template <typename F>
ECCL_HD inline F propagateNan(F r, F a, F b) {
  if (r == r) return r;  // NOLINT(misc-redundant-expression): the NaN test
  if (a != a) return quiet(a);  // NOLINT(misc-redundant-expression)
  if (b != b) return quiet(b);  // NOLINT(misc-redundant-expression)
  return defaultNan(r);
}

// ---- 16-bit floats, mirroring common/half.h ------------------------------------
//
// The same algorithms step for step (see half.h for why each step is right),
// with the bit casts and float operations above in place of std::bit_cast and
// operators. The CPU test compares them with half.h on every 16-bit pattern
// and millions of floats.

ECCL_HD inline uint32_t selectBits(bool cond, uint32_t x, uint32_t y) {
  const uint32_t mask = 0u - static_cast<uint32_t>(cond);
  return (x & mask) | (y & ~mask);
}

ECCL_HD inline float halfToFloat(uint16_t bits) {
  const uint32_t h = bits;
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t shifted = (h & 0x7fffu) << 13;
  const uint32_t exponent = shifted & 0x0f800000u;
  const uint32_t normal = shifted + (112u << 23);
  const uint32_t infOrNan = shifted + (224u << 23);
  const float magic = floatFrom(113u << 23);
  const float subnormal = sub(floatFrom(shifted + (113u << 23)), magic);
  uint32_t r = selectBits(exponent == 0, bitsOf(subnormal), normal);
  r = selectBits(exponent == 0x0f800000u, infOrNan, r);
  return floatFrom(r | sign);
}

ECCL_HD inline uint16_t floatToHalf(float value) {
  const uint32_t f = bitsOf(value);
  const uint32_t sign = (f >> 16) & 0x8000u;
  const uint32_t a = f & 0x7fffffffu;
  const uint32_t normal = (a - (112u << 23) + 0xfffu + ((a >> 13) & 1u)) >> 13;
  const uint32_t subnormal = bitsOf(add(floatFrom(a), 0.5f)) - 0x3f000000u;
  const uint32_t special = 0x7c00u | selectBits(a > 0x7f800000u, 0x200u | ((a >> 13) & 0x3ffu), 0);
  uint32_t r = selectBits(a < 0x38800000u, subnormal, normal);
  r = selectBits(a >= 0x47800000u, special, r);
  return static_cast<uint16_t>(r | sign);
}

ECCL_HD inline float bf16ToFloat(uint16_t bits) {
  return floatFrom(static_cast<uint32_t>(bits) << 16);
}

ECCL_HD inline uint16_t floatToBf16(float value) {
  const uint32_t f = bitsOf(value);
  const bool isNan = (f & 0x7fffffffu) > 0x7f800000u;
  const uint32_t rounded = (f + 0x7fffu + ((f >> 16) & 1u)) >> 16;
  const uint32_t quietNan = (f >> 16) | 0x0040u;
  return static_cast<uint16_t>(isNan ? quietNan : rounded);
}

// ---- How each dtype is stored and computed (as common/kernels.h) --------------

template <typename T>
struct Native {
  using Storage = T;
  using Compute = T;
  ECCL_HD static T load(T x) { return x; }
  ECCL_HD static T store(T x) { return x; }
};

struct Half {
  using Storage = uint16_t;
  using Compute = float;
  ECCL_HD static float load(uint16_t x) { return halfToFloat(x); }
  ECCL_HD static uint16_t store(float x) { return floatToHalf(x); }
};

struct Bfloat16 {
  using Storage = uint16_t;
  using Compute = float;
  ECCL_HD static float load(uint16_t x) { return bf16ToFloat(x); }
  ECCL_HD static uint16_t store(float x) { return floatToBf16(x); }
};

// ---- The operations ---------------------------------------------------------------

// Integer sum and prod in unsigned arithmetic at least as wide as unsigned
// int, as reduce.cc does: wrapping is defined, and narrowing back is modular.
template <typename T>
using Wide = decltype(std::make_unsigned_t<T>{} + 0u);

struct Sum {
  template <typename T>
  ECCL_HD static T apply(T a, T b) {
    if constexpr (std::is_integral_v<T>) {
      return static_cast<T>(static_cast<Wide<T>>(a) + static_cast<Wide<T>>(b));
    } else {
      return propagateNan(add(a, b), a, b);
    }
  }
};

struct Prod {
  template <typename T>
  ECCL_HD static T apply(T a, T b) {
    if constexpr (std::is_integral_v<T>) {
      return static_cast<T>(static_cast<Wide<T>>(a) * static_cast<Wide<T>>(b));
    } else {
      return propagateNan(mul(a, b), a, b);
    }
  }
};

// A select, not arithmetic: NaN bits pass through untouched, signalling ones
// included, as on the CPU. Equal operands (+0, -0) give b.
struct Max {
  template <typename T>
  ECCL_HD static T apply(T a, T b) {
    return (a > b || a != a) ? a : b;  // NOLINT(misc-redundant-expression)
  }
};

struct Min {
  template <typename T>
  ECCL_HD static T apply(T a, T b) {
    return (a < b || a != a) ? a : b;  // NOLINT(misc-redundant-expression)
  }
};

template <typename C, typename Op>
ECCL_HD inline typename C::Storage combine(typename C::Storage x, typename C::Storage y) {
  return C::store(Op::apply(C::load(x), C::load(y)));
}

// Two's complement limits: std::numeric_limits is host-only in device code
// (without --expt-relaxed-constexpr).
template <typename T>
ECCL_HD constexpr T maxOf() {
  using U = std::make_unsigned_t<T>;
  return std::is_signed_v<T> ? static_cast<T>(static_cast<U>(~U{0}) >> 1) : static_cast<T>(~U{0});
}

template <typename T>
ECCL_HD constexpr T minOf() {
  return std::is_signed_v<T> ? static_cast<T>(-maxOf<T>() - 1) : T{0};
}

// ecclAvg's final division, x / divisor as reduce::divide does it. Built on
// the host, where the divisor is converted once (to the compute type for
// floats, with the host's rounding), and passed by value to the kernel.
template <typename C>
class Divider {
 public:
  using Storage = typename C::Storage;
  using Compute = typename C::Compute;

  ECCL_HD explicit Divider(uint64_t divisor) {
    if constexpr (std::is_integral_v<Compute>) {
      constexpr auto kMax = static_cast<uint64_t>(maxOf<Compute>());
      fits_ = divisor <= kMax;
      d_ = fits_ ? static_cast<Compute>(divisor) : Compute{1};
      // Beyond max() every |x| < divisor, so the quotient is 0, except min()
      // of a signed type divided by exactly max() + 1, which is -1.
      minIsMinusOne_ = std::is_signed_v<Compute> && divisor == kMax + 1;
    } else {
      d_ = static_cast<Compute>(divisor);
    }
  }

  ECCL_HD Storage apply(Storage x) const {
    if constexpr (std::is_integral_v<Compute>) {
      if (fits_) return static_cast<Compute>(x / d_);  // truncates toward zero
      return (minIsMinusOne_ && x == minOf<Compute>()) ? static_cast<Compute>(-1) : Compute{0};
    } else {
      const Compute v = C::load(x);
      return C::store(propagateNan(div(v, d_), v, d_));
    }
  }

 private:
  Compute d_{};
  bool fits_ = true;  // integers: divisor <= max(), so d_ holds it
  bool minIsMinusOne_ = false;
};

// ---- Dispatch by value (host side) ------------------------------------------------

// The same for the floating dtypes only (the payload codecs' sources);
// false for the others.
template <typename Fn>
bool withFloatCodec(ecclDataType_t dtype, Fn&& fn) {
  switch (dtype) {
    case ecclFloat32: fn(Native<float>{}); return true;
    case ecclFloat64: fn(Native<double>{}); return true;
    case ecclFloat16: fn(Half{}); return true;
    case ecclBfloat16: fn(Bfloat16{}); return true;
    default: return false;
  }
}

// Calls fn(Codec{}) for dtype's codec and returns true, or returns false for
// a dtype out of range.
template <typename Fn>
bool withCodec(ecclDataType_t dtype, Fn&& fn) {
  switch (dtype) {
    case ecclInt8: fn(Native<int8_t>{}); return true;
    case ecclUint8: fn(Native<uint8_t>{}); return true;
    case ecclInt16: fn(Native<int16_t>{}); return true;
    case ecclUint16: fn(Native<uint16_t>{}); return true;
    case ecclInt32: fn(Native<int32_t>{}); return true;
    case ecclUint32: fn(Native<uint32_t>{}); return true;
    case ecclInt64: fn(Native<int64_t>{}); return true;
    case ecclUint64: fn(Native<uint64_t>{}); return true;
    case ecclFloat16: fn(Half{}); return true;
    case ecclBfloat16: fn(Bfloat16{}); return true;
    case ecclFloat32: fn(Native<float>{}); return true;
    case ecclFloat64: fn(Native<double>{}); return true;
    case ecclNumTypes: break;
  }
  return false;
}

// Calls fn(Op{}) for op (ecclAvg is Sum: the division comes once at the end)
// and returns true, or returns false for an op out of range.
template <typename Fn>
bool withOp(ecclRedOp_t op, Fn&& fn) {
  switch (op) {
    case ecclSum:
    case ecclAvg: fn(Sum{}); return true;
    case ecclProd: fn(Prod{}); return true;
    case ecclMax: fn(Max{}); return true;
    case ecclMin: fn(Min{}); return true;
    case ecclNumOps: break;
  }
  return false;
}

}  // namespace eccl::cuda
