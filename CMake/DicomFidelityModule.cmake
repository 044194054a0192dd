#-----------------------------------------------------------------------------
# One DicomFidelity scripted module: <Name>.py (the shell), every file of <Name>Lib/ (globbed, so none is forgotten)
# and the given resources. With a panel, Slicer's generic tests and the module's self-test are registered too.
#
#   dicomfidelity_add_module(NAME SegmentationQA RESOURCES Resources/UI/SegmentationQA.ui ... [WITH_PANEL])
function(dicomfidelity_add_module)
  cmake_parse_arguments(MY "WITH_PANEL" "NAME" "RESOURCES" ${ARGN})
  file(GLOB_RECURSE _lib_scripts RELATIVE ${CMAKE_CURRENT_SOURCE_DIR} ${MY_NAME}Lib/*.py)
  set(_generic_tests)
  if(MY_WITH_PANEL)
    set(_generic_tests WITH_GENERIC_TESTS)
  endif()
  slicerMacroBuildScriptedModule(
    NAME ${MY_NAME}
    SCRIPTS ${MY_NAME}.py ${_lib_scripts}
    RESOURCES ${MY_RESOURCES}
    ${_generic_tests}
    )
  if(BUILD_TESTING AND MY_WITH_PANEL)
    # the module's self-test inside a real Slicer; the batch-mode CLI tests are in Testing/Slicer
    slicer_add_python_unittest(SCRIPT ${MY_NAME}.py)
  endif()
endfunction()
