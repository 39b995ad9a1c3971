// CPU reduction kernels used by the collectives on host memory.
//
// Semantics, per element i (T is the element type of `dtype`):
//  - ecclSum and ecclAvg: a + b. Avg is a sum here; the collective divides
//    once at the end with divide().
//  - ecclProd: a * b.
//  - ecclMax: (a > b || isnan(a)) ? a : b;  ecclMin: (a < b || isnan(a)) ? a : b.
//    So NaN propagates from either side (a rank's NaN is never dropped), and
//    when a and b compare equal (+0 and -0) the result is b.
//  - Integers wrap modulo 2^bits on sum and prod, signed ones included (two's
//    complement), as NCCL does; there is no undefined behaviour.
//  - float16/bfloat16: both operands are widened to float32, combined, and
//    rounded back to nearest-even. Because float32 has more than twice the
//    precision plus two bits, this equals the correctly rounded 16-bit result
//    for sum, prod and divide. NaN results are quiet NaNs.
// Results depend only on the inputs and the order of a and b, not on the CPU
// or code path (vectorized, scalar, F16C), with one exception: which payload
// a NaN result carries when both operands are NaN.
//
// Buffers: dst may be the same pointer as a, b, or both; any other overlap is
// not allowed. Buffers need only the alignment of their element type. count
// is in elements; count == 0 does nothing.
//
// Thread safety: pure functions of their arguments; any number of threads may
// call them at once on disjoint output buffers.
#pragma once

#include <cstddef>
#include <cstdint>

#include "eccl/eccl.h"

namespace eccl::reduce {

// dst[i] = a[i] OP b[i] for i < count. Returns false, touching nothing, when
// dtype or op is out of range.
[[nodiscard]] bool reduce(ecclDataType_t dtype, ecclRedOp_t op, void* dst, const void* a,
                          const void* b, size_t count);

// data[i] /= divisor in place, for ecclAvg. Floating types divide in their own
// precision (16-bit types through float32, then rounded); integers truncate
// toward zero like C division. Returns false, touching nothing, when dtype is
// out of range or divisor is 0.
[[nodiscard]] bool divide(ecclDataType_t dtype, void* data, size_t count, uint64_t divisor);

// float16 uses the CPU's F16C conversion instructions where it has them
// (x86-64), several times faster than the portable code and giving the same
// bits. This turns that off, or back on where available, and returns whether
// it is now in use. For tests, which check both paths, and benchmarks; safe
// to call while other threads reduce.
bool useFloat16Hardware(bool enable);

}  // namespace eccl::reduce
