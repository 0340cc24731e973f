"""Each Python environment an image ends with, resolved as one whole (issue 33).

The manifests here are extracts of the shipped ones as they were at b60acfa (the lines that
clash, with the params they use; ``index_url`` added so that they resolve against this
test's index), and the index on 127.0.0.1 serves the metadata upstream's releases have
(recorded here from PyPI: torch 2.9.0's x86_64 wheel requires nvidia-nvshmem-cu12==3.3.20,
vLLM 0.8.1 requires xgrammar==0.1.16, torch 2.6.0 requires nvidia-cudnn-cu12==9.1.0.70).
An index that cannot be reached is a port nothing listens on.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import config_of, manifest_of, read_blob, run_cli, run_cli_here, uncompressed
from tests.pyindex import Index, closed_port, serving_index

pytestmark = pytest.mark.integration  # uv resolves (tests/conftest.py: tier)

LINUX = '; platform_system == "Linux" and platform_machine == "x86_64"'


@pytest.fixture()
def index(tmp_path: Path) -> Iterator[Index]:
    with serving_index(tmp_path / "index") as served:
        yield served


def _torch_2_9(index: Index) -> None:
    """torch 2.9.0 as PyPI serves it (the cu128 build: its METADATA's nvidia-* pins)."""
    index.add(
        "torch",
        "2.9.0",
        f"nvidia-cuda-runtime-cu12==12.8.90{LINUX}",
        f"nvidia-cublas-cu12==12.8.4.1{LINUX}",
        f"nvidia-cudnn-cu12==9.10.2.21{LINUX}",
        f"nvidia-nvshmem-cu12==3.3.20{LINUX}",
        "filelock",
    )
    index.add("nvidia-cuda-runtime-cu12", "12.8.90")
    index.add("nvidia-cublas-cu12", "12.8.4.1")
    index.add("nvidia-cublas-cu12", "12.9.1.4")
    index.add("nvidia-cudnn-cu12", "9.10.2.21", "nvidia-cublas-cu12")
    index.add("nvidia-nvshmem-cu12", "3.3.9")
    index.add("nvidia-nvshmem-cu12", "3.3.20")
    index.add("filelock", "3.20.0")


# manifests/vllm.yaml at b60acfa, lines 377-386 (the torch layer's set) and 489-493 (the
# ep-kernels layer), with the params they use.
VLLM_LAYERS = """\
name: vllm-extract
params: {{torch_version: 2.9.0, nvshmem_version: 3.3.9, python_version: "3.12", pip_install: uv pip install,
          torch_index: "", torch_index_url: "{torch_index}", index: "{index}"}}
bases: {{runtime: scratch}}
image:
  base: runtime
  layers:
    - run: ["${{pip_install}} ${{torch_index}} torch==${{torch_version}}"]
      name: torch
      python_sets:
        - {{name: torch, requirements: ["torch==${{torch_version}}"], extra_index_urls: ["${{torch_index_url}}"],
           python: "${{python_version}}", index_url: "${{index}}"}}
{ep_kernels}"""
EP_KERNELS = """\
    - run: ["${pip_install} nvidia-nvshmem-cu12==${nvshmem_version} /wheels/ep/*.whl"]
      name: ep-kernels
      python_sets: [{name: nvshmem, requirements: ["nvidia-nvshmem-cu12==${nvshmem_version}"],
                     python: "${python_version}", index_url: "${index}"}]
"""


def _vllm(tmp_path: Path, index: Index, *, ep_kernels: bool) -> Path:
    path = tmp_path / "vllm.yaml"
    torch_index = f"http://127.0.0.1:{closed_port()}/whl/cu129"
    path.write_text(
        VLLM_LAYERS.format(torch_index=torch_index, index=index.url, ep_kernels=EP_KERNELS if ep_kernels else "")
    )
    return path


def test_vllms_nvshmem_beside_torch_2_9_is_refused_at_lock_and_plan_locked(tmp_path: Path, index: Index) -> None:
    """Why 1: torch 2.9.0 requires nvidia-nvshmem-cu12==3.3.20 and the ep-kernels layer
    installs 3.3.9; the cu129 index cannot be reached, PyPI's build stands in for it."""
    _torch_2_9(index)
    manifest = _vllm(tmp_path, index, ep_kernels=True)
    done = run_cli(["lock", str(manifest)])
    assert done.code == 2, done
    for named in ("layers.torch:torch", "layers.ep-kernels:nvshmem", "nvidia-nvshmem-cu12==3.3.20", "3.3.9"):
        assert named in done.err, (named, done.err)
    plan = run_cli_here(["plan", str(manifest), "--locked", "--cache", str(tmp_path / "cache")])
    assert plan.code == 2, plan
    assert "layers.ep-kernels:nvshmem" in plan.err and "nvidia-nvshmem-cu12==3.3.20" in plan.err, plan.err
    # Without --locked the plan says so, and the state of each set.
    plain = run_cli_here(["plan", str(manifest), "--cache", str(tmp_path / "cache")])
    assert plain.code == 0 and "cannot be resolved" in plain.err, plain
    assert "layers.torch:torch" in plain.out and "unresolvable" in plain.out, plain.out


def test_a_stand_in_pins_what_the_flavours_share_and_leaves_the_rest_unknown(tmp_path: Path, index: Index) -> None:
    """PyPI's torch 2.9.0 (cu128) stands in for the cu129 index's: its NVSHMEM and cuDNN are
    every CUDA 12 flavour's and are pinned; its cuBLAS is cu128's own and is left unknown."""
    _torch_2_9(index)
    manifest = _vllm(tmp_path, index, ep_kernels=False)
    done = run_cli(["lock", str(manifest), "--json"])
    assert done.code == 0, done
    (entry,) = json.loads(done.out)["sets"]
    assert entry["state"] == "stand-in", entry
    from assembler.manifest.lock.file import read_lock

    lock = read_lock(tmp_path / "vllm.lock")
    torch = lock.sets[lock.variants["vllm-extract"]["layers.torch:torch"]]
    pins = torch.constraints()
    assert pins["nvidia-nvshmem-cu12"] == "nvidia-nvshmem-cu12==3.3.20" and "nvidia-cudnn-cu12" in pins
    assert "nvidia-cublas-cu12" not in pins and "nvidia-cuda-runtime-cu12" not in pins
    assert "torch" in torch.stand_in
    (env,) = lock.environments.values()
    assert set(env.unknown) == {"nvidia-cublas-cu12", "nvidia-cuda-runtime-cu12"}
    assert any("/whl/cu129" in s for s in env.stand_ins)
    plan = run_cli_here(["plan", str(manifest), "--locked", "--json", "--cache", str(tmp_path / "cache")])
    assert plan.code == 0, plan
    assert json.loads(plan.out)["lock"]["sets"]["layers.torch:torch"]["state"] == "stand-in"


# manifests/vllm.yaml at b60acfa, lines 435-441: FlashInfer's AOT kernels, which only
# flashinfer.ai's index serves (PyPI has no flashinfer-jit-cache).
JIT_CACHE = """\
name: jit-extract
params: {{flashinfer_version: 0.5.2, cuda_tag: cu129, python_version: "3.12", index: "{index}", flashinfer: "{url}"}}
bases: {{runtime: scratch}}
image:
  base: runtime
  layers:
    - run: ["uv pip install flashinfer-jit-cache==${{flashinfer_version}} --extra-index-url ${{flashinfer}}"]
      name: flashinfer-jit-cache
      python_sets:
        - {{name: jit-cache, requirements: ["flashinfer-jit-cache==${{flashinfer_version}}"],
           extra_index_urls: ["${{flashinfer}}"], python: "${{python_version}}", index_url: "${{index}}"}}
"""


def test_a_set_with_no_stand_in_fails_plan_locked_unless_allowed(tmp_path: Path, index: Index) -> None:
    index.add("filelock", "3.20.0")
    manifest = tmp_path / "jit.yaml"
    url = f"http://127.0.0.1:{closed_port()}/whl/cu129"
    manifest.write_text(JIT_CACHE.format(index=index.url, url=url))
    done = run_cli(["lock", str(manifest), "--json"])
    assert done.code == 0, done
    (entry,) = json.loads(done.out)["sets"]
    assert entry["state"] == "unresolved" and "no stand-in" in entry["why"] and url in entry["why"], entry
    cache = ["--cache", str(tmp_path / "cache")]
    plan = run_cli_here(["plan", str(manifest), "--locked", *cache])
    assert plan.code == 2, plan
    assert "layers.flashinfer-jit-cache:jit-cache" in plan.err and "--allow-unresolved" in plan.err, plan.err
    allowed = run_cli(
        ["plan", str(manifest), "--locked", "--allow-unresolved", "layers.flashinfer-jit-cache:jit-cache", *cache]
    )
    assert allowed.code == 0 and "could not be locked" in allowed.err, allowed


# manifests/verl.yaml at b60acfa, lines 96-111: Dockfile.ngc.vllm0.8's one resolve (the
# requirements that matter here; upstream's line 46).
VERL_0_8_1 = """\
name: verl-extract
params: {{vllm_req: vllm==0.8.1, torch_version: 2.6.0, python_version: "3.10", index: "{index}"}}
bases: {{vendor: scratch}}
image:
  base: vendor
  layers:
    - run: ["pip install --no-cache-dir '${{vllm_req}}' torch==${{torch_version}} 'transformers>=4.49.0'"]
      name: vllm
      python_sets:
        - name: vllm
          requirements: ["${{vllm_req}}", "torch==${{torch_version}}", "transformers>=4.49.0"]
          python: "${{python_version}}"
          index_url: "${{index}}"
"""


def test_a_requirement_the_index_no_longer_serves_is_refused(tmp_path: Path, index: Index) -> None:
    """Why 2: vLLM 0.8.1 requires xgrammar==0.1.16, which PyPI no longer serves (0.1.13,
    then 0.1.17)."""
    index.add("vllm", "0.8.1", "xgrammar==0.1.16", "torch==2.6.0", "transformers>=4.48.2")
    index.add("xgrammar", "0.1.13")
    index.add("xgrammar", "0.1.17")
    index.add("torch", "2.6.0")
    index.add("transformers", "4.51.3")
    manifest = tmp_path / "verl.yaml"
    manifest.write_text(VERL_0_8_1.format(index=index.url))
    done = run_cli(["lock", str(manifest)])
    assert done.code == 2 and "layers.vllm:vllm" in done.err and "xgrammar==0.1.16" in done.err, done
    plan = run_cli_here(["plan", str(manifest), "--locked", "--cache", str(tmp_path / "cache")])
    assert plan.code == 2 and "xgrammar==0.1.16" in plan.err, plan


# manifests/verl.yaml at b60acfa, lines 454-457 (the vllm layer's set, Dockerfile.vllm.sglang.megatron
# line 63: torch 2.6.0 from PyPI) and 480-491 (the cudnn layer, line 94: nvidia-cudnn-cu12==9.8.0.87).
VERL_CUDNN = """\
name: verl-extract
params: {{torch_version: 2.6.0, python_version: "3.10", index: "{index}"}}
bases: {{vendor: scratch}}
image:
  base: vendor
  layers:
    - run: ["pip install --no-cache-dir 'torch==${{torch_version}}'"]
      name: vllm
      python_sets:
        - {{name: vllm, requirements: ["torch==${{torch_version}}"], python: "${{python_version}}",
           index_url: "${{index}}"}}
    - run: ["pip install nvidia-cudnn-cu12==9.8.0.87"]
      name: cudnn
      python_sets:
        - {{name: cudnn, requirements: [nvidia-cudnn-cu12==9.8.0.87], python: "${{python_version}}",
           index_url: "${{index}}"{force}}}
"""


def _torch_2_6(index: Index) -> None:
    """torch 2.6.0 as PyPI serves it (the cu124 build), cuDNN 9.8 and the cuBLAS it takes."""
    index.add("torch", "2.6.0", f"nvidia-cudnn-cu12==9.1.0.70{LINUX}", f"nvidia-cublas-cu12==12.4.5.8{LINUX}")
    index.add("nvidia-cudnn-cu12", "9.1.0.70", "nvidia-cublas-cu12")
    index.add("nvidia-cudnn-cu12", "9.8.0.87", "nvidia-cublas-cu12")
    index.add("nvidia-cublas-cu12", "12.4.5.8")
    index.add("nvidia-cublas-cu12", "12.9.3.13")


def test_a_set_over_torchs_own_pin_is_refused_unless_forced(tmp_path: Path, index: Index) -> None:
    """Why 4: the cuDNN layer installs 9.8.0.87 over torch 2.6.0's 9.1.0.70. Today's text
    clashes; marked as what it is (pip installs it over torch's pin: force), its cuBLAS is
    torch's 12.4.5.8, not PyPI's newest (the set resolved alone pinned 12.9.3.13)."""
    _torch_2_6(index)
    manifest = tmp_path / "verl.yaml"
    manifest.write_text(VERL_CUDNN.format(index=index.url, force=""))
    done = run_cli(["lock", str(manifest)])
    assert done.code == 2, done
    for named in ("layers.vllm:vllm", "layers.cudnn:cudnn", "nvidia-cudnn-cu12==9.1.0.70", "9.8.0.87"):
        assert named in done.err, (named, done.err)
    plan = run_cli_here(["plan", str(manifest), "--locked", "--cache", str(tmp_path / "cache")])
    assert plan.code == 2 and "nvidia-cudnn-cu12==9.1.0.70" in plan.err, plan

    manifest.write_text(VERL_CUDNN.format(index=index.url, force=", force: true"))
    assert run_cli(["lock", str(manifest)]).code == 0
    from assembler.manifest.lock.file import read_lock

    lock = read_lock(tmp_path / "verl.lock")
    cudnn = lock.sets[lock.variants["verl-extract"]["layers.cudnn:cudnn"]].constraints()
    # the layer below installs torch's own cuDNN at its turn: not pinned to the one installed over it
    below = lock.sets[lock.variants["verl-extract"]["layers.vllm:vllm"]].constraints()
    assert "nvidia-cudnn-cu12" not in below and below["nvidia-cublas-cu12"] == "nvidia-cublas-cu12==12.4.5.8"
    assert cudnn == {
        "nvidia-cudnn-cu12": "nvidia-cudnn-cu12==9.8.0.87",
        "nvidia-cublas-cu12": "nvidia-cublas-cu12==12.4.5.8",
    }


# manifests/verl.yaml at b60acfa, lines 76-83: Dockerfile.ngc.vllm's vLLM layer (line 22), its
# requirements that matter here: vLLM 0.6.3.post1 with whatever transformers the day brings.
VERL_ERA = """\
name: verl-extract
params: {{vllm_req: vllm==0.6.3.post1, python_version: "3.10", index: "{index}"}}
bases: {{vendor: scratch}}
{as_of}image:
  base: vendor
  layers:
    - run: ["pip3 install --no-cache-dir transformers '${{vllm_req}}' pyairports"]
      name: vllm
      python_sets:
        - {{name: vllm, requirements: [transformers, "${{vllm_req}}", pyairports], python: "${{python_version}}",
           index_url: "${{index}}"}}
"""


def _era(index: Index) -> None:
    index.add("vllm", "0.6.3.post1", "transformers>=4.45.2", uploaded="2024-10-17T01:00:00Z")
    index.add("transformers", "4.45.2", uploaded="2024-10-07T12:00:00Z")
    index.add("transformers", "4.51.3", uploaded="2025-04-14T12:00:00Z")
    index.add("transformers", "5.20.2", uploaded="2026-10-01T12:00:00Z")
    # uploaded again after the date (as pyairports 2.1.1 was): only an exception finds it
    index.add("pyairports", "2.1.1", uploaded="2025-09-01T00:00:00Z")


def _pinned(lock: Path, where: str) -> dict[str, str]:
    from assembler.manifest.lock.file import read_lock

    found = read_lock(lock)
    (name,) = found.variants
    return {k: v.split("==")[1] for k, v in found.sets[found.variants[name][where]].constraints().items()}


def test_an_environment_resolves_as_of_upstreams_date(tmp_path: Path, index: Index) -> None:
    """Why 3: verl's default target, locked today, gets 2026's transformers beside vLLM
    0.6.3 (whose clip.py needs 4.x's CLIPSdpaAttention); as of upstream's date (b8bd5968,
    2025-05-17) it gets what upstream's build got."""
    _era(index)
    manifest = tmp_path / "verl.yaml"
    # With no date: the newest versions the sets allow when it is locked (as uv, poetry and
    # pip-tools lock), and lock says so
    manifest.write_text(VERL_ERA.format(index=index.url, as_of=""))
    done = run_cli(["lock", str(manifest)])
    assert done.code == 0, done
    assert _pinned(tmp_path / "verl.lock", "layers.vllm:vllm")["transformers"] == "5.20.2"
    assert re.search(r"image python3\.10 \(\S+\): resolved as of 20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ", done.out), done
    assert "(no resolve_as_of: the newest versions when it was locked)" in done.out, done
    # newest-pin: as of the day the newest release it names exactly was published (vllm's)...
    newest_pin = VERL_ERA.format(index=index.url, as_of="resolve_as_of: newest-pin\n")
    manifest.write_text(newest_pin)
    refused = run_cli(["lock", str(manifest)])
    assert refused.code == 2 and "pyairports" in refused.err, refused  # ... when outlines' pyairports was gone
    manifest.write_text(newest_pin.replace(", pyairports]", "]"))
    done = run_cli(["lock", str(manifest)])
    assert done.code == 0, done
    assert _pinned(tmp_path / "verl.lock", "layers.vllm:vllm")["transformers"] == "4.45.2"
    said = "resolved as of 2024-10-17T23:59:59Z (resolve_as_of newest-pin: the day its newest exact pin was published)"
    assert said in done.out, done
    plan = run_cli_here(["plan", str(manifest), "--locked", "--cache", str(tmp_path / "cache")])
    assert plan.code == 0 and "locked, as of 2024-10-17T23:59:59Z (resolve_as_of newest-pin" in plan.out, plan
    assert run_cli(["lock", str(manifest), "--upgrade"]).code == 0
    assert _pinned(tmp_path / "verl.lock", "layers.vllm:vllm")["transformers"] == "5.20.2"

    dated = "resolve_as_of: {date: '2025-05-17', packages: {pyairports: '2025-09-02'}}\n"
    manifest.write_text(VERL_ERA.format(index=index.url, as_of=dated))
    assert run_cli(["lock", str(manifest)]).code == 0, "a new date is a new environment: resolved again"
    pins = _pinned(tmp_path / "verl.lock", "layers.vllm:vllm")
    assert pins["transformers"] == "4.51.3" and pins["pyairports"] == "2.1.1", pins
    plan = run_cli_here(["plan", str(manifest), "--locked", "--cache", str(tmp_path / "cache")])
    assert plan.code == 0, plan
    # --upgrade resolves as of today, on purpose
    assert run_cli(["lock", str(manifest), "--upgrade"]).code == 0
    assert _pinned(tmp_path / "verl.lock", "layers.vllm:vllm")["transformers"] == "5.20.2"
    # without the exception, the re-uploaded file is not there on the date
    manifest.write_text(VERL_ERA.format(index=index.url, as_of="resolve_as_of: '2025-05-17'\n"))
    refused = run_cli(["lock", str(manifest)])
    assert refused.code == 2 and "pyairports" in refused.err, refused
    # the date of the release the manifest builds (the day its index published it)
    release = VERL_ERA.format(index=index.url, as_of="resolve_as_of: vllm==0.6.3.post1\n")
    manifest.write_text(release.replace(", pyairports]", "]"))
    assert run_cli(["lock", str(manifest)]).code == 0
    assert _pinned(tmp_path / "verl.lock", "layers.vllm:vllm")["transformers"] == "4.45.2"
    from assembler.manifest.lock.file import read_lock

    (env,) = read_lock(tmp_path / "verl.lock").environments.values()
    assert env.resolved_as_of == "2024-10-17T23:59:59Z", env


def test_a_lock_that_recorded_no_date_is_refused_by_plan_locked(tmp_path: Path, index: Index) -> None:
    """Why 3 as main had it: verl's lock resolved vLLM 0.6.3's environment as of the day it was
    locked (transformers 5.20.2) and recorded no date; plan --locked refuses that lock, naming
    the release and what floated, and lock resolves it again as of the release's day."""
    _era(index)
    manifest = tmp_path / "verl.yaml"
    as_of = "resolve_as_of: newest-pin\n"
    manifest.write_text(VERL_ERA.format(index=index.url, as_of=as_of).replace(", pyairports]", "]"))
    lock = tmp_path / "verl.lock"
    assert run_cli(["lock", str(manifest), "--upgrade"]).code == 0
    assert _pinned(lock, "layers.vllm:vllm")["transformers"] == "5.20.2"
    lock.write_text(re.sub(r"(?m)^(    resolved_as_of:).*$", r"\1", lock.read_text()))  # as main wrote it
    cache = ["--cache", str(tmp_path / "cache")]
    plan = run_cli_here(["plan", str(manifest), "--locked", *cache])
    assert plan.code == 2, plan
    for named in ("layers.vllm:vllm", "as of the day it was locked", "vllm==0.6.3.post1", "transformers"):
        assert named in plan.err, (named, plan.err)
    plain = run_cli_here(["plan", str(manifest), *cache])
    assert plain.code == 0 and "as of the day it was locked" in plain.err, plain
    assert run_cli(["lock", str(manifest)]).code == 0
    assert _pinned(lock, "layers.vllm:vllm")["transformers"] == "4.45.2"
    assert run_cli_here(["plan", str(manifest), "--locked", *cache]).code == 0


def test_locking_again_writes_the_same_bytes_and_asks_nothing(tmp_path: Path, index: Index) -> None:
    """An unchanged manifest: the same file, and what failed for a stated reason (here an
    index with no stand-in, an environment that cannot be resolved) is not tried again."""
    index.add("vllm", "0.8.1", "xgrammar==0.1.16", "torch==2.6.0", "transformers>=4.48.2")
    index.add("torch", "2.6.0")
    index.add("transformers", "4.51.3")
    index.add("filelock", "3.20.0")
    failing = tmp_path / "verl.yaml"
    failing.write_text(VERL_0_8_1.format(index=index.url))
    jit = tmp_path / "jit.yaml"
    jit.write_text(JIT_CACHE.format(index=index.url, url=f"http://127.0.0.1:{closed_port()}/whl/cu129"))
    ok = _vllm(tmp_path, index, ep_kernels=False)
    _torch_2_9(index)
    for manifest, code in ((failing, 2), (jit, 0), (ok, 0)):
        assert run_cli(["lock", str(manifest)]).code == code
        first = manifest.with_suffix(".lock").read_bytes()
        assert b"/tmp" not in first and str(tmp_path).encode() not in first
        index.asked.clear()
        assert run_cli(["lock", str(manifest)]).code == code
        assert manifest.with_suffix(".lock").read_bytes() == first, manifest
        assert index.asked == [], (manifest, index.asked)
    # --retry asks again
    assert run_cli(["lock", str(failing), "--retry"]).code == 2 and index.asked


def test_a_pip_layers_wheels_need_what_they_require_installed(tmp_path: Path, index: Index) -> None:
    """Why 9: ``pip: [flask==3.0.3, gunicorn==23.0.0]`` with ``locked: true`` unpacks the two
    wheels alone; flask's Werkzeug, Jinja2... come from nowhere and the image fails at import."""
    index.add("flask", "3.0.3", "Werkzeug>=3.0.0", "Jinja2>=3.1.2", "itsdangerous>=2.1.2", "click>=8.1.3")
    index.add("gunicorn", "23.0.0", "packaging")
    for project, version in (("werkzeug", "3.0.3"), ("jinja2", "3.1.4"), ("itsdangerous", "2.2.0")):
        index.add(project, version)
    index.add("click", "8.1.7")
    index.add("packaging", "24.1")
    manifest = tmp_path / "m.yaml"
    text = f"""name: web
bases: {{b: scratch}}
image:
  base: b
  layers:
    - pip: ["flask==3.0.3", "gunicorn==23.0.0"]
      locked: true
      python: "3.11"
      index: {index.url}
      name: app
"""
    manifest.write_text(text)
    done = run_cli(["lock", str(manifest)])
    assert done.code == 2, done
    for named in ("werkzeug", "jinja2", "packaging", "layers.app:wheels"):
        assert named in done.err, (named, done.err)
    plan = run_cli_here(["plan", str(manifest), "--cache", str(tmp_path / "cache")])
    assert plan.code == 2 and "werkzeug" in plan.err, plan
    # What a set below installs is enough.
    below = f"""    - run: ["pip install werkzeug jinja2 itsdangerous click packaging"]
      name: deps
      python_sets: [{{requirements: [werkzeug, jinja2, itsdangerous, click, packaging], python: "3.11",
                     index_url: "{index.url}"}}]
"""
    manifest.write_text(text.replace("  layers:\n", "  layers:\n" + below))
    assert run_cli(["lock", str(manifest)]).code == 0
    assert run_cli_here(["plan", str(manifest), "--locked", "--cache", str(tmp_path / "cache")]).code == 0


def test_a_pip_layer_with_deps_unpacks_what_the_lock_resolves_for_another_platform(
    tmp_path: Path, index: Index
) -> None:
    """Issue 69: ``deps: true`` makes the same layer whole, every wheel its requirements need
    taken from the lock (no command in the image: an arm64 layer made on this host, each
    platform resolved and locked on its own); a split name the lock does not resolve is
    refused where it is written."""
    index.add("flask", "3.0.3", "Werkzeug>=3.0.0", "click>=8.1.3", 'colorama; platform_machine == "x86_64"')
    for project, version in (("werkzeug", "3.0.3"), ("click", "8.1.7"), ("colorama", "0.4.6")):
        index.add(project, version)
    manifest = tmp_path / "m.yaml"
    text = f"""name: web
bases: {{b: scratch}}
platforms: [linux/amd64, linux/arm64]
image:
  base: b
  layers:
    - pip: ["flask==3.0.3"]
      locked: true
      deps: true
      split: [werkzeug]
      python: "3.11"
      index: {index.url}
      name: app
"""
    manifest.write_text(text)
    assert run_cli(["lock", str(manifest), "--platform", "linux/amd64", "--platform", "linux/arm64"]).code == 0
    lock = (tmp_path / "m.lock").read_text()
    assert lock.count("kind: closure") == 2 and "colorama==0.4.6" in lock, lock
    layout = tmp_path / "out"
    cache = ["--cache", str(tmp_path / "cache")]
    built = run_cli_here(
        ["build", str(manifest), "--locked", "--platform", "linux/arm64", *cache, "-o", f"oci:{layout}:web"]
    )
    assert built.code == 0, built
    assert config_of(layout, "web")["architecture"] == "arm64"
    layers = []
    for desc in manifest_of(layout, "web")["layers"]:
        with tarfile.open(fileobj=io.BytesIO(uncompressed(read_blob(layout, desc["digest"])))) as tar:
            layers.append(sorted(tar.getnames()))
    site = "opt/venv/lib/python3.11/site-packages"
    assert [any(n.startswith(f"{site}/werkzeug/") for n in names) for names in layers] == [True, False], layers
    rest = layers[1]
    for module in ("flask/__init__.py", "click/__init__.py"):
        assert f"{site}/{module}" in rest, rest
    assert not any("colorama" in n for names in layers for n in names)  # x86_64's alone
    # A split name no wheel of the lock's has: refused, naming the layer.
    manifest.write_text(text.replace("split: [werkzeug]", "split: [werkzeug, jinja2]"))
    refused = run_cli_here(["plan", str(manifest), "--locked", "--platform", "linux/arm64", *cache])
    said = "m.yaml:7: image.layers.0: split: 'jinja2' names no wheel the lock resolves for it"
    assert refused.code == 2 and said in refused.err, refused


def test_flashinfers_cubins_take_the_version_of_the_releases_flashinfer(tmp_path: Path, index: Index) -> None:
    """vLLM's ``vllm_from=wheel`` installs ``flashinfer-cubin==$V``, V read from the installed
    flashinfer-python: its set declared no such package, so ``--locked`` refused the step.
    ``version_of`` locks the cubins at the environment's flashinfer-python, not the newest."""
    index.add("vllm", "0.11.1", "flashinfer-python==0.5.2")
    index.add("vllm", "0.6.3", "filelock")
    index.add("filelock", "3.20.0")
    for version in ("0.5.2", "0.5.3"):
        index.add("flashinfer-python", version)
        index.add("flashinfer-cubin", version)
    manifest = tmp_path / "vllm.yaml"
    text = f"""name: vllm-extract
params: {{vllm_version: 0.11.1}}
bases: {{runtime: scratch}}
image:
  base: runtime
  layers:
    - run: ["pip install vllm==${{vllm_version}}"]
      name: vllm-deps
      python_sets: [{{name: venv, requirements: ["vllm==${{vllm_version}}"], python: "3.12", index_url: "{index.url}"}}]
    - run: ["pip install flashinfer-cubin==$V"]
      name: flashinfer
      python_sets:
        - {{name: cubin, requirements: [flashinfer-cubin], version_of: {{flashinfer-cubin: flashinfer-python}},
           python: "3.12", index_url: "{index.url}"}}
"""
    manifest.write_text(text)
    assert run_cli(["lock", str(manifest)]).code == 0
    assert _pinned(tmp_path / "vllm.lock", "layers.flashinfer:cubin") == {"flashinfer-cubin": "0.5.2"}
    assert run_cli_here(["plan", str(manifest), "--locked", "--cache", str(tmp_path / "cache")]).code == 0
    # a release that installs no FlashInfer: no version to take, refused at lock
    done = run_cli(["lock", str(manifest), "--set", "vllm_version=0.6.3"])
    assert done.code == 2, done
    assert "flashinfer-cubin takes flashinfer-python's version" in done.err, done.err
    # a follower with a version of its own is refused where it is written
    manifest.write_text(text.replace("requirements: [flashinfer-cubin]", "requirements: [flashinfer-cubin==0.5.3]"))
    bad = run_cli_here(["plan", str(manifest)])
    assert bad.code == 2 and "version_of" in bad.err and "names no version itself" in bad.err, bad
    # the shipped manifest's wheel variant declares it so
    from assembler.manifest.load.manifest import load_manifest
    from assembler.manifest.schema.model import RunLayer
    from tests.helpers import ROOT

    shipped = load_manifest(ROOT / "manifests" / "vllm.yaml", sets={"vllm_from": "wheel"}).manifest
    sets = {(x.name, s.name): s for x in shipped.image.layers if isinstance(x, RunLayer) for s in x.python_sets}
    assert sets[("flashinfer", "cubin")].version_of == {"flashinfer-cubin": "flashinfer-python"}
    assert sets[("flashinfer-jit-cache", "jit-cache")].version_of == {"flashinfer-jit-cache": "flashinfer-python"}


def test_a_stale_lock_warns_and_plan_shows_each_sets_state(tmp_path: Path, index: Index) -> None:
    """Why 9: without --locked a stale lock said nothing, and the plan never showed the lock."""
    index.add("filelock", "3.19.0")
    index.add("filelock", "3.20.0")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"""name: stale
params: {{spec: filelock}}
bases: {{b: scratch}}
image:
  base: b
  layers:
    - run: ["pip install '${{spec}}'"]
      name: app
      python_sets: [{{name: app, requirements: ["${{spec}}"], python: "3.11", index_url: "{index.url}"}}]
"""
    )
    assert run_cli(["lock", str(manifest)]).code == 0
    cache = ["--cache", str(tmp_path / "cache")]
    fresh = run_cli_here(["plan", str(manifest), *cache])
    assert fresh.code == 0 and "(fresh)" in fresh.out and "layers.app:app" in fresh.out and "locked" in fresh.out
    assert "stale" not in fresh.err, fresh
    stale = run_cli_here(["plan", str(manifest), "--set", "spec=filelock<3.20", *cache])
    assert stale.code == 0 and "is stale" in stale.err and "assemble lock" in stale.err, stale
    assert "(stale)" in stale.out and "not-locked" in stale.out, stale.out
    # A plain lock keeps (and brings up to date) the variants locked with --set.
    assert run_cli(["lock", str(manifest), "--set", "spec=filelock<3.20"]).code == 0
    manifest.write_text(manifest.read_text().replace('python: "3.11"', 'python: "3.12"'))
    assert run_cli(["lock", str(manifest)]).code == 0
    again = run_cli_here(["plan", str(manifest), "--set", "spec=filelock<3.20", "--locked", *cache])
    assert again.code == 0, again
    assert _pinned_in(tmp_path / "m.lock", "stale spec=filelock<3.20") == {"filelock": "3.19.0"}


def _pinned_in(lock: Path, variant: str) -> dict[str, str]:
    from assembler.manifest.lock.file import read_lock

    found = read_lock(lock)
    entry = found.sets[found.variants[variant]["layers.app:app"]]
    return {k: v.split("==")[1] for k, v in entry.constraints().items()}


def test_bases_and_refs_the_lock_cannot_pin_are_one_warning_each(tmp_path: Path) -> None:
    """Why 5: every base was unresolved, silently. Unreachable ones are recorded with why,
    kept (not asked again) and named by plan --locked, one line each."""
    port = closed_port()
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"""name: floating
bases: {{b: "docker://127.0.0.1:{port}/base:1"}}
sources: {{app: {{git: "http://127.0.0.1:{port}/app.git", ref: main}}}}
compile:
  - name: build
    base: b
    sources: [app]
    run: ["true"]
    artifacts: {{f: {{path: /src/app/f, to: /f}}}}
image: {{base: b, layers: [{{artifact: build.f}}]}}
"""
    )
    done = run_cli(["lock", str(manifest), "--json"])
    assert done.code == 0, done
    states = {d["set"]: d for d in json.loads(done.out)["sets"]}
    assert states["bases.b"]["state"] == "unresolved" and f"127.0.0.1:{port}" in states["bases.b"]["why"]
    assert states["sources.app"]["state"] == "unresolved"
    first = (tmp_path / "m.lock").read_bytes()
    assert run_cli(["lock", str(manifest)]).code == 0 and (tmp_path / "m.lock").read_bytes() == first
    plan = run_cli_here(["plan", str(manifest), "--locked", "--cache", str(tmp_path / "cache")])
    lines = [line for line in plan.err.splitlines() if "is not pinned by the lock" in line]
    assert len(lines) == 2 and any("bases.b" in x for x in lines) and any("sources.app" in x for x in lines), plan


def test_an_sdist_uv_cannot_build_here_is_given_the_requirements_it_records(tmp_path: Path, index: Index) -> None:
    """Why 5: sets that could never resolve here (pyext's setup.py fails on this machine's
    Python) were retried on every lock; the sdist's own PKG-INFO says what it requires."""
    index.add_sdist("oldsetup", "0.7", "filelock", setup="raise SystemExit('this setup.py runs on Python 2 only')\n")
    index.add("filelock", "3.20.0")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"""name: sdist
bases: {{b: scratch}}
image:
  base: b
  layers:
    - run: ["pip install oldsetup"]
      name: app
      python_sets: [{{name: app, requirements: [oldsetup], python: "3.10", index_url: "{index.url}"}}]
"""
    )
    done = run_cli(["lock", str(manifest)])
    assert done.code == 0, done
    assert _pinned_in(tmp_path / "m.lock", "sdist") == {"oldsetup": "0.7", "filelock": "3.20.0"}


# manifests/dynamo.yaml at b60acfa, lines 753-759: the sglang target's install on SGLang's
# runtime image, whose NCCL upstream force-reinstalls over its torch's pin ("for DeepEP").
DYNAMO_SGLANG = """\
name: dynamo-extract
params: {{sglang_version: 0.5.6.post2, cuda_major: "12", python_version: "3.12", index: "{index}"}}
bases: {{runtime: "docker://lmsysorg/sglang:v${{sglang_version}}-runtime"}}
image:
  base: runtime
  layers:
    - run: ["pip install sglang==${{sglang_version}} nvidia-nccl-cu${{cuda_major}}"]
      name: dynamo
      python_sets:
        - name: sglang
          requirements: ["sglang==${{sglang_version}}", "nvidia-nccl-cu${{cuda_major}}"]
          python: "${{python_version}}"
          index_url: "${{index}}"{provided}
"""


def test_what_the_base_force_reinstalled_is_not_pinned_back(tmp_path: Path, index: Index) -> None:
    """Why 4: the lock pinned SGLang's base's NCCL 2.28.3 back to torch's 2.27.5; declared as
    what the base provides, it is left to the base."""
    index.add("sglang", "0.5.6.post2", "torch==2.9.1")
    index.add("torch", "2.9.1", f"nvidia-nccl-cu12==2.27.5{LINUX}")
    index.add("nvidia-nccl-cu12", "2.27.5")
    index.add("nvidia-nccl-cu12", "2.28.3")
    manifest = tmp_path / "dynamo.yaml"
    manifest.write_text(DYNAMO_SGLANG.format(index=index.url, provided=""))
    assert run_cli(["lock", str(manifest)]).code == 0
    assert _pinned(tmp_path / "dynamo.lock", "layers.dynamo:sglang")["nvidia-nccl-cu12"] == "2.27.5"
    # what SGLang's image holds is a fact (assembler/manifest/facts/base_python.json): plan
    # --locked refuses the pin that would replace it, naming both
    cache = ["--cache", str(tmp_path / "cache")]
    plan = run_cli_here(["plan", str(manifest), "--locked", *cache])
    assert plan.code == 2, plan
    for named in ("layers.dynamo:sglang", "nvidia-nccl-cu12==2.27.5", "nvidia-nccl-cu12==2.28.3", "provided"):
        assert named in plan.err, (named, plan.err)
    plain = run_cli_here(["plan", str(manifest), *cache])
    assert plain.code == 0 and "nvidia-nccl-cu12==2.28.3" in plain.err, plain
    provided = '\n          provided: ["nvidia-nccl-cu${cuda_major}==2.28.3"]'
    manifest.write_text(DYNAMO_SGLANG.format(index=index.url, provided=provided))
    assert run_cli(["lock", str(manifest)]).code == 0
    pins = _pinned(tmp_path / "dynamo.lock", "layers.dynamo:sglang")
    assert "nvidia-nccl-cu12" not in pins and pins["torch"] == "2.9.1", pins
    assert run_cli_here(["plan", str(manifest), "--locked", *cache]).code == 0
    # ... as the shipped manifest's sglang target declares it
    from assembler.manifest.load.manifest import load_manifest
    from assembler.manifest.schema.model import RunLayer
    from tests.helpers import ROOT

    shipped = load_manifest(ROOT / "manifests" / "dynamo.yaml", target="sglang").manifest
    (layer,) = [x for x in shipped.image.layers if isinstance(x, RunLayer) and x.name == "dynamo"]
    (sglang,) = layer.python_sets
    assert {"nvidia-nccl-cu12==2.28.3", "nvidia-cudnn-cu12==9.16.0.29", "nvidia-cutlass-dsl==4.3.0"} <= set(
        sglang.provided
    )


def _as_version_2(path: Path) -> None:
    """The lock as lock_version 2 wrote it: each set's pins with their hash lines, no ``hashes``."""
    from ruamel.yaml import YAML
    from ruamel.yaml.scalarstring import LiteralScalarString

    from assembler.manifest.lock.file import read_lock

    sets = read_lock(path).sets
    yaml = YAML()
    yaml.width = 4096
    data = yaml.load(path)
    data["lock_version"] = 2
    del data["hashes"]
    for key, entry in sets.items():
        if entry.pins is not None:
            data["sets"][key]["pins"] = LiteralScalarString(entry.pins)
    yaml.dump(data, path)


def test_a_version_2_lock_is_refused_by_plan_and_written_anew_by_lock_keeping_its_pins(
    tmp_path: Path, index: Index
) -> None:
    """Lock version 3 writes each pin's hashes once (version 2 wrote them in every set that
    holds the pin). An older lock is named as one by plan; assemble lock writes it anew
    with its pins and its --set variants, asking the index nothing."""
    index.add("filelock", "3.19.0")
    index.add("filelock", "3.20.0")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"""name: two
params: {{spec: filelock}}
bases: {{b: scratch}}
image:
  base: b
  layers:
    - run: ["pip install '${{spec}}'"]
      name: app
      python_sets: [{{name: app, requirements: ["${{spec}}"], python: "3.11", index_url: "{index.url}"}}]
    - run: ["pip install filelock"]
      name: more
      python_sets: [{{name: more, requirements: ["filelock>=3"], python: "3.11", index_url: "{index.url}"}}]
"""
    )
    assert run_cli(["lock", str(manifest)]).code == 0
    assert run_cli(["lock", str(manifest), "--set", "spec=filelock<3.20"]).code == 0
    lock = tmp_path / "m.lock"
    written = lock.read_text()
    hashes = [line for line in written.splitlines() if line.startswith("    - sha256:")]
    assert len(hashes) == len(set(hashes)) == 2, written  # 3.20.0's and 3.19.0's, each once for two sets
    assert written.count("      filelock==3.20.0\n") == written.count("      filelock==3.19.0\n") == 2, written
    _as_version_2(lock)
    assert "lock_version: 2" in lock.read_text() and "--hash=sha256:" in lock.read_text()
    cache = ["--cache", str(tmp_path / "cache")]
    refused = run_cli_here(["plan", str(manifest), "--locked", *cache])
    assert refused.code == 2 and "lock_version 2 is an older format" in refused.err, refused
    assert "keeping its pins" in refused.err, refused.err
    plain = run_cli_here(["plan", str(manifest), *cache])
    assert plain.code == 0 and "lock_version 2" in plain.err and "install unlocked" in plain.err, plain
    index.add("filelock", "3.21.0")  # a lock resolved anew would move
    index.asked.clear()
    assert run_cli(["lock", str(manifest)]).code == 0
    assert index.asked == [] and lock.read_text() == written
    assert run_cli_here(["plan", str(manifest), "--set", "spec=filelock<3.20", "--locked", *cache]).code == 0
