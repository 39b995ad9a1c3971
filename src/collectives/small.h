// Small-message collectives: serial hops that grow with log2(world), not with
// world, over links to the members 2^k places on along the ring
// (RingContext::hopOut/hopIn).
//
// All-reduce = an all-gather of the inputs (Bruck: in round k every member
// sends what it has gathered so far, up to 2^k inputs, 2^k places on, so
// ceil(log2 n) rounds) followed by a reduction in rank order, 0 OP 1 OP ...
// OP n-1, on every member: the same operands in the same order with the same
// kernels, so every member ends with identical bits by construction (unlike
// recursive doubling, whose summation order differs per rank). AVG divides
// that sum once. The output is written only once everything has arrived, so
// a failed op leaves an in-place buffer as it was.
//
// Broadcast = a binomial tree from the root: in round k the members that have
// the data and are fewer than 2^k places past the root send it 2^k places on.
//
// Frames are those of the ring (same header, the op's descriptor checked on
// arrival), on steps kSmallStepBase + k, cut into segments of the group's
// size. Which path an op takes depends only on its size and the world, so
// every member of a group takes the same one.
#pragma once

#include "collectives/ring.h"
#include "collectives/schedule.h"

namespace eccl::collectives {

inline constexpr uint32_t kSmallStepBase = 0x40000000;  // never a ring step

// smallPath() (schedule.h: each member receives and reduces world - 1
// inputs, where the ring moves 2 (world - 1) / world of one), with this
// epoch's links in place.
bool takesSmallPath(const RingContext& ctx, size_t bytes);

Status gatherAllReduce(RingContext& ctx, const void* sendbuf, void* recvbuf, size_t count,
                       ecclDataType_t dtype, ecclRedOp_t op);

Status treeBroadcast(RingContext& ctx, void* buf, size_t count, ecclDataType_t dtype, int root);

}  // namespace eccl::collectives
