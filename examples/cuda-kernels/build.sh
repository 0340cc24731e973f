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
# shellcheck disable=SC2086
"$CUDA_HOME/bin/nvcc" -O2 $gencode -o "$out/saxpy" "$(dirname "$0")/saxpy.cu"
echo "built $out/saxpy for sm: ${CUDA_ARCHS:-80;90} (+PTX compute_${last})"
