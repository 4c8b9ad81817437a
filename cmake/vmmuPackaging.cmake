# Installing the library for embedders (docs/EMBEDDING.md): the static layer libraries, their
# headers under include/vmmu/ (so `#include "vm/vm.hpp"` works as in the tree), a CMake package
# exporting vmmu::vmmu, and vmmu.pc. Included from the top-level CMakeLists.txt after the layers.
include(CMakePackageConfigHelpers)

# The one target an embedder links: every public layer plus what their headers and archives need.
# sim is included so the .vmt reader and replayer are there too; unused archives cost nothing.
add_library(vmmu_library INTERFACE)
target_link_libraries(vmmu_library INTERFACE vmmu_sim fmt::fmt nlohmann_json::nlohmann_json Threads::Threads)
set_target_properties(vmmu_library PROPERTIES EXPORT_NAME vmmu)
add_library(vmmu::vmmu ALIAS vmmu_library)

# The layers, by their exported names (vmmu::x86 ... vmmu::sim), in the tree as once installed.
set(VMMU_INSTALLED_LAYERS x86 guest mmu vm sim)
foreach(layer IN LISTS VMMU_INSTALLED_LAYERS)
  set_target_properties(vmmu_${layer} PROPERTIES EXPORT_NAME ${layer})
  add_library(vmmu::${layer} ALIAS vmmu_${layer})
  # Every header, internal ones too: public headers include some of them.
  # Not the zstd file streams of vmmu_sim_io (sim/workload_*.hpp), which is not installed.
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${layer}/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/vmmu/${layer}
          FILES_MATCHING PATTERN "*.hpp" PATTERN "workload_*.hpp" EXCLUDE)
endforeach()
list(TRANSFORM VMMU_INSTALLED_LAYERS PREPEND vmmu_ OUTPUT_VARIABLE vmmu_layer_targets)

set(VMMU_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/vmmu)
install(TARGETS vmmu_library ${vmmu_layer_targets} EXPORT vmmuTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/vmmu)
install(EXPORT vmmuTargets NAMESPACE vmmu:: DESTINATION ${VMMU_CMAKE_DIR})

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/vmmuConfig.cmake.in
  ${PROJECT_BINARY_DIR}/vmmuConfig.cmake INSTALL_DESTINATION ${VMMU_CMAKE_DIR})
# 0.x: minor versions may break the API.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/vmmuConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/vmmuConfig.cmake ${PROJECT_BINARY_DIR}/vmmuConfigVersion.cmake
        DESTINATION ${VMMU_CMAKE_DIR})

# vmmu.pc finds its prefix from its own place, so `cmake --install --prefix DIR` gives a working
# file wherever DIR is.
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(VMMU_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  file(RELATIVE_PATH vmmu_pc_up "/p/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/p")
  string(REGEX REPLACE "/$" "" vmmu_pc_up "${vmmu_pc_up}")
  set(VMMU_PC_PREFIX "\${pcfiledir}/${vmmu_pc_up}")
endif()
list(TRANSFORM vmmu_layer_targets PREPEND -l OUTPUT_VARIABLE vmmu_pc_libs)
list(REVERSE vmmu_pc_libs)  # static archives: users before what they use
list(JOIN vmmu_pc_libs " " VMMU_PC_LIBS)
configure_file(${PROJECT_SOURCE_DIR}/cmake/vmmu.pc.in ${PROJECT_BINARY_DIR}/vmmu.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/vmmu.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
