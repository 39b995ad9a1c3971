# Optional backends: ECCL_WITH_<X> = AUTO (build it when found), ON (fail when
# not found) or OFF. Each says on the configure line what it found, or why not.

set(ECCL_WITH_CUDA AUTO CACHE STRING "CUDA buffers and kernels (plugin libeccl_cuda): AUTO, ON or OFF")
set_property(CACHE ECCL_WITH_CUDA PROPERTY STRINGS AUTO ON OFF)
set(ECCL_WITH_NCCL AUTO CACHE STRING "NCCL backend for CUDA buffers (transport \"nccl\"): AUTO, ON or OFF")
set_property(CACHE ECCL_WITH_NCCL PROPERTY STRINGS AUTO ON OFF)
set(ECCL_WITH_IBVERBS AUTO CACHE STRING "RDMA verbs transport (transport \"ibverbs\"): AUTO, ON or OFF")
set_property(CACHE ECCL_WITH_IBVERBS PROPERTY STRINGS AUTO ON OFF)

function(eccl_backend_result name found why)
  if(ECCL_WITH_${name} STREQUAL "ON" AND NOT found)
    message(FATAL_ERROR "ECCL_WITH_${name}=ON but ${why}")
  endif()
  if(found)
    message(STATUS "ECCL_WITH_${name}=${ECCL_WITH_${name}}: building it (${why})")
  else()
    message(STATUS "ECCL_WITH_${name}=${ECCL_WITH_${name}}: not building it (${why})")
  endif()
endfunction()

# The toolkit's headers and libraries: the CUDA plugin needs them with nvcc,
# the NCCL backend only the headers (nccl.h includes cuda_runtime.h).
if(NOT (ECCL_WITH_CUDA STREQUAL "OFF" AND ECCL_WITH_NCCL STREQUAL "OFF"))
  find_package(CUDAToolkit QUIET)
endif()

set(ECCL_CUDA_FOUND OFF)
if(ECCL_WITH_CUDA STREQUAL "OFF")
  eccl_backend_result(CUDA OFF "turned off")
else()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER AND CUDAToolkit_FOUND)
    # Hopper (H100/H200) by default: one architecture keeps the build short.
    # Set CMAKE_CUDA_ARCHITECTURES for others (e.g. "80;90").
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES AND NOT DEFINED ENV{CUDAARCHS})
      set(CMAKE_CUDA_ARCHITECTURES 90)
    endif()
    enable_language(CUDA)
    set(ECCL_CUDA_FOUND ON)
    eccl_backend_result(CUDA ON "nvcc ${CMAKE_CUDA_COMPILER_VERSION}, CUDA toolkit \
${CUDAToolkit_VERSION} in ${CUDAToolkit_LIBRARY_DIR}, architectures ${CMAKE_CUDA_ARCHITECTURES}")
  elseif(NOT CMAKE_CUDA_COMPILER)
    eccl_backend_result(CUDA OFF "no working CUDA compiler: put nvcc on PATH or set CMAKE_CUDA_COMPILER")
  else()
    eccl_backend_result(CUDA OFF "no CUDA toolkit libraries found: set CUDAToolkit_ROOT")
  endif()
endif()

# NCCL: the "nccl" transport's backend (src/transport/nccl/), compiled into the
# core against nccl.h (no nvcc needed); libnccl.so.2 is loaded at run time.
# Its ops need the CUDA plugin at run time for streams and events.
set(ECCL_NCCL_FOUND OFF)
if(ECCL_WITH_NCCL STREQUAL "OFF")
  eccl_backend_result(NCCL OFF "turned off")
elseif(NOT CUDAToolkit_FOUND)
  eccl_backend_result(NCCL OFF "it needs the CUDA toolkit's headers: set CUDAToolkit_ROOT")
else()
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} ENV NCCL_HOME
            PATH_SUFFIXES include)
  find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${CUDAToolkit_LIBRARY_DIR} ENV NCCL_HOME
               PATH_SUFFIXES lib lib64)
  set(_nccl_version "")
  if(NCCL_INCLUDE_DIR)
    file(STRINGS "${NCCL_INCLUDE_DIR}/nccl.h" _nccl_defs REGEX "^#define NCCL_(MAJOR|MINOR|PATCH) ")
    foreach(_part MAJOR MINOR PATCH)
      string(REGEX REPLACE ".*NCCL_${_part} ([0-9]+).*" "\\1" _v "${_nccl_defs}")
      list(APPEND _nccl_version ${_v})
    endforeach()
    list(JOIN _nccl_version "." _nccl_version)
  endif()
  # Only the header is needed here; the library is what run time loads.
  if(NCCL_LIBRARY)
    set(_nccl_lib "${NCCL_LIBRARY}, loaded at run time")
  else()
    set(_nccl_lib "no libnccl here: install it where the library will run")
  endif()
  if(NCCL_INCLUDE_DIR AND _nccl_version VERSION_GREATER_EQUAL 2.18)
    set(ECCL_NCCL_FOUND ON)
    eccl_backend_result(NCCL ON "NCCL ${_nccl_version}: ${NCCL_INCLUDE_DIR}/nccl.h; ${_nccl_lib}")
  elseif(NCCL_INCLUDE_DIR)
    eccl_backend_result(NCCL OFF "NCCL ${_nccl_version} is older than 2.18")
  else()
    eccl_backend_result(NCCL OFF "nccl.h not found: set NCCL_HOME")
  endif()
endif()

# RDMA verbs: the "ibverbs" transport (src/transport/ibverbs/), compiled into
# the core against rdma-core's <infiniband/verbs.h>; libibverbs.so.1 is loaded
# at run time (dlopen), so libeccl runs where rdma-core is absent.
set(ECCL_IBVERBS_FOUND OFF)
if(ECCL_WITH_IBVERBS STREQUAL "OFF")
  eccl_backend_result(IBVERBS OFF "turned off")
else()
  find_path(IBVERBS_INCLUDE_DIR infiniband/verbs.h)
  find_library(IBVERBS_LIBRARY NAMES ibverbs libibverbs.so.1)
  if(IBVERBS_INCLUDE_DIR)
    set(ECCL_IBVERBS_FOUND ON)
    if(IBVERBS_LIBRARY)
      set(_ibv_lib "${IBVERBS_LIBRARY}, loaded at run time")
    else()
      set(_ibv_lib "no libibverbs here: install rdma-core where the library will run")
    endif()
    eccl_backend_result(IBVERBS ON "${IBVERBS_INCLUDE_DIR}/infiniband/verbs.h; ${_ibv_lib}")
  else()
    eccl_backend_result(IBVERBS OFF "infiniband/verbs.h not found: install libibverbs-dev (rdma-core)")
  endif()
endif()
