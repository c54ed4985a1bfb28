"""GET /v1/sweeps: a tenant's sweeps, newest first, with their status and progress
counted by the database, paged on a cursor; on SQLite and Postgres."""

from __future__ import annotations

from typing import Any

import httpx

from tests.integration.test_ui_access import BACKENDS, DIGITS, api, new_key

__all__ = ["api"]  # the fixture


def post_sweep(url: str, key: str, seeds: list[int]) -> dict[str, Any]:
    body = {"base": DIGITS, "grid": {"train.seed": seeds}}
    answer = httpx.post(f"{url}/v1/sweeps", json=body, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 202, answer.text
    sweep: dict[str, Any] = answer.json()
    return sweep


@BACKENDS
def test_sweeps_are_listed_newest_first_per_tenant_and_paged(api: str, database_url: str) -> None:
    acme, globex = new_key(database_url, "acme"), new_key(database_url, "globex")
    first, second = post_sweep(api, acme, [0, 1]), post_sweep(api, acme, [0, 1, 2])
    theirs = post_sweep(api, globex, [0])
    as_acme = {"Authorization": f"Bearer {acme}"}
    cancel = httpx.post(f"{api}/v1/jobs/{second['job_ids'][0]}/cancel", headers=as_acme)
    assert cancel.status_code == 200

    listed = httpx.get(f"{api}/v1/sweeps", headers=as_acme).json()
    assert [s["id"] for s in listed["data"]] == [second["id"], first["id"]]
    assert listed["next_cursor"] is None
    newest = listed["data"][0]
    assert newest["grid"] == {"train.seed": [0, 1, 2]}
    assert newest["status"] == "running"  # one job ended (cancelled), two queued
    assert (newest["progress"]["total"], newest["progress"]["ended"]) == (3, 1)
    assert (newest["progress"]["cancelled"], newest["progress"]["queued"]) == (1, 2)
    assert listed["data"][1]["status"] == "queued"
    assert theirs["id"] not in {s["id"] for s in listed["data"]}

    page = httpx.get(f"{api}/v1/sweeps", params={"limit": 1}, headers=as_acme).json()
    assert [s["id"] for s in page["data"]] == [second["id"]]
    rest = httpx.get(f"{api}/v1/sweeps", params={"cursor": page["next_cursor"]}, headers=as_acme)
    assert [s["id"] for s in rest.json()["data"]] == [first["id"]]
    assert (
        httpx.get(f"{api}/v1/sweeps", params={"cursor": "nope"}, headers=as_acme).status_code == 422
    )
    assert httpx.get(f"{api}/v1/sweeps").status_code == 401
