"""``assemble lock --pylock``: each locked Python set as a PEP 751 ``pylock.toml``, read by
readers that are not ours: packaging's ``Pylock`` (validation and its environment
selection) and uv, which installs from it (the lock's versions, its hashes checked: one
byte of a hash changed and uv refuses the file). Against a local index (tests/pyindex.py).
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.pyindex import Index, serving_index

SETUP = "from setuptools import setup; setup()\n"


@pytest.fixture()
def index(tmp_path: Path) -> Iterator[Index]:
    with serving_index(tmp_path / "index") as served:
        served.add("pyl-app", "1.0", "pyl-lib>=1.0")
        served.add("pyl-lib", "1.0")
        served.add("pyl-lib", "2.0")
        served.add_sdist("pyl-lib", "2.0", setup=SETUP)  # the sdist beside the wheel: hashed too
        served.add("pyl-other", "1.0")
        yield served


def _manifest(root: Path, index: str) -> Path:
    path = root / "m.yaml"
    path.write_text(
        f"""name: pylocktest
bases: {{b: scratch}}
image:
  base: b
  layers:
    - run: ["pip install pyl-app"]
      name: app
      python_sets:
        - {{name: app, requirements: [pyl-app], python: "3.11", index_url: "{index}"}}
        - {{name: other, requirements: [pyl-other], python: "3.11", index_url: "{index}"}}
"""
    )
    return path


def _install(target: Path, pylock: Path) -> list[str]:
    """uv installing from ``pylock`` into ``target``, for this interpreter (3.11, the sets')."""
    from assembler.proc import uv_binary

    into = ["--python", sys.executable, "--target", str(target)]
    return [uv_binary(), "pip", "install", "--no-cache", *into, "-r", str(pylock)]


@pytest.mark.integration  # uv resolves and installs
def test_each_set_is_a_pylock_that_packaging_and_uv_read(tmp_path: Path, index: Index) -> None:
    from packaging.pylock import Pylock

    from assembler.manifest.lock.file import read_lock

    manifest = _manifest(tmp_path, index.url)
    done = run_cli(["lock", str(manifest), "--pylock", str(tmp_path / "out")])
    assert done.code == 0, done
    files = sorted((tmp_path / "out").rglob("*.toml"))
    assert [f.relative_to(tmp_path / "out").as_posix() for f in files] == [
        "pylocktest/pylock.layers-app-app.toml",
        "pylocktest/pylock.layers-app-other.toml",
    ], done.err
    lock = read_lock(tmp_path / "m.lock")
    hashes = {pin: {h.split(":")[1] for h in hs} for e in lock.sets.values() for pin, hs in e.hashes().items()}

    doc = Pylock.from_dict(tomllib.loads(files[0].read_text()))  # packaging validates it
    assert doc.created_by == "assemble" and str(doc.lock_version) == "1.0"
    assert [str(m) for m in doc.environments or []] == [
        'python_version == "3.11" and sys_platform == "linux" and platform_machine == "x86_64"'
    ]
    assert {(p.name, str(p.version)) for p in doc.packages} == {("pyl-app", "1.0"), ("pyl-lib", "2.0")}
    lib = next(p for p in doc.packages if p.name == "pyl-lib")
    assert lib.sdist is not None and lib.sdist.name == "pyl_lib-2.0.tar.gz" and lib.wheels and len(lib.wheels) == 1
    files_hashed = {lib.sdist.hashes["sha256"], lib.wheels[0].hashes["sha256"]}
    assert files_hashed == hashes["pyl-lib==2.0"]  # exactly the lock's files, no other
    assert lib.wheels[0].url and lib.wheels[0].url.startswith(index.url.removesuffix("/simple"))
    chosen = {p.name for p, _ in doc.select()}  # this machine: Linux, x86_64, its Python is 3.11
    assert chosen == {"pyl-app", "pyl-lib"}

    target = tmp_path / "site"
    installed = subprocess.run(_install(target, files[0]), capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    assert sorted(p.name for p in target.glob("*.dist-info")) == ["pyl_app-1.0.dist-info", "pyl_lib-2.0.dist-info"]

    sha = lib.wheels[0].hashes["sha256"]
    bad = tmp_path / "bad" / "pylock.toml"
    bad.parent.mkdir()
    bad.write_text(files[0].read_text().replace(sha, ("0" if sha[0] != "0" else "1") + sha[1:]))
    refused = subprocess.run(_install(tmp_path / "bad-site", bad), capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "hash" in refused.stderr.lower(), refused.stderr
    assert not list((tmp_path / "bad-site").glob("pyl_lib*"))


@pytest.mark.integration  # uv resolves
def test_a_file_gone_from_its_index_leaves_that_set_without_a_pylock(tmp_path: Path, index: Index) -> None:
    manifest = _manifest(tmp_path, index.url)
    assert run_cli(["lock", str(manifest)]).code == 0
    index.releases["pyl-other"] = []  # yanked from the index after the lock
    done = run_cli(["lock", str(manifest), "--pylock", str(tmp_path / "out")])
    assert done.code == 0, done
    said = done.out
    assert "pylocktest: layers.app:other: no pylock.toml" in said and "is on none of its indexes" in said, said
    assert "1 pylock.toml file(s), 1 set(s) without" in said
    assert [f.name for f in (tmp_path / "out").rglob("*.toml")] == ["pylock.layers-app-app.toml"]


def test_names_follow_pep_751() -> None:
    from packaging.pylock import is_valid_pylock_path

    from assembler.python.pylock import file_name, folder_name

    for where in ("layers.torch:venv", "compile.wheel:torch", "layers.vllm:wheels", "x.y z"):
        assert is_valid_pylock_path(Path(file_name(where))), file_name(where)
    assert folder_name("openai vllm_from=wheel python_version=3.11") == "openai_vllm_from=wheel_python_version=3.11"


def test_a_project_on_one_of_the_indexes_only_is_found_there() -> None:
    """PyTorch's index serves torch but no aiohttp (404): the file is looked for on the next."""
    from assembler.errors import NotFound
    from assembler.manifest.lock.file import Entry
    from assembler.python.pylock import pylock_of

    sha = "a" * 64
    torch_index, pypi = "https://download.pytorch.org/whl/cu128", "https://pypi.org/simple"

    def files(index: str, name: str) -> dict[str, tuple[str, str]]:
        if index == torch_index:
            raise NotFound(f"{index}/{name}/: 404 not found")
        return {sha: ("aiohttp-3.13.2-cp311-cp311-manylinux_2_17_x86_64.whl", "https://files.example/aiohttp.whl")}

    entry = Entry(
        {"indexes": [torch_index, pypi], "python": "3.11", "platform": "x86_64-manylinux_2_28"},
        f"aiohttp==3.13.2 \\\n    --hash=sha256:{sha}\n",
    )
    (package,) = pylock_of(entry, files=files, what="layers.app:deps").packages
    assert package.index == pypi and package.wheels and package.wheels[0].url == "https://files.example/aiohttp.whl"


SECRET = "s3cr3t-77d0-pylock"  # an index's password: in no pylock.toml, and still what fetches its files


def test_an_index_with_a_password_is_read_with_it_and_named_without(tmp_path: Path) -> None:
    """The lock names a set's index without its password; the pylock's files are listed
    from that index as the manifest names it now (the password given back,
    ``files_of``), and each file's URL in it is the index's link without the password,
    which the manifest's index gives back again to fetch it (issue 66)."""
    from assembler.cache import Cache
    from assembler.fetch.pinned import download
    from assembler.manifest.lock.file import Entry, Lock
    from assembler.manifest.text.urls import with_credentials
    from assembler.python.pylock import files_of, write_pylocks

    with serving_index(tmp_path / "index", auth=("alice", SECRET)) as index:
        index.add("pyl-app", "1.0")
        sha = index.releases["pyl-app"][0]["hashes"]["sha256"]
        manifests = index.url.replace("http://", f"http://alice:{SECRET}@")  # as the set has it, in memory
        platform = {"python": "3.11", "platform": "x86_64-manylinux_2_28"}
        entry = Entry({"indexes": [index.url], **platform}, f"pyl-app==1.0 \\\n    --hash=sha256:{sha}\n")
        lock = Lock("m.yaml", sets={"k": entry}, variants={"v": {"layers.app:app": "k"}})
        written, skipped = write_pylocks(lock, ["v"], tmp_path / "out", files=files_of([manifests]))
        assert skipped == [] and len(written) == 1, skipped
        text = written[0].read_text()
        assert SECRET not in text and "alice" not in text, text
        (package,) = tomllib.loads(text)["packages"]
        url = index.url.removesuffix("/simple") + "/files/pyl_app-1.0-py3-none-any.whl"
        assert package["index"] == index.url and [w["url"] for w in package["wheels"]] == [url]
        got = download(
            with_credentials(url, [manifests]), sha256=sha, cache=Cache(tmp_path / "cache"), max_bytes=1 << 20, what="t"
        )
        assert got == f"sha256:{sha}" and index.authorized and all(index.authorized)
