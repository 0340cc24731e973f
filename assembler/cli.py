"""The command line: the only module that prints, reads the terminal, or exits.

    assemble MANIFEST [-o OUTPUT]... [--set K=V]... [--base NAME=REF]... [--platform P]
             [--cache DIR] [--epoch N] [--tls-verify=false] [--json] [-v]
    assemble plan MANIFEST ...        what would run, what is cached, the layers, the outputs
    assemble inspect REF              manifest, config and layers of any image reference
    assemble validate REF             recompute every size, digest and diff_id of an image
    assemble diff A B                 why two images differ: config fields, layers, files
    assemble sif SOURCE OUT.sif       an Apptainer/Singularity SIF of any image, written as a stream
    assemble schema [-o DIR]          JSON Schemas of manifests and recipes (for editors)

Exit status: 0 ok, 1 build/runtime failure, 2 bad input, 130 interrupted. ``diff`` exits
as diff(1) and cmp(1) do: 0 identical, 1 different, 2 trouble (bad input or a failure).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console

from assembler import __version__
from assembler.assemble import Event, Options, Result, assemble, resolve_epoch
from assembler.cache import default_root
from assembler.errors import AssemblerError, InputError
from assembler.oci.descriptor import Platform
from assembler.oci.reference import Ref, absolute_ref, parse_ref
from assembler.proc import Runner
from assembler.transports.common import RegistryOptions

SUBCOMMANDS = ("build", "plan", "inspect", "validate", "diff", "sif", "schema")

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def say(text: str) -> None:
    """One line of results on stdout (never markup: digests and paths are printed as they are)."""
    out.print(text, markup=False)


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return key.strip(), value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        err.print(f"error: {message}", markup=False)
        err.print(f"hint: see `{self.prog} --help`", markup=False)
        raise SystemExit(2)


def _platform(text: str) -> Platform:
    try:
        return Platform.parse(text)
    except ValueError as e:
        raise InputError(f"--platform {text}: {e}") from None


def _reader_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", type=Path, default=None,
                   help="cache folder for what reading needs (a rootfs: conversion); default: a temporary one, "
                        "removed afterwards")  # fmt: skip


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--platform", default=None, help="os/arch[/variant] (default: the manifest's, else linux/amd64)")
    p.add_argument("--tls-verify", type=_bool, nargs="?", const=True, default=True, metavar="BOOL",
                   help="--tls-verify=false talks plain HTTP to the registry (loopback registries)")  # fmt: skip
    p.add_argument("--authfile", type=Path, default=None,
                   help="registry credentials file (default: $REGISTRY_AUTH_FILE, containers', Docker's)")  # fmt: skip
    p.add_argument(
        "--retries",
        type=int,
        default=RegistryOptions.retries,
        help=f"registry tries in a row without progress before giving up (default {RegistryOptions.retries})",
    )
    p.add_argument("--json", action="store_true", help="print a machine-readable result on stdout")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more detail (twice: debug)")


def _manifest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", type=Path, help="the manifest (YAML)")
    p.add_argument("-o", "--output", action="append", dest="outputs", metavar="OUTPUT",
                   help="oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:REF], docker://REF "
                        "(repeatable; replaces the manifest's outputs)")  # fmt: skip
    p.add_argument("--set", action="append", type=_pair, default=[], metavar="K=V", help="override a param")
    p.add_argument("--base", action="append", type=_pair, default=[], metavar="NAME=REF", help="replace a base")
    p.add_argument("--source", action="append", type=_pair, default=[], metavar="NAME=PATH", help="replace a source")
    p.add_argument("--target", default=None, help="build this target of the manifest")
    p.add_argument("--cache", type=Path, default=None, help="cache folder (default: $XDG_CACHE_HOME/assembler)")
    p.add_argument(
        "--epoch", type=int, default=None, help="timestamps (default: $SOURCE_DATE_EPOCH, the manifest's, 0)"
    )
    p.add_argument("--no-cache", action="store_true", help="run every step again")
    p.add_argument("--force", action="store_true",
                   help="let outputs replace existing files that are not image archives or SIFs")  # fmt: skip
    p.add_argument("--rebuild", action="append", default=[], metavar="STEP", help="run this step again")
    p.add_argument("--storage-driver", default="overlay", choices=("overlay", "vfs"), help="buildah storage driver")
    p.add_argument("--no-host-ca", action="store_true", help="do not mount the host CA bundle into build containers")
    p.add_argument("--attach-sif", action="store_true",
                   help="also push a SIF of the image as a referrer of each docker:// output")  # fmt: skip
    p.add_argument("--compression", choices=("zstd", "gzip"), default=None,
                   help="layer compression (default: the manifest's, else zstd; gzip for old clients)")  # fmt: skip
    _common(p)


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="assemble", description="Assemble OCI images from a manifest, without Dockerfiles or a daemon.")
    top.add_argument("--version", action="version", version=f"assemble {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _manifest_args(sub.add_parser("build", help="build a manifest (the default command)"))
    _manifest_args(sub.add_parser("plan", help="show what a build would do; runs nothing"))
    p = sub.add_parser("inspect", help="show an image's manifest, config and layers")
    p.add_argument("ref", help="docker://..., oci:DIR[:TAG], oci-archive:..., docker-archive:..., rootfs:...")
    p.add_argument("--raw", action="store_true", help="print the manifest bytes as they are")
    _reader_cache(p)
    _common(p)
    p = sub.add_parser("validate", help="recompute every size, digest and diff_id of an image")
    p.add_argument("ref")
    _reader_cache(p)
    _common(p)
    p = sub.add_parser("diff", help="why two images differ (exit 0 identical, 1 different, 2 trouble)")
    p.add_argument("a", help="an image reference, as for inspect")
    p.add_argument("b", help="another image reference")
    _reader_cache(p)
    _common(p)
    p = sub.add_parser("sif", help="convert any image to an Apptainer/Singularity SIF file, as a stream")
    p.add_argument("ref", help="the image: docker://..., oci:DIR[:TAG], oci-archive:..., docker-archive:...")
    p.add_argument("out", type=Path, help="the SIF file to write")
    p.add_argument("--compressor", default="gzip", choices=("gzip", "xz", "zstd", "lz4", "lzo"),
                   help="squashfs compression (default gzip, which every Apptainer reads)")  # fmt: skip
    p.add_argument("--push", default=None, metavar="oras://HOST/REPO:TAG", help="also push the SIF there")
    p.add_argument("--attach", default=None, metavar="docker://HOST/REPO",
                   help="also push the SIF as a referrer of the image, in this repository")  # fmt: skip
    p.add_argument("--epoch", type=int, default=None, help="timestamps (default: $SOURCE_DATE_EPOCH, else 0)")
    p.add_argument("--force", action="store_true", help="replace OUT.sif even if it is not a SIF file")
    _reader_cache(p)
    _common(p)
    p = sub.add_parser("schema", help="print (or write) the JSON Schemas of manifests and recipes")
    p.add_argument("kind", nargs="?", choices=("manifest", "recipe"), default="manifest")
    p.add_argument(
        "-o", "--output", type=Path, default=None, help="write manifest.schema.json and recipe.schema.json here"
    )
    return top


# -- reporting -------------------------------------------------------------------------


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


class Reporter:
    """Turns pipeline events into lines on stderr (and a live byte count on a terminal)."""

    def __init__(self, *, verbose: int, quiet: bool) -> None:
        self.verbose = verbose
        self.quiet = quiet
        self.bytes: dict[str, int] = {}
        self._last = 0.0
        self._tty = err.is_terminal

    def __call__(self, event: Event) -> None:
        f = event.fields
        kind = event.kind
        if kind == "bytes":
            what = str(f.get("what", "processed"))
            self.bytes[what] = self.bytes.get(what, 0) + int(f.get("n", 0))
            now = time.monotonic()
            if self._tty and not self.quiet and now - self._last > 0.2:
                self._last = now
                counts = ", ".join(f"{_size(n)} {name}" for name, n in sorted(self.bytes.items()))
                err.print(f"  … {counts}", end="\r", markup=False)
            return
        if self.quiet:
            return
        if kind == "base" and f.get("state") == "ready":
            err.print(f"base {f['name']}: {f['what']} {f['digest'][:19]}", markup=False)
        elif kind == "layer":
            err.print(f"layer {f['index']}: {f['what']} -> {f['digest'][:19]} {_size(int(f['size']))} ({f['origin']})",
                      markup=False)  # fmt: skip
        elif kind == "step":
            line = f"step {f['name']}: {f['state']}"
            if "seconds" in f:
                line += f" in {float(f['seconds']):.1f} s"
            err.print(line, markup=False)
        elif kind == "log" and (self.verbose or self._tty):
            err.print(f"  [{f.get('step', '')}] {f.get('line', '')}", markup=False)
        elif kind == "output" and f.get("state") == "done":
            extra = f", {_size(int(f['uploaded']))} uploaded" if f.get("uploaded") else ""
            err.print(f"wrote {f['ref']}{extra}", markup=False)
        elif kind == "warning":
            err.print(f"warning: {f.get('text', '')}", markup=False)
        elif kind == "info" and self.verbose:
            err.print(str(f.get("text", "")), markup=False)


def _result_json(result: Result) -> dict[str, Any]:
    return {
        "digest": result.digest,
        "seconds": round(result.seconds, 3),
        "layers": [dataclasses.asdict(layer) for layer in result.layers],
        "steps": [dataclasses.asdict(step) for step in result.steps],
        "outputs": [dataclasses.asdict(w) for w in result.outputs],
    }


def _print_summary(result: Result) -> None:
    out.print(f"image {result.digest}", markup=False)
    for layer in result.layers:
        size = _size(layer.size) if layer.size is not None else "?"
        say(f"  {layer.index:>2} {layer.origin:<6} {size:>10}  {layer.what}")
    for s in result.steps:
        out.print(f"  step {s.name}: {s.state} ({s.seconds:.1f} s)", markup=False)
    for w in result.outputs:
        out.print(f"  -> {w.ref}", markup=False)
    out.print(f"done in {result.seconds:.1f} s", markup=False)


# -- commands --------------------------------------------------------------------------


def _registry(args: argparse.Namespace) -> Any:
    if args.retries < 1:
        raise InputError("--retries must be at least 1")
    return RegistryOptions(tls_verify=args.tls_verify, auth_file=args.authfile, retries=args.retries)


def _options(args: argparse.Namespace, manifest_epoch: int | None, platform: str) -> Options:
    return Options(
        cache_dir=(args.cache or default_root()).resolve(),
        epoch=resolve_epoch(args.epoch, manifest_epoch),
        platform=_platform(args.platform) if args.platform else None,
        registry=_registry(args),
        outputs=tuple(args.outputs) if args.outputs else None,
        no_cache=args.no_cache,
        rebuild=frozenset(args.rebuild),
        storage_driver=args.storage_driver,
        host_ca=not args.no_host_ca,
        compression=args.compression,
        attach_sif=args.attach_sif,
        force=args.force,
    )


def _load(args: argparse.Namespace) -> Any:
    from assembler.spec.load import load_manifest

    bases = {}
    for name, ref in args.base:
        try:
            bases[name] = str(absolute_ref(parse_ref(ref), Path.cwd()))
        except ValueError as e:
            raise InputError(f"--base {name}={ref}: {e}") from None
    return load_manifest(
        args.manifest,
        sets=dict(args.set),
        target=args.target,
        bases=bases,
        sources=dict(args.source),
    )


def cmd_build(args: argparse.Namespace) -> int:
    loaded = _load(args)
    options = _options(args, loaded.manifest.epoch, loaded.manifest.platform)
    reporter = Reporter(verbose=args.verbose, quiet=args.json)
    result = assemble(loaded, options, runner=Runner(), report=reporter)
    if args.json:
        out.print(json.dumps(_result_json(result), indent=2), markup=False)
    else:
        _print_summary(result)
    return 0


@contextlib.contextmanager
def _reading_cache(args: argparse.Namespace) -> Iterator[Path]:
    """``--cache``, else a temporary cache removed afterwards: reading an image never fills
    the default cache behind the user's back."""
    if args.cache is not None:
        yield args.cache.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="assemble-read-") as tmp:
        yield Path(tmp)


def _context(args: argparse.Namespace, cache_dir: Path) -> Any:
    from assembler.cache import Cache
    from assembler.transports import Context

    return Context(
        cache=Cache(cache_dir),
        runner=Runner(),
        platform=_platform(args.platform or "linux/amd64"),
        epoch=resolve_epoch(None, None),
        registry=_registry(args),
    )


def _source(args: argparse.Namespace, cache_dir: Path, text: str | None = None) -> Any:
    from assembler.transports import open_source

    try:
        ref = parse_ref(args.ref if text is None else text)
    except ValueError as e:
        raise InputError(str(e)) from None
    if ref.transport == "sif":
        raise InputError(f"{args.command} reads images; a SIF file is read with `siftool info`")
    return open_source(absolute_ref(ref, Path.cwd()), _context(args, cache_dir))


def cmd_inspect(args: argparse.Namespace) -> int:
    with _reading_cache(args) as cache_dir:
        return _inspect(args, _source(args, cache_dir))


def _inspect(args: argparse.Namespace, source: Any) -> int:
    image = source.image
    if args.raw:
        sys.stdout.buffer.write(image.manifest_bytes + b"\n")
        return 0
    info = {
        "name": source.name,
        "digest": image.digest,
        "index_digest": source.index_digest,
        "media_type": image.media_type,
        "platform": str(image.platform),
        "annotations": image.annotations,
        "config": image.container_config,
        "created": image.config.get("created"),
        "layers": [
            {"digest": d.digest, "size": d.size, "media_type": d.media_type, "diff_id": diff_id}
            for d, diff_id in zip(image.layers, image.diff_ids, strict=False)
        ],
        "history": image.config.get("history") or [],
    }
    if args.json:
        out.print(json.dumps(info, indent=2), markup=False)
        return 0
    say(f"{info['name']}\n  digest   {image.digest}\n  type     {image.media_type}\n  platform {info['platform']}")
    for key in ("Entrypoint", "Cmd", "WorkingDir", "User"):
        if key in image.container_config:
            out.print(f"  {key:<9}{json.dumps(image.container_config[key])}", markup=False)
    for item in image.container_config.get("Env") or []:
        out.print(f"  env      {item}", markup=False)
    total = 0
    for i, layer in enumerate(info["layers"]):
        total += layer["size"]
        kind = layer["media_type"].rsplit(".", 1)[-1]
        say(f"  layer {i:>2} {_size(layer['size']):>10}  {layer['digest']}  {kind}")
    out.print(f"  total    {_size(total)} in {len(info['layers'])} layers", markup=False)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from typing import cast

    from assembler.archive.compress import Compression, decompressed
    from assembler.oci import mediatypes as mt
    from assembler.oci.validate import validate

    with _reading_cache(args) as cache_dir:
        source = _source(args, cache_dir)
        report = validate(
            source.image,
            source.blobs,
            decompress=lambda stream, media_type: decompressed(
                stream, cast(Compression, mt.compression_of(media_type))
            ),
        )
    if args.json:
        out.print(
            json.dumps({"digest": report.image_digest, "layers": len(report.layers), "valid": True}), markup=False
        )
    else:
        out.print(f"valid: {report.image_digest} ({len(report.layers)} layers, every digest recomputed)", markup=False)
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from assembler.diff import diff_images, render

    with _reading_cache(args) as cache_dir:
        result = diff_images(_source(args, cache_dir, args.a), _source(args, cache_dir, args.b))
    if args.json:
        out.print(json.dumps(result.to_json(), indent=2), markup=False)
    else:
        for line in render(result):
            say(line)
    return 0 if result.identical else 1


def cmd_sif(args: argparse.Namespace) -> int:
    from assembler.pipeline.writers import OrasWriter, SifReferrerWriter, SifWriter, Target, Writer

    pushes: list[Writer] = []
    for flag, text, scheme in (("--push", args.push, "oras"), ("--attach", args.attach, "docker")):
        if text is None:
            continue
        try:
            ref = parse_ref(text)
        except ValueError as e:
            raise InputError(f"{flag} {text}: {e}") from None
        if ref.transport != scheme or ref.name is None:
            raise InputError(f"{flag} takes a {scheme}:// reference, got {text!r}")
        pushes.append(OrasWriter(ref) if flag == "--push" else SifReferrerWriter(ref))
    reporter = Reporter(verbose=args.verbose, quiet=args.json)
    sif = SifWriter(Ref("sif", str(args.out.resolve())))
    sif.check(force=args.force)
    with _reading_cache(args) as cache_dir:
        source = _source(args, cache_dir)
        progress = lambda n: reporter(Event("bytes", {"n": n, "what": "converted"}))  # noqa: E731
        ctx = dataclasses.replace(_context(args, cache_dir), epoch=resolve_epoch(args.epoch, None), progress=progress)
        target = Target(source, ctx, sif_compressor=args.compressor)
        sif.write(target)
        assert target.sif is not None
        info = target.sif
        pushed = [(w, w.write(target)[0]) for w in pushes]
    result: dict[str, Any] = {
        "sif": str(info.path),
        "digest": info.digest,
        "size": info.size,
        "image": info.image_digest,
        "arch": info.arch,
        "compressor": info.compressor,
        "pushed": [],
    }
    for writer, w in pushed:
        referrer_of = source.image.digest if isinstance(writer, SifReferrerWriter) else ""
        result["pushed"].append({"ref": w.ref, "digest": w.digest, "referrer_of": referrer_of})
    if args.json:
        out.print(json.dumps(result, indent=2), markup=False)
        return 0
    say(f"sif {info.path}: {_size(info.size)} {info.digest} ({info.arch}, squashfs {info.compressor})")
    say(f"  from {source.name} {info.image_digest}")
    for pushed in result["pushed"]:
        what = f" (referrer of {pushed['referrer_of']})" if pushed["referrer_of"] else ""
        say(f"  -> {pushed['ref']} {pushed['digest']}{what}")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from assembler.spec.model import json_schemas

    schemas = json_schemas()
    if args.output is None:
        out.print(json.dumps(schemas[args.kind], indent=2, sort_keys=True), markup=False, soft_wrap=True)
        return 0
    args.output.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas.items():
        path = args.output / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        err.print(f"wrote {path}", markup=False)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and not args_list[0].startswith("-") and args_list[0] not in SUBCOMMANDS:
        args_list.insert(0, "build")
    args = parser().parse_args(args_list)
    logging.basicConfig(
        level=logging.DEBUG if args.__dict__.get("verbose", 0) > 1 else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    commands = {
        "build": cmd_build,
        "plan": cmd_plan,
        "inspect": cmd_inspect,
        "validate": cmd_validate,
        "diff": cmd_diff,
        "sif": cmd_sif,
        "schema": cmd_schema,
    }
    if args.command is None:
        parser().print_help(sys.stderr)
        return 2
    try:
        return commands[args.command](args)
    except AssemblerError as e:
        err.print(f"error: {e}", markup=False)
        if e.hint:
            err.print(f"hint: {e.hint}", markup=False)
        if os.environ.get("ASSEMBLE_TRACEBACK"):
            raise
        # diff's 1 means "different": any failure is 2 there, as in diff(1).
        return 2 if args.command == "diff" else e.exit_code
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        return 130


def cmd_plan(args: argparse.Namespace) -> int:
    from assembler.assemble import resolve

    loaded = _load(args)
    options = _options(args, loaded.manifest.epoch, loaded.manifest.platform)
    result = resolve(loaded, options, runner=Runner())
    if args.json:
        out.print(json.dumps(result.to_json(), indent=2), markup=False)
        return 0
    say(f"plan for {result.name}" + (f" (target {result.target})" if result.target else ""))
    for name, digest in result.bases.items():
        say(f"  base {name}: {digest or 'not made yet'}")
    say("steps:")
    for s in result.steps:
        why = f" ({s.reason})" if s.reason else ""
        after = f"  after {', '.join(s.depends_on)}" if s.depends_on else ""
        say(f"  {s.kind:<8} {s.name:<20} {s.state}{why}{after}")
    say("layers:")
    for layer in result.layers:
        size = _size(layer.size) if layer.size is not None else "?"
        say(f"  {layer.index:>2} {layer.origin:<10} {size:>10}  {layer.what}")
    say("outputs:")
    for o in result.outputs:
        say(f"  {o}")
    return 0


def run() -> NoReturn:
    raise SystemExit(main())
