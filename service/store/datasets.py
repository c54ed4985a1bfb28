"""Rows of uploaded datasets (`datasets`): what the checks of an upload found, and
whose it is. The arrays themselves are files (service.data.uploads)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from counterweight.service.data.npz import UploadSummary
from counterweight.service.data.uploads import missing_upload
from counterweight.service.errors import DatasetNotFound
from counterweight.service.store.models import DEFAULT_TENANT, Dataset


def add_dataset(
    session: Session,
    dataset_id: str,
    filename: str | None,
    summary: UploadSummary,
    size: int,
    *,
    tenant: str = DEFAULT_TENANT,
) -> Dataset:
    dataset = Dataset(
        id=dataset_id,
        tenant=tenant,
        filename=filename[:255] if filename else None,
        kind=summary.kind,
        shapes=summary.shapes,
        class_counts=summary.class_counts,
        num_classes=summary.num_classes,
        class_names=summary.class_names,
        has_sample_weight=summary.has_sample_weight,
        size_bytes=size,
    )
    session.add(dataset)
    session.flush()
    session.refresh(dataset)  # created_at is the database's
    return dataset


def get_dataset(session: Session, dataset_id: str, tenant: str | None = None) -> Dataset:
    """The upload; with `tenant`, another tenant's is DatasetNotFound, as a missing one."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or (tenant is not None and dataset.tenant != tenant):
        raise DatasetNotFound(f"no dataset {dataset_id!r}")
    return dataset


def check_upload_usable(session: Session, dataset_id: str, tenant: str | None) -> None:
    """A job may name only its tenant's uploads (any, for None); others read as missing."""
    try:
        get_dataset(session, dataset_id, tenant)
    except DatasetNotFound:
        raise missing_upload(dataset_id) from None


def list_datasets(session: Session, tenant: str | None = None) -> Sequence[Dataset]:
    """The uploads of `tenant` (every tenant's for None), newest first."""
    query = select(Dataset).order_by(Dataset.created_at.desc(), Dataset.id.desc())
    if tenant is not None:
        query = query.where(Dataset.tenant == tenant)
    return session.scalars(query).all()
