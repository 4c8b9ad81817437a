# cmake -P script run by CTest (tests/install/CMakeLists.txt passes the variables).
cmake_minimum_required(VERSION 3.25)

function(step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}):\n${out}")
  endif()
  message(STATUS "${what}: ok")
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

if(NOT EXISTS "${VMMU_BINARY_DIR}/cmake_install.cmake")
  message("VMMU_INSTALL_TEST_SKIPPED: no cmake_install.cmake in ${VMMU_BINARY_DIR}")
  return()
endif()

file(REMOVE_RECURSE "${WORK_DIR}")
set(prefix "${WORK_DIR}/prefix")
set(install_args --install "${VMMU_BINARY_DIR}" --prefix "${prefix}")
if(BUILD_TYPE)
  list(APPEND install_args --config "${BUILD_TYPE}")
endif()
step("cmake --install" ${CMAKE_COMMAND} ${install_args})

foreach(f include/vmmu/vm/vm.hpp include/vmmu/x86/page_fault.hpp bin/vmmu)
  if(NOT EXISTS "${prefix}/${f}")
    message(FATAL_ERROR "not installed: ${f}")
  endif()
endforeach()

# find_package(vmmu) from the prefix only (the package registries could name another vmmu).
step("configure examples/tiny_vmm" ${CMAKE_COMMAND} -S "${VMMU_SOURCE_DIR}/examples/tiny_vmm"
  -B "${WORK_DIR}/tiny_vmm" -G "${GENERATOR}" "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}"
  "-DCMAKE_CXX_COMPILER=${CXX}" "-DCMAKE_CXX_FLAGS=${CXX_FLAGS} -Wall -Wextra -Werror"
  "-DCMAKE_EXE_LINKER_FLAGS=${LINKER_FLAGS}" "-DCMAKE_BUILD_TYPE=${BUILD_TYPE}"
  "-DCMAKE_PREFIX_PATH=${prefix}" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
  -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF)
file(STRINGS "${WORK_DIR}/tiny_vmm/CMakeCache.txt" vmmu_dir REGEX "^vmmu_DIR:")
string(FIND "${vmmu_dir}" "${prefix}/" at)
if(at EQUAL -1)
  message(FATAL_ERROR "find_package(vmmu) found another vmmu: ${vmmu_dir}")
endif()
step("build examples/tiny_vmm" ${CMAKE_COMMAND} --build "${WORK_DIR}/tiny_vmm")
step("run tiny_vmm" "${WORK_DIR}/tiny_vmm/tiny_vmm")

find_program(PKG_CONFIG NAMES pkg-config pkgconf)
if(NOT PKG_CONFIG)
  message("VMMU_INSTALL_TEST_SKIPPED: no pkg-config (the find_package part passed)")
  return()
endif()
file(GLOB pc_file "${prefix}/lib*/pkgconfig/vmmu.pc" "${prefix}/lib/*/pkgconfig/vmmu.pc")
if(NOT pc_file)
  message(FATAL_ERROR "vmmu.pc not installed under ${prefix}")
endif()
list(GET pc_file 0 pc_file)
get_filename_component(pc_dir "${pc_file}" DIRECTORY)
set(ENV{PKG_CONFIG_PATH} "${pc_dir}")
step("pkg-config --cflags --libs vmmu" ${PKG_CONFIG} --cflags --libs vmmu)
string(STRIP "${step_output}" pc_flags)
separate_arguments(pc_flags UNIX_COMMAND "${pc_flags}")
separate_arguments(cxx_flags UNIX_COMMAND "${CXX_FLAGS} ${LINKER_FLAGS}")
file(WRITE "${WORK_DIR}/one_line.cpp"
  "#include \"vm/vm.hpp\"\nint main() { vmmu::Vm vm; return vm.stats().empty() ? 1 : 0; }\n")
step("compile with pkg-config" ${CXX} -std=c++20 ${cxx_flags} "${WORK_DIR}/one_line.cpp"
  -o "${WORK_DIR}/one_line" ${pc_flags})
step("run the pkg-config program" "${WORK_DIR}/one_line")
