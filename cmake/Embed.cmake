# Writes OUTPUT, a C file defining `const unsigned char NAME[]` (the bytes
# of INPUT, NUL-terminated) and `const size_t NAME_size` (without the NUL):
# the dashboard page goes into the broker's binary, so the broker serves it
# with nothing to install beside it.
#   cmake -DINPUT=file -DOUTPUT=file.c -DNAME=symbol -P Embed.cmake
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" digits)
math(EXPR size "${digits} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "(0x[0-9a-f][0-9a-f],){16}" "\\0\n" bytes "${bytes}")
file(WRITE "${OUTPUT}.tmp"
  "/* Generated from ${INPUT} by cmake/Embed.cmake. */\n#include <stddef.h>\n"
  "const unsigned char ${NAME}[] = {\n${bytes}0x00};\n"
  "const size_t ${NAME}_size = ${size};\n")
file(RENAME "${OUTPUT}.tmp" "${OUTPUT}")
