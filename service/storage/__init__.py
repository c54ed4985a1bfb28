"""Artifact storage shared by every host: the API, and workers on any machine.

`storage_for(settings)` is the store the settings name (COUNTERWEIGHT_STORAGE), made
once per process and configuration: S3 clients are slow to build and safe to share.
"""

from __future__ import annotations

import threading
from functools import lru_cache

from counterweight.service.settings import Settings
from counterweight.service.storage.base import Storage, check_key
from counterweight.service.storage.local import LocalStorage

__all__ = ["LocalStorage", "Storage", "check_key", "storage_for"]

# lru_cache alone may build a value twice when two threads ask at once (the API's
# janitor and a request, at start-up): one client per configuration, as promised.
_MAKING = threading.Lock()


def storage_for(settings: Settings) -> Storage:
    if settings.storage == "local":
        return LocalStorage(settings.resolved_storage_dir)
    assert settings.s3_bucket is not None  # Settings refuses s3 without a bucket
    secret = settings.s3_secret_access_key
    # An empty value (a compose file's unset ${VAR:-}) means unset: boto3's defaults.
    with _MAKING:
        return _s3(
            settings.s3_bucket,
            settings.s3_prefix,
            settings.s3_endpoint_url or None,
            settings.s3_region or None,
            settings.s3_access_key_id or None,
            (secret.get_secret_value() if secret else None) or None,
            settings.s3_connect_timeout_seconds,
            settings.s3_read_timeout_seconds,
            settings.s3_max_attempts,
        )


@lru_cache
def _s3(
    bucket: str,
    prefix: str,
    endpoint_url: str | None,
    region: str | None,
    access_key_id: str | None,
    secret_access_key: str | None,
    connect_timeout: float,
    read_timeout: float,
    max_attempts: int,
) -> Storage:
    from counterweight.service.storage.s3 import S3Storage  # boto3 loads only where S3 is used

    return S3Storage(
        bucket,
        prefix=prefix,
        endpoint_url=endpoint_url,
        region=region,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_attempts=max_attempts,
    )
