"""Telling an outage of the artifact store from a request's own fault, against real
stores: moto's S3 server in its own process (killed, stopped) and a directory.

StoreUnavailable (the store did not answer: refused, timed out, 5xx) is what workers
wait out; any other StorageError (no such bucket, no permission) is not.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import ClientError

from counterweight.service.errors import StorageError, StoreUnavailable
from counterweight.service.storage import LocalStorage
from counterweight.service.storage.s3 import S3Storage, store_unreachable
from tests.s3server import BUCKET, S3Server
from tests.tcpproxy import TcpProxy

KEY = "artifacts/jobs/abc123/model.safetensors"


def s3_storage(url: str, bucket: str = BUCKET, **timeouts: float) -> S3Storage:
    return S3Storage(
        bucket,
        prefix="cw/",
        endpoint_url=url,
        region="us-east-1",
        access_key_id="test",
        secret_access_key="test",
        **timeouts,  # type: ignore[arg-type]
    )


def a_file(tmp_path: Path, size: int = 10) -> Path:
    path = tmp_path / "source"
    path.write_bytes(np.random.default_rng(0).bytes(size))
    return path


def test_a_killed_s3_server_is_an_outage_a_missing_key_or_bucket_is_not(tmp_path: Path) -> None:
    source = a_file(tmp_path)
    with S3Server(tmp_path) as server:
        storage = s3_storage(server.url, max_attempts=1)
        assert not storage.download(KEY, tmp_path / "out")  # answered: no such object
        with pytest.raises(StorageError) as refused:
            s3_storage(server.url, bucket="no-such-bucket").upload(KEY, source)
        assert not isinstance(refused.value, StoreUnavailable)  # answered: no such bucket

        server.kill()
        with pytest.raises(StoreUnavailable):
            storage.upload(KEY, source)
        with pytest.raises(StoreUnavailable):
            storage.download(KEY, tmp_path / "out")
        server.restart()
        storage.upload(KEY, source)  # the same client works again at once
        assert storage.download(KEY, tmp_path / "out")


def test_an_s3_server_that_does_not_answer_is_an_outage(tmp_path: Path) -> None:
    with S3Server(tmp_path) as server:
        storage = s3_storage(server.url, read_timeout=1.0, max_attempts=1)
        server.pause()  # connections are accepted, in the kernel's backlog, never answered
        started = time.monotonic()
        try:
            with pytest.raises(StoreUnavailable):
                storage.download(KEY, tmp_path / "out")
        finally:
            server.resume()
        assert time.monotonic() - started < 10


def _raised(make: type[Exception] | None, response: dict[str, object]) -> Exception:
    """The error as boto3 raises it: a ClientError, or one raised while handling it."""
    error: Exception = ClientError(response, "PutObject")
    if make is None:
        return error
    try:
        raise error
    except ClientError:
        try:
            raise make("Failed to upload")  # as boto3's upload_file does, from the handler
        except Exception as wrapped:
            return wrapped


@pytest.mark.parametrize("wrapper", [None, S3UploadFailedError])
@pytest.mark.parametrize(
    ("status", "code", "outage"),
    [
        (500, "InternalError", True),
        (503, "SlowDown", True),
        (400, "RequestTimeout", True),
        (404, "NoSuchBucket", False),
        (403, "AccessDenied", False),
        (400, "InvalidRequest", False),
    ],
)
def test_server_errors_and_throttling_are_outages_refusals_are_not(
    wrapper: type[Exception] | None, status: int, code: str, outage: bool
) -> None:
    response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    assert store_unreachable(_raised(wrapper, response)) is outage


def test_a_multipart_upload_cut_off_by_an_outage_is_aborted_once_the_store_answers(
    tmp_path: Path,
) -> None:
    big = a_file(tmp_path, 9 * 2**20)  # past boto3's 8 MiB threshold: sent in parts
    with S3Server(tmp_path) as server, TcpProxy(server.port) as proxy:
        storage = s3_storage(proxy.url, max_attempts=1)
        # The store goes away once the multipart upload is started: the parts fail,
        # and so does the abort that boto3 sends after them.
        events = storage.client.meta.events
        events.register("after-call.s3.CreateMultipartUpload", lambda **_: proxy.refuse())
        with pytest.raises(StoreUnavailable):
            storage.upload(KEY, big)
        direct = server.client()
        assert len(direct.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])) == 1

        events.unregister("after-call.s3.CreateMultipartUpload")
        proxy.restore()
        storage.upload("artifacts/jobs/abc123/card.json", a_file(tmp_path))  # it answers
        assert direct.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_a_store_directory_that_is_not_there_is_an_outage_a_missing_file_is_not(
    tmp_path: Path,
) -> None:
    source = a_file(tmp_path)
    storage = LocalStorage(tmp_path / "shared")
    (tmp_path / "shared").mkdir()
    assert not storage.download(KEY, tmp_path / "out")
    assert not storage.exists(KEY)

    (tmp_path / "shared").rmdir()  # a shared file system's mount point gone, say
    (tmp_path / "shared").write_bytes(b"")  # and a file in its place: not even mkdir works
    for call in (
        lambda: storage.download(KEY, tmp_path / "out"),
        lambda: storage.upload(KEY, source),
        lambda: storage.exists(KEY),
    ):
        with pytest.raises(StoreUnavailable):
            call()
    # This host's own file missing is not the store's fault: no outage to wait out.
    (tmp_path / "shared").unlink()
    (tmp_path / "shared").mkdir()
    with pytest.raises(FileNotFoundError):
        storage.upload(KEY, tmp_path / "never-written")
