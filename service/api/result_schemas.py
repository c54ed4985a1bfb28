"""The shapes of a job's results (DESIGN.md section 5) and of a sweep's table, for
/openapi.json: clients generated from it get typed metrics, cards and tables.

The worker writes these as JSON (workers/training); the API serves them as stored, so
these models describe them rather than rebuild them. "More fields are welcome" (DESIGN.md
section 5): every model allows fields it does not name. Values no JSON holds (NaN) are
null, hence `float | None`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from counterweight.service.store.models import JobStatus

Score = float | None  # null where undefined (a class absent from the split)
Interval = list[float] | None  # [low, high]; null where never defined


class Open(BaseModel):
    """A result object: the names below are fixed, more may come."""

    model_config = ConfigDict(extra="allow")


class EpochScores(Open):
    accuracy: Score
    balanced_accuracy: Score
    macro_f1: Score
    g_mean: Score
    per_class_recall: list[Score]


class HistoryRow(Open):
    epoch: int
    train_loss: Score
    val_loss: Score
    val: EpochScores = Field(description="The validation split's scores after this epoch.")
    stage: int | None = Field(None, description="Two-stage jobs: 1 or 2.")


class ClassScores(Open):
    # `class` is a Python keyword: `class_` in code, `class` on the wire.
    class_: int = Field(alias="class")
    name: str
    precision: Score
    recall: Score
    f1: Score
    support: int


class Intervals(Open):
    balanced_accuracy: Interval
    per_class_recall: list[Interval]
    resamples: int


class ShotGroup(Open):
    accuracy: Score = Field(description="Mean test recall of the group's classes.")
    classes: list[int]


class FinalScores(Open):
    """The test split's evaluation of the selected model."""

    accuracy: Score
    balanced_accuracy: Score
    macro_f1: Score
    g_mean: Score
    per_class: list[ClassScores]
    per_class_recall: list[Score]
    confusion_matrix: list[list[int]]
    pr_auc_minority: Score = None
    token_accuracy: Score = Field(None, description="Sequence labeling: accuracy over words.")
    ci95: Intervals | None = None
    shot_accuracy: dict[str, ShotGroup] | None = Field(
        None, description="`many`, `medium`, `few`: three or more classes only."
    )


class Selection(Open):
    rule: str
    reason: str | None = None
    smoothing_epochs: int | None = None


class Decision(Open):
    rule: str = Field(description="argmax, logit_adjusted or threshold.")
    bias: list[float] = Field(description="Added to the logits before the argmax.")
    tau: float | None = None
    threshold: float | None = None
    val_score: Score = None
    tuned_for: str | None = None


class JobMetrics(Open):
    """GET /v1/jobs/{id}/metrics (DESIGN.md section 5)."""

    history: list[HistoryRow]
    final: FinalScores
    final_argmax: FinalScores | None = Field(
        None, description="The untuned model's scores, when `decision` is not argmax."
    )
    decision: Decision | None = Field(None, description="Classification only.")
    selected_epoch: int
    select_by: str
    selection: Selection | None = None
    stage1_selected_epoch: int | None = None
    train_class_counts: list[int]
    class_weight: list[Score]
    epochs_trained: int
    early_stopped: bool
    resumed_from_epoch: int | None = None
    plots: list[str] = Field(default_factory=list, description="Names of the job's plots.")
    wall_seconds: float | None = None
    device: str | None = None


class Normalization(Open):
    per: str
    mean: list[float]
    std: list[float]


class ModelCard(Open):
    """GET /v1/jobs/{id}/model/card: what is needed to rebuild and use the model."""

    arch: str
    model_kwargs: dict[str, Any] = Field(
        description="The arch's keyword arguments, as counterweight.workers.training.models "
        "takes them (they differ by arch)."
    )
    class_names: list[str]
    task: str | None = None
    input_shape: list[int] | None = Field(None, description="Classification: one input's shape.")
    input: str | None = Field(None, description="What an input is, in words.")
    normalization: Normalization | None = None
    decision: Decision | None = None
    train_class_counts: list[int] | None = None
    spec: dict[str, Any] = Field(description="The job spec with its defaults.")
    selected_epoch: int
    select_by: str
    selection: Selection | None = None
    stage1_selected_epoch: int | None = None
    metrics: FinalScores


# --- sweeps ------------------------------------------------------------------------------


class SweepProgress(BaseModel):
    ended: int
    total: int
    fraction: float
    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int


class MeanStd(BaseModel):
    mean: float | None
    std: float | None = Field(description="Sample std (ddof=1); null with fewer than 2.")


class SweepRow(BaseModel):
    cell: dict[str, Any] = Field(
        description="The grid values of this cell, as written (train.seed left out)."
    )
    n: int = Field(description="Succeeded jobs.")
    jobs: list[str]
    balanced_accuracy: MeanStd
    macro_f1: MeanStd
    minority_recall: MeanStd


assert set(SweepProgress.model_fields) >= {s.value for s in JobStatus}  # a count per status
