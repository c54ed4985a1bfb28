"""Settings read from `COUNTERWEIGHT_*` environment variables."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """'127.0.0.1/32, 10.0.0.0/8' -> networks; a bare address is its own /32 or /128."""
    return tuple(ipaddress.ip_network(part.strip()) for part in text.split(",") if part.strip())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COUNTERWEIGHT_", extra="ignore")

    home: Path = Field(
        Path("var"), description="Directory for the SQLite database and job artifacts."
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL; default sqlite:///<home>/counterweight.db. "
        "Postgres: postgresql+psycopg://user@host/db.",
    )
    data_root: Path | None = Field(
        None, description="Root of on-disk datasets (default <home>/data)."
    )
    lease_seconds: float = Field(
        30.0, gt=0, description="A running job is re-queued if its worker is silent this long."
    )
    heartbeat_seconds: float = Field(
        2.0, gt=0, description="How often a worker renews its lease and reads the cancel flag."
    )
    poll_seconds: float | None = Field(
        None,
        gt=0,
        description="Idle worker polling interval (default 0.1 on SQLite; 5 on Postgres, "
        "where LISTEN/NOTIFY wakes workers at once and polling is the fallback).",
    )
    sweep_seconds: float = Field(
        5.0, gt=0, description="How often a worker re-queues jobs whose lease expired."
    )
    log_upload_seconds: float = Field(
        5.0,
        gt=0,
        description="How often a worker copies the log of the job it runs to the artifact "
        "store (GET /v1/jobs/{id}/logs reads it there); also once at the attempt's end.",
    )
    retention_days: float | None = Field(
        None,
        gt=0,
        description="Remove the files of jobs that ended longer ago than this (model, card, "
        "plots, checkpoint, logs; the job and its metrics stay). Unset: kept for ever.",
    )
    janitor_seconds: float = Field(
        300.0,
        gt=0,
        description="How often each API process removes the files of deleted jobs and of "
        "jobs past retention, and measures the artifact store's usage per tenant.",
    )
    retry_backoff_seconds: float = Field(
        5.0, ge=0, description="Delay before retry n is 2^(n-1) times this, capped at 300 s."
    )
    sqlite_busy_timeout_ms: int = Field(30_000, ge=0)
    sqlite_synchronous: Literal["full", "normal"] = Field(
        "full",
        description="SQLite's synchronous pragma. full: every commit is on disk before the "
        "API answers (a 202 survives a power cut); normal: faster commits, but an OS crash, "
        "power cut or failing file system loses the last ones, already answered.",
    )
    worker_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="CPU niceness a worker runs at, so that an API or database on the "
        "same host keeps answering while it trains on the CPU; 0 leaves it as started.",
    )
    max_upload_bytes: int = Field(
        512 * 2**20,
        gt=0,
        description="Largest .npz accepted by POST /v1/datasets, in bytes; larger is a 413.",
    )
    max_upload_array_bytes: int = Field(
        2 * 2**30,
        gt=0,
        description="Largest total size of an upload's arrays once decompressed, in bytes "
        "(a small np.savez_compressed file can expand to any size); larger is a 413.",
    )
    dataset_cache_bytes: int = Field(
        2**30,
        ge=0,
        description="Decoded datasets a process keeps for the next job, in bytes (least "
        "recently used go first). The API keeps only labels and shapes, never inputs.",
    )
    max_predict_inputs: int = Field(
        1024,
        gt=0,
        description="Most inputs one POST /v1/jobs/{id}/predict takes; more is a 413.",
    )
    predict_cache_models: int = Field(
        4, gt=0, description="How many models the API keeps loaded for predict (LRU)."
    )
    auth_cache_seconds: float = Field(
        2.0,
        ge=0,
        description="How long the API trusts what it read about API keys: a revoked key "
        "stops working, and the first key made switches auth on, within this time.",
    )
    # Limits (service.api.admission): each refusal is a 4xx naming the field, the value and the cap.
    max_request_bytes: int = Field(
        32 * 2**20,
        gt=0,
        description="Largest request body in bytes, dataset uploads aside (max_upload_bytes); "
        "larger is a 413.",
    )
    max_epochs: int = Field(1000, gt=0, description="Largest train.epochs of a job; more: 422.")
    max_batch_size: int = Field(
        8192, gt=0, description="Largest train.batch_size of a job; more: 422."
    )
    max_model_parameters: int = Field(
        100_000_000,
        gt=0,
        description="Most trainable parameters of a job's model (counted without building "
        "it); more: 422.",
    )
    max_vocabulary: int = Field(
        1_000_000,
        gt=1,
        description="Most word ids of a sequence upload, padding's 0 included (ids "
        "0..this-1): the tagger's word embeddings have a row per id; more: 422.",
    )
    max_inline_weights: int = Field(
        1_000_000,
        gt=0,
        description="Longest inline sample_weight array of a job spec; longer: 422 (upload "
        'the weights with the dataset and use "from_dataset").',
    )
    max_queued_jobs_per_tenant: int = Field(
        1000, gt=0, description="Jobs one tenant may have queued at once; more: 429."
    )
    storage: Literal["local", "s3"] = Field(
        "local",
        description="Where artifacts, resume checkpoints and uploaded datasets are kept for "
        "every host: local (a directory, storage_dir) or s3 (an S3-compatible bucket).",
    )
    storage_dir: Path | None = Field(
        None,
        description="local storage: its directory (default <home>); with workers on many "
        "machines, a shared filesystem mounted on all of them.",
    )
    s3_bucket: str | None = Field(None, description="s3 storage: the bucket (must exist).")
    s3_prefix: str = Field("", description="s3 storage: prefix of every key, e.g. 'cw/'.")
    s3_endpoint_url: str | None = Field(
        None, description="s3 storage: endpoint of an S3-compatible server (default AWS)."
    )
    s3_region: str | None = Field(None, description="s3 storage: region name.")
    s3_access_key_id: str | None = Field(
        None, description="s3 storage: access key (default: boto3's credential chain)."
    )
    s3_secret_access_key: SecretStr | None = Field(
        None, description="s3 storage: secret key (default: boto3's credential chain)."
    )
    # A store that accepts connections and never answers must cost seconds, not minutes:
    # each S3 request gives up after connect + read timeout, at most max_attempts times.
    s3_connect_timeout_seconds: float = Field(
        2.0, gt=0, description="s3 storage: how long to wait for a connection to the server."
    )
    s3_read_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="s3 storage: how long a request waits for the server's next bytes (not "
        "for a whole transfer: a large file streaming at any pace never reaches it).",
    )
    s3_max_attempts: int = Field(
        3,
        ge=1,
        le=10,
        description="s3 storage: attempts at one request, the first included (botocore's "
        "standard retry mode: timeouts, refused connections, throttling, 5xx).",
    )
    # The API's calls to the artifact store (service.api.storage_calls).
    storage_max_calls: int = Field(
        8,
        gt=0,
        le=32,
        description="Calls to the artifact store one API process makes at once; a request "
        "that needs one more is a 503 with Retry-After at once. Kept below the API's 40 "
        "threads, so that a hung store cannot take the threads other requests need.",
    )
    storage_wait_seconds: float = Field(
        10.0,
        gt=0,
        description="Longest an API request waits to read from the artifact store (a job's "
        "file, an upload's check) before a 503 with Retry-After; the read goes on, and a "
        "request after it ends gets its file.",
    )

    # Webhooks (service.webhooks): who may be reached, how long each try and all of them take.
    webhook_dispatch: bool = Field(
        True,
        description="Whether this API process delivers webhooks. Any number may: each "
        "delivery is leased to one at a time.",
    )
    webhook_allowed_networks: str = Field(
        "",
        description="Comma-separated networks (CIDR) that deliveries may reach although they "
        "are loopback, link-local or private, e.g. '10.0.0.0/8' or '127.0.0.1/32'; "
        "empty: public addresses only.",
    )
    webhook_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=60,
        description="Longest each step of a delivery attempt may take (connecting: at most "
        "5 s; each wait for the answer's bytes), and the whole read of its answer; longer "
        "is a failed attempt, retried.",
    )
    webhook_backoff_seconds: float = Field(
        10.0,
        gt=0,
        description="Wait before a failed delivery's first retry; each next one waits twice "
        "as long, at most an hour.",
    )
    webhook_retry_seconds: float = Field(
        86400.0,
        gt=0,
        description="How long a delivery is retried, from its event, before it is given up "
        "as failed (at least one attempt is always made).",
    )
    webhook_poll_seconds: float = Field(
        1.0, gt=0, description="How often a dispatcher looks for new events and due retries."
    )
    webhook_concurrency: int = Field(
        4, gt=0, le=64, description="Deliveries one API process sends at once."
    )
    public_url: str | None = Field(
        None,
        description="The API's address as clients reach it, e.g. https://cw.example.com: "
        "webhook bodies' links start with it (else they are paths).",
    )

    @model_validator(mode="after")
    def _webhook_networks(self) -> Settings:
        try:
            parse_networks(self.webhook_allowed_networks)
        except ValueError as exc:
            raise ValueError(f"webhook_allowed_networks: {exc}") from exc
        return self

    @property
    def webhook_networks(self) -> tuple[IPNetwork, ...]:
        return parse_networks(self.webhook_allowed_networks)

    @model_validator(mode="after")
    def _heartbeat_inside_lease(self) -> Settings:
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError("heartbeat_seconds must be smaller than lease_seconds")
        return self

    @model_validator(mode="after")
    def _s3_needs_bucket(self) -> Settings:
        if self.storage == "s3" and not self.s3_bucket:
            raise ValueError("storage is s3 but s3_bucket (COUNTERWEIGHT_S3_BUCKET) is not set")
        return self

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'counterweight.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def resolved_poll_seconds(self) -> float:
        if self.poll_seconds is not None:
            return self.poll_seconds
        return 0.1 if self.is_sqlite else 5.0

    @property
    def resolved_data_root(self) -> Path:
        return self.data_root or self.home / "data"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def resolved_storage_dir(self) -> Path:
        return self.storage_dir or self.home


@lru_cache
def get_settings() -> Settings:
    return Settings()
