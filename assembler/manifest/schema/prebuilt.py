"""Layers of prebuilt things, taken as they are released: wheels from a Python package
index (``pip:``) and files from a URL (``url:``), each pinned by its sha256; and ``when:``,
which keeps a layer only for some param values (``vllm_from: wheel``).

Wheels are pinned as pip's hash-checking mode writes them (:mod:`.pinned`). Only the listed
wheels are installed, never their dependencies: the list is a lock, every wheel in it; with
``deps: true`` the manifest's lock gives that list, every wheel its resolution of them holds.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NamedTuple, Protocol, Self

from packaging.utils import canonicalize_name
from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from assembler.manifest.schema.fields import Mode, Owner, Scalar, Strict, StrList
from assembler.manifest.schema.hostuse import HostUse
from assembler.manifest.schema.pinned import parse_requirement, plain_pin
from assembler.manifest.schema.pysets import PythonSet
from assembler.manifest.text.yamlfile import PathKey


def _requirements(value: list[str]) -> list[str]:
    if not value:
        raise ValueError("lists no wheel (an empty layer): name==version --hash=sha256:HEX, one per wheel")
    names: set[str] = set()
    for text in value:
        req = parse_requirement(text, hashed="--hash" in text or "@" in text)
        if req.name in names:
            raise ValueError(f"{req.name} is listed twice")
        names.add(req.name)
    return value


def _absolute(value: str) -> str:
    if not value.startswith("/") or ".." in value.split("/"):
        raise ValueError(f"must be an absolute path in the image without '..', got {value!r}")
    return value


AbsPath = Annotated[str, AfterValidator(_absolute)]


def _python(value: str) -> str:
    # A check, not a schema pattern: manifests write it as a param (${python_version}).
    if not re.fullmatch(r"3\.[0-9]{1,2}", value):
        raise ValueError(f"expected a CPython version X.Y such as 3.12, got {value!r}")
    return value


def _when(value: Any) -> Any:
    # One value or a list of accepted values: {gpu: [cuda, rocm]}.
    if isinstance(value, dict):
        return {k: v if isinstance(v, list) else [v] for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Fetches:
    """What making a layer reaches, as :mod:`assembler.manifest.hosts.reach` reads it: the part a plan
    makes for it (``step:NAME``, ``layer:I``), the commands it runs (None: it runs none) with
    their env, Python sets and declared ``reaches:``, whether it asks the image's apt
    mirror, and the package indexes and the files (URLs) it fetches."""

    part: str
    run: Sequence[str] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    sets: Sequence[PythonSet] = ()
    declared: Mapping[str, HostUse] = field(default_factory=dict)
    apt: bool = False
    indexes: Sequence[str] = ()
    urls: Sequence[str] = ()


class HostFile(NamedTuple):
    """A host file or folder a layer puts in the image: ``source`` relative to the manifest's
    folder, ``to`` the image path (in that folder where it ends in ``/``), and the fields of
    the layer that say them (``("copy", "from")``), which a refusal names."""

    source: str
    to: str
    source_field: tuple[str, ...]
    to_field: tuple[str, ...]


class StepRef(NamedTuple):
    """A compile step's artifact a layer ships or mounts: ``ref`` is STEP.ARTIFACT (or STEP,
    where ``whole_step`` allows all of a step's artifacts), ``field`` the layer's field that
    says it (``("mounts", 0)``), which a refusal names."""

    ref: str
    field: tuple[str | int, ...]
    whole_step: bool


@dataclass(frozen=True)
class Installs:
    """A Python set a layer installs (:meth:`When.installs`): what the lock resolves, in which
    of the image's environments, and where the manifest writes it (the facts' errors)."""

    pyset: PythonSet
    environment: str  # the image's environment it joins: "python3.11", a set's environment, "files /wheels"
    # "set": a set its commands install (``python_sets:``), resolved with the others;
    # "wheels": wheels the layer unpacks, whose hashes the lock gives (``locked: true``);
    # "closure": those wheels and every one they require, all from the lock (``deps: true``);
    # "pinned": wheels the layer unpacks with their hashes written beside them
    kind: Literal["set", "wheels", "closure", "pinned"]
    what: str  # how an error names it: "python set torch", "pip"
    at: PathKey  # where it is written, below the layer: ("python_sets", 0), or () for the layer itself
    listed: str  # the field that lists its requirements there: "requirements", "pip"
    site: str | None = None  # where its wheels' files go, for a layer that unpacks them into a site-packages


def sets_installed(python_sets: Sequence[PythonSet]) -> list[Installs]:
    """``python_sets:`` (a compile step's, a ``run:`` layer's) as what the lock resolves: each
    in its environment (named, else ``pythonX.Y``), written at ``python_sets.J``."""
    return [
        Installs(
            s, s.environment or f"python{s.python}", "set", f"python set {s.name}", ("python_sets", j), "requirements"
        )
        for j, s in enumerate(python_sets)
    ]


class LayerLock(Protocol):
    """The lock's answer for one layer's sets (:meth:`When.with_lock`)."""

    def pins(self) -> str | None:
        """Every pin of the layer's sets, one per line (what its commands are constrained to)."""
        ...

    def hashed(self, texts: Sequence[str]) -> list[str]:
        """Each ``name==version`` of ``texts`` with the lock's ``--hash`` options."""
        ...

    def every(self) -> list[str]:
        """Every ``name==version`` the lock resolved for the layer's one set (its requirements
        and their dependencies), each with its ``--hash`` options."""
        ...


class When(Strict):
    """The base of every layer model. A layer with ``when: {param: value}`` is left out of
    the image unless each param has that value (or one of a list): one manifest, layers
    chosen by params."""

    when: Annotated[dict[str, list[Scalar]], BeforeValidator(_when, json_schema_input_type=dict[str, Any])] = Field(
        default_factory=dict, description="params this layer needs ({vllm_from: wheel}); otherwise it is left out"
    )

    # What the manifest floor asks of every kind of layer (model.LAYER_KINDS); a kind whose
    # layers ship or mount artifacts, or are made by a runtime step, says so here.

    def step_refs(self) -> list[StepRef]:
        """The compile steps' artifacts this layer ships or mounts."""
        return []

    def label(self) -> str | None:
        """The name the manifest gives this layer: its kind's ``name:`` field, where the kind
        has one (None: it has none or it is not given, and the layer is ``layers.INDEX`` in
        the lock and in messages)."""
        value = getattr(self, "name", None) if "name" in type(self).model_fields else None
        return value if isinstance(value, str) else None

    def runtime_name(self, index: int) -> str | None:
        """The runtime step that makes this layer, the image's ``index``-th (None: no step runs)."""
        return None

    def fetches(self, index: int) -> Fetches | None:
        """What making this layer, the image's ``index``-th, reaches (None: no host)."""
        return None

    def host_files(self) -> list[HostFile]:
        """The host files or folders this layer puts in the image: what the load checks stay
        inside the manifest's folder, ``watch`` watches and ``run --mount MANIFEST`` binds."""
        return []

    def apt_packages(self) -> list[str] | None:
        """The Debian packages this layer's runtime step installs with apt, as its
        ``packages:`` field names them (``from-steps``: the needed steps' runtime packages),
        which the lock pins; None: it installs none."""
        return None

    def installs(self) -> list[Installs]:
        """The Python sets making this layer installs, which the lock resolves and the facts
        check (none by default)."""
        return []

    def with_lock(self, lock: LayerLock) -> Self:
        """This layer with the lock's pins for :meth:`installs` applied where making it reads
        them (itself by default)."""
        return self


class PipLayer(When):
    """Wheels from a package index, unpacked as pip installs them into a prefix (a venv):
    each file's layer is made by us, so the same wheels give the same bytes. With
    ``files_to`` the wheel files are placed as they are (an image that ships a wheel)."""

    pip: Annotated[StrList, AfterValidator(_requirements)] = Field(
        description="name==version --hash=sha256:HEX, one per wheel (a lock: dependencies are not added)"
    )
    prefix: AbsPath = Field(default="/opt/venv", description="the venv (or prefix): scripts go to PREFIX/bin")
    python: Annotated[str, AfterValidator(_python)] = Field(
        default="3.12", description="the image's Python (X.Y): picks the wheels and PREFIX/lib/pythonX.Y"
    )
    site_packages: AbsPath | None = Field(default=None, description="default PREFIX/lib/pythonX.Y/site-packages")
    interpreter: AbsPath | None = Field(default=None, description="scripts' #! line; default PREFIX/bin/python")
    index: Annotated[str, Field(pattern=r"^https?://")] = Field(
        default="https://pypi.org/simple", description="a PEP 503/691 simple index"
    )
    split: bool | StrList = Field(
        default=False,
        description="true: one layer per wheel; a list of names (globs: nvidia-*): those each in their own layer, "
        "the rest in one",
    )
    locked: bool = Field(
        default=False, description="true: each name==version takes its sha256s from the manifest's lock (assemble lock)"
    )
    deps: bool = Field(
        default=False,
        description="true (with locked): every wheel the lock resolved for these requirements, their dependencies "
        "with them, as pip install takes them; false: the listed wheels only",
    )
    files_to: AbsPath | None = Field(
        default=None,
        description="the wheel files themselves into this folder, as pip download leaves them, not installed "
        "(prefix, site_packages, interpreter and split do not apply)",
    )
    name: str | None = Field(
        default=None,
        description="names its wheels in the lock (layers.NAME:wheels); default: its place in the layers",
        examples=["vllm"],
    )
    comment: str | None = Field(default=None, description="a note kept as the layer's comment in the image's history")

    def fetches(self, index: int) -> Fetches:
        return Fetches(f"layer:{index}", indexes=(self.index,))

    @property
    def site(self) -> str:
        """Where the wheels' files go: ``site_packages``, else PREFIX/lib/pythonX.Y/site-packages."""
        return self.site_packages or f"{self.prefix}/lib/python{self.python}/site-packages"

    def installs(self) -> list[Installs]:
        # Its wheels, one set: wheels placed as files (files_to) are in no environment but their own.
        wheels = PythonSet(
            name="wheels",
            requirements=[plain_pin(t) for t in self.pip],
            python=self.python,
            index_url=self.index,
            no_deps=bool(self.files_to) and not self.deps,
        )
        environment = f"files {self.files_to}" if self.files_to else f"python{self.python}"
        kind: Literal["wheels", "closure", "pinned"] = (
            ("closure" if self.deps else "wheels") if self.locked else "pinned"
        )
        return [Installs(wheels, environment, kind, "pip", (), "pip", None if self.files_to else self.site)]

    def with_lock(self, lock: LayerLock) -> Self:
        if not self.locked:
            return self
        if not self.deps:
            return self.model_copy(update={"pip": lock.hashed(self.pip)})
        every = lock.every()
        self._split_names([parse_requirement(text, hashed=True).name for text in every], "the lock resolves for it")
        return self.model_copy(update={"pip": every})

    def _split_names(self, names: Sequence[str], whose: str) -> None:
        """ValueError for a ``split:`` name no wheel of ``names`` has (a misspelt one would
        leave its wheel in the shared layer, re-pushed on every bump)."""
        for pattern in self.split if isinstance(self.split, list) else []:
            if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
                raise ValueError(f"split: {pattern!r} names no wheel {whose} ({', '.join(names)})")

    @model_validator(mode="after")
    def _deps_locked(self) -> Self:
        if self.deps and not self.locked:
            raise ValueError("deps: true takes the dependencies from the lock: it needs locked: true")
        return self

    @field_validator("split")
    @classmethod
    def _split(cls, value: bool | list[str]) -> bool | list[str]:
        return [canonicalize_name(v) for v in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _split_names_a_wheel(self) -> PipLayer:
        # deps: the lock names the wheels, checked when it is applied (with_lock)
        if not self.deps:
            self._split_names([parse_requirement(t, hashed=not self.locked).name for t in self.pip], "of this layer")
        return self


class UrlLayer(When):
    """A file downloaded once, checked against its sha256, placed (or unpacked) as a layer."""

    url: Annotated[str, Field(pattern=r"^https?://")] = Field(
        description="the file to download (http:// or https://)",
        examples=["https://github.com/krallin/tini/releases/download/v0.19.0/tini-amd64"],
    )
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] = Field(
        description="the file's sha256 (64 lowercase hex digits): a download that differs is refused"
    )
    to: AbsPath = Field(description="a file path, or a folder ending in / (the URL's file name is kept)")
    extract: bool = Field(default=False, description="unpack a tar (gzip, zstd, xz, bzip2) into 'to' (a folder)")
    mode: Mode | None = Field(default=None, description="the file's mode (default 0644)")
    owner: Owner | None = Field(default=None, description="the file's numeric uid[:gid] (default 0:0)")
    max_size: Annotated[str, Field(pattern=r"^[0-9]+[KMGT]?$")] = Field(
        default="16G", description="the download is refused beyond this size (bytes, or K/M/G/T)"
    )
    comment: str | None = Field(default=None, description="a note kept as the layer's comment in the image's history")

    def fetches(self, index: int) -> Fetches:
        return Fetches(f"layer:{index}", urls=(self.url,))

    @model_validator(mode="after")
    def _mode_of_one_file(self) -> UrlLayer:
        # An unpacked tar keeps its members' own modes and owners: one here would be silently ignored.
        for name in ("mode", "owner"):
            if self.extract and getattr(self, name) is not None:
                raise ValueError(f"{name}: is for one file; with extract: true each member keeps its own {name}")
        return self


def size_bytes(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)
