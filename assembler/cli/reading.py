"""What the commands that read an image share (``inspect``, ``validate``, ``diff``, ``deps``,
``sif``, ``sqsh``, ``referrers``, ``verify``): a cache for the read, and the image opened."""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from assembler.cli.arguments import platform_arg, registry_options
from assembler.oci.reference import absolute_ref, parse_ref
from assembler.pipeline.options import resolve_epoch
from assembler.proc import Runner


@contextlib.contextmanager
def reading_cache(args: argparse.Namespace) -> Iterator[Path]:
    """``--cache``, else a temporary cache removed afterwards: reading an image never fills
    the default cache behind the user's back."""
    if args.cache is not None:
        yield args.cache.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="assemble-read-") as tmp:
        yield Path(tmp)


def reading_context(args: argparse.Namespace, cache_dir: Path) -> Any:
    """How a reading command opens images: its cache, ``--platform``, the network options."""
    from assembler.cache import Cache
    from assembler.transports import Context

    return Context(
        cache=Cache(cache_dir),
        runner=Runner(),
        platform=platform_arg(args.platform or "linux/amd64"),
        epoch=resolve_epoch(None, None),
        registry=registry_options(args),
    )


def source_of(args: argparse.Namespace, cache_dir: Path, text: str | None = None) -> Any:
    """The image ``args.ref`` (or ``text``) names, opened for reading (nothing copied yet)."""
    from assembler.transports import open_source

    ref = parse_ref(args.ref if text is None else text)
    return open_source(absolute_ref(ref, Path.cwd()), reading_context(args, cache_dir))
