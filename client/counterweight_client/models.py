"""Typed results: stdlib dataclasses built from the server's JSON (DESIGN.md section 5).

Each keeps the whole JSON object in `raw`, so fields the server adds later stay reachable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


@dataclass(frozen=True)
class Progress:
    epoch: int
    epochs: int
    fraction: float
    eta_seconds: float | None
    metrics: dict[str, float]  # train_loss and the latest val_* metrics

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Progress:
        return cls(
            epoch=int(body.get("epoch", 0)),
            epochs=int(body.get("epochs", 0)),
            fraction=float(body.get("fraction", 0.0)),
            eta_seconds=body.get("eta_seconds"),
            metrics=dict(body.get("metrics") or {}),
        )


@dataclass(frozen=True)
class Job:
    id: str
    status: str  # queued, running, succeeded, failed, cancelled
    attempt: int
    max_attempts: int
    progress: Progress | None
    error: str | None
    waiting: str | None  # why it cannot go on: no live worker can run it, the store is away
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Job:
        progress = body.get("progress")
        return cls(
            id=str(body["id"]),
            status=str(body["status"]),
            attempt=int(body.get("attempt", 0)),
            max_attempts=int(body.get("max_attempts", 0)),
            progress=Progress.from_json(progress) if isinstance(progress, dict) else None,
            error=body.get("error"),
            waiting=body.get("waiting"),
            created_at=_time(body.get("created_at")),
            started_at=_time(body.get("started_at")),
            finished_at=_time(body.get("finished_at")),
            raw=body,
        )


@dataclass(frozen=True)
class Prediction:
    class_index: int  # "class" in the JSON; a Python keyword
    name: str | None
    probabilities: list[float]

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Prediction:
        return cls(
            class_index=int(body["class"]),
            name=body.get("name"),
            probabilities=[float(p) for p in body.get("probabilities", [])],
        )


@dataclass(frozen=True)
class Sweep:
    id: str
    status: str
    job_ids: list[str]
    table: list[dict[str, Any]]  # one row per grid cell: its values, mean and std over seeds
    raw: dict[str, Any] = field(repr=False)

    @property
    def done(self) -> bool:
        return self.status not in ("queued", "running")

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Sweep:
        return cls(
            id=str(body["id"]),
            status=str(body["status"]),
            job_ids=[str(i) for i in body.get("job_ids", [])],
            table=list(body.get("table") or []),
            raw=body,
        )


@dataclass(frozen=True)
class JobEvent:
    """One server-sent event (`status`, `progress` or `epoch`). While polling (a server
    without the events endpoint) `wait` makes `status` and `progress` events with id None."""

    id: int | None
    type: str
    data: dict[str, Any]
