"""What a walk obtains before any step: a :class:`Base` (an image a step or the image
builds on) and the keys a bootstrapped base and a git source are remembered under. Values
and keys only, below the walk and both its modes (:mod:`assembler.pipeline.walk.modes`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from assembler.cache import key_of
from assembler.debian import bootstrap as boot
from assembler.manifest.lock.debpins import DebLocked
from assembler.manifest.schema import model as m
from assembler.oci.descriptor import Platform
from assembler.oci.image import Image
from assembler.oci.reference import ImageName
from assembler.transports.context import Context


def bootstrap_spec(spec: m.BootstrapBase) -> tuple[boot.BootstrapSpec, str]:
    """What mmdebstrap is asked for, and what to call the base."""
    b = spec.bootstrap
    bspec = boot.BootstrapSpec(
        b.suite, b.variant, tuple(b.packages), b.mirror, tuple(b.components), b.keyring, tuple(b.architectures)
    )
    return bspec, f"bootstrap {b.suite}/{b.variant}" + (f" +{len(b.packages)} packages" if b.packages else "")


def base_platform(spec: m.BaseSpec, built: Platform) -> Platform:
    """The platform the base ``spec`` is obtained for: the one it names for itself
    (``{ref:, platform:}``, ``{bootstrap:, platform:}``), else ``built``."""
    own = m.own_platform(spec)
    return Platform.parse(own) if own else built


def base_context(ctx: Context, spec: m.BaseSpec) -> Context:
    """``ctx`` for obtaining the base ``spec``: for the platform it names for itself, if it does."""
    return replace(ctx, platform=base_platform(spec, ctx.platform))


def bootstrap_key(
    ctx: Context, spec: m.BootstrapBase, *, record: bool, locked: DebLocked | None = None
) -> tuple[str, str]:
    """The cache key of a bootstrapped base (``locked``: the packages the lock installs), and
    what to call it; mmdebstrap's version is remembered when ``record`` (a build)."""
    bspec, what = bootstrap_spec(spec)
    tool = boot.tool_version(ctx.runner, ctx.cache, record=record)
    key = boot.bootstrap_key(
        bspec,
        tool=tool,
        platform=ctx.platform,
        epoch=ctx.epoch,
        compression=ctx.compression,
        locked=locked.digest if locked else None,
    )
    return key, what + (f", {len(locked.debs)} packages locked" if locked else "")


def git_key(spec: m.GitSource) -> str:
    """The cache key of the commit and checkout a git source was last fetched as."""
    return "gitref-" + key_of({"url": spec.git, "ref": spec.ref, **({"commit": spec.commit} if spec.commit else {})})


@dataclass(frozen=True)
class Base:
    name: str
    image: Image
    what: str
    registry_name: ImageName | None = None
