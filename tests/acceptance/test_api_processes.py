"""`counterweight api --processes N`: several API processes behind one port, as the
load benchmark runs it on two cores (BENCHMARKS.md, "Load")."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.processes import Service

POLLS = 60


def polls_counted(url: str) -> float:
    """The request count /metrics reports for 200 answers of GET /v1/jobs/{job_id}."""
    text = httpx.get(f"{url}/metrics", headers={"Connection": "close"}).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "counterweight_http_request_duration_seconds_count"
                and labels["route"] == "/v1/jobs/{job_id}"
                and labels["status"] == "200"
            ):
                return sample.value
    return 0.0


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_two_processes_share_a_fresh_database_and_report_every_request(
    empty_database_url: str, tmp_path: Path
) -> None:
    service = Service(tmp_path, empty_database_url)
    try:
        service.start_api(processes=2)  # both start on an empty database: no migration race
        job_id = service.submit({"dataset": {"name": "digits"}, "model": {"arch": "mlp"}})

        def poll(_: int) -> int:
            # A connection each, so that the kernel hands them to either process.
            headers = {"Connection": "close"}
            return httpx.get(f"{service.url}/v1/jobs/{job_id}", headers=headers).status_code

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(poll, range(POLLS))) == {200}

        # Whichever process answers a scrape, it counts the other's requests too.
        assert [polls_counted(service.url) for _ in range(6)] == [POLLS] * 6
    finally:
        service.stop()
