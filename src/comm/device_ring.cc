#include "comm/device_ring.h"

#include <cstring>

#include "common/dtype.h"

namespace eccl::comm {

Status DeviceElements::finish() {
  cuda::Event done = area_.lastEvent();
  ECCL_RETURN_IF_ERROR(dev_.record(done, area_.stream()));
  return dev_.synchronize(done);
}

Result<std::span<const std::byte>> DeviceElements::encode(const void* src, size_t count,
                                                          uint64_t seed) {
  const size_t bytes = codec_->encodedBytes(params_, count);
  Result<void*> onDevice = area_.grow(area_.encodedOut, bytes);
  if (!onDevice) return onDevice.status();
  Result<void*> onHost = area_.grow(area_.hostOut, bytes);
  if (!onHost) return onHost.status();
  auto* enc = static_cast<std::byte*>(*onDevice);
  ECCL_RETURN_IF_ERROR(dev_.encode(quant_, params_, src, count, enc, seed, area_.stream()));
  ECCL_RETURN_IF_ERROR(dev_.copy(*onHost, enc, bytes, area_.stream()));
  ECCL_RETURN_IF_ERROR(finish());
  return std::span<const std::byte>(static_cast<const std::byte*>(*onHost), bytes);
}

Result<const std::byte*> DeviceElements::upload(std::span<const std::byte> encoded) {
  // The owner decoding what it just encoded (RingIo::finalize): the bytes
  // are still on the device.
  if (encoded.data() == area_.hostOut.p && encoded.size() <= area_.encodedOut.bytes) {
    return static_cast<const std::byte*>(area_.encodedOut.p);
  }
  Result<void*> onHost = area_.grow(area_.hostIn, encoded.size());
  if (!onHost) return onHost.status();
  Result<void*> onDevice = area_.grow(area_.encodedIn, encoded.size());
  if (!onDevice) return onDevice.status();
  // Through pinned memory: the frame (or the encode buffer) may be reused as
  // soon as this returns, and only pinned memory copies asynchronously.
  std::memcpy(*onHost, encoded.data(), encoded.size());
  ECCL_RETURN_IF_ERROR(dev_.copy(*onDevice, *onHost, encoded.size(), area_.stream()));
  return static_cast<const std::byte*>(*onDevice);
}

Status DeviceElements::decode(std::span<const std::byte> encoded, size_t count, void* dst) {
  Result<const std::byte*> in = upload(encoded);
  if (!in) return in.status();
  ECCL_RETURN_IF_ERROR(dev_.decode(quant_, params_, *in, count, dst, area_.stream()));
  return finish();
}

Status DeviceElements::combine(ecclRedOp_t op, std::span<const std::byte> encoded, size_t count,
                               const void* local, void* dst) {
  Result<const std::byte*> in = upload(encoded);
  if (!in) return in.status();
  if (op == ecclSum || op == ecclAvg) {
    ECCL_RETURN_IF_ERROR(dev_.decodeAdd(quant_, params_, *in, count, local, dst, area_.stream()));
  } else {  // decoded first, then the reduction kernel (as RingIo::combine on the host)
    Result<void*> theirs = area_.grow(area_.scratch, count * dtypeSize(params_.dtype));
    if (!theirs) return theirs.status();
    ECCL_RETURN_IF_ERROR(dev_.decode(quant_, params_, *in, count, *theirs, area_.stream()));
    ECCL_RETURN_IF_ERROR(dev_.reduce(params_.dtype, op, dst, local, *theirs, count, area_.stream()));
  }
  return finish();
}

Status DeviceElements::divide(void* data, size_t count, uint64_t divisor) {
  ECCL_RETURN_IF_ERROR(dev_.divide(params_.dtype, data, count, divisor, area_.stream()));
  return finish();
}

}  // namespace eccl::comm
