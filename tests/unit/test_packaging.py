"""What `pip install` puts in place: the service under import names of its own
(counterweight.*), every package of the tree included, and a client that needs httpx
alone."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CLIENT = tomllib.loads((ROOT / "client" / "pyproject.toml").read_text())


def installed_name(folder: Path) -> str:
    """The import name setuptools gives a folder under the package-dir mapping."""
    relative = folder.relative_to(ROOT)
    for name, mapped in PROJECT["tool"]["setuptools"]["package-dir"].items():
        if relative == Path(mapped) or Path(mapped) in relative.parents:
            rest = relative.relative_to(mapped).parts
            return ".".join((name, *rest))
    raise AssertionError(f"{relative} is not under a mapped folder")


def test_every_folder_of_python_modules_is_a_listed_package() -> None:
    listed = set(PROJECT["tool"]["setuptools"]["packages"])
    folders = {
        path.parent
        for top in ("service", "workers", "migrations")
        for path in (ROOT / top).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    names = {installed_name(folder) for folder in folders}
    assert names == listed, (sorted(names - listed), sorted(listed - names))


def test_nothing_installs_a_generic_top_level_name() -> None:
    packages = PROJECT["tool"]["setuptools"]["packages"] + CLIENT["tool"]["setuptools"]["packages"]
    assert {name.split(".")[0] for name in packages} == {"counterweight", "counterweight_client"}


def test_the_client_distribution_needs_httpx_alone() -> None:
    dependencies = CLIENT["project"]["dependencies"]
    assert [d.split(">")[0].split("=")[0] for d in dependencies] == ["httpx"]
    # and the service's CLI gets it as a dependency, not as a copy
    assert "counterweight-client" in PROJECT["project"]["dependencies"]


def test_the_wheel_holds_the_code_and_the_migrations_under_counterweight(tmp_path: Path) -> None:
    # Built offline, with the setuptools of this environment, from a copy of what the
    # Dockerfile copies (setuptools writes its build/ folder into the source tree).
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    skip = shutil.ignore_patterns("__pycache__")
    for folder in ("service", "workers", "migrations"):
        shutil.copytree(ROOT / folder, source / folder, ignore=skip)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    options = ["--no-index", "--quiet", "--wheel-dir", str(tmp_path), str(source)]
    subprocess.run([*build, *options], check=True, capture_output=True)
    [wheel] = tmp_path.glob("counterweight-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    tops = {name.split("/")[0] for name in names if not name.startswith("counterweight-")}
    assert tops == {"counterweight"}, tops
    for expected in (
        "counterweight/service/api/app.py",
        "counterweight/workers/__main__.py",
        "counterweight/migrations/env.py",
        "counterweight/migrations/script.py.mako",
        "counterweight/migrations/versions/0001_create_jobs.py",
        # The dashboard and /docs work installed: templates, scripts, vendored files.
        "counterweight/service/api/ui/templates/job.html",
        "counterweight/service/api/ui/static/job.js",
        "counterweight/service/api/ui/static/app.css",
        "counterweight/service/api/ui/static/vendor/htmx/htmx.min.js",
        "counterweight/service/api/ui/static/vendor/uplot/uPlot.iife.min.js",
        "counterweight/service/api/ui/static/vendor/uplot/LICENSE",
        "counterweight/service/api/ui/static/vendor/swagger-ui/swagger-ui-bundle.js",
        "counterweight/service/api/ui/static/vendor/swagger-ui/NOTICE",
    ):
        assert expected in names, expected
