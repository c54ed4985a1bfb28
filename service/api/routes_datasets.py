"""/v1/datasets: upload an `.npz` (service.api.uploads), list uploaded and built-in
datasets, read one."""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from counterweight.service.api.deps import PrincipalDep, SessionsDep, SettingsDep, StorageCallsDep
from counterweight.service.api.janitor import remove_upload
from counterweight.service.api.schemas import BuiltinDatasetOut, DatasetPage, UploadedDatasetOut
from counterweight.service.api.uploads import receive, store_upload
from counterweight.service.data.torchvision_formats import TORCHVISION_LAYOUTS, expected_files
from counterweight.service.errors import DatasetNotFound
from counterweight.service.store.datasets import get_dataset as find_dataset
from counterweight.service.store.datasets import list_datasets as find_datasets
from counterweight.service.store.engine import read_only, transaction
from counterweight.service.store.lifecycle import check_dataset_unused, delete_dataset_row

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


BUILTIN_NAMES = ("digits", "mnist", "fashion_mnist", "cifar10")
IMAGE_FOLDER_EXPECTED = (
    "any folder under the data root with train/<class>/* and test/<class>/* images; "
    'name it in a job as {"name": "image_folder", "path": "<folder>"}'
)


def _builtin(name: str, data_root: Path) -> BuiltinDatasetOut:
    """A built-in and whether its files are there (checked by name, nothing decoded). Its
    location is relative to the data root: where that lies is the operator's business."""
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
        location=layout.folder,
        expected=f"torchvision's {layout.title} files: {', '.join(layout.files)}",
    )


def _builtins(data_root: Path) -> list[BuiltinDatasetOut]:
    listed = [_builtin(name, data_root) for name in BUILTIN_NAMES]
    folder = BuiltinDatasetOut(
        id="image_folder",
        kind="image_folder",
        available=data_root.is_dir(),
        dataset={"name": "image_folder", "path": "<folder under the data root>"},
        location=".",  # the data root itself: any folder under it
        expected=IMAGE_FOLDER_EXPECTED,
    )
    return [*listed, folder]


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
    storage: StorageCallsDep,
) -> UploadedDatasetOut:
    """Upload an `.npz` with x_train, y_train, x_test, y_test and optionally sample_weight
    (one weight per x_train row) and class_names. x: (N, D) float features, or (N, H, W) /
    (N, C, H, W) images, uint8 0..255 or float in [0, 1]; y: integer labels 0..k-1."""
    received = await receive(request, settings.home, settings.max_upload_bytes)
    try:
        dataset = await run_in_threadpool(
            store_upload, received, sessions, settings, principal.tenant, storage
        )
    finally:
        # Gone already when stored (os.replace moved it); removes it after a refusal. On a
        # file system gone read-only it stays: the refusal (503) matters, not the file.
        with suppress(OSError):
            received.path.unlink(missing_ok=True)
    response.headers["Location"] = f"/v1/datasets/{dataset.id}"
    return UploadedDatasetOut.of(dataset)


@router.get("")
def list_datasets(
    sessions: SessionsDep, settings: SettingsDep, principal: PrincipalDep
) -> DatasetPage:
    """The built-in datasets with whether their files are present, then uploads, newest
    first. Not paged: next_cursor is always null."""
    with read_only(sessions) as session:
        uploads = [UploadedDatasetOut.of(row) for row in find_datasets(session, principal.scope)]
    return DatasetPage(data=[*_builtins(settings.resolved_data_root), *uploads])


@router.get("/{dataset_id}", responses={404: {"description": "No dataset with this id"}})
def get_dataset(
    dataset_id: str, sessions: SessionsDep, settings: SettingsDep, principal: PrincipalDep
) -> BuiltinDatasetOut | UploadedDatasetOut:
    """An upload by id, or a built-in by name (digits, mnist, fashion_mnist, cifar10,
    image_folder)."""
    for builtin in _builtins(settings.resolved_data_root):
        if builtin.id == dataset_id:
            return builtin
    with read_only(sessions) as session:
        try:
            return UploadedDatasetOut.of(find_dataset(session, dataset_id, principal.scope))
        except DatasetNotFound:
            raise DatasetNotFound(
                f"no dataset {dataset_id!r}: not an upload id, nor a built-in name "
                f"({', '.join(BUILTIN_NAMES)}, image_folder)"
            ) from None


@router.delete(
    "/{dataset_id}",
    status_code=204,
    response_class=Response,
    responses={
        404: {"description": "No upload with this id"},
        409: {"description": "Queued or running jobs use it"},
    },
)
def delete_dataset(
    dataset_id: str,
    sessions: SessionsDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    storage: StorageCallsDep,
) -> Response:
    """Remove an upload, its file from the artifact store first; 409 naming the jobs
    while queued or running jobs use it (ended jobs keep their results)."""
    with transaction(sessions) as session:
        dataset = check_dataset_unused(session, dataset_id, principal.scope)
        what = f"dataset {dataset_id}: removing its file from the artifact store"
        storage.run(what, remove_upload, settings, dataset_id, until_done=True)
        delete_dataset_row(session, dataset)
    return Response(status_code=204)
