"""Which worker may run which job: a job's `train.device` needs CUDA devices, a worker has some.

A job needs 0 CUDA devices (`auto`, `cpu`: any worker runs it), 1 (`cuda`) or N + 1
(`cuda:N`: device index N must exist); the number is stored with the job
(`jobs.cuda_devices_needed`). A worker has as many as torch sees when it trains on
CUDA, else 0 (`workers.cuda_devices`). The claim (service.store.queue.claim) hands a
worker only jobs that need no more than it has, so a CPU worker leaves a `cuda` job
queued for a GPU worker instead of failing it. A queued job that no live worker can
run says why (`waiting` in GET /v1/jobs/{id}): the fleet it is compared with is one
aggregate over the live workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Float, Select, bindparam, func, select
from sqlalchemy.orm import Session

from counterweight.service.store.models import WorkerRecord
from counterweight.service.store.queue.workers import is_live

# No host has this many devices; a larger index in a spec waits just the same, and
# the cap keeps the stored number inside a 32-bit column on every backend.
MAX_CUDA_DEVICES_NEEDED = 1_000_000


def cuda_devices_needed(device: str) -> int:
    """How many CUDA devices a worker needs to run a job whose `train.device` is `device`."""
    if device == "cuda":
        return 1
    if device.startswith("cuda:"):
        return min(int(device.removeprefix("cuda:")) + 1, MAX_CUDA_DEVICES_NEEDED)
    return 0


# Built once, bound parameters only: the status poll runs it (compiled to the driver's
# SQL, service.api.reads) whenever the job polled is queued.
LIVE_FLEET: Select[*tuple[Any, ...]] = select(
    func.count().label("live"),
    func.max(WorkerRecord.cuda_devices).label("most_cuda_devices"),
).where(is_live(bindparam("stale_after_seconds", type_=Float())))


@dataclass(frozen=True)
class Fleet:
    """The live workers, as far as a queued job cares: how many, and the most CUDA
    devices any of them has (a job that needs more can run on none of them)."""

    live: int
    most_cuda_devices: int

    @classmethod
    def of(cls, row: Any) -> Fleet:
        """From a row of LIVE_FLEET (any driver's: columns as attributes)."""
        return cls(int(row.live), int(row.most_cuda_devices or 0))

    def why_waiting(self, needed: int) -> str | None:
        """Why a queued job that needs `needed` CUDA devices cannot start now, or None
        when some live worker can run it."""
        want = "a CUDA device" if needed == 1 else f"cuda:{needed - 1}"
        if self.live == 0:
            return "no live worker" + (f"; it needs one with {want}" if needed else "")
        if needed <= self.most_cuda_devices:
            return None
        workers = f"{self.live} live worker{'' if self.live == 1 else 's'}"
        if self.most_cuda_devices == 0:
            return f"no live worker has {want} ({workers}, cpu)"
        most = self.most_cuda_devices
        each = f"at most {most} CUDA device{'' if most == 1 else 's'} each"
        return f"no live worker has {want} ({workers}, {each})"


def live_fleet(session: Session, *, stale_after_seconds: float) -> Fleet:
    """The live workers (service.store.queue.workers.is_live) as a queued job sees them."""
    row = session.execute(LIVE_FLEET, {"stale_after_seconds": stale_after_seconds}).one()
    return Fleet.of(row)
