"""What the dashboard's pages compute from the API's answers (service.api.ui.views)."""

from __future__ import annotations

from counterweight.service.api.ui import views


def test_the_remedy_names_loss_weights_sampler_and_decision() -> None:
    assert views.remedy({"loss": {"type": "cross_entropy"}, "sampler": "none"}) == "cross_entropy"
    spec = {
        "loss": {"type": "focal"},
        "class_weight": {"0": 1.0, "1": 5.0},
        "sample_weight": "from_dataset",
        "sampler": "oversample",
        "decision": "logit_adjusted",
    }
    assert views.remedy(spec) == (
        "focal, class_weight per class, sample_weight, sampler oversample, decision logit_adjusted"
    )
    assert views.remedy({"class_weight": {"effective_number": 0.99}, "sample_weight": [1, 2]}) == (
        "cross_entropy, class_weight effective_number, inline sample_weight"
    )


def test_minority_recall_is_the_recall_of_the_class_with_fewest_training_samples() -> None:
    scores = {"train_class_counts": [500, 12, 12], "per_class_recall": [0.99, 0.4, 0.7]}
    assert views.minority_recall(scores) == 0.4  # the first of a tie, as the sweep table
    assert views.minority_recall(None) is None
    assert (
        views.minority_recall({"train_class_counts": [5, 1], "per_class_recall": [1, None]}) is None
    )


def test_the_heat_map_normalises_each_row_and_survives_an_empty_one() -> None:
    heat = views.heat_map([[8, 2], [0, 0]])
    assert [c["text"] for c in heat["counts"][0]] == ["8", "2"]
    assert [(c["text"], c["level"]) for c in heat["normalised"][0]] == [("0.80", 8), ("0.20", 2)]
    assert [c["level"] for c in heat["normalised"][1]] == [0, 0]


def test_only_the_spec_fields_that_differ_are_listed() -> None:
    a = {"loss": {"type": "focal", "gamma": 2.0}, "train": {"epochs": 3, "lr": 0.001}}
    b = {"loss": {"type": "focal", "gamma": 1.0}, "train": {"epochs": 3, "lr": 0.001}}
    c = {"loss": {"type": "focal", "gamma": 2.0}, "train": {"epochs": 3, "lr": 0.01}}
    assert views.differing_fields([a, b, c]) == [
        ("loss.gamma", [2.0, 1.0, 2.0]),
        ("train.lr", [0.001, 0.001, 0.01]),
    ]
    assert views.differing_fields([a, a]) == []


def test_a_page_shows_inline_weights_by_length_and_counts_both_stages() -> None:
    spec = {"sample_weight": [0.5] * 1000, "train": {"epochs": 4, "stage2": {"epochs": 2}}}
    assert views.shown_spec(spec)["sample_weight"] == "<1000 inline values>"
    assert views.epochs_total(spec) == 6
    assert views.epochs_total({"train": {"epochs": 3, "stage2": None}}) == 3


def test_recall_rows_match_classes_by_name_across_jobs() -> None:
    def metrics(*rows: tuple[int, str, float]) -> dict[str, object]:
        per_class = [{"class": c, "name": n, "recall": r} for c, n, r in rows]
        return {"final": {"per_class": per_class}}

    two = metrics((0, "cat", 0.9), (1, "dog", 0.5))
    three = metrics((0, "cat", 0.8), (1, "eel", 0.1), (2, "dog", 0.7))
    assert views.recall_rows([two, three, None]) == [
        ("cat", [0.9, 0.8, None]),
        ("dog", [0.5, 0.7, None]),
        ("eel", [None, 0.1, None]),
    ]
