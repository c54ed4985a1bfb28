"""Plots of a finished job, rendered once by the worker and served by the API as PNG files.

- curves: train and validation loss per epoch.
- recall: per-class validation recall per epoch, one line per class.
- confusion: the final test confusion matrix, counts and row-normalised side by side.

Every image is FIGURE_SIZE_PX (width, height) pixels. The names are fixed here
(service.artifacts.PLOT_NAMES) and never come from a client; the class names drawn in
them do, and are drawn as written, never as mathtext (service.figures). Each file is
written to a temporary name and renamed, so a reader never sees half an image.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import IO, Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from counterweight.service.artifacts import PLOT_NAMES, plots_dir
from counterweight.service.figures import png
from counterweight.workers.training.checkpoint import atomic_write

FIGURE_SIZE_PX = (1200, 500)
DPI = 100


def _figure(ncols: int = 1) -> tuple[Figure, list[Axes]]:
    width, height = FIGURE_SIZE_PX
    # Not pyplot: it keeps global state (a backend, open figures) a long-lived worker
    # would accumulate; a Figure with its own Agg canvas needs no display and is freed
    # when dropped. The tight layout is computed when the figure is drawn, after
    # service.figures.png has made its texts plain.
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="tight")
    FigureCanvasAgg(figure)
    axes = [figure.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return figure, axes


def curves_figure(metrics: dict[str, Any], class_names: list[str]) -> Figure:
    history = metrics["history"]
    epochs = [row["epoch"] for row in history]
    figure, (ax,) = _figure()
    ax.plot(epochs, [row["train_loss"] for row in history], marker="o", label="train loss")
    ax.plot(epochs, [row["val_loss"] for row in history], marker="o", label="validation loss")
    selected = metrics.get("selected_epoch")
    if selected:
        ax.axvline(selected, color="grey", linestyle="--", label=f"selected (epoch {selected})")
    ax.set(xlabel="epoch", ylabel="loss", title="Learning curves")
    ax.legend()
    ax.grid(alpha=0.3)
    return figure


def recall_figure(metrics: dict[str, Any], class_names: list[str]) -> Figure:
    history = metrics["history"]
    epochs = [row["epoch"] for row in history]
    recalls = np.array([row["val"]["per_class_recall"] for row in history], dtype=float)
    figure, (ax,) = _figure()
    for c, name in enumerate(class_names):
        ax.plot(epochs, recalls[:, c], marker="o", label=f"{c}: {name}")
    ax.set(xlabel="epoch", ylabel="recall", title="Validation recall per class", ylim=(-0.02, 1.02))
    # Outside the axes: with many classes the legend would hide the lines.
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small")
    ax.grid(alpha=0.3)
    return figure


def _matrix(ax: Axes, values: np.ndarray, class_names: list[str], title: str, fmt: str) -> None:
    image = ax.imshow(values, cmap="Blues", vmin=0)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right", fontsize="small")
    ax.set_yticks(ticks, class_names, fontsize="small")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    if len(class_names) <= 20:  # beyond that the numbers are unreadable anyway
        threshold = values.max() / 2 if values.size else 0
        for (i, j), value in np.ndenumerate(values):
            colour = "white" if value > threshold else "black"
            ax.text(j, i, format(value, fmt), ha="center", va="center", color=colour, fontsize=8)


def confusion_figure(metrics: dict[str, Any], class_names: list[str]) -> Figure:
    counts = np.array(metrics["final"]["confusion_matrix"], dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    # A class absent from the test split has an all-zero row: show zeros, not NaN.
    normalised = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    figure, (left, right) = _figure(ncols=2)
    _matrix(left, counts, class_names, "Test confusion matrix (counts)", "d")
    _matrix(right, normalised, class_names, "Row-normalised (recall on the diagonal)", ".2f")
    return figure


FIGURES: dict[str, Callable[[dict[str, Any], list[str]], Figure]] = {
    "curves": curves_figure,
    "recall": recall_figure,
    "confusion": confusion_figure,
}
assert tuple(FIGURES) == PLOT_NAMES  # the API serves exactly the plots made here


def _save(figure: Figure, f: IO[bytes]) -> None:
    f.write(png(figure, DPI))


def render_plots(metrics: dict[str, Any], class_names: list[str], workdir: Path) -> list[str]:
    """Write <workdir>/plots/<name>.png for every plot; returns the names written."""
    folder = plots_dir(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    for name, make in FIGURES.items():
        atomic_write(folder / f"{name}.png", partial(_save, make(metrics, class_names)))
    return list(FIGURES)
