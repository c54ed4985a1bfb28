"""The asyncio client: `Client`'s methods, awaited. `on_progress` stays a plain function."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from counterweight_client import _core
from counterweight_client.errors import WaitTimeout
from counterweight_client.models import Job, JobEvent, Prediction, Sweep

ProgressCallback = Callable[[JobEvent], None]


class AsyncClient:
    """Counterweight over HTTP. `base_url` defaults to $COUNTERWEIGHT_URL (else
    http://127.0.0.1:8000), `api_key` to $COUNTERWEIGHT_API_KEY, sent as a Bearer token.

    Calls are retried with exponential backoff (`retry`) on connection errors and 503,
    and, where repeating them is harmless, on read errors, 502 and 504; a 503 or 429
    with Retry-After waits as long as it says, within `retry.max_wait`; never on
    other 4xx.
    Errors raise `CounterweightError` subclasses carrying the status and server's detail.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retry: _core.RetryPolicy | None = None,
        poll_interval: float = 1.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = _core.resolve_base_url(base_url)
        self.retry = retry or _core.RetryPolicy()
        self.poll_interval = poll_interval
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=_core.default_headers(api_key),
            timeout=timeout,
            transport=transport,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    # -- jobs ---------------------------------------------------------------------------

    async def submit(self, spec: dict[str, Any], idempotency_key: str | None = None) -> Job:
        """Queue a job. Without a key one is made for this call, so that its retries
        cannot queue the job twice."""
        key = idempotency_key or _core.new_idempotency_key()
        headers = {"Idempotency-Key": key}
        response = await self._send("POST", "/v1/jobs", idempotent=True, json=spec, headers=headers)
        return Job.from_json(_core.json_object(response))

    async def get(self, job_id: str) -> Job:
        return Job.from_json(await self._get_json(f"/v1/jobs/{job_id}"))

    async def cancel(self, job_id: str) -> Job:
        """A queued job ends at once; a running one ends cancelled within seconds, even
        if its training has ended (a cancel wins until the job's success is recorded).
        `raw["outcome"]` is the server's sentence on what happens; an ended job: Conflict."""
        # Not idempotent: a repeat after a lost answer would be a 409 for an ended job.
        response = await self._send("POST", f"/v1/jobs/{job_id}/cancel", idempotent=False)
        return Job.from_json(_core.json_object(response))

    async def delete(self, job_id: str) -> dict[str, Any]:
        """Cancel the job if it has not ended, hide it and remove its files (Client.delete)."""
        response = await self._send("DELETE", f"/v1/jobs/{job_id}", idempotent=True)
        return _core.json_object(response)

    async def metrics(self, job_id: str) -> dict[str, Any]:
        return await self._get_json(f"/v1/jobs/{job_id}/metrics")

    async def model_card(self, job_id: str) -> dict[str, Any]:
        return await self._get_json(f"/v1/jobs/{job_id}/model/card")

    async def download_model(self, job_id: str, path: str | Path) -> Path:
        """Stream the safetensors weights to `path` (a directory: `<job id>.safetensors`
        in it). Written to a `.part` file first, so a broken download leaves no model."""
        target = Path(path)
        if target.is_dir():
            target = target / f"{job_id}.safetensors"
        partial = target.with_name(target.name + ".part")
        response = await self._send("GET", f"/v1/jobs/{job_id}/model", idempotent=True, stream=True)
        try:
            with partial.open("wb") as out:
                async for chunk in response.aiter_bytes():
                    out.write(chunk)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        finally:
            await response.aclose()
        partial.replace(target)
        return target

    async def logs(self, job_id: str) -> dict[str, Any]:
        """The worker's lines about the job, every attempt (Client.logs)."""
        return await self._get_json(f"/v1/jobs/{job_id}/logs")

    async def follow_logs(self, job_id: str) -> AsyncIterator[JobEvent]:
        """The job's log lines as they come, then `end` (Client.follow_logs)."""
        response = await self._send(
            "GET",
            f"/v1/jobs/{job_id}/logs",
            idempotent=True,
            stream=True,
            params={"follow": "true"},
            timeout=httpx.Timeout(self._timeout, read=_core.EVENTS_READ_TIMEOUT),
        )
        parser = _core.EventParser()
        try:
            async for text in response.aiter_lines():
                for event in parser.feed(text):
                    yield event
                    if event.type == "end":
                        return
        finally:
            await response.aclose()

    async def predict(self, job_id: str, inputs: Iterable[Any]) -> list[Prediction]:
        """Inputs as nested lists in the model card's input shape (arrays are converted
        with their `tolist`), or base64-encoded PNG/JPEG for image jobs."""
        body = {"inputs": _core.as_inputs(inputs)}
        response = await self._send(
            "POST", f"/v1/jobs/{job_id}/predict", idempotent=True, json=body
        )
        return [Prediction.from_json(p) for p in _core.json_object(response)["predictions"]]

    async def wait(
        self,
        job_id: str,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> Job:
        """Block until the job ends and return it, calling `on_progress` with each event.
        Follows GET /v1/jobs/{id}/events, resuming a dropped stream with Last-Event-ID;
        polls GET /v1/jobs/{id} every `poll_interval` seconds on a server without it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        parser = _core.EventParser()
        failures = 0
        while True:
            told: float | None = None  # what a refusal of the stream said to wait
            remaining = self._remaining(job_id, deadline)
            headers = {"Last-Event-ID": parser.last_id} if parser.last_id else {}
            read_timeout = min(_core.EVENTS_READ_TIMEOUT, remaining)
            try:
                async with self._http.stream(
                    "GET",
                    f"/v1/jobs/{job_id}/events",
                    headers=headers,
                    timeout=httpx.Timeout(self._timeout, read=read_timeout),
                ) as response:
                    polling = response.status_code in (404, 405)  # a server without events
                    told = _core.retry_after(response)
                    if not polling and not _core.retry_status(response.status_code, True):
                        if response.is_error:  # read only then: events come as they are sent
                            await response.aread()
                            _core.raise_for_status(response)
                        async for line in response.aiter_lines():
                            for event in parser.feed(line):
                                failures = 0
                                if on_progress:
                                    on_progress(event)
                                if _core.ends_job(event):
                                    return await self.get(job_id)
            except httpx.TransportError as error:
                self._remaining(job_id, deadline)
                if failures + 1 >= self.retry.attempts:
                    raise _core.connection_failed(self.base_url, error, failures + 1) from error
            else:
                if polling:
                    return await self._poll(job_id, on_progress, deadline)
            # The stream ended early (dropped, or a 5xx): the job may have ended meanwhile.
            job = await self.get(job_id)
            if job.done:
                return job
            failures += 1
            delay = self.retry.delay(failures) if told is None else told
            await asyncio.sleep(min(delay, self._remaining(job_id, deadline)))

    async def _poll(
        self, job_id: str, on_progress: ProgressCallback | None, deadline: float | None
    ) -> Job:
        previous = None
        while True:
            job = await self.get(job_id)
            if on_progress is not None:
                for event in _core.poll_events(previous, job):
                    on_progress(event)
            if job.done:
                return job
            previous = job
            await asyncio.sleep(min(self.poll_interval, self._remaining(job_id, deadline)))

    @staticmethod
    def _remaining(job_id: str, deadline: float | None) -> float:
        if deadline is None:
            return _core.EVENTS_READ_TIMEOUT
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(f"job {job_id} had not ended when the wait timed out")
        return left

    # -- sweeps and datasets ---------------------------------------------------------------

    async def sweep(self, base: dict[str, Any], grid: dict[str, Sequence[Any]]) -> Sweep:
        """Queue one job per grid cell: `grid` maps dotted spec paths to value lists."""
        body = _core.sweep_body(base, grid)
        response = await self._send("POST", "/v1/sweeps", idempotent=False, json=body)
        return Sweep.from_json(_core.json_object(response))

    async def get_sweep(self, sweep_id: str) -> Sweep:
        return Sweep.from_json(await self._get_json(f"/v1/sweeps/{sweep_id}"))

    async def datasets(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = (await self._get_json("/v1/datasets"))["data"]
        return data

    async def upload_dataset(self, path: str | Path) -> dict[str, Any]:
        """Upload an `.npz` (x_train, y_train, x_test, y_test, ...); streamed from disk."""
        source = Path(path)
        with source.open("rb") as file:
            response = await self._send(
                "POST",
                "/v1/datasets",
                idempotent=False,
                rewind=file,
                files={"file": (source.name, file, "application/octet-stream")},
            )
        return _core.json_object(response)

    # -- transport ---------------------------------------------------------------------------

    async def _get_json(self, path: str) -> dict[str, Any]:
        return _core.json_object(await self._send("GET", path, idempotent=True))

    async def _send(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        stream: bool = False,
        rewind: IO[bytes] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One call with the retry rules; an error response comes back read and closed."""
        waited = 0.0  # seconds slept between tries; a server's wait must fit in retry.max_wait
        for attempt in range(1, self.retry.attempts + 1):
            last = attempt == self.retry.attempts
            if rewind is not None:
                rewind.seek(0)
            request = self._http.build_request(method, path, **kwargs)
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as error:
                if last or not _core.retry_transport_error(error, idempotent):
                    raise _core.connection_failed(self.base_url, error, attempt) from error
                waited += (backoff := self.retry.delay(attempt))
                await asyncio.sleep(backoff)
                continue
            if not last and _core.retry_status(response.status_code, idempotent):
                wait = self.retry.wait_for(response, attempt, waited)
                if wait is not None:
                    await response.aclose()
                    waited += wait
                    await asyncio.sleep(wait)
                    continue
            if stream and response.is_error:
                await response.aread()
                await response.aclose()
                _core.raise_for_status(response)
            return response
        raise AssertionError("unreachable: the last attempt returns or raises")
