"""The soak's curves as one SVG (docs/soak.svg): each series over time, scaled to its own largest
value so four units share one chart, with the largest value in its label. Plain SVG, no plotting
library: the bench writes it beside its table in BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

WIDTH, HEIGHT, MARGIN = 720, 300, 40
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]


def svg(times: list[float], series: dict[str, list[float]], title: str) -> str:
    span = max(times[-1], 1.0) if times else 1.0
    inner_w, inner_h = WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{MARGIN}" y="20" font-size="13">{escape(title)}</text>',
        f'<line x1="{MARGIN}" y1="{HEIGHT - MARGIN}" x2="{WIDTH - MARGIN}" y2="{HEIGHT - MARGIN}" stroke="black"/>',
        f'<text x="{WIDTH - MARGIN}" y="{HEIGHT - 12}" text-anchor="end">{span:.0f} s</text>',
        f'<text x="{MARGIN}" y="{HEIGHT - 12}">0 s</text>',
    ]
    for n, (name, values) in enumerate(series.items()):
        top = max(values) or 1.0
        points = " ".join(
            f"{MARGIN + t / span * inner_w:.1f},{HEIGHT - MARGIN - v / top * inner_h:.1f}" for t, v in zip(times, values, strict=True)
        )
        colour = COLOURS[n % len(COLOURS)]
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/>')
        parts.append(f'<text x="{MARGIN + 10 + n * 170}" y="{MARGIN - 6}" fill="{colour}">{escape(name)} (max {top:.0f})</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write(path: Path, times: list[float], series: dict[str, list[float]], title: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(svg(times, series, title))
