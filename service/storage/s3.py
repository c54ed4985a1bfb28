"""Storage in an S3-compatible bucket (AWS S3, MinIO, Ceph, ...) through boto3.

Objects are `<prefix><key>`. An upload is one PUT (or a multipart upload completed
at once), so readers never see part of a file; a download goes to a temporary file
beside the target and is renamed into place.

A server that does not answer (refused, timed out, 5xx) is StoreUnavailable, an outage
that workers wait out; any other failure is StorageError (store_unreachable tells them
apart). A multipart upload that fails while the server is away is aborted once it
answers again; one whose process was killed is left to the bucket's lifecycle rule.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import Boto3Error, RetriesExceededError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
)
from botocore.exceptions import ConnectionError as EndpointUnreachable

from counterweight.service.errors import StorageError, StoreUnavailable
from counterweight.service.storage.base import Storage, check_folder, check_key

log = logging.getLogger(__name__)

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
# Answers that blame the server or the moment, not the request: try again later.
_SERVER_BUSY = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling"}
# boto3 uploads a file this large in parts (a multipart upload), smaller ones in one PUT.
MULTIPART_THRESHOLD = TransferConfig().multipart_threshold
DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes


def store_unreachable(exc: BaseException | None) -> bool:
    """Whether `exc`, or an error it wraps, says the store did not answer: no connection,
    a timeout, a connection dropped mid-answer, a 5xx or a throttle. A missing bucket, no
    permission or a bad request is the request's own fault, and not this."""
    for _ in range(8):  # boto3 wraps an error once or twice; never follow a cycle
        if exc is None:
            return False
        if isinstance(exc, EndpointUnreachable | HTTPClientError | IncompleteReadError):
            return True  # refused, timed out (connecting or reading), cut off
        if isinstance(exc, ClientError):
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            return status >= 500 or exc.response.get("Error", {}).get("Code") in _SERVER_BUSY
        # upload_file re-raises a ClientError as S3UploadFailedError (the ClientError is its
        # context), download_file retries that ran out as RetriesExceededError.
        if isinstance(exc, RetriesExceededError):
            exc = exc.last_exception
        else:
            exc = exc.__cause__ or exc.__context__
    return False


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
        connect_timeout: float = 2.0,
        read_timeout: float = 10.0,
        max_attempts: int = 3,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        # Objects whose multipart upload failed with the store away (upload): to abort.
        self._unfinished: set[str] = set()
        self._lock = threading.Lock()
        # Short (COUNTERWEIGHT_S3_*, whose defaults these are): 60 s reads tried 6 times held
        # an API request to a server that accepted connections and never answered for 6 min.
        config = Config(
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
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

    def _failed(self, doing: str, exc: Exception) -> StorageError:
        """StoreUnavailable when the store did not answer (an outage: wait for it), else
        StorageError."""
        message = f"{doing} s3://{self.bucket}: {exc}"
        return StoreUnavailable(message) if store_unreachable(exc) else StorageError(message)

    def upload(self, key: str, source: Path) -> None:
        obj = self._object(key)
        try:
            self.client.upload_file(str(source), self.bucket, obj)
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            failure = self._failed(f"uploading {key} to", exc)
            if (
                isinstance(failure, StoreUnavailable)
                and source.stat().st_size >= MULTIPART_THRESHOLD
            ):
                # boto3 aborts a multipart upload that fails, but that abort needs the
                # store too: the parts would stay in the bucket, billed, for ever.
                with self._lock:
                    self._unfinished.add(obj)
            raise failure from exc
        self._abort_unfinished()

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
            raise self._failed(f"downloading {key} from", exc) from exc
        except (BotoCoreError, Boto3Error) as exc:
            raise self._failed(f"downloading {key} from", exc) from exc
        finally:
            Path(tmp).unlink(missing_ok=True)
        self._abort_unfinished()
        return True

    def _abort_unfinished(self) -> None:
        """Abort the multipart uploads that failed while the store was away, now that it
        answers. (A worker killed mid-upload leaves its parts too: the bucket's lifecycle
        rule removes those, README "Artifact storage".)"""
        with self._lock:
            pending = sorted(self._unfinished)
        for obj in pending:
            try:
                listed = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=obj)
                for unfinished in listed.get("Uploads", []):
                    if unfinished["Key"] == obj:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=obj, UploadId=unfinished["UploadId"]
                        )
                        log.info("aborted an incomplete multipart upload of %s", obj)
            except (BotoCoreError, ClientError) as exc:
                log.warning("incomplete upload of %s not aborted yet: %s", obj, exc)
                return
            with self._lock:
                self._unfinished.discard(obj)

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._object(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _NOT_FOUND:
                return False
            raise self._failed(f"looking for {key} in", exc) from exc
        except BotoCoreError as exc:
            raise self._failed(f"looking for {key} in", exc) from exc
        return True

    def list_files(self, prefix: str) -> Iterator[tuple[str, int]]:
        start = self.prefix + check_folder(prefix)
        try:
            pages = self.client.get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.bucket, Prefix=start):
                for item in page.get("Contents", []):
                    yield item["Key"][len(self.prefix) :], int(item["Size"])
        except (BotoCoreError, ClientError) as exc:
            raise self._failed(f"listing {prefix} in", exc) from exc

    def delete(self, key: str) -> None:
        try:  # S3 answers a DELETE of a missing key as a success
            self.client.delete_object(Bucket=self.bucket, Key=self._object(key))
        except (BotoCoreError, ClientError) as exc:
            raise self._failed(f"removing {key} from", exc) from exc

    def delete_folder(self, prefix: str) -> int:
        keys = [key for key, _ in self.list_files(prefix)]
        try:
            for at in range(0, len(keys), DELETE_BATCH):
                batch = [{"Key": self.prefix + key} for key in keys[at : at + DELETE_BATCH]]
                answer = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
                if answer.get("Errors"):
                    error = answer["Errors"][0]
                    raise StorageError(
                        f"removing {error.get('Key')} from s3://{self.bucket}: "
                        f"{error.get('Code')} {error.get('Message')}"
                    )
        except (BotoCoreError, ClientError) as exc:
            raise self._failed(f"removing {prefix} from", exc) from exc
        return len(keys)
