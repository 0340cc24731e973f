"""Bases made by mmdebstrap from an apt mirror (``bases: {x: {bootstrap: {...}}}``).

This is the base that needs no registry: a Debian/Ubuntu root filesystem from the
configured apt mirror, turned into a one-layer image by the deterministic writer and
cached by its inputs (suite, variant, packages, mirror, architecture, mmdebstrap
version). Runs as root (``--mode=root``) or as an unprivileged user (``--mode=unshare``,
subuids from /etc/subuid).

mmdebstrap copies this host's ``/etc/resolv.conf`` and ``/etc/hostname`` into the root, so
the same base made on two machines differed in those two files (its manual, "SOURCE_DATE_EPOCH",
says to remove or write them in a hook). They are removed: a container's runtime (buildah,
podman, Docker, Apptainer) mounts its own over both paths, as it does for ``/etc/hosts``,
which mmdebstrap does not copy.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from assembler.archive.compress import Compression
from assembler.archive.tar import TarEntry
from assembler.cache import Cache, key_of
from assembler.cache.programs import program_version
from assembler.debian import aptlock, aptreasons
from assembler.errors import AptRefused, InputError, ToolError
from assembler.hostuser import host_cause
from assembler.manifest.lock.debpins import DebLocked
from assembler.manifest.schema import model as m
from assembler.oci.descriptor import Platform
from assembler.oci.image import Image
from assembler.proc import Runner
from assembler.transports.rootfs import image_from_layer, layer_from_tar

log = logging.getLogger(__name__)
# 3: run in the environment of mmdebstrap_env alone (bytecode written one way);
# 4: apt's partial folders root's (_ROOT_OWNED); 5: no host's resolv.conf or hostname
FORMAT = 5
# Run by mmdebstrap on the finished root ($1) before it is packed: what it copied of the
# host, which would make the base depend on the machine that made it.
_HOST_FILES_HOOK = 'rm -f "$1/etc/resolv.conf" "$1/etc/hostname"'
DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"
_ARCH = {
    "amd64": "amd64",
    "arm64": "arm64",
    "386": "i386",
    "ppc64le": "ppc64el",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


@dataclass(frozen=True)
class BootstrapSpec:
    """What mmdebstrap is asked for (the cache key is made of these)."""

    suite: str
    variant: str = "minbase"
    packages: tuple[str, ...] = ()
    mirror: str | None = None
    components: tuple[str, ...] = ("main",)
    keyring: str | None = None
    architectures: tuple[str, ...] = ()  # foreign ones dpkg also installs for (multiarch)


def debian_arch(platform: Platform) -> str:
    if platform.architecture == "arm":
        return "armhf" if platform.variant in ("", "v7") else "armel"
    try:
        return _ARCH[platform.architecture]
    except KeyError as e:
        raise InputError(f"no Debian architecture for platform {platform}") from e


def bootstrap_mirrors(manifest: m.Manifest) -> dict[str, str]:
    """The apt mirror each bootstrapped base of ``manifest`` is made from (and its steps'
    apt reaches): its own ``mirror:``, else this host's, else Debian's."""
    return {
        name: spec.bootstrap.mirror or host_mirror() or DEFAULT_DEBIAN_MIRROR
        for name, spec in manifest.bases.items()
        if isinstance(spec, m.BootstrapBase)
    }


def host_mirror(sources_dir: Path = Path("/etc/apt")) -> str | None:
    """The first Debian mirror URI configured on this host (deb822 or one-line sources)."""
    candidates: list[str] = []
    for f in sorted((sources_dir / "sources.list.d").glob("*.sources")):
        try:
            text = f.read_text()
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            fields = dict(
                (k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in stanza.splitlines()) if _
            )
            if fields.get("types", "deb").split()[0] == "deb" and "debian-archive-keyring" in fields.get(
                "signed-by", "debian"
            ):
                uri = fields.get("uris", "").split()
                suites = fields.get("suites", "").split()
                if uri and any(not s.endswith("-security") for s in suites) and "security" not in uri[0]:
                    candidates.append(uri[0])
    for f in [sources_dir / "sources.list", *sorted((sources_dir / "sources.list.d").glob("*.list"))]:
        try:
            lines = f.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            parts = line.split("#", 1)[0].split()
            if len(parts) >= 3 and parts[0] == "deb":
                uri = next((p for p in parts[1:] if not p.startswith("[")), "")
                if "debian" in uri and "security" not in uri:
                    candidates.append(uri)
    return candidates[0] if candidates else None


# apt's download folders belong to its sandbox user (_apt, uid 42) when an unprivileged
# user bootstraps (unshare mode: apt runs inside the new root) and to root when root does
# (apt runs on the host): mmdebstrap's cleanup makes them again after any hook, so the
# layer gives them root's owner, and both bootstrap the same bytes. apt run as root in the
# image hands them to _apt again before its first download.
_ROOT_OWNED = frozenset({"var/cache/apt/archives/partial", "var/lib/apt/lists/partial"})


def _one_owner(entry: TarEntry) -> TarEntry:
    return replace(entry, uid=0, gid=0) if entry.path.strip("/") in _ROOT_OWNED else entry


def mmdebstrap_argv(spec: BootstrapSpec, *, arch: str, mirror: str, output: Path) -> list[str]:
    """mmdebstrap's arguments for ``spec``. Not ``--quiet``: it hides apt's own errors, and a
    wrong package name failed with mmdebstrap's "E: setup failed: E: apt-get ... failed"
    alone, a minute in (issue 67); apt's "E: Unable to locate package NAME" is what the
    error leads with now (:mod:`assembler.debian.aptreasons`)."""
    argv = [
        "mmdebstrap",
        f"--variant={spec.variant}",
        f"--architectures={','.join(dict.fromkeys([arch, *spec.architectures]))}",
        f"--components={','.join(spec.components)}",
        '--aptopt=APT::Install-Recommends "false"',
        f"--customize-hook={_HOST_FILES_HOOK}",
    ]
    if spec.architectures:
        # Multi-Arch: same packages of two architectures must hold the same shared files, and
        # a binNMU rebuilds a package's compressed manuals for one (trixie's libpsl-dev+b1:
        # dpkg refused libpsl.3.gz of arm64 over amd64's): a multiarch base is a devel base,
        # which reads no manual
        argv.append("--dpkgopt=path-exclude=/usr/share/man/*")
    if spec.packages:
        argv.append(f"--include={','.join(spec.packages)}")
    if spec.keyring:
        argv.append(f"--keyring={spec.keyring}")
    return [*argv, spec.suite, str(output), mirror]


def tool_version(runner: Runner, cache: Cache, *, record: bool) -> str:
    """mmdebstrap's version (part of the cache key), remembered by the binary's identity
    (``--version`` is a Perl start-up: 0.3 s a base on every build otherwise); without
    mmdebstrap, the version last recorded, else "missing"."""

    def ask() -> str:
        result = runner.run(["mmdebstrap", "--version"], check=False)
        return (result.stdout or result.stderr).strip()

    return program_version(cache, "mmdebstrap", runner.which("mmdebstrap"), ask, record=record, missing="missing")


def bootstrap_key(
    spec: BootstrapSpec,
    *,
    tool: str,
    platform: Platform,
    epoch: int,
    compression: Compression,
    locked: str | None = None,
) -> str:
    """The cache key of the base ``spec`` makes (also its name in a registry step cache);
    ``tool`` is mmdebstrap's version (:func:`tool_version`), ``locked`` the digest of the
    packages the lock installs (:class:`assembler.manifest.lock.debpins.DebLocked`)."""
    return key_of(
        {
            **({"locked": locked} if locked else {}),
            "kind": "bootstrap",
            "format": FORMAT,
            "suite": spec.suite,
            "variant": spec.variant,
            "packages": sorted(spec.packages),
            "mirror": spec.mirror or host_mirror() or DEFAULT_DEBIAN_MIRROR,
            "components": list(spec.components),
            "keyring": spec.keyring,
            **({"architectures": list(spec.architectures)} if spec.architectures else {}),
            "arch": debian_arch(platform),
            "tool": tool,
            "epoch": epoch,
            "compression": compression,
        }
    )


def make(
    spec: BootstrapSpec,
    key: str,
    *,
    cache: Cache,
    runner: Runner,
    platform: Platform,
    epoch: int,
    compression: Compression,
    locked: DebLocked | None = None,
    log_tail: int = 30,
) -> Image:
    """The base image ``spec`` makes, bootstrapped with mmdebstrap and stored in the cache
    under ``key`` (:func:`bootstrap_key`; ``cache.base_image(key)`` finds it again).
    ``locked``: the packages the lock says it holds; InputError naming those the mirror no
    longer serves as locked, before anything is installed, or any installed that the lock
    does not name.

    Raises ToolError (with mmdebstrap's output tail) when the bootstrap fails.
    """
    arch = debian_arch(platform)
    mirror = spec.mirror or host_mirror() or DEFAULT_DEBIAN_MIRROR
    with cache.workdir("bootstrap-") as work:
        if locked is not None:
            _check_mirror(spec, locked, work, runner=runner, arch=arch, mirror=mirror, epoch=epoch)
        out = _mmdebstrap(spec, work, runner=runner, arch=arch, mirror=mirror, epoch=epoch, log_tail=log_tail)
        if locked is not None:
            _check_root(out, locked, mirror)
        blob = layer_from_tar(
            out, cache=cache, compression=compression, epoch=epoch, what=f"bootstrap {spec.suite}", adjust=_one_owner
        )
    image = image_from_layer(
        blob,
        platform=platform,
        epoch=epoch,
        created_by=f"mmdebstrap {spec.variant} {spec.suite} {' '.join(spec.packages)}",
    )
    cache.put_base_image(key, image)
    return image


def _check_mirror(
    spec: BootstrapSpec, locked: DebLocked, work: Path, *, runner: Runner, arch: str, mirror: str, epoch: int
) -> None:
    """InputError naming the locked packages ``mirror`` no longer serves as they were
    locked (from the index a dry run of mmdebstrap fetches and checks)."""
    argv = mmdebstrap_argv(spec, arch=arch, mirror=mirror, output=work / "rootfs.tar")
    check = work / "lock-check"
    check.mkdir()
    for folder in (work, check):  # unprivileged, mmdebstrap works as the user's subordinate root
        os.chmod(folder, 0o1777)
    try:
        _, index = aptlock.simulate_bootstrap(argv, mmdebstrap_env(epoch=epoch, tmpdir=work), runner=runner, work=check)
    except AptRefused as e:  # what was locked the mirror no longer has at all: it moved, the names are right
        moved = [f"{name}: {reason}" for name, reason in zip(e.packages, e.reasons, strict=True)]
        raise aptlock.refuse(locked.where, mirror, moved, locked_at=locked.locked_at) from None
    problems = aptlock.check_served(locked.debs, index)
    if problems:
        raise aptlock.refuse(locked.where, mirror, problems, locked_at=locked.locked_at)
    shutil.rmtree(check, ignore_errors=True)


def _check_root(tar: Path, locked: DebLocked, mirror: str) -> None:
    """InputError naming what the bootstrapped root holds that the lock does not."""
    with tarfile.open(tar) as t:
        member = next((m for m in t if m.name.lstrip("./") == "var/lib/dpkg/status"), None)
        data = t.extractfile(member) if member is not None else None
        text = data.read(64 << 20).decode("utf-8", "replace") if data is not None else ""
    problems = aptlock.check_installed(aptlock.installed_in(text), locked.debs)
    if problems:
        raise aptlock.refuse(locked.where, mirror, problems, locked_at=locked.locked_at)


def _mmdebstrap(
    spec: BootstrapSpec, work: Path, *, runner: Runner, arch: str, mirror: str, epoch: int, log_tail: int
) -> Path:
    """Run mmdebstrap into ``work``; the root filesystem tar it wrote. ToolError on failure."""
    # Unprivileged, mmdebstrap works as the user's subordinate root (/etc/subuid), which
    # cannot enter a private folder: give its temp folder /tmp's mode.
    os.chmod(work, 0o1777)
    out = work / "rootfs.tar"
    program = runner.which("mmdebstrap")
    if program is None:
        raise ToolError(
            "mmdebstrap is not installed (not found on PATH)",
            argv=("mmdebstrap",),
            hint="install it: apt-get install mmdebstrap",
        )
    env = mmdebstrap_env(epoch=epoch, tmpdir=work)
    # `env -i`: mmdebstrap, apt, dpkg and every maintainer script see these variables and
    # no others of this process's (Runner adds to the caller's environment, it cannot take away).
    argv = [
        "env",
        "-i",
        *(f"{k}={v}" for k, v in env.items()),
        str(program),
        *mmdebstrap_argv(spec, arch=arch, mirror=mirror, output=out)[1:],
    ]
    log.info("bootstrapping %s (%s) with mmdebstrap from %s", spec.suite, spec.variant, mirror)
    result = runner.run(argv, check=False)
    if result.returncode != 0:
        found = aptreasons.refusals((result.stdout or "") + "\n" + (result.stderr or ""))
        if found:  # what apt said a few lines up, not mmdebstrap's last line ("setup failed")
            raise aptreasons.refused(found, what=f"the {spec.suite} bootstrap's packages")
        tail = "\n".join((result.stderr or result.stdout).splitlines()[-log_tail:])
        raise ToolError(
            f"mmdebstrap failed (exit {result.returncode}) bootstrapping {spec.suite}:\n{tail}",
            argv=argv,
            returncode=result.returncode,
            stderr_tail=tail,
            hint=hint_for(tail, spec.packages),
        )
    return out


# What of the caller's environment mmdebstrap is given: where its programs are, and the
# proxies apt must go through.
_PASSED_ENV = ("PATH", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


def mmdebstrap_env(*, epoch: int, tmpdir: Path, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The whole environment mmdebstrap runs in (and so apt, dpkg and the packages'
    maintainer scripts in the new root): the same for root and for an unprivileged user,
    whatever either's shell holds.

    The caller's environment used to reach the maintainer scripts. A root shell with
    ``PYTHONDONTWRITEBYTECODE=1`` (CI images, this project's own machines) and a user's
    without it bootstrapped different bases: Debian's ``py3compile`` (python3-minimal's
    postinst and every Python package's) writes checked-hash ``.pyc`` files when
    ``SOURCE_DATE_EPOCH`` is set, but it keeps a timestamp-based one that is already there
    and fresh, and Python writes those itself for what it imports while packages are
    configured (``py3compile``'s own ``debpython``, setuptools' ``_distutils_hack`` that a
    ``.pth`` file imports at every start) unless told not to. With the variable, every
    ``.pyc`` is ``py3compile``'s checked-hash one, valid in the image whatever its files'
    times (the layer writer clamps them to the epoch, which a timestamp-based ``.pyc``
    would no longer match: Python would compile that module again at every import).
    ``PYTHONHASHSEED=0`` fixes the order of sets marshalled into them, as steps' does
    (``compile/runtimestep.py`` ``reproducible_env``); ``HOME`` is the new root's own (a user's
    home is no folder there), the locale and time zone fixed."""
    kept = {name: environ[name] for name in _PASSED_ENV if environ.get(name)}
    return {
        **kept,
        "HOME": "/root",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "SOURCE_DATE_EPOCH": str(epoch),
        "TMPDIR": str(tmpdir),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
    }


def hint_for(tail: str, packages: Sequence[str]) -> str | None:
    """What to do about an mmdebstrap failure that ended with ``tail``, where it is known."""
    if "Unable to locate package" in tail or "has no installation candidate" in tail:
        return f"check the package names ({', '.join(packages)}) for this suite"
    if "arch-test" in tail or "foreign architecture" in tail:
        # another architecture's maintainer scripts run under qemu-user, through binfmt_misc
        return (
            "a base of another architecture runs its packages' scripts under qemu-user: "
            "apt-get install qemu-user-static binfmt-support arch-test (scripts/setup --test does), "
            "and `arch-test ARCH` must say ok (binfmt_misc mounted, the qemu format enabled)"
        )
    if os.geteuid() != 0 and ("newuidmap" in tail or "subuid" in tail or "chroot mode" in tail):
        # mmdebstrap's "unable to pick chroot mode automatically": no unshare mode for this user
        return host_cause(tail) or "unprivileged bootstrap needs the uidmap package and ranges in /etc/subuid"
    return None
