"""The plots a worker renders when a job ends: real PNG files of a fixed size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from counterweight.service import artifacts
from counterweight.service.errors import ArtifactMissing
from counterweight.service.settings import Settings
from counterweight.service.storage.jobs import checked_plot_name, job_file
from counterweight.workers.plots import FIGURE_SIZE_PX, recall_figure, render_plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CLASSES = ["cat", "dog", "eel"]


def metrics(epochs: int = 3) -> dict[str, Any]:
    history = [
        {
            "epoch": e,
            "train_loss": 1.0 / e,
            "val_loss": 1.2 / e,
            "val": {"per_class_recall": [0.9, 0.5 + 0.1 * e, 0.1 * e]},
        }
        for e in range(1, epochs + 1)
    ]
    # The last class never occurs in the test split: its row of the matrix is all zeros.
    confusion = [[50, 3, 0], [10, 7, 0], [0, 0, 0]]
    return {"history": history, "final": {"confusion_matrix": confusion}, "selected_epoch": 2}


def test_every_plot_is_a_png_of_the_fixed_size_and_nothing_else_is_left(tmp_path: Path) -> None:
    names = render_plots(metrics(), CLASSES, tmp_path)
    assert names == list(artifacts.PLOT_NAMES) == ["curves", "recall", "confusion"]
    folder = artifacts.plots_dir(tmp_path)
    # Written to a temporary name and renamed: no temporary file stays behind.
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.png" for n in names)
    for name in names:
        path = folder / f"{name}.png"
        assert path.read_bytes().startswith(PNG_SIGNATURE)
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.size == FIGURE_SIZE_PX == (1200, 500)


@pytest.mark.parametrize("epochs", [1, 4])
def test_the_recall_plot_has_one_line_per_class_named_in_the_legend(epochs: int) -> None:
    figure = recall_figure(metrics(epochs), CLASSES)
    (ax,) = figure.axes
    lines = ax.get_lines()
    assert len(lines) == len(CLASSES)
    for c, line in enumerate(lines):
        x, y = line.get_data()
        assert list(x) == list(range(1, epochs + 1))
        assert list(y) == [row["val"]["per_class_recall"][c] for row in metrics(epochs)["history"]]
    legend = ax.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["0: cat", "1: dog", "2: eel"]


def test_a_plot_name_outside_the_known_set_never_reaches_the_filesystem(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    job_dir = artifacts.job_dir(settings.artifacts_dir, "abc123")
    render_plots(metrics(), CLASSES, job_dir)
    found = job_file(
        settings, "abc123", checked_plot_name("abc123", "recall", list(artifacts.PLOT_NAMES))
    )
    assert found == artifacts.plots_dir(job_dir) / "recall.png"
    for name in ("../card", "secret", "recall.png"):
        with pytest.raises(ArtifactMissing, match="available plots: curves, recall"):
            checked_plot_name("abc123", name, list(artifacts.PLOT_NAMES))
    # A job whose metrics list no plots (rendering failed) has none to serve.
    with pytest.raises(ArtifactMissing, match="available plots: none"):
        checked_plot_name("abc123", "recall", [])
