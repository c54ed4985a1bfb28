"""The API's calls to the artifact store, bounded: a store that hangs (accepts
connections, never answers) costs the requests that need it a quick 503 and every
other request nothing.

- At most COUNTERWEIGHT_STORAGE_MAX_CALLS calls at once per API process, each on a
  thread of this module's own, not on the threads FastAPI runs routes and database
  reads on. A request that needs one more is refused at once: 503 with Retry-After.
- A read (a job's file, the check of an upload) is waited for at most
  COUNTERWEIGHT_STORAGE_WAIT_SECONDS, then 503. The call goes on until the S3 client's
  own timeouts end it (COUNTERWEIGHT_S3_*), keeping its place in the bound, and what
  it fetched is there for the next request. A write (an upload) is waited for until it
  ends: its outcome decides whether the upload exists.
- Async routes (a job's files, predict) wait without holding a thread, and requests
  for the same file share one fetch. Sync callers (admission, uploads, on FastAPI's
  threads) wait on a call of their own, so at most MAX_CALLS of those threads wait.
- What the store said (its endpoint, the bucket) goes to the log; the answer says
  what was asked and that the store is unavailable.

Health, readiness, job status and /metrics never call the store.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar

from counterweight.service.errors import StorageError, StorageRetryLater
from counterweight.service.settings import Settings
from counterweight.service.storage.jobs import job_file, local_job_file

log = logging.getLogger(__name__)

T = TypeVar("T")


class StorageCalls:
    """One per API process (app.state.storage_calls)."""

    def __init__(self, max_calls: int, wait_seconds: float) -> None:
        self.max_calls = max_calls
        self.wait_seconds = wait_seconds
        self.retry_after_seconds = max(1, math.ceil(wait_seconds))
        # Never more calls than threads (the bound below), so a call never queues.
        self._executor = ThreadPoolExecutor(max_calls, thread_name_prefix="storage")
        self._lock = threading.Lock()
        self._in_flight = 0
        # Fetches under way by (home, job id, file name); touched on the event loop only.
        self._fetches: dict[tuple[Path, str, str], asyncio.Future[Path]] = {}

    def close(self) -> None:
        """Start no more calls; those under way end by the S3 client's timeouts."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def run(self, what: str, fn: Callable[..., T], *args: Any, until_done: bool = False) -> T:
        """fn(*args) on a store thread, waited for from the calling thread: at most
        storage_wait_seconds, or `until_done` (a write, whose outcome must be known)."""
        call = self._start(what, fn, *args)
        try:
            return call.result(timeout=None if until_done else self.wait_seconds)
        except TimeoutError:  # the wait's: the call's own OSErrors became StorageRetryLater
            raise self._too_slow(what) from None

    async def job_file(self, settings: Settings, job_id: str, name: str) -> Path:
        """This host's copy of a finished job's file, fetched from the store if it has
        none (service.storage.jobs.job_file: ArtifactMissing if the store has none)."""
        local = local_job_file(settings, job_id, name)
        if local is not None:
            return local
        what = f"job {job_id}: fetching {name} from the artifact store"
        key = (settings.home, job_id, name)
        fetch = self._fetches.get(key)
        if fetch is None:
            fetch = _on_loop(self._start(what, job_file, settings, job_id, name))
            self._fetches[key] = fetch
            fetch.add_done_callback(lambda done: self._forget(key, done))
        try:
            # Shielded: a request that stops waiting leaves the fetch to the others.
            return await asyncio.wait_for(asyncio.shield(fetch), self.wait_seconds)
        except TimeoutError:
            raise self._too_slow(what) from None

    def _forget(self, key: tuple[Path, str, str], fetch: asyncio.Future[Path]) -> None:
        self._fetches.pop(key, None)
        if not fetch.cancelled():
            fetch.exception()  # seen: a failure nobody waits for any more was logged (_call)

    def _start(self, what: str, fn: Callable[..., T], *args: Any) -> Future[T]:
        with self._lock:
            if self._in_flight >= self.max_calls:
                raise StorageRetryLater(
                    f"{what}: not now, the API has {self.max_calls} calls to the artifact "
                    "store under way, as many as it makes at once "
                    f"(COUNTERWEIGHT_STORAGE_MAX_CALLS); retry in {self.retry_after_seconds} s",
                    self.retry_after_seconds,
                )
            self._in_flight += 1
        try:
            call = self._executor.submit(self._call, what, fn, *args)
        except BaseException:
            self._ended()
            raise
        call.add_done_callback(lambda _: self._ended())
        return call

    def _ended(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except (StorageError, OSError) as exc:
            # The store's own words name its endpoint and bucket (or a path on a shared
            # file system): for the operator's log, not for the client.
            log.warning("%s: %s", what, exc)
            raise StorageRetryLater(
                f"{what}: the store is unavailable (the server's log says why); retry in "
                f"{self.retry_after_seconds} s",
                self.retry_after_seconds,
            ) from exc

    def _too_slow(self, what: str) -> StorageRetryLater:
        return StorageRetryLater(
            f"{what}: no answer within {self.wait_seconds:g} s "
            f"(COUNTERWEIGHT_STORAGE_WAIT_SECONDS); retry in {self.retry_after_seconds} s",
            self.retry_after_seconds,
        )


def _on_loop(call: Future[T]) -> asyncio.Future[T]:
    """The outcome of a call on a store thread, as a future of the running event loop.
    (asyncio.wrap_future, except that a call ending after the loop closed is dropped:
    nobody waits for it then.)"""
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[T] = loop.create_future()

    def deliver(done: Future[T]) -> None:
        if outcome.done():
            return
        if done.cancelled():
            outcome.cancel()
        elif (exc := done.exception()) is not None:
            outcome.set_exception(exc)
        else:
            outcome.set_result(done.result())

    def from_thread(done: Future[T]) -> None:
        with suppress(RuntimeError):  # the loop has closed
            loop.call_soon_threadsafe(deliver, done)

    call.add_done_callback(from_thread)
    return outcome
