"""``assemble test REF MANIFEST``, ``assemble run REF [-- CMD...]`` and ``assemble shell
REF`` (or ``--step STEP``: a failed step's container kept by ``--keep-failed``), and the
build's test flags (``--test-on``, ``--no-tests``, ``--keep-failed``: in buildargs).

Light at import (the parser is built for every command): what runs containers is imported
when one of these commands runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assembler.cli.arguments import common_args, platform_arg, registry_options, slurm_args, storage_arg
from assembler.cli.buildargs import slurm_sif_arg
from assembler.cli.console import out, say
from assembler.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from assembler.manifest.load.loaded import Loaded
    from assembler.pipeline.checks.runimage import Stored
    from assembler.pipeline.image.imagetests import Report
    from assembler.transports import Context


def _image_args(p: argparse.ArgumentParser, *, ref_help: str, optional: bool = False) -> None:
    p.add_argument("ref", nargs="?" if optional else None, help=ref_help)
    p.add_argument("--cache", type=Path, default=None, help="cache folder (default: $XDG_CACHE_HOME/assembler)")
    p.add_argument(
        "--storage",
        type=Path,
        default=None,
        metavar="DIR",
        help="buildah's storage (default: $ASSEMBLE_STORAGE, else CACHE/buildah)",
    )
    p.add_argument("--storage-driver", default="overlay", choices=("overlay", "vfs"), help="buildah storage driver")
    common_args(p)


def _how_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V", help="set a variable (repeatable)")
    p.add_argument("-u", "--user", default=None, help="uid[:gid] or a user name (default: the image's)")
    p.add_argument("-w", "--workdir", default=None, help="the working directory (default: the image's)")
    p.add_argument("--no-network", action="store_true", help="only the loopback interface, as tests have")
    p.add_argument("--gpu", action="store_true", help="give it this machine's NVIDIA driver, as apptainer --nv does")
    p.add_argument(
        "--mount",
        action="append",
        default=[],
        metavar="HOST:PATH[:ro] | MANIFEST",
        help="bind a host file or folder at PATH (repeatable); a manifest binds each host file or folder its "
        "copy: layers put in the image, where they go: code edited on the host runs without a build",
    )


def test_arguments(p: argparse.ArgumentParser) -> None:
    _image_args(p, ref_help="the image: oci:DIR[:TAG], oci-archive:FILE, docker://REF...")
    p.add_argument(
        "manifest",
        type=Path,
        nargs="?",
        help="the manifest whose tests (of its default target or --target) run; default: the tests the image's "
        "own test results (a referrer a build attached) record",
    )
    p.add_argument("--target", default=None, help="the target whose tests run (default: the manifest's default)")
    p.add_argument("--set", action="append", default=[], metavar="K=V", help="a param, as for a build")
    p.add_argument("--test-on", choices=("local", "slurm"), default="local", help="as for a build")
    slurm_sif_arg(p)
    p.add_argument("--slurm-args", default="", metavar="ARGS", help="more sbatch arguments for each test's job")
    p.add_argument("--save", type=Path, default=None, metavar="FILE", help="write the test-result statement there")
    p.add_argument(
        "--emulate",
        action="store_true",
        help="an image of another architecture: run its tests under qemu-user (binfmt_misc), each reported "
        "emulated, never passed (default: only those that say emulate: true; the others not run)",
    )


def run_arguments(p: argparse.ArgumentParser) -> None:
    _image_args(p, ref_help="the image: oci:DIR[:TAG], oci-archive:FILE, docker://REF...")
    p.add_argument("cmd", nargs="*", metavar="-- CMD", help="replaces the image's cmd (the entrypoint stays)")
    p.add_argument("--entrypoint", default=None, help="run this program instead of the image's entrypoint")
    _how_args(p)


def shell_arguments(p: argparse.ArgumentParser) -> None:
    _image_args(p, ref_help="the image (or --step)", optional=True)
    p.add_argument("--step", default=None, help="enter the container a failure of STEP kept (build --keep-failed)")
    p.add_argument("--shell", default="/bin/sh", help="the shell to start (default /bin/sh)")
    _how_args(p)


def _pairs(texts: list[str], flag: str) -> dict[str, str]:
    out = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise InputError(f"{flag} {text!r}: expected NAME=VALUE")
        out[key] = value
    return out


def _context(args: argparse.Namespace, epoch: int = 0) -> Context:
    from assembler.cache import Cache, default_root
    from assembler.oci.descriptor import Platform
    from assembler.proc import Runner
    from assembler.transports import Context

    platform = platform_arg(args.platform) if args.platform else Platform.parse("linux/amd64")
    cache = Cache((args.cache or default_root()).resolve())
    return Context(cache=cache, runner=Runner(), platform=platform, epoch=epoch, registry=registry_options(args))


def _stored(args: argparse.Namespace, ctx: Context) -> Stored:
    from assembler.oci.reference import absolute_ref, parse_ref
    from assembler.pipeline.checks.runimage import bring

    if not args.ref:
        raise InputError("name the image (or, for a failed step's container, --step STEP)")
    ref = absolute_ref(parse_ref(args.ref), Path.cwd())
    return bring(ref, ctx, storage=storage_arg(args.storage), driver=args.storage_driver)


def cmd_test(args: argparse.Namespace) -> int:
    from assembler.manifest.load.manifest import load_manifest
    from assembler.oci.reference import absolute_ref, parse_ref
    from assembler.pipeline.checks.runimage import attested_suite, manifest_suite, test_image
    from assembler.pipeline.image.imagetests import raise_failures
    from assembler.pipeline.options import resolve_epoch
    from assembler.transports.hpc.squash import Squash

    loaded = load_manifest(args.manifest, sets=_pairs(args.set, "--set"), target=args.target) if args.manifest else None
    ctx = _context(args, resolve_epoch(None, loaded.manifest.epoch if loaded is not None else None))
    sbatch = slurm_args(args.slurm_args)
    stored = _stored(args, ctx)
    if loaded is not None and args.target is None:
        loaded = _image_target(args, loaded, stored.config)
    if loaded is not None:
        suite = manifest_suite(loaded, stored, test_on=args.test_on)
    else:
        suite = attested_suite(absolute_ref(parse_ref(args.ref), Path.cwd()), ctx, stored, test_on=args.test_on)
    reports, statement = test_image(
        stored,
        suite,
        ctx,
        slurm_args=sbatch,
        report=_shown(args),
        slurm_sif=args.slurm_sif,
        squash=Squash.of(loaded.manifest.sif) if loaded is not None else None,
        mounts=_weights(args, ctx, stored),
        emulate=args.emulate,
    )
    if args.save is not None:
        args.save.write_bytes(statement.data)
    if args.json:
        shown = {"digest": stored.source.image.digest, "tests": [_report_json(r) for r in reports]}
        out.print(json.dumps(shown, indent=2), markup=False)
    else:
        for r in reports:
            o = r.outcome
            say(f"test {o.name}: {o.status} ({o.where})" + (f": {o.reason}" if o.reason else ""))
    raise_failures(reports)
    return 0


def _image_target(args: argparse.Namespace, loaded: Loaded, config: Mapping[str, Any]) -> Loaded:
    """The manifest loaded for the target the image says it was built as (its
    ``io.assemble.target`` label), where no ``--target`` names one: a test of the image runs
    the tests of what it is, not of the manifest's default target."""
    from assembler.manifest.load.manifest import load_manifest
    from assembler.pipeline.image.labels import NAMESPACE

    labels = config.get("Labels") or {}
    target = labels.get(f"{NAMESPACE}.target")
    built_from = labels.get(f"{NAMESPACE}.manifest")
    if not target or target == loaded.target or (built_from and built_from != loaded.manifest.name):
        return loaded
    if target not in loaded.manifest.targets:
        return loaded
    return load_manifest(args.manifest, sets=_pairs(args.set, "--set"), target=str(target))


def _shown(args: argparse.Namespace) -> Any:
    """Where test events go: a line each on stderr (none with --json)."""
    from assembler.cli.console import err

    def show(event: Any) -> None:
        f = event.fields
        if event.kind == "test" and f.get("state") == "running" and not args.json:
            err.print(f"test {f['name']}: running ({f.get('on', 'local')})", markup=False)
        elif event.kind == "warning":
            err.print(f"warning: {f.get('text', '')}", markup=False)

    return show


def _report_json(r: Report) -> dict[str, Any]:
    o = r.outcome
    shown = {"name": o.name, "status": o.status, "on": o.where, "argv": list(o.argv), "exit": o.exit}
    return {**shown, "reason": o.reason, "gpu": o.gpu, "log": str(r.log) if r.log else None}


def _weights(args: argparse.Namespace, ctx: Context, stored: Stored) -> tuple[tuple[str, str, bool], ...]:
    """A read-only bind of each model attached to the image where it is (its weights:)."""
    from assembler.oci.reference import absolute_ref, parse_ref
    from assembler.weights import attached

    return attached.mounts(absolute_ref(parse_ref(args.ref), Path.cwd()), stored.source, ctx)


def _command(
    args: argparse.Namespace, stored: Stored, ctx: Context, *, command: list[str] | None, cmd: list[str] | None
) -> Any:
    from assembler.compile import gpudriver
    from assembler.pipeline.checks.runimage import command as image_command

    if args.gpu and (why := gpudriver.missing()) is not None:
        raise InputError(f"--gpu: {why}")
    mounts = (*_weights(args, ctx, stored), *_mounts(args.mount))  # --mount last: it may replace a model
    how = {"env": _pairs(args.env, "--env"), "user": args.user, "workdir": args.workdir, "mounts": mounts}
    return image_command(stored, command=command, args=cmd, **how, network=not args.no_network, gpu=args.gpu)


# A folder bound at / hides the image's own files (its shell, its libraries): nothing starts.
_OVER_ROOT = "a host folder bound over / would hide the whole image, and the container could not start"


def _mounts(specs: list[str]) -> tuple[tuple[str, str, bool], ...]:
    """``--mount``s as (host path, container path, read-only)."""
    out: list[tuple[str, str, bool]] = []
    for spec in specs:
        if spec.endswith((".yaml", ".yml")) and ":" not in spec:
            out += _code_mounts(Path(spec))
            continue
        host, sep, rest = spec.partition(":")
        at, _, mode = rest.partition(":")
        if not sep or not host or not at.startswith("/") or mode not in ("", "ro", "rw"):
            raise InputError(f"--mount {spec!r}: expected HOST:PATH[:ro] (PATH absolute) or a manifest")
        if not Path(host).exists():
            raise InputError(f"--mount {spec!r}: {host} does not exist")
        if at.rstrip("/") == "":
            raise InputError(f"--mount {spec!r}: {_OVER_ROOT}")
        out.append((str(Path(host).resolve()), at, mode == "ro"))
    return tuple(out)


def _code_mounts(manifest: Path) -> list[tuple[str, str, bool]]:
    """Each host file or folder the manifest's layers put in its image (``copy:``'s, each
    kind's ``host_files``), bound where the layer puts it (a file copied into a folder,
    ``to: /app/``, at ``/app/NAME``)."""
    from assembler.manifest.load.manifest import load_manifest
    from assembler.manifest.schema.layers import layer_key

    loaded = load_manifest(manifest)
    out = []
    for layer in loaded.manifest.image.layers:
        for f in layer.host_files():
            host = (manifest.parent / f.source).resolve()
            at = f.to + host.name if f.to.endswith("/") and host.is_file() else f.to.rstrip("/") or "/"
            if at == "/":
                raise InputError(
                    f"--mount {manifest}: its {layer_key(layer)}: layer from {f.source} goes to /: {_OVER_ROOT}",
                    hint="bind what the container runs with --mount HOST:PATH instead (PATH below /)",
                )
            out.append((str(host), at, False))
    if not out:
        raise InputError(f"--mount {manifest}: its image has no layer of host files (copy:) to bind")
    return out


def cmd_run(args: argparse.Namespace) -> int:
    from assembler.pipeline.checks.runimage import run_in

    ctx = _context(args)
    stored = _stored(args, ctx)
    cmd = _command(args, stored, ctx, command=[args.entrypoint] if args.entrypoint else None, cmd=args.cmd or None)
    return run_in(stored, cmd, ctx.cache, name="run")


def cmd_shell(args: argparse.Namespace) -> int:
    from assembler.pipeline.checks.runimage import enter_kept, run_in

    ctx = _context(args)
    if args.step is not None:
        if args.ref:
            raise InputError("give the image or --step, not both")
        return enter_kept(ctx.cache, ctx.runner, args.step)
    stored = _stored(args, ctx)
    return run_in(stored, _command(args, stored, ctx, command=[args.shell], cmd=[]), ctx.cache, name="shell")
