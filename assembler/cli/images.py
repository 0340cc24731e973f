"""The commands that read images: ``inspect``, ``validate``, ``diff``, ``sif``, ``sqsh``; and ``schema``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assembler.assemble import Event, resolve_epoch
from assembler.cli.arguments import registry_options
from assembler.cli.console import err, mode_of, out, say, size
from assembler.cli.digestfile import check_digestfile, write_digest
from assembler.cli.keys import signer_of
from assembler.cli.progress import showing
from assembler.cli.reading import reading_cache, reading_context, source_of
from assembler.errors import InputError
from assembler.oci.reference import Ref, absolute_ref, parse_ref
from assembler.transports.hpc.squash import Squash

if TYPE_CHECKING:
    from assembler.transports.hpc.sif import SifInfo


def squash_of(args: argparse.Namespace) -> Squash:
    """How ``sif``'s and ``sqsh``'s squashfs is compressed; InputError for a level the
    compressor has not."""
    squash = Squash(args.compressor, args.block_size, args.level)
    squash.check()
    return squash


def cmd_inspect(args: argparse.Namespace) -> int:
    with reading_cache(args) as cache_dir:
        return _inspect(args, source_of(args, cache_dir))


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
        if key in image.container_config:  # "Entrypoint" is 10 letters: a space always follows the key
            out.print(f"  {key:<10} {json.dumps(image.container_config[key])}", markup=False)
    for item in image.container_config.get("Env") or []:
        out.print(f"  env        {item}", markup=False)
    _print_config_sets(image.container_config, image.annotations)
    total = 0
    for i, layer in enumerate(info["layers"]):
        total += layer["size"]
        kind = layer["media_type"].rsplit(".", 1)[-1]
        say(f"  layer {i:>2} {size(layer['size']):>10}  {layer['digest']}  {kind}")
    out.print(f"  total    {size(total)} in {len(info['layers'])} layers", markup=False)
    _print_history(info["history"])
    return 0


def _print_config_sets(config: dict[str, Any], annotations: dict[str, str]) -> None:
    """The config's ports, volumes and labels and the manifest's annotations, a line each."""
    for key, name in (("ExposedPorts", "port"), ("Volumes", "volume")):
        for item in sorted(config.get(key) or {}):
            out.print(f"  {name:<10} {item}", markup=False)
    for name, values in (("label", config.get("Labels") or {}), ("annotation", annotations)):
        for k, v in sorted(values.items()):
            out.print(f"  {name:<10} {k}={v}", markup=False)


def _print_history(history: list[dict[str, Any]]) -> None:
    """What made the image, oldest first: each entry's command, the layer it made (``-``:
    none) and its comment."""
    if history:
        out.print("  history", markup=False)
    layer = 0
    for entry in history:
        made = "-" if entry.get("empty_layer") else str(layer)
        layer += 0 if entry.get("empty_layer") else 1
        comment = f"  ({entry['comment']})" if entry.get("comment") else ""
        out.print(f"    {made:>2}  {entry.get('created_by', '')}{comment}", markup=False)


def cmd_validate(args: argparse.Namespace) -> int:
    from typing import cast

    from assembler.archive.chunked_check import check_layer_toc
    from assembler.archive.compress import Compression, decompressed
    from assembler.oci import mediatypes as mt
    from assembler.oci.validate import validate

    with reading_cache(args) as cache_dir:
        source = source_of(args, cache_dir)
        report = validate(
            source.image,
            source.blobs,
            decompress=lambda stream, media_type: decompressed(
                stream, cast(Compression, mt.compression_of(media_type))
            ),
            check=check_layer_toc,
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

    with reading_cache(args) as cache_dir:
        if args.path and not args.rootfs:
            raise InputError("--path applies to --rootfs: add --rootfs")
        a, b = source_of(args, cache_dir, args.a), source_of(args, cache_dir, args.b)
        result = diff_images(a, b, rootfs=args.rootfs, paths=args.path)
    if args.json:
        out.print(json.dumps(result.to_json(), indent=2), markup=False)
    else:
        for line in render(result):
            say(line)
    return 0 if result.identical else 1


def _sif_targets(args: argparse.Namespace) -> list[tuple[str, Ref]]:
    """``--push`` and ``--attach`` as (flag, reference); bad references raise InputError."""
    targets = []
    for flag, text, scheme in (("--push", args.push, "oras"), ("--attach", args.attach, "docker")):
        if text is None:
            continue
        ref = parse_ref(text)
        if not text.strip().startswith(f"{scheme}://"):
            raise InputError(f"{flag} takes a {scheme}:// reference, got {text!r}")
        targets.append((flag, ref))
    return targets


def cmd_sif(args: argparse.Namespace) -> int:
    from assembler.transports.formats import Writer
    from assembler.transports.formats.oras import OrasWriter, SifReferrerWriter
    from assembler.transports.formats.sif import SifWriter
    from assembler.transports.target import Target

    squash = squash_of(args)
    pushes: list[Writer] = [
        OrasWriter(ref) if flag == "--push" else SifReferrerWriter(ref) for flag, ref in _sif_targets(args)
    ]
    out_path = Path(os.path.abspath(args.out))  # a symlink there is the output, not its target
    signer = signer_of(args.sign, "--sign") if args.sign else None  # read before anything is written
    sif = SifWriter(Ref("sif", str(out_path)))
    sif.check(force=args.force)
    check_digestfile(args.digestfile)
    pushed: list[dict[str, Any]] = []
    with showing(mode_of(args), verbose=args.verbose) as report, reading_cache(args) as cache_dir:
        source = source_of(args, cache_dir)
        pushed_bytes = lambda n: report(Event("bytes", {"n": n, "what": "pushed"}))  # noqa: E731
        ctx = dataclasses.replace(
            reading_context(args, cache_dir), epoch=resolve_epoch(args.epoch, None), upload_progress=pushed_bytes
        )
        attached = [] if args.no_sbom else _image_attestations(args, source)
        target = Target(
            source,
            ctx,
            squash=squash,
            referrers=attached,
            sif_progress=lambda n: report(Event("bytes", {"n": n, "what": "sif"})),
            signer=signer,
        )
        report(Event("output", {"ref": f"sif:{out_path}", "state": "writing"}))
        sif.write(target)
        assert target.sif is not None
        info = target.sif
        report(Event("output", {"ref": f"sif:{out_path}", "state": "done", "digest": info.digest}))
        for writer in pushes:
            report(Event("output", {"ref": str(writer.ref), "state": "writing"}))
            (w,) = writer.write(target)
            report(
                Event(
                    "output",
                    {"ref": str(writer.ref), "state": "done", "digest": w.digest, "uploaded": w.uploaded_bytes},
                )
            )
            referrer_of = source.image.digest if isinstance(writer, SifReferrerWriter) else ""
            pushed.append({"ref": w.ref, "digest": w.digest, "referrer_of": referrer_of})
    write_digest(args.digestfile, info.digest)
    _show_sif(args, info, source.name, pushed)
    return 0


def _show_sif(args: argparse.Namespace, info: SifInfo, source: str, pushed: list[dict[str, Any]]) -> None:
    """What ``assemble sif`` made (``info``: the SIF's) and where it pushed it: JSON, the digest, or lines."""
    result = {
        "sif": str(info.path),
        "digest": info.digest,
        "size": info.size,
        "image": info.image_digest,
        "arch": info.arch,
        "compressor": info.compressor,
        "block_size": info.block_size,
        "level": info.level,
        "pushed": pushed,
    }
    if args.json:
        out.print(json.dumps(result, indent=2), markup=False)
    elif args.quiet:
        say(info.digest)
    else:
        squashfs = Squash(info.compressor, info.block_size, info.level).describe()
        say(f"sif {info.path}: {size(info.size)} {info.digest} ({info.arch}, {squashfs})")
        say(f"  from {source} {info.image_digest}")
        for p in pushed:
            what = f" (referrer of {p['referrer_of']})" if p["referrer_of"] else ""
            say(f"  -> {p['ref']} {p['digest']}{what}")


def _image_attestations(args: argparse.Namespace, source: Any) -> list[Any]:
    """The SBOM and provenance attached to the image ``args.ref`` names (an OCI layout,
    oci-archive or registry), as artifacts a SIF carries or a sqsh file has next to it;
    none when it has none."""
    from assembler.oci import mediatypes as mt
    from assembler.oci.artifact import Artifact
    from assembler.transports.formats import attached_to

    ref = absolute_ref(parse_ref(args.ref), Path.cwd())
    listing = attached_to(ref, source, options=registry_options(args))
    if listing is None:
        return []
    out = []
    for r in sorted(listing.referrers, key=lambda r: (r.descriptor.artifact_type, r.descriptor.digest)):
        if r.descriptor.artifact_type not in (mt.SPDX_JSON, mt.IN_TOTO_JSON) or len(r.blobs) != 1:
            continue  # a SIF has objects for an SBOM and JSON, not for any artifact
        (blob,) = r.blobs
        title = blob.annotations.get(mt.ANNOTATION_TITLE, "")
        notes = r.manifest.get("annotations")
        out.append(
            Artifact(
                r.descriptor.artifact_type,
                listing.read(blob),
                title,
                source.image.descriptor,
                dict(notes) if isinstance(notes, dict) else {},
            )
        )
    return out


def cmd_sqsh(args: argparse.Namespace) -> int:
    from assembler.pipeline.writers import writer_for
    from assembler.transports.target import Target

    squash = squash_of(args)
    out_path = Path(os.path.abspath(args.out))  # a symlink there is the output, not its target
    writer = writer_for(Ref("sqsh", str(out_path)))
    # The image's SBOM and provenance go next to the file (FILE.spdx.json...), as a build's
    # sqsh: output has them and a SIF holds them: a squashfs has no place for them.
    writer.check(force=args.force, sbom=not args.no_sbom)
    check_digestfile(args.digestfile)
    with showing(mode_of(args), verbose=args.verbose) as report, reading_cache(args) as cache_dir:
        source = source_of(args, cache_dir)
        ctx = dataclasses.replace(reading_context(args, cache_dir), epoch=resolve_epoch(args.epoch, None))
        target = Target(
            source,
            ctx,
            squash=squash,
            referrers=[] if args.no_sbom else _sidecar_attestations(args, source),
            sif_progress=lambda n: report(Event("bytes", {"n": n, "what": "sif"})),
        )
        report(Event("output", {"ref": str(writer.ref), "state": "writing"}))
        written, *beside = writer.write(target)
        report(Event("output", {"ref": str(writer.ref), "state": "done", "digest": written.digest}))
    write_digest(args.digestfile, written.digest)
    n = out_path.stat().st_size
    result = {
        "sqsh": str(out_path),
        "digest": written.digest,
        "size": n,
        "image": source.image.digest,
        "compressor": args.compressor,
        "block_size": args.block_size,
        "level": args.level,
        "beside": [{"path": w.ref, "digest": w.digest} for w in beside],
    }
    if args.json:
        out.print(json.dumps(result, indent=2), markup=False)
    elif args.quiet:
        say(written.digest)
    else:
        squashfs = squash.describe()
        say(f"sqsh {out_path}: {size(n)} {written.digest} ({squashfs})")
        say(f"  from {source.name} {source.image.digest}")
        for w in beside:
            say(f"  + {w.ref}")
    return 0


def _sidecar_attestations(args: argparse.Namespace, source: Any) -> list[Any]:
    """The image's SBOM, provenance and test results that have a file name next to an
    output (:mod:`assembler.transports.sidecar`): what ``sqsh`` writes beside the file."""
    from assembler.transports.sidecar import SUFFIXES, kind_of

    return [a for a in _image_attestations(args, source) if kind_of(a) in SUFFIXES]


def cmd_schema(args: argparse.Namespace) -> int:
    from assembler.manifest.schema.model import json_schemas

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


def _layer_names(image: Any) -> list[str]:
    """What made each layer, from the config's history (entries with a layer, in order)."""
    made = [str(h.get("created_by", "")) for h in image.config.get("history") or [] if not h.get("empty_layer")]
    if len(made) != len(image.layers):
        made = [""] * len(image.layers)
    return [m or d.digest for m, d in zip(made, image.layers, strict=True)]


def cmd_deps(args: argparse.Namespace) -> int:
    from assembler.cache import Cache
    from assembler.deps import check_image
    from assembler.pipeline.checks.depcheck import CHECKED_KINDS

    with reading_cache(args) as cache_dir:
        source = source_of(args, cache_dir)
        image = source.image
        names = _layer_names(image)
        ours = [i for i, n in enumerate(names) if n.startswith(tuple(f"assemble: {k} " for k in CHECKED_KINDS))]
        layers = list(range(len(image.layers))) if args.all_layers or not ours else ours
        cache = Cache(cache_dir)
        with cache.workdir("deps-") as work:
            report = check_image(image, source.blobs.open_blob, layers=layers, names=names, cache=cache, workdir=work)
    if args.json:
        out.print(json.dumps({"image": image.digest, **report.to_json()}, indent=2), markup=False)
        return 0 if report.ok else 1
    say(f"{source.name} {image.digest}: {report.files} ELF files in layers {', '.join(map(str, report.layers))}")
    for miss in report.misses:
        out.print(f"  missing: {miss}", markup=False)
    for note in report.notes:
        out.print(f"  note: {note}", markup=False)
    if report.host:
        out.print(f"  left to the host (GPU driver): {', '.join(report.host)}", markup=False)
    out.print("ok" if report.ok else f"{len(report.misses)} missing", markup=False)
    return 0 if report.ok else 1
