"""Charts for the admin, drawn on the server as inline SVG: no script, no CDN, nothing fetched.

Each function returns markup safe to put in a template. Sizes are in SVG user units; the charts
scale to their container's width (viewBox) and carry a <title> per bar or point, so hovering shows
the value and a screen reader can read it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal

from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

from sentinel_site import money

Number = float | int | Decimal
WIDTH, HEIGHT, PAD = 600, 140, 22
COLORS = ("#2f6fb3", "#d9822b", "#3a9d5d", "#b33a3a")


def _fmt(value: Number) -> str:
    return f"{float(value):,.0f}" if float(value) >= 10 else f"{float(value):,.2f}".rstrip("0").rstrip(".")


def bar_chart(points: Sequence[tuple[str, Number]], *, title: str, unit: Callable[[Number], str] = _fmt) -> SafeString:
    """Bars labelled by their first element (a minute, a day), the highest scaled to the height."""
    if not points:
        return format_html('<p class="sentinel-empty">{}: nothing yet.</p>', title)
    top = max(float(v) for _, v in points) or 1.0
    step = (WIDTH - PAD) / len(points)
    bars = []
    for i, (name, value) in enumerate(points):
        h = (HEIGHT - 2 * PAD) * float(value) / top
        x, y = PAD + i * step, HEIGHT - PAD - h
        bars.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(step - 1, 1):.1f}" height="{h:.1f}" fill="{COLORS[0]}">'
            f"<title>{escape(name)}: {escape(unit(value))}</title></rect>"
        )
    return _frame(title, "".join(bars), top, unit, points[0][0], points[-1][0])


def line_chart(series: dict[str, Sequence[tuple[str, Number | None]]], *, title: str, unit: Callable[[Number], str] = _fmt) -> SafeString:
    """Lines over shared labels (p50 and p99 latency per bucket); a None is a gap."""
    values = [float(v) for points in series.values() for _, v in points if v is not None]
    if not values:
        return format_html('<p class="sentinel-empty">{}: nothing yet.</p>', title)
    top = max(values) or 1.0
    drawn, legend = [], []
    labels: Sequence[tuple[str, Number | None]] = next(iter(series.values()))
    step = (WIDTH - PAD) / max(len(labels) - 1, 1)
    for n, (name, points) in enumerate(series.items()):
        color = COLORS[n % len(COLORS)]
        coords = [
            (PAD + i * step, HEIGHT - PAD - (HEIGHT - 2 * PAD) * float(v) / top, label, v)
            for i, (label, v) in enumerate(points)
            if v is not None
        ]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in coords)
        drawn.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        drawn += [
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}">'
            f"<title>{escape(name)} {escape(label)}: {escape(unit(v))}</title></circle>"
            for x, y, label, v in coords
        ]
        legend.append(f'<tspan fill="{color}">■ {escape(name)}</tspan> ')
    drawn.append(f'<text x="{WIDTH - 4}" y="12" text-anchor="end" class="sentinel-legend">{"".join(legend)}</text>')
    return _frame(title, "".join(drawn), top, unit, labels[0][0], labels[-1][0])


def _frame(title: str, body: str, top: float, unit: Callable[[Number], str], first: str, last: str) -> SafeString:
    axis = (
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH}" y2="{HEIGHT - PAD}" class="sentinel-axis"/>'
        f'<text x="2" y="{PAD - 6}" class="sentinel-tick">{escape(unit(top))}</text>'
        f'<text x="{PAD}" y="{HEIGHT - 6}" class="sentinel-tick">{escape(first)}</text>'
        f'<text x="{WIDTH}" y="{HEIGHT - 6}" text-anchor="end" class="sentinel-tick">{escape(last)}</text>'
    )
    return mark_safe(
        f'<svg class="sentinel-chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>{axis}{body}</svg>"
    )


def meter(spent: Number, held: Number, limit: Number, soft_share: Number = 0.8) -> SafeString:
    """Spend against a limit: settled, then reserved, on a bar whose end is the limit; green under
    the soft limit, amber past it, red at the limit."""
    used = money.share(Decimal(str(spent)) + Decimal(str(held)), limit)
    color = "#b33a3a" if used >= 1 else "#d9822b" if used >= float(soft_share) else "#3a9d5d"
    settled_w = min(money.share(spent, limit), 1.0) * 100
    held_w = max(min(used, 1.0) * 100 - settled_w, 0)
    label = f"{money.money(spent)} spent + {money.money(held)} held of {money.limit(limit)} ({used * 100:.0f}%)"
    return format_html(
        '<span class="sentinel-meter" title="{}"><svg viewBox="0 0 100 10" preserveAspectRatio="none" role="img" aria-label="{}">'
        '<rect width="100" height="10" fill="#e6e6e6"/><rect width="{}" height="10" fill="{}"/>'
        '<rect x="{}" width="{}" height="10" fill="{}" opacity="0.45"/>'
        '<line x1="{}" x2="{}" y1="0" y2="10" stroke="#555" stroke-width="0.6"/></svg>'
        '<span class="sentinel-meter-text">{}</span></span>',
        label,
        label,
        f"{settled_w:.1f}",
        color,
        f"{settled_w:.1f}",
        f"{held_w:.1f}",
        color,
        f"{float(soft_share) * 100:.1f}",
        f"{float(soft_share) * 100:.1f}",
        label,
    )


def progress(done: int, failed: int, total: int, *, state: str = "") -> SafeString:
    """Work through a known number of items: done in green, failed in red, the rest grey, with the
    counts in words beside it (a batch's request_counts, an import's indexed messages)."""
    done_w = 100 * done / total if total else 0.0
    failed_w = 100 * failed / total if total else 0.0
    label = f"{done + failed} of {total} ({(done + failed) * 100 // total if total else 0}%)"
    if failed:
        label += f", {failed} failed"
    if state:
        label += f": {state}"
    return format_html(
        '<span class="sentinel-meter sentinel-progress" title="{}"><svg viewBox="0 0 100 10" preserveAspectRatio="none" '
        'role="progressbar" aria-valuemin="0" aria-valuemax="{}" aria-valuenow="{}" aria-label="{}">'
        '<rect width="100" height="10" fill="#e6e6e6"/><rect width="{}" height="10" fill="{}"/>'
        '<rect x="{}" width="{}" height="10" fill="{}"/></svg>'
        '<span class="sentinel-meter-text">{}</span></span>',
        label,
        total,
        done + failed,
        label,
        f"{done_w:.1f}",
        COLORS[2],
        f"{done_w:.1f}",
        f"{failed_w:.1f}",
        COLORS[3],
        label,
    )
