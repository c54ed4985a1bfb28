"""service.data.paths: an exception's message names files relative to the data root (or
the home), however the root was configured; anything else in the text stays as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from counterweight.service.data.paths import without_roots


def opening(path: Path) -> str:
    try:
        path.open("rb")
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    raise AssertionError(f"{path} opened")


def test_paths_under_a_root_are_written_relative_to_it(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    message = opening(root / "pets" / "001.png")
    assert without_roots(message, root) == (
        "FileNotFoundError: [Errno 2] No such file or directory: 'pets/001.png'"
    )
    assert without_roots(f"cannot list {root}", root) == "cannot list ."
    assert without_roots(f"'{root}/'", root) == "''"
    # A sibling whose name starts with the root's is another folder: left alone.
    assert without_roots(f"{root}2/x and {root}.old", root) == f"{root}2/x and {root}.old"
    assert without_roots("nothing here", root) == "nothing here"


def test_every_spelling_of_a_root_is_recognised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tmp_path / "real"
    (real / "data").mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    monkeypatch.chdir(tmp_path)
    configured = Path("link/data")  # relative, and through a link
    for opened in (configured, tmp_path / "link" / "data", real / "data"):
        assert without_roots(opening(opened / "x.png"), configured).endswith(": 'x.png'"), opened
    # Several roots: each path relative to the root it lies under, the deepest first.
    home = tmp_path / "home"
    text = f"{home / 'data' / 'a.png'} and {home / 'datasets' / 'b.npz'}"
    assert without_roots(text, home / "data", home) == "a.png and datasets/b.npz"
