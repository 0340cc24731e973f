#!/bin/sh
# Builds saxpy for the architectures in CUDA_ARCHS ("80;90"), plus PTX for the newest
# one (so newer GPUs can JIT it), with the nvcc found at $CUDA_HOME/bin.
set -eu
out=${1:-/build/bin}
mkdir -p "$out"
gencode=""
last=""
for arch in $(echo "${CUDA_ARCHS:-80;90}" | tr ';' ' '); do
  gencode="$gencode -gencode arch=compute_${arch},code=sm_${arch}"
  last=$arch
done
gencode="$gencode -gencode arch=compute_${last},code=compute_${last}"
# Compile and link separately, with -objtemp (nvcc 12.4 and later): nvcc otherwise names its
# intermediate files tmpxft_<pid>_..., and that name lands in the object's symbol table,
# so two builds differ. With -objtemp they are named after the object: same bytes.
obj=${TMPDIR:-/tmp}/saxpy-obj
mkdir -p "$obj"
# The wheels' headers and libraries are under include/ and lib/; nvcc 13.0's profile looks
# in targets/x86_64-linux/ (13.2's does not): name them, so both releases build.
paths="-I$CUDA_HOME/include -L$CUDA_HOME/lib"
# shellcheck disable=SC2086
"$CUDA_HOME/bin/nvcc" -O2 $paths $gencode -c -objtemp -o "$obj/saxpy.o" "$(dirname "$0")/saxpy.cu"
# shellcheck disable=SC2086
"$CUDA_HOME/bin/nvcc" -O2 $paths $gencode -o "$out/saxpy" "$obj/saxpy.o"
echo "built $out/saxpy for sm: ${CUDA_ARCHS:-80;90} (+PTX compute_${last})"
