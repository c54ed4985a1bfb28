"""The job spec (DESIGN.md section 4): what a client asks to be trained.

Every model forbids unknown fields so that a typo is a 422 naming the field,
not a silently ignored option. Options the engine does not implement yet are
not accepted here: the spec never promises what the worker cannot do.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator

DatasetName = Literal["digits"]
LossType = Literal["cross_entropy"]
Arch = Literal["mlp"]
SelectBy = Literal["balanced_accuracy", "macro_f1", "g_mean", "minority_recall", "val_loss", "last"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetSpec(StrictModel):
    name: DatasetName = Field(description="Which dataset; `digits` ships with scikit-learn.")
    classes: list[int] | None = Field(
        None,
        min_length=2,
        description="Classes to keep, relabelled 0..k-1 in this order; null keeps all.",
    )
    val_fraction: float = Field(
        0.1, gt=0, lt=0.5, description="Stratified share of training data held out for validation."
    )

    @field_validator("classes")
    @classmethod
    def _distinct(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("classes must be distinct")
        return value


class ImbalanceSpec(StrictModel):
    profile: Literal["none"] = "none"
    seed: int = Field(0, ge=0, le=2**32 - 1)


class LossSpec(StrictModel):
    type: LossType = "cross_entropy"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    reduction: Literal["weighted_mean", "mean"] = "weighted_mean"


class ModelSpec(StrictModel):
    arch: Arch = "mlp"
    width: PositiveInt = Field(256, le=4096, description="Hidden units per layer (mlp).")
    depth: PositiveInt = Field(2, le=8, description="Hidden layers (mlp).")


class TrainSpec(StrictModel):
    epochs: PositiveInt = Field(10, le=10_000)
    batch_size: PositiveInt = Field(128, le=65_536)
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only.")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    select_by: SelectBy = "balanced_accuracy"
    early_stopping_patience: PositiveInt | None = Field(
        None, description="Stop after this many epochs without improving `select_by`."
    )
    device: str = Field(
        "auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto, cpu, cuda or cuda:N."
    )


class JobSpec(StrictModel):
    task: Literal["classification"] = "classification"
    dataset: DatasetSpec
    imbalance: ImbalanceSpec = Field(default_factory=ImbalanceSpec)
    loss: LossSpec = Field(default_factory=LossSpec)
    class_weight: None = Field(None, description="Not supported yet: must be null.")
    sample_weight: None = Field(None, description="Not supported yet: must be null.")
    sampler: Literal["none"] = "none"
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    priority: int = Field(0, ge=-1000, le=1000, description="Higher runs first.")
    max_attempts: int = Field(3, ge=1, le=20)

    def fingerprint(self) -> str:
        """Hash of the spec with defaults filled in: equal specs, equal hash."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()
