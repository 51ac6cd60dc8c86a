"""The loss curve of one run, or several runs overlaid, growing as metrics arrive.

Metrics rows come from the store (``RunStore.metrics``): one dict per logged
step with ``train_loss``, ``tokens`` and ``elapsed`` and, on evaluation steps,
``val_loss``. The curves can be drawn against the step, the tokens seen or the
training time (runs of different batch sizes or speeds compare fairly on the
latter two). The chart keeps the rows' values per series and redraws at most
once a second, so a fast run never makes the screen spend its time plotting
(plotext builds the picture in Python: 10-25 ms here). A chart on a hidden
screen plots new data only once it is shown again.
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
# What the curves can be drawn against, in the order a key cycles them: the metrics column, and its label.
X_AXES = {"step": "step", "tokens": "tokens", "elapsed": "wall time (s)"}


@dataclass
class Curve:
    """One loss line of a run: the loss at each logged step, with the value each x axis has there."""

    losses: list[float] = field(default_factory=list)
    xs: dict[str, list] = field(default_factory=lambda: {axis: [] for axis in X_AXES})

    def add(self, row: dict, loss: float) -> None:
        self.losses.append(loss)
        for axis, values in self.xs.items():
            values.append(row.get(axis))

    def along(self, axis: str) -> tuple[list, list[float]]:
        """The points against ``axis``, less those whose row lacks it (an old run logged no time)."""
        pairs = [(x, loss) for x, loss in zip(self.xs[axis], self.losses, strict=True) if x is not None]
        return [x for x, _ in pairs], [loss for _, loss in pairs]

    def __len__(self) -> int:
        return len(self.losses)


@dataclass
class LossSeries:
    """The train and validation losses of one run."""

    label: str
    train: Curve = field(default_factory=Curve)
    val: Curve = field(default_factory=Curve)

    def add(self, rows: list[dict]) -> None:
        """Append metrics rows from the store (steps must be newer than those held)."""
        for row in rows:
            if row.get("train_loss") is not None:
                self.train.add(row, row["train_loss"])
            if row.get("val_loss") is not None:
                self.val.add(row, row["val_loss"])

    @property
    def points(self) -> int:
        return len(self.train) + len(self.val)


def _thin(xs: list, ys: list[float]) -> tuple[list, list[float]]:
    """Keep at most MAX_POINTS evenly spaced points, always including the last."""
    if len(xs) <= MAX_POINTS:
        return xs, ys
    stride = len(xs) / MAX_POINTS
    picked = sorted({int(i * stride) for i in range(MAX_POINTS)} | {len(xs) - 1})
    return [xs[i] for i in picked], [ys[i] for i in picked]


class LossChart(PlotextPlot):
    """Train (solid) and validation (dots) loss against step, tokens or time, for one or more runs."""

    DEFAULT_CSS = (Path(__file__).with_suffix(".tcss")).read_text(encoding="utf-8")

    def __init__(self, *, id: str | None = None, empty_message: str = "no metrics yet") -> None:
        super().__init__(id=id)
        self.series: dict[str, LossSeries] = {}
        self.empty_message = empty_message
        self.x_axis = "step"
        """The metrics column the curves are drawn against (a key of X_AXES)."""
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

    def next_x_axis(self) -> str:
        """Draw the curves against the next of step, tokens and training time; return its label."""
        axes = list(X_AXES)
        self.x_axis = axes[(axes.index(self.x_axis) + 1) % len(axes)]
        self._replot()
        return X_AXES[self.x_axis]

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
        plt.xlabel(X_AXES[self.x_axis])
        overlay = len(self.series) > 1
        drawn = False
        for colour, series in zip(itertools.cycle(SERIES_COLOURS), self.series.values()):
            # Overlaid, a run has one colour and one legend line: its name by the train line, its val dots unnamed.
            xs, ys = _thin(*series.train.along(self.x_axis))
            if xs:
                plt.plot(xs, ys, marker="braille", color=colour, label=series.label if overlay else "train")
                drawn = True
            xs, ys = _thin(*series.val.along(self.x_axis))
            if xs:
                plt.scatter(
                    xs, ys, marker="dot", color=colour if overlay else "orange", label=None if overlay else "val"
                )
                drawn = True
        if overlay and drawn:
            plt.title("train: lines · val: dots")
        if not drawn:
            plt.title(self.empty_message)
        self.refresh()
