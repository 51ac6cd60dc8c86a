"""The loss curve of one run, or several runs overlaid, growing as metrics arrive.

Metrics rows come from the store (``RunStore.metrics``): one dict per logged
step with ``train_loss`` and, on evaluation steps, ``val_loss``. The chart
keeps them per series and redraws at most once a second, so a fast run never
makes the screen spend its time plotting (plotext builds the picture in
Python: 10-25 ms here). A chart on a hidden screen plots new data only once it
is shown again.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from textual_plotext import PlotextPlot

# Distinct line colours for overlaid runs (plotext colour names).
SERIES_COLOURS = ("cyan", "orange", "magenta", "green", "yellow", "blue", "red", "white")
# More points than this per line only cost time: the chart is ~100 cells wide.
MAX_POINTS = 400
# Plotting takes tens of milliseconds: new points are drawn at most this often.
REDRAW_INTERVAL = 1.0


@dataclass
class LossSeries:
    """The train and validation losses of one run, by step."""

    label: str
    train_steps: list[int] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)

    def add(self, rows: list[dict]) -> None:
        """Append metrics rows from the store (steps must be newer than those held)."""
        for row in rows:
            if row.get("train_loss") is not None:
                self.train_steps.append(row["step"])
                self.train_losses.append(row["train_loss"])
            if row.get("val_loss") is not None:
                self.val_steps.append(row["step"])
                self.val_losses.append(row["val_loss"])

    @property
    def points(self) -> int:
        return len(self.train_steps) + len(self.val_steps)


def _thin(xs: list[int], ys: list[float]) -> tuple[list[int], list[float]]:
    """Keep at most MAX_POINTS evenly spaced points, always including the last."""
    if len(xs) <= MAX_POINTS:
        return xs, ys
    stride = len(xs) / MAX_POINTS
    picked = sorted({int(i * stride) for i in range(MAX_POINTS)} | {len(xs) - 1})
    return [xs[i] for i in picked], [ys[i] for i in picked]


class LossChart(PlotextPlot):
    """Train (solid) and validation (dots) loss against step, for one or more runs."""

    DEFAULT_CSS = (Path(__file__).with_suffix(".tcss")).read_text(encoding="utf-8")

    def __init__(self, *, id: str | None = None, empty_message: str = "no metrics yet") -> None:
        super().__init__(id=id)
        self.series: dict[str, LossSeries] = {}
        self.empty_message = empty_message
        self._dirty = True

    def on_mount(self) -> None:
        super().on_mount()
        self.set_interval(REDRAW_INTERVAL, self._redraw_if_dirty)
        self._replot()

    def clear(self) -> None:
        """Remove every series (another run was chosen)."""
        self.series = {}
        self._replot()

    def add_metrics(self, key: str, rows: list[dict], *, label: str | None = None) -> None:
        """Append a run's new metrics rows; the chart redraws on its next tick."""
        series = self.series.setdefault(key, LossSeries(label or key))
        if rows:
            series.add(rows)
            self._dirty = True

    def keep_only(self, keys: set[str]) -> None:
        """Drop series not in ``keys`` (runs deselected from an overlay)."""
        if set(self.series) - keys:
            self.series = {key: series for key, series in self.series.items() if key in keys}
            self._dirty = True

    @property
    def points(self) -> int:
        """How many points the chart holds, over all series."""
        return sum(series.points for series in self.series.values())

    def _redraw_if_dirty(self) -> None:
        if self._dirty and self.screen.is_current:
            self._replot()

    def _replot(self) -> None:
        self._dirty = False
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.xlabel("step")
        overlay = len(self.series) > 1
        drawn = False
        for colour, series in zip(itertools.cycle(SERIES_COLOURS), self.series.values()):
            if series.train_steps:
                xs, ys = _thin(series.train_steps, series.train_losses)
                plt.plot(xs, ys, marker="braille", color=colour, label=f"{series.label} train" if overlay else "train")
                drawn = True
            if series.val_steps:
                xs, ys = _thin(series.val_steps, series.val_losses)
                plt.scatter(
                    xs,
                    ys,
                    marker="dot",
                    color=colour if overlay else "orange",
                    label=f"{series.label} val" if overlay else "val",
                )
                drawn = True
        if not drawn:
            plt.title(self.empty_message)
        self.refresh()
