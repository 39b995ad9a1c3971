include(CMakePackageConfigHelpers)

install(TARGETS eccl eccl_static EXPORT ecclTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES include/eccl/eccl.h ${PROJECT_BINARY_DIR}/include/eccl/version.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/eccl)
install(TARGETS eccl-master eccl-bench RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
if(TARGET eccl_cuda)
  # Next to libeccl, where it looks for it (cuda/device.cc); loaded, never linked.
  install(TARGETS eccl_cuda LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
endif()
install(EXPORT ecclTargets NAMESPACE eccl:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/eccl)

configure_package_config_file(cmake/ecclConfig.cmake.in
  ${PROJECT_BINARY_DIR}/ecclConfig.cmake INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/eccl)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/ecclConfigVersion.cmake
  COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/ecclConfig.cmake ${PROJECT_BINARY_DIR}/ecclConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/eccl)

configure_file(cmake/eccl.pc.in ${PROJECT_BINARY_DIR}/eccl.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/eccl.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
