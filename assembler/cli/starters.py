"""What ``assemble init`` writes: one :class:`Starter` per starting point, in one table
(:data:`STARTERS`). Each is a small manifest that builds as written (its bases bootstrapped
from Debian's mirror: no container registry is needed) and the few files it compiles or
copies, for the user to grow. ``{name}`` in a file is the project's name (nothing else in
them is a placeholder: :func:`files_of`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Starter:
    """A starting point: what it is, and its files (path -> text; ``assemble.yaml`` the manifest)."""

    describe: str
    files: dict[str, str]


_HEADER = """\
# yaml-language-server: $schema=.assemble/manifest.schema.json
# Written by `assemble init {kind}`. Build it: `assemble plan assemble.yaml` shows what will
# run; `assemble assemble.yaml` builds it into out/ (an OCI layout) and runs its tests;
# `assemble run oci:out:{name}` runs it. Every field: `assemble schema`, or the docs'
# manifest reference.
"""

_PYTHON = (
    _HEADER.replace("{kind}", "python")
    + """\
name: {name}
bases:
  devel: {bootstrap: {suite: bookworm, variant: minbase, packages: [python3-pip]}}
  runtime: {bootstrap: {suite: bookworm, variant: minbase, packages: [python3]}}
sources:
  # What the deps step reads: requirements.txt, and not the code (app/, copied as a layer of
  # its own), the models (models/: weights beside the image, below), the manifest or its
  # locks. So a code edit or a new model reruns no pip install; a requirements edit does.
  requirements: {path: ., exclude: [app/, models/, out/, .assemble/, .git/, "assemble.*"]}
compile:
  # requirements.txt's packages, installed by pip into a folder of their own (no venv needed).
  - name: deps
    base: devel
    sources: [requirements]
    # The set pip installs, locked like any other: `assemble lock assemble.yaml` pins it (and
    # what it brings) in assemble.lock, and every build installs those versions.
    python_sets:
      - {name: deps, requirements_file: requirements.txt, python: "3.11", environment: /opt/{name}/site}
    run:
      - mkdir -p /opt/{name}/site
      # A missing requirements.txt is an error, not an empty layer.
      - >-
        test -f /src/requirements/requirements.txt
        || { echo "deps: no requirements.txt in the project: write one (empty: nothing to install)" >&2; exit 1; }
      # Only where it names a package: pip refuses an empty list. Compiled where the files
      # stay (pip --target would name its random temporary folder in each .pyc).
      - >-
        if grep -q '^[^#[:space:]]' /src/requirements/requirements.txt;
        then pip install --no-cache-dir --no-compile --target /opt/{name}/site -r /src/requirements/requirements.txt
        && python3 -m compileall -q -d /opt/{name}/site /opt/{name}/site;
        else echo "deps: requirements.txt names no package: nothing installed"; fi
    artifacts:
      site: {path: /opt/{name}/site, to: /opt/{name}/site}
image:
  base: runtime
  layers:
    - artifact: deps.site
    - copy: {from: app/, to: /opt/{name}/app/}
  config:
    env: {PYTHONPATH: /opt/{name}/site}
    entrypoint: [python3, /opt/{name}/app/main.py]
outputs: ["oci:out:{name}"]
# Model weights go beside the image, never in a layer or a source: a new checkpoint rebuilds
# nothing (docs: guides/weights.md). Put them in models/ and say where the app finds them:
# weights:
#   model: {source: models/, at: /models/{name}}
tests:
  - name: starts
    output: ["^{name}: ready"]
"""
)

_PYTHON_MAIN = '''\
"""{name}: started by `assemble init python`. Replace this with your application."""

import sys


def main() -> int:
    print(f"{name}: ready (Python {sys.version_info.major}.{sys.version_info.minor})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''

_CPP = (
    _HEADER.replace("{kind}", "cpp")
    + """\
name: {name}
bases:
  devel: {bootstrap: {suite: bookworm, variant: minbase, packages: [g++, cmake, make]}}
  runtime: {bootstrap: {suite: bookworm, variant: minbase}}
sources:
  # the code the build reads: not the models (models/, beside the image), the manifest or its locks
  project: {path: ., exclude: [models/, out/, .assemble/, .git/, "assemble.*"]}
compile:
  - name: service
    base: devel
    sources: [project]
    cache: [/build]               # the build tree stays between builds: an edit recompiles one file
    run:
      - cmake -S /src/project -B /build -DCMAKE_BUILD_TYPE=Release
      - cmake --build /build -j2
    artifacts:
      bin: {path: /build/{name}, to: /usr/local/bin/{name}}
image:
  base: runtime
  layers:
    - artifact: service.bin
  config:
    entrypoint: [/usr/local/bin/{name}]
outputs: ["oci:out:{name}"]
tests:
  - name: starts
    output: ["^{name}: ready$"]
"""
)

_CMAKE = """\
cmake_minimum_required(VERSION 3.16)
project({name} CXX)
set(CMAKE_CXX_STANDARD 17)
add_executable({name} src/main.cpp)
"""

_CPP_MAIN = """\
// {name}: started by `assemble init cpp`. Replace this with your service.
#include <iostream>

int main() {
  std::cout << "{name}: ready" << std::endl;
  return 0;
}
"""

_CUDA = (
    _HEADER.replace("{kind}", "cuda")
    + """\
name: {name}
params:
  cuda_archs: "80;90"             # CMAKE_CUDA_ARCHITECTURES-style: sm_80 and sm_90 (and PTX for 90)
bases:
  devel: {bootstrap: {suite: bookworm, variant: minbase, packages: [g++]}}
  runtime: {bootstrap: {suite: bookworm, variant: minbase}}
sources:
  # the code the build reads: not the models (models/, beside the image), the manifest or its locks
  project: {path: ., exclude: [models/, out/, .assemble/, .git/, "assemble.*"]}
compile:
  # A CUDA toolkit from NVIDIA's pip wheels (the cuda-toolchain recipe): no nvidia/cuda image.
  - name: cuda
    use: cuda-toolchain
    base: devel
    with: {cuda_version: "13.0.2", cuda_wheels: "13.0.88", cudart_wheel: "13.0.96", components: "nvcc,crt,nvvm,cudart"}
  - name: kernels
    base: devel
    sources: [project]
    inputs: [cuda.prefix]
    env: {CUDA_HOME: /opt/cuda, CUDA_ARCHS: "${cuda_archs}"}
    run: [sh /src/project/build.sh /build]
    artifacts:
      bin: {path: /build/{name}, to: /usr/local/bin/{name}}
image:
  base: runtime
  layers:
    - artifact: kernels.bin
  config:
    entrypoint: [/usr/local/bin/{name}]
outputs: ["oci:out:{name}"]
tests:
  - name: computes                # on the CPU where there is no GPU; on a GPU node with gpu: true
    output: ["^{name}: 1024 values checked"]
"""
)

_CUDA_MAIN = """\
// {name}: started by `assemble init cuda`. Adds two vectors on the GPU, or on the CPU where
// there is none, and checks every value.
#include <cstdio>
#include <cuda_runtime.h>
#include <vector>

__global__ void add(int n, const float* a, const float* b, float* c) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) c[i] = a[i] + b[i];
}

int main() {
  const int n = 1024;
  std::vector<float> a(n, 1.0f), b(n, 2.0f), c(n, 0.0f);
  int devices = 0;
  const char* where = "CPU";
  if (cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0) {
    float *da, *db, *dc;
    cudaMalloc(&da, n * sizeof(float));
    cudaMalloc(&db, n * sizeof(float));
    cudaMalloc(&dc, n * sizeof(float));
    cudaMemcpy(da, a.data(), n * sizeof(float), cudaMemcpyHostToDevice);
    cudaMemcpy(db, b.data(), n * sizeof(float), cudaMemcpyHostToDevice);
    add<<<(n + 255) / 256, 256>>>(n, da, db, dc);
    if (cudaMemcpy(c.data(), dc, n * sizeof(float), cudaMemcpyDeviceToHost) != cudaSuccess) {
      std::printf("{name}: FAILED: %s\\n", cudaGetErrorString(cudaGetLastError()));
      return 1;
    }
    where = "GPU";
  } else {
    for (int i = 0; i < n; ++i) c[i] = a[i] + b[i];
  }
  for (int i = 0; i < n; ++i) {
    if (c[i] != 3.0f) {
      std::printf("{name}: FAILED at %d\\n", i);
      return 1;
    }
  }
  std::printf("{name}: %d values checked on the %s\\n", n, where);
  return 0;
}
"""

_CUDA_BUILD = """\
#!/bin/sh
# Builds {name} for the architectures in CUDA_ARCHS ("80;90"), with PTX for the newest
# (newer GPUs JIT it), by the nvcc at $CUDA_HOME/bin. -objtemp names nvcc's temporary files
# after the object, so two builds give the same bytes.
set -eu
out=${1:-/build}
mkdir -p "$out" /tmp/obj
gencode=""
for arch in $(echo "$CUDA_ARCHS" | tr ';' ' '); do
  gencode="$gencode -gencode arch=compute_${arch},code=sm_${arch}"
  last=$arch
done
gencode="$gencode -gencode arch=compute_${last},code=compute_${last}"
paths="-I$CUDA_HOME/include -L$CUDA_HOME/lib"
# shellcheck disable=SC2086
"$CUDA_HOME/bin/nvcc" -O2 $paths $gencode -c -objtemp -o /tmp/obj/main.o "$(dirname "$0")/src/main.cu"
# shellcheck disable=SC2086
"$CUDA_HOME/bin/nvcc" -O2 $paths $gencode -o "$out/{name}" /tmp/obj/main.o
"""

STARTERS: dict[str, Starter] = {
    "python": Starter(
        "a Python application, its requirements.txt installed by pip",
        {
            "assemble.yaml": _PYTHON,
            "requirements.txt": "# one requirement a line, as pip reads them\n",
            "app/main.py": _PYTHON_MAIN,
        },
    ),
    "cpp": Starter(
        "a C++ service built with CMake",
        {"assemble.yaml": _CPP, "CMakeLists.txt": _CMAKE, "src/main.cpp": _CPP_MAIN},
    ),
    "cuda": Starter(
        "a CUDA program compiled by nvcc from NVIDIA's pip wheels",
        {"assemble.yaml": _CUDA, "src/main.cu": _CUDA_MAIN, "build.sh": _CUDA_BUILD},
    ),
}


def files_of(kind: str, name: str) -> dict[str, str]:
    """The files of the starter ``kind`` for the project ``name``."""
    return {path: text.replace("{name}", name) for path, text in STARTERS[kind].files.items()}
