# asyncq_test(NAME SOURCES... [LIBS libs...] [TIMEOUT seconds] [LABELS labels...])
#
# Builds one cmocka test program and registers it with CTest. Debian's cmocka
# ships neither add_cmocka_test nor a cmocka::cmocka target, hence this helper.
# End-to-end tests find the programs under test through ASYNCQ_BIN_DIR.
function(asyncq_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} PkgConfig::CMOCKA)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME ${name} COMMAND ${name})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 60)
  endif()
  set_tests_properties(${name} PROPERTIES
    TIMEOUT ${T_TIMEOUT}
    LABELS "${T_LABELS}"
    ENVIRONMENT "ASYNCQ_BIN_DIR=${CMAKE_BINARY_DIR}/bin")
endfunction()
