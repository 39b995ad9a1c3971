// The DLPack tensor ABI (https://dmlc.github.io/dlpack/latest/c_api.html), the part this
// module consumes: the unversioned capsule "dltensor" that every `__dlpack__()` returns when
// called without max_version (DLPack 0.x, still the default of torch and NumPy). The layout is
// fixed by the standard; these are its definitions, not a copy of the header, so the build
// needs no extra package.
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

}  // namespace eccl::python::dlpack

#endif  // ECCL_PYTHON_DLPACK_H_
