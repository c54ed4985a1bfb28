"""The sequence labeling spec: its defaults, and that a stored spec reads back as it was."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from counterweight.service.spec import JobSpec

UPLOADED = {"name": "uploaded", "id": "0" * 32}


def sequence(**changes: Any) -> JobSpec:
    return JobSpec.model_validate({"task": "sequence_labeling", "dataset": UPLOADED, **changes})


def test_sequences_default_to_the_tagger_macro_f1_and_a_constant_rate() -> None:
    spec = sequence()
    assert (spec.model.arch, spec.model.width, spec.model.depth) == ("bilstm_tagger", 100, 1)
    assert (spec.train.select_by, spec.train.schedule) == ("macro_f1", "constant")
    # What the client chose stays; classification keeps its own defaults.
    chosen = sequence(model={"width": 32}, train={"select_by": "g_mean", "schedule": "cosine"})
    assert (chosen.model.width, chosen.train.select_by) == (32, "g_mean")
    assert chosen.train.schedule == "cosine"
    plain = JobSpec.model_validate({"dataset": {"name": "digits"}})
    assert (plain.model.arch, plain.train.select_by) == ("mlp", "balanced_accuracy")
    assert plain.train.schedule == "cosine"


def test_a_stored_sequence_spec_validates_again_as_the_same_spec() -> None:
    # The queue stores model_dump(): every field set, the imbalance defaults included.
    spec = sequence(class_weight="balanced", sample_weight=[[1.0, 0.0], [2.0, 3.0]])
    stored = spec.model_dump(mode="json")
    again = JobSpec.model_validate(stored)
    assert again.fingerprint() == spec.fingerprint()


def test_an_imbalance_equal_to_the_default_is_not_an_option() -> None:
    assert sequence(imbalance={"profile": "none", "seed": 0}).imbalance.profile == "none"
    with pytest.raises(ValidationError, match=r"imbalance\.seed: no imbalance options apply"):
        sequence(imbalance={"seed": 1})
