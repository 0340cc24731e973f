"""Wheels installed as layer members by pypa/installer (``assembler.archive.wheel``), on
crafted wheels: every scheme and kind of script, pinned to the bytes the hand-written
installer before it gave; paths that would leave their scheme's folder; a RECORD that does
not match."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from assembler.archive.layer import Member, with_parents, write_layer
from assembler.archive.wheel import Scheme, wheel_members
from assembler.errors import InvalidArchive, UnsafePath

SCHEME = Scheme("/opt/venv", "/opt/venv/lib/python3.12/site-packages", "/opt/venv/bin/python", "3.12")
SITE = "opt/venv/lib/python3.12/site-packages"
INFO = "craft-1.0.dist-info"
FILES = {
    "craft/__init__.py": b"X = 1\n",
    "craft/tool.bin": b"\x7fELF...",
    f"{INFO}/METADATA": b"Metadata-Version: 2.1\nName: craft\nVersion: 1.0\n",
    f"{INFO}/WHEEL": b"Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: false\nTag: py3-none-any\n",
    f"{INFO}/entry_points.txt": b"[console_scripts]\ncraft = craft.cli:main\ncraft-x = craft:obj.method [extra]\n"
    b"[gui_scripts]\ncraftw = craft.gui:run\n",
    "craft-1.0.data/scripts/run-py": b"#!python\nprint('hi')\n",
    "craft-1.0.data/scripts/run-pyw": b"#!pythonw -u\nprint('hi')\n",
    "craft-1.0.data/scripts/run-sh": b"#!/bin/sh\necho hi\n",
    "craft-1.0.data/scripts/plain": b"no shebang\n",
    "craft-1.0.data/scripts/binx": b"\x7fELFbinary",
    "craft-1.0.data/data/share/craft/x.txt": b"data\n",
    "craft-1.0.data/headers/craft.h": b"int x;\n",
    "craft-1.0.data/purelib/craft_extra.py": b"Y = 2\n",
    "craft-1.0.data/platlib/craft_plat.py": b"Z = 3\n",
}
# Executable with a file type, and with permission bits alone (some zip writers).
EXECUTABLE = {"craft/tool.bin": 0o100755, "craft-1.0.data/scripts/binx": 0o100755, "craft/__init__.py": 0o755}
# The layer the hand-written installer made of FILES (before pypa/installer): the same bytes.
CRAFT_DIFF_ID = "sha256:b30ed503147365f5461d45dcb6be30631cf7757ffc2f601f8334f93edcf7c849"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _wheel(path: Path, files: dict[str, bytes], *, record: dict[str, str | None] | None = None) -> Path:
    """A wheel of ``files`` with a RECORD of their hashes (``record`` replaces some rows; None: left out)."""
    rows = {name: f"{name},sha256={_b64(data)},{len(data)}" for name, data in files.items()}
    for name, row in (record or {}).items():
        if row is None:
            del rows[name]
        else:
            rows[name] = row
    rows[f"{INFO}/RECORD"] = f"{INFO}/RECORD,,"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in [*files.items(), (f"{INFO}/RECORD", "\n".join(rows.values()).encode() + b"\n")]:
            info = zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0))
            info.external_attr = EXECUTABLE.get(name, 0o100644) << 16
            zf.writestr(info, data)
    return path


def _members(path: Path, scheme: Scheme = SCHEME) -> list[Member]:
    with zipfile.ZipFile(path) as zf:
        return wheel_members(zf, scheme, filename="craft-1.0-py3-none-any.whl", epoch=0, what="craft")


def _files(
    path: Path, scheme: Scheme = SCHEME, *, filename: str = "craft-1.0-py3-none-any.whl"
) -> dict[str, tuple[int, bytes]]:
    """Image path -> (mode, bytes) of the wheel at ``path`` installed."""
    out = {}
    with zipfile.ZipFile(path) as zf:
        for entry, opener in wheel_members(zf, scheme, filename=filename, epoch=0, what="c"):
            assert opener is not None and entry.mtime == 0
            with opener() as data:
                out[entry.path] = (entry.mode, data.read())
    return out


def test_every_scheme_lands_where_pip_puts_it_in_the_bytes_pinned_before(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path / "craft-1.0-py3-none-any.whl", FILES)
    with zipfile.ZipFile(wheel) as zf:
        members = wheel_members(zf, SCHEME, filename=wheel.name, epoch=0, what="craft")
        layer = write_layer(with_parents(members, epoch=0), io.BytesIO(), compression="gzip", epoch=0)
    assert layer.diff_id == CRAFT_DIFF_ID

    files = _files(wheel)
    assert files["opt/venv/bin/run-py"] == (0o755, b"#!/opt/venv/bin/python\nprint('hi')\n")
    assert files["opt/venv/bin/run-pyw"] == (0o755, b"#!/opt/venv/bin/python\nprint('hi')\n")
    assert files["opt/venv/bin/run-sh"] == (0o755, FILES["craft-1.0.data/scripts/run-sh"])
    assert files["opt/venv/bin/plain"][0] == 0o644 and files["opt/venv/bin/binx"][0] == 0o755
    assert files[f"{SITE}/craft/tool.bin"][0] == files[f"{SITE}/craft/__init__.py"][0] == 0o755
    assert "opt/venv/share/craft/x.txt" in files and "opt/venv/include/site/python3.12/craft/craft.h" in files
    assert {f"{SITE}/craft_extra.py", f"{SITE}/craft_plat.py"} <= set(files)
    launcher = files["opt/venv/bin/craft-x"][1].decode()
    assert launcher.startswith("#!/opt/venv/bin/python\n") and "from craft import obj" in launcher
    assert "sys.exit(obj.method())" in launcher and files["opt/venv/bin/craftw"][0] == 0o755
    assert files[f"{SITE}/{INFO}/INSTALLER"][1] == b"assemble\n"
    record = files[f"{SITE}/{INFO}/RECORD"][1].decode().splitlines()
    assert record == [*sorted(record[:-1]), f"{INFO}/RECORD,,"]
    run_py = files["opt/venv/bin/run-py"][1]
    assert f"../../../bin/run-py,sha256={_b64(run_py)},{len(run_py)}" in record
    assert f"craft/__init__.py,sha256={_b64(FILES['craft/__init__.py'])},6" in record


def test_the_data_folder_is_the_dist_info_folders_whatever_the_file_name_spells(tmp_path: Path) -> None:
    # installer takes NAME-VERSION.data from the file name: Craft-1.0.data here, not the wheel's.
    files = _files(_wheel(tmp_path / "c.whl", FILES), filename="Craft-1.0-py3-none-any.whl")
    assert "opt/venv/share/craft/x.txt" in files and not [p for p in files if ".data/" in p]


def test_a_long_interpreter_path_gets_installers_sh_launcher(tmp_path: Path) -> None:
    # A #! line longer than the kernel reads: installer's /bin/sh trick runs the interpreter.
    python = "/opt/" + "v" * 130 + "/bin/python"
    long = Scheme("/opt/venv", f"/{SITE}", python, "3.12")
    launcher = _files(_wheel(tmp_path / "c.whl", FILES), long)["opt/venv/bin/craft"][1].decode()
    assert launcher.startswith(f"#!/bin/sh\n'''exec' {python} \"$0\" \"$@\"\n' '''\n"), launcher


@pytest.mark.parametrize(
    ("name", "lands"),
    [
        ("craft-1.0.data/purelib//usr/bin/python3", f"{SITE}/usr/bin/python3"),
        ("craft-1.0.data/data//etc/evil", "opt/venv/etc/evil"),
        ("craft-1.0.data/scripts//usr/local/bin/x", "opt/venv/bin/usr/local/bin/x"),
        ("craft-1.0.data/headers//usr/include/stdio.h", "opt/venv/include/site/python3.12/craft/usr/include/stdio.h"),
    ],
)
def test_an_absolute_path_after_the_scheme_folder_stays_under_the_prefix(tmp_path: Path, name: str, lands: str) -> None:
    # As pip does: the folder is kept (it was dropped: /usr/bin/python3 replaced the image's).
    files = _files(_wheel(tmp_path / "c.whl", {**FILES, name: b"#!/bin/sh\nevil\n"}))
    assert lands in files
    assert not [p for p in files if not p.startswith("opt/venv/")]


@pytest.mark.parametrize(
    "name",
    [
        "craft-1.0.data/purelib/../../../../../etc/evil",
        "craft-1.0.data/scripts/../../x",
        "../outside.py",
        "craft/../../outside.py",
        "/etc/evil",
    ],
)
def test_a_member_that_climbs_out_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafePath, match="climbs out of the wheel"):
        _members(_wheel(tmp_path / "c.whl", {**FILES, name: b"evil\n"}))


def test_an_entry_point_that_climbs_out_is_refused(tmp_path: Path) -> None:
    bad = {**FILES, f"{INFO}/entry_points.txt": b"[console_scripts]\n../../../usr/bin/evil = craft:main\n"}
    with pytest.raises(UnsafePath, match="would land outside the wheel's scripts folder"):
        _members(_wheel(tmp_path / "c.whl", bad))


def test_a_record_that_does_not_match_the_files_is_refused(tmp_path: Path) -> None:
    lie: dict[str, str | None] = {"craft/__init__.py": f"craft/__init__.py,sha256={_b64(b'other')},6"}
    with pytest.raises(InvalidArchive, match=r"hash / size of craft/__init__\.py didn't match RECORD"):
        _members(_wheel(tmp_path / "c.whl", FILES, record=lie))
    with pytest.raises(InvalidArchive, match=r"craft/__init__\.py is not mentioned in RECORD"):
        _members(_wheel(tmp_path / "c.whl", FILES, record={"craft/__init__.py": None}))
    # A row of a file the wheel does not have is not checked by installer, nor read here.
    files = _files(_wheel(tmp_path / "c.whl", FILES, record={"gone.py": "gone.py,md5,x"}))
    assert f"{SITE}/craft/__init__.py" in files


def test_what_is_not_a_wheel_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArchive, match="no WHEEL file"):
        _members(_wheel(tmp_path / "c.whl", {k: v for k, v in FILES.items() if not k.endswith("/WHEEL")}))
    bad = {**FILES, f"{INFO}/entry_points.txt": b"[console_scripts]\ncraft = not a target\n"}
    with pytest.raises(InvalidArchive, match="entry point"):
        _members(_wheel(tmp_path / "c.whl", bad))
