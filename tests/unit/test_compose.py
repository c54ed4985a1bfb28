"""docker-compose.yml, checked without Docker: its shape, the GPU reservation, and that
every COUNTERWEIGHT_* variable it sets is a setting the code reads, with a value the
settings accept."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from counterweight.service.settings import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
PREFIX = "COUNTERWEIGHT_"
# ${NAME}, ${NAME:-default} or ${NAME-default}: compose's interpolation.
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load(COMPOSE.read_text())
    found: dict[str, Any] = compose["services"]
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    """The service's variables as compose sets them when nothing is overridden."""
    env = service.get("environment") or {}
    if isinstance(env, list):  # the "NAME=value" form
        env = dict(item.split("=", 1) for item in env)
    return {
        name: INTERPOLATION.sub(lambda m: m.group(2) or "", str(value))
        for name, value in env.items()
    }


def test_the_three_services_are_there(services: dict[str, Any]) -> None:
    assert set(services) == {"postgres", "api", "worker"}
    postgres = services["postgres"]
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    # The API migrates, then serves; workers wait until it is ready.
    command = " ".join(services["api"]["command"])
    assert command.index("counterweight db upgrade") < command.index("counterweight api")
    assert services["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["api"]["condition"] == "service_healthy"
    assert services["worker"]["command"][:2] == ["counterweight", "worker"]


def test_the_worker_reserves_a_gpu_and_can_be_scaled(services: dict[str, Any]) -> None:
    worker = services["worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert "gpu" in device["capabilities"] and device["count"] == 1
    # --scale worker=N needs replicas that do not clash: no fixed name, no host port.
    assert "container_name" not in worker and "ports" not in worker


@pytest.mark.parametrize("name", ["api", "worker"])
def test_every_counterweight_variable_is_a_setting_the_code_reads(
    services: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = environment(services[name])
    ours = {key: value for key, value in env.items() if key.startswith(PREFIX)}
    assert "COUNTERWEIGHT_DATABASE_URL" in ours and "COUNTERWEIGHT_STORAGE" in ours
    unknown = [key for key in ours if key.removeprefix(PREFIX).lower() not in Settings.model_fields]
    assert unknown == []
    # And with compose's defaults the settings accept every value.
    for key in list(Settings.model_fields):
        monkeypatch.delenv(PREFIX + key.upper(), raising=False)
    for key, value in ours.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.database_url is not None and settings.database_url.endswith(
        "@postgres:5432/counterweight"
    )
    assert (settings.storage, settings.storage_dir) == (
        "local",
        Path("/var/lib/counterweight-store"),
    )
