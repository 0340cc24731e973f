"""Our layers read alike by every consumer: the differential test (issue 48).

The fixed cases and a seeded set of :mod:`tests.layercases` (folders replaced by symlinks
and files, files and symlinks by folders, folders emptied and refilled, hard links inside
a layer and to the layer below, deletions at several depths, modes and owners) built into
one image through two ``run:`` steps and ``copy:`` layers, cut (``--layer-budget``: every
package of a layer a layer of its own) and uncut; each consumer's unpacked tree compared
with what the last step's container saw (:mod:`tests.layer_consumers`). scripts/diff-layers
runs more seeds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import layer_consumers as lc
from tests.layercases import generate

# Every test unpacks with buildah, podman, umoci or unsquashfs, from an image built through
# buildah (a module fixture with params, which tests/conftest.py's tier does not see).
pytestmark = pytest.mark.integration
SEED, COUNT = 48, 10


@pytest.fixture(scope="module", params=["uncut", "cut"])
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> lc.Built:
    cases = lc.with_records(generate(SEED, COUNT))
    work = tmp_path_factory.mktemp(f"layercases-{request.param}")
    options = ["--layer-budget", "1"] if request.param == "cut" else ["--layer-budget", "0"]
    return lc.build(work, cases, *options)


@pytest.mark.parametrize("consumer", sorted(lc.CONSUMERS))
def test_every_consumer_unpacks_what_the_container_saw(built: lc.Built, consumer: str, tmp_path: Path) -> None:
    wrong = lc.compare(built, consumer, tmp_path / consumer)
    assert not wrong, f"{len(wrong)} paths differ:\n" + "\n".join(map(str, wrong[:40]))


def test_the_cut_image_is_cut_and_an_opaque_folder_goes_with_its_files(built: lc.Built) -> None:
    """The cut variant must have cut something, or it tests nothing; where a package's files
    are in a refilled folder, the opaque marker is in that package's part (a part after
    them would hide them)."""
    copies = sum(1 for c in built.cases if c.copy)
    uncut = 1 + 1 + copies + 1  # base, step 1, the copies, step 2
    if built.options == ("--layer-budget", "0"):
        assert built.layers == uncut
        return
    assert built.layers > uncut
