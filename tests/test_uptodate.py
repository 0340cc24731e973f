"""The up-to-date check (assembler.cli.uptodate, assembler.trace): a build run again with
nothing changed is answered from the record of the last build that started no program,
and anything the build read, or any output it wrote, that is not as it was runs it again.

The builds here use a ``rootfs:`` base tarball and a ``copy:`` layer: no program, so the
first build is traced and recorded, and the checks are as fast as a unit test's. Such a
build makes no buildah workspace, so the demo is built too (its cold build is the ``demo``
fixture's): a no-change rebuild of it checks which filesystem buildah's storage is on, from
``/proc``, and issue 70 was that no such build was recorded."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from assembler.cache.uptodate import HeldOutput, Record, Records, signature
from assembler.cli.uptodate import RACY_NS, Recorder
from assembler.trace import Trace, housekeeping
from tests.helpers import rootfs_project, run_cli_here
from tests.plugins.demo import Demo, base_args, copy_project
from tests.plugins.registry import RunningRegistry

# The build in a fresh interpreter (as a user runs it), reporting the modules it loaded.
_BUILD = """
import json, sys
from assembler.cli import main
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


def _project(tmp_path: Path) -> Path:
    rootfs_project(tmp_path)
    _settle()
    return tmp_path


def _settle() -> None:
    """Past the window in which a file just written counts as changed while a build ran."""
    time.sleep(RACY_NS / 1e9 + 0.1)


def _build(tmp_path: Path, *extra: str, outputs: tuple[str, ...] | None = None) -> dict[str, Any]:
    report = tmp_path / "report.json"
    outs = outputs if outputs is not None else (f"oci:{tmp_path / 'out'}:x",)
    args = ["m.yaml", "--cache", str(tmp_path / "cache"), *(a for o in outs for a in ("-o", o)), *extra]
    ran = subprocess.run(
        [sys.executable, "-c", _BUILD, str(report), *args], capture_output=True, text=True, cwd=tmp_path
    )
    assert ran.returncode == 0, ran.stderr
    seen: dict[str, Any] = json.loads(report.read_text())
    seen["stdout"], seen["stderr"] = ran.stdout, ran.stderr
    seen["replayed"] = "up to date:" in ran.stderr
    seen["digest"] = next(line.split()[1] for line in ran.stdout.splitlines() if line.startswith("image "))
    return seen


@pytest.mark.integration  # seconds
def test_a_rebuild_with_nothing_changed_is_answered_from_the_record(tmp_path: Path) -> None:
    """The second build loads neither the manifest's models nor the pipeline, and says
    what the first said, with the same digest."""
    _project(tmp_path)
    first = _build(tmp_path)
    assert not first["replayed"]
    again = _build(tmp_path)
    assert again["replayed"], again["stderr"]
    assert again["digest"] == first["digest"]
    assert again["stdout"].splitlines()[:-1] == first["stdout"].splitlines()[:-1]
    loaded = set(again["modules"])
    assert not loaded & {"pydantic", "assembler.manifest", "assembler.assemble", "assembler.pipeline.runs.building"}


@pytest.mark.integration  # seconds
def test_an_edited_input_a_touched_one_or_a_new_file_runs_the_build(tmp_path: Path) -> None:
    _project(tmp_path)
    first = _build(tmp_path)
    (tmp_path / "files/a.txt").write_text("other\n")  # same size: its times and change time tell
    _settle()
    edited = _build(tmp_path)
    assert not edited["replayed"] and edited["digest"] != first["digest"]
    assert _build(tmp_path)["replayed"]
    (tmp_path / "files/b.txt").write_text("new\n")  # the folder's listing
    _settle()
    added = _build(tmp_path)
    assert not added["replayed"] and added["digest"] != edited["digest"]
    with (tmp_path / "m.yaml").open("a") as f:  # the manifest
        f.write("# a comment\n")
    _settle()
    assert not _build(tmp_path)["replayed"]
    with tarfile.open(tmp_path / "root.tar", "a") as tf:  # the base tarball, never opened by a no-change build
        info = tarfile.TarInfo("etc/hostname")
        info.size = 6
        tf.addfile(info, io.BytesIO(b"probe\n"))
    _settle()
    based = _build(tmp_path)
    assert not based["replayed"] and based["digest"] != added["digest"]


@pytest.mark.integration  # seconds
def test_an_output_that_lost_a_blob_or_other_arguments_run_the_build(tmp_path: Path) -> None:
    _project(tmp_path)
    first = _build(tmp_path)
    assert _build(tmp_path)["replayed"]
    layout = tmp_path / "out"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text())
    blob = layout / "blobs/sha256" / manifest["layers"][-1]["digest"].split(":")[1]
    blob.unlink()
    again = _build(tmp_path)
    assert not again["replayed"] and blob.exists(), "the layout is written again"
    assert again["digest"] == first["digest"]
    assert not _build(tmp_path, "--epoch", "5")["replayed"]  # another invocation: its own record
    assert not _build(tmp_path, "--full-check")["replayed"]
    assert not _build(tmp_path, "--full-check")["replayed"], "--full-check neither uses a record nor makes one"
    _settle()  # what they wrote: read by the next build
    assert not _build(tmp_path)["replayed"], "the other builds wrote the layout"
    assert _build(tmp_path)["replayed"]


@pytest.mark.integration  # seconds
def test_cache_ls_lists_the_records_and_prune_removes_them(tmp_path: Path) -> None:
    """A record is an item of the cache as the others are: ``cache ls`` shows it (kind
    ``replay``, its size counted), ``cache prune`` removes it, and the next build checks
    everything again."""
    _project(tmp_path)
    _build(tmp_path)
    (key,) = [p.stem for p in Records(tmp_path / "cache").files()]
    listed = run_cli_here(["cache", "ls", "--json", "--cache", str(tmp_path / "cache")])
    assert listed.code == 0, str(listed)
    (replay,) = [i for i in listed.json["items"] if i["kind"] == "replay"]
    assert replay["name"] == key[:16] and replay["size"] == Records(tmp_path / "cache").path(key).stat().st_size
    assert listed.json["kinds"]["replay"]["count"] == 1
    assert _build(tmp_path)["replayed"]
    pruned = run_cli_here(["cache", "prune", "--all", "--cache", str(tmp_path / "cache")])
    assert pruned.code == 0, str(pruned)
    assert not Records(tmp_path / "cache").files()
    assert not _build(tmp_path)["replayed"]


@pytest.mark.integration  # seconds
def test_json_and_quiet_builds(tmp_path: Path) -> None:
    """``-q`` is replayed (the digest alone); ``--json`` always runs (its result is the build's)."""
    _project(tmp_path)
    digest = _build(tmp_path)["digest"]
    _settle()  # the layout it wrote: read by the next build, another invocation
    report = tmp_path / "q.json"
    args = ["m.yaml", "--cache", str(tmp_path / "cache"), "-o", f"oci:{tmp_path / 'out'}:x", "-q"]
    for _ in range(2):
        ran = subprocess.run(
            [sys.executable, "-c", _BUILD, str(report), *args], capture_output=True, text=True, cwd=tmp_path
        )
        assert ran.returncode == 0 and ran.stdout.strip() == digest, ran.stderr
    assert "pydantic" not in json.loads(report.read_text())["modules"], "the second -q build is replayed"
    args[-1] = "--json"
    for _ in range(2):
        ran = subprocess.run(
            [sys.executable, "-c", _BUILD, str(report), *args], capture_output=True, text=True, cwd=tmp_path
        )
        assert json.loads(ran.stdout)["digest"] == digest
        assert "pydantic" in json.loads(report.read_text())["modules"]


def test_a_registry_output_whose_tag_moved_is_pushed_again(tmp_path: Path, registry: RunningRegistry) -> None:
    _project(tmp_path)
    target = f"docker://{registry.host}/probe:x"
    outputs = (f"oci:{tmp_path / 'out'}:x", target)
    first = _build(tmp_path, "--tls-verify=false", outputs=outputs)
    assert _build(tmp_path, "--tls-verify=false", outputs=outputs)["replayed"]
    # Another image under the same tag (its own cache, its own record).
    other = tmp_path / "other"
    other.mkdir()
    (other / "m.yaml").write_text("name: other\nbases:\n  root: rootfs:../root.tar\nimage:\n  base: root\n")
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "assembler",
            "m.yaml",
            "--cache",
            str(other / "cache"),
            "--tls-verify=false",
            "-o",
            target,
        ],
        capture_output=True,
        text=True,
        cwd=other,
    )
    assert ran.returncode == 0, ran.stderr
    assert _tagged(registry) != first["digest"]
    # Past RACY_NS since the first build's last cache writes: on an idle machine the replay,
    # the other image's build and this one's start take about a second, and a rebuild that
    # reads a blob written that close to its start rightly leaves no record (it failed
    # so in full runs from a clean clone, whose last minutes are quiet).
    _settle()
    # -vv: the debug lines say why a build left no record or a record was not used.
    again = _build(tmp_path, "--tls-verify=false", "-vv", outputs=outputs)
    assert not again["replayed"] and again["digest"] == first["digest"]
    assert _tagged(registry) == first["digest"], "the tag is pushed again"
    replayed = _build(tmp_path, "--tls-verify=false", "-vv", outputs=outputs)
    why = [
        line for line in (again["stderr"] + replayed["stderr"]).splitlines() if "up-to-date" in line or "record" in line
    ]
    assert replayed["replayed"], why


def _tagged(registry: RunningRegistry) -> str:
    """The digest ``probe:x`` names in ``registry``."""
    accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"
    request = urllib.request.Request(f"{registry.url}/v2/probe/manifests/x", method="HEAD", headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return str(answer.headers["Docker-Content-Digest"])


@pytest.mark.integration  # seconds
def test_a_folder_link_moved_to_another_folder_and_a_digest_file(tmp_path: Path) -> None:
    """A symlink to a folder switched to another is a change, though the link and both
    folders are as they were; ``--digestfile`` is written by the replay too."""
    _project(tmp_path)
    for name, text in (("v1", "one\n"), ("v2", "two\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.txt").write_text(text)
    (tmp_path / "current").symlink_to("v1")
    (tmp_path / "m.yaml").write_text(
        "name: probe\nbases:\n  root: rootfs:root.tar\n"
        "image:\n  base: root\n  layers:\n    - copy: {from: ./current/, to: /srv/}\n"
    )
    _settle()
    digestfile = tmp_path / "digest"
    first = _build(tmp_path, "--digestfile", str(digestfile))
    assert _build(tmp_path, "--digestfile", str(digestfile))["replayed"]
    digestfile.unlink()
    assert _build(tmp_path, "--digestfile", str(digestfile))["replayed"]
    assert digestfile.read_text() == first["digest"]
    (tmp_path / "current").unlink()
    (tmp_path / "current").symlink_to("v2")
    _settle()
    switched = _build(tmp_path, "--digestfile", str(digestfile))
    assert not switched["replayed"] and switched["digest"] != first["digest"]
    assert digestfile.read_text() == switched["digest"]


# -- the trace and the record ---------------------------------------------------------------


def test_the_trace_sees_reads_writes_listings_looks_and_programs(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("x")
    (tmp_path / "d").mkdir()
    original = os.stat
    trace = Trace().start()
    try:
        (tmp_path / "in.txt").read_text()
        (tmp_path / "out.txt").write_text("y")
        os.listdir(tmp_path / "d")
        (tmp_path / "absent").exists()
        with housekeeping():
            (tmp_path / "swept").exists()
            os.listdir(tmp_path)
        assert trace.spoiled is None
        subprocess.run(["true"], check=True)
    finally:
        trace.stop()
    assert str(tmp_path / "in.txt") in trace.read
    assert str(tmp_path / "out.txt") in trace.written
    assert str(tmp_path / "d") in trace.listed and str(tmp_path) not in trace.listed
    assert str(tmp_path / "absent") in trace.looked and str(tmp_path / "swept") not in trace.looked
    assert trace.spoiled is not None and "program" in trace.spoiled
    assert os.stat is original, "os.stat is given back"


def _recorded(tmp_path: Path, during: Any) -> bool:
    """Whether a traced run that reads in.txt and does ``during`` leaves a record."""
    records = Records(tmp_path / "cache")
    recorder = Recorder(records, "k").start()
    try:
        (tmp_path / "in.txt").read_text()
        during()
    finally:
        recorder.trace.stop()

    class Result:
        outputs = ()
        digest = "sha256:" + "0" * 64

    recorder.finish([Result()], ["image"])  # type: ignore[list-item]
    return records.read("k") is not None


def test_a_file_changed_while_the_build_ran_leaves_no_record(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("x")
    _settle()
    assert _recorded(tmp_path, lambda: None)

    def another_hand() -> None:  # not the build's: untraced
        with housekeeping():
            (tmp_path / "in.txt").write_text("changed by another hand")

    assert not _recorded(tmp_path, another_hand), "a file the build read, changed since it began"


def test_a_module_s_bytecode_written_by_another_process_a_moment_before_is_no_change(tmp_path: Path) -> None:
    """Builds started side by side on a fresh install: one imports a module whose .pyc the
    other has just written. The module counts by its source; its cached bytecode is no
    input (Python checks it against the source). A __pycache__ file the build itself opens
    (a copy layer of a tree that has one) is still an input."""
    import importlib
    import py_compile

    mods = tmp_path / "mods"
    mods.mkdir()
    name = f"fresh_{os.getpid()}_{time.time_ns()}"
    (mods / f"{name}.py").write_text("VALUE = 1\n")
    (tmp_path / "in.txt").write_text("x")
    _settle()
    compiled = py_compile.compile(str(mods / f"{name}.py"), doraise=True)  # "another process", just now
    assert compiled is not None
    pyc = Path(compiled)
    sys.path.insert(0, str(mods))
    try:
        assert _recorded(tmp_path, lambda: importlib.import_module(name))
    finally:
        sys.path.remove(str(mods))
        sys.modules.pop(name, None)
    paths = Records(tmp_path / "cache").read("k").paths  # type: ignore[union-attr]
    assert str(mods / f"{name}.py") in paths and str(pyc) not in paths

    trace = Trace().start()  # the build's own open of it
    try:
        pyc.read_bytes()
    finally:
        trace.stop()
    assert str(pyc) in trace.read

    # Nor is the bytecode the import writes (its folder, the file) an output of the build.
    shutil.rmtree(mods / "__pycache__")
    (mods / f"{name}_b.py").write_text("VALUE = 2\n")
    sys.path.insert(0, str(mods))
    writes, sys.dont_write_bytecode = sys.dont_write_bytecode, False
    trace = Trace().start()
    try:
        importlib.import_module(f"{name}_b")
    finally:
        trace.stop()
        sys.dont_write_bytecode = writes
        sys.path.remove(str(mods))
        sys.modules.pop(f"{name}_b", None)
    assert list((mods / "__pycache__").iterdir()), "the import wrote its bytecode"
    assert not {p for p in trace.written | trace.created if "__pycache__" in p}, trace.written


def test_a_record_holds_the_state_the_build_left(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("x")
    _settle()
    assert _recorded(tmp_path, lambda: None)
    record = Records(tmp_path / "cache").read("k")
    assert record is not None and record.changed() is None
    how, was = record.paths[str(tmp_path / "in.txt")]
    assert how == "full" and was == signature(str(tmp_path / "in.txt"), "full")
    os.utime(tmp_path / "in.txt", ns=(1, 1))
    assert record.changed() == str(tmp_path / "in.txt")


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data.update(paths={"/x": ["sideways", None]}),
        lambda data: data.update(paths=["not", "a", "mapping"]),
        lambda data: data.update(digests=[]),
        lambda data: data["outputs"].append({"registry": 1}),
        lambda data: data.update(format=0),
    ],
)
def test_a_record_of_another_shape_is_no_record(tmp_path: Path, damage: Any) -> None:
    (tmp_path / "in.txt").write_text("x")
    records = Records(tmp_path / "cache")
    path = str(tmp_path / "in.txt")
    held = HeldOutput("127.0.0.1:5000", "probe", "x", "sha256:" + "1" * 64, ("sha256:" + "2" * 64,))
    records.write("k", Record({path: ["full", signature(path, "full")]}, [held], ["image"], ["sha256:" + "1" * 64]))
    assert records.read("k") is not None
    data = json.loads(records.path("k").read_text())
    damage(data)
    records.path("k").write_text(json.dumps(data))
    assert records.read("k") is None
    records.path("k").write_text("[" * 100_000)
    assert records.read("k") is None


def test_a_folder_by_its_descriptor_spoils_the_trace(tmp_path: Path) -> None:
    """An event naming a path under a folder descriptor says nothing of where it is."""
    fd = os.open(tmp_path, os.O_RDONLY)
    trace = Trace().start()
    try:
        os.mkdir("made", dir_fd=fd)
    finally:
        trace.stop()
        os.close(fd)
    assert trace.spoiled is not None and "descriptor" in trace.spoiled


def test_a_file_saved_in_place_in_a_listed_folder_while_the_build_ran(tmp_path: Path) -> None:
    """A walk reads a file's identity from its folder's listing: saved in place (its inode
    and its folder as they were), it changed while the build ran all the same."""
    (tmp_path / "in.txt").write_text("x")
    (tmp_path / "d").mkdir()
    (tmp_path / "d/a.txt").write_text("x")
    _settle()

    def saved_in_place() -> None:
        os.listdir(tmp_path / "d")
        with housekeeping(), open(tmp_path / "d/a.txt", "r+") as f:  # another hand's
            f.write("y")

    assert not _recorded(tmp_path, saved_in_place)


def test_a_link_switched_to_another_folder_is_a_change(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    link = tmp_path / "current"
    link.symlink_to("v1")
    before = signature(str(link), "full")
    link.unlink()
    link.symlink_to("v2")
    assert signature(str(link), "full") != before


def _writes_an_output(tmp_path: Path, after: Any) -> bool:
    """Whether a traced run that reads in.txt, writes out.bin as an output and then lets
    ``after`` run (another hand, before the record) leaves a record."""
    from assembler.pipeline.options import Event

    records = Records(tmp_path / "cache")
    recorder = Recorder(records, "k").start()
    report = recorder.watching(lambda event: None)
    try:
        (tmp_path / "in.txt").read_text()
        report(Event("output", {"ref": "oci:out", "state": "writing"}))
        (tmp_path / "out.bin").write_bytes(b"what the build wrote")
        report(Event("output", {"ref": "oci:out", "state": "done"}))
        with housekeeping():
            after()
    finally:
        recorder.trace.stop()

    class Result:
        outputs = ()
        digest = "sha256:" + "0" * 64

    recorder.finish([Result()], ["image"])  # type: ignore[list-item]
    record = records.read("k")
    assert record is None or str(tmp_path / "out.bin") in record.paths
    return record is not None


@pytest.mark.integration  # seconds
def test_an_output_changed_by_another_hand_before_the_record_leaves_none(tmp_path: Path) -> None:
    """An output is recorded as the build left it, or not at all: one rewritten by another
    hand (a second build writing the same layout) after the build was done with it, even
    to the same size and time, is not taken for the build's; nor one changed while the
    record waits out the racy window (a change then may keep every time a stat shows)."""
    (tmp_path / "in.txt").write_text("x")
    _settle()
    assert _writes_an_output(tmp_path, lambda: None)
    out = tmp_path / "out.bin"

    def rewritten() -> None:
        st = out.stat()
        out.write_bytes(b"what another one put")  # as many bytes
        os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))

    assert not _writes_an_output(tmp_path, rewritten)

    def rewritten_soon() -> None:
        import threading

        def later() -> None:
            time.sleep(0.3)
            out.write_bytes(b"what another one put")

        threading.Thread(target=later, daemon=True).start()

    assert not _writes_an_output(tmp_path, rewritten_soon)


# -- facts: what a build learns of the host where no file's time tells (issue 70) ----------------

# A mount table as /proc/self/mountinfo writes it: the root, and a tmpfs over a folder.
_ROOT_ONLY = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"


def _mounted(folder: Path, fstype: str = "tmpfs", source: str = "tmpfs") -> str:
    return _ROOT_ONLY + f"40 22 0:50 / {folder} rw shared:7 - {fstype} {source} rw\n"


class _Table:
    """/proc/self/mountinfo stood in for (hostdisk.MOUNTINFO): no file, as the kernel's is
    none a record holds."""

    def __init__(self, text: str) -> None:
        self.text = text

    def read_text(self) -> str:
        return self.text


def test_the_kernels_files_are_no_paths_of_a_trace_and_a_fact_is_noted_once(tmp_path: Path) -> None:
    """/proc and /sys files are made up as they are read, with times of the kernel's
    choosing: no identity of theirs is recorded (a build that read the mount table was
    never recorded), what is decided from them is a fact. One learned twice with two values
    spoils the trace; under housekeeping it is not the build's."""
    from assembler.trace import learned

    trace = Trace().start()
    try:
        Path("/proc/self/mountinfo").read_text()
        os.listdir("/proc/self")
        os.path.exists("/sys/kernel")
        learned("mount", "/a", ["/", "ext4", "/dev/vda1"])
        learned("mount", "/a", ["/", "ext4", "/dev/vda1"])
        with housekeeping():
            learned("mount", "/b", ["/", "ext4", "/dev/vda1"])
        assert trace.spoiled is None
        learned("mount", "/a", ["/a", "tmpfs", "tmpfs"])
    finally:
        trace.stop()
    seen = trace.read | trace.listed | trace.looked
    assert not {p for p in seen if p.startswith(("/proc", "/sys"))}, seen
    assert trace.facts == {"mount": {"/a": ["/", "ext4", "/dev/vda1"]}}
    assert trace.spoiled is not None and "the mount of /a changed while it ran" in trace.spoiled
    learned("mount", "/c", ["/", "ext4", ""])  # no trace running: nothing noted, nothing fails


def test_a_storage_check_is_recorded_as_its_mount_and_a_mount_changed_is_a_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build that checked which filesystem buildah's storage is on (hostdisk.place: the
    mount table) is recorded, with that filesystem as a fact; the same table again is no
    change, storage mounted over (another type, another source) or the mount gone is."""
    from assembler import hostdisk

    storage = tmp_path / "storage"
    storage.mkdir()
    (tmp_path / "in.txt").write_text("x")
    _settle()
    assert _recorded(tmp_path, lambda: hostdisk.place("buildah's storage", storage)), "the real mount table"
    record = Records(tmp_path / "cache").read("k")
    assert record is not None and record.changed() is None
    assert list(record.facts["mount"][str(storage)]) == hostdisk.mount_fact(storage)
    assert not {p for p in record.paths if p.startswith("/proc/")}

    table = _Table(_ROOT_ONLY)
    monkeypatch.setattr(hostdisk, "MOUNTINFO", table)
    assert _recorded(tmp_path, lambda: hostdisk.place("buildah's storage", storage))
    record = Records(tmp_path / "cache").read("k")
    assert record is not None and record.facts == {"mount": {str(storage): ["/", "ext4", "/dev/vda1"]}}
    assert record.changed() is None
    for other in (_mounted(storage), _mounted(storage, "nfs4", "srv:/scratch"), _mounted(tmp_path, "xfs", "/dev/vdb")):
        table.text = other
        assert record.changed() == f"the mount of {storage}", other
    table.text = _ROOT_ONLY.replace("/dev/vda1", "/dev/vdb1")  # the same point, another disk
    assert record.changed() == f"the mount of {storage}"
    table.text = _ROOT_ONLY
    assert record.changed() is None

    # A mount that is not what the build learned when it ends: no record.
    def remounted() -> None:
        hostdisk.place("buildah's storage", storage)
        table.text = _mounted(storage)

    table.text = _ROOT_ONLY
    assert not _recorded(tmp_path, remounted)


def test_a_record_s_facts_are_compared_as_json_holds_them_and_an_unknown_kind_is_no_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from assembler.cache import uptodate

    monkeypatch.setitem(uptodate.FACTS, "probe", lambda subject: (subject, 1))  # a tuple, recorded as a list
    records = Records(tmp_path / "cache")
    records.write("k", Record({}, [], ["image"], ["sha256:" + "1" * 64], facts={"probe": {"s": ["s", 1]}}))
    record = records.read("k")
    assert record is not None and record.changed() is None
    monkeypatch.setitem(uptodate.FACTS, "probe", lambda subject: (subject, 2))
    assert record.changed() == "the probe of s"
    data = json.loads(records.path("k").read_text())
    data["facts"] = {"unheard-of": {"s": 1}}
    records.path("k").write_text(json.dumps(data))
    assert records.read("k") is None


def _demo_rebuild(project: Path, demo: Demo, storage: Path, *, over: tuple[str, ...] = ()) -> tuple[str, str]:
    """The demo built in ``project`` as ``scripts/demo`` builds it (no --json: a build a
    record answers), every step cached in ``demo``'s cache, buildah's storage ``storage``,
    run through ``over`` (a command that runs the rest): (its digest, its stderr)."""
    args = [str(project / "manifests/demo.yaml"), "--cache", str(demo.cache), *base_args(demo.bases)]
    args += ["-o", "oci:out/demo:latest", "-vv"]  # -vv: why a record is not made or used
    # One environment for every build (a record is the invocation's, its environment
    # included): PWD as sh would set it for a build it starts.
    env = {**os.environ, "ASSEMBLE_STORAGE": str(storage), "PWD": str(project)}
    env.pop("ASSEMBLE_TRACEBACK", None)
    argv = [*over, sys.executable, "-m", "assembler", *args]
    ran = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr[-5000:]
    return next(line.split()[1] for line in ran.stdout.splitlines() if line.startswith("image ")), ran.stderr


def _why(stderr: str) -> str:
    """What the up-to-date check said of a build (-vv): whether it used a record, made one."""
    return (
        "\n".join(line for line in stderr.splitlines() if "uptodate" in line or "up to date" in line) or stderr[-3000:]
    )


def _demo_project(tmp_path: Path) -> tuple[Path, Path]:
    """The demo's sources (as its cold build's) in a folder of the test's own, and an empty
    folder for buildah's storage (no step runs: nothing is in it)."""
    project = tmp_path / "project"
    copy_project(project)
    storage = tmp_path / "storage"
    storage.mkdir()
    _settle()
    return project, storage


def test_a_no_change_rebuild_of_the_demo_is_answered_from_its_record(demo: Demo, tmp_path: Path) -> None:
    """Issue 70: the storage check (the mount table, read from /proc) left no build of a
    workspace recorded; what it learned is a fact of the record now, and the demo's
    second no-change rebuild is answered from the first's record."""
    project, storage = _demo_project(tmp_path)
    digest, first = _demo_rebuild(project, demo, storage)
    assert "up to date:" not in first and "not recorded" not in first, _why(first)
    again_digest, again = _demo_rebuild(project, demo, storage)
    assert again_digest == digest
    assert "up to date: none of the " in again and " paths the build of " in again, _why(again)
    records = Records(demo.cache)
    (record,) = (r for f in records.files() if (r := records.read(f.stem)) and str(storage) in r.facts.get("mount", {}))
    assert record.facts["mount"][str(storage)][1] != "unknown"
    assert not {p for p in record.paths if p.startswith(("/proc/", "/sys/"))}


@pytest.mark.integration  # unshare and mount: buildah's storage on another filesystem
def test_a_demo_rebuild_with_its_storage_mounted_over_is_not_answered_from_the_record(
    demo: Demo, tmp_path: Path
) -> None:
    """The record holds the filesystem buildah's storage is on: a tmpfs mounted over the
    storage folder (in a mount namespace of the build's own: nothing is left mounted) is a
    change, though the folder's own identity (a folder) is not; and so is the storage back
    on its disk; the record then made is used again."""
    project, storage = _demo_project(tmp_path)
    _, first = _demo_rebuild(project, demo, storage)
    assert "not recorded" not in first, _why(first)
    over = ("unshare", "--mount", "--", "sh", "-c", 'mount -t tmpfs tmpfs "$1" && shift && exec "$@"', "sh")
    _, moved = _demo_rebuild(project, demo, storage, over=(*over, str(storage)))
    assert "up to date:" not in moved, _why(moved)
    assert f"record is not used: the mount of {storage} is not as it left it" in moved, _why(moved)
    _, back = _demo_rebuild(project, demo, storage)
    assert "up to date:" not in back and f"the mount of {storage} is not as it left it" in back, _why(back)
    assert "up to date: none of the " in _demo_rebuild(project, demo, storage)[1]
