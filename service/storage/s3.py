"""Storage in an S3-compatible bucket (AWS S3, MinIO, Ceph, ...) through boto3.

Objects are `<prefix><key>`. An upload is one PUT (or a multipart upload completed
at once), so readers never see part of a file; a download goes to a temporary file
beside the target and is renamed into place.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from counterweight.service.errors import StorageError
from counterweight.service.storage.base import Storage, check_key

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


class S3Storage(Storage):
    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        config = Config(
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
            # Self-hosted servers (MinIO, moto) serve buckets as paths, not subdomains.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        )
        # A session of its own: boto3's default session is not safe to share across threads.
        self.client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )

    def _object(self, key: str) -> str:
        return self.prefix + check_key(key)

    def upload(self, key: str, source: Path) -> None:
        try:
            self.client.upload_file(str(source), self.bucket, self._object(key))
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"uploading {key} to s3://{self.bucket}: {exc}") from exc

    def download(self, key: str, target: Path) -> bool:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        try:
            self.client.download_file(self.bucket, self._object(key), tmp)
            os.replace(tmp, target)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _NOT_FOUND:
                return False
            raise StorageError(f"downloading {key} from s3://{self.bucket}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"downloading {key} from s3://{self.bucket}: {exc}") from exc
        finally:
            Path(tmp).unlink(missing_ok=True)
        return True
