"""What the Python a set installs into already holds, for ``assemble lock``.

``pip install`` without ``-U`` (and ``uv pip install`` without ``--upgrade``) into a Python
that holds a distribution keeps the version there whenever it satisfies what is asked: a
set installed onto a base that holds numpy 1.26 and transformers 4.51 gets those, not the
index's newest. The lock resolves the same way: what the base holds is the resolver's
preference (:mod:`assembler.python.held`, :mod:`assembler.pipeline.lock.lockenvs`), kept wherever the set's requirements
allow it, unless the set says ``upgrade: true`` (its own requirements move, as ``-U``
moves them) or ``force: true``.

Where it is read from:

- an upstream image this machine cannot reach: the facts written by hand from the files
  that build it (``spec/facts/base_python.json``, :func:`assembler.manifest.facts.basepython.held`);
- a base at hand without the network (``oci:`` and ``oci-archive:``: an image this project
  or another tool wrote): its layers' package metadata, as the SBOM reads it
  (:func:`assembler.sbom.packages.read_packages`), in the system Python's folders only
  (a venv is no base's: a set installing into one names it).

A base bootstrapped or pulled by the build is not read here (nothing is built or fetched to
lock): its sets resolve as before, from the index alone.
"""

from __future__ import annotations

import functools
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from assembler.manifest.facts.basepython import Held, base_of, held
from assembler.manifest.schema import model as m
from assembler.manifest.schema.setuses import SetUse
from assembler.python.held import canonical

_LOCAL_REFS = ("oci:", "oci-archive:")
# The system Python's folders: Debian's (any 3.x), then the interpreter's own and pip's.
_SYSTEM = re.compile(
    r"^/(?:usr/lib/python3/dist-packages|(?:usr|usr/local|opt/conda)/lib/python(3\.\d+)/(?:site|dist)-packages)$"
)


def held_python(manifest: m.Manifest, manifest_dir: Path, uses: Sequence[SetUse], *, platform: str) -> Held | None:
    """What the Python that ``uses`` (one environment's sets) install into holds, or None:
    sets that install into a venv, or a base of neither kind above."""
    system = [u for u in uses if u.pyset.environment is None]
    if not system or len(system) != len(uses):
        return None
    _, ref = base_of(manifest, system[0])
    found = held(ref)
    if found is not None or ref is None or not ref.startswith(_LOCAL_REFS):
        return found
    return _read_base(ref, manifest_dir, str(system[0].pyset.python), platform)


@functools.cache
def _read_base(ref: str, manifest_dir: Path, python: str, platform: str) -> Held:
    """The distributions in the system Python (of ``python``, X.Y) of the image ``ref`` names."""
    from assembler.cache import Cache
    from assembler.oci.descriptor import Platform
    from assembler.oci.reference import absolute_ref, parse_ref
    from assembler.pipeline.options import resolve_epoch
    from assembler.proc import Runner
    from assembler.sbom.packages import read_packages
    from assembler.transports import Context, open_source
    from assembler.transports.common import RegistryOptions

    with tempfile.TemporaryDirectory(prefix="assemble-held-") as tmp:
        ctx = Context(
            cache=Cache(Path(tmp) / "cache"),
            runner=Runner(),
            platform=Platform.parse(platform),
            epoch=resolve_epoch(None, None),
            registry=RegistryOptions(),
        )
        source = open_source(absolute_ref(parse_ref(ref), manifest_dir), ctx)
        inventory = read_packages(source.image, source.blobs.open_blob, cache=None, workdir=Path(tmp))
    versions: dict[str, str] = {}
    for package in inventory.packages:
        where = _SYSTEM.match(package.path)
        if package.ecosystem == "pypi" and where is not None and where.group(1) in (None, python):
            versions.setdefault(canonical(package.name), package.version)
    return Held(ref, dict(sorted(versions.items())), f"read from the layers of {ref}")
