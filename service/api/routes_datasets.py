"""/v1/datasets: upload an `.npz`, list uploaded and built-in datasets, read one.

The upload is streamed straight to a temp file under the home while its bytes
are counted, so the cap holds before the file is whole and nothing large is
kept in memory or in the system's temp directory. Checks, the move into place
and the database row happen in a worker thread (service.uploads).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from service.api.deps import PrincipalDep, SessionsDep, SettingsDep
from service.api.schemas import as_utc
from service.dataset_sources import TORCHVISION_LAYOUTS, expected_files
from service.datasets import DatasetError
from service.db.engine import read_only, transaction
from service.db.models import Dataset, DatasetKind
from service.npz_archive import UploadTooLarge
from service.settings import Settings
from service.storage import storage_for
from service.uploads import (
    DatasetNotFound,
    add_dataset,
    get_dataset,
    inspect_npz,
    list_datasets,
    new_upload_file,
    published,
)

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

# Room for the multipart boundaries and part headers around the file itself.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
HOW_TO_SEND = "send the .npz as the multipart/form-data field 'file' (curl -F file=@data.npz)"


class UploadedDatasetOut(BaseModel):
    id: str
    source: Literal["uploaded"] = "uploaded"
    kind: DatasetKind
    available: bool = True
    dataset: dict[str, str]  # how a job spec names it
    filename: str | None
    shapes: dict[str, list[int]]
    class_counts: dict[str, list[int]]
    num_classes: int
    class_names: list[str] | None  # null: the file has none
    has_sample_weight: bool
    size_bytes: int
    created_at: datetime

    @classmethod
    def of(cls, row: Dataset) -> UploadedDatasetOut:
        return cls(
            id=row.id,
            kind=row.kind,
            dataset={"name": "uploaded", "id": row.id},
            filename=row.filename,
            shapes=row.shapes,
            class_counts=row.class_counts,
            num_classes=row.num_classes,
            class_names=row.class_names,
            has_sample_weight=row.has_sample_weight,
            size_bytes=row.size_bytes,
            created_at=as_utc(row.created_at) or row.created_at,
        )


class BuiltinDatasetOut(BaseModel):
    id: str  # the name a job spec uses as dataset.name
    source: Literal["builtin"] = "builtin"
    kind: Literal["images", "image_folder"]
    available: bool
    dataset: dict[str, str]
    location: str | None  # where its files are expected; null: ships with the service
    expected: str


class DatasetPage(BaseModel):
    data: list[BuiltinDatasetOut | UploadedDatasetOut]
    next_cursor: str | None = None


BUILTIN_NAMES = ("digits", "mnist", "fashion_mnist", "cifar10")
IMAGE_FOLDER_EXPECTED = (
    "any folder under the data root with train/<class>/* and test/<class>/* images; "
    'name it in a job as {"name": "image_folder", "path": "<folder>"}'
)


def _builtin(name: str, data_root: Path) -> BuiltinDatasetOut:
    """A built-in and whether its files are there (checked by name, nothing decoded)."""
    if name == "digits":
        return BuiltinDatasetOut(
            id=name,
            kind="images",
            available=True,
            dataset={"name": name},
            location=None,
            expected="scikit-learn's handwritten digits; always available",
        )
    layout = TORCHVISION_LAYOUTS[name]
    files = expected_files(name, data_root)
    return BuiltinDatasetOut(
        id=name,
        kind="images",
        available=all(file.is_file() for file in files),
        dataset={"name": name},
        location=str(data_root / layout.folder),
        expected=f"torchvision's {layout.title} files: {', '.join(layout.files)}",
    )


def _builtins(data_root: Path) -> list[BuiltinDatasetOut]:
    listed = [_builtin(name, data_root) for name in BUILTIN_NAMES]
    folder = BuiltinDatasetOut(
        id="image_folder",
        kind="image_folder",
        available=data_root.is_dir(),
        dataset={"name": "image_folder", "path": "<folder under the data root>"},
        location=str(data_root),
        expected=IMAGE_FOLDER_EXPECTED,
    )
    return [*listed, folder]


@dataclass(frozen=True)
class _Received:
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
        self.filename = filename.decode("utf-8", "replace") if filename else None

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


async def _receive(request: Request, home: Path, cap: int) -> _Received:
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
    out, path = await run_in_threadpool(new_upload_file, home)
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
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return _Received(path, part.filename, part.size)


def _store(
    received: _Received, sessions: sessionmaker[Session], settings: Settings, tenant: str
) -> Dataset:
    summary = inspect_npz(received.path, settings.max_upload_array_bytes)
    storage = storage_for(settings)
    with (
        published(received.path, settings.home, storage) as dataset_id,
        transaction(sessions) as session,
    ):
        return add_dataset(
            session, dataset_id, received.filename, summary, received.size, tenant=tenant
        )


UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


@router.post(
    "",
    status_code=201,
    openapi_extra=UPLOAD_BODY,
    responses={413: {"description": "Larger than the upload limits"}},
)
async def upload_dataset(
    request: Request,
    response: Response,
    sessions: SessionsDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> UploadedDatasetOut:
    """Upload an `.npz` with x_train, y_train, x_test, y_test and optionally sample_weight
    (one weight per x_train row) and class_names. x: (N, D) float features, or (N, H, W) /
    (N, C, H, W) images, uint8 0..255 or float in [0, 1]; y: integer labels 0..k-1."""
    received = await _receive(request, settings.home, settings.max_upload_bytes)
    try:
        dataset = await run_in_threadpool(_store, received, sessions, settings, principal.tenant)
    finally:
        # Gone already when stored (os.replace moved it); removes it after a refusal.
        received.path.unlink(missing_ok=True)
    response.headers["Location"] = f"/v1/datasets/{dataset.id}"
    return UploadedDatasetOut.of(dataset)


@router.get("")
def list_all(sessions: SessionsDep, settings: SettingsDep, principal: PrincipalDep) -> DatasetPage:
    """The built-in datasets with whether their files are present, then uploads, newest
    first. Not paged: next_cursor is always null."""
    with read_only(sessions) as session:
        uploads = [UploadedDatasetOut.of(row) for row in list_datasets(session, principal.scope)]
    return DatasetPage(data=[*_builtins(settings.resolved_data_root), *uploads])


@router.get("/{dataset_id}", responses={404: {"description": "No dataset with this id"}})
def read_dataset(
    dataset_id: str, sessions: SessionsDep, settings: SettingsDep, principal: PrincipalDep
) -> BuiltinDatasetOut | UploadedDatasetOut:
    """An upload by id, or a built-in by name (digits, mnist, fashion_mnist, cifar10,
    image_folder)."""
    for builtin in _builtins(settings.resolved_data_root):
        if builtin.id == dataset_id:
            return builtin
    with read_only(sessions) as session:
        try:
            return UploadedDatasetOut.of(get_dataset(session, dataset_id, principal.scope))
        except DatasetNotFound:
            raise DatasetNotFound(
                f"no dataset {dataset_id!r}: not an upload id, nor a built-in name "
                f"({', '.join(BUILTIN_NAMES)}, image_folder)"
            ) from None
