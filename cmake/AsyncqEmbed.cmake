# asyncq_embed(OUTPUT INPUT NAME): a rule that writes the C file OUTPUT with
# the bytes of INPUT as `NAME` and `NAME_size` (cmake/Embed.cmake), for the
# targets of the calling directory that list OUTPUT as a source.
function(asyncq_embed output input name)
  add_custom_command(
    OUTPUT ${output}
    COMMAND ${CMAKE_COMMAND} -DINPUT=${input} -DOUTPUT=${output} -DNAME=${name}
            -P ${PROJECT_SOURCE_DIR}/cmake/Embed.cmake
    DEPENDS ${input} ${PROJECT_SOURCE_DIR}/cmake/Embed.cmake
    VERBATIM)
endfunction()
