"""The documentation site as a user sees it (issue 52): built, served over HTTP on loopback,
and rendered by headless Chromium (Debian's ``chromium-headless-shell``): the home page,
the manifest reference, a how-to and the benchmarks' charts each render as HTML with their content (no raw
Markdown left, no image that does not load) and a screenshot is taken of each.
``ASSEMBLE_SCREENSHOTS=DIR`` keeps the screenshots there, to look at."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.helpers import ROOT

CHROMIUM = "chromium-headless-shell"
PAGES = {
    "home": ("", "assemble"),
    "reference": ("reference/manifest/", "Manifest reference"),
    "how-to": ("guides/cuda/", "A CUDA image without nvidia/cuda"),
    "benchmarks": ("benchmarks/", "Benchmarks"),  # its charts, drawn at build time from docs/benchmarks/*.json
}


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The site, built and served on loopback: its base URL."""
    folder = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    argv = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(folder)]
    built = subprocess.run(argv, capture_output=True, text=True, env=env)
    assert built.returncode == 0, built.stderr[-3000:]
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _chromium(*argv: str) -> subprocess.CompletedProcess[str]:
    found = shutil.which(CHROMIUM)
    assert found is not None, f"{CHROMIUM} is missing: scripts/setup --test installs it (apt: {CHROMIUM})"
    flags = ["--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,900"]
    return subprocess.run([found, *flags, *argv], capture_output=True, text=True, timeout=120)


def _article(dom: str, *, code: bool = True) -> str:
    """The visible text of the page's article (the rendered Markdown); without ``code``,
    its code left out (``**`` there is Python's power, not Markdown's emphasis)."""
    found = re.search(r"<article[^>]*>(.*?)</article>", dom, flags=re.S)
    assert found is not None, "no <article>: the theme did not render the page"
    body = re.sub(r"<(script|style)\b.*?</\1>", "", found.group(1), flags=re.S)
    if not code:
        body = re.sub(r"<(code|pre)\b.*?</\1>", "", body, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", body))


@pytest.mark.integration  # starts Chromium
@pytest.mark.parametrize("page", sorted(PAGES))
def test_a_page_renders_its_content_and_is_photographed(site: str, page: str, tmp_path: Path) -> None:
    path, title = PAGES[page]
    url = site + path
    dom = _chromium("--dump-dom", url)
    assert dom.returncode == 0 and "</html>" in dom.stdout, dom.stderr[-2000:]
    text = _article(dom.stdout)
    assert title in text.splitlines()[0:5] or text.lstrip().startswith(title), text[:300]
    prose = _article(dom.stdout, code=False)
    raw = [mark for mark in ("```", "](", "**", "\n# ", "\n## ") if mark in prose]
    assert not raw, f"{url}: raw Markdown left in the rendered page: {raw}"
    for src in re.findall(r"<img[^>]+src=\"([^\"]+)\"", dom.stdout):
        target = src if src.startswith("http") else site + path + src
        loaded = subprocess.run([sys.executable, "-c", f"import urllib.request; urllib.request.urlopen({target!r})"])
        assert loaded.returncode == 0, f"{url}: image {src} does not load"
    if page == "benchmarks":  # a recorded run is a chart: bars, and where it ran
        assert "<svg" in dom.stdout and "<rect" in dom.stdout and "sum(range(3*10**7))" in text, text[:500]
    shot = tmp_path / f"{page}.png"
    taken = _chromium(f"--screenshot={shot}", url)
    assert taken.returncode == 0 and shot.is_file(), taken.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000  # a page, not a blank
    keep = os.environ.get("ASSEMBLE_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(keep) / shot.name)
