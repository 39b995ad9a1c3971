#include "reduce/reduce.h"

#include <atomic>
#include <limits>
#include <type_traits>

#include "common/half.h"
#include "common/kernels.h"

// float16 on x86-64 can use the F16C conversion instructions; see below.
#if defined(__x86_64__) && !defined(ECCL_REDUCE_NO_F16C)
#define ECCL_REDUCE_F16C 1
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace eccl::reduce {
namespace {

using kernels::Bfloat16;
using kernels::Half;
using kernels::Native;

// Integer sum and prod go through unsigned arithmetic at least as wide as
// unsigned int: wrapping is then defined, and the narrowing back to T is
// modular in C++20. (uint16 * uint16 would otherwise promote to int and
// overflow.)
template <typename T>
using Wide = decltype(std::make_unsigned_t<T>{} + 0u);

struct SumOp {
  template <typename T>
  static T apply(T a, T b) {
    if constexpr (std::is_integral_v<T>) {
      return static_cast<T>(static_cast<Wide<T>>(a) + static_cast<Wide<T>>(b));
    } else {
      return a + b;
    }
  }
};

struct ProdOp {
  template <typename T>
  static T apply(T a, T b) {
    if constexpr (std::is_integral_v<T>) {
      return static_cast<T>(static_cast<Wide<T>>(a) * static_cast<Wide<T>>(b));
    } else {
      return a * b;
    }
  }
};

// `a != a` is the NaN test; it keeps a NaN in `a` from being dropped, and
// `a > b` being false already passes a NaN in `b` through.
struct MaxOp {
  template <typename T>
  static T apply(T a, T b) {
    return (a > b || a != a) ? a : b;  // NOLINT(misc-redundant-expression)
  }
};

struct MinOp {
  template <typename T>
  static T apply(T a, T b) {
    return (a < b || a != a) ? a : b;  // NOLINT(misc-redundant-expression)
  }
};

// GCC 12 at -O2 vectorizes only loops whose trip count it knows, so the work
// goes in fixed blocks of kBlock elements plus a scalar tail. (At -O3 the
// blocks are not needed, and unrolled they cost code size, not speed.)
template <typename S>
constexpr size_t kBlock = 256 / sizeof(S);

template <typename C, typename Op, typename S>
ECCL_ALWAYS_INLINE S combine(S x, S y) {
  return C::store(Op::apply(C::load(x), C::load(y)));
}

// One loop per aliasing case: restrict promises must hold, and dst == a is
// common (the in-place step of a ring all-reduce).
template <typename C, typename Op, typename S = typename C::Storage>
ECCL_ALWAYS_INLINE void loopDistinct(S* __restrict d, const S* __restrict a,
                                     const S* __restrict b, size_t n) {
  size_t i = 0;
  for (; i + kBlock<S> <= n; i += kBlock<S>) {
    for (size_t j = 0; j < kBlock<S>; ++j) d[i + j] = combine<C, Op>(a[i + j], b[i + j]);
  }
  for (; i < n; ++i) d[i] = combine<C, Op>(a[i], b[i]);
}

template <typename C, typename Op, typename S = typename C::Storage>
ECCL_ALWAYS_INLINE void loopDstIsA(S* __restrict d, const S* __restrict b, size_t n) {
  size_t i = 0;
  for (; i + kBlock<S> <= n; i += kBlock<S>) {
    for (size_t j = 0; j < kBlock<S>; ++j) d[i + j] = combine<C, Op>(d[i + j], b[i + j]);
  }
  for (; i < n; ++i) d[i] = combine<C, Op>(d[i], b[i]);
}

template <typename C, typename Op, typename S = typename C::Storage>
ECCL_ALWAYS_INLINE void loopDstIsB(S* __restrict d, const S* __restrict a, size_t n) {
  size_t i = 0;
  for (; i + kBlock<S> <= n; i += kBlock<S>) {
    for (size_t j = 0; j < kBlock<S>; ++j) d[i + j] = combine<C, Op>(a[i + j], d[i + j]);
  }
  for (; i < n; ++i) d[i] = combine<C, Op>(a[i], d[i]);
}

template <typename C, typename Op, typename S = typename C::Storage>
ECCL_ALWAYS_INLINE void loopAllSame(S* d, size_t n) {
  size_t i = 0;
  for (; i + kBlock<S> <= n; i += kBlock<S>) {
    for (size_t j = 0; j < kBlock<S>; ++j) d[i + j] = combine<C, Op>(d[i + j], d[i + j]);
  }
  for (; i < n; ++i) d[i] = combine<C, Op>(d[i], d[i]);
}

template <typename C, typename Op>
ECCL_ALWAYS_INLINE void run(void* dst, const void* a, const void* b, size_t n) {
  using S = typename C::Storage;
  auto* d = static_cast<S*>(dst);
  const auto* x = static_cast<const S*>(a);
  const auto* y = static_cast<const S*>(b);
  if (d == x && d == y) {
    loopAllSame<C, Op>(d, n);
  } else if (d == x) {
    loopDstIsA<C, Op>(d, y, n);
  } else if (d == y) {
    loopDstIsB<C, Op>(d, x, n);
  } else {
    loopDistinct<C, Op>(d, x, y, n);
  }
}

template <typename C>
ECCL_ALWAYS_INLINE bool reduceAs(ecclRedOp_t op, void* dst, const void* a, const void* b,
                                 size_t n) {
  switch (op) {
    case ecclSum:
    case ecclAvg:
      run<C, SumOp>(dst, a, b, n);
      return true;
    case ecclProd:
      run<C, ProdOp>(dst, a, b, n);
      return true;
    case ecclMax:
      run<C, MaxOp>(dst, a, b, n);
      return true;
    case ecclMin:
      run<C, MinOp>(dst, a, b, n);
      return true;
    case ecclNumOps:
      break;
  }
  return false;
}

// Integer quotient truncated toward zero for any uint64_t divisor >= 1,
// without converting a divisor that T cannot hold.
template <typename T>
ECCL_ALWAYS_INLINE void divideInts(T* __restrict data, size_t n, uint64_t divisor) {
  constexpr T kMax = std::numeric_limits<T>::max();
  if (divisor <= static_cast<uint64_t>(kMax)) {
    const T d = static_cast<T>(divisor);
    for (size_t i = 0; i < n; ++i) data[i] = static_cast<T>(data[i] / d);
    return;
  }
  // |x| < divisor for every x except min() of a signed T when divisor is
  // exactly max() + 1, whose quotient is -1.
  const bool minIsMinusOne =
      std::is_signed_v<T> && divisor == static_cast<uint64_t>(kMax) + 1;
  constexpr T kMin = std::numeric_limits<T>::min();
  for (size_t i = 0; i < n; ++i) {
    data[i] = (minIsMinusOne && data[i] == kMin) ? static_cast<T>(-1) : T{0};
  }
}

template <typename C>
ECCL_ALWAYS_INLINE void divideAs(void* data, size_t n, uint64_t divisor) {
  using S = typename C::Storage;
  using T = typename C::Compute;
  auto* __restrict p = static_cast<S*>(data);
  if constexpr (std::is_integral_v<T>) {
    divideInts<T>(p, n, divisor);
  } else {
    const T d = static_cast<T>(divisor);
    size_t i = 0;
    for (; i + kBlock<S> <= n; i += kBlock<S>) {
      for (size_t j = 0; j < kBlock<S>; ++j) p[i + j] = C::store(C::load(p[i + j]) / d);
    }
    for (; i < n; ++i) p[i] = C::store(C::load(p[i]) / d);
  }
}

// The out-of-line, per-dtype entry points (see ECCL_CLONES).
#define ECCL_DEFINE_KERNELS(Name, Codec)                                                 \
  ECCL_CLONES bool reduce##Name(ecclRedOp_t op, void* dst, const void* a, const void* b, \
                                size_t n) {                                              \
    return reduceAs<Codec>(op, dst, a, b, n);                                            \
  }                                                                                      \
  ECCL_CLONES void divide##Name(void* data, size_t n, uint64_t divisor) {                \
    divideAs<Codec>(data, n, divisor);                                                   \
  }

ECCL_DEFINE_KERNELS(Int8, Native<int8_t>)
ECCL_DEFINE_KERNELS(Uint8, Native<uint8_t>)
ECCL_DEFINE_KERNELS(Int16, Native<int16_t>)
ECCL_DEFINE_KERNELS(Uint16, Native<uint16_t>)
ECCL_DEFINE_KERNELS(Int32, Native<int32_t>)
ECCL_DEFINE_KERNELS(Uint32, Native<uint32_t>)
ECCL_DEFINE_KERNELS(Int64, Native<int64_t>)
ECCL_DEFINE_KERNELS(Uint64, Native<uint64_t>)
ECCL_DEFINE_KERNELS(Float16, Half)
ECCL_DEFINE_KERNELS(Bfloat16, Bfloat16)
ECCL_DEFINE_KERNELS(Float32, Native<float>)
ECCL_DEFINE_KERNELS(Float64, Native<double>)
#undef ECCL_DEFINE_KERNELS

#ifdef ECCL_REDUCE_F16C
// float16 through the F16C instructions, which convert 8 values in one
// instruction where the portable code needs dozens: several times faster.
// The bits are the same as the portable path's: both round to nearest even,
// and both narrow NaN to a quiet NaN with the top payload bits. (Hardware
// widening quiets a signalling NaN where half.h keeps it, but every result
// is narrowed, which sets the quiet bit anyway.) Tests compare the two paths.
#define ECCL_F16C_TARGET __attribute__((target("avx,f16c")))

ECCL_F16C_TARGET inline __m256 loadHalf8(const uint16_t* p) {
  __m256 v = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  // Hide that v was widened: clang otherwise moves max/min's compare and
  // select back to 16-bit values, which x86 can only do lane by lane (8x
  // slower). The empty asm emits nothing.
  __asm__("" : "+x"(v));
  return v;
}

ECCL_F16C_TARGET inline void storeHalf8(uint16_t* p, __m256 v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                   _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}

// The vector twins of SumOp, ProdOp, MaxOp and MinOp, with the same NaN and
// equal-operand behaviour. The select is and/or rather than blendv, which GCC
// 12 rewrites into per-lane branches under target("avx").
ECCL_F16C_TARGET inline __m256 select8(__m256 mask, __m256 x, __m256 y) {
  return _mm256_or_ps(_mm256_and_ps(mask, x), _mm256_andnot_ps(mask, y));
}

struct SumOp8 {
  ECCL_F16C_TARGET static __m256 apply(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
};
struct ProdOp8 {
  ECCL_F16C_TARGET static __m256 apply(__m256 a, __m256 b) { return _mm256_mul_ps(a, b); }
};
struct MaxOp8 {
  ECCL_F16C_TARGET static __m256 apply(__m256 a, __m256 b) {
    const __m256 takeA =
        _mm256_or_ps(_mm256_cmp_ps(a, b, _CMP_GT_OQ), _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
    return select8(takeA, a, b);
  }
};
struct MinOp8 {
  ECCL_F16C_TARGET static __m256 apply(__m256 a, __m256 b) {
    const __m256 takeA =
        _mm256_or_ps(_mm256_cmp_ps(a, b, _CMP_LT_OQ), _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
    return select8(takeA, a, b);
  }
};

template <typename Op, typename Op8>
ECCL_F16C_TARGET void runF16c(void* dst, const void* a, const void* b, size_t n) {
  auto* d = static_cast<uint16_t*>(dst);
  const auto* x = static_cast<const uint16_t*>(a);
  const auto* y = static_cast<const uint16_t*>(b);
  size_t i = 0;
  // Both inputs are loaded before the store, so dst may be a or b.
  for (; i + 8 <= n; i += 8) storeHalf8(d + i, Op8::apply(loadHalf8(x + i), loadHalf8(y + i)));
  for (; i < n; ++i) d[i] = combine<Half, Op>(x[i], y[i]);
}

ECCL_F16C_TARGET bool reduceFloat16F16c(ecclRedOp_t op, void* dst, const void* a,
                                        const void* b, size_t n) {
  switch (op) {
    case ecclSum:
    case ecclAvg:
      runF16c<SumOp, SumOp8>(dst, a, b, n);
      return true;
    case ecclProd:
      runF16c<ProdOp, ProdOp8>(dst, a, b, n);
      return true;
    case ecclMax:
      runF16c<MaxOp, MaxOp8>(dst, a, b, n);
      return true;
    case ecclMin:
      runF16c<MinOp, MinOp8>(dst, a, b, n);
      return true;
    case ecclNumOps:
      break;
  }
  return false;
}

ECCL_F16C_TARGET void divideFloat16F16c(void* data, size_t n, uint64_t divisor) {
  auto* p = static_cast<uint16_t*>(data);
  const float d = static_cast<float>(divisor);
  const __m256 d8 = _mm256_set1_ps(d);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) storeHalf8(p + i, _mm256_div_ps(loadHalf8(p + i), d8));
  for (; i < n; ++i) p[i] = floatToHalf(halfToFloat(p[i]) / d);
}

// By CPUID, since clang 14's __builtin_cpu_supports does not know "f16c".
bool cpuHasF16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) == 0) return false;
  const unsigned need = bit_AVX | bit_F16C | bit_OSXSAVE;
  if ((ecx & need) != need) return false;
  // AVX also needs the OS to save the YMM registers (XCR0 bits 1 and 2).
  unsigned xcr0 = 0, xcr0High = 0;
  __asm__("xgetbv" : "=a"(xcr0), "=d"(xcr0High) : "c"(0));
  return (xcr0 & 0x6u) == 0x6u;
}
#else
bool cpuHasF16c() { return false; }
#endif

// Whether float16 takes the F16C path. Both paths give the same bits, so a
// racing change is harmless; relaxed order suffices.
std::atomic<bool>& float16Hardware() {
  static std::atomic<bool> enabled{cpuHasF16c()};
  return enabled;
}

bool reduceFloat16Best(ecclRedOp_t op, void* dst, const void* a, const void* b, size_t n) {
#ifdef ECCL_REDUCE_F16C
  if (float16Hardware().load(std::memory_order_relaxed)) {
    return reduceFloat16F16c(op, dst, a, b, n);
  }
#endif
  return reduceFloat16(op, dst, a, b, n);
}

void divideFloat16Best(void* data, size_t n, uint64_t divisor) {
#ifdef ECCL_REDUCE_F16C
  if (float16Hardware().load(std::memory_order_relaxed)) {
    divideFloat16F16c(data, n, divisor);
    return;
  }
#endif
  divideFloat16(data, n, divisor);
}

}  // namespace

bool useFloat16Hardware(bool enable) {
  const bool on = enable && cpuHasF16c();
  float16Hardware().store(on, std::memory_order_relaxed);
  return on;
}

bool reduce(ecclDataType_t dtype, ecclRedOp_t op, void* dst, const void* a, const void* b,
            size_t count) {
  // A bad op falls out of reduceAs's switch before any loop runs.
  switch (dtype) {
    case ecclInt8: return reduceInt8(op, dst, a, b, count);
    case ecclUint8: return reduceUint8(op, dst, a, b, count);
    case ecclInt16: return reduceInt16(op, dst, a, b, count);
    case ecclUint16: return reduceUint16(op, dst, a, b, count);
    case ecclInt32: return reduceInt32(op, dst, a, b, count);
    case ecclUint32: return reduceUint32(op, dst, a, b, count);
    case ecclInt64: return reduceInt64(op, dst, a, b, count);
    case ecclUint64: return reduceUint64(op, dst, a, b, count);
    case ecclFloat16: return reduceFloat16Best(op, dst, a, b, count);
    case ecclBfloat16: return reduceBfloat16(op, dst, a, b, count);
    case ecclFloat32: return reduceFloat32(op, dst, a, b, count);
    case ecclFloat64: return reduceFloat64(op, dst, a, b, count);
    case ecclNumTypes: break;
  }
  return false;
}

bool divide(ecclDataType_t dtype, void* data, size_t count, uint64_t divisor) {
  if (divisor == 0) return false;
  switch (dtype) {
    case ecclInt8: divideInt8(data, count, divisor); return true;
    case ecclUint8: divideUint8(data, count, divisor); return true;
    case ecclInt16: divideInt16(data, count, divisor); return true;
    case ecclUint16: divideUint16(data, count, divisor); return true;
    case ecclInt32: divideInt32(data, count, divisor); return true;
    case ecclUint32: divideUint32(data, count, divisor); return true;
    case ecclInt64: divideInt64(data, count, divisor); return true;
    case ecclUint64: divideUint64(data, count, divisor); return true;
    case ecclFloat16: divideFloat16Best(data, count, divisor); return true;
    case ecclBfloat16: divideBfloat16(data, count, divisor); return true;
    case ecclFloat32: divideFloat32(data, count, divisor); return true;
    case ecclFloat64: divideFloat64(data, count, divisor); return true;
    case ecclNumTypes: break;
  }
  return false;
}

}  // namespace eccl::reduce
