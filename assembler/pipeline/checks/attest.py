"""The SBOM and provenance of a build (:mod:`assembler.sbom`): its records as facts, and
those as referrer artifacts of the image it made. Every URL a fact holds (a source's, a
downloaded file's) is :func:`~assembler.manifest.text.urls.redacted`: the SBOM is published."""

from __future__ import annotations

import posixpath
from dataclasses import replace

from assembler import __version__
from assembler.cache import Cache
from assembler.cache.memos import SharedFacts
from assembler.compile.sources import Source
from assembler.manifest.schema import model as m
from assembler.manifest.text.urls import redacted, scrubbed
from assembler.oci.artifact import Artifact
from assembler.oci.digest import sha256_digest
from assembler.oci.reference import without_folder
from assembler.pipeline import graph
from assembler.pipeline.layers import kinds
from assembler.pipeline.options import Event, Reporter
from assembler.pipeline.runs.builder import Built
from assembler.pipeline.runs.run import Run
from assembler.sbom import (
    ArtifactFact,
    BaseFact,
    BuildFacts,
    CacheEntryFact,
    DownloadFact,
    LayerFact,
    SourceFact,
    StepFact,
    attestations,
)


def _source(src: Source, spec: m.SourceSpec) -> SourceFact:
    if isinstance(spec, m.GitSource):
        commit = src.digest.removeprefix("git:").partition("+")[0]
        return SourceFact(src.name, "git", commit, url=redacted(spec.git), ref=spec.ref)
    if isinstance(spec, m.UrlSource):
        return SourceFact(src.name, "url", src.digest, url=redacted(spec.url))
    # A folder given by an absolute path (``--source NAME=/srv/...``) is named by its last
    # component: where it lies on this host is in no output's bytes.
    path = posixpath.basename(spec.path.rstrip("/")) if posixpath.isabs(spec.path) else spec.path
    return SourceFact(src.name, "path", src.digest, path=path)


def _downloads(man: m.Manifest, architecture: str, cache: Cache) -> tuple[DownloadFact, ...]:
    """The pinned files of the image's ``pip:`` and ``url:`` layers. A wheel pinned by
    several hashes (one per platform) is the one this build's platform took; one whose
    layer came from a registry step cache, never fetched here, is not known and left out."""
    out = [fact for layer in man.image.layers for fact in kinds.of(layer).downloads(layer, architecture, cache)]
    out = [replace(fact, name=scrubbed(fact.name), uri=redacted(fact.uri)) for fact in out]
    return tuple(dict.fromkeys(out))  # one file placed twice is one input


def build_facts(built: Built, run: Run) -> BuildFacts:
    """What ``built`` (the image of ``run``) records about how its image was made."""
    loaded, options, cache = run.loaded, run.options, run.cache
    man = loaded.manifest
    keys = {s.name: s.key or "" for s in built.steps}
    steps: dict[str, StepFact] = {}
    artifacts: dict[str, ArtifactFact] = {}
    for step in graph.needed_steps(man):
        steps[step.name] = StepFact(
            step.name,
            "compile",
            keys.get(step.name, ""),
            base=step.base or "",
            sources=tuple(step.sources),
            inputs=tuple(step.inputs),
        )
        for ref in step.inputs:  # an input of this step: what it mounted, as the step that made it left it
            made = cache.step_result(keys.get(ref.partition(".")[0], "")) if keys.get(ref.partition(".")[0]) else None
            name = ref.partition(".")[2]
            if made is not None and name in made.artifacts:
                artifacts[ref] = ArtifactFact(ref, ref.partition(".")[0], made.artifacts[name].diff_id)
    for s in built.steps:
        if s.kind == "runtime":
            steps[s.name] = StepFact(s.name, "runtime", s.key or "")
    layers = []
    for r in built.layers:
        layers.append(LayerFact(r.index, r.kind, r.what, r.diff_id or "", r.step))
        if r.kind == "artifact" and r.step is not None and r.diff_id:
            ref = r.what.removeprefix("artifact ")
            artifacts[ref] = ArtifactFact(ref, r.step, r.diff_id, r.index)
    return BuildFacts(
        name=man.name,
        image=built.image,
        base=man.image.base,
        epoch=options.context.epoch,
        manifest=loaded.path.name,
        manifest_digest=sha256_digest(loaded.path.read_bytes()),
        params=dict(loaded.params),
        target=loaded.target,
        platform=str(built.image.platform),
        bases={n: BaseFact(n, b.image.digest, without_folder(b.what)) for n, b in sorted(built.bases.items())},
        sources={n: _source(s, man.sources[n]) for n, s in sorted(built.sources.items())},
        steps=dict(sorted(steps.items())),
        artifacts=tuple(artifacts[k] for k in sorted(artifacts)),
        layers=tuple(layers),
        recipes={n: sha256_digest(p.read_bytes()) for n, p in sorted(loaded.recipes.items())},
        tool=__version__,
        downloads=_downloads(man, built.image.platform.architecture, cache),
        cache_entries=tuple(
            CacheEntryFact(what, o.repository, o.tag, o.digest, o.signer) for what, o in built.taken.values()
        ),
    )


def describe_built(built: Built, run: Run, *, report: Reporter, shared: SharedFacts | None = None) -> list[Artifact]:
    """The SBOM and provenance of ``built``'s image (``run``'s), as referrers of it (its
    packages remembered in the cache and ``shared``, else read through ``built.blobs``)."""
    cache = run.cache
    facts = build_facts(built, run)
    with cache.workdir("sbom-") as work:
        made = attestations(facts, built.blobs.open_blob, cache=cache, workdir=work, shared=shared)
    report(Event("info", {"text": f"SBOM and provenance: {', '.join(a.blob.digest[:19] for a in made)}"}))
    return made
