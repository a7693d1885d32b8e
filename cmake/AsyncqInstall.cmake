# What `cmake --install` puts where (GNUInstallDirs), and the Debian package
# CPack makes of it (`cpack -G DEB` in the build directory).
#
# Components: runtime (the programs, libasyncq.so.N, man pages), dev
# (headers, libasyncq.a, libasyncq.so, asyncq.pc) and system (the broker's
# systemd unit and settings template). A plain `cmake --install` installs
# runtime and dev; system only goes into the package, since the unit names
# the package's paths (/usr/bin) whatever prefix the build was made for.
include(GNUInstallDirs)

install(TARGETS asyncq-broker asyncq-producer asyncq-consumer asyncq
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime)
install(TARGETS asyncq_shared
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_SKIP)
install(TARGETS asyncq_shared
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev NAMELINK_ONLY)
install(TARGETS asyncq_static ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)
install(FILES ${ASYNCQ_PUBLIC_HEADERS}
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/asyncq COMPONENT dev)

# asyncq.pc finds the prefix from its own place, so one file serves every
# prefix (cmake --install --prefix, the package's /usr).
file(RELATIVE_PATH ASYNCQ_PC_TO_PREFIX /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
string(REGEX REPLACE "/$" "" ASYNCQ_PC_TO_PREFIX "${ASYNCQ_PC_TO_PREFIX}")
configure_file(packaging/asyncq.pc.in ${CMAKE_BINARY_DIR}/packaging/asyncq.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/packaging/asyncq.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)

# Man pages made by help2man from each program's --help and --version.
find_program(ASYNCQ_HELP2MAN help2man)
if(ASYNCQ_HELP2MAN)
  set(ASYNCQ_MAN_PAGES)
  foreach(entry
      "asyncq-broker|holds asyncq queues: accepts puts, delivers items, answers joins"
      "asyncq-producer|puts items into an asyncq queue"
      "asyncq-consumer|gets items from an asyncq queue and acks them"
      "asyncq|puts, joins, stats, dead letters, shutdown and keys of an asyncq broker")
    string(REPLACE "|" ";" entry "${entry}")
    list(GET entry 0 program)
    list(GET entry 1 description)
    set(page ${CMAKE_BINARY_DIR}/man/${program}.1)
    add_custom_command(OUTPUT ${page}.gz
      COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/man
      COMMAND ${ASYNCQ_HELP2MAN} --no-info --no-discard-stderr --section=1
              --name=${description} --output=${page} $<TARGET_FILE:${program}>
      # -n: no name or time stamp inside, so the same sources make the same file.
      COMMAND gzip -9nf ${page}
      DEPENDS ${program}
      COMMENT "Man page of ${program} (help2man)"
      VERBATIM)
    list(APPEND ASYNCQ_MAN_PAGES ${page}.gz)
  endforeach()
  add_custom_target(asyncq_man ALL DEPENDS ${ASYNCQ_MAN_PAGES})
  install(FILES ${ASYNCQ_MAN_PAGES} DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT runtime)
else()
  message(STATUS "help2man not found: no man pages (apt-get install help2man)")
endif()

# The package installs under /usr whatever CMAKE_INSTALL_PREFIX says.
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(ASYNCQ_UNIT_BINDIR ${CPACK_PACKAGING_INSTALL_PREFIX}/${CMAKE_INSTALL_BINDIR})
configure_file(packaging/asyncq-broker.service.in
  ${CMAKE_BINARY_DIR}/packaging/asyncq-broker.service @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/packaging/asyncq-broker.service
  DESTINATION lib/systemd/system COMPONENT system EXCLUDE_FROM_ALL)
install(FILES packaging/asyncq-broker.default
  DESTINATION ${CMAKE_INSTALL_DATADIR}/asyncq COMPONENT system EXCLUDE_FROM_ALL)

# Two packages: asyncq (programs, library, service) and asyncq-dev.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME asyncq)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "asyncq maintainers <asyncq@localhost>")
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL runtime system dev)
set(CPACK_COMPONENT_RUNTIME_GROUP asyncq)
set(CPACK_COMPONENT_SYSTEM_GROUP asyncq)
set(CPACK_COMPONENT_DEV_GROUP dev)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)
set(CPACK_DEBIAN_ASYNCQ_PACKAGE_NAME asyncq)
set(CPACK_DEBIAN_ASYNCQ_DESCRIPTION
  "work queues over ZeroMQ with asyncio.Queue's semantics
The asyncq broker (a systemd service, asyncq-broker), the producer and
consumer programs, the asyncq command and the shared C client library.")
# dpkg-shlibdeps adds the shared libraries' packages (libzmq5, libczmq4...).
set(CPACK_DEBIAN_ASYNCQ_PACKAGE_SHLIBDEPS ON)
# ExecReload runs kill (procps).
set(CPACK_DEBIAN_ASYNCQ_PACKAGE_DEPENDS "adduser, procps")
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_ASYNCQ_PACKAGE_CONTROL_EXTRA
  ${PROJECT_SOURCE_DIR}/packaging/postinst
  ${PROJECT_SOURCE_DIR}/packaging/prerm
  ${PROJECT_SOURCE_DIR}/packaging/postrm
  ${PROJECT_SOURCE_DIR}/packaging/triggers)
set(CPACK_DEBIAN_DEV_PACKAGE_NAME asyncq-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_DEV_DESCRIPTION
  "C client library of asyncq: headers, static library, pkg-config file
Build with: cc prog.c $(pkg-config --cflags --libs asyncq).")
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
  "asyncq (= ${PROJECT_VERSION}), libzmq3-dev, libczmq-dev")
include(CPack)
