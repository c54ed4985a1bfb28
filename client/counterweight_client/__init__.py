"""Python client for Counterweight, importable with httpx alone (no torch, numpy or
pydantic): `Client` and `AsyncClient` with the same methods and typed results."""

from counterweight_client._core import RetryPolicy
from counterweight_client.async_client import AsyncClient
from counterweight_client.client import Client
from counterweight_client.errors import (
    ApiError,
    Conflict,
    ConnectionFailed,
    CounterweightError,
    InvalidRequest,
    NotFound,
    QueueFull,
    ServerError,
    TooLarge,
    Unauthorized,
    WaitTimeout,
)
from counterweight_client.models import Job, JobEvent, Prediction, Progress, Sweep

__all__ = [
    "ApiError",
    "AsyncClient",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "CounterweightError",
    "InvalidRequest",
    "Job",
    "JobEvent",
    "NotFound",
    "Prediction",
    "Progress",
    "QueueFull",
    "RetryPolicy",
    "ServerError",
    "Sweep",
    "TooLarge",
    "Unauthorized",
    "WaitTimeout",
]
