// The DLPack tensor ABI (https://dmlc.github.io/dlpack/latest/c_api.html), the part this
// module consumes: the versioned capsule "dltensor_versioned" (DLPack 1.x, which says whether
// the memory is read-only) from producers that take `__dlpack__(max_version=(1, 0))`, else the
// unversioned "dltensor" (DLPack 0.x: torch 1.13, older NumPy). The layout is fixed by the
// standard; these are its definitions, not a copy of the header, so the build needs no extra
// package.
#ifndef ECCL_PYTHON_DLPACK_H_
#define ECCL_PYTHON_DLPACK_H_

#include <cstdint>

namespace eccl::python::dlpack {

enum DeviceType : int32_t { kCpu = 1, kCuda = 2, kCudaHost = 3, kRocm = 10, kCudaManaged = 13 };
enum TypeCode : uint8_t { kInt = 0, kUInt = 1, kFloat = 2, kBfloat = 4, kComplex = 5, kBool = 6 };

struct Device {
  int32_t deviceType;
  int32_t deviceId;
};

struct DataType {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
};

struct Tensor {
  void* data;
  Device device;
  int32_t ndim;
  DataType dtype;
  int64_t* shape;
  int64_t* strides;  // in elements; NULL = compact row-major
  uint64_t byteOffset;
};

struct ManagedTensor {
  Tensor tensor;
  void* managerContext;
  void (*deleter)(ManagedTensor* self);
};

struct Version {
  uint32_t major;
  uint32_t minor;
};

constexpr uint64_t kFlagReadOnly = 1u << 0;  // the consumer must not write
constexpr uint64_t kFlagIsCopied = 1u << 1;  // the producer copied the data for this export

struct ManagedTensorVersioned {
  Version version;
  void* managerContext;
  void (*deleter)(ManagedTensorVersioned* self);
  uint64_t flags;
  Tensor tensor;
};

}  // namespace eccl::python::dlpack

#endif  // ECCL_PYTHON_DLPACK_H_
