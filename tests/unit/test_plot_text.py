"""Client text in the plots a worker renders: drawn as written, never read as mathtext.

Class and tag names come from the client. matplotlib reads a string holding two `$`
as mathtext, so "$\\frac{$" failed every plot of a job (the worker then skipped them)
and "$x^2$" came out as a formula. (The sweep chart: tests/integration/test_sweeps_api.py.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

from counterweight.service import artifacts
from counterweight.service.figures import plain_text, png
from counterweight.workers.plots import FIGURE_SIZE_PX, FIGURES, recall_figure, render_plots

# Unbalanced and balanced mathtext, an escaped dollar, TeX's special characters.
MATH_NAMES = ["$\\frac{$", "$x^2$", "a_b$c$", "\\$5", "%&#{}~^"]


def job_metrics() -> dict[str, Any]:
    k = len(MATH_NAMES)
    history = [
        {"epoch": e, "train_loss": 1.0, "val_loss": 1.1, "val": {"per_class_recall": [0.5] * k}}
        for e in (1, 2)
    ]
    confusion = [[5 if i == j else 1 for j in range(k)] for i in range(k)]
    return {"history": history, "final": {"confusion_matrix": confusion}, "selected_epoch": 1}


def texts(figure: Figure) -> list[Text]:
    found = [t for t in figure.findobj(Text) if isinstance(t, Text)]
    assert found
    return found


def test_every_plot_is_rendered_whatever_the_class_names(tmp_path: Path) -> None:
    assert render_plots(job_metrics(), MATH_NAMES, tmp_path) == list(artifacts.PLOT_NAMES)
    for name in artifacts.PLOT_NAMES:
        with Image.open(artifacts.plots_dir(tmp_path) / f"{name}.png") as image:
            assert image.format == "PNG" and image.size == FIGURE_SIZE_PX


def test_every_text_of_every_plot_is_drawn_plain() -> None:
    for make in FIGURES.values():
        figure = make(job_metrics(), MATH_NAMES)
        assert png(figure, dpi=20).startswith(b"\x89PNG")
        assert not any(t.get_parse_math() or t.get_usetex() for t in texts(figure))
    legend = recall_figure(job_metrics(), MATH_NAMES).axes[0].get_legend()
    assert legend is not None
    shown = [t.get_text() for t in legend.get_texts()]
    assert shown == [f"{c}: {name}" for c, name in enumerate(MATH_NAMES)]


def test_a_name_drawn_plain_keeps_its_dollars() -> None:
    # As mathtext, "$x^2$" is drawn as x with a superscript 2, narrower than the five
    # characters written; drawn plain, it is as wide as "$x^2$" in the body font.
    figure = Figure()
    renderer = FigureCanvasAgg(figure).get_renderer()
    figure.text(0, 0, "$x^2$")
    figure.text(0, 0.5, "$x^2$", parse_math=False)
    as_math, as_written = (t.get_window_extent(renderer).width for t in texts(figure))
    assert as_math < as_written
    plain_text(figure)
    assert [t.get_window_extent(renderer).width for t in texts(figure)] == [as_written] * 2
