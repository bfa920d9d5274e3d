"""Bar charts drawn on the server as SVG: no script, no build step, no network.

A chart is a row of bars in a ``viewBox`` that the page stretches to its
width (``preserveAspectRatio="none"``), so it reads on a phone as on a wide
screen; it holds no text (stretched text would be distorted): its labels are
HTML around it, and each bar has a ``<title>`` for a tooltip. Colours come
from the stylesheet, which takes them from the admin's own variables, so the
light and dark themes both apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from django.utils.safestring import SafeString, mark_safe

#: The drawing's height in viewBox units; bars are scaled to it.
HEIGHT = 40
#: Each bar's slot width, and the gap left in it, in viewBox units.
SLOT, GAP = 10, 2


@dataclass(frozen=True, slots=True)
class Bar:
    x: int
    y: float
    width: int
    height: float
    value: int | None
    #: What the bar is (an hour, a day), for its tooltip and ``data-key``.
    key: str
    #: The tooltip.
    title: str
    #: Whether it is the bar still growing (the current hour, today).
    current: bool = False


@dataclass(frozen=True, slots=True)
class BarChart:
    """One series over time: ``name`` names it for the stylesheet and for scripts."""

    name: str
    label: str
    bars: list[Bar]
    width: int
    height: int
    total: int
    peak: int
    first_key: str
    last_key: str

    @property
    def view_box(self) -> str:
        return f"0 0 {self.width} {self.height}"

    def svg(self) -> SafeString:
        """The chart as an ``<svg>`` element: a baseline and one ``<rect>`` per bar.

        Quiet bars (zero, unknown) are left out, except the current one, which
        scripts and tests look for. Built as one string: hundreds of bars through
        the template engine would cost more than everything else on the page.
        """
        parts = [
            f'<svg class="taskpool-bars taskpool-series-{escape(self.name)}" '
            f'viewBox="{self.view_box}" preserveAspectRatio="none" role="img" '
            f'aria-label="{escape(self.label)}: {escape(self.first_key)} – {escape(self.last_key)}">'
            f'<rect class="taskpool-baseline" x="0" y="{self.height - 1}" '
            f'width="{self.width}" height="1"/>'
        ]
        for bar in self.bars:
            if not bar.height and not bar.current:
                continue
            classes = "taskpool-bar taskpool-bar-current" if bar.current else "taskpool-bar"
            value = "" if bar.value is None else bar.value
            parts.append(
                f'<rect class="{classes}" data-key="{escape(bar.key)}" data-value="{value}" '
                f'x="{bar.x}" y="{bar.y:.2f}" width="{bar.width}" height="{bar.height:.2f}">'
                f"<title>{escape(bar.title)}</title></rect>"
            )
        parts.append("</svg>")
        return mark_safe("".join(parts))  # noqa: S308 - every text in it is escaped above


def bar_chart(
    name: str,
    label: str,
    points: Sequence[tuple[str, int | None]],
    *,
    current_key: str | None = None,
    unit: str = "",
) -> BarChart:
    """A chart of ``points`` (key, value) in order; a ``None`` value is unknown (no bar)."""
    peak = max((value for _key, value in points if value), default=0)
    bars = []
    for number, (key, value) in enumerate(points):
        height = 0.0 if not value or not peak else max(HEIGHT * value / peak, 0.75)
        shown = "?" if value is None else str(value)
        bars.append(
            Bar(
                x=number * SLOT + GAP // 2,
                y=HEIGHT - height,
                width=SLOT - GAP,
                height=height,
                value=value,
                key=key,
                title=f"{key}{unit}: {shown} {label}",
                current=key == current_key,
            )
        )
    return BarChart(
        name=name,
        label=label,
        bars=bars,
        width=max(len(points), 1) * SLOT,
        height=HEIGHT,
        total=sum(value for _key, value in points if value),
        peak=peak,
        first_key=points[0][0] if points else "",
        last_key=points[-1][0] if points else "",
    )
