"""Property-based: specs with extreme numbers, loose types and odd strings in every field.

Two properties, over examples Hypothesis generates (derandomized, so CI sees the same
ones every run):
- the API never answers 5xx to them, on validate and on submit, on SQLite and Postgres;
- a spec at the edges of what validate accepts (each field at its bounds) either trains
  to finite metrics or fails with a clear error (the errors the worker reports as the
  job's own: bad data, bad spec, divergence).
Run time is kept small by varying epochs, batch size and model size only within
small bounds; every other field gets the extremes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from counterweight.service.api.app import create_app
from counterweight.service.errors import DatasetError
from counterweight.service.settings import Settings
from counterweight.service.spec import JobSpec
from counterweight.workers.training.engine import train_job
from counterweight.workers.training.loop import TrainingDiverged
from tests.conftest import ThreadedUvicorn

ODD_FLOATS = st.sampled_from(
    [math.nan, math.inf, -math.inf, 1e308, -1e308, 3.5e38, 3.4e38, 1e39, 1e-320, -0.0, 0.0]
)
ODD_INTS = st.sampled_from([-1, 0, 2**31, 2**63, 10**30, -(10**30)])
ODD_TEXT = st.sampled_from(["", "\x00", "a\x00b", "\ud800", "yes", "1", "1e308", "é" * 300])
ANYTHING = st.one_of(
    ODD_FLOATS,
    ODD_INTS,
    ODD_TEXT,
    st.booleans(),
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(),
    st.lists(st.one_of(ODD_FLOATS, ODD_INTS), max_size=3),
    st.dictionaries(ODD_TEXT, ODD_FLOATS, max_size=2),
)
# Every field that takes a number, a flag or a free string; each gets extremes.
EXTREME_FIELDS = [
    "dataset.val_fraction",
    "dataset.path",
    "dataset.id",
    "dataset.classes",
    "imbalance.ratio",
    "imbalance.seed",
    "imbalance.counts",
    "loss.gamma",
    "loss.alpha",
    "loss.beta",
    "loss.max_margin",
    "loss.scale",
    "loss.drw_epoch",
    "loss.tau",
    "loss.label_smoothing",
    "class_weight",
    "sample_weight",
    "train.lr",
    "train.weight_decay",
    "train.momentum",
    "train.warmup_epochs",
    "train.step_milestones",
    "train.step_gamma",
    "train.amp",
    "train.seed",
    "train.early_stopping_patience",
    "train.device",
    "priority",
    "max_attempts",
]
# Fields that set the run time: small, so that accepted specs can be trained here.
SMALL = {
    "train.epochs": st.integers(1, 2),
    "train.batch_size": st.sampled_from([1, 64, 4096]),
    "model.width": st.integers(1, 16),
    "model.depth": st.integers(1, 2),
}
LOSSES = ["cross_entropy", "focal", "class_balanced", "ldam", "balanced_softmax", "logit_adjusted"]


def set_path(spec: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = spec
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def small_spec(draw: st.DrawFn) -> dict[str, Any]:
    """A digits job of some loss, its run time kept small."""
    spec: dict[str, Any] = {"dataset": {"name": "digits"}}
    for path, strategy in SMALL.items():
        set_path(spec, path, draw(strategy))
    set_path(spec, "loss.type", draw(st.sampled_from(LOSSES)))
    return spec


@st.composite
def hostile_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec = small_spec(draw)
    for path in draw(st.lists(st.sampled_from(EXTREME_FIELDS), min_size=1, max_size=4)):
        set_path(spec, path, draw(ANYTHING))
    return spec


ALMOST_ONE = 1 - 1e-9
# The edges of each field's accepted range (service.spec), and rules at their limits.
EDGES: dict[str, list[Any]] = {
    "train.lr": [1e-12, 10.0],
    "train.weight_decay": [0.0, 1.0],
    "train.momentum": [0.0, ALMOST_ONE],
    "train.optimizer": ["sgd", "adam", "adamw"],
    "train.schedule": ["constant", "cosine", "step"],
    "train.step_milestones": [[1], [10_000]],
    "train.step_gamma": [1e-12, 1.0],
    "train.warmup_epochs": [0, 1],
    "train.early_stopping_patience": [1, 10_000],
    "train.select_by": ["balanced_accuracy", "macro_f1", "g_mean", "minority_recall", "val_loss"],
    "loss.gamma": [0.0, 100.0],
    "loss.beta": [0.0, ALMOST_ONE],
    "loss.max_margin": [1e-12, 10.0],
    "loss.scale": [1e-12, 1000.0],
    "loss.drw_epoch": [1, 10_000],
    "loss.tau": [0.0, 100.0],
    "loss.label_smoothing": [0.0, ALMOST_ONE],
    "loss.reduction": ["weighted_mean", "mean"],
    "loss.alpha": [[3.4e38] * 10, [0.0] * 9 + [1.0]],
    "class_weight": [
        {"0": 3.4e38},
        {"0": 0.0, "1": 1e-30},
        "balanced",
        {"effective_number": 1e-12},
        {"effective_number": ALMOST_ONE},
    ],
    "sample_weight": [[3.4e38] * 1347, [1e-30] * 1347],
    "imbalance": [
        {"profile": "step", "ratio": 1e9},
        {"profile": "exponential", "ratio": 1e9},
        {"profile": "step", "ratio": 1.0},
    ],
    "dataset.val_fraction": [1e-9, 0.5 - 1e-9],
    "sampler": ["oversample", "undersample"],
}


@st.composite
def edge_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec = small_spec(draw)
    for path in draw(st.lists(st.sampled_from(sorted(EDGES)), min_size=1, max_size=4)):
        set_path(spec, path, draw(st.sampled_from(EDGES[path])))
    return spec


PROPERTY = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def http(database_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    app = create_app(Settings(home=tmp_path, database_url=database_url))
    with ThreadedUvicorn(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client


def post_json(http: httpx.Client, route: str, spec: dict[str, Any]) -> httpx.Response:
    # Python's encoder writes NaN and Infinity as JSON's common extension, which clients
    # such as Python's json module send; lone surrogates go as \ud800 escapes.
    body = json.dumps(spec)
    return http.post(route, content=body, headers={"content-type": "application/json"})


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_no_spec_gets_a_server_error(http: httpx.Client) -> None:
    @PROPERTY
    @given(spec=hostile_specs())
    def check(spec: dict[str, Any]) -> None:
        for route in ("/v1/jobs/validate", "/v1/jobs"):
            response = post_json(http, route, spec)
            assert response.status_code < 500, (route, spec, response.text)
            if response.status_code >= 400:
                assert response.json()["detail"], response.text  # says what is wrong

    check()


CLEAR_ERRORS = (DatasetError, ValidationError, TrainingDiverged)


def test_an_accepted_spec_trains_to_finite_metrics_or_fails_clearly(
    http: httpx.Client, tmp_path: Path
) -> None:
    trained = 0

    @settings(PROPERTY, max_examples=30)
    @given(spec=edge_specs())
    def check(spec: dict[str, Any]) -> None:
        nonlocal trained
        if post_json(http, "/v1/jobs/validate", spec).status_code != 200:
            return
        workdir = tmp_path / f"job{trained}"
        workdir.mkdir()
        trained += 1
        try:
            result = train_job(
                JobSpec.model_validate(spec),
                workdir,
                device="cpu",
                data_root=tmp_path,
                home=tmp_path,
                report=lambda progress: None,
                should_stop=lambda: False,
            )
        except CLEAR_ERRORS as exc:
            assert str(exc), spec
            return
        assert result is not None
        final = result.metrics["final"]
        for name in ("accuracy", "balanced_accuracy", "macro_f1"):
            assert math.isfinite(final[name]), (spec, name, final[name])
        for row in result.metrics["history"]:
            assert math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"]), spec

    check()
    assert trained >= 15  # the property held on real training runs, not only on refusals
