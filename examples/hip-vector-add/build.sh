#!/bin/sh
# Builds hip-vector-add into OUT (default /build/bin) with one code object per AMD GPU
# architecture in PYTORCH_ROCM_ARCH ("gfx90a;gfx942", as ROCm PyTorch builds name them;
# AMDGPU_TARGETS, then GPU_TARGETS, when it is unset), using $HIPCC, the hipcc on PATH or ROCm's.
set -eu
out=${1:-/build/bin}
src=$(cd "$(dirname "$0")" && pwd)
archs=${PYTORCH_ROCM_ARCH:-${AMDGPU_TARGETS:-${GPU_TARGETS:-gfx90a;gfx942}}}
# hipcc compiles for NVIDIA when it finds nvcc on PATH, unless told the platform.
export HIP_PLATFORM="${HIP_PLATFORM:-amd}"
flags=""
for arch in $(echo "$archs" | tr ';,' '  '); do
  flags="$flags --offload-arch=$arch"
done
listed=$(echo "$archs" | tr ';' ',')
hipcc=${HIPCC:-$(command -v hipcc || echo /opt/rocm/bin/hipcc)}
mkdir -p "$out"
# shellcheck disable=SC2086
"$hipcc" $flags -O2 -DOFFLOAD_ARCHS="\"$listed\"" -o "$out/hip-vector-add" "$src/vector_add.hip"
echo "built $out/hip-vector-add for $listed"
