"""What a Slurm job file carries (issue 34): the options the node reads to build its step
(:class:`assembler.pipeline.options.NodeOptions`), not the command line's whole; the node
builds with what it built with before (its own buildah storage, the step run there, one at
a time). No Slurm here: the file is written and read as the submitter and the node do.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from assembler.cache import Cache
from assembler.manifest.load.manifest import load_manifest
from assembler.oci.descriptor import Platform
from assembler.pipeline.options import Options
from assembler.pipeline.runs.slurmnode import node_options
from assembler.pipeline.steps.slurm import Job, read_job, write_job
from assembler.sign import Signer

MANIFEST = """\
name: job
bases: {nothing: scratch}
image:
  base: nothing
  layers: []
"""


def _options(root: Path) -> Options:
    """A submitter's options, none of them the default."""
    return Options(
        cache_dir=root / "cache",
        epoch=1700000000,
        platform=Platform.parse("linux/arm64"),
        outputs=("oci:out:x",),
        no_cache=True,
        rebuild=frozenset({"one"}),
        storage_driver="vfs",
        host_ca=False,
        compression="gzip",
        attach_sif=True,
        force=True,
        cache_to="docker://reg.example/team/cache",
        cache_from=("docker://reg.example/other/cache",),
        cache_max=1 << 20,
        jobs=4,
        executor="slurm",
        slurm_args=("--partition=the-submitters",),
        buildah_root=root / "submitters-storage",
        made_keys=frozenset({"k" * 64}),
        deps_check=False,
        sbom=False,
        artifacts=("one.lib",),
        sign=Signer(ed25519.Ed25519PrivateKey.generate()),  # signs outputs: no node's business
        tests=False,
        test_on="slurm",
        keep_failed=True,
        preflight=False,
        offline=True,
        layer_budget=1 << 20,
    )


def test_a_job_file_carries_what_the_node_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "m.yaml").write_text(MANIFEST)
    options = _options(tmp_path)
    node = options.for_build().node()
    path = write_job(Cache(options.cache_dir), Job(load_manifest(tmp_path / "m.yaml"), node, "one", "k" * 64))
    data = path.read_bytes()
    assert b"the-submitters" not in data and b"submitters-storage" not in data  # the node's own
    job = read_job(path)
    assert job.options == node and job.options.workspace.buildah_root is None
    # The node builds with what it built with before (the submitter's options, its step run
    # there in buildah, one at a time, in its own storage); it runs no test, makes no SBOM,
    # signs nothing, writes no artifact and asks no host first (the submitter did).
    monkeypatch.setenv("ASSEMBLE_NODE_STORAGE", str(tmp_path / "node"))
    before = replace(options, executor="local", jobs=1, buildah_root=tmp_path / "node")
    expected = replace(
        before.for_build(),
        slurm_args=(),
        tests=False,
        test_on="local",
        sbom=False,
        sign=None,
        preflight=False,
        offline=False,
        artifacts=(),
    )
    assert node_options(job) == expected


def test_the_step_caches_keys_reach_the_node_in_a_file_of_its_users_alone(tmp_path: Path) -> None:
    """--cache-sign and --cache-trust with --executor slurm: the node signs the entries it
    exports and checks those it takes, so the job file carries both keys (cryptography's
    keys do not pickle: the job could not be written), readable by its user alone."""
    from cryptography.hazmat.primitives.asymmetric import ec

    (tmp_path / "m.yaml").write_text(MANIFEST)
    signer = Signer(ec.generate_private_key(ec.SECP256R1()))
    trusted = (signer.verifier, Signer(ed25519.Ed25519PrivateKey.generate()).verifier)
    options = replace(_options(tmp_path), cache_sign=signer, cache_trust=trusted)
    path = write_job(
        Cache(options.cache_dir), Job(load_manifest(tmp_path / "m.yaml"), options.for_build().node(), "one", "k" * 64)
    )
    assert path.stat().st_mode & 0o777 == 0o600
    caches = read_job(path).options.caches
    assert caches.cache_sign is not None and caches.cache_sign.verifier.pem() == signer.verifier.pem()
    assert [v.key_id for v in caches.cache_trust] == [v.key_id for v in trusted]
    assert signer.verifier.verify(caches.cache_sign.sign(b"entry"), b"entry")
