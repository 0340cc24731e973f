"""A build's preflight: before its first long step, every host that the parts it will make
reach (the plan's ``reaches``, :mod:`assembler.manifest.hosts.reach`) is asked once, all at once,
within a few seconds (:func:`assembler.fetch.pinned.probe`). One that does not
answer stops the build there, naming the host, the parts that need it and what avoids it:
the ``--set`` the manifest gives beside the step (``reaches: {HOST: {avoid: ...}}``), or
``--base NAME=REF`` / ``--source NAME=PATH`` for a base or a source. A host a step reaches
only sometimes (``only:``) that does not answer is a warning.

What is cached is not made, so it reaches nothing: a no-change rebuild asks no host but the
registries of its outputs. Every host is asked in the one round, the bases' registries
(Docker Hub is registry-1.docker.io) and the outputs' with the rest, so that one run names
all that is missing, and a local output registry that is not started stops the build before
its hours of compiling, not after: a loopback host (``127.0.0.1:5000``) is asked with a TCP
connection (something listens, whatever it speaks). Not asked: a registry that
registries.conf has a table for (its mirrors, a rewrite, a block: the registry client tries
those itself, and says what it tried), and a base's apt mirror named only inside an image
pulled from a registry, not known before the base is read.

``--offline`` asks no host: a plan whose parts to make reach any (loopback aside) is refused.
"""

from __future__ import annotations

import ipaddress
import shlex
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from assembler.errors import HostsUnreachable, InputError
from assembler.manifest.hosts.reach import Need
from assembler.manifest.schema import model as m
from assembler.oci.reference import DEFAULT_REGISTRY, ImageName
from assembler.pipeline.layers import kinds
from assembler.pipeline.options import Event, Reporter
from assembler.pipeline.runs.resolve import Plan
from assembler.pipeline.runs.run import Run

PROBE_SECONDS = 5.0
Probe = Callable[[Collection[str], Collection[str]], Mapping[str, "str | None"]]


def check(
    run: Run,
    plan: Plan,
    *,
    offline: bool,
    report: Reporter,
    probe: Probe | None = None,
    replan: Callable[[], Plan] | None = None,
) -> None:
    """Stop ``plan`` (of ``run``) before it builds anything when a host it will reach does not answer
    (HostsUnreachable), or, ``offline``, when it will reach any host (InputError).
    ``probe``: url -> why it does not answer (None: it does); default: one request each.
    ``replan``: where hosts do not answer, the plan made again with the registry step
    caches' records looked up (a fresh machine off the internet takes its ``pip:`` layers
    from --cache-from), checked again: only what it still has to make counts."""
    try:
        _check(run, plan, offline=offline, report=report, probe=probe)
    except HostsUnreachable:
        if replan is None:
            raise
        _check(run, replan(), offline=offline, report=report, probe=probe)


def _check(run: Run, plan: Plan, *, offline: bool, report: Reporter, probe: Probe | None) -> None:
    parts = pending(run.loaded.manifest, plan)
    needed = [n for n in plan.needs if n.part in parts]
    if offline:
        _refuse_offline([n for n in needed if not _loopback(n.host)])
        return
    asked = [n for n in needed if n.known and not _registrys_own(n, run)]
    if not asked:
        return
    urls = {n: _url(n, run) for n in asked}
    started = time.monotonic()
    # an output's registry is no input: asked, it leaves the build's up-to-date record whole
    outputs = {u for n, u in urls.items() if n.part.startswith("output:")}
    outputs -= {u for n, u in urls.items() if not n.part.startswith("output:")}
    answers = (probe or _probe)(sorted(set(urls.values())), outputs)
    failed = {n: why for n in asked if (why := answers.get(urls[n])) is not None}
    for need, why in failed.items():
        if need.only is not None:
            text = f"{need.host} does not answer ({why}); {need.where} needs it only sometimes: {need.only}"
            report(Event("warning", {"text": text}))
    stops = {n: why for n, why in failed.items() if n.only is None}
    if stops:
        raise _unreachable(stops)
    hosts = len({n.host for n in asked} - {n.host for n in failed})
    report(Event("info", {"text": f"preflight: {hosts} hosts answer ({time.monotonic() - started:.1f} s)"}))


def _url(need: Need, run: Run) -> str:
    """What asks ``need``'s host: a loopback one a TCP connection to its port (a local
    registry's scheme is the user's choice), any other a request as the build makes it."""
    scheme = _scheme(need, run)
    if not _loopback(need.host):
        return f"{scheme}://{need.host}/"
    bracket = need.host.rfind("]")
    has_port = need.host.rfind(":") > bracket and (bracket >= 0 or need.host.count(":") == 1)
    port = "" if has_port else f":{ {'http': 80, 'https': 443}.get(scheme, 443) }"
    return f"tcp://{need.host}{port}/"


def _scheme(need: Need, run: Run) -> str:
    """How ``need``'s host is asked: a registry written to with --tls-verify=false over HTTP."""
    registry = run.options.context.registry
    plain = registry is not None and not getattr(registry, "tls_verify", True)
    return "http" if plain and need.part.startswith(("output:", "cache:")) else need.scheme


def _registrys_own(need: Need, run: Run) -> bool:
    """Whether registries.conf has a table for ``need``'s registry (a base's, an output's, a
    step cache's): the client tries its mirrors, or rewrites or blocks it, itself, and an
    unreachable one is given up in seconds with what was tried (registry/reach.py)."""
    kind, _, name = need.part.partition(":")
    conf = getattr(run.options.context.registry, "conf", None)
    if conf is None:
        return False
    if kind == "base":
        spec = run.loaded.manifest.bases.get(name)
        ref = spec if isinstance(spec, str) else spec.ref if isinstance(spec, m.RefBase) else None
        if ref is None or not ref.startswith("docker://"):
            return False
        try:
            candidates = conf.candidates(ImageName.parse(ref.removeprefix("docker://")))
        except ValueError:
            return True  # the client's parse says what is wrong with it
        # a short name registries.conf resolves (aliases, search registries), or a name with a
        # table: the client's own; Docker Hub's API host is registry-1.docker.io
        if len(candidates) != 1 or conf.find(f"{candidates[0].registry}/{candidates[0].repository}") is not None:
            return True
        host = str(candidates[0].registry)
        return API_HOSTS.get(host, host) != need.host
    return kind in ("output", "cache") and conf.find(need.host) is not None


API_HOSTS = {DEFAULT_REGISTRY: "registry-1.docker.io"}


def _probe(urls: Collection[str], untraced: Collection[str]) -> Mapping[str, str | None]:
    from assembler.fetch.pinned import probe  # requests: only when a host is asked

    return probe(urls, seconds=PROBE_SECONDS, untraced=untraced)


def pending(man: m.Manifest, plan: Plan) -> set[str]:
    """The parts of ``plan`` (of ``man``) it will make (``base:``, ``step:``, ``layer:``,
    ``source:``) and the outputs it will write (``output:``): what reaches hosts in this build."""
    parts = {f"step:{s.name}" for s in plan.steps if s.state == "will-run"}
    parts |= {f"base:{name}" for name, digest in plan.bases.items() if digest is None}
    parts |= {f"output:{i}" for i in range(len(plan.outputs))} | {"cache:"}  # step caches: looked up, written
    parts |= _prebuilt_pending(man.image.layers, plan)
    made = any(not p.startswith(("output:", "cache:")) for p in parts)
    if made:  # a step may run on a registry base: its layers come from there (a bootstrapped one is made here)
        parts |= {f"base:{n}" for n in plan.bases if not isinstance(man.bases.get(n), m.BootstrapBase)}
    for step in man.compile:
        if f"step:{step.name}" in parts:
            parts |= {f"source:{s}" for s in step.sources}
    return parts


def _prebuilt_pending(layers: Sequence[m.LayerSpec], plan: Plan) -> set[str]:
    """The layers fetched from hosts while they are made (``pip:``, ``url:``: a kind whose
    :meth:`~assembler.pipeline.layers.kinds.Kind.reports` is not 0) not made yet, as ``layer:I``
    (I their place in the manifest). The plan reports them in the manifest's order: one
    report for a layer not made, ``reports`` (one per group of wheels) for one that is."""
    fetching = [(i, spec, kinds.of(spec).reports(spec)) for i, spec in enumerate(layers)]
    fetching = [(i, spec, n) for i, spec, n in fetching if n]
    reports = iter([r for r in plan.layers if r.kind in {m.layer_key(spec) for _, spec, _ in fetching}])
    found: set[str] = set()
    for i, _, n in fetching:
        first = next(reports, None)
        if first is None or first.origin == "will-build":
            found.add(f"layer:{i}")
            continue
        for _ in range(n - 1):
            next(reports, None)
    return found


def _loopback(host: str) -> bool:
    """Whether ``host`` (``name[:port]``, ``[v6]:port``) is this machine's own."""
    name = (
        host[1 : host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    )
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _by_host(needs: Iterable[Need]) -> dict[str, list[Need]]:
    found: dict[str, list[Need]] = {}
    for need in needs:
        found.setdefault(need.host, []).append(need)
    return found


def _avoids(needs: Sequence[Need]) -> list[str]:
    """What leaves each part out: its manifest's --set, --base or --source (none: a pip:,
    url: layer or an output, which only a change of the manifest or of -o leaves out)."""
    found: list[str] = []
    for need in needs:
        kind, _, name = need.part.partition(":")
        if need.avoid:
            found.append(" ".join(f"--set {shlex.quote(f'{k}={v}')}" for k, v in need.avoid))
        elif kind == "base":
            found.append(f"--base {name}=REF")
        elif kind == "source":
            found.append(f"--source {name}=PATH")
        elif kind == "output":
            found.append("-o oci:DIR (in place of the manifest's outputs)")
    return list(dict.fromkeys(found))


def _unreachable(stops: Mapping[Need, str]) -> HostsUnreachable:
    lines = []
    whys: dict[str, str] = {}
    every: list[str] = []
    for host, needs in sorted(_by_host(stops).items()):
        whys[host] = stops[needs[0]]
        avoids = _avoids(needs)
        every += avoids
        where = ", ".join(sorted({n.where for n in needs}))
        named = f"{host} (Docker Hub, {whys[host]})" if host == "registry-1.docker.io" else f"{host} ({whys[host]})"
        line = f"  {named}: needed by {where}"
        lines.append(line + (f"; avoided with {' or '.join(avoids)}" if avoids else ""))
    tls = any(w.startswith("its TLS certificate") for w in whys.values())
    hint = "nothing was built; " + (f"build again with {' '.join(dict.fromkeys(every))}" if every else "")
    if not every:
        hint += "change the manifest (or -o) to leave those parts out, or build where the hosts answer"
    if any(n.part.startswith("base:") for n in stops):
        hint += "; or give a base's registry a mirror in registries.conf"
    local = sorted(h for h in whys if _loopback(h))
    if local:
        hint += f"; start the registry at {', '.join(local)} (docker-registry, registry:2) before building"
    if tls:
        hint += "; a CA of this network's: --cert FILE (or put it in the system's trust store)"
    return HostsUnreachable(
        f"{len(whys)} host(s) this build needs do not answer:\n" + "\n".join(lines),
        hosts=whys,
        hint=hint + " (--no-preflight builds anyway)",
    )


def _refuse_offline(needed: Sequence[Need]) -> None:
    if not needed:
        return
    lines = [
        f"  {host}: {', '.join(sorted({n.where for n in needs}))}" for host, needs in sorted(_by_host(needed).items())
    ]
    avoids = _avoids(needed)
    raise InputError(
        "--offline: this build would reach the network:\n" + "\n".join(lines),
        hint=(f"leave those parts out ({' '.join(avoids)}), " if avoids else "")
        + "or build them once online: what is cached reaches nothing",
    )
