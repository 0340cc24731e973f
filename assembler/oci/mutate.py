"""Make new images from old ones. Every function returns a new :class:`Image`.

Images we create are OCI images (Docker media types are renamed, the bytes of their
blobs stay the same) and their JSON goes through :func:`canonical_json`, so the same
inputs always give the same manifest digest.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from assembler.oci import mediatypes as mt
from assembler.oci.descriptor import Descriptor, Platform
from assembler.oci.digest import canonical_json, sha256_digest
from assembler.oci.image import Image
from assembler.oci.layer import Layer


def timestamp(epoch: int) -> str:
    """RFC 3339 UTC time of an integer epoch, the form configs and annotations use."""
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ConfigChanges:
    """Changes to an image's runtime config; ``None`` leaves a field as the base has it.

    ``env`` entries are merged by name (later wins, base order kept); ``labels`` merge;
    ``exposed_ports`` and ``volumes`` add. Setting ``entrypoint`` without ``cmd`` clears
    the base's Cmd, as Docker does.
    """

    env: Mapping[str, str] = field(default_factory=dict)
    entrypoint: Sequence[str] | None = None
    cmd: Sequence[str] | None = None
    workdir: str | None = None
    user: str | None = None
    exposed_ports: Sequence[str] = ()
    volumes: Sequence[str] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    healthcheck: Mapping[str, Any] | None = None
    stop_signal: str | None = None


def _build(config: dict[str, Any], layers: Sequence[Descriptor], annotations: Mapping[str, str]) -> Image:
    config_bytes = canonical_json(config)
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": Descriptor(mt.OCI_CONFIG, sha256_digest(config_bytes), len(config_bytes)).to_json(),
        "layers": [d.to_json() for d in layers],
    }
    if annotations:
        manifest["annotations"] = dict(annotations)
    return Image(canonical_json(manifest), config_bytes)


def _oci_layers(image: Image) -> list[Descriptor]:
    return [d.with_media_type(mt.TO_OCI.get(d.media_type, d.media_type)) for d in image.layers]


def scratch(platform: Platform, *, epoch: int) -> Image:
    """An image with no layers and an empty runtime config."""
    config: dict[str, Any] = {
        **platform.to_json(),
        "created": timestamp(epoch),
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [],
    }
    return _build(config, [], {})


def append_layers(image: Image, layers: Sequence[Layer], *, epoch: int) -> Image:
    """``image`` plus ``layers`` on top, each with a history entry dated ``epoch`` saying
    its ``origin`` (and ``comment``)."""
    config = copy.deepcopy(image.config)
    rootfs = config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs["type"] = "layers"
    diff_ids = list(rootfs.get("diff_ids") or [])
    history = list(config.get("history") or [])
    if not history and diff_ids:
        # History is optional in OCI, but once we add entries there must be one per layer:
        # a base without any gets one per layer it has, so readers can match them up.
        history = [
            {"created": timestamp(epoch), "created_by": "(base layer; the base has no history)"} for _ in diff_ids
        ]
    for layer in layers:
        diff_ids.append(layer.diff_id)
        entry: dict[str, Any] = {"created": timestamp(epoch), "created_by": layer.origin}
        if layer.comment:
            entry["comment"] = layer.comment
        history.append(entry)
    rootfs["diff_ids"] = diff_ids
    config["history"] = history
    config["created"] = timestamp(epoch)
    return _build(config, [*_oci_layers(image), *(layer.descriptor for layer in layers)], image.annotations)


def _merge_env(base: Sequence[str], env: Mapping[str, str]) -> list[str]:
    order: list[str] = []
    values: dict[str, str] = {}
    for item in base:
        name, _, value = item.partition("=")
        if name not in values:
            order.append(name)
        values[name] = value
    for name, value in env.items():
        if name not in values:
            order.append(name)
        values[name] = value
    return [f"{name}={values[name]}" for name in order]


def set_config(image: Image, changes: ConfigChanges, *, epoch: int) -> Image:
    """``image`` with its runtime config changed as ``changes`` says."""
    config = copy.deepcopy(image.config)
    runtime: dict[str, Any] = dict(config.get("config") or {})
    if changes.env:
        runtime["Env"] = _merge_env(runtime.get("Env") or [], changes.env)
    if changes.entrypoint is not None:
        runtime["Entrypoint"] = list(changes.entrypoint)
        if changes.cmd is None:
            runtime.pop("Cmd", None)
    if changes.cmd is not None:
        runtime["Cmd"] = list(changes.cmd)
    if changes.workdir is not None:
        runtime["WorkingDir"] = changes.workdir
    if changes.user is not None:
        runtime["User"] = changes.user
    if changes.exposed_ports:
        ports = dict(runtime.get("ExposedPorts") or {})
        ports.update({p: {} for p in changes.exposed_ports})
        runtime["ExposedPorts"] = ports
    if changes.volumes:
        volumes = dict(runtime.get("Volumes") or {})
        volumes.update({v: {} for v in changes.volumes})
        runtime["Volumes"] = volumes
    if changes.labels:
        labels = dict(runtime.get("Labels") or {})
        labels.update(changes.labels)
        runtime["Labels"] = labels
    if changes.healthcheck is not None:
        runtime["Healthcheck"] = dict(changes.healthcheck)
    if changes.stop_signal is not None:
        runtime["StopSignal"] = changes.stop_signal
    # Empty values are dropped so an untouched field does not differ by `null` vs absent.
    config["config"] = {k: v for k, v in runtime.items() if v not in (None, "", [], {})}
    config["created"] = timestamp(epoch)
    return _build(config, _oci_layers(image), image.annotations)


def set_annotations(image: Image, annotations: Mapping[str, str]) -> Image:
    """``image`` with manifest annotations merged with ``annotations``."""
    merged = {**image.annotations, **annotations}
    return _build(copy.deepcopy(image.config), _oci_layers(image), merged)


def with_layers(image: Image, layers: Sequence[Descriptor]) -> Image:
    """``image`` with its layer descriptors replaced by ones of the same content (the same
    diff_ids: recompressed blobs). A different number of layers is the caller's bug: ValueError."""
    if len(layers) != len(image.layers):
        raise ValueError("with_layers: the number of layers must not change")
    return _build(copy.deepcopy(image.config), list(layers), image.annotations)
