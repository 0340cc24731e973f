"""A MkDocs hook (``mkdocs.yml``'s ``hooks:``): the benchmark page's charts, drawn at build
time from the runs the benchmarks recorded (``scripts/bench-* --json docs/benchmarks/NAME.json``,
the format of ``scripts/benchrecord.py``). Where the page says ``<!-- bench-charts -->``, each
record becomes a bar chart of its sides' best times (an inline SVG, no script), its ratios
and goal, and where it ran: the date, the machine and ``sum(range(3*10**7))``'s time there."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

MARKER = "<!-- bench-charts -->"
BAR_HEIGHT, GAP, LABEL_WIDTH, BAR_WIDTH = 22, 8, 330, 360


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if MARKER not in markdown:
        return markdown
    folder = Path(config["docs_dir"]) / "benchmarks"
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    charts = [chart(r) for r in records] or [
        "*No run recorded yet: `scripts/bench-NAME --json docs/benchmarks/NAME.json`.*"
    ]
    return markdown.replace(MARKER, "\n\n".join(charts))


def chart(record: dict[str, Any]) -> str:
    """One record as a figure: bars of each side's best time, then the ratios and the machine."""
    sides = {label: min(times) for label, times in record["sides"].items() if times}
    top = max(sides.values(), default=1.0) or 1.0
    height = len(sides) * (BAR_HEIGHT + GAP) + GAP
    width = LABEL_WIDTH + BAR_WIDTH + 90
    bars = []
    for i, (label, best) in enumerate(sides.items()):
        y = GAP + i * (BAR_HEIGHT + GAP)
        length = max(1.0, BAR_WIDTH * best / top)
        runs = ", ".join(f"{t:g}" for t in record["sides"][label])
        bars.append(
            f'<text x="{LABEL_WIDTH - 8}" y="{y + 16}" text-anchor="end" font-size="13">{html.escape(label)}</text>'
            f'<rect x="{LABEL_WIDTH}" y="{y}" width="{length:.1f}" height="{BAR_HEIGHT}" fill="#3f51b5">'
            f"<title>{html.escape(label)}: runs {runs} {record['unit']}</title></rect>"
            f'<text x="{LABEL_WIDTH + length + 6:.1f}" y="{y + 16}" font-size="13">{best:.2f} {record["unit"]}</text>'
        )
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'style="max-width: 100%; height: auto" role="img" aria-label="{html.escape(record["bench"])}">'
        f"{''.join(bars)}</svg>"
    )
    machine = record["machine"]
    cpu = html.escape(machine["cpu"] or "?")
    where = (
        f"{record['date']}, {machine['cores']} cores, {machine['memory_gib']} GiB, {cpu}; "
        f"<code>sum(range(3*10**7))</code> {record['sum_range_seconds']} s"
    )
    ratios = "; ".join(f"{html.escape(k)}: <strong>{v:.2f}</strong>" for k, v in record["ratios"].items())
    goal = f" (goal: {html.escape(record['goal'])})" if record.get("goal") else ""
    notes = f"<br>{html.escape(record['notes'])}" if record.get("notes") else ""
    return (
        f'<figure class="bench">\n<figcaption><strong>{html.escape(record["bench"])}</strong>: best of each side, '
        f"{ratios}{goal}<br>{where}{notes}</figcaption>\n{svg}\n</figure>"
    )
