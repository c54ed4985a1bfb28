"""Receiving an upload for POST /v1/datasets: the multipart body streamed to a temp file,
checked, moved into place under a new id, sent to the artifact store, and recorded.

The upload is streamed straight to a temp file under the home while its bytes are
counted, so the cap holds before the file is whole and nothing large is kept in
memory or in the system's temp directory. Checks (service.data.uploads), the move
into place and the database row happen in a worker thread (store_upload).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from counterweight.service.api.storage_calls import StorageCalls
from counterweight.service.data.uploads import inspect_npz, new_upload_file, upload_key, upload_path
from counterweight.service.errors import DatasetError, StorageError, UploadTooLarge
from counterweight.service.settings import Settings
from counterweight.service.storage import Storage, storage_for
from counterweight.service.store.datasets import add_dataset
from counterweight.service.store.engine import transaction
from counterweight.service.store.models import Dataset

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

# Room for the multipart boundaries and part headers around the file itself.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
MAX_FILENAME = 255  # the datasets.filename column's length
HOW_TO_SEND = "send the .npz as the multipart/form-data field 'file' (curl -F file=@data.npz)"


@dataclass(frozen=True)
class Received:
    path: Path
    filename: str | None
    size: int


class _FilePart:
    """python_multipart callbacks: bytes of the `file` part are queued for the disk and
    counted against the cap; other parts are read past and dropped."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.pending: list[bytes] = []
        self.seen = False
        self.filename: str | None = None
        self.size = 0
        self.finished = False  # the closing boundary arrived
        self._in_file = False
        self._header = b""
        self._value = b""
        self._disposition = b""

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._disposition = b""

    # python_multipart bounds each header line (4 kB) and their count, so these stay small.
    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        if self._header.lower() == b"content-disposition":
            self._disposition = self._value
        self._header = self._value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._in_file = options.get(b"name") == b"file"
        if not self._in_file:
            return
        if self.seen:
            raise DatasetError("file: sent more than once; send one .npz per request")
        self.seen = True
        filename = options.get(b"filename")
        # Kept for display only: undecodable bytes, NUL and other control characters
        # (which Postgres or a terminal would choke on) are dropped, the length capped.
        if filename:
            decoded = filename.decode("utf-8", "replace")
            self.filename = "".join(c for c in decoded if c.isprintable())[:MAX_FILENAME]
        else:
            self.filename = None

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self.size += end - start
            if self.size > self.cap:
                raise UploadTooLarge(_too_large(self.cap))
            self.pending.append(data[start:end])

    def _part_end(self) -> None:
        self._in_file = False

    def _end(self) -> None:
        self.finished = True


def _too_large(cap: int) -> str:
    return f"file: larger than the upload limit of {cap} bytes (COUNTERWEIGHT_MAX_UPLOAD_BYTES)"


async def receive(request: Request, home: Path, cap: int) -> Received:
    """Stream the `file` field of a multipart body into a temp file under `home`."""
    media_type, params = parse_options_header(request.headers.get("content-type"))
    if media_type != b"multipart/form-data" or b"boundary" not in params:
        raise DatasetError(f"file: missing; {HOW_TO_SEND}")
    body_cap = cap + MULTIPART_OVERHEAD_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > body_cap:
        raise UploadTooLarge(_too_large(cap))  # refused before reading a byte

    part = _FilePart(cap)
    parser = MultipartParser(params[b"boundary"], part.callbacks())
    try:
        out, path = await run_in_threadpool(new_upload_file, home)
    except OSError as exc:
        raise cannot_store(exc) from exc
    received = 0
    try:
        with out:
            async for chunk in request.stream():
                received += len(chunk)
                if received > body_cap:
                    raise UploadTooLarge(_too_large(cap))
                parser.write(chunk)
                if part.pending:
                    data = b"".join(part.pending)
                    part.pending.clear()
                    await run_in_threadpool(out.write, data)
            parser.finalize()
        if not part.seen:
            raise DatasetError(f"file: missing; {HOW_TO_SEND}")
        if not part.finished:
            raise DatasetError("file: the multipart body ended before its closing boundary")
    except FormParserError as exc:
        path.unlink(missing_ok=True)
        raise DatasetError(f"file: the body is not valid multipart/form-data ({exc})") from exc
    except OSError as exc:
        with suppress(OSError):  # a file system gone read-only will not delete it either
            path.unlink(missing_ok=True)
        raise cannot_store(exc) from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Received(path, part.filename, part.size)


def cannot_store(exc: OSError) -> StorageError:
    """The home refused the upload's file (read-only, full, failing): the server's
    trouble, a 503, not a 500."""
    return StorageError(f"file: the service cannot store uploads now ({exc.strerror or exc})")


def store_upload(
    received: Received,
    sessions: sessionmaker[Session],
    settings: Settings,
    tenant: str,
    calls: StorageCalls,
) -> Dataset:
    summary = inspect_npz(received.path, settings.max_upload_array_bytes, settings.max_vocabulary)
    storage = storage_for(settings)
    with (
        published(received.path, settings.home, storage, calls) as dataset_id,
        transaction(sessions) as session,
    ):
        return add_dataset(
            session, dataset_id, received.filename, summary, received.size, tenant=tenant
        )


@contextmanager
def published(temp: Path, home: Path, storage: Storage, calls: StorageCalls) -> Iterator[str]:
    """Move a checked temp file into place under a new id and into the artifact store
    (workers on other hosts read it there); remove it again if the block fails (e.g.
    the row's commit), so that no file exists without its row. The store is written
    through `calls`, and waited for until it answers (an upload stored after a 503
    would be a file without a row)."""
    dataset_id = uuid.uuid4().hex
    final = upload_path(home, dataset_id)
    try:
        try:
            os.replace(temp, final)
            # Stored for good before the row commits: on disk (local) or in the bucket.
            what = "file: storing the upload in the artifact store"
            calls.run(what, storage.upload, upload_key(dataset_id), final, until_done=True)
        except OSError as exc:
            raise cannot_store(exc) from exc
        yield dataset_id
    except BaseException:
        with suppress(OSError):
            final.unlink(missing_ok=True)
        raise
