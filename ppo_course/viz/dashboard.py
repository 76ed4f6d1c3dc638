"""A live training dashboard for notebooks: pass it as ``train(..., callback=dashboard)``.

It redraws :func:`ppo_course.viz.plots.plot_training_curves` from the rows the trainer reports,
every ``every`` updates, into one display slot; call :meth:`LiveDashboard.close` (or use it as a
context manager) to draw the final figure. Executed headless (nbval, nbconvert) the same calls
leave a static figure in the output, so the notebook still shows the curves.
"""

from __future__ import annotations

import math
from collections import defaultdict

from .plots import DEFAULT_PANELS, plot_training_curves


class LiveDashboard:
    """Collects the trainer's per-update rows and redraws the curves in place.

    Args:
        every: redraw after this many updates (drawing costs ~0.2 s; don't redraw every update).
        success_threshold: dashed "solved" line on the return panels.
        panels: which metrics to show (see :data:`ppo_course.viz.plots.DEFAULT_PANELS`).
    """

    def __init__(self, every: int = 10, success_threshold: float | None = None, panels=DEFAULT_PANELS):
        import matplotlib.pyplot as plt

        self.every, self.success_threshold, self.panels = every, success_threshold, panels
        self.ncols = min(4, len(panels))  # up to four panels a row; fewer panels, a narrower figure
        self.data: dict[str, list[float]] = defaultdict(list)
        self.updates = 0
        self.fig = plt.figure(figsize=(3.2 * self.ncols, 2.6 * math.ceil(len(panels) / self.ncols)))
        plt.close(self.fig)  # we display it ourselves, once, in a slot we can update
        self._handle = None

    def __call__(self, row: dict[str, float]) -> None:
        keys = set(self.data) | set(row)
        n = self.updates
        for key in keys:
            self.data[key].extend([math.nan] * (n - len(self.data[key])))
            self.data[key].append(float(row.get(key, math.nan)))
        self.updates += 1
        if self.updates % self.every == 0:
            self.draw()

    def draw(self) -> None:
        from IPython.display import display

        if not self.data:
            return
        plot_training_curves(dict(self.data), self.panels, self.success_threshold, ncols=self.ncols, fig=self.fig)
        if self._handle is None:
            self._handle = display(self.fig, display_id=True)
        else:
            self._handle.update(self.fig)

    def close(self) -> None:
        self.draw()

    def __enter__(self) -> "LiveDashboard":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
