# Optional backends: ECCL_WITH_<X> = AUTO (build it when found), ON (fail when
# not found) or OFF. Each says on the configure line what it found, or why not.

set(ECCL_WITH_CUDA AUTO CACHE STRING "CUDA buffers and kernels (plugin libeccl_cuda): AUTO, ON or OFF")
set_property(CACHE ECCL_WITH_CUDA PROPERTY STRINGS AUTO ON OFF)

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

set(ECCL_CUDA_FOUND OFF)
if(ECCL_WITH_CUDA STREQUAL "OFF")
  eccl_backend_result(CUDA OFF "turned off")
else()
  include(CheckLanguage)
  check_language(CUDA)
  find_package(CUDAToolkit QUIET)
  if(CMAKE_CUDA_COMPILER AND CUDAToolkit_FOUND)
    # Hopper (H100/H200) by default: one architecture keeps the build short.
    # Set CMAKE_CUDA_ARCHITECTURES for others (e.g. "80;90").
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
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
