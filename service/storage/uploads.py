"""Uploaded datasets (service.data.uploads) in the artifact store, and this host's copies
of them under <home>/datasets/<id>.npz."""

from __future__ import annotations

from counterweight.service.data.uploads import upload_key, upload_path
from counterweight.service.settings import Settings
from counterweight.service.storage import storage_for


def upload_stored(settings: Settings, dataset_id: str) -> bool:
    """Whether the artifact store, where workers fetch it, holds upload `dataset_id`. A
    copy on this host proves nothing about the store (it may have lost the file, or be
    another bucket); a host without one (an API process that did not receive the upload)
    fetches it, since admission plans the job's splits from it."""
    storage = storage_for(settings)
    key = upload_key(dataset_id)
    local = upload_path(settings.home, dataset_id)
    if local.is_file():
        return storage.exists(key)
    return storage.download(key, local)
