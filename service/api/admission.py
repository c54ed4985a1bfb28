"""What a job spec must pass before it is queued: the caps on what one request may ask
(settings COUNTERWEIGHT_MAX_*), the caller's right to the data it names, the data
itself, and the size of the model it would build.

Each refusal is a 422 naming the field, the value sent and the cap, and the setting
that raises it. The model is sized from its shapes (service.architectures), never
built: the API process does not import torch to admit a job.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from counterweight.service.api.auth import Principal
from counterweight.service.architectures import (
    arch_kwargs,
    augment_enabled,
    check_arch_input,
    count_parameters,
)
from counterweight.service.data.sequences import SequenceSplits, plan_sequence_splits
from counterweight.service.data.splits import SplitPlan, plan_splits
from counterweight.service.errors import LimitExceeded
from counterweight.service.rebalance.plan import Plan, plan
from counterweight.service.settings import Settings
from counterweight.service.spec import JobSpec
from counterweight.service.store.datasets import check_upload_usable
from counterweight.service.store.engine import read_only


def _over(field: str, value: int, cap: int, setting: str, unit: str = "") -> LimitExceeded:
    return LimitExceeded(
        f"{field}: {value}{unit} is more than this service allows ({cap}{unit}, "
        f"COUNTERWEIGHT_{setting})"
    )


def check_spec(
    spec: JobSpec, *, max_epochs: int, max_batch_size: int, max_inline_weights: int
) -> None:
    """The caps a spec can be checked against without its data."""
    if spec.train.epochs > max_epochs:
        raise _over("train.epochs", spec.train.epochs, max_epochs, "MAX_EPOCHS")
    if spec.train.batch_size > max_batch_size:
        raise _over("train.batch_size", spec.train.batch_size, max_batch_size, "MAX_BATCH_SIZE")
    if isinstance(spec.sample_weight, list) and len(spec.sample_weight) > max_inline_weights:
        raise LimitExceeded(
            f"sample_weight: {len(spec.sample_weight)} inline weights is more than this "
            f"service allows ({max_inline_weights}, COUNTERWEIGHT_MAX_INLINE_WEIGHTS); put "
            'them in the uploaded dataset as its sample_weight array and send "from_dataset"'
        )


def check_model(spec: JobSpec, input_shape: Sequence[int], num_classes: int, cap: int) -> None:
    """Refuse a model with more than `cap` trainable parameters."""
    kwargs = dict(sorted(arch_kwargs(spec.model).items()))
    count = count_parameters(spec.model.arch, kwargs, tuple(input_shape), num_classes)
    if count > cap:
        raise LimitExceeded(
            f"model: {spec.model.arch} with {kwargs or 'its fixed layers'} on inputs of "
            f"shape {tuple(input_shape)} has {count:,} parameters, more than this service "
            f"allows ({cap:,}, COUNTERWEIGHT_MAX_MODEL_PARAMETERS)"
        )


def split(spec: JobSpec, data_root: Path, home: Path | None) -> SplitPlan | SequenceSplits:
    """Split the data as the worker will (row numbers only, no inputs read), and check
    that the model and augmentation fit its inputs; raises DatasetError. `data_root` and
    `home` as for service.data.splits.plan_splits."""
    if spec.task == "sequence_labeling":
        sentences = plan_sequence_splits(spec, home)
        augment_enabled(spec, sentences.train.words.shape[1:])  # refuses augment: true
        return sentences
    rows = plan_splits(spec, data_root, home, inputs=False)
    check_arch_input(spec.model.arch, rows.input_shape)
    augment_enabled(spec, rows.input_shape)  # refuses augment: true on non-images
    return rows


def resolve(spec: JobSpec, data_root: Path, home: Path | None = None) -> Plan:
    """What the spec resolves to on its data (service.rebalance.plan); raises DatasetError
    for what cannot run."""
    return plan(spec, split(spec, data_root, home))


def admit(
    spec: JobSpec, settings: Settings, sessions: sessionmaker[Session], principal: Principal
) -> Plan:
    """What a spec must pass before it is queued: the limits, the caller's right to the
    data it names (another tenant's upload reads as missing), the data itself."""
    check_spec(
        spec,
        max_epochs=settings.max_epochs,
        max_batch_size=settings.max_batch_size,
        max_inline_weights=settings.max_inline_weights,
    )
    if spec.dataset.id is not None:
        with read_only(sessions) as session:
            check_upload_usable(session, spec.dataset.id, principal.scope)
    splits = split(spec, settings.resolved_data_root, settings.home)
    resolved = plan(spec, splits)
    if isinstance(splits, SplitPlan):
        check_model(spec, splits.input_shape, splits.num_classes, settings.max_model_parameters)
    return resolved
