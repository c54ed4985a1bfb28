"""What a job spec must pass before it is queued: the caps on what one request may ask
(settings COUNTERWEIGHT_MAX_*), the caller's right to the data it names, the data
itself, and the size of the model it would build.

Each refusal is a 422 naming the field, the value sent and the cap, and the setting
that raises it. The model is sized from its shapes (service.architectures), never
built: the API process does not import torch to admit a job.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from counterweight.service.api.auth import Principal
from counterweight.service.api.notify import check_notify
from counterweight.service.api.storage_calls import StorageCalls
from counterweight.service.architectures import (
    arch_kwargs,
    augment_enabled,
    check_arch_input,
    count_parameters,
    count_tagger_parameters,
    head_kwargs,
    tagger_kwargs,
    word_embedding_parameters,
)
from counterweight.service.data.sequences import SequenceSplits, plan_sequence_splits
from counterweight.service.data.splits import SplitPlan, plan_splits
from counterweight.service.errors import DatasetError, LimitExceeded
from counterweight.service.rebalance.plan import Plan, plan
from counterweight.service.settings import Settings
from counterweight.service.spec import JobSpec
from counterweight.service.storage.uploads import upload_stored
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
    stage2 = spec.train.stage2
    if stage2 is not None and spec.train.epochs + stage2.epochs > max_epochs:
        raise LimitExceeded(
            f"train.stage2.epochs: {spec.train.epochs} + {stage2.epochs} epochs in all (train."
            f"epochs + train.stage2.epochs) is more than this service allows ({max_epochs}, "
            "COUNTERWEIGHT_MAX_EPOCHS)"
        )
    if spec.train.batch_size > max_batch_size:
        raise _over("train.batch_size", spec.train.batch_size, max_batch_size, "MAX_BATCH_SIZE")
    if isinstance(spec.sample_weight, list) and len(spec.sample_weight) > max_inline_weights:
        raise LimitExceeded(
            f"sample_weight: {len(spec.sample_weight)} inline weights is more than this "
            f"service allows ({max_inline_weights}, COUNTERWEIGHT_MAX_INLINE_WEIGHTS); put "
            'them in the uploaded dataset as its sample_weight array and send "from_dataset"'
        )


def check_model(spec: JobSpec, splits: SplitPlan | SequenceSplits, cap: int) -> None:
    """Refuse a model with more than `cap` trainable parameters, whatever its arch, counted
    on the job's data: a classifier on its input shape and classes, the tagger on its
    vocabulary (an embedding row per word id, and per character id, up to the largest)."""
    if isinstance(splits, SequenceSplits):
        count, built = _tagger_size(spec, splits)
    else:
        kwargs = dict(sorted({**arch_kwargs(spec.model), **head_kwargs(spec.loss)}.items()))
        count = count_parameters(spec.model.arch, kwargs, splits.input_shape, splits.num_classes)
        built = (
            f"{spec.model.arch} with {kwargs or 'its fixed layers'} on inputs of shape "
            f"{tuple(splits.input_shape)} has {count:,} parameters"
        )
    if count > cap:
        raise LimitExceeded(
            f"model: {built}, more than this service allows ({cap:,}, "
            "COUNTERWEIGHT_MAX_MODEL_PARAMETERS)"
        )


def _tagger_size(spec: JobSpec, splits: SequenceSplits) -> tuple[int, str]:
    """The tagger's parameter count, and a sentence saying where they are."""
    kwargs = {**tagger_kwargs(spec.model), **head_kwargs(spec.loss)}
    count = count_tagger_parameters(
        kwargs, splits.vocab_size, splits.char_vocab_size, splits.num_classes
    )
    fields = {"embedding_dim": spec.model.embedding_dim}
    vocabulary = f"word ids 0..{splits.vocab_size - 1:,}"
    if splits.char_vocab_size:
        fields["char_embedding_dim"] = spec.model.char_embedding_dim
        vocabulary += f" and character ids 0..{splits.char_vocab_size - 1:,}"
    fields |= {"width": spec.model.width, "depth": spec.model.depth}
    words = word_embedding_parameters(kwargs, splits.vocab_size)
    return count, (
        f"bilstm_tagger with {fields} on the upload's {vocabulary} has {count:,} parameters "
        f"({words:,} of them in the word embeddings, a row of embedding_dim per word id)"
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


def check_upload_stored(storage: StorageCalls, settings: Settings, dataset_id: str) -> None:
    """The artifact store, where workers fetch it, holds the upload: checked there, not
    in this host's copy. A store that does not answer is a 503 (StorageRetryLater), not
    a job queued that no worker may be able to run."""
    what = f"dataset.id: looking for upload {dataset_id!r} in the artifact store"
    if not storage.run(what, upload_stored, settings, dataset_id):
        raise DatasetError(
            f"dataset.id: upload {dataset_id!r} is gone from the artifact store, where "
            "workers fetch it; upload the file again and use the new id"
        )


def admit(
    spec: JobSpec,
    settings: Settings,
    sessions: sessionmaker[Session],
    principal: Principal,
    storage: StorageCalls,
    stored_uploads: set[str] | None = None,
) -> Plan:
    """What a spec must pass before it is queued: the limits, the caller's right to the
    data it names (another tenant's upload reads as missing), the data itself.
    `stored_uploads`: uploads this request found in the store already (a sweep's jobs
    share theirs), and adds to."""
    check_spec(
        spec,
        max_epochs=settings.max_epochs,
        max_batch_size=settings.max_batch_size,
        max_inline_weights=settings.max_inline_weights,
    )
    if spec.notify is not None:
        check_notify(spec.notify, settings, sessions, principal.tenant)
    if spec.dataset.id is not None:
        with read_only(sessions) as session:
            check_upload_usable(session, spec.dataset.id, principal.scope)
        if stored_uploads is None or spec.dataset.id not in stored_uploads:
            check_upload_stored(storage, settings, spec.dataset.id)
        if stored_uploads is not None:
            stored_uploads.add(spec.dataset.id)
    splits = split(spec, settings.resolved_data_root, settings.home)
    resolved = plan(spec, splits)
    check_model(spec, splits, settings.max_model_parameters)
    return resolved
