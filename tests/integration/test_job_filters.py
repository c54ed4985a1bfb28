"""GET /v1/jobs?dataset=...&loss=...: the filters the dashboard's jobs page uses, picked
out of the stored spec by the database (SQLite's and Postgres's JSON operators), with
the cursor paging as without them."""

from __future__ import annotations

import httpx

from tests.integration.test_ui_access import BACKENDS, DIGITS, FOCAL, api, submit

__all__ = ["api"]  # the fixture


@BACKENDS
def test_the_job_listing_filters_by_dataset_and_loss(api: str) -> None:
    digits, focal = submit(api, "", DIGITS), submit(api, "", FOCAL)
    upload_free = {"dataset": {"name": "digits"}, "loss": {"type": "class_balanced"}}
    balanced = submit(api, "", {**upload_free, "train": {"epochs": 1}})

    def listed(**params: str) -> list[str]:
        answer = httpx.get(f"{api}/v1/jobs", params=params)
        assert answer.status_code == 200, answer.text
        return [job["id"] for job in answer.json()["data"]]

    assert listed(loss="focal") == [focal]
    assert listed(loss="cross_entropy") == [digits]
    assert listed(dataset="digits") == [balanced, focal, digits]
    assert listed(dataset="mnist") == []
    assert listed(dataset="digits", loss="class_balanced") == [balanced]
    page = httpx.get(f"{api}/v1/jobs", params={"dataset": "digits", "limit": 2}).json()
    rest = listed(dataset="digits", cursor=page["next_cursor"])
    assert [job["id"] for job in page["data"]] + rest == [balanced, focal, digits]
    assert httpx.get(f"{api}/v1/jobs", params={"loss": ""}).status_code == 422
