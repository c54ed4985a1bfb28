"""What one upload costs the API process in memory: a deflate bomb (a few hundred KB that
expand to hundreds of MB, within the caps) is checked a chunk at a time at upload, and
validate and submit read only its labels. Measured on the real API process's peak
resident size (VmHWM), which no later free can hide."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.processes import Service

ROWS, COLUMNS = 96 * 2**10, 1024  # float32 zeros: 384 MiB once decompressed
MIB = 2**20


def deflate_bomb(path: Path) -> None:
    """An .npz whose x_train is ROWS x COLUMNS float32 zeros, written a chunk at a time so
    that the test itself never holds it."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("x_train.npy", "w", force_zip64=True) as member:
            header = {"descr": "<f4", "fortran_order": False, "shape": (ROWS, COLUMNS)}
            np.lib.format.write_array_header_1_0(member, header)
            chunk = bytes(4 * COLUMNS * 1024)
            for _ in range(ROWS // 1024):
                member.write(chunk)
        y = np.arange(ROWS) % 2
        rest = {"y_train": y, "x_test": np.zeros((10, COLUMNS), np.float32), "y_test": y[:10]}
        for name, array in rest.items():
            buffer = io.BytesIO()
            np.save(buffer, array)
            archive.writestr(f"{name}.npy", buffer.getvalue())


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    service = Service(tmp_path, f"sqlite:///{tmp_path / 'counterweight.db'}")
    service.start_api()
    try:
        yield service
    finally:
        service.stop()


def test_a_deflate_bomb_upload_never_inflates_in_the_api(service: Service, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.npz"
    deflate_bomb(bomb)
    assert bomb.stat().st_size < 2 * MIB
    # Warmed up on a small upload first: the first validate imports what checks need.
    small = tmp_path / "small.npz"
    y = np.arange(40) % 2
    np.savez(
        small,
        x_train=np.zeros((40, 4), np.float32),
        y_train=y,
        x_test=np.zeros((4, 4), np.float32),
        y_test=y[:4],
    )
    warm_up = service.http.post("/v1/datasets", files={"file": ("s.npz", small.read_bytes())})
    warm_spec = {"dataset": {"name": "uploaded", "id": warm_up.json()["id"]}}
    assert service.http.post("/v1/jobs/validate", json=warm_spec).status_code == 200
    api = service.processes[0].pid
    before = peak_rss_bytes(api)
    with bomb.open("rb") as file:
        uploaded = service.http.post("/v1/datasets", files={"file": ("bomb.npz", file)})
    assert uploaded.status_code == 201, uploaded.text
    spec = {"dataset": {"name": "uploaded", "id": uploaded.json()["id"]}, "train": {"epochs": 1}}
    for _ in range(3):
        validated = service.http.post("/v1/jobs/validate", json=spec)
        assert validated.status_code == 200, validated.text
    assert service.http.post("/v1/jobs", json=spec).status_code == 202
    grown = peak_rss_bytes(api) - before
    assert grown < 64 * MIB, f"the API's peak memory grew by {grown / MIB:.0f} MiB"
