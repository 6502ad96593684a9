# Compiles the Hopper rel-pos attention kernels for sm_90a with `ptxas -v` and fails when ptxas says
# it serialized their wgmma instructions (note C7520: a wgmma in a path it cannot prove uniform makes
# it wait for every wgmma before issuing the next; the kernel ran ~1.45x slower so until 2026-12-01;
# C7513: a wgmma operand written by other instructions while a wgmma is in flight, e.g. O rescaled
# under a branch; C7511 / C7512: too few registers for the wgmma pipeline).
# Runs without a GPU. Arguments: -DNVCC=... -DSRC=... -DINCLUDES="dir;dir" -DOUT=file.cubin
set(include_flags "")
foreach(dir ${INCLUDES})
  list(APPEND include_flags "-I${dir}")
endforeach()
execute_process(
  COMMAND ${NVCC} -std=c++17 -O3 --expt-relaxed-constexpr ${include_flags} -gencode arch=compute_90a,code=sm_90a
          -Xptxas -v -cubin -o ${OUT} ${SRC}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "nvcc failed on ${SRC}:\n${out}${err}")
endif()
string(REGEX MATCHALL "Compiling entry function '[^']*rel_pos_attention_wgmma_kernel" kernels "${err}")
list(LENGTH kernels n)
if(n EQUAL 0)
  message(FATAL_ERROR "ptxas compiled no rel_pos_attention_wgmma_kernel from ${SRC}:\n${err}")
endif()
if(err MATCHES "wgmma.mma_async instructions are serialized")
  message(FATAL_ERROR "ptxas serialized wgmma instructions (C75xx):\n${err}")
endif()
message(STATUS "${n} kernels, no wgmma serialization")
