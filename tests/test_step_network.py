"""``network: false`` on a step (issue 50, item 6): its commands see only the loopback
interface, as BuildKit's ``RUN --network=none`` and Nix's sandbox give, in a compile step and
in a runtime (``run:``) layer alike; the preflight asks no host for it; a step that does not
say it keeps its key (and the network).

What a step sees is read from ``/proc/net/dev``, which lists the interfaces of the network
namespace the reading process is in.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

from assembler.manifest.hosts.reach import needs
from assembler.manifest.load.manifest import load_manifest
from assembler.manifest.schema import model as m
from assembler.pipeline.layers.kinds.run import runtime_step
from tests.helpers import manifest_of, read_blob, run_cli, run_cli_here, uncompressed

IFACES = "cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' ' | sort"

MANIFEST = """\
name: net
bases:
  runtime: oci:{runtime}:latest
compile:
  - name: sealed
    base: runtime
    network: false
    run: ["mkdir -p /out && {ifaces} > /out/ifaces"]
    artifacts:
      ifaces: {{path: /out/ifaces, to: /ifaces-compile}}
image:
  base: runtime
  layers:
    - artifact: sealed.ifaces
    - run: ["{ifaces} > /ifaces-offline"]
      name: offline
      network: false
    - run: ["{ifaces} > /ifaces-online"]
      name: online
"""


def _files(layout: Path, tag: str) -> dict[str, str]:
    """The regular files of the image's layers, by path (the upper layer's last)."""
    found: dict[str, str] = {}
    for layer in manifest_of(layout, tag)["layers"]:
        data = uncompressed(read_blob(layout, layer["digest"]))
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            for member in tf:
                if member.isfile() and member.name.lstrip("./").startswith("ifaces-"):
                    handle = tf.extractfile(member)
                    assert handle is not None
                    found[member.name.lstrip("./")] = handle.read().decode()
    return found


def test_a_step_without_network_sees_only_loopback(tmp_path: Path, demo_bases: dict[str, Path]) -> None:
    (tmp_path / "net.yaml").write_text(MANIFEST.format(runtime=demo_bases["runtime"], ifaces=IFACES))
    ran = run_cli(["net.yaml", "--cache", str(tmp_path / "cache"), "-o", "oci:out:x"], cwd=tmp_path)
    assert ran.code == 0, str(ran)
    files = _files(tmp_path / "out", "x")
    assert files["ifaces-compile"].split() == ["lo"], files
    assert files["ifaces-offline"].split() == ["lo"], files
    online = files["ifaces-online"].split()
    assert "lo" in online and len(online) > 1, files  # the host's interfaces, as a step had them


def test_the_preflight_asks_nothing_for_it_and_a_plain_step_keeps_its_key(tmp_path: Path) -> None:
    text = """\
name: net
bases: {b: scratch}
compile:
  - name: fetch
    base: b
    network: false
    run: ["pip install --index-url https://sealed.example.invalid/simple x"]
    artifacts: {a: {path: /a, to: /a}}
image:
  base: b
  layers:
    - artifact: fetch.a
    - run: ["curl -fsSL https://offline.example.invalid/x"]
      name: offline
      network: false
    - run: ["curl -fsSL https://online.example.invalid/x"]
      name: online
"""
    (tmp_path / "m.yaml").write_text(text)
    man = load_manifest(tmp_path / "m.yaml").manifest
    hosts = {n.host for n in needs(man, ["fetch"], ["b"])}
    assert "online.example.invalid" in hosts
    assert not hosts & {"sealed.example.invalid", "offline.example.invalid"}, hosts
    # the default (true) is not part of a step's key: the keys of steps written before it stay
    planned = run_cli_here(["plan", "m.yaml", "--json", "--cache", str(tmp_path / "c")], cwd=tmp_path)
    assert planned.code == 0, planned
    (tmp_path / "m.yaml").write_text(re.sub(r"(?m)^ *network: false\n", "", text))
    plain = run_cli_here(["plan", "m.yaml", "--json", "--cache", str(tmp_path / "c")], cwd=tmp_path)
    assert plain.code == 0, plain
    (tmp_path / "m.yaml").write_text(re.sub(r"(?m)^( *)network: false$", r"\1network: true", text))
    said = run_cli_here(["plan", "m.yaml", "--json", "--cache", str(tmp_path / "c")], cwd=tmp_path)
    keys = [{s["name"]: s.get("key") for s in json.loads(r.out)["steps"]} for r in (planned, plain, said)]
    assert keys[1] == keys[2], keys  # network: true is the default's key
    assert keys[0]["fetch"] != keys[1]["fetch"], keys
    # a run layer's step: keyed when it runs, on what its definition says
    layers = {x.name: x for x in man.image.layers if isinstance(x, m.RunLayer)}
    offline, online = (runtime_step(layers[n], i).definition for i, n in ((1, "offline"), (2, "online")))
    assert offline["network"] is False and "network" not in online, (offline, online)
