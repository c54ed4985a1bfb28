"""Playwright driving Debian's Chromium (/usr/bin/chromium, installed by scripts/test): never a
browser downloaded by Playwright. Screenshots go to var/screenshots/ (ignored by git,
kept by CI as artefacts)."""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.integration.test_ui_access import DIGITS, new_key, submit
from tests.processes import Service

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
# The first validate reads the dataset; a shared CI machine may take a while.
sync_api.expect.set_options(timeout=30_000)
SHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install chromium` (scripts/test does)")
    with sync_api.sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


class Watched:
    """A page whose console errors (a script that failed, anything the CSP blocked) and
    dialogs (an alert() that ran) are kept, for the test to assert there were none."""

    def __init__(self, page: sync_api.Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("dialog", self._dialog)

    def _console(self, message: sync_api.ConsoleMessage) -> None:
        # The browser logs each 4xx the page asked for; a 422 from validate is expected.
        if message.type == "error" and "status of 422" not in message.text:
            self.errors.append(message.text)

    def _dialog(self, dialog: sync_api.Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.fixture
def watched(browser: sync_api.Browser) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield Watched(context.new_page())
    finally:
        context.close()


# --- the dashboard, end to end: a real API, a real worker, a real browser -------------

WEIGHTS_GROW_WITH_FREQUENCY = {
    "dataset": {"name": "digits", "classes": [0, 1]},
    "imbalance": {"profile": "step", "ratio": 10, "minority": [1]},
    "class_weight": {"0": 10, "1": 1},
    "model": {"arch": "mlp"},
    "train": {"epochs": 1},
}
# Slow enough (batch 8, a wide MLP) for the job page to show epochs while it runs.
WATCHED = {
    "dataset": {"name": "digits", "classes": [0, 1, 2]},
    "imbalance": {"profile": "step", "ratio": 10, "minority": [2]},
    "class_weight": "balanced",
    "model": {"arch": "mlp", "width": 512, "depth": 3},
    "train": {"epochs": 4, "batch_size": 8, "seed": 0},
}
SCRIPT_NAME = "<script>alert('x')</script>"


def _type_spec(page: sync_api.Page, spec: dict[str, Any]) -> None:
    page.fill("#spec", json.dumps(spec, indent=2))  # an input event: validate runs


def _upload_with_names(service: Service) -> str:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.random((60, 4), dtype=np.float32),
        "y_train": np.repeat([0, 1], [40, 20]),
        "x_test": rng.random((20, 4), dtype=np.float32),
        "y_test": np.repeat([0, 1], 10),
        "class_names": np.array([SCRIPT_NAME, "b&<i>x</i>"]),
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    answer = service.http.post("/v1/datasets", files={"file": ("names.npz", buffer.getvalue())})
    assert answer.status_code == 201, answer.text
    dataset_id: str = answer.json()["id"]
    return dataset_id


def test_plan_watch_and_compare_in_the_browser(service: Service, watched: Watched) -> None:
    service.start_worker()
    page = watched.page

    # New job: validate's warning appears as the spec is typed, before anything is queued.
    page.goto(f"{service.url}/ui/new")
    expect = sync_api.expect
    expect(page.locator("#report-state")).to_have_text("valid")
    # The form writes its choices into the spec, which is validated again.
    page.select_option("#quick-loss", "focal")
    page.select_option("#quick-sampler", "oversample")
    written = json.loads(page.input_value("#spec"))
    assert (written["loss"], written["sampler"]) == ({"type": "focal"}, "oversample")
    expect(page.locator("#report-warnings")).to_contain_text("sampler")  # re-weighted twice
    _type_spec(page, WEIGHTS_GROW_WITH_FREQUENCY)
    expect(page.locator("#report-warnings")).to_contain_text("grow with class frequency")
    _type_spec(page, {**WATCHED, "train": {**WATCHED["train"], "epochs": 0}})
    expect(page.locator("#report-errors .error")).to_contain_text("train.epochs")
    expect(page.locator("#submit")).to_be_disabled()
    _type_spec(page, {**WATCHED, "sample_weight": [1.0, 2.0, 3.0]})
    expect(page.locator("#report-errors .error")).to_contain_text("sample_weight")
    expect(page.locator("#report-errors .error")).to_contain_text("shape")
    _type_spec(page, WATCHED)
    expect(page.locator("#report-state")).to_have_text("valid")
    expect(page.locator("#report-table tbody tr")).to_have_count(3)
    watched.shot("new-job")
    assert service.http.get("/v1/jobs").json()["data"] == [], "validate queued something"

    # Submit from the form; the job page follows it live until it ends.
    page.click("#submit")
    page.wait_for_url(f"{service.url}/ui/jobs/*")
    first = page.url.rsplit("/", 1)[1]
    seen: set[tuple[str, str]] = set()
    live_seen = False  # an epoch shown while the job runs
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        status = page.locator("#job-status").get_attribute("data-status") or ""
        epochs = page.locator("#curves").get_attribute("data-epochs") or ""
        live = status == "running" and epochs not in ("", "0")
        if live and not live_seen:
            watched.shot("job-running")
        live_seen = live_seen or live
        seen.add((status, epochs))
        if status == "succeeded" and page.locator("#per-class").count():
            break
        page.wait_for_timeout(150)
    else:
        raise AssertionError(f"job page did not end: {seen}\n{service.logs()}")
    assert live_seen, f"the page never showed a finished epoch while the job ran: {seen}"
    expect(page.locator("#curves")).to_have_attribute("data-epochs", "4")
    expect(page.locator("#per-class tbody tr")).to_have_count(3)
    expect(page.locator("table.heat")).to_have_count(2)
    expect(page.locator("#download-model")).to_be_visible()
    with page.expect_download() as download:
        page.click("#download-card")
    card = json.loads(Path(download.value.path()).read_text())
    assert card["spec"]["train"]["epochs"] == 4
    watched.shot("job")

    # A second job, and compare the two.
    second = service.submit(
        {
            **WATCHED,
            "loss": {"type": "focal", "gamma": 2.0},
            "class_weight": None,
            "train": {**WATCHED["train"], "epochs": 2},
        }
    )
    assert service.wait_until_ended(second)["status"] == "succeeded"
    page.goto(f"{service.url}/ui/jobs")
    expect(page.locator(f"tr[data-job='{second}'] .status")).to_have_text("succeeded")
    watched.shot("jobs")
    page.check(f"input[value='{first}']")
    page.check(f"input[value='{second}']")
    page.click("#compare")
    expect(page.locator("#compare-curves")).to_have_attribute("data-drawn", "2")
    differing = page.locator("#differing").inner_text()
    assert "loss.type" in differing and "train.epochs" in differing
    expect(page.locator("#recall-bars tbody tr")).to_have_count(3)
    expect(page.locator("#confusions table.heat")).to_have_count(2)
    watched.shot("compare")

    # A sweep: its table, its chart, links to its jobs.
    grid = {"loss.type": ["cross_entropy", "focal"]}
    tiny = {"dataset": {"name": "digits", "classes": [0, 1]}, "train": {"epochs": 1}}
    made = service.http.post("/v1/sweeps", json={"base": tiny, "grid": grid})
    assert made.status_code == 202, made.text
    sweep = made.json()
    for job_id in sweep["job_ids"]:
        assert service.wait_until_ended(job_id)["status"] == "succeeded"
    page.goto(f"{service.url}/ui/sweeps")
    expect(page.locator("#sweep-list tbody tr")).to_have_count(1)
    expect(page.locator("#sweep-list")).to_contain_text("succeeded")
    watched.shot("sweeps")
    page.click(f"#sweep-list a[href='/ui/sweeps/{sweep['id']}']")
    expect(page.locator("#sweep-table tbody tr")).to_have_count(2)
    expect(page.locator("#sweep-table")).to_contain_text("loss.type = focal")
    chart = page.locator("#sweep-chart")
    expect(chart).to_be_visible()
    assert chart.evaluate("img => img.complete && img.naturalWidth > 0")
    page.click(f"#sweep-table a[href='/ui/jobs/{sweep['job_ids'][1]}']")
    expect(page.locator("#job-status")).to_have_attribute("data-status", "succeeded")
    page.go_back()
    watched.shot("sweep")

    # Filters: the focal job alone.
    page.goto(f"{service.url}/ui/jobs?loss=focal&dataset=digits")
    expect(page.locator("#job-rows tr")).to_have_count(2)  # the second job, the sweep's
    expect(page.locator(f"#job-rows tr[data-job='{second}']")).to_have_count(1)

    # A class name that is markup shows as text, and runs nothing. Its job, submitted
    # while the jobs page is open, appears there and ends without a reload.
    page.goto(f"{service.url}/ui/jobs")
    dataset_id = _upload_with_names(service)
    named = service.submit(
        {
            "dataset": {"name": "uploaded", "id": dataset_id},
            "model": {"arch": "mlp"},
            "train": {"epochs": 1},
        }
    )
    expect(page.locator(f"tr[data-job='{named}'] .status")).to_have_text("succeeded")
    page.goto(f"{service.url}/ui/jobs/{named}")
    expect(page.locator("#per-class tbody th").first).to_have_text(SCRIPT_NAME)
    expect(page.locator("#plan tbody th").nth(1)).to_have_text("b&<i>x</i>")
    expect(page.locator("#curves")).to_have_attribute("data-epochs", "1")
    page.wait_for_timeout(300)  # the legend is drawn; an injected script would have run
    watched.shot("markup-class-names")

    # Cancel from the job page (a form POST from the dashboard's own origin).
    slow = service.submit({**WATCHED, "train": {**WATCHED["train"], "epochs": 50}})
    page.goto(f"{service.url}/ui/jobs/{slow}")
    expect(page.locator("#job-status")).to_have_attribute("data-status", "running")
    page.click("#cancel")
    expect(page.locator("#job-status")).to_have_attribute("data-status", "cancelled")
    assert service.job(slow)["status"] == "cancelled"

    assert watched.dialogs == [], "a class name ran as script"
    assert watched.errors == [], f"console errors (CSP violations?): {watched.errors}"


def test_docs_render_with_the_network_cut_off(service: Service, watched: Watched) -> None:
    page = watched.page
    outside: list[str] = []

    def only_loopback(route: sync_api.Route) -> None:
        if route.request.url.startswith(service.url + "/"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_loopback)
    page.goto(f"{service.url}/docs")
    sync_api.expect(page.locator(".opblock-summary-path").first).to_be_visible(timeout=30_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/v1/jobs" in paths and "/v1/jobs/{job_id}/cancel" in paths
    assert outside == []
    watched.shot("docs")
    assert service.http.get("/redoc").status_code == 404


def test_the_key_is_entered_once_and_shows_the_tenants_jobs_only(
    service: Service, watched: Watched
) -> None:
    acme = new_key(service.env["COUNTERWEIGHT_DATABASE_URL"], "acme")
    globex = new_key(service.env["COUNTERWEIGHT_DATABASE_URL"], "globex")
    mine = submit(service.url, acme, DIGITS)
    theirs = submit(service.url, globex, DIGITS)
    page = watched.page
    expect = sync_api.expect

    page.goto(f"{service.url}/ui/jobs/{mine}")  # keys exist: the login page, then here
    expect(page.locator("#key")).to_be_visible()
    page.fill("#key", "not-a-key")
    page.click("button[type=submit] >> text=Log in")
    expect(page.locator("#login-error")).to_contain_text("unknown or revoked")
    page.fill("#key", acme)
    page.click("button[type=submit] >> text=Log in")
    page.wait_for_url(f"{service.url}/ui/jobs/{mine}")
    assert acme not in page.url
    [cookie] = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert page.evaluate("document.cookie") == ""  # no script can read the key

    page.goto(f"{service.url}/ui/jobs")
    expect(page.locator(f"tr[data-job='{mine}']")).to_have_count(1)
    expect(page.locator(f"tr[data-job='{theirs}']")).to_have_count(0)
    page.wait_for_timeout(2500)  # a live refresh of the rows came and went
    expect(page.locator("#job-rows tr")).to_have_count(1)
    watched.shot("jobs-logged-in")
    assert page.goto(f"{service.url}/ui/jobs/{theirs}").status == 404

    page.goto(f"{service.url}/ui/jobs")
    page.click("text=Log out")
    expect(page.locator("#key")).to_be_visible()
    assert page.goto(f"{service.url}/ui/jobs").url.startswith(f"{service.url}/ui/login")
    # The refused key (401) and the other tenant's job (404) were logged; nothing else was.
    assert [e for e in watched.errors if "Failed to load resource" not in e] == []
