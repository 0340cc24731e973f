"""A SLSA v1 provenance statement (in-toto Statement v1) of an image.

- ``subject``: the image manifest's digest;
- ``buildDefinition.externalParameters``: the manifest file (name and sha256), the params,
  the target and the platform: what the person building chose;
- ``buildDefinition.internalParameters``: the epoch and each step's key (the key its
  result is cached under: a digest of everything that can change it);
- ``buildDefinition.resolvedDependencies``: every base (its image digest), every source
  (a git commit, a download's sha256, a folder's content digest), every recipe file and
  every pinned file of a ``pip:`` or ``url:`` layer (its sha256), and every entry of a
  registry step cache the build used instead of making it (``cache:<tag>``: ``oci://REPO@DIGEST``,
  what it is, and the key id of the trusted key that signed it, if one was asked for);
- ``runDetails.builder.id``: assemble and its version.

Nothing in it depends on the clock or on whether a step ran or came from the local cache, so
the same inputs give the same bytes; what came from a registry step cache is named, as it
is an input this machine did not make.
"""

from __future__ import annotations

from typing import Any

from assembler.oci.digest import canonical_json, digest_hex
from assembler.sbom.facts import BuildFacts, CacheEntryFact, SourceFact

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://assemble.invalid/buildtypes/manifest/v1"  # .invalid: a name, never fetched
BUILDER = "https://assemble.invalid/builder/assemble"
Json = dict[str, Any]


def _source(src: SourceFact) -> Json:
    if src.kind == "git":
        return {
            "name": f"source:{src.name}",
            "uri": f"git+{src.url}",
            "digest": {"gitCommit": src.revision},
            "annotations": {"ref": src.ref},
        }
    if src.kind == "url":
        return {"name": f"source:{src.name}", "uri": src.url, "digest": {"sha256": digest_hex(src.revision)}}
    # A folder: the sha256 of its normalised tar (content and modes), as its step key uses.
    return {
        "name": f"source:{src.name}",
        "digest": {"sha256": digest_hex(src.revision)},
        "annotations": {"path": src.path, "digest_of": "normalised tar of the folder"},
    }


def _cache_entry(entry: CacheEntryFact) -> Json:
    annotations = {"what": entry.what, "tag": entry.tag, **({"signedBy": entry.signer} if entry.signer else {})}
    return {
        "name": f"cache:{entry.tag}",
        "uri": f"oci://{entry.repository}@{entry.digest}",
        "digest": {"sha256": digest_hex(entry.digest)},
        "annotations": annotations,
    }


def provenance_statement(facts: BuildFacts) -> bytes:
    """The in-toto statement (canonical JSON bytes) of the image ``facts`` describe."""
    deps: list[Json] = [
        {"name": f"base:{b.name}", "digest": {"sha256": digest_hex(b.digest)}, "annotations": {"what": b.what}}
        for b in facts.bases.values()
    ]
    deps += [_source(s) for s in facts.sources.values()]
    deps += [{"name": f"recipe:{n}", "digest": {"sha256": digest_hex(d)}} for n, d in facts.recipes.items()]
    deps += [{"name": d.name, "uri": d.uri, "digest": {"sha256": d.sha256}} for d in facts.downloads]
    deps += [_cache_entry(e) for e in facts.cache_entries]
    steps = {
        s.name: {"kind": s.kind, "key": s.key, **({"base": s.base} if s.base else {})} for s in facts.steps.values()
    }
    artifacts = {
        a.ref: {"diff_id": a.diff_id, **({"layer": a.layer} if a.layer is not None else {})} for a in facts.artifacts
    }
    external: Json = {
        "manifest": {"name": facts.manifest, "digest": {"sha256": digest_hex(facts.manifest_digest)}},
        "params": dict(facts.params),
        "platform": facts.platform,
    }
    if facts.target:
        external["target"] = facts.target
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": facts.name, "digest": {"sha256": digest_hex(facts.image.digest)}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
                "internalParameters": {"epoch": facts.epoch, "steps": steps, "artifacts": artifacts},
                "resolvedDependencies": sorted(deps, key=lambda d: str(d["name"])),
            },
            "runDetails": {"builder": {"id": BUILDER, "version": {"assemble": facts.tool}}},
        },
    }
    return canonical_json(statement)
