"""Whether our llama.cpp CPU server image is upstream's: the checks ``scripts/bench-rebuild
llamacpp`` makes after it built both (ours from manifests/llamacpp.yaml, upstream's from its
own ``.devops/cpu.Dockerfile`` by ``buildah bud``, from the same tree on the same runtime
base). A module of its own (scripts/ is no package: the benchmark puts this folder on
``sys.path``): what makes the two images the same is one concern, timing them another.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

# What upstream's image has and ours may lack: the apt step's logs and lists, and the empty
# files buildah bud leaves where it mounted /etc/hosts, /etc/hostname and /etc/resolv.conf
# (Docker, which upstream's CI builds with, commits none of them; our runtime steps leave
# them out, as Docker does).
UPSTREAM_ONLY_PREFIXES = ("var/log/", "var/lib/apt/")
UPSTREAM_ONLY_MOUNTS = frozenset({"etc/hosts", "etc/hostname", "etc/resolv.conf"})


def upstream_differences(theirs: str, ours: str) -> list[str]:
    """How ``ours`` (manifests/llamacpp.yaml's CPU server image) is not upstream's image
    ``theirs`` (its ``.devops/cpu.Dockerfile``, target ``server``, from the same tree on the
    same runtime base), by ``assemble diff --json --rootfs``: one line per difference, none
    when it is upstream's. The same entrypoint, env, workdir and healthcheck; the one port
    ours exposes (upstream's Dockerfile has no EXPOSE) is 8080, which the healthcheck
    probes; no file upstream's image has is missing from ours but the apt step's leftovers
    and buildah's mount points (``UPSTREAM_ONLY_*``); under upstream's install folder
    ``app/``, ours adds llama-cli alone (the seed's server image has it), has the server
    and libllama.so of its own build, and no kind or mode differs. ``theirs`` must be in
    Docker's format (a ``docker-archive:``): OCI's config has no HEALTHCHECK.

    tests/test_upstream_llamacpp.py asserted this until issue 64 moved it to the benchmark, where
    upstream's image is built anyway: in the suite it cost a second cold compile of
    llama.cpp (the two took about 36 minutes on 2 cores with an empty test cache)."""
    proc = subprocess.run(
        [sys.executable, "-m", "assembler", "diff", "--json", "--rootfs", theirs, ours], capture_output=True, text=True
    )
    if proc.returncode not in (0, 1):  # 0: identical, 1: different, 2: trouble
        return [f"assemble diff could not compare them (exit {proc.returncode}): {proc.stderr[-2000:]}"]
    diff = json.loads(proc.stdout)
    inspected = subprocess.run(
        [sys.executable, "-m", "assembler", "inspect", "--json", ours], capture_output=True, text=True, check=True
    )
    config = json.loads(inspected.stdout)["config"]
    return [*_config_differences(diff["config"], config), *_rootfs_differences(diff["rootfs"])]


def _config_differences(changes: list[dict[str, Any]], ours: dict[str, Any]) -> list[str]:
    """The container config's part of :func:`upstream_differences` (``ours``: our config)."""
    config = {c["path"]: (c["a"], c["b"]) for c in changes if c["path"].startswith("config.")}
    same = ("config.Entrypoint", "config.Env", "config.WorkingDir", "config.Healthcheck")
    problems = [f"{p}: upstream's {a!r}, ours {b!r}" for p, (a, b) in config.items() if p.startswith(same)]
    ports = {p: v for p, v in config.items() if p.startswith("config.ExposedPorts")}
    if ports != {"config.ExposedPorts.8080/tcp": (None, {})}:
        problems.append(f"exposed ports: ours should add 8080/tcp alone (upstream's own: none), got {ports}")
    probe = "http://localhost:8080/health"
    test = (ours.get("Healthcheck") or {}).get("Test") or []
    if probe not in test:
        problems.append(f"the healthcheck should probe {probe} (the port ours exposes), it runs {test}")
    return problems


def _rootfs_differences(files: list[dict[str, Any]]) -> list[str]:
    """The files' part of :func:`upstream_differences` (``files``: the diff's ``rootfs``)."""
    changes = {f["path"]: f for f in files}
    problems = []
    missing = sorted(
        p
        for p, f in changes.items()
        if f["change"] == "removed" and not (p.startswith(UPSTREAM_ONLY_PREFIXES) or p in UPSTREAM_ONLY_MOUNTS)
    )
    if missing:
        problems.append(f"{len(missing)} files of upstream's image missing from ours: {', '.join(missing[:40])}")
    app = {p: f for p, f in changes.items() if p.startswith("app/")}
    added = sorted(p for p, f in app.items() if f["change"] == "added")
    if added != ["app/llama-cli"]:
        problems.append(f"under app/ ours should add app/llama-cli alone, it adds {added or 'nothing'}")
    for path in ("app/llama-server", "app/libllama.so"):
        if app.get(path, {}).get("change") != "changed":
            state = app[path]["change"] if path in app else "the same bytes in both, or in neither"
            problems.append(f"{path}: should be in both images, each side's own build (changed), is {state}")
    problems += [
        f"{p}: its {c['path']} differs: upstream's {c['a']!r}, ours {c['b']!r}"
        for p, f in app.items()
        for c in f["fields"]
        if c["path"] in ("kind", "mode")
    ]
    return problems
