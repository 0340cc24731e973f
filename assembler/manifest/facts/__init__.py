"""Combinations refused from facts: what indexes, registries, distributions and ROCm
releases publish, checked against what a loaded manifest asks for. No manifest writes
these checks; each gets them from what it installs and builds on:

- :mod:`.releases`: every ``name==version`` a Python set or ``pip:`` layer pins is a release
  (PyPI's list), whose Requires-Python admits the set's Python, and a torch, torchvision
  or torchaudio pinned from a PyTorch index (``.../whl/cu118``) is one that index builds;
- :mod:`.bases`: a base's tag is one its registry publishes (for the repositories listed);
- :mod:`.interpreters`: the ``pythonX.Y`` a step or layer runs, installs or resolves a Python
  set for is one its base runs (``interpreters.json``: NGC's, SGLang's, AMD's images) or its
  distribution packages and something before it installs;
- :mod:`.gpus`: a torch pinned from PyPI has kernels for every GPU ``gpu.archs`` names
  (torch 2.6's wheel has none for sm_120: refused, naming torch 2.8.0);
- :mod:`.archs`: every GPU target of a ROCm arch list (PYTORCH_ROCM_ARCH, AMDGPU_TARGETS...)
  is one the base's ROCm release compiles for, and no CUDA arch; :mod:`.cudaarchs`: a CUDA
  arch list (TORCH_CUDA_ARCH_LIST, CMAKE_CUDA_ARCHITECTURES, ``-arch=``...) names no AMD target;
- :mod:`.rocmbases`: a rocm/dev-ubuntu base's release is one its Ubuntu line was made for
  (``rocm_images.json``), and ``rocm_version`` is the release the image's base is;
- :mod:`.refs`: a version the image claims for a source (its version annotation, a step's
  SETUPTOOLS_SCM_PRETEND_VERSION) is the release the source's git ref names;
- :mod:`.basepython`: a lock's pin does not replace what a known base holds at another
  version (SGLang's image force-reinstalls NCCL over torch's pin), checked with the lock.

The facts are data files next to this module (read by :mod:`.data`), written by ``scripts/regen-facts`` (which
says where each comes from), so a plan stays offline. A fact that is not known (a release
newer than the data, a repository not listed) refuses nothing. A refusal is a
ManifestError (exit 2) at the line that asks, naming the params that make the value and
the fact that rules it out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from assembler.manifest.facts.data import read as read
from assembler.manifest.facts.data import where as where

if TYPE_CHECKING:
    from assembler.manifest.facts.subject import Subject


def check_facts(loaded: Subject) -> None:
    """Every check above, on the image and the compile steps it uses; ManifestError."""
    # the checks (and their data) are imported when a manifest is checked
    from assembler.manifest.facts.archs import check as check_archs
    from assembler.manifest.facts.bases import check as check_bases
    from assembler.manifest.facts.cudaarchs import check as check_cuda_archs
    from assembler.manifest.facts.gpus import check as check_gpus
    from assembler.manifest.facts.interpreters import check as check_interpreters
    from assembler.manifest.facts.refs import check as check_refs
    from assembler.manifest.facts.releases import check as check_pins
    from assembler.manifest.facts.rocmbases import check as check_rocm_bases

    check_pins(loaded)
    check_gpus(loaded)
    check_bases(loaded)
    check_rocm_bases(loaded)
    check_interpreters(loaded)
    check_archs(loaded)
    check_cuda_archs(loaded)
    check_refs(loaded)
