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
