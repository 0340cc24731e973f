"""Python sets: what a step's ``pip``/``uv`` commands install, declared as data.

A compile step, a recipe or a ``run:`` layer lists each set its commands install
(``python_sets:``): the requirements, the indexes, whether they go in with ``--no-deps``,
the target Python. ``assemble lock`` resolves each set with uv's resolver for the
interpreter and platform of the image into exact versions with hashes
(:mod:`assembler.manifest.lock.file` reads and writes the lock); a build hands the locked pins
to every pip and uv run of the step as constraints, so a cold build next month installs
what the lock says, not what the index serves that day.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated

from packaging.utils import canonicalize_name
from pydantic import BeforeValidator, Field, field_validator, model_validator

from assembler.manifest.schema.fields import Name, Scalar, Strict, StrList
from assembler.manifest.text.urls import redacted, scrubbed

_PYTHON = r"^3\.[0-9]+$"
# uv's --python-platform for an OCI platform: the manylinux floor of today's CUDA wheels.
UV_PLATFORMS = {
    "linux/amd64": "x86_64-manylinux_2_28",
    "linux/arm64": "aarch64-manylinux_2_28",
    "linux/arm64/v8": "aarch64-manylinux_2_28",
    "linux/ppc64le": "powerpc64le-unknown-linux-gnu",
    "linux/s390x": "s390x-unknown-linux-gnu",
}
_URL = re.compile(r"^(https?|file)://\S+$")
_EXACT = re.compile(r"^\s*[A-Za-z0-9][A-Za-z0-9._-]*\s*(\[[^\]]*\])?\s*===?\s*[A-Za-z0-9.!+_-]+\s*$")


# The environment variable a step or run: layer is given the lock's pins of its sets in (a
# step's key holds it; compile.container.python_lock makes it the constraints pip and uv read).
LOCK_ENV = "ASSEMBLE_PYTHON_LOCK"


class PythonSet(Strict):
    """One requirement set a step installs (``pip install``/``uv pip install``)."""

    name: Name = Field(default="default", description="unique within its step or layer")
    requirements: StrList = Field(
        default_factory=list,
        description="PEP 508 requirements, as the commands install them (torch==2.9.0); after requirements_file's",
    )
    requirements_file: str | None = Field(
        default=None,
        description="the project's own requirements, relative to the manifest: a pip requirements file (its -r, -c, "
        "--index-url, --extra-index-url and --hash lines), a pyproject.toml ([project] dependencies), or a lock "
        "used as it is, never resolved again: a uv.lock (read by uv export, beside its pyproject.toml) or a PEP 751 "
        "pylock.toml",
    )
    extras: StrList = Field(
        default_factory=list, description="a pyproject.toml's or uv.lock's optional-dependencies to add"
    )
    groups: StrList = Field(
        default_factory=list, description="a pyproject.toml's or uv.lock's dependency groups to add (PEP 735)"
    )
    hashes: dict[str, list[str]] = Field(
        default_factory=dict,
        description="the sha256s (hex) the lock keeps for a requirement's files, by name: what a requirements "
        "file's --hash options say (read from it)",
    )
    python: Scalar = Field(description="the target interpreter's version (3.12)")
    index_url: str | None = Field(default=None, description="--index-url (default: PyPI)")
    extra_index_urls: StrList = Field(default_factory=list, description="--extra-index-url, in order")
    no_deps: bool = Field(default=False, description="installed with --no-deps: each requirement locked alone")
    constraints: StrList = Field(default_factory=list, description="versions the resolver must keep (-c)")
    provided: StrList = Field(
        default_factory=list,
        description="what the image below already has, name==version (torch of a ROCm base: torch==2.5.0): "
        "resolved as that version with its dependencies left to the base, never pinned",
    )
    platform: str | None = Field(default=None, description="uv's --python-platform; default: the image's")
    installs: StrList = Field(
        default_factory=lambda: ["*"],
        description="names (globs) of the resolved set the commands install (nvidia-*: a layer that installs only "
        "torch's nvidia libraries); the layers above are resolved against these",
    )
    # Not part of the definition: how the pins reach the commands changes no resolution.
    require_hashes: bool = Field(
        default=False,
        description="the commands install the lock's pins of this set with their sha256s: "
        "pip install --require-hashes -r $ASSEMBLE_PYTHON_REQUIREMENTS",
    )
    force: bool = Field(
        default=False,
        description="installed over what the environment's other sets require (pip install --force-reinstall, "
        "or an exact pin pip installs over another package's): its exact requirements override theirs",
    )
    upgrade: bool = Field(
        default=False,
        description="installed with -U (pip install -U, uv pip install --upgrade): its requirements move to what "
        "the lock resolves, where without it what the image below holds is kept wherever it satisfies them",
    )
    environment: str | None = Field(
        default=None,
        description="the Python environment it installs into (a venv's path); default: the image's Python "
        "of this version, or the compile step's",
    )
    version_of: dict[str, str] = Field(
        default_factory=dict,
        description="a requirement installed at the version the environment resolves for another distribution "
        "({flashinfer-cubin: flashinfer-python}: the cubins of the installed FlashInfer), as a command that "
        "reads that version installs it",
    )

    @field_validator("requirements")
    @classmethod
    def _requirements(cls, value: list[str]) -> list[str]:
        for req in value:
            if req.startswith(("-", "/", ".")):
                raise ValueError(f"{req!r}: a requirement (NAME[extras]SPEC), not an option or a local file")
        return value

    @model_validator(mode="after")
    def _some(self) -> PythonSet:
        # The manifest's loader has read requirements_file into requirements already.
        if not self.requirements:
            raise ValueError("a set lists at least one requirement (requirements: or requirements_file:)")
        if (self.extras or self.groups) and not (self.requirements_file or "").endswith(("pyproject.toml", "uv.lock")):
            raise ValueError("extras: and groups: name parts of a requirements_file: pyproject.toml or uv.lock")
        return self

    @field_validator("hashes")
    @classmethod
    def _sha256s(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, shas in value.items():
            bad = [h for h in shas if not re.fullmatch(r"[0-9a-f]{64}", h)]
            if bad or not shas:
                raise ValueError(f"{name}: {bad[0] if bad else 'no hash'!r} is not a sha256 in hex")
        return value

    @field_validator("provided")
    @classmethod
    def _pinned(cls, value: list[str]) -> list[str]:
        for spec in value:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.!+_-]+", spec.strip()):
                raise ValueError(f"{spec!r}: what the base has is name==version (torch==2.5.1)")
        return value

    @model_validator(mode="after")
    def _forced_are_exact(self) -> PythonSet:
        # An override of what others require must say which version wins.
        if self.force:
            loose = [r for r in self.requirements if not _EXACT.match(r)]
            if loose:
                raise ValueError(f"force: true installs exact versions (name==version); not {', '.join(loose)}")
        return self

    @model_validator(mode="after")
    def _followers_are_loose(self) -> PythonSet:
        # The version comes from the environment, so the requirement names none of its own.
        names = {_name(r): r for r in self.requirements}
        for follower, leader in self.version_of.items():
            written = names.get(_name(follower))
            if written is None:
                raise ValueError(f"version_of: {follower!r} is not one of the set's requirements")
            if not re.fullmatch(r"\s*[A-Za-z0-9][A-Za-z0-9._-]*\s*", written) or _name(leader) == _name(follower):
                raise ValueError(f"version_of: {written!r} takes {leader!r}'s version, so it names no version itself")
        return self

    @field_validator("python")
    @classmethod
    def _python(cls, value: str) -> str:
        if not re.match(_PYTHON, value):
            raise ValueError(f"{value!r} is not a Python version (3.12)")
        return value

    @field_validator("index_url", "extra_index_urls")
    @classmethod
    def _urls(cls, value: str | list[str] | None) -> str | list[str] | None:
        for url in [value] if isinstance(value, str) else value or []:
            if not _URL.match(url):
                raise ValueError(f"{url!r} is not an index URL (https://...)")
        return value

    def indexes(self) -> list[str]:
        """Every index the set is resolved against, the main one first."""
        return [self.index_url or "https://pypi.org/simple", *self.extra_index_urls]

    def definition(self, platform: str) -> dict[str, object]:
        """What the set's resolution depends on: its key in a lock (the name is not). Its
        URLs without their credentials (:mod:`assembler.manifest.text.urls`): the lock is written
        down, and a password changed is no other resolution."""
        return {
            "requirements": sorted(scrubbed(r) for r in self.requirements),
            "python": self.python,
            "platform": self.platform or uv_platform(platform),
            "indexes": [redacted(i) for i in self.indexes()],
            "no_deps": self.no_deps,
            "constraints": sorted(scrubbed(c) for c in self.constraints),
            **({"provided": sorted(self.provided)} if self.provided else {}),
            **({"hashes": {_name(k): sorted(v) for k, v in sorted(self.hashes.items())}} if self.hashes else {}),
            **({"force": True} if self.force else {}),
            **({"upgrade": True} if self.upgrade else {}),
            **(
                {"version_of": {_name(k): _name(v) for k, v in sorted(self.version_of.items())}}
                if self.version_of
                else {}
            ),
        }


def _name(requirement: str) -> str:
    """A requirement's distribution name, normalised (PEP 503): ``Flashinfer_Cubin`` is ``flashinfer-cubin``."""
    found = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return canonicalize_name(found.group(1)) if found else requirement.strip()


def uv_platform(platform: str) -> str:
    """uv's ``--python-platform`` for an OCI platform (``linux/amd64``)."""
    found = UV_PLATFORMS.get(platform)
    if found is None:
        raise ValueError(f"no Python platform known for {platform}: give the set a platform:")
    return found


_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_RELEASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.!+_-]+$")


NEWEST_PIN = "newest-pin"


def _as_of_text(value: object) -> object:
    """``2025-05-17`` is ``{date: ...}``, ``vllm==0.11.1`` is ``{release: ...}``,
    ``newest-pin`` is ``{newest_pin: true}``."""
    if isinstance(value, str):
        if value.strip() == NEWEST_PIN:
            return {"newest_pin": True}
        return {"release": value} if "==" in value else {"date": value}
    return value


def _check_date(value: str, what: str) -> str:
    import datetime

    try:
        if not _DATE.match(value):
            raise ValueError
        datetime.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not a date (YYYY-MM-DD)") from None
    return value


class ResolveAsOf(Strict):
    """When a manifest's (or a target's) Python sets are resolved as of: what the indexes
    served then (uv's ``--exclude-newer``), so a lock made today gets upstream's era. Without
    one, a lock takes the newest versions the sets allow on the day it is made."""

    date: str | None = Field(
        default=None, description="YYYY-MM-DD: what the indexes served at the end of that day (UTC)"
    )
    release: str | None = Field(
        default=None,
        description="NAME==VERSION: the day the index published that release (the upstream tag the manifest builds)",
    )
    newest_pin: bool = Field(
        default=False,
        description="`newest-pin`: the day the newest release an environment names exactly (NAME==VERSION) "
        "was published, each environment its own (a manifest that copies upstream's pins)",
    )
    packages: dict[str, str] = Field(
        default_factory=dict,
        description="name -> YYYY-MM-DD for packages whose files were uploaded again after the date (pyairports)",
    )

    @model_validator(mode="before")
    @classmethod
    def _text(cls, value: object) -> object:
        return _as_of_text(value)

    @model_validator(mode="after")
    def _one(self) -> ResolveAsOf:
        if [self.date is not None, self.release is not None, self.newest_pin].count(True) != 1:
            raise ValueError(
                f"resolve_as_of gives a date (YYYY-MM-DD), a release (NAME==VERSION) or {NEWEST_PIN}, one of them"
            )
        if self.date is not None:
            _check_date(self.date, "resolve_as_of")
        if self.release is not None and not _RELEASE.match(self.release):
            raise ValueError(f"resolve_as_of release {self.release!r} is not NAME==VERSION")
        for name, date in self.packages.items():
            _check_date(date, f"resolve_as_of package {name}")
        return self

    def definition(self) -> dict[str, object]:
        """What a resolution depends on (part of the environment's key in a lock)."""
        found: dict[str, object] = (
            {"date": self.date} if self.date else {"release": self.release} if self.release else {"newest_pin": True}
        )
        if self.packages:
            found["packages"] = dict(sorted(self.packages.items()))
        return found


def as_of_rule(as_of: Mapping[str, object] | None, resolved: str | None = None) -> str:
    """Why an environment was resolved as of its date (``resolved``, as the lock records it),
    from its definition's ``as_of``."""
    if not as_of and resolved is not None and resolved.endswith("T23:59:59Z"):
        return "no resolve_as_of; an older assemble took its newest exact pin's day: assemble lock resolves it anew"
    if not as_of:
        return "no resolve_as_of: the newest versions when it was locked"
    said = as_of.get("date") or as_of.get("release") or NEWEST_PIN
    if resolved is not None and not resolved.endswith("T23:59:59Z"):  # a moment, not a day's end
        why = "lock --upgrade set it aside" + (", or it names no release exactly" if said == NEWEST_PIN else "")
        return f"resolve_as_of {said}, but {why}: the newest versions when it was locked"
    if as_of.get("date"):
        return f"resolve_as_of {said}"
    if as_of.get("release"):
        return f"resolve_as_of {said}: the day its index published it"
    return f"resolve_as_of {NEWEST_PIN}: the day its newest exact pin was published"


AsOf = Annotated[ResolveAsOf, BeforeValidator(_as_of_text, json_schema_input_type=str | ResolveAsOf)]
"""``resolve_as_of:`` as written: a date, ``NAME==VERSION`` (or a param naming one), ``newest-pin``,
or the mapping."""
