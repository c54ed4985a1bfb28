"""Log formats and the job id stamped on a worker's lines (service.logs)."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from counterweight.service.logs import configure_logging, job_logging


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The root logger's output; the handlers pytest had are put back afterwards."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    stream = io.StringIO()
    yield stream
    root.handlers[:] = saved
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_the_job_id_from_any_thread_while_the_job_runs(
    captured: io.StringIO,
) -> None:
    configure_logging("INFO", "json")
    logging.getLogger().handlers[0].setStream(captured)
    log = logging.getLogger("workers.test")
    log.info("before")
    with job_logging("abc123"):
        log.info("in the job")
        # The heartbeat thread's lines are about the job too.
        thread = threading.Thread(target=lambda: log.warning("heartbeat failed"))
        thread.start()
        thread.join()
        try:
            raise RuntimeError("crash")
        except RuntimeError:
            log.exception("attempt crashed")
    log.info("after")

    got = lines(captured)
    assert [line["message"] for line in got] == [
        "before",
        "in the job",
        "heartbeat failed",
        "attempt crashed",
        "after",
    ]
    assert [line.get("job_id") for line in got] == [None, "abc123", "abc123", "abc123", None]
    assert got[2]["level"] == "WARNING" and got[2]["logger"] == "workers.test"
    assert "RuntimeError: crash" in str(got[3]["exception"])
    assert str(got[0]["time"]).endswith("+00:00")


def test_text_lines_name_the_job_once(captured: io.StringIO) -> None:
    configure_logging("INFO", "text")
    logging.getLogger().handlers[0].setStream(captured)
    log = logging.getLogger("workers.test")
    with job_logging("abc123"):
        log.info("epoch 3 done")
        log.info("job=abc123 succeeded")  # the worker's own lines already name it
    first, second = captured.getvalue().splitlines()
    assert first.endswith("INFO workers.test epoch 3 done [job=abc123]")
    assert second.endswith("INFO workers.test job=abc123 succeeded")


def test_an_unknown_format_is_refused_by_name() -> None:
    with pytest.raises(
        ValueError, match="COUNTERWEIGHT_LOG_FORMAT is 'xml'; expected text or json"
    ):
        configure_logging("INFO", "xml")
