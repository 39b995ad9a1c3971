// The codec ring on CUDA buffers: a quantized all-reduce or broadcast whose
// elements never leave the device. The ring (collectives/ring.h) runs as
// ever on the host, but every operation on elements (encode, decode, the
// decode-add of a reduce-scatter hop, the ecclAvg division) runs on the
// device through this ElementStore, so only the encoded bytes cross PCIe:
// for uint8 a quarter of float32's, for uint4 an eighth. The device codecs
// give the host codecs' bits, so device and host members of a group end
// with identical results.
//
// Each call runs on the tag's stream and completes before it returns (the
// ring hands the encoded bytes to the network next). Its buffers are the
// tag's (StagingArea), grown on demand.
#pragma once

#include "collectives/ring.h"
#include "comm/staging.h"

namespace eccl::comm {

class DeviceElements final : public collectives::ElementStore {
 public:
  DeviceElements(cuda::Device& dev, StagingArea& area, ecclQuantization_t quant,
                 const codec::Params& params)
      : dev_(dev), area_(area), quant_(quant), params_(params), codec_(codec::find(quant)) {}

  Result<std::span<const std::byte>> encode(const void* src, size_t count, uint64_t seed) override;
  Status decode(std::span<const std::byte> encoded, size_t count, void* dst) override;
  Status combine(ecclRedOp_t op, std::span<const std::byte> encoded, size_t count,
                 const void* local, void* dst) override;
  Status divide(void* data, size_t count, uint64_t divisor) override;

 private:
  // The encoded bytes onto the device (encodedIn), as the stream's next work.
  Result<const std::byte*> upload(std::span<const std::byte> encoded);
  // Waits for the stream's work so far.
  Status finish();

  cuda::Device& dev_;
  StagingArea& area_;
  ecclQuantization_t quant_;
  codec::Params params_;
  const codec::Codec* codec_;
};

}  // namespace eccl::comm
